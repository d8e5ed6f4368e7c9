//! Aligned text tables, and the two `ferry` prints: the file list and the connection history.
//!
//! Every cell that comes from the server is escaped first (`[NAME-12]`), and widths are counted
//! in terminal columns, so wide characters line up.

use std::net::SocketAddr;

use ferry_proto::name::escape_for_display;
use ferry_proto::{ConnRecord, Entry};
use unicode_width::UnicodeWidthStr;

use crate::format::{human_duration_ms, human_size, utc};

/// Where a column's text sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table: a header row and rows of cells, columns two spaces apart, no trailing spaces.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self { columns: columns.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines of text, each ending in a newline.
    pub fn render(&self) -> String {
        let cell = |row: &Vec<String>, i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.width()).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(row, i).width());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((_, align), width)) in self.columns.iter().zip(&widths).enumerate() {
                let text = cell(row, i);
                let pad = width - text.width();
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(&text);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(&text);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The LIST table: name, size, modification time (UTC) and MD5 (`-` where the server has not
/// computed it yet).
pub fn list_table(entries: &[Entry]) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("MODIFIED (UTC)", Align::Left),
        ("MD5", Align::Left),
    ]);
    for e in entries {
        t.row(vec![
            e.name.escaped(),
            human_size(e.size),
            utc(e.mtime_ms),
            e.md5.map_or_else(|| "-".to_owned(), |d| d.to_string()),
        ]);
    }
    let mut out = t.render();
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let files = if entries.len() == 1 { "file" } else { "files" };
    out.push_str(&format!("{} {files}, {}\n", entries.len(), human_size(total)));
    out
}

/// The STATUS table: one row per connection, oldest first; the connection that asked is marked.
pub fn status_table(records: &[ConnRecord], ours: Option<SocketAddr>) -> String {
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("PEER", Align::Left),
        ("CONNECTED (UTC)", Align::Left),
        ("DURATION", Align::Right),
        ("IN", Align::Right),
        ("OUT", Align::Right),
        ("STATE", Align::Left),
    ]);
    for r in records {
        let (duration, state) = match r.disconnected_ms {
            Some(end) => (human_duration_ms(end - r.connected_ms), "closed"),
            None if is_ours(r, ours) => ("-".to_owned(), "open (this one)"),
            None => ("-".to_owned(), "open"),
        };
        t.row(vec![
            r.id.to_string(),
            escape_for_display(&r.peer),
            utc(r.connected_ms),
            duration,
            human_size(r.bytes_in),
            human_size(r.bytes_out),
            state.to_owned(),
        ]);
    }
    t.render()
}

/// Whether `r` is the connection at local address `ours` (still open).
pub fn is_ours(r: &ConnRecord, ours: Option<SocketAddr>) -> bool {
    r.disconnected_ms.is_none() && ours.is_some_and(|a| r.peer == a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{Digest, Name};

    fn entry(name: &str, size: u64, md5: Option<&[u8]>) -> Entry {
        Entry { name: Name::parse(name).unwrap(), size, mtime_ms: 1_763_778_600_000, md5: md5.map(Digest::of) }
    }

    #[test]
    fn list_table_snapshot() {
        let entries = [
            entry("a.txt", 2, Some(b"hi")),
            entry("big.iso", 4_700_000_000, None),
            entry("名前.txt", 1536, Some(b"")),
            entry("tricky\u{202E}gpj.exe", 0, Some(b"")),
        ];
        insta::assert_snapshot!(list_table(&entries));
    }

    #[test]
    fn empty_list_table_snapshot() {
        insta::assert_snapshot!(list_table(&[]));
    }

    #[test]
    fn status_table_snapshot() {
        let records = [
            ConnRecord {
                id: 1,
                peer: "127.0.0.1:40000".into(),
                connected_ms: 1_763_778_600_000,
                disconnected_ms: Some(1_763_778_600_250),
                bytes_in: 40,
                bytes_out: 2_000_000,
            },
            ConnRecord {
                id: 12,
                peer: "[::1]:40002".into(),
                connected_ms: 1_763_778_660_000,
                disconnected_ms: None,
                bytes_in: 12,
                bytes_out: 0,
            },
            ConnRecord {
                id: 13,
                peer: "127.0.0.1:40004".into(),
                connected_ms: 1_763_778_720_000,
                disconnected_ms: None,
                bytes_in: 13,
                bytes_out: 25,
            },
        ];
        let ours = "127.0.0.1:40004".parse().ok();
        insta::assert_snapshot!(status_table(&records, ours));
    }

    #[test]
    fn cells_are_padded_by_display_width() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Right)]);
        t.row(vec!["名前".into(), "1".into()]);
        t.row(vec!["ab".into(), "22".into()]);
        assert_eq!(t.render(), "A      B\n名前   1\nab    22\n");
    }
}
