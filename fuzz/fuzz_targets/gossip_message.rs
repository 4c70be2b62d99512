//! Heartbeats, content announcements, node certificates, revocations and operator commands are
//! decoded from whatever a peer gossips (after its envelope's signature, which any peer with a
//! key passes). Decoding arbitrary bytes must never panic, must stay within the size bound, and
//! whatever decodes must be canonical: it re-encodes to the very bytes it came from (so one
//! message has one encoding and one content-addressed id). Bounds checks and signature
//! verification must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mhc_transport::gossip::cert::SignedCertificate;
use mhc_transport::gossip::command::SignedCommand;
use mhc_transport::gossip::messages::{
    decode, encode, ContentAnnouncement, Heartbeat, MAX_MESSAGE_BYTES,
};
use mhc_transport::gossip::revocation::{RevocationBatch, SignedRevocation};

fuzz_target!(|data: &[u8]| {
    if let Ok(hb) = decode::<Heartbeat>(data) {
        assert!(data.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(encode(&hb), data, "a heartbeat decoded from non-canonical bytes");
        let _ = hb.check_bounds();
    }
    if let Ok(ann) = decode::<ContentAnnouncement>(data) {
        assert_eq!(encode(&ann), data, "an announcement decoded from non-canonical bytes");
    }
    if let Ok(cert) = SignedCertificate::decode(data) {
        assert_eq!(cert.encode(), data, "a certificate decoded from non-canonical bytes");
        let c = &cert.certificate;
        let _ = cert.verify(&[c.operator], c.not_before_ms);
        let _ = c.allows_http("127.0.0.1:8080");
    }
    if let Ok(batch) = decode::<RevocationBatch>(data) {
        assert_eq!(encode(&batch), data, "a revocation batch decoded from non-canonical bytes");
        let _ = batch.check_bounds();
    }
    if let Ok(r) = SignedRevocation::decode(data) {
        assert_eq!(r.encode(), data, "a revocation decoded from non-canonical bytes");
        let _ = r.verify(&[r.revocation.operator]);
    }
    if let Ok(cmd) = SignedCommand::decode(data) {
        assert_eq!(SignedCommand::decode(&cmd.encode()).as_ref(), Ok(&cmd));
        let operator = cmd.command.operator;
        let _ = cmd.verify(&[operator], cmd.command.issued_at_ms);
        let _ = cmd.verify(&[], 0);
    }
});
