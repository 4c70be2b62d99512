//! BLAKE3 Merkle tree over segment hashes and compact per-segment inclusion proofs.
//!
//! Leaves are the BLAKE3 hashes of the segments themselves. An inner node is
//! `blake3(0x01 ‖ left ‖ right)`; a node without a right sibling (the right-most node of an
//! odd-sized layer) is promoted unchanged to the next layer. A single-leaf tree's root is
//! that leaf.

use rs_merkle::{Hasher, MerkleProof, MerkleTree};

use crate::id::Hash32;

/// Domain-separation byte prefixed to every inner-node preimage.
pub const MERKLE_NODE_PREFIX: u8 = 0x01;

/// Maximum number of hashes accepted in a serialized [`SegmentProof`].
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a Merkle proof could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The requested leaf index does not exist.
    #[error("segment index {index} out of range: there are {total} segments")]
    IndexOutOfRange {
        /// The requested index.
        index: usize,
        /// The number of leaves.
        total: usize,
    },
    /// The serialized proof is not a whole number of 32-byte hashes.
    #[error("merkle proof is {len} bytes long, not a multiple of 32")]
    BadLength {
        /// Length of the input in bytes.
        len: usize,
    },
    /// The serialized proof holds more hashes than any valid proof can.
    #[error("merkle proof holds {count} hashes; at most {MAX_PROOF_HASHES} allowed")]
    TooManyHashes {
        /// Number of hashes in the input (rounded down).
        count: usize,
    },
    /// The hex form is not valid hexadecimal (the message says why).
    #[error("merkle proof is not valid hex: {0}")]
    InvalidHex(String),
}

/// [`rs_merkle::Hasher`] using BLAKE3 with a `0x01` domain byte for inner nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blake3Hasher;

impl Hasher for Blake3Hasher {
    type Hash = Hash32;

    fn hash(data: &[u8]) -> Hash32 {
        *blake3::hash(data).as_bytes()
    }

    fn concat_and_hash(left: &Hash32, right: Option<&Hash32>) -> Hash32 {
        match right {
            Some(right) => {
                let mut h = blake3::Hasher::new();
                h.update(&[MERKLE_NODE_PREFIX]);
                h.update(left);
                h.update(right);
                *h.finalize().as_bytes()
            }
            None => *left,
        }
    }
}

/// Merkle root of already-hashed leaves; `None` when there are no leaves.
pub fn merkle_root(leaves: &[Hash32]) -> Option<Hash32> {
    if leaves.is_empty() {
        return None;
    }
    MerkleTree::<Blake3Hasher>::from_leaves(leaves).root()
}

/// Number of sibling hashes a valid proof for `index` in a tree of `total` leaves holds.
fn expected_proof_len(mut index: usize, mut total: usize) -> usize {
    let mut len = 0;
    while total > 1 {
        if (index ^ 1) < total {
            len += 1;
        }
        index /= 2;
        total = total.div_ceil(2);
    }
    len
}

/// Inclusion proof of one leaf: sibling hashes from the leaf layer up to the root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentProof(Vec<Hash32>);

impl SegmentProof {
    /// Builds the proof for leaf `index` of the tree over `leaves`.
    ///
    /// # Errors
    ///
    /// Returns [`ProofError::IndexOutOfRange`] if `index >= leaves.len()`.
    pub fn for_index(leaves: &[Hash32], index: usize) -> Result<Self, ProofError> {
        if index >= leaves.len() {
            return Err(ProofError::IndexOutOfRange {
                index,
                total: leaves.len(),
            });
        }
        let tree = MerkleTree::<Blake3Hasher>::from_leaves(leaves);
        Ok(Self(tree.proof(&[index]).proof_hashes().to_vec()))
    }

    /// Wraps raw sibling hashes (leaf layer first).
    pub fn from_hashes(hashes: Vec<Hash32>) -> Self {
        Self(hashes)
    }

    /// The sibling hashes, leaf layer first.
    pub fn hashes(&self) -> &[Hash32] {
        &self.0
    }

    /// Checks that `leaf` is leaf `index` of a `total_leaves`-leaf tree with root `root`.
    ///
    /// Returns `false` (never panics) for an out-of-range index, an empty tree, a proof of
    /// the wrong length, or any hash mismatch.
    pub fn verify(&self, root: &Hash32, index: usize, leaf: &Hash32, total_leaves: usize) -> bool {
        if index >= total_leaves || self.0.len() != expected_proof_len(index, total_leaves) {
            return false;
        }
        MerkleProof::<Blake3Hasher>::new(self.0.clone()).verify(
            *root,
            &[index],
            &[*leaf],
            total_leaves,
        )
    }

    /// Concatenated 32-byte hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.concat()
    }

    /// Parses concatenated 32-byte hashes.
    ///
    /// # Errors
    ///
    /// [`ProofError::BadLength`] if the length is not a multiple of 32,
    /// [`ProofError::TooManyHashes`] if there are more than [`MAX_PROOF_HASHES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        if !bytes.len().is_multiple_of(32) {
            return Err(ProofError::BadLength { len: bytes.len() });
        }
        let count = bytes.len() / 32;
        if count > MAX_PROOF_HASHES {
            return Err(ProofError::TooManyHashes { count });
        }
        let hashes = bytes
            .chunks_exact(32)
            .map(|chunk| {
                let mut h = [0u8; 32];
                h.copy_from_slice(chunk);
                h
            })
            .collect();
        Ok(Self(hashes))
    }

    /// Single lowercase hex string of [`to_bytes`](Self::to_bytes) (for `X-Mhc-Merkle-Proof`).
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// Parses the hex form; upper-case digits are accepted, surrounding whitespace is not.
    ///
    /// # Errors
    ///
    /// [`ProofError::InvalidHex`] for non-hex input or odd length, otherwise as
    /// [`from_bytes`](Self::from_bytes).
    pub fn from_hex(s: &str) -> Result<Self, ProofError> {
        // Reject oversized input before allocating for it.
        if s.len() > MAX_PROOF_HASHES * 64 {
            return Err(ProofError::TooManyHashes {
                count: s.len() / 64,
            });
        }
        let bytes = hex::decode(s).map_err(|e| ProofError::InvalidHex(e.to_string()))?;
        Self::from_bytes(&bytes)
    }
}

/// Checks a hex proof (as sent in `X-Mhc-Merkle-Proof`) for segment `index`; `false` on any error.
pub fn verify_segment(
    root: &Hash32,
    index: usize,
    total: usize,
    leaf: &Hash32,
    proof_hex: &str,
) -> bool {
    match SegmentProof::from_hex(proof_hex) {
        Ok(proof) => proof.verify(root, index, leaf, total),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| *blake3::hash(format!("segment {i}").as_bytes()).as_bytes())
            .collect()
    }

    fn check_all(n: usize, indices: &[usize]) {
        let leaves = leaves(n);
        let root = merkle_root(&leaves).unwrap();
        for &i in indices {
            let proof = SegmentProof::for_index(&leaves, i).unwrap();
            assert!(proof.verify(&root, i, &leaves[i], n), "n={n} i={i}");
            assert_eq!(proof.hashes().len(), expected_proof_len(i, n));
            // Hex and byte round trips.
            let hex = proof.to_hex();
            assert!(verify_segment(&root, i, n, &leaves[i], &hex));
            assert_eq!(SegmentProof::from_hex(&hex).unwrap(), proof);
            assert_eq!(SegmentProof::from_bytes(&proof.to_bytes()).unwrap(), proof);
            // Wrong leaf hash.
            let mut bad_leaf = leaves[i];
            bad_leaf[0] ^= 1;
            assert!(!proof.verify(&root, i, &bad_leaf, n));
            // Wrong root.
            let mut bad_root = root;
            bad_root[31] ^= 0x80;
            assert!(!proof.verify(&bad_root, i, &leaves[i], n));
            // Wrong index (a different leaf's slot).
            if n > 1 {
                let other = if i == 0 { 1 } else { i - 1 };
                assert!(!proof.verify(&root, other, &leaves[i], n), "n={n} i={i}");
                assert!(!proof.verify(&root, other, &leaves[other], n));
            }
            // Out-of-range index never panics.
            assert!(!proof.verify(&root, n, &leaves[i], n));
            assert!(!proof.verify(&root, usize::MAX, &leaves[i], n));
            assert!(!proof.verify(&root, i, &leaves[i], 0));
            // Truncated and extended proofs.
            if !proof.hashes().is_empty() {
                let mut short = proof.hashes().to_vec();
                short.pop();
                assert!(!SegmentProof::from_hashes(short).verify(&root, i, &leaves[i], n));
            }
            let mut long = proof.hashes().to_vec();
            long.push([7u8; 32]);
            assert!(!SegmentProof::from_hashes(long).verify(&root, i, &leaves[i], n));
            // Tampered sibling.
            if !proof.hashes().is_empty() {
                let mut tampered = proof.hashes().to_vec();
                tampered[0][5] ^= 1;
                assert!(!SegmentProof::from_hashes(tampered).verify(&root, i, &leaves[i], n));
            }
        }
    }

    #[test]
    fn one_leaf() {
        let l = leaves(1);
        assert_eq!(merkle_root(&l), Some(l[0]));
        let proof = SegmentProof::for_index(&l, 0).unwrap();
        assert!(proof.hashes().is_empty());
        assert_eq!(proof.to_hex(), "");
        assert!(verify_segment(&l[0], 0, 1, &l[0], ""));
        check_all(1, &[0]);
    }

    #[test]
    fn two_leaves_use_domain_byte() {
        let l = leaves(2);
        let mut pre = vec![0x01];
        pre.extend_from_slice(&l[0]);
        pre.extend_from_slice(&l[1]);
        let expected = *blake3::hash(&pre).as_bytes();
        assert_eq!(merkle_root(&l), Some(expected));
        let plain = *blake3::hash(&[l[0], l[1]].concat()).as_bytes();
        assert_ne!(merkle_root(&l), Some(plain));
        check_all(2, &[0, 1]);
    }

    #[test]
    fn three_leaves_promote_lone_node() {
        let l = leaves(3);
        let ab = Blake3Hasher::concat_and_hash(&l[0], Some(&l[1]));
        let root = Blake3Hasher::concat_and_hash(&ab, Some(&l[2]));
        assert_eq!(merkle_root(&l), Some(root));
        assert_eq!(SegmentProof::for_index(&l, 2).unwrap().hashes(), &[ab]);
    }

    #[test]
    fn seven_leaves_every_index() {
        check_all(7, &(0..7).collect::<Vec<_>>());
    }

    #[test]
    fn many_small_trees_every_index() {
        for n in 1..=17 {
            check_all(n, &(0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn thousand_leaves_sample() {
        check_all(1000, &[0, 1, 2, 255, 511, 512, 767, 997, 998, 999]);
    }

    #[test]
    fn empty_tree() {
        assert_eq!(merkle_root(&[]), None);
        assert_eq!(
            SegmentProof::for_index(&[], 0),
            Err(ProofError::IndexOutOfRange { index: 0, total: 0 })
        );
        assert!(!SegmentProof::default().verify(&[0; 32], 0, &[0; 32], 0));
    }

    #[test]
    fn index_out_of_range() {
        let l = leaves(4);
        assert_eq!(
            SegmentProof::for_index(&l, 4),
            Err(ProofError::IndexOutOfRange { index: 4, total: 4 })
        );
    }

    #[test]
    fn wrong_total_rejected() {
        let l = leaves(7);
        let root = merkle_root(&l).unwrap();
        let proof = SegmentProof::for_index(&l, 6).unwrap();
        assert!(proof.verify(&root, 6, &l[6], 7));
        // Different shape: proof length no longer matches.
        assert!(!proof.verify(&root, 6, &l[6], 8));
        assert!(!proof.verify(&root, 6, &l[6], 6));
        assert!(!proof.verify(&root, 6, &l[6], 1000));
        let proof = SegmentProof::for_index(&l, 3).unwrap();
        assert!(!proof.verify(&root, 3, &l[3], 4));
        assert!(!proof.verify(&root, 3, &l[3], 1));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            SegmentProof::from_bytes(&[0; 33]),
            Err(ProofError::BadLength { len: 33 })
        );
        assert_eq!(
            SegmentProof::from_bytes(&[0; 32 * 65]),
            Err(ProofError::TooManyHashes { count: 65 })
        );
        assert!(SegmentProof::from_bytes(&[0; 32 * 64]).is_ok());
        assert!(matches!(
            SegmentProof::from_hex("zz"),
            Err(ProofError::InvalidHex(_))
        ));
        assert!(matches!(
            SegmentProof::from_hex("abc"),
            Err(ProofError::InvalidHex(_))
        ));
        assert!(matches!(
            SegmentProof::from_hex(&"ab".repeat(32 * 65)),
            Err(ProofError::TooManyHashes { .. })
        ));
        assert!(matches!(
            SegmentProof::from_hex("ab,cd"),
            Err(ProofError::InvalidHex(_))
        ));
        assert!(!verify_segment(&[0; 32], 0, 2, &[0; 32], "not hex"));
        let upper = SegmentProof::from_hex(&"AB".repeat(32)).unwrap();
        assert_eq!(upper.to_hex(), "ab".repeat(32));
    }
}
