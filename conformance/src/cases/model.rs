//! Model-based sessions: proptest generates sessions of LIST, STAT, GET (whole and resumed), PUT
//! (overwrite and create-only) and DELETE over a few names, runs each on one connection to the
//! live server, and compares every reply with an in-memory model of the server's files. A failing
//! session is shrunk (each attempt re-runs against the server) and reported with the run's seed
//! and as a transcript that reproduces it (`--save-failures`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ferry_proto::{Capabilities, Digest, ErrorCode, Name, PutMode, Request, Role};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use super::support::{case, Verdict};
use crate::case::{Case, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Reply};

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    vec![case(
        "model.sessions",
        "Generated sessions of every file command agree with a model of the server's files",
        &[
            "LIST-1", "LIST-2", "LIST-3", "STAT-1", "STAT-2", "GET-1", "GET-2", "GET-3", "GET-4", "PUT-1", "PUT-2",
            "DEL-1", "DEL-2", "NAME-8", "REQ-1",
        ],
        Needs { role: Role::Write, ..Needs::default() },
        sessions,
    )]
}

/// A file's content as generated: bytes, or many copies of one byte (large files stay small in
/// a transcript: `fill:N:B`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    Fill(usize, u8),
}

impl Content {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Fill(n, b) => vec![*b; *n],
        }
    }
}

/// One operation, on a name of the session's pool.
#[derive(Debug, Clone)]
pub enum Op {
    List,
    Stat(Index),
    Get(Index),
    /// A GET from an offset: the value modulo the file's size + 2 (so sometimes past the end).
    GetFrom(Index, u64),
    Put(Index, PutMode, Content),
    Delete(Index),
}

/// An operation with its name resolved and its offset chosen.
#[derive(Debug, Clone)]
pub enum Step {
    List,
    Stat(String),
    Get(String, u64),
    Put(String, PutMode, Content),
    Delete(String),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = |s: &str| ferry_proto::name::escape_for_display(s);
        match self {
            Self::List => f.write_str("LIST"),
            Self::Stat(n) => write!(f, "STAT {}", e(n)),
            Self::Get(n, o) => write!(f, "GET {} from {o}", e(n)),
            Self::Put(n, m, c) => write!(f, "PUT {:?} {} ({} bytes)", m, e(n), c.bytes().len()),
            Self::Delete(n) => write!(f, "DELETE {}", e(n)),
        }
    }
}

fn suffix_strategy(room: usize) -> impl Strategy<Value = String> {
    let fixed: Vec<String> =
        ["a", "A", "a.txt", "EOF", "\u{e9}", "e\u{301}", "x y", "-rf", "~", "\u{1F600}", "a..", "..a"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    prop_oneof![
        3 => prop::sample::select(fixed),
        2 => "[a-zA-Z0-9 ._~-]{1,12}",
        1 => "\\PC{1,4}",
    ]
    .prop_filter("a valid name that fits", move |s| s.len() <= room && Name::parse(&format!("p{s}")).is_ok())
}

fn content_strategy(max: usize) -> impl Strategy<Value = Content> {
    let c = prop_oneof![
        2 => Just(Content::Bytes(Vec::new())),
        4 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Content::Bytes),
        2 => prop::collection::vec(any::<u8>(), 0..4096).prop_map(Content::Bytes),
        2 => (prop::collection::vec(any::<u8>(), 0..32), prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(a, b)| Content::Bytes([a.as_slice(), b"EOF\0", b"\0\0EOF\n", &b].concat())),
        1 => (65_536usize..200_000, any::<u8>()).prop_map(|(n, b)| Content::Fill(n, b)),
    ];
    // Within the server's max_file_size.
    c.prop_map(move |c| match c {
        Content::Bytes(mut b) => {
            b.truncate(max);
            Content::Bytes(b)
        }
        Content::Fill(n, b) => Content::Fill(n.min(max), b),
    })
}

fn op_strategy(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::List),
        3 => any::<Index>().prop_map(Op::Stat),
        3 => any::<Index>().prop_map(Op::Get),
        2 => (any::<Index>(), any::<u64>()).prop_map(|(i, o)| Op::GetFrom(i, o)),
        4 => (any::<Index>(), content_strategy(max)).prop_map(|(i, c)| Op::Put(i, PutMode::Overwrite, c)),
        2 => (any::<Index>(), content_strategy(max)).prop_map(|(i, c)| Op::Put(i, PutMode::CreateOnly, c)),
        2 => any::<Index>().prop_map(Op::Delete),
    ]
}

/// A mismatch: the requirement broken, the step's index, and what differed.
#[derive(Debug, Clone)]
struct Mismatch {
    requirement: &'static str,
    step: usize,
    message: String,
}

impl Mismatch {
    fn encode(&self) -> String {
        format!("{}|{}|{}", self.requirement, self.step, self.message)
    }

    fn decode(s: &str) -> Option<(String, usize, String)> {
        let mut parts = s.splitn(3, '|');
        Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?, parts.next()?.to_owned()))
    }
}

/// The model: names (with the prefix) to contents.
type Model = BTreeMap<String, Vec<u8>>;

/// Resolves a session's operations against the model as it evolves (offsets depend on sizes).
fn resolve(pool: &[String], ops: &[Op]) -> Vec<Step> {
    let mut model: BTreeMap<String, usize> = BTreeMap::new();
    let name = |i: &Index| pool[i.index(pool.len())].clone();
    ops.iter()
        .map(|op| match op {
            Op::List => Step::List,
            Op::Stat(i) => Step::Stat(name(i)),
            Op::Get(i) => Step::Get(name(i), 0),
            Op::GetFrom(i, o) => {
                let n = name(i);
                let size = model.get(&n).copied().unwrap_or(0) as u64;
                Step::Get(n, o % (size + 2))
            }
            Op::Put(i, mode, c) => {
                let n = name(i);
                if *mode == PutMode::Overwrite || !model.contains_key(&n) {
                    model.insert(n.clone(), c.bytes().len());
                }
                Step::Put(n, *mode, c.clone())
            }
            Op::Delete(i) => {
                let n = name(i);
                model.remove(&n);
                Step::Delete(n)
            }
        })
        .collect()
}

fn sessions(ctx: &Ctx) -> Verdict {
    let hello = ctx.server.ok_or_else(|| Box::new(Failure::new("REQ-1", "no server hello")))?;
    let room = (hello.max_name_len as usize).saturating_sub(ctx.prefix.len());
    if room == 0 {
        return Ok(Outcome::Unsupported(format!(
            "max_name_len {} leaves no room after the prefix",
            hello.max_name_len
        )));
    }
    if !super::support::writable(ctx)? {
        return Ok(super::support::read_only_server());
    }
    let resume = hello.capabilities.contains(Capabilities::RESUME);
    let strategy = (
        prop::collection::vec(suffix_strategy(room.min(40)), 1..=4),
        prop::collection::vec(op_strategy(usize::try_from(hello.max_file_size).unwrap_or(usize::MAX)), 1..=24),
    );
    let seed = ctx.target.seed;
    let mut seed_bytes = [0u8; 32];
    for (i, chunk) in seed_bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
    let soft_deadline = ctx.deadline - (ctx.target.case_timeout / 5).max(Duration::from_secs(1));
    let config = Config {
        cases: ctx.target.model_cases.max(1),
        failure_persistence: None,
        max_shrink_iters: 512,
        max_shrink_time: u32::try_from(soft_deadline.saturating_duration_since(Instant::now()).as_millis() / 2)
            .unwrap_or(u32::MAX),
        max_global_rejects: 10_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let ran = Cell::new(0u32);
    let skipped = Cell::new(0u32);
    let result = runner.run(&strategy, |(suffixes, ops)| {
        if Instant::now() >= soft_deadline {
            skipped.set(skipped.get() + 1);
            return Ok(());
        }
        ran.set(ran.get() + 1);
        let pool: Vec<String> = suffixes.iter().map(|s| format!("{}{s}", ctx.prefix)).collect();
        let steps = resolve(&pool, &ops);
        run_session(ctx, &steps, resume).map_err(|m| TestCaseError::fail(m.encode()))
    });
    match result {
        Ok(()) if ran.get() == 0 => Ok(Outcome::HarnessError("no session ran before the case deadline".into())),
        Ok(()) => Ok(Outcome::Pass),
        Err(TestError::Abort(reason)) => Ok(Outcome::HarnessError(format!("proptest gave up: {reason}"))),
        Err(TestError::Fail(reason, (suffixes, ops))) => {
            let pool: Vec<String> = suffixes.iter().map(|s| format!("{}{s}", ctx.prefix)).collect();
            let steps = resolve(&pool, &ops);
            let (requirement, at, message) = Mismatch::decode(reason.message())
                .unwrap_or_else(|| ("REQ-1".to_owned(), steps.len().saturating_sub(1), reason.message().to_owned()));
            let mut listing = String::new();
            for (i, s) in steps.iter().enumerate().take(at + 1) {
                let _ = write!(listing, "\n        {i}: {}", s.to_string().replace(&ctx.prefix, "${P}"));
            }
            let failure = Failure {
                requirement: Some(requirement.clone()),
                message: format!(
                    "seed {seed}: a generated session failed; shrunk to {} operations, step {at}: {message}{listing}",
                    at + 1
                ),
                transcript: Some(transcript(
                    seed,
                    &ctx.prefix,
                    &steps[..=at.min(steps.len().saturating_sub(1))],
                    resume,
                    &requirement,
                )),
                ..Failure::default()
            };
            Ok(Outcome::Fail(failure))
        }
    }
}

fn mismatch(requirement: &'static str, step: usize, message: impl Into<String>) -> Mismatch {
    Mismatch { requirement, step, message: message.into() }
}

/// Deletes every file under the case's prefix (each session starts and ends empty).
fn clear(conn: &mut Conn, prefix: &str) -> Result<(), String> {
    let Reply::List(entries) = conn.call(&Request::List).map_err(|p| format!("LIST: {p}"))? else {
        return Err("LIST got no list".into());
    };
    for e in entries.into_iter().filter(|e| e.name.as_str().starts_with(prefix)) {
        conn.call(&Request::Delete(e.name.clone())).map_err(|p| format!("DELETE {}: {p}", e.name))?;
    }
    Ok(())
}

fn run_session(ctx: &Ctx, steps: &[Step], resume: bool) -> Result<(), Mismatch> {
    let mut conn = ctx.conn().map_err(|p| mismatch("REQ-1", 0, format!("handshake: {p}")))?;
    clear(&mut conn, &ctx.prefix).map_err(|e| mismatch("REQ-1", 0, format!("clearing before the session: {e}")))?;
    let mut model = Model::new();
    let result =
        steps.iter().enumerate().try_for_each(|(i, s)| run_step(&mut conn, &mut model, i, s, resume, &ctx.prefix));
    let _ = clear(&mut conn, &ctx.prefix);
    result
}

fn name_of(n: &str, i: usize) -> Result<Name, Mismatch> {
    Name::parse(n).map_err(|e| mismatch("REQ-1", i, format!("harness: generated name {n:?} invalid: {e}")))
}

fn run_step(
    conn: &mut Conn,
    model: &mut Model,
    i: usize,
    step: &Step,
    resume: bool,
    prefix: &str,
) -> Result<(), Mismatch> {
    let call = |conn: &mut Conn, r: &Request, data: &[u8], req: &'static str| {
        conn.send(r, data).and_then(|()| conn.reply()).map_err(|p| mismatch(req, i, format!("{step}: {p}")))
    };
    let bad = |req: &'static str, got: &Reply, want: &str| {
        mismatch(req, i, format!("{step}: got {}; expected {want}", got.describe()))
    };
    match step {
        Step::List => {
            let got = call(conn, &Request::List, &[], "LIST-1")?;
            let Reply::List(entries) = &got else { return Err(bad("LIST-1", &got, "a list")) };
            for w in entries.windows(2) {
                if w[0].name.as_str().as_bytes() >= w[1].name.as_str().as_bytes() {
                    return Err(mismatch("LIST-2", i, format!("LIST: {} before {}", w[0].name, w[1].name)));
                }
            }
            let ours: Vec<_> = entries.iter().filter(|e| e.name.as_str().starts_with(prefix)).collect();
            let names: Vec<&str> = ours.iter().map(|e| e.name.as_str()).collect();
            let want: Vec<&str> = model.keys().map(String::as_str).collect();
            if names != want {
                return Err(mismatch("LIST-1", i, format!("LIST shows {names:?}; the model holds {want:?}")));
            }
            for e in ours {
                let content = &model[e.name.as_str()];
                if e.size != content.len() as u64 {
                    return Err(mismatch(
                        "LIST-1",
                        i,
                        format!("LIST: {} has size {}; expected {}", e.name, e.size, content.len()),
                    ));
                }
                if e.md5.is_some_and(|d| d != Digest::of(content)) {
                    return Err(mismatch("LIST-3", i, format!("LIST: {} has a wrong digest", e.name)));
                }
            }
        }
        Step::Stat(n) => {
            let got = call(conn, &Request::Stat(name_of(n, i)?), &[], "STAT-1")?;
            match (model.get(n), &got) {
                (None, r) if r.code() == Some(ErrorCode::NOT_FOUND.0) => {}
                (None, r) => return Err(bad("STAT-2", r, "NOT_FOUND")),
                (Some(c), Reply::Stat(e))
                    if e.name.as_str() == n && e.size == c.len() as u64 && e.md5.is_none_or(|d| d == Digest::of(c)) => {
                }
                (Some(c), r) => return Err(bad("STAT-1", r, &format!("the entry, {} bytes", c.len()))),
            }
        }
        Step::Get(n, offset) => {
            let got = call(conn, &Request::Get { name: name_of(n, i)?, offset: *offset }, &[], "GET-1")?;
            let want_offset = usize::try_from(*offset).unwrap_or(usize::MAX);
            match (model.get(n), &got) {
                (_, r) if *offset > 0 && !resume => {
                    if r.code() != Some(ErrorCode::BAD_OFFSET.0) {
                        return Err(bad("GET-4", r, "BAD_OFFSET (no RESUME)"));
                    }
                }
                (None, r) if r.code() == Some(ErrorCode::NOT_FOUND.0) => {}
                (None, r) => return Err(bad("GET-3", r, "NOT_FOUND")),
                (Some(c), r) if want_offset > c.len() => {
                    if r.code() != Some(ErrorCode::BAD_OFFSET.0) {
                        return Err(bad("GET-4", r, "BAD_OFFSET"));
                    }
                }
                (Some(c), Reply::Get { frame, data, .. }) => {
                    if frame.size != c.len() as u64 || frame.md5 != Digest::of(c) {
                        return Err(mismatch(
                            "GET-2",
                            i,
                            format!(
                                "{step}: the frame announces {} bytes, {}; the file has {} bytes, {}",
                                frame.size,
                                frame.md5,
                                c.len(),
                                Digest::of(c)
                            ),
                        ));
                    }
                    if data[..] != c[want_offset..] {
                        return Err(mismatch(
                            "GET-1",
                            i,
                            format!(
                                "{step}: {} data bytes differ from the file's {}",
                                data.len(),
                                c.len() - want_offset
                            ),
                        ));
                    }
                }
                (Some(_), r) => return Err(bad("GET-1", r, "the file")),
            }
        }
        Step::Put(n, mode, content) => {
            let data = content.bytes();
            let name = name_of(n, i)?;
            let head = super::support::put_head(&name, *mode, &data, None);
            let got = call(conn, &head, &data, "PUT-2")?;
            let exists = model.contains_key(n);
            match (mode, &got) {
                (PutMode::CreateOnly, r) if exists => {
                    if r.code() != Some(ErrorCode::EXISTS.0) {
                        return Err(bad("PUT-1", r, "EXISTS"));
                    }
                }
                (_, Reply::Put { replaced }) if *replaced == exists => {
                    model.insert(n.clone(), data);
                }
                (_, r) => return Err(bad("PUT-2", r, &format!("PUT ok, replaced: {exists}"))),
            }
        }
        Step::Delete(n) => {
            let got = call(conn, &Request::Delete(name_of(n, i)?), &[], "DEL-1")?;
            match (model.remove(n), &got) {
                (Some(_), Reply::Delete) => {}
                (Some(_), r) => return Err(bad("DEL-1", r, "DELETE ok")),
                (None, r) if r.code() == Some(ErrorCode::NOT_FOUND.0) => {}
                (None, r) => return Err(bad("DEL-2", r, "NOT_FOUND")),
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The transcript of a failing session

fn quoted_name(name: &str, prefix: &str) -> String {
    let rest = name.strip_prefix(prefix).unwrap_or(name);
    let json = serde_json::to_string(rest).unwrap_or_else(|_| "\"\"".into());
    format!("name:\"${{P}}{}", &json[1..])
}

fn data_fields(content: &Content, from: usize) -> String {
    match content {
        Content::Fill(n, b) if n > &from => format!(" fill:{}:0x{b:02x}", n - from),
        Content::Bytes(b) if b.len() > from => format!(" x:{}", hex::encode(&b[from..])),
        _ => String::new(),
    }
}

fn md5_field(data: &[u8]) -> String {
    format!("\"{}\"", Digest::of(data))
}

fn error_line(code: ErrorCode) -> String {
    format!("S: u8:0xff u16:0x{:04x} str16:*  # {code}", code.0)
}

/// A transcript (spec/README.md format) of `steps` with the model's expected replies. LISTs are
/// left out, except a last one: the server may hold other files, and a transcript cannot skip a
/// reply of unknown length in the middle of a connection.
pub fn transcript(seed: u64, prefix: &str, steps: &[Step], resume: bool, requirement: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# A session generated by model.sessions (seed {seed}) that the server failed, shrunk.");
    let _ =
        writeln!(out, "# The failing run's ${{P}} was {prefix:?}. Replay it against a server whose namespace holds");
    let _ = writeln!(
        out,
        "# no ${{P}} files (a final LIST expects exactly the session's files: an otherwise empty server)."
    );
    let _ = writeln!(out, "@title    Generated session, seed {seed}");
    let _ = writeln!(out, "@requires {requirement}");
    let _ = writeln!(out, "@role     write");
    if resume {
        let _ = writeln!(out, "@capability RESUME");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "C: x:4645525259 u16:1 u16:1 str16:\"${{TOKEN}}\"");
    let _ = writeln!(out, "S: u8:0x80 u16:1 u8:* u32:* u32:* u64:* u32:* u32:* u32:* u32:*");
    let mut model: BTreeMap<String, Content> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        match step {
            Step::List if !last => continue,
            Step::List => {
                let _ = writeln!(out, "C: u8:0x01  # step {i}: LIST");
                let _ = writeln!(out, "S: u8:0x81 u32:{}", model.len());
                for (n, c) in &model {
                    let data = c.bytes();
                    let _ = writeln!(
                        out,
                        "   {} u64:{} i64:* opt:{}",
                        quoted_name(n, prefix),
                        data.len(),
                        md5_field(&data)
                    );
                }
            }
            Step::Stat(n) => {
                let _ = writeln!(out, "C: u8:0x02 {}  # step {i}", quoted_name(n, prefix));
                match model.get(n) {
                    Some(c) => {
                        let data = c.bytes();
                        let _ = writeln!(
                            out,
                            "S: u8:0x82 {} u64:{} i64:* opt:{}",
                            quoted_name(n, prefix),
                            data.len(),
                            md5_field(&data)
                        );
                    }
                    None => {
                        let _ = writeln!(out, "{}", error_line(ErrorCode::NOT_FOUND));
                    }
                }
            }
            Step::Get(n, offset) => {
                let _ = writeln!(out, "C: u8:0x03 {} u64:{offset}  # step {i}", quoted_name(n, prefix));
                let from = usize::try_from(*offset).unwrap_or(usize::MAX);
                match model.get(n) {
                    _ if *offset > 0 && !resume => {
                        let _ = writeln!(out, "{}", error_line(ErrorCode::BAD_OFFSET));
                    }
                    None => {
                        let _ = writeln!(out, "{}", error_line(ErrorCode::NOT_FOUND));
                    }
                    Some(c) if from > c.bytes().len() => {
                        let _ = writeln!(out, "{}", error_line(ErrorCode::BAD_OFFSET));
                    }
                    Some(c) => {
                        let data = c.bytes();
                        let _ = writeln!(
                            out,
                            "S: u8:0x83 u64:{offset} {} u64:{} {}{}",
                            quoted_name(n, prefix),
                            data.len(),
                            md5_field(&data),
                            data_fields(c, from)
                        );
                    }
                }
            }
            Step::Put(n, mode, content) => {
                let data = content.bytes();
                let _ = writeln!(
                    out,
                    "C: u8:0x04 u8:{} {} u64:{} {}{}  # step {i}",
                    *mode as u8,
                    quoted_name(n, prefix),
                    data.len(),
                    md5_field(&data),
                    data_fields(content, 0)
                );
                let exists = model.contains_key(n);
                if *mode == PutMode::CreateOnly && exists {
                    let _ = writeln!(out, "{}", error_line(ErrorCode::EXISTS));
                } else {
                    let _ = writeln!(out, "S: u8:0x84 u8:{}", u8::from(exists));
                    model.insert(n.clone(), content.clone());
                }
            }
            Step::Delete(n) => {
                let _ = writeln!(out, "C: u8:0x05 {}  # step {i}", quoted_name(n, prefix));
                if model.remove(n).is_some() {
                    let _ = writeln!(out, "S: u8:0x85");
                } else {
                    let _ = writeln!(out, "{}", error_line(ErrorCode::NOT_FOUND));
                }
            }
        }
    }
    let _ = writeln!(out, "C: u8:0x08");
    let _ = writeln!(out, "S: u8:0x88");
    let _ = writeln!(out, "S: close");
    out
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;

    use super::*;

    fn sample(prefix: &str) -> Vec<Step> {
        let n = |s: &str| format!("{prefix}{s}");
        vec![
            Step::Put(n("a"), PutMode::Overwrite, Content::Bytes(b"EOF\0\xff".to_vec())),
            Step::Put(n("\u{e9} x"), PutMode::CreateOnly, Content::Fill(70_000, 7)),
            Step::Put(n("a"), PutMode::CreateOnly, Content::Bytes(Vec::new())),
            Step::List,
            Step::Stat(n("b")),
            Step::Get(n("a"), 2),
            Step::Get(n("a"), 9),
            Step::Get(n("\u{e9} x"), 0),
            Step::Put(n("a"), PutMode::Overwrite, Content::Bytes(Vec::new())),
            Step::Delete(n("a")),
            Step::Delete(n("a")),
            Step::Stat(n("\u{e9} x")),
            Step::List,
        ]
    }

    #[test]
    fn a_failure_transcript_parses_and_renders() {
        let text = transcript(7, "cfx-1-", &sample("cfx-1-"), true, "GET-1");
        let t = ferry_proto::transcript::Transcript::parse(&text).expect("parses");
        assert_eq!(t.requires, vec!["GET-1".to_owned()]);
        let vars = ferry_proto::transcript::Vars { prefix: "zz-".into(), token: String::new() };
        let rendered = t.render(&vars).expect("renders");
        assert_eq!(rendered.len(), 1);
        assert!(text.contains("fill:70000:0x07"), "{text}");
        assert!(text.contains("name:\"${P}\u{e9} x\""), "{text}");
        // Only the last LIST is kept.
        assert_eq!(text.matches("C: u8:0x01").count(), 1, "{text}");
    }

    #[test]
    fn resolve_keeps_offsets_within_size_plus_one() {
        let pool = vec!["p-a".to_owned()];
        // With one name, every index picks it.
        let mut runner = TestRunner::deterministic();
        let mut idx = || any::<Index>().new_tree(&mut runner).expect("an index").current();
        let ops = vec![
            Op::Put(idx(), PutMode::Overwrite, Content::Bytes(vec![1, 2, 3])),
            Op::GetFrom(idx(), u64::MAX),
            Op::GetFrom(idx(), 4),
        ];
        let steps = resolve(&pool, &ops);
        assert!(matches!(&steps[1], Step::Get(_, o) if *o <= 4));
        assert!(matches!(&steps[2], Step::Get(_, 4)));
    }
}
