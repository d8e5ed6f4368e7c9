//! Progress bars (indicatif) for transfers and hashing, and the notes printed beside them.
//!
//! Bars are drawn only when stderr is a terminal and `--quiet` is not given; notes (a retry, a
//! restart, a finished file) go to stderr unless `--quiet`, above the bars when there are any.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_client::{Error, Progress};
use ferry_proto::Name;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::format::{human_duration_ms, human_size};

// `{rate}` and `{left}` are ours ([`moved_style`]), not indicatif's `{bytes_per_sec}` and `{eta}`.
const TRANSFER: &str = "{msg:24!} {wide_bar:.cyan/blue} {bytes:>9}/{total_bytes:<9} {rate:>11} ETA {left:>4}";
const OVERALL: &str = "{msg:24!} {wide_bar:.green/white} {bytes:>9}/{total_bytes:<9} {rate:>11} ETA {left:>4}";
const HASHING: &str = "{msg:24!} {wide_bar:.yellow/white} {bytes:>9}/{total_bytes:<9} {rate:>11} ETA {left:>4}";
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
    /// Bytes the overall bar counts that were not moved now (resumed downloads' parts), left
    /// out of its rate.
    skipped: Arc<AtomicU64>,
    current: Option<ProgressBar>,
    hashing: Option<ProgressBar>,
    /// A spinner while the server computes the MD5 of a file before it can send it (`[GET-9]`).
    waiting: Option<ProgressBar>,
    /// Set by Ctrl-C: the operation stops between chunks.
    cancel: Option<Arc<AtomicBool>>,
    /// The command that runs this one again (to resume an interrupted download), as the user
    /// would type it where they are: the whole `ferry …` line, or the shell's line.
    again: Option<String>,
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
            skipped: Arc::new(AtomicU64::new(0)),
            current: None,
            hashing: None,
            waiting: None,
            cancel: None,
            again: None,
        }
    }

    /// Operations stop when `flag` is set.
    #[must_use]
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Records the command that runs this one again.
    #[must_use]
    pub fn with_again(mut self, command: String) -> Self {
        self.again = Some(command);
        self
    }

    /// The command that runs this one again, if known.
    pub fn again(&self) -> Option<&str> {
        self.again.as_deref()
    }

    /// Prints a note on stderr (above the bars), unless quiet.
    pub fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        self.error(msg);
    }

    /// Prints an error on stderr, even when quiet.
    ///
    /// Above the bars, by clearing them, printing, and drawing them again. (Not
    /// `MultiProgress::println`: with no bar on screen it leaves the line unfinished, and the
    /// shell's next prompt wrote over it, so that the shell looked silent after a `get`.)
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
        self.skipped = Arc::new(AtomicU64::new(0));
        if files > 1 && self.draw {
            let bar = self.multi.add(ProgressBar::new(bytes));
            bar.set_style(moved_style(OVERALL, self.skipped.clone()));
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

/// A bar's style whose `{rate}` and `{left}` count only the bytes moved since the bar started:
/// its position less `skipped`. A resumed download's bar starts at the bytes already held, and
/// indicatif's own `{bytes_per_sec}` and `{eta}` took those for bytes just received (419 MiB/s
/// and "ETA 3s" under `--limit-rate 50M`).
fn moved_style(template: &str, skipped: Arc<AtomicU64>) -> ProgressStyle {
    let skipped_too = skipped.clone();
    let moved = move |s: &ProgressState, skipped: &AtomicU64| {
        let moved = s.pos().saturating_sub(skipped.load(Ordering::Relaxed));
        let left = s.len().unwrap_or(0).saturating_sub(s.pos());
        rate_and_eta(moved, s.elapsed(), left)
    };
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .with_key("rate", move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&moved(s, &skipped).0);
        })
        .with_key("left", move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&moved(s, &skipped_too).1);
        })
        .progress_chars("=> ")
}

/// The rate and the time left of a transfer that moved `moved` bytes in `elapsed` and has `left`
/// to go: `("5.0 MiB/s", "3s")`; `-` for either until there is something to go by — a second of
/// transfer, since the first chunks come in a burst (the rate limit sleeps after them).
pub fn rate_and_eta(moved: u64, elapsed: Duration, left: u64) -> (String, String) {
    let secs = elapsed.as_secs_f64();
    if moved == 0 || secs < 1.0 {
        return ("-".into(), "-".into());
    }
    let rate = moved as f64 / secs;
    let eta = (left as f64 / rate).ceil() as u64;
    let eta = match eta {
        0..=59 => format!("{eta}s"),
        60..=3599 => format!("{}m{:02}s", eta / 60, eta % 60),
        _ => format!("{}h{:02}m", eta / 3600, eta % 3600 / 60),
    };
    (format!("{}/s", human_size(rate as u64)), eta)
}

impl Progress for Bars {
    fn hashing(&mut self, path: &Path, done: u64, total: u64) {
        if !self.draw {
            return;
        }
        let bar = self.hashing.get_or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(moved_style(HASHING, Arc::new(AtomicU64::new(0))));
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
        // At the first attempt at this file, the overall bar's rate leaves out the bytes already
        // held. (A retry's offset includes what the last attempt moved, which was counted.)
        if self.current.is_none() {
            self.skipped.fetch_add(from, Ordering::Relaxed);
        }
        let bar = match self.current.take() {
            Some(bar) => bar,
            None => match &self.overall {
                Some(o) => self.multi.insert_before(o, ProgressBar::new(total)),
                None => self.multi.add(ProgressBar::new(total)),
            },
        };
        // Set anew for each attempt: a retry resumes from another offset.
        bar.set_style(moved_style(TRANSFER, Arc::new(AtomicU64::new(from))));
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
        self.note(&format!("ferry: {}", retry_note(error, delay, retry, retries)));
    }

    fn cancelled(&mut self) -> bool {
        self.cancel.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// What ferry says when an attempt failed and another follows: the failure, then what happens
/// — "connection refused by …; retrying in 1.0 s, 5 tries left".
pub fn retry_note(error: &Error, delay: Duration, retry: u32, retries: u32) -> String {
    let left = retries.saturating_sub(retry) + 1;
    let tries = if left == 1 { "try" } else { "tries" };
    format!("{error}; retrying in {:.1} s, {left} {tries} left", delay.as_secs_f64())
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
    fn rate_and_time_left_count_only_the_bytes_moved_now() {
        // A download resumed at 20 MiB of 30 that moved 5 MiB in a second under a 5 MiB/s limit.
        let (rate, eta) = rate_and_eta(5 << 20, Duration::from_secs(1), 5 << 20);
        assert_eq!((rate.as_str(), eta.as_str()), ("5.0 MiB/s", "1s"));
        assert_eq!(rate_and_eta(0, Duration::from_secs(3), 100), ("-".into(), "-".into()));
        assert_eq!(rate_and_eta(256 << 10, Duration::from_millis(10), 100).0, "-", "no rate from a first burst");
        assert_eq!(rate_and_eta(1 << 20, Duration::from_secs(1), 150 << 20).1, "2m30s");
        assert_eq!(rate_and_eta(1, Duration::from_secs(1), 7200).1, "2h00m");
    }

    #[test]
    fn the_wait_for_a_digest_says_what_the_server_is_doing() {
        let name = Name::parse("big.bin").expect("a plain name");
        assert_eq!(
            waiting_message(&name, 2 << 30, Duration::from_secs(138)),
            "server is computing the MD5 of big.bin (2.0 GiB) before sending it… (waiting up to 2 min 18 s)"
        );
    }
}
