//! Play-report throughput through the plugin host, end to end: decode, signature check,
//! de-duplication, the flushed inbox write, royalty booking (its own flushed transaction) and the
//! ledger append (one signed head and one flush per sync). A plain binary (`harness = false`):
//! run with `cargo bench -p mhc-origin --bench plugins`. `PLUGINS_BENCH_BATCHES` sets the number
//! of batches per phase (default 2,000); batches hold 50 entries each.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use mhc_origin::plugin::{ContentPublished, LedgerPluginConfig, PluginHost, ReportOutcome};
use mhc_origin::royalty::RoyaltyConfig;
use mhc_origin::{PlayEntry, PlayReportBatch, PluginsConfig, SignedPlayReport};

/// Entries per batch: a node reporting a minute of a busy catalogue.
const ENTRIES: usize = 50;
/// Reporting nodes.
const NODES: u8 = 20;
/// Published contents (over 100 artists).
const CONTENTS: usize = 500;
const COUNTRIES: [&str; 8] = ["US", "GB", "FR", "DE", "JP", "BR", "IN", "*"];

/// `count` encoded reports, round-robin over the nodes, each with `ENTRIES` distinct pairs.
fn reports(count: usize, rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    let keys: Vec<SigningKey> = (1..=NODES)
        .map(|n| SigningKey::from_bytes(&[n; 32]))
        .collect();
    (0..count)
        .map(|i| {
            let node = i % keys.len();
            let seq = (i / keys.len()) as u64 + 1;
            let first = rng.usize(..CONTENTS);
            let entries = (0..ENTRIES)
                .map(|k| {
                    let seconds_ms = 4_000 * (1 + rng.u64(..30));
                    PlayEntry {
                        content_id: format!("content-{:04}", (first + k / 2) % CONTENTS),
                        country: COUNTRIES[(k % 2) * 4 + (k / 2) % 4].to_string(),
                        segments: seconds_ms / 4_000,
                        bytes: seconds_ms * 300,
                        seconds_ms,
                        sessions: 4,
                        plays: rng.u64(..4),
                    }
                })
                .collect();
            let batch = PlayReportBatch {
                node: [0; 32],
                seq,
                period_start_ms: 1_741_564_800_000 + seq * 60_000,
                period_end_ms: 1_741_564_800_000 + (seq + 1) * 60_000,
                entries,
            };
            SignedPlayReport::sign(batch, &keys[node])
                .expect("valid batch")
                .encode()
        })
        .collect()
}

fn open_host(dir: &std::path::Path) -> (sled::Db, PluginHost) {
    let db = sled::open(dir).expect("open sled");
    let config = PluginsConfig {
        royalty: Some(RoyaltyConfig::default()),
        ledger: Some(LedgerPluginConfig::default()),
    };
    let host = PluginHost::new(&db, SigningKey::from_bytes(&[99; 32]), &config).expect("host");
    for i in 0..CONTENTS {
        host.publish(ContentPublished {
            content_id: format!("content-{i:04}"),
            version: 1,
            artist_id: format!("artist-{:03}", i % 100),
            title: format!("Track {i}"),
        })
        .expect("publish");
    }
    (db, host)
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn describe(host: &PluginHost) -> String {
    let postings = host
        .royalty()
        .map_or(0, |r| r.royalty().last_seq().unwrap_or(0));
    let (entries, heads) = host.ledger().map_or((0, 0), |l| {
        l.with_ledger(|l| (l.len(), l.heads().map_or(0, |h| h.len())))
    });
    format!("{postings} postings, {entries} ledger entries under {heads} signed heads")
}

fn main() {
    let count: usize = std::env::var("PLUGINS_BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let encoded = reports(count, &mut rng);
    let avg_bytes = encoded.iter().map(Vec::len).sum::<usize>() / encoded.len().max(1);
    println!(
        "{count} play-report batches of {ENTRIES} entries (~{avg_bytes} bytes each), {NODES} nodes"
    );
    let member = |_: &[u8; 32]| true;

    // Signature check alone, for scale.
    let decoded: Vec<SignedPlayReport> = encoded
        .iter()
        .map(|b| SignedPlayReport::decode(b).expect("decode"))
        .collect();
    let start = Instant::now();
    for r in &decoded {
        black_box(r.verify()).expect("verify");
    }
    let verify = start.elapsed();
    println!(
        "  decode-free verify:                 {:>9.0} batches/s",
        per_second(count, verify)
    );

    // Phase 1: one report at a time, delivered before the call returns (the node's default).
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, host) = open_host(dir.path());
    let start = Instant::now();
    for bytes in &encoded {
        let report = SignedPlayReport::decode(bytes).expect("decode");
        let outcome = host.ingest_report(report, member).expect("ingest");
        assert!(matches!(outcome, ReportOutcome::Accepted { .. }));
    }
    let e2e = start.elapsed();
    println!(
        "  ingest_report end to end:           {:>9.0} batches/s  ({:.0} entries/s, {:.2} ms/batch)",
        per_second(count, e2e),
        per_second(count * ENTRIES, e2e),
        e2e.as_secs_f64() * 1e3 / count as f64
    );
    println!("    -> {}", describe(&host));
    assert!(host
        .stats()
        .iter()
        .all(|s| s.errors == 0 && s.panics == 0 && s.pending == 0));

    // Resends after lost acknowledgements.
    let start = Instant::now();
    for bytes in &encoded {
        let report = SignedPlayReport::decode(bytes).expect("decode");
        let outcome = host.ingest_report(report, member).expect("resend");
        assert!(matches!(outcome, ReportOutcome::Duplicate { .. }));
    }
    println!(
        "  duplicate resend (ack again):       {:>9.0} batches/s",
        per_second(count, start.elapsed())
    );
    drop(host);
    drop(db);

    // Phase 2: acknowledge first (inbox only), deliver in bulk afterwards: the ledger then
    // appends many postings under one head.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, host) = open_host(dir.path());
    let start = Instant::now();
    for bytes in &encoded {
        let report = SignedPlayReport::decode(bytes).expect("decode");
        host.accept_report(&report, member).expect("accept");
    }
    let accept = start.elapsed();
    let start = Instant::now();
    let summary = host.deliver_pending();
    let deliver = start.elapsed();
    assert!(summary.failures.is_empty());
    println!(
        "  accept_report (verify+dedup+flush): {:>9.0} batches/s",
        per_second(count, accept)
    );
    println!(
        "  deliver_pending in bulk:            {:>9.0} batches/s  (royalty + ledger)",
        per_second(count, deliver)
    );
    println!(
        "  accept then bulk deliver, overall:  {:>9.0} batches/s",
        per_second(count, accept + deliver)
    );
    println!("    -> {}", describe(&host));
    drop(host);
    drop(db);
}
