//! Sizes and offsets above 4 GiB (PROTOCOL.md § 6, § 7.1–7.4), through a real transfer.
//!
//! A server that keeps a size or an offset in 32 bits somewhere passes every case with small
//! files. `large.over-4gib` uploads a file of 4 GiB and 4099 bytes, then checks its size in STAT
//! and LIST, a GET from an offset above 4 GiB (the bytes, the whole file's size and digest), a
//! GET of the whole file where that is cheap enough, and deletes it.
//!
//! The file's content is fixed ([`fill`]): zeros, a 16-byte stamp every 256 MiB, and 4099
//! pseudo-random bytes from 4 GiB on, so that an offset taken modulo 2^32 reads zeros where the
//! random tail should be. It is generated as it is sent and compared as it arrives, never held;
//! its digest is a constant ([`MD5`], checked by an ignored test), which spares every run hashing
//! 4 GiB before the PUT head can be sent.
//!
//! It is heavy: an upload of 4 GiB costs the server a digest and a disk write of 4 GiB. By default
//! the case measures a 32 MiB upload first and goes on only if the whole is estimated to fit
//! `BUDGET`; `--case large` (the [`CATEGORY`]) runs it whatever it costs, within the case
//! timeout. Files above 4 GiB already on the server are checked too, cheaply (their sizes, and a
//! GET near their end), whether or not the upload runs.

use std::time::{Duration, Instant};

use ferry_proto::{Capabilities, Decoded, Digest, Entry, ErrorCode, FrameHead, Name, PutHead, PutMode, Request};
use ferry_proto::{ReplyDecoder, ServerItem};

use super::support::{case, fail, fits, problem, read_only_server, remaining, request_bytes, writable, Verdict};
use crate::case::{Case, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Problem, Raw, Replies, Reply};

/// The id prefix of the heavy cases: `--case large` asks for them by name.
pub const CATEGORY: &str = "large";
/// The uploaded file's size: 4 GiB and 4099 bytes.
pub const SIZE: u64 = (1 << 32) + 4099;
/// Where the GET above 4 GiB starts: 4096 bytes before the end.
pub const TAIL_OFFSET: u64 = (1 << 32) + 3;
/// The MD5 of the [`SIZE`] bytes of [`fill`].
pub const MD5: &str = "aafba44868fe862e9b08f920a42c4f4b";
/// Stamps mark every 256 MiB below 4 GiB.
const STAMP_EVERY: u64 = 1 << 28;
const STAMP_LEN: u64 = 16;
/// From here to the end the bytes are pseudo-random.
const TAIL_FROM: u64 = 1 << 32;
/// The upload that measures the transfer rate: 32 MiB.
const PROBE: u64 = 32 << 20;
/// What the case may cost when it is not asked for by name.
const BUDGET: Duration = Duration::from_secs(20);
/// Bytes sent per write.
const CHUNK: usize = 1 << 20;
/// Files above 4 GiB already on the server that are checked, at most (the first GET of one may
/// cost the server a digest of all of it).
const FOREIGN_MAX: usize = 1;

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    vec![case(
        "large.over-4gib",
        "A file above 4 GiB: PUT, STAT, LIST, GET from an offset above 4 GiB and of the whole, with its size, \
         bytes and digest",
        &["FRAME-2", "PUT-2", "STAT-1", "LIST-1", "GET-1", "GET-2"],
        Needs { alone: true, ..Needs::default() },
        over_4gib,
    )]
}

/// The digest of the whole content.
pub fn digest() -> Digest {
    Digest::from_hex(MD5.as_bytes()).expect("MD5 is 32 hexadecimal digits")
}

/// Writes the content's bytes from position `pos` into `buf`.
pub fn fill(pos: u64, buf: &mut [u8]) {
    buf.fill(0);
    let end = pos + buf.len() as u64;
    let mut k = pos / STAMP_EVERY;
    while k * STAMP_EVERY < end.min(TAIL_FROM) {
        let at = k * STAMP_EVERY;
        let stamp = stamp(k);
        for p in at.max(pos)..(at + STAMP_LEN).min(end) {
            buf[(p - pos) as usize] = stamp[(p - at) as usize];
        }
        k += 1;
    }
    for p in pos.max(TAIL_FROM)..end {
        buf[(p - pos) as usize] = tail_byte(p - TAIL_FROM);
    }
}

fn stamp(k: u64) -> [u8; STAMP_LEN as usize] {
    let mut out = [0u8; STAMP_LEN as usize];
    out[..8].copy_from_slice(&(k * STAMP_EVERY).to_be_bytes());
    out[8..].copy_from_slice(b"FerryBig");
    out
}

fn tail_byte(i: u64) -> u8 {
    let mut z = (i / 8).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> (8 * (i % 8))) as u8
}

/// Time kept back at the end of a case for the final checks and the cleanup.
fn margin(ctx: &Ctx) -> Duration {
    (ctx.target.case_timeout / 10).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

fn over_4gib(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("STAT-1", "no server hello"))?;
    let resume = hello.capabilities.contains(Capabilities::RESUME);
    let mut conn = ctx.conn().map_err(|p| problem("LIST-1", "handshake", &p))?;
    let entries = match conn.call(&Request::List) {
        Ok(Reply::List(v)) => v,
        Ok(r) => return Err(fail("LIST-1", format!("LIST: {}", r.describe()))),
        Err(p) => return Err(problem("LIST-1", "LIST", &p)),
    };
    drop(conn);
    // Files above 4 GiB already there: cheap checks, whatever else runs.
    let foreign: Vec<Entry> = entries
        .into_iter()
        .filter(|e| e.size > TAIL_FROM && !e.name.as_str().starts_with(&ctx.target.run_prefix))
        .take(FOREIGN_MAX)
        .collect();
    for e in &foreign {
        check_foreign(ctx, e, resume)?;
    }
    let why_not = match plan(ctx)? {
        Ok(plan) => return upload(ctx, &plan, resume),
        Err(why) => why,
    };
    Ok(match why_not {
        _ if !foreign.is_empty() => Outcome::Pass,
        NoUpload::Cannot(why) => Outcome::Unsupported(why),
        NoUpload::OverBudget(why) => Outcome::Skipped(why),
    })
}

/// Why the upload does not run.
enum NoUpload {
    /// The server does not allow it.
    Cannot(String),
    /// It would take longer than the case may: run with `--case large`, or a longer timeout.
    OverBudget(String),
}

/// What the probe uploads measured: estimates for the whole file.
struct Plan {
    put: Duration,
    get: Duration,
}

/// When the case stops waiting, whatever it is doing: a server slower than estimated is not
/// judged (the runner would count a case that overruns as a failure).
fn end(ctx: &Ctx) -> Instant {
    ctx.deadline.checked_sub(margin(ctx)).unwrap_or(ctx.deadline)
}

/// Uploads the first `size` bytes of the content under `name` on `raw` (a version 1 connection
/// past the handshake), streamed as they are generated, and reads the reply; the time from the
/// head to the reply, or `None` if the case's time ran out first.
fn put_streamed(
    ctx: &Ctx,
    raw: &mut Raw,
    name: &Name,
    size: u64,
    md5: Digest,
) -> Result<Option<Duration>, Box<Failure>> {
    let head = Request::Put(PutHead::leading(PutMode::CreateOnly, FrameHead { name: name.clone(), size, md5 }));
    let started = Instant::now();
    raw.send(&request_bytes(&head)).map_err(|e| fail("PUT-2", format!("sending the PUT head: {e}")))?;
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < size && !raw.reset && raw.received.is_empty() {
        let n = (size - sent).min(CHUNK as u64) as usize;
        fill(sent, &mut buf[..n]);
        if let Err(e) = raw.send(&buf[..n]) {
            // The server stopped reading: its reply, if any, says why.
            let mut f = Failure::new(
                "PUT-2",
                format!("PUT {name}: after {sent} of {size} bytes the server stopped reading ({e})"),
            );
            if let Ok(r) = Replies::session().reply(raw, Duration::from_millis(200)) {
                f.message.push_str(&format!("; it answered {}", r.describe()));
            }
            return Err(Box::new(f));
        }
        sent += n as u64;
        // An early reply (STORAGE_FULL, a refusal) ends the upload: it is read below.
        if sent.is_multiple_of(256 * CHUNK as u64) {
            raw.read_more(Instant::now() + Duration::from_millis(1), 64);
            if Instant::now() >= end(ctx) {
                return Ok(None);
            }
        }
    }
    let reply = Replies::session().reply(raw, end(ctx).saturating_duration_since(Instant::now()));
    let took = started.elapsed();
    let what = format!("PUT {name} of {size} bytes (after {sent} sent, {took:.1?})");
    match reply {
        Ok(Reply::Put { replaced: false }) if sent == size => Ok(Some(took)),
        Err(Problem::Ended(crate::case::Ending::TimedOut)) => Ok(None),
        Ok(r) => {
            let mut f = Failure::new("PUT-2", format!("{what}: {}", r.describe()));
            if let Reply::Error(e) = r {
                f.ending = Some(crate::case::Ending::ErrorReply { code: e.code.0, message: e.message });
            }
            Err(Box::new(f))
        }
        Err(p) => Err(problem("PUT-2", &what, &p)),
    }
}

/// Whether the upload can run, from two measured uploads (of 8 and 40 MiB: the difference
/// gives the rate without the fixed costs of a request).
fn plan(ctx: &Ctx) -> Result<Result<Plan, NoUpload>, Box<Failure>> {
    if !writable(ctx)? {
        let why = match read_only_server() {
            Outcome::Unsupported(why) => why,
            _ => "the server refuses uploads to this run's role".into(),
        };
        return Ok(Err(NoUpload::Cannot(why)));
    }
    if let Some(Outcome::Unsupported(why)) = fits(ctx, 8, SIZE) {
        return Ok(Err(NoUpload::Cannot(why)));
    }
    let mut times = Vec::new();
    for (i, size) in [PROBE / 4, PROBE + PROBE / 4].into_iter().enumerate() {
        let mut data = vec![0u8; size as usize];
        fill(0, &mut data);
        let name = ctx.name(&format!("probe{i}"));
        let mut raw = raw_conn(ctx, "PUT-2")?;
        let put = match put_streamed(ctx, &mut raw, &name, size, Digest::of(&data)) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Ok(Err(NoUpload::OverBudget(format!("PUT {name} ({size} bytes): no reply in the case's time"))))
            }
            Err(f) if matches!(&f.ending, Some(crate::case::Ending::ErrorReply { code, .. }) if *code == ErrorCode::STORAGE_FULL.0) =>
            {
                return Ok(Err(NoUpload::Cannot(format!("the server has no room: {}", f.message))));
            }
            Err(f) => return Err(f),
        };
        let started = Instant::now();
        match get_checked(&mut raw, &name, 0, Check::Content, ctx.io_deadline())? {
            Got::Frame { frame, offset, data } => check_frame(&name, offset, 0, &frame, data, size, None)?,
            Got::Error(code) => return Err(fail("GET-1", format!("GET {name}: error {}", ErrorCode(code)))),
            Got::Late => return Ok(Err(NoUpload::OverBudget(format!("GET {name} ({size} bytes): no reply in time")))),
        }
        times.push((size, put, started.elapsed()));
        raw.send(&request_bytes(&Request::Delete(name))).map_err(|e| fail("DEL-1", e.to_string()))?;
        let _ = Replies::session().reply(&mut raw, ctx.target.io_timeout);
    }
    let estimate = |a: (u64, Duration), b: (u64, Duration)| {
        let per_byte =
            if b.1 > a.1 { (b.1 - a.1).as_secs_f64() / (b.0 - a.0) as f64 } else { b.1.as_secs_f64() / b.0 as f64 };
        let fixed = a.1.as_secs_f64() - per_byte * a.0 as f64;
        Duration::from_secs_f64(fixed.max(0.0) + per_byte * SIZE as f64)
    };
    let plan = Plan {
        put: estimate((times[0].0, times[0].1), (times[1].0, times[1].1)),
        get: estimate((times[0].0, times[0].2), (times[1].0, times[1].2)),
    };
    let left = remaining(ctx).saturating_sub(margin(ctx));
    let need = plan.put + plan.put / 4;
    let timeout = (need + plan.get + margin(ctx) * 2).as_secs() + 1;
    if ctx.target.large && need > left {
        return Ok(Err(NoUpload::OverBudget(format!(
            "an upload of 4 GiB would take about {:.0?} here (measured on {} and {} MiB), more than the case \
             timeout leaves: run with a --timeout of at least {timeout} s",
            plan.put,
            times[0].0 >> 20,
            times[1].0 >> 20,
        ))));
    }
    if !ctx.target.large && need > left.min(BUDGET) {
        return Ok(Err(NoUpload::OverBudget(format!(
            "an upload of 4 GiB would take about {:.0?} here (measured on {} and {} MiB), above the {BUDGET:?} a \
             default run spends on it: run with --case {CATEGORY} (and a --timeout of at least {timeout} s)",
            plan.put,
            times[0].0 >> 20,
            times[1].0 >> 20,
        ))));
    }
    Ok(Ok(plan))
}

/// A version 1 connection past the handshake, for raw requests and [`Replies::session`].
fn raw_conn(ctx: &Ctx, requirement: &str) -> Result<Raw, Box<Failure>> {
    Ok(ctx.conn().map_err(|p| problem(requirement, "handshake", &p))?.raw)
}

fn upload(ctx: &Ctx, plan: &Plan, resume: bool) -> Verdict {
    let name = ctx.name("4gib");
    let md5 = digest();
    let mut raw = raw_conn(ctx, "PUT-2")?;
    let took = match put_streamed(ctx, &mut raw, &name, SIZE, md5) {
        Ok(Some(t)) => t,
        Ok(None) => {
            // The server may still be storing what it received: a DELETE pipelined behind the PUT
            // removes the file after it is published, so that the case leaves nothing behind.
            // (Sent mid-data, its bytes are only more data of an upload that cannot complete.)
            let _ = raw.send(&request_bytes(&Request::Delete(name.clone())));
            return Ok(Outcome::Skipped(format!(
                "the upload of 4 GiB took longer than estimated ({:.0?}) and than the case may: run with --case \
                 {CATEGORY} and a longer --timeout",
                plan.put
            )));
        }
        Err(f) if matches!(&f.ending, Some(crate::case::Ending::ErrorReply { code, .. }) if *code == ErrorCode::STORAGE_FULL.0) =>
        {
            return Ok(Outcome::Unsupported(format!("the server has no room for 4 GiB: {}", f.message)));
        }
        Err(f) => return Err(f),
    };
    // STAT and LIST: the whole size, and the digest if given.
    let mut replies = Replies::session();
    raw.send(&request_bytes(&Request::Stat(name.clone()))).map_err(|e| fail("STAT-1", e.to_string()))?;
    match replies.reply(&mut raw, ctx.target.io_timeout) {
        Ok(Reply::Stat(e)) => check_entry(&e, "STAT", "STAT-1")?,
        Ok(r) => return Err(fail("STAT-1", format!("STAT {name}: {}", r.describe()))),
        Err(p) => return Err(problem("STAT-1", &format!("STAT {name}"), &p)),
    }
    raw.send(&[0x01]).map_err(|e| fail("LIST-1", e.to_string()))?;
    match replies.reply(&mut raw, ctx.target.io_timeout) {
        Ok(Reply::List(v)) => match v.iter().find(|e| e.name == name) {
            Some(e) => check_entry(e, "LIST", "LIST-1")?,
            None => return Err(fail("LIST-1", format!("LIST does not show {name} ({SIZE} bytes)"))),
        },
        Ok(r) => return Err(fail("LIST-1", format!("LIST: {}", r.describe()))),
        Err(p) => return Err(problem("LIST-1", "LIST", &p)),
    }
    // GET from above 4 GiB.
    let tail = get_checked(&mut raw, &name, TAIL_OFFSET, Check::Content, end(ctx))?;
    match tail {
        Got::Frame { .. } if !resume => {
            return Err(fail("GET-1", "a GET from an offset above 0 was served by a server without RESUME"));
        }
        Got::Frame { frame, offset, data } => check_frame(&name, offset, TAIL_OFFSET, &frame, data, SIZE, Some(md5))?,
        Got::Error(code) if !resume && code == ErrorCode::BAD_OFFSET.0 => {}
        Got::Error(code) => {
            return Err(fail("GET-1", format!("GET {name} from {TAIL_OFFSET}: error {}", ErrorCode(code))));
        }
        Got::Late => return Ok(late(&name, TAIL_OFFSET)),
    }
    // The whole file, if it fits: the upload's own time says how long a GET will take.
    let budget = if ctx.target.large { remaining(ctx) } else { BUDGET.saturating_sub(took) };
    if plan.get + plan.get / 4 + margin(ctx) < budget.min(remaining(ctx)) {
        match get_checked(&mut raw, &name, 0, Check::Content, end(ctx))? {
            Got::Frame { frame, offset, data } => check_frame(&name, offset, 0, &frame, data, SIZE, Some(md5))?,
            Got::Error(code) => return Err(fail("GET-1", format!("GET {name} from 0: error {}", ErrorCode(code)))),
            Got::Late => return Ok(late(&name, 0)),
        }
    }
    raw.send(&request_bytes(&Request::Delete(name.clone()))).map_err(|e| fail("DEL-1", e.to_string()))?;
    match replies.reply(&mut raw, ctx.target.io_timeout) {
        Ok(Reply::Delete) => Ok(Outcome::Pass),
        Ok(r) => Err(fail("DEL-1", format!("DELETE {name}: {}", r.describe()))),
        Err(p) => Err(problem("DEL-1", &format!("DELETE {name}"), &p)),
    }
}

/// The outcome of a GET that got no reply within the case's time.
fn late(name: &Name, offset: u64) -> Outcome {
    Outcome::Skipped(format!(
        "GET {name} from {offset}: not done before the case timeout (the server may be hashing 4 GiB, or slow): give \
         a longer --timeout"
    ))
}

/// An entry of our file: the whole size; the digest, if given, of the whole content.
fn check_entry(e: &Entry, what: &str, requirement: &str) -> Result<(), Box<Failure>> {
    if e.size != SIZE {
        return Err(fail(
            requirement,
            format!(
                "{what} {}: size {} for a file of {SIZE} bytes{}",
                e.name,
                e.size,
                if e.size == SIZE & 0xffff_ffff { " (the size modulo 2^32)" } else { "" }
            ),
        ));
    }
    if e.md5.is_some_and(|m| m != digest()) {
        return Err(fail("LIST-3", format!("{what} {}: digest {:?}, not the file's", e.name, e.md5)));
    }
    Ok(())
}

/// A GET reply's frame against what it must be.
fn check_frame(
    name: &Name,
    offset: u64,
    asked: u64,
    frame: &FrameHead,
    data: u64,
    size: u64,
    md5: Option<Digest>,
) -> Result<(), Box<Failure>> {
    let what = format!("GET {name} from {asked}");
    if offset != asked {
        return Err(fail("GET-1", format!("{what}: the reply echoes offset {offset}")));
    }
    if frame.size != size {
        return Err(fail("GET-1", format!("{what}: the frame announces {} bytes; the file has {size}", frame.size)));
    }
    if let Some(m) = md5.filter(|m| *m != frame.md5) {
        return Err(fail("GET-2", format!("{what}: digest {}; the whole file's is {m}", frame.md5)));
    }
    if data != size - asked {
        return Err(fail("GET-1", format!("{what}: {data} data bytes; expected {}", size - asked)));
    }
    Ok(())
}

/// What [`get_checked`] compares the data with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// [`fill`]'s bytes.
    Content,
    /// Nothing: the bytes are counted.
    Count,
    /// Nothing: the connection is dropped after the head.
    HeadOnly,
}

/// A GET's outcome.
enum Got {
    Frame {
        offset: u64,
        frame: FrameHead,
        data: u64,
    },
    Error(u16),
    /// The reply was not over by the deadline, and the connection is open: a server may hash a
    /// large file before it answers, or send slowly, and take longer than the case may wait.
    /// Nothing is judged.
    Late,
}

/// Sends a GET on `raw` and reads its reply as it streams in, each data byte compared with
/// [`fill`]'s at its position (for [`Check::Content`]): the first difference ends the case,
/// without reading the rest. Waits for progress until `deadline`.
fn get_checked(raw: &mut Raw, name: &Name, offset: u64, check: Check, deadline: Instant) -> Result<Got, Box<Failure>> {
    let what = format!("GET {name} from {offset}");
    raw.send(&request_bytes(&Request::Get { name: name.clone(), offset }))
        .map_err(|e| fail("GET-1", format!("{what}: {e}")))?;
    let mut decoder = ReplyDecoder::in_session();
    let mut head: Option<(u64, FrameHead)> = None;
    let mut pos = offset;
    let mut count = 0u64;
    let mut expected = vec![0u8; 256 * 1024];
    loop {
        let decoded = decoder.decode(&raw.received).map_err(|e| fail("GET-1", format!("{what}: {e}")))?;
        let consumed = match decoded {
            Decoded::Item { item, consumed } => {
                match item {
                    ServerItem::Error(e) => {
                        raw.received.drain(..consumed);
                        return Ok(Got::Error(e.code.0));
                    }
                    ServerItem::GetHead { offset: echoed, frame } => {
                        pos = echoed.max(offset);
                        if check == Check::HeadOnly {
                            let data = frame_len(&frame, echoed);
                            return Ok(Got::Frame { offset: echoed, frame, data });
                        }
                        head = Some((echoed, frame));
                    }
                    ServerItem::Data(d) => {
                        if check == Check::Content {
                            for piece in d.chunks(expected.len()) {
                                let want = &mut expected[..piece.len()];
                                fill(pos, want);
                                if piece != want {
                                    let at = piece.iter().zip(want.iter()).position(|(a, b)| a != b).unwrap_or(0);
                                    let p = pos + at as u64;
                                    let mut f = Failure::new(
                                        "GET-1",
                                        format!(
                                            "{what}: the byte at position {p} of the file is wrong{}",
                                            if p >= TAIL_FROM { " (the bytes above 4 GiB)" } else { "" }
                                        ),
                                    );
                                    let end = (at + 16).min(piece.len());
                                    f.expected = Some(want[at..end].to_vec());
                                    f.actual = Some(piece[at..end].to_vec());
                                    return Err(Box::new(f));
                                }
                                pos += piece.len() as u64;
                            }
                        } else {
                            pos += d.len() as u64;
                        }
                        count += d.len() as u64;
                    }
                    ServerItem::DataEnd => {
                        raw.received.drain(..consumed);
                        let (echoed, frame) =
                            head.take().ok_or_else(|| fail("GET-1", format!("{what}: data without a head")))?;
                        return Ok(Got::Frame { offset: echoed, frame, data: count });
                    }
                    _ => return Err(fail("GET-1", format!("{what}: a reply that is not a GET's"))),
                }
                consumed
            }
            Decoded::NeedMore => {
                if !raw.read_more(deadline, 1 << 20) && (raw.eof || raw.reset || Instant::now() >= deadline) {
                    if !raw.eof && !raw.reset {
                        return Ok(Got::Late);
                    }
                    return Err(fail(
                        "GET-1",
                        format!(
                            "{what}: {} after {count} data bytes{}",
                            raw.ending(),
                            if head.is_some() { "" } else { " and no head" }
                        ),
                    ));
                }
                0
            }
        };
        raw.received.drain(..consumed);
    }
}

/// The data bytes a GET head announces.
fn frame_len(frame: &FrameHead, offset: u64) -> u64 {
    frame.size.saturating_sub(offset)
}

/// A file above 4 GiB already on the server: STAT gives the listed size, and a GET from near its
/// end (or the head of one from 0, without RESUME) announces that size and the listed digest, and
/// sends the rest; its bytes are checked if the file is recognisably one of ours.
fn check_foreign(ctx: &Ctx, e: &Entry, resume: bool) -> Result<(), Box<Failure>> {
    let name = &e.name;
    let mut raw = raw_conn(ctx, "STAT-1")?;
    raw.send(&request_bytes(&Request::Stat(name.clone()))).map_err(|e| fail("STAT-1", e.to_string()))?;
    let stat = match Replies::session().reply(&mut raw, ctx.target.io_timeout) {
        Ok(Reply::Stat(s)) => s,
        // Deleted meanwhile: nothing to judge.
        Ok(r) if r.code() == Some(ErrorCode::NOT_FOUND.0) => return Ok(()),
        Ok(r) => return Err(fail("STAT-1", format!("STAT {name} (listed with {} bytes): {}", e.size, r.describe()))),
        Err(p) => return Err(problem("STAT-1", &format!("STAT {name}"), &p)),
    };
    if stat.size != e.size {
        return Err(fail("STAT-1", format!("STAT {name}: {} bytes; LIST says {}", stat.size, e.size)));
    }
    let md5 = stat.md5.or(e.md5);
    let ours = e.size == SIZE && md5 == Some(digest());
    let (offset, check) = if resume {
        (e.size.saturating_sub(4096).max(TAIL_FROM + 1), if ours { Check::Content } else { Check::Count })
    } else {
        (0, Check::HeadOnly)
    };
    // The server may hash the whole file before it answers.
    let deadline = end(ctx);
    let digest_seen = match get_checked(&mut raw, name, offset, check, deadline)? {
        Got::Frame { offset: echoed, frame, data } => {
            check_frame(name, echoed, offset, &frame, data, e.size, md5)?;
            frame.md5
        }
        Got::Error(code) if code == ErrorCode::NOT_FOUND.0 => return Ok(()),
        Got::Error(code) => return Err(fail("GET-1", format!("GET {name} from {offset}: error {}", ErrorCode(code)))),
        Got::Late => return Ok(()),
    };
    // Recognisably ours (a copy, or an upload of an earlier run): its bytes are known.
    if resume && check != Check::Content && e.size == SIZE && digest_seen == digest() {
        match get_checked(&mut raw, name, offset, Check::Content, deadline)? {
            Got::Frame { offset: echoed, frame, data } => check_frame(name, echoed, offset, &frame, data, e.size, md5)?,
            Got::Error(_) | Got::Late => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_has_its_stamps_and_tail() {
        let mut b = [0u8; 32];
        fill(STAMP_EVERY - 8, &mut b);
        assert_eq!(&b[..8], &[0; 8]);
        assert_eq!(&b[8..24], &stamp(1));
        fill(TAIL_FROM - 8, &mut b);
        assert_eq!(&b[..8], &[0; 8]);
        assert_eq!(hex::encode(&b[8..24]), "afcd1d7b39a820e2c15c0289ec2d0a91");
        // Any split gives the same bytes.
        let mut whole = vec![0u8; 100];
        fill(TAIL_FROM - 50, &mut whole);
        let mut parts = vec![0u8; 100];
        for (i, c) in parts.chunks_mut(7).enumerate() {
            fill(TAIL_FROM - 50 + 7 * i as u64, c);
        }
        assert_eq!(whole, parts);
    }

    /// Hashes the 4 GiB: some seconds even with MD5 optimised. Run with `--ignored`.
    #[test]
    #[ignore = "hashes 4 GiB"]
    fn the_digest_constant_is_the_contents() {
        let mut h = ferry_proto::digest::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < SIZE {
            let n = (SIZE - pos).min(buf.len() as u64) as usize;
            fill(pos, &mut buf[..n]);
            h.update(&buf[..n]);
            pos += n as u64;
        }
        assert_eq!(h.finish().to_string(), MD5);
    }
}
