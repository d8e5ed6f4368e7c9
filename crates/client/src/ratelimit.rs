//! A cap on transfer speed (`--limit-rate`), as curl, wget and rsync offer: the transfer sleeps
//! whenever it is ahead of the rate.

use std::time::{Duration, Instant};

/// Keeps a transfer at or below a rate, averaged since it started.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
}

impl RateLimit {
    /// A limit of `bytes_per_sec` (at least 1), starting now.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec: bytes_per_sec.max(1), started: Instant::now(), bytes: 0 }
    }

    /// Counts `n` more bytes and sleeps until the average rate is back within the limit.
    pub fn consume(&mut self, n: u64) {
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_average_rate() {
        let mut limit = RateLimit::new(1_000_000);
        let started = Instant::now();
        for _ in 0..10 {
            limit.consume(10_000);
        }
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
    }
}
