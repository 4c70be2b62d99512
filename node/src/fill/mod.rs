//! Filling from parents: how an edge (or a tier of edges) gets manifests and segments it does not
//! hold, over the QUIC data plane, without ever serving a byte it has not verified.
//!
//! - Manifests are verified against `trust.publishers` before they enter the catalog.
//! - Segments are verified against the BLAKE3 hash the verified manifest lists before they enter
//!   the store.
//! - Every failure is classified ([`FailureReason`]): a parent that broke the protocol, sent
//!   bytes or a manifest that fail verification, or missed a deadline is penalised (metric,
//!   log, asked after the others for a while).
//! - Nothing waits without a deadline (`[upstream]`): connecting and the hello, the start of
//!   an answer, and the flow of its body. No lock is held across I/O except a parent's own
//!   connection slot, so a blackholed parent delays only the requests made to it.
//! - Concurrent requests for one missing segment share one upstream fetch (request coalescing),
//!   and the fetch runs in its own task, so a viewer that disconnects does not cancel it for the
//!   others; when its parent stalls, the fetch moves on to the next parent for all of them.
//! - Unknown content is remembered for a short time (negative caching), so a burst of requests
//!   for a missing id costs one round of upstream questions. The memory is an LRU of
//!   [`NEGATIVE_CAPACITY`] ids, so requests for endless random ids cannot grow it.
//! - When every parent is unreachable, the manifest already held is served (serve-stale).

mod error;
mod parents;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use libp2p::PeerId;
use mhc_manifest::{ContentId, Hash32, SignedManifest};
use mhc_transport::{QuicClient, QuicConnection, QuicError, QuicLimits, Request, ResponseHeader};
use parking_lot::Mutex;

use crate::core::admission::Refusal;
use crate::core::catalog::{CatalogError, Published};
use crate::core::identity::peer_key;
use crate::core::store::AlignedBlob;
use crate::core::Core;
pub use error::{AskError, Failure, FailureReason, FillError};
pub use parents::{ParentAddr, Parents};
use parents::{ParentKey, Penalties};

/// How long a "nobody has this content" answer is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// How many "nobody has this content" answers are remembered: at most ~6 MiB of ids. Every
/// entry lives for the same TTL, so the least recently inserted is also the first to expire;
/// past this many unknown ids per TTL, the oldest are asked about again, which costs parents a
/// question each, not this node memory.
const NEGATIVE_CAPACITY: usize = 65_536;
/// How often an edge re-asks its parents whether a newer manifest exists.
pub const MANIFEST_REFRESH: Duration = Duration::from_secs(5);
/// Largest manifest accepted from a parent.
const MAX_MANIFEST_BYTES: u64 = mhc_manifest::MAX_ENCODED_MANIFEST_BYTES as u64;
/// Segments prefetched after the one a viewer asked for.
pub const PREFETCH_SEGMENTS: usize = 2;

type SharedWork<T> = Shared<BoxFuture<'static, Result<T, FillError>>>;
/// Work in flight by key: every caller asking for a key while its work runs awaits the same
/// result.
type InFlight<K, T> = Mutex<HashMap<K, SharedWork<T>>>;

/// Which blob of a manifest.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    /// The init segment.
    Init,
    /// Media segment `i`.
    Segment(usize),
}

impl Part {
    /// The hash and size of this blob of `m`.
    ///
    /// # Errors
    /// [`FillError::NotFound`]: `m` has no such blob.
    fn of(self, m: &mhc_manifest::Manifest) -> Result<(Hash32, u64), FillError> {
        match self {
            Part::Init => match &m.hls.init {
                Some(init) => Ok((init.hash, init.size)),
                None => Err(FillError::NotFound("no init segment".into())),
            },
            Part::Segment(i) => match m.segments.get(i) {
                Some(s) => Ok((s.hash, s.size)),
                None => Err(FillError::NotFound(format!("no segment {i}"))),
            },
        }
    }
}

/// What [`Filler::fill_all`] did.
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

/// The fill machinery of one node: its QUIC client, the connections to its parents, the work
/// in flight and what it remembers about parents and missing content.
pub struct Filler {
    core: Arc<Core>,
    parents: Arc<dyn Parents>,
    client: QuicClient,
    /// One slot per parent (address and the peer expected there), locked only by requests to
    /// that parent.
    links: Mutex<HashMap<ParentKey, Arc<tokio::sync::Mutex<Link>>>>,
    inflight: InFlight<Hash32, Bytes>,
    manifests_inflight: InFlight<ContentId, ()>,
    negative: Mutex<lru::LruCache<ContentId, Instant>>,
    penalties: Penalties,
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
    /// A filler for `core` over `parents`, whose QUIC client binds next to `listen.quic` (same
    /// address family, any port).
    ///
    /// # Errors
    /// The client endpoint cannot be bound.
    pub fn new(core: Arc<Core>, parents: Arc<dyn Parents>) -> Result<Self, QuicError> {
        let listen = core.config.listen.quic;
        let bind = SocketAddr::new(listen.ip(), 0);
        // A parent's answer must start within `upstream.first_byte_timeout` (the transport's
        // request timeout is exactly that: the wait for a response header).
        let limits = QuicLimits {
            request_timeout: core.config.upstream.first_byte_timeout,
            ..QuicLimits::default()
        };
        let client = QuicClient::with_limits(bind, core.identity.signing_key().to_bytes(), limits)?;
        Ok(Self {
            core,
            parents,
            client,
            links: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            manifests_inflight: Mutex::new(HashMap::new()),
            negative: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(NEGATIVE_CAPACITY).expect("a positive capacity"),
            )),
            penalties: Penalties::default(),
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `id` was recently found missing everywhere upstream.
    pub fn known_missing(&self, id: &ContentId) -> bool {
        let mut negative = self.negative.lock();
        match negative.peek(id) {
            Some(at) if at.elapsed() < NEGATIVE_TTL => true,
            Some(_) => {
                negative.pop(id);
                false
            }
            None => false,
        }
    }

    fn mark_checked(&self, id: &ContentId) {
        self.checked.lock().insert(id.clone(), Instant::now());
    }

    /// Whether the manifest of `id` should be re-checked upstream (not checked recently).
    pub fn manifest_due(&self, id: &ContentId) -> bool {
        self.checked
            .lock()
            .get(id)
            .is_none_or(|at| at.elapsed() >= MANIFEST_REFRESH)
    }

    /// The connection to `parent`: the cached one, or a new one on which both sides showed
    /// their certificates ([`Filler::hello`]), made within `upstream.connect_timeout`.
    ///
    /// Only requests to the same parent wait for each other here: each parent has a slot of
    /// its own, so a blackholed parent delays nobody who asks another. A parent that could not
    /// be reached within the last connect timeout is not tried again by those that queued
    /// behind the attempt: they fail at once and move on to their next parent.
    async fn connection(&self, parent: &ParentAddr) -> Result<QuicConnection, AskError> {
        let slot = Arc::clone(self.links.lock().entry(parent.key()).or_default());
        let mut link = slot.lock().await;
        if let Some(c) = &link.conn {
            if !c.is_closed() && parent.peer_id.is_none_or(|p| p == c.peer_id()) {
                // A parent revoked since the hello is asked nothing more.
                if peer_key(&c.peer_id()).is_some_and(|k| self.core.admission.is_revoked(&k)) {
                    c.close();
                    link.conn = None;
                    return Err(AskError::NotEnrolled(Refusal::Revoked));
                }
                return Ok(c.clone());
            }
        }
        let limits = &self.core.config.upstream;
        if let Some(at) = link.unreachable_since {
            if at.elapsed() < limits.connect_timeout {
                return Err(AskError::RecentlyUnreachable);
            }
        }
        let attempt = async {
            let conn = self.client.connect(parent.addr, parent.peer_id).await?;
            if let Err(e) = self.hello(&conn).await {
                conn.close();
                return Err(e);
            }
            Ok(conn)
        };
        let outcome = tokio::time::timeout(limits.connect_timeout, attempt)
            .await
            .unwrap_or(Err(AskError::ConnectTimeout(limits.connect_timeout)));
        link.conn = outcome.as_ref().ok().cloned();
        link.unreachable_since = match &outcome {
            Err(e) if Failure::ask(e).reason == FailureReason::Unreachable => Some(Instant::now()),
            _ => None,
        };
        outcome
    }

    /// The first exchange on a new connection: this node's certificate for the parent's. A
    /// parent that proves no enrollment is asked nothing (whatever it would answer is not
    /// taken); a parent that does not admit this node says so.
    async fn hello(&self, conn: &QuicConnection) -> Result<(), AskError> {
        let certificate = self
            .core
            .enrollment
            .as_ref()
            .map(|e| e.encoded.clone())
            .unwrap_or_default();
        let (header, _) = conn.request(&Request::Hello { certificate }, 0).await?;
        match header {
            ResponseHeader::Hello { certificate } => {
                let key = peer_key(&conn.peer_id()).ok_or(Refusal::NotEnrolled)?;
                self.core.admission.certificate(&key, &certificate)?;
                Ok(())
            }
            ResponseHeader::NotAdmitted { reason } => Err(AskError::Refused(reason)),
            other => Err(AskError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Drops the cached connection to `addr` after the parent said it does not admit this
    /// node on it (it forgot the hello, or the certificate lapsed): the next request connects
    /// and says hello again.
    async fn forget(&self, addr: SocketAddr) {
        let slots: Vec<_> = (self.links.lock().iter())
            .filter(|((a, _), _)| *a == addr)
            .map(|(_, slot)| Arc::clone(slot))
            .collect();
        for slot in slots {
            if let Some(conn) = slot.lock().await.conn.take() {
                conn.close();
            }
        }
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
    ) -> Result<ResponseHeader, AskError> {
        let target = ParentAddr {
            addr,
            peer_id: peer,
        };
        let (header, _) = self.connection(&target).await?.request(&req, 0).await?;
        if let ResponseHeader::NotAdmitted { reason } = header {
            self.forget(addr).await;
            return Err(AskError::Refused(reason));
        }
        Ok(header)
    }

    /// One request to one parent, over its (cached) connection.
    async fn ask(
        &self,
        parent: &ParentAddr,
        req: &Request,
        max_body: u64,
    ) -> Result<(ResponseHeader, Bytes), AskError> {
        let answer = self
            .connection(parent)
            .await?
            .request(req, max_body)
            .await?;
        if let (ResponseHeader::NotAdmitted { reason }, _) = answer {
            self.forget(parent.addr).await;
            return Err(AskError::Refused(reason));
        }
        Ok(answer)
    }

    /// The parents of this node, best first, penalised parents last, never `exclude`.
    pub fn parents(&self, exclude: Option<PeerId>) -> Vec<ParentAddr> {
        self.penalties.order(self.parents.parents(), exclude)
    }

    /// Counts a failure of `parent`, logs it, and penalises the parent if it misbehaved or
    /// missed a deadline.
    fn blame(&self, parent: &ParentAddr, reason: FailureReason, what: &dyn std::fmt::Display) {
        self.core.metrics.record_fill_failure(reason.label());
        if reason.penalises() {
            let why = if reason == FailureReason::Unreachable {
                "parent unreachable or too slow; avoided for a while, trying the next"
            } else {
                "parent misbehaved; penalised, trying the next"
            };
            tracing::warn!(parent = %parent.addr, peer = ?parent.peer_id,
                reason = reason.label(), error = %what, "{why}");
            self.penalties.penalise(parent.key());
        } else {
            tracing::debug!(parent = %parent.addr, reason = reason.label(), error = %what,
                "parent could not deliver; trying the next");
        }
    }

    /// Runs `work` in a task of its own (a caller that goes away does not cancel it for the
    /// others) and returns its shareable result; the key leaves `table` when the work is done.
    /// Call with `table` locked and insert the returned future under `key`.
    fn spawn_shared<K, T, F>(
        self: &Arc<Self>,
        table: fn(&Filler) -> &InFlight<K, T>,
        key: K,
        work: F,
    ) -> SharedWork<T>
    where
        K: std::hash::Hash + Eq + Send + 'static,
        T: Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, FillError>> + Send + 'static,
    {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = work.await;
            table(&this).lock().remove(&key);
            result
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(FillError::Local(format!("fill task: {e}"))))
        }
        .boxed()
        .shared()
    }

    /// Makes sure the catalog holds the newest manifest of `id` that the parents have:
    /// fetched, verified against the trusted publishers, committed. Concurrent callers share
    /// one fetch.
    ///
    /// # Errors
    /// [`FillError`]; with a manifest already held, callers serve it (stale) instead.
    ///
    /// # Cancel safety
    /// Cancel-safe: the fetch runs in a task of its own and goes on for the other callers.
    pub async fn refresh_manifest(
        self: &Arc<Self>,
        id: &ContentId,
        exclude: Option<PeerId>,
    ) -> Result<(), FillError> {
        if !self.core.policy().fills_from_parents() {
            return Err(FillError::NoParent);
        }
        let fut = {
            let mut inflight = self.manifests_inflight.lock();
            match inflight.get(id) {
                Some(f) => f.clone(),
                None => {
                    let (this, id2) = (Arc::clone(self), id.clone());
                    let shared =
                        self.spawn_shared(|f| &f.manifests_inflight, id.clone(), async move {
                            this.fetch_manifest(&id2, exclude).await
                        });
                    inflight.insert(id.clone(), shared.clone());
                    shared
                }
            }
        };
        fut.await
    }

    async fn fetch_manifest(
        &self,
        id: &ContentId,
        exclude: Option<PeerId>,
    ) -> Result<(), FillError> {
        let parents = self.parents(exclude);
        let held = self.core.catalog.latest(id).map(|p| p.manifest().version);
        let result = self.manifest_from(&parents, id, held.unwrap_or(0)).await;
        if result.is_ok() || held.is_some() {
            // Stale but ours when the parents failed: what we hold stays valid and signed.
            self.mark_checked(id);
        }
        if matches!(result, Err(FillError::NotFound(_))) {
            self.negative.lock().put(id.clone(), Instant::now());
        }
        result
    }

    /// Asks `parents` in turn for the manifest of `id` at `min_version` or later until one
    /// answers with a manifest a trusted publisher signed for `id`, and commits it to the
    /// catalog. Parents that answer with another content or an untrusted manifest are
    /// penalised.
    ///
    /// # Errors
    /// [`FillError`]: none of them delivered.
    pub async fn manifest_from(
        &self,
        parents: &[ParentAddr],
        id: &ContentId,
        min_version: u64,
    ) -> Result<(), FillError> {
        if parents.is_empty() {
            return Err(FillError::NoParent);
        }
        let catalog = &self.core.catalog;
        let req = Request::GetManifest {
            content_id: id.to_string(),
            min_version,
        };
        let mut attempts = Attempts::default();
        for parent in parents {
            let body = match self.ask(parent, &req, MAX_MANIFEST_BYTES).await {
                Ok((ResponseHeader::Manifest { .. }, body)) => body,
                answer => {
                    attempts.unusable(self, parent, answer);
                    continue;
                }
            };
            let signed = match SignedManifest::decode(&body) {
                Ok(s) if s.manifest.content_id == *id => s,
                Ok(_) => {
                    attempts.failed(
                        self,
                        parent,
                        FailureReason::BadManifest,
                        &"answered with another content",
                    );
                    continue;
                }
                Err(e) => {
                    attempts.failed(self, parent, FailureReason::BadManifest, &e);
                    continue;
                }
            };
            match catalog.publish(signed) {
                Ok(_) | Err(CatalogError::Stale { .. }) => return Ok(()),
                Err(e @ (CatalogError::Db(_) | CatalogError::Unflushed(_))) => {
                    return Err(FillError::Local(format!("{e}")))
                }
                Err(e) => attempts.failed(self, parent, FailureReason::BadManifest, &e),
            }
        }
        Err(attempts.conclude(parents.len()))
    }

    /// The verified bytes of a segment (or init segment): from the store, or filled from a
    /// parent, verified, stored, then returned. Concurrent callers for one blob share one fetch.
    ///
    /// # Errors
    /// [`FillError`]: nothing verified could be obtained.
    ///
    /// # Cancel safety
    /// Cancel-safe: the fetch runs in a task of its own and goes on for the other callers.
    pub async fn segment(
        self: &Arc<Self>,
        published: &Arc<Published>,
        part: Part,
        exclude: Option<PeerId>,
    ) -> Result<Bytes, FillError> {
        let (hash, size) = part.of(published.manifest())?;
        let store = &self.core.store;
        if let Ok(bytes) = store.get(&hash).await {
            return Ok(bytes);
        }
        if !self.core.policy().fills_from_parents() {
            return Err(FillError::NoParent);
        }
        let fut = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&hash) {
                Some(f) => f.clone(),
                // A fetch that finished between our store miss and taking this lock stored the
                // bytes before leaving the table: look again rather than fetch twice.
                None if store.ram().get(&hash).is_some() || store.disk().contains(&hash) => {
                    let store = Arc::clone(store);
                    async move {
                        store
                            .get(&hash)
                            .await
                            .map_err(|e| FillError::Local(e.to_string()))
                    }
                    .boxed()
                    .shared()
                }
                None => {
                    let this = Arc::clone(self);
                    let published2 = Arc::clone(published);
                    let shared = self.spawn_shared(|f| &f.inflight, hash, async move {
                        this.fetch_segment(&published2, part, hash, size, exclude)
                            .await
                    });
                    inflight.insert(hash, shared.clone());
                    shared
                }
            }
        };
        fut.await
    }

    async fn fetch_segment(
        &self,
        published: &Arc<Published>,
        part: Part,
        hash: Hash32,
        size: u64,
        exclude: Option<PeerId>,
    ) -> Result<Bytes, FillError> {
        self.fetch_segment_from(&self.parents(exclude), published, part, hash, size)
            .await
    }

    /// Has one blob of `published` on disk: held already, or fetched from `parent` alone,
    /// verified and stored (a standby origin copying its primary's blobs, whatever its role's
    /// fill policy).
    ///
    /// # Errors
    /// [`FillError`]: the parent did not deliver verified bytes.
    pub async fn copy_blob(
        &self,
        parent: &ParentAddr,
        published: &Arc<Published>,
        part: Part,
    ) -> Result<(), FillError> {
        let (hash, size) = part.of(published.manifest())?;
        if self.core.store.disk().contains(&hash) {
            return Ok(());
        }
        self.fetch_segment_from(std::slice::from_ref(parent), published, part, hash, size)
            .await
            .map(drop)
    }

    /// One request with a body of at most `max_body` bytes to a node's QUIC plane, over the
    /// cached connection.
    ///
    /// # Errors
    /// Connecting or the exchange failed, or the node does not admit this one.
    pub async fn exchange(
        &self,
        parent: &ParentAddr,
        req: &Request,
        max_body: u64,
    ) -> Result<(ResponseHeader, Bytes), AskError> {
        self.ask(parent, req, max_body).await
    }

    async fn fetch_segment_from(
        &self,
        parents: &[ParentAddr],
        published: &Arc<Published>,
        part: Part,
        hash: Hash32,
        size: u64,
    ) -> Result<Bytes, FillError> {
        let m = published.manifest();
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
        for parent in parents {
            let started = Instant::now();
            let blob = match self.receive_blob(parent, &req, size).await {
                Received::Blob(blob) => blob,
                Received::WrongSize(announced) => {
                    tracing::warn!(parent = %parent.addr, content = %m.content_id, ?part, announced, size,
                        "parent announced a blob of the wrong size");
                    attempts.failed(
                        self,
                        parent,
                        FailureReason::Verification,
                        &format_args!("{announced} bytes announced, {size} expected"),
                    );
                    continue;
                }
                Received::Unusable(answer) => {
                    attempts.unusable(self, parent, answer);
                    continue;
                }
            };
            // The one check that matters: the bytes hash to what the signed manifest says (the
            // parent's claimed hash and proof are not trusted). It is made by the disk tier as
            // it stores them, off the async workers, in one pass over the bytes.
            let stored = {
                let store = Arc::clone(&self.core.store);
                tokio::task::spawn_blocking(move || {
                    let stored = store.disk().put_verified_aligned(&hash, &blob);
                    (blob, stored)
                })
                .await
            };
            let (blob, stored) = match stored {
                Ok(done) => done,
                Err(e) => return Err(FillError::Local(format!("storing a fill: {e}"))),
            };
            match stored {
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    tracing::warn!(parent = %parent.addr, content = %m.content_id, ?part,
                        "parent sent bytes that fail verification");
                    attempts.failed(
                        self,
                        parent,
                        FailureReason::Verification,
                        &"bytes failed verification",
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "storing a filled segment (serving it anyway)")
                }
                Ok(_) => {}
            }
            let body = blob.into_bytes();
            self.core.store.ram().insert(hash, body.clone());
            self.core
                .metrics
                .record_fill(body.len() as u64, started.elapsed());
            return Ok(body);
        }
        Err(attempts.conclude(parents.len()))
    }

    /// Asks `parent` for a blob of `size` bytes and receives its body into block-aligned memory.
    async fn receive_blob(&self, parent: &ParentAddr, req: &Request, size: u64) -> Received {
        let conn = match self.connection(parent).await {
            Ok(conn) => conn,
            Err(e) => return Received::Unusable(Err(e)),
        };
        let (header, body) = match conn.request_streaming(req).await {
            Ok(answer) => answer,
            Err(e) => return Received::Unusable(Err(e.into())),
        };
        if let ResponseHeader::NotAdmitted { reason } = header {
            self.forget(parent.addr).await;
            return Received::Unusable(Err(AskError::Refused(reason)));
        }
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
        match self.receive_body(body, blob.as_mut_slice()).await {
            Ok(()) => Received::Blob(blob),
            Err(e) => Received::Unusable(Err(e)),
        }
    }

    /// Reads `body` into `dst` (exactly its length) as long as the parent keeps it flowing: no
    /// silence longer than `upstream.first_byte_timeout`, and the whole of it within
    /// [`Upstream::body_deadline`](mhc_config::Upstream::body_deadline). A parent that sends a
    /// valid header and then nothing (or a trickle) releases the fill, and with it every
    /// viewer waiting on it, to the next parent.
    async fn receive_body(
        &self,
        mut body: mhc_transport::ResponseBody,
        dst: &mut [u8],
    ) -> Result<(), AskError> {
        let limits = &self.core.config.upstream;
        let started = tokio::time::Instant::now();
        let deadline = started + limits.body_deadline(dst.len() as u64);
        let mut at = 0;
        loop {
            let wait = deadline.min(tokio::time::Instant::now() + limits.first_byte_timeout);
            // `chunk` is cancel-safe: a timeout loses nothing but the rest of the body.
            match tokio::time::timeout_at(wait, body.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    // `chunk` never yields more than the body's announced length, which is
                    // `dst.len()`.
                    dst[at..at + chunk.len()].copy_from_slice(&chunk);
                    at += chunk.len();
                }
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(AskError::Stalled {
                        received: at as u64,
                        of: dst.len() as u64,
                        after: started.elapsed(),
                    })
                }
            }
        }
    }

    /// Fetches the next segments after `index` in the background, so a player's next requests
    /// hit the cache.
    pub fn prefetch(self: &Arc<Self>, published: &Arc<Published>, index: usize) {
        if !self.core.policy().fills_from_parents() {
            return;
        }
        let store = &self.core.store;
        let count = published.manifest().segments.len();
        for next in (index + 1..count).take(PREFETCH_SEGMENTS) {
            let hash = published.manifest().segments[next].hash;
            if store.ram().get(&hash).is_some() || store.disk().contains(&hash) {
                continue;
            }
            let this = Arc::clone(self);
            let published = Arc::clone(published);
            tokio::spawn(async move {
                if let Err(e) = this.segment(&published, Part::Segment(next), None).await {
                    tracing::debug!(error = %e, next, "prefetch failed");
                }
            });
        }
    }

    /// Fills a whole content (latest version), `concurrency` blobs at a time: an operator's or
    /// a policy's "have all of this here now" (pins, essential content, warm-up before a
    /// premiere).
    ///
    /// # Errors
    /// The manifest cannot be had, or a blob could not be filled from any parent.
    pub async fn fill_all(
        self: &Arc<Self>,
        id: &ContentId,
        concurrency: usize,
    ) -> Result<FillReport, FillError> {
        use futures::stream::{self, StreamExt, TryStreamExt};

        let started = Instant::now();
        let catalog = &self.core.catalog;
        if catalog.latest(id).is_none() || self.manifest_due(id) {
            if let Err(e) = self.refresh_manifest(id, None).await {
                if catalog.latest(id).is_none() {
                    return Err(e);
                }
            }
        }
        let published = catalog
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
            .filter(|(_, h)| self.core.store.disk().contains(h))
            .count();
        let blobs = parts.len();
        stream::iter(parts)
            .map(|(part, _)| {
                let this = Arc::clone(self);
                let published = Arc::clone(&published);
                async move {
                    this.segment(&published, part, None)
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
}

/// This node's link to one parent.
#[derive(Debug, Default)]
struct Link {
    /// The connection on which both sides said hello, while it lasts.
    conn: Option<QuicConnection>,
    /// When the last attempt to connect failed for want of an answer.
    unreachable_since: Option<Instant>,
}

/// What a parent answered to a blob request.
enum Received {
    /// The body, of the expected size, in block-aligned memory; not verified yet.
    Blob(AlignedBlob),
    /// A segment header announcing another size than the manifest's: wrong bytes, unread.
    WrongSize(u64),
    /// Anything else (not found, busy, an error, a transport failure).
    Unusable(Result<(ResponseHeader, Bytes), AskError>),
}

/// What the parents said, for the error when none delivered.
#[derive(Default)]
struct Attempts {
    failures: Vec<String>,
    not_found: usize,
    last: Option<Failure>,
}

impl Attempts {
    /// Records a failure of `parent` (counted, logged, penalised if it misbehaved).
    fn failed(
        &mut self,
        filler: &Filler,
        parent: &ParentAddr,
        reason: FailureReason,
        what: &dyn std::fmt::Display,
    ) {
        filler.blame(parent, reason, what);
        self.last = Some(Failure::content(reason));
        self.failures.push(format!("{}: {what}", parent.addr));
    }

    /// Records an answer that carried nothing usable: not found, busy or failed, an
    /// unexpected header, or a transport error, each classified.
    fn unusable(
        &mut self,
        filler: &Filler,
        parent: &ParentAddr,
        answer: Result<(ResponseHeader, Bytes), AskError>,
    ) {
        match answer {
            Ok((ResponseHeader::NotFound { reason }, _)) => {
                self.not_found += 1;
                self.failures
                    .push(format!("{}: not found ({reason})", parent.addr));
            }
            Ok((ResponseHeader::Busy { retry_after_ms }, _)) => self.failed(
                filler,
                parent,
                FailureReason::Busy,
                &format_args!("busy (retry after {retry_after_ms} ms)"),
            ),
            Ok((ResponseHeader::Error { message }, _)) => {
                self.failed(filler, parent, FailureReason::Busy, &message)
            }
            Ok((other, _)) => self.failed(
                filler,
                parent,
                FailureReason::Protocol,
                &format_args!("unexpected answer {other:?}"),
            ),
            Err(e) => {
                let failure = Failure::ask(&e);
                filler.blame(parent, failure.reason, &e);
                self.last = Some(failure);
                self.failures.push(format!("{}: {e}", parent.addr));
            }
        }
    }

    /// `NotFound` when every one of `asked` parents said so, else `Unavailable`.
    fn conclude(self, asked: usize) -> FillError {
        let detail = self.failures.join("; ");
        match self.last {
            Some(last) if self.not_found < asked => FillError::Unavailable { detail, last },
            _ => FillError::NotFound(detail),
        }
    }
}
