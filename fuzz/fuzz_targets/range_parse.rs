//! `Range` headers come from anyone on the internet: a partial answer must always lie inside the
//! representation and never be empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mhc_transport::{parse_range, RangeOutcome};

fuzz_target!(|input: (&str, u32)| {
    let (header, len) = input;
    let len = u64::from(len);
    if let RangeOutcome::Partial(r) = parse_range(header, len) {
        assert!(r.start < r.end && r.end <= len, "{header:?} on {len}: {r:?}");
    }
});
