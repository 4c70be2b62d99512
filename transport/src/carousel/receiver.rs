//! The receiver core, without I/O: datagrams in, verified objects out, in bounded memory.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use tracing::debug;

use super::config_error::ConfigError;
use super::packet::{ObjectId, ObjectKind, Packet, PacketError, PacketHeader};
use super::partial::{Accepted, PartialObject};
use super::DEFAULT_MAX_OBJECT_BYTES;

/// Settings of an [`Assembler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssemblerConfig {
    /// Largest object accepted, in bytes; longer ones are rejected from their first packet.
    /// Default [`DEFAULT_MAX_OBJECT_BYTES`] (64 MiB).
    pub max_object_bytes: u64,
    /// Most objects reassembled at once; a new object beyond this evicts the least recently
    /// updated one. Default 64.
    pub max_in_progress: usize,
    /// Most bytes held by objects in progress (symbols, decoded blocks and decoder
    /// bookkeeping, estimated); beyond this the least recently updated objects are evicted.
    /// At least twice `max_object_bytes`, so one object of the maximum size always fits.
    /// Default 256 MiB.
    pub max_buffered_bytes: u64,
    /// How many completed ids are remembered so that their later packets are dropped without
    /// work (the oldest is forgotten first). Default 4096.
    pub completed_capacity: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_in_progress: 64,
            max_buffered_bytes: 256 << 20,
            completed_capacity: 4096,
        }
    }
}

impl AssemblerConfig {
    /// Checks the fields against the rules documented on them.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_object_bytes == 0 {
            return Err(ConfigError::new("max_object_bytes", "must be above 0"));
        }
        if self.max_in_progress == 0 {
            return Err(ConfigError::new("max_in_progress", "must be above 0"));
        }
        if self.max_buffered_bytes / 2 < self.max_object_bytes {
            return Err(ConfigError::new(
                "max_buffered_bytes",
                format!(
                    "{} is less than twice max_object_bytes ({})",
                    self.max_buffered_bytes, self.max_object_bytes
                ),
            ));
        }
        if self.completed_capacity == 0 {
            return Err(ConfigError::new("completed_capacity", "must be above 0"));
        }
        Ok(())
    }
}

/// What the assembler has to say about a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An object is complete and its bytes hash to its id. Reported once per id (until it
    /// falls out of the remembered set or [`Assembler::forget`] is called).
    Complete {
        /// BLAKE3 of `bytes`.
        id: ObjectId,
        /// The kind the sender gave it.
        kind: ObjectKind,
        /// The object.
        bytes: Bytes,
        /// Cycle of the first packet of this object that was stored.
        first_cycle: u32,
        /// Cycle of the packet that completed it: later than `first_cycle` when the loss in
        /// one cycle exceeded its repair symbols and a later cycle made up for it.
        cycle: u32,
    },
    /// An object decoded to bytes that do not hash to its id (corrupt or forged symbols). It
    /// was dropped; it is reassembled again from later packets.
    Corrupt {
        /// The id the packets claimed.
        id: ObjectId,
        /// The kind the packets claimed.
        kind: ObjectKind,
    },
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Not a well-formed carousel packet.
    #[error("malformed datagram: {0}")]
    Malformed(#[from] PacketError),
    /// The object could not be buffered within `max_buffered_bytes`, even alone; its partial
    /// state was dropped.
    #[error("object {id} of {length} bytes does not fit the {limit}-byte buffer")]
    OverBudget {
        /// The object.
        id: ObjectId,
        /// Its length.
        length: u64,
        /// The configured `max_buffered_bytes`.
        limit: u64,
    },
}

/// How far an incomplete object has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: ObjectKind,
    /// Its length in bytes.
    pub length: u64,
    /// Distinct packets received so far.
    pub packets_received: u64,
    /// Source symbols of the object: about the number of distinct packets that completes it
    /// (RaptorQ needs K, rarely K + 1 or 2, per block).
    pub source_symbols_needed: u64,
    /// Source blocks decoded so far.
    pub blocks_complete: u8,
    /// Source blocks in all.
    pub blocks: u8,
    /// Cycle number of the latest packet stored.
    pub last_cycle: u32,
}

/// Counters since the assembler was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Datagrams pushed.
    pub datagrams: u64,
    /// Malformed datagrams dropped.
    pub malformed: u64,
    /// Packets stored for an object in progress.
    pub accepted: u64,
    /// Packets whose symbol was already stored or whose block was already decoded.
    pub duplicates: u64,
    /// Packets of objects already completed, dropped after the header check.
    pub after_complete: u64,
    /// Objects delivered.
    pub completed: u64,
    /// Objects dropped because their bytes did not hash to their id.
    pub corrupt: u64,
    /// Objects in progress evicted to stay within the limits.
    pub evicted: u64,
    /// Objects dropped because they could not fit the buffer even alone.
    pub over_budget: u64,
}

/// Packets belong to the same reassembly only if their whole header agrees, so a packet with
/// a forged length or OTI for a real id starts its own (doomed, eventually evicted) entry
/// instead of poisoning the real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    id: ObjectId,
    kind: ObjectKind,
    length: u64,
    oti: [u8; 12],
}

impl Key {
    fn of(header: &PacketHeader) -> Key {
        Key {
            id: header.id(),
            kind: header.kind(),
            length: header.length(),
            oti: header.oti_bytes(),
        }
    }
}

/// The receiver core: feed it datagrams with [`Assembler::push`]; it yields each object once,
/// after checking that its bytes hash to its id.
///
/// Every input is either used or rejected with a [`ReceiveError`]; no byte string makes it
/// panic. Memory stays within `max_in_progress` objects and about `max_buffered_bytes` (plus,
/// transiently, one object's final copy and one block's decoding work space).
///
/// Decoding runs inside `push`, on the caller's thread: the packet that completes a block
/// pays for solving it (milliseconds per MiB; see the `carousel` benchmark).
#[derive(Debug)]
pub struct Assembler {
    config: AssemblerConfig,
    partial: HashMap<Key, PartialObject>,
    buffered: u64,
    completed: CompletedSet,
    clock: u64,
    stats: AssemblerStats,
}

impl Assembler {
    /// An assembler with nothing in progress.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if `config` is invalid.
    pub fn new(config: AssemblerConfig) -> Result<Assembler, ConfigError> {
        config.validate()?;
        Ok(Assembler {
            completed: CompletedSet::new(config.completed_capacity),
            config,
            partial: HashMap::new(),
            buffered: 0,
            clock: 0,
            stats: AssemblerStats::default(),
        })
    }

    /// Processes one datagram; returns an event when it completed (or failed to complete) an
    /// object.
    ///
    /// # Errors
    ///
    /// [`ReceiveError::Malformed`] for a datagram that is not a valid carousel packet, and
    /// [`ReceiveError::OverBudget`] when its object cannot be buffered. Both only mean the
    /// datagram was dropped.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Event>, ReceiveError> {
        self.stats.datagrams += 1;
        let packet = match Packet::parse(datagram, self.config.max_object_bytes) {
            Ok(packet) => packet,
            Err(err) => {
                self.stats.malformed += 1;
                return Err(err.into());
            }
        };
        let header = packet.header;
        let id = header.id();
        if self.completed.contains(&id) {
            self.stats.after_complete += 1;
            return Ok(None);
        }
        self.clock += 1;
        let key = Key::of(&header);
        if !self.partial.contains_key(&key) {
            if PartialObject::peak_bytes(&header) > self.config.max_buffered_bytes {
                self.stats.over_budget += 1;
                return Err(self.over_budget(&header));
            }
            if self.partial.len() >= self.config.max_in_progress {
                self.evict_one(None);
            }
            self.partial
                .insert(key, PartialObject::new(header, self.clock));
        }
        let Some(object) = self.partial.get_mut(&key) else {
            return Ok(None); // unreachable: present or inserted above
        };
        let before = object.charged();
        let accepted = object.accept(&packet, self.clock);
        let after = object.charged();
        self.buffered = self.buffered - before + after;
        match accepted {
            Accepted::Duplicate => {
                self.stats.duplicates += 1;
                Ok(None)
            }
            Accepted::Stored => {
                self.stats.accepted += 1;
                while self.buffered > self.config.max_buffered_bytes {
                    if !self.evict_one(Some(key)) {
                        if let Some(object) = self.partial.remove(&key) {
                            self.buffered -= object.charged();
                        }
                        self.stats.over_budget += 1;
                        return Err(self.over_budget(&header));
                    }
                }
                Ok(None)
            }
            Accepted::Complete(bytes) => {
                self.stats.accepted += 1;
                let first_cycle = self
                    .partial
                    .remove(&key)
                    .map_or(header.cycle(), |o| o.first_cycle);
                if ObjectId::of(&bytes) != id {
                    self.stats.corrupt += 1;
                    debug!(%id, kind = ?header.kind(), "carousel object failed its hash check");
                    return Ok(Some(Event::Corrupt {
                        id,
                        kind: header.kind(),
                    }));
                }
                self.stats.completed += 1;
                self.completed.insert(id);
                // Another reassembly of the same id under a different header can no longer
                // deliver anything new.
                self.drop_partials_of(&id);
                Ok(Some(Event::Complete {
                    id,
                    kind: header.kind(),
                    bytes: Bytes::from(bytes),
                    first_cycle,
                    cycle: header.cycle(),
                }))
            }
        }
    }

    /// Progress of every object in progress, sorted by id.
    pub fn incomplete(&self) -> Vec<Progress> {
        let mut out: Vec<Progress> = self
            .partial
            .values()
            .map(|object| {
                let header = object.header();
                Progress {
                    id: header.id(),
                    kind: header.kind(),
                    length: header.length(),
                    packets_received: object.packets(),
                    source_symbols_needed: header.source_symbols(),
                    blocks_complete: object.blocks_done(),
                    blocks: header.source_blocks(),
                    last_cycle: object.last_cycle,
                }
            })
            .collect();
        out.sort_by_key(|progress| progress.id);
        out
    }

    /// Whether `id` was delivered and is still remembered.
    pub fn is_complete(&self, id: &ObjectId) -> bool {
        self.completed.contains(id)
    }

    /// Forgets that `id` was delivered, so it is reassembled and delivered again (say, after
    /// the node lost it). Returns whether it was remembered.
    pub fn forget(&mut self, id: &ObjectId) -> bool {
        self.completed.remove(id)
    }

    /// Bytes currently held by objects in progress (the estimate the limit applies to).
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered
    }

    /// The counters.
    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> &AssemblerConfig {
        &self.config
    }

    fn over_budget(&self, header: &PacketHeader) -> ReceiveError {
        ReceiveError::OverBudget {
            id: header.id(),
            length: header.length(),
            limit: self.config.max_buffered_bytes,
        }
    }

    /// Evicts the least recently updated object other than `keep`; returns whether there
    /// was one. A linear scan: there are at most `max_in_progress` objects.
    fn evict_one(&mut self, keep: Option<Key>) -> bool {
        let victim = self
            .partial
            .iter()
            .filter(|(key, _)| Some(**key) != keep)
            .min_by_key(|(_, object)| object.touched)
            .map(|(key, _)| *key);
        let Some(victim) = victim else {
            return false;
        };
        if let Some(object) = self.partial.remove(&victim) {
            self.buffered -= object.charged();
            self.stats.evicted += 1;
            debug!(
                id = %victim.id,
                packets = object.packets(),
                "carousel object evicted before completion"
            );
        }
        true
    }

    fn drop_partials_of(&mut self, id: &ObjectId) {
        let mut freed = 0;
        self.partial.retain(|key, object| {
            let keep = key.id != *id;
            if !keep {
                freed += object.charged();
            }
            keep
        });
        self.buffered -= freed;
    }
}

/// A set of ids that forgets the oldest beyond its capacity.
#[derive(Debug)]
struct CompletedSet {
    order: VecDeque<ObjectId>,
    set: HashSet<ObjectId>,
    capacity: usize,
}

impl CompletedSet {
    fn new(capacity: usize) -> Self {
        CompletedSet {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity,
        }
    }

    fn contains(&self, id: &ObjectId) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: ObjectId) {
        if !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn remove(&mut self, id: &ObjectId) -> bool {
        if !self.set.remove(id) {
            return false;
        }
        self.order.retain(|other| other != id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carousel::config::CarouselConfig;
    use crate::carousel::sender::Carousel;

    fn carousel_with(objects: &[(ObjectKind, Vec<u8>)]) -> Carousel {
        // Small blocks so that modest objects span several; 64 × 1160 × 255 bytes bounds the
        // object size.
        let config = CarouselConfig {
            max_block_symbols: 64,
            max_object_bytes: 8 << 20,
            ..CarouselConfig::default()
        };
        let mut carousel = Carousel::new(config).unwrap();
        for (kind, bytes) in objects {
            carousel.insert(*kind, bytes.clone()).unwrap();
        }
        carousel
    }

    fn complete_ids(events: &[Event]) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = events
            .iter()
            .filter_map(|event| match event {
                Event::Complete { id, .. } => Some(*id),
                Event::Corrupt { .. } => None,
            })
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn delivers_each_object_once() {
        let objects = [
            (ObjectKind::Manifest, b"m".to_vec()),
            (ObjectKind::Segment, vec![3u8; 100_000]),
        ];
        let mut carousel = carousel_with(&objects);
        let mut assembler = Assembler::new(AssemblerConfig::default()).unwrap();
        let mut events = Vec::new();
        for _ in 0..3 {
            for datagram in carousel.next_cycle() {
                events.extend(assembler.push(&datagram).unwrap());
            }
        }
        assert_eq!(events.len(), 2);
        let mut want: Vec<ObjectId> = objects.iter().map(|(_, b)| ObjectId::of(b)).collect();
        want.sort();
        assert_eq!(complete_ids(&events), want);
        let stats = assembler.stats();
        assert_eq!(stats.completed, 2);
        assert!(stats.after_complete > 0);
        assert_eq!(stats.malformed, 0);
        assert!(assembler.incomplete().is_empty());
        assert_eq!(assembler.buffered_bytes(), 0);
        assert!(assembler.forget(&want[0]));
        assert!(!assembler.is_complete(&want[0]));
        assert!(assembler.is_complete(&want[1]));
    }

    #[test]
    fn reports_progress_of_incomplete_objects() {
        let bytes = vec![5u8; 50_000]; // 44 symbols
        let mut carousel = carousel_with(&[(ObjectKind::Segment, bytes.clone())]);
        let mut assembler = Assembler::new(AssemblerConfig::default()).unwrap();
        for datagram in carousel.next_cycle().take(10) {
            assert_eq!(assembler.push(&datagram), Ok(None));
        }
        let progress = assembler.incomplete();
        assert_eq!(
            progress,
            vec![Progress {
                id: ObjectId::of(&bytes),
                kind: ObjectKind::Segment,
                length: 50_000,
                packets_received: 10,
                source_symbols_needed: 44,
                blocks_complete: 0,
                blocks: 1,
                last_cycle: 0,
            }]
        );
        assert!(assembler.buffered_bytes() > 10 * 1160);
    }

    #[test]
    fn corrupt_symbols_fail_the_hash_check() {
        let bytes = vec![5u8; 5_000];
        let mut carousel = carousel_with(&[(ObjectKind::Segment, bytes.clone())]);
        let mut assembler = Assembler::new(AssemblerConfig::default()).unwrap();
        let mut events = Vec::new();
        for mut datagram in carousel.next_cycle() {
            let last = datagram.len() - 1;
            datagram[last] ^= 1; // one flipped bit per symbol, beyond what FEC can see
            events.extend(assembler.push(&datagram).unwrap());
        }
        assert_eq!(
            events,
            vec![Event::Corrupt {
                id: ObjectId::of(&bytes),
                kind: ObjectKind::Segment
            }]
        );
        assert_eq!(assembler.stats().corrupt, 1);
        assert!(!assembler.is_complete(&ObjectId::of(&bytes)));
        // The two repair packets after the fifth source one start a fresh reassembly …
        assert_eq!(assembler.incomplete()[0].packets_received, 2);
        // … that clean cycles complete (the first may still fail on those two).
        let mut events = Vec::new();
        for _ in 0..3 {
            for datagram in carousel.next_cycle() {
                events.extend(assembler.push(&datagram).unwrap());
            }
        }
        assert!(matches!(events.last(), Some(Event::Complete { .. })));
        assert!(assembler.is_complete(&ObjectId::of(&bytes)));
        assert_eq!(assembler.buffered_bytes(), 0);
    }

    #[test]
    fn evicts_least_recently_updated_beyond_max_in_progress() {
        let objects: Vec<(ObjectKind, Vec<u8>)> = (0..3u8)
            .map(|i| (ObjectKind::Segment, vec![i; 10_000]))
            .collect();
        let mut carousel = carousel_with(&objects);
        let config = AssemblerConfig {
            max_in_progress: 2,
            ..AssemblerConfig::default()
        };
        let mut assembler = Assembler::new(config).unwrap();
        // The first three datagrams are one from each object.
        for datagram in carousel.next_cycle().take(3) {
            assembler.push(&datagram).unwrap();
        }
        assert_eq!(assembler.incomplete().len(), 2);
        assert_eq!(assembler.stats().evicted, 1);
    }

    #[test]
    fn evicts_to_stay_within_the_byte_budget() {
        let objects: Vec<(ObjectKind, Vec<u8>)> = (0..4u8)
            .map(|i| (ObjectKind::Segment, vec![i; 60_000]))
            .collect();
        let mut carousel = carousel_with(&objects);
        let config = AssemblerConfig {
            max_object_bytes: 60_000,
            max_buffered_bytes: 150_000,
            ..AssemblerConfig::default()
        };
        let mut assembler = Assembler::new(config).unwrap();
        let mut peak = 0;
        let mut events = Vec::new();
        for _ in 0..2 {
            for datagram in carousel.next_cycle() {
                events.extend(assembler.push(&datagram).unwrap());
                peak = peak.max(assembler.buffered_bytes());
            }
        }
        assert!(peak <= 150_000, "{peak}");
        assert!(assembler.stats().evicted > 0);
        // Objects still complete eventually: each cycle lets the most recent ones finish.
        for _ in 0..20 {
            for datagram in carousel.next_cycle() {
                events.extend(assembler.push(&datagram).unwrap());
            }
        }
        assert_eq!(complete_ids(&events).len(), 4);
    }

    #[test]
    fn rejects_objects_that_cannot_fit() {
        let mut carousel = carousel_with(&[(ObjectKind::Segment, vec![1u8; 100_000])]);
        let config = AssemblerConfig {
            max_object_bytes: 100_000,
            max_buffered_bytes: 200_000,
            ..AssemblerConfig::default()
        };
        let mut assembler = Assembler::new(config).unwrap();
        let datagram = carousel.next_cycle().next().unwrap();
        assert_eq!(assembler.push(&datagram), Ok(None));
        let config = AssemblerConfig {
            max_object_bytes: 50_000,
            max_buffered_bytes: 100_000,
            ..AssemblerConfig::default()
        };
        let mut assembler = Assembler::new(config).unwrap();
        assert!(matches!(
            assembler.push(&datagram),
            Err(ReceiveError::Malformed(PacketError::ObjectTooLarge { .. }))
        ));
    }

    #[test]
    fn config_validation() {
        assert!(Assembler::new(AssemblerConfig::default()).is_ok());
        let bad = AssemblerConfig {
            max_buffered_bytes: 100,
            max_object_bytes: 51,
            ..AssemblerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "max_buffered_bytes");
        let bad = AssemblerConfig {
            max_in_progress: 0,
            ..AssemblerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "max_in_progress");
    }

    #[test]
    fn completed_set_forgets_the_oldest() {
        let mut set = CompletedSet::new(2);
        let ids: Vec<ObjectId> = (0..3u8).map(|i| ObjectId([i; 32])).collect();
        for id in &ids {
            set.insert(*id);
        }
        assert!(!set.contains(&ids[0]));
        assert!(set.contains(&ids[1]) && set.contains(&ids[2]));
        assert!(set.remove(&ids[1]));
        assert_eq!(set.order.len(), 1);
    }

    /// Thousands of random, truncated and mutated datagrams: each is accepted or rejected,
    /// none panics, and the real objects still complete despite the noise.
    #[test]
    fn hostile_input_never_panics() {
        let objects = [
            (ObjectKind::Manifest, vec![7u8; 3_000]),
            (
                ObjectKind::Segment,
                (0..200_000u32).map(|i| i as u8).collect(),
            ),
        ];
        let mut carousel = carousel_with(&objects);
        let real: Vec<Vec<u8>> = carousel.next_cycle().collect();
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let config = AssemblerConfig {
            max_in_progress: 8,
            ..AssemblerConfig::default()
        };
        let mut assembler = Assembler::new(config).unwrap();
        let mut malformed = 0u64;
        for round in 0..30_000 {
            let base = &real[rng.usize(..real.len())];
            let mut datagram = base.clone();
            match round % 7 {
                0 => {
                    let len = rng.usize(..80);
                    datagram = (0..len).map(|_| rng.u8(..)).collect();
                }
                1 => datagram.truncate(rng.usize(..=base.len())),
                2 => {
                    for _ in 0..rng.usize(1..=4) {
                        let at = rng.usize(..datagram.len());
                        datagram[at] = rng.u8(..);
                    }
                }
                3 => {
                    // Mutate the header fields raptorq is sensitive to (length, OTI, SBN).
                    let at = rng.usize(38..66);
                    datagram[at] = rng.u8(..);
                }
                4 => datagram.extend((0..rng.usize(..8)).map(|_| rng.u8(..))),
                5 => {
                    // One forged 3-symbol object fed random symbols under random ESIs: its
                    // packets accumulate, so raptorq solves systems of forged repair symbols.
                    datagram[38..46].copy_from_slice(&3000u64.to_be_bytes());
                    datagram[46..51].copy_from_slice(&3000u64.to_be_bytes()[3..]);
                    datagram[54] = 1;
                    datagram[62] = 0;
                    let esi = rng.u64(..1 << 24).to_be_bytes();
                    datagram[63..66].copy_from_slice(&esi[5..]);
                    for byte in &mut datagram[66..] {
                        *byte = rng.u8(..);
                    }
                }
                _ => {
                    // A consistent forged shape: random length (in header and OTI), random
                    // block count and SBN, real symbol size. Much of it passes validation and
                    // reaches raptorq with block sizes the sender never used.
                    // Half are tiny (K ≤ 4), so they decode from forged symbols, repair ones
                    // included, and fail the hash check.
                    let range = if rng.bool() { 4 * 1160 } else { 1 << 22 };
                    let length = rng.u64(1..=range);
                    datagram[38..46].copy_from_slice(&length.to_be_bytes());
                    datagram[46..51].copy_from_slice(&length.to_be_bytes()[3..]);
                    datagram[54] = if range < 1 << 22 {
                        rng.u8(1..=4)
                    } else {
                        rng.u8(..)
                    };
                    datagram[62] = rng.u8(..4);
                    if rng.bool() {
                        // Any 24-bit ESI: repair symbols far beyond anything sent.
                        let esi = rng.u64(..).to_be_bytes();
                        datagram[63..66].copy_from_slice(&esi[..3]);
                    }
                }
            }
            if assembler.push(&datagram).is_err() {
                malformed += 1;
            }
        }
        let stats = assembler.stats();
        assert!(malformed > 10_000, "{stats:?}");
        assert!(
            stats.corrupt > 100,
            "forged objects reached raptorq: {stats:?}"
        );
        assert_eq!(
            assembler.stats().malformed + assembler.stats().over_budget,
            malformed
        );
        assert!(assembler.incomplete().len() <= 8);
        // The real objects still come through (mutated symbols may have cost a Corrupt event).
        let mut events = Vec::new();
        for _ in 0..3 {
            for datagram in carousel.next_cycle() {
                events.extend(assembler.push(&datagram).unwrap());
            }
        }
        for (_, bytes) in &objects {
            let id = ObjectId::of(bytes);
            assert!(assembler.is_complete(&id), "{id} not delivered: {events:?}");
        }
    }
}
