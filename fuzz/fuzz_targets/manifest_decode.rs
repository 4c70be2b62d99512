//! Untrusted manifest bytes (from a peer, a satellite downlink, a corrupted database): decoding
//! and verifying must never panic, and whatever decodes must re-encode to the same bytes
//! (one manifest, one hash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mhc_manifest::SignedManifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedManifest::decode(data) {
        assert_eq!(signed.encode(), data, "decode accepted a non-canonical encoding");
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let _ = signed.verify(&[key]);
        for i in 0..signed.manifest.segments.len().min(4) {
            let _ = signed.manifest.segment_proof(i);
        }
    }
});
