//! `ferry shell`: driven by a script on standard input, and on a pseudo-terminal with line
//! editing and history.

mod common;

use common::{run_with_input, World};

#[test]
fn the_shell_runs_a_script_from_standard_input() {
    let world = World::new(&[]);
    std::fs::write(world.work().join("a file.txt"), "contents\n").unwrap();
    let script = "\
# a comment, then a blank line

upload 'a file.txt'
ls
get \"a file.txt\" -o copy.txt
stat 'a file.txt'
frobnicate
delete 'a file.txt'
list --json
exit
list
";
    let out = run_with_input(world.ferry().arg("shell"), script);
    assert_eq!(out.code, 0, "{out:#?}");
    // The commands ran in order, on one connection.
    assert!(out.stderr.contains("a file.txt -> a file.txt (9 B, created"), "{out:#?}");
    assert!(out.stdout.contains("NAME") && out.stdout.contains("a file.txt   9 B"), "{out:#?}");
    assert_eq!(std::fs::read(world.work().join("copy.txt")).unwrap(), b"contents\n");
    assert!(out.stdout.contains("size:     9 (9 B)"), "{out:#?}");
    assert!(
        out.stderr.contains("unknown command 'frobnicate' — type help for the commands"),
        "an error does not end the script: {out:#?}"
    );
    assert!(out.stderr.contains("deleted a file.txt"), "{out:#?}");
    assert!(out.stdout.trim_end().ends_with("[]"), "nothing after exit ran: {out:#?}");
    let status = world.run(&["status", "--json"]).ok();
    let records: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 2, "the script used one connection: {records}");
}

#[test]
fn the_shell_s_exit_status_is_its_last_command_s() {
    let world = World::new(&[]);
    assert_eq!(run_with_input(world.ferry().arg("shell"), "stat missing\n").code, 1);
    assert_eq!(run_with_input(world.ferry().arg("shell"), "stat missing\nlist\n").code, 0);
    let help = run_with_input(world.ferry().arg("shell"), "help\n");
    assert!(help.stdout.contains("Commands:") && help.stdout.contains("The server says:"), "{help:#?}");
}

#[cfg(unix)]
mod pty {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

    use super::common::{Guard, World};

    /// A pseudo-terminal: the test holds the master side, ferry gets the other.
    fn open_pty() -> (std::fs::File, OwnedFd) {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::ffi::OsStr::new(&*name.to_string_lossy()))
            .unwrap()
            .into();
        let size = rustix::termios::Winsize { ws_row: 40, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
        rustix::termios::tcsetwinsize(&slave, size).unwrap();
        (std::fs::File::from(master), slave)
    }

    /// Reads the terminal until `want` has appeared `times` times in all, or panics.
    fn expect(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut String, want: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.matches(want).count() < times {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("waited for {want:?} ×{times}; the terminal shows:\n{seen}"),
            }
        }
    }

    #[test]
    fn the_shell_edits_lines_and_keeps_history_on_a_terminal() {
        let world = World::new(&[]);
        std::fs::write(world.root().join("remote.txt"), "x").unwrap();
        std::fs::write(world.root().join("big"), vec![7u8; 8 << 20]).unwrap();
        let history = world.dir.path().join("history");
        let (mut master, slave) = open_pty();
        let mut child = Guard(Some(
            world
                .ferry()
                .args(["--limit-rate", "1M", "shell"])
                .env("FERRY_HISTORY", &history)
                .env("TERM", "xterm")
                .stdin(Stdio::from(slave.try_clone().unwrap()))
                .stdout(Stdio::from(slave.try_clone().unwrap()))
                .stderr(Stdio::from(slave))
                .spawn()
                .unwrap(),
        ));
        let mut reader = master.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        expect(&rx, &mut seen, "Connected to", 1);
        expect(&rx, &mut seen, "ferry> ", 1);
        // A typo fixed with backspace: "lisx", DEL, "t".
        master.write_all(b"lisx\x7ft\r").unwrap();
        expect(&rx, &mut seen, "remote.txt", 1);
        expect(&rx, &mut seen, "ferry> ", 2);
        // Up-arrow recalls the last line.
        master.write_all(b"\x1b[A\r").unwrap();
        expect(&rx, &mut seen, "2 files, 8.0 MiB", 2);
        expect(&rx, &mut seen, "ferry> ", 3);
        // Tab completes a command.
        master.write_all(b"stat\t remote.txt\r").unwrap();
        expect(&rx, &mut seen, "size:     1 (1 B)", 1);
        expect(&rx, &mut seen, "ferry> ", 4);
        // Ctrl-C during a download stops the download, not the shell; the .part stays.
        master.write_all(b"get big\r").unwrap();
        let part = world.work().join("big.part");
        assert!(super::common::wait_until(Duration::from_secs(30), || {
            std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
        }));
        let pid = rustix::process::Pid::from_child(child.child());
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        expect(&rx, &mut seen, "interrupted", 1);
        expect(&rx, &mut seen, "ferry> ", 5);
        assert!(std::fs::metadata(&part).unwrap().len() > 0, "kept for resuming");
        assert!(!world.work().join("big").exists());
        master.write_all(b"exit\r").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.child().try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the shell did not exit; it shows:\n{seen}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(130), "the last command's status, as sh would: {seen}");
        let kept = std::fs::read_to_string(&history).unwrap();
        assert!(kept.contains("list") && kept.contains("stat remote.txt") && kept.contains("exit"), "{kept}");
    }

    #[test]
    fn ferry_alone_on_a_terminal_is_the_shell() {
        let world = World::new(&[]);
        let (mut master, slave) = open_pty();
        let mut child = Guard(Some(
            world
                .ferry()
                .env("FERRY_HISTORY", "")
                .stdin(Stdio::from(slave.try_clone().unwrap()))
                .stdout(Stdio::from(slave.try_clone().unwrap()))
                .stderr(Stdio::from(slave))
                .spawn()
                .unwrap(),
        ));
        let mut reader = master.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        expect(&rx, &mut seen, "ferry> ", 1);
        master.write_all(b"help\r").unwrap();
        expect(&rx, &mut seen, "The server says:", 1);
        master.write_all(b"quit\r").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.child().try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the shell did not exit; it shows:\n{seen}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(child.child().try_wait().unwrap().unwrap().success(), "{seen}");
    }
}
