//! The sender core, without I/O: the set of objects on the carousel and the datagrams of each
//! cycle.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::config::{CarouselConfig, CarouselError};
use super::cursor::ObjectCursor;
use super::object::EncodedObject;
use super::packet::{ObjectId, ObjectKind};

/// An object on the carousel, with where its repair symbols continue next cycle.
#[derive(Debug)]
struct Entry {
    kind: ObjectKind,
    object: Arc<EncodedObject>,
    /// Per block: the repair id after the last one sent.
    next_repair: Vec<u32>,
}

/// The sender core: a set of objects, each encoded once, and a cycle counter.
///
/// Each call to [`Carousel::next_cycle`] yields every object's source symbols plus
/// `repair_overhead_percent` repair symbols per block, interleaved across objects. Repair
/// symbols never repeat from one cycle to the next (until the 24-bit symbol id space wraps), so
/// a receiver short of symbols after one cycle gets new, useful ones in the next.
///
/// Changes (insert, remove, overhead) apply from the next cycle; a [`Cycle`] already handed
/// out keeps the objects it started with.
///
/// # Examples
///
/// ```
/// use mhc_transport::carousel::{Assembler, AssemblerConfig, Carousel, CarouselConfig, Event, ObjectKind};
///
/// let mut carousel = Carousel::new(CarouselConfig::default())?;
/// let id = carousel.insert(ObjectKind::Bulletin, b"hello".to_vec())?;
/// let mut assembler = Assembler::new(AssemblerConfig::default())?;
/// let mut done = None;
/// for datagram in carousel.next_cycle() {
///     if let Some(Event::Complete { id, bytes, .. }) = assembler.push(&datagram)? {
///         done = Some((id, bytes));
///     }
/// }
/// assert_eq!(done.unwrap(), (id, bytes::Bytes::from_static(b"hello")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Carousel {
    config: CarouselConfig,
    objects: BTreeMap<ObjectId, Entry>,
    cycle: u32,
}

impl Carousel {
    /// An empty carousel.
    ///
    /// # Errors
    ///
    /// [`CarouselError::Config`] if `config` is invalid.
    pub fn new(config: CarouselConfig) -> Result<Carousel, CarouselError> {
        config.validate()?;
        Ok(Carousel {
            config,
            objects: BTreeMap::new(),
            cycle: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &CarouselConfig {
        &self.config
    }

    /// Adds an object and returns its id. Adding bytes already on the carousel only updates
    /// their kind; they are not encoded again.
    ///
    /// # Errors
    ///
    /// [`CarouselError::EmptyObject`] or [`CarouselError::ObjectTooLarge`].
    pub fn insert(
        &mut self,
        kind: ObjectKind,
        bytes: impl Into<Bytes>,
    ) -> Result<ObjectId, CarouselError> {
        let bytes = bytes.into();
        let id = ObjectId::of(&bytes);
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.kind = kind;
            return Ok(id);
        }
        let object = EncodedObject::encode(bytes, &self.config)?;
        Ok(self.insert_encoded(kind, Arc::new(object)))
    }

    /// Adds an object encoded beforehand (perhaps with another symbol or block size) and
    /// returns its id. An object with the same id is replaced, keeping its repair position.
    pub fn insert_encoded(&mut self, kind: ObjectKind, object: Arc<EncodedObject>) -> ObjectId {
        let id = object.id();
        let blocks = usize::from(object.source_blocks());
        let next_repair = match self.objects.remove(&id) {
            Some(old) if old.next_repair.len() == blocks => old.next_repair,
            _ => vec![0; blocks],
        };
        self.objects.insert(
            id,
            Entry {
                kind,
                object,
                next_repair,
            },
        );
        id
    }

    /// Removes an object; returns whether it was there.
    pub fn remove(&mut self, id: &ObjectId) -> bool {
        self.objects.remove(id).is_some()
    }

    /// Makes the carousel carry exactly `objects`. Objects already on it keep their encoding
    /// and repair position; only new ones are encoded. Returns the ids, in input order.
    ///
    /// # Errors
    ///
    /// [`CarouselError::EmptyObject`] or [`CarouselError::ObjectTooLarge`] for any object; the
    /// carousel is then left unchanged.
    pub fn replace_all(
        &mut self,
        objects: impl IntoIterator<Item = (ObjectKind, Bytes)>,
    ) -> Result<Vec<ObjectId>, CarouselError> {
        let mut next = BTreeMap::new();
        let mut ids = Vec::new();
        for (kind, bytes) in objects {
            let id = ObjectId::of(&bytes);
            ids.push(id);
            if next.contains_key(&id) {
                continue;
            }
            let entry = match self.objects.get(&id) {
                Some(entry) => Entry {
                    kind,
                    object: Arc::clone(&entry.object),
                    next_repair: entry.next_repair.clone(),
                },
                None => {
                    let object = EncodedObject::encode(bytes, &self.config)?;
                    let blocks = usize::from(object.source_blocks());
                    Entry {
                        kind,
                        object: Arc::new(object),
                        next_repair: vec![0; blocks],
                    }
                }
            };
            next.insert(id, entry);
        }
        self.objects = next;
        Ok(ids)
    }

    /// Whether the object is on the carousel.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.objects.contains_key(id)
    }

    /// The kind of an object on the carousel.
    pub fn kind(&self, id: &ObjectId) -> Option<ObjectKind> {
        self.objects.get(id).map(|entry| entry.kind)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects (a cycle would then be empty).
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The ids of the objects, in id order.
    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.objects.keys().copied()
    }

    /// Sets the repair overhead from the next cycle on.
    ///
    /// # Errors
    ///
    /// [`CarouselError::Config`] above 1000 percent.
    pub fn set_repair_overhead_percent(&mut self, percent: u32) -> Result<(), CarouselError> {
        let config = CarouselConfig {
            repair_overhead_percent: percent,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The number the next cycle will carry.
    pub fn cycle_number(&self) -> u32 {
        self.cycle
    }

    /// Starts the next cycle: a snapshot of the objects, with this cycle's fresh repair
    /// symbols reserved. The returned [`Cycle`] produces the datagrams lazily and holds no
    /// borrow of the carousel, so a lock around the carousel is needed only for this call.
    pub fn next_cycle(&mut self) -> Cycle {
        let number = self.cycle;
        self.cycle = self.cycle.wrapping_add(1);
        let percent = self.config.repair_overhead_percent;
        let mut queue = VecDeque::with_capacity(self.objects.len());
        let mut remaining = 0;
        for entry in self.objects.values_mut() {
            let object = &entry.object;
            let blocks = object.source_blocks();
            let mut repair_start = Vec::with_capacity(usize::from(blocks));
            for sbn in 0..blocks {
                let count = object.repairs_per_cycle(sbn, percent);
                let slot = &mut entry.next_repair[usize::from(sbn)];
                let start = object.repair_start(sbn, *slot, count);
                repair_start.push(start);
                *slot = start + count;
            }
            // Blocks differ in size by at most one symbol: the first ones are the long ones.
            let cursor = ObjectCursor::new(
                object.layout(),
                blocks,
                object.repairs_per_cycle(0, percent),
                object.repairs_per_cycle(blocks - 1, percent),
            );
            remaining += cursor.total();
            queue.push_back(CycleObject {
                kind: entry.kind,
                object: Arc::clone(object),
                repair_start,
                cursor,
            });
        }
        Cycle {
            number,
            queue,
            remaining,
        }
    }
}

/// One object's share of a cycle.
#[derive(Debug)]
struct CycleObject {
    kind: ObjectKind,
    object: Arc<EncodedObject>,
    repair_start: Vec<u32>,
    cursor: ObjectCursor,
}

/// The datagrams of one carousel cycle, produced on demand: objects take turns, one datagram
/// each (round-robin), so a burst of loss is shared among objects instead of hitting one.
///
/// Iterating allocates a `Vec` per datagram; [`Cycle::next_into`] reuses a buffer.
#[derive(Debug)]
pub struct Cycle {
    number: u32,
    queue: VecDeque<CycleObject>,
    remaining: u64,
}

impl Cycle {
    /// The cycle number written into every datagram.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Datagrams not yet produced.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether every datagram has been produced (always, for an empty carousel).
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Replaces the contents of `out` with the next datagram; returns `false`, leaving `out`
    /// empty, at the end of the cycle.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        while let Some(mut current) = self.queue.pop_front() {
            if let Some(slot) = current.cursor.next() {
                current.object.write_datagram(
                    current.kind,
                    self.number,
                    slot,
                    &current.repair_start,
                    out,
                );
                self.queue.push_back(current);
                self.remaining -= 1;
                return true;
            }
        }
        false
    }
}

impl Iterator for Cycle {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.next_into(&mut out).then_some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carousel::packet::{Packet, DEFAULT_MAX_OBJECT_BYTES};
    use std::collections::HashSet;

    fn parse(datagram: &[u8]) -> Packet<'_> {
        Packet::parse(datagram, DEFAULT_MAX_OBJECT_BYTES).unwrap()
    }

    #[test]
    fn cycle_counts_source_and_repair() {
        let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
        // 10 000 bytes = 9 symbols of 1160, so ceil(9 × 25 / 100) = 3 repairs.
        carousel
            .insert(ObjectKind::Segment, vec![1u8; 10_000])
            .unwrap();
        let cycle = carousel.next_cycle();
        assert_eq!(cycle.remaining(), 12);
        let datagrams: Vec<Vec<u8>> = cycle.collect();
        assert_eq!(datagrams.len(), 12);
        assert!(datagrams.iter().all(|d| d.len() == 1226));
    }

    #[test]
    fn each_cycle_has_fresh_repair_symbols() {
        let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
        carousel
            .insert(ObjectKind::Segment, vec![1u8; 10_000])
            .unwrap();
        let mut seen = HashSet::new();
        for cycle in 0..5u32 {
            for datagram in carousel.next_cycle() {
                let packet = parse(&datagram);
                assert_eq!(packet.header.cycle(), cycle);
                if packet.esi >= 9 {
                    assert!(seen.insert(packet.esi), "repeated repair esi");
                }
            }
        }
        assert_eq!(seen.len(), 15);
        assert_eq!(seen.iter().min(), Some(&9));
        assert_eq!(seen.iter().max(), Some(&23));
    }

    #[test]
    fn objects_alternate() {
        let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
        let a = carousel
            .insert(ObjectKind::Segment, vec![1u8; 5000])
            .unwrap();
        let b = carousel
            .insert(ObjectKind::Manifest, vec![2u8; 5000])
            .unwrap();
        let ids: Vec<ObjectId> = carousel
            .next_cycle()
            .map(|d| parse(&d).header.id())
            .collect();
        // 5 source symbols and ceil(5 × 0.25) = 2 repair symbols each.
        assert_eq!(ids.len(), 14);
        for pair in ids.chunks(2) {
            assert_ne!(pair[0], pair[1]);
            assert!(pair.contains(&a) && pair.contains(&b));
        }
    }

    #[test]
    fn insert_remove_replace() {
        let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
        let a = carousel.insert(ObjectKind::Segment, vec![1u8; 10]).unwrap();
        assert_eq!(carousel.insert(ObjectKind::Bulletin, vec![1u8; 10]), Ok(a));
        assert_eq!(carousel.kind(&a), Some(ObjectKind::Bulletin));
        assert_eq!(carousel.len(), 1);
        let ids = carousel
            .replace_all([
                (ObjectKind::Segment, Bytes::from(vec![1u8; 10])),
                (ObjectKind::Manifest, Bytes::from(vec![2u8; 10])),
            ])
            .unwrap();
        assert_eq!(ids[0], a);
        assert_eq!(carousel.len(), 2);
        assert_eq!(carousel.kind(&a), Some(ObjectKind::Segment));
        assert!(carousel.remove(&a));
        assert!(!carousel.remove(&a));
        assert_eq!(carousel.ids().collect::<Vec<_>>(), vec![ids[1]]);
        let err = carousel
            .replace_all([(ObjectKind::Segment, Bytes::new())])
            .unwrap_err();
        assert_eq!(err, CarouselError::EmptyObject);
        assert_eq!(carousel.len(), 1, "failed replace_all changes nothing");
    }

    #[test]
    fn zero_overhead_sends_only_source() {
        let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
        carousel
            .insert(ObjectKind::Segment, vec![1u8; 5000])
            .unwrap();
        carousel.set_repair_overhead_percent(0).unwrap();
        assert_eq!(carousel.next_cycle().count(), 5);
        assert!(carousel.set_repair_overhead_percent(1001).is_err());
    }

    #[test]
    fn empty_carousel_gives_empty_cycles() {
        let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
        assert!(carousel.is_empty());
        let mut cycle = carousel.next_cycle();
        assert!(cycle.is_empty());
        let mut out = vec![1];
        assert!(!cycle.next_into(&mut out));
        assert!(out.is_empty());
        assert_eq!(carousel.cycle_number(), 1);
    }
}
