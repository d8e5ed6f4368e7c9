//! Replays every transcript in spec/transcripts/ against the server state machine in memory,
//! under several deliveries of the client's bytes: whole, one byte per write, and split at every
//! field boundary. The verdict must be a pass each time — the transcripts and the machine are two
//! readings of PROTOCOL.md, and this is where they must agree.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ferry_proto::memory::{MemoryConnection, MemoryStore};
use ferry_proto::server::ServerConfig;
use ferry_proto::transcript::{match_step, Match, Rendered, Transcript, Vars};
use ferry_proto::Role;

#[derive(Clone, Copy, Debug)]
enum Delivery {
    Whole,
    Bytewise,
    FieldBoundaries,
}

fn transcripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/transcripts");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ft"))
        .collect();
    v.sort();
    v
}

/// Runs one transcript; `Err` names the line that failed and why.
fn replay(t: &Transcript, delivery: Delivery) -> Result<(), String> {
    let config = Arc::new(ServerConfig { anonymous: Some(Role::Write), ..Default::default() });
    let now = Instant::now();
    let mut store = MemoryStore::default();
    for steps in t.render(&Vars { prefix: "mem-".into(), token: String::new() }).map_err(|e| e.to_string())? {
        let mut conn = MemoryConnection::new(config.clone(), now);
        let mut pending: Vec<u8> = Vec::new();
        let mut received: Vec<u8> = Vec::new();
        let mut pos = 0;
        for step in steps {
            match step {
                Rendered::Send { bytes, boundaries, .. } => {
                    let cuts: Vec<usize> = match delivery {
                        Delivery::Whole => vec![],
                        Delivery::Bytewise => (1..bytes.len()).collect(),
                        Delivery::FieldBoundaries => boundaries,
                    };
                    let mut from = 0;
                    for to in cuts.into_iter().chain([bytes.len()]) {
                        pending.extend_from_slice(&bytes[from..to]);
                        from = to;
                        let used = conn.feed(&mut store, &pending, now);
                        pending.drain(..used);
                    }
                    received.extend(conn.take_output());
                }
                Rendered::Expect { patterns, line } => {
                    let eof = conn.connection().is_closed();
                    match match_step(&patterns, &received[pos..], eof) {
                        Match::Complete(n) => pos += n,
                        Match::NeedMore => {
                            return Err(format!("line {line}: the server sent too little: {:02x?}", &received[pos..]))
                        }
                        Match::Mismatch(m) => {
                            return Err(format!(
                                "line {line}: byte {} differs: expected {:02x?}, received {:02x?}",
                                m.offset, m.expected, m.received
                            ))
                        }
                    }
                }
                Rendered::ExpectClose { line } => {
                    if !conn.connection().is_closed() {
                        return Err(format!("line {line}: the connection is still open"));
                    }
                    if pos != received.len() {
                        return Err(format!(
                            "line {line}: unexpected bytes before the close: {:02x?}",
                            &received[pos..]
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn every_transcript_passes_against_the_server_machine_in_memory() {
    let paths = transcripts();
    assert!(paths.len() >= 15, "only {} transcripts", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let t = Transcript::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!t.title.is_empty() && !t.requires.is_empty(), "{name}: @title and @requires are required");
        for delivery in [Delivery::Whole, Delivery::Bytewise, Delivery::FieldBoundaries] {
            if let Err(e) = replay(&t, delivery) {
                failures.push(format!("{name} ({delivery:?}): {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_wrong_expectation_is_caught() {
    // The replay can fail: change one expected byte of a passing transcript.
    let text = std::fs::read_to_string(transcripts().into_iter().find(|p| p.ends_with("handshake-bye.ft")).unwrap())
        .unwrap()
        .replace("S: u8:0x88", "S: u8:0x89");
    let t = Transcript::parse(&text).unwrap();
    assert!(replay(&t, Delivery::Whole).is_err());
}
