//! [`LedgerError`]: why a ledger operation failed.

use super::entry::EntryError;
use super::merkle::ProofError;
use super::verify::VerifyError;

/// Why opening, appending to, reading or exporting the ledger failed. Nothing is written when an
/// append fails before its commit; see [`Ledger::append_batch`](super::Ledger::append_batch) for
/// the one case (a failed flush) that leaves a committed batch of unknown durability.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The sled database failed (I/O, corruption detected by sled). Retrying rarely helps.
    #[error("ledger store: {0}")]
    Db(#[from] sled::Error),
    /// Writing an export failed.
    #[error("writing export: {0}")]
    Io(#[from] std::io::Error),
    /// An append was asked for with no entries (a head must cover at least one new entry).
    #[error("empty batch")]
    EmptyBatch,
    /// An entry of a batch breaks an entry rule; nothing of the batch was written.
    #[error("entry {position} of the batch: {source}")]
    InvalidEntry {
        /// Position of the entry in the batch, from 0.
        position: usize,
        /// The rule it breaks.
        #[source]
        source: EntryError,
    },
    /// An explicit batch time is earlier than the latest head's: times never decrease along the
    /// log, which is what makes a time range a contiguous index range.
    #[error("batch time {time_ms} is before the latest head's time {latest_ms}")]
    TimeWentBackwards {
        /// The refused time, Unix milliseconds.
        time_ms: u64,
        /// The latest head's time, Unix milliseconds.
        latest_ms: u64,
    },
    /// No entry has this index.
    #[error("no entry {index}: the ledger has {len} entries")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// How many entries there are.
        len: u64,
    },
    /// A proof was asked for sizes or an index the log does not have.
    #[error("proof: {0}")]
    Proof(#[from] ProofError),
    /// The store was written with another signing key. The ledger's key cannot change silently:
    /// every earlier head would stop verifying.
    #[error("ledger was created with key {stored}, opened with key {given}")]
    KeyMismatch {
        /// The public key recorded in the store, hex.
        stored: String,
        /// The public key of the key given to `open`, hex.
        given: String,
    },
    /// The store is inconsistent with its own signed heads (found when opening). Nothing is
    /// repaired automatically: an operator must look at it (run `verify`, restore a backup).
    #[error("ledger store is inconsistent: {0}")]
    Inconsistent(#[source] VerifyError),
    /// A stored record is damaged (wrong length, undecodable entry, missing leaf hash).
    #[error("ledger store is damaged: {0}")]
    Corrupt(String),
}
