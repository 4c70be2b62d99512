//! Eviction-policy benchmark: hit ratio of the store's S3-FIFO against plain LRU on the same
//! request trace (segment-sized objects, Zipf-popular catalogue, with and without scans).
//!
//! Usage: `cargo run --release -p mhc-tests --bin cache-bench`
//! Deterministic (seeded), so the figures repeat exactly.

use std::collections::{BTreeMap, HashMap};

use mhc_node::S3Fifo;

/// Plain LRU over object counts (all objects have the same size here).
struct Lru {
    capacity: usize,
    clock: u64,
    stamp: HashMap<u64, u64>,
    order: BTreeMap<u64, u64>,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            clock: 0,
            stamp: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// Returns whether it was a hit; admits on a miss.
    fn request(&mut self, key: u64) -> bool {
        self.clock += 1;
        let hit = if let Some(old) = self.stamp.insert(key, self.clock) {
            self.order.remove(&old);
            true
        } else {
            false
        };
        self.order.insert(self.clock, key);
        while self.stamp.len() > self.capacity {
            let (&oldest, &victim) = self.order.iter().next().unwrap();
            self.order.remove(&oldest);
            self.stamp.remove(&victim);
        }
        hit
    }
}

/// The workspace's seeded PRNG, so the trace is the same on every run.
type Rng = fastrand::Rng;

fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

fn trace(requests: usize, catalogue: usize, scan_every: usize, scan_len: usize) -> Vec<u64> {
    let cdf = zipf_cdf(catalogue, 0.9);
    let mut rng = Rng::with_seed(0x9E3779B97F4A7C15);
    let mut out = Vec::with_capacity(requests);
    let mut next_scan_key = 1u64 << 40;
    for i in 0..requests {
        if scan_every > 0 && i % scan_every == 0 && i > 0 {
            // A viewer (or crawler) reading through content nobody else watches.
            for _ in 0..scan_len {
                out.push(next_scan_key);
                next_scan_key += 1;
            }
        }
        let u = rng.f64();
        out.push(cdf.partition_point(|c| *c < u) as u64);
    }
    out
}

fn run(name: &str, trace: &[u64], capacity: usize) {
    const SEGMENT: u64 = 2 << 20;
    let mut lru = Lru::new(capacity);
    let mut s3 = S3Fifo::new(capacity as u64 * SEGMENT);
    let (mut lru_hits, mut s3_hits) = (0usize, 0usize);
    for &k in trace {
        if lru.request(k) {
            lru_hits += 1;
        }
        if s3.access(&k) {
            s3_hits += 1;
        } else {
            s3.insert(k, SEGMENT);
        }
    }
    let n = trace.len() as f64;
    println!(
        "{name:<34} LRU {:>5.1}%   S3-FIFO {:>5.1}%   ({} requests, cache {capacity} segments)",
        lru_hits as f64 * 100.0 / n,
        s3_hits as f64 * 100.0 / n,
        trace.len()
    );
}

fn main() {
    let catalogue = 20_000;
    let capacity = 1_000;
    run(
        "zipf 0.9, no scans",
        &trace(400_000, catalogue, 0, 0),
        capacity,
    );
    run(
        "zipf 0.9, scan of 2000 every 20k",
        &trace(400_000, catalogue, 20_000, 2_000),
        capacity,
    );
    run(
        "zipf 0.9, scan of 5000 every 10k",
        &trace(400_000, catalogue, 10_000, 5_000),
        capacity,
    );
}
