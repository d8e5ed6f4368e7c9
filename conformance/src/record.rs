//! `conformance record`: a proxy that forwards one client's session to a server and writes it as
//! a transcript (spec/README.md format), so a session seen in the field can become a test.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// Accepts one connection on `listener`, relays it to `upstream`, and returns the transcript.
///
/// # Errors
/// The upstream cannot be reached, or accepting fails.
pub fn record_one(listener: &TcpListener, upstream: SocketAddr, idle: Duration) -> std::io::Result<String> {
    let (client, peer) = listener.accept()?;
    let server = TcpStream::connect_timeout(&upstream, idle)?;
    let (tx, rx) = mpsc::channel::<(char, Option<Vec<u8>>)>();
    let pump = |mut from: TcpStream, mut to: TcpStream, who: char, tx: mpsc::Sender<(char, Option<Vec<u8>>)>| {
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(Some(idle));
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = to.shutdown(Shutdown::Write);
                        let _ = tx.send((who, None));
                        return;
                    }
                    Ok(n) => {
                        let _ = tx.send((who, Some(buf[..n].to_vec())));
                        if to.write_all(&buf[..n]).is_err() {
                            let _ = tx.send((who, None));
                            return;
                        }
                    }
                }
            }
        })
    };
    let a = pump(client.try_clone()?, server.try_clone()?, 'C', tx.clone());
    let b = pump(server, client, 'S', tx);
    let mut out = String::new();
    let _ = writeln!(out, "@title    Recorded session from {peer} to {upstream}");
    let _ = writeln!(out, "@requires REQ-1");
    let _ = writeln!(out);
    let mut last: Option<char> = None;
    for (who, chunk) in rx {
        match chunk {
            Some(bytes) => {
                // Consecutive chunks from one side join into one line.
                if last == Some(who) {
                    out.pop();
                    let _ = writeln!(out, "{}", hex::encode(&bytes));
                } else {
                    let _ = writeln!(out, "{who}: x:{}", hex::encode(&bytes));
                }
                last = Some(who);
            }
            None if who == 'S' => {
                let _ = writeln!(out, "S: close");
                last = None;
            }
            None => {}
        }
    }
    let _ = a.join();
    let _ = b.join();
    Ok(out)
}
