//! § 10 and § 17.3: names are hostile input.

use std::time::Duration;

use ferry_proto::codec::ServerItem;
use ferry_proto::limits::NAME_LEN_CEILING;
use ferry_proto::{ErrorCode, PutMode};

use crate::client::{wire, IO_TIMEOUT};
use crate::{content, md5, Client, StartFn, TestServer};

/// Sends STAT, GET, DELETE and PUT (both modes, with data) of the raw `name` on one connection;
/// each must get `BAD_NAME`, and the connection must keep working (`[NAME-7]`, `[REQ-6]`).
#[track_caller]
fn assert_bad_name_everywhere(c: &mut Client, name: &[u8]) {
    let data = b"some data \x08\x01";
    let mut put_create = wire::put_head(1, name, data.len() as u64, &md5(data).to_hex());
    put_create.extend_from_slice(data);
    for (what, bytes) in [
        ("STAT", wire::stat(name)),
        ("GET", wire::get(name, 0)),
        ("DELETE", wire::delete(name)),
        ("PUT", wire::put(name, data)),
        ("PUT create-only", put_create),
    ] {
        c.send_raw(&bytes);
        let reply = c.read_reply();
        assert_eq!(reply.error_code(), Some(ErrorCode::BAD_NAME), "[NAME-7] {what} {name:?}: {reply:?}");
    }
    c.send_raw(wire::HELP);
    assert!(matches!(c.read_reply().head(), ServerItem::Help(_)), "[NAME-7] the connection goes on");
}

/// [NAME-1] [NAME-4] [NAME-5] [NAME-7] [SEC-2] [REQ-6]: names that try to leave the root — `..`,
/// `../x`, `/etc/passwd`, `a/b`, backslashes — get `BAD_NAME` for every command, the connection
/// keeps working, and nothing inside or outside the root is read, created or removed.
pub fn traversal_names_are_bad_name_and_touch_nothing(engine: StartFn) {
    let server = TestServer::start(engine);
    let outside = content(20, 100);
    std::fs::write(server.dir().join("outside.txt"), &outside).unwrap();
    std::fs::create_dir(server.path("a")).unwrap();
    std::fs::write(server.path("a").join("b"), b"in a subdirectory").unwrap();
    server.write_file("x", b"inside");
    let mut c = server.client();
    for name in [
        &b".."[..],
        b"../x",
        b"../outside.txt",
        b"../root/x",
        b"/etc/passwd",
        b"/",
        b"a/b",
        b"x/",
        b"./x",
        b"..\\x",
        b"a\\b",
        b"\\",
        b"C:\\Windows",
    ] {
        assert_bad_name_everywhere(&mut c, name);
    }
    assert_eq!(server.root_entries(), ["a", "x"], "[NAME-1] nothing created or removed");
    assert_eq!(server.read_file("x").unwrap(), b"inside");
    assert_eq!(std::fs::read(server.path("a").join("b")).unwrap(), b"in a subdirectory");
    let mut beside: Vec<String> = std::fs::read_dir(server.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "ferryd.log")
        .collect();
    beside.sort();
    assert_eq!(beside, ["outside.txt", "root"], "[SEC-2] nothing created outside the root");
    assert_eq!(std::fs::read(server.dir().join("outside.txt")).unwrap(), outside);
    assert_eq!(c.list().len(), 1, "only x: the subdirectory is not a file");
}

/// [NAME-4] [NAME-7]: names with NUL, C0 controls (newline, tab, escape), DEL or C1 controls get
/// `BAD_NAME` for every command; nothing is created.
pub fn control_characters_are_bad_name(engine: StartFn) {
    let server = TestServer::start(engine);
    let mut c = server.client();
    for name in [
        &b"\0"[..],
        b"a\0b",
        b"a\nb",
        b"\t",
        b"line\r",
        b"\x1b[31mred",
        b"a\x01",
        b"\x1f",
        b"del\x7f",
        "nel\u{85}".as_bytes(),
        "\u{80}".as_bytes(),
        "csi\u{9b}".as_bytes(),
    ] {
        assert_bad_name_everywhere(&mut c, name);
    }
    assert!(server.root_entries().is_empty());
}

/// [NAME-2] [NAME-3] [NAME-5] [NAME-6] [NAME-7]: the empty name, `.`, `..`, names under the reserved
/// `.ferry` prefix and invalid UTF-8 (a lone continuation byte, a truncated sequence, an overlong
/// `/`, a surrogate) get `BAD_NAME` for every command; `...`, `.hidden` and `.Ferry` are valid.
pub fn empty_dot_reserved_and_invalid_utf8_names_are_bad_name(engine: StartFn) {
    let server = TestServer::start(engine);
    let mut c = server.client();
    for name in [
        &b""[..],
        b".",
        b"..",
        b".ferry",
        b".ferry-tmp-1-0",
        b".ferryx",
        b"\x80",
        b"\xff",
        b"a\xc3",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
    ] {
        assert_bad_name_everywhere(&mut c, name);
    }
    assert!(server.root_entries().is_empty(), "[NAME-7] nothing touched");
    for valid in ["...", ".hidden", ".Ferry", "ferry"] {
        assert!(!c.put_ok(valid, valid.as_bytes()), "{valid:?} is a valid name");
    }
    assert_eq!(c.list().len(), 4);
}

/// [NAME-2] [LIM-1] [NAME-7]: with `max_name_len` 16, a 16-byte name (ASCII or multi-byte) works
/// and a 17-byte one gets `BAD_NAME` for every command — as does a 4096-byte one, within the
/// ceiling, whose PUT data is still skipped.
pub fn names_longer_than_max_name_len_are_bad_name(engine: StartFn) {
    let server = TestServer::start_with(engine, |s| s.max_name_len = 16);
    let mut c = server.client();
    assert_eq!(c.server_hello().unwrap().max_name_len, 16);
    let sixteen = "a".repeat(16);
    let multibyte = "é".repeat(8);
    assert_eq!(multibyte.len(), 16);
    assert!(!c.put_ok(&sixteen, b"16"));
    assert!(!c.put_ok(&multibyte, b"16 too"));
    for name in [format!("{sixteen}b"), format!("{multibyte}b"), "x".repeat(NAME_LEN_CEILING as usize)] {
        assert_bad_name_everywhere(&mut c, name.as_bytes());
    }
    assert_eq!(c.list().len(), 2);
    assert_eq!(server.root_entries().len(), 2);
}

/// [NAME-8] [NAME-3] [ENC-2]: names are byte strings compared exactly: `Case`, `case` and `CASE` are
/// three files, as are NFC and NFD `café`; names with spaces, `#`, CJK and emoji round-trip.
pub fn names_are_exact_byte_strings(engine: StartFn) {
    let server = TestServer::start(engine);
    let names = ["Case", "case", "CASE", "caf\u{e9}", "cafe\u{301}", "with space", "#hash", "文件.txt", "📁"];
    let mut c = server.client();
    for (i, n) in names.iter().enumerate() {
        assert!(!c.put(n, &content(30 + i as u64, 500), PutMode::CreateOnly).replaced(), "[NAME-8] {n:?} is new");
    }
    for (i, n) in names.iter().enumerate() {
        let (frame, data) = c.get_ok(n, 0);
        assert_eq!(frame.name.as_str(), *n, "[NAME-8] the name comes back as sent");
        assert_eq!(data, content(30 + i as u64, 500), "[NAME-8] {n:?} is its own file");
    }
    let mut listed: Vec<String> = c.list().into_iter().map(|e| e.name.as_str().to_owned()).collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
}

/// [NAME-10] [SEC-2] [LIST-1]: symbolic links in the root — to a file in another directory, to a
/// directory, to a file inside the root — are not listed; STAT, GET and DELETE of them get
/// `NOT_FOUND`; a PUT under a link's name never writes through it. The link targets are untouched.
pub fn symlinks_in_the_root_are_neither_listed_nor_served(engine: StartFn) {
    let server = TestServer::start(engine);
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = elsewhere.path().join("secret.txt");
    std::fs::write(&secret, b"secret outside the root").unwrap();
    let real = content(40, 300);
    server.write_file("real", &real);
    std::os::unix::fs::symlink(&secret, server.path("link")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), server.path("dirlink")).unwrap();
    std::os::unix::fs::symlink(server.path("real"), server.path("inner-link")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("missing"), server.path("dangling")).unwrap();

    let mut c = server.client();
    let listed: Vec<String> = c.list().into_iter().map(|e| e.name.as_str().to_owned()).collect();
    assert_eq!(listed, ["real"], "[NAME-10] links are not listed");
    for link in ["link", "dirlink", "inner-link", "dangling"] {
        c.stat(link).assert_error(ErrorCode::NOT_FOUND);
        c.get(link, 0).assert_error(ErrorCode::NOT_FOUND);
        c.delete(link).assert_error(ErrorCode::NOT_FOUND);
    }
    // A PUT under a link's name may replace the link or be refused, but never writes the target.
    let reply = c.put("link", b"overwritten?", PutMode::Overwrite);
    if reply.error().is_none() {
        let meta = std::fs::symlink_metadata(server.path("link")).unwrap();
        assert!(meta.is_file(), "[NAME-10] the link was replaced by a regular file");
    }
    let _ = c.put("dangling", b"created through a link?", PutMode::CreateOnly);
    assert!(!elsewhere.path().join("missing").exists(), "[NAME-10] no file created through a link");
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret outside the root", "[SEC-2] target untouched");
    assert_eq!(server.read_file("real").unwrap(), real);
    let entries: Vec<String> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["secret.txt"]);
}

/// [STORE-7] [LIST-1] (a SHOULD, and the MUST that temporary files are never published): a
/// temporary upload file left by an earlier run is removed when the server starts, and was never
/// listed.
pub fn stale_temporary_files_are_removed_at_start(engine: StartFn) {
    let dir = crate::server::new_dir();
    let stale = dir.path().join("root").join(".ferry-tmp-12345-0");
    std::fs::write(&stale, b"half an upload").unwrap();
    let server = TestServer::start_in(engine, dir, |_| {});
    assert!(crate::wait_until(Duration::from_secs(2), || !stale.exists()), "[STORE-7] {:?}", server.root_entries());
    assert!(server.client().list().is_empty());
    server.assert_no_temp_files(IO_TIMEOUT);
}
