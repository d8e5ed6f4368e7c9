//! Hostile load, scaled down to seconds, against a real `ferryd` process of each engine (issue 10;
//! `[RES-1]`, `[RES-2]`, `[RES-5]`): clients pipeline requests and never read. The process's peak
//! resident memory must stay bounded, and a fresh client must be answered meanwhile.
//!
//! Before backpressure, each such connection made the server hold the replies to everything in
//! one read, some 33 MiB of help texts per 64 KiB read: these 48 connections, about 1.5 GiB. The full-size figures (500
//! connections, HELP, STATUS and LIST) come from `ferry-bench hostile`.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proto::{ClientHello, Request};

const CONNECTIONS: usize = 48;
/// Request bytes each hostile connection tries to send.
const PIPELINED: usize = 1 << 20;
/// A bound well above what a bounded server holds (a few MiB here) and far below what an
/// unbounded one does.
const PEAK_RSS_MAX_KIB: u64 = 64 << 10;

/// The server process, killed and reaped when the test ends however it ends.
struct Ferryd(Child);

impl Drop for Ferryd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Ferryd {
    fn start(engine: &str, root: &std::path::Path) -> (Self, SocketAddr) {
        let cap = (CONNECTIONS + 16).to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferryd"))
            .args(["--engine", engine, "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(["--max-clients", &cap, "--max-per-ip", &cap, "--root"])
            .arg(root)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
        (Self(child), addr)
    }

    /// VmHWM: the process's peak resident memory, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// A client socket with small buffers of its own, so that what the test measures is the
/// server's holding, not the kernel's.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.set_send_buffer_size(16 * 1024).unwrap();
    s.connect_timeout(&addr.into(), Duration::from_secs(10)).unwrap();
    let s: TcpStream = s.into();
    s.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Sends the hello, then HELPs (one byte, each answered with the whole help text) until the
/// server stops taking them for 500 ms, or `PIPELINED` bytes; reads nothing. Returns the bytes
/// sent.
fn pipeline_unread(s: &mut TcpStream) -> usize {
    let mut hello = Vec::new();
    ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut hello);
    s.write_all(&hello).unwrap();
    let mut help = Vec::new();
    Request::Help.encode(&mut help);
    let chunk: Vec<u8> = help.iter().copied().cycle().take(64 * 1024).collect();
    let (mut sent, mut last) = (0, Instant::now());
    while sent < PIPELINED && last.elapsed() < Duration::from_millis(500) {
        let at = sent % chunk.len();
        match s.write(&chunk[at..]) {
            Ok(n) => {
                sent += n;
                last = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => panic!("the server dropped a pipelining client: {e}"),
        }
    }
    sent
}

fn hostile_pipelining_is_bounded(engine: &str) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.txt"), b"hello").unwrap();
    let (server, addr) = Ferryd::start(engine, root.path());
    // All at once, each on its own thread: each waits out its own 500 ms stall.
    let hostile: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let sent = pipeline_unread(&mut s);
                (s, sent)
            })
        })
        .collect();
    let (held, mut accepted): (Vec<TcpStream>, Vec<usize>) = hostile.into_iter().map(|t| t.join().unwrap()).unzip();
    accepted.sort_unstable();
    let peak = server.peak_rss_kib();
    println!(
        "{engine}: {CONNECTIONS} connections; request bytes taken median {} max {}; peak RSS {} KiB",
        accepted[CONNECTIONS / 2],
        accepted[CONNECTIONS - 1],
        peak
    );
    assert!(accepted[CONNECTIONS - 1] < PIPELINED, "[RES-2] the server took all {PIPELINED} bytes of one client");
    assert!(peak < PEAK_RSS_MAX_KIB, "[RES-1] peak RSS {peak} KiB with {CONNECTIONS} clients not reading");

    // [RES-5]: a fresh client is answered while they are held.
    let started = Instant::now();
    let mut fresh = TcpStream::connect(addr).unwrap();
    fresh.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = Vec::new();
    ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut hello);
    Request::List.encode(&mut hello);
    fresh.write_all(&hello).unwrap();
    let mut reply = [0u8; 36 + 5];
    fresh.read_exact(&mut reply).unwrap();
    assert_eq!(reply[36], ferry_proto::message::tag::LIST);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "[RES-5] a fresh client waited {waited:?}");
    drop(held);
}

#[test]
fn blocking_engine_holds_hostile_pipelining_in_bounded_memory() {
    hostile_pipelining_is_bounded("blocking");
}

#[test]
fn async_engine_holds_hostile_pipelining_in_bounded_memory() {
    hostile_pipelining_is_bounded("async");
}
