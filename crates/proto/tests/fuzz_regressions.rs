//! Inputs the fuzz targets (fuzz/, README.md "Fuzzing") found, or that were written while making
//! them, that are not expressible as a spec vector: each is a test here, named after what went
//! wrong. Decoder findings go to spec/vectors/ instead (spec/tools/make_vectors.py).

use ferry_proto::transcript::{match_step, min_len, Match, Pattern, Rendered, Transcript, Vars};

fn expect_patterns(text: &str) -> Vec<Pattern> {
    let t = Transcript::parse(text).unwrap();
    let rendered = t.render(&Vars::default()).unwrap();
    match &rendered[0][0] {
        Rendered::Expect { patterns, .. } => patterns.clone(),
        other => panic!("not an S: step: {other:?}"),
    }
}

/// fuzz target `transcript`, minimized: `S:rest u8:*`. `rest` reads to the close, so the fields
/// after it were never matched and the step passed without checking them. spec/README.md: `rest`
/// is the last field of a connection's last `S:` line.
#[test]
fn rest_must_be_the_last_field_of_the_last_s_line() {
    for bad in [
        "S:rest u8:*",
        "S: \"ERROR\" rest \"more\"",
        "S: opt:rest",
        "S: u8:0x81 rest\nS: u8:0x88",
        "S: u8:0x81 rest\n   u8:0x88",
    ] {
        assert!(Transcript::parse(bad).is_err(), "{bad:?} was accepted");
    }
    for good in ["S: \"ERROR\" rest\nS: close", "S: rest\n--- connection\nS: u8:1", "C: \"rest\"\nS: rest"] {
        assert!(Transcript::parse(good).is_ok(), "{good:?} was refused");
    }
}

/// Written with the fuzz target `transcript` (its witness check needs `min_len`), confirmed by
/// running the target on it: `*:N` with N near `usize::MAX` overflowed `pos + n` in the matcher
/// and the sum in `min_len` — a panic with overflow checks, and without them a wrapped position
/// that let a step "match" bytes it had not seen.
#[test]
fn any_count_near_usize_max_needs_more_instead_of_wrapping() {
    let huge = format!("S: u8:7 *:{}", usize::MAX);
    let patterns = expect_patterns(&huge);
    assert_eq!(match_step(&patterns, &[], false), Match::NeedMore);
    assert_eq!(match_step(&patterns, &[7], false), Match::NeedMore);
    assert_eq!(match_step(&patterns, &[7, 1, 2, 3], true), Match::NeedMore);
    assert_eq!(min_len(&patterns), usize::MAX);

    let first = expect_patterns(&format!("S: *:{} u8:*", usize::MAX));
    assert_eq!(min_len(&first), usize::MAX);
    assert_eq!(match_step(&first, b"abc", false), Match::NeedMore);
}
