//! The server state machine (`ServerConnection`), driven by a host that reads, blocks, writes
//! and meets deadlines, shutdowns and EOF where the input says.
//!
//! Input: a server config byte (`ferry_fuzz::server::config`), a faults byte (bit k: the store
//! fails the k-th command, mod 8), a schedule length n, n schedule ops
//! (`ferry_fuzz::server::run_scheduled`), then the client's bytes. Checked: the outcome equals
//! the same host fed the same bytes in one read per event, and without faults `MemoryConnection`
//! too (bytes sent, store, close, EOF verdict); the output always decodes; one reply per request;
//! the store only ever holds verified uploads; no allocation beyond what the conversation holds.
#![no_main]

use ferry_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cfg = input.byte();
    let faults = input.byte();
    let n = usize::from(input.byte());
    let ops = input.take(n);
    ferry_fuzz::server::fuzz_server(cfg, faults, input.rest(), ops);
});
