//! `ferry`, the command-line client: the binary's whole logic, so that it can be tested.
//!
//! - [`cli`]: the command line (clap), shared with the shell.
//! - [`commands`]: each command against a [`ferry_client::Client`].
//! - [`shell`]: the interactive prompt, or commands read from standard input.
//! - [`table`], [`format`]: what is printed; [`progress`]: indicatif bars.

pub mod cli;
pub mod commands;
pub mod format;
pub mod progress;
pub mod shell;
pub mod table;

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
    let g = &cli.global;
    let config = Config {
        server: g.server.clone(),
        token: g.token.clone().filter(|t| !t.is_empty()),
        timeout: g.timeout,
        retry: RetryPolicy { retries: g.retries, ..RetryPolicy::default() },
        rate_limit: g.limit_rate,
        ..Config::default()
    };
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
        Some(command) => commands::run(command, &mut client, &mut Bars::new(g.quiet)),
    };
    client.close();
    ExitCode::from(code)
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
