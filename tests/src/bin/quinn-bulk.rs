//! Baseline for the QUIC fill benchmark: a plain quinn bulk transfer of N bytes over loopback,
//! with the same TLS setup as the node (ed25519 node-key certificates, `mhc/1`), on `streams`
//! parallel streams (bidirectional, as the node protocol uses). No protocol, no hashing, no storage: the ceiling a fill
//! can approach on this machine.
//!
//! Usage: `cargo run --release -p mhc-tests --bin quinn-bulk -- [MIB=1024] [STREAMS=8]`

use std::net::SocketAddr;
use std::time::Instant;

use mhc_transport::{client_config, server_config, QuicLimits};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map_or(1024, |a| a.parse().expect("MIB"));
    let streams: u64 = args.next().map_or(8, |a| a.parse().expect("STREAMS"));
    let total = mib << 20;
    let per_stream = total / streams;

    let server_seed = [1u8; 32];
    let server_cfg = server_config(&server_seed, &QuicLimits::default()).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = quinn::Endpoint::server(server_cfg, any).unwrap();
    let server_addr = server.local_addr().unwrap();

    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let (_send, mut recv) = conn.accept_bi().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(chunk) = recv.read_chunk(1 << 20, true).await.unwrap() {
                    n += chunk.bytes.len() as u64;
                }
                n
            }));
        }
        let mut received = 0;
        for t in tasks {
            received += t.await.unwrap();
        }
        received
    });

    let mut client = quinn::Endpoint::client(any).unwrap();
    client.set_default_client_config(client_config(&[2u8; 32], None).unwrap());
    let conn = client.connect(server_addr, "mhc").unwrap().await.unwrap();
    let chunk = bytes::Bytes::from(vec![0x5au8; 1 << 20]);
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..streams {
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let chunk = chunk.clone();
        senders.push(tokio::spawn(async move {
            let mut left = per_stream;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                send.write_chunk(chunk.slice(..n)).await.unwrap();
                left -= n as u64;
            }
            send.finish().unwrap();
            let _ = send.stopped().await;
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let received = receiver.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(received, per_stream * streams);
    println!(
        "plain quinn: {} MiB on {streams} streams in {secs:.2} s = {:.0} MB/s",
        received >> 20,
        received as f64 / 1e6 / secs
    );
}
