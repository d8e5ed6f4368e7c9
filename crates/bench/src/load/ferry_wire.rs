//! The Ferry bytes a load sends and the reply heads it reads (PROTOCOL.md §§ 4, 7.3, 7.8, 9, 15).
//!
//! Requests are encoded once, by ferry-proto, before the load starts. Replies are read by hand:
//! only what a GET load meets, checked against the file that was asked for, without allocating
//! (ferry-proto's decoder builds a `Name` per reply; the HTTP side has no such cost either).
//! Each parser checks, then parses: `Ok(None)` means the whole head has not arrived yet.

use ferry_proto::limits::{ERROR_MESSAGE_MAX, NAME_LEN_CEILING};
use ferry_proto::message::tag;
use ferry_proto::{ClientHello, ClientItem, Digest, ErrorCode, Name, Request};

use super::files::Expected;
use super::wire::{Failure, Head};

/// The version 1 client hello, without a token.
pub fn hello() -> Vec<u8> {
    let mut out = Vec::new();
    ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut out);
    out
}

/// A GET of the whole file; followed by a BYE when `then_bye` (a connection per request).
pub fn get(name: &str, then_bye: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let name = Name::parse(name).expect("file sets hold valid names");
    Request::Get { name, offset: 0 }.encode(&mut out);
    if then_bye {
        Request::Bye.encode(&mut out);
    }
    out
}

/// A legacy-profile request (§ 15.1): the name alone.
pub fn legacy_get(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ClientItem::LegacyGet(Name::parse(name).expect("file sets hold valid names")).encode(&mut out);
    out
}

/// The server hello's length: tag, version, role, capabilities, four u32 limits and a u64 (§ 4.3).
const SERVER_HELLO_LEN: usize = 1 + 2 + 1 + 4 + 4 + 8 + 4 + 4 + 4 + 4;

/// The server hello; returns its length. An error reply instead is a refusal (`BUSY`, say).
///
/// # Errors
/// An error reply, another tag, or a version other than 1.
pub fn server_hello(buf: &[u8]) -> Result<Option<usize>, Failure> {
    match buf.first() {
        None => Ok(None),
        Some(&tag::HELLO) if buf.len() < SERVER_HELLO_LEN => Ok(None),
        // `[HELLO-7]`: the version chosen lies in the range offered, 1..1.
        Some(&tag::HELLO) if u16::from_be_bytes([buf[1], buf[2]]) == 1 => Ok(Some(SERVER_HELLO_LEN)),
        Some(&tag::HELLO) => {
            Err(Failure::Malformed(format!("server chose version {}", u16::from_be_bytes([buf[1], buf[2]]))))
        }
        Some(&tag::ERROR) => error_reply(buf),
        Some(&t) => Err(Failure::Malformed(format!("tag 0x{t:02x} where the server hello belongs"))),
    }
}

/// A GET reply's head (§ 7.3) for `file`, asked for from offset 0.
///
/// # Errors
/// An error reply, or a head about another file or offset.
pub fn get_head(buf: &[u8], file: &Expected) -> Result<Option<Head>, Failure> {
    match buf.first() {
        None => Ok(None),
        Some(&tag::GET) => {
            if buf.len() < 9 {
                return Ok(None);
            }
            // `[GET-1]`: the offset echoed.
            if buf[1..9] != [0; 8] {
                return Err(Failure::Malformed("GET reply for another offset".into()));
            }
            frame_head(&buf[9..], file).map(|h| h.map(|h| Head { len: h.len + 9, ..h }))
        }
        Some(&tag::ERROR) => error_reply(buf),
        Some(&t) => Err(Failure::Malformed(format!("tag 0x{t:02x} where a GET reply belongs"))),
    }
}

/// A legacy reply's head (§ 15.1): `"OK"` and a frame. An `"ERROR"` is reported with what
/// has arrived of its message.
///
/// # Errors
/// `"ERROR"`, anything else that is not `"OK"`, or a frame about another file.
pub fn legacy_head(buf: &[u8], file: &Expected) -> Result<Option<Head>, Failure> {
    let (ok, error) = (&tag::LEGACY_OK[..], &tag::LEGACY_ERROR[..]);
    if buf.len() < ok.len() {
        return if ok.starts_with(buf) || error.starts_with(buf) { Ok(None) } else { Err(not_legacy()) };
    }
    if buf.starts_with(ok) {
        return frame_head(&buf[ok.len()..], file).map(|h| h.map(|h| Head { len: h.len + ok.len(), ..h }));
    }
    if buf.len() < error.len() {
        return if error.starts_with(buf) { Ok(None) } else { Err(not_legacy()) };
    }
    if buf.starts_with(error) {
        let message = &buf[error.len()..buf.len().min(error.len() + ERROR_MESSAGE_MAX)];
        return Err(Failure::Refused(format!("legacy ERROR: {}", String::from_utf8_lossy(message))));
    }
    Err(not_legacy())
}

fn not_legacy() -> Failure {
    Failure::Malformed("a legacy reply starts with neither OK nor ERROR".into())
}

/// The reply to BYE (§ 7.8); returns its length.
///
/// # Errors
/// An error reply or another tag.
pub fn bye(buf: &[u8]) -> Result<Option<usize>, Failure> {
    match buf.first() {
        None => Ok(None),
        Some(&tag::BYE) => Ok(Some(1)),
        Some(&tag::ERROR) => error_reply(buf),
        Some(&t) => Err(Failure::Malformed(format!("tag 0x{t:02x} where the BYE reply belongs"))),
    }
}

/// A file frame's head (§ 6.1): name, size, md5. `len` is the head's length; `body` the data
/// that follows.
fn frame_head(buf: &[u8], file: &Expected) -> Result<Option<Head>, Failure> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let name_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    // `[LIM-3]`: a length is checked before the bytes it announces are awaited.
    if name_len > NAME_LEN_CEILING as usize {
        return Err(Failure::Malformed(format!("name length {name_len} above the ceiling")));
    }
    let len = 4 + name_len + 8 + 32;
    if buf.len() < len {
        return Ok(None);
    }
    // `[GET-1]`: a reply about the file asked for.
    if &buf[4..4 + name_len] != file.name.as_bytes() {
        return Err(Failure::Malformed(format!("a reply for another file than {}", file.name)));
    }
    let at = 4 + name_len;
    let size = u64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let digest = Digest::from_hex(&buf[at + 8..at + 40])
        .ok_or_else(|| Failure::Malformed("a digest that is not 32 hex digits".into()))?;
    Ok(Some(Head { len, body: size, announced: Some(digest), closes: false }))
}

/// An error reply (§ 9.1), reported whole once it has arrived.
fn error_reply<T>(buf: &[u8]) -> Result<Option<T>, Failure> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let code = ErrorCode(u16::from_be_bytes([buf[1], buf[2]]));
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    // `[ERR-2]`: a message above the ceiling is not read.
    if len > ERROR_MESSAGE_MAX {
        return Err(Failure::Malformed(format!("error message of {len} bytes")));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let name = code.name().unwrap_or("unknown code");
    Err(Failure::Refused(format!("{name} (0x{:04x}): {}", code.0, String::from_utf8_lossy(&buf[5..5 + len]))))
}

#[cfg(test)]
mod tests {
    use ferry_proto::{ErrorReply, FrameHead, ServerHello, ServerItem};

    use super::*;

    fn expected(name: &str, data: &[u8]) -> Expected {
        Expected::new(name.into(), data)
    }

    fn frame(name: &str, data: &[u8]) -> FrameHead {
        FrameHead { name: Name::parse(name).unwrap(), size: data.len() as u64, md5: Digest::of(data) }
    }

    /// Every proper prefix of `bytes` is partial; the whole is complete, of length `len`.
    fn prefixes_then<T: std::fmt::Debug>(
        bytes: &[u8],
        parse: impl Fn(&[u8]) -> Result<Option<T>, Failure>,
        len: impl Fn(&T) -> usize,
    ) -> T {
        for n in 0..bytes.len() {
            assert!(matches!(parse(&bytes[..n]), Ok(None)), "prefix of {n} bytes");
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"next reply");
        let whole = parse(&longer).unwrap().unwrap();
        assert_eq!(len(&whole), bytes.len());
        whole
    }

    #[test]
    fn reads_what_ferry_proto_encodes() {
        let hello = ServerHello {
            version: 1,
            role: ferry_proto::Role::Read,
            capabilities: ferry_proto::Capabilities::ALL_V1,
            max_name_len: 255,
            max_file_size: 1 << 30,
            max_clients: 64,
            idle_timeout_ms: 1,
            head_timeout_ms: 1,
            progress_timeout_ms: 1,
        };
        let mut out = Vec::new();
        ServerItem::Hello(hello).encode(&mut out);
        prefixes_then(&out, server_hello, |n| *n);

        let data = b"hello, world";
        let file = expected("a.txt", data);
        out.clear();
        ServerItem::GetHead { offset: 0, frame: frame("a.txt", data) }.encode(&mut out);
        let head = prefixes_then(&out, |b| get_head(b, &file), |h| h.len);
        assert_eq!((head.body, head.announced), (data.len() as u64, Some(file.digest)));

        out.clear();
        ServerItem::LegacyOk(frame("a.txt", data)).encode(&mut out);
        let head = prefixes_then(&out, |b| legacy_head(b, &file), |h| h.len);
        assert_eq!((head.body, head.announced), (data.len() as u64, Some(file.digest)));

        out.clear();
        ServerItem::ByeOk.encode(&mut out);
        prefixes_then(&out, bye, |n| *n);
    }

    #[test]
    fn refusals_and_wrong_replies_fail() {
        let file = expected("a.txt", b"x");
        let mut out = Vec::new();
        ServerItem::Error(ErrorReply::new(ErrorCode::NOT_FOUND, "no a.txt")).encode(&mut out);
        for n in 0..out.len() {
            assert!(matches!(get_head(&out[..n], &file), Ok(None)));
        }
        let e = get_head(&out, &file).unwrap_err().to_string();
        assert!(e.contains("NOT_FOUND") && e.contains("no a.txt"), "{e}");

        out.clear();
        ServerItem::GetHead { offset: 0, frame: frame("b.txt", b"x") }.encode(&mut out);
        assert!(matches!(get_head(&out, &file), Err(Failure::Malformed(_))));
        out.clear();
        ServerItem::GetHead { offset: 1, frame: frame("a.txt", b"x") }.encode(&mut out);
        assert!(matches!(get_head(&out, &file), Err(Failure::Malformed(_))));
        assert!(matches!(legacy_head(b"ERROR gone", &file), Err(Failure::Refused(_))));
        assert!(matches!(legacy_head(b"ER", &file), Ok(None)));
        assert!(matches!(legacy_head(b"NO", &file), Err(Failure::Malformed(_))));
        assert!(matches!(bye(&[tag::GET]), Err(Failure::Malformed(_))));
    }
}
