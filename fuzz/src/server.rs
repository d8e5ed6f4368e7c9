//! The server state machine under a schedule decided by the fuzz input.
//!
//! [`run_scheduled`] drives `ServerConnection` through its own small host, the way an engine
//! does: the client's bytes arrive in reads of input-decided sizes; reads "would block" (the host
//! polls the machine with no new bytes and makes progress on its writes instead); replies and GET
//! bodies are written in input-decided pieces, so pipelined input waits behind a GET being sent;
//! and at input-decided points the host injects a shutdown, a passed deadline or EOF.
//! [`run_reference`] feeds the same bytes to ferry-proto's `MemoryConnection` in one read per
//! event. The two must end identically (`[ENC-5]`): same bytes sent, same store, same close.
//! [`check`] then judges the run against PROTOCOL.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::codec::{ClientItem, ServerItem};
use ferry_proto::digest::Digest;
use ferry_proto::limits::{ReadLimits, HELP_TEXT_MAX};
use ferry_proto::memory::{MemoryConnection, MemoryStore};
use ferry_proto::message::{Capabilities, Entry, ErrorCode, FrameHead, PutHead, PutMode, Request, Role};
use ferry_proto::name::Name;
use ferry_proto::server::{default_help_text, Command, Event, ServerConfig, ServerConnection};

use crate::alloc::measure;
use crate::owned::{decode_c2s, decode_s2c, End, Start, C, S};

/// The server configuration a config byte selects.
///
/// bits 0-1: anonymous role (0 write, 1 read, 2 admin, 3 none); bit 2: read-only; bit 3: no
/// LEGACY, and a 16-byte `max_output` (the machine pauses after every reply, `[RES-2]`); bit 4: no RESUME; bit 5: no STATUS and SHUTDOWN; bit 6: `max_name_len` 16 (else
/// 255); bit 7: `max_file_size` 4 (else 1 TiB). Tokens: `s3cret` is admin, `reader` read.
pub fn config(b: u8) -> ServerConfig {
    let mut caps = Capabilities::ALL_V1.0;
    if b & 0x08 != 0 {
        caps &= !Capabilities::LEGACY.0;
    }
    if b & 0x10 != 0 {
        caps &= !Capabilities::RESUME.0;
    }
    if b & 0x20 != 0 {
        caps &= !(Capabilities::STATUS.0 | Capabilities::SHUTDOWN.0);
    }
    ServerConfig {
        limits: ReadLimits {
            max_name_len: if b & 0x40 != 0 { 16 } else { 255 },
            max_file_size: if b & 0x80 != 0 { 4 } else { 1 << 40 },
        },
        max_clients: 8,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Some(Duration::from_secs(300)),
        head_timeout: Duration::from_secs(10),
        progress_timeout: Duration::from_secs(30),
        max_output: if b & 0x08 != 0 { 16 } else { 64 * 1024 },
        capabilities: Capabilities(caps),
        anonymous: match b & 3 {
            0 => Some(Role::Write),
            1 => Some(Role::Read),
            2 => Some(Role::Admin),
            _ => None,
        },
        tokens: HashMap::from([("s3cret".to_owned(), Role::Admin), ("reader".to_owned(), Role::Read)]),
        read_only: b & 0x04 != 0,
        help_text: default_help_text(),
    }
}

/// [`config`], varied by the host byte of `server_machine`: bit 0 takes `TRAILER` out of the
/// capabilities (PUT modes 0x80/0x81 and FETCH are then malformed, `[TRL-1]`).
pub fn config_with(b: u8, host: u8) -> ServerConfig {
    let mut config = config(b);
    if host & 1 != 0 {
        config.capabilities = Capabilities(config.capabilities.0 & !Capabilities::TRAILER.0);
    }
    config
}

/// Whether the host byte asks for a host that answers a FETCH from offset 0 in the trailing form
/// (tag 0x8B, § 7.10), as a server does for a file whose digest it does not know yet (`[TRL-7]`).
pub fn trailing_replies(host: u8) -> bool {
    host & 2 != 0
}

/// The files every run starts with, so that reads have something to find.
pub fn preloaded() -> MemoryStore {
    let mut store = MemoryStore::default();
    for (name, data) in [("a.txt", b"hi".to_vec()), ("empty", Vec::new()), ("bin", (0..=255).collect())] {
        store.files.insert(Name::parse(name).expect("valid"), data);
    }
    store
}

/// Something that happens to a connection besides bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// A graceful shutdown starts (§ 13).
    Shutdown,
    /// A day passes: every deadline has expired (§ 12).
    Timeout,
    /// The client closes its side.
    Eof,
}

/// How a run ended: everything the two runs must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub output: Vec<u8>,
    pub store: MemoryStore,
    /// Whether the server had closed the connection before the client's EOF.
    pub closed_by_server: bool,
    pub close_reason: Option<ErrorCode>,
    pub legacy: bool,
    pub role: Option<Role>,
    /// What `handle_eof` said: whether EOF fell on a message boundary.
    pub eof_clean: bool,
    /// Client bytes the machine consumed.
    pub used: usize,
}

const DAY: Duration = Duration::from_secs(86_400);

/// A host for `ServerConnection` with a memory store, written like an engine: a receive buffer,
/// partial writes, GET bodies sent separately from the reply head.
struct Host {
    conn: ServerConnection,
    store: MemoryStore,
    upload: Option<(PutHead, Vec<u8>)>,
    inbuf: Vec<u8>,
    /// A GET body being sent, and how much of it was.
    body: Option<(Vec<u8>, usize)>,
    /// The digest to send once the body is sent, for a FETCH answered in the trailing form.
    trailer: Option<Digest>,
    /// Answer a FETCH from offset 0 in the trailing form (§ 7.10).
    trailing_replies: bool,
    output: Vec<u8>,
    used: usize,
    now: Instant,
    closed_by_server: bool,
    /// Which commands the store fails (bit k: the k-th command, mod 8).
    faults: u8,
    commands: u32,
    /// The accepted upload's first write fails.
    fail_write: bool,
    /// The verified upload's commit fails.
    fail_commit: bool,
}

impl Host {
    fn new(config: Arc<ServerConfig>, t0: Instant, faults: u8, trailing_replies: bool) -> Self {
        Self {
            conn: ServerConnection::new(config, t0),
            store: preloaded(),
            upload: None,
            inbuf: Vec::new(),
            body: None,
            trailer: None,
            trailing_replies,
            output: Vec::new(),
            used: 0,
            now: t0,
            closed_by_server: false,
            faults,
            commands: 0,
            fail_write: false,
            fail_commit: false,
        }
    }

    /// Runs the machine over the receive buffer until it needs more input or stops reading.
    fn pump(&mut self) {
        let input = std::mem::take(&mut self.inbuf);
        let mut used = 0;
        loop {
            let (n, event) = self.conn.handle_input(&input[used..], self.now);
            used += n;
            let Some(event) = event else { break };
            self.on_event(event);
        }
        // A poll with nothing new must find nothing to do: the machine left no work behind.
        let again = self.conn.handle_input(&input[used..], self.now);
        assert_eq!(again, (0, None), "a second poll with the same input made progress");
        self.used += used;
        self.inbuf = input;
        self.inbuf.drain(..used);
        if self.conn.is_closed() {
            self.upload = None;
        }
    }

    /// Writes up to `n` bytes to the client: the pending reply bytes first, then the GET body.
    fn write(&mut self, mut n: usize) {
        let pending = self.conn.pending_output();
        let k = n.min(pending.len());
        self.output.extend_from_slice(&pending[..k]);
        self.conn.consume_output(k, self.now);
        n -= k;
        if !self.conn.pending_output().is_empty() {
            return;
        }
        if self.body.is_none() {
            if self.conn.wants_input() && !self.inbuf.is_empty() {
                // The output fell below its bound (`[RES-2]`): input that waited is read now.
                // What it produces — a GET's head, then its body — goes out on later writes.
                self.pump();
            }
            return;
        }
        if let Some((body, pos)) = &mut self.body {
            let m = n.min(body.len() - *pos);
            if m > 0 {
                self.output.extend_from_slice(&body[*pos..*pos + m]);
                *pos += m;
                self.conn.body_sent(m as u64, self.now);
            }
            if *pos == body.len() {
                self.body = None;
                if let Some(md5) = self.trailer.take() {
                    // `[TRL-2]`: the digest of exactly the bytes sent.
                    assert!(self.conn.trailer_due() || self.conn.is_closed(), "the data is sent, the trailer is due");
                    self.conn.send_trailer(md5, self.now);
                }
                // The reply is complete: input pipelined behind it is read now.
                self.pump();
            }
        }
    }

    /// Writes everything, as an engine does before it waits for input.
    fn flush(&mut self) {
        while !self.conn.pending_output().is_empty() || self.body.is_some() {
            self.write(usize::MAX);
        }
    }

    /// The same host decisions as `MemoryConnection`, with the GET body left to [`Self::write`].
    fn on_event(&mut self, event: Event<'_>) {
        let now = self.now;
        let conn = &mut self.conn;
        let store = &mut self.store;
        match event {
            Event::Connected { .. } | Event::Refused { .. } => {}
            Event::Shutdown => store.shutdown_requested = true,
            Event::PutData(d) => {
                let (_, buf) = self.upload.as_mut().expect("[PUT-5] data only for an accepted PUT");
                buf.extend_from_slice(d);
                if std::mem::take(&mut self.fail_write) {
                    // The disk filled up: answered at once, the rest is discarded (`[PUT-5]`).
                    self.upload = None;
                    conn.respond_error(ErrorCode::STORAGE_FULL, "no space left", now);
                }
            }
            Event::PutComplete { verified, md5 } => {
                let (head, data) = self.upload.take().expect("PutComplete for an accepted PUT");
                // The faults belong to this upload (an empty one has no first write).
                self.fail_write = false;
                let fail_commit = std::mem::take(&mut self.fail_commit);
                // `[FRAME-5]`: the machine's verdict is the digest of what it handed over.
                assert_eq!(md5, Digest::of(&data), "[FRAME-5] the digest of what was handed over");
                if let Some(announced) = head.md5 {
                    assert_eq!(verified, announced == md5, "[FRAME-5] verdict");
                }
                assert_eq!(data.len() as u64, head.size, "[FRAME-1] data length");
                if verified && fail_commit {
                    conn.respond_error(ErrorCode::INTERNAL, "could not publish the file", now);
                } else if verified {
                    let name = head.name;
                    if head.mode == PutMode::CreateOnly && store.files.contains_key(&name) {
                        conn.respond_error(ErrorCode::EXISTS, "the file exists", now);
                    } else {
                        let replaced = store.files.insert(name, data).is_some();
                        conn.respond_put(replaced, now);
                    }
                }
            }
            Event::Command(command) => {
                let k = self.commands;
                self.commands += 1;
                if self.faults >> (k % 8) & 1 == 0 {
                    self.on_command(command);
                    return;
                }
                // The store fails this command; a PUT at one of its three stages.
                match command {
                    Command::Put(head) => match (k + self.faults.count_ones()) % 3 {
                        0 => conn.respond_error(ErrorCode::STORAGE_FULL, "no space left", now),
                        stage => {
                            conn.accept_put();
                            self.upload = Some((head, Vec::new()));
                            self.fail_write = stage == 1;
                            self.fail_commit = stage == 2;
                        }
                    },
                    _ => conn.respond_error(ErrorCode::INTERNAL, "the store failed", now),
                }
            }
        }
    }

    /// The store's answer to a command that does not fail.
    fn on_command(&mut self, command: Command) {
        let now = self.now;
        let conn = &mut self.conn;
        let store = &mut self.store;
        match command {
            Command::List => {
                let entries: Vec<Entry> = store.files.iter().map(|(n, d)| entry(n, d)).collect();
                conn.respond_list(entries, now);
            }
            Command::Stat(name) => match store.files.get(&name) {
                Some(d) => conn.respond_stat(&entry(&name, d), now),
                None => conn.respond_error(ErrorCode::NOT_FOUND, "no such file", now),
            },
            Command::Delete(name) => match store.files.remove(&name) {
                Some(_) => conn.respond_delete(now),
                None => conn.respond_error(ErrorCode::NOT_FOUND, "no such file", now),
            },
            Command::Status => conn.respond_status(store.history.as_slice(), now),
            Command::Get { name, trailing, .. }
                if trailing && self.trailing_replies && store.files.contains_key(&name) =>
            {
                // A FETCH from offset 0, answered as a server answers for a file it has not
                // hashed: the data, hashed as it goes, then the trailer (§ 7.10, `[TRL-7]`).
                let data = store.files[&name].clone();
                assert!(conn.may_trail(), "[TRL-6] a FETCH from 0 may trail");
                let len = conn.respond_get_trailing(name, data.len() as u64, now).expect("a FETCH is being served");
                assert_eq!(len, data.len() as u64, "[TRL-9] the whole file");
                let md5 = Digest::of(&data);
                if data.is_empty() {
                    conn.send_trailer(md5, now);
                } else {
                    self.body = Some((data, 0));
                    self.trailer = Some(md5);
                }
            }
            Command::Get { name, .. } => match store.files.get(&name) {
                Some(data) => {
                    let frame = FrameHead { name: name.clone(), size: data.len() as u64, md5: Digest::of(data) };
                    if let Some((offset, len)) = conn.respond_get(frame, now) {
                        assert!(offset + len == data.len() as u64, "[GET-1] size - offset bytes");
                        if len > 0 {
                            self.body = Some((data[offset as usize..].to_vec(), 0));
                        }
                    }
                }
                None => conn.respond_error(ErrorCode::NOT_FOUND, "no such file", now),
            },
            Command::Put(head) => {
                if head.mode == PutMode::CreateOnly && store.files.contains_key(&head.name) {
                    conn.respond_error(ErrorCode::EXISTS, "the file exists", now);
                } else {
                    conn.accept_put();
                    self.upload = Some((head, Vec::new()));
                }
            }
        }
    }

    fn inject(&mut self, what: Injected) -> Option<bool> {
        // An engine notices a deadline, a shutdown or EOF while it waits for input, which it
        // does only once everything is written.
        self.flush();
        match what {
            Injected::Shutdown => self.conn.begin_shutdown(self.now),
            Injected::Timeout => {
                self.now += DAY;
                self.conn.handle_timeout(self.now);
            }
            Injected::Eof => {
                self.closed_by_server = self.conn.is_closed();
                let clean = self.conn.handle_eof(&self.inbuf);
                self.upload = None;
                return Some(clean);
            }
        }
        None
    }
}

fn entry(name: &Name, data: &[u8]) -> Entry {
    Entry { name: name.clone(), size: data.len() as u64, mtime_ms: 0, md5: Some(Digest::of(data)) }
}

/// The largest allocation a run may make so far: the protocol's largest value (a HELP text, with
/// replacements), plus what grows with the conversation — the output buffers, the store and the
/// receive buffer, each at most twice what it holds.
fn allowed(host: &Host, input_len: usize) -> usize {
    4 * HELP_TEXT_MAX as usize + 2 * (host.output.len() + host.conn.pending_output().len()) + 2 * input_len + 4096
}

/// One step of a host's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// The next n client bytes arrive (all the rest for `usize::MAX`).
    Read(usize),
    /// A read would block; meanwhile up to n bytes are written.
    Write(usize),
    /// A read would block, and no deadline has passed.
    Poll,
    Inject(Injected),
}

/// The actions a schedule stands for. Each op is one byte: `0x00..=0x7F` delivers the next
/// `op + 1` bytes; `0x80..=0xBF` is a read that would block, during which `op & 0x3F` bytes are
/// written; `0xC0..=0xEF` is a blocked read during which no deadline passes; `0xF0..=0xF7` starts a
/// shutdown; `0xF8..=0xFB` lets a day pass; `0xFC..=0xFF` is EOF. After the ops, the rest arrives
/// in one read, then EOF.
fn scheduled_actions(ops: &[u8]) -> impl Iterator<Item = Action> + '_ {
    let ops = ops.iter().map(|&op| match op {
        0x00..=0x7F => Action::Read(usize::from(op) + 1),
        0x80..=0xBF => Action::Write(usize::from(op & 0x3F)),
        0xC0..=0xEF => Action::Poll,
        0xF0..=0xF7 => Action::Inject(Injected::Shutdown),
        0xF8..=0xFB => Action::Inject(Injected::Timeout),
        _ => Action::Inject(Injected::Eof),
    });
    ops.chain([Action::Read(usize::MAX), Action::Inject(Injected::Eof)])
}

/// The actions of the same events with the bytes between two events in one read.
fn whole_actions(events: &[(usize, Injected)]) -> Vec<Action> {
    let mut pos = 0;
    let mut actions = Vec::new();
    for &(k, what) in events {
        actions.extend([Action::Read(k - pos), Action::Inject(what)]);
        pos = k;
    }
    actions
}

/// Runs the client's `data` through the machine, in [`Host`], as `actions` say, with the store
/// failing the commands `faults` selects, and FETCH from 0 answered in the trailing form when
/// `trailing` says so. Returns the outcome and the injected events with the number of client
/// bytes delivered before each.
fn run_actions(
    config: Arc<ServerConfig>,
    t0: Instant,
    data: &[u8],
    (faults, trailing): (u8, bool),
    actions: impl IntoIterator<Item = Action>,
) -> (Outcome, Vec<(usize, Injected)>) {
    let mut host = Host::new(config, t0, faults, trailing);
    let mut delivered = 0;
    let mut events = Vec::new();
    let mut eof_clean = None;
    for action in actions {
        let ((), largest) = measure(|| match action {
            Action::Read(n) => {
                let n = n.min(data.len() - delivered);
                host.inbuf.extend_from_slice(&data[delivered..delivered + n]);
                delivered += n;
                host.pump();
            }
            Action::Write(n) => {
                host.write(n);
                host.pump();
            }
            Action::Poll => {
                assert!(!host.conn.handle_timeout(host.now), "a deadline passed with no time passing");
                host.pump();
            }
            Action::Inject(what) => {
                events.push((delivered, what));
                eof_clean = host.inject(what);
            }
        });
        assert!(largest <= allowed(&host, data.len()), "an allocation of {largest} bytes");
        if eof_clean.is_some() {
            break;
        }
    }
    assert!(host.conn.is_closed(), "EOF closes the connection");
    let outcome = Outcome {
        output: host.output,
        store: host.store,
        closed_by_server: host.closed_by_server,
        close_reason: host.conn.close_reason(),
        legacy: host.conn.is_legacy(),
        role: host.conn.role(),
        eof_clean: eof_clean.expect("the run ends with EOF"),
        used: host.used,
    };
    (outcome, events)
}

/// Runs the client's `data` through the machine as `ops` schedule it ([`scheduled_actions`]).
pub fn run_scheduled(
    config: Arc<ServerConfig>,
    t0: Instant,
    data: &[u8],
    ops: &[u8],
    faults: u8,
    trailing: bool,
) -> (Outcome, Vec<(usize, Injected)>) {
    run_actions(config, t0, data, (faults, trailing), scheduled_actions(ops))
}

/// A server for end-to-end runs of the client target: [`Host`] with a store that fails nothing,
/// fed everything at once, answering a FETCH from offset 0 in the trailing form when asked to
/// (which `MemoryConnection` never does).
pub struct Server(Host);

impl Server {
    pub fn new(config: Arc<ServerConfig>, trailing: bool) -> Self {
        Self(Host::new(config, Instant::now(), 0, trailing))
    }

    /// Takes `bytes` from the client and returns everything the server sends in answer.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.0.inbuf.extend_from_slice(bytes);
        self.0.pump();
        self.0.flush();
        std::mem::take(&mut self.0.output)
    }

    pub fn is_closed(&self) -> bool {
        self.0.conn.is_closed()
    }
}

/// Feeds the same bytes to `MemoryConnection`, in one read per injected event.
pub fn run_reference(config: Arc<ServerConfig>, t0: Instant, data: &[u8], events: &[(usize, Injected)]) -> Outcome {
    let mut conn = MemoryConnection::new(config, t0);
    let mut store = preloaded();
    let mut pending: Vec<u8> = Vec::new();
    let mut output = Vec::new();
    let mut used = 0;
    let mut pos = 0;
    let mut now = t0;
    let mut eof_clean = None;
    let mut closed_by_server = false;
    for &(k, what) in events {
        pending.extend_from_slice(&data[pos..k]);
        pos = k;
        let n = conn.feed(&mut store, &pending, now);
        pending.drain(..n);
        used += n;
        output.extend(conn.take_output());
        match what {
            Injected::Shutdown => conn.connection_mut().begin_shutdown(now),
            Injected::Timeout => {
                now += DAY;
                conn.connection_mut().handle_timeout(now);
            }
            Injected::Eof => {
                closed_by_server = conn.connection().is_closed();
                eof_clean = Some(conn.connection_mut().handle_eof(&pending));
            }
        }
        output.extend(conn.take_output());
    }
    let c = conn.connection();
    Outcome {
        output,
        store,
        closed_by_server,
        close_reason: c.close_reason(),
        legacy: c.is_legacy(),
        role: c.role(),
        eof_clean: eof_clean.expect("the run ends with EOF"),
        used,
    }
}

/// Judges a run against PROTOCOL.md, given the client bytes and the server's limits.
pub fn check(outcome: &Outcome, data: &[u8], config: &ServerConfig) {
    // What the server read, as its own decoder reads it.
    let trailer = config.capabilities.contains(Capabilities::TRAILER);
    let (requests, req_end) =
        decode_c2s(Start::Handshake, config.limits, trailer, &data[..outcome.used], &[outcome.used]);
    // What it sent, as a client reads it: always well-formed (`[EXT-2]`, `[ERR-1]`, `[NAME-11]`)
    // and, since every body was written, ending at a message boundary.
    let start = if outcome.legacy { Start::Legacy } else { Start::Handshake };
    let (replies, end) = decode_s2c(start, &outcome.output, &[outcome.output.len()]);
    // (A reply decoder calls empty input truncated when a hello or legacy reply is due.)
    let whole = end == End::Clean || (outcome.output.is_empty() && end == End::Truncated);
    assert!(whole, "the server's output does not decode: {end:?} after {replies:?}");

    // `[REQ-1]`, `[HELLO-10]`: one reply per request read. A fatal error may come on top (a
    // malformed request, a deadline, a shutdown); a PUT whose data was still arriving at the end
    // has none yet.
    let n_requests = requests
        .iter()
        .filter(|c| matches!(c, C::Item(i) if !matches!(i, ClientItem::DataEnd | ClientItem::Trailer(_))))
        .count();
    let n_replies = replies
        .iter()
        .filter(|s| {
            matches!(s, S::Item(i) if !matches!(i,
                ServerItem::Entry(_) | ServerItem::Connection(_) | ServerItem::Trailer(_) | ServerItem::DataEnd))
        })
        .count();
    let in_put_data = req_end == End::Truncated
        && matches!(requests.last(), Some(C::Data(_) | C::Item(ClientItem::Request(Request::Put(_)))));
    let diff = n_replies as isize - n_requests as isize;
    let ok = diff == 0 || (diff == 1 && outcome.close_reason.is_some()) || (diff == -1 && in_put_data);
    assert!(ok, "{n_replies} replies to {n_requests} requests\nrequests: {requests:?}\nreplies: {replies:?}");

    check_trailing_replies(&requests, &replies);

    if !outcome.legacy {
        if let Some(code) = outcome.close_reason {
            // `[REQ-5]`, `[ERR-4]`: a fatal error is the last thing sent.
            let last = replies.iter().rev().find(|s| matches!(s, S::Item(_)));
            assert!(
                matches!(last, Some(S::Item(ServerItem::Error(e))) if e.code == code),
                "closed with {code:?} but the last reply is {last:?}"
            );
        }
        if let Some(S::Item(first)) = replies.first() {
            assert!(matches!(first, ServerItem::Hello(_) | ServerItem::Error(_)), "[HELLO-10] first reply {first:?}");
        }
        // `[BYE-1]`, `[SHUT-1]`: the server closes after these replies and sends nothing more.
        if let Some(i) = replies.iter().position(|s| matches!(s, S::Item(ServerItem::ByeOk | ServerItem::ShutdownOk))) {
            assert_eq!(i + 1, replies.len(), "replies after BYE or SHUTDOWN: {replies:?}");
            assert!(outcome.closed_by_server, "the connection stayed open after BYE or SHUTDOWN");
        }
    }

    // `[STORE-1]`, `[PUT-3]`, `[STORE-2]`: every file is one that was there, or the data of a
    // complete PUT of that name whose digest matched.
    let mut uploads: Vec<(&Name, Vec<u8>)> = Vec::new();
    let mut current: Option<(&PutHead, Vec<u8>, Option<Digest>)> = None;
    for c in &requests {
        match c {
            C::Item(ClientItem::Request(Request::Put(head))) => current = Some((head, Vec::new(), head.md5)),
            C::Data(d) => {
                if let Some((_, buf, _)) = &mut current {
                    buf.extend_from_slice(d);
                }
            }
            // The trailing form's digest comes after the data (§ 6.5).
            C::Item(ClientItem::Trailer(md5)) => {
                if let Some((_, _, announced)) = &mut current {
                    *announced = Some(*md5);
                }
            }
            C::Item(ClientItem::DataEnd) => {
                if let Some((head, buf, announced)) = current.take() {
                    if announced == Some(Digest::of(&buf)) {
                        uploads.push((&head.name, buf));
                    }
                }
            }
            C::Item(_) => current = None,
        }
    }
    let before = preloaded();
    for (name, content) in &outcome.store.files {
        let kept = before.files.get(name) == Some(content);
        let uploaded = uploads.iter().any(|(n, d)| *n == name && d == content);
        assert!(kept || uploaded, "{name:?} holds {} bytes nobody uploaded", content.len());
    }
    // `[ROLE-1]`, `[ROLE-2]`: without the write right nothing changes.
    if config.read_only || outcome.role.is_none_or(|r| r < Role::Write) {
        assert_eq!(outcome.store.files, before.files, "a connection without the write right changed the store");
    }
    if outcome.store.shutdown_requested {
        assert_eq!(outcome.role, Some(Role::Admin), "[SHUT-2] SHUTDOWN by a non-admin");
    }
}

/// The trailing form of a reply (§ 7.10): only a FETCH from offset 0 gets it (`[TRL-6]`,
/// `[TRL-8]`); it carries the whole file, and its trailer is the digest of exactly the bytes sent
/// (`[TRL-2]`).
fn check_trailing_replies(requests: &[C], replies: &[S]) {
    let fetches_from_0 =
        requests.iter().filter(|c| matches!(c, C::Item(ClientItem::Request(Request::Fetch { offset: 0, .. })))).count();
    let mut trailing = 0;
    for (k, s) in replies.iter().enumerate() {
        let S::Item(ServerItem::FetchTrailing { size, .. }) = s else { continue };
        trailing += 1;
        let (data, rest) = match &replies[k + 1..] {
            [S::Data(d), rest @ ..] => (d.as_slice(), rest),
            rest => (&[][..], rest),
        };
        assert_eq!(data.len() as u64, *size, "[TRL-9] a trailing reply carries the whole file");
        match rest.first() {
            Some(S::Item(ServerItem::Trailer(md5))) => assert_eq!(*md5, Digest::of(data), "[TRL-2] the trailer"),
            other => panic!("[TRL-9] the data of a trailing reply is followed by {other:?}, not its trailer"),
        }
    }
    assert!(trailing <= fetches_from_0, "[TRL-8] {trailing} trailing replies to {fetches_from_0} FETCHes from 0");
}

/// The `server_machine` target, and the server half of `legacy`: the scheduled run must equal the
/// reference run, and pass [`check`]. Returns the outcome for target-specific checks.
///
/// With `faults`, the store fails some commands (a PUT when it is announced, at its first write or
/// at its commit; any other command with `INTERNAL`), which `MemoryConnection` never does: the
/// scheduled run is then compared with the same host fed one read per event. The same holds when
/// the `host` byte asks for FETCH replies in the trailing form ([`trailing_replies`]); its bit 0
/// takes `TRAILER` out of the server's capabilities ([`config_with`]).
pub fn fuzz_server(config_byte: u8, host: u8, faults: u8, data: &[u8], ops: &[u8]) -> Outcome {
    let config = Arc::new(config_with(config_byte, host));
    let trailing = trailing_replies(host);
    let t0 = Instant::now();
    let (scheduled, events) = run_scheduled(config.clone(), t0, data, ops, faults, trailing);
    let (whole, _) = run_actions(config.clone(), t0, data, (faults, trailing), whole_actions(&events));
    assert_eq!(scheduled, whole, "[ENC-5] the schedule {ops:02x?} changed the outcome (events {events:?})");
    // `MemoryConnection` has no faults and answers every FETCH in the leading form.
    if faults == 0 && !trailing {
        let reference = run_reference(config.clone(), t0, data, &events);
        assert_eq!(scheduled, reference, "the host and MemoryConnection differ (events {events:?})");
    }
    check(&scheduled, data, &config);
    scheduled
}
