//! [`Anchoring`]: the ledger's latest signed tree head anchored on an EVM chain every
//! `interval_s`, offline-first.
//!
//! The ledger never waits for the chain: this is a background task that reads the latest head
//! and keeps durable records ([`AnchorStore`]) of what it sent. One anchor is in flight at a
//! time; while the chain is down (or an anchor is waiting for confirmations) the log goes on, and
//! the next anchor is of the latest head then — its consistency proof covers the gap, so a head
//! is never anchored twice and a missed interval is never made up one by one.
//!
//! One step, every second or `interval_s` if shorter:
//! - **An anchor in flight** (records `submitted` with one nonce, and the ones they replaced):
//!   if one of them is mined on the canonical chain with `confirmations` blocks, it becomes
//!   `confirmed` and the others `replaced`; if none is mined and the nonce is still free, the
//!   latest is re-broadcast (a node that lost it, a restart), and after [`stuck_after`] it is
//!   replaced by the same transaction with fees raised by a quarter (a fee bump); if the nonce
//!   was used by another transaction of the account, they all end `replaced` and the head is
//!   anchored anew.
//! - **Nothing in flight:** a `pending` record (the chain was unreachable when it was made) is
//!   re-aimed at the latest head and sent; otherwise, if the log grew past the last confirmed
//!   anchor and `interval_s` passed since the last anchor was made, a record is made and sent.
//!
//! Sending is: ask the nonce, fees and gas, sign, **record (flushed), then broadcast**. A crash
//! anywhere leaves either a `pending` record (nothing signed) or a `submitted` one with its raw
//! bytes, which the next step re-broadcasts: the same hash, never a second transaction.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, B256, U256};
use mhc_clock::Clock;
use mhc_origin::ledger::{AnchorRecord, AnchorState, AnchorStore, SignedTreeHead};
use mhc_origin::plugin::{AnchorConfig, LedgerPlugin};
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::evm::{Account, ChainError, Rpc, Unsigned};

/// Fee bumps stop once an anchor's fee cap reaches this multiple of its first attempt's.
pub const MAX_BUMP_FACTOR: u128 = 8;

/// How long an unmined anchor waits before its fee is bumped: three intervals, at least 30 s
/// (a few blocks anywhere) and at most 10 minutes.
pub fn stuck_after(interval_s: u64) -> Duration {
    Duration::from_secs(interval_s.saturating_mul(3).clamp(30, 600))
}

/// What the metrics show of the anchoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AnchorStats {
    /// Tree size of the latest confirmed anchor.
    pub last_anchored_size: Option<u64>,
    /// When it was seen confirmed (Unix ms).
    pub last_anchored_ms: Option<u64>,
    /// Anchors pending or submitted.
    pub pending: u64,
    /// Failed JSON-RPC calls since start.
    pub rpc_errors: u64,
}

/// The anchoring task of one origin (aborted when dropped).
#[derive(Debug)]
pub struct Anchoring {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

/// What the task keeps of the records in memory, so that a step reads only the records that
/// can still change (the store grows by one record per interval for as long as the origin
/// runs).
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    /// Records before this id are final: confirmed, or replaced with their nonce settled.
    open_from: u64,
    /// The largest confirmed tree size, and when it was confirmed.
    anchored: Option<(u64, Option<u64>)>,
    /// When the latest record was made.
    last_made: Option<u64>,
    /// Records pending or submitted.
    pending: u64,
}

impl Memory {
    /// Takes `records` (written or read) into account.
    fn see(&mut self, records: &[&AnchorRecord]) {
        for r in records {
            self.last_made = self.last_made.max(Some(r.created_ms));
            if r.state == AnchorState::Confirmed
                && self.anchored.is_none_or(|(size, _)| r.tree_size > size)
            {
                self.anchored = Some((r.tree_size, r.confirmed_ms));
            }
        }
    }

    /// Recomputes `open_from` and `pending` from the records from `open_from` on.
    fn settle(&mut self, open: &[AnchorRecord], next_id: u64) {
        let live_nonces: Vec<u64> = open
            .iter()
            .filter(|r| r.state == AnchorState::Submitted)
            .filter_map(|r| r.nonce)
            .collect();
        let still_open = |r: &&AnchorRecord| match r.state {
            AnchorState::Pending | AnchorState::Submitted => true,
            AnchorState::Replaced => r.nonce.is_some_and(|n| live_nonces.contains(&n)),
            AnchorState::Confirmed => false,
        };
        self.open_from = open
            .iter()
            .filter(still_open)
            .map(|r| r.id)
            .min()
            .unwrap_or(next_id);
        self.pending = open
            .iter()
            .filter(|r| matches!(r.state, AnchorState::Pending | AnchorState::Submitted))
            .count() as u64;
    }
}

/// Whether this origin may write now (holds its lease): a fenced or demoted primary neither
/// signs, broadcasts nor records anchors.
pub type MayWrite = Arc<dyn Fn() -> bool + Send + Sync>;

struct Inner {
    store: AnchorStore,
    may_write: MayWrite,
    memory: Mutex<Memory>,
    ledger: Arc<LedgerPlugin>,
    rpc: Rpc,
    account: Account,
    address: String,
    config: AnchorConfig,
    clock: Clock,
    rpc_errors: AtomicU64,
    /// Whether the last call failed (to log an outage once, not every second).
    chain_down: AtomicBool,
    /// The record last broadcast and when, so that re-broadcasts are spaced out.
    last_broadcast: Mutex<Option<(u64, Instant)>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("address", &self.address)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Anchoring {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Anchoring {
    /// Loads the anchor account's key and starts anchoring `ledger`'s heads (on the current
    /// tokio runtime). The chain is not contacted here: an unreachable chain only delays anchors.
    ///
    /// # Errors
    /// The key file cannot be used, the RPC URL is not one, or the anchor records cannot be
    /// opened.
    pub fn start(
        db: &sled::Db,
        ledger: Arc<LedgerPlugin>,
        config: AnchorConfig,
        clock: Clock,
        may_write: MayWrite,
    ) -> Result<Self, StartError> {
        let account = Account::load(&config.key, config.chain_id)?;
        let rpc = Rpc::new(&config.rpc_url)?;
        let store = AnchorStore::open(db).map_err(|e| StartError::Store(e.to_string()))?;
        // The one full read: from here on a step reads the records that can still change.
        let all = store.all().map_err(|e| StartError::Store(e.to_string()))?;
        let mut memory = Memory::default();
        memory.see(&all.iter().collect::<Vec<_>>());
        let next_id = store
            .next_id()
            .map_err(|e| StartError::Store(e.to_string()))?;
        memory.settle(&all, next_id);
        let address = account.address().to_checksum(None);
        info!(
            address,
            chain_id = config.chain_id,
            rpc = config.rpc_url,
            interval_s = config.interval_s,
            "ledger anchoring started"
        );
        let inner = Arc::new(Inner {
            store,
            may_write,
            memory: Mutex::new(memory),
            ledger,
            rpc,
            account,
            address,
            config,
            clock,
            rpc_errors: AtomicU64::new(0),
            chain_down: AtomicBool::new(false),
            last_broadcast: Mutex::new(None),
        });
        let task = tokio::spawn(Arc::clone(&inner).run());
        Ok(Self { inner, task })
    }

    /// The anchor account's address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The records, oldest first.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn records(&self) -> Result<Vec<AnchorRecord>, String> {
        self.inner.store.all().map_err(|e| e.to_string())
    }

    /// The figures the metrics show (from memory: a scrape reads no records).
    pub fn stats(&self) -> AnchorStats {
        let memory = *self.inner.memory();
        AnchorStats {
            last_anchored_size: memory.anchored.map(|(size, _)| size),
            last_anchored_ms: memory.anchored.and_then(|(_, ms)| ms),
            pending: memory.pending,
            rpc_errors: self.inner.rpc_errors.load(Ordering::Relaxed),
        }
    }

    /// The RPC endpoint and the confirmations required, for verification.
    pub fn rpc(&self) -> (&Rpc, u64) {
        (&self.inner.rpc, self.inner.config.confirmations)
    }
}

/// Why anchoring could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key or the URL.
    #[error("[plugins.ledger.anchor] {0}")]
    Chain(#[from] ChainError),
    /// The records.
    #[error("anchor records: {0}")]
    Store(String),
}

impl Inner {
    async fn run(self: Arc<Self>) {
        let poll = Duration::from_millis(self.config.interval_s.saturating_mul(1000).min(1000));
        loop {
            if let Err(e) = self.step().await {
                warn!(error = %e, "ledger anchoring: a step failed; trying again");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Counts and logs a failed call; `None` stands for "try again next step".
    fn chain<T>(&self, result: Result<T, ChainError>) -> Option<T> {
        match result {
            Ok(v) => {
                if self.chain_down.swap(false, Ordering::Relaxed) {
                    info!("ledger anchoring: the chain answers again");
                }
                Some(v)
            }
            Err(e) => {
                self.rpc_errors.fetch_add(1, Ordering::Relaxed);
                if self.chain_down.swap(true, Ordering::Relaxed) {
                    debug!(error = %e, "ledger anchoring: chain still unreachable");
                } else {
                    warn!(error = %e, "ledger anchoring: chain unreachable; the ledger goes on locally");
                }
                None
            }
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, records: &[&AnchorRecord]) -> Result<(), String> {
        self.store
            .put(records)
            .map_err(|e| format!("writing anchor records: {e}"))?;
        self.memory().see(records);
        Ok(())
    }

    async fn latest_head(&self) -> Option<SignedTreeHead> {
        let ledger = Arc::clone(&self.ledger);
        tokio::task::spawn_blocking(move || ledger.with_ledger(|l| l.latest_head()))
            .await
            .ok()
            .flatten()
    }

    async fn step(&self) -> Result<(), String> {
        let result = self.step_on_open_records().await;
        // What can still change after this step, for the next one and the metrics.
        let open_from = self.memory().open_from;
        let open = self.store.from_id(open_from).map_err(|e| e.to_string())?;
        let next_id = self.store.next_id().map_err(|e| e.to_string())?;
        self.memory().settle(&open, next_id);
        result
    }

    async fn step_on_open_records(&self) -> Result<(), String> {
        if !(self.may_write)() {
            return Ok(());
        }
        let open_from = self.memory().open_from;
        let records = self.store.from_id(open_from).map_err(|e| e.to_string())?;
        let in_flight: Vec<&AnchorRecord> = records
            .iter()
            .filter(|r| r.state == AnchorState::Submitted)
            .collect();
        if let Some(nonce) = in_flight.iter().find_map(|r| r.nonce) {
            // Every attempt at this nonce: the submitted ones and those they replaced, any of
            // which the chain may still mine.
            let group: Vec<AnchorRecord> = records
                .iter()
                .filter(|r| {
                    r.nonce == Some(nonce)
                        && matches!(r.state, AnchorState::Submitted | AnchorState::Replaced)
                })
                .cloned()
                .collect();
            return self.follow(group, nonce).await;
        }
        let Some(head) = self.latest_head().await else {
            return Ok(());
        };
        if let Some(pending) = records.iter().find(|r| r.state == AnchorState::Pending) {
            let mut pending = pending.clone();
            if pending.tree_size != head.size {
                pending.aim_at(&head);
                self.put(&[&pending])?;
            }
            return self.submit(pending).await;
        }
        let Memory {
            anchored,
            last_made,
            ..
        } = *self.memory();
        let anchored = anchored.map(|(size, _)| size);
        let now = self.clock.now_ms();
        let interval_ms = self.config.interval_s.saturating_mul(1000);
        let due = last_made.is_none_or(|t| now.saturating_sub(t) >= interval_ms);
        if anchored.is_none_or(|a| head.size > a) && due {
            let id = self.store.next_id().map_err(|e| e.to_string())?;
            let record =
                AnchorRecord::pending(id, &head, self.config.chain_id, self.address.clone(), now);
            self.put(&[&record])?;
            info!(
                tree_size = head.size,
                "ledger anchoring: anchoring the latest head"
            );
            return self.submit(record).await;
        }
        Ok(())
    }

    /// Signs `record` (pending) with the account's next nonce and current fees, records it,
    /// broadcasts it. With the chain unreachable it stays pending.
    async fn submit(&self, mut record: AnchorRecord) -> Result<(), String> {
        let me = self.account.address();
        let Some(()) = self.chain(self.rpc.check_chain_id(self.config.chain_id).await) else {
            return Ok(());
        };
        let Some(nonce) = self.chain(self.rpc.pending_nonce(me).await) else {
            return Ok(());
        };
        let Some((max_fee, tip)) = self.chain(self.rpc.fees().await) else {
            return Ok(());
        };
        let input = Bytes::copy_from_slice(&record.payload());
        let Some(gas) = self.chain(
            self.rpc
                .estimate_gas(me, me, U256::ZERO, input.clone())
                .await,
        ) else {
            return Ok(());
        };
        let tx = Unsigned {
            to: me,
            value: U256::ZERO,
            input,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
        };
        self.sign_record_send(&mut record, &tx, None).await
    }

    /// Signs `tx` for `record`, writes the record (with `replaced`, the record it replaces, in
    /// the same batch: never one without the other) and broadcasts it.
    async fn sign_record_send(
        &self,
        record: &mut AnchorRecord,
        tx: &Unsigned,
        replaced: Option<&AnchorRecord>,
    ) -> Result<(), String> {
        let signed = self.account.sign(tx).map_err(|e| e.to_string())?;
        record.nonce = Some(tx.nonce);
        record.gas_limit = Some(tx.gas_limit);
        record.max_fee_per_gas = Some(tx.max_fee_per_gas);
        record.max_priority_fee_per_gas = Some(tx.max_priority_fee_per_gas);
        record.tx_hash = Some(format!("{:#x}", signed.hash));
        record.raw_tx = Some(hex::encode(&signed.raw));
        record.submitted_ms = Some(self.clock.now_ms());
        record.state = AnchorState::Submitted;
        match replaced {
            Some(old) => self.put(&[old, record])?,
            None => self.put(&[record])?,
        }
        info!(
            tree_size = record.tree_size,
            nonce = tx.nonce,
            tx = record.tx_hash.as_deref().unwrap_or_default(),
            "ledger anchoring: anchor signed and recorded; broadcasting"
        );
        self.broadcast(record).await;
        Ok(())
    }

    /// Broadcasts a recorded transaction; "already known" and "nonce too low" (it was mined)
    /// are not failures.
    async fn broadcast(&self, record: &AnchorRecord) {
        let Some(raw) = record.raw_tx.as_deref().and_then(|h| hex::decode(h).ok()) else {
            return;
        };
        *self
            .last_broadcast
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((record.id, Instant::now()));
        match self.rpc.send_raw(&raw).await {
            Err(e) if e.is_already_known() || e.is_nonce_too_low() => {
                debug!(error = %e, "re-broadcast of a known anchor")
            }
            other => {
                self.chain(other);
            }
        }
    }

    /// Follows the attempts at `nonce` (see the module documentation).
    async fn follow(&self, mut group: Vec<AnchorRecord>, nonce: u64) -> Result<(), String> {
        group.sort_by_key(|r| r.id);
        let mut mined = None;
        for (i, r) in group.iter().enumerate() {
            let Some(hash) = r.tx_hash.as_deref().and_then(|h| h.parse::<B256>().ok()) else {
                continue;
            };
            let Some(receipt) = self.chain(self.rpc.receipt(hash).await) else {
                return Ok(());
            };
            if let Some(receipt) = receipt {
                mined = Some((i, receipt));
                break;
            }
        }
        let now = self.clock.now_ms();
        if let Some((i, receipt)) = mined {
            let Some(tip) = self.chain(self.rpc.block_number().await) else {
                return Ok(());
            };
            let Some(canonical) = self.chain(self.rpc.block_hash(receipt.block).await) else {
                return Ok(());
            };
            if canonical != Some(receipt.block_hash) {
                // Reorganised away meanwhile: it is back in the pool or will be re-broadcast.
                return Ok(());
            }
            let depth = tip.saturating_sub(receipt.block).saturating_add(1);
            if tip < receipt.block || depth < self.config.confirmations {
                return Ok(());
            }
            if !receipt.success {
                // Mined but failed (out of gas): it anchors nothing; the head is anchored anew.
                warn!(
                    nonce,
                    block = receipt.block,
                    "ledger anchoring: the anchor failed on chain; anchoring again"
                );
                for r in &mut group {
                    r.state = AnchorState::Replaced;
                }
                return self.put(&group.iter().collect::<Vec<_>>());
            }
            for (j, r) in group.iter_mut().enumerate() {
                if j == i {
                    r.state = AnchorState::Confirmed;
                    r.block = Some(receipt.block);
                    r.block_hash = Some(format!("{:#x}", receipt.block_hash));
                    r.gas_used = Some(receipt.gas_used);
                    r.confirmed_ms = Some(now);
                    info!(
                        tree_size = r.tree_size,
                        block = receipt.block,
                        gas_used = receipt.gas_used,
                        success = receipt.success,
                        "ledger anchoring: anchor confirmed"
                    );
                } else {
                    r.state = AnchorState::Replaced;
                }
            }
            return self.put(&group.iter().collect::<Vec<_>>());
        }
        let me = self.account.address();
        let Some(used) = self.chain(self.rpc.mined_nonce(me).await) else {
            return Ok(());
        };
        let Some(latest) = group
            .iter()
            .rfind(|r| r.state == AnchorState::Submitted)
            .cloned()
        else {
            return Ok(());
        };
        let since = Duration::from_millis(now.saturating_sub(latest.submitted_ms.unwrap_or(now)));
        let stuck = stuck_after(self.config.interval_s);
        if used > nonce {
            // The nonce was used, by none of ours that the node can find. Give its receipt a
            // while to appear (a lagging node), then let the head be anchored anew.
            if since >= stuck {
                warn!(nonce, "ledger anchoring: the anchor's nonce was used by another transaction; anchoring again");
                for r in &mut group {
                    r.state = AnchorState::Replaced;
                }
                return self.put(&group.iter().collect::<Vec<_>>());
            }
            return Ok(());
        }
        // Bumps compound; past this cap the anchor waits rather than bid up without bound.
        let first_fee = group.iter().filter_map(|r| r.max_fee_per_gas).min();
        let capped = match (first_fee, latest.max_fee_per_gas) {
            (Some(first), Some(now)) => now >= first.saturating_mul(MAX_BUMP_FACTOR),
            _ => false,
        };
        if since >= stuck && !capped {
            return self.bump(latest).await;
        }
        let due = {
            let last = self
                .last_broadcast
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let spacing = Duration::from_secs(self.config.interval_s.clamp(1, 30));
            last.is_none_or(|(id, at)| id != latest.id || at.elapsed() >= spacing)
        };
        if due {
            self.broadcast(&latest).await;
        }
        Ok(())
    }

    /// Replaces a stuck anchor with the same transaction at higher fees (the same nonce, so
    /// only one of them can ever be mined).
    async fn bump(&self, stuck: AnchorRecord) -> Result<(), String> {
        let (Some(nonce), Some(gas), Some(fee), Some(tip)) = (
            stuck.nonce,
            stuck.gas_limit,
            stuck.max_fee_per_gas,
            stuck.max_priority_fee_per_gas,
        ) else {
            return Err(format!(
                "anchor record {} is submitted but incomplete",
                stuck.id
            ));
        };
        let Some((now_fee, now_tip)) = self.chain(self.rpc.fees().await) else {
            return Ok(());
        };
        // Nodes replace a pooled transaction only for at least 10% more on both fees.
        let raise = |old: u128| old.saturating_add(old / 4).saturating_add(1);
        let new_tip = raise(tip).max(now_tip);
        let new_fee = raise(fee).max(now_fee).max(new_tip);
        let me: Address = self.account.address();
        let tx = Unsigned {
            to: me,
            value: U256::ZERO,
            input: Bytes::copy_from_slice(&stuck.payload()),
            nonce,
            gas_limit: gas,
            max_fee_per_gas: new_fee,
            max_priority_fee_per_gas: new_tip,
        };
        let id = self.store.next_id().map_err(|e| e.to_string())?;
        let mut bumped = stuck.clone();
        bumped.id = id;
        bumped.block = None;
        bumped.block_hash = None;
        let mut old = stuck;
        old.state = AnchorState::Replaced;
        warn!(
            tree_size = old.tree_size,
            nonce,
            old_fee = fee,
            new_fee,
            "ledger anchoring: anchor not mined in time; replacing it with higher fees"
        );
        self.sign_record_send(&mut bumped, &tx, Some(&old)).await
    }
}

#[cfg(test)]
mod tests {
    use mhc_origin::ledger::SignedTreeHead;

    use super::*;

    fn record(id: u64, size: u64, state: AnchorState, nonce: Option<u64>) -> AnchorRecord {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let head = SignedTreeHead::sign(size, [size as u8; 32], 1, &key);
        let mut r = AnchorRecord::pending(id, &head, 1, "0x00".into(), 100 + id);
        r.state = state;
        r.nonce = nonce;
        if state == AnchorState::Confirmed {
            r.confirmed_ms = Some(1000 + id);
        }
        r
    }

    #[test]
    fn memory_keeps_only_what_can_still_change_open() {
        let records = vec![
            record(0, 1, AnchorState::Confirmed, Some(0)),
            record(1, 4, AnchorState::Replaced, Some(1)),
            record(2, 4, AnchorState::Submitted, Some(1)),
            record(3, 9, AnchorState::Replaced, Some(7)),
        ];
        let mut m = Memory::default();
        m.see(&records.iter().collect::<Vec<_>>());
        m.settle(&records, 4);
        // The replaced attempt at the live nonce may still be mined: open from it.
        assert_eq!(m.open_from, 1);
        assert_eq!(m.pending, 1);
        assert_eq!(m.anchored, Some((1, Some(1000))));
        assert_eq!(m.last_made, Some(103));
        // Once the bump is confirmed, everything up to it is final.
        let mut settled = records.clone();
        settled[2].state = AnchorState::Confirmed;
        settled[2].confirmed_ms = Some(2000);
        m.see(&[&settled[2]]);
        m.settle(&settled[1..], 4);
        assert_eq!((m.open_from, m.pending), (4, 0));
        assert_eq!(m.anchored, Some((4, Some(2000))));
    }
}
