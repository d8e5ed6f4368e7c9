//! ferryd's TLS (PROTOCOL.md § 18): the certificate it serves, read again on SIGHUP, the warning
//! for tokens on a plain public port (`[TLS-7]`), and `ferryd gen-cert`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ferry_tls::generate::{Ca, Validity};
use ferry_tls::rustls::ServerConfig;
use ferry_tls::ServerCert;

use crate::cli::Cli;

/// The certificate and the TLS listener's configuration, if `--tls-listen` was given.
///
/// # Errors
/// A file cannot be read or holds no usable certificate or key.
pub fn load(cli: &Cli) -> Result<Option<(Arc<ServerCert>, Arc<ServerConfig>)>> {
    let (Some(_), Some(cert), Some(key)) = (cli.tls_listen, &cli.tls_cert, &cli.tls_key) else { return Ok(None) };
    let pair = ServerCert::load(cert, key)
        .with_context(|| format!("cannot serve TLS with --tls-cert {} --tls-key {}", cert.display(), key.display()))?;
    let config = ferry_tls::server_config(pair.clone())?;
    Ok(Some((pair, config)))
}

/// SIGHUP: reads the certificate and key again. New handshakes use them; open connections keep
/// theirs. A failure keeps the pair in use and says why.
pub fn reload(cert: Option<&ServerCert>) {
    match cert.map(ServerCert::reload) {
        None => tracing::info!("SIGHUP: no TLS certificate to reload"),
        Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
        Some(Err(e)) => {
            tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; still serving the previous one")
        }
    }
}

/// `[TLS-7]`: tokens accepted on a plain listener that other machines can reach travel in clear
/// text; says so loudly, on stderr as well as in the log.
pub fn warn_cleartext_tokens(listen: SocketAddr, tokens: bool) {
    if let Some(text) = cleartext_token_warning(listen, tokens) {
        tracing::warn!("{text}");
        eprintln!("ferryd: WARNING: {text}");
    }
}

fn cleartext_token_warning(listen: SocketAddr, tokens: bool) -> Option<String> {
    (tokens && !listen.ip().is_loopback()).then(|| {
        format!(
            "tokens are accepted on {listen} without TLS: anyone on the network path can read them \
             (and every file). Serve over TLS (--tls-listen, --tls-cert, --tls-key) and keep --listen \
             on 127.0.0.1, or use a trusted network or tunnel"
        )
    })
}

/// `ferryd gen-cert`: a private CA and a server certificate for `hosts`, written into `out`.
///
/// # Errors
/// A name is unusable, `out` cannot be created, or a file is already there.
pub fn gen_cert(hosts: &[String], out: &Path, days: u32) -> Result<()> {
    let ca = Ca::new("Ferry private CA (ferryd gen-cert)").context("making the CA")?;
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let issued = ca.issue(&names, Validity::Days(days)).with_context(|| format!("a certificate for {hosts:?}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files: [(PathBuf, &str, u32); 3] = [
        (out.join("ca.pem"), &ca.cert_pem(), 0o644),
        (out.join("cert.pem"), &issued.cert_pem, 0o644),
        (out.join("key.pem"), &issued.key_pem, 0o600),
    ];
    for (path, _, _) in &files {
        anyhow::ensure!(!path.exists(), "{} exists already: choose another --out, or remove it", path.display());
    }
    for (path, text, mode) in &files {
        write_new(path, text, *mode).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {0}/ca.pem, {0}/cert.pem and {0}/key.pem for {1}, valid {days} days",
        out.display(),
        hosts.join(", ")
    );
    println!("serve:   ferryd --tls-listen 0.0.0.0:9443 --tls-cert {0}/cert.pem --tls-key {0}/key.pem", out.display());
    println!("connect: ferry --server {}:9443 --ca {}/ca.pem list", hosts[0], out.display());
    Ok(())
}

/// Creates `path` (never replacing a file) with `mode`, and writes `text`.
fn write_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[TLS-7]`: only tokens on a plain port other machines can reach are warned about.
    #[test]
    fn tokens_on_a_plain_public_port_are_warned_about() {
        let public: SocketAddr = "0.0.0.0:9999".parse().unwrap();
        let warning = cleartext_token_warning(public, true).expect("a warning");
        assert!(warning.contains("0.0.0.0:9999") && warning.contains("--tls-listen"), "{warning}");
        assert!(cleartext_token_warning(public, false).is_none(), "no tokens, nothing to read");
        assert!(cleartext_token_warning("127.0.0.1:9999".parse().unwrap(), true).is_none());
        assert!(cleartext_token_warning("[::1]:9999".parse().unwrap(), true).is_none());
    }
}
