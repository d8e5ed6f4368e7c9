//! Runs cases against a server: selection, needs, parallelism, per-case timeouts, cleanup.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::{Capabilities, ServerHello};

use crate::case::{Case, Outcome, Profile, Target, Verdict};
use crate::context::Ctx;
use crate::wire::Conn;

/// Which cases to run: ids and requirement ids match by prefix.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub cases: Vec<String>,
    pub requirements: Vec<String>,
    pub skip: Vec<String>,
}

impl Selection {
    pub fn admits(&self, case: &Case) -> bool {
        let by_id = self.cases.is_empty() || self.cases.iter().any(|p| case.id.starts_with(p.as_str()));
        let by_req = self.requirements.is_empty()
            || self.requirements.iter().any(|p| case.requirements.iter().any(|r| r.starts_with(p.as_str())));
        let skipped = self.skip.iter().any(|p| case.id.starts_with(p.as_str()));
        by_id && by_req && !skipped
    }
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub requirements: Vec<String>,
    pub verdict: Verdict,
    pub outcome: Outcome,
    pub duration: Duration,
}

/// Connects once to learn the server's hello (version 1 profile only).
///
/// # Errors
/// The server cannot be reached or refused the handshake: nothing can be judged.
pub fn probe(target: &Target) -> Result<Option<ServerHello>, String> {
    if target.profile == Profile::Legacy {
        return Ok(None);
    }
    let conn = Conn::open(target.addr, target.token.as_deref(), target.io_timeout)
        .map_err(|e| format!("cannot complete a handshake with {}: {e}", target.addr))?;
    let hello = conn.hello;
    drop(conn);
    Ok(Some(hello))
}

fn precheck(case: &Case, target: &Target, server: Option<&ServerHello>) -> Option<Outcome> {
    if case.needs.profile != target.profile {
        return Some(Outcome::Skipped(format!("profile {:?} only", case.needs.profile)));
    }
    if case.needs.destructive && !target.destructive {
        return Some(Outcome::Skipped("stops the server: runs only with --destructive".into()));
    }
    if case.needs.root && target.root.is_none() {
        return Some(Outcome::Skipped(
            "needs --root: the server's root directory, on this machine, for the suite to plant entries in".into(),
        ));
    }
    let server = server?;
    if server.role < case.needs.role {
        return Some(Outcome::Skipped(format!(
            "needs the {} role; the server granted {} (give --token)",
            case.needs.role, server.role
        )));
    }
    if !server.capabilities.contains(case.needs.capabilities) {
        let missing = Capabilities(case.needs.capabilities.0 & !server.capabilities.0);
        return Some(Outcome::Unsupported(format!("the server does not announce {}", missing.names().join(", "))));
    }
    None
}

/// Runs `cases` with `jobs` workers; results come back in the cases' order.
///
/// Cases run in three phases: first the ordinary ones, `jobs` at a time; then those that need
/// the server to themselves (`Needs::alone`), one at a time; last those that stop the server
/// (`Needs::destructive`), one at a time.
pub fn run(
    cases: Vec<Case>,
    target: &Target,
    server: Option<ServerHello>,
    jobs: usize,
    strict: bool,
) -> Vec<CaseResult> {
    let cases: Vec<Arc<Case>> = cases.into_iter().map(Arc::new).collect();
    let phase = |c: &Case| u8::from(c.needs.alone) + 2 * u8::from(c.needs.destructive);
    let mut results: Vec<Option<CaseResult>> = vec![None; cases.len()];
    for (p, workers) in [(0u8, jobs.max(1)), (1, 1), (2, 1), (3, 1)] {
        let indices: Vec<usize> = (0..cases.len()).filter(|&i| phase(&cases[i]) == p).collect();
        if indices.is_empty() {
            continue;
        }
        for (i, r) in run_phase(&cases, indices, target, server, workers, strict) {
            results[i] = Some(r);
        }
    }
    results.into_iter().flatten().collect()
}

fn run_phase(
    cases: &[Arc<Case>],
    indices: Vec<usize>,
    target: &Target,
    server: Option<ServerHello>,
    jobs: usize,
    strict: bool,
) -> Vec<(usize, CaseResult)> {
    let indices = Arc::new(indices);
    let next = Arc::new(Mutex::new(0usize));
    let results: Arc<Mutex<Vec<(usize, CaseResult)>>> = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (cases, indices, next, results, target) =
                (cases.to_vec(), indices.clone(), next.clone(), results.clone(), target.clone());
            std::thread::spawn(move || loop {
                let k = {
                    let mut n = next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let k = *n;
                    *n += 1;
                    k
                };
                let Some(&i) = indices.get(k) else { break };
                let result = run_one(cases[i].clone(), &target, server, i, strict);
                results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, result));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let out = std::mem::take(&mut *results.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    out
}

fn run_one(case: Arc<Case>, target: &Target, server: Option<ServerHello>, index: usize, strict: bool) -> CaseResult {
    let started = Instant::now();
    let outcome = precheck(&case, target, server.as_ref()).map(|o| (o, false)).unwrap_or_else(|| {
        let ctx = Ctx {
            target: target.clone(),
            server,
            prefix: format!("{}{index}-", target.run_prefix),
            deadline: started + target.case_timeout,
        };
        let (tx, rx) = mpsc::channel();
        let c = case.clone();
        // The case runs on its own thread: a hang costs its timeout, never the run.
        let spawned = std::thread::Builder::new().name(format!("case-{index}")).spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| (c.run)(&ctx)))
                .unwrap_or_else(|p| Outcome::HarnessError(panic_message(&p)));
            if c.needs.profile == Profile::V1 {
                ctx.cleanup();
            }
            let _ = tx.send(outcome);
        });
        match spawned {
            Err(e) => (Outcome::HarnessError(format!("cannot start the case: {e}")), false),
            Ok(_) => match rx.recv_timeout(target.case_timeout + target.io_timeout) {
                Ok(o) => (o, false),
                Err(_) => (Outcome::HarnessError(String::new()), true),
            },
        }
    });
    let (outcome, timed_out) = outcome;
    let verdict = match &outcome {
        _ if timed_out => Verdict::Timeout,
        Outcome::Pass => Verdict::Pass,
        Outcome::Fail(_) => Verdict::Fail,
        Outcome::Warn(_) if strict => Verdict::Fail,
        Outcome::Warn(_) => Verdict::Warn,
        Outcome::Unsupported(_) => Verdict::Unsupported,
        Outcome::Skipped(_) => Verdict::Skipped,
        Outcome::HarnessError(_) => Verdict::HarnessError,
    };
    let outcome = if timed_out {
        Outcome::Fail(crate::case::Failure {
            message: format!("no verdict within {:?}: the server hung", target.case_timeout),
            ending: Some(crate::case::Ending::TimedOut),
            ..Default::default()
        })
    } else {
        outcome
    };
    CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        requirements: case.requirements.clone(),
        verdict,
        outcome,
        duration: started.elapsed(),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the case panicked".to_owned())
}
