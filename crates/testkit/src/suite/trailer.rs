//! The trailing digest (PROTOCOL.md § 6.5, § 7.4, § 7.10): uploads verified by a digest after
//! their data, FETCH replies that send it after the data, and a server that does not offer it.

use ferry_proto::codec::ServerItem;
use ferry_proto::{Capabilities, ErrorCode, PutHead, PutMode, Request};

use crate::client::{wire, ConnectOptions, Item, ReadError, IO_TIMEOUT};
use crate::{content, md5, wait_until, StartFn, TestServer};

/// The size of a file that a FETCH gets in the trailing form when its digest is unknown (ferry-core's
/// `TRAILING_FORM_MIN` is 1 MiB).
const LARGE: usize = (1 << 20) + 4_321;

/// [TRL-5] [PUT-3] [TRL-3] [TRL-4] [PUT-5]: an upload in the trailing form is published only when
/// its trailer matches the data, with its digest known at once; a wrong trailer is
/// `CHECKSUM_MISMATCH` and leaves the earlier file; a create-only upload of an existing name is
/// refused early and its data and trailer are read and dropped; a connection cut inside the
/// trailer publishes nothing.
pub fn trailing_uploads_are_published_only_when_their_trailer_matches(engine: StartFn) {
    let server = TestServer::start(engine);
    let mut c = server.client();
    let offered = c.server_hello().expect("the hello").capabilities;
    assert!(offered.contains(Capabilities::TRAILER), "TRAILER is offered by default");
    let (first, second) = (content(90, 300_000), content(91, 200_000));
    for data in [&first[..], &[][..]] {
        let n = if data.is_empty() { "empty.bin" } else { "t.bin" };
        assert!(!c.put_trailing(n, data, PutMode::CreateOnly, md5(data)).replaced(), "[TRL-5] created");
        let entry = c.stat(n).stat();
        assert_eq!(entry.md5, Some(md5(data)), "[TRL-5] the verified digest is known at once");
        assert_eq!(c.get_ok(n, 0).1, data, "[TRL-5] stored whole");
    }
    c.put_trailing("t.bin", &second, PutMode::Overwrite, md5(b"something else"))
        .assert_error(ErrorCode::CHECKSUM_MISMATCH);
    assert_eq!(c.get_ok("t.bin", 0).1, first, "[PUT-3] a mismatch leaves the earlier file");
    c.put_trailing("t.bin", &second, PutMode::CreateOnly, md5(&second)).assert_error(ErrorCode::EXISTS);
    assert!(c.put_trailing("t.bin", &second, PutMode::Overwrite, md5(&second)).replaced(), "[PUT-1]");
    assert_eq!(c.get_ok("t.bin", 0).1, second);
    c.bye();

    // Cut after the data and inside the trailer: nothing is published, nothing is left.
    for trailer_bytes in [0, 31] {
        let mut c = server.client();
        let data = content(92, 100_000);
        c.send(&Request::Put(PutHead::trailing(PutMode::Overwrite, crate::name("cut.bin"), data.len() as u64)));
        c.send_raw(&data);
        c.send_raw(&md5(&data).to_hex()[..trailer_bytes]);
        assert!(wait_until(IO_TIMEOUT, || server.temp_files().len() == 1), "the upload never started");
        drop(c);
        server.assert_no_temp_files(IO_TIMEOUT);
        server.client().stat("cut.bin").assert_error(ErrorCode::NOT_FOUND);
    }

    // `[TRL-4]`: a refused upload's trailer is still read, and its digits still checked.
    let mut c = server.client();
    let data = b"refused";
    c.send_raw(&[wire::put_head(0x81, b"t.bin", data.len() as u64, b""), data.to_vec()].concat());
    c.send_raw(b"zz000000000000000000000000000000");
    c.read_reply().assert_error(ErrorCode::EXISTS);
    c.expect_fatal(ErrorCode::MALFORMED);
}

/// [TRL-7] [TRL-2] [TRL-6] [TRL-8] [GET-1]: a FETCH of a large file the server has not hashed is
/// answered at once in the trailing form, whose trailer is the digest of the bytes sent; the digest
/// is known afterwards, and the next FETCH gets the leading form. A FETCH from an offset, a FETCH
/// of a small file and any GET get the leading form.
pub fn a_fetch_of_a_large_unhashed_file_trails_its_digest(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.background_hashes = 0);
    let (large, other, small) = (content(93, LARGE), content(94, LARGE), content(95, 1_000));
    server.write_file("large.bin", &large);
    server.write_file("other.bin", &other);
    server.write_file("small.bin", &small);
    let mut c = server.client();
    let reply = c.fetch("large.bin", 0);
    match reply.head() {
        ServerItem::FetchTrailing { name, size } => {
            assert_eq!((name.as_str(), *size), ("large.bin", LARGE as u64), "[TRL-7]");
        }
        other => panic!("[TRL-7] expected the trailing form for an unhashed file, got {other:?}"),
    }
    assert_eq!(reply.data, large, "[GET-1] the whole file");
    assert_eq!(reply.trailer(), Some(md5(&large)), "[TRL-2] the digest of the bytes sent");
    assert_eq!(c.stat("large.bin").stat().md5, Some(md5(&large)), "the digest is kept");
    let again = c.fetch("large.bin", 0);
    assert_eq!(again.frame().1.md5, md5(&large), "[TRL-7] the leading form once the digest is known");

    let resumed = c.fetch("other.bin", 7);
    let (offset, frame) = resumed.frame();
    assert_eq!((offset, frame.md5), (7, md5(&other)), "[TRL-6] a FETCH from an offset leads with the digest");
    assert_eq!(resumed.data, other[7..]);
    assert_eq!(c.fetch("small.bin", 0).frame().1.md5, md5(&small), "a small file is hashed first");
    server.write_file("third.bin", &large[..LARGE - 1]);
    assert_eq!(c.get_ok("third.bin", 0).0.md5, md5(&large[..LARGE - 1]), "[TRL-8] a GET never trails");
    c.fetch("missing.bin", 0).assert_error(ErrorCode::NOT_FOUND);
    c.fetch("large.bin", LARGE as u64 + 1).assert_error(ErrorCode::BAD_OFFSET);
    c.bye();
}

/// [TRL-1] [PUT-7] [REQ-2] [HELLO-9]: a server that does not offer TRAILER announces no bit 4, and
/// reads PUT modes 0x80 and 0x81 and opcode 0x0B as the malformed bytes they are for it.
pub fn a_server_without_trailer_refuses_its_forms(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.trailer = false);
    let mut c = server.client();
    let offered = c.server_hello().expect("the hello").capabilities;
    assert!(!offered.contains(Capabilities::TRAILER), "[HELLO-9]");
    c.put_ok("a.bin", b"leading form");
    c.bye();
    for mode in [0x80, 0x81] {
        let mut c = server.client();
        c.send_raw(&wire::put_head(mode, b"b.bin", 2, b""));
        c.expect_fatal(ErrorCode::MALFORMED);
    }
    let mut c = server.client();
    c.send_raw(&[&[0x0B][..], &wire::get(b"a.bin", 0)[1..]].concat());
    c.expect_fatal(ErrorCode::MALFORMED);
    assert_eq!(server.client().get_ok("a.bin", 0).1, b"leading form");
}

/// [TRL-9] [TRL-3]: when a file shrinks while it is sent in the trailing form, the server cannot
/// finish the data it announced: it closes the connection without a trailer, and the client sees
/// a truncated frame — a prefix of the file, then the close.
pub fn a_trailing_reply_cut_by_a_shrinking_file_ends_without_a_trailer(engine: StartFn) {
    const SIZE: usize = 16 << 20;
    let server = TestServer::start_with(engine, |s| s.background_hashes = 0);
    let data = content(96, SIZE);
    server.write_file("shrinking.bin", &data);
    let slow = ConnectOptions { recv_buffer: Some(16 * 1024), ..ConnectOptions::default() };
    let mut reader = server.client_with(slow);
    reader.send(&Request::Fetch { name: crate::name("shrinking.bin"), offset: 0 });
    match reader.next_item(None) {
        Ok(Some(Item::Msg(ServerItem::FetchTrailing { size, .. }))) => assert_eq!(size, SIZE as u64),
        other => panic!("[TRL-7] expected the trailing form, got {other:?}"),
    }
    std::fs::OpenOptions::new().write(true).open(server.path("shrinking.bin")).unwrap().set_len(1024).unwrap();
    let mut got = Vec::new();
    let end = loop {
        match reader.next_item(None) {
            Ok(Some(Item::Data(d))) => got.extend_from_slice(&d),
            other => break other,
        }
    };
    assert!(
        matches!(end, Err(ReadError::Truncated { .. } | ReadError::Reset)),
        "[TRL-9] the connection closes inside the frame, without a trailer; got {end:?} after {} bytes",
        got.len()
    );
    assert!(got.len() < SIZE, "[TRL-9] a truncated frame");
    assert!(got[..got.len().min(1024)] == data[..got.len().min(1024)], "a prefix of the file");
}
