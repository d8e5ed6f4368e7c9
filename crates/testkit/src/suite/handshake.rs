//! § 4: the handshake.

use std::time::Duration;

use ferry_proto::codec::ServerItem;
use ferry_proto::limits::{FILE_SIZE_CEILING, NAME_LEN_CEILING};
use ferry_proto::{Capabilities, ErrorCode, FrameHead, PutHead, PutMode, Request, Role};

use crate::client::wire;
use crate::{content, Client, StartFn, TestServer};

/// [HELLO-4] [HELLO-9] [HELLO-10] [LIM-1] [EXT-2]: the server hello chooses version 1, grants the
/// anonymous role, sets only version 1's capability bits, and announces the limits it was given;
/// it is the one message answering the hello (a HELP sent right behind the hello is answered
/// next, and nothing comes between).
pub fn hello_announces_version_role_capabilities_and_limits(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.max_clients = 7;
        s.max_name_len = 100;
        s.max_file_size = 12_345;
        s.idle_timeout = Some(Duration::from_millis(4_500));
        s.head_timeout = Duration::from_secs(60);
        s.progress_timeout = Duration::from_secs(45);
    });
    let mut c = Client::start(server.addr, None);
    c.send(&Request::Help);
    let hello = c.read_reply().hello();
    assert_eq!(hello.version, 1, "[HELLO-4]");
    assert_eq!(hello.role, Role::Write, "the anonymous role by default");
    assert_eq!(hello.capabilities.0 & !Capabilities::ALL_V1.0, 0, "[HELLO-9] unknown bits are 0");
    let offered = Capabilities::LEGACY
        | Capabilities::RESUME
        | Capabilities::STATUS
        | Capabilities::SHUTDOWN
        | Capabilities::TRAILER;
    assert_eq!(hello.capabilities, offered);
    assert_eq!(hello.max_name_len, 100, "[LIM-1]");
    assert_eq!(hello.max_file_size, 12_345, "[LIM-1]");
    assert_eq!(hello.max_clients, 7);
    assert_eq!(hello.idle_timeout_ms, 4_500);
    assert_eq!(hello.head_timeout_ms, 60_000, "[TIME-8]");
    assert_eq!(hello.progress_timeout_ms, 45_000, "[TIME-10]");
    assert!(matches!(c.read_reply().head(), ServerItem::Help(_)), "[HELLO-10] one message, then HELP's reply");
    c.bye();
}

/// [HELLO-4]: offered versions 1..5 (or 1..65535), the server chooses 1, the highest it speaks,
/// and the session works.
pub fn version_range_chooses_the_highest_version_spoken(engine: StartFn) {
    let server = TestServer::start(engine);
    for max in [5, u16::MAX] {
        let mut c = server.connect();
        c.send_raw(&wire::hello(1, max, b""));
        assert_eq!(c.read_reply().hello().version, 1, "[HELLO-4] offered 1..{max}");
        c.send(&Request::Help);
        assert!(matches!(c.read_reply().head(), ServerItem::Help(_)));
    }
}

/// [HELLO-5] [EXT-1] [REQ-5] [HELLO-6]: a hello offering no version the server speaks gets
/// `UNSUPPORTED_VERSION` in version 1's error shape and the close; a request pipelined behind it
/// is never answered. The message names the version spoken (a SHOULD).
pub fn no_common_version_is_unsupported_version(engine: StartFn) {
    let server = TestServer::start(engine);
    for (min, max) in [(2, 3), (2, u16::MAX), (u16::MAX, u16::MAX)] {
        let mut c = server.connect();
        let mut bytes = wire::hello(min, max, b"");
        bytes.extend_from_slice(wire::HELP);
        c.send_raw(&bytes);
        let reply = c.expect_fatal(ErrorCode::UNSUPPORTED_VERSION);
        assert!(reply.error().unwrap().message.contains('1'), "[HELLO-6] names version 1: {reply:?}");
    }
    server.client().bye();
}

/// [HELLO-3] [HELLO-1] [HELLO-2] [LIM-3] [ERR-4]: wrong magic (a request where the hello should
/// be, say), `min_version` 0, `min_version` > `max_version` and token bytes outside 0x21–0x7E get
/// `MALFORMED` and the close; a token length above 256 gets `TOO_LARGE` without its bytes being
/// waited for. [HELLO-12]: the fields are checked in order, the version range after the token's
/// form. [PUT-7]: a PUT mode other than 0 or 1 is `MALFORMED`. The server serves on.
pub fn malformed_hellos_are_refused_and_closed(engine: StartFn) {
    let server = TestServer::start(engine);
    let mut bad_magic = wire::hello(1, 1, b"");
    bad_magic[4] = b'X';
    let mut not_ferry = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    not_ferry.extend_from_slice(&[0; 8]);
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("magic FERRX", bad_magic),
        ("an HTTP request", not_ferry),
        ("LIST before the hello", [wire::LIST, &wire::hello_v1()].concat()),
        ("STAT before the hello", [wire::stat(b"a-file"), wire::hello_v1()].concat()),
        ("min_version 0", wire::hello(0, 1, b"")),
        ("min_version 2 > max_version 1", wire::hello(2, 1, b"")),
        ("token with a space", wire::hello(1, 1, b"two words")),
        ("token with DEL", wire::hello(1, 1, b"tok\x7fen")),
        ("token with a high byte", wire::hello(1, 1, b"tok\xc3\xa9n")),
        ("token with NUL", wire::hello(1, 1, b"\0")),
    ];
    for (what, bytes) in malformed {
        let mut c = server.connect();
        c.send_raw(&bytes);
        let reply = c.read_reply();
        assert_eq!(reply.error_code(), Some(ErrorCode::MALFORMED), "[HELLO-3] {what}: {reply:?}");
        c.expect_closed(crate::client::IO_TIMEOUT);
    }
    // Only the length of a 257-byte token: the bytes are not waited for.
    let mut c = server.connect();
    let mut head = b"FERRY\x00\x01\x00\x01".to_vec();
    head.extend_from_slice(&257u16.to_be_bytes());
    c.send_raw(&head);
    c.expect_fatal(ErrorCode::TOO_LARGE);
    // [HELLO-12]: the fields are checked in order, the version range only after the token's form.
    let mut c = server.connect();
    let mut head = b"FERRY\x00\x02\x00\x03".to_vec();
    head.extend_from_slice(&257u16.to_be_bytes());
    c.send_raw(&head);
    c.expect_fatal(ErrorCode::TOO_LARGE);
    let mut c = server.connect();
    c.send_raw(&wire::hello(2, 3, b"two words"));
    c.expect_fatal(ErrorCode::MALFORMED);
    let mut c = server.connect();
    c.send_raw(&wire::hello(2, 3, b"unknown-token"));
    c.expect_fatal(ErrorCode::UNSUPPORTED_VERSION);
    // [PUT-7]: a PUT mode other than 0 and 1 is MALFORMED, and closes.
    let mut c = server.client();
    c.send_raw(&wire::put_head(2, b"m.bin", 0, b"d41d8cd98f00b204e9800998ecf8427e"));
    c.expect_fatal(ErrorCode::MALFORMED);
    server.client().bye();
}

/// [LIM-2] [LIM-3] [LIM-1]: limits configured above the protocol ceilings are announced within
/// the ceilings — and a name limit within what the root's file system can hold, so no valid name
/// can fail late. A name at the announced limit is a name like any other (`NOT_FOUND`, not
/// `INTERNAL`: [STAT-2] [GET-3] [DEL-2] [ERR-6]); one byte longer is `BAD_NAME` ([NAME-2]); a
/// length above the ceiling is fatal.
pub fn announced_limits_stay_within_the_ceilings(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.max_name_len = 10_000;
        s.max_file_size = u64::MAX;
    });
    let mut c = server.client();
    let hello = c.server_hello().unwrap();
    assert!(hello.max_name_len <= NAME_LEN_CEILING, "[LIM-2] {}", hello.max_name_len);
    assert!(hello.max_file_size <= FILE_SIZE_CEILING, "[LIM-2] {}", hello.max_file_size);
    let longest = "n".repeat(hello.max_name_len as usize);
    c.stat(&longest).assert_error(ErrorCode::NOT_FOUND);
    c.get(&longest, 0).assert_error(ErrorCode::NOT_FOUND);
    c.delete(&longest).assert_error(ErrorCode::NOT_FOUND);
    assert!(!c.put(&longest, b"fits", PutMode::Overwrite).replaced(), "[LIM-1] a name at the limit is stored");
    c.delete(&longest).assert_is(&ServerItem::DeleteOk);
    if hello.max_name_len < NAME_LEN_CEILING {
        let too_long = "n".repeat(hello.max_name_len as usize + 1);
        c.stat(&too_long).assert_error(ErrorCode::BAD_NAME);
    }
    c.send_raw(&wire::stat("n".repeat(NAME_LEN_CEILING as usize + 1).as_bytes()));
    c.expect_fatal(ErrorCode::TOO_LARGE);
}

/// [HELLO-11] [REQ-3]: requests sent in the same write as the hello, before the server hello
/// arrived, are answered as if they had come later.
pub fn requests_pipelined_behind_the_hello_are_answered(engine: StartFn) {
    let server = TestServer::start(engine);
    let data = content(11, 3_000);
    let mut c = Client::start(server.addr, None);
    c.queue(&Request::List);
    let frame = FrameHead { name: crate::name("early.bin"), size: data.len() as u64, md5: crate::md5(&data) };
    c.queue(&Request::Put(PutHead::leading(PutMode::CreateOnly, frame)));
    c.queue_data(&data);
    c.queue(&Request::Get { name: crate::name("early.bin"), offset: 0 });
    c.queue(&Request::Bye);
    c.flush();
    assert_eq!(c.read_reply().hello().version, 1);
    assert!(c.read_reply().entries().is_empty());
    assert!(!c.read_reply().replaced());
    assert_eq!(c.read_reply().data, data);
    c.read_reply().assert_is(&ServerItem::ByeOk);
    c.expect_closed(crate::client::IO_TIMEOUT);
}
