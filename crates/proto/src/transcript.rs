//! Transcripts (spec/README.md, "Transcripts"): recorded sessions as text, and the matcher that
//! judges a server's bytes against them.
//!
//! A transcript is parsed once into a template; [`Transcript::render`] substitutes the run's
//! placeholders (`${P}`, `${TOKEN}`) and yields concrete bytes to send and patterns to match. The
//! replay itself (sockets, delivery variations, deadlines) belongs to whoever drives it:
//! conformance over TCP, ferry-proto's tests in memory.

use std::fmt;

use crate::digest::Digest;
use crate::message::Role;

/// A transcript, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    pub title: String,
    /// The requirement ids the transcript checks (`@requires`).
    pub requires: Vec<String>,
    /// The least role it needs (`@role`, default read).
    pub role: Role,
    /// Capabilities the server must announce (`@capability`).
    pub capabilities: Vec<String>,
    /// Whether it uses the legacy profile (`@legacy`).
    pub legacy: bool,
    /// One entry per connection, in order (`--- connection` separates them).
    pub connections: Vec<Vec<Step>>,
}

/// One step of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The line it starts on, for reports.
    pub line: usize,
    /// Requirement ids from the step's comment.
    pub requirements: Vec<String>,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// `C:` — bytes the client sends, one message.
    Send(Vec<Field>),
    /// `S:` — bytes the server must send.
    Expect(Vec<Field>),
    /// `S: close` — the server must close with nothing more.
    ExpectClose,
}

/// A field of a step line, before placeholders are substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `u8:N` … `u64:N`, `i64:N`: width in bytes and the value's big-endian bytes.
    Int { width: usize, value: u64 },
    /// `x:HEX`.
    Hex(Vec<u8>),
    /// `"text"`.
    Text(String),
    /// `str8:"t"`, `str16:"t"`, `str32:"t"`, `name:"t"`: length width and the text.
    Prefixed { width: usize, text: String },
    /// `md5:"t"`: the hex digest of the text.
    Md5(String),
    /// `fill:N:B`.
    Fill { count: usize, byte: u8 },
    /// `*:N` or `u8:*`…: any N bytes.
    Any(usize),
    /// `str8:*`…`name:*`: a length of that width and that many bytes of anything.
    AnyPrefixed(usize),
    /// `rest`: anything up to the close.
    Rest,
    /// `opt:F`: a presence byte, `0x00`, or `0x01` followed by what F matches.
    Opt(Box<Field>),
}

/// A syntax error in a transcript.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Values substituted for placeholders.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// `${P}`: the run's unique name prefix.
    pub prefix: String,
    /// `${TOKEN}`: the token the runner was given, or empty.
    pub token: String,
}

impl Vars {
    fn apply(&self, text: &str) -> String {
        text.replace("${P}", &self.prefix).replace("${TOKEN}", &self.token)
    }
}

/// A pattern piece of a rendered `S:` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(Vec<u8>),
    Any(usize),
    /// A big-endian length of this width, then that many bytes of anything.
    AnyPrefixed(usize),
    /// Anything up to EOF.
    Rest,
    /// A presence byte: `0x00`, or `0x01` and then these patterns.
    Opt(Vec<Pattern>),
}

/// A step with its placeholders substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// Bytes to send, and the offsets where one field ends and the next begins (for delivery
    /// variations that split at every field boundary).
    Send {
        bytes: Vec<u8>,
        boundaries: Vec<usize>,
        line: usize,
    },
    Expect {
        patterns: Vec<Pattern>,
        line: usize,
    },
    ExpectClose {
        line: usize,
    },
}

impl Transcript {
    /// Parses a transcript's text.
    ///
    /// # Errors
    /// The first line that breaks the format.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut t = Transcript {
            title: String::new(),
            requires: Vec::new(),
            role: Role::Read,
            capabilities: Vec::new(),
            legacy: false,
            connections: vec![Vec::new()],
        };
        // Strip each physical line's comment (keeping its requirement ids), then join
        // continuation lines (leading whitespace) onto the step before them.
        let mut lines: Vec<(usize, String, Vec<String>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let (content, ids) = split_comment(raw);
            let trimmed = content.trim();
            if trimmed.is_empty() {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                match lines.last_mut() {
                    Some((_, prev, prev_ids)) if prev.starts_with("C:") || prev.starts_with("S:") => {
                        prev.push(' ');
                        prev.push_str(trimmed);
                        prev_ids.extend(ids);
                    }
                    _ => {
                        let message = "continuation line with nothing to continue".into();
                        return Err(ParseError { line: n, message });
                    }
                }
            } else {
                lines.push((n, trimmed.to_owned(), ids));
            }
        }
        for (line, content, ids) in lines {
            let err = |message: String| ParseError { line, message };
            if let Some(header) = content.strip_prefix('@') {
                let (key, value) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
                let value = value.trim();
                match key {
                    "title" => t.title = value.to_owned(),
                    "requires" => t.requires.extend(value.split_whitespace().map(str::to_owned)),
                    "role" => t.role = value.parse().map_err(err)?,
                    "capability" => t.capabilities.extend(value.split_whitespace().map(str::to_owned)),
                    "legacy" => t.legacy = true,
                    other => return Err(err(format!("unknown header @{other}"))),
                }
            } else if content.starts_with("---") {
                if content.trim_start_matches('-').trim() != "connection" {
                    return Err(err(format!("unknown separator {content:?}")));
                }
                t.connections.push(Vec::new());
            } else if let Some(rest) = content.strip_prefix("C:") {
                let fields = parse_fields(rest, false).map_err(err)?;
                push(&mut t, Step { line, requirements: ids, kind: StepKind::Send(fields) });
            } else if let Some(rest) = content.strip_prefix("S:") {
                let kind = if rest.trim() == "close" {
                    StepKind::ExpectClose
                } else {
                    // spec/README.md: `rest` belongs to a connection's last `S:` line, since
                    // it reads to the close.
                    let after_rest = t.connections.last().is_some_and(|steps| {
                        steps.iter().any(|s| matches!(&s.kind, StepKind::Expect(f) if f.last() == Some(&Field::Rest)))
                    });
                    if after_rest {
                        return Err(err("an `S:` line after `rest`, which reads to the close".into()));
                    }
                    StepKind::Expect(parse_fields(rest, true).map_err(err)?)
                };
                push(&mut t, Step { line, requirements: ids, kind });
            } else {
                return Err(err(format!("not a header, step or separator: {content:?}")));
            }
        }
        if t.connections.iter().all(Vec::is_empty) {
            return Err(ParseError { line: 0, message: "no steps".into() });
        }
        Ok(t)
    }

    /// The transcript's steps with placeholders substituted, per connection.
    ///
    /// # Errors
    /// A text that, substituted, no longer fits its length field.
    pub fn render(&self, vars: &Vars) -> Result<Vec<Vec<Rendered>>, ParseError> {
        self.connections.iter().map(|steps| steps.iter().map(|s| render_step(s, vars)).collect()).collect()
    }

    /// Every requirement id cited, in the header or by a step.
    pub fn all_requirements(&self) -> Vec<String> {
        let mut all: Vec<String> = self.requires.clone();
        for step in self.connections.iter().flatten() {
            all.extend(step.requirements.iter().cloned());
        }
        all.sort();
        all.dedup();
        all
    }
}

fn push(t: &mut Transcript, step: Step) {
    if let Some(conn) = t.connections.last_mut() {
        conn.push(step);
    }
}

fn render_step(step: &Step, vars: &Vars) -> Result<Rendered, ParseError> {
    let line = step.line;
    let err = |message: String| ParseError { line, message };
    Ok(match &step.kind {
        StepKind::ExpectClose => Rendered::ExpectClose { line },
        StepKind::Send(fields) => {
            let mut bytes = Vec::new();
            let mut boundaries = Vec::new();
            for f in fields {
                if let Pattern::Exact(b) = render_field(f, vars).map_err(err)? {
                    bytes.extend(b);
                }
                boundaries.push(bytes.len());
            }
            boundaries.pop();
            Rendered::Send { bytes, boundaries, line }
        }
        StepKind::Expect(fields) => {
            let mut patterns: Vec<Pattern> = Vec::new();
            for f in fields {
                match (render_field(f, vars).map_err(err)?, patterns.last_mut()) {
                    (Pattern::Exact(b), Some(Pattern::Exact(prev))) => prev.extend(b),
                    (p, _) => patterns.push(p),
                }
            }
            Rendered::Expect { patterns, line }
        }
    })
}

fn render_field(f: &Field, vars: &Vars) -> Result<Pattern, String> {
    let exact = Pattern::Exact;
    Ok(match f {
        Field::Int { width, value } => exact(value.to_be_bytes()[8 - width..].to_vec()),
        Field::Hex(b) => exact(b.clone()),
        Field::Text(t) => exact(vars.apply(t).into_bytes()),
        Field::Prefixed { width, text } => {
            let text = vars.apply(text);
            if *width < 8 && (text.len() as u64) >> (width * 8) != 0 {
                return Err(format!("a text of {} bytes does not fit a {width}-byte length", text.len()));
            }
            let mut b = (text.len() as u64).to_be_bytes()[8 - width..].to_vec();
            b.extend(text.as_bytes());
            exact(b)
        }
        Field::Md5(t) => exact(Digest::of(vars.apply(t).as_bytes()).to_hex().to_vec()),
        Field::Fill { count, byte } => exact(vec![*byte; *count]),
        Field::Any(n) => Pattern::Any(*n),
        Field::AnyPrefixed(w) => Pattern::AnyPrefixed(*w),
        Field::Rest => Pattern::Rest,
        Field::Opt(inner) => Pattern::Opt(vec![render_field(inner, vars)?]),
    })
}

/// Splits a line into its content and the requirement ids (`[GET-1]`) of its `#` comment; a `#`
/// inside a quoted string is text.
fn split_comment(raw: &str) -> (&str, Vec<String>) {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in raw.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '#' if !in_quotes => {
                let ids = raw[i + 1..]
                    .split('[')
                    .skip(1)
                    .filter_map(|s| s.split_once(']').map(|(id, _)| id.to_owned()))
                    .filter(|id| id.contains('-'))
                    .collect();
                return (&raw[..i], ids);
            }
            _ => {}
        }
    }
    (raw, Vec::new())
}

/// Splits a step line's content into fields.
fn parse_fields(line: &str, expect: bool) -> Result<Vec<Field>, String> {
    let mut fields = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (token, after) = next_token(rest)?;
        rest = after.trim_start();
        fields.push(parse_field(&token, expect)?);
    }
    // spec/README.md: `rest` is the last field of its line; a field after it could never be
    // matched, and the step would pass without checking it.
    if fields.iter().rev().skip(1).any(|f| *f == Field::Rest) {
        return Err("`rest` must be the last field of its line".into());
    }
    Ok(fields)
}

/// The next whitespace-separated token; quoted strings (JSON syntax) may hold spaces and `#`.
fn next_token(s: &str) -> Result<(String, &str), String> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return Ok((s[..i].to_owned(), &s[i..])),
            _ => {}
        }
    }
    if in_quotes {
        return Err("unterminated string".into());
    }
    Ok((s.to_owned(), ""))
}

fn quoted(s: &str) -> Result<String, String> {
    serde_json::from_str::<String>(s).map_err(|e| format!("bad string {s:?}: {e}"))
}

fn number(s: &str) -> Result<u64, String> {
    let parsed = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).map_err(|e| e.to_string())
    } else if s.starts_with('-') {
        s.parse::<i64>().map(|v| v as u64).map_err(|e| e.to_string())
    } else {
        s.parse::<u64>().map_err(|e| e.to_string())
    };
    parsed.map_err(|e| format!("bad number {s:?}: {e}"))
}

fn parse_field(token: &str, expect: bool) -> Result<Field, String> {
    let wildcard_ok = |f: Field| if expect { Ok(f) } else { Err(format!("wildcard {token:?} in a C: line")) };
    if token == "rest" {
        return wildcard_ok(Field::Rest);
    }
    if let Some(inner) = token.strip_prefix("opt:") {
        let inner = parse_field(inner, expect)?;
        if inner == Field::Rest {
            return Err("`rest` cannot be inside `opt:`".into());
        }
        return wildcard_ok(Field::Opt(Box::new(inner)));
    }
    if token.starts_with('"') {
        return Ok(Field::Text(quoted(token)?));
    }
    let (kind, value) = token.split_once(':').ok_or_else(|| format!("unknown field {token:?}"))?;
    let width = match kind {
        "u8" => Some(1),
        "u16" => Some(2),
        "u32" => Some(4),
        "u64" | "i64" => Some(8),
        _ => None,
    };
    if let Some(width) = width {
        if value == "*" {
            return wildcard_ok(Field::Any(width));
        }
        let v = number(value)?;
        if width < 8 && v >> (width * 8) != 0 {
            return Err(format!("{value} does not fit {kind}"));
        }
        return Ok(Field::Int { width, value: v });
    }
    let prefixed = match kind {
        "str8" => Some(1),
        "str16" => Some(2),
        "str32" | "name" => Some(4),
        _ => None,
    };
    if let Some(width) = prefixed {
        if value == "*" {
            return wildcard_ok(Field::AnyPrefixed(width));
        }
        return Ok(Field::Prefixed { width, text: quoted(value)? });
    }
    match kind {
        "x" => hex::decode(value).map(Field::Hex).map_err(|e| format!("bad hex {value:?}: {e}")),
        "md5" if value == "*" => wildcard_ok(Field::Any(32)),
        "md5" => Ok(Field::Md5(quoted(value)?)),
        "*" => wildcard_ok(Field::Any(value.parse().map_err(|e| format!("bad count {value:?}: {e}"))?)),
        "fill" => {
            let (count, byte) = value.split_once(':').ok_or("fill needs N:B")?;
            let count = usize::try_from(number(count)?).map_err(|e| e.to_string())?;
            let byte = u8::try_from(number(byte)?).map_err(|e| e.to_string())?;
            Ok(Field::Fill { count, byte })
        }
        other => Err(format!("unknown field kind {other:?}")),
    }
}

/// How received bytes compare with an `S:` step's patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// All patterns matched, using this many bytes.
    Complete(usize),
    /// So far so good; more bytes are needed (or EOF, for `rest`).
    NeedMore,
    /// A byte differs.
    Mismatch(Mismatch),
}

/// Where and how received bytes differ from what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Offset of the first differing byte within the step's bytes.
    pub offset: usize,
    /// The bytes the step expected from that pattern on (exact ones; wildcards shown as nothing).
    pub expected: Vec<u8>,
    /// The bytes received from that pattern on.
    pub received: Vec<u8>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes differ at offset {}", self.offset)
    }
}

/// Matches `received` (the bytes since the step began) against `patterns`; `eof` says the
/// server has closed, which completes a trailing `rest`.
pub fn match_step(patterns: &[Pattern], received: &[u8], eof: bool) -> Match {
    match match_from(patterns, received, 0, eof) {
        Ok(pos) => Match::Complete(pos),
        Err(m) => m,
    }
}

/// Matches `patterns` from `pos`; the position after them, or why not.
fn match_from(patterns: &[Pattern], received: &[u8], mut pos: usize, eof: bool) -> Result<usize, Match> {
    for p in patterns {
        match p {
            Pattern::Exact(want) => {
                let have = &received[pos.min(received.len())..];
                let n = want.len().min(have.len());
                if let Some(i) = (0..n).find(|&i| want[i] != have[i]) {
                    let m = Mismatch { offset: pos + i, expected: want.clone(), received: have.to_vec() };
                    return Err(Match::Mismatch(m));
                }
                if have.len() < want.len() {
                    return Err(Match::NeedMore);
                }
                pos += want.len();
            }
            Pattern::Any(n) => {
                // `*:N` may name any count: saturate rather than wrap past the end.
                let end = pos.saturating_add(*n);
                if received.len() < end {
                    return Err(Match::NeedMore);
                }
                pos = end;
            }
            Pattern::AnyPrefixed(width) => {
                if received.len() < pos + width {
                    return Err(Match::NeedMore);
                }
                let len = received[pos..pos + width].iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
                let end = (pos + width).saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                if received.len() < end {
                    return Err(Match::NeedMore);
                }
                pos = end;
            }
            Pattern::Opt(inner) => match received.get(pos) {
                None => return Err(Match::NeedMore),
                Some(0) => pos += 1,
                Some(1) => pos = match_from(inner, received, pos + 1, eof)?,
                Some(_) => {
                    let m = Mismatch { offset: pos, expected: vec![0x01], received: received[pos..].to_vec() };
                    return Err(Match::Mismatch(m));
                }
            },
            Pattern::Rest => {
                return if eof { Ok(received.len()) } else { Err(Match::NeedMore) };
            }
        }
    }
    Ok(pos)
}

/// The total length of patterns with no wildcard of unknown length, if known: how many bytes a
/// step needs at least.
pub fn min_len(patterns: &[Pattern]) -> usize {
    patterns
        .iter()
        .map(|p| match p {
            Pattern::Exact(b) => b.len(),
            Pattern::Any(n) => *n,
            Pattern::AnyPrefixed(w) => *w,
            Pattern::Rest => 0,
            Pattern::Opt(_) => 1,
        })
        .fold(0, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
@title   Upload a file
@requires PUT-1 GET-1
@role    write

C: x:4645525259 u16:1 u16:1 str16:"${TOKEN}"          # [HELLO-1] hello
S: u8:0x80 u16:1 u8:* u32:* u32:* u64:* u32:* u32:* u32:* u32:*
C: u8:0x04 u8:0 name:"${P}a.txt" u64:2 md5:"hi"
   "hi"                                                 # [PUT-1] continued
S: u8:0xFF u16:0x0201 str16:*
S: close
--- connection
C: name:"${P}a.txt"
S: "ERROR" rest
"#;

    #[test]
    fn parses_and_renders_the_sample() {
        let t = Transcript::parse(SAMPLE).unwrap();
        assert_eq!(t.role, Role::Write);
        assert_eq!(t.connections.len(), 2);
        assert_eq!(t.all_requirements(), ["GET-1", "HELLO-1", "PUT-1"]);
        let r = t.render(&Vars { prefix: "p-".into(), token: String::new() }).unwrap();
        let Rendered::Send { bytes, boundaries, .. } = &r[0][2] else { panic!() };
        let mut want = vec![0x04, 0x00, 0, 0, 0, 7];
        want.extend(b"p-a.txt");
        want.extend(2u64.to_be_bytes());
        want.extend(Digest::of(b"hi").to_hex());
        want.extend(b"hi");
        assert_eq!(bytes, &want);
        assert_eq!(boundaries, &[1, 2, 13, 21, 53]);
        assert_eq!(r[0][4], Rendered::ExpectClose { line: 11 });
    }

    #[test]
    fn matcher_handles_wildcards_prefixes_and_rest() {
        let pats = vec![Pattern::Exact(vec![0xFF, 0x02, 0x01]), Pattern::AnyPrefixed(2)];
        assert_eq!(match_step(&pats, &[0xFF, 0x02], false), Match::NeedMore);
        assert_eq!(match_step(&pats, &[0xFF, 0x02, 0x01, 0, 2, b'h'], false), Match::NeedMore);
        assert_eq!(match_step(&pats, &[0xFF, 0x02, 0x01, 0, 2, b'h', b'i', 9], false), Match::Complete(7));
        assert!(matches!(match_step(&pats, &[0xFF, 0x02, 0x00], false), Match::Mismatch(m) if m.offset == 2));
        let rest = vec![Pattern::Exact(b"ERROR".to_vec()), Pattern::Rest];
        assert_eq!(match_step(&rest, b"ERRORxyz", false), Match::NeedMore);
        assert_eq!(match_step(&rest, b"ERRORxyz", true), Match::Complete(8));
        let opt = vec![Pattern::Opt(vec![Pattern::Exact(b"ab".to_vec())]), Pattern::Exact(vec![9])];
        assert_eq!(match_step(&opt, &[0, 9], false), Match::Complete(2));
        assert_eq!(match_step(&opt, &[1, b'a', b'b', 9], false), Match::Complete(4));
        assert!(matches!(match_step(&opt, &[2], false), Match::Mismatch(_)));
        assert!(matches!(match_step(&opt, &[1, b'x'], false), Match::Mismatch(_)));
    }

    #[test]
    fn a_comment_does_not_swallow_a_continuation_and_lengths_must_fit() {
        let t = Transcript::parse("C: u8:1 # [A-1] first\n   u8:2 # [B-2]\n").unwrap();
        let want = vec![Field::Int { width: 1, value: 1 }, Field::Int { width: 1, value: 2 }];
        assert_eq!(t.connections[0][0].kind, StepKind::Send(want));
        assert_eq!(t.connections[0][0].requirements, ["A-1", "B-2"]);
        let long = format!("C: str8:\"{}\"\n", "x".repeat(300));
        assert!(Transcript::parse(&long).unwrap().render(&Vars::default()).is_err());
        assert!(Transcript::parse("C: i64:-9223372036854775808\n").is_ok());
        assert!(Transcript::parse("S: close u8:1\n").is_err());
    }

    #[test]
    fn wildcards_are_refused_in_client_lines() {
        assert!(Transcript::parse("C: u8:*\n").is_err());
        assert!(Transcript::parse("C: rest\n").is_err());
    }
}
