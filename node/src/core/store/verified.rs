//! Which blob files were hashed and found good since they were last written: what may be sent
//! to a viewer straight from the file (`sendfile`) without hashing it again on every request.
//!
//! A file's [`FileStamp`] (device, inode, length, modification and change times) is taken when
//! the file is opened for the read that hashes it. Any write to the file afterwards moves its
//! change time, which no user can set back, so a file whose stamp still matches holds the bytes
//! that were hashed. Media rot that no write explains is caught by the re-check every stamp
//! gets after about [`RECHECK_AFTER`] (spread over ±25% by the blob's hash, so blobs verified
//! together are not all hashed again at once): the file is read and hashed again like a first
//! read, and quarantined if it fails.
//!
//! What a stamp cannot see: a write through a shared memory mapping to a page already dirty
//! (no new fault, so no new change time), or a write on a kernel with coarse timestamps in the
//! same tick as the last change; pages sent by `sendfile` and still queued in a socket are
//! references to the page cache, so a write landing then reaches the client. Only the node
//! writes under `blobs/`, and never in place (a new file is written and renamed), so these
//! need someone else writing into the node's files; bit rot on the medium is caught at the
//! re-check.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use mhc_manifest::Hash32;
use parking_lot::Mutex;

/// How long a verification holds before the file is hashed again (once, by the next request).
pub const RECHECK_AFTER: Duration = Duration::from_secs(3600);

/// What identifies one state of a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of an open file's metadata.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The file's length when stamped.
    pub fn len(&self) -> u64 {
        self.len
    }
}

/// How long blob `hash`'s verification holds: [`RECHECK_AFTER`] ± 25%, by its first byte.
fn recheck_after(hash: &Hash32) -> Duration {
    RECHECK_AFTER.mul_f64(0.75 + f64::from(hash[0]) / 510.0)
}

/// What [`VerifiedFiles::check`] found for a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Hashed since it was last written, recently enough: may be sent as it is.
    Current,
    /// Hashed once, but written since or hashed too long ago: hash it again before serving.
    Stale,
    /// Not hashed through this process yet.
    Unknown,
}

/// Stamps of verified blob files, one per blob file at most (entries leave with their files).
#[derive(Debug, Default)]
pub struct VerifiedFiles {
    stamps: Mutex<HashMap<Hash32, (FileStamp, Instant)>>,
}

impl VerifiedFiles {
    /// Records that the file of `hash`, in the state `stamp`, hashed to its name.
    pub fn record(&self, hash: Hash32, stamp: FileStamp) {
        self.stamps.lock().insert(hash, (stamp, Instant::now()));
    }

    /// Forgets a blob (its file was deleted, moved aside, or is being checked again).
    pub fn forget(&self, hash: &Hash32) {
        self.stamps.lock().remove(hash);
    }

    /// Whether a file now in the state `now` may be served as verified.
    pub fn check(&self, hash: &Hash32, now: &FileStamp) -> Verification {
        match self.stamps.lock().get(hash) {
            None => Verification::Unknown,
            Some((stamp, at)) if stamp == now && at.elapsed() < recheck_after(hash) => {
                Verification::Current
            }
            Some(_) => Verification::Stale,
        }
    }

    /// Whether the blob has a stamp at all (cheap: no file is looked at).
    pub fn contains(&self, hash: &Hash32) -> bool {
        self.stamps.lock().contains_key(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_write_after_the_stamp_makes_it_stale_even_with_the_same_length_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"good bytes").unwrap();
        let files = VerifiedFiles::default();
        let hash = [7u8; 32];
        let stamp = FileStamp::of(&std::fs::metadata(&path).unwrap());
        assert_eq!(files.check(&hash, &stamp), Verification::Unknown);
        files.record(hash, stamp);
        assert_eq!(files.check(&hash, &stamp), Verification::Current);

        std::thread::sleep(Duration::from_millis(20));
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(b"evil").unwrap();
        // Put the modification time back, as a careful tamperer would: the change time moves.
        f.set_modified(mtime).unwrap();
        drop(f);
        let now = FileStamp::of(&std::fs::metadata(&path).unwrap());
        assert_eq!(now.len(), stamp.len());
        assert_eq!(files.check(&hash, &now), Verification::Stale);
        files.forget(&hash);
        assert_eq!(files.check(&hash, &now), Verification::Unknown);
        assert!(!files.contains(&hash));
    }
}
