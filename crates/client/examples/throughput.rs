//! Download (or upload) throughput with the MD5 computed inline versus on a second thread, over
//! loopback, measured in one invocation so that the ratio compares like with like.
//!
//! ```text
//! TMPDIR=/dev/shm cargo run --release -p ferry-client --example throughput -- [SIZE_MIB] [ROUNDS] [get|put]
//! ```
//!
//! It serves one file of SIZE_MIB (default 1024) from the reference server (ferry-blocking, in
//! this process, on 127.0.0.1), downloads it once to warm the server's digest cache, then
//! downloads it ROUNDS times (default 3) in each mode, alternating, and prints the median rate of
//! each and their ratio. The whole download is timed, fsync and rename included: put TMPDIR on a
//! tmpfs (/dev/shm) so that the disk does not dominate.
//!
//! With `put`, it uploads a local file of that size instead, in the trailing form (the server
//! announces `TRAILER`, and the client has no digest cache): the MD5 is computed as the data is
//! sent, inline or on a second thread.

use std::io::Write;
use std::time::{Duration, Instant};

use ferry_client::{Client, Config, HashMode, NoProgress};
use ferry_core::Settings;
use ferry_proto::{Name, PutMode};

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map_or(1024, |a| a.parse().expect("SIZE_MIB is a number"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS is a number"));
    let put = match args.next().as_deref() {
        None | Some("get") => false,
        Some("put") => true,
        Some(other) => panic!("get or put, not {other}"),
    };
    let size = mib << 20;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("the root");
    write_file(&root.join("big"), size);
    let server = ferry_blocking::spawn(Settings { root, ..Settings::default() }, "127.0.0.1:0".parse().unwrap())
        .expect("starting the server");
    let name = Name::parse("big").unwrap();
    let dest = dir.path().join("big.out");
    let source = dir.path().join("big.in");
    if put {
        write_file(&source, size);
    }
    let up = Name::parse("up").unwrap();

    let download = |mode: HashMode| -> Duration {
        let mut client = Client::new(Config {
            server: server.addr.to_string(),
            hash_mode: mode,
            upload_hash_mode: Some(mode),
            ..Config::default()
        });
        let started = Instant::now();
        if put {
            let done = client.upload(&source, &up, PutMode::Overwrite, &mut NoProgress).expect("the upload");
            assert!(done.trailing, "the server announces TRAILER");
        } else {
            client.download(&name, &dest, true, &mut NoProgress).expect("the download");
        }
        let took = started.elapsed();
        client.close();
        if !put {
            std::fs::remove_file(&dest).expect("removing the download");
        }
        took
    };

    println!(
        "{} of {mib} MiB over loopback, {rounds} rounds per mode, {} CPUs",
        if put { "uploads" } else { "downloads" },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    download(HashMode::Thread); // warms the server's digest cache and the page cache
    let (mut inline, mut thread) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        inline.push(download(HashMode::Inline));
        thread.push(download(HashMode::Thread));
    }
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / (1 << 20) as f64;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mi, mt) = (median(&mut inline), median(&mut thread));
    println!(
        "inline: {:>8.1} MiB/s  (median of {:?})",
        rate(mi),
        inline.iter().map(|d| rate(*d).round()).collect::<Vec<_>>()
    );
    println!(
        "thread: {:>8.1} MiB/s  (median of {:?})",
        rate(mt),
        thread.iter().map(|d| rate(*d).round()).collect::<Vec<_>>()
    );
    println!("thread / inline: {:.2}", rate(mt) / rate(mi));
}

/// Writes `size` bytes of a cheap, non-repeating pattern.
fn write_file(path: &std::path::Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("creating the file"));
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut left = size;
    while left > 0 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("writing the file");
        left -= n as u64;
    }
    f.flush().expect("writing the file");
}
