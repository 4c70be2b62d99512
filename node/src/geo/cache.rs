//! [`PrefixCache`]: the answers of one loaded database, remembered per client prefix.
//!
//! A routing decision's geo part costs a walk of the database's search tree and the decoding of
//! a record (the bulk of a `/play` decision); viewers come from few prefixes (an ISP's /24, a
//! household's /48), so the answer for the prefix is remembered instead. The cache is **exact**:
//! an answer is kept only when every database network that produced it covers the whole prefix
//! (a /25 inside a /24, say, leaves that /24 uncached), so a cached lookup answers what an
//! uncached one would, address by address.
//!
//! It belongs to one [`GeoDb`](super::GeoDb): a reload makes a new database with an empty cache,
//! so nothing survives a change of files. It is bounded: a fixed table of slots, each holding one
//! prefix, a new prefix overwriting whatever its slot held (direct-mapped), so a client cycling
//! through distinct prefixes costs a slot write per lookup and never memory. Strings are kept as
//! positions in the database's bytes, so a hit allocates nothing and hands out the same borrowed
//! [`GeoRef`](super::GeoRef) as a miss.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// IPv4 clients are cached per /24: an ISP's smallest routed block.
pub(crate) const IPV4_PREFIX: u8 = 24;
/// IPv6 clients are cached per /48: a site's allocation.
pub(crate) const IPV6_PREFIX: u8 = 48;
/// Slots of a database's cache (about 80 bytes each: 1.3 MB). Enough that a node's active
/// prefixes rarely share a slot; a scan of distinct prefixes only overwrites them.
pub(crate) const DEFAULT_SLOTS: usize = 16_384;

/// The prefix `ip` is cached under, as a tag that is never 0 (0 marks an empty slot): bit 63 for
/// IPv4 (/24), bit 62 for IPv6 (/48). `ip` is canonical (IPv4-mapped IPv6 already IPv4).
pub(crate) fn prefix_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => (1 << 63) | u64::from(u32::from(v4) >> (32 - IPV4_PREFIX)),
        IpAddr::V6(v6) => (1 << 62) | (u128::from(v6) >> (128 - IPV6_PREFIX)) as u64,
    }
}

/// Whether a database network of `prefix_len` bits, found for `ip`, holds `ip`'s whole cache
/// prefix. `network_is_v4` says in which family the length is counted: an IPv4 lookup in an
/// IPv6 file whose answer lies above the IPv4 subtree gets an IPv6 length, which covers the
/// IPv4 /24 when it stops before the subtree's last 8 bits (`::a.b.c.0/120`).
pub(crate) fn covers_prefix(ip: IpAddr, network_is_v4: bool, prefix_len: u8) -> bool {
    match (ip, network_is_v4) {
        (IpAddr::V4(_), true) => prefix_len <= IPV4_PREFIX,
        (IpAddr::V4(_), false) => prefix_len <= 96 + IPV4_PREFIX,
        (IpAddr::V6(_), _) => prefix_len <= IPV6_PREFIX,
    }
}

/// Where a string of a record lies in its file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) len: u32,
}

/// A record as the cache keeps it: the file it came from and its fields, strings as [`Span`]s
/// into that file's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CachedRecord {
    pub(crate) file: u16,
    pub(crate) country: Option<Span>,
    pub(crate) continent: Option<Span>,
    pub(crate) location: Option<(f64, f64)>,
    pub(crate) city: Option<Span>,
}

/// A remembered answer: no file has a record (with any field we use) for the prefix, or this one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cached {
    NoRecord,
    Record(CachedRecord),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    answer: Cached,
}

const EMPTY: Slot = Slot {
    key: 0,
    answer: Cached::NoRecord,
};

/// Hits and misses since the database was loaded, for the node's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GeoCacheStats {
    /// Slots of the table (0: the cache is off).
    pub slots: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that walked the database (the first of a prefix, one whose slot another prefix
    /// took, and every lookup in a prefix the database splits).
    pub misses: u64,
}

/// The bounded, direct-mapped table of one database's answers per prefix.
#[derive(Debug)]
pub(crate) struct PrefixCache {
    /// One lock per slot: lookups on different prefixes never wait for each other, and a lock
    /// is held only to copy a slot in or out.
    slots: Box<[Mutex<Slot>]>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PrefixCache {
    /// A cache of `slots` slots (rounded up to a power of two); 0 turns it off.
    pub(crate) fn new(slots: usize) -> Self {
        let n = if slots == 0 {
            0
        } else {
            slots.next_power_of_two()
        };
        Self {
            slots: (0..n).map(|_| Mutex::new(EMPTY)).collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn slot(&self, key: u64) -> Option<&Mutex<Slot>> {
        if self.slots.is_empty() {
            return None;
        }
        // Fibonacci hashing: consecutive prefixes (one ISP's /24s) land in distant slots.
        let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let index = (mixed >> 32) as usize & (self.slots.len() - 1);
        Some(&self.slots[index])
    }

    /// The answer remembered for `key`, counting a hit or a miss.
    pub(crate) fn get(&self, key: u64) -> Option<Cached> {
        let found = self.slot(key).and_then(|slot| {
            let slot = *slot.lock();
            (slot.key == key).then_some(slot.answer)
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers `answer` for `key`, in place of whatever its slot held.
    pub(crate) fn put(&self, key: u64, answer: Cached) {
        if let Some(slot) = self.slot(key) {
            *slot.lock() = Slot { key, answer };
        }
    }

    pub(crate) fn stats(&self) -> GeoCacheStats {
        GeoCacheStats {
            slots: self.slots.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address literal")
    }

    #[test]
    fn keys_are_per_prefix_and_per_family() {
        assert_eq!(prefix_key(ip("1.2.3.4")), prefix_key(ip("1.2.3.250")));
        assert_ne!(prefix_key(ip("1.2.3.4")), prefix_key(ip("1.2.4.4")));
        assert_eq!(
            prefix_key(ip("2001:db8:1::1")),
            prefix_key(ip("2001:db8:1:ffff::2"))
        );
        assert_ne!(
            prefix_key(ip("2001:db8:1::1")),
            prefix_key(ip("2001:db8:2::1"))
        );
        // 0.0.0.0/24 and ::/48 are distinct from each other and from an empty slot.
        assert_ne!(prefix_key(ip("0.0.0.1")), prefix_key(ip("::1")));
        assert_ne!(prefix_key(ip("0.0.0.1")), 0);
        assert_ne!(prefix_key(ip("::1")), 0);
    }

    #[test]
    fn coverage_follows_the_family_of_the_network() {
        let v4 = ip("1.2.3.4");
        assert!(covers_prefix(v4, true, 8));
        assert!(covers_prefix(v4, true, 24));
        assert!(!covers_prefix(v4, true, 25));
        assert!(covers_prefix(v4, false, 96));
        assert!(covers_prefix(v4, false, 120));
        assert!(!covers_prefix(v4, false, 121));
        let v6 = ip("2001:db8::1");
        assert!(covers_prefix(v6, false, 48));
        assert!(!covers_prefix(v6, false, 64));
    }

    #[test]
    fn bounded_and_overwriting() {
        let cache = PrefixCache::new(5);
        assert_eq!(cache.stats().slots, 8);
        let record = |file| {
            Cached::Record(CachedRecord {
                file,
                country: None,
                continent: None,
                location: Some((1.0, 2.0)),
                city: None,
            })
        };
        let a = prefix_key(ip("1.2.3.4"));
        assert_eq!(cache.get(a), None);
        cache.put(a, record(1));
        assert_eq!(cache.get(a), Some(record(1)));
        // Many more prefixes than slots: each lookup after its put is a hit, memory is fixed.
        for i in 0..10_000u32 {
            let k = prefix_key(IpAddr::from(std::net::Ipv4Addr::from(i << 8)));
            cache.put(k, Cached::NoRecord);
            assert_eq!(cache.get(k), Some(Cached::NoRecord));
        }
        assert_eq!(cache.slots.len(), 8);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (10_001, 1));
        // Off: nothing is kept, every lookup is a miss.
        let off = PrefixCache::new(0);
        off.put(a, record(1));
        assert_eq!(off.get(a), None);
        assert_eq!(off.stats().slots, 0);
    }
}
