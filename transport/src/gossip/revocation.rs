//! Revocations: an operator's signed statement that a node key is no longer a member, whatever
//! certificate it shows.
//!
//! An operator key (one of `trust.operators`) signs the postcard encoding of a [`Revocation`],
//! prefixed by the domain tag `mhc-node-revoke-v1` (`mhc-node revoke`). A revocation never
//! expires and applying it twice changes nothing, so it needs no sequence number and no clock
//! check: the same bytes are good when they first arrive and when a node that was away for a
//! month catches up. Nodes gossip them on [`REVOCATION_TOPIC`] in [`RevocationBatch`]es, and
//! heartbeats carry the [`digest`] of the revoked keys a node knows, so two nodes that know
//! different lists notice and send theirs again.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Topic of revocation batches.
pub const REVOCATION_TOPIC: &str = "mhc/revocations/1";
/// Domain tag of revocation signatures.
const SIGNATURE_TAG: &[u8] = b"mhc-node-revoke-v1";
/// Format byte of encoded revocations.
const FORMAT: u8 = 1;
/// Longest reason text.
pub const MAX_REASON_BYTES: usize = 256;
/// Largest encoded revocation accepted (a reason of [`MAX_REASON_BYTES`] is about 400 bytes).
pub const MAX_REVOCATION_BYTES: usize = 512;
/// Most revocations in one gossip batch: 64 of the largest are about 26 KiB, under the
/// control plane's message limit.
pub const MAX_BATCH: usize = 64;

/// What an operator revokes (what is signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The revoked node's ed25519 public key.
    pub node: [u8; 32],
    /// Why, for operators (at most [`MAX_REASON_BYTES`]).
    pub reason: String,
    /// When the operator issued it, ms since the Unix epoch (shown, never checked).
    pub issued_at_ms: u64,
    /// The operator's public key.
    pub operator: [u8; 32],
}

/// A revocation with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    /// The revocation.
    pub revocation: Revocation,
    /// ed25519 signature over the tag and the revocation's postcard encoding.
    pub signature: Vec<u8>,
}

/// Encoded revocations travelling together on [`REVOCATION_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationBatch {
    /// Each an encoded [`SignedRevocation`]; at most [`MAX_BATCH`].
    pub revocations: Vec<Vec<u8>>,
}

impl RevocationBatch {
    /// Checks the number and the size of the entries.
    ///
    /// # Errors
    /// [`RevocationError::Malformed`].
    pub fn check_bounds(&self) -> Result<(), RevocationError> {
        if self.revocations.len() > MAX_BATCH {
            return Err(RevocationError::Malformed(format!(
                "{} revocations in one batch (at most {MAX_BATCH})",
                self.revocations.len()
            )));
        }
        if self
            .revocations
            .iter()
            .any(|r| r.len() > MAX_REVOCATION_BYTES)
        {
            return Err(RevocationError::Malformed("oversized revocation".into()));
        }
        Ok(())
    }
}

/// Why a revocation is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// Not a revocation of this format, oversized, or with fields out of bounds.
    #[error("malformed revocation: {0}")]
    Malformed(String),
    /// The signer is not in `trust.operators`.
    #[error("signed by {0}, which is not a trusted operator")]
    UnknownOperator(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

impl RevocationError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            RevocationError::Malformed(_) => "malformed",
            RevocationError::UnknownOperator(_) => "unknown_operator",
            RevocationError::BadSignature => "bad_signature",
        }
    }
}

fn signed_bytes(revocation: &Revocation) -> Vec<u8> {
    let mut msg = SIGNATURE_TAG.to_vec();
    msg.extend(postcard::to_allocvec(revocation).expect("revocations serialise"));
    msg
}

impl SignedRevocation {
    /// Signs the revocation of `node` with the operator key.
    pub fn sign(node: [u8; 32], reason: String, issued_at_ms: u64, operator: &SigningKey) -> Self {
        let revocation = Revocation {
            node,
            reason,
            issued_at_ms,
            operator: operator.verifying_key().to_bytes(),
        };
        let signature = operator
            .sign(&signed_bytes(&revocation))
            .to_bytes()
            .to_vec();
        Self {
            revocation,
            signature,
        }
    }

    /// The wire form: a format byte and the postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        super::wire::encode(FORMAT, self)
    }

    /// Decodes the wire form: bounded, canonical, fields within bounds.
    ///
    /// # Errors
    /// [`RevocationError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, RevocationError> {
        let signed: Self = super::wire::decode(bytes, FORMAT, MAX_REVOCATION_BYTES)
            .map_err(RevocationError::Malformed)?;
        if signed.revocation.reason.len() > MAX_REASON_BYTES {
            return Err(RevocationError::Malformed("reason too long".into()));
        }
        Ok(signed)
    }

    /// Checks the signer is one of `operators` and the signature.
    ///
    /// # Errors
    /// [`RevocationError`].
    pub fn verify(&self, operators: &[[u8; 32]]) -> Result<(), RevocationError> {
        let r = &self.revocation;
        if !operators.contains(&r.operator) {
            return Err(RevocationError::UnknownOperator(hex::encode(r.operator)));
        }
        let key =
            VerifyingKey::from_bytes(&r.operator).map_err(|_| RevocationError::BadSignature)?;
        let sig =
            Signature::from_slice(&self.signature).map_err(|_| RevocationError::BadSignature)?;
        key.verify(&signed_bytes(r), &sig)
            .map_err(|_| RevocationError::BadSignature)
    }
}

/// The digest of a set of revoked node keys, as heartbeats carry it: BLAKE3 over the keys in
/// ascending order; all zeros for none. Two nodes that revoked the same keys agree, whoever
/// signed the revocations.
pub fn digest<'a>(revoked: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut keys: Vec<&[u8; 32]> = revoked.into_iter().collect();
    if keys.is_empty() {
        return [0; 32];
    }
    keys.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for key in keys {
        hasher.update(key);
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn revocation() -> SignedRevocation {
        SignedRevocation::sign([2; 32], "stolen laptop".into(), 1_000, &key(9))
    }

    #[test]
    fn a_revocation_roundtrips_and_verifies_only_for_its_operators() {
        let r = revocation();
        let bytes = r.encode();
        assert!(bytes.len() < MAX_REVOCATION_BYTES);
        let back = SignedRevocation::decode(&bytes).unwrap();
        assert_eq!(back, r);
        let operator = key(9).verifying_key().to_bytes();
        back.verify(&[operator]).unwrap();
        assert!(matches!(
            back.verify(&[key(8).verifying_key().to_bytes()]),
            Err(RevocationError::UnknownOperator(_))
        ));
        // Another node under the same signature.
        let mut forged = back.clone();
        forged.revocation.node = [3; 32];
        assert_eq!(
            forged.verify(&[operator]),
            Err(RevocationError::BadSignature)
        );
    }

    #[test]
    fn the_largest_revocation_fits_and_a_longer_reason_does_not() {
        let longest = SignedRevocation::sign([2; 32], "r".repeat(MAX_REASON_BYTES), 1, &key(9));
        assert!(SignedRevocation::decode(&longest.encode()).is_ok());
        let longer = SignedRevocation::sign([2; 32], "r".repeat(MAX_REASON_BYTES + 1), 1, &key(9));
        assert!(SignedRevocation::decode(&longer.encode()).is_err());
    }

    #[test]
    fn hostile_bytes_are_refused_not_panicked_on() {
        let bytes = revocation().encode();
        assert!(SignedRevocation::decode(&[]).is_err());
        assert!(SignedRevocation::decode(&vec![1; MAX_REVOCATION_BYTES + 1]).is_err());
        for cut in 0..bytes.len() {
            assert!(
                SignedRevocation::decode(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(SignedRevocation::decode(&trailing).is_err());
        let mut other_format = bytes;
        other_format[0] = 2;
        assert!(SignedRevocation::decode(&other_format).is_err());
    }

    #[test]
    fn the_digest_is_of_the_set() {
        assert_eq!(digest([]), [0; 32]);
        let (a, b) = ([1; 32], [2; 32]);
        assert_eq!(digest([&a, &b]), digest([&b, &a]));
        assert_ne!(digest([&a]), digest([&a, &b]));
        assert_ne!(digest([&a]), [0; 32]);
    }

    #[test]
    fn a_batch_is_bounded() {
        let one = revocation().encode();
        let full = RevocationBatch {
            revocations: vec![one.clone(); MAX_BATCH],
        };
        full.check_bounds().unwrap();
        let encoded = crate::gossip::messages::encode(&full);
        assert!(encoded.len() <= crate::gossip::messages::MAX_MESSAGE_BYTES);
        let over = RevocationBatch {
            revocations: vec![one; MAX_BATCH + 1],
        };
        assert!(over.check_bounds().is_err());
        let oversized = RevocationBatch {
            revocations: vec![vec![0; MAX_REVOCATION_BYTES + 1]],
        };
        assert!(oversized.check_bounds().is_err());
    }
}
