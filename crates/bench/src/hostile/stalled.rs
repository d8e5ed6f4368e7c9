//! The stalled-GET load: clients that ask for a large file and never read it.
//!
//! The server fills the socket buffers and then its writes block (or would block). A server
//! that bounds the time it waits on a write drops such a client (`[TIME-5]`); one that does not
//! holds the connection, its slot and, on the blocking engine, its thread for good.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferry_proto::client::{ClientConfig, ClientConnection};
use ferry_proto::{Name, Request};

use super::net::{self, Drops};
use super::{fmt_secs, rank, Phase};

/// How often the connections are checked for a drop.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Opens `n` connections that each send the hello and a GET of `name`, then never read, until the
/// load stops. Returns the load's figure: when the server dropped each connection.
pub fn run(server: SocketAddr, n: usize, name: &str, phase: &Phase) -> anyhow::Result<String> {
    let mut conn = ClientConnection::new(ClientConfig::default())?;
    conn.send(&Request::Get { name: Name::parse(name)?, offset: 0 })?;
    let request = conn.pending_output().to_vec();

    let mut streams: Vec<(TcpStream, Instant)> = Vec::with_capacity(n);
    let mut connect_errors = 0;
    for _ in 0..n {
        if phase.stopping() {
            break;
        }
        let opened = Instant::now();
        let stream = net::connect(server, None, true)
            .and_then(|mut s| s.write_all(&request).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        match stream {
            Ok(s) => streams.push((s, opened)),
            Err(_) => connect_errors += 1,
        }
    }
    phase.set_opened();
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut drops = Drops::new(server, streams.iter().map(|(s, t)| (s.local_addr().unwrap_or(unknown), *t)));

    while !phase.stopping() {
        drops.poll();
        // A reset that reached this side also counts. `peek` leaves the data where it is; it
        // returns 0 only in the unlikely case that every byte sent before a FIN was consumed.
        let mut byte = [0u8; 1];
        for (i, (s, _)) in streams.iter().enumerate() {
            if drops.is_dropped(i) {
                continue;
            }
            match s.peek(&mut byte) {
                Ok(0) => drops.mark(i),
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => drops.mark(i),
                _ => {}
            }
        }
        std::thread::sleep(WATCH_EVERY);
    }
    drops.poll();

    let mut held: Vec<Duration> = drops.times().into_iter().flatten().collect();
    held.sort();
    let show = |p: f64| rank(&held, p).map_or("-".to_owned(), fmt_secs);
    let longest_open = streams.iter().map(|(_, t)| t.elapsed()).max().unwrap_or_default();
    let mut figure = format!(
        "dropped by server {}/{}, after min/median/max {}/{}/{}; {} still held at the end, at {}",
        held.len(),
        streams.len(),
        show(0.0),
        show(0.5),
        show(1.0),
        streams.len() - held.len(),
        fmt_secs(longest_open),
    );
    if connect_errors > 0 {
        figure += &format!("; connect errors {connect_errors}");
    }
    Ok(figure)
}
