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
  get NAME... [-o PATH|DIR] [--force]    download files                 (also: download)
  put PATH... [--as NAME] [--overwrite]  upload files                   (also: upload)
  rm NAME...                             delete files                   (also: delete)
  stat NAME                              one file's size, time and MD5
  status [--json]                        the server's recent connections
  help                                   this menu, and the server's help
  shutdown                               stop the server (admin token)
  exit                                   leave the shell                (also: quit, Ctrl-D)
Add --help to a command for its options. Quote names with spaces: get \"my file.txt\"
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
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone()) {
        eprintln!("ferry: cannot catch Ctrl-C ({e}); it will end the shell");
    }
    let mut bars = Bars::new(quiet);
    match client.connect(&mut bars) {
        Ok(hello) => eprintln!(
            "Connected to {} ({} access). Type help for the commands, exit to leave.",
            client.config().server,
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
                let outcome = execute(&line, client, quiet, interrupt, &mut names);
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
    let mut bars = Bars::new(quiet).with_cancel(interrupt.clone());
    let words = match split_words(trimmed) {
        Ok(w) => w,
        Err(msg) => return Some(commands::usage(&bars, &msg)),
    };
    let command = match ShellLine::try_parse_from(&words) {
        Ok(l) => l.command,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidSubcommand => {
            let word = ferry_proto::name::escape_for_display(&words[0]);
            return Some(commands::usage(&bars, &format!("unknown command '{word}' — type help for the commands")));
        }
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return Some(code);
        }
    };
    Some(match command {
        ShellCommand::Exit => return None,
        ShellCommand::Command(Command::Shell) => {
            bars.note("already in the shell");
            exit::OK
        }
        ShellCommand::Command(Command::Help) => {
            commands::out(MENU);
            commands::out("\nThe server says:\n");
            commands::run(&Command::Help, client, &mut bars)
        }
        ShellCommand::Command(Command::List { json }) => {
            // Keep the names for completion.
            match client.list(&mut bars) {
                Ok(entries) => {
                    *names = entries.iter().map(|e| e.name.as_str().to_owned()).collect();
                    commands::print_list(&entries, json);
                    exit::OK
                }
                Err(e) => commands::fail(&bars, &e),
            }
        }
        ShellCommand::Command(c) => commands::run(&c, client, &mut bars),
    })
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
    "list", "ls", "get", "download", "put", "upload", "rm", "delete", "stat", "status", "help", "shutdown", "exit",
    "quit",
];

/// Completion: commands first; then remote names for `get`, `rm` and `stat` (from the last
/// `list`), local paths for `put`.
#[derive(Default)]
struct ShellHelper {
    names: Vec<String>,
    files: FilenameCompleter,
}

/// Quotes a completed word if it needs it.
fn shell_quote(s: &str) -> String {
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
            "put" | "upload" => {
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
