//! `hostile`: what one hostile load does to a `ferryd` process, engine by engine.
//!
//! Each run starts its own ferryd (the engine under test, a fresh temporary root) and records its
//! resident memory right after start, with no load: the baseline. Then, for `--seconds`, the load
//! runs while
//! - the server's peak resident memory (`VmHWM` of `/proc/PID/status`, the kernel's own
//!   high-water mark) and peak thread count (`Threads`, sampled every 50 ms) are taken;
//! - a fresh client connects every 500 ms, sends its hello and LIST, and times the LIST reply
//!   from the start of its connect (then says BYE); a BUSY answer or any failure is counted;
//! - the server is killed if its resident memory passes `--rss-limit-mib` (default 4096, 0 for
//!   none), so that a vulnerable server cannot take the machine with it.
//!
//! At the end one more fresh client tries, still under load: the server is *alive* if the process
//! is still running and that client got its LIST reply. Then every socket is closed and ferryd
//! gets SIGTERM, and is killed if it has not exited 30 s later (no ferryd outlives the bench:
//! a dropped `Ferryd` kills its process too). A table per engine follows.
//!
//! Each load runs against a server given room for it (`--max-clients` and `--max-per-ip` of
//! N + 16), except `loris-addresses`, which is about the server's default capacity settings.
//! Flags for ferryd go after `--extra` (repeatable, appended to its command line); a flag named
//! there replaces the bench's own value for it (`--log-level warn`, `--engine`, the capacity).
//!
//! # The loads
//!
//! - `pipeline-help`, `pipeline-status`, `pipeline-list`: `--connections` N (500) clients each
//!   send the hello and then `--bytes` (1 MiB) of one-byte requests, HELP (0x07), STATUS (0x06)
//!   or LIST (0x01), and never read. `pipeline-list` first puts `--files` (1000) small files in
//!   the root, so that each LIST reply is large. Every reply is much larger than its request: a
//!   server that reads on regardless holds about `bytes × reply size` per connection. The
//!   clients' sockets have small buffers, so that kernel buffers do not hide what the server
//!   does, and their writes are non-blocking: a connection whose writes make no progress for
//!   2 s is left alone, as the server has stopped reading it, which is what backpressure looks
//!   like from here. Figure: request bytes accepted per connection (median, max), how many
//!   connections sent everything, stalled or were reset, and how many the server dropped. Even
//!   a server that reads nothing accepts about 150 KiB, its receive buffer and this side's send
//!   buffer (a stand-in server that only accepts showed 157 KiB).
//! - `loris`: N clients send the hello, then a STAT head (opcode, a name length of 200, the
//!   name) one byte every `--interval-ms` (1000). Figure: how long the server kept each one it
//!   served open, until EOF or reset (min/median/max; "≥" marks connections still open at the
//!   end, counted with their age).
//! - `stalled-get`: the bench writes a sparse file of `--size-mib` (1024) before the server
//!   starts; one warm-up GET downloads it whole so that its digest is computed and cached (its
//!   time is reported separately). Then N clients each send a GET of it and never read. Figure:
//!   when the server dropped each, judged from the server's end of the connection in
//!   `/proc/net/tcp`, which reading the client's socket cannot show (see [`net::Drops`]).
//! - `loris-addresses`: `loris` from `--addresses` K (4) source addresses 127.0.0.2 to
//!   127.0.0.(1+K), `--connections` (default 16 here) from each, against ferryd's default capacity
//!   settings; the fresh client comes from 127.0.0.(2+K) and must get its hello, not BUSY.
//!
//! # Commands
//!
//! Build with `cargo build --release -p ferry-bench -p ferryd`; the bench finds `ferryd` next to
//! itself (or give `--ferryd PATH`). Both engines run one after the other unless `--engine
//! blocking|async` picks one; `--load` may be repeated, each load with its own server.
//!
//! ```text
//! ferry-bench hostile --load pipeline-help                 # 500 clients × 1 MiB of HELP, 20 s
//! ferry-bench hostile --load pipeline-status
//! ferry-bench hostile --load pipeline-list --files 1000
//! ferry-bench hostile --load loris --interval-ms 1000
//! ferry-bench hostile --load stalled-get --size-mib 1024
//! ferry-bench hostile --load loris-addresses --addresses 4 --connections 16
//! ferry-bench hostile --load loris --extra --head-timeout=5          # a flag for ferryd
//! ferry-bench hostile --load stalled-get --extra --progress-timeout --extra 5
//! ```
//!
//! Against a server without backpressure keep N × `--bytes` small, as each request byte can
//! cost the server a whole reply: HELP's is about 520 bytes, STATUS's and LIST's grow with the
//! connection history and the files. These small runs stay under a gigabyte against such a
//! server, and took about 5 s per load and engine:
//!
//! ```text
//! ferry-bench hostile --load pipeline-help --connections 20 --bytes 65536 --seconds 5
//! ferry-bench hostile --load pipeline-status --connections 5 --bytes 4096 --seconds 5
//! ferry-bench hostile --load pipeline-list --files 100 --connections 5 --bytes 4096 --seconds 5
//! ferry-bench hostile --load loris --connections 20 --seconds 5
//! ferry-bench hostile --load stalled-get --connections 10 --seconds 5
//! ferry-bench hostile --load loris-addresses --seconds 5
//! ```

mod loris;
mod net;
mod pipeline;
mod probe;
mod stalled;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_proto::message::opcode;

use crate::client::download;
use crate::ferryd::{ferryd_path, raise_fd_limit, Ferryd, ProcStatus};
use probe::Probe;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The load to run (repeatable: each gets its own server).
    #[arg(long, value_enum, required = true)]
    load: Vec<Load>,
    /// Engine to test; both, one after the other, if not given.
    #[arg(long, value_enum)]
    engine: Option<Engine>,
    /// Hostile connections (default 500; for loris-addresses, per address, default 16).
    #[arg(long)]
    connections: Option<usize>,
    /// Request bytes each pipelining connection tries to send.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: u64,
    /// Files in the root for pipeline-list.
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// Milliseconds between two bytes of a loris connection.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Size of the stalled-get file in MiB (sparse: no disk space used).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Source addresses of loris-addresses: 127.0.0.2 to 127.0.0.(1+K).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=252))]
    addresses: u8,
    /// Seconds each load runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Kill ferryd if its resident memory passes this many MiB (0: never).
    #[arg(long, default_value_t = 4096)]
    rss_limit_mib: u64,
    /// An argument appended to ferryd's command line (repeatable). A flag named here replaces
    /// the bench's own value for it.
    #[arg(long, allow_hyphen_values = true, value_name = "ARG")]
    extra: Vec<String>,
    /// The ferryd binary (default: next to this one).
    #[arg(long)]
    ferryd: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Load {
    PipelineHelp,
    PipelineStatus,
    PipelineList,
    Loris,
    StalledGet,
    LorisAddresses,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Self::PipelineHelp => "pipeline-help",
            Self::PipelineStatus => "pipeline-status",
            Self::PipelineList => "pipeline-list",
            Self::Loris => "loris",
            Self::StalledGet => "stalled-get",
            Self::LorisAddresses => "loris-addresses",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    Blocking,
    Async,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Self::Blocking => "blocking",
            Self::Async => "async",
        }
    }
}

/// A fresh client's period.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// The server's status is sampled this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How long ferryd may take to exit after SIGTERM (its grace period is 10 s by default).
const STOP_PATIENCE: Duration = Duration::from_secs(30);
/// The stalled-get file's name.
const BIG: &str = "big.bin";

/// Where a load is, shared by its threads.
#[derive(Debug, Default)]
struct Phase {
    /// The load has opened its connections: the measured period starts.
    opened: AtomicBool,
    /// The measured period is over: every thread winds up and the load closes its sockets.
    stop: AtomicBool,
}

impl Phase {
    fn set_opened(&self) {
        self.opened.store(true, Ordering::Relaxed);
    }

    fn is_opened(&self) -> bool {
        self.opened.load(Ordering::Relaxed)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One load's results against one engine.
struct Row {
    load: Load,
    /// Hostile connections attempted.
    connections: usize,
    baseline_kib: u64,
    peak_kib: u64,
    peak_threads: u64,
    alive: String,
    probes: Vec<Probe>,
    figure: String,
}

pub fn run(args: Args) -> Result<()> {
    let bin = ferryd_path(args.ferryd.clone())?;
    let limit = raise_fd_limit()?;
    let most = args.load.iter().map(|&l| total_connections(l, &args)).max().unwrap_or(0);
    if most as u64 + 256 > limit {
        bail!("the file descriptor limit ({limit}) is too low for {most} connections");
    }
    let engines = match args.engine {
        Some(e) => vec![e],
        None => vec![Engine::Blocking, Engine::Async],
    };
    let mut tables = Vec::new();
    for engine in engines {
        let mut rows = Vec::new();
        for &load in &args.load {
            rows.push(run_one(&bin, engine, load, &args)?);
        }
        tables.push((engine, rows));
    }
    for (engine, rows) in &tables {
        print_table(*engine, rows);
    }
    Ok(())
}

/// Connections per source address.
fn connections(load: Load, args: &Args) -> usize {
    args.connections.unwrap_or(if load == Load::LorisAddresses { 16 } else { 500 })
}

fn total_connections(load: Load, args: &Args) -> usize {
    let sources = if load == Load::LorisAddresses { usize::from(args.addresses) } else { 1 };
    connections(load, args) * sources
}

fn run_one(bin: &Path, engine: Engine, load: Load, args: &Args) -> Result<Row> {
    let n = total_connections(load, args);
    println!("\n== {} / {}: {n} connections, {} s", engine.name(), load.name(), args.seconds);
    let dir = tempfile::tempdir()?;
    prepare_root(load, dir.path(), args)?;

    let mut defaults = vec![("--engine", engine.name().to_owned())];
    if load != Load::LorisAddresses {
        let cap = (n + 16).to_string();
        defaults.push(("--max-clients", cap.clone()));
        defaults.push(("--max-per-ip", cap));
    }
    let mut server = Ferryd::start_args(bin, dir.path(), &defaults, &args.extra)?;
    let (addr, pid) = (server.addr, server.pid());
    let baseline = ProcStatus::read(pid)?;
    println!("ferryd pid {pid} at {addr}: baseline RSS {}", fmt_kib(baseline.rss_kib));
    if load == Load::StalledGet {
        let t = Instant::now();
        let got = download(addr, BIG)?;
        println!("warm-up GET of {} MiB (hashed on first GET): {}", got >> 20, fmt_secs(t.elapsed()));
    }

    // The fresh client of loris-addresses comes from an address of its own: the per-address
    // limit is not what it measures.
    let probe_from = (load == Load::LorisAddresses).then(|| source(usize::from(args.addresses) + 1));
    let rss_limit_kib = (args.rss_limit_mib > 0).then_some(args.rss_limit_mib << 10);
    let phase = Phase::default();
    let (figure, probes, peaks, last_probe) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample(pid, rss_limit_kib, &phase));
        let prober = s.spawn(|| probe::probe_every(addr, probe_from, PROBE_EVERY, &phase));
        let loader = s.spawn(|| run_load(load, addr, args, &phase));
        // The measured period starts once the load's connections are open (or after
        // `--seconds` of trying: connects to a wedged server time out one by one); a server
        // that dies or a load that gives up ends it early.
        let over = || sampler.is_finished() || loader.is_finished();
        let seconds = Duration::from_secs(args.seconds);
        let open_by = Instant::now() + seconds;
        while !phase.is_opened() && !over() && Instant::now() < open_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        let until = Instant::now() + seconds;
        while Instant::now() < until && !over() {
            std::thread::sleep(SAMPLE_EVERY);
        }
        let last_probe = probe::probe(addr, probe_from);
        phase.stop();
        let join = |what| move |_| anyhow::anyhow!("the {what} thread panicked");
        Ok::<_, anyhow::Error>((
            loader.join().map_err(join("load"))??,
            prober.join().map_err(join("fresh client"))?,
            sampler.join().map_err(join("sampler"))?,
            last_probe,
        ))
    })?;

    // Alive: still running, and the last fresh client got its LIST reply. The table shows the
    // first word of why not; the line printed here says all of it.
    let exited = server.exited()?;
    let (alive, why) = match (exited, &peaks.killed_at_kib, &last_probe) {
        (_, Some(kib), _) => ("no: killed", format!("killed by the bench at {} resident", fmt_kib(*kib))),
        (Some(status), None, _) => ("no: exited", status.to_string()),
        (None, None, Probe::Answered(_)) => ("yes", "the last fresh client got its LIST reply".to_owned()),
        (None, None, Probe::Busy) => ("no: BUSY", "the last fresh client got BUSY".to_owned()),
        (None, None, Probe::Failed(e)) => ("no: failed", format!("the last fresh client failed: {e}")),
    };
    // Read the high-water mark before the server stops: its exit is not part of the load.
    let peak_kib = ProcStatus::read(pid).map_or(peaks.hwm_kib, |s| s.hwm_kib.max(peaks.hwm_kib));
    println!(
        "peak RSS {} ({:.1}× baseline), peak threads {}, alive: {alive} ({why})",
        fmt_kib(peak_kib),
        peak_kib as f64 / baseline.rss_kib.max(1) as f64,
        peaks.threads
    );
    println!("{figure}");
    let (status, took, killed) = server.stop(STOP_PATIENCE)?;
    if exited.is_none() {
        println!(
            "stopped with SIGTERM: {status} after {}{}",
            fmt_secs(took),
            if killed { " (did not exit in time: killed)" } else { "" }
        );
    }
    Ok(Row {
        load,
        connections: n,
        baseline_kib: baseline.rss_kib,
        peak_kib,
        peak_threads: peaks.threads,
        alive: alive.to_owned(),
        probes,
        figure,
    })
}

/// Puts what the load needs in the root, before the server starts.
fn prepare_root(load: Load, root: &Path, args: &Args) -> Result<()> {
    match load {
        Load::PipelineList => {
            for i in 0..args.files {
                std::fs::write(root.join(format!("file-{i:06}.txt")), format!("file {i}\n"))?;
            }
        }
        Load::StalledGet => {
            let f = std::fs::File::create(root.join(BIG))?;
            f.set_len(args.size_mib << 20).context("making the sparse file")?;
        }
        _ => {}
    }
    Ok(())
}

/// 127.0.0.(1+i): source address `i` of loris-addresses, counting from 1.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + i as u8)
}

fn run_load(load: Load, addr: SocketAddr, args: &Args, phase: &Phase) -> Result<String> {
    let n = connections(load, args);
    let interval = Duration::from_millis(args.interval_ms.max(1));
    Ok(match load {
        Load::PipelineHelp => pipeline::run(addr, n, opcode::HELP, args.bytes, phase),
        Load::PipelineStatus => pipeline::run(addr, n, opcode::STATUS, args.bytes, phase),
        Load::PipelineList => pipeline::run(addr, n, opcode::LIST, args.bytes, phase),
        Load::Loris => loris::run(addr, &[None], n, interval, phase),
        Load::LorisAddresses => {
            let sources: Vec<_> = (1..=usize::from(args.addresses)).map(|i| Some(source(i))).collect();
            loris::run(addr, &sources, n, interval, phase)
        }
        Load::StalledGet => stalled::run(addr, n, BIG, phase)?,
    })
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Peaks {
    /// The last `VmHWM` read.
    hwm_kib: u64,
    threads: u64,
    /// The resident memory at which the sampler killed the server, if it did.
    killed_at_kib: Option<u64>,
}

/// Samples the server's status every [`SAMPLE_EVERY`] until the load stops or the server exits;
/// kills it past `rss_limit_kib`.
fn sample(pid: u32, rss_limit_kib: Option<u64>, phase: &Phase) -> Peaks {
    let mut peaks = Peaks::default();
    while !phase.stopping() {
        let Ok(status) = ProcStatus::read(pid) else { break };
        peaks.hwm_kib = peaks.hwm_kib.max(status.hwm_kib);
        peaks.threads = peaks.threads.max(status.threads);
        if rss_limit_kib.is_some_and(|limit| status.rss_kib > limit) {
            // The child is reaped only by the main thread, after this one ends: the pid is
            // still ours.
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            peaks.killed_at_kib = Some(status.rss_kib);
            break;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    peaks
}

fn print_table(engine: Engine, rows: &[Row]) {
    println!("\nengine {}:", engine.name());
    println!(
        "{:<16} {:>6} {:>9} {:>9} {:>7} {:>7}  {:<12} {:>13} {:>11}  figure",
        "load", "conns", "base MiB", "peak MiB", "×base", "threads", "alive", "fresh p50/max", "busy/failed"
    );
    for r in rows {
        let mut ms: Vec<f64> = r
            .probes
            .iter()
            .filter_map(|p| match p {
                Probe::Answered(d) => Some(d.as_secs_f64() * 1e3),
                _ => None,
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let busy = r.probes.iter().filter(|p| matches!(p, Probe::Busy)).count();
        let failed = r.probes.iter().filter(|p| matches!(p, Probe::Failed(_))).count();
        let fresh = match (rank(&ms, 0.5), rank(&ms, 1.0)) {
            (Some(p50), Some(max)) => format!("{p50:.1}/{max:.1} ms"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<16} {:>6} {:>9.1} {:>9.1} {:>7.1} {:>7}  {:<12} {:>13} {:>11}  {}",
            r.load.name(),
            r.connections,
            r.baseline_kib as f64 / 1024.0,
            r.peak_kib as f64 / 1024.0,
            r.peak_kib as f64 / r.baseline_kib.max(1) as f64,
            r.peak_threads,
            r.alive,
            fresh,
            format!("{busy}/{failed}"),
            r.figure,
        );
        if let Some(Probe::Failed(e)) = r.probes.iter().find(|p| matches!(p, Probe::Failed(_))) {
            println!("{:<16} first fresh-client failure: {e}", "");
        }
    }
}

/// The nearest-rank percentile `p` (0 to 1) of sorted values; `None` if there are none.
fn rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// [`rank`] of numbers, NaN if there are none.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    rank(sorted, p).unwrap_or(f64::NAN)
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn fmt_bytes(b: f64) -> String {
    if b >= f64::from(1 << 20) {
        format!("{:.1} MiB", b / f64::from(1 << 20))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}
