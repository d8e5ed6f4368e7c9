//! A raw test client: one `TcpStream` with 5 s read and write timeouts.
//!
//! Well-formed traffic goes through ferry-proto's [`ClientConnection`], which also judges the
//! server: every reply must match its request (`[REQ-7]`), names must be valid (`[NAME-11]`),
//! lengths within their ceilings. Anything else — invalid names, bad hellos, bytes after BYE — is
//! sent with [`Client::send_raw`] and the [`wire`] encoders; from then on replies are decoded by a
//! plain [`ReplyDecoder`], which still refuses anything PROTOCOL.md does not define (`[EXT-2]`).
//!
//! Replies are read whole into a [`Reply`]; [`Client::next_item`] reads one item at a time for
//! tests that must act in the middle of a download.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferry_proto::client::{ClientConfig, ClientConnection};
use ferry_proto::codec::{Decoded, ReplyDecoder, ServerItem};
use ferry_proto::limits::VERSION;
use ferry_proto::{
    ConnRecord, Digest, Entry, ErrorCode, ErrorReply, FrameHead, Name, PutHead, PutMode, Request, ServerHello,
};
use serde_json::Value;

/// Every read and write of a test client gives up after this long without progress.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The server closed the connection at a message boundary.
    Closed,
    /// The connection was reset.
    Reset,
    /// The server closed the connection in the middle of a message.
    Truncated {
        unused: usize,
    },
    /// Nothing arrived before the deadline.
    Timeout,
    /// The server sent something PROTOCOL.md does not allow here.
    Protocol(String),
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the server closed the connection"),
            Self::Reset => f.write_str("the connection was reset"),
            Self::Truncated { unused } => {
                write!(f, "the server closed the connection inside a message ({unused} bytes)")
            }
            Self::Timeout => f.write_str("timed out waiting for the server"),
            Self::Protocol(e) => write!(f, "the server broke the protocol: {e}"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

/// One unit read from the server: a message (or a reply's part) or file data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Msg(ServerItem<'static>),
    Data(Vec<u8>),
}

/// One whole reply: its items (a list's entries, a download's head and end, …) and the file data
/// or legacy error text it carried.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub items: Vec<ServerItem<'static>>,
    pub data: Vec<u8>,
    /// The wire bytes of the items (data excluded), for checks on exact encodings.
    pub raw: Vec<u8>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.data[..self.data.len().min(32)];
        f.debug_struct("Reply")
            .field("items", &self.json())
            .field("data_len", &self.data.len())
            .field("data_start", &String::from_utf8_lossy(shown))
            .finish()
    }
}

impl Reply {
    /// The items in spec/README.md's vector form, for readable assertions and messages.
    pub fn json(&self) -> Vec<Value> {
        self.items.iter().map(ferry_proto::vector::server_item_json).collect()
    }

    /// The reply's first item.
    ///
    /// # Panics
    /// An empty reply (never returned by the client).
    pub fn head(&self) -> &ServerItem<'static> {
        &self.items[0]
    }

    /// The error, if the reply is one.
    pub fn error(&self) -> Option<&ErrorReply> {
        match self.items.first() {
            Some(ServerItem::Error(e)) => Some(e),
            _ => None,
        }
    }

    /// The error code, if the reply is an error.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error().map(|e| e.code)
    }

    /// Asserts that the reply is the error `code`.
    #[track_caller]
    pub fn assert_error(&self, code: ErrorCode) -> &Self {
        assert_eq!(self.error_code(), Some(code), "expected error {code}, got {self:?}");
        self
    }

    /// The server hello.
    #[track_caller]
    pub fn hello(&self) -> ServerHello {
        match self.head() {
            ServerItem::Hello(h) => *h,
            _ => panic!("expected a server hello, got {self:?}"),
        }
    }

    /// A LIST reply's entries, checked against its count.
    #[track_caller]
    pub fn entries(&self) -> Vec<Entry> {
        let ServerItem::ListStart { count } = self.head() else { panic!("expected a LIST reply, got {self:?}") };
        let entries: Vec<Entry> = self.items[1..]
            .iter()
            .map(|i| match i {
                ServerItem::Entry(e) => e.clone(),
                other => panic!("unexpected {other:?} in a LIST reply"),
            })
            .collect();
        assert_eq!(entries.len(), *count as usize);
        entries
    }

    /// A STAT reply's entry.
    #[track_caller]
    pub fn stat(&self) -> Entry {
        match self.head() {
            ServerItem::Stat(e) => e.clone(),
            _ => panic!("expected a STAT reply, got {self:?}"),
        }
    }

    /// The digest that followed a FETCH reply's data in the trailing form (§ 6.5), if any.
    pub fn trailer(&self) -> Option<Digest> {
        self.items.iter().find_map(|i| match i {
            ServerItem::Trailer(d) => Some(*d),
            _ => None,
        })
    }

    /// A GET (or legacy `"OK"`) reply's offset and frame head; the data is in [`Reply::data`].
    #[track_caller]
    pub fn frame(&self) -> (u64, FrameHead) {
        match self.head() {
            ServerItem::GetHead { offset, frame } => (*offset, frame.clone()),
            ServerItem::LegacyOk(frame) => (0, frame.clone()),
            _ => panic!("expected a GET reply, got {self:?}"),
        }
    }

    /// A PUT reply's outcome: whether an earlier file was replaced.
    #[track_caller]
    pub fn replaced(&self) -> bool {
        match self.head() {
            ServerItem::PutOk { replaced } => *replaced,
            _ => panic!("expected a PUT reply, got {self:?}"),
        }
    }

    /// A STATUS reply's records, checked against its count.
    #[track_caller]
    pub fn records(&self) -> Vec<ConnRecord> {
        let ServerItem::StatusStart { count } = self.head() else { panic!("expected a STATUS reply, got {self:?}") };
        let records: Vec<ConnRecord> = self.items[1..]
            .iter()
            .map(|i| match i {
                ServerItem::Connection(c) => c.clone(),
                other => panic!("unexpected {other:?} in a STATUS reply"),
            })
            .collect();
        assert_eq!(records.len(), *count as usize);
        records
    }

    /// Asserts the reply is exactly `item` (a one-item reply such as `DeleteOk`).
    #[track_caller]
    pub fn assert_is(&self, item: &ServerItem<'static>) -> &Self {
        assert_eq!(self.items.as_slice(), std::slice::from_ref(item), "got {self:?}");
        self
    }
}

/// Raw encoders for anything a test may send, valid or not: names are plain bytes here.
pub mod wire {
    use ferry_proto::message::opcode;

    /// A `name` field: `u32` length and the bytes.
    pub fn name(out: &mut Vec<u8>, name: &[u8]) {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name);
    }

    /// A client hello with any versions and token bytes.
    pub fn hello(min: u16, max: u16, token: &[u8]) -> Vec<u8> {
        let mut out = b"FERRY".to_vec();
        out.extend_from_slice(&min.to_be_bytes());
        out.extend_from_slice(&max.to_be_bytes());
        out.extend_from_slice(&(token.len() as u16).to_be_bytes());
        out.extend_from_slice(token);
        out
    }

    /// A version 1 hello without a token.
    pub fn hello_v1() -> Vec<u8> {
        hello(1, 1, b"")
    }

    pub fn stat(n: &[u8]) -> Vec<u8> {
        let mut out = vec![opcode::STAT];
        name(&mut out, n);
        out
    }

    pub fn delete(n: &[u8]) -> Vec<u8> {
        let mut out = vec![opcode::DELETE];
        name(&mut out, n);
        out
    }

    pub fn get(n: &[u8], offset: u64) -> Vec<u8> {
        let mut out = vec![opcode::GET];
        name(&mut out, n);
        out.extend_from_slice(&offset.to_be_bytes());
        out
    }

    /// A PUT head with any mode byte, name, size and digest field; the data follows separately.
    pub fn put_head(mode: u8, n: &[u8], size: u64, md5_hex: &[u8]) -> Vec<u8> {
        let mut out = vec![opcode::PUT, mode];
        name(&mut out, n);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(md5_hex);
        out
    }

    /// A whole PUT in overwrite mode with the right digest.
    pub fn put(n: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = put_head(0, n, data.len() as u64, &ferry_proto::Digest::of(data).to_hex());
        out.extend_from_slice(data);
        out
    }

    /// A legacy request (§ 15.1).
    pub fn legacy(n: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        name(&mut out, n);
        out
    }

    pub const LIST: &[u8] = &[opcode::LIST];
    pub const STATUS: &[u8] = &[opcode::STATUS];
    pub const HELP: &[u8] = &[opcode::HELP];
    pub const BYE: &[u8] = &[opcode::BYE];
    pub const SHUTDOWN: &[u8] = &[opcode::SHUTDOWN];
}

/// How to open the TCP connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// Bind to this local address first (any 127.0.0.0/8 address works on Linux loopback): a
    /// second client IP for per-address limits.
    pub local_ip: Option<IpAddr>,
    /// A fixed receive buffer (which also stops the kernel from growing it), so a client that
    /// does not read stops the server after a bounded number of bytes.
    pub recv_buffer: Option<usize>,
}

/// Connects, sets the kit's timeouts, and over TLS ([`crate::tls::use_tls`]) runs the handshake.
fn tcp_connect(addr: SocketAddr, options: ConnectOptions) -> io::Result<crate::tls::Stream> {
    let sock = tcp_socket(addr, options)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    crate::tls::Stream::new(sock)
}

fn tcp_socket(addr: SocketAddr, options: ConnectOptions) -> io::Result<TcpStream> {
    if options.local_ip.is_none() && options.recv_buffer.is_none() {
        return TcpStream::connect_timeout(&addr, IO_TIMEOUT);
    }
    use rustix::net::{AddressFamily, SocketType};
    let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = rustix::net::socket(family, SocketType::STREAM, None)?;
    if let Some(n) = options.recv_buffer {
        rustix::net::sockopt::set_socket_recv_buffer_size(&fd, n)?;
    }
    if let Some(ip) = options.local_ip {
        rustix::net::bind(&fd, &SocketAddr::new(ip, 0))?;
    }
    rustix::net::connect(&fd, &addr)?;
    Ok(TcpStream::from(fd))
}

enum Decoder {
    /// Well-formed traffic, judged by ferry-proto's client machine.
    Checked(Box<ClientConnection>),
    /// After raw bytes were sent: replies decoded as they come.
    Raw(ReplyDecoder),
}

/// What follows a reply's first item.
enum Follows {
    Nothing,
    Items(u32),
    Data,
    DataToEof,
}

/// A test client. See the module docs.
pub struct Client {
    stream: crate::tls::Stream,
    decoder: Decoder,
    inbuf: Vec<u8>,
    /// Raw-mode requests queued by [`Client::queue`].
    queued: Vec<u8>,
    /// Wire bytes of the message items read since the current reply began.
    raw: Vec<u8>,
    eof: bool,
    sent: u64,
    received: u64,
    hello: Option<ServerHello>,
    /// How long one read may wait when no deadline is given.
    io_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("local", &self.stream.sock().local_addr().ok()).finish_non_exhaustive()
    }
}

impl Client {
    fn with_stream(stream: crate::tls::Stream, decoder: Decoder) -> Self {
        Self {
            stream,
            decoder,
            inbuf: Vec::new(),
            queued: Vec::new(),
            raw: Vec::new(),
            eof: false,
            sent: 0,
            received: 0,
            hello: None,
            io_timeout: IO_TIMEOUT,
        }
    }

    /// A TCP connection on which nothing has been sent; replies are decoded as a version 1
    /// handshake. Send with [`Client::send_raw`].
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, ConnectOptions::default())
    }

    /// [`Client::connect`], for a server that may refuse the connection.
    ///
    /// # Errors
    /// The connection could not be made.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = tcp_connect(addr, ConnectOptions::default())?;
        Ok(Self::with_stream(stream, Decoder::Raw(ReplyDecoder::new())))
    }

    /// [`Client::connect`] with socket options.
    #[track_caller]
    pub fn connect_with(addr: SocketAddr, options: ConnectOptions) -> Self {
        let stream = tcp_connect(addr, options).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Self::with_stream(stream, Decoder::Raw(ReplyDecoder::new()))
    }

    /// Connects and sends a version 1 hello (with `token`, if any) without waiting for the answer:
    /// read it with [`Client::read_reply`].
    #[track_caller]
    pub fn start(addr: SocketAddr, token: Option<&str>) -> Self {
        Self::start_with(addr, token, ConnectOptions::default())
    }

    /// [`Client::start`] with socket options.
    #[track_caller]
    pub fn start_with(addr: SocketAddr, token: Option<&str>, options: ConnectOptions) -> Self {
        let config = ClientConfig { token: token.map(str::to_owned), min_version: VERSION, max_version: VERSION };
        let conn = ClientConnection::new(config).expect("a valid client configuration");
        let stream = tcp_connect(addr, options).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let mut c = Self::with_stream(stream, Decoder::Checked(Box::new(conn)));
        c.flush_checked();
        c
    }

    /// Connects and completes the handshake (with `token`, if any).
    ///
    /// # Panics
    /// The server answered with anything but its hello.
    #[track_caller]
    pub fn hello(addr: SocketAddr, token: Option<&str>) -> Self {
        Self::hello_with(addr, token, ConnectOptions::default())
    }

    /// [`Client::hello`] with socket options.
    #[track_caller]
    pub fn hello_with(addr: SocketAddr, token: Option<&str>, options: ConnectOptions) -> Self {
        let mut c = Self::start_with(addr, token, options);
        c.read_reply().hello();
        c
    }

    /// A legacy-profile connection (§ 15) that sends `request` (see [`wire::legacy`]); the reply is
    /// decoded in the legacy shape.
    #[track_caller]
    pub fn legacy(addr: SocketAddr, request: &[u8]) -> Self {
        let mut c = Self::connect(addr);
        c.decoder = Decoder::Raw(ReplyDecoder::legacy());
        c.write(request);
        c
    }

    /// Lets each read wait up to `timeout` instead of [`IO_TIMEOUT`] (for replies that take long
    /// to start, such as the first GET of a huge file, which the server hashes first).
    pub fn set_io_timeout(&mut self, timeout: Duration) {
        self.io_timeout = timeout;
    }

    /// The server hello, once read.
    pub fn server_hello(&self) -> Option<ServerHello> {
        self.hello
    }

    /// The client's own address (what the server's STATUS calls `peer`).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.sock().local_addr().expect("local address")
    }

    /// Bytes written so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes read so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The socket, for tests that need it (shutting down one side, say).
    pub fn stream(&self) -> &TcpStream {
        self.stream.sock()
    }

    #[track_caller]
    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_write(bytes) {
            panic!("writing {} bytes to the server: {e}", bytes.len());
        }
    }

    fn try_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    #[track_caller]
    fn flush_checked(&mut self) {
        let Decoder::Checked(conn) = &mut self.decoder else { return };
        let out = conn.pending_output().to_vec();
        conn.consume_output(out.len());
        self.write(&out);
    }

    /// Leaves checked mode: from now on replies are only decoded, not matched to requests.
    fn go_raw(&mut self) {
        if let Decoder::Checked(_) = self.decoder {
            let d = if self.hello.is_some() { ReplyDecoder::in_session() } else { ReplyDecoder::new() };
            self.decoder = Decoder::Raw(d);
        }
    }

    /// Sends a request.
    ///
    /// # Panics
    /// ferry-proto's client machine refuses it (after BYE, say: use [`Client::send_raw`]).
    #[track_caller]
    pub fn send(&mut self, request: &Request) {
        match &mut self.decoder {
            Decoder::Checked(conn) => {
                conn.send(request).unwrap_or_else(|e| panic!("the client machine refused {request:?}: {e}"));
                self.flush_checked();
            }
            Decoder::Raw(_) => {
                let mut out = Vec::new();
                request.encode(&mut out);
                self.write(&out);
            }
        }
    }

    /// Queues a request without sending it: [`Client::flush`] sends everything queued in one
    /// write (pipelining, `[REQ-3]`).
    #[track_caller]
    pub fn queue(&mut self, request: &Request) {
        match &mut self.decoder {
            Decoder::Checked(conn) => {
                conn.send(request).unwrap_or_else(|e| panic!("the client machine refused {request:?}: {e}"));
            }
            Decoder::Raw(_) => request.encode(&mut self.queued),
        }
    }

    /// Queues data of the PUT being queued.
    #[track_caller]
    pub fn queue_data(&mut self, data: &[u8]) {
        match &mut self.decoder {
            Decoder::Checked(conn) => {
                conn.send_data(data).unwrap_or_else(|e| panic!("the client machine refused the data: {e}"));
            }
            Decoder::Raw(_) => self.queued.extend_from_slice(data),
        }
    }

    /// Sends everything queued, in one write.
    #[track_caller]
    pub fn flush(&mut self) {
        let mut out = std::mem::take(&mut self.queued);
        if let Decoder::Checked(conn) = &mut self.decoder {
            out.extend_from_slice(conn.pending_output());
            let n = conn.pending_output().len();
            conn.consume_output(n);
        }
        self.write(&out);
    }

    /// Sends data of the PUT being sent.
    #[track_caller]
    pub fn send_data(&mut self, data: &[u8]) {
        match &mut self.decoder {
            Decoder::Checked(conn) => {
                conn.send_data(data).unwrap_or_else(|e| panic!("the client machine refused the data: {e}"));
                self.flush_checked();
            }
            Decoder::Raw(_) => self.write(data),
        }
    }

    /// Sends any bytes at all. Replies are no longer matched to requests afterwards.
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.go_raw();
        self.write(bytes);
    }

    /// [`Client::send_raw`] for a server that may already have closed: the write's error is
    /// returned instead of failing the test.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.go_raw();
        self.try_write(bytes)
    }

    /// Sends `pattern` over and over (raw: replies are no longer matched to requests) without
    /// reading, until the server stops taking bytes — no write progress for `stall` — or `max`
    /// bytes are sent. Returns the bytes sent.
    pub fn send_until_blocked(&mut self, pattern: &[u8], max: usize, stall: Duration) -> usize {
        self.go_raw();
        let chunk: Vec<u8> = pattern.iter().copied().cycle().take(64 * 1024 / pattern.len() * pattern.len()).collect();
        self.stream.sock().set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut sent = 0;
        let mut last_progress = Instant::now();
        while sent < max && last_progress.elapsed() < stall {
            let at = sent % chunk.len();
            let want = (chunk.len() - at).min(max - sent);
            match self.stream.write(&chunk[at..at + want]) {
                Ok(n) if n > 0 => {
                    sent += n;
                    self.sent += n as u64;
                    last_progress = Instant::now();
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => panic!("sending pipelined requests: {other:?}"),
            }
        }
        self.stream.sock().set_write_timeout(Some(self.io_timeout)).unwrap();
        sent
    }

    /// Shuts down the sending side: the server reads EOF.
    pub fn shutdown_write(&self) {
        let _ = self.stream.sock().shutdown(Shutdown::Write);
    }

    /// Sends a request and reads its whole reply.
    #[track_caller]
    pub fn request(&mut self, request: &Request) -> Reply {
        self.send(request);
        self.read_reply()
    }

    /// LIST, expecting success.
    #[track_caller]
    pub fn list(&mut self) -> Vec<Entry> {
        self.request(&Request::List).entries()
    }

    /// STAT.
    #[track_caller]
    pub fn stat(&mut self, name: &str) -> Reply {
        self.request(&Request::Stat(crate::name(name)))
    }

    /// GET from `offset`.
    #[track_caller]
    pub fn get(&mut self, name: &str, offset: u64) -> Reply {
        self.request(&Request::Get { name: crate::name(name), offset })
    }

    /// GET from `offset`, expecting success: the frame head and the data.
    #[track_caller]
    pub fn get_ok(&mut self, name: &str, offset: u64) -> (FrameHead, Vec<u8>) {
        let reply = self.get(name, offset);
        let (echoed, frame) = reply.frame();
        assert_eq!(echoed, offset, "[GET-1] the offset is echoed");
        assert_eq!(reply.data.len() as u64, frame.size - offset, "[GET-1] size - offset data bytes");
        (frame, reply.data)
    }

    /// FETCH from `offset` (§ 7.10): the reply is a GET reply, or a trailing frame.
    #[track_caller]
    pub fn fetch(&mut self, name: &str, offset: u64) -> Reply {
        self.request(&Request::Fetch { name: crate::name(name), offset })
    }

    /// PUT `data` under `name` in the trailing form (§ 6.5), with `trailer` after the data.
    #[track_caller]
    pub fn put_trailing(&mut self, name: &str, data: &[u8], mode: PutMode, trailer: Digest) -> Reply {
        self.send(&Request::Put(PutHead::trailing(mode, crate::name(name), data.len() as u64)));
        self.send_data(data);
        match &mut self.decoder {
            Decoder::Checked(conn) => {
                conn.send_trailer(&trailer).unwrap_or_else(|e| panic!("the client machine refused the trailer: {e}"));
                self.flush_checked();
            }
            Decoder::Raw(_) => self.write(&trailer.to_hex()),
        }
        self.read_reply()
    }

    /// Sends a PUT head; its `size` bytes of data follow with [`Client::send_data`].
    #[track_caller]
    pub fn put_head(&mut self, mode: PutMode, name: &str, size: u64, md5: Digest) {
        let head = PutHead::leading(mode, FrameHead { name: crate::name(name), size, md5 });
        self.send(&Request::Put(head));
    }

    /// PUT `data` under `name`, with its right digest.
    #[track_caller]
    pub fn put(&mut self, name: &str, data: &[u8], mode: PutMode) -> Reply {
        self.put_head(mode, name, data.len() as u64, Digest::of(data));
        self.send_data(data);
        self.read_reply()
    }

    /// PUT in overwrite mode, expecting success; returns whether a file was replaced.
    #[track_caller]
    pub fn put_ok(&mut self, name: &str, data: &[u8]) -> bool {
        self.put(name, data, PutMode::Overwrite).replaced()
    }

    /// DELETE.
    #[track_caller]
    pub fn delete(&mut self, name: &str) -> Reply {
        self.request(&Request::Delete(crate::name(name)))
    }

    /// STATUS, expecting success.
    #[track_caller]
    pub fn status(&mut self) -> Vec<ConnRecord> {
        self.request(&Request::Status).records()
    }

    /// HELP, expecting success.
    #[track_caller]
    pub fn help(&mut self) -> String {
        match self.request(&Request::Help).head() {
            ServerItem::Help(t) => t.clone(),
            other => panic!("expected a HELP reply, got {other:?}"),
        }
    }

    /// BYE: expects `0x88` and then the close.
    #[track_caller]
    pub fn bye(mut self) {
        self.request(&Request::Bye).assert_is(&ServerItem::ByeOk);
        self.expect_closed(IO_TIMEOUT);
    }

    /// Reads one whole reply.
    ///
    /// # Panics
    /// The connection closed, timed out or carried something PROTOCOL.md does not allow.
    #[track_caller]
    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply().unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// Reads one whole reply.
    ///
    /// # Errors
    /// As [`Client::next_item`]; EOF in the middle of a reply is [`ReadError::Truncated`].
    pub fn try_read_reply(&mut self) -> Result<Reply, ReadError> {
        self.raw.clear();
        let mut reply = Reply::default();
        let head = match self.next_item(None)? {
            Some(Item::Msg(m)) => m,
            Some(Item::Data(_)) => return Err(ReadError::Protocol("data outside a reply".into())),
            None => return Err(ReadError::Closed),
        };
        let follows = match &head {
            ServerItem::ListStart { count } | ServerItem::StatusStart { count } => Follows::Items(*count),
            ServerItem::GetHead { .. } | ServerItem::FetchTrailing { .. } | ServerItem::LegacyOk(_) => Follows::Data,
            ServerItem::LegacyErrorStart => Follows::DataToEof,
            ServerItem::Hello(h) => {
                self.hello = Some(*h);
                Follows::Nothing
            }
            _ => Follows::Nothing,
        };
        reply.items.push(head);
        let truncated = |c: &Self| ReadError::Truncated { unused: c.inbuf.len() };
        match follows {
            Follows::Nothing => {}
            Follows::Items(n) => {
                for _ in 0..n {
                    match self.next_item(None)? {
                        Some(Item::Msg(m)) => reply.items.push(m),
                        Some(Item::Data(_)) => return Err(ReadError::Protocol("data in a list".into())),
                        None => return Err(truncated(self)),
                    }
                }
            }
            Follows::Data => loop {
                match self.next_item(None)? {
                    Some(Item::Data(d)) => reply.data.extend_from_slice(&d),
                    Some(Item::Msg(ServerItem::DataEnd)) => {
                        reply.items.push(ServerItem::DataEnd);
                        break;
                    }
                    // The digest after a FETCH reply's data (§ 6.5).
                    Some(Item::Msg(trailer @ ServerItem::Trailer(_))) => reply.items.push(trailer),
                    Some(Item::Msg(m)) => return Err(ReadError::Protocol(format!("{m:?} inside file data"))),
                    None => return Err(truncated(self)),
                }
            },
            Follows::DataToEof => loop {
                match self.next_item(None) {
                    Ok(Some(Item::Data(d))) => reply.data.extend_from_slice(&d),
                    Ok(Some(Item::Msg(m))) => return Err(ReadError::Protocol(format!("{m:?} in a legacy error"))),
                    Ok(None) | Err(ReadError::Closed | ReadError::Reset) => break,
                    Err(e) => return Err(e),
                }
            },
        }
        reply.raw = std::mem::take(&mut self.raw);
        Ok(reply)
    }

    /// Reads the next item, waiting until `deadline` (or [`IO_TIMEOUT`] per read if `None`).
    /// `Ok(None)` is EOF at a message boundary.
    ///
    /// # Errors
    /// A timeout, a reset, EOF inside a message, or a protocol violation.
    pub fn next_item(&mut self, deadline: Option<Instant>) -> Result<Option<Item>, ReadError> {
        loop {
            let Self { decoder, inbuf, .. } = self;
            let decoded = match decoder {
                Decoder::Checked(conn) => conn.handle_input(inbuf).map_err(|e| ReadError::Protocol(e.to_string()))?,
                Decoder::Raw(d) => match d.decode(inbuf).map_err(|e| ReadError::Protocol(e.to_string()))? {
                    Decoded::Item { item, consumed } => (consumed, Some(item)),
                    Decoded::NeedMore => (0, None),
                },
            };
            if let (used, Some(item)) = decoded {
                let item = match item {
                    ServerItem::Data(d) => Item::Data(d.to_vec()),
                    other => Item::Msg(owned(other)),
                };
                if let Item::Msg(_) = item {
                    self.raw.extend_from_slice(&self.inbuf[..used]);
                }
                self.inbuf.drain(..used);
                return Ok(Some(item));
            }
            if self.eof {
                return self.at_eof();
            }
            match self.fill(deadline)? {
                0 => {
                    self.eof = true;
                    return self.at_eof();
                }
                _ => continue,
            }
        }
    }

    fn at_eof(&mut self) -> Result<Option<Item>, ReadError> {
        let clean = match &mut self.decoder {
            // `ConnectionLost` (requests unanswered) is still a close at a boundary.
            Decoder::Checked(conn) => {
                !matches!(conn.handle_eof(&self.inbuf), Err(ferry_proto::client::ClientError::Decode(_)))
            }
            Decoder::Raw(d) => d.finish(&self.inbuf).is_ok(),
        };
        if clean && self.inbuf.is_empty() {
            Ok(None)
        } else {
            Err(ReadError::Truncated { unused: self.inbuf.len() })
        }
    }

    fn fill(&mut self, deadline: Option<Instant>) -> Result<usize, ReadError> {
        let timeout = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(ReadError::Timeout);
                }
                (d - now).max(Duration::from_millis(1))
            }
            None => self.io_timeout,
        };
        self.stream.sock().set_read_timeout(Some(timeout)).map_err(ReadError::Io)?;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.received += n as u64;
                    Ok(n)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(ReadError::Timeout),
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                    self.eof = true;
                    Err(ReadError::Reset)
                }
                Err(e) => Err(ReadError::Io(e)),
            };
        }
    }

    /// Expects the server to close the connection within `within`, sending nothing more.
    #[track_caller]
    pub fn expect_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        match self.next_item(Some(deadline)) {
            Ok(None) | Err(ReadError::Reset) => {}
            Ok(Some(item)) => panic!("expected the connection to close, got {item:?}"),
            Err(e) => panic!("expected the connection to close within {within:?}: {e}"),
        }
    }

    /// Expects the fatal error `code`, then the close (`[ERR-4]`).
    #[track_caller]
    pub fn expect_fatal(&mut self, code: ErrorCode) -> Reply {
        assert!(code.is_fatal());
        let reply = self.read_reply();
        reply.assert_error(code);
        self.expect_closed(IO_TIMEOUT);
        reply
    }

    /// Expects nothing at all — no byte, no close — for `duration`. (Asserting that something
    /// does not happen takes the time it is asserted for.)
    #[track_caller]
    pub fn expect_silence(&mut self, duration: Duration) {
        match self.next_item(Some(Instant::now() + duration)) {
            Err(ReadError::Timeout) => {}
            Ok(item) => panic!("expected silence for {duration:?}, got {item:?}"),
            Err(e) => panic!("expected silence for {duration:?}: {e}"),
        }
    }
}

/// The item with its borrowed parts copied (only data borrows, and it is handled apart).
fn owned(item: ServerItem<'_>) -> ServerItem<'static> {
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
        ServerItem::DataEnd => ServerItem::DataEnd,
        ServerItem::Data(_) => unreachable!("data is copied by the caller"),
    }
}

/// A name as bytes, for [`wire`].
pub fn name_bytes(name: &Name) -> &[u8] {
    name.as_str().as_bytes()
}
