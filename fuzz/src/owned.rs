//! Owned copies of decoded items, with adjacent data merged, so that decodings of the same bytes
//! delivered in different reads can be compared (`[ENC-5]`); and the stream drivers of the
//! `c2s_stream` and `s2c_stream` targets, which check every item as it is decoded.

use ferry_proto::codec::{ClientItem, DecodeError, Decoded, ReplyDecoder, RequestDecoder, ServerItem};
use ferry_proto::limits::{
    ReadLimits, ERROR_MESSAGE_MAX, HELP_TEXT_MAX, NAME_LEN_CEILING, PEER_LEN_MAX, TOKEN_LEN_MAX,
};
use ferry_proto::message::{ErrorCode, Request};

use crate::alloc::measure;

/// A client-to-server item that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C {
    Item(ClientItem<'static>),
    Data(Vec<u8>),
}

/// A server-to-client item that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S {
    Item(ServerItem<'static>),
    Data(Vec<u8>),
}

/// The item without its borrowed data (`None` for data).
pub fn client_static(item: &ClientItem<'_>) -> Option<ClientItem<'static>> {
    Some(match item {
        ClientItem::Hello(h) => ClientItem::Hello(h.clone()),
        ClientItem::LegacyGet(n) => ClientItem::LegacyGet(n.clone()),
        ClientItem::Request(r) => ClientItem::Request(r.clone()),
        ClientItem::Rejected { kind, error } => ClientItem::Rejected { kind: *kind, error: error.clone() },
        ClientItem::Trailer(md5) => ClientItem::Trailer(*md5),
        ClientItem::DataEnd => ClientItem::DataEnd,
        ClientItem::Data(_) => return None,
    })
}

/// The item without its borrowed data (`None` for data).
pub fn server_static(item: &ServerItem<'_>) -> Option<ServerItem<'static>> {
    Some(match item {
        ServerItem::Hello(h) => ServerItem::Hello(*h),
        ServerItem::Error(e) => ServerItem::Error(e.clone()),
        ServerItem::ListStart { count } => ServerItem::ListStart { count: *count },
        ServerItem::Entry(e) => ServerItem::Entry(e.clone()),
        ServerItem::Stat(e) => ServerItem::Stat(e.clone()),
        ServerItem::GetHead { offset, frame } => ServerItem::GetHead { offset: *offset, frame: frame.clone() },
        ServerItem::PutOk { replaced } => ServerItem::PutOk { replaced: *replaced },
        ServerItem::DeleteOk => ServerItem::DeleteOk,
        ServerItem::StatusStart { count } => ServerItem::StatusStart { count: *count },
        ServerItem::Connection(c) => ServerItem::Connection(c.clone()),
        ServerItem::Help(t) => ServerItem::Help(t.clone()),
        ServerItem::ByeOk => ServerItem::ByeOk,
        ServerItem::ShutdownOk => ServerItem::ShutdownOk,
        ServerItem::LegacyOk(f) => ServerItem::LegacyOk(f.clone()),
        ServerItem::LegacyErrorStart => ServerItem::LegacyErrorStart,
        ServerItem::FetchTrailing { name, size } => ServerItem::FetchTrailing { name: name.clone(), size: *size },
        ServerItem::Trailer(md5) => ServerItem::Trailer(*md5),
        ServerItem::DataEnd => ServerItem::DataEnd,
        ServerItem::Data(_) => return None,
    })
}

/// Appends a client item, merging data with the data before it.
pub fn push_client(items: &mut Vec<C>, item: &ClientItem<'_>) {
    match (item, items.last_mut()) {
        (ClientItem::Data(d), Some(C::Data(prev))) => prev.extend_from_slice(d),
        (ClientItem::Data(d), _) => items.push(C::Data(d.to_vec())),
        (other, _) => items.push(C::Item(client_static(other).expect("not data"))),
    }
}

/// Appends a server item, merging data with the data before it.
pub fn push_server(items: &mut Vec<S>, item: &ServerItem<'_>) {
    match (item, items.last_mut()) {
        (ServerItem::Data(d), Some(S::Data(prev))) => prev.extend_from_slice(d),
        (ServerItem::Data(d), _) => items.push(S::Data(d.to_vec())),
        (other, _) => items.push(S::Item(server_static(other).expect("not data"))),
    }
}

/// How a decoding ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Clean,
    Truncated,
    Error(ErrorCode),
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Handshake,
    Session,
    Legacy,
}

/// The largest allocation a client-to-server item may cause: its name or token, never more than
/// the limits in force (`[ENC-6]`).
pub fn c2s_bound(item: &ClientItem<'_>, limits: ReadLimits) -> usize {
    match item {
        ClientItem::Hello(_) => TOKEN_LEN_MAX,
        ClientItem::LegacyGet(_) | ClientItem::Request(_) => limits.clamped().max_name_len as usize,
        // A refused name is dropped without being copied; data is borrowed.
        ClientItem::Rejected { .. } | ClientItem::Data(_) | ClientItem::Trailer(_) | ClientItem::DataEnd => 0,
    }
}

/// The largest allocation a reply decoder may make before a message is complete or refused: a
/// name is checked, and copied, as soon as its bytes are there (`[NAME-11]`), before the fields
/// after it; its length was checked against the ceiling first (`[ENC-6]`). A request decoder
/// copies nothing until the whole head is there.
pub const S2C_INCOMPLETE: usize = NAME_LEN_CEILING as usize;

/// The largest allocation a server-to-client item may cause. Texts that are not UTF-8 are
/// copied with U+FFFD replacements, up to 3 bytes per byte, into a string that grows by
/// doubling: 4 times the text's ceiling.
pub fn s2c_bound(item: &ServerItem<'_>) -> usize {
    match item {
        ServerItem::Error(_) => 4 * ERROR_MESSAGE_MAX,
        ServerItem::Help(_) => 4 * HELP_TEXT_MAX as usize,
        ServerItem::Entry(_)
        | ServerItem::Stat(_)
        | ServerItem::GetHead { .. }
        | ServerItem::FetchTrailing { .. }
        | ServerItem::LegacyOk(_) => NAME_LEN_CEILING as usize,
        ServerItem::Connection(_) => PEER_LEN_MAX,
        _ => 0,
    }
}

/// Lowercases the digest when the item carries one: its 32 digits are the last bytes of the
/// item's wire form, and uppercase digits are accepted but sent lowercase (`[FRAME-3]`,
/// `[FRAME-4]`). The one place where the encoding is not canonical, besides invalid UTF-8 in texts.
/// A PUT head in the trailing form carries none (its name and size end it); its trailer is an
/// item of its own (§ 6.5).
fn lowercase_digest(raw: &mut [u8], has_digest: bool) {
    if has_digest {
        let n = raw.len();
        raw[n - 32..].make_ascii_lowercase();
    }
}

/// Checks a client-to-server item against the bytes it came from: it re-encodes to exactly those
/// bytes (digest case aside), and the re-encoding decodes, from the same decoder state, to the
/// same item.
pub fn check_c2s_item(before: &RequestDecoder, item: &ClientItem<'_>, raw: &[u8]) {
    if matches!(item, ClientItem::Rejected { .. }) {
        // No wire form: the refused name is gone. The framing was consumed whole.
        return;
    }
    let mut enc = Vec::new();
    item.encode(&mut enc);
    let mut want = raw.to_vec();
    let has_digest = match item {
        ClientItem::Request(Request::Put(head)) => head.md5.is_some(),
        ClientItem::Trailer(_) => true,
        _ => false,
    };
    lowercase_digest(&mut want, has_digest);
    assert_eq!(enc, want, "{item:?} does not re-encode to its bytes");
    let mut again = before.clone();
    match again.decode(&enc) {
        Ok(Decoded::Item { item: back, consumed }) => {
            assert_eq!(consumed, enc.len(), "{item:?}: re-decoding used {consumed} of {} bytes", enc.len());
            assert_eq!(&back, item, "re-decoding differs");
        }
        other => panic!("{item:?} re-encoded as {enc:02x?}, which decodes to {other:?}"),
    }
}

/// As [`check_c2s_item`], for the other direction. Texts with invalid UTF-8 were displayed with
/// replacements (`[ENC-3]`) and so cannot re-encode to their bytes; they must still re-decode to
/// the same item when the replaced text fits its ceiling.
pub fn check_s2c_item(before: &ReplyDecoder, item: &ServerItem<'_>, raw: &[u8]) {
    let text_raw = match item {
        // tag, code, u16 length | tag, u32 length: the text follows.
        ServerItem::Error(_) => Some(&raw[5..]),
        ServerItem::Help(_) => Some(&raw[5..]),
        _ => None,
    };
    let canonical = text_raw.is_none_or(|t| std::str::from_utf8(t).is_ok());
    let mut enc = Vec::new();
    item.encode(&mut enc);
    if canonical {
        let has_digest = match item {
            ServerItem::Entry(e) | ServerItem::Stat(e) => e.md5.is_some(),
            ServerItem::GetHead { .. } | ServerItem::LegacyOk(_) | ServerItem::Trailer(_) => true,
            _ => false,
        };
        let mut want = raw.to_vec();
        lowercase_digest(&mut want, has_digest);
        assert_eq!(enc, want, "{item:?} does not re-encode to its bytes");
    }
    let fits = match item {
        ServerItem::Error(e) => e.message.len() <= ERROR_MESSAGE_MAX,
        ServerItem::Help(t) => t.len() <= HELP_TEXT_MAX as usize,
        _ => true,
    };
    if !fits {
        return;
    }
    let mut again = before.clone();
    match again.decode(&enc) {
        Ok(Decoded::Item { item: back, consumed }) => {
            assert_eq!(consumed, enc.len(), "{item:?}: re-decoding used {consumed} of {} bytes", enc.len());
            assert_eq!(&back, item, "re-decoding differs");
        }
        other => panic!("{item:?} re-encoded as {enc:02x?}, which decodes to {other:?}"),
    }
}

/// Runs one decoder over `bytes` delivered in reads ending at `boundaries`, the way a connection
/// reads: a receive buffer refilled at each boundary. Each call to `step` decodes one item from
/// the buffer, runs the checks, and returns the bytes used, or `None` when more are needed.
/// Returns the bytes never used, or the error.
fn feed(
    bytes: &[u8],
    boundaries: &[usize],
    mut step: impl FnMut(&[u8]) -> Result<Option<usize>, DecodeError>,
) -> Result<usize, DecodeError> {
    let mut consumed = 0;
    for &arrived in boundaries {
        // An item that needs no bytes (a data end) may come once between two that do; more in a
        // row means the decoder is spinning.
        let mut empty_in_a_row = 0;
        loop {
            match step(&bytes[consumed..arrived])? {
                None => break,
                Some(0) => {
                    empty_in_a_row += 1;
                    assert!(empty_in_a_row <= 1, "the decoder yields items without consuming input");
                }
                Some(n) => {
                    empty_in_a_row = 0;
                    consumed += n;
                }
            }
        }
    }
    Ok(consumed)
}

/// Decodes the client-to-server stream with every check; see [`feed`]. `trailer`: as read by a
/// server that announces `TRAILER` (§ 6.5).
pub fn decode_c2s(
    start: Start,
    limits: ReadLimits,
    trailer: bool,
    bytes: &[u8],
    boundaries: &[usize],
) -> (Vec<C>, End) {
    let mut d = match start {
        Start::Session => RequestDecoder::in_session(limits),
        _ => RequestDecoder::new(limits),
    }
    .with_trailer(trailer);
    let mut items = Vec::new();
    let result = feed(bytes, boundaries, |buf| {
        let before = d.clone();
        let (r, largest) = measure(|| d.decode(buf));
        match r {
            Ok(Decoded::NeedMore) => {
                assert_eq!(largest, 0, "NeedMore allocated {largest} bytes");
                Ok(None)
            }
            Ok(Decoded::Item { item, consumed }) => {
                assert!(consumed <= buf.len());
                let bound = c2s_bound(&item, limits);
                assert!(largest <= bound, "{item:?} allocated {largest} bytes, bound {bound}");
                check_c2s_item(&before, &item, &buf[..consumed]);
                push_client(&mut items, &item);
                Ok(Some(consumed))
            }
            Err(e) => {
                assert_eq!(largest, 0, "{e:?} allocated {largest} bytes");
                assert!(
                    [ErrorCode::MALFORMED, ErrorCode::TOO_LARGE].contains(&e.code()),
                    "a request decoder reports {e:?}"
                );
                Err(e)
            }
        }
    });
    let end = match result {
        Ok(used) if d.finish(&bytes[used..]).is_ok() => End::Clean,
        Ok(_) => End::Truncated,
        Err(e) => End::Error(e.code()),
    };
    (items, end)
}

/// Decodes the server-to-client stream with every check; see [`feed`].
pub fn decode_s2c(start: Start, bytes: &[u8], boundaries: &[usize]) -> (Vec<S>, End) {
    let mut d = match start {
        Start::Handshake => ReplyDecoder::new(),
        Start::Session => ReplyDecoder::in_session(),
        Start::Legacy => ReplyDecoder::legacy(),
    };
    let mut items = Vec::new();
    let result = feed(bytes, boundaries, |buf| {
        let before = d.clone();
        let (r, largest) = measure(|| d.decode(buf));
        match r {
            Ok(Decoded::NeedMore) => {
                assert!(largest <= S2C_INCOMPLETE, "NeedMore allocated {largest} bytes");
                Ok(None)
            }
            Ok(Decoded::Item { item, consumed }) => {
                assert!(consumed <= buf.len());
                let bound = s2c_bound(&item);
                assert!(largest <= bound, "{item:?} allocated {largest} bytes, bound {bound}");
                check_s2c_item(&before, &item, &buf[..consumed]);
                push_server(&mut items, &item);
                Ok(Some(consumed))
            }
            Err(e) => {
                assert!(largest <= S2C_INCOMPLETE, "{e:?} allocated {largest} bytes");
                assert!(
                    [ErrorCode::MALFORMED, ErrorCode::TOO_LARGE, ErrorCode::BAD_NAME].contains(&e.code()),
                    "a reply decoder reports {e:?}"
                );
                Err(e)
            }
        }
    });
    let end = match result {
        Ok(used) if d.finish(&bytes[used..]).is_ok() => End::Clean,
        Ok(_) => End::Truncated,
        Err(e) => End::Error(e.code()),
    };
    (items, end)
}
