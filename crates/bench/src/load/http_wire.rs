//! The HTTP/1.1 bytes a load sends and the response heads it reads: a GET, and a `200` with a
//! `Content-Length` (RFC 9112). Nothing else is needed to measure a static file server, so no
//! HTTP crate is.

use super::wire::{Failure, Head};

/// A response head longer than this is refused (nginx's are about 250 bytes).
pub const HEAD_MAX: usize = 16 * 1024;

/// A GET of `/name`; `close` asks the server to close after replying.
pub fn get(name: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET /{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n{connection}\r\n").into_bytes()
}

/// A response head. `scanned` carries how much of `buf` an earlier call already searched for
/// the head's end, so that a head arriving in pieces is not searched from the start each time;
/// it is reset to 0 once a head is returned.
///
/// # Errors
/// A status other than 200, no `Content-Length`, chunked framing, or a head that is too long or
/// not HTTP/1.x.
pub fn response_head(buf: &[u8], scanned: &mut usize) -> Result<Option<Head>, Failure> {
    let from = scanned.saturating_sub(3);
    let Some(end) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| from + p + 4) else {
        if buf.len() > HEAD_MAX {
            return Err(Failure::Malformed(format!("no end of head in {} bytes", buf.len())));
        }
        *scanned = buf.len();
        return Ok(None);
    };
    *scanned = 0;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Failure::Malformed("a head that is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let (version, rest) = status.split_once(' ').unwrap_or((status, ""));
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Failure::Malformed(format!("status line {status:?}")));
    }
    if !rest.starts_with("200 ") && rest != "200" {
        return Err(Failure::Refused(status.to_owned()));
    }
    let mut length = None;
    let mut closes = version == "HTTP/1.0";
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((field, value)) = line.split_once(':') else {
            return Err(Failure::Malformed(format!("header line {line:?}")));
        };
        let value = value.trim();
        if field.eq_ignore_ascii_case("content-length") {
            let n = value.parse().map_err(|_| Failure::Malformed(format!("Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Malformed("two different Content-Lengths".into()));
            }
            length = Some(n);
        } else if field.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::Malformed(format!("Transfer-Encoding {value:?} (only Content-Length is read)")));
        } else if field.eq_ignore_ascii_case("connection") {
            closes = value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let body = length.ok_or_else(|| Failure::Malformed("no Content-Length".into()))?;
    Ok(Some(Head { len: end, body, announced: None, closes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 01 Dec 2025 00:00:00 GMT\r\n\
        Content-Type: application/octet-stream\r\nContent-Length: 4096\r\n\
        Last-Modified: Mon, 01 Dec 2025 00:00:00 GMT\r\nConnection: keep-alive\r\n\
        ETag: \"692cdb00-1000\"\r\nAccept-Ranges: bytes\r\n\r\n";

    #[test]
    fn every_prefix_is_partial_and_the_whole_head_parses() {
        let mut scanned = 0;
        for n in 0..NGINX.len() {
            assert!(matches!(response_head(&NGINX[..n], &mut scanned), Ok(None)), "prefix of {n}");
        }
        let mut with_body = NGINX.to_vec();
        with_body.extend_from_slice(&[7; 100]);
        let head = response_head(&with_body, &mut scanned).unwrap().unwrap();
        assert_eq!(head, Head { len: NGINX.len(), body: 4096, announced: None, closes: false });
        assert_eq!(scanned, 0);
    }

    #[test]
    fn close_status_and_framing() {
        let mut s = 0;
        let close = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nConnection: close\r\n\r\nabc";
        assert!(response_head(close, &mut s).unwrap().unwrap().closes);
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(response_head(missing, &mut s), Err(Failure::Refused(_))));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(response_head(chunked, &mut s), Err(Failure::Malformed(_))));
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(matches!(response_head(no_length, &mut s), Err(Failure::Malformed(_))));
        let endless = vec![b'x'; HEAD_MAX + 1];
        assert!(matches!(response_head(&endless, &mut 0), Err(Failure::Malformed(_))));
    }

    #[test]
    fn requests() {
        assert_eq!(get("a.bin", false), b"GET /a.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert!(String::from_utf8(get("a.bin", true)).unwrap().ends_with("Connection: close\r\n\r\n"));
    }
}
