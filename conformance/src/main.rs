//! `conformance`: run the suite against a server, list cases, report coverage, replay or record a
//! transcript. Exit codes: 0 nothing failed, 1 something failed, 2 usage or harness errors.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_conformance::case::{Outcome, Profile, Target, Verdict};
use ferry_conformance::runner::{self, Selection};
use ferry_conformance::{cases, client, coverage, over_tls, record, report, spec};

/// Checks a Ferry server against PROTOCOL.md and reports by requirement id.
///
/// Exit status: 0 when nothing failed, 1 when a case failed (or timed out, or with --baseline, a
/// verdict changed), 2 for usage errors, an unreachable server or harness errors.
#[derive(Debug, Parser)]
#[command(name = "conformance", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the cases against a live server.
    Run(Box<RunArgs>),
    /// Judge a client: run it, through a command template, against servers that misbehave on
    /// purpose (conformance/README.md, "The client contract").
    ///
    /// Example: conformance client -- ./ferry-shim.sh {addr} {op} {name} {dir} {path} {timeout}
    Client(ClientArgs),
    /// List the cases and the requirements they check.
    List(SelectArgs),
    /// List every requirement of PROTOCOL.md with the cases that check it; fails if a server MUST
    /// that can be observed on the wire has none.
    Coverage,
    /// Replay one transcript file against a server.
    Replay {
        file: PathBuf,
        server: String,
        #[arg(long)]
        token: Option<String>,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Relay one client session to a server and write it as a transcript.
    Record {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: String,
        /// Write the transcript here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct SelectArgs {
    /// Run only cases whose id starts with this (repeatable). `--case large` also lifts the time
    /// budget of the heavy case (a 4 GiB upload, which a default run makes only where it is
    /// quick): give it a --timeout long enough.
    #[arg(long = "case")]
    case_ids: Vec<String>,
    /// Run only cases checking a requirement id starting with this (repeatable).
    #[arg(long = "requirement")]
    requirements: Vec<String>,
    /// Skip cases whose id starts with this (repeatable).
    #[arg(long)]
    skip: Vec<String>,
    /// Which protocol the server speaks.
    #[arg(long, value_enum, default_value_t = ProfileArg::V1)]
    profile: ProfileArg,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The server's plain listener, HOST:PORT. Optional with --tls: without it every case runs
    /// over TLS (as with --over-tls), for a server that speaks only TLS.
    #[arg(required_unless_present = "tls")]
    server: Option<String>,
    #[command(flatten)]
    select: SelectArgs,
    /// Seconds each case may take; each network wait gets at most a third of it.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Cases run in parallel, at most: fewer when the connections they hold at once would not
    /// fit the server's announced max_clients.
    #[arg(short = 'j', long, default_value_t = 1)]
    jobs: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// A token for the role cases need (write and admin cases are skipped without one, unless
    /// the server grants those roles anonymously).
    #[arg(long, env = "FERRY_TOKEN")]
    token: Option<String>,
    /// Seed for generated sessions (printed with every run, to reproduce it).
    #[arg(long)]
    seed: Option<u64>,
    /// Generated sessions to run.
    #[arg(long, default_value_t = 32)]
    cases: u32,
    /// Count warnings (SHOULDs not met) as failures.
    #[arg(long)]
    strict: bool,
    /// Show why cases were skipped or unsupported.
    #[arg(short, long)]
    verbose: bool,
    /// Write a transcript reproducing each failure into this directory.
    #[arg(long)]
    save_failures: Option<PathBuf>,
    /// Also run the cases that stop the server (an admin's SHUTDOWN: `shutdown.*`). They run
    /// last; without this flag they are skipped.
    #[arg(long)]
    destructive: bool,
    /// The server's root directory, for a server on this machine whose root the suite may touch:
    /// the `local.*` cases plant files, symbolic links and directories in it (and remove them
    /// after), and watch it during uploads. Without it they are skipped.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Expected verdicts (JSON `{"CASE-ID": {"verdict": "fail", "reason": "…"}}`): only differences
    /// from it fail the run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The server's TLS listener, HOST:PORT (PROTOCOL.md § 18): the `tls.*` cases check it (they
    /// are skipped without it). Its certificate is checked against the Web PKI's roots, or --ca.
    #[arg(long, value_name = "HOST:PORT")]
    tls: Option<String>,
    /// Run every case over TLS, not only the `tls.*` ones: each connection a case makes goes
    /// through a relay of the suite's own that speaks TLS 1.3 and ALPN ferry/1 to --tls, and the
    /// report says so. SERVER, if given, is then used only for the check that needs a plain port
    /// (a TLS ClientHello sent to it). Implied when SERVER is not given.
    #[arg(long, requires = "tls")]
    over_tls: bool,
    /// Trust only the CA certificates in this PEM file for --tls (a private CA, or `ferryd
    /// gen-cert`'s ca.pem).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// The name the TLS certificate is checked against [default: the host part of --tls].
    #[arg(long, value_name = "NAME", requires = "tls")]
    sni: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Run only cases whose id starts with this (repeatable).
    #[arg(long = "case")]
    case_ids: Vec<String>,
    /// Run only cases checking a requirement id starting with this (repeatable).
    #[arg(long = "requirement")]
    requirements: Vec<String>,
    /// Skip cases whose id starts with this (repeatable).
    #[arg(long)]
    skip: Vec<String>,
    /// Seconds one run of the client may take; then it is killed, with every process it started.
    #[arg(long, default_value_t = 15)]
    limit: u64,
    /// `{timeout}` for the cases that do not choose their own: the client's deadline for each
    /// connect, read and write, in seconds.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Cases run in parallel (each has its own server and sandbox).
    #[arg(short = 'j', long, default_value_t = 4)]
    jobs: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Count warnings (SHOULDs not met) as failures.
    #[arg(long)]
    strict: bool,
    /// Show why cases were unsupported.
    #[arg(short, long)]
    verbose: bool,
    /// List the cases instead of running them.
    #[arg(long)]
    list: bool,
    /// The client's command: a program and its arguments, with placeholders {addr} {op} {name}
    /// {dir} {path} {timeout} {profile}.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    V1,
    Legacy,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
}

fn resolve(server: &str) -> Result<SocketAddr, String> {
    server
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server} resolves to no address"))
}

fn profile(p: ProfileArg) -> Profile {
    match p {
        ProfileArg::V1 => Profile::V1,
        ProfileArg::Legacy => Profile::Legacy,
    }
}

fn selected(select: &SelectArgs) -> Vec<ferry_conformance::case::Case> {
    let sel = Selection {
        cases: select.case_ids.clone(),
        requirements: select.requirements.clone(),
        skip: select.skip.clone(),
    };
    let p = profile(select.profile);
    cases::all().into_iter().filter(|c| c.needs.profile == p && sel.admits(c)).collect()
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conformance: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    match Cli::parse().command {
        Command::List(select) => {
            for c in selected(&select) {
                println!("{:<60} [{}]  {}", c.id, c.requirements.join(" "), c.title);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Coverage => {
            let spec = spec::requirements();
            let all = cases::all();
            let clients = client::cases::all();
            let (text, ok) = coverage::report(&coverage::table(&spec, &all, &clients));
            print!("{text}");
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Record { listen, upstream, out } => {
            let listener = TcpListener::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
            eprintln!("recording on {}", listener.local_addr().map_err(|e| e.to_string())?);
            let text = record::record_one(&listener, resolve(&upstream)?, Duration::from_secs(30))
                .map_err(|e| format!("recording: {e}"))?;
            match out {
                Some(p) => std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { file, server, token, timeout } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            let t =
                ferry_proto::transcript::Transcript::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let target = target(resolve(&server)?, token, timeout, Profile::V1, 0, 0);
            let ctx = ferry_conformance::context::Ctx {
                prefix: target.run_prefix.clone(),
                deadline: std::time::Instant::now() + target.case_timeout,
                server: None,
                target,
                busy: ferry_conformance::wire::BusyFlag::default(),
            };
            let outcome = cases::transcripts::replay(&t, &text, cases::transcripts::Delivery::Whole, &ctx);
            let result = runner::CaseResult {
                id: format!("replay.{}", file.display()),
                title: t.title.clone(),
                requirements: t.all_requirements(),
                verdict: match &outcome {
                    Outcome::Pass => Verdict::Pass,
                    Outcome::Warn(_) => Verdict::Warn,
                    Outcome::Fail(_) => Verdict::Fail,
                    _ => Verdict::HarnessError,
                },
                outcome,
                duration: Duration::ZERO,
            };
            print!("{}", report::text(std::slice::from_ref(&result), &spec::requirements(), true));
            Ok(match result.verdict {
                Verdict::Pass | Verdict::Warn => ExitCode::SUCCESS,
                Verdict::Fail => ExitCode::from(1),
                _ => ExitCode::from(2),
            })
        }
        Command::Run(args) => run(*args),
        Command::Client(args) => run_client(args),
    }
}

fn run_client(args: ClientArgs) -> Result<ExitCode, String> {
    let selection = Selection { cases: args.case_ids, requirements: args.requirements, skip: args.skip };
    let cases = client::selected(&selection);
    if args.list {
        for c in &cases {
            println!("{:<50} [{}]  {}", c.id, c.requirements.join(" "), c.title);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut template = client::template::Template::parse(&args.command)?;
    let cwd = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    template.absolutize(&cwd);
    if cases.is_empty() {
        return Err("no case selected".into());
    }
    let settings = client::Settings { template, limit: Duration::from_secs(args.limit.max(1)), timeout: args.timeout };
    eprintln!("running {} client cases with {}", cases.len(), args.command.join(" "));
    let results = client::run(cases, &settings, args.jobs, args.strict);
    let spec = spec::requirements();
    let text = match args.format {
        Format::Text => report::text(&results, &spec, args.verbose),
        Format::Json => report::json(&results, 0),
        Format::Junit => report::junit(&results, &spec),
    };
    match &args.output {
        Some(p) => std::fs::write(p, &text).map_err(|e| format!("writing {}: {e}", p.display()))?,
        None => print!("{text}"),
    }
    if args.output.is_some() || !matches!(args.format, Format::Text) {
        eprintln!("{}", report::summary_line(&results));
    }
    let failed = results.iter().any(|r| matches!(r.verdict, Verdict::Fail | Verdict::Timeout));
    let harness = results.iter().any(|r| r.verdict == Verdict::HarnessError);
    Ok(if failed {
        ExitCode::from(1)
    } else if harness {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn target(addr: SocketAddr, token: Option<String>, timeout: u64, profile: Profile, seed: u64, cases: u32) -> Target {
    let timeout = timeout.max(3);
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    Target {
        addr,
        token,
        io_timeout: Duration::from_secs(timeout / 3),
        case_timeout: Duration::from_secs(timeout),
        profile,
        seed,
        model_cases: cases,
        verbose: false,
        run_prefix: format!("cf{:x}-", (nonce as u64 ^ u64::from(std::process::id())) & 0xffff_ffff),
        destructive: false,
        root: None,
        large: false,
        tls: None,
    }
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    let plain = args.server.as_deref().map(resolve).transpose()?;
    let tls = args.tls.as_deref().map(|tls| -> Result<_, String> {
        let host = tls.rsplit_once(':').map_or(tls, |(h, _)| h);
        Ok(ferry_conformance::case::TlsTarget {
            addr: resolve(tls)?,
            trust: args.ca.clone().map_or(ferry_tls::Trust::WebPki, ferry_tls::Trust::CaFile),
            sni: args.sni.clone().unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']').to_owned()),
            relayed: None,
        })
    });
    let mut tls = tls.transpose()?;
    // Over TLS the cases connect to the relay, which lives as long as the run.
    let mut relay = None;
    let addr = match tls.as_mut() {
        Some(tls) if args.over_tls || plain.is_none() => {
            let (r, relayed) = over_tls::start(tls, plain, Duration::from_secs((args.timeout / 3).max(1)))?;
            tls.relayed = Some(relayed);
            relay.insert(r).addr()
        }
        _ => plain.ok_or("give the server's address, or its TLS listener with --tls")?,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let mut target = target(addr, args.token.clone(), args.timeout, profile(args.select.profile), seed, args.cases);
    target.verbose = args.verbose;
    target.destructive = args.destructive;
    if let Some(root) = &args.root {
        if !root.is_dir() {
            return Err(format!("--root {}: not a directory", root.display()));
        }
        target.root = Some(root.clone());
    }
    target.tls = tls;
    // Heavy cases asked for by name run whatever they cost (`cases::large`).
    target.large = args.select.case_ids.iter().any(|c| c.starts_with(cases::large::CATEGORY));
    let server = runner::probe(&target)?;
    let cases = selected(&args.select);
    if cases.is_empty() {
        return Err("no case selected".into());
    }
    match (&relay, &target.tls) {
        (Some(_), Some(tls)) => eprintln!(
            "running {} cases over TLS against {} through a relay at {addr} (seed {seed}, prefix {})",
            cases.len(),
            tls.addr,
            target.run_prefix
        ),
        _ => eprintln!("running {} cases against {addr} (seed {seed}, prefix {})", cases.len(), target.run_prefix),
    }
    let results = runner::run(cases, &target, server, args.jobs, args.strict);
    drop(relay.take());
    let spec = spec::requirements();
    let over_tls = target.tls.as_ref().filter(|t| t.relayed.is_some());
    let text = match (args.format, over_tls) {
        (Format::Text, None) => report::text(&results, &spec, args.verbose),
        (Format::Text, Some(tls)) => over_tls::mark_text(&report::text(&results, &spec, args.verbose), tls),
        (Format::Json, None) => report::json(&results, seed),
        (Format::Json, Some(tls)) => over_tls::mark_json(&report::json(&results, seed), tls),
        (Format::Junit, None) => report::junit(&results, &spec),
        (Format::Junit, Some(tls)) => over_tls::mark_junit(&report::junit(&results, &spec), tls),
    };
    match &args.output {
        Some(p) => std::fs::write(p, &text).map_err(|e| format!("writing {}: {e}", p.display()))?,
        None => print!("{text}"),
    }
    if args.output.is_some() || !matches!(args.format, Format::Text) {
        eprintln!("{}", report::summary_line(&results));
    }
    if let Some(dir) = &args.save_failures {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for r in &results {
            if let Outcome::Fail(f) | Outcome::Warn(f) = &r.outcome {
                if let Some(t) = &f.transcript {
                    let path = dir.join(format!("{}.ft", r.id));
                    std::fs::write(&path, t).map_err(|e| format!("writing {}: {e}", path.display()))?;
                }
            }
        }
    }
    let harness = results.iter().any(|r| r.verdict == Verdict::HarnessError);
    let failed = match &args.baseline {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let expected: HashMap<String, serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut differs = false;
            for r in &results {
                let want = expected
                    .get(&r.id)
                    .and_then(|v| v.get("verdict"))
                    .and_then(|v| v.as_str())
                    .and_then(Verdict::parse)
                    .unwrap_or(Verdict::Pass);
                let got = if r.verdict == Verdict::Warn { Verdict::Pass } else { r.verdict };
                if got != want && !matches!(got, Verdict::Skipped | Verdict::Unsupported) {
                    eprintln!("baseline: {} is {} (expected {})", r.id, got.as_str(), want.as_str());
                    differs = true;
                }
            }
            differs
        }
        None => results.iter().any(|r| matches!(r.verdict, Verdict::Fail | Verdict::Timeout)),
    };
    Ok(if failed {
        ExitCode::from(1)
    } else if harness {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
