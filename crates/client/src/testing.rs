//! A scriptable server that lies, for tests of clients: it greets like a real server, decodes
//! requests with ferry-proto, and answers each with whatever bytes the test's script returns —
//! wrong digests, hostile names, replies cut short. Not part of the library's API (feature
//! `testing`).

#[cfg(unix)]
pub mod tls;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferry_proto::codec::{ClientItem, Decoded, RequestDecoder};
use ferry_proto::limits::ReadLimits;
use ferry_proto::{Capabilities, Digest, ErrorCode, ErrorReply, Request, Role, ServerHello};

/// A request the fake server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Which connection (0 for the first accepted).
    pub conn: usize,
    pub request: Request,
    /// A PUT's data.
    pub data: Vec<u8>,
    /// A PUT's trailer, in the trailing form (PROTOCOL.md § 6.5).
    pub trailer: Option<Digest>,
}

/// What to do after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes and wait for the next request.
    Reply(Vec<u8>),
    /// Send these bytes and close the connection.
    ReplyAndClose(Vec<u8>),
    /// Wait, then send these bytes: a server busy before it can answer (hashing a file for a
    /// GET). The replies of requests that came before are sent first, those after wait too.
    ReplyAfter(Duration, Vec<u8>),
    /// Send nothing, ever, and keep the connection open until the client closes it.
    Silence,
}

type Script = dyn Fn(&Seen) -> Action + Send + Sync;

/// A fake server on 127.0.0.1; stopped when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl FakeServer {
    /// Starts a server that greets every client with `hello` and answers each request with
    /// `script`'s action (BYE is answered by the server itself).
    ///
    /// # Panics
    /// It cannot bind a port.
    pub fn start(hello: ServerHello, script: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("the bound address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (seen, script) = (seen2.clone(), script.clone());
                std::thread::spawn(move || serve(n, stream, hello, &*script, &seen));
            }
        });
        Self { addr, seen, stop, thread: Some(thread) }
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A hello granting `role`, with every version 1 capability but `TRAILER`: a server from before
/// the trailing form, whose every frame has its digest first. [`trailer_hello`] adds it.
pub fn hello(role: Role) -> ServerHello {
    ServerHello {
        version: 1,
        role,
        capabilities: Capabilities(Capabilities::ALL_V1.0 & !Capabilities::TRAILER.0),
        max_name_len: 255,
        max_file_size: 1 << 40,
        max_clients: 8,
        idle_timeout_ms: 0,
        head_timeout_ms: 0,
        progress_timeout_ms: 0,
    }
}

/// A hello granting `role`, with every version 1 capability, `TRAILER` included: PUT modes
/// 0x80 and 0x81 and FETCH are then decoded, a PUT's trailer is in [`Seen::trailer`], and the
/// script answers a FETCH (with [`raw::get`] for the leading form or [`raw::fetch_trailing`]).
pub fn trailer_hello(role: Role) -> ServerHello {
    ServerHello { capabilities: Capabilities::ALL_V1, ..hello(role) }
}

fn serve(conn: usize, mut stream: TcpStream, hello: ServerHello, script: &Script, seen: &Mutex<Vec<Seen>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut decoder =
        RequestDecoder::new(ReadLimits::default()).with_trailer(hello.capabilities.contains(Capabilities::TRAILER));
    let mut inbuf = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut current: Option<Seen> = None;
    loop {
        // Decode everything buffered.
        let mut used = 0;
        let mut actions = Vec::new();
        loop {
            match decoder.decode(&inbuf[used..]) {
                Ok(Decoded::NeedMore) => break,
                Err(_) => return,
                Ok(Decoded::Item { item, consumed }) => {
                    used += consumed;
                    match item {
                        ClientItem::Hello(_) => {
                            let mut out = Vec::new();
                            hello.encode(&mut out);
                            actions.push(Action::Reply(out));
                        }
                        ClientItem::Request(Request::Bye) => {
                            actions.push(Action::ReplyAndClose(vec![ferry_proto::tag::BYE]));
                        }
                        ClientItem::Request(request @ Request::Put(_)) => {
                            current = Some(Seen { conn, request, data: Vec::new(), trailer: None });
                        }
                        ClientItem::Request(request) => {
                            let s = Seen { conn, request, data: Vec::new(), trailer: None };
                            seen.lock().expect("not poisoned").push(s.clone());
                            actions.push(script(&s));
                        }
                        ClientItem::Data(d) => {
                            if let Some(c) = &mut current {
                                c.data.extend_from_slice(d);
                            }
                        }
                        ClientItem::Trailer(md5) => {
                            if let Some(c) = &mut current {
                                c.trailer = Some(md5);
                            }
                        }
                        ClientItem::DataEnd => {
                            if let Some(s) = current.take() {
                                seen.lock().expect("not poisoned").push(s.clone());
                                actions.push(script(&s));
                            }
                        }
                        ClientItem::LegacyGet(_) | ClientItem::Rejected { .. } => return,
                    }
                }
            }
        }
        inbuf.drain(..used);
        for action in actions {
            match action {
                Action::Reply(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Action::ReplyAfter(delay, bytes) => {
                    std::thread::sleep(delay);
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Action::Silence => {}
                Action::ReplyAndClose(bytes) => {
                    let _ = stream.write_all(&bytes);
                    let _ = stream.shutdown(Shutdown::Write);
                    // Read what is left so that closing does not reset the connection.
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    return;
                }
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => inbuf.extend_from_slice(&buf[..n]),
        }
    }
}

/// Raw reply encoders that take any bytes as a name, valid or not.
pub mod raw {
    use super::*;

    fn name(out: &mut Vec<u8>, name: &[u8]) {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name);
    }

    /// A GET reply: head, then `data` (which should be `size - offset` bytes).
    pub fn get(name_bytes: &[u8], offset: u64, size: u64, md5: Digest, data: &[u8]) -> Vec<u8> {
        let mut out = vec![ferry_proto::tag::GET];
        out.extend_from_slice(&offset.to_be_bytes());
        name(&mut out, name_bytes);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&md5.to_hex());
        out.extend_from_slice(data);
        out
    }

    /// A FETCH reply in the trailing form (PROTOCOL.md § 7.10): head, `data` (which should be
    /// `size` bytes), then `md5` as the trailer.
    pub fn fetch_trailing(name_bytes: &[u8], size: u64, data: &[u8], md5: Digest) -> Vec<u8> {
        let mut out = vec![ferry_proto::tag::FETCH_TRAILING];
        name(&mut out, name_bytes);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&md5.to_hex());
        out
    }

    /// A LIST reply of `(name, size, mtime_ms)` entries without digests.
    pub fn list(entries: &[(&[u8], u64, i64)]) -> Vec<u8> {
        let mut out = vec![ferry_proto::tag::LIST];
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for (n, size, mtime) in entries {
            name(&mut out, n);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&mtime.to_be_bytes());
            out.push(0);
        }
        out
    }

    /// A STAT reply; `md5` is `None` for a file whose digest the server does not know yet.
    pub fn stat(name_bytes: &[u8], size: u64, mtime_ms: i64, md5: Option<Digest>) -> Vec<u8> {
        let mut out = vec![ferry_proto::tag::STAT];
        name(&mut out, name_bytes);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&mtime_ms.to_be_bytes());
        match md5 {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(&d.to_hex());
            }
            None => out.push(0),
        }
        out
    }

    /// An error reply.
    pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        ErrorReply::new(code, message).encode(&mut out);
        out
    }
}
