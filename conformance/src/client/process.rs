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
