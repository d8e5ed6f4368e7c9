//! A `ferryd` child process for measurements, and the process limits it needs.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A `ferryd` child process, killed and reaped on drop.
pub struct Ferryd {
    child: Child,
    pub addr: SocketAddr,
}

impl Ferryd {
    pub fn start(bin: &Path, root: &Path) -> Result<Self> {
        Self::start_with(bin, root, &[])
    }

    pub fn start_with(bin: &Path, root: &Path, extra: &[&str]) -> Result<Self> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::start_args(bin, root, &[], &extra)
    }

    /// Starts ferryd on a free loopback port serving `root`, with `defaults` (flag, value) and
    /// then `extra` on its command line. A default whose flag also appears in `extra` is left
    /// out, so a caller can override any of them: ferryd refuses a flag given twice, and its
    /// flags may change under us. `--log-level warn` is such a default too.
    pub fn start_args(bin: &Path, root: &Path, defaults: &[(&str, String)], extra: &[String]) -> Result<Self> {
        Self::start_logging_to(bin, root, defaults, extra, Stdio::inherit())
    }

    /// [`Self::start_args`] with ferryd's log (its stderr) sent to `log`.
    pub fn start_logging_to(
        bin: &Path,
        root: &Path,
        defaults: &[(&str, String)],
        extra: &[String],
        log: Stdio,
    ) -> Result<Self> {
        let named_in_extra = |flag: &str| {
            extra.iter().any(|a| a == flag || a.strip_prefix(flag).is_some_and(|rest| rest.starts_with('=')))
        };
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0", "--root"]).arg(root);
        let log_level = ("--log-level", "warn".to_owned());
        for (flag, value) in std::iter::once(&log_level).chain(defaults) {
            if !named_in_extra(flag) {
                cmd.args([flag, value.as_str()]);
            }
        }
        cmd.args(extra).stdout(Stdio::piped()).stderr(log);
        // A bench killed outright (SIGKILL, an abort) runs no `Drop`: the kernel then kills
        // ferryd, so that it never outlives the bench. The signal follows the death of the
        // spawning thread, and every measurement starts ferryd from the main thread.
        // SAFETY: the closure runs in the child between fork and exec; prctl(PR_SET_PDEATHSIG)
        // is async-signal-safe and neither allocates nor touches the parent's memory.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut out = child.stdout.take().context("no stdout")?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line)?;
        let addr = line.strip_prefix("listening on ").context("no `listening on` line")?.parse()?;
        Ok(Self { child, addr })
    }

    /// Resident set size now, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended (it is reaped then).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Asks ferryd to stop with SIGTERM, as an operator would, and waits for it; after `patience`
    /// it is killed. Returns how it ended, how long that took, and whether it had to be killed.
    pub fn stop(mut self, patience: Duration) -> Result<(ExitStatus, Duration, bool)> {
        let t = Instant::now();
        if let Some(status) = self.child.try_wait()? {
            return Ok((status, Duration::ZERO, false));
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        while t.elapsed() < patience {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, t.elapsed(), false));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok((self.child.wait()?, t.elapsed(), true))
    }
}

/// The figures of `/proc/PID/status` the hostile loads watch.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStatus {
    /// `VmRSS`: resident memory now, in KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the kernel's own high-water mark of resident memory, in KiB. It catches a peak
    /// that falls between two samples.
    pub hwm_kib: u64,
    /// `Threads`: the blocking engine's thread-per-client shows here.
    pub threads: u64,
}

impl ProcStatus {
    /// Reads `/proc/PID/status`. Fails once the process has exited (a zombie has no `VmRSS`).
    pub fn read(pid: u32) -> Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Result<u64> {
            let line = text.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
            Ok(line[name.len()..].split_whitespace().next().with_context(|| format!("bad {name}"))?.parse()?)
        };
        Ok(Self { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")?, threads: field("Threads:")? })
    }
}

impl Drop for Ferryd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ferryd binary: the one given, or the one next to this binary.
pub fn ferryd_path(ferryd: Option<PathBuf>) -> Result<PathBuf> {
    Ok(match ferryd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("ferryd"),
    })
}

/// Raises the soft open-file limit to the hard one (inherited by a ferryd started later);
/// returns the new limit.
pub fn raise_fd_limit() -> Result<u64> {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = lim.maximum.unwrap_or(1 << 20);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit { current: Some(hard), maximum: lim.maximum },
    )?;
    Ok(hard)
}
