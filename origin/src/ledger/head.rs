//! [`SignedTreeHead`]: the log's signed commitment to its first `size` entries.

use ed25519_dalek::{Signature, SignatureError, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::merkle::Hash;

/// Domain-separation tag in front of every signed tree head, so that a ledger signature can
/// never be replayed as a signature over anything else the same key signs (manifests, ...).
pub const STH_SIGNING_TAG: &[u8] = b"mhc-ledger-sth-v1";

/// Size of a tree head in the store: size (8) ‖ root (32) ‖ time (8) ‖ signature (64).
const STORED_LEN: usize = 8 + 32 + 8 + 64;

/// A signed tree head: "the log had `size` entries with Merkle root `root` at `time_ms`", signed
/// with ed25519 over [`STH_SIGNING_TAG`] ‖ postcard(`size`, `root`, `time_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTreeHead {
    /// Number of entries covered.
    pub size: u64,
    /// RFC 9162 Merkle Tree Hash (BLAKE3) of the first `size` entries (hex in JSON).
    #[serde(with = "hex_array")]
    pub root: Hash,
    /// When it was signed, in Unix milliseconds; the time stamped on the batch's entries.
    pub time_ms: u64,
    /// Ed25519 signature (hex in JSON).
    #[serde(with = "hex_array")]
    pub signature: [u8; 64],
}

impl SignedTreeHead {
    /// Signs a tree head.
    pub fn sign(size: u64, root: Hash, time_ms: u64, key: &SigningKey) -> Self {
        let signature = key.sign(&Self::signing_bytes(size, &root, time_ms));
        Self {
            size,
            root,
            time_ms,
            signature: signature.to_bytes(),
        }
    }

    /// The exact bytes the signature covers.
    pub fn signing_bytes(size: u64, root: &Hash, time_ms: u64) -> Vec<u8> {
        let out = STH_SIGNING_TAG.to_vec();
        // Integers and a byte array always encode.
        postcard::to_extend(&(size, root, time_ms), out).expect("postcard encoding of a head")
    }

    /// Checks the signature (strict ed25519: no malleable or small-order forms).
    ///
    /// # Errors
    /// The signature was not made by `key` over this head.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), SignatureError> {
        let message = Self::signing_bytes(self.size, &self.root, self.time_ms);
        key.verify_strict(&message, &Signature::from_bytes(&self.signature))
    }

    /// The fixed-size store encoding (big-endian integers).
    pub(crate) fn to_stored(self) -> [u8; STORED_LEN] {
        let mut out = [0u8; STORED_LEN];
        out[..8].copy_from_slice(&self.size.to_be_bytes());
        out[8..40].copy_from_slice(&self.root);
        out[40..48].copy_from_slice(&self.time_ms.to_be_bytes());
        out[48..].copy_from_slice(&self.signature);
        out
    }

    /// Decodes [`to_stored`](Self::to_stored)'s output; `None` if the length is wrong.
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != STORED_LEN {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut root = [0u8; 32];
        root.copy_from_slice(&bytes[8..40]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[48..]);
        Some(Self {
            size: u64_at(0),
            root,
            time_ms: u64_at(40),
            signature,
        })
    }
}

/// Serde for fixed-size byte arrays as lowercase hex strings (serde derives arrays only up to 32
/// elements, and hex is what people paste into tools).
pub(crate) mod hex_array {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        decode::<N>(&text).map_err(D::Error::custom)
    }

    /// Strict lowercase hex of exactly `N` bytes: one byte string, one spelling, so that no
    /// changed byte of an export goes unnoticed (`hex` alone also accepts uppercase).
    pub(crate) fn decode<const N: usize>(text: &str) -> Result<[u8; N], String> {
        if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("{text:?} is not lowercase hex"));
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = key();
        let head = SignedTreeHead::sign(42, [9; 32], 1_700_000_000_123, &k);
        head.verify(&k.verifying_key()).unwrap();
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(head.verify(&other).is_err());
        for change in 0..4 {
            let mut bad = head;
            match change {
                0 => bad.size += 1,
                1 => bad.root[3] ^= 1,
                2 => bad.time_ms -= 1,
                _ => bad.signature[10] ^= 1,
            }
            assert!(bad.verify(&k.verifying_key()).is_err(), "change {change}");
        }
    }

    #[test]
    fn signing_bytes_are_tagged_postcard() {
        let bytes = SignedTreeHead::signing_bytes(1, &[0xaa; 32], 2);
        assert!(bytes.starts_with(STH_SIGNING_TAG));
        let mut expected = STH_SIGNING_TAG.to_vec();
        expected.push(1);
        expected.extend_from_slice(&[0xaa; 32]);
        expected.push(2);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn stored_and_json_round_trip() {
        let head = SignedTreeHead::sign(300, [1; 32], 5, &key());
        assert_eq!(SignedTreeHead::from_stored(&head.to_stored()), Some(head));
        assert_eq!(SignedTreeHead::from_stored(&[0; 10]), None);
        let json = serde_json::to_string(&head).unwrap();
        assert!(json.contains(&hex::encode([1u8; 32])));
        assert_eq!(serde_json::from_str::<SignedTreeHead>(&json).unwrap(), head);
        let bad = json.replace("\"size\"", "\"sighs\"");
        assert!(serde_json::from_str::<SignedTreeHead>(&bad).is_err());
    }
}
