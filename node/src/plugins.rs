//! The origin's plugins inside the daemon: the plugin host (royalty, ledger) is opened at
//! start, told about every published version, fed the play reports nodes send over QUIC, ticked
//! every few seconds, and reached by operators at `/admin/plugins/<name>/...` on the admin
//! socket (or on the viewer plane with `http.admin_token`).
//!
//! Every origin keeps a play-report inbox, even with no plugin enabled: a plugin enabled later
//! receives the whole history, and nodes never drop reports an origin could have kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mhc_origin::plugin::{AdminRequest, AdminResponse, ContentPublished, ReportOutcome};
use mhc_origin::{PluginHost, PluginsConfig, ReportError, SignedPlayReport};
use tokio::sync::watch;

use crate::catalog::Published;
use crate::reports::Outcome;
use crate::state::NodeState;

/// How often the host is ticked (retries of held deliveries, ledger catch-up).
const TICK: Duration = Duration::from_secs(2);

/// Play reports received by this origin, by outcome.
#[derive(Debug, Default)]
pub struct InboxMetrics {
    /// Stored (new).
    pub accepted: AtomicU64,
    /// Resends of stored reports (acknowledged again, no effect).
    pub duplicate: AtomicU64,
    /// Refused: bad signature, not a member, malformed, sequence reused.
    pub rejected: AtomicU64,
    /// Not stored now, to be resent (storage trouble).
    pub deferred: AtomicU64,
}

/// Opens the plugin host of an origin from `[plugins.*]`.
///
/// # Errors
/// A plugin table does not fit its plugin's settings (named), or the stores cannot be opened.
pub fn open(
    config: &mhc_config::Config,
    db: &sled::Db,
    key: &ed25519_dalek::SigningKey,
) -> anyhow::Result<PluginHost> {
    let royalty = config
        .plugins
        .royalty
        .clone()
        .map(|t| toml::Value::Table(t).try_into())
        .transpose()
        .map_err(|e| anyhow::anyhow!("[plugins.royalty]: {e}"))?;
    let ledger = config
        .plugins
        .ledger
        .clone()
        .map(|t| toml::Value::Table(t).try_into())
        .transpose()
        .map_err(|e| anyhow::anyhow!("[plugins.ledger]: {e}"))?;
    let host = PluginHost::new(db, key.clone(), &PluginsConfig { royalty, ledger })
        .map_err(|e| anyhow::anyhow!("starting the origin plugins: {e}"))?;
    tracing::info!(plugins = ?host.plugin_names(), "origin plugins ready");
    Ok(host)
}

/// Whether the node whose key signed a report may report: this origin itself, or a member of
/// the membership table (in any state: a node back from a partition delivers what it kept).
fn is_member(state: &NodeState, node: &[u8; 32]) -> bool {
    if *node == state.identity.public_key() {
        return true;
    }
    let Ok(key) = libp2p_identity::ed25519::PublicKey::try_from_bytes(node) else {
        return false;
    };
    let peer = libp2p_identity::PublicKey::from(key).to_peer_id();
    state
        .cluster
        .membership
        .lock()
        .expect("membership lock")
        .get(&peer)
        .is_some()
}

/// Verifies, de-duplicates, stores and delivers an encoded play report.
pub async fn ingest_encoded(
    state: &Arc<NodeState>,
    host: &Arc<PluginHost>,
    bytes: Vec<u8>,
) -> Outcome {
    let inbox = &state.inbox;
    let report = match SignedPlayReport::decode(&bytes) {
        Ok(r) => r,
        Err(err) => {
            inbox.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "play report refused");
            return Outcome::Refused(err.to_string());
        }
    };
    let seq = report.batch.seq;
    let node = hex::encode(report.batch.node);
    let result = {
        let state = Arc::clone(state);
        let host = Arc::clone(host);
        tokio::task::spawn_blocking(move || {
            host.ingest_report(report, |node| is_member(&state, node))
        })
        .await
    };
    match result {
        Ok(Ok(ReportOutcome::Accepted { .. })) => {
            inbox.accepted.fetch_add(1, Ordering::Relaxed);
            Outcome::Acked
        }
        Ok(Ok(ReportOutcome::Duplicate { .. })) => {
            inbox.duplicate.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(node, seq, "play report resent; acknowledged again");
            Outcome::Acked
        }
        // Not (yet) a member: the sender keeps it and tries again; the origin counts it.
        Ok(Err(err @ ReportError::NotMember(_))) => {
            inbox.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node, seq, error = %err, "play report from a non-member refused");
            Outcome::Later(err.to_string())
        }
        Ok(Err(err)) if err.is_retryable() => {
            inbox.deferred.fetch_add(1, Ordering::Relaxed);
            Outcome::Later(err.to_string())
        }
        Ok(Err(err)) => {
            inbox.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node, seq, error = %err, "play report refused");
            Outcome::Refused(err.to_string())
        }
        Err(err) => {
            inbox.deferred.fetch_add(1, Ordering::Relaxed);
            Outcome::Later(err.to_string())
        }
    }
}

/// Tells the plugins about a published version (idempotent).
pub fn published(state: &NodeState, p: &Published) {
    let Some(host) = state.plugins.get() else {
        return;
    };
    let m = p.manifest();
    let event = ContentPublished {
        content_id: m.content_id.to_string(),
        version: m.version,
        artist_id: m.artist_id.clone(),
        title: m.title.clone(),
    };
    if let Err(err) = host.publish(event) {
        tracing::error!(content = %m.content_id, error = %err, "telling the plugins about a publication");
    }
}

/// Announces every published version to the plugins, then ticks them until shutdown.
pub async fn run(
    state: Arc<NodeState>,
    host: Arc<PluginHost>,
    mut shutdown: watch::Receiver<bool>,
) {
    {
        let state = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || {
            for p in state.catalog.list() {
                published(&state, &p);
            }
        })
        .await;
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            () = tokio::time::sleep(TICK) => {}
        }
        let host = Arc::clone(&host);
        let summary =
            tokio::task::spawn_blocking(move || host.tick(crate::emergency::now_ms())).await;
        if let Ok(summary) = summary {
            for f in summary.failures {
                tracing::warn!(plugin = %f.plugin, event = %f.event, error = %f.error, panicked = f.panicked, "plugin delivery failed");
            }
        }
    }
}

/// Answers `/admin/plugins/<name>/<target>` with the plugin's admin route.
pub async fn admin(state: &NodeState, method: &str, target: &str, body: Vec<u8>) -> AdminResponse {
    let Some(host) = state.plugins.get() else {
        return AdminResponse::error(404, "plugins run at the origin only");
    };
    let Some((name, rest)) = target.split_once('/').or(Some((target, ""))) else {
        return AdminResponse::error(404, "no such plugin");
    };
    let req = match AdminRequest::from_target(method, rest, body) {
        Ok(r) => r,
        Err(err) => return AdminResponse::from_error(&err),
    };
    let host = Arc::clone(host);
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || host.admin(&name, &req))
        .await
        .unwrap_or_else(|e| AdminResponse::error(500, &format!("plugin admin task: {e}")))
}

/// Appends the plugin and inbox samples in the Prometheus text format.
pub fn render_metrics(state: &NodeState, out: &mut String) {
    use std::fmt::Write;
    let r = &state.reports.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP mhc_reports_batches_total Play-report batches of this node, by fate.\n\
         # TYPE mhc_reports_batches_total counter\n\
         mhc_reports_batches_total{{outcome=\"written\"}} {}\n\
         mhc_reports_batches_total{{outcome=\"acked\"}} {}\n\
         mhc_reports_batches_total{{outcome=\"dropped\"}} {}\n\
         # HELP mhc_reports_outbox Play-report batches waiting for an origin.\n\
         # TYPE mhc_reports_outbox gauge\n\
         mhc_reports_outbox {}",
        g(&r.batches_written),
        g(&r.batches_acked),
        g(&r.batches_dropped),
        g(&r.outbox),
    );
    let Some(host) = state.plugins.get() else {
        return;
    };
    let i = &state.inbox;
    let _ = writeln!(
        out,
        "# HELP mhc_reports_received_total Play reports received by this origin, by outcome.\n\
         # TYPE mhc_reports_received_total counter\n\
         mhc_reports_received_total{{outcome=\"accepted\"}} {}\n\
         mhc_reports_received_total{{outcome=\"duplicate\"}} {}\n\
         mhc_reports_received_total{{outcome=\"rejected\"}} {}\n\
         mhc_reports_received_total{{outcome=\"deferred\"}} {}",
        g(&i.accepted),
        g(&i.duplicate),
        g(&i.rejected),
        g(&i.deferred),
    );
    let _ = writeln!(
        out,
        "# HELP mhc_plugin_events_total Events delivered to each plugin, by outcome.\n\
         # TYPE mhc_plugin_events_total counter"
    );
    for s in host.stats() {
        let _ = writeln!(
            out,
            "mhc_plugin_events_total{{plugin=\"{}\",outcome=\"ok\"}} {}\n\
             mhc_plugin_events_total{{plugin=\"{}\",outcome=\"error\"}} {}\n\
             mhc_plugin_events_total{{plugin=\"{}\",outcome=\"panic\"}} {}",
            s.name, s.events, s.name, s.errors, s.name, s.panics
        );
    }
}
