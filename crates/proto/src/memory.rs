//! An in-memory host for [`ServerConnection`]: files in a map, no sockets.
//!
//! It is the smallest complete Ferry server, used to replay the spec's transcripts and vectors
//! against the state machine without I/O (quinn-style tests on simulated time), as the base of
//! fault-injecting servers, and by fuzz targets. It is not a storage engine: real servers keep
//! files on disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::digest::Digest;
use crate::message::{ConnRecord, Entry, ErrorCode, FrameHead, PutMode};
use crate::name::Name;
use crate::server::{Command, Event, ServerConfig, ServerConnection};

/// The files of an in-memory server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    /// Name to content; ordered, so LIST comes sorted (`[LIST-2]`).
    pub files: BTreeMap<Name, Vec<u8>>,
    /// The history STATUS reports.
    pub history: Vec<ConnRecord>,
    /// Set when a connection asked for SHUTDOWN.
    pub shutdown_requested: bool,
}

impl MemoryStore {
    fn entry(name: &Name, data: &[u8]) -> Entry {
        Entry { name: name.clone(), size: data.len() as u64, mtime_ms: 0, md5: Some(Digest::of(data)) }
    }
}

/// One connection of an in-memory server.
#[derive(Debug)]
pub struct MemoryConnection {
    conn: ServerConnection,
    /// The upload in progress: its head and the bytes so far.
    upload: Option<(crate::message::PutHead, Vec<u8>)>,
    output: Vec<u8>,
    /// The time of the latest call: when output taken by [`Self::take_output`] counts as sent.
    now: Instant,
}

impl MemoryConnection {
    /// A connection accepted at `now`.
    pub fn new(config: Arc<ServerConfig>, now: Instant) -> Self {
        Self { conn: ServerConnection::new(config, now), upload: None, output: Vec::new(), now }
    }

    /// The state machine, for inspection.
    pub fn connection(&self) -> &ServerConnection {
        &self.conn
    }

    /// Mutable access to the state machine (deadlines, shutdown).
    pub fn connection_mut(&mut self) -> &mut ServerConnection {
        &mut self.conn
    }

    /// Feeds received bytes; returns how many were used (the rest waits for the machine).
    pub fn feed(&mut self, store: &mut MemoryStore, input: &[u8], now: Instant) -> usize {
        self.now = now;
        let mut used = 0;
        loop {
            let (n, event) = self.conn.handle_input(&input[used..], now);
            used += n;
            match event {
                Some(event) => self.on_event(store, event, now),
                // The machine pauses while replies wait for the client (`[RES-2]`); this host
                // takes them at once, so the machine goes on.
                None if !self.conn.pending_output().is_empty() => self.drain(),
                None => break,
            }
        }
        self.drain();
        if self.conn.is_closed() {
            self.upload = None;
        }
        used
    }

    /// Everything the server has sent so far, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.drain();
        std::mem::take(&mut self.output)
    }

    fn drain(&mut self) {
        while !self.conn.pending_output().is_empty() {
            let n = self.conn.pending_output().len();
            self.output.extend_from_slice(self.conn.pending_output());
            self.conn.consume_output(n, self.now);
        }
    }

    fn on_event(&mut self, store: &mut MemoryStore, event: Event<'_>, now: Instant) {
        let conn = &mut self.conn;
        match event {
            Event::Connected { .. } | Event::Refused { .. } => {}
            Event::Shutdown => store.shutdown_requested = true,
            Event::PutData(d) => {
                if let Some((_, buf)) = &mut self.upload {
                    buf.extend_from_slice(d);
                }
            }
            Event::PutComplete { verified, .. } => {
                let Some((head, data)) = self.upload.take() else { return };
                if verified {
                    let name = head.name;
                    if head.mode == PutMode::CreateOnly && store.files.contains_key(&name) {
                        // Lost a race with another create-only upload (`[STORE-6]`).
                        conn.respond_error(ErrorCode::EXISTS, "the file exists", now);
                    } else {
                        let replaced = store.files.insert(name, data).is_some();
                        conn.respond_put(replaced, now);
                    }
                }
            }
            Event::Command(command) => match command {
                Command::List => {
                    let entries: Vec<Entry> = store.files.iter().map(|(n, d)| MemoryStore::entry(n, d)).collect();
                    conn.respond_list(entries, now);
                }
                Command::Stat(name) => match store.files.get(&name) {
                    Some(d) => conn.respond_stat(&MemoryStore::entry(&name, d), now),
                    None => conn.respond_error(ErrorCode::NOT_FOUND, "no such file", now),
                },
                Command::Delete(name) => match store.files.remove(&name) {
                    Some(_) => conn.respond_delete(now),
                    None => conn.respond_error(ErrorCode::NOT_FOUND, "no such file", now),
                },
                Command::Status => conn.respond_status(store.history.as_slice(), now),
                Command::Get { name, .. } => match store.files.get(&name) {
                    Some(data) => {
                        let frame = FrameHead { name: name.clone(), size: data.len() as u64, md5: Digest::of(data) };
                        if let Some((offset, len)) = conn.respond_get(frame, now) {
                            let n = conn.pending_output().len();
                            self.output.extend_from_slice(conn.pending_output());
                            conn.consume_output(n, now);
                            let start = offset as usize;
                            self.output.extend_from_slice(&data[start..start + len as usize]);
                            conn.body_sent(len, now);
                        }
                    }
                    None => conn.respond_error(ErrorCode::NOT_FOUND, "no such file", now),
                },
                Command::Put(head) => {
                    if head.mode == PutMode::CreateOnly && store.files.contains_key(&head.name) {
                        conn.respond_error(ErrorCode::EXISTS, "the file exists", now);
                    } else {
                        conn.accept_put();
                        self.upload = Some((head, Vec::new()));
                    }
                }
            },
        }
    }
}
