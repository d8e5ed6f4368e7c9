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

#[test]
fn the_shell_takes_per_command_options_and_speaks_as_the_shell() {
    let world = World::new(&[]);
    std::fs::write(world.root().join("remote.bin"), vec![1u8; 100_000]).unwrap();
    std::fs::create_dir(world.work().join("sub")).unwrap();
    std::fs::write(world.work().join("sub/a.bin"), "a").unwrap();
    std::fs::write(world.work().join("sub/b.bin"), "b").unwrap();
    let script = "\
help get
get remote.bin --limit-rate 10M -o copy.bin
get remote.bin --bogus
ls --server elsewhere:1
stat missing
put .
lcd sub
lpwd
put *.bin
rm a.bin
";
    let out = run_with_input(world.ferry().arg("shell"), script);
    let help_get = out.stdout.split("\n/").next().unwrap_or_default();
    insta::assert_snapshot!("shell_help_get", help_get);
    assert!(out.stdout.contains("Usage: get [OPTIONS] <NAME|PATTERN>..."), "{out:#?}");
    assert!(out.stdout.contains("--limit-rate <RATE>"), "the shell's own options in its help: {out:#?}");
    assert_eq!(std::fs::read(world.work().join("copy.bin")).unwrap(), vec![1u8; 100_000]);
    assert!(out.stderr.contains("remote.bin -> copy.bin (98 KiB, MD5 verified)"), "{out:#?}");
    assert!(
        out.stderr.contains("ferry: get does not take --bogus — help get lists its options"),
        "not clap's `-- --bogus` tip: {out:#?}"
    );
    assert!(!out.stderr.contains("-- --"), "{out:#?}");
    assert!(out.stderr.contains("ferry: --server is set when ferry starts"), "{out:#?}");
    assert!(out.stderr.contains("missing: no such file on the server"), "{out:#?}");
    assert!(!out.stderr.contains("ferry list"), "no command of the other interface: {out:#?}");
    assert!(out.stderr.contains("ferry: . is a directory: put uploads files"), "{out:#?}");
    assert!(!out.stderr.contains("--as"), "no --as for a directory: {out:#?}");
    assert!(out.stdout.contains(&format!("{}\n", world.work().join("sub").display())), "lpwd: {out:#?}");
    assert!(out.stderr.contains("a.bin -> a.bin (1 B, created") && out.stderr.contains("b.bin -> b.bin (1 B, created"));
    assert!(out.stderr.contains("deleted a.bin"), "{out:#?}");
    assert_eq!(common::names_in(&world.root()), ["b.bin", "remote.bin"]);
    assert_eq!(out.code, 0, "{out:#?}");
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

    /// What a person sees: the terminal's bytes rendered by a VT100 emulator, so that text
    /// written and then erased does not count as shown.
    struct Screen {
        parser: vt100::Parser,
        rx: mpsc::Receiver<Vec<u8>>,
    }

    impl Screen {
        fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
            Self { parser: vt100::Parser::new(40, 120, 0), rx }
        }

        fn text(&self) -> String {
            self.parser.screen().contents()
        }

        /// Reads the terminal until `cond` holds for the screen, or panics.
        fn until(&mut self, what: &str, cond: impl Fn(&str) -> bool) -> String {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = self.text();
                if cond(&text) {
                    return text;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(bytes) => self.parser.process(&bytes),
                    Err(_) => panic!("waited for {what}; the screen shows:\n{text}"),
                }
            }
        }

        fn shows(&mut self, want: &str) -> String {
            self.until(want, |t| t.contains(want))
        }
    }

    /// The rates the bars on `screen` show (`1.0 MiB/s`, `512 KiB/s`), in MiB/s.
    fn rates(screen: &str) -> Vec<f64> {
        let words: Vec<&str> = screen.split_whitespace().collect();
        words
            .windows(2)
            .filter_map(|w| {
                let scale = match w[1] {
                    "MiB/s" => 1.0,
                    "KiB/s" => 1.0 / 1024.0,
                    "GiB/s" => 1024.0,
                    "B/s" => 1.0 / 1048576.0,
                    _ => return None,
                };
                w[0].parse::<f64>().ok().map(|v| v * scale)
            })
            .collect()
    }

    #[test]
    fn the_shell_shows_results_resumes_honestly_and_clears_its_bars() {
        let world = World::new(&[]);
        std::fs::write(world.root().join("big"), vec![3u8; 6 << 20]).unwrap();
        std::fs::write(world.work().join("notes.txt"), "hello, ferry\n").unwrap();
        let (mut master, slave) = open_pty();
        let mut child = Guard(Some(
            world
                .ferry()
                .args(["--limit-rate", "1M", "shell"])
                .env("FERRY_HISTORY", "")
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
        let mut screen = Screen::new(rx);
        screen.shows("ferry> ");
        // A result line for put, get and rm, still on screen after the next prompt.
        master.write_all(b"put notes.txt\r").unwrap();
        screen.until("put's line and a prompt", |t| {
            t.contains("notes.txt -> notes.txt (13 B, created") && t.matches("ferry> ").count() == 2
        });
        master.write_all(b"get notes.txt -o copy.txt\r").unwrap();
        screen.until("get's line", |t| {
            t.contains("notes.txt -> copy.txt (13 B, MD5 verified)") && t.matches("ferry> ").count() == 3
        });
        master.write_all(b"rm notes.txt\r").unwrap();
        screen.until("rm's line", |t| t.contains("deleted notes.txt") && t.matches("ferry> ").count() == 4);

        // Ctrl-C in the middle of a download: the bar goes, the .part stays.
        master.write_all(b"get big\r").unwrap();
        screen.shows("MiB/s");
        let part = world.work().join("big.part");
        assert!(super::common::wait_until(Duration::from_secs(30), || {
            std::fs::metadata(&part).is_ok_and(|m| m.len() >= 2 << 20)
        }));
        // Ctrl-C as a terminal delivers it: the key (which the terminal echoes as `^C` unless
        // ferry turned echo off), then the signal (sent by hand: ferry is not in this pseudo-
        // terminal's foreground process group).
        master.write_all(b"\x03").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let pid = rustix::process::Pid::from_child(child.child());
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let after = screen.until("the interruption and a prompt", |t| {
            t.contains("ferry: interrupted; big.part keeps") && t.matches("ferry> ").count() == 5
        });
        assert!(after.contains("to resume, run: get big"), "{after}");
        assert!(!after.contains("MiB/s"), "no bar left on screen:\n{after}");
        let held = std::fs::metadata(&part).unwrap().len();

        // Resumed under --limit-rate 1M: the bar's rate is the rate of the bytes moving now,
        // not the bytes held divided by the time since the bar started.
        master.write_all(b"get big\r").unwrap();
        let during = screen.until("a rate after a second", |t| rates(t).iter().any(|r| *r > 0.5));
        let shown = rates(&during);
        assert!(shown.iter().all(|r| *r < 2.0), "resumed at {held} B, the bar says {shown:?}:\n{during}");
        screen.until("the resumed download's line", |t| t.contains("big -> big (6.0 MiB, MD5 verified, resumed at"));
        master.write_all(b"exit\r").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.child().try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the shell did not exit; it shows:\n{}", screen.text());
            std::thread::sleep(Duration::from_millis(20));
        }
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
