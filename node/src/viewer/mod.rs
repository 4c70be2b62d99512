//! The viewer plane: HLS playlists, segments, manifests, routing answers and operator endpoints
//! over HTTP/1.1 and HTTP/2 (see the "Viewer HTTP API" table of ARCHITECTURE.md).
//!
//! Every answer is built from memory (catalog entries and RAM-tier `Bytes`), carries CORS headers
//! so browser players on other origins can read it, and is counted in the metrics by route and
//! status. Malformed paths are `400`, unknown content `404`; nothing here panics on input.
//!
//! [`Viewer::handle`] dispatches; [`content`] answers content URLs (documents, segments,
//! ranges), [`route`] routing answers (`/play`, `/v1/route`, master playlists), [`ops`] what
//! operators and monitoring ask (`/healthz`, `/readyz`, `/metrics`, `/v1/cluster`, signed
//! commands, plugin routes).

mod content;
mod ops;
mod route;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use mhc_transport::headers::{
    ALLOW_METHODS, CACHE_NONE, CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, CORS_MAX_AGE_S,
};

use crate::control::ClusterHandle;
use crate::core::Core;
use crate::fill::Filler;
use crate::geo::SharedGeo;
use crate::http::{content_length, error, text, Body, FileBody, SendsFiles};
use crate::mesh::MeshPlane;
use crate::plugins::Plugins;
use crate::reports::Reports;
use crate::status::NodeStatus;
use content::{manifest, playlist};
pub use web::BadSegmentReports;

/// Longest request path looked at; anything longer is malformed.
const MAX_PATH_LEN: usize = 512;

/// The viewer plane of one node: the core and the handles its answers need (built by the
/// composition root).
#[derive(Debug)]
pub struct Viewer {
    /// The shared state.
    pub core: Arc<Core>,
    /// Fills what this node lacks.
    pub filler: Arc<Filler>,
    /// Members and announcements, for routing.
    pub cluster: ClusterHandle,
    /// The geo database.
    pub geo: SharedGeo,
    /// Play counting.
    pub reports: Arc<Reports>,
    /// The mesh plane (recent plays).
    pub mesh: Arc<MeshPlane>,
    /// The origin's plugins (their admin routes and metrics).
    pub plugins: Option<Arc<Plugins>>,
    /// This node as operators see it.
    pub status: NodeStatus,
    /// What watch pages reported lately.
    pub bad_segments: BadSegmentReports,
}

impl Viewer {
    /// Answers one viewer request and records it in the metrics.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, remote: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let is_head = req.method() == Method::HEAD;
        let (route, mut resp) = if req.method() == Method::POST
            && req.uri().path() == "/v1/emergency"
        {
            ("emergency", self.emergency_command(req).await)
        } else if req.method() == Method::POST && req.uri().path() == "/v1/revocations" {
            ("revocation", self.revocation(req).await)
        } else if req.method() == Method::POST && req.uri().path() == "/v1/reports/bad-segment" {
            (
                "bad_segment_report",
                self.bad_segment_report(req, remote).await,
            )
        } else if req.uri().path().starts_with("/admin/plugins/") {
            ("admin", self.plugin_admin(req, remote).await)
        } else {
            self.route(&req, remote).await
        };
        add_cors(resp.headers_mut());
        let body_len = content_length(&resp);
        if is_head {
            // Same headers as GET, no body (RFC 9110 §9.3.2).
            *resp.body_mut() = Full::new(Bytes::new());
            resp.extensions_mut().remove::<FileBody>();
        }
        let sent = if is_head { 0 } else { body_len };
        self.core
            .metrics
            .record_request(route, resp.status().as_u16(), sent, started.elapsed());
        resp
    }

    pub(super) async fn route<B>(
        &self,
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
        // HEAD answers carry no body: nothing to open a file for.
        let sends_files = method == Method::GET && req.extensions().get::<SendsFiles>().is_some();
        let parts: Vec<&str> = path[1..].split('/').collect();
        match parts.as_slice() {
            ["healthz"] => ("healthz", text(StatusCode::OK, "ok\n", CACHE_NONE)),
            ["readyz"] => ("readyz", self.readyz()),
            ["metrics"] => ("metrics", self.metrics()),
            ["v1", "content"] => ("content_list", self.content_list()),
            ["v1", "cluster"] => ("cluster", self.cluster()),
            ["v1", "content", id, "master.m3u8"] => {
                ("master", self.master(id, req.headers(), remote))
            }
            ["v1", "content", id, rest @ ..] if self.core.policy().serves_viewers().is_err() => {
                let why = self
                    .core
                    .policy()
                    .serves_viewers()
                    .expect_err("checked in the guard");
                let route = content_route(rest).unwrap_or("malformed");
                (route, self.not_serving(id, why))
            }
            ["v1", "content", id, rest @ ..] => {
                let (route, published) = match content_route(rest) {
                    Some(route) => (route, self.resolve(id, &query, route).await),
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
                        self.mesh
                            .plays()
                            .record(published.manifest().content_id.as_str());
                        playlist(&published, req.headers(), &query)
                    }
                    ["init.mp4"] => {
                        self.init_segment(&published, req.headers(), sends_files)
                            .await
                    }
                    ["seg", file] => {
                        // Only bodies served count towards play reports, not HEAD probes.
                        let viewer = (method == Method::GET).then(|| {
                            crate::reports::viewer(
                                &self.geo,
                                &self.core.config.geo.trusted_proxies,
                                req.headers(),
                                remote,
                            )
                        });
                        self.segment(&published, file, req.headers(), sends_files, viewer)
                            .await
                    }
                    _ => unreachable!("content_route accepted only these shapes"),
                };
                (route, resp)
            }
            ["play", id] => ("play", self.play(id, req.headers(), remote)),
            ["v1", "route", _] if matches!(query.client, Some(Err(()))) => (
                "route",
                error(StatusCode::BAD_REQUEST, "client= is not an IP address"),
            ),
            ["v1", "route", id] => (
                "route",
                self.route_answer(id, req.headers(), remote, query.client.and_then(Result::ok)),
            ),
            ["watch", id] => ("watch", self.watch_page(id)),
            ["ui"] => ("ui", self.ui_page()),
            ["assets", name] => ("asset", self.asset(name, req.uri().query(), req.headers())),
            _ => (
                "not_found",
                error(StatusCode::NOT_FOUND, "no such resource"),
            ),
        }
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
pub(super) struct Query {
    /// `v=N`: a specific manifest version (segment URLs in playlists carry it, so a player keeps
    /// the bytes of the version it started with even if a new one is published meanwhile).
    version: Option<Result<u64, ()>>,
    /// `format=json` on the manifest.
    json: bool,
    /// `client=IP` on `/v1/route`: explain the route for that viewer address instead (`Err`:
    /// not an address).
    client: Option<Result<std::net::IpAddr, ()>>,
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
                Some(("client", ip)) => q.client = Some(ip.parse().map_err(|_| ())),
                _ => {}
            }
        }
        q
    }
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
