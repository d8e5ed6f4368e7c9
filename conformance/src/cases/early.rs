//! Decisions that come before the data (PROTOCOL.md § 7.4, § 9.3–9.4).
//!
//! A PUT whose outcome is decided by its head — `EXISTS`, `BAD_NAME`, `FORBIDDEN`, `TOO_LARGE` —
//! is sent head first, its data held back, to see what the server does before the data:
//!
//! - The recoverable refusals MAY come before the data (`[PUT-5]`): an early reply passes, and so
//!   does none. Either way the refusal must be the decided code, nothing else may come before the
//!   data, and the data must then be read and discarded exactly: the data is made of HELP opcodes,
//!   so a server that reads it as requests answers HELPs where a STAT's `NOT_FOUND` must come.
//! - `TOO_LARGE` closes the connection without the data being read (`[PUT-4]`), and SHOULD come as
//!   soon as the size is read (`[ERR-8]`). No reply to the head alone is a warning; the data is
//!   then pushed, and a server that takes 32 MiB of it without answering reads it: a failure. One
//!   that takes nothing (its transport stalls) and stays silent is only slow.

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use ferry_proto::name::RESERVED_PREFIX;
use ferry_proto::{Digest, ErrorCode, Name, PutMode, Request, Role};

use super::support::{
    case, code_name, fail, fits, get_whole, problem, put_head, put_ok, read_only_server, request_bytes, writable,
    Verdict,
};
use crate::case::{Case, Ending, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Problem, Raw, Replies, Reply};

/// The data of the refused uploads: more than a progress unit, all HELP opcodes.
const DATA_LEN: usize = 70_000;
/// Data pushed after a `TOO_LARGE` head that got no reply: beyond what the transport buffers of
/// common systems hold (§ 12.8 counts the same for pipelined requests).
const PUSH_MAX: u64 = 32 << 20;
/// Writes that make no progress for this long: the server is not reading.
const STALL: Duration = Duration::from_millis(500);

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    vec![
        case(
            "early.put.exists",
            "A create-only PUT of an existing name, data held back: EXISTS before or after the data, whatever \
             the digest, the data discarded, the file kept",
            &["PUT-5", "PUT-1", "ERR-7"],
            Needs { role: Role::Write, ..Needs::default() },
            exists,
        ),
        case(
            "early.put.bad-name",
            "A PUT of an invalid name, data held back: BAD_NAME before or after the data, the data discarded",
            &["PUT-5", "NAME-7"],
            Needs::default(),
            bad_name,
        ),
        case(
            "early.put.forbidden",
            "A PUT the role or a read-only server forbids, data held back: FORBIDDEN before or after the data, \
             the data discarded, nothing stored",
            &["PUT-5", "ROLE-1", "ROLE-2"],
            Needs::default(),
            forbidden,
        ),
        case(
            "early.put.too-large",
            "A PUT above max_file_size, head only: TOO_LARGE and a close, without the data being read",
            &["PUT-4", "ERR-8", "LIM-1"],
            Needs::default(),
            too_large,
        ),
    ]
}

/// How long a reply to a head alone is waited for.
fn early_wait(ctx: &Ctx) -> Duration {
    (ctx.target.io_timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

/// The bytes of a PUT head whose name is given raw (for names the `Name` type refuses).
fn raw_put_head(name: &[u8], size: u64, md5: Digest) -> Vec<u8> {
    let mut out = vec![0x04, 0x00];
    out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&md5.to_hex());
    out
}

/// Sends `head` alone on `raw`, waits a moment for the refusal `want`, then sends `data` and,
/// if none came yet, expects `want` then. A request after the data must get its own reply: the
/// data was read and discarded, exactly (`[PUT-5]`). Whether the refusal came early.
fn held_back(
    ctx: &Ctx,
    raw: &mut Raw,
    what: &str,
    head: &[u8],
    data: &[u8],
    want: ErrorCode,
    requirement: &str,
) -> Result<bool, Box<Failure>> {
    let mut replies = Replies::session();
    raw.send(head).map_err(|e| fail(requirement, format!("{what}: sending the head: {e}")))?;
    let judge = |r: &Reply, when: &str| -> Result<(), Box<Failure>> {
        match r.code() {
            Some(c) if c == want.0 => Ok(()),
            Some(c) => {
                Err(fail(requirement, format!("{what}, {when}: got {}; expected {}", code_name(c), code_name(want.0))))
            }
            None => Err(fail("PUT-5", format!("{what}, {when}: got {}; expected {}", r.describe(), code_name(want.0)))),
        }
    };
    let early = match replies.reply(raw, early_wait(ctx)) {
        Ok(r) => {
            judge(&r, "with only the head sent")?;
            true
        }
        Err(Problem::Ended(Ending::TimedOut)) => false,
        Err(p) => return Err(problem(requirement, &format!("{what}, with only the head sent"), &p)),
    };
    raw.send(data).map_err(|e| fail("PUT-5", format!("{what}: sending the data: {e}")))?;
    if !early {
        match replies.reply(raw, ctx.target.io_timeout) {
            Ok(r) => judge(&r, "after the data")?,
            Err(p) => return Err(problem(requirement, &format!("{what}, after the data"), &p)),
        }
    }
    // The data was HELP opcodes: read as requests, they would get HELP replies first.
    let missing = ctx.name("missing");
    raw.send(&request_bytes(&Request::Stat(missing.clone()))).map_err(|e| fail("PUT-5", e.to_string()))?;
    match replies.reply(raw, ctx.target.io_timeout) {
        Ok(r) if r.code() == Some(ErrorCode::NOT_FOUND.0) => Ok(early),
        Ok(r) => Err(fail(
            "PUT-5",
            format!(
                "{what} was refused {}; a STAT of {missing} sent after its {} data bytes got {}: the data was not read \
                 and discarded exactly",
                if early { "before the data" } else { "after the data" },
                data.len(),
                r.describe()
            ),
        )),
        Err(p) => Err(problem("PUT-5", &format!("STAT {missing} after the refused {what} and its data"), &p)),
    }
}

fn exists(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 8, DATA_LEN as u64) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let mut conn = ctx.conn().map_err(|p| problem("PUT-2", "handshake", &p))?;
    let name = ctx.name("exists");
    let first = b"the first version".to_vec();
    put_ok(&mut conn, &name, PutMode::Overwrite, &first, "PUT-2")?;
    let data = vec![0x07; DATA_LEN];
    // A digest that does not match the data: EXISTS is decided before it is known (`[ERR-7]`).
    let head = request_bytes(&put_head(&name, PutMode::CreateOnly, &data, Some(Digest::of(b"other bytes"))));
    let what = format!("a create-only PUT of the existing {name} with a wrong digest");
    held_back(ctx, &mut conn.raw, &what, &head, &data, ErrorCode::EXISTS, "PUT-1")?;
    let mut other = ctx.conn().map_err(|p| problem("PUT-1", "handshake", &p))?;
    match get_whole(&mut other, &name, "PUT-1")? {
        Some(d) if d == first => Ok(Outcome::Pass),
        got => Err(fail("PUT-1", format!("{name} changed after a refused create-only PUT: {got:?}"))),
    }
}

fn bad_name(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 4, DATA_LEN as u64) {
        return Ok(o);
    }
    let mut conn = ctx.conn().map_err(|p| problem("NAME-7", "handshake", &p))?;
    let data = vec![0x07; DATA_LEN];
    let md5 = Digest::of(&data);
    let slash = [ctx.prefix.as_bytes(), b"a/b"].concat();
    let reserved = [RESERVED_PREFIX.as_bytes(), b"-early-", ctx.prefix.as_bytes()].concat();
    for (what, name) in [("a PUT of a name with '/'", slash), ("a PUT of a name under .ferry", reserved)] {
        held_back(
            ctx,
            &mut conn.raw,
            what,
            &raw_put_head(&name, data.len() as u64, md5),
            &data,
            ErrorCode::BAD_NAME,
            "NAME-7",
        )?;
    }
    Ok(Outcome::Pass)
}

/// A connection whose PUTs the server must refuse with FORBIDDEN, and the requirement why: a
/// read role (`[ROLE-1]`), or a server configured read-only (`[ROLE-2]`).
fn forbidding_conn(ctx: &Ctx) -> Result<Option<(Conn, &'static str)>, Box<Failure>> {
    let conn = ctx.conn().map_err(|p| problem("ROLE-1", "handshake", &p))?;
    if conn.hello.role < Role::Write {
        return Ok(Some((conn, "ROLE-1")));
    }
    if !writable(ctx)? {
        return Ok(Some((conn, "ROLE-2")));
    }
    match ctx.conn_as(None) {
        Ok(c) if c.hello.role < Role::Write => Ok(Some((c, "ROLE-1"))),
        _ => Ok(None),
    }
}

fn forbidden(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 10, DATA_LEN as u64) {
        return Ok(o);
    }
    let Some((mut conn, requirement)) = forbidding_conn(ctx)? else {
        return Ok(Outcome::Skipped(
            "every connection the run can open may write (no read role: give a read token, or none with an \
             anonymous read role), and the server is not read-only"
                .into(),
        ));
    };
    let name = ctx.name("forbidden");
    let data = vec![0x07; DATA_LEN];
    let head = request_bytes(&put_head(&name, PutMode::Overwrite, &data, None));
    let what = format!(
        "a PUT of {name} from a {} role{}",
        conn.hello.role,
        if requirement == "ROLE-2" { " on a read-only server" } else { "" }
    );
    held_back(ctx, &mut conn.raw, &what, &head, &data, ErrorCode::FORBIDDEN, requirement)?;
    let mut other = ctx.conn().map_err(|p| problem(requirement, "handshake", &p))?;
    match get_whole(&mut other, &name, requirement)? {
        None => Ok(Outcome::Pass),
        Some(_) => Err(fail(requirement, format!("{name} exists after {what} was refused"))),
    }
}

/// What pushing data at a server that has not answered showed.
struct Pushed {
    /// Bytes the transport took.
    taken: u64,
    /// The writes made no progress for [`STALL`]: the server is not reading.
    stalled: bool,
}

/// Writes up to `total` zero bytes on `raw` while nothing arrives, until the writes stall or the
/// connection ends.
fn push(raw: &mut Raw, total: u64) -> Pushed {
    let chunk = [0u8; 64 * 1024];
    let mut taken = 0u64;
    let mut stalled = false;
    let mut unchecked = 0u64;
    let _ = raw.stream.set_write_timeout(Some(STALL));
    while taken < total && raw.received.is_empty() && !raw.eof && !raw.reset {
        let n = (total - taken).min(chunk.len() as u64) as usize;
        match raw.stream.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(k) => {
                taken += k as u64;
                unchecked += k as u64;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                stalled = true;
                break;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                raw.reset = true;
                break;
            }
        }
        // A reply ends the push: look for one about once per MiB.
        if unchecked >= 1 << 20 {
            unchecked = 0;
            raw.read_more(Instant::now() + Duration::from_millis(1), 64 * 1024);
        }
    }
    let _ = raw.stream.set_write_timeout(Some(raw.timeout));
    Pushed { taken, stalled }
}

fn too_large(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("PUT-4", "no server hello"))?;
    if let Some(o) = fits(ctx, 9, 0) {
        return Ok(o);
    }
    let size = hello.max_file_size.saturating_add(1);
    let name: Name = ctx.name("too-large");
    let head = request_bytes(&put_head(&name, PutMode::Overwrite, &[], None));
    // The empty file's head with the size changed: the digest stays that of no data.
    let head = {
        let mut h = head;
        let at = h.len() - 32 - 8;
        h[at..at + 8].copy_from_slice(&size.to_be_bytes());
        h
    };
    let what = format!("a PUT of {size} bytes (max_file_size is {})", hello.max_file_size);
    let mut raw = ctx.conn().map_err(|p| problem("PUT-4", "handshake", &p))?.raw;
    let started = Instant::now();
    raw.send(&head).map_err(|e| fail("PUT-4", format!("{what}: {e}")))?;
    let mut replies = Replies::session();
    let closed_after = |raw: &mut Raw, r: Reply, when: &str| -> Result<(), Box<Failure>> {
        match r.code() {
            Some(c) if c == ErrorCode::TOO_LARGE.0 => {}
            _ => return Err(fail("PUT-4", format!("{what}, {when}: got {}; expected TOO_LARGE", r.describe()))),
        }
        if !raw.wait_close(ctx.io_deadline()) {
            return Err(fail("ERR-4", format!("{what}: no close after TOO_LARGE")));
        }
        Ok(())
    };
    match replies.reply(&mut raw, early_wait(ctx)) {
        Ok(r) => {
            closed_after(&mut raw, r, "with only the head sent")?;
            return Ok(Outcome::Pass);
        }
        Err(Problem::Ended(Ending::TimedOut)) => {}
        Err(p) => return Err(problem("PUT-4", &format!("{what}, with only the head sent: expected TOO_LARGE"), &p)),
    }
    // No reply yet: does the server read the data?
    let pushed = push(&mut raw, size.min(PUSH_MAX));
    let reply = replies.reply(&mut raw, ctx.io_deadline().saturating_duration_since(Instant::now()));
    let waited = started.elapsed();
    let read_it = pushed.taken >= PUSH_MAX && !pushed.stalled;
    match reply {
        Ok(r) => {
            closed_after(&mut raw, r, "after some data")?;
            if read_it {
                return Err(fail(
                    "PUT-4",
                    format!("{what}: TOO_LARGE came only after the server had read {} bytes of the data", pushed.taken),
                ));
            }
            Ok(Outcome::Warn(Failure::new(
                "ERR-8",
                format!(
                    "{what}: no TOO_LARGE within {:?} of the head; it came {waited:.1?} after it, once {} data bytes \
                     were sent",
                    early_wait(ctx),
                    pushed.taken
                ),
            )))
        }
        Err(_) if read_it => Err(fail(
            "PUT-4",
            format!(
                "{what}: no reply to the head, and the server read {} bytes of the data in {waited:.1?} without \
                 answering TOO_LARGE: it reads the data of a PUT above max_file_size",
                pushed.taken
            ),
        )),
        Err(Problem::Ended(Ending::TimedOut)) => Ok(Outcome::Warn(Failure::new(
            "ERR-8",
            format!(
                "{what}: no TOO_LARGE within {waited:.1?} of the head; the server took {} data bytes{}",
                pushed.taken,
                if pushed.stalled { " and then stopped reading" } else { "" }
            ),
        ))),
        Err(p) => Err(problem("PUT-4", &format!("{what}: no reply to the head alone, then"), &p)),
    }
}
