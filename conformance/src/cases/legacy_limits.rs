//! The legacy profile's limits (PROTOCOL.md § 15.2).
//!
//! A legacy request whose name length is above `max_name_len` gets `"ERROR"` and a close without
//! the name being read (`[LEG-4]`). The request's length field is sent alone: the refusal must
//! come without the name. If it does not, the name is sent after all, and the report says whether
//! the refusal then came — a server that waits for the name reads it.

use std::time::Instant;

use ferry_proto::Capabilities;

use super::support::{case, fail, server_alive, Verdict};
use crate::case::{Case, Failure, Needs, Outcome};
use crate::context::Ctx;

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    vec![case(
        "legacy.limits.long-name",
        "A legacy request whose name length is above max_name_len, the name held back: \"ERROR\" and a close, \
         without the name",
        &["LEG-4", "LEG-2", "LEG-3"],
        Needs { capabilities: Capabilities::LEGACY, ..Needs::default() },
        long_name,
    )]
}

fn long_name(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("LEG-4", "no server hello"))?;
    let len = hello.max_name_len.saturating_add(1);
    let what = format!("a legacy request with name length {len} (max_name_len is {})", hello.max_name_len);
    let mut raw = ctx.raw().map_err(|e| fail("LEG-4", format!("cannot connect: {e}")))?;
    let started = Instant::now();
    // The first byte is 0x00: lengths are below 2^24.
    raw.send(&len.to_be_bytes()).map_err(|e| fail("LEG-4", format!("{what}: {e}")))?;
    let closed = raw.wait_close(ctx.io_deadline());
    let waited = started.elapsed();
    let said_error = raw.received.starts_with(b"ERROR");
    match (closed, said_error) {
        (true, true) => {}
        (true, false) if raw.received.is_empty() => {
            return Err(fail(
                "LEG-4",
                format!("{what}, without the name: closed after {waited:.1?} without \"ERROR\""),
            ));
        }
        (true, false) => {
            let mut f = Failure::new("LEG-2", format!("{what}: the refusal is not \"ERROR\" and a message"));
            f.expected = Some(b"ERROR".to_vec());
            f.actual = Some(raw.received.clone());
            return Err(Box::new(f));
        }
        (false, true) => {
            return Err(fail(
                "LEG-3",
                format!("{what}: \"ERROR\", but the connection was still open {waited:.1?} later"),
            ));
        }
        (false, false) => {
            // Nothing: does the name make it answer?
            let name = vec![b'n'; len as usize];
            raw.send(&name).map_err(|e| fail("LEG-4", format!("{what}: sending the name: {e}")))?;
            let after = Instant::now();
            raw.wait_close(ctx.io_deadline());
            let then = if raw.received.starts_with(b"ERROR") {
                format!(
                    "it refused {:.1?} after the {len} name bytes were sent: it waits for the name",
                    after.elapsed()
                )
            } else if raw.received.is_empty() {
                "nor once the name was sent".to_owned()
            } else {
                format!("once the name was sent it sent {}", hex::encode(&raw.received[..raw.received.len().min(32)]))
            };
            return Err(fail("LEG-4", format!("{what}, without the name: no refusal within {waited:.1?}; {then}")));
        }
    }
    drop(raw);
    server_alive(ctx, "LEG-4", "the refused legacy request")?;
    Ok(Outcome::Pass)
}
