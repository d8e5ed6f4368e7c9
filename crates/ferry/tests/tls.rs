//! `ferry` over TLS (PROTOCOL.md § 18), as a user runs it: the binary against a real `ferryd`
//! behind a TLS terminator ([`ferry_client::testing::tls`]), with certificates made at run time.
//! The terminator stands in for ferryd's own TLS listener; the client cannot tell them apart.
#![cfg(unix)]

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ferry_cmd, names_in, pattern, run, run_with_input, Ferryd, Run, World};
use ferry_client::testing::tls::{config, config_with_alpn, CertFiles, Pki, Terminator};
use ferry_tls::generate::Validity;

const SETTLE: Duration = Duration::from_secs(10);

/// A ferryd, a CA, and a TLS terminator in front of the ferryd with a certificate for
/// 127.0.0.1 and localhost.
struct Tls {
    world: World,
    pki: Pki,
    terminator: Terminator,
}

impl Tls {
    fn new() -> Self {
        Self::with_cert(|pki| pki.issue("server", &["127.0.0.1", "localhost"], Validity::Days(30)))
    }

    fn with_cert(cert: impl FnOnce(&Pki) -> CertFiles) -> Self {
        let world = World::new(&[]);
        let pki = Pki::new(&world.dir.path().join("pki"), "ca");
        let terminator = Terminator::start(world.server.addr, &cert(&pki));
        Self { world, pki, terminator }
    }

    fn ca(&self) -> String {
        self.pki.ca_file().to_string_lossy().into_owned()
    }

    /// `ferry --server TERMINATOR ARGS`.
    fn run(&self, args: &[&str]) -> Run {
        self.run_to(&self.terminator.addr.to_string(), args)
    }

    fn run_to(&self, server: &str, args: &[&str]) -> Run {
        let w = &self.world;
        run(ferry_cmd(&w.work(), server, &w.dir.path().join("home")).args(args))
    }

    fn accepted(&self) -> u64 {
        self.terminator.stats.accepted.load(Ordering::SeqCst)
    }
}

#[test]
fn put_list_get_over_tls_with_a_private_ca() {
    let t = Tls::new();
    let work = t.world.work();
    std::fs::write(work.join("a"), pattern(300_000, 1)).unwrap();
    let ca = t.ca();
    let put = t.run(&["--ca", &ca, "put", "a"]).ok();
    assert!(put.stderr.contains("a -> a (293 KiB, created"), "{put:?}");
    assert_eq!(std::fs::read(t.world.root().join("a")).unwrap(), pattern(300_000, 1));
    let list = t.run(&["--ca", &ca, "list", "--json"]).ok();
    assert!(list.stdout.contains("\"a\""), "{list:?}");
    std::fs::remove_file(work.join("a")).unwrap();
    let get = t.run(&["--ca", &ca, "get", "a"]).ok();
    assert!(get.stderr.contains("MD5 verified"), "{get:?}");
    assert_eq!(std::fs::read(work.join("a")).unwrap(), pattern(300_000, 1));
    assert_eq!(names_in(&work), ["a"]);

    // FERRY_CA does what --ca does; --sni checks another name the certificate has.
    let w = &t.world;
    let mut cmd = ferry_cmd(&w.work(), &t.terminator.addr.to_string(), &w.dir.path().join("home"));
    run(cmd.env("FERRY_CA", &ca).args(["--sni", "localhost", "stat", "a"])).ok();
    assert!(t.terminator.stats.handshakes.load(Ordering::SeqCst) >= 4);
}

/// The three certificate problems the issue names: exit status 3, a message that says what is
/// wrong and what to do, tried once.
#[test]
fn a_wrong_ca_an_expired_certificate_and_a_name_mismatch_exit_3_with_a_clear_message() {
    let wrong_ca = Tls::new();
    let other = Pki::new(&wrong_ca.world.dir.path().join("other"), "other");
    let out = wrong_ca.run(&["--ca", &other.ca_file().to_string_lossy(), "list"]).code(3);
    assert!(
        out.stderr.contains("is not signed by a CA this client trusts") && out.stderr.contains("--ca FILE"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("gave up after"), "not retried: {out:?}");
    assert_eq!(wrong_ca.accepted(), 1, "not retried");
    // With no --ca at all, the Web PKI's roots do not know a private CA either.
    let out = wrong_ca.run(&["--tls", "list"]).code(3);
    assert!(out.stderr.contains("--ca FILE"), "{out:?}");

    let expired = Tls::with_cert(|pki| pki.issue("old", &["127.0.0.1"], Validity::Expired));
    let out = expired.run(&["--ca", &expired.ca(), "list"]).code(3);
    assert!(out.stderr.contains("certificate for 127.0.0.1 has expired"), "{out:?}");
    assert_eq!(expired.accepted(), 1);

    let elsewhere = Tls::with_cert(|pki| pki.issue("elsewhere", &["files.example"], Validity::Days(30)));
    let out = elsewhere.run(&["--ca", &elsewhere.ca(), "list"]).code(3);
    assert!(
        out.stderr.contains("not valid for the name 127.0.0.1")
            && out.stderr.contains("(it is for files.example)")
            && out.stderr.contains("--sni NAME"),
        "{out:?}"
    );
    // The remedy the message gives works.
    elsewhere.run(&["--ca", &elsewhere.ca(), "--sni", "files.example", "list"]).ok();
    assert!(elsewhere.terminator.stats.app_bytes.load(Ordering::SeqCst) > 0);
}

#[test]
fn an_unusable_ca_file_or_name_is_a_usage_error() {
    let t = Tls::new();
    let not_pem = t.world.work().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for args in [&["--ca", "missing.pem", "list"][..], &["--ca", not_pem.to_str().unwrap(), "list"][..]] {
        let out = t.run(args).code(2);
        assert!(out.stderr.contains("cannot set up TLS") && out.stderr.contains("check --ca"), "{out:?}");
    }
    let out = t.run(&["--sni", "not a name", "list"]).code(2);
    assert!(out.stderr.contains("check --sni"), "{out:?}");
    assert_eq!(t.accepted(), 0, "nothing was tried");
}

#[test]
fn insecure_skips_the_check_and_says_so_every_time() {
    let t = Tls::with_cert(|pki| pki.issue("old", &["nowhere.example"], Validity::Expired));
    for quiet in [&[][..], &["-q"][..]] {
        let out = t.run(&[&["--insecure", "list"][..], quiet].concat()).ok();
        assert!(out.stderr.contains("warning: --insecure: the server's certificate is not checked"), "{out:?}");
    }
    // It overrides a CA from the environment, and still warns.
    let w = &t.world;
    let mut cmd = ferry_cmd(&w.work(), &t.terminator.addr.to_string(), &w.dir.path().join("home"));
    let out = run(cmd.env("FERRY_CA", t.ca()).args(["--insecure", "list"])).ok();
    assert!(out.stderr.contains("warning: --insecure"), "{out:?}");
}

/// `[TLS-3]`: the server chose no ALPN protocol: the client leaves before its hello.
#[test]
fn a_server_that_does_not_choose_ferry_1_gets_no_hello() {
    let world = World::new(&[]);
    let pki = Pki::new(&world.dir.path().join("pki"), "ca");
    let cert = pki.issue("server", &["127.0.0.1"], Validity::Days(30));
    let terminator =
        Terminator::start_with(world.server.addr, "127.0.0.1:0".parse().unwrap(), config_with_alpn(&cert, &[]));
    let out = run(ferry_cmd(&world.work(), &terminator.addr.to_string(), &world.dir.path().join("home")).args([
        "--ca",
        &pki.ca_file().to_string_lossy(),
        "list",
    ]))
    .code(3);
    assert!(out.stderr.contains("chose no ALPN protocol"), "{out:?}");
    assert!(terminator.wait_finished(1, SETTLE));
    assert_eq!(terminator.stats.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(terminator.stats.app_bytes.load(Ordering::SeqCst), 0, "no Ferry byte");
}

#[test]
fn tls_to_the_plain_port_and_plain_to_the_tls_port_fail_clearly() {
    let t = Tls::new();
    let out = t.run_to(&t.world.server.addr.to_string(), &["--ca", &t.ca(), "list"]).code(3);
    assert!(out.stderr.contains("plain port"), "{out:?}");
    let out = t.run(&["list"]).code(3);
    assert!(out.stderr.contains("is a TLS port") && out.stderr.contains("add --tls"), "{out:?}");
}

/// An address of this machine that is not loopback, if it has one (the source address of the
/// route to TEST-NET-1; a UDP "connection" sends nothing).
fn non_loopback_local_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `[TLS-6]`: the token stays home unless TLS protects it or the user allows it.
#[test]
fn a_token_in_clear_text_to_another_machine_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // TEST-NET-1: were the client to try, it would wait out its timeout and retries.
    let out =
        run(ferry_cmd(dir.path(), "192.0.2.1:9", &home).args(["--token", "s3cret", "--retries", "0", "list"])).code(2);
    assert!(
        out.stderr.contains("refusing to send the token in clear text to 192.0.2.1:9")
            && out.stderr.contains("--tls")
            && out.stderr.contains("--allow-cleartext-token"),
        "{out:?}"
    );

    let Some(ip) = non_loopback_local_ip() else {
        eprintln!("no non-loopback address on this machine: the rest of the test is skipped");
        return;
    };
    let watch = TcpListener::bind((ip, 0)).unwrap();
    watch.set_nonblocking(true).unwrap();
    run(ferry_cmd(dir.path(), &watch.local_addr().unwrap().to_string(), &home).args(["--token", "s3cret", "list"]))
        .code(2);
    assert_eq!(watch.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "nothing connected");

    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "admin s3cret\n").unwrap();
    let server = Ferryd::start_on(
        &SocketAddr::new(ip, 0).to_string(),
        &dir.path().join("root"),
        &dir.path().join("logs"),
        &["--tokens", tokens.to_str().unwrap(), "--anonymous", "read"],
    );
    let there = server.addr.to_string();
    run(ferry_cmd(dir.path(), &there, &home).args(["--token", "s3cret", "list"])).code(2);
    run(ferry_cmd(dir.path(), &there, &home).args(["--token", "s3cret", "--allow-cleartext-token", "status"])).ok();
    run(ferry_cmd(dir.path(), &there, &home).arg("list")).ok();

    // Over TLS the token goes without asking.
    let pki = Pki::new(&dir.path().join("pki"), "ca");
    let cert = pki.issue("there", &[&ip.to_string()], Validity::Days(30));
    let terminator = Terminator::start_with(server.addr, SocketAddr::new(ip, 0), config(&cert));
    let ca = pki.ca_file();
    run(ferry_cmd(dir.path(), &terminator.addr.to_string(), &home).args([
        "--token",
        "s3cret",
        "--ca",
        ca.to_str().unwrap(),
        "status",
    ]))
    .ok();
}

#[test]
fn the_shell_speaks_tls_and_keeps_its_tls_options_for_the_whole_session() {
    let t = Tls::new();
    std::fs::write(t.world.root().join("f"), "x").unwrap();
    let w = &t.world;
    let mut cmd = ferry_cmd(&w.work(), &t.terminator.addr.to_string(), &w.dir.path().join("home"));
    let out = run_with_input(cmd.args(["--ca", &t.ca(), "shell"]), "ls --json\nls --insecure\nget f\n");
    assert_eq!(out.code, 0, "the status of the last command: {out:#?}");
    assert!(out.stdout.contains("\"f\""), "{out:#?}");
    assert!(out.stderr.contains("--insecure is set when ferry starts"), "{out:#?}");
    assert_eq!(std::fs::read(w.work().join("f")).unwrap(), b"x");
    assert!(t.terminator.wait_finished(1, SETTLE));
    assert_eq!(t.accepted(), 1, "one connection for the whole script");
}

/// `ferry` against ferryd's own TLS listener (`--tls-listen`), on each engine, with the
/// certificates `ferryd gen-cert` makes: a 3 MiB upload stored whole, its download verified, and
/// a plain `ferry` (no `--ca`, no `--tls`) refused at the TLS port.
#[test]
fn ferry_over_ferryd_s_own_tls_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = std::process::Command::new(common::ferryd_bin())
        .args(["gen-cert", "--host", "localhost", "--host", "127.0.0.1", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let (cert, key, ca) = (certs.join("cert.pem"), certs.join("key.pem"), certs.join("ca.pem"));
    for engine in ["blocking", "async"] {
        let work = dir.path().join(format!("work-{engine}"));
        std::fs::create_dir_all(&work).unwrap();
        let flags = [
            "--engine",
            engine,
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        let server =
            ferry_testkit::TestServer::process_in(common::ferryd_bin(), ferry_testkit::server::new_dir(), &flags);
        let tls_addr = server.tls_addr.expect("a TLS listener").to_string();
        let home = dir.path().join("home");
        let ferry =
            |args: &[&str]| run(ferry_cmd(&work, &tls_addr, &home).args(["--ca", ca.to_str().unwrap()]).args(args));
        let data = pattern(3 << 20, 7);
        std::fs::write(work.join("big.bin"), &data).unwrap();
        ferry(&["put", "big.bin"]).ok();
        assert_eq!(server.read_file("big.bin").unwrap(), data, "{engine}: stored whole");
        std::fs::remove_file(work.join("big.bin")).unwrap();
        let get = ferry(&["get", "big.bin"]).ok();
        assert!(get.stderr.contains("MD5 verified"), "{engine}: {get:?}");
        assert_eq!(std::fs::read(work.join("big.bin")).unwrap(), data, "{engine}: whole");
        let plain = run(ferry_cmd(&work, &tls_addr, &home).args(["list"]));
        assert_ne!(plain.code, 0, "{engine}: a plain hello at the TLS port: {plain:?}");
    }
}
