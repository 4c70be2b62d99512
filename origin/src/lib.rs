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

mod error;
mod ingest;
pub mod ledger;
mod publish;
pub mod royalty;

pub use error::IngestError;
pub use ingest::{ingest_rendition, BlobSink, ImportedBlob, IngestRequest, MAX_SEGMENT_BYTES};
pub use publish::{publish_version, PublishDecision};
