//! File names (PROTOCOL.md § 10): the one rule every peer applies, to what it receives and to what it
//! is about to send.

use std::fmt;

use crate::limits::NAME_LEN_CEILING;

/// The prefix reserved for servers' own files, temporary uploads among them (`[NAME-6]`).
pub const RESERVED_PREFIX: &str = ".ferry";

/// A valid file name: a plain name in a flat namespace, which no reading of it can turn into a
/// path outside the server's root.
///
/// The only way to get one is [`Name::new`] (or `parse`), so holding a `Name` proves the checks ran.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why a name is refused (`BAD_NAME`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// `[NAME-2]`: names have at least one byte.
    #[error("name is empty")]
    Empty,
    /// `[NAME-2]`: longer than the limit in force.
    #[error("name is {len} bytes, longer than the limit of {max}")]
    TooLong { len: usize, max: u32 },
    /// `[NAME-3]`.
    #[error("name is not valid UTF-8")]
    NotUtf8,
    /// `[NAME-4]`: separators and control characters.
    #[error("name contains the forbidden character {0:?}")]
    ForbiddenChar(char),
    /// `[NAME-5]`.
    #[error("name {0:?} is a directory reference")]
    DotName(&'static str),
    /// `[NAME-6]`.
    #[error("names beginning with {RESERVED_PREFIX:?} are reserved for the server")]
    Reserved,
}

fn forbidden(c: char) -> bool {
    // `[NAME-4]`: path separators of every platform, NUL, C0 controls, DEL and C1 controls.
    matches!(c, '/' | '\\') || c.is_control()
}

impl Name {
    /// Checks `bytes` against § 10.1 with `max_len` as the length bound.
    ///
    /// # Errors
    /// The first rule the name breaks, in the order of § 10.1.
    pub fn new(bytes: &[u8], max_len: u32) -> Result<Self, NameError> {
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > max_len as usize {
            return Err(NameError::TooLong { len: bytes.len(), max: max_len });
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NameError::NotUtf8)?;
        if let Some(c) = s.chars().find(|&c| forbidden(c)) {
            return Err(NameError::ForbiddenChar(c));
        }
        match s {
            "." => return Err(NameError::DotName(".")),
            ".." => return Err(NameError::DotName("..")),
            _ => {}
        }
        if s.starts_with(RESERVED_PREFIX) {
            return Err(NameError::Reserved);
        }
        Ok(Self(s.to_owned()))
    }

    /// [`Name::new`] with the protocol ceiling as the bound: what a client accepts from any server.
    ///
    /// # Errors
    /// As [`Name::new`].
    pub fn parse(s: &str) -> Result<Self, NameError> {
        Self::new(s.as_bytes(), NAME_LEN_CEILING)
    }

    /// The name as text. Safe to use as a single path component; not safe to print unescaped
    /// (see [`Name::escaped`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with every non-printing character escaped, for terminals and logs (`[NAME-12]`).
    /// Valid names contain no control characters, but other invisible characters (bidi
    /// overrides, zero-width spaces) can still mislead a reader.
    pub fn escaped(&self) -> String {
        escape_for_display(&self.0)
    }
}

/// Escapes anything that is not a visible character or a plain space, so untrusted text cannot
/// move the cursor, recolour the terminal, break a line, hide itself or reorder what is shown:
/// controls, the soft hyphen, the Arabic letter mark, zero-width characters and bidi marks, the
/// line and paragraph separators, bidi embeddings, overrides and isolates, the word joiner and
/// invisible operators, and the byte order mark.
pub fn escape_for_display(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = c.is_control()
            || matches!(
                c,
                '\u{AD}'
                    | '\u{61C}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{2028}'..='\u{202E}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{FEFF}'
            );
        if invisible {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Name {
    /// Displays the escaped form, so that a name can never smuggle terminal control sequences.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.escaped())
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_odd_but_valid_names() {
        for ok in ["a", "...", ".hidden", "名前.txt", "with space", "-rf", "EOF"] {
            assert!(Name::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn refuses_every_forbidden_form() {
        let cases: &[&[u8]] = &[
            b"",
            b".",
            b"..",
            b"a/b",
            b"/etc/passwd",
            b"..\\x",
            b"a\0b",
            b"\n",
            b"\x1f",
            b"\x7f",
            "a\u{85}".as_bytes(),
            b"\xff",
            b"\xc0\xaf",
            b"\x80",
            b".ferry",
            b".ferry-tmp-1",
        ];
        for bad in cases {
            assert!(Name::new(bad, 255).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn length_bound_is_inclusive() {
        assert!(Name::new(&[b'a'; 16], 16).is_ok());
        assert_eq!(Name::new(&[b'a'; 17], 16), Err(NameError::TooLong { len: 17, max: 16 }));
    }

    #[test]
    fn display_escapes_invisible_characters() {
        let n = Name::parse("a\u{202E}b").unwrap();
        assert_eq!(n.to_string(), "a\\u{202e}b");
    }

    /// `{:?}` (what `tracing` fields with `?name` show) quotes the name and escapes what Rust's
    /// `Debug` for strings escapes, invisible format characters included; `as_ref` is the name.
    #[test]
    fn debug_is_quoted_and_escaped_and_as_ref_is_the_name() {
        let n = Name::parse("a\u{202E}b\u{200B}.txt").unwrap();
        assert_eq!(format!("{n:?}"), "\"a\\u{202e}b\\u{200b}.txt\"");
        let s: &str = n.as_ref();
        assert_eq!(s, "a\u{202E}b\u{200B}.txt");
    }

    /// What `[NAME-12]` escapes, written out independently of [`escape_for_display`]: every
    /// range, so that dropping (or narrowing) any one of them fails a test.
    const INVISIBLE: &[(char, char, &str)] = &[
        ('\u{0}', '\u{1F}', "C0 controls"),
        ('\u{7F}', '\u{7F}', "DEL"),
        ('\u{80}', '\u{9F}', "C1 controls"),
        ('\u{AD}', '\u{AD}', "soft hyphen"),
        ('\u{61C}', '\u{61C}', "Arabic letter mark"),
        ('\u{200B}', '\u{200B}', "zero-width space"),
        ('\u{200C}', '\u{200D}', "zero-width non-joiner and joiner"),
        ('\u{200E}', '\u{200F}', "left-to-right and right-to-left marks"),
        ('\u{2028}', '\u{2029}', "line and paragraph separators"),
        ('\u{202A}', '\u{202B}', "bidi embeddings (LRE, RLE)"),
        ('\u{202C}', '\u{202C}', "pop directional formatting"),
        ('\u{202D}', '\u{202E}', "bidi overrides (LRO, RLO)"),
        ('\u{2060}', '\u{2060}', "word joiner"),
        ('\u{2061}', '\u{2064}', "invisible operators"),
        ('\u{2066}', '\u{2068}', "bidi isolates (LRI, RLI, FSI)"),
        ('\u{2069}', '\u{2069}', "pop directional isolate"),
        ('\u{FEFF}', '\u{FEFF}', "byte order mark (zero-width no-break space)"),
    ];

    /// Each character of each range is escaped, as `\u{...}` in lower-case hex, between visible
    /// neighbours that are left as they are; in a name, too.
    #[test]
    fn every_invisible_range_is_escaped() {
        for &(first, last, what) in INVISIBLE {
            for c in first..=last {
                let shown = escape_for_display(&format!("a{c}b"));
                assert_eq!(shown, format!("a\\u{{{:x}}}b", c as u32), "{what}: U+{:04X}", c as u32);
                if let Ok(name) = Name::parse(&format!("a{c}b")) {
                    assert_eq!(name.to_string(), shown, "{what}: U+{:04X} in a name", c as u32);
                } else {
                    assert!(c.is_control(), "{what}: U+{:04X} is a valid name character", c as u32);
                }
            }
        }
    }

    /// The characters just outside each range are visible and shown as they are (a range that
    /// grew would escape them), and so is everything else: every Unicode scalar value is
    /// escaped exactly when the table says so.
    #[test]
    fn nothing_else_is_escaped() {
        for c in [
            '\u{20}', '~', '\u{A0}', '\u{AC}', '\u{AE}', '\u{61B}', '\u{61D}', '\u{200A}', '\u{2010}', '\u{2027}',
            '\u{202F}', '\u{205F}', '\u{2065}', '\u{206A}', '\u{FEFE}', '\u{FF00}', '名',
        ] {
            assert!(!INVISIBLE.iter().any(|&(a, b, _)| (a..=b).contains(&c)));
        }
        let mut escaped = 0;
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let expected = INVISIBLE.iter().any(|&(a, b, _)| (a..=b).contains(&c));
            let s = c.to_string();
            assert_eq!(escape_for_display(&s) != s, expected, "U+{:04X}", c as u32);
            escaped += usize::from(expected);
        }
        assert_eq!(escaped, 32 + 1 + 32 + 1 + 1 + 5 + 2 + 5 + 5 + 4 + 1);
    }
}
