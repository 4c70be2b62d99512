//! A verifiable append-only ledger of money movements (credits and payouts to artists).
//!
//! The shape is RFC 9162 (Certificate Transparency v2) with BLAKE3: every entry is a Merkle leaf
//! (`BLAKE3(0x00 ‖ leaf bytes)`, interior nodes `BLAKE3(0x01 ‖ left ‖ right)`), every appended
//! batch gets an ed25519-signed tree head, and anyone holding the log's public key can check that
//! an entry is in the log (inclusion proof) and that the log only ever grew (consistency proof).
//!
//! Entry point: [`Ledger`] — [`Ledger::open`] on a `sled::Db`, [`Ledger::append_batch`] (one
//! transaction and one flush per batch), proofs, [`Ledger::verify`], and the exports
//! [`Ledger::export_json`] / [`Ledger::export_csv`]. Offline checks need no store:
//! [`verify_export`], [`verify_inclusion`], [`verify_exported_entry`], [`verify_consistency`].
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use mhc_origin::ledger::{verify_inclusion, EntryKind, Ledger, NewEntry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = sled::open(dir.path())?;
//! let mut ledger = Ledger::open(&db, SigningKey::from_bytes(&[1; 32]))?;
//! let head = ledger.append_batch(vec![
//!     NewEntry::new(EntryKind::Credit, "artist-1", 1_250, "EUR", "plays"),
//!     NewEntry::new(EntryKind::Payout, "artist-1", -1_000, "EUR", "bank").with_reference("po-17"),
//! ])?;
//! let proof = ledger.inclusion_proof(1, head.size)?;
//! let entry = verify_inclusion(&ledger.leaf_bytes(1)?, 1, head.size, &proof, &head.root)?;
//! assert_eq!(entry.amount_decimal(), "-10.00");
//! ledger.verify()?;
//! # Ok(())
//! # }
//! ```

mod anchor;
mod entry;
mod error;
mod export;
mod head;
mod log;
mod merkle;
mod store;
mod tree;
mod verify;

#[cfg(test)]
mod crash_tests;
/// For the plugin tests, which reopen the same on-disk databases.
#[cfg(test)]
pub(crate) use log::tests::open_when_unlocked;

pub use anchor::{
    anchor_payload, head_digest, parse_anchor_payload, AnchorRecord, AnchorState, AnchorStore,
    ExportedAnchor, ANCHORS_TREE, ANCHOR_MAGIC, ANCHOR_PAYLOAD_LEN,
};
pub use entry::{
    currency_exponent, format_minor, is_currency_code, EntryError, EntryKind, LedgerEntry,
    NewEntry, ENTRY_FORMAT_VERSION, MAX_ACCOUNT_LEN, MAX_MEMO_LEN, MAX_REFERENCE_LEN,
    MAX_SOURCE_LEN,
};
pub use error::{LedgerError, VerifyError};
pub use export::{
    export_anchors, verify_export, verify_exported_entry, ExportAnchors, ExportScope,
    ExportedEntry, EXPORT_FORMAT, EXPORT_VERSION,
};
pub use head::{SignedTreeHead, STH_SIGNING_TAG};
pub use log::Ledger;
pub use merkle::{
    empty_root, leaf_hash, node_hash, root_of, verify_consistency,
    verify_inclusion as verify_leaf_hash_inclusion, Frontier, Hash, ProofError,
};
pub use store::{latest_stored_head, ENTRIES_TREE, HEADS_TREE, LEAVES_TREE, META_TREE};
pub use tree::{LeafSource, MerkleTree, DEFAULT_CACHE_LEVEL};
pub use verify::{verify_entry_inclusion, verify_inclusion, VerifyReport};
