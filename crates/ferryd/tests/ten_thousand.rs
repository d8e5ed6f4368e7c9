//! The async engine holds 10,000 concurrent connections — 1,000 of them in the middle of a
//! download — and still answers a new client promptly (issue 6; `[CAP-2]`: held connections never
//! cost a newcomer its turn while below the cap).
//!
//! The server runs as a real `ferryd` process: 10,000 sockets on each side would not fit one
//! process's descriptor limit on the CI machines (hard limit 20,000).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proto::{ClientHello, Name, Request};

const CONNECTIONS: usize = 10_000;
const DOWNLOADING: usize = 1_000;

/// The server process, killed and reaped when the test ends however it ends.
struct Ferryd(Child);

impl Drop for Ferryd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: lim.maximum, maximum: lim.maximum });
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A client socket with a small receive buffer, so that a download the test does not read
/// stays in flight instead of landing whole in kernel buffers.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect_timeout(&addr.into(), Duration::from_secs(10)).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[test]
fn async_engine_holds_ten_thousand_connections_and_answers_a_new_client() {
    let limit = raise_fd_limit();
    assert!(limit >= (CONNECTIONS + 500) as u64, "this test needs {CONNECTIONS}+ descriptors; the limit is {limit}");
    let root = tempfile::tempdir().unwrap();
    // A sparse 256 MiB file: large enough that no download can finish into socket buffers.
    std::fs::File::create(root.path().join("big.bin")).unwrap().set_len(256 << 20).unwrap();
    let cap = (CONNECTIONS + 100).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(["--engine", "async", "--listen", "127.0.0.1:0", "--log-level", "warn", "--idle-timeout", "0"])
        .args(["--max-clients", &cap, "--max-per-ip", &cap, "--root"])
        .arg(root.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _server = Ferryd(child);
    let addr: SocketAddr = line.trim().strip_prefix("listening on ").unwrap().parse().unwrap();

    let mut hello = Vec::new();
    ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut hello);
    let mut held: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut s = connect(addr);
        s.write_all(&hello).unwrap();
        held.push(s);
    }
    // Every one is served (its hello answered), none merely queued or refused.
    for s in &mut held {
        let mut reply = [0u8; 36];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply[0], ferry_proto::message::tag::HELLO, "a connection was refused");
    }
    let mut get = Vec::new();
    Request::Get { name: Name::parse("big.bin").unwrap(), offset: 0 }.encode(&mut get);
    for s in &mut held[..DOWNLOADING] {
        s.write_all(&get).unwrap();
    }
    // Each download has started: its reply head and some data arrive.
    for s in &mut held[..DOWNLOADING] {
        let mut first = [0u8; 4096];
        s.read_exact(&mut first).unwrap();
        assert_eq!(first[0], ferry_proto::message::tag::GET);
    }

    // A newcomer is answered promptly while all of that is held open.
    let started = Instant::now();
    let mut newcomer = connect(addr);
    newcomer.write_all(&hello).unwrap();
    let mut list = Vec::new();
    Request::List.encode(&mut list);
    newcomer.write_all(&list).unwrap();
    let mut reply = [0u8; 36 + 5];
    newcomer.read_exact(&mut reply).unwrap();
    let waited = started.elapsed();
    assert_eq!(reply[36], ferry_proto::message::tag::LIST);
    assert!(waited < Duration::from_secs(10), "the newcomer waited {waited:?}");

    // The downloads are still progressing.
    for s in &mut held[..10] {
        let mut more = [0u8; 4096];
        s.read_exact(&mut more).unwrap();
    }
    println!("newcomer answered in {waited:?} with {CONNECTIONS} connections held, {DOWNLOADING} downloading");
}
