//! The QUIC data plane of a real origin against clients that hold connections and withhold
//! bytes: connections beyond its caps are refused and counted, the ones it holds pin a bounded
//! amount of memory, and an enrolled edge fills from it all along.

use std::net::SocketAddr;
use std::time::Duration;

use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions};

/// A request frame that announces the largest request and withholds its last byte: the
/// server must buffer what came and wait (until its request timeout) for the rest.
fn withheld_request() -> Vec<u8> {
    let len = mhc_transport::MAX_REQUEST_BYTES;
    let mut frame = (len as u32).to_be_bytes().to_vec();
    frame.resize(4 + len - 1, 0);
    frame
}

/// Connects to `server` from `endpoint` as the node whose key is `seed`, then opens `streams`
/// request streams and withholds the last byte of each. `None` if the server refused or
/// closed the connection.
async fn withholding_connection(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    seed: [u8; 32],
    streams: usize,
) -> Option<(quinn::Connection, Vec<quinn::SendStream>)> {
    let config = mhc_transport::client_config(&seed, None).unwrap();
    let connecting = endpoint.connect_with(config, server, "mhc").ok()?;
    let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .ok()?
        .ok()?;
    let frame = withheld_request();
    let mut sends = Vec::with_capacity(streams);
    for _ in 0..streams {
        let opened = tokio::time::timeout(Duration::from_secs(2), conn.open_bi()).await;
        let Ok(Ok((mut send, _recv))) = opened else {
            return None;
        };
        if send.write_all(&frame).await.is_err() {
            return None;
        }
        sends.push(send);
    }
    Some((conn, sends))
}

fn seed(n: u32) -> [u8; 32] {
    let mut s = [0xa5u8; 32];
    s[..4].copy_from_slice(&n.to_be_bytes());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withholding_clients_are_capped_and_pin_bounded_memory_while_an_edge_fills() {
    let mut c = Cluster::new();
    let o = c.start("origin", "origin", "");
    let dir = c.path().join("song");
    mhc_tests::write_synthetic_rendition(&dir, 4, 64 * 1024, 5);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    let origin_quic = c.node(o).quic.unwrap();
    let refused = |reason: &str| {
        c.node(o)
            .metric(&format!("mhc_quic_refused_total{{reason=\"{reason}\"}}"))
            .unwrap_or(0.0)
    };
    let rss_before = c.node(o).rss_kb();

    // The attacker's address is another loopback address, so the per-address cap it meets
    // is its own and not the edge's.
    let endpoint = quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).unwrap();
    let streams = 64; // the server's default streams per connection

    // One key, 20 connections: the server keeps 8 (per peer) and closes the others.
    let mut held = Vec::new();
    for _ in 0..20 {
        if let Some(conn) = withholding_connection(&endpoint, origin_quic, seed(0), streams).await {
            held.push(conn);
        }
    }
    assert!(
        wait_until(Duration::from_secs(5), || refused("too_many_from_peer")
            == 12.0),
        "refused for their key: {}",
        refused("too_many_from_peer")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.retain(|(conn, _)| conn.close_reason().is_none());
    assert_eq!(held.len(), 8, "connections of one key kept");

    // 200 keys from the same address: the server holds 64 connections from it in all.
    for n in 1..=200 {
        if let Some(conn) = withholding_connection(&endpoint, origin_quic, seed(n), streams).await {
            held.push(conn);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.retain(|(conn, _)| conn.close_reason().is_none());
    assert_eq!(held.len(), 64, "connections from one address kept");
    assert!(
        refused("too_many_from_address") >= 200.0 - 56.0,
        "refused: {}",
        refused("too_many_from_address")
    );

    // Every held stream withholds a byte. Each is bounded by one request window (5 KiB), so
    // 64 × 64 of them pin ~20 MiB plus a task each; without the caps, 220 connections would
    // pin over 70 MiB.
    let rss_during = c.node(o).rss_kb();
    let grown_mib = rss_during.saturating_sub(rss_before) / 1024;
    eprintln!("origin RSS {rss_before} KiB before, {rss_during} KiB while attacked");
    assert!(
        grown_mib < 48,
        "the origin grew by {grown_mib} MiB under withholding clients"
    );

    // An enrolled edge (from 127.0.0.1) connects and fills while the attack holds.
    let edge = c.start_with(
        "edge",
        NodeOptions::new("edge").extra(&format!(
            "[trust]\npublishers = [\"{}\"]\n[upstream]\nparents = [\"{}\"]\n",
            c.node(o).public_key.as_deref().unwrap(),
            c.node(o).as_parent()
        )),
    );
    let got = c.node(edge).get("/v1/content/song/seg/0.ts");
    assert_eq!(got.status, 200, "the edge could not fill during the attack");
    assert_eq!(
        got.body,
        std::fs::read(dir.join("seg_000.ts")).unwrap(),
        "the edge served other bytes than the origin's"
    );

    drop(held);
    endpoint.close(0u32.into(), b"done");
    assert_eq!(c.node(o).get("/healthz").status, 200);
}
