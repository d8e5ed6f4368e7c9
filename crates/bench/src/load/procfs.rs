//! What a window cost, from `/proc`: the server's CPU time and context switches, the client's
//! own CPU time, and the TCP segments sent.
//!
//! - CPU: `utime + stime` of `/proc/PID/stat`, which include the process's threads that have
//!   exited. Resolution: one clock tick (10 ms), under 1% of a few seconds' load.
//! - Context switches: `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` of each thread in
//!   `/proc/PID/task/*/status`. Threads that exit during the window take theirs with them (the
//!   blocking engine's per-connection threads, with a connection per request): the figure is
//!   then a lower bound, and says so.
//! - Segments: `OutSegs` of `/proc/net/snmp`, for the whole network namespace; on loopback this
//!   counts both directions of every connection, and any other traffic of the namespace too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::driver::Window;

/// The server processes a [`Meter`] watches: the given PIDs and all their descendants (nginx's
/// workers are its master's children).
pub fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = pids.to_vec();
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid).ok()?.ppid)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !all.contains(&pid) {
                all.push(pid);
            }
        }
        i += 1;
    }
    all
}

struct StatFields {
    ppid: u32,
    /// `utime + stime`, in clock ticks.
    cpu_ticks: u64,
}

/// Fields of `/proc/PID/stat`. The command name may hold spaces and parentheses: fields are
/// counted from the last `)`.
fn stat_fields(pid: u32) -> Result<StatFields> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &text[text.rfind(')').context("no ) in stat")? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the name: state (field 3), ppid (4), ... utime (14), stime (15).
    let num = |i: usize| -> Result<u64> { Ok(f.get(i).context("short stat")?.parse()?) };
    Ok(StatFields { ppid: num(1)? as u32, cpu_ticks: num(11)? + num(12)? })
}

fn self_cpu_ticks() -> Result<u64> {
    Ok(stat_fields(std::process::id())?.cpu_ticks)
}

/// Context switches per thread of `pid`, keyed by thread id.
fn thread_switches(pid: u32, into: &mut HashMap<u32, u64>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let field = |name: &str| -> u64 {
            status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
        };
        into.insert(tid, field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:"));
    }
}

/// `OutSegs` of `/proc/net/snmp`: two `Tcp:` lines, names then values.
pub fn tcp_out_segments() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names.split_whitespace().position(|n| n == "OutSegs")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

struct Sample {
    when: Instant,
    server_ticks: u64,
    client_ticks: u64,
    switches: HashMap<u32, u64>,
    segments: Option<u64>,
}

impl Sample {
    fn take(pids: &[u32]) -> Result<Self> {
        let mut server_ticks = 0;
        let mut switches = HashMap::new();
        for &pid in pids {
            server_ticks += stat_fields(pid).with_context(|| format!("server process {pid} is gone"))?.cpu_ticks;
            thread_switches(pid, &mut switches);
        }
        Ok(Self {
            when: Instant::now(),
            server_ticks,
            client_ticks: self_cpu_ticks()?,
            switches,
            segments: tcp_out_segments(),
        })
    }
}

/// What the window cost.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// The window as the samples saw it.
    pub wall: Duration,
    /// Server CPU time (user and system) over the window.
    pub server_cpu: Duration,
    /// This process's CPU time over the window: whether the client kept up.
    pub client_cpu: Duration,
    /// Server context switches, voluntary and not.
    pub switches: u64,
    /// Server threads that exited during the window, whose switches are missing.
    pub threads_gone: usize,
    /// TCP segments sent in the network namespace.
    pub segments: Option<u64>,
}

/// A [`Window`] that samples `/proc` at the window's edges.
pub struct Meter {
    pids: Vec<u32>,
    begin: Option<Sample>,
    pub usage: Option<Usage>,
}

impl Meter {
    /// Watches `pids` and, from the window's start, their descendants. No PIDs: only the
    /// client and the segments are measured.
    pub fn new(pids: Vec<u32>) -> Self {
        Self { pids, begin: None, usage: None }
    }
}

impl Window for Meter {
    fn begin(&mut self) -> Result<()> {
        self.pids = with_descendants(&self.pids);
        self.begin = Some(Sample::take(&self.pids)?);
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        let Some(b) = self.begin.take() else { bail!("a window ended that never began") };
        let e = Sample::take(&self.pids)?;
        let tick = Duration::from_secs(1) / rustix::param::clock_ticks_per_second() as u32;
        let mut switches = 0;
        for (tid, n) in &e.switches {
            switches += n - b.switches.get(tid).copied().unwrap_or(0).min(*n);
        }
        self.usage = Some(Usage {
            wall: e.when - b.when,
            server_cpu: tick * (e.server_ticks - b.server_ticks) as u32,
            client_cpu: tick * (e.client_ticks - b.client_ticks) as u32,
            switches,
            threads_gone: b.switches.keys().filter(|t| !e.switches.contains_key(t)).count(),
            segments: e.segments.zip(b.segments).map(|(e, b)| e - b),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(stat_fields(me).is_ok());
        let mut switches = HashMap::new();
        thread_switches(me, &mut switches);
        assert!(switches.contains_key(&me));
        assert!(with_descendants(&[me]).contains(&me));
        assert!(tcp_out_segments().is_some());
        let mut m = Meter::new(vec![me]);
        m.begin().unwrap();
        m.end().unwrap();
        assert!(m.usage.is_some());
    }
}
