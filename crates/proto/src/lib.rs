//! `ferry-proto`: the Ferry protocol without I/O.
//!
//! Bytes go in, messages and actions come out; no sockets, threads or clocks live here (time is
//! passed in). Every Ferry implementation in this repository — the blocking and async servers,
//! the client and the conformance suite — drives these types, so the protocol's rules are written
//! once. PROTOCOL.md is the specification; requirement ids such as `[GET-3]` in comments point at
//! the sentence a piece of code enforces.
//!
//! - [`codec`]: streaming decoders and encoders for both directions.
//! - [`name`], [`digest`], [`limits`], [`message`]: the protocol's values and rules.

pub mod client;
pub mod codec;
pub mod digest;
pub mod limits;
pub mod memory;
pub mod message;
pub mod name;
pub mod requirements;
pub mod server;
pub mod transcript;
pub mod vector;

pub use codec::{ClientItem, DecodeError, Decoded, ReplyDecoder, RequestDecoder, ServerItem};
pub use digest::Digest;
pub use message::*;
pub use name::{Name, NameError};
