//! Baseline for the QUIC fill benchmark: a plain quinn bulk transfer of N bytes over loopback,
//! with the same TLS setup as the node (ed25519 node-key certificates, `mhc/1`), on `streams`
//! parallel streams (bidirectional, as the node protocol uses). No protocol, no hashing, no
//! storage: the ceiling a fill can approach on this machine.
//!
//! Three shapes:
//! - one process, both endpoints on one 2-worker runtime (the client sends):
//!   `quinn-bulk [MIB=1024] [STREAMS=8]`;
//! - two processes, as a fill is (the server sends what the client asks for, like an origin
//!   answering an edge): `quinn-bulk serve MIB STREAMS` prints its address and serves one
//!   transfer; `quinn-bulk fetch ADDR MIB STREAMS` fetches it and prints the rate;
//! - the floor of a verified fill: one process, the sender reading 2 MiB blobs from files and
//!   re-hashing them, the receiver hashing and storing them, both with the node's own disk
//!   tier (`DiskTier::read`, `DiskTier::put_verified_aligned`), and nothing else of the node
//!   (no protocol, no fill logic): `quinn-bulk floor MIB STREAMS`. What a fill spends beyond
//!   this is the node's own overhead; what this spends beyond plain quinn is the work any
//!   verified, stored fill must do on this machine.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use mhc_transport::{client_config, server_config, QuicLimits};

const CHUNK: usize = 1 << 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64, what: &str| -> u64 {
        args.get(i)
            .map_or(default, |a| a.parse().unwrap_or_else(|_| panic!("{what}")))
    };
    match args.first().map(String::as_str) {
        Some("serve") => serve(num(1, 1024, "MIB") << 20, num(2, 8, "STREAMS")).await,
        Some("floor") => floor(num(1, 1024, "MIB") << 20, num(2, 8, "STREAMS")).await,
        Some("fetch") => {
            let addr: SocketAddr = args.get(1).expect("ADDR").parse().expect("ADDR");
            fetch(addr, num(2, 1024, "MIB") << 20, num(3, 8, "STREAMS")).await;
        }
        _ => one_process(num(0, 1024, "MIB") << 20, num(1, 8, "STREAMS")).await,
    }
}

fn server() -> quinn::Endpoint {
    let server_cfg = server_config(&[1u8; 32], &QuicLimits::default()).unwrap();
    quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

async fn connect(addr: SocketAddr) -> quinn::Connection {
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config(&[2u8; 32], None).unwrap());
    client.connect(addr, "mhc").unwrap().await.unwrap()
}

/// Writes `bytes` on `send` from one shared 1 MiB chunk, then finishes.
async fn send_bulk(mut send: quinn::SendStream, mut bytes: u64, chunk: Bytes) {
    while bytes > 0 {
        let n = bytes.min(chunk.len() as u64) as usize;
        send.write_chunk(chunk.slice(..n)).await.unwrap();
        bytes -= n as u64;
    }
    send.finish().unwrap();
    let _ = send.stopped().await;
}

/// Reads `recv` to its end; the byte count.
async fn receive_bulk(mut recv: quinn::RecvStream) -> u64 {
    let mut n = 0u64;
    while let Some(chunk) = recv.read_chunk(CHUNK, true).await.unwrap() {
        n += chunk.bytes.len() as u64;
    }
    n
}

fn report(what: &str, received: u64, streams: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what}: {} MiB on {streams} streams in {secs:.2} s = {:.0} MB/s",
        received >> 20,
        received as f64 / 1e6 / secs
    );
}

async fn one_process(total: u64, streams: u64) {
    let per_stream = total / streams;
    let server = server();
    let server_addr = server.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let (_send, recv) = conn.accept_bi().await.unwrap();
            tasks.push(tokio::spawn(receive_bulk(recv)));
        }
        let mut received = 0;
        for t in tasks {
            received += t.await.unwrap();
        }
        received
    });
    let conn = connect(server_addr).await;
    let chunk = Bytes::from(vec![0x5au8; CHUNK]);
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..streams {
        let (send, _recv) = conn.open_bi().await.unwrap();
        senders.push(tokio::spawn(send_bulk(send, per_stream, chunk.clone())));
    }
    for s in senders {
        s.await.unwrap();
    }
    let received = receiver.await.unwrap();
    assert_eq!(received, per_stream * streams);
    report("plain quinn", received, streams, started);
}

async fn serve(total: u64, streams: u64) {
    let per_stream = total / streams;
    let server = server();
    println!("{}", server.local_addr().unwrap());
    let conn = server.accept().await.unwrap().await.unwrap();
    let chunk = Bytes::from(vec![0x5au8; CHUNK]);
    let mut senders = Vec::new();
    for _ in 0..streams {
        let (send, mut recv) = conn.accept_bi().await.unwrap();
        // The one-byte request, as a fill asks before the origin answers.
        let _ = recv.read_to_end(16).await.unwrap();
        senders.push(tokio::spawn(send_bulk(send, per_stream, chunk.clone())));
    }
    for s in senders {
        s.await.unwrap();
    }
    conn.closed().await;
}

async fn fetch(addr: SocketAddr, total: u64, streams: u64) {
    let conn = connect(addr).await;
    let started = Instant::now();
    let mut receivers = Vec::new();
    for _ in 0..streams {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(b"?").await.unwrap();
        send.finish().unwrap();
        receivers.push(tokio::spawn(receive_bulk(recv)));
    }
    let mut received = 0;
    for r in receivers {
        received += r.await.unwrap();
    }
    assert_eq!(received, total / streams * streams);
    report("plain quinn", received, streams, started);
    conn.close(0u32.into(), b"done");
}

const BLOB: usize = 2 << 20;

async fn floor(total: u64, streams: u64) {
    use std::sync::Arc;

    use mhc_node::{AlignedBlob, DiskTier};

    let blobs = (total / BLOB as u64) as usize;
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(DiskTier::open(&dir.path().join("source"), u64::MAX, false).unwrap());
    let sink = Arc::new(DiskTier::open(&dir.path().join("sink"), u64::MAX, true).unwrap());
    let mut hashes = Vec::with_capacity(blobs);
    for i in 0..blobs {
        let bytes: Vec<u8> = (0..BLOB).map(|j| (j * 31 + i * 7) as u8).collect();
        let hash = *blake3::hash(&bytes).as_bytes();
        source.put_verified(&hash, &bytes).unwrap();
        hashes.push(hash);
    }
    let hashes = Arc::new(hashes);

    let server = server();
    let server_addr = server.local_addr().unwrap();
    let (source2, hashes2) = (Arc::clone(&source), Arc::clone(&hashes));
    let sender = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut tasks = Vec::new();
        for s in 0..streams as usize {
            let (mut send, _recv) = conn.accept_bi().await.unwrap();
            let (source, hashes) = (Arc::clone(&source2), Arc::clone(&hashes2));
            tasks.push(tokio::spawn(async move {
                for i in (s..hashes.len()).step_by(streams as usize) {
                    let (source, hash) = (Arc::clone(&source), hashes[i]);
                    let bytes = tokio::task::spawn_blocking(move || {
                        let bytes = source.read(&hash).unwrap().unwrap().0;
                        assert_eq!(blake3::hash(&bytes).as_bytes(), &hash);
                        bytes
                    })
                    .await
                    .unwrap();
                    send.write_chunk(Bytes::from(bytes)).await.unwrap();
                }
                send.finish().unwrap();
                let _ = send.stopped().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let conn = connect(server_addr).await;
    let started = Instant::now();
    let mut receivers = Vec::new();
    for s in 0..streams as usize {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"?").await.unwrap();
        let (sink, hashes) = (Arc::clone(&sink), Arc::clone(&hashes));
        receivers.push(tokio::spawn(async move {
            let mut received = 0u64;
            for i in (s..hashes.len()).step_by(streams as usize) {
                let mut blob = AlignedBlob::zeroed(BLOB);
                recv.read_exact(blob.as_mut_slice()).await.unwrap();
                let (sink, hash) = (Arc::clone(&sink), hashes[i]);
                tokio::task::spawn_blocking(move || {
                    sink.put_verified_aligned(&hash, &blob).unwrap()
                })
                .await
                .unwrap();
                received += BLOB as u64;
            }
            received
        }));
    }
    let mut received = 0;
    for r in receivers {
        received += r.await.unwrap();
    }
    report("quinn + hash + store (floor)", received, streams, started);
    sender.await.unwrap();
}
