//! What both protocols share: the pre-encoded script of a load, a reply's head, and why a
//! reply or connection failed.

use ferry_proto::Digest;

use super::files::FileSet;
use super::{ferry_wire, http_wire};

/// The protocol a load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Ferry,
    /// Plain HTTP/1.1 GET.
    Http,
}

/// How a load uses its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Each connection asks, reads the whole reply, and asks again (`--depth` requests in
    /// flight at once: pipelining).
    Persistent,
    /// A new TCP connection per request: Ferry sends hello, GET and BYE; HTTP sends
    /// `Connection: close`. The server closes; the client reads to EOF, then reconnects.
    Fresh,
    /// Ferry's legacy profile (PROTOCOL.md § 15): one download per connection, no hello.
    Legacy,
}

/// How much of every reply is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Verify {
    /// The MD5 of the data received. Ferry: against the digest the reply announces, which
    /// must also be the file's own; HTTP: against the file's own digest.
    Data,
    /// The data byte for byte against the file's content, held in memory (files of at most
    /// 1 MiB), and what the head announces as with `announced`: as strict as `data`, at a
    /// fraction of the client's CPU time (a memory compare instead of MD5), which leaves more
    /// of a small machine to the server.
    Content,
    /// Only what the head announces: Ferry's digest and size, HTTP's Content-Length, against
    /// the file's. The data is counted, not hashed.
    Announced,
    /// Framing only.
    None,
}

/// A reply's head, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The head's length in bytes.
    pub len: usize,
    /// The data bytes that follow it.
    pub body: u64,
    /// The digest the head announces (Ferry).
    pub announced: Option<Digest>,
    /// The server will close the connection after this reply (HTTP `Connection: close`).
    pub closes: bool,
}

/// Why a connection failed. Any failure closes the connection and counts against the run.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("{name}: {what}")]
    Mismatch { name: String, what: &'static str },
    #[error("the server closed the connection with {0} replies owed")]
    Closed(usize),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything a load sends, encoded before it starts: the cost of encoding stays out of the
/// measurement, the same for both protocols.
#[derive(Debug)]
pub struct Script {
    pub protocol: Protocol,
    pub mode: Mode,
    /// Sent first on every connection: Ferry's client hello; empty for HTTP and legacy.
    pub hello: Vec<u8>,
    /// Per file, the request (Ferry in fresh mode: GET and BYE).
    requests: Vec<Vec<u8>>,
}

impl Script {
    /// # Panics
    /// Legacy mode with HTTP; the caller refuses that combination.
    pub fn new(protocol: Protocol, mode: Mode, files: &FileSet) -> Self {
        let names = files.files.iter().map(|f| f.name.as_str());
        let (hello, requests) = match (protocol, mode) {
            (Protocol::Ferry, Mode::Legacy) => (Vec::new(), names.map(ferry_wire::legacy_get).collect()),
            (Protocol::Ferry, mode) => {
                (ferry_wire::hello(), names.map(|n| ferry_wire::get(n, mode == Mode::Fresh)).collect())
            }
            (Protocol::Http, Mode::Legacy) => panic!("HTTP has no legacy mode"),
            (Protocol::Http, mode) => (Vec::new(), names.map(|n| http_wire::get(n, mode == Mode::Fresh)).collect()),
        };
        Self { protocol, mode, hello, requests }
    }

    pub fn request(&self, file: u32) -> &[u8] {
        &self.requests[file as usize]
    }

    /// Whether a Ferry connection starts with a hello to be answered.
    pub fn has_hello(&self) -> bool {
        !self.hello.is_empty()
    }

    /// Whether each request is followed by a BYE whose reply is awaited.
    pub fn has_bye(&self) -> bool {
        self.protocol == Protocol::Ferry && self.mode == Mode::Fresh
    }
}
