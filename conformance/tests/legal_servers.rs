//! A correct server fails no case, whatever settings PROTOCOL.md allows it: the suite reads what
//! the hello announces (limits, role, capabilities, deadlines) and what a probe shows (a
//! read-only server, no anonymous access), adapts what it can and calls the rest unsupported;
//! it keeps its parallelism within `max_clients`, and a SHOULD the server skips (a lingering
//! close) is at most a warning.
//!
//! Each test runs the reference server (ferry-core on the blocking engine) in one such
//! configuration against every case but the slowest (`resources.*`, which need the server to
//! themselves for long, and the 32 MiB stalled reader); `.ci/run` runs the whole suite against
//! `ferryd` in several of them, on both engines.

use std::time::Duration;

use ferry_conformance::case::{Profile, Target, Verdict};
use ferry_conformance::{cases, runner};
use ferry_core::Settings;
use ferry_proto::Role;

/// The token of the write role where anonymous access is restricted.
const WRITE_TOKEN: &str = "w-token";

fn base(root: &std::path::Path) -> Settings {
    Settings {
        root: root.to_owned(),
        handshake_timeout: Duration::from_secs(2),
        head_timeout: Duration::from_secs(3),
        progress_timeout: Duration::from_secs(3),
        tokens: [(WRITE_TOKEN.to_owned(), Role::Write)].into_iter().collect(),
        ..Settings::default()
    }
}

/// Runs the cases against a server with `settings`: none may fail, time out or break, the cases
/// named in `must_pass` must pass (adapted, not skipped), and nothing may be left on the server.
/// Warnings are printed (`--nocapture`).
fn run(settings: impl FnOnce(Settings) -> Settings, token: Option<&str>, jobs: usize, must_pass: &[&str]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let running = ferry_blocking::spawn(settings(base(dir.path())), "127.0.0.1:0".parse().unwrap()).expect("a server");
    let target = Target {
        addr: running.addr,
        token: token.map(str::to_owned),
        io_timeout: Duration::from_secs(4),
        case_timeout: Duration::from_secs(20),
        profile: Profile::V1,
        seed: 11,
        model_cases: 8,
        verbose: false,
        run_prefix: "cflegal1a2b3c4d-".into(),
        destructive: false,
        root: None,
        large: false,
        tls: None,
    };
    let all: Vec<_> = cases::all()
        .into_iter()
        .filter(|c| {
            c.needs.profile == Profile::V1
                && !c.id.starts_with("resources.")
                && c.id != "limits.deadline.stalled-reader"
        })
        .collect();
    let hello = runner::probe(&target).expect("the probe's handshake");
    let results = runner::run(all, &target, hello, jobs, false);
    let bad: Vec<_> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail | Verdict::Timeout | Verdict::HarnessError))
        .map(|r| (&r.id, &r.outcome))
        .collect();
    for r in results.iter().filter(|r| r.verdict == Verdict::Warn) {
        println!("warn {}: {:?}", r.id, r.outcome);
    }
    assert!(bad.is_empty(), "a correct server failed: {bad:#?}");
    for id in must_pass {
        let r = results.iter().find(|r| r.id == *id).unwrap_or_else(|| panic!("{id} ran"));
        assert_eq!(r.verdict, Verdict::Pass, "{id}: {:?}", r.outcome);
    }
    // Nothing left behind, once the server has finished with connections the suite dropped (an
    // upload cut off is discarded when its connection's end is seen). The digest index, where
    // the file system has no xattrs, is the server's own.
    let left = || -> Vec<_> {
        std::fs::read_dir(dir.path())
            .expect("the root")
            .map(|e| e.expect("an entry").file_name())
            .filter(|n| n != ".ferry-digests")
            .collect()
    };
    // A case that gave up on a slow 4 GiB upload leaves a DELETE behind it, which the server
    // carries out once it has stored the file: on a loaded machine, that may take a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(left().is_empty(), "files left on the server: {:?}", left());
}

#[test]
fn short_names_and_small_files() {
    run(
        |s| Settings { max_name_len: 16, max_file_size: 4, ..s },
        None,
        4,
        // Adapted, not skipped: short prefixes, uploads of at most 4 bytes.
        &[
            "transcript.empty-file.bytewise",
            "transcript.bad-names.whole",
            "semantics.list.sorted-once",
            "robustness.upload.disconnect",
            "model.sessions",
        ],
    );
}

#[test]
fn read_only() {
    run(
        |s| Settings { read_only: true, ..s },
        None,
        4,
        &["semantics.role.read-only", "transcript.bad-names.whole", "transcript.put-bad-name-discard.fields"],
    );
}

#[test]
fn no_anonymous_access_and_no_legacy_and_a_history_of_one() {
    run(
        |s| Settings { anonymous: None, legacy: false, history: 1, ..s },
        Some(WRITE_TOKEN),
        4,
        &["semantics.legacy.disabled", "semantics.status.records", "transcript.put-stat-get-delete.pipelined"],
    );
}

#[test]
fn no_lingering_close() {
    // `[ERR-9]` is a SHOULD: a reset that destroys the last reply is a warning.
    run(|s| Settings { linger: Duration::ZERO, ..s }, None, 4, &[]);
}

#[test]
fn an_idle_deadline_of_one_second() {
    // A slow reader of a large reply must still send its next request in time.
    run(
        |s| Settings { idle_timeout: Some(Duration::from_secs(1)), ..s },
        None,
        4,
        &["transcript.large-file.slow-reader", "limits.deadline.idle"],
    );
}

#[test]
fn two_clients_at_most_with_four_jobs() {
    run(
        |s| Settings { max_clients: 2, anonymous: Some(Role::Read), ..s },
        Some(WRITE_TOKEN),
        4,
        &["limits.capacity.busy", "semantics.role.read-forbidden", "model.sessions"],
    );
}
