//! Property tests: every message encodes and decodes back to itself, however the bytes are split.

use ferry_proto::limits::{ReadLimits, FILE_SIZE_CEILING};
use ferry_proto::vector::{client_item_json, decode, decode_with_trailer, server_item_json, Direction, End, Start};
use ferry_proto::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn name() -> impl Strategy<Value = Name> {
    // Printable names of 1..=40 bytes, including dots, spaces and non-ASCII; invalid ones filtered.
    "[a-zA-Z0-9 ._\\-é名]{1,40}".prop_filter_map("valid name", |s| Name::parse(&s).ok())
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 16]>().prop_map(Digest)
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), Just(b"EOF\0EOF".to_vec()), proptest::collection::vec(any::<u8>(), 0..300),]
}

/// A request with the data that follows it (PUT only), and the trailer after that data (a PUT
/// in the trailing form, § 6.5).
type Sent = (Request, Vec<u8>, Option<Digest>);

fn request() -> impl Strategy<Value = Sent> {
    prop_oneof![
        Just((Request::List, vec![], None)),
        Just((Request::Status, vec![], None)),
        Just((Request::Help, vec![], None)),
        Just((Request::Bye, vec![], None)),
        Just((Request::Shutdown, vec![], None)),
        name().prop_map(|n| (Request::Stat(n), vec![], None)),
        name().prop_map(|n| (Request::Delete(n), vec![], None)),
        (name(), 0..=FILE_SIZE_CEILING).prop_map(|(name, offset)| (Request::Get { name, offset }, vec![], None)),
        (name(), data(), any::<bool>(), digest()).prop_map(|(name, data, create, md5)| {
            let mode = if create { PutMode::CreateOnly } else { PutMode::Overwrite };
            let frame = FrameHead { name, size: data.len() as u64, md5 };
            (Request::Put(PutHead::leading(mode, frame)), data, None)
        }),
    ]
}

/// The requests of [`request`] and those only a server announcing `TRAILER` reads (§ 6.5).
fn request_under_trailer() -> impl Strategy<Value = Sent> {
    prop_oneof![
        request(),
        (name(), 0..=FILE_SIZE_CEILING).prop_map(|(name, offset)| (Request::Fetch { name, offset }, vec![], None)),
        (name(), data(), any::<bool>(), digest()).prop_map(|(name, data, create, md5)| {
            let mode = if create { PutMode::CreateOnly } else { PutMode::Overwrite };
            (Request::Put(PutHead::trailing(mode, name, data.len() as u64)), data, Some(md5))
        }),
    ]
}

fn token() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[!-~]{1,256}")
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..4000, 0..12).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

fn push_data(expected: &mut Vec<Value>, data: &[u8]) {
    push_data_and_trailer(expected, data, None);
}

fn push_data_and_trailer(expected: &mut Vec<Value>, data: &[u8], trailer: Option<Digest>) {
    if !data.is_empty() {
        expected.push(json!({ "type": "data", "hex": hex::encode(data) }));
    }
    if let Some(md5) = trailer {
        expected.push(json!({ "type": "trailer", "md5": md5.to_string() }));
    }
    expected.push(json!({ "type": "data_end" }));
}

/// Encodes a hello and `requests` as a client sends them, and the items a decoder must yield.
fn client_wire(hello: ClientHello, requests: Vec<Sent>) -> (Vec<u8>, Vec<Value>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let item = ClientItem::Hello(hello);
    item.encode(&mut wire);
    expected.push(client_item_json(&item));
    for (req, data, trailer) in requests {
        let item = ClientItem::Request(req.clone());
        item.encode(&mut wire);
        expected.push(client_item_json(&item));
        if let Request::Put(_) = req {
            wire.extend_from_slice(&data);
            if let Some(md5) = trailer {
                ClientItem::Trailer(md5).encode(&mut wire);
            }
            push_data_and_trailer(&mut expected, &data, trailer);
        }
    }
    (wire, expected)
}

proptest! {
    #[test]
    fn client_stream_roundtrips(
        min in 1u16..5, span in 0u16..5, token in token(),
        requests in proptest::collection::vec(request(), 0..8), splits in splits(),
    ) {
        let hello = ClientHello { min_version: min, max_version: min + span, token };
        let (wire, expected) = client_wire(hello, requests);
        let limits = ReadLimits { max_name_len: 255, max_file_size: FILE_SIZE_CEILING };
        let (items, end) = decode(Direction::ClientToServer, Start::Handshake, limits, &wire, &splits);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(items, expected);
    }

    #[test]
    fn client_stream_under_trailer_roundtrips(
        requests in proptest::collection::vec(request_under_trailer(), 0..8), splits in splits(),
    ) {
        let hello = ClientHello { min_version: 1, max_version: 1, token: None };
        let (wire, expected) = client_wire(hello, requests);
        let limits = ReadLimits { max_name_len: 255, max_file_size: FILE_SIZE_CEILING };
        let (items, end) = decode_with_trailer(Direction::ClientToServer, Start::Handshake, limits, true, &wire, &splits);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(items, expected);
    }

    /// `[TRL-1]`, `[PUT-7]`, `[REQ-2]`: a server that does not announce `TRAILER` reads the trailing
    /// forms as malformed, whatever came before them.
    #[test]
    fn trailing_requests_are_malformed_without_trailer(
        before in proptest::collection::vec(request(), 0..4), name in name(), create in any::<bool>(),
        fetch in any::<bool>(), splits in splits(),
    ) {
        let mode = if create { PutMode::CreateOnly } else { PutMode::Overwrite };
        let last = if fetch { Request::Fetch { name, offset: 0 } } else { Request::Put(PutHead::trailing(mode, name, 0)) };
        let hello = ClientHello { min_version: 1, max_version: 1, token: None };
        let (mut wire, mut expected) = client_wire(hello, before);
        last.encode(&mut wire);
        let limits = ReadLimits { max_name_len: 255, max_file_size: FILE_SIZE_CEILING };
        let (items, end) = decode(Direction::ClientToServer, Start::Handshake, limits, &wire, &splits);
        prop_assert_eq!(end, End::Error("MALFORMED".into()));
        expected.truncate(items.len());
        prop_assert_eq!(items, expected);
    }

    #[test]
    fn legacy_request_roundtrips(name in name(), splits in splits()) {
        let item = ClientItem::LegacyGet(name);
        let mut wire = Vec::new();
        item.encode(&mut wire);
        let (items, end) = decode(Direction::ClientToServer, Start::Handshake, ReadLimits::default(), &wire, &splits);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(items, vec![client_item_json(&item)]);
    }

    #[test]
    fn server_stream_roundtrips(replies in proptest::collection::vec(reply(), 0..8), hello in server_hello(), splits in splits()) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let hello = ServerItem::Hello(hello);
        hello.encode(&mut wire);
        expected.push(server_item_json(&hello));
        for (items, data, trailer) in &replies {
            for item in items {
                item.encode(&mut wire);
                expected.push(server_item_json(item));
            }
            if let Some(data) = data {
                wire.extend_from_slice(data);
                if let Some(md5) = trailer {
                    ServerItem::Trailer(*md5).encode(&mut wire);
                }
                push_data_and_trailer(&mut expected, data, *trailer);
            }
        }
        let (items, end) = decode(Direction::ServerToClient, Start::Handshake, ReadLimits::default(), &wire, &splits);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(items, expected);
    }

    #[test]
    fn legacy_reply_roundtrips(name in name(), data in data(), md5 in digest(), message in ".{0,200}", ok in any::<bool>(), splits in splits()) {
        let mut wire = Vec::new();
        let expected = if ok {
            let item = ServerItem::LegacyOk(FrameHead { name, size: data.len() as u64, md5 });
            item.encode(&mut wire);
            wire.extend_from_slice(&data);
            let mut e = vec![server_item_json(&item)];
            push_data(&mut e, &data);
            e
        } else {
            ServerItem::LegacyErrorStart.encode(&mut wire);
            wire.extend_from_slice(message.as_bytes());
            vec![json!({ "type": "legacy_error", "message": message })]
        };
        let (items, end) = decode(Direction::ServerToClient, Start::Legacy, ReadLimits::default(), &wire, &splits);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(items, expected);
    }
}

fn server_hello() -> impl Strategy<Value = ServerHello> {
    (1u16..4, 1u8..=3, any::<u32>(), 1u32..=4096, any::<u64>(), any::<[u32; 4]>()).prop_map(
        |(version, role, caps, max_name_len, max_file_size, [max_clients, idle, head, progress])| ServerHello {
            version,
            role: Role::from_wire(role).unwrap(),
            capabilities: Capabilities(caps),
            max_name_len,
            max_file_size,
            max_clients,
            idle_timeout_ms: idle,
            head_timeout_ms: head,
            progress_timeout_ms: progress,
        },
    )
}

fn entry() -> impl Strategy<Value = Entry> {
    (name(), 0..=FILE_SIZE_CEILING, any::<i64>(), proptest::option::of(digest()))
        .prop_map(|(name, size, mtime_ms, md5)| Entry { name, size, mtime_ms, md5 })
}

fn record() -> impl Strategy<Value = ConnRecord> {
    (any::<u64>(), "[!-~]{0,64}", any::<i64>(), proptest::option::of(any::<i64>()), any::<u64>(), any::<u64>())
        .prop_map(|(id, peer, connected_ms, disconnected_ms, bytes_in, bytes_out)| ConnRecord {
            id,
            peer,
            connected_ms,
            disconnected_ms,
            bytes_in,
            bytes_out,
        })
}

type Reply = (Vec<ServerItem<'static>>, Option<Vec<u8>>, Option<Digest>);

/// One whole reply: its items, the data that follows them (GET and FETCH only), and the trailer
/// after the data (a FETCH answered in the trailing form, § 7.10).
fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u16>(), ".{0,100}").prop_map(|(code, m)| (
            vec![ServerItem::Error(ErrorReply::new(ErrorCode(code), m))],
            None,
            None
        )),
        proptest::collection::vec(entry(), 0..5).prop_map(|entries| {
            let mut items = vec![ServerItem::ListStart { count: entries.len() as u32 }];
            items.extend(entries.into_iter().map(ServerItem::Entry));
            (items, None, None)
        }),
        entry().prop_map(|e| (vec![ServerItem::Stat(e)], None, None)),
        (name(), data(), digest(), any::<prop::sample::Index>()).prop_map(|(name, data, md5, at)| {
            let offset = at.index(data.len() + 1);
            let frame = FrameHead { name, size: data.len() as u64, md5 };
            (vec![ServerItem::GetHead { offset: offset as u64, frame }], Some(data[offset..].to_vec()), None)
        }),
        (name(), data(), digest()).prop_map(|(name, data, md5)| {
            (vec![ServerItem::FetchTrailing { name, size: data.len() as u64 }], Some(data), Some(md5))
        }),
        any::<bool>().prop_map(|replaced| (vec![ServerItem::PutOk { replaced }], None, None)),
        Just((vec![ServerItem::DeleteOk], None, None)),
        Just((vec![ServerItem::ByeOk], None, None)),
        Just((vec![ServerItem::ShutdownOk], None, None)),
        ".{0,300}".prop_map(|t| (vec![ServerItem::Help(t)], None, None)),
        proptest::collection::vec(record(), 0..4).prop_map(|records| {
            let mut items = vec![ServerItem::StatusStart { count: records.len() as u32 }];
            items.extend(records.into_iter().map(ServerItem::Connection));
            (items, None, None)
        }),
    ]
}
