//! `ferry-client`: a blocking Ferry client library, the engine of the `ferry` command.
//!
//! It drives ferry-proto's sans-IO [`ClientConnection`](ferry_proto::client::ClientConnection)
//! over a `TcpStream`, or TLS over one ([`transport`], PROTOCOL.md § 18), and adds what a tool
//! people rely on needs:
//!
//! - a deadline on every connect, read and write ([`conn`], `[TIME-6]`), lengthened for the head
//!   of a GET reply while the server computes a digest it lacks (`[GET-9]`);
//! - retries with exponential backoff and jitter ([`retry`]), for connecting and for transfers
//!   cut off mid-way — repeated only when that is safe (a DELETE is not sent twice);
//! - downloads that are verified and resumable ([`local`]): written to `NAME.part`, checked
//!   against the MD5 of the whole file, fsynced, then renamed; resumed with a GET from an offset
//!   only if the server still has the same file (`[GET-7]`);
//! - uploads that hash the file first (the frame carries the digest before the data), unless
//!   the [`digest_cache`] knows this version of the file, and stop at an early refusal;
//! - TLS whose certificate and ALPN are checked before the hello (`[TLS-3]`, `[TLS-5]`), and no
//!   token sent in clear text to another machine unless the user allows it (`[TLS-6]`);
//! - typed errors ([`Error`]) that say what failed and what to do, each with an exit code.
//!
//! It draws nothing: long operations report to a [`Progress`].
//!
//! ```no_run
//! use ferry_client::{Client, Config, NoProgress};
//! use ferry_proto::Name;
//!
//! let mut client = Client::new(Config { server: "127.0.0.1:9999".into(), ..Config::default() });
//! for entry in client.list(&mut NoProgress)? {
//!     println!("{} {}", entry.name, entry.size);
//! }
//! let name = Name::parse("a.txt").expect("a plain name");
//! client.download(&name, "a.txt".as_ref(), false, &mut NoProgress)?;
//! client.close();
//! # Ok::<(), ferry_client::Error>(())
//! ```

pub mod client;
pub mod conn;
pub mod digest_cache;
pub mod error;
pub mod hashing;
pub mod local;
pub mod progress;
pub mod ratelimit;
pub mod retry;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
pub mod transport;

pub use client::{Client, Config, Downloaded, Sleep, TlsConfig, Uploaded, DEFAULT_SERVER};
pub use error::{exit, CertProblem, Error};
pub use ferry_tls::Trust;
pub use hashing::HashMode;
pub use progress::{NoProgress, Progress};
pub use retry::{Jitter, RetryPolicy};
pub use transport::TlsSetup;
