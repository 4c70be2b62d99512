//! [`MerkleTree`]: the in-memory index over a log's stored leaf hashes that keeps the current root
//! and generates inclusion (RFC 9162 §2.1.3.1) and consistency (§2.1.4.1) proofs for any past
//! tree size in O(log² n) node lookups, without rehashing the log.

use super::merkle::{node_hash, split, Frontier, Hash, ProofError};

/// Where a [`MerkleTree`] reads the leaf hashes it does not keep in memory (the log stores them).
pub trait LeafSource {
    /// What reading can fail with; must be able to carry a [`ProofError`] so that proof
    /// generation has one error type.
    type Error: From<ProofError>;

    /// The leaf hashes `start..end`, in order. Only called with ranges inside the tree.
    ///
    /// # Errors
    /// The store could not be read or is missing a leaf.
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, Self::Error>;
}

/// In-memory leaf hashes, for tests and offline tools.
impl LeafSource for [Hash] {
    type Error = ProofError;

    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, ProofError> {
        Ok(self[start as usize..end as usize].to_vec())
    }
}

/// Level below which subtree hashes are recomputed from the stored leaf hashes instead of kept in
/// memory. 2^6 = 64 leaves: a proof then reads at most 63 leaf hashes per low level, while the
/// cache costs about 2 × 32 / 64 = 1 byte of memory per entry (1 MB per million entries).
pub const DEFAULT_CACHE_LEVEL: u32 = 6;

/// The Merkle tree of a log: a [`Frontier`] for the current root, plus the hash of every complete
/// aligned perfect subtree of at least `2^cache_level` leaves. With RFC 9162's split rule every
/// left child is such a subtree, so any `MTH(D[a:b])` a proof needs decomposes into O(log n) of them
/// (plus a few small ones recomputed from leaf hashes).
#[derive(Debug, Clone)]
pub struct MerkleTree {
    frontier: Frontier,
    cache_level: u32,
    /// `levels[j][i]` is the root of leaves `i·2^(cache_level+j) .. (i+1)·2^(cache_level+j)`.
    levels: Vec<Vec<Hash>>,
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_LEVEL)
    }
}

impl MerkleTree {
    /// An empty tree that caches subtrees of `2^cache_level` leaves and more (0 caches
    /// everything, leaves included).
    pub fn new(cache_level: u32) -> Self {
        Self {
            frontier: Frontier::new(),
            cache_level: cache_level.min(63),
            levels: Vec::new(),
        }
    }

    /// How many leaves the tree has.
    pub fn len(&self) -> u64 {
        self.frontier.size()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frontier of the current tree: clone it to compute a tentative root before committing.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The root of the current tree. O(log n).
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Appends one leaf hash. O(1) amortized.
    pub fn push(&mut self, leaf: Hash) {
        let cache_level = self.cache_level;
        let levels = &mut self.levels;
        self.frontier.push_with(leaf, |level, index, hash| {
            if level < cache_level {
                return;
            }
            let j = (level - cache_level) as usize;
            if levels.len() <= j {
                levels.resize_with(j + 1, Vec::new);
            }
            debug_assert_eq!(levels[j].len() as u64, index);
            levels[j].push(*hash);
        });
    }

    /// The root of the tree as it was at `tree_size` leaves.
    ///
    /// # Errors
    /// [`ProofError::SizeOutOfRange`] when `tree_size` is beyond the tree; the source's error when
    /// a leaf hash cannot be read.
    pub fn root_at<S>(&self, leaves: &S, tree_size: u64) -> Result<Hash, S::Error>
    where
        S: LeafSource + ?Sized,
    {
        self.check_size(tree_size)?;
        if tree_size == self.len() {
            return Ok(self.root());
        }
        if tree_size == 0 {
            return Ok(super::merkle::empty_root());
        }
        self.subtree_root(leaves, 0, tree_size)
    }

    /// The inclusion proof of leaf `index` in the tree of `tree_size` leaves (RFC 9162 §2.1.3.1),
    /// from the leaf's sibling up to the root's child.
    ///
    /// # Errors
    /// [`ProofError::SizeOutOfRange`] or [`ProofError::IndexOutOfRange`] for a size beyond the tree
    /// or an index outside `0..tree_size`; the source's error when a leaf hash cannot be read.
    pub fn inclusion_proof<S>(
        &self,
        leaves: &S,
        index: u64,
        tree_size: u64,
    ) -> Result<Vec<Hash>, S::Error>
    where
        S: LeafSource + ?Sized,
    {
        self.check_size(tree_size)?;
        if index >= tree_size {
            return Err(ProofError::IndexOutOfRange { index, tree_size }.into());
        }
        let mut proof = Vec::with_capacity(64);
        self.path(leaves, index, 0, tree_size, &mut proof)?;
        Ok(proof)
    }

    /// The consistency proof between the trees of `old_size` and `new_size` leaves
    /// (RFC 9162 §2.1.4.1). Empty when `old_size` is 0 or equal to `new_size`.
    ///
    /// # Errors
    /// [`ProofError::SizeOutOfRange`] for a size beyond the tree, [`ProofError::BadRange`] when
    /// `old_size > new_size`; the source's error when a leaf hash cannot be read.
    pub fn consistency_proof<S>(
        &self,
        leaves: &S,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, S::Error>
    where
        S: LeafSource + ?Sized,
    {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(ProofError::BadRange { old_size, new_size }.into());
        }
        let mut proof = Vec::with_capacity(64);
        if old_size > 0 && old_size < new_size {
            self.subproof(leaves, old_size, 0, new_size, true, &mut proof)?;
        }
        Ok(proof)
    }

    fn check_size(&self, tree_size: u64) -> Result<(), ProofError> {
        if tree_size > self.len() {
            return Err(ProofError::SizeOutOfRange {
                tree_size,
                len: self.len(),
            });
        }
        Ok(())
    }

    /// `PATH(m, D[start:end])` with `m` relative to `start`.
    fn path<S>(
        &self,
        leaves: &S,
        m: u64,
        start: u64,
        end: u64,
        out: &mut Vec<Hash>,
    ) -> Result<(), S::Error>
    where
        S: LeafSource + ?Sized,
    {
        let n = end - start;
        if n <= 1 {
            return Ok(());
        }
        let k = split(n);
        if m < k {
            self.path(leaves, m, start, start + k, out)?;
            out.push(self.subtree_root(leaves, start + k, end)?);
        } else {
            self.path(leaves, m - k, start + k, end, out)?;
            out.push(self.subtree_root(leaves, start, start + k)?);
        }
        Ok(())
    }

    /// `SUBPROOF(m, D[start:end], b)` with `m` relative to `start`.
    fn subproof<S>(
        &self,
        leaves: &S,
        m: u64,
        start: u64,
        end: u64,
        whole: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), S::Error>
    where
        S: LeafSource + ?Sized,
    {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.subtree_root(leaves, start, end)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(leaves, m, start, start + k, whole, out)?;
            out.push(self.subtree_root(leaves, start + k, end)?);
        } else {
            self.subproof(leaves, m - k, start + k, end, false, out)?;
            out.push(self.subtree_root(leaves, start, start + k)?);
        }
        Ok(())
    }

    /// `MTH(D[start:end])` for a non-empty range that lies on RFC 9162's split boundaries: either an
    /// aligned perfect subtree (one lookup) or a right edge (its left part is perfect, recurse
    /// into the right part).
    fn subtree_root<S>(&self, leaves: &S, start: u64, end: u64) -> Result<Hash, S::Error>
    where
        S: LeafSource + ?Sized,
    {
        let n = end - start;
        debug_assert!(n > 0 && end <= self.len());
        if n.is_power_of_two() && start.is_multiple_of(n) {
            return self.perfect(leaves, n.trailing_zeros(), start >> n.trailing_zeros());
        }
        let k = split(n);
        let left = self.subtree_root(leaves, start, start + k)?;
        let right = self.subtree_root(leaves, start + k, end)?;
        Ok(node_hash(&left, &right))
    }

    /// The root of the complete perfect subtree `index` at `level`.
    fn perfect<S>(&self, leaves: &S, level: u32, index: u64) -> Result<Hash, S::Error>
    where
        S: LeafSource + ?Sized,
    {
        if level >= self.cache_level {
            let j = (level - self.cache_level) as usize;
            return Ok(self.levels[j][index as usize]);
        }
        let start = index << level;
        let mut row = leaves.leaf_hashes(start, start + (1 << level))?;
        // Reduce pairwise in place: a perfect subtree's interior nodes are exactly the pairs.
        let mut len = row.len();
        while len > 1 {
            for i in 0..len / 2 {
                row[i] = node_hash(&row[2 * i], &row[2 * i + 1]);
            }
            len /= 2;
        }
        Ok(row[0])
    }
}

#[cfg(test)]
mod tests {
    use super::super::merkle::tests::{brute_path, brute_proof, leaves};
    use super::super::merkle::{root_of, verify_consistency, verify_inclusion};
    use super::*;

    fn tree(all: &[Hash], cache_level: u32) -> MerkleTree {
        let mut t = MerkleTree::new(cache_level);
        for leaf in all {
            t.push(*leaf);
        }
        t
    }

    #[test]
    fn roots_at_every_size() {
        let all = leaves(70);
        for cache_level in [0, 1, 3, 6] {
            let t = tree(&all, cache_level);
            for n in 0..=70usize {
                assert_eq!(
                    t.root_at(all.as_slice(), n as u64).unwrap(),
                    root_of(&all[..n]),
                    "cache {cache_level} n {n}"
                );
            }
            assert_eq!(t.root(), root_of(&all));
        }
    }

    #[test]
    fn inclusion_matches_brute_force_n_0_to_70() {
        let all = leaves(70);
        for cache_level in [0, 2, 6] {
            let t = tree(&all, cache_level);
            for n in 1..=70usize {
                let root = root_of(&all[..n]);
                for m in 0..n {
                    let proof = t
                        .inclusion_proof(all.as_slice(), m as u64, n as u64)
                        .unwrap();
                    assert_eq!(proof, brute_path(m, &all[..n]), "m={m} n={n}");
                    verify_inclusion(&all[m], m as u64, n as u64, &proof, &root).unwrap();
                }
            }
        }
    }

    #[test]
    fn consistency_matches_brute_force_n_0_to_70() {
        let all = leaves(70);
        for cache_level in [0, 2, 6] {
            let t = tree(&all, cache_level);
            for n in 0..=70usize {
                let new_root = root_of(&all[..n]);
                for m in 0..=n {
                    let proof = t
                        .consistency_proof(all.as_slice(), m as u64, n as u64)
                        .unwrap();
                    assert_eq!(proof, brute_proof(m, &all[..n]), "m={m} n={n}");
                    let old_root = root_of(&all[..m]);
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof).unwrap();
                }
            }
        }
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let all = leaves(10);
        let t = tree(&all, 2);
        let src = all.as_slice();
        assert_eq!(
            t.inclusion_proof(src, 10, 10),
            Err(ProofError::IndexOutOfRange {
                index: 10,
                tree_size: 10
            })
        );
        assert_eq!(
            t.inclusion_proof(src, 0, 11),
            Err(ProofError::SizeOutOfRange {
                tree_size: 11,
                len: 10
            })
        );
        assert_eq!(
            t.consistency_proof(src, 4, 3),
            Err(ProofError::BadRange {
                old_size: 4,
                new_size: 3
            })
        );
        assert!(t.consistency_proof(src, 3, 11).is_err());
        assert!(t.root_at(src, 11).is_err());
    }

    /// Larger trees, against the verifier only (brute force would be quadratic): a seeded sample
    /// of positions and size pairs in a tree of 5,000 leaves.
    #[test]
    fn sampled_proofs_in_a_larger_tree() {
        let all = leaves(5_000);
        let t = tree(&all, DEFAULT_CACHE_LEVEL);
        let src = all.as_slice();
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = |bound: u64| rng.u64(..bound);
        for _ in 0..300 {
            let n = next(5_000) + 1;
            let m = next(n);
            let root = t.root_at(src, n).unwrap();
            let proof = t.inclusion_proof(src, m, n).unwrap();
            verify_inclusion(&all[m as usize], m, n, &proof, &root).unwrap();
            let old = next(n) + 1;
            let old_root = t.root_at(src, old).unwrap();
            let proof = t.consistency_proof(src, old, n).unwrap();
            verify_consistency(old, n, &old_root, &root, &proof).unwrap();
        }
    }
}
