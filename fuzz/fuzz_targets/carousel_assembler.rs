//! The carousel receiver keeps state across datagrams from anyone who can reach its UDP port: a
//! sequence of real, mutated and arbitrary datagrams fed to an [`Assembler`] with small limits
//! must never panic, never hold more than its limits, and only ever deliver objects whose bytes
//! hash to their ids.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mhc_transport::carousel::{
    Assembler, AssemblerConfig, Carousel, CarouselConfig, Event, ObjectId, ObjectKind,
};

/// Small limits, so eviction and the byte budget are reached within a short input.
const MAX_OBJECT_BYTES: u64 = 16 << 10;

fn config() -> AssemblerConfig {
    AssemblerConfig {
        max_object_bytes: MAX_OBJECT_BYTES,
        max_in_progress: 3,
        max_buffered_bytes: 2 * MAX_OBJECT_BYTES,
        completed_capacity: 4,
    }
}

/// Two cycles of a real carousel of three small objects (one of several blocks), so inputs can
/// complete objects and corrupt them with well-formed but altered symbols.
fn real_datagrams() -> &'static [Vec<u8>] {
    static REAL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    REAL.get_or_init(|| {
        let mut carousel = Carousel::new(CarouselConfig {
            symbol_size: 256,
            repair_overhead_percent: 50,
            max_object_bytes: MAX_OBJECT_BYTES,
            max_block_symbols: 8,
        })
        .expect("valid config");
        for (kind, len, salt) in [
            (ObjectKind::Manifest, 300, 1u8),
            (ObjectKind::Segment, 5_000, 2),
            (ObjectKind::Bulletin, 40, 3),
        ] {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ salt)
                .collect();
            carousel.insert(kind, bytes).expect("object within limits");
        }
        let mut all: Vec<Vec<u8>> = carousel.next_cycle().collect();
        all.extend(carousel.next_cycle());
        all
    })
}

fuzz_target!(|data: &[u8]| {
    let real = real_datagrams();
    let config = config();
    let mut assembler = Assembler::new(config.clone()).expect("valid config");
    let mut rest = data;
    // Each step: an op byte, then its operands.
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let datagram: Vec<u8> = match op % 3 {
            // A real datagram, by index.
            0 => {
                let Some((&i, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                real[usize::from(i) % real.len()].clone()
            }
            // A real datagram with one byte changed.
            1 => {
                let [i, at_hi, at_lo, value, tail @ ..] = rest else {
                    break;
                };
                rest = tail;
                let mut d = real[usize::from(*i) % real.len()].clone();
                let at = usize::from(u16::from_be_bytes([*at_hi, *at_lo])) % d.len();
                d[at] = *value;
                d
            }
            // Arbitrary bytes, up to 255 of them.
            _ => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                let (bytes, tail) = tail.split_at(len);
                rest = tail;
                bytes.to_vec()
            }
        };
        if let Ok(Some(Event::Complete { id, bytes, .. })) = assembler.push(&datagram) {
            assert_eq!(ObjectId::of(&bytes), id, "delivered bytes hash to their id");
            assert!(bytes.len() as u64 <= MAX_OBJECT_BYTES);
            assert!(assembler.is_complete(&id));
        }
        assert!(assembler.incomplete().len() <= config.max_in_progress);
        assert!(assembler.buffered_bytes() <= config.max_buffered_bytes);
    }
});
