//! The TLS listener (PROTOCOL.md § 18), checked when the run is given one (`--tls ADDR`): the
//! version floor and ALPN (`[TLS-1]`, `[TLS-4]`), a session inside TLS and its `close_notify`
//! (`[TLS-9]`), and both wrong ports (`[TLS-8]`, and a TLS ClientHello on the plain port, when
//! the run has one).
//! These cases make their own connections, with the client configurations they need.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{Decoded, ErrorCode, ReplyDecoder, Role, ServerItem};
use ferry_tls::rustls::{self, AlertDescription, ClientConnection, StreamOwned};

use super::support::{case, fail, hello_bytes, Verdict};
use crate::case::{Case, Failure, Needs, Outcome, TlsTarget};
use crate::context::Ctx;

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    let needs = Needs { role: Role::Read, ..Needs::default() };
    vec![
        case(
            "tls.session",
            "A TLS 1.3 handshake offering ferry/1 gets ferry/1, a Ferry session runs inside, and BYE ends with close_notify",
            &["TLS-1", "TLS-4", "TLS-9"],
            needs,
            session,
        ),
        case(
            "tls.refusals",
            "A client offering only other ALPN ids gets no_application_protocol; one offering only TLS 1.2 is refused",
            &["TLS-4", "TLS-1"],
            needs,
            refusals,
        ),
        case(
            "tls.wrong-port",
            "A plain Ferry hello on the TLS port gets at most a TLS alert and the close; a TLS ClientHello on the plain port gets MALFORMED",
            &["TLS-8", "HELLO-3"],
            needs,
            wrong_port,
        ),
    ]
}

fn target(ctx: &Ctx) -> Result<&TlsTarget, Box<Outcome>> {
    ctx.target.tls.as_ref().ok_or_else(|| Box::new(Outcome::Skipped("no TLS listener given (--tls ADDR)".into())))
}

fn socket(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Box<Failure>> {
    let sock =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail("TLS-1", format!("connecting to {addr}: {e}")))?;
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    Ok(sock)
}

/// A TLS connection with `config`, its handshake run to the end, or the TLS error that ended it.
fn handshake(
    ctx: &Ctx,
    tls: &TlsTarget,
    config: Arc<rustls::ClientConfig>,
) -> Result<Result<StreamOwned<ClientConnection, TcpStream>, rustls::Error>, Box<Failure>> {
    let name = ferry_tls::server_name(&tls.sni).map_err(|e| fail("TLS-1", e.to_string()))?;
    let conn = ClientConnection::new(config, name).map_err(|e| fail("TLS-1", e.to_string()))?;
    let mut stream = StreamOwned::new(conn, socket(tls.addr, ctx.target.io_timeout)?);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            let tls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
            return match tls_error {
                Some(t) => Ok(Err(t)),
                None => Err(fail("TLS-1", format!("the TLS handshake broke off: {e}"))),
            };
        }
    }
    Ok(Ok(stream))
}

fn config(
    tls: &TlsTarget,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, Box<Failure>> {
    ferry_tls::client_config_for(&tls.trust, versions, alpn).map_err(|e| fail("TLS-1", e.to_string()))
}

fn session(ctx: &Ctx) -> Verdict {
    let tls = match target(ctx) {
        Ok(t) => t,
        Err(o) => return Ok(*o),
    };
    let mut stream = match handshake(ctx, tls, config(tls, &[&rustls::version::TLS13], &[ferry_tls::ALPN])?)? {
        Ok(s) => s,
        Err(e) => return Err(fail("TLS-1", format!("a TLS 1.3 handshake offering ferry/1 failed: {e}"))),
    };
    if stream.conn.alpn_protocol() != Some(ferry_tls::ALPN) {
        return Err(fail("TLS-4", format!("the server chose ALPN {:?}, not ferry/1", stream.conn.alpn_protocol())));
    }
    let mut bytes = hello_bytes(ctx.target.token.as_deref());
    bytes.push(0x08); // BYE
    stream
        .write_all(&bytes)
        .and_then(|()| stream.flush())
        .map_err(|e| fail("TLS-1", format!("sending inside TLS: {e}")))?;
    let mut replies = Vec::new();
    let end = stream.read_to_end(&mut replies);
    let mut decoder = ReplyDecoder::new();
    let mut seen = Vec::new();
    let mut at = 0;
    while at < replies.len() {
        match decoder.decode(&replies[at..]) {
            Ok(Decoded::Item { item, consumed }) => {
                at += consumed;
                seen.push(match item {
                    ServerItem::Hello(_) => "hello",
                    ServerItem::ByeOk => "bye",
                    _ => "other",
                });
            }
            _ => break,
        }
    }
    if seen != ["hello", "bye"] {
        return Err(fail("TLS-1", format!("inside TLS, a hello and a BYE were answered with {seen:?}")));
    }
    match end {
        Ok(_) => Ok(Outcome::Pass),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            Ok(Outcome::Warn(Failure::new("TLS-9", "the server closed after BYE without a TLS close_notify")))
        }
        Err(e) => Err(fail("TLS-9", format!("after BYE: {e}"))),
    }
}

fn refusals(ctx: &Ctx) -> Verdict {
    let tls = match target(ctx) {
        Ok(t) => t,
        Err(o) => return Ok(*o),
    };
    match handshake(ctx, tls, config(tls, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"])?)? {
        Err(rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol)) => {}
        Err(other) => {
            return Err(fail(
                "TLS-4",
                format!("a client offering only h2 and http/1.1 got {other}, not no_application_protocol"),
            ))
        }
        Ok(_) => return Err(fail("TLS-4", "a client offering only h2 and http/1.1 completed its handshake")),
    }
    match handshake(ctx, tls, config(tls, &[&rustls::version::TLS12], &[ferry_tls::ALPN])?)? {
        Err(_) => Ok(Outcome::Pass),
        Ok(s) => Err(fail("TLS-1", format!("a TLS 1.2 handshake completed ({:?})", s.conn.protocol_version()))),
    }
}

fn read_to_close(mut sock: &TcpStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(format!("neither answered nor closed: {e}")),
        }
    }
}

fn wrong_port(ctx: &Ctx) -> Verdict {
    let tls = match target(ctx) {
        Ok(t) => t,
        Err(o) => return Ok(*o),
    };
    let sock = socket(tls.addr, ctx.target.io_timeout)?;
    (&sock).write_all(&hello_bytes(None)).map_err(|e| fail("TLS-8", e.to_string()))?;
    let answer = read_to_close(&sock).map_err(|e| fail("TLS-8", format!("a plain hello on the TLS port: {e}")))?;
    if answer.first().is_some_and(|&b| b != 0x15) {
        return Err(fail(
            "TLS-8",
            format!(
                "a plain hello on the TLS port was answered with {:02x?}, not at most a TLS alert",
                &answer[..answer.len().min(16)]
            ),
        ));
    }
    let mut client = ClientConnection::new(
        config(tls, &[&rustls::version::TLS13], &[ferry_tls::ALPN])?,
        ferry_tls::server_name(&tls.sni).map_err(|e| fail("TLS-8", e.to_string()))?,
    )
    .map_err(|e| fail("TLS-8", e.to_string()))?;
    let mut client_hello = Vec::new();
    client.write_tls(&mut client_hello).map_err(|e| fail("TLS-8", e.to_string()))?;
    // In a run over TLS the cases' address is the suite's relay, which would carry the
    // ClientHello inside TLS: the plain port is the one the run was given, and a server that
    // speaks only TLS has none to check.
    let Some(plain) = ctx.plain_addr() else { return Ok(Outcome::Pass) };
    let sock = socket(plain, ctx.target.io_timeout)?;
    (&sock).write_all(&client_hello).map_err(|e| fail("HELLO-3", e.to_string()))?;
    let answer =
        read_to_close(&sock).map_err(|e| fail("HELLO-3", format!("a TLS ClientHello on the plain port: {e}")))?;
    match ReplyDecoder::new().decode(&answer) {
        Ok(Decoded::Item { item: ServerItem::Error(e), .. }) if e.code == ErrorCode::MALFORMED => Ok(Outcome::Pass),
        other => Err(fail(
            "HELLO-3",
            format!("a TLS ClientHello on the plain port was answered with {other:?}, not MALFORMED"),
        )),
    }
}
