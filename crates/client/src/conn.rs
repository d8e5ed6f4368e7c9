//! One connection to a server: a `TcpStream`, or TLS over one ([`crate::transport`]), driven by
//! ferry-proto's sans-IO [`ClientConnection`], with a deadline on every socket operation
//! (`[TIME-6]`).
//!
//! The protocol's rules — which reply answers which request (`[REQ-7]`), what a valid name is
//! (`[NAME-11]`), every length's ceiling — are the machine's; this type moves bytes and turns
//! what comes back into values or [`Error`]s. It makes one attempt at everything: retrying is the
//! caller's business ([`crate::Client`]).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::time::{Duration, Instant};

use ferry_proto::client::{ClientConfig, ClientConnection};
use ferry_proto::codec::ServerItem;
use ferry_proto::ServerHello;
use ferry_proto::{
    Capabilities, ConnRecord, Digest, Entry, ErrorReply, FrameHead, Name, PutHead, Request, RequestKind,
};

use crate::error::Error;
use crate::progress::Progress;
use crate::transport::{handshake, HandshakeError, Stream, TlsSetup};

/// Bytes read from the socket at once, and the most a reply head may take (the largest, a HELP
/// text, is 64 KiB).
const READ_BUF: usize = 256 * 1024;

/// `[GET-9]`: a client allows a server that has no digest for a file one more second, for every
/// this many bytes of the file, to send the head of the GET reply. The frame carries the MD5
/// before the data, so such a server must read the whole file before it can answer; judged by
/// the ordinary read deadline alone, a server hashing a 2 GiB file would look dead.
pub const DIGEST_ALLOWANCE_BYTES: u64 = 16 * 1024 * 1024;

/// The time `[GET-9]` adds to the read deadline for the head of a GET reply when the server has
/// no digest for a file of `size` bytes: a second for every 16 MiB begun, so that any file that
/// is not empty gets at least one.
pub fn digest_allowance(size: u64) -> Duration {
    Duration::from_secs(size.div_ceil(DIGEST_ALLOWANCE_BYTES))
}

/// The first byte of a TLS alert record (content type 21).
const TLS_ALERT_RECORD: u8 = 0x15;

/// How long a wait longer than the read deadline goes on before the caller hears of it: a server
/// that hashes a small file answers before a notice would be worth showing.
const WAIT_NOTICE_AFTER: Duration = Duration::from_millis(500);

/// One reply item, owning its values; file data is a range of the connection's read buffer,
/// valid until the next read ([`Connection::data`]).
#[derive(Debug)]
enum Item {
    Hello(ServerHello),
    Error(ErrorReply),
    ListStart(u32),
    Entry(Entry),
    Stat(Entry),
    GetHead {
        offset: u64,
        frame: FrameHead,
    },
    /// The head of a FETCH reply in the trailing form (§ 7.10): data, then [`Item::Trailer`].
    FetchTrailing {
        name: Name,
        size: u64,
    },
    PutOk {
        replaced: bool,
    },
    DeleteOk,
    StatusStart(u32),
    Record(ConnRecord),
    Help(String),
    ByeOk,
    ShutdownOk,
    Data(Range<usize>),
    /// The digest after a trailing reply's data (§ 6.5).
    Trailer(Digest),
    DataEnd,
    /// Legacy replies never come on a version 1 connection; the machine would have refused them.
    Other(&'static str),
}

impl Item {
    /// Converts `item`, which borrows from `input`; `base` is `input`'s offset in the buffer.
    fn from_server(item: ServerItem<'_>, input: &[u8], base: usize) -> Self {
        match item {
            ServerItem::Hello(h) => Self::Hello(h),
            ServerItem::Error(e) => Self::Error(e),
            ServerItem::ListStart { count } => Self::ListStart(count),
            ServerItem::Entry(e) => Self::Entry(e),
            ServerItem::Stat(e) => Self::Stat(e),
            ServerItem::GetHead { offset, frame } => Self::GetHead { offset, frame },
            ServerItem::PutOk { replaced } => Self::PutOk { replaced },
            ServerItem::DeleteOk => Self::DeleteOk,
            ServerItem::StatusStart { count } => Self::StatusStart(count),
            ServerItem::Connection(c) => Self::Record(c),
            ServerItem::Help(h) => Self::Help(h),
            ServerItem::ByeOk => Self::ByeOk,
            ServerItem::ShutdownOk => Self::ShutdownOk,
            ServerItem::Data(d) => {
                // `d` is a slice of `input`: find where.
                let start = base + (d.as_ptr() as usize - input.as_ptr() as usize);
                Self::Data(start..start + d.len())
            }
            ServerItem::DataEnd => Self::DataEnd,
            ServerItem::FetchTrailing { name, size } => Self::FetchTrailing { name, size },
            ServerItem::Trailer(md5) => Self::Trailer(md5),
            ServerItem::LegacyOk(_) | ServerItem::LegacyErrorStart => Self::Other("a legacy reply"),
        }
    }
}

/// The head of a GET reply: what the data that follows is part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetReply {
    /// The offset the data starts at (the one asked for).
    pub offset: u64,
    /// The whole file's name, size and digest (`[GET-2]`).
    pub frame: FrameHead,
}

/// The head of a FETCH reply (§ 7.10): the GET reply's, or the trailing form's, whose digest
/// comes after the data ([`Connection::recv_data`] returns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchReply {
    /// Tag `0x83`: exactly what a GET would have received, digest first.
    Leading(GetReply),
    /// Tag `0x8B`: `size` bytes of the whole file follow, then their digest (`[TRL-10]`: the
    /// file is not received until that digest has arrived and matches).
    Trailing { name: Name, size: u64 },
}

impl FetchReply {
    /// The whole file's size.
    pub fn size(&self) -> u64 {
        match self {
            Self::Leading(r) => r.frame.size,
            Self::Trailing { size, .. } => *size,
        }
    }
}

/// An open, greeted connection.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    proto: ClientConnection,
    /// Received bytes; `buf[start..end]` are not yet used by the machine.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The address as the user gave it, for messages.
    addr: String,
    peer: SocketAddr,
    timeout: Duration,
    hello: ServerHello,
    /// Requests written so far (to tell whether a failure came before or after one was sent).
    requests: u64,
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`), each of its addresses in turn, completes the TLS
    /// handshake if `tls` asks for TLS, and then Ferry's. Every connect, read and write gives up
    /// after `timeout`, and so does the TLS handshake as a whole.
    ///
    /// Without TLS, a token is sent only to a loopback address, unless `allow_cleartext_token`
    /// (`[TLS-6]`): otherwise nothing is connected at all.
    ///
    /// # Errors
    /// The address does not resolve; a token would go in clear text to another machine; no
    /// connection could be made; the server's certificate was refused, or the TLS handshake
    /// failed; the server refused the hello (`UNAUTHORIZED`, `BUSY`…), or it broke the protocol.
    pub fn open(
        addr: &str,
        token: Option<&str>,
        timeout: Duration,
        tls: Option<&TlsSetup>,
        allow_cleartext_token: bool,
    ) -> Result<Self, Error> {
        let config = ClientConfig { token: token.map(str::to_owned), ..ClientConfig::default() };
        let proto = ClientConnection::new(config).map_err(|e| Error::protocol(addr, "greeting", e))?;
        let resolved: Vec<SocketAddr> =
            addr.to_socket_addrs().map_err(|source| Error::Resolve { addr: addr.to_owned(), source })?.collect();
        // `[TLS-6]`: decided before any connection is attempted, so nothing at all reaches a
        // server that would get the token in clear text.
        if tls.is_none() && token.is_some() && !allow_cleartext_token && !resolved.iter().all(|a| is_loopback(a.ip())) {
            return Err(Error::CleartextToken { addr: addr.to_owned() });
        }
        let mut last = None;
        let mut stream = None;
        for a in &resolved {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(stream) = stream else {
            let source = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"));
            let loopback = !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback());
            return Err(Error::Connect { addr: addr.to_owned(), source, loopback });
        };
        let io_err = |e| Error::io(addr, "connecting", timeout, e);
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        // Requests are small and written whole; do not hold them back.
        stream.set_nodelay(true).map_err(io_err)?;
        let peer = stream.peer_addr().map_err(io_err)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(setup) => match handshake(stream, setup, timeout) {
                Ok(s) => Stream::Tls(Box::new(s)),
                Err(HandshakeError::Io(e)) => return Err(Error::io(addr, "negotiating TLS", timeout, e)),
                Err(HandshakeError::Tls(e)) => return Err(Error::tls(addr, &setup.name(), e)),
                Err(HandshakeError::Alpn(e)) => {
                    return Err(Error::Tls {
                        addr: addr.to_owned(),
                        detail: format!("{e} — is this a Ferry TLS port?"),
                    })
                }
            },
        };
        let placeholder = ServerHello {
            version: 0,
            role: ferry_proto::Role::Read,
            capabilities: ferry_proto::Capabilities(0),
            max_name_len: 0,
            max_file_size: 0,
            max_clients: 0,
            idle_timeout_ms: 0,
            head_timeout_ms: 0,
            progress_timeout_ms: 0,
        };
        let mut conn = Self {
            stream,
            proto,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            addr: addr.to_owned(),
            peer,
            timeout,
            hello: placeholder,
            requests: 0,
        };
        conn.flush("greeting")?;
        let greeting = match conn.next("greeting") {
            // A TLS listener answers a plain hello with at most an alert (`[TLS-8]`): a record
            // of type 21, which no Ferry reply starts with.
            Err(Error::Protocol { .. }) if !conn.is_tls() && conn.end > 0 && conn.buf[0] == TLS_ALERT_RECORD => {
                return Err(Error::TlsPort { addr: addr.to_owned() });
            }
            other => other?,
        };
        match greeting {
            Item::Hello(h) => conn.hello = h,
            Item::Error(e) => return Err(Error::from_reply(addr, RequestKind::Bye, None, e)),
            other => return Err(conn.unexpected("greeting", &other)),
        }
        Ok(conn)
    }

    /// The server's hello: its role for us, capabilities and limits.
    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    /// Whether the server announced every bit of `capability` in its hello.
    pub fn offers(&self, capability: Capabilities) -> bool {
        self.proto.offers(capability)
    }

    /// The address as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's socket address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection is encrypted (TLS).
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Our side's socket address, as the server sees it in STATUS (on loopback, at least).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// Requests written on this connection so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests
    }

    /// Whether the connection can take a request: not closed by the protocol, and the server has
    /// not closed it or sent anything unasked (an idle `TIMEOUT`, a `SHUTTING_DOWN`) while we
    /// were not looking.
    pub fn is_usable(&mut self) -> bool {
        if self.proto.is_closed() || self.proto.outstanding() > 0 || self.start != self.end {
            return false;
        }
        matches!(self.peek_nonblocking(), Ok(None))
    }

    /// LIST (§ 7.1).
    ///
    /// # Errors
    /// The server refused, or the connection failed.
    pub fn list(&mut self) -> Result<Vec<Entry>, Error> {
        const DURING: &str = "listing the files";
        self.request(&Request::List, DURING)?;
        let count = match self.next(DURING)? {
            Item::ListStart(n) => n,
            other => return Err(self.refused_or_unexpected(RequestKind::List, None, DURING, other)),
        };
        // Not sized by `count`: it comes from the peer (`[ENC-6]`).
        let mut entries = Vec::new();
        for _ in 0..count {
            match self.next(DURING)? {
                Item::Entry(e) => entries.push(e),
                other => return Err(self.unexpected(DURING, &other)),
            }
        }
        Ok(entries)
    }

    /// STAT (§ 7.2).
    ///
    /// # Errors
    /// The server refused (`NOT_FOUND`…), or the connection failed.
    pub fn stat(&mut self, name: &Name) -> Result<Entry, Error> {
        const DURING: &str = "asking for a file's details";
        self.request(&Request::Stat(name.clone()), DURING)?;
        match self.next(DURING)? {
            Item::Stat(e) => Ok(e),
            other => Err(self.refused_or_unexpected(RequestKind::Stat, Some(name), DURING, other)),
        }
    }

    /// DELETE (§ 7.5).
    ///
    /// # Errors
    /// The server refused (`NOT_FOUND`, `FORBIDDEN`…), or the connection failed.
    pub fn delete(&mut self, name: &Name) -> Result<(), Error> {
        const DURING: &str = "deleting a file";
        self.request(&Request::Delete(name.clone()), DURING)?;
        match self.next(DURING)? {
            Item::DeleteOk => Ok(()),
            other => Err(self.refused_or_unexpected(RequestKind::Delete, Some(name), DURING, other)),
        }
    }

    /// STATUS (§ 7.6).
    ///
    /// # Errors
    /// The server refused (`UNSUPPORTED`), or the connection failed.
    pub fn status(&mut self) -> Result<Vec<ConnRecord>, Error> {
        const DURING: &str = "reading the connection history";
        self.request(&Request::Status, DURING)?;
        let count = match self.next(DURING)? {
            Item::StatusStart(n) => n,
            other => return Err(self.refused_or_unexpected(RequestKind::Status, None, DURING, other)),
        };
        let mut records = Vec::new();
        for _ in 0..count {
            match self.next(DURING)? {
                Item::Record(r) => records.push(r),
                other => return Err(self.unexpected(DURING, &other)),
            }
        }
        Ok(records)
    }

    /// HELP (§ 7.7). The text is as received: escape it before printing.
    ///
    /// # Errors
    /// The connection failed.
    pub fn help(&mut self) -> Result<String, Error> {
        const DURING: &str = "asking for help";
        self.request(&Request::Help, DURING)?;
        match self.next(DURING)? {
            Item::Help(t) => Ok(t),
            other => Err(self.refused_or_unexpected(RequestKind::Help, None, DURING, other)),
        }
    }

    /// SHUTDOWN (§ 7.9); the server then closes the connection.
    ///
    /// # Errors
    /// The server refused (`FORBIDDEN` without an admin token), or the connection failed.
    pub fn shutdown(mut self) -> Result<(), Error> {
        const DURING: &str = "asking the server to shut down";
        self.request(&Request::Shutdown, DURING)?;
        match self.next(DURING)? {
            Item::ShutdownOk => Ok(()),
            other => Err(self.refused_or_unexpected(RequestKind::Shutdown, None, DURING, other)),
        }
    }

    /// BYE (§ 7.8): says goodbye and waits for the answer (`[BYE-3]`), within the deadline.
    /// Failures are ignored: everything asked was already answered.
    pub fn bye(mut self) {
        if self.request(&Request::Bye, "saying goodbye").is_ok() {
            let _ = self.next("saying goodbye");
        }
        self.stream.close_notify();
    }

    /// Sends a GET and reads the head of its reply; the data follows through
    /// [`Self::recv_data`].
    ///
    /// A STAT of the same name goes first, in the same write (`[REQ-3]`): it is answered at once
    /// (`[LIST-5]`) and tells whether the server knows the file's digest. If it does not, the
    /// server must hash the whole file before it can send the head, so the head is given the
    /// read deadline plus [`digest_allowance`] (`[GET-9]`), and `progress` hears why, once the
    /// wait has lasted half a second (`[GET-9]`: say that the server is computing the digest).
    /// A refused STAT (`NOT_FOUND`…) is no failure: the GET's own reply decides.
    ///
    /// # Errors
    /// The server refused (`NOT_FOUND`, `BAD_OFFSET`…), did not finish computing a digest it
    /// lacked in the time allowed ([`Error::DigestTimeout`]), or the connection failed.
    pub fn get(&mut self, name: &Name, offset: u64, progress: &mut dyn Progress) -> Result<GetReply, Error> {
        match self.start_download(Request::Get { name: name.clone(), offset }, name, progress)? {
            FetchReply::Leading(reply) => Ok(reply),
            // The machine lets a trailing head answer only a FETCH (`[TRL-8]`).
            FetchReply::Trailing { .. } => Err(self.unexpected("starting a download", &Item::Other("FETCH"))),
        }
    }

    /// Sends a FETCH (§ 7.10; only to a server that announced `TRAILER`, `[TRL-1]`) and reads
    /// the head of its reply, in either form; the data follows through [`Self::recv_data`].
    ///
    /// As for [`Self::get`], a STAT goes first and the head is allowed [`digest_allowance`] if
    /// the server has no digest for the file: a server should then answer in the trailing form,
    /// whose head is not delayed (`[TRL-7]`), but it may still hash first and answer `0x83`,
    /// and which it chose is known only once the head has come.
    ///
    /// # Errors
    /// As for [`Self::get`].
    pub fn fetch(&mut self, name: &Name, offset: u64, progress: &mut dyn Progress) -> Result<FetchReply, Error> {
        self.start_download(Request::Fetch { name: name.clone(), offset }, name, progress)
    }

    /// Sends `request` (a GET or a FETCH of `name`) behind a STAT and reads the reply's head.
    fn start_download(
        &mut self,
        request: Request,
        name: &Name,
        progress: &mut dyn Progress,
    ) -> Result<FetchReply, Error> {
        const DURING: &str = "starting a download";
        let kind = request.kind();
        self.queue(&Request::Stat(name.clone()), DURING)?;
        self.request(&request, DURING)?;
        let unhashed = match self.next(DURING)? {
            Item::Stat(entry) => entry.md5.is_none().then_some(entry.size),
            // The connection goes on after a recoverable refusal, and the GET is answered.
            Item::Error(reply) if !reply.code.is_fatal() => None,
            other => return Err(self.refused_or_unexpected(RequestKind::Stat, Some(name), DURING, other)),
        };
        let head = match unhashed {
            Some(size) if size > 0 => {
                let allowed = self.timeout + digest_allowance(size);
                let mut notice = || progress.waiting_for_digest(name, size, allowed);
                self.next_within(DURING, allowed, &mut notice).map_err(|e| match e {
                    Error::Timeout { addr, .. } => {
                        Error::DigestTimeout { addr, name: name.escaped(), size, waited: allowed }
                    }
                    other => other,
                })?
            }
            _ => self.next(DURING)?,
        };
        match head {
            Item::GetHead { offset, frame } => Ok(FetchReply::Leading(GetReply { offset, frame })),
            Item::FetchTrailing { name, size } => Ok(FetchReply::Trailing { name, size }),
            other => Err(self.refused_or_unexpected(kind, Some(name), DURING, other)),
        }
    }

    /// Reads the data of the reply whose head [`Self::get`] or [`Self::fetch`] returned, handing
    /// each chunk to `chunk` as it arrives, until the last byte; then, for a reply in the
    /// trailing form, its trailer, which is returned (`None` for the leading form).
    ///
    /// # Errors
    /// The connection failed, before the last data byte or before the whole trailer (`[TRL-3]`:
    /// the data is then unverified), or `chunk` did (its error is returned as is).
    pub fn recv_data(&mut self, mut chunk: impl FnMut(&[u8]) -> Result<(), Error>) -> Result<Option<Digest>, Error> {
        const DURING: &str = "downloading";
        let mut trailer = None;
        loop {
            match self.next(DURING)? {
                Item::Data(range) => chunk(&self.buf[range])?,
                Item::Trailer(md5) => trailer = Some(md5),
                Item::DataEnd => return Ok(trailer),
                other => return Err(self.unexpected(DURING, &other)),
            }
        }
    }

    /// Sends a PUT: the head, then `head.size` bytes read from `data`, then, if the head is in
    /// the trailing form (§ 6.5), the digest `trailer` gives once all the data is out; then reads
    /// the reply. `sent` is told of each chunk as it is written: it is the caller's to hash for
    /// the trailer (`[TRL-2]`: the digest of exactly the bytes sent). If the server refuses early
    /// (`EXISTS`, `FORBIDDEN`, § 7.4 `[PUT-5]`), sending stops and the connection is closed.
    ///
    /// `trailer` may refuse (the file changed while it was read, say): the connection is then
    /// closed without the trailer, so the server stores nothing (`[TRL-3]`, `[TRL-5]`).
    ///
    /// Returns whether the upload replaced a file.
    ///
    /// # Errors
    /// The server refused, the connection failed, `data` could not be read (its error, as made
    /// by `read_err`) or ended early, or `sent` or `trailer` failed (their errors as they are).
    pub fn put(
        &mut self,
        head: PutHead,
        data: &mut dyn Read,
        read_err: &dyn Fn(io::Error) -> Error,
        sent: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
        trailer: &mut dyn FnMut() -> Result<Digest, Error>,
    ) -> Result<bool, Error> {
        const DURING: &str = "uploading";
        let name = head.name.clone();
        let mut owed = head.size;
        let trailing = head.is_trailing();
        self.request(&Request::Put(head), DURING)?;
        let mut chunk = vec![0u8; READ_BUF];
        while owed > 0 {
            let want = usize::try_from(owed).map_or(chunk.len(), |o| o.min(chunk.len()));
            let n = match data.read(&mut chunk[..want]) {
                Ok(0) => return Err(read_err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter"))),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.proto.send_data(&chunk[..n]).map_err(|e| Error::protocol(&self.addr, DURING, e))?;
            self.flush(DURING)?;
            owed -= n as u64;
            sent(&chunk[..n])?;
            // `[PUT-5]`: an early refusal need not wait for all the data.
            if owed > 0 {
                if let Some(item) = self.peek_nonblocking()? {
                    self.proto_close();
                    return Err(self.refused_or_unexpected(RequestKind::Put, Some(&name), DURING, item));
                }
            }
        }
        if trailing {
            let md5 = match trailer() {
                Ok(md5) => md5,
                Err(e) => {
                    self.proto_close();
                    return Err(e);
                }
            };
            self.proto.send_trailer(&md5).map_err(|e| Error::protocol(&self.addr, DURING, e))?;
            self.flush(DURING)?;
        }
        match self.next(DURING)? {
            Item::PutOk { replaced } => Ok(replaced),
            other => Err(self.refused_or_unexpected(RequestKind::Put, Some(&name), DURING, other)),
        }
    }

    /// Queues `request` and writes everything pending.
    fn request(&mut self, request: &Request, during: &'static str) -> Result<(), Error> {
        self.queue(request, during)?;
        self.flush(during)
    }

    /// Queues `request` without writing it, so that the next one goes out in the same write.
    fn queue(&mut self, request: &Request, during: &'static str) -> Result<(), Error> {
        self.proto.send(request).map_err(|e| Error::protocol(&self.addr, during, e))?;
        self.requests += 1;
        Ok(())
    }

    /// Writes all pending output.
    fn flush(&mut self, during: &'static str) -> Result<(), Error> {
        while !self.proto.pending_output().is_empty() {
            match self.stream.write(self.proto.pending_output()) {
                Ok(0) => {
                    return Err(Error::io(&self.addr, during, self.timeout, io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => self.proto.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.addr, during, self.timeout, e)),
            }
        }
        // TLS: out of rustls's buffers, onto the wire.
        self.stream.flush().map_err(|e| Error::io(&self.addr, during, self.timeout, e))
    }

    /// The next reply item, reading as needed; each read waits at most the read deadline.
    fn next(&mut self, during: &'static str) -> Result<Item, Error> {
        loop {
            if let Some(item) = self.decode(during)? {
                return Ok(item);
            }
            self.read_more(during)?;
        }
    }

    /// The next reply item, which must arrive whole within `allowed` (however many reads that
    /// takes); `notice` is called if it has not come after [`WAIT_NOTICE_AFTER`]. The read
    /// deadline is back to normal afterwards.
    ///
    /// # Errors
    /// As [`Self::next`]; `allowed` passing is an [`Error::Timeout`].
    fn next_within(
        &mut self,
        during: &'static str,
        allowed: Duration,
        notice: &mut dyn FnMut(),
    ) -> Result<Item, Error> {
        let start = Instant::now();
        // A deadline past what the clock can hold (a size near `FILE_SIZE_CEILING`) is none:
        // each read then waits `allowed`.
        let deadline = start.checked_add(allowed);
        let item = match self.next_by(during, Some(start + WAIT_NOTICE_AFTER.min(allowed)), allowed) {
            // Bytes of a head already read stay in the buffer for the second part of the wait.
            Err(Error::Timeout { .. }) if WAIT_NOTICE_AFTER < allowed => {
                notice();
                self.next_by(during, deadline, allowed)
            }
            other => other,
        };
        let reset = self.stream.set_read_timeout(Some(self.timeout));
        let item = item?;
        reset.map_err(|e| Error::io(&self.addr, during, self.timeout, e))?;
        Ok(item)
    }

    /// [`Self::next_within`] without the reset.
    fn next_by(&mut self, during: &'static str, deadline: Option<Instant>, allowed: Duration) -> Result<Item, Error> {
        loop {
            if let Some(item) = self.decode(during)? {
                return Ok(item);
            }
            let left = deadline.map_or(allowed, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(Error::io(&self.addr, during, self.timeout, io::ErrorKind::TimedOut.into()));
            }
            self.stream.set_read_timeout(Some(left)).map_err(|e| Error::io(&self.addr, during, self.timeout, e))?;
            self.read_more(during)?;
        }
    }

    /// Reads once from the socket into the buffer (at least one byte).
    ///
    /// # Errors
    /// The read failed or timed out, or the server closed the connection.
    fn read_more(&mut self, during: &'static str) -> Result<(), Error> {
        self.make_room();
        let n = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.addr, during, self.timeout, e)),
            }
        };
        if n == 0 {
            return Err(self.eof(during));
        }
        self.end += n;
        Ok(())
    }

    /// Decodes one item from the buffered input, if a whole one is there.
    fn decode(&mut self, during: &'static str) -> Result<Option<Item>, Error> {
        let input = &self.buf[self.start..self.end];
        match self.proto.handle_input(input) {
            Ok((used, Some(item))) => {
                let item = Item::from_server(item, input, self.start);
                self.start += used;
                Ok(Some(item))
            }
            Ok((_, None)) => Ok(None),
            Err(e) => Err(Error::protocol(&self.addr, during, e)),
        }
    }

    /// Moves unused input to the front of the buffer, so a read has room.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The server closed its side.
    fn eof(&mut self, during: &'static str) -> Error {
        let unused = &self.buf[self.start..self.end];
        match self.proto.handle_eof(unused) {
            Err(e) => Error::protocol(&self.addr, during, e),
            Ok(()) => Error::ConnectionLost {
                addr: self.addr.clone(),
                during,
                detail: "the server closed the connection".into(),
            },
        }
    }

    /// Reads what has arrived without waiting, and decodes an item if a whole one is there.
    /// `Ok(None)`: nothing (yet).
    fn peek_nonblocking(&mut self) -> Result<Option<Item>, Error> {
        const DURING: &str = "checking the connection";
        self.make_room();
        match self.stream.read_nonblocking(&mut self.buf[self.end..]) {
            Ok(Some(0)) => return Err(self.eof(DURING)),
            Ok(Some(n)) => self.end += n,
            Ok(None) => {}
            Err(e) => return Err(Error::io(&self.addr, DURING, self.timeout, e)),
        }
        self.decode(DURING)
    }

    /// Gives up on the connection: nothing more is sent.
    fn proto_close(&mut self) {
        self.stream.abort();
    }

    /// The error for a reply that is not the one expected: the server's refusal, or a broken
    /// protocol. After a fatal code, known or not (`[ERR-4]`, `[ERR-5]`), the connection is
    /// closed: the machine sends nothing more on it, and neither does the socket.
    fn refused_or_unexpected(&self, op: RequestKind, name: Option<&Name>, during: &'static str, item: Item) -> Error {
        match item {
            Item::Error(reply) => {
                if reply.code.is_fatal() {
                    self.stream.abort();
                }
                Error::from_reply(&self.addr, op, name.map(Name::escaped), reply)
            }
            other => self.unexpected(during, &other),
        }
    }

    fn unexpected(&self, during: &'static str, item: &Item) -> Error {
        // The machine checks every reply against its request, so this is a state it let
        // through that this type does not expect: say what it was.
        Error::ConnectionLost {
            addr: self.addr.clone(),
            during,
            detail: format!("unexpected reply {}", item_name(item)),
        }
    }
}

fn item_name(item: &Item) -> &'static str {
    match item {
        Item::Hello(_) => "hello",
        Item::Error(_) => "error",
        Item::ListStart(_) | Item::Entry(_) => "LIST",
        Item::Stat(_) => "STAT",
        Item::GetHead { .. } => "GET",
        Item::FetchTrailing { .. } => "FETCH",
        Item::PutOk { .. } => "PUT",
        Item::DeleteOk => "DELETE",
        Item::StatusStart(_) | Item::Record(_) => "STATUS",
        Item::Help(_) => "HELP",
        Item::ByeOk => "BYE",
        Item::ShutdownOk => "SHUTDOWN",
        Item::Data(_) | Item::Trailer(_) | Item::DataEnd => "data",
        Item::Other(what) => what,
    }
}

/// Whether `ip` is this machine's: 127.0.0.0/8, `::1`, or an IPv4 loopback address written as
/// IPv6 (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}
