//! The client state machine under a schedule decided by the fuzz input: the server's bytes arrive
//! in reads of input-decided sizes with polls in between, and the items, errors and ending must be
//! the same as when they arrive in one read (`[ENC-5]`).

use std::sync::Arc;

use ferry_proto::client::{ClientConfig, ClientConnection, ClientError};
use ferry_proto::codec::{ClientItem, Decoded, RequestDecoder, ServerItem};
use ferry_proto::limits::{ReadLimits, HELP_TEXT_MAX, NAME_LEN_CEILING};
use ferry_proto::message::{Request, RequestKind, ServerHello};

use crate::alloc::measure;
use crate::owned::{s2c_bound, server_static, S, S2C_INCOMPLETE};
use crate::server::{config_with, Server};

/// One thing the client machine produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An item, and the request [`ClientConnection::answering`] named just before it.
    Item { answering: Option<RequestKind>, item: S },
    /// The client gave up on the connection.
    Error(ClientError),
}

/// Everything two deliveries of the same bytes must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOutcome {
    pub steps: Vec<Step>,
    pub eof: Result<(), ClientError>,
    pub closed: bool,
    pub outstanding: usize,
    pub server: Option<ServerHello>,
    pub used: usize,
}

fn push(steps: &mut Vec<Step>, answering: Option<RequestKind>, item: &ServerItem<'_>) {
    if let ServerItem::Data(d) = item {
        if let Some(Step::Item { answering: a, item: S::Data(prev) }) = steps.last_mut() {
            if *a == answering {
                prev.extend_from_slice(d);
                return;
            }
        }
        steps.push(Step::Item { answering, item: S::Data(d.to_vec()) });
    } else {
        steps.push(Step::Item { answering, item: S::Item(server_static(item).expect("not data")) });
    }
}

/// Hands the client everything it can take from `buf[*pos..]`. Requests `deferred` until the
/// server's hello are queued as soon as it has arrived (see [`queue_requests`]).
fn pump(client: &mut ClientConnection, buf: &[u8], pos: &mut usize, steps: &mut Vec<Step>, deferred: &mut &[u8]) {
    let mut empty_in_a_row = 0;
    loop {
        if !deferred.is_empty() && client.server().is_some() {
            queue_requests(client, std::mem::take(deferred));
        }
        let answering = client.answering();
        let (r, largest) = measure(|| client.handle_input(&buf[*pos..]));
        match r {
            Ok((n, Some(item))) => {
                let bound = s2c_bound(&item);
                assert!(largest <= bound, "{item:?} allocated {largest} bytes, bound {bound}");
                if n == 0 {
                    empty_in_a_row += 1;
                    assert!(empty_in_a_row <= 1, "the client yields items without consuming input");
                } else {
                    empty_in_a_row = 0;
                }
                push(steps, answering, &item);
                *pos += n;
            }
            Ok((n, None)) => {
                assert_eq!(n, 0, "bytes used without an item");
                assert!(largest <= S2C_INCOMPLETE, "NeedMore allocated {largest} bytes");
                break;
            }
            Err(e) => {
                // The largest thing decoded before the verdict is a HELP text.
                assert!(largest <= 4 * HELP_TEXT_MAX as usize, "{e:?} after an allocation of {largest} bytes");
                assert!(client.is_closed(), "{e:?} left the connection open");
                assert_eq!(client.handle_input(&buf[*pos..]), Ok((0, None)), "a closed client reads on");
                steps.push(Step::Error(e));
                break;
            }
        }
    }
    if !deferred.is_empty() && client.server().is_some() {
        queue_requests(client, std::mem::take(deferred));
    }
}

/// Feeds `bytes` to `client` as `ops` schedule them, then EOF. Op `0x00..=0x7F` delivers the next
/// `op + 1` bytes; any other op is a read that would block (a poll with no new bytes). After
/// the ops, the rest arrives in one read. `deferred`: requests to queue once the server's hello
/// has arrived ([`client_with_requests`]).
pub fn run(mut client: ClientConnection, mut deferred: &[u8], bytes: &[u8], ops: &[u8]) -> ClientOutcome {
    let mut delivered = 0;
    let mut pos = 0;
    let mut steps = Vec::new();
    for &op in ops {
        if op < 0x80 {
            delivered = (delivered + usize::from(op) + 1).min(bytes.len());
        }
        pump(&mut client, &bytes[..delivered], &mut pos, &mut steps, &mut deferred);
    }
    pump(&mut client, bytes, &mut pos, &mut steps, &mut deferred);
    let eof = client.handle_eof(&bytes[pos..]);
    assert!(client.is_closed());
    ClientOutcome {
        steps,
        eof,
        closed: client.is_closed(),
        outstanding: client.outstanding(),
        server: client.server().copied(),
        used: pos,
    }
}

/// The client config a config byte selects: bits 1-2 the versions offered, bits 3-4 the token.
pub fn client_config(b: u8) -> ClientConfig {
    let (min_version, max_version) = match (b >> 1) & 3 {
        0 => (1, 1),
        1 => (1, 3),
        2 => (2, 5),
        _ => (1, u16::MAX),
    };
    let token = match (b >> 3) & 3 {
        0 => None,
        1 => Some("s3cret".to_owned()),
        2 => Some("reader".to_owned()),
        _ => Some("bogus".to_owned()),
    };
    ClientConfig { token, min_version, max_version }
}

/// Queues the requests of `section` (client-to-server wire bytes after the hello: requests, PUT
/// data and trailers, read with the widest limits and as by a server announcing `TRAILER`) in
/// `client`. A request the client refuses is skipped with its data. Stops at the first request
/// that needs the server's `TRAILER` while the server's hello has not arrived (`[TRL-1]`): returns
/// where, so that it and the rest can be queued once the hello is there; otherwise the
/// section's length.
pub fn queue_requests(client: &mut ClientConnection, section: &[u8]) -> usize {
    let widest = ReadLimits { max_name_len: NAME_LEN_CEILING, max_file_size: u64::MAX };
    let mut d = RequestDecoder::in_session(widest).with_trailer(true);
    let mut pos = 0;
    let mut sending_put = false;
    while let Ok(Decoded::Item { item, consumed }) = d.decode(&section[pos..]) {
        match item {
            ClientItem::Request(r) => match client.send(&r) {
                Ok(()) => sending_put = matches!(r, Request::Put(_)),
                Err(ClientError::TrailerNotOffered(_)) if client.server().is_none() => return pos,
                Err(_) => sending_put = false,
            },
            ClientItem::Data(data) if sending_put => {
                client.send_data(data).expect("no more than the PUT announced");
            }
            ClientItem::Trailer(md5) if sending_put => {
                client.send_trailer(&md5).expect("the trailer of a trailing PUT whose data is queued");
            }
            ClientItem::Data(_) | ClientItem::Trailer(_) => {}
            _ => sending_put = false,
        }
        pos += consumed;
    }
    section.len()
}

/// A client with the requests of `section` queued ([`queue_requests`]), and the part of the
/// section deferred until the server's hello.
pub fn client_with_requests(cfg: u8, section: &[u8]) -> (ClientConnection, &[u8]) {
    let mut client = ClientConnection::new(client_config(cfg)).expect("valid config");
    let queued = queue_requests(&mut client, section);
    (client, &section[queued..])
}

/// The `client_machine` target. Input: config byte, server config byte, u16 length and the
/// request section, schedule length and ops, then the server's bytes. With config bit 0 set the
/// server's bytes are instead what ferry-proto's own server machine answers to the client's
/// requests, and the client must accept every one of them; then config bit 5 makes the server
/// answer a FETCH from offset 0 in the trailing form (tag 0x8B), and bit 6 takes `TRAILER` out of
/// its capabilities. Requests that need `TRAILER` (PUT modes 0x80/0x81, FETCH) wait for the
/// server's hello (`[TRL-1]`).
pub fn fuzz_client(data: &[u8]) {
    let mut input = crate::Input::new(data);
    let cfg = input.byte();
    let server_cfg = input.byte();
    let len = usize::from(input.u16());
    let section = input.take(len);
    let n = usize::from(input.byte());
    let ops = input.take(n);
    let fuzzed = input.rest();

    let end_to_end = cfg & 1 != 0;
    let mut server_closed = false;
    let mut put_owed = 0;
    let mut trailer_owed = false;
    let generated;
    let bytes = if end_to_end {
        let (mut client, mut deferred) = client_with_requests(cfg, section);
        let config = Arc::new(config_with(server_cfg, u8::from(cfg & 0x40 != 0)));
        let mut server = Server::new(config, cfg & 0x20 != 0);
        let sent = client.pending_output().to_vec();
        client.consume_output(sent.len());
        let mut out = server.feed(&sent);
        if !deferred.is_empty() {
            // The client reads the server's hello, queues what waited for it, and sends that.
            let (mut pos, mut steps) = (0, Vec::new());
            pump(&mut client, &out, &mut pos, &mut steps, &mut deferred);
            let sent = client.pending_output().to_vec();
            client.consume_output(sent.len());
            out.extend(server.feed(&sent));
        }
        put_owed = client.put_owed();
        trailer_owed = client.trailer_owed();
        server_closed = server.is_closed();
        generated = out;
        &generated[..]
    } else {
        fuzzed
    };

    let (client, deferred) = client_with_requests(cfg, section);
    let scheduled = run(client, deferred, bytes, ops);
    let (client, deferred) = client_with_requests(cfg, section);
    let whole = run(client, deferred, bytes, &[]);
    assert_eq!(scheduled, whole, "[ENC-5] the schedule {ops:02x?} changed what the client saw");

    if end_to_end {
        // The two machines are two readings of one spec: the client accepts everything the
        // server says, and every request gets its reply (`[REQ-1]`) unless the server closed or
        // still waits for PUT data.
        let errors: Vec<&Step> = whole.steps.iter().filter(|s| matches!(s, Step::Error(_))).collect();
        assert!(errors.is_empty(), "the client refused the server: {errors:?}\nsteps: {:?}", whole.steps);
        assert_eq!(whole.used, bytes.len(), "the client left server bytes unread");
        if server_closed {
            assert_eq!(whole.eof, Ok(()), "the server closed the way the protocol says");
        } else if put_owed == 0 && !trailer_owed {
            assert_eq!(whole.outstanding, 0, "requests left unanswered: {:?}", whole.steps);
        }
    }
}
