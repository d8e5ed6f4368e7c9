//! Each command, run against a [`Client`]: output on stdout, notes and errors on stderr, an exit
//! status back.
//!
//! When a command names several files, every file is attempted (but a network failure, which
//! would only repeat, stops the rest) and the status is the highest of their statuses.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_client::{exit, Client, Downloaded, Error};
use ferry_proto::name::escape_for_display;
use ferry_proto::{Entry, Name, PutMode};

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
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
        Command::Help { command: None } => help(client, bars),
        Command::Help { command: Some(c) } => command_help(bars, c),
        Command::Shutdown => shutdown(client, bars),
        Command::Sync { dir, from_server, delete, dry_run } => {
            let how = crate::sync::How { delete: *delete, dry_run: *dry_run };
            if *from_server {
                crate::sync::download(client, bars, dir, how)
            } else {
                crate::sync::upload(client, bars, dir, how)
            }
        }
        Command::Shell => usage(bars, "ferry shell cannot run inside itself"),
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut Cli::command(), "ferry", &mut out);
            exit::OK
        }
        Command::Man => match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock()) {
            Ok(()) => exit::OK,
            Err(e) => {
                bars.error(&format!("ferry: cannot write the manual page: {e}"));
                exit::REFUSED
            }
        },
    }
}

/// `ferry help COMMAND`: the command's own `--help`.
fn command_help(bars: &Bars, command: &str) -> u8 {
    match Cli::try_parse_from(["ferry", command, "--help"]) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            out(&e.render().to_string());
            exit::OK
        }
        _ => usage(bars, &format!("there is no command {} — ferry --help lists them", quote(command))),
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

/// Whether `s` is a pattern rather than a name: it has `*`, `?` or `[`.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The names the user's words stand for: each word a name, or a pattern matched against the
/// server's list (one LIST, asked only if there is a pattern). A pattern that matches nothing is
/// taken as a name, as a POSIX shell would, so that a file really called `a*` can still be asked
/// for; the server then answers `NOT_FOUND`. `*` and `?` do not match a leading `.`. Names
/// come out once each, in the order asked, a pattern's matches in the server's order.
fn expand_remote(client: &mut Client, bars: &mut Bars, words: &[String]) -> Result<Vec<Name>, u8> {
    let mut listed: Option<Vec<Entry>> = None;
    let mut names: Vec<Name> = Vec::new();
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: true,
    };
    for word in words {
        let matched: Vec<Name> = match glob::Pattern::new(word) {
            Ok(pattern) if is_pattern(word) => {
                if listed.is_none() {
                    listed = Some(client.list(bars).map_err(|e| fail(bars, &e))?);
                }
                let entries = listed.as_deref().unwrap_or_default();
                entries
                    .iter()
                    .filter(|e| pattern.matches_with(e.name.as_str(), options))
                    .map(|e| e.name.clone())
                    .collect()
            }
            _ => Vec::new(),
        };
        if matched.is_empty() {
            names.push(parse_name(bars, word)?);
        } else {
            names.extend(matched);
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// Where a download of `name` may go in `dir`: `dir/name`, provided the name is one plain file
/// name. A name from the server was already checked against `[NAME-11]` (no `/`, `\`, `..`,
/// control characters), so this never fails; it is here so that no server-provided name can
/// ever lead outside the directory, whatever changes elsewhere.
pub fn inside(dir: &Path, name: &Name) -> Option<PathBuf> {
    let mut parts = Path::new(name.as_str()).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(n)), None) if n == name.as_str() => Some(dir.join(n)),
        _ => None,
    }
}

/// Where each download goes: `-o` names the file (one name) or a directory; by default, the
/// current directory.
fn destinations(names: &[Name], output: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let into = |dir: &Path| -> Result<Vec<PathBuf>, String> {
        names
            .iter()
            .map(|n| inside(dir, n).ok_or_else(|| format!("{} is not a plain file name", quote(n.as_str()))))
            .collect()
    };
    match output {
        None => into(Path::new("")),
        Some(dir) if dir.is_dir() => into(dir),
        // `-o dir/` (or `.`, `..`) names a directory, which must exist.
        Some(dir) if ends_in_separator(dir) => {
            Err(format!("-o {}: no such directory", escape_for_display(&dir.display().to_string())))
        }
        Some(_) if names.len() > 1 => Err("with several names, -o must be an existing directory".into()),
        Some(path) => Ok(vec![path.to_owned()]),
    }
}

/// Whether `path` can only be a directory: it ends in `/` (or the platform's separator), or
/// is `.` or `..`.
fn ends_in_separator(path: &Path) -> bool {
    let s = path.as_os_str().to_string_lossy();
    s.ends_with(std::path::MAIN_SEPARATOR) || s.ends_with('/') || path.file_name().is_none()
}

fn get(client: &mut Client, bars: &mut Bars, words: &[String], output: Option<&Path>, force: bool) -> u8 {
    let names = match expand_remote(client, bars, words) {
        Ok(n) => n,
        Err(code) => return code,
    };
    if output == Some(Path::new("-")) {
        return match names.as_slice() {
            [name] => get_to_stdout(client, bars, name),
            _ => usage(bars, "-o - writes one file to standard output; name only one"),
        };
    }
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
            Ok(d) => bars.note(&downloaded_line(&d)),
            Err(Error::Cancelled) => {
                bars.end_batch();
                bars.error(&interrupted_download(bars, dest));
                return exit::INTERRUPTED;
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

/// The line printed for a finished download: `notes.txt -> notes.txt (13 B, MD5 verified)`.
pub fn downloaded_line(d: &Downloaded) -> String {
    let path = escape_for_display(&d.path.display().to_string());
    if d.up_to_date {
        return format!("{} -> {path} ({}, up to date: same MD5 as the server's)", d.name, human_size(d.size));
    }
    let resumed = d.resumed_from.map(|o| format!(", resumed at {}", human_size(o))).unwrap_or_default();
    format!("{} -> {path} ({}, MD5 verified{resumed})", d.name, human_size(d.size))
}

/// What Ctrl-C during the download to `dest` leaves, and how to go on.
fn interrupted_download(bars: &Bars, dest: &Path) -> String {
    let part = ferry_client::local::with_suffix(dest, ".part");
    let held = std::fs::metadata(&part).map_or(0, |m| m.len());
    let part = escape_for_display(&part.display().to_string());
    match (held, bars.again()) {
        (0, _) => "ferry: interrupted".to_owned(),
        (_, Some(again)) => {
            format!("ferry: interrupted; {part} keeps {} — to resume, run: {again}", human_size(held))
        }
        (_, None) => format!("ferry: interrupted; {part} keeps {}, and the same get resumes it", human_size(held)),
    }
}

fn get_to_stdout(client: &mut Client, bars: &mut Bars, name: &Name) -> u8 {
    bars.begin_batch("downloading", 1, 0);
    let result = client.download_to_writer(name, &mut std::io::stdout().lock(), bars);
    bars.file_done(0);
    bars.end_batch();
    match result {
        Ok(d) => {
            bars.note(&format!("{} -> standard output ({}, MD5 verified)", d.name, human_size(d.size)));
            exit::OK
        }
        Err(e) => fail(bars, &e),
    }
}

/// The name a local path gets on the server: `--as`, or the file's own name.
fn name_for(bars: &Bars, path: &Path, as_name: Option<&str>) -> Result<Name, u8> {
    if path.is_dir() {
        return Err(usage(
            bars,
            &format!(
                "{} is a directory: put uploads files — sync {} uploads the files in it",
                escape_for_display(&path.display().to_string()),
                escape_for_display(&path.display().to_string())
            ),
        ));
    }
    let name = match as_name {
        Some(n) => n.to_owned(),
        None if path == Path::new("-") => {
            return Err(usage(bars, "put - reads standard input: name the file with --as NAME"));
        }
        None => match path.file_name() {
            Some(f) => f.to_string_lossy().into_owned(),
            None => {
                return Err(usage(
                    bars,
                    &format!(
                        "{} has no file name; choose one with --as",
                        escape_for_display(&path.display().to_string())
                    ),
                ))
            }
        },
    };
    Name::parse(&name).map_err(|e| {
        usage(bars, &format!("{} cannot be a file name on the server: {e}; choose one with --as", quote(&name)))
    })
}

/// Standard input, copied to a temporary file so that its size (and, for a server without the
/// trailing form, its MD5) is known before it is sent.
fn spool_stdin(bars: &Bars) -> Result<tempfile::NamedTempFile, u8> {
    let local = |e: std::io::Error| {
        bars.error(&format!("ferry: cannot copy standard input to a temporary file: {e}"));
        exit::REFUSED
    };
    let mut spool = tempfile::Builder::new().prefix("ferry-stdin-").tempfile().map_err(local)?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool).map_err(local)?;
    spool.as_file().sync_all().map_err(local)?;
    Ok(spool)
}

fn put(client: &mut Client, bars: &mut Bars, paths: &[PathBuf], as_name: Option<&str>, overwrite: bool) -> u8 {
    if as_name.is_some() && paths.len() > 1 {
        return usage(bars, "--as names one file; give one PATH with it");
    }
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return usage(bars, "standard input (-) can be read once");
    }
    let mut names = Vec::new();
    for path in paths {
        match name_for(bars, path, as_name) {
            Ok(n) => names.push(n),
            Err(code) => return code,
        }
    }
    let mode = if overwrite { PutMode::Overwrite } else { PutMode::CreateOnly };
    // Standard input is read whole first: the frame needs its size before the data.
    let spool = if paths.iter().any(|p| p.as_os_str() == "-") {
        match spool_stdin(bars) {
            Ok(s) => Some(s),
            Err(code) => return code,
        }
    } else {
        None
    };
    let local_path = |p: &PathBuf| match &spool {
        Some(s) if p.as_os_str() == "-" => s.path().to_owned(),
        _ => p.clone(),
    };
    let sizes: Vec<u64> = paths.iter().map(|p| std::fs::metadata(local_path(p)).map_or(0, |m| m.len())).collect();
    bars.begin_batch("uploading", paths.len(), sizes.iter().sum());
    let mut code = exit::OK;
    for ((path, name), size) in paths.iter().zip(&names).zip(&sizes) {
        let from_stdin = path.as_os_str() == "-";
        let result = if from_stdin {
            client.upload_temporary(&local_path(path), name, mode, bars)
        } else {
            client.upload(path, name, mode, bars)
        };
        bars.file_done(*size);
        match result {
            Ok(u) => {
                let how = if u.replaced { "replaced" } else { "created" };
                let shown = if from_stdin {
                    "standard input".to_owned()
                } else {
                    escape_for_display(&path.display().to_string())
                };
                bars.note(&format!("{shown} -> {} ({}, {how}, MD5 {})", u.name, human_size(u.size), u.md5));
            }
            Err(Error::Cancelled) => {
                bars.end_batch();
                bars.error("ferry: interrupted; nothing of that file was kept by the server");
                return exit::INTERRUPTED;
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
        let missing = destinations(&names[..1], Some(Path::new("/nonexistent/dir/"))).unwrap_err();
        assert_eq!(missing, "-o /nonexistent/dir/: no such directory");
    }

    #[test]
    fn a_name_from_the_server_stays_inside_the_directory() {
        let dir = Path::new("dl");
        for plain in ["a", "..a", "a..", "-rf", " x ", "report\u{202e}fdp.exe"] {
            let name = Name::parse(plain).unwrap();
            assert_eq!(inside(dir, &name), Some(dir.join(plain)), "{plain}");
        }
        // Names that are not plain cannot be made (`[NAME-4]`, `[NAME-5]`), and none of them
        // could get through `inside` if they were.
        for bad in ["..", ".", "a/b", "/etc/passwd", "a\\b"] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_are_told_from_names() {
        assert!(is_pattern("*.log") && is_pattern("a?") && is_pattern("[ab]"));
        assert!(!is_pattern("notes.txt"));
    }
}
