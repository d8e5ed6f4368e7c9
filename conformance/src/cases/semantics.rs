//! Semantics the transcripts cannot pin down byte for byte: LIST's order and completeness,
//! STATUS records, concurrent uploads and downloads, roles, the hello's fields, error codes and
//! their messages, and that every reply decodes.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ferry_proto::limits::{ERROR_MESSAGE_MAX, FILE_SIZE_CEILING, HELP_TEXT_MAX, NAME_LEN_CEILING, PEER_LEN_MAX};
use ferry_proto::{Capabilities, ConnRecord, Digest, ErrorCode, Name, PutMode, Request, Role};

use super::support::{
    bytes, call, case, code_name, fail, fits, get_whole, hello_bytes, problem, put_bytes, put_head, put_ok, raw_error,
    raw_name_request, read_only_server, request_bytes, seed_for, server_alive, slots, upload_size, visible_ascii,
    writable, Verdict,
};
use crate::case::{Case, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Got, Problem, Raw, Replies, Reply};

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    let write = Needs { role: Role::Write, ..Needs::default() };
    let write_alone = Needs { role: Role::Write, alone: true, connections: 5, ..Needs::default() };
    vec![
        case(
            "semantics.list.sorted-once",
            "LIST shows each uploaded file once, sorted bytewise, with its size and digest",
            &["LIST-1", "LIST-2", "LIST-3"],
            write,
            list_sorted_once,
        ),
        case(
            "semantics.status.records",
            "STATUS lists the requesting connection open and an earlier one closed, ids ascending",
            &["STATUS-1", "STATUS-2"],
            Needs { capabilities: Capabilities::STATUS, ..Needs::default() },
            status_records,
        ),
        case(
            "semantics.store.get-during-overwrite",
            "GET and STAT while another connection overwrites the file see one version whole",
            &["GET-5", "STORE-4"],
            write,
            get_during_overwrite,
        ),
        case(
            "semantics.store.concurrent-overwrite",
            "Concurrent overwrites of one name all succeed; the file is one of them, whole",
            &["STORE-5"],
            write_alone,
            concurrent_overwrite,
        ),
        case(
            "semantics.store.concurrent-create-only",
            "Of concurrent create-only uploads of a new name exactly one succeeds, the rest get EXISTS",
            &["STORE-6"],
            write_alone,
            concurrent_create_only,
        ),
        case(
            "semantics.role.read-forbidden",
            "A read-role connection gets FORBIDDEN for PUT and DELETE, which change nothing",
            &["ROLE-1"],
            Needs::default(),
            read_forbidden,
        ),
        case(
            "semantics.role.read-only",
            "A server configured read-only refuses PUT and DELETE even to a write role",
            &["ROLE-2"],
            write,
            read_only,
        ),
        case(
            "semantics.shutdown.forbidden",
            "SHUTDOWN from a role below admin gets FORBIDDEN; the server keeps running",
            &["SHUT-2"],
            Needs::default(),
            shutdown_forbidden,
        ),
        case(
            "semantics.hello.anonymous",
            "A hello without a token gets the anonymous role, or UNAUTHORIZED and a close",
            &["AUTH-2"],
            Needs::default(),
            hello_anonymous,
        ),
        case(
            "semantics.hello.capability-bits",
            "Every hello sets no capability bit beyond those version 1 defines (0x1F)",
            &["HELLO-9"],
            Needs::default(),
            |ctx| hello_fields(ctx, Field::Capabilities),
        ),
        case(
            "semantics.hello.limits",
            "Every hello announces limits within the protocol ceilings",
            &["LIM-2"],
            Needs::default(),
            |ctx| hello_fields(ctx, Field::Limits),
        ),
        case(
            "semantics.errors.codes",
            "Each refused request gets the code PROTOCOL.md names, with a message of at most 1024 bytes",
            &["ERR-6", "ERR-1"],
            Needs::default(),
            |ctx| error_probes(ctx, Check::Codes),
        ),
        case(
            "semantics.encoding.text",
            "Error messages and the help text are UTF-8, even when they quote invalid input",
            &["ENC-2"],
            Needs::default(),
            |ctx| error_probes(ctx, Check::Utf8),
        ),
        case(
            "semantics.errors.fatal-delivery",
            "A fatal error comes before the rest of the message, and survives unread input",
            &["ERR-8", "ERR-9"],
            Needs::default(),
            fatal_delivery,
        ),
        case(
            "semantics.hello.version-message",
            "UNSUPPORTED_VERSION names the versions the server speaks",
            &["HELLO-6"],
            Needs::default(),
            version_message,
        ),
        case(
            "semantics.replies.decode",
            "A session using every command: every reply is one this version defines",
            &["EXT-2"],
            Needs::default(),
            replies_decode,
        ),
        case(
            "semantics.legacy.disabled",
            "With the legacy profile off, a legacy request gets \"ERROR\" and a close",
            &["LEG-5", "LEG-7", "LEG-1"],
            Needs::default(),
            legacy_disabled,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// LIST

fn list(conn: &mut Conn, requirement: &str) -> Result<Vec<ferry_proto::Entry>, Box<Failure>> {
    match call(conn, &Request::List, requirement)? {
        Reply::List(v) => Ok(v),
        other => Err(fail(requirement, format!("LIST: {}", other.describe()))),
    }
}

fn check_list(entries: &[ferry_proto::Entry], ours: &[(Name, Vec<u8>)], when: &str) -> Result<(), Box<Failure>> {
    for w in entries.windows(2) {
        let (a, b) = (w[0].name.as_str().as_bytes(), w[1].name.as_str().as_bytes());
        if a == b {
            return Err(fail("LIST-1", format!("{when}: {} is listed twice", w[0].name)));
        }
        if a > b {
            return Err(fail("LIST-2", format!("{when}: {} is listed before {}", w[0].name, w[1].name)));
        }
    }
    for (name, content) in ours {
        let found: Vec<_> = entries.iter().filter(|e| &e.name == name).collect();
        let [e] = found.as_slice() else {
            return Err(fail("LIST-1", format!("{when}: {name} is listed {} times; expected once", found.len())));
        };
        if e.size != content.len() as u64 {
            return Err(fail(
                "LIST-1",
                format!("{when}: {name} is listed with size {}; it has {}", e.size, content.len()),
            ));
        }
        if let Some(d) = e.md5 {
            if d != Digest::of(content) {
                return Err(fail(
                    "LIST-3",
                    format!("{when}: {name} is listed with digest {d}; it is {}", Digest::of(content)),
                ));
            }
        }
    }
    Ok(())
}

fn list_sorted_once(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 4, 0) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    // Orders that differ between bytewise, case-folding, numeric, locale and Unicode-normalising
    // sorts; uploaded out of order.
    let suffixes = [
        "b",
        "B",
        "a",
        "a0",
        "a-",
        "a.",
        "ab",
        "aB",
        "Z",
        "~",
        "10",
        "9",
        "\u{e4}",
        "\u{e9}",
        "e\u{301}",
        "\u{1F600}",
        "z z",
        "a b",
        "\u{ff21}",
    ];
    let mut conn = ctx.conn().map_err(|p| problem("LIST-1", "handshake", &p))?;
    let mut ours = Vec::new();
    for (i, s) in suffixes.iter().enumerate() {
        let name = ctx.name(s);
        let content = bytes(seed_for(ctx, s), upload_size(ctx, i * 7));
        put_ok(&mut conn, &name, PutMode::Overwrite, &content, "PUT-2")?;
        ours.push((name, content));
    }
    check_list(&list(&mut conn, "LIST-1")?, &ours, "after the uploads")?;
    for gone in [ours.remove(3), ours.remove(7)] {
        match call(&mut conn, &Request::Delete(gone.0.clone()), "DEL-1")? {
            Reply::Delete => {}
            other => return Err(fail("DEL-1", format!("DELETE {}: {}", gone.0, other.describe()))),
        }
        let entries = list(&mut conn, "LIST-1")?;
        if entries.iter().any(|e| e.name == gone.0) {
            return Err(fail("LIST-1", format!("{} is listed after its DELETE", gone.0)));
        }
        check_list(&entries, &ours, "after a DELETE")?;
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// STATUS

fn status_records(ctx: &Ctx) -> Verdict {
    // An earlier connection: its exact byte counts are known.
    let mut first = ctx.raw().map_err(|e| fail("STATUS-1", format!("cannot connect: {e}")))?;
    let first_addr = ctx.seen_by_server(&first.stream).map_err(|e| fail("STATUS-1", e.to_string()))?.to_string();
    let mut sent = hello_bytes(ctx.target.token.as_deref());
    sent.extend_from_slice(&[0x07, 0x08]);
    first.send(&sent).map_err(|e| fail("STATUS-1", e.to_string()))?;
    if !first.wait_close(ctx.io_deadline()) {
        return Err(fail("BYE-1", "the first connection was not closed after BYE"));
    }
    let first_out = first.received.len() as u64;
    drop(first);
    let mut conn = ctx.conn().map_err(|p| problem("STATUS-1", "handshake", &p))?;
    let own_addr = ctx.seen_by_server(&conn.raw.stream).map_err(|e| fail("STATUS-1", e.to_string()))?.to_string();
    let own_sent = hello_bytes(ctx.target.token.as_deref()).len() as u64;
    // The first connection's record may take a moment to show its close.
    let started = Instant::now();
    let records = loop {
        let records = match conn.call(&Request::Status) {
            Ok(Reply::Status(r)) => r,
            Ok(other) => return Err(fail("STATUS-1", format!("STATUS: {}", other.describe()))),
            Err(p) => return Err(problem("STATUS-1", "STATUS", &p)),
        };
        let first_open = records.iter().any(|r| r.peer == first_addr && r.disconnected_ms.is_none());
        if !first_open || started.elapsed() > Duration::from_secs(2) {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for w in records.windows(2) {
        if w[0].id >= w[1].id {
            return Err(fail("STATUS-1", format!("record ids {} then {}: not ascending", w[0].id, w[1].id)));
        }
    }
    for r in &records {
        if r.peer.len() > PEER_LEN_MAX || !visible_ascii(r.peer.as_bytes()) {
            return Err(fail(
                "STATUS-2",
                format!("peer {:?}: more than {PEER_LEN_MAX} bytes or not visible ASCII", r.peer),
            ));
        }
        if let Some(d) = r.disconnected_ms {
            if d < r.connected_ms {
                return Err(fail("STATUS-1", format!("record {}: disconnected before it connected", r.id)));
            }
        }
    }
    let Some(own) = records.iter().find(|r| r.peer == own_addr) else {
        return Err(fail(
            "STATUS-1",
            format!("the requesting connection ({own_addr}) is not among the {} records", records.len()),
        ));
    };
    if own.disconnected_ms.is_some() {
        return Err(fail("STATUS-1", format!("the requesting connection {} is shown closed", own.id)));
    }
    if own.bytes_in < own_sent || own.bytes_out < 32 {
        return Err(fail(
            "STATUS-1",
            format!("the requesting connection shows {} bytes in and {} out; it has sent {own_sent} and received at least 32", own.bytes_in, own.bytes_out),
        ));
    }
    // The earlier connection may have left the last N already if other clients were busy; when
    // it is listed, it must be listed right.
    if let Some(r) = records.iter().find(|r| r.peer == first_addr) {
        check_closed_record(r, sent.len() as u64, first_out, own)?;
    }
    Ok(Outcome::Pass)
}

fn check_closed_record(r: &ConnRecord, sent: u64, received: u64, own: &ConnRecord) -> Result<(), Box<Failure>> {
    if r.disconnected_ms.is_none() {
        return Err(fail("STATUS-1", format!("connection {} (hello, HELP, BYE, closed) is shown open", r.id)));
    }
    if r.id >= own.id {
        return Err(fail("STATUS-1", format!("an earlier connection has id {} ≥ the later one's {}", r.id, own.id)));
    }
    if r.bytes_in != sent || r.bytes_out != received {
        return Err(fail(
            "STATUS-1",
            format!(
                "connection {} shows {} bytes in and {} out; the client sent {sent} and received {received}",
                r.id, r.bytes_in, r.bytes_out
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Concurrency

fn get_during_overwrite(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 4, 0) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let name = ctx.name("flux");
    let versions: Arc<Vec<Vec<u8>>> = Arc::new(
        [100_000, 250_000, 37, 180_000, 0]
            .iter()
            .enumerate()
            .map(|(i, &n)| bytes(seed_for(ctx, &format!("v{i}")), upload_size(ctx, n)))
            .collect(),
    );
    let known: Vec<(u64, Digest)> = versions.iter().map(|v| (v.len() as u64, Digest::of(v))).collect();
    let mut reader = ctx.conn().map_err(|p| problem("GET-5", "handshake", &p))?;
    let resume = reader.hello.capabilities.contains(Capabilities::RESUME);
    let mut writer = ctx.conn().map_err(|p| problem("STORE-4", "handshake", &p))?;
    put_ok(&mut writer, &name, PutMode::Overwrite, &versions[0], "PUT-2")?;
    let stop_at = Instant::now() + Duration::from_millis(1500).min(ctx.target.io_timeout);
    let (w_name, w_versions) = (name.clone(), versions.clone());
    let writer_thread = std::thread::spawn(move || -> Result<usize, String> {
        let mut n = 0;
        while Instant::now() < stop_at {
            n += 1;
            let reply = if n % 7 == 0 {
                writer.call(&Request::Delete(w_name.clone()))
            } else {
                writer.put(&w_name, PutMode::Overwrite, &w_versions[n % w_versions.len()])
            };
            match reply {
                Ok(Reply::Put { .. } | Reply::Delete) => {}
                Ok(other) => return Err(format!("overwrite {n}: {}", other.describe())),
                Err(p) => return Err(format!("overwrite {n}: {p}")),
            }
        }
        Ok(n)
    });
    let mut gets = 0;
    let mut k = 0u64;
    while Instant::now() < stop_at {
        k += 1;
        let offset = if resume && k.is_multiple_of(3) { k % 50 } else { 0 };
        match call(&mut reader, &Request::Get { name: name.clone(), offset }, "GET-5")? {
            Reply::Get { frame, data, .. } => {
                gets += 1;
                let Some(i) = known.iter().position(|&(s, d)| s == frame.size && d == frame.md5) else {
                    return Err(fail(
                        "STORE-4",
                        format!(
                            "GET announced {} bytes with digest {}: no version ever uploaded",
                            frame.size, frame.md5
                        ),
                    ));
                };
                let want = versions[i].get(usize::try_from(offset).unwrap_or(usize::MAX)..).unwrap_or(&[]);
                if data != want {
                    return Err(fail(
                        "GET-5",
                        format!(
                            "GET from offset {offset} announced version {i} ({} bytes, {}) but sent {} bytes that differ from it",
                            frame.size,
                            frame.md5,
                            data.len()
                        ),
                    ));
                }
            }
            r if r.code() == Some(ErrorCode::NOT_FOUND.0) => {}
            // An offset past a short version's end.
            r if offset > 0 && r.code() == Some(ErrorCode::BAD_OFFSET.0) => {}
            other => return Err(fail("GET-5", format!("GET during overwrites: {}", other.describe()))),
        }
        match call(&mut reader, &Request::Stat(name.clone()), "STORE-4")? {
            Reply::Stat(e) => {
                if !known.iter().any(|&(s, d)| s == e.size && e.md5.is_none_or(|m| m == d)) {
                    return Err(fail(
                        "STORE-4",
                        format!("STAT shows {} bytes, digest {:?}: no version ever uploaded", e.size, e.md5),
                    ));
                }
            }
            r if r.code() == Some(ErrorCode::NOT_FOUND.0) => {}
            other => return Err(fail("STORE-4", format!("STAT during overwrites: {}", other.describe()))),
        }
    }
    match writer_thread.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(fail("STORE-5", e)),
        Err(_) => return Ok(Outcome::HarnessError("the writer thread panicked".into())),
    }
    if gets == 0 {
        return Ok(Outcome::HarnessError("no GET completed while the file was overwritten".into()));
    }
    Ok(Outcome::Pass)
}

/// Runs `n` uploads of `contents[i]` to `name` at once: each connection sends its head and half
/// the data, all wait, then all send the rest. The replies, in the uploads' order.
pub(super) fn concurrent_puts(
    ctx: &Ctx,
    name: &Name,
    mode: PutMode,
    contents: &[Vec<u8>],
) -> Result<Vec<Reply>, Box<Failure>> {
    let barrier = Arc::new(Barrier::new(contents.len()));
    let mut raws = Vec::new();
    for _ in contents {
        raws.push(ctx.conn().map_err(|p| problem("STORE-5", "handshake", &p))?.raw);
    }
    let timeout = ctx.target.io_timeout;
    let threads: Vec<_> = raws
        .into_iter()
        .zip(contents.iter().cloned())
        .map(|(mut raw, data)| {
            let (barrier, name) = (barrier.clone(), name.clone());
            std::thread::spawn(move || -> Result<Reply, String> {
                let mut first = request_bytes(&put_head(&name, mode, &data, None));
                let half = data.len() / 2;
                first.extend_from_slice(&data[..half]);
                let sent = raw.send(&first);
                barrier.wait();
                sent.and_then(|()| raw.send(&data[half..])).map_err(|e| e.to_string())?;
                Replies::session().reply(&mut raw, timeout).map_err(|p| p.to_string())
            })
        })
        .collect();
    let mut out = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(r)) => out.push(r),
            Ok(Err(e)) => return Err(fail("STORE-5", format!("upload {i}: {e}"))),
            Err(_) => return Err(fail("STORE-5", format!("upload {i}: the thread panicked"))),
        }
    }
    Ok(out)
}

fn concurrent_overwrite(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 6, 0).or_else(|| slots(ctx, 5)) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let mut conn = ctx.conn().map_err(|p| problem("STORE-5", "handshake", &p))?;
    for round in 0..3 {
        let name = ctx.name(&format!("race-{round}"));
        if round == 2 {
            put_ok(&mut conn, &name, PutMode::Overwrite, &b"earlier"[..upload_size(ctx, 7)], "PUT-2")?;
        }
        let contents: Vec<Vec<u8>> = (0..4)
            .map(|i| bytes(seed_for(ctx, &format!("race-{round}-{i}")), upload_size(ctx, 150_000 + 1000 * i)))
            .collect();
        let replies = concurrent_puts(ctx, &name, PutMode::Overwrite, &contents)?;
        if let Some((i, r)) = replies.iter().enumerate().find(|(_, r)| !matches!(r, Reply::Put { .. })) {
            return Err(fail("STORE-5", format!("round {round}: concurrent overwrite {i} got {}", r.describe())));
        }
        let Some(data) = get_whole(&mut conn, &name, "STORE-5")? else {
            return Err(fail("STORE-5", format!("round {round}: after 4 successful overwrites {name} is missing")));
        };
        if !contents.contains(&data) {
            return Err(fail(
                "STORE-5",
                format!("round {round}: {name} holds {} bytes equal to none of the 4 uploads", data.len()),
            ));
        }
    }
    Ok(Outcome::Pass)
}

fn concurrent_create_only(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 7, 0).or_else(|| slots(ctx, 5)) {
        return Ok(o);
    }
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let mut conn = ctx.conn().map_err(|p| problem("STORE-6", "handshake", &p))?;
    for round in 0..3 {
        let name = ctx.name(&format!("first-{round}"));
        let contents: Vec<Vec<u8>> = (0..4)
            .map(|i| bytes(seed_for(ctx, &format!("first-{round}-{i}")), upload_size(ctx, 120_000 + 1000 * i)))
            .collect();
        let replies = concurrent_puts(ctx, &name, PutMode::CreateOnly, &contents)?;
        let winners: Vec<usize> =
            replies.iter().enumerate().filter(|(_, r)| matches!(r, Reply::Put { .. })).map(|(i, _)| i).collect();
        if let Some((i, r)) = replies
            .iter()
            .enumerate()
            .find(|(_, r)| !matches!(r, Reply::Put { replaced: false }) && r.code() != Some(ErrorCode::EXISTS.0))
        {
            return Err(fail("STORE-6", format!("round {round}: create-only upload {i} got {}", r.describe())));
        }
        let [winner] = winners.as_slice() else {
            return Err(fail(
                "STORE-6",
                format!(
                    "round {round}: {} of 4 concurrent create-only uploads succeeded; exactly one must",
                    winners.len()
                ),
            ));
        };
        let data = get_whole(&mut conn, &name, "STORE-6")?;
        if data.as_ref() != Some(&contents[*winner]) {
            return Err(fail("STORE-6", format!("round {round}: {name} does not hold the upload that succeeded")));
        }
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Roles

/// The connections a run can open: with its token, and anonymously. Refusals are left out.
fn role_conns(ctx: &Ctx) -> Vec<(String, Conn)> {
    let mut out = Vec::new();
    if let Ok(c) = ctx.conn_as(None) {
        out.push(("anonymous".to_owned(), c));
    }
    if let Some(t) = ctx.target.token.as_deref() {
        if let Ok(c) = ctx.conn_as(Some(t)) {
            out.push(("with the run's token".to_owned(), c));
        }
    }
    out
}

fn roles_seen(conns: &[(String, Conn)]) -> String {
    let seen: Vec<String> = conns.iter().map(|(how, c)| format!("{how}: {}", c.hello.role)).collect();
    if seen.is_empty() {
        "no connection was accepted".into()
    } else {
        seen.join(", ")
    }
}

fn read_forbidden(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 5, 0) {
        return Ok(o);
    }
    // Before the role connections are open: two connections at once are enough.
    let can_write = writable(ctx)?;
    let mut conns = role_conns(ctx);
    let seen = roles_seen(&conns);
    let Some(pos) = conns.iter().position(|(_, c)| c.hello.role == Role::Read) else {
        return Ok(Outcome::Skipped(format!("no read-role connection available ({seen})")));
    };
    let (_, mut reader) = conns.remove(pos);
    // A writer creates the file the reader must not change (not on a read-only server).
    let mut writer =
        if can_write { conns.into_iter().map(|(_, c)| c).find(|c| c.hello.role >= Role::Write) } else { None };
    let kept = ctx.name("kept");
    let fresh = ctx.name("fresh");
    // Within max_file_size: a larger upload gets TOO_LARGE before the role is looked at.
    let sized = |s: &[u8]| s[..upload_size(ctx, s.len())].to_vec();
    let content = sized(b"written by a write role");
    let (replaced, new) = (sized(b"replaced"), sized(b"new"));
    if let Some(w) = &mut writer {
        put_ok(w, &kept, PutMode::Overwrite, &content, "PUT-2")?;
    }
    let forbidden = |r: &Reply| r.code() == Some(ErrorCode::FORBIDDEN.0);
    let attempts: Vec<(String, Request, Vec<u8>)> = vec![
        ("PUT overwrite".into(), put_head(&kept, PutMode::Overwrite, &replaced, None), replaced.clone()),
        ("PUT create-only".into(), put_head(&fresh, PutMode::CreateOnly, &new, None), new.clone()),
        ("DELETE".into(), Request::Delete(kept.clone()), Vec::new()),
    ];
    for (what, request, data) in attempts {
        reader.send(&request, &data).map_err(|p| problem("ROLE-1", &what, &p))?;
        match reader.reply() {
            Ok(r) if forbidden(&r) => {}
            Ok(r) => return Err(fail("ROLE-1", format!("{what} from a read role: {}", r.describe()))),
            Err(p) => return Err(problem("ROLE-1", &format!("{what} from a read role"), &p)),
        }
    }
    // The PUT data was read and discarded: the connection still serves.
    match call(&mut reader, &Request::Help, "ROLE-1")? {
        Reply::Help(_) => {}
        other => return Err(fail("ROLE-1", format!("HELP after the refusals: {}", other.describe()))),
    }
    if get_whole(&mut reader, &fresh, "ROLE-1")?.is_some() {
        return Err(fail("ROLE-1", format!("{fresh} exists after a refused create-only PUT")));
    }
    if writer.is_some() {
        let got = get_whole(&mut reader, &kept, "ROLE-1")?;
        if got.as_deref() != Some(&content[..]) {
            return Err(fail("ROLE-1", format!("{kept} changed after a refused PUT and DELETE")));
        }
    }
    Ok(Outcome::Pass)
}

fn read_only(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 2, 1) {
        return Ok(o);
    }
    let mut conn = ctx.conn().map_err(|p| problem("ROLE-2", "handshake", &p))?;
    let name = ctx.name("ro");
    match conn.put(&name, PutMode::Overwrite, b"x") {
        Ok(Reply::Put { .. }) => {
            let _ = conn.call(&Request::Delete(name));
            return Ok(Outcome::Unsupported(format!(
                "the server accepted an upload from a {} role: it is not configured read-only",
                conn.hello.role
            )));
        }
        Ok(r) if r.code() == Some(ErrorCode::FORBIDDEN.0) => {}
        Ok(r) => return Ok(Outcome::Unsupported(format!("a first upload got {}: cannot tell", r.describe()))),
        Err(p) => return Err(problem("ROLE-2", "PUT", &p)),
    }
    // FORBIDDEN to a write role: the server is read-only, and must refuse all writes.
    let attempts: Vec<(String, Request, Vec<u8>)> = vec![
        ("PUT create-only".into(), put_head(&name, PutMode::CreateOnly, b"y", None), b"y".to_vec()),
        ("PUT of an empty file".into(), put_head(&name, PutMode::Overwrite, b"", None), Vec::new()),
        ("DELETE".into(), Request::Delete(name.clone()), Vec::new()),
    ];
    for (what, request, data) in attempts {
        conn.send(&request, &data).map_err(|p| problem("ROLE-2", &what, &p))?;
        match conn.reply() {
            Ok(r) if r.code() == Some(ErrorCode::FORBIDDEN.0) => {}
            Ok(r) => {
                return Err(fail(
                    "ROLE-2",
                    format!("{what} on a read-only server ({} role): {}", conn.hello.role, r.describe()),
                ))
            }
            Err(p) => return Err(problem("ROLE-2", &what, &p)),
        }
    }
    if get_whole(&mut conn, &name, "ROLE-2")?.is_some() {
        return Err(fail("ROLE-2", format!("{name} exists after refused uploads")));
    }
    Ok(Outcome::Pass)
}

fn shutdown_forbidden(ctx: &Ctx) -> Verdict {
    let conns = role_conns(ctx);
    let seen = roles_seen(&conns);
    let Some((how, mut conn)) = conns.into_iter().find(|(_, c)| c.hello.role < Role::Admin) else {
        return Ok(Outcome::Skipped(format!("every connection the run can open is admin ({seen})")));
    };
    let role = conn.hello.role;
    match conn.call(&Request::Shutdown) {
        Ok(r) if r.code() == Some(ErrorCode::FORBIDDEN.0) => {}
        Ok(r) => return Err(fail("SHUT-2", format!("SHUTDOWN from a {role} role ({how}): {}", r.describe()))),
        Err(p) => return Err(problem("SHUT-2", &format!("SHUTDOWN from a {role} role ({how})"), &p)),
    }
    match call(&mut conn, &Request::Help, "SHUT-2")? {
        Reply::Help(_) => {}
        other => return Err(fail("SHUT-2", format!("HELP after the refused SHUTDOWN: {}", other.describe()))),
    }
    std::thread::sleep(Duration::from_millis(200));
    server_alive(ctx, "SHUT-2", "a refused SHUTDOWN")?;
    match call(&mut conn, &Request::List, "SHUT-2")? {
        Reply::List(_) => Ok(Outcome::Pass),
        other => Err(fail("SHUT-2", format!("LIST after the refused SHUTDOWN: {}", other.describe()))),
    }
}

// ---------------------------------------------------------------------------------------------
// The hello

fn hello_anonymous(ctx: &Ctx) -> Verdict {
    let deadline = ctx.io_deadline();
    loop {
        let mut raw = ctx.raw().map_err(|e| fail("AUTH-2", format!("cannot connect: {e}")))?;
        raw.send(&hello_bytes(None)).map_err(|e| fail("AUTH-2", e.to_string()))?;
        match Replies::handshake().next(&mut raw, ctx.target.io_timeout) {
            Ok(Got::Hello(_)) => return Ok(Outcome::Pass),
            Ok(Got::Reply(Reply::Error(e))) if e.code == ErrorCode::BUSY && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(Got::Reply(Reply::Error(e))) if e.code == ErrorCode::UNAUTHORIZED => {
                if !raw.wait_close(ctx.io_deadline()) || !raw.received.is_empty() {
                    return Err(fail("AUTH-2", "UNAUTHORIZED was not followed by a close"));
                }
                return Ok(Outcome::Pass);
            }
            Ok(Got::Reply(r)) => {
                return Err(fail("AUTH-2", format!("a hello without a token got {}", r.describe())));
            }
            Err(p) => return Err(problem("AUTH-2", "a hello without a token", &p)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Capabilities,
    Limits,
}

/// The server hello's 32 bytes, read without the decoder (which refuses some values a check
/// must see).
fn raw_hello(ctx: &Ctx, hello: &[u8]) -> Result<Option<[u8; 32]>, Box<Failure>> {
    let mut raw = ctx.raw().map_err(|e| fail("HELLO-10", format!("cannot connect: {e}")))?;
    raw.send(hello).map_err(|e| fail("HELLO-10", e.to_string()))?;
    let deadline = ctx.io_deadline();
    while raw.received.len() < 32 && raw.received.first() != Some(&0xFF) {
        if !raw.read_more(deadline, 64) && (raw.eof || raw.reset || Instant::now() >= deadline) {
            return Err(fail("HELLO-10", format!("no whole hello: received {}", hex::encode(&raw.received))));
        }
    }
    if raw.received.first() == Some(&0xFF) {
        return Ok(None);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&raw.received[..32]);
    Ok(Some(out))
}

fn hello_fields(ctx: &Ctx, field: Field) -> Verdict {
    let token = ctx.target.token.as_deref();
    let mut future = hello_bytes(token);
    future[7] = 0xFF;
    future[8] = 0xFF;
    let offers = [
        ("the run's hello", hello_bytes(token)),
        ("an anonymous hello", hello_bytes(None)),
        ("a hello offering versions 1 to 65535", future),
    ];
    let mut seen = 0;
    for (what, bytes) in offers {
        let Some(h) = raw_hello(ctx, &bytes)? else { continue };
        seen += 1;
        if h[0] != 0x80 {
            return Err(fail("HELLO-10", format!("{what}: the reply starts with 0x{:02x}", h[0])));
        }
        let caps = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let max_name_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let max_file_size = u64::from_be_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]);
        match field {
            Field::Capabilities if caps & !Capabilities::ALL_V1.0 != 0 => {
                return Err(fail(
                    "HELLO-9",
                    format!(
                        "{what}: capabilities 0x{caps:08x} set bits beyond 0x{:02x}, which version 1 defines",
                        Capabilities::ALL_V1.0
                    ),
                ));
            }
            Field::Limits if !(1..=NAME_LEN_CEILING).contains(&max_name_len) => {
                return Err(fail(
                    "LIM-2",
                    format!("{what}: max_name_len {max_name_len} is outside 1..={NAME_LEN_CEILING}"),
                ));
            }
            Field::Limits if max_file_size > FILE_SIZE_CEILING => {
                return Err(fail("LIM-2", format!("{what}: max_file_size {max_file_size} is above 2^63 - 1")));
            }
            _ => {}
        }
    }
    if seen == 0 {
        return Ok(Outcome::HarnessError("no hello was accepted".into()));
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Error codes and texts

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Codes,
    Utf8,
}

/// A request that must be refused, and the codes PROTOCOL.md allows for it.
struct Probe {
    what: String,
    bytes: Vec<u8>,
    want: Vec<ErrorCode>,
    /// Sent on a new connection from its first byte (no hello of ours first).
    handshake: bool,
}

fn probe(what: impl Into<String>, bytes: Vec<u8>, want: &[ErrorCode]) -> Probe {
    Probe { what: what.into(), bytes, want: want.to_vec(), handshake: false }
}

fn judge(check: Check, what: &str, want: &[ErrorCode], code: u16, message: &[u8]) -> Result<(), Box<Failure>> {
    match check {
        Check::Codes => {
            if !want.iter().any(|w| w.0 == code) {
                let names: Vec<String> = want.iter().map(ToString::to_string).collect();
                return Err(fail(
                    "ERR-6",
                    format!("{what}: got {}; PROTOCOL.md names {}", code_name(code), names.join(" or ")),
                ));
            }
            if message.len() > ERROR_MESSAGE_MAX {
                return Err(fail(
                    "ERR-1",
                    format!("{what}: the error message has {} bytes, above {ERROR_MESSAGE_MAX}", message.len()),
                ));
            }
        }
        Check::Utf8 => {
            if let Err(e) = std::str::from_utf8(message) {
                let mut f = Failure::new("ENC-2", format!("{what}: the error message is not UTF-8 ({e})"));
                f.actual = Some(message.to_vec());
                return Err(Box::new(f));
            }
        }
    }
    Ok(())
}

fn error_probes(ctx: &Ctx, check: Check) -> Verdict {
    if let Some(o) = fits(ctx, 7, 2) {
        return Ok(o);
    }
    let can_write = writable(ctx)?;
    let hello = ctx.server.ok_or_else(|| fail("ERR-6", "no server hello"))?;
    let mut conn = ctx.conn().map_err(|p| problem("ERR-6", "handshake", &p))?;
    let caps = conn.hello.capabilities;
    let prefix = ctx.prefix.as_bytes();
    let missing = ctx.name("missing");
    let max = usize::try_from(hello.max_name_len.min(NAME_LEN_CEILING)).unwrap_or(255);
    let named = |suffix: &[u8]| [prefix, suffix].concat();
    let mut session: Vec<Probe> = vec![
        probe("STAT of a missing file", request_bytes(&Request::Stat(missing.clone())), &[ErrorCode::NOT_FOUND]),
        probe(
            "GET of a missing file",
            request_bytes(&Request::Get { name: missing.clone(), offset: 0 }),
            &[ErrorCode::NOT_FOUND],
        ),
        probe(
            "DELETE of a missing file",
            request_bytes(&Request::Delete(missing.clone())),
            &[if can_write { ErrorCode::NOT_FOUND } else { ErrorCode::FORBIDDEN }],
        ),
        probe(
            "GET of a missing file from offset 1",
            request_bytes(&Request::Get { name: missing.clone(), offset: 1 }),
            &[if caps.contains(Capabilities::RESUME) { ErrorCode::NOT_FOUND } else { ErrorCode::BAD_OFFSET }],
        ),
        probe("STAT of a name with '/'", raw_name_request(0x02, &named(b"a/b"), &[]), &[ErrorCode::BAD_NAME]),
        probe("STAT of \"..\"", raw_name_request(0x02, b"..", &[]), &[ErrorCode::BAD_NAME]),
        probe(
            "STAT of a name of invalid UTF-8",
            raw_name_request(0x02, &named(&[0xFF, 0xFE, 0xC0, 0x80, 0xED, 0xA0, 0x80]), &[]),
            &[ErrorCode::BAD_NAME],
        ),
        probe(
            format!("STAT of a name of {} bytes of 0xFF", max.min(4096)),
            raw_name_request(0x02, &vec![0xFF; max.min(4096)], &[]),
            &[ErrorCode::BAD_NAME],
        ),
        probe(
            "STAT of a name with control characters",
            raw_name_request(0x02, &named(b"\x1b[31mred\r\n"), &[]),
            &[ErrorCode::BAD_NAME],
        ),
        probe(
            "GET of a reserved .ferry name",
            raw_name_request(0x03, b".ferry-upload-1", &0u64.to_be_bytes()),
            &[ErrorCode::BAD_NAME],
        ),
    ];
    if max > prefix.len() {
        session.push(probe(
            format!("STAT of a missing name of {max} bytes (the longest allowed)"),
            raw_name_request(0x02, &named(&vec![b'x'; max - prefix.len()]), &[]),
            &[ErrorCode::NOT_FOUND],
        ));
    }
    if max < 4096 {
        session.push(probe(
            format!("STAT of a name of {} bytes (one above max_name_len)", max + 1),
            raw_name_request(0x02, &named(&vec![b'y'; max + 1 - prefix.len().min(max)]), &[]),
            &[ErrorCode::BAD_NAME],
        ));
    }
    if !caps.contains(Capabilities::STATUS) {
        session.push(probe("STATUS on a server without STATUS", vec![0x06], &[ErrorCode::UNSUPPORTED]));
    }
    let file = ctx.name("file");
    if can_write {
        put_ok(&mut conn, &file, PutMode::Overwrite, b"hi", "PUT-2")?;
        session.push(probe(
            "create-only PUT of an existing name",
            put_bytes(&file, PutMode::CreateOnly, b"ot"),
            &[ErrorCode::EXISTS],
        ));
        let mut bad =
            request_bytes(&put_head(&ctx.name("bad-md5"), PutMode::Overwrite, b"da", Some(Digest::of(b"ad"))));
        bad.extend_from_slice(b"da");
        session.push(probe("PUT with a wrong digest", bad, &[ErrorCode::CHECKSUM_MISMATCH]));
        session.push(probe(
            "GET from offset 3 of a 2-byte file",
            request_bytes(&Request::Get { name: file.clone(), offset: 3 }),
            &[ErrorCode::BAD_OFFSET],
        ));
        let mut bad_name_put = raw_name_request(0x04, &named(b"p/q"), &[]);
        bad_name_put.insert(1, 0);
        bad_name_put.extend_from_slice(&1u64.to_be_bytes());
        bad_name_put.extend_from_slice(Digest::of(b"z").to_hex().as_slice());
        bad_name_put.push(b'z');
        session.push(probe("PUT of a name with '/'", bad_name_put, &[ErrorCode::BAD_NAME]));
    } else {
        session.push(probe(
            "PUT from a read role",
            put_bytes(&file, PutMode::Overwrite, b"hi"),
            &[ErrorCode::FORBIDDEN],
        ));
    }
    let mut raw = conn.raw;
    let deadline = || ctx.io_deadline();
    for p in &session {
        raw.send(&p.bytes).map_err(|e| fail("ERR-6", format!("{}: {e}", p.what)))?;
        let (code, message) = raw_error(&mut raw, deadline()).map_err(|e| fail("ERR-6", format!("{}: {e}", p.what)))?;
        judge(check, &p.what, &p.want, code, &message)?;
    }
    // The help text, read raw.
    raw.send(&[0x07]).map_err(|e| fail("HELP-1", e.to_string()))?;
    let help = raw_help(&mut raw, deadline()).map_err(|e| fail("HELP-1", format!("HELP: {e}")))?;
    if check == Check::Utf8 {
        if let Err(e) = std::str::from_utf8(&help) {
            return Err(fail("ENC-2", format!("the help text is not UTF-8 ({e})")));
        }
    }
    drop(raw);
    // Fatal conditions, each on its own connection.
    let long_token: String = bytes(seed_for(ctx, "token"), 256).iter().map(|b| char::from(0x21 + b % 94)).collect();
    let mut fatal = vec![
        probe("the unknown opcode 0x0a", vec![0x0A], &[ErrorCode::MALFORMED]),
        probe("STAT with name length 4097", vec![0x02, 0, 0, 0x10, 0x01], &[ErrorCode::TOO_LARGE]),
        probe(
            "PUT with mode 2",
            put_bytes(&file, PutMode::Overwrite, b"")
                .iter()
                .enumerate()
                .map(|(i, &b)| if i == 1 { 2 } else { b })
                .collect(),
            &[ErrorCode::MALFORMED],
        ),
    ];
    let handshakes = [
        ("a hello offering versions 2 to 3", b"FERRY\x00\x02\x00\x03\x00\x00".to_vec(), ErrorCode::UNSUPPORTED_VERSION),
        ("a hello with bad magic", b"FERRX\x00\x01\x00\x01\x00\x00".to_vec(), ErrorCode::MALFORMED),
        ("a hello with an unknown 256-byte token", hello_bytes(Some(&long_token)), ErrorCode::UNAUTHORIZED),
        (
            "a hello with a token of bytes 0x80-0xFF",
            [b"FERRY\x00\x01\x00\x01\x00\x04".as_slice(), &[0xC3, 0xA9, 0xFF, 0x80]].concat(),
            ErrorCode::MALFORMED,
        ),
    ];
    for (what, bytes, code) in handshakes {
        fatal.push(Probe { what: what.into(), bytes, want: vec![code], handshake: true });
    }
    // A fatal error may be destroyed by the reset that closing with unread input causes, when
    // the server does not linger (`[ERR-9]`, a SHOULD): a warning, and the next probe.
    let mut destroyed: Option<Failure> = None;
    for p in fatal {
        let mut raw: Raw = if p.handshake {
            ctx.raw().map_err(|e| fail("ERR-6", format!("cannot connect: {e}")))?
        } else {
            ctx.conn().map_err(|e| problem("ERR-6", "handshake", &e))?.raw
        };
        raw.send(&p.bytes).map_err(|e| fail("ERR-6", format!("{}: {e}", p.what)))?;
        let (code, message) = match raw_error(&mut raw, deadline()) {
            Ok(got) => got,
            Err(e) if raw.reset && raw.received.is_empty() => {
                let what = format!("{}: the connection was reset before a fatal error arrived ({e})", p.what);
                destroyed.get_or_insert_with(|| Failure::new("ERR-9", what));
                continue;
            }
            Err(e) => return Err(fail("ERR-6", format!("{}: {e}", p.what))),
        };
        judge(check, &p.what, &p.want, code, &message)?;
    }
    Ok(destroyed.map_or(Outcome::Pass, Outcome::Warn))
}

fn fatal_delivery(ctx: &Ctx) -> Verdict {
    // A PUT whose mode byte is bad, and nothing after it: the server knows at once (`[ERR-8]`).
    let mut conn = ctx.conn().map_err(|p| problem("ERR-8", "handshake", &p))?;
    conn.raw.send(&[0x04, 0x07]).map_err(|e| fail("ERR-8", e.to_string()))?;
    match raw_error(&mut conn.raw, ctx.io_deadline()) {
        Ok((code, _)) if code == ErrorCode::MALFORMED.0 => {}
        Ok((code, _)) => {
            return Err(fail("ERR-6", format!("a PUT with mode 7: {}; expected MALFORMED", code_name(code))))
        }
        Err(e) => {
            return Ok(Outcome::Warn(Failure::new(
                "ERR-8",
                format!("a PUT with mode 7 and nothing after it: no MALFORMED before the rest arrived ({e})"),
            )))
        }
    }
    drop(conn);
    // An unknown opcode followed by much more than the server will read: the error must still
    // arrive, not be destroyed by a reset (`[ERR-9]`).
    let mut conn = ctx.conn().map_err(|p| problem("ERR-9", "handshake", &p))?;
    let mut bytes = vec![0x0A];
    bytes.extend(std::iter::repeat_n(0x01, 256 * 1024));
    let mut writer = conn.raw.stream.try_clone().map_err(|e| fail("ERR-9", e.to_string()))?;
    let sender = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut writer, &bytes);
    });
    let got = raw_error(&mut conn.raw, ctx.io_deadline());
    let _ = sender.join();
    match got {
        Ok((code, _)) if code == ErrorCode::MALFORMED.0 => Ok(Outcome::Pass),
        Ok((code, _)) => Err(fail("ERR-6", format!("an unknown opcode: {}; expected MALFORMED", code_name(code)))),
        Err(e) => Ok(Outcome::Warn(Failure::new(
            "ERR-9",
            format!("an unknown opcode followed by 256 KiB: the MALFORMED reply did not arrive whole ({e})"),
        ))),
    }
}

fn version_message(ctx: &Ctx) -> Verdict {
    let mut raw = ctx.raw().map_err(|e| fail("HELLO-5", format!("cannot connect: {e}")))?;
    raw.send(b"FERRY\x00\x07\x00\x09\x00\x00").map_err(|e| fail("HELLO-5", e.to_string()))?;
    let (code, message) = raw_error(&mut raw, ctx.io_deadline()).map_err(|e| fail("HELLO-5", e))?;
    if code != ErrorCode::UNSUPPORTED_VERSION.0 {
        return Err(fail("HELLO-5", format!("a hello offering versions 7 to 9 got {}", code_name(code))));
    }
    let text = String::from_utf8_lossy(&message);
    if !text.contains('1') {
        return Ok(Outcome::Warn(Failure::new(
            "HELLO-6",
            format!("the UNSUPPORTED_VERSION message {text:?} does not name version 1, which the server speaks"),
        )));
    }
    Ok(Outcome::Pass)
}

/// Reads a HELP reply's text bytes as sent.
fn raw_help(raw: &mut Raw, deadline: Instant) -> Result<Vec<u8>, String> {
    loop {
        let r = &raw.received;
        if let Some(&tag) = r.first() {
            if tag != 0x87 {
                return Err(format!("a reply with tag 0x{tag:02x} where 0x87 was expected"));
            }
            if r.len() >= 5 {
                let len = u32::from_be_bytes([r[1], r[2], r[3], r[4]]);
                if len > HELP_TEXT_MAX {
                    return Err(format!("help text of {len} bytes, above {HELP_TEXT_MAX}"));
                }
                let len = len as usize;
                if r.len() >= 5 + len {
                    let text = r[5..5 + len].to_vec();
                    raw.received.drain(..5 + len);
                    return Ok(text);
                }
            }
        }
        if !raw.read_more(deadline, 128 * 1024) && (raw.eof || raw.reset || Instant::now() >= deadline) {
            return Err(format!("no whole HELP reply; received {} bytes", raw.received.len()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every reply decodes

fn replies_decode(ctx: &Ctx) -> Verdict {
    if let Some(o) = fits(ctx, 5, 0) {
        return Ok(o);
    }
    let can_write = writable(ctx)?;
    let ext = |what: &str, p: &Problem| problem("EXT-2", what, p);
    let mut conn = ctx.conn().map_err(|p| ext("handshake", &p))?;
    if conn.hello.version != 1 {
        return Err(fail(
            "EXT-2",
            format!("the hello announces version {}; the client offered only 1", conn.hello.version),
        ));
    }
    let name = ctx.name("every");
    let caps = conn.hello.capabilities;
    let mut steps: Vec<(Request, Vec<u8>)> = vec![
        (Request::List, vec![]),
        (Request::Stat(name.clone()), vec![]),
        (Request::Get { name: name.clone(), offset: 0 }, vec![]),
        (Request::Help, vec![]),
    ];
    if caps.contains(Capabilities::STATUS) {
        steps.push((Request::Status, vec![]));
    }
    if can_write {
        let mut data = [b"EOF\0".as_slice(), &bytes(seed_for(ctx, "every"), 5000)].concat();
        data.truncate(usize::try_from(conn.hello.max_file_size).unwrap_or(usize::MAX));
        steps.push((put_head(&name, PutMode::Overwrite, &data, None), data.clone()));
        steps.push((put_head(&name, PutMode::Overwrite, &data, None), data.clone()));
        steps.push((Request::Stat(name.clone()), vec![]));
        steps.push((Request::List, vec![]));
        steps.push((Request::Get { name: name.clone(), offset: 0 }, vec![]));
        if caps.contains(Capabilities::RESUME) {
            steps.push((Request::Get { name: name.clone(), offset: data.len() as u64 }, vec![]));
            steps.push((Request::Get { name: name.clone(), offset: 7 }, vec![]));
        }
        steps.push((Request::Delete(name.clone()), vec![]));
    }
    // All at once, pipelined, then the replies in order: the client machine checks that each
    // one is defined and answers its request.
    for (request, data) in &steps {
        conn.send(request, data).map_err(|p| ext(&format!("sending {:?}", request.kind()), &p))?;
    }
    for (request, _) in &steps {
        conn.reply().map_err(|p| ext(&format!("the reply to {}", request.kind()), &p))?;
    }
    match conn.call(&Request::Bye) {
        Ok(Reply::Bye) => {}
        Ok(other) => return Err(fail("BYE-1", format!("BYE: {}", other.describe()))),
        Err(p) => return Err(ext("BYE", &p)),
    }
    if !conn.raw.wait_close(ctx.io_deadline()) || !conn.raw.received.is_empty() {
        return Err(fail("BYE-1", "BYE was not followed by a close alone"));
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Legacy off

fn legacy_disabled(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| fail("LEG-5", "no server hello"))?;
    if hello.capabilities.contains(Capabilities::LEGACY) {
        return Ok(Outcome::Unsupported("the server announces LEGACY: the legacy profile is on".into()));
    }
    let name = ctx.name("legacy");
    let mut raw = ctx.raw().map_err(|e| fail("LEG-5", format!("cannot connect: {e}")))?;
    let mut request = u32::try_from(name.as_str().len()).unwrap_or(0).to_be_bytes().to_vec();
    request.extend_from_slice(name.as_str().as_bytes());
    raw.send(&request).map_err(|e| fail("LEG-5", e.to_string()))?;
    let closed = raw.wait_close(ctx.io_deadline());
    if !closed {
        return Err(fail("LEG-7", "the server did not close a legacy connection with the legacy profile off"));
    }
    if raw.received.starts_with(b"OK") {
        return Err(fail("LEG-1", "the server answered a legacy request with \"OK\" while not announcing LEGACY"));
    }
    if !raw.received.starts_with(b"ERROR") {
        let mut f = Failure::new("LEG-5", "expected \"ERROR\" and a message before the close");
        f.expected = Some(b"ERROR".to_vec());
        f.actual = Some(raw.received.clone());
        return Ok(Outcome::Warn(f));
    }
    drop(raw);
    server_alive(ctx, "LEG-5", "a refused legacy request")?;
    Ok(Outcome::Pass)
}
