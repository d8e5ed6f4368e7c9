//! The slowloris loads: clients that send their hello, then a request head one byte at a time.
//!
//! A deadline per read never fires on such a client; only a deadline on the whole head
//! (`[TIME-3]`) does. Until it fires the connection holds a slot, and on the blocking engine a
//! thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferry_proto::message::{opcode, tag};
use ferry_proto::{ClientHello, ErrorCode};
use rustix::event::{PollFd, PollFlags, Timespec};

use super::{fmt_secs, net, rank, Phase};

/// The longest the loop sleeps, so that it notices the end of the load.
const TICK: Duration = Duration::from_millis(100);

/// The head trickled: a STAT of a 200-byte name. It is sent over and over if the server lets a
/// client get that far.
fn head() -> Vec<u8> {
    let mut head = vec![opcode::STAT];
    head.extend_from_slice(&200u32.to_be_bytes());
    head.resize(head.len() + 200, b'a');
    head
}

struct Loris {
    stream: TcpStream,
    opened: Instant,
    /// Head bytes sent so far (modulo the head's length: the position in it).
    sent: usize,
    /// The first bytes of the server's reply: a hello tag, or an error tag and its code.
    reply: Vec<u8>,
    /// When the server was seen to close it, measured from `opened`.
    closed: Option<Duration>,
}

impl Loris {
    /// Reads whatever arrived; records EOF or a reset as the close.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return self.close(),
                Ok(n) => {
                    let keep = (3 - self.reply.len().min(3)).min(n);
                    self.reply.extend_from_slice(&buf[..keep]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.close(),
            }
        }
    }

    fn close(&mut self) {
        self.closed.get_or_insert_with(|| self.opened.elapsed());
    }

    fn served(&self) -> bool {
        self.reply.first() == Some(&tag::HELLO)
    }

    fn busy(&self) -> bool {
        self.reply.len() >= 3
            && self.reply[0] == tag::ERROR
            && u16::from_be_bytes([self.reply[1], self.reply[2]]) == ErrorCode::BUSY.0
    }
}

/// Opens `per_source` connections from each of `sources` (`None`: the default address), each
/// sending a hello and then a head byte every `interval`, until the load stops. Returns the load's
/// figure: how long the server kept the connections it served open.
pub fn run(
    server: SocketAddr,
    sources: &[Option<Ipv4Addr>],
    per_source: usize,
    interval: Duration,
    phase: &Phase,
) -> String {
    let mut hello = Vec::new();
    ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut hello);
    let head = head();

    let mut conns = Vec::new();
    let mut connect_errors = 0;
    for source in sources {
        for _ in 0..per_source {
            if phase.stopping() {
                break;
            }
            let opened = Instant::now();
            let stream = net::connect(server, *source, true)
                .and_then(|mut s| s.write_all(&hello).map(|()| s))
                .and_then(|s| s.set_nonblocking(true).map(|()| s));
            match stream {
                Ok(stream) => conns.push(Loris { stream, opened, sent: 0, reply: Vec::new(), closed: None }),
                Err(_) => connect_errors += 1,
            }
        }
    }

    phase.set_opened();
    let mut next_byte = Instant::now() + interval;
    while !phase.stopping() {
        let open: Vec<usize> = (0..conns.len()).filter(|&i| conns[i].closed.is_none()).collect();
        let wait = next_byte.saturating_duration_since(Instant::now()).min(TICK);
        if open.is_empty() {
            std::thread::sleep(wait);
        } else {
            // Sleep until a reply, an EOF or a reset arrives, or the next byte is due.
            let mut fds: Vec<PollFd<'_>> = open.iter().map(|&i| PollFd::new(&conns[i].stream, PollFlags::IN)).collect();
            let _ = rustix::event::poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: wait.as_nanos() as _ }));
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            for (&i, ready) in open.iter().zip(ready) {
                if ready {
                    conns[i].drain();
                }
            }
        }
        if Instant::now() >= next_byte {
            next_byte += interval;
            for c in conns.iter_mut().filter(|c| c.closed.is_none()) {
                match c.stream.write(&head[c.sent % head.len()..][..1]) {
                    Ok(n) => c.sent += n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(_) => c.close(),
                }
            }
        }
    }
    for c in conns.iter_mut().filter(|c| c.closed.is_none()) {
        c.drain();
    }

    let served: Vec<&Loris> = conns.iter().filter(|c| c.served()).collect();
    let busy = conns.iter().filter(|c| c.busy()).count();
    let open_at_end = served.iter().filter(|c| c.closed.is_none()).count();
    // A connection still open counts with its age, a lower bound on how long it is kept: "≥".
    let mut held: Vec<(Duration, bool)> =
        served.iter().map(|c| c.closed.map_or((c.opened.elapsed(), true), |d| (d, false))).collect();
    held.sort();
    let show = |p: f64| match rank(&held, p) {
        Some((d, open)) => format!("{}{}", if open { "≥" } else { "" }, fmt_secs(d)),
        None => "-".to_owned(),
    };
    let mut figure = if held.is_empty() {
        "no connection served".to_owned()
    } else {
        format!("held open min/median/max {}/{}/{}, {open_at_end} still open at end", show(0.0), show(0.5), show(1.0))
    };
    figure += &format!("; served {}/{}", served.len(), conns.len() + connect_errors);
    let other = conns.len() - served.len() - busy;
    if busy > 0 || other > 0 || connect_errors > 0 {
        figure += &format!(", BUSY {busy}, no hello {other}, connect errors {connect_errors}");
    }
    figure
}
