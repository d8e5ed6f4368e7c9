//! The relay that runs every case over TLS (`conformance run --over-tls`, src/tls_relay.rs),
//! on real loopback sockets against real TLS servers with certificates made at run time: bytes
//! cross it both ways, half-closes and resets reach the other side, it holds little when one
//! side stops reading, it says which address the server sees, and it refuses to start against
//! a server it cannot trust. Last, the suite's cases over TLS against the reference server.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ferry_conformance::case::{Profile, Target, TlsTarget, Verdict};
use ferry_conformance::tls_relay::{RelayError, TlsRelay, Upstream};
use ferry_conformance::{cases, over_tls, runner};
use ferry_tls::generate::{Ca, Validity};
use ferry_tls::rustls::{self, ServerConnection, StreamOwned};
use socket2::SockRef;

const WAIT: Duration = Duration::from_secs(5);

/// A CA and a `localhost` certificate it signs, as files (the CA's too), and the server
/// configuration made from them.
struct Pki {
    dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = Ca::new("relay test CA").expect("a CA");
        let issued = ca.issue(&["localhost"], Validity::Days(1)).expect("a certificate");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let server = ferry_tls::server_config(ferry_tls::ServerCert::load(&cert, &key).unwrap()).unwrap();
        Self { dir, server }
    }

    fn trust(&self) -> ferry_tls::Trust {
        ferry_tls::Trust::CaFile(self.dir.path().join("ca.pem"))
    }

    fn upstream(&self, addr: SocketAddr) -> Upstream {
        Upstream {
            addr,
            config: ferry_tls::client_config(&self.trust()).unwrap(),
            name: ferry_tls::server_name("localhost").unwrap(),
            timeout: WAIT,
        }
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// A TLS server on loopback that serves `connections` connections, one after the other, each
/// with `serve` (after its handshake); the relay's own first connection, which proves the
/// server reachable, is the first of them. Small socket buffers, so that what it does not read
/// stays with the relay and the client.
fn tls_server<F>(config: Arc<rustls::ServerConfig>, connections: usize, serve: F) -> SocketAddr
where
    F: Fn(Tls) + Send + 'static,
{
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.listen(16).unwrap();
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((sock, _)) = listener.accept() else { return };
            sock.set_read_timeout(Some(WAIT)).unwrap();
            sock.set_write_timeout(Some(WAIT)).unwrap();
            let mut tls = StreamOwned::new(ServerConnection::new(config.clone()).unwrap(), sock);
            let mut handshake = Ok(0);
            while tls.conn.is_handshaking() && handshake.is_ok() {
                handshake = tls.conn.complete_io(&mut tls.sock).map(|(r, w)| r + w);
            }
            if handshake.is_ok() {
                serve(tls);
            }
        }
    });
    addr
}

/// The relay's proof connection: the server lets it go.
fn first_is_the_proof(tls: &mut Tls) -> bool {
    let mut rest = Vec::new();
    matches!(tls.read_to_end(&mut rest), Ok(0))
}

fn connect(relay: &TlsRelay) -> TcpStream {
    let sock = TcpStream::connect(relay.addr()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.set_write_timeout(Some(WAIT)).unwrap();
    sock
}

#[test]
fn bytes_cross_both_ways_and_each_half_close_reaches_the_other_side() {
    let pki = Pki::new();
    let (tx, rx) = mpsc::channel();
    let served = std::sync::atomic::AtomicUsize::new(0);
    let addr = tls_server(pki.server.clone(), 2, move |mut tls| {
        if served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            first_is_the_proof(&mut tls);
            return;
        }
        // Everything until the client's close_notify (a bare FIN would be an error here).
        let mut got = Vec::new();
        let end = tls.read_to_end(&mut got);
        tx.send((end.map_err(|e| e.kind()), got.len(), tls.sock.peer_addr().unwrap())).unwrap();
        tls.write_all(format!("got {} bytes", got.len()).as_bytes()).unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
    });
    let relay = TlsRelay::start(pki.upstream(addr)).expect("the relay starts");
    let mut case = connect(&relay);
    let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    case.write_all(&data).unwrap();
    let seen = relay.directory().seen_as(case.local_addr().unwrap(), Instant::now() + WAIT);
    case.shutdown(Shutdown::Write).unwrap();
    let (end, len, peer) = rx.recv_timeout(WAIT).expect("the server saw the end of the stream");
    assert_eq!(end, Ok(len), "the case's FIN reached the server as a close_notify");
    assert_eq!(len, data.len());
    assert_eq!(seen, Some(peer), "the directory gives the address the server sees");
    let mut answer = String::new();
    case.read_to_string(&mut answer).expect("the server's close_notify reached the case as a FIN");
    assert_eq!(answer, "got 300000 bytes");
}

#[test]
fn a_reset_on_either_side_resets_the_other() {
    let pki = Pki::new();
    let (tx, rx) = mpsc::channel();
    let served = std::sync::atomic::AtomicUsize::new(0);
    let addr = tls_server(pki.server.clone(), 3, move |mut tls| {
        let mut byte = [0u8; 1];
        match served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => {
                first_is_the_proof(&mut tls);
            }
            // The server resets after the first byte.
            1 => {
                tls.read_exact(&mut byte).unwrap();
                SockRef::from(&tls.sock).set_linger(Some(Duration::ZERO)).unwrap();
            }
            // The client resets: what the server's read says.
            _ => {
                let end = tls.read(&mut byte).map_err(|e| e.kind());
                tx.send(end).unwrap();
            }
        }
    });
    let relay = TlsRelay::start(pki.upstream(addr)).expect("the relay starts");
    let mut case = connect(&relay);
    case.write_all(b"x").unwrap();
    let mut buf = [0u8; 16];
    let got = case.read(&mut buf).map_err(|e| e.kind());
    assert_eq!(got, Err(ErrorKind::ConnectionReset), "the server's reset reached the case");

    let case = connect(&relay);
    // Once the relay has reached the server: then the reset.
    relay.directory().seen_as(case.local_addr().unwrap(), Instant::now() + WAIT).expect("relayed");
    SockRef::from(&case).set_linger(Some(Duration::ZERO)).unwrap();
    drop(case);
    let end = rx.recv_timeout(WAIT).expect("the server's read ended");
    assert_eq!(end, Err(ErrorKind::ConnectionReset), "the case's reset reached the server");
}

/// Writes into `sock` until a write makes no progress for half a second; the bytes taken.
fn fill(mut sock: &TcpStream) -> usize {
    sock.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    let chunk = [7u8; 16 * 1024];
    let (mut taken, mut progress) = (0, Instant::now());
    while progress.elapsed() < Duration::from_millis(500) {
        match sock.write(&chunk) {
            Ok(n) => {
                taken += n;
                progress = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("writing: {e}"),
        }
        assert!(taken < 64 << 20, "the writes never stalled");
    }
    taken
}

#[test]
fn the_relay_holds_little_when_a_side_stops_reading() {
    // Each side's kernel buffers, rustls's and the relay's chunks: well under a megabyte each
    // way. Unbounded buffering would take the 64 MiB `fill` offers.
    const BOUND: usize = 2 << 20;
    let pki = Pki::new();
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let served = std::sync::atomic::AtomicUsize::new(0);
    let addr = tls_server(pki.server.clone(), 2, move |mut tls| {
        if served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            first_is_the_proof(&mut tls);
            return;
        }
        // Reads nothing until told, then everything; then writes until the client stops reading.
        go_rx.lock().unwrap().recv().unwrap();
        let mut got = vec![0u8; 0];
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading: {e}"),
            }
            if got.ends_with(b"END") {
                break;
            }
        }
        tx.send(got.len()).unwrap();
        tls.sock.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
        let chunk = [9u8; 16 * 1024];
        let (mut sent, mut progress) = (0usize, Instant::now());
        while progress.elapsed() < Duration::from_millis(500) {
            match tls.conn.writer().write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => panic!("buffering: {e}"),
            }
            while tls.conn.wants_write() {
                match tls.conn.write_tls(&mut tls.sock) {
                    Ok(_) => progress = Instant::now(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                    Err(e) => panic!("writing: {e}"),
                }
                if progress.elapsed() >= Duration::from_millis(500) {
                    break;
                }
            }
            assert!(sent < 64 << 20, "the server's writes never stalled");
        }
        tx.send(sent).unwrap();
    });
    let relay = TlsRelay::start(pki.upstream(addr)).expect("the relay starts");
    // The case's own buffers small, as `resources.*` makes them.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.connect(&relay.addr().into()).unwrap();
    let mut case: TcpStream = socket.into();
    let taken = fill(&case);
    assert!(taken < BOUND, "{taken} bytes taken while the server read nothing");
    go_tx.send(()).unwrap();
    case.set_write_timeout(Some(WAIT)).unwrap();
    case.write_all(b"END").unwrap();
    let got = rx.recv_timeout(WAIT).expect("the server read everything");
    assert_eq!(got, taken + 3, "nothing lost");
    // The other way: the case reads nothing until the server's writes stall.
    let sent = rx.recv_timeout(Duration::from_secs(30)).expect("the server's writes stalled");
    assert!(sent < BOUND, "the server wrote {sent} bytes to a case that read nothing");
}

#[test]
fn a_server_that_cannot_be_trusted_or_chooses_no_alpn_stops_the_start() {
    let pki = Pki::new();
    let addr = tls_server(pki.server.clone(), 1, |mut tls| {
        first_is_the_proof(&mut tls);
    });
    let other = Pki::new();
    match TlsRelay::start(other.upstream(addr)) {
        Err(RelayError::Upstream { addr: a, source }) => {
            assert_eq!(a, addr);
            assert!(source.to_string().contains("certificate"), "{source}");
        }
        other => panic!("a certificate from another CA: {other:?}"),
    }
    let mut no_alpn = (*pki.server).clone();
    no_alpn.alpn_protocols.clear();
    let addr = tls_server(Arc::new(no_alpn), 1, |mut tls| {
        first_is_the_proof(&mut tls);
    });
    match TlsRelay::start(pki.upstream(addr)) {
        Err(RelayError::Upstream { source, .. }) => assert!(source.to_string().contains("ferry/1"), "{source}"),
        other => panic!("no ALPN chosen: {other:?}"),
    }
}

#[test]
fn the_cases_pass_over_tls_against_the_reference_server() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = ferry_core::Settings {
        root: dir.path().to_owned(),
        max_clients: 12,
        handshake_timeout: Duration::from_secs(2),
        head_timeout: Duration::from_secs(3),
        progress_timeout: Duration::from_secs(3),
        tokens: [("adm1n".to_owned(), ferry_proto::Role::Admin)].into_iter().collect(),
        anonymous: Some(ferry_proto::Role::Read),
        ..ferry_core::Settings::default()
    };
    let tls_listen = Some(("127.0.0.1:0".parse().unwrap(), pki.server.clone()));
    let running = ferry_blocking::spawn_with(settings, "127.0.0.1:0".parse().unwrap(), tls_listen).expect("a server");
    let mut tls = TlsTarget {
        addr: running.tls_addr.expect("a TLS listener"),
        trust: pki.trust(),
        sni: "localhost".into(),
        relayed: None,
    };
    let (relay, relayed) = over_tls::start(&tls, Some(running.addr), WAIT).expect("the relay starts");
    tls.relayed = Some(relayed);
    let target = Target {
        addr: relay.addr(),
        token: Some("adm1n".into()),
        io_timeout: Duration::from_secs(4),
        case_timeout: Duration::from_secs(20),
        profile: Profile::V1,
        seed: 5,
        model_cases: 8,
        verbose: false,
        run_prefix: "cftls-".into(),
        destructive: false,
        root: None,
        large: false,
        tls: Some(tls),
    };
    // The cases that see most of the connection: its hello, STATUS's view of it, the server's
    // closes and resets after errors, the capacity, the deadlines, the TLS listener itself.
    let selected: Vec<_> = cases::all()
        .into_iter()
        .filter(|c| {
            ["semantics.", "robustness.malformed", "limits.", "early.", "tls."].iter().any(|p| c.id.starts_with(p))
                && c.id != "limits.deadline.stalled-reader"
        })
        .collect();
    let hello = runner::probe(&target).expect("a handshake through the relay");
    let results = runner::run(selected, &target, hello, 2, false);
    let bad: Vec<_> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail | Verdict::Timeout | Verdict::HarnessError))
        .map(|r| (&r.id, &r.outcome))
        .collect();
    assert!(bad.is_empty(), "over TLS: {bad:#?}");
    for id in ["semantics.status.records", "limits.capacity.busy", "limits.deadline.head", "tls.wrong-port"] {
        let r = results.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("{id} ran"));
        assert_eq!(r.verdict, Verdict::Pass, "{id}: {:?}", r.outcome);
    }
}

#[test]
fn the_binary_checks_a_tls_only_server_given_only_its_tls_address() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = ferry_core::Settings {
        root: dir.path().to_owned(),
        anonymous: Some(ferry_proto::Role::Write),
        ..ferry_core::Settings::default()
    };
    let tls_listen = Some(("127.0.0.1:0".parse().unwrap(), pki.server.clone()));
    let running = ferry_blocking::spawn_with(settings, "127.0.0.1:0".parse().unwrap(), tls_listen).expect("a server");
    let tls_addr = running.tls_addr.expect("a TLS listener").to_string();
    let ca = pki.dir.path().join("ca.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conformance"))
        .args(["run", "--tls", &tls_addr, "--sni", "localhost", "--case", "semantics.status", "--case", "tls."])
        .arg("--ca")
        .arg(&ca)
        .output()
        .expect("conformance runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.starts_with(&format!("over TLS 1.3 to {tls_addr} (certificate checked for localhost)")), "{report}");
    assert!(report.contains("PASS          semantics.status.records"), "{report}");
    assert!(report.contains("PASS          tls.wrong-port"), "{report}");
}
