//! Robustness: the spec's client-to-server vectors that a server must refuse, sent to the server
//! as they are; truncated messages followed by a half-close; a very slow sender; lengths near
//! 2^32 and 2^64; uploads that fail half-way; temporary files that must never show.
//!
//! After each of these, a new connection must still be served: a server that crashed or hung
//! on hostile bytes fails the case.

use std::time::{Duration, Instant};

use ferry_proto::limits::ReadLimits;
use ferry_proto::vector::{self, Direction, End, Start, Vector};
use ferry_proto::{Capabilities, Digest, ErrorCode, Name, PutMode, Request, Role};
use serde_json::Value;

use super::support::{
    bytes, call, case, fail, fits, get_whole, hello_bytes, problem, put_bytes, put_head, put_ok, read_only_server,
    request_bytes, seed_for, send_paced, server_alive, slots, upload_size, writable, Verdict,
};
use crate::case::{Case, Ending, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Got, Problem, Raw, Replies, Reply};

/// Every case of this module.
pub fn cases(vectors: &[(&'static str, &'static str)]) -> Vec<Case> {
    let mut out = vector_cases(vectors);
    let write = Needs { role: Role::Write, ..Needs::default() };
    out.push(case(
        "robustness.slow-sender",
        "Requests written one byte every 2 ms get the same answers",
        &["ENC-5"],
        Needs::default(),
        slow_sender,
    ));
    out.push(case(
        "robustness.huge-lengths",
        "Lengths and offsets near 2^32 and 2^64: TOO_LARGE or BAD_OFFSET at once, no hang",
        &["LIM-3", "ENC-6", "PUT-4", "FRAME-2", "GET-4"],
        Needs::default(),
        huge_lengths,
    ));
    out.push(case(
        "robustness.upload.disconnect",
        "Uploads cut off by a disconnect publish nothing and keep the earlier file",
        &["STORE-1", "STORE-2"],
        Needs { connections: 3, ..write },
        upload_disconnect,
    ));
    out.push(case(
        "robustness.upload.bad-digest",
        "Uploads with a wrong digest publish nothing and keep the earlier file",
        &["STORE-2", "PUT-3"],
        write,
        upload_bad_digest,
    ));
    out.push(case(
        "robustness.store.no-temp-listed",
        "LIST during uploads shows no temporary file and no reserved name",
        &["STORE-7", "LIST-1"],
        Needs { connections: 3, ..write },
        no_temp_listed,
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// Vectors

/// One case per client-to-server vector a server must refuse or that is cut short:
/// `robustness.vector.<stem>` (an error end, or a rejected request) and
/// `robustness.truncated.<stem>` (bytes that end inside a message).
pub fn vector_cases(vectors: &[(&'static str, &'static str)]) -> Vec<Case> {
    let mut out = Vec::new();
    for &(file, text) in vectors {
        let stem = file.trim_end_matches(".json").to_owned();
        let v = match Vector::from_json(text) {
            Ok(v) => v,
            Err(e) => {
                let message = format!("{file}: {e}");
                out.push(Case {
                    id: format!("robustness.vector.{stem}"),
                    title: "vector cannot be read".into(),
                    requirements: vec![],
                    needs: Needs::default(),
                    run: Box::new(move |_| Outcome::HarnessError(message.clone())),
                });
                continue;
            }
        };
        if v.direction != Direction::ClientToServer {
            continue;
        }
        let rejects = v.items.iter().any(|i| i["type"] == "rejected");
        let group = match &v.end {
            End::Error(_) => "vector",
            _ if rejects => "vector",
            End::Truncated => "truncated",
            End::Clean => continue,
        };
        let requirements = v.requirements.clone();
        let requirements: Vec<&str> = requirements.iter().map(String::as_str).collect();
        let title = format!("vector {stem}: {}", v.description);
        let id = format!("robustness.{group}.{stem}");
        out.push(case(id, title, &requirements, Needs::default(), move |ctx| run_vector(&v, ctx)));
    }
    out
}

/// What the server must send for one decoded item of a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Hello,
    List,
    /// STAT of a name the case does not own: the entry or NOT_FOUND.
    StatOrMissing,
    Help,
    Status,
    Bye,
    BadName,
    /// A request whose data never completes: an early recoverable error (this one, if given)
    /// or nothing.
    MaybeEarlyError(Option<ErrorCode>),
}

fn wants(v: &Vector) -> Result<Vec<Want>, String> {
    let heads: Vec<(usize, &Value)> =
        v.items.iter().enumerate().filter(|(_, i)| !matches!(i["type"].as_str(), Some("data" | "data_end"))).collect();
    let mut out = Vec::new();
    for (k, &(index, item)) in heads.iter().enumerate() {
        let kind = item["type"].as_str().unwrap_or("");
        // The last request of a truncated vector whose data never ended.
        let unfinished = v.end == End::Truncated
            && k + 1 == heads.len()
            && (kind == "put"
                || (kind == "rejected"
                    && v.items[index + 1..].iter().any(|i| i["type"] == "data")
                    && !v.items[index + 1..].iter().any(|i| i["type"] == "data_end")));
        out.push(match kind {
            "rejected" if unfinished => Want::MaybeEarlyError(Some(ErrorCode::BAD_NAME)),
            _ if unfinished => Want::MaybeEarlyError(None),
            "hello" => Want::Hello,
            "list" => Want::List,
            "stat" => Want::StatOrMissing,
            "help" => Want::Help,
            "status" => Want::Status,
            "bye" => Want::Bye,
            "rejected" => Want::BadName,
            other => return Err(format!("no expectation for a complete {other:?} item in a vector")),
        });
    }
    Ok(out)
}

fn run_vector(v: &Vector, ctx: &Ctx) -> Verdict {
    let Some(server) = ctx.server else { return Ok(Outcome::HarnessError("no server hello".into())) };
    let req = v.requirements.first().map_or("REQ-6", String::as_str).to_owned();
    // The vector's expectations hold for this server only if its limits decode the bytes the same.
    let limits = ReadLimits { max_name_len: server.max_name_len, max_file_size: server.max_file_size };
    let (items, end) = vector::decode(v.direction, v.start, limits, &v.bytes, &[]);
    if items != v.items || end != v.end {
        return Ok(Outcome::Unsupported(format!(
            "the vector assumes max_name_len {} and max_file_size {}; the server announces {} and {}, under which \
             these bytes mean something else",
            v.limits.max_name_len, v.limits.max_file_size, server.max_name_len, server.max_file_size
        )));
    }
    let legacy = v.start == Start::Handshake && v.bytes.first() == Some(&0);
    if legacy {
        return legacy_vector(v, ctx, server.capabilities.contains(Capabilities::LEGACY));
    }
    let wants = match wants(v) {
        Ok(w) => w,
        Err(e) => return Ok(Outcome::HarnessError(e)),
    };
    let (mut raw, mut replies) = match v.start {
        Start::Session => match ctx.conn() {
            Ok(c) => (c.raw, Replies::session()),
            Err(p) => return Err(problem(&req, "handshake before the vector", &p)),
        },
        _ => match ctx.raw() {
            Ok(r) => (r, Replies::handshake()),
            Err(e) => return Err(fail(&req, format!("cannot connect: {e}"))),
        },
    };
    raw.send(&v.bytes).map_err(|e| fail(&req, format!("sending the vector: {e}")))?;
    if v.end == End::Truncated {
        // "Nothing more is coming": the server must see EOF inside the message and close.
        raw.finish_sending();
    }
    let timeout = ctx.target.io_timeout;
    let mut said_bye = false;
    for (n, want) in wants.iter().enumerate() {
        let what = format!("reply {} to the vector's bytes", n + 1);
        let got = replies.next(&mut raw, timeout);
        let ok = match (&got, want) {
            (Ok(Got::Hello(_)), Want::Hello) => true,
            (Ok(Got::Reply(r)), _) => match (r, want) {
                (Reply::List(_), Want::List) | (Reply::Help(_), Want::Help) | (Reply::Bye, Want::Bye) => true,
                (Reply::Stat(_), Want::StatOrMissing) | (Reply::Status(_), Want::Status) => true,
                (r, Want::StatOrMissing) => r.code() == Some(ErrorCode::NOT_FOUND.0),
                (r, Want::Status) => r.code() == Some(ErrorCode::UNSUPPORTED.0),
                (r, Want::BadName) => r.code() == Some(ErrorCode::BAD_NAME.0),
                (r, Want::MaybeEarlyError(code)) => {
                    r.code().is_some_and(|c| !ErrorCode(c).is_fatal() && code.is_none_or(|w| w.0 == c))
                }
                _ => false,
            },
            // Nothing at all for a request whose data never came: the close is checked below.
            (Err(Problem::Ended(Ending::OrderlyClose | Ending::Reset)), Want::MaybeEarlyError(_)) => break,
            _ => false,
        };
        if let (Want::Hello, Ok(Got::Reply(r))) = (want, &got) {
            if r.code() == Some(ErrorCode::UNAUTHORIZED.0) {
                return Ok(Outcome::Unsupported(
                    "the vector's hello has no token and the server refuses anonymous hellos (UNAUTHORIZED)".into(),
                ));
            }
        }
        if !ok {
            let got = match got {
                Ok(Got::Hello(_)) => "the server's hello".to_owned(),
                Ok(Got::Reply(r)) => r.describe(),
                Err(p) => p.to_string(),
            };
            let requirement = if *want == Want::BadName { "NAME-7" } else { req.as_str() };
            let mut f = Failure::new(requirement, format!("{what}: expected {want:?}; got {got}"));
            f.ending = Some(raw.ending());
            return Err(Box::new(f));
        }
        if *want == Want::Bye {
            said_bye = true;
            break;
        }
    }
    let deadline = ctx.io_deadline();
    match &v.end {
        End::Error(code) => {
            let want = ErrorCode::from_name(code).unwrap_or(ErrorCode::MALFORMED);
            match replies.reply(&mut raw, timeout) {
                Ok(Reply::Error(e)) if e.code == want => {}
                Ok(other) => {
                    return Err(fail(&req, format!("expected the fatal error {want}; got {}", other.describe())));
                }
                Err(Problem::Ended(Ending::Reset)) => {
                    let mut f = Failure::new(
                        "ERR-9",
                        format!("the connection was reset before the fatal error {want} could be read"),
                    );
                    f.ending = Some(Ending::Reset);
                    return Ok(Outcome::Warn(f));
                }
                Err(p) => return Err(problem(&req, &format!("expected the fatal error {want}"), &p)),
            }
            let closed = raw.wait_close(deadline);
            if !raw.received.is_empty() {
                return Err(fail(
                    "REQ-5",
                    format!("the server sent {} more bytes after the fatal error {want}", raw.received.len()),
                ));
            }
            if !closed {
                return Err(fail("ERR-4", format!("the server did not close the connection after {want}")));
            }
        }
        End::Clean if !said_bye => {
            // The connection must still serve: a HELP gets its reply.
            raw.send(&[0x07]).map_err(|e| fail("REQ-6", format!("sending HELP: {e}")))?;
            match replies.reply(&mut raw, timeout) {
                Ok(Reply::Help(_)) => {}
                Ok(other) => {
                    return Err(fail("REQ-6", format!("HELP after the refused request: {}", other.describe())));
                }
                Err(p) => return Err(problem("REQ-6", "HELP after the refused request", &p)),
            }
        }
        End::Clean => {
            let closed = raw.wait_close(deadline);
            if !closed {
                return Err(fail("BYE-1", "the server did not close the connection after BYE"));
            }
        }
        End::Truncated => {
            // After EOF inside a message the server discards it and closes. A fatal error
            // before the close is tolerated; anything else is not.
            let closed = raw.wait_close(deadline);
            if !closed {
                let mut f = Failure::new(
                    &req,
                    "the client half-closed inside a message; the server did not close the connection",
                );
                f.ending = Some(Ending::Open);
                return Err(Box::new(f));
            }
            if !raw.received.is_empty() {
                let mut r = Replies::session();
                match r.reply(&mut raw, Duration::from_millis(1)) {
                    Ok(Reply::Error(e)) if e.code.is_fatal() && raw.received.is_empty() => {}
                    _ => {
                        return Err(fail(
                            &req,
                            format!(
                                "after EOF inside a message the server sent {} unexpected bytes",
                                raw.received.len()
                            ),
                        ))
                    }
                }
            }
        }
    }
    drop(raw);
    server_alive(ctx, &req, "the vector")?;
    Ok(Outcome::Pass)
}

/// A legacy request (first byte `0x00`) that the server must refuse: `"ERROR"` and close when
/// the server serves the legacy profile (`[LEG-2]`, `[LEG-4]`), a close (and `"ERROR"`, a
/// SHOULD) when it does not (`[LEG-5]`).
fn legacy_vector(v: &Vector, ctx: &Ctx, legacy_on: bool) -> Verdict {
    let mut raw = ctx.raw().map_err(|e| fail("LEG-2", format!("cannot connect: {e}")))?;
    raw.send(&v.bytes).map_err(|e| fail("LEG-2", format!("sending: {e}")))?;
    if v.end == End::Truncated {
        raw.finish_sending();
    }
    let closed = raw.wait_close(ctx.io_deadline());
    let got = raw.received.clone();
    let says_error = got.starts_with(b"ERROR");
    if !closed {
        let req = if legacy_on { "LEG-3" } else { "LEG-7" };
        return Err(fail(req, "the server did not close the legacy connection"));
    }
    match &v.end {
        End::Truncated if !got.is_empty() && !says_error => {
            return Err(fail(
                "LEG-2",
                format!("after EOF inside a legacy request the server sent {}", hex::encode(&got)),
            ))
        }
        End::Truncated => {}
        _ if legacy_on && !says_error => {
            let mut f = Failure::new("LEG-4", "expected \"ERROR\" and a message, then a close");
            f.expected = Some(b"ERROR".to_vec());
            f.actual = Some(got);
            return Err(Box::new(f));
        }
        _ if !says_error => {
            let mut f = Failure::new("LEG-5", "legacy is off: expected \"ERROR\" and a message before the close");
            f.expected = Some(b"ERROR".to_vec());
            f.actual = Some(got);
            return Ok(Outcome::Warn(f));
        }
        _ => {}
    }
    drop(raw);
    server_alive(ctx, v.requirements.first().map_or("LEG-2", String::as_str), "the legacy request")?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// A slow sender

fn slow_sender(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 4, 0) {
        return Ok(o);
    }
    let room_for_files = fits(ctx, 4, 300).is_none() && writable(ctx)?;
    let pace = Duration::from_millis(2);
    let mut raw = ctx.raw().map_err(|e| fail("ENC-5", format!("cannot connect: {e}")))?;
    send_paced(&mut raw, &hello_bytes(ctx.target.token.as_deref()), pace)
        .map_err(|e| fail("ENC-5", format!("sending the hello: {e}")))?;
    let mut replies = Replies::handshake();
    let timeout = ctx.target.io_timeout;
    let hello = match replies.next(&mut raw, timeout) {
        Ok(Got::Hello(h)) => h,
        Ok(Got::Reply(r)) => return Err(fail("ENC-5", format!("the hello sent bytewise got {}", r.describe()))),
        Err(p) => return Err(problem("ENC-5", "the hello sent bytewise", &p)),
    };
    let name = ctx.name("slow");
    let content: Vec<u8> = [b"EOF\0".as_slice(), &bytes(seed_for(ctx, "slow"), 296)].concat();
    let md5 = Digest::of(&content);
    type Check = Box<dyn Fn(&Reply) -> bool>;
    let mut steps: Vec<(String, Vec<u8>, Check)> = vec![
        ("LIST".into(), vec![0x01], Box::new(|r| matches!(r, Reply::List(_)))),
        (
            "STAT of a missing name".into(),
            request_bytes(&Request::Stat(name.clone())),
            Box::new(|r| r.code() == Some(ErrorCode::NOT_FOUND.0)),
        ),
    ];
    if hello.role >= Role::Write && room_for_files {
        let c = content.clone();
        steps.push((
            "PUT".into(),
            put_bytes(&name, PutMode::Overwrite, &content),
            Box::new(|r| matches!(r, Reply::Put { replaced: false })),
        ));
        steps.push((
            "STAT".into(),
            request_bytes(&Request::Stat(name.clone())),
            Box::new(move |r| matches!(r, Reply::Stat(e) if e.size == 300 && e.md5.is_none_or(|d| d == md5))),
        ));
        steps.push((
            "GET".into(),
            request_bytes(&Request::Get { name: name.clone(), offset: 0 }),
            Box::new(move |r| matches!(r, Reply::Get { data, frame, .. } if *data == c && frame.md5 == md5)),
        ));
        if hello.capabilities.contains(Capabilities::RESUME) {
            let c = content.clone();
            steps.push((
                "GET from offset 100".into(),
                request_bytes(&Request::Get { name: name.clone(), offset: 100 }),
                Box::new(move |r| matches!(r, Reply::Get { data, offset: 100, .. } if data[..] == c[100..])),
            ));
        }
        steps.push((
            "DELETE".into(),
            request_bytes(&Request::Delete(name.clone())),
            Box::new(|r| matches!(r, Reply::Delete)),
        ));
    }
    steps.push(("HELP".into(), vec![0x07], Box::new(|r| matches!(r, Reply::Help(_)))));
    steps.push(("BYE".into(), vec![0x08], Box::new(|r| matches!(r, Reply::Bye))));
    for (what, bytes, check) in steps {
        if Instant::now() + timeout / 2 > ctx.deadline {
            return Ok(Outcome::HarnessError("the case deadline passed while sending slowly".into()));
        }
        send_paced(&mut raw, &bytes, pace).map_err(|e| fail("ENC-5", format!("sending {what}: {e}")))?;
        match replies.reply(&mut raw, timeout) {
            Ok(r) if check(&r) => {}
            Ok(r) => return Err(fail("ENC-5", format!("{what} sent one byte at a time: {}", r.describe()))),
            Err(p) => return Err(problem("ENC-5", &format!("{what} sent one byte at a time"), &p)),
        }
    }
    if !raw.wait_close(ctx.io_deadline()) {
        return Err(fail("BYE-1", "no close after BYE"));
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Huge lengths

fn huge_lengths(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 4, 2) {
        return Ok(o);
    }
    let can_write = writable(ctx)?;
    let hello = ctx.server.ok_or_else(|| fail("LIM-3", "no server hello"))?;
    let name = ctx.name("huge");
    let md5 = Digest::EMPTY.to_hex();
    // PUT, overwrite, the name, `size`, the empty file's digest: no data follows.
    let put_sized = |size: u64| {
        let n = name.as_str().as_bytes();
        let mut b = vec![0x04, 0x00];
        b.extend_from_slice(&u32::try_from(n.len()).unwrap_or(u32::MAX).to_be_bytes());
        b.extend_from_slice(n);
        b.extend_from_slice(&size.to_be_bytes());
        b.extend_from_slice(&md5);
        b
    };
    let mut fatal: Vec<(String, Vec<u8>, &str)> = vec![
        ("STAT, name length 0x80000000".into(), vec![0x02, 0x80, 0, 0, 0], "LIM-3"),
        ("GET, name length 0xFFFFFFFF".into(), vec![0x03, 0xFF, 0xFF, 0xFF, 0xFF], "LIM-3"),
        ("DELETE, name length 0xFFFFFFFE".into(), vec![0x05, 0xFF, 0xFF, 0xFF, 0xFE], "LIM-3"),
        ("PUT, name length 0x00010000".into(), vec![0x04, 0x00, 0x00, 0x01, 0x00, 0x00], "LIM-3"),
        ("PUT of size 2^64 - 1".into(), put_sized(u64::MAX), "FRAME-2"),
        ("PUT of size 2^63".into(), put_sized(1 << 63), "FRAME-2"),
        (
            "PUT of size 2^32 above max_file_size".into(),
            put_sized(hello.max_file_size.saturating_add(1 << 32)),
            "PUT-4",
        ),
    ];
    if let Some(above) = hello.max_file_size.checked_add(1) {
        fatal.push(("PUT of size max_file_size + 1".into(), put_sized(above), "PUT-4"));
    }
    let timeout = ctx.target.io_timeout;
    for (what, bytes, req) in fatal {
        let mut conn = ctx.conn().map_err(|p| problem(req, "handshake", &p))?;
        let started = Instant::now();
        conn.raw.send(&bytes).map_err(|e| fail(req, format!("sending {what}: {e}")))?;
        let mut replies = Replies::session();
        match replies.reply(&mut conn.raw, timeout) {
            Ok(r) if r.code() == Some(ErrorCode::TOO_LARGE.0) => {}
            Ok(r) => return Err(fail(req, format!("{what}: expected TOO_LARGE; got {}", r.describe()))),
            Err(p) => {
                let mut f = Failure::new(
                    req,
                    format!(
                        "{what}: expected TOO_LARGE without the announced bytes being read; after {:?}: {p}",
                        started.elapsed()
                    ),
                );
                if let Problem::Ended(e) = p {
                    f.ending = Some(e);
                }
                return Err(Box::new(f));
            }
        }
        if !conn.raw.wait_close(ctx.io_deadline()) {
            return Err(fail("ERR-4", format!("{what}: no close after TOO_LARGE")));
        }
    }
    // A token length of 0xFFFF in the hello.
    let mut raw = ctx.raw().map_err(|e| fail("LIM-3", format!("cannot connect: {e}")))?;
    raw.send(&[0x46, 0x45, 0x52, 0x52, 0x59, 0, 1, 0, 1, 0xFF, 0xFF]).map_err(|e| fail("LIM-3", e.to_string()))?;
    match Replies::handshake().reply(&mut raw, timeout) {
        Ok(r) if r.code() == Some(ErrorCode::TOO_LARGE.0) => {}
        Ok(r) => return Err(fail("LIM-3", format!("hello with token length 0xFFFF: {}", r.describe()))),
        Err(p) => return Err(problem("LIM-3", "hello with token length 0xFFFF: expected TOO_LARGE", &p)),
    }
    drop(raw);
    // Offsets past every file's end are recoverable: BAD_OFFSET, and the connection goes on.
    let mut conn = ctx.conn().map_err(|p| problem("GET-4", "handshake", &p))?;
    let exists = can_write;
    if exists {
        put_ok(&mut conn, &name, PutMode::Overwrite, b"hi", "PUT-2")?;
    }
    let resume = conn.hello.capabilities.contains(Capabilities::RESUME);
    for offset in [u64::MAX, 1 << 63, (1 << 32) + 1, u64::from(u32::MAX)] {
        let r = call(&mut conn, &Request::Get { name: name.clone(), offset }, "GET-4")?;
        let ok = match r.code() {
            Some(c) if c == ErrorCode::BAD_OFFSET.0 => true,
            // Without a file, NOT_FOUND is as right as BAD_OFFSET when resume is offered.
            Some(c) if c == ErrorCode::NOT_FOUND.0 => !exists && resume,
            _ => false,
        };
        if !ok {
            return Err(fail("GET-4", format!("GET {name} from offset {offset}: {}", r.describe())));
        }
    }
    match call(&mut conn, &Request::Help, "REQ-6")? {
        Reply::Help(_) => {}
        other => return Err(fail("REQ-6", format!("HELP after BAD_OFFSET: {}", other.describe()))),
    }
    drop(conn);
    server_alive(ctx, "ENC-6", "the huge lengths")?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Failed uploads

/// Starts an upload of `data` on a new connection and sends only its first `sent` bytes.
fn partial_upload(ctx: &Ctx, name: &Name, data: &[u8], sent: usize) -> Result<Raw, Box<Failure>> {
    let conn = ctx.conn().map_err(|p| problem("STORE-1", "handshake", &p))?;
    let mut raw = conn.raw;
    let mut bytes = request_bytes(&put_head(name, PutMode::Overwrite, data, None));
    bytes.extend_from_slice(&data[..sent]);
    raw.send(&bytes).map_err(|e| fail("STORE-1", format!("sending a partial upload: {e}")))?;
    Ok(raw)
}

/// The file `name` must hold `want` (or be missing, for `None`), seen with STAT and GET.
fn expect_content(
    conn: &mut crate::wire::Conn,
    name: &Name,
    want: Option<&[u8]>,
    requirement: &str,
    when: &str,
) -> Result<(), Box<Failure>> {
    let stat = call(conn, &Request::Stat(name.clone()), requirement)?;
    match (want, &stat) {
        (None, r) if r.code() == Some(ErrorCode::NOT_FOUND.0) => {}
        (Some(w), Reply::Stat(e)) if e.size == w.len() as u64 && e.md5.is_none_or(|d| d == Digest::of(w)) => {}
        _ => {
            let want = want.map_or("NOT_FOUND".to_owned(), |w| format!("{} bytes", w.len()));
            return Err(fail(requirement, format!("{when}: STAT {name} gave {}; expected {want}", stat.describe())));
        }
    }
    let got = get_whole(conn, name, requirement)?;
    if got.as_deref() != want {
        return Err(fail(
            requirement,
            format!(
                "{when}: GET {name} gave {}; expected {}",
                got.map_or("NOT_FOUND".into(), |g| format!("{} bytes", g.len())),
                want.map_or("NOT_FOUND".into(), |w| format!("{} bytes", w.len()))
            ),
        ));
    }
    Ok(())
}

fn upload_disconnect(ctx: &Ctx) -> Verdict {
    // Uploads of two bytes at least, so that one can stop half-way.
    if let Some(o) = fits(ctx, 7, 2).or_else(|| slots(ctx, 3)) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let fresh = ctx.name("cut-new");
    let old = ctx.name("cut-old");
    let old_content = b"the earlier file"[..upload_size(ctx, 16)].to_vec();
    let data = bytes(seed_for(ctx, "cut"), upload_size(ctx, 300_000));
    let mut observer = ctx.conn().map_err(|p| problem("STORE-1", "handshake", &p))?;
    put_ok(&mut observer, &old, PutMode::Overwrite, &old_content, "PUT-2")?;
    let a = partial_upload(ctx, &fresh, &data, data.len() / 2)?;
    let b = partial_upload(ctx, &old, &data, data.len() - 1)?;
    // While the uploads are open, neither is visible.
    std::thread::sleep(Duration::from_millis(100));
    expect_content(&mut observer, &fresh, None, "STORE-1", "during an unfinished upload")?;
    expect_content(&mut observer, &old, Some(&old_content), "STORE-1", "during an unfinished overwrite")?;
    // The clients vanish.
    drop(a);
    drop(b);
    for pause in [0, 300] {
        std::thread::sleep(Duration::from_millis(pause));
        let when = format!("{pause} ms after the uploading clients disconnected");
        expect_content(&mut observer, &fresh, None, "STORE-2", &when)?;
        expect_content(&mut observer, &old, Some(&old_content), "STORE-2", &when)?;
    }
    let mut other = ctx.conn().map_err(|p| problem("STORE-2", "handshake", &p))?;
    expect_content(&mut other, &fresh, None, "STORE-2", "on a new connection")?;
    expect_content(&mut other, &old, Some(&old_content), "STORE-2", "on a new connection")?;
    Ok(Outcome::Pass)
}

fn upload_bad_digest(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 7, 0) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let fresh = ctx.name("md5-new");
    let old = ctx.name("md5-old");
    let old_content = b"the earlier file"[..upload_size(ctx, 16)].to_vec();
    let mut conn = ctx.conn().map_err(|p| problem("PUT-3", "handshake", &p))?;
    put_ok(&mut conn, &old, PutMode::Overwrite, &old_content, "PUT-2")?;
    for (name, size) in [(&fresh, 1000), (&old, 70_000), (&fresh, 0)] {
        let size = upload_size(ctx, size);
        let data = bytes(seed_for(ctx, name.as_str()), size);
        let wrong = Digest::of(b"not the data");
        conn.send(&put_head(name, PutMode::Overwrite, &data, Some(wrong)), &data)
            .map_err(|p| problem("PUT-3", "PUT with a wrong digest", &p))?;
        match conn.reply() {
            Ok(r) if r.code() == Some(ErrorCode::CHECKSUM_MISMATCH.0) => {}
            Ok(r) => {
                return Err(fail("PUT-3", format!("PUT {name} ({size} bytes) with a wrong digest: {}", r.describe())))
            }
            Err(p) => return Err(problem("PUT-3", "PUT with a wrong digest", &p)),
        }
    }
    expect_content(&mut conn, &fresh, None, "STORE-2", "after CHECKSUM_MISMATCH")?;
    expect_content(&mut conn, &old, Some(&old_content), "STORE-2", "after CHECKSUM_MISMATCH")?;
    let mut other = ctx.conn().map_err(|p| problem("STORE-2", "handshake", &p))?;
    expect_content(&mut other, &fresh, None, "STORE-2", "on a new connection, after CHECKSUM_MISMATCH")?;
    expect_content(&mut other, &old, Some(&old_content), "STORE-2", "on a new connection, after CHECKSUM_MISMATCH")?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Temporary files

fn list_names(conn: &mut crate::wire::Conn, requirement: &str) -> Result<Vec<String>, Box<Failure>> {
    match call(conn, &Request::List, requirement)? {
        Reply::List(entries) => Ok(entries.into_iter().map(|e| e.name.as_str().to_owned()).collect()),
        other => Err(fail(requirement, format!("LIST: {}", other.describe()))),
    }
}

fn no_temp_listed(ctx: &Ctx) -> Verdict {
    // Uploads of two bytes at least, so that one can be left unfinished.
    if let Some(o) = fits(ctx, 5, 2).or_else(|| slots(ctx, 3)) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let mut observer = ctx.conn().map_err(|p| problem("STORE-7", "handshake", &p))?;
    let before: std::collections::BTreeSet<String> = list_names(&mut observer, "LIST-1")?.into_iter().collect();
    let names = [ctx.name("tmp-a"), ctx.name("tmp-b")];
    // The data goes in pieces: a first one, five more between listings, the rest; at least a
    // byte is left for the end (sizes as for 200 000 bytes, smaller on a server that wants it).
    let data = bytes(seed_for(ctx, "tmp"), upload_size(ctx, 200_000));
    let (first_piece, piece) = (data.len() / 200, data.len() / 10);
    let mut uploads = Vec::new();
    for n in &names {
        uploads.push(partial_upload(ctx, n, &data, first_piece)?);
    }
    let mut during = std::collections::BTreeSet::new();
    let check = |listed: &[String], when: &str| -> Result<(), Box<Failure>> {
        if let Some(n) = listed.iter().find(|n| n.starts_with(ferry_proto::name::RESERVED_PREFIX)) {
            return Err(fail("STORE-7", format!("{when}: LIST shows the reserved name {n:?}")));
        }
        if let Some(n) = listed.iter().find(|n| names.iter().any(|m| m.as_str() == n.as_str())) {
            return Err(fail("STORE-1", format!("{when}: LIST shows {n:?}, whose upload has not finished")));
        }
        Ok(())
    };
    // Data arrives in pieces between the listings.
    for step in 1..=5 {
        let listed = list_names(&mut observer, "LIST-1")?;
        check(&listed, &format!("LIST {step} during two uploads"))?;
        during.extend(listed);
        for u in &mut uploads {
            let from = first_piece + (step - 1) * piece;
            u.send(&data[from..from + piece]).map_err(|e| fail("STORE-7", e.to_string()))?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // One upload finishes, the other is abandoned.
    let mut first = uploads.remove(0);
    first.send(&data[first_piece + 5 * piece..]).map_err(|e| fail("STORE-7", e.to_string()))?;
    match Replies::session().reply(&mut first, ctx.target.io_timeout) {
        Ok(Reply::Put { .. }) => {}
        Ok(r) => return Err(fail("PUT-2", format!("finishing the upload: {}", r.describe()))),
        Err(p) => return Err(problem("PUT-2", "finishing the upload", &p)),
    }
    drop(uploads);
    std::thread::sleep(Duration::from_millis(100));
    let after = list_names(&mut observer, "LIST-1")?;
    if let Some(n) = after.iter().find(|n| n.starts_with(ferry_proto::name::RESERVED_PREFIX)) {
        return Err(fail("STORE-7", format!("after the uploads: LIST shows the reserved name {n:?}")));
    }
    if !after.iter().any(|n| n == names[0].as_str()) {
        return Err(fail("LIST-1", format!("after its upload finished, {} is not listed", names[0])));
    }
    if after.iter().any(|n| n == names[1].as_str()) {
        return Err(fail("STORE-2", format!("the abandoned upload {} is listed", names[1])));
    }
    // A name that showed only while the uploads ran, outside this run's names, is a temporary
    // file published under a valid name.
    let transient: Vec<&String> = during
        .iter()
        .filter(|n| !before.contains(*n) && !after.contains(*n) && !n.starts_with(&ctx.target.run_prefix))
        .collect();
    if let Some(n) = transient.first() {
        return Err(fail(
            "STORE-7",
            format!("{n:?} was listed only while this case's uploads were in progress: a temporary file?"),
        ));
    }
    Ok(Outcome::Pass)
}
