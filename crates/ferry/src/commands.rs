//! Each command, run against a [`Client`]: output on stdout, notes and errors on stderr, an exit
//! status back.
//!
//! When a command names several files, every file is attempted (but a network failure, which
//! would only repeat, stops the rest) and the status is the highest of their statuses.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_client::{exit, Client, Error};
use ferry_proto::name::escape_for_display;
use ferry_proto::{Entry, Name, PutMode};

use crate::cli::Command;
use crate::format::{human_size, utc, JsonEntry, JsonRecord};
use crate::progress::Bars;
use crate::table::{is_ours, list_table, status_table};

/// Writes to stdout, ignoring a closed pipe (`ferry list | head`).
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Reports `e` and returns its exit status.
pub fn fail(bars: &Bars, e: &Error) -> u8 {
    bars.error(&format!("ferry: {e}"));
    e.exit_code()
}

/// Whether a failure on one file would only repeat on the next: the network is down, or the
/// user asked to stop.
fn stops_the_rest(e: &Error) -> bool {
    e.exit_code() == exit::NETWORK || matches!(e, Error::Cancelled)
}

/// Reports a usage error and returns its exit status.
pub fn usage(bars: &Bars, msg: &str) -> u8 {
    bars.error(&format!("ferry: {msg}"));
    exit::USAGE
}

/// Runs one command (not `shell`).
pub fn run(command: &Command, client: &mut Client, bars: &mut Bars) -> u8 {
    match command {
        Command::List { json } => list(client, bars, *json),
        Command::Get { names, output, force } => get(client, bars, names, output.as_deref(), *force),
        Command::Put { paths, as_name, overwrite, create_only: _ } => {
            put(client, bars, paths, as_name.as_deref(), *overwrite)
        }
        Command::Rm { names } => rm(client, bars, names),
        Command::Stat { name, json } => stat(client, bars, name, *json),
        Command::Status { json } => status(client, bars, *json),
        Command::Help => help(client, bars),
        Command::Shutdown => shutdown(client, bars),
        Command::Shell => usage(bars, "ferry shell cannot run inside itself"),
    }
}

/// Checks a name typed by the user against the protocol's rules.
fn parse_name(bars: &Bars, s: &str) -> Result<Name, u8> {
    Name::parse(s).map_err(|e| usage(bars, &format!("{} is not a valid file name: {e}", quote(s))))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", escape_for_display(s))
}

fn list(client: &mut Client, bars: &mut Bars, json: bool) -> u8 {
    match client.list(bars) {
        Ok(entries) => {
            print_list(&entries, json);
            exit::OK
        }
        Err(e) => fail(bars, &e),
    }
}

/// Prints LIST's entries as a table, or as JSON.
pub fn print_list(entries: &[Entry], json: bool) {
    if json {
        let v: Vec<JsonEntry> = entries.iter().map(JsonEntry::from).collect();
        out(&format!("{}\n", serde_json::to_string_pretty(&v).expect("plain data")));
    } else {
        out(&list_table(entries));
    }
}

fn stat(client: &mut Client, bars: &mut Bars, name: &str, json: bool) -> u8 {
    let name = match parse_name(bars, name) {
        Ok(n) => n,
        Err(code) => return code,
    };
    match client.stat(&name, bars) {
        Ok(e) if json => {
            out(&format!("{}\n", serde_json::to_string_pretty(&JsonEntry::from(&e)).expect("plain data")));
            exit::OK
        }
        Ok(e) => {
            out(&format!(
                "name:     {}\nsize:     {} ({})\nmodified: {} UTC\nmd5:      {}\n",
                e.name.escaped(),
                e.size,
                human_size(e.size),
                utc(e.mtime_ms),
                e.md5.map_or_else(|| "not computed yet".to_owned(), |d| d.to_string()),
            ));
            exit::OK
        }
        Err(e) => fail(bars, &e),
    }
}

fn status(client: &mut Client, bars: &mut Bars, json: bool) -> u8 {
    match client.status(bars) {
        Ok(records) => {
            let ours = client.local_addr();
            if json {
                let v: Vec<JsonRecord> = records.iter().map(|r| JsonRecord::new(r, is_ours(r, ours))).collect();
                out(&format!("{}\n", serde_json::to_string_pretty(&v).expect("plain data")));
            } else {
                out(&status_table(&records, ours));
            }
            exit::OK
        }
        Err(e) => fail(bars, &e),
    }
}

fn help(client: &mut Client, bars: &mut Bars) -> u8 {
    match client.help(bars) {
        Ok(text) => {
            // Line by line, so that newlines survive and everything else invisible is escaped.
            let mut shown = String::new();
            for line in text.lines() {
                shown.push_str(&escape_for_display(line));
                shown.push('\n');
            }
            out(&shown);
            exit::OK
        }
        Err(e) => fail(bars, &e),
    }
}

fn shutdown(client: &mut Client, bars: &mut Bars) -> u8 {
    match client.shutdown(bars) {
        Ok(()) => {
            bars.note(&format!("ferry: the server at {} is shutting down", client.config().server));
            exit::OK
        }
        Err(e) => fail(bars, &e),
    }
}

fn rm(client: &mut Client, bars: &mut Bars, names: &[String]) -> u8 {
    let names = match names.iter().map(|n| parse_name(bars, n)).collect::<Result<Vec<_>, _>>() {
        Ok(n) => n,
        Err(code) => return code,
    };
    let mut code = exit::OK;
    for name in &names {
        match client.delete(name, bars) {
            Ok(()) => bars.note(&format!("deleted {name}")),
            Err(e) => {
                code = code.max(fail(bars, &e));
                if stops_the_rest(&e) {
                    break;
                }
            }
        }
    }
    code
}

/// Where each download goes: `-o` names the file (one name) or a directory; by default, the
/// current directory. The file name is the remote name, which is a plain name (`[NAME-11]`).
fn destinations(names: &[Name], output: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    match output {
        None => Ok(names.iter().map(|n| PathBuf::from(n.as_str())).collect()),
        Some(dir) if dir.is_dir() => Ok(names.iter().map(|n| dir.join(n.as_str())).collect()),
        Some(_) if names.len() > 1 => Err("with several names, -o must be an existing directory".into()),
        Some(path) => Ok(vec![path.to_owned()]),
    }
}

fn get(client: &mut Client, bars: &mut Bars, names: &[String], output: Option<&Path>, force: bool) -> u8 {
    let names = match names.iter().map(|n| parse_name(bars, n)).collect::<Result<Vec<_>, _>>() {
        Ok(n) => n,
        Err(code) => return code,
    };
    let dests = match destinations(&names, output) {
        Ok(d) => d,
        Err(msg) => return usage(bars, &msg),
    };
    // Sizes for the overall bar of several files: one LIST.
    let sizes: HashMap<Name, u64> = if names.len() > 1 {
        client.list(bars).map(|l| l.into_iter().map(|e| (e.name, e.size)).collect()).unwrap_or_default()
    } else {
        HashMap::new()
    };
    let total = names.iter().filter_map(|n| sizes.get(n)).sum();
    bars.begin_batch("downloading", names.len(), total);
    let mut code = exit::OK;
    for (name, dest) in names.iter().zip(&dests) {
        let result = client.download(name, dest, force, bars);
        bars.file_done(sizes.get(name).copied().unwrap_or(0));
        match result {
            Ok(d) => {
                let resumed = d.resumed_from.map(|o| format!(", resumed at {}", human_size(o))).unwrap_or_default();
                bars.note(&format!(
                    "{} -> {} ({}, MD5 verified{resumed})",
                    d.name,
                    escape_for_display(&d.path.display().to_string()),
                    human_size(d.size),
                ));
            }
            Err(e) => {
                code = code.max(fail(bars, &e));
                if stops_the_rest(&e) {
                    break;
                }
            }
        }
    }
    bars.end_batch();
    code
}

fn put(client: &mut Client, bars: &mut Bars, paths: &[PathBuf], as_name: Option<&str>, overwrite: bool) -> u8 {
    if as_name.is_some() && paths.len() > 1 {
        return usage(bars, "--as names one file; give one PATH with it");
    }
    let mut names = Vec::new();
    for path in paths {
        let name = match as_name {
            Some(n) => n.to_owned(),
            None => match path.file_name() {
                Some(f) => f.to_string_lossy().into_owned(),
                None => return usage(bars, &format!("{} has no file name; choose one with --as", path.display())),
            },
        };
        match Name::parse(&name) {
            Ok(n) => names.push(n),
            Err(e) => {
                return usage(
                    bars,
                    &format!("{} cannot be a file name on the server: {e}; choose one with --as", quote(&name)),
                )
            }
        }
    }
    let mode = if overwrite { PutMode::Overwrite } else { PutMode::CreateOnly };
    let sizes: Vec<u64> = paths.iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).collect();
    bars.begin_batch("uploading", paths.len(), sizes.iter().sum());
    let mut code = exit::OK;
    for ((path, name), size) in paths.iter().zip(&names).zip(&sizes) {
        let result = client.upload(path, name, mode, bars);
        bars.file_done(*size);
        match result {
            Ok(u) => {
                let how = if u.replaced { "replaced" } else { "created" };
                bars.note(&format!(
                    "{} -> {} ({}, {how}, MD5 {})",
                    escape_for_display(&path.display().to_string()),
                    u.name,
                    human_size(u.size),
                    u.md5
                ));
            }
            Err(e) => {
                code = code.max(fail(bars, &e));
                if stops_the_rest(&e) {
                    break;
                }
            }
        }
    }
    bars.end_batch();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_follow_o() {
        let names = [Name::parse("a").unwrap(), Name::parse("b").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(destinations(&names, None).unwrap(), [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(destinations(&names, Some(dir.path())).unwrap(), [dir.path().join("a"), dir.path().join("b")]);
        assert!(destinations(&names, Some(&dir.path().join("nope"))).is_err());
        assert_eq!(destinations(&names[..1], Some(&dir.path().join("x"))).unwrap(), [dir.path().join("x")]);
    }
}
