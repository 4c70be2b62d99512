//! Checking anchors against the chain, by the origin ([`verify_records`]) or by anyone holding a
//! JSON export ([`verify_export_anchors`]).
//!
//! The chain is the authority: what an anchor says is read from the transaction's input on the
//! chain, never from the record or the export that names the transaction. For every anchor:
//! the transaction exists, is in a block of the canonical chain with at least `confirmations`
//! blocks, succeeded, was sent by the anchor address to itself, and its input is an `MHC1`
//! payload of the expected size; then the log (or the export) must hold that exact head — the
//! same root and signed-head digest at that size — and be consistent with it (a consistency
//! proof from the anchored root to the current one).

use alloy::primitives::{Address, B256};
use mhc_origin::ledger::{
    export_anchors, head_digest, parse_anchor_payload, verify_consistency, AnchorRecord,
    AnchorState, Hash, SignedTreeHead,
};
use mhc_origin::plugin::LedgerPlugin;
use serde::Serialize;

use crate::evm::{parse_address, Rpc};

/// The verdict on one anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorCheck {
    /// The anchored tree size (as the record or export says).
    pub tree_size: u64,
    /// The transaction.
    pub tx_hash: String,
    /// The block it is in, as the chain says.
    pub block: Option<u64>,
    /// `None` if it holds; else what fails.
    pub problem: Option<String>,
}

impl AnchorCheck {
    /// "anchor of tree size N (tx 0x…): problem", for messages.
    pub fn describe(&self) -> String {
        format!(
            "anchor of tree size {} (tx {}): {}",
            self.tree_size,
            self.tx_hash,
            self.problem.as_deref().unwrap_or("ok")
        )
    }
}

/// What the chain holds for one anchor transaction.
struct OnChain {
    block: u64,
    size: u64,
    root: Hash,
    digest: [u8; 32],
}

/// Reads and checks the transaction `tx_hash` on the chain (see the module documentation).
async fn on_chain(
    rpc: &Rpc,
    tx_hash: &str,
    address: Address,
    confirmations: u64,
) -> Result<OnChain, (Option<u64>, String)> {
    let hash: B256 = tx_hash
        .parse()
        .map_err(|_| (None, format!("{tx_hash:?} is not a transaction hash")))?;
    let rpc_err = |e: crate::evm::ChainError| (None, format!("asking the chain: {e}"));
    let tx = rpc
        .transaction(hash)
        .await
        .map_err(rpc_err)?
        .ok_or((None, "the chain has no such transaction".to_string()))?;
    let Some((block, block_hash)) = tx.block else {
        return Err((None, "the transaction is not mined".into()));
    };
    let at = Some(block);
    if rpc.block_hash(block).await.map_err(rpc_err)? != Some(block_hash) {
        return Err((at, format!("block {block} is not on the canonical chain")));
    }
    let tip = rpc.block_number().await.map_err(rpc_err)?;
    let depth = tip.saturating_sub(block).saturating_add(1);
    if tip < block || depth < confirmations {
        return Err((
            at,
            format!("{depth} confirmation(s), {confirmations} required"),
        ));
    }
    match rpc.receipt(hash).await.map_err(rpc_err)? {
        Some(r) if r.success => {}
        Some(_) => return Err((at, "the transaction failed on chain".into())),
        None => return Err((at, "the chain has no receipt for it".into())),
    }
    if tx.from != address {
        return Err((
            at,
            format!(
                "sent by {}, not by the anchor address {}",
                tx.from.to_checksum(None),
                address.to_checksum(None)
            ),
        ));
    }
    if tx.to != Some(address) {
        return Err((at, "not sent to the anchor address itself".into()));
    }
    let Some((size, root, digest)) = parse_anchor_payload(&tx.input) else {
        return Err((at, "its input is not an MHC1 anchor".into()));
    };
    Ok(OnChain {
        block,
        size,
        root,
        digest,
    })
}

/// Checks what the chain holds for an anchor against a log whose head of the anchored size is
/// `head_at_size` (if the log has one), root at that size `root_at_size`, and whose current head
/// is `current`, with `proof` the consistency proof from the anchored size to it.
fn against_log(
    chain: &OnChain,
    claimed_size: u64,
    head_at_size: Option<&SignedTreeHead>,
    root_at_size: Option<Hash>,
    current: &SignedTreeHead,
    proof: &[Hash],
) -> Result<(), String> {
    if chain.size != claimed_size {
        return Err(format!(
            "the chain holds tree size {}, not {claimed_size}",
            chain.size
        ));
    }
    if chain.size > current.size {
        return Err(format!(
            "the log has {} entries, fewer than the {} anchored",
            current.size, chain.size
        ));
    }
    if let Some(root) = root_at_size {
        if root != chain.root {
            return Err(format!(
                "the log's root at size {} is {}, the chain holds {}: the log was rewritten",
                chain.size,
                hex::encode(root),
                hex::encode(chain.root)
            ));
        }
    }
    if let Some(head) = head_at_size {
        if head.root != chain.root || head_digest(head) != chain.digest {
            return Err(format!(
                "the log's signed head of size {} is not the one anchored: the log was rewritten",
                chain.size
            ));
        }
    }
    verify_consistency(chain.size, current.size, &chain.root, &current.root, proof).map_err(
        |e| {
            format!(
                "the log's head of size {} is not consistent with the anchored root ({e}): the log was rewritten",
                current.size
            )
        },
    )
}

fn check(tree_size: u64, tx_hash: &str, result: Result<u64, (Option<u64>, String)>) -> AnchorCheck {
    let (block, problem) = match result {
        Ok(block) => (Some(block), None),
        Err((block, problem)) => (block, Some(problem)),
    };
    AnchorCheck {
        tree_size,
        tx_hash: tx_hash.to_string(),
        block,
        problem,
    }
}

/// Checks every confirmed anchor `record` against the chain and the origin's own log.
pub async fn verify_records(
    rpc: &Rpc,
    confirmations: u64,
    records: &[AnchorRecord],
    ledger: &LedgerPlugin,
) -> Vec<AnchorCheck> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.state == AnchorState::Confirmed) {
        let tx_hash = r.tx_hash.clone().unwrap_or_default();
        let result = async {
            let address = parse_address(&r.address).map_err(|e| (None, e))?;
            let chain = on_chain(rpc, &tx_hash, address, confirmations).await?;
            let at = Some(chain.block);
            ledger
                .with_ledger(|l| -> Result<(), String> {
                    let current = l
                        .latest_head()
                        .ok_or_else(|| "the log is empty".to_string())?;
                    if chain.size > current.size {
                        return against_log(&chain, r.tree_size, None, None, &current, &[]);
                    }
                    let root = l.root_at(chain.size).map_err(|e| e.to_string())?;
                    let head = l.head(chain.size).map_err(|e| e.to_string())?;
                    let proof = l
                        .consistency_proof(chain.size, current.size)
                        .map_err(|e| e.to_string())?;
                    against_log(
                        &chain,
                        r.tree_size,
                        head.as_ref(),
                        Some(root),
                        &current,
                        &proof,
                    )
                })
                .map_err(|e| (at, e))?;
            Ok(chain.block)
        }
        .await;
        out.push(check(r.tree_size, &tx_hash, result));
    }
    out
}

/// Checks every anchor of a JSON export (verified first with
/// [`mhc_origin::ledger::verify_export`]) against the chain at `rpc`. `address`, if given,
/// pins the anchor account (else each anchor's own `address` is used).
///
/// # Errors
/// The export does not parse, has no head, or the endpoint serves another chain.
pub async fn verify_export_anchors(
    json: &[u8],
    rpc: &Rpc,
    confirmations: u64,
    address: Option<Address>,
) -> Result<Vec<AnchorCheck>, String> {
    let doc = export_anchors(json).map_err(|e| e.to_string())?;
    let Some(current) = doc.heads.iter().find(|h| h.size == doc.tree_size).copied() else {
        return Err(format!(
            "the export has no head of its tree size {}",
            doc.tree_size
        ));
    };
    // Without a pinned account, the export's own must be one and the same for every anchor: an
    // anchor from another account proves nothing about this log (pin it with the account the
    // origin publishes, to also catch a log re-anchored from a fresh account).
    if address.is_none() {
        let mut accounts: Vec<String> = doc
            .anchors
            .iter()
            .map(|a| a.address.to_lowercase())
            .collect();
        accounts.sort();
        accounts.dedup();
        if accounts.len() > 1 {
            return Err(format!(
                "the export's anchors name {} different accounts ({}): pin the origin's anchor account",
                accounts.len(),
                accounts.join(", ")
            ));
        }
    }
    let mut chain_checked = None;
    let mut out = Vec::new();
    for a in &doc.anchors {
        if chain_checked != Some(a.chain_id) {
            rpc.check_chain_id(a.chain_id)
                .await
                .map_err(|e| format!("{}: {e}", rpc.url()))?;
            chain_checked = Some(a.chain_id);
        }
        let result = async {
            let anchor_address = match address {
                Some(pinned) => pinned,
                None => parse_address(&a.address).map_err(|e| (None, e))?,
            };
            let chain = on_chain(rpc, &a.tx_hash, anchor_address, confirmations).await?;
            let at = Some(chain.block);
            let proof = a
                .consistency
                .iter()
                .map(|h| {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out).map(|()| out)
                })
                .collect::<Result<Vec<Hash>, _>>()
                .map_err(|e| (at, format!("consistency proof: {e}")))?;
            let head = doc.heads.iter().find(|h| h.size == chain.size);
            against_log(&chain, a.tree_size, head, None, &current, &proof).map_err(|e| (at, e))?;
            Ok(chain.block)
        }
        .await;
        out.push(check(a.tree_size, &a.tx_hash, result));
    }
    Ok(out)
}
