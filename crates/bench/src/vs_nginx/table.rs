//! The rounds' figures, their medians, and issue 13's table with ratios against the first
//! server (nginx, or the blocking engine without it).

use std::collections::HashMap;

use super::Workload;
use crate::load::report::{fmt_us, Measured};

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub rate: f64,
    /// Server CPU per request, µs.
    pub cpu_us: Option<f64>,
    pub client_cpu_us: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Server context switches per request, from `/proc`.
    pub switches: Option<f64>,
    /// Whether server threads exited during the window (the switches are then a lower bound).
    pub threads_gone: bool,
    pub segments: Option<f64>,
}

impl Figures {
    pub fn of(m: &mut Measured) -> Self {
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        let replies = m.outcome.tally.replies.max(1) as f64;
        Self {
            rate: m.rate(),
            cpu_us: m.cpu_per_reply().map(us),
            client_cpu_us: m.usage.map(|u| us(u.client_cpu) / replies),
            p50_us: m.p50().map(us),
            p99_us: m.p99().map(us),
            switches: m.switches_per_reply(),
            threads_gone: m.usage.is_some_and(|u| u.threads_gone > 0),
            segments: m.segments_per_reply(),
        }
    }
}

/// Every run's figures, by workload and server.
pub struct Results {
    labels: Vec<String>,
    connections: usize,
    runs: HashMap<(Workload, usize), Vec<Figures>>,
    /// Syscalls and context switches per request, from the perf pass.
    perf: HashMap<(Workload, usize), (f64, f64)>,
}

/// The suffix of a server run at `--log-level info` to price logging.
pub const LOG_INFO: &str = ", log info";

impl Results {
    pub fn new(labels: Vec<String>, connections: usize) -> Self {
        Self { labels, connections, runs: HashMap::new(), perf: HashMap::new() }
    }

    pub fn add(&mut self, w: Workload, server: usize, f: Figures) {
        self.runs.entry((w, server)).or_default().push(f);
    }

    pub fn add_perf(&mut self, w: Workload, server: usize, syscalls: f64, switches: f64) {
        self.perf.insert((w, server), (syscalls, switches));
    }

    /// The median of `pick` over the runs of `w` on `server`, with the runs' minimum and maximum.
    fn median(&self, w: Workload, server: usize, pick: impl Fn(&Figures) -> Option<f64>) -> Option<Spread> {
        let mut v: Vec<f64> = self.runs.get(&(w, server))?.iter().filter_map(pick).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1] })
    }

    /// The servers of the main columns: all but the log-level runs.
    fn columns(&self) -> Vec<usize> {
        (0..self.labels.len()).filter(|&i| !self.labels[i].ends_with(LOG_INFO)).collect()
    }

    pub fn print(&self, rounds: usize) {
        let cols = self.columns();
        let Some(&base) = cols.first() else { return };
        println!();
        println!("Medians of {rounds} interleaved rounds, {}; ratios against {}:", today(), self.labels[base]);
        println!();
        let header: Vec<&str> = cols.iter().map(|&i| self.labels[i].as_str()).collect();
        println!("| workload | {} |", header.join(" | "));
        println!("|---{}|", "|---".repeat(cols.len()));
        let c = self.connections;
        for (w, label) in [
            (Workload::Persistent, format!("{c} persistent connections, random GET")),
            (Workload::Fresh, format!("a fresh TCP connection per GET ({c} at once)")),
        ] {
            let cells: Vec<String> = cols.iter().map(|&i| self.rate_cell(w, i, base)).collect();
            println!("| {label} | {} |", cells.join(" | "));
        }
        let p50: Vec<String> = cols
            .iter()
            .map(|&i| self.median(Workload::Latency, i, |f| f.p50_us).map_or("-".into(), |s| fmt_us(s.median)))
            .collect();
        println!("| 1 connection, p50 latency | {} |", p50.join(" | "));
        let syscalls: Vec<String> = cols
            .iter()
            .map(|&i| self.perf.get(&(Workload::Persistent, i)).map_or("-".into(), |p| format!("{:.1}", p.0)))
            .collect();
        println!("| syscalls per GET, persistent | {} |", syscalls.join(" | "));
        let switches: Vec<String> = cols.iter().map(|&i| self.switches_cell(i)).collect();
        println!("| context switches per GET, persistent | {} |", switches.join(" | "));
        let segments: Vec<String> = cols
            .iter()
            .map(|&i| {
                let s = |w| self.median(w, i, |f| f.segments).map_or("-".into(), |s| format!("{:.1}", s.median));
                format!("{} / {}", s(Workload::Persistent), s(Workload::Fresh))
            })
            .collect();
        println!("| TCP segments per GET, persistent / fresh | {} |", segments.join(" | "));
        println!();
        self.print_log_cost();
        self.print_figures(rounds);
        println!();
        println!(
            "CPU is the server's (utime+stime from /proc/PID/stat, with nginx's workers), per reply in the window. \
             Syscalls and context switches: one `perf stat` pass per server when shown (else context switches from \
             /proc, a lower bound marked ≥ if threads exited). TCP segments: /proc/net/snmp OutSegs, both directions, \
             all traffic of this network namespace."
        );
    }

    fn rate_cell(&self, w: Workload, i: usize, base: usize) -> String {
        let (Some(rate), cpu) = (self.median(w, i, |f| Some(f.rate)), self.median(w, i, |f| f.cpu_us)) else {
            return "-".into();
        };
        if i == base {
            let cpu = cpu.map_or("-".into(), |c| fmt_us(c.median));
            return format!("{:.1}k req/s, {cpu} CPU/req", rate.median / 1e3);
        }
        let base_rate = self.median(w, base, |f| Some(f.rate));
        let base_cpu = self.median(w, base, |f| f.cpu_us);
        let ratio = |a: Option<Spread>, b: Option<Spread>| match (a, b) {
            (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}×", a.median / b.median),
            _ => "-".into(),
        };
        format!("{} rate, {} CPU/req", ratio(Some(rate), base_rate), ratio(cpu, base_cpu))
    }

    fn switches_cell(&self, i: usize) -> String {
        if let Some(p) = self.perf.get(&(Workload::Persistent, i)) {
            return format!("{:.2}", p.1);
        }
        let gone = self.runs.get(&(Workload::Persistent, i)).is_some_and(|r| r.iter().any(|f| f.threads_gone));
        self.median(Workload::Persistent, i, |f| f.switches)
            .map_or("-".into(), |s| format!("{}{:.2}", if gone { "≥ " } else { "" }, s.median))
    }

    fn print_log_cost(&self) {
        let mut parts = Vec::new();
        for (i, label) in self.labels.iter().enumerate() {
            let Some(peer_label) = label.strip_suffix(LOG_INFO) else { continue };
            let Some(peer) = self.labels.iter().position(|l| l == peer_label) else { continue };
            let w = Workload::Persistent;
            let (Some(rate), Some(peer_rate)) =
                (self.median(w, i, |f| Some(f.rate)), self.median(w, peer, |f| Some(f.rate)))
            else {
                continue;
            };
            let cpu = match (self.median(w, i, |f| f.cpu_us), self.median(w, peer, |f| f.cpu_us)) {
                (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}× CPU/req", a.median / b.median),
                _ => "CPU -".into(),
            };
            parts.push(format!("{peer_label} {:.2}× rate, {cpu}", rate.median / peer_rate.median));
        }
        if !parts.is_empty() {
            println!(
                "Logging at --log-level info instead of warn (to a file), {} persistent connections: {}.",
                self.connections,
                parts.join("; ")
            );
            println!();
        }
    }

    fn print_figures(&self, rounds: usize) {
        println!("Figures, median (min–max) of {rounds} rounds:");
        println!();
        println!("| workload | server | req/s | server CPU/req | p50 | p99 | client CPU/req |");
        println!("|---|---|---|---|---|---|---|");
        for w in Workload::ALL {
            for (i, label) in self.labels.iter().enumerate() {
                if !self.runs.contains_key(&(w, i)) {
                    continue;
                }
                let us = |s: Option<Spread>| {
                    s.map_or("-".into(), |s| format!("{} ({}–{})", fmt_us(s.median), fmt_us(s.min), fmt_us(s.max)))
                };
                let rate = self
                    .median(w, i, |f| Some(f.rate))
                    .map_or("-".into(), |s| format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max));
                println!(
                    "| {w:?} | {label} | {rate} | {} | {} | {} | {} |",
                    us(self.median(w, i, |f| f.cpu_us)),
                    us(self.median(w, i, |f| f.p50_us)),
                    us(self.median(w, i, |f| f.p99_us)),
                    self.median(w, i, |f| f.client_cpu_us).map_or("-".into(), |s| fmt_us(s.median)),
                );
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn medians_and_ratios() {
        let f = |rate: f64, cpu: f64| Figures {
            rate,
            cpu_us: Some(cpu),
            client_cpu_us: None,
            p50_us: Some(30.0),
            p99_us: None,
            switches: None,
            threads_gone: false,
            segments: None,
        };
        let mut r = Results::new(vec!["nginx".into(), "ferryd blocking".into()], 64);
        for (rate, cpu) in [(100.0, 10.0), (90.0, 12.0), (300.0, 11.0)] {
            r.add(Workload::Persistent, 0, f(rate, cpu));
        }
        for (rate, cpu) in [(50.0, 22.0), (40.0, 20.0)] {
            r.add(Workload::Persistent, 1, f(rate, cpu));
        }
        assert_eq!(r.median(Workload::Persistent, 0, |f| Some(f.rate)).unwrap().median, 100.0);
        assert_eq!(r.median(Workload::Persistent, 1, |f| Some(f.rate)).unwrap().median, 45.0);
        assert_eq!(r.rate_cell(Workload::Persistent, 0, 0), "0.1k req/s, 11.0 µs CPU/req");
        assert_eq!(r.rate_cell(Workload::Persistent, 1, 0), "0.45× rate, 1.91× CPU/req");
        assert_eq!(r.rate_cell(Workload::Fresh, 1, 0), "-");
    }
}
