//! `ferry-tls`: what PROTOCOL.md § 18 asks of a TLS connection, as rustls configurations that
//! every Ferry implementation in this workspace shares: the engines, the client and the
//! conformance suite.
//!
//! - TLS 1.3 only (`[TLS-1]`), ALPN `ferry/1` offered and required (`[TLS-2]`, `[TLS-3]`,
//!   `[TLS-4]`), ring as the crypto provider.
//! - A server's certificate and key are read from PEM files and can be read again while it runs
//!   ([`ServerCert::reload`], on SIGHUP in `ferryd`): handshakes after the reload use the new
//!   ones, connections already open keep theirs.
//! - A client trusts the bundled Web PKI roots, or only the CA file its user names; skipping the
//!   check is a separate, loudly named choice ([`Trust::InsecureSkipVerify`]).

mod client;
#[cfg(feature = "generate")]
pub mod generate;
mod pem;
mod server;

pub use client::{check_alpn, client_config, client_config_for, server_name, Trust};
pub use rustls;
pub use server::{server_config, ServerCert};

/// The ALPN protocol id of Ferry version 1 (`[TLS-2]`).
pub const ALPN: &[u8] = b"ferry/1";

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: std::path::PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: std::path::PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: std::path::PathBuf, reason: String },
    #[error("the certificate and key do not go together, or are unusable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no valid CA certificate in {path}")]
    NoCa { path: std::path::PathBuf },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// The crypto provider every configuration here uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3, and nothing older (`[TLS-1]`).
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[cfg(test)]
mod tests;
