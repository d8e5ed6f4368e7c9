//! System calls and context switches of the server, counted by `perf stat` attached to it.
//!
//! `/proc` has no syscall counter, so this needs `perf` (Debian: `linux-perf`) and the right to
//! trace the server (root, or `perf_event_paranoid` ≤ 1). The `raw_syscalls:sys_enter`
//! tracepoint costs a little on every system call, so a counted run is a separate pass, never
//! one whose rate or CPU time is reported. Counters are per thread and inherited, so threads the
//! server starts after attaching (a thread per connection) are counted too, even once they exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long `perf` is given to attach before the load starts. It says nothing when it is ready;
/// attaching to a few processes takes well under this.
pub const ATTACH: Duration = Duration::from_millis(500);

/// A running `perf stat`, stopped and reaped on drop.
pub struct PerfStat {
    child: Option<Child>,
    out: PathBuf,
}

/// What `perf stat` counted.
#[derive(Debug, Clone, Copy)]
pub struct PerfCounts {
    pub syscalls: u64,
    pub switches: u64,
}

/// Whether `perf stat` can count system calls here.
pub fn available() -> bool {
    Command::new("perf")
        .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stderr).contains("raw_syscalls:sys_enter"))
}

impl PerfStat {
    /// Attaches to `pids` (and their threads) and waits [`ATTACH`]; the output goes to a file in
    /// `dir`.
    ///
    /// # Errors
    /// `perf` cannot be started.
    pub fn attach(pids: &[u32], dir: &Path) -> Result<Self> {
        let out = dir.join(format!("perf-{}.csv", pids.first().copied().unwrap_or(0)));
        let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches", "-p", &list, "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf")?;
        std::thread::sleep(ATTACH);
        Ok(Self { child: Some(child), out })
    }

    /// Stops counting (SIGINT, as at a terminal) and reads the counts.
    ///
    /// # Errors
    /// `perf` failed or its output lacks a count.
    pub fn finish(mut self) -> Result<PerfCounts> {
        let mut child = self.child.take().context("perf already finished")?;
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT)?;
        child.wait()?;
        let text = std::fs::read_to_string(&self.out).context("reading perf's output")?;
        let count = |event: &str| -> Result<u64> {
            // CSV: count, unit, event, ...; a count may read "<not counted>".
            let line = text
                .lines()
                .find(|l| l.split(',').nth(2) == Some(event))
                .with_context(|| format!("perf counted no {event}: {text}"))?;
            match line.split(',').next().unwrap_or_default().parse() {
                Ok(n) => Ok(n),
                Err(_) => bail!("perf could not count {event}: {line}"),
            }
        };
        Ok(PerfCounts { syscalls: count("raw_syscalls:sys_enter")?, switches: count("context-switches")? })
    }
}

impl Drop for PerfStat {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
