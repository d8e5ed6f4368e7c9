//! The client side of a connection as a sans-IO state machine (PROTOCOL.md § 14.2).
//!
//! It encodes requests, keeps the queue of outstanding ones (requests may be pipelined,
//! `[REQ-3]`), and checks every reply item against the request it must answer (`[REQ-7]`), the
//! negotiated version (`[HELLO-7]`) and the name rules (`[NAME-11]`, in the decoder). File data is
//! handed out as it arrives; verifying it against the frame's digest is the caller's job, because
//! a resumed download's digest also covers bytes the caller kept from before (`[GET-2]`).
//!
//! Driving it: send [`ClientConnection::pending_output`] (the hello is queued at creation), queue
//! requests with [`ClientConnection::send`] (and a PUT's data with
//! [`ClientConnection::send_data`]), feed received bytes to [`ClientConnection::handle_input`]
//! until it returns no item, and call [`ClientConnection::handle_eof`] at EOF.

use std::collections::VecDeque;

use crate::codec::{ClientItem, DecodeError, Decoded, ReplyDecoder, ServerItem};
use crate::digest::Digest;
use crate::limits::{TOKEN_LEN_MAX, VERSION};
use crate::message::{Capabilities, ClientHello, Request, RequestKind, ServerHello};
use crate::name::Name;

/// What a client offers in its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The token to present, if any (`[HELLO-2]`: visible ASCII, at most 256 bytes).
    pub token: Option<String>,
    pub min_version: u16,
    pub max_version: u16,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { token: None, min_version: VERSION, max_version: VERSION }
    }
}

/// Why a client gave up on a connection, or refused to send something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("token must be 1 to 256 visible ASCII characters")]
    BadToken,
    #[error("version range {min}..{max} is empty or starts at 0")]
    BadVersionRange { min: u16, max: u16 },
    #[error("server broke the protocol: {0}")]
    Decode(#[from] DecodeError),
    #[error("server chose version {chosen}, outside the offered {min}..{max}")]
    VersionOutOfRange { chosen: u16, min: u16, max: u16 },
    #[error("server sent a {got} reply while {expected} was expected")]
    UnexpectedReply { expected: String, got: &'static str },
    #[error("the connection is closed")]
    Closed,
    #[error("{0} was requested while a PUT's data is still owed")]
    PutInProgress(RequestKind),
    #[error("PUT data exceeds the size announced by {0} bytes")]
    PutOverrun(u64),
    #[error("a trailer was sent where none is owed")]
    NoTrailerOwed,
    #[error("{0} needs the server's TRAILER capability, which it has not announced")]
    TrailerNotOffered(RequestKind),
    #[error("the server closed the connection with {0} request(s) unanswered")]
    ConnectionLost(usize),
}

/// A request awaiting its reply, with what the reply must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outstanding {
    kind: RequestKind,
    /// The name a STAT, GET or legacy reply must carry.
    name: Option<Name>,
    /// The offset a GET reply must echo.
    offset: u64,
}

impl Outstanding {
    fn of(request: &Request) -> Self {
        let (name, offset) = match request {
            Request::Stat(n) => (Some(n.clone()), 0),
            Request::Get { name, offset } | Request::Fetch { name, offset } => (Some(name.clone()), *offset),
            _ => (None, 0),
        };
        Self { kind: request.kind(), name, offset }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// BYE or SHUTDOWN sent: nothing more may be sent.
    Leaving,
    Closed,
}

/// The client side of one connection.
#[derive(Debug)]
pub struct ClientConnection {
    config: ClientConfig,
    decoder: ReplyDecoder,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    /// Requests sent and not yet fully answered, oldest first.
    outstanding: VecDeque<Outstanding>,
    /// Data bytes still owed for the PUT being sent.
    put_owed: u64,
    /// The PUT being sent is in the trailing form and its digest is still owed (§ 6.5).
    trailer_owed: bool,
    /// The server's hello; `None` until it arrives, so a reply before it answers the hello.
    server: Option<ServerHello>,
    /// A legacy-profile connection: no hello at all.
    legacy: bool,
}

impl ClientConnection {
    /// A version 1 connection: the hello is queued for sending.
    ///
    /// # Errors
    /// The configuration breaks `[HELLO-2]` or has an empty version range.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if let Some(t) = &config.token {
            if t.is_empty() || t.len() > TOKEN_LEN_MAX || !t.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
                return Err(ClientError::BadToken);
            }
        }
        if config.min_version == 0 || config.min_version > config.max_version {
            return Err(ClientError::BadVersionRange { min: config.min_version, max: config.max_version });
        }
        let mut out = Vec::new();
        let hello = ClientHello {
            min_version: config.min_version,
            max_version: config.max_version,
            token: config.token.clone(),
        };
        hello.encode(&mut out);
        Ok(Self {
            config,
            decoder: ReplyDecoder::new(),
            state: State::Open,
            legacy: false,
            out,
            out_pos: 0,
            outstanding: VecDeque::new(),
            put_owed: 0,
            trailer_owed: false,
            server: None,
        })
    }

    /// A legacy-profile connection (§ 15) that downloads `name`: the request is queued, and the
    /// reply arrives as [`ServerItem::LegacyOk`] and data, or [`ServerItem::LegacyErrorStart`]
    /// and the message's bytes up to EOF.
    pub fn legacy(name: &Name) -> Self {
        let mut out = Vec::new();
        ClientItem::LegacyGet(name.clone()).encode(&mut out);
        Self {
            config: ClientConfig::default(),
            decoder: ReplyDecoder::legacy(),
            state: State::Leaving,
            legacy: true,
            out,
            out_pos: 0,
            outstanding: VecDeque::from([Outstanding {
                kind: RequestKind::LegacyGet,
                name: Some(name.clone()),
                offset: 0,
            }]),
            put_owed: 0,
            trailer_owed: false,
            server: None,
        }
    }

    /// The server's hello, once it has arrived.
    pub fn server(&self) -> Option<&ServerHello> {
        self.server.as_ref()
    }

    /// Requests sent and not yet fully answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes to send to the server.
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Reports that the first `n` bytes of [`Self::pending_output`] were sent.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Queues a request. Requests may be queued before the server's hello arrives and before
    /// earlier replies do (`[HELLO-11]`, `[REQ-3]`). A PUT's data must follow with
    /// [`Self::send_data`] before the next request.
    ///
    /// # Errors
    /// The connection is closed or leaving (`[BYE-2]`), or a PUT's data is still owed.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        if matches!(self.state, State::Leaving | State::Closed) {
            return Err(ClientError::Closed);
        }
        if self.put_owed > 0 || self.trailer_owed {
            return Err(ClientError::PutInProgress(request.kind()));
        }
        let trailing = match request {
            Request::Fetch { .. } => true,
            Request::Put(head) => head.is_trailing(),
            _ => false,
        };
        // `[TRL-1]`: only once the server's hello has announced the capability.
        if trailing && !self.offers(Capabilities::TRAILER) {
            return Err(ClientError::TrailerNotOffered(request.kind()));
        }
        request.encode(&mut self.out);
        self.outstanding.push_back(Outstanding::of(request));
        match request {
            Request::Put(head) => {
                self.put_owed = head.size;
                self.trailer_owed = head.is_trailing();
            }
            Request::Bye | Request::Shutdown => self.state = State::Leaving,
            _ => {}
        }
        Ok(())
    }

    /// Queues data of the PUT being sent.
    ///
    /// # Errors
    /// More data than the PUT announced.
    pub fn send_data(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let n = data.len() as u64;
        if n > self.put_owed {
            return Err(ClientError::PutOverrun(n - self.put_owed));
        }
        self.put_owed -= n;
        self.out.extend_from_slice(data);
        Ok(())
    }

    /// Queues the digest that ends a PUT in the trailing form (§ 6.5), once all its data is
    /// queued. It must be the digest of exactly the data sent (`[TRL-2]`).
    ///
    /// # Errors
    /// No trailer is owed: the PUT is in the leading form, or its data is not all queued yet.
    pub fn send_trailer(&mut self, md5: &Digest) -> Result<(), ClientError> {
        if !self.trailer_owed || self.put_owed > 0 {
            return Err(ClientError::NoTrailerOwed);
        }
        self.trailer_owed = false;
        self.out.extend_from_slice(&md5.to_hex());
        Ok(())
    }

    /// Data bytes still owed for the PUT being sent.
    pub fn put_owed(&self) -> u64 {
        self.put_owed
    }

    /// Whether the PUT being sent still owes its trailer (§ 6.5).
    pub fn trailer_owed(&self) -> bool {
        self.trailer_owed
    }

    /// Whether the server's hello, once it has arrived, announced every bit of `capability`.
    pub fn offers(&self, capability: Capabilities) -> bool {
        self.server.is_some_and(|s| s.capabilities.contains(capability))
    }

    /// Decodes the next reply item from the start of `input` and checks it against what was
    /// asked. Returns the bytes used and the item, if a whole one arrived. The request an item
    /// answers is the one [`Self::answering`] named just before the call.
    ///
    /// # Errors
    /// The server broke the protocol; the connection is then closed.
    pub fn handle_input<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<ServerItem<'a>>), ClientError> {
        if self.state == State::Closed {
            return Ok((0, None));
        }
        let at_reply_start = self.decoder.at_boundary();
        let answers_hello = self.awaiting_hello();
        let (item, consumed) = match self.decoder.decode(input) {
            Ok(Decoded::NeedMore) => return Ok((0, None)),
            Ok(Decoded::Item { item, consumed }) => (item, consumed),
            Err(e) => return Err(self.broken(e.into())),
        };
        if let Err(e) = self.check(&item, at_reply_start) {
            return Err(self.broken(e));
        }
        if self.decoder.at_boundary() && !answers_hello {
            self.outstanding.pop_front();
        }
        match &item {
            // Before the hello every error is final (`[HELLO-10]`).
            ServerItem::Error(e) if e.code.is_fatal() || answers_hello => self.state = State::Closed,
            // A refused BYE or SHUTDOWN leaves the connection usable (`[SHUT-2]`).
            ServerItem::Error(_) if self.state == State::Leaving && !self.legacy => {
                let leaving =
                    self.outstanding.iter().any(|o| matches!(o.kind, RequestKind::Bye | RequestKind::Shutdown));
                if !leaving {
                    self.state = State::Open;
                }
            }
            ServerItem::ByeOk | ServerItem::ShutdownOk => self.state = State::Closed,
            // A legacy connection carries one reply (`[LEG-3]`).
            ServerItem::DataEnd if self.legacy => self.state = State::Closed,
            _ => {}
        }
        Ok((consumed, Some(item)))
    }

    /// The request the next reply item answers, if any.
    pub fn answering(&self) -> Option<RequestKind> {
        self.outstanding.front().map(|o| o.kind)
    }

    fn check(&mut self, item: &ServerItem<'_>, at_reply_start: bool) -> Result<(), ClientError> {
        if let ServerItem::Hello(hello) = item {
            let (min, max) = (self.config.min_version, self.config.max_version);
            if !(min..=max).contains(&hello.version) {
                return Err(ClientError::VersionOutOfRange { chosen: hello.version, min, max });
            }
            if !self.awaiting_hello() {
                return Err(unexpected("no second hello", item));
            }
            self.server = Some(*hello);
            return Ok(());
        }
        if self.awaiting_hello() {
            // Before the hello only a (fatal) error may come (`[HELLO-10]`).
            return match item {
                ServerItem::Error(_) => Ok(()),
                other => Err(unexpected("the server hello", other)),
            };
        }
        if !at_reply_start {
            // Entries, records and data: the decoder already ties them to their reply's head.
            return Ok(());
        }
        let Some(front) = self.outstanding.front() else {
            // A fatal error may arrive unasked: a deadline or a shutdown (§ 12.5, § 13).
            return match item {
                ServerItem::Error(e) if e.code.is_fatal() => Ok(()),
                other => Err(unexpected("nothing", other)),
            };
        };
        let expected = front.kind;
        // A reply must be about what was asked (`[GET-1]`, `[STAT-1]`).
        let same_name = |n: &Name| front.name.as_ref() == Some(n);
        let fits = match item {
            ServerItem::Error(_) => expected != RequestKind::LegacyGet,
            ServerItem::ListStart { .. } => expected == RequestKind::List,
            ServerItem::Stat(e) => expected == RequestKind::Stat && same_name(&e.name),
            ServerItem::GetHead { offset, frame } => {
                matches!(expected, RequestKind::Get | RequestKind::Fetch)
                    && same_name(&frame.name)
                    && *offset == front.offset
            }
            // `[TRL-8]`: only a FETCH is answered in the trailing form; `[TRL-6]`: only from 0.
            ServerItem::FetchTrailing { name, .. } => {
                expected == RequestKind::Fetch && same_name(name) && front.offset == 0
            }
            // `[PUT-2]`, `[TRL-5]`: never before the data (and trailer) it acknowledges was sent.
            ServerItem::PutOk { .. } => {
                expected == RequestKind::Put
                    && (self.outstanding.len() > 1 || (self.put_owed == 0 && !self.trailer_owed))
            }
            ServerItem::DeleteOk => expected == RequestKind::Delete,
            ServerItem::StatusStart { .. } => expected == RequestKind::Status,
            ServerItem::Help(_) => expected == RequestKind::Help,
            ServerItem::ByeOk => expected == RequestKind::Bye,
            ServerItem::ShutdownOk => expected == RequestKind::Shutdown,
            ServerItem::LegacyOk(frame) => expected == RequestKind::LegacyGet && same_name(&frame.name),
            ServerItem::LegacyErrorStart => expected == RequestKind::LegacyGet,
            _ => true,
        };
        if fits {
            Ok(())
        } else {
            Err(unexpected(expected.as_str(), item))
        }
    }

    fn awaiting_hello(&self) -> bool {
        !self.legacy && self.server.is_none()
    }

    fn broken(&mut self, e: ClientError) -> ClientError {
        self.state = State::Closed;
        e
    }

    /// The server closed the connection. `unused` is input never consumed.
    ///
    /// # Errors
    /// EOF inside a reply, or with requests unanswered (§ 14.2): the connection was broken. A
    /// legacy error message ends at EOF and is not an error.
    pub fn handle_eof(&mut self, unused: &[u8]) -> Result<(), ClientError> {
        let was_closed = self.state == State::Closed;
        self.state = State::Closed;
        self.decoder.finish(unused)?;
        if self.legacy {
            self.outstanding.clear();
        }
        if !was_closed && !self.outstanding.is_empty() {
            return Err(ClientError::ConnectionLost(self.outstanding.len()));
        }
        Ok(())
    }
}

fn unexpected(expected: &str, got: &ServerItem<'_>) -> ClientError {
    let got = match got {
        ServerItem::Hello(_) => "hello",
        ServerItem::Error(_) => "error",
        ServerItem::ListStart { .. } | ServerItem::Entry(_) => "LIST",
        ServerItem::Stat(_) => "STAT",
        ServerItem::GetHead { .. } => "GET",
        ServerItem::FetchTrailing { .. } => "FETCH",
        ServerItem::PutOk { .. } => "PUT",
        ServerItem::DeleteOk => "DELETE",
        ServerItem::StatusStart { .. } | ServerItem::Connection(_) => "STATUS",
        ServerItem::Help(_) => "HELP",
        ServerItem::ByeOk => "BYE",
        ServerItem::ShutdownOk => "SHUTDOWN",
        ServerItem::LegacyOk(_) | ServerItem::LegacyErrorStart => "legacy",
        ServerItem::Data(_) | ServerItem::Trailer(_) | ServerItem::DataEnd => "data",
    };
    ClientError::UnexpectedReply { expected: expected.to_owned(), got }
}
