//! Streaming codecs for both directions of a connection (PROTOCOL.md §§ 4–7, 15).
//!
//! A decoder is fed whatever bytes have arrived — one at a time, or many messages at once
//! (`[ENC-5]`) — and answers with one [`Decoded::Item`] and the number of bytes it used, or
//! [`Decoded::NeedMore`], which is never an error. Message heads are parsed whole with nom's
//! streaming parsers; file data is handed out as it arrives and never buffered. Every length is
//! checked against its limit before the bytes it announces are looked at (`[ENC-6]`, `[LIM-3]`).
//!
//! Re-parsing a head after `NeedMore` costs O(1): every variable-length field is taken with a
//! single length check, so feeding a large head a byte at a time is not quadratic.

mod client_stream;
mod fields;
mod server_stream;

pub use client_stream::{ClientItem, RequestDecoder};
pub use server_stream::{ReplyDecoder, ServerItem};

use crate::message::ErrorCode;
use crate::name::NameError;

/// What one call to a decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole item, built from the first `consumed` bytes of the input (possibly 0, for items
    /// such as a data end that need no bytes).
    Item { item: T, consumed: usize },
    /// Not enough bytes for the next item yet; nothing was consumed. Call again with more.
    NeedMore,
}

impl<T> Decoded<T> {
    /// Maps the item, keeping the count.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decoded<U> {
        match self {
            Self::Item { item, consumed } => Decoded::Item { item: f(item), consumed },
            Self::NeedMore => Decoded::NeedMore,
        }
    }
}

/// A fatal decoding error: the byte stream cannot be trusted past this point and the connection
/// ends (for a server, after sending [`DecodeError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bad magic bytes: not a Ferry client")]
    BadMagic,
    #[error("bad version range {min}..{max}")]
    BadVersionRange { min: u16, max: u16 },
    #[error("token byte 0x{0:02x} is not visible ASCII")]
    BadTokenByte(u8),
    #[error("token of {0} bytes is longer than 256")]
    TokenTooLong(u16),
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    #[error("unknown reply tag 0x{0:02x}")]
    UnknownTag(u8),
    #[error("presence byte 0x{0:02x} is neither 0 nor 1")]
    BadPresence(u8),
    #[error("PUT mode 0x{0:02x} is not one this server reads")]
    BadMode(u8),
    #[error("digest is not 32 hexadecimal digits")]
    BadDigest,
    #[error("name length {0} is above the protocol ceiling of 4096")]
    NameTooLong(u32),
    #[error("legacy name length {len} is above the server's limit of {max}")]
    LegacyNameTooLong { len: u32, max: u32 },
    #[error("file size {size} is above the limit of {max}")]
    FileTooLarge { size: u64, max: u64 },
    #[error("error message of {0} bytes is longer than 1024")]
    MessageTooLong(u16),
    #[error("help text of {0} bytes is longer than 65536")]
    HelpTooLong(u32),
    #[error("peer address of {0} bytes is longer than 64")]
    PeerTooLong(u8),
    #[error("peer address is not visible ASCII")]
    BadPeer,
    #[error("role {0} is not 1, 2 or 3")]
    BadRole(u8),
    #[error("PUT outcome {0} is neither 0 nor 1")]
    BadOutcome(u8),
    #[error("GET offset {offset} is past the file's size {size}")]
    OffsetPastEnd { offset: u64, size: u64 },
    #[error("legacy reply starts with neither \"OK\" nor \"ERROR\"")]
    BadLegacyStatus,
    #[error("the server sent a name a client must refuse: {0}")]
    BadName(NameError),
    #[error("the connection ended in the middle of a message")]
    Truncated,
    #[error("malformed input ({0:?})")]
    Nom(nom::error::ErrorKind),
}

impl DecodeError {
    /// The error code PROTOCOL.md assigns to this condition: what a server sends before closing,
    /// and what the vectors' `end` names.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TokenTooLong(_)
            | Self::NameTooLong(_)
            | Self::LegacyNameTooLong { .. }
            | Self::FileTooLarge { .. }
            | Self::MessageTooLong(_)
            | Self::HelpTooLong(_)
            | Self::PeerTooLong(_) => ErrorCode::TOO_LARGE,
            Self::BadName(_) => ErrorCode::BAD_NAME,
            _ => ErrorCode::MALFORMED,
        }
    }
}

impl<I> nom::error::ParseError<I> for DecodeError {
    fn from_error_kind(_input: I, kind: nom::error::ErrorKind) -> Self {
        Self::Nom(kind)
    }

    fn append(_input: I, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

/// The result type of every parser in this module.
pub(crate) type PResult<'a, T> = nom::IResult<&'a [u8], T, DecodeError>;

/// Turns a nom result into a [`Decoded`], counting the bytes used.
pub(crate) fn finish<'a, T>(input: &'a [u8], r: PResult<'a, T>) -> Result<Decoded<T>, DecodeError> {
    match r {
        Ok((rest, item)) => Ok(Decoded::Item { item, consumed: input.len() - rest.len() }),
        Err(nom::Err::Incomplete(_)) => Ok(Decoded::NeedMore),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e),
    }
}

/// Hands out up to `remaining` bytes of file data from `input` as they arrive.
pub(crate) fn take_data<'a>(input: &'a [u8], remaining: &mut u64) -> Option<(&'a [u8], usize)> {
    if input.is_empty() {
        return None;
    }
    let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
    *remaining -= n as u64;
    Some((&input[..n], n))
}
