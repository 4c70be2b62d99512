//! The admin plane: a small JSON-over-HTTP API on `data_dir/admin.sock` (mode 0600).
//!
//! The running daemon owns its databases (sled takes an exclusive lock); every operator command
//! that changes or reads node state goes through this socket instead of opening the stores.
//! [`api`] holds the wire types the CLI's client shares; [`ingest`] is publishing at an origin.

pub mod api;
mod ingest;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mhc_manifest::ContentId;
use mhc_transport::headers::CACHE_NONE;
use serde_json::json;

use crate::backup::{Backups, Kind};
use crate::control::ClusterHandle;
use crate::core::Core;
use crate::fill::Filler;
use crate::http::{json_response, plugin_response, read_limited, Body, Refused};
use crate::mesh::MeshPlane;
use crate::plugins::Plugins;
use crate::status::NodeStatus;
use api::{BackupCommand, EmergencyBody, IngestCommand, PinCommand, PrefetchCommand, RevokeBody};
pub use ingest::Ingest;
use ingest::IngestOutcome;

/// Largest admin request body accepted.
const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

/// The admin plane of one node: the core and the handles its routes need (built by the
/// composition root).
#[derive(Debug)]
pub struct Admin {
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
    /// Backups, at an origin with `[backup] repository`.
    pub backups: Option<Arc<Backups>>,
    /// The election, at an origin with `[ha]`.
    pub ha: Option<Arc<crate::ha::Ha>>,
}

/// An admin answer, or the refusal that ends a route early.
type Answer = Result<Response<Body>, Refused>;

impl Admin {
    /// Answers one admin request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if let Some(target) = req
            .uri()
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix("/admin/plugins/"))
        {
            let target = target.to_owned();
            let method = req.method().as_str().to_owned();
            return plugin_response(
                crate::plugins::admin_route(
                    self.plugins.as_ref(),
                    &method,
                    &target,
                    req.into_body(),
                )
                .await,
            );
        }
        let path = req.uri().path().to_owned();
        let answer = match (req.method().clone(), path.as_str()) {
            (Method::GET, "/admin/status") => Ok(json_ok(&self.status.status_json())),
            (Method::POST, "/admin/ingest") => self.ingest(req).await,
            (Method::POST, "/admin/prefetch") => self.prefetch(req).await,
            (Method::POST, "/admin/emergency") => self.emergency(req).await,
            (Method::POST, "/admin/revoke") => self.revoke(req).await,
            (Method::POST, "/admin/backup") => self.backup(req).await,
            (Method::POST, "/admin/ha/switchover") => self.switchover().await,
            (Method::POST, "/admin/pin") => self.pin(req, true).await,
            (Method::POST, "/admin/unpin") => self.pin(req, false).await,
            _ => Err(Refused(StatusCode::NOT_FOUND, "no such admin route".into())),
        };
        answer.unwrap_or_else(Refused::into_response)
    }

    /// `POST /admin/ingest`: publishes a rendition (an origin only).
    async fn ingest(&self, req: Request<Incoming>) -> Answer {
        let cmd: IngestCommand = json_body(req, "ingest request").await?;
        let Some(ingest) = self.ingest.clone() else {
            return Err(Refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "this node's role is {}; only an origin publishes content",
                    self.core.config.role
                ),
            ));
        };
        match tokio::task::spawn_blocking(move || ingest.ingest(&cmd)).await {
            Ok(Ok(outcome)) => Ok(json_ok(&outcome_json(&outcome))),
            Ok(Err(e)) => Err(Refused(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}"))),
            Err(e) => Err(Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("ingest task: {e}"),
            )),
        }
    }

    /// `POST /admin/backup`: takes a backup now (after any backup in progress).
    async fn backup(&self, req: Request<Incoming>) -> Answer {
        let cmd: BackupCommand = json_body(req, "backup request").await?;
        let Some(backups) = self.backups.clone() else {
            return Err(Refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                if self.core.config.role == mhc_config::Role::Origin {
                    "backups are off: set [backup] repository and password_file".to_owned()
                } else {
                    format!(
                        "this node's role is {}; backups are taken by an origin",
                        self.core.config.role
                    )
                },
            ));
        };
        let kind = match cmd.kind.as_deref() {
            None => Kind::Manual,
            Some(k) => k
                .parse()
                .map_err(|e: anyhow::Error| Refused(StatusCode::BAD_REQUEST, e.to_string()))?,
        };
        match backups.take(vec![kind]).await {
            Ok(taken) => Ok(json_ok(
                &serde_json::to_value(taken).expect("a backup report serialises"),
            )),
            Err(e) => Err(Refused(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
        }
    }

    /// `POST /admin/ha/switchover`: hands the primary's role to a synced standby, step by
    /// step; the steps as they went.
    async fn switchover(&self) -> Answer {
        let Some(ha) = self.ha.clone() else {
            return Err(Refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this node does not elect its primary: switchover needs an origin with [ha]"
                    .to_owned(),
            ));
        };
        match ha.switchover().await {
            Ok(steps) => Ok(json_ok(&serde_json::json!({ "steps": steps }))),
            Err(why) => Err(Refused(StatusCode::CONFLICT, why)),
        }
    }

    /// `POST /admin/prefetch`: fills a whole content now.
    async fn prefetch(&self, req: Request<Incoming>) -> Answer {
        let cmd: PrefetchCommand = json_body(req, "prefetch request").await?;
        let id = content_id(cmd.content_id)?;
        match self
            .filler
            .fill_all(&id, cmd.concurrency.unwrap_or(4))
            .await
        {
            Ok(report) => Ok(json_ok(
                &serde_json::to_value(report).expect("report serialises"),
            )),
            Err(e) => Err(Refused(StatusCode::BAD_GATEWAY, e.to_string())),
        }
    }

    /// `POST /admin/emergency`: applies (and gossips) a signed operator command.
    async fn emergency(&self, req: Request<Incoming>) -> Answer {
        let cmd: EmergencyBody = json_body(req, "emergency request").await?;
        let Ok(bytes) = hex::decode(&cmd.command_hex) else {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                "command_hex is not hex".into(),
            ));
        };
        match self.cluster.obey(&self.core, &bytes, "admin") {
            Ok(()) => Ok(json_ok(&json!({
                "applied": true,
                "mode": self.core.mode().as_str(),
                "emergency": self.core.emergency.state().to_json(),
            }))),
            Err(e) => Err(Refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        }
    }

    /// `POST /admin/revoke`: applies (and gossips) a signed revocation.
    async fn revoke(&self, req: Request<Incoming>) -> Answer {
        let body: RevokeBody = json_body(req, "revoke request").await?;
        let Ok(bytes) = hex::decode(&body.revocation_hex) else {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                "revocation_hex is not hex".into(),
            ));
        };
        match self.cluster.revoke(&self.core, &bytes, "admin") {
            Ok(revoked) => Ok(json_ok(&self.core.admission.revocation_json(&revoked))),
            Err(e) => Err(Refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        }
    }

    /// `POST /admin/pin` and `/admin/unpin`.
    async fn pin(&self, req: Request<Incoming>, pin: bool) -> Answer {
        let cmd: PinCommand = json_body(req, "pin request").await?;
        let id = content_id(cmd.content_id)?;
        let pins = self.mesh.pins();
        let changed = if pin { pins.pin(&id) } else { pins.unpin(&id) };
        match changed {
            Ok(changed) => Ok(json_ok(&json!({
                "content_id": id,
                "pinned": pin,
                "changed": changed,
                "pins": pins.list(),
            }))),
            Err(e) => Err(Refused(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
        }
    }
}

/// The JSON body of an admin request (at most [`MAX_ADMIN_BODY_BYTES`]), or the `400` that
/// says why not, naming `what` the body was meant to be.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    what: &str,
) -> Result<T, Refused> {
    let body = read_limited(req.into_body(), MAX_ADMIN_BODY_BYTES)
        .await
        .map_err(|e| Refused(StatusCode::BAD_REQUEST, format!("request body: {e}")))?;
    serde_json::from_slice(&body)
        .map_err(|e| Refused(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

/// A content id from a request, or the `400` that says why it is not one.
fn content_id(id: String) -> Result<ContentId, Refused> {
    ContentId::new(id).map_err(|e| Refused(StatusCode::BAD_REQUEST, format!("content id: {e}")))
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

fn json_ok(v: &serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, v, CACHE_NONE)
}
