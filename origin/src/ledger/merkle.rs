//! RFC 9162 §2.1 Merkle Tree Hash with BLAKE3: the hash primitives, the compact [`Frontier`] that
//! keeps the root current in O(log n) per append, and the verification of inclusion (§2.1.3.2) and
//! consistency (§2.1.4.2) proofs. Generating proofs needs the stored leaf hashes and lives in
//! [`MerkleTree`](super::MerkleTree).

/// A 32-byte BLAKE3 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash (RFC 9162 §2.1.1), so that a leaf can never be passed
/// off as an interior node (second-preimage attack on the tree).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash (RFC 9162 §2.1.1).
const NODE_PREFIX: u8 = 0x01;

/// Why a Merkle proof could not be generated or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree the proof is for.
    #[error("leaf index {index} is outside a tree of size {tree_size}")]
    IndexOutOfRange {
        /// The leaf asked about.
        index: u64,
        /// The size of the tree the proof is for.
        tree_size: u64,
    },
    /// The tree size asked about is larger than the log.
    #[error("tree size {tree_size} is larger than the log ({len} leaves)")]
    SizeOutOfRange {
        /// The size asked about.
        tree_size: u64,
        /// How many leaves the log holds.
        len: u64,
    },
    /// A consistency proof was asked for from a larger tree to a smaller one.
    #[error("no consistency proof from size {old_size} to the smaller size {new_size}")]
    BadRange {
        /// The older (first) tree size.
        old_size: u64,
        /// The newer (second) tree size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for its sizes (too short, too long, or empty
    /// where RFC 9162 requires at least one hash).
    #[error("proof has the wrong length for its tree sizes")]
    WrongLength,
    /// The proof is well formed but does not lead to the expected root(s): the leaf, the proof or
    /// the root has been changed.
    #[error("proof does not match the root")]
    Mismatch,
}

/// The hash of one leaf: `BLAKE3(0x00 ‖ data)` (RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[LEAF_PREFIX]);
    hasher.update(data);
    *hasher.finalize().as_bytes()
}

/// The hash of an interior node: `BLAKE3(0x01 ‖ left ‖ right)` (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    *blake3::hash(&buf).as_bytes()
}

/// The root of the empty tree: `BLAKE3("")` (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// The split point of a subtree of `n > 1` leaves: the largest power of two smaller than `n`
/// (RFC 9162 §2.1.1).
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of the tree over `leaves` (already hashed), computed directly by the recursive
/// definition of RFC 9162 §2.1.1. O(n); used by tests and for small subtrees.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The roots of the perfect subtrees that make up the current tree, largest (leftmost) first:
/// one per set bit of the size. Appending merges equal-sized roots like a binary counter, so it
/// costs O(1) amortized hashes, and [`Frontier::root`] folds at most 64 roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// Appends one leaf hash and reports every perfect subtree it completes, as
    /// `(level, index at that level, hash)`: the leaf itself at level 0, then each merge. This is
    /// how [`MerkleTree`](super::MerkleTree) fills its node cache without hashing twice.
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let mut hash = leaf;
        let mut level = 0u32;
        let mut index = self.size;
        completed(level, index, &hash);
        // Each trailing one bit of the old size is a perfect subtree of the same height as the
        // one being carried: merge them, exactly like a binary increment.
        let mut bits = self.size;
        while bits & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit");
            hash = node_hash(&left, &hash);
            bits >>= 1;
            level += 1;
            index >>= 1;
            completed(level, index, &hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The Merkle Tree Hash of the whole tree.
    pub fn root(&self) -> Hash {
        // The tree is the left-leaning combination of the perfect subtrees: fold from the
        // smallest (rightmost) one.
        let mut iter = self.nodes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): that the leaf with hash `leaf` is at `index` in
/// the tree of `tree_size` leaves whose root is `root`.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] when `index >= tree_size`, [`ProofError::WrongLength`] when the
/// proof is too short or too long for the position, [`ProofError::Mismatch`] when it does not
/// lead to `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let mut f_n = index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                // A right-edge node with no sibling: climb until this is a right child again.
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): that the tree of `old_size` leaves with root
/// `old_root` is a prefix of the tree of `new_size` leaves with root `new_root`.
///
/// Beyond the RFC (which only defines `0 < old_size < new_size`): equal sizes need an empty proof
/// and equal roots, and the empty tree (size 0, root [`empty_root`]) is a prefix of every tree with
/// an empty proof.
///
/// # Errors
/// [`ProofError::BadRange`] when `old_size > new_size`, [`ProofError::WrongLength`] when the proof
/// has the wrong length, [`ProofError::Mismatch`] when it does not lead to both roots.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::BadRange { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        let roots_ok = if old_size == 0 {
            *old_root == empty_root()
        } else {
            old_root == new_root
        };
        return if roots_ok {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // When the old tree is a perfect subtree of the new one, its root is the proof's implicit
    // first element.
    let (first, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        (proof[0], &proof[1..])
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = first;
    let mut s_r = first;
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if f_r != *old_root || s_r != *new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic leaf hashes for tests: leaf `i` is the hash of its index.
    pub(crate) fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// RFC 9162 §2.1.3.1 PATH, brute force over the leaf hashes.
    pub(crate) fn brute_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        if d.len() <= 1 {
            return Vec::new();
        }
        let k = split(d.len() as u64) as usize;
        if m < k {
            let mut p = brute_path(m, &d[..k]);
            p.push(root_of(&d[k..]));
            p
        } else {
            let mut p = brute_path(m - k, &d[k..]);
            p.push(root_of(&d[..k]));
            p
        }
    }

    /// RFC 9162 §2.1.4.1 PROOF / SUBPROOF, brute force over the leaf hashes.
    pub(crate) fn brute_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        fn sub(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
            let n = d.len();
            if m == n {
                return if b { Vec::new() } else { vec![root_of(d)] };
            }
            let k = split(n as u64) as usize;
            if m <= k {
                let mut p = sub(m, &d[..k], b);
                p.push(root_of(&d[k..]));
                p
            } else {
                let mut p = sub(m - k, &d[k..], false);
                p.push(root_of(&d[..k]));
                p
            }
        }
        if m == 0 || m == d.len() {
            return Vec::new();
        }
        sub(m, d, true)
    }

    #[test]
    fn known_small_roots() {
        assert_eq!(root_of(&[]), *blake3::hash(b"").as_bytes());
        let a = leaf_hash(b"a");
        let mut pre = vec![0u8];
        pre.extend_from_slice(b"a");
        assert_eq!(a, *blake3::hash(&pre).as_bytes());
        let b = leaf_hash(b"b");
        let c = leaf_hash(b"c");
        assert_eq!(root_of(&[a]), a);
        assert_eq!(root_of(&[a, b]), node_hash(&a, &b));
        // Three leaves split 2 + 1.
        assert_eq!(root_of(&[a, b, c]), node_hash(&node_hash(&a, &b), &c));
        assert_ne!(leaf_hash(&[]), empty_root());
    }

    #[test]
    fn split_is_largest_power_below() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (1 << 40, 1 << 39),
        ] {
            assert_eq!(split(n), k, "n = {n}");
        }
        assert_eq!(split(u64::MAX), 1 << 63);
    }

    #[test]
    fn frontier_matches_recursive_root() {
        let all = leaves(300);
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            f.push(*leaf);
            assert_eq!(f.size(), i as u64 + 1);
            assert_eq!(f.root(), root_of(&all[..=i]), "size {}", i + 1);
            assert_eq!(f.nodes.len(), f.size().count_ones() as usize);
        }
    }

    #[test]
    fn frontier_reports_completed_subtrees() {
        let all = leaves(37);
        let mut f = Frontier::new();
        let mut seen = Vec::new();
        for leaf in &all {
            f.push_with(*leaf, |level, index, hash| seen.push((level, index, *hash)));
        }
        for (level, index, hash) in seen {
            let start = (index << level) as usize;
            let end = start + (1usize << level);
            assert!(end <= all.len());
            assert_eq!(
                hash,
                root_of(&all[start..end]),
                "level {level} index {index}"
            );
        }
    }

    #[test]
    fn inclusion_brute_force_all_positions() {
        let all = leaves(70);
        for n in 1..=70usize {
            let root = root_of(&all[..n]);
            for m in 0..n {
                let proof = brute_path(m, &all[..n]);
                verify_inclusion(&all[m], m as u64, n as u64, &proof, &root)
                    .unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
            }
        }
    }

    #[test]
    fn inclusion_rejects_tampering() {
        let all = leaves(70);
        for n in 1..=70usize {
            let root = root_of(&all[..n]);
            for m in 0..n {
                let proof = brute_path(m, &all[..n]);
                let (i, s) = (m as u64, n as u64);
                // Another leaf, another position, another root.
                let other = leaf_hash(b"forged");
                assert!(verify_inclusion(&other, i, s, &proof, &root).is_err());
                let mut bad_root = root;
                bad_root[7] ^= 1;
                assert!(verify_inclusion(&all[m], i, s, &proof, &bad_root).is_err());
                if n > 1 {
                    let other_pos = (i + 1) % s;
                    assert!(verify_inclusion(&all[m], other_pos, s, &proof, &root).is_err());
                }
                // Every single flipped bit of the proof, a dropped and an extra hash.
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j][0] ^= 0x80;
                    assert!(verify_inclusion(&all[m], i, s, &bad, &root).is_err());
                }
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    assert_eq!(
                        verify_inclusion(&all[m], i, s, short, &root),
                        Err(ProofError::WrongLength)
                    );
                }
                let mut long = proof.clone();
                long.push(all[0]);
                assert!(verify_inclusion(&all[m], i, s, &long, &root).is_err());
            }
        }
        assert_eq!(
            verify_inclusion(&all[0], 3, 3, &[], &root_of(&all[..3])),
            Err(ProofError::IndexOutOfRange {
                index: 3,
                tree_size: 3
            })
        );
    }

    #[test]
    fn consistency_brute_force_all_pairs() {
        let all = leaves(70);
        for n in 0..=70usize {
            let new_root = root_of(&all[..n]);
            for m in 0..=n {
                let old_root = root_of(&all[..m]);
                let proof = brute_proof(m, &all[..n]);
                verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
            }
        }
    }

    #[test]
    fn consistency_rejects_tampering() {
        let all = leaves(70);
        for n in 1..=70usize {
            let new_root = root_of(&all[..n]);
            for m in 1..=n {
                let old_root = root_of(&all[..m]);
                let proof = brute_proof(m, &all[..n]);
                let (o, s) = (m as u64, n as u64);
                let mut bad = old_root;
                bad[31] ^= 1;
                assert!(verify_consistency(o, s, &bad, &new_root, &proof).is_err());
                let mut bad = new_root;
                bad[0] ^= 1;
                assert!(verify_consistency(o, s, &old_root, &bad, &proof).is_err());
                for j in 0..proof.len() {
                    let mut tampered = proof.clone();
                    tampered[j][5] ^= 4;
                    assert!(
                        verify_consistency(o, s, &old_root, &new_root, &tampered).is_err(),
                        "m={m} n={n} j={j}"
                    );
                }
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    assert!(verify_consistency(o, s, &old_root, &new_root, short).is_err());
                }
                let mut long = proof.clone();
                long.push(all[0]);
                assert!(verify_consistency(o, s, &old_root, &new_root, &long).is_err());
                // A forked history: same size, different last leaf.
                if m < n {
                    let mut forked = all[..m].to_vec();
                    forked[m - 1] = leaf_hash(b"fork");
                    let forked_root = root_of(&forked);
                    assert!(verify_consistency(o, s, &forked_root, &new_root, &proof).is_err());
                }
            }
        }
        assert_eq!(
            verify_consistency(5, 4, &empty_root(), &empty_root(), &[]),
            Err(ProofError::BadRange {
                old_size: 5,
                new_size: 4
            })
        );
        let r = root_of(&all[..3]);
        assert_eq!(
            verify_consistency(0, 3, &r, &r, &[]),
            Err(ProofError::Mismatch)
        );
    }
}
