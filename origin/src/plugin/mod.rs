//! Origin plugins: compiled-in extensions that see core events, keep state in their own sled
//! trees and add admin routes.
//!
//! Entry point: [`PluginHost::new`] with the node's sled db, its signing key and the
//! `[plugins.*]` tables ([`PluginsConfig`]). The node then calls:
//! - [`PluginHost::ingest_report`] for every [`SignedPlayReport`] a node
//!   sends (verified, de-duplicated by `(node, seq)`, persisted and flushed before it returns
//!   [`ReportOutcome::Accepted`], then delivered to the plugins), and acknowledges on `Ok`;
//! - [`PluginHost::publish`] for every published content version;
//! - [`PluginHost::tick`] periodically (every few seconds): retries deliveries that failed with a
//!   retryable error and lets plugins do periodic work;
//! - [`PluginHost::admin`] for `/admin/plugins/<name>/<path>` requests;
//! - [`PluginHost::stats`] for metrics.
//!
//! Every call blocks on disk flushes: call them from `spawn_blocking` in async code.
//!
//! **Delivery.** Play reports and publications go through a durable inbox (sled tree
//! `plugins/inbox`, see [`INBOX_TREE`]) with one delivery cursor per plugin (`plugins/cursors`).
//! Events reach each plugin in inbox order, at least once; after a crash the host re-delivers
//! whatever a plugin had not finished, so plugins make their inputs idempotent (the royalty
//! plugin books a report under the reference `play:<node hex>:<seq>`, which the royalty module
//! applies once). Together that is exactly-once in effect.
//!
//! **Isolation.** A plugin that returns an error or panics is counted ([`PluginStats`]) and logged,
//! and the host carries on: the other plugins still receive the event, the report stays
//! acknowledged, the origin keeps serving. A retryable error ([`PluginError::is_retryable`], e.g.
//! a storage failure) holds that plugin's cursor, so the event is retried on the next
//! [`PluginHost::tick`]; any other error or a panic moves the event to the plugin's dead letters
//! ([`PluginHost::dead_letters`], [`PluginHost::retry_dead_letters`]) so one poison event cannot
//! stall the plugin forever.
//!
//! Shipped plugins: [`RoyaltyPlugin`] (named `royalty`) and [`LedgerPlugin`] (named `ledger`),
//! which appends every royalty posting to the Merkle ledger exactly once.
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use mhc_origin::plugin::{
//!     AdminRequest, ContentPublished, LedgerPluginConfig, PluginHost, PluginsConfig, ReportOutcome,
//! };
//! use mhc_origin::royalty::RoyaltyConfig;
//! use mhc_origin::{PlayEntry, PlayReportBatch, SignedPlayReport};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = sled::open(dir.path())?;
//! let config = PluginsConfig {
//!     royalty: Some(RoyaltyConfig::default()),
//!     ledger: Some(LedgerPluginConfig::default()),
//! };
//! let host = PluginHost::new(&db, SigningKey::from_bytes(&[1; 32]), &config)?;
//! host.publish(ContentPublished {
//!     content_id: "song".into(),
//!     version: 1,
//!     artist_id: "ar-1".into(),
//!     title: "Song".into(),
//! })?;
//!
//! // On an edge node: sign a period's usage and put the bytes in the outbox.
//! let batch = PlayReportBatch {
//!     node: [0; 32], // set by `sign`
//!     seq: 1,
//!     period_start_ms: 1_741_564_800_000,
//!     period_end_ms: 1_741_564_860_000,
//!     entries: vec![PlayEntry {
//!         content_id: "song".into(),
//!         country: "FR".into(),
//!         segments: 45,
//!         bytes: 9_000_000,
//!         seconds_ms: 180_000,
//!         sessions: 12,
//!         plays: 10,
//!     }],
//! };
//! let wire = SignedPlayReport::sign(batch, &SigningKey::from_bytes(&[2; 32]))?.encode();
//!
//! // On the origin: decode, ingest, acknowledge on Ok.
//! let report = SignedPlayReport::decode(&wire)?;
//! let outcome = host.ingest_report(report, |_node| true)?;
//! assert!(matches!(outcome, ReportOutcome::Accepted { .. }));
//!
//! // 180 s at 0.001 + 10 plays at 0.3 = 3.18 minor units: 3 booked, 0.18 carried.
//! let balance = host.admin("royalty", &AdminRequest::new("GET", "balance/ar-1"));
//! let balances: serde_json::Value = balance.json_body()?;
//! assert_eq!(balances[0]["earned_minor"], 3);
//! let head = host.admin("ledger", &AdminRequest::new("GET", "head"));
//! assert_eq!(head.json_body::<serde_json::Value>()?["size"], 1);
//! # Ok(())
//! # }
//! ```

mod admin;
mod error;
mod host;
mod inbox;
mod ledger_plugin;
mod royalty_plugin;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod testutil;

use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use crate::report::SignedPlayReport;

pub use admin::{AdminRequest, AdminResponse, MAX_ADMIN_BODY_BYTES, MAX_SPOOLED_BODY_BYTES};
pub use error::PluginError;
pub use host::{
    DispatchSummary, PluginFailure, PluginHost, PluginStats, PluginsConfig, PublishOutcome,
    ReportOutcome,
};
pub use inbox::{DeadLetter, CURSORS_TREE, DEAD_LETTERS_TREE, INBOX_INDEX_TREE, INBOX_TREE};
pub use ledger_plugin::{
    posting_entry, royalty_cursor_of, AnchorConfig, LedgerPlugin, LedgerPluginConfig, SyncOutcome,
    LEDGER_PLUGIN_NAME, ROYALTY_REFERENCE_PREFIX,
};
pub use royalty_plugin::{ContentRecord, RoyaltyPlugin, CONTENT_TREE, ROYALTY_PLUGIN_NAME};

/// A content version the origin published: what the royalty plugin needs to credit its plays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPublished {
    /// The content slug (the manifest's `content_id`).
    pub content_id: String,
    /// The published version (1, 2, ...).
    pub version: u64,
    /// The artist credited for the content (the manifest's `artist_id`).
    pub artist_id: String,
    /// The content's title.
    pub title: String,
}

impl ContentPublished {
    /// Checks the fields as the manifest does, plus the royalty module's rule for artist ids (no
    /// control characters, no surrounding whitespace), so that a publication the host accepts is
    /// one every plugin can store.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] naming the field.
    pub fn validate(&self) -> Result<(), PluginError> {
        let bad = |field: &str, problem: String| {
            PluginError::BadRequest(format!("content_published.{field}: {problem}"))
        };
        mhc_manifest::ContentId::new(self.content_id.as_str())
            .map_err(|e| bad("content_id", e.to_string()))?;
        let artist = &self.artist_id;
        if artist.is_empty() || artist.len() > mhc_manifest::MAX_ARTIST_ID_BYTES {
            return Err(bad(
                "artist_id",
                format!(
                    "must be 1..={} bytes, is {}",
                    mhc_manifest::MAX_ARTIST_ID_BYTES,
                    artist.len()
                ),
            ));
        }
        if artist.chars().any(char::is_control) || artist.trim() != artist {
            return Err(bad(
                "artist_id",
                "has a control character or surrounding whitespace".into(),
            ));
        }
        if self.title.len() > mhc_manifest::MAX_TITLE_BYTES
            || self.title.chars().any(char::is_control)
        {
            return Err(bad(
                "title",
                format!(
                    "must be at most {} bytes without control characters",
                    mhc_manifest::MAX_TITLE_BYTES
                ),
            ));
        }
        Ok(())
    }
}

/// Something that happened in the core, delivered to every plugin in order.
///
/// New variants may be added; plugins ignore the ones they do not handle (`_ => Ok(())`).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum CoreEvent<'a> {
    /// A content version was published (delivered from the durable inbox).
    ContentPublished(&'a ContentPublished),
    /// A node's play report, already verified and de-duplicated by the host (delivered from the
    /// durable inbox, so possibly again after a crash: apply it idempotently).
    PlayReport {
        /// The report.
        report: &'a SignedPlayReport,
        /// Its position in the inbox (increasing; the same on every delivery).
        event_seq: u64,
    },
    /// Periodic wake-up, Unix milliseconds. Not persisted.
    Tick {
        /// The time of the tick.
        now_ms: u64,
    },
    /// A plugin changed state through an admin request (e.g. a tip booked through the royalty
    /// plugin's routes): plugins that mirror another's state catch up. Not persisted.
    StateChanged {
        /// The plugin whose state changed.
        plugin: &'a str,
    },
}

impl CoreEvent<'_> {
    /// A short name for logs and failure reports: `content_published`, `play_report`, `tick`,
    /// `state_changed`.
    pub fn kind(&self) -> &'static str {
        match self {
            CoreEvent::ContentPublished(_) => "content_published",
            CoreEvent::PlayReport { .. } => "play_report",
            CoreEvent::Tick { .. } => "tick",
            CoreEvent::StateChanged { .. } => "state_changed",
        }
    }
}

/// An origin plugin. Implementations are shared across threads (`&self` everywhere) and guard
/// their own state.
pub trait Plugin: Send + Sync + Debug {
    /// The plugin's name: `[a-z0-9_-]+`, unique in the host; its admin routes live under
    /// `/admin/plugins/<name>/` and its delivery cursor is stored under it, so it must never
    /// change.
    fn name(&self) -> &'static str;

    /// Handles one core event.
    ///
    /// # Errors
    /// Any [`PluginError`]; the host counts and logs it and carries on. A retryable error
    /// ([`PluginError::is_retryable`]) on an inbox event makes the host deliver the same event
    /// again later; any other error dead-letters it for this plugin.
    fn on_event(&self, ev: &CoreEvent<'_>) -> Result<(), PluginError>;

    /// Answers an admin request addressed to this plugin; `None` when the plugin has no such
    /// route (the host answers 404).
    ///
    /// # Errors
    /// `Some(Err(_))`: the host renders the error as a JSON body with
    /// [`PluginError::http_status`].
    fn admin(&self, req: &AdminRequest) -> Option<Result<AdminResponse, PluginError>>;
}
