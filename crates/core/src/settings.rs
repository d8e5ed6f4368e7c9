//! Every limit and switch of a server, named and documented in one place: the `ferryd` flags map
//! onto these fields one to one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::limits::ReadLimits;
use ferry_proto::server::{default_help_text, ServerConfig};
use ferry_proto::{Capabilities, Role};

use crate::digests::persist::PersistMode;
use crate::store::StoreSettings;

/// A server's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory served; created if missing.
    pub root: PathBuf,
    /// Connections served at once; the next one gets `BUSY` and is closed (`[CAP-1]`). Each
    /// costs a thread (blocking engine) or a task (async engine), a 64 KiB read buffer and at
    /// most [`Self::max_output`] plus one reply of output. The default is 16 times
    /// [`Self::max_per_ip`]: one address cannot take every slot (`[CAP-3]`).
    pub max_clients: u32,
    /// Connections served at once from one IP address, or one IPv6 `/64` (`[CAP-1]`, `[CAP-3]`).
    pub max_per_ip: u32,
    /// Time for a new connection to send its hello (`[TIME-1]`).
    pub handshake_timeout: Duration,
    /// Time a connection may wait between requests (`[TIME-2]`); `None`: no limit.
    pub idle_timeout: Option<Duration>,
    /// Time for a request head to arrive, from its first byte (`[TIME-7]`). Short: a head is a
    /// few kilobytes, and a slow one only holds a slot.
    pub head_timeout: Duration,
    /// Time a transfer may go without moving 64 KiB (`PROGRESS_UNIT`) or the rest of it: PUT
    /// data arriving (`[TIME-9]`), or reply bytes taken by the client (`[TIME-5]`).
    pub progress_timeout: Duration,
    /// Reply bytes held for one client before its requests stop being read (`[RES-2]`).
    pub max_output: usize,
    /// After a fatal error, how long input is read and dropped before the socket is closed, so
    /// the error reply is not destroyed by a TCP reset (`[ERR-9]`).
    pub linger: Duration,
    /// Largest file accepted in a PUT, in bytes.
    pub max_file_size: u64,
    /// Longest name accepted, in bytes (at most 4096).
    pub max_name_len: u32,
    /// Tokens and the roles they grant (`[AUTH-1]`).
    pub tokens: HashMap<String, Role>,
    /// The role of a client without a token; `None` refuses them (`[AUTH-2]`).
    pub anonymous: Option<Role>,
    /// Refuse every PUT and DELETE (`[ROLE-2]`).
    pub read_only: bool,
    /// Serve the legacy profile on the same port (§ 15).
    pub legacy: bool,
    /// Offer the `TRAILER` capability (§ 6.5): uploads may send their digest after the data,
    /// and a FETCH of a large file not hashed yet gets it after the data too.
    pub trailer: bool,
    /// On shutdown, how long transfers in flight may take to finish (`[SHUT-4]`).
    pub grace: Duration,
    /// Connections remembered for STATUS.
    pub history: usize,
    /// Files hashed at once for GETs, at most (`[SEC-3]`); each hash reads with a 256 KiB buffer.
    pub max_concurrent_hashes: usize,
    /// Files hashed at once in the background, before anyone asks (`[GET-8]`); 0: none, files are
    /// hashed by their first GET. The threads run at a lowered priority.
    pub background_hashes: usize,
    /// Where digests are kept across restarts (`[GET-8]`).
    pub digests: PersistMode,
    /// The digest index file; `None`: `.ferry-digests` in the root.
    pub digest_index: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            root: PathBuf::from("server_files"),
            max_clients: 256,
            max_per_ip: 16,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            head_timeout: Duration::from_secs(10),
            progress_timeout: Duration::from_secs(30),
            max_output: ferry_proto::server::DEFAULT_MAX_OUTPUT,
            linger: Duration::from_secs(2),
            max_file_size: 64 << 30,
            max_name_len: 255,
            tokens: HashMap::new(),
            anonymous: Some(Role::Write),
            read_only: false,
            legacy: true,
            trailer: true,
            grace: Duration::from_secs(10),
            history: 100,
            max_concurrent_hashes: 2,
            background_hashes: 1,
            digests: PersistMode::Auto,
            digest_index: None,
        }
    }
}

impl Settings {
    /// What ferry-proto's connection machine needs to know.
    pub fn protocol(&self) -> Arc<ServerConfig> {
        let mut capabilities = Capabilities::RESUME | Capabilities::STATUS | Capabilities::SHUTDOWN;
        if self.legacy {
            capabilities = capabilities | Capabilities::LEGACY;
        }
        if self.trailer {
            capabilities = capabilities | Capabilities::TRAILER;
        }
        Arc::new(ServerConfig {
            limits: ReadLimits { max_name_len: self.max_name_len, max_file_size: self.max_file_size }.clamped(),
            max_clients: self.max_clients,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            head_timeout: self.head_timeout,
            progress_timeout: self.progress_timeout,
            max_output: self.max_output,
            capabilities,
            anonymous: self.anonymous,
            tokens: self.tokens.clone(),
            read_only: self.read_only,
            help_text: default_help_text(),
        })
    }

    /// What the store needs to know.
    pub fn store(&self) -> StoreSettings {
        StoreSettings {
            max_name_len: self.max_name_len,
            max_concurrent_hashes: self.max_concurrent_hashes,
            persist: self.digests,
            index_path: self.digest_index.clone(),
            ..StoreSettings::default()
        }
    }
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TokensError {
    pub line: usize,
    pub message: String,
}

/// Reads a tokens file: one `ROLE TOKEN` per line (roles `read`, `write`, `admin`); blank lines and
/// lines starting with `#` are ignored.
///
/// `[SEC-1]`: an error names the line by its number and never quotes any part of it. Any column
/// may be a secret: a line with its columns swapped (`s3cret admin`) has the token where the role
/// should be, so even an unknown role is not echoed.
///
/// # Errors
/// A line that is not `ROLE TOKEN` (or has its columns swapped), an unknown role, a token that is
/// not 1–256 visible ASCII characters, or a token given twice.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, Role>, TokensError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: &str| TokensError { line: i + 1, message: message.to_owned() };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(role), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected `ROLE TOKEN`"));
        };
        let Ok(role) = role.parse::<Role>() else {
            return Err(err(unknown_role_message(token)));
        };
        let visible = token.bytes().all(|b| (0x21..=0x7E).contains(&b));
        if !visible || token.len() > ferry_proto::limits::TOKEN_LEN_MAX {
            return Err(err("a token is 1 to 256 visible ASCII characters"));
        }
        if out.insert(token.to_owned(), role).is_some() {
            return Err(err("this token is already given a role"));
        }
    }
    Ok(out)
}

/// Why a line's first column is not a role, without quoting the line (`[SEC-1]`).
fn unknown_role_message(second_column: &str) -> &'static str {
    if second_column.parse::<Role>().is_ok() {
        "expected `ROLE TOKEN`; the columns look swapped"
    } else {
        "unknown role (expected read, write or admin)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file() {
        let t = parse_tokens("# team\nadmin s3cret\n\nread guest\n").unwrap();
        assert_eq!(t["s3cret"], Role::Admin);
        assert_eq!(t["guest"], Role::Read);
        let e = parse_tokens("root s3cret").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "[SEC-1] no token in errors");
        assert!(parse_tokens("read a b").is_err());
        assert!(parse_tokens("read a\nwrite a").is_err());
    }

    /// `[SEC-1]`: whatever is wrong with a line, the error quotes no part of it: neither the
    /// token where the role should be (columns swapped) nor an unknown role, which may itself be a
    /// secret pasted in the wrong place.
    #[test]
    fn tokens_file_errors_quote_no_part_of_the_line() {
        let cases = [
            ("s3cret-tok admin", "s3cret-tok", Some("columns look swapped")),
            ("# a comment\n\nkey-123 read", "key-123", Some("columns look swapped")),
            ("sup3r-s3cret p4ss", "s3cret", None),
            ("Admin t0ken-x", "t0ken-x", None),
            ("owner t0ken-y extra", "t0ken-y", None),
            ("read t\u{7f}k", "t\u{7f}k", None),
            ("read dup-tok\nwrite dup-tok", "dup-tok", None),
        ];
        for (text, secret, hint) in cases {
            let e = parse_tokens(text).expect_err(text).to_string();
            assert!(!e.contains(secret), "[SEC-1] {text:?} gave {e:?}");
            for column in text.lines().last().unwrap_or("").split_whitespace() {
                if column.parse::<Role>().is_err() {
                    assert!(!e.contains(column), "[SEC-1] {text:?} gave {e:?}, quoting {column:?}");
                }
            }
            if let Some(hint) = hint {
                assert!(e.contains(hint), "{text:?} gave {e:?}");
            }
        }
        let e = parse_tokens("# team\n\nt0k admin").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.to_string(), "line 3: expected `ROLE TOKEN`; the columns look swapped");
    }
}
