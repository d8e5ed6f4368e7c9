//! Bounded resources (PROTOCOL.md § 12.8) and the outcome of racing uploads (§ 11.6).
//!
//! What a connection costs a server cannot be seen on the wire, but the consequences of an
//! unbounded cost can: a server without backpressure takes any amount of pipelined requests from a
//! client that reads nothing (§ 12.8 counts it unbounded at 32 MiB), and a server that lets a
//! stalled connection hold a thread, a lock or its reactor serves fresh connections late. These
//! cases judge only that:
//!
//! - `resources.pipeline.*` pipeline requests without reading until the writes make no progress
//!   for a stall window (a third of the announced progress deadline, 250 ms to 1 s, so that the
//!   client reads again long before a bounded server may drop it, `[TIME-5]`), then read every
//!   reply back, in order, and one more. 32 MiB taken without a stall fails.
//! - `resources.fresh-while-held` holds up to four hostile connections (at most `max_clients` − 2):
//!   pipeliners stalled as above, a head trickling in, a large GET never read. A fresh connection
//!   must then get its hello and a LIST within 2 s (or four times what it took before, if more).
//!   BUSY is a legal per-address cap (§ 12.9): nothing is judged then.
//! - `resources.put-race-outcome` races overwrites of new names: exactly one may say "created".
//!
//! They take care not to become what they look for. The requests they pipeline are mixed so that
//! their replies weigh about twice the requests, measured on the server first (HELP or LIST,
//! whose replies are large, padded with STATs of a long missing name, whose replies are small):
//! a bounded server fills its buffers long before 32 MiB, and an unbounded one holds at most
//! about 64 MiB for them. The client's own socket buffers are small, so that what it has sent and
//! not yet had taken, and what it has not read, stay small too.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_proto::client::ClientError;
use ferry_proto::{Decoded, ErrorCode, Name, PutMode, ReplyDecoder, Request, Role, ServerHello, ServerItem};
use socket2::{Domain, Protocol, Socket, Type};

use super::support::{
    bytes, case, code_name, fail, fits, get_whole, hello_bytes, problem, put_bytes, put_ok, raw_name_request,
    read_only_server, remaining, request_bytes, seed_for, slots, upload_size, writable, Verdict,
};
use crate::case::{Case, Ending, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Got, Problem, Raw, Replies, Reply};

/// Pipelined input after which a server that still reads from a client that reads nothing is
/// unbounded (§ 12.8). Also the most a case sends on one connection.
const UNBOUNDED_INPUT: u64 = 32 << 20;
/// The weight of the replies to a run of pipelined requests, relative to the requests: enough
/// that a bounded server fills its buffers long before [`UNBOUNDED_INPUT`], little enough that an
/// unbounded one holds at most about twice that.
const TARGET_RATIO: f64 = 2.0;
/// A run whose replies weigh more than this cannot be made (a server whose errors are much
/// longer than the requests): the case does not run rather than make an unbounded server hold
/// more than four times [`UNBOUNDED_INPUT`].
const MAX_RATIO: f64 = 4.0;
/// One period of a run is at least this long, so that each write sends many requests.
const RUN_BYTES: usize = 64 * 1024;
/// One mix of heavy requests and fillers is at most this long: a LIST of a great many files
/// needs many fillers.
const MIX_MAX: usize = 8 << 20;
/// The client's socket buffers (the kernel may double them).
const CLIENT_BUFFER: usize = 64 * 1024;
/// Longest name the STATs of a run use (longer names make fewer, heavier requests).
const FILLER_NAME_MAX: u32 = 1024;
/// Replies read back after a stall, at most; the rest are left unread and the connection closed.
const READ_BACK_MAX: u64 = 1_000_000;
/// Files `resources.pipeline.list` creates, when it may, and their names' length.
const LIST_FILES: usize = 48;
const LIST_NAME_LEN: usize = 96;
/// Hostile connections `resources.fresh-while-held` holds, at most.
const HOSTILE: u32 = 4;
/// How promptly a fresh connection must get its hello, and its LIST answered, while hostile
/// connections are held: this, or four times what it took before, whichever is longer.
const PROMPT: Duration = Duration::from_secs(2);
/// Fresh connections tried while hostile ones are held.
const FRESH_ROUNDS: usize = 3;
/// The file a hostile connection asks for and never reads: larger than the socket buffers of
/// both ends together.
const BIG_FILE: usize = 32 << 20;
/// A trickling hostile connection sends a byte of its request head this often.
const TRICKLE_PACE: Duration = Duration::from_millis(100);
/// Concurrent uploads per round, and rounds, of `resources.put-race-outcome`; the uploads' size.
const RACERS: usize = 4;
const RACE_ROUNDS: usize = 4;
const RACE_SIZE: usize = 16 * 1024;

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    let alone = Needs { alone: true, ..Needs::default() };
    vec![
        case(
            "resources.pipeline.unread",
            "Pipelined HELP and STAT requests from a client that reads nothing: the server stops reading \
             before 32 MiB, then answers every one, in order, once the client reads",
            &["RES-1", "RES-2", "REQ-1", "REQ-4"],
            alone,
            |ctx| pipeline(ctx, Heavy::Help),
        ),
        case(
            "resources.pipeline.list",
            "Pipelined LIST requests (and STATs) from a client that reads nothing: the server stops reading \
             before 32 MiB, then answers every one, in order, once the client reads",
            &["RES-1", "RES-2", "RES-3", "REQ-1", "REQ-4"],
            alone,
            |ctx| pipeline(ctx, Heavy::List),
        ),
        case(
            "resources.fresh-while-held",
            "While connections pipeline without reading, trickle a head, and stall a large GET, a fresh \
             connection gets its hello and a LIST answered promptly",
            &["RES-5"],
            alone,
            fresh_while_held,
        ),
        case(
            "resources.put-race-outcome",
            "Of concurrent overwrites of a new name exactly one says created, the others replaced",
            &["STORE-9", "STORE-5"],
            Needs { role: Role::Write, connections: RACERS as u32 + 1, ..Needs::default() },
            put_race_outcome,
        ),
    ]
}

/// Time kept back at the end of a case for the final checks and the cleanup.
fn margin(ctx: &Ctx) -> Duration {
    (ctx.target.case_timeout / 10).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

/// The progress deadline the server announces (`[TIME-5]`): it may drop a client that takes no
/// reply bytes for that long, so a case must read again well before.
fn progress(hello: &ServerHello) -> Duration {
    match hello.progress_timeout_ms {
        0 => Duration::from_secs(30),
        ms => Duration::from_millis(u64::from(ms)),
    }
}

/// How long writes must make no progress for the server to count as having stopped reading: a
/// third of its progress deadline, between 250 ms and 1 s. Well before the deadline, so that a
/// bounded server has not yet dropped the client when it reads again.
fn stall_window(hello: &ServerHello) -> Duration {
    (progress(hello) / 3).clamp(Duration::from_millis(250), Duration::from_secs(1))
}

// ---------------------------------------------------------------------------------------------
// Connections with small buffers

/// A connection whose socket buffers are small, so that the client itself holds little.
fn connect_small(ctx: &Ctx, timeout: Duration) -> std::io::Result<Raw> {
    let addr = ctx.target.addr;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Before connecting: the receive window is agreed on then.
    socket.set_recv_buffer_size(CLIENT_BUFFER)?;
    socket.set_send_buffer_size(CLIENT_BUFFER)?;
    socket.connect_timeout(&addr.into(), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(Raw::from_stream(stream, timeout))
}

/// [`connect_small`] and the handshake, with the run's token; the server's hello within `timeout`.
fn open_small(ctx: &Ctx, timeout: Duration) -> Result<(Raw, ServerHello), Problem> {
    let mut raw = connect_small(ctx, timeout)?;
    raw.send(&hello_bytes(ctx.target.token.as_deref()))?;
    match Replies::handshake().next(&mut raw, timeout)? {
        Got::Hello(h) => Ok((raw, h)),
        Got::Reply(Reply::Error(e)) => Err(Problem::Ended(Ending::ErrorReply { code: e.code.0, message: e.message })),
        Got::Reply(_) => {
            Err(Problem::Protocol(ClientError::UnexpectedReply { expected: "the server hello".into(), got: "a reply" }))
        }
    }
}

fn is_busy(p: &Problem) -> bool {
    matches!(p, Problem::Ended(Ending::ErrorReply { code, .. }) if *code == ErrorCode::BUSY.0)
}

// ---------------------------------------------------------------------------------------------
// Runs of pipelined requests

/// What a request of a run must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Help,
    List,
    /// An error with this code (a STAT of a missing name: the code the server gave it alone).
    Error(u16),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Help => f.write_str("HELP"),
            Self::List => f.write_str("LIST"),
            Self::Error(code) => write!(f, "error {}", code_name(*code)),
        }
    }
}

/// A request of a run: its bytes, the size of its reply as the server sent it alone, and what
/// it must get.
struct Sample {
    bytes: Vec<u8>,
    reply: usize,
    expect: Expect,
}

/// A run of pipelined requests, repeated as long as the server takes them.
struct Run {
    /// One period.
    bytes: Vec<u8>,
    /// Where each request of the period ends.
    ends: Vec<usize>,
    expect: Vec<Expect>,
    /// Reply bytes per request byte, as measured.
    ratio: f64,
}

impl Run {
    /// Mixes `heavy` (large replies) with `filler` (small replies) so that the replies weigh
    /// about [`TARGET_RATIO`] times the requests.
    ///
    /// # Errors
    /// No mix stays below [`MAX_RATIO`] within [`MIX_MAX`] bytes; why.
    fn mix(heavy: &Sample, filler: &Sample) -> Result<Self, String> {
        let (hi, ho) = (heavy.bytes.len() as f64, heavy.reply as f64);
        let (fi, fo) = (filler.bytes.len() as f64, filler.reply as f64);
        let damping = TARGET_RATIO * fi - fo;
        // For m heavy requests, the fewest fillers that bring the ratio to the target (or as
        // many as fit, if fillers cannot); the first m within a quarter of it, or the closest.
        let mut best: Option<(usize, usize, f64)> = None;
        for m in 1..=256usize {
            let room = MIX_MAX.saturating_sub(m * heavy.bytes.len()) / filler.bytes.len().max(1);
            let excess = m as f64 * (ho - TARGET_RATIO * hi);
            let k = if excess <= 0.0 {
                0
            } else if damping > 0.0 {
                (excess / damping).ceil() as usize
            } else {
                room
            };
            if k > room {
                continue;
            }
            let ratio = (m as f64 * ho + k as f64 * fo) / (m as f64 * hi + k as f64 * fi);
            if best.is_none_or(|(_, _, r)| (ratio - TARGET_RATIO).abs() < (r - TARGET_RATIO).abs()) {
                best = Some((m, k, ratio));
            }
            // Close enough: the shortest mix will do.
            if (0.75 * TARGET_RATIO..=TARGET_RATIO).contains(&ratio) {
                break;
            }
        }
        let too_heavy = || {
            format!(
                "a reply of {} bytes to a request of {}, padded with STATs of a missing name ({} bytes, replies of \
                 {}): no mix keeps what an unbounded server would hold below {MAX_RATIO} times the input",
                heavy.reply,
                heavy.bytes.len(),
                filler.bytes.len(),
                filler.reply
            )
        };
        let (m, k, ratio) = best.ok_or_else(too_heavy)?;
        if ratio > MAX_RATIO {
            return Err(too_heavy());
        }
        // The fillers spread among the heavy requests.
        let mut unit: Vec<&Sample> = Vec::new();
        for j in 0..m {
            unit.push(heavy);
            unit.extend(std::iter::repeat_n(filler, k * (j + 1) / m - k * j / m));
        }
        let mut run = Self { bytes: Vec::new(), ends: Vec::new(), expect: Vec::new(), ratio };
        while run.bytes.len() < RUN_BYTES {
            for s in &unit {
                run.bytes.extend_from_slice(&s.bytes);
                run.ends.push(run.bytes.len());
                run.expect.push(s.expect);
            }
        }
        Ok(run)
    }

    /// After `sent` bytes: how many requests were sent whole, and the rest of the one cut off, if
    /// one was.
    fn split(&self, sent: u64) -> (u64, Option<Range<usize>>) {
        let period = self.bytes.len() as u64;
        let off = (sent % period) as usize;
        let whole_in_period = self.ends.partition_point(|&e| e <= off);
        let whole = sent / period * self.ends.len() as u64 + whole_in_period as u64;
        let start = if whole_in_period == 0 { 0 } else { self.ends[whole_in_period - 1] };
        let cut = (off > start).then(|| off..self.ends[whole_in_period]);
        (whole, cut)
    }

    /// What the `i`-th request of the run must get.
    fn expect(&self, i: u64) -> Expect {
        self.expect[(i % self.expect.len() as u64) as usize]
    }
}

/// How pumping a run into a connection ended.
enum Pumped {
    /// Writes made no progress for the stall window: the server stopped reading.
    Stalled { sent: u64, quiet_since: Instant },
    /// The server took [`UNBOUNDED_INPUT`] bytes without stopping.
    Unbounded { sent: u64, took: Duration },
    /// The server closed the connection (or reset it).
    Closed { sent: u64, after: Duration },
    /// The time allowed ran out with the server still taking bytes, slowly.
    OutOfTime { sent: u64 },
}

/// Writes `run` over and over into `stream` without reading, until the writes make no progress
/// for `window`, [`UNBOUNDED_INPUT`] bytes are sent, or `until`.
fn pump(stream: &TcpStream, run: &Run, window: Duration, until: Instant) -> Pumped {
    // Short writes: each one that waits for room comes back soon to look at the clock.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(50)));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut last_progress = started;
    let period = run.bytes.len() as u64;
    loop {
        if sent >= UNBOUNDED_INPUT {
            return Pumped::Unbounded { sent, took: started.elapsed() };
        }
        let now = Instant::now();
        if now.duration_since(last_progress) >= window {
            return Pumped::Stalled { sent, quiet_since: last_progress };
        }
        if now >= until {
            return Pumped::OutOfTime { sent };
        }
        let off = (sent % period) as usize;
        let len = (run.bytes.len() - off).min(usize::try_from(UNBOUNDED_INPUT - sent).unwrap_or(usize::MAX));
        let mut w = stream;
        match w.write(&run.bytes[off..off + len]) {
            Ok(0) => return Pumped::Closed { sent, after: started.elapsed() },
            Ok(n) => {
                sent += n as u64;
                last_progress = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return Pumped::Closed { sent, after: started.elapsed() },
        }
    }
}

/// A reply, as far as a run needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Help,
    List,
    Error(u16),
    Other(&'static str),
}

impl Shape {
    fn matches(&self, e: Expect) -> bool {
        match (self, e) {
            (Self::Help, Expect::Help) | (Self::List, Expect::List) => true,
            (Self::Error(a), Expect::Error(b)) => *a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Help => f.write_str("HELP"),
            Self::List => f.write_str("LIST"),
            Self::Error(code) => write!(f, "error {}", code_name(*code)),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// Reads many small replies quickly: the decoder runs over the receive buffer with a cursor,
/// and the buffer is compacted only when it needs more bytes.
struct ReplyReader {
    decoder: ReplyDecoder,
    pos: usize,
    /// Entries of a LIST still to come.
    entries: u32,
}

impl ReplyReader {
    fn new() -> Self {
        Self { decoder: ReplyDecoder::in_session(), pos: 0, entries: 0 }
    }

    fn next(&mut self, raw: &mut Raw, deadline: Instant) -> Result<Shape, Problem> {
        loop {
            let decoded = self.decoder.decode(&raw.received[self.pos..]).map_err(ClientError::Decode)?;
            match decoded {
                Decoded::Item { item, consumed } => {
                    self.pos += consumed;
                    let shape = match item {
                        ServerItem::ListStart { count } if count > 0 => {
                            self.entries = count;
                            continue;
                        }
                        ServerItem::Entry(_) => {
                            self.entries = self.entries.saturating_sub(1);
                            if self.entries > 0 {
                                continue;
                            }
                            Shape::List
                        }
                        ServerItem::ListStart { .. } => Shape::List,
                        ServerItem::Help(_) => Shape::Help,
                        ServerItem::Error(e) => Shape::Error(e.code.0),
                        ServerItem::Stat(_) => Shape::Other("a STAT entry"),
                        ServerItem::GetHead { .. } | ServerItem::Data(_) | ServerItem::DataEnd => Shape::Other("GET"),
                        ServerItem::StatusStart { .. } | ServerItem::Connection(_) => Shape::Other("STATUS"),
                        _ => Shape::Other("another reply"),
                    };
                    return Ok(shape);
                }
                Decoded::NeedMore => {
                    raw.received.drain(..self.pos);
                    self.pos = 0;
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
        }
    }
}

// ---------------------------------------------------------------------------------------------
// resources.pipeline.*

/// The request with large replies that a pipelining case repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heavy {
    Help,
    List,
}

/// A STAT of a missing name as long as the server allows (up to [`FILLER_NAME_MAX`]), and the
/// size of its reply: the filler of a run.
fn filler(ctx: &Ctx, conn: &mut Conn, hello: &ServerHello, label: &str) -> Result<Sample, Box<Failure>> {
    let len = hello.max_name_len.min(FILLER_NAME_MAX) as usize;
    let pad = len.saturating_sub(ctx.prefix.len() + label.len()).max(1);
    let name = ctx.name(&format!("{label}{}", "m".repeat(pad)));
    let request = Request::Stat(name.clone());
    match conn.call(&request) {
        Ok(Reply::Error(e)) => {
            let mut reply = Vec::new();
            e.encode(&mut reply);
            Ok(Sample { bytes: request_bytes(&request), reply: reply.len(), expect: Expect::Error(e.code.0) })
        }
        Ok(r) => Err(fail("REQ-1", format!("STAT of a missing name, {name}: {}", r.describe()))),
        Err(p) => Err(problem("REQ-1", "STAT of a missing name", &p)),
    }
}

/// Sends `requests` at once on a new connection and reads their replies: one round trip.
fn pipelined(ctx: &Ctx, requests: &[u8], n: usize, requirement: &str) -> Result<Vec<Reply>, Box<Failure>> {
    let mut raw = ctx.conn().map_err(|p| problem(requirement, "handshake", &p))?.raw;
    raw.send(requests).map_err(|e| fail(requirement, e.to_string()))?;
    let mut replies = Replies::session();
    (0..n)
        .map(|i| {
            replies
                .reply(&mut raw, ctx.target.io_timeout)
                .map_err(|p| problem(requirement, &format!("reply {i} of {n} pipelined requests"), &p))
        })
        .collect()
}

/// Creates files for LIST to show, when the run may; their names.
fn list_files(ctx: &Ctx, hello: &ServerHello) -> Result<Vec<Name>, Box<Failure>> {
    let len = LIST_NAME_LEN.min(hello.max_name_len as usize);
    if fits(ctx, 4, 64).is_some() || len < ctx.prefix.len() + 4 || !writable(ctx)? {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    let mut requests = Vec::new();
    for i in 0..LIST_FILES {
        let head = format!("l{i:03}");
        let name = ctx.name(&format!("{head}{}", "n".repeat(len - ctx.prefix.len() - head.len())));
        requests.extend(put_bytes(&name, PutMode::Overwrite, &bytes(seed_for(ctx, &head), 64)));
        names.push(name);
    }
    for (name, r) in names.iter().zip(pipelined(ctx, &requests, LIST_FILES, "PUT-2")?) {
        if !matches!(r, Reply::Put { .. }) {
            return Err(fail("PUT-2", format!("PUT {name} (64 bytes): {}", r.describe())));
        }
    }
    Ok(names)
}

fn pipeline(ctx: &Ctx, heavy: Heavy) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("RES-2", "no server hello"))?;
    if let Some(o) = fits(ctx, 8, 0) {
        return Ok(o);
    }
    let created = if heavy == Heavy::List { list_files(ctx, &hello)? } else { Vec::new() };
    let mut conn = ctx.conn().map_err(|p| problem("RES-2", "handshake", &p))?;
    let sample = match heavy {
        Heavy::Help => match conn.call(&Request::Help) {
            Ok(Reply::Help(text)) => {
                let mut reply = Vec::new();
                ServerItem::Help(text).encode(&mut reply);
                Sample { bytes: request_bytes(&Request::Help), reply: reply.len(), expect: Expect::Help }
            }
            Ok(r) => return Err(fail("REQ-1", format!("HELP: {}", r.describe()))),
            Err(p) => return Err(problem("REQ-1", "HELP", &p)),
        },
        Heavy::List => match conn.call(&Request::List) {
            Ok(Reply::List(entries)) => {
                let mut reply = Vec::new();
                ServerItem::ListStart { count: entries.len() as u32 }.encode(&mut reply);
                for e in &entries {
                    e.encode(&mut reply);
                }
                Sample { bytes: request_bytes(&Request::List), reply: reply.len(), expect: Expect::List }
            }
            Ok(r) => return Err(fail("REQ-1", format!("LIST: {}", r.describe()))),
            Err(p) => return Err(problem("REQ-1", "LIST", &p)),
        },
    };
    let filler = filler(ctx, &mut conn, &hello, "p")?;
    drop(conn);
    let run = match Run::mix(&sample, &filler) {
        Ok(run) => run,
        Err(why) => return Ok(Outcome::Unsupported(why)),
    };
    let verdict = pipeline_run(ctx, &hello, &run);
    if !created.is_empty() {
        let deletes: Vec<u8> = created.iter().flat_map(|n| request_bytes(&Request::Delete(n.clone()))).collect();
        let _ = pipelined(ctx, &deletes, created.len(), "DEL-1");
    }
    verdict
}

/// Pumps `run` into a fresh connection until the server stops reading, then reads the replies
/// back and checks them.
fn pipeline_run(ctx: &Ctx, hello: &ServerHello, run: &Run) -> Verdict {
    let (mut raw, _) = open_small(ctx, ctx.target.io_timeout).map_err(|p| problem("RES-2", "handshake", &p))?;
    let window = stall_window(hello);
    let until = Instant::now() + remaining(ctx).saturating_sub(margin(ctx)) / 2;
    let mib = |n: u64| n as f64 / f64::from(1 << 20);
    let (sent, quiet_since) = match pump(&raw.stream, run, window, until) {
        Pumped::Stalled { sent, quiet_since } => (sent, quiet_since),
        Pumped::Unbounded { sent, took } => {
            return Err(fail(
                "RES-2",
                format!(
                    "the server took {:.0} MiB of pipelined requests in {took:.1?} from a client that read none of \
                     the replies (about {:.0} MiB of them): it does not stop reading while its replies wait",
                    mib(sent),
                    mib(sent) * run.ratio
                ),
            ))
        }
        Pumped::Closed { sent, after } => {
            if after >= progress(hello) {
                return Ok(Outcome::Unsupported(format!(
                    "the server closed the connection after {after:.1?}, past its progress deadline, before the \
                     writes of pipelined requests ({:.1} MiB) stopped",
                    mib(sent)
                )));
            }
            return Err(fail(
                "RES-2",
                format!(
                    "the server closed the connection after taking {:.1} MiB of pipelined requests in {after:.1?}, \
                     within its progress deadline, while the client was not reading",
                    mib(sent)
                ),
            ));
        }
        Pumped::OutOfTime { sent } => {
            return Ok(Outcome::Unsupported(format!(
                "the server went on taking pipelined requests from a client that reads nothing, but slowly: \
                 {:.1} MiB before the case's time ran out",
                mib(sent)
            )))
        }
    };
    // The server stopped reading. Finish the request a write cut off, as the server takes it.
    let (whole, cut) = run.split(sent);
    let total = whole + u64::from(cut.is_some());
    let finisher = match cut {
        Some(range) => {
            let mut w = raw.stream.try_clone().map_err(|e| fail("RES-2", e.to_string()))?;
            let _ = w.set_write_timeout(Some(ctx.target.io_timeout));
            let rest = run.bytes[range].to_vec();
            Some(std::thread::spawn(move || w.write_all(&rest)))
        }
        None => None,
    };
    let quiet = quiet_since.elapsed();
    let verdict = read_back(ctx, hello, &mut raw, run, total, quiet, mib(sent));
    // Done with the connection, whatever the verdict: a write still waiting ends now.
    let _ = raw.stream.shutdown(std::net::Shutdown::Both);
    if let Some(f) = finisher {
        let _ = f.join();
    }
    verdict
}

/// Reads the replies to the first `total` requests of `run` (at most [`READ_BACK_MAX`], and as
/// many as the case's time allows) and checks each; when all came, one more HELP must get its
/// reply next: nothing extra was sent.
fn read_back(
    ctx: &Ctx,
    hello: &ServerHello,
    raw: &mut Raw,
    run: &Run,
    total: u64,
    quiet: Duration,
    mib: f64,
) -> Verdict {
    let case_end = ctx.deadline - margin(ctx);
    let to_read = total.min(READ_BACK_MAX);
    let mut reader = ReplyReader::new();
    // A server may drop a client that took nothing for its progress deadline (`[TIME-5]`): if
    // the client began reading that late (a stalled machine), a close proves nothing.
    let late = quiet >= progress(hello);
    let too_late = || {
        Ok(Outcome::Unsupported(format!(
            "the client began reading {quiet:.1?} after its writes stopped, past the progress deadline \
             ({} ms), and the server had closed: nothing was judged",
            hello.progress_timeout_ms
        )))
    };
    for i in 0..to_read {
        let deadline = (Instant::now() + ctx.target.io_timeout).min(case_end);
        let expect = run.expect(i);
        match reader.next(raw, deadline) {
            Ok(shape) if shape.matches(expect) => {}
            Ok(Shape::Error(code)) if code == ErrorCode::TIMEOUT.0 && late => return too_late(),
            Err(Problem::Ended(Ending::OrderlyClose | Ending::Reset)) if late => return too_late(),
            Ok(Shape::Error(code)) if code == ErrorCode::TIMEOUT.0 => {
                return Err(fail(
                    "RES-2",
                    format!(
                        "after {i} of the {total} replies, TIMEOUT: the server gave up on the client although it \
                         began reading {quiet:.1?} after its writes stopped (progress_timeout_ms is {})",
                        hello.progress_timeout_ms
                    ),
                ))
            }
            Ok(shape) => {
                return Err(fail(
                    "REQ-4",
                    format!("reply {i} of {total} pipelined requests: {shape} where {expect} was due"),
                ))
            }
            Err(Problem::Ended(Ending::TimedOut)) if Instant::now() >= case_end => {
                // Replies were still coming, more slowly than the case's time allows: what came
                // was right.
                return Ok(Outcome::Pass);
            }
            Err(p) => {
                return Err(problem(
                    "RES-2",
                    &format!(
                        "after the server stopped taking pipelined requests ({mib:.1} MiB, {total} requests) and the \
                         client began reading {quiet:.1?} later, reply {i}"
                    ),
                    &p,
                ))
            }
        }
    }
    if to_read < total {
        return Ok(Outcome::Pass);
    }
    let _ = raw.stream.set_write_timeout(Some(ctx.target.io_timeout));
    raw.send(&request_bytes(&Request::Help)).map_err(|e| fail("REQ-1", e.to_string()))?;
    let deadline = (Instant::now() + ctx.target.io_timeout).min(case_end);
    match reader.next(raw, deadline) {
        Ok(Shape::Help) => Ok(Outcome::Pass),
        Ok(shape) => Err(fail("REQ-1", format!("after the {total} replies due, a HELP got {shape}"))),
        Err(p) => Err(problem("REQ-1", &format!("a HELP after the {total} pipelined replies"), &p)),
    }
}

// ---------------------------------------------------------------------------------------------
// resources.fresh-while-held

/// What a hostile connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// Pipelines requests and reads nothing, until the server stops taking them.
    Pipeline,
    /// Sends a request head a byte at a time.
    Trickle,
    /// Asks for a large file and reads nothing.
    StalledGet,
}

/// A fresh connection: its hello and a LIST answered within `bound`; the time taken.
fn fresh(ctx: &Ctx, bound: Duration) -> Result<Duration, Problem> {
    let started = Instant::now();
    let mut conn = Conn::open(ctx.target.addr, ctx.target.token.as_deref(), bound)?;
    match conn.call(&Request::List)? {
        Reply::List(_) => Ok(started.elapsed()),
        r => Err(Problem::Protocol(ClientError::UnexpectedReply {
            expected: "a LIST reply".into(),
            got: if r.code().is_some() { "an error" } else { "another reply" },
        })),
    }
}

/// A file of at least [`BIG_FILE`] bytes: uploaded if the run may, else one already there.
fn big_file(ctx: &Ctx) -> Result<Option<Name>, Box<Failure>> {
    if fits(ctx, 3, BIG_FILE as u64).is_none() && writable(ctx)? {
        let data = vec![b'h'; BIG_FILE];
        let mut conn = ctx.conn().map_err(|p| problem("RES-5", "handshake", &p))?;
        let name = ctx.name("big");
        put_ok(&mut conn, &name, PutMode::Overwrite, &data, "PUT-2")?;
        return Ok(Some(name));
    }
    let mut conn = ctx.conn().map_err(|p| problem("RES-5", "handshake", &p))?;
    match conn.call(&Request::List) {
        Ok(Reply::List(v)) => Ok(v.into_iter().find(|e| e.size >= BIG_FILE as u64).map(|e| e.name)),
        Ok(r) => Err(fail("RES-5", format!("LIST: {}", r.describe()))),
        Err(p) => Err(problem("RES-5", "LIST", &p)),
    }
}

fn fresh_while_held(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("RES-5", "no server hello"))?;
    let n = match hello.max_clients {
        0 => HOSTILE,
        max => max.saturating_sub(2).min(HOSTILE),
    };
    if n < 1 {
        return Ok(Outcome::Unsupported(format!(
            "max_clients is {}: holding a hostile connection, a fresh one and a spare slot needs 3",
            hello.max_clients
        )));
    }
    if let Some(o) = fits(ctx, 8, 0) {
        return Ok(o);
    }
    let big = big_file(ctx)?;
    let mut conn = ctx.conn().map_err(|p| problem("RES-5", "handshake", &p))?;
    let heavy = match conn.call(&Request::Help) {
        Ok(Reply::Help(text)) => {
            let mut reply = Vec::new();
            ServerItem::Help(text).encode(&mut reply);
            Sample { bytes: request_bytes(&Request::Help), reply: reply.len(), expect: Expect::Help }
        }
        Ok(r) => return Err(fail("RES-5", format!("HELP: {}", r.describe()))),
        Err(p) => return Err(problem("RES-5", "HELP", &p)),
    };
    let filler = filler(ctx, &mut conn, &hello, "f")?;
    drop(conn);
    let run = match Run::mix(&heavy, &filler) {
        Ok(run) => run,
        Err(why) => return Ok(Outcome::Unsupported(why)),
    };
    // How long a fresh connection takes while nothing else happens.
    let baseline = fresh(ctx, ctx.target.io_timeout).map_err(|p| problem("RES-5", "a first fresh connection", &p))?;
    let bound = PROMPT.max(baseline * 4);

    let plan: Vec<Hostile> =
        [Hostile::Pipeline, Hostile::Trickle, Hostile::StalledGet, Hostile::Pipeline][..n as usize].to_vec();
    let plan: Vec<Hostile> = plan
        .into_iter()
        .map(|h| if h == Hostile::StalledGet && big.is_none() { Hostile::Pipeline } else { h })
        .collect();
    let mut held = Vec::new();
    for (i, h) in plan.iter().enumerate() {
        match open_small(ctx, ctx.target.io_timeout) {
            Ok((raw, _)) => held.push((*h, raw)),
            Err(p) if is_busy(&p) => {
                return Ok(Outcome::Unsupported(format!(
                    "hostile connection {} of {n} got BUSY: the server caps connections per address (§ 12.9), \
                     which is legal; nothing was judged",
                    i + 1
                )))
            }
            Err(p) => return Err(problem("RES-5", &format!("hostile connection {} of {n}", i + 1), &p)),
        }
    }
    let window = stall_window(&hello);
    let until = Instant::now() + (remaining(ctx).saturating_sub(margin(ctx)) / 3).min(Duration::from_secs(10));
    let trickle_len = hello.max_name_len.min(FILLER_NAME_MAX) as usize;
    let trickled = raw_name_request(
        0x02,
        &[ctx.prefix.as_bytes(), &vec![b't'; trickle_len.saturating_sub(ctx.prefix.len()).max(1)]].concat(),
        &[],
    );
    let stop = AtomicBool::new(false);
    let verdict = std::thread::scope(|s| {
        let mut pumps = Vec::new();
        for (h, raw) in &mut held {
            match h {
                Hostile::Pipeline => {
                    let (stream, run) = (&raw.stream, &run);
                    pumps.push(s.spawn(move || pump(stream, run, window, until)));
                }
                Hostile::Trickle => {
                    let (stream, bytes, stop) = (&raw.stream, &trickled, &stop);
                    s.spawn(move || {
                        for b in bytes {
                            let mut w = stream;
                            if stop.load(Ordering::Relaxed) || w.write_all(std::slice::from_ref(b)).is_err() {
                                return;
                            }
                            std::thread::sleep(TRICKLE_PACE);
                        }
                    });
                }
                Hostile::StalledGet => {
                    let name = big.clone().expect("planned only with a big file");
                    let _ = raw.send(&request_bytes(&Request::Get { name, offset: 0 }));
                }
            }
        }
        let mut ended = Vec::new();
        for p in pumps {
            match p.join() {
                Ok(Pumped::Stalled { .. }) => {}
                Ok(Pumped::Unbounded { .. }) => ended.push("took 32 MiB without stopping"),
                Ok(Pumped::Closed { .. }) => ended.push("was closed by the server"),
                Ok(Pumped::OutOfTime { .. }) => ended.push("was still being read, slowly"),
                Err(_) => ended.push("panicked"),
            }
        }
        let held_what = plan.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", ");
        let mut verdict = Ok(Outcome::Pass);
        for round in 0..FRESH_ROUNDS {
            match fresh(ctx, bound) {
                Ok(took) if took <= bound => {}
                Ok(took) => {
                    verdict = Err(fail(
                        "RES-5",
                        format!(
                            "while {n} connections were held ({held_what}), fresh connection {} of {FRESH_ROUNDS} \
                             took {took:.1?} for its hello and a LIST; {baseline:.1?} before, bound {bound:.1?}",
                            round + 1
                        ),
                    ));
                    break;
                }
                Err(p) if is_busy(&p) => {
                    verdict = Ok(Outcome::Unsupported(format!(
                        "a fresh connection got BUSY while {n} were held ({held_what}): the server caps \
                         connections per address (§ 12.9), which is legal; nothing was judged"
                    )));
                    break;
                }
                Err(p) => {
                    let pumps = if ended.is_empty() { String::new() } else { format!("; pipeliners: {ended:?}") };
                    verdict = Err(problem(
                        "RES-5",
                        &format!(
                            "while {n} connections were held ({held_what}{pumps}), fresh connection {} of \
                             {FRESH_ROUNDS}, bound {bound:.1?} ({baseline:.1?} before)",
                            round + 1
                        ),
                        &p,
                    ));
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        verdict
    });
    drop(held);
    verdict
}

// ---------------------------------------------------------------------------------------------
// resources.put-race-outcome

fn put_race_outcome(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 6, 0).or_else(|| slots(ctx, RACERS as u32 + 1)) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let mut conn = ctx.conn().map_err(|p| problem("STORE-9", "handshake", &p))?;
    for round in 0..RACE_ROUNDS {
        let name = ctx.name(&format!("race{round}"));
        let contents: Vec<Vec<u8>> = (0..RACERS)
            .map(|i| bytes(seed_for(ctx, &format!("race{round}-{i}")), upload_size(ctx, RACE_SIZE)))
            .collect();
        let replies = super::semantics::concurrent_puts(ctx, &name, PutMode::Overwrite, &contents)?;
        let mut created = 0;
        for (i, r) in replies.iter().enumerate() {
            match r {
                Reply::Put { replaced } => created += usize::from(!replaced),
                r => {
                    return Err(fail(
                        "STORE-5",
                        format!("round {round}: concurrent overwrite {i} of {name} got {}", r.describe()),
                    ))
                }
            }
        }
        if created != 1 {
            return Err(fail(
                "STORE-9",
                format!(
                    "round {round}: of {RACERS} concurrent overwrites of the new name {name}, {created} said created \
                     and {} replaced: exactly one was published first",
                    RACERS - created
                ),
            ));
        }
        match get_whole(&mut conn, &name, "STORE-5")? {
            Some(data) if contents.contains(&data) => {}
            Some(data) => {
                return Err(fail(
                    "STORE-5",
                    format!("round {round}: {name} holds {} bytes equal to none of the {RACERS} uploads", data.len()),
                ))
            }
            None => {
                return Err(fail(
                    "STORE-5",
                    format!("round {round}: after {RACERS} successful overwrites {name} is missing"),
                ))
            }
        }
        match conn.call(&Request::Delete(name.clone())) {
            Ok(Reply::Delete) => {}
            Ok(r) => return Err(fail("STORE-5", format!("DELETE {name}: {}", r.describe()))),
            Err(p) => return Err(problem("STORE-5", &format!("DELETE {name}"), &p)),
        }
    }
    Ok(Outcome::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize, reply: usize, expect: Expect) -> Sample {
        Sample { bytes: vec![0; len], reply, expect }
    }

    #[test]
    fn a_run_weighs_about_twice_its_requests() {
        // HELP of 700 bytes, NOT_FOUND of 17 bytes for a 260-byte STAT.
        let run = Run::mix(&sample(1, 705, Expect::Help), &sample(260, 17, Expect::Error(0x200))).expect("a mix");
        assert!((1.5..=2.0).contains(&run.ratio), "{}", run.ratio);
        // An empty LIST: 5 bytes for 1.
        let run = Run::mix(&sample(1, 5, Expect::List), &sample(260, 17, Expect::Error(0x200))).expect("a mix");
        assert!((1.5..=2.0).contains(&run.ratio), "{}", run.ratio);
        // Errors that echo a long name: the ratio stays what the fillers allow.
        assert!(Run::mix(&sample(1, 705, Expect::Help), &sample(20, 1029, Expect::Error(0x200))).is_err());
        // A LIST of 20 MB needs 8 MiB of fillers: too many.
        assert!(Run::mix(&sample(1, 20_000_000, Expect::List), &sample(260, 17, Expect::Error(0x200))).is_err());
        let run = Run::mix(&sample(1, 1_000_000, Expect::List), &sample(260, 17, Expect::Error(0x200))).expect("a mix");
        assert!((1.5..=2.0).contains(&run.ratio), "{}", run.ratio);
    }

    #[test]
    fn split_counts_whole_requests_and_the_cut_one() {
        let run = Run::mix(&sample(1, 705, Expect::Help), &sample(260, 17, Expect::Error(0x200))).expect("a mix");
        let period = run.bytes.len() as u64;
        assert_eq!(run.split(0), (0, None));
        assert_eq!(run.split(1), (1, None));
        assert_eq!(run.split(2), (1, Some(2..run.ends[1])));
        assert_eq!(run.split(period), (run.ends.len() as u64, None));
        assert_eq!(run.split(period + 1), (run.ends.len() as u64 + 1, None));
        assert_eq!(run.expect(0), Expect::Help);
        assert_eq!(run.expect(run.ends.len() as u64), Expect::Help);
    }
}
