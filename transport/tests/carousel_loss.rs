//! The carousel without sockets: sender core → seeded lossy, reordering channel → assembler.

use bytes::Bytes;
use mhc_transport::carousel::{
    Assembler, AssemblerConfig, Carousel, CarouselConfig, CarouselError, Event, ObjectId,
    ObjectKind, PacketError, ReceiveError, DEFAULT_SYMBOL_SIZE,
};

/// A one-way link that drops `loss_percent` of datagrams and holds back `reorder_percent` of
/// the rest for 1 to 16 datagrams.
struct LossyLink {
    rng: fastrand::Rng,
    loss_percent: f64,
    reorder_percent: f64,
    held: Vec<(u64, Vec<u8>)>,
    seq: u64,
}

impl LossyLink {
    fn new(seed: u64, loss_percent: f64, reorder_percent: f64) -> Self {
        LossyLink {
            rng: fastrand::Rng::with_seed(seed),
            loss_percent,
            reorder_percent,
            held: Vec::new(),
            seq: 0,
        }
    }

    /// Datagrams that come out when `datagram` goes in.
    fn carry(&mut self, datagram: Vec<u8>) -> Vec<Vec<u8>> {
        self.seq += 1;
        let mut out = Vec::new();
        if self.rng.f64() * 100.0 < self.loss_percent {
            // lost
        } else if self.rng.f64() * 100.0 < self.reorder_percent {
            let delay = self.rng.u64(1..=16);
            self.held.push((self.seq + delay, datagram));
        } else {
            out.push(datagram);
        }
        let seq = self.seq;
        let (due, kept): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(at, _)| *at <= seq);
        self.held = kept;
        out.extend(due.into_iter().map(|(_, datagram)| datagram));
        out
    }
}

/// Runs one cycle through `link` into `assembler`; returns the delivered objects.
fn run_cycle(
    carousel: &mut Carousel,
    link: &mut LossyLink,
    assembler: &mut Assembler,
) -> Vec<(ObjectId, ObjectKind, Bytes)> {
    let mut delivered = Vec::new();
    for datagram in carousel.next_cycle() {
        for datagram in link.carry(datagram) {
            match assembler.push(&datagram).expect("valid datagram") {
                Some(Event::Complete {
                    id, kind, bytes, ..
                }) => delivered.push((id, kind, bytes)),
                Some(Event::Corrupt { id, .. }) => panic!("{id} corrupt on a clean link"),
                None => {}
            }
        }
    }
    delivered
}

fn object(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// Default settings but blocks of at most 256 symbols (297 kB): in unoptimised builds raptorq's
/// debug assertions make solving a block grow with about K³ (a 1725-symbol block takes 9 s
/// instead of 10 ms), and several blocks per object exercise more of the code anyway.
fn config() -> CarouselConfig {
    CarouselConfig {
        max_block_symbols: 256,
        max_object_bytes: 16 << 20,
        ..CarouselConfig::default()
    }
}

fn assembler() -> Assembler {
    Assembler::new(AssemblerConfig::default()).expect("default config")
}

#[test]
fn sizes_roundtrip_without_loss() {
    let t = usize::from(DEFAULT_SYMBOL_SIZE);
    // Many blocks: 6 MB is 21 blocks of at most 256 symbols.
    let config = config();
    for (i, len) in [1, t - 1, t, t + 1, 3 * t, 100_000, 6_000_000]
        .into_iter()
        .enumerate()
    {
        let bytes = object(i as u64, len);
        let mut carousel = Carousel::new(config.clone()).unwrap();
        let id = carousel.insert(ObjectKind::Segment, bytes.clone()).unwrap();
        let mut link = LossyLink::new(0, 0.0, 0.0);
        let mut assembler = assembler();
        let delivered = run_cycle(&mut carousel, &mut link, &mut assembler);
        assert_eq!(delivered.len(), 1, "len {len}");
        assert_eq!(delivered[0].0, id);
        assert_eq!(delivered[0].1, ObjectKind::Segment);
        assert_eq!(delivered[0].2, bytes, "len {len}");
        assert_eq!(assembler.buffered_bytes(), 0);
    }
}

#[test]
fn empty_objects_are_rejected_on_both_sides() {
    let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
    assert_eq!(
        carousel.insert(ObjectKind::Bulletin, Vec::new()),
        Err(CarouselError::EmptyObject)
    );
    // A datagram claiming length 0 (forged from a real one) is malformed.
    carousel.insert(ObjectKind::Bulletin, vec![1u8]).unwrap();
    let mut datagram = carousel.next_cycle().next().unwrap();
    datagram[38..46].fill(0);
    datagram[46..51].fill(0);
    assert_eq!(
        assembler().push(&datagram),
        Err(ReceiveError::Malformed(PacketError::EmptyObject))
    );
}

#[test]
fn twenty_percent_loss_with_reordering_completes_everything() {
    let mut carousel = Carousel::new(config()).unwrap();
    let mut want = Vec::new();
    for i in 0..12u64 {
        let kind = [
            ObjectKind::Manifest,
            ObjectKind::Segment,
            ObjectKind::Bulletin,
        ][i as usize % 3];
        let bytes = object(100 + i, 1 + (i as usize * 97_331) % 600_000);
        want.push(carousel.insert(kind, bytes).unwrap());
    }
    want.sort();
    let mut link = LossyLink::new(42, 20.0, 10.0);
    let mut assembler = assembler();
    let mut got = Vec::new();
    let mut cycles = 0;
    while got.len() < want.len() {
        assert!(cycles < 6, "still incomplete: {:?}", assembler.incomplete());
        got.extend(run_cycle(&mut carousel, &mut link, &mut assembler));
        cycles += 1;
    }
    let mut ids: Vec<ObjectId> = got.iter().map(|(id, _, _)| *id).collect();
    ids.sort();
    assert_eq!(ids, want, "each object exactly once");
    for (id, _, bytes) in &got {
        assert_eq!(ObjectId::of(bytes), *id);
    }
    assert!(cycles <= 3, "{cycles} cycles");
}

#[test]
fn loss_above_the_overhead_completes_in_a_later_cycle() {
    // 40 % loss against 25 % overhead: a cycle delivers about 0.6 × 1.25 = 0.75 of the
    // symbols needed, so nothing can complete in cycle 0, and cycle 1's fresh repair symbols
    // (plus the source symbols missed before) finish the job.
    let mut carousel = Carousel::new(config()).unwrap();
    let a = carousel
        .insert(ObjectKind::Segment, object(1, 2_000_000))
        .unwrap();
    let b = carousel
        .insert(ObjectKind::Manifest, object(2, 300_000))
        .unwrap();
    let mut link = LossyLink::new(7, 40.0, 5.0);
    let mut assembler = assembler();
    assert!(run_cycle(&mut carousel, &mut link, &mut assembler).is_empty());
    let progress = assembler.incomplete();
    assert_eq!(progress.len(), 2);
    for p in &progress {
        assert!(p.packets_received < p.source_symbols_needed, "{p:?}");
        assert!(p.packets_received > p.source_symbols_needed / 2, "{p:?}");
        assert_eq!(p.last_cycle, 0);
    }
    let mut done = Vec::new();
    for _ in 0..4 {
        done.extend(
            run_cycle(&mut carousel, &mut link, &mut assembler)
                .into_iter()
                .map(|(id, _, _)| id),
        );
        if done.len() == 2 {
            break;
        }
    }
    done.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(done, want);
    assert!(assembler.incomplete().is_empty());
}

#[test]
fn objects_changed_between_cycles_are_picked_up() {
    let mut carousel = Carousel::new(CarouselConfig::default()).unwrap();
    let old = carousel
        .insert(ObjectKind::Bulletin, object(1, 5_000))
        .unwrap();
    let mut link = LossyLink::new(3, 0.0, 0.0);
    let mut assembler = assembler();
    assert_eq!(run_cycle(&mut carousel, &mut link, &mut assembler).len(), 1);
    let new = carousel
        .replace_all([(ObjectKind::Bulletin, Bytes::from(object(2, 5_000)))])
        .unwrap();
    assert!(!carousel.contains(&old));
    let delivered = run_cycle(&mut carousel, &mut link, &mut assembler);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, new[0]);
    // Nothing further is delivered for known ids.
    assert!(run_cycle(&mut carousel, &mut link, &mut assembler).is_empty());
    assert!(assembler.stats().after_complete > 0);
}
