//! Gossip envelopes come from any peer that reaches the control plane. Opening arbitrary bytes
//! on any topic must never panic; an envelope this node seals opens to the same signer and
//! payload on its own topic only; and any one flipped bit of a sealed envelope makes it
//! refused (the signature covers the signer, the send time, the topic and the payload).
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mhc_transport::gossip::envelope::{open, seal};
use mhc_transport::gossip::messages::{CONTENT_TOPIC, EMERGENCY_TOPIC, HEALTH_TOPIC};

const TOPICS: [&str; 3] = [HEALTH_TOPIC, CONTENT_TOPIC, EMERGENCY_TOPIC];

fuzz_target!(|input: ([u8; 32], u8, u64, u16, &[u8])| {
    let (seed, topic, sent_at_ms, flip, payload) = input;
    let topic = TOPICS[usize::from(topic) % TOPICS.len()];
    for t in TOPICS {
        let _ = open(payload, t);
    }

    let key = SigningKey::from_bytes(&seed);
    let sealed = seal(&key, topic, sent_at_ms, payload);
    let (signer, opened) = open(&sealed, topic).expect("a sealed envelope opens");
    assert_eq!(opened, payload);
    let public = libp2p_identity::ed25519::PublicKey::try_from_bytes(key.verifying_key().as_bytes())
        .expect("an ed25519 key");
    assert_eq!(signer, libp2p_identity::PublicKey::from(public).to_peer_id());
    for other in TOPICS.iter().filter(|t| **t != topic) {
        assert!(open(&sealed, other).is_err(), "replayed on {other}");
    }

    let bit = usize::from(flip);
    if bit / 8 < sealed.len() {
        let mut tampered = sealed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert!(open(&tampered, topic).is_err(), "bit {bit} flipped and still opens");
    }
});
