//! `ferry-bench vs-nginx`: ferryd's engines against nginx on the same files, driven by the same
//! client loop ([`crate::load`]), in interleaved rounds (issue 13's table).
//!
//! It writes `--files` random files of `--size` bytes into a temporary directory, starts nginx
//! from a private configuration on a loopback port ([`nginx`]) and ferryd with each engine on
//! the same directory, GETs every file once from each, then for each workload runs rounds of
//! nginx, blocking, async, and prints the medians ([`table`]). Without nginx it compares the two
//! engines. Every process it starts is stopped and reaped at the end, on an error or Ctrl-C too
//! (each is held by a guard whose `Drop` does it).

pub mod nginx;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::ferryd::{ferryd_path, raise_fd_limit, Ferryd};
use crate::load::driver::Plan;
use crate::load::files::FileSet;
use crate::load::report::{fmt_latency, fmt_us, Measured};
use crate::load::wire::{Mode, Protocol, Script, Verify};
use crate::load::{self, perf};
use table::{Figures, Results};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rounds per workload; each round runs every server once, in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds measured per run.
    #[arg(short = 't', long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of load before each run's window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Files served.
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// Size of each file, in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Connections at once, in the persistent and the connection-per-request workloads.
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Client threads (each an epoll loop over its share of the connections).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// What is checked of every reply (see `load --help`). `content` compares each reply with
    /// the file's bytes and checks Ferry's announced digest: as strict as `data`, whose MD5
    /// would take the client about as much CPU per request as nginx takes in all.
    #[arg(long, value_enum, default_value_t = Verify::Content)]
    verify: Verify,
    /// nginx's worker processes (ferryd's async engine runs one reactor thread per core).
    #[arg(long, default_value_t = 2)]
    nginx_workers: usize,
    /// The nginx binary [default: on PATH or /usr/sbin/nginx, installed with apt-get if
    /// missing and this is root].
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Compare the two engines only.
    #[arg(long)]
    no_nginx: bool,
    /// Do not install nginx if it is missing.
    #[arg(long)]
    no_install: bool,
    /// The ferryd binary [default: next to this one].
    #[arg(long)]
    ferryd: Option<PathBuf>,
    /// A flag for both ferryds (repeat for several), e.g. `--extra=--workers=1`.
    #[arg(long, allow_hyphen_values = true)]
    extra: Vec<String>,
    /// Skip the runs at `--log-level info` that price per-request logging.
    #[arg(long)]
    no_log_cost: bool,
    /// Skip the `perf stat` pass that counts system calls and context switches.
    #[arg(long)]
    no_perf: bool,
}

/// A workload of issue 13's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `-c` persistent connections, random GETs.
    Persistent,
    /// A fresh TCP connection per GET, `-c` at once.
    Fresh,
    /// One persistent connection: latency.
    Latency,
}

impl Workload {
    pub const ALL: [Self; 3] = [Self::Persistent, Self::Fresh, Self::Latency];

    fn mode(self) -> Mode {
        match self {
            Self::Fresh => Mode::Fresh,
            _ => Mode::Persistent,
        }
    }
}

/// A server under test.
pub struct Server {
    pub label: String,
    addr: SocketAddr,
    protocol: Protocol,
    pids: Vec<u32>,
    /// Run in the persistent workload only, to price logging.
    log_cost: bool,
}

pub fn run(args: Args) -> Result<()> {
    let stop = crate::interrupt::flag()?;
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.connections > 200 {
        raise_fd_limit()?;
    }
    let ferryd_bin = ferryd_path(args.ferryd.clone())?;
    if !ferryd_bin.is_file() {
        bail!("no ferryd at {} (cargo build --release -p ferryd, or --ferryd PATH)", ferryd_bin.display());
    }
    let scratch = tempfile::tempdir()?;
    let root = tempfile::tempdir()?;
    println!("writing {} files of {} random bytes into {}", args.files, args.size, root.path().display());
    let files = Arc::new(FileSet::create(root.path(), args.files, args.size, 1)?);

    // Guards: each stops its process when dropped, in reverse order, however `run` ends.
    let mut nginx_guard = None;
    let mut ferryds: Vec<Ferryd> = Vec::new();
    let mut servers: Vec<Server> = Vec::new();

    let nginx_bin =
        if args.no_nginx { Err("--no-nginx".to_owned()) } else { nginx::find(args.nginx.clone(), !args.no_install) };
    match nginx_bin {
        Ok(bin) => {
            let n = nginx::Nginx::start(&bin, root.path(), args.nginx_workers)?;
            println!("{} on {}: {}", nginx::version(&bin), n.addr, nginx::settings(args.nginx_workers));
            servers.push(Server {
                label: "nginx".into(),
                addr: n.addr,
                protocol: Protocol::Http,
                pids: vec![n.pid()],
                log_cost: false,
            });
            nginx_guard = Some(n);
        }
        Err(why) => println!("no nginx ({why}): comparing the two engines only"),
    }
    let mut engines = vec![("blocking", "warn"), ("async", "warn")];
    if !args.no_log_cost {
        engines.extend([("blocking", "info"), ("async", "info")]);
    }
    for (engine, level) in engines {
        let mut extra = vec!["--log-level".to_owned(), level.to_owned()];
        extra.extend(args.extra.iter().cloned());
        let log = if level == "warn" {
            Stdio::inherit()
        } else {
            std::fs::File::create(scratch.path().join(format!("{engine}-{level}.log")))?.into()
        };
        let defaults = [
            ("--engine", engine.to_owned()),
            ("--max-clients", load::FERRYD_CAP.to_owned()),
            ("--max-per-ip", load::FERRYD_CAP.to_owned()),
        ];
        let f = Ferryd::start_logging_to(&ferryd_bin, root.path(), &defaults, &extra, log)?;
        let label =
            if level == "warn" { format!("ferryd {engine}") } else { format!("ferryd {engine}{}", table::LOG_INFO) };
        let flags: Vec<String> = defaults.iter().flat_map(|(f, v)| [f.to_string(), v.clone()]).chain(extra).collect();
        println!("{label} on {}: {} {}", f.addr, ferryd_bin.display(), flags.join(" "));
        servers.push(Server {
            label,
            addr: f.addr,
            protocol: Protocol::Ferry,
            pids: vec![f.pid()],
            log_cost: level != "warn",
        });
        ferryds.push(f);
    }
    for s in &servers {
        load::prime(s.addr, s.protocol, &files, &stop)?;
    }
    println!(
        "client: {} thread(s), verify {:?}; {} rounds of {} s (after {} s warm-up) per server and workload, interleaved",
        args.threads, args.verify, args.rounds, args.seconds, args.warmup
    );
    let loadavg = |when: &str| {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load average {when}: {}", l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    };
    loadavg("before");

    let mut results = Results::new(servers.iter().map(|s| s.label.clone()).collect(), args.connections);
    for workload in Workload::ALL {
        for round in 0..args.rounds {
            for (i, s) in servers.iter().enumerate() {
                if s.log_cost && workload != Workload::Persistent {
                    continue;
                }
                let plan = plan_for(&args, workload, s, &files, round as u64)?;
                let mut m = load::measure(&plan, &s.pids, &stop)?;
                check(&s.label, &m)?;
                println!("{:?} round {}/{}: {}", workload, round + 1, args.rounds, one_line(&s.label, &mut m));
                results.add(workload, i, Figures::of(&mut m));
            }
        }
    }
    if args.no_perf {
        println!("no perf pass (--no-perf)");
    } else if !perf::available() {
        println!("no perf pass: `perf stat` cannot count system calls here (Debian: apt-get install linux-perf)");
    } else {
        for workload in [Workload::Persistent, Workload::Fresh] {
            for (i, s) in servers.iter().enumerate().filter(|(_, s)| !s.log_cost) {
                let plan = plan_for(&args, workload, s, &files, 0)?;
                let (counts, replies) = load::count_syscalls(&plan, &s.pids, scratch.path(), &stop)?;
                let per = |n: u64| n as f64 / replies.max(1) as f64;
                println!(
                    "{workload:?} perf pass: {}: {:.2} syscalls, {:.2} context switches per request",
                    s.label,
                    per(counts.syscalls),
                    per(counts.switches)
                );
                results.add_perf(workload, i, per(counts.syscalls), per(counts.switches));
            }
        }
    }
    loadavg("after");
    drop(ferryds);
    drop(nginx_guard);
    results.print(args.rounds);
    Ok(())
}

fn plan_for(args: &Args, workload: Workload, s: &Server, files: &Arc<FileSet>, seed: u64) -> Result<Plan> {
    let connections = if workload == Workload::Latency { 1 } else { args.connections };
    Ok(Plan {
        addr: s.addr,
        script: Arc::new(Script::new(s.protocol, workload.mode(), files)),
        files: Arc::clone(files),
        connections,
        depth: 1,
        threads: args.threads,
        verify: args.verify,
        warmup: Duration::try_from_secs_f64(args.warmup)?,
        duration: Duration::try_from_secs_f64(args.seconds)?,
        each_once: false,
        seed,
    })
}

/// A run with a failed reply is no measurement: the bench stops.
fn check(label: &str, m: &Measured) -> Result<()> {
    let t = &m.outcome.tally;
    if t.failures > 0 || t.replies == 0 {
        bail!("{label}: {} replies, {} failures: {:?}", t.replies, t.failures, t.first_failures);
    }
    Ok(())
}

fn one_line(label: &str, m: &mut Measured) -> String {
    let cpu = m.cpu_per_reply().map_or("-".to_owned(), |d| fmt_us(d.as_secs_f64() * 1e6));
    let (p50, p99) = (m.p50(), m.p99());
    format!("{label}: {:.0} req/s, {cpu} CPU/req, p50 {}, p99 {}", m.rate(), fmt_latency(p50), fmt_latency(p99))
}
