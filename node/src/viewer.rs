//! The viewer plane: HLS playlists, segments, manifests, routing answers and operator endpoints
//! over HTTP/1.1 and HTTP/2 (see the "Viewer HTTP API" table of ARCHITECTURE.md).
//!
//! Every answer is built from memory (catalog entries and RAM-tier `Bytes`), carries CORS headers
//! so browser players on other origins can read it, and is counted in the metrics by route and
//! status. Malformed paths are `400`, unknown content `404`; nothing here panics on input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use mhc_manifest::{ContentId, SegmentFormat};
use mhc_transport::headers::{
    ALLOW_METHODS, CACHE_IMMUTABLE, CACHE_NONE, CACHE_SHORT, CONTENT_TYPE_INIT_MP4,
    CONTENT_TYPE_M3U8, CONTENT_TYPE_MANIFEST, CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS,
    CORS_MAX_AGE_S, X_MHC_CONTENT_VERSION, X_MHC_MERKLE_PROOF, X_MHC_MERKLE_ROOT,
    X_MHC_SEGMENT_HASH, X_MHC_SEGMENT_INDEX,
};
use mhc_transport::{
    content_range, if_none_match_matches, if_range_matches, parse_range, unsatisfied_range,
    RangeOutcome,
};
use serde_json::json;

use crate::catalog::{Published, SegmentHeaders};
use crate::cluster::messages::{Load, WireMode, WireRole};
use crate::fill::{self, FillError, Part};
use crate::routing::{self, Depth, GeoAvailability};
use crate::state::NodeState;
use crate::store::StoreError;

/// Response body of the viewer plane: everything is served from memory.
pub type Body = Full<Bytes>;

/// Longest request path looked at; anything longer is malformed.
const MAX_PATH_LEN: usize = 512;

/// Largest `POST /v1/emergency` body read.
const MAX_COMMAND_BODY_BYTES: usize = crate::emergency::MAX_COMMAND_BYTES + 1;

/// Longest a viewer waits for a due check of a manifest this node already holds. A parent
/// that answers at all answers in a round trip or two; one that died without closing its
/// connection is only noticed at the QUIC request timeout (10 s), and players give up on a
/// playlist at about that (hls.js: 10 s). Past this wait the held copy, signed and still
/// valid, is served (stale-while-revalidate) and the check finishes in the background.
const REVALIDATE_WAIT: Duration = Duration::from_secs(1);

/// Answers one viewer request and records it in the metrics.
pub async fn handle<B>(state: Arc<NodeState>, req: Request<B>, remote: SocketAddr) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let is_head = req.method() == Method::HEAD;
    let (route, mut resp) = if req.method() == Method::POST && req.uri().path() == "/v1/emergency" {
        ("emergency", emergency_command(&state, req).await)
    } else if req.uri().path().starts_with("/admin/plugins/") {
        ("admin", plugin_admin(&state, req).await)
    } else {
        route(&state, &req, remote).await
    };
    add_cors(resp.headers_mut());
    let body_len = content_length(&resp);
    if is_head {
        // Same headers as GET, no body (RFC 9110 §9.3.2).
        *resp.body_mut() = Full::new(Bytes::new());
    }
    let sent = if is_head { 0 } else { body_len };
    state
        .metrics
        .record_request(route, resp.status().as_u16(), sent, started.elapsed());
    resp
}

fn content_length(resp: &Response<Body>) -> u64 {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `POST /v1/emergency`: an encoded, signed operator command from anyone. The signature is
/// the authority, not the sender: accepted commands are applied and gossiped to the cluster.
async fn emergency_command<B>(state: &NodeState, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = match read_limited(req.into_body(), MAX_COMMAND_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            state.metrics.record_emergency("too_large");
            return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("command body: {e}"));
        }
    };
    match crate::emergency::apply(state, &body, "http") {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({ "applied": true, "mode": state.mode_name(), "emergency": state.emergency_json() }),
            CACHE_NONE,
        ),
        Err(err) => {
            let status = match err {
                crate::emergency::Rejected::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                crate::emergency::Rejected::Malformed(_) => StatusCode::BAD_REQUEST,
                crate::emergency::Rejected::Stale { .. } => StatusCode::CONFLICT,
                _ => StatusCode::FORBIDDEN,
            };
            error(status, &err.to_string())
        }
    }
}

/// `/admin/plugins/...` on the viewer plane: only with `Authorization: Bearer <http.admin_token>`
/// (compared in constant time); without a configured token the routes do not exist here.
async fn plugin_admin<B>(state: &NodeState, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(token) = &state.config.http.admin_token else {
        return error(StatusCode::NOT_FOUND, "no such resource");
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let matches = presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !matches {
        let mut resp = error(StatusCode::UNAUTHORIZED, "admin token required");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().trim_start_matches("/admin/plugins/").to_owned())
        .unwrap_or_default();
    let method = req.method().as_str().to_owned();
    let body = match read_limited(req.into_body(), mhc_origin::plugin::MAX_ADMIN_BODY_BYTES).await {
        Ok(body) => body.to_vec(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body: {e}")),
    };
    let mut resp =
        crate::admin::plugin_response(crate::plugins::admin(state, &method, &target, body).await);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_NONE));
    resp
}

/// Reads a request body of at most `limit` bytes.
///
/// # Errors
/// The body is longer, or reading it failed (the message says which).
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::{BodyExt, Limited};
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

/// The answer to a content request at a node that does not serve viewers in the current mode
/// (an origin or edge in emergency mode): `503`, when to try again, and where to go instead.
fn not_serving(state: &NodeState, id: &str, why: crate::routing::NotServing) -> Response<Body> {
    let play = format!("/play/{id}");
    let mut resp = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({
            "error": format!("this node does not serve viewers now: {why}"),
            "status": 503,
            "mode": state.mode_name(),
            "play": play,
        }),
        CACHE_NONE,
    );
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    if let Ok(link) = HeaderValue::from_str(&format!("<{play}>; rel=\"alternate\"")) {
        h.insert(header::LINK, link);
    }
    resp
}

async fn route<B>(
    state: &Arc<NodeState>,
    req: &Request<B>,
    remote: SocketAddr,
) -> (&'static str, Response<Body>) {
    let method = req.method();
    if method == Method::OPTIONS {
        return ("preflight", preflight());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "only GET, HEAD and OPTIONS");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOW_METHODS));
        return ("method_not_allowed", resp);
    }
    let path = req.uri().path();
    if path.len() > MAX_PATH_LEN || !path.starts_with('/') || path.contains("//") {
        return (
            "malformed",
            error(StatusCode::BAD_REQUEST, "malformed path"),
        );
    }
    let query = Query::parse(req.uri().query());
    let parts: Vec<&str> = path[1..].split('/').collect();
    match parts.as_slice() {
        ["healthz"] => ("healthz", text(StatusCode::OK, "ok\n", CACHE_NONE)),
        ["readyz"] => ("readyz", readyz(state)),
        ["metrics"] => ("metrics", metrics(state)),
        ["v1", "content"] => ("content_list", content_list(state)),
        ["v1", "cluster"] => ("cluster", cluster(state)),
        ["v1", "content", id, "master.m3u8"] => {
            ("master", master(state, id, req.headers(), remote))
        }
        ["v1", "content", id, rest @ ..] if state.serves_viewers().is_err() => {
            let why = state.serves_viewers().expect_err("checked in the guard");
            let route = content_route(rest).unwrap_or("malformed");
            (route, not_serving(state, id, why))
        }
        ["v1", "content", id, rest @ ..] => {
            let (route, published) = match content_route(rest) {
                Some(route) => (route, resolve(state, id, &query, route).await),
                None => {
                    return (
                        "malformed",
                        error(StatusCode::NOT_FOUND, "no such resource"),
                    )
                }
            };
            let published = match published {
                Ok(p) => p,
                Err(refusal) => return (route, refusal.into_response()),
            };
            let resp = match rest {
                ["manifest"] => manifest(&published, req.headers(), &query),
                ["index.m3u8"] => {
                    state
                        .mesh
                        .plays()
                        .record(published.manifest().content_id.as_str());
                    playlist(&published, req.headers(), &query)
                }
                ["init.mp4"] => init_segment(state, &published, req.headers()).await,
                ["seg", file] => {
                    // Only bodies served count towards play reports, not HEAD probes.
                    let viewer = (method == Method::GET)
                        .then(|| crate::reports::viewer(state, req.headers(), remote));
                    segment(state, &published, file, req.headers(), viewer).await
                }
                _ => unreachable!("content_route accepted only these shapes"),
            };
            (route, resp)
        }
        ["play", id] => ("play", play(state, id, req.headers(), remote)),
        ["v1", "route", id] => ("route", route_answer(state, id, req.headers(), remote)),
        _ => (
            "not_found",
            error(StatusCode::NOT_FOUND, "no such resource"),
        ),
    }
}

fn content_route(rest: &[&str]) -> Option<&'static str> {
    Some(match rest {
        ["manifest"] => "manifest",
        ["index.m3u8"] => "playlist",
        ["init.mp4"] => "init",
        ["seg", _] => "segment",
        _ => return None,
    })
}

/// The query parameters the viewer plane understands.
#[derive(Debug, Default)]
struct Query {
    /// `v=N`: a specific manifest version (segment URLs in playlists carry it, so a player keeps
    /// the bytes of the version it started with even if a new one is published meanwhile).
    version: Option<Result<u64, ()>>,
    /// `format=json` on the manifest.
    json: bool,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut q = Query::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("v", v)) => {
                    q.version = Some(v.parse::<u64>().ok().filter(|v| *v > 0).ok_or(()))
                }
                Some(("format", "json")) => q.json = true,
                _ => {}
            }
        }
        q
    }
}

/// The published version a content URL names; an edge (or mesh node) that lacks it, or whose
/// copy of a "latest" document is due for a check, asks its parents first. When every parent is
/// unreachable, what is held is served (stale but signed).
async fn resolve(
    state: &Arc<NodeState>,
    id: &str,
    query: &Query,
    route: &'static str,
) -> Result<Arc<Published>, Refusal> {
    let found = lookup(state, id, query);
    let Ok(content_id) = ContentId::new(id.to_string()) else {
        return found;
    };
    let is_latest_document = query.version.is_none() && matches!(route, "manifest" | "playlist");
    let refresh = match &found {
        Err(Refusal(StatusCode::NOT_FOUND, _)) => !state.filler.known_missing(&content_id),
        // A mesh node learns new versions by replicating them, not by asking parents.
        Ok(_) if state.config.role == mhc_config::Role::Mesh => false,
        Ok(_) => is_latest_document && state.filler.manifest_due(&content_id),
        Err(_) => false,
    };
    if !refresh || state.config.role == mhc_config::Role::Origin {
        return found;
    }
    let check = fill::refresh_manifest(state, &content_id, None);
    let refreshed = if found.is_ok() {
        // The check runs in a task of its own, so giving up the wait does not cancel it.
        match tokio::time::timeout(REVALIDATE_WAIT, check).await {
            Ok(refreshed) => refreshed,
            Err(_) => {
                tracing::debug!(content = %content_id, "parents slow to answer; serving the held manifest while the check goes on");
                return found;
            }
        }
    } else {
        check.await
    };
    match refreshed {
        Ok(()) => lookup(state, id, query),
        Err(e) => {
            if found.is_ok() {
                tracing::debug!(content = %content_id, error = %e, "serving the held manifest (stale)");
            }
            found.map_err(|refusal| match e {
                FillError::Unavailable(reason) => Refusal(
                    StatusCode::BAD_GATEWAY,
                    format!("{id} is not held here and no parent could be reached: {reason}"),
                ),
                _ => refusal,
            })
        }
    }
}

/// The published version a content URL names in this node's catalog, or why there is none.
fn lookup(state: &NodeState, id: &str, query: &Query) -> Result<Arc<Published>, Refusal> {
    let id = ContentId::new(id.to_string()).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("malformed content id: {e}"),
        )
    })?;
    let found = match query.version {
        None => state.catalog.latest(&id),
        Some(Ok(v)) => state.catalog.version(&id, v),
        Some(Err(())) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "malformed version: v must be a positive integer".into(),
            ))
        }
    };
    found.ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("unknown content {id}")))
}

/// An error answer not yet rendered.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl Refusal {
    fn into_response(self) -> Response<Body> {
        error(self.0, &self.1)
    }
}

/// `Cache-Control` for documents: immutable when the URL names a version, short otherwise.
fn doc_cache(query: &Query) -> &'static str {
    if query.version.is_some() {
        CACHE_IMMUTABLE
    } else {
        CACHE_SHORT
    }
}

fn manifest(p: &Published, req: &HeaderMap, query: &Query) -> Response<Body> {
    if query.json {
        let value = json!({
            "manifest_hash": p.hash_hex,
            "manifest": p.signed.manifest,
            "signature": hex::encode(p.signed.signature),
        });
        let body = serde_json::to_vec_pretty(&value).expect("manifest serialises to JSON");
        return full(
            StatusCode::OK,
            "application/json",
            Bytes::from(body),
            doc_cache(query),
        );
    }
    if not_modified(req, &p.etag) {
        return not_modified_response(&p.etag, doc_cache(query));
    }
    let mut resp = full(
        StatusCode::OK,
        CONTENT_TYPE_MANIFEST,
        p.encoded.clone(),
        doc_cache(query),
    );
    resp.headers_mut().insert(header::ETAG, p.etag.clone());
    resp
}

fn playlist(p: &Published, req: &HeaderMap, query: &Query) -> Response<Body> {
    if not_modified(req, &p.playlist_etag) {
        return not_modified_response(&p.playlist_etag, doc_cache(query));
    }
    let mut resp = full(
        StatusCode::OK,
        CONTENT_TYPE_M3U8,
        p.playlist.clone(),
        doc_cache(query),
    );
    let h = resp.headers_mut();
    h.insert(header::ETAG, p.playlist_etag.clone());
    h.insert(X_MHC_MERKLE_ROOT, p.root_hex.clone());
    h.insert(X_MHC_CONTENT_VERSION, version_header(p));
    resp
}

fn version_header(p: &Published) -> HeaderValue {
    HeaderValue::from(p.manifest().version)
}

async fn init_segment(
    state: &Arc<NodeState>,
    p: &Arc<Published>,
    req: &HeaderMap,
) -> Response<Body> {
    let (Some(init), Some(headers)) = (&p.manifest().hls.init, p.init_headers()) else {
        return error(StatusCode::NOT_FOUND, "this rendition has no init segment");
    };
    let _ = init;
    blob_response(state, p, Part::Init, headers, CONTENT_TYPE_INIT_MP4, req).await
}

async fn segment(
    state: &Arc<NodeState>,
    p: &Arc<Published>,
    file: &str,
    req: &HeaderMap,
    viewer: Option<crate::reports::Viewer>,
) -> Response<Body> {
    let Some((index, ext)) = file.split_once('.') else {
        return error(
            StatusCode::BAD_REQUEST,
            "segment names are {index}.{extension}",
        );
    };
    if index.is_empty() || index.len() > 9 || !index.bytes().all(|b| b.is_ascii_digit()) {
        return error(
            StatusCode::BAD_REQUEST,
            "segment index must be a decimal number",
        );
    }
    let index: usize = index.parse().expect("checked digits");
    let format = p.manifest().hls.segment_format;
    if SegmentFormat::from_extension(ext) != Some(format) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("this rendition's segments are .{}", format.extension()),
        );
    }
    let Some(info) = p.manifest().segments.get(index) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "segment {index} does not exist (the content has {})",
                p.manifest().segments.len()
            ),
        );
    };
    let headers = p.segment_headers(index);
    let resp = blob_response(
        state,
        p,
        Part::Segment(index),
        headers,
        format.content_type(),
        req,
    )
    .await;
    if resp.status().is_success() {
        fill::prefetch(state, p, index);
        if let Some(viewer) = viewer {
            // A range request counts for its share of the segment's media time.
            let sent = content_length(&resp);
            let duration_ms = (u64::from(info.duration_ms) * sent.min(info.size))
                .checked_div(info.size)
                .unwrap_or(u64::from(info.duration_ms));
            state.reports.record_segment(
                p.manifest().content_id.as_str(),
                &viewer,
                sent,
                duration_ms,
            );
        }
    }
    resp
}

/// A segment or init segment: conditional request, store read, range.
async fn blob_response(
    state: &Arc<NodeState>,
    p: &Arc<Published>,
    part: Part,
    h: &SegmentHeaders,
    content_type: &'static str,
    req: &HeaderMap,
) -> Response<Body> {
    if not_modified(req, &h.etag) {
        return not_modified_response(&h.etag, CACHE_IMMUTABLE);
    }
    let hash = match part {
        Part::Init => p.manifest().hls.init.as_ref().map(|i| i.hash),
        Part::Segment(i) => p.manifest().segments.get(i).map(|s| s.hash),
    }
    .expect("callers checked the part exists");
    let bytes = match state.store.get(&hash).await {
        Ok(bytes) => bytes,
        Err(err @ StoreError::Corrupt(_)) if state.config.role == mhc_config::Role::Origin => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
        }
        Err(err) if state.config.role == mhc_config::Role::Origin => {
            tracing::error!(error = %err, "segment listed in a manifest is not readable");
            return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string());
        }
        // Not here (or found corrupt and moved aside): fill it, verified, from a parent.
        Err(_) => match fill::segment(state, p, part, None).await {
            Ok(bytes) => bytes,
            Err(FillError::NotFound(reason)) => {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("segment not found upstream: {reason}"),
                )
            }
            Err(e) => return error(StatusCode::BAD_GATEWAY, &e.to_string()),
        },
    };
    let len = bytes.len() as u64;
    let range = match req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => RangeOutcome::Full,
        Some(range) => {
            let honour = match req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
                None => true,
                Some(if_range) => if_range_matches(if_range, h.etag.to_str().unwrap_or_default()),
            };
            if honour {
                parse_range(range, len)
            } else {
                RangeOutcome::Full
            }
        }
    };
    let mut resp = match range {
        RangeOutcome::Full => full(StatusCode::OK, content_type, bytes, CACHE_IMMUTABLE),
        RangeOutcome::Partial(r) => {
            let part = bytes.slice(r.start as usize..r.end as usize);
            let mut resp = full(
                StatusCode::PARTIAL_CONTENT,
                content_type,
                part,
                CACHE_IMMUTABLE,
            );
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range(&r, len)).expect("digits"),
            );
            resp
        }
        RangeOutcome::Unsatisfiable => {
            let mut resp = full(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "text/plain; charset=utf-8",
                Bytes::new(),
                CACHE_NONE,
            );
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&unsatisfied_range(len)).expect("digits"),
            );
            return resp;
        }
    };
    let headers = resp.headers_mut();
    headers.insert(header::ETAG, h.etag.clone());
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(X_MHC_SEGMENT_HASH, h.hash_hex.clone());
    headers.insert(X_MHC_MERKLE_ROOT, p.root_hex.clone());
    headers.insert(X_MHC_MERKLE_PROOF, h.proof_hex.clone());
    headers.insert(X_MHC_SEGMENT_INDEX, h.index.clone());
    headers.insert(X_MHC_CONTENT_VERSION, version_header(p));
    resp
}

fn not_modified(req: &HeaderMap, etag: &HeaderValue) -> bool {
    req.get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| if_none_match_matches(v, etag.to_str().unwrap_or_default()))
}

fn not_modified_response(etag: &HeaderValue, cache: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

fn content_list(state: &NodeState) -> Response<Body> {
    let items: Vec<_> = state
        .catalog
        .list()
        .iter()
        .map(|p| {
            let m = p.manifest();
            json!({
                "id": m.content_id,
                "version": m.version,
                "title": m.title,
                "artist_id": m.artist_id,
                "media_kind": m.media_kind,
                "segment_format": m.hls.segment_format,
                "segments": m.segments.len(),
                "duration_ms": m.total_duration_ms(),
                "bytes": m.total_bytes(),
                "manifest_hash": p.hash_hex,
                "playlist": format!("/v1/content/{}/index.m3u8", m.content_id),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "content": items }), CACHE_SHORT)
}

/// `GET /play/{id}`: `302` to the playlist on the node [`crate::routing`] chooses for this
/// client; `503` with `Retry-After` when no node can serve the content now.
fn play(state: &NodeState, id: &str, headers: &HeaderMap, remote: SocketAddr) -> Response<Body> {
    let id = match ContentId::new(id) {
        Ok(id) => id,
        Err(e) => return malformed_id(&e),
    };
    routed(
        state,
        &id,
        headers,
        remote,
        Depth::Best(1),
        |route| match route.chosen() {
            Some(c) => redirect(&playlist_url(c.http, &id)),
            None => no_candidate(state, route),
        },
    )
}

/// `GET /v1/route/{id}`: the routing decision for this client, explained: the client address
/// and where it came from, its location and the source of that, and every candidate with its
/// distance, load, state and why it was or was not chosen. `503` (same body, `Retry-After`)
/// when no node can serve the content now.
fn route_answer(
    state: &NodeState,
    id: &str,
    headers: &HeaderMap,
    remote: SocketAddr,
) -> Response<Body> {
    let id = match ContentId::new(id) {
        Ok(id) => id,
        Err(e) => return malformed_id(&e),
    };
    routed(state, &id, headers, remote, Depth::All, |route| {
        if route.chosen().is_none() {
            return no_candidate(state, route);
        }
        json_response(StatusCode::OK, &route.to_json(), CACHE_NONE)
    })
}

/// `GET /v1/content/{id}/master.m3u8`: an HLS master playlist listing the rendition on the best
/// three nodes for this client as redundant streams (same `BANDWIDTH`, `AVERAGE-BANDWIDTH` and
/// `CODECS`, different URIs), so the player fails over by itself. The attributes come from the
/// manifest: a node that does not hold it redirects to the best node that does.
fn master(state: &NodeState, id: &str, headers: &HeaderMap, remote: SocketAddr) -> Response<Body> {
    let id = match ContentId::new(id) {
        Ok(id) => id,
        Err(e) => return malformed_id(&e),
    };
    let published = state.catalog.latest(&id);
    // Without the manifest, the best node holding it is looked for: rank them all.
    let depth = match &published {
        Some(_) => Depth::Best(MASTER_STREAMS),
        None => Depth::All,
    };
    routed(state, &id, headers, remote, depth, |route| {
        if route.chosen().is_none() {
            return no_candidate(state, route);
        }
        let Some(p) = &published else {
            let holder = route
                .candidates
                .iter()
                .find(|c| c.is_eligible() && c.holds && !c.is_self);
            return match holder {
                Some(h) => redirect(&format!("http://{}/v1/content/{id}/master.m3u8", h.http)),
                None => {
                    let mut resp = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "no live node that can serve {id} holds its manifest, which the \
                             master playlist's attributes come from"
                        ),
                    );
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, retry_after(state));
                    resp
                }
            };
        };
        let hls = &p.manifest().hls;
        let mut inf = format!("#EXT-X-STREAM-INF:BANDWIDTH={}", hls.bandwidth_bps.max(1));
        if hls.average_bandwidth_bps > 0 {
            inf.push_str(&format!(",AVERAGE-BANDWIDTH={}", hls.average_bandwidth_bps));
        }
        if let Some(codecs) = hls.codecs.as_deref().filter(|c| !c.contains('"')) {
            inf.push_str(&format!(",CODECS=\"{codecs}\""));
        }
        let mut body = format!(
            "#EXTM3U\n## mhc: {id} version {}, the same rendition on the best nodes for this \
             client, best first (redundant streams)\n",
            p.manifest().version
        );
        for c in routing::best(route.candidates, MASTER_STREAMS) {
            body.push_str(&format!(
                "## {} ({}, region {})\n{inf}\n{}\n",
                c.peer_id,
                c.role.as_str(),
                c.region,
                playlist_url(c.http, &id)
            ));
        }
        full(
            StatusCode::OK,
            CONTENT_TYPE_M3U8,
            Bytes::from(body),
            CACHE_NONE,
        )
    })
}

/// Streams a master playlist lists (the issue asks for the best three: enough for a player to
/// survive two node failures, few enough that all are near).
const MASTER_STREAMS: usize = 3;

fn malformed_id(e: &mhc_manifest::InvalidContentId) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        &format!("malformed content id: {e}"),
    )
}

fn playlist_url(http: &str, id: &ContentId) -> String {
    format!("http://{http}/v1/content/{id}/index.m3u8")
}

fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            h.insert(header::LOCATION, v);
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unrepresentable location",
            )
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_NONE));
    resp
}

/// `Retry-After` of a `503` without candidates: one heartbeat period (at least a second), the
/// soonest a returning member can be heard again.
fn retry_after(state: &NodeState) -> HeaderValue {
    let period = state.config.cluster.heartbeat_interval;
    HeaderValue::from(period.as_secs_f64().ceil().max(1.0) as u64)
}

/// `503` for a decision without candidates: the full explanation, an error line and
/// `Retry-After`.
fn no_candidate(state: &NodeState, route: &Route<'_, '_>) -> Response<Body> {
    let mut body = route.to_json();
    body["error"] = json!(format!(
        "no live node can serve {} now: every candidate is dead, suspect, or may not serve it \
         (see candidates)",
        route.content_id
    ));
    body["status"] = json!(503);
    let mut resp = json_response(StatusCode::SERVICE_UNAVAILABLE, &body, CACHE_NONE);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, retry_after(state));
    resp
}

/// A routing decision and its ranked candidates, while the membership table is locked.
struct Route<'r, 'a> {
    content_id: &'r ContentId,
    decision: &'r routing::Decision<'a>,
    candidates: &'r [routing::Candidate<'a>],
    mode: WireMode,
}

impl Route<'_, '_> {
    fn chosen(&self) -> Option<&routing::Candidate<'_>> {
        routing::chosen(self.candidates)
    }

    fn to_json(&self) -> serde_json::Value {
        let d = self.decision;
        let chosen = self.chosen();
        let record = d.geo.record;
        let candidates: Vec<_> = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "peer_id": c.peer_id.to_string(),
                    "self": c.is_self,
                    "role": c.role.as_str(),
                    "region": c.region,
                    "location": c.location.map(|(lat, lon)| json!({"lat": lat, "lon": lon})),
                    "distance_km": routing::round_km(c.distance_km),
                    "state": c.state.as_str(),
                    "last_heard_ms": c.silent_for.as_millis() as u64,
                    "load": {
                        "connections_open": c.load.connections,
                        "bytes_out_per_s": c.load.bytes_out_per_s,
                    },
                    "holds_content": c.holds,
                    "downlink_receiver": c.receiver,
                    "fills_on_demand": c.is_eligible() && c.fills_on_demand(),
                    "eligible": c.is_eligible(),
                    "rank": c.is_eligible().then_some(i + 1),
                    "chosen": chosen.is_some_and(|ch| ch.peer_id == c.peer_id),
                    "reason": c.reason(chosen, &d.basis),
                    "playlist": playlist_url(c.http, self.content_id),
                })
            })
            .collect();
        json!({
            "content_id": self.content_id,
            "mode": self.mode.as_str(),
            "outcome": d.outcome.as_str(),
            "ranking": d.basis.to_string(),
            "client": {
                "address": d.client.ip.to_string(),
                "peer": d.client.peer.to_string(),
                "address_source": d.client.source.to_string(),
                "location": d.geo.location().map(|(lat, lon)| json!({"lat": lat, "lon": lon})),
                "country": record.and_then(|r| r.country).map(str::to_ascii_uppercase),
                "continent": record.and_then(|r| r.continent).map(str::to_ascii_uppercase),
                "city": record.and_then(|r| r.city),
                "location_source": d.geo.source.to_string(),
            },
            "chosen": chosen.map(|c| json!({
                "peer_id": c.peer_id.to_string(),
                "playlist": playlist_url(c.http, self.content_id),
            })),
            "candidates": candidates,
        })
    }
}

/// Decides where this client should play `id` and hands the decision to `answer`, with the
/// membership table locked (so the candidates can borrow from it; answers only format).
/// Unknown content anywhere in the cluster is `404` and no decision.
fn routed(
    state: &NodeState,
    id: &ContentId,
    headers: &HeaderMap,
    remote: SocketAddr,
    depth: Depth,
    answer: impl FnOnce(&Route<'_, '_>) -> Response<Body>,
) -> Response<Body> {
    let db = state.geo.current();
    let load_error;
    let geo = match &db {
        Some(db) => GeoAvailability::Loaded(db),
        None if state.config.geo.database.is_some() => {
            load_error = state
                .geo
                .status()
                .last_error
                .unwrap_or_else(|| "not loaded yet".to_owned());
            GeoAvailability::LoadFailed(&load_error)
        }
        None => GeoAvailability::NotConfigured,
    };
    let mode = state.wire_mode();
    let settings = routing::Settings {
        geo,
        trusted_proxies: &state.config.geo.trusted_proxies,
        home_region: &state.config.region,
        mode,
    };
    let self_http = self_http_addr(state, headers);
    let peer_id = state.identity.peer_id();
    let this = routing::Candidate::this_node(
        &peer_id,
        WireRole::from(state.config.role),
        &state.config.region,
        state.config.location.as_ref().map(|l| (l.lat, l.lon)),
        &self_http,
        Load {
            connections: state.metrics.connections_open().max(0) as u32,
            // Measured per heartbeat by the control plane, not here; 0 for this node.
            bytes_out_per_s: 0,
            cache_fill_permille: 0,
        },
        state.catalog.latest(id).is_some(),
    )
    .receiving_downlink(state.config.satellite.downlink.is_some());
    let membership = state.cluster.membership.lock().expect("membership lock");
    let mut out: Vec<routing::Candidate<'_>> = routing::take_scratch();
    let decision = routing::decide(
        &settings,
        remote.ip(),
        headers
            .get_all("x-forwarded-for")
            .iter()
            .map(HeaderValue::as_bytes),
        this,
        membership.members(),
        id.as_str(),
        Instant::now(),
        depth,
        &mut out,
    );
    let known = decision.held_anywhere
        || state
            .cluster
            .known_contents()
            .iter()
            .any(|k| k.id == id.as_str());
    let resp = if known {
        state
            .metrics
            .record_routing_decision(decision.outcome.as_str());
        answer(&Route {
            content_id: id,
            decision: &decision,
            candidates: &out,
            mode,
        })
    } else {
        error(
            StatusCode::NOT_FOUND,
            &format!("unknown content {id}: no node of the cluster holds or announced it"),
        )
    };
    drop(decision);
    routing::return_scratch(out);
    resp
}

/// This node's viewer address as other machines reach it: the bound address, or, when bound to
/// an unspecified address, the `Host` the client used.
fn self_http_addr(state: &NodeState, headers: &HeaderMap) -> String {
    if !state.http_addr.ip().is_unspecified() {
        return state.http_addr.to_string();
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map_or_else(|| state.http_addr.to_string(), |a| a.to_string())
}

fn cluster(state: &NodeState) -> Response<Body> {
    let (alive, suspect, dead) = state.cluster.counts();
    let body = json!({
        "self": state.self_description(),
        "mode": state.mode_name(),
        "counts": { "alive": alive + 1, "suspect": suspect, "dead": dead },
        "members": state.cluster.members_json(),
        "announced": state.cluster.known_contents().iter().take(50)
            .map(|k| json!({
                "id": k.id,
                "version": k.version,
                "manifest_hash": hex::encode(k.manifest_hash),
                "announced_by": k.announced_by.to_string(),
                "sent_at_ms": k.sent_at_ms,
                "received_at_ms": k.received_at_ms,
            }))
            .collect::<Vec<_>>(),
        "gossip_peers": state.cluster.peer_scores().iter()
            .map(|(p, s)| json!({"peer_id": p.to_string(), "score": s}))
            .collect::<Vec<_>>(),
    });
    json_response(StatusCode::OK, &body, CACHE_NONE)
}

fn readyz(state: &NodeState) -> Response<Body> {
    if state.is_ready() {
        text(StatusCode::OK, "ready\n", CACHE_NONE)
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting or stopping\n",
            CACHE_NONE,
        )
    }
}

fn metrics(state: &NodeState) -> Response<Body> {
    let mut body = state.metrics.render(&state.gauges());
    state.satellite.render(&mut body);
    crate::plugins::render_metrics(state, &mut body);
    full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(body),
        CACHE_NONE,
    )
}

fn preflight() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(CORS_ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(CORS_MAX_AGE_S),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_NONE));
    resp
}

fn add_cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CORS_EXPOSE_HEADERS),
    );
}

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    cache: &'static str,
) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

fn text(status: StatusCode, body: &'static str, cache: &'static str) -> Response<Body> {
    full(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
        cache,
    )
}

fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
    cache: &'static str,
) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    body.push(b'\n');
    full(status, "application/json", Bytes::from(body), cache)
}

/// An error answer: JSON `{"error": "...", "status": N}`, never cached.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error": message, "status": status.as_u16() }),
        CACHE_NONE,
    )
}
