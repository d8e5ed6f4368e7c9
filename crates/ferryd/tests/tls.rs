//! ferryd over TLS (PROTOCOL.md § 18), as a process: `gen-cert`, `--tls-listen`, a certificate
//! read again on SIGHUP while connections stay open, and start-up errors that name the file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_testkit::client::wire;
use ferry_testkit::TestServer;
use ferry_tls::rustls::{ClientConnection, StreamOwned};

fn ferryd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferryd"))
}

fn gen_cert(dir: &Path) -> std::process::Output {
    let out = dir.to_str().unwrap();
    Command::new(ferryd())
        .args(["gen-cert", "--host", "localhost", "--host", "127.0.0.1", "--out", out])
        .output()
        .unwrap()
}

/// A TLS connection trusting `ca`, past its handshake; and the leaf certificate the server showed.
fn connect(addr: SocketAddr, ca: &Path) -> (StreamOwned<ClientConnection, TcpStream>, Vec<u8>) {
    let config = ferry_tls::client_config(&ferry_tls::Trust::CaFile(ca.to_owned())).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = ClientConnection::new(config, ferry_tls::server_name("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("[TLS-5] the certificate gen-cert made is trusted through its CA");
    }
    ferry_tls::check_alpn(tls.conn.alpn_protocol()).unwrap();
    let leaf = tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    (tls, leaf)
}

/// Reads the next whole reply item, and says what it is.
fn next_item(tls: &mut StreamOwned<ClientConnection, TcpStream>, decoder: &mut ferry_proto::ReplyDecoder) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        tls.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
        match decoder.decode(&got).expect("a valid reply") {
            ferry_proto::Decoded::NeedMore => {}
            ferry_proto::Decoded::Item { item, .. } => return format!("{item:?}"),
        }
    }
}

/// Sends a hello and reads the server's hello; the decoder reads what follows.
fn hello(tls: &mut StreamOwned<ClientConnection, TcpStream>) -> ferry_proto::ReplyDecoder {
    tls.write_all(&wire::hello_v1()).unwrap();
    let mut decoder = ferry_proto::ReplyDecoder::new();
    assert!(next_item(tls, &mut decoder).starts_with("Hello"), "a server hello, inside TLS");
    decoder
}

/// `gen-cert` writes a CA, a certificate and a private key only its owner can read, and never
/// replaces them; ferryd serves TLS with them beside its plain port.
#[test]
fn gen_cert_makes_what_tls_listen_serves() {
    let dir = tempfile::tempdir().unwrap();
    let made = gen_cert(dir.path());
    assert!(made.status.success(), "{made:?}");
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(stdout.contains("--tls-cert") && stdout.contains("--ca"), "it says how to use them: {stdout}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "key.pem is readable by others: {mode:o}");
    let again = gen_cert(dir.path());
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let server = TestServer::process(
        ferryd(),
        &["--tls-listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let tls_addr = server.tls_addr.expect("`tls listening on ADDR`");
    server.write_file("a.txt", b"over TLS");
    let (mut tls, _) = connect(tls_addr, &dir.path().join("ca.pem"));
    hello(&mut tls);
    // The plain port serves as before.
    let mut plain = server.client();
    assert_eq!(plain.get_ok("a.txt", 0).1, b"over TLS");
}

/// SIGHUP reads the certificate again: the next handshake shows the new one, a connection opened
/// before goes on; a broken file on SIGHUP keeps the old pair serving.
#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let first = tempfile::tempdir().unwrap();
    assert!(gen_cert(first.path()).status.success());
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(first.path().join("cert.pem"), &cert).unwrap();
    std::fs::copy(first.path().join("key.pem"), &key).unwrap();
    let server = TestServer::process(
        ferryd(),
        &["--tls-listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let tls_addr = server.tls_addr.unwrap();
    let (mut open, old_leaf) = connect(tls_addr, &first.path().join("ca.pem"));
    let mut decoder = hello(&mut open);

    let second = tempfile::tempdir().unwrap();
    assert!(gen_cert(second.path()).status.success());
    std::fs::copy(second.path().join("cert.pem"), &cert).unwrap();
    std::fs::copy(second.path().join("key.pem"), &key).unwrap();
    let pid = rustix::process::Pid::from_raw(server.pid().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let reloaded = ferry_testkit::wait_until(Duration::from_secs(10), || server.log().contains("reloaded"));
    assert!(reloaded, "no reload in the log:\n{}", server.log());
    let (_, new_leaf) = connect(tls_addr, &second.path().join("ca.pem"));
    assert_ne!(new_leaf, old_leaf, "the next handshake shows the new certificate");

    // The connection opened before the reload is still served.
    open.write_all(&[0x07]).unwrap(); // HELP
    assert!(next_item(&mut open, &mut decoder).starts_with("Help"));

    std::fs::write(&key, "not a key").unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let refused = ferry_testkit::wait_until(Duration::from_secs(10), || server.log().contains("not reloaded"));
    assert!(refused, "{}", server.log());
    let (_, still) = connect(tls_addr, &second.path().join("ca.pem"));
    assert_eq!(still, new_leaf, "a broken key on SIGHUP keeps the pair in use");
}

/// A certificate that cannot be used stops ferryd before it listens, naming the file.
#[test]
fn an_unusable_certificate_is_a_start_up_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let out = Command::new(ferryd())
        .args(["--listen", "127.0.0.1:0", "--root"])
        .arg(dir.path().join("root"))
        .args(["--tls-listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&missing)
        .arg("--tls-key")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope.pem") && stderr.starts_with("error: "), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing listened");
    let lonely = Command::new(ferryd()).args(["--tls-listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(lonely.status.code(), Some(2), "--tls-listen without a certificate is a usage error");
}
