//! `ferry-bench`: measurements anyone can rerun. Each reports a figure next to a baseline taken in
//! the same invocation, so machines of different speeds give comparable ratios.
//!
//! - `digest-cache`: the first GET of a file copied into the root by hand hashes it; the second
//!   must not. Baseline: the first GET.
//! - `memory`: the `ferryd` process's peak resident memory while N clients download a large file
//!   at once must not grow with the file's size. Baseline: the same clients downloading a small
//!   file, in the same process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry_proto::client::{ClientConfig, ClientConnection};
use ferry_proto::{Name, Request, ServerItem};

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
}

fn main() -> Result<()> {
    match Cli::parse().what {
        What::DigestCache { size_mib } => digest_cache(size_mib),
        What::Memory { clients, size_gib, baseline_mib, ferryd } => memory(clients, size_gib, baseline_mib, ferryd),
    }
}

/// Downloads `name` whole; returns the data bytes received (not kept).
fn download(addr: SocketAddr, name: &str) -> Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut conn = ClientConnection::new(ClientConfig::default())?;
    conn.send(&Request::Get { name: Name::parse(name)?, offset: 0 })?;
    conn.send(&Request::Bye)?;
    stream.write_all(conn.pending_output())?;
    let n = conn.pending_output().len();
    conn.consume_output(n);
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut received = 0u64;
    loop {
        let read = stream.read(&mut buf)?;
        if read == 0 {
            conn.handle_eof(&pending)?;
            return Ok(received);
        }
        pending.extend_from_slice(&buf[..read]);
        let mut used = 0;
        loop {
            let (n, item) = conn.handle_input(&pending[used..])?;
            used += n;
            match item {
                Some(ServerItem::Data(d)) => received += d.len() as u64,
                Some(ServerItem::Error(e)) => bail!("server refused: {e}"),
                Some(_) => {}
                None => break,
            }
        }
        pending.drain(..used);
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

/// A `ferryd` child process, killed and reaped on drop.
struct Ferryd {
    child: Child,
    addr: SocketAddr,
}

impl Ferryd {
    fn start(bin: &Path, root: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(root)
            .args(["--log-level", "warn"])
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
    fn rss_kib(&self) -> Result<u64> {
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
    let bin = match ferryd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("ferryd"),
    };
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
