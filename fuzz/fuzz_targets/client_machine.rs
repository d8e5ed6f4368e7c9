//! The client state machine (`ClientConnection`), fed the server's bytes in reads the input
//! decides, with its requests (pipelined, PUT data included) decided by the input too.
//!
//! Input: see `ferry_fuzz::client::fuzz_client`. Checked: the same items, errors and ending
//! however the bytes arrive; no allocation above the protocol's ceilings; a closed client reads
//! nothing more; and, end to end, the client accepts every reply ferry-proto's server sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferry_fuzz::client::fuzz_client(data));
