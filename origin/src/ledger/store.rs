//! The ledger's sled layout: its trees, the one transaction that commits a batch, and the decoding
//! of records (every damaged record becomes [`LedgerError::Corrupt`] naming it, never a panic).
//!
//! All keys are big-endian `u64`, so sled's order is index order:
//! - `ledger/entries`: index → leaf bytes ([`LedgerEntry::leaf_bytes`]);
//! - `ledger/leaves`: index → 32-byte leaf hash (what proofs are computed from);
//! - `ledger/heads`: size → signed tree head (112 bytes), one per batch;
//! - `ledger/meta`: `public_key` → the key every head is signed with.

use sled::transaction::{TransactionError, Transactional};

use super::entry::LedgerEntry;
use super::error::LedgerError;
use super::head::SignedTreeHead;
use super::merkle::Hash;
use super::tree::LeafSource;

/// sled tree of the entries' leaf bytes, by index.
pub const ENTRIES_TREE: &str = "ledger/entries";
/// sled tree of the leaf hashes, by index.
pub const LEAVES_TREE: &str = "ledger/leaves";
/// sled tree of every signed tree head, by size.
pub const HEADS_TREE: &str = "ledger/heads";
/// sled tree of the ledger's own metadata (its public key).
pub const META_TREE: &str = "ledger/meta";
/// Key in [`META_TREE`] of the 32-byte public key the log is signed with.
const META_PUBLIC_KEY: &[u8] = b"public_key";

/// The ledger's four sled trees.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(crate) entries: sled::Tree,
    pub(crate) leaves: sled::Tree,
    pub(crate) heads: sled::Tree,
    pub(crate) meta: sled::Tree,
}

impl Store {
    /// Opens (or creates) the trees in `db`.
    pub(crate) fn open(db: &sled::Db) -> Result<Self, LedgerError> {
        Ok(Self {
            entries: db.open_tree(ENTRIES_TREE)?,
            leaves: db.open_tree(LEAVES_TREE)?,
            heads: db.open_tree(HEADS_TREE)?,
            meta: db.open_tree(META_TREE)?,
        })
    }

    /// The public key recorded by the first batch, if any.
    pub(crate) fn public_key(&self) -> Result<Option<sled::IVec>, LedgerError> {
        Ok(self.meta.get(META_PUBLIC_KEY)?)
    }

    /// Writes a batch's entries, leaf hashes and head (and, for the first batch, the public key)
    /// in one transaction across the trees: sled recovers a transaction atomically after a crash,
    /// so the store never holds entries without their head. Not durable until the caller flushes.
    pub(crate) fn commit(
        &self,
        entries: &sled::Batch,
        leaves: &sled::Batch,
        head: &SignedTreeHead,
        public_key: Option<&[u8; 32]>,
    ) -> Result<(), LedgerError> {
        let head_key = head.size.to_be_bytes();
        let head_bytes = head.to_stored();
        let trees = (&self.entries, &self.leaves, &self.heads, &self.meta);
        let committed: Result<(), TransactionError<()>> = trees.transaction(|(e, l, h, m)| {
            e.apply_batch(entries)?;
            l.apply_batch(leaves)?;
            h.insert(&head_key[..], &head_bytes[..])?;
            if let Some(key) = public_key {
                m.insert(META_PUBLIC_KEY, &key[..])?;
            }
            Ok(())
        });
        match committed {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(err)) => Err(err.into()),
            Err(TransactionError::Abort(())) => unreachable!("the batch transaction never aborts"),
        }
    }
}

/// The leaf hashes as stored in sled, for proof generation.
#[derive(Debug)]
pub(crate) struct StoredLeaves<'a>(pub(crate) &'a sled::Tree);

impl LeafSource for StoredLeaves<'_> {
    type Error = LedgerError;

    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, LedgerError> {
        let mut out = Vec::with_capacity((end - start) as usize);
        for item in self.0.range(start.to_be_bytes()..end.to_be_bytes()) {
            let (_, v) = item?;
            out.push(decode_hash(&v, start + out.len() as u64)?);
        }
        if out.len() as u64 != end - start {
            return Err(LedgerError::Corrupt(format!(
                "leaf hashes {start}..{end}: only {} stored",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// One past the last key of an index-keyed tree (0 when empty).
pub(crate) fn next_index(tree: &sled::Tree) -> Result<u64, LedgerError> {
    match tree.last()? {
        Some((k, _)) => Ok(decode_key(&k)? + 1),
        None => Ok(0),
    }
}

pub(crate) fn decode_key(k: &[u8]) -> Result<u64, LedgerError> {
    let bytes: [u8; 8] = k
        .try_into()
        .map_err(|_| LedgerError::Corrupt(format!("bad key {}", hex::encode(k))))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn decode_hash(v: &[u8], index: u64) -> Result<Hash, LedgerError> {
    v.try_into()
        .map_err(|_| LedgerError::Corrupt(format!("leaf hash {index} has {} bytes", v.len())))
}

pub(crate) fn decode_entry(bytes: &[u8], index: u64) -> Result<LedgerEntry, LedgerError> {
    let entry = LedgerEntry::from_leaf_bytes(bytes)
        .map_err(|e| LedgerError::Corrupt(format!("entry {index}: {e}")))?;
    if entry.index != index {
        return Err(LedgerError::Corrupt(format!(
            "entry {index} claims index {}",
            entry.index
        )));
    }
    Ok(entry)
}

pub(crate) fn decode_head(bytes: &[u8], size: u64) -> Result<SignedTreeHead, LedgerError> {
    match SignedTreeHead::from_stored(bytes) {
        Some(head) if head.size == size => Ok(head),
        _ => Err(LedgerError::Corrupt(format!(
            "head of size {size} is damaged"
        ))),
    }
}

/// The newest signed tree head stored in `db`, read without opening the ledger (and without
/// creating its trees): what a standby origin, whose ledger is written by replication and
/// not open, records in a backup.
///
/// # Errors
/// sled fails, or the head is damaged.
pub fn latest_stored_head(db: &sled::Db) -> Result<Option<SignedTreeHead>, LedgerError> {
    if !db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == HEADS_TREE.as_bytes())
    {
        return Ok(None);
    }
    let tree = db.open_tree(HEADS_TREE)?;
    match tree.last()? {
        None => Ok(None),
        Some((k, v)) => Ok(Some(decode_head(&v, decode_key(&k)?)?)),
    }
}

pub(crate) fn read_heads(tree: &sled::Tree) -> Result<Vec<SignedTreeHead>, LedgerError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        out.push(decode_head(&v, decode_key(&k)?)?);
    }
    Ok(out)
}
