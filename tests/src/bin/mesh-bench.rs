//! Mesh replication benchmark: N mesh nodes (default 10) replicating one content (default
//! 200 MB) from a single origin, against the same nodes each fetching all of it from the origin.
//!
//! Measures, for a content of `MB` megabytes in 2 MB segments:
//! - baseline: every mesh node runs `mhc-node prefetch` at once (a whole-content QUIC fill
//!   from the origin, as an edge does): wall time, and bytes the origin sent (its
//!   `mhc_quic_body_bytes_total`);
//! - mesh: every mesh node pins a second content of the same size and replicates it over
//!   iroh-blobs: wall time until every node holds it, and bytes the origin sent (its
//!   `mhc_mesh_sent_bytes_total`), as a multiple of the content size (target ≤ 2×).
//!
//! Usage: `cargo run --release -p mhc-tests --bin mesh-bench -- [NODES] [MB]` (build the release
//! mhc-node first: `cargo build --release -p mhc-node`; the harness uses the binary beside this
//! one). Needs about (2 × NODES + 2) × MB of disk in the temporary folder.

use std::time::{Duration, Instant};

use mhc_tests::{assert_success, wait_until, write_synthetic_rendition, Cluster, NodeOptions};

const SEGMENT_BYTES: usize = 2_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let mb: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let segments = (mb * 1_000_000).div_ceil(SEGMENT_BYTES);
    let content = (segments * SEGMENT_BYTES) as f64;

    let mut c = Cluster::new();
    let o = c.start_with("origin", NodeOptions::new("origin").heartbeat_ms(250));
    let boot = c.node(o).p2p.clone();
    let trust = format!(
        "[trust]\npublishers = [\"{}\"]\n[cache]\ndisk_gb = {}\n",
        c.node(o).public_key.as_deref().unwrap(),
        (mb as f64 * 3.0 / 1000.0).max(1.0)
    );
    let mesh: Vec<usize> = (0..nodes)
        .map(|i| {
            c.start_with(
                &format!("mesh{i}"),
                NodeOptions::new("mesh")
                    .heartbeat_ms(250)
                    .bootstrap(&boot)
                    .extra(&trust),
            )
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || c.node(o).alive_members()
            >= nodes),
        "the origin did not see every mesh node"
    );
    for (id, seed) in [("base", 1u8), ("song", 2u8)] {
        let dir = c.path().join(id);
        write_synthetic_rendition(&dir, segments, SEGMENT_BYTES, seed);
        assert_success(&c.node(o).ingest(id, &dir), "ingest");
        // The rendition is in the origin's store now; free the disk it took.
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!(
        "{nodes} mesh nodes, content {:.1} MB in {segments} segments",
        content / 1e6
    );

    // Baseline: everyone fills the whole of "base" from the origin over QUIC, at once.
    let quic_before = c.node(o).metric("mhc_quic_body_bytes_total").unwrap_or(0.0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for &m in &mesh {
            let node = c.node(m);
            s.spawn(move || {
                let data_dir = node.data_dir.to_str().unwrap().to_owned();
                assert_success(
                    &node.cli(&["prefetch", "--data-dir", &data_dir, "base"]),
                    "prefetch",
                );
            });
        }
    });
    let baseline = t0.elapsed();
    let quic_sent = c.node(o).metric("mhc_quic_body_bytes_total").unwrap_or(0.0) - quic_before;

    // Mesh: everyone pins "song" and replicates it over iroh-blobs.
    let mesh_before = c.node(o).metric("mhc_mesh_sent_bytes_total").unwrap_or(0.0);
    let t0 = Instant::now();
    for &m in &mesh {
        assert_success(&c.node(m).pin("song"), "pin");
    }
    let done = wait_until(Duration::from_secs(1800), || {
        mesh.iter().all(|&m| {
            c.node(m)
                .metric("mhc_mesh_replications_total")
                .unwrap_or(0.0)
                >= 1.0
        })
    });
    let replicated = t0.elapsed();
    assert!(done, "not every mesh node replicated within 30 minutes");
    let mesh_sent = c.node(o).metric("mhc_mesh_sent_bytes_total").unwrap_or(0.0) - mesh_before;

    println!(
        "baseline, every node fills from the origin over QUIC: {:.1} s, origin sent {:.1} MB \
         ({:.2}x the content)",
        baseline.as_secs_f64(),
        quic_sent / 1e6,
        quic_sent / content
    );
    println!(
        "mesh replication over iroh-blobs: {:.1} s, origin sent {:.1} MB ({:.2}x the content; \
         target <= 2x)",
        replicated.as_secs_f64(),
        mesh_sent / 1e6,
        mesh_sent / content
    );
    println!(
        "mesh time / baseline time: {:.2}",
        replicated.as_secs_f64() / baseline.as_secs_f64()
    );
}
