//! `ferry-digest-store`: a file's MD5, kept across restarts, for as long as the file is unchanged.
//!
//! A Ferry frame carries a file's digest before its data, so whoever sends a file it has not
//! hashed must read it twice. This crate lets a server (and a client, for what it uploads) keep a
//! digest for the life of one version of a file:
//!
//! - [`FileKey`]: what proves a remembered digest still matches the bytes — device, inode, size,
//!   modification time and status-change time, all in nanoseconds.
//! - [`xattr`]: the digest in a user extended attribute on the file itself (`user.ferry.md5`),
//!   where it travels with the file and dies with it.
//! - [`Index`]: the digest in a small redb database, for file systems without user xattrs, files
//!   this process may not annotate, and clients, which must not annotate their users' files.

pub mod index;
pub mod key;
#[cfg(target_os = "linux")]
pub mod xattr;

pub use index::{Index, IndexError};
pub use key::FileKey;
