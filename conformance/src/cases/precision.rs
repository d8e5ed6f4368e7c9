//! Time precision (PROTOCOL.md § 7.1): `mtime` is milliseconds since the epoch, truncated, with
//! all the sub-second precision the storage keeps (`[LIST-4]`).
//!
//! Two files uploaded about 1.5 s apart must show mtimes that far apart, and not a whole number
//! of seconds apart. A correct server hits a whole number by chance about once in a thousand, so
//! a whole number is tried again with another gap; twice is a warning, not a failure, because
//! storage that keeps whole seconds only is legal and a checker on the wire cannot see the
//! storage. With `--root` it can: the mtime must then be exactly the file system's, truncated.

use std::time::{Duration, Instant, UNIX_EPOCH};

use ferry_proto::{Entry, Name, PutMode, Request, Role};

use super::support::{call, case, fail, fits, problem, put_ok, read_only_server, writable, Verdict};
use crate::case::{Case, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Reply};

/// The gaps between the two uploads of each try.
const GAPS: [Duration; 2] = [Duration::from_millis(1500), Duration::from_millis(1300)];
/// How far the mtimes' difference may stray from what the client saw: timestamp granularity of
/// common file systems (exFAT keeps 10 ms) and the clock's.
const SLACK_MS: i64 = 100;

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    vec![case(
        "precision.mtime",
        "Files uploaded 1.5 s apart show mtimes 1.5 s apart, to the millisecond, the same in STAT and LIST",
        &["LIST-4", "STAT-1"],
        Needs { role: Role::Write, ..Needs::default() },
        mtime,
    )]
}

/// Milliseconds since `earlier`, signed.
fn ms_between(earlier: Instant, later: Instant) -> i64 {
    if later >= earlier {
        i64::try_from((later - earlier).as_millis()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((earlier - later).as_millis()).unwrap_or(i64::MAX)
    }
}

/// A file's modification time as the file system reports it, in milliseconds since the epoch,
/// truncated (`None` before the epoch, where "truncated" could mean either way).
pub fn fs_mtime(path: &std::path::Path) -> Option<i64> {
    let t = std::fs::symlink_metadata(path).ok()?.modified().ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

fn stat(conn: &mut Conn, name: &Name) -> Result<Entry, Box<Failure>> {
    match call(conn, &Request::Stat(name.clone()), "STAT-1")? {
        Reply::Stat(e) => Ok(e),
        other => Err(fail("STAT-1", format!("STAT {name}: {}", other.describe()))),
    }
}

fn mtime(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 3, 16) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let mut conn = ctx.conn().map_err(|p| problem("LIST-4", "handshake", &p))?;
    let mut whole = Vec::new();
    for (attempt, gap) in GAPS.into_iter().enumerate() {
        let (a, b) = (ctx.name(&format!("t{attempt}a")), ctx.name(&format!("t{attempt}b")));
        let s1 = Instant::now();
        put_ok(&mut conn, &a, PutMode::Overwrite, b"first", "PUT-2")?;
        let r1 = Instant::now();
        std::thread::sleep(gap);
        // The gap may outlast the idle deadline (§ 12.3): what follows goes on a new connection.
        conn = ctx.conn().map_err(|p| problem("LIST-4", "handshake", &p))?;
        let s2 = Instant::now();
        put_ok(&mut conn, &b, PutMode::Overwrite, b"second", "PUT-2")?;
        let r2 = Instant::now();
        let (ea, eb) = (stat(&mut conn, &a)?, stat(&mut conn, &b)?);
        // LIST shows the same times as STAT.
        let entries = match call(&mut conn, &Request::List, "LIST-1")? {
            Reply::List(v) => v,
            other => return Err(fail("LIST-1", format!("LIST: {}", other.describe()))),
        };
        for e in [&ea, &eb] {
            match entries.iter().find(|l| l.name == e.name) {
                Some(l) if l.mtime_ms == e.mtime_ms => {}
                Some(l) => {
                    return Err(fail(
                        "LIST-4",
                        format!("{}: LIST shows mtime {}, STAT {}", e.name, l.mtime_ms, e.mtime_ms),
                    ))
                }
                None => return Err(fail("LIST-1", format!("LIST does not show {}", e.name))),
            }
        }
        // On the same machine, the time is the file system's, exactly.
        if let Some(root) = &ctx.target.root {
            for e in [&ea, &eb] {
                if let Some(fs) = fs_mtime(&root.join(e.name.as_str())) {
                    if fs != e.mtime_ms {
                        return Err(fail(
                            "LIST-4",
                            format!(
                                "STAT {}: mtime {} ms; the file system says {fs} ms (truncated to the millisecond)",
                                e.name, e.mtime_ms
                            ),
                        ));
                    }
                }
            }
        }
        let diff = eb.mtime_ms - ea.mtime_ms;
        if diff.rem_euclid(1000) != 0 {
            let (lo, hi) = (ms_between(r1, s2) - SLACK_MS, ms_between(s1, r2) + SLACK_MS);
            if !(lo..=hi).contains(&diff) {
                return Err(fail(
                    "LIST-4",
                    format!(
                        "{a} and {b}, written between {} and {} ms apart, show mtimes {} and {}: {diff} ms apart",
                        lo + SLACK_MS,
                        hi - SLACK_MS,
                        ea.mtime_ms,
                        eb.mtime_ms
                    ),
                ));
            }
            return Ok(Outcome::Pass);
        }
        whole.push(format!("{diff} ms for files written {gap:?} apart"));
    }
    Ok(Outcome::Warn(Failure::new(
        "LIST-4",
        format!(
            "mtimes a whole number of seconds apart, twice ({}): the server rounds mtimes to seconds, or its \
             storage keeps whole seconds only; --root (on the server's machine) tells which",
            whole.join("; ")
        ),
    )))
}
