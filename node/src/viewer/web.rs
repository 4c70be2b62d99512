//! The pages a person opens on any serving node: `/watch/{id}` (a player that checks every
//! segment against the publisher's signed manifest before the browser decodes it) and `/ui`
//! (the cluster as this node sees it), with their assets under `/assets/`, and
//! `POST /v1/reports/bad-segment`, where a watch page reports a node that sent bytes which
//! did not verify.
//!
//! The assets are built from `web/` (`npm run build`: minified, gzip and brotli) and committed
//! in `web/dist/`, so building the node needs no Node.js; they are embedded here. Pages carry
//! a strict Content-Security-Policy (scripts only from this node, no inline code; WebAssembly
//! compiled for the page's BLAKE3), asset URLs carry a digest of their bytes and are cached
//! as immutable, and a compressed form is sent to clients that accept it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use mhc_manifest::ContentId;
use mhc_transport::headers::{CACHE_IMMUTABLE, CACHE_NONE};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use super::route::malformed_id;
use super::Viewer;
use crate::http::{error, json_response, read_limited, Body};

/// One embedded asset: its bytes and their compressed forms.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    raw: &'static [u8],
    gzip: &'static [u8],
    brotli: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            raw: include_bytes!(concat!("../../../web/dist/", $name)),
            gzip: include_bytes!(concat!("../../../web/dist/", $name, ".gz")),
            brotli: include_bytes!(concat!("../../../web/dist/", $name, ".br")),
        }
    };
}

static ASSETS: [Asset; 3] = [
    asset!("watch.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
];

/// The first 16 hex digits of each asset's BLAKE3: its URLs change when its bytes do.
static DIGESTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| blake3::hash(a.raw).to_hex()[..16].to_owned())
        .collect()
});

fn asset_url(name: &str) -> String {
    let i = ASSETS
        .iter()
        .position(|a| a.name == name)
        .expect("an embedded asset");
    format!("/assets/{name}?v={}", DIGESTS[i])
}

/// Largest bad-segment report read.
const MAX_REPORT_BYTES: usize = 2048;
/// Bad-segment reports kept for `/ui` (the newest).
const KEPT_REPORTS: usize = 32;
/// Longest text kept from one report's fields.
const MAX_FIELD_CHARS: usize = 200;
/// Most member addresses named in a watch page's `connect-src`; past it, any http(s) origin.
const MAX_CONNECT_SOURCES: usize = 64;

/// The bad-segment reports this node received lately (bounded: the oldest go first).
#[derive(Debug, Default)]
pub struct BadSegmentReports(Mutex<VecDeque<serde_json::Value>>);

/// What a watch page reports (`POST /v1/reports/bad-segment`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BadSegmentReport {
    content: String,
    version: Option<u64>,
    segment: Option<i64>,
    node: String,
    reason: String,
}

fn clip(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD_CHARS)
        .collect()
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: HTML that is never cached (it names the current assets) and the page's policy.
fn page(html: String, csp: &str) -> Response<Body> {
    let len = html.len();
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Fails closed: a policy that cannot be sent becomes one that allows nothing.
    let csp = HeaderValue::from_str(csp).unwrap_or(HeaderValue::from_static("default-src 'none'"));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The policy both pages share; `connect` is where their scripts may fetch from.
fn policy(connect: &str, wasm: bool) -> String {
    format!(
        "default-src 'none'; script-src 'self'{}; style-src 'self'; img-src 'self' data:; \
         media-src 'self' blob:; connect-src {connect}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        if wasm { " 'wasm-unsafe-eval'" } else { "" }
    )
}

/// The encoding to send: brotli, then gzip, when the client accepts it (`q=0` refuses).
fn accepted_encoding(headers: &HeaderMap) -> Option<&'static str> {
    let accepts = |name: &str| {
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| {
                let mut parts = item.split(';').map(str::trim);
                let coding = parts.next().unwrap_or_default();
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                coding.eq_ignore_ascii_case(name) && !refused
            })
    };
    if accepts("br") {
        Some("br")
    } else if accepts("gzip") {
        Some("gzip")
    } else {
        None
    }
}

impl Viewer {
    /// `GET /assets/{name}`: an embedded asset, immutable when asked for by its digest.
    pub(super) fn asset(
        &self,
        name: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
            return error(StatusCode::NOT_FOUND, "no such asset");
        };
        let current = query.is_some_and(|q| {
            q.split('&')
                .any(|p| p.strip_prefix("v=") == Some(DIGESTS[i].as_str()))
        });
        let (body, encoding) = match accepted_encoding(headers) {
            Some("br") => (asset.brotli, Some("br")),
            Some(_) => (asset.gzip, Some("gzip")),
            None => (asset.raw, None),
        };
        let mut resp = Response::new(Full::new(Bytes::from_static(body)));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if current { CACHE_IMMUTABLE } else { "no-cache" }),
        );
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(e) = encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", DIGESTS[i])) {
            h.insert(header::ETAG, etag);
        }
        resp
    }

    /// `GET /watch/{id}`: the verifying player for content `id`, trusting the publishers this
    /// node trusts.
    pub(super) fn watch_page(&self, id: &str) -> Response<Body> {
        let id = match ContentId::new(id) {
            Ok(id) => id,
            Err(e) => return malformed_id(&e),
        };
        let publishers: Vec<String> = self
            .core
            .catalog
            .trusted()
            .iter()
            .map(|k| hex::encode(k.as_bytes()))
            .collect();
        let config = json!({
            "content": id.as_str(),
            "publishers": publishers,
            "manifest": format!("/v1/content/{id}/manifest"),
            "master": format!("/v1/content/{id}/master.m3u8"),
            "report": "/v1/reports/bad-segment",
        });
        let title = self
            .core
            .catalog
            .latest(&id)
            .map_or_else(|| id.as_str().to_owned(), |p| p.manifest().title.clone());
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <link rel=\"icon\" href=\"data:,\"><title>{title} — mhc</title>\
             <meta name=\"mhc-watch\" content=\"{config}\">\
             <link rel=\"stylesheet\" href=\"{css}\">\
             <script src=\"{js}\" defer></script></head>\n<body><main>\
             <h1 id=\"title\">{title}</h1>\
             <video id=\"player\" controls muted playsinline></video>\
             <p id=\"status\" role=\"status\" aria-live=\"polite\">Loading the player…</p>\
             <dl><dt>Segments verified</dt><dd id=\"verified\">0</dd>\
             <dt>Node serving</dt><dd id=\"node\">–</dd>\
             <dt>Failures</dt><dd id=\"failed\">0</dd></dl>\
             <ul id=\"failures\"></ul>\
             <p><small>Every segment is checked in this browser against the publisher's \
             signature before it is played.</small></p>\
             </main></body></html>\n",
            title = escape_html(&title),
            config = escape_html(&config.to_string()),
            css = asset_url("style.css"),
            js = asset_url("watch.js"),
        );
        page(html, &policy(&self.connect_sources(), true))
    }

    /// The origins a watch page may fetch from: this node and every member's viewer plane
    /// (the master playlist's redundant streams point at them).
    fn connect_sources(&self) -> String {
        let mut sources = String::from("'self'");
        let membership = self.cluster.membership();
        for (n, m) in membership.members().enumerate() {
            let addr = &m.heartbeat.addrs.http;
            // Only what can stand in a policy: host:port characters.
            if addr.is_empty()
                || !addr
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"[]:.-".contains(&b))
            {
                continue;
            }
            if n >= MAX_CONNECT_SOURCES {
                return "'self' http: https:".to_owned();
            }
            let _ = write!(sources, " http://{addr}");
        }
        sources
    }

    /// `GET /ui`: the operator's view of the cluster.
    pub(super) fn ui_page(&self) -> Response<Body> {
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <link rel=\"icon\" href=\"data:,\"><title>mhc — {role} {region}</title>\
             <link rel=\"stylesheet\" href=\"{css}\">\
             <script src=\"{js}\" defer></script></head>\n<body><main>\
             <h1>mhc cluster, as {role} {region} sees it</h1>\
             <p id=\"updated\">loading…</p>\
             <dl id=\"self\"></dl>\
             <h2>Members</h2><table><thead><tr><th>Peer</th><th>Role</th><th>Region</th>\
             <th>State</th><th>Mode</th><th>Load</th><th>Last seen</th>\
             <th>Certificate until</th><th>Viewer address</th></tr></thead>\
             <tbody id=\"members\"></tbody></table>\
             <h2>Content</h2><table><thead><tr><th>Watch</th><th>Title</th><th>Version</th>\
             <th>Held by</th></tr></thead><tbody id=\"contents\"></tbody></table>\
             <h2>Where would a viewer go?</h2>\
             <form id=\"route-form\"><select id=\"route-content\"></select> \
             <input id=\"route-ip\" placeholder=\"viewer IP address (empty: yours)\"> \
             <button>Explain</button></form><div id=\"route-answer\"></div>\
             <h2>Bad segments reported here</h2><ul id=\"bad-segments\"></ul>\
             </main></body></html>\n",
            role = escape_html(self.core.config.role.as_str()),
            region = escape_html(&self.core.config.region),
            css = asset_url("style.css"),
            js = asset_url("ui.js"),
        );
        page(html, &policy("'self'", false))
    }

    /// `POST /v1/reports/bad-segment`: a watch page saw bytes from `node` that did not verify.
    /// Counted, logged and kept (the newest few) for `/ui`; the sender is not trusted, so
    /// nothing else follows from it.
    /// Only `application/json` is taken: a page of another site cannot send that without a
    /// CORS preflight, which only GET, HEAD and OPTIONS pass.
    pub(super) async fn bad_segment_report<B>(
        &self,
        req: Request<B>,
        remote: std::net::SocketAddr,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let metrics = &self.core.metrics;
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            metrics.record_bad_segment_report("malformed");
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a report is application/json",
            );
        }
        let body = match read_limited(req.into_body(), MAX_REPORT_BYTES).await {
            Ok(body) => body,
            Err(e) => {
                metrics.record_bad_segment_report("too_large");
                return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("report body: {e}"));
            }
        };
        let report: BadSegmentReport = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                metrics.record_bad_segment_report("malformed");
                return error(StatusCode::BAD_REQUEST, &format!("malformed report: {e}"));
            }
        };
        metrics.record_bad_segment_report("accepted");
        let entry = json!({
            "content": clip(&report.content),
            "version": report.version,
            "segment": report.segment,
            "node": clip(&report.node),
            "reason": clip(&report.reason),
            "reporter": remote.ip().to_string(),
            "received_at_ms": self.core.clock.now_ms(),
        });
        tracing::warn!(
            content = %entry["content"], segment = ?report.segment, node = %entry["node"],
            reason = %entry["reason"], reporter = %remote.ip(),
            "a viewer reports a segment that did not verify"
        );
        let mut kept = self.bad_segments.0.lock();
        if kept.len() == KEPT_REPORTS {
            kept.pop_front();
        }
        kept.push_back(entry);
        json_response(
            StatusCode::ACCEPTED,
            &json!({ "accepted": true }),
            CACHE_NONE,
        )
    }

    /// The bad-segment reports kept, newest last.
    pub(super) fn bad_segment_reports(&self) -> serde_json::Value {
        serde_json::Value::Array(self.bad_segments.0.lock().iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_chooses_the_encoding_and_q0_refuses() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepted_encoding(&h)
        };
        assert_eq!(with("gzip, deflate, br"), Some("br"));
        assert_eq!(with("gzip"), Some("gzip"));
        assert_eq!(with("br;q=0, gzip;q=0.5"), Some("gzip"));
        assert_eq!(with("identity"), None);
        assert_eq!(accepted_encoding(&HeaderMap::new()), None);
    }

    #[test]
    fn pages_escape_what_they_embed() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn every_asset_is_embedded_with_its_compressed_forms() {
        for a in &ASSETS {
            assert!(!a.raw.is_empty(), "{}", a.name);
            assert!(a.gzip.len() < a.raw.len() && a.brotli.len() < a.raw.len());
        }
        assert!(asset_url("watch.js").starts_with("/assets/watch.js?v="));
    }
}
