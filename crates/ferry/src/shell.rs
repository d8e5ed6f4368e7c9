//! `ferry shell`: the commands at a prompt, on one connection — the way users of the original
//! tools of this family work, from a menu of list, download, upload, delete, status, help and
//! exit.
//!
//! On a terminal the prompt has line editing, history (kept in `FERRY_HISTORY`, or
//! `~/.ferry_history`) and completion of commands and of the names the last `list` showed. When
//! standard input is not a terminal, commands are read from it one a line, with no prompt:
//! `ferry shell < script`. Blank lines and lines starting with `#` are skipped. Words are split
//! as a POSIX shell would for quotes and backslashes, so `get "my file.txt"` works.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use ferry_client::{exit, Client};
use rustyline::completion::{Candidate, Completer, FilenameCompleter, Pair};
use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::cli::{Command, ShellCommand, ShellLine};
use crate::commands;
use crate::progress::Bars;

const PROMPT: &str = "ferry> ";

/// The shell's menu.
pub const MENU: &str = "\
Commands:
  list [--json]                          list the files on the server  (also: ls)
  get NAME|PATTERN... [-o PATH|DIR|-]    download files: get '*.log'    (also: download)
  put PATH|PATTERN... [--as NAME]        upload files: put *.bin        (also: upload)
  rm NAME...                             delete files                   (also: delete)
  stat NAME                              one file's size, time and MD5
  status [--json]                        the server's recent connections
  sync DIR [--from-server] [--delete]    mirror a directory, sending only what differs
  lcd [DIR], lpwd                        change, print the local directory
  help [COMMAND]                         this menu and the server's help, or a command's options
  shutdown                               stop the server (admin token)
  exit                                   leave the shell                (also: quit, Ctrl-D)
Every command also takes --limit-rate RATE, --retries N and -q, for itself only.
Quote names with spaces: get \"my file.txt\"
Ctrl-C stops the command running (a download keeps its .part file; get resumes it).
";

/// Runs the shell until `exit` or end of input. Returns the status of the last command run.
///
/// On a terminal, Ctrl-C during a command sets `interrupt` (instead of ending ferry): the
/// command stops between two chunks of data — a download keeps its `.part` file — and the
/// prompt comes back. At the prompt, Ctrl-C abandons the line.
pub fn run(client: &mut Client, quiet: bool, interrupt: &Arc<AtomicBool>) -> u8 {
    if std::io::stdin().is_terminal() {
        interactive(client, quiet, interrupt)
    } else {
        scripted(client, quiet, interrupt)
    }
}

/// Reads commands from standard input, without a prompt.
fn scripted(client: &mut Client, quiet: bool, interrupt: &Arc<AtomicBool>) -> u8 {
    let mut last = exit::OK;
    let mut names = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match execute(&line, client, quiet, interrupt, &mut names) {
            Some(code) => last = code,
            None => break,
        }
    }
    last
}

fn interactive(client: &mut Client, quiet: bool, interrupt: &Arc<AtomicBool>) -> u8 {
    // Ctrl-C while a command runs (rustyline reads the prompt in raw mode, where it is a key).
    if let Err(e) = crate::interrupt::catch(interrupt.clone(), false) {
        eprintln!("ferry: cannot catch Ctrl-C ({e}); it will end the shell");
    }
    let mut bars = Bars::new(quiet);
    match client.connect(&mut bars) {
        Ok(hello) => eprintln!(
            "Connected to {}{} ({} access). Type help for the commands, exit to leave.",
            client.config().server,
            if client.is_tls() == Some(true) { " over TLS" } else { "" },
            hello.role
        ),
        Err(e) => {
            commands::fail(&bars, &e);
            eprintln!("Commands will try to connect again. Type help for the commands, exit to leave.");
        }
    }
    let config = Config::builder().max_history_size(1000).map(|b| b.auto_add_history(false).build());
    let mut editor: Editor<ShellHelper, FileHistory> = match config.and_then(Editor::with_config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ferry: cannot use the terminal for line editing ({e}); reading plain lines");
            return scripted(client, quiet, interrupt);
        }
    };
    editor.set_helper(Some(ShellHelper::default()));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut last = exit::OK;
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let mut names = editor.helper().map(|h| h.names.clone()).unwrap_or_default();
                let no_echo = crate::terminal::NoEcho::new();
                let outcome = execute(&line, client, quiet, interrupt, &mut names);
                drop(no_echo);
                if let Some(h) = editor.helper_mut() {
                    h.names = names;
                }
                match outcome {
                    Some(code) => last = code,
                    None => break,
                }
            }
            // Ctrl-C abandons the line, as in a shell.
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("ferry: reading the terminal failed: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    last
}

/// Where the history is kept.
fn history_path() -> Option<PathBuf> {
    match std::env::var_os("FERRY_HISTORY") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ferry_history")),
    }
}

/// Runs one line. `None`: leave the shell. `names` is refreshed by a `list`, for completion.
fn execute(
    line: &str,
    client: &mut Client,
    quiet: bool,
    interrupt: &Arc<AtomicBool>,
    names: &mut Vec<String>,
) -> Option<u8> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Some(exit::OK);
    }
    interrupt.store(false, Ordering::SeqCst);
    let bars = Bars::new(quiet).with_cancel(interrupt.clone()).with_again(trimmed.to_owned());
    let words = match split_words(trimmed) {
        Ok(w) => w,
        Err(msg) => return Some(commands::usage(&bars, &msg)),
    };
    let parsed = match ShellLine::try_parse_from(&words) {
        Ok(l) => l,
        Err(e) => return Some(parse_error(&bars, &words, &e)),
    };
    if let Some(option) = parsed.options.fixed_at_start() {
        return Some(commands::usage(
            &bars,
            &format!(
                "{option} is set when ferry starts, for the whole shell (ferry {option} … shell); \
                 a command here takes --limit-rate, --retries and -q"
            ),
        ));
    }
    // This command's own options, then the shell's again.
    let mut bars = if parsed.options.quiet {
        Bars::new(true).with_cancel(interrupt.clone()).with_again(trimmed.to_owned())
    } else {
        bars
    };
    let saved = client.config().clone();
    if let Some(rate) = parsed.options.limit_rate {
        client.config_mut().rate_limit = Some(rate);
    }
    if let Some(retries) = parsed.options.retries {
        client.config_mut().retry.retries = retries;
    }
    let code = run_line(parsed.command, client, &mut bars, names);
    let config = client.config_mut();
    config.rate_limit = saved.rate_limit;
    config.retry = saved.retry;
    code
}

/// Runs a parsed line's command.
fn run_line(command: ShellCommand, client: &mut Client, bars: &mut Bars, names: &mut Vec<String>) -> Option<u8> {
    Some(match command {
        ShellCommand::Exit => return None,
        ShellCommand::Lcd { dir } => {
            let dir = dir.or_else(|| std::env::var_os("HOME").map(PathBuf::from)).unwrap_or_else(|| ".".into());
            match std::env::set_current_dir(&dir) {
                Ok(()) => exit::OK,
                Err(e) => {
                    bars.error(&format!("ferry: cannot change to {}: {e}", shown(&dir)));
                    exit::REFUSED
                }
            }
        }
        ShellCommand::Lpwd => match std::env::current_dir() {
            Ok(d) => {
                commands::out(&format!("{}\n", shown(&d)));
                exit::OK
            }
            Err(e) => {
                bars.error(&format!("ferry: cannot tell the local directory: {e}"));
                exit::REFUSED
            }
        },
        ShellCommand::Command(Command::Shell) => {
            bars.note("already in the shell");
            exit::OK
        }
        ShellCommand::Command(Command::Help { command: Some(c) }) => command_help(bars, &c),
        ShellCommand::Command(Command::Help { command: None }) => {
            commands::out(MENU);
            commands::out("\nThe server says:\n");
            commands::run(&Command::Help { command: None }, client, bars)
        }
        ShellCommand::Command(Command::List { json }) => {
            // Keep the names for completion.
            match client.list(bars) {
                Ok(entries) => {
                    *names = entries.iter().map(|e| e.name.as_str().to_owned()).collect();
                    commands::print_list(&entries, json);
                    exit::OK
                }
                Err(e) => commands::fail(bars, &e),
            }
        }
        ShellCommand::Command(Command::Put { paths, as_name, overwrite, create_only }) => {
            let paths = expand_local(&paths);
            commands::run(&Command::Put { paths, as_name, overwrite, create_only }, client, bars)
        }
        ShellCommand::Command(c) => commands::run(&c, client, bars),
    })
}

fn shown(path: &std::path::Path) -> String {
    ferry_proto::name::escape_for_display(&path.display().to_string())
}

/// Expands local patterns (`put *.bin`), as a POSIX shell would have before `ferry put`: a
/// pattern that matches nothing stays as it is (and fails as a path).
pub fn expand_local(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        let s = p.to_string_lossy();
        let matched: Vec<PathBuf> = if commands::is_pattern(&s) {
            glob::glob(&s).map(|m| m.filter_map(Result::ok).collect()).unwrap_or_default()
        } else {
            Vec::new()
        };
        if matched.is_empty() {
            out.push(p.clone());
        } else {
            out.extend(matched);
        }
    }
    out
}

/// `help COMMAND` in the shell: the command's options, as the shell takes them.
fn command_help(bars: &Bars, command: &str) -> u8 {
    match ShellLine::try_parse_from([command, "--help"]) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            commands::out(&e.render().to_string());
            exit::OK
        }
        _ => {
            let word = ferry_proto::name::escape_for_display(command);
            commands::usage(bars, &format!("there is no command '{word}' — type help for the commands"))
        }
    }
}

/// Says what is wrong with a line, as the shell (not clap's command-line advice, such as its
/// tip to write `-- --limit-rate`).
fn parse_error(bars: &Bars, words: &[String], e: &clap::Error) -> u8 {
    use clap::error::{ContextKind, ErrorKind};
    let command = ferry_proto::name::escape_for_display(&words[0]);
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            commands::out(&e.render().to_string());
            exit::OK
        }
        ErrorKind::InvalidSubcommand => {
            commands::usage(bars, &format!("unknown command '{command}' — type help for the commands"))
        }
        ErrorKind::UnknownArgument => {
            let arg = e.get(ContextKind::InvalidArg).map(ToString::to_string).unwrap_or_default();
            let arg = ferry_proto::name::escape_for_display(&arg);
            commands::usage(bars, &format!("{command} does not take {arg} — help {command} lists its options"))
        }
        _ => {
            // clap's own message, less its tips and usage lines, which speak of `ferry`'s
            // command line.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("").trim_start_matches("error: ").to_owned();
            commands::usage(bars, &format!("{first} — help {command} lists its options"))
        }
    }
}

/// Splits a line into words: whitespace separates, `'…'` and `"…"` quote, `\` escapes the next
/// character (outside single quotes).
///
/// # Errors
/// An unterminated quote or a trailing backslash.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a line cannot end with \\".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The commands and aliases the shell knows, for completion.
const COMMANDS: &[&str] = &[
    "list", "ls", "get", "download", "put", "upload", "rm", "delete", "stat", "status", "sync", "lcd", "lpwd", "help",
    "shutdown", "exit", "quit",
];

/// Completion: commands first; then remote names for `get`, `rm` and `stat` (from the last
/// `list`), local paths for `put`.
#[derive(Default)]
struct ShellHelper {
    names: Vec<String>,
    files: FilenameCompleter,
}

/// Quotes a word for a POSIX shell (and for this one) if it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "._-+@%:,=/".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let partial = &before[start..];
        let first = before.split_whitespace().next().unwrap_or("");
        let pairs = |items: Vec<String>| {
            items.into_iter().map(|s| Pair { display: s.clone(), replacement: shell_quote(&s) }).collect::<Vec<_>>()
        };
        if start == 0 {
            let c = COMMANDS.iter().filter(|c| c.starts_with(partial)).map(|c| (*c).to_owned()).collect();
            return Ok((0, pairs(c)));
        }
        match first {
            "get" | "download" | "rm" | "delete" | "stat" => {
                let bare = partial.trim_start_matches(['\'', '"']);
                let n = self.names.iter().filter(|n| n.starts_with(bare)).cloned().collect();
                Ok((start, pairs(n)))
            }
            "put" | "upload" | "sync" | "lcd" => {
                let (s, c) = self.files.complete(line, pos, ctx)?;
                Ok((
                    s,
                    c.into_iter()
                        .map(|p| Pair { display: p.display().to_owned(), replacement: p.replacement })
                        .collect(),
                ))
            }
            _ => Ok((start, Vec::new())),
        }
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("get a b"), ["get", "a", "b"]);
        assert_eq!(w("  get   'my file.txt' "), ["get", "my file.txt"]);
        assert_eq!(w(r#"get "say \"hi\"" x\ y"#), ["get", r#"say "hi""#, "x y"]);
        assert_eq!(w("get ''"), ["get", ""]);
        assert_eq!(w(r"rm 'it'\''s fine'"), ["rm", "it's fine"]);
        assert!(split_words("rm it's").is_err());
        assert!(split_words("get 'open").is_err());
        assert!(split_words("get \"open").is_err());
        assert!(split_words("get x\\").is_err());
    }

    #[test]
    fn completed_words_are_quoted_when_needed() {
        assert_eq!(shell_quote("a.txt"), "a.txt");
        assert_eq!(shell_quote("my file"), "'my file'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
