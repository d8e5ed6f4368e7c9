//! The server state machine driven in memory on simulated time (no sockets, no clock): each test
//! names the PROTOCOL.md requirement it checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::client::{ClientConfig, ClientConnection};
use ferry_proto::limits::{ReadLimits, PROGRESS_UNIT};
use ferry_proto::memory::{MemoryConnection, MemoryStore};
use ferry_proto::server::ServerConfig;
use ferry_proto::vector::{decode, Direction, Start};
use ferry_proto::*;
use serde_json::{json, Value};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn hello(token: Option<&str>) -> Vec<u8> {
    let c = ClientConnection::new(ClientConfig { token: token.map(str::to_owned), ..Default::default() }).unwrap();
    c.pending_output().to_vec()
}

fn put(mode: PutMode, n: &str, data: &[u8], md5: Digest) -> Vec<u8> {
    let mut out = Vec::new();
    Request::Put(PutHead::leading(mode, FrameHead { name: name(n), size: data.len() as u64, md5 })).encode(&mut out);
    out.extend_from_slice(data);
    out
}

fn req(r: Request) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out
}

/// Runs `input` through a fresh connection at time `t0`; returns the decoded replies (hello
/// dropped) and whether the connection closed.
fn run(config: ServerConfig, store: &mut MemoryStore, input: &[u8]) -> (Vec<Value>, bool) {
    let t0 = Instant::now();
    let mut conn = MemoryConnection::new(Arc::new(config), t0);
    let used = conn.feed(store, input, t0);
    let closed = conn.connection().is_closed();
    assert!(closed || used == input.len(), "input left unread on an open connection");
    let out = conn.take_output();
    let (mut items, _) = decode(Direction::ServerToClient, Start::Handshake, ReadLimits::default(), &out, &[]);
    if items.first().is_some_and(|i| i["type"] == "hello_ok") {
        items.remove(0);
    }
    (items, closed)
}

fn codes(items: &[Value]) -> Vec<Value> {
    items.iter().map(|i| if i["type"] == "error" { i["code"].clone() } else { i["type"].clone() }).collect()
}

#[test]
fn a_whole_session_in_memory_req_1_put_2_get_1() {
    let mut store = MemoryStore::default();
    let data = b"EOF\0binary";
    let mut input = hello(None);
    input.extend(req(Request::List));
    input.extend(put(PutMode::Overwrite, "a.bin", data, Digest::of(data)));
    input.extend(req(Request::Stat(name("a.bin"))));
    input.extend(req(Request::Get { name: name("a.bin"), offset: 0 }));
    input.extend(req(Request::Get { name: name("a.bin"), offset: 4 }));
    input.extend(req(Request::Get { name: name("a.bin"), offset: 10 }));
    input.extend(req(Request::Delete(name("a.bin"))));
    input.extend(req(Request::Bye));
    let (items, closed) = run(ServerConfig::default(), &mut store, &input);
    assert!(closed, "[BYE-1] the server closes after BYE");
    assert_eq!(
        codes(&items),
        [
            "list_start",
            "put_ok",
            "stat_ok",
            "get_ok",
            "data",
            "data_end",
            "get_ok",
            "data",
            "data_end",
            "get_ok",
            "data_end",
            "delete_ok",
            "bye_ok"
        ]
    );
    assert_eq!(items[4]["hex"], hex::encode(data));
    assert_eq!(items[7]["hex"], hex::encode(&data[4..]), "[GET-1] resumed data starts at the offset");
    assert_eq!(items[6]["md5"], Digest::of(data).to_string(), "[GET-2] the digest covers the whole file");
    assert!(store.files.is_empty());
}

#[test]
fn a_wrong_digest_stores_nothing_and_the_connection_survives_put_3() {
    let mut store = MemoryStore::default();
    let mut input = hello(None);
    input.extend(put(PutMode::Overwrite, "a", b"hello", Digest::of(b"other")));
    input.extend(req(Request::Stat(name("a"))));
    let (items, closed) = run(ServerConfig::default(), &mut store, &input);
    assert_eq!(codes(&items), [json!(0x0204), json!(0x0200)]);
    assert!(!closed && store.files.is_empty());
}

#[test]
fn a_refused_put_has_its_data_discarded_put_5_role_1() {
    let mut store = MemoryStore::default();
    let config = ServerConfig { anonymous: Some(Role::Read), ..Default::default() };
    let mut input = hello(None);
    // The data contains what would be a BYE if it were read as a request.
    input.extend(put(PutMode::Overwrite, "a", &[0x08; 3], Digest::of(&[0x08; 3])));
    input.extend(req(Request::Delete(name("a"))));
    input.extend(req(Request::List));
    let (items, closed) = run(config, &mut store, &input);
    assert_eq!(codes(&items), [json!(0x0202), json!(0x0202), json!("list_start")]);
    assert!(!closed && store.files.is_empty());
}

#[test]
fn read_only_refuses_writes_whatever_the_role_role_2() {
    let mut store = MemoryStore::default();
    let config = ServerConfig { read_only: true, anonymous: Some(Role::Admin), ..Default::default() };
    let mut input = hello(None);
    input.extend(put(PutMode::Overwrite, "a", b"x", Digest::of(b"x")));
    input.extend(req(Request::Delete(name("a"))));
    let (items, _) = run(config, &mut store, &input);
    assert_eq!(codes(&items), [json!(0x0202), json!(0x0202)]);
}

#[test]
fn create_only_refuses_an_existing_name_store_6() {
    let mut store = MemoryStore::default();
    store.files.insert(name("a"), b"old".to_vec());
    let mut input = hello(None);
    input.extend(put(PutMode::CreateOnly, "a", b"new", Digest::of(b"new")));
    input.extend(put(PutMode::Overwrite, "a", b"new", Digest::of(b"new")));
    let (items, _) = run(ServerConfig::default(), &mut store, &input);
    assert_eq!(codes(&items), [json!(0x0203), json!("put_ok")]);
    assert_eq!(items[1]["replaced"], true);
    assert_eq!(store.files[&name("a")], b"new");
}

#[test]
fn bad_names_are_refused_and_the_connection_goes_on_name_7() {
    let mut store = MemoryStore::default();
    let mut input = hello(None);
    for raw in [&b".."[..], b"a/b", b"a\0b", b".ferry-x", b""] {
        input.push(0x02);
        input.extend((raw.len() as u32).to_be_bytes());
        input.extend(raw);
    }
    input.extend(req(Request::Help));
    let (items, closed) = run(ServerConfig::default(), &mut store, &input);
    assert_eq!(codes(&items)[..5], vec![json!(0x0201); 5]);
    assert_eq!(items[5]["type"], "help_ok");
    assert!(!closed);
}

#[test]
fn fatal_errors_close_and_later_requests_go_unanswered_req_2_req_5() {
    let mut store = MemoryStore::default();
    let mut input = hello(None);
    input.push(0x0A);
    input.extend(req(Request::List));
    let (items, closed) = run(ServerConfig::default(), &mut store, &input);
    assert_eq!(codes(&items), [json!(0x0100)]);
    assert!(closed);
}

#[test]
fn tokens_map_to_roles_and_unknown_ones_are_refused_auth_1_auth_2() {
    let config = ServerConfig {
        anonymous: None,
        tokens: [("s3cret".to_owned(), Role::Admin)].into_iter().collect(),
        ..Default::default()
    };
    let mut store = MemoryStore::default();
    let (items, closed) = run(config.clone(), &mut store, &hello(Some("wrong")));
    assert_eq!((codes(&items), closed), (vec![json!(0x0102)], true));
    let (items, closed) = run(config.clone(), &mut store, &hello(None));
    assert_eq!((codes(&items), closed), (vec![json!(0x0102)], true));
    let mut input = hello(Some("s3cret"));
    input.extend(req(Request::Shutdown));
    let (items, closed) = run(config, &mut store, &input);
    assert_eq!((codes(&items), closed), (vec![json!("shutdown_ok")], true));
    assert!(store.shutdown_requested, "[SHUT-1]");
}

#[test]
fn shutdown_needs_admin_shut_2() {
    let mut store = MemoryStore::default();
    let mut input = hello(None);
    input.extend(req(Request::Shutdown));
    input.extend(req(Request::List));
    let (items, closed) = run(ServerConfig::default(), &mut store, &input);
    assert_eq!(codes(&items), [json!(0x0202), json!("list_start")]);
    assert!(!closed && !store.shutdown_requested);
}

#[test]
fn no_common_version_is_refused_hello_5() {
    let mut store = MemoryStore::default();
    let mut input = Vec::new();
    ClientHello { min_version: 2, max_version: 3, token: None }.encode(&mut input);
    let (items, closed) = run(ServerConfig::default(), &mut store, &input);
    assert_eq!((codes(&items), closed), (vec![json!(0x0101)], true));
}

#[test]
fn deadlines_on_simulated_time_time_1_time_2_time_7_time_9() {
    let config = Arc::new(ServerConfig {
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Some(Duration::from_secs(30)),
        head_timeout: Duration::from_secs(10),
        progress_timeout: Duration::from_secs(20),
        ..Default::default()
    });
    let t0 = Instant::now();
    let mut store = MemoryStore::default();

    // Handshake: half a hello, then silence.
    let mut c = MemoryConnection::new(config.clone(), t0);
    c.feed(&mut store, b"FER", t0);
    assert_eq!(c.connection().poll_timeout(), Some(t0 + Duration::from_secs(5)));
    assert!(!c.connection_mut().handle_timeout(t0 + Duration::from_secs(4)));
    assert!(c.connection_mut().handle_timeout(t0 + Duration::from_secs(5)));
    assert!(c.connection().is_closed());
    assert_eq!(c.connection().close_reason(), Some(ErrorCode::TIMEOUT), "[TIME-4]");

    // Idle: a hello, then nothing.
    let mut c = MemoryConnection::new(config.clone(), t0);
    c.feed(&mut store, &hello(None), t0);
    assert_eq!(c.connection().poll_timeout(), Some(t0 + Duration::from_secs(30)));

    // Head: a STAT trickling one byte a second never gets past the head deadline, however recent
    // its last byte (`[TIME-7]`).
    let mut input = Vec::new();
    Request::Stat(Name::parse(&"n".repeat(200)).unwrap()).encode(&mut input);
    let mut c = MemoryConnection::new(config.clone(), t0);
    c.feed(&mut store, &hello(None), t0);
    let start = t0 + Duration::from_secs(1);
    let mut now = start;
    let mut sent = 0;
    while !c.connection().is_closed() {
        assert!(now <= start + Duration::from_secs(10), "the head deadline did not fire");
        sent += c.feed(&mut store, &input[sent..sent + 1], now);
        now += Duration::from_secs(1);
        c.connection_mut().handle_timeout(now);
    }
    assert!(sent < input.len());

    // PUT data: a trickle below a unit per progress deadline is cut (`[TIME-9]`), and the upload
    // leaves nothing (`[STORE-2]`).
    let data = vec![b'x'; 3 * PROGRESS_UNIT as usize];
    let input = put(PutMode::Overwrite, "slow", &data, Digest::of(&data));
    let head_len = input.len() - data.len();
    let mut c = MemoryConnection::new(config.clone(), t0);
    c.feed(&mut store, &hello(None), t0);
    assert_eq!(c.feed(&mut store, &input[..head_len], t0), head_len);
    assert_eq!(c.connection().poll_timeout(), Some(t0 + Duration::from_secs(20)), "from the head's end");
    let mut sent = head_len;
    let mut now = t0;
    while !c.connection().is_closed() {
        assert!(now <= t0 + Duration::from_secs(20), "the progress deadline did not fire");
        sent += c.feed(&mut store, &input[sent..sent + 1000], now);
        now += Duration::from_secs(1);
        c.connection_mut().handle_timeout(now);
    }
    assert!(store.files.is_empty(), "[STORE-2] a PUT cut off by the deadline leaves nothing");

    // PUT data moving a unit every 15 s: slow, but it never stalls, so it completes however long
    // it takes in all — far past the head and progress deadlines.
    let mut c = MemoryConnection::new(config, t0);
    c.feed(&mut store, &hello(None), t0);
    c.feed(&mut store, &input[..head_len], t0);
    let mut now = t0;
    for chunk in input[head_len..].chunks(PROGRESS_UNIT as usize) {
        now += Duration::from_secs(15);
        assert!(!c.connection_mut().handle_timeout(now));
        c.feed(&mut store, chunk, now);
    }
    assert!(!c.connection().is_closed());
    assert_eq!(store.files.get(&Name::parse("slow").unwrap()), Some(&data));
}

/// Feeds `input` to a bare machine, answering what it asks like a host that never reads the
/// socket: nothing is consumed. Returns the input bytes used.
fn feed_unread(conn: &mut ferry_proto::server::ServerConnection, input: &[u8], now: Instant) -> usize {
    let mut used = 0;
    loop {
        let (n, ev) = conn.handle_input(&input[used..], now);
        used += n;
        match ev {
            Some(ferry_proto::server::Event::Command(ferry_proto::server::Command::List)) => {
                let entries: Vec<_> = (0..2000)
                    .map(|i| ferry_proto::Entry {
                        name: Name::parse(&format!("file-{i:05}")).unwrap(),
                        size: 1,
                        mtime_ms: 0,
                        md5: None,
                    })
                    .collect();
                conn.respond_list(entries, now);
            }
            Some(_) => {}
            None => return used,
        }
    }
}

#[test]
fn pipelined_requests_wait_while_replies_are_unread_res_2() {
    let config = Arc::new(ServerConfig::default());
    let t0 = Instant::now();
    let mut conn = ferry_proto::server::ServerConnection::new(config.clone(), t0);
    let mut input = hello(None);
    input.extend(std::iter::repeat_n(0x07u8, 64 * 1024)); // 64 Ki HELPs: ~40 MB of replies
    let used = feed_unread(&mut conn, &input, t0);
    let held = conn.pending_output().len();
    assert!(held < config.max_output + 4096, "[RES-2] {held} reply bytes held");
    assert!(used < input.len() / 10, "[RES-2] the machine took {used} bytes while no reply was read");
    assert!(!conn.wants_input());
    assert_eq!(conn.send_deadline(), Some(t0 + config.progress_timeout), "[TIME-5] the clock runs");

    // Once the client reads, the machine goes on, and answers every request in order.
    let mut out = Vec::new();
    let mut now = t0;
    let mut used = used;
    while used < input.len() || !conn.pending_output().is_empty() {
        now += Duration::from_millis(1);
        out.extend_from_slice(conn.pending_output());
        let n = conn.pending_output().len();
        conn.consume_output(n, now);
        used += feed_unread(&mut conn, &input[used..], now);
        assert!(conn.pending_output().len() < config.max_output + 4096);
    }
    let (items, _) = decode(Direction::ServerToClient, Start::Handshake, ReadLimits::default(), &out, &[]);
    assert_eq!(items.iter().filter(|i| i["type"] == "help_ok").count(), 64 * 1024, "[REQ-1] every one answered");
    assert!(conn.send_deadline().is_none(), "nothing waits: no clock");
}

#[test]
fn a_long_list_is_produced_as_the_client_takes_it_res_3_time_5() {
    let config = Arc::new(ServerConfig { max_output: 4096, ..Default::default() });
    let t0 = Instant::now();
    let mut conn = ferry_proto::server::ServerConnection::new(config.clone(), t0);
    let mut input = hello(None);
    let hello_reply_len = {
        feed_unread(&mut conn, &input, t0);
        let n = conn.pending_output().len();
        conn.consume_output(n, t0);
        n
    };
    assert!(hello_reply_len > 0);
    input.clear();
    input.push(0x01); // LIST: 2000 entries, ~60 KB
    input.push(0x07); // then HELP, which must wait for the whole LIST
    let used = feed_unread(&mut conn, &input, t0);
    assert_eq!(used, 1, "HELP waits behind the LIST");
    assert!(conn.pending_output().len() < 4096 + 100, "[RES-3] not built whole");

    // The client takes a trickle: 1000 bytes every 10 s. Less than a unit per progress deadline.
    let mut now = t0;
    let mut taken = Vec::new();
    loop {
        let deadline = conn.send_deadline().expect("bytes wait: the clock runs");
        assert!(deadline <= t0 + config.progress_timeout, "[TIME-5] a trickle does not move the clock");
        now += Duration::from_secs(10);
        if now >= deadline {
            break;
        }
        let out = conn.pending_output();
        let n = out.len().min(1000);
        taken.extend_from_slice(&out[..n]);
        conn.consume_output(n, now);
    }

    // A client that reads at speed gets the whole reply, then the HELP.
    let mut conn = ferry_proto::server::ServerConnection::new(config, t0);
    feed_unread(&mut conn, &hello(None), t0);
    let n = conn.pending_output().len();
    conn.consume_output(n, t0);
    let mut out = Vec::new();
    let mut used = 0;
    while used < input.len() || !conn.pending_output().is_empty() {
        used += feed_unread(&mut conn, &input[used..], t0);
        out.extend_from_slice(conn.pending_output());
        let n = conn.pending_output().len();
        conn.consume_output(n, t0);
    }
    let (items, _) = decode(Direction::ServerToClient, Start::Session, ReadLimits::default(), &out, &[]);
    let entries = items.iter().filter(|i| i["type"] == "entry").count();
    assert_eq!(entries, 2000);
    assert_eq!(items.first().map(|i| i["type"].clone()), Some(json!("list_start")));
    assert_eq!(items.last().map(|i| i["type"].clone()), Some(json!("help_ok")), "[REQ-4] in order");
}

#[test]
fn the_drain_finishes_a_transfer_then_closes_shut_3() {
    let config = Arc::new(ServerConfig::default());
    let t0 = Instant::now();
    let mut store = MemoryStore::default();
    let data = vec![7u8; 1000];
    let upload = put(PutMode::Overwrite, "big", &data, Digest::of(&data));

    let mut idle = MemoryConnection::new(config.clone(), t0);
    idle.feed(&mut store, &hello(None), t0);
    let mut busy = MemoryConnection::new(config, t0);
    busy.feed(&mut store, &hello(None), t0);
    busy.feed(&mut store, &upload[..500], t0);

    idle.connection_mut().begin_shutdown(t0);
    busy.connection_mut().begin_shutdown(t0);
    assert!(idle.connection().is_closed(), "an idle connection is told at once");
    assert!(!busy.connection().is_closed(), "[SHUT-4] a transfer in flight is not cut");
    busy.feed(&mut store, &upload[500..], t0);
    assert!(busy.connection().is_closed());
    let (items, _) =
        decode(Direction::ServerToClient, Start::Handshake, ReadLimits::default(), &busy.take_output(), &[]);
    assert_eq!(codes(&items[1..]), [json!("put_ok"), json!(0x0104)]);
    assert_eq!(store.files[&name("big")], data);
}

#[test]
fn eof_mid_upload_publishes_nothing_store_2() {
    let t0 = Instant::now();
    let mut store = MemoryStore::default();
    let mut c = MemoryConnection::new(Arc::new(ServerConfig::default()), t0);
    c.feed(&mut store, &hello(None), t0);
    let upload = put(PutMode::Overwrite, "cut", b"0123456789", Digest::of(b"0123456789"));
    let used = c.feed(&mut store, &upload[..upload.len() - 1], t0);
    assert!(!c.connection_mut().handle_eof(&upload[used..upload.len() - 1]), "EOF mid-message is not clean");
    assert!(store.files.is_empty());
}

#[test]
fn legacy_profile_serves_one_download_and_closes_leg_1_leg_3() {
    let mut store = MemoryStore::default();
    store.files.insert(name("old.txt"), b"legacy".to_vec());
    let mut input = Vec::new();
    ClientItem::LegacyGet(name("old.txt")).encode(&mut input);
    let t0 = Instant::now();
    let mut c = MemoryConnection::new(Arc::new(ServerConfig::default()), t0);
    c.feed(&mut store, &input, t0);
    assert!(c.connection().is_closed());
    let (items, _) = decode(Direction::ServerToClient, Start::Legacy, ReadLimits::default(), &c.take_output(), &[]);
    assert_eq!(items[0]["type"], "legacy_ok");
    assert_eq!(items[1]["hex"], hex::encode(b"legacy"));

    for (config, file) in [
        (ServerConfig::default(), "missing"),
        (ServerConfig { capabilities: Capabilities::RESUME, ..Default::default() }, "old.txt"),
    ] {
        let mut input = Vec::new();
        ClientItem::LegacyGet(name(file)).encode(&mut input);
        let mut c = MemoryConnection::new(Arc::new(config), t0);
        c.feed(&mut store, &input, t0);
        assert!(c.connection().is_closed(), "[LEG-5]");
        let (items, _) = decode(Direction::ServerToClient, Start::Legacy, ReadLimits::default(), &c.take_output(), &[]);
        assert_eq!(items[0]["type"], "legacy_error", "{file}");
    }
}

#[test]
fn client_and_server_machines_agree_in_memory() {
    // A pair, as quinn tests do: the client machine's bytes go to the server machine and back.
    let t0 = Instant::now();
    let mut store = MemoryStore::default();
    let mut server = MemoryConnection::new(Arc::new(ServerConfig::default()), t0);
    let mut client = ClientConnection::new(ClientConfig::default()).unwrap();
    let data = b"pipelined";
    client
        .send(&Request::Put(PutHead::leading(
            PutMode::CreateOnly,
            FrameHead { name: name("p"), size: 9, md5: Digest::of(data) },
        )))
        .unwrap();
    client.send_data(data).unwrap();
    client.send(&Request::Get { name: name("p"), offset: 0 }).unwrap();
    client.send(&Request::Status).unwrap();
    client.send(&Request::Bye).unwrap();
    assert!(client.send(&Request::List).is_err(), "[BYE-2] nothing after BYE");

    let wire = client.pending_output().to_vec();
    server.feed(&mut store, &wire, t0);
    let reply = server.take_output();
    let mut seen = Vec::new();
    let mut pos = 0;
    loop {
        let answering = client.answering();
        let (n, item) = client.handle_input(&reply[pos..]).unwrap();
        pos += n;
        match item {
            Some(item) => seen.push((answering, ferry_proto::vector::server_item_json(&item)["type"].clone())),
            None => break,
        }
    }
    client.handle_eof(&reply[pos..]).unwrap();
    let kinds: Vec<_> = seen.iter().map(|(k, t)| (k.map(|k| k.as_str()), t.as_str().unwrap().to_owned())).collect();
    assert_eq!(
        kinds,
        [
            (Some("PUT"), "hello_ok".into()),
            (Some("PUT"), "put_ok".into()),
            (Some("GET"), "get_ok".into()),
            (Some("GET"), "data".into()),
            (Some("GET"), "data_end".into()),
            (Some("STATUS"), "status_start".into()),
            (Some("BYE"), "bye_ok".into()),
        ]
    );
}

#[test]
fn a_late_host_answer_cannot_reopen_a_closed_connection_req_5() {
    // Review finding: a PUT decision arriving after the deadline closed the connection used to
    // reopen it in release builds and store the file.
    let config = Arc::new(ServerConfig { progress_timeout: Duration::from_secs(1), ..Default::default() });
    let t0 = Instant::now();
    let mut conn = ferry_proto::server::ServerConnection::new(config, t0);
    let mut input = hello(None);
    // The PUT's head (50 bytes) but none of its data: the host is asked to decide.
    input.extend(&put(PutMode::Overwrite, "late", b"data", Digest::of(b"data"))[..50]);
    let mut used = 0;
    let mut asked = false;
    loop {
        let (n, ev) = conn.handle_input(&input[used..], t0);
        used += n;
        match ev {
            Some(ferry_proto::server::Event::Command(ferry_proto::server::Command::Put(_))) => asked = true,
            Some(_) => {}
            None => break,
        }
    }
    assert!(asked);
    assert!(conn.handle_timeout(t0 + Duration::from_secs(2)));
    conn.accept_put();
    conn.respond_error(ErrorCode::EXISTS, "late", t0);
    assert!(conn.is_closed());
    assert!(!conn.wants_input());
}

#[test]
fn the_client_matches_replies_to_what_it_asked_get_1_shut_2_hello_10() {
    let server_bytes = |items: &[ServerItem<'_>]| {
        let mut out = Vec::new();
        for i in items {
            i.encode(&mut out);
        }
        out
    };
    let hello_ok = ServerItem::Hello(ServerHello {
        version: 1,
        role: Role::Write,
        capabilities: Capabilities::ALL_V1,
        max_name_len: 255,
        max_file_size: 1 << 30,
        max_clients: 0,
        idle_timeout_ms: 0,
        head_timeout_ms: 0,
        progress_timeout_ms: 0,
    });
    let feed = |c: &mut ClientConnection, bytes: &[u8]| -> Result<(), ferry_proto::client::ClientError> {
        let mut pos = 0;
        while let (n, Some(_)) = c.handle_input(&bytes[pos..])? {
            pos += n;
        }
        Ok(())
    };

    // A GET answered about another file, or from another offset, is refused.
    let mut c = ClientConnection::new(ClientConfig::default()).unwrap();
    c.send(&Request::Get { name: name("a"), offset: 3 }).unwrap();
    let frame = FrameHead { name: name("b"), size: 5, md5: Digest::of(b"hello") };
    let wire = server_bytes(&[hello_ok.clone(), ServerItem::GetHead { offset: 3, frame }]);
    assert!(feed(&mut c, &wire).is_err());

    // A refused SHUTDOWN leaves the connection usable.
    let mut c = ClientConnection::new(ClientConfig::default()).unwrap();
    c.send(&Request::Shutdown).unwrap();
    let refused = ServerItem::Error(ErrorReply::new(ErrorCode::FORBIDDEN, "no"));
    feed(&mut c, &server_bytes(&[hello_ok, refused])).unwrap();
    assert!(c.send(&Request::List).is_ok());

    // Any error instead of the hello ends the connection.
    let mut c = ClientConnection::new(ClientConfig::default()).unwrap();
    feed(&mut c, &server_bytes(&[ServerItem::Error(ErrorReply::new(ErrorCode::NOT_FOUND, "odd"))])).unwrap();
    assert!(c.is_closed());
}
