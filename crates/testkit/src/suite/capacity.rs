//! § 12: capacity and deadlines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ferry_proto::{ErrorCode, PutMode};

use super::{assert_deadline, trickle, SHORT};
use crate::client::{wire, ConnectOptions, IO_TIMEOUT};
use crate::{content, md5, wait_until, Client, StartFn, TestServer};

/// Connects from `local_ip` and, sending nothing, expects `BUSY` and the close.
#[track_caller]
fn assert_busy(addr: SocketAddr, local_ip: Option<IpAddr>) -> Client {
    let mut c = Client::connect_with(addr, ConnectOptions { local_ip, ..ConnectOptions::default() });
    let reply = c.read_reply();
    assert_eq!(reply.error_code(), Some(ErrorCode::BUSY), "[CAP-1] BUSY before any hello: {reply:?}");
    c.expect_closed(IO_TIMEOUT);
    c
}

/// Connects and completes a handshake, or returns the error the server answered with.
fn try_hello(addr: SocketAddr, local_ip: Option<IpAddr>) -> Result<Client, ErrorCode> {
    let mut c = Client::start_with(addr, None, ConnectOptions { local_ip, ..ConnectOptions::default() });
    let reply = c.read_reply();
    match reply.error_code() {
        None => Ok(c),
        Some(code) => Err(code),
    }
}

/// [CAP-1] [CAP-2] [LIM-1]: with `max_clients` 2 and two clients served, a third connection gets
/// `BUSY` and the close at once, before it sends its hello. Refused connections, even left open
/// by their clients, take no slot: when a served client leaves, a new one is served.
pub fn clients_over_max_clients_get_busy(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.max_clients = 2);
    let first = server.client();
    let mut second = server.client();
    let refused: Vec<Client> = (0..4).map(|_| assert_busy(server.addr, None)).collect();
    first.bye();
    // The slot frees once the server has seen the client go: retry until it has.
    let mut third = None;
    assert!(
        wait_until(IO_TIMEOUT, || {
            third = try_hello(server.addr, None).ok();
            third.is_some()
        }),
        "[CAP-2] a slot frees when a client leaves, refused connections notwithstanding"
    );
    let mut third = third.unwrap();
    assert!(third.list().is_empty());
    assert!(second.list().is_empty());
    assert_busy(server.addr, None);
    drop(refused);
}

/// [CAP-1]: with `max_per_ip` 2, a third connection from 127.0.0.1 gets `BUSY` while connections
/// from 127.0.0.2 are still served, up to their own limit.
pub fn clients_over_the_per_address_limit_get_busy(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.max_per_ip = 2;
        s.max_clients = 10;
    });
    let other = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let _a = server.client();
    let _b = server.client();
    assert_busy(server.addr, None);
    let mut c = try_hello(server.addr, other).expect("[CAP-1] another address is served");
    let _d = try_hello(server.addr, other).expect("[CAP-1] another address is served");
    assert_busy(server.addr, other);
    assert!(c.list().is_empty());
}

/// [TIME-1] [TIME-4]: a connection whose hello is not complete within the handshake deadline
/// (300 ms) gets `TIMEOUT` and is closed: silent, after a partial hello, or sending its hello one
/// byte every 50 ms.
pub fn handshake_deadline_closes_silent_and_slow_clients(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.handshake_timeout = SHORT);
    let start = Instant::now();
    let mut silent = server.connect();
    silent.expect_fatal(ErrorCode::TIMEOUT);
    assert_deadline("[TIME-1] silent", start.elapsed(), SHORT);

    let start = Instant::now();
    let mut partial = server.connect();
    partial.send_raw(b"FER");
    partial.expect_fatal(ErrorCode::TIMEOUT);
    assert_deadline("[TIME-1] partial hello", start.elapsed(), SHORT);

    let mut slow = server.connect();
    let (reply, elapsed) = trickle(&mut slow, &wire::hello_v1(), Duration::from_millis(50));
    let reply = reply.expect("[TIME-4] TIMEOUT before the close");
    assert_eq!(reply.error_code(), Some(ErrorCode::TIMEOUT), "[TIME-1] {reply:?}");
    assert_deadline("[TIME-1] trickled hello", elapsed, SHORT);
    slow.expect_closed(IO_TIMEOUT);
    server.client().bye();
}

/// [TIME-2] [TIME-4]: a connection that sends nothing for the idle deadline (300 ms) after a reply
/// gets `TIMEOUT` and is closed; one that sends a request every 100 ms lives on, since the
/// deadline counts from the previous reply.
pub fn idle_deadline_closes_quiet_connections(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.idle_timeout = Some(SHORT));
    let start = Instant::now();
    let mut quiet = server.client();
    quiet.expect_fatal(ErrorCode::TIMEOUT);
    assert_deadline("[TIME-2] after the hello", start.elapsed(), SHORT);

    let mut busy = server.client();
    let began = Instant::now();
    while began.elapsed() < SHORT * 3 {
        busy.help();
        busy.expect_silence(SHORT / 3);
    }
    busy.help();
    let start = Instant::now();
    busy.expect_fatal(ErrorCode::TIMEOUT);
    assert_deadline("[TIME-2] after the last reply", start.elapsed(), SHORT);
}

/// [TIME-7] [TIME-9] [TIME-4] [STORE-2]: a request head not complete within the head deadline
/// (300 ms), and PUT data that moves less than a `PROGRESS_UNIT` within the progress deadline
/// (300 ms), get `TIMEOUT` and the close however steadily their bytes trickle in (one every
/// 50 ms); the upload is discarded. The head deadline starts at the request's first byte, not at
/// the previous reply; PUT data that keeps moving is never cut, however long it takes in all.
pub fn head_and_progress_deadlines_cut_a_trickling_client(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| {
        s.head_timeout = SHORT;
        s.progress_timeout = SHORT;
        s.idle_timeout = Some(Duration::from_secs(30));
    });
    // A PUT whose head arrives at once and whose data trickles.
    let data = content(90, 1_000);
    let mut c = server.client();
    let start = Instant::now();
    c.put_head(PutMode::Overwrite, "slow.bin", data.len() as u64, md5(&data));
    let (reply, _) = trickle(&mut c, &data, Duration::from_millis(50));
    let elapsed = start.elapsed();
    let reply = reply.expect("[TIME-4] TIMEOUT before the close");
    assert_eq!(reply.error_code(), Some(ErrorCode::TIMEOUT), "[TIME-9] {reply:?}");
    assert_deadline("[TIME-9] trickled PUT data", elapsed, SHORT);
    c.expect_closed(IO_TIMEOUT);
    server.assert_no_temp_files(IO_TIMEOUT);
    assert!(server.read_file("slow.bin").is_none(), "[STORE-2]");

    // A STAT whose head trickles.
    let mut c = server.client();
    let (reply, elapsed) = trickle(&mut c, &wire::stat(b"a-name-that-takes-a-while"), Duration::from_millis(50));
    assert_eq!(reply.and_then(|r| r.error_code()), Some(ErrorCode::TIMEOUT), "[TIME-7]");
    assert_deadline("[TIME-7] trickled STAT", elapsed, SHORT);

    // Idle longer than the head deadline, then a quick request: served.
    let mut c = server.client();
    c.expect_silence(SHORT + SHORT / 2);
    assert!(!c.put_ok("quick.bin", &data));

    // A slow but steady upload: a unit every 100 ms, 1 s in all, three times the deadlines.
    let unit = ferry_proto::limits::PROGRESS_UNIT as usize;
    let data = content(91, 10 * unit);
    let mut c = server.client();
    c.put_head(PutMode::Overwrite, "steady.bin", data.len() as u64, md5(&data));
    for chunk in data.chunks(unit) {
        c.expect_silence(Duration::from_millis(100));
        c.send_data(chunk);
    }
    assert!(!c.read_reply().replaced(), "[TIME-9] a transfer that keeps moving is not cut");
    assert_eq!(server.read_file("steady.bin"), Some(data));
}

/// [TIME-5]: a client that stops reading a download is dropped at the progress deadline
/// (300 ms): STATUS soon shows its connection closed. So is one that reads a trickle, less than
/// a `PROGRESS_UNIT` per deadline: partial progress does not restart the clock.
pub fn clients_that_stop_reading_are_dropped(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.progress_timeout = SHORT);
    // 64 MiB, sparse: far more than the socket buffers hold.
    std::fs::File::create(server.path("big.bin")).unwrap().set_len(64 << 20).unwrap();
    let mut watcher = server.client();
    let mut stalled = server.client_with(ConnectOptions { recv_buffer: Some(16 * 1024), ..ConnectOptions::default() });
    let peer = stalled.local_addr().to_string();
    stalled.send(&ferry_proto::Request::Get { name: crate::name("big.bin"), offset: 0 });
    let dropped = wait_until(Duration::from_secs(15), || {
        watcher.status().iter().any(|r| r.peer == peer && r.disconnected_ms.is_some())
    });
    assert!(dropped, "[TIME-5] the stalled client is still connected");
    drop(stalled);

    let mut trickler = server.client_with(ConnectOptions { recv_buffer: Some(16 * 1024), ..ConnectOptions::default() });
    let peer = trickler.local_addr().to_string();
    trickler.send(&ferry_proto::Request::Get { name: crate::name("big.bin"), offset: 0 });
    let start = Instant::now();
    let mut buf = [0u8; 512];
    let mut closed = false;
    // 512 bytes every 50 ms: 3 KiB per deadline, far below a unit.
    while start.elapsed() < Duration::from_secs(10) {
        // The pace of the trickle is the test's input, not a wait for an event.
        std::thread::sleep(Duration::from_millis(50));
        match std::io::Read::read(&mut trickler.stream(), &mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
        if watcher.status().iter().any(|r| r.peer == peer && r.disconnected_ms.is_some()) {
            closed = true;
            break;
        }
    }
    assert!(closed, "[TIME-5] a client reading a trickle was held for {:?}", start.elapsed());
}

/// [RES-1] [RES-2] [RES-3] [RES-4] [RES-5]: clients that pipeline requests with long replies (HELP,
/// LIST, STATUS) and read nothing stop being read after a bounded amount — their writes
/// block — while a fresh client is served at once; once one of them reads, every request it
/// sent is answered, in order.
pub fn pipelined_requests_without_reading_are_held_back(engine: StartFn) {
    let server = TestServer::start(engine);
    for i in 0..200 {
        std::fs::write(server.path(&format!("file-{i:03}")), b"x").unwrap();
    }
    let opts = ConnectOptions { recv_buffer: Some(16 * 1024), ..ConnectOptions::default() };
    let mut hostile: Vec<(Client, usize)> = Vec::new();
    for opcode in [0x07u8, 0x01, 0x06] {
        let mut c = server.client_with(opts);
        let sent = c.send_until_blocked(&[opcode], 32 << 20, Duration::from_millis(500));
        assert!(sent < 32 << 20, "[RES-2] the server took 32 MiB of pipelined {opcode:#04x} without a reply read");
        hostile.push((c, sent));
    }
    // A fresh client while the three are held.
    let start = Instant::now();
    let mut fresh = server.client();
    assert_eq!(fresh.list().len(), 200);
    assert!(start.elapsed() < Duration::from_secs(2), "[RES-5] a fresh client waited {:?}", start.elapsed());
    fresh.bye();

    // The HELP pipeliner reads now: every request it managed to send is answered.
    let (mut c, sent) = hostile.remove(0);
    c.set_io_timeout(Duration::from_secs(30));
    for _ in 0..sent {
        assert!(matches!(c.read_reply().head(), ferry_proto::ServerItem::Help(_)), "[REQ-1] [REQ-4]");
    }
}

/// [REQ-3] [REQ-4] [GET-5]: pipelined GETs of small files already hashed, whose replies an
/// engine may copy together (head, data and the replies that follow, in one write), reach a
/// client that reads slowly (a 16 KiB receive buffer, 32 MiB of replies: the server's writes
/// block again and again) whole and in order.
pub fn pipelined_small_gets_reach_a_slow_reader_whole_and_in_order(engine: StartFn) {
    let server = TestServer::start(engine);
    let files: Vec<Vec<u8>> = (0..8).map(|i| content(40 + i as u64, 3_000 + 1_500 * i)).collect();
    let mut warm = server.client();
    for (i, data) in files.iter().enumerate() {
        std::fs::write(server.path(&format!("s{i}")), data).unwrap();
        assert_eq!(&warm.get_ok(&format!("s{i}"), 0).1, data);
    }
    let rounds = 4_000 / files.len();
    let requests: Vec<u8> =
        (0..rounds).flat_map(|_| (0..files.len()).flat_map(|i| wire::get(format!("s{i}").as_bytes(), 0))).collect();
    let opts = ConnectOptions { recv_buffer: Some(16 * 1024), ..ConnectOptions::default() };
    let mut c = server.client_with(opts);
    c.send_raw(&requests);
    // Read nothing until the server's writes to this client have stopped: its socket is full.
    let peer = c.local_addr().to_string();
    let sent_to = |warm: &mut Client| warm.status().iter().find(|r| r.peer == peer).map_or(0, |r| r.bytes_out);
    let (mut last, deadline) = (sent_to(&mut warm), Instant::now() + Duration::from_secs(20));
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = sent_to(&mut warm);
        if now == last && now > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the server never stopped sending to a client that reads nothing");
        last = now;
    }
    for i in 0..rounds * files.len() {
        let reply = c.read_reply();
        let (_, frame) = reply.frame();
        assert_eq!(frame.name.as_str(), format!("s{}", i % files.len()), "[REQ-4] reply {i} out of order");
        assert_eq!(reply.data, files[i % files.len()], "[GET-5] reply {i} is not the file");
    }
}
