//! The admin plane: a small JSON-over-HTTP API on `data_dir/admin.sock` (mode 0600).
//!
//! The running daemon owns its databases (sled takes an exclusive lock); every operator command
//! that changes or reads node state goes through this socket instead of opening the stores.
//! [`api`] holds the wire types the CLI's client shares; [`ingest`] is publishing at an origin.

pub mod api;
mod ingest;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mhc_transport::headers::CACHE_NONE;
use serde_json::json;

use crate::control::ClusterHandle;
use crate::core::Core;
use crate::fill::Filler;
use crate::http::{error, json_response, plugin_response, read_limited, Body};
use crate::mesh::MeshPlane;
use crate::plugins::Plugins;
use crate::status::NodeStatus;
use api::{EmergencyBody, IngestCommand, PinCommand, PrefetchCommand};
pub use ingest::Ingest;
use ingest::IngestOutcome;

/// Largest admin request body accepted.
const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

/// The admin plane of one node.
#[derive(Debug)]
pub struct Admin {
    core: Arc<Core>,
    filler: Arc<Filler>,
    cluster: ClusterHandle,
    mesh: Arc<MeshPlane>,
    plugins: Option<Arc<Plugins>>,
    ingest: Option<Arc<Ingest>>,
    status: NodeStatus,
}

/// What an [`Admin`] is built from.
#[derive(Debug)]
pub struct AdminParts {
    /// The shared state.
    pub core: Arc<Core>,
    /// Prefetches.
    pub filler: Arc<Filler>,
    /// Publishes operator commands.
    pub cluster: ClusterHandle,
    /// Pins.
    pub mesh: Arc<MeshPlane>,
    /// The origin's plugins.
    pub plugins: Option<Arc<Plugins>>,
    /// Publishing, at an origin.
    pub ingest: Option<Arc<Ingest>>,
    /// This node as operators see it.
    pub status: NodeStatus,
}

impl Admin {
    /// The admin plane over `parts`.
    pub fn new(parts: AdminParts) -> Self {
        let AdminParts {
            core,
            filler,
            cluster,
            mesh,
            plugins,
            ingest,
            status,
        } = parts;
        Self {
            core,
            filler,
            cluster,
            mesh,
            plugins,
            ingest,
            status,
        }
    }

    /// Answers one admin request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if let Some(target) = req
            .uri()
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix("/admin/plugins/"))
        {
            let target = target.to_owned();
            let method = req.method().as_str().to_owned();
            let body = match read_limited(req.into_body(), mhc_origin::plugin::MAX_ADMIN_BODY_BYTES)
                .await
            {
                Ok(body) => body.to_vec(),
                Err(e) => {
                    return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body: {e}"))
                }
            };
            return plugin_response(
                crate::plugins::admin_route(self.plugins.as_ref(), &method, &target, body).await,
            );
        }
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/admin/status") => json_ok(&self.status.status_json()),
            (Method::POST, "/admin/ingest") => {
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let cmd: IngestCommand = match serde_json::from_slice(&body) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, &format!("ingest request: {e}"))
                    }
                };
                let Some(ingest) = self.ingest.clone() else {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &format!(
                            "this node's role is {}; only an origin publishes content",
                            self.core.config.role
                        ),
                    );
                };
                let result = tokio::task::spawn_blocking(move || ingest.ingest(&cmd)).await;
                match result {
                    Ok(Ok(outcome)) => json_ok(&outcome_json(&outcome)),
                    Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &format!("{e:#}")),
                    Err(e) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("ingest task: {e}"),
                    ),
                }
            }
            (Method::POST, "/admin/prefetch") => {
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let cmd: PrefetchCommand = match serde_json::from_slice(&body) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, &format!("prefetch request: {e}"))
                    }
                };
                let id = match mhc_manifest::ContentId::new(cmd.content_id.clone()) {
                    Ok(id) => id,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &format!("content id: {e}")),
                };
                match self
                    .filler
                    .fill_all(&id, cmd.concurrency.unwrap_or(4))
                    .await
                {
                    Ok(report) => {
                        json_ok(&serde_json::to_value(report).expect("report serialises"))
                    }
                    Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
                }
            }
            (Method::POST, "/admin/emergency") => {
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let cmd: EmergencyBody = match serde_json::from_slice(&body) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, &format!("emergency request: {e}"))
                    }
                };
                let Ok(bytes) = hex::decode(&cmd.command_hex) else {
                    return error(StatusCode::BAD_REQUEST, "command_hex is not hex");
                };
                match self.cluster.obey(&self.core, &bytes, "admin") {
                    Ok(()) => json_ok(&json!({ "applied": true, "mode": self.core.mode().as_str(),
                                               "emergency": self.core.emergency.state().to_json() })),
                    Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
                }
            }
            (Method::POST, route @ ("/admin/pin" | "/admin/unpin")) => {
                let pin = route == "/admin/pin";
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let cmd: PinCommand = match serde_json::from_slice(&body) {
                    Ok(cmd) => cmd,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &format!("pin request: {e}")),
                };
                let id = match mhc_manifest::ContentId::new(cmd.content_id) {
                    Ok(id) => id,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &format!("content id: {e}")),
                };
                let pins = self.mesh.pins();
                let changed = if pin { pins.pin(&id) } else { pins.unpin(&id) };
                match changed {
                    Ok(changed) => json_ok(&json!({
                        "content_id": id,
                        "pinned": pin,
                        "changed": changed,
                        "pins": pins.list(),
                    })),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such admin route"),
        }
    }
}

fn outcome_json(o: &IngestOutcome) -> serde_json::Value {
    let m = o.published.manifest();
    json!({
        "content_id": m.content_id,
        "version": m.version,
        "outcome": if o.changed { "published" } else { "unchanged" },
        "segments": m.segments.len(),
        "bytes": m.total_bytes(),
        "duration_ms": m.total_duration_ms(),
        "manifest_hash": o.published.hash_hex,
        "merkle_root": hex::encode(m.merkle_root),
        "playlist": format!("/v1/content/{}/index.m3u8", m.content_id),
    })
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    read_limited(req.into_body(), MAX_ADMIN_BODY_BYTES)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("request body: {e}")))
}

fn json_ok(v: &serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, v, CACHE_NONE)
}
