//! Reports: text for people (with hexdump diffs and the requirement's sentence), JSON for tools,
//! JUnit XML for CI systems.

use std::collections::BTreeMap;
use std::fmt::Write;

use ferry_proto::requirements::Requirement;
use serde_json::json;

use crate::case::{Failure, Outcome, Verdict};
use crate::runner::CaseResult;

/// Counts by verdict.
pub fn counts(results: &[CaseResult]) -> BTreeMap<Verdict, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.verdict).or_insert(0) += 1;
    }
    m
}

/// The closing line: `N passed, N failed, N skipped` (timeouts count as failed; unsupported and
/// skipped as skipped; warnings as passed unless --strict made them failures).
pub fn summary_line(results: &[CaseResult]) -> String {
    let c = counts(results);
    let n = |v: Verdict| c.get(&v).copied().unwrap_or(0);
    format!(
        "{} passed, {} failed, {} skipped",
        n(Verdict::Pass) + n(Verdict::Warn),
        n(Verdict::Fail) + n(Verdict::Timeout),
        n(Verdict::Unsupported) + n(Verdict::Skipped)
    )
}

/// A hexdump of `expected` and `actual` side by side, 8 bytes a row, rows that differ marked.
pub fn hex_diff(expected: &[u8], actual: &[u8]) -> String {
    let mut out = String::new();
    let rows = expected.len().max(actual.len()).div_ceil(8).min(32);
    let cell = |b: Option<&u8>| b.map_or("  ".to_owned(), |b| format!("{b:02x}"));
    let ascii = |b: Option<&u8>| b.map_or(' ', |&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' });
    let _ = writeln!(out, "  offset    expected                  actual");
    for row in 0..rows {
        let range = row * 8..row * 8 + 8;
        let e: Vec<_> = range.clone().map(|i| expected.get(i)).collect();
        let a: Vec<_> = range.clone().map(|i| actual.get(i)).collect();
        let mark = if e != a { '!' } else { ' ' };
        let hex = |v: &[Option<&u8>]| v.iter().map(|b| cell(*b)).collect::<Vec<_>>().join(" ");
        let txt = |v: &[Option<&u8>]| v.iter().map(|b| ascii(*b)).collect::<String>();
        let _ = writeln!(out, "{mark} {:08x}  {} |{}|  {} |{}|", row * 8, hex(&e), txt(&e), hex(&a), txt(&a));
    }
    if expected.len().max(actual.len()) > 256 {
        let _ = writeln!(out, "  … ({} bytes expected, {} received)", expected.len(), actual.len());
    }
    out
}

fn failure_text(f: &Failure, spec: &[Requirement], out: &mut String) {
    let _ = writeln!(out, "      {}", f.message);
    if let Some(id) = &f.requirement {
        match spec.iter().find(|r| &r.id == id) {
            Some(r) => {
                let _ = writeln!(out, "      [{id}] (§ {}): {}", r.section, r.sentence);
            }
            None => {
                let _ = writeln!(out, "      [{id}]");
            }
        }
    }
    if let Some(e) = &f.ending {
        let _ = writeln!(out, "      connection: {e}");
    }
    if f.expected.is_some() || f.actual.is_some() {
        let d = hex_diff(f.expected.as_deref().unwrap_or(&[]), f.actual.as_deref().unwrap_or(&[]));
        for line in d.lines() {
            let _ = writeln!(out, "      {line}");
        }
    }
}

/// The text report.
pub fn text(results: &[CaseResult], spec: &[Requirement], verbose: bool) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(out, "{:<13} {}  [{}]", r.verdict.as_str().to_uppercase(), r.id, r.requirements.join(" "));
        match &r.outcome {
            Outcome::Fail(f) | Outcome::Warn(f) => failure_text(f, spec, &mut out),
            Outcome::Unsupported(why) | Outcome::Skipped(why) | Outcome::HarnessError(why)
                if verbose || r.verdict == Verdict::HarnessError =>
            {
                let _ = writeln!(out, "      {why}");
            }
            _ => {}
        }
    }
    let c = counts(results);
    let parts: Vec<String> = c.iter().map(|(v, n)| format!("{n} {}", v.as_str())).collect();
    let reqs = by_requirement(results);
    let not_met: Vec<String> = reqs
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Fail | Verdict::Warn | Verdict::HarnessError))
        .map(|(id, v)| format!("{id} {}", v.as_str()))
        .collect();
    let met = reqs.values().filter(|v| **v == Verdict::Pass).count();
    let _ = writeln!(
        out,
        "\nrequirements: {met} met, {} not met{}",
        not_met.len(),
        if not_met.is_empty() { String::new() } else { format!(" ({})", not_met.join(", ")) }
    );
    let _ = writeln!(out, "verdicts: {}", parts.join(", "));
    let _ = writeln!(out, "{}", summary_line(results));
    out
}

fn detail(o: &Outcome) -> serde_json::Value {
    match o {
        Outcome::Fail(f) | Outcome::Warn(f) => json!({
            "message": f.message,
            "requirement": f.requirement,
            "ending": f.ending.as_ref().map(ToString::to_string),
            "expected_hex": f.expected.as_ref().map(hex::encode),
            "actual_hex": f.actual.as_ref().map(hex::encode),
        }),
        Outcome::Unsupported(w) | Outcome::Skipped(w) | Outcome::HarnessError(w) => json!({ "message": w }),
        Outcome::Pass => json!(null),
    }
}

/// Each requirement's verdict: the worst of the cases that check it (a failure or timeout, then
/// a harness error, a warning, a pass; unsupported or skipped only when no case ran).
pub fn by_requirement(results: &[CaseResult]) -> BTreeMap<&str, Verdict> {
    let rank = |v: Verdict| match v {
        Verdict::Fail | Verdict::Timeout => 6,
        Verdict::HarnessError => 5,
        Verdict::Warn => 4,
        Verdict::Pass => 3,
        Verdict::Unsupported => 2,
        Verdict::Skipped => 1,
    };
    let mut m: BTreeMap<&str, Verdict> = BTreeMap::new();
    for r in results {
        for id in &r.requirements {
            let v = if r.verdict == Verdict::Timeout { Verdict::Fail } else { r.verdict };
            let e = m.entry(id.as_str()).or_insert(v);
            if rank(v) > rank(*e) {
                *e = v;
            }
        }
    }
    m
}

/// The JSON report.
pub fn json(results: &[CaseResult], seed: u64) -> String {
    let cases: Vec<_> = results
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "title": r.title, "requirements": r.requirements,
                "verdict": r.verdict.as_str(), "duration_ms": r.duration.as_millis() as u64,
                "detail": detail(&r.outcome),
            })
        })
        .collect();
    let c: BTreeMap<&str, usize> = counts(results).into_iter().map(|(v, n)| (v.as_str(), n)).collect();
    let requirements: BTreeMap<&str, &str> =
        by_requirement(results).into_iter().map(|(id, v)| (id, v.as_str())).collect();
    serde_json::to_string_pretty(&json!({
        "seed": seed, "counts": c, "summary": summary_line(results), "requirements": requirements, "cases": cases,
    }))
    .unwrap_or_default()
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The JUnit XML report.
pub fn junit(results: &[CaseResult], spec: &[Requirement]) -> String {
    let c = counts(results);
    let n = |v: Verdict| c.get(&v).copied().unwrap_or(0);
    let total: f64 = results.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"ferry-conformance\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{total:.3}\">",
        results.len(),
        n(Verdict::Fail) + n(Verdict::Timeout),
        n(Verdict::HarnessError),
        n(Verdict::Skipped) + n(Verdict::Unsupported)
    );
    for r in results {
        let (class, name) = r.id.split_once('.').unwrap_or(("case", &r.id));
        let _ = write!(
            out,
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            xml_escape(class),
            xml_escape(name),
            r.duration.as_secs_f64()
        );
        match (&r.outcome, r.verdict) {
            (Outcome::Fail(f) | Outcome::Warn(f), Verdict::Fail | Verdict::Timeout) => {
                let mut body = String::new();
                failure_text(f, spec, &mut body);
                let _ = write!(out, "<failure message=\"{}\">{}</failure>", xml_escape(&f.message), xml_escape(&body));
            }
            (Outcome::HarnessError(w), _) => {
                let _ = write!(out, "<error message=\"{}\"/>", xml_escape(w));
            }
            (Outcome::Unsupported(w) | Outcome::Skipped(w), _) => {
                let _ = write!(out, "<skipped message=\"{}\"/>", xml_escape(w));
            }
            _ => {}
        }
        let _ = writeln!(out, "</testcase>");
    }
    out.push_str("</testsuite></testsuites>\n");
    out
}
