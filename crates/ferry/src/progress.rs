//! Progress bars (indicatif) for transfers and hashing, and the notes printed beside them.
//!
//! Bars are drawn only when stderr is a terminal and `--quiet` is not given; notes (a retry, a
//! restart, a finished file) go to stderr unless `--quiet`, above the bars when there are any.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_client::{Error, Progress};
use ferry_proto::Name;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::format::{human_duration_ms, human_size};

const TRANSFER: &str = "{msg:24!} {wide_bar:.cyan/blue} {bytes:>9}/{total_bytes:<9} {bytes_per_sec:>11} ETA {eta:>3}";
const OVERALL: &str = "{msg:24!} {wide_bar:.green/white} {bytes:>9}/{total_bytes:<9} {bytes_per_sec:>11} ETA {eta:>3}";
const HASHING: &str = "{msg:24!} {wide_bar:.yellow/white} {bytes:>9}/{total_bytes:<9} {bytes_per_sec:>11} ETA {eta:>3}";
const WAITING: &str = "{spinner:.yellow} {wide_msg} {elapsed:>4}";

/// The bars and notes of one command (or one shell line).
pub struct Bars {
    multi: MultiProgress,
    draw: bool,
    quiet: bool,
    /// The bar of all files, when there are several.
    overall: Option<ProgressBar>,
    /// Bytes of the files finished before the current one, for the overall bar.
    finished: u64,
    current: Option<ProgressBar>,
    hashing: Option<ProgressBar>,
    /// A spinner while the server computes the MD5 of a file before it can send it (`[GET-9]`).
    waiting: Option<ProgressBar>,
    /// Set by Ctrl-C in the shell: the operation stops between chunks.
    cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars").field("draw", &self.draw).field("quiet", &self.quiet).finish_non_exhaustive()
    }
}

impl Bars {
    /// Bars drawn on stderr if it is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Self {
        let draw = !quiet && std::io::stderr().is_terminal();
        let target = if draw { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self {
            multi: MultiProgress::with_draw_target(target),
            draw,
            quiet,
            overall: None,
            finished: 0,
            current: None,
            hashing: None,
            waiting: None,
            cancel: None,
        }
    }

    /// Operations stop when `flag` is set.
    #[must_use]
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Prints a note on stderr (above the bars), unless quiet.
    pub fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        if self.draw {
            let _ = self.multi.println(msg);
        } else {
            eprintln!("{msg}");
        }
    }

    /// Prints an error on stderr, even when quiet.
    pub fn error(&self, msg: &str) {
        if self.draw {
            self.multi.suspend(|| eprintln!("{msg}"));
        } else {
            eprintln!("{msg}");
        }
    }

    /// Starts a batch of `files` transfers of `bytes` in all: an overall bar if there are
    /// several.
    pub fn begin_batch(&mut self, what: &str, files: usize, bytes: u64) {
        self.finished = 0;
        if files > 1 && self.draw {
            let bar = self.multi.add(ProgressBar::new(bytes));
            bar.set_style(style(OVERALL));
            bar.set_message(format!("{what} {files} files"));
            self.overall = Some(bar);
        }
    }

    /// One file of the batch is over (whatever the outcome); `size` is what it counts for.
    pub fn file_done(&mut self, size: u64) {
        self.stop_waiting();
        if let Some(bar) = self.current.take() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.finished += size;
        if let Some(o) = &self.overall {
            o.set_position(self.finished);
        }
    }

    /// The batch is over.
    pub fn end_batch(&mut self) {
        let bars = [self.current.take(), self.hashing.take(), self.waiting.take(), self.overall.take()];
        for bar in bars.into_iter().flatten() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// Removes the spinner of [`Progress::waiting_for_digest`], if there is one.
    fn stop_waiting(&mut self) {
        if let Some(bar) = self.waiting.take() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    fn sync_overall(&self) {
        if let (Some(o), Some(c)) = (&self.overall, &self.current) {
            o.set_position(self.finished + c.position());
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ")
}

impl Progress for Bars {
    fn hashing(&mut self, path: &Path, done: u64, total: u64) {
        if !self.draw {
            return;
        }
        let bar = self.hashing.get_or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(style(HASHING));
            let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into());
            bar.set_message(format!("MD5 {}", ferry_proto::name::escape_for_display(&file)));
            bar
        });
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
            self.multi.remove(bar);
            self.hashing = None;
        }
    }

    fn waiting_for_digest(&mut self, name: &Name, size: u64, allowed: Duration) {
        self.stop_waiting();
        if !self.draw {
            // `[GET-9]`: say what the wait is for, even with no bars to say it in.
            self.note(&format!("ferry: {}", waiting_message(name, size, allowed)));
            return;
        }
        let bar = match &self.overall {
            Some(o) => self.multi.insert_before(o, ProgressBar::new_spinner()),
            None => self.multi.add(ProgressBar::new_spinner()),
        };
        bar.set_style(ProgressStyle::with_template(WAITING).expect("a valid template"));
        bar.set_message(waiting_message(name, size, allowed));
        bar.enable_steady_tick(Duration::from_millis(120));
        self.waiting = Some(bar);
    }

    fn transfer_started(&mut self, name: &Name, total: u64, from: u64) {
        self.stop_waiting();
        if let Some(h) = self.hashing.take() {
            h.finish_and_clear();
            self.multi.remove(&h);
        }
        if !self.draw {
            return;
        }
        let bar = match self.current.take() {
            Some(bar) => bar,
            None => {
                let bar = match &self.overall {
                    Some(o) => self.multi.insert_before(o, ProgressBar::new(total)),
                    None => self.multi.add(ProgressBar::new(total)),
                };
                bar.set_style(style(TRANSFER));
                bar
            }
        };
        bar.set_length(total);
        bar.set_message(name.escaped());
        bar.reset();
        bar.set_position(from);
        self.current = Some(bar);
        self.sync_overall();
    }

    fn transferred(&mut self, bytes: u64) {
        if let Some(bar) = &self.current {
            bar.inc(bytes);
        }
        self.sync_overall();
    }

    fn restarting(&mut self, name: &Name, why: &str) {
        self.note(&format!("ferry: {}: {why}; starting again from the first byte", name.escaped()));
    }

    fn retrying(&mut self, error: &Error, delay: Duration, retry: u32, retries: u32) {
        self.stop_waiting();
        self.note(&format!("ferry: {error} — retry {retry} of {retries} in {:.1} s", delay.as_secs_f64()));
    }

    fn cancelled(&mut self) -> bool {
        self.cancel.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// What the spinner says while the server hashes `name` before it can send it.
fn waiting_message(name: &Name, size: u64, allowed: Duration) -> String {
    let allowed_ms = i64::try_from(allowed.as_millis()).unwrap_or(i64::MAX);
    format!(
        "server is computing the MD5 of {} ({}) before sending it… (waiting up to {})",
        name.escaped(),
        human_size(size),
        human_duration_ms(allowed_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_for_a_digest_says_what_the_server_is_doing() {
        let name = Name::parse("big.bin").expect("a plain name");
        assert_eq!(
            waiting_message(&name, 2 << 30, Duration::from_secs(138)),
            "server is computing the MD5 of big.bin (2.0 GiB) before sending it… (waiting up to 2 min 18 s)"
        );
    }
}
