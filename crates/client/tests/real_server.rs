//! The client library against the reference server, run in this process (ferry-blocking on
//! 127.0.0.1, port 0, a temporary root). The `ferry` binary's tests run a real `ferryd` process.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_blocking::Running;
use ferry_client::{exit, Client, Config, Error, Jitter, NoProgress, Progress, RetryPolicy};
use ferry_core::Settings;
use ferry_proto::{Digest, ErrorCode, Name, PutMode, Role};

struct Server {
    running: Running,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings { root: dir.path().join("root"), ..Settings::default() };
        configure(&mut settings);
        let running = ferry_blocking::spawn(settings, "127.0.0.1:0".parse().unwrap()).unwrap();
        Self { running, dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn client(&self) -> Client {
        client_for(&self.running.addr.to_string(), None)
    }
}

fn client_for(addr: &str, token: Option<&str>) -> Client {
    Client::new(Config {
        server: addr.to_owned(),
        token: token.map(str::to_owned),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy { retries: 2, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() },
        ..Config::default()
    })
    .with_sleep(Arc::new(|_| std::thread::sleep(Duration::from_millis(10))))
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn every_command_round_trips() {
    let server = Server::start();
    let local = tempfile::tempdir().unwrap();
    let mut c = server.client();
    assert!(c.list(&mut NoProgress).unwrap().is_empty());

    let src = local.path().join("src.bin");
    write(&src, &data(300_000));
    let up = c.upload(&src, &name("a.bin"), PutMode::CreateOnly, &mut NoProgress).unwrap();
    assert!(!up.replaced);
    assert_eq!(up.md5, Digest::of(&data(300_000)));
    let again = c.upload(&src, &name("a.bin"), PutMode::CreateOnly, &mut NoProgress).unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::EXISTS));
    assert!(c.upload(&src, &name("a.bin"), PutMode::Overwrite, &mut NoProgress).unwrap().replaced);

    let entries = c.list(&mut NoProgress).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].size, 300_000);
    let st = c.stat(&name("a.bin"), &mut NoProgress).unwrap();
    assert_eq!(st.size, 300_000);

    let dest = local.path().join("back.bin");
    let got = c.download(&name("a.bin"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data(300_000));
    assert_eq!(got.resumed_from, None);
    assert!(!got.up_to_date);
    let again = c.download(&name("a.bin"), &dest, false, &mut NoProgress).unwrap();
    assert!(again.up_to_date, "the same file is there already: nothing to do");
    write(&dest, b"another file");
    let exists = c.download(&name("a.bin"), &dest, false, &mut NoProgress).unwrap_err();
    assert!(matches!(exists, Error::LocalExists { .. }), "{exists}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"another file");
    c.download(&name("a.bin"), &dest, true, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data(300_000));
    let mut piped = Vec::new();
    let streamed = c.download_to_writer(&name("a.bin"), &mut piped, &mut NoProgress).unwrap();
    assert_eq!(piped, data(300_000));
    assert_eq!(streamed.md5, got.md5);
    let missing_dir = c.download(&name("a.bin"), &local.path().join("no/such/dir/x"), false, &mut NoProgress);
    assert!(
        matches!(&missing_dir, Err(e @ Error::NoDirectory { .. }) if e.to_string().contains("no/such/dir does not exist")),
        "{missing_dir:?}"
    );

    let records = c.status(&mut NoProgress).unwrap();
    assert!(!records.is_empty());
    assert!(records.last().unwrap().disconnected_ms.is_none(), "ours is open");
    assert!(c.help(&mut NoProgress).unwrap().contains("LIST"));

    c.delete(&name("a.bin"), &mut NoProgress).unwrap();
    let gone = c.delete(&name("a.bin"), &mut NoProgress).unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::NOT_FOUND));
    assert_eq!(gone.exit_code(), exit::REFUSED);
    let missing = c.download(&name("a.bin"), &local.path().join("x"), false, &mut NoProgress).unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NOT_FOUND));
    assert!(!local.path().join("x.part").exists(), "no empty .part left behind");
    c.close();
}

#[test]
fn one_connection_serves_a_whole_session() {
    let server = Server::start();
    let mut c = server.client();
    for _ in 0..5 {
        c.list(&mut NoProgress).unwrap();
    }
    let records = c.status(&mut NoProgress).unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
}

#[test]
fn a_part_left_by_an_earlier_run_is_resumed_from_its_end() {
    let server = Server::start();
    let body = data(1 << 20);
    write(&server.root().join("f"), &body);
    let local = tempfile::tempdir().unwrap();
    let dest = local.path().join("f");
    write(&local.path().join("f.part"), &body[..400_000]);
    let meta = format!(r#"{{"ferry_part":1,"name":"f","size":{},"md5":"{}"}}"#, body.len(), Digest::of(&body));
    write(&local.path().join("f.part.meta"), meta.as_bytes());
    let mut c = server.client();
    let got = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(got.resumed_from, Some(400_000));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn connecting_is_retried_until_the_server_is_up() {
    // Reserve a port, free it, and start the server there a little later.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        ferry_blocking::spawn(Settings { root, ..Settings::default() }, addr).unwrap()
    });
    let waits = Arc::new(Mutex::new(0u32));
    let w = waits.clone();
    let mut c = Client::new(Config {
        server: addr.to_string(),
        retry: RetryPolicy { retries: 50, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() },
        wait_for_server: true,
        ..Config::default()
    })
    .with_sleep(Arc::new(move |_| {
        *w.lock().unwrap() += 1;
        std::thread::sleep(Duration::from_millis(50));
    }));
    assert!(c.list(&mut NoProgress).unwrap().is_empty());
    assert!(*waits.lock().unwrap() >= 1, "the first attempt found no server");
    c.close();
    drop(starter.join().unwrap());
}

#[test]
fn connection_refused_is_retried_then_reported_as_a_network_failure() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut c = client_for(&addr.to_string(), None);
    c = Client::new(Config { wait_for_server: true, ..c.config().clone() })
        .with_sleep(Arc::new(|_| std::thread::sleep(Duration::from_millis(10))));
    let err = c.list(&mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::Retried { attempts: 3, .. }), "{err}");
    assert_eq!(err.exit_code(), exit::NETWORK);
    assert!(err.to_string().starts_with(&format!("connection refused by {addr} — is ferryd running?")), "{err}");
}

#[test]
fn a_first_connection_refused_on_loopback_fails_at_once() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let waits = Arc::new(Mutex::new(0u32));
    let w = waits.clone();
    let mut c = client_for(&addr.to_string(), None).with_sleep(Arc::new(move |_| *w.lock().unwrap() += 1));
    let err = c.list(&mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::NotListening { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::NETWORK);
    assert_eq!(*waits.lock().unwrap(), 0, "no retry");
}

#[test]
fn a_refusal_after_a_connection_was_made_is_retried() {
    // The server goes away between two commands and comes back on the same port.
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings { root: dir.path().join("root"), ..Settings::default() };
    let running = ferry_blocking::spawn(settings.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = running.addr;
    let waits = Arc::new(Mutex::new(0u32));
    let w = waits.clone();
    let restarted: Arc<Mutex<Option<Running>>> = Arc::new(Mutex::new(None));
    let r = restarted.clone();
    let mut c = client_for(&addr.to_string(), None).with_sleep(Arc::new(move |_| {
        *w.lock().unwrap() += 1;
        let mut slot = r.lock().unwrap();
        if slot.is_none() {
            *slot = Some(ferry_blocking::spawn(settings.clone(), addr).unwrap());
        }
    }));
    assert!(c.list(&mut NoProgress).unwrap().is_empty());
    drop(running);
    assert!(c.list(&mut NoProgress).unwrap().is_empty(), "retried until the server was back");
    assert!(*waits.lock().unwrap() >= 1, "the first attempt was refused");
    c.close();
}

#[test]
fn an_unknown_token_is_refused_not_retried() {
    let server = Server::start_with(|s| {
        s.tokens.insert("admin-secret".into(), Role::Admin);
    });
    let mut c = client_for(&server.running.addr.to_string(), Some("wrong"));
    let err = c.list(&mut NoProgress).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNAUTHORIZED), "{err}");
    assert_eq!(err.exit_code(), exit::REFUSED);
    assert!(err.to_string().contains("--token"), "{err}");
}

#[test]
fn shutdown_needs_an_admin() {
    let server = Server::start_with(|s| {
        s.tokens.insert("admin-secret".into(), Role::Admin);
    });
    let addr = server.running.addr.to_string();
    let err = client_for(&addr, None).shutdown(&mut NoProgress).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN), "{err}");
    client_for(&addr, Some("admin-secret")).shutdown(&mut NoProgress).unwrap();
    server.running.wait().unwrap();
}

#[derive(Default)]
struct Count(u64);

impl Progress for Count {
    fn transferred(&mut self, bytes: u64) {
        self.0 += bytes;
    }
}

#[test]
fn an_early_exists_stops_the_upload_before_its_data_is_sent() {
    let server = Server::start();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("big");
    let size = 64 << 20;
    write(&src, &vec![7u8; size]);
    write(&server.root().join("big"), b"already here");
    let mut c = server.client();
    let mut sent = Count::default();
    let err = c.upload(&src, &name("big"), PutMode::CreateOnly, &mut sent).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::EXISTS), "{err}");
    assert!(sent.0 < size as u64 / 2, "stopped after {} of {size} bytes", sent.0);
    // The connection was given up; the next command opens another.
    assert_eq!(c.list(&mut NoProgress).unwrap().len(), 1);
}

#[test]
fn a_read_only_server_forbids_uploads_and_says_what_to_do() {
    let server = Server::start_with(|s| s.anonymous = Some(Role::Read));
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("x");
    write(&src, b"x");
    let err = server.client().upload(&src, &name("x"), PutMode::Overwrite, &mut NoProgress).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN), "{err}");
    assert!(err.to_string().contains("token"), "{err}");
}
