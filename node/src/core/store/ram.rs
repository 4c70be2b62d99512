//! The RAM tier: verified blobs as shared [`Bytes`], bounded by `cache.memory_mb`.
//!
//! A hit hands out a reference-counted clone, so a thousand viewers of one hot segment share one
//! copy and no request copies bytes in user space: what QUIC fills, HTTP/2 and TLS viewers are
//! served from (plain HTTP/1.1 viewers get verified files by `sendfile` instead, see
//! [`super::Store::get_sendable`]). Eviction is S3-FIFO ([`super::S3Fifo`]): a hit costs one counter, and a scan
//! through cold content cannot flush the hot segments.

use parking_lot::Mutex;
use std::collections::HashMap;

use bytes::Bytes;
use mhc_manifest::Hash32;

use super::s3fifo::S3Fifo;

#[derive(Debug)]
struct Inner {
    policy: S3Fifo<Hash32>,
    blobs: HashMap<Hash32, Bytes>,
}

/// Bounded in-memory tier of verified blobs.
#[derive(Debug)]
pub struct RamTier {
    capacity_bytes: u64,
    inner: Mutex<Inner>,
}

impl RamTier {
    /// An empty tier holding at most `capacity_bytes` of blob bytes (0 disables it).
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            capacity_bytes,
            inner: Mutex::new(Inner {
                policy: S3Fifo::new(capacity_bytes),
                blobs: HashMap::new(),
            }),
        }
    }

    /// The blob, if held. Counts as a read for eviction.
    pub fn get(&self, hash: &Hash32) -> Option<Bytes> {
        let mut inner = self.inner.lock();
        let bytes = inner.blobs.get(hash)?.clone();
        inner.policy.access(hash);
        Some(bytes)
    }

    /// Adds a verified blob, evicting others as needed. Blobs larger than a quarter of the tier
    /// are not kept: one huge object must not flush everything hot.
    pub fn insert(&self, hash: Hash32, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.capacity_bytes / 4 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.blobs.contains_key(&hash) {
            return;
        }
        for victim in inner.policy.insert(hash, len) {
            inner.blobs.remove(&victim);
        }
        if inner.policy.contains(&hash) {
            inner.blobs.insert(hash, bytes);
        }
    }

    /// Drops a blob (e.g. found corrupt on disk).
    pub fn remove(&self, hash: &Hash32) {
        let mut inner = self.inner.lock();
        inner.policy.remove(hash);
        inner.blobs.remove(hash);
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> u64 {
        self.inner.lock().policy.used()
    }

    /// The configured bound.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> Hash32 {
        [i; 32]
    }

    #[test]
    fn bounded_and_read_blobs_survive() {
        let tier = RamTier::new(400);
        for i in 0..4 {
            tier.insert(h(i), Bytes::from(vec![i; 100]));
        }
        assert_eq!(tier.used_bytes(), 400);
        // Read 0: it survives the next eviction; 1 (unread, oldest after 0) goes.
        assert!(tier.get(&h(0)).is_some());
        tier.insert(h(9), Bytes::from(vec![9; 100]));
        assert_eq!(tier.used_bytes(), 400);
        assert!(tier.get(&h(0)).is_some());
        assert!(tier.get(&h(1)).is_none());
        assert!(tier.get(&h(9)).is_some());
        // Too large for the tier: not kept.
        tier.insert(h(50), Bytes::from(vec![0; 101]));
        assert!(tier.get(&h(50)).is_none());
        tier.remove(&h(9));
        assert_eq!(tier.used_bytes(), 300);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let tier = RamTier::new(0);
        tier.insert(h(1), Bytes::from_static(b"x"));
        assert!(tier.get(&h(1)).is_none());
    }
}
