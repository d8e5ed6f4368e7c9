//! The client-to-server byte stream, as a server's `RequestDecoder` reads it.
//!
//! Input: a config byte (bit 0: start in a session rather than at the hello; bits 1-2:
//! `max_name_len` 255, 16, 4096 or 0; bits 3-4: `max_file_size` 1 TiB, 4, 0 or 2^64 - 1; bit 5:
//! read as a server announcing `TRAILER`, so PUT modes 0x80/0x81 and FETCH are requests), a
//! chunk size (0: whole), then the bytes. Checked: no panic; every item re-encodes to its bytes
//! and decodes back to itself; no allocation above the limits in force (none at all while a
//! message is incomplete); the same items and ending when the bytes arrive in chunks.
#![no_main]

use ferry_fuzz::owned::{decode_c2s, Start};
use ferry_fuzz::{chunk_boundaries, Input};
use ferry_proto::limits::ReadLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cfg = input.byte();
    let chunk = input.byte();
    let bytes = input.rest();
    let start = if cfg & 1 != 0 { Start::Session } else { Start::Handshake };
    let limits = ReadLimits {
        max_name_len: [255, 16, 4096, 0][usize::from(cfg >> 1 & 3)],
        max_file_size: [1 << 40, 4, 0, u64::MAX][usize::from(cfg >> 3 & 3)],
    };
    let trailer = cfg & 0x20 != 0;
    let whole = decode_c2s(start, limits, trailer, bytes, &[bytes.len()]);
    if chunk != 0 {
        let chunked = decode_c2s(start, limits, trailer, bytes, &chunk_boundaries(bytes.len(), chunk));
        assert_eq!(whole, chunked, "[ENC-5] chunks of {chunk} decode differently");
    }
});
