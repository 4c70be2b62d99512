//! The RAM tier: verified blobs as shared [`Bytes`], bounded by `cache.memory_mb`.
//!
//! A hit hands out a reference-counted clone, so a thousand viewers of one hot segment share one
//! copy and no request copies bytes (hyper has no sendfile; this is how a hyper server keeps up
//! with nginx). Eviction is CLOCK (second chance): cheap on every hit (one flag), and a blob that
//! was read again since it last came round survives the sweep.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use mhc_manifest::Hash32;

#[derive(Debug)]
struct Slot {
    bytes: Bytes,
    referenced: bool,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<Hash32, Slot>,
    clock: VecDeque<Hash32>,
    used_bytes: u64,
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
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The blob, if held. Marks it recently used.
    pub fn get(&self, hash: &Hash32) -> Option<Bytes> {
        let mut inner = self.inner.lock().expect("ram tier lock poisoned");
        let slot = inner.slots.get_mut(hash)?;
        slot.referenced = true;
        Some(slot.bytes.clone())
    }

    /// Adds a verified blob, evicting others as needed. Blobs larger than a quarter of the tier
    /// are not kept: one huge object must not flush everything hot.
    pub fn insert(&self, hash: Hash32, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.capacity_bytes / 4 {
            return;
        }
        let mut inner = self.inner.lock().expect("ram tier lock poisoned");
        if inner.slots.contains_key(&hash) {
            return;
        }
        while inner.used_bytes + len > self.capacity_bytes {
            let Some(victim) = inner.clock.pop_front() else {
                break;
            };
            let second_chance = match inner.slots.get_mut(&victim) {
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    true
                }
                Some(_) => false,
                None => continue,
            };
            if second_chance {
                inner.clock.push_back(victim);
            } else if let Some(slot) = inner.slots.remove(&victim) {
                inner.used_bytes -= slot.bytes.len() as u64;
            }
        }
        inner.used_bytes += len;
        inner.clock.push_back(hash);
        inner.slots.insert(
            hash,
            Slot {
                bytes,
                referenced: false,
            },
        );
    }

    /// Drops a blob (e.g. found corrupt on disk).
    pub fn remove(&self, hash: &Hash32) {
        let mut inner = self.inner.lock().expect("ram tier lock poisoned");
        if let Some(slot) = inner.slots.remove(hash) {
            inner.used_bytes -= slot.bytes.len() as u64;
            inner.clock.retain(|h| h != hash);
        }
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> u64 {
        self.inner
            .lock()
            .expect("ram tier lock poisoned")
            .used_bytes
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
    fn bounded_with_second_chance() {
        let tier = RamTier::new(400);
        for i in 0..4 {
            tier.insert(h(i), Bytes::from(vec![i; 100]));
        }
        assert_eq!(tier.used_bytes(), 400);
        // Touch 0: it survives the next eviction; 1 (untouched, oldest after 0) goes.
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
