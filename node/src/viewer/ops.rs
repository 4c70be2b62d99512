//! What operators and monitoring ask of the viewer plane: `/v1/cluster`, `/readyz`,
//! `/metrics`, signed operator commands, and plugin admin routes behind the admin token.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use mhc_transport::headers::CACHE_NONE;
use serde_json::json;

use mhc_transport::gossip::revocation::RevocationError;

use super::Viewer;
use crate::core::admission::RevokeError;
use crate::core::metrics::CONTENT_TYPE;
use crate::http::{error, full, json_response, read_limited, text, Body};
use crate::server::OverTls;

/// Largest `POST /v1/emergency` body read.
const MAX_COMMAND_BODY_BYTES: usize = crate::core::emergency::MAX_COMMAND_BYTES + 1;
/// Largest `POST /v1/revocations` body read.
const MAX_REVOCATION_BODY_BYTES: usize =
    mhc_transport::gossip::revocation::MAX_REVOCATION_BYTES + 1;

impl Viewer {
    /// `POST /v1/emergency`: an encoded, signed operator command from anyone. The signature is
    /// the authority, not the sender: accepted commands are applied and gossiped to the cluster.
    pub(super) async fn emergency_command<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match read_limited(req.into_body(), MAX_COMMAND_BODY_BYTES).await {
            Ok(body) => body,
            Err(e) => {
                self.core.metrics.record_emergency("too_large");
                return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("command body: {e}"));
            }
        };
        match self.cluster.obey(&self.core, &body, "http") {
            Ok(()) => json_response(
                StatusCode::OK,
                &json!({ "applied": true, "mode": self.core.mode().as_str(), "emergency": self.core.emergency.state().to_json() }),
                CACHE_NONE,
            ),
            Err(err) => {
                let status = match err {
                    crate::core::emergency::Rejected::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                    crate::core::emergency::Rejected::Malformed(_) => StatusCode::BAD_REQUEST,
                    crate::core::emergency::Rejected::Stale { .. } => StatusCode::CONFLICT,
                    _ => StatusCode::FORBIDDEN,
                };
                error(status, &err.to_string())
            }
        }
    }

    /// `POST /v1/revocations`: an encoded, signed revocation from anyone. The operator's
    /// signature is the authority, not the sender: an accepted revocation is applied and
    /// gossiped to the cluster.
    pub(super) async fn revocation<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match read_limited(req.into_body(), MAX_REVOCATION_BODY_BYTES).await {
            Ok(body) => body,
            Err(e) => {
                self.core
                    .metrics
                    .record_revocation("malformed", self.core.admission.revoked_count());
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("revocation body: {e}"),
                );
            }
        };
        match self.cluster.revoke(&self.core, &body, "http") {
            Ok(revoked) => json_response(
                StatusCode::OK,
                &self.core.admission.revocation_json(&revoked),
                CACHE_NONE,
            ),
            Err(err) => {
                let status = match err {
                    RevokeError::Invalid(RevocationError::Malformed(_)) => StatusCode::BAD_REQUEST,
                    RevokeError::Invalid(_) => StatusCode::FORBIDDEN,
                    RevokeError::Full => StatusCode::INSUFFICIENT_STORAGE,
                    RevokeError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
                };
                error(status, &err.to_string())
            }
        }
    }

    /// `/admin/plugins/...` on the viewer plane: only with `Authorization: Bearer <http.admin_token>`
    /// (compared in constant time), and only over HTTPS or from a loopback address (a local
    /// TLS-terminating proxy), so the token never crosses a network in clear; without a
    /// configured token the routes do not exist here.
    pub(super) async fn plugin_admin<B>(
        &self,
        req: Request<B>,
        remote: SocketAddr,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(token) = &self.core.config.http.admin_token else {
            return error(StatusCode::NOT_FOUND, "no such resource");
        };
        if !admin_token_may_travel(&req, remote) {
            return error(
                StatusCode::FORBIDDEN,
                "the admin token is accepted only over HTTPS (listen.https) or from a loopback address",
            );
        }
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
        let mut resp = crate::http::plugin_response(
            crate::plugins::admin_route(self.plugins.as_ref(), &method, &target, req.into_body())
                .await,
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_NONE));
        resp
    }

    /// The answer to a content request at a node that does not serve viewers in the current mode
    /// (an origin or edge in emergency mode): `503`, when to try again, and where to go instead.
    pub(super) fn not_serving(&self, id: &str, why: crate::role::NotServing) -> Response<Body> {
        let play = format!("/play/{id}");
        let mut resp = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "error": format!("this node does not serve viewers now: {why}"),
                "status": 503,
                "mode": self.core.mode().as_str(),
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

    pub(super) fn cluster(&self) -> Response<Body> {
        let (alive, suspect, dead) = self.cluster.counts();
        let body = json!({
            "self": self.status.self_description(),
            "mode": self.core.mode().as_str(),
            "counts": { "alive": alive + 1, "suspect": suspect, "dead": dead },
            "members": self.cluster.members_json(|peer| crate::status::certificate_json(&self.core, peer)),
            "announced": self.cluster.known_contents().iter().take(50)
                .map(|k| json!({
                    "id": k.id,
                    "version": k.version,
                    "manifest_hash": hex::encode(k.manifest_hash),
                    "announced_by": k.announced_by.to_string(),
                    "sent_at_ms": k.sent_at_ms,
                    "received_at_ms": k.received_at_ms,
                }))
                .collect::<Vec<_>>(),
            "bad_segment_reports": self.bad_segment_reports(),
            "gossip_peers": self.cluster.peer_scores().iter()
                .map(|(p, s)| json!({"peer_id": p.to_string(), "score": s}))
                .collect::<Vec<_>>(),
        });
        json_response(StatusCode::OK, &body, CACHE_NONE)
    }

    pub(super) fn readyz(&self) -> Response<Body> {
        if self.core.is_ready() {
            text(StatusCode::OK, "ready\n", CACHE_NONE)
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting or stopping\n",
                CACHE_NONE,
            )
        }
    }

    pub(super) fn metrics(&self) -> Response<Body> {
        let body = self.core.metrics.encode(&self.status.gauges());
        full(StatusCode::OK, CONTENT_TYPE, Bytes::from(body), CACHE_NONE)
    }
}

/// Whether a request may carry the admin token: it came over TLS, or from this host.
fn admin_token_may_travel<B>(req: &Request<B>, remote: SocketAddr) -> bool {
    req.extensions().get::<OverTls>().is_some() || remote.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod admin_token_tests {
    use super::*;

    #[test]
    fn the_admin_token_travels_only_over_tls_or_from_loopback() {
        let plain = || Request::new(());
        let tls = || {
            let mut r = Request::new(());
            r.extensions_mut().insert(OverTls);
            r
        };
        let far: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        assert!(!admin_token_may_travel(&plain(), far));
        assert!(admin_token_may_travel(&tls(), far));
        for local in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert!(
                admin_token_may_travel(&plain(), local.parse().unwrap()),
                "{local}"
            );
        }
        let mapped_far: SocketAddr = "[::ffff:203.0.113.9]:5000".parse().unwrap();
        assert!(!admin_token_may_travel(&plain(), mapped_far));
    }
}
