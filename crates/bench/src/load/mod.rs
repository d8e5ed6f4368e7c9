//! `ferry-bench load`: a load generator that speaks Ferry or plain HTTP/1.1 GET with one client
//! loop, so that a Ferry server and a web server serving the same files are measured alike.
//!
//! - [`files`]: the files asked for and what each reply must carry.
//! - [`wire`], [`ferry_wire`], [`http_wire`]: pre-encoded requests and reply-head parsers.
//! - [`conn`]: one connection's client loop; [`driver`]: threads, epoll and the window.
//! - [`procfs`], [`perf`]: what the window cost the server; [`report`]: the figures.
//!
//! Every reply is verified (`--verify`); every connection is to a loopback address; a run lasts
//! `--warmup` plus `--seconds`.

pub mod conn;
pub mod driver;
pub mod ferry_wire;
pub mod files;
pub mod http_wire;
pub mod perf;
pub mod procfs;
pub mod report;
pub mod tally;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ferryd::{ferryd_path, raise_fd_limit, Ferryd};
use driver::{NoWindow, Plan};
use files::FileSet;
use perf::{PerfCounts, PerfStat};
use procfs::Meter;
use report::Measured;
use wire::{Mode, Protocol, Script, Verify};

/// Connection caps given to a ferryd started for a load, so that neither gets in its way
/// (`--extra` may override them).
pub const FERRYD_CAP: &str = "4096";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Protocol::Ferry)]
    protocol: Protocol,
    #[arg(long, value_enum, default_value_t = Mode::Persistent)]
    mode: Mode,
    /// Requests in flight per persistent connection: above 1, requests are pipelined.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Connections at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Seconds measured.
    #[arg(short = 't', long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of load before the measured window (verified, not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Client threads the connections are spread over, each an epoll loop.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// What is checked of every reply: `data` hashes it (Ferry: against the digest announced,
    /// which must be the file's; HTTP: against the file's digest); `announced` checks only
    /// the size and digest the head announces; `none` only the framing.
    #[arg(long, value_enum, default_value_t = Verify::Data)]
    verify: Verify,
    /// A server already running, on a loopback address; needs --dir.
    #[arg(long, requires = "dir")]
    addr: Option<SocketAddr>,
    /// The directory the server serves: the names asked for and their digests are read from
    /// it. Without --addr, the directory the ferryd started here serves [default: a temporary
    /// one holding --files files of --size random bytes].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Files to ask for: created, or the first of --dir in name order.
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// Size of each file created, in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// A server process whose CPU time and context switches are measured, with its
    /// descendants (repeat for several) [default: the ferryd started here].
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Engine of the ferryd started when --addr is not given.
    #[arg(long, default_value = "blocking")]
    engine: String,
    /// The ferryd binary [default: next to this one].
    #[arg(long)]
    ferryd: Option<PathBuf>,
    /// A flag for the ferryd started here (repeat for several), e.g. `--extra=--log-level=info`.
    #[arg(long, allow_hyphen_values = true)]
    extra: Vec<String>,
    /// Then count the server's system calls and context switches with `perf stat`, in a second
    /// pass of the same load (the counting slows every system call a little).
    #[arg(long)]
    syscalls: bool,
    /// Do not GET every file once before the load.
    #[arg(long)]
    no_prime: bool,
    /// Seed of the random names.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let stop = crate::interrupt::flag()?;
    if args.protocol == Protocol::Http && args.mode == Mode::Legacy {
        bail!("the legacy mode is Ferry's (PROTOCOL.md § 15)");
    }
    if args.connections > 200 {
        raise_fd_limit()?;
    }
    let temp = tempfile::tempdir()?;
    let files = Arc::new(match &args.dir {
        Some(dir) => FileSet::scan(dir, args.files)?,
        None if args.addr.is_some() => unreachable!("clap requires --dir with --addr"),
        None => FileSet::create(temp.path(), args.files, args.size, args.seed)?,
    });
    let root = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    // Held until the end: dropping it kills ferryd.
    let mut _ferryd = None;
    let (addr, mut pids) = match args.addr {
        Some(addr) => (addr, args.server_pids.clone()),
        None if args.protocol == Protocol::Http => {
            bail!("HTTP needs a running server: give --addr and --dir (`ferry-bench vs-nginx` starts nginx)")
        }
        None => {
            let server = start_ferryd(&ferryd_path(args.ferryd.clone())?, &root, &args.engine, &args.extra)?;
            let started = (server.addr, vec![server.pid()]);
            _ferryd = Some(server);
            started
        }
    };
    if !args.server_pids.is_empty() {
        pids = args.server_pids.clone();
    }
    if !args.no_prime {
        prime(addr, args.protocol, &files, &stop)?;
    }
    let plan = Plan {
        addr,
        script: Arc::new(Script::new(args.protocol, args.mode, &files)),
        files,
        connections: args.connections,
        depth: args.depth,
        threads: args.threads,
        verify: args.verify,
        warmup: secs(args.warmup)?,
        duration: secs(args.seconds)?,
        each_once: false,
        seed: args.seed,
    };
    if pids.is_empty() {
        println!("no --server-pid: the server's CPU time is not measured");
    }
    let mut m = measure(&plan, &pids, &stop)?;
    report::print(&plan, &mut m);
    if m.outcome.tally.failures > 0 {
        bail!("{} replies or connections failed", m.outcome.tally.failures);
    }
    if args.syscalls {
        let (counts, replies) = count_syscalls(&plan, &pids, temp.path(), &stop)?;
        report::print_perf(counts, replies);
    }
    Ok(())
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{s} is not a number of seconds"))
}

/// Starts a ferryd of `engine` serving `root`, with caps out of the way and `extra` flags.
///
/// # Errors
/// ferryd cannot be started.
pub fn start_ferryd(bin: &Path, root: &Path, engine: &str, extra: &[String]) -> Result<Ferryd> {
    let defaults = [
        ("--engine", engine.to_owned()),
        ("--max-clients", FERRYD_CAP.to_owned()),
        ("--max-per-ip", FERRYD_CAP.to_owned()),
    ];
    Ferryd::start_args(bin, root, &defaults, extra)
}

/// Runs `plan`, measuring what its window costs `pids` (and their descendants).
///
/// # Errors
/// The load could not run or was interrupted; failed replies are counted, not errors.
pub fn measure(plan: &Plan, pids: &[u32], stop: &AtomicBool) -> Result<Measured> {
    let mut meter = Meter::new(pids.to_vec());
    let outcome = driver::run(plan, &mut meter, stop)?;
    Ok(Measured { outcome, usage: meter.usage.filter(|_| !pids.is_empty()) })
}

/// Runs `plan` again with `perf stat` counting on `pids`; returns the counts and the replies
/// they cover (warm-up included: perf counts from before the first connection).
///
/// # Errors
/// perf failed, or replies failed.
pub fn count_syscalls(plan: &Plan, pids: &[u32], scratch: &Path, stop: &AtomicBool) -> Result<(PerfCounts, u64)> {
    if pids.is_empty() {
        bail!("counting system calls needs the server's PID");
    }
    if !perf::available() {
        bail!("`perf stat` cannot count system calls here (Debian: apt-get install linux-perf; root or perf_event_paranoid <= 1)");
    }
    let perf = PerfStat::attach(&procfs::with_descendants(pids), scratch)?;
    let outcome = driver::run(plan, &mut NoWindow, stop)?;
    let counts = perf.finish()?;
    if outcome.tally.failures > 0 {
        bail!("the perf pass had {} failures: {:?}", outcome.tally.failures, outcome.tally.first_failures);
    }
    Ok((counts, outcome.tally.all_replies()))
}

/// GETs every file once over one connection, pipelined, verifying each: the server has read
/// and hashed them all before anything is measured.
///
/// # Errors
/// A reply failed or is missing.
pub fn prime(addr: SocketAddr, protocol: Protocol, files: &Arc<FileSet>, stop: &AtomicBool) -> Result<()> {
    let plan = Plan {
        addr,
        script: Arc::new(Script::new(protocol, Mode::Persistent, files)),
        files: Arc::clone(files),
        connections: 1,
        depth: 8,
        threads: 1,
        verify: Verify::Data,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(120),
        each_once: true,
        seed: 0,
    };
    let t = driver::run(&plan, &mut NoWindow, stop)?.tally;
    if t.failures > 0 || t.replies != files.len() as u64 {
        bail!("priming {addr}: {} of {} files received, failures: {:?}", t.replies, files.len(), t.first_failures);
    }
    Ok(())
}
