//! Content URLs: signed manifests, playlists, init and media segments with validators, ranges
//! and proof headers; filling from parents what this node lacks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use mhc_manifest::{ContentId, SegmentFormat};
use mhc_transport::headers::{
    CACHE_IMMUTABLE, CACHE_NONE, CACHE_SHORT, CONTENT_TYPE_INIT_MP4, CONTENT_TYPE_M3U8,
    CONTENT_TYPE_MANIFEST, X_MHC_CONTENT_VERSION, X_MHC_MERKLE_PROOF, X_MHC_MERKLE_ROOT,
    X_MHC_SEGMENT_HASH, X_MHC_SEGMENT_INDEX,
};
use mhc_transport::{
    content_range, if_none_match_matches, if_range_matches, parse_range, unsatisfied_range,
    RangeOutcome,
};
use serde_json::json;

use super::{Query, Viewer};
use crate::core::catalog::{Published, SegmentHeaders};
use crate::core::store::{Sendable, StoreError};
use crate::fill::{FillError, Part};
use crate::http::{content_length, error, file_response, full, json_response, Body, FileBody};
use mhc_transport::ErrorOrigin;

/// Longest a viewer waits for a due check of a manifest this node already holds. A parent
/// that answers at all answers in a round trip or two; one that died without closing its
/// connection is only noticed at the QUIC request timeout (10 s), and players give up on a
/// playlist at about that (hls.js: 10 s). Past this wait the held copy, signed and still
/// valid, is served (stale-while-revalidate) and the check finishes in the background.
const REVALIDATE_WAIT: Duration = Duration::from_secs(1);

impl Viewer {
    /// The published version a content URL names; an edge (or mesh node) that lacks it, or whose
    /// copy of a "latest" document is due for a check, asks its parents first. When every parent is
    /// unreachable, what is held is served (stale but signed).
    pub(super) async fn resolve(
        &self,
        id: &str,
        query: &Query,
        route: &'static str,
    ) -> Result<Arc<Published>, Refusal> {
        let found = self.lookup(id, query);
        let Ok(content_id) = ContentId::new(id.to_string()) else {
            return found;
        };
        let is_latest_document =
            query.version.is_none() && matches!(route, "manifest" | "playlist");
        let policy = self.core.policy();
        let refresh = match &found {
            Err(Refusal::Status(StatusCode::NOT_FOUND, _)) => {
                !self.filler.known_missing(&content_id)
            }
            Ok(_) => {
                is_latest_document
                    && policy.revalidates_with_parents()
                    && self.filler.manifest_due(&content_id)
            }
            Err(_) => false,
        };
        if !refresh || !policy.fills_from_parents() {
            return found;
        }
        let check = self.filler.refresh_manifest(&content_id, None);
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
            Ok(()) => self.lookup(id, query),
            Err(e) => {
                if found.is_ok() {
                    tracing::debug!(content = %content_id, error = %e, "serving the held manifest (stale)");
                }
                found.map_err(|refusal| match &e {
                    FillError::Unavailable { detail, .. } => Refusal::Fill(
                        e.clone(),
                        format!("{id} is not held here and no parent could be reached: {detail}"),
                    ),
                    _ => refusal,
                })
            }
        }
    }

    /// The published version a content URL names in this node's catalog, or why there is none.
    pub(super) fn lookup(&self, id: &str, query: &Query) -> Result<Arc<Published>, Refusal> {
        let id = ContentId::new(id.to_string()).map_err(|e| {
            Refusal::Status(
                StatusCode::BAD_REQUEST,
                format!("malformed content id: {e}"),
            )
        })?;
        let found = match query.version {
            None => self.core.catalog.latest(&id),
            Some(Ok(v)) => self.core.catalog.version(&id, v),
            Some(Err(())) => {
                return Err(Refusal::Status(
                    StatusCode::BAD_REQUEST,
                    "malformed version: v must be a positive integer".into(),
                ))
            }
        };
        found.ok_or_else(|| Refusal::Status(StatusCode::NOT_FOUND, format!("unknown content {id}")))
    }

    pub(super) async fn init_segment(
        &self,
        p: &Arc<Published>,
        req: &HeaderMap,
        sends_files: bool,
    ) -> Response<Body> {
        let (Some(init), Some(headers)) = (&p.manifest().hls.init, p.init_headers()) else {
            return error(StatusCode::NOT_FOUND, "this rendition has no init segment");
        };
        let _ = init;
        self.blob_response(
            p,
            Part::Init,
            headers,
            CONTENT_TYPE_INIT_MP4,
            req,
            sends_files,
        )
        .await
    }

    pub(super) async fn segment(
        &self,
        p: &Arc<Published>,
        file: &str,
        req: &HeaderMap,
        sends_files: bool,
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
        let resp = self
            .blob_response(
                p,
                Part::Segment(index),
                headers,
                format.content_type(),
                req,
                sends_files,
            )
            .await;
        if resp.status().is_success() {
            self.filler.prefetch(p, index);
            if let Some(viewer) = viewer {
                // A range request counts for its share of the segment's media time.
                let sent = content_length(&resp);
                let duration_ms = (u64::from(info.duration_ms) * sent.min(info.size))
                    .checked_div(info.size)
                    .unwrap_or(u64::from(info.duration_ms));
                self.reports.record_segment(
                    p.manifest().content_id.as_str(),
                    &viewer,
                    sent,
                    duration_ms,
                );
            }
        }
        resp
    }

    /// A segment or init segment: conditional request, store read, range. With `sends_files`
    /// (the connection's writer sends files, [`crate::http::SendsFiles`]) a verified blob
    /// file is answered as a [`FileBody`].
    pub(super) async fn blob_response(
        &self,
        p: &Arc<Published>,
        part: Part,
        h: &SegmentHeaders,
        content_type: &'static str,
        req: &HeaderMap,
        sends_files: bool,
    ) -> Response<Body> {
        if not_modified(req, &h.etag) {
            return not_modified_response(&h.etag, CACHE_IMMUTABLE);
        }
        let hash = match part {
            Part::Init => p.manifest().hls.init.as_ref().map(|i| i.hash),
            Part::Segment(i) => p.manifest().segments.get(i).map(|s| s.hash),
        }
        .expect("callers checked the part exists");
        let found = if sends_files {
            self.core.store.get_sendable(&hash).await
        } else {
            self.core.store.get(&hash).await.map(Sendable::Bytes)
        };
        let body = match found {
            Ok(body) => body,
            // An origin holds what it publishes: a blob it cannot read is lost, not missing.
            Err(err @ StoreError::Corrupt(_)) if !self.core.policy().fills_from_parents() => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
            }
            Err(err) if !self.core.policy().fills_from_parents() => {
                tracing::error!(error = %err, "segment listed in a manifest is not readable");
                return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string());
            }
            // Not here (or found corrupt and moved aside): fill it, verified, from a parent.
            Err(_) => match self.filler.segment(p, part, None).await {
                Ok(bytes) => Sendable::Bytes(bytes),
                Err(FillError::NotFound(reason)) => {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("segment not found upstream: {reason}"),
                    )
                }
                Err(e) => return fill_failure(&e, &e.to_string()),
            },
        };
        let len = match &body {
            Sendable::File { stamp, .. } => stamp.len(),
            Sendable::Bytes(bytes) => bytes.len() as u64,
        };
        let range = match req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            None => RangeOutcome::Full,
            Some(range) => {
                let honour = match req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
                    None => true,
                    Some(if_range) => {
                        if_range_matches(if_range, h.etag.to_str().unwrap_or_default())
                    }
                };
                if honour {
                    parse_range(range, len)
                } else {
                    RangeOutcome::Full
                }
            }
        };
        let body_of = |status, r: std::ops::Range<u64>| match &body {
            Sendable::File { file, stamp } => file_response(
                status,
                content_type,
                FileBody {
                    file: Arc::clone(file),
                    offset: r.start,
                    len: r.end - r.start,
                    stamp: *stamp,
                },
                CACHE_IMMUTABLE,
            ),
            Sendable::Bytes(bytes) => full(
                status,
                content_type,
                bytes.slice(r.start as usize..r.end as usize),
                CACHE_IMMUTABLE,
            ),
        };
        let mut resp = match range {
            RangeOutcome::Full => body_of(StatusCode::OK, 0..len),
            RangeOutcome::Partial(r) => {
                let mut resp = body_of(StatusCode::PARTIAL_CONTENT, r.start..r.end);
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

    pub(super) fn content_list(&self) -> Response<Body> {
        let items: Vec<_> = self
            .core
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
}

/// An error answer not yet rendered.
#[derive(Debug)]
pub(super) enum Refusal {
    /// This status and message.
    Status(StatusCode, String),
    /// A failed fill, answered as [`fill_failure`] says.
    Fill(FillError, String),
}

impl Refusal {
    pub(super) fn into_response(self) -> Response<Body> {
        match self {
            Refusal::Status(status, message) => error(status, &message),
            Refusal::Fill(e, message) => fill_failure(&e, &message),
        }
    }
}

/// The answer when filling from parents failed: `503` with `Retry-After` when asking again
/// may help (parents unreachable or busy, none alive now), `502` when a parent broke the
/// protocol or sent what fails verification, `500` when this node failed.
pub(super) fn fill_failure(e: &FillError, message: &str) -> Response<Body> {
    tracing::debug!(origin = ?e.origin(), retryable = e.is_retryable(), error = %e, "fill failed");
    if e.origin() == ErrorOrigin::Local && matches!(e, FillError::Local(_)) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, message);
    }
    if !e.is_retryable() {
        return error(StatusCode::BAD_GATEWAY, message);
    }
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, message);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// `Cache-Control` for documents: immutable when the URL names a version, short otherwise.
pub(super) fn doc_cache(query: &Query) -> &'static str {
    if query.version.is_some() {
        CACHE_IMMUTABLE
    } else {
        CACHE_SHORT
    }
}

pub(super) fn manifest(p: &Published, req: &HeaderMap, query: &Query) -> Response<Body> {
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

pub(super) fn playlist(p: &Published, req: &HeaderMap, query: &Query) -> Response<Body> {
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

pub(super) fn version_header(p: &Published) -> HeaderValue {
    HeaderValue::from(p.manifest().version)
}

pub(super) fn not_modified(req: &HeaderMap, etag: &HeaderValue) -> bool {
    req.get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| if_none_match_matches(v, etag.to_str().unwrap_or_default()))
}

pub(super) fn not_modified_response(etag: &HeaderValue, cache: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}
