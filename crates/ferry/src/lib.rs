//! `ferry`, the command-line client: the binary's whole logic, so that it can be tested.
//!
//! - [`cli`]: the command line (clap), shared with the shell.
//! - [`commands`]: each command against a [`ferry_client::Client`].
//! - [`shell`]: the interactive prompt, or commands read from standard input.
//! - [`table`], [`format`](mod@format): what is printed; [`progress`]: indicatif bars.
//! - [`interrupt`], [`terminal`]: Ctrl-C, and the terminal's echo while bars are drawn.

pub mod cli;
pub mod commands;
pub mod format;
pub mod interrupt;
pub mod progress;
pub mod shell;
pub mod sync;
pub mod table;
pub mod terminal;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_client::{exit, Client, Config, RetryPolicy};

use crate::cli::{Cli, Command};
use crate::progress::Bars;

/// Runs `ferry` with the process's arguments and returns its exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; everything else is a usage error (2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    init_log();
    let g = &cli.global;
    let config = Config {
        server: g.server.clone(),
        token: g.token.clone().filter(|t| !t.is_empty()),
        timeout: g.timeout,
        retry: RetryPolicy { retries: g.retries, ..RetryPolicy::default() },
        rate_limit: g.limit_rate,
        digest_cache: if g.no_digest_cache { None } else { ferry_client::digest_cache::default_path() },
        trailer: !g.digest_first,
        tls: g.tls_config(),
        allow_cleartext_token: g.allow_cleartext_token,
        ..Config::default()
    };
    // `[TLS-5]`: skipping the check is reported each time, -q or not.
    if g.insecure {
        eprintln!("{}", cli::INSECURE_WARNING);
    }
    // Set by Ctrl-C while the shell runs a command; a retry's wait ends early when it is.
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut client = Client::new(config).with_sleep(interruptible_sleep(interrupt.clone()));
    let code = match &cli.command {
        Some(Command::Shell) => shell::run(&mut client, g.quiet, &interrupt),
        None if std::io::stdin().is_terminal() => shell::run(&mut client, g.quiet, &interrupt),
        None => commands::usage(
            &Bars::new(g.quiet),
            "no command given, and standard input is not a terminal for the shell — see ferry --help",
        ),
        Some(command) => {
            // Transfers stop cleanly on Ctrl-C, to say what was kept and how to resume; other
            // commands keep nothing, and end at once as any program does.
            let transfers = matches!(command, Command::Get { .. } | Command::Put { .. } | Command::Sync { .. });
            if transfers {
                if let Err(e) = interrupt::catch(interrupt.clone(), true) {
                    eprintln!("ferry: cannot catch Ctrl-C ({e}); it will end ferry at once");
                }
            }
            let _no_echo = terminal::NoEcho::new();
            let again: Vec<String> = std::env::args().map(|a| shell::shell_quote(&a)).collect();
            let mut bars = Bars::new(g.quiet).with_cancel(interrupt.clone()).with_again(again.join(" "));
            commands::run(command, &mut client, &mut bars)
        }
    };
    client.close();
    ExitCode::from(code)
}

/// Logs to stderr what `FERRY_LOG` asks for (a tracing filter such as `debug`); nothing without
/// it. The library logs only what a user does not need to see, such as a digest cache it could
/// not use.
fn init_log() {
    let Some(filter) = std::env::var_os("FERRY_LOG") else { return };
    let filter = tracing_subscriber::EnvFilter::new(filter.to_string_lossy());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Sleeps, waking early when `flag` is set.
fn interruptible_sleep(flag: Arc<AtomicBool>) -> ferry_client::Sleep {
    Arc::new(move |d: Duration| {
        let end = Instant::now() + d;
        while !flag.load(Ordering::SeqCst) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    })
}
