//! Handshakes between this crate's configurations, in memory: the certificate checks, ALPN and
//! reloading, without sockets (the engines' and the client's suites run them over loopback).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConnection, ServerConnection};

use super::generate::{Ca, Issued, Validity};
use super::*;

/// Files of one test's PKI.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Self::named("Ferry test CA")
    }

    fn named(ca: &str) -> Self {
        let pki = Self { dir: tempfile::tempdir().unwrap(), ca: Ca::new(ca).unwrap() };
        std::fs::write(pki.dir.path().join("ca.pem"), pki.ca.cert_pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn write_server(&self, issued: &Issued) {
        std::fs::write(self.path("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(self.path("key.pem"), &issued.key_pem).unwrap();
    }

    fn server(&self, names: &[&str], validity: Validity) -> Arc<ServerCert> {
        self.write_server(&self.ca.issue(names, validity).unwrap());
        ServerCert::load(&self.path("cert.pem"), &self.path("key.pem")).unwrap()
    }

    fn trust(&self) -> Trust {
        Trust::CaFile(self.path("ca.pem"))
    }
}

#[derive(Debug)]
enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Runs the handshake to its end, moving bytes between the two in memory.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), Failed> {
    for _ in 0..10 {
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().map_err(Failed::Server)?;
        wire.clear();
        server.write_tls(&mut wire).unwrap();
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().map_err(Failed::Client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake did not end");
}

fn connect(
    cert: &Arc<ServerCert>,
    trust: &Trust,
    name: &str,
    alpn: Option<Vec<Vec<u8>>>,
) -> (ClientConnection, ServerConnection, Result<(), Failed>) {
    let mut config = (*client_config(trust).unwrap()).clone();
    if let Some(alpn) = alpn {
        config.alpn_protocols = alpn;
    }
    let mut client = ClientConnection::new(Arc::new(config), server_name(name).unwrap()).unwrap();
    let mut server = ServerConnection::new(server_config(cert.clone()).unwrap()).unwrap();
    let outcome = handshake(&mut client, &mut server);
    (client, server, outcome)
}

#[test]
fn a_server_certificate_from_the_named_ca_is_trusted_and_ferry_1_chosen() {
    let pki = Pki::new();
    let cert = pki.server(&["localhost", "127.0.0.1"], Validity::Days(1));
    for name in ["localhost", "127.0.0.1"] {
        let (client, server, outcome) = connect(&cert, &pki.trust(), name, None);
        outcome.unwrap();
        assert_eq!(client.alpn_protocol(), Some(ALPN), "[TLS-2]");
        assert_eq!(server.alpn_protocol(), Some(ALPN), "[TLS-4]");
        assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3), "[TLS-1]");
        check_alpn(client.alpn_protocol()).unwrap();
    }
}

/// `[TLS-5]`: a certificate from another CA, for another name, or out of date is refused by the
/// client before anything else is sent.
#[test]
fn the_client_refuses_an_unknown_ca_a_wrong_name_and_an_expired_certificate() {
    let pki = Pki::new();
    let good = pki.server(&["localhost"], Validity::Days(1));
    let other = Pki::named("Another CA");
    let unknown = connect(&good, &other.trust(), "localhost", None).2;
    assert!(
        matches!(unknown, Err(Failed::Client(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)))),
        "{unknown:?}"
    );
    // A CA of the same name, but another key: the signature gives it away.
    let impostor = connect(&good, &Pki::new().trust(), "localhost", None).2;
    assert!(
        matches!(impostor, Err(Failed::Client(rustls::Error::InvalidCertificate(CertificateError::BadSignature)))),
        "{impostor:?}"
    );
    let wrong_name = connect(&good, &pki.trust(), "example.org", None).2;
    assert!(
        matches!(
            wrong_name,
            Err(Failed::Client(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })))
        ),
        "{wrong_name:?}"
    );
    let expired = pki.server(&["localhost"], Validity::Expired);
    let outcome = connect(&expired, &pki.trust(), "localhost", None).2;
    assert!(
        matches!(
            outcome,
            Err(Failed::Client(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })))
        ),
        "{outcome:?}"
    );
    // Trusting the bundled Web PKI roots does not trust a private CA either.
    let webpki = connect(&good, &Trust::WebPki, "localhost", None).2;
    assert!(matches!(webpki, Err(Failed::Client(rustls::Error::InvalidCertificate(_)))), "{webpki:?}");
    // Only the explicit choice skips the check.
    connect(&expired, &Trust::InsecureSkipVerify, "example.org", None).2.unwrap();
}

/// `[TLS-4]`: a client offering only other protocols is refused by the server; one offering
/// none is served, and is then the one to refuse a server that chose none (`[TLS-3]`).
#[test]
fn alpn_other_than_ferry_1_is_refused() {
    let pki = Pki::new();
    let cert = pki.server(&["localhost"], Validity::Days(1));
    let outcome = connect(&cert, &pki.trust(), "localhost", Some(vec![b"h2".to_vec(), b"http/1.1".to_vec()])).2;
    assert!(matches!(outcome, Err(Failed::Server(rustls::Error::NoApplicationProtocol))), "{outcome:?}");
    let (client, _, outcome) = connect(&cert, &pki.trust(), "localhost", Some(Vec::new()));
    outcome.unwrap();
    assert!(check_alpn(client.alpn_protocol()).is_err());
    assert!(check_alpn(Some(b"h2")).is_err());
}

/// A reload takes new files for the next handshakes; a failed one keeps what was in use.
#[test]
fn a_reload_takes_the_new_certificate_and_a_broken_one_keeps_the_old() {
    let pki = Pki::new();
    let cert = pki.server(&["localhost"], Validity::Days(1));
    let first = cert.leaf();
    let renewed = pki.ca.issue(&["localhost"], Validity::Days(30)).unwrap();
    pki.write_server(&renewed);
    cert.reload().unwrap();
    assert_ne!(cert.leaf(), first);
    let (client, _, outcome) = connect(&cert, &pki.trust(), "localhost", None);
    outcome.unwrap();
    assert_eq!(client.peer_certificates().unwrap()[0].as_ref(), cert.leaf().as_slice());

    let in_use = cert.leaf();
    std::fs::write(pki.path("key.pem"), "not a key").unwrap();
    assert!(matches!(cert.reload(), Err(TlsError::NoKey { .. })));
    let other = pki.ca.issue(&["localhost"], Validity::Days(30)).unwrap();
    std::fs::write(pki.path("cert.pem"), &other.cert_pem).unwrap();
    std::fs::write(pki.path("key.pem"), &renewed.key_pem).unwrap();
    assert!(matches!(cert.reload(), Err(TlsError::Rustls(_))), "a key that is not the certificate's");
    assert_eq!(cert.leaf(), in_use);
    connect(&cert, &pki.trust(), "localhost", None).2.unwrap();
}

#[test]
fn server_names_are_dns_names_or_addresses() {
    assert!(matches!(server_name("localhost").unwrap(), ServerName::DnsName(_)));
    assert!(matches!(server_name("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(server_name("[::1]").unwrap(), ServerName::IpAddress(_)));
    assert!(server_name("not a name").is_err());
}

#[test]
fn files_without_pem_items_are_named_in_the_error() {
    let pki = Pki::new();
    std::fs::write(pki.path("empty.pem"), "").unwrap();
    assert!(matches!(
        ServerCert::load(&pki.path("empty.pem"), &pki.path("empty.pem")),
        Err(TlsError::NoCertificate { .. })
    ));
    assert!(matches!(client_config(&Trust::CaFile(pki.path("empty.pem"))), Err(TlsError::NoCertificate { .. })));
    let missing = ServerCert::load(&pki.path("missing.pem"), &pki.path("missing.pem")).unwrap_err();
    assert!(missing.to_string().contains("missing.pem"), "{missing}");
}
