//! The server's side: its certificate, reloadable, and its configuration.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::{pem, provider, TlsError, ALPN, VERSIONS};

/// A server's certificate chain and private key, read from their PEM files and read again by
/// [`ServerCert::reload`]. Every handshake takes the current pair.
#[derive(Debug)]
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Reads the chain (leaf first) from `cert` and the key from `key`.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable PEM item, or the key does not match the leaf.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let current = RwLock::new(Arc::new(read(cert, key)?));
        Ok(Arc::new(Self { cert_path: cert.to_owned(), key_path: key.to_owned(), current }))
    }

    /// Reads the files again. On failure the pair in use stays, so a half-written renewal never
    /// takes a server's TLS down.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(read(&self.cert_path, &self.key_path)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The leaf certificate in use, DER.
    pub fn leaf(&self) -> Vec<u8> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.cert.first().map(|c| c.as_ref().to_vec()).unwrap_or_default()
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = pem::certificates(cert)?;
    let key = pem::private_key(key)?;
    let pair = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(pair)
}

/// The configuration of a TLS listener: TLS 1.3 (`[TLS-1]`), ALPN `ferry/1` chosen when offered
/// and a client offering only other protocols refused with `no_application_protocol`
/// (`[TLS-4]`), the certificate from `cert`, no client certificates.
///
/// # Errors
/// The provider refuses the version set (cannot happen with ring).
pub fn server_config(cert: Arc<ServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}
