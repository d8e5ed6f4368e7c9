//! `ferry sync`: a directory mirrored to the server, or the server to a directory, sending only
//! the files whose MD5 differs — rsync's `--checksum` mode, with no round trip beyond one LIST,
//! since LIST carries every digest the server knows (`[LIST-3]`).
//!
//! Only the directory's own regular files count (the namespace is flat), and only those whose
//! names are valid on the server. A server file without an MD5 yet (`[LIST-5]`) cannot be
//! compared and is sent. `--delete` removes what the other side lacks; downloading, it never
//! removes a download's `.part` or `.part.meta` file. `--dry-run` says what would be done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_client::{exit, Client, Error};
use ferry_proto::name::escape_for_display;
use ferry_proto::{Entry, Name, PutMode};

use crate::commands::{downloaded_line, fail, inside, out, usage};
use crate::format::human_size;
use crate::progress::Bars;

/// How to sync.
#[derive(Debug, Clone, Copy)]
pub struct How {
    pub delete: bool,
    pub dry_run: bool,
}

/// What was done, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    bytes: u64,
    same: usize,
    deleted: usize,
    failed: usize,
}

impl Tally {
    fn line(&self, verb: &str, how: How) -> String {
        let would = if how.dry_run { "would be " } else { "" };
        let mut parts = vec![
            format!("{} {would}{verb} ({})", self.sent, human_size(self.bytes)),
            format!("{} up to date", self.same),
        ];
        if how.delete {
            parts.push(format!("{} {would}deleted", self.deleted));
        }
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        format!("sync: {}", parts.join(", "))
    }
}

/// Ctrl-C: what was done so far, and the command that goes on (a sync run again sends only
/// what still differs, and resumes a download cut off from its `.part`).
fn interrupted(bars: &Bars, summary: &str) -> u8 {
    bars.note(summary);
    match bars.again() {
        Some(again) => bars.error(&format!("ferry: interrupted — to go on, run: {again}")),
        None => bars.error("ferry: interrupted"),
    }
    exit::INTERRUPTED
}

/// What to do with one file.
enum Plan {
    /// Send it; `replace` when the other side has a different file of that name.
    Send {
        replace: bool,
    },
    Same,
}

/// The directory's regular files whose names the server could hold, by name; notes the others.
fn local_files(bars: &Bars, dir: &Path) -> Result<BTreeMap<Name, PathBuf>, u8> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        bars.error(&format!("ferry: cannot read the directory {}: {e}", shown(dir)));
        exit::REFUSED
    })?;
    let mut files = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let raw = entry.file_name();
        match raw.to_str().map(Name::parse) {
            Some(Ok(name)) => {
                files.insert(name, path);
            }
            _ => bars.note(&format!("ferry: skipping {}: not a name the server can hold", shown(&path))),
        }
    }
    Ok(files)
}

fn shown(path: &Path) -> String {
    escape_for_display(&path.display().to_string())
}

/// Whether the local file is the server's `entry`: the same size and MD5.
fn plan(client: &mut Client, bars: &mut Bars, path: &Path, entry: Option<&Entry>) -> Result<Plan, Error> {
    let Some(entry) = entry else { return Ok(Plan::Send { replace: false }) };
    match entry.md5 {
        Some(md5) if std::fs::metadata(path).is_ok_and(|m| m.len() == entry.size) => {
            if client.local_digest(path, bars)? == md5 {
                Ok(Plan::Same)
            } else {
                Ok(Plan::Send { replace: true })
            }
        }
        _ => Ok(Plan::Send { replace: true }),
    }
}

fn check_dir(bars: &Bars, dir: &Path) -> Result<(), u8> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(usage(bars, &format!("{} is not a directory", shown(dir))))
    }
}

/// `ferry sync DIR`: the server gets the directory's files.
pub fn upload(client: &mut Client, bars: &mut Bars, dir: &Path, how: How) -> u8 {
    if let Err(code) = check_dir(bars, dir) {
        return code;
    }
    let local = match local_files(bars, dir) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let remote: BTreeMap<Name, Entry> = match client.list(bars) {
        Ok(l) => l.into_iter().map(|e| (e.name.clone(), e)).collect(),
        Err(e) => return fail(bars, &e),
    };
    let mut tally = Tally::default();
    let mut code = exit::OK;
    for (name, path) in &local {
        let step = plan(client, bars, path, remote.get(name)).and_then(|p| match p {
            Plan::Same => Ok(None),
            Plan::Send { .. } if how.dry_run => Ok(Some(std::fs::metadata(path).map_or(0, |m| m.len()))),
            Plan::Send { replace } => {
                let mode = if replace { PutMode::Overwrite } else { PutMode::CreateOnly };
                let u = client.upload(path, name, mode, bars)?;
                let verb = if u.replaced { "replaced" } else { "created" };
                bars.note(&format!("{} -> {} ({}, {verb})", shown(path), u.name, human_size(u.size)));
                Ok(Some(u.size))
            }
        });
        match step {
            Ok(None) => tally.same += 1,
            Ok(Some(size)) => {
                if how.dry_run {
                    out(&format!("would upload {} ({})\n", shown(path), human_size(size)));
                }
                tally.sent += 1;
                tally.bytes += size;
            }
            Err(Error::Cancelled) => return interrupted(bars, &tally.line("uploaded", how)),
            Err(e) => {
                tally.failed += 1;
                code = code.max(fail(bars, &e));
                if e.exit_code() == exit::NETWORK {
                    bars.note(&tally.line("uploaded", how));
                    return code;
                }
            }
        }
    }
    if how.delete {
        for name in remote.keys().filter(|n| !local.contains_key(*n)) {
            if how.dry_run {
                out(&format!("would delete {name} on the server\n"));
                tally.deleted += 1;
                continue;
            }
            match client.delete(name, bars) {
                Ok(()) => {
                    bars.note(&format!("deleted {name} on the server"));
                    tally.deleted += 1;
                }
                Err(e) => {
                    tally.failed += 1;
                    code = code.max(fail(bars, &e));
                    if e.exit_code() == exit::NETWORK {
                        break;
                    }
                }
            }
        }
    }
    bars.note(&tally.line("uploaded", how));
    code
}

/// `ferry sync --from-server DIR`: the directory gets the server's files.
pub fn download(client: &mut Client, bars: &mut Bars, dir: &Path, how: How) -> u8 {
    if let Err(code) = check_dir(bars, dir) {
        return code;
    }
    let remote = match client.list(bars) {
        Ok(l) => l,
        Err(e) => return fail(bars, &e),
    };
    let mut tally = Tally::default();
    let mut code = exit::OK;
    for entry in &remote {
        let Some(dest) = inside(dir, &entry.name) else { continue };
        let exists = std::fs::symlink_metadata(&dest).is_ok();
        let step = if exists { plan(client, bars, &dest, Some(entry)) } else { Ok(Plan::Send { replace: false }) };
        let step = step.and_then(|p| match p {
            Plan::Same => Ok(false),
            Plan::Send { .. } if how.dry_run => Ok(true),
            // A local file that differs is replaced: that is what a mirror is for.
            Plan::Send { replace } => {
                let d = client.download(&entry.name, &dest, replace, bars)?;
                bars.note(&downloaded_line(&d));
                Ok(true)
            }
        });
        match step {
            Ok(false) => tally.same += 1,
            Ok(true) => {
                if how.dry_run {
                    out(&format!("would download {} ({})\n", entry.name, human_size(entry.size)));
                }
                tally.sent += 1;
                tally.bytes += entry.size;
            }
            Err(Error::Cancelled) => return interrupted(bars, &tally.line("downloaded", how)),
            Err(e) => {
                tally.failed += 1;
                code = code.max(fail(bars, &e));
                if e.exit_code() == exit::NETWORK {
                    bars.note(&tally.line("downloaded", how));
                    return code;
                }
            }
        }
    }
    if how.delete {
        let on_server: std::collections::HashSet<&str> = remote.iter().map(|e| e.name.as_str()).collect();
        let local = match local_files(bars, dir) {
            Ok(f) => f,
            Err(c) => return c,
        };
        for (name, path) in local {
            let ours = name.as_str().ends_with(".part") || name.as_str().ends_with(".part.meta");
            if on_server.contains(name.as_str()) || ours {
                continue;
            }
            if how.dry_run {
                out(&format!("would delete {}\n", shown(&path)));
                tally.deleted += 1;
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    bars.note(&format!("deleted {}", shown(&path)));
                    tally.deleted += 1;
                }
                Err(e) => {
                    tally.failed += 1;
                    code = code.max(fail(bars, &Error::Local { what: "delete", path, source: e }));
                }
            }
        }
    }
    bars.note(&tally.line("downloaded", how));
    code
}
