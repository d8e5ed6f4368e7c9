//! What users of scp, rsync and curl reach for (issue 15): standard input and output, several
//! files and patterns, "up to date", `sync`, human sizes, completions and the manual page —
//! each run as a user would, the real `ferry` against a real `ferryd`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{names_in, pattern, run_with_input, wait_output, wait_until, Guard, World};
use ferry_client::testing::{hello, raw, Action, FakeServer};
use ferry_proto::{ErrorCode, Request, Role};

/// insta settings that hide what changes from run to run.
fn stable() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"/tmp/[^ ]*/work", "[WORK]");
    s
}

#[test]
fn standard_input_up_and_standard_output_down() {
    let world = World::new(&[]);
    let data = pattern(300_000, 4);
    let mut cmd = world.ferry();
    cmd.args(["put", "-", "--as", "from-stdin.bin"]);
    let input = String::from_utf8_lossy(&data).into_owned();
    let put = run_with_input(&mut cmd, &input);
    assert_eq!(put.code, 0, "{put:#?}");
    assert!(put.stderr.starts_with("standard input -> from-stdin.bin ("), "{put:#?}");
    let sent = std::fs::read(world.root().join("from-stdin.bin")).unwrap();
    assert_eq!(sent, input.as_bytes());
    assert!(names_in(&world.work()).is_empty(), "nothing left behind here");

    let got = std::process::Command::new(common::ferry_bin())
        .current_dir(world.work())
        .env("HOME", world.dir.path().join("home"))
        .args(["--server", &world.server.addr.to_string(), "get", "from-stdin.bin", "-o", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, sent, "the file, byte for byte, on stdout");
    assert!(String::from_utf8_lossy(&got.stderr).contains("from-stdin.bin -> standard output ("), "{got:?}");
    assert!(names_in(&world.work()).is_empty(), "no .part for a download to stdout");

    let nameless = world.run(&["put", "-"]).code(2);
    assert!(nameless.stderr.contains("name the file with --as NAME"), "{nameless:?}");
    let two = world.run(&["get", "a", "b", "-o", "-"]).code(2);
    assert!(two.stderr.contains("name only one"), "{two:?}");
    let help = world.run(&["put", "--help"]).ok();
    assert!(help.stdout.contains("first copied to a temporary file"), "{help:?}");
}

#[test]
fn patterns_match_the_server_s_list() {
    let world = World::new(&[]);
    for (name, body) in [("a.log", "a"), ("b.log", "bb"), ("c.txt", "c"), (".hidden.log", "h")] {
        std::fs::write(world.root().join(name), body).unwrap();
    }
    std::fs::create_dir(world.work().join("logs")).unwrap();
    let out = world.run(&["get", "*.log", "-o", "logs"]).ok();
    assert_eq!(names_in(&world.work().join("logs")), ["a.log", "b.log"], "* skips a leading dot: {out:?}");
    assert!(out.stderr.contains("b.log -> logs/b.log (2 B, MD5 verified)"), "{out:?}");
    // A pattern that matches nothing is a name, as in sh: the server says there is no such file.
    let none = world.run(&["get", "*.pdf"]).code(1);
    assert!(none.stderr.contains("*.pdf: no such file on the server"), "{none:?}");
    // Several names and patterns; each file once.
    let many = world.run(&["get", "c.txt", "?.log", "a.log"]).ok();
    assert_eq!(names_in(&world.work()), ["a.log", "b.log", "c.txt", "logs"], "{many:?}");
}

#[test]
fn a_pattern_cannot_lead_a_server_s_names_out_of_the_directory() {
    // A lying server lists names that would climb out; ferry refuses the list whole ([NAME-11])
    // and writes nothing anywhere.
    let server = FakeServer::start(hello(Role::Read), |s| match &s.request {
        Request::List => Action::Reply(raw::list(&[(b"../escaped", 1, 0), (b"ok", 1, 0), (b"/tmp/abs", 1, 0)])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = common::run(common::ferry_cmd(&work, &server.addr.to_string(), dir.path()).args([
        "--retries",
        "0",
        "get",
        "*",
    ]))
    .code(3);
    assert!(out.stderr.contains("broke the protocol"), "{out:?}");
    assert_eq!(names_in(dir.path()), ["work"], "nothing written beside the directory");
    assert!(names_in(&work).is_empty());
}

#[test]
fn a_local_file_with_the_server_s_md5_is_up_to_date() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("f"), "same bytes").unwrap();
    world.run(&["get", "f"]).ok();
    let again = world.run(&["get", "f"]).ok();
    assert_eq!(again.stderr.trim(), "f -> f (10 B, up to date: same MD5 as the server's)");
    std::fs::write(world.work().join("f"), "other bytes").unwrap();
    let differs = world.run(&["get", "f"]).code(1);
    assert!(differs.stderr.contains("already exists — use --force"), "{differs:?}");
    assert_eq!(std::fs::read(world.work().join("f")).unwrap(), b"other bytes");
}

#[test]
fn sync_sends_only_what_differs() {
    let world = World::new(&[]);
    let local = world.work().join("photos");
    std::fs::create_dir(&local).unwrap();
    std::fs::write(local.join("same.jpg"), "same").unwrap();
    std::fs::write(local.join("changed.jpg"), "new version").unwrap();
    std::fs::write(local.join("new.jpg"), "new").unwrap();
    std::fs::create_dir(local.join("subdir")).unwrap();
    std::fs::write(world.root().join("same.jpg"), "same").unwrap();
    std::fs::write(world.root().join("changed.jpg"), "old").unwrap();
    std::fs::write(world.root().join("gone.jpg"), "only on the server").unwrap();
    // The server learns the digests of files copied in by hand ([LIST-5]).
    for name in ["same.jpg", "changed.jpg"] {
        world.run(&["get", name, "-o", "-"]).ok();
    }

    let dry = world.run(&["sync", "photos", "--delete", "--dry-run"]).ok();
    stable().bind(|| insta::assert_snapshot!("sync_dry_run", format!("{}---\n{}", dry.stdout, dry.stderr)));
    assert_eq!(std::fs::read(world.root().join("changed.jpg")).unwrap(), b"old", "a dry run changes nothing");
    assert!(world.root().join("gone.jpg").exists());

    let real = world.run(&["sync", "photos", "--delete"]).ok();
    stable().bind(|| insta::assert_snapshot!("sync_upload", real.stderr));
    assert_eq!(names_in(&world.root()), ["changed.jpg", "new.jpg", "same.jpg"]);
    assert_eq!(std::fs::read(world.root().join("changed.jpg")).unwrap(), b"new version");
    let again = world.run(&["sync", "photos", "--delete"]).ok();
    assert_eq!(again.stderr.trim(), "sync: 0 uploaded (0 B), 3 up to date, 0 deleted", "{again:?}");

    // And back: a mirror with one stale file, one file the server lacks, and a download's .part.
    let mirror = world.work().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    std::fs::write(mirror.join("same.jpg"), "same").unwrap();
    std::fs::write(mirror.join("changed.jpg"), "old").unwrap();
    std::fs::write(mirror.join("stray.txt"), "local only").unwrap();
    std::fs::write(mirror.join("x.part"), "someone's download").unwrap();
    let down = world.run(&["sync", "--from-server", "mirror", "--delete"]).ok();
    stable().bind(|| insta::assert_snapshot!("sync_download", down.stderr));
    assert_eq!(names_in(&mirror), ["changed.jpg", "new.jpg", "same.jpg", "x.part"]);
    assert_eq!(std::fs::read(mirror.join("changed.jpg")).unwrap(), b"new version");
    let not_a_dir = world.run(&["sync", "nowhere"]).code(2);
    assert!(not_a_dir.stderr.contains("nowhere is not a directory"), "{not_a_dir:?}");
}

#[test]
fn sizes_and_durations_for_people() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("f"), "x").unwrap();
    let home = world.dir.path().join("home");
    let mut cmd = common::ferry_cmd_timeout(&world.work(), &world.server.addr.to_string(), &home, "1m 30s");
    common::run(cmd.args(["--limit-rate", "10MiB", "stat", "f"])).ok();
    world.run(&["--limit-rate", "1.5M/s", "stat", "f"]).ok();
    let bad = world.run(&["--limit-rate", "fast", "stat", "f"]).code(2);
    assert!(bad.stderr.contains("is not a rate"), "{bad:?}");
    let mut cmd = common::ferry_cmd_timeout(&world.work(), &world.server.addr.to_string(), &home, "soon");
    let bad = common::run(cmd.args(["stat", "f"])).code(2);
    assert!(bad.stderr.contains("is not a duration"), "{bad:?}");
}

#[test]
fn completions_a_manual_page_and_help_for_one_command() {
    let world = World::new(&[]);
    for shell in ["bash", "zsh", "fish"] {
        let out = world.run(&["completions", shell]).ok();
        assert!(out.stdout.contains("ferry") && out.stdout.contains("sync"), "{shell}: {out:?}");
    }
    world.run(&["completions", "tcsh"]).code(2);
    let man = world.run(&["man"]).ok();
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH ferry"), "{}", &man.stdout[..200]);
    let help_get = world.run(&["help", "get"]).ok();
    let get_help = world.run(&["get", "--help"]).ok();
    assert_eq!(help_get.stdout, get_help.stdout);
    let nothing = world.run(&["help", "frobnicate"]).code(2);
    assert!(nothing.stderr.contains("there is no command \"frobnicate\""), "{nothing:?}");
}

#[test]
fn messages_say_what_is_wrong() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("x"), "x").unwrap();
    let missing_dir = world.run(&["get", "x", "-o", "/nonexistent/dir/"]).code(2);
    assert_eq!(missing_dir.stderr.trim(), "ferry: -o /nonexistent/dir/: no such directory");
    let missing_parent = world.run(&["get", "x", "-o", "no/such/dir/file"]).code(1);
    assert_eq!(
        missing_parent.stderr.trim(),
        "ferry: cannot download to no/such/dir/file: the directory no/such/dir does not exist"
    );
    assert!(!missing_parent.stderr.contains(".part"));
    let directory = world.run(&["put", "."]).code(2);
    assert_eq!(directory.stderr.trim(), "ferry: . is a directory: put uploads files — sync . uploads the files in it");
}

#[cfg(unix)]
#[test]
fn ctrl_c_keeps_the_part_and_says_how_to_resume() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("big"), pattern(16 << 20, 8)).unwrap();
    let mut child = Guard(Some(
        world
            .ferry()
            .args(["--limit-rate", "2M", "get", "big"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let part = world.work().join("big.part");
    assert!(wait_until(Duration::from_secs(30), || std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)));
    let pid = rustix::process::Pid::from_child(child.child());
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = wait_output(child.take(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let line = BufReader::new(stderr.as_bytes()).lines().map_while(Result::ok).last().unwrap();
    let ferry = common::ferry_bin();
    let expected_tail = format!(
        "to resume, run: {} --server {} --timeout 5 --limit-rate 2M get big",
        ferry.display(),
        world.server.addr
    );
    assert!(line.starts_with("ferry: interrupted; big.part keeps "), "{line}");
    assert!(line.ends_with(&expected_tail), "{line}\nwanted …{expected_tail}");
    assert!(std::fs::metadata(&part).unwrap().len() > 0, "kept");
    assert!(!world.work().join("big").exists());
    // The command it prints resumes the download.
    let again = world.run(&["get", "big"]).ok();
    assert!(again.stderr.contains("resumed at"), "{again:?}");
    assert_eq!(std::fs::read(world.work().join("big")).unwrap(), pattern(16 << 20, 8));
}
