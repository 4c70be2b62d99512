//! The ledger's errors: [`LedgerError`] (why an operation failed) and [`VerifyError`] (why a
//! ledger or an export of one failed verification, also what an inconsistent store is on open).
//! They sit below every other ledger module, so the log, its store and its verifier all name
//! them without depending on each other.

use super::entry::EntryError;
use super::merkle::ProofError;

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

/// Why a ledger (or an export of one) failed verification. Variants about entries name the
/// first bad entry's index; variants about heads name the head's size.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store could not be read.
    #[error("reading the ledger store: {0}")]
    Store(String),
    /// The export is not valid JSON of the expected shape, or its header contradicts its body.
    /// `entry` is the entry whose line the problem is on, when it is on an entry's line.
    #[error("{}malformed export: {detail}", entry.map(|i| format!("entry {i}: ")).unwrap_or_default())]
    Malformed {
        /// The entry on the offending line, if any.
        entry: Option<u64>,
        /// What the parser or the check found.
        detail: String,
    },
    /// The export's format name or version is not one this build reads.
    #[error("unsupported export format {format:?} version {version}")]
    UnsupportedFormat {
        /// The format name found.
        format: String,
        /// The version found.
        version: u32,
    },
    /// The log's public key is not the one the verifier expected.
    #[error("signed by key {found}, expected {expected}")]
    WrongKey {
        /// The expected key, hex.
        expected: String,
        /// The key found, hex.
        found: String,
    },
    /// The public key is not a valid ed25519 key.
    #[error("invalid public key {0}")]
    BadPublicKey(String),
    /// An entry is missing: the entries do not run contiguously from the first index.
    #[error("entry {index} is missing")]
    MissingEntry {
        /// The first index without an entry.
        index: u64,
    },
    /// The entry at position `index` says it is at another index.
    #[error("entry at position {index} claims index {claimed}")]
    EntryOutOfPlace {
        /// The position in the log.
        index: u64,
        /// The index written in the entry.
        claimed: u64,
    },
    /// An entry's bytes do not decode to a valid entry.
    #[error("entry {index}: {source}")]
    EntryCorrupt {
        /// The first bad entry.
        index: u64,
        /// What is wrong with it.
        #[source]
        source: EntryError,
    },
    /// An entry's recomputed leaf hash differs from the leaf hash stored (or exported) with it:
    /// the entry, or its hash, was changed.
    #[error("entry {index} does not match its leaf hash")]
    EntryMismatch {
        /// The first bad entry.
        index: u64,
    },
    /// An entry's time is earlier than the previous entry's (times never decrease in a log).
    #[error("entry {index} is older than the entry before it")]
    TimeOrder {
        /// The first entry out of order.
        index: u64,
    },
    /// The root recomputed from the entries differs from a signed head's root. Entries before
    /// `first_suspect` are proven by the previous head; the changed entry (or the changed head) is
    /// in `first_suspect..size`.
    #[error("head of size {size} does not match entries {first_suspect}..{size}")]
    HeadMismatch {
        /// The head's size.
        size: u64,
        /// The first entry not covered by an earlier, matching head.
        first_suspect: u64,
    },
    /// A head's signature does not verify with the log's key.
    #[error("head of size {size} has a bad signature")]
    BadSignature {
        /// The head's size.
        size: u64,
    },
    /// Heads are not in strictly increasing size and non-decreasing time order.
    #[error("head of size {size} is out of order")]
    HeadOrder {
        /// The first head out of order.
        size: u64,
    },
    /// A head covers more entries than there are.
    #[error("head of size {size} is beyond the {len} entries present")]
    HeadBeyondLog {
        /// The head's size.
        size: u64,
        /// How many entries there are.
        len: u64,
    },
    /// Entries exist that no signed head covers.
    #[error("entries {signed}..{len} are not covered by a signed head")]
    UnsignedEntries {
        /// Size of the latest head.
        signed: u64,
        /// How many entries there are.
        len: u64,
    },
    /// The stored leaf hashes and the entries differ in number.
    #[error("{leaves} leaf hashes stored for {entries} entries")]
    CountMismatch {
        /// Entries stored.
        entries: u64,
        /// Leaf hashes stored.
        leaves: u64,
    },
    /// An entry's inclusion proof does not lead to the head's root.
    #[error("entry {index}: inclusion proof: {source}")]
    InclusionFailed {
        /// The first entry whose proof fails.
        index: u64,
        /// How the proof failed.
        #[source]
        source: ProofError,
    },
    /// An entry of a time-range export lies outside the range it claims.
    #[error("entry {index} lies outside the exported time range")]
    OutOfRange {
        /// The entry.
        index: u64,
    },
}

impl VerifyError {
    /// The entry this error names exactly, if any: what a CLI prints as "first bad entry".
    /// (`HeadMismatch` names a range instead, through its fields.)
    pub fn entry(&self) -> Option<u64> {
        match self {
            VerifyError::Malformed { entry, .. } => *entry,
            VerifyError::MissingEntry { index }
            | VerifyError::EntryOutOfPlace { index, .. }
            | VerifyError::EntryCorrupt { index, .. }
            | VerifyError::EntryMismatch { index }
            | VerifyError::TimeOrder { index }
            | VerifyError::InclusionFailed { index, .. }
            | VerifyError::OutOfRange { index } => Some(*index),
            _ => None,
        }
    }
}
