//! [`RoyaltyPlugin`]: the `royalty` plugin — credits artists from play reports through the
//! [`Royalty`] module, and exposes the module's inputs and outputs as admin routes.
//!
//! Play reports name content, not artists: the plugin keeps a content → artist map from
//! [`CoreEvent::ContentPublished`] in its own tree ([`CONTENT_TREE`]), and books each report with
//! [`Royalty::record_usage`] under the reference `play:<node hex>:<seq>`, so a report delivered
//! again after a crash is applied once. Entries for content it has never seen published are
//! skipped and logged (there is no artist to credit).
//!
//! Admin routes, under `/admin/plugins/royalty/` (JSON bodies and answers unless noted):
//!
//! | route | does |
//! |---|---|
//! | `GET accounts`, `GET accounts/<artist>` | list accounts / one account |
//! | `POST accounts` | create or update an [`ArtistAccount`] (201 created, 200 updated) |
//! | `POST tips`, `POST subscriptions`, `POST adjustments` | book a [`Tip`], [`Subscription`], [`Adjustment`]; answer the [`Receipt`] |
//! | `GET splits`, `GET splits/<content>`, `POST splits`, `DELETE splits/<content>` | split sheets |
//! | `POST dsp` | import a DSP statement; the body is the CSV file |
//! | `GET balances`, `GET balance/<artist>` | balances |
//! | `GET statement/<artist>/<YYYY-MM>?format=json\|csv` | one artist's monthly statement |
//! | `GET statements/<YYYY-MM>` | every artist's statement for the month |
//! | `GET revenue?artist=&from=YYYY-MM&to=YYYY-MM&format=json\|csv` | revenue breakdown |
//! | `POST payouts/<stripe\|bank\|crypto>?as_of_ms=&format=file\|json` | make (or fetch) the payout batch; answers its export file (default) or the batch |
//! | `GET payouts/<batch id>` | a batch made earlier |
//! | `GET content`, `GET content/<content>` | the content → artist map |
//! | `GET postings?since=&limit=` | the posting journal |

use std::collections::BTreeMap;
use std::sync::Arc;

use mhc_clock::Clock;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::admin::{AdminRequest, AdminResponse};
use super::error::PluginError;
use super::{ContentPublished, CoreEvent, Plugin};
use crate::report::SignedPlayReport;
use crate::royalty::{
    Adjustment, ArtistAccount, Month, PayoutMethodKind, Receipt, RevenueQuery, Royalty,
    RoyaltyConfig, RoyaltyError, SplitSheet, Subscription, Tip, UsageEntry,
};

/// The plugin's name, and its `[plugins.royalty]` table.
pub const ROYALTY_PLUGIN_NAME: &str = "royalty";

/// Content id → postcard([`ContentRecord`]) of the latest published version.
pub const CONTENT_TREE: &str = "plugins/royalty/content";

/// Largest page of `GET postings`.
const MAX_POSTINGS_LIMIT: usize = 1_000;

/// What the plugin knows of a published content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRecord {
    /// The artist its plays are credited to (split sheets may divide them further).
    pub artist_id: String,
    /// The latest version published.
    pub version: u64,
    /// Its title.
    pub title: String,
}

/// The `royalty` plugin. Cheap to share: the royalty state is behind an `Arc` (the ledger plugin
/// holds it too, to read the posting journal).
#[derive(Debug)]
pub struct RoyaltyPlugin {
    royalty: Arc<Royalty>,
    content: sled::Tree,
}

fn decode_record(content_id: &str, bytes: &[u8]) -> Result<ContentRecord, PluginError> {
    postcard::from_bytes(bytes)
        .map_err(|e| PluginError::Corrupt(format!("{CONTENT_TREE} record {content_id:?}: {e}")))
}

fn month(s: &str) -> Result<Month, PluginError> {
    s.parse()
        .map_err(|e| PluginError::BadRequest(format!("month {s:?}: {e}")))
}

fn payout_kind(s: &str) -> Option<PayoutMethodKind> {
    match s {
        "stripe" => Some(PayoutMethodKind::Stripe),
        "bank" => Some(PayoutMethodKind::Bank),
        "crypto" => Some(PayoutMethodKind::Crypto),
        _ => None,
    }
}

impl RoyaltyPlugin {
    /// Opens the royalty state in `db` with `config` (system clock) and the content map.
    ///
    /// # Errors
    /// [`PluginError::Royalty`] for an invalid config or an unreadable store;
    /// [`PluginError::Storage`].
    pub fn open(db: &sled::Db, config: RoyaltyConfig) -> Result<Self, PluginError> {
        Self::open_with_clock(db, config, Clock::system())
    }

    /// Like [`RoyaltyPlugin::open`], with bookings (and the default payout cut-off) dated by
    /// `clock`.
    ///
    /// # Errors
    /// As [`RoyaltyPlugin::open`].
    pub fn open_with_clock(
        db: &sled::Db,
        config: RoyaltyConfig,
        clock: Clock,
    ) -> Result<Self, PluginError> {
        Self::with_royalty(db, Arc::new(Royalty::open_with_clock(db, config, clock)?))
    }

    /// The plugin around an already opened [`Royalty`] (tests inject a clock this way).
    ///
    /// # Errors
    /// [`PluginError::Storage`] when the content tree cannot be opened.
    pub fn with_royalty(db: &sled::Db, royalty: Arc<Royalty>) -> Result<Self, PluginError> {
        Ok(RoyaltyPlugin {
            royalty,
            content: db.open_tree(CONTENT_TREE)?,
        })
    }

    /// The royalty accounts (for reads and inputs outside the admin routes).
    pub fn royalty(&self) -> &Arc<Royalty> {
        &self.royalty
    }

    /// What the plugin knows of `content_id`.
    ///
    /// # Errors
    /// [`PluginError::Storage`], [`PluginError::Corrupt`].
    pub fn content(&self, content_id: &str) -> Result<Option<ContentRecord>, PluginError> {
        self.content
            .get(content_id.as_bytes())?
            .map(|v| decode_record(content_id, &v))
            .transpose()
    }

    /// The whole content map, by content id.
    ///
    /// # Errors
    /// [`PluginError::Storage`], [`PluginError::Corrupt`].
    pub fn contents(&self) -> Result<BTreeMap<String, ContentRecord>, PluginError> {
        self.content
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let id = String::from_utf8_lossy(&k).into_owned();
                let record = decode_record(&id, &v)?;
                Ok((id, record))
            })
            .collect()
    }

    /// Records a publication: the content's artist becomes the one of its latest version. An
    /// older version delivered late changes nothing.
    ///
    /// # Errors
    /// [`PluginError::Storage`], [`PluginError::Corrupt`].
    pub fn record_publication(&self, ev: &ContentPublished) -> Result<(), PluginError> {
        let key = ev.content_id.as_bytes();
        if let Some(existing) = self.content(&ev.content_id)? {
            if existing.version > ev.version {
                return Ok(());
            }
        }
        let record = ContentRecord {
            artist_id: ev.artist_id.clone(),
            version: ev.version,
            title: ev.title.clone(),
        };
        let bytes = postcard::to_allocvec(&record).expect("postcard encoding");
        // Not flushed: the inbox holds the publication, and re-delivers it after a crash.
        self.content.insert(key, bytes)?;
        Ok(())
    }

    /// Books a play report: its entries, mapped to their artists, as one usage input under the
    /// report's reference. Returns `None` when nothing was booked (no entry with a known
    /// content, or a report already booked).
    ///
    /// # Errors
    /// [`PluginError::Royalty`] (storage errors are retryable; the input is all or nothing);
    /// [`PluginError::Storage`], [`PluginError::Corrupt`] reading the content map.
    pub fn apply_report(&self, report: &SignedPlayReport) -> Result<Option<Receipt>, PluginError> {
        let batch = &report.batch;
        let reference = batch.reference();
        let mut artists: BTreeMap<&str, Option<String>> = BTreeMap::new();
        let mut usage = Vec::with_capacity(batch.entries.len());
        let mut unknown = Vec::new();
        for e in &batch.entries {
            if !artists.contains_key(e.content_id.as_str()) {
                let artist = self.content(&e.content_id)?.map(|r| r.artist_id);
                artists.insert(&e.content_id, artist);
            }
            match &artists[e.content_id.as_str()] {
                Some(artist_id) => usage.push(UsageEntry {
                    content_id: e.content_id.clone(),
                    artist_id: artist_id.clone(),
                    country: e.country.clone(),
                    seconds_ms: e.seconds_ms,
                    plays: e.plays,
                }),
                None => unknown.push(e.content_id.as_str()),
            }
        }
        if !unknown.is_empty() {
            warn!(reference, unknown = ?unknown, "play report entries for unpublished content skipped");
        }
        if usage.is_empty() {
            return Ok(None);
        }
        match self.royalty.record_usage(
            &reference,
            batch.period_start_ms,
            batch.period_end_ms,
            &usage,
        ) {
            Ok(receipt) => {
                debug!(
                    reference,
                    postings = receipt.postings.len(),
                    replayed = receipt.replayed,
                    "play report booked"
                );
                Ok(Some(receipt))
            }
            // The host de-duplicates reports, so a used reference means this report was booked
            // before a crash and the content map has changed since (a republished artist): the
            // first booking stands. Failing would only dead-letter a report already counted.
            Err(RoyaltyError::ReferenceReused { .. }) => {
                warn!(
                    reference,
                    "play report was already booked with other artists; first booking kept"
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn route(&self, req: &AdminRequest) -> Result<Option<AdminResponse>, PluginError> {
        let segments = req.segments()?;
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let r = &self.royalty;
        let response = match (req.method.as_str(), seg.as_slice()) {
            ("GET", ["accounts"]) => AdminResponse::ok(&r.accounts()?),
            ("GET", ["accounts", artist]) => match r.account(artist)? {
                Some(a) => AdminResponse::ok(&a),
                None => return Err(PluginError::NotFound(format!("account {artist:?}"))),
            },
            ("POST", ["accounts"]) => {
                let account: ArtistAccount = req.json_body()?;
                if r.account(&account.artist_id)?.is_some() {
                    let previous = r.update_account(account)?;
                    AdminResponse::ok(&serde_json::json!({ "updated": true, "previous": previous }))
                } else {
                    r.create_account(account)?;
                    AdminResponse::json(201, &serde_json::json!({ "created": true }))
                }
            }
            ("POST", ["tips"]) => AdminResponse::ok(&r.record_tip(&req.json_body::<Tip>()?)?),
            ("POST", ["subscriptions"]) => {
                AdminResponse::ok(&r.record_subscription(&req.json_body::<Subscription>()?)?)
            }
            ("POST", ["adjustments"]) => {
                AdminResponse::ok(&r.record_adjustment(&req.json_body::<Adjustment>()?)?)
            }
            ("GET", ["splits"]) => AdminResponse::ok(&r.split_sheets()?),
            ("GET", ["splits", content]) => match r.split_sheet(content)? {
                Some(s) => AdminResponse::ok(&s),
                None => return Err(PluginError::NotFound(format!("split sheet {content:?}"))),
            },
            ("POST", ["splits"]) => {
                let previous = r.set_split_sheet(req.json_body::<SplitSheet>()?)?;
                AdminResponse::ok(&serde_json::json!({ "previous": previous }))
            }
            ("DELETE", ["splits", content]) => {
                let removed = r.remove_split_sheet(content)?;
                AdminResponse::ok(&serde_json::json!({ "removed": removed }))
            }
            ("POST", ["dsp"]) => AdminResponse::ok(&r.import_dsp_statement(&req.body)?),
            ("GET", ["balances"]) => AdminResponse::ok(&r.balances()?),
            ("GET", ["balance", artist]) => AdminResponse::ok(&r.balance(artist)?),
            ("GET", ["statement", artist, period]) => {
                let statement = r.statement(artist, month(period)?)?;
                if req.wants_csv()? {
                    AdminResponse::csv(statement.to_csv())
                } else {
                    AdminResponse::bytes("application/json", statement.to_json())
                }
            }
            ("GET", ["statements", period]) => AdminResponse::ok(&r.statements(month(period)?)?),
            ("GET", ["revenue"]) => {
                let query = RevenueQuery {
                    artist_id: req.param("artist").map(str::to_string),
                    from: req.param("from").map(month).transpose()?,
                    to: req.param("to").map(month).transpose()?,
                };
                let breakdown = r.revenue_breakdown(&query)?;
                if req.wants_csv()? {
                    AdminResponse::csv(breakdown.to_csv())
                } else {
                    AdminResponse::ok(&breakdown)
                }
            }
            ("POST", ["payouts", method]) => {
                let kind = payout_kind(method).ok_or_else(|| {
                    PluginError::NotFound(format!(
                        "payout method {method:?}: expected stripe, bank or crypto"
                    ))
                })?;
                let as_of_ms = req
                    .param_parsed::<u64>("as_of_ms")?
                    .unwrap_or_else(|| r.clock().now_ms());
                let batch = r.create_payout_batch(kind, as_of_ms)?;
                match req.param("format") {
                    None | Some("file") => {
                        AdminResponse::bytes(&batch.export.media_type, batch.export.content)
                    }
                    Some("json") => AdminResponse::ok(&batch),
                    Some(other) => {
                        return Err(PluginError::BadRequest(format!(
                            "format={other:?}: expected file or json"
                        )))
                    }
                }
            }
            ("GET", ["payouts", id]) => match r.payout_batch(id)? {
                Some(b) => AdminResponse::ok(&b),
                None => return Err(PluginError::NotFound(format!("payout batch {id:?}"))),
            },
            ("GET", ["content"]) => AdminResponse::ok(&self.contents()?),
            ("GET", ["content", id]) => match self.content(id)? {
                Some(c) => AdminResponse::ok(&c),
                None => return Err(PluginError::NotFound(format!("content {id:?}"))),
            },
            ("GET", ["postings"]) => {
                let since = req.param_parsed::<u64>("since")?.unwrap_or(0);
                let limit = req
                    .param_parsed::<usize>("limit")?
                    .unwrap_or(100)
                    .min(MAX_POSTINGS_LIMIT);
                AdminResponse::ok(&r.postings_since(since, limit)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(response))
    }
}

impl Plugin for RoyaltyPlugin {
    fn name(&self) -> &'static str {
        ROYALTY_PLUGIN_NAME
    }

    fn on_event(&self, ev: &CoreEvent<'_>) -> Result<(), PluginError> {
        match ev {
            CoreEvent::ContentPublished(c) => self.record_publication(c),
            CoreEvent::PlayReport { report, .. } => self.apply_report(report).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn admin(&self, req: &AdminRequest) -> Option<Result<AdminResponse, PluginError>> {
        self.route(req).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{admin_json, published, Fixture};
    use super::*;
    use crate::report::tests::{play, report};
    use crate::royalty::{Balance, Currency, Money, PayoutMethod};

    fn account(artist: &str) -> ArtistAccount {
        ArtistAccount {
            artist_id: artist.into(),
            name: format!("Artist {artist}"),
            tax_country: "NZ".into(),
            payout_method: PayoutMethod::Crypto {
                network: "ethereum".into(),
                address: "0x52908400098527886e0f7030069857d2e4169ee7".into(),
            },
        }
    }

    #[test]
    fn reports_are_credited_to_the_published_artist() {
        let f = Fixture::new();
        let p = f.royalty_plugin();
        p.record_publication(&published("song", 1, "ar-1")).unwrap();
        let r = report(
            1,
            1,
            vec![play("song", "*", 0, 10), play("unknown", "*", 0, 99)],
        );
        let receipt = p.apply_report(&r).unwrap().unwrap();
        // Default rate: 300,000 µ/play = 0.3 minor units; 10 plays = 3 units.
        assert_eq!(receipt.postings.len(), 1);
        assert_eq!(receipt.postings[0].account, "ar-1");
        assert_eq!(receipt.postings[0].amount_minor, 3);
        assert_eq!(receipt.reference, r.reference());
        // Delivered again: the same booking, nothing new.
        let again = p.apply_report(&r).unwrap().unwrap();
        assert!(again.replayed);
        // Only unknown content: nothing to book.
        assert!(p
            .apply_report(&report(1, 2, vec![play("nope", "*", 0, 5)]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_latest_version_decides_the_artist() {
        let f = Fixture::new();
        let p = f.royalty_plugin();
        p.record_publication(&published("song", 2, "new")).unwrap();
        p.record_publication(&published("song", 1, "old")).unwrap();
        assert_eq!(p.content("song").unwrap().unwrap().artist_id, "new");
        p.record_publication(&published("song", 3, "newest"))
            .unwrap();
        assert_eq!(p.contents().unwrap()["song"].version, 3);
    }

    #[test]
    fn a_rebooked_report_with_another_artist_keeps_the_first_booking() {
        let f = Fixture::new();
        let p = f.royalty_plugin();
        p.record_publication(&published("song", 1, "a")).unwrap();
        let r = report(1, 1, vec![play("song", "*", 0, 10)]);
        p.apply_report(&r).unwrap().unwrap();
        p.record_publication(&published("song", 2, "b")).unwrap();
        assert!(p.apply_report(&r).unwrap().is_none());
        let balances: Vec<Balance> = p.royalty().balances().unwrap();
        assert_eq!(balances.len(), 1);
        assert_eq!(balances[0].artist_id, "a");
    }

    #[test]
    fn admin_routes_round_trip() {
        let f = Fixture::new();
        let p = f.royalty_plugin();
        let acct = account("ar-1");
        let body = serde_json::to_vec(&acct).unwrap();
        let (status, v) = admin_json(&p, "POST", "accounts", &body);
        assert_eq!((status, v["created"].as_bool()), (201, Some(true)));
        let mut renamed = acct.clone();
        renamed.name = "Renamed".into();
        let (status, v) = admin_json(
            &p,
            "POST",
            "accounts",
            &serde_json::to_vec(&renamed).unwrap(),
        );
        assert_eq!((status, v["updated"].as_bool()), (200, Some(true)));
        let (_, v) = admin_json(&p, "GET", "accounts/ar-1", b"");
        assert_eq!(v["name"], "Renamed");
        assert_eq!(admin_json(&p, "GET", "accounts/nobody", b"").0, 404);
        assert_eq!(
            admin_json(&p, "GET", "accounts", b"")
                .1
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let tip = Tip {
            reference: "ch_1".into(),
            artist_id: "ar-1".into(),
            amount: Money::new(2_000, Currency::USD),
            from: "fan".into(),
        };
        let (status, v) = admin_json(&p, "POST", "tips", &serde_json::to_vec(&tip).unwrap());
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["postings"][0]["amount_minor"], 2_000);
        let (_, v) = admin_json(&p, "GET", "balance/ar-1", b"");
        assert_eq!(v[0]["pending_minor"], 2_000);
        assert_eq!(
            admin_json(&p, "GET", "balances", b"")
                .1
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let (status, v) = admin_json(&p, "POST", "tips", b"{\"reference\":");
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("request body"));

        let sheet = serde_json::json!({
            "content_id": "duet",
            "shares": [{"artist_id": "a", "share_bps": 5000}, {"artist_id": "b", "share_bps": 5000}]
        });
        let (status, _) = admin_json(&p, "POST", "splits", sheet.to_string().as_bytes());
        assert_eq!(status, 200);
        assert_eq!(
            admin_json(&p, "GET", "splits/duet", b"").1["content_id"],
            "duet"
        );
        assert_eq!(
            admin_json(&p, "GET", "splits", b"")
                .1
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let (_, v) = admin_json(&p, "DELETE", "splits/duet", b"");
        assert_eq!(v["removed"]["content_id"], "duet");
        assert_eq!(admin_json(&p, "GET", "splits/duet", b"").0, 404);

        let now_ms = p.royalty().clock().now_ms();
        let month = Month::from_ms(now_ms).to_string();
        let req = AdminRequest::new("GET", format!("statement/ar-1/{month}"));
        let resp = p.admin(&req).unwrap().unwrap();
        assert_eq!(resp.content_type, "application/json");
        let v: serde_json::Value = resp.json_body().unwrap();
        assert_eq!(v["currencies"][0]["earned_minor"], 2_000);
        let resp = p
            .admin(&req.clone().with_query("format", "csv"))
            .unwrap()
            .unwrap();
        assert!(
            resp.text().starts_with("artist_id,period,"),
            "{}",
            resp.text()
        );
        assert_eq!(admin_json(&p, "GET", "statement/ar-1/2025-13", b"").0, 400);
        let (_, v) = admin_json(&p, "GET", &format!("statements/{month}"), b"");
        assert_eq!(v.as_array().unwrap().len(), 1);
        let (_, v) = admin_json(&p, "GET", "revenue?artist=ar-1", b"");
        assert_eq!(v["by_source"][0][0], "tips");

        // Payout: the export file by default, the batch as JSON on request (same batch id).
        let req = AdminRequest::new("POST", "payouts/crypto")
            .with_query("as_of_ms", (now_ms + 1).to_string());
        let file = p.admin(&req).unwrap().unwrap();
        assert_eq!(
            (file.status, file.content_type.as_str()),
            (200, "application/json")
        );
        assert!(
            file.text()
                .contains("0x52908400098527886e0f7030069857d2e4169ee7"),
            "{}",
            file.text()
        );
        let batch = p
            .admin(&req.clone().with_query("format", "json"))
            .unwrap()
            .unwrap();
        let v: serde_json::Value = batch.json_body().unwrap();
        assert_eq!(v["replayed"], true);
        let id = v["id"].as_str().unwrap().to_string();
        assert_eq!(
            admin_json(&p, "GET", &format!("payouts/{id}"), b"").1["id"],
            id
        );
        assert_eq!(admin_json(&p, "POST", "payouts/cheque", b"").0, 404);
        assert_eq!(
            admin_json(&p, "GET", "balance/ar-1", b"").1[0]["pending_minor"],
            0
        );

        let (_, v) = admin_json(&p, "GET", "postings?since=0&limit=10", b"");
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert!(p.admin(&AdminRequest::new("GET", "nothing/here")).is_none());
        assert!(p.admin(&AdminRequest::new("PUT", "accounts")).is_none());
    }

    #[test]
    fn dsp_import_and_content_routes() {
        let f = Fixture::new();
        let p = f.royalty_plugin();
        p.record_publication(&published("song", 1, "ar-9")).unwrap();
        let (_, v) = admin_json(&p, "GET", "content/song", b"");
        assert_eq!(v["artist_id"], "ar-9");
        assert_eq!(
            admin_json(&p, "GET", "content", b"").1["song"]["version"],
            1
        );
        assert_eq!(admin_json(&p, "GET", "content/other", b"").0, 404);
        let csv = format!(
            "{}\n2025-03,spotify,song,ar-9,US,10,123,USD\n",
            crate::royalty::DSP_COLUMNS.join(",")
        );
        let (status, v) = admin_json(&p, "POST", "dsp", csv.as_bytes());
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["lines"], 1);
        let (status, v) = admin_json(&p, "POST", "dsp", b"garbage");
        assert_eq!(status, 400, "{v}");
    }
}
