//! One client connection of a load: the client loop itself, the same for Ferry and HTTP.
//!
//! A connection sends pre-encoded requests, reads whatever has arrived into its own buffer,
//! parses reply heads (check, then parse: a partial head waits for more bytes), hashes reply
//! data straight from that buffer as it streams past, and verifies each reply when its last
//! byte arrives. Sockets are non-blocking and driven by the thread's epoll
//! ([`super::driver`]); the protocol decides only which bytes are sent and which head parser
//! runs.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Instant;

use ferry_proto::digest::Hasher;
use ferry_proto::Digest;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::files::FileSet;
use super::tally::Tally;
use super::wire::{Failure, Mode, Protocol, Script, Verify};
use super::{ferry_wire, http_wire};

/// Read buffer per connection. Reply data streams through it; only a head must fit whole.
const READ_BUF: usize = 64 * 1024;

/// Which files a connection asks for.
#[derive(Debug)]
pub enum Picker {
    /// Uniformly random names from the set, until the window ends.
    Random(fastrand::Rng),
    /// Each file once, in order (a priming pass); then nothing more.
    EachOnce { next: u32 },
}

/// What the connections of one client thread share.
pub struct Ctx<'a> {
    pub script: &'a Script,
    pub files: &'a FileSet,
    pub verify: Verify,
    /// Requests each persistent connection keeps in flight.
    pub depth: usize,
    pub addr: SocketAddr,
    pub epoll: &'a OwnedFd,
    pub picker: Picker,
    /// The measured window: replies completed in it are counted; no request is sent after it.
    pub window: (Instant, Instant),
    /// Set once the load is interrupted: no more requests.
    pub stopping: bool,
    pub tally: Tally,
}

impl Ctx<'_> {
    fn next_file(&mut self, now: Instant) -> Option<u32> {
        if self.stopping {
            return None;
        }
        let n = self.files.len() as u32;
        match &mut self.picker {
            Picker::Random(rng) => (now < self.window.1).then(|| rng.u32(..n)),
            Picker::EachOnce { next } => (*next < n).then(|| {
                *next += 1;
                *next - 1
            }),
        }
    }

    fn record(&mut self, now: Instant, sent: Instant, bytes: u64) {
        if now < self.window.0 {
            self.tally.warmup_replies += 1;
        } else if now < self.window.1 {
            self.tally.replies += 1;
            self.tally.bytes += bytes;
            self.tally.latency(now - sent);
        } else {
            self.tally.late_replies += 1;
        }
    }
}

/// A reply the connection waits for, in the order they will come.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The Ferry server hello.
    Hello,
    /// The reply to a GET of `file`, sent at `sent`.
    Get { file: u32, sent: Instant },
    /// The reply to BYE.
    Bye,
}

/// The data of a reply whose head has arrived.
struct Body {
    file: u32,
    sent: Instant,
    /// Data bytes still to come.
    left: u64,
    /// Data bytes received so far, for `--verify content`.
    offset: usize,
    /// Fed the data as it arrives, with `--verify data`.
    hasher: Option<Hasher>,
    /// The digest the head announced (Ferry), which the data must match.
    announced: Option<Digest>,
}

/// What the driver does with a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The server closed the connection where it should (after the reply, in fresh and legacy
    /// modes; after `Connection: close`): close it and open the next.
    Done,
}

/// One client connection; kept across reconnections, so its buffers are allocated once.
pub struct Conn {
    /// The connection's index in its thread: its epoll token.
    slot: u64,
    stream: Option<TcpStream>,
    /// A non-blocking connect in progress: nothing is written until it completes.
    connecting: bool,
    /// Whether epoll watches for room to write (only while output is left over).
    watching_out: bool,
    buf: Box<[u8]>,
    /// `buf[start..end]` holds bytes received and not yet consumed.
    start: usize,
    end: usize,
    /// How far an HTTP head in `buf[start..end]` was already searched for its end.
    scanned: usize,
    /// Bytes to send; `out[out_pos..]` is what the socket has not taken yet.
    out: Vec<u8>,
    out_pos: usize,
    expect: VecDeque<Expect>,
    body: Option<Body>,
    /// The server announced it closes after the current reply: nothing more is asked, and the
    /// connection ends at its EOF.
    draining: bool,
}

impl Conn {
    pub fn new(slot: u64) -> Self {
        Self {
            slot,
            stream: None,
            connecting: false,
            watching_out: false,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            scanned: 0,
            out: Vec::with_capacity(1024),
            out_pos: 0,
            expect: VecDeque::new(),
            body: None,
            draining: false,
        }
    }

    /// Whether the connection has nothing in flight: closed, or a persistent connection whose
    /// replies have all arrived and that was given nothing more to ask.
    pub fn is_idle(&self) -> bool {
        self.stream.is_none() || (self.expect.is_empty() && self.body.is_none() && !self.draining)
    }

    /// Connects and sends the hello and first request(s). Returns false, opening nothing, when
    /// there is nothing left to ask.
    ///
    /// # Errors
    /// The socket cannot be made or registered, or the connect fails at once.
    pub fn open(&mut self, ctx: &mut Ctx<'_>, now: Instant) -> Result<bool, Failure> {
        debug_assert!(self.stream.is_none());
        let Some(file) = ctx.next_file(now) else { return Ok(false) };
        let family = if ctx.addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
        let fd =
            rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)
                .map_err(std::io::Error::from)?;
        // Requests are small and some follow a reply at once (pipelining): never hold one back.
        rustix::net::sockopt::set_tcp_nodelay(&fd, true).map_err(std::io::Error::from)?;
        self.connecting = match rustix::net::connect(&fd, &ctx.addr) {
            Ok(()) => false,
            Err(Errno::INPROGRESS) => true,
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        let stream = TcpStream::from(fd);
        let flags = if self.connecting { EventFlags::IN | EventFlags::OUT } else { EventFlags::IN };
        epoll::add(ctx.epoll, &stream, EventData::new_u64(self.slot), flags).map_err(std::io::Error::from)?;
        self.watching_out = self.connecting;
        self.stream = Some(stream);
        ctx.tally.connections += 1;
        self.out.extend_from_slice(&ctx.script.hello);
        if ctx.script.has_hello() {
            self.expect.push_back(Expect::Hello);
        }
        self.ask(ctx, file, now);
        if ctx.script.mode == Mode::Persistent {
            for _ in 1..ctx.depth {
                self.issue(ctx, now);
            }
        }
        self.flush(ctx)?;
        Ok(true)
    }

    /// Closes the connection, if open, and forgets what it was waiting for.
    pub fn close(&mut self, ctx: &Ctx<'_>) {
        if let Some(s) = self.stream.take() {
            let _ = epoll::delete(ctx.epoll, &s);
        }
        self.connecting = false;
        self.watching_out = false;
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        self.out.clear();
        self.out_pos = 0;
        self.expect.clear();
        self.body = None;
        self.draining = false;
    }

    /// Handles an epoll event on this connection.
    ///
    /// # Errors
    /// The connection failed, or a reply was wrong: the caller counts it and closes.
    pub fn handle(&mut self, flags: EventFlags, ctx: &mut Ctx<'_>) -> Result<Step, Failure> {
        let Some(stream) = &self.stream else { return Ok(Step::Continue) };
        if self.connecting {
            if !flags.intersects(EventFlags::OUT | EventFlags::ERR | EventFlags::HUP) {
                return Ok(Step::Continue);
            }
            if let Some(e) = socket2::SockRef::from(stream).take_error()? {
                return Err(e.into());
            }
            self.connecting = false;
        }
        if flags.intersects(EventFlags::IN | EventFlags::ERR | EventFlags::HUP | EventFlags::RDHUP)
            && self.read(ctx)? == Step::Done
        {
            return Ok(Step::Done);
        }
        self.flush(ctx)?;
        Ok(Step::Continue)
    }

    /// One read (the epoll is level-triggered: what is left is reported again), then as many
    /// replies as it completes.
    fn read(&mut self, ctx: &mut Ctx<'_>) -> Result<Step, Failure> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            return Err(Failure::Malformed(format!("a reply head longer than {READ_BUF} bytes")));
        }
        let stream = self.stream.as_mut().expect("read on an open connection");
        match stream.read(&mut self.buf[self.end..]) {
            Ok(0) => return self.eof(ctx),
            Ok(n) => self.end += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return Ok(Step::Continue),
            Err(e) => return Err(e.into()),
        }
        self.consume(ctx)?;
        Ok(Step::Continue)
    }

    /// The server closed: fine after the last awaited reply, when a close was due.
    fn eof(&self, ctx: &Ctx<'_>) -> Result<Step, Failure> {
        let owed = self.expect.len() + usize::from(self.body.is_some());
        if owed == 0 && self.start == self.end && (self.draining || ctx.script.mode != Mode::Persistent) {
            Ok(Step::Done)
        } else if owed == 0 && self.start != self.end {
            Err(Failure::Malformed("bytes after the last reply".into()))
        } else {
            Err(Failure::Closed(owed))
        }
    }

    /// Parses heads and takes data from the buffer until it runs out.
    fn consume(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        loop {
            if let Some(body) = &mut self.body {
                let take = body.left.min((self.end - self.start) as u64) as usize;
                let data = &self.buf[self.start..self.start + take];
                if let Some(h) = &mut body.hasher {
                    h.update(data);
                }
                if ctx.verify == Verify::Content {
                    let expected = ctx.files.get(body.file);
                    let content = expected.content.as_deref().unwrap_or_default();
                    if content.get(body.offset..body.offset + take) != Some(data) {
                        return Err(mismatch(&expected.name, "the data differs from the file's content"));
                    }
                }
                body.offset += take;
                body.left -= take as u64;
                self.start += take;
                if body.left > 0 {
                    return Ok(());
                }
                let body = self.body.take().expect("a body");
                self.finish(body, ctx)?;
                continue;
            }
            let avail = &self.buf[self.start..self.end];
            let Some(&front) = self.expect.front() else {
                if avail.is_empty() {
                    return Ok(());
                }
                return Err(Failure::Malformed("bytes no request asked for".into()));
            };
            match front {
                Expect::Hello | Expect::Bye => {
                    let parsed = if matches!(front, Expect::Hello) {
                        ferry_wire::server_hello(avail)?
                    } else {
                        ferry_wire::bye(avail)?
                    };
                    let Some(n) = parsed else { return Ok(()) };
                    self.start += n;
                    self.expect.pop_front();
                }
                Expect::Get { file, sent } => {
                    let expected = ctx.files.get(file);
                    let head = match (ctx.script.protocol, ctx.script.mode) {
                        (Protocol::Ferry, Mode::Legacy) => ferry_wire::legacy_head(avail, expected)?,
                        (Protocol::Ferry, _) => ferry_wire::get_head(avail, expected)?,
                        (Protocol::Http, _) => http_wire::response_head(avail, &mut self.scanned)?,
                    };
                    let Some(head) = head else { return Ok(()) };
                    if ctx.verify != Verify::None {
                        if head.body != expected.size {
                            return Err(mismatch(&expected.name, "the reply's length is not the file's size"));
                        }
                        if head.announced.is_some_and(|d| d != expected.digest) {
                            return Err(mismatch(&expected.name, "the announced digest is not the file's"));
                        }
                    }
                    self.start += head.len;
                    self.expect.pop_front();
                    if head.closes && ctx.script.mode == Mode::Persistent {
                        self.draining = true;
                    }
                    let hasher = (ctx.verify == Verify::Data).then(Hasher::new);
                    self.body =
                        Some(Body { file, sent, left: head.body, offset: 0, hasher, announced: head.announced });
                }
            }
        }
    }

    /// A reply's last byte arrived: verify, count, and ask again on a persistent connection.
    fn finish(&mut self, body: Body, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        let now = Instant::now();
        let expected = ctx.files.get(body.file);
        if let Some(h) = body.hasher {
            // Ferry: the digest announced, which was checked to be the file's; HTTP: the file's.
            if h.finish() != body.announced.unwrap_or(expected.digest) {
                return Err(mismatch(&expected.name, "the data's MD5 is not the digest expected"));
            }
        }
        if ctx.verify != Verify::None {
            ctx.tally.verified += 1;
        }
        let size = expected.size;
        ctx.record(now, body.sent, size);
        if self.draining {
            // Requests pipelined behind this reply will not be answered.
            self.expect.clear();
            ctx.tally.server_closes += 1;
        } else if ctx.script.mode == Mode::Persistent {
            self.issue(ctx, now);
        }
        Ok(())
    }

    /// Queues the next request, if there is one to ask.
    fn issue(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        if let Some(file) = ctx.next_file(now) {
            self.ask(ctx, file, now);
        }
    }

    fn ask(&mut self, ctx: &Ctx<'_>, file: u32, now: Instant) {
        self.out.extend_from_slice(ctx.script.request(file));
        self.expect.push_back(Expect::Get { file, sent: now });
        if ctx.script.has_bye() {
            self.expect.push_back(Expect::Bye);
        }
    }

    /// Writes what the socket takes; watches for room while anything is left.
    fn flush(&mut self, ctx: &Ctx<'_>) -> Result<(), Failure> {
        let Some(stream) = &mut self.stream else { return Ok(()) };
        if !self.connecting {
            while self.out_pos < self.out.len() {
                match stream.write(&self.out[self.out_pos..]) {
                    Ok(n) => self.out_pos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
        }
        let want_out = self.connecting || !self.out.is_empty();
        if want_out != self.watching_out {
            let flags = if want_out { EventFlags::IN | EventFlags::OUT } else { EventFlags::IN };
            epoll::modify(ctx.epoll, &*stream, EventData::new_u64(self.slot), flags).map_err(std::io::Error::from)?;
            self.watching_out = want_out;
        }
        Ok(())
    }
}

fn mismatch(name: &str, what: &'static str) -> Failure {
    Failure::Mismatch { name: name.to_owned(), what }
}
