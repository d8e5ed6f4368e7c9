//! Arbitrary bytes never panic a decoder, never make it allocate past the protocol's limits, and
//! decode the same however they are split.
//!
//! A counting global allocator records the largest single allocation made while decoding: the
//! largest thing a decoder may build is a HELP text (64 KiB), so anything bigger means some length
//! field reached an allocation unchecked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_proto::limits::{ReadLimits, HELP_TEXT_MAX};
use ferry_proto::vector::{decode, Direction, Start};
use proptest::prelude::*;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocation allowed for one decoded item: a HELP text and the JSON rendering of it (hex or
/// escaped text can be several times larger), with room for the test harness's own buffers.
const LARGEST_ALLOWED: usize = 8 * HELP_TEXT_MAX as usize;

fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Mostly random, with prefixes that reach deep states: a valid hello, opcodes, tags, and
    // length fields near 2^32 and 2^64.
    let prefix = prop_oneof![
        Just(Vec::new()),
        Just(b"FERRY\x00\x01\x00\x01\x00\x00".to_vec()),
        Just(vec![0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]),
        Just(vec![0x04, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        Just(vec![0x87, 0xFF, 0xFF, 0xFF, 0xFF]),
        Just(vec![0x81, 0xFF, 0xFF, 0xFF, 0xFF]),
        Just(vec![0x86, 0xFF, 0xFF, 0xFF, 0xFF]),
        Just(vec![0xFF, 0x02, 0x00, 0xFF, 0xFF]),
        Just(vec![0x00, 0xFF, 0xFF, 0xFF]),
    ];
    (prefix, proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(mut p, rest)| {
        p.extend(rest);
        p
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_safe(bytes in hostile_bytes(), split in 0usize..600) {
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            for start in [Start::Handshake, Start::Session, Start::Legacy] {
                let whole = decode(direction, start, ReadLimits::default(), &bytes, &[]);
                let bytewise: Vec<usize> = (1..bytes.len()).collect();
                prop_assert_eq!(&decode(direction, start, ReadLimits::default(), &bytes, &bytewise), &whole);
                prop_assert_eq!(&decode(direction, start, ReadLimits::default(), &bytes, &[split]), &whole);
            }
        }
        let largest = LARGEST.load(Ordering::Relaxed);
        prop_assert!(largest <= LARGEST_ALLOWED, "an allocation of {} bytes", largest);
    }
}
