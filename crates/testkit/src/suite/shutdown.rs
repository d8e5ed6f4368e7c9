//! § 7.9 and § 13: SHUTDOWN and the drain.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ferry_proto::codec::ServerItem;
use ferry_proto::{ErrorCode, PutMode, Request};

use super::auth::{tokens, ADMIN};
use crate::client::{ReadError, IO_TIMEOUT};
use crate::{content, md5, wait_until, Client, StartFn, TestServer};

/// Asserts that a new connection is not served: it cannot connect, or it is closed (or told
/// `SHUTTING_DOWN`) without ever getting a server hello.
#[track_caller]
pub(crate) fn assert_not_served(addr: SocketAddr) {
    let Ok(mut c) = Client::try_connect(addr) else { return };
    if c.try_send_raw(&crate::client::wire::hello_v1()).is_err() {
        return;
    }
    match c.try_read_reply() {
        Err(ReadError::Closed | ReadError::Reset) => {}
        Ok(reply) => assert_eq!(reply.error_code(), Some(ErrorCode::SHUTTING_DOWN), "[SHUT-3] {reply:?}"),
        Err(e) => panic!("[SHUT-3] a new connection during shutdown: {e}"),
    }
}

/// [SHUT-1] [SHUT-3]: an admin's SHUTDOWN gets `0x89` and its connection closes; a connection
/// waiting for a request gets `SHUTTING_DOWN` and is closed; new connections are not served; the
/// server stops.
pub fn shutdown_by_an_admin_drains_the_server(engine: StartFn) {
    let mut server = TestServer::start_with(engine, |s| s.tokens = tokens());
    let mut idle = server.client();
    let mut admin = server.client_with_token(ADMIN);
    admin.request(&Request::Shutdown).assert_is(&ServerItem::ShutdownOk);
    admin.expect_closed(IO_TIMEOUT);
    idle.expect_fatal(ErrorCode::SHUTTING_DOWN);
    assert_not_served(server.addr);
    drop((idle, admin));
    server.wait_stopped(Duration::from_secs(10));
    assert!(TcpStream::connect_timeout(&server.addr, IO_TIMEOUT).is_err(), "[SHUT-3] stopped accepting");
}

/// [SHUT-3] [SHUT-4] [PUT-2]: a shutdown does not cut an upload in flight: while idle connections
/// are told `SHUTTING_DOWN`, the uploader may take its time (well within the grace period), its
/// PUT is stored and answered, and only then is it told `SHUTTING_DOWN` and closed.
pub fn shutdown_lets_an_upload_in_flight_finish(engine: StartFn) {
    let mut server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.grace = Duration::from_secs(20);
    });
    let data = content(95, 1 << 20);
    let mut uploader = server.client();
    uploader.put_head(PutMode::CreateOnly, "late.bin", data.len() as u64, md5(&data));
    uploader.send_data(&data[..data.len() / 2]);
    assert!(wait_until(IO_TIMEOUT, || !server.temp_files().is_empty()), "the upload never started");
    let mut idle = server.client();
    let mut admin = server.client_with_token(ADMIN);
    admin.request(&Request::Shutdown).assert_is(&ServerItem::ShutdownOk);
    idle.expect_fatal(ErrorCode::SHUTTING_DOWN);
    // [SHUT-4]: the transfer is not cut while the client is slow.
    uploader.expect_silence(Duration::from_millis(600));
    assert_not_served(server.addr);
    uploader.send_data(&data[data.len() / 2..]);
    assert!(!uploader.read_reply().replaced(), "[SHUT-3] the request in progress is answered");
    uploader.expect_fatal(ErrorCode::SHUTTING_DOWN);
    drop((uploader, idle, admin));
    server.wait_stopped(Duration::from_secs(10));
    assert_eq!(server.read_file("late.bin").unwrap(), data, "[SHUT-3] stored whole");
    assert!(server.temp_files().is_empty());
}

/// [SHUT-3] [STORE-2]: when the grace period (300 ms) ends, an upload still in flight is cut and
/// discarded — no file, no temporary file — and the server stops.
pub fn shutdown_grace_end_discards_an_unfinished_upload(engine: StartFn) {
    let mut server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.grace = Duration::from_millis(300);
    });
    let data = content(96, 1 << 20);
    let mut uploader = server.client();
    uploader.put_head(PutMode::Overwrite, "unfinished.bin", data.len() as u64, md5(&data));
    uploader.send_data(&data[..data.len() / 2]);
    assert!(wait_until(IO_TIMEOUT, || !server.temp_files().is_empty()), "the upload never started");
    server.client_with_token(ADMIN).request(&Request::Shutdown).assert_is(&ServerItem::ShutdownOk);
    loop {
        match uploader.next_item(Some(std::time::Instant::now() + IO_TIMEOUT)) {
            Ok(Some(crate::Item::Msg(ServerItem::Error(e)))) if e.code.is_fatal() => continue,
            Ok(None) | Err(ReadError::Reset) => break,
            other => panic!("[SHUT-3] expected the uploader to be cut off, got {other:?}"),
        }
    }
    drop(uploader);
    server.wait_stopped(Duration::from_secs(10));
    assert!(server.read_file("unfinished.bin").is_none(), "[STORE-2]");
    assert!(server.temp_files().is_empty(), "[STORE-2] {:?}", server.temp_files());
}

/// [SHUT-5] [SHUT-3]: when a shutdown begins, a connection whose hello is half sent gets
/// `SHUTTING_DOWN` and no server hello when the rest arrives; a legacy connection whose request is
/// half sent gets `"ERROR"`; and of a busy connection's requests, only the one in progress is
/// answered — a HELP pipelined behind its upload is not.
pub fn shutdown_answers_half_hellos_and_drops_pipelined_requests(engine: StartFn) {
    let mut server = TestServer::start_with(engine, |s| {
        s.tokens = tokens();
        s.grace = Duration::from_secs(20);
    });
    let hello = crate::client::wire::hello_v1();
    let mut half = server.connect();
    half.send_raw(&hello[..4]);
    let mut legacy = Client::legacy(server.addr, &[0, 0]);
    let data = content(96, 100_000);
    let mut uploader = server.client();
    uploader.put_head(PutMode::Overwrite, "pipelined.bin", data.len() as u64, md5(&data));
    uploader.send_data(&data[..1000]);
    assert!(wait_until(IO_TIMEOUT, || !server.temp_files().is_empty()), "the upload never started");
    let mut admin = server.client_with_token(ADMIN);
    admin.request(&Request::Shutdown).assert_is(&ServerItem::ShutdownOk);

    half.send_raw(&hello[4..]);
    let reply = half.read_reply();
    assert_eq!(reply.error_code(), Some(ErrorCode::SHUTTING_DOWN), "[SHUT-5] no server hello: {reply:?}");
    let reply = legacy.read_reply();
    assert_eq!(reply.head(), &ServerItem::LegacyErrorStart, "[SHUT-5] a legacy request cut short: {reply:?}");

    let mut rest = data[1000..].to_vec();
    rest.extend_from_slice(crate::client::wire::HELP);
    uploader.send_raw(&rest);
    assert!(!uploader.read_reply().replaced(), "[SHUT-3] the upload in progress is answered");
    uploader.expect_fatal(ErrorCode::SHUTTING_DOWN);
    drop((half, legacy, uploader, admin));
    server.wait_stopped(Duration::from_secs(10));
    assert_eq!(server.read_file("pipelined.bin").unwrap(), data);
}
