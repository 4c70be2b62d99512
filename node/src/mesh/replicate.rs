//! Mesh replication: which content versions a mesh node holds, and fetching them from every
//! node that provides them.
//!
//! **What.** A mesh node holds (a) what its operator pinned, (b) emergency-essential content,
//! (c) the contents most played in its region (from the play counts heartbeats carry), as far
//! as `cache.disk_gb` allows.
//!
//! **Believing an offer.** A member's heartbeat (or an origin's announcement) offers a version
//! under a HashSeq root; nothing is fetched on its word. The version's signed manifest comes
//! first, over QUIC from the holders (size-limited, verified against `trust.publishers`); the
//! HashSeq is then computed here from the manifest, and the offer is taken only if its root is
//! that hash. So a fake root (or a `u64::MAX` version nobody signed) costs one refused manifest
//! request, is set aside for a while, and the real versions replicate meanwhile; no root blob
//! of unknown size is ever downloaded.
//!
//! **From whom.** Holders are alive members whose heartbeat lists the version with its mesh
//! root, and the operator's static `mesh.peers`. Every blob is checked by BLAKE3 verified
//! streaming against the hash the manifest gives.
//!
//! **Sharing the work.** Mesh nodes replicating the same root (their heartbeats say so) split
//! its blobs: blob *i* is owned by the (*i* mod *n*)-th of them by peer id. A node fetches the
//! blobs it owns from the holders, origin last; a blob owned by another node is asked of that
//! node first and of the origin only when the owner has not produced it within
//! [`OWNER_PATIENCE`]; an owner that still cannot deliver then is penalised, and its share goes
//! to the others. So the origin sends each blob about once however many mesh nodes replicate,
//! and the rest moves between peers.
//!
//! **Resuming.** iroh-blobs keeps the verified ranges of a partial blob; the next provider is
//! asked only for what is missing, so a provider lost mid-transfer costs no bytes already in.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use iroh::EndpointId;
use iroh_blobs::api::remote::GetProgressItem;
use iroh_blobs::hashseq::HashSeq;
use iroh_blobs::{BlobFormat, Hash, HashAndFormat};
use libp2p::PeerId;
use mhc_manifest::Hash32;
use tokio::sync::watch;

use super::{content_tag, endpoint_id_of, expected_children, MeshPlane};
use crate::control::membership::MemberState;
use crate::control::messages::WireRole;
use crate::control::ClusterHandle;
use crate::core::catalog::Published;
use crate::core::Core;
use crate::fill::{FillError, Filler, ParentAddr};
use mhc_manifest::ContentId;
use parking_lot::Mutex;

/// How long a node waits for the owner of a blob to have it before asking the origin instead.
/// Long enough for an owner to fetch its share at loopback or LAN speed while its peers wait;
/// short enough that a stuck owner delays a replica by seconds, not minutes.
pub const OWNER_PATIENCE: Duration = Duration::from_secs(10);
/// Blobs fetched at once per content (each from one provider).
const PARALLEL_BLOBS: usize = 4;
/// Contents replicated at once.
const PARALLEL_CONTENTS: usize = 2;
/// A fetch that receives nothing for this long is abandoned (the provider is stalled).
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before asking again for a blob nobody could provide yet.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long a provider that sent bytes failing verification is avoided.
const CORRUPT_PENALTY: Duration = Duration::from_secs(600);
/// How long a provider that failed otherwise (error, stall) is put behind the others.
const FAILURE_PENALTY: Duration = Duration::from_secs(15);
/// A replication that makes no progress for this long gives up (and is retried later).
const NO_PROGRESS_LIMIT: Duration = Duration::from_secs(120);
/// How long an offer whose root is not the signed manifest's HashSeq is ignored.
const FAKE_OFFER_PAUSE: Duration = Duration::from_secs(600);
/// How long an offer whose signed manifest nobody could produce is ignored (it may have been
/// a holder's hiccup, so not for long; real versions replicate meanwhile).
const UNBACKED_OFFER_PAUSE: Duration = Duration::from_secs(30);
/// Offers set aside at once; beyond it the one due back first is forgotten.
const MAX_SET_ASIDE: usize = 4096;

/// A content version some node offers on the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Content id.
    pub id: String,
    /// Version.
    pub version: u64,
    /// HashSeq root.
    pub root: Hash32,
    /// Bytes of its segments (0 when not known yet).
    pub bytes: u64,
}

/// A node that may provide blobs.
#[derive(Debug, Clone)]
struct Provider {
    id: EndpointId,
    is_origin: bool,
    /// Kilometres from this node (unknown: far), the tie-breaker after measured speed.
    distance_km: f64,
}

/// What replication reads of the rest of the node: the shared state and the membership, and
/// the QUIC client that fetches manifests.
#[derive(Debug, Clone)]
pub struct Replication {
    /// The shared state.
    pub core: Arc<Core>,
    /// Who holds what.
    pub cluster: ClusterHandle,
    /// Asks holders for signed manifests.
    pub filler: Arc<Filler>,
    /// Offers found wanting, and until when they are ignored.
    pub set_aside: Arc<SetAside>,
}

/// Offers (content, version, root) that could not be backed by a signed manifest.
#[derive(Debug, Default)]
pub struct SetAside(Mutex<HashMap<(String, u64, Hash32), Instant>>);

impl SetAside {
    fn put(&self, offer: &Offer, pause: Duration) {
        let mut m = self.0.lock();
        let now = Instant::now();
        m.retain(|_, until| *until > now);
        if m.len() >= MAX_SET_ASIDE {
            if let Some(first) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                m.remove(&first);
            }
        }
        m.insert((offer.id.clone(), offer.version, offer.root), now + pause);
    }

    fn contains(&self, offer: &Offer) -> bool {
        self.0
            .lock()
            .get(&(offer.id.clone(), offer.version, offer.root))
            .is_some_and(|until| *until > Instant::now())
    }
}

/// Runs the replication loop of a mesh node until shutdown.
pub async fn run(state: Replication, mesh: Arc<MeshPlane>, mut shutdown: watch::Receiver<bool>) {
    let state = Arc::new(state);
    let mut running: HashMap<Hash32, tokio::task::JoinHandle<()>> = HashMap::new();
    let tick = state
        .core
        .config
        .cluster
        .heartbeat_interval
        .min(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            () = tokio::time::sleep(tick) => {}
        }
        learn_addresses(&state, &mesh);
        running.retain(|_, task| !task.is_finished());
        if running.len() >= PARALLEL_CONTENTS {
            continue;
        }
        for offer in wanted(&state, &mesh) {
            if running.len() >= PARALLEL_CONTENTS || running.contains_key(&offer.root) {
                continue;
            }
            let root = offer.root;
            let (state, mesh) = (Arc::clone(&state), Arc::clone(&mesh));
            running.insert(
                root,
                tokio::spawn(async move {
                    mesh.set_replicating(root, true);
                    let result = replicate(&state, &mesh, &offer).await;
                    mesh.set_replicating(root, false);
                    match result {
                        Ok(()) => tracing::info!(
                            content = %offer.id,
                            version = offer.version,
                            "replicated from the mesh"
                        ),
                        Err(err) => tracing::warn!(
                            content = %offer.id,
                            version = offer.version,
                            error = %format!("{err:#}"),
                            "replication failed; will retry"
                        ),
                    }
                }),
            );
        }
    }
    for (_, task) in running {
        task.abort();
    }
}

/// Tells the endpoint where every alive member's mesh plane listens.
fn learn_addresses(state: &Replication, mesh: &MeshPlane) {
    let membership = state.cluster.membership();
    for m in membership.members() {
        if m.state != MemberState::Alive {
            continue;
        }
        if let (Some(id), Ok(addr)) = (endpoint_id_of(&m.peer_id), m.heartbeat.addrs.iroh.parse()) {
            mesh.learn(id, addr);
        }
    }
}

/// The latest version of every content that some alive member offers on the mesh.
pub fn offers(state: &Replication) -> HashMap<String, Offer> {
    let mut best: HashMap<String, Offer> = HashMap::new();
    let mut consider = |o: Offer| {
        if o.root == [0; 32] || state.set_aside.contains(&o) {
            return;
        }
        match best.get(&o.id) {
            Some(b) if b.version > o.version || (b.version == o.version && b.bytes >= o.bytes) => {}
            _ => {
                best.insert(o.id.clone(), o);
            }
        }
    };
    for k in state.cluster.known_contents() {
        consider(Offer {
            id: k.id,
            version: k.version,
            root: k.mesh_root,
            bytes: 0,
        });
    }
    let membership = state.cluster.membership();
    for m in membership.members() {
        if m.state != MemberState::Alive {
            continue;
        }
        for c in &m.heartbeat.contents {
            consider(Offer {
                id: c.id.clone(),
                version: c.version,
                root: c.mesh_root,
                bytes: c.bytes,
            });
        }
    }
    best
}

/// What this mesh node should replicate now, most important first: pinned, essential, then
/// popular in its region while the disk budget lasts.
pub fn wanted(state: &Replication, mesh: &MeshPlane) -> Vec<Offer> {
    let offers = offers(state);
    // Held on the mesh plane, not merely in the catalog: a mesh node that filled a few
    // segments on demand over QUIC has the manifest but not the content.
    let held = |o: &Offer| mesh.held(&o.id).is_some_and(|h| h.version >= o.version);
    let mut out: Vec<Offer> = Vec::new();
    for id in mesh
        .pins()
        .list()
        .iter()
        .chain(state.core.emergency.state().essential().iter())
    {
        if let Some(o) = offers.get(id) {
            if !held(o) && !out.iter().any(|w| w.id == o.id) {
                out.push(o.clone());
            }
        }
    }
    // The uplink carries what it is told to (pins, essential), not what is popular.
    if !state.core.policy().replicates_popular() {
        return out;
    }
    // Popular in this region: the play counts of alive members in the same region, and ours.
    let mut plays: HashMap<String, u64> = HashMap::new();
    for p in mesh.plays().top() {
        *plays.entry(p.id).or_default() += u64::from(p.plays);
    }
    {
        let membership = state.cluster.membership();
        for m in membership.members() {
            if m.state == MemberState::Alive && m.heartbeat.region == state.core.config.region {
                for p in &m.heartbeat.plays {
                    *plays.entry(p.id.clone()).or_default() += u64::from(p.plays);
                }
            }
        }
    }
    let mut popular: Vec<(u64, &Offer)> = plays
        .iter()
        .filter_map(|(id, n)| offers.get(id).map(|o| (*n, o)))
        .collect();
    popular.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let mut budget = state
        .core
        .config
        .cache
        .disk_bytes
        .saturating_sub(mesh.held_bytes());
    for o in &out {
        budget = budget.saturating_sub(o.bytes);
    }
    for (_, o) in popular {
        if o.bytes > 0 && o.bytes <= budget && !held(o) && !out.iter().any(|w| w.id == o.id) {
            budget -= o.bytes;
            out.push(o.clone());
        }
    }
    out
}

/// Replicates one content version: its signed manifest first, then the HashSeq computed from
/// it (which must be the offered root), then every blob.
///
/// # Errors
/// The offer is not backed by a trusted manifest (it is set aside), no provider could serve a
/// blob, or the stores failed.
pub async fn replicate(state: &Replication, mesh: &MeshPlane, offer: &Offer) -> anyhow::Result<()> {
    let published = match trusted_manifest(state, offer).await {
        Ok(p) => p,
        Err(err) => {
            // A member listed a version it cannot back with a signed manifest (or every
            // holder failed us just now): other versions go first for a while.
            mesh.metrics().mesh.rejected.inc();
            state.set_aside.put(offer, UNBACKED_OFFER_PAUSE);
            return Err(err);
        }
    };
    let children = expected_children(&published);
    let seq: HashSeq = children.iter().map(|h| Hash::from_bytes(*h)).collect();
    let seq_bytes = seq.into_inner();
    if *blake3::hash(&seq_bytes).as_bytes() != offer.root {
        mesh.metrics().mesh.rejected.inc();
        state.set_aside.put(offer, FAKE_OFFER_PAUSE);
        bail!(
            "offered root {} is not the HashSeq of the signed manifest of {} v{}",
            hex::encode(offer.root),
            offer.id,
            offer.version
        );
    }
    // The root and the manifest blob are made here, from verified bytes; only media travels.
    let blobs = mesh.store().blobs();
    let root = blobs
        .add_bytes_with_opts((seq_bytes, BlobFormat::HashSeq))
        .temp_tag()
        .await
        .context("adding the HashSeq")?;
    let manifest = blobs
        .add_bytes(published.encoded.clone())
        .temp_tag()
        .await
        .context("adding the manifest")?;
    fetch_children(state, mesh, offer, &children[1..]).await?;
    mesh.store()
        .tags()
        .set(
            content_tag(&offer.id, offer.version),
            HashAndFormat::hash_seq(root.hash()),
        )
        .await
        .context("tagging the replica")?;
    drop((root, manifest));
    mesh.set_held(&offer.id, offer.version, offer.root, published.blob_bytes());
    mesh.metrics().mesh.replications.inc();
    Ok(())
}

/// The signed manifest of the offered version: from the catalog, or over QUIC from the members
/// that list it (origins last), verified against `trust.publishers` and committed.
async fn trusted_manifest(state: &Replication, offer: &Offer) -> anyhow::Result<Arc<Published>> {
    let id = ContentId::new(offer.id.clone()).context("offered content id")?;
    let catalog = &state.core.catalog;
    if let Some(p) = catalog.version(&id, offer.version) {
        return Ok(p);
    }
    let parents = quic_holders(state, offer);
    match state
        .filler
        .manifest_from(&parents, &id, offer.version)
        .await
    {
        Ok(()) => {}
        Err(FillError::NoParent) => bail!(
            "no member that offers {} v{} has a QUIC address",
            offer.id,
            offer.version
        ),
        Err(err) => return Err(err).context("fetching the signed manifest"),
    }
    catalog.version(&id, offer.version).with_context(|| {
        format!(
            "no signed manifest of {} v{} (the holders have other versions)",
            offer.id, offer.version
        )
    })
}

/// The QUIC addresses of the alive members that offer `offer` (listing it in their heartbeats,
/// or as an origin that announced it), origins last.
fn quic_holders(state: &Replication, offer: &Offer) -> Vec<ParentAddr> {
    let announcers: HashSet<PeerId> = state
        .cluster
        .known_contents()
        .into_iter()
        .filter(|k| k.id == offer.id && k.version == offer.version && k.mesh_root == offer.root)
        .map(|k| k.announced_by)
        .collect();
    let membership = state.cluster.membership();
    let mut out: Vec<(bool, ParentAddr)> = membership
        .members()
        .filter(|m| m.state == MemberState::Alive)
        .filter(|m| {
            announcers.contains(&m.peer_id)
                || m.heartbeat.contents.iter().any(|c| {
                    c.id == offer.id && c.version == offer.version && c.mesh_root == offer.root
                })
        })
        .filter_map(|m| {
            Some((
                m.heartbeat.role == WireRole::Origin,
                ParentAddr {
                    addr: m.heartbeat.addrs.quic.parse().ok()?,
                    peer_id: Some(m.peer_id),
                },
            ))
        })
        .collect();
    out.sort_by_key(|(is_origin, _)| *is_origin);
    out.into_iter().map(|(_, p)| p).collect()
}

/// Alive members that hold `offer`, plus the static peers; best first (measured speed, then
/// distance), origins last, penalised providers left out.
fn holders(state: &Replication, mesh: &MeshPlane, offer: &Offer) -> Vec<Provider> {
    let me = mesh.endpoint().id();
    let here = state.core.config.location.as_ref().map(|l| (l.lat, l.lon));
    let mut out: Vec<Provider> = mesh
        .static_peers()
        .iter()
        .map(|id| Provider {
            id: *id,
            is_origin: false,
            distance_km: 0.0,
        })
        .collect();
    {
        let membership = state.cluster.membership();
        for m in membership.members() {
            if m.state != MemberState::Alive {
                continue;
            }
            let holds = m.heartbeat.contents.iter().any(|c| {
                c.id == offer.id && c.version == offer.version && c.mesh_root == offer.root
            });
            if !holds {
                continue;
            }
            let Some(id) = endpoint_id_of(&m.peer_id) else {
                continue;
            };
            let distance_km = match (here, m.heartbeat.location) {
                (Some(a), Some(b)) => crate::routing::haversine_km(a, b),
                _ => f64::MAX,
            };
            out.push(Provider {
                id,
                is_origin: m.heartbeat.role == WireRole::Origin,
                distance_km,
            });
        }
    }
    out.retain(|p| p.id != me && !mesh.is_penalised(&p.id));
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert(p.id));
    out.sort_by(|a, b| {
        a.is_origin
            .cmp(&b.is_origin)
            .then_with(|| mesh.speed_rank(&a.id).total_cmp(&mesh.speed_rank(&b.id)))
            .then_with(|| a.distance_km.total_cmp(&b.distance_km))
    });
    out
}

/// Mesh members replicating the same root now, and this node, sorted: the owners of blobs.
fn replicators(state: &Replication, mesh: &MeshPlane, root: &Hash32) -> Vec<EndpointId> {
    let mut out = vec![mesh.endpoint().id()];
    let membership = state.cluster.membership();
    for m in membership.members() {
        if m.state == MemberState::Alive && m.heartbeat.replicating.contains(root) {
            if let Some(id) = endpoint_id_of(&m.peer_id).filter(|id| !mesh.is_penalised(id)) {
                out.push(id);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One blob still to fetch.
#[derive(Debug)]
struct Job {
    index: usize,
    hash: Hash,
    first_try: Option<Instant>,
    not_before: Instant,
}

/// Fetches every child blob, shared out among the replicators (see the module docs).
async fn fetch_children(
    state: &Replication,
    mesh: &MeshPlane,
    offer: &Offer,
    children: &[Hash32],
) -> anyhow::Result<()> {
    // Give peers that started on this root at the same moment a heartbeat to say so, so the
    // split of the work is agreed before anyone asks the origin for everything.
    if state.core.policy().replicates_popular() {
        tokio::time::sleep(state.core.config.cluster.heartbeat_interval * 2).await;
    }
    let me = mesh.endpoint().id();
    let owners = replicators(state, mesh, &offer.root);
    let now = Instant::now();
    let mut jobs: VecDeque<Job> = VecDeque::new();
    for (index, h) in children.iter().enumerate() {
        let hash = Hash::from_bytes(*h);
        if mesh.has(hash).await {
            continue;
        }
        let job = Job {
            index,
            hash,
            first_try: None,
            not_before: now,
        };
        // Own blobs first: they are what the peers will be waiting for.
        if owners[index % owners.len()] == me {
            jobs.push_front(job);
        } else {
            jobs.push_back(job);
        }
    }
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        while in_flight.len() < PARALLEL_BLOBS {
            let Some(pos) = jobs.iter().position(|j| j.not_before <= now) else {
                break;
            };
            let mut job = jobs.remove(pos).expect("position is in range");
            job.first_try.get_or_insert(now);
            in_flight.push(async move {
                let ok = fetch_child(state, mesh, offer, &job).await;
                (job, ok)
            });
        }
        if in_flight.is_empty() && jobs.is_empty() {
            return Ok(());
        }
        if last_progress.elapsed() > NO_PROGRESS_LIMIT {
            bail!(
                "{} blobs still missing after no progress for {NO_PROGRESS_LIMIT:?}",
                jobs.len() + in_flight.len()
            );
        }
        if in_flight.is_empty() {
            tokio::time::sleep(RETRY_PAUSE / 2).await;
            continue;
        }
        if let Some((mut job, ok)) = in_flight.next().await {
            if ok {
                last_progress = Instant::now();
            } else {
                job.not_before = Instant::now() + RETRY_PAUSE;
                jobs.push_back(job);
            }
        }
    }
}

/// One attempt at one child blob over the providers in the order the module docs give.
async fn fetch_child(state: &Replication, mesh: &MeshPlane, offer: &Offer, job: &Job) -> bool {
    if mesh.has(job.hash).await {
        return true;
    }
    let me = mesh.endpoint().id();
    let owners = replicators(state, mesh, &offer.root);
    let owner = owners[job.index % owners.len()];
    let holders = holders(state, mesh, offer);
    let waited = job.first_try.map_or(Duration::ZERO, |t| t.elapsed());
    let mut order: Vec<(EndpointId, bool)> = Vec::new();
    if owner != me {
        // Past its patience, the owner is held to its claim: failing now penalises it, and
        // its share goes to the others.
        order.push((owner, waited >= OWNER_PATIENCE));
    }
    for h in holders.iter().filter(|h| !h.is_origin) {
        order.push((h.id, true));
    }
    if owner == me || waited >= OWNER_PATIENCE {
        for h in holders.iter().filter(|h| h.is_origin) {
            order.push((h.id, true));
        }
    }
    let mut seen = HashSet::new();
    order.retain(|(id, _)| seen.insert(*id));
    for (id, claims_it) in order {
        if mesh.fetch_from(id, job.hash, claims_it).await.is_ok() {
            return true;
        }
    }
    false
}

/// Why a fetch from one provider failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The provider could not be reached.
    #[error("connecting: {0}")]
    Connect(String),
    /// Bytes failed BLAKE3 verification: the provider is penalised.
    #[error("bytes failed verification: {0}")]
    Corrupt(String),
    /// The provider sent nothing for [`STALL_TIMEOUT`].
    #[error("stalled")]
    Stalled,
    /// Any other failure (the provider lacks the blob, reset the stream, went away).
    #[error("{0}")]
    Other(String),
}

impl MeshPlane {
    /// Fetches `hash` (missing ranges only) from one provider, counting received bytes.
    /// `claims_it`: the provider said it holds the blob, so failing is held against it.
    ///
    /// # Errors
    /// [`FetchError`].
    pub async fn fetch_from(
        &self,
        provider: EndpointId,
        hash: Hash,
        claims_it: bool,
    ) -> Result<(), FetchError> {
        let result = self.fetch_from_inner(provider, hash).await;
        match &result {
            Ok(took) => self.record_speed(provider, *took),
            Err(FetchError::Corrupt(why)) => {
                self.metrics().mesh.provider_failures.inc();
                tracing::warn!(
                    provider = %provider.fmt_short(),
                    blob = %hash,
                    why = %why,
                    "mesh provider sent bytes that fail verification; avoided"
                );
                self.penalise(provider, CORRUPT_PENALTY);
            }
            Err(err) if claims_it => {
                self.metrics().mesh.provider_failures.inc();
                tracing::debug!(provider = %provider.fmt_short(), blob = %hash, error = %err, "mesh fetch failed");
                self.forget_connection(&provider);
                self.penalise(provider, FAILURE_PENALTY);
            }
            Err(_) => {}
        }
        result.map(|_| ())
    }

    async fn fetch_from_inner(
        &self,
        provider: EndpointId,
        hash: Hash,
    ) -> Result<Duration, FetchError> {
        let started = Instant::now();
        let conn = self
            .connection(provider)
            .await
            .map_err(|e| FetchError::Connect(format!("{e:#}")))?;
        let progress = self.store().remote().fetch(conn, HashAndFormat::raw(hash));
        let mut stream = std::pin::pin!(progress.stream());
        let mut counted = 0u64;
        loop {
            let item = match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => {
                    return Err(FetchError::Other("progress ended without a result".into()))
                }
                Err(_) => {
                    self.forget_connection(&provider);
                    return Err(FetchError::Stalled);
                }
            };
            match item {
                GetProgressItem::Progress(total) => {
                    let delta = total.saturating_sub(counted);
                    counted = counted.max(total);
                    self.metrics().mesh.received_bytes.inc_by(delta);
                }
                GetProgressItem::Done(stats) => {
                    let delta = stats.payload_bytes_read.saturating_sub(counted);
                    self.metrics().mesh.received_bytes.inc_by(delta);
                    return if self.has(hash).await {
                        Ok(started.elapsed())
                    } else {
                        Err(FetchError::Other(
                            "the provider does not have the whole blob".into(),
                        ))
                    };
                }
                GetProgressItem::Error(err) => {
                    let text = format!("{err:#}");
                    return Err(if text.contains("hash mismatch") {
                        FetchError::Corrupt(text)
                    } else {
                        FetchError::Other(text)
                    });
                }
            }
        }
    }
}
