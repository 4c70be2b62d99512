//! The disk tier: one file per blob, named by its BLAKE3 hash, under `data_dir/blobs`.
//!
//! Layout: `blobs/ab/ab12…(64 hex)`. A blob is written to `blobs/tmp/`, hashed while it is
//! written, fsynced, and only then renamed to its name, so a name always holds complete bytes
//! whose hash was checked when they arrived. Bit-rot after that is caught on read (the RAM tier
//! re-hashes what it loads) and the file is moved to `blobs/corrupt/`.
//!
//! The layout is plain files on purpose: iroh-blobs' store can import them by reference
//! (`ImportMode::TryReference`) when the mesh plane arrives, so nothing is stored twice.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use mhc_manifest::Hash32;
use mhc_origin::ImportedBlob;

use super::aligned::AlignedBlob;
use super::s3fifo::S3Fifo;
use super::verified::{FileStamp, Verification, VerifiedFiles};

/// Buffer of the copy loop. 1 MiB: large enough that hashing and copying run at memory speed,
/// small enough that many concurrent imports stay cheap.
const COPY_BUFFER_BYTES: usize = 1024 * 1024;

/// Content-addressed blob files on disk.
#[derive(Debug)]
pub struct DiskTier {
    root: PathBuf,
    tmp: PathBuf,
    corrupt: PathBuf,
    capacity_bytes: u64,
    used_bytes: AtomicU64,
    /// Eviction policy over every blob, when blobs may be evicted (a cache: edge, mesh).
    /// `None` at an origin, whose blobs are the published content itself: a full store refuses
    /// new bytes instead of dropping published ones.
    evictable: Option<Mutex<S3Fifo<Hash32>>>,
    /// Files hashed and found good since they were last written (see [`super::verified`]).
    verified: VerifiedFiles,
}

/// A blob file opened to be sent as it is, or why it may not be.
#[derive(Debug)]
pub enum Opened {
    /// The file hashed to its name since it was last written: send these `len` bytes.
    Verified {
        /// The open file.
        file: File,
        /// Its stamp now, which matched the verified one.
        stamp: FileStamp,
    },
    /// Hashed once, but written since or too long ago: hash it again first.
    Stale,
    /// Not hashed by this process yet (or not on disk).
    Unverified,
}

/// Whether an import found the blob already present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The blob was written now.
    New,
    /// The store already held these bytes; nothing was written.
    Existing,
}

impl DiskTier {
    /// Opens (creating if needed) the store at `root`, bounded to `capacity_bytes`.
    ///
    /// Leftover temporary files of an interrupted write are deleted: they were never named, so
    /// nothing refers to them.
    ///
    /// # Errors
    /// The folders cannot be created or listed.
    pub fn open(root: &Path, capacity_bytes: u64, evictable: bool) -> io::Result<Self> {
        let tmp = root.join("tmp");
        let corrupt = root.join("corrupt");
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&corrupt)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        let mut used = 0u64;
        let mut found: Vec<(std::time::SystemTime, Hash32, u64)> = Vec::new();
        for shard in fs::read_dir(root)? {
            let shard = shard?;
            let name = shard.file_name();
            if name.len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in fs::read_dir(shard.path())? {
                let blob = blob?;
                let meta = blob.metadata()?;
                used += meta.len();
                let mut hash = [0u8; 32];
                if hex::decode_to_slice(blob.file_name().as_encoded_bytes(), &mut hash).is_ok() {
                    let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    found.push((when, hash, meta.len()));
                }
            }
        }
        let tier = Self {
            root: root.to_owned(),
            tmp,
            corrupt,
            capacity_bytes,
            used_bytes: AtomicU64::new(used),
            evictable: evictable.then(|| Mutex::new(S3Fifo::new(capacity_bytes))),
            verified: VerifiedFiles::default(),
        };
        if let Some(policy) = &tier.evictable {
            // Oldest first, so after a restart the most recently written blobs are kept.
            found.sort();
            let mut victims = Vec::new();
            {
                let mut policy = policy.lock();
                for (_, hash, size) in found {
                    victims.extend(policy.insert(hash, size));
                }
            }
            for v in victims {
                tier.delete_file(&v);
            }
        }
        Ok(tier)
    }

    /// Bytes held on disk.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// The configured bound (`cache.disk_gb`).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    fn path_of(&self, hash: &Hash32) -> PathBuf {
        blob_file(&self.root, hash)
    }

    /// Whether the blob is present.
    pub fn contains(&self, hash: &Hash32) -> bool {
        self.path_of(hash).is_file()
    }

    /// Copies `input` into the store while hashing it; at most `max_bytes` are accepted.
    ///
    /// # Errors
    /// Reading `input`, writing the store, more than `max_bytes`, or a full store.
    pub fn import(
        &self,
        input: &mut dyn Read,
        max_bytes: u64,
    ) -> io::Result<(ImportedBlob, Imported)> {
        let (tmp_path, mut out) = self.temp_file()?;
        let result = (|| {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; COPY_BUFFER_BYTES];
            let mut size = 0u64;
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                size += n as u64;
                if size > max_bytes {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("larger than the {max_bytes}-byte limit"),
                    ));
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
            }
            Ok(ImportedBlob {
                hash: *hasher.finalize().as_bytes(),
                size,
            })
        })();
        let blob = match result {
            Ok(blob) => blob,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        let imported = self.commit(tmp_path, out, &blob)?;
        Ok((blob, imported))
    }

    /// Stores `bytes` under `expected`, after checking that they hash to it.
    ///
    /// # Errors
    /// `InvalidData` when the hash differs (nothing is written); I/O errors; a full store.
    pub fn put_verified(&self, expected: &Hash32, bytes: &[u8]) -> io::Result<Imported> {
        check_hash(expected, bytes)?;
        let (tmp_path, out) = self.write_buffered(bytes)?;
        self.commit(tmp_path, out, &imported(expected, bytes))
    }

    /// Stores a fill's `blob` under `expected`, after checking that it hashes to it, writing
    /// it with `O_DIRECT` where the filesystem allows (see [`super::aligned`]); buffered
    /// otherwise.
    ///
    /// # Errors
    /// `InvalidData` when the hash differs (nothing is written); I/O errors; a full store.
    pub fn put_verified_aligned(
        &self,
        expected: &Hash32,
        blob: &AlignedBlob,
    ) -> io::Result<Imported> {
        check_hash(expected, blob.as_slice())?;
        let (tmp_path, out) = match self.write_direct(blob) {
            Some(written) => written?,
            None => self.write_buffered(blob.as_slice())?,
        };
        self.commit(tmp_path, out, &imported(expected, blob.as_slice()))
    }

    /// Writes `bytes` to a new temporary file through the page cache.
    fn write_buffered(&self, bytes: &[u8]) -> io::Result<(PathBuf, File)> {
        let (tmp_path, mut out) = self.temp_file()?;
        if let Err(e) = out.write_all(bytes) {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        Ok((tmp_path, out))
    }

    /// Writes `blob` to a new temporary file with `O_DIRECT`: whole blocks, then the file is cut
    /// to the blob's length. `None` when direct I/O is not possible here (a filesystem such as
    /// tmpfs that refuses it, or a platform without it), so the caller writes buffered.
    fn write_direct(&self, blob: &AlignedBlob) -> Option<io::Result<(PathBuf, File)>> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;

            let blocks = blob.whole_blocks()?;
            let path = match temp_name(&self.tmp) {
                Ok(path) => path,
                Err(e) => return Some(Err(e)),
            };
            let mut file = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => return None,
                Err(e) => return Some(Err(e)),
            };
            let written = file
                .write_all(blocks)
                .and_then(|()| file.set_len(blob.len() as u64));
            match written {
                Ok(()) => Some(Ok((path, file))),
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    // Refused at write time (some filesystems accept the flag but not the I/O):
                    // buffered it is. Anything else is a real error.
                    (e.kind() != io::ErrorKind::InvalidInput).then_some(Err(e))
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = blob;
            None
        }
    }

    fn temp_file(&self) -> io::Result<(PathBuf, File)> {
        let path = temp_name(&self.tmp)?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Makes a fully written temporary file durable and gives it its name.
    fn commit(&self, tmp_path: PathBuf, file: File, blob: &ImportedBlob) -> io::Result<Imported> {
        let final_path = self.path_of(&blob.hash);
        let discard = |file: File| {
            drop(file);
            let _ = fs::remove_file(&tmp_path);
        };
        let Some(policy) = &self.evictable else {
            if final_path.is_file() {
                discard(file);
                return Ok(Imported::Existing);
            }
            let reserved = self.used_bytes.fetch_add(blob.size, Ordering::Relaxed) + blob.size;
            if reserved > self.capacity_bytes {
                self.used_bytes.fetch_sub(blob.size, Ordering::Relaxed);
                discard(file);
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "blob store full: {} of {} bytes used (cache.disk_gb)",
                        reserved - blob.size,
                        self.capacity_bytes
                    ),
                ));
            }
            // Published content at an origin is made durable before it is named.
            let named = file.sync_data().and_then(|()| {
                drop(file);
                self.name(&tmp_path, &final_path)
            });
            if let Err(e) = named {
                self.used_bytes.fetch_sub(blob.size, Ordering::Relaxed);
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
            return Ok(Imported::New);
        };
        // An evictable store is a cache: a blob lost or torn by a crash is caught by the hash
        // check on read and filled again, so there is no fsync (most of a fill's cost on
        // loopback). The policy lock is held from the presence check to the rename, so the
        // policy and the files never disagree: a concurrent import can neither pick as its
        // victim a blob whose file is not named yet (which would leave that file untracked and
        // the store over its bound) nor name the same blob twice.
        let mut policy = policy.lock();
        if final_path.is_file() {
            discard(file);
            return Ok(Imported::Existing);
        }
        let victims = policy.insert(blob.hash, blob.size);
        if victims.contains(&blob.hash) {
            for victim in victims.iter().filter(|v| *v != &blob.hash) {
                self.delete_file(victim);
            }
            discard(file);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "blob of {} bytes exceeds the whole store (cache.disk_gb)",
                    blob.size
                ),
            ));
        }
        for victim in &victims {
            self.delete_file(victim);
        }
        drop(file);
        if let Err(e) = self.name(&tmp_path, &final_path) {
            policy.remove(&blob.hash);
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        self.used_bytes.fetch_add(blob.size, Ordering::Relaxed);
        Ok(Imported::New)
    }

    /// Gives a complete temporary file its content-addressed name.
    fn name(&self, tmp_path: &Path, final_path: &Path) -> io::Result<()> {
        fs::create_dir_all(final_path.parent().expect("blob paths have a shard folder"))?;
        fs::rename(tmp_path, final_path)
    }

    /// Makes the renames of earlier imports durable (fsync of the shard folders and the root).
    ///
    /// # Errors
    /// I/O errors opening or syncing the folders.
    pub fn sync_names(&self, hashes: &[Hash32]) -> io::Result<()> {
        let mut shards: Vec<PathBuf> = hashes
            .iter()
            .filter_map(|h| self.path_of(h).parent().map(Path::to_owned))
            .collect();
        shards.sort();
        shards.dedup();
        shards.push(self.root.clone());
        for dir in shards {
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Reads a whole blob, or `None` if absent, with the stamp its file had when opened. The
    /// caller verifies the hash, then [`Self::record_verified`] the stamp.
    ///
    /// # Errors
    /// I/O errors other than absence.
    pub fn read(&self, hash: &Hash32) -> io::Result<Option<(Vec<u8>, FileStamp)>> {
        self.touch(hash);
        let mut file = match File::open(self.path_of(hash)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // Stamped before the read: a write during it moves the change time past the stamp.
        let stamp = FileStamp::of(&file.metadata()?);
        let mut bytes = Vec::with_capacity(usize::try_from(stamp.len()).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        Ok(Some((bytes, stamp)))
    }

    /// Records that the blob's file, as `stamp` describes it, hashed to its name, if the file
    /// under the blob's name is still that file in that state (it may have been evicted,
    /// quarantined or replaced while it was hashed).
    pub fn record_verified(&self, hash: Hash32, stamp: FileStamp) {
        let current = fs::metadata(self.path_of(&hash)).map(|meta| FileStamp::of(&meta));
        if current.is_ok_and(|current| current == stamp) {
            self.verified.record(hash, stamp);
        }
    }

    /// Whether the blob's file was verified by this process (it may have gone stale since).
    pub fn was_verified(&self, hash: &Hash32) -> bool {
        self.verified.contains(hash)
    }

    /// Opens a blob's file to send it as it is, if it was hashed since it was last written.
    /// Counts as a read for eviction when it may be sent.
    pub fn open_verified(&self, hash: &Hash32) -> Opened {
        if !self.verified.contains(hash) {
            return Opened::Unverified;
        }
        let opened = File::open(self.path_of(hash)).and_then(|file| {
            let meta = file.metadata()?;
            Ok((file, meta))
        });
        let Ok((file, meta)) = opened else {
            // Gone (evicted, quarantined) or unreadable: the ordinary read path says which.
            self.verified.forget(hash);
            return Opened::Unverified;
        };
        let stamp = FileStamp::of(&meta);
        match self.verified.check(hash, &stamp) {
            Verification::Current => {
                self.touch(hash);
                Opened::Verified { file, stamp }
            }
            Verification::Stale => {
                self.verified.forget(hash);
                Opened::Stale
            }
            Verification::Unknown => Opened::Unverified,
        }
    }

    /// Records a read of a blob (also when it was served from RAM), for eviction.
    pub fn touch(&self, hash: &Hash32) {
        if let Some(policy) = &self.evictable {
            policy.lock().access(hash);
        }
    }

    fn forget(&self, hash: &Hash32) {
        self.verified.forget(hash);
        if let Some(policy) = &self.evictable {
            policy.lock().remove(hash);
        }
    }

    /// Deletes an evicted blob's file.
    fn delete_file(&self, hash: &Hash32) {
        self.verified.forget(hash);
        let path = self.path_of(hash);
        if let Ok(meta) = fs::metadata(&path) {
            if fs::remove_file(&path).is_ok() {
                self.used_bytes.fetch_sub(meta.len(), Ordering::Relaxed);
                tracing::debug!(blob = %hex::encode(hash), "evicted from the disk tier");
            }
        }
    }

    /// Deletes a blob (rollback of a failed ingest).
    pub fn remove(&self, hash: &Hash32) {
        self.forget(hash);
        let path = self.path_of(hash);
        if let Ok(meta) = fs::metadata(&path) {
            if fs::remove_file(&path).is_ok() {
                self.used_bytes.fetch_sub(meta.len(), Ordering::Relaxed);
            }
        }
    }

    /// Moves a blob whose bytes no longer match its name out of the way, so it is never served
    /// and a re-ingest or refill can write good bytes under the name.
    pub fn quarantine(&self, hash: &Hash32) {
        self.forget(hash);
        let path = self.path_of(hash);
        if let Ok(meta) = fs::metadata(&path) {
            let dest = self.corrupt.join(hex::encode(hash));
            if fs::rename(&path, &dest).is_ok() {
                self.used_bytes.fetch_sub(meta.len(), Ordering::Relaxed);
            }
        }
    }

    /// The file of a blob, for tests and operators that want to look at it.
    pub fn blob_path(&self, hash: &Hash32) -> PathBuf {
        self.path_of(hash)
    }
}

/// Where blob `hash` lives under a blob directory `root`: `<root>/<first two hex>/<hex>`. The
/// backup image keeps its blobs in the same layout, so a restore moves them into place as they
/// are.
pub fn blob_file(root: &Path, hash: &Hash32) -> PathBuf {
    let hex = hex::encode(hash);
    root.join(&hex[..2]).join(hex)
}

/// `InvalidData` unless `bytes` hash to `expected`.
fn check_hash(expected: &Hash32, bytes: &[u8]) -> io::Result<()> {
    if blake3::hash(bytes).as_bytes() == expected {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes do not match their expected BLAKE3 hash",
        ))
    }
}

/// What the store records of verified `bytes` named `hash`.
fn imported(hash: &Hash32, bytes: &[u8]) -> ImportedBlob {
    ImportedBlob {
        hash: *hash,
        size: bytes.len() as u64,
    }
}

/// A fresh random name in `tmp` for a blob being written.
fn temp_name(tmp: &Path) -> io::Result<PathBuf> {
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(io::Error::other)?;
    Ok(tmp.join(hex::encode(suffix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_evicts_to_stay_within_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskTier::open(&dir.path().join("blobs"), 10_000, true).unwrap();
        let mut hashes = Vec::new();
        for i in 0..30u8 {
            let bytes = vec![i; 1000];
            let hash = *blake3::hash(&bytes).as_bytes();
            store.put_verified(&hash, &bytes).unwrap();
            hashes.push(hash);
            assert!(
                store.used_bytes() <= 10_000,
                "{} after {i}",
                store.used_bytes()
            );
        }
        let present = hashes.iter().filter(|h| store.contains(h)).count();
        assert_eq!(present as u64 * 1000, store.used_bytes());
        assert!(present >= 9, "{present}");
        // Reopened, it still holds what is on disk, within the cap.
        drop(store);
        let store = DiskTier::open(&dir.path().join("blobs"), 5_000, true).unwrap();
        assert!(store.used_bytes() <= 5_000);
        // Larger than the whole store: refused, nothing written.
        let big = vec![1u8; 20_000];
        let err = store
            .put_verified(blake3::hash(&big).as_bytes(), &big)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn import_hashes_dedupes_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskTier::open(&dir.path().join("blobs"), 1000, false).unwrap();
        let src = dir.path().join("a");
        fs::write(&src, vec![1u8; 600]).unwrap();
        let (blob, how) = store
            .import(&mut File::open(&src).unwrap(), 10_000)
            .unwrap();
        assert_eq!(how, Imported::New);
        assert_eq!(blob.hash, *blake3::hash(&[1u8; 600]).as_bytes());
        assert_eq!(store.used_bytes(), 600);
        let (_, how) = store
            .import(&mut File::open(&src).unwrap(), 10_000)
            .unwrap();
        assert_eq!(how, Imported::Existing);
        assert_eq!(store.used_bytes(), 600);
        // Over the cap: refused, nothing left behind.
        fs::write(&src, vec![2u8; 600]).unwrap();
        let err = store
            .import(&mut File::open(&src).unwrap(), 10_000)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/tmp")).unwrap().count(),
            0
        );
        // Over the per-file limit.
        assert!(store.import(&mut File::open(&src).unwrap(), 100).is_err());
        // Reopen counts what is there.
        drop(store);
        let store = DiskTier::open(&dir.path().join("blobs"), 1000, false).unwrap();
        assert_eq!(store.used_bytes(), 600);
        assert_eq!(store.read(&blob.hash).unwrap().unwrap().0, vec![1u8; 600]);
    }

    #[test]
    fn aligned_fills_are_checked_and_stored_at_their_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskTier::open(dir.path(), 16 << 20, true).unwrap();
        // Lengths on and off the block size: a direct write pads, then cuts the file.
        for len in [1usize, 4096, 3 * 4096 + 5, (2 << 20) + 1] {
            let mut blob = AlignedBlob::zeroed(len);
            for (i, b) in blob.as_mut_slice().iter_mut().enumerate() {
                *b = (i * 7 + len) as u8;
            }
            let hash = *blake3::hash(blob.as_slice()).as_bytes();
            let mut wrong = *blake3::hash(b"other").as_bytes();
            wrong[0] ^= 1;
            let refused = store.put_verified_aligned(&wrong, &blob).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
            assert!(!store.contains(&wrong));
            assert_eq!(
                store.put_verified_aligned(&hash, &blob).unwrap(),
                Imported::New
            );
            assert_eq!(store.read(&hash).unwrap().unwrap().0, blob.as_slice());
            assert_eq!(
                store.put_verified_aligned(&hash, &blob).unwrap(),
                Imported::Existing
            );
        }
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "no temp file left"
        );
    }

    #[test]
    fn put_verified_refuses_wrong_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskTier::open(dir.path(), 1 << 20, false).unwrap();
        let hash = *blake3::hash(b"good").as_bytes();
        assert!(store.put_verified(&hash, b"evil").is_err());
        assert!(!store.contains(&hash));
        assert_eq!(store.put_verified(&hash, b"good").unwrap(), Imported::New);
        store.quarantine(&hash);
        assert!(!store.contains(&hash));
        assert_eq!(store.used_bytes(), 0);
    }
}
