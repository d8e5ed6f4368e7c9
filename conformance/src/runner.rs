//! Runs cases against a server: selection, needs, parallelism, per-case timeouts, cleanup.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_proto::{Capabilities, ServerHello};

use crate::case::{Case, Outcome, Profile, Target, Verdict};
use crate::context::Ctx;
use crate::wire::{BusyFlag, Conn};

/// Below this `max_name_len` the run's names begin with a short prefix instead of the readable
/// one (`cf1a2b3c4d-123-`): `c`, three letters or digits for the run, and the case's index in
/// base 36, all of one width, so that no case's prefix begins another's.
const ROOMY_NAMES: u32 = 64;

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

/// How the names a run's cases create begin: a prefix unique to the run, then one unique to the
/// case.
#[derive(Debug, Clone)]
struct Prefixes {
    run: String,
    /// The width of the base-36 case index, for short prefixes; `None` for readable ones.
    width: Option<usize>,
}

impl Prefixes {
    /// The readable prefixes, or short ones when the server's names are short.
    fn for_run(target: &Target, server: Option<&ServerHello>, cases: usize) -> Self {
        if server.is_none_or(|h| h.max_name_len >= ROOMY_NAMES) {
            return Self { run: target.run_prefix.clone(), width: None };
        }
        // Three base-36 digits of a hash of the readable prefix, which holds the run's nonce.
        let hash = target
            .run_prefix
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let run = format!("c{}", base36(hash % 36u64.pow(3), 3));
        let mut width = 1;
        while 36usize.pow(width) < cases.max(1) {
            width += 1;
        }
        Self { run, width: Some(width as usize) }
    }

    fn case(&self, index: usize) -> String {
        match self.width {
            Some(w) => format!("{}{}", self.run, base36(index as u64, w)),
            None => format!("{}{index}-", self.run),
        }
    }
}

/// `n` in base 36 (digits, then lowercase letters), at least `width` digits.
fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 || out.len() < width {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The server's connection slots, shared by the cases running at once: a case starts only when
/// the connections it may hold at once ([`crate::case::Needs::connections`]) are free, so that
/// the run's parallelism stays within the announced `max_clients`.
#[derive(Debug)]
struct Budget {
    /// The announced `max_clients`; 0 when not announced (no bound).
    total: u32,
    free: Mutex<u32>,
    freed: Condvar,
}

impl Budget {
    fn new(total: u32) -> Self {
        Self { total, free: Mutex::new(total), freed: Condvar::new() }
    }

    /// Waits until `want` slots (at most all of them) are free and takes them; how many it took.
    fn take(&self, want: u32) -> u32 {
        if self.total == 0 {
            return 0;
        }
        let want = want.clamp(1, self.total);
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free < want {
            free = self.freed.wait(free).unwrap_or_else(PoisonError::into_inner);
        }
        *free -= want;
        want
    }

    fn give_back(&self, n: u32) {
        if n > 0 {
            *self.free.lock().unwrap_or_else(PoisonError::into_inner) += n;
            self.freed.notify_all();
        }
    }
}

/// Runs `cases` with `jobs` workers; results come back in the cases' order.
///
/// Cases run in three phases: first the ordinary ones, `jobs` at a time (and no more than the
/// server's `max_clients` allows); then those that need the server to themselves
/// (`Needs::alone`), one at a time; last those that stop the server (`Needs::destructive`), one
/// at a time. A case that did not pass after one of its connections met a full server (`BUSY`)
/// runs again at the end of its phase, alone; if the server is full again, nothing was judged
/// and the case is skipped.
pub fn run(
    cases: Vec<Case>,
    target: &Target,
    server: Option<ServerHello>,
    jobs: usize,
    strict: bool,
) -> Vec<CaseResult> {
    let prefixes = Prefixes::for_run(target, server.as_ref(), cases.len());
    let target = &Target { run_prefix: prefixes.run.clone(), ..target.clone() };
    let run = Arc::new(Run {
        target: target.clone(),
        server,
        strict,
        prefixes,
        budget: Budget::new(server.map_or(0, |h| h.max_clients)),
    });
    let cases: Vec<Arc<Case>> = cases.into_iter().map(Arc::new).collect();
    let phase = |c: &Case| u8::from(c.needs.alone) + 2 * u8::from(c.needs.destructive);
    let mut results: Vec<Option<CaseResult>> = vec![None; cases.len()];
    for (p, workers) in [(0u8, jobs.max(1)), (1, 1), (2, 1), (3, 1)] {
        let indices: Vec<usize> = (0..cases.len()).filter(|&i| phase(&cases[i]) == p).collect();
        if indices.is_empty() {
            continue;
        }
        let mut again = Vec::new();
        for (i, r, busy) in run_phase(&cases, indices, &run, workers) {
            // Skipped too: a case gives up when BUSY outlasts its retries, and alone it may run.
            let judged = matches!(r.verdict, Verdict::Pass | Verdict::Unsupported);
            if busy && !judged && !cases[i].needs.destructive {
                again.push(i);
            } else {
                results[i] = Some(if busy { full_server(r) } else { r });
            }
        }
        if !again.is_empty() {
            for (i, r, busy) in run_phase(&cases, again, &run, 1) {
                results[i] = Some(if busy { full_server(r) } else { r });
            }
        }
    }
    results.into_iter().flatten().collect()
}

/// What every case of a run shares.
struct Run {
    target: Target,
    server: Option<ServerHello>,
    strict: bool,
    prefixes: Prefixes,
    budget: Budget,
}

/// Whether a verdict stands even if the server was full at some point: it passed, or did not run.
fn settled(r: &CaseResult) -> bool {
    matches!(r.verdict, Verdict::Pass | Verdict::Unsupported | Verdict::Skipped)
}

/// A result that met a full server: a verdict that did not settle becomes "skipped", since the
/// server's fullness, not its behaviour, may have decided it.
fn full_server(r: CaseResult) -> CaseResult {
    if settled(&r) {
        return r;
    }
    let what = match &r.outcome {
        Outcome::Fail(f) | Outcome::Warn(f) => f.message.clone(),
        Outcome::HarnessError(m) => m.clone(),
        _ => String::new(),
    };
    CaseResult {
        verdict: Verdict::Skipped,
        outcome: Outcome::Skipped(format!(
            "the server answered BUSY to a connection of this case, even with no other case running: it was at \
             capacity (other clients, a per-address cap), so nothing was judged ({}: {what})",
            r.verdict.as_str()
        )),
        ..r
    }
}

fn run_phase(cases: &[Arc<Case>], indices: Vec<usize>, run: &Arc<Run>, jobs: usize) -> Vec<(usize, CaseResult, bool)> {
    let indices = Arc::new(indices);
    let next = Arc::new(Mutex::new(0usize));
    let results: Arc<Mutex<Vec<(usize, CaseResult, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (cases, indices, next, results, run) =
                (cases.to_vec(), indices.clone(), next.clone(), results.clone(), run.clone());
            std::thread::spawn(move || loop {
                let k = {
                    let mut n = next.lock().unwrap_or_else(PoisonError::into_inner);
                    let k = *n;
                    *n += 1;
                    k
                };
                let Some(&i) = indices.get(k) else { break };
                let slots = run.budget.take(cases[i].needs.connections);
                let (result, busy) = run_one(cases[i].clone(), &run, i);
                run.budget.give_back(slots);
                results.lock().unwrap_or_else(PoisonError::into_inner).push((i, result, busy));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let out = std::mem::take(&mut *results.lock().unwrap_or_else(PoisonError::into_inner));
    out
}

/// Runs one case; its result, and whether one of its connections met a full server.
fn run_one(case: Arc<Case>, run: &Run, index: usize) -> (CaseResult, bool) {
    let (target, server, strict) = (&run.target, run.server, run.strict);
    let started = Instant::now();
    let busy = BusyFlag::default();
    let outcome = precheck(&case, target, server.as_ref()).map(|o| (o, false)).unwrap_or_else(|| {
        let ctx = Ctx {
            target: target.clone(),
            server,
            prefix: run.prefixes.case(index),
            deadline: started + target.case_timeout,
            busy: busy.clone(),
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
    let result = CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        requirements: case.requirements.clone(),
        verdict,
        outcome,
        duration: started.elapsed(),
    };
    (result, busy.is_raised())
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the case panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Failure;

    fn target(run_prefix: &str) -> Target {
        Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            token: None,
            io_timeout: Duration::from_secs(1),
            case_timeout: Duration::from_secs(3),
            profile: Profile::V1,
            seed: 1,
            model_cases: 1,
            verbose: false,
            run_prefix: run_prefix.into(),
            destructive: false,
            root: None,
            large: false,
            tls: None,
        }
    }

    fn hello(max_name_len: u32) -> ServerHello {
        ServerHello {
            version: 1,
            role: ferry_proto::Role::Write,
            capabilities: Capabilities(0),
            max_name_len,
            max_file_size: 1 << 20,
            max_clients: 2,
            idle_timeout_ms: 0,
            head_timeout_ms: 1000,
            progress_timeout_ms: 1000,
        }
    }

    #[test]
    fn short_names_get_short_prefixes_of_one_width() {
        let t = target("cf1a2b3c4d-");
        let roomy = Prefixes::for_run(&t, Some(&hello(255)), 300);
        assert_eq!(roomy.case(7), "cf1a2b3c4d-7-");
        assert_eq!(Prefixes::for_run(&t, None, 300).case(12), "cf1a2b3c4d-12-");
        let short = Prefixes::for_run(&t, Some(&hello(16)), 300);
        assert_eq!(short.run.len(), 4);
        let all: Vec<String> = (0..300).map(|i| short.case(i)).collect();
        assert!(all.iter().all(|p| p.len() == 6 && p.starts_with(&short.run)), "{all:?}");
        // No case's prefix begins another's, so cleaning up one never touches another's files.
        for (i, a) in all.iter().enumerate() {
            assert!(all.iter().enumerate().all(|(j, b)| i == j || !b.starts_with(a.as_str())), "{a}");
        }
        assert_ne!(short.run, Prefixes::for_run(&target("cf99999999-"), Some(&hello(16)), 300).run);
        assert_eq!(Prefixes::for_run(&t, Some(&hello(16)), 2000).case(1295).len(), 4 + 3);
    }

    #[test]
    fn base36_pads_to_its_width() {
        assert_eq!(base36(0, 2), "00");
        assert_eq!(base36(35, 1), "z");
        assert_eq!(base36(36, 1), "10");
        assert_eq!(base36(1295, 2), "zz");
    }

    #[test]
    fn the_budget_never_gives_more_than_the_server_serves() {
        let budget = Arc::new(Budget::new(2));
        assert_eq!(budget.take(5), 2, "a case needing more than all gets all");
        let b = budget.clone();
        let waiter = std::thread::spawn(move || b.take(1));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "nothing is free until the first case gives its slots back");
        budget.give_back(2);
        assert_eq!(waiter.join().unwrap(), 1);
        assert_eq!(Budget::new(0).take(3), 0, "no max_clients announced: no bound");
    }

    #[test]
    fn a_failure_beside_a_full_server_is_skipped_and_a_pass_stands() {
        let result = |outcome: Outcome, verdict| CaseResult {
            id: "x".into(),
            title: String::new(),
            requirements: vec![],
            verdict,
            outcome,
            duration: Duration::ZERO,
        };
        let failed = full_server(result(Outcome::Fail(Failure::new("CAP-1", "got BUSY")), Verdict::Fail));
        assert_eq!(failed.verdict, Verdict::Skipped);
        assert!(matches!(&failed.outcome, Outcome::Skipped(m) if m.contains("BUSY") && m.contains("got BUSY")));
        assert_eq!(full_server(result(Outcome::Pass, Verdict::Pass)).verdict, Verdict::Pass);
    }
}
