//! The pipeline loads: clients that send requests back to back and never read a reply.
//!
//! Each request is one opcode byte (HELP, STATUS or LIST) and each reply is far larger, so a
//! server that reads on while its replies pile up unsent holds `bytes × reply size` per client.
//! A server with backpressure stops reading once its output is above a mark; the client's
//! writes then stop making progress, which is the outcome this load hopes to see.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferry_proto::ClientHello;
use rustix::event::{PollFd, PollFlags, Timespec};

use super::net::{self, Drops};
use super::{fmt_bytes, fmt_secs, percentile, Phase};

/// A connection whose writes made no progress for this long is left alone: the server has
/// stopped reading from it.
const STALL: Duration = Duration::from_secs(2);

/// At most this much is written to one connection per turn, so that all make progress.
const TURN: usize = 64 * 1024;

/// How often the server's ends are looked up (see [`Drops`]).
const WATCH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Writing,
    /// Every byte was accepted.
    Done,
    /// No progress for [`STALL`].
    Stalled,
    /// A write failed: the server closed or reset the connection.
    Failed,
}

/// What each connection sends: the hello, then `total - hello.len()` request bytes, all the
/// same opcode. Only one [`TURN`] of them is kept in memory, however many are sent.
struct Script {
    hello: Vec<u8>,
    /// [`TURN`] copies of the opcode.
    requests: Vec<u8>,
    /// Bytes of the hello and requests.
    total: u64,
}

impl Script {
    /// The next bytes to send after the first `sent`, at most [`TURN`].
    fn after(&self, sent: u64) -> &[u8] {
        let hello = self.hello.len() as u64;
        if sent < hello {
            &self.hello[sent as usize..]
        } else {
            &self.requests[..(self.total - sent).min(TURN as u64) as usize]
        }
    }
}

struct Writer {
    stream: TcpStream,
    opened: Instant,
    /// Bytes of the hello and requests accepted by the kernel so far.
    sent: u64,
    last_progress: Instant,
    state: State,
}

impl Writer {
    /// Writes what the socket takes now, at most [`TURN`] bytes.
    fn write_some(&mut self, script: &Script) {
        let turn_end = (self.sent + TURN as u64).min(script.total);
        while self.sent < turn_end {
            let next = script.after(self.sent);
            let next = &next[..next.len().min((turn_end - self.sent) as usize)];
            match self.stream.write(next) {
                Ok(0) => break,
                Ok(n) => {
                    self.sent += n as u64;
                    self.last_progress = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.state = State::Failed;
                    return;
                }
            }
        }
        if self.sent == script.total {
            self.state = State::Done;
        }
    }
}

/// Opens `n` connections that each send the hello then `bytes` copies of `opcode`, never
/// reading, until the load stops. Returns the load's figure: the request bytes each managed to
/// send.
pub fn run(server: SocketAddr, n: usize, opcode: u8, bytes: u64, phase: &Phase) -> String {
    let mut hello = Vec::new();
    ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut hello);
    let hello_len = hello.len() as u64;
    let script = Script { total: hello_len + bytes, hello, requests: vec![opcode; TURN] };

    let mut writers = Vec::with_capacity(n);
    let mut connect_errors = 0;
    for _ in 0..n {
        if phase.stopping() {
            break;
        }
        match net::connect(server, None, true).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(stream) => {
                let now = Instant::now();
                writers.push(Writer { stream, opened: now, sent: 0, last_progress: now, state: State::Writing })
            }
            Err(_) => connect_errors += 1,
        }
    }
    phase.set_opened();
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut drops = Drops::new(server, writers.iter().map(|w| (w.stream.local_addr().unwrap_or(unknown), w.opened)));
    let mut last_watch = Instant::now();
    while !phase.stopping() {
        let writing: Vec<usize> = (0..writers.len()).filter(|&i| writers[i].state == State::Writing).collect();
        if writing.is_empty() {
            std::thread::sleep(WATCH_EVERY);
        } else {
            // Wait until some socket has room, then write to those that do.
            let mut fds: Vec<PollFd<'_>> =
                writing.iter().map(|&i| PollFd::new(&writers[i].stream, PollFlags::OUT)).collect();
            let timeout = Timespec { tv_sec: 0, tv_nsec: WATCH_EVERY.as_nanos() as _ };
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            let now = Instant::now();
            for (&i, ready) in writing.iter().zip(ready) {
                let w = &mut writers[i];
                if ready {
                    w.write_some(&script);
                    if w.state == State::Failed {
                        drops.mark(i);
                    }
                }
                if w.state == State::Writing && now - w.last_progress > STALL {
                    w.state = State::Stalled;
                }
            }
        }
        if last_watch.elapsed() >= WATCH_EVERY {
            drops.poll();
            last_watch = Instant::now();
        }
    }
    drops.poll();

    let mut accepted: Vec<f64> = writers.iter().map(|w| w.sent.saturating_sub(hello_len) as f64).collect();
    accepted.sort_by(f64::total_cmp);
    let count = |s: State| writers.iter().filter(|w| w.state == s).count();
    let dropped: Vec<Duration> = drops.times().into_iter().flatten().collect();
    let mut figure = format!(
        "request bytes accepted: median {}, max {} of {}; all sent {}, stalled {}, write errors {}; \
         dropped by server {}/{}",
        fmt_bytes(percentile(&accepted, 0.5)),
        fmt_bytes(percentile(&accepted, 1.0)),
        fmt_bytes(bytes as f64),
        count(State::Done),
        count(State::Stalled),
        count(State::Failed),
        dropped.len(),
        writers.len(),
    );
    if let Some(first) = dropped.iter().min() {
        figure += &format!(" (first after {})", fmt_secs(*first));
    }
    if connect_errors > 0 {
        figure += &format!("; connect errors {connect_errors}");
    }
    figure
}
