//! [`LedgerPlugin`]: the `ledger` plugin — appends every royalty [`Posting`] to the verifiable
//! Merkle [`Ledger`], exactly once, and serves proofs, exports and verification as admin routes.
//!
//! **Exactly once.** The ledger's append is one sled transaction the plugin cannot add a cursor
//! write to, so the cursor lives *in the ledger itself*: every entry made from a posting carries
//! the reference `royalty/<posting seq>/<input reference>` ([`ROYALTY_REFERENCE_PREFIX`]), and on
//! open the cursor is the posting seq of the last such entry. A crash before an append commits
//! leaves the cursor where it was (the postings are appended on the next sync); after, the
//! cursor is in the committed entries. Nothing is appended twice and nothing is skipped. Other
//! writers ([`LedgerPlugin::append_external`]) may not use the prefix.
//!
//! **Mapping.** The ledger only knows credits (> 0), payouts (< 0) and adjustments (≠ 0), and
//! restricts sources to `a-z 0-9 : . _ -`; [`posting_entry`] maps:
//!
//! | posting | entry kind | entry source |
//! |---|---|---|
//! | credit > 0 | credit | the posting's source (`plays`, `tips`, `subscriptions`, `dsp:<name>`) |
//! | credit < 0 (a DSP reversal) | adjustment, memo `reversal: …` | the posting's source |
//! | withholding (< 0; > 0 when a negative adjustment releases tax) | adjustment | `withholding:<source of the credit>` |
//! | payout < 0 | payout | `payout:<method>` |
//! | adjustment ≠ 0 | adjustment | `adjustments` |
//!
//! so the sum of an account's ledger amounts per currency is its pending balance, exactly as the
//! royalty module's postings sum. Royalty never books a zero posting; one would be skipped.
//!
//! **Batching.** Every event (and tick) runs [`LedgerPlugin::sync`], which appends all postings
//! past the cursor in batches of at most `max_batch_entries` — one signed tree head per batch.
//!
//! Admin routes, under `/admin/plugins/ledger/`: `GET status`, `GET head`, `GET heads`,
//! `GET entry/<index>`, `GET inclusion/<index>?size=N`, `GET consistency?old=A&new=B`,
//! `GET export?format=json|csv&from_ms=&to_ms=` (JSON exports carry the confirmed anchors),
//! `GET anchors[?full]` (the anchor transactions: `{tree_size, root, state, tx_hash, block}`, or
//! whole records), `POST verify`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ed25519_dalek::SigningKey;
use mhc_clock::Clock;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::admin::{AdminRequest, AdminResponse};
use super::error::PluginError;
use super::{CoreEvent, Plugin};
use crate::ledger::{
    AnchorRecord, AnchorStore, EntryKind, ExportScope, Ledger, LedgerEntry, NewEntry,
    SignedTreeHead, MAX_MEMO_LEN, MAX_REFERENCE_LEN, MAX_SOURCE_LEN,
};
use crate::royalty::{Posting, PostingKind, Royalty, MAX_POSTINGS_PAGE};

/// The plugin's name, and its `[plugins.ledger]` table.
pub const LEDGER_PLUGIN_NAME: &str = "ledger";

/// Start of the reference of every entry made from a royalty posting:
/// `royalty/<posting seq>/<input reference>`.
pub const ROYALTY_REFERENCE_PREFIX: &str = "royalty/";

/// The `[plugins.ledger]` table. An empty table enables the ledger with defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerPluginConfig {
    /// Most postings appended under one signed tree head, `1..=10000`. Default 10000 (the
    /// royalty journal's page): a batch is one transaction and one flush, so larger batches
    /// amortize the flush; the bound keeps one transaction small.
    #[serde(default = "default_max_batch_entries")]
    pub max_batch_entries: usize,
    /// `[plugins.ledger.anchor]`: anchor signed tree heads on an EVM chain. Default: none.
    #[serde(default)]
    pub anchor: Option<AnchorConfig>,
}

/// `[plugins.ledger.anchor]`: where and how often the ledger's heads are anchored (the work is
/// `mhc-chain`'s; this is the table and its checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorConfig {
    /// JSON-RPC endpoint, `http://` or `https://`.
    pub rpc_url: String,
    /// The chain's id (`eth_chainId` must answer it; signatures are bound to it).
    pub chain_id: u64,
    /// File holding the anchor account's secp256k1 private key, hex, mode `0600`.
    pub key: std::path::PathBuf,
    /// Seconds between anchors when the log grew, `1..=86400`. Default 300.
    #[serde(default = "default_anchor_interval_s")]
    pub interval_s: u64,
    /// Blocks on top of an anchor's block (its own counted) before it is confirmed,
    /// `1..=1000`. Default 2.
    #[serde(default = "default_anchor_confirmations")]
    pub confirmations: u64,
}

fn default_anchor_interval_s() -> u64 {
    300
}

fn default_anchor_confirmations() -> u64 {
    2
}

impl AnchorConfig {
    /// Checks the table (not the key file, which is read when the anchoring starts).
    ///
    /// # Errors
    /// [`PluginError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), PluginError> {
        let fail = |problem: String| PluginError::Config {
            plugin: format!("{LEDGER_PLUGIN_NAME}.anchor"),
            problem,
        };
        let url = self.rpc_url.as_str();
        if !crate::royalty::is_http_url(url) {
            return Err(fail(format!(
                "rpc_url = {url:?}: must be an http:// or https:// URL"
            )));
        }
        if self.chain_id == 0 {
            return Err(fail(
                "chain_id = 0: must be the chain's id (1 is Ethereum)".into(),
            ));
        }
        if self.key.as_os_str().is_empty() {
            return Err(fail("key: must name the anchor account's key file".into()));
        }
        if !(1..=86_400).contains(&self.interval_s) {
            return Err(fail(format!(
                "interval_s = {}: must be 1..=86400",
                self.interval_s
            )));
        }
        if !(1..=1000).contains(&self.confirmations) {
            return Err(fail(format!(
                "confirmations = {}: must be 1..=1000",
                self.confirmations
            )));
        }
        Ok(())
    }
}

fn default_max_batch_entries() -> usize {
    MAX_POSTINGS_PAGE
}

impl Default for LedgerPluginConfig {
    fn default() -> Self {
        LedgerPluginConfig {
            max_batch_entries: default_max_batch_entries(),
            anchor: None,
        }
    }
}

impl LedgerPluginConfig {
    /// Checks the table.
    ///
    /// # Errors
    /// [`PluginError::Config`] naming `max_batch_entries` when it is 0 or above 10000.
    pub fn validate(&self) -> Result<(), PluginError> {
        if self.max_batch_entries == 0 || self.max_batch_entries > MAX_POSTINGS_PAGE {
            return Err(PluginError::Config {
                plugin: LEDGER_PLUGIN_NAME.into(),
                problem: format!(
                    "max_batch_entries = {}: must be 1..={MAX_POSTINGS_PAGE}",
                    self.max_batch_entries
                ),
            });
        }
        if let Some(anchor) = &self.anchor {
            anchor.validate()?;
        }
        Ok(())
    }
}

/// What one [`LedgerPlugin::sync`] appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOutcome {
    /// Entries appended.
    pub appended: u64,
    /// Batches (signed tree heads) appended.
    pub batches: u64,
    /// The posting seq the ledger now holds up to.
    pub cursor: u64,
    /// The latest head after the sync.
    pub head: Option<SignedTreeHead>,
}

/// The ledger and the posting seq it holds up to, under one lock.
#[derive(Debug)]
struct State {
    ledger: Ledger,
    cursor: u64,
}

/// The `ledger` plugin.
#[derive(Debug)]
pub struct LedgerPlugin {
    state: Mutex<State>,
    royalty: Option<Arc<Royalty>>,
    config: LedgerPluginConfig,
    /// The anchors written by `mhc-chain` (listed, and carried by JSON exports).
    anchors: AnchorStore,
}

/// Keeps `s` to at most `max` bytes, cutting at a character boundary.
fn clamp(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A royalty source as a ledger source: lowercase, characters outside `a-z 0-9 : . _ -` replaced
/// by `_`, at most [`MAX_SOURCE_LEN`] bytes. Royalty's own sources already comply.
fn ledger_source(source: &str) -> String {
    let s: String = source
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || ":._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = clamp(s, MAX_SOURCE_LEN);
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// The ledger entry recording a royalty posting (see the module docs for the mapping), or `None`
/// for a zero amount, which no ledger kind can hold.
pub fn posting_entry(p: &Posting) -> Option<NewEntry> {
    if p.amount_minor == 0 {
        return None;
    }
    let source = ledger_source(&p.source);
    let (kind, source, note) = match p.kind {
        PostingKind::Credit if p.amount_minor > 0 => (EntryKind::Credit, source, None),
        PostingKind::Credit => (EntryKind::Adjustment, source, Some("reversal")),
        PostingKind::Withholding => (
            EntryKind::Adjustment,
            clamp(format!("withholding:{source}"), MAX_SOURCE_LEN),
            None,
        ),
        PostingKind::Payout if p.amount_minor < 0 => (EntryKind::Payout, source, None),
        PostingKind::Payout => (EntryKind::Adjustment, source, Some("payout reversal")),
        PostingKind::Adjustment => (EntryKind::Adjustment, source, None),
    };
    let full_reference = format!("{ROYALTY_REFERENCE_PREFIX}{}/{}", p.seq, p.reference);
    let reference = clamp(full_reference.clone(), MAX_REFERENCE_LEN);
    let mut memo = match note {
        Some(note) => format!("{note}: {}", p.memo),
        None => p.memo.clone(),
    };
    if reference != full_reference {
        // The prefix and seq always fit (8 + 20 + 1 bytes); only the input reference is cut, so
        // keep it whole in the memo.
        memo.push_str(&format!(" (reference {})", p.reference));
    }
    let memo: String = memo.chars().filter(|c| !c.is_control()).collect();
    Some(
        NewEntry::new(
            kind,
            p.account.clone(),
            p.amount_minor,
            p.currency.as_str(),
            source,
        )
        .with_reference(reference)
        .with_memo(clamp(memo, MAX_MEMO_LEN)),
    )
}

/// The posting seq recorded in an entry's reference, if the entry was made from a posting.
pub fn royalty_cursor_of(entry: &LedgerEntry) -> Option<u64> {
    let rest = entry.reference.strip_prefix(ROYALTY_REFERENCE_PREFIX)?;
    let (seq, _) = rest.split_once('/')?;
    seq.parse().ok()
}

/// The posting seq of the last entry made from a posting (0 if none), scanning back from the
/// end past entries appended by other writers.
fn derive_cursor(ledger: &Ledger) -> Result<u64, PluginError> {
    for index in (0..ledger.len()).rev() {
        if let Some(seq) = royalty_cursor_of(&ledger.entry(index)?) {
            return Ok(seq);
        }
    }
    Ok(0)
}

fn hex_list(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

impl LedgerPlugin {
    /// Opens the ledger in `db` (its `ledger/*` trees), signing heads with `signing_key`, and
    /// finds its cursor. With `royalty`, the postings past the cursor are appended on the first
    /// event or tick; without, the plugin only serves the ledger.
    ///
    /// # Errors
    /// [`PluginError::Config`] for an invalid `config`; [`PluginError::Ledger`] when the ledger
    /// does not open (another key, an inconsistent store); [`PluginError::Corrupt`] when the
    /// ledger is ahead of the royalty journal (the royalty store was replaced or reset: an
    /// operator must look).
    pub fn open(
        db: &sled::Db,
        signing_key: SigningKey,
        royalty: Option<Arc<Royalty>>,
        config: LedgerPluginConfig,
    ) -> Result<Self, PluginError> {
        Self::open_with_clock(db, signing_key, royalty, config, Clock::system())
    }

    /// Like [`LedgerPlugin::open`], with appended batches dated by `clock`.
    ///
    /// # Errors
    /// As [`LedgerPlugin::open`].
    pub fn open_with_clock(
        db: &sled::Db,
        signing_key: SigningKey,
        royalty: Option<Arc<Royalty>>,
        config: LedgerPluginConfig,
        clock: Clock,
    ) -> Result<Self, PluginError> {
        config.validate()?;
        let ledger = Ledger::open(db, signing_key)?.with_clock(clock);
        let cursor = derive_cursor(&ledger)?;
        if let Some(r) = &royalty {
            let last = r.last_seq()?;
            if cursor > last {
                return Err(PluginError::Corrupt(format!(
                    "the ledger records royalty postings up to {cursor}, but the royalty journal \
                     ends at {last}: the royalty store was reset or replaced"
                )));
            }
        }
        info!(entries = ledger.len(), cursor, "ledger plugin opened");
        Ok(LedgerPlugin {
            state: Mutex::new(State { ledger, cursor }),
            royalty,
            config,
            anchors: AnchorStore::open(db)?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock cannot leave a half-applied batch (appends are one transaction),
        // and the cursor is re-derived after any failed append, so the state stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The posting seq the ledger holds up to.
    pub fn cursor(&self) -> u64 {
        self.lock().cursor
    }

    /// Runs `f` with the ledger (reads: proofs, exports, verification). Appends wait meanwhile.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> R {
        f(&self.lock().ledger)
    }

    /// Appends every royalty posting past the cursor, in batches of at most
    /// `max_batch_entries`, one signed tree head each. A no-op without royalty.
    ///
    /// # Errors
    /// [`PluginError::Royalty`] reading the journal; [`PluginError::Ledger`] appending
    /// (storage errors are retryable: the cursor is re-read from the ledger, so whatever did
    /// commit is not appended again); [`PluginError::Corrupt`] for a posting the ledger refuses
    /// (the ledger then stops rather than skip money).
    pub fn sync(&self) -> Result<SyncOutcome, PluginError> {
        let mut st = self.lock();
        let mut outcome = SyncOutcome {
            appended: 0,
            batches: 0,
            cursor: st.cursor,
            head: st.ledger.latest_head(),
        };
        let Some(royalty) = &self.royalty else {
            return Ok(outcome);
        };
        loop {
            let postings = royalty.postings_since(st.cursor, self.config.max_batch_entries)?;
            let Some(last) = postings.last().map(|p| p.seq) else {
                break;
            };
            let mut entries = Vec::with_capacity(postings.len());
            for p in &postings {
                match posting_entry(p) {
                    Some(e) => {
                        e.validate().map_err(|err| {
                            PluginError::Corrupt(format!(
                                "royalty posting {} cannot be a ledger entry: {err}",
                                p.seq
                            ))
                        })?;
                        entries.push(e);
                    }
                    None => warn!(
                        seq = p.seq,
                        "zero royalty posting not recorded in the ledger"
                    ),
                }
            }
            if !entries.is_empty() {
                let count = entries.len() as u64;
                match st.ledger.append_batch(entries) {
                    Ok(head) => {
                        outcome.appended += count;
                        outcome.batches += 1;
                        outcome.head = Some(head);
                    }
                    Err(e) => {
                        // A failed flush leaves the batch committed: believe the ledger.
                        st.cursor = derive_cursor(&st.ledger)?;
                        return Err(e.into());
                    }
                }
            }
            st.cursor = last;
            outcome.cursor = last;
            if postings.len() < self.config.max_batch_entries {
                break;
            }
        }
        if outcome.appended > 0 {
            debug!(
                appended = outcome.appended,
                cursor = outcome.cursor,
                "ledger synced"
            );
        }
        Ok(outcome)
    }

    /// Appends entries that do not come from royalty postings (e.g. an external anchor or a
    /// manual correction), as one batch.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] for a reference starting with
    /// [`ROYALTY_REFERENCE_PREFIX`] (it would move the posting cursor); [`PluginError::Ledger`].
    pub fn append_external(&self, entries: Vec<NewEntry>) -> Result<SignedTreeHead, PluginError> {
        if let Some(e) = entries
            .iter()
            .find(|e| e.reference.starts_with(ROYALTY_REFERENCE_PREFIX))
        {
            return Err(PluginError::BadRequest(format!(
                "reference {:?}: the prefix {ROYALTY_REFERENCE_PREFIX:?} is reserved for royalty postings",
                e.reference
            )));
        }
        Ok(self.lock().ledger.append_batch(entries)?)
    }

    fn route(&self, req: &AdminRequest) -> Result<Option<AdminResponse>, PluginError> {
        let segments = req.segments()?;
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let st = self.lock();
        let ledger = &st.ledger;
        let latest_size = ledger.latest_head().map_or(0, |h| h.size);
        let index_of = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| PluginError::BadRequest(format!("index {s:?} is not a number")))
        };
        let response = match (req.method.as_str(), seg.as_slice()) {
            ("GET", ["status"]) => AdminResponse::ok(&serde_json::json!({
                "entries": ledger.len(),
                "royalty_cursor": st.cursor,
                "royalty_feed": self.royalty.is_some(),
                "public_key": hex::encode(ledger.public_key()),
                "latest_head": ledger.latest_head(),
            })),
            ("GET", ["head"]) => match ledger.latest_head() {
                Some(h) => AdminResponse::ok(&h),
                None => return Err(PluginError::NotFound("the ledger is empty".into())),
            },
            ("GET", ["heads"]) => AdminResponse::ok(&ledger.heads()?),
            ("GET", ["anchors"]) => {
                let all = self.anchors.all()?;
                if req.param("full").is_some() {
                    AdminResponse::ok(&all)
                } else {
                    AdminResponse::ok(&all.iter().map(AnchorRecord::summary).collect::<Vec<_>>())
                }
            }
            ("GET", ["entry", index]) => {
                let index = index_of(index)?;
                let entry = ledger.entry(index)?;
                let leaf = ledger.leaf_bytes(index)?;
                AdminResponse::ok(&serde_json::json!({
                    "entry": entry,
                    "leaf_bytes": hex::encode(&leaf),
                    "leaf_hash": hex::encode(entry.leaf_hash()),
                }))
            }
            ("GET", ["inclusion", index]) => {
                let index = index_of(index)?;
                let size = req.param_parsed::<u64>("size")?.unwrap_or(latest_size);
                let proof = ledger.inclusion_proof(index, size)?;
                AdminResponse::ok(&serde_json::json!({
                    "index": index,
                    "tree_size": size,
                    "root": hex::encode(ledger.root_at(size)?),
                    "head": ledger.head(size)?,
                    "leaf_bytes": hex::encode(ledger.leaf_bytes(index)?),
                    "proof": hex_list(&proof),
                }))
            }
            ("GET", ["consistency"]) => {
                let old = req.param_parsed::<u64>("old")?.ok_or_else(|| {
                    PluginError::BadRequest("the old= parameter is required".into())
                })?;
                let new = req.param_parsed::<u64>("new")?.unwrap_or(latest_size);
                let proof = ledger.consistency_proof(old, new)?;
                AdminResponse::ok(&serde_json::json!({
                    "old_size": old,
                    "new_size": new,
                    "old_root": hex::encode(ledger.root_at(old)?),
                    "new_root": hex::encode(ledger.root_at(new)?),
                    "old_head": ledger.head(old)?,
                    "new_head": ledger.head(new)?,
                    "proof": hex_list(&proof),
                }))
            }
            ("GET", ["export"]) => {
                let from = req.param_parsed::<u64>("from_ms")?;
                let to = req.param_parsed::<u64>("to_ms")?;
                let scope = match (from, to) {
                    (None, None) => ExportScope::All,
                    (from, to) => ExportScope::TimeRange {
                        from_ms: from.unwrap_or(0),
                        to_ms: to.unwrap_or(u64::MAX),
                    },
                };
                let mut out = Vec::new();
                if req.wants_csv()? {
                    ledger.export_csv(scope, &mut out)?;
                    AdminResponse::csv(out)
                } else {
                    ledger.export_json_with_anchors(scope, &self.anchors.all()?, &mut out)?;
                    AdminResponse::bytes("application/json", out)
                }
            }
            ("POST", ["verify"]) => match ledger.verify() {
                Ok(report) => AdminResponse::ok(&serde_json::json!({
                    "ok": true,
                    "public_key": hex::encode(report.public_key),
                    "entries": report.entries.end - report.entries.start,
                    "heads": report.heads,
                    "latest_head": report.latest,
                })),
                Err(e) => AdminResponse::ok(&serde_json::json!({
                    "ok": false,
                    "error": e.to_string(),
                    "first_bad_entry": e.entry(),
                })),
            },
            _ => return Ok(None),
        };
        Ok(Some(response))
    }
}

impl Plugin for LedgerPlugin {
    fn name(&self) -> &'static str {
        LEDGER_PLUGIN_NAME
    }

    /// Every event may follow new postings (a report booked, a tip through an admin route, a
    /// payout batch), so every event syncs; a sync with nothing new reads one empty page.
    ///
    /// A failed sync is reported as retryable whatever its cause: the event is only the trigger,
    /// so dead-lettering it would achieve nothing, while holding the delivery cursor shows the
    /// ledger as behind (`pending` in the stats) and retries on every tick until the cause is
    /// fixed; the next successful sync then catches up with everything.
    fn on_event(&self, _ev: &CoreEvent<'_>) -> Result<(), PluginError> {
        self.sync().map(|_| ()).map_err(|e| PluginError::Other {
            message: format!("ledger sync: {e}"),
            retryable: true,
        })
    }

    fn admin(&self, req: &AdminRequest) -> Option<Result<AdminResponse, PluginError>> {
        self.route(req).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{admin_json, Fixture};
    use super::*;
    use crate::ledger::verify_inclusion;
    use crate::royalty::{Currency, Money, Tip};

    fn posting(seq: u64, kind: PostingKind, amount: i64, source: &str) -> Posting {
        Posting {
            seq,
            reference: "ref-1".into(),
            time_ms: 1,
            kind,
            account: "ar-1".into(),
            amount_minor: amount,
            currency: Currency::USD,
            source: source.into(),
            memo: "memo".into(),
        }
    }

    #[test]
    fn postings_map_to_valid_entries() {
        let cases = [
            (PostingKind::Credit, 5, "plays", EntryKind::Credit, "plays"),
            (
                PostingKind::Credit,
                -5,
                "dsp:spotify",
                EntryKind::Adjustment,
                "dsp:spotify",
            ),
            (
                PostingKind::Withholding,
                -2,
                "tips",
                EntryKind::Adjustment,
                "withholding:tips",
            ),
            (
                PostingKind::Withholding,
                2,
                "adjustments",
                EntryKind::Adjustment,
                "withholding:adjustments",
            ),
            (
                PostingKind::Payout,
                -9,
                "payout:bank",
                EntryKind::Payout,
                "payout:bank",
            ),
            (
                PostingKind::Payout,
                9,
                "payout:bank",
                EntryKind::Adjustment,
                "payout:bank",
            ),
            (
                PostingKind::Adjustment,
                -1,
                "adjustments",
                EntryKind::Adjustment,
                "adjustments",
            ),
            (
                PostingKind::Credit,
                1,
                "DSP:Big Co!",
                EntryKind::Credit,
                "dsp:big_co_",
            ),
        ];
        for (kind, amount, source, want_kind, want_source) in cases {
            let e = posting_entry(&posting(7, kind, amount, source)).unwrap();
            e.validate().unwrap();
            assert_eq!((e.kind, e.source.as_str()), (want_kind, want_source));
            assert_eq!(e.amount_minor, amount);
            assert_eq!(e.reference, "royalty/7/ref-1");
            let entry = e.into_entry(0, 0);
            assert_eq!(royalty_cursor_of(&entry), Some(7));
        }
        assert!(posting_entry(&posting(1, PostingKind::Credit, 0, "plays")).is_none());
        let reversal = posting_entry(&posting(1, PostingKind::Credit, -1, "x")).unwrap();
        assert_eq!(reversal.memo, "reversal: memo");
    }

    #[test]
    fn long_references_and_sources_are_cut_but_kept() {
        let mut p = posting(u64::MAX, PostingKind::Withholding, -1, &"s".repeat(80));
        p.reference = "é".repeat(100); // 200 bytes
        let e = posting_entry(&p).unwrap();
        e.validate().unwrap();
        assert!(e.reference.len() <= MAX_REFERENCE_LEN);
        assert!(e.memo.ends_with(&format!("(reference {})", p.reference)));
        assert_eq!(e.source.len(), MAX_SOURCE_LEN);
        assert_eq!(royalty_cursor_of(&e.into_entry(0, 0)), Some(u64::MAX));
        assert_eq!(ledger_source(""), "unknown");
    }

    #[test]
    fn sync_appends_each_posting_once_in_batches() {
        let f = Fixture::new();
        let r = f.royalty_plugin();
        let config = LedgerPluginConfig {
            max_batch_entries: 2,
            anchor: None,
        };
        let l = f.ledger_plugin(Some(r.royalty().clone()), config.clone());
        for i in 0..5 {
            r.royalty()
                .record_tip(&Tip {
                    reference: format!("t{i}"),
                    artist_id: "a".into(),
                    amount: Money::new(10 + i, Currency::USD),
                    from: String::new(),
                })
                .unwrap();
        }
        let out = l.sync().unwrap();
        assert_eq!((out.appended, out.batches, out.cursor), (5, 3, 5));
        assert_eq!(l.sync().unwrap().appended, 0);
        drop(l);
        // Reopened: the cursor comes from the ledger's last royalty entry.
        let l = f.ledger_plugin(Some(r.royalty().clone()), config);
        assert_eq!(l.cursor(), 5);
        assert_eq!(l.sync().unwrap().appended, 0);
        l.with_ledger(|ledger| {
            assert_eq!(ledger.len(), 5);
            assert_eq!(ledger.heads().unwrap().len(), 3);
            ledger.verify().unwrap();
        });
    }

    #[test]
    fn external_entries_do_not_move_the_cursor() {
        let f = Fixture::new();
        let r = f.royalty_plugin();
        let l = f.ledger_plugin(Some(r.royalty().clone()), LedgerPluginConfig::default());
        r.royalty()
            .record_tip(&Tip {
                reference: "t".into(),
                artist_id: "a".into(),
                amount: Money::new(10, Currency::USD),
                from: String::new(),
            })
            .unwrap();
        l.sync().unwrap();
        let anchor = NewEntry::new(EntryKind::Adjustment, "ops", 1, "USD", "anchor");
        l.append_external(vec![anchor.clone()]).unwrap();
        let forged = anchor.with_reference("royalty/99/x");
        assert_eq!(
            l.append_external(vec![forged]).unwrap_err().http_status(),
            400
        );
        drop(l);
        let l = f.ledger_plugin(Some(r.royalty().clone()), LedgerPluginConfig::default());
        assert_eq!(l.cursor(), 1);
        // Without royalty: opens, serves, never syncs.
        drop(l);
        let alone = f.ledger_plugin(None, LedgerPluginConfig::default());
        assert_eq!(alone.sync().unwrap().appended, 0);
        assert_eq!(alone.with_ledger(Ledger::len), 2);
    }

    #[test]
    fn a_ledger_ahead_of_royalty_is_refused() {
        let f = Fixture::new();
        let r = f.royalty_plugin();
        let l = f.ledger_plugin(None, LedgerPluginConfig::default());
        l.with_ledger(|_| ());
        // Forge an entry as if posting 3 had been recorded, bypassing append_external's check.
        l.lock()
            .ledger
            .append_batch(vec![NewEntry::new(
                EntryKind::Credit,
                "a",
                1,
                "USD",
                "plays",
            )
            .with_reference("royalty/3/x")])
            .unwrap();
        drop(l);
        let key = f.key();
        let err = LedgerPlugin::open(
            &f.db,
            key,
            Some(r.royalty().clone()),
            LedgerPluginConfig::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("reset or replaced"), "{err}");
        let bad = LedgerPluginConfig {
            max_batch_entries: 0,
            anchor: None,
        };
        assert!(bad.validate().is_err());
        let anchor = AnchorConfig {
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id: 31337,
            key: "/etc/mhc/anchor.key".into(),
            interval_s: 300,
            confirmations: 2,
        };
        anchor.validate().unwrap();
        for (bad, field) in [
            (
                AnchorConfig {
                    rpc_url: "127.0.0.1:8545".into(),
                    ..anchor.clone()
                },
                "rpc_url",
            ),
            (
                AnchorConfig {
                    chain_id: 0,
                    ..anchor.clone()
                },
                "chain_id",
            ),
            (
                AnchorConfig {
                    interval_s: 0,
                    ..anchor.clone()
                },
                "interval_s",
            ),
            (
                AnchorConfig {
                    confirmations: 0,
                    ..anchor.clone()
                },
                "confirmations",
            ),
        ] {
            let config = LedgerPluginConfig {
                anchor: Some(bad),
                ..LedgerPluginConfig::default()
            };
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("ledger.anchor"), "{e}");
        }
    }

    #[test]
    fn admin_routes_serve_proofs_that_verify() {
        let f = Fixture::new();
        let r = f.royalty_plugin();
        let l = f.ledger_plugin(Some(r.royalty().clone()), LedgerPluginConfig::default());
        assert_eq!(admin_json(&l, "GET", "head", b"").0, 404);
        for i in 0..3 {
            r.royalty()
                .record_tip(&Tip {
                    reference: format!("t{i}"),
                    artist_id: "a".into(),
                    amount: Money::new(100, Currency::USD),
                    from: String::new(),
                })
                .unwrap();
            l.sync().unwrap();
        }
        let (_, status) = admin_json(&l, "GET", "status", b"");
        assert_eq!(
            (
                status["entries"].as_u64(),
                status["royalty_cursor"].as_u64()
            ),
            (Some(3), Some(3))
        );
        let (_, head) = admin_json(&l, "GET", "head", b"");
        assert_eq!(head["size"], 3);
        assert_eq!(
            admin_json(&l, "GET", "heads", b"")
                .1
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let (_, entry) = admin_json(&l, "GET", "entry/1", b"");
        assert_eq!(entry["entry"]["reference"], "royalty/2/t1");
        assert_eq!(admin_json(&l, "GET", "entry/9", b"").0, 404);
        assert_eq!(admin_json(&l, "GET", "entry/x", b"").0, 400);

        let (status, inc) = admin_json(&l, "GET", "inclusion/1?size=3", b"");
        assert_eq!(status, 200, "{inc}");
        let leaf = hex::decode(inc["leaf_bytes"].as_str().unwrap()).unwrap();
        let proof: Vec<[u8; 32]> = inc["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                hex::decode(h.as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap()
            })
            .collect();
        let root: [u8; 32] = hex::decode(inc["root"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(inc["head"]["root"], inc["root"]);
        verify_inclusion(&leaf, 1, 3, &proof, &root).unwrap();
        assert_eq!(admin_json(&l, "GET", "inclusion/1?size=9", b"").0, 400);

        let (status, cons) = admin_json(&l, "GET", "consistency?old=1&new=3", b"");
        assert_eq!(status, 200, "{cons}");
        assert_eq!(cons["proof"].as_array().unwrap().len(), 2);
        assert_eq!(admin_json(&l, "GET", "consistency", b"").0, 400);

        let export = l
            .admin(&AdminRequest::new("GET", "export"))
            .unwrap()
            .unwrap();
        crate::ledger::verify_export(&export.body, Some(l.with_ledger(Ledger::public_key)))
            .unwrap();
        let csv = l
            .admin(
                &AdminRequest::new("GET", "export")
                    .with_query("format", "csv")
                    .with_query("from_ms", "0"),
            )
            .unwrap()
            .unwrap();
        assert_eq!(csv.text().lines().count(), 4);
        let (_, v) = admin_json(&l, "POST", "verify", b"");
        assert_eq!(
            (v["ok"].as_bool(), v["entries"].as_u64()),
            (Some(true), Some(3))
        );
        assert!(l.admin(&AdminRequest::new("GET", "nope")).is_none());
    }
}
