//! The client cases. Each starts a server whose script tells the lie the case is about (and is
//! honest otherwise), runs the client, and judges the exit status, the files and the wire.
//!
//! Faults a client may recover from by trying again — a reply cut off, a stall, `BUSY` — strike
//! the first connection only, so that a client that retries can succeed; faults a client must
//! refuse strike every connection.

use std::path::Path;
use std::sync::Arc;

use ferry_proto::{Digest, ErrorCode, Request};

use super::replies::{self, Store};
use super::server::{Act, ConnLog, Event, Script};
use super::template::Op;
use super::{
    escaped_output, fetched, finished, kept_nothing, refused, stayed_inside, whole_or_nothing, wire, Ask, ClientCase,
    Ctx, Judged, Observation, Stop,
};
use crate::case::Failure;

/// The file most cases download.
const NAME: &str = "report.bin";
/// The capabilities the server announces: RESUME and STATUS.
const CAPS: u32 = 0x06;
/// What every name meant to escape `{dir}` contains, so that it is found wherever it lands.
const MARK: &str = "ferry-escaped";

/// `n` bytes that are not all alike (every byte value appears), from `seed`.
pub fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn case(
    id: &str,
    title: &str,
    requirements: &[&str],
    run: impl Fn(&Ctx<'_>) -> Judged + Send + Sync + 'static,
) -> ClientCase {
    ClientCase {
        id: format!("client.{id}"),
        title: title.to_owned(),
        requirements: requirements.iter().map(|r| (*r).to_owned()).collect(),
        run: Box::new(run),
    }
}

/// A script that answers GET with `get(connection, offset)` and is honest otherwise.
fn on_get(store: &Store, get: impl Fn(usize, u64) -> Act + Send + Sync + 'static) -> Script {
    let store = store.clone();
    Arc::new(move |conn, e| match e {
        Event::Request(Request::Get { offset, .. }, _) => get(conn, *offset),
        e => store.answer(&e, CAPS),
    })
}

/// The GETs the client sent, on every connection.
fn gets(logs: &[ConnLog]) -> usize {
    logs.iter().flat_map(|l| &l.requests).filter(|r| matches!(r, Request::Get { .. })).count()
}

/// One download against `script`: the wire, then `judge`.
fn download(ctx: &Ctx<'_>, script: Script, judge: impl FnOnce(&Observation, &[ConnLog]) -> Judged) -> Judged {
    let s = ctx.session(script)?;
    let obs = s.run(&Ask::get(NAME))?;
    let logs = s.finish();
    wire(&logs)?;
    judge(&obs, &logs)
}

/// Nothing anywhere in the sandbox bears the escaping name's mark.
fn no_escape(obs: &Observation) -> Judged {
    if let Some(p) = obs.names.iter().find(|n| n.contains(MARK)) {
        return Err(Stop::fail(Failure::new(
            "NAME-11",
            format!("the client used a name from the server as a path: {} exists", super::escape(p)),
        )));
    }
    Ok(())
}

/// Names a server must never send, each with the mark (the absolute one inside the sandbox).
fn hostile_names(root: &Path) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("dotdot", "a name that starts with ../", format!("../{MARK}").into_bytes()),
        (
            "absolute",
            "an absolute path",
            root.join(format!("{MARK}-absolute")).to_string_lossy().into_owned().into_bytes(),
        ),
        ("backslash", "a name that starts with ..\\", format!("..\\{MARK}-backslash").into_bytes()),
        (
            "control",
            "a name with terminal escape sequences",
            format!("{MARK}\u{1b}]0;owned\u{7}\u{1b}[2J").into_bytes(),
        ),
        ("c1-control", "a name with a C1 control character", format!("{MARK}\u{9b}31m").into_bytes()),
        ("reserved", "a name that starts with .ferry", format!(".ferry-{MARK}").into_bytes()),
    ]
}

/// Every client case, in a stable order.
pub fn all() -> Vec<ClientCase> {
    let mut out = vec![
        case("get.ok", "A plain download succeeds, whole and exact", &["FRAME-5", "HELLO-1", "BYE-2"], |ctx| {
            let c = content(100_000, 1);
            let store = Store::with(&[(NAME, &c)]);
            download(ctx, store.script(CAPS), |obs, _| fetched(obs, &c, "FRAME-5"))
        }),
        case("get.empty", "An empty file downloads as an empty file", &["FRAME-5"], |ctx| {
            let store = Store::with(&[(NAME, b"")]);
            download(ctx, store.script(CAPS), |obs, _| fetched(obs, b"", "FRAME-5"))
        }),
        case("get.uppercase-md5", "A digest in uppercase hexadecimal is accepted", &["FRAME-4"], |ctx| {
            let c = content(5000, 2);
            let store = Store::with(&[(NAME, &c)]);
            let upper = Digest::of(&c).to_hex().to_ascii_uppercase();
            let script = on_get(&store, {
                let c = c.clone();
                move |_, off| Act::Send(replies::get(off, NAME.as_bytes(), c.len() as u64, &upper, &c[off as usize..]))
            });
            download(ctx, script, |obs, _| fetched(obs, &c, "FRAME-4"))
        }),
        case(
            "get.wrong-md5",
            "Data that does not match its MD5 fails, and leaves no file under the final name",
            &["FRAME-5"],
            |ctx| {
                let c = content(100_000, 3);
                let store = Store::with(&[(NAME, &c)]);
                let lie = Digest::of(b"other bytes").to_hex();
                let script = on_get(&store, {
                    let c = c.clone();
                    move |_, off| {
                        let off = off.min(c.len() as u64);
                        Act::Send(replies::get(off, NAME.as_bytes(), c.len() as u64, &lie, &c[off as usize..]))
                    }
                });
                download(ctx, script, |obs, _| refused(obs, "FRAME-5"))
            },
        ),
        case(
            "get.bad-digest-digit",
            "A digest with a byte that is not a hexadecimal digit is a malformed reply",
            &["FRAME-4"],
            |ctx| {
                let c = content(3000, 4);
                let store = Store::with(&[(NAME, &c)]);
                let mut bad = Digest::of(&c).to_hex();
                bad[7] = b'g';
                let script = on_get(&store, {
                    let c = c.clone();
                    move |_, _| Act::Fatal(replies::get(0, NAME.as_bytes(), c.len() as u64, &bad, &c), "FRAME-4")
                });
                download(ctx, script, |obs, _| refused(obs, "FRAME-4"))
            },
        ),
        case(
            "get.truncated",
            "A reply cut off by the server's close is never kept under the final name",
            &["FRAME-5"],
            |ctx| {
                let c = content(200_000, 5);
                let store = Store::with(&[(NAME, &c)]);
                let script = on_get(&store, {
                    let c = c.clone();
                    move |conn, off| {
                        let whole = replies::get_honest(NAME, &c, off);
                        if conn == 0 {
                            Act::Close(whole[..whole.len() - 100_000].to_vec())
                        } else {
                            Act::Send(whole)
                        }
                    }
                });
                download(ctx, script, |obs, _| whole_or_nothing(obs, &c, "FRAME-5"))
            },
        ),
        case(
            "get.size-differs-from-list",
            "The GET reply's size, not the one LIST or STAT showed, says how much data follows",
            &["FRAME-5"],
            |ctx| {
                let c = content(50_000, 6);
                let store = Store::with(&[(NAME, &c)]);
                let other = Digest::of(b"the listed version");
                let listed = c.len() as u64 + 4096;
                let inner = store.clone();
                let script: Script = Arc::new(move |_, e| match e {
                    Event::Request(Request::List, _) => {
                        Act::Send(replies::list(&[replies::entry(NAME.as_bytes(), listed, Some(other))]))
                    }
                    Event::Request(Request::Stat(_), _) => {
                        Act::Send(replies::stat(NAME.as_bytes(), listed, Some(other)))
                    }
                    e => inner.answer(&e, CAPS),
                });
                download(ctx, script, |obs, _| whole_or_nothing(obs, &c, "FRAME-5"))
            },
        ),
        case(
            "hello.unknown-capabilities",
            "Capability bits the client does not know are ignored",
            &["HELLO-8"],
            |ctx| {
                let c = content(10_000, 7);
                let store = Store::with(&[(NAME, &c)]);
                download(ctx, store.script(0xFFFF_FFF0 | CAPS), |obs, _| fetched(obs, &c, "HELLO-8"))
            },
        ),
        case(
            "hello.stall",
            "A server that accepts and never says hello is given up (within {timeout}), never waited for",
            &["TIME-11", "TIME-6"],
            |ctx| {
                let c = content(10_000, 8);
                let store = Store::with(&[(NAME, &c)]);
                let inner = store.clone();
                let script: Script = Arc::new(move |conn, e| match e {
                    Event::Accept if conn == 0 => Act::Stall(Vec::new()),
                    e => inner.answer(&e, CAPS),
                });
                let s = ctx.session(script)?;
                let obs = s.run(&Ask::get(NAME).timeout(1))?;
                let logs = s.finish();
                finished(&obs, "TIME-11")?;
                wire(&logs)?;
                whole_or_nothing(&obs, &c, "FRAME-5")
            },
        ),
        case(
            "get.stall",
            "A reply that stops in the middle, the connection open, is given up (within {timeout}), never waited for",
            &["TIME-11", "TIME-6", "FRAME-5"],
            |ctx| {
                let c = content(200_000, 9);
                let store = Store::with(&[(NAME, &c)]);
                let script = on_get(&store, {
                    let c = c.clone();
                    move |conn, off| {
                        let whole = replies::get_honest(NAME, &c, off);
                        if conn == 0 {
                            Act::Stall(whole[..whole.len() - 100_000].to_vec())
                        } else {
                            Act::Send(whole)
                        }
                    }
                });
                let s = ctx.session(script)?;
                let obs = s.run(&Ask::get(NAME).timeout(1))?;
                let logs = s.finish();
                finished(&obs, "TIME-11")?;
                wire(&logs)?;
                whole_or_nothing(&obs, &c, "FRAME-5")
            },
        ),
        case(
            "get.resume-changed",
            "A download resumed after the file changed on the server never splices the two versions",
            &["FRAME-5", "GET-7"],
            resume_changed,
        ),
        case(
            "error.message-too-long",
            "An error whose message is longer than ERROR_MESSAGE_MAX ends the connection at once, unread",
            &["ERR-2"],
            |ctx| {
                let c = content(1000, 10);
                let store = Store::with(&[(NAME, &c)]);
                // The length says 2048 bytes; none follow. A client that reads them waits for its
                // deadline, which this case sets far beyond the run's limit.
                let script = on_get(&store, |_, _| {
                    let mut e = vec![ferry_proto::tag::ERROR];
                    e.extend_from_slice(&ErrorCode::NOT_FOUND.0.to_be_bytes());
                    e.extend_from_slice(&2048u16.to_be_bytes());
                    Act::Fatal(e, "ERR-2")
                });
                let s = ctx.session(script)?;
                let timeout = ctx.settings.limit.as_secs() * 4 + 60;
                let obs = s.run(&Ask::get(NAME).timeout(timeout))?;
                let logs = s.finish();
                finished(&obs, "ERR-2")?;
                wire(&logs)?;
                refused(&obs, "ERR-2")
            },
        ),
        case(
            "error.invalid-utf8",
            "An error message that is not UTF-8 is handled as any other (BUSY, then a retry that succeeds)",
            &["ENC-7"],
            invalid_utf8,
        ),
        case(
            "error.busy-then-retry",
            "BUSY ends the connection whatever its message says; a retry on a new connection may then succeed",
            &["ERR-3"],
            |ctx| {
                let c = content(20_000, 11);
                let store = Store::with(&[(NAME, &c)]);
                download(ctx, busy_once(&store, b"NOT_FOUND: no such file"), |obs, _| {
                    whole_or_nothing(obs, &c, "ERR-3")
                })
            },
        ),
        case(
            "error.message-is-not-the-code",
            "A NOT_FOUND whose message says to try again is not retried: the code decides, not the message",
            &["ERR-3"],
            |ctx| {
                let c = content(1000, 12);
                let store = Store::with(&[(NAME, &c)]);
                let script = on_get(&store, |_, _| {
                    Act::Send(replies::error(ErrorCode::NOT_FOUND.0, b"BUSY: the server is at capacity, try again"))
                });
                download(ctx, script, |obs, logs| {
                    refused(obs, "ERR-3")?;
                    once(logs, "ERR-3", "NOT_FOUND")
                })
            },
        ),
        case(
            "error.unknown-recoverable",
            "An unknown code in the recoverable range fails the request",
            &["ERR-5"],
            |ctx| {
                let store = Store::with(&[(NAME, b"x")]);
                let script = on_get(&store, |_, _| Act::Send(replies::error(0x02f7, b"a code from the future")));
                download(ctx, script, |obs, _| refused(obs, "ERR-5"))
            },
        ),
    ];
    for (label, code) in [("fatal-range", 0x01f7u16), ("outside-every-range", 0x0300)] {
        out.push(case(
            &format!("error.unknown-code.{label}"),
            &format!("Code 0x{code:04x} is fatal: nothing more is sent on the connection, and it is not retried"),
            &["ERR-5"],
            move |ctx| {
                let store = Store::with(&[(NAME, b"x")]);
                let script =
                    on_get(&store, move |_, _| Act::Fatal(replies::error(code, b"a code from the future"), "ERR-5"));
                download(ctx, script, |obs, logs| {
                    refused(obs, "ERR-5")?;
                    once(logs, "ERR-5", "an unknown code")
                })
            },
        ));
    }
    // The reserved tag is followed by a GET reply's body: a client that does not look at the tag
    // would take it for the file.
    let mut reserved = replies::get_honest(NAME, b"some bytes", 0);
    reserved[0] = 0x8a;
    for (label, what, reply) in [
        ("stat", "a STAT reply", replies::stat(NAME.as_bytes(), 1, Some(Digest::of(b"x")))),
        ("put", "a PUT reply", vec![ferry_proto::tag::PUT, 0]),
        ("hello", "a server hello", replies::hello(1, CAPS)),
        ("reserved", "the reserved tag 0x8A and a GET reply's body", reserved),
    ] {
        out.push(case(
            &format!("get.tag-mismatch.{label}"),
            &format!("A GET answered with {what}: the connection is broken, nothing is kept"),
            &["REQ-7"],
            move |ctx| {
                let store = Store::with(&[(NAME, b"some bytes")]);
                let reply = reply.clone();
                download(ctx, on_get(&store, move |_, _| Act::Fatal(reply.clone(), "REQ-7")), |obs, _| {
                    refused(obs, "REQ-7")
                })
            },
        ));
    }
    out.push(case(
        "list.tag-mismatch",
        "A LIST answered with a DELETE reply's tag: the connection is broken",
        &["REQ-7"],
        |ctx| {
            let store = Store::with(&[(NAME, b"x")]);
            let inner = store.clone();
            let script: Script = Arc::new(move |_, e| match e {
                Event::Request(Request::List, _) => Act::Fatal(vec![ferry_proto::tag::DELETE], "REQ-7"),
                e => inner.answer(&e, CAPS),
            });
            let s = ctx.session(script)?;
            let obs = s.run(&Ask::op(Op::List, NAME))?;
            let logs = s.finish();
            wire(&logs)?;
            refused(&obs, "REQ-7")
        },
    ));
    for (label, pick) in [("above", true), ("below", false)] {
        out.push(case(
            &format!("hello.version-{label}"),
            &format!("A server hello with a version {label} the range offered: the client closes, asks nothing"),
            &["HELLO-7"],
            move |ctx| {
                let store = Store::with(&[(NAME, b"x")]);
                let inner = store.clone();
                let script: Script = Arc::new(move |_, e| match e {
                    Event::Hello(h) => {
                        let v = if pick && h.max_version < u16::MAX {
                            h.max_version + 1
                        } else {
                            h.min_version.saturating_sub(1)
                        };
                        Act::Fatal(replies::hello(v, CAPS), "HELLO-7")
                    }
                    e => inner.answer(&e, CAPS),
                });
                download(ctx, script, |obs, logs| {
                    refused(obs, "HELLO-7")?;
                    if logs.iter().any(|l| !l.requests.is_empty()) {
                        return Err(Stop::fail(Failure::new("HELLO-7", "the client sent requests to the server")));
                    }
                    Ok(())
                })
            },
        ));
    }
    for (label, what, _) in hostile_names(Path::new("/")) {
        out.push(case(
            &format!("get.name-escape.{label}"),
            &format!("A GET reply's frame carries {what}: refused, nothing written anywhere"),
            &["NAME-11", "NAME-12"],
            move |ctx| {
                let c = content(2000, 13);
                let store = Store::with(&[(NAME, &c)]);
                let s = ctx.session_at(|root| {
                    let name = hostile(label, root);
                    on_get(&store, {
                        let c = c.clone();
                        move |_, _| {
                            let md5 = Digest::of(&c).to_hex();
                            Act::Fatal(replies::get(0, &name, c.len() as u64, &md5, &c), "NAME-11")
                        }
                    })
                })?;
                let obs = s.run(&Ask::get(NAME))?;
                let logs = s.finish();
                no_escape(&obs)?;
                escaped_output(&obs)?;
                wire(&logs)?;
                refused(&obs, "NAME-11")
            },
        ));
        out.push(case(
            &format!("list.name-escape.{label}"),
            &format!("A LIST entry carries {what}: refused, printed only escaped"),
            &["NAME-11", "NAME-12"],
            move |ctx| {
                let s = ctx.session_at(|root| {
                    let name = hostile(label, root);
                    let store = Store::with(&[("a.txt", b"a"), ("z.txt", b"z")]);
                    Arc::new(move |_, e| match e {
                        Event::Request(Request::List, _) => {
                            let entries = [
                                replies::entry(b"a.txt", 1, Some(Digest::of(b"a"))),
                                replies::entry(&name, 2, Some(Digest::of(b"zz"))),
                                replies::entry(b"z.txt", 1, Some(Digest::of(b"z"))),
                            ];
                            Act::Fatal(replies::list(&entries), "NAME-11")
                        }
                        e => store.answer(&e, CAPS),
                    })
                })?;
                let obs = s.run(&Ask::op(Op::List, NAME))?;
                let logs = s.finish();
                no_escape(&obs)?;
                escaped_output(&obs)?;
                wire(&logs)?;
                refused(&obs, "NAME-11")
            },
        ));
    }
    out.extend([
        case("list.ok", "A listing succeeds", &["NAME-11", "BYE-2"], |ctx| {
            let store = Store::with(&[("a.txt", b"a"), ("caf\u{e9} menu.pdf", b"menu"), (NAME, b"report")]);
            let s = ctx.session(store.script(CAPS))?;
            let obs = s.run(&Ask::op(Op::List, NAME))?;
            let logs = s.finish();
            wire(&logs)?;
            finished(&obs, "TIME-11")?;
            stayed_inside(&obs)?;
            if !obs.succeeded() {
                return Err(Stop::fail(Failure::new("NAME-11", format!("the listing failed ({})", obs.ending()))));
            }
            Ok(())
        }),
        case(
            "put.ok",
            "An upload sends its whole frame: a lowercase digest, then exactly the file's bytes",
            &["PUT-6", "FRAME-1", "FRAME-3"],
            |ctx| {
                let c = content(70_000, 14);
                let store = Store::default();
                let mut s = ctx.session(store.script(CAPS))?;
                s.input(NAME, &c)?;
                let obs = s.run(&Ask::op(Op::Put, NAME))?;
                let logs = s.finish();
                wire(&logs)?;
                finished(&obs, "TIME-11")?;
                stayed_inside(&obs)?;
                if !obs.succeeded() {
                    return Err(Stop::fail(Failure::new("PUT-6", format!("the upload failed ({})", obs.ending()))));
                }
                match store.get(NAME) {
                    Some(got) if got == c => Ok(()),
                    Some(_) => {
                        Err(Stop::fail(Failure::new("FRAME-1", "the server stored other bytes than the file's")))
                    }
                    None => Err(Stop::fail(Failure::new(
                        "PUT-6",
                        "the client exited 0, but no PUT whose data matched its digest reached the server",
                    ))),
                }
            },
        ),
        case("rm.ok", "A delete succeeds", &["BYE-2"], |ctx| {
            let store = Store::with(&[(NAME, b"to go")]);
            let s = ctx.session(store.script(CAPS))?;
            let obs = s.run(&Ask::op(Op::Rm, NAME))?;
            let logs = s.finish();
            wire(&logs)?;
            finished(&obs, "TIME-11")?;
            stayed_inside(&obs)?;
            if !obs.succeeded() || store.get(NAME).is_some() {
                return Err(Stop::fail(Failure::new(
                    "BYE-2",
                    format!("the file was not deleted, or the client failed ({})", obs.ending()),
                )));
            }
            Ok(())
        }),
        case("legacy.get.ok", "A legacy-profile download succeeds, whole and exact", &["FRAME-5"], |ctx| {
            let c = content(30_000, 15);
            let store = Store::with(&[(NAME, &c)]);
            legacy(ctx, store.script(CAPS), |obs| fetched(obs, &c, "FRAME-5"))
        }),
        case(
            "legacy.get.wrong-md5",
            "A legacy reply whose data does not match its MD5 fails, and leaves no file",
            &["FRAME-5"],
            |ctx| {
                let c = content(30_000, 16);
                let store = Store::with(&[(NAME, &c)]);
                let inner = store.clone();
                let lie = Digest::of(b"other").to_hex();
                let script: Script = Arc::new(move |_, e| match e {
                    Event::Legacy(_) => Act::Close(replies::legacy_ok(NAME, &lie, &c)),
                    e => inner.answer(&e, CAPS),
                });
                legacy(ctx, script, |obs| refused(obs, "FRAME-5"))
            },
        ),
        case(
            "legacy.error.endless",
            "A legacy \"ERROR\" whose message never ends: the client keeps a bounded part and gives up in time",
            &["LEG-6"],
            |ctx| {
                let store = Store::with(&[(NAME, b"x")]);
                let inner = store.clone();
                let script: Script = Arc::new(move |_, e| match e {
                    Event::Legacy(_) => Act::Stall(replies::legacy_error(&vec![b'x'; 64 * 1024])),
                    e => inner.answer(&e, CAPS),
                });
                legacy(ctx, script, |obs| {
                    if obs.finished.killed {
                        return Err(Stop::warn(Failure::new(
                            "LEG-6",
                            format!(
                                "the client waited for the end of the message until it was killed ({})",
                                obs.ending()
                            ),
                        )));
                    }
                    refused(obs, "LEG-6")
                })
            },
        ),
    ]);
    out.extend(trailer_cases());
    out
}

/// The capabilities of a server that also announces `TRAILER` (§ 6.5).
const CAPS_TRAILER: u32 = CAPS | 0x10;

/// A FETCH reply in the trailing form (§ 7.10): name, size, `data`, then `trailer`.
fn trailing(name: &str, data: &[u8], trailer: &[u8]) -> Vec<u8> {
    let mut out = vec![ferry_proto::tag::FETCH_TRAILING];
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(trailer);
    out
}

/// A script that announces `TRAILER`, answers FETCH from 0 with `fetch(connection)` and is
/// honest otherwise (a FETCH from above 0 gets the GET reply, `[TRL-6]`).
fn on_fetch(store: &Store, fetch: impl Fn(usize) -> Act + Send + Sync + 'static) -> Script {
    let store = store.clone();
    Arc::new(move |conn, e| match e {
        Event::Request(Request::Fetch { offset: 0, .. }, _) => fetch(conn),
        e => store.answer(&e, CAPS_TRAILER),
    })
}

/// `Unsupported` unless the client sent a FETCH: it may download with GET alone.
fn used_fetch(logs: &[ConnLog]) -> Judged {
    let n = logs.iter().flat_map(|l| &l.requests).filter(|r| matches!(r, Request::Fetch { .. })).count();
    if n == 0 {
        return Err(Stop::Unsupported(
            "the client downloads with GET although the server announces TRAILER: it never receives a 0x8B reply"
                .into(),
        ));
    }
    Ok(())
}

/// The cases of the trailing digest (§ 6.5, § 7.10).
fn trailer_cases() -> Vec<ClientCase> {
    vec![
        case(
            "trailer.not-announced",
            "Against a server without TRAILER, a download and an upload use neither FETCH nor PUT mode 0x80/0x81",
            &["TRL-1"],
            |ctx| {
                let c = content(50_000, 40);
                let store = Store::with(&[(NAME, &c)]);
                download(ctx, store.script(CAPS), |obs, _| fetched(obs, &c, "TRL-1"))?;
                let store = Store::default();
                let mut s = ctx.session(store.script(CAPS))?;
                s.input(NAME, &c)?;
                let obs = s.run(&Ask::op(Op::Put, NAME))?;
                let logs = s.finish();
                wire(&logs)?;
                finished(&obs, "TIME-11")?;
                if !obs.succeeded() || store.get(NAME).as_deref() != Some(c.as_slice()) {
                    return Err(Stop::fail(Failure::new(
                        "TRL-1",
                        format!("the upload to a server without TRAILER did not store the file ({})", obs.ending()),
                    )));
                }
                Ok(())
            },
        ),
        case(
            "trailer.fetch-trailing",
            "A FETCH answered in the trailing form (0x8B) with the right trailer downloads the file",
            &["TRL-10"],
            |ctx| {
                let c = content(150_000, 41);
                let store = Store::with(&[(NAME, &c)]);
                let script = on_fetch(&store, {
                    let c = c.clone();
                    move |_| Act::Send(trailing(NAME, &c, &Digest::of(&c).to_hex()))
                });
                download(ctx, script, |obs, logs| {
                    used_fetch(logs)?;
                    fetched(obs, &c, "TRL-10")
                })
            },
        ),
        case(
            "trailer.fetch-wrong-trailer",
            "A 0x8B reply whose data does not match its trailer is never kept under the final name",
            &["TRL-10"],
            |ctx| {
                let c = content(150_000, 42);
                let store = Store::with(&[(NAME, &c)]);
                let mut corrupt = c.clone();
                corrupt[77_777] ^= 0x20;
                let script = on_fetch(&store, {
                    let c = c.clone();
                    move |_| Act::Send(trailing(NAME, &corrupt, &Digest::of(&c).to_hex()))
                });
                download(ctx, script, |obs, logs| {
                    used_fetch(logs)?;
                    whole_or_nothing(obs, &c, "TRL-10")
                })
            },
        ),
        case(
            "trailer.fetch-cut-in-trailer",
            "A 0x8B reply cut off inside its trailer is never kept under the final name",
            &["TRL-3", "TRL-10"],
            |ctx| {
                let c = content(150_000, 43);
                let store = Store::with(&[(NAME, &c)]);
                // The first connection is cut; a client that tries again may succeed.
                let script = on_fetch(&store, {
                    let c = c.clone();
                    move |conn| {
                        let whole = trailing(NAME, &c, &Digest::of(&c).to_hex());
                        if conn == 0 {
                            Act::Close(whole[..whole.len() - 16].to_vec())
                        } else {
                            Act::Send(whole)
                        }
                    }
                });
                download(ctx, script, |obs, logs| {
                    used_fetch(logs)?;
                    whole_or_nothing(obs, &c, "TRL-3")
                })
            },
        ),
    ]
}

/// A hostile name for the sandbox at `root` (the absolute one points into it).
fn hostile(label: &str, root: &Path) -> Vec<u8> {
    hostile_names(root).into_iter().find(|(l, _, _)| *l == label).map(|(_, _, n)| n).unwrap_or_default()
}

/// The request was sent once, on one connection: not retried after `what`.
fn once(logs: &[ConnLog], requirement: &str, what: &str) -> Judged {
    let n = gets(logs);
    if n > 1 {
        return Err(Stop::fail(Failure::new(
            requirement,
            format!("the client sent the GET {n} times: it retried after {what}, which is not a transient code"),
        )));
    }
    Ok(())
}

/// `BUSY` with `message` to the first connection, as soon as it is accepted; honest after.
fn busy_once(store: &Store, message: &'static [u8]) -> Script {
    let store = store.clone();
    Arc::new(move |conn, e| match e {
        Event::Accept if conn == 0 => Act::Fatal(replies::error(ErrorCode::BUSY.0, message), "ERR-3"),
        e => store.answer(&e, CAPS),
    })
}

/// Asks a legacy-profile download; unsupported if the client did not speak it.
fn legacy(ctx: &Ctx<'_>, script: Script, judge: impl FnOnce(&Observation) -> Judged) -> Judged {
    let s = ctx.session(script)?;
    let obs = s.run(&Ask::get(NAME).legacy())?;
    let logs = s.finish();
    if !logs.iter().any(|l| l.legacy) {
        return Err(Stop::Unsupported("the client did not speak the legacy profile when {profile} was legacy".into()));
    }
    wire(&logs)?;
    judge(&obs)
}

fn invalid_utf8(ctx: &Ctx<'_>) -> Judged {
    let c = content(20_000, 17);
    let store = Store::with(&[(NAME, &c)]);
    let control = {
        let s = ctx.session(busy_once(&store, b"busy, try again"))?;
        let obs = s.run(&Ask::get(NAME))?;
        s.finish();
        obs
    };
    if !control.succeeded() {
        return Err(Stop::Unsupported(format!(
            "the client does not retry after BUSY ({}), so its reading of a BUSY whose message is not UTF-8 \
             cannot be told apart",
            control.ending()
        )));
    }
    let store = Store::with(&[(NAME, &c)]);
    download(ctx, busy_once(&store, b"busy \xff\xfe\xc0\xaf try \xed\xa0\x80 again \xe2\x82"), |obs, _| {
        finished(obs, "TIME-11")?;
        if !obs.succeeded() {
            return Err(Stop::fail(Failure::new(
                "ENC-7",
                format!(
                    "after BUSY with a plain message the client retried and succeeded; with a message that is not \
                     UTF-8 it failed ({})",
                    obs.ending()
                ),
            )));
        }
        fetched(obs, &c, "ENC-7")
    })
}

fn resume_changed(ctx: &Ctx<'_>) -> Judged {
    let (a, b) = (content(200_000, 18), content(200_000, 19));
    let store = Store::with(&[(NAME, &b)]);
    let first = a.clone();
    let script = on_get(&store, {
        let b = b.clone();
        move |conn, off| {
            if conn == 0 {
                // Version A, cut off halfway.
                let whole = replies::get_honest(NAME, &first, off);
                Act::Close(whole[..whole.len() - 100_000].to_vec())
            } else if off > b.len() as u64 {
                Act::Send(replies::refuse(ErrorCode::BAD_OFFSET, "past the end"))
            } else {
                Act::Send(replies::get_honest(NAME, &b, off))
            }
        }
    });
    let s = ctx.session(script)?;
    let mut obs = s.run(&Ask::get(NAME))?;
    if !obs.succeeded() && !obs.finished.killed {
        // As a user would: run the same command again.
        obs = s.run(&Ask::get(NAME))?;
    }
    let logs = s.finish();
    wire(&logs)?;
    finished(&obs, "TIME-11")?;
    stayed_inside(&obs)?;
    if let Some(f) = obs.file.as_ref().filter(|f| *f != &b) {
        let k = f.iter().zip(&a).take_while(|(x, y)| x == y).count();
        let spliced = f.len() == a.len() && k > 0 && f[k..] == b[k..];
        let what = if spliced { "the first version's start and the second's end, spliced" } else { "other bytes" };
        let mut fail = Failure::new("FRAME-5", format!("{{dir}}/{NAME} holds {what} ({})", obs.ending()));
        fail.expected = Some(b.iter().take(256).copied().collect());
        fail.actual = Some(f.iter().take(256).copied().collect());
        return Err(Stop::fail(fail));
    }
    if !obs.succeeded() {
        kept_nothing(&obs, "FRAME-5")?;
        return Err(Stop::warn(Failure::new(
            "GET-7",
            format!(
                "the file changed on the server between attempts and the client gave up, twice, instead of \
                 starting again from byte 0 ({})",
                obs.ending()
            ),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn ids_are_unique_and_cite_requirements_protocol_md_defines() {
        let known: BTreeSet<String> = crate::spec::requirements().into_iter().map(|r| r.id).collect();
        let mut ids = BTreeSet::new();
        for c in super::all() {
            assert!(ids.insert(c.id.clone()), "{} twice", c.id);
            assert!(!c.requirements.is_empty(), "{} cites nothing", c.id);
            for r in &c.requirements {
                assert!(known.contains(r), "{} cites {r}, which PROTOCOL.md does not define", c.id);
            }
        }
    }

    #[test]
    fn the_case_list() {
        let list: String = super::all()
            .iter()
            .map(|c| format!("{:<50} [{}]  {}\n", c.id, c.requirements.join(" "), c.title))
            .collect();
        insta::assert_snapshot!(list);
    }
}
