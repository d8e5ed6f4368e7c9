//! Test vectors (spec/README.md): the JSON form of decoded items, and a driver that decodes a whole
//! byte string — split into reads at any points — into that form.
//!
//! ferry-proto's tests, the conformance suite and the fuzz targets all judge decoding through this
//! one function, so "how bytes decode" has a single, comparable answer.

use serde_json::{json, Value};

use crate::codec::{ClientItem, DecodeError, Decoded, ReplyDecoder, RequestDecoder, ServerItem};
use crate::limits::{ReadLimits, ERROR_MESSAGE_MAX};
use crate::message::{PutMode, Request};

/// Which way the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// Where in a connection the bytes begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Handshake,
    Session,
    /// The reply to a legacy request (server to client only).
    Legacy,
}

/// How decoding a byte string ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// At a message boundary with nothing pending.
    Clean,
    /// Inside a message: more bytes were needed.
    Truncated,
    /// A fatal error, named by its PROTOCOL.md code.
    Error(String),
}

impl End {
    /// The vector file's form of this end.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Clean => json!("clean"),
            Self::Truncated => json!("truncated"),
            Self::Error(code) => json!({ "error": code }),
        }
    }
}

/// Decodes `bytes`, delivered in the pieces that `splits` (increasing offsets) cut them into, and
/// returns the items in vector form with adjacent data merged, and how the input ended. A
/// client-to-server stream is read as by a server that does not announce `TRAILER`.
pub fn decode(
    direction: Direction,
    start: Start,
    limits: ReadLimits,
    bytes: &[u8],
    splits: &[usize],
) -> (Vec<Value>, End) {
    decode_with_trailer(direction, start, limits, false, bytes, splits)
}

/// [`decode`], with a client-to-server stream read as by a server that announces `TRAILER` when
/// `trailer` is set (the vector key `"trailer": true`, § 6.5).
pub fn decode_with_trailer(
    direction: Direction,
    start: Start,
    limits: ReadLimits,
    trailer: bool,
    bytes: &[u8],
    splits: &[usize],
) -> (Vec<Value>, End) {
    let mut out = Collector::default();
    let end = match direction {
        Direction::ClientToServer => {
            let mut d = match start {
                Start::Session => RequestDecoder::in_session(limits).with_trailer(trailer),
                Start::Handshake => RequestDecoder::new(limits).with_trailer(trailer),
                // A client never speaks "after a legacy request"; nothing can decode there.
                Start::Legacy => return (Vec::new(), End::Error("MALFORMED".to_owned())),
            };
            feed(bytes, splits, |buf| d.decode(buf).map(|r| r.map(|item| out.push_client(&item))))
                .and_then(|unused| d.finish(unused).map_err(|_| End::Truncated))
        }
        Direction::ServerToClient => {
            let mut d = match start {
                Start::Handshake => ReplyDecoder::new(),
                Start::Session => ReplyDecoder::in_session(),
                Start::Legacy => ReplyDecoder::legacy(),
            };
            feed(bytes, splits, |buf| d.decode(buf).map(|r| r.map(|item| out.push_server(&item))))
                .and_then(|unused| d.finish(unused).map_err(|_| End::Truncated))
        }
    };
    out.flush();
    (out.items, end.err().unwrap_or(End::Clean))
}

/// Feeds `bytes` to `step` the way a connection would: a growing receive buffer that is refilled
/// at each split point. Returns the bytes never consumed.
fn feed<'b>(
    bytes: &'b [u8],
    splits: &[usize],
    mut step: impl FnMut(&[u8]) -> Result<Decoded<()>, DecodeError>,
) -> Result<&'b [u8], End> {
    let mut consumed = 0;
    let mut boundaries = splits.iter().copied().filter(|&s| s > 0 && s < bytes.len()).collect::<Vec<_>>();
    boundaries.push(bytes.len());
    for arrived in boundaries {
        if arrived < consumed {
            continue;
        }
        loop {
            match step(&bytes[consumed..arrived]) {
                Ok(Decoded::Item { consumed: n, .. }) => consumed += n,
                Ok(Decoded::NeedMore) => break,
                Err(e) => return Err(End::Error(e.code().name().unwrap_or("MALFORMED").to_owned())),
            }
        }
    }
    Ok(&bytes[consumed..])
}

/// Collects items in vector form, merging data chunks.
#[derive(Default)]
struct Collector {
    items: Vec<Value>,
    data: Option<Vec<u8>>,
    /// A legacy error message being gathered (`[LEG-6]`: at most 1024 bytes kept).
    legacy_error: Option<Vec<u8>>,
}

impl Collector {
    fn push(&mut self, v: Value) {
        self.flush();
        self.items.push(v);
    }

    fn data(&mut self, d: &[u8]) {
        if let Some(text) = &mut self.legacy_error {
            let room = ERROR_MESSAGE_MAX.saturating_sub(text.len());
            text.extend_from_slice(&d[..room.min(d.len())]);
        } else {
            self.data.get_or_insert_with(Vec::new).extend_from_slice(d);
        }
    }

    fn flush(&mut self) {
        if let Some(d) = self.data.take() {
            self.items.push(json!({ "type": "data", "hex": hex::encode(d) }));
        }
        if let Some(text) = self.legacy_error.take() {
            let message = String::from_utf8_lossy(&text);
            self.items.push(json!({ "type": "legacy_error", "message": message }));
        }
    }

    fn push_client(&mut self, item: &ClientItem<'_>) {
        match item {
            ClientItem::Data(d) => self.data(d),
            other => self.push(client_item_json(other)),
        }
    }

    fn push_server(&mut self, item: &ServerItem<'_>) {
        match item {
            ServerItem::Data(d) => self.data(d),
            ServerItem::LegacyErrorStart => {
                self.flush();
                self.legacy_error = Some(Vec::new());
            }
            other => self.push(server_item_json(other)),
        }
    }
}

/// The vector form of a client-to-server item (spec/README.md, "Items").
pub fn client_item_json(item: &ClientItem<'_>) -> Value {
    match item {
        ClientItem::Hello(h) => json!({
            "type": "hello", "min_version": h.min_version, "max_version": h.max_version, "token": h.token,
        }),
        ClientItem::LegacyGet(name) => json!({ "type": "legacy_get", "name": name.as_str() }),
        ClientItem::Rejected { .. } => json!({ "type": "rejected", "code": "BAD_NAME" }),
        ClientItem::Data(d) => json!({ "type": "data", "hex": hex::encode(d) }),
        ClientItem::Trailer(md5) => json!({ "type": "trailer", "md5": md5.to_string() }),
        ClientItem::DataEnd => json!({ "type": "data_end" }),
        ClientItem::Request(r) => match r {
            Request::List => json!({ "type": "list" }),
            Request::Status => json!({ "type": "status" }),
            Request::Help => json!({ "type": "help" }),
            Request::Bye => json!({ "type": "bye" }),
            Request::Shutdown => json!({ "type": "shutdown" }),
            Request::Stat(n) => json!({ "type": "stat", "name": n.as_str() }),
            Request::Delete(n) => json!({ "type": "delete", "name": n.as_str() }),
            Request::Get { name, offset } => json!({ "type": "get", "name": name.as_str(), "offset": offset }),
            Request::Fetch { name, offset } => json!({ "type": "fetch", "name": name.as_str(), "offset": offset }),
            Request::Put(p) => json!({
                "type": "put",
                "mode": match p.mode { PutMode::Overwrite => "overwrite", PutMode::CreateOnly => "create_only" },
                "name": p.name.as_str(),
                "size": p.size,
                // `null`: the trailing form (§ 6.5), whose digest is a `trailer` item after the data.
                "md5": p.md5.map(|d| d.to_string()),
            }),
        },
    }
}

fn entry_json(kind: &str, e: &crate::message::Entry) -> Value {
    json!({
        "type": kind, "name": e.name.as_str(), "size": e.size, "mtime_ms": e.mtime_ms,
        "md5": e.md5.map(|d| d.to_string()),
    })
}

/// The vector form of a server-to-client item (spec/README.md, "Items").
pub fn server_item_json(item: &ServerItem<'_>) -> Value {
    match item {
        ServerItem::Hello(h) => json!({
            "type": "hello_ok", "version": h.version, "role": h.role as u8, "capabilities": h.capabilities.0,
            "max_name_len": h.max_name_len, "max_file_size": h.max_file_size, "max_clients": h.max_clients,
            "idle_timeout_ms": h.idle_timeout_ms, "head_timeout_ms": h.head_timeout_ms,
            "progress_timeout_ms": h.progress_timeout_ms,
        }),
        ServerItem::Error(e) => json!({ "type": "error", "code": e.code.0, "message": e.message }),
        ServerItem::ListStart { count } => json!({ "type": "list_start", "count": count }),
        ServerItem::Entry(e) => entry_json("entry", e),
        ServerItem::Stat(e) => entry_json("stat_ok", e),
        ServerItem::GetHead { offset, frame } => json!({
            "type": "get_ok", "offset": offset, "name": frame.name.as_str(), "size": frame.size,
            "md5": frame.md5.to_string(),
        }),
        ServerItem::FetchTrailing { name, size } => {
            json!({ "type": "fetch_trailing", "name": name.as_str(), "size": size })
        }
        ServerItem::Trailer(md5) => json!({ "type": "trailer", "md5": md5.to_string() }),
        ServerItem::PutOk { replaced } => json!({ "type": "put_ok", "replaced": replaced }),
        ServerItem::DeleteOk => json!({ "type": "delete_ok" }),
        ServerItem::StatusStart { count } => json!({ "type": "status_start", "count": count }),
        ServerItem::Connection(c) => json!({
            "type": "connection", "id": c.id, "peer": c.peer, "connected_ms": c.connected_ms,
            "disconnected_ms": c.disconnected_ms, "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
        }),
        ServerItem::Help(text) => json!({ "type": "help_ok", "text": text }),
        ServerItem::ByeOk => json!({ "type": "bye_ok" }),
        ServerItem::ShutdownOk => json!({ "type": "shutdown_ok" }),
        ServerItem::LegacyOk(frame) => json!({
            "type": "legacy_ok", "name": frame.name.as_str(), "size": frame.size, "md5": frame.md5.to_string(),
        }),
        ServerItem::LegacyErrorStart => json!({ "type": "legacy_error", "message": "" }),
        ServerItem::Data(d) => json!({ "type": "data", "hex": hex::encode(d) }),
        ServerItem::DataEnd => json!({ "type": "data_end" }),
    }
}

/// A vector file, parsed.
#[derive(Debug, Clone)]
pub struct Vector {
    pub description: String,
    pub requirements: Vec<String>,
    pub direction: Direction,
    pub start: Start,
    pub limits: ReadLimits,
    /// c2s only: the server announced `TRAILER` (§ 6.5), so PUT modes 0x80 and 0x81 and FETCH are read.
    pub trailer: bool,
    pub bytes: Vec<u8>,
    pub items: Vec<Value>,
    pub end: End,
}

impl Vector {
    /// Parses a vector file's JSON.
    ///
    /// # Errors
    /// A description of the first key that is missing or ill-formed.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).ok_or_else(|| format!("missing string {k:?}"));
        let direction = match s("direction")? {
            "c2s" => Direction::ClientToServer,
            "s2c" => Direction::ServerToClient,
            other => return Err(format!("bad direction {other:?}")),
        };
        let start = match s("start")? {
            "handshake" => Start::Handshake,
            "session" => Start::Session,
            "legacy" => Start::Legacy,
            other => return Err(format!("bad start {other:?}")),
        };
        let mut limits = ReadLimits::default();
        if let Some(l) = v.get("limits") {
            if let Some(n) = l.get("max_name_len").and_then(Value::as_u64) {
                limits.max_name_len = u32::try_from(n).map_err(|e| e.to_string())?;
            }
            if let Some(n) = l.get("max_file_size").and_then(Value::as_u64) {
                limits.max_file_size = n;
            }
        }
        let hex_text: String = s("hex")?.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(hex_text).map_err(|e| format!("bad hex: {e}"))?;
        let end = match v.get("end") {
            Some(Value::String(e)) if e == "clean" => End::Clean,
            Some(Value::String(e)) if e == "truncated" => End::Truncated,
            Some(Value::Object(o)) => {
                End::Error(o.get("error").and_then(Value::as_str).ok_or("end.error must be a string")?.to_owned())
            }
            other => return Err(format!("bad end {other:?}")),
        };
        Ok(Self {
            description: s("description")?.to_owned(),
            requirements: v
                .get("requirements")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            direction,
            start,
            limits,
            trailer: v.get("trailer").and_then(Value::as_bool).unwrap_or(false),
            bytes,
            items: v.get("items").and_then(Value::as_array).cloned().ok_or("missing items")?,
            end,
        })
    }

    /// Valid vectors (spec/README.md) end clean and reject nothing.
    pub fn is_valid(&self) -> bool {
        self.end == End::Clean && !self.items.iter().any(|i| i["type"] == "rejected")
    }

    /// Decodes the vector's bytes, split at `splits`.
    pub fn decode(&self, splits: &[usize]) -> (Vec<Value>, End) {
        decode_with_trailer(self.direction, self.start, self.limits, self.trailer, &self.bytes, splits)
    }
}
