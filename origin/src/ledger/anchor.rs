//! Anchors: signed tree heads written to a public chain, so that nobody — the operator included —
//! can rewrite the log without the chain showing it.
//!
//! This module holds what needs no chain: the exact transaction input ([`anchor_payload`]), the
//! durable record of every anchor transaction ([`AnchorStore`], tree [`ANCHORS_TREE`]), and the
//! anchors as a JSON export carries them ([`ExportedAnchor`]). Sending, confirming and checking
//! on a chain is `mhc-chain`'s.
//!
//! **Payload.** One transaction from the anchor account to itself whose input is exactly
//! `"MHC1" ‖ tree_size (u64 big-endian) ‖ root (32 bytes) ‖ BLAKE3(signed tree head bytes)`,
//! 76 bytes, where the signed tree head bytes are its fixed store encoding `size (u64 BE) ‖
//! root ‖ time_ms (u64 BE) ‖ ed25519 signature` (112 bytes): the digest pins the exact signed
//! head, the size and root are readable on any block explorer.
//!
//! **Records.** Every transaction sent is one [`AnchorRecord`], written (and flushed) *before* it
//! is broadcast, with its raw bytes: after a crash it is re-broadcast as is, so one anchor never
//! becomes two. A fee bump is a new record with the same nonce; the one it replaces ends
//! `replaced` (or `confirmed`, if the chain mined it after all, and then the bump is `replaced`).

use serde::{Deserialize, Serialize};

use super::head::{hex_array, SignedTreeHead};
use super::merkle::Hash;
use super::LedgerError;

/// The first bytes of every anchor's input.
pub const ANCHOR_MAGIC: &[u8; 4] = b"MHC1";

/// Length of an anchor's input: magic, size, root, head digest.
pub const ANCHOR_PAYLOAD_LEN: usize = 4 + 8 + 32 + 32;

/// The sled tree of [`AnchorRecord`]s, by id (u64 big-endian). Under `ledger/`: standbys
/// replicate it with the log, so a new primary knows what was anchored.
pub const ANCHORS_TREE: &str = "ledger/anchors";

/// BLAKE3 of a signed tree head's fixed encoding (see the module documentation).
pub fn head_digest(head: &SignedTreeHead) -> [u8; 32] {
    *blake3::hash(&head.to_stored()).as_bytes()
}

/// The input of the transaction anchoring `head`.
pub fn anchor_payload(head: &SignedTreeHead) -> [u8; ANCHOR_PAYLOAD_LEN] {
    payload_of(head.size, &head.root, &head_digest(head))
}

fn payload_of(size: u64, root: &Hash, digest: &[u8; 32]) -> [u8; ANCHOR_PAYLOAD_LEN] {
    let mut out = [0u8; ANCHOR_PAYLOAD_LEN];
    out[..4].copy_from_slice(ANCHOR_MAGIC);
    out[4..12].copy_from_slice(&size.to_be_bytes());
    out[12..44].copy_from_slice(root);
    out[44..].copy_from_slice(digest);
    out
}

/// What an anchor's input says: `(tree_size, root, head digest)`, or `None` if the bytes are
/// not exactly an anchor payload.
pub fn parse_anchor_payload(input: &[u8]) -> Option<(u64, Hash, [u8; 32])> {
    if input.len() != ANCHOR_PAYLOAD_LEN || &input[..4] != ANCHOR_MAGIC {
        return None;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&input[4..12]);
    let mut root = [0u8; 32];
    root.copy_from_slice(&input[12..44]);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&input[44..]);
    Some((u64::from_be_bytes(size), root, digest))
}

/// Where one anchor transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorState {
    /// Recorded, not signed yet (the chain could not be asked for a nonce or fees); it is
    /// re-aimed at the latest head until it is signed.
    Pending,
    /// Signed and broadcast (at least attempted): waiting to be mined and confirmed.
    Submitted,
    /// Mined, with at least `confirmations` blocks on top.
    Confirmed,
    /// Superseded: a fee bump with the same nonce was sent in its place (until one of the two
    /// is mined either may be, and the mined one ends `confirmed`), or another transaction
    /// used its nonce, or it failed on chain. It anchors nothing.
    Replaced,
}

impl AnchorState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnchorState::Pending => "pending",
            AnchorState::Submitted => "submitted",
            AnchorState::Confirmed => "confirmed",
            AnchorState::Replaced => "replaced",
        }
    }
}

/// One anchor transaction and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorRecord {
    /// Position in [`ANCHORS_TREE`], increasing.
    pub id: u64,
    /// The anchored head's size.
    pub tree_size: u64,
    /// The anchored head's root (hex in JSON).
    #[serde(with = "hex_array")]
    pub root: Hash,
    /// [`head_digest`] of the anchored head (hex in JSON).
    #[serde(with = "hex_array")]
    pub head_digest: [u8; 32],
    /// Where it stands.
    pub state: AnchorState,
    /// The chain.
    pub chain_id: u64,
    /// The anchor account, `0x…` (EIP-55).
    pub address: String,
    /// When it was recorded (Unix ms).
    pub created_ms: u64,
    /// The account nonce it uses, once signed.
    #[serde(default)]
    pub nonce: Option<u64>,
    /// Fee cap per gas it was signed with.
    #[serde(default)]
    pub max_fee_per_gas: Option<u128>,
    /// Tip per gas it was signed with.
    #[serde(default)]
    pub max_priority_fee_per_gas: Option<u128>,
    /// Its gas limit.
    #[serde(default)]
    pub gas_limit: Option<u64>,
    /// Its hash, `0x…`, once signed.
    #[serde(default)]
    pub tx_hash: Option<String>,
    /// Its signed EIP-2718 bytes, hex, for re-broadcasts.
    #[serde(default)]
    pub raw_tx: Option<String>,
    /// When it was (first) broadcast.
    #[serde(default)]
    pub submitted_ms: Option<u64>,
    /// The block it was mined in.
    #[serde(default)]
    pub block: Option<u64>,
    /// That block's hash, `0x…`.
    #[serde(default)]
    pub block_hash: Option<String>,
    /// Gas it used.
    #[serde(default)]
    pub gas_used: Option<u64>,
    /// When it was seen confirmed.
    #[serde(default)]
    pub confirmed_ms: Option<u64>,
}

impl AnchorRecord {
    /// A record for `head`, not signed yet.
    pub fn pending(
        id: u64,
        head: &SignedTreeHead,
        chain_id: u64,
        address: String,
        now_ms: u64,
    ) -> Self {
        Self {
            id,
            tree_size: head.size,
            root: head.root,
            head_digest: head_digest(head),
            state: AnchorState::Pending,
            chain_id,
            address,
            created_ms: now_ms,
            nonce: None,
            max_fee_per_gas: None,
            max_priority_fee_per_gas: None,
            gas_limit: None,
            tx_hash: None,
            raw_tx: None,
            submitted_ms: None,
            block: None,
            block_hash: None,
            gas_used: None,
            confirmed_ms: None,
        }
    }

    /// Re-aims a pending record at `head`.
    pub fn aim_at(&mut self, head: &SignedTreeHead) {
        self.tree_size = head.size;
        self.root = head.root;
        self.head_digest = head_digest(head);
    }

    /// The transaction input this record carries.
    pub fn payload(&self) -> [u8; ANCHOR_PAYLOAD_LEN] {
        payload_of(self.tree_size, &self.root, &self.head_digest)
    }

    /// The short listing form: `{tree_size, root, state, tx_hash, block}`.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "tree_size": self.tree_size,
            "root": hex::encode(self.root),
            "state": self.state.as_str(),
            "tx_hash": self.tx_hash,
            "block": self.block,
        })
    }
}

/// The durable anchor records of one origin.
#[derive(Debug, Clone)]
pub struct AnchorStore {
    tree: sled::Tree,
}

impl AnchorStore {
    /// Opens (creating) [`ANCHORS_TREE`] in `db`.
    ///
    /// # Errors
    /// [`LedgerError::Db`].
    pub fn open(db: &sled::Db) -> Result<Self, LedgerError> {
        Ok(Self {
            tree: db.open_tree(ANCHORS_TREE)?,
        })
    }

    /// Every record, oldest first.
    ///
    /// # Errors
    /// [`LedgerError::Db`]; [`LedgerError::Corrupt`] for a record that does not decode.
    pub fn all(&self) -> Result<Vec<AnchorRecord>, LedgerError> {
        self.tree
            .iter()
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v)
                    .map_err(|e| LedgerError::Corrupt(format!("anchor record: {e}")))
            })
            .collect()
    }

    /// The records from id `first` on, oldest first.
    ///
    /// # Errors
    /// As [`all`](Self::all).
    pub fn from_id(&self, first: u64) -> Result<Vec<AnchorRecord>, LedgerError> {
        self.tree
            .range(first.to_be_bytes()..)
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v)
                    .map_err(|e| LedgerError::Corrupt(format!("anchor record: {e}")))
            })
            .collect()
    }

    /// The id the next new record gets.
    ///
    /// # Errors
    /// [`LedgerError::Db`].
    pub fn next_id(&self) -> Result<u64, LedgerError> {
        Ok(match self.tree.last()? {
            Some((k, _)) => super::store::decode_key(&k)? + 1,
            None => 0,
        })
    }

    /// Writes `records` in one batch and flushes: when this returns, they survive a crash.
    ///
    /// # Errors
    /// [`LedgerError::Db`].
    pub fn put(&self, records: &[&AnchorRecord]) -> Result<(), LedgerError> {
        let mut batch = sled::Batch::default();
        for r in records {
            let bytes = serde_json::to_vec(r)
                .map_err(|e| LedgerError::Corrupt(format!("encoding an anchor record: {e}")))?;
            batch.insert(&r.id.to_be_bytes(), bytes);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(())
    }
}

/// A confirmed anchor as a JSON export carries it, with what a verifier needs offline: where to
/// look on the chain, and a consistency proof from the anchored head to the export's tree size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedAnchor {
    /// The anchored head's size.
    pub tree_size: u64,
    /// The anchored head's root (hex).
    #[serde(with = "hex_array")]
    pub root: Hash,
    /// [`head_digest`] of the anchored head (hex).
    #[serde(with = "hex_array")]
    pub head_digest: [u8; 32],
    /// The chain.
    pub chain_id: u64,
    /// The anchor account, `0x…`.
    pub address: String,
    /// The transaction, `0x…`.
    pub tx_hash: String,
    /// The block it was mined in.
    pub block: u64,
    /// Consistency proof from `tree_size` to the export's `tree_size` (hex hashes).
    pub consistency: Vec<String>,
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    #[test]
    fn payload_is_magic_size_root_digest() {
        let head = SignedTreeHead::sign(0x0102, [7; 32], 99, &SigningKey::from_bytes(&[1; 32]));
        let p = anchor_payload(&head);
        assert_eq!(&p[..4], b"MHC1");
        assert_eq!(&p[4..12], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&p[12..44], &[7; 32]);
        assert_eq!(&p[44..], blake3::hash(&head.to_stored()).as_bytes());
        assert_eq!(
            parse_anchor_payload(&p),
            Some((0x0102, [7; 32], head_digest(&head)))
        );
        assert_eq!(parse_anchor_payload(&p[..75]), None);
        let mut bad = p;
        bad[0] = b'X';
        assert_eq!(parse_anchor_payload(&bad), None);
    }

    #[test]
    fn records_survive_and_ids_grow() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = AnchorStore::open(&db).unwrap();
        assert_eq!(store.next_id().unwrap(), 0);
        let head = SignedTreeHead::sign(3, [2; 32], 5, &SigningKey::from_bytes(&[1; 32]));
        let mut r = AnchorRecord::pending(0, &head, 31337, "0xabc".into(), 10);
        store.put(&[&r]).unwrap();
        r.state = AnchorState::Submitted;
        r.tx_hash = Some("0x01".into());
        let r1 = AnchorRecord::pending(1, &head, 31337, "0xabc".into(), 11);
        store.put(&[&r, &r1]).unwrap();
        assert_eq!(store.all().unwrap(), vec![r.clone(), r1]);
        assert_eq!(store.next_id().unwrap(), 2);
        let s = r.summary();
        assert_eq!(s["state"], "submitted");
        assert_eq!(s["root"], hex::encode([2u8; 32]));
    }
}
