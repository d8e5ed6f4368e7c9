//! The client-to-server byte stream: the hello (or a legacy request), then requests, with PUT data
//! streamed through (PROTOCOL.md §§ 4.2, 5, 7, 15).

use nom::bytes::streaming::{tag, take};
use nom::number::streaming::{be_u16, be_u32, be_u64, be_u8};

use super::fields::{fail, md5hex, put_name, put_u16, put_u64, raw_name};
use super::{finish, take_data, DecodeError, Decoded, PResult};
use crate::digest::Digest;
use crate::limits::{ReadLimits, MAGIC, TOKEN_LEN_MAX};
use crate::message::{opcode, ClientHello, FrameHead, PutHead, Request, RequestKind};
use crate::name::{Name, NameError};

/// One unit of the client-to-server stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientItem<'a> {
    /// The client hello (§ 4.2).
    Hello(ClientHello),
    /// A legacy-profile request (§ 15.1).
    LegacyGet(Name),
    /// A request with valid framing and names. A [`Request::Put`] is followed by its data.
    Request(Request),
    /// A request whose framing is intact but whose name breaks § 10: the server answers
    /// `BAD_NAME` and carries on (`[NAME-7]`). A rejected PUT is still followed by its data.
    Rejected { kind: RequestKind, error: NameError },
    /// File data of the PUT before, as it arrives.
    Data(&'a [u8]),
    /// The digest after a PUT's data, in the trailing form (§ 6.5); [`ClientItem::DataEnd`]
    /// follows.
    Trailer(Digest),
    /// The PUT's data (and trailer) is complete.
    DataEnd,
}

impl ClientItem<'_> {
    /// Appends the item's wire form.
    ///
    /// `Rejected` has no wire form of its own (the name that caused it is gone) and encodes to
    /// nothing.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Hello(h) => h.encode(out),
            Self::LegacyGet(name) => encode_legacy_get(name.as_str(), out),
            Self::Request(r) => r.encode(out),
            Self::Data(d) => out.extend_from_slice(d),
            Self::Trailer(md5) => out.extend_from_slice(&md5.to_hex()),
            Self::Rejected { .. } | Self::DataEnd => {}
        }
    }
}

/// Writes a legacy request for `name`, which the caller has checked.
pub fn encode_legacy_get(name: &str, out: &mut Vec<u8>) {
    put_name(out, name);
}

impl ClientHello {
    /// Appends the hello's wire form. The token must already satisfy `[HELLO-2]`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        put_u16(out, self.min_version);
        put_u16(out, self.max_version);
        let token = self.token.as_deref().unwrap_or("");
        put_u16(out, token.len() as u16);
        out.extend_from_slice(token.as_bytes());
    }
}

impl Request {
    /// Appends the request's wire form; for a PUT, its head only (the caller sends the data).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::List => out.push(opcode::LIST),
            Self::Stat(name) => {
                out.push(opcode::STAT);
                put_name(out, name.as_str());
            }
            Self::Get { name, offset } => {
                out.push(opcode::GET);
                put_name(out, name.as_str());
                put_u64(out, *offset);
            }
            Self::Fetch { name, offset } => {
                out.push(opcode::FETCH);
                put_name(out, name.as_str());
                put_u64(out, *offset);
            }
            Self::Put(head) => {
                out.push(opcode::PUT);
                out.push(head.wire_mode());
                put_name(out, head.name.as_str());
                put_u64(out, head.size);
                if let Some(md5) = &head.md5 {
                    out.extend_from_slice(&md5.to_hex());
                }
            }
            Self::Delete(name) => {
                out.push(opcode::DELETE);
                put_name(out, name.as_str());
            }
            Self::Status => out.push(opcode::STATUS),
            Self::Help => out.push(opcode::HELP),
            Self::Bye => out.push(opcode::BYE),
            Self::Shutdown => out.push(opcode::SHUTDOWN),
        }
    }
}

impl FrameHead {
    /// Appends name, size and digest (§ 6.1); the data follows separately.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_name(out, self.name.as_str());
        put_u64(out, self.size);
        out.extend_from_slice(&self.md5.to_hex());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Session,
    Data {
        remaining: u64,
        /// The digest follows the data (§ 6.5).
        trailer: bool,
    },
    /// After a legacy request: the client has nothing more to say.
    Done,
}

/// Decodes the client-to-server stream, as a server reads it.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    limits: ReadLimits,
    /// The server announced `TRAILER` (§ 6.5): PUT modes 0x80 and 0x81 and FETCH are requests, not
    /// malformed bytes.
    trailer: bool,
    phase: Phase,
}

impl RequestDecoder {
    /// A decoder for a new connection: it expects a hello, or a legacy request (first byte 0).
    pub fn new(limits: ReadLimits) -> Self {
        Self { limits: limits.clamped(), trailer: false, phase: Phase::Handshake }
    }

    /// The same decoder for a server that announces `TRAILER` (or not): it then reads PUT modes 0x80
    /// and 0x81 and FETCH (§ 6.5), which are malformed otherwise (`[PUT-7]`, `[REQ-2]`).
    pub fn with_trailer(mut self, trailer: bool) -> Self {
        self.trailer = trailer;
        self
    }

    /// A decoder for a connection past its handshake.
    pub fn in_session(limits: ReadLimits) -> Self {
        Self { limits: limits.clamped(), trailer: false, phase: Phase::Session }
    }

    /// The limits in force.
    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// Whether the decoder is between messages (so EOF here is a clean close, given no unused
    /// input remains).
    pub fn at_boundary(&self) -> bool {
        matches!(self.phase, Phase::Handshake | Phase::Session | Phase::Done)
    }

    /// Whether the stream is inside a PUT's data.
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data { .. })
    }

    /// Decodes the next item from the start of `input`.
    ///
    /// # Errors
    /// A fatal [`DecodeError`]; the stream cannot be read past it.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<ClientItem<'a>>, DecodeError> {
        match self.phase {
            Phase::Data { remaining: 0, trailer: true } => {
                let decoded = finish(input, md5hex(input))?;
                if let Decoded::Item { .. } = decoded {
                    self.phase = Phase::Data { remaining: 0, trailer: false };
                }
                Ok(decoded.map(ClientItem::Trailer))
            }
            Phase::Data { remaining: 0, trailer: false } => {
                self.phase = Phase::Session;
                Ok(Decoded::Item { item: ClientItem::DataEnd, consumed: 0 })
            }
            Phase::Data { mut remaining, trailer } => Ok(match take_data(input, &mut remaining) {
                Some((data, consumed)) => {
                    self.phase = Phase::Data { remaining, trailer };
                    Decoded::Item { item: ClientItem::Data(data), consumed }
                }
                None => Decoded::NeedMore,
            }),
            Phase::Done => Ok(Decoded::NeedMore),
            Phase::Handshake => match input.first() {
                None => Ok(Decoded::NeedMore),
                Some(0) => {
                    let decoded = finish(input, legacy_request(input, self.limits))?;
                    if let Decoded::Item { .. } = decoded {
                        self.phase = Phase::Done;
                    }
                    Ok(decoded)
                }
                Some(_) => {
                    let decoded = finish(input, hello(input))?;
                    if let Decoded::Item { .. } = decoded {
                        self.phase = Phase::Session;
                    }
                    Ok(decoded)
                }
            },
            Phase::Session => {
                let decoded = finish(input, request(input, self.limits, self.trailer))?;
                Ok(match decoded {
                    Decoded::Item { item: (item, data), consumed } => {
                        if let Some((size, trailer)) = data {
                            self.phase = Phase::Data { remaining: size, trailer };
                        }
                        Decoded::Item { item, consumed }
                    }
                    Decoded::NeedMore => Decoded::NeedMore,
                })
            }
        }
    }

    /// Checks the end of the stream, given the bytes still unused.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when EOF falls inside a message (`mini-redis`'s "connection
    /// reset by peer": a partial message is never taken for a whole one).
    pub fn finish(&self, unused: &[u8]) -> Result<(), DecodeError> {
        if unused.is_empty() && self.at_boundary() {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

fn hello(i: &[u8]) -> PResult<'_, ClientItem<'_>> {
    let (i, _) = tag::<_, _, DecodeError>(&MAGIC[..])(i).map_err(|e| match e {
        nom::Err::Incomplete(n) => nom::Err::Incomplete(n),
        _ => nom::Err::Failure(DecodeError::BadMagic),
    })?;
    let (i, min_version) = be_u16(i)?;
    let (i, max_version) = be_u16(i)?;
    // `[HELLO-3]`: version 0 does not exist; an empty range is nonsense.
    if min_version == 0 || min_version > max_version {
        return fail(DecodeError::BadVersionRange { min: min_version, max: max_version });
    }
    let (i, token_len) = be_u16(i)?;
    if usize::from(token_len) > TOKEN_LEN_MAX {
        return fail(DecodeError::TokenTooLong(token_len));
    }
    let (i, token) = take(token_len)(i)?;
    if let Some(&b) = token.iter().find(|b| !(0x21..=0x7E).contains(*b)) {
        return fail(DecodeError::BadTokenByte(b));
    }
    // Visible ASCII is UTF-8.
    let token = (!token.is_empty()).then(|| String::from_utf8_lossy(token).into_owned());
    Ok((i, ClientItem::Hello(ClientHello { min_version, max_version, token })))
}

fn legacy_request(i: &[u8], limits: ReadLimits) -> PResult<'_, ClientItem<'_>> {
    let (i, len) = be_u32(i)?;
    // `[LEG-4]`: the name is not read at all when it is longer than the server's limit.
    if len > limits.max_name_len {
        return fail(DecodeError::LegacyNameTooLong { len, max: limits.max_name_len });
    }
    let (i, raw) = take(len)(i)?;
    let item = match Name::new(raw, limits.max_name_len) {
        Ok(name) => ClientItem::LegacyGet(name),
        Err(error) => ClientItem::Rejected { kind: RequestKind::LegacyGet, error },
    };
    Ok((i, item))
}

/// A request head, and for a PUT the number of data bytes that follow it and whether a trailer
/// follows them. `trailer`: the server announced `TRAILER` (§ 6.5).
fn request(i: &[u8], limits: ReadLimits, trailer: bool) -> PResult<'_, (ClientItem<'_>, Option<(u64, bool)>)> {
    let name_or_reject = |raw: &[u8], kind, make: &dyn Fn(Name) -> Request| match Name::new(raw, limits.max_name_len) {
        Ok(name) => ClientItem::Request(make(name)),
        Err(error) => ClientItem::Rejected { kind, error },
    };
    let (i, op) = be_u8(i)?;
    let simple = |r: Request| Ok((i, (ClientItem::Request(r), None)));
    match op {
        opcode::LIST => simple(Request::List),
        opcode::STATUS => simple(Request::Status),
        opcode::HELP => simple(Request::Help),
        opcode::BYE => simple(Request::Bye),
        opcode::SHUTDOWN => simple(Request::Shutdown),
        opcode::STAT => {
            let (i, raw) = raw_name(i)?;
            Ok((i, (name_or_reject(raw, RequestKind::Stat, &Request::Stat), None)))
        }
        opcode::DELETE => {
            let (i, raw) = raw_name(i)?;
            Ok((i, (name_or_reject(raw, RequestKind::Delete, &Request::Delete), None)))
        }
        opcode::GET => {
            let (i, raw) = raw_name(i)?;
            let (i, offset) = be_u64(i)?;
            Ok((i, (name_or_reject(raw, RequestKind::Get, &|name| Request::Get { name, offset }), None)))
        }
        opcode::FETCH if trailer => {
            let (i, raw) = raw_name(i)?;
            let (i, offset) = be_u64(i)?;
            Ok((i, (name_or_reject(raw, RequestKind::Fetch, &|name| Request::Fetch { name, offset }), None)))
        }
        opcode::PUT => {
            // The order of checks is the spec's (spec/README.md): mode, name length, size, digest,
            // and only then the name's content, which is recoverable.
            let (i, wire_mode) = be_u8(i)?;
            // `[PUT-7]`: the trailing form's modes (§ 6.5) only where the server announced it.
            let Some((mode, trailing)) = PutHead::parse_mode(wire_mode, trailer) else {
                return fail(DecodeError::BadMode(wire_mode));
            };
            let (i, raw) = raw_name(i)?;
            let (i, size) = be_u64(i)?;
            // `[PUT-4]`: a file above the limit is refused before a byte of it is read.
            if size > limits.max_file_size {
                return fail(DecodeError::FileTooLarge { size, max: limits.max_file_size });
            }
            let (i, md5) = if trailing {
                (i, None)
            } else {
                let (i, md5) = md5hex(i)?;
                (i, Some(md5))
            };
            let item = name_or_reject(raw, RequestKind::Put, &|name| Request::Put(PutHead { mode, name, size, md5 }));
            Ok((i, (item, Some((size, trailing)))))
        }
        // `[REQ-2]`: an unknown opcode's length cannot be known.
        other => fail(DecodeError::UnknownOpcode(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_of_a_put_is_need_more() {
        let mut wire = Vec::new();
        ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut wire);
        let split = wire.len();
        let head = PutHead::leading(
            crate::message::PutMode::Overwrite,
            FrameHead { name: Name::parse("a").unwrap(), size: 2, md5: crate::Digest::of(b"hi") },
        );
        Request::Put(head).encode(&mut wire);
        for end in 1..split {
            let mut d = RequestDecoder::new(ReadLimits::default());
            assert_eq!(d.decode(&wire[..end]), Ok(Decoded::NeedMore), "prefix {end}");
        }
        let mut d = RequestDecoder::in_session(ReadLimits::default());
        for end in 0..wire.len() - split {
            assert_eq!(d.clone().decode(&wire[split..split + end]), Ok(Decoded::NeedMore), "prefix {end}");
        }
        assert!(matches!(d.decode(&wire[split..]), Ok(Decoded::Item { item: ClientItem::Request(_), .. })));
    }
}
