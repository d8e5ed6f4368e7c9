//! Talking to the server under test: a raw byte connection for replaying exact bytes, and a
//! typed connection on ferry-proto's client machine for cases that reason about replies.
//!
//! Every wait has a deadline; nothing here can hang a case.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::client::{ClientConfig, ClientConnection, ClientError};
use ferry_proto::{
    ConnRecord, Decoded, Entry, ErrorReply, FrameHead, Name, PutHead, PutMode, ReplyDecoder, Request, ServerHello,
    ServerItem,
};

use crate::case::Ending;

/// A problem talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("the server broke the protocol: {0}")]
    Protocol(#[from] ClientError),
    #[error("the connection ended: {0}")]
    Ended(Ending),
    #[error("network error: {0}")]
    Io(#[from] io::Error),
}

/// Raised when a connection of a case is refused with `BUSY` (§ 12.1): the server was full —
/// with the run's other cases, other clients, or connections it has not finished closing — and
/// what the case concluded may say more about that than about the server. Shared by every
/// connection of one case; the runner reads it when the case is done.
#[derive(Debug, Clone, Default)]
pub struct BusyFlag(Arc<AtomicBool>);

impl BusyFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The first bytes of a `BUSY` error reply: tag `0xFF`, code `0x0103`.
const BUSY_START: [u8; 3] = [0xFF, 0x01, 0x03];

/// A byte connection with deadlines.
#[derive(Debug)]
pub struct Raw {
    pub stream: TcpStream,
    pub timeout: Duration,
    /// Bytes received and not yet taken.
    pub received: Vec<u8>,
    pub eof: bool,
    pub reset: bool,
    /// Raised if the connection's first bytes are a `BUSY` error (set by [`Raw::watch_busy`]).
    busy: Option<BusyFlag>,
    /// The connection's first bytes from the server (up to a `BUSY` refusal's first three).
    head: Vec<u8>,
}

impl Raw {
    /// Connects, with `timeout` on the connect and each later wait.
    ///
    /// # Errors
    /// The connection cannot be made.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self::from_stream(stream, timeout))
    }

    /// A connection made by the caller (with its own socket options), nothing received yet.
    pub fn from_stream(stream: TcpStream, timeout: Duration) -> Self {
        Self { stream, timeout, received: Vec::new(), eof: false, reset: false, busy: None, head: Vec::new() }
    }

    /// Raise `flag` if the server's first bytes on this connection are a `BUSY` refusal.
    #[must_use]
    pub fn watch_busy(mut self, flag: &BusyFlag) -> Self {
        self.busy = Some(flag.clone());
        self
    }

    /// Writes all of `bytes`. A write error after the server closed is not an error here: the
    /// verdict comes from what was read.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.stream.write_all(bytes) {
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                self.reset = true;
                Ok(())
            }
            other => other,
        }
    }

    /// Shuts the sending side (a half-close: "the client has nothing more to say").
    pub fn finish_sending(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads what arrives, up to `max` bytes, waiting until `deadline`. Returns false if nothing
    /// more can come (EOF or reset) or the deadline passed with nothing.
    pub fn read_more(&mut self, deadline: Instant, max: usize) -> bool {
        if self.eof || self.reset {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
        let mut buf = vec![0u8; max.clamp(1, 256 * 1024)];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                // The refusal's first bytes may come in more than one read.
                if self.head.len() < BUSY_START.len() {
                    let take = (BUSY_START.len() - self.head.len()).min(n);
                    self.head.extend_from_slice(&buf[..take]);
                    if self.head == BUSY_START {
                        if let Some(flag) = &self.busy {
                            flag.raise();
                        }
                    }
                }
                self.received.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                self.reset = true;
                false
            }
        }
    }

    /// How the connection stands, for a report.
    pub fn ending(&self) -> Ending {
        if self.reset {
            Ending::Reset
        } else if self.eof {
            Ending::OrderlyClose
        } else {
            Ending::Open
        }
    }

    /// Waits for the server to close; true if it did (orderly or by reset) before the deadline.
    /// Bytes that arrive meanwhile are kept in `received`.
    pub fn wait_close(&mut self, deadline: Instant) -> bool {
        while !self.eof && !self.reset {
            if !self.read_more(deadline, 64 * 1024) && Instant::now() >= deadline {
                break;
            }
        }
        self.eof || self.reset
    }
}

/// A whole reply, assembled from its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Error(ErrorReply),
    List(Vec<Entry>),
    Stat(Entry),
    Get { offset: u64, frame: FrameHead, data: Vec<u8> },
    Put { replaced: bool },
    Delete,
    Status(Vec<ConnRecord>),
    Help(String),
    Bye,
    Shutdown,
}

impl Reply {
    /// The error code, if this is an error.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Error(e) => Some(e.code.0),
            _ => None,
        }
    }

    /// A short description, for failure messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Error(e) => format!("error {e}"),
            Self::List(v) => format!("LIST of {}", v.len()),
            Self::Stat(e) => format!("STAT {} ({} bytes)", e.name, e.size),
            Self::Get { offset, frame, data } => {
                format!("GET {} from {offset}: {} data bytes, md5 {}", frame.name, data.len(), frame.md5)
            }
            Self::Put { replaced } => format!("PUT ok (replaced: {replaced})"),
            Self::Delete => "DELETE ok".into(),
            Self::Status(v) => format!("STATUS of {}", v.len()),
            Self::Help(_) => "HELP".into(),
            Self::Bye => "BYE ok".into(),
            Self::Shutdown => "SHUTDOWN ok".into(),
        }
    }
}

/// A version 1 connection on ferry-proto's client machine.
#[derive(Debug)]
pub struct Conn {
    pub raw: Raw,
    pub client: ClientConnection,
    pub hello: ServerHello,
}

impl Conn {
    /// Connects and completes the handshake.
    ///
    /// # Errors
    /// The server refused (an error reply in `Problem::Ended`) or broke the protocol.
    pub fn open(addr: SocketAddr, token: Option<&str>, timeout: Duration) -> Result<Self, Problem> {
        Self::handshake(Raw::connect(addr, timeout)?, token, timeout)
    }

    /// Completes the handshake on a connection just made.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn handshake(raw: Raw, token: Option<&str>, timeout: Duration) -> Result<Self, Problem> {
        let client = ClientConnection::new(ClientConfig { token: token.map(str::to_owned), ..Default::default() })?;
        let mut conn = Self { raw, client, hello: placeholder_hello() };
        conn.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            match conn.next_item(deadline)? {
                Owned::Item(ServerItem::Hello(h)) => {
                    conn.hello = h;
                    return Ok(conn);
                }
                Owned::Item(ServerItem::Error(e)) => {
                    return Err(Problem::Ended(Ending::ErrorReply { code: e.code.0, message: e.message }))
                }
                _ => {}
            }
        }
    }

    fn flush(&mut self) -> Result<(), Problem> {
        let out = self.client.pending_output().to_vec();
        self.raw.send(&out)?;
        self.client.consume_output(out.len());
        Ok(())
    }

    /// Sends a request (and for a PUT, `data`).
    ///
    /// # Errors
    /// The client machine refuses (after BYE), or the network fails.
    pub fn send(&mut self, request: &Request, data: &[u8]) -> Result<(), Problem> {
        self.client.send(request)?;
        if let Request::Put(_) = request {
            self.client.send_data(data)?;
        }
        self.flush()
    }

    fn next_item(&mut self, deadline: Instant) -> Result<Owned, Problem> {
        loop {
            let (n, item) = self.client.handle_input(&self.raw.received)?;
            let owned = item.map(|i| match i {
                ServerItem::Data(d) => Owned::Data(d.to_vec()),
                other => Owned::Item(own(other)),
            });
            self.raw.received.drain(..n);
            if let Some(item) = owned {
                return Ok(item);
            }
            if !self.raw.read_more(deadline, 256 * 1024) {
                if self.raw.eof || self.raw.reset {
                    self.client.handle_eof(&self.raw.received)?;
                    return Err(Problem::Ended(self.raw.ending()));
                }
                if Instant::now() >= deadline {
                    return Err(Problem::Ended(Ending::TimedOut));
                }
            }
        }
    }

    /// Reads one whole reply.
    ///
    /// # Errors
    /// The connection ended, timed out, or the server broke the protocol.
    pub fn reply(&mut self) -> Result<Reply, Problem> {
        let deadline = Instant::now() + self.raw.timeout;
        let Owned::Item(head) = self.next_item(deadline)? else {
            return Err(Problem::Protocol(ClientError::UnexpectedReply { expected: "a reply".into(), got: "data" }));
        };
        Ok(match head {
            ServerItem::Error(e) => Reply::Error(e),
            ServerItem::ListStart { count } => {
                let mut v = Vec::new();
                for _ in 0..count {
                    if let Owned::Item(ServerItem::Entry(e)) = self.next_item(deadline)? {
                        v.push(e);
                    }
                }
                Reply::List(v)
            }
            ServerItem::StatusStart { count } => {
                let mut v = Vec::new();
                for _ in 0..count {
                    if let Owned::Item(ServerItem::Connection(c)) = self.next_item(deadline)? {
                        v.push(c);
                    }
                }
                Reply::Status(v)
            }
            ServerItem::Stat(e) => Reply::Stat(e),
            ServerItem::GetHead { offset, frame } => {
                let mut data = Vec::new();
                loop {
                    // Large bodies get a fresh deadline per read: the deadline bounds waits.
                    match self.next_item(Instant::now() + self.raw.timeout)? {
                        Owned::Data(d) => data.extend_from_slice(&d),
                        Owned::Item(ServerItem::DataEnd) => break,
                        Owned::Item(_) => {}
                    }
                }
                Reply::Get { offset, frame, data }
            }
            ServerItem::PutOk { replaced } => Reply::Put { replaced },
            ServerItem::DeleteOk => Reply::Delete,
            ServerItem::Help(t) => Reply::Help(t),
            ServerItem::ByeOk => Reply::Bye,
            ServerItem::ShutdownOk => Reply::Shutdown,
            other => {
                return Err(Problem::Protocol(ClientError::UnexpectedReply {
                    expected: "a reply".into(),
                    got: match other {
                        ServerItem::Hello(_) => "hello",
                        _ => "a fragment",
                    },
                }))
            }
        })
    }

    /// Sends a request and reads its reply.
    ///
    /// # Errors
    /// As [`Self::reply`].
    pub fn call(&mut self, request: &Request) -> Result<Reply, Problem> {
        self.send(request, &[])?;
        self.reply()
    }

    /// Uploads `data` as `name`.
    ///
    /// # Errors
    /// As [`Self::reply`].
    pub fn put(&mut self, name: &Name, mode: PutMode, data: &[u8]) -> Result<Reply, Problem> {
        let frame = FrameHead { name: name.clone(), size: data.len() as u64, md5: ferry_proto::Digest::of(data) };
        self.send(&Request::Put(PutHead::leading(mode, frame)), data)?;
        self.reply()
    }
}

/// What [`Replies`] read: the server's hello, or a whole reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Hello(ServerHello),
    Reply(Reply),
}

/// Reads whole messages from a [`Raw`] connection with ferry-proto's reply decoder and no
/// request bookkeeping: for cases that send bytes the client machine would refuse to send
/// (vectors, malformed requests) and still want every reply decoded strictly.
#[derive(Debug, Default)]
pub struct Replies {
    decoder: ReplyDecoder,
}

impl Replies {
    /// At the start of a connection: the server's hello (or an error) comes first.
    pub fn handshake() -> Self {
        Self { decoder: ReplyDecoder::new() }
    }

    /// After the hellos.
    pub fn session() -> Self {
        Self { decoder: ReplyDecoder::in_session() }
    }

    /// Whether the decoder stands between messages.
    pub fn at_boundary(&self) -> bool {
        self.decoder.at_boundary()
    }

    fn item(&mut self, raw: &mut Raw, deadline: Instant) -> Result<Owned, Problem> {
        loop {
            let decoded = match self.decoder.decode(&raw.received) {
                Ok(Decoded::Item { item, consumed }) => Some((
                    match item {
                        ServerItem::Data(d) => Owned::Data(d.to_vec()),
                        other => Owned::Item(own(other)),
                    },
                    consumed,
                )),
                Ok(Decoded::NeedMore) => None,
                Err(e) => return Err(Problem::Protocol(ClientError::Decode(e))),
            };
            if let Some((item, consumed)) = decoded {
                raw.received.drain(..consumed);
                return Ok(item);
            }
            if !raw.read_more(deadline, 256 * 1024) {
                if raw.eof || raw.reset {
                    return Err(Problem::Ended(raw.ending()));
                }
                if Instant::now() >= deadline {
                    return Err(Problem::Ended(Ending::TimedOut));
                }
            }
        }
    }

    /// Reads the next whole message; each wait for progress ends at most `timeout` later (a
    /// large GET may take longer as a whole).
    ///
    /// # Errors
    /// The connection ended or timed out first, or the bytes do not decode.
    pub fn next(&mut self, raw: &mut Raw, timeout: Duration) -> Result<Got, Problem> {
        let deadline = Instant::now() + timeout;
        let Owned::Item(head) = self.item(raw, deadline)? else {
            return Err(Problem::Protocol(ClientError::UnexpectedReply { expected: "a reply".into(), got: "data" }));
        };
        Ok(Got::Reply(match head {
            ServerItem::Hello(h) => return Ok(Got::Hello(h)),
            ServerItem::Error(e) => Reply::Error(e),
            ServerItem::ListStart { count } => {
                let mut v = Vec::new();
                for _ in 0..count {
                    if let Owned::Item(ServerItem::Entry(e)) = self.item(raw, deadline)? {
                        v.push(e);
                    }
                }
                Reply::List(v)
            }
            ServerItem::StatusStart { count } => {
                let mut v = Vec::new();
                for _ in 0..count {
                    if let Owned::Item(ServerItem::Connection(c)) = self.item(raw, deadline)? {
                        v.push(c);
                    }
                }
                Reply::Status(v)
            }
            ServerItem::Stat(e) => Reply::Stat(e),
            ServerItem::GetHead { offset, frame } => {
                let mut data = Vec::new();
                loop {
                    match self.item(raw, Instant::now() + timeout)? {
                        Owned::Data(d) => data.extend_from_slice(&d),
                        Owned::Item(ServerItem::DataEnd) => break,
                        Owned::Item(_) => {}
                    }
                }
                Reply::Get { offset, frame, data }
            }
            ServerItem::PutOk { replaced } => Reply::Put { replaced },
            ServerItem::DeleteOk => Reply::Delete,
            ServerItem::Help(t) => Reply::Help(t),
            ServerItem::ByeOk => Reply::Bye,
            ServerItem::ShutdownOk => Reply::Shutdown,
            _ => {
                return Err(Problem::Protocol(ClientError::UnexpectedReply {
                    expected: "a reply".into(),
                    got: "a fragment",
                }))
            }
        }))
    }

    /// Reads the next message, which must be a reply (not a hello).
    ///
    /// # Errors
    /// As [`Self::next`], or a hello arrived.
    pub fn reply(&mut self, raw: &mut Raw, timeout: Duration) -> Result<Reply, Problem> {
        match self.next(raw, timeout)? {
            Got::Reply(r) => Ok(r),
            Got::Hello(_) => {
                Err(Problem::Protocol(ClientError::UnexpectedReply { expected: "a reply".into(), got: "hello" }))
            }
        }
    }
}

/// An item taken out of the receive buffer.
enum Owned {
    Item(ServerItem<'static>),
    Data(Vec<u8>),
}

fn placeholder_hello() -> ServerHello {
    ServerHello {
        version: 0,
        role: ferry_proto::Role::Read,
        capabilities: ferry_proto::Capabilities(0),
        max_name_len: 0,
        max_file_size: 0,
        max_clients: 0,
        idle_timeout_ms: 0,
        head_timeout_ms: 0,
        progress_timeout_ms: 0,
    }
}

/// Items other than data own their contents already; this only re-labels the lifetime.
fn own(item: ServerItem<'_>) -> ServerItem<'static> {
    match item {
        ServerItem::Hello(h) => ServerItem::Hello(h),
        ServerItem::Error(e) => ServerItem::Error(e),
        ServerItem::ListStart { count } => ServerItem::ListStart { count },
        ServerItem::Entry(e) => ServerItem::Entry(e),
        ServerItem::Stat(e) => ServerItem::Stat(e),
        ServerItem::GetHead { offset, frame } => ServerItem::GetHead { offset, frame },
        ServerItem::PutOk { replaced } => ServerItem::PutOk { replaced },
        ServerItem::DeleteOk => ServerItem::DeleteOk,
        ServerItem::StatusStart { count } => ServerItem::StatusStart { count },
        ServerItem::Connection(c) => ServerItem::Connection(c),
        ServerItem::Help(t) => ServerItem::Help(t),
        ServerItem::ByeOk => ServerItem::ByeOk,
        ServerItem::ShutdownOk => ServerItem::ShutdownOk,
        ServerItem::LegacyOk(f) => ServerItem::LegacyOk(f),
        ServerItem::LegacyErrorStart => ServerItem::LegacyErrorStart,
        ServerItem::FetchTrailing { name, size } => ServerItem::FetchTrailing { name, size },
        ServerItem::Trailer(md5) => ServerItem::Trailer(md5),
        ServerItem::Data(_) => ServerItem::Data(&[]),
        ServerItem::DataEnd => ServerItem::DataEnd,
    }
}
