//! When to try again, and how long to wait first: exponential backoff with jitter.
//!
//! The n-th retry waits about `base · 2^(n-1)`, at most `cap` — with the defaults about 1, 2, 4,
//! 8, 16, 32, 32… seconds — each made up to a quarter shorter or longer at random, so that
//! clients cut off together (a server restart) do not all come back at the same instant. The
//! jitter is centred on the nominal wait, so the waits average what the documentation says (an
//! earlier version only ever shortened them, and five retries took 25 s rather than 31). The
//! random part comes from a [`Jitter`] the caller can replace, so tests know every delay in
//! advance.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A source of numbers in `[0, 1)`: where in the jitter range a delay falls (0: a quarter short
/// of the nominal wait, 0.5: the nominal wait, towards 1: a quarter longer).
#[derive(Clone)]
pub struct Jitter(Arc<dyn Fn() -> f64 + Send + Sync>);

impl Jitter {
    /// Uniformly random (the default).
    pub fn random() -> Self {
        Self(Arc::new(fastrand::f64))
    }

    /// Always `value` (clamped to `[0, 1)`): deterministic delays, for tests.
    pub fn fixed(value: f64) -> Self {
        let v = value.clamp(0.0, 0.999_999);
        Self(Arc::new(move || v))
    }

    /// Numbers from `f`, clamped to `[0, 1)`.
    pub fn from_fn(f: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    fn sample(&self) -> f64 {
        (self.0)().clamp(0.0, 0.999_999)
    }
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Jitter")
    }
}

/// How often to retry, and how long to wait before each retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `retries + 1` attempts in all).
    pub retries: u32,
    /// The wait before the first retry.
    pub base: Duration,
    /// The longest nominal wait (the jitter may add a quarter to it).
    pub cap: Duration,
    /// Makes each wait up to a quarter shorter or longer.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// 5 retries, waiting about 1, 2, 4, 8 and 16 s (±25 %); the cap of 32 s applies from the 6th.
    fn default() -> Self {
        Self { retries: 5, base: Duration::from_secs(1), cap: Duration::from_secs(32), jitter: Jitter::random() }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self { retries: 0, ..Self::default() }
    }

    /// The wait before retry number `retry` (1 for the first retry), before jitter.
    pub fn nominal_delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The wait before retry number `retry` (1 for the first), jitter included: within
    /// `[3/4, 5/4)` of [`Self::nominal_delay`], centred on it.
    pub fn delay(&self, retry: u32) -> Duration {
        self.nominal_delay(retry).mul_f64(0.75 + self.jitter.sample() / 2.0)
    }
}

/// The retry budget of one operation: counts failures and says whether to go on.
///
/// The count starts again whenever an attempt made progress (a download that received bytes
/// before it was cut off), so a long transfer over a flaky link is not abandoned while it is
/// still moving forward; an attempt that makes no progress spends the budget.
#[derive(Debug)]
pub struct Budget<'a> {
    policy: &'a RetryPolicy,
    /// Retries spent since the last progress.
    spent: u32,
    /// Attempts made in all.
    attempts: u32,
}

impl<'a> Budget<'a> {
    /// A fresh budget under `policy`.
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Self { policy, spent: 0, attempts: 0 }
    }

    /// Records a failed attempt. Returns how long to wait before the next one, or `None` when
    /// the budget is spent.
    pub fn failed(&mut self, made_progress: bool) -> Option<Duration> {
        self.attempts += 1;
        if made_progress {
            self.spent = 0;
        }
        if self.spent >= self.policy.retries {
            return None;
        }
        self.spent += 1;
        Some(self.policy.delay(self.spent))
    }

    /// The retry about to be made (1 for the first), after [`Self::failed`] allowed it.
    pub fn retry_number(&self) -> u32 {
        self.spent
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn waits_double_from_one_second_up_to_the_cap() {
        let p = RetryPolicy { retries: 8, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() };
        let delays: Vec<_> = (1..=8).map(|n| p.delay(n)).collect();
        assert_eq!(delays, secs(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0, 32.0]));
    }

    #[test]
    fn jitter_shortens_or_lengthens_by_at_most_a_quarter() {
        let at = |j: f64| RetryPolicy { jitter: Jitter::fixed(j), ..RetryPolicy::default() };
        assert_eq!(at(0.0).delay(1), Duration::from_millis(750));
        assert_eq!(at(0.5).delay(3), Duration::from_secs(4));
        let longest = at(1.0).delay(3);
        assert!(longest > Duration::from_millis(4999) && longest < Duration::from_secs(5), "{longest:?}");
        let random = RetryPolicy::default();
        for n in 1..10 {
            let d = random.delay(n);
            assert!(d >= random.nominal_delay(n).mul_f64(0.75) && d < random.nominal_delay(n).mul_f64(1.25));
        }
    }

    #[test]
    fn the_default_schedule_averages_what_the_documentation_says() {
        // README and `ferry --help`: "waiting about 1, 2, 4, 8, 16 s (±25 %)", 31 s in all.
        let p = RetryPolicy::default();
        let nominal: Vec<_> = (1..=p.retries).map(|n| p.nominal_delay(n)).collect();
        assert_eq!(nominal, secs(&[1.0, 2.0, 4.0, 8.0, 16.0]));
        // The mean of many random schedules is the nominal one, within 3 %: the jitter no longer
        // only shortens.
        let runs = 2000;
        let total: f64 = (0..runs).map(|_| (1..=p.retries).map(|n| p.delay(n).as_secs_f64()).sum::<f64>()).sum();
        let mean = total / f64::from(runs);
        assert!((mean - 31.0).abs() < 31.0 * 0.03, "mean of {runs} schedules: {mean:.2} s");
    }

    #[test]
    fn budget_allows_exactly_the_retries() {
        let p = RetryPolicy { retries: 3, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() };
        let mut b = Budget::new(&p);
        let waits: Vec<_> = std::iter::from_fn(|| b.failed(false)).collect();
        assert_eq!(waits, secs(&[1.0, 2.0, 4.0]));
        assert_eq!(b.attempts(), 4);
    }

    #[test]
    fn progress_refills_the_budget() {
        let p = RetryPolicy { retries: 2, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() };
        let mut b = Budget::new(&p);
        assert_eq!(b.failed(false), Some(Duration::from_secs(1)));
        assert_eq!(b.failed(false), Some(Duration::from_secs(2)));
        assert_eq!(b.failed(true), Some(Duration::from_secs(1)), "progress starts the count again");
        assert_eq!(b.failed(false), Some(Duration::from_secs(2)));
        assert_eq!(b.failed(false), None);
    }

    #[test]
    fn zero_retries_means_one_attempt() {
        let p = RetryPolicy::none();
        assert_eq!(Budget::new(&p).failed(false), None);
    }
}
