//! Every transcript of spec/transcripts/, replayed against the server byte for byte modulo its
//! placeholders, under five deliveries of the client's bytes. The verdict must not change with
//! the delivery (`[ENC-5]`).
//!
//! The transcripts are written for a server with default settings (spec/transcripts/README.md).
//! Where the server's hello, or a probe, shows settings PROTOCOL.md allows under which a
//! transcript's bytes call for other replies — shorter names, smaller files, no uploads, no
//! anonymous access — the transcript is unsupported, and says why; the run's short name prefix
//! (`runner`) keeps most of them within short names.

use std::time::{Duration, Instant};

use ferry_proto::limits::ReadLimits;
use ferry_proto::transcript::{match_step, Match, Pattern, Rendered, Transcript, Vars};
use ferry_proto::vector::{self, Direction, End, Start};
use ferry_proto::{Capabilities, ErrorCode};

use crate::case::{Case, Ending, Failure, Needs, Outcome, Profile};
use crate::context::Ctx;
use crate::wire::{Problem, Raw};

/// How the client's bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each group of consecutive `C:` lines in one write.
    Whole,
    /// One byte per write.
    Bytewise,
    /// One write per field.
    Fields,
    /// All of a connection's client bytes in one write, before any reply is read.
    Pipelined,
    /// Whole writes, but replies read a few bytes at a time.
    SlowReader,
}

impl Delivery {
    pub const ALL: [Delivery; 5] = [Self::Whole, Self::Bytewise, Self::Fields, Self::Pipelined, Self::SlowReader];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whole => "whole",
            Self::Bytewise => "bytewise",
            Self::Fields => "fields",
            Self::Pipelined => "pipelined",
            Self::SlowReader => "slow-reader",
        }
    }
}

/// The cases: one per transcript and delivery.
pub fn cases(transcripts: &[(&'static str, &'static str)]) -> Vec<Case> {
    let mut out = Vec::new();
    for &(file, text) in transcripts {
        let stem = file.trim_end_matches(".ft");
        let t = match Transcript::parse(text) {
            Ok(t) => t,
            Err(e) => {
                let message = format!("{file}: {e}");
                out.push(Case {
                    id: format!("transcript.{stem}"),
                    title: "transcript cannot be read".into(),
                    requirements: vec![],
                    needs: Needs::default(),
                    run: Box::new(move |_| Outcome::HarnessError(message.clone())),
                });
                continue;
            }
        };
        let mut capabilities = Capabilities(0);
        for c in &t.capabilities {
            capabilities = capabilities | Capabilities::from_name(c).unwrap_or_default();
        }
        if t.legacy {
            capabilities = capabilities | Capabilities::LEGACY;
        }
        for delivery in Delivery::ALL {
            let t = t.clone();
            let source = text;
            out.push(Case {
                id: format!("transcript.{stem}.{}", delivery.as_str()),
                title: format!("{} ({})", t.title, delivery.as_str()),
                requirements: t.all_requirements(),
                needs: Needs { role: t.role, capabilities, profile: Profile::V1, ..Needs::default() },
                run: Box::new(move |ctx| replay(&t, source, delivery, ctx)),
            });
        }
    }
    out
}

/// Replays `t` against the target; the verdict of the first step that does not match.
pub fn replay(t: &Transcript, source: &str, delivery: Delivery, ctx: &Ctx) -> Outcome {
    let vars = Vars { prefix: ctx.prefix.clone(), token: ctx.target.token.clone().unwrap_or_default() };
    let connections = match t.render(&vars) {
        Ok(c) => c,
        Err(e) => return Outcome::HarnessError(e.to_string()),
    };
    match inapplicable(&connections, ctx) {
        Ok(Some(why)) => return Outcome::Unsupported(why),
        Ok(None) => {}
        Err(f) => return Outcome::Fail(*f),
    }
    let fallback_req = t.requires.first().cloned().unwrap_or_default();
    let req_of = |line: usize| {
        t.connections
            .iter()
            .flatten()
            .find(|s| s.line == line)
            .and_then(|s| s.requirements.first().cloned())
            .unwrap_or_else(|| fallback_req.clone())
    };
    for steps in connections {
        if let Err(mut f) = replay_connection(&steps, delivery, ctx) {
            if f.requirement.is_none() {
                f.requirement = Some(req_of(f_line(&f)));
            }
            f.transcript = Some(format!(
                "# Failed under delivery `{}` with ${{P}} = {:?}\n{source}",
                delivery.as_str(),
                ctx.prefix
            ));
            // A reset where bytes or a close were expected, when the client had sent more than
            // was read (pipelined), or where a fatal error was due: that is the missing
            // lingering close, a SHOULD (`[ERR-9]`). Closing with unread input makes TCP send
            // a reset, which can destroy the error before the client reads it.
            let reset = f.ending == Some(Ending::Reset);
            let unread_error = reset && f.expected.is_none() && expects_fatal_error(&steps);
            if reset && (delivery == Delivery::Pipelined || unread_error) {
                f.requirement = Some("ERR-9".into());
                f.message = format!(
                    "{} — the connection was reset where the server's last reply was due, which a lingering \
                     close (a SHOULD) prevents; the reply may have been sent and destroyed",
                    f.message
                );
                return Outcome::Warn(f);
            }
            return Outcome::Fail(f);
        }
    }
    Outcome::Pass
}

/// Whether a connection's steps expect a fatal error (code `0x01xx`) from the server.
fn expects_fatal_error(steps: &[Rendered]) -> bool {
    steps.iter().any(|s| {
        matches!(s, Rendered::Expect { patterns, .. }
            if matches!(patterns.first(), Some(Pattern::Exact(b)) if b.len() >= 2 && b[0] == 0xFF && b[1] == 0x01))
    })
}

/// Why the transcript cannot be replayed as written against this server, if it cannot.
///
/// - Its requests decode differently under the server's announced `max_name_len` and
///   `max_file_size` than under the defaults transcripts are written for (255, 1 TiB): a name
///   that is now too long gets `BAD_NAME`, an upload now too large `TOO_LARGE`.
/// - It uploads or deletes a file (a valid name) and the server refuses writes to the run's
///   role (a read-only server, `[ROLE-2]`): `FORBIDDEN` instead.
/// - A legacy download expects `"OK"`, and the server refuses anonymous connections: legacy
///   requests take the anonymous role (§ 15.2), so they get `"ERROR"`.
///
/// Without the server's hello (`conformance replay`) nothing is checked.
///
/// # Errors
/// A probe failed in a way no configuration explains.
fn inapplicable(connections: &[Vec<Rendered>], ctx: &Ctx) -> Result<Option<String>, Box<Failure>> {
    let Some(hello) = ctx.server else { return Ok(None) };
    let limits = ReadLimits { max_name_len: hello.max_name_len, max_file_size: hello.max_file_size };
    let assumed = ReadLimits::default();
    let trailer = hello.capabilities.contains(ferry_proto::Capabilities::TRAILER);
    let mut writes = false;
    let mut legacy_download = false;
    for steps in connections {
        let bytes: Vec<u8> = steps
            .iter()
            .flat_map(|s| match s {
                Rendered::Send { bytes, .. } => bytes.clone(),
                _ => Vec::new(),
            })
            .collect();
        // Read as this server reads it: with TRAILER, trailing uploads are requests too (§ 6.5).
        let decode = |limits| {
            vector::decode_with_trailer(Direction::ClientToServer, Start::Handshake, limits, trailer, &bytes, &[])
        };
        let (want, want_end) = decode(assumed);
        let (got, got_end) = decode(limits);
        if want != got || want_end != got_end {
            let k = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
            let show = |items: &[serde_json::Value], end: &End| {
                items.get(k).map_or_else(|| format!("the end ({})", end.to_json()), ToString::to_string)
            };
            return Ok(Some(format!(
                "written for a max_name_len of {} and a max_file_size of {}; under the server's {} and {}, message \
                 {} of a connection decodes as {} instead of {}",
                assumed.max_name_len,
                assumed.max_file_size,
                hello.max_name_len,
                hello.max_file_size,
                k + 1,
                show(&got, &got_end),
                show(&want, &want_end),
            )));
        }
        writes |= got.iter().any(|i| matches!(i["type"].as_str(), Some("put" | "delete")));
        if bytes.first() == Some(&0) {
            legacy_download |= steps.iter().any(|s| {
                matches!(s, Rendered::Expect { patterns, .. }
                    if matches!(patterns.first(), Some(Pattern::Exact(b)) if b.starts_with(b"OK")))
            });
        }
    }
    if writes && !super::support::writable(ctx)? {
        return Ok(Some(
            "it uploads or deletes files, and the server refuses uploads to this run's role (FORBIDDEN): it is \
             read-only"
                .into(),
        ));
    }
    if legacy_download {
        if let Err(Problem::Ended(Ending::ErrorReply { code, .. })) = ctx.conn_as(None) {
            if code == ErrorCode::UNAUTHORIZED.0 {
                return Ok(Some(
                    "a legacy download takes the anonymous role (§ 15.2), and the server refuses anonymous \
                     connections (UNAUTHORIZED)"
                        .into(),
                ));
            }
        }
    }
    Ok(None)
}

fn f_line(f: &Failure) -> usize {
    f.message.strip_prefix("line ").and_then(|s| s.split(':').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[expect(clippy::result_large_err, reason = "a failure ends the case; its size costs nothing on the passing path")]
fn replay_connection(steps: &[Rendered], delivery: Delivery, ctx: &Ctx) -> Result<(), Failure> {
    let mut raw = ctx.raw().map_err(|e| Failure { message: format!("cannot connect: {e}"), ..Default::default() })?;
    // A slow reader must not outlast the idle deadline: once the server's socket has taken a
    // reply, the reply is sent and the next request is due within idle_timeout_ms (`[TIME-2]`),
    // however slowly the client reads. So replies are read a few bytes at a time for a quarter
    // of that at most, the rest at once.
    let slow_for = match ctx.server.map_or(0, |h| h.idle_timeout_ms) {
        0 => Duration::MAX,
        ms => Duration::from_millis(u64::from(ms)) / 4,
    };
    let mut replies_since = Instant::now();
    let mut pos = 0;
    let mut i = 0;
    if delivery == Delivery::Pipelined {
        let all: Vec<u8> = steps
            .iter()
            .flat_map(|s| match s {
                Rendered::Send { bytes, .. } => bytes.clone(),
                _ => Vec::new(),
            })
            .collect();
        // A writer thread, so that a server answering while it reads cannot deadlock us.
        let mut writer =
            raw.stream.try_clone().map_err(|e| Failure { message: e.to_string(), ..Default::default() })?;
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut writer, &all);
        });
    }
    while i < steps.len() {
        match &steps[i] {
            Rendered::Send { bytes, boundaries, .. } => {
                replies_since = Instant::now();
                if delivery != Delivery::Pipelined {
                    let cuts: Vec<usize> = match delivery {
                        Delivery::Bytewise => (1..bytes.len()).collect(),
                        Delivery::Fields => boundaries.clone(),
                        _ => Vec::new(),
                    };
                    let mut from = 0;
                    for to in cuts.into_iter().chain([bytes.len()]) {
                        raw.send(&bytes[from..to]).map_err(|e| io_failure(&raw, e))?;
                        from = to;
                    }
                }
            }
            Rendered::Expect { patterns, line } => {
                // The deadline bounds each wait for progress; the case deadline bounds them all.
                let mut deadline = (Instant::now() + ctx.target.io_timeout).min(ctx.deadline);
                loop {
                    match match_step(patterns, &raw.received[pos..], raw.eof || raw.reset) {
                        Match::Complete(n) => {
                            pos += n;
                            break;
                        }
                        Match::Mismatch(m) => {
                            return Err(Failure {
                                message: format!("line {line}: the server's bytes differ at offset {}", m.offset),
                                expected: Some(m.expected),
                                actual: Some(m.received),
                                ending: Some(raw.ending()),
                                ..Default::default()
                            });
                        }
                        Match::NeedMore => {
                            let slow = delivery == Delivery::SlowReader && replies_since.elapsed() < slow_for;
                            if slow {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            let progressed = raw.read_more(deadline, if slow { 64 } else { 256 * 1024 });
                            if progressed {
                                deadline = (Instant::now() + ctx.target.io_timeout).min(ctx.deadline);
                            } else if raw.eof || raw.reset || Instant::now() >= deadline {
                                let ending = if Instant::now() >= deadline { Ending::TimedOut } else { raw.ending() };
                                if raw.eof || raw.reset {
                                    // One last match with EOF known (a trailing `rest`).
                                    if let Match::Complete(n) = match_step(patterns, &raw.received[pos..], true) {
                                        pos += n;
                                        break;
                                    }
                                }
                                return Err(Failure {
                                    message: format!("line {line}: expected more bytes from the server ({ending})"),
                                    actual: Some(raw.received[pos..].to_vec()),
                                    ending: Some(ending),
                                    ..Default::default()
                                });
                            }
                        }
                    }
                }
            }
            Rendered::ExpectClose { line } => {
                let deadline = (Instant::now() + ctx.target.io_timeout).min(ctx.deadline);
                let closed = raw.wait_close(deadline);
                if raw.received.len() > pos {
                    return Err(Failure {
                        message: format!("line {line}: the server sent more before closing"),
                        expected: Some(Vec::new()),
                        actual: Some(raw.received[pos..].to_vec()),
                        ending: Some(raw.ending()),
                        ..Default::default()
                    });
                }
                if !closed {
                    return Err(Failure {
                        message: format!("line {line}: the server did not close the connection"),
                        ending: Some(Ending::Open),
                        ..Default::default()
                    });
                }
            }
        }
        i += 1;
    }
    Ok(())
}

fn io_failure(raw: &Raw, e: std::io::Error) -> Failure {
    Failure { message: format!("sending failed: {e}"), ending: Some(raw.ending()), ..Default::default() }
}
