//! Local mode (`--root DIR`): a server on this machine whose root the suite may touch.
//!
//! What no request can make — a symbolic link or a directory in the root, a file copied in or
//! edited by hand — and what no reply shows — the temporary files of an upload — is checked
//! here by planting entries in the root and watching it:
//!
//! - `local.symlinks`: links (to a file inside the root, to one outside it, to nothing, to a
//!   directory) and a directory are neither listed, STATed, served, replaced nor removed.
//! - `local.by-hand`: files written by hand are listed, STATed and served, their mtimes exactly
//!   the file system's, truncated to the millisecond.
//! - `local.edit-in-place`: a file rewritten in place at the same size, its mtime set back, gets
//!   the new content's digest in STAT and GET.
//! - `local.upload-watch`: while a slow upload arrives, nothing appears under its name, and every
//!   other new entry is under the reserved `.ferry` prefix and hidden from LIST.
//! - `local.upload-cut`: an upload cut off by a disconnect leaves no entry behind.
//! - `local.digests-ahead`: a file copied in by hand is STATed at once, digest or not, and gets its
//!   digest without anyone asking for the file (a SHOULD: a warning if it does not).
//!
//! Everything planted is removed afterwards, whatever the verdict. The cases that watch the root
//! run alone: another case's uploads would show up in it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ferry_proto::name::RESERVED_PREFIX;
use ferry_proto::{Digest, Entry, ErrorCode, Name, PutMode, Request, Role};

use super::precision::fs_mtime;
use super::support::{
    bytes, call, case, fail, get_whole, problem, put_head, read_only_server, request_bytes, seed_for, writable, Verdict,
};
use crate::case::{Case, Failure, Needs, Outcome};
use crate::context::Ctx;
use crate::wire::{Conn, Replies, Reply};

/// How long the root is watched for a cut-off upload's entries to go.
const CUT_WAIT: Duration = Duration::from_secs(3);
/// The watcher's pace.
const POLL: Duration = Duration::from_millis(2);
/// The slow upload: pieces of this size, this far apart (a progress unit each, well within any
/// progress deadline).
const PIECE: usize = 64 * 1024;
const PIECES: usize = 8;
const PACE: Duration = Duration::from_millis(150);

/// Every case of this module.
pub fn cases() -> Vec<Case> {
    let local = Needs { root: true, ..Needs::default() };
    let watching = Needs { root: true, alone: true, role: Role::Write, ..Needs::default() };
    vec![
        case(
            "local.symlinks",
            "Symbolic links (to a file inside the root, outside it, to nothing, to a directory) and a directory \
             in the root are neither listed, STATed, served, replaced nor removed",
            &["NAME-10", "SEC-2", "STORE-8"],
            local,
            symlinks,
        ),
        case(
            "local.by-hand",
            "Files written into the root by hand are listed, STATed and served, with their size, digest and mtime \
             to the millisecond",
            &["LIST-1", "STAT-1", "GET-1", "LIST-3", "LIST-4"],
            local,
            by_hand,
        ),
        case(
            "local.edit-in-place",
            "A file rewritten in place at the same size, its mtime set back, gets the new content's digest in \
             STAT and GET",
            &["LIST-3", "GET-1", "STAT-1"],
            local,
            edit_in_place,
        ),
        case(
            "local.digests-ahead",
            "A file copied into the root by hand is STATed and listed at once, and gets its digest without a GET",
            &["LIST-5", "GET-8", "LIST-3"],
            local,
            digests_ahead,
        ),
        case(
            "local.upload-watch",
            "During a slow upload nothing appears in the root under its name, and every other new entry is \
             under .ferry and hidden from LIST",
            &["STORE-1", "STORE-7", "NAME-6", "LIST-1"],
            watching,
            upload_watch,
        ),
        case(
            "local.upload-cut",
            "An upload cut off by a disconnect leaves no entry in the root",
            &["STORE-2"],
            watching,
            upload_cut,
        ),
    ]
}

/// What a case planted, removed when it is dropped.
#[derive(Default)]
struct Planted {
    /// Files and links.
    files: Vec<PathBuf>,
    /// Directories, removed with their content.
    dirs: Vec<PathBuf>,
}

impl Planted {
    fn file(&mut self, path: PathBuf, content: &[u8]) -> Result<(), Box<Failure>> {
        self.files.push(path.clone());
        std::fs::write(&path, content).map_err(|e| harness(&format!("writing {}: {e}", path.display())))
    }

    fn dir(&mut self, path: PathBuf) -> Result<(), Box<Failure>> {
        self.dirs.push(path.clone());
        std::fs::create_dir(&path).map_err(|e| harness(&format!("creating {}: {e}", path.display())))
    }

    #[cfg(unix)]
    fn link(&mut self, target: &Path, path: PathBuf) -> Result<(), Box<Failure>> {
        self.files.push(path.clone());
        std::os::unix::fs::symlink(target, &path).map_err(|e| harness(&format!("linking {}: {e}", path.display())))
    }

    #[cfg(not(unix))]
    fn link(&mut self, _target: &Path, path: PathBuf) -> Result<(), Box<Failure>> {
        Err(harness(&format!("{}: symbolic links need a Unix system", path.display())))
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            // Only what was made as a directory: a link is never followed (remove_dir_all does not).
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The suite could not set up what it checks: a harness error, reported as a failure without a
/// requirement (the case turns it into [`Outcome::HarnessError`]).
fn harness(message: &str) -> Box<Failure> {
    Box::new(Failure { requirement: None, message: format!("harness: {message}"), ..Failure::default() })
}

/// Runs a body, turning a harness failure into [`Outcome::HarnessError`].
fn guarded(ctx: &Ctx, body: impl FnOnce(&Ctx, &Path) -> Verdict) -> Verdict {
    // The runner runs the cases that need a root only with one.
    let Some(root) = ctx.target.root.clone() else { return Ok(Outcome::Skipped("needs --root".into())) };
    match body(ctx, &root) {
        Err(f) if f.requirement.is_none() => Ok(Outcome::HarnessError(f.message)),
        other => other,
    }
}

fn list(conn: &mut Conn) -> Result<Vec<Entry>, Box<Failure>> {
    match call(conn, &Request::List, "LIST-1")? {
        Reply::List(v) => Ok(v),
        other => Err(fail("LIST-1", format!("LIST: {}", other.describe()))),
    }
}

fn expect_code(
    conn: &mut Conn,
    request: &Request,
    data: &[u8],
    want: ErrorCode,
    requirement: &str,
    what: &str,
) -> Result<(), Box<Failure>> {
    conn.send(request, data).map_err(|p| problem(requirement, what, &p))?;
    match conn.reply() {
        Ok(r) if r.code() == Some(want.0) => Ok(()),
        Ok(r) => Err(fail(requirement, format!("{what}: {}; expected {want}", r.describe()))),
        Err(p) => Err(problem(requirement, what, &p)),
    }
}

// ---------------------------------------------------------------------------------------------
// Links and directories

fn symlinks(ctx: &Ctx) -> Verdict {
    guarded(ctx, symlinks_in)
}

fn symlinks_in(ctx: &Ctx, root: &Path) -> Verdict {
    let can_write = writable(ctx)?;
    let p = &ctx.prefix;
    let mut planted = Planted::default();
    let outside = std::env::temp_dir().join(format!("{p}outside-{}", std::process::id()));
    planted.dir(outside.clone())?;
    let secret = outside.join("secret");
    planted.file(secret.clone(), b"outside the root")?;
    let inside = format!("{p}target");
    planted.file(root.join(&inside), b"inside the root")?;
    let dir = format!("{p}dir");
    planted.dir(root.join(&dir))?;
    planted.file(root.join(&dir).join("in-dir"), b"in a directory")?;
    // Each entry, with what it points to and the requirement a server that used it would break.
    let links: Vec<(String, PathBuf, &str)> = vec![
        (format!("{p}link-in"), PathBuf::from(&inside), "NAME-10"),
        (format!("{p}link-out"), secret.clone(), "SEC-2"),
        (format!("{p}link-none"), PathBuf::from(format!("{p}nowhere")), "NAME-10"),
        (format!("{p}link-dir"), PathBuf::from(&dir), "NAME-10"),
        (format!("{p}link-outdir"), outside.clone(), "SEC-2"),
    ];
    for (name, target, _) in &links {
        planted.link(target, root.join(name))?;
    }
    let mut entries: Vec<(String, &str)> = links.iter().map(|(n, _, r)| (n.clone(), *r)).collect();
    entries.push((dir.clone(), "STORE-8"));

    let mut conn = ctx.conn().map_err(|p| problem("NAME-10", "handshake", &p))?;
    let listed = list(&mut conn)?;
    if !listed.iter().any(|e| e.name.as_str() == inside) {
        return Err(fail("LIST-1", format!("LIST does not show {inside}, a regular file written by hand")));
    }
    for (name, req) in &entries {
        if listed.iter().any(|e| e.name.as_str() == name) {
            let what = if name == &dir { "a directory" } else { "a symbolic link" };
            return Err(fail(req, format!("LIST shows {name}, {what}")));
        }
    }
    let forbidden_or = |code: ErrorCode| if can_write { code } else { ErrorCode::FORBIDDEN };
    for (name, req) in &entries {
        let n = Name::parse(name).map_err(|e| harness(&e.to_string()))?;
        let kind = if name == &dir { "the directory" } else { "the symbolic link" };
        expect_code(
            &mut conn,
            &Request::Stat(n.clone()),
            &[],
            ErrorCode::NOT_FOUND,
            req,
            &format!("STAT of {kind} {name}"),
        )?;
        expect_code(
            &mut conn,
            &Request::Get { name: n.clone(), offset: 0 },
            &[],
            ErrorCode::NOT_FOUND,
            req,
            &format!("GET of {kind} {name}"),
        )?;
        for mode in [PutMode::Overwrite, PutMode::CreateOnly] {
            let data = b"written through?";
            expect_code(
                &mut conn,
                &put_head(&n, mode, data, None),
                data,
                ErrorCode::FORBIDDEN,
                "STORE-8",
                &format!("PUT ({mode:?}) of {kind} {name}"),
            )?;
        }
        expect_code(
            &mut conn,
            &Request::Delete(n),
            &[],
            forbidden_or(ErrorCode::NOT_FOUND),
            "STORE-8",
            &format!("DELETE of {kind} {name}{}", if can_write { "" } else { " (no write right)" }),
        )?;
    }
    // Everything as it was.
    for (name, target, _) in &links {
        match std::fs::read_link(root.join(name)) {
            Ok(t) if &t == target => {}
            Ok(t) => return Err(fail("STORE-8", format!("{name} now links to {}", t.display()))),
            Err(e) => return Err(fail("STORE-8", format!("{name} is no longer a symbolic link ({e})"))),
        }
    }
    let unchanged = [
        (root.join(&inside), &b"inside the root"[..]),
        (secret, &b"outside the root"[..]),
        (root.join(&dir).join("in-dir"), &b"in a directory"[..]),
    ];
    for (path, content) in unchanged {
        match std::fs::read(&path) {
            Ok(c) if c == content => {}
            _ => return Err(fail("STORE-8", format!("{} changed", path.display()))),
        }
    }
    if root.join(format!("{p}nowhere")).symlink_metadata().is_ok() {
        return Err(fail("STORE-8", format!("a PUT through the dangling link {p}link-none created {p}nowhere")));
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Files by hand

fn by_hand(ctx: &Ctx) -> Verdict {
    guarded(ctx, by_hand_in)
}

/// An entry against the file it describes.
fn check_entry(e: &Entry, content: &[u8], fs_ms: Option<i64>, what: &str, req: &str) -> Result<(), Box<Failure>> {
    if e.size != content.len() as u64 {
        return Err(fail(req, format!("{what} {}: size {}; the file has {} bytes", e.name, e.size, content.len())));
    }
    if e.md5.is_some_and(|m| m != Digest::of(content)) {
        return Err(fail("LIST-3", format!("{what} {}: digest {:?}, not the file's", e.name, e.md5)));
    }
    if let Some(ms) = fs_ms.filter(|ms| *ms != e.mtime_ms) {
        return Err(fail(
            "LIST-4",
            format!(
                "{what} {}: mtime {} ms; the file system says {ms} ms (truncated to the millisecond)",
                e.name, e.mtime_ms
            ),
        ));
    }
    Ok(())
}

fn by_hand_in(ctx: &Ctx, root: &Path) -> Verdict {
    let p = &ctx.prefix;
    let mut planted = Planted::default();
    let files: Vec<(String, Vec<u8>)> = vec![
        (format!("{p}hand-a"), bytes(seed_for(ctx, "hand-a"), 100_000)),
        (format!("{p}hand-empty"), Vec::new()),
        (format!("{p}hand \u{e9} x"), bytes(seed_for(ctx, "hand-e"), 3_000)),
        (format!("{p}hand-ms"), b"a known time".to_vec()),
    ];
    for (name, content) in &files {
        planted.file(root.join(name), content)?;
    }
    // A time with sub-millisecond digits that round up: truncated, it keeps .123.
    let when = UNIX_EPOCH + Duration::new(1_700_000_000, 123_999_999);
    let path = root.join(format!("{p}hand-ms"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(when))
        .map_err(|e| harness(&format!("setting the mtime of {}: {e}", path.display())))?;
    let mut conn = ctx.conn().map_err(|p| problem("LIST-1", "handshake", &p))?;
    let listed = list(&mut conn)?;
    for (name, content) in &files {
        let fs_ms = fs_mtime(&root.join(name));
        let n = Name::parse(name).map_err(|e| harness(&e.to_string()))?;
        let shown: Vec<&Entry> = listed.iter().filter(|e| e.name == n).collect();
        match shown.as_slice() {
            [e] => check_entry(e, content, fs_ms, "LIST", "LIST-1")?,
            [] => return Err(fail("LIST-1", format!("LIST does not show {name}, a file written by hand"))),
            _ => return Err(fail("LIST-1", format!("LIST shows {name} {} times", shown.len()))),
        }
        match call(&mut conn, &Request::Stat(n.clone()), "STAT-1")? {
            Reply::Stat(e) => check_entry(&e, content, fs_ms, "STAT", "STAT-1")?,
            other => return Err(fail("STAT-1", format!("STAT {name}: {}", other.describe()))),
        }
        match get_whole(&mut conn, &n, "GET-1")? {
            Some(d) if &d == content => {}
            Some(d) => {
                return Err(fail("GET-1", format!("GET {name}: {} bytes, not the file's {}", d.len(), content.len())))
            }
            None => return Err(fail("GET-1", format!("GET {name}: NOT_FOUND for a file written by hand"))),
        }
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// Digests computed ahead

/// The file copied in: large enough that hashing it is not instant (a few hundred ms at common
/// MD5 rates), small enough for any disk.
const AHEAD_SIZE: usize = 64 << 20;
/// How long a STAT or LIST of it may take: far less than hashing it on a slow machine.
const AHEAD_PROMPT: Duration = Duration::from_secs(1);
/// How long the digest may take to appear without a GET before the SHOULD counts as unmet.
const AHEAD_WAIT: Duration = Duration::from_secs(20);

fn digests_ahead(ctx: &Ctx) -> Verdict {
    guarded(ctx, digests_ahead_in)
}

fn digests_ahead_in(ctx: &Ctx, root: &Path) -> Verdict {
    let name = ctx.name("ahead");
    let content = bytes(seed_for(ctx, "ahead"), AHEAD_SIZE);
    let digest = Digest::of(&content);
    let mut planted = Planted::default();
    planted.file(root.join(name.as_str()), &content)?;
    let mut conn = ctx.conn().map_err(|p| problem("STAT-1", "handshake", &p))?;
    let stat = |conn: &mut Conn| -> Result<(Option<Digest>, Duration), Box<Failure>> {
        let started = Instant::now();
        match call(conn, &Request::Stat(name.clone()), "STAT-1")? {
            Reply::Stat(e) if e.md5.is_some_and(|m| m != digest) => {
                Err(fail("LIST-3", format!("STAT {name}: digest {:?}, not the file's {digest}", e.md5)))
            }
            Reply::Stat(e) => Ok((e.md5, started.elapsed())),
            other => Err(fail("STAT-1", format!("STAT {name}, a file copied in by hand: {}", other.describe()))),
        }
    };
    let (mut md5, took) = stat(&mut conn)?;
    if took > AHEAD_PROMPT {
        return Ok(Outcome::Warn(Failure::new(
            "LIST-5",
            format!("STAT of a {} MiB file copied in by hand took {took:?}: it waited for a digest", AHEAD_SIZE >> 20),
        )));
    }
    let started = Instant::now();
    let listed = list(&mut conn)?;
    if started.elapsed() > AHEAD_PROMPT {
        return Ok(Outcome::Warn(Failure::new(
            "LIST-5",
            format!("LIST took {:?}: it waited for a digest", started.elapsed()),
        )));
    }
    if let Some(e) = listed.iter().find(|e| e.name == name) {
        check_entry(e, &content, None, "LIST", "LIST-1")?;
    }
    let deadline = Instant::now() + AHEAD_WAIT;
    while md5.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        md5 = stat(&mut conn)?.0;
    }
    if md5.is_none() {
        return Ok(Outcome::Warn(Failure::new(
            "GET-8",
            format!(
                "no digest for a file copied in by hand {AHEAD_WAIT:?} later: its first GET will wait while the \
                 server reads it whole"
            ),
        )));
    }
    drop(planted);
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------------
// A file edited in place

fn edit_in_place(ctx: &Ctx) -> Verdict {
    guarded(ctx, edit_in_place_in)
}

fn edit_in_place_in(ctx: &Ctx, root: &Path) -> Verdict {
    let name = ctx.name("edit");
    let path = root.join(name.as_str());
    let (old, new) = (bytes(seed_for(ctx, "old"), 50_000), bytes(seed_for(ctx, "new"), 50_000));
    let mut planted = Planted::default();
    planted.file(path.clone(), &old)?;
    let mut conn = ctx.conn().map_err(|p| problem("GET-1", "handshake", &p))?;
    // Served once: the server may remember the digest.
    match call(&mut conn, &Request::Get { name: name.clone(), offset: 0 }, "GET-1")? {
        Reply::Get { frame, data, .. } if data == old && frame.md5 == Digest::of(&old) => {}
        other => return Err(fail("GET-1", format!("GET {name}, written by hand: {}", other.describe()))),
    }
    let before = match call(&mut conn, &Request::Stat(name.clone()), "STAT-1")? {
        Reply::Stat(e) => e,
        other => return Err(fail("STAT-1", format!("STAT {name}: {}", other.describe()))),
    };
    let meta = std::fs::metadata(&path).map_err(|e| harness(&e.to_string()))?;
    let mtime = meta.modified().map_err(|e| harness(&e.to_string()))?;
    let edit = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.write_all(&new)?;
        f.set_modified(mtime)
    };
    // File systems stamp status changes with a coarse clock: the edit is made again until its
    // status-change time differs from the file's before, as it would for any edit by hand that
    // comes later than a few milliseconds after the file was written.
    let started = Instant::now();
    loop {
        edit().map_err(|e| harness(&format!("editing {}: {e}", path.display())))?;
        let after = std::fs::metadata(&path).map_err(|e| harness(&e.to_string()))?;
        if changed(&meta, &after) || started.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let meta = std::fs::metadata(&path).map_err(|e| harness(&e.to_string()))?;
    if meta.len() != old.len() as u64 || meta.modified().ok() != Some(mtime) {
        return Ok(Outcome::HarnessError(format!("{}: the edit did not keep the size and mtime", path.display())));
    }
    match call(&mut conn, &Request::Stat(name.clone()), "STAT-1")? {
        Reply::Stat(e) if e.md5 == Some(Digest::of(&old)) => {
            return Err(fail(
                "LIST-3",
                format!("STAT {name} after an edit in place (same size, mtime set back): the old content's digest"),
            ))
        }
        Reply::Stat(e) => check_entry(&e, &new, Some(before.mtime_ms), "STAT", "STAT-1")?,
        other => return Err(fail("STAT-1", format!("STAT {name}: {}", other.describe()))),
    }
    match call(&mut conn, &Request::Get { name: name.clone(), offset: 0 }, "GET-1")? {
        Reply::Get { frame, data, .. } => {
            let what = format!("GET {name} after an edit in place (same size, mtime set back)");
            if data != new {
                return Err(fail("GET-1", format!("{what}: not the new bytes")));
            }
            if frame.md5 != Digest::of(&new) {
                let old_one = if frame.md5 == Digest::of(&old) { " (the old content's)" } else { "" };
                return Err(fail("GET-1", format!("{what}: the new bytes with digest {}{old_one}", frame.md5)));
            }
        }
        other => return Err(fail("GET-1", format!("GET {name} after an edit in place: {}", other.describe()))),
    }
    Ok(Outcome::Pass)
}

/// Whether a file's status-change time moved.
#[cfg(unix)]
fn changed(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (before.ctime(), before.ctime_nsec()) != (after.ctime(), after.ctime_nsec())
}

#[cfg(not(unix))]
fn changed(_before: &std::fs::Metadata, _after: &std::fs::Metadata) -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// Watching the root during uploads

fn names_in(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Polls the root on a thread: every entry that was not there at the start, with when it was
/// first seen.
struct Watcher {
    seen: Arc<Mutex<BTreeMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(root: &Path) -> Self {
        let before = names_in(root);
        let (seen, stop) = (Arc::new(Mutex::new(BTreeMap::new())), Arc::new(AtomicBool::new(false)));
        let (s, st, root) = (seen.clone(), stop.clone(), root.to_owned());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let now = Instant::now();
                let names = names_in(&root);
                let mut seen = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for n in names.into_iter().filter(|n| !before.contains(n)) {
                    seen.entry(n).or_insert(now);
                }
                drop(seen);
                std::thread::sleep(POLL);
            }
        });
        Self { seen, stop, thread: Some(thread) }
    }

    fn seen(&self) -> BTreeMap<String, Instant> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn stop(mut self) -> BTreeMap<String, Instant> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn upload_watch(ctx: &Ctx) -> Verdict {
    guarded(ctx, upload_watch_in)
}

fn upload_watch_in(ctx: &Ctx, root: &Path) -> Verdict {
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let name = ctx.name("watched");
    let data = bytes(seed_for(ctx, "watched"), PIECE * PIECES);
    let mut conn = ctx.conn().map_err(|p| problem("STORE-1", "handshake", &p))?;
    let mut observer = ctx.conn().map_err(|p| problem("LIST-1", "handshake", &p))?;
    let watcher = Watcher::start(root);
    let head = request_bytes(&put_head(&name, PutMode::Overwrite, &data, None));
    conn.raw.send(&head).map_err(|e| fail("STORE-1", e.to_string()))?;
    let mut listed_during = None;
    for (i, piece) in data.chunks(PIECE).enumerate() {
        std::thread::sleep(PACE);
        conn.raw.send(piece).map_err(|e| fail("STORE-1", format!("sending the data: {e}")))?;
        if i == PIECES / 2 {
            // Half-way: what the root holds now is hidden from LIST.
            let now = watcher.seen();
            listed_during = Some((now, list(&mut observer)?));
        }
    }
    let last_sent = Instant::now();
    let reply = Replies::session().reply(&mut conn.raw, ctx.target.io_timeout);
    let seen = watcher.stop();
    match reply {
        Ok(Reply::Put { .. }) => {}
        Ok(r) => return Err(fail("PUT-2", format!("PUT {name}: {}", r.describe()))),
        Err(p) => return Err(problem("PUT-2", &format!("PUT {name}"), &p)),
    }
    if let Some(at) = seen.get(name.as_str()).filter(|t| **t < last_sent) {
        return Err(fail(
            "STORE-1",
            format!("{name} appeared in the root {:.0?} before the last data byte was sent", last_sent - *at),
        ));
    }
    for n in seen.keys().filter(|n| *n != name.as_str()) {
        if !n.starts_with(RESERVED_PREFIX) {
            return Err(fail(
                "STORE-7",
                format!("the upload of {name} made the entry {n:?} in the root: not under the reserved {RESERVED_PREFIX} prefix"),
            ));
        }
    }
    if let Some((then, entries)) = listed_during {
        if let Some(e) = entries.iter().find(|e| then.contains_key(e.name.as_str())) {
            return Err(fail(
                "LIST-1",
                format!("LIST during the upload of {name} shows {}, made by the upload", e.name),
            ));
        }
        if entries.iter().any(|e| e.name == name) {
            return Err(fail("STORE-1", format!("LIST during the upload of {name} shows it")));
        }
    }
    Ok(Outcome::Pass)
}

fn upload_cut(ctx: &Ctx) -> Verdict {
    guarded(ctx, upload_cut_in)
}

fn upload_cut_in(ctx: &Ctx, root: &Path) -> Verdict {
    if !writable(ctx)? {
        return Ok(read_only_server());
    }
    let name = ctx.name("cut");
    let data = bytes(seed_for(ctx, "cut"), PIECE * PIECES);
    let before = names_in(root);
    let mut conn = ctx.conn().map_err(|p| problem("STORE-2", "handshake", &p))?;
    let head = request_bytes(&put_head(&name, PutMode::Overwrite, &data, None));
    conn.raw.send(&head).map_err(|e| fail("STORE-2", e.to_string()))?;
    conn.raw.send(&data[..data.len() / 2]).map_err(|e| fail("STORE-2", e.to_string()))?;
    // Time for the server to start storing it.
    std::thread::sleep(Duration::from_millis(300));
    let during: Vec<String> = names_in(root).difference(&before).cloned().collect();
    drop(conn);
    let cut = Instant::now();
    let mut left: Vec<String>;
    loop {
        left = names_in(root).difference(&before).cloned().collect();
        if left.is_empty() || cut.elapsed() > CUT_WAIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !left.is_empty() {
        return Err(fail(
            "STORE-2",
            format!(
                "{:.1?} after an upload of {name} was cut off by a disconnect, the root still holds {left:?} \
                 (while it arrived: {during:?})",
                cut.elapsed()
            ),
        ));
    }
    let mut other = ctx.conn().map_err(|p| problem("STORE-2", "handshake", &p))?;
    if get_whole(&mut other, &name, "STORE-2")?.is_some() {
        return Err(fail("STORE-2", format!("{name} exists after its upload was cut off")));
    }
    Ok(Outcome::Pass)
}
