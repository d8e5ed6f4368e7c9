//! The server state machine (`ServerConnection`), driven by a host that reads, blocks, writes
//! and meets deadlines, shutdowns and EOF where the input says.
//!
//! Input: a server config byte (`ferry_fuzz::server::config`), a host byte (bit 0: the server does
//! not announce `TRAILER`; bit 1: the host answers a FETCH from offset 0 in the trailing form,
//! tag 0x8B), a faults byte (bit k: the store fails the k-th command, mod 8), a schedule length n,
//! n schedule ops
//! (`ferry_fuzz::server::run_scheduled`), then the client's bytes. Checked: the outcome equals
//! the same host fed the same bytes in one read per event, and without faults `MemoryConnection`
//! too (bytes sent, store, close, EOF verdict); the output always decodes; one reply per request;
//! the store only ever holds verified uploads (a trailing upload verified by its trailer); a
//! trailing reply answers only a FETCH from 0 and its trailer is the data's digest; no allocation
//! beyond what the conversation holds.
#![no_main]

use ferry_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cfg = input.byte();
    let host = input.byte();
    let faults = input.byte();
    let n = usize::from(input.byte());
    let ops = input.take(n);
    ferry_fuzz::server::fuzz_server(cfg, host, faults, input.rest(), ops);
});
