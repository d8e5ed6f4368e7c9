//! What a long operation tells its caller as it goes. The library draws nothing: the `ferry`
//! binary turns these calls into progress bars, tests into records.

use std::path::Path;
use std::time::Duration;

use ferry_proto::Name;

use crate::error::Error;

/// Receives news of an operation. Every method has an empty default.
pub trait Progress {
    /// Hashing a local file: `done` of `total` bytes (before an upload, or the kept part of a
    /// download being resumed).
    fn hashing(&mut self, _path: &Path, _done: u64, _total: u64) {}

    /// A transfer of `name` (`total` bytes in all) starts, or starts again, at byte `from`.
    fn transfer_started(&mut self, _name: &Name, _total: u64, _from: u64) {}

    /// The server has no MD5 for `name` (`size` bytes) yet and must compute it before it can
    /// start sending the file, so the client waits up to `allowed` in all (`[GET-9]`) rather than
    /// its ordinary deadline. Called only once the wait has lasted half a second, since a small
    /// file is hashed sooner; [`Self::transfer_started`] follows when the data starts.
    fn waiting_for_digest(&mut self, _name: &Name, _size: u64, _allowed: Duration) {}

    /// `bytes` more bytes were sent or received.
    fn transferred(&mut self, _bytes: u64) {}

    /// The download of `name` starts again from its first byte, for `why`.
    fn restarting(&mut self, _name: &Name, _why: &str) {}

    /// An attempt failed with `error`; retry number `retry` of at most `retries` follows after
    /// `delay`.
    fn retrying(&mut self, _error: &Error, _delay: Duration, _retry: u32, _retries: u32) {}

    /// Whether the user asked to stop (Ctrl-C in the shell). Asked between chunks of data and
    /// before each retry; a `true` ends the operation with [`Error::Cancelled`], keeping a
    /// download's `.part` file for later.
    fn cancelled(&mut self) -> bool {
        false
    }
}

/// Ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
