//! [`Ledger`]: the append-only log of money movements in sled, with a signed tree head per batch.
//!
//! The store layout is in [`store`](super::store).

use std::ops::Range;

use ed25519_dalek::SigningKey;
use mhc_clock::Clock;

use super::entry::{LedgerEntry, NewEntry};
use super::error::{LedgerError, VerifyError};
use super::head::SignedTreeHead;
use super::merkle::{leaf_hash, Hash};
use super::store::{
    decode_entry, decode_hash, decode_head, decode_key, next_index, read_heads, Store, StoredLeaves,
};
use super::tree::MerkleTree;

/// A verifiable append-only ledger of credits and payouts: every batch of entries is committed
/// to an RFC 9162 Merkle tree (BLAKE3) and a signed tree head, atomically and durably.
///
/// Appends take `&mut self`: the log has one writer. Share it behind a mutex.
pub struct Ledger {
    db: sled::Db,
    store: Store,
    key: SigningKey,
    tree: MerkleTree,
    latest: Option<SignedTreeHead>,
    clock: Clock,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the signing key.
        f.debug_struct("Ledger")
            .field("public_key", &hex::encode(self.public_key()))
            .field("len", &self.len())
            .field("latest", &self.latest.map(|h| h.size))
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `db`'s `ledger/*` trees, signing new heads with
    /// `signing_key`.
    ///
    /// Opening rebuilds the Merkle tree from the stored leaf hashes and checks it against every
    /// stored head's root, that the latest head covers exactly the stored entries, and the latest
    /// head's signature. It repairs nothing: a mismatch is an error for an operator to look at.
    /// (The full check that rehashes every entry is [`verify`](Self::verify).)
    ///
    /// # Errors
    /// [`LedgerError::KeyMismatch`] when the store was created with another key,
    /// [`LedgerError::Inconsistent`] when the store disagrees with its heads,
    /// [`LedgerError::Corrupt`] for damaged records, [`LedgerError::Db`] when sled fails.
    pub fn open(db: &sled::Db, signing_key: SigningKey) -> Result<Self, LedgerError> {
        let store = Store::open(db)?;
        let public = signing_key.verifying_key();
        let stored_key = store.public_key()?;
        if let Some(stored) = &stored_key {
            if stored.as_ref() != public.as_bytes() {
                return Err(LedgerError::KeyMismatch {
                    stored: hex::encode(stored),
                    given: hex::encode(public.as_bytes()),
                });
            }
        }
        let all_heads = read_heads(&store.heads)?;
        let len = next_index(&store.entries)?;
        let leaf_len = next_index(&store.leaves)?;
        if len != leaf_len {
            return Err(LedgerError::Inconsistent(VerifyError::CountMismatch {
                entries: len,
                leaves: leaf_len,
            }));
        }
        if len > 0 && stored_key.is_none() {
            return Err(LedgerError::Corrupt(
                "entries present but no public key recorded".into(),
            ));
        }
        if let Some((first, _)) = store.entries.first()? {
            if decode_key(&first)? != 0 {
                return Err(LedgerError::Inconsistent(VerifyError::MissingEntry {
                    index: 0,
                }));
            }
        }

        let mut tree = MerkleTree::default();
        let mut pending = all_heads.iter().peekable();
        let mut covered = 0;
        for (position, item) in store.leaves.iter().enumerate() {
            let (k, v) = item?;
            let position = position as u64;
            if decode_key(&k)? != position {
                return Err(LedgerError::Inconsistent(VerifyError::MissingEntry {
                    index: position,
                }));
            }
            tree.push(decode_hash(&v, position)?);
            while let Some(head) = pending.next_if(|h| h.size == tree.len()) {
                if head.root != tree.root() {
                    return Err(LedgerError::Inconsistent(VerifyError::HeadMismatch {
                        size: head.size,
                        first_suspect: covered,
                    }));
                }
                covered = head.size;
            }
        }
        if let Some(head) = pending.next() {
            return Err(LedgerError::Inconsistent(VerifyError::HeadBeyondLog {
                size: head.size,
                len,
            }));
        }
        if covered != len {
            return Err(LedgerError::Inconsistent(VerifyError::UnsignedEntries {
                signed: covered,
                len,
            }));
        }
        let latest = all_heads.last().copied();
        if let Some(head) = latest {
            if head.verify(&public).is_err() {
                return Err(LedgerError::Inconsistent(VerifyError::BadSignature {
                    size: head.size,
                }));
            }
        }
        Ok(Self {
            db: db.clone(),
            store,
            key: signing_key,
            tree,
            latest,
            clock: Clock::system(),
        })
    }

    /// The ledger dating appended batches by `clock` instead of the system clock (tests,
    /// replays): `Ledger::open(&db, key)?.with_clock(clock)`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The ed25519 public key every head is signed with.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// How many entries the log holds.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The latest signed tree head; `None` for an empty log.
    pub fn latest_head(&self) -> Option<SignedTreeHead> {
        self.latest
    }

    /// Appends a batch, stamped with the clock's time (or the latest head's time if the clock has
    /// gone backwards, so that times never decrease), and returns the head that signs it.
    ///
    /// The entries, their leaf hashes, the head and (first time) the public key are written in
    /// one sled transaction and made durable with one flush: after a crash the store holds the
    /// whole batch or none of it.
    ///
    /// # Errors
    /// [`LedgerError::EmptyBatch`], [`LedgerError::InvalidEntry`] (nothing written), or
    /// [`LedgerError::Db`]. A `Db` error from the final flush means the batch is committed in
    /// memory and visible, but may not survive a crash.
    pub fn append_batch(&mut self, entries: Vec<NewEntry>) -> Result<SignedTreeHead, LedgerError> {
        let now = self
            .clock
            .now_ms()
            .max(self.latest.map_or(0, |h| h.time_ms));
        self.append_batch_at(entries, now)
    }

    /// [`append_batch`](Self::append_batch) at an explicit time (imports, tests).
    ///
    /// # Errors
    /// As [`append_batch`](Self::append_batch), plus [`LedgerError::TimeWentBackwards`] when
    /// `time_ms` is before the latest head's time.
    pub fn append_batch_at(
        &mut self,
        entries: Vec<NewEntry>,
        time_ms: u64,
    ) -> Result<SignedTreeHead, LedgerError> {
        if entries.is_empty() {
            return Err(LedgerError::EmptyBatch);
        }
        if let Some(latest) = self.latest {
            if time_ms < latest.time_ms {
                return Err(LedgerError::TimeWentBackwards {
                    time_ms,
                    latest_ms: latest.time_ms,
                });
            }
        }
        for (position, entry) in entries.iter().enumerate() {
            entry
                .validate()
                .map_err(|source| LedgerError::InvalidEntry { position, source })?;
        }

        let start = self.len();
        // The tentative root comes from a copy of the frontier (O(log n)); the tree itself only
        // moves once the batch is committed.
        let mut frontier = self.tree.frontier().clone();
        let mut entry_writes = sled::Batch::default();
        let mut leaf_writes = sled::Batch::default();
        let mut new_leaves = Vec::with_capacity(entries.len());
        for (offset, entry) in entries.into_iter().enumerate() {
            let index = start + offset as u64;
            let bytes = entry.into_entry(index, time_ms).leaf_bytes();
            let leaf = leaf_hash(&bytes);
            frontier.push(leaf);
            entry_writes.insert(&index.to_be_bytes()[..], bytes);
            leaf_writes.insert(&index.to_be_bytes()[..], &leaf[..]);
            new_leaves.push(leaf);
        }
        let size = frontier.size();
        let head = SignedTreeHead::sign(size, frontier.root(), time_ms, &self.key);
        let public = self.public_key();

        let first_batch = start == 0;
        self.store.commit(
            &entry_writes,
            &leaf_writes,
            &head,
            first_batch.then_some(&public),
        )?;
        // Committed: sled serves the batch from now on, so memory follows before the flush.
        for leaf in new_leaves {
            self.tree.push(leaf);
        }
        self.latest = Some(head);
        self.db.flush()?;
        Ok(head)
    }

    /// The entry at `index`.
    ///
    /// # Errors
    /// [`LedgerError::IndexOutOfRange`], [`LedgerError::Corrupt`] when its bytes do not decode,
    /// [`LedgerError::Db`].
    pub fn entry(&self, index: u64) -> Result<LedgerEntry, LedgerError> {
        let bytes = self.leaf_bytes(index)?;
        decode_entry(&bytes, index)
    }

    /// The stored leaf bytes of the entry at `index`: what [`verify_inclusion`](super::verify_inclusion)
    /// takes.
    ///
    /// # Errors
    /// [`LedgerError::IndexOutOfRange`], [`LedgerError::Db`].
    pub fn leaf_bytes(&self, index: u64) -> Result<Vec<u8>, LedgerError> {
        if index >= self.len() {
            return Err(LedgerError::IndexOutOfRange {
                index,
                len: self.len(),
            });
        }
        let bytes = self
            .store
            .entries
            .get(index.to_be_bytes())?
            .ok_or_else(|| {
                LedgerError::Corrupt(format!("entry {index} is missing from the store"))
            })?;
        Ok(bytes.to_vec())
    }

    /// The entries in `range` (clamped to the log), in order.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] for an entry that does not decode, [`LedgerError::Db`].
    pub fn entries(&self, range: Range<u64>) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut out = Vec::new();
        self.for_each_stored(range, |entry, _| {
            out.push(entry);
            Ok(())
        })?;
        Ok(out)
    }

    /// The index range of the entries recorded in `from_ms..to_ms` (Unix milliseconds, end
    /// excluded). Times never decrease along the log, so this is a binary search.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] or [`LedgerError::Db`] when an entry cannot be read.
    pub fn index_range_for_time(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Range<u64>, LedgerError> {
        let start = self.first_at_or_after(from_ms, 0)?;
        let end = self.first_at_or_after(to_ms.max(from_ms), start)?;
        Ok(start..end)
    }

    /// The entries recorded in `from_ms..to_ms` (Unix milliseconds, end excluded).
    ///
    /// # Errors
    /// As [`index_range_for_time`](Self::index_range_for_time).
    pub fn entries_in_time_range(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let range = self.index_range_for_time(from_ms, to_ms)?;
        self.entries(range)
    }

    /// Every signed tree head, oldest first.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] for a damaged head record, [`LedgerError::Db`].
    pub fn heads(&self) -> Result<Vec<SignedTreeHead>, LedgerError> {
        read_heads(&self.store.heads)
    }

    /// The signed head of exactly `size` entries, if a batch ended there.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] for a damaged head record, [`LedgerError::Db`].
    pub fn head(&self, size: u64) -> Result<Option<SignedTreeHead>, LedgerError> {
        match self.store.heads.get(size.to_be_bytes())? {
            Some(bytes) => decode_head(&bytes, size).map(Some),
            None => Ok(None),
        }
    }

    /// The Merkle root of the first `tree_size` entries.
    ///
    /// # Errors
    /// [`LedgerError::Proof`] when `tree_size > len()`, [`LedgerError::Db`].
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, LedgerError> {
        self.tree
            .root_at(&StoredLeaves(&self.store.leaves), tree_size)
    }

    /// The inclusion proof of entry `index` in the tree of `tree_size` entries (normally a signed
    /// head's size), for [`verify_inclusion`](super::verify_inclusion).
    ///
    /// # Errors
    /// [`LedgerError::Proof`] for an index or size outside the log, [`LedgerError::Db`] or
    /// [`LedgerError::Corrupt`] when a leaf hash cannot be read.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, LedgerError> {
        self.tree
            .inclusion_proof(&StoredLeaves(&self.store.leaves), index, tree_size)
    }

    /// The consistency proof from the tree of `old_size` entries to the tree of `new_size`, for
    /// [`verify_consistency`](super::verify_consistency).
    ///
    /// # Errors
    /// [`LedgerError::Proof`] for sizes outside the log or `old_size > new_size`,
    /// [`LedgerError::Db`] or [`LedgerError::Corrupt`] when a leaf hash cannot be read.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, LedgerError> {
        self.tree
            .consistency_proof(&StoredLeaves(&self.store.leaves), old_size, new_size)
    }

    /// The store's trees, for the `impl Ledger` blocks of sibling modules.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The key heads are checked against.
    pub(crate) fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Calls `f` with every entry in `range` (clamped to the log) and its stored leaf hash, in
    /// order, streaming from the store.
    pub(crate) fn for_each_stored(
        &self,
        range: Range<u64>,
        mut f: impl FnMut(LedgerEntry, Hash) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        let keys = start.to_be_bytes()..end.to_be_bytes();
        let mut leaves = self.store.leaves.range(keys.clone());
        let mut expected = start;
        for item in self.store.entries.range(keys) {
            let (k, bytes) = item?;
            if decode_key(&k)? != expected {
                return Err(LedgerError::Corrupt(format!("entry {expected} is missing")));
            }
            let entry = decode_entry(&bytes, expected)?;
            let leaf = match leaves.next() {
                Some(item) => decode_hash(&item?.1, expected)?,
                None => {
                    return Err(LedgerError::Corrupt(format!(
                        "leaf hash {expected} is missing"
                    )))
                }
            };
            f(entry, leaf)?;
            expected += 1;
        }
        if expected != end {
            return Err(LedgerError::Corrupt(format!("entry {expected} is missing")));
        }
        Ok(())
    }

    /// The first index at or after `lower` whose time is at least `time_ms`.
    fn first_at_or_after(&self, time_ms: u64, lower: u64) -> Result<u64, LedgerError> {
        let (mut lo, mut hi) = (lower, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.time_ms < time_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::entry::tests::sample;
    use super::super::entry::{EntryError, EntryKind};
    use super::super::merkle::{verify_consistency, verify_inclusion};
    use super::*;

    pub(crate) const T0: u64 = 1_700_000_000_000;

    pub(crate) fn key() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    pub(crate) fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, db)
    }

    /// Opens a sled database, waiting (up to 10 s) for a previous handle to let go of its file
    /// lock: sled's background flusher releases it shortly after the last `Db` is dropped.
    pub(crate) fn open_when_unlocked(path: &std::path::Path) -> sled::Db {
        let mut tries = 0;
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(_) if tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("opening {}: {e}", path.display()),
            }
        }
    }

    /// A ledger of `sizes.len()` batches with those sizes, batch `b` stamped `T0 + 1000·b`.
    pub(crate) fn filled(db: &sled::Db, sizes: &[u64]) -> Ledger {
        let mut ledger = Ledger::open(db, key()).unwrap();
        let mut next = 0;
        for (b, &n) in sizes.iter().enumerate() {
            let batch = (next..next + n).map(sample).collect();
            ledger.append_batch_at(batch, T0 + 1000 * b as u64).unwrap();
            next += n;
        }
        ledger
    }

    #[test]
    fn append_read_back_and_reopen() {
        let (_dir, db) = db();
        let ledger = filled(&db, &[3, 1, 5]);
        assert_eq!(ledger.len(), 9);
        let heads = ledger.heads().unwrap();
        assert_eq!(heads.iter().map(|h| h.size).collect::<Vec<_>>(), [3, 4, 9]);
        let latest = ledger.latest_head().unwrap();
        assert_eq!(latest, heads[2]);
        assert_eq!(latest.time_ms, T0 + 2000);
        let vk = key().verifying_key();
        for h in &heads {
            h.verify(&vk).unwrap();
            assert_eq!(ledger.root_at(h.size).unwrap(), h.root);
            assert_eq!(ledger.head(h.size).unwrap(), Some(*h));
        }
        assert_eq!(ledger.head(5).unwrap(), None);
        let e = ledger.entry(4).unwrap();
        assert_eq!((e.index, e.time_ms), (4, T0 + 2000));
        assert_eq!(e, sample(4).into_entry(4, T0 + 2000));
        assert!(matches!(
            ledger.entry(9),
            Err(LedgerError::IndexOutOfRange { index: 9, len: 9 })
        ));
        assert_eq!(ledger.entries(2..100).unwrap().len(), 7);
        drop(ledger);

        let names: Vec<_> = db.tree_names().into_iter().map(|n| n.to_vec()).collect();
        for name in [
            super::super::ENTRIES_TREE,
            super::super::LEAVES_TREE,
            super::super::HEADS_TREE,
            super::super::META_TREE,
        ] {
            assert!(names.contains(&name.as_bytes().to_vec()), "{name}");
        }
        let mut reopened = Ledger::open(&db, key()).unwrap();
        assert_eq!(reopened.len(), 9);
        assert_eq!(reopened.latest_head(), Some(latest));
        let head = reopened.append_batch(vec![sample(9)]).unwrap();
        assert_eq!(head.size, 10);
        assert!(head.time_ms >= latest.time_ms);
        reopened.verify().unwrap();
    }

    #[test]
    fn survives_reopening_the_database_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let latest = {
            let db = sled::open(dir.path()).unwrap();
            filled(&db, &[10, 20]).latest_head()
        };
        let db = open_when_unlocked(dir.path());
        let ledger = Ledger::open(&db, key()).unwrap();
        assert_eq!(ledger.latest_head(), latest);
        assert_eq!(ledger.verify().unwrap().entries, 0..30);
    }

    #[test]
    fn refused_batches_write_nothing() {
        let (_dir, db) = db();
        let mut ledger = filled(&db, &[2]);
        assert!(matches!(
            ledger.append_batch(Vec::new()),
            Err(LedgerError::EmptyBatch)
        ));
        let bad = vec![
            sample(2),
            NewEntry {
                currency: "euro".into(),
                ..sample(3)
            },
        ];
        match ledger.append_batch(bad) {
            Err(LedgerError::InvalidEntry {
                position: 1,
                source: EntryError::BadCurrency(_),
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ledger.append_batch_at(vec![sample(2)], T0 - 1),
            Err(LedgerError::TimeWentBackwards { .. })
        ));
        assert_eq!(ledger.len(), 2);
        assert_eq!(ledger.heads().unwrap().len(), 1);
        assert_eq!(ledger.store.entries.len(), 2);
        assert_eq!(ledger.store.leaves.len(), 2);
        // Same time as the latest head is fine.
        ledger.append_batch_at(vec![sample(2)], T0).unwrap();
    }

    #[test]
    fn other_key_is_refused() {
        let (_dir, db) = db();
        drop(filled(&db, &[1]));
        let other = SigningKey::from_bytes(&[43; 32]);
        assert!(matches!(
            Ledger::open(&db, other),
            Err(LedgerError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn proofs_verify_against_every_head() {
        let (_dir, db) = db();
        let sizes = [1, 2, 5, 8, 13, 21, 34, 1, 1, 64, 100];
        let ledger = filled(&db, &sizes);
        let heads = ledger.heads().unwrap();
        let leaves: Vec<Hash> = (0..ledger.len())
            .map(|i| leaf_hash(&ledger.leaf_bytes(i).unwrap()))
            .collect();
        for h in &heads {
            for i in 0..h.size {
                let proof = ledger.inclusion_proof(i, h.size).unwrap();
                verify_inclusion(&leaves[i as usize], i, h.size, &proof, &h.root).unwrap();
            }
            for old in &heads {
                if old.size > h.size {
                    continue;
                }
                let proof = ledger.consistency_proof(old.size, h.size).unwrap();
                verify_consistency(old.size, h.size, &old.root, &h.root, &proof).unwrap();
            }
        }
        assert!(matches!(
            ledger.inclusion_proof(0, ledger.len() + 1),
            Err(LedgerError::Proof(_))
        ));
        assert!(matches!(
            ledger.consistency_proof(5, 4),
            Err(LedgerError::Proof(_))
        ));
    }

    #[test]
    fn time_range_is_a_contiguous_index_range() {
        let (_dir, db) = db();
        // Batches at T0, T0+1000, T0+2000, T0+3000.
        let ledger = filled(&db, &[2, 3, 4, 1]);
        assert_eq!(ledger.index_range_for_time(0, u64::MAX).unwrap(), 0..10);
        assert_eq!(
            ledger.index_range_for_time(T0 + 1, T0 + 2001).unwrap(),
            2..9
        );
        assert_eq!(
            ledger.index_range_for_time(T0 + 1000, T0 + 2000).unwrap(),
            2..5
        );
        assert_eq!(
            ledger.index_range_for_time(T0 + 5000, T0 + 9000).unwrap(),
            10..10
        );
        assert_eq!(ledger.index_range_for_time(T0 + 2000, T0).unwrap(), 5..5);
        let found = ledger.entries_in_time_range(T0 + 3000, T0 + 3001).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].index, 9);
        let empty = Ledger::open(&sled::Config::new().temporary(true).open().unwrap(), key());
        assert!(empty
            .unwrap()
            .entries_in_time_range(0, u64::MAX)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn open_reports_inconsistent_stores() {
        // A missing head: entries beyond the latest head.
        let (_dir, db) = db();
        let ledger = filled(&db, &[4, 6]);
        ledger.store.heads.remove(10u64.to_be_bytes()).unwrap();
        drop(ledger);
        assert!(matches!(
            Ledger::open(&db, key()),
            Err(LedgerError::Inconsistent(VerifyError::UnsignedEntries {
                signed: 4,
                len: 10
            }))
        ));

        // A missing entry.
        let (_dir, db) = super::tests::db();
        let ledger = filled(&db, &[4, 6]);
        ledger.store.entries.remove(9u64.to_be_bytes()).unwrap();
        drop(ledger);
        assert!(matches!(
            Ledger::open(&db, key()),
            Err(LedgerError::Inconsistent(VerifyError::CountMismatch { .. }))
        ));

        // A forged latest signature.
        let (_dir, db) = super::tests::db();
        let ledger = filled(&db, &[4, 6]);
        let mut head = ledger.latest_head().unwrap();
        head.signature[3] ^= 1;
        ledger
            .store
            .heads
            .insert(10u64.to_be_bytes(), &head.to_stored()[..])
            .unwrap();
        assert!(matches!(
            ledger.verify(),
            Err(VerifyError::BadSignature { size: 10 })
        ));
        drop(ledger);
        assert!(matches!(
            Ledger::open(&db, key()),
            Err(LedgerError::Inconsistent(VerifyError::BadSignature {
                size: 10
            }))
        ));
    }

    #[test]
    fn a_thousand_batches_stay_consistent() {
        let (_dir, db) = db();
        let mut ledger = Ledger::open(&db, key()).unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = 0;
        for b in 0..1_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let n = 1 + rng % 7;
            let batch = (next..next + n).map(sample).collect();
            ledger.append_batch_at(batch, T0 + b).unwrap();
            next += n;
        }
        let report = ledger.verify().unwrap();
        assert_eq!(report.entries, 0..next);
        assert_eq!(report.heads, 1_000);
        let latest = ledger.latest_head().unwrap();
        let proof = ledger.inclusion_proof(next / 2, latest.size).unwrap();
        let leaf = leaf_hash(&ledger.leaf_bytes(next / 2).unwrap());
        verify_inclusion(&leaf, next / 2, latest.size, &proof, &latest.root).unwrap();
        assert_eq!(
            ledger.entry(0).unwrap().kind,
            EntryKind::Credit,
            "sample(0) is a credit"
        );
    }
}
