//! PROTOCOL.md § 18: the TLS listener each engine opens beside its plain one. These cases make
//! their own connections (raw sockets, rustls clients with chosen versions and ALPN ids), so
//! they run alike in the plain and the TLS suites.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::{Decoded, ErrorCode, ReplyDecoder, ServerItem};
use ferry_tls::rustls::{self, AlertDescription, ClientConnection};

use super::{assert_deadline, SHORT};
use crate::client::wire;
use crate::{StartFn, TestServer};

const FERRY_1: &[u8] = b"ferry/1";

fn tls_addr(server: &TestServer) -> SocketAddr {
    server.tls_addr.expect("the engine's suite start opens a TLS listener (Handle::listeners)")
}

fn plain_addr(server: &TestServer) -> SocketAddr {
    server.plain_addr.expect("the engine's suite start says where its plain listener is")
}

fn socket(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect(addr).expect("connecting");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    sock
}

/// A TLS connection to `addr` with `config`, its handshake run to the end or to its failure.
fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<rustls::StreamOwned<ClientConnection, TcpStream>, rustls::Error> {
    let name = ferry_tls::server_name("localhost").unwrap();
    let mut tls = rustls::StreamOwned::new(ClientConnection::new(config, name).unwrap(), socket(addr));
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            return Err(e
                .into_inner()
                .and_then(|inner| inner.downcast::<rustls::Error>().ok())
                .map_or(rustls::Error::General("the connection failed during the handshake".into()), |boxed| *boxed));
        }
    }
    Ok(tls)
}

/// Everything the server sends on `sock` until it closes (at most 5 s).
fn read_to_close(mut sock: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => return out,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
}

/// [TLS-1] [TLS-4] [TLS-9]: the TLS listener completes a TLS 1.3 handshake that offers
/// `ferry/1`, choosing it; the whole Ferry session runs inside; a BYE ends with the server's
/// `close_notify`, not a bare close.
pub fn tls_listener_serves_ferry_1_over_tls_1_3(engine: StartFn) {
    let server = TestServer::start(engine);
    server.write_file("inside.txt", b"encrypted on the wire");
    let config = crate::tls::client_config_with(&[&rustls::version::TLS13], &[FERRY_1]);
    let mut tls = handshake(tls_addr(&server), config).expect("[TLS-1] a TLS 1.3 handshake");
    assert_eq!(tls.conn.alpn_protocol(), Some(FERRY_1), "[TLS-4] ferry/1 chosen");
    assert_eq!(tls.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3), "[TLS-1]");
    let mut requests = wire::hello_v1();
    requests.extend(wire::get(b"inside.txt", 0));
    requests.push(0x08); // BYE
    tls.write_all(&requests).unwrap();
    tls.flush().unwrap();
    let mut replies = Vec::new();
    let end = tls.read_to_end(&mut replies);
    assert!(end.is_ok(), "[TLS-9] the server closed without close_notify: {end:?}");
    let mut decoder = ReplyDecoder::new();
    let (mut at, mut seen) = (0, Vec::new());
    while at < replies.len() {
        let Decoded::Item { item, consumed } = decoder.decode(&replies[at..]).expect("valid replies") else { break };
        at += consumed;
        seen.push(match item {
            ServerItem::Hello(_) => "hello",
            ServerItem::GetHead { .. } => "get",
            ServerItem::Data(d) => {
                assert_eq!(d, b"encrypted on the wire");
                continue;
            }
            ServerItem::DataEnd => continue,
            ServerItem::ByeOk => "bye",
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(seen, ["hello", "get", "bye"]);
}

/// [TLS-4] [TLS-1]: a client that offers only other ALPN ids is refused with
/// `no_application_protocol`, and one that offers only TLS 1.2 is refused; neither gets a Ferry
/// byte, and the listener serves the next client.
pub fn tls_listener_refuses_other_protocols_and_old_versions(engine: StartFn) {
    let server = TestServer::start(engine);
    let other = crate::tls::client_config_with(&[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    match handshake(tls_addr(&server), other) {
        Err(rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol)) => {}
        other => panic!("[TLS-4] a client of another protocol: {:?}", other.map(|_| "a completed handshake")),
    }
    let old = crate::tls::client_config_with(&[&rustls::version::TLS12], &[FERRY_1]);
    match handshake(tls_addr(&server), old) {
        Err(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure)) => {}
        other => panic!("[TLS-1] a TLS 1.2 client: {:?}", other.map(|_| "a completed handshake")),
    }
    let good = crate::tls::client_config_with(&[&rustls::version::TLS13], &[FERRY_1]);
    handshake(tls_addr(&server), good).expect("the next client is served");
}

/// [TLS-8] [TIME-1]: a plain Ferry hello on the TLS listener gets no Ferry reply — at most a TLS
/// alert — and the close; a client that opens the TLS port and sends nothing is closed at the
/// handshake deadline.
pub fn tls_listener_answers_a_plain_hello_with_at_most_an_alert(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.handshake_timeout = SHORT);
    let sock = socket(tls_addr(&server));
    (&sock).write_all(&wire::hello_v1()).unwrap();
    let answer = read_to_close(&sock);
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "[TLS-8] a plain hello on the TLS port was answered with {:02x?}, not a TLS alert",
        &answer[..answer.len().min(16)]
    );
    let start = Instant::now();
    let silent = socket(tls_addr(&server));
    read_to_close(&silent);
    assert_deadline("[TIME-1] a silent client on the TLS port", start.elapsed(), SHORT);
}

/// [HELLO-3]: a TLS ClientHello on the plain listener is a malformed hello: `MALFORMED`, in
/// plain, and the close.
pub fn plain_listener_answers_a_tls_hello_with_malformed(engine: StartFn) {
    let server = TestServer::start(engine);
    let config = crate::tls::client_config_with(&[&rustls::version::TLS13], &[FERRY_1]);
    let mut client = ClientConnection::new(config, ferry_tls::server_name("localhost").unwrap()).unwrap();
    let mut client_hello = Vec::new();
    client.write_tls(&mut client_hello).unwrap();
    assert_eq!(client_hello[0], 0x16, "a TLS handshake record");
    let sock = socket(plain_addr(&server));
    (&sock).write_all(&client_hello).unwrap();
    let answer = read_to_close(&sock);
    match ReplyDecoder::new().decode(&answer) {
        Ok(Decoded::Item { item: ServerItem::Error(e), .. }) => assert_eq!(e.code, ErrorCode::MALFORMED, "[HELLO-3]"),
        other => panic!("[HELLO-3] a TLS ClientHello on the plain port: {other:?}"),
    }
}
