//! The legacy profile (PROTOCOL.md § 15), both sides.
//!
//! Input: a mode byte (bit 0: client side; bit 1: end to end; server side, bits 2-7: the store's
//! faults, as in `server_machine`), a server config byte, a schedule
//! length n and n ops, then — server side — the client's bytes, or — client side — a name length
//! byte, the name and the server's bytes. Checked, server side: everything `server_machine`
//! checks, and that a legacy reply is "OK" with the file named, whole and with its digest, or
//! "ERROR", after which the server closes (`[LEG-2]`, `[LEG-3]`, `[LEG-5]`). Client side: the
//! same items however the bytes arrive, and end to end, that the client accepts the server's
//! reply.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use ferry_fuzz::client::{run, Step};
use ferry_fuzz::owned::{decode_c2s, decode_s2c, End, Start, C, S};
use ferry_fuzz::server::{config, fuzz_server, preloaded};
use ferry_fuzz::Input;
use ferry_proto::client::ClientConnection;
use ferry_proto::codec::{ClientItem, ServerItem};
use ferry_proto::digest::Digest;
use ferry_proto::memory::MemoryConnection;
use ferry_proto::name::Name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let server_cfg = input.byte();
    let n = usize::from(input.byte());
    let ops = input.take(n);
    if mode & 1 == 0 {
        server_side(server_cfg, mode >> 2, input.rest(), ops);
    } else {
        let len = usize::from(input.byte());
        let name = Name::new(input.take(len), 4096).unwrap_or_else(|_| Name::parse("a.txt").unwrap());
        client_side(mode & 2 != 0, server_cfg, &name, input.rest(), ops);
    }
});

fn server_side(cfg: u8, faults: u8, data: &[u8], ops: &[u8]) {
    let outcome = fuzz_server(cfg, 0, faults, data, ops);
    if !outcome.legacy {
        return;
    }
    let config = config(cfg);
    let (replies, _) = decode_s2c(Start::Legacy, &outcome.output, &[outcome.output.len()]);
    if !replies.is_empty() {
        assert!(outcome.closed_by_server, "[LEG-3] the server keeps a legacy connection open after its reply");
    }
    if !config.capabilities.contains(ferry_proto::Capabilities::LEGACY) {
        assert!(
            matches!(replies.first(), Some(S::Item(ServerItem::LegacyErrorStart))),
            "[LEG-5] a disabled legacy profile answers {replies:?}"
        );
        return;
    }
    let trailer = config.capabilities.contains(ferry_proto::Capabilities::TRAILER);
    let (requests, _) = decode_c2s(Start::Handshake, config.limits, trailer, &data[..outcome.used], &[outcome.used]);
    if let Some(S::Item(ServerItem::LegacyOk(frame))) = replies.first() {
        assert_eq!(replies.last(), Some(&S::Item(ServerItem::DataEnd)), "[LEG-3] more after the file");
        // `[LEG-2]`, `[GET-1]`, `[FRAME-3]`: the file asked for, whole, with its digest.
        let Some(C::Item(ClientItem::LegacyGet(asked))) = requests.first() else {
            panic!("a legacy OK to {requests:?}");
        };
        assert_eq!(&frame.name, asked);
        let content = &preloaded().files[asked];
        assert_eq!(frame.size, content.len() as u64);
        assert_eq!(frame.md5, Digest::of(content));
        let data: &[u8] = match replies.get(1) {
            Some(S::Data(d)) => d,
            _ => &[],
        };
        assert_eq!(data, &content[..]);
    }
}

fn client_side(end_to_end: bool, server_cfg: u8, name: &Name, fuzzed: &[u8], ops: &[u8]) {
    let generated;
    let bytes = if end_to_end {
        let client = ClientConnection::legacy(name);
        let mut server = MemoryConnection::new(Arc::new(config(server_cfg)), Instant::now());
        server.feed(&mut preloaded(), client.pending_output(), Instant::now());
        assert!(server.connection().is_closed(), "[LEG-3] the server closes after a legacy reply");
        generated = server.take_output();
        &generated[..]
    } else {
        fuzzed
    };
    let scheduled = run(ClientConnection::legacy(name), &[], bytes, ops);
    let whole = run(ClientConnection::legacy(name), &[], bytes, &[]);
    assert_eq!(scheduled, whole, "[ENC-5] the schedule {ops:02x?} changed what the client saw");
    if end_to_end {
        assert!(!whole.steps.iter().any(|s| matches!(s, Step::Error(_))), "the client refused {:?}", whole.steps);
        assert_eq!(whole.eof, Ok(()));
        let (items, end) = decode_s2c(Start::Legacy, bytes, &[bytes.len()]);
        assert_eq!(end, End::Clean);
        if let Some(S::Item(ServerItem::LegacyOk(frame))) = items.first() {
            assert_eq!(&frame.name, name, "[LEG-2] the reply names another file");
        }
    }
}
