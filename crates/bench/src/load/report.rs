//! A load's figures, and how they are printed.

use std::time::Duration;

use super::driver::{Outcome, Plan};
use super::perf::PerfCounts;
use super::procfs::Usage;
use super::wire::{Mode, Protocol, Verify};

/// A load's outcome with what the window cost.
#[derive(Debug)]
pub struct Measured {
    pub outcome: Outcome,
    pub usage: Option<Usage>,
}

impl Measured {
    /// Replies per second in the window.
    pub fn rate(&self) -> f64 {
        self.outcome.tally.replies as f64 / self.outcome.window.as_secs_f64()
    }

    pub fn p50(&mut self) -> Option<Duration> {
        self.outcome.tally.percentile(0.5)
    }

    pub fn p99(&mut self) -> Option<Duration> {
        self.outcome.tally.percentile(0.99)
    }

    /// Server CPU time per reply.
    pub fn cpu_per_reply(&self) -> Option<Duration> {
        let u = self.usage?;
        (self.outcome.tally.replies > 0).then(|| u.server_cpu / self.outcome.tally.replies as u32)
    }

    /// Server context switches per reply (a lower bound if threads exited).
    pub fn switches_per_reply(&self) -> Option<f64> {
        Some(self.usage?.switches as f64 / self.replies_f()?)
    }

    /// TCP segments (both directions, whole namespace) per reply.
    pub fn segments_per_reply(&self) -> Option<f64> {
        Some(self.usage?.segments? as f64 / self.replies_f()?)
    }

    fn replies_f(&self) -> Option<f64> {
        let n = self.outcome.tally.replies;
        (n > 0).then_some(n as f64)
    }
}

/// A short description of a plan: `ferry persistent, 64 connections, depth 1, 1 thread`.
pub fn describe(plan: &Plan) -> String {
    let protocol = match plan.script.protocol {
        Protocol::Ferry => "ferry",
        Protocol::Http => "http",
    };
    let mode = match plan.script.mode {
        Mode::Persistent if plan.depth > 1 => format!("pipelined depth {}", plan.depth),
        Mode::Persistent => "persistent".to_owned(),
        Mode::Fresh => "a connection per request".to_owned(),
        Mode::Legacy => "legacy, a connection per request".to_owned(),
    };
    let s = |n: usize| if n == 1 { "" } else { "s" };
    let threads = plan.threads.clamp(1, plan.connections);
    format!(
        "{protocol} {mode}, {} connection{}, {threads} client thread{}, {} files",
        plan.connections,
        s(plan.connections),
        s(threads),
        plan.files.len()
    )
}

pub fn print(plan: &Plan, m: &mut Measured) {
    let t = &m.outcome.tally;
    let verified = match plan.verify {
        Verify::Data if plan.script.protocol == Protocol::Ferry => "data MD5 = announced digest = file's",
        Verify::Data => "data MD5 = file's",
        Verify::Content if plan.script.protocol == Protocol::Ferry => "data = file's bytes, announced digest = file's",
        Verify::Content => "data = file's bytes",
        Verify::Announced => "announced size and digest only",
        Verify::None => "not verified",
    };
    println!("load: {}", describe(plan));
    println!(
        "  window {:.2} s after {:.2} s warm-up: {} replies ({} in warm-up), {} verified ({verified}), {} failures",
        m.outcome.window.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        t.replies,
        t.warmup_replies,
        t.verified,
        t.failures
    );
    for f in &t.first_failures {
        println!("  failure: {f}");
    }
    if t.server_closes > 0 {
        println!("  the server closed {} connections between replies (pipelined requests dropped)", t.server_closes);
    }
    let (p50, p99) = (m.p50(), m.p99());
    println!("  rate {:.0} req/s; latency p50 {}, p99 {}", m.rate(), fmt_latency(p50), fmt_latency(p99));
    if let Some(u) = m.usage {
        let per = |d: Duration| fmt_us(d.as_secs_f64() * 1e6 / m.outcome.tally.replies.max(1) as f64);
        println!(
            "  server CPU {:.2} s over {:.2} s: {} per request; client CPU {} per request",
            u.server_cpu.as_secs_f64(),
            u.wall.as_secs_f64(),
            m.cpu_per_reply().map_or("-".to_owned(), |d| fmt_us(d.as_secs_f64() * 1e6)),
            per(u.client_cpu),
        );
        let lower =
            if u.threads_gone > 0 { format!(" (at least: {} threads exited)", u.threads_gone) } else { String::new() };
        println!("  server context switches {:.2} per request{lower}", m.switches_per_reply().unwrap_or(f64::NAN));
        if let Some(s) = m.segments_per_reply() {
            println!("  TCP segments {s:.2} per request (both directions, all of this network namespace)");
        }
    }
}

pub fn print_perf(counts: PerfCounts, replies: u64) {
    let per = |n: u64| n as f64 / replies.max(1) as f64;
    println!(
        "  perf stat pass ({replies} replies, warm-up included): {:.2} syscalls and {:.2} context switches per request",
        per(counts.syscalls),
        per(counts.switches)
    );
}

/// Microseconds: one decimal below 100 µs, whole ones below 10 ms, then milliseconds.
pub fn fmt_us(us: f64) -> String {
    if us < 100.0 {
        format!("{us:.1} µs")
    } else if us < 10_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

pub fn fmt_latency(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| fmt_us(d.as_secs_f64() * 1e6))
}
