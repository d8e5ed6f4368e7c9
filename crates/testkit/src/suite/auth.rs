//! § 4.6 and § 8: tokens and roles.

use std::collections::HashMap;

use ferry_proto::codec::ServerItem;
use ferry_proto::limits::ERROR_MESSAGE_MAX;
use ferry_proto::{Digest, ErrorCode, PutMode, Request, Role};

use crate::client::{wire, IO_TIMEOUT};
use crate::{content, Client, StartFn, TestServer};

pub(crate) const READER: &str = "reader-token";
pub(crate) const WRITER: &str = "writer-token";
pub(crate) const ADMIN: &str = "admin-token";

/// Three tokens, one per role.
pub(crate) fn tokens() -> HashMap<String, Role> {
    HashMap::from([(READER.into(), Role::Read), (WRITER.into(), Role::Write), (ADMIN.into(), Role::Admin)])
}

/// [AUTH-1]: each token is granted its configured role, announced in the server hello; a hello
/// without a token gets the anonymous role.
pub fn tokens_grant_their_roles(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.anonymous = Some(Role::Read);
    });
    for (token, role) in [(READER, Role::Read), (WRITER, Role::Write), (ADMIN, Role::Admin)] {
        let c = server.client_with_token(token);
        assert_eq!(c.server_hello().unwrap().role, role, "[AUTH-1] {token}");
    }
    assert_eq!(server.client().server_hello().unwrap().role, Role::Read, "the anonymous role");
}

/// [AUTH-1] [REQ-5]: an unknown token — even one differing from a known token by case or one
/// byte — gets `UNAUTHORIZED` and the close, not the anonymous role (here: write); a request
/// pipelined behind the hello is not answered.
pub fn unknown_token_is_unauthorized_without_fallback(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.anonymous = Some(Role::Write);
    });
    for token in ["nobody", "ADMIN-TOKEN", "admin-toke", "admin-token2"] {
        let mut c = Client::start(server.addr, Some(token));
        c.send(&Request::List);
        let reply = c.read_reply();
        assert_eq!(reply.error_code(), Some(ErrorCode::UNAUTHORIZED), "[AUTH-1] {token:?}: {reply:?}");
        c.expect_closed(IO_TIMEOUT);
    }
}

/// [AUTH-2]: with no anonymous role, a hello without a token gets `UNAUTHORIZED` and the close;
/// one with a known token is served.
pub fn anonymous_none_needs_a_token(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.anonymous = None;
    });
    let mut c = Client::start(server.addr, None);
    c.expect_fatal(ErrorCode::UNAUTHORIZED);
    let mut raw = server.connect();
    raw.send_raw(&wire::hello_v1());
    raw.expect_fatal(ErrorCode::UNAUTHORIZED);
    server.client_with_token(READER).bye();
}

/// [ROLE-1] [SHUT-2] [PUT-5] [REQ-6]: the read role gets `FORBIDDEN` for PUT (whose data is still
/// read and dropped), DELETE and SHUTDOWN, with no effect: no file created or removed, and the
/// server keeps running; the connection goes on, and everything read may use works.
pub fn read_role_may_not_put_delete_or_shut_down(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.tokens = tokens());
    let kept = content(1, 5_000);
    server.write_file("kept.txt", &kept);
    let mut c = server.client_with_token(READER);
    // Data made of opcodes: if it were read as requests, replies would follow.
    let data = [wire::BYE, wire::SHUTDOWN, wire::LIST].concat().repeat(1_000);
    let mut bytes = wire::put(b"new.txt", &data);
    bytes.extend_from_slice(wire::HELP);
    c.send_raw(&bytes);
    c.read_reply().assert_error(ErrorCode::FORBIDDEN);
    assert!(matches!(c.read_reply().head(), ServerItem::Help(_)), "[PUT-5] the data was skipped exactly");
    assert!(server.read_file("new.txt").is_none(), "[ROLE-1] no effect");
    server.assert_no_temp_files(IO_TIMEOUT);

    c.send(&Request::Delete(crate::name("kept.txt")));
    c.read_reply().assert_error(ErrorCode::FORBIDDEN);
    assert_eq!(server.read_file("kept.txt").as_deref(), Some(&kept[..]), "[ROLE-1] no effect");

    c.send(&Request::Shutdown);
    c.read_reply().assert_error(ErrorCode::FORBIDDEN);
    // The connection and the server go on (`[SHUT-2]`), and read's commands work.
    assert_eq!(c.list().len(), 1);
    c.stat("kept.txt").stat();
    c.send(&Request::Get { name: crate::name("kept.txt"), offset: 0 });
    assert_eq!(c.read_reply().data, kept);
    c.send(&Request::Status);
    c.read_reply().records();
    let mut other = server.client();
    assert_eq!(other.list().len(), 1, "[SHUT-2] the server keeps running");
    c.bye();
}

/// [ROLE-1] [SHUT-2]: the write role may PUT and DELETE but gets `FORBIDDEN` for SHUTDOWN, and the
/// server keeps running.
pub fn write_role_may_not_shut_down(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.tokens = tokens());
    let mut c = server.client_with_token(WRITER);
    assert!(!c.put_ok("w.txt", b"written"));
    c.delete("w.txt").assert_is(&ServerItem::DeleteOk);
    c.send(&Request::Shutdown);
    c.read_reply().assert_error(ErrorCode::FORBIDDEN);
    assert!(c.list().is_empty());
    server.client_with_token(ADMIN).bye();
}

/// [ROLE-2] [ROLE-3] [PUT-5]: a read-only server answers every PUT and DELETE with `FORBIDDEN`,
/// whatever the role (admin and anonymous write included), reading and dropping the PUT's data;
/// the files stay as they were and can be read. Its hellos announce the roles granted, not read.
pub fn read_only_server_refuses_put_and_delete_for_every_role(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.anonymous = Some(Role::Write);
        s.read_only = true;
    });
    let kept = content(2, 1_000);
    server.write_file("kept.txt", &kept);
    let clients = [
        (server.client_with_token(ADMIN), Role::Admin),
        (server.client_with_token(WRITER), Role::Write),
        (server.client(), Role::Write),
    ];
    for (mut c, role) in clients {
        assert_eq!(c.server_hello().unwrap().role, role, "[ROLE-3] the role granted is announced");
        c.put("kept.txt", b"replacement", PutMode::Overwrite).assert_error(ErrorCode::FORBIDDEN);
        c.put("fresh.txt", b"new", PutMode::CreateOnly).assert_error(ErrorCode::FORBIDDEN);
        c.delete("kept.txt").assert_error(ErrorCode::FORBIDDEN);
        assert_eq!(c.get_ok("kept.txt", 0).1, kept);
        c.bye();
    }
    // § 9.3's order holds on a read-only server too: a bad name is BAD_NAME, not FORBIDDEN.
    let mut c = server.client_with_token(ADMIN);
    c.send_raw(&crate::client::wire::put(b"../x", b"data"));
    assert_eq!(c.read_reply().error_code(), Some(ErrorCode::BAD_NAME), "[ERR-7] [ROLE-2]");
    assert_eq!(server.root_entries(), ["kept.txt"], "[ROLE-2] nothing changed");
    assert_eq!(server.read_file("kept.txt").unwrap(), kept);
}

/// [ERR-7] [ERR-6] [ERR-1] [ERR-4]: when several errors apply, the first in § 9.3's order is sent
/// (`BAD_NAME`, then `FORBIDDEN`, then the operation's outcome), each with its named code, a
/// message within 1024 bytes, and the connection kept.
pub fn errors_come_in_the_specified_order(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.tokens = tokens());
    server.write_file("x", b"existing");
    let mut errors = Vec::new();
    let mut reader = server.client_with_token(READER);
    // BAD_NAME before FORBIDDEN.
    reader.send_raw(&wire::put(b"..", b"data"));
    errors.push(reader.read_reply().assert_error(ErrorCode::BAD_NAME).clone());
    reader.send_raw(&wire::delete(b"a/b"));
    errors.push(reader.read_reply().assert_error(ErrorCode::BAD_NAME).clone());
    // FORBIDDEN before the outcome (NOT_FOUND, EXISTS).
    reader.send_raw(&wire::delete(b"missing"));
    errors.push(reader.read_reply().assert_error(ErrorCode::FORBIDDEN).clone());
    reader.send_raw(&wire::put_head(1, b"x", 3, &Digest::of(b"abc").to_hex()));
    reader.send_raw(b"abc");
    errors.push(reader.read_reply().assert_error(ErrorCode::FORBIDDEN).clone());

    let mut writer = server.client_with_token(WRITER);
    // EXISTS is decided before the data, whatever its digest.
    writer.send_raw(&wire::put_head(1, b"x", 3, &Digest::of(b"not abc").to_hex()));
    writer.send_raw(b"abc");
    errors.push(writer.read_reply().assert_error(ErrorCode::EXISTS).clone());
    // BAD_NAME before BAD_OFFSET; NOT_FOUND for a missing file whatever the offset (RESUME is on).
    writer.send_raw(&wire::get(b"..", u64::MAX));
    errors.push(writer.read_reply().assert_error(ErrorCode::BAD_NAME).clone());
    writer.send_raw(&wire::get(b"missing", 5));
    errors.push(writer.read_reply().assert_error(ErrorCode::NOT_FOUND).clone());
    writer.send_raw(&wire::put_head(0, b"y", 3, &Digest::of(b"xyz").to_hex()));
    writer.send_raw(b"abc");
    errors.push(writer.read_reply().assert_error(ErrorCode::CHECKSUM_MISMATCH).clone());
    for e in &errors {
        let message = &e.error().unwrap().message;
        assert!(message.len() <= ERROR_MESSAGE_MAX, "[ERR-1] {e:?}");
    }
    assert_eq!(server.read_file("x").unwrap(), b"existing");
    assert!(server.read_file("y").is_none());
    // Recoverable errors leave both connections usable (`[ERR-4]`).
    assert_eq!(reader.list().len(), 1);
    assert_eq!(writer.list().len(), 1);
}
