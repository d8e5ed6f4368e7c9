//! Every case of the suite.

pub mod early;
pub mod large;
pub mod legacy_limits;
pub mod limits;
pub mod local;
pub mod model;
pub mod precision;
pub mod resources;
pub mod robustness;
pub mod semantics;
pub mod shutdown;
pub mod support;
pub mod tls;
pub mod trailer;
pub mod transcripts;

use crate::case::Case;
use crate::spec;

/// All cases, in a stable order.
pub fn all() -> Vec<Case> {
    let mut out = transcripts::cases(spec::TRANSCRIPTS);
    out.extend(robustness::cases(spec::VECTORS));
    out.extend(semantics::cases());
    out.extend(limits::cases());
    out.extend(resources::cases());
    out.extend(model::cases());
    out.extend(shutdown::cases());
    out.extend(early::cases());
    out.extend(legacy_limits::cases());
    out.extend(precision::cases());
    out.extend(local::cases());
    out.extend(large::cases());
    out.extend(trailer::cases());
    out.extend(tls::cases());
    out
}

#[cfg(test)]
mod tests {
    //! The hand-written cases against the reference server (ferry-core on the blocking engine),
    //! configured so that every deadline case can run within its timeout: they must all pass or
    //! say why they cannot run, and never fail, time out or break.

    use std::time::Duration;

    use ferry_core::Settings;
    use ferry_proto::Role;

    use crate::case::{Profile, Target, Verdict};
    use crate::runner;

    fn target(addr: std::net::SocketAddr, token: Option<&str>, destructive: bool) -> Target {
        Target {
            addr,
            token: token.map(str::to_owned),
            io_timeout: Duration::from_secs(4),
            case_timeout: Duration::from_secs(20),
            profile: Profile::V1,
            seed: 7,
            model_cases: 8,
            verbose: false,
            run_prefix: "cftest-".into(),
            destructive,
            root: None,
            large: false,
            tls: None,
        }
    }

    fn settings(root: &std::path::Path) -> Settings {
        Settings {
            root: root.to_owned(),
            max_clients: 12,
            handshake_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(3)),
            head_timeout: Duration::from_secs(3),
            progress_timeout: Duration::from_secs(2),
            tokens: [("adm1n".to_owned(), Role::Admin)].into_iter().collect(),
            anonymous: Some(Role::Read),
            ..Settings::default()
        }
    }

    fn run(
        cases: Vec<crate::case::Case>,
        target: &Target,
        jobs: usize,
    ) -> Vec<(String, Verdict, crate::case::Outcome)> {
        let server = runner::probe(target).expect("the reference server answers");
        runner::run(cases, target, server, jobs, false).into_iter().map(|r| (r.id, r.verdict, r.outcome)).collect()
    }

    #[test]
    fn the_reference_server_passes_the_hand_written_cases() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let running = ferry_blocking::spawn(settings(dir.path()), "127.0.0.1:0".parse().unwrap()).expect("a server");
        // Not the 4 GiB upload: on a fast machine it fits its default budget, and a unit test
        // should not write 4 GiB.
        let cases: Vec<_> = super::all()
            .into_iter()
            .filter(|c| !c.id.starts_with("transcript.") && !c.id.starts_with(super::large::CATEGORY))
            .collect();
        let results = run(cases, &target(running.addr, Some("adm1n"), false), 2);
        let bad: Vec<_> = results
            .iter()
            .filter(|(_, v, _)| !matches!(v, Verdict::Pass | Verdict::Unsupported | Verdict::Skipped | Verdict::Warn))
            .collect();
        assert!(bad.is_empty(), "{bad:#?}");
        // What this configuration makes possible must have run.
        for id in [
            "limits.capacity.busy",
            "limits.deadline.handshake",
            "limits.deadline.idle",
            "limits.deadline.head",
            "limits.deadline.progress",
            "semantics.role.read-forbidden",
            "semantics.shutdown.forbidden",
            "semantics.status.records",
            "model.sessions",
            "resources.pipeline.unread",
            "resources.pipeline.list",
            "resources.fresh-while-held",
            "resources.put-race-outcome",
        ] {
            let (_, v, o) = results.iter().find(|(i, _, _)| i == id).expect("the case ran");
            assert_eq!(*v, Verdict::Pass, "{id}: {o:?}");
        }
        let (_, v, _) = results.iter().find(|(i, _, _)| i == "shutdown.graceful").expect("listed");
        assert_eq!(*v, Verdict::Skipped, "destructive cases need --destructive");
    }

    #[test]
    fn the_reference_server_passes_the_local_cases() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let running = ferry_blocking::spawn(settings(dir.path()), "127.0.0.1:0".parse().unwrap()).expect("a server");
        // As ferryd runs it: files copied in get their digests in the background (`[GET-8]`).
        let indexer = ferry_core::indexer::Indexer::start(&running.server, Default::default()).expect("the indexer");
        let cases: Vec<_> =
            super::all().into_iter().filter(|c| c.id.starts_with("local.") || c.id.starts_with("precision.")).collect();
        let mut t = target(running.addr, Some("adm1n"), false);
        t.root = Some(dir.path().to_owned());
        let results = run(cases, &t, 2);
        assert!(results.len() >= 6, "{results:#?}");
        assert!(results.iter().all(|(_, v, _)| *v == Verdict::Pass), "{results:#?}");
        indexer.stop();
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped() {
        // Alone and with time to spare: the server's write bound is per write, and a stalled
        // socket still takes a little now and then, so the drop comes some seconds after 2.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let running = ferry_blocking::spawn(settings(dir.path()), "127.0.0.1:0".parse().unwrap()).expect("a server");
        let cases: Vec<_> = super::all().into_iter().filter(|c| c.id == "limits.deadline.stalled-reader").collect();
        let mut t = target(running.addr, Some("adm1n"), false);
        t.case_timeout = Duration::from_secs(40);
        let results = run(cases, &t, 1);
        assert!(matches!(results[0].1, Verdict::Pass), "{results:#?}");
    }

    #[test]
    fn a_graceful_shutdown_passes_with_destructive() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let running = ferry_blocking::spawn(settings(dir.path()), "127.0.0.1:0".parse().unwrap()).expect("a server");
        let cases: Vec<_> = super::all().into_iter().filter(|c| c.id == "shutdown.graceful").collect();
        let results = run(cases, &target(running.addr, Some("adm1n"), true), 1);
        assert!(matches!(results[0].1, Verdict::Pass), "{results:#?}");
        running.wait().expect("the server stopped cleanly");
    }

    #[test]
    fn a_server_without_legacy_passes_the_legacy_disabled_case() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let s = Settings { legacy: false, ..settings(dir.path()) };
        let running = ferry_blocking::spawn(s, "127.0.0.1:0".parse().unwrap()).expect("a server");
        let cases: Vec<_> = super::all()
            .into_iter()
            .filter(|c| c.id == "semantics.legacy.disabled" || c.id.starts_with("robustness.vector.c2s-legacy"))
            .collect();
        let results = run(cases, &target(running.addr, None, false), 2);
        assert!(results.iter().all(|(_, v, _)| matches!(v, Verdict::Pass | Verdict::Unsupported)), "{results:#?}");
        assert!(
            results.iter().any(|(i, v, _)| i == "semantics.legacy.disabled" && *v == Verdict::Pass),
            "{results:#?}"
        );
    }

    #[test]
    fn a_read_only_server_passes_the_read_only_case() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let s = Settings { read_only: true, ..settings(dir.path()) };
        let running = ferry_blocking::spawn(s, "127.0.0.1:0".parse().unwrap()).expect("a server");
        let cases: Vec<_> = super::all().into_iter().filter(|c| c.id.starts_with("semantics.")).collect();
        let results = run(cases, &target(running.addr, Some("adm1n"), false), 2);
        let bad: Vec<_> = results
            .iter()
            .filter(|(_, v, _)| matches!(v, Verdict::Fail | Verdict::Timeout | Verdict::HarnessError))
            .collect();
        assert!(bad.is_empty(), "{bad:#?}");
        assert!(results.iter().any(|(i, v, _)| i == "semantics.role.read-only" && *v == Verdict::Pass), "{results:#?}");
    }

    #[test]
    fn a_model_failure_transcript_replays_against_the_reference_server() {
        use super::model::{transcript, Content, Step};
        use super::transcripts::{replay, Delivery};
        use ferry_proto::PutMode;

        let dir = tempfile::tempdir().expect("a temporary directory");
        let running = ferry_blocking::spawn(settings(dir.path()), "127.0.0.1:0".parse().unwrap()).expect("a server");
        let p = "cfx-1-";
        let n = |s: &str| format!("{p}{s}");
        let steps = vec![
            Step::Put(n("a"), PutMode::Overwrite, Content::Bytes(b"EOF\0\xff".to_vec())),
            Step::Put(n("\u{e9} x"), PutMode::CreateOnly, Content::Fill(70_000, 7)),
            Step::Put(n("a"), PutMode::CreateOnly, Content::Bytes(Vec::new())),
            Step::List,
            Step::Stat(n("b")),
            Step::Get(n("a"), 2),
            Step::Get(n("a"), 9),
            Step::Get(n("\u{e9} x"), 0),
            Step::Put(n("a"), PutMode::Overwrite, Content::Bytes(Vec::new())),
            Step::Delete(n("a")),
            Step::Delete(n("a")),
            Step::Stat(n("\u{e9} x")),
            Step::List,
        ];
        let text = transcript(1, p, &steps, true, "REQ-1");
        let t = ferry_proto::transcript::Transcript::parse(&text).expect("parses");
        let target = target(running.addr, Some("adm1n"), false);
        for (i, delivery) in [Delivery::Whole, Delivery::Pipelined, Delivery::Bytewise].into_iter().enumerate() {
            let ctx = crate::context::Ctx {
                prefix: format!("zz{i}-"),
                deadline: std::time::Instant::now() + target.case_timeout,
                server: None,
                target: target.clone(),
                busy: crate::wire::BusyFlag::default(),
            };
            let outcome = replay(&t, &text, delivery, &ctx);
            // The final LIST expects the session's files alone.
            ctx.cleanup();
            assert!(matches!(outcome, crate::case::Outcome::Pass), "{delivery:?}: {outcome:?}\n{text}");
        }
    }
}
