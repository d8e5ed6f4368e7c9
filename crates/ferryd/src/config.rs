//! `--config FILE`: settings from a TOML file, each key named like a flag.
//!
//! The file is turned into the command-line arguments it stands for, placed before the real ones,
//! and the whole is parsed by clap again: so a key takes exactly what its flag takes, with the
//! same bounds and messages, and nothing needs to be said twice. A key whose flag was given on
//! the command line (or through its environment variable) is left out: the command line wins.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, ValueHint};

use crate::cli::Cli;

/// The parsed command line, and whether `--root` was left at its built-in default.
pub struct Parsed {
    pub cli: Cli,
    pub default_root: bool,
}

/// Parses `args` (the first being the program's name), with the config file they name if any.
/// Exits, as clap does, on `--help`, `--version` and usage errors (status 2); a config file that
/// cannot be read or has a bad key or value is a usage error too, with the file's name in front.
pub fn parse(args: Vec<OsString>) -> Parsed {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&args).unwrap_or_else(|e| e.exit());
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else { return finish(&matches) };
    let from_file = match read(&command, &matches, &path) {
        Ok(args) => args,
        Err(message) => usage_error(&path, &message),
    };
    let mut all = vec![args[0].clone()];
    all.extend(from_file);
    all.extend(args.into_iter().skip(1));
    match command.try_get_matches_from(all) {
        Ok(matches) => finish(&matches),
        Err(e) => {
            let rendered = e.render().to_string();
            usage_error(&path, rendered.trim_start_matches("error: ").trim_end())
        }
    }
}

fn finish(matches: &ArgMatches) -> Parsed {
    let cli = Cli::from_arg_matches(matches).unwrap_or_else(|e| e.exit());
    let default_root = matches.value_source("root") == Some(ValueSource::DefaultValue);
    Parsed { cli, default_root }
}

fn usage_error(path: &Path, message: &str) -> ! {
    eprintln!("error: in the config file {}: {message}", path.display());
    std::process::exit(2)
}

/// Flags that have no key: they are about reading the command line itself.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// Reads the file into the arguments it stands for, leaving out those the command line sets.
fn read(command: &clap::Command, matches: &ArgMatches, path: &Path) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| e.to_string().trim_end().to_owned())?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut args = Vec::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_KEYS.contains(&key.as_str()))
            .ok_or_else(|| {
                format!("unknown key `{key}`: keys are ferryd's flags without the dashes (ferryd --help)")
            })?;
        let takes_value = arg.get_action().takes_values();
        let flag = match value {
            toml::Value::Boolean(on) if !takes_value => on.then(|| OsString::from(format!("--{key}"))),
            _ if !takes_value => return Err(format!("`{key}` is a switch: write `{key} = true` or `{key} = false`")),
            toml::Value::String(_) | toml::Value::Integer(_) | toml::Value::Float(_) => {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(x) => x.to_string(),
                    _ => unreachable!("matched above"),
                };
                let mut flag = OsString::from(format!("--{key}="));
                match arg.get_value_hint() {
                    ValueHint::FilePath | ValueHint::DirPath | ValueHint::AnyPath => flag.push(base.join(text)),
                    _ => flag.push(text),
                }
                Some(flag)
            }
            _ => return Err(format!("`{key}` takes one value: a string or a number")),
        };
        // Checked above even when left out: a file that is wrong is wrong whatever the flags say.
        let overridden = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !overridden {
            args.extend(flag);
        }
    }
    Ok(args)
}
