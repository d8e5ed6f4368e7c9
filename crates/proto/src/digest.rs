//! MD5 digests as the file frame carries them: 32 ASCII hex digits (PROTOCOL.md § 6.3).

use std::fmt;

use md5::{Digest as _, Md5};

/// An MD5 digest. It detects accidental corruption only (§ 17.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 16]);

impl Digest {
    /// The digest of the empty file, `d41d8cd98f00b204e9800998ecf8427e`.
    pub const EMPTY: Digest =
        Digest([0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e]);

    /// Parses the wire form. `[FRAME-4]`: `0-9`, `a-f` and `A-F` are accepted, anything else is not.
    pub fn from_hex(hex_digits: &[u8]) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(hex_digits, &mut out).ok()?;
        Some(Self(out))
    }

    /// The wire form. `[FRAME-3]`: lowercase digits only.
    pub fn to_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Cannot fail: the output is exactly twice the input's length.
        let _ = hex::encode_to_slice(self.0, &mut out);
        out
    }

    /// The digest of `data` in one call.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // to_hex yields ASCII only.
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// An incremental MD5, fed as data streams past.
#[derive(Clone, Default)]
pub struct Hasher(Md5);

impl Hasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self(Md5::new())
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_constant_is_right() {
        assert_eq!(Digest::of(b""), Digest::EMPTY);
        assert_eq!(Digest::EMPTY.to_string(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn accepts_both_cases_and_nothing_else() {
        let lower = b"49f68a5c8493ec2c0bf489821c21fc3b";
        let upper = b"49F68A5C8493EC2C0BF489821C21FC3B";
        assert_eq!(Digest::from_hex(lower), Digest::from_hex(upper));
        assert_eq!(Digest::from_hex(lower), Some(Digest::of(b"hi")));
        assert_eq!(Digest::from_hex(b"g9f68a5c8493ec2c0bf489821c21fc3b"), None);
        assert_eq!(Digest::from_hex(b" 9f68a5c8493ec2c0bf489821c21fc3b"), None);
    }
}
