//! The node's one content-addressed segment store: a bounded RAM tier of shared [`Bytes`] in front
//! of BLAKE3-named files on disk, shared by every plane, and behind them the mesh plane's
//! iroh-blobs store (where a mesh node keeps what it replicated).
//!
//! Bytes enter only with a checked hash ([`DiskTier::import_file`] hashes while it copies;
//! [`DiskTier::put_verified`] checks first) and leave only after being hashed again on their way
//! into RAM, so bit-rot or tampering on disk is never served.

mod aligned;
mod disk;
mod ram;
mod s3fifo;

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use mhc_manifest::Hash32;

pub use aligned::AlignedBlob;
pub use disk::{DiskTier, Imported};
pub use ram::RamTier;
pub use s3fifo::S3Fifo;

use crate::mesh::MeshPlane;
use crate::metrics::Metrics;

/// Why a blob could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store does not hold the blob.
    #[error("blob {} is not in the store", hex::encode(.0))]
    Missing(Hash32),
    /// The bytes on disk no longer hash to their name; they were moved aside and not served.
    #[error("blob {} is corrupt on disk (hash mismatch); moved to blobs/corrupt", hex::encode(.0))]
    Corrupt(Hash32),
    /// Reading the disk failed.
    #[error("reading blob {}: {source}", hex::encode(hash))]
    Io {
        /// The blob.
        hash: Hash32,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// RAM tier + disk tier.
#[derive(Debug)]
pub struct Store {
    ram: RamTier,
    disk: DiskTier,
    mesh: OnceLock<Arc<MeshPlane>>,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Opens the store under `blobs_dir`.
    ///
    /// # Errors
    /// The disk tier cannot be opened.
    pub fn open(
        blobs_dir: &Path,
        memory_bytes: u64,
        disk_bytes: u64,
        evictable: bool,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        Ok(Self {
            ram: RamTier::new(memory_bytes),
            disk: DiskTier::open(blobs_dir, disk_bytes, evictable)?,
            mesh: OnceLock::new(),
            metrics,
        })
    }

    /// Puts the mesh plane's store behind the disk tier (once, at start).
    pub fn attach_mesh(&self, mesh: Arc<MeshPlane>) {
        let _ = self.mesh.set(mesh);
    }

    /// The disk tier, for imports.
    pub fn disk(&self) -> &DiskTier {
        &self.disk
    }

    /// The RAM tier.
    pub fn ram(&self) -> &RamTier {
        &self.ram
    }

    /// The verified bytes of a blob: from RAM, or read from disk, re-hashed, and kept in RAM.
    ///
    /// # Errors
    /// [`StoreError::Missing`], [`StoreError::Corrupt`] (counted and logged), I/O.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled read leaves the store unchanged.
    pub async fn get(self: &Arc<Self>, hash: &Hash32) -> Result<Bytes, StoreError> {
        if let Some(bytes) = self.ram.get(hash) {
            self.disk.touch(hash);
            self.metrics.store_hit();
            return Ok(bytes);
        }
        self.metrics.store_miss();
        let this = Arc::clone(self);
        let hash = *hash;
        let from_disk = tokio::task::spawn_blocking(move || this.load_from_disk(&hash))
            .await
            .map_err(|e| StoreError::Io {
                hash,
                source: io::Error::other(e),
            })?;
        match (from_disk, self.mesh.get()) {
            (Err(StoreError::Missing(_)), Some(mesh)) => self.load_from_mesh(mesh, &hash).await,
            (result, _) => result,
        }
    }

    /// A blob of the mesh plane's store, re-hashed like a disk read before it is served.
    async fn load_from_mesh(&self, mesh: &MeshPlane, hash: &Hash32) -> Result<Bytes, StoreError> {
        let Some(bytes) = mesh.get_bytes(hash).await else {
            return Err(StoreError::Missing(*hash));
        };
        if blake3::hash(&bytes).as_bytes() != hash {
            self.metrics.store_corrupt();
            tracing::error!(blob = %hex::encode(hash), "mesh store blob does not match its hash; not served");
            return Err(StoreError::Corrupt(*hash));
        }
        self.ram.insert(*hash, bytes.clone());
        Ok(bytes)
    }

    fn load_from_disk(&self, hash: &Hash32) -> Result<Bytes, StoreError> {
        let bytes = match self.disk.read(hash) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(StoreError::Missing(*hash)),
            Err(source) => {
                return Err(StoreError::Io {
                    hash: *hash,
                    source,
                })
            }
        };
        if blake3::hash(&bytes).as_bytes() != hash {
            self.metrics.store_corrupt();
            tracing::error!(
                blob = %hex::encode(hash),
                path = %self.disk.blob_path(hash).display(),
                "blob on disk does not match its hash; quarantined, not served"
            );
            self.disk.quarantine(hash);
            self.ram.remove(hash);
            return Err(StoreError::Corrupt(*hash));
        }
        let bytes = Bytes::from(bytes);
        self.ram.insert(*hash, bytes.clone());
        Ok(bytes)
    }
}
