//! The load generator against in-process servers: each engine of ferryd in every Ferry mode, and
//! a tiny HTTP/1.1 server. The checks are on counts and verification, never on timing.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::driver::{self, NoWindow, Plan};
use super::files::FileSet;
use super::tally::Tally;
use super::wire::{Mode, Protocol, Script, Verify};
use super::{measure, prime};

const FILES: usize = 20;

fn plan(addr: SocketAddr, files: &Arc<FileSet>, protocol: Protocol, mode: Mode, depth: usize, verify: Verify) -> Plan {
    Plan {
        addr,
        script: Arc::new(Script::new(protocol, mode, files)),
        files: Arc::clone(files),
        connections: 3,
        depth,
        threads: 2,
        verify,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(300),
        each_once: false,
        seed: 7,
    }
}

/// Replies were counted in the window, every reply verified, none failed.
fn check(what: &str, t: &Tally, verify: Verify) {
    assert_eq!(t.failures, 0, "{what}: {:?}", t.first_failures);
    assert!(t.replies > 0, "{what}: no reply in the window");
    assert_eq!(t.latencies_ns.len() as u64, t.replies, "{what}");
    let verified = if verify == Verify::None { 0 } else { t.all_replies() };
    assert_eq!(t.verified, verified, "{what}");
}

fn ferry_modes(addr: SocketAddr, files: &Arc<FileSet>, engine: &str) {
    let stop = AtomicBool::new(false);
    prime(addr, Protocol::Ferry, files, &stop).unwrap();
    let cases = [
        (Mode::Persistent, 1, Verify::Data),
        (Mode::Persistent, 4, Verify::Content),
        (Mode::Fresh, 1, Verify::Announced),
        (Mode::Legacy, 1, Verify::Data),
        (Mode::Persistent, 1, Verify::None),
    ];
    for (mode, depth, verify) in cases {
        let p = plan(addr, files, Protocol::Ferry, mode, depth, verify);
        // The test process is the server: its CPU time is measured as the server's.
        let mut m = measure(&p, &[std::process::id()], &stop).unwrap();
        let what = format!("{engine} {mode:?} depth {depth} {verify:?}");
        check(&what, &m.outcome.tally, verify);
        assert!(m.usage.is_some() && m.p50().is_some(), "{what}");
        if mode != Mode::Persistent {
            assert!(m.outcome.tally.connections >= m.outcome.tally.all_replies(), "{what}: a connection per request");
        }
    }
}

fn files_in(dir: &std::path::Path) -> Arc<FileSet> {
    Arc::new(FileSet::create(dir, FILES, 3000, 1).unwrap())
}

#[test]
fn every_ferry_mode_against_the_blocking_engine() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_in(dir.path());
    let settings = ferry_core::Settings { root: dir.path().to_owned(), ..Default::default() };
    let server = ferry_blocking::spawn(settings, "127.0.0.1:0".parse().unwrap()).unwrap();
    ferry_modes(server.addr, &files, "blocking");
}

#[test]
fn every_ferry_mode_against_the_async_engine() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_in(dir.path());
    let settings = ferry_core::Settings { root: dir.path().to_owned(), ..Default::default() };
    let server = ferry_async::spawn(settings, "127.0.0.1:0".parse().unwrap()).unwrap();
    ferry_modes(server.addr, &files, "async");
}

#[test]
fn a_priming_pass_gets_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_in(dir.path());
    let settings = ferry_core::Settings { root: dir.path().to_owned(), ..Default::default() };
    let server = ferry_blocking::spawn(settings, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut p = plan(server.addr, &files, Protocol::Ferry, Mode::Persistent, 8, Verify::Data);
    (p.connections, p.each_once) = (1, true);
    let t = driver::run(&p, &mut NoWindow, &AtomicBool::new(false)).unwrap().tally;
    assert_eq!((t.replies, t.verified, t.failures), (FILES as u64, FILES as u64, 0));
}

#[test]
fn a_wrong_reply_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    files_in(dir.path());
    let settings = ferry_core::Settings { root: dir.path().to_owned(), ..Default::default() };
    let server = ferry_blocking::spawn(settings, "127.0.0.1:0".parse().unwrap()).unwrap();
    // The generator expects other content than the server holds.
    let other = tempfile::tempdir().unwrap();
    let wrong = Arc::new(FileSet::create(other.path(), FILES, 3000, 2).unwrap());
    let p = plan(server.addr, &wrong, Protocol::Ferry, Mode::Persistent, 1, Verify::Data);
    let t = driver::run(&p, &mut NoWindow, &AtomicBool::new(false)).unwrap().tally;
    assert!(t.failures > 0 && t.first_failures[0].contains("digest"), "{:?}", t.first_failures);
}

/// A tiny HTTP/1.1 server: a thread per connection, GETs of the files from memory, keep-alive
/// unless the request says `Connection: close`.
fn http_server(files: Arc<FileSet>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let files = Arc::clone(&files);
            std::thread::spawn(move || serve_http(stream, &files));
        }
    });
    addr
}

fn serve_http(stream: TcpStream, files: &FileSet) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return Some(());
        }
        let path = line.split(' ').nth(1)?.trim_start_matches('/').to_owned();
        let mut close = false;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            if h == "\r\n" {
                break;
            }
            close |= h.eq_ignore_ascii_case("connection: close\r\n");
        }
        let file = files.files.iter().find(|f| f.name == path)?;
        let content = file.content.as_deref()?;
        let connection = if close { "Connection: close\r\n" } else { "" };
        let mut reply =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{connection}\r\n", content.len()).into_bytes();
        reply.extend_from_slice(content);
        out.write_all(&reply).ok()?;
        if close {
            return Some(());
        }
    }
}

#[test]
fn http_persistent_pipelined_and_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_in(dir.path());
    let addr = http_server(Arc::clone(&files));
    let stop = AtomicBool::new(false);
    prime(addr, Protocol::Http, &files, &stop).unwrap();
    for (mode, depth, verify) in
        [(Mode::Persistent, 1, Verify::Data), (Mode::Persistent, 4, Verify::Content), (Mode::Fresh, 1, Verify::Data)]
    {
        let p = plan(addr, &files, Protocol::Http, mode, depth, verify);
        let t = driver::run(&p, &mut NoWindow, &stop).unwrap().tally;
        check(&format!("http {mode:?} depth {depth}"), &t, verify);
    }
}

#[test]
fn load_stays_on_loopback() {
    let files = Arc::new(FileSet { files: vec![super::files::Expected::new("a".into(), b"x")] });
    let p = plan("192.0.2.1:80".parse().unwrap(), &files, Protocol::Ferry, Mode::Persistent, 1, Verify::Data);
    assert!(driver::run(&p, &mut NoWindow, &AtomicBool::new(false)).is_err());
}
