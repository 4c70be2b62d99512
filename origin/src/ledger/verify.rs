//! Verification shared by [`Ledger::verify`](super::Ledger::verify) and
//! [`verify_export`](super::verify_export): [`VerifyReport`], the single pass that
//! recomputes a whole log from its entries, and the standalone inclusion check for one entry.

use std::ops::Range;

use ed25519_dalek::VerifyingKey;

use super::entry::LedgerEntry;
use super::error::{LedgerError, VerifyError};
use super::head::SignedTreeHead;
use super::log::Ledger;
use super::merkle::{self, empty_root, leaf_hash, Frontier, Hash};
use super::store::{decode_hash, decode_key};

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The log's ed25519 public key.
    pub public_key: [u8; 32],
    /// The entries whose contents were checked.
    pub entries: Range<u64>,
    /// How many signed tree heads were checked (signature and root).
    pub heads: usize,
    /// The latest head checked, if any.
    pub latest: Option<SignedTreeHead>,
}

impl Ledger {
    /// Checks the whole store: decodes every entry from its stored bytes, recomputes its leaf hash
    /// from those bytes (and compares it with the stored leaf hash), rebuilds the tree from the
    /// recomputed hashes and checks every head's root and signature, in index order.
    ///
    /// # Errors
    /// The first problem found, naming the first bad entry (`EntryCorrupt`, `EntryMismatch`,
    /// `EntryOutOfPlace`, `MissingEntry`, `TimeOrder`) or head (`HeadMismatch`, `BadSignature`).
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        let store = |e: LedgerError| VerifyError::Store(e.to_string());
        let heads = self.heads().map_err(store)?;
        let mut check = FullCheck::new(self.verifying_key(), &heads)?;
        let mut leaves = self.store().leaves.iter();
        let mut count = 0u64;
        for (position, item) in self.store().entries.iter().enumerate() {
            let position = position as u64;
            let (k, bytes) = item.map_err(|e| store(e.into()))?;
            if decode_key(&k).map_err(store)? != position {
                return Err(VerifyError::MissingEntry { index: position });
            }
            let entry = LedgerEntry::from_leaf_bytes(&bytes).map_err(|source| {
                VerifyError::EntryCorrupt {
                    index: position,
                    source,
                }
            })?;
            let stored = match leaves.next() {
                Some(item) => {
                    let (k, v) = item.map_err(|e| store(e.into()))?;
                    if decode_key(&k).map_err(store)? != position {
                        return Err(VerifyError::EntryMismatch { index: position });
                    }
                    decode_hash(&v, position)
                        .map_err(|_| VerifyError::EntryMismatch { index: position })?
                }
                None => return Err(VerifyError::EntryMismatch { index: position }),
            };
            check.entry(position, &entry, leaf_hash(&bytes), Some(&stored))?;
            count += 1;
        }
        let extra = leaves.count() as u64;
        if extra > 0 {
            return Err(VerifyError::CountMismatch {
                entries: count,
                leaves: count + extra,
            });
        }
        check.finish()
    }
}

/// Checks that an entry, given as its leaf bytes, is at `index` in the tree of `tree_size` entries
/// whose (signed) root is `root`, and returns it decoded. Needs nothing but the arguments: this is
/// the offline check for one entry of an export or one answer of the admin API.
///
/// # Errors
/// [`VerifyError::EntryCorrupt`] when the bytes are not a valid entry,
/// [`VerifyError::EntryOutOfPlace`] when the entry says it is at another index,
/// [`VerifyError::InclusionFailed`] when the proof does not lead to `root`.
pub fn verify_inclusion(
    leaf_bytes: &[u8],
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<LedgerEntry, VerifyError> {
    let entry = LedgerEntry::from_leaf_bytes(leaf_bytes)
        .map_err(|source| VerifyError::EntryCorrupt { index, source })?;
    if entry.index != index {
        return Err(VerifyError::EntryOutOfPlace {
            index,
            claimed: entry.index,
        });
    }
    merkle::verify_inclusion(
        &merkle::leaf_hash(leaf_bytes),
        index,
        tree_size,
        proof,
        root,
    )
    .map_err(|source| VerifyError::InclusionFailed { index, source })?;
    Ok(entry)
}

/// [`verify_inclusion`] for an already decoded entry (its canonical leaf bytes are recomputed).
///
/// # Errors
/// As [`verify_inclusion`].
pub fn verify_entry_inclusion(
    entry: &LedgerEntry,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    verify_inclusion(&entry.leaf_bytes(), entry.index, tree_size, proof, root).map(|_| ())
}

/// Parses a hex ed25519 public key.
pub(crate) fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, VerifyError> {
    let bytes = super::head::hex_array::decode::<32>(hex_key)
        .map_err(|_| VerifyError::BadPublicKey(hex_key.to_owned()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| VerifyError::BadPublicKey(hex_key.to_owned()))
}

/// Checks that heads are in strictly increasing size and non-decreasing time order.
pub(crate) fn check_head_order(heads: &[SignedTreeHead]) -> Result<(), VerifyError> {
    for pair in heads.windows(2) {
        if pair[1].size <= pair[0].size || pair[1].time_ms < pair[0].time_ms {
            return Err(VerifyError::HeadOrder { size: pair[1].size });
        }
    }
    Ok(())
}

/// One pass over a whole log, entry by entry from index 0: recomputes the tree from the entries'
/// own bytes and checks every head's root and signature when the pass reaches its size, so the
/// first error is always about the earliest bad entry or head.
#[derive(Debug)]
pub(crate) struct FullCheck<'a> {
    key: VerifyingKey,
    heads: &'a [SignedTreeHead],
    next_head: usize,
    frontier: Frontier,
    last_time_ms: u64,
    covered: u64,
}

impl<'a> FullCheck<'a> {
    /// Starts a pass against `heads` (in store order) signed by `key`.
    pub(crate) fn new(key: VerifyingKey, heads: &'a [SignedTreeHead]) -> Result<Self, VerifyError> {
        check_head_order(heads)?;
        let mut check = Self {
            key,
            heads,
            next_head: 0,
            frontier: Frontier::new(),
            last_time_ms: 0,
            covered: 0,
        };
        // A head of size 0 (never written by the ledger, but well defined) commits to nothing.
        check.check_heads_at_size()?;
        Ok(check)
    }

    /// Takes the entry at `position`, whose leaf bytes hash to `leaf`; `claimed` is the leaf hash
    /// stored or exported with it, if any.
    pub(crate) fn entry(
        &mut self,
        position: u64,
        entry: &LedgerEntry,
        leaf: Hash,
        claimed: Option<&Hash>,
    ) -> Result<(), VerifyError> {
        debug_assert_eq!(position, self.frontier.size());
        if entry.index != position {
            return Err(VerifyError::EntryOutOfPlace {
                index: position,
                claimed: entry.index,
            });
        }
        if claimed.is_some_and(|c| *c != leaf) {
            return Err(VerifyError::EntryMismatch { index: position });
        }
        if entry.time_ms < self.last_time_ms {
            return Err(VerifyError::TimeOrder { index: position });
        }
        self.last_time_ms = entry.time_ms;
        self.frontier.push(leaf);
        self.check_heads_at_size()
    }

    fn check_heads_at_size(&mut self) -> Result<(), VerifyError> {
        let size = self.frontier.size();
        while let Some(head) = self.heads.get(self.next_head) {
            if head.size != size {
                break;
            }
            head.verify(&self.key)
                .map_err(|_| VerifyError::BadSignature { size })?;
            let root = if size == 0 {
                empty_root()
            } else {
                self.frontier.root()
            };
            if head.root != root {
                return Err(VerifyError::HeadMismatch {
                    size,
                    first_suspect: self.covered,
                });
            }
            self.covered = size;
            self.next_head += 1;
        }
        Ok(())
    }

    /// Ends the pass: every head must have been reached, and the latest must cover every entry.
    pub(crate) fn finish(self) -> Result<VerifyReport, VerifyError> {
        let len = self.frontier.size();
        if let Some(head) = self.heads.get(self.next_head) {
            return Err(VerifyError::HeadBeyondLog {
                size: head.size,
                len,
            });
        }
        if self.covered != len {
            return Err(VerifyError::UnsignedEntries {
                signed: self.covered,
                len,
            });
        }
        Ok(VerifyReport {
            public_key: self.key.to_bytes(),
            entries: 0..len,
            heads: self.heads.len(),
            latest: self.heads.last().copied(),
        })
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::super::entry::tests::sample;
    use super::super::log::tests::{db, filled, key};
    use super::super::tree::MerkleTree;
    use super::*;

    /// A log of `n` entries with a head after every `batch` entries, built in memory.
    fn log(n: u64, batch: u64) -> (SigningKey, Vec<LedgerEntry>, Vec<SignedTreeHead>) {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut tree = MerkleTree::default();
        let mut entries = Vec::new();
        let mut heads = Vec::new();
        for i in 0..n {
            let e = sample(i).into_entry(i, 1_000 + i / batch);
            tree.push(e.leaf_hash());
            entries.push(e);
            if (i + 1) % batch == 0 || i + 1 == n {
                heads.push(SignedTreeHead::sign(
                    i + 1,
                    tree.root(),
                    1_000 + i / batch,
                    &key,
                ));
            }
        }
        (key, entries, heads)
    }

    fn run(
        key: &SigningKey,
        entries: &[LedgerEntry],
        heads: &[SignedTreeHead],
    ) -> Result<VerifyReport, VerifyError> {
        let mut check = FullCheck::new(key.verifying_key(), heads)?;
        for (i, e) in entries.iter().enumerate() {
            check.entry(i as u64, e, e.leaf_hash(), None)?;
        }
        check.finish()
    }

    #[test]
    fn full_check_accepts_a_good_log() {
        let (key, entries, heads) = log(57, 10);
        let report = run(&key, &entries, &heads).unwrap();
        assert_eq!(report.entries, 0..57);
        assert_eq!(report.heads, 6);
        assert_eq!(report.latest.unwrap().size, 57);
        assert_eq!(report.public_key, key.verifying_key().to_bytes());
        let empty = run(&key, &[], &[]).unwrap();
        assert_eq!(empty.entries, 0..0);
    }

    #[test]
    fn full_check_names_the_changed_entry_and_head() {
        let (key, entries, heads) = log(57, 10);
        let mut changed = entries.clone();
        changed[23].amount_minor += 1;
        match run(&key, &changed, &heads) {
            Err(VerifyError::HeadMismatch {
                size: 30,
                first_suspect: 20,
            }) => {}
            other => panic!("{other:?}"),
        }
        // With the original leaf hashes at hand the entry itself is named.
        let mut check = FullCheck::new(key.verifying_key(), &heads).unwrap();
        let err = changed
            .iter()
            .zip(&entries)
            .enumerate()
            .try_for_each(|(i, (e, orig))| {
                check.entry(i as u64, e, e.leaf_hash(), Some(&orig.leaf_hash()))
            })
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::EntryMismatch { index: 23 }),
            "{err}"
        );

        let mut bad_heads = heads.clone();
        bad_heads[2].signature[0] ^= 1;
        assert!(matches!(
            run(&key, &entries, &bad_heads),
            Err(VerifyError::BadSignature { size: 30 })
        ));
        assert!(matches!(
            run(&key, &entries[..50], &heads),
            Err(VerifyError::HeadBeyondLog { size: 57, len: 50 })
        ));
        assert!(matches!(
            run(&key, &entries, &heads[..5]),
            Err(VerifyError::UnsignedEntries {
                signed: 50,
                len: 57
            })
        ));
        let mut swapped = heads.clone();
        swapped.swap(1, 2);
        assert!(matches!(
            run(&key, &entries, &swapped),
            Err(VerifyError::HeadOrder { .. })
        ));
        let mut moved = entries.clone();
        moved[4].index = 5;
        assert!(matches!(
            run(&key, &moved, &heads),
            Err(VerifyError::EntryOutOfPlace {
                index: 4,
                claimed: 5
            })
        ));
        let other_key = SigningKey::from_bytes(&[4; 32]);
        assert!(matches!(
            run(&other_key, &entries, &heads),
            Err(VerifyError::BadSignature { size: 10 })
        ));
    }

    #[test]
    fn standalone_inclusion_check() {
        let (_, entries, heads) = log(20, 20);
        let leaves: Vec<Hash> = entries.iter().map(LedgerEntry::leaf_hash).collect();
        let mut tree = MerkleTree::new(0);
        leaves.iter().for_each(|l| tree.push(*l));
        let head = heads[0];
        for e in &entries {
            let proof = tree
                .inclusion_proof(leaves.as_slice(), e.index, 20)
                .unwrap();
            let bytes = e.leaf_bytes();
            assert_eq!(
                verify_inclusion(&bytes, e.index, 20, &proof, &head.root).unwrap(),
                *e
            );
            verify_entry_inclusion(e, 20, &proof, &head.root).unwrap();
            let mut changed = e.clone();
            changed.memo.push('!');
            assert!(matches!(
                verify_entry_inclusion(&changed, 20, &proof, &head.root),
                Err(VerifyError::InclusionFailed { index, .. }) if index == e.index
            ));
            let wrong = (e.index + 1) % 20;
            assert!(verify_inclusion(&bytes, wrong, 20, &proof, &head.root).is_err());
        }
    }

    #[test]
    fn verify_names_the_first_changed_entry() {
        let (_dir, db) = db();
        let ledger = filled(&db, &[4, 6, 5]);
        ledger.verify().unwrap();
        let original = ledger
            .store()
            .entries
            .get(7u64.to_be_bytes())
            .unwrap()
            .unwrap();
        for pos in 0..original.len() {
            for flip in [0x01u8, 0x80] {
                let mut bytes = original.to_vec();
                bytes[pos] ^= flip;
                ledger
                    .store()
                    .entries
                    .insert(7u64.to_be_bytes(), bytes)
                    .unwrap();
                let err = ledger.verify().unwrap_err();
                let named = match err {
                    VerifyError::EntryCorrupt { index, .. }
                    | VerifyError::EntryMismatch { index }
                    | VerifyError::EntryOutOfPlace { index, .. } => index,
                    other => panic!("byte {pos}: {other}"),
                };
                assert_eq!(named, 7, "byte {pos}");
            }
        }
        ledger
            .store()
            .entries
            .insert(7u64.to_be_bytes(), original)
            .unwrap();
        ledger.verify().unwrap();
    }

    #[test]
    fn forged_entry_and_leaf_hash_fail_open_and_verify() {
        let (_dir, db) = db();
        let ledger = filled(&db, &[4, 6, 5]);
        // Rewrite entry 6 and its stored leaf hash consistently: only the heads catch it.
        let mut forged = ledger.entry(6).unwrap();
        forged.amount_minor *= 10;
        let bytes = forged.leaf_bytes();
        ledger
            .store()
            .entries
            .insert(6u64.to_be_bytes(), bytes.clone())
            .unwrap();
        ledger
            .store()
            .leaves
            .insert(6u64.to_be_bytes(), &leaf_hash(&bytes)[..])
            .unwrap();
        assert!(matches!(
            ledger.verify(),
            Err(VerifyError::HeadMismatch {
                size: 10,
                first_suspect: 4
            })
        ));
        drop(ledger);
        assert!(matches!(
            Ledger::open(&db, key()),
            Err(LedgerError::Inconsistent(VerifyError::HeadMismatch {
                size: 10,
                first_suspect: 4
            }))
        ));
    }
}
