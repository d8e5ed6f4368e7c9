//! A `ferryd` child process for measurements, and the process limits it needs.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(root)
            .args(["--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
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
}

impl Drop for Ferryd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ferryd binary: `explicit`, or the one next to this binary.
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
