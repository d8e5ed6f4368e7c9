//! The adversary: a Ferry server on 127.0.0.1 that answers each event of a connection as its
//! case's script says — honestly, or with the lie the case is about — and records every byte the
//! client sends, checking it against PROTOCOL.md's rules for senders as it goes.
//!
//! The client's bytes are read with ferry-proto's [`RequestDecoder`], the decoder every Ferry
//! server in this repository uses, so a client's request that a server would refuse is a
//! violation here too. What a server cannot see from one message — bytes after a BYE, bytes after
//! a fatal error or a reply the client had to refuse — is checked by the connection's state.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_proto::limits::ReadLimits;
use ferry_proto::{Capabilities, ClientHello, ClientItem, DecodeError, Decoded, Digest, Name, Request, RequestDecoder};

/// How often a connection's thread looks at the stop flag while it waits for bytes.
const POLL: Duration = Duration::from_millis(20);
/// The most PUT data the adversary keeps (the suite uploads small files).
const MAX_PUT_DATA: usize = 1 << 20;

/// What happened on a connection that the script answers.
#[derive(Debug)]
pub enum Event<'a> {
    /// A connection was accepted; nothing has been read yet.
    Accept,
    /// The client's hello.
    Hello(&'a ClientHello),
    /// A legacy-profile request (first byte `0x00`).
    Legacy(&'a Name),
    /// A request; for a PUT, with all its data.
    Request(&'a Request, &'a [u8]),
}

/// The script's answer to an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Send nothing (to `Accept`: go on and read the hello).
    Nothing,
    /// Send these bytes, and go on serving.
    Send(Vec<u8>),
    /// Send these bytes, then close the connection.
    Close(Vec<u8>),
    /// Send these bytes, after which the client must send nothing more on this connection (the
    /// requirement says why: a fatal error, a reply it must refuse). The connection stays open
    /// until the client closes it; any byte it sends is a violation of that requirement.
    Fatal(Vec<u8>, &'static str),
    /// Send these bytes, then nothing at all, holding the connection open until the client
    /// closes it (or the case ends).
    Stall(Vec<u8>),
}

/// A case's server behaviour: the connection's index (0 for the first accepted) and the event.
pub type Script = Arc<dyn Fn(usize, Event<'_>) -> Act + Send + Sync>;

/// A client's breach of a sender's rule, seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub requirement: &'static str,
    pub message: String,
}

/// One connection as the adversary saw it.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    /// Every byte the client sent.
    pub received: Vec<u8>,
    /// The requests decoded, in order.
    pub requests: Vec<Request>,
    /// The hello, if one came.
    pub hello: Option<ClientHello>,
    /// Whether the client spoke the legacy profile.
    pub legacy: bool,
    pub violations: Vec<Violation>,
}

/// A running adversary.
pub struct Adversary {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    logs: Arc<Mutex<Vec<ConnLog>>>,
    accepted: Arc<AtomicUsize>,
    listener: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Adversary {
    /// Listens on 127.0.0.1, on a port of the system's choosing, and serves every connection
    /// with `script` on a thread of its own.
    ///
    /// # Errors
    /// The listening socket cannot be made.
    pub fn start(script: Script) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, l, a) = (stop.clone(), logs.clone(), accepted.clone());
        let handle = std::thread::Builder::new().name("adversary".into()).spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let index = a.fetch_add(1, Ordering::SeqCst);
                        lock(&l).push(ConnLog::default());
                        let (script, stop, logs) = (script.clone(), s.clone(), l.clone());
                        conns.push(std::thread::spawn(move || {
                            let log = serve(stream, index, &script, &stop);
                            lock(&logs)[index] = log;
                        }));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            conns
        })?;
        Ok(Self { addr, stop, logs, accepted, listener: Some(handle) })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops serving (every connection is closed) and returns what each connection saw.
    pub fn stop(mut self) -> Vec<ConnLog> {
        self.halt();
        std::mem::take(&mut *lock(&self.logs))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.listener.take() {
            if let Ok(conns) = h.join() {
                for c in conns {
                    let _ = c.join();
                }
            }
        }
    }
}

impl Drop for Adversary {
    fn drop(&mut self) {
        self.halt();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading and answering.
    Serving,
    /// The client must send nothing more, for this requirement.
    Silent(&'static str),
    /// Holding the connection open and reading nothing into the decoder.
    Stalled,
}

struct Conn<'a> {
    stream: TcpStream,
    index: usize,
    script: &'a Script,
    log: ConnLog,
    state: State,
    decoder: RequestDecoder,
    /// Received bytes not yet decoded.
    pending: Vec<u8>,
    /// A PUT being read: its request and its data so far.
    put: Option<(Request, Vec<u8>)>,
}

fn serve(stream: TcpStream, index: usize, script: &Script, stop: &AtomicBool) -> ConnLog {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_nodelay(true);
    let limits = ReadLimits { max_name_len: ferry_proto::limits::NAME_LEN_CEILING, max_file_size: 1 << 40 };
    let mut c = Conn {
        stream,
        index,
        script,
        log: ConnLog::default(),
        state: State::Serving,
        decoder: RequestDecoder::new(limits),
        pending: Vec::new(),
        put: None,
    };
    if !c.act(Event::Accept) {
        return c.log;
    }
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match c.stream.read(&mut buf) {
            Ok(0) => {
                c.eof();
                break;
            }
            Ok(n) => {
                c.log.received.extend_from_slice(&buf[..n]);
                if !c.take(&buf[..n]) {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    c.log
}

impl Conn<'_> {
    fn violation(&mut self, requirement: &'static str, message: impl Into<String>) {
        self.log.violations.push(Violation { requirement, message: message.into() });
    }

    /// Takes newly received bytes; false when the connection is over.
    fn take(&mut self, bytes: &[u8]) -> bool {
        match self.state {
            State::Stalled => true,
            State::Silent(requirement) => {
                // A refusal sent as soon as the connection was accepted (BUSY) may cross the
                // client's hello, and requests sent right behind it, all sent before the client
                // could read the refusal: they are not held against it.
                if self.awaiting_hello() {
                    self.pending.extend_from_slice(bytes);
                    self.absorb_hello();
                    return true;
                }
                let n = bytes.len();
                self.violation(
                    requirement,
                    format!("the client sent {n} more bytes on a connection it had to give up"),
                );
                false
            }
            State::Serving => {
                self.pending.extend_from_slice(bytes);
                self.decode()
            }
        }
    }

    /// Decodes and answers what is pending; false when the connection is over.
    fn decode(&mut self) -> bool {
        loop {
            let pending = std::mem::take(&mut self.pending);
            let decoded = self.decoder.decode(&pending);
            let (item, consumed) = match decoded {
                Ok(Decoded::NeedMore) => {
                    self.pending = pending;
                    return true;
                }
                Ok(Decoded::Item { item, consumed }) => (item, consumed),
                Err(e) => {
                    // The values only TRAILER defines (§ 6.5), sent to a server that did not
                    // announce it: `[TRL-1]`.
                    let untrailed = matches!(e, DecodeError::BadMode(0x80 | 0x81) | DecodeError::UnknownOpcode(0x0B));
                    let requirement = if self.log.hello.is_none() && !self.log.legacy {
                        "HELLO-1"
                    } else if untrailed {
                        "TRL-1"
                    } else {
                        "EXT-2"
                    };
                    self.violation(requirement, format!("the client sent bytes no server may accept: {e}"));
                    return false;
                }
            };
            let head = &pending[..consumed];
            self.pending = pending[consumed..].to_vec();
            let go_on = match item {
                ClientItem::Hello(h) => {
                    self.log.hello = Some(h.clone());
                    self.act(Event::Hello(&h))
                }
                ClientItem::LegacyGet(name) => {
                    self.log.legacy = true;
                    self.act(Event::Legacy(&name))
                }
                ClientItem::Rejected { kind, error } => {
                    self.violation(
                        "NAME-2",
                        format!("the client sent a {kind} with a name that is not valid: {error}"),
                    );
                    false
                }
                ClientItem::Request(Request::Put(p)) => {
                    // `[FRAME-3]`: the digest's digits are the last 32 bytes of the head.
                    let md5 = &head[head.len().saturating_sub(32)..];
                    if md5.iter().any(u8::is_ascii_uppercase) {
                        self.violation(
                            "FRAME-3",
                            format!("the PUT's digest is not in lowercase: {}", String::from_utf8_lossy(md5)),
                        );
                    }
                    self.put = Some((Request::Put(p), Vec::new()));
                    true
                }
                ClientItem::Data(d) => {
                    if let Some((_, data)) = &mut self.put {
                        if data.len() + d.len() <= MAX_PUT_DATA {
                            data.extend_from_slice(d);
                        }
                    }
                    true
                }
                // Only where the hello announced TRAILER (§ 6.5): the digest of the data sent.
                ClientItem::Trailer(md5) => {
                    if let Some((Request::Put(head), data)) = &self.put {
                        if data.len() as u64 == head.size && md5 != Digest::of(data) {
                            let data = Digest::of(data);
                            self.violation(
                                "TRL-2",
                                format!("the trailer of the PUT is {md5}, the data sent has digest {data}"),
                            );
                        }
                    }
                    true
                }
                ClientItem::DataEnd => match self.put.take() {
                    Some((r, data)) => {
                        self.log.requests.push(r.clone());
                        self.act(Event::Request(&r, &data))
                    }
                    None => true,
                },
                ClientItem::Request(Request::Bye) => {
                    self.log.requests.push(Request::Bye);
                    self.send(&[ferry_proto::tag::BYE]);
                    self.state = State::Silent("BYE-2");
                    true
                }
                ClientItem::Request(r) => {
                    self.log.requests.push(r.clone());
                    self.act(Event::Request(&r, &[]))
                }
            };
            if !go_on {
                return false;
            }
            match self.state {
                State::Serving => {}
                State::Silent(requirement) if !self.pending.is_empty() => {
                    let n = self.pending.len();
                    self.violation(
                        requirement,
                        format!("the client sent {n} more bytes on a connection it had to give up"),
                    );
                    return false;
                }
                _ => return true,
            }
            if self.pending.is_empty() && !self.decoder.in_data() {
                return true;
            }
        }
    }

    /// Asks the script and does what it says; false when the connection is over.
    fn act(&mut self, event: Event<'_>) -> bool {
        let hello = matches!(event, Event::Hello(_));
        match (self.script)(self.index, event) {
            Act::Nothing => true,
            Act::Send(b) => {
                if hello {
                    self.announced(&b);
                }
                self.send(&b)
            }
            Act::Close(b) => {
                self.send(&b);
                let _ = self.stream.shutdown(Shutdown::Both);
                false
            }
            Act::Fatal(b, requirement) => {
                // Bytes already on their way (a client may send requests right behind its hello)
                // were sent before this reply arrived: they are not held against it.
                self.drain_ready();
                if !(self.awaiting_hello() && self.absorb_hello()) {
                    self.pending.clear();
                }
                self.state = State::Silent(requirement);
                self.send(&b);
                true
            }
            Act::Stall(b) => {
                self.state = State::Stalled;
                self.send(&b);
                true
            }
        }
    }

    /// The server hello the script sent: with `TRAILER` announced, the decoder reads the
    /// requests only it defines (§ 6.5).
    fn announced(&mut self, hello: &[u8]) {
        if hello.first() != Some(&ferry_proto::tag::HELLO) || hello.len() < 8 {
            return;
        }
        let caps = Capabilities(u32::from_be_bytes([hello[4], hello[5], hello[6], hello[7]]));
        self.decoder = self.decoder.clone().with_trailer(caps.contains(Capabilities::TRAILER));
    }

    /// Whether the client's first message has yet to arrive.
    fn awaiting_hello(&self) -> bool {
        self.log.hello.is_none() && !self.log.legacy
    }

    /// Takes the client's hello (or legacy request) from the pending bytes, and drops whatever
    /// follows it; true while the hello is still incomplete.
    fn absorb_hello(&mut self) -> bool {
        match self.decoder.decode(&self.pending) {
            Ok(Decoded::NeedMore) => return true,
            Ok(Decoded::Item { item: ClientItem::Hello(h), .. }) => self.log.hello = Some(h),
            Ok(Decoded::Item { item: ClientItem::LegacyGet(_), .. }) => self.log.legacy = true,
            _ => {}
        }
        self.pending.clear();
        false
    }

    /// Reads what has already arrived, for a short while, into the log and the pending bytes.
    fn drain_ready(&mut self) {
        let until = Instant::now() + Duration::from_millis(30);
        let mut buf = [0u8; 4096];
        let _ = self.stream.set_read_timeout(Some(Duration::from_millis(10)));
        while Instant::now() < until {
            match self.stream.read(&mut buf) {
                Ok(n) if n > 0 => {
                    self.log.received.extend_from_slice(&buf[..n]);
                    self.pending.extend_from_slice(&buf[..n]);
                }
                _ => break,
            }
        }
        let _ = self.stream.set_read_timeout(Some(POLL));
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(5)));
        self.stream.write_all(bytes).is_ok()
    }

    /// The client closed its side.
    fn eof(&mut self) {
        if self.state != State::Serving {
            return;
        }
        if self.decoder.finish(&self.pending).is_err() {
            if self.decoder.in_data() {
                self.violation("PUT-6", "the client closed the connection before the PUT's data was complete");
            } else {
                self.violation("EXT-2", "the client closed the connection in the middle of a message");
            }
        }
    }
}
