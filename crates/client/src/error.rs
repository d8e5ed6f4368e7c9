//! What can go wrong, said so that a person knows what failed and what to do, and typed so that a
//! program knows what happens next: [`Error::is_transient`] tells the retry loop whether trying
//! again can help, and [`Error::exit_code`] is the `ferry` binary's exit status.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::client::ClientError;
use ferry_proto::codec::DecodeError;
use ferry_proto::name::escape_for_display;
use ferry_proto::{Digest, ErrorCode, ErrorReply, RequestKind};

/// The exit status for each kind of failure; `ferry --help` documents them.
pub mod exit {
    /// Everything worked.
    pub const OK: u8 = 0;
    /// The operation was refused: by the server (not found, exists, forbidden, bad name, no
    /// room…) or locally (a file exists and `--force` was not given, a local file cannot be read
    /// or written).
    pub const REFUSED: u8 = 1;
    /// The command line was wrong.
    pub const USAGE: u8 = 2;
    /// The server could not be reached or the connection failed, after the retries; the
    /// server's TLS certificate was refused or the TLS handshake failed (not retried); or the
    /// server broke the protocol.
    pub const NETWORK: u8 = 3;
    /// A file's data did not match its MD5; nothing was kept.
    pub const CHECKSUM: u8 = 4;
    /// Stopped by the user (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// One failure of the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be resolved.
    #[error("cannot resolve the server address {addr}: {source} — check --server or FERRY_SERVER (HOST:PORT)")]
    Resolve {
        addr: String,
        #[source]
        source: io::Error,
    },

    /// The TCP connection could not be opened.
    #[error("{}", connect_message(.addr, .source))]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
        /// Every address tried is a loopback address: the server would be on this machine.
        loopback: bool,
    },

    /// `[TLS-6]`: a token would have gone in clear text to another machine. Nothing was
    /// connected.
    #[error("refusing to send the token in clear text to {addr}, which is not this machine: anyone on the network path could read it — use the server's TLS port with --tls (--ca FILE for a private CA), or, on a network you trust, allow it with --allow-cleartext-token")]
    CleartextToken { addr: String },

    /// The server's TLS certificate was not accepted (`[TLS-5]`): nothing was sent. Not retried:
    /// the next attempt would get the same certificate.
    #[error("{addr}: {}", certificate_message(.name, .problem))]
    Certificate {
        addr: String,
        /// The name the certificate was checked against (the host of the address, or the SNI
        /// name given).
        name: String,
        problem: CertProblem,
    },

    /// The TLS handshake failed for another reason than the certificate, or the server did not
    /// choose Ferry's ALPN protocol (`[TLS-3]`): nothing was sent. Not retried.
    #[error("no TLS session with {addr}: {detail}")]
    Tls { addr: String, detail: String },

    /// A plain hello was answered with a TLS alert: the port is a TLS listener's.
    #[error(
        "{addr} is a TLS port: it answered the hello with a TLS alert — add --tls (and --ca FILE for a private CA)"
    )]
    TlsPort { addr: String },

    /// TLS could not be set up on this side: the CA file, or the name to check.
    #[error("cannot set up TLS: {source} — {}", tls_setup_hint(.source))]
    TlsSetup {
        #[source]
        source: ferry_tls::TlsError,
    },

    /// A loopback address refused the first connection of a client: nothing listens on that
    /// port of this machine. Unlike a refusal from afar, this one is immediate and certain — no
    /// network between could have lost the way — so it is not retried (unless
    /// [`crate::Config::wait_for_server`]). A refusal after the client was once connected (the
    /// server restarting) is retried as usual.
    #[error("connection refused by {addr}: nothing listens on that port of this machine — is ferryd running, and on that port? (not retried: a refusal from this machine is certain)")]
    NotListening { addr: String },

    /// A download to standard output was cut off and could not be resumed (the server cannot
    /// resume, or now has another version of the file). What was written stays written.
    #[error("{0}")]
    StreamBroken(String),

    /// The directory a download was to be written into does not exist.
    #[error("cannot download to {}: the directory {} does not exist", .dest.display(), .dir.display())]
    NoDirectory { dest: PathBuf, dir: PathBuf },

    /// A read or write waited longer than the deadline (`[TIME-6]`).
    #[error("{addr} did not answer within {} while {during} — is it overloaded or unreachable? (--timeout sets the limit)", secs(*.timeout))]
    Timeout { addr: String, during: &'static str, timeout: Duration },

    /// The server had no MD5 for a file (STAT showed none) and did not send the head of the GET
    /// reply within the time `[GET-9]` allows for computing it: the ordinary deadline plus one
    /// second for every 16 MiB of the file. Not [`Self::Timeout`], whose message blames an
    /// overloaded or unreachable server: this one was reachable, and busy hashing. Transient: the
    /// server may have finished by the next attempt.
    #[error("{addr} had no MD5 for {name} and did not finish computing the MD5 of its {} within {} (--timeout, plus a second for every 16 MiB) — try again later: the server may have finished by then", human_size(*.size), secs(*.waited))]
    DigestTimeout {
        addr: String,
        /// The file, already escaped for display.
        name: String,
        size: u64,
        /// How long the client waited for the head of the reply.
        waited: Duration,
    },

    /// The connection broke: reset, or closed by the server in the middle of a reply.
    #[error("the connection to {addr} was lost while {during}: {detail}")]
    ConnectionLost { addr: String, during: &'static str, detail: String },

    /// The server turned the connection away for now (`BUSY`, `SHUTTING_DOWN`, `TIMEOUT`): it did
    /// not carry out the request, and may later.
    #[error("{addr} {}", unavailable_message(.reply))]
    Unavailable { addr: String, reply: ErrorReply },

    /// The server answered with an error code version 1 does not define, in the fatal range
    /// (`0x01xx`) or outside every range: fatal all the same (`[ERR-5]`), so the connection was
    /// closed. A version 1 server must not send such a code (`[EXT-2]`).
    #[error("{addr} ended the connection with an error code this client does not know ({}{}); nothing more was asked on it", .reply.code, server_said(.reply))]
    UnknownFatal { addr: String, reply: ErrorReply },

    /// The server refused the request.
    #[error("{}", refusal_message(*.op, .subject.as_deref(), .reply))]
    Refused {
        /// The request refused.
        op: RequestKind,
        /// The file it was about, already escaped for display.
        subject: Option<String>,
        reply: ErrorReply,
    },

    /// The server sent something PROTOCOL.md forbids: a name that is not a plain name, a reply
    /// that answers another request… Nothing it sent is used.
    #[error("the server at {addr} broke the protocol ({source}); nothing it sent was used")]
    Protocol {
        addr: String,
        #[source]
        source: ClientError,
    },

    /// A file's data did not match its digest (`[FRAME-5]`); nothing was kept.
    #[error("{what}: checksum mismatch (expected MD5 {expected}{}); nothing was kept — try again, and if it persists the server's copy may be damaged", actual.map(|a| format!(", got {a}")).unwrap_or_default())]
    ChecksumMismatch { what: String, expected: Digest, actual: Option<Digest> },

    /// A local file is in the way and overwriting was not allowed.
    #[error("{} already exists — use --force to overwrite it", .path.display())]
    LocalExists { path: PathBuf },

    /// Another process is downloading to the same place.
    #[error("{} is being written by another ferry process (its .part file is locked) — wait for it, or choose another destination", .path.display())]
    Busy { path: PathBuf },

    /// A local file operation failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Local {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The local file changed while it was being uploaded, so the digest sent is not the data's.
    #[error("{} changed while it was being uploaded — nothing was stored; try again once it is stable", .path.display())]
    LocalChanged { path: PathBuf },

    /// The request cannot be made as asked.
    #[error("{0}")]
    Usage(String),

    /// The user asked to stop.
    #[error("interrupted; a download's .part file is kept, and running get again resumes it")]
    Cancelled,

    /// The last failure of several attempts.
    #[error("{source} (gave up after {attempts} attempts)")]
    Retried {
        attempts: u32,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The `ferry` exit status for this failure (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Retried { source, .. } => source.exit_code(),
            // `--server nonsense`, or a port above 65535: the address itself is wrong.
            Self::Resolve { source, .. } if source.kind() == io::ErrorKind::InvalidInput => exit::USAGE,
            Self::Resolve { .. }
            | Self::Connect { .. }
            | Self::NotListening { .. }
            | Self::StreamBroken(_)
            | Self::Timeout { .. }
            | Self::DigestTimeout { .. }
            | Self::ConnectionLost { .. }
            | Self::Unavailable { .. }
            | Self::UnknownFatal { .. }
            | Self::Certificate { .. }
            | Self::Tls { .. }
            | Self::TlsPort { .. }
            | Self::Protocol { .. } => exit::NETWORK,
            Self::ChecksumMismatch { .. } => exit::CHECKSUM,
            Self::Refused { reply, .. } if reply.code == ErrorCode::CHECKSUM_MISMATCH => exit::CHECKSUM,
            Self::LocalChanged { .. } => exit::CHECKSUM,
            Self::Usage(_) | Self::CleartextToken { .. } | Self::TlsSetup { .. } => exit::USAGE,
            Self::Cancelled => exit::INTERRUPTED,
            Self::Refused { .. }
            | Self::LocalExists { .. }
            | Self::Busy { .. }
            | Self::Local { .. }
            | Self::NoDirectory { .. } => exit::REFUSED,
        }
    }

    /// Whether trying again, on a new connection, can help: the network or the server's
    /// availability failed, not the request.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::DigestTimeout { .. }
            | Self::ConnectionLost { .. }
            | Self::Unavailable { .. } => true,
            // A name that does not resolve may be a DNS hiccup.
            Self::Resolve { source, .. } => source.kind() != io::ErrorKind::InvalidInput,
            _ => false,
        }
    }

    /// Whether the server certainly did not carry out the request: the connection was never
    /// made, or the server said it was turning the connection away. A request that is not
    /// idempotent (DELETE, a create-only PUT) is repeated only then.
    pub fn request_not_processed(&self) -> bool {
        matches!(self, Self::Resolve { .. } | Self::Connect { .. } | Self::Unavailable { .. })
    }

    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Retried { source, .. } => source.code(),
            Self::Refused { reply, .. } | Self::Unavailable { reply, .. } | Self::UnknownFatal { reply, .. } => {
                Some(reply.code)
            }
            _ => None,
        }
    }

    /// Maps an I/O error on the connection to `addr`.
    pub(crate) fn io(addr: &str, during: &'static str, timeout: Duration, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                Self::Timeout { addr: addr.to_owned(), during, timeout }
            }
            _ => Self::ConnectionLost { addr: addr.to_owned(), during, detail: e.to_string() },
        }
    }

    /// Maps a failed TLS handshake with `addr`, whose certificate was checked against `name`.
    pub(crate) fn tls(addr: &str, name: &str, e: rustls::Error) -> Self {
        use rustls::{AlertDescription, CertificateError as C};
        let problem = match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => CertProblem::UnknownIssuer,
                C::Expired | C::ExpiredContext { .. } => CertProblem::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => CertProblem::NotYetValid,
                C::NotValidForName => CertProblem::NameMismatch { presented: Vec::new() },
                C::NotValidForNameContext { presented, .. } => {
                    CertProblem::NameMismatch { presented: presented.iter().map(|n| presented_name(n)).collect() }
                }
                C::BadSignature => CertProblem::BadSignature,
                other => CertProblem::Other(format!("{other:?}")),
            },
            rustls::Error::InvalidMessage(m) => {
                return Self::Tls {
                    addr: addr.to_owned(),
                    detail: format!(
                        "the server did not answer in TLS ({m:?}) — is this its plain port? Use its TLS port (ferryd --tls-listen), or leave out --tls"
                    ),
                };
            }
            rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol) => {
                return Self::Tls {
                    addr: addr.to_owned(),
                    detail: "the server does not offer Ferry (ALPN ferry/1) on this port".into(),
                };
            }
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) | rustls::Error::PeerIncompatible(_) => {
                return Self::Tls {
                    addr: addr.to_owned(),
                    detail: format!("{e} — Ferry needs TLS 1.3 (PROTOCOL.md § 18.2)"),
                };
            }
            other => return Self::Tls { addr: addr.to_owned(), detail: other.to_string() },
        };
        Self::Certificate { addr: addr.to_owned(), name: name.to_owned(), problem }
    }

    /// Maps a failure of the protocol machine on the connection to `addr`.
    pub(crate) fn protocol(addr: &str, during: &'static str, e: ClientError) -> Self {
        match e {
            ClientError::Decode(DecodeError::Truncated) => Self::ConnectionLost {
                addr: addr.to_owned(),
                during,
                detail: "the server closed the connection in the middle of a reply".into(),
            },
            ClientError::ConnectionLost(_) => Self::ConnectionLost {
                addr: addr.to_owned(),
                during,
                detail: "the server closed the connection before answering".into(),
            },
            ClientError::BadToken => Self::Usage(
                "the token must be 1 to 256 visible ASCII characters (no spaces) — check --token or FERRY_TOKEN".into(),
            ),
            other => Self::Protocol { addr: addr.to_owned(), source: other },
        }
    }

    /// The error a server's error reply stands for.
    pub(crate) fn from_reply(addr: &str, op: RequestKind, subject: Option<String>, reply: ErrorReply) -> Self {
        match reply.code {
            ErrorCode::BUSY | ErrorCode::SHUTTING_DOWN | ErrorCode::TIMEOUT => {
                Self::Unavailable { addr: addr.to_owned(), reply }
            }
            // `[ERR-5]`: a code it does not know is fatal by its range, and so is one outside
            // 0x0100–0x02FF. (An unknown 0x02xx code is a refusal like the others.)
            code if code.name().is_none() && code.is_fatal() => Self::UnknownFatal { addr: addr.to_owned(), reply },
            _ => Self::Refused { op, subject, reply },
        }
    }
}

fn tls_setup_hint(e: &ferry_tls::TlsError) -> &'static str {
    match e {
        ferry_tls::TlsError::ServerName(_) => "check --sni, or the host of --server",
        _ => "check --ca or FERRY_CA: a PEM file of CA certificates",
    }
}

/// What was wrong with a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// Not signed by a CA this client trusts (a private CA, a self-signed certificate).
    UnknownIssuer,
    Expired,
    NotYetValid,
    /// Not valid for the name checked; `presented` are the names it is valid for, if known.
    NameMismatch {
        presented: Vec<String>,
    },
    /// A signature in the chain does not verify.
    BadSignature,
    /// Anything else rustls refused, as it said it.
    Other(String),
}

/// A name from a certificate as rustls reports it (`DnsName("files.lan")`, `IpAddress(10.0.0.1)`),
/// as a person writes it, escaped: the certificate came from the server.
fn presented_name(debug: &str) -> String {
    let inner = debug
        .split_once('(')
        .and_then(|(kind, rest)| rest.strip_suffix(')').filter(|_| kind.chars().all(|c| c.is_ascii_alphabetic())))
        .map_or(debug, |inner| inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')).unwrap_or(inner));
    escape_for_display(inner)
}

fn certificate_message(name: &str, problem: &CertProblem) -> String {
    match problem {
        CertProblem::UnknownIssuer => format!(
            "the server's certificate for {name} is not signed by a CA this client trusts — if the server uses a private CA or a self-signed certificate, name it with --ca FILE"
        ),
        CertProblem::Expired => format!(
            "the server's certificate for {name} has expired — its operator must renew it (ferryd reloads it on SIGHUP)"
        ),
        CertProblem::NotYetValid => format!(
            "the server's certificate for {name} is not valid yet — check this machine's clock, or the certificate's dates"
        ),
        CertProblem::NameMismatch { presented } => {
            let names = if presented.is_empty() {
                String::new()
            } else {
                format!(" (it is for {})", presented.join(", "))
            };
            format!(
                "the server's certificate is not valid for the name {name}{names} — use a name it is valid for in --server HOST:PORT, or check it against that name with --sni NAME"
            )
        }
        CertProblem::BadSignature => format!(
            "the server's certificate for {name} has a signature that does not verify — it was not issued by the CA in --ca, or someone is intercepting the connection"
        ),
        CertProblem::Other(what) => {
            format!("the server's certificate for {name} was refused ({what}) — check it, or the CA given with --ca")
        }
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// A size for people: `512 B`, `1.5 KiB`, `2.0 GiB`: how every message and the `ferry` CLI show
/// sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

fn connect_message(addr: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused by {addr} — is ferryd running?"),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("no answer from {addr} — is the address right, and is the network up? (--timeout sets the limit)")
        }
        _ => format!("cannot connect to {addr}: {e} — check --server or FERRY_SERVER"),
    }
}

fn unavailable_message(reply: &ErrorReply) -> String {
    let said = server_said(reply);
    match reply.code {
        ErrorCode::BUSY => format!("is at capacity{said} — try again later"),
        ErrorCode::SHUTTING_DOWN => format!("is shutting down{said}"),
        _ => format!("closed the connection: a deadline passed{said}"),
    }
}

fn server_said(reply: &ErrorReply) -> String {
    if reply.message.is_empty() {
        String::new()
    } else {
        format!(" (server: {})", escape_for_display(&reply.message))
    }
}

fn refusal_message(op: RequestKind, subject: Option<&str>, reply: &ErrorReply) -> String {
    let said = server_said(reply);
    let name = subject.unwrap_or("the file");
    let what = match op {
        RequestKind::List => "list the files",
        RequestKind::Stat => "stat",
        RequestKind::Get | RequestKind::Fetch => "download",
        RequestKind::Put => "upload",
        RequestKind::Delete => "delete",
        RequestKind::Status => "show the connection history",
        RequestKind::Help => "send its help",
        RequestKind::Shutdown => "shut down",
        RequestKind::Bye | RequestKind::LegacyGet => "continue",
    };
    let with_subject = |verb: &str| match subject {
        Some(s) => format!("{verb} {s}"),
        None => verb.to_owned(),
    };
    match reply.code {
        // Said so that it reads right in the shell (`list`) as on the command line (`ferry list`).
        ErrorCode::NOT_FOUND => {
            format!("{name}: no such file on the server{said} — the list command shows what there is")
        }
        ErrorCode::EXISTS => format!("{name} already exists on the server{said} — use --overwrite to replace it"),
        ErrorCode::FORBIDDEN if op == RequestKind::Shutdown => {
            format!("the server does not allow you to shut it down{said} — that takes an admin token (--token)")
        }
        ErrorCode::FORBIDDEN => format!(
            "the server does not allow you to {}{said} — try a token with more rights (--token)",
            with_subject(what)
        ),
        ErrorCode::BAD_NAME => format!("the server refused the name {name}{said}"),
        ErrorCode::STORAGE_FULL => format!("the server has no room for {name}{said}"),
        ErrorCode::CHECKSUM_MISMATCH => {
            format!(
                "{name}: the server received data that does not match its MD5{said}; nothing was stored — try again"
            )
        }
        ErrorCode::BAD_OFFSET => format!("the server refused to resume {name}{said}"),
        ErrorCode::UNSUPPORTED => format!("this server does not offer to {what}{said}"),
        ErrorCode::UNAUTHORIZED => {
            format!("the server refused the connection{said} — it needs a valid token: check --token or FERRY_TOKEN")
        }
        ErrorCode::TOO_LARGE => format!("{name} is too large for the server{said}"),
        ErrorCode::INTERNAL => {
            format!("the server failed to {}{said} — try again later, or see the server's log", with_subject(what))
        }
        ErrorCode::UNSUPPORTED_VERSION => format!("the server does not speak protocol version 1{said}"),
        other => format!("the server refused to {} with {other}{said}", with_subject(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: ErrorCode) -> ErrorReply {
        ErrorReply::new(code, "x")
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let refused =
            Error::Refused { op: RequestKind::Get, subject: Some("a".into()), reply: reply(ErrorCode::NOT_FOUND) };
        assert_eq!(refused.exit_code(), exit::REFUSED);
        let lost = Error::ConnectionLost { addr: "a:1".into(), during: "x", detail: "y".into() };
        assert_eq!(lost.exit_code(), exit::NETWORK);
        let retried = Error::Retried { attempts: 6, source: Box::new(lost) };
        assert_eq!(retried.exit_code(), exit::NETWORK);
        let bad = Error::ChecksumMismatch { what: "a".into(), expected: Digest::EMPTY, actual: None };
        assert_eq!(bad.exit_code(), exit::CHECKSUM);
        assert_eq!(Error::Usage("u".into()).exit_code(), exit::USAGE);
        assert_eq!(Error::LocalExists { path: "a".into() }.exit_code(), exit::REFUSED);
    }

    #[test]
    fn only_network_and_availability_failures_are_transient() {
        let refused = |c| Error::from_reply("h:1", RequestKind::Get, None, reply(c));
        assert!(refused(ErrorCode::BUSY).is_transient());
        assert!(refused(ErrorCode::SHUTTING_DOWN).is_transient());
        assert!(!refused(ErrorCode::NOT_FOUND).is_transient());
        assert!(!refused(ErrorCode::UNAUTHORIZED).is_transient());
        let refused_conn =
            Error::Connect { addr: "h:1".into(), source: io::ErrorKind::ConnectionRefused.into(), loopback: false };
        assert!(refused_conn.is_transient());
        assert!(refused_conn.request_not_processed());
    }

    #[test]
    fn unknown_codes_are_fatal_by_their_range() {
        let from = |c| Error::from_reply("h:1", RequestKind::Stat, Some("a".into()), reply(ErrorCode(c)));
        for fatal in [0x0107, 0x01FF, 0x0000, 0x00FF, 0x0300, 0xFFFF] {
            let e = from(fatal);
            assert!(matches!(e, Error::UnknownFatal { .. }), "0x{fatal:04x}: {e:?}");
            assert_eq!(e.exit_code(), exit::NETWORK, "0x{fatal:04x}");
            assert!(!e.is_transient() && !e.request_not_processed(), "0x{fatal:04x}");
        }
        let e = from(0x0209);
        assert!(matches!(e, Error::Refused { .. }), "an unknown recoverable code is a refusal: {e:?}");
        assert_eq!(e.exit_code(), exit::REFUSED);
        assert!(matches!(from(0x0105), Error::Refused { .. }), "TOO_LARGE is known: a refusal");
    }

    #[test]
    fn connection_refused_says_what_to_do() {
        let e = Error::Connect {
            addr: "127.0.0.1:9999".into(),
            source: io::ErrorKind::ConnectionRefused.into(),
            loopback: true,
        };
        assert_eq!(e.to_string(), "connection refused by 127.0.0.1:9999 — is ferryd running?");
        let e = Error::NotListening { addr: "127.0.0.1:9999".into() };
        assert!(!e.is_transient(), "not retried");
        assert_eq!(e.exit_code(), exit::NETWORK);
    }

    #[test]
    fn an_address_that_cannot_be_one_is_a_usage_error() {
        use std::net::ToSocketAddrs;
        for addr in ["nonsense", "127.0.0.1:99999"] {
            let source = addr.to_socket_addrs().unwrap_err();
            let e = Error::Resolve { addr: addr.into(), source };
            assert_eq!(e.exit_code(), exit::USAGE, "{addr}: {e}");
            assert!(!e.is_transient(), "{addr}");
        }
    }

    #[test]
    fn refusals_end_in_whole_sentences_that_name_no_shell_command() {
        let forbidden = |op| Error::from_reply("h:1", op, None, ErrorReply::new(ErrorCode::FORBIDDEN, "")).to_string();
        assert_eq!(
            forbidden(RequestKind::Shutdown),
            "the server does not allow you to shut it down — that takes an admin token (--token)"
        );
        assert!(
            forbidden(RequestKind::Put).ends_with("— try a token with more rights (--token)"),
            "{}",
            forbidden(RequestKind::Put)
        );
        let missing =
            Error::from_reply("h:1", RequestKind::Get, Some("x".into()), ErrorReply::new(ErrorCode::NOT_FOUND, ""));
        assert_eq!(missing.to_string(), "x: no such file on the server — the list command shows what there is");
    }

    #[test]
    fn tls_failures_exit_3_and_are_not_retried_and_a_cleartext_token_is_a_usage_error() {
        use rustls::{AlertDescription, CertificateError};
        let cert = |c| Error::tls("h:1", "h", rustls::Error::InvalidCertificate(c));
        let unknown = cert(CertificateError::UnknownIssuer);
        assert!(matches!(unknown, Error::Certificate { problem: CertProblem::UnknownIssuer, .. }), "{unknown:?}");
        assert!(matches!(cert(CertificateError::Expired), Error::Certificate { problem: CertProblem::Expired, .. }));
        assert!(matches!(
            cert(CertificateError::NotValidForName),
            Error::Certificate { problem: CertProblem::NameMismatch { .. }, .. }
        ));
        let alpn = Error::tls("h:1", "h", rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol));
        assert!(alpn.to_string().contains("ALPN ferry/1"), "{alpn}");
        for e in [unknown, alpn] {
            assert_eq!(e.exit_code(), exit::NETWORK, "{e}");
            assert!(!e.is_transient(), "{e}");
        }
        let clear = Error::CleartextToken { addr: "192.0.2.1:9".into() };
        assert_eq!(clear.exit_code(), exit::USAGE);
        assert!(!clear.is_transient());
    }

    #[test]
    fn names_from_a_certificate_are_written_plainly() {
        assert_eq!(presented_name("DnsName(\"files.lan\")"), "files.lan");
        assert_eq!(presented_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(presented_name("DirectoryName"), "DirectoryName");
        assert!(!presented_name("DnsName(\"a\x1b[31m\")").contains('\x1b'));
    }

    #[test]
    fn server_messages_are_escaped() {
        let e = Error::from_reply(
            "h:1",
            RequestKind::Get,
            Some("a".into()),
            ErrorReply::new(ErrorCode::NOT_FOUND, "no\x1b[31m such"),
        );
        assert!(!e.to_string().contains('\x1b'), "{e}");
    }
}
