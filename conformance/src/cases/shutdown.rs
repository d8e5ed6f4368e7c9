//! A graceful shutdown (PROTOCOL.md § 7.9, § 13). It stops the server, so it runs only with
//! `--destructive`, and last.
//!
//! It leaves nothing on the server: no cleanup can follow it (the server is gone), so the upload
//! in flight carries a wrong digest. The server must still take every byte and answer it —
//! `CHECKSUM_MISMATCH` is an answer only the whole upload can earn (`[PUT-3]`) — and publishes
//! nothing.

use std::time::{Duration, Instant};

use ferry_proto::{Capabilities, Digest, ErrorCode, PutMode, Request, Role};

use super::support::{bytes, case, fail, hello_bytes, problem, put_head, request_bytes, seed_for, Verdict};
use crate::case::{Case, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Got, Problem, Replies, Reply};

/// The grace period this case assumes: the upload in flight ends well within it.
const ASSUMED_GRACE: Duration = Duration::from_secs(1);

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    vec![case(
        "shutdown.graceful",
        "SHUTDOWN: ok and close; idle connections and half hellos get SHUTTING_DOWN; new ones are refused; an upload \
         in flight is read to its end and answered, and nothing pipelined after it",
        &["SHUT-1", "SHUT-3", "SHUT-4", "SHUT-5"],
        Needs {
            role: Role::Admin,
            capabilities: Capabilities::SHUTDOWN,
            destructive: true,
            connections: 4,
            ..Needs::default()
        },
        graceful,
    )]
}

fn graceful(ctx: &Ctx) -> Verdict {
    // An upload of two bytes at least, so that it can be in flight.
    if let Some(o) = super::support::fits(ctx, 9, 2).or_else(|| super::support::slots(ctx, 4)) {
        return Ok(o);
    }
    if !super::support::writable(ctx)? {
        return Ok(super::support::read_only_server());
    }
    let timeout = ctx.target.io_timeout;
    let name = ctx.name("in-flight");
    let data = bytes(seed_for(ctx, "in-flight"), super::support::upload_size(ctx, 400_000));
    let first_part = (data.len() / 4).max(1);
    // A: an upload in progress, with a wrong digest so that it publishes nothing.
    let mut uploader = ctx.conn().map_err(|p| problem("SHUT-4", "handshake", &p))?.raw;
    let wrong = Digest::of(b"not the data uploaded");
    let mut head = request_bytes(&put_head(&name, PutMode::Overwrite, &data, Some(wrong)));
    head.extend_from_slice(&data[..first_part]);
    uploader.send(&head).map_err(|e| fail("SHUT-4", e.to_string()))?;
    // C: a connection waiting for a request.
    let mut idle = ctx.conn().map_err(|p| problem("SHUT-3", "handshake", &p))?;
    // D: a connection whose hello is half sent: the rest comes after the shutdown began.
    let hello = hello_bytes(ctx.target.token.as_deref());
    let mut half = ctx.raw().map_err(|e| fail("SHUT-5", format!("cannot connect: {e}")))?;
    half.send(&hello[..4]).map_err(|e| fail("SHUT-5", e.to_string()))?;
    // B: the admin.
    let mut admin = ctx.conn().map_err(|p| problem("SHUT-1", "handshake", &p))?;
    if admin.hello.role != Role::Admin {
        return Ok(Outcome::Skipped(format!("the run's token grants {}, not admin", admin.hello.role)));
    }
    // Let the upload's head be taken in before the shutdown starts.
    std::thread::sleep(Duration::from_millis(100));
    let shutdown_at = Instant::now();
    match admin.call(&Request::Shutdown) {
        Ok(Reply::Shutdown) => {}
        Ok(r) => return Err(fail("SHUT-1", format!("SHUTDOWN from an admin: {}", r.describe()))),
        Err(p) => return Err(problem("SHUT-1", "SHUTDOWN from an admin", &p)),
    }
    if !admin.raw.wait_close(ctx.io_deadline()) || !admin.raw.received.is_empty() {
        return Err(fail("SHUT-1", "the SHUTDOWN reply was not followed by a close alone"));
    }
    // [SHUT-5]: the rest of the half hello, now: SHUTTING_DOWN, never a server hello.
    half.send(&hello[4..]).map_err(|e| fail("SHUT-5", e.to_string()))?;
    match Replies::handshake().next(&mut half, timeout) {
        Ok(Got::Reply(r)) if r.code() == Some(ErrorCode::SHUTTING_DOWN.0) => {}
        Ok(Got::Hello(_)) => return Err(fail("SHUT-5", "a hello completed after the shutdown began was answered")),
        Ok(Got::Reply(r)) => {
            return Err(fail("SHUT-5", format!("a hello completed during the shutdown got {}", r.describe())))
        }
        Err(Problem::Ended(_)) => {}
        Err(p) => return Err(problem("SHUT-5", "a hello completed during the shutdown", &p)),
    }
    // The upload goes on, paced, while the other connections are checked; a HELP follows its
    // last byte, which the server must leave unanswered ([SHUT-5]).
    let mut writer = uploader.stream.try_clone().map_err(|e| fail("SHUT-4", e.to_string()))?;
    let mut rest = data[first_part..].to_vec();
    rest.push(0x07);
    let pacer = std::thread::spawn(move || -> Result<(), String> {
        for chunk in rest.chunks(30_000) {
            std::io::Write::write_all(&mut writer, chunk).map_err(|e| format!("the upload was cut: {e}"))?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    });
    // The idle connection: SHUTTING_DOWN, then a close.
    match Replies::session().reply(&mut idle.raw, timeout) {
        Ok(r) if r.code() == Some(ErrorCode::SHUTTING_DOWN.0) => {}
        Ok(r) => return Err(fail("SHUT-3", format!("a connection waiting for a request got {}", r.describe()))),
        Err(p) => return Err(problem("SHUT-3", "a connection waiting for a request: expected SHUTTING_DOWN", &p)),
    }
    if !idle.raw.wait_close(ctx.io_deadline()) {
        return Err(fail("SHUT-3", "SHUTTING_DOWN was not followed by a close"));
    }
    // New connections are no longer served: refused, closed, or left unanswered (a listener
    // kept open but no longer accepted from); never greeted.
    if let Ok(mut raw) = ctx.raw() {
        let _ = raw.send(&hello_bytes(ctx.target.token.as_deref()));
        match Replies::handshake().next(&mut raw, timeout.min(Duration::from_secs(1))) {
            Ok(Got::Hello(_)) => {
                return Err(fail("SHUT-3", "a connection opened after the shutdown began was served a hello"));
            }
            Ok(Got::Reply(r)) if r.code().is_some_and(|c| ErrorCode(c).is_fatal()) => {}
            Ok(Got::Reply(r)) => {
                return Err(fail(
                    "SHUT-3",
                    format!("a connection opened after the shutdown began got {}", r.describe()),
                ))
            }
            Err(Problem::Ended(_)) => {}
            Err(p) => return Err(problem("SHUT-3", "a connection opened after the shutdown began", &p)),
        }
    }
    let sent = pacer.join().unwrap_or_else(|_| Err("the pacing thread panicked".into()));
    let mut replies = Replies::session();
    let cut = |what: String| {
        fail(
            "SHUT-4",
            format!(
                "{what}, {:?} after SHUTDOWN (this case assumes a grace period of at least {ASSUMED_GRACE:?})",
                shutdown_at.elapsed()
            ),
        )
    };
    if let Err(e) = sent {
        return Err(cut(e));
    }
    match replies.reply(&mut uploader, timeout) {
        Ok(r) if r.code() == Some(ErrorCode::CHECKSUM_MISMATCH.0) => {}
        Ok(Reply::Put { .. }) => {
            return Err(fail("PUT-3", "an upload in flight with a wrong digest was accepted (and published)"))
        }
        Ok(r) => {
            return Err(cut(format!(
                "the upload in flight (with a wrong digest) got {}; CHECKSUM_MISMATCH was due",
                r.describe()
            )))
        }
        Err(p) => return Err(cut(format!("the upload in flight got no reply: {p}"))),
    }
    match replies.reply(&mut uploader, timeout) {
        Ok(r) if r.code() == Some(ErrorCode::SHUTTING_DOWN.0) => {}
        Ok(r) => {
            return Err(fail(
                "SHUT-5",
                format!("after the upload's reply, to a pipelined HELP: {} instead of SHUTTING_DOWN", r.describe()),
            ))
        }
        Err(p) => return Err(problem("SHUT-3", "after the upload's reply, expected SHUTTING_DOWN", &p)),
    }
    if !uploader.wait_close(ctx.io_deadline()) {
        return Err(fail("SHUT-3", "SHUTTING_DOWN after the upload was not followed by a close"));
    }
    Ok(Outcome::Pass)
}
