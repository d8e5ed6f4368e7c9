//! Keeps the suite honest: every MUST a server must meet is cited by at least one case (or
//! exempted here, with the reason), every case cites what it checks, and every case is run by
//! `server_suite!`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ferry_proto::requirements::{parse, Level};

/// Requirements on clients, which a server suite cannot observe.
const CLIENT_SIDE: &[(&str, &str)] = &[
    ("ENC-3", "error messages and help text travel from server to client"),
    ("ENC-7", "error messages and help text travel from server to client"),
    ("ENC-4", "presence bytes only travel from server to client in version 1"),
    ("HELLO-7", "the client checks the chosen version"),
    ("HELLO-8", "the client keeps unknown capability bits"),
    ("REQ-7", "the client checks reply tags"),
    ("ERR-2", "the client refuses over-long error messages"),
    ("ERR-3", "the client acts on codes, not messages"),
    ("ERR-5", "the client classifies unknown codes"),
    ("BYE-2", "the client sends nothing after BYE"),
    ("PUT-6", "the client sends the whole frame"),
    ("NAME-11", "the client checks names from the server"),
    ("NAME-12", "the client escapes names before printing them"),
    ("TLS-2", "the client offers ALPN ferry/1"),
    ("TLS-3", "the client checks the ALPN the server chose"),
    ("TLS-5", "the client verifies the server's certificate"),
    ("TLS-6", "the client keeps tokens off plain connections to other hosts"),
    ("TIME-11", "the client gives up a server that stalls"),
    ("TRL-10", "the client keeps a trailing download unverified until its trailer matches"),
];

/// Server requirements this suite does not check, and why.
const NOT_CHECKED: &[(&str, &str)] = &[];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The suite's sources and the process tests of ferryd.
fn sources() -> Vec<(String, String)> {
    let dir = manifest_dir().join("src/suite");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), read(&p)))
        .collect();
    let process = manifest_dir().join("../ferryd/tests/process.rs");
    out.push(("ferryd/tests/process.rs".into(), read(&process)));
    out.sort();
    out
}

/// Every `[ID-N]` written in `text`.
fn cited(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        rest = &rest[i + 1..];
        if let Some(end) = rest.find(']') {
            let id = &rest[..end];
            let ok = id.split_once('-').is_some_and(|(a, n)| {
                !a.is_empty()
                    && a.chars().all(|c| c.is_ascii_uppercase())
                    && !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_digit())
            });
            if ok {
                out.insert(id.to_owned());
            }
        }
    }
    out
}

/// The suite's cases: `pub fn name(engine: StartFn)`, with the doc comment above each.
fn cases() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, text) in sources().into_iter().filter(|(f, _)| f != "mod.rs" && !f.contains('/')) {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("pub fn ") else { continue };
            let Some((name, args)) = rest.split_once('(') else { continue };
            assert!(args.starts_with("engine: StartFn)"), "{file}: {name} must take only the engine");
            let doc: Vec<&str> = lines[..i].iter().rev().take_while(|l| l.starts_with("///")).copied().collect();
            out.push((name.to_owned(), doc.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
    }
    out
}

#[test]
fn every_server_must_is_checked() {
    let spec = read(&manifest_dir().join("../../PROTOCOL.md"));
    let (requirements, _) = parse(&spec);
    let sources: String = sources().into_iter().map(|(_, t)| t).collect();
    let cited = cited(&sources);
    let exempt: BTreeSet<&str> = CLIENT_SIDE.iter().chain(NOT_CHECKED).map(|(id, _)| *id).collect();
    let missing: Vec<String> = requirements
        .iter()
        .filter(|r| r.level == Level::Must && !exempt.contains(r.id.as_str()) && !cited.contains(&r.id))
        .map(|r| format!("[{}] § {}: {}", r.id, r.section, r.sentence))
        .collect();
    assert!(
        missing.is_empty(),
        "server MUSTs no case cites (add a case to ferry-testkit's suite, or exempt them in {} with the reason):\n{}",
        file!(),
        missing.join("\n")
    );
    let known: BTreeSet<&str> = requirements.iter().map(|r| r.id.as_str()).collect();
    let unknown: Vec<&String> = cited.iter().filter(|id| !known.contains(id.as_str())).collect();
    assert!(unknown.is_empty(), "cases cite ids PROTOCOL.md does not define: {unknown:?}");
    let stale: Vec<&&str> = exempt.iter().filter(|id| !known.contains(**id)).collect();
    assert!(stale.is_empty(), "exemptions of ids PROTOCOL.md does not define: {stale:?}");
}

#[test]
fn every_case_cites_what_it_checks() {
    let cases = cases();
    assert!(cases.len() >= 50, "only {} cases found", cases.len());
    for (name, doc) in &cases {
        assert!(!cited(doc).is_empty(), "{name}: its doc comment cites no requirement id");
    }
}

#[test]
fn server_suite_runs_every_case() {
    let text = read(&manifest_dir().join("src/suite/mod.rs"));
    let start = text.find("@cases $engine;").expect("the case list") + "@cases $engine;".len();
    let end = start + text[start..].find(");").expect("the end of the case list");
    let listed: Vec<String> = text[start..end]
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["))
        .map(str::to_owned)
        .collect();
    let defined: Vec<String> = cases().into_iter().map(|(n, _)| n).collect();
    let (listed_set, defined_set): (BTreeSet<_>, BTreeSet<_>) = (listed.iter().collect(), defined.iter().collect());
    assert_eq!(listed.len(), listed_set.len(), "a case is listed twice");
    let not_run: Vec<_> = defined_set.difference(&listed_set).collect();
    let not_defined: Vec<_> = listed_set.difference(&defined_set).collect();
    assert!(not_run.is_empty(), "cases server_suite! does not run: {not_run:?}");
    assert!(not_defined.is_empty(), "server_suite! lists cases that do not exist: {not_defined:?}");
}
