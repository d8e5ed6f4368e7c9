//! The server side of a connection as a sans-IO state machine (PROTOCOL.md § 14.1).
//!
//! It owns everything the protocol decides — the handshake, roles, names, order of checks, which
//! error ends a connection, deadlines, digests of uploads, the shutdown drain — and nothing about
//! sockets or storage. An engine drives it like this:
//!
//! 1. Feed received bytes to [`ServerConnection::handle_input`] until it returns no event; act on
//!    each [`Event`] (a [`Command`] must be answered with one `respond_*` call, or
//!    [`ServerConnection::accept_put`] for an upload, before more input is processed).
//! 2. Send [`ServerConnection::pending_output`], then report it with `consume_output`. After
//!    [`ServerConnection::respond_get`], send the file's bytes yourself (sendfile, copy) and report
//!    them with [`ServerConnection::body_sent`]. While the client takes none of them, give up no
//!    later than [`ServerConnection::send_deadline`] (`[TIME-5]`): drop the connection.
//! 3. Wait for more input no later than [`ServerConnection::poll_timeout`]; when it passes, call
//!    [`ServerConnection::handle_timeout`]. On EOF call [`ServerConnection::handle_eof`].
//!
//! What a connection holds is bounded whatever the client does (`[RES-1]`): it stops taking
//! requests while more than [`ServerConfig::max_output`] reply bytes wait for the client
//! (`[RES-2]`), and produces LIST and STATUS replies as the client takes them (`[RES-3]`), so
//! pipelining cannot turn a few bytes of requests into megabytes of replies.
//! 4. When [`ServerConnection::is_closed`], flush the pending output and close the socket. An
//!    upload not completed by then is discarded by the engine.
//!
//! Time is always an argument, so tests run on simulated time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{ClientItem, Decoded, RequestDecoder, ServerItem};
use crate::digest::{Digest, Hasher};
use crate::limits::{ReadLimits, PROGRESS_UNIT, VERSION};
use crate::message::{
    Capabilities, ConnRecord, Entry, ErrorCode, ErrorReply, FrameHead, PutHead, Request, RequestKind, Role, ServerHello,
};
use crate::name::Name;

/// What a server connection needs to know about its server. Shared by all connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name length and file size limits, announced in the hello (§ 3.2).
    pub limits: ReadLimits,
    /// Announced in the hello; the engine enforces it (§ 12.1). 0: not announced.
    pub max_clients: u32,
    /// How long a new connection has to complete its hello (`[TIME-1]`).
    pub handshake_timeout: Duration,
    /// How long a connection may wait between requests (`[TIME-2]`). `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// How long a request head may take to arrive, from its first byte (`[TIME-7]`). A head is a
    /// few kilobytes at most, so this is short: a slowloris client is cut off by it.
    pub head_timeout: Duration,
    /// How long a transfer may go without moving [`PROGRESS_UNIT`] bytes (or the rest of it), in
    /// either direction: PUT data arriving (`[TIME-9]`), reply bytes taken by the client
    /// (`[TIME-5]`). It bounds stalls, not whole transfers.
    pub progress_timeout: Duration,
    /// Reply bytes held for the client before the connection stops taking requests (`[RES-2]`).
    /// A connection's output buffer stays below this plus one reply (a HELP text, an entry).
    pub max_output: usize,
    /// Optional features offered (§ 4.5); `LEGACY` also switches the legacy profile on.
    pub capabilities: Capabilities,
    /// The role of a client without a token; `None` refuses such clients (`[AUTH-2]`).
    pub anonymous: Option<Role>,
    /// Tokens and their roles (`[AUTH-1]`). Never logged (`[SEC-1]`).
    pub tokens: HashMap<String, Role>,
    /// Refuse every PUT and DELETE (`[ROLE-2]`).
    pub read_only: bool,
    /// The HELP reply (§ 7.7).
    pub help_text: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: ReadLimits { max_name_len: 255, max_file_size: 64 << 30 },
            max_clients: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            head_timeout: Duration::from_secs(10),
            progress_timeout: Duration::from_secs(30),
            max_output: DEFAULT_MAX_OUTPUT,
            capabilities: Capabilities::ALL_V1,
            anonymous: Some(Role::Write),
            tokens: HashMap::new(),
            read_only: false,
            help_text: default_help_text(),
        }
    }
}

/// The default of [`ServerConfig::max_output`]: Kestrel's `MaxResponseBufferSize` is the same.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// A summary of the commands, for HELP.
pub fn default_help_text() -> String {
    "Ferry file server, protocol version 1.\n\
     LIST              list files: name, size, modification time, MD5 where known\n\
     STAT name         one file's entry\n\
     GET name [offset] download a file, or resume it from an offset\n\
     PUT name          upload a file (overwrite, or create-only); published only once verified\n\
     DELETE name       remove a file\n\
     STATUS            the server's recent connections\n\
     HELP              this text\n\
     BYE               say goodbye and close\n\
     SHUTDOWN          stop the server gracefully (admin only)\n"
        .to_owned()
}

impl ServerConfig {
    fn hello(&self, role: Role) -> ServerHello {
        // 0 means "none" on the wire: a deadline under 1 ms is announced as 1 ms, not as none.
        let ms = |d: Option<Duration>| d.map_or(0, |d| u32::try_from(d.as_millis().max(1)).unwrap_or(u32::MAX));
        let limits = self.limits.clamped();
        ServerHello {
            version: VERSION,
            role,
            capabilities: Capabilities(self.capabilities.0 & Capabilities::ALL_V1.0),
            max_name_len: limits.max_name_len,
            max_file_size: limits.max_file_size,
            max_clients: self.max_clients,
            idle_timeout_ms: ms(self.idle_timeout),
            // `[TIME-8]`, `[TIME-10]`: always enforced, so always announced (never 0).
            head_timeout_ms: ms(Some(self.head_timeout)),
            progress_timeout_ms: ms(Some(self.progress_timeout)),
        }
    }

    fn legacy(&self) -> bool {
        self.capabilities.contains(Capabilities::LEGACY)
    }
}

/// A request the host must carry out and answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Answer with [`ServerConnection::respond_list`].
    List,
    /// Answer with [`ServerConnection::respond_stat`], or `NOT_FOUND`.
    Stat(Name),
    /// Answer with [`ServerConnection::respond_get`], or `NOT_FOUND`. Also a legacy request.
    /// When `trailing` (a FETCH, § 7.10, from offset 0), the host may answer with
    /// [`ServerConnection::respond_get_trailing`] instead, if it does not know the file's digest
    /// (`[TRL-7]`).
    Get { name: Name, offset: u64, trailing: bool },
    /// Prepare a temporary file and [`ServerConnection::accept_put`], or refuse (`EXISTS`,
    /// `STORAGE_FULL`) with [`ServerConnection::respond_error`].
    Put(PutHead),
    /// Answer with [`ServerConnection::respond_delete`], or `NOT_FOUND`.
    Delete(Name),
    /// Answer with [`ServerConnection::respond_status`].
    Status,
}

/// What the host must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The handshake succeeded.
    Connected { role: Role },
    /// A request to carry out.
    Command(Command),
    /// Data of the accepted upload: write it to the temporary file.
    PutData(&'a [u8]),
    /// The upload's data (and trailer, § 6.5) is complete. If `verified`, publish the file and
    /// answer with [`ServerConnection::respond_put`] (or an error); if not, the mismatch has been
    /// answered already (`[PUT-3]`): discard the temporary file. `md5` is the digest of the data
    /// received, which a verified upload's file has: a digest cache may keep it.
    PutComplete { verified: bool, md5: Digest },
    /// A request the connection refused by itself (bad name, role, unsupported), for the log.
    Refused { kind: RequestKind, error: ErrorReply },
    /// An admin asked the server to shut down (`[SHUT-1]`): start the drain.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Command(RequestKind),
    /// `trailing`: a FETCH, which may be answered in the trailing form (§ 7.10).
    Get {
        offset: u64,
        trailing: bool,
    },
    PutCommit,
}

#[derive(Debug)]
enum State {
    AwaitHello,
    Ready,
    /// Waiting for the host to answer a request.
    Serving(Awaiting),
    /// Waiting for the host to accept or refuse a PUT; its data has not been read yet.
    Deciding {
        head: PutHead,
    },
    Receiving {
        hasher: Hasher,
        head: PutHead,
        /// The digest that followed the data, in the trailing form (§ 6.5).
        trailer: Option<Digest>,
    },
    Discarding,
    /// The host is sending a GET's data; in the trailing form, then its digest (§ 7.10).
    Sending {
        remaining: u64,
        trailer: bool,
    },
    /// A long reply, encoded as the client takes it (`[RES-3]`).
    Streaming(Stream),
    Closed,
}

/// The rest of a LIST or STATUS reply. The items are shared (a listing may serve many
/// connections) and encoded a few at a time, so a connection's buffer never holds the whole reply.
#[derive(Debug)]
enum Stream {
    Entries { items: Arc<[Entry]>, next: usize },
    Records { items: Arc<[ConnRecord]>, next: usize },
}

impl Stream {
    /// Appends the next item's wire form; returns false once every item has been.
    fn encode_next(&mut self, out: &mut Vec<u8>) -> bool {
        fn next_of<T>(items: &[T], next: &mut usize, out: &mut Vec<u8>, encode: fn(&T, &mut Vec<u8>)) -> bool {
            let Some(item) = items.get(*next) else { return false };
            encode(item, out);
            *next += 1;
            true
        }
        match self {
            Self::Entries { items, next } => next_of(items, next, out, Entry::encode),
            Self::Records { items, next } => next_of(items, next, out, ConnRecord::encode),
        }
    }
}

/// The items a `u32` count can announce: a namespace of more than 2^32 - 1 files cannot be listed
/// in version 1, so the first 2^32 - 1 are.
fn countable<T: Clone>(items: Arc<[T]>) -> (u32, Arc<[T]>) {
    match u32::try_from(items.len()) {
        Ok(count) => (count, items),
        Err(_) => (u32::MAX, items[..u32::MAX as usize].into()),
    }
}

/// When the client last made progress taking reply bytes (`[TIME-5]`): `moved` bytes since
/// `since`. A unit of [`PROGRESS_UNIT`] bytes restarts the clock; so does an empty output.
#[derive(Debug, Clone, Copy)]
struct SendClock {
    since: Instant,
    moved: u64,
}

/// The server side of one connection.
#[derive(Debug)]
pub struct ServerConnection {
    config: std::sync::Arc<ServerConfig>,
    decoder: RequestDecoder,
    state: State,
    role: Option<Role>,
    /// The connection speaks the legacy profile (§ 15): its replies have the legacy shape.
    legacy: bool,
    /// Reply bytes not yet handed to the socket; `out_pos` of them already were.
    out: Vec<u8>,
    out_pos: usize,
    /// When the current deadline passes, if there is one.
    deadline: Option<Instant>,
    /// Set when the first byte of the current request arrived (`[TIME-7]`).
    in_request: bool,
    /// PUT data bytes (stored or discarded) since the read-side progress deadline last moved
    /// (`[TIME-9]`).
    data_moved: u64,
    /// Running while reply bytes wait for the client (`[TIME-5]`).
    send_clock: Option<SendClock>,
    shutting_down: bool,
    /// How the connection ended, when it has: the error sent, if any.
    close_reason: Option<ErrorCode>,
}

impl ServerConnection {
    /// A new connection, accepted at `now`.
    pub fn new(config: std::sync::Arc<ServerConfig>, now: Instant) -> Self {
        let deadline = now.checked_add(config.handshake_timeout);
        Self {
            decoder: RequestDecoder::new(config.limits)
                .with_trailer(config.capabilities.contains(Capabilities::TRAILER)),
            config,
            state: State::AwaitHello,
            role: None,
            legacy: false,
            out: Vec::new(),
            out_pos: 0,
            deadline,
            in_request: false,
            data_moved: 0,
            send_clock: None,
            shutting_down: false,
            close_reason: None,
        }
    }

    /// The bytes that turn away a connection over capacity (`[CAP-1]`): sent without reading.
    pub fn busy_reply() -> Vec<u8> {
        let mut out = Vec::new();
        ErrorReply::new(ErrorCode::BUSY, "server at capacity, try again later").encode(&mut out);
        out
    }

    /// The role granted at the handshake.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// Whether this connection speaks the legacy profile.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Whether the connection is over: flush [`Self::pending_output`] and close the socket.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The fatal error the connection was closed with, if any.
    pub fn close_reason(&self) -> Option<ErrorCode> {
        self.close_reason
    }

    /// Whether the connection wants more input now: not while the host is answering or sending,
    /// nor while more than [`ServerConfig::max_output`] reply bytes wait for the client
    /// (`[RES-2]`). Input it does not want stays in the transport, whose flow control then stops
    /// the client.
    pub fn wants_input(&self) -> bool {
        matches!(self.state, State::AwaitHello | State::Ready | State::Receiving { .. } | State::Discarding)
            && self.pending_output().len() < self.config.max_output.max(1)
    }

    /// Whether a request is under way (for the drain: a transfer in flight).
    pub fn is_busy(&self) -> bool {
        self.in_request
            || matches!(
                self.state,
                State::Serving(_)
                    | State::Deciding { .. }
                    | State::Sending { .. }
                    | State::Receiving { .. }
                    | State::Streaming(_)
            )
    }

    /// Bytes to send to the client.
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Reports that the first `n` bytes of [`Self::pending_output`] were sent at `now`. A long
    /// reply's next items are encoded as room is made for them.
    pub fn consume_output(&mut self, n: usize, now: Instant) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.note_sent(n as u64, now);
        self.refill(now);
        self.settle(now);
    }

    /// When the engine must give up on a client that takes no reply bytes (`[TIME-5]`): by then
    /// [`PROGRESS_UNIT`] bytes, or all that waited, must have been sent since the clock last
    /// moved. `None` while nothing waits to be sent. The connection cannot be told (the client
    /// is not reading): the engine drops it.
    pub fn send_deadline(&self) -> Option<Instant> {
        self.send_clock.and_then(|c| c.since.checked_add(self.config.progress_timeout))
    }

    fn note_sent(&mut self, n: u64, now: Instant) {
        if let Some(clock) = &mut self.send_clock {
            clock.moved += n;
            if clock.moved >= PROGRESS_UNIT {
                *clock = SendClock { since: now, moved: 0 };
            }
        }
    }

    /// Starts the send clock when bytes wait to be sent, stops it when none do. Every public
    /// method that can queue output or report it sent ends here.
    fn settle(&mut self, now: Instant) {
        let waiting = !self.pending_output().is_empty() || matches!(self.state, State::Sending { .. });
        if !waiting {
            self.send_clock = None;
        } else if self.send_clock.is_none() {
            self.send_clock = Some(SendClock { since: now, moved: 0 });
        }
    }

    /// Encodes more of a long reply while the output is below its bound (`[RES-3]`); when the
    /// last item is out, the request is done.
    fn refill(&mut self, now: Instant) {
        let bound = self.config.max_output.max(1);
        while self.out.len() - self.out_pos < bound {
            let State::Streaming(stream) = &mut self.state else { return };
            if !stream.encode_next(&mut self.out) {
                self.request_done(now);
                return;
            }
        }
    }

    /// The next deadline, when the engine must call [`Self::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitHello | State::Ready | State::Receiving { .. } | State::Discarding => self.deadline,
            // The PUT's data is still to come: its progress deadline runs.
            State::Deciding { .. } => self.deadline,
            _ => None,
        }
    }

    /// Closes the connection with `TIMEOUT` if its deadline has passed (`[TIME-1]`..`[TIME-4]`).
    /// Returns whether it did.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {
                let what = match self.state {
                    State::AwaitHello => "handshake deadline passed",
                    State::Ready if !self.in_request => "idle deadline passed",
                    State::Ready => "request head deadline passed",
                    _ => "upload data stalled past the progress deadline",
                };
                self.fatal(ErrorCode::TIMEOUT, what);
                self.settle(now);
                true
            }
            _ => false,
        }
    }

    /// The peer closed its side. Returns whether that was at a message boundary (a clean close)
    /// given the `unused` input; either way the connection is over, and an upload in progress
    /// is discarded (`[STORE-2]`).
    pub fn handle_eof(&mut self, unused: &[u8]) -> bool {
        let clean = self.decoder.finish(unused).is_ok() && !matches!(self.state, State::Receiving { .. });
        self.state = State::Closed;
        clean
    }

    /// Starts the graceful drain (§ 13) at `now`: an idle connection is told and closed now; a
    /// busy one after its current request is answered (`[SHUT-3]`).
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let idle = matches!(self.state, State::AwaitHello) || (matches!(self.state, State::Ready) && !self.in_request);
        if idle {
            self.fatal(ErrorCode::SHUTTING_DOWN, "server shutting down");
        }
        self.settle(now);
    }

    /// Processes input from the start of `input`: returns how many bytes were used and the next
    /// event, if one arose. Call again with the rest until it returns `None`.
    pub fn handle_input<'a>(&mut self, input: &'a [u8], now: Instant) -> (usize, Option<Event<'a>>) {
        let result = self.take_input(input, now);
        self.settle(now);
        result
    }

    fn take_input<'a>(&mut self, input: &'a [u8], now: Instant) -> (usize, Option<Event<'a>>) {
        if !self.wants_input() {
            return (0, None);
        }
        if matches!(self.state, State::AwaitHello) && input.first() == Some(&0) {
            // `[LEG-2]`: from its first byte on, every reply on this connection has the legacy shape.
            self.legacy = true;
            if !self.config.legacy() {
                // `[LEG-5]`: the legacy profile is switched off.
                self.fatal(ErrorCode::UNSUPPORTED, "the legacy profile is disabled on this server");
                return (0, None);
            }
        }
        let mut used = 0;
        while self.wants_input() {
            if matches!(self.state, State::Ready) && used < input.len() && !self.in_request {
                // `[TIME-7]`: the head deadline starts at the request's first byte.
                self.in_request = true;
                self.deadline = now.checked_add(self.config.head_timeout);
            }
            match self.decoder.decode(&input[used..]) {
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::Item { item, consumed }) => {
                    used += consumed;
                    if let Some(event) = self.on_item(item, now) {
                        return (used, Some(event));
                    }
                }
                Err(e) => {
                    self.fatal(e.code(), &e.to_string());
                    break;
                }
            }
        }
        (used, None)
    }

    fn on_item<'a>(&mut self, item: ClientItem<'a>, now: Instant) -> Option<Event<'a>> {
        match item {
            ClientItem::Hello(hello) => self.on_hello(hello, now),
            ClientItem::LegacyGet(name) => {
                self.legacy = true;
                self.in_request = true;
                match self.config.anonymous {
                    Some(role) => {
                        self.role = Some(role);
                        self.state = State::Serving(Awaiting::Get { offset: 0, trailing: false });
                        Some(Event::Command(Command::Get { name, offset: 0, trailing: false }))
                    }
                    None => {
                        self.fatal(ErrorCode::UNAUTHORIZED, "this server needs a token; the legacy profile has none");
                        None
                    }
                }
            }
            ClientItem::Rejected { kind, error } => {
                if kind == RequestKind::LegacyGet {
                    self.legacy = true;
                    self.fatal(ErrorCode::BAD_NAME, &error.to_string());
                    return None;
                }
                self.refuse(kind, ErrorCode::BAD_NAME, error.to_string(), now)
            }
            ClientItem::Request(request) => self.on_request(request, now),
            ClientItem::Data(data) => {
                self.data_progress(data.len(), now);
                match &mut self.state {
                    State::Receiving { hasher, .. } => {
                        hasher.update(data);
                        Some(Event::PutData(data))
                    }
                    _ => None,
                }
            }
            ClientItem::Trailer(md5) => {
                // `[TIME-9]`: the trailer's bytes are data for the progress deadline (§ 6.5).
                self.data_progress(md5.to_hex().len(), now);
                if let State::Receiving { trailer, .. } = &mut self.state {
                    *trailer = Some(md5);
                }
                None
            }
            ClientItem::DataEnd => match std::mem::replace(&mut self.state, State::Ready) {
                State::Receiving { hasher, head, trailer } => {
                    // `[PUT-3]`, `[FRAME-5]`, `[TRL-5]`: published only if the digest matches.
                    let md5 = hasher.finish();
                    let verified = head.md5.or(trailer) == Some(md5);
                    if verified {
                        self.in_request = false;
                        self.state = State::Serving(Awaiting::PutCommit);
                    } else {
                        self.reply(ServerItem::Error(ErrorReply::new(
                            ErrorCode::CHECKSUM_MISMATCH,
                            "the data does not match its MD5; nothing was stored",
                        )));
                        self.request_done(now);
                    }
                    Some(Event::PutComplete { verified, md5 })
                }
                _ => {
                    self.request_done(now);
                    None
                }
            },
        }
    }

    /// PUT data arrived (`[TIME-9]`): every [`PROGRESS_UNIT`] bytes move the deadline on.
    fn data_progress(&mut self, n: usize, now: Instant) {
        self.data_moved += n as u64;
        if self.data_moved >= PROGRESS_UNIT {
            self.data_moved = 0;
            self.start_data_deadline(now);
        }
    }

    /// A PUT's head is complete: from now its data must keep moving (`[TIME-9]`), however long
    /// the whole upload takes.
    fn start_data_deadline(&mut self, now: Instant) {
        self.deadline = now.checked_add(self.config.progress_timeout);
    }

    fn on_hello(&mut self, hello: crate::message::ClientHello, now: Instant) -> Option<Event<'static>> {
        // `[HELLO-4]`, `[HELLO-5]`: version 1 is all this server speaks.
        if !(hello.min_version..=hello.max_version).contains(&VERSION) {
            self.fatal(ErrorCode::UNSUPPORTED_VERSION, "this server speaks protocol version 1 only");
            return None;
        }
        let role = match &hello.token {
            // `[AUTH-1]`: an unknown token never falls back to the anonymous role.
            Some(token) => self.config.tokens.get(token).copied(),
            None => self.config.anonymous,
        };
        let Some(role) = role else {
            let why = if hello.token.is_some() { "unknown token" } else { "this server needs a token" };
            self.fatal(ErrorCode::UNAUTHORIZED, why);
            return None;
        };
        self.role = Some(role);
        self.reply(ServerItem::Hello(self.config.hello(role)));
        self.request_done(now);
        Some(Event::Connected { role })
    }

    fn on_request<'a>(&mut self, request: Request, now: Instant) -> Option<Event<'a>> {
        let kind = request.kind();
        let caps = self.config.capabilities;
        let role = self.role.unwrap_or(Role::Read);
        // `[ERR-7]`: BAD_NAME (decided by the decoder) before FORBIDDEN before UNSUPPORTED.
        if role < kind.required_role() {
            return self.refuse(kind, ErrorCode::FORBIDDEN, format!("the {role} role may not {kind}"), now);
        }
        if self.config.read_only && matches!(kind, RequestKind::Put | RequestKind::Delete) {
            return self.refuse(kind, ErrorCode::FORBIDDEN, "this server is read-only".into(), now);
        }
        let unsupported = match kind {
            RequestKind::Status => !caps.contains(Capabilities::STATUS),
            RequestKind::Shutdown => !caps.contains(Capabilities::SHUTDOWN),
            _ => false,
        };
        if unsupported {
            return self.refuse(kind, ErrorCode::UNSUPPORTED, format!("this server does not offer {kind}"), now);
        }
        let command = match request {
            Request::Help => {
                self.reply(ServerItem::Help(self.config.help_text.clone()));
                self.request_done(now);
                return None;
            }
            Request::Bye => {
                // `[BYE-1]`
                self.reply(ServerItem::ByeOk);
                self.state = State::Closed;
                return None;
            }
            Request::Shutdown => {
                // `[SHUT-1]`
                self.reply(ServerItem::ShutdownOk);
                self.state = State::Closed;
                return Some(Event::Shutdown);
            }
            Request::Get { offset, .. } | Request::Fetch { offset, .. }
                if offset > 0 && !caps.contains(Capabilities::RESUME) =>
            {
                return self.refuse(kind, ErrorCode::BAD_OFFSET, "this server does not resume downloads".into(), now);
            }
            Request::List => Command::List,
            Request::Stat(name) => Command::Stat(name),
            Request::Get { name, offset } => Command::Get { name, offset, trailing: false },
            // `[TRL-6]`: only a whole file may travel in the trailing form.
            Request::Fetch { name, offset } => Command::Get { name, offset, trailing: offset == 0 },
            Request::Delete(name) => Command::Delete(name),
            Request::Status => Command::Status,
            Request::Put(head) => {
                self.data_moved = 0;
                self.start_data_deadline(now);
                self.state = State::Deciding { head: head.clone() };
                return Some(Event::Command(Command::Put(head)));
            }
        };
        // The request has fully arrived: no client deadline while the host works.
        self.in_request = false;
        self.state = State::Serving(match &command {
            Command::Get { offset, trailing, .. } => Awaiting::Get { offset: *offset, trailing: *trailing },
            _ => Awaiting::Command(kind),
        });
        Some(Event::Command(command))
    }

    /// Answers a request with a recoverable error; a refused PUT's data is then read and dropped
    /// (`[PUT-5]`).
    fn refuse<'a>(&mut self, kind: RequestKind, code: ErrorCode, message: String, now: Instant) -> Option<Event<'a>> {
        let error = ErrorReply::new(code, message);
        self.reply(ServerItem::Error(error.clone()));
        if kind == RequestKind::Put {
            self.data_moved = 0;
            self.start_data_deadline(now);
            self.state = State::Discarding;
        } else {
            self.request_done(now);
        }
        Some(Event::Refused { kind, error })
    }

    fn reply(&mut self, item: ServerItem<'_>) {
        item.encode(&mut self.out);
    }

    /// Sends a fatal error and ends the connection (`[ERR-4]`), in the legacy shape for a legacy
    /// connection (`[LEG-2]`).
    fn fatal(&mut self, code: ErrorCode, message: &str) {
        if self.legacy {
            ServerItem::LegacyErrorStart.encode(&mut self.out);
            ServerItem::Data(message.as_bytes()).encode(&mut self.out);
        } else {
            self.reply(ServerItem::Error(ErrorReply::new(code, message)));
        }
        self.close_reason = Some(code);
        self.state = State::Closed;
    }

    /// The current request is answered: back to waiting, or closing for a legacy connection or
    /// a drain.
    fn request_done(&mut self, now: Instant) {
        self.in_request = false;
        if self.legacy {
            // `[LEG-3]`
            self.state = State::Closed;
        } else if self.shutting_down {
            self.fatal(ErrorCode::SHUTTING_DOWN, "server shutting down");
        } else {
            self.state = State::Ready;
            self.deadline = self.config.idle_timeout.and_then(|t| now.checked_add(t));
        }
    }

    /// Whether the host's answer fits the request being served. An answer after the connection
    /// closed (a deadline or EOF overtook a slow host) is dropped silently; an answer to the wrong
    /// request is a host bug, dropped too rather than put on the wire.
    fn expects(&self, awaiting: Awaiting) -> bool {
        match self.state {
            State::Serving(a) if a == awaiting => true,
            State::Closed => false,
            _ => {
                debug_assert!(false, "host answered {awaiting:?} in state {:?}", self.state);
                false
            }
        }
    }

    /// Answers LIST. `entries` must be sorted by name (`[LIST-2]`). They are encoded as the
    /// client takes them (`[RES-3]`): a shared listing costs the connection no copy.
    pub fn respond_list(&mut self, entries: impl Into<Arc<[Entry]>>, now: Instant) {
        if !self.expects(Awaiting::Command(RequestKind::List)) {
            return;
        }
        let (count, items) = countable(entries.into());
        debug_assert!(items.windows(2).all(|w| w[0].name < w[1].name), "[LIST-2] entries unsorted");
        self.reply(ServerItem::ListStart { count });
        self.state = State::Streaming(Stream::Entries { items, next: 0 });
        self.refill(now);
        self.settle(now);
    }

    /// Answers STAT.
    pub fn respond_stat(&mut self, entry: &Entry, now: Instant) {
        if self.expects(Awaiting::Command(RequestKind::Stat)) {
            self.reply(ServerItem::Stat(entry.clone()));
            self.request_done(now);
            self.settle(now);
        }
    }

    /// Answers DELETE.
    pub fn respond_delete(&mut self, now: Instant) {
        if self.expects(Awaiting::Command(RequestKind::Delete)) {
            self.reply(ServerItem::DeleteOk);
            self.request_done(now);
            self.settle(now);
        }
    }

    /// Answers STATUS with the connection history, oldest first (`[STATUS-1]`), encoded as the
    /// client takes it (`[RES-3]`).
    pub fn respond_status(&mut self, records: impl Into<Arc<[ConnRecord]>>, now: Instant) {
        if !self.expects(Awaiting::Command(RequestKind::Status)) {
            return;
        }
        let (count, items) = countable(records.into());
        self.reply(ServerItem::StatusStart { count });
        self.state = State::Streaming(Stream::Records { items, next: 0 });
        self.refill(now);
        self.settle(now);
    }

    /// Answers GET with the file that will be sent: `frame` describes the whole file as it will be
    /// read (`[GET-5]`). Returns the offset and length of the bytes the host must now send, then
    /// report with [`Self::body_sent`]; or `None` when the request was answered with `BAD_OFFSET`
    /// (`[GET-4]`) or is no longer awaited.
    pub fn respond_get(&mut self, frame: FrameHead, now: Instant) -> Option<(u64, u64)> {
        let State::Serving(Awaiting::Get { offset, .. }) = self.state else {
            let _ = self.expects(Awaiting::Get { offset: 0, trailing: false });
            return None;
        };
        if offset > frame.size {
            let message = format!("offset {offset} is past the end of the file ({} bytes)", frame.size);
            self.reply(ServerItem::Error(ErrorReply::new(ErrorCode::BAD_OFFSET, message)));
            self.request_done(now);
            self.settle(now);
            return None;
        }
        let remaining = frame.size - offset;
        if self.legacy {
            self.reply(ServerItem::LegacyOk(frame));
        } else {
            self.reply(ServerItem::GetHead { offset, frame });
        }
        self.state = State::Sending { remaining, trailer: false };
        if remaining == 0 {
            self.request_done(now);
        }
        self.settle(now);
        Some((offset, remaining))
    }

    /// Whether the GET being served may be answered in the trailing form (a FETCH from offset 0,
    /// § 7.10): then [`Self::respond_get_trailing`] is allowed.
    pub fn may_trail(&self) -> bool {
        matches!(self.state, State::Serving(Awaiting::Get { trailing: true, .. }))
    }

    /// Answers a FETCH from offset 0 in the trailing form (§ 7.10): the host sends the file's `size`
    /// bytes, hashing exactly what it sends (`[TRL-2]`), reports them with [`Self::body_sent`],
    /// and then gives their digest to [`Self::send_trailer`]. Returns the number of bytes to
    /// send, or `None` when the request is no longer awaited or may not trail
    /// ([`Self::may_trail`]): then the host answers with [`Self::respond_get`].
    pub fn respond_get_trailing(&mut self, name: Name, size: u64, now: Instant) -> Option<u64> {
        if !self.may_trail() {
            return None;
        }
        self.reply(ServerItem::FetchTrailing { name, size });
        self.state = State::Sending { remaining: size, trailer: true };
        self.settle(now);
        Some(size)
    }

    /// Ends a trailing-form reply with the digest of the bytes sent (`[TRL-2]`), once all of them
    /// have been reported with [`Self::body_sent`]. A host that cannot send them all closes the
    /// connection instead (`[TRL-9]`).
    pub fn send_trailer(&mut self, md5: Digest, now: Instant) {
        match self.state {
            State::Sending { remaining: 0, trailer: true } => {
                self.reply(ServerItem::Trailer(md5));
                self.request_done(now);
            }
            State::Closed => {}
            _ => debug_assert!(false, "send_trailer in state {:?}", self.state),
        }
        self.settle(now);
    }

    /// Reports that `n` more bytes of the GET's data were sent at `now`.
    pub fn body_sent(&mut self, n: u64, now: Instant) {
        if let State::Sending { remaining, trailer } = &mut self.state {
            *remaining = remaining.saturating_sub(n);
            if *remaining == 0 && !*trailer {
                self.request_done(now);
            }
        }
        self.note_sent(n, now);
        self.settle(now);
    }

    /// Whether the GET's data has all been sent and its trailer is due ([`Self::send_trailer`]).
    pub fn trailer_due(&self) -> bool {
        matches!(self.state, State::Sending { remaining: 0, trailer: true })
    }

    /// Accepts the PUT just announced: its data follows as [`Event::PutData`]. Call
    /// [`Self::handle_input`] again afterwards even with no new bytes: an empty file's end needs
    /// none.
    pub fn accept_put(&mut self) {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Deciding { head } => self.state = State::Receiving { hasher: Hasher::new(), head, trailer: None },
            other => {
                debug_assert!(matches!(other, State::Closed), "accept_put in state {other:?}");
                self.state = other;
            }
        }
    }

    /// Answers a verified PUT once the file is published (`[PUT-2]`).
    pub fn respond_put(&mut self, replaced: bool, now: Instant) {
        if self.expects(Awaiting::PutCommit) {
            self.reply(ServerItem::PutOk { replaced });
            self.request_done(now);
            self.settle(now);
        }
    }

    /// Answers the request being served with an error (`NOT_FOUND`, `EXISTS`, `STORAGE_FULL`,
    /// `INTERNAL`…). For a PUT not yet accepted, or one whose data is arriving (a write failed),
    /// the rest of its data is then read and dropped (`[PUT-5]`). A fatal code closes the
    /// connection. Call [`Self::handle_input`] again afterwards, even with no new bytes.
    pub fn respond_error(&mut self, code: ErrorCode, message: impl Into<String>, now: Instant) {
        let message = message.into();
        match self.state {
            State::Closed => return,
            State::Serving(_) | State::Deciding { .. } | State::Receiving { .. } => {}
            _ => {
                debug_assert!(false, "respond_error in state {:?}", self.state);
                return;
            }
        }
        if code.is_fatal() || self.legacy {
            self.fatal(code, &message);
        } else {
            self.reply(ServerItem::Error(ErrorReply::new(code, message)));
            if matches!(self.state, State::Deciding { .. } | State::Receiving { .. }) {
                self.state = State::Discarding;
            } else {
                self.request_done(now);
            }
        }
        self.settle(now);
    }
}
