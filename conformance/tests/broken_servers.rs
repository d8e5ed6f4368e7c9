//! Every deliberately broken server (`support::Fault`) must be caught by at least one conformance
//! case, and the same cases must all pass against the fault-free server: otherwise a fault's
//! detection means nothing.
//!
//! The test prints which cases caught which fault and keeps `conformance/BROKEN.md` up to date:
//! run it with `UPDATE_BROKEN_TABLE=1` to rewrite the file; without it the test fails when the
//! file differs from what the run found.

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_conformance::case::{Case, Profile, Target, Verdict};
use ferry_conformance::runner::{self, CaseResult};
use ferry_conformance::{cases, spec};
use support::server::Server;
use support::{Fault, Setup};

/// Cases run in parallel within one run (`-j 4`).
const JOBS: usize = 4;
/// Runs (servers) at once.
const RUNS_AT_ONCE: usize = 8;

fn target(server: &Server, prefix: &str) -> Target {
    Target {
        addr: server.addr(),
        token: None,
        io_timeout: Duration::from_secs(2),
        case_timeout: Duration::from_secs(12),
        profile: Profile::V1,
        seed: 0x00fe_0001,
        model_cases: 8,
        verbose: false,
        run_prefix: prefix.to_owned(),
        destructive: false,
        root: server.root().map(Path::to_path_buf),
        large: false,
        tls: None,
    }
}

/// The cases checking any of `requirements`.
fn cases_for(requirements: &BTreeSet<&str>) -> Vec<Case> {
    cases::all()
        .into_iter()
        .filter(|c| c.needs.profile == Profile::V1 && c.requirements.iter().any(|r| requirements.contains(r.as_str())))
        .collect()
}

/// Starts a server, runs the cases against it, stops it.
fn run_against(setup: Setup, fault: Option<Fault>, requirements: &BTreeSet<&str>, prefix: &str) -> Vec<CaseResult> {
    let server = Server::start(setup, fault);
    let target = target(&server, prefix);
    let hello = runner::probe(&target).unwrap_or_else(|e| panic!("{prefix}: the probe failed: {e}"));
    runner::run(cases_for(requirements), &target, hello, JOBS, false)
}

fn failed(r: &CaseResult) -> bool {
    matches!(r.verdict, Verdict::Fail | Verdict::Timeout)
}

enum Job {
    /// The fault-free server with one setup, and every case any fault with that setup selects.
    Control(Setup, BTreeSet<&'static str>),
    Broken(Fault),
}

enum Done {
    Control(Setup, Vec<CaseResult>),
    Broken(Fault, Vec<CaseResult>),
}

#[test]
fn every_broken_server_is_caught() {
    let started = Instant::now();
    let mut jobs: Vec<Job> = Vec::new();
    let mut by_setup: Vec<(Setup, BTreeSet<&'static str>)> = Vec::new();
    for &f in Fault::ALL {
        match by_setup.iter_mut().find(|(s, _)| *s == f.setup()) {
            Some((_, reqs)) => reqs.extend(f.select()),
            None => by_setup.push((f.setup(), f.select().iter().copied().collect())),
        }
    }
    jobs.extend(by_setup.into_iter().map(|(s, r)| Job::Control(s, r)));
    jobs.extend(Fault::ALL.iter().map(|&f| Job::Broken(f)));

    // Controls first: they run the most cases.
    let jobs = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..RUNS_AT_ONCE)
        .map(|_| {
            let (jobs, done) = (jobs.clone(), done.clone());
            std::thread::spawn(move || loop {
                let Some((i, job)) = jobs.lock().unwrap().pop_front() else { break };
                let prefix = format!("bk{i}-");
                let t = Instant::now();
                let result = match job {
                    Job::Control(setup, reqs) => Done::Control(setup, run_against(setup, None, &reqs, &prefix)),
                    Job::Broken(f) => {
                        let reqs = f.select().iter().copied().collect();
                        Done::Broken(f, run_against(f.setup(), Some(f), &reqs, &prefix))
                    }
                };
                let (what, results) = match &result {
                    Done::Control(setup, r) => (format!("control {setup:?}"), r),
                    Done::Broken(f, r) => (f.name().to_owned(), r),
                };
                let mut slow: Vec<&CaseResult> = results.iter().collect();
                slow.sort_by_key(|r| std::cmp::Reverse(r.duration));
                let slow: Vec<String> = slow.iter().take(3).map(|r| format!("{} {:.1?}", r.id, r.duration)).collect();
                eprintln!("{:>6.1?}  {what}: {} cases; slowest {}", t.elapsed(), results.len(), slow.join(", "));
                done.lock().unwrap().push(result);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a run panicked");
    }
    let done = std::mem::take(&mut *done.lock().unwrap());

    let mut problems = Vec::new();
    let known: BTreeSet<String> = spec::requirements().into_iter().map(|r| r.id).collect();
    for f in Fault::ALL {
        for r in f.select().iter().filter(|r| !known.contains(**r)) {
            problems.push(format!("{}: {r} is not a requirement of PROTOCOL.md", f.name()));
        }
    }
    let mut caught: BTreeMap<Fault, Vec<String>> = BTreeMap::new();
    for d in &done {
        match d {
            Done::Control(setup, results) => {
                for r in results.iter().filter(|r| failed(r) || r.verdict == Verdict::HarnessError) {
                    problems.push(format!(
                        "control server ({setup:?}): {} is {}: {:?}",
                        r.id,
                        r.verdict.as_str(),
                        r.outcome
                    ));
                }
                if !results.is_empty() && results.iter().all(|r| r.verdict != Verdict::Pass) {
                    problems.push(format!("control server ({setup:?}): no case passed"));
                }
            }
            Done::Broken(f, results) => {
                for r in results.iter().filter(|r| r.verdict == Verdict::HarnessError) {
                    problems.push(format!("{}: {} is a harness error: {:?}", f.name(), r.id, r.outcome));
                }
                let ids: Vec<String> = results.iter().filter(|r| failed(r)).map(|r| r.id.clone()).collect();
                if ids.is_empty() {
                    let ran: Vec<String> = results.iter().map(|r| format!("{} {}", r.id, r.verdict.as_str())).collect();
                    problems.push(format!(
                        "{} [{}] was caught by no case; ran: {}",
                        f.name(),
                        f.breaks(),
                        if ran.is_empty() { "none".to_owned() } else { ran.join(", ") }
                    ));
                }
                caught.insert(*f, ids);
            }
        }
    }

    let table = table(&caught);
    println!("{table}");
    println!(
        "{} broken servers, {} caught, in {:.1?}",
        Fault::ALL.len(),
        caught.values().filter(|c| !c.is_empty()).count(),
        started.elapsed()
    );

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BROKEN.md");
    if problems.is_empty() {
        if std::env::var_os("UPDATE_BROKEN_TABLE").is_some() {
            std::fs::write(&path, &table).expect("writing BROKEN.md");
        } else {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if !same_table(&current, &table) {
                problems.push(format!(
                    "{} is out of date: run `UPDATE_BROKEN_TABLE=1 cargo test -p ferry-conformance --test \
                     broken_servers` and commit it",
                    path.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether BROKEN.md (`written`) still describes this run's table (`now`): the same broken
/// servers, requirements and descriptions, and each caught by at least one of the cases written
/// down for it. A case that races a server's timing on a loaded machine (a pipelining case
/// filling socket buffers, say) may catch a broken server on one run and not the next; the
/// table is not out of date for that.
fn same_table(written: &str, now: &str) -> bool {
    fn rows(table: &str) -> Vec<(String, BTreeSet<String>)> {
        table
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cols: Vec<&str> = l.split(" | ").collect();
                let cases = cols.last().map_or("", |c| c.trim_end_matches(" |"));
                let cases = cases.split(", ").map(|c| c.trim_matches('`').to_owned()).collect();
                (cols[..cols.len().saturating_sub(1)].join(" | "), cases)
            })
            .collect()
    }
    let (written, now) = (rows(written), rows(now));
    written.len() == now.len()
        && written.iter().zip(&now).all(|((w, w_cases), (n, n_cases))| w == n && !w_cases.is_disjoint(n_cases))
}

/// Case ids, with a transcript's five deliveries written once as `transcript.NAME.*`.
fn compact(ids: &[String]) -> Vec<String> {
    let deliveries = cases::transcripts::Delivery::ALL.map(|d| d.as_str());
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for id in ids {
        let stem = deliveries.iter().find_map(|d| id.strip_suffix(&format!(".{d}")));
        match stem {
            Some(stem) if deliveries.iter().all(|d| ids.contains(&format!("{stem}.{d}"))) => {
                if seen.insert(stem.to_owned()) {
                    out.push(format!("`{stem}.*`"));
                }
            }
            _ => out.push(format!("`{id}`")),
        }
    }
    out
}

fn table(caught: &BTreeMap<Fault, Vec<String>>) -> String {
    let mut t = String::new();
    t.push_str(
        "# Broken servers and the cases that catch them\n\n\
         Generated by `conformance/tests/broken_servers.rs`; do not edit. Each broken server is the\n\
         test's fault-free server (`conformance/tests/support/`) with one deliberate fault, which breaks\n\
         the requirement named. Every one must be caught — a case fails or times out against it — while\n\
         the same cases pass against the fault-free server. `transcript.NAME.*` means all five\n\
         deliveries of the transcript. Regenerate with\n\
         `UPDATE_BROKEN_TABLE=1 cargo test -p ferry-conformance --test broken_servers`.\n\n",
    );
    let n = Fault::ALL.len();
    let c = caught.values().filter(|v| !v.is_empty()).count();
    writeln!(t, "{n} broken servers, {c} caught.\n").unwrap();
    t.push_str("| fault | breaks | what it does | caught by |\n|---|---|---|---|\n");
    for &f in Fault::ALL {
        let ids = caught.get(&f).map(|v| compact(v)).unwrap_or_default();
        let by = if ids.is_empty() { "**nothing**".to_owned() } else { ids.join(", ") };
        writeln!(t, "| `{}` | {} | {} | {by} |", f.name(), f.breaks(), f.doc().replace('|', "\\|")).unwrap();
    }
    t
}
