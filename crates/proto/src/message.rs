//! The messages of PROTOCOL.md as plain values, with no I/O: what the codec decodes to and encodes
//! from.

use std::fmt;

use crate::digest::Digest;
use crate::name::Name;

/// Request opcodes (§ 5.1).
pub mod opcode {
    pub const LIST: u8 = 0x01;
    pub const STAT: u8 = 0x02;
    pub const GET: u8 = 0x03;
    pub const PUT: u8 = 0x04;
    pub const DELETE: u8 = 0x05;
    pub const STATUS: u8 = 0x06;
    pub const HELP: u8 = 0x07;
    pub const BYE: u8 = 0x08;
    pub const SHUTDOWN: u8 = 0x09;
    /// A GET that lets the server send the digest after the data (§ 7.10); only under
    /// [`super::Capabilities::TRAILER`].
    pub const FETCH: u8 = 0x0B;
}

/// Reply tags (§ 5.1).
pub mod tag {
    pub const HELLO: u8 = 0x80;
    pub const LIST: u8 = 0x81;
    pub const STAT: u8 = 0x82;
    pub const GET: u8 = 0x83;
    pub const PUT: u8 = 0x84;
    pub const DELETE: u8 = 0x85;
    pub const STATUS: u8 = 0x86;
    pub const HELP: u8 = 0x87;
    pub const BYE: u8 = 0x88;
    pub const SHUTDOWN: u8 = 0x89;
    /// A FETCH reply in the trailing form (§ 7.10): name, size, data, then the digest.
    pub const FETCH_TRAILING: u8 = 0x8B;
    pub const ERROR: u8 = 0xFF;
    /// The legacy profile's success reply (§ 15.1).
    pub const LEGACY_OK: &[u8; 2] = b"OK";
    /// The legacy profile's error reply (§ 15.1).
    pub const LEGACY_ERROR: &[u8; 5] = b"ERROR";
}

/// The kind of a request, without its body: what a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    List,
    Stat,
    Get,
    Put,
    Delete,
    Status,
    Help,
    Bye,
    Shutdown,
    /// A GET that accepts a trailing digest (§ 7.10).
    Fetch,
    /// The legacy profile's single download (§ 15).
    LegacyGet,
}

impl RequestKind {
    /// The reply tag that answers this request (legacy has none: it uses `"OK"`). A FETCH may
    /// also be answered with [`tag::FETCH_TRAILING`].
    pub fn reply_tag(self) -> Option<u8> {
        Some(match self {
            Self::List => tag::LIST,
            Self::Stat => tag::STAT,
            Self::Get | Self::Fetch => tag::GET,
            Self::Put => tag::PUT,
            Self::Delete => tag::DELETE,
            Self::Status => tag::STATUS,
            Self::Help => tag::HELP,
            Self::Bye => tag::BYE,
            Self::Shutdown => tag::SHUTDOWN,
            Self::LegacyGet => return None,
        })
    }

    /// The least role that may send it (§ 8.1).
    pub fn required_role(self) -> Role {
        match self {
            Self::Put | Self::Delete => Role::Write,
            Self::Shutdown => Role::Admin,
            _ => Role::Read,
        }
    }

    /// The command's name as PROTOCOL.md spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "LIST",
            Self::Stat => "STAT",
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Status => "STATUS",
            Self::Help => "HELP",
            Self::Bye => "BYE",
            Self::Shutdown => "SHUTDOWN",
            Self::Fetch => "FETCH",
            Self::LegacyGet => "LEGACY-GET",
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection's role (§ 8.1), ordered so that `role >= needed` is the permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Read = 1,
    Write = 2,
    Admin = 3,
}

impl Role {
    /// The wire value's role, if it is one.
    pub fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Read),
            2 => Some(Self::Write),
            3 => Some(Self::Admin),
            _ => None,
        }
    }

    /// The role's name in configuration files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?} (expected read, write or admin)")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The capability bit set of the server's hello (§ 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    pub const LEGACY: Self = Self(0x01);
    pub const RESUME: Self = Self(0x02);
    pub const STATUS: Self = Self(0x04);
    pub const SHUTDOWN: Self = Self(0x08);
    /// Frames whose digest follows the data (§ 6.5): PUT modes 0x80 and 0x81, and FETCH.
    pub const TRAILER: Self = Self(0x10);
    /// Every bit version 1 defines (`[HELLO-9]`: the others are sent as 0).
    pub const ALL_V1: Self = Self(0x1F);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the bits set that version 1 knows.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::LEGACY, "LEGACY"),
            (Self::RESUME, "RESUME"),
            (Self::STATUS, "STATUS"),
            (Self::SHUTDOWN, "SHUTDOWN"),
            (Self::TRAILER, "TRAILER"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.contains(*bit))
        .map(|(_, n)| n)
        .collect()
    }

    /// The bit of a capability name, as transcripts and configuration spell it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "LEGACY" => Some(Self::LEGACY),
            "RESUME" => Some(Self::RESUME),
            "STATUS" => Some(Self::STATUS),
            "SHUTDOWN" => Some(Self::SHUTDOWN),
            "TRAILER" => Some(Self::TRAILER),
            _ => None,
        }
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// An error code (§ 9.2). Codes this crate does not know are kept as they are, and
/// [`ErrorCode::is_fatal`] still classifies them by range (`[ERR-5]`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

macro_rules! error_codes {
    ($($name:ident = $value:expr, $wire:literal;)*) => {
        impl ErrorCode {
            $(pub const $name: Self = Self($value);)*
            /// Every code version 1 defines.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$name),*];

            /// The code's name in PROTOCOL.md, if version 1 defines it.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($wire),)*
                    _ => None,
                }
            }

            /// The code PROTOCOL.md spells `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($wire => Some(Self::$name),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    MALFORMED = 0x0100, "MALFORMED";
    UNSUPPORTED_VERSION = 0x0101, "UNSUPPORTED_VERSION";
    UNAUTHORIZED = 0x0102, "UNAUTHORIZED";
    BUSY = 0x0103, "BUSY";
    SHUTTING_DOWN = 0x0104, "SHUTTING_DOWN";
    TOO_LARGE = 0x0105, "TOO_LARGE";
    TIMEOUT = 0x0106, "TIMEOUT";
    NOT_FOUND = 0x0200, "NOT_FOUND";
    BAD_NAME = 0x0201, "BAD_NAME";
    FORBIDDEN = 0x0202, "FORBIDDEN";
    EXISTS = 0x0203, "EXISTS";
    CHECKSUM_MISMATCH = 0x0204, "CHECKSUM_MISMATCH";
    BAD_OFFSET = 0x0205, "BAD_OFFSET";
    STORAGE_FULL = 0x0206, "STORAGE_FULL";
    INTERNAL = 0x0207, "INTERNAL";
    UNSUPPORTED = 0x0208, "UNSUPPORTED";
}

impl ErrorCode {
    /// `[ERR-4]`, `[ERR-5]`: `0x01xx` and anything outside `0x0100..=0x02FF` close the connection.
    pub fn is_fatal(self) -> bool {
        !(0x0200..=0x02FF).contains(&self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// PUT's mode (§ 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PutMode {
    /// Create the file, or replace it whole.
    Overwrite = 0,
    /// Fail with `EXISTS` if the name exists.
    CreateOnly = 1,
}

/// The client's hello (§ 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub min_version: u16,
    pub max_version: u16,
    /// Visible ASCII, at most [`crate::limits::TOKEN_LEN_MAX`] bytes.
    pub token: Option<String>,
}

/// The server's hello (§ 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    pub version: u16,
    pub role: Role,
    pub capabilities: Capabilities,
    pub max_name_len: u32,
    pub max_file_size: u64,
    /// 0: not announced.
    pub max_clients: u32,
    /// 0: none.
    pub idle_timeout_ms: u32,
    /// The request head deadline (§ 12.4); a server never announces 0.
    pub head_timeout_ms: u32,
    /// The transfer progress deadline (§ 12.5); a server never announces 0.
    pub progress_timeout_ms: u32,
}

/// The head of a file frame (§ 6.1): everything but the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    pub name: Name,
    /// The whole file's size.
    pub size: u64,
    /// The whole file's digest.
    pub md5: Digest,
}

/// A PUT request's head (§ 7.4); `size` data bytes follow it on the wire, and then, in the
/// trailing form (§ 6.5), the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutHead {
    pub mode: PutMode,
    pub name: Name,
    /// The whole file's size.
    pub size: u64,
    /// The whole file's digest, in the leading form; `None` in the trailing form (modes 0x80 and 0x81),
    /// where it follows the data.
    pub md5: Option<Digest>,
}

impl PutHead {
    /// A PUT in the leading form of § 6.1.
    pub fn leading(mode: PutMode, frame: FrameHead) -> Self {
        Self { mode, name: frame.name, size: frame.size, md5: Some(frame.md5) }
    }

    /// A PUT in the trailing form of § 6.5 (modes 0x80 and 0x81).
    pub fn trailing(mode: PutMode, name: Name, size: u64) -> Self {
        Self { mode, name, size, md5: None }
    }

    /// Whether the digest follows the data (§ 6.5).
    pub fn is_trailing(&self) -> bool {
        self.md5.is_none()
    }

    /// The mode byte on the wire: bit 0 create-only, bit 7 the trailing form (§ 7.4).
    pub fn wire_mode(&self) -> u8 {
        self.mode as u8 | if self.is_trailing() { TRAILING_MODE_BIT } else { 0 }
    }
}

/// The bit of a PUT's mode byte that selects the trailing form (§ 7.4, § 6.5).
pub const TRAILING_MODE_BIT: u8 = 0x80;

impl PutHead {
    /// Splits a mode byte into the mode and whether the frame trails, if the byte is one a server
    /// reads: 0 and 1, and with `trailer` (the server announced `TRAILER`) 0x80 and 0x81.
    pub fn parse_mode(wire: u8, trailer: bool) -> Option<(PutMode, bool)> {
        let trailing = wire & TRAILING_MODE_BIT != 0;
        let mode = match wire & !TRAILING_MODE_BIT {
            0 => PutMode::Overwrite,
            1 => PutMode::CreateOnly,
            _ => return None,
        };
        (!trailing || trailer).then_some((mode, trailing))
    }
}

/// A request after the handshake (§ 5.1). A PUT's data is not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List,
    Stat(Name),
    Get {
        name: Name,
        offset: u64,
    },
    /// A GET whose reply may carry its digest after the data (§ 7.10).
    Fetch {
        name: Name,
        offset: u64,
    },
    Put(PutHead),
    Delete(Name),
    Status,
    Help,
    Bye,
    Shutdown,
}

impl Request {
    /// The request's kind.
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::List => RequestKind::List,
            Self::Stat(_) => RequestKind::Stat,
            Self::Get { .. } => RequestKind::Get,
            Self::Fetch { .. } => RequestKind::Fetch,
            Self::Put(_) => RequestKind::Put,
            Self::Delete(_) => RequestKind::Delete,
            Self::Status => RequestKind::Status,
            Self::Help => RequestKind::Help,
            Self::Bye => RequestKind::Bye,
            Self::Shutdown => RequestKind::Shutdown,
        }
    }
}

/// A LIST entry or STAT reply (§ 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Name,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub mtime_ms: i64,
    /// Absent when the server has not computed it yet (`[LIST-3]`).
    pub md5: Option<Digest>,
}

/// One STATUS record (§ 7.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    pub id: u64,
    /// ASCII, at most [`crate::limits::PEER_LEN_MAX`] bytes.
    pub peer: String,
    pub connected_ms: i64,
    /// Absent while the connection is open.
    pub disconnected_ms: Option<i64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// An error reply (§ 9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    /// For humans only (`[ERR-3]`); invalid UTF-8 was replaced by U+FFFD.
    pub message: String,
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, crate::name::escape_for_display(&self.message))
    }
}
