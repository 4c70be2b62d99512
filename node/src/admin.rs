//! The admin plane: a small JSON-over-HTTP API on `data_dir/admin.sock` (mode 0600), and the
//! client the CLI uses to talk to it.
//!
//! The running daemon owns its databases (sled takes an exclusive lock); every operator command
//! that changes or reads node state goes through this socket instead of opening the stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ingest::{self, IngestOutcome};
use crate::state::NodeState;
use crate::viewer::{error, read_limited, Body};

/// File name of the admin socket inside `data_dir`.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// Largest admin request body accepted.
const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

/// `POST /admin/ingest` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestCommand {
    /// Content id (slug).
    pub content_id: String,
    /// Title.
    pub title: String,
    /// Artist id.
    pub artist_id: String,
    /// `audio` or `video`; inferred when absent.
    pub media_kind: Option<String>,
    /// RFC 6381 codecs string, if known.
    pub codecs: Option<String>,
    /// Absolute path of the rendition folder or playlist, as the daemon sees it.
    pub source: PathBuf,
}

/// `POST /admin/prefetch` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefetchCommand {
    /// Content id.
    pub content_id: String,
    /// Blobs fetched at once (default 4).
    pub concurrency: Option<usize>,
}

/// `POST /admin/pin` and `/admin/unpin` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinCommand {
    /// Content id.
    pub content_id: String,
}

/// `POST /admin/emergency` body: an encoded signed operator command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmergencyBody {
    /// The command's wire bytes, hex.
    pub command_hex: String,
}

/// Answers one admin request.
pub async fn handle(state: Arc<NodeState>, req: Request<Incoming>) -> Response<Body> {
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
            Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body: {e}")),
        };
        return plugin_response(crate::plugins::admin(&state, &method, &target, body).await);
    }
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/admin/status") => json_ok(&status(&state)),
        (Method::POST, "/admin/ingest") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let cmd: IngestCommand = match serde_json::from_slice(&body) {
                Ok(cmd) => cmd,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("ingest request: {e}")),
            };
            let state2 = Arc::clone(&state);
            let result = tokio::task::spawn_blocking(move || ingest::ingest(&state2, &cmd)).await;
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
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("prefetch request: {e}")),
            };
            let id = match mhc_manifest::ContentId::new(cmd.content_id.clone()) {
                Ok(id) => id,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("content id: {e}")),
            };
            match crate::fill::fill_all(&state, &id, cmd.concurrency.unwrap_or(4)).await {
                Ok(report) => json_ok(&serde_json::to_value(report).expect("report serialises")),
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
            match crate::emergency::apply(&state, &bytes, "admin") {
                Ok(()) => json_ok(&json!({ "applied": true, "mode": state.mode_name(),
                                           "emergency": state.emergency_json() })),
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
            let pins = state.mesh.pins();
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

fn status(state: &NodeState) -> serde_json::Value {
    let contents: Vec<_> = state
        .catalog
        .list()
        .iter()
        .map(|p| {
            let m = p.manifest();
            json!({"id": m.content_id, "version": m.version, "segments": m.segments.len(),
                   "bytes": m.total_bytes(), "title": m.title})
        })
        .collect();
    json!({
        "self": state.self_description(),
        "mode": state.mode_name(),
        "emergency": state.emergency_json(),
        "members": state.cluster.members_json(),
        "contents": contents,
    })
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    read_limited(req.into_body(), MAX_ADMIN_BODY_BYTES)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("request body: {e}")))
}

/// A plugin's admin answer as an HTTP response.
pub fn plugin_response(a: mhc_origin::plugin::AdminResponse) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(a.body)));
    *resp.status_mut() =
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = http::HeaderValue::from_str(&a.content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    resp
}

fn json_ok(v: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(v).expect("JSON values serialise");
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Sends one request to the daemon's admin socket and returns the JSON answer.
///
/// # Errors
/// The daemon is not running (no socket), or it answered with an error (its message is returned).
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let body = match body {
        Some(v) => serde_json::to_vec(&v)?,
        None => Vec::new(),
    };
    let (status, bytes) = call_raw(socket, method.as_str(), path, "application/json", body).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "admin answer is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    if !status.is_success() {
        let msg = value["error"].as_str().unwrap_or("unknown error");
        bail!("{msg}");
    }
    Ok(value)
}

/// Sends one request to the daemon's admin socket and returns the status and body as they are
/// (plugin routes answer JSON, CSV or export files).
///
/// # Errors
/// The daemon is not running (no socket), or the exchange failed.
pub async fn call_raw(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "connecting to the admin socket {} (is mhc-node running with this data_dir?)",
                socket.display()
            )
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("admin socket handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method.to_ascii_uppercase().as_str())
        .uri(path)
        .header(http::header::HOST, "mhc-admin")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await.context("admin request")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}
