//! Downloads that survive the server: killed mid-transfer and started again, or not up yet.
//!
//! Nothing here depends on timing luck. The client is slowed with `--limit-rate` so that a
//! 64 MiB download takes about two seconds; the test waits until the `.part` file holds a few
//! MiB — proof that the transfer is under way — then kills ferryd (SIGKILL) and starts it again
//! on the same root and port. The client's retry (after about a second) resumes from its `.part`
//! file. That the second GET asked for an offset above 0 is read from the restarted ferryd's
//! log, which records every GET with its offset.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{names_in, pattern, wait_output, wait_until, Guard, World};
use ferry_proto::Digest;

const MIB: u64 = 1 << 20;

#[test]
fn a_download_resumes_after_the_server_is_killed_and_started_again() {
    let mut world = World::new(&[]);
    let body = pattern(64 << 20, 7);
    std::fs::write(world.root().join("big.bin"), &body).unwrap();
    let md5 = Digest::of(&body);
    drop(body);

    let mut client = Guard(Some(
        world
            .ferry()
            .args(["--retries", "8", "--limit-rate", "32M", "get", "big.bin"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let part = world.work().join("big.bin.part");
    let held = || std::fs::metadata(&part).map_or(0, |m| m.len());
    assert!(wait_until(Duration::from_secs(30), || held() >= 4 * MIB), "the download did not get under way");
    world.server.kill();
    let at_kill = held();
    assert!(at_kill < 64 * MIB, "the download must still be running when the server dies");
    world.server.restart();

    let out = wait_output(client.take(), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("was lost while downloading"), "the cut was noticed: {stderr}");
    assert!(stderr.contains("; retrying in ") && stderr.contains(", 8 tries left"), "{stderr}");
    assert!(stderr.contains("MD5 verified, resumed at"), "{stderr}");
    assert_eq!(Digest::of(&std::fs::read(world.work().join("big.bin")).unwrap()), md5);
    assert_eq!(names_in(&world.work()), ["big.bin"], "no .part or .part.meta left");

    assert_eq!(world.server.get_offsets(0), [0], "the first server saw one GET from 0");
    let resumed = world.server.get_offsets(1);
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert!(resumed[0] >= at_kill.min(4 * MIB) && resumed[0] < 64 * MIB, "resumed at {resumed:?}");
}

#[test]
fn an_interrupted_download_resumes_when_the_command_is_run_again() {
    let mut world = World::new(&[]);
    let body = pattern(32 << 20, 11);
    std::fs::write(world.root().join("big.bin"), &body).unwrap();
    let md5 = Digest::of(&body);
    drop(body);

    let mut client = Guard(Some(
        world
            .ferry()
            .args(["--retries", "0", "--limit-rate", "16M", "get", "big.bin"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let part = world.work().join("big.bin.part");
    let held = || std::fs::metadata(&part).map_or(0, |m| m.len());
    assert!(wait_until(Duration::from_secs(30), || held() >= 2 * MIB), "the download did not get under way");
    world.server.kill();
    let out = wait_output(client.take(), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(names_in(&world.work()), ["big.bin.part", "big.bin.part.meta"], "kept for the next run");
    let kept = held();
    assert!(kept >= 2 * MIB, "{kept}");

    world.server.restart();
    let again = world.run(&["get", "big.bin"]).ok();
    assert!(again.stderr.contains("resumed at"), "{again:?}");
    assert_eq!(Digest::of(&std::fs::read(world.work().join("big.bin")).unwrap()), md5);
    assert_eq!(names_in(&world.work()), ["big.bin"]);
    assert_eq!(world.server.get_offsets(1), [kept], "the second run asked for exactly what it lacked");
}

#[test]
fn a_changed_file_is_downloaded_again_from_the_start() {
    // [GET-7]: the .part belongs to an older version of the file.
    let mut world = World::new(&[]);
    std::fs::write(world.root().join("f"), pattern(8 << 20, 1)).unwrap();
    let mut client = Guard(Some(
        world
            .ferry()
            .args(["--retries", "0", "--limit-rate", "4M", "get", "f"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let part = world.work().join("f.part");
    assert!(wait_until(Duration::from_secs(30), || std::fs::metadata(&part).map_or(0, |m| m.len()) >= MIB));
    world.server.kill();
    assert_eq!(wait_output(client.take(), Duration::from_secs(60)).status.code(), Some(3));

    // Larger than the old one, so that the kept bytes' offset is within it: the server answers
    // with the new file's size and MD5, which the client must notice.
    let new = pattern(10 << 20, 2);
    std::fs::write(world.root().join("f"), &new).unwrap();
    world.server.restart();
    let again = world.run(&["get", "f"]).ok();
    assert!(again.stderr.contains("the file changed on the server"), "{again:?}");
    assert_eq!(std::fs::read(world.work().join("f")).unwrap(), new);
    let offsets = world.server.get_offsets(1);
    assert_eq!(offsets.len(), 2, "{offsets:?}");
    assert!(offsets[0] > 0 && offsets[1] == 0, "{offsets:?}");
}

#[test]
fn a_server_gone_between_two_shell_commands_is_waited_for() {
    // The shell connected once; then ferryd stops and comes back on the same port. The refusal
    // in between is a server restarting, not a server that was never there: it is retried, and
    // ferry says so at the first failure.
    let mut world = World::new(&[]);
    let mut shell = Guard(Some(
        world
            .ferry()
            .args(["--retries", "5", "shell"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut stdin = shell.child().stdin.take().unwrap();
    let stdout = shell.child().stdout.take().unwrap();
    let stderr = shell.child().stderr.take().unwrap();
    let (out_tx, out_rx) = mpsc::channel();
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let (err_tx, err_rx) = mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let wait_for = |rx: &mpsc::Receiver<String>, want: &str| loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("waited for {want:?}"));
        if line.contains(want) {
            return line;
        }
    };
    writeln!(stdin, "list").unwrap();
    wait_for(&out_rx, "NAME");
    world.server.kill();
    writeln!(stdin, "list").unwrap();
    let note = wait_for(&err_rx, "retrying in");
    assert!(note.contains("connection refused by") && note.ends_with(", 5 tries left"), "{note}");
    world.server.restart();
    wait_for(&out_rx, "NAME");
    drop(stdin);
    let out = wait_output(shell.take(), Duration::from_secs(60));
    let _ = out_reader.join();
    let stderr = err_reader.join().unwrap();
    assert!(out.status.success(), "{stderr}");
}
