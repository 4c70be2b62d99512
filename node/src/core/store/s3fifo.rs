//! S3-FIFO eviction (Yang et al., SOSP 2023), weighted by object size.
//!
//! Three FIFO queues: new objects enter a small queue (10 % of the capacity); objects read
//! again while there move to the main queue, the rest are evicted and remembered in a ghost
//! queue of keys; an object that comes back while remembered goes straight to the main queue.
//! The main queue is a CLOCK with a 2-bit frequency. A scan (a viewer seeking through a whole
//! catalogue, a crawler) therefore only churns the small queue and cannot flush the hot set,
//! which plain LRU does; `tests/src/bin/cache-bench.rs` measures the difference.
//!
//! The structure only decides; the caller owns the bytes and deletes what it is told to.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Share of the capacity given to the small (probationary) queue, in percent.
const SMALL_PERCENT: u64 = 10;
/// Frequency saturates here (2 bits, as in the paper).
const MAX_FREQ: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    freq: u8,
    queue: Queue,
}

/// Size-weighted S3-FIFO over keys `K`.
#[derive(Debug)]
pub struct S3Fifo<K> {
    capacity: u64,
    entries: HashMap<K, Entry>,
    small: VecDeque<K>,
    main: VecDeque<K>,
    ghost: VecDeque<K>,
    ghost_set: HashMap<K, ()>,
    small_bytes: u64,
    main_bytes: u64,
}

impl<K: Hash + Eq + Copy> S3Fifo<K> {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: HashMap::new(),
            small_bytes: 0,
            main_bytes: 0,
        }
    }

    /// Bytes tracked.
    pub fn used(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    /// The bound.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of objects tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is tracked.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Records a read of `key` (no-op if untracked). O(1).
    pub fn access(&mut self, key: &K) -> bool {
        match self.entries.get_mut(key) {
            Some(e) => {
                e.freq = (e.freq + 1).min(MAX_FREQ);
                true
            }
            None => false,
        }
    }

    /// Admits `key` of `size` bytes, returning the keys evicted to make room (the caller
    /// deletes them). An object larger than the whole capacity is not admitted and is returned
    /// as the only eviction.
    pub fn insert(&mut self, key: K, size: u64) -> Vec<K> {
        if self.entries.contains_key(&key) {
            self.access(&key);
            return Vec::new();
        }
        if size > self.capacity {
            return vec![key];
        }
        let mut evicted = Vec::new();
        while self.used() + size > self.capacity {
            match self.evict_one() {
                Some(k) => evicted.push(k),
                None => break,
            }
        }
        let queue = if self.ghost_set.remove(&key).is_some() {
            self.ghost.retain(|k| k != &key);
            Queue::Main
        } else {
            Queue::Small
        };
        match queue {
            Queue::Small => {
                self.small.push_back(key);
                self.small_bytes += size;
            }
            Queue::Main => {
                self.main.push_back(key);
                self.main_bytes += size;
            }
        }
        self.entries.insert(
            key,
            Entry {
                size,
                freq: 0,
                queue,
            },
        );
        evicted
    }

    /// Stops tracking `key` (deleted for another reason, e.g. found corrupt).
    pub fn remove(&mut self, key: &K) {
        if let Some(e) = self.entries.remove(key) {
            match e.queue {
                Queue::Small => {
                    self.small_bytes -= e.size;
                    self.small.retain(|k| k != key);
                }
                Queue::Main => {
                    self.main_bytes -= e.size;
                    self.main.retain(|k| k != key);
                }
            }
        }
    }

    fn evict_one(&mut self) -> Option<K> {
        loop {
            let small_limit = self.capacity * SMALL_PERCENT / 100;
            if self.small_bytes > small_limit || self.main.is_empty() {
                let key = self.small.pop_front()?;
                let e = self.entries.get_mut(&key).expect("queued keys are tracked");
                self.small_bytes -= e.size;
                if e.freq > 0 {
                    // Read again while on probation: promote.
                    e.freq = 0;
                    e.queue = Queue::Main;
                    self.main_bytes += e.size;
                    self.main.push_back(key);
                    continue;
                }
                self.entries.remove(&key);
                self.remember(key);
                return Some(key);
            }
            let key = self.main.pop_front()?;
            let e = self.entries.get_mut(&key).expect("queued keys are tracked");
            if e.freq > 0 {
                e.freq -= 1;
                self.main.push_back(key);
                continue;
            }
            self.main_bytes -= e.size;
            self.entries.remove(&key);
            return Some(key);
        }
    }

    fn remember(&mut self, key: K) {
        // The ghost queue holds about as many keys as the main queue holds objects.
        let limit = self.main.len().max(64);
        self.ghost.push_back(key);
        self.ghost_set.insert(key, ());
        while self.ghost.len() > limit {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_returns_what_to_delete() {
        let mut c = S3Fifo::new(1000);
        let mut evicted = Vec::new();
        for k in 0..50u32 {
            evicted.extend(c.insert(k, 100));
            assert!(c.used() <= 1000);
        }
        assert_eq!(c.len() + evicted.len(), 50);
        assert_eq!(c.used(), c.len() as u64 * 100);
        assert_eq!(c.insert(999, 5000), vec![999]);
        for k in &evicted {
            assert!(!c.contains(k));
        }
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let mut c = S3Fifo::new(100 * 10);
        // A hot set of 50 objects, read repeatedly.
        for round in 0..5 {
            for k in 0..50u32 {
                if round == 0 {
                    c.insert(k, 10);
                } else {
                    c.access(&k);
                }
            }
        }
        // A scan of 10,000 one-time objects.
        for k in 1000..11_000u32 {
            c.insert(k, 10);
        }
        let survivors = (0..50u32).filter(|k| c.contains(k)).count();
        assert!(
            survivors >= 45,
            "only {survivors} of the hot set survived the scan"
        );
    }

    #[test]
    fn ghosts_return_to_main_and_remove_forgets() {
        let mut c = S3Fifo::new(100);
        c.insert(1u32, 50);
        c.insert(2, 50);
        let evicted = c.insert(3, 50);
        assert_eq!(evicted, vec![1]);
        // 1 comes back while remembered: straight to main.
        c.insert(1, 50);
        assert!(c.contains(&1));
        c.remove(&1);
        assert!(!c.contains(&1));
        assert!(c.used() <= 100);
    }
}
