//! Routing answers: `/play` redirects, `/v1/route` explanations, redundant-stream master
//! playlists.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use mhc_manifest::ContentId;
use mhc_transport::headers::{CACHE_NONE, CONTENT_TYPE_M3U8};
use serde_json::json;

use super::Viewer;
use crate::control::messages::Load;
use crate::http::{error, full, json_response, Body};
use crate::routing::{self, Depth, GeoAvailability};

impl Viewer {
    /// `GET /play/{id}`: `302` to the playlist on the node [`crate::routing`] chooses for this
    /// client; `503` with `Retry-After` when no node can serve the content now.
    pub(super) fn play(&self, id: &str, headers: &HeaderMap, remote: SocketAddr) -> Response<Body> {
        let id = match ContentId::new(id) {
            Ok(id) => id,
            Err(e) => return malformed_id(&e),
        };
        self.routed(&id, headers, remote, Depth::Best(1), |route| {
            match route.chosen() {
                Some(c) => redirect(&playlist_url(c.http, &id)),
                None => self.no_candidate(route),
            }
        })
    }

    /// `GET /v1/route/{id}`: the routing decision for this client, explained: the client address
    /// and where it came from, its location and the source of that, and every candidate with its
    /// distance, load, state and why it was or was not chosen. `503` (same body, `Retry-After`)
    /// when no node can serve the content now.
    ///
    /// With `client` (`?client=IP`), the route is explained for a viewer at that address (the
    /// operator's "where would a viewer from X go"); nothing else changes.
    pub(super) fn route_answer(
        &self,
        id: &str,
        headers: &HeaderMap,
        remote: SocketAddr,
        client: Option<std::net::IpAddr>,
    ) -> Response<Body> {
        let id = match ContentId::new(id) {
            Ok(id) => id,
            Err(e) => return malformed_id(&e),
        };
        let asked;
        let (headers, remote) = match client {
            Some(ip) => {
                let mut h = headers.clone();
                h.remove("x-forwarded-for");
                asked = h;
                (&asked, SocketAddr::new(ip, 0))
            }
            None => (headers, remote),
        };
        self.routed(&id, headers, remote, Depth::All, |route| {
            if route.chosen().is_none() {
                return self.no_candidate(route);
            }
            json_response(StatusCode::OK, &route.to_json(), CACHE_NONE)
        })
    }

    /// `GET /v1/content/{id}/master.m3u8`: an HLS master playlist listing the rendition on the best
    /// three nodes for this client as redundant streams (same `BANDWIDTH`, `AVERAGE-BANDWIDTH` and
    /// `CODECS`, different URIs), so the player fails over by itself. The attributes come from the
    /// manifest: a node that does not hold it redirects to the best node that does.
    pub(super) fn master(
        &self,
        id: &str,
        headers: &HeaderMap,
        remote: SocketAddr,
    ) -> Response<Body> {
        let id = match ContentId::new(id) {
            Ok(id) => id,
            Err(e) => return malformed_id(&e),
        };
        let published = self.core.catalog.latest(&id);
        // Without the manifest, the best node holding it is looked for: rank them all.
        let depth = match &published {
            Some(_) => Depth::Best(MASTER_STREAMS),
            None => Depth::All,
        };
        self.routed(&id, headers, remote, depth, |route| {
            if route.chosen().is_none() {
                return self.no_candidate(route);
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
                            .insert(header::RETRY_AFTER, self.retry_after());
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

    /// `Retry-After` of a `503` without candidates: one heartbeat period (at least a second), the
    /// soonest a returning member can be heard again.
    pub(super) fn retry_after(&self) -> HeaderValue {
        let period = self.core.config.cluster.heartbeat_interval;
        HeaderValue::from(period.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// `503` for a decision without candidates: the full explanation, an error line and
    /// `Retry-After`.
    pub(super) fn no_candidate(&self, route: &Route<'_, '_>) -> Response<Body> {
        let mut body = route.to_json();
        body["error"] = json!(format!(
            "no live node can serve {} now: every candidate is dead, suspect, or may not serve it \
             (see candidates)",
            route.content_id
        ));
        body["status"] = json!(503);
        let mut resp = json_response(StatusCode::SERVICE_UNAVAILABLE, &body, CACHE_NONE);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, self.retry_after());
        resp
    }

    /// Decides where this client should play `id` and hands the decision to `answer`, with the
    /// membership table locked (so the candidates can borrow from it; answers only format).
    /// Unknown content anywhere in the cluster is `404` and no decision.
    pub(super) fn routed(
        &self,
        id: &ContentId,
        headers: &HeaderMap,
        remote: SocketAddr,
        depth: Depth,
        answer: impl FnOnce(&Route<'_, '_>) -> Response<Body>,
    ) -> Response<Body> {
        let db = self.geo.current();
        let load_error;
        let geo = match &db {
            Some(db) => GeoAvailability::Loaded(db),
            None if self.core.config.geo.database.is_some() => {
                load_error = self
                    .geo
                    .status()
                    .last_error
                    .unwrap_or_else(|| "not loaded yet".to_owned());
                GeoAvailability::LoadFailed(&load_error)
            }
            None => GeoAvailability::NotConfigured,
        };
        let mode = self.core.mode();
        let settings = routing::Settings {
            geo,
            trusted_proxies: &self.core.config.geo.trusted_proxies,
            home_region: &self.core.config.region,
            mode,
        };
        let self_http = self.self_http_addr(headers);
        let peer_id = self.core.identity.peer_id();
        let this = routing::Candidate::this_node(
            &peer_id,
            crate::role::wire_role(self.core.config.role),
            &self.core.config.region,
            self.core.config.location.as_ref().map(|l| (l.lat, l.lon)),
            &self_http,
            Load {
                connections: self.core.metrics.connections_open().max(0) as u32,
                // Measured per heartbeat by the control plane, not here; 0 for this node.
                bytes_out_per_s: 0,
                cache_fill_permille: 0,
            },
            self.core.catalog.latest(id).is_some(),
        )
        .receiving_downlink(self.core.config.satellite.downlink.is_some());
        let membership = self.cluster.membership();
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
        let known = decision.held_anywhere || self.cluster.is_announced(id.as_str());
        let resp = if known {
            self.core
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
    pub(super) fn self_http_addr(&self, headers: &HeaderMap) -> String {
        if !self.status.addrs().http.ip().is_unspecified() {
            return self.status.addrs().http.to_string();
        }
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map_or_else(|| self.status.addrs().http.to_string(), |a| a.to_string())
    }
}

/// Streams a master playlist lists (the issue asks for the best three: enough for a player to
/// survive two node failures, few enough that all are near).
pub(super) const MASTER_STREAMS: usize = 3;

pub(super) fn malformed_id(e: &mhc_manifest::InvalidContentId) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        &format!("malformed content id: {e}"),
    )
}

pub(super) fn playlist_url(http: &str, id: &ContentId) -> String {
    format!("http://{http}/v1/content/{id}/index.m3u8")
}

pub(super) fn redirect(location: &str) -> Response<Body> {
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

/// A routing decision and its ranked candidates, while the membership table is locked.
pub(super) struct Route<'r, 'a> {
    content_id: &'r ContentId,
    decision: &'r routing::Decision<'a>,
    candidates: &'r [routing::Candidate<'a>],
    mode: crate::role::Mode,
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
