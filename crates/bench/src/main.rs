//! `ferry-bench`: measurements anyone can rerun. Each reports a figure next to a baseline taken in
//! the same invocation, so machines of different speeds give comparable ratios.
//!
//! - `digest-cache`: the first GET of a file copied into the root by hand hashes it; the second
//!   must not. Baseline: the first GET.
//! - `memory`: the `ferryd` process's peak resident memory while N clients download a large file
//!   at once must not grow with the file's size. Baseline: the same clients downloading a small
//!   file, in the same process.
//! - `get-rate`: small-file GETs per second at N concurrent clients, for the async engine against
//!   the blocking one (the baseline), one after the other in the same invocation.
//! - `idle-memory`: each engine's resident memory holding N idle connections, per connection.
//! - `hostile`: hostile loads against each engine: peak memory and threads, whether the server
//!   survives, and a fresh client's latency meanwhile. Baseline: the server's memory at start.
//!   See [`hostile`] for the loads and the commands.
//! - `load`: a load generator speaking Ferry or HTTP/1.1 with one client loop: req/s, latency,
//!   server CPU per request. See [`load`].
//! - `vs-nginx`: ferryd's engines against nginx on the same files with that client loop, in
//!   interleaved rounds: issue 13's table. See [`vs_nginx`].

mod client;
mod ferryd;
mod hostile;
mod interrupt;
mod load;
mod vs_nginx;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::client::{download, get_loop};
use crate::ferryd::{ferryd_path, raise_fd_limit, Ferryd};

#[derive(Debug, Parser)]
#[command(name = "ferry-bench")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// First vs second GET of a hand-copied file: does the second hash it again?
    DigestCache {
        /// File size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
    },
    /// Peak RSS of a ferryd process while clients download a large file, against a small one.
    Memory {
        /// Concurrent downloads.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Size of the large file in GiB (a sparse file: no disk space used).
        #[arg(long, default_value_t = 4)]
        size_gib: u64,
        /// Size of the baseline file in MiB.
        #[arg(long, default_value_t = 64)]
        baseline_mib: u64,
        /// The ferryd binary (default: next to this one).
        #[arg(long)]
        ferryd: Option<PathBuf>,
    },
    /// Small-file GET rate of both engines at N concurrent clients.
    GetRate {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// File size in bytes.
        #[arg(long, default_value_t = 4096)]
        size: u64,
        /// Seconds of load per engine.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long)]
        ferryd: Option<PathBuf>,
    },
    /// Hostile loads (pipelining without reading, slowloris, stalled downloads) against each
    /// engine: peak memory and threads, and what a fresh client sees meanwhile.
    Hostile(hostile::Args),
    /// A load of GETs in Ferry or HTTP/1.1 (persistent, a connection per request, pipelined,
    /// or Ferry's legacy profile), every reply verified: req/s, p50/p99 latency, server CPU per
    /// request.
    Load(load::Args),
    /// ferryd's two engines against nginx on the same 1,000 small files, driven by the same
    /// client loop, in interleaved rounds: rate, CPU per request, latency, with ratios.
    VsNginx(vs_nginx::Args),
    /// Resident memory of each engine holding N idle connections.
    IdleMemory {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long)]
        ferryd: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().what {
        What::DigestCache { size_mib } => digest_cache(size_mib),
        What::Memory { clients, size_gib, baseline_mib, ferryd } => memory(clients, size_gib, baseline_mib, ferryd),
        What::GetRate { clients, size, seconds, ferryd } => get_rate(clients, size, seconds, ferryd),
        What::IdleMemory { connections, ferryd } => idle_memory(connections, ferryd),
        What::Hostile(args) => hostile::run(args),
        What::Load(args) => load::run(args),
        What::VsNginx(args) => vs_nginx::run(args),
    }
}

fn write_pattern(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = size;
    while left > 0 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn digest_cache(size_mib: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let size = size_mib << 20;
    println!("writing a {size_mib} MiB file into a fresh root (as if copied in by hand)...");
    write_pattern(&dir.path().join("big.bin"), size)?;
    let settings = ferry_core::Settings { root: dir.path().to_owned(), ..Default::default() };
    let server = ferry_blocking::spawn(settings, "127.0.0.1:0".parse()?)?;
    let hashed = || server.server.store.digests().hashed_count();

    let mut runs = Vec::new();
    for label in ["first GET ", "second GET"] {
        let before = hashed();
        let t = Instant::now();
        let got = download(server.addr, "big.bin")?;
        let elapsed = t.elapsed();
        if got != size {
            bail!("received {got} of {size} bytes");
        }
        let files_hashed = hashed() - before;
        println!("{label}: {:>8.1} ms, files hashed from disk: {files_hashed}", elapsed.as_secs_f64() * 1e3);
        runs.push((elapsed, files_hashed));
    }
    let ratio = runs[0].0.as_secs_f64() / runs[1].0.as_secs_f64();
    println!("first/second time ratio: {ratio:.2}");
    if runs[1].1 != 0 {
        bail!("the second GET hashed the file again");
    }
    println!("ok: the second GET did not hash the file");
    Ok(())
}

/// Runs `clients` concurrent downloads of `name`, sampling the server's RSS every 20 ms; returns
/// the peak in KiB and the elapsed time.
fn peak_during(server: &Ferryd, clients: usize, name: &str, size: u64) -> Result<(u64, Duration)> {
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let addr = server.addr;
            let name = name.to_owned();
            std::thread::spawn(move || download(addr, &name))
        })
        .collect();
    let mut peak = server.rss_kib()?;
    while !handles.iter().all(|h| h.is_finished()) {
        peak = peak.max(server.rss_kib()?);
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in handles {
        let got = h.join().map_err(|_| anyhow::anyhow!("a client panicked"))??;
        if got != size {
            bail!("a client received {got} of {size} bytes");
        }
    }
    Ok((peak, t.elapsed()))
}

fn memory(clients: usize, size_gib: u64, baseline_mib: u64, ferryd: Option<PathBuf>) -> Result<()> {
    let bin = ferryd_path(ferryd)?;
    let dir = tempfile::tempdir()?;
    let big = size_gib << 30;
    let small = baseline_mib << 20;
    for (name, size) in [("big.bin", big), ("small.bin", small)] {
        let f = std::fs::File::create(dir.path().join(name))?;
        f.set_len(size)?;
    }
    let server = Ferryd::start(&bin, dir.path())?;
    println!("ferryd at {}; idle RSS {} KiB", server.addr, server.rss_kib()?);
    // Each file's first GET hashes it (bounded by --max-concurrent-hashes); hash both up front so
    // the two phases compare transfers alone.
    for name in ["small.bin", "big.bin"] {
        download(server.addr, name)?;
    }
    println!("after hashing both files: RSS {} KiB", server.rss_kib()?);
    let (base, t_base) = peak_during(&server, clients, "small.bin", small)?;
    println!("baseline: {clients} clients x {baseline_mib} MiB: peak RSS {base} KiB ({:.1} s)", t_base.as_secs_f64());
    let (peak, t_big) = peak_during(&server, clients, "big.bin", big)?;
    println!("measured: {clients} clients x {size_gib} GiB: peak RSS {peak} KiB ({:.1} s)", t_big.as_secs_f64());
    println!("peak ratio measured/baseline: {:.2} for a file {}x larger", peak as f64 / base as f64, big / small);
    Ok(())
}

fn get_rate(clients: usize, size: u64, seconds: u64, ferryd: Option<PathBuf>) -> Result<()> {
    let bin = ferryd_path(ferryd)?;
    let mut rates = Vec::new();
    for engine in ["blocking", "async"] {
        let dir = tempfile::tempdir()?;
        write_pattern(&dir.path().join("small.bin"), size)?;
        let cap = (clients + 16).to_string();
        let server =
            Ferryd::start_with(&bin, dir.path(), &["--engine", engine, "--max-clients", &cap, "--max-per-ip", &cap])?;
        download(server.addr, "small.bin")?; // hashed once, before timing
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let addr = server.addr;
                std::thread::spawn(move || get_loop(addr, "small.bin", size, until))
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().map_err(|_| anyhow::anyhow!("a client panicked"))??;
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!(
            "{engine:>8}: {total} GETs of {size} bytes by {clients} clients in {:.1} s: {rate:.0} GET/s",
            started.elapsed().as_secs_f64()
        );
        rates.push(rate);
    }
    println!("async/blocking GET rate ratio: {:.2}", rates[1] / rates[0]);
    Ok(())
}

fn idle_memory(connections: usize, ferryd: Option<PathBuf>) -> Result<()> {
    let bin = ferryd_path(ferryd)?;
    let limit = raise_fd_limit()?;
    if (connections as u64) + 64 > limit {
        bail!("the file descriptor limit ({limit}) is too low for {connections} connections");
    }
    let mut per_conn = Vec::new();
    for engine in ["blocking", "async"] {
        let dir = tempfile::tempdir()?;
        let cap = (connections + 64).to_string();
        let server = Ferryd::start_with(
            &bin,
            dir.path(),
            &["--engine", engine, "--max-clients", &cap, "--max-per-ip", &cap, "--idle-timeout", "0"],
        )?;
        let before = server.rss_kib()?;
        let mut held = Vec::with_capacity(connections);
        let mut hello = Vec::new();
        ferry_proto::ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut hello);
        for _ in 0..connections {
            let mut s = TcpStream::connect(server.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(&hello)?;
            held.push(s);
        }
        // Every connection has its hello answered: all are served, none merely queued.
        let mut reply = [0u8; 1];
        for s in &mut held {
            s.read_exact(&mut reply)?;
            if reply[0] != ferry_proto::message::tag::HELLO {
                bail!("a connection was refused (0x{:02x})", reply[0]);
            }
        }
        let after = server.rss_kib()?;
        let each = (after.saturating_sub(before)) as f64 / connections as f64;
        println!("{engine:>8}: RSS {before} KiB idle, {after} KiB with {connections} connections: {each:.1} KiB per connection");
        per_conn.push(each);
        drop(held);
    }
    println!("async/blocking memory per connection: {:.2}", per_conn[1] / per_conn[0]);
    Ok(())
}
