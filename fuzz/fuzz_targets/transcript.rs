//! The transcript reader and matcher (spec/README.md, "Transcripts").
//!
//! Input: the text of a `.ft` file (invalid UTF-8 replaced); its raw bytes also serve as bytes
//! "received" from a server. Checked: no panic and no allocation the text does not ask for;
//! `C:` boundaries lie inside their bytes; for every `S:` step, a witness built from its patterns
//! matches completely, each of its prefixes needs more, and `min_len` is its length; and matching
//! is consistent as bytes arrive: once complete or mismatched, more bytes change nothing, and
//! "need more" at some length means "need more" at every shorter one.
#![no_main]

use ferry_fuzz::alloc::measure;
use ferry_proto::transcript::{match_step, min_len, Field, Match, Pattern, Rendered, StepKind, Transcript, Vars};
use libfuzzer_sys::fuzz_target;

/// A byte string the patterns match: absent options, empty prefixed fields, zeros for wildcards.
fn witness(patterns: &[Pattern], out: &mut Vec<u8>) {
    for p in patterns {
        match p {
            Pattern::Exact(b) => out.extend_from_slice(b),
            Pattern::Any(n) => out.resize(out.len() + n, 0),
            Pattern::AnyPrefixed(w) => out.resize(out.len() + w, 0),
            Pattern::Opt(_) => out.push(0),
            Pattern::Rest => {}
        }
    }
}

fn ends_with_rest(patterns: &[Pattern]) -> bool {
    matches!(patterns.last(), Some(Pattern::Rest))
}

/// Matching `received[..k]` for growing k never goes back on a verdict.
fn check_monotone(patterns: &[Pattern], received: &[u8]) {
    let mut verdict = None;
    let cuts: Vec<usize> = (0..=received.len().min(64)).chain([received.len()]).collect();
    for k in cuts {
        let now = match_step(patterns, &received[..k], false);
        if let Match::Complete(n) = now {
            assert!(n <= k, "complete with {n} of {k} bytes");
        }
        match (&verdict, &now) {
            (Some(Match::Complete(a)), _) => assert_eq!(&now, &Match::Complete(*a), "completed, then {now:?}"),
            (Some(Match::Mismatch(a)), Match::Mismatch(b)) => assert_eq!(a.offset, b.offset),
            (Some(Match::Mismatch(a)), _) => panic!("mismatched at {}, then {now:?}", a.offset),
            _ => {}
        }
        verdict = Some(now);
    }
}

/// The bytes the transcript's `fill:` fields ask for: rendering allocates them, as it should.
fn filled(t: &Transcript) -> usize {
    fn of(f: &Field) -> usize {
        match f {
            Field::Fill { count, .. } => *count,
            Field::Opt(inner) => of(inner),
            _ => 0,
        }
    }
    let fields = t.connections.iter().flatten().flat_map(|s| match &s.kind {
        StepKind::Send(f) | StepKind::Expect(f) => &f[..],
        StepKind::ExpectClose => &[],
    });
    fields.map(of).fold(0, usize::saturating_add)
}

/// Parsing and rendering allocate in proportion to the text (lines, tokens, strings) and to the
/// fills it asks for; never in proportion to another number it contains.
fn text_bound(text_len: usize) -> usize {
    64 * text_len + 4096
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (parsed, largest) = measure(|| Transcript::parse(&text));
    assert!(largest <= text_bound(text.len()), "parsing allocated {largest} bytes");
    let Ok(t) = parsed else { return };
    let _ = t.all_requirements();
    let fill = filled(&t);
    if fill > 16 << 20 {
        // A big fill is a big allocation by design; the harness does not make it.
        return;
    }
    let vars = Vars { prefix: "fz-".to_owned(), token: "s3cret".to_owned() };
    let (rendered, largest) = measure(|| t.render(&vars));
    assert!(largest <= text_bound(text.len()) + 2 * fill, "rendering allocated {largest} bytes");
    let Ok(connections) = rendered else { return };
    for step in connections.iter().flatten() {
        match step {
            Rendered::Send { bytes, boundaries, .. } => {
                assert!(boundaries.windows(2).all(|w| w[0] <= w[1]), "boundaries out of order");
                assert!(boundaries.iter().all(|&b| b <= bytes.len()), "a boundary past the bytes");
            }
            Rendered::Expect { patterns, .. } => {
                check_monotone(patterns, data);
                let len = min_len(patterns);
                if len > 1 << 20 {
                    continue;
                }
                let mut w = Vec::new();
                witness(patterns, &mut w);
                assert_eq!(len, w.len(), "min_len of {patterns:?}");
                assert_eq!(match_step(patterns, &w, true), Match::Complete(w.len()), "witness {w:02x?}");
                if !ends_with_rest(patterns) {
                    assert_eq!(match_step(patterns, &w, false), Match::Complete(w.len()));
                }
                for k in 0..w.len().min(256) {
                    assert_eq!(match_step(patterns, &w[..k], false), Match::NeedMore, "prefix {k} of {w:02x?}");
                }
            }
            Rendered::ExpectClose { .. } => {}
        }
    }
});
