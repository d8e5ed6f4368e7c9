//! `ferry-conformance`: checks any Ferry server, and any Ferry client, against PROTOCOL.md.
//!
//! Written from the specification, not from this repository's servers: it is the judge of every
//! implementation, ours included. Server cases replay the spec's transcripts under several
//! deliveries (`cases::transcripts`), and more; the runner gives each case a deadline so that one
//! hung case never costs the run, and reports verdicts by requirement id. Client cases
//! ([`client`]) run a client under test against a server of the suite's own that misbehaves on
//! purpose.

pub mod case;
pub mod cases;
pub mod client;
pub mod context;
pub mod coverage;
pub mod over_tls;
pub mod record;
pub mod report;
pub mod runner;
pub mod tls_relay;
pub mod wire;

/// The spec files this binary was built with.
pub mod spec {
    include!(concat!(env!("OUT_DIR"), "/spec_files.rs"));

    /// PROTOCOL.md's requirements.
    pub fn requirements() -> Vec<ferry_proto::requirements::Requirement> {
        ferry_proto::requirements::parse(PROTOCOL).0
    }
}
