//! What a case is, what it needs, and what it can conclude.

use std::time::Duration;

use ferry_proto::{Capabilities, Role};

/// Which protocol a case speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Version 1 (and the legacy profile where the server announces it).
    V1,
    /// Servers that speak only the original single-download exchange.
    Legacy,
}

/// How a run is configured: the same for every case.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: std::net::SocketAddr,
    /// A token for write/admin cases; without one they run as the anonymous role.
    pub token: Option<String>,
    /// Each network wait, at most; a case as a whole gets `case_timeout`.
    pub io_timeout: Duration,
    pub case_timeout: Duration,
    pub profile: Profile,
    /// Seed and count of generated sessions.
    pub seed: u64,
    pub model_cases: u32,
    /// Show the bytes of each exchange.
    pub verbose: bool,
    /// Unique to this run: names created start with it, so cases never collide with files on the
    /// server and can be cleaned up.
    pub run_prefix: String,
    /// Whether cases that stop the server (SHUTDOWN) may run (`--destructive`).
    pub destructive: bool,
    /// The server's root directory, when it is on this machine and the suite may plant and
    /// inspect entries in it (`--root`): the `local.*` cases need it, and others check more.
    pub root: Option<std::path::PathBuf>,
    /// Whether the heavy cases were asked for by name (`--case large`): they then run whatever
    /// they cost, within the case timeout; otherwise only where they fit a short budget.
    pub large: bool,
    /// The server's TLS listener, for the `tls.*` cases (`--tls`); they are skipped without it.
    pub tls: Option<TlsTarget>,
}

/// A TLS listener (PROTOCOL.md § 18) and how to check its certificate.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub addr: std::net::SocketAddr,
    pub trust: ferry_tls::Trust,
    /// The name its certificate is checked against, and sent as SNI.
    pub sni: String,
    /// Set when every case runs over TLS (`--over-tls`): [`Target::addr`] is then the suite's
    /// relay to this listener.
    pub relayed: Option<crate::over_tls::Relayed>,
}

/// How a connection ended, as a failure report tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server closed in an orderly way (FIN).
    OrderlyClose,
    /// The connection was reset.
    Reset,
    /// Nothing arrived before the deadline.
    TimedOut,
    /// Still open.
    Open,
    /// An error reply, and then as given.
    ErrorReply { code: u16, message: String },
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OrderlyClose => f.write_str("orderly close"),
            Self::Reset => f.write_str("connection reset"),
            Self::TimedOut => f.write_str("timed out waiting"),
            Self::Open => f.write_str("still open"),
            Self::ErrorReply { code, message } => {
                let name = ferry_proto::ErrorCode(*code);
                write!(f, "error reply {name} ({})", ferry_proto::name::escape_for_display(message))
            }
        }
    }
}

/// Why a case failed, with everything needed to understand and reproduce it.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// The requirement broken (one of the case's), if the case knows which.
    pub requirement: Option<String>,
    pub message: String,
    pub expected: Option<Vec<u8>>,
    pub actual: Option<Vec<u8>>,
    pub ending: Option<Ending>,
    /// A transcript (spec/README.md format) that reproduces the failure.
    pub transcript: Option<String>,
}

impl Failure {
    pub fn new(requirement: &str, message: impl Into<String>) -> Self {
        Self { requirement: Some(requirement.to_owned()), message: message.into(), ..Self::default() }
    }
}

/// What a case concluded.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pass,
    /// A MUST is broken.
    Fail(Failure),
    /// A SHOULD is not met (fails only with `--strict`).
    Warn(Failure),
    /// The server's hello says it does not offer what the case checks.
    Unsupported(String),
    /// The case cannot run with what the run was given (a token, a profile).
    Skipped(String),
    /// The suite itself broke; never the server's fault.
    HarnessError(String),
}

/// A verdict, once the runner has applied the case timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Pass,
    Fail,
    Warn,
    Unsupported,
    Skipped,
    Timeout,
    HarnessError,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Warn => "warn",
            Self::Unsupported => "unsupported",
            Self::Skipped => "skipped",
            Self::Timeout => "timeout",
            Self::HarnessError => "harness-error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pass, Self::Fail, Self::Warn, Self::Unsupported, Self::Skipped, Self::Timeout, Self::HarnessError]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What a case needs from the server and the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub role: Role,
    pub capabilities: Capabilities,
    pub profile: Profile,
    /// The case must have the server to itself (it fills every connection slot, or needs
    /// timing that parallel cases would disturb): the runner runs it after the parallel cases,
    /// alone.
    pub alone: bool,
    /// The case stops the server: it runs only with `--destructive`, and last.
    pub destructive: bool,
    /// The case plants and inspects entries in the server's root: it runs only with `--root`.
    pub root: bool,
    /// Connections the case holds open at once, at most. The runner starts cases side by side
    /// only while theirs add up to no more than the server's announced `max_clients`; the
    /// default leaves room for a case's one connection and another being closed or probing.
    pub connections: u32,
}

impl Default for Needs {
    fn default() -> Self {
        Self {
            role: Role::Read,
            capabilities: Capabilities(0),
            profile: Profile::V1,
            alone: false,
            destructive: false,
            root: false,
            connections: 2,
        }
    }
}

/// The body of a case.
pub type CaseFn = Box<dyn Fn(&crate::context::Ctx) -> Outcome + Send + Sync>;

/// One conformance case.
pub struct Case {
    /// Stable and unique, dotted: `transcript.put-stat-get-delete.bytewise`.
    pub id: String,
    pub title: String,
    /// The PROTOCOL.md ids it checks.
    pub requirements: Vec<String>,
    pub needs: Needs,
    pub run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("id", &self.id).finish_non_exhaustive()
    }
}
