//! [`CryptoPayouts`]: a royalty payout batch executed on an EVM chain, one transfer per artist
//! wallet, in the chain's coin or an ERC-20 token (`[plugins.royalty.crypto]`).
//!
//! **Never twice.** A payout (`crypto-<as_of_ms>`) is recorded with its transfers before
//! anything is signed; each transfer is signed, then recorded with its nonce, hash and raw bytes
//! (flushed), and only then broadcast. A crash anywhere leaves either an unsigned transfer (signed
//! later, with a nonce asked then) or a signed one, which is re-broadcast as is and followed to
//! its receipt: the same transaction, never a second. A transfer is booked in royalty (a payout
//! posting whose reference is the transaction hash, and so a ledger entry naming it) only once
//! its receipt says it succeeded, idempotently; a reverted or refused transfer is booked nowhere,
//! so the money stays pending for that artist. Payees are chosen only once every earlier payout
//! is settled, from balances that already count what it paid.
//!
//! **Amounts.** No exchange rate: one unit of the asset is one unit of the configured currency,
//! so `amount_minor × 10^(decimals − exponent)` base units; balances in other currencies, and
//! artists whose network is not an EVM one, are reported as failed and left pending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, B256, U256};
use mhc_origin::ledger::currency_exponent;
use mhc_origin::royalty::{
    CryptoPayoutConfig, PayoutItem, PayoutMethod, PayoutMethodKind, EVM_NETWORKS,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::evm::{erc20_transfer_input, parse_address, Account, ChainError, Rpc, Unsigned};

/// The sled tree of [`CryptoPayout`] records, by payout id. Under `royalty/`: a primary's
/// standbys replicate it with the books, so a new primary resumes what the old one signed.
pub const PAYOUTS_TREE: &str = "royalty/crypto_payouts";

/// How long one request waits for receipts before answering with what is still in flight.
const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// The royalty books as the executor needs them (the node implements this with its write
/// gate). Both are blocking.
pub trait PayoutBooks: Send + Sync + std::fmt::Debug + 'static {
    /// Who a crypto payout as of `as_of_ms` pays, and how much (nothing booked).
    ///
    /// # Errors
    /// The books cannot be read.
    fn payees(&self, as_of_ms: u64) -> Result<Vec<PayoutItem>, String>;

    /// Books one transfer whose receipt succeeded (idempotent per payout, artist, currency).
    ///
    /// # Errors
    /// The books cannot be written (the transfer is booked on a later attempt).
    fn book(&self, payout_id: &str, item: &PayoutItem, tx_hash: &str) -> Result<(), String>;

    /// Writes `value` at `key` of [`PAYOUTS_TREE`] durably, and where the origin has synced
    /// standbys, waits until they hold it too (bounded: a standby that does not answer in time
    /// is detached, as for every acknowledged write): a transfer is recorded this way before it
    /// is broadcast.
    ///
    /// # Errors
    /// The write failed, or this origin may not write.
    fn record(&self, key: &[u8], value: &[u8]) -> Result<(), String>;
}

/// Where one transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Recorded, not signed.
    Planned,
    /// Signed and recorded; broadcast (or about to be), waiting for its receipt.
    Signed,
    /// Mined successfully and booked.
    Paid,
    /// Not paid (refused, reverted, or not payable on this chain); the money stays pending.
    Failed,
}

/// One artist's transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// What royalty selected.
    pub item: PayoutItem,
    /// The wallet, `0x…`, when it is an EVM address.
    pub to: Option<String>,
    /// Base units of the asset, decimal.
    pub token_amount: String,
    /// Where it stands.
    pub state: TransferState,
    /// The account nonce it uses, once signed.
    pub nonce: Option<u64>,
    /// Its hash, `0x…`, once signed.
    pub tx_hash: Option<String>,
    /// Its signed bytes, hex, for re-broadcasts.
    pub raw_tx: Option<String>,
    /// The block it was mined in.
    pub block: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One payout batch on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CryptoPayout {
    /// `crypto-<as_of_ms>`.
    pub id: String,
    /// Money booked before this was eligible.
    pub as_of_ms: u64,
    /// The chain.
    pub chain_id: u64,
    /// `native` or the ERC-20 contract.
    pub asset: String,
    /// The paying account.
    pub from: String,
    /// One per artist and currency.
    pub transfers: Vec<Transfer>,
}

impl CryptoPayout {
    /// Whether every transfer is paid or failed.
    pub fn settled(&self) -> bool {
        self.transfers
            .iter()
            .all(|t| matches!(t.state, TransferState::Paid | TransferState::Failed))
    }
}

/// Executes crypto payouts on one chain.
#[derive(Debug)]
pub struct CryptoPayouts {
    tree: sled::Tree,
    rpc: Rpc,
    account: Account,
    config: CryptoPayoutConfig,
    /// The currency the asset is worth one unit of, and its minor-unit exponent.
    currency: (String, u32),
    /// `None` for the native coin.
    token: Option<Address>,
    /// One payout at a time.
    running: tokio::sync::Mutex<()>,
}

/// Why an executor could not be made, or a payout run.
#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    /// The table, the key or the URL.
    #[error("[plugins.royalty.crypto] {0}")]
    Config(String),
    /// The records.
    #[error("payout records: {0}")]
    Store(String),
    /// The books.
    #[error("royalty books: {0}")]
    Books(String),
    /// An earlier payout still has transfers in flight.
    #[error("payout {0} still has transfers waiting for their receipts; try again later")]
    Unsettled(String),
}

impl CryptoPayouts {
    /// An executor paying from the account in `config.key`, for balances in the asset's
    /// currency (`config.currency`, else `plugin_currency`).
    ///
    /// # Errors
    /// [`PayoutError::Config`]: invalid table, unusable key file, bad URL;
    /// [`PayoutError::Store`].
    pub fn open(
        db: &sled::Db,
        config: CryptoPayoutConfig,
        plugin_currency: &str,
    ) -> Result<Self, PayoutError> {
        config
            .validate(plugin_currency)
            .map_err(|e| PayoutError::Config(e.to_string()))?;
        let account = Account::load(&config.key, config.chain_id)
            .map_err(|e| PayoutError::Config(e.to_string()))?;
        let rpc = Rpc::new(&config.rpc_url).map_err(|e| PayoutError::Config(e.to_string()))?;
        let token = match config.asset.as_str() {
            "native" => None,
            other => Some(parse_address(other).map_err(PayoutError::Config)?),
        };
        let currency = config.currency_or(plugin_currency).to_string();
        let exponent = currency_exponent(&currency)
            .ok_or_else(|| PayoutError::Config(format!("currency {currency:?}")))?;
        let tree = db
            .open_tree(PAYOUTS_TREE)
            .map_err(|e| PayoutError::Store(e.to_string()))?;
        Ok(Self {
            tree,
            rpc,
            account,
            config,
            currency: (currency, exponent),
            token,
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The paying account.
    pub fn address(&self) -> String {
        self.account.address().to_checksum(None)
    }

    fn get(&self, id: &str) -> Result<Option<CryptoPayout>, PayoutError> {
        let Some(bytes) = self
            .tree
            .get(id.as_bytes())
            .map_err(|e| PayoutError::Store(e.to_string()))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PayoutError::Store(format!("payout {id}: {e}")))
    }

    async fn save(
        &self,
        payout: &CryptoPayout,
        books: &Arc<dyn PayoutBooks>,
    ) -> Result<(), PayoutError> {
        let bytes = serde_json::to_vec(payout).map_err(|e| PayoutError::Store(e.to_string()))?;
        let (books, key) = (Arc::clone(books), payout.id.clone());
        tokio::task::spawn_blocking(move || books.record(key.as_bytes(), &bytes))
            .await
            .map_err(|e| PayoutError::Store(e.to_string()))?
            .map_err(PayoutError::Store)
    }

    /// Every payout recorded.
    ///
    /// # Errors
    /// [`PayoutError::Store`].
    pub fn all(&self) -> Result<Vec<CryptoPayout>, PayoutError> {
        self.tree
            .iter()
            .values()
            .map(|v| {
                let v = v.map_err(|e| PayoutError::Store(e.to_string()))?;
                serde_json::from_slice(&v).map_err(|e| PayoutError::Store(e.to_string()))
            })
            .collect()
    }

    /// Executes (or resumes) the payout as of `as_of_ms` and waits a while for its receipts;
    /// answers where every transfer stands. Any earlier payout with transfers in flight is
    /// settled first.
    ///
    /// # Errors
    /// [`PayoutError::Unsettled`] when an earlier payout cannot be settled yet; store and book
    /// errors.
    pub async fn execute(
        &self,
        as_of_ms: u64,
        books: Arc<dyn PayoutBooks>,
    ) -> Result<CryptoPayout, PayoutError> {
        let _one = self.running.lock().await;
        let id = format!("crypto-{as_of_ms}");
        for mut earlier in self.all()? {
            if earlier.id != id && !earlier.settled() {
                self.settle(&mut earlier, &books).await?;
                if !earlier.settled() {
                    return Err(PayoutError::Unsettled(earlier.id));
                }
            }
        }
        let mut payout = match self.get(&id)? {
            Some(p) => p,
            None => self.plan(id, as_of_ms, &books).await?,
        };
        self.settle(&mut payout, &books).await?;
        Ok(payout)
    }

    /// Resumes every payout with transfers in flight (at start, after a crash).
    ///
    /// # Errors
    /// Store and book errors.
    pub async fn resume(&self, books: Arc<dyn PayoutBooks>) -> Result<(), PayoutError> {
        let _one = self.running.lock().await;
        for mut payout in self.all()? {
            if !payout.settled() {
                info!(payout = payout.id, "resuming a crypto payout");
                self.settle(&mut payout, &books).await?;
            }
        }
        Ok(())
    }

    /// Records the payout's transfers (nothing signed yet).
    async fn plan(
        &self,
        id: String,
        as_of_ms: u64,
        books: &Arc<dyn PayoutBooks>,
    ) -> Result<CryptoPayout, PayoutError> {
        let items = {
            let books = Arc::clone(books);
            tokio::task::spawn_blocking(move || books.payees(as_of_ms))
                .await
                .map_err(|e| PayoutError::Books(e.to_string()))?
                .map_err(PayoutError::Books)?
        };
        let (currency, exponent) = &self.currency;
        let scale = U256::from(10u64).pow(U256::from(self.config.decimals - exponent));
        let transfers = items
            .into_iter()
            .filter(|i| i.method.kind() == PayoutMethodKind::Crypto)
            .map(|item| {
                let mut t = Transfer {
                    token_amount: (U256::from(item.amount.minor.max(0) as u64) * scale).to_string(),
                    to: None,
                    state: TransferState::Planned,
                    nonce: None,
                    tx_hash: None,
                    raw_tx: None,
                    block: None,
                    error: None,
                    item,
                };
                let problem = match &t.item.method {
                    PayoutMethod::Crypto { network, .. }
                        if !EVM_NETWORKS.contains(&network.as_str()) =>
                    {
                        Some(format!("network {network:?} is not paid on this chain"))
                    }
                    PayoutMethod::Crypto { address, .. } => match parse_address(address) {
                        Ok(a) => {
                            t.to = Some(a.to_checksum(None));
                            None
                        }
                        Err(e) => Some(e),
                    },
                    _ => Some("not a crypto payout method".into()),
                };
                let problem = problem.or_else(|| {
                    (t.item.amount.currency.as_str() != currency).then(|| {
                        format!(
                            "the balance is in {}, this chain pays {currency}",
                            t.item.amount.currency
                        )
                    })
                });
                if let Some(p) = problem {
                    t.state = TransferState::Failed;
                    t.error = Some(p);
                }
                t
            })
            .collect();
        let payout = CryptoPayout {
            id,
            as_of_ms,
            chain_id: self.config.chain_id,
            asset: self.config.asset.clone(),
            from: self.address(),
            transfers,
        };
        self.save(&payout, books).await?;
        info!(
            payout = payout.id,
            transfers = payout.transfers.len(),
            "crypto payout planned"
        );
        Ok(payout)
    }

    /// Signs, records and broadcasts what is planned, then follows what is signed to its
    /// receipt (for at most [`SETTLE_WAIT`]), booking every success.
    async fn settle(
        &self,
        payout: &mut CryptoPayout,
        books: &Arc<dyn PayoutBooks>,
    ) -> Result<(), PayoutError> {
        let deadline = Instant::now() + SETTLE_WAIT;
        self.recheck_planned(payout, books).await?;
        // Signed in order, one nonce after the other; stop at the first that cannot be sent
        // (the chain is away): the rest stay planned.
        for i in 0..payout.transfers.len() {
            if payout.transfers[i].state == TransferState::Signed {
                self.rebroadcast(&payout.transfers[i]).await;
            }
            if payout.transfers[i].state != TransferState::Planned {
                continue;
            }
            match self.sign_and_send(payout, i, books).await? {
                Sent::Yes => {}
                Sent::Later => break,
            }
        }
        loop {
            let mut waiting = false;
            for i in 0..payout.transfers.len() {
                if payout.transfers[i].state == TransferState::Signed {
                    waiting |= !self.follow(payout, i, books).await?;
                }
            }
            if !waiting || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Transfers still planned (the chain was away when the payout was made) are checked
    /// against the books as they are now: a balance paid meanwhile by another method, or a
    /// wallet changed, fails the transfer rather than pay money that is no longer pending.
    async fn recheck_planned(
        &self,
        payout: &mut CryptoPayout,
        books: &Arc<dyn PayoutBooks>,
    ) -> Result<(), PayoutError> {
        if !payout
            .transfers
            .iter()
            .any(|t| t.state == TransferState::Planned)
        {
            return Ok(());
        }
        let now = {
            let (books, as_of) = (Arc::clone(books), payout.as_of_ms);
            tokio::task::spawn_blocking(move || books.payees(as_of))
                .await
                .map_err(|e| PayoutError::Books(e.to_string()))?
                .map_err(PayoutError::Books)?
        };
        let mut changed = false;
        for t in &mut payout.transfers {
            if t.state != TransferState::Planned {
                continue;
            }
            let still = now.iter().any(|p| {
                p.artist_id == t.item.artist_id
                    && p.amount.currency == t.item.amount.currency
                    && p.amount.minor >= t.item.amount.minor
                    && p.method == t.item.method
            });
            if !still {
                t.state = TransferState::Failed;
                t.error = Some(
                    "the balance or the payout method changed since the payout was planned".into(),
                );
                changed = true;
            }
        }
        if changed {
            self.save(payout, books).await?;
        }
        Ok(())
    }

    async fn sign_and_send(
        &self,
        payout: &mut CryptoPayout,
        i: usize,
        books: &Arc<dyn PayoutBooks>,
    ) -> Result<Sent, PayoutError> {
        let me = self.account.address();
        let t = &payout.transfers[i];
        let Some(to) = t.to.as_deref().and_then(|a| parse_address(a).ok()) else {
            return Ok(Sent::Yes);
        };
        let amount: U256 = t.token_amount.parse().unwrap_or_default();
        let (target, value, input) = match self.token {
            None => (to, amount, Bytes::new()),
            Some(token) => (token, U256::ZERO, erc20_transfer_input(to, amount)),
        };
        // The next nonce: the chain's, or past the ones this payout already signed (a node
        // may not have them in its pool yet).
        let chain_nonce = match self.rpc.pending_nonce(me).await {
            Ok(n) => n,
            Err(e) => return Ok(self.chain_away(&e)),
        };
        let nonce = payout
            .transfers
            .iter()
            .filter(|t| t.state == TransferState::Signed || t.state == TransferState::Paid)
            .filter_map(|t| t.nonce.map(|n| n + 1))
            .chain([chain_nonce])
            .max()
            .unwrap_or(chain_nonce);
        let (max_fee, tip) = match self.rpc.fees().await {
            Ok(f) => f,
            Err(e) => return Ok(self.chain_away(&e)),
        };
        let gas = match self
            .rpc
            .estimate_gas(me, target, value, input.clone())
            .await
        {
            Ok(g) => g,
            Err(e) if e.is_refusal() => {
                // The chain says this transfer cannot execute (no funds, a token that reverts):
                // nothing signed, nothing paid.
                let t = &mut payout.transfers[i];
                t.state = TransferState::Failed;
                t.error = Some(format!("the chain refuses the transfer: {e}"));
                warn!(payout = payout.id, artist = t.item.artist_id, error = %e, "crypto transfer refused");
                self.save(payout, books).await?;
                return Ok(Sent::Yes);
            }
            Err(e) => return Ok(self.chain_away(&e)),
        };
        let signed = self
            .account
            .sign(&Unsigned {
                to: target,
                value,
                input,
                nonce,
                // A token's transfer may cost a little more than estimated when state changed.
                gas_limit: gas.saturating_add(gas / 5),
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
            })
            .map_err(|e| PayoutError::Config(e.to_string()))?;
        {
            let t = &mut payout.transfers[i];
            t.nonce = Some(nonce);
            t.tx_hash = Some(format!("{:#x}", signed.hash));
            t.raw_tx = Some(hex::encode(&signed.raw));
            t.state = TransferState::Signed;
        }
        // Recorded before it leaves: a crash from here on re-broadcasts these very bytes.
        self.save(payout, books).await?;
        info!(
            payout = payout.id,
            artist = payout.transfers[i].item.artist_id,
            nonce,
            tx = payout.transfers[i].tx_hash.as_deref().unwrap_or_default(),
            "crypto transfer signed and recorded; broadcasting"
        );
        match self.rpc.send_raw(&signed.raw).await {
            Ok(_) => Ok(Sent::Yes),
            Err(e) if e.is_already_known() || e.is_nonce_too_low() => Ok(Sent::Yes),
            Err(e) if e.is_refusal() && !self.maybe_pooled(nonce).await => {
                // Refused, and the account's nonce did not move past it: not in the pool, never
                // to be mined (a node that answers an error yet forwards the transaction would
                // have moved the nonce, and the transfer stays signed and followed).
                let t = &mut payout.transfers[i];
                t.state = TransferState::Failed;
                t.error = Some(format!("the chain refused the transaction: {e}"));
                warn!(payout = payout.id, artist = t.item.artist_id, error = %e, "crypto transfer refused");
                self.save(payout, books).await?;
                Ok(Sent::Yes)
            }
            // May or may not have reached the node: followed (and re-broadcast) as signed.
            Err(e) => Ok(self.chain_away(&e)),
        }
    }

    /// Whether a transaction with `nonce` may be pooled or mined: the account's pending nonce
    /// is past it (or the chain cannot say).
    async fn maybe_pooled(&self, nonce: u64) -> bool {
        self.rpc
            .pending_nonce(self.account.address())
            .await
            .map_or(true, |pending| pending > nonce)
    }

    fn chain_away(&self, e: &ChainError) -> Sent {
        warn!(error = %e, "crypto payout: the chain is unreachable; the rest waits");
        Sent::Later
    }

    async fn rebroadcast(&self, t: &Transfer) {
        if let Some(raw) = t.raw_tx.as_deref().and_then(|h| hex::decode(h).ok()) {
            if let Err(e) = self.rpc.send_raw(&raw).await {
                if !(e.is_already_known() || e.is_nonce_too_low()) {
                    warn!(error = %e, tx = t.tx_hash.as_deref().unwrap_or_default(), "re-broadcast of a crypto transfer");
                }
            }
        }
    }

    /// Checks a signed transfer's receipt; books it when it succeeded. Whether it is settled.
    async fn follow(
        &self,
        payout: &mut CryptoPayout,
        i: usize,
        books: &Arc<dyn PayoutBooks>,
    ) -> Result<bool, PayoutError> {
        let Some(hash) = payout.transfers[i]
            .tx_hash
            .as_deref()
            .and_then(|h| h.parse::<B256>().ok())
        else {
            return Ok(true);
        };
        let receipt = match self.rpc.receipt(hash).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return Ok(false),
        };
        // Only a receipt in the canonical chain, under enough blocks, settles a transfer: a
        // reorganisation could otherwise drop what was booked (or revert it when re-mined).
        let (Ok(tip), Ok(canonical)) = (
            self.rpc.block_number().await,
            self.rpc.block_hash(receipt.block).await,
        ) else {
            return Ok(false);
        };
        let depth = tip.saturating_sub(receipt.block).saturating_add(1);
        if canonical != Some(receipt.block_hash)
            || tip < receipt.block
            || depth < self.config.confirmations
        {
            return Ok(false);
        }
        if !receipt.success {
            let t = &mut payout.transfers[i];
            t.state = TransferState::Failed;
            t.block = Some(receipt.block);
            t.error = Some(format!("reverted on chain in block {}", receipt.block));
            warn!(
                payout = payout.id,
                artist = t.item.artist_id,
                "crypto transfer reverted"
            );
            self.save(payout, books).await?;
            return Ok(true);
        }
        if let Some(token) = self.token {
            // A token's own word that it moved the amount: some tokens answer `false` instead
            // of reverting, and then nothing was paid.
            let me = self.account.address();
            let t = &payout.transfers[i];
            let to = t.to.as_deref().and_then(|a| parse_address(a).ok());
            let amount: Option<U256> = t.token_amount.parse().ok();
            let moved = receipt
                .token_transfers
                .iter()
                .any(|(tok, from, dest, value)| {
                    *tok == token && *from == me && Some(*dest) == to && Some(*value) == amount
                });
            if !moved {
                let t = &mut payout.transfers[i];
                t.state = TransferState::Failed;
                t.block = Some(receipt.block);
                t.error = Some(format!(
                    "the token logged no Transfer of {} to the wallet in block {}: nothing booked, look at the transaction",
                    t.token_amount, receipt.block
                ));
                warn!(
                    payout = payout.id,
                    artist = t.item.artist_id,
                    "crypto transfer without a Transfer event"
                );
                self.save(payout, books).await?;
                return Ok(true);
            }
        }
        let (id, item, tx) = (
            payout.id.clone(),
            payout.transfers[i].item.clone(),
            format!("{hash:#x}"),
        );
        let booking = Arc::clone(books);
        tokio::task::spawn_blocking(move || booking.book(&id, &item, &tx))
            .await
            .map_err(|e| PayoutError::Books(e.to_string()))?
            .map_err(PayoutError::Books)?;
        let t = &mut payout.transfers[i];
        t.state = TransferState::Paid;
        t.block = Some(receipt.block);
        info!(
            payout = payout.id,
            artist = t.item.artist_id,
            block = receipt.block,
            "crypto transfer paid and booked"
        );
        self.save(payout, books).await?;
        Ok(true)
    }
}

/// Whether a transfer left, or the chain is away.
enum Sent {
    Yes,
    Later,
}
