//! [`PluginHost`]: builds the enabled plugins from the node's configuration, owns the durable
//! inbox of play reports and publications, delivers events to every plugin in order with
//! isolation (errors and panics are contained and counted), and routes admin requests.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ed25519_dalek::SigningKey;
use mhc_clock::Clock;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use super::admin::{AdminRequest, AdminResponse};
use super::error::PluginError;
use super::inbox::{Appended, DeadLetter, Inbox, StoredEvent};
use super::ledger_plugin::{LedgerPlugin, LedgerPluginConfig};
use super::royalty_plugin::RoyaltyPlugin;
use super::{ContentPublished, CoreEvent, Plugin};
use crate::report::{ReportError, SignedPlayReport};
use crate::royalty::RoyaltyConfig;

/// Events read from the inbox per page while catching a plugin up: bounds memory when a plugin
/// is far behind (after being enabled on an origin with a long history).
const DELIVERY_PAGE: usize = 256;

/// The `[plugins]` tables of the node's configuration, as the host needs them. The node
/// deserializes each `[plugins.<name>]` TOML table into its type (every field has a default, so
/// an empty table enables a plugin with defaults); `None` means disabled.
///
/// The ledger plugin records the royalty plugin's postings; enabled **without** royalty it still
/// opens the ledger and serves its admin routes (proofs, exports, verification) for entries
/// appended by other means ([`LedgerPlugin::append_external`]), and starts recording royalty
/// postings from the first one whenever royalty is enabled later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// `[plugins.royalty]`. Default: disabled.
    #[serde(default)]
    pub royalty: Option<RoyaltyConfig>,
    /// `[plugins.ledger]`. Default: disabled.
    #[serde(default)]
    pub ledger: Option<LedgerPluginConfig>,
}

/// What [`PluginHost::ingest_report`] did with a report. Both outcomes mean "durably held":
/// the node acknowledges and may delete the report from its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportOutcome {
    /// New: stored and flushed at `event_seq`, then delivered to the plugins.
    Accepted {
        /// Its position in the inbox.
        event_seq: u64,
    },
    /// Already received (a resend after a lost acknowledgement): nothing changed.
    Duplicate {
        /// Where the first copy is.
        event_seq: u64,
    },
}

impl ReportOutcome {
    /// The report's position in the inbox.
    pub fn event_seq(&self) -> u64 {
        match self {
            ReportOutcome::Accepted { event_seq } | ReportOutcome::Duplicate { event_seq } => {
                *event_seq
            }
        }
    }
}

/// What [`PluginHost::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishOutcome {
    /// New: stored at `event_seq` and delivered.
    Published {
        /// Its position in the inbox.
        event_seq: u64,
    },
    /// This content version was already published with the same data: nothing changed (so the
    /// node may announce every published version at startup).
    Unchanged {
        /// Where it is.
        event_seq: u64,
    },
}

/// One failed delivery (an error or a panic), as reported by a dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginFailure {
    /// The plugin.
    pub plugin: String,
    /// The event kind ([`CoreEvent::kind`]).
    pub event: String,
    /// The inbox position, for inbox events.
    pub event_seq: Option<u64>,
    /// The error or panic message.
    pub error: String,
    /// Whether the plugin panicked.
    pub panicked: bool,
    /// Whether the event will be delivered again on the next [`PluginHost::tick`] (otherwise it
    /// was dead-lettered, or was a tick or notification, which are not retried).
    pub retryable: bool,
}

/// The result of delivering events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchSummary {
    /// Successful deliveries (one per event per plugin).
    pub delivered: u64,
    /// Failed deliveries.
    pub failures: Vec<PluginFailure>,
}

/// Counters of one plugin since the host started, plus its delivery state, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStats {
    /// The plugin.
    pub name: String,
    /// Events delivered successfully.
    pub events: u64,
    /// Events on which the plugin returned an error.
    pub errors: u64,
    /// Events and admin requests on which the plugin panicked.
    pub panics: u64,
    /// Dead letters currently stored (persisted, not just since start).
    pub dead_letters: u64,
    /// Inbox seq of the last event delivered to it.
    pub cursor: u64,
    /// Inbox events not yet delivered to it.
    pub pending: u64,
    /// The last error or panic message.
    pub last_error: Option<String>,
}

/// One plugin and its delivery state.
#[derive(Debug)]
struct Slot {
    plugin: Arc<dyn Plugin>,
    name: &'static str,
    /// Last inbox seq delivered; the lock also serializes deliveries to this plugin, so events
    /// reach it one at a time and in order.
    cursor: Mutex<u64>,
    events: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plugin code never runs while a host lock is held by the panicking frame (calls are wrapped
    // in catch_unwind), so a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The origin's plugins, their durable inbox and their admin routes. Shared across threads
/// (`Send + Sync`): put it in an `Arc`.
#[derive(Debug)]
pub struct PluginHost {
    inbox: Inbox,
    slots: Vec<Slot>,
    royalty: Option<Arc<RoyaltyPlugin>>,
    ledger: Option<Arc<LedgerPlugin>>,
    clock: Clock,
}

impl PluginHost {
    /// Opens the plugins enabled in `config` on the node's `db` — royalty first, then ledger
    /// (signing tree heads with `signing_key`, normally the node key) — and recovers: every
    /// inbox event a plugin had not finished before a crash is delivered again, then a
    /// [`CoreEvent::Tick`] lets the ledger catch up with royalty postings made through admin
    /// routes. Failures during recovery are logged and counted, not fatal.
    ///
    /// With no plugin enabled the host still keeps the inbox, so reports are never lost while
    /// an operator decides; a plugin enabled later is delivered the whole history.
    ///
    /// # Errors
    /// [`PluginError::Royalty`] (invalid `[plugins.royalty]`, unreadable store),
    /// [`PluginError::Ledger`] (key mismatch, inconsistent store), [`PluginError::Config`]
    /// (invalid `[plugins.ledger]`), [`PluginError::Storage`].
    pub fn new(
        db: &sled::Db,
        signing_key: SigningKey,
        config: &PluginsConfig,
    ) -> Result<PluginHost, PluginError> {
        Self::with_clock(db, signing_key, config, Clock::system())
    }

    /// Like [`PluginHost::new`], with every time the plugins stamp (royalty bookings, ledger
    /// batches, the recovery tick) read from `clock`.
    ///
    /// # Errors
    /// As [`PluginHost::new`].
    pub fn with_clock(
        db: &sled::Db,
        signing_key: SigningKey,
        config: &PluginsConfig,
        clock: Clock,
    ) -> Result<PluginHost, PluginError> {
        Self::with_clock_and(db, signing_key, config, clock, |_| Ok(Vec::new()))
    }

    /// Like [`PluginHost::with_clock`], plus plugins built outside this crate (the node's
    /// `label` plugin), delivered after the shipped ones; `others` is given the royalty plugin,
    /// if enabled, to credit through.
    ///
    /// # Errors
    /// As [`PluginHost::new`], and whatever `others` returns.
    pub fn with_clock_and(
        db: &sled::Db,
        signing_key: SigningKey,
        config: &PluginsConfig,
        clock: Clock,
        others: impl FnOnce(Option<&Arc<RoyaltyPlugin>>) -> Result<Vec<Arc<dyn Plugin>>, PluginError>,
    ) -> Result<PluginHost, PluginError> {
        let royalty = config
            .royalty
            .clone()
            .map(|c| RoyaltyPlugin::open_with_clock(db, c, clock.clone()))
            .transpose()?
            .map(Arc::new);
        let ledger = config
            .ledger
            .as_ref()
            .map(|c| {
                LedgerPlugin::open_with_clock(
                    db,
                    signing_key,
                    royalty.as_ref().map(|r| r.royalty().clone()),
                    c.clone(),
                    clock.clone(),
                )
            })
            .transpose()?
            .map(Arc::new);
        let others = others(royalty.as_ref())?;
        Self::assemble(db, royalty, ledger, others, clock)
    }

    /// A host with the given plugins, in delivery order (for custom plugins and tests), and
    /// optionally the shipped ones first. Recovers as [`PluginHost::new`] does; its recovery
    /// tick reads the system clock (the plugins keep the clocks they were opened with).
    ///
    /// # Errors
    /// [`PluginError::Config`] for a plugin name that is not `[a-z0-9_-]{1,64}` or is used
    /// twice; [`PluginError::Storage`], [`PluginError::Corrupt`] from the inbox.
    pub fn with_plugins(
        db: &sled::Db,
        royalty: Option<Arc<RoyaltyPlugin>>,
        ledger: Option<Arc<LedgerPlugin>>,
        others: Vec<Arc<dyn Plugin>>,
    ) -> Result<PluginHost, PluginError> {
        Self::assemble(db, royalty, ledger, others, Clock::system())
    }

    fn assemble(
        db: &sled::Db,
        royalty: Option<Arc<RoyaltyPlugin>>,
        ledger: Option<Arc<LedgerPlugin>>,
        others: Vec<Arc<dyn Plugin>>,
        clock: Clock,
    ) -> Result<PluginHost, PluginError> {
        let inbox = Inbox::open(db)?;
        let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
        if let Some(r) = &royalty {
            plugins.push(r.clone());
        }
        if let Some(l) = &ledger {
            plugins.push(l.clone());
        }
        plugins.extend(others);
        let mut slots: Vec<Slot> = Vec::with_capacity(plugins.len());
        for plugin in plugins {
            let name = plugin.name();
            if !valid_name(name) || slots.iter().any(|s| s.name == name) {
                return Err(PluginError::Config {
                    plugin: name.to_string(),
                    problem: "plugin names must be unique and [a-z0-9_-]{1,64}".into(),
                });
            }
            slots.push(Slot {
                cursor: Mutex::new(inbox.cursor(name)?),
                plugin,
                name,
                events: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                panics: AtomicU64::new(0),
                last_error: Mutex::new(None),
            });
        }
        let host = PluginHost {
            inbox,
            slots,
            royalty,
            ledger,
            clock,
        };
        let summary = host.tick(host.clock.now_ms());
        info!(
            plugins = ?host.plugin_names(),
            redelivered = summary.delivered,
            failures = summary.failures.len(),
            "plugin host started"
        );
        Ok(host)
    }

    /// The clock the host and its shipped plugins read (for [`PluginHost::tick`]).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The enabled plugins' names, in delivery order.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.name).collect()
    }

    /// The royalty plugin, if enabled (for the CLI and for reads outside the admin routes).
    pub fn royalty(&self) -> Option<&Arc<RoyaltyPlugin>> {
        self.royalty.as_ref()
    }

    /// The ledger plugin, if enabled.
    pub fn ledger(&self) -> Option<&Arc<LedgerPlugin>> {
        self.ledger.as_ref()
    }

    /// Verifies and stores a report without delivering it: signature by `report.batch.node`,
    /// then de-duplication by `(node, seq)`, then membership, then one flushed write. A resend
    /// of a stored report is [`ReportOutcome::Duplicate`] even if its node has left the cluster
    /// since (acknowledging it is harmless and lets the node clear its outbox).
    ///
    /// Use [`PluginHost::ingest_report`] unless you deliver separately
    /// ([`PluginHost::deliver_pending`]), e.g. to acknowledge before the plugins run.
    ///
    /// # Errors
    /// Any check of [`SignedPlayReport::verify`]; [`ReportError::NotMember`] when `is_member`
    /// refuses the node; [`ReportError::SeqReused`] for another batch under a stored `(node,
    /// seq)`; [`ReportError::Storage`] (retryable: nothing was stored) or
    /// [`ReportError::Corrupt`].
    pub fn accept_report(
        &self,
        report: &SignedPlayReport,
        is_member: impl Fn(&[u8; 32]) -> bool,
    ) -> Result<ReportOutcome, ReportError> {
        report.verify()?;
        let node = report.batch.node;
        let seq = report.batch.seq;
        let key = Inbox::report_key(&node, seq);
        let event = StoredEvent::PlayReport(report.encode());
        let reused = || ReportError::SeqReused {
            node: hex::encode(node),
            seq,
        };
        if let Some((event_seq, digest)) = self.inbox.lookup(&key)? {
            if digest != event.digest() {
                return Err(reused());
            }
            debug!(node = %hex::encode(node), seq, event_seq, "duplicate play report");
            return Ok(ReportOutcome::Duplicate { event_seq });
        }
        if !is_member(&node) {
            return Err(ReportError::NotMember(hex::encode(node)));
        }
        match self.inbox.append(&key, &event)? {
            Appended::New(event_seq) => {
                debug!(node = %hex::encode(node), seq, event_seq, entries = report.batch.entries.len(), "play report accepted");
                Ok(ReportOutcome::Accepted { event_seq })
            }
            // Lost a race with a concurrent copy of the same report.
            Appended::Existing(event_seq) => Ok(ReportOutcome::Duplicate { event_seq }),
            Appended::Conflict(_) => Err(reused()),
        }
    }

    /// Verifies, de-duplicates and durably stores a node's play report (as
    /// [`PluginHost::accept_report`]), then delivers it — and anything else pending — to the
    /// plugins. Plugin failures do not change the outcome: the report is held by the inbox and
    /// failed deliveries are retried or dead-lettered (see the module docs).
    ///
    /// On `Ok` the node acknowledges and may delete the report from its outbox; on an error for
    /// which [`ReportError::is_retryable`] is true it keeps the report and resends later; on
    /// any other error resending the same bytes will fail again.
    ///
    /// # Errors
    /// As [`PluginHost::accept_report`].
    pub fn ingest_report(
        &self,
        report: SignedPlayReport,
        is_member: impl Fn(&[u8; 32]) -> bool,
    ) -> Result<ReportOutcome, ReportError> {
        let outcome = self.accept_report(&report, is_member)?;
        if let ReportOutcome::Accepted { .. } = outcome {
            self.deliver_pending();
        }
        Ok(outcome)
    }

    /// Records a published content version durably and delivers it. Idempotent by
    /// `(content_id, version)`.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] from [`ContentPublished::validate`];
    /// [`PluginError::Conflict`] when this version was published with other data;
    /// [`PluginError::Storage`], [`PluginError::Corrupt`].
    pub fn publish(&self, event: ContentPublished) -> Result<PublishOutcome, PluginError> {
        event.validate()?;
        let key = Inbox::publish_key(&event.content_id, event.version);
        let stored = StoredEvent::ContentPublished(event);
        match self.inbox.append(&key, &stored)? {
            Appended::New(event_seq) => {
                self.deliver_pending();
                Ok(PublishOutcome::Published { event_seq })
            }
            Appended::Existing(event_seq) => Ok(PublishOutcome::Unchanged { event_seq }),
            Appended::Conflict(event_seq) => Err(PluginError::Conflict(format!(
                "this content version was published with other data (inbox event {event_seq})"
            ))),
        }
    }

    /// Delivers every inbox event each plugin has not received yet, in order. A plugin that
    /// fails with a retryable error stops at that event (retried next time); other failures are
    /// dead-lettered and delivery goes on.
    pub fn deliver_pending(&self) -> DispatchSummary {
        let mut summary = DispatchSummary::default();
        for slot in &self.slots {
            self.catch_up(slot, &mut summary);
        }
        summary
    }

    /// Periodic work: [`PluginHost::deliver_pending`] (retrying held events), then a
    /// [`CoreEvent::Tick`] to every plugin. The node calls it every few seconds.
    pub fn tick(&self, now_ms: u64) -> DispatchSummary {
        let mut summary = self.deliver_pending();
        self.notify(&CoreEvent::Tick { now_ms }, None, &mut summary);
        summary
    }

    /// Answers `/admin/plugins/<plugin>/<req.path>`: 404 for an unknown plugin or route, the
    /// plugin's response otherwise (errors rendered by [`AdminResponse::from_error`], a panic as
    /// 500). After a successful non-`GET` request, the other plugins get a
    /// [`CoreEvent::StateChanged`] (so the ledger records postings a route booked).
    pub fn admin(&self, plugin: &str, req: &AdminRequest) -> AdminResponse {
        let Some(slot) = self.slots.iter().find(|s| s.name == plugin) else {
            return AdminResponse::from_error(&PluginError::UnknownPlugin(plugin.to_string()));
        };
        let response = match catch_unwind(AssertUnwindSafe(|| slot.plugin.admin(req))) {
            Ok(None) => AdminResponse::from_error(&PluginError::NotFound(format!(
                "no route {} {} in plugin {plugin}",
                req.method, req.path
            ))),
            Ok(Some(Ok(response))) => response,
            Ok(Some(Err(e))) => {
                debug!(plugin, path = %req.path, error = %e, "admin request failed");
                AdminResponse::from_error(&e)
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                slot.panics.fetch_add(1, Ordering::Relaxed);
                *lock(&slot.last_error) = Some(format!("admin panic: {message}"));
                error!(plugin, path = %req.path, panic = %message, "plugin panicked in admin request");
                AdminResponse::from_error(&PluginError::Panicked {
                    plugin: plugin.to_string(),
                    message,
                })
            }
        };
        if req.method != "GET" && (200..300).contains(&response.status) {
            let mut summary = DispatchSummary::default();
            self.notify(
                &CoreEvent::StateChanged { plugin: slot.name },
                Some(slot.name),
                &mut summary,
            );
        }
        response
    }

    /// Each plugin's counters and delivery state, in delivery order.
    pub fn stats(&self) -> Vec<PluginStats> {
        let last = self.inbox.last_seq().unwrap_or(0);
        self.slots
            .iter()
            .map(|s| {
                let cursor = *lock(&s.cursor);
                PluginStats {
                    name: s.name.to_string(),
                    events: s.events.load(Ordering::Relaxed),
                    errors: s.errors.load(Ordering::Relaxed),
                    panics: s.panics.load(Ordering::Relaxed),
                    dead_letters: self.inbox.dead_letter_count(s.name) as u64,
                    cursor,
                    pending: last.saturating_sub(cursor),
                    last_error: lock(&s.last_error).clone(),
                }
            })
            .collect()
    }

    /// The inbox seq of the last stored event (0 when empty).
    ///
    /// # Errors
    /// [`PluginError::Storage`], [`PluginError::Corrupt`].
    pub fn last_event_seq(&self) -> Result<u64, PluginError> {
        Ok(self.inbox.last_seq()?)
    }

    /// The events `plugin` failed on permanently.
    ///
    /// # Errors
    /// [`PluginError::UnknownPlugin`]; [`PluginError::Storage`], [`PluginError::Corrupt`].
    pub fn dead_letters(&self, plugin: &str) -> Result<Vec<DeadLetter>, PluginError> {
        let slot = self.slot(plugin)?;
        Ok(self.inbox.dead_letters(slot.name)?)
    }

    /// Delivers `plugin`'s dead letters again (after the operator fixed the cause, e.g. created
    /// a missing account); each one that succeeds is removed, each one that fails again stays
    /// with its new error.
    ///
    /// # Errors
    /// [`PluginError::UnknownPlugin`]; [`PluginError::Storage`], [`PluginError::Corrupt`].
    pub fn retry_dead_letters(&self, plugin: &str) -> Result<DispatchSummary, PluginError> {
        let slot = self.slot(plugin)?;
        // Holding the cursor lock keeps retries from interleaving with ordinary delivery.
        let _cursor = lock(&slot.cursor);
        let mut summary = DispatchSummary::default();
        for letter in self.inbox.dead_letters(slot.name)? {
            let stored = self.inbox.event(letter.event_seq)?;
            let result = match &stored {
                Some(event) => self.deliver_stored(slot, letter.event_seq, Ok(event.clone())),
                None => Err(failure(
                    slot.name,
                    &letter.event,
                    Some(letter.event_seq),
                    "event missing from the inbox".into(),
                    false,
                    false,
                )),
            };
            match result {
                Ok(()) => {
                    summary.delivered += 1;
                    self.inbox.remove_dead_letter(slot.name, letter.event_seq)?;
                    info!(
                        plugin = slot.name,
                        event_seq = letter.event_seq,
                        "dead letter delivered"
                    );
                }
                Err(f) => {
                    self.inbox.put_dead_letter(&DeadLetter {
                        error: f.error.clone(),
                        panicked: f.panicked,
                        attempts: letter.attempts.saturating_add(1),
                        ..letter
                    })?;
                    summary.failures.push(f);
                }
            }
        }
        Ok(summary)
    }

    fn slot(&self, plugin: &str) -> Result<&Slot, PluginError> {
        self.slots
            .iter()
            .find(|s| s.name == plugin)
            .ok_or_else(|| PluginError::UnknownPlugin(plugin.to_string()))
    }

    /// Delivers the inbox events after `slot`'s cursor, page by page.
    fn catch_up(&self, slot: &Slot, summary: &mut DispatchSummary) {
        let mut cursor = lock(&slot.cursor);
        loop {
            let page = match self.inbox.page_after(*cursor, DELIVERY_PAGE) {
                Ok(page) => page,
                Err(e) => {
                    let e = PluginError::from(e);
                    error!(plugin = slot.name, error = %e, "reading the plugin inbox failed");
                    summary.failures.push(failure(
                        slot.name,
                        "inbox",
                        None,
                        e.to_string(),
                        false,
                        true,
                    ));
                    return;
                }
            };
            if page.is_empty() {
                return;
            }
            for (seq, event) in page {
                let kind = event.as_ref().map_or("inbox", StoredEvent::kind);
                match self.deliver_stored(slot, seq, event) {
                    Ok(()) => summary.delivered += 1,
                    Err(f) if f.retryable => {
                        // Hold the cursor: this event, then the ones after it, next time.
                        summary.failures.push(f);
                        return;
                    }
                    Err(f) => {
                        let letter = DeadLetter {
                            plugin: slot.name.to_string(),
                            event_seq: seq,
                            event: kind.to_string(),
                            error: f.error.clone(),
                            panicked: f.panicked,
                            attempts: 1,
                        };
                        if let Err(e) = self.inbox.put_dead_letter(&letter) {
                            // Without its dead letter the event would be silently skipped: hold
                            // the cursor instead, and try again next time.
                            error!(plugin = slot.name, event_seq = seq, error = ?e, "storing a dead letter failed");
                            summary.failures.push(f);
                            return;
                        }
                        warn!(plugin = slot.name, event_seq = seq, error = %f.error, "event dead-lettered");
                        summary.failures.push(f);
                    }
                }
                *cursor = seq;
                if let Err(e) = self.inbox.set_cursor(slot.name, seq) {
                    // The in-memory cursor moved on; after a restart the event is delivered
                    // again, which plugins apply idempotently.
                    warn!(plugin = slot.name, event_seq = seq, error = ?e, "storing a delivery cursor failed");
                }
            }
        }
    }

    /// Decodes a stored event and delivers it to one plugin.
    fn deliver_stored(
        &self,
        slot: &Slot,
        seq: u64,
        event: Result<StoredEvent, String>,
    ) -> Result<(), PluginFailure> {
        let corrupt = |kind: &str, problem: String| {
            slot.errors.fetch_add(1, Ordering::Relaxed);
            failure(slot.name, kind, Some(seq), problem, false, false)
        };
        match event {
            Err(problem) => Err(corrupt("inbox", problem)),
            Ok(StoredEvent::ContentPublished(c)) => {
                self.call(slot, &CoreEvent::ContentPublished(&c), Some(seq))
            }
            Ok(StoredEvent::PlayReport(bytes)) => match SignedPlayReport::decode(&bytes) {
                Ok(report) => self.call(
                    slot,
                    &CoreEvent::PlayReport {
                        report: &report,
                        event_seq: seq,
                    },
                    Some(seq),
                ),
                Err(e) => Err(corrupt("play_report", format!("stored report: {e}"))),
            },
        }
    }

    /// Delivers a non-persisted event to every plugin but `except`.
    fn notify(&self, ev: &CoreEvent<'_>, except: Option<&str>, summary: &mut DispatchSummary) {
        for slot in self.slots.iter().filter(|s| Some(s.name) != except) {
            match self.call(slot, ev, None) {
                Ok(()) => summary.delivered += 1,
                Err(f) => summary.failures.push(f),
            }
        }
    }

    /// One delivery, isolated: errors and panics are counted, logged and returned.
    fn call(
        &self,
        slot: &Slot,
        ev: &CoreEvent<'_>,
        event_seq: Option<u64>,
    ) -> Result<(), PluginFailure> {
        let outcome = catch_unwind(AssertUnwindSafe(|| slot.plugin.on_event(ev)));
        let (message, panicked, retryable) = match outcome {
            Ok(Ok(())) => {
                slot.events.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(e)) => {
                slot.errors.fetch_add(1, Ordering::Relaxed);
                warn!(plugin = slot.name, event = ev.kind(), event_seq, error = %e, "plugin failed on event");
                (e.to_string(), false, e.is_retryable())
            }
            Err(payload) => {
                slot.panics.fetch_add(1, Ordering::Relaxed);
                let message = panic_message(payload.as_ref());
                error!(plugin = slot.name, event = ev.kind(), event_seq, panic = %message, "plugin panicked on event");
                (format!("panic: {message}"), true, false)
            }
        };
        *lock(&slot.last_error) = Some(message.clone());
        Err(failure(
            slot.name,
            ev.kind(),
            event_seq,
            message,
            panicked,
            // Ticks and notifications are not retried: the next one comes anyway.
            retryable && event_seq.is_some(),
        ))
    }
}

fn failure(
    plugin: &str,
    event: &str,
    event_seq: Option<u64>,
    error: String,
    panicked: bool,
    retryable: bool,
) -> PluginFailure {
    PluginFailure {
        plugin: plugin.to_string(),
        event: event.to_string(),
        event_seq,
        error,
        panicked,
        retryable,
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
