//! The mesh data plane: an iroh endpoint (keyed by the node key, relays off) serving an
//! iroh-blobs store, so nodes replicate whole contents from any peer that holds them.
//!
//! A published content version is one iroh-blobs HashSeq whose children are, in order, the
//! signed manifest's encoding, the init segment (if any) and the media segments. Its root hash
//! travels in the content announcement. The origin imports its published blob files into the
//! iroh store *by reference* (no second copy); a mesh node downloads into the iroh store and
//! serves viewers from it ([`MeshPlane::get_bytes`] is the store's third tier).
//!
//! Replication (which contents, from whom, in what order) is [`replicate`].

pub mod pins;
pub mod plays;
pub mod replicate;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use iroh::address_lookup::MemoryLookup;
use iroh::endpoint::presets;
use iroh::endpoint::Connection;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey};
use iroh_blobs::api::blobs::{AddPathOptions, ImportMode};
use iroh_blobs::api::Store as BlobStore;
use iroh_blobs::hashseq::HashSeq;
use iroh_blobs::provider::events::{
    EventMask, EventSender, ProviderMessage, RequestMode, RequestUpdate,
};
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::{BlobFormat, BlobsProtocol, Hash, HashAndFormat};
use libp2p_identity::PeerId;
use mhc_manifest::Hash32;

use crate::core::catalog::Published;
use crate::core::metrics::Metrics;
use crate::core::store::BlobSource;
use parking_lot::Mutex;
use pins::Pins;
use plays::Plays;

/// How long connecting to a mesh peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Name of the tag that keeps a content version's HashSeq (and so all its blobs) in the store.
pub fn content_tag(id: &str, version: u64) -> String {
    format!("mhc/content/{id}/{version:020}")
}

/// The children of a content version's HashSeq, in order: manifest, init segment, segments.
pub fn expected_children(published: &Published) -> Vec<Hash32> {
    let manifest = published.manifest();
    let mut children = Vec::with_capacity(manifest.segments.len() + 2);
    children.push(*blake3::hash(&published.encoded).as_bytes());
    if let Some(init) = &manifest.hls.init {
        children.push(init.hash);
    }
    children.extend(manifest.segments.iter().map(|s| s.hash));
    children
}

/// The ed25519 key inside a peer id (every mhc peer id is an ed25519 identity multihash), as
/// the iroh endpoint id of the same node: one key on every plane.
pub fn endpoint_id_of(peer: &PeerId) -> Option<EndpointId> {
    EndpointId::from_bytes(&crate::core::identity::peer_key(peer)?).ok()
}

/// A content version this node holds on the mesh plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRoot {
    /// Version.
    pub version: u64,
    /// HashSeq root.
    pub root: Hash32,
    /// Bytes of its segments.
    pub bytes: u64,
}

/// What this node has seen of one provider.
#[derive(Debug, Clone, Copy, Default)]
struct ProviderRecord {
    /// Avoid until then.
    penalised_until: Option<Instant>,
    /// Smoothed duration of recent fetches, ms (lower is better; 0 = not measured).
    ewma_ms: f64,
}

/// The node's iroh endpoint, blob store and downloader.
#[derive(Debug)]
pub struct MeshPlane {
    router: Router,
    store: BlobStore,
    lookup: MemoryLookup,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    pins: Pins,
    plays: Plays,
    static_peers: Vec<EndpointId>,
    held: Mutex<HashMap<String, HeldRoot>>,
    replicating: Mutex<HashSet<Hash32>>,
    providers: Mutex<HashMap<EndpointId, ProviderRecord>>,
    connections: tokio::sync::Mutex<HashMap<EndpointId, Connection>>,
}

impl MeshPlane {
    /// Opens the iroh-blobs store in `dir` and binds the endpoint to `listen`.
    ///
    /// # Errors
    /// The store cannot be opened or the address cannot be bound.
    pub async fn start(
        dir: &Path,
        listen: SocketAddr,
        seed: [u8; 32],
        static_peers: &[(EndpointId, SocketAddr)],
        db: &sled::Db,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let fs = FsStore::load(dir).await.map_err(|e| {
            anyhow::anyhow!("opening the iroh-blobs store in {}: {e}", dir.display())
        })?;
        let store: BlobStore = fs.into();
        let lookup = MemoryLookup::new();
        // Relays, address publishing and port mapping are all off: peers learn each other's
        // addresses from heartbeats, and nothing leaves the cluster unasked.
        let endpoint = Endpoint::builder(presets::Minimal)
            .secret_key(SecretKey::from_bytes(&seed))
            .relay_mode(RelayMode::Disabled)
            .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
            .clear_ip_transports()
            .bind_addr(listen)
            .map_err(|e| anyhow::anyhow!("listen.iroh {listen}: {e}"))?
            .address_lookup(lookup.clone())
            .bind()
            .await
            .map_err(|e| anyhow::anyhow!("binding listen.iroh {listen}: {e}"))?;
        let local_addr = endpoint
            .bound_sockets()
            .into_iter()
            .next()
            .context("the iroh endpoint has no socket")?;
        let events = provider_events(Arc::clone(&metrics));
        let blobs = BlobsProtocol::new(&store, Some(events));
        let router = Router::builder(endpoint)
            .accept(iroh_blobs::ALPN, blobs)
            .spawn();
        for (id, addr) in static_peers {
            lookup.add_endpoint_info(EndpointAddr::new(*id).with_ip_addr(*addr));
        }
        Ok(Self {
            router,
            store,
            lookup,
            local_addr,
            metrics,
            pins: Pins::open(db)?,
            plays: Plays::default(),
            static_peers: static_peers.iter().map(|(id, _)| *id).collect(),
            held: Mutex::new(HashMap::new()),
            replicating: Mutex::new(HashSet::new()),
            providers: Mutex::new(HashMap::new()),
            connections: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The UDP address the endpoint is bound to (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The iroh blob store.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.router.endpoint()
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The operator's pins.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Recent plays at this node.
    pub fn plays(&self) -> &Plays {
        &self.plays
    }

    /// The operator's static mesh peers (`mesh.peers`).
    pub fn static_peers(&self) -> &[EndpointId] {
        &self.static_peers
    }

    /// Records that this node holds a content version on the mesh plane.
    pub fn set_held(&self, id: &str, version: u64, root: Hash32, bytes: u64) {
        let mut held = self.held.lock();
        if held.get(id).is_none_or(|h| h.version <= version) {
            held.insert(
                id.to_owned(),
                HeldRoot {
                    version,
                    root,
                    bytes,
                },
            );
        }
    }

    /// The version of `id` this node holds on the mesh plane.
    pub fn held(&self, id: &str) -> Option<HeldRoot> {
        self.held.lock().get(id).copied()
    }

    /// Bytes of every held version.
    pub fn held_bytes(&self) -> u64 {
        self.held.lock().values().map(|h| h.bytes).sum()
    }

    /// Marks a root as being replicated now (heartbeats say so), or no longer.
    pub fn set_replicating(&self, root: Hash32, on: bool) {
        let mut r = self.replicating.lock();
        if on {
            r.insert(root);
        } else {
            r.remove(&root);
        }
    }

    /// Roots being replicated now, for the heartbeat.
    pub fn replicating(&self) -> Vec<Hash32> {
        let mut v: Vec<_> = self.replicating.lock().iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Whether a provider is being avoided.
    pub fn is_penalised(&self, id: &EndpointId) -> bool {
        self.providers
            .lock()
            .get(id)
            .and_then(|r| r.penalised_until)
            .is_some_and(|t| t > Instant::now())
    }

    fn penalise(&self, id: EndpointId, for_: Duration) {
        self.providers.lock().entry(id).or_default().penalised_until = Some(Instant::now() + for_);
    }

    /// Lower is better: the smoothed duration of recent fetches from `id` (unmeasured: 0, so
    /// a new provider gets tried).
    pub fn speed_rank(&self, id: &EndpointId) -> f64 {
        self.providers.lock().get(id).map_or(0.0, |r| r.ewma_ms)
    }

    fn record_speed(&self, id: EndpointId, took: Duration) {
        let mut providers = self.providers.lock();
        let r = providers.entry(id).or_default();
        let ms = took.as_secs_f64() * 1000.0;
        r.ewma_ms = if r.ewma_ms == 0.0 {
            ms
        } else {
            0.8 * r.ewma_ms + 0.2 * ms
        };
    }

    /// A connection to a provider, reused across fetches.
    async fn connection(&self, id: EndpointId) -> anyhow::Result<Connection> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(&id) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.endpoint().connect(id, iroh_blobs::ALPN),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {CONNECT_TIMEOUT:?}"))??;
        conns.insert(id, conn.clone());
        Ok(conn)
    }

    fn forget_connection(&self, id: &EndpointId) {
        if let Ok(mut conns) = self.connections.try_lock() {
            conns.remove(id);
        }
    }

    /// Whether the store holds the whole blob.
    pub async fn has(&self, hash: Hash) -> bool {
        self.store.blobs().has(hash).await.unwrap_or(false)
    }

    /// Teaches the endpoint where a peer's mesh plane listens (from its heartbeat).
    pub fn learn(&self, peer: EndpointId, addr: SocketAddr) {
        self.lookup
            .add_endpoint_info(EndpointAddr::new(peer).with_ip_addr(addr));
    }

    /// Makes a published version available to the mesh: imports its blob files by reference
    /// (the origin's files are never evicted, so the reference stays valid), adds the signed
    /// manifest, builds the HashSeq and tags it. Idempotent: an already tagged version is not
    /// imported again.
    ///
    /// # Errors
    /// A blob file cannot be imported.
    pub async fn publish(
        &self,
        published: &Published,
        blob_path: impl Fn(&Hash32) -> std::path::PathBuf,
    ) -> anyhow::Result<Hash32> {
        let m = published.manifest();
        let tag = content_tag(m.content_id.as_str(), m.version);
        if let Some(existing) = self.tagged_root(&tag).await {
            self.set_held(
                m.content_id.as_str(),
                m.version,
                existing,
                published.blob_bytes(),
            );
            return Ok(existing);
        }
        let children = expected_children(published);
        let mut temp_tags = Vec::with_capacity(children.len());
        temp_tags.push(
            self.store
                .blobs()
                .add_bytes(published.encoded.clone())
                .temp_tag()
                .await
                .context("adding the manifest to the mesh store")?,
        );
        for hash in &children[1..] {
            if self
                .store
                .blobs()
                .has(Hash::from_bytes(*hash))
                .await
                .unwrap_or(false)
            {
                continue;
            }
            let path = blob_path(hash);
            let tt = self
                .store
                .blobs()
                .add_path_with_opts(AddPathOptions {
                    path: path.clone(),
                    format: BlobFormat::Raw,
                    mode: ImportMode::TryReference,
                })
                .temp_tag()
                .await
                .with_context(|| format!("importing {} into the mesh store", path.display()))?;
            anyhow::ensure!(
                tt.hash().as_bytes() == hash,
                "{} does not hash to its name",
                path.display()
            );
            temp_tags.push(tt);
        }
        let seq: HashSeq = children.iter().map(|h| Hash::from_bytes(*h)).collect();
        let root = self
            .store
            .blobs()
            .add_bytes_with_opts((seq.into_inner(), BlobFormat::HashSeq))
            .temp_tag()
            .await
            .context("adding the HashSeq")?;
        let root_hash = *root.hash().as_bytes();
        self.store
            .tags()
            .set(tag, HashAndFormat::hash_seq(root.hash()))
            .await
            .context("tagging the HashSeq")?;
        drop(temp_tags);
        self.set_held(
            m.content_id.as_str(),
            m.version,
            root_hash,
            published.blob_bytes(),
        );
        Ok(root_hash)
    }

    /// The root of a tagged content version, if this store holds one.
    pub async fn root_of(&self, id: &str, version: u64) -> Option<Hash32> {
        self.tagged_root(&content_tag(id, version)).await
    }

    async fn tagged_root(&self, tag: &str) -> Option<Hash32> {
        let info = self.store.tags().get(tag).await.ok()??;
        Some(*info.hash.as_bytes())
    }

    /// The bytes of a complete blob in the mesh store (the caller re-verifies them).
    pub async fn get_bytes(&self, hash: &Hash32) -> Option<Bytes> {
        let hash = Hash::from_bytes(*hash);
        if !self.store.blobs().has(hash).await.unwrap_or(false) {
            return None;
        }
        self.store.blobs().get_bytes(hash).await.ok()
    }

    /// Stops serving and closes the store.
    pub async fn shutdown_router(&self) {
        // Router::shutdown also shuts the store down (BlobsProtocol::shutdown).
        if let Err(err) = self.router.shutdown().await {
            tracing::warn!(error = %err, "stopping the mesh endpoint");
        }
    }
}

impl BlobSource for MeshPlane {
    fn get_blob<'a>(&'a self, hash: &'a Hash32) -> futures::future::BoxFuture<'a, Option<Bytes>> {
        Box::pin(self.get_bytes(hash))
    }
}

/// Counts the payload bytes this node's provider sends, from iroh-blobs' transfer events.
fn provider_events(metrics: Arc<Metrics>) -> EventSender {
    let mask = EventMask {
        get: RequestMode::NotifyLog,
        get_many: RequestMode::NotifyLog,
        ..EventMask::DEFAULT
    };
    let (tx, mut rx) = EventSender::channel(64, mask);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let updates = match msg {
                ProviderMessage::GetRequestReceivedNotify(msg) => msg.rx,
                ProviderMessage::GetManyRequestReceivedNotify(msg) => msg.rx,
                _ => continue,
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let mut updates = updates;
                while let Ok(Some(update)) = updates.recv().await {
                    let stats = match update {
                        RequestUpdate::Completed(c) => c.stats,
                        RequestUpdate::Aborted(a) => a.stats,
                        _ => continue,
                    };
                    metrics.mesh.sent_bytes.inc_by(stats.payload_bytes_sent);
                }
            });
        }
    });
    tx
}
