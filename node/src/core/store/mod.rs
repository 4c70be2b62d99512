//! The node's one content-addressed segment store: a bounded RAM tier of shared [`Bytes`] in front
//! of BLAKE3-named files on disk, shared by every plane, and behind them a [`BlobSource`]: the
//! mesh plane's iroh-blobs store, where a mesh node keeps what it replicated.
//!
//! Bytes enter only with a checked hash ([`DiskTier::import`] hashes while it copies;
//! [`DiskTier::put_verified`] checks first) and leave only after being hashed again on their way
//! into RAM, or as a file whose stamp shows it unchanged since it was last hashed (see
//! [`verified`]), so bit-rot or tampering on disk is never served.

mod aligned;
mod disk;
mod ram;
mod s3fifo;
mod verified;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use mhc_manifest::Hash32;
use parking_lot::Mutex;

pub use aligned::AlignedBlob;
pub use disk::{blob_file, DiskTier, Imported, Opened};
pub use ram::RamTier;
pub use s3fifo::S3Fifo;
pub use verified::FileStamp;

use super::metrics::Metrics;

/// A store of whole blobs behind the disk tier (the mesh plane's iroh-blobs store). What it
/// returns is hashed again before it is served or kept, like a disk read.
pub trait BlobSource: Send + Sync + std::fmt::Debug + 'static {
    /// The bytes of a complete blob, if the source holds it.
    ///
    /// # Cancel safety
    /// Must be cancel-safe: a cancelled read changes nothing.
    fn get_blob<'a>(&'a self, hash: &'a Hash32) -> BoxFuture<'a, Option<Bytes>>;
}

/// Why a blob could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
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
        /// The I/O error (shared: every reader of a coalesced read gets it).
        #[source]
        source: Arc<io::Error>,
    },
}

/// A verified blob as it is best sent: its file, for a writer that can send files with no
/// copy through user space, or its bytes.
#[derive(Debug)]
pub enum Sendable {
    /// The blob's file, hashed since it was last written.
    File {
        /// The open file.
        file: Arc<std::fs::File>,
        /// Its stamp when opened, which matched the verified one; its length is the blob's.
        stamp: FileStamp,
    },
    /// The blob's bytes (RAM tier, or just read and hashed).
    Bytes(Bytes),
}

/// Most blob files hashed in the background at once (each holds one blob in memory while it
/// is hashed).
const MAX_BACKGROUND_CHECKS: usize = 2;

/// A disk read every concurrent reader of one blob awaits.
type SharedRead = Shared<BoxFuture<'static, Result<Bytes, StoreError>>>;

/// RAM tier + disk tier.
pub struct Store {
    ram: RamTier,
    disk: DiskTier,
    behind: Option<Arc<dyn BlobSource>>,
    metrics: Arc<Metrics>,
    /// Disk reads in flight by blob: a cold segment that many viewers ask for at once is read
    /// and hashed once, into one buffer they all share, not once (and one copy) per viewer.
    reading: Mutex<HashMap<Hash32, SharedRead>>,
    /// Blobs served from RAM whose files are being hashed in the background, so the next
    /// request can send the file (one check per blob at a time).
    checking: Mutex<std::collections::HashSet<Hash32>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("ram", &self.ram)
            .field("disk", &self.disk)
            .field("behind", &self.behind)
            .field("reading", &self.reading.lock().len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store under `blobs_dir`, with `behind` (if any) as its last tier.
    ///
    /// # Errors
    /// The disk tier cannot be opened.
    pub fn open(
        blobs_dir: &Path,
        memory_bytes: u64,
        disk_bytes: u64,
        evictable: bool,
        metrics: Arc<Metrics>,
        behind: Option<Arc<dyn BlobSource>>,
    ) -> io::Result<Self> {
        Ok(Self {
            ram: RamTier::new(memory_bytes),
            disk: DiskTier::open(blobs_dir, disk_bytes, evictable)?,
            behind,
            metrics,
            reading: Mutex::new(HashMap::new()),
            checking: Mutex::new(std::collections::HashSet::new()),
        })
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
        let hash = *hash;
        let from_disk = self.read_shared(hash).await;
        match (from_disk, &self.behind) {
            (Err(StoreError::Missing(_)), Some(source)) => {
                self.load_from_source(source.as_ref(), &hash).await
            }
            (result, _) => result,
        }
    }

    /// A verified blob for a writer that can send files: the blob's file when it was hashed
    /// since it was last written (and recently: see [`verified`]), else its bytes as
    /// [`Self::get`] gives them. A file written since its check is hashed again now, and
    /// quarantined if it fails; a blob served from RAM whose file was never checked has it
    /// checked in the background, so later requests send the file.
    ///
    /// # Errors
    /// As [`Self::get`].
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled read leaves the store unchanged (a check it started finishes).
    pub async fn get_sendable(self: &Arc<Self>, hash: &Hash32) -> Result<Sendable, StoreError> {
        let hash = *hash;
        // Inline, not in a blocking task: an open and an fstat of a file whose path the kernel
        // has cached cost microseconds, less than the hand-over to another thread.
        match self.disk.open_verified(&hash) {
            Opened::Verified { file, stamp } => {
                self.metrics.store_hit();
                Ok(Sendable::File {
                    file: Arc::new(file),
                    stamp,
                })
            }
            Opened::Stale => {
                // Written since it was hashed (or hashed long ago): the bytes in RAM may be
                // good, but the file is what is in question; hash it again before anything.
                self.ram.remove(&hash);
                self.metrics.store_miss();
                self.read_shared(hash).await.map(Sendable::Bytes)
            }
            Opened::Unverified => {
                let bytes = self.get(&hash).await?;
                if !self.disk.was_verified(&hash) {
                    self.check_in_background(hash);
                }
                Ok(Sendable::Bytes(bytes))
            }
        }
    }

    /// Hashes a blob's file in a blocking task, so it is stamped as verified (or quarantined):
    /// one check per blob at a time, at most [`MAX_BACKGROUND_CHECKS`] at once (a request
    /// that finds them busy leaves its blob for a later one), none for a blob with no file.
    fn check_in_background(self: &Arc<Self>, hash: Hash32) {
        {
            let mut checking = self.checking.lock();
            if checking.len() >= MAX_BACKGROUND_CHECKS || !checking.insert(hash) {
                return;
            }
        }
        if !self.disk.contains(&hash) {
            self.checking.lock().remove(&hash);
            return;
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            this.check_file(&hash);
            this.checking.lock().remove(&hash);
        });
    }

    /// Reads and hashes a blob's file: stamped as verified if it matches, quarantined (and
    /// dropped from RAM) if not. The RAM tier is left as it is otherwise.
    fn check_file(&self, hash: &Hash32) {
        let Ok(Some((bytes, stamp))) = self.disk.read(hash) else {
            return;
        };
        if blake3::hash(&bytes).as_bytes() == hash {
            self.disk.record_verified(*hash, stamp);
        } else {
            self.report_corrupt(hash);
        }
    }

    /// A blob file that does not hash to its name: counted, logged, moved aside, dropped from
    /// RAM, never served.
    fn report_corrupt(&self, hash: &Hash32) {
        self.metrics.store_corrupt();
        tracing::error!(
            blob = %hex::encode(hash),
            path = %self.disk.blob_path(hash).display(),
            "blob on disk does not match its hash; quarantined, not served"
        );
        self.disk.quarantine(hash);
        self.ram.remove(hash);
    }

    /// The disk read of `hash` that is in flight, or a new one; it runs in a blocking task
    /// of its own (a reader that goes away does not cancel it for the others) and leaves the
    /// table when done, by which time a successful read is in the RAM tier.
    fn read_shared(self: &Arc<Self>, hash: Hash32) -> SharedRead {
        let mut reading = self.reading.lock();
        if let Some(read) = reading.get(&hash) {
            return read.clone();
        }
        // A read that finished between the caller's RAM lookup and this lock put its bytes in
        // the RAM tier before it left the table: serve those rather than read a second copy.
        if let Some(bytes) = self.ram.get(&hash) {
            return futures::future::ready(Ok(bytes)).boxed().shared();
        }
        let this = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let result = this.load_from_disk(&hash);
            this.reading.lock().remove(&hash);
            result
        });
        let read = async move {
            task.await.unwrap_or_else(|e| {
                Err(StoreError::Io {
                    hash,
                    source: Arc::new(io::Error::other(e)),
                })
            })
        }
        .boxed()
        .shared();
        reading.insert(hash, read.clone());
        read
    }

    /// A blob of the source behind the disk, re-hashed like a disk read before it is served.
    async fn load_from_source(
        &self,
        source: &dyn BlobSource,
        hash: &Hash32,
    ) -> Result<Bytes, StoreError> {
        let Some(bytes) = source.get_blob(hash).await else {
            return Err(StoreError::Missing(*hash));
        };
        if blake3::hash(&bytes).as_bytes() != hash {
            self.metrics.store_corrupt();
            tracing::error!(blob = %hex::encode(hash), "blob from behind the disk tier does not match its hash; not served");
            return Err(StoreError::Corrupt(*hash));
        }
        self.ram.insert(*hash, bytes.clone());
        Ok(bytes)
    }

    fn load_from_disk(&self, hash: &Hash32) -> Result<Bytes, StoreError> {
        let (bytes, stamp) = match self.disk.read(hash) {
            Ok(Some(read)) => read,
            Ok(None) => return Err(StoreError::Missing(*hash)),
            Err(source) => {
                return Err(StoreError::Io {
                    hash: *hash,
                    source: Arc::new(source),
                })
            }
        };
        if blake3::hash(&bytes).as_bytes() != hash {
            self.report_corrupt(hash);
            return Err(StoreError::Corrupt(*hash));
        }
        self.disk.record_verified(*hash, stamp);
        let bytes = Bytes::from(bytes);
        self.ram.insert(*hash, bytes.clone());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_cold_reads_of_one_blob_share_one_read_and_one_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(
            Store::open(
                &dir.path().join("blobs"),
                64 << 20,
                1 << 30,
                true,
                metrics,
                None,
            )
            .unwrap(),
        );
        let bytes = vec![7u8; 4 << 20];
        let hash = *blake3::hash(&bytes).as_bytes();
        store.disk().put_verified(&hash, &bytes).unwrap();

        let readers: Vec<_> = (0..32)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.get(&hash).await.unwrap() })
            })
            .collect();
        let mut buffers = Vec::new();
        for reader in readers {
            buffers.push(reader.await.unwrap());
        }
        // One read made one buffer; every reader holds it (from the shared read, or from the
        // RAM tier the read filled), none a copy of its own.
        assert!(buffers.iter().all(|b| b.as_ptr() == buffers[0].as_ptr()));
        assert_eq!(buffers[0], bytes);
        assert!(store.reading.lock().is_empty(), "the read left the table");
    }
}
