//! Filling from parents: how an edge (or a tier of edges) gets manifests and segments it does not
//! hold, over the QUIC data plane, without ever serving a byte it has not verified.
//!
//! - Manifests are verified against `trust.publishers` before they enter the catalog.
//! - Segments are verified against the BLAKE3 hash the verified manifest lists before they enter
//!   the store; a parent that sends wrong bytes is penalised (metric, log, avoided for a while)
//!   and the next parent is asked.
//! - Concurrent requests for one missing segment share one upstream fetch (request coalescing),
//!   and the fetch runs in its own task, so a viewer that disconnects does not cancel it for the
//!   others.
//! - Unknown content is remembered for a short time (negative caching), so a burst of requests
//!   for a missing id costs one round of upstream questions.
//! - When every parent is unreachable, the manifest already held is served (serve-stale).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use libp2p::PeerId;
use mhc_config::Role;
use mhc_manifest::{ContentId, Hash32, SignedManifest};
use mhc_transport::{QuicClient, QuicConnection, QuicError, Request, ResponseHeader};

use crate::catalog::{CatalogError, Published};
use crate::cluster::membership::MemberState;
use crate::cluster::messages::WireRole;
use crate::state::NodeState;
use crate::store::AlignedBlob;

/// How long a "nobody has this content" answer is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// How long a parent that sent unverifiable bytes is avoided.
const PENALTY: Duration = Duration::from_secs(60);
/// How often an edge re-asks its parents whether a newer manifest exists.
pub const MANIFEST_REFRESH: Duration = Duration::from_secs(5);
/// Largest manifest accepted from a parent.
const MAX_MANIFEST_BYTES: u64 = mhc_manifest::MAX_ENCODED_MANIFEST_BYTES as u64;
/// Segments prefetched after the one a viewer asked for.
pub const PREFETCH_SEGMENTS: usize = 2;

/// A parent to fill from.
#[derive(Debug, Clone)]
pub struct ParentAddr {
    /// QUIC address.
    pub addr: SocketAddr,
    /// Peer id, when known (then the handshake pins it).
    pub peer_id: Option<PeerId>,
    /// Why it is a parent: `configured` or `origin member`.
    pub source: &'static str,
    /// Load reported in its heartbeat (connections), for ordering.
    pub load: u32,
}

/// Why a fill failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    /// No parent knows the content (or the segment).
    #[error("not found upstream: {0}")]
    NotFound(String),
    /// Every parent failed (unreachable, timed out, busy, or sent bad bytes).
    #[error("every parent failed: {0}")]
    Unavailable(String),
    /// This node has no parent to ask (an origin, or an edge with none configured or alive).
    #[error("no parent to fill from")]
    NoParent,
}

type SharedWork<T> = Shared<BoxFuture<'static, Result<T, FillError>>>;
/// Work in flight by key: every caller asking for a key while its work runs awaits the same
/// result.
type InFlight<K, T> = Mutex<HashMap<K, SharedWork<T>>>;

/// Runs `work` in a task of its own (a caller that goes away does not cancel it for the
/// others) and returns its shareable result; the key leaves `table` when the work is done.
/// Call with `table` locked and insert the returned future under `key`.
fn spawn_shared<K, T, F>(
    state: &Arc<NodeState>,
    table: fn(&Filler) -> &InFlight<K, T>,
    key: K,
    work: F,
) -> SharedWork<T>
where
    K: std::hash::Hash + Eq + Send + 'static,
    T: Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<T, FillError>> + Send + 'static,
{
    let state = Arc::clone(state);
    let task = tokio::spawn(async move {
        let result = work.await;
        table(&state.filler)
            .lock()
            .expect("in-flight table lock")
            .remove(&key);
        result
    });
    async move {
        task.await
            .unwrap_or_else(|e| Err(FillError::Unavailable(format!("fill task: {e}"))))
    }
    .boxed()
    .shared()
}

/// The fill machinery of one node.
pub struct Filler {
    client: QuicClient,
    connections: tokio::sync::Mutex<HashMap<SocketAddr, QuicConnection>>,
    inflight: InFlight<Hash32, Bytes>,
    manifests_inflight: InFlight<ContentId, ()>,
    negative: Mutex<HashMap<ContentId, Instant>>,
    penalised: Mutex<HashMap<SocketAddr, Instant>>,
    checked: Mutex<HashMap<ContentId, Instant>>,
}

impl std::fmt::Debug for Filler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filler")
            .field("local_addr", &self.client.local_addr())
            .finish()
    }
}

impl Filler {
    /// A filler whose QUIC client binds next to `listen` (same address family, any port).
    ///
    /// # Errors
    /// The client endpoint cannot be bound.
    pub fn new(listen: SocketAddr, seed: [u8; 32]) -> Result<Self, QuicError> {
        let bind = SocketAddr::new(listen.ip(), 0);
        Ok(Self {
            client: QuicClient::new(bind, seed)?,
            connections: tokio::sync::Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            manifests_inflight: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            penalised: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `id` was recently found missing everywhere upstream.
    pub fn known_missing(&self, id: &ContentId) -> bool {
        let mut negative = self.negative.lock().expect("negative cache lock");
        match negative.get(id) {
            Some(at) if at.elapsed() < NEGATIVE_TTL => true,
            Some(_) => {
                negative.remove(id);
                false
            }
            None => false,
        }
    }

    fn mark_checked(&self, id: &ContentId) {
        self.checked
            .lock()
            .expect("checked lock")
            .insert(id.clone(), Instant::now());
    }

    /// Whether the manifest of `id` should be re-checked upstream (not checked recently).
    pub fn manifest_due(&self, id: &ContentId) -> bool {
        self.checked
            .lock()
            .expect("checked lock")
            .get(id)
            .is_none_or(|at| at.elapsed() >= MANIFEST_REFRESH)
    }

    async fn connection(&self, parent: &ParentAddr) -> Result<QuicConnection, QuicError> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(&parent.addr) {
            if !c.is_closed() && parent.peer_id.is_none_or(|p| p == c.peer_id()) {
                return Ok(c.clone());
            }
        }
        let conn = self.client.connect(parent.addr, parent.peer_id).await?;
        conns.insert(parent.addr, conn.clone());
        Ok(conn)
    }

    /// One body-less request to a node's QUIC plane (a play report), over the cached
    /// connection; the answer's header.
    ///
    /// # Errors
    /// Connecting or the exchange failed.
    pub async fn request(
        &self,
        addr: SocketAddr,
        peer: Option<PeerId>,
        req: Request,
    ) -> Result<ResponseHeader, QuicError> {
        let target = ParentAddr {
            addr,
            peer_id: peer,
            source: "report",
            load: 0,
        };
        let (header, _) = self.connection(&target).await?.request(&req, 0).await?;
        Ok(header)
    }

    fn penalise(&self, parent: &ParentAddr) {
        self.penalised
            .lock()
            .expect("penalty lock")
            .insert(parent.addr, Instant::now() + PENALTY);
    }

    fn is_penalised(&self, addr: &SocketAddr) -> bool {
        self.penalised
            .lock()
            .expect("penalty lock")
            .get(addr)
            .is_some_and(|until| Instant::now() < *until)
    }
}

/// One request to one parent, over its (cached) connection.
async fn ask(
    state: &NodeState,
    parent: &ParentAddr,
    req: &Request,
    max_body: u64,
) -> Result<(ResponseHeader, Bytes), QuicError> {
    state
        .filler
        .connection(parent)
        .await?
        .request(req, max_body)
        .await
}

/// What the parents said, for the error when none delivered.
#[derive(Default)]
struct Attempts {
    failures: Vec<String>,
    not_found: usize,
}

impl Attempts {
    fn failed(&mut self, parent: &ParentAddr, why: impl std::fmt::Display) {
        self.failures.push(format!("{}: {why}", parent.addr));
    }

    /// Records an answer that carried nothing usable: not found, an unexpected header, or a
    /// transport error.
    fn unusable(
        &mut self,
        state: &NodeState,
        parent: &ParentAddr,
        answer: Result<(ResponseHeader, Bytes), QuicError>,
    ) {
        match answer {
            Ok((ResponseHeader::NotFound { reason }, _)) => {
                self.not_found += 1;
                self.failed(parent, format_args!("not found ({reason})"));
            }
            Ok((other, _)) => self.failed(parent, format_args!("{other:?}")),
            Err(e) => {
                state.metrics.record_fill_failure("unreachable");
                self.failed(parent, e);
            }
        }
    }

    /// `NotFound` when every one of `asked` parents said so, else `Unavailable`.
    fn conclude(self, asked: usize) -> FillError {
        let all = self.failures.join("; ");
        if self.not_found == asked {
            FillError::NotFound(all)
        } else {
            FillError::Unavailable(all)
        }
    }
}

/// The parents of this node, best first: configured parents in their order, else the alive
/// origins of the membership table by load; penalised parents last.
pub fn parents(state: &NodeState, exclude: Option<PeerId>) -> Vec<ParentAddr> {
    let mut list: Vec<ParentAddr> = state
        .config
        .upstream
        .parents
        .iter()
        .map(|p| ParentAddr {
            addr: p.addr,
            peer_id: p.peer_id.as_deref().and_then(|s| s.parse().ok()),
            source: "configured",
            load: 0,
        })
        .collect();
    if list.is_empty() {
        let membership = state.cluster.membership.lock().expect("membership lock");
        let mut origins: Vec<ParentAddr> = membership
            .members()
            .filter(|m| m.state == MemberState::Alive && m.heartbeat.role == WireRole::Origin)
            .filter_map(|m| {
                Some(ParentAddr {
                    addr: m.heartbeat.addrs.quic.parse().ok()?,
                    peer_id: Some(m.peer_id),
                    source: "origin member",
                    load: m.heartbeat.load.connections,
                })
            })
            .collect();
        origins.sort_by_key(|p| p.load);
        list = origins;
    }
    list.retain(|p| exclude.is_none() || p.peer_id != exclude);
    let filler = &state.filler;
    // Stable: penalised parents move behind the others, keeping their relative order.
    list.sort_by_key(|p| filler.is_penalised(&p.addr));
    list
}

/// Makes sure the catalog holds the newest manifest of `id` that the parents have: fetched,
/// verified against the trusted publishers, committed. Concurrent callers share one fetch.
///
/// # Errors
/// [`FillError`]; with a manifest already held, callers serve it (stale) instead.
pub async fn refresh_manifest(
    state: &Arc<NodeState>,
    id: &ContentId,
    exclude: Option<PeerId>,
) -> Result<(), FillError> {
    if state.config.role == Role::Origin {
        return Err(FillError::NoParent);
    }
    let fut = {
        let mut inflight = state
            .filler
            .manifests_inflight
            .lock()
            .expect("manifest inflight lock");
        match inflight.get(id) {
            Some(f) => f.clone(),
            None => {
                let (state2, id2) = (Arc::clone(state), id.clone());
                let shared =
                    spawn_shared(state, |f| &f.manifests_inflight, id.clone(), async move {
                        fetch_manifest(&state2, &id2, exclude).await
                    });
                inflight.insert(id.clone(), shared.clone());
                shared
            }
        }
    };
    fut.await
}

async fn fetch_manifest(
    state: &Arc<NodeState>,
    id: &ContentId,
    exclude: Option<PeerId>,
) -> Result<(), FillError> {
    let parents = parents(state, exclude);
    if parents.is_empty() {
        return Err(FillError::NoParent);
    }
    let held = state.catalog.latest(id).map(|p| p.manifest().version);
    let req = Request::GetManifest {
        content_id: id.to_string(),
        min_version: held.unwrap_or(0),
    };
    let mut attempts = Attempts::default();
    for parent in &parents {
        let body = match ask(state, parent, &req, MAX_MANIFEST_BYTES).await {
            Ok((ResponseHeader::Manifest { .. }, body)) => body,
            answer => {
                attempts.unusable(state, parent, answer);
                continue;
            }
        };
        let signed = match SignedManifest::decode(&body) {
            Ok(s) if s.manifest.content_id == *id => s,
            Ok(_) => {
                state.filler.penalise(parent);
                attempts.failed(parent, "answered with another content");
                continue;
            }
            Err(e) => {
                state.metrics.record_fill_failure("bad_manifest");
                tracing::warn!(parent = %parent.addr, error = %e, "parent sent an undecodable manifest");
                state.filler.penalise(parent);
                attempts.failed(parent, e);
                continue;
            }
        };
        match state.catalog.publish(signed) {
            Ok(_) | Err(CatalogError::Stale { .. }) => {
                state.filler.mark_checked(id);
                return Ok(());
            }
            Err(e) => {
                state.metrics.record_fill_failure("bad_manifest");
                tracing::warn!(parent = %parent.addr, error = %e, "manifest from parent refused");
                state.filler.penalise(parent);
                attempts.failed(parent, e);
            }
        }
    }
    if held.is_some() {
        // Stale but ours: the parents were asked; what we hold stays valid and signed.
        state.filler.mark_checked(id);
    }
    let error = attempts.conclude(parents.len());
    if matches!(error, FillError::NotFound(_)) {
        state
            .filler
            .negative
            .lock()
            .expect("negative cache lock")
            .insert(id.clone(), Instant::now());
    }
    Err(error)
}

/// Which blob of a manifest.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    /// The init segment.
    Init,
    /// Media segment `i`.
    Segment(usize),
}

/// The verified bytes of a segment (or init segment): from the store, or filled from a parent,
/// verified, stored, then returned. Concurrent callers for one blob share one fetch.
///
/// # Errors
/// [`FillError`]: nothing verified could be obtained.
pub async fn segment(
    state: &Arc<NodeState>,
    published: &Arc<Published>,
    part: Part,
    exclude: Option<PeerId>,
) -> Result<Bytes, FillError> {
    let m = published.manifest();
    let (hash, size) = match part {
        Part::Init => match &m.hls.init {
            Some(init) => (init.hash, init.size),
            None => return Err(FillError::NotFound("no init segment".into())),
        },
        Part::Segment(i) => match m.segments.get(i) {
            Some(s) => (s.hash, s.size),
            None => return Err(FillError::NotFound(format!("no segment {i}"))),
        },
    };
    if let Ok(bytes) = state.store.get(&hash).await {
        return Ok(bytes);
    }
    if state.config.role == Role::Origin {
        return Err(FillError::NoParent);
    }
    let fut = {
        let mut inflight = state.filler.inflight.lock().expect("inflight lock");
        match inflight.get(&hash) {
            Some(f) => f.clone(),
            // A fetch that finished between our store miss and taking this lock stored the
            // bytes before leaving the table: look again rather than fetch twice.
            None if state.store.ram().get(&hash).is_some()
                || state.store.disk().contains(&hash) =>
            {
                let state = Arc::clone(state);
                async move {
                    state
                        .store
                        .get(&hash)
                        .await
                        .map_err(|e| FillError::Unavailable(e.to_string()))
                }
                .boxed()
                .shared()
            }
            None => {
                let state2 = Arc::clone(state);
                let published2 = Arc::clone(published);
                let shared = spawn_shared(state, |f| &f.inflight, hash, async move {
                    fetch_segment(&state2, &published2, part, hash, size, exclude).await
                });
                inflight.insert(hash, shared.clone());
                shared
            }
        }
    };
    fut.await
}

async fn fetch_segment(
    state: &Arc<NodeState>,
    published: &Arc<Published>,
    part: Part,
    hash: Hash32,
    size: u64,
    exclude: Option<PeerId>,
) -> Result<Bytes, FillError> {
    let m = published.manifest();
    let parents = parents(state, exclude);
    if parents.is_empty() {
        return Err(FillError::NoParent);
    }
    let req = match part {
        Part::Init => Request::GetInit {
            content_id: m.content_id.to_string(),
            version: m.version,
        },
        Part::Segment(i) => Request::GetSegment {
            content_id: m.content_id.to_string(),
            version: m.version,
            index: i as u32,
        },
    };
    let mut attempts = Attempts::default();
    for parent in &parents {
        let started = Instant::now();
        let blob = match receive_blob(state, parent, &req, size).await {
            Received::Blob(blob) => blob,
            Received::WrongSize(announced) => {
                state.metrics.record_fill_failure("verification");
                tracing::warn!(parent = %parent.addr, content = %m.content_id, ?part, announced, size,
                    "parent announced a blob of the wrong size; penalised, trying the next");
                state.filler.penalise(parent);
                attempts.failed(
                    parent,
                    format_args!("{announced} bytes announced, {size} expected"),
                );
                continue;
            }
            Received::Unusable(answer) => {
                attempts.unusable(state, parent, answer);
                continue;
            }
        };
        // The one check that matters: the bytes hash to what the signed manifest says (the
        // parent's claimed hash and proof are not trusted). It is made by the disk tier as it
        // stores them, off the async workers, in one pass over the bytes.
        let stored = {
            let state = Arc::clone(state);
            tokio::task::spawn_blocking(move || {
                let stored = state.store.disk().put_verified_aligned(&hash, &blob);
                (blob, stored)
            })
            .await
        };
        let (blob, stored) = match stored {
            Ok(done) => done,
            Err(e) => return Err(FillError::Unavailable(format!("storing a fill: {e}"))),
        };
        match stored {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                state.metrics.record_fill_failure("verification");
                tracing::warn!(
                    parent = %parent.addr,
                    content = %m.content_id,
                    ?part,
                    "parent sent bytes that fail verification; penalised, trying the next"
                );
                state.filler.penalise(parent);
                attempts.failed(parent, "bytes failed verification");
                continue;
            }
            Err(e) => tracing::warn!(error = %e, "storing a filled segment (serving it anyway)"),
            Ok(_) => {}
        }
        let body = blob.into_bytes();
        state.store.ram().insert(hash, body.clone());
        state
            .metrics
            .record_fill(body.len() as u64, started.elapsed());
        return Ok(body);
    }
    Err(attempts.conclude(parents.len()))
}

/// What a parent answered to a blob request.
enum Received {
    /// The body, of the expected size, in block-aligned memory; not verified yet.
    Blob(AlignedBlob),
    /// A segment header announcing another size than the manifest's: wrong bytes, unread.
    WrongSize(u64),
    /// Anything else (not found, busy, an error, a transport failure).
    Unusable(Result<(ResponseHeader, Bytes), QuicError>),
}

/// Asks `parent` for a blob of `size` bytes and receives its body into block-aligned memory.
async fn receive_blob(
    state: &NodeState,
    parent: &ParentAddr,
    req: &Request,
    size: u64,
) -> Received {
    let conn = match state.filler.connection(parent).await {
        Ok(conn) => conn,
        Err(e) => return Received::Unusable(Err(e)),
    };
    let (header, body) = match conn.request_streaming(req).await {
        Ok(answer) => answer,
        Err(e) => return Received::Unusable(Err(e)),
    };
    if !matches!(header, ResponseHeader::Segment { .. }) {
        return Received::Unusable(Ok((header, Bytes::new())));
    }
    let announced = body.remaining();
    let Some(len) = (announced == size)
        .then(|| usize::try_from(size).ok())
        .flatten()
    else {
        return Received::WrongSize(announced);
    };
    let mut blob = AlignedBlob::zeroed(len);
    match body.read_exact_into(blob.as_mut_slice()).await {
        Ok(()) => Received::Blob(blob),
        Err(e) => Received::Unusable(Err(e)),
    }
}

/// Fetches the next segments after `index` in the background, so a player's next requests hit
/// the cache.
pub fn prefetch(state: &Arc<NodeState>, published: &Arc<Published>, index: usize) {
    if state.config.role == Role::Origin {
        return;
    }
    let count = published.manifest().segments.len();
    for next in (index + 1..count).take(PREFETCH_SEGMENTS) {
        let hash = published.manifest().segments[next].hash;
        if state.store.ram().get(&hash).is_some() || state.store.disk().contains(&hash) {
            continue;
        }
        let state = Arc::clone(state);
        let published = Arc::clone(published);
        tokio::spawn(async move {
            if let Err(e) = segment(&state, &published, Part::Segment(next), None).await {
                tracing::debug!(error = %e, next, "prefetch failed");
            }
        });
    }
}

/// What [`fill_all`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FillReport {
    /// Content id.
    pub content_id: String,
    /// Manifest version filled.
    pub version: u64,
    /// Blobs in the content (segments plus init).
    pub blobs: usize,
    /// Blobs that were already held.
    pub already_held: usize,
    /// Bytes of the whole content.
    pub bytes: u64,
    /// Wall time, ms.
    pub duration_ms: u64,
}

/// Fills a whole content (latest version), `concurrency` blobs at a time: an operator's or a
/// policy's "have all of this here now" (pins, essential content, warm-up before a premiere).
///
/// # Errors
/// The manifest cannot be had, or a blob could not be filled from any parent.
pub async fn fill_all(
    state: &Arc<NodeState>,
    id: &ContentId,
    concurrency: usize,
) -> Result<FillReport, FillError> {
    use futures::stream::{self, StreamExt, TryStreamExt};

    let started = Instant::now();
    if state.catalog.latest(id).is_none() || state.filler.manifest_due(id) {
        if let Err(e) = refresh_manifest(state, id, None).await {
            if state.catalog.latest(id).is_none() {
                return Err(e);
            }
        }
    }
    let published = state
        .catalog
        .latest(id)
        .ok_or_else(|| FillError::NotFound(id.to_string()))?;
    let m = published.manifest();
    let mut parts: Vec<(Part, Hash32)> = Vec::with_capacity(m.segments.len() + 1);
    if let Some(init) = &m.hls.init {
        parts.push((Part::Init, init.hash));
    }
    parts.extend(
        m.segments
            .iter()
            .enumerate()
            .map(|(i, s)| (Part::Segment(i), s.hash)),
    );
    let already_held = parts
        .iter()
        .filter(|(_, h)| state.store.disk().contains(h))
        .count();
    let blobs = parts.len();
    stream::iter(parts)
        .map(|(part, _)| {
            let state = Arc::clone(state);
            let published = Arc::clone(&published);
            async move {
                segment(&state, &published, part, None)
                    .await
                    .map(|b| b.len() as u64)
            }
        })
        .buffer_unordered(concurrency.clamp(1, 64))
        .try_fold((), |(), _| async { Ok(()) })
        .await?;
    Ok(FillReport {
        content_id: id.to_string(),
        version: m.version,
        blobs,
        already_held,
        bytes: m.total_bytes(),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
