//! How values are shown: sizes, times, and the JSON shapes of `--json`.

use ferry_proto::{ConnRecord, Entry};
use serde::Serialize;

pub use ferry_client::error::human_size;

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc(ms: i64) -> String {
    let (date, (h, m, s), _) = civil(ms);
    format!("{date} {h:02}:{m:02}:{s:02}")
}

/// Milliseconds since the epoch in RFC 3339, UTC, with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let (date, (h, m, s), milli) = civil(ms);
    format!("{date}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// The UTC calendar date (`YYYY-MM-DD`), time of day and milliseconds of an instant.
fn civil(ms: i64) -> (String, (i64, i64, i64), i64) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (format!("{y:04}-{m:02}-{d:02}"), (tod / 3600, tod % 3600 / 60, tod % 60), milli)
}

/// A duration in milliseconds for people: `850 ms`, `12.3 s`, `5 min 3 s`, `2 h 4 min`.
pub fn human_duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A LIST entry or STAT reply as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct JsonEntry {
    pub name: String,
    pub size: u64,
    pub mtime_ms: i64,
    pub mtime: String,
    /// `null` when the server has not computed it yet.
    pub md5: Option<String>,
}

impl From<&Entry> for JsonEntry {
    fn from(e: &Entry) -> Self {
        Self {
            // JSON escapes control characters itself; names have none anyway (`[NAME-4]`).
            name: e.name.as_str().to_owned(),
            size: e.size,
            mtime_ms: e.mtime_ms,
            mtime: rfc3339(e.mtime_ms),
            md5: e.md5.map(|d| d.to_string()),
        }
    }
}

/// A STATUS record as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct JsonRecord {
    pub id: u64,
    pub peer: String,
    pub connected_ms: i64,
    pub connected: String,
    /// `null` while the connection is open.
    pub disconnected_ms: Option<i64>,
    pub disconnected: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// This is the connection that asked.
    pub this_connection: bool,
}

impl JsonRecord {
    pub fn new(r: &ConnRecord, ours: bool) -> Self {
        Self {
            id: r.id,
            peer: r.peer.clone(),
            connected_ms: r.connected_ms,
            connected: rfc3339(r.connected_ms),
            disconnected_ms: r.disconnected_ms,
            disconnected: r.disconnected_ms.map(rfc3339),
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            this_connection: ours,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(u64::MAX), "16 EiB");
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(-1), "1969-12-31 23:59:59");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration_ms(850), "850 ms");
        assert_eq!(human_duration_ms(12_345), "12.3 s");
        assert_eq!(human_duration_ms(303_000), "5 min 3 s");
        assert_eq!(human_duration_ms(7_440_000), "2 h 4 min");
    }
}
