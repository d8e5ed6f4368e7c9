//! Runs the client under test: in a process group of its own, so that at the hard limit the
//! client and everything it started (a shim's interpreter, its children) are killed together,
//! and no process outlives its case.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

/// The most of each output stream kept.
const OUTPUT_MAX: usize = 256 * 1024;

/// How a run of the client ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit status; `None` when it was killed at the hard limit or ended by a signal.
    pub code: Option<i32>,
    /// Killed at the hard limit.
    pub killed: bool,
    pub elapsed: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `argv` in `cwd` with `env` added, and kills it (its whole process group) at `limit`.
///
/// # Errors
/// The program cannot be started.
pub fn run(argv: &[String], cwd: &Path, env: &[(&str, String)], limit: Duration) -> std::io::Result<Finished> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let group = Pid::from_child(&child);
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut r) = r {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if kept.len() < OUTPUT_MAX {
                        kept.extend_from_slice(&buf[..n.min(OUTPUT_MAX - kept.len())]);
                    }
                }
            }
            kept
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= limit {
            killed = true;
            let _ = kill_process_group(group, Signal::KILL);
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    // Whatever the client left running in its group goes too.
    let _ = kill_process_group(group, Signal::KILL);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Finished { code: if killed { None } else { status.code() }, killed, elapsed, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        ["sh", "-c", script].into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn a_client_that_hangs_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        // The shell starts a grandchild that would hold the output pipe for a minute.
        let f = run(&sh("sleep 60 & echo $!; wait"), dir.path(), &[], Duration::from_millis(300)).unwrap();
        assert!(f.killed && f.code.is_none(), "{f:?}");
        assert!(f.elapsed < Duration::from_secs(10), "{f:?}");
        let pid: i32 = String::from_utf8_lossy(&f.stdout).trim().parse().expect("the grandchild's pid");
        // Gone, or a zombie waiting for its reaper: either way no longer running (a SIGKILL takes
        // effect a moment after it is sent).
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).unwrap_or("gone").to_owned()
        };
        let until = Instant::now() + Duration::from_secs(5);
        while !matches!(state().as_str(), "gone" | "Z" | "X") && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(state().as_str(), "gone" | "Z" | "X"), "the grandchild {pid} is still {}", state());
    }

    #[test]
    fn the_exit_status_and_output_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let env = [("GREETING", "hi".to_owned())];
        let f = run(&sh("echo $GREETING; pwd >&2; exit 3"), dir.path(), &env, Duration::from_secs(10)).unwrap();
        assert_eq!((f.code, f.killed), (Some(3), false));
        assert_eq!(f.stdout, b"hi\n");
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(String::from_utf8_lossy(&f.stderr).trim(), cwd.to_string_lossy());
    }
}
