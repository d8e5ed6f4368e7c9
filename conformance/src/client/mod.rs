//! `conformance client`: checks any Ferry *client* against PROTOCOL.md.
//!
//! For each case the suite starts its own server on 127.0.0.1 — an [`server::Adversary`] that
//! answers as the case's script says, honestly or with the lie the case is about — and runs the
//! client under test through a command template ([`template`]; conformance/README.md, "The
//! client contract"), in a fresh sandbox directory. It then judges what it can observe:
//!
//! - the exit status: 0 for success, anything else for failure;
//! - the files left in `{dir}`, and anything written elsewhere in the sandbox (the sandbox is a
//!   temporary parent of `{dir}`, so `{dir}/../x` lands where it is seen);
//! - the bytes the client sent, checked against the rules PROTOCOL.md sets for senders and
//!   clients as they arrive ([`server`]);
//! - whether it finished at all: a run that outlasts its hard limit is killed, with every
//!   process it started ([`process`]).

pub mod cases;
pub mod process;
pub mod replies;
pub mod server;
pub mod template;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::case::{Failure, Outcome, Verdict};
use crate::runner::{CaseResult, Selection};
use process::Finished;
use server::{Adversary, ConnLog, Script};
use template::{Op, Template, Values};

/// How the client suite is run: the same for every case.
#[derive(Debug, Clone)]
pub struct Settings {
    pub template: Template,
    /// One run of the client may take this long; then it is killed.
    pub limit: Duration,
    /// `{timeout}` for ordinary cases, in seconds.
    pub timeout: u64,
}

/// Why a case did not pass.
#[derive(Debug)]
pub enum Stop {
    Fail(Box<Failure>),
    Warn(Box<Failure>),
    Unsupported(String),
    Harness(String),
}

impl Stop {
    /// A MUST broken.
    pub fn fail(f: Failure) -> Self {
        Self::Fail(Box::new(f))
    }

    /// A SHOULD not met.
    pub fn warn(f: Failure) -> Self {
        Self::Warn(Box::new(f))
    }
}

/// A case's conclusion: `Ok` is a pass.
pub type Judged = Result<(), Stop>;

/// One client case.
pub struct ClientCase {
    /// Stable and unique, dotted: `client.get.wrong-md5`.
    pub id: String,
    pub title: String,
    /// The PROTOCOL.md ids it checks.
    pub requirements: Vec<String>,
    pub run: Box<dyn Fn(&Ctx<'_>) -> Judged + Send + Sync>,
}

impl std::fmt::Debug for ClientCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCase").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What a running case can use.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub id: &'a str,
}

/// What one run of the client asks.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub op: Op,
    pub name: &'a str,
    /// `{timeout}`; the run's default when `None`.
    pub timeout: Option<u64>,
    /// `{profile}`.
    pub profile: &'a str,
}

impl<'a> Ask<'a> {
    pub fn get(name: &'a str) -> Self {
        Self { op: Op::Get, name, timeout: None, profile: "v1" }
    }

    pub fn op(op: Op, name: &'a str) -> Self {
        Self { op, name, timeout: None, profile: "v1" }
    }

    #[must_use]
    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout = Some(secs);
        self
    }

    #[must_use]
    pub fn legacy(mut self) -> Self {
        self.profile = "legacy";
        self
    }
}

/// What one run of the client left behind.
#[derive(Debug, Clone)]
pub struct Observation {
    pub finished: Finished,
    /// `{dir}/{name}`, if it is a file.
    pub file: Option<Vec<u8>>,
    /// Every entry of the sandbox outside `{dir}` (and the client's home) that was not there
    /// before, or changed.
    pub outside: Vec<String>,
    /// Every entry's path relative to the sandbox, `{dir}` included (the home excluded).
    pub names: Vec<String>,
    /// What was asked.
    pub op: Op,
    pub name: String,
}

impl Observation {
    /// Exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.finished.code == Some(0)
    }

    /// Standard output and error, as text.
    pub fn output(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.finished.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&self.finished.stderr));
        s
    }

    /// How the run ended, for messages.
    pub fn ending(&self) -> String {
        let status = match self.finished.code {
            _ if self.finished.killed => format!("killed after {:.1?}", self.finished.elapsed),
            Some(c) => format!("exit status {c} after {:.1?}", self.finished.elapsed),
            None => format!("ended by a signal after {:.1?}", self.finished.elapsed),
        };
        let err = String::from_utf8_lossy(&self.finished.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        let last: String = ferry_proto::name::escape_for_display(last).chars().take(300).collect();
        if last.is_empty() {
            status
        } else {
            format!("{status}; its last words: {last}")
        }
    }
}

/// A case's server and sandbox, for one or more runs of the client.
pub struct Session<'a> {
    ctx: &'a Ctx<'a>,
    adversary: Adversary,
    sandbox: tempfile::TempDir,
    before: Vec<(String, Option<Vec<u8>>)>,
}

/// The sandbox's layout, relative to its root.
const DIR: &str = "dir";
const HOME: &str = "home";
const WORK: &str = "work";
const INPUT: &str = "in";

impl<'a> Ctx<'a> {
    /// Starts the case's server with `script`, and a fresh sandbox.
    ///
    /// # Errors
    /// The sandbox or the listening socket cannot be made.
    pub fn session(&'a self, script: Script) -> Result<Session<'a>, Stop> {
        self.session_at(|_| script)
    }

    /// [`Ctx::session`], with a script made for the sandbox's root (`{dir}`'s parent).
    ///
    /// # Errors
    /// The sandbox or the listening socket cannot be made.
    pub fn session_at(&'a self, script: impl FnOnce(&Path) -> Script) -> Result<Session<'a>, Stop> {
        let harness = |what: &str, e: std::io::Error| Stop::Harness(format!("{what}: {e}"));
        let sandbox = tempfile::Builder::new()
            .prefix("ferry-client-case-")
            .tempdir()
            .map_err(|e| harness("creating the sandbox", e))?;
        for d in [DIR, HOME, WORK, INPUT] {
            std::fs::create_dir(sandbox.path().join(d)).map_err(|e| harness("creating the sandbox", e))?;
        }
        let adversary = Adversary::start(script(sandbox.path())).map_err(|e| harness("starting the server", e))?;
        let mut s = Session { ctx: self, adversary, sandbox, before: Vec::new() };
        s.before = s.scan(false);
        Ok(s)
    }
}

impl Session<'_> {
    /// The sandbox's root: `{dir}`'s parent.
    pub fn root(&self) -> &Path {
        self.sandbox.path()
    }

    /// Writes the local file a PUT uploads; its path is `{path}`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn input(&mut self, name: &str, content: &[u8]) -> Result<PathBuf, Stop> {
        let path = self.root().join(INPUT).join(name);
        std::fs::write(&path, content).map_err(|e| Stop::Harness(format!("writing {}: {e}", path.display())))?;
        self.before = self.scan(false);
        Ok(path)
    }

    /// Runs the client once and observes what it did.
    ///
    /// # Errors
    /// The client's command cannot be started.
    pub fn run(&self, ask: &Ask<'_>) -> Result<Observation, Stop> {
        let settings = self.ctx.settings;
        let root = self.root();
        let dir = root.join(DIR);
        let path = root.join(INPUT).join(ask.name);
        let (dir_s, path_s) = (dir.to_string_lossy().into_owned(), path.to_string_lossy().into_owned());
        let values = Values {
            addr: self.adversary.addr.to_string(),
            op: ask.op,
            name: ask.name,
            dir: &dir_s,
            path: &path_s,
            timeout: ask.timeout.unwrap_or(settings.timeout),
            profile: ask.profile,
        };
        let argv = settings.template.render(&values);
        let home = root.join(HOME);
        let env = [
            ("HOME", home.to_string_lossy().into_owned()),
            ("XDG_CACHE_HOME", home.join(".cache").to_string_lossy().into_owned()),
            ("XDG_CONFIG_HOME", home.join(".config").to_string_lossy().into_owned()),
            ("XDG_DATA_HOME", home.join(".local/share").to_string_lossy().into_owned()),
            ("TMPDIR", home.to_string_lossy().into_owned()),
            ("FERRY_CONFORMANCE_CASE", self.ctx.id.to_owned()),
        ];
        let finished = process::run(&argv, &root.join(WORK), &env, settings.limit)
            .map_err(|e| Stop::Harness(format!("cannot run {:?}: {e}", argv[0])))?;
        let file = std::fs::symlink_metadata(dir.join(ask.name))
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|_| std::fs::read(dir.join(ask.name)).ok());
        let after = self.scan(false);
        let outside = after
            .iter()
            .filter(|(p, _)| !p.starts_with(&format!("{DIR}/")) && p != DIR)
            .filter(|entry| !self.before.contains(entry))
            .map(|(p, _)| p.clone())
            .collect();
        let names = self.scan(true).into_iter().map(|(p, _)| p).collect();
        Ok(Observation { finished, file, outside, names, op: ask.op, name: ask.name.to_owned() })
    }

    /// Every entry of the sandbox but the home, with a regular file's content (`with_dir`: the
    /// entries of `{dir}` too).
    fn scan(&self, with_dir: bool) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.root().to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(self.root()).unwrap_or(&p).to_string_lossy().into_owned();
                if rel == HOME || (rel.starts_with(&format!("{DIR}/")) && !with_dir) {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&p).ok();
                let content = meta.as_ref().filter(|m| m.is_file()).and_then(|_| std::fs::read(&p).ok());
                if meta.is_some_and(|m| m.is_dir()) {
                    stack.push(p.clone());
                }
                out.push((rel, content));
            }
        }
        out.sort();
        out
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.adversary.connections()
    }

    /// Stops the server; what each connection saw.
    pub fn finish(self) -> Vec<ConnLog> {
        self.adversary.stop()
    }
}

// ---- judgments: each returns the failure of a requirement, or nothing ----

/// The first violation the server saw on the wire.
pub fn wire(logs: &[ConnLog]) -> Judged {
    for (i, log) in logs.iter().enumerate() {
        if let Some(v) = log.violations.first() {
            let mut f = Failure::new(v.requirement, format!("connection {}: {}", i + 1, v.message));
            f.actual = Some(log.received.iter().take(256).copied().collect());
            return Err(Stop::fail(f));
        }
    }
    Ok(())
}

/// The run finished before its hard limit.
pub fn finished(obs: &Observation, requirement: &str) -> Judged {
    if obs.finished.killed {
        return Err(Stop::fail(Failure::new(
            requirement,
            format!(
                "the client was still running after {:.1?} and was killed: it waited without a deadline \
                 (it was given {{timeout}})",
                obs.finished.elapsed
            ),
        )));
    }
    Ok(())
}

/// Nothing was written outside `{dir}`.
pub fn stayed_inside(obs: &Observation) -> Judged {
    if let Some(p) = obs.outside.first() {
        return Err(Stop::fail(Failure::new(
            "NAME-11",
            format!(
                "the client wrote outside {{dir}}: {} (in all: {})",
                escape(p),
                obs.outside.iter().map(|p| escape(p)).collect::<Vec<_>>().join(", ")
            ),
        )));
    }
    Ok(())
}

/// It succeeded and `{dir}/{name}` holds exactly `content`.
pub fn fetched(obs: &Observation, content: &[u8], requirement: &str) -> Judged {
    finished(obs, "TIME-11")?;
    stayed_inside(obs)?;
    if !obs.succeeded() {
        return Err(Stop::fail(Failure::new(
            requirement,
            format!("the download should succeed, but the client failed ({})", obs.ending()),
        )));
    }
    same_file(obs, content, requirement)
}

/// `{dir}/{name}` holds exactly `content`.
fn same_file(obs: &Observation, content: &[u8], requirement: &str) -> Judged {
    match &obs.file {
        Some(f) if f == content => Ok(()),
        Some(f) => {
            let mut fail = Failure::new(
                requirement,
                format!(
                    "the client said it succeeded, but {{dir}}/{} holds other bytes than the file's ({} bytes, {} expected)",
                    escape(&obs.name),
                    f.len(),
                    content.len()
                ),
            );
            fail.expected = Some(content.iter().take(256).copied().collect());
            fail.actual = Some(f.iter().take(256).copied().collect());
            Err(Stop::fail(fail))
        }
        None => Err(Stop::fail(Failure::new(
            requirement,
            format!("the client exited 0, but there is no file {{dir}}/{}", escape(&obs.name)),
        ))),
    }
}

/// It failed, and no file has the final name.
pub fn refused(obs: &Observation, requirement: &str) -> Judged {
    finished(obs, "TIME-11")?;
    stayed_inside(obs)?;
    if obs.succeeded() {
        return Err(Stop::fail(Failure::new(
            requirement,
            "the client exited 0: it took what the server sent for a success".to_owned(),
        )));
    }
    kept_nothing(obs, requirement)
}

/// No file has the final name.
pub fn kept_nothing(obs: &Observation, requirement: &str) -> Judged {
    if obs.op == Op::Get {
        if let Some(f) = &obs.file {
            let mut fail = Failure::new(
                requirement,
                format!(
                    "the client failed ({}) but left a file of {} bytes under the final name {{dir}}/{}",
                    obs.ending(),
                    f.len(),
                    escape(&obs.name)
                ),
            );
            fail.actual = Some(f.iter().take(256).copied().collect());
            return Err(Stop::fail(fail));
        }
    }
    Ok(())
}

/// Either it succeeded with exactly `content`, or it failed and kept nothing under the name.
pub fn whole_or_nothing(obs: &Observation, content: &[u8], requirement: &str) -> Judged {
    finished(obs, "TIME-11")?;
    stayed_inside(obs)?;
    if obs.succeeded() {
        same_file(obs, content, requirement)
    } else {
        kept_nothing(obs, requirement)
    }
}

/// The client's output holds none of the control characters the server put in a name
/// (`[NAME-12]`): ESC, BEL and the C1 control CSI.
pub fn escaped_output(obs: &Observation) -> Judged {
    let raw: Vec<u8> = obs.finished.stdout.iter().chain(&obs.finished.stderr).copied().collect();
    let bad = raw.iter().any(|&b| b == 0x1b || b == 0x07) || raw.windows(2).any(|w| w == [0xc2, 0x9b]);
    if bad {
        let mut f = Failure::new("NAME-12", "the client printed a name's control characters as they came".to_owned());
        f.actual = Some(raw.iter().take(256).copied().collect());
        return Err(Stop::fail(f));
    }
    Ok(())
}

/// A path for a message, control characters escaped.
pub fn escape(s: &str) -> String {
    ferry_proto::name::escape_for_display(s)
}

// ---- running cases ----

/// Runs `cases` with `jobs` at once; results in the cases' order.
pub fn run(cases: Vec<ClientCase>, settings: &Settings, jobs: usize, strict: bool) -> Vec<CaseResult> {
    let cases: Vec<Arc<ClientCase>> = cases.into_iter().map(Arc::new).collect();
    let next = Arc::new(Mutex::new(0usize));
    let results: Arc<Mutex<Vec<Option<CaseResult>>>> = Arc::new(Mutex::new(vec![None; cases.len()]));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let (cases, next, results) = (cases.clone(), next.clone(), results.clone());
            s.spawn(move || loop {
                let i = {
                    let mut n = next.lock().unwrap_or_else(PoisonError::into_inner);
                    *n += 1;
                    *n - 1
                };
                let Some(case) = cases.get(i) else { break };
                let r = run_one(case, settings, strict);
                results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(r);
            });
        }
    });
    let out = std::mem::take(&mut *results.lock().unwrap_or_else(PoisonError::into_inner));
    out.into_iter().flatten().collect()
}

fn run_one(case: &ClientCase, settings: &Settings, strict: bool) -> CaseResult {
    let started = Instant::now();
    let ctx = Ctx { settings, id: &case.id };
    let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(&ctx)))
        .unwrap_or_else(|_| Err(Stop::Harness("the case panicked".into())));
    let (verdict, outcome) = match judged {
        Ok(()) => (Verdict::Pass, Outcome::Pass),
        Err(Stop::Fail(f)) => (Verdict::Fail, Outcome::Fail(*f)),
        Err(Stop::Warn(f)) if strict => (Verdict::Fail, Outcome::Warn(*f)),
        Err(Stop::Warn(f)) => (Verdict::Warn, Outcome::Warn(*f)),
        Err(Stop::Unsupported(w)) => (Verdict::Unsupported, Outcome::Unsupported(w)),
        Err(Stop::Harness(w)) => (Verdict::HarnessError, Outcome::HarnessError(w)),
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

/// The cases `selection` admits.
pub fn selected(selection: &Selection) -> Vec<ClientCase> {
    cases::all()
        .into_iter()
        .filter(|c| {
            let by_id = selection.cases.is_empty() || selection.cases.iter().any(|p| c.id.starts_with(p.as_str()));
            let by_req = selection.requirements.is_empty()
                || selection.requirements.iter().any(|p| c.requirements.iter().any(|r| r.starts_with(p.as_str())));
            let skipped = selection.skip.iter().any(|p| c.id.starts_with(p.as_str()));
            by_id && by_req && !skipped
        })
        .collect()
}
