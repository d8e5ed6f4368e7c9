//! The log: to stderr, and to a file in `--log-dir` if asked, each written by its own thread.

use std::io::Write;

use anyhow::{Context, Result};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::prelude::*;

use crate::cli::Cli;

/// Log lines queued for the writer thread, at most (each is one formatted line, a few hundred
/// bytes). Past it, lines are dropped rather than queued or waited for: a log must never slow or
/// grow the server.
const LOG_QUEUE_LINES: usize = 16_384;

/// A writer on its own thread, so that logging a request costs the serving thread a formatted
/// line and a channel send, not a write(2). The thread writes through a buffer that it flushes
/// whenever the queue is empty: one write for a burst of lines, and none held back when idle.
fn log_writer<W: Write + Send + 'static>(out: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default().buffered_lines_limit(LOG_QUEUE_LINES).lossy(true).finish(std::io::BufWriter::new(out))
}

/// Starts logging; the guards flush the queued lines when dropped, at exit.
///
/// # Errors
/// The log directory cannot be created.
pub fn init(cli: &Cli) -> Result<Vec<WorkerGuard>> {
    // Checked when the flags were parsed (`units::log_filter`).
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level).context("bad --log-level")?;
    let (writer, stderr_guard) = log_writer(std::io::stderr());
    // Colours only for a terminal: a log redirected to a file or a pipe stays plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let mut guards = vec![stderr_guard];
    let file = match &cli.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating the log directory {}", dir.display()))?;
            let stamp = ferry_core::history::now_ms();
            let appender = tracing_appender::rolling::never(dir, format!("ferryd-{stamp}.log"));
            let (writer, guard) = log_writer(appender);
            guards.push(guard);
            Some(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer))
        }
        None => None,
    };
    tracing_subscriber::registry().with(filter).with(stderr).with(file).init();
    Ok(guards)
}
