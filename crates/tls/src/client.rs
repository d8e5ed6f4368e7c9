//! The client's side: whom it trusts, and what it checks before it says anything.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{pem, provider, TlsError, ALPN, VERSIONS};

/// Whom a client trusts to vouch for a server (`[TLS-5]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The Web PKI's roots (Mozilla's, bundled).
    WebPki,
    /// Only the CA certificates in this PEM file: a private CA, or a self-signed server
    /// certificate itself.
    CaFile(PathBuf),
    /// No check of the server's certificate at all. Encryption without authentication: anyone
    /// on the path can pretend to be the server. Only by the user's explicit choice.
    InsecureSkipVerify,
}

/// The configuration of a client connection: TLS 1.3 (`[TLS-1]`), ALPN `ferry/1` offered
/// (`[TLS-2]`), the server's certificate checked against `trust`.
///
/// # Errors
/// The CA file cannot be read or holds no usable certificate.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_for(trust, VERSIONS, &[ALPN])
}

/// A client configuration with other TLS versions and ALPN ids than Ferry's: for checkers that
/// try what a server must refuse (`[TLS-1]`, `[TLS-4]`). The versions must be compiled into
/// rustls (its `tls12` feature for TLS 1.2).
///
/// # Errors
/// As [`client_config`]; or a version is not available.
pub fn client_config_for(
    trust: &Trust,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let mut config = match trust {
        Trust::WebPki => {
            let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(pem::certificates(path)?);
            if added == 0 {
                return Err(TlsError::NoCa { path: path.clone() });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name to check the server's certificate against (and to send as SNI): a DNS name or an
/// IP address.
///
/// # Errors
/// `host` is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// `[TLS-3]`: after the handshake, the server must have chosen `ferry/1`; a client aborts
/// before its hello otherwise.
///
/// # Errors
/// The server chose another protocol, or none.
pub fn check_alpn(chosen: Option<&[u8]>) -> io::Result<()> {
    match chosen {
        Some(ALPN) => Ok(()),
        Some(other) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server chose ALPN protocol {:?}, not ferry/1", String::from_utf8_lossy(other)),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the server chose no ALPN protocol: it does not speak Ferry over TLS (ferry/1)",
        )),
    }
}

/// Accepts any certificate; still checks that the handshake is signed by the key it presents.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
