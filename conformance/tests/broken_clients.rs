//! `conformance client` judged: the Python client of conformance/clients passes every case, and
//! each deliberately broken variant of it (`broken_clients/broken.py`, one rule broken each) is
//! caught by the case named for it here. Needs `python3`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_conformance::case::Verdict;
use ferry_conformance::client::{self, template::Template, Settings};
use ferry_conformance::runner::{CaseResult, Selection};

/// Each broken client, and a case that must fail against it (more may).
const FAULTS: &[(&str, &str)] = &[
    ("skip-md5", "client.get.wrong-md5"),
    ("follow-names", "client.get.name-escape.dotdot"),
    ("no-timeout", "client.get.stall"),
    ("splice-on-resume", "client.get.resume-changed"),
    ("keep-bad-files", "client.get.wrong-md5"),
    ("ignore-tags", "client.get.tag-mismatch.reserved"),
    ("any-version", "client.hello.version-above"),
    ("strict-capabilities", "client.hello.unknown-capabilities"),
    ("read-long-messages", "client.error.message-too-long"),
    ("strict-utf8", "client.error.invalid-utf8"),
    ("unknown-codes-recoverable", "client.error.unknown-code.outside-every-range"),
    ("retry-on-message", "client.error.message-is-not-the-code"),
    ("raw-names", "client.list.name-escape.control"),
    ("talk-after-bye", "client.get.ok"),
    ("uppercase-digest", "client.put.ok"),
    ("short-upload", "client.put.ok"),
    ("fetch-unannounced", "client.trailer.not-announced"),
    ("trust-trailer", "client.trailer.fetch-wrong-trailer"),
];

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pyferry command line after `program`, in the contract's placeholders.
fn template(program: &[&str]) -> Template {
    let tail = "--server {addr} --timeout {timeout} --profile {profile} --dir {dir} --path {path} {op} {name}";
    let argv: Vec<String> = program.iter().map(|s| (*s).to_owned()).chain(tail.split(' ').map(str::to_owned)).collect();
    Template::parse(&argv).expect("a valid template")
}

fn settings(template: Template) -> Settings {
    // A short hard limit: the broken clients that hang cost it in full.
    Settings { template, limit: Duration::from_secs(6), timeout: 5 }
}

fn run(template: Template, case: Option<&str>) -> Vec<CaseResult> {
    let selection = Selection { cases: case.map(|c| vec![c.to_owned()]).unwrap_or_default(), ..Selection::default() };
    let cases = client::selected(&selection);
    assert!(!cases.is_empty(), "no case {case:?}");
    client::run(cases, &settings(template), 4, false)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn the_python_client_passes_every_case() {
    let pyferry = here().join("clients/pyferry.py");
    let results = run(template(&["python3", path(&pyferry)]), None);
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .map(|r| format!("{} {}: {:?}", r.id, r.verdict.as_str(), r.outcome))
        .collect();
    assert!(bad.is_empty(), "the Python client should pass every case:\n{}", bad.join("\n"));
    assert_eq!(results.len(), client::cases::all().len());
}

#[test]
fn every_broken_client_is_caught() {
    let broken = here().join("tests/broken_clients/broken.py");
    // The list above is the script's list.
    let usage = std::process::Command::new("python3").arg(&broken).output().expect("python3 runs");
    let usage = String::from_utf8_lossy(&usage.stderr);
    let listed = usage.split('{').nth(1).and_then(|s| s.split('}').next()).unwrap_or_default();
    let mut theirs: Vec<&str> = listed.split(',').collect();
    let mut ours: Vec<&str> = FAULTS.iter().map(|(f, _)| *f).collect();
    theirs.sort_unstable();
    ours.sort_unstable();
    assert_eq!(theirs, ours, "broken.py's faults and this test's differ");

    let problems = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(Mutex::new(0usize));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (problems, next, broken) = (problems.clone(), next.clone(), broken.clone());
            s.spawn(move || loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some((fault, case)) = FAULTS.get(i) else { break };
                let results = run(template(&["python3", path(&broken), fault]), Some(case));
                let r = results.iter().find(|r| r.id == *case).expect("the case ran");
                if !matches!(r.verdict, Verdict::Fail) {
                    problems.lock().unwrap().push(format!(
                        "{fault}: {case} should fail, but is {}: {:?}",
                        r.verdict.as_str(),
                        r.outcome
                    ));
                }
            });
        }
    });
    let problems = problems.lock().unwrap();
    println!("{} broken clients, {} caught", FAULTS.len(), FAULTS.len() - problems.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
