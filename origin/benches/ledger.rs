//! Ledger throughput: durable appends per second at several batch sizes, then proof generation
//! and verification rates. A plain binary (`harness = false`): run with
//! `cargo bench -p mhc-origin --bench ledger`. `LEDGER_BENCH_ENTRIES` sets the entries appended per
//! batch size (default 30,000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use mhc_origin::ledger::{
    leaf_hash, verify_consistency, verify_leaf_hash_inclusion, EntryKind, ExportScope, Hash,
    Ledger, MerkleTree, NewEntry, DEFAULT_CACHE_LEVEL,
};

/// Batch sizes measured: a busy plugin flushing every 100 entries up to a statement import.
const BATCH_SIZES: [u64; 3] = [100, 500, 1_000];
/// Proofs generated per measurement: enough for a stable rate, short enough for 2 cores.
const PROOFS: u64 = 20_000;
/// Leaves of the in-memory tree that shows how proof generation scales past what the sled runs
/// build.
const BIG_TREE: u64 = 1 << 20;

/// A realistic entry: about 120 bytes of leaf.
fn entry(i: u64) -> NewEntry {
    NewEntry::new(
        EntryKind::Credit,
        format!("artist-{:05}", i % 20_000),
        1 + (i % 997) as i64,
        "EUR",
        "plays",
    )
    .with_reference(format!("stmt-2024-03-{:06}", i / 1_000))
    .with_memo("streams 2024-03-01..2024-03-31")
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let total: u64 = std::env::var("LEDGER_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut kept = None;
    println!("durable appends ({total} entries per batch size, one sled flush per batch):");
    for batch in BATCH_SIZES {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .expect("sled");
        let mut ledger = Ledger::open(&db, key.clone()).expect("open");
        let batches: Vec<Vec<NewEntry>> = (0..total / batch)
            .map(|b| (b * batch..(b + 1) * batch).map(entry).collect())
            .collect();
        let n_batches = batches.len() as u64;
        let start = Instant::now();
        for b in batches {
            black_box(ledger.append_batch(b).expect("append"));
        }
        let took = start.elapsed();
        let appended = n_batches * batch;
        println!(
            "  batch {batch:>5}: {appended} entries in {:>6.2} s = {:>8.0} entries/s, {:>6.1} batches/s",
            took.as_secs_f64(),
            rate(appended, took),
            rate(n_batches, took),
        );
        kept = Some((dir, db, ledger));
    }

    let (_dir, db, ledger) = kept.expect("at least one batch size");
    let len = ledger.len();
    let head = ledger.latest_head().expect("head");
    let heads = ledger.heads().expect("heads");
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    println!(
        "proofs on the sled ledger ({len} entries, {} heads):",
        heads.len()
    );

    let start = Instant::now();
    let mut proofs = Vec::with_capacity(PROOFS as usize);
    for _ in 0..PROOFS {
        let index = rng.u64(..len);
        proofs.push((
            index,
            ledger.inclusion_proof(index, head.size).expect("proof"),
        ));
    }
    let took = start.elapsed();
    println!("  inclusion generate: {:>9.0} proofs/s", rate(PROOFS, took));
    let leaves: Vec<Hash> = proofs
        .iter()
        .map(|(i, _)| leaf_hash(&ledger.leaf_bytes(*i).expect("entry")))
        .collect();
    let start = Instant::now();
    for ((index, proof), leaf) in proofs.iter().zip(&leaves) {
        verify_leaf_hash_inclusion(leaf, *index, head.size, proof, &head.root).expect("verifies");
    }
    let took = start.elapsed();
    println!("  inclusion verify:   {:>9.0} proofs/s", rate(PROOFS, took));

    let start = Instant::now();
    let mut pairs = Vec::with_capacity(PROOFS as usize);
    for _ in 0..PROOFS {
        let a = heads[rng.usize(..heads.len())];
        let b = heads[rng.usize(..heads.len())];
        let (old, new) = if a.size <= b.size { (a, b) } else { (b, a) };
        let proof = ledger.consistency_proof(old.size, new.size).expect("proof");
        pairs.push((old, new, proof));
    }
    let took = start.elapsed();
    println!(
        "  consistency generate: {:>7.0} proofs/s",
        rate(PROOFS, took)
    );
    let start = Instant::now();
    for (old, new, proof) in &pairs {
        verify_consistency(old.size, new.size, &old.root, &new.root, proof).expect("verifies");
    }
    let took = start.elapsed();
    println!(
        "  consistency verify:   {:>7.0} proofs/s",
        rate(PROOFS, took)
    );

    let start = Instant::now();
    let report = ledger.verify().expect("verify");
    let took = start.elapsed();
    println!(
        "  full verify: {} entries, {} heads in {:.2} s = {:.0} entries/s",
        report.entries.end,
        report.heads,
        took.as_secs_f64(),
        rate(len, took)
    );
    let start = Instant::now();
    let mut out = Vec::new();
    ledger
        .export_json(ExportScope::All, &mut out)
        .expect("export");
    let took = start.elapsed();
    println!(
        "  json export (all): {:.1} MB in {:.2} s",
        out.len() as f64 / 1e6,
        took.as_secs_f64()
    );
    drop(ledger);
    let start = Instant::now();
    let reopened = Ledger::open(&db, key).expect("reopen");
    println!(
        "  reopen (rebuild tree, check heads): {:.3} s",
        start.elapsed().as_secs_f64()
    );
    black_box(reopened);

    // Proof generation does not depend on sled: show how it scales on a large in-memory tree.
    let leaves: Vec<Hash> = (0..BIG_TREE).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let start = Instant::now();
    let mut tree = MerkleTree::new(DEFAULT_CACHE_LEVEL);
    for leaf in &leaves {
        tree.push(*leaf);
    }
    let took = start.elapsed();
    println!(
        "in-memory tree of {BIG_TREE} leaves: built at {:.0} leaves/s",
        rate(BIG_TREE, took)
    );
    let source = leaves.as_slice();
    let start = Instant::now();
    for _ in 0..PROOFS {
        let size = BIG_TREE - rng.u64(..BIG_TREE / 2);
        black_box(
            tree.inclusion_proof(source, rng.u64(..size), size)
                .expect("proof"),
        );
    }
    println!(
        "  inclusion generate:   {:>7.0} proofs/s",
        rate(PROOFS, start.elapsed())
    );
    let start = Instant::now();
    for _ in 0..PROOFS {
        let new = BIG_TREE - rng.u64(..BIG_TREE / 2);
        let old = 1 + rng.u64(..new);
        black_box(tree.consistency_proof(source, old, new).expect("proof"));
    }
    println!(
        "  consistency generate: {:>7.0} proofs/s",
        rate(PROOFS, start.elapsed())
    );
}
