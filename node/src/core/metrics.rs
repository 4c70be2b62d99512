//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! Counters are atomics (or one short lock for the labelled request counter), so recording on
//! the hot path costs nanoseconds; rendering happens only when scraped.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds: from a RAM hit (well under a millisecond)
/// to a cold disk read or an upstream fill (seconds).
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Outcomes of routing decisions, in the order of `Metrics::routing_decisions`.
const ROUTING_OUTCOMES: [&str; 3] = ["geo", "fallback", "no_candidate"];

/// All of a node's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    response_bytes: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    store_hits: AtomicU64,
    store_misses: AtomicU64,
    store_corrupt: AtomicU64,
    ingests: Mutex<BTreeMap<&'static str, u64>>,
    gossip: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    gossip_rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Routing decisions by outcome: geo, fallback, no_candidate.
    routing_decisions: [AtomicU64; 3],
    quic_responses: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    quic_body_bytes: AtomicU64,
    fills: AtomicU64,
    fill_bytes: AtomicU64,
    fill_failures: Mutex<BTreeMap<&'static str, u64>>,
    fill_latency: [AtomicU64; LATENCY_BUCKETS_S.len()],
    fill_latency_count: AtomicU64,
    fill_latency_sum_us: AtomicU64,
    /// Mesh data plane (iroh-blobs) counters.
    pub mesh: MeshMetrics,
    emergency_commands: Mutex<BTreeMap<&'static str, u64>>,
    /// Broadcast-plane (satellite) counters.
    pub broadcast: BroadcastMetrics,
}

/// Counters of the mesh data plane.
#[derive(Debug, Default)]
pub struct MeshMetrics {
    /// Payload bytes this node sent to other nodes over iroh-blobs.
    pub sent_bytes: AtomicU64,
    /// Payload bytes this node received over iroh-blobs.
    pub received_bytes: AtomicU64,
    /// Blob requests that a provider failed (error, timeout, bytes that failed verification).
    pub provider_failures: AtomicU64,
    /// Content versions replicated completely.
    pub replications: AtomicU64,
    /// Content versions whose mesh root did not match their signed manifest, or whose manifest
    /// was not trusted: rejected, nothing stored under them.
    pub rejected: AtomicU64,
}

/// Point-in-time values the metrics do not own (store sizes, catalog size), read at scrape.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Role name.
    pub role: &'static str,
    /// Bytes in the RAM tier.
    pub ram_bytes: u64,
    /// RAM tier bound.
    pub ram_capacity_bytes: u64,
    /// Bytes in the disk tier.
    pub disk_bytes: u64,
    /// Disk tier bound.
    pub disk_capacity_bytes: u64,
    /// Content ids published or held.
    pub contents: u64,
    /// Seconds since the node started.
    pub uptime_s: f64,
    /// Other members by state: alive, suspect, dead.
    pub members: (usize, usize, usize),
    /// Whether the node is in emergency mode.
    pub emergency: bool,
    /// When the mode last changed, ms since the epoch (0: never).
    pub mode_since_ms: u64,
}

impl Metrics {
    /// Counts an emergency command by outcome (`applied` or the rejection reason).
    pub fn record_emergency(&self, outcome: &'static str) {
        *self.emergency_commands.lock().entry(outcome).or_default() += 1;
    }

    /// Counts one answered viewer request.
    pub fn record_request(
        &self,
        route: &'static str,
        status: u16,
        body_bytes: u64,
        took: Duration,
    ) {
        *self.requests.lock().entry((route, status)).or_default() += 1;
        self.response_bytes.fetch_add(body_bytes, Ordering::Relaxed);
        let s = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| s <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A viewer connection opened.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A viewer connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Viewer connections open now.
    pub fn connections_open(&self) -> i64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// A blob was served from the RAM tier.
    pub fn store_hit(&self) {
        self.store_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A blob had to be read from disk.
    pub fn store_miss(&self) {
        self.store_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A blob on disk failed its hash check.
    pub fn store_corrupt(&self) {
        self.store_corrupt.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one ingest by outcome (`published`, `unchanged`, `failed`).
    pub fn record_ingest(&self, outcome: &'static str) {
        *self.ingests.lock().entry(outcome).or_default() += 1;
    }

    /// Body bytes sent to viewers so far.
    pub fn response_bytes(&self) -> u64 {
        self.response_bytes.load(Ordering::Relaxed)
    }

    /// Counts one gossip message accepted in or published out (`direction` is `in` or `out`).
    pub fn record_gossip(&self, direction: &'static str, topic: &'static str) {
        *self.gossip.lock().entry((direction, topic)).or_default() += 1;
    }

    /// Counts one gossip message rejected, by reason.
    pub fn record_gossip_rejected(&self, reason: &'static str) {
        *self.gossip_rejected.lock().entry(reason).or_default() += 1;
    }

    /// Counts one answer of the QUIC data plane (`kind`: manifest/segment/init; `outcome`:
    /// ok/not_found/busy/error) and its body bytes.
    pub fn record_quic_response(&self, kind: &'static str, outcome: &'static str, body: u64) {
        *self
            .quic_responses
            .lock()
            .entry((kind, outcome))
            .or_default() += 1;
        self.quic_body_bytes.fetch_add(body, Ordering::Relaxed);
    }

    /// Counts one verified fill from a parent.
    pub fn record_fill(&self, bytes: u64, took: Duration) {
        self.fills.fetch_add(1, Ordering::Relaxed);
        self.fill_bytes.fetch_add(bytes, Ordering::Relaxed);
        let s = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| s <= *b) {
            self.fill_latency[i].fetch_add(1, Ordering::Relaxed);
        }
        self.fill_latency_count.fetch_add(1, Ordering::Relaxed);
        self.fill_latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts one failed fill attempt from one parent (`verification`, `unreachable`,
    /// `bad_manifest`).
    pub fn record_fill_failure(&self, reason: &'static str) {
        *self.fill_failures.lock().entry(reason).or_default() += 1;
    }

    /// Counts one routing decision by outcome: `geo`, `fallback` or `no_candidate` (anything
    /// else counts as `no_candidate`).
    pub fn record_routing_decision(&self, outcome: &'static str) {
        let i = ROUTING_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(2);
        self.routing_decisions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders everything in the Prometheus text format (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP mhc_build_info Software version and role of this node."
        );
        let _ = writeln!(out, "# TYPE mhc_build_info gauge");
        let _ = writeln!(
            out,
            "mhc_build_info{{version=\"{}\",role=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            g.role
        );
        gauge(
            &mut out,
            "mhc_uptime_seconds",
            "Seconds since the node started.",
            g.uptime_s,
        );

        let _ = writeln!(
            out,
            "# HELP mhc_http_requests_total Viewer-plane requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE mhc_http_requests_total counter");
        for ((route, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "mhc_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "mhc_http_response_body_bytes_total",
            "Body bytes sent to viewers.",
            self.response_bytes.load(Ordering::Relaxed),
        );

        let _ = writeln!(
            out,
            "# HELP mhc_http_request_duration_seconds Time from request to response headers."
        );
        let _ = writeln!(out, "# TYPE mhc_http_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS_S.iter().zip(&self.latency_buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "mhc_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "mhc_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "mhc_http_request_duration_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "mhc_http_request_duration_seconds_count {count}");

        gauge(
            &mut out,
            "mhc_http_connections_open",
            "Viewer connections open now.",
            self.connections_open.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut out,
            "mhc_http_connections_total",
            "Viewer connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mhc_store_hits_total",
            "Blob reads served from the RAM tier.",
            self.store_hits.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mhc_store_misses_total",
            "Blob reads that went to disk.",
            self.store_misses.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mhc_store_corrupt_total",
            "Blobs whose bytes on disk failed their hash check (never served).",
            self.store_corrupt.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "mhc_store_ram_bytes",
            "Bytes in the RAM tier.",
            g.ram_bytes as f64,
        );
        gauge(
            &mut out,
            "mhc_store_ram_capacity_bytes",
            "Bound of the RAM tier (cache.memory_mb).",
            g.ram_capacity_bytes as f64,
        );
        gauge(
            &mut out,
            "mhc_store_disk_bytes",
            "Bytes in the disk tier.",
            g.disk_bytes as f64,
        );
        gauge(
            &mut out,
            "mhc_store_disk_capacity_bytes",
            "Bound of the disk tier (cache.disk_gb).",
            g.disk_capacity_bytes as f64,
        );
        gauge(
            &mut out,
            "mhc_contents",
            "Content ids this node holds a manifest for.",
            g.contents as f64,
        );
        let _ = writeln!(out, "# HELP mhc_ingests_total Ingests by outcome.");
        let _ = writeln!(out, "# TYPE mhc_ingests_total counter");
        for (outcome, n) in self.ingests.lock().iter() {
            let _ = writeln!(out, "mhc_ingests_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP mhc_quic_responses_total QUIC data-plane answers to other nodes, by request kind and outcome.");
        let _ = writeln!(out, "# TYPE mhc_quic_responses_total counter");
        for ((kind, outcome), n) in self.quic_responses.lock().iter() {
            let _ = writeln!(
                out,
                "mhc_quic_responses_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "mhc_quic_body_bytes_total",
            "Body bytes sent to other nodes over QUIC.",
            self.quic_body_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mhc_fills_total",
            "Segments filled from a parent and verified.",
            self.fills.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mhc_fill_bytes_total",
            "Bytes filled from parents (verified).",
            self.fill_bytes.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP mhc_fill_failures_total Failed fill attempts, by reason (verification = a parent sent bytes that do not match the signed manifest).");
        let _ = writeln!(out, "# TYPE mhc_fill_failures_total counter");
        for (reason, n) in self.fill_failures.lock().iter() {
            let _ = writeln!(out, "mhc_fill_failures_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP mhc_fill_duration_seconds Time to fill one segment from a parent."
        );
        let _ = writeln!(out, "# TYPE mhc_fill_duration_seconds histogram");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS_S.iter().zip(&self.fill_latency) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "mhc_fill_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.fill_latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "mhc_fill_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "mhc_fill_duration_seconds_sum {}",
            self.fill_latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "mhc_fill_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP mhc_routing_decisions_total Routing decisions (/play, /v1/route, master playlists) by outcome."
        );
        let _ = writeln!(out, "# TYPE mhc_routing_decisions_total counter");
        for (outcome, n) in ROUTING_OUTCOMES.iter().zip(&self.routing_decisions) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "mhc_routing_decisions_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP mhc_cluster_members Other members of the cluster by state, as this node sees them.");
        let _ = writeln!(out, "# TYPE mhc_cluster_members gauge");
        for (state, n) in [
            ("alive", g.members.0),
            ("suspect", g.members.1),
            ("dead", g.members.2),
        ] {
            let _ = writeln!(out, "mhc_cluster_members{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP mhc_gossip_messages_total Control-plane messages accepted in or published out, by topic.");
        let _ = writeln!(out, "# TYPE mhc_gossip_messages_total counter");
        for ((direction, topic), n) in self.gossip.lock().iter() {
            let _ = writeln!(
                out,
                "mhc_gossip_messages_total{{direction=\"{direction}\",topic=\"{topic}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mhc_gossip_rejected_total Control-plane messages rejected, by reason."
        );
        let _ = writeln!(out, "# TYPE mhc_gossip_rejected_total counter");
        for (reason, n) in self.gossip_rejected.lock().iter() {
            let _ = writeln!(out, "mhc_gossip_rejected_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP mhc_emergency_commands_total Operator commands by outcome.\n# TYPE mhc_emergency_commands_total counter"
        );
        for (outcome, n) in self.emergency_commands.lock().iter() {
            let _ = writeln!(
                out,
                "mhc_emergency_commands_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mhc_mode Serving mode (1 for the current one).\n# TYPE mhc_mode gauge\nmhc_mode{{mode=\"normal\"}} {}\nmhc_mode{{mode=\"emergency\"}} {}",
            u8::from(!g.emergency),
            u8::from(g.emergency)
        );
        gauge(
            &mut out,
            "mhc_mode_changed_timestamp_seconds",
            "When the last operator command was applied here (0: never).",
            g.mode_since_ms as f64 / 1000.0,
        );
        let mesh = &self.mesh;
        for (name, help, value) in [
            (
                "mhc_mesh_sent_bytes_total",
                "Payload bytes sent to other nodes over iroh-blobs.",
                &mesh.sent_bytes,
            ),
            (
                "mhc_mesh_received_bytes_total",
                "Payload bytes received from other nodes over iroh-blobs.",
                &mesh.received_bytes,
            ),
            (
                "mhc_mesh_provider_failures_total",
                "Blob requests a mesh provider failed (error, timeout or unverifiable bytes).",
                &mesh.provider_failures,
            ),
            (
                "mhc_mesh_replications_total",
                "Content versions replicated completely over the mesh.",
                &mesh.replications,
            ),
            (
                "mhc_mesh_rejected_total",
                "Mesh content roots rejected: untrusted manifest or children not matching it.",
                &mesh.rejected,
            ),
        ] {
            counter(&mut out, name, help, value.load(Ordering::Relaxed));
        }
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// Broadcast-plane counters and gauges for `/metrics`.
#[derive(Debug, Default)]
pub struct BroadcastMetrics {
    /// Uplink: objects in the carousel now.
    pub carousel_objects: AtomicU64,
    /// Uplink: cycles started.
    pub cycles: AtomicU64,
    /// Downlink: objects decoded and verified, by kind (manifest, segment, bulletin).
    pub objects_received: [AtomicU64; 3],
    /// Downlink: objects refused (untrusted manifest, segment listed nowhere, bad bulletin,
    /// or bytes that did not hash to their id).
    pub objects_rejected: AtomicU64,
    /// Downlink: objects partly received now.
    pub objects_incomplete: AtomicU64,
    /// Downlink: content versions completed from the broadcast.
    pub contents_received: AtomicU64,
    /// Downlink: objects completed in a later cycle than their first packet (the loss of one
    /// cycle exceeded its repair symbols).
    pub objects_late: AtomicU64,
    /// Downlink: malformed datagrams dropped.
    pub malformed: AtomicU64,
}

impl BroadcastMetrics {
    /// Appends the broadcast-plane samples in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP mhc_satellite_carousel_objects Objects in the uplink carousel.\n\
             # TYPE mhc_satellite_carousel_objects gauge\n\
             mhc_satellite_carousel_objects {}\n\
             # HELP mhc_satellite_cycles_total Uplink carousel cycles started.\n\
             # TYPE mhc_satellite_cycles_total counter\n\
             mhc_satellite_cycles_total {}\n\
             # HELP mhc_downlink_objects_total Broadcast objects decoded and verified, by kind.\n\
             # TYPE mhc_downlink_objects_total counter\n\
             mhc_downlink_objects_total{{kind=\"manifest\"}} {}\n\
             mhc_downlink_objects_total{{kind=\"segment\"}} {}\n\
             mhc_downlink_objects_total{{kind=\"bulletin\"}} {}\n\
             # HELP mhc_downlink_objects_rejected_total Broadcast objects refused.\n\
             # TYPE mhc_downlink_objects_rejected_total counter\n\
             mhc_downlink_objects_rejected_total {}\n\
             # HELP mhc_downlink_objects_incomplete Broadcast objects partly received now.\n\
             # TYPE mhc_downlink_objects_incomplete gauge\n\
             mhc_downlink_objects_incomplete {}\n\
             # HELP mhc_downlink_contents_total Content versions completed from the broadcast.\n\
             # TYPE mhc_downlink_contents_total counter\n\
             mhc_downlink_contents_total {}\n\
             # HELP mhc_downlink_malformed_total Malformed broadcast datagrams dropped.\n\
             # TYPE mhc_downlink_malformed_total counter\n\
             mhc_downlink_malformed_total {}\n\
             # HELP mhc_downlink_objects_late_total Objects completed in a later cycle than their first packet.\n\
             # TYPE mhc_downlink_objects_late_total counter\n\
             mhc_downlink_objects_late_total {}",
            g(&self.carousel_objects),
            g(&self.cycles),
            g(&self.objects_received[0]),
            g(&self.objects_received[1]),
            g(&self.objects_received[2]),
            g(&self.objects_rejected),
            g(&self.objects_incomplete),
            g(&self.contents_received),
            g(&self.malformed),
            g(&self.objects_late),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.record_request("segment", 200, 100, Duration::from_micros(300));
        m.record_request("segment", 200, 50, Duration::from_millis(3));
        m.record_request("playlist", 404, 0, Duration::from_secs(10));
        let text = m.render(&Gauges {
            role: "origin",
            ..Gauges::default()
        });
        assert!(text.contains("mhc_http_requests_total{route=\"segment\",status=\"200\"} 2"));
        assert!(text.contains("mhc_http_requests_total{route=\"playlist\",status=\"404\"} 1"));
        assert!(text.contains("mhc_http_response_body_bytes_total 150"));
        assert!(text.contains("mhc_http_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("mhc_http_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("mhc_http_request_duration_seconds_bucket{le=\"2.5\"} 2"));
        assert!(text.contains("mhc_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("mhc_http_request_duration_seconds_count 3"));
    }
}
