//! The `trailer.*` cases against correct servers in each of the forms PROTOCOL.md allows for the
//! `TRAILER` capability (§ 6.5, § 7.10): not announced; announced, FETCH answered as GET; announced,
//! FETCH from 0 answered in the trailing form. None may fail; the cases that can run must pass,
//! the others say why they cannot; only `[TRL-7]`, a SHOULD, may warn, and only where the server
//! trails a file whose digest it could know.
//!
//! The reference server (ferry-core) does not announce `TRAILER` yet, so the servers here are the
//! test's own (`support::server`), whose broken variants `broken_servers.rs` runs.

// Only the server of the support module is used here.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use ferry_conformance::case::{Profile, Target, Verdict};
use ferry_conformance::cases;
use ferry_conformance::runner::{self, CaseResult};
use support::server::Server;
use support::{Setup, Trailer};

fn run(trailer: Trailer) -> Vec<CaseResult> {
    let server = Server::start(Setup { trailer, ..Setup::default() }, None);
    let target = Target {
        addr: server.addr(),
        token: None,
        io_timeout: Duration::from_secs(3),
        case_timeout: Duration::from_secs(20),
        profile: Profile::V1,
        seed: 16,
        model_cases: 0,
        verbose: false,
        run_prefix: "cftrl-".into(),
        destructive: false,
        root: None,
        large: false,
        tls: None,
    };
    let hello = runner::probe(&target).expect("the probe's handshake");
    let all: Vec<_> = cases::all().into_iter().filter(|c| c.id.starts_with("trailer.")).collect();
    assert!(all.len() >= 10, "the trailer cases are listed");
    runner::run(all, &target, hello, 4, false)
}

fn verdicts(results: &[CaseResult]) -> Vec<(String, Verdict)> {
    results.iter().map(|r| (r.id.clone(), r.verdict)).collect()
}

fn outcomes(results: &[CaseResult]) -> String {
    format!("{:#?}", results.iter().map(|r| (&r.id, &r.outcome)).collect::<Vec<_>>())
}

#[test]
fn a_server_without_trailer_refuses_its_requests_and_the_rest_is_unsupported() {
    let results = run(Trailer::Off);
    for (id, v) in verdicts(&results) {
        let want = if id == "trailer.not-announced" { Verdict::Pass } else { Verdict::Unsupported };
        assert_eq!(v, want, "{id}: {}", outcomes(&results));
    }
}

#[test]
fn a_server_that_answers_fetch_as_get_passes_every_trailer_case() {
    let results = run(Trailer::Leading);
    for (id, v) in verdicts(&results) {
        let want = if id == "trailer.not-announced" { Verdict::Unsupported } else { Verdict::Pass };
        assert_eq!(v, want, "{id}: {}", outcomes(&results));
    }
}

#[test]
fn a_server_that_trails_every_fetch_from_0_passes_and_is_warned_for_known_digests() {
    let results = run(Trailer::Trailing);
    for (id, v) in verdicts(&results) {
        let want = match id.as_str() {
            "trailer.not-announced" => Verdict::Unsupported,
            "trailer.fetch.known-digest" => Verdict::Warn,
            _ => Verdict::Pass,
        };
        assert_eq!(v, want, "{id}: {}", outcomes(&results));
    }
}
