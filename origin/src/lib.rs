//! The origin role's own logic: turning an artist's HLS rendition into a signed, versioned
//! manifest.
//!
//! Entry point: [`ingest_rendition`], which checks a folder, streams its files through a
//! [`BlobSink`] (the node's content-addressed store) and returns the manifest; [`publish_version`]
//! decides whether that is a new version or the one already published. The node signs and
//! commits it. Plugins (royalty, ledger, label) will live here too.
//!
//! The [`ledger`] module is the verifiable append-only log of credits and payouts to artists
//! (RFC 9162 Merkle tree with BLAKE3, signed tree heads, offline-verifiable exports).
//!
//! The [`royalty`] module is the royalty accounting: artist accounts, play/tip/subscription/DSP
//! credits, split sheets, withholding, statements and payout batches, in integer minor units.
//!
//! The [`plugin`] module hosts the origin plugins: [`PluginHost`] owns the durable inbox of
//! nodes' [`SignedPlayReport`]s (exactly-once delivery) and runs the royalty and ledger plugins
//! with isolation, and routes their admin requests.

mod error;
mod ingest;
pub mod ledger;
pub mod plugin;
mod publish;
mod report;
pub mod royalty;
mod utc;

pub use error::IngestError;
pub use ingest::{ingest_rendition, BlobSink, ImportedBlob, IngestRequest, MAX_SEGMENT_BYTES};
pub use plugin::{PluginHost, PluginsConfig};
pub use publish::{publish_version, PublishDecision};
pub use report::{
    PlayEntry, PlayReportBatch, ReportError, SignedPlayReport, MAX_PLAY_ENTRIES, MAX_REPORT_BYTES,
    PLAY_REPORT_DOMAIN_TAG, PLAY_REPORT_FORMAT_VERSION,
};
