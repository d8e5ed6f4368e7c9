//! The server-to-client byte stream, as a client's `ReplyDecoder` reads it.
//!
//! Input: a start byte (mod 3: at the server hello, in a session, or the reply to a legacy
//! request), a chunk size (0: whole), then the bytes. Checked: no panic; every item re-encodes
//! to its bytes (digest case and invalid UTF-8 in texts aside) and decodes back to itself; no
//! allocation above the protocol's ceilings (none at all while a message is incomplete); the
//! same items and ending when the bytes arrive in chunks.
#![no_main]

use ferry_fuzz::owned::{decode_s2c, Start};
use ferry_fuzz::{chunk_boundaries, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let start = [Start::Handshake, Start::Session, Start::Legacy][usize::from(input.byte() % 3)];
    let chunk = input.byte();
    let bytes = input.rest();
    let whole = decode_s2c(start, bytes, &[bytes.len()]);
    if chunk != 0 {
        let chunked = decode_s2c(start, bytes, &chunk_boundaries(bytes.len(), chunk));
        assert_eq!(whole, chunked, "[ENC-5] chunks of {chunk} decode differently");
    }
});
