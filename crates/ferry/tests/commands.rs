//! Every `ferry` subcommand against a real `ferryd` process, the exit codes, `--help`, the
//! tables, and servers that lie.

mod common;

use std::time::Duration;

use common::{names_in, pattern, World};
use ferry_client::testing::{hello, raw, Action, FakeServer};
use ferry_proto::{Digest, ErrorCode, Request, Role};

/// insta settings that hide what changes from run to run: times, ports, durations, column
/// padding (which follows the widths of those).
fn stable() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "[TIME]");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"\d+(\.\d+)? (ms|s|min)\b", "[DURATION]");
    s.add_filter(r" {2,}", "  ");
    s
}

#[test]
fn help_is_documented() {
    let world = World::new(&[]);
    let out = world.run(&["--help"]).ok();
    insta::assert_snapshot!("help", out.stdout);
    let out = world.run(&["get", "--help"]).ok();
    insta::assert_snapshot!("get_help", out.stdout);
    let out = world.run(&["put", "--help"]).ok();
    insta::assert_snapshot!("put_help", out.stdout);
}

#[test]
fn a_first_session() {
    // README's first session: put a file, list, get it back.
    let world = World::new(&[]);
    std::fs::write(world.work().join("notes.txt"), "hello, ferry\n").unwrap();
    let put = world.run(&["put", "notes.txt"]).ok();
    assert!(put.stderr.contains("notes.txt -> notes.txt (13 B, created"), "{put:?}");
    assert_eq!(std::fs::read(world.root().join("notes.txt")).unwrap(), b"hello, ferry\n");

    let list = world.run(&["list"]).ok();
    stable().bind(|| insta::assert_snapshot!("first_session_list", list.stdout));

    std::fs::remove_file(world.work().join("notes.txt")).unwrap();
    let get = world.run(&["get", "notes.txt"]).ok();
    assert!(get.stderr.contains("notes.txt -> notes.txt (13 B, MD5 verified)"), "{get:?}");
    assert_eq!(std::fs::read(world.work().join("notes.txt")).unwrap(), b"hello, ferry\n");
    assert_eq!(names_in(&world.work()), ["notes.txt"], "no .part left");
}

#[test]
fn put_refuses_to_replace_unless_asked() {
    let world = World::new(&[]);
    std::fs::write(world.work().join("a"), "one").unwrap();
    world.run(&["put", "a"]).ok();
    std::fs::write(world.work().join("a"), "two").unwrap();
    let again = world.run(&["put", "a"]).code(1);
    assert!(again.stderr.contains("already exists on the server") && again.stderr.contains("--overwrite"), "{again:?}");
    assert_eq!(std::fs::read(world.root().join("a")).unwrap(), b"one");
    let replaced = world.run(&["put", "a", "--overwrite"]).ok();
    assert!(replaced.stderr.contains("replaced"), "{replaced:?}");
    assert_eq!(std::fs::read(world.root().join("a")).unwrap(), b"two");
    world.run(&["put", "a", "--as", "b", "--create-only"]).ok();
    assert_eq!(std::fs::read(world.root().join("b")).unwrap(), b"two");
    world.run(&["put", "a", "--overwrite", "--create-only"]).code(2);
}

#[test]
fn get_never_overwrites_without_force() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("f"), "server copy").unwrap();
    std::fs::write(world.work().join("f"), "precious local copy").unwrap();
    let refused = world.run(&["get", "f"]).code(1);
    assert!(refused.stderr.contains("already exists") && refused.stderr.contains("--force"), "{refused:?}");
    assert_eq!(std::fs::read(world.work().join("f")).unwrap(), b"precious local copy");
    assert_eq!(names_in(&world.work()), ["f"]);
    world.run(&["get", "f", "--force"]).ok();
    assert_eq!(std::fs::read(world.work().join("f")).unwrap(), b"server copy");

    // A file that happens to be called NAME.part, with no sidecar, is not a download of ours.
    std::fs::write(world.work().join("g.part"), "someone's notes").unwrap();
    std::fs::write(world.root().join("g"), "server g").unwrap();
    let refused = world.run(&["get", "g"]).code(1);
    assert!(refused.stderr.contains("g.part already exists"), "{refused:?}");
    assert_eq!(std::fs::read(world.work().join("g.part")).unwrap(), b"someone's notes");
    world.run(&["get", "g", "--force"]).ok();
    assert_eq!(std::fs::read(world.work().join("g")).unwrap(), b"server g");
    assert_eq!(names_in(&world.work()), ["f", "g"]);
}

#[test]
fn get_to_a_path_and_to_a_directory() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("a"), pattern(100_000, 1)).unwrap();
    std::fs::write(world.root().join("b"), pattern(200_000, 2)).unwrap();
    world.run(&["get", "a", "-o", "copy-of-a"]).ok();
    assert_eq!(std::fs::read(world.work().join("copy-of-a")).unwrap(), pattern(100_000, 1));
    std::fs::create_dir(world.work().join("dl")).unwrap();
    world.run(&["get", "a", "b", "-o", "dl"]).ok();
    assert_eq!(names_in(&world.work().join("dl")), ["a", "b"]);
    assert_eq!(std::fs::read(world.work().join("dl/b")).unwrap(), pattern(200_000, 2));
    let usage = world.run(&["get", "a", "b", "-o", "nowhere"]).code(2);
    assert!(usage.stderr.contains("existing directory"), "{usage:?}");
}

#[test]
fn several_files_are_all_tried_and_the_worst_status_wins() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("here"), "x").unwrap();
    let out = world.run(&["get", "missing", "here"]).code(1);
    assert!(out.stderr.contains("missing: no such file on the server"), "{out:?}");
    assert_eq!(names_in(&world.work()), ["here"]);
}

#[test]
fn rm_stat_status_and_help() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("f"), "12345").unwrap();
    // A file copied into the root by hand has no MD5 until something asks for it ([LIST-3]).
    let before = world.run(&["stat", "f"]).ok();
    assert!(
        before.stdout.contains("md5:      not computed yet") || before.stdout.contains("md5:      8"),
        "{before:?}"
    );
    world.run(&["get", "f"]).ok();
    let stat = world.run(&["stat", "f"]).ok();
    assert!(stat.stdout.contains("size:     5 (5 B)"), "{stat:?}");
    assert!(stat.stdout.contains(&Digest::of(b"12345").to_string()), "{stat:?}");
    let json: serde_json::Value = serde_json::from_str(&world.run(&["stat", "f", "--json"]).ok().stdout).unwrap();
    assert_eq!(json["size"], 5);
    assert_eq!(json["md5"], Digest::of(b"12345").to_string());

    let list: serde_json::Value = serde_json::from_str(&world.run(&["list", "--json"]).ok().stdout).unwrap();
    assert_eq!(list[0]["name"], "f");
    assert_eq!(list.as_array().unwrap().len(), 1);

    let help = world.run(&["help"]).ok();
    assert!(help.stdout.contains("LIST") && help.stdout.contains("SHUTDOWN"), "{help:?}");

    world.run(&["rm", "f"]).ok();
    assert!(!world.root().join("f").exists());
    let again = world.run(&["rm", "f"]).code(1);
    assert!(again.stderr.contains("no such file"), "{again:?}");
    world.run(&["stat", "f"]).code(1);

    let status = world.run(&["status"]).ok();
    assert!(status.stdout.contains("open (this one)"), "{status:?}");
    let records: serde_json::Value = serde_json::from_str(&world.run(&["status", "--json"]).ok().stdout).unwrap();
    let records = records.as_array().unwrap();
    assert!(records.len() >= 8, "{records:?}");
    assert_eq!(records.last().unwrap()["this_connection"], true);
    assert!(records[..records.len() - 1].iter().all(|r| r["this_connection"] == false));
}

#[test]
fn status_table_snapshot() {
    let world = World::new(&[]);
    world.run(&["list"]).ok();
    world.run(&["list"]).ok();
    let status = world.run(&["status"]).ok();
    stable().bind(|| insta::assert_snapshot!("status_table", status.stdout));
}

#[test]
fn shutdown_needs_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "admin s3cret-admin\nread reader-token\nwrite writer-token\n").unwrap();
    let mut world = World::new(&["--tokens", tokens.to_str().unwrap(), "--anonymous", "read"]);
    let anon = world.run(&["shutdown"]).code(1);
    assert!(anon.stderr.contains("does not allow you to shut it down"), "{anon:?}");
    // A whole sentence, that says what it takes.
    let writer = world.run(&["--token", "writer-token", "shutdown"]).code(1);
    assert_eq!(
        writer.stderr.trim(),
        "ferry: the server does not allow you to shut it down (server: the write role may not SHUTDOWN) — that \
         takes an admin token (--token)"
    );
    let wrong = world.run(&["--token", "nope", "list"]).code(1);
    assert!(wrong.stderr.contains("--token"), "{wrong:?}");
    let bad = world.run(&["--token", "has space", "list"]).code(2);
    assert!(bad.stderr.contains("visible ASCII"), "{bad:?}");
    // A reader cannot upload; FERRY_TOKEN works like --token.
    std::fs::write(world.work().join("x"), "x").unwrap();
    let forbidden = world.run_env(&["put", "x"], &[("FERRY_TOKEN", "reader-token")]).code(1);
    assert!(forbidden.stderr.contains("does not allow you to upload"), "{forbidden:?}");
    world.run_env(&["shutdown"], &[("FERRY_TOKEN", "s3cret-admin")]).ok();
    assert!(world.server.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn usage_errors_exit_2() {
    let world = World::new(&[]);
    world.run(&["get"]).code(2);
    world.run(&["frobnicate"]).code(2);
    let bad_name = world.run(&["get", "../etc/passwd"]).code(2);
    assert!(bad_name.stderr.contains("not a valid file name"), "{bad_name:?}");
    std::fs::write(world.work().join("a"), "a").unwrap();
    std::fs::write(world.work().join("b"), "b").unwrap();
    world.run(&["put", "a", "b", "--as", "c"]).code(2);
    world.run(&["--timeout", "soon", "list"]).code(2);
    let no_command = world.run(&[]).code(2);
    assert!(no_command.stderr.contains("no command"), "{no_command:?}");
}

#[test]
fn a_server_that_is_not_there_is_a_network_failure_said_at_once() {
    // Nothing listens on this loopback port: the refusal is certain, so the default retries are
    // not spent waiting for it (they would take about 31 s).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = common::run(common::ferry_cmd(dir.path(), &format!("127.0.0.1:{port}"), dir.path()).arg("list")).code(3);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(
        out.stderr.trim(),
        format!(
            "ferry: connection refused by 127.0.0.1:{port}: nothing listens on that port of this machine — is ferryd \
             running, and on that port? (not retried: a refusal from this machine is certain)"
        )
    );
}

#[test]
fn a_server_address_that_cannot_be_one_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for (addr, says) in [("nonsense", "is not HOST:PORT"), ("127.0.0.1:99999", "a port is a number from 1 to 65535")] {
        let out = common::run(common::ferry_cmd(dir.path(), addr, dir.path()).arg("list")).code(2);
        assert!(out.stderr.contains(says), "{addr}: {out:?}");
        // FERRY_SERVER is checked the same way.
        let env = common::run(
            std::process::Command::new(common::ferry_bin())
                .current_dir(dir.path())
                .env("FERRY_SERVER", addr)
                .arg("list"),
        )
        .code(2);
        assert!(env.stderr.contains(says), "FERRY_SERVER={addr}: {env:?}");
    }
}

#[test]
fn names_with_invisible_characters_are_escaped_when_printed() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("report\u{202E}fdp.exe"), "x").unwrap();
    let list = world.run(&["list"]).ok();
    assert!(list.stdout.contains("report\\u{202e}fdp.exe"), "{list:?}");
    assert!(!list.stdout.contains('\u{202E}'));
}

#[test]
fn a_lying_server_s_download_leaves_no_file_and_exits_4() {
    let body = pattern(500_000, 9);
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } => {
            Action::Reply(raw::get(b"f", *offset, body.len() as u64, Digest::of(b"lie"), &body[*offset as usize..]))
        }
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let out =
        common::run(common::ferry_cmd(dir.path(), &server.addr.to_string(), dir.path()).args(["get", "f"])).code(4);
    assert!(out.stderr.contains("checksum mismatch"), "{out:?}");
    assert!(names_in(dir.path()).is_empty(), "{:?}", names_in(dir.path()));
}

#[test]
fn hostile_names_from_a_lying_server_are_refused() {
    let server = FakeServer::start(hello(Role::Read), |s| match &s.request {
        Request::List => Action::Reply(raw::list(&[(b"../../.bashrc", 1, 0), (b"ok", 1, 0)])),
        Request::Get { .. } => Action::Reply(raw::get(b"/etc/cron.d/evil", 0, 2, Digest::of(b"hi"), b"hi")),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let list = common::run(common::ferry_cmd(dir.path(), &addr, dir.path()).args(["--retries", "0", "list"])).code(3);
    assert!(list.stderr.contains("broke the protocol"), "{list:?}");
    assert!(list.stdout.is_empty(), "nothing it sent is shown: {list:?}");
    let get =
        common::run(common::ferry_cmd(dir.path(), &addr, dir.path()).args(["--retries", "0", "get", "ok"])).code(3);
    assert!(get.stderr.contains("broke the protocol"), "{get:?}");
    assert!(names_in(dir.path()).is_empty(), "{:?}", names_in(dir.path()));
}

#[test]
fn a_server_error_message_cannot_drive_the_terminal() {
    let server = FakeServer::start(hello(Role::Read), |_| {
        Action::Reply(raw::error(ErrorCode::NOT_FOUND, "gone\x1b]0;pwned\x07\x1b[2J"))
    });
    let dir = tempfile::tempdir().unwrap();
    let out =
        common::run(common::ferry_cmd(dir.path(), &server.addr.to_string(), dir.path()).args(["stat", "x"])).code(1);
    assert!(!out.stderr.contains('\x1b') && !out.stderr.contains('\x07'), "{out:?}");
    assert!(out.stderr.contains("gone\\u{1b}"), "{out:?}");
}

#[test]
fn a_server_computing_a_digest_is_waited_for_and_a_digest_that_never_comes_is_named() {
    // `[GET-9]`: STAT shows no md5, so the GET's head may take the deadline plus a second per
    // 16 MiB begun (here 0.25 s + 1 s); this server sends it after 0.75 s. Then the same file
    // with no answer at all.
    let body = pattern(100_000, 3);
    let (size, md5) = (body.len() as u64, Digest::of(&body));
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Stat(_) => Action::Reply(raw::stat(b"f", size, 0, None)),
        Request::Get { .. } if s.conn == 0 => {
            Action::ReplyAfter(Duration::from_millis(750), raw::get(b"f", 0, size, md5, &body))
        }
        Request::Get { .. } => Action::Silence,
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let ferry = || {
        let mut cmd = common::ferry_cmd_timeout(dir.path(), &addr, dir.path(), "250ms");
        cmd.args(["--retries", "0"]);
        cmd
    };
    let out = common::run(ferry().args(["get", "f"])).ok();
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), pattern(100_000, 3));
    assert!(
        out.stderr
            .contains("ferry: server is computing the MD5 of f (98 KiB) before sending it… (waiting up to 1.2 s)"),
        "said while it waits, bars or not: {out:?}"
    );
    let out = common::run(ferry().args(["get", "f", "-o", "g"])).code(3);
    assert!(
        out.stderr.contains("had no MD5 for f and did not finish computing the MD5 of its 98 KiB within 1.25 s"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("overloaded or unreachable"), "{out:?}");
}

#[test]
fn the_digest_cache_lives_in_the_user_s_cache_directory_and_can_be_turned_off() {
    let world = World::new(&[]);
    std::fs::write(world.work().join("a.bin"), pattern(300_000, 5)).unwrap();
    let home = world.dir.path().join("home");
    let default = home.join(".cache/ferry/digests.redb");
    let xdg = world.dir.path().join("xdg");
    let put = |env: &[(&str, &str)], extra: &[&str]| {
        let args: Vec<&str> = [&["--quiet"][..], extra, &["put", "a.bin", "--overwrite"]].concat();
        world.run_env(&args, env).ok()
    };

    for off in [&[("FERRY_NO_DIGEST_CACHE", "1")][..], &[]] {
        put(off, if off.is_empty() { &["--no-digest-cache"] } else { &[] });
        assert!(!home.join(".cache").exists(), "{off:?}: no cache, not even its directory");
    }
    let first = put(&[("FERRY_LOG", "ferry_client=debug")], &[]);
    assert!(default.is_file(), "{first:?}");
    assert!(!first.stderr.contains("from the digest cache"), "{first:?}");
    let second = put(&[("FERRY_LOG", "ferry_client=debug")], &[]);
    assert!(second.stderr.contains("upload: MD5 from the digest cache"), "{second:?}");

    let xdg_str = xdg.to_str().unwrap();
    put(&[("XDG_CACHE_HOME", xdg_str)], &[]);
    assert!(xdg.join("ferry/digests.redb").is_file());
    assert_eq!(std::fs::read(world.root().join("a.bin")).unwrap(), pattern(300_000, 5));
}
