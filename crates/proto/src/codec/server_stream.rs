//! The server-to-client byte stream: the server hello (or an error), then replies, with GET data
//! streamed through; or a legacy reply (PROTOCOL.md §§ 4.3, 7, 9, 15).
//!
//! This is the decoder a client runs on a server it does not trust: every name is checked
//! (`[NAME-11]`) and every length bounded before use.

use nom::bytes::streaming::take;
use nom::number::streaming::{be_i64, be_u16, be_u32, be_u64, be_u8};

use super::fields::{clip, fail, md5hex, presence, put_i64, put_name, put_u16, put_u32, put_u64, raw_name};
use super::{finish, take_data, DecodeError, Decoded, PResult};
use crate::digest::Digest;
use crate::limits::{ERROR_MESSAGE_MAX, FILE_SIZE_CEILING, HELP_TEXT_MAX, NAME_LEN_CEILING, PEER_LEN_MAX};
use crate::message::{tag, Capabilities, ConnRecord, Entry, ErrorCode, ErrorReply, FrameHead, Role, ServerHello};
use crate::name::Name;

/// One unit of the server-to-client stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerItem<'a> {
    /// The server hello (§ 4.3).
    Hello(ServerHello),
    /// An error reply (§ 9).
    Error(ErrorReply),
    /// A LIST reply's head; `count` [`ServerItem::Entry`] items follow.
    ListStart {
        count: u32,
    },
    /// One LIST entry.
    Entry(Entry),
    /// A STAT reply.
    Stat(Entry),
    /// A GET reply's head; `size - offset` bytes of data follow.
    GetHead {
        offset: u64,
        frame: FrameHead,
    },
    /// A FETCH reply in the trailing form (§ 7.10): `size` bytes of data follow, then a
    /// [`ServerItem::Trailer`].
    FetchTrailing {
        name: Name,
        size: u64,
    },
    /// A PUT reply.
    PutOk {
        replaced: bool,
    },
    DeleteOk,
    /// A STATUS reply's head; `count` [`ServerItem::Connection`] items follow.
    StatusStart {
        count: u32,
    },
    /// One STATUS record.
    Connection(ConnRecord),
    /// A HELP reply; invalid UTF-8 was replaced (`[ENC-3]`).
    Help(String),
    ByeOk,
    ShutdownOk,
    /// A legacy `"OK"` and its frame head; `size` bytes of data follow.
    LegacyOk(FrameHead),
    /// A legacy `"ERROR"`. Its message follows as [`ServerItem::Data`] chunks up to EOF; a
    /// reader keeps at most [`ERROR_MESSAGE_MAX`] bytes of it (`[LEG-6]`).
    LegacyErrorStart,
    /// File data of the GET, FETCH or legacy reply before, as it arrives.
    Data(&'a [u8]),
    /// The digest after a FETCH reply's data, in the trailing form (§ 6.5);
    /// [`ServerItem::DataEnd`] follows.
    Trailer(Digest),
    /// That data (and trailer) is complete.
    DataEnd,
}

impl ServerItem<'_> {
    /// Appends the item's wire form. Texts longer than their ceilings are cut to fit, so an
    /// encoder can never produce a message a peer must refuse (`[ERR-1]`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Hello(h) => h.encode(out),
            Self::Error(e) => e.encode(out),
            Self::ListStart { count } => {
                out.push(tag::LIST);
                put_u32(out, *count);
            }
            Self::Entry(e) => e.encode(out),
            Self::Stat(e) => {
                out.push(tag::STAT);
                e.encode(out);
            }
            Self::GetHead { offset, frame } => {
                out.push(tag::GET);
                put_u64(out, *offset);
                frame.encode(out);
            }
            Self::FetchTrailing { name, size } => {
                out.push(tag::FETCH_TRAILING);
                put_name(out, name.as_str());
                put_u64(out, *size);
            }
            Self::Trailer(md5) => out.extend_from_slice(&md5.to_hex()),
            Self::PutOk { replaced } => out.extend_from_slice(&[tag::PUT, u8::from(*replaced)]),
            Self::DeleteOk => out.push(tag::DELETE),
            Self::StatusStart { count } => {
                out.push(tag::STATUS);
                put_u32(out, *count);
            }
            Self::Connection(c) => c.encode(out),
            Self::Help(text) => {
                let text = clip(text, HELP_TEXT_MAX as usize);
                out.push(tag::HELP);
                put_u32(out, text.len() as u32);
                out.extend_from_slice(text.as_bytes());
            }
            Self::ByeOk => out.push(tag::BYE),
            Self::ShutdownOk => out.push(tag::SHUTDOWN),
            Self::LegacyOk(frame) => {
                out.extend_from_slice(tag::LEGACY_OK);
                frame.encode(out);
            }
            Self::LegacyErrorStart => out.extend_from_slice(tag::LEGACY_ERROR),
            Self::Data(d) => out.extend_from_slice(d),
            Self::DataEnd => {}
        }
    }
}

impl ServerHello {
    /// Appends the hello's wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(tag::HELLO);
        put_u16(out, self.version);
        out.push(self.role as u8);
        put_u32(out, self.capabilities.0);
        put_u32(out, self.max_name_len);
        put_u64(out, self.max_file_size);
        put_u32(out, self.max_clients);
        put_u32(out, self.idle_timeout_ms);
        put_u32(out, self.head_timeout_ms);
        put_u32(out, self.progress_timeout_ms);
    }
}

impl ErrorReply {
    /// An error with its message cut to [`ERROR_MESSAGE_MAX`] bytes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        let keep = clip(&message, ERROR_MESSAGE_MAX).len();
        message.truncate(keep);
        Self { code, message }
    }

    /// Appends the error's wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let message = clip(&self.message, ERROR_MESSAGE_MAX);
        out.push(tag::ERROR);
        put_u16(out, self.code.0);
        put_u16(out, message.len() as u16);
        out.extend_from_slice(message.as_bytes());
    }
}

impl Entry {
    /// Appends the entry's fields (§ 7.1), without a tag.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_name(out, self.name.as_str());
        put_u64(out, self.size);
        put_i64(out, self.mtime_ms);
        match &self.md5 {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(&d.to_hex());
            }
            None => out.push(0),
        }
    }
}

impl ConnRecord {
    /// Appends the record's fields (§ 7.6). A peer longer than the ceiling is cut to fit.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let peer = clip(&self.peer, PEER_LEN_MAX);
        put_u64(out, self.id);
        out.push(peer.len() as u8);
        out.extend_from_slice(peer.as_bytes());
        put_i64(out, self.connected_ms);
        match self.disconnected_ms {
            Some(t) => {
                out.push(1);
                put_i64(out, t);
            }
            None => out.push(0),
        }
        put_u64(out, self.bytes_in);
        put_u64(out, self.bytes_out);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Handshake,
    Session,
    Entries {
        remaining: u32,
    },
    Records {
        remaining: u32,
    },
    Data {
        remaining: u64,
        legacy: bool,
        /// The digest follows the data (§ 6.5).
        trailer: bool,
    },
    LegacyStart,
    /// A legacy error message, running to EOF.
    LegacyText,
    Done,
}

/// Decodes the server-to-client stream, as a client reads it.
#[derive(Debug, Clone)]
pub struct ReplyDecoder {
    phase: Phase,
}

impl ReplyDecoder {
    /// A decoder for a new version 1 connection: it expects the server hello.
    pub fn new() -> Self {
        Self { phase: Phase::Handshake }
    }

    /// A decoder for a connection past its handshake.
    pub fn in_session() -> Self {
        Self { phase: Phase::Session }
    }

    /// A decoder for the reply to a legacy request.
    pub fn legacy() -> Self {
        Self { phase: Phase::LegacyStart }
    }

    /// Whether the decoder is between messages.
    pub fn at_boundary(&self) -> bool {
        matches!(
            self.phase,
            Phase::Session | Phase::Done | Phase::Entries { remaining: 0 } | Phase::Records { remaining: 0 }
        )
    }

    /// Decodes the next item from the start of `input`.
    ///
    /// # Errors
    /// A fatal [`DecodeError`]: the server broke the protocol and the connection must be closed.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<ServerItem<'a>>, DecodeError> {
        loop {
            match &mut self.phase {
                Phase::Entries { remaining: 0 } | Phase::Records { remaining: 0 } => {
                    self.phase = Phase::Session;
                }
                Phase::Entries { remaining } => {
                    let decoded = finish(input, entry(input))?;
                    if let Decoded::Item { .. } = decoded {
                        *remaining -= 1;
                    }
                    return Ok(decoded.map(ServerItem::Entry));
                }
                Phase::Records { remaining } => {
                    let decoded = finish(input, record(input))?;
                    if let Decoded::Item { .. } = decoded {
                        *remaining -= 1;
                    }
                    return Ok(decoded.map(ServerItem::Connection));
                }
                Phase::Data { remaining: 0, trailer: true, .. } => {
                    let decoded = finish(input, md5hex(input))?;
                    if let Decoded::Item { .. } = decoded {
                        self.phase = Phase::Data { remaining: 0, legacy: false, trailer: false };
                    }
                    return Ok(decoded.map(ServerItem::Trailer));
                }
                Phase::Data { remaining: 0, legacy, .. } => {
                    self.phase = if *legacy { Phase::Done } else { Phase::Session };
                    return Ok(Decoded::Item { item: ServerItem::DataEnd, consumed: 0 });
                }
                Phase::Data { remaining, .. } => {
                    return Ok(match take_data(input, remaining) {
                        Some((data, consumed)) => Decoded::Item { item: ServerItem::Data(data), consumed },
                        None => Decoded::NeedMore,
                    });
                }
                Phase::LegacyText => {
                    return Ok(match input.len() {
                        0 => Decoded::NeedMore,
                        consumed => Decoded::Item { item: ServerItem::Data(input), consumed },
                    });
                }
                Phase::Done => return Ok(Decoded::NeedMore),
                Phase::LegacyStart => {
                    let decoded = finish(input, legacy_head(input))?;
                    if let Decoded::Item { item, .. } = &decoded {
                        self.phase = match item {
                            ServerItem::LegacyOk(frame) => {
                                Phase::Data { remaining: frame.size, legacy: true, trailer: false }
                            }
                            _ => Phase::LegacyText,
                        };
                    }
                    return Ok(decoded);
                }
                Phase::Handshake => {
                    let decoded = finish(input, hello_or_error(input))?;
                    if let Decoded::Item { item, .. } = &decoded {
                        self.phase = if matches!(item, ServerItem::Hello(_)) { Phase::Session } else { Phase::Done };
                    }
                    return Ok(decoded);
                }
                Phase::Session => {
                    let decoded = finish(input, reply(input))?;
                    if let Decoded::Item { item, .. } = &decoded {
                        self.phase = match item {
                            ServerItem::ListStart { count } => Phase::Entries { remaining: *count },
                            ServerItem::StatusStart { count } => Phase::Records { remaining: *count },
                            ServerItem::GetHead { offset, frame } => {
                                Phase::Data { remaining: frame.size - offset, legacy: false, trailer: false }
                            }
                            ServerItem::FetchTrailing { size, .. } => {
                                Phase::Data { remaining: *size, legacy: false, trailer: true }
                            }
                            _ => Phase::Session,
                        };
                    }
                    return Ok(decoded);
                }
            }
        }
    }

    /// Checks the end of the stream, given the bytes still unused.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when EOF falls inside a message. A legacy error message ends at
    /// EOF, so EOF there is clean.
    pub fn finish(&self, unused: &[u8]) -> Result<(), DecodeError> {
        if unused.is_empty() && (self.at_boundary() || self.phase == Phase::LegacyText) {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        Self::new()
    }
}
fn hello_or_error(i: &[u8]) -> PResult<'_, ServerItem<'_>> {
    let (i, t) = be_u8(i)?;
    match t {
        tag::HELLO => server_hello(i),
        tag::ERROR => error_body(i),
        other => fail(DecodeError::UnknownTag(other)),
    }
}

fn server_hello(i: &[u8]) -> PResult<'_, ServerItem<'_>> {
    let (i, version) = be_u16(i)?;
    let (i, role) = be_u8(i)?;
    let Some(role) = Role::from_wire(role) else {
        return fail(DecodeError::BadRole(role));
    };
    let (i, capabilities) = be_u32(i)?;
    let (i, max_name_len) = be_u32(i)?;
    let (i, max_file_size) = be_u64(i)?;
    let (i, max_clients) = be_u32(i)?;
    let (i, idle_timeout_ms) = be_u32(i)?;
    let (i, head_timeout_ms) = be_u32(i)?;
    let (i, progress_timeout_ms) = be_u32(i)?;
    let hello = ServerHello {
        version,
        role,
        capabilities: Capabilities(capabilities),
        max_name_len,
        max_file_size,
        max_clients,
        idle_timeout_ms,
        head_timeout_ms,
        progress_timeout_ms,
    };
    Ok((i, ServerItem::Hello(hello)))
}

fn error_body(i: &[u8]) -> PResult<'_, ServerItem<'_>> {
    let (i, code) = be_u16(i)?;
    let (i, len) = be_u16(i)?;
    // `[ERR-2]`: an over-long message is not read.
    if usize::from(len) > ERROR_MESSAGE_MAX {
        return fail(DecodeError::MessageTooLong(len));
    }
    let (i, text) = take(len)(i)?;
    let message = String::from_utf8_lossy(text).into_owned();
    Ok((i, ServerItem::Error(ErrorReply { code: ErrorCode(code), message })))
}

/// A name from the server, checked as a client must before using it (`[NAME-11]`).
fn checked_name(i: &[u8]) -> PResult<'_, Name> {
    let (i, raw) = raw_name(i)?;
    match Name::new(raw, NAME_LEN_CEILING) {
        Ok(name) => Ok((i, name)),
        Err(e) => fail(DecodeError::BadName(e)),
    }
}

fn frame_head(i: &[u8]) -> PResult<'_, FrameHead> {
    let (i, name) = checked_name(i)?;
    let (i, size) = be_u64(i)?;
    if size > FILE_SIZE_CEILING {
        return fail(DecodeError::FileTooLarge { size, max: FILE_SIZE_CEILING });
    }
    let (i, md5) = md5hex(i)?;
    Ok((i, FrameHead { name, size, md5 }))
}

fn entry(i: &[u8]) -> PResult<'_, Entry> {
    let (i, name) = checked_name(i)?;
    let (i, size) = be_u64(i)?;
    if size > FILE_SIZE_CEILING {
        return fail(DecodeError::FileTooLarge { size, max: FILE_SIZE_CEILING });
    }
    let (i, mtime_ms) = be_i64(i)?;
    let (i, has_md5) = presence(i)?;
    let (i, md5) = if has_md5 {
        let (i, d) = md5hex(i)?;
        (i, Some(d))
    } else {
        (i, None)
    };
    Ok((i, Entry { name, size, mtime_ms, md5 }))
}

fn record(i: &[u8]) -> PResult<'_, ConnRecord> {
    let (i, id) = be_u64(i)?;
    let (i, peer_len) = be_u8(i)?;
    if usize::from(peer_len) > PEER_LEN_MAX {
        return fail(DecodeError::PeerTooLong(peer_len));
    }
    let (i, peer) = take(peer_len)(i)?;
    if !peer.iter().all(|b| (0x21..=0x7E).contains(b)) {
        return fail(DecodeError::BadPeer);
    }
    let peer = String::from_utf8_lossy(peer).into_owned();
    let (i, connected_ms) = be_i64(i)?;
    let (i, closed) = presence(i)?;
    let (i, disconnected_ms) = if closed {
        let (i, t) = be_i64(i)?;
        (i, Some(t))
    } else {
        (i, None)
    };
    let (i, bytes_in) = be_u64(i)?;
    let (i, bytes_out) = be_u64(i)?;
    Ok((i, ConnRecord { id, peer, connected_ms, disconnected_ms, bytes_in, bytes_out }))
}

fn reply(i: &[u8]) -> PResult<'_, ServerItem<'_>> {
    let (i, t) = be_u8(i)?;
    match t {
        tag::ERROR => error_body(i),
        tag::LIST => {
            let (i, count) = be_u32(i)?;
            Ok((i, ServerItem::ListStart { count }))
        }
        tag::STAT => {
            let (i, e) = entry(i)?;
            Ok((i, ServerItem::Stat(e)))
        }
        tag::GET => {
            let (i, offset) = be_u64(i)?;
            let (i, frame) = frame_head(i)?;
            if offset > frame.size {
                return fail(DecodeError::OffsetPastEnd { offset, size: frame.size });
            }
            Ok((i, ServerItem::GetHead { offset, frame }))
        }
        tag::FETCH_TRAILING => {
            let (i, name) = checked_name(i)?;
            let (i, size) = be_u64(i)?;
            if size > FILE_SIZE_CEILING {
                return fail(DecodeError::FileTooLarge { size, max: FILE_SIZE_CEILING });
            }
            Ok((i, ServerItem::FetchTrailing { name, size }))
        }
        tag::PUT => {
            let (i, outcome) = be_u8(i)?;
            match outcome {
                0 | 1 => Ok((i, ServerItem::PutOk { replaced: outcome == 1 })),
                other => fail(DecodeError::BadOutcome(other)),
            }
        }
        tag::DELETE => Ok((i, ServerItem::DeleteOk)),
        tag::STATUS => {
            let (i, count) = be_u32(i)?;
            Ok((i, ServerItem::StatusStart { count }))
        }
        tag::HELP => {
            let (i, len) = be_u32(i)?;
            if len > HELP_TEXT_MAX {
                return fail(DecodeError::HelpTooLong(len));
            }
            let (i, text) = take(len)(i)?;
            Ok((i, ServerItem::Help(String::from_utf8_lossy(text).into_owned())))
        }
        tag::BYE => Ok((i, ServerItem::ByeOk)),
        tag::SHUTDOWN => Ok((i, ServerItem::ShutdownOk)),
        other => fail(DecodeError::UnknownTag(other)),
    }
}

fn legacy_head(i: &[u8]) -> PResult<'_, ServerItem<'_>> {
    let (_, first) = be_u8(i)?;
    match first {
        b'O' => {
            let (i, status) = take(2usize)(i)?;
            if status != tag::LEGACY_OK {
                return fail(DecodeError::BadLegacyStatus);
            }
            let (i, frame) = frame_head(i)?;
            Ok((i, ServerItem::LegacyOk(frame)))
        }
        b'E' => {
            let (i, status) = take(5usize)(i)?;
            if status != tag::LEGACY_ERROR {
                return fail(DecodeError::BadLegacyStatus);
            }
            Ok((i, ServerItem::LegacyErrorStart))
        }
        _ => fail(DecodeError::BadLegacyStatus),
    }
}
