//! The trailing form (PROTOCOL.md § 6.5, § 7.10) from the command line: `ferry put` against real
//! ferryd processes of both engines, which announce `TRAILER`, and against a scripted server
//! without it; `ferry get` of replies whose digest follows the data, right, wrong or cut off.
//!
//! Which form a transfer used is read from the client's debug log (`FERRY_LOG`), and for the
//! scripted servers from what they received.

mod common;

use common::{names_in, pattern, World};
use ferry_client::testing::{hello, raw, trailer_hello, Action, FakeServer};
use ferry_proto::{tag, Digest, ErrorCode, Request, Role};

const DEBUG: (&str, &str) = ("FERRY_LOG", "ferry_client=debug");

#[test]
fn put_and_get_with_both_engines_use_the_trailing_form_and_verify() {
    for engine in ["blocking", "async"] {
        // No digest but those of uploads: the file put into the root by hand stays unhashed.
        let world =
            World::new(&["--engine", engine, "--anonymous", "write", "--background-hashes", "0", "--digests", "off"]);
        let body = pattern(3_000_000, 11);
        std::fs::write(world.work().join("up.bin"), &body).unwrap();
        let put = world.run_env(&["put", "up.bin"], &[DEBUG]).ok();
        assert!(put.stderr.contains("upload: sending, digest after the data"), "{engine}: {put:?}");
        assert!(
            put.stdout.contains(&Digest::of(&body).to_string()) || put.stderr.contains(&Digest::of(&body).to_string())
        );
        assert_eq!(std::fs::read(world.root().join("up.bin")).unwrap(), body, "{engine}: stored whole");

        // The same file again, unchanged: its digest is in the cache, and goes first.
        let again = world.run_env(&["put", "up.bin", "--as", "again.bin"], &[DEBUG]).ok();
        assert!(again.stderr.contains("upload: sending, digest first"), "{engine}: {again:?}");
        assert_eq!(std::fs::read(world.root().join("again.bin")).unwrap(), body);

        // Forced: the digest first, hashed before.
        let first = world
            .run_env(&["--digest-first", "--no-digest-cache", "put", "up.bin", "--as", "first.bin"], &[DEBUG])
            .ok();
        assert!(first.stderr.contains("upload: sending, digest first"), "{engine}: {first:?}");
        assert_eq!(std::fs::read(world.root().join("first.bin")).unwrap(), body);

        // A download of a file the server has not hashed: the FETCH is answered with the
        // digest after the data, which is checked before the file gets its name.
        let big = pattern(5_000_000, 12);
        std::fs::write(world.root().join("cold.bin"), &big).unwrap();
        let get = world.run_env(&["get", "cold.bin"], &[DEBUG]).ok();
        assert!(get.stderr.contains("download: the digest follows the data"), "{engine}: {get:?}");
        assert!(get.stderr.contains("MD5 verified"), "{engine}: {get:?}");
        assert_eq!(std::fs::read(world.work().join("cold.bin")).unwrap(), big);
        assert_eq!(names_in(&world.work()), ["cold.bin", "up.bin"], "{engine}");
    }
}

#[test]
fn put_to_ferryd_without_trailer_sends_the_digest_first() {
    let world = World::new(&["--no-trailer", "--anonymous", "write"]);
    let body = pattern(2_000_000, 13);
    std::fs::write(world.work().join("up.bin"), &body).unwrap();
    let put = world.run_env(&["put", "up.bin"], &[DEBUG]).ok();
    assert!(put.stderr.contains("upload: sending, digest first"), "{put:?}");
    assert_eq!(std::fs::read(world.root().join("up.bin")).unwrap(), body);
    let get = world.run_env(&["get", "up.bin", "-o", "down.bin"], &[DEBUG]).ok();
    assert!(!get.stderr.contains("the digest follows the data"), "{get:?}");
    assert_eq!(std::fs::read(world.work().join("down.bin")).unwrap(), body);
}

#[test]
fn put_to_a_server_without_trailer_sends_the_digest_first() {
    let server = FakeServer::start(hello(Role::Write), |s| match &s.request {
        Request::Put(head) if head.md5 == Some(Digest::of(&s.data)) => Action::Reply(vec![tag::PUT, 0]),
        _ => Action::Reply(raw::error(ErrorCode::CHECKSUM_MISMATCH, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), pattern(100_000, 3)).unwrap();
    common::run(common::ferry_cmd(dir.path(), &server.addr.to_string(), dir.path()).args(["put", "a"])).ok();
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(matches!(&seen[0].request, Request::Put(h) if !h.is_trailing()), "[TRL-1] {seen:?}");
    assert_eq!(seen[0].trailer, None);
}

/// A server that answers a FETCH from 0 with `reply(body)` and anything else in the leading form.
fn fetch_server(body: Vec<u8>, reply: fn(&[u8]) -> Action) -> FakeServer {
    let size = body.len() as u64;
    FakeServer::start(trailer_hello(Role::Read), move |s| match &s.request {
        Request::Stat(_) => Action::Reply(raw::stat(b"f", size, 0, None)),
        Request::Fetch { offset: 0, .. } => reply(&body),
        Request::Get { offset, .. } => {
            Action::Reply(raw::get(b"f", *offset, size, Digest::of(&body), &body[*offset as usize..]))
        }
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    })
}

#[test]
fn get_of_a_trailing_reply_with_the_right_trailer_is_verified() {
    let server = fetch_server(pattern(700_000, 4), |body| {
        Action::Reply(raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(body)))
    });
    let dir = tempfile::tempdir().unwrap();
    let get = common::run(
        common::ferry_cmd(dir.path(), &server.addr.to_string(), dir.path()).env(DEBUG.0, DEBUG.1).args(["get", "f"]),
    )
    .ok();
    assert!(get.stderr.contains("download: the digest follows the data"), "{get:?}");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), pattern(700_000, 4));
}

#[test]
fn get_of_a_trailing_reply_with_a_wrong_trailer_exits_4_and_leaves_no_file() {
    let server = fetch_server(pattern(700_000, 4), |body| {
        Action::Reply(raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(b"lie")))
    });
    let dir = tempfile::tempdir().unwrap();
    let get =
        common::run(common::ferry_cmd(dir.path(), &server.addr.to_string(), dir.path()).args(["get", "f"])).code(4);
    assert!(get.stderr.contains("checksum mismatch"), "{get:?}");
    assert!(names_in(dir.path()).is_empty(), "[TRL-10] {:?}", names_in(dir.path()));
}

#[test]
fn get_cut_inside_the_trailer_exits_3_keeps_the_part_and_resumes_later() {
    let body = pattern(700_000, 4);
    let server = fetch_server(body.clone(), |body| {
        let whole = raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(body));
        Action::ReplyAndClose(whole[..whole.len() - 16].to_vec())
    });
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let cut =
        common::run(common::ferry_cmd(dir.path(), &addr, dir.path()).args(["--retries", "0", "get", "f"])).code(3);
    assert!(!dir.path().join("f").exists(), "[TRL-3] {cut:?}");
    assert_eq!(names_in(dir.path()), ["f.part", "f.part.meta"]);
    // Run again: resumed from the end with a GET, whose leading digest verifies the bytes kept.
    let again = common::run(common::ferry_cmd(dir.path(), &addr, dir.path()).args(["get", "f"])).ok();
    assert!(again.stderr.contains("resumed"), "{again:?}");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), body);
    assert!(!dir.path().join("f.part").exists() && !dir.path().join("f.part.meta").exists());
}
