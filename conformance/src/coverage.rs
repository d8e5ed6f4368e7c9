//! Which requirements the cases check: every server MUST that can be observed on the wire needs
//! at least one server case (`conformance run`), and every client MUST at least one client case
//! (`conformance client`).

use std::fmt::Write;

use ferry_proto::requirements::{Level, Requirement};

use crate::case::Case;
use crate::client::ClientCase;

/// Requirements on clients (or receivers in the client role): a server run cannot observe them;
/// `conformance client` does, and each of their MUSTs needs a client case.
pub const CLIENT_SIDE: &[&str] = &[
    "ENC-3", "ENC-7", "HELLO-7", "HELLO-8", "REQ-7", "GET-7", "PUT-6", "BYE-2", "BYE-3", "ERR-2", "ERR-3", "ERR-5",
    "NAME-11", "NAME-12", "TIME-6", "TIME-11", "LEG-6", "GET-9", "TLS-2", "TLS-3", "TLS-5", "TLS-6", "TRL-1", "TRL-10",
];

/// Server requirements no client can observe over the wire, and why. Some of them are checked all
/// the same where the suite runs beside the server (`--root`): they stay here, so that a run
/// over the wire alone is not held to them, and the table shows the cases that check them.
pub const NOT_ON_THE_WIRE: &[(&str, &str)] = &[
    ("SEC-1", "what a server writes to its logs"),
    ("STORE-3", "durability across a power loss"),
    ("NAME-9", "refusing to start on case-insensitive storage"),
    ("SEC-3", "how much work a server does at once internally"),
    ("ROLE-3", "needs to know that the server is configured read-only, which nothing on the wire says"),
    (
        "NAME-10",
        "needs a symbolic link in the server's root, which no request can create: the local.* cases plant one \
         when run with --root on the server's machine",
    ),
    (
        "STORE-8",
        "needs a directory or symbolic link in the server's root, which no request can create: the local.* cases \
         plant them when run with --root on the server's machine",
    ),
    ("GET-6", "needs a storage read error in the middle of a GET, which no request can cause"),
    ("ENC-4", "no client-to-server message has an opt<T> field, so a server never receives a presence byte"),
];

/// One requirement and the cases that cite it.
#[derive(Debug)]
pub struct Row<'a> {
    pub req: &'a Requirement,
    /// Server cases, then client cases.
    pub cases: Vec<&'a str>,
    /// Whether it binds clients: client cases must check it.
    pub client_side: bool,
    /// Client cases among `cases`.
    pub client_cases: usize,
    /// Why no server case is expected, if none is.
    pub exempt: Option<&'static str>,
}

/// The coverage table, in PROTOCOL.md's order.
pub fn table<'a>(spec: &'a [Requirement], cases: &'a [Case], clients: &'a [ClientCase]) -> Vec<Row<'a>> {
    spec.iter()
        .map(|req| {
            let mut ids: Vec<&str> =
                cases.iter().filter(|c| c.requirements.iter().any(|r| r == &req.id)).map(|c| c.id.as_str()).collect();
            ids.dedup();
            let client: Vec<&str> =
                clients.iter().filter(|c| c.requirements.iter().any(|r| r == &req.id)).map(|c| c.id.as_str()).collect();
            let client_side = CLIENT_SIDE.contains(&req.id.as_str());
            let exempt = if client_side {
                Some("client side: conformance client checks it")
            } else {
                NOT_ON_THE_WIRE.iter().find(|(id, _)| *id == req.id).map(|(_, why)| *why)
            };
            let client_cases = client.len();
            ids.extend(client);
            Row { req, cases: ids, client_side, client_cases, exempt }
        })
        .collect()
}

/// Client MUSTs the client suite cannot check yet, and why: its adversarial servers speak plain
/// TCP only. The `ferry` client's own tests check them (crates/client/tests/tls.rs,
/// crates/ferry/tests/tls.rs).
pub const NOT_IN_THE_CLIENT_SUITE: &[(&str, &str)] = &[
    ("TLS-2", "the client suite's servers do not speak TLS yet"),
    ("TLS-3", "the client suite's servers do not speak TLS yet"),
    ("TLS-5", "the client suite's servers do not speak TLS yet"),
    ("TLS-6", "needs a server address other than loopback, which the client suite does not use"),
];

/// The text of the table and whether every observable server MUST has a server case and every
/// client MUST a client case.
pub fn report(rows: &[Row<'_>]) -> (String, bool) {
    let mut out = String::new();
    let mut missing = Vec::new();
    let mut missing_client = Vec::new();
    let (mut client_musts, mut client_covered) = (0, 0);
    let mut covered = 0;
    for row in rows {
        let level = if row.req.level == Level::Must { "MUST" } else { "SHOULD" };
        let cases = if row.cases.is_empty() {
            row.exempt.map_or_else(|| "(none)".to_owned(), |why| format!("(not checked here: {why})"))
        } else {
            covered += 1;
            let shown: Vec<&str> = row.cases.iter().take(4).copied().collect();
            let more = row.cases.len().saturating_sub(4);
            if more > 0 {
                format!("{} … and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        let _ = writeln!(out, "{:<10} {:<6} § {:<5} {}", row.req.id, level, row.req.section, cases);
        if row.cases.is_empty() && row.exempt.is_none() && row.req.level == Level::Must {
            missing.push(row.req.id.as_str());
        }
        let untestable = NOT_IN_THE_CLIENT_SUITE.iter().any(|(id, _)| *id == row.req.id);
        if row.client_side && row.req.level == Level::Must && !untestable {
            client_musts += 1;
            if row.client_cases == 0 {
                missing_client.push(row.req.id.as_str());
            } else {
                client_covered += 1;
            }
        }
    }
    let _ = writeln!(out, "\n{covered} of {} requirements checked by at least one case", rows.len());
    let _ = writeln!(out, "{client_covered} of {client_musts} client MUSTs checked by a client case");
    if !missing.is_empty() {
        let _ = writeln!(out, "server MUSTs with no case: {}", missing.join(" "));
    }
    if !missing_client.is_empty() {
        let _ = writeln!(out, "client MUSTs with no client case: {}", missing_client.join(" "));
    }
    (out, missing.is_empty() && missing_client.is_empty())
}
