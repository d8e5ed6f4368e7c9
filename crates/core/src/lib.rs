//! `ferry-core`: everything a Ferry server is, except how it does network I/O.
//!
//! - [`store`]: the confined root directory, atomic verified uploads.
//! - [`digests`]: the MD5 of each file version, computed once.
//! - `publish`: how a verified upload takes its name, in one kernel step.
//! - [`listing`]: one directory listing shared by every LIST while nothing changed.
//! - [`indexer`]: digests computed in the background, before anyone asks.
//! - [`history`]: the connection history STATUS reports.
//! - [`settings`]: every limit and switch, named and documented.
//! - [`root`]: the root directory made ready at start-up: created with care, checked writable.
//! - [`peer`]: which connections count as one client for the per-address cap.
//! - [`session`]: one connection — ferry-proto's state machine driven against the store.
//!
//! The blocking and async engines own sockets and threads (or tasks) and nothing else: they feed
//! received bytes to a [`session::Session`], write what it wants written, send the file ranges it
//! hands out, and tell it about time and EOF.

pub mod digests;
pub mod history;
pub mod indexer;
pub mod listing;
pub mod peer;
mod publish;
pub mod root;
pub mod session;
pub mod settings;
pub mod store;

pub use session::{Body, Server, Session};
pub use settings::Settings;
