//! Plain clients used by several measurements.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ferry_proto::client::{ClientConfig, ClientConnection};
use ferry_proto::{Name, Request, ServerItem};

/// Downloads `name` whole; returns the data bytes received (not kept).
pub fn download(addr: SocketAddr, name: &str) -> Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut conn = ClientConnection::new(ClientConfig::default())?;
    conn.send(&Request::Get { name: Name::parse(name)?, offset: 0 })?;
    conn.send(&Request::Bye)?;
    stream.write_all(conn.pending_output())?;
    let n = conn.pending_output().len();
    conn.consume_output(n);
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut received = 0u64;
    loop {
        let read = stream.read(&mut buf)?;
        if read == 0 {
            conn.handle_eof(&pending)?;
            return Ok(received);
        }
        pending.extend_from_slice(&buf[..read]);
        let mut used = 0;
        loop {
            let (n, item) = conn.handle_input(&pending[used..])?;
            used += n;
            match item {
                Some(ServerItem::Data(d)) => received += d.len() as u64,
                Some(ServerItem::Error(e)) => bail!("server refused: {e}"),
                Some(_) => {}
                None => break,
            }
        }
        pending.drain(..used);
    }
}

/// One persistent connection doing GETs of `name` until `until`; returns the count.
pub fn get_loop(addr: SocketAddr, name: &str, size: u64, until: Instant) -> Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut conn = ClientConnection::new(ClientConfig::default())?;
    let name = Name::parse(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut done = 0u64;
    while Instant::now() < until {
        conn.send(&Request::Get { name: name.clone(), offset: 0 })?;
        stream.write_all(conn.pending_output())?;
        let n = conn.pending_output().len();
        conn.consume_output(n);
        let mut got = 0u64;
        let mut finished = false;
        while !finished {
            let mut used = 0;
            loop {
                let (n, item) = conn.handle_input(&pending[used..])?;
                used += n;
                match item {
                    Some(ServerItem::Data(d)) => got += d.len() as u64,
                    Some(ServerItem::DataEnd) => finished = true,
                    Some(ServerItem::Error(e)) => bail!("server refused: {e}"),
                    Some(_) => {}
                    None => break,
                }
            }
            pending.drain(..used);
            if !finished {
                let r = stream.read(&mut buf)?;
                if r == 0 {
                    bail!("server closed");
                }
                pending.extend_from_slice(&buf[..r]);
            }
        }
        if got != size {
            bail!("got {got} of {size} bytes");
        }
        done += 1;
    }
    Ok(done)
}
