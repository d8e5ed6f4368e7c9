//! The trailing digest (PROTOCOL.md § 6.5, § 7.4 modes `0x80`/`0x81`, § 7.10 FETCH): `TRL-*`.
//!
//! Every case but one needs the server's `TRAILER` capability and is reported unsupported
//! without it; `trailer.not-announced` checks the other side, that a server without it refuses
//! the new values as malformed. The cases send their bytes raw and read replies with
//! ferry-proto's reply decoder, so that a reply in the wrong form (`0x8B` to a GET, a `0x84` before
//! the trailer) is reported as such rather than as a decoding error of the client machine.
//!
//! A FETCH from offset 0 may be answered either way (`0x83` or `0x8B`, § 7.10): the cases accept
//! both and check whichever came. `[TRL-7]` (prefer `0x83` for a file whose digest the server
//! knows) is a SHOULD and only warns.

use std::time::{Duration, Instant};

use ferry_proto::client::ClientError;
use ferry_proto::{
    Capabilities, Decoded, Digest, ErrorCode, ErrorReply, FrameHead, Name, PutHead, PutMode, ReplyDecoder, Request,
    Role, ServerItem,
};

use super::support::{
    bytes, case, code_name, fail, fits, get_whole, problem, raw_error, raw_name_request, read_only_server,
    request_bytes, seed_for, server_alive, slots, upload_size, wait_close, writable, Verdict,
};
use crate::case::{Case, Ending, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Problem, Raw, Replies, Reply};

/// The size of the large uploads: several MiB, so that data and trailer cross many reads.
const LARGE: usize = (3 << 20) + 17;
/// The data of refused uploads: more than a progress unit, all HELP opcodes, so that a server
/// that reads it as requests answers HELPs where a STAT's `NOT_FOUND` must come.
const REFUSED_LEN: usize = 70_000;

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    let trailer = Needs { role: Role::Write, capabilities: Capabilities::TRAILER, ..Needs::default() };
    vec![
        case(
            "trailer.put.round-trip",
            "Trailing PUTs (modes 0x80 and 0x81, empty and of several MiB) are stored whole: STAT and GET show \
             them with their digest, and GET never answers in the trailing form",
            &["TRL-5", "PUT-1", "PUT-2", "TRL-8"],
            trailer,
            round_trip,
        ),
        case(
            "trailer.put.mismatch",
            "A trailing PUT whose trailer does not match its data gets CHECKSUM_MISMATCH and changes nothing; \
             the right digest in uppercase is accepted",
            &["TRL-5", "PUT-3", "FRAME-4"],
            trailer,
            mismatch,
        ),
        case(
            "trailer.put.reply-after-trailer",
            "The reply to a trailing PUT does not come before the trailer's last byte",
            &["TRL-5", "PUT-2"],
            trailer,
            reply_after_trailer,
        ),
        case(
            "trailer.put.cut",
            "A connection cut after a trailing PUT's data, or inside its trailer, publishes nothing",
            &["TRL-3", "STORE-2"],
            Needs { connections: 3, ..trailer },
            cut,
        ),
        case(
            "trailer.put.refused",
            "A trailing PUT refused by its head (EXISTS, BAD_NAME) has its data and trailer read and discarded; \
             the connection goes on",
            &["TRL-4", "PUT-5", "PUT-1", "NAME-7"],
            trailer,
            refused,
        ),
        case(
            "trailer.put.bad-trailer",
            "A trailer with a byte that is not a hexadecimal digit gets MALFORMED and a close, after a refusal \
             too, and stores nothing",
            &["TRL-4", "FRAME-4", "REQ-5"],
            trailer,
            bad_trailer,
        ),
        case(
            "trailer.fetch.whole",
            "FETCH from offset 0 is answered 0x83 as GET would be, or 0x8B with the file's bytes and their MD5",
            &["TRL-2", "GET-1"],
            trailer,
            fetch_whole,
        ),
        case(
            "trailer.fetch.offset",
            "FETCH from an offset above 0 is answered as GET (0x83, or BAD_OFFSET without RESUME), never 0x8B",
            &["TRL-6", "GET-2"],
            trailer,
            fetch_offset,
        ),
        case(
            "trailer.fetch.known-digest",
            "FETCH of a file just uploaded, whose digest the server knows, is answered 0x83",
            &["TRL-7"],
            trailer,
            fetch_known,
        ),
        case(
            "trailer.fetch.errors",
            "FETCH is refused as GET is: NOT_FOUND, BAD_OFFSET, BAD_NAME, and the connection goes on",
            &["GET-3", "GET-4", "NAME-7", "ERR-4"],
            trailer,
            fetch_errors,
        ),
        case(
            "trailer.fetch.during-overwrite",
            "FETCH while another connection overwrites the file sends one version whole, with its own digest",
            &["TRL-9", "GET-5"],
            trailer,
            fetch_during_overwrite,
        ),
        case(
            "trailer.not-announced",
            "A server without TRAILER answers PUT mode 0x80 and opcode 0x0B with MALFORMED and a close",
            &["PUT-7", "REQ-2", "TRL-1"],
            Needs::default(),
            not_announced,
        ),
    ]
}

// --- Sending ---------------------------------------------------------------------------------

/// The head of a PUT in the trailing form (§ 6.5): mode `0x80` or `0x81`, name, size.
fn trailing_head(name: &Name, mode: PutMode, size: u64) -> Vec<u8> {
    request_bytes(&Request::Put(PutHead::trailing(mode, name.clone(), size)))
}

/// The whole bytes of a trailing PUT of `data` whose trailer is `trailer` (32 bytes, or not).
fn trailing_put(name: &Name, mode: PutMode, data: &[u8], trailer: &[u8]) -> Vec<u8> {
    let mut out = trailing_head(name, mode, data.len() as u64);
    out.extend_from_slice(data);
    out.extend_from_slice(trailer);
    out
}

/// The data's own trailer.
fn trailer_of(data: &[u8]) -> [u8; 32] {
    Digest::of(data).to_hex()
}

fn mode_byte(mode: PutMode) -> u8 {
    0x80 | mode as u8
}

/// A version 1 session past its handshake, its replies read raw.
struct Session {
    conn: Conn,
    replies: Replies,
}

impl Session {
    fn open(ctx: &Ctx, requirement: &str) -> Result<Self, Box<Failure>> {
        let conn = ctx.conn().map_err(|p| problem(requirement, "handshake", &p))?;
        Ok(Self { conn, replies: Replies::session() })
    }

    fn raw(&mut self) -> &mut Raw {
        &mut self.conn.raw
    }

    fn send(&mut self, bytes: &[u8], requirement: &str, what: &str) -> Result<(), Box<Failure>> {
        self.conn.raw.send(bytes).map_err(|e| fail(requirement, format!("{what}: sending: {e}")))
    }

    /// The next reply, or a failure of `requirement`.
    fn reply(&mut self, timeout: Duration, requirement: &str, what: &str) -> Result<Reply, Box<Failure>> {
        self.replies.reply(&mut self.conn.raw, timeout).map_err(|p| problem(requirement, what, &p))
    }

    /// Sends `bytes` and reads one reply.
    fn call(&mut self, ctx: &Ctx, bytes: &[u8], requirement: &str, what: &str) -> Result<Reply, Box<Failure>> {
        self.send(bytes, requirement, what)?;
        self.reply(ctx.target.io_timeout, requirement, what)
    }

    /// Sends a GET or FETCH and reads its reply (at most `max` data bytes are taken).
    fn download(&mut self, ctx: &Ctx, request: &Request, max: u64, requirement: &str) -> Result<Got, Box<Failure>> {
        let what = describe(request);
        self.send(&request_bytes(request), requirement, &what)?;
        download(&mut self.conn.raw, ctx.target.io_timeout, max).map_err(|p| problem(requirement, &what, &p))
    }

    /// Nothing arrives for `pause`: a reply that comes is a failure of `requirement`.
    fn quiet(&mut self, pause: Duration, requirement: &str, what: &str) -> Result<(), Box<Failure>> {
        match self.replies.reply(&mut self.conn.raw, pause) {
            Err(Problem::Ended(Ending::TimedOut)) => Ok(()),
            Ok(r) => Err(fail(requirement, format!("{what}: {} arrived", r.describe()))),
            Err(p) => Err(problem(requirement, what, &p)),
        }
    }
}

fn describe(request: &Request) -> String {
    match request {
        Request::Get { name, offset } => format!("GET {name} from {offset}"),
        Request::Fetch { name, offset } => format!("FETCH {name} from {offset}"),
        other => format!("{:?}", other.kind()),
    }
}

// --- Reading downloads -----------------------------------------------------------------------

/// A reply to GET or FETCH.
#[derive(Debug)]
enum Got {
    /// Tag `0x83`: the leading form.
    Leading {
        offset: u64,
        frame: FrameHead,
        data: Vec<u8>,
    },
    /// Tag `0x8B`: the trailing form.
    Trailing {
        name: Name,
        size: u64,
        data: Vec<u8>,
        trailer: Digest,
    },
    Refused(ErrorReply),
}

/// One decoded piece, owned.
enum Piece {
    Leading(u64, FrameHead),
    Trailing(Name, u64),
    Data(Vec<u8>),
    Trailer(Digest),
    End,
    Error(ErrorReply),
    Other,
}

fn unexpected(got: &'static str) -> Problem {
    Problem::Protocol(ClientError::UnexpectedReply { expected: "a GET or FETCH reply".into(), got })
}

/// Reads one reply to a GET or FETCH from `raw`; each wait ends at most `timeout` later. A frame
/// announcing more than `max` bytes is not read.
fn download(raw: &mut Raw, timeout: Duration, max: u64) -> Result<Got, Problem> {
    let mut decoder = ReplyDecoder::in_session();
    let mut head: Option<Piece> = None;
    let mut data = Vec::new();
    let mut trailer = None;
    loop {
        let piece = match decoder.decode(&raw.received) {
            Ok(Decoded::Item { item, consumed }) => {
                let piece = match item {
                    ServerItem::GetHead { offset, frame } => Piece::Leading(offset, frame),
                    ServerItem::FetchTrailing { name, size } => Piece::Trailing(name, size),
                    ServerItem::Data(d) => Piece::Data(d.to_vec()),
                    ServerItem::Trailer(d) => Piece::Trailer(d),
                    ServerItem::DataEnd => Piece::End,
                    ServerItem::Error(e) => Piece::Error(e),
                    _ => Piece::Other,
                };
                raw.received.drain(..consumed);
                Some(piece)
            }
            Ok(Decoded::NeedMore) => None,
            Err(e) => return Err(Problem::Protocol(ClientError::Decode(e))),
        };
        match piece {
            None => {
                if !raw.read_more(Instant::now() + timeout, 256 * 1024) {
                    if raw.eof || raw.reset {
                        return Err(Problem::Ended(raw.ending()));
                    }
                    return Err(Problem::Ended(Ending::TimedOut));
                }
            }
            Some(Piece::Error(e)) if head.is_none() => return Ok(Got::Refused(e)),
            Some(p @ Piece::Leading(_, _)) if head.is_none() => {
                if let Piece::Leading(offset, frame) = &p {
                    if frame.size.saturating_sub(*offset) > max {
                        return Err(unexpected("a frame larger than the file"));
                    }
                }
                head = Some(p);
            }
            Some(p @ Piece::Trailing(_, _)) if head.is_none() => {
                if let Piece::Trailing(_, size) = &p {
                    if *size > max {
                        return Err(unexpected("a trailing frame larger than the file"));
                    }
                }
                head = Some(p);
            }
            Some(Piece::Data(d)) if head.is_some() => data.extend_from_slice(&d),
            Some(Piece::Trailer(d)) if matches!(head, Some(Piece::Trailing(..))) => trailer = Some(d),
            Some(Piece::End) => {
                return match head {
                    Some(Piece::Leading(offset, frame)) => Ok(Got::Leading { offset, frame, data }),
                    Some(Piece::Trailing(name, size)) => {
                        let trailer = trailer.ok_or_else(|| unexpected("a trailing frame without its trailer"))?;
                        Ok(Got::Trailing { name, size, data, trailer })
                    }
                    _ => Err(unexpected("data without a head")),
                };
            }
            Some(_) => return Err(unexpected("another reply")),
        }
    }
}

/// Which form a download came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Leading,
    Trailing,
}

/// Checks a download of `content` under `name` from `offset`: a leading reply as GET-1/GET-2 say,
/// a trailing one (only to a FETCH from 0, `[TRL-8]`, `[TRL-6]`) with the file's bytes and their
/// digest (`[TRL-2]`).
fn check_download(got: Got, request: &Request, content: &[u8]) -> Result<Form, Box<Failure>> {
    let what = describe(request);
    let (name, offset, fetch) = match request {
        Request::Get { name, offset } => (name, *offset, false),
        Request::Fetch { name, offset } => (name, *offset, true),
        _ => unreachable!("a download request"),
    };
    let size = content.len() as u64;
    match got {
        Got::Refused(e) => Err(fail("GET-1", format!("{what} of an existing {size}-byte file: error {e}"))),
        Got::Leading { offset: o, frame, data } => {
            let tail = &content[usize::try_from(offset.min(size)).unwrap_or(content.len())..];
            if o != offset || frame.name != *name || frame.size != size {
                return Err(fail(
                    "GET-1",
                    format!(
                        "{what}: a 0x83 reply for {} from {o}, {} bytes; the file has {size}",
                        frame.name, frame.size
                    ),
                ));
            }
            if frame.md5 != Digest::of(content) {
                return Err(fail(
                    if offset > 0 { "GET-2" } else { "GET-1" },
                    format!("{what}: digest {}; the whole file's is {}", frame.md5, Digest::of(content)),
                ));
            }
            if data != tail {
                return Err(fail(
                    "GET-1",
                    format!("{what}: {} data bytes that are not the file's {}", data.len(), tail.len()),
                ));
            }
            Ok(Form::Leading)
        }
        Got::Trailing { name: n, size: s, data, trailer } => {
            if !fetch {
                return Err(fail("TRL-8", format!("{what}: answered with tag 0x8B, which only a FETCH may get")));
            }
            if offset > 0 {
                return Err(fail(
                    "TRL-6",
                    format!("{what}: answered with tag 0x8B, which only a FETCH from 0 may get"),
                ));
            }
            if n != *name || s != size {
                return Err(fail("GET-1", format!("{what}: a 0x8B reply for {n}, {s} bytes; the file has {size}")));
            }
            if trailer != Digest::of(&data) {
                return Err(fail(
                    "TRL-2",
                    format!(
                        "{what}: the 0x8B trailer {trailer} is not the MD5 of the {} bytes sent ({})",
                        data.len(),
                        Digest::of(&data)
                    ),
                ));
            }
            if data != content {
                return Err(fail("GET-1", format!("{what}: {} data bytes that are not the file's", data.len())));
            }
            Ok(Form::Trailing)
        }
    }
}

/// A STAT of `name` shows `content`'s size and (if it gives one) digest.
fn check_stat(s: &mut Session, ctx: &Ctx, name: &Name, content: &[u8], requirement: &str) -> Result<(), Box<Failure>> {
    let what = format!("STAT {name}");
    match s.call(ctx, &request_bytes(&Request::Stat(name.clone())), requirement, &what)? {
        Reply::Stat(e) if e.size == content.len() as u64 && e.md5.is_none_or(|d| d == Digest::of(content)) => Ok(()),
        other => Err(fail(
            requirement,
            format!("{what} after a trailing PUT of {} bytes: {}", content.len(), other.describe()),
        )),
    }
}

/// `name` holds `content` (`None`: does not exist), seen on a connection of its own.
fn expect_content(ctx: &Ctx, name: &Name, content: Option<&[u8]>, requirement: &str, when: &str) -> Verdict {
    let mut conn = ctx.conn().map_err(|p| problem(requirement, "handshake", &p))?;
    let got = get_whole(&mut conn, name, requirement)?;
    if got.as_deref() == content {
        return Ok(Outcome::Pass);
    }
    let shown = |c: Option<&[u8]>| c.map_or_else(|| "no file".to_owned(), |c| format!("{} bytes", c.len()));
    Err(fail(requirement, format!("{name} {when}: {}; expected {}", shown(got.as_deref()), shown(content))))
}

/// The common preconditions of the cases that upload: names of the prefix and `suffix` bytes fit,
/// and the run may write.
fn can_upload(ctx: &Ctx, suffix: usize) -> Result<Option<Outcome>, Box<Failure>> {
    if let Some(o) = fits(ctx, suffix, 0) {
        return Ok(Some(o));
    }
    if !writable(ctx)? {
        return Ok(Some(read_only_server()));
    }
    Ok(None)
}

/// How long a case listens for a reply that must not come yet: short, and well within the
/// server's progress deadline, which the pause counts against.
fn pause(ctx: &Ctx) -> Duration {
    let progress = ctx.server.map_or(0, |h| h.progress_timeout_ms);
    let cap = if progress == 0 { Duration::from_millis(600) } else { Duration::from_millis(u64::from(progress) / 4) };
    Duration::from_millis(600).min(cap).min(ctx.target.io_timeout / 2)
}

/// Uploads `data` in the trailing form and expects `0x84` with `replaced`.
fn put_trailing_ok(
    s: &mut Session,
    ctx: &Ctx,
    name: &Name,
    mode: PutMode,
    data: &[u8],
    replaced: bool,
) -> Result<(), Box<Failure>> {
    let what = format!("a PUT in mode 0x{:02x} of {name} ({} bytes)", mode_byte(mode), data.len());
    match s.call(ctx, &trailing_put(name, mode, data, &trailer_of(data)), "TRL-5", &what)? {
        Reply::Put { replaced: r } if r == replaced => Ok(()),
        Reply::Put { replaced: r } => {
            Err(fail("PUT-2", format!("{what}: outcome {}; expected {}", u8::from(r), u8::from(replaced))))
        }
        other => Err(fail("TRL-5", format!("{what} with its right trailer: {}", other.describe()))),
    }
}

// --- Cases -----------------------------------------------------------------------------------

fn round_trip(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 8)? {
        return Ok(o);
    }
    let large = upload_size(ctx, LARGE);
    let mut s = Session::open(ctx, "TRL-5")?;
    let files = [
        (ctx.name("t-e0"), PutMode::Overwrite, Vec::new()),
        (ctx.name("t-e1"), PutMode::CreateOnly, Vec::new()),
        (ctx.name("t-l0"), PutMode::Overwrite, bytes(seed_for(ctx, "t-l0"), large)),
        (ctx.name("t-l1"), PutMode::CreateOnly, bytes(seed_for(ctx, "t-l1"), large.saturating_sub(5))),
    ];
    for (name, mode, data) in &files {
        put_trailing_ok(&mut s, ctx, name, *mode, data, false)?;
    }
    // Mode 0x80 replaces what is there (`[PUT-1]`).
    let again = bytes(seed_for(ctx, "again"), upload_size(ctx, 1000));
    put_trailing_ok(&mut s, ctx, &files[0].0, PutMode::Overwrite, &again, true)?;
    let stored =
        [(&files[0].0, &again), (&files[1].0, &files[1].2), (&files[2].0, &files[2].2), (&files[3].0, &files[3].2)];
    for (name, content) in stored {
        check_stat(&mut s, ctx, name, content, "TRL-5")?;
        let get = Request::Get { name: name.clone(), offset: 0 };
        let got = s.download(ctx, &get, content.len() as u64, "TRL-5")?;
        check_download(got, &get, content)?;
    }
    Ok(Outcome::Pass)
}

fn mismatch(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 7)? {
        return Ok(o);
    }
    let fresh = ctx.name("m-new");
    let old = ctx.name("m-old");
    let old_content = bytes(seed_for(ctx, "m-old"), upload_size(ctx, 16));
    let mut s = Session::open(ctx, "TRL-5")?;
    put_trailing_ok(&mut s, ctx, &old, PutMode::Overwrite, &old_content, false)?;
    let wrong = Digest::of(b"not the data").to_hex();
    for (name, mode, size) in [
        (&fresh, PutMode::CreateOnly, 1000),
        (&old, PutMode::Overwrite, 70_000),
        (&fresh, PutMode::Overwrite, 0),
        (&fresh, PutMode::Overwrite, LARGE),
    ] {
        let data = bytes(seed_for(ctx, name.as_str()) ^ size as u64, upload_size(ctx, size));
        let what =
            format!("a PUT in mode 0x{:02x} of {name} ({} bytes) with a wrong trailer", mode_byte(mode), data.len());
        match s.call(ctx, &trailing_put(name, mode, &data, &wrong), "TRL-5", &what)? {
            r if r.code() == Some(ErrorCode::CHECKSUM_MISMATCH.0) => {}
            other => return Err(fail("TRL-5", format!("{what}: {}", other.describe()))),
        }
    }
    let when = "after trailing PUTs with wrong trailers";
    expect_content(ctx, &fresh, None, "PUT-3", when)?;
    expect_content(ctx, &old, Some(&old_content), "PUT-3", when)?;
    // The right digest in uppercase digits is accepted (§ 6.3: receivers take either case).
    let data = bytes(seed_for(ctx, "upper"), upload_size(ctx, 500));
    let upper = Digest::of(&data).to_hex().to_ascii_uppercase();
    let what = format!("a trailing PUT of {fresh} whose trailer is the right digest in uppercase");
    match s.call(ctx, &trailing_put(&fresh, PutMode::Overwrite, &data, &upper), "FRAME-4", &what)? {
        Reply::Put { .. } => {}
        other => return Err(fail("FRAME-4", format!("{what}: {}", other.describe()))),
    }
    expect_content(ctx, &fresh, Some(&data), "FRAME-4", "after a trailing PUT with an uppercase trailer")
}

fn reply_after_trailer(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 6)? {
        return Ok(o);
    }
    let pause = pause(ctx);
    let mut s = Session::open(ctx, "TRL-5")?;
    for (suffix, size) in [("early", 200_000), ("empty", 0)] {
        let name = ctx.name(suffix);
        let data = bytes(seed_for(ctx, suffix), upload_size(ctx, size));
        let trailer = trailer_of(&data);
        let what = format!("a PUT in mode 0x80 of {name} ({} bytes)", data.len());
        let mut head_and_data = trailing_head(&name, PutMode::Overwrite, data.len() as u64);
        head_and_data.extend_from_slice(&data);
        s.send(&head_and_data, "TRL-5", &what)?;
        s.quiet(pause, "TRL-5", &format!("{what}, its data sent and its trailer not"))?;
        s.send(&trailer[..31], "TRL-5", &what)?;
        s.quiet(pause, "TRL-5", &format!("{what}, all but the trailer's last byte sent"))?;
        s.send(&trailer[31..], "TRL-5", &what)?;
        match s.reply(ctx.target.io_timeout, "TRL-5", &format!("{what}, once its trailer was complete"))? {
            Reply::Put { replaced: false } => {}
            other => return Err(fail("PUT-2", format!("{what}, once its trailer was complete: {}", other.describe()))),
        }
    }
    Ok(Outcome::Pass)
}

/// Starts a trailing upload of `data` to `name` and sends `trailer_bytes` of its trailer; the
/// connection, returned, is left open.
fn partial(ctx: &Ctx, name: &Name, mode: PutMode, data: &[u8], trailer_bytes: usize) -> Result<Conn, Box<Failure>> {
    let mut conn = ctx.conn().map_err(|p| problem("TRL-3", "handshake", &p))?;
    let mut bytes = trailing_head(name, mode, data.len() as u64);
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(&trailer_of(data)[..trailer_bytes]);
    conn.raw.send(&bytes).map_err(|e| fail("TRL-3", format!("sending a trailing PUT of {name}: {e}")))?;
    Ok(conn)
}

fn cut(ctx: &Ctx) -> Verdict {
    if let Some(o) = slots(ctx, 3) {
        return Ok(o);
    }
    if let Some(o) = can_upload(ctx, 8)? {
        return Ok(o);
    }
    let fresh = ctx.name("cut-new");
    let mid = ctx.name("cut-mid");
    let old = ctx.name("cut-old");
    let old_content = bytes(seed_for(ctx, "cut-old"), upload_size(ctx, 16));
    let data = bytes(seed_for(ctx, "cut"), upload_size(ctx, 300_000));
    let mut observer = Session::open(ctx, "TRL-3")?;
    put_trailing_ok(&mut observer, ctx, &old, PutMode::Overwrite, &old_content, false)?;
    drop(observer);
    // All the data, no trailer; half the trailer; an overwrite with all but its last trailer byte.
    let cuts = [
        partial(ctx, &fresh, PutMode::CreateOnly, &data, 0)?,
        partial(ctx, &mid, PutMode::Overwrite, &data, 16)?,
        partial(ctx, &old, PutMode::Overwrite, &data, 31)?,
    ];
    drop(cuts);
    for pause in [0, 300] {
        std::thread::sleep(Duration::from_millis(pause));
        let when = format!("{pause} ms after trailing uploads were cut off before their trailer was complete");
        expect_content(ctx, &fresh, None, "TRL-3", &when)?;
        expect_content(ctx, &mid, None, "TRL-3", &when)?;
        expect_content(ctx, &old, Some(&old_content), "TRL-3", &when)?;
    }
    Ok(Outcome::Pass)
}

/// Sends a refused trailing PUT whole and expects `want` (before or after the data), then a STAT
/// of a missing name must get `NOT_FOUND`: the data and the trailer were discarded exactly.
fn refused_then_usable(
    ctx: &Ctx,
    s: &mut Session,
    what: &str,
    bytes: &[u8],
    want: ErrorCode,
    requirement: &str,
) -> Result<(), Box<Failure>> {
    match s.call(ctx, bytes, requirement, what)? {
        r if r.code() == Some(want.0) => {}
        other => {
            return Err(fail(requirement, format!("{what}: {}; expected {}", other.describe(), code_name(want.0))))
        }
    }
    let missing = ctx.name("missing");
    match s.call(ctx, &request_bytes(&Request::Stat(missing.clone())), "TRL-4", "STAT after a refused PUT")? {
        r if r.code() == Some(ErrorCode::NOT_FOUND.0) => Ok(()),
        other => Err(fail(
            "TRL-4",
            format!(
                "{what} was refused; a STAT of {missing} sent after its data and trailer got {}: they were not read \
                 and discarded exactly",
                other.describe()
            ),
        )),
    }
}

fn refused(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 8)? {
        return Ok(o);
    }
    let name = ctx.name("exists");
    let first = b"the first version"[..upload_size(ctx, 17)].to_vec();
    let mut s = Session::open(ctx, "TRL-4")?;
    put_trailing_ok(&mut s, ctx, &name, PutMode::Overwrite, &first, false)?;
    let data = vec![0x07; upload_size(ctx, REFUSED_LEN)];
    let what = format!("a PUT in mode 0x81 of the existing {name}");
    let put = trailing_put(&name, PutMode::CreateOnly, &data, &trailer_of(&data));
    refused_then_usable(ctx, &mut s, &what, &put, ErrorCode::EXISTS, "PUT-1")?;
    // A name with '/': the head is whole, so the refusal is recoverable (`[NAME-7]`).
    let slash = [ctx.prefix.as_bytes(), b"a/b"].concat();
    let mut put = raw_name_request(0x04, &slash, &(data.len() as u64).to_be_bytes());
    put.insert(1, 0x80);
    put.extend_from_slice(&data);
    put.extend_from_slice(&trailer_of(&data));
    refused_then_usable(ctx, &mut s, "a PUT in mode 0x80 of a name with '/'", &put, ErrorCode::BAD_NAME, "NAME-7")?;
    expect_content(ctx, &name, Some(&first), "PUT-1", "after a refused create-only PUT in mode 0x81")
}

/// Sends `bytes`, whose trailer has a byte that is no hexadecimal digit: replies in `before` may
/// come, then `MALFORMED` and a close.
fn malformed_trailer(ctx: &Ctx, what: &str, bytes: &[u8], before: &[ErrorCode]) -> Result<(), Box<Failure>> {
    let mut s = Session::open(ctx, "FRAME-4")?;
    s.send(bytes, "FRAME-4", what)?;
    loop {
        match s.reply(ctx.target.io_timeout, "TRL-4", what)? {
            r if r.code() == Some(ErrorCode::MALFORMED.0) => break,
            r if r.code().is_some_and(|c| before.iter().any(|b| b.0 == c)) => {}
            other => return Err(fail("TRL-4", format!("{what}: {}; expected MALFORMED", other.describe()))),
        }
    }
    let (closed, _) = wait_close(s.raw(), ctx.io_deadline());
    if !closed {
        return Err(fail("REQ-5", format!("{what}: MALFORMED, and the connection stayed open")));
    }
    Ok(())
}

fn bad_trailer(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 8)? {
        return Ok(o);
    }
    let name = ctx.name("exists");
    let first = b"the first version"[..upload_size(ctx, 17)].to_vec();
    let mut s = Session::open(ctx, "TRL-4")?;
    put_trailing_ok(&mut s, ctx, &name, PutMode::Overwrite, &first, false)?;
    let data = vec![0x07; upload_size(ctx, 5000)];
    let mut bad = trailer_of(&data);
    bad[20] = b'g';
    // Refused by its head (EXISTS may come early, or never): the trailer is still checked.
    let what = format!("a PUT in mode 0x81 of the existing {name} whose trailer has a 'g'");
    malformed_trailer(ctx, &what, &trailing_put(&name, PutMode::CreateOnly, &data, &bad), &[ErrorCode::EXISTS])?;
    let slash = [ctx.prefix.as_bytes(), b"a/b"].concat();
    let mut put = raw_name_request(0x04, &slash, &(data.len() as u64).to_be_bytes());
    put.insert(1, 0x80);
    put.extend_from_slice(&data);
    put.extend_from_slice(&bad);
    malformed_trailer(
        ctx,
        "a PUT in mode 0x80 of a name with '/' whose trailer has a 'g'",
        &put,
        &[ErrorCode::BAD_NAME],
    )?;
    // Accepted: the digit decides it.
    let fresh = ctx.name("fresh");
    let what = format!("a PUT in mode 0x80 of {fresh} whose trailer has a 'g'");
    malformed_trailer(ctx, &what, &trailing_put(&fresh, PutMode::Overwrite, &data, &bad), &[])?;
    expect_content(ctx, &fresh, None, "FRAME-4", "after a trailing PUT with a malformed trailer")?;
    expect_content(ctx, &name, Some(&first), "PUT-1", "after a refused trailing PUT with a malformed trailer")
}

/// Uploads `content` as `name` with a leading digest (the server knows it).
fn upload(s: &mut Session, ctx: &Ctx, name: &Name, content: &[u8], requirement: &str) -> Result<(), Box<Failure>> {
    let what = format!("PUT {name} ({} bytes)", content.len());
    match s.call(ctx, &super::support::put_bytes(name, PutMode::Overwrite, content), requirement, &what)? {
        Reply::Put { .. } => Ok(()),
        other => Err(fail("PUT-2", format!("{what}: {}", other.describe()))),
    }
}

fn fetch_whole(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 6)? {
        return Ok(o);
    }
    let mut s = Session::open(ctx, "TRL-2")?;
    // Uploaded in the trailing form too, in case a server keeps digests of leading uploads only.
    let files = [
        (ctx.name("f-big"), bytes(seed_for(ctx, "f-big"), upload_size(ctx, LARGE)), false),
        (ctx.name("f-tbig"), bytes(seed_for(ctx, "f-tbig"), upload_size(ctx, LARGE)), true),
        (ctx.name("f-0"), Vec::new(), true),
    ];
    for (name, content, trailing) in &files {
        if *trailing {
            put_trailing_ok(&mut s, ctx, name, PutMode::Overwrite, content, false)?;
        } else {
            upload(&mut s, ctx, name, content, "TRL-2")?;
        }
        let fetch = Request::Fetch { name: name.clone(), offset: 0 };
        let got = s.download(ctx, &fetch, content.len() as u64, "TRL-2")?;
        check_download(got, &fetch, content)?;
    }
    Ok(Outcome::Pass)
}

fn fetch_offset(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 6)? {
        return Ok(o);
    }
    let resume = ctx.server.is_some_and(|h| h.capabilities.contains(Capabilities::RESUME));
    let mut s = Session::open(ctx, "TRL-6")?;
    let name = ctx.name("f-off");
    let content = bytes(seed_for(ctx, "f-off"), upload_size(ctx, LARGE));
    put_trailing_ok(&mut s, ctx, &name, PutMode::Overwrite, &content, false)?;
    let size = content.len() as u64;
    let mut offsets = vec![1, size / 2, size];
    offsets.retain(|o| *o > 0);
    offsets.dedup();
    for offset in offsets {
        let fetch = Request::Fetch { name: name.clone(), offset };
        let got = s.download(ctx, &fetch, content.len() as u64, "TRL-6")?;
        match got {
            Got::Refused(e) if !resume && e.code == ErrorCode::BAD_OFFSET => {}
            got @ (Got::Leading { .. } | Got::Trailing { .. }) if resume => {
                check_download(got, &fetch, &content)?;
            }
            Got::Trailing { .. } => {
                return Err(fail("TRL-6", format!("{}: answered with tag 0x8B", describe(&fetch))));
            }
            other => {
                let (requirement, expected) = if resume {
                    ("GET-1", "a 0x83 reply")
                } else {
                    ("GET-4", "BAD_OFFSET: the server does not announce RESUME")
                };
                return Err(fail(requirement, format!("{}: {other:?}; expected {expected}", describe(&fetch))));
            }
        }
    }
    Ok(Outcome::Pass)
}

fn fetch_known(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 6)? {
        return Ok(o);
    }
    let mut s = Session::open(ctx, "TRL-7")?;
    let name = ctx.name("f-known");
    let content = bytes(seed_for(ctx, "f-known"), upload_size(ctx, LARGE));
    upload(&mut s, ctx, &name, &content, "TRL-7")?;
    let fetch = Request::Fetch { name: name.clone(), offset: 0 };
    let got = s.download(ctx, &fetch, content.len() as u64, "TRL-2")?;
    match check_download(got, &fetch, &content)? {
        Form::Leading => Ok(Outcome::Pass),
        Form::Trailing => Ok(Outcome::Warn(Failure::new(
            "TRL-7",
            format!(
                "{}: the file was just uploaded with its digest, which the server therefore knows, and the reply \
                 was 0x8B rather than 0x83",
                describe(&fetch)
            ),
        ))),
    }
}

fn fetch_errors(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 8)? {
        return Ok(o);
    }
    let mut s = Session::open(ctx, "GET-3")?;
    let name = ctx.name("f-err");
    upload(&mut s, ctx, &name, b"hi", "GET-4")?;
    let resume = ctx.server.is_some_and(|h| h.capabilities.contains(Capabilities::RESUME));
    let slash = [ctx.prefix.as_bytes(), b"a/b"].concat();
    let probes: Vec<(String, Vec<u8>, ErrorCode, &str)> = vec![
        (
            "FETCH of a missing file".into(),
            request_bytes(&Request::Fetch { name: ctx.name("missing"), offset: 0 }),
            ErrorCode::NOT_FOUND,
            "GET-3",
        ),
        (
            "FETCH from offset 3 of a 2-byte file".into(),
            request_bytes(&Request::Fetch { name: name.clone(), offset: 3 }),
            ErrorCode::BAD_OFFSET,
            "GET-4",
        ),
        (
            "FETCH of a missing file from offset 1".into(),
            request_bytes(&Request::Fetch { name: ctx.name("missing"), offset: 1 }),
            if resume { ErrorCode::NOT_FOUND } else { ErrorCode::BAD_OFFSET },
            "GET-3",
        ),
        (
            "FETCH of a name with '/'".into(),
            raw_name_request(0x0B, &slash, &0u64.to_be_bytes()),
            ErrorCode::BAD_NAME,
            "NAME-7",
        ),
    ];
    for (what, bytes, want, requirement) in probes {
        s.send(&bytes, requirement, &what)?;
        match raw_error(s.raw(), ctx.io_deadline()) {
            Ok((code, _)) if code == want.0 => {}
            Ok((code, _)) => {
                return Err(fail(requirement, format!("{what}: {}; expected {}", code_name(code), code_name(want.0))))
            }
            Err(e) => return Err(fail(requirement, format!("{what}: {e}"))),
        }
    }
    // Every refusal was recoverable: the connection goes on.
    let fetch = Request::Fetch { name: name.clone(), offset: 0 };
    let got = s.download(ctx, &fetch, 2, "ERR-4")?;
    check_download(got, &fetch, b"hi")?;
    Ok(Outcome::Pass)
}

fn fetch_during_overwrite(ctx: &Ctx) -> Verdict {
    if let Some(o) = can_upload(ctx, 6)? {
        return Ok(o);
    }
    let size = upload_size(ctx, LARGE);
    let name = ctx.name("f-over");
    let first = bytes(seed_for(ctx, "first"), size);
    let second = bytes(seed_for(ctx, "second"), size);
    let mut reader = Session::open(ctx, "TRL-9")?;
    let mut writer = Session::open(ctx, "TRL-9")?;
    upload(&mut writer, ctx, &name, &first, "TRL-9")?;
    let fetch = Request::Fetch { name: name.clone(), offset: 0 };
    reader.send(&request_bytes(&fetch), "TRL-9", "FETCH")?;
    // The reply has begun (or at least its request arrived) before the overwrite is sent.
    let _ = reader.raw().read_more(ctx.io_deadline(), 64);
    put_trailing_ok(&mut writer, ctx, &name, PutMode::Overwrite, &second, true)?;
    let got = download(reader.raw(), ctx.target.io_timeout, size as u64)
        .map_err(|p| problem("TRL-9", &describe(&fetch), &p))?;
    let content = match &got {
        Got::Leading { data, .. } if data.starts_with(&second[..data.len().min(64)]) => &second,
        Got::Trailing { data, .. } if data.starts_with(&second[..data.len().min(64)]) => &second,
        _ => &first,
    };
    check_download(got, &fetch, content).map_err(|mut f| {
        f.message = format!("during an overwrite by another connection: {}", f.message);
        if f.requirement.as_deref() == Some("GET-1") {
            f.requirement = Some("TRL-9".into());
        }
        f
    })?;
    Ok(Outcome::Pass)
}

fn not_announced(ctx: &Ctx) -> Verdict {
    let Some(hello) = ctx.server else { return Ok(Outcome::Skipped("no server hello".into())) };
    if hello.capabilities.contains(Capabilities::TRAILER) {
        return Ok(Outcome::Unsupported(
            "the server announces TRAILER: the trailer.* cases check what it does with these values".into(),
        ));
    }
    if let Some(o) = fits(ctx, 2, 0) {
        return Ok(o);
    }
    let name = ctx.name("na");
    let mut put = trailing_head(&name, PutMode::Overwrite, 2);
    put.extend_from_slice(b"hi");
    put.extend_from_slice(&trailer_of(b"hi"));
    let fetch = request_bytes(&Request::Fetch { name: name.clone(), offset: 0 });
    for (what, bytes, requirement) in [
        ("a PUT in mode 0x80 to a server without TRAILER", put, "PUT-7"),
        ("a FETCH (opcode 0x0B) to a server without TRAILER", fetch, "REQ-2"),
    ] {
        let mut s = Session::open(ctx, requirement)?;
        s.send(&bytes, requirement, what)?;
        match raw_error(s.raw(), ctx.io_deadline()) {
            Ok((code, _)) if code == ErrorCode::MALFORMED.0 => {}
            Ok((code, _)) => return Err(fail(requirement, format!("{what}: {}; expected MALFORMED", code_name(code)))),
            Err(e) => return Err(fail(requirement, format!("{what}: {e}"))),
        }
        let (closed, _) = wait_close(s.raw(), ctx.io_deadline());
        if !closed {
            return Err(fail("REQ-5", format!("{what}: MALFORMED, and the connection stayed open")));
        }
    }
    server_alive(ctx, "REQ-2", "requests only TRAILER defines")?;
    // Nothing was stored.
    let mut conn = ctx.conn().map_err(|p| problem("PUT-7", "handshake", &p))?;
    match get_whole(&mut conn, &name, "PUT-7")? {
        None => Ok(Outcome::Pass),
        Some(_) => Err(fail("PUT-7", format!("{name} exists after a PUT in mode 0x80 the server does not know"))),
    }
}
