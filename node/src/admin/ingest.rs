//! Publishing at the origin: ingest a rendition into the store, version it, sign it, commit it.
//!
//! Atomic: blobs written by a failed ingest are deleted again and no manifest is committed.
//! Idempotent: the same bytes and metadata give back the published version unchanged.
//! Streaming: files are hashed while they are copied, never held whole in memory.

use std::sync::Arc;

use anyhow::{bail, Context};
use mhc_manifest::{ContentId, Hash32, MediaKind};
use mhc_origin::{
    ingest_rendition, publish_version, BlobSink, ImportedBlob, IngestRequest, PublishDecision,
};
use parking_lot::Mutex;

use super::api::IngestCommand;
use crate::control::messages::ContentAnnouncement;
use crate::control::ClusterHandle;
use crate::core::catalog::{CatalogError, Published};
use crate::core::store::{DiskTier, Imported};
use crate::core::writes::{NotPrimary, SYNC_TIMEOUT};

/// Bytes per second a standby is assumed to copy a publication's blobs at, at least: what an
/// ingest's acknowledgement waits for beyond [`SYNC_TIMEOUT`].
const STANDBY_COPY_RATE: u64 = 10 << 20;
use crate::core::Core;
use crate::mesh::MeshPlane;
use crate::plugins::Plugins;

/// Publishing at an origin: what an ingest writes to and tells.
#[derive(Debug)]
pub struct Ingest {
    core: Arc<Core>,
    mesh: Arc<MeshPlane>,
    cluster: ClusterHandle,
    plugins: Arc<Plugins>,
    /// Serialises ingests so versions are assigned one at a time.
    one_at_a_time: Mutex<()>,
}

/// What an ingest did.
#[derive(Debug)]
pub struct IngestOutcome {
    /// The version now published.
    pub published: Arc<Published>,
    /// False when the bytes and metadata were already published as they are.
    pub changed: bool,
}

/// Writes into the disk tier and remembers what it created, for rollback.
struct StoreSink<'a> {
    disk: &'a DiskTier,
    created: Vec<Hash32>,
    touched: Vec<Hash32>,
}

impl BlobSink for StoreSink<'_> {
    fn import(
        &mut self,
        input: &mut dyn std::io::Read,
        max_bytes: u64,
    ) -> std::io::Result<ImportedBlob> {
        let (blob, how) = self.disk.import(input, max_bytes)?;
        if how == Imported::New {
            self.created.push(blob.hash);
        }
        self.touched.push(blob.hash);
        Ok(blob)
    }
}

impl StoreSink<'_> {
    fn rollback(&self) {
        for hash in &self.created {
            self.disk.remove(hash);
        }
    }
}

impl Ingest {
    /// Publishing into `core`'s store and catalog, then on the mesh (`mesh`), to the cluster
    /// (`cluster`) and to the plugins.
    pub fn new(
        core: Arc<Core>,
        mesh: Arc<MeshPlane>,
        cluster: ClusterHandle,
        plugins: Arc<Plugins>,
    ) -> Self {
        Self {
            core,
            mesh,
            cluster,
            plugins,
            one_at_a_time: Mutex::new(()),
        }
    }

    /// Runs one ingest (blocking: call from `spawn_blocking`).
    ///
    /// # Errors
    /// A malformed request; any [`mhc_origin::IngestError`]; the catalog refusing the manifest.
    /// Nothing is published in any of these cases.
    pub fn ingest(&self, cmd: &IngestCommand) -> anyhow::Result<IngestOutcome> {
        let result = self.ingest_inner(cmd);
        self.core.metrics.record_ingest(match &result {
            Ok(o) if o.changed => "published",
            Ok(_) => "unchanged",
            Err(_) => "failed",
        });
        result
    }

    fn ingest_inner(&self, cmd: &IngestCommand) -> anyhow::Result<IngestOutcome> {
        let state = &*self.core;
        let content_id = ContentId::new(cmd.content_id.clone())
            .with_context(|| format!("content id {:?}", cmd.content_id))?;
        let media_kind = match cmd.media_kind.as_deref() {
            None => None,
            Some("audio") => Some(MediaKind::Audio),
            Some("video") => Some(MediaKind::Video),
            Some(other) => bail!("media kind {other:?}: expected audio or video"),
        };
        if !cmd.source.is_absolute() {
            bail!(
                "source {}: give an absolute path (the daemon does not share the CLI's working \
             directory)",
                cmd.source.display()
            );
        }
        let req = IngestRequest {
            content_id: content_id.clone(),
            title: cmd.title.clone(),
            artist_id: cmd.artist_id.clone(),
            media_kind,
            codecs: cmd.codecs.clone(),
            source: cmd.source.clone(),
        };

        let _one_at_a_time = self.one_at_a_time.lock();
        // A standby refuses before it stores anything (and the gate checks again at commit).
        state.writes.may_write()?;
        let latest = state.catalog.latest(&content_id);
        let next = latest.as_ref().map_or(1, |p| p.manifest().version + 1);
        let mut sink = StoreSink {
            disk: state.store.disk(),
            created: Vec::new(),
            touched: Vec::new(),
        };
        let mut manifest = match ingest_rendition(&req, next, &mut sink) {
            Ok(m) => m,
            Err(e) => {
                sink.rollback();
                return Err(e.into());
            }
        };
        let decision = publish_version(latest.as_ref().map(|p| p.manifest()), &manifest);
        if let (PublishDecision::Unchanged { .. }, Some(latest)) = (&decision, latest) {
            tracing::info!(content = %content_id, version = latest.manifest().version, "ingest: unchanged");
            return Ok(IngestOutcome {
                published: latest,
                changed: false,
            });
        }
        manifest.version = decision.version();
        // The blobs are durable before the manifest that names them is written, and the manifest
        // is the last write: a failure before it rolls the new blobs back; a manifest that was
        // written but not flushed may still reach the disk, so its blobs stay.
        let commit = match state.store.disk().sync_names(&sink.touched) {
            Err(err) => Err((
                true,
                anyhow::Error::new(err).context("syncing the blob store"),
            )),
            Ok(()) => {
                let signed = manifest.sign(&state.publisher);
                match state.writes.enter() {
                    Err(not_primary) => Err((true, anyhow::Error::new(not_primary))),
                    Ok(writing) => match state.catalog.publish(signed) {
                        Err(err) => {
                            let roll_back = !matches!(err, CatalogError::Unflushed(_));
                            Err((roll_back, anyhow::Error::new(err)))
                        }
                        // Written, but the lease lapsed meanwhile: not acknowledged (the
                        // operator publishes again at the primary; the blobs stay, the
                        // manifest names them).
                        Ok(_) if !writing.still_held(&state.writes) => Err((
                            false,
                            anyhow::anyhow!(
                                "{}; this version was written here but is not acknowledged",
                                NotPrimary(state.writes.standing())
                            ),
                        )),
                        Ok(p) => Ok((p, writing.epoch())),
                    },
                }
            }
        };
        match commit {
            Ok((published, epoch)) => {
                self.plugins.published(&published);
                // Acknowledged once the standbys hold the publication: its blobs copied, for
                // which they are given time at a modest rate on top of the usual wait.
                let copying =
                    std::time::Duration::from_secs(published.blob_bytes() / STANDBY_COPY_RATE);
                tokio::runtime::Handle::current()
                    .block_on(state.writes.replicated(SYNC_TIMEOUT + copying));
                let m = published.manifest();
                // Ingest runs on a blocking thread of the runtime, so it may wait for the mesh
                // store. A failure here leaves the content published for HTTP and QUIC; the mesh
                // import is retried at the next start.
                let disk = state.store.disk();
                let mesh_root = tokio::runtime::Handle::current()
                .block_on(self.mesh.publish(&published, |h| disk.blob_path(h)))
                .unwrap_or_else(|err| {
                    tracing::error!(content = %content_id, error = %format!("{err:#}"), "mesh import failed");
                    [0; 32]
                });
                self.cluster.announce(ContentAnnouncement {
                    peer_id: Vec::new(),
                    id: m.content_id.to_string(),
                    version: m.version,
                    manifest_hash: published.signed.manifest_hash(),
                    publisher: m.publisher,
                    mesh_root,
                    sent_at_ms: 0,
                });
                tracing::info!(
                    content = %content_id,
                    version = published.manifest().version,
                    segments = published.manifest().segments.len(),
                    manifest = %published.hash_hex,
                    epoch,
                    "published"
                );
                Ok(IngestOutcome {
                    published,
                    changed: true,
                })
            }
            Err((roll_back, e)) => {
                if roll_back {
                    sink.rollback();
                } else {
                    tracing::error!(
                        content = %content_id,
                        error = %format!("{e:#}"),
                        "ingest failed after the manifest was written; its blobs are kept"
                    );
                }
                Err(e)
            }
        }
    }
}
