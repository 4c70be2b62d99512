//! The serving side of the QUIC data plane: answers other nodes' `GetManifest`, `GetSegment`
//! and `GetInit` from the catalog and the store, filling from its own parents first when it is
//! an edge that lacks the content (so edges can be parents of edges), and takes play reports at
//! an origin.
//!
//! The door: a peer is answered only after its `Hello` showed a certificate that a trusted
//! operator signed for the key it proved in the TLS handshake. Anything else it asks is
//! answered `NotAdmitted` and counted, so an unenrolled process can neither read through this
//! node (and make it fill for it) nor hand it play reports.
//!
//! The handler is built from the core and its handles before the server binds, so the server
//! never sees a half-built node.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use libp2p::PeerId;
use mhc_manifest::ContentId;
use mhc_transport::{Handler, Refusal as ConnectionRefusal, Request, Response, ResponseHeader};

use crate::core::admission::Refusal;
use crate::core::catalog::Published;
use crate::core::identity::peer_key;
use crate::core::Core;
use crate::fill::{FillError, Filler, Part};
use crate::ha::source::Source;
use crate::plugins::{Outcome, Plugins};
use crate::role::role_of;

/// Serves the QUIC data plane for one node.
#[derive(Debug, Clone)]
pub struct QuicServe {
    core: Arc<Core>,
    filler: Arc<Filler>,
    plugins: Option<Arc<Plugins>>,
    replication: Option<Arc<Source>>,
}

impl QuicServe {
    /// A handler over `core`, filling through `filler`, taking play reports into `plugins`
    /// (an origin's; `None` elsewhere, and reports are answered "busy" so senders try an
    /// origin), serving its replication log to standby origins through `replication` (an
    /// origin with `[ha]`).
    pub fn new(
        core: Arc<Core>,
        filler: Arc<Filler>,
        plugins: Option<Arc<Plugins>>,
        replication: Option<Arc<Source>>,
    ) -> Self {
        Self {
            core,
            filler,
            plugins,
            replication,
        }
    }

    async fn answer(&self, peer: PeerId, req: Request) -> Response {
        let req = match req {
            Request::Hello { certificate } => return self.hello(peer, &certificate),
            req if !self.admits(&peer) => {
                if matches!(req, Request::PutPlayReport { .. }) {
                    if let Some(plugins) = &self.plugins {
                        plugins.refused_unenrolled();
                    }
                }
                return Response::without_body(ResponseHeader::not_admitted(
                    "not enrolled here: say hello with a node certificate first",
                ));
            }
            Request::PutPlayReport { report } => return self.play_report(report).await,
            req @ (Request::Replicate { .. } | Request::Snapshot { .. }) => {
                return self.replication(peer, req).await
            }
            req => req,
        };
        let Ok(id) = ContentId::new(req.content_id().unwrap_or_default().to_owned()) else {
            return Response::without_body(ResponseHeader::not_found("malformed content id"));
        };
        match req {
            Request::GetManifest { min_version, .. } => {
                if let Some(why) = self
                    .replication
                    .as_ref()
                    .and_then(|r| r.withholds_versions(&self.core))
                {
                    return Response::without_body(ResponseHeader::not_found(why));
                }
                let catalog = &self.core.catalog;
                let mut held = catalog.latest(&id);
                let fresh_enough = held
                    .as_ref()
                    .is_some_and(|p| p.manifest().version >= min_version);
                if !fresh_enough && !self.filler.known_missing(&id) {
                    // Never ask the requester back: that is a loop, not a parent.
                    let _ = self.filler.refresh_manifest(&id, Some(peer)).await;
                    held = catalog.latest(&id);
                }
                match held {
                    Some(p) if p.manifest().version >= min_version => Response::new(
                        ResponseHeader::Manifest {
                            version: p.manifest().version,
                            body_len: p.encoded.len() as u64,
                        },
                        p.encoded.clone(),
                    ),
                    _ => Response::without_body(ResponseHeader::not_found(format!(
                        "no manifest of {id} at version {min_version} or later"
                    ))),
                }
            }
            Request::GetSegment { version, index, .. } => {
                let Some(p) = self.version_held(&id, version, peer).await else {
                    return Response::without_body(ResponseHeader::not_found(format!(
                        "no manifest {id} v{version}"
                    )));
                };
                let Some(info) = p.manifest().segments.get(index as usize) else {
                    return Response::without_body(ResponseHeader::not_found(format!(
                        "{id} v{version} has no segment {index}"
                    )));
                };
                let (hash, size) = (info.hash, info.size);
                match self
                    .filler
                    .segment(&p, Part::Segment(index as usize), Some(peer))
                    .await
                {
                    Ok(bytes) => {
                        segment_response(hash, size, p.proof_hashes(index as usize), bytes)
                    }
                    Err(e) => fill_error(e),
                }
            }
            Request::GetInit { version, .. } => {
                let Some(p) = self.version_held(&id, version, peer).await else {
                    return Response::without_body(ResponseHeader::not_found(format!(
                        "no manifest {id} v{version}"
                    )));
                };
                let Some(init) = p.manifest().hls.init.clone() else {
                    return Response::without_body(ResponseHeader::not_found("no init segment"));
                };
                match self.filler.segment(&p, Part::Init, Some(peer)).await {
                    Ok(bytes) => segment_response(init.hash, init.size, Vec::new(), bytes),
                    Err(e) => fill_error(e),
                }
            }
            Request::PutPlayReport { .. }
            | Request::Hello { .. }
            | Request::Replicate { .. }
            | Request::Snapshot { .. } => {
                unreachable!("answered above")
            }
        }
    }

    /// A peer's hello: admitted on its certificate, answered with this node's.
    fn hello(&self, peer: PeerId, certificate: &[u8]) -> Response {
        let admitted = peer_key(&peer)
            .ok_or(Refusal::NotEnrolled)
            .and_then(|key| self.core.admission.present(&key, certificate));
        match admitted {
            Ok(_) => Response::without_body(ResponseHeader::Hello {
                certificate: self
                    .core
                    .enrollment
                    .as_ref()
                    .map(|e| e.encoded.clone())
                    .unwrap_or_default(),
            }),
            Err(refusal) => {
                self.core.metrics.record_quic_refused(refusal.label());
                tracing::debug!(%peer, error = %refusal, "QUIC hello refused");
                Response::without_body(ResponseHeader::not_admitted(refusal.to_string()))
            }
        }
    }

    /// Whether `peer` said hello with a certificate that is still good.
    fn admits(&self, peer: &PeerId) -> bool {
        peer_key(peer).is_some_and(|key| self.core.admission.admitted(&key).is_some())
    }

    /// A standby's request for the replication log or a snapshot: answered to origins only
    /// (what it carries is the origin's books), by the primary of the asked epoch.
    async fn replication(&self, peer: PeerId, req: Request) -> Response {
        let Some(source) = &self.replication else {
            return Response::without_body(ResponseHeader::not_found(
                "this node is not an origin that elects its primary",
            ));
        };
        let is_origin = peer_key(&peer)
            .and_then(|key| self.core.admission.admitted(&key))
            .is_some_and(|cert| role_of(cert.certificate.role) == mhc_config::Role::Origin);
        if !is_origin {
            return Response::without_body(ResponseHeader::not_admitted(
                "replication is served to origins only",
            ));
        }
        match req {
            Request::Replicate {
                epoch,
                after,
                wait_ms,
            } => {
                let wait = std::time::Duration::from_millis(u64::from(wait_ms));
                source.entries(&self.core, peer, epoch, after, wait).await
            }
            Request::Snapshot {
                epoch,
                tree,
                after_key,
            } => source.snapshot(&self.core, epoch, tree, after_key).await,
            _ => Response::without_body(ResponseHeader::error("not a replication request")),
        }
    }

    /// A node's play report: stored durably by the plugin host, then acknowledged.
    async fn play_report(&self, report: Vec<u8>) -> Response {
        let Some(plugins) = &self.plugins else {
            // Not an origin: the sender will try an origin.
            return Response::without_body(ResponseHeader::Busy {
                retry_after_ms: 5_000,
            });
        };
        let seq = mhc_origin::SignedPlayReport::decode(&report).map_or(0, |r| r.batch.seq);
        match plugins.ingest_encoded(report).await {
            Outcome::Acked => Response::without_body(ResponseHeader::ReportAck {
                seq,
                duplicate: false,
            }),
            Outcome::Later(_) => Response::without_body(ResponseHeader::Busy {
                retry_after_ms: 5_000,
            }),
            Outcome::Refused(why) => Response::without_body(ResponseHeader::error(why)),
        }
    }

    async fn version_held(
        &self,
        id: &ContentId,
        version: u64,
        requester: PeerId,
    ) -> Option<Arc<Published>> {
        let catalog = &self.core.catalog;
        if let Some(p) = catalog.version(id, version) {
            return Some(p);
        }
        let _ = self.filler.refresh_manifest(id, Some(requester)).await;
        catalog.version(id, version)
    }
}

impl Handler for QuicServe {
    fn refused(
        &self,
        _remote: std::net::SocketAddr,
        _peer: Option<PeerId>,
        why: ConnectionRefusal,
    ) {
        self.core.metrics.record_quic_refused(why.label());
    }

    fn handle(&self, peer: PeerId, req: Request) -> BoxFuture<'static, Response> {
        let this = self.clone();
        async move {
            let kind = match &req {
                Request::GetManifest { .. } => "manifest",
                Request::GetSegment { .. } => "segment",
                Request::GetInit { .. } => "init",
                Request::PutPlayReport { .. } => "play_report",
                Request::Hello { .. } => "hello",
                Request::Replicate { .. } => "replicate",
                Request::Snapshot { .. } => "snapshot",
            };
            let response = this.answer(peer, req).await;
            let outcome = match &response.header {
                ResponseHeader::Manifest { .. }
                | ResponseHeader::Segment { .. }
                | ResponseHeader::ReportAck { .. }
                | ResponseHeader::Hello { .. }
                | ResponseHeader::Entries { .. }
                | ResponseHeader::SnapshotPage { .. } => "ok",
                ResponseHeader::NotAdmitted { .. } => "not_admitted",
                ResponseHeader::NotFound { .. } => "not_found",
                ResponseHeader::Busy { .. } => "busy",
                ResponseHeader::Error { .. } => "error",
            };
            this.core
                .metrics
                .record_quic_response(kind, outcome, response.body.len() as u64);
            response
        }
        .boxed()
    }
}

fn segment_response(hash: [u8; 32], size: u64, proof: Vec<[u8; 32]>, bytes: Bytes) -> Response {
    debug_assert_eq!(bytes.len() as u64, size);
    Response::new(ResponseHeader::Segment { hash, size, proof }, bytes)
}

fn fill_error(e: FillError) -> Response {
    match e {
        FillError::NotFound(reason) => Response::without_body(ResponseHeader::not_found(reason)),
        FillError::NoParent => {
            Response::without_body(ResponseHeader::error("segment bytes are not readable here"))
        }
        FillError::Unavailable { detail, .. } | FillError::Local(detail) => {
            Response::without_body(ResponseHeader::error(detail))
        }
    }
}
