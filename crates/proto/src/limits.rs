//! Protocol ceilings (PROTOCOL.md § 3.1). They bound every implementation and never change within
//! version 1; a server's own, smaller limits travel in its hello (§ 4.3).

/// Longest name length field any peer accepts (§ 3.1). A length above it is fatal (`TOO_LARGE`).
pub const NAME_LEN_CEILING: u32 = 4096;
/// Longest authentication token, in bytes (§ 4.2).
pub const TOKEN_LEN_MAX: usize = 256;
/// Longest error message, in bytes (§ 9.1).
pub const ERROR_MESSAGE_MAX: usize = 1024;
/// Longest HELP text, in bytes (§ 7.7).
pub const HELP_TEXT_MAX: u32 = 65536;
/// Longest peer address in a STATUS record (§ 7.6).
pub const PEER_LEN_MAX: usize = 64;
/// Largest file size or offset (§ 3.1): fits an `i64` so implementations in any language agree.
pub const FILE_SIZE_CEILING: u64 = i64::MAX as u64;
/// Bytes a transfer must move, in either direction, within each progress deadline (§ 12.5). Small
/// enough for a slow link to move in seconds, large enough that a trickle cannot hold a connection.
pub const PROGRESS_UNIT: u64 = 65536;
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// The first bytes of a version 1 client hello (§ 4.2).
pub const MAGIC: &[u8; 5] = b"FERRY";

/// The limits a server applies to what it reads, and announces in its hello (§ 3.2).
///
/// A decoder holds at most one message head in memory: with the defaults that is a name of 255
/// bytes plus a few dozen bytes of fixed fields. File data is never buffered by the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Longest name accepted, in bytes (1 ..= [`NAME_LEN_CEILING`]). A longer name within the
    /// ceiling is a recoverable `BAD_NAME`; the name's bytes are read and dropped.
    pub max_name_len: u32,
    /// Largest file accepted in a PUT. A larger size is fatal: the data is never read.
    pub max_file_size: u64,
}

impl Default for ReadLimits {
    /// The defaults the spec's vectors assume: 255-byte names, 1 TiB files.
    fn default() -> Self {
        Self { max_name_len: 255, max_file_size: 1 << 40 }
    }
}

impl ReadLimits {
    /// The limits clamped to the protocol ceilings, so that a misconfigured server cannot announce
    /// values a peer must reject (`[LIM-2]`).
    pub fn clamped(self) -> Self {
        Self {
            max_name_len: self.max_name_len.clamp(1, NAME_LEN_CEILING),
            max_file_size: self.max_file_size.min(FILE_SIZE_CEILING),
        }
    }
}
