//! Server-to-client bytes, honest and otherwise.
//!
//! Honest replies come from ferry-proto's encoders ([`ServerItem::encode`]), which refuse to make
//! a message a client must reject; the lies — names no server may send, digits that are not hex,
//! messages over the limit — are written here field by field, as PROTOCOL.md lays them out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_proto::{tag, Capabilities, Digest, ErrorCode, Request, Role, ServerHello, ServerItem};

use super::server::{Act, Event, Script};

/// The hello the adversary sends when it is honest (capabilities as given).
pub fn hello(version: u16, capabilities: u32) -> Vec<u8> {
    let mut out = Vec::new();
    ServerHello {
        version,
        role: Role::Write,
        capabilities: Capabilities(capabilities),
        max_name_len: 255,
        max_file_size: 1 << 30,
        max_clients: 0,
        idle_timeout_ms: 0,
        head_timeout_ms: 10_000,
        progress_timeout_ms: 10_000,
    }
    .encode(&mut out);
    out
}

/// An error reply with a message of any bytes, its length field as long as the bytes.
pub fn error(code: u16, message: &[u8]) -> Vec<u8> {
    let mut out = vec![tag::ERROR];
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// An honest error reply.
pub fn refuse(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ServerItem::Error(ferry_proto::ErrorReply::new(code, message)).encode(&mut out);
    out
}

fn put_name(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name);
}

/// A GET reply: tag, offset, then a frame of any name and digest digits, and `data`.
pub fn get(offset: u64, name: &[u8], size: u64, md5_hex: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = vec![tag::GET];
    out.extend_from_slice(&offset.to_be_bytes());
    put_name(&mut out, name);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(md5_hex);
    out.extend_from_slice(data);
    out
}

/// The honest GET reply for `content` from `offset`.
pub fn get_honest(name: &str, content: &[u8], offset: u64) -> Vec<u8> {
    let from = (offset as usize).min(content.len());
    get(offset, name.as_bytes(), content.len() as u64, &Digest::of(content).to_hex(), &content[from..])
}

/// One LIST entry (or STAT body), of any name.
pub fn entry(name: &[u8], size: u64, md5: Option<Digest>) -> Vec<u8> {
    let mut out = Vec::new();
    put_name(&mut out, name);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000_i64.to_be_bytes());
    match md5 {
        Some(d) => {
            out.push(1);
            out.extend_from_slice(&d.to_hex());
        }
        None => out.push(0),
    }
    out
}

/// A LIST reply of these entries (each from [`entry`]).
pub fn list(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![tag::LIST];
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        out.extend_from_slice(e);
    }
    out
}

/// A STAT reply.
pub fn stat(name: &[u8], size: u64, md5: Option<Digest>) -> Vec<u8> {
    let mut out = vec![tag::STAT];
    out.extend_from_slice(&entry(name, size, md5));
    out
}

/// A legacy `"OK"` reply with its frame.
pub fn legacy_ok(name: &str, md5_hex: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = tag::LEGACY_OK.to_vec();
    put_name(&mut out, name.as_bytes());
    out.extend_from_slice(&(content.len() as u64).to_be_bytes());
    out.extend_from_slice(md5_hex);
    out.extend_from_slice(content);
    out
}

/// A legacy `"ERROR"` reply.
pub fn legacy_error(message: &[u8]) -> Vec<u8> {
    let mut out = tag::LEGACY_ERROR.to_vec();
    out.extend_from_slice(message);
    out
}

/// What an honest server holds, and what was uploaded to it.
#[derive(Debug, Clone, Default)]
pub struct Store {
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Store {
    /// A store holding these files.
    pub fn with(files: &[(&str, &[u8])]) -> Self {
        let s = Self::default();
        for (n, c) in files {
            s.lock().insert((*n).to_owned(), c.to_vec());
        }
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A file's content.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().get(name).cloned()
    }

    /// An honest server's answer to `event`.
    pub fn answer(&self, event: &Event<'_>, capabilities: u32) -> Act {
        match event {
            Event::Accept => Act::Nothing,
            Event::Hello(h) if (h.min_version..=h.max_version).contains(&1) => Act::Send(hello(1, capabilities)),
            Event::Hello(_) => Act::Close(refuse(ErrorCode::UNSUPPORTED_VERSION, "this server speaks version 1")),
            Event::Legacy(name) => Act::Close(match self.get(name.as_str()) {
                Some(c) => legacy_ok(name.as_str(), &Digest::of(&c).to_hex(), &c),
                None => legacy_error(b"no such file"),
            }),
            Event::Request(r, data) => Act::Send(self.reply(r, data)),
        }
    }

    fn reply(&self, request: &Request, data: &[u8]) -> Vec<u8> {
        let missing = || refuse(ErrorCode::NOT_FOUND, "no such file");
        match request {
            Request::List => {
                let entries: Vec<Vec<u8>> =
                    self.lock().iter().map(|(n, c)| entry(n.as_bytes(), c.len() as u64, Some(Digest::of(c)))).collect();
                list(&entries)
            }
            Request::Stat(n) => match self.get(n.as_str()) {
                Some(c) => stat(n.as_str().as_bytes(), c.len() as u64, Some(Digest::of(&c))),
                None => missing(),
            },
            Request::Get { name, offset } | Request::Fetch { name, offset } => match self.get(name.as_str()) {
                Some(c) if *offset > c.len() as u64 => refuse(ErrorCode::BAD_OFFSET, "past the end"),
                Some(c) => get_honest(name.as_str(), &c, *offset),
                None => missing(),
            },
            Request::Put(head) => {
                // A trailing PUT's trailer (`head.md5` is `None`) was checked as it arrived.
                if head.md5.is_some_and(|m| m != Digest::of(data)) || data.len() as u64 != head.size {
                    return refuse(ErrorCode::CHECKSUM_MISMATCH, "the data does not match its MD5");
                }
                let replaced = self.lock().insert(head.name.as_str().to_owned(), data.to_vec()).is_some();
                let mut out = Vec::new();
                ServerItem::PutOk { replaced }.encode(&mut out);
                out
            }
            Request::Delete(n) => match self.lock().remove(n.as_str()) {
                Some(_) => vec![tag::DELETE],
                None => missing(),
            },
            Request::Status => vec![tag::STATUS, 0, 0, 0, 0],
            Request::Help => {
                let mut out = Vec::new();
                ServerItem::Help("LIST STAT GET PUT DELETE STATUS HELP BYE".into()).encode(&mut out);
                out
            }
            Request::Bye => vec![tag::BYE],
            Request::Shutdown => refuse(ErrorCode::FORBIDDEN, "not here"),
        }
    }

    /// A script that is honest throughout, with these capabilities.
    pub fn script(&self, capabilities: u32) -> Script {
        let store = self.clone();
        Arc::new(move |_, e| store.answer(&e, capabilities))
    }
}
