//! The command template: how the suite runs the client under test (conformance/README.md,
//! "The client contract").

use std::fmt;

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["addr", "op", "name", "dir", "path", "timeout", "profile"];

/// What one run of the client is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Download `{name}` into `{dir}`, as `{dir}/{name}`.
    Get,
    /// Upload the local file `{path}` as `{name}`.
    Put,
    /// List the server's files.
    List,
    /// Delete `{name}`.
    Rm,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::List => "list",
            Self::Rm => "rm",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The values of one run.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    pub addr: String,
    pub op: Op,
    pub name: &'a str,
    pub dir: &'a str,
    pub path: &'a str,
    /// Seconds, a whole number.
    pub timeout: u64,
    /// `v1` or `legacy`.
    pub profile: &'a str,
}

impl Values<'_> {
    fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "addr" => self.addr.clone(),
            "op" => self.op.as_str().to_owned(),
            "name" => self.name.to_owned(),
            "dir" => self.dir.to_owned(),
            "path" => self.path.to_owned(),
            "timeout" => self.timeout.to_string(),
            "profile" => self.profile.to_owned(),
            _ => return None,
        })
    }
}

/// A parsed template: the program and its arguments, each a run of literal text and
/// placeholders. `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    words: Vec<Vec<Piece>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Hole(&'static str),
}

impl Template {
    /// Parses `argv`.
    ///
    /// # Errors
    /// An empty command, an unknown or unclosed placeholder, or one without `{addr}` or `{op}`
    /// (a client that is not told where to connect or what to do cannot be judged).
    pub fn parse(argv: &[String]) -> Result<Self, String> {
        if argv.is_empty() {
            return Err("no client command given (conformance client -- COMMAND…)".into());
        }
        let mut words = Vec::new();
        for word in argv {
            let mut pieces = Vec::new();
            let mut text = String::new();
            let mut chars = word.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '{' if chars.peek() == Some(&'{') => {
                        chars.next();
                        text.push('{');
                    }
                    '}' if chars.peek() == Some(&'}') => {
                        chars.next();
                        text.push('}');
                    }
                    '{' => {
                        let key: String = chars.by_ref().take_while(|&c| c != '}').collect();
                        let Some(&hole) = PLACEHOLDERS.iter().find(|p| **p == key) else {
                            return Err(format!(
                                "unknown placeholder {{{key}}} in {word:?} (known: {})",
                                PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(" ")
                            ));
                        };
                        if !text.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        pieces.push(Piece::Hole(hole));
                    }
                    '}' => return Err(format!("a lone }} in {word:?} (write }}}} for a literal brace)")),
                    c => text.push(c),
                }
            }
            if !text.is_empty() || pieces.is_empty() {
                pieces.push(Piece::Text(text));
            }
            words.push(pieces);
        }
        let t = Self { words };
        for needed in ["addr", "op"] {
            if !t.uses(needed) {
                return Err(format!("the command must use {{{needed}}}"));
            }
        }
        Ok(t)
    }

    /// Makes absolute every word without placeholders that names, relative to `base`, a file
    /// that exists (`./shim.sh`, `clients/pyferry.py`): the client runs in a working directory of
    /// the sandbox, where relative paths would find nothing.
    pub fn absolutize(&mut self, base: &std::path::Path) {
        for word in &mut self.words {
            if let [Piece::Text(t)] = word.as_slice() {
                let p = std::path::Path::new(t.as_str());
                if t.contains('/') && p.is_relative() && base.join(p).exists() {
                    *word = vec![Piece::Text(base.join(p).to_string_lossy().into_owned())];
                }
            }
        }
    }

    /// Whether a placeholder appears.
    pub fn uses(&self, key: &str) -> bool {
        self.words.iter().flatten().any(|p| matches!(p, Piece::Hole(k) if *k == key))
    }

    /// The command line for one run.
    pub fn render(&self, values: &Values<'_>) -> Vec<String> {
        self.words
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.clone(),
                        Piece::Hole(k) => values.get(k).unwrap_or_default(),
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn placeholders_are_filled_inside_words() {
        let t = Template::parse(&argv("shim --server={addr} {op} {name} -o {dir}/ {{x}}")).unwrap();
        let v = Values {
            addr: "127.0.0.1:5".into(),
            op: Op::Get,
            name: "a b",
            dir: "/t/d",
            path: "",
            timeout: 3,
            profile: "v1",
        };
        assert_eq!(t.render(&v), ["shim", "--server=127.0.0.1:5", "get", "a b", "-o", "/t/d/", "{x}"]);
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse(&[]).is_err());
        assert!(Template::parse(&argv("c {addr} {op} {nme}")).unwrap_err().contains("unknown placeholder {nme}"));
        assert!(Template::parse(&argv("c {op}")).unwrap_err().contains("{addr}"));
        assert!(Template::parse(&argv("c {addr} {op} }")).is_err());
    }
}
