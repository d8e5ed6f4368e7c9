//! Capacity and deadlines (PROTOCOL.md § 12). Each case runs only where the server's hello makes
//! the check possible within the case's timeout, and says so otherwise: a deadline the server
//! does not announce, or one longer than the case may wait, cannot be judged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::{Capabilities, ErrorCode, PutMode, Request};

use super::support::{
    case, code_name, fail, problem, put_head, put_ok, raw_error, raw_name_request, remaining, server_alive, Verdict,
};
use crate::case::{Case, Ending, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Problem, Raw, Reply};

/// The largest `max_clients` the capacity case fills.
const MAX_FILLED: u32 = 64;
/// The file a stalled reader asks for: larger than the socket buffers of both ends together.
const STALL_FILE: usize = 32 << 20;

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    vec![
        case(
            "limits.capacity.busy",
            "At max_clients, a new connection gets BUSY before its hello and takes no slot",
            &["CAP-1", "CAP-2"],
            Needs { alone: true, ..Needs::default() },
            capacity,
        ),
        case(
            "limits.deadline.handshake",
            "Half a hello is closed by the handshake deadline",
            &["TIME-1", "TIME-4"],
            Needs::default(),
            handshake_deadline,
        ),
        case(
            "limits.deadline.idle",
            "A connection silent for idle_timeout_ms after a reply is closed",
            &["TIME-2", "TIME-4"],
            Needs::default(),
            idle_deadline,
        ),
        case(
            "limits.deadline.head",
            "A request head trickling in one byte at a time is cut off at head_timeout_ms",
            &["TIME-7", "TIME-8", "TIME-4"],
            Needs::default(),
            head_deadline,
        ),
        case(
            "limits.deadline.progress",
            "PUT data trickling in below PROGRESS_UNIT per progress_timeout_ms is cut off, and discarded",
            &["TIME-9", "TIME-10", "TIME-4", "STORE-2"],
            Needs::default(),
            progress_deadline,
        ),
        case(
            "limits.deadline.stalled-reader",
            "A client that stops reading during a large GET is closed within progress_timeout_ms",
            &["TIME-5", "TIME-10"],
            Needs::default(),
            stalled_reader,
        ),
    ]
}

/// Time kept back at the end of a case for the final checks and the cleanup.
fn margin(ctx: &Ctx) -> Duration {
    (ctx.target.case_timeout / 10).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

/// Tolerance on a deadline the server announces: scheduling and a coarse timer.
fn slack(deadline: Duration) -> Duration {
    (deadline / 4).max(Duration::from_secs(2))
}

/// The bytes a server sent before closing for a deadline: nothing or `TIMEOUT` (a SHOULD,
/// `[TIME-4]`); another error is the wrong code (`[ERR-6]`).
fn judge_timeout_close(got: &[u8], what: &str) -> Verdict {
    if got.is_empty() {
        return Ok(Outcome::Warn(Failure::new("TIME-4", format!("{what}: closed without sending TIMEOUT first"))));
    }
    let mut raw_bytes = got.to_vec();
    if raw_bytes.first() == Some(&0xFF) && raw_bytes.len() >= 5 {
        let code = u16::from_be_bytes([raw_bytes[1], raw_bytes[2]]);
        let len = usize::from(u16::from_be_bytes([raw_bytes[3], raw_bytes[4]]));
        raw_bytes.drain(..(5 + len).min(raw_bytes.len()));
        if code == ErrorCode::TIMEOUT.0 && raw_bytes.is_empty() {
            return Ok(Outcome::Pass);
        }
        if raw_bytes.is_empty() {
            return Err(fail("ERR-6", format!("{what}: closed with {} instead of TIMEOUT", code_name(code))));
        }
    }
    let mut f = Failure::new("TIME-4", format!("{what}: unexpected bytes before the close"));
    f.actual = Some(got.to_vec());
    Err(Box::new(f))
}

// ---------------------------------------------------------------------------------------------
// Capacity

fn capacity(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("CAP-1", "no server hello"))?;
    let max = hello.max_clients;
    if max == 0 {
        return Ok(Outcome::Unsupported("the server does not announce max_clients".into()));
    }
    if max > MAX_FILLED {
        return Ok(Outcome::Unsupported(format!("max_clients is {max}; this case fills at most {MAX_FILLED}")));
    }
    let (addr, token, timeout) = (ctx.target.addr, ctx.target.token.as_deref(), ctx.target.io_timeout);
    let mut held: Vec<Conn> = Vec::new();
    // Fill the slots. BUSY may come early: a per-address limit (§ 12.1), or connections of
    // earlier cases the server has not finished closing.
    while held.len() < max as usize {
        match Conn::open(addr, token, timeout) {
            Ok(c) => held.push(c),
            Err(Problem::Ended(Ending::ErrorReply { code, .. })) if code == ErrorCode::BUSY.0 => break,
            Err(p) => return Err(problem("CAP-1", &format!("connection {} of {max}", held.len() + 1), &p)),
        }
        if remaining(ctx) < timeout {
            return Ok(Outcome::HarnessError("the case deadline passed while filling the slots".into()));
        }
    }
    if held.is_empty() {
        return Ok(Outcome::Unsupported("the server is at capacity before this case opened a connection".into()));
    }
    let filled = held.len();
    // The next connections get BUSY without sending anything, and are closed. (Not `ctx.raw()`:
    // a BUSY here is what the case looks for, not a sign of a crowded run.)
    let mut refused: Vec<Raw> = Vec::new();
    for k in 1..=3 {
        let mut raw = Raw::connect(addr, timeout)
            .map_err(|e| fail("CAP-1", format!("connection {} at capacity: {e}", filled + k)))?;
        let (code, _) = raw_error(&mut raw, ctx.io_deadline()).map_err(|e| {
            fail("CAP-1", format!("with {filled} connections served, a new one that sent nothing: expected BUSY; {e}"))
        })?;
        if code != ErrorCode::BUSY.0 {
            return Err(fail("CAP-1", format!("at capacity, a new connection got {}; expected BUSY", code_name(code))));
        }
        if !raw.wait_close(ctx.io_deadline()) {
            return Err(fail("CAP-1", "at capacity, a connection was sent BUSY but not closed"));
        }
        // Kept open on this side: it must hold no slot all the same.
        refused.push(raw);
    }
    // The ones we hold still work.
    for c in held.iter_mut().take(3) {
        match c.call(&Request::Help) {
            Ok(Reply::Help(_)) => {}
            Ok(r) => return Err(fail("CAP-2", format!("a served connection, at capacity: HELP got {}", r.describe()))),
            Err(p) => return Err(problem("CAP-2", "a served connection, at capacity: HELP", &p)),
        }
    }
    // One slot freed: a new connection is served, once the server has seen the close.
    drop(held.pop());
    let deadline = ctx.io_deadline();
    loop {
        match Conn::open(addr, token, timeout) {
            Ok(mut c) => {
                if !matches!(c.call(&Request::Help), Ok(Reply::Help(_))) {
                    return Err(fail("CAP-2", "the connection taking the freed slot does not answer HELP"));
                }
                break;
            }
            Err(Problem::Ended(Ending::ErrorReply { code, .. }))
                if code == ErrorCode::BUSY.0 && Instant::now() + Duration::from_millis(50) < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(p) => {
                return Err(problem(
                    "CAP-2",
                    &format!("after closing 1 of {filled} connections (and 3 refused with BUSY), a new connection"),
                    &p,
                ))
            }
        }
    }
    drop(refused);
    drop(held);
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Deadlines

fn handshake_deadline(ctx: &Ctx) -> Verdict {
    let mut raw = ctx.raw().map_err(|e| fail("TIME-1", format!("cannot connect: {e}")))?;
    raw.send(b"FER").map_err(|e| fail("TIME-1", e.to_string()))?;
    let started = Instant::now();
    let wait_until = ctx.deadline - margin(ctx);
    let closed = raw.wait_close(wait_until);
    let waited = started.elapsed();
    if !closed {
        return Ok(Outcome::Unsupported(format!(
            "half a hello was still open after {waited:.1?}: the handshake deadline is not announced, and may be \
             longer than the case timeout"
        )));
    }
    // A byte (the server hello, an error other than TIMEOUT) for an incomplete hello is wrong.
    judge_timeout_close(&raw.received, &format!("half a hello, closed after {waited:.1?}"))
}

fn idle_deadline(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("TIME-2", "no server hello"))?;
    if hello.idle_timeout_ms == 0 {
        return Ok(Outcome::Unsupported("the server announces no idle deadline".into()));
    }
    let idle = Duration::from_millis(u64::from(hello.idle_timeout_ms));
    let limit = idle + slack(idle);
    if limit + margin(ctx) > remaining(ctx) {
        return Ok(Outcome::Unsupported(format!("idle deadline {idle:?}: longer than the case timeout allows")));
    }
    let mut conn = ctx.conn().map_err(|p| problem("TIME-2", "handshake", &p))?;
    match conn.call(&Request::Help) {
        Ok(Reply::Help(_)) => {}
        Ok(r) => return Err(fail("TIME-2", format!("HELP: {}", r.describe()))),
        Err(p) => return Err(problem("TIME-2", "HELP", &p)),
    }
    let started = Instant::now();
    let closed = conn.raw.wait_close(started + limit);
    let waited = started.elapsed();
    if !closed {
        return Err(fail(
            "TIME-2",
            format!("still open {waited:.1?} after the last reply; idle_timeout_ms is {}", hello.idle_timeout_ms),
        ));
    }
    judge_timeout_close(&conn.raw.received, &format!("idle for {waited:.1?}"))
}

fn head_deadline(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("TIME-7", "no server hello"))?;
    if hello.head_timeout_ms == 0 {
        return Err(fail("TIME-8", "the hello announces no head deadline (head_timeout_ms 0)"));
    }
    let deadline = Duration::from_millis(u64::from(hello.head_timeout_ms));
    // A STAT of a long name: nothing but head.
    let len = usize::try_from(hello.max_name_len.min(4096)).unwrap_or(255);
    let suffix = vec![b'x'; len.saturating_sub(ctx.prefix.len()).max(1)];
    let bytes = raw_name_request(0x02, &[ctx.prefix.as_bytes(), &suffix].concat(), &[]);
    let verdict = trickle(ctx, "TIME-7", "head_timeout_ms", deadline, &[], &bytes, false)?;
    server_alive(ctx, "TIME-7", "the cut-off request")?;
    if matches!(verdict, Outcome::Pass) && deadline > Duration::from_secs(60) {
        return Ok(Outcome::Warn(Failure::new("TIME-8", format!("head_timeout_ms is {deadline:?}, above 60 s"))));
    }
    Ok(verdict)
}

fn progress_deadline(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("TIME-9", "no server hello"))?;
    if hello.progress_timeout_ms == 0 {
        return Err(fail("TIME-10", "the hello announces no progress deadline (progress_timeout_ms 0)"));
    }
    let deadline = Duration::from_millis(u64::from(hello.progress_timeout_ms));
    // Less than a PROGRESS_UNIT in all, so that no pace can count as progress (and no more
    // than the server takes). The head goes at once; the data trickles. Without the write role
    // the data is read and discarded all the same (`[PUT-5]`), under the same deadline.
    let size = super::support::upload_size(ctx, ferry_proto::limits::PROGRESS_UNIT as usize - 1);
    if let Some(o) = super::support::fits(ctx, 7, 0) {
        return Ok(o);
    }
    let upload = super::support::writable(ctx)?;
    let name = ctx.name("trickle");
    let data = vec![b't'; size];
    let head = super::support::request_bytes(&put_head(&name, PutMode::Overwrite, &data, None));
    let verdict = trickle(ctx, "TIME-9", "progress_timeout_ms", deadline, &head, &data, !upload)?;
    let mut other = ctx.conn().map_err(|p| problem("STORE-2", "handshake", &p))?;
    match other.call(&Request::Stat(name.clone())) {
        Ok(r) if r.code() == Some(ErrorCode::NOT_FOUND.0) => {}
        Ok(r) if !upload && r.code().is_some() => {}
        Ok(r) => return Err(fail("STORE-2", format!("after the upload was cut off, STAT {name}: {}", r.describe()))),
        Err(p) => return Err(problem("STORE-2", "STAT after the cut-off upload", &p)),
    }
    Ok(verdict)
}

/// Sends `at_once`, then `trickled` a byte at a time, paced so that the whole takes longer than
/// `deadline` plus slack, and expects the close within it: the deadline covers the whole, not
/// each read. With `refused`, the request is one the server refuses, and it may say so before
/// the data it discards has arrived (`[PUT-5]`): one recoverable error may come first.
fn trickle(
    ctx: &Ctx,
    req: &str,
    field: &str,
    deadline: Duration,
    at_once: &[u8],
    trickled: &[u8],
    refused: bool,
) -> Verdict {
    let limit = deadline + slack(deadline);
    if limit + margin(ctx) > remaining(ctx) {
        return Ok(Outcome::Unsupported(format!("{field} {deadline:?}: longer than the case timeout allows")));
    }
    let mut conn = ctx.conn().map_err(|p| problem(req, "handshake", &p))?;
    let n = u32::try_from(trickled.len()).unwrap_or(u32::MAX).max(1);
    // A byte every quarter of the deadline at most: no single read waits long, the whole does.
    let pace = (limit / n).max(Duration::from_millis(20)).min(deadline / 4);
    if pace * n < limit {
        return Ok(Outcome::Unsupported(format!(
            "{} bytes sent a byte per {pace:?} end before the deadline",
            trickled.len()
        )));
    }
    conn.raw.send(at_once).map_err(|e| fail(req, e.to_string()))?;
    let mut writer = conn.raw.stream.try_clone().map_err(|e| fail(req, e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = stop.clone();
    let bytes = trickled.to_vec();
    let started = Instant::now();
    let trickler = std::thread::spawn(move || {
        for b in bytes {
            if stop_writer.load(Ordering::Relaxed) || std::io::Write::write_all(&mut writer, &[b]).is_err() {
                return;
            }
            std::thread::sleep(pace);
        }
    });
    let closed = conn.raw.wait_close(started + limit);
    let waited = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = trickler.join();
    if !closed {
        return Err(fail(
            req,
            format!(
                "bytes arriving one per {pace:?} kept the connection open for {waited:.1?}; {field} is {deadline:?}"
            ),
        ));
    }
    let mut got = conn.raw.received.as_slice();
    if refused {
        got = skip_early_refusal(got);
    }
    judge_timeout_close(got, &format!("a trickle, after {waited:.1?}"))
}

/// `got` without a whole recoverable error reply (`0x02xx`) at its start, if there is one.
fn skip_early_refusal(got: &[u8]) -> &[u8] {
    if got.len() >= 5 && got[0] == 0xFF && got[1] == 0x02 {
        let end = 5 + usize::from(u16::from_be_bytes([got[3], got[4]]));
        if got.len() >= end {
            return &got[end..];
        }
    }
    got
}

fn stalled_reader(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("TIME-5", "no server hello"))?;
    if hello.progress_timeout_ms == 0 {
        return Err(fail("TIME-10", "the hello announces no progress deadline (progress_timeout_ms 0)"));
    }
    let progress = Duration::from_millis(u64::from(hello.progress_timeout_ms));
    let drain_time = ctx.target.io_timeout.min(Duration::from_secs(5));
    // Said before a large upload and a long wait that could conclude nothing.
    if progress + slack(progress) + margin(ctx) + drain_time > remaining(ctx) {
        return Ok(Outcome::Unsupported(format!(
            "progress_timeout_ms is {progress:?}: longer than the case timeout allows"
        )));
    }
    let upload = super::support::fits(ctx, 3, STALL_FILE as u64).is_none() && super::support::writable(ctx)?;
    // Made before connecting: an idle deadline must not pass while it is made.
    let data: Vec<u8> = if upload { vec![b'z'; STALL_FILE] } else { Vec::new() };
    let mut conn = ctx.conn().map_err(|p| problem("TIME-5", "handshake", &p))?;
    let name = if upload {
        let name = ctx.name("big");
        put_ok(&mut conn, &name, PutMode::Overwrite, &data, "PUT-2")?;
        name
    } else {
        let entries = match conn.call(&Request::List) {
            Ok(Reply::List(v)) => v,
            Ok(r) => return Err(fail("LIST-1", format!("LIST: {}", r.describe()))),
            Err(p) => return Err(problem("LIST-1", "LIST", &p)),
        };
        match entries.into_iter().find(|e| e.size >= STALL_FILE as u64) {
            Some(e) => e.name,
            None => {
                return Ok(Outcome::Skipped(format!(
                    "needs a file of at least {} MiB: a write role to upload one, or one on the server",
                    STALL_FILE >> 20
                )))
            }
        }
    };
    let status = conn.hello.capabilities.contains(Capabilities::STATUS);
    // Ask for it and read nothing.
    let mut stalled = ctx.conn().map_err(|p| problem("TIME-5", "handshake", &p))?;
    let peer = ctx.seen_by_server(&stalled.raw.stream).map_err(|e| fail("TIME-5", e.to_string()))?.to_string();
    stalled
        .raw
        .send(&super::support::request_bytes(&Request::Get { name: name.clone(), offset: 0 }))
        .map_err(|e| fail("TIME-5", e.to_string()))?;
    let started = Instant::now();
    let case_end = ctx.deadline.checked_sub(margin(ctx) + drain_time).unwrap_or(started);
    // The announced deadline, counted from the last unit the client took: within moments of
    // the request, since the socket buffers take megabytes at once.
    let judged = started + progress + slack(progress) <= case_end;
    let stall_until = case_end.min(started + progress + slack(progress));
    // With STATUS the close shows in the records; without it, the whole stall is waited out.
    while Instant::now() < stall_until {
        std::thread::sleep(Duration::from_millis(250).min(stall_until.saturating_duration_since(Instant::now())));
        if status {
            if let Ok(Reply::Status(records)) = conn.call(&Request::Status) {
                if records.iter().any(|r| r.peer == peer && r.disconnected_ms.is_some()) {
                    break;
                }
            }
        }
    }
    let stall = started.elapsed();
    // Drain what is buffered: the whole file means the server was still waiting to write.
    let mut total = 0usize;
    let drain_until = Instant::now() + drain_time;
    while stalled.raw.read_more(drain_until, 1 << 20) {
        total += stalled.raw.received.len();
        stalled.raw.received.clear();
    }
    let head = 1 + 8 + 4 + name.as_str().len() + 8 + 32;
    let closed = stalled.raw.eof || stalled.raw.reset;
    if closed && total < head + STALL_FILE {
        return Ok(Outcome::Pass);
    }
    if total >= head + STALL_FILE {
        if !judged {
            return Ok(Outcome::Unsupported(format!(
                "progress_timeout_ms is {progress:?}: longer than the case timeout allows"
            )));
        }
        return Err(fail(
            "TIME-5",
            format!("the whole file arrived after a stall of {stall:.1?}; progress_timeout_ms is {progress:?}"),
        ));
    }
    Err(fail("TIME-5", format!("after a stall of {stall:.1?} and reading again, {total} bytes came, and no close")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_then_close_passes_and_other_codes_do_not() {
        let timeout = [0xFF, 0x01, 0x06, 0x00, 0x02, b'h', b'i'];
        assert!(matches!(judge_timeout_close(&timeout, "x"), Ok(Outcome::Pass)));
        assert!(matches!(judge_timeout_close(&[], "x"), Ok(Outcome::Warn(_))));
        let malformed = [0xFF, 0x01, 0x00, 0x00, 0x00];
        assert!(judge_timeout_close(&malformed, "x").is_err());
        assert!(judge_timeout_close(&[0x80, 0, 1], "x").is_err());
    }

    #[test]
    fn an_early_refusal_is_skipped_whole_or_not_at_all() {
        let forbidden_then_timeout = [0xFF, 0x02, 0x02, 0x00, 0x01, b'x', 0xFF, 0x01, 0x06, 0x00, 0x00];
        assert_eq!(skip_early_refusal(&forbidden_then_timeout), &forbidden_then_timeout[6..]);
        let cut = [0xFF, 0x02, 0x02, 0x00, 0x05, b'x'];
        assert_eq!(skip_early_refusal(&cut), &cut[..]);
        let fatal = [0xFF, 0x01, 0x06, 0x00, 0x00];
        assert_eq!(skip_early_refusal(&fatal), &fatal[..]);
    }
}
