//! The node side of the QUIC data plane: answers other nodes' `GetManifest`, `GetSegment` and
//! `GetInit` from the catalog and the store, filling from its own parents first when it is an
//! edge that lacks the content (so edges can be parents of edges).

use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use libp2p::PeerId;
use mhc_manifest::ContentId;
use mhc_transport::{Handler, Request, Response, ResponseHeader};

use crate::catalog::Published;
use crate::fill::{self, FillError, Part};
use crate::state::NodeState;

/// Serves the QUIC data plane for one node. The server is bound before the node state exists
/// (its port goes into the state), so the state is attached afterwards; it is held weakly, so
/// the server never keeps a stopped node alive.
#[derive(Debug, Clone, Default)]
pub struct DataPlane {
    state: Arc<OnceLock<Weak<NodeState>>>,
}

impl DataPlane {
    /// A handler that answers "stopping" until [`DataPlane::attach`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches the node state.
    pub fn attach(&self, state: &Arc<NodeState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }
}

impl Handler for DataPlane {
    fn handle(&self, peer: PeerId, req: Request) -> BoxFuture<'static, Response> {
        let state = self.state.get().and_then(Weak::upgrade);
        async move {
            let Some(state) = state else {
                return Response::without_body(ResponseHeader::error(
                    "node is starting or stopping",
                ));
            };
            let kind = match &req {
                Request::GetManifest { .. } => "manifest",
                Request::GetSegment { .. } => "segment",
                Request::GetInit { .. } => "init",
                Request::PutPlayReport { .. } => "play_report",
            };
            let response = answer(&state, peer, req).await;
            let outcome = match &response.header {
                ResponseHeader::Manifest { .. }
                | ResponseHeader::Segment { .. }
                | ResponseHeader::ReportAck { .. } => "ok",
                ResponseHeader::NotFound { .. } => "not_found",
                ResponseHeader::Busy { .. } => "busy",
                ResponseHeader::Error { .. } => "error",
            };
            state
                .metrics
                .record_quic_response(kind, outcome, response.body.len() as u64);
            response
        }
        .boxed()
    }
}

async fn answer(state: &Arc<NodeState>, peer: PeerId, req: Request) -> Response {
    if let Request::PutPlayReport { report } = req {
        return play_report(state, report).await;
    }
    let Ok(id) = ContentId::new(req.content_id().unwrap_or_default().to_owned()) else {
        return Response::without_body(ResponseHeader::not_found("malformed content id"));
    };
    match req {
        Request::GetManifest { min_version, .. } => {
            let mut held = state.catalog.latest(&id);
            let fresh_enough = held
                .as_ref()
                .is_some_and(|p| p.manifest().version >= min_version);
            if !fresh_enough && !state.filler.known_missing(&id) {
                // Never ask the requester back: that is a loop, not a parent.
                let _ = fill::refresh_manifest(state, &id, Some(peer)).await;
                held = state.catalog.latest(&id);
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
            let Some(p) = version_held(state, &id, version, peer).await else {
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
            match fill::segment(state, &p, Part::Segment(index as usize), Some(peer)).await {
                Ok(bytes) => segment_response(hash, size, p.proof_hashes(index as usize), bytes),
                Err(e) => fill_error(e),
            }
        }
        Request::PutPlayReport { .. } => unreachable!("answered above"),
        Request::GetInit { version, .. } => {
            let Some(p) = version_held(state, &id, version, peer).await else {
                return Response::without_body(ResponseHeader::not_found(format!(
                    "no manifest {id} v{version}"
                )));
            };
            let Some(init) = p.manifest().hls.init.clone() else {
                return Response::without_body(ResponseHeader::not_found("no init segment"));
            };
            match fill::segment(state, &p, Part::Init, Some(peer)).await {
                Ok(bytes) => segment_response(init.hash, init.size, Vec::new(), bytes),
                Err(e) => fill_error(e),
            }
        }
    }
}

/// A node's play report: stored durably by the plugin host, then acknowledged.
async fn play_report(state: &Arc<NodeState>, report: Vec<u8>) -> Response {
    let Some(host) = state.plugins.get() else {
        // Not an origin: the sender will try an origin.
        return Response::without_body(ResponseHeader::Busy {
            retry_after_ms: 5_000,
        });
    };
    let seq = mhc_origin::SignedPlayReport::decode(&report).map_or(0, |r| r.batch.seq);
    match crate::plugins::ingest_encoded(state, host, report).await {
        crate::reports::Outcome::Acked => Response::without_body(ResponseHeader::ReportAck {
            seq,
            duplicate: false,
        }),
        crate::reports::Outcome::Later(_) => Response::without_body(ResponseHeader::Busy {
            retry_after_ms: 5_000,
        }),
        crate::reports::Outcome::Refused(why) => Response::without_body(ResponseHeader::error(why)),
    }
}

async fn version_held(
    state: &Arc<NodeState>,
    id: &ContentId,
    version: u64,
    requester: PeerId,
) -> Option<Arc<Published>> {
    if let Some(p) = state.catalog.version(id, version) {
        return Some(p);
    }
    let _ = fill::refresh_manifest(state, id, Some(requester)).await;
    state.catalog.version(id, version)
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
        FillError::Unavailable(reason) => Response::without_body(ResponseHeader::error(reason)),
    }
}
