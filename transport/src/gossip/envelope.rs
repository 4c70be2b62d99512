//! The signed envelope of every control-plane message.
//!
//! gossipsub can sign messages itself (strict validation), but it checks the signature of every
//! *copy* it receives, before it drops duplicates; with heartbeats from every member every
//! period, those repeated checks were most of an idle node's CPU. So gossipsub runs anonymous
//! here (no source, no sequence number, content-addressed message ids), and each message
//! carries its sender's node-key signature in this envelope, checked once per distinct message,
//! after gossipsub's de-duplication. The guarantee is the same as strict mode's: a message is
//! accepted only with a valid signature by the key of the peer it is from.
//!
//! Layout: `[1] ‖ signer public key (32) ‖ sent_at_ms (u64 BE) ‖ signature (64) ‖ payload`,
//! the signature over `mhc-gossip-v1 ‖ topic length (u8) ‖ topic ‖ sent_at_ms ‖ payload`. The
//! topic is signed so a message cannot be replayed on another topic; the send time makes every
//! publication distinct (a re-sent emergency command is not a duplicate of the first send).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;

/// Domain tag of envelope signatures.
const TAG: &[u8] = b"mhc-gossip-v1";
/// Format byte of envelopes.
const FORMAT: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 1 + 32 + 8 + 64;

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than its header, or of an unknown format.
    #[error("not an envelope")]
    Malformed,
    /// The signer is not an ed25519 key, or the signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

fn signed_message(topic: &str, sent_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG.len() + 1 + topic.len() + 8 + payload.len());
    m.extend_from_slice(TAG);
    m.push(topic.len().min(255) as u8);
    m.extend_from_slice(&topic.as_bytes()[..topic.len().min(255)]);
    m.extend_from_slice(&sent_at_ms.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Wraps `payload` for `topic`, signed by `key`.
pub fn seal(key: &SigningKey, topic: &str, sent_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let signature = key.sign(&signed_message(topic, sent_at_ms, payload));
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(FORMAT);
    out.extend_from_slice(key.verifying_key().as_bytes());
    out.extend_from_slice(&sent_at_ms.to_be_bytes());
    out.extend_from_slice(&signature.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks an envelope received on `topic`; returns the signer's peer id and the payload.
///
/// # Errors
/// [`EnvelopeError`].
pub fn open<'a>(data: &'a [u8], topic: &str) -> Result<(PeerId, &'a [u8]), EnvelopeError> {
    if data.len() < HEADER_LEN || data[0] != FORMAT {
        return Err(EnvelopeError::Malformed);
    }
    let signer: [u8; 32] = data[1..33].try_into().expect("32 bytes");
    let sent_at_ms = u64::from_be_bytes(data[33..41].try_into().expect("8 bytes"));
    let signature = Signature::from_bytes(&data[41..105].try_into().expect("64 bytes"));
    let payload = &data[HEADER_LEN..];
    let key = VerifyingKey::from_bytes(&signer).map_err(|_| EnvelopeError::BadSignature)?;
    key.verify_strict(&signed_message(topic, sent_at_ms, payload), &signature)
        .map_err(|_| EnvelopeError::BadSignature)?;
    let public = libp2p_identity::ed25519::PublicKey::try_from_bytes(&signer)
        .map_err(|_| EnvelopeError::BadSignature)?;
    Ok((
        libp2p_identity::PublicKey::from(public).to_peer_id(),
        payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_what_it_seals_and_nothing_altered() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let sealed = seal(&key, "mhc/health/1", 42, b"hello");
        let (peer, payload) = open(&sealed, "mhc/health/1").unwrap();
        assert_eq!(payload, b"hello");
        let expected = libp2p_identity::Keypair::ed25519_from_bytes([7; 32])
            .unwrap()
            .public()
            .to_peer_id();
        assert_eq!(peer, expected, "the signer is the peer id of the node key");
        assert_eq!(
            open(&sealed, "mhc/content/1"),
            Err(EnvelopeError::BadSignature),
            "a message cannot move to another topic"
        );
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 1;
            assert!(open(&flipped, "mhc/health/1").is_err(), "byte {i}");
        }
        for n in 0..HEADER_LEN {
            assert_eq!(
                open(&sealed[..n], "mhc/health/1"),
                Err(EnvelopeError::Malformed)
            );
        }
        assert_ne!(
            seal(&key, "t", 1, b"x"),
            seal(&key, "t", 2, b"x"),
            "two sends are two messages"
        );
    }
}
