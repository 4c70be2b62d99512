//! Playlists come from artists' folders: parsing any text must never panic, and a parsed
//! playlist's segment count stays within the manifest limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = mhc_manifest::parse_media_playlist(text) {
            assert!(p.segments.len() <= mhc_manifest::MAX_SEGMENTS);
        }
    }
});
