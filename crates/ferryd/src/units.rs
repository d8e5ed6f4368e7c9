//! Sizes and durations as a person writes them: `64G`, `512KiB`, `5m`, `1h30m`, `500ms`.
//!
//! A plain number keeps the unit its flag always had (bytes; seconds, or milliseconds for
//! `--linger`), so existing scripts and config files read the same. Each flag states its bounds,
//! and 0 is either inside them with a documented meaning or refused with the least value allowed:
//! never quietly turned into something else.

use std::fmt;
use std::time::Duration;

/// A number of bytes. Shown (in `--help`'s defaults) in the largest binary unit that divides it
/// exactly, which the parser reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        let n = self.0;
        match UNITS.iter().find(|(_, shift)| n != 0 && n.trailing_zeros() >= *shift) {
            Some((unit, shift)) => write!(f, "{}{unit}", n >> shift),
            None => write!(f, "{n}"),
        }
    }
}

/// A parser of sizes from `min` to `max` bytes, for clap. `K`, `M`, `G`, `T` (with or without
/// `B` or `iB`) are powers of 1024, as in curl and rsync's `--max-size`.
pub fn size(min: u64, max: u64) -> impl Fn(&str) -> Result<Size, String> + Clone + Send + Sync + 'static {
    move |s| {
        let n = parse_size::Config::new().with_binary().parse_size(s).map_err(|e| {
            format!("{e}: write a number of bytes, or one with a unit: 512K, 64M, 64G (powers of 1024)")
        })?;
        if n < min {
            return Err(format!("the least allowed is {}", Size(min)));
        }
        if n > max {
            return Err(format!("the most allowed is {}", Size(max)));
        }
        Ok(Size(n))
    }
}

/// A length of time, shown the way [`duration`] reads it (`5m`, `10s`, `2s 500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// What a plain number (no unit) counts.
#[derive(Debug, Clone, Copy)]
pub enum Plain {
    Seconds,
    Millis,
}

/// The longest duration any flag takes: about 46 days. Deadlines are `now + duration`, and a
/// value past what `Instant` can hold would overflow; no deadline needs more.
pub const MAX_DURATION: Duration = Duration::from_secs(4_000_000);

/// A parser of durations from `min` to `max` (at most [`MAX_DURATION`]), for clap: a plain
/// number counts `plain`, anything else is read by humantime (`90s`, `5m`, `1h 30m`, `500ms`).
pub fn duration(
    plain: Plain,
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Span, String> + Clone + Send + Sync + 'static {
    move |s| {
        let d = match s.trim().parse::<u64>() {
            Ok(n) => match plain {
                Plain::Seconds => Duration::from_secs(n),
                Plain::Millis => Duration::from_millis(n),
            },
            Err(_) => humantime::parse_duration(s.trim()).map_err(|e| {
                let unit = match plain {
                    Plain::Seconds => "seconds",
                    Plain::Millis => "milliseconds",
                };
                format!("{e}: write {unit}, or a number with a unit: 500ms, 90s, 5m, 1h30m")
            })?,
        };
        if d < min {
            return Err(if d.is_zero() {
                format!("0 is not allowed here; the least is {}", Span(min))
            } else {
                format!("the least allowed is {}", Span(min))
            });
        }
        if d > max.min(MAX_DURATION) {
            return Err(format!("the most allowed is {}", Span(max.min(MAX_DURATION))));
        }
        Ok(Span(d))
    }
}

/// The log levels `--log-level` takes by name.
pub const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// `--log-level`: a level, or a tracing filter whose every directive has a level
/// (`info,ferry_core=debug`). A bare word that is not a level would be read by tracing as a
/// target to trace in full, and usually is a typo that silences the log: it is refused.
pub fn log_filter(s: &str) -> Result<String, String> {
    let is_level = |d: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d.trim()));
    if let Some(bad) = s.split(',').find(|d| !d.contains('=') && !is_level(d)) {
        return Err(format!(
            "unknown log level `{}`: use one of {}, or a filter such as `info,ferry_core=debug`",
            bad.trim(),
            LOG_LEVELS.join(", ")
        ));
    }
    tracing_subscriber::EnvFilter::builder().parse(s).map_err(|e| format!("not a log filter: {e}"))?;
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_and_plain_bytes() {
        let parse = size(1, u64::MAX);
        assert_eq!(parse("4096"), Ok(Size(4096)));
        assert_eq!(parse("64G"), Ok(Size(64 << 30)));
        assert_eq!(parse("64GiB"), Ok(Size(64 << 30)));
        assert_eq!(parse("512K"), Ok(Size(512 << 10)));
        assert_eq!(parse("1.5M"), Ok(Size(3 << 19)));
        assert!(parse("0").unwrap_err().contains("least allowed is 1"));
        assert!(parse("lots").unwrap_err().contains("64G"));
        assert!(size(1024, 1 << 20)("2M").unwrap_err().contains("most allowed is 1MiB"));
    }

    #[test]
    fn sizes_are_shown_as_they_are_read_back() {
        for n in [0, 1, 1000, 1024, 3 << 19, 64 << 30, 1 << 40, u64::MAX] {
            let shown = Size(n).to_string();
            assert_eq!(size(0, u64::MAX)(&shown), Ok(Size(n)), "{shown}");
        }
        assert_eq!(Size(64 << 30).to_string(), "64GiB");
        assert_eq!(Size(1000).to_string(), "1000");
    }

    #[test]
    fn durations_take_units_and_plain_numbers_in_the_flags_unit() {
        let secs = duration(Plain::Seconds, Duration::ZERO, MAX_DURATION);
        assert_eq!(secs("300"), Ok(Span(Duration::from_secs(300))));
        assert_eq!(secs("5m"), Ok(Span(Duration::from_secs(300))));
        assert_eq!(secs("1h30m"), Ok(Span(Duration::from_secs(5400))));
        assert_eq!(secs("500ms"), Ok(Span(Duration::from_millis(500))));
        assert_eq!(secs("0"), Ok(Span(Duration::ZERO)));
        assert!(secs("soon").unwrap_err().contains("5m"));
        assert!(secs("47days").unwrap_err().contains("most allowed"));
        let millis = duration(Plain::Millis, Duration::ZERO, Duration::from_secs(60));
        assert_eq!(millis("2000"), Ok(Span(Duration::from_secs(2))));
        assert_eq!(millis("2s"), Ok(Span(Duration::from_secs(2))));
        assert_eq!(millis("61s").unwrap_err(), "the most allowed is 1m");
    }

    #[test]
    fn zero_is_refused_where_it_has_no_meaning() {
        let positive = duration(Plain::Seconds, Duration::from_millis(1), MAX_DURATION);
        assert_eq!(positive("0").unwrap_err(), "0 is not allowed here; the least is 1ms");
        assert_eq!(positive("1ms"), Ok(Span(Duration::from_millis(1))));
    }

    #[test]
    fn durations_are_shown_as_they_are_read_back() {
        for d in [Duration::ZERO, Duration::from_secs(10), Duration::from_secs(300), Duration::from_millis(2500)] {
            let shown = Span(d).to_string();
            assert_eq!(duration(Plain::Seconds, Duration::ZERO, MAX_DURATION)(&shown), Ok(Span(d)), "{shown}");
        }
        assert_eq!(Span(Duration::from_secs(300)).to_string(), "5m");
    }

    #[test]
    fn log_levels_are_checked() {
        for ok in ["info", "WARN", "off", "info,ferry_core=debug", "ferry_core=trace"] {
            assert_eq!(log_filter(ok).as_deref(), Ok(ok));
        }
        let e = log_filter("nonsense").unwrap_err();
        assert!(e.contains("`nonsense`") && e.contains("error, warn, info, debug, trace, off"), "{e}");
        assert!(log_filter("info,verbose").unwrap_err().contains("`verbose`"));
        assert!(log_filter("ferry_core=loud").is_err());
    }
}
