//! The fresh client: what an ordinary user sees of a server under a hostile load.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferry_proto::client::{ClientConfig, ClientConnection};
use ferry_proto::{ErrorCode, Request, ServerItem};

use super::{net, Phase};

/// How long one fresh client waits for its LIST reply before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one fresh client got.
#[derive(Debug, Clone)]
pub enum Probe {
    /// The LIST reply arrived whole, this long after the connect began.
    Answered(Duration),
    /// The server refused the connection at capacity (`[CAP-1]`).
    Busy,
    /// Anything else: a reset, a timeout, an unexpected error reply.
    Failed(String),
}

/// Runs a fresh client every `period` from the time the load has opened its connections until it
/// stops, one at a time (a probe that hangs delays the next rather than piling up more
/// connections). Starting earlier would race the load for the server's slots.
pub fn probe_every(server: SocketAddr, bind: Option<Ipv4Addr>, period: Duration, phase: &Phase) -> Vec<Probe> {
    while !phase.is_opened() && !phase.stopping() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut probes = Vec::new();
    while !phase.stopping() {
        let next = Instant::now() + period;
        probes.push(probe(server, bind));
        while !phase.stopping() && Instant::now() < next {
            std::thread::sleep(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
        }
    }
    probes
}

/// One fresh client: connect, hello, LIST, then BYE. The latency runs from the start of the
/// connect to the last byte of the LIST reply; the BYE is not timed.
pub fn probe(server: SocketAddr, bind: Option<Ipv4Addr>) -> Probe {
    let started = Instant::now();
    match list(server, bind, started) {
        Ok(Some(Listed { latency, stream, conn })) => {
            bye(stream, conn);
            Probe::Answered(latency)
        }
        Ok(None) => Probe::Busy,
        Err(e) => Probe::Failed(e),
    }
}

/// A LIST reply received, and the connection, still open for its BYE.
struct Listed {
    latency: Duration,
    stream: TcpStream,
    conn: ClientConnection,
}

/// Hello and LIST; `None` if the server answered BUSY.
fn list(server: SocketAddr, bind: Option<Ipv4Addr>, started: Instant) -> Result<Option<Listed>, String> {
    let mut stream = net::connect(server, bind, false).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(ClientConfig::default()).map_err(|e| e.to_string())?;
    conn.send(&Request::List).map_err(|e| e.to_string())?;
    // A server at capacity answers BUSY and closes without reading: the write may fail, and
    // the BUSY may still be there to read.
    let write_error = stream.write_all(conn.pending_output()).err();
    let n = conn.pending_output().len();
    conn.consume_output(n);

    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut entries_left: Option<u32> = None;
    loop {
        let mut used = 0;
        loop {
            let (n, item) = conn.handle_input(&pending[used..]).map_err(|e| e.to_string())?;
            used += n;
            match item {
                Some(ServerItem::Error(e)) if e.code == ErrorCode::BUSY => return Ok(None),
                Some(ServerItem::Error(e)) => return Err(format!("server error {e}")),
                Some(ServerItem::ListStart { count }) => entries_left = Some(count),
                Some(ServerItem::Entry(_)) => entries_left = entries_left.map(|n| n.saturating_sub(1)),
                Some(_) => {}
                None => break,
            }
            if entries_left == Some(0) {
                return Ok(Some(Listed { latency: started.elapsed(), stream, conn }));
            }
        }
        pending.drain(..used);
        let left = PROBE_TIMEOUT.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err("timed out".into());
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => {
                let what = write_error.map_or(String::new(), |e| format!(" (write: {e})"));
                return Err(format!("closed before the LIST reply{what}"));
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err("timed out".into()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Says goodbye and waits briefly for the reply (`[BYE-3]`); failures here are not the probe's.
fn bye(mut stream: TcpStream, mut conn: ClientConnection) {
    if conn.send(&Request::Bye).is_err() || stream.write_all(conn.pending_output()).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 256];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}
