//! The client library over TLS (PROTOCOL.md § 18): a real TLS terminator
//! ([`ferry_client::testing::tls`]) in front of the reference server run in this process
//! (ferry-blocking, plain, on 127.0.0.1), certificates made at run time.
#![cfg(unix)]

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferry_blocking::Running;
use ferry_client::testing::tls::{config_with_alpn, CertFiles, Pki, Terminator};
use ferry_client::{exit, CertProblem, Client, Config, Error, Jitter, NoProgress, RetryPolicy, TlsConfig, Trust};
use ferry_core::Settings;
use ferry_proto::{Name, PutMode, Role};
use ferry_tls::generate::Validity;

/// How long a test waits for the terminator to see a connection end.
const SETTLE: Duration = Duration::from_secs(10);

struct World {
    dir: tempfile::TempDir,
    server: Running,
    pki: Pki,
}

impl World {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::listening_on("127.0.0.1:0".parse().unwrap(), configure)
    }

    fn listening_on(listen: SocketAddr, configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings { root: dir.path().join("root"), ..Settings::default() };
        configure(&mut settings);
        let server = ferry_blocking::spawn(settings, listen).unwrap();
        let pki = Pki::new(&dir.path().join("pki"), "ca");
        Self { dir, server, pki }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A terminator with a good certificate for 127.0.0.1 and localhost.
    fn terminator(&self) -> Terminator {
        Terminator::start(self.server.addr, &self.cert(Validity::Days(30)))
    }

    fn cert(&self, validity: Validity) -> CertFiles {
        self.pki.issue("server", &["127.0.0.1", "localhost"], validity)
    }

    fn tls(&self) -> TlsConfig {
        TlsConfig { trust: Trust::CaFile(self.pki.ca_file()), server_name: None }
    }
}

fn client(server: SocketAddr, tls: Option<TlsConfig>, token: Option<&str>) -> Client {
    Client::new(Config {
        server: server.to_string(),
        token: token.map(str::to_owned),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy { retries: 2, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() },
        tls,
        ..Config::default()
    })
    .with_sleep(Arc::new(|_| std::thread::sleep(Duration::from_millis(10))))
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

#[test]
fn put_list_get_stat_delete_over_tls() {
    let w = World::new();
    let t = w.terminator();
    let mut c = Client::new(Config {
        digest_cache: Some(w.path("digests.redb")),
        ..client(t.addr, Some(w.tls()), None).config().clone()
    });
    let content = data(3 << 20);
    std::fs::write(w.path("big"), &content).unwrap();
    let up = c.upload(&w.path("big"), &name("big"), PutMode::CreateOnly, &mut NoProgress).unwrap();
    assert!(!up.digest_from_cache);
    assert_eq!(c.is_tls(), Some(true));
    assert_eq!(std::fs::read(w.root().join("big")).unwrap(), content);

    let list = c.list(&mut NoProgress).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].size, content.len() as u64);

    let got = c.download(&name("big"), &w.path("copy"), false, &mut NoProgress).unwrap();
    assert_eq!(got.md5, up.md5);
    assert_eq!(std::fs::read(w.path("copy")).unwrap(), content);

    // The digest cache works the same: the second upload takes the MD5 from it.
    let again = c.upload(&w.path("big"), &name("big"), PutMode::Overwrite, &mut NoProgress).unwrap();
    assert!(again.digest_from_cache && again.replaced);

    let mut out = Vec::new();
    c.download_to_writer(&name("big"), &mut out, &mut NoProgress).unwrap();
    assert_eq!(out, content);
    assert_eq!(c.stat(&name("big"), &mut NoProgress).unwrap().size, content.len() as u64);
    c.delete(&name("big"), &mut NoProgress).unwrap();
    assert!(c.list(&mut NoProgress).unwrap().is_empty());
    c.close();

    // One connection carried it all, everything the client sent went through TLS, and the
    // client ended it with close_notify (`[TLS-9]`).
    assert!(t.wait_finished(1, SETTLE));
    assert_eq!(t.stats.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(t.stats.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(t.stats.close_notifies.load(Ordering::SeqCst), 1);
    assert!(t.stats.app_bytes.load(Ordering::SeqCst) > 2 * content.len() as u64);
}

#[test]
fn an_early_exists_over_tls_stops_the_upload() {
    let w = World::new();
    let size = 32 << 20;
    std::fs::write(w.path("big"), vec![7u8; size]).unwrap();
    std::fs::write(w.root().join("big"), b"already here").unwrap();
    let t = w.terminator();
    let mut c = client(t.addr, Some(w.tls()), None);
    let mut sent = StopAfter { after: u64::MAX, seen: 0, from: None };
    let e = c.upload(&w.path("big"), &name("big"), PutMode::CreateOnly, &mut sent).unwrap_err();
    assert_eq!(e.code(), Some(ferry_proto::ErrorCode::EXISTS), "{e}");
    assert!(sent.seen < size as u64 / 2, "stopped after {} of {size} bytes", sent.seen);
    assert_eq!(c.list(&mut NoProgress).unwrap().len(), 1, "a new connection");
}

/// The server ends an idle session (a `TIMEOUT` reply, then close): the client notices before
/// its next command, on the TLS connection as on a plain one, and connects again.
#[test]
fn a_session_the_server_ended_while_idle_is_opened_again() {
    let w = World::with(|s| s.idle_timeout = Some(Duration::from_millis(200)));
    let t = w.terminator();
    let mut c = client(t.addr, Some(w.tls()), None);
    c.list(&mut NoProgress).unwrap();
    assert!(t.wait_finished(1, SETTLE), "the server closed the idle session");
    let mut retries = Retries(0);
    c.list(&mut retries).unwrap();
    assert_eq!(retries.0, 0, "the closed session was noticed before LIST was sent on it");
    assert_eq!(t.stats.accepted.load(Ordering::SeqCst), 2);
}

struct Retries(u32);

impl ferry_client::Progress for Retries {
    fn retrying(&mut self, _: &Error, _: Duration, _: u32, _: u32) {
        self.0 += 1;
    }
}

/// Stops a download once `after` bytes have arrived, as Ctrl-C would.
struct StopAfter {
    after: u64,
    seen: u64,
    from: Option<u64>,
}

impl ferry_client::Progress for StopAfter {
    fn transfer_started(&mut self, _name: &Name, _total: u64, from: u64) {
        self.from = Some(from);
    }

    fn transferred(&mut self, bytes: u64) {
        self.seen += bytes;
    }

    fn cancelled(&mut self) -> bool {
        self.seen >= self.after
    }
}

#[test]
fn a_download_stopped_over_tls_resumes_from_its_part_file() {
    let w = World::new();
    let content = data(4 << 20);
    std::fs::write(w.root().join("f"), &content).unwrap();
    let t = w.terminator();
    let mut c = client(t.addr, Some(w.tls()), None);
    let mut stop = StopAfter { after: 1 << 20, seen: 0, from: None };
    let e = c.download(&name("f"), &w.path("f"), false, &mut stop).unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e:?}");
    c.close();
    let kept = std::fs::metadata(w.path("f.part")).unwrap().len();
    assert!(kept > 0 && kept < content.len() as u64, "{kept}");

    let mut c = client(t.addr, Some(w.tls()), None);
    let mut watch = StopAfter { after: u64::MAX, seen: 0, from: None };
    let got = c.download(&name("f"), &w.path("f"), false, &mut watch).unwrap();
    assert_eq!(got.resumed_from, Some(kept));
    assert_eq!(watch.from, Some(kept));
    assert_eq!(watch.seen, content.len() as u64 - kept);
    assert_eq!(std::fs::read(w.path("f")).unwrap(), content);
}

/// Each certificate problem is its own error, said with its cause and its remedy, exit status
/// 3, and tried once: retrying would meet the same certificate.
#[test]
fn certificate_problems_are_named_and_not_retried() {
    let w = World::new();
    let other_ca = Pki::new(&w.path("other"), "other");
    let cases: Vec<(&str, CertFiles, CertProblem, &str)> = vec![
        (
            "unknown CA",
            other_ca.issue("s", &["127.0.0.1"], Validity::Days(30)),
            CertProblem::UnknownIssuer,
            "--ca FILE",
        ),
        ("expired", w.pki.issue("old", &["127.0.0.1"], Validity::Expired), CertProblem::Expired, "expired"),
        (
            "name mismatch",
            w.pki.issue("elsewhere", &["files.example"], Validity::Days(30)),
            CertProblem::NameMismatch { presented: vec!["files.example".into()] },
            "--sni NAME",
        ),
    ];
    for (what, cert, problem, remedy) in cases {
        let t = Terminator::start(w.server.addr, &cert);
        let mut c = client(t.addr, Some(w.tls()), None);
        let e = c.list(&mut NoProgress).unwrap_err();
        match &e {
            Error::Certificate { problem: p, .. } => assert_eq!(p, &problem, "{what}: {e:?}"),
            other => panic!("{what}: {other:?}"),
        }
        let message = e.to_string();
        assert!(message.contains(remedy), "{what}: {message}");
        assert!(message.contains("127.0.0.1"), "{what} names the name checked: {message}");
        assert_eq!(e.exit_code(), exit::NETWORK, "{what}");
        assert!(!e.is_transient(), "{what}");
        drop(c);
        assert!(t.wait_finished(1, SETTLE));
        assert_eq!(t.stats.accepted.load(Ordering::SeqCst), 1, "{what}: not retried");
        assert_eq!(t.stats.app_bytes.load(Ordering::SeqCst), 0, "{what}: no Ferry byte was sent");
    }
}

#[test]
fn the_name_checked_can_be_chosen() {
    let w = World::new();
    let cert = w.pki.issue("named", &["files.example"], Validity::Days(30));
    let t = Terminator::start(w.server.addr, &cert);
    let tls = TlsConfig { server_name: Some("files.example".into()), ..w.tls() };
    let mut c = client(t.addr, Some(tls), None);
    assert!(c.list(&mut NoProgress).unwrap().is_empty());
}

#[test]
fn skipping_the_check_connects_to_any_certificate() {
    let w = World::new();
    let stranger = Pki::new(&w.path("stranger"), "stranger");
    let t = Terminator::start(w.server.addr, &stranger.issue("s", &["nowhere.example"], Validity::Expired));
    let tls = TlsConfig { trust: Trust::InsecureSkipVerify, server_name: None };
    let mut c = client(t.addr, Some(tls), None);
    assert!(c.list(&mut NoProgress).unwrap().is_empty());
    assert_eq!(c.is_tls(), Some(true));
}

/// `[TLS-3]`: a server that chooses no ALPN protocol completes the handshake, and is left
/// before the hello; one that offers only another protocol fails the handshake itself
/// (`[TLS-4]`). Either way, not one Ferry byte reaches it, and the client does not try again.
#[test]
fn a_server_that_does_not_choose_ferry_1_is_refused_before_the_hello() {
    let w = World::new();
    let cert = w.cert(Validity::Days(30));
    for (alpn, handshakes, said) in [(&[][..], 1, "chose no ALPN protocol"), (&[&b"h2"[..]][..], 0, "ALPN ferry/1")] {
        let t = Terminator::start_with(w.server.addr, "127.0.0.1:0".parse().unwrap(), config_with_alpn(&cert, alpn));
        let mut c = client(t.addr, Some(w.tls()), None);
        let e = c.list(&mut NoProgress).unwrap_err();
        assert!(matches!(e, Error::Tls { .. }), "{alpn:?}: {e:?}");
        assert!(e.to_string().contains(said), "{alpn:?}: {e}");
        assert_eq!(e.exit_code(), exit::NETWORK);
        drop(c);
        assert!(t.wait_finished(1, SETTLE));
        assert_eq!(t.stats.accepted.load(Ordering::SeqCst), 1, "{alpn:?}: not retried");
        assert_eq!(t.stats.handshakes.load(Ordering::SeqCst), handshakes, "{alpn:?}");
        assert_eq!(t.stats.app_bytes.load(Ordering::SeqCst), 0, "{alpn:?}: no hello was sent");
    }
}

#[test]
fn tls_to_a_plain_port_says_so() {
    let w = World::new();
    let mut c = client(w.server.addr, Some(w.tls()), None);
    let e = c.list(&mut NoProgress).unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("plain port"), "{e}");
    assert!(!e.is_transient());
}

/// An address of this machine that is not loopback, if it has one: the source address of the
/// route to TEST-NET-1 (a UDP "connection" sends nothing).
fn non_loopback_local_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `[TLS-6]`: no token in clear text to another machine unless allowed; the refusal comes
/// before any connection is attempted.
#[test]
fn a_token_is_not_sent_in_clear_text_to_another_machine() {
    // TEST-NET-1: nothing answers there, so a connection attempt would time out, not fail.
    let mut c = client("192.0.2.1:9".parse().unwrap(), None, Some("secret"));
    let e = c.list(&mut NoProgress).unwrap_err();
    assert!(matches!(e, Error::CleartextToken { .. }), "{e:?}");
    assert!(e.to_string().contains("--allow-cleartext-token") && e.to_string().contains("--tls"), "{e}");
    assert_eq!(e.exit_code(), exit::USAGE);

    let Some(ip) = non_loopback_local_ip() else {
        eprintln!("no non-loopback address on this machine: the rest of the test is skipped");
        return;
    };
    // A listener on that address: no connection reaches it while the client refuses.
    let watch = TcpListener::bind((ip, 0)).unwrap();
    watch.set_nonblocking(true).unwrap();
    let mut c = client(watch.local_addr().unwrap(), None, Some("secret"));
    assert!(matches!(c.list(&mut NoProgress), Err(Error::CleartextToken { .. })));
    assert_eq!(watch.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "nothing connected");

    // Allowed, it goes through to a real server there; and no token needs no permission.
    let w = World::listening_on(SocketAddr::new(ip, 0), |s| {
        s.tokens = [("secret".to_owned(), Role::Admin)].into();
    });
    let mut c = client(w.server.addr, None, Some("secret"));
    c.config_mut().allow_cleartext_token = true;
    c.connect(&mut NoProgress).unwrap();
    assert_eq!(c.server_hello().unwrap().role, Role::Admin);
    assert_eq!(c.is_tls(), Some(false));
    let mut anonymous = client(w.server.addr, None, None);
    anonymous.list(&mut NoProgress).unwrap();

    // Over TLS the token goes, allowed or not.
    let cert = w.pki.issue("there", &[&ip.to_string()], Validity::Days(30));
    let t = Terminator::start_with(w.server.addr, SocketAddr::new(ip, 0), ferry_client::testing::tls::config(&cert));
    let mut c = client(t.addr, Some(w.tls()), Some("secret"));
    c.connect(&mut NoProgress).unwrap();
    assert_eq!(c.server_hello().unwrap().role, Role::Admin);
}

/// `[TIME-6]` over TLS: a server that sends its hello's record a byte at a time, each byte
/// within the deadline, still gets no more than the deadline for the whole read — as on a plain
/// connection, where the bytes would be handed over as they came.
#[test]
fn a_record_trickled_byte_by_byte_does_not_stretch_the_deadline() {
    use std::io::Write;
    let w = World::new();
    let config = ferry_client::testing::tls::config(&w.cert(Validity::Days(30)));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(config).unwrap();
        while tls.is_handshaking() {
            if tls.complete_io(&mut sock).is_err() {
                return;
            }
        }
        let mut hello = Vec::new();
        ferry_client::testing::hello(Role::Read).encode(&mut hello);
        tls.writer().write_all(&hello).unwrap();
        let mut wire = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut wire).unwrap();
        }
        for byte in wire {
            if sock.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut c = Client::new(Config {
        server: addr.to_string(),
        timeout: Duration::from_secs(1),
        retry: RetryPolicy::none(),
        tls: Some(w.tls()),
        ..Config::default()
    });
    let start = std::time::Instant::now();
    let e = c.connect(&mut NoProgress).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    // The record is dozens of bytes: trickled whole, it would take seconds more.
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(c);
    server.join().unwrap();
}
