//! A mesh peer written for the tests: it serves one content over iroh-blobs exactly as a real
//! mhc node would (same HashSeq: manifest, init, segments; same iroh-blobs provider code), but
//! can misbehave on the wire.
//!
//! ```text
//! mesh-peer --origin-http 127.0.0.1:PORT --content ID --mode honest|corrupt|die-after:BYTES
//! ```
//!
//! It fetches the signed manifest and the segments from the origin's viewer plane, builds the
//! HashSeq, binds an iroh endpoint on loopback and prints one line,
//! `ready <peer id>@<addr> <root hex>`, then serves until killed.
//! - `corrupt`: flips one byte of every response after its size header, so every blob it
//!   sends fails BLAKE3 verification at the receiver.
//! - `die-after:BYTES`: sends that many bytes of responses, then stops sending and exits, as a
//!   provider that crashes in the middle of a transfer.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use iroh::endpoint::{presets, Connection, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, RelayMode, SecretKey};
use iroh_blobs::api::Store;
use iroh_blobs::hashseq::HashSeq;
use iroh_blobs::provider::events::EventSender;
use iroh_blobs::provider::{handle_stream, StreamPair};
use iroh_blobs::store::mem::MemStore;
use iroh_blobs::util::SendStream;
use iroh_blobs::BlobFormat;

#[derive(Debug, Clone, Copy)]
enum Mode {
    Honest,
    Corrupt,
    DieAfter(u64),
}

/// Bytes written by every response so far (for `die-after`).
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// A response stream that misbehaves according to the mode.
struct Wire {
    inner: iroh::endpoint::SendStream,
    mode: Mode,
    /// Bytes written on this stream.
    at: u64,
}

impl Wire {
    async fn tamper(&mut self, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self.mode {
            Mode::Honest => {}
            Mode::Corrupt => {
                // Past the 8-byte size header: a hash pair or data, either fails verification.
                let skip = 8u64.saturating_sub(self.at) as usize;
                if let Some(b) = buf.get_mut(skip) {
                    *b ^= 0x5a;
                }
            }
            Mode::DieAfter(limit) => {
                let before = WRITTEN.fetch_add(buf.len() as u64, Ordering::SeqCst);
                if before + buf.len() as u64 > limit {
                    buf.truncate(limit.saturating_sub(before) as usize);
                    let _ = self.inner.write_all(&buf).await;
                    eprintln!("mesh-peer: dying after {limit} bytes");
                    // Exit without closing anything, as a crashed process would.
                    std::process::exit(0);
                }
            }
        }
        self.at += buf.len() as u64;
        Ok(buf)
    }
}

impl SendStream for Wire {
    async fn send_bytes(&mut self, bytes: Bytes) -> std::io::Result<()> {
        let buf = self.tamper(bytes.to_vec()).await?;
        self.inner.send_bytes(buf.into()).await
    }

    async fn send(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let buf = self.tamper(buf.to_vec()).await?;
        self.inner.send(&buf).await
    }

    async fn sync(&mut self) -> std::io::Result<()> {
        SendStream::sync(&mut self.inner).await
    }

    fn reset(&mut self, code: VarInt) -> std::io::Result<()> {
        SendStream::reset(&mut self.inner, code)
    }

    async fn stopped(&mut self) -> std::io::Result<Option<VarInt>> {
        SendStream::stopped(&mut self.inner).await
    }

    fn id(&self) -> u64 {
        SendStream::id(&self.inner)
    }
}

#[derive(Debug, Clone)]
struct Provider {
    store: Store,
    mode: Mode,
}

impl ProtocolHandler for Provider {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let wire = Wire {
                inner: send,
                mode: self.mode,
                at: 0,
            };
            let pair = StreamPair::new(conn.stable_id() as u64, recv, wire, EventSender::DEFAULT);
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = handle_stream(pair, store).await;
            });
        }
        Ok(())
    }
}

fn arg(args: &[String], name: &str) -> anyhow::Result<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .with_context(|| format!("missing {name}"))
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let r = mhc_tests::http_request(addr, "GET", path, &[])?;
    if r.status != 200 {
        bail!("GET {path}: {}", r.status);
    }
    Ok(r.body)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let origin: SocketAddr = arg(&args, "--origin-http")?.parse()?;
    let content = arg(&args, "--content")?;
    let mode = match arg(&args, "--mode")?.as_str() {
        "honest" => Mode::Honest,
        "corrupt" => Mode::Corrupt,
        other => match other.strip_prefix("die-after:") {
            Some(n) => Mode::DieAfter(n.parse()?),
            None => bail!("unknown mode {other}"),
        },
    };

    let manifest = http_get(origin, &format!("/v1/content/{content}/manifest"))?;
    let m = mhc_manifest::SignedManifest::decode(&manifest)?.manifest;
    let store: Store = MemStore::new().into();
    let mut children = vec![store.blobs().add_bytes(manifest).temp_tag().await?];
    if m.hls.init.is_some() {
        let bytes = http_get(origin, &format!("/v1/content/{content}/init.mp4"))?;
        children.push(store.blobs().add_bytes(bytes).temp_tag().await?);
    }
    let ext = m.hls.segment_format.extension();
    for i in 0..m.segments.len() {
        let bytes = http_get(origin, &format!("/v1/content/{content}/seg/{i}.{ext}"))?;
        children.push(store.blobs().add_bytes(bytes).temp_tag().await?);
    }
    let seq: HashSeq = children.iter().map(|t| t.hash()).collect();
    let root = store
        .blobs()
        .add_bytes_with_opts((seq.into_inner(), BlobFormat::HashSeq))
        .temp_tag()
        .await?;

    let mut seed = [0u8; 32];
    getrandom_seed(&mut seed);
    let endpoint = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&seed))
        .relay_mode(RelayMode::Disabled)
        .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")?
        .bind()
        .await?;
    let addr = endpoint.bound_sockets()[0];
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(seed)?;
    let peer = keypair.public().to_peer_id();
    let _router = Router::builder(endpoint)
        .accept(iroh_blobs::ALPN, Arc::new(Provider { store, mode }))
        .spawn();
    println!("ready {peer}@{addr} {}", root.hash());
    std::io::stdout().flush()?;
    let _keep = (children, root);
    std::future::pending::<()>().await;
    Ok(())
}

fn getrandom_seed(seed: &mut [u8; 32]) {
    // Distinct per process: the pid and the clock are enough for a test peer's key.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let h = blake3::hash(format!("{}-{t}", std::process::id()).as_bytes());
    seed.copy_from_slice(h.as_bytes());
}
