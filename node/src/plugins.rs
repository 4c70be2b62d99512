//! The origin's plugins inside the daemon: the plugin host (royalty, ledger, label) is opened when
//! the origin may write (at start for a lone origin; at each promotion for one that elects its
//! primary: a standby's books are written by replication underneath, and the host keeps state
//! of them in memory, so it opens on them only once they are this origin's to write), told about every published version, fed the play reports nodes send over QUIC, ticked
//! every few seconds, and reached by operators at `/admin/plugins/<name>/...` on the admin
//! socket (or on the viewer plane with `http.admin_token`).
//!
//! Every origin keeps a play-report inbox, even with no plugin enabled: a plugin enabled later
//! receives the whole history, and nodes never drop reports an origin could have kept.

use std::sync::{Arc, Weak};
use std::time::Duration;

use mhc_chain::{Anchoring, CryptoPayouts, PayoutBooks};
use mhc_label::{LabelConfig, LabelPlugin, MediaLibrary, TrackMedia};
use mhc_manifest::{ContentId, MediaKind, SegmentFormat};
use mhc_origin::ledger::SignedTreeHead;
use mhc_origin::plugin::{AdminRequest, AdminResponse, ContentPublished, Plugin, ReportOutcome};
use mhc_origin::{PlayReportBatch, PluginHost, PluginsConfig, ReportError, SignedPlayReport};
use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio::sync::watch;

use crate::core::catalog::Published;
use crate::core::metrics::{fixed_family, Metrics, OutcomeLabel, ReasonLabel};
use crate::core::writes::{NotPrimary, SYNC_TIMEOUT};
use crate::core::Core;
use crate::role::{role_of, Mode, RolePolicy};

/// How often the host is ticked (retries of held deliveries, ledger catch-up).
const TICK: Duration = Duration::from_secs(2);

/// What became of one play-report batch.
#[derive(Debug)]
pub enum Outcome {
    /// Stored by the origin: the sender deletes it.
    Acked,
    /// Refused for good (it would be refused again): the sender deletes it, counts it, says why.
    Refused(String),
    /// Try again later.
    Later(String),
}

/// The origin's plugin host as the node's planes reach it.
#[derive(Debug)]
pub struct Plugins {
    core: Arc<Core>,
    config: PluginsConfig,
    /// `[plugins.label]`, if enabled (a plugin of its own crate, built beside the host's).
    label: Option<LabelConfig>,
    /// The host while open, and the epoch it was opened in.
    host: Arc<HostSlot>,
    /// Held while the host is opened, so it is opened once.
    opening: Mutex<()>,
    /// The label plugin of the open host, for its metrics.
    label_plugin: Arc<RwLock<Weak<LabelPlugin>>>,
    /// The ledger's anchoring (`[plugins.ledger.anchor]`) while the host is open.
    anchoring: AnchoringSlot,
    /// Crypto payouts on chain (`[plugins.royalty.crypto]`) while the host is open, with the
    /// books they write to.
    crypto: RwLock<Option<OnChainPayouts>>,
    /// The runtime the anchoring task runs on (the host opens on blocking threads).
    runtime: tokio::runtime::Handle,
    /// Play reports received, by outcome.
    pub inbox: InboxMetrics,
}

/// The `[plugins.*]` tables of `config`, parsed and checked: every field of the royalty, ledger
/// and label tables, and the key files of `[plugins.ledger.anchor]` and `[plugins.royalty.crypto]`
/// (read now, not first at a promotion hours later). `mhc-node check-config` runs it too.
///
/// # Errors
/// The first problem, naming its table and field.
pub fn plugin_tables(
    config: &mhc_config::Config,
) -> anyhow::Result<(PluginsConfig, Option<LabelConfig>)> {
    fn table<T: serde::de::DeserializeOwned>(
        name: &str,
        t: Option<&toml::Table>,
    ) -> anyhow::Result<Option<T>> {
        t.cloned()
            .map(|t| toml::Value::Table(t).try_into())
            .transpose()
            .map_err(|e| anyhow::anyhow!("[plugins.{name}]: {e}"))
    }
    let royalty: Option<mhc_origin::royalty::RoyaltyConfig> =
        table("royalty", config.plugins.royalty.as_ref())?;
    let ledger: Option<mhc_origin::plugin::LedgerPluginConfig> =
        table("ledger", config.plugins.ledger.as_ref())?;
    let label: Option<LabelConfig> = table("label", config.plugins.label.as_ref())?;
    if let Some(royalty) = &royalty {
        // Its errors name the field in full (`plugins.royalty.<field>`).
        royalty.validate()?;
        if let Some(crypto) = &royalty.crypto {
            mhc_chain::Account::load(&crypto.key, crypto.chain_id)
                .map_err(|e| anyhow::anyhow!("[plugins.royalty.crypto] {e}"))?;
        }
    }
    if let Some(ledger) = &ledger {
        ledger.validate()?;
        if let Some(anchor) = &ledger.anchor {
            mhc_chain::Account::load(&anchor.key, anchor.chain_id)
                .map_err(|e| anyhow::anyhow!("[plugins.ledger.anchor] {e}"))?;
        }
    }
    if let Some(label) = &label {
        label.validate()?;
    }
    Ok((PluginsConfig { royalty, ledger }, label))
}

/// Answers `/admin/plugins/<name>/<target>`: the plugin's admin route at an origin, `404`
/// elsewhere.
///
/// A body up to [`mhc_origin::plugin::MAX_ADMIN_BODY_BYTES`] is read into memory; a larger one
/// (a DSP's sales report) is spooled to a file in the data directory, removed after the
/// answer, up to [`mhc_origin::plugin::MAX_SPOOLED_BODY_BYTES`].
pub async fn admin_route<B>(
    plugins: Option<&Arc<Plugins>>,
    method: &str,
    target: &str,
    body: B,
) -> AdminResponse
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(plugins) = plugins else {
        return AdminResponse::error(404, "plugins run at the origin only");
    };
    let spool_dir = plugins.core.config.data_dir.clone();
    match crate::http::read_or_spool(
        body,
        mhc_origin::plugin::MAX_ADMIN_BODY_BYTES,
        mhc_origin::plugin::MAX_SPOOLED_BODY_BYTES,
        &spool_dir,
    )
    .await
    {
        Ok((bytes, spooled)) => plugins.admin(method, target, bytes, spooled).await,
        Err(e) => AdminResponse::error(413, &format!("request body: {e}")),
    }
}

/// Play reports received by this origin, by outcome.
#[derive(Debug)]
pub struct InboxMetrics {
    /// Stored (new).
    pub accepted: Counter,
    /// Resends of stored reports (acknowledged again, no effect).
    pub duplicate: Counter,
    /// Refused: bad signature, not a member, malformed, sequence reused.
    pub rejected: Counter,
    /// Not stored now, to be resent (storage trouble).
    pub deferred: Counter,
    /// The refused ones by reason (`mhc_reports_rejected_total{reason}`).
    rejected_by: Family<ReasonLabel, Counter>,
}

impl InboxMetrics {
    /// The counters, registered with `metrics`.
    fn new(metrics: &Metrics) -> Self {
        let (received, [accepted, duplicate, rejected, deferred]) = fixed_family(
            ["accepted", "duplicate", "rejected", "deferred"]
                .map(|outcome| OutcomeLabel { outcome }),
        );
        metrics.register(
            "mhc_reports_received",
            "Play reports received by this origin, by outcome",
            received,
        );
        let rejected_by = Family::default();
        metrics.register(
            "mhc_reports_rejected",
            "Play reports refused by this origin, by reason (never credited)",
            rejected_by.clone(),
        );
        Self {
            accepted,
            duplicate,
            rejected,
            deferred,
            rejected_by,
        }
    }

    /// Counts one refused report.
    fn reject(&self, reason: &'static str) {
        self.rejected.inc();
        self.rejected_by
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

/// The host as the plugins hold it: open while this origin writes.
type HostSlot = RwLock<Option<(u64, Arc<PluginHost>)>>;

/// Crypto payouts on chain, and the books they write to.
type OnChainPayouts = (Arc<CryptoPayouts>, Arc<dyn PayoutBooks>);

/// The ledger's anchoring while the host is open.
type AnchoringSlot = Arc<RwLock<Option<Arc<Anchoring>>>>;

/// `mhc_ledger_anchor_*`, read from the anchoring at every scrape.
#[derive(Debug)]
struct AnchorMetrics(AnchoringSlot);

impl Collector for AnchorMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(anchoring) = self.0.read().clone() else {
            return Ok(());
        };
        let stats = anchoring.stats();
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        if let Some(size) = stats.last_anchored_size {
            let family = encoder.encode_descriptor(
                "mhc_ledger_anchor_last_size",
                "Tree size of the latest ledger head anchored on chain and confirmed.",
                None,
                MetricType::Gauge,
            )?;
            gauge(size).encode(family)?;
        }
        if let Some(ms) = stats.last_anchored_ms {
            let family = encoder.encode_descriptor(
                "mhc_ledger_anchor_last_timestamp_seconds",
                "When the latest anchor was seen confirmed (Unix seconds).",
                None,
                MetricType::Gauge,
            )?;
            gauge(ms / 1000).encode(family)?;
        }
        let family = encoder.encode_descriptor(
            "mhc_ledger_anchors_pending",
            "Anchors pending or submitted, not yet confirmed.",
            None,
            MetricType::Gauge,
        )?;
        gauge(stats.pending).encode(family)?;
        let family = encoder.encode_descriptor(
            "mhc_ledger_anchor_rpc_errors",
            "Failed JSON-RPC calls of the anchoring since start.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stats.rpc_errors).encode(family)?;
        Ok(())
    }
}

/// `mhc_plugin_events_total{plugin,outcome}`, read from the plugin host at every scrape. It
/// holds the host weakly: the metrics do not keep a stopped host open.
#[derive(Debug)]
struct PluginEvents(Weak<HostSlot>);

impl Collector for PluginEvents {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(host) = self
            .0
            .upgrade()
            .and_then(|slot| slot.read().as_ref().map(|(_, h)| Arc::clone(h)))
        else {
            return Ok(());
        };
        let stats = host.stats();
        if stats.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "mhc_plugin_events",
            "Events delivered to each plugin, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for s in &stats {
            for (outcome, n) in [("ok", s.events), ("error", s.errors), ("panic", s.panics)] {
                let labels = [("plugin", s.name.as_str()), ("outcome", outcome)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// `mhc_label_deliveries{state}` and `mhc_label_uploaded_bytes_total`, read from the label
/// plugin of the open host at every scrape (weakly: the metrics keep no host open).
#[derive(Debug)]
struct LabelMetrics(Arc<RwLock<Weak<LabelPlugin>>>);

impl Collector for LabelMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(label) = self.0.read().upgrade() else {
            return Ok(());
        };
        let stats = label.stats();
        let mut family = encoder.encode_descriptor(
            "mhc_label_deliveries",
            "Release deliveries to DSPs (one per release and DSP), by state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in &stats.jobs {
            let n = i64::try_from(*n).unwrap_or(i64::MAX);
            ConstGauge::new(n).encode(family.encode_family(&[("state", *state)])?)?;
        }
        let family = encoder.encode_descriptor(
            "mhc_label_uploaded_bytes",
            "Bytes uploaded to DSPs' SFTP drops since start.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stats.uploaded_bytes).encode(family)?;
        Ok(())
    }
}

impl Plugins {
    /// The plugins of an origin from `[plugins.*]`; the host opens now if this origin may write
    /// (a lone origin), else at promotion.
    ///
    /// # Errors
    /// A plugin table does not fit its plugin's settings (named), or the stores cannot be opened.
    pub fn open(core: Arc<Core>) -> anyhow::Result<Self> {
        let (PluginsConfig { royalty, ledger }, label) = plugin_tables(&core.config)?;
        let anchor = ledger.as_ref().and_then(|l| l.anchor.as_ref());
        let anchoring: AnchoringSlot = Arc::new(RwLock::new(None));
        if anchor.is_some() {
            core.metrics
                .register_collector(AnchorMetrics(Arc::clone(&anchoring)));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("the origin plugins need a tokio runtime: {e}"))?;
        let inbox = InboxMetrics::new(&core.metrics);
        let host: Arc<HostSlot> = Arc::new(RwLock::new(None));
        core.metrics
            .register_collector(PluginEvents(Arc::downgrade(&host)));
        let label_plugin = Arc::new(RwLock::new(Weak::new()));
        if label.is_some() {
            core.metrics
                .register_collector(LabelMetrics(Arc::clone(&label_plugin)));
        }
        let plugins = Self {
            core,
            config: PluginsConfig { royalty, ledger },
            label,
            host,
            opening: Mutex::new(()),
            label_plugin,
            anchoring,
            crypto: RwLock::new(None),
            runtime,
            inbox,
        };
        if let Ok(epoch) = plugins.core.writes.may_write() {
            plugins.open_host(epoch)?;
        }
        Ok(plugins)
    }

    /// Opens the host on the stores as they are now, for writes in `epoch`. Blocking.
    fn open_host(&self, epoch: u64) -> anyhow::Result<Arc<PluginHost>> {
        let _opening = self.opening.lock();
        if let Some((e, host)) = self.host.read().as_ref() {
            if *e == epoch {
                return Ok(Arc::clone(host));
            }
        }
        // The old term's host (if any) goes first: its memory of the books is stale.
        *self.host.write() = None;
        let core = &self.core;
        let host = PluginHost::with_clock_and(
            &core.db,
            core.publisher.clone(),
            &self.config,
            core.clock.clone(),
            |royalty| {
                let Some(config) = self.label.clone() else {
                    return Ok(Vec::new());
                };
                let library = Arc::new(CatalogMedia(Arc::clone(core)));
                let royalty = royalty.map(|r| Arc::clone(r.royalty()));
                let label = Arc::new(LabelPlugin::open(
                    &core.db,
                    config,
                    library,
                    royalty,
                    core.clock.clone(),
                )?);
                *self.label_plugin.write() = Arc::downgrade(&label);
                Ok(vec![label as Arc<dyn Plugin>])
            },
        )
        .map_err(|e| anyhow::anyhow!("starting the origin plugins: {e}"))?;
        tracing::info!(plugins = ?host.plugin_names(), epoch, "origin plugins ready");
        let anchor = self.config.ledger.as_ref().and_then(|l| l.anchor.clone());
        if let (Some(config), Some(ledger)) = (anchor, host.ledger()) {
            let _runtime = self.runtime.enter();
            let may_write: mhc_chain::anchor::MayWrite = {
                let core = Arc::clone(core);
                Arc::new(move || core.writes.may_write().is_ok_and(|e| e == epoch))
            };
            let anchoring = Anchoring::start(
                &core.db,
                Arc::clone(ledger),
                config,
                core.clock.clone(),
                may_write,
            )?;
            *self.anchoring.write() = Some(Arc::new(anchoring));
        }
        let host = Arc::new(host);
        let crypto = self
            .config
            .royalty
            .as_ref()
            .and_then(|r| r.crypto.clone().map(|c| (c, r.currency.clone())));
        if let (Some((config, currency)), Some(_)) = (crypto, host.royalty()) {
            let payouts = Arc::new(
                CryptoPayouts::open(&core.db, config, &currency)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            let books: Arc<dyn PayoutBooks> = Arc::new(Books {
                core: Arc::clone(core),
                host: Arc::downgrade(&host),
                epoch,
            });
            *self.crypto.write() = Some((Arc::clone(&payouts), Arc::clone(&books)));
            // Transfers a crash left in flight are followed to their receipts now.
            self.runtime.spawn(async move {
                if let Err(e) = payouts.resume(books).await {
                    tracing::warn!(error = %e, "resuming crypto payouts");
                }
            });
        }
        *self.host.write() = Some((epoch, Arc::clone(&host)));
        Ok(host)
    }

    /// The host, opened for `epoch` (the epoch a writer entered the gate in). Blocking.
    fn host_for(&self, epoch: u64) -> Result<Arc<PluginHost>, String> {
        // Every report passes here: the open host needs no more than a read lock.
        if let Some((e, host)) = self.host.read().as_ref() {
            if *e == epoch {
                return Ok(Arc::clone(host));
            }
        }
        self.open_host(epoch).map_err(|e| format!("{e:#}"))
    }

    /// The open host, for reads.
    fn open_host_now(&self) -> Option<Arc<PluginHost>> {
        self.host.read().as_ref().map(|(_, h)| Arc::clone(h))
    }

    /// Closes the host: this origin no longer writes (a standby's books change underneath).
    fn close_host(&self) {
        let _opening = self.opening.lock();
        // The anchoring and payouts stop with the host: a standby's books are the primary's.
        self.anchoring.write().take();
        self.crypto.write().take();
        if self.host.write().take().is_some() {
            tracing::info!("origin plugins closed: this origin no longer writes");
        }
    }

    /// Whether the node whose key signed a report may report: this origin itself, or a node
    /// admitted on a certificate that is valid now and grants a role that reports plays (in
    /// any membership state: a node back from a partition delivers what it kept).
    fn may_report(core: &Core, node: &[u8; 32]) -> bool {
        if *node == core.identity.public_key() {
            return true;
        }
        core.admission.admitted(node).is_some_and(|cert| {
            RolePolicy::new(role_of(cert.certificate.role), Mode::Normal, false).reports_plays()
        })
    }

    /// Checks every entry of content this origin published against its manifests: no more
    /// media time or bytes than the segments served can hold. (Entries of content unknown here
    /// credit nobody: the royalty plugin books only published content.)
    fn plausible(&self, batch: &PlayReportBatch) -> Result<(), ReportError> {
        for (i, e) in batch.entries.iter().enumerate() {
            if let Some((max_ms, max_size)) = self.core.catalog.segment_bounds(&e.content_id) {
                e.check_against(max_ms, max_size)
                    .map_err(|err| err.in_entry(i))?;
            }
        }
        Ok(())
    }

    /// What a backup image records of the plugins: the ledger's latest head and the royalty
    /// postings booked (read while the write gate is paused).
    pub fn facts(&self) -> PluginFacts {
        let Some(host) = self.open_host_now() else {
            // A standby: its books are the primary's, replicated; the host is not open.
            let ledger_head = match mhc_origin::ledger::latest_stored_head(&self.core.db) {
                Ok(head) => head,
                Err(err) => {
                    tracing::error!(error = %err, "reading the replicated ledger's head");
                    None
                }
            };
            return PluginFacts {
                ledger_head,
                royalty_postings: None,
            };
        };
        PluginFacts {
            ledger_head: host
                .ledger()
                .and_then(|l| l.with_ledger(|l| l.latest_head())),
            royalty_postings: host.royalty().and_then(|r| r.royalty().last_seq().ok()),
        }
    }

    /// Counts a report refused at the QUIC door: its sender proved no enrollment.
    pub fn refused_unenrolled(&self) {
        self.inbox.reject("not_enrolled");
    }

    /// Verifies, de-duplicates, stores and delivers an encoded play report.
    pub async fn ingest_encoded(self: &Arc<Self>, bytes: Vec<u8>) -> Outcome {
        let inbox = &self.inbox;
        let report = match SignedPlayReport::decode(&bytes) {
            Ok(r) => r,
            Err(err) => {
                inbox.reject(err.reason());
                tracing::warn!(error = %err, "play report refused");
                return Outcome::Refused(err.to_string());
            }
        };
        let seq = report.batch.seq;
        let node = hex::encode(report.batch.node);
        if let Err(err) = self.plausible(&report.batch) {
            inbox.reject(err.reason());
            tracing::warn!(node, seq, error = %err, "play report with impossible figures refused");
            return Outcome::Refused(err.to_string());
        }
        let result = {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                let core = &this.core;
                let writing = core.writes.enter().map_err(|e| e.to_string())?;
                let host = this.host_for(writing.epoch())?;
                let outcome = host.ingest_report(report, |node| Self::may_report(core, node));
                // Not acknowledged if the lease lapsed meanwhile: the sender tries again.
                if !writing.still_held(&core.writes) {
                    return Err(NotPrimary(core.writes.standing()).to_string());
                }
                Ok::<_, String>(outcome)
            })
            .await
        };
        let result = match result {
            // Not the primary (or its plugins cannot open): the sender tries again later.
            Ok(Err(not_written)) => {
                inbox.reject("not_primary");
                tracing::debug!(node, seq, error = %not_written, "play report not taken here");
                return Outcome::Later(not_written);
            }
            Ok(Ok(outcome)) => Ok(outcome),
            Err(join) => Err(join),
        };
        match result {
            Ok(Ok(ReportOutcome::Accepted { .. })) => {
                inbox.accepted.inc();
                // Acknowledged once the standbys hold it too.
                self.core.writes.replicated(SYNC_TIMEOUT).await;
                Outcome::Acked
            }
            Ok(Ok(ReportOutcome::Duplicate { .. })) => {
                inbox.duplicate.inc();
                tracing::debug!(node, seq, "play report resent; acknowledged again");
                // Its first acknowledgement may have been lost while a standby was catching up.
                self.core.writes.replicated(SYNC_TIMEOUT).await;
                Outcome::Acked
            }
            // Not (yet) a member: the sender keeps it and tries again; the origin counts it.
            Ok(Err(err @ ReportError::NotMember(_))) => {
                inbox.reject(err.reason());
                tracing::warn!(node, seq, error = %err, "play report from a non-member refused");
                Outcome::Later(err.to_string())
            }
            Ok(Err(err)) if err.is_retryable() => {
                inbox.deferred.inc();
                Outcome::Later(err.to_string())
            }
            Ok(Err(err)) => {
                inbox.reject(err.reason());
                tracing::warn!(node, seq, error = %err, "play report refused");
                Outcome::Refused(err.to_string())
            }
            Err(err) => {
                inbox.deferred.inc();
                Outcome::Later(err.to_string())
            }
        }
    }

    /// Tells the plugins about a published version (idempotent).
    pub fn published(&self, p: &Published) {
        let m = p.manifest();
        let event = ContentPublished {
            content_id: m.content_id.to_string(),
            version: m.version,
            artist_id: m.artist_id.clone(),
            title: m.title.clone(),
        };
        let published = match self.core.writes.enter() {
            Ok(writing) => match self.host_for(writing.epoch()) {
                Ok(host) => host.publish(event),
                Err(why) => {
                    tracing::error!(content = %m.content_id, error = %why, "the plugins cannot open");
                    return;
                }
            },
            // A standby's plugins are told when it is promoted (see `run`).
            Err(not_primary) => {
                tracing::debug!(content = %m.content_id, error = %not_primary, "publication not told to the plugins");
                return;
            }
        };
        if let Err(err) = published {
            tracing::error!(content = %m.content_id, error = %err, "telling the plugins about a publication");
        }
    }

    /// Announces every published version to the plugins, then ticks them until shutdown. An
    /// origin that elects its primary does both only while primary, and announces everything
    /// again at each promotion (announcing is idempotent).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Announced again whenever writes reopen (a new epoch, or the same one after a
        // lapse during which a publication may have gone untold).
        let mut was_writable = false;
        loop {
            let writable = self.core.writes.may_write().is_ok();
            if writable && !was_writable {
                let this = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || {
                    for p in this.core.catalog.list() {
                        this.published(&p);
                    }
                })
                .await;
            }
            if !writable && was_writable {
                let this = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || this.close_host()).await;
            }
            was_writable = writable;
            tokio::select! {
                _ = shutdown.changed() => break,
                () = tokio::time::sleep(TICK) => {}
            }
            let this = Arc::clone(&self);
            let summary = tokio::task::spawn_blocking(move || {
                let writing = this.core.writes.enter().ok()?;
                let host = this.host_for(writing.epoch()).ok()?;
                Some(host.tick(this.core.clock.now_ms()))
            })
            .await;
            if let Ok(Some(summary)) = summary {
                for f in summary.failures {
                    tracing::warn!(plugin = %f.plugin, event = %f.event, error = %f.error, panicked = f.panicked, "plugin delivery failed");
                }
            }
        }
    }

    /// Answers `/admin/plugins/<name>/<target>` with the plugin's admin route.
    pub async fn admin(
        self: &Arc<Self>,
        method: &str,
        target: &str,
        body: Vec<u8>,
        spooled: Option<tempfile::TempPath>,
    ) -> AdminResponse {
        let Some((name, rest)) = target.split_once('/').or(Some((target, ""))) else {
            return AdminResponse::error(404, "no such plugin");
        };
        let mut req = match AdminRequest::from_target(method, rest, body) {
            Ok(r) => r,
            Err(err) => return AdminResponse::from_error(&err),
        };
        req.spooled = spooled.as_ref().map(|p| p.to_path_buf());
        if (name, method, rest) == ("ledger", "POST", "anchors/verify") {
            return self.verify_anchors().await;
        }
        if (name, method) == ("royalty", "POST")
            && req.segments().is_ok_and(|s| s == ["payouts", "crypto"])
        {
            let crypto = self.crypto.read().clone();
            if let Some((payouts, books)) = crypto {
                return Self::pay_on_chain(&payouts, books, &req).await;
            }
        }
        let this = Arc::clone(self);
        let name = name.to_owned();
        let reads_only = matches!(method, "GET" | "HEAD");
        tokio::task::spawn_blocking(move || {
            // Reads need neither the fence nor a consistent point in time with a backup.
            let (writing, host) = if reads_only {
                (None, this.open_host_now())
            } else {
                match this.core.writes.enter() {
                    Ok(w) => {
                        let host = this.host_for(w.epoch()).ok();
                        (Some(w), host)
                    }
                    Err(not_primary) => return AdminResponse::error(503, &not_primary.to_string()),
                }
            };
            let Some(host) = host else {
                return AdminResponse::error(
                    503,
                    "the plugins are not open here: they run at the primary origin",
                );
            };
            let answer = host.admin(&name, &req);
            drop(writing);
            // The spooled body, if any, is removed now.
            drop(spooled);
            answer
        })
        .await
        .unwrap_or_else(|e| AdminResponse::error(500, &format!("plugin admin task: {e}")))
    }
}

/// The royalty books as crypto payouts write them: through the write gate (replicated to
/// standbys, fenced), in the epoch the host was opened for.
#[derive(Debug)]
struct Books {
    core: Arc<Core>,
    host: Weak<PluginHost>,
    epoch: u64,
}

impl Books {
    fn royalty(&self) -> Result<Arc<mhc_origin::royalty::Royalty>, String> {
        let host = self.host.upgrade().ok_or("the plugins closed")?;
        let royalty = host.royalty().ok_or("royalty is not enabled")?;
        Ok(Arc::clone(royalty.royalty()))
    }
}

impl PayoutBooks for Books {
    fn payees(&self, as_of_ms: u64) -> Result<Vec<mhc_origin::royalty::PayoutItem>, String> {
        self.royalty()?
            .payees(mhc_origin::royalty::PayoutMethodKind::Crypto, as_of_ms)
            .map_err(|e| e.to_string())
    }

    fn book(
        &self,
        payout_id: &str,
        item: &mhc_origin::royalty::PayoutItem,
        tx_hash: &str,
    ) -> Result<(), String> {
        let writing = self.core.writes.enter().map_err(|e| e.to_string())?;
        if writing.epoch() != self.epoch {
            return Err("this origin's term ended; the new primary books it".into());
        }
        self.royalty()?
            .book_external_payout(payout_id, item, tx_hash)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn record(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        {
            let writing = self.core.writes.enter().map_err(|e| e.to_string())?;
            if writing.epoch() != self.epoch {
                return Err("this origin's term ended".into());
            }
            let tree = self
                .core
                .db
                .open_tree(mhc_chain::payout::PAYOUTS_TREE)
                .map_err(|e| e.to_string())?;
            tree.insert(key, value).map_err(|e| e.to_string())?;
            tree.flush().map_err(|e| e.to_string())?;
            if !writing.still_held(&self.core.writes) {
                return Err("this origin's lease lapsed while recording".into());
            }
        }
        // Held by the standbys too before anything is broadcast (called on a blocking thread).
        tokio::runtime::Handle::current().block_on(self.core.writes.replicated(SYNC_TIMEOUT));
        Ok(())
    }
}

impl Plugins {
    /// `POST /admin/plugins/royalty/payouts/crypto[?as_of_ms=]` with `[plugins.royalty.crypto]`:
    /// the batch executed on chain; `200` when every transfer is paid or failed, `202` while
    /// some wait for their receipts (ask again with the same `as_of_ms`).
    async fn pay_on_chain(
        payouts: &CryptoPayouts,
        books: Arc<dyn PayoutBooks>,
        req: &AdminRequest,
    ) -> AdminResponse {
        let as_of_ms = match req.param_parsed::<u64>("as_of_ms") {
            Ok(v) => v.unwrap_or_else(|| mhc_clock::Clock::system().now_ms()),
            Err(e) => return AdminResponse::from_error(&e),
        };
        match payouts.execute(as_of_ms, books).await {
            Ok(payout) => {
                let mut answer = AdminResponse::ok(&payout);
                if !payout.settled() {
                    answer.status = 202;
                }
                answer
            }
            Err(e @ mhc_chain::PayoutError::Unsettled(_)) => {
                AdminResponse::error(409, &e.to_string())
            }
            Err(e) => AdminResponse::error(500, &e.to_string()),
        }
    }

    /// `POST /admin/plugins/ledger/anchors/verify`: every confirmed anchor checked against the
    /// chain and the log (`ok` false and each failing anchor's `problem` when one fails).
    async fn verify_anchors(&self) -> AdminResponse {
        let Some(anchoring) = self.anchoring.read().clone() else {
            return AdminResponse::error(
                404,
                "the ledger is not anchored here ([plugins.ledger.anchor] at the primary origin)",
            );
        };
        let Some(ledger) = self.open_host_now().and_then(|h| h.ledger().cloned()) else {
            return AdminResponse::error(503, "the ledger is not open here");
        };
        let records = match anchoring.records() {
            Ok(r) => r,
            Err(e) => return AdminResponse::error(500, &e),
        };
        let (rpc, confirmations) = anchoring.rpc();
        let checks = mhc_chain::verify_records(rpc, confirmations, &records, &ledger).await;
        // Asked to check anchors, none confirmed is not a pass.
        let ok = !checks.is_empty() && checks.iter().all(|c| c.problem.is_none());
        AdminResponse::ok(&serde_json::json!({
            "ok": ok,
            "address": anchoring.address(),
            "anchors": checks,
            "failures": checks.iter().filter(|c| c.problem.is_some()).map(mhc_chain::AnchorCheck::describe).collect::<Vec<_>>(),
        }))
    }
}

/// What a backup image records of the plugins, read while writes are paused (the backup
/// service asks; the plugins do not know about backups).
#[derive(Debug, Clone, Default)]
pub struct PluginFacts {
    /// The ledger's latest head.
    pub ledger_head: Option<SignedTreeHead>,
    /// Royalty postings booked.
    pub royalty_postings: Option<u64>,
}

/// The origin's catalog and blob store as the label plugin reads them.
#[derive(Debug)]
struct CatalogMedia(Arc<Core>);

impl MediaLibrary for CatalogMedia {
    fn track(&self, content_id: &str) -> Option<TrackMedia> {
        let published = self.0.catalog.latest(&ContentId::new(content_id).ok()?)?;
        let m = published.manifest();
        let mut parts: Vec<([u8; 32], u64)> = m.hls.init.iter().map(|i| (i.hash, i.size)).collect();
        parts.extend(m.segments.iter().map(|s| (s.hash, s.size)));
        Some(TrackMedia {
            content_id: content_id.to_string(),
            version: m.version,
            artist_id: m.artist_id.clone(),
            title: m.title.clone(),
            audio_only: m.media_kind == MediaKind::Audio,
            duration_ms: m.segments.iter().map(|s| u64::from(s.duration_ms)).sum(),
            codecs: m.hls.codecs.clone().unwrap_or_default(),
            // The average is what a file's bitrate means; the peak when no average is known.
            bandwidth_bps: if m.hls.average_bandwidth_bps > 0 {
                m.hls.average_bandwidth_bps
            } else {
                m.hls.bandwidth_bps
            },
            // Init segment + fragments is a fragmented MP4 file; ADTS and TS concatenate.
            extension: match (m.hls.segment_format, m.media_kind) {
                (SegmentFormat::Fmp4, MediaKind::Audio) => "m4a",
                (SegmentFormat::Fmp4, MediaKind::Video) => "mp4",
                (SegmentFormat::Aac, _) => "aac",
                (SegmentFormat::Ts, _) => "ts",
            },
            parts,
        })
    }

    fn open_blob(&self, hash: &[u8; 32]) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let path = self.0.store.disk().blob_path(hash);
        Ok(Box::new(std::fs::File::open(path)?))
    }
}
