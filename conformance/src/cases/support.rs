//! What the hand-written cases share: building cases, encoding requests, reading replies and
//! closes with deadlines, and small checks.

use std::time::{Duration, Instant};

use ferry_proto::{ClientHello, Digest, ErrorCode, FrameHead, Name, PutHead, PutMode, Request};

use crate::case::{Case, Ending, Failure, Needs, Outcome};
use crate::context::{broke, Ctx};
use crate::wire::{Conn, Problem, Raw, Reply};

/// What a case body returns: a verdict, or the failure that ended it (boxed: it is large and
/// only travels on the failing path).
pub type Verdict = Result<Outcome, Box<Failure>>;

/// A case from a body that returns a [`Verdict`].
pub fn case(
    id: impl Into<String>,
    title: impl Into<String>,
    requirements: &[&str],
    needs: Needs,
    body: impl Fn(&Ctx) -> Verdict + Send + Sync + 'static,
) -> Case {
    Case {
        id: id.into(),
        title: title.into(),
        requirements: requirements.iter().map(|s| (*s).to_owned()).collect(),
        needs,
        run: Box::new(move |ctx| match body(ctx) {
            Ok(o) => o,
            // BUSY comes only instead of a hello: the server was full (parallel cases, other
            // clients) when the case needed one more connection. Nothing was judged.
            Err(f) if matches!(&f.ending, Some(Ending::ErrorReply { code, .. }) if *code == ErrorCode::BUSY.0) => {
                Outcome::Skipped(format!(
                    "the server stayed at capacity (BUSY) when the case needed another connection; run fewer \
                     cases at once (-j): {}",
                    f.message
                ))
            }
            Err(f) => Outcome::Fail(*f),
        }),
    }
}

/// A failure of `requirement`, boxed for `?`.
pub fn fail(requirement: &str, message: impl Into<String>) -> Box<Failure> {
    Box::new(Failure::new(requirement, message))
}

/// A problem talking to the server, as a failure of `requirement`.
pub fn problem(requirement: &str, what: &str, p: &Problem) -> Box<Failure> {
    Box::new(broke(requirement, what, p))
}

/// The bytes of a version 1 hello offering version 1 only.
pub fn hello_bytes(token: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    ClientHello { min_version: 1, max_version: 1, token: token.map(str::to_owned) }.encode(&mut out);
    out
}

/// The bytes of a request (for a PUT, its head only).
pub fn request_bytes(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(&mut out);
    out
}

/// A PUT head for `data` under `name`, with `md5` (the data's own unless given).
pub fn put_head(name: &Name, mode: PutMode, data: &[u8], md5: Option<Digest>) -> Request {
    let frame = FrameHead { name: name.clone(), size: data.len() as u64, md5: md5.unwrap_or_else(|| Digest::of(data)) };
    Request::Put(PutHead::leading(mode, frame))
}

/// The whole bytes of a PUT of `data`.
pub fn put_bytes(name: &Name, mode: PutMode, data: &[u8]) -> Vec<u8> {
    let mut out = request_bytes(&put_head(name, mode, data, None));
    out.extend_from_slice(data);
    out
}

/// A name under the case's prefix built from raw bytes (for names the `Name` type refuses).
pub fn raw_name_request(opcode: u8, name: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut out = vec![opcode];
    out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(tail);
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), so that a run's seed reproduces them.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A seed for a case's data: the run's seed mixed with a label.
pub fn seed_for(ctx: &Ctx, label: &str) -> u64 {
    label.bytes().fold(ctx.target.seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Time left before the case's deadline.
pub fn remaining(ctx: &Ctx) -> Duration {
    ctx.deadline.saturating_duration_since(Instant::now())
}

/// Writes `bytes` one at a time, `pace` apart.
pub fn send_paced(raw: &mut Raw, bytes: &[u8], pace: Duration) -> std::io::Result<()> {
    for b in bytes {
        raw.send(std::slice::from_ref(b))?;
        if raw.reset {
            break;
        }
        std::thread::sleep(pace);
    }
    Ok(())
}

/// Reads one error reply's raw fields from `raw` — tag `0xFF`, the code, and the message's bytes
/// exactly as sent (the decoder would replace invalid UTF-8) — or says what came instead.
pub fn raw_error(raw: &mut Raw, deadline: Instant) -> Result<(u16, Vec<u8>), String> {
    loop {
        let r = &raw.received;
        if let Some(&tag) = r.first() {
            if tag != 0xFF {
                return Err(format!("a reply with tag 0x{tag:02x} where an error (0xff) was expected"));
            }
            if r.len() >= 5 {
                let code = u16::from_be_bytes([r[1], r[2]]);
                let len = usize::from(u16::from_be_bytes([r[3], r[4]]));
                if r.len() >= 5 + len {
                    let message = r[5..5 + len].to_vec();
                    raw.received.drain(..5 + len);
                    return Ok((code, message));
                }
            }
        }
        if !raw.read_more(deadline, 64 * 1024) && (raw.eof || raw.reset || Instant::now() >= deadline) {
            let how = if raw.eof || raw.reset { raw.ending() } else { Ending::TimedOut };
            return Err(format!("no whole error reply ({how}); received {}", hex::encode(&raw.received)));
        }
    }
}

/// Waits until `deadline` for the server to close; the bytes that arrived meanwhile.
pub fn wait_close(raw: &mut Raw, deadline: Instant) -> (bool, Vec<u8>) {
    let closed = raw.wait_close(deadline);
    (closed, std::mem::take(&mut raw.received))
}

/// Whether `reply` is the error `code`.
pub fn is_error(reply: &Reply, code: ErrorCode) -> bool {
    reply.code() == Some(code.0)
}

/// Describes an error code for messages.
pub fn code_name(code: u16) -> String {
    format!("{} (0x{code:04x})", ErrorCode(code))
}

/// Sends `request` on `conn` and returns the reply, or a failure of `requirement`.
pub fn call(conn: &mut Conn, request: &Request, requirement: &str) -> Result<Reply, Box<Failure>> {
    conn.call(request).map_err(|p| problem(requirement, &format!("{:?}", request.kind()), &p))
}

/// Uploads `data` and requires the `PUT` to succeed.
pub fn put_ok(
    conn: &mut Conn,
    name: &Name,
    mode: PutMode,
    data: &[u8],
    requirement: &str,
) -> Result<bool, Box<Failure>> {
    match conn.put(name, mode, data) {
        Ok(Reply::Put { replaced }) => Ok(replaced),
        Ok(other) => Err(fail(requirement, format!("PUT {name} ({} bytes): {}", data.len(), other.describe()))),
        Err(p) => Err(problem(requirement, &format!("PUT {name}"), &p)),
    }
}

/// A new connection must complete a handshake and answer HELP: the server survived.
pub fn server_alive(ctx: &Ctx, requirement: &str, after: &str) -> Result<(), Box<Failure>> {
    let mut conn = ctx.conn().map_err(|p| problem(requirement, &format!("a new connection after {after}"), &p))?;
    match conn.call(&Request::Help) {
        Ok(Reply::Help(_)) => Ok(()),
        Ok(other) => Err(fail(requirement, format!("HELP on a new connection after {after}: {}", other.describe()))),
        Err(p) => Err(problem(requirement, &format!("HELP on a new connection after {after}"), &p)),
    }
}

/// The content a file must have: a GET from offset 0 returns it, with a matching digest.
pub fn get_whole(conn: &mut Conn, name: &Name, requirement: &str) -> Result<Option<Vec<u8>>, Box<Failure>> {
    match call(conn, &Request::Get { name: name.clone(), offset: 0 }, requirement)? {
        Reply::Get { frame, data, .. } => {
            if frame.size != data.len() as u64 || Digest::of(&data) != frame.md5 {
                return Err(fail(
                    "GET-1",
                    format!(
                        "GET {name}: {} data bytes with digest {} for an announced {} bytes and digest {}",
                        data.len(),
                        Digest::of(&data),
                        frame.size,
                        frame.md5
                    ),
                ));
            }
            Ok(Some(data))
        }
        r if is_error(&r, ErrorCode::NOT_FOUND) => Ok(None),
        other => Err(fail(requirement, format!("GET {name}: {}", other.describe()))),
    }
}

/// Whether `s` is visible ASCII only (`0x21`–`0x7E`).
pub fn visible_ascii(s: &[u8]) -> bool {
    s.iter().all(|b| (0x21..=0x7E).contains(b))
}

/// `Unsupported` when the server announces fewer connection slots than a case holds at once.
pub fn slots(ctx: &Ctx, needed: u32) -> Option<Outcome> {
    let h = ctx.server?;
    (h.max_clients != 0 && h.max_clients < needed).then(|| {
        Outcome::Unsupported(format!(
            "needs {needed} connections at once; the server's max_clients is {}",
            h.max_clients
        ))
    })
}

/// `Unsupported` when the server's announced limits are too small for what a case creates: names
/// of the case's prefix and `longest_suffix` bytes, files of `largest_file` bytes.
pub fn fits(ctx: &Ctx, longest_suffix: usize, largest_file: u64) -> Option<Outcome> {
    let h = ctx.server?;
    let name = ctx.prefix.len() + longest_suffix;
    if name > h.max_name_len as usize {
        return Some(Outcome::Unsupported(format!(
            "needs names of {name} bytes; the server's max_name_len is {}",
            h.max_name_len
        )));
    }
    if largest_file > h.max_file_size {
        return Some(Outcome::Unsupported(format!(
            "needs files of {largest_file} bytes; the server's max_file_size is {}",
            h.max_file_size
        )));
    }
    None
}

/// `size`, or the server's `max_file_size` if that is smaller: the size of an upload whose
/// point does not depend on its size (a server may legally take only small files).
pub fn upload_size(ctx: &Ctx, size: usize) -> usize {
    ctx.server.map_or(size, |h| size.min(usize::try_from(h.max_file_size).unwrap_or(usize::MAX)))
}

/// Whether this case can create files: the run's connection has a write role and the server
/// accepts an upload (a server configured read-only answers FORBIDDEN to every role, § 8.2).
/// The probe file is deleted again.
///
/// # Errors
/// The server failed the probe in a way no configuration explains.
pub fn writable(ctx: &Ctx) -> Result<bool, Box<Failure>> {
    let mut conn = ctx.conn().map_err(|p| problem("PUT-2", "handshake", &p))?;
    if conn.hello.role < ferry_proto::Role::Write {
        return Ok(false);
    }
    let name = ctx.name("w");
    match conn.put(&name, PutMode::Overwrite, b"") {
        Ok(Reply::Put { .. }) => {
            let _ = conn.call(&Request::Delete(name));
            Ok(true)
        }
        Ok(r) if is_error(&r, ErrorCode::FORBIDDEN) => Ok(false),
        Ok(r) => Err(fail("PUT-2", format!("an empty upload from a {} role got {}", conn.hello.role, r.describe()))),
        Err(p) => Err(problem("PUT-2", "an empty upload", &p)),
    }
}

/// The outcome of a case that needs to create files on a server that will not let it.
pub fn read_only_server() -> Outcome {
    Outcome::Unsupported("the server refuses uploads to this run's role (FORBIDDEN): it is read-only".into())
}
