//! `ferryd`: parses flags (and a config file), sets up logging and signals, makes the root
//! ready, and hands a listener to an engine. Everything else lives in ferry-core and the engine
//! crates.

mod cli;
mod config;
mod logging;
mod tls;
mod units;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::CommandFactory;
use ferry_core::indexer::{Indexer, IndexerSettings};
use ferry_core::root::{self, Create, RootError};
use ferry_core::Server;

use crate::cli::{Cli, Command, Engine};

fn main() -> ExitCode {
    let parsed = config::parse(std::env::args_os().collect());
    let outcome = match &parsed.cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(*shell, &mut Cli::command(), "ferryd", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Man) => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).map_err(Into::into),
        Some(Command::GenCert { hosts, out, days }) => tls::gen_cert(hosts, out, *days),
        None => serve(&parsed.cli, parsed.default_root),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // A start-up error is the operator's to fix: what failed and why, on one line, with the
        // remedy where there is one; never a backtrace, whatever RUST_BACKTRACE says.
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: each client costs a descriptor, and the
/// default soft limit (often 1024) would cap a server far below its --max-clients.
#[cfg(unix)]
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        match setrlimit(Resource::Nofile, Rlimit { current: lim.maximum, maximum: lim.maximum }) {
            Ok(()) => tracing::debug!(limit = ?lim.maximum, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
}

/// Makes the root ready: creates what may be created (saying so on stderr), and, unless the
/// server is read-only, checks that it can write there.
fn prepare_root(cli: &Cli, default_root: bool) -> Result<()> {
    let root = &cli.root;
    let create = if default_root { Create::WithParents } else { Create::LastComponent };
    let created = root::prepare(root, create).map_err(|e| match e {
        RootError::MissingParent { ref parent, .. } => anyhow!(
            "cannot serve --root {}: {e}; check the path for a typo, and if it is right, create \
             the parent first (mkdir -p {})",
            root.display(),
            parent.display()
        ),
        e => anyhow::Error::new(e).context(format!("cannot serve --root {}", root.display())),
    })?;
    for dir in created {
        eprintln!("ferryd: created the directory {}", dir.display());
    }
    if !cli.read_only {
        root::check_writable(root).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot serve --root {0} for uploads: it must be writable by the user ferryd runs as; \
                 give that user write access (chown or chmod), choose another --root, or serve it \
                 read-only with --read-only",
                root.display()
            ))
        })?;
    }
    Ok(())
}

/// Binds a listening socket (`flag` names where its address came from); a failure says what to
/// try instead.
fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        let remedy = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "another program (perhaps another ferryd) has that port: choose another with {flag} {}:PORT, \
                 or {flag} {}:0 for any free port (the one chosen is printed)",
                addr.ip(),
                addr.ip()
            ),
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: choose a port from 1024 up, or 0 for any free port".to_owned()
            }
            std::io::ErrorKind::AddrNotAvailable => format!(
                "{} is not an address of this machine: use one of its addresses, 127.0.0.1 or 0.0.0.0",
                addr.ip()
            ),
            _ => format!("check {flag}"),
        };
        anyhow!("cannot listen on {addr}: {e}; {remedy}")
    })
}

fn serve(cli: &Cli, default_root: bool) -> Result<()> {
    let _log_guard = logging::init(cli)?;
    #[cfg(unix)]
    raise_fd_limit();
    let settings = cli.settings()?;
    if settings.anonymous.is_none() && settings.tokens.is_empty() {
        bail!("--anonymous none without --tokens would refuse every client");
    }
    // The certificate first: a start-up that fails on it binds nothing and creates nothing.
    let tls = tls::load(cli)?;
    // Bound next: a start-up that fails on a port in use creates no directory.
    let listener = bind(cli.listen, "--listen")?;
    let tls_listener = match (&tls, cli.tls_listen) {
        (Some((_, config)), Some(at)) => Some((bind(at, "--tls-listen")?, config.clone())),
        _ => None,
    };
    tls::warn_cleartext_tokens(cli.listen, !settings.tokens.is_empty());
    prepare_root(cli, default_root)?;
    let root = settings.root.clone();
    let server = Server::new(settings).with_context(|| format!("opening the root {}", root.display()))?;
    let addr = listener.local_addr()?;

    let s = server.clone();
    let cert = tls.map(|(cert, _)| cert);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    std::thread::Builder::new().name("ferry-signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig == signal_hook::consts::SIGHUP {
                tls::reload(cert.as_deref());
                continue;
            }
            tracing::info!(signal = sig, "signal received");
            s.request_shutdown();
            break;
        }
    })?;

    tracing::info!(%addr, root = %root.display(), engine = ?cli.engine, "serving");
    if cli.read_only {
        tracing::info!("read-only: every upload and delete is refused");
    }
    tracing::info!("digests are kept {}", server.store.persist().describe());
    let indexer = match cli.background_hashes {
        0 => None,
        threads => {
            let settings = IndexerSettings { threads, ..IndexerSettings::default() };
            Some(Indexer::start(&server, settings).context("starting background hashing")?)
        }
    };
    // Before anyone can know where to connect: accepted sockets inherit the listener's options.
    let sockets = std::iter::once(&listener).chain(tls_listener.as_ref().map(|(l, _)| l));
    for socket in sockets {
        match cli.engine {
            #[cfg(feature = "blocking")]
            Engine::Blocking => ferry_blocking::prepare_listener(socket)?,
            #[cfg(feature = "async")]
            Engine::Async => ferry_async::prepare_listener(socket)?,
        }
    }
    // The lines on stdout: scripts and tests read the real addresses from them.
    println!("listening on {addr}");
    if let Some((l, _)) = &tls_listener {
        let tls_addr = l.local_addr()?;
        tracing::info!(%tls_addr, "serving over TLS too");
        println!("tls listening on {tls_addr}");
    }
    std::io::stdout().flush()?;
    let listeners: Vec<(TcpListener, Option<_>)> =
        std::iter::once((listener, None)).chain(tls_listener.map(|(l, c)| (l, Some(c)))).collect();
    match cli.engine {
        #[cfg(feature = "blocking")]
        Engine::Blocking => ferry_blocking::serve_all(
            server.clone(),
            listeners.into_iter().map(|(socket, tls)| ferry_blocking::Listener { socket, tls }).collect(),
        )?,
        #[cfg(feature = "async")]
        Engine::Async => ferry_async::serve_all_blocking(server.clone(), listeners, cli.workers)?,
    }
    // Stopped (the engine has drained): a hash in progress is abandoned, the index flushed.
    if let Some(indexer) = indexer {
        indexer.stop();
    }
    server.store.flush_digests();
    Ok(())
}
