//! Parsers and encoders of the field types of PROTOCOL.md § 2.2, shared by both directions.

use nom::bytes::streaming::take;
use nom::number::streaming::{be_u32, be_u8};

use super::{DecodeError, PResult};
use crate::digest::Digest;
use crate::limits::NAME_LEN_CEILING;

pub(crate) fn fail<'a, T>(e: DecodeError) -> PResult<'a, T> {
    Err(nom::Err::Failure(e))
}

/// A `name` field's raw bytes. `[LIM-3]`: a length above the ceiling is fatal before any byte of
/// the name is awaited.
pub(crate) fn raw_name(i: &[u8]) -> PResult<'_, &[u8]> {
    let (i, len) = be_u32(i)?;
    if len > NAME_LEN_CEILING {
        return fail(DecodeError::NameTooLong(len));
    }
    take(len)(i)
}

/// An `md5hex` field (`[FRAME-4]`).
pub(crate) fn md5hex(i: &[u8]) -> PResult<'_, Digest> {
    let (i, digits) = take(32usize)(i)?;
    match Digest::from_hex(digits) {
        Some(d) => Ok((i, d)),
        None => fail(DecodeError::BadDigest),
    }
}

/// An `opt<T>` field's presence byte (`[ENC-4]`).
pub(crate) fn presence(i: &[u8]) -> PResult<'_, bool> {
    let (i, b) = be_u8(i)?;
    match b {
        0 => Ok((i, false)),
        1 => Ok((i, true)),
        other => fail(DecodeError::BadPresence(other)),
    }
}

pub(crate) fn put_name(out: &mut Vec<u8>, name: &str) {
    put_u32(out, name.len() as u32);
    out.extend_from_slice(name.as_bytes());
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Cuts `s` to at most `max` bytes at a character boundary, so that an encoder can never emit a
/// text longer than its ceiling (`[ERR-1]`).
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
