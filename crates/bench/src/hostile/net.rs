//! Sockets for the hostile loads, and a view of the server's end of them.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Receive and send buffer size asked for on a hostile client's socket. The kernel doubles it
/// and enforces a floor, so each buffer holds a few KiB. Left alone, loopback autotunes them to
/// megabytes, which would soak up what the server sends to a client that never reads (and what
/// such a client sends) and hide how the server itself behaves.
const SMALL_BUF: usize = 4096;

/// How long a connect may take; a loaded server's accept queue may be slow to drain.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `server`, from `bind` (port chosen by the kernel) if given. `small` shrinks the
/// socket's buffers first: before the connect, so the window the handshake announces matches.
pub fn connect(server: SocketAddr, bind: Option<Ipv4Addr>, small: bool) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, Some(Protocol::TCP))?;
    if small {
        socket.set_recv_buffer_size(SMALL_BUF)?;
        socket.set_send_buffer_size(SMALL_BUF)?;
    }
    if let Some(ip) = bind {
        socket.bind(&SocketAddr::from((ip, 0)).into())?;
    }
    socket.connect_timeout(&server.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// `ESTABLISHED` in the `st` column of `/proc/net/tcp`.
const TCP_ESTABLISHED: u8 = 0x01;

/// When the server dropped each of a set of connections, judged from the server's end.
///
/// Why not from the client's end: a client that never reads has a full receive buffer and
/// advertises a zero window. The server's FIN queues behind the data it still has to send, so
/// neither `recv(MSG_PEEK)` returning 0 nor `TCP_INFO` reaching `CLOSE_WAIT` ever happens on the
/// client, however long ago the server closed its socket. And reading to find out would drain
/// the very buffers the load keeps full. On loopback both ends are in this host's socket table,
/// though: once the server closes (or shuts down its sending side) its end leaves `ESTABLISHED`
/// (for `FIN_WAIT1` and the states after it), or vanishes after a reset. `/proc/net/tcp` shows
/// that without touching the connection. A reset that does reach the client is also taken, via
/// [`Drops::mark`].
pub struct Drops {
    /// The server's listening address: the local end of the server's sockets.
    server: SocketAddrV4,
    /// Per connection: the client's address (the server end's remote address), when it opened,
    /// whether the server's end was ever seen established (until then a missing entry means
    /// nothing), and when it was first seen dropped, after its opening.
    conns: Vec<(SocketAddrV4, Instant, bool, Option<Duration>)>,
}

impl Drops {
    /// Watches the connections `clients[i]` to `server`, opened at `opened[i]`.
    pub fn new(server: SocketAddr, clients: impl IntoIterator<Item = (SocketAddr, Instant)>) -> Self {
        let v4 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        Self { server: v4(server), conns: clients.into_iter().map(|(c, t)| (v4(c), t, false, None)).collect() }
    }

    /// Reads the server's ends from `/proc/net/tcp` and records the newly dropped ones.
    pub fn poll(&mut self) {
        let Ok(states) = server_ends(self.server) else { return };
        let now = Instant::now();
        for (client, opened, seen, dropped) in &mut self.conns {
            if dropped.is_some() {
                continue;
            }
            match states.get(client) {
                Some(&TCP_ESTABLISHED) => *seen = true,
                Some(_) => *dropped = Some(now - *opened),
                None if *seen => *dropped = Some(now - *opened),
                None => {}
            }
        }
    }

    /// Records that connection `i` was seen closed from the client's side (a reset, an error).
    pub fn mark(&mut self, i: usize) {
        let (_, opened, _, dropped) = &mut self.conns[i];
        dropped.get_or_insert_with(|| opened.elapsed());
    }

    pub fn is_dropped(&self, i: usize) -> bool {
        self.conns[i].3.is_some()
    }

    /// Per connection: how long it was open until the server dropped it, `None` if it still
    /// holds it.
    pub fn times(&self) -> Vec<Option<Duration>> {
        self.conns.iter().map(|c| c.3).collect()
    }
}

/// The state of each TCP socket whose local address is `server`, keyed by its remote address.
///
/// A line of `/proc/net/tcp` reads `sl local rem st ...`, addresses as `HHHHHHHH:PPPP`: the IPv4
/// address as the hex of a `u32` holding its bytes in network order but printed in host order,
/// and the port in plain hex.
fn server_ends(server: SocketAddrV4) -> io::Result<HashMap<SocketAddrV4, u8>> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let parse = |field: &str| -> Option<SocketAddrV4> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), u16::from_str_radix(port, 16).ok()?))
    };
    let mut ends = HashMap::new();
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(local), Some(remote), Some(state)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (Some(local), Some(remote), Ok(state)) = (parse(local), parse(remote), u8::from_str_radix(state, 16))
        else {
            continue;
        };
        if local == server {
            ends.insert(remote, state);
        }
    }
    Ok(ends)
}
