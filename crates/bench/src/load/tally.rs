//! What a load counted: replies, verified replies, failures and latencies.

use std::time::Duration;

/// At most this many failures are kept in full; the rest are only counted.
const FAILURES_KEPT: usize = 5;

/// Counts of one client thread, or of a whole load once merged.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Replies completed inside the measured window.
    pub replies: u64,
    /// Replies completed during the warm-up, before the window.
    pub warmup_replies: u64,
    /// Replies completed after the window, in the batch of events being handled when it ended.
    pub late_replies: u64,
    /// Data bytes of the window's replies.
    pub bytes: u64,
    /// Replies that passed the check `--verify` asks for, warm-up included; with `none`, 0.
    pub verified: u64,
    /// TCP connections opened (in fresh and legacy modes, one per request).
    pub connections: u64,
    /// Connections the server closed on its own between replies (HTTP `Connection: close`
    /// during a persistent load); the requests pipelined behind were dropped, not failed.
    pub server_closes: u64,
    pub failures: u64,
    /// The first few failures, as text.
    pub first_failures: Vec<String>,
    /// Per reply in the window, nanoseconds from sending the request (from connecting, for a
    /// connection per request) to the reply's last byte; capped at `u32::MAX` (4.3 s).
    pub latencies_ns: Vec<u32>,
}

impl Tally {
    pub fn fail(&mut self, what: impl ToString) {
        self.failures += 1;
        if self.first_failures.len() < FAILURES_KEPT {
            self.first_failures.push(what.to_string());
        }
    }

    pub fn latency(&mut self, d: Duration) {
        self.latencies_ns.push(d.as_nanos().min(u128::from(u32::MAX)) as u32);
    }

    pub fn merge(&mut self, other: Tally) {
        self.replies += other.replies;
        self.warmup_replies += other.warmup_replies;
        self.late_replies += other.late_replies;
        self.bytes += other.bytes;
        self.verified += other.verified;
        self.connections += other.connections;
        self.server_closes += other.server_closes;
        self.failures += other.failures;
        for f in other.first_failures {
            if self.first_failures.len() < FAILURES_KEPT {
                self.first_failures.push(f);
            }
        }
        self.latencies_ns.extend(other.latencies_ns);
    }

    /// Replies of the warm-up, the window and after it.
    pub fn all_replies(&self) -> u64 {
        self.replies + self.warmup_replies + self.late_replies
    }

    /// The nearest-rank percentile `p` (0 to 1) of the window's latencies; sorts them first.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        if !self.latencies_ns.is_sorted() {
            self.latencies_ns.sort_unstable();
        }
        let n = self.latencies_ns.len();
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        Some(Duration::from_nanos(u64::from(self.latencies_ns[i])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = Tally::default();
        for us in [5, 1, 3] {
            a.latency(Duration::from_micros(us));
        }
        let mut b = Tally::default();
        b.latency(Duration::from_micros(2));
        b.fail("x");
        a.merge(b);
        assert_eq!(a.percentile(0.5), Some(Duration::from_micros(2)));
        assert_eq!(a.percentile(0.99), Some(Duration::from_micros(5)));
        assert_eq!((a.failures, a.first_failures.len()), (1, 1));
        assert_eq!(Tally::default().percentile(0.5), None);
    }
}
