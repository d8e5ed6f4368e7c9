//! § 15: the legacy profile.

use ferry_proto::codec::ServerItem;
use ferry_proto::{Capabilities, Role};

use super::auth::{tokens, READER};
use crate::client::{wire, Reply, IO_TIMEOUT};
use crate::{content, md5, Client, StartFn, TestServer};

/// Sends a legacy request and reads its reply, which must be followed by the close
/// (`[LEG-3]`).
#[track_caller]
fn legacy(server: &TestServer, request: &[u8]) -> Reply {
    let mut c = Client::legacy(server.addr, request);
    let reply = c.read_reply();
    if matches!(reply.head(), ServerItem::LegacyOk(_)) {
        c.expect_closed(IO_TIMEOUT);
    }
    reply
}

/// Asserts a legacy `"ERROR"` reply with a message (read to the close).
#[track_caller]
fn assert_legacy_error(reply: &Reply, what: &str) {
    assert_eq!(reply.head(), &ServerItem::LegacyErrorStart, "[LEG-2] {what}: {reply:?}");
    assert!(!reply.data.is_empty(), "[LEG-2] {what}: the error carries a message");
}

/// [LEG-1] [LEG-3] [LEG-8]: the legacy profile is served on the version 1 port, announced by the `LEGACY`
/// capability: a request for a file gets `"OK"`, the file frame (name, size, digest, data), and
/// the close; bytes sent after the request are ignored.
pub fn legacy_download_on_the_same_port(engine: StartFn) {
    let server = TestServer::start(engine);
    let data = content(97, 50_000);
    let mut v1 = server.client();
    assert!(v1.server_hello().unwrap().capabilities.contains(Capabilities::LEGACY), "[LEG-1]");
    v1.put_ok("old-tool.bin", &data);
    let reply = legacy(&server, &wire::legacy(b"old-tool.bin"));
    let (_, frame) = reply.frame();
    assert_eq!((frame.name.as_str(), frame.size, frame.md5), ("old-tool.bin", data.len() as u64, md5(&data)));
    assert_eq!(reply.data, data, "[LEG-1]");
    let mut trailing = wire::legacy(b"old-tool.bin");
    trailing.extend_from_slice(&wire::legacy(b"old-tool.bin"));
    trailing.extend_from_slice(wire::LIST);
    let reply = legacy(&server, &trailing);
    assert_eq!(reply.data, data, "[LEG-3] one reply, then the close");
    // The version 1 session on the same port is unaffected.
    assert_eq!(v1.list().len(), 1);
}

/// [LEG-2] [LEG-3] [NAME-7]: a legacy request for a missing file, or a name breaking § 10 (`..`,
/// `a/b`, empty, reserved, a control character), gets `"ERROR"` and a message, then the close.
pub fn legacy_refusals_are_error_messages(engine: StartFn) {
    let server = TestServer::start(engine);
    server.write_file("present", b"present");
    for name in [&b"missing"[..], b"..", b"a/b", b"", b".ferry-tmp-1", b"a\nb", b"\xff"] {
        assert_legacy_error(&legacy(&server, &wire::legacy(name)), &format!("{name:?}"));
    }
    assert_eq!(server.root_entries(), ["present"]);
}

/// [LEG-4]: a legacy name length above `max_name_len` gets `"ERROR"` and the close without the name
/// being read (none is sent).
pub fn legacy_name_longer_than_max_name_len_is_refused_unread(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.max_name_len = 16);
    for len in [17u32, 4_096, 0x00FF_FFFF] {
        assert_legacy_error(&legacy(&server, &len.to_be_bytes()), &format!("length {len}"));
    }
    server.write_file("sixteen-bytes-ok", b"ok");
    assert_eq!(legacy(&server, &wire::legacy(b"sixteen-bytes-ok")).data, b"ok");
}

/// [LEG-5] [LEG-7] [LEG-1]: with the legacy profile switched off, the server does not announce `LEGACY`,
/// and a legacy request gets `"ERROR"` and the close.
pub fn legacy_disabled_is_refused(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.legacy = false);
    server.write_file("file", b"content");
    let v1 = server.client();
    assert!(!v1.server_hello().unwrap().capabilities.contains(Capabilities::LEGACY), "[LEG-1]");
    assert_legacy_error(&legacy(&server, &wire::legacy(b"file")), "legacy disabled");
}

/// [LEG-2] [AUTH-2]: without an anonymous role, the legacy profile (which has no token) gets
/// `"ERROR"` and the close.
pub fn legacy_without_anonymous_access_is_refused(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.anonymous = None;
    });
    server.write_file("file", b"content");
    assert_legacy_error(&legacy(&server, &wire::legacy(b"file")), "no anonymous role");
    assert_eq!(server.client_with_token(READER).server_hello().unwrap().role, Role::Read);
}
