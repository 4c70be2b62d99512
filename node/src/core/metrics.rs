//! The node's Prometheus metrics: one [`prometheus_client`] registry, exposed at
//! `GET /metrics` in the OpenMetrics text format ([`CONTENT_TYPE`]).
//!
//! Recording on the hot path costs an atomic add: counters and gauges are atomics, a labelled
//! family finds its series under a read lock (label values are `&'static str` and integers, so
//! finding one allocates nothing), and families whose label values are known up front keep a
//! handle per series and take no lock at all. The two histograms take a short, uncontended
//! lock. Encoding happens only when scraped.
//!
//! Names: the encoder appends `_total` to a counter's samples, so counters are registered
//! without it (`mhc_fills` is scraped as `mhc_fills_total`); the README lists the scraped
//! names. Planes that own metrics of their own (reports, the origin's inbox and plugins)
//! register them here with [`Metrics::register`] and [`Metrics::register_collector`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// The `Content-Type` of `GET /metrics`: the OpenMetrics text format that
/// [`prometheus_client`] writes (Prometheus negotiates it; the body ends with `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histograms, in seconds: from a RAM hit (well under a
/// millisecond) to a cold disk read or an upstream fill (seconds).
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Outcomes of routing decisions, in the order of `Metrics::routing_decisions`.
const ROUTING_OUTCOMES: [&str; 3] = ["geo", "fallback", "no_candidate"];

/// A gauge of a count or a size: scraped as an integer.
pub type CountGauge = Gauge<u64, AtomicU64>;
/// A gauge of seconds: scraped as a float.
type SecondsGauge = Gauge<f64, AtomicU64>;

/// Label `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What became of the thing counted.
    pub outcome: &'static str,
}

/// Label `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why the thing counted happened.
    pub reason: &'static str,
}

/// Labels of `mhc_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// Label `direction` (`in` or `out`) of the `mhc_swim_*` families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Labels of `mhc_gossip_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GossipLabels {
    direction: &'static str,
    topic: &'static str,
}

/// Labels of `mhc_quic_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QuicLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// Label `kind` of `mhc_downlink_objects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Label `state` of `mhc_cluster_members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Label `mode` of `mhc_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

/// Labels of `mhc_build_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    role: &'static str,
}

/// A family whose label sets are all known up front, and a handle to each of its series (in
/// the order given): recording through a handle takes no lock, and every series is scraped
/// from the start, at 0.
pub fn fixed_family<S, M, const N: usize>(label_sets: [S; N]) -> (Family<S, M>, [M; N])
where
    S: Clone + std::hash::Hash + Eq,
    M: Default + Clone,
{
    let family = Family::<S, M>::default();
    let handles = label_sets.map(|s| family.get_or_create_owned(&s));
    (family, handles)
}

/// Sets a counter that mirrors a total kept elsewhere (the carousel's cycle number, the
/// assembler's count of malformed datagrams), which only grows.
pub fn mirror_total(counter: &Counter, total: u64) {
    counter.inner().store(total, Ordering::Relaxed);
}

/// All of a node's metrics, and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    /// Written at start (planes register what they own), read at every scrape.
    registry: RwLock<Registry>,
    requests: Family<RequestLabels, Counter>,
    response_bytes: Counter,
    file_body_bytes: Counter,
    request_duration: Histogram,
    connections_open: Gauge,
    connections: Counter,
    store_hits: Counter,
    store_misses: Counter,
    store_corrupt: Counter,
    ingests: Family<OutcomeLabel, Counter>,
    gossip: Family<GossipLabels, Counter>,
    gossip_rejected: Family<ReasonLabel, Counter>,
    swim_packets: Family<DirectionLabel, Counter>,
    swim_bytes: Family<DirectionLabel, Counter>,
    swim_dropped: Family<ReasonLabel, Counter>,
    /// Routing decisions by outcome, in the order of [`ROUTING_OUTCOMES`].
    routing_decisions: [Counter; 3],
    quic_responses: Family<QuicLabels, Counter>,
    quic_refused: Family<ReasonLabel, Counter>,
    http_closed: Family<ReasonLabel, Counter>,
    quic_body_bytes: Counter,
    fills: Counter,
    fill_bytes: Counter,
    fill_failures: Family<ReasonLabel, Counter>,
    fill_duration: Histogram,
    emergency_commands: Family<OutcomeLabel, Counter>,
    bad_segment_reports: Family<OutcomeLabel, Counter>,
    revocations: Family<OutcomeLabel, Counter>,
    revoked_nodes: Gauge,
    /// Mesh data plane (iroh-blobs) counters.
    pub mesh: MeshMetrics,
    /// Broadcast-plane (satellite) counters.
    pub broadcast: BroadcastMetrics,
    scrape: ScrapeGauges,
}

/// Counters of the mesh data plane.
#[derive(Debug, Default)]
pub struct MeshMetrics {
    /// Payload bytes this node sent to other nodes over iroh-blobs.
    pub sent_bytes: Counter,
    /// Payload bytes this node received over iroh-blobs.
    pub received_bytes: Counter,
    /// Blob requests that a provider failed (error, timeout, bytes that failed verification).
    pub provider_failures: Counter,
    /// Content versions replicated completely.
    pub replications: Counter,
    /// Content versions whose mesh root did not match their signed manifest, or whose manifest
    /// was not trusted: rejected, nothing stored under them.
    pub rejected: Counter,
}

/// Broadcast-plane counters and gauges.
#[derive(Debug)]
pub struct BroadcastMetrics {
    /// Uplink: objects in the carousel now.
    pub carousel_objects: CountGauge,
    /// Uplink: cycles started (mirrors the carousel's cycle number, see [`mirror_total`]).
    pub cycles: Counter,
    /// Downlink: objects decoded and verified, by kind (manifest, segment, bulletin).
    pub objects_received: [Counter; 3],
    objects_by_kind: Family<KindLabel, Counter>,
    /// Downlink: objects refused (untrusted manifest, segment listed nowhere, bad bulletin,
    /// or bytes that did not hash to their id).
    pub objects_rejected: Counter,
    /// Downlink: objects partly received now.
    pub objects_incomplete: CountGauge,
    /// Downlink: content versions completed from the broadcast.
    pub contents_received: Counter,
    /// Downlink: objects completed in a later cycle than their first packet (the loss of one
    /// cycle exceeded its repair symbols).
    pub objects_late: Counter,
    /// Downlink: malformed datagrams dropped (mirrors the assembler's count, see
    /// [`mirror_total`]).
    pub malformed: Counter,
    /// Downlink: datagrams dropped because they came from no `satellite.downlink_sources`.
    pub foreign: Counter,
}

impl Default for BroadcastMetrics {
    fn default() -> Self {
        let (objects_by_kind, objects_received) =
            fixed_family(["manifest", "segment", "bulletin"].map(|kind| KindLabel { kind }));
        Self {
            carousel_objects: CountGauge::default(),
            cycles: Counter::default(),
            objects_received,
            objects_by_kind,
            objects_rejected: Counter::default(),
            objects_incomplete: CountGauge::default(),
            contents_received: Counter::default(),
            objects_late: Counter::default(),
            malformed: Counter::default(),
            foreign: Counter::default(),
        }
    }
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

/// The gauges set from [`Gauges`] at every scrape.
#[derive(Debug)]
struct ScrapeGauges {
    build_info: Family<BuildLabels, CountGauge>,
    uptime: SecondsGauge,
    ram_bytes: CountGauge,
    ram_capacity_bytes: CountGauge,
    disk_bytes: CountGauge,
    disk_capacity_bytes: CountGauge,
    contents: CountGauge,
    members_by_state: Family<StateLabel, CountGauge>,
    /// Alive, suspect, dead.
    members: [CountGauge; 3],
    mode_family: Family<ModeLabel, CountGauge>,
    /// Normal, emergency.
    mode: [CountGauge; 2],
    mode_changed: SecondsGauge,
}

impl ScrapeGauges {
    fn new() -> Self {
        let (members_by_state, members) =
            fixed_family(["alive", "suspect", "dead"].map(|state| StateLabel { state }));
        let (mode_family, mode) =
            fixed_family(["normal", "emergency"].map(|mode| ModeLabel { mode }));
        Self {
            build_info: Family::default(),
            uptime: SecondsGauge::default(),
            ram_bytes: CountGauge::default(),
            ram_capacity_bytes: CountGauge::default(),
            disk_bytes: CountGauge::default(),
            disk_capacity_bytes: CountGauge::default(),
            contents: CountGauge::default(),
            members_by_state,
            members,
            mode_family,
            mode,
            mode_changed: SecondsGauge::default(),
        }
    }

    fn set(&self, g: &Gauges) {
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                role: g.role,
            })
            .set(1);
        self.uptime.set(g.uptime_s);
        self.ram_bytes.set(g.ram_bytes);
        self.ram_capacity_bytes.set(g.ram_capacity_bytes);
        self.disk_bytes.set(g.disk_bytes);
        self.disk_capacity_bytes.set(g.disk_capacity_bytes);
        self.contents.set(g.contents);
        let (alive, suspect, dead) = g.members;
        for (gauge, n) in self.members.iter().zip([alive, suspect, dead]) {
            gauge.set(n as u64);
        }
        self.mode[0].set(u64::from(!g.emergency));
        self.mode[1].set(u64::from(g.emergency));
        self.mode_changed.set(g.mode_since_ms as f64 / 1000.0);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric of the node, registered, at zero.
    pub fn new() -> Self {
        let (routing_by_outcome, routing_decisions) =
            fixed_family(ROUTING_OUTCOMES.map(|outcome| OutcomeLabel { outcome }));
        let m = Self {
            registry: RwLock::new(Registry::default()),
            requests: Family::default(),
            response_bytes: Counter::default(),
            file_body_bytes: Counter::default(),
            request_duration: Histogram::new(LATENCY_BUCKETS_S),
            connections_open: Gauge::default(),
            connections: Counter::default(),
            store_hits: Counter::default(),
            store_misses: Counter::default(),
            store_corrupt: Counter::default(),
            ingests: Family::default(),
            gossip: Family::default(),
            gossip_rejected: Family::default(),
            swim_packets: Family::default(),
            swim_bytes: Family::default(),
            swim_dropped: Family::default(),
            routing_decisions,
            quic_responses: Family::default(),
            quic_refused: Family::default(),
            http_closed: Family::default(),
            quic_body_bytes: Counter::default(),
            fills: Counter::default(),
            fill_bytes: Counter::default(),
            fill_failures: Family::default(),
            fill_duration: Histogram::new(LATENCY_BUCKETS_S),
            emergency_commands: Family::default(),
            bad_segment_reports: Family::default(),
            revocations: Family::default(),
            revoked_nodes: Gauge::default(),
            mesh: MeshMetrics::default(),
            broadcast: BroadcastMetrics::default(),
            scrape: ScrapeGauges::new(),
        };
        let (s, mesh, sat) = (&m.scrape, &m.mesh, &m.broadcast);
        // The order of registration is the order of the exposition. The encoder adds the full
        // stop to each help text.
        let mut r = m.registry.write();
        r.register(
            "mhc_build_info",
            "Software version and role of this node",
            s.build_info.clone(),
        );
        r.register(
            "mhc_uptime_seconds",
            "Seconds since the node started",
            s.uptime.clone(),
        );
        r.register(
            "mhc_http_requests",
            "Viewer-plane requests answered, by route and status",
            m.requests.clone(),
        );
        r.register(
            "mhc_http_response_body_bytes",
            "Body bytes sent to viewers",
            m.response_bytes.clone(),
        );
        r.register(
            "mhc_http_file_body_bytes",
            "Of those, bytes the kernel sent from verified blob files (sendfile), copied by no one",
            m.file_body_bytes.clone(),
        );
        r.register(
            "mhc_http_request_duration_seconds",
            "Time from request to response headers",
            m.request_duration.clone(),
        );
        r.register(
            "mhc_http_connections_open",
            "Viewer connections open now",
            m.connections_open.clone(),
        );
        r.register(
            "mhc_http_connections",
            "Viewer connections accepted",
            m.connections.clone(),
        );
        r.register(
            "mhc_store_hits",
            "Blob reads served from the RAM tier",
            m.store_hits.clone(),
        );
        r.register(
            "mhc_store_misses",
            "Blob reads that went to disk",
            m.store_misses.clone(),
        );
        r.register(
            "mhc_store_corrupt",
            "Blobs whose bytes on disk failed their hash check (never served)",
            m.store_corrupt.clone(),
        );
        r.register(
            "mhc_store_ram_bytes",
            "Bytes in the RAM tier",
            s.ram_bytes.clone(),
        );
        r.register(
            "mhc_store_ram_capacity_bytes",
            "Bound of the RAM tier (cache.memory_mb)",
            s.ram_capacity_bytes.clone(),
        );
        r.register(
            "mhc_store_disk_bytes",
            "Bytes in the disk tier",
            s.disk_bytes.clone(),
        );
        r.register(
            "mhc_store_disk_capacity_bytes",
            "Bound of the disk tier (cache.disk_gb)",
            s.disk_capacity_bytes.clone(),
        );
        r.register(
            "mhc_contents",
            "Content ids this node holds a manifest for",
            s.contents.clone(),
        );
        r.register("mhc_ingests", "Ingests by outcome", m.ingests.clone());
        r.register(
            "mhc_quic_responses",
            "QUIC data-plane answers to other nodes, by request kind and outcome",
            m.quic_responses.clone(),
        );
        r.register(
            "mhc_http_connections_closed",
            "Viewer connections the node closed or refused: first_bytes_timeout (nothing, or \
             half a preface, within http.header_read_timeout_ms), header_timeout (a request \
             head begun but not finished within it), idle (http.idle_timeout_ms), send_stalled \
             (a response the client stopped reading for http.idle_timeout_ms), per_client \
             (http.max_connections_per_client), tls_handshake",
            m.http_closed.clone(),
        );
        r.register(
            "mhc_quic_refused",
            "QUIC connections refused at a cap, and hellos refused (no accepted node certificate), by reason",
            m.quic_refused.clone(),
        );
        r.register(
            "mhc_quic_body_bytes",
            "Body bytes sent to other nodes over QUIC",
            m.quic_body_bytes.clone(),
        );
        r.register(
            "mhc_fills",
            "Segments filled from a parent and verified",
            m.fills.clone(),
        );
        r.register(
            "mhc_fill_bytes",
            "Bytes filled from parents (verified)",
            m.fill_bytes.clone(),
        );
        r.register(
            "mhc_fill_failures",
            "Failed fill attempts, by reason (verification = a parent sent bytes that do not \
             match the signed manifest)",
            m.fill_failures.clone(),
        );
        r.register(
            "mhc_fill_duration_seconds",
            "Time to fill one segment from a parent",
            m.fill_duration.clone(),
        );
        r.register(
            "mhc_routing_decisions",
            "Routing decisions (/play, /v1/route, master playlists) by outcome",
            routing_by_outcome,
        );
        r.register(
            "mhc_cluster_members",
            "Other members of the cluster by state, as this node sees them",
            s.members_by_state.clone(),
        );
        r.register(
            "mhc_gossip_messages",
            "Control-plane messages accepted in or published out, by topic",
            m.gossip.clone(),
        );
        r.register(
            "mhc_gossip_rejected",
            "Control-plane messages rejected, by reason",
            m.gossip_rejected.clone(),
        );
        r.register(
            "mhc_swim_packets",
            "Membership (SWIM) datagrams accepted in or sent out",
            m.swim_packets.clone(),
        );
        r.register(
            "mhc_swim_bytes",
            "Bytes of membership (SWIM) datagrams accepted in or sent out, signature included",
            m.swim_bytes.clone(),
        );
        r.register(
            "mhc_swim_dropped",
            "Membership (SWIM) datagrams dropped, by reason",
            m.swim_dropped.clone(),
        );
        r.register(
            "mhc_emergency_commands",
            "Operator commands by outcome",
            m.emergency_commands.clone(),
        );
        r.register(
            "mhc_bad_segment_reports",
            "Reports from watch pages of segments that did not verify, by outcome",
            m.bad_segment_reports.clone(),
        );
        r.register(
            "mhc_revocations",
            "Node revocations received, by outcome (applied, known, or why refused)",
            m.revocations.clone(),
        );
        r.register(
            "mhc_revoked_nodes",
            "Node keys this node knows are revoked",
            m.revoked_nodes.clone(),
        );
        r.register(
            "mhc_mode",
            "Serving mode (1 for the current one)",
            s.mode_family.clone(),
        );
        r.register(
            "mhc_mode_changed_timestamp_seconds",
            "When the last operator command was applied here (0: never)",
            s.mode_changed.clone(),
        );
        r.register(
            "mhc_mesh_sent_bytes",
            "Payload bytes sent to other nodes over iroh-blobs",
            mesh.sent_bytes.clone(),
        );
        r.register(
            "mhc_mesh_received_bytes",
            "Payload bytes received from other nodes over iroh-blobs",
            mesh.received_bytes.clone(),
        );
        r.register(
            "mhc_mesh_provider_failures",
            "Blob requests a mesh provider failed (error, timeout or unverifiable bytes)",
            mesh.provider_failures.clone(),
        );
        r.register(
            "mhc_mesh_replications",
            "Content versions replicated completely over the mesh",
            mesh.replications.clone(),
        );
        r.register(
            "mhc_mesh_rejected",
            "Mesh content roots rejected: untrusted manifest or children not matching it",
            mesh.rejected.clone(),
        );
        r.register(
            "mhc_satellite_carousel_objects",
            "Objects in the uplink carousel",
            sat.carousel_objects.clone(),
        );
        r.register(
            "mhc_satellite_cycles",
            "Uplink carousel cycles started",
            sat.cycles.clone(),
        );
        r.register(
            "mhc_downlink_objects",
            "Broadcast objects decoded and verified, by kind",
            sat.objects_by_kind.clone(),
        );
        r.register(
            "mhc_downlink_objects_rejected",
            "Broadcast objects refused",
            sat.objects_rejected.clone(),
        );
        r.register(
            "mhc_downlink_objects_incomplete",
            "Broadcast objects partly received now",
            sat.objects_incomplete.clone(),
        );
        r.register(
            "mhc_downlink_contents",
            "Content versions completed from the broadcast",
            sat.contents_received.clone(),
        );
        r.register(
            "mhc_downlink_malformed",
            "Malformed broadcast datagrams dropped",
            sat.malformed.clone(),
        );
        r.register(
            "mhc_downlink_foreign_datagrams",
            "Broadcast datagrams dropped for coming from no satellite.downlink_sources address",
            sat.foreign.clone(),
        );
        r.register(
            "mhc_downlink_objects_late",
            "Objects completed in a later cycle than their first packet",
            sat.objects_late.clone(),
        );
        drop(r);
        m
    }

    /// Registers a metric a plane owns, exposed after those registered before it. `help` is
    /// one sentence without its full stop, which the encoder adds; a counter's `name` has no
    /// `_total`, which the encoder appends to its samples.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.write().register(name, help, metric);
    }

    /// Registers metrics that are read from their owner at every scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry
            .write()
            .register_collector(Box::new(collector));
    }

    /// Everything registered, in the OpenMetrics text format ([`CONTENT_TYPE`]), with the
    /// point-in-time values of `g`.
    pub fn encode(&self, g: &Gauges) -> String {
        self.scrape.set(g);
        let mut out = String::with_capacity(8192);
        // Writing into a String does not fail, and no metric or collector of ours returns an
        // error; should one ever, the scrape is cut short and says so in the log.
        if let Err(err) = text::encode(&mut out, &self.registry.read()) {
            tracing::error!(error = %err, "encoding the metrics");
        }
        out
    }

    /// Counts a revocation by outcome (`applied`, `known` or why it was refused) and sets the
    /// number of revoked keys.
    pub fn record_revocation(&self, outcome: &'static str, revoked_nodes: usize) {
        self.revocations
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.revoked_nodes.set(revoked_nodes as i64);
    }

    /// Sets the number of revoked keys (at start, from the stored list).
    pub fn set_revoked_nodes(&self, revoked_nodes: usize) {
        self.revoked_nodes.set(revoked_nodes as i64);
    }

    /// Counts an emergency command by outcome (`applied` or the rejection reason).
    pub fn record_emergency(&self, outcome: &'static str) {
        self.emergency_commands
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts a bad-segment report by outcome (`accepted`, `malformed`, `too_large`).
    pub fn record_bad_segment_report(&self, outcome: &'static str) {
        self.bad_segment_reports
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts one answered viewer request.
    pub fn record_request(
        &self,
        route: &'static str,
        status: u16,
        body_bytes: u64,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.response_bytes.inc_by(body_bytes);
        self.request_duration.observe(took.as_secs_f64());
    }

    /// Counts body bytes sent from a file by the kernel.
    pub fn record_file_body(&self, bytes: u64) {
        self.file_body_bytes.inc_by(bytes);
    }

    /// A viewer connection opened.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
        self.connections.inc();
    }

    /// A viewer connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// Viewer connections closed or refused for `reason` so far.
    #[cfg(test)]
    pub fn http_closed(&self, reason: &'static str) -> u64 {
        self.http_closed
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// Viewer connections open now.
    pub fn connections_open(&self) -> i64 {
        self.connections_open.get()
    }

    /// A blob was served from the RAM tier.
    pub fn store_hit(&self) {
        self.store_hits.inc();
    }

    /// A blob had to be read from disk.
    pub fn store_miss(&self) {
        self.store_misses.inc();
    }

    /// A blob on disk failed its hash check.
    pub fn store_corrupt(&self) {
        self.store_corrupt.inc();
    }

    /// Counts one ingest by outcome (`published`, `unchanged`, `failed`).
    pub fn record_ingest(&self, outcome: &'static str) {
        self.ingests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Body bytes sent to viewers so far.
    pub fn response_bytes(&self) -> u64 {
        self.response_bytes.get()
    }

    /// Counts one gossip message accepted in or published out (`direction` is `in` or `out`).
    pub fn record_gossip(&self, direction: &'static str, topic: &'static str) {
        self.gossip
            .get_or_create(&GossipLabels { direction, topic })
            .inc();
    }

    /// Counts one membership datagram of `bytes` accepted in or sent out (`direction` is `in`
    /// or `out`).
    pub fn record_swim(&self, direction: &'static str, bytes: usize) {
        let labels = DirectionLabel { direction };
        self.swim_packets.get_or_create(&labels).inc();
        self.swim_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    /// Counts one membership datagram dropped, by reason.
    pub fn record_swim_dropped(&self, reason: &'static str) {
        self.swim_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one gossip message rejected, by reason.
    pub fn record_gossip_rejected(&self, reason: &'static str) {
        self.gossip_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one answer of the QUIC data plane (`kind`: manifest/segment/init; `outcome`:
    /// ok/not_found/busy/error) and its body bytes.
    pub fn record_quic_response(&self, kind: &'static str, outcome: &'static str, body: u64) {
        self.quic_responses
            .get_or_create(&QuicLabels { kind, outcome })
            .inc();
        self.quic_body_bytes.inc_by(body);
    }

    /// Counts one viewer connection the node closed or refused, by reason.
    pub fn record_http_closed(&self, reason: &'static str) {
        self.http_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one refused QUIC hello (`reason`: not_enrolled/certificate) or connection
    /// (`reason`: a [`mhc_transport::Refusal`] label).
    pub fn record_quic_refused(&self, reason: &'static str) {
        self.quic_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one verified fill from a parent.
    pub fn record_fill(&self, bytes: u64, took: Duration) {
        self.fills.inc();
        self.fill_bytes.inc_by(bytes);
        self.fill_duration.observe(took.as_secs_f64());
    }

    /// Counts one failed fill attempt from one parent (`verification`, `unreachable`,
    /// `bad_manifest`).
    pub fn record_fill_failure(&self, reason: &'static str) {
        self.fill_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one routing decision by outcome: `geo`, `fallback` or `no_candidate` (anything
    /// else counts as `no_candidate`).
    pub fn record_routing_decision(&self, outcome: &'static str) {
        let i = ROUTING_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(2);
        self.routing_decisions[i].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families of an exposition as their samples are named (a counter's end in `_total`),
    /// in order. The end-to-end tests check the shape of a whole `/metrics` in detail.
    fn scraped_families(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| match l.split_once(' ') {
                Some((name, "counter")) => format!("{name}_total"),
                Some((name, _)) => name.to_owned(),
                None => panic!("TYPE without a type: {l}"),
            })
            .collect()
    }

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.record_request("segment", 200, 100, Duration::from_micros(300));
        m.record_request("segment", 200, 50, Duration::from_millis(3));
        m.record_request("playlist", 404, 0, Duration::from_secs(10));
        let text = m.encode(&Gauges {
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

    #[test]
    fn names_labels_and_integer_samples_are_those_dashboards_know() {
        let m = Metrics::default();
        m.record_request("segment", 200, 100, Duration::from_micros(300));
        m.connection_opened();
        m.record_ingest("published");
        m.record_quic_response("segment", "ok", 10);
        m.record_fill(10, Duration::from_millis(2));
        m.record_fill_failure("verification");
        m.record_routing_decision("geo");
        m.record_gossip("in", "mhc/health/1");
        m.record_gossip_rejected("malformed");
        m.record_swim("in", 100);
        m.record_swim_dropped("not_member");
        m.record_emergency("applied");
        m.mesh.sent_bytes.inc_by(7);
        m.broadcast.objects_received[1].inc();
        mirror_total(&m.broadcast.cycles, 4);
        m.broadcast.carousel_objects.set(3);
        let outbox = CountGauge::default();
        m.register(
            "mhc_reports_outbox",
            "Registered by a plane",
            outbox.clone(),
        );
        outbox.set(2);
        let text = m.encode(&Gauges {
            role: "edge",
            ram_bytes: 1024,
            members: (2, 1, 0),
            emergency: true,
            mode_since_ms: 1_500,
            ..Gauges::default()
        });

        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP ")).count(),
            text.lines().filter(|l| l.starts_with("# TYPE ")).count()
        );
        assert_eq!(
            scraped_families(&text),
            [
                "mhc_build_info",
                "mhc_uptime_seconds",
                "mhc_http_requests_total",
                "mhc_http_response_body_bytes_total",
                "mhc_http_file_body_bytes_total",
                "mhc_http_request_duration_seconds",
                "mhc_http_connections_open",
                "mhc_http_connections_total",
                "mhc_store_hits_total",
                "mhc_store_misses_total",
                "mhc_store_corrupt_total",
                "mhc_store_ram_bytes",
                "mhc_store_ram_capacity_bytes",
                "mhc_store_disk_bytes",
                "mhc_store_disk_capacity_bytes",
                "mhc_contents",
                "mhc_ingests_total",
                "mhc_quic_responses_total",
                "mhc_quic_body_bytes_total",
                "mhc_fills_total",
                "mhc_fill_bytes_total",
                "mhc_fill_failures_total",
                "mhc_fill_duration_seconds",
                "mhc_routing_decisions_total",
                "mhc_cluster_members",
                "mhc_gossip_messages_total",
                "mhc_gossip_rejected_total",
                "mhc_swim_packets_total",
                "mhc_swim_bytes_total",
                "mhc_swim_dropped_total",
                "mhc_emergency_commands_total",
                "mhc_revoked_nodes",
                "mhc_mode",
                "mhc_mode_changed_timestamp_seconds",
                "mhc_mesh_sent_bytes_total",
                "mhc_mesh_received_bytes_total",
                "mhc_mesh_provider_failures_total",
                "mhc_mesh_replications_total",
                "mhc_mesh_rejected_total",
                "mhc_satellite_carousel_objects",
                "mhc_satellite_cycles_total",
                "mhc_downlink_objects_total",
                "mhc_downlink_objects_rejected_total",
                "mhc_downlink_objects_incomplete",
                "mhc_downlink_contents_total",
                "mhc_downlink_malformed_total",
                "mhc_downlink_foreign_datagrams_total",
                "mhc_downlink_objects_late_total",
                "mhc_reports_outbox",
            ]
        );
        // Integer-valued samples stay integers; the label sets known up front are all there.
        let build = format!(
            "mhc_build_info{{version=\"{}\",role=\"edge\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        for sample in [
            build.as_str(),
            "mhc_http_connections_open 1",
            "mhc_store_ram_bytes 1024",
            "mhc_fill_failures_total{reason=\"verification\"} 1",
            "mhc_routing_decisions_total{outcome=\"geo\"} 1",
            "mhc_routing_decisions_total{outcome=\"no_candidate\"} 0",
            "mhc_cluster_members{state=\"alive\"} 2",
            "mhc_cluster_members{state=\"dead\"} 0",
            "mhc_gossip_messages_total{direction=\"in\",topic=\"mhc/health/1\"} 1",
            "mhc_mode{mode=\"normal\"} 0",
            "mhc_mode{mode=\"emergency\"} 1",
            "mhc_mode_changed_timestamp_seconds 1.5",
            "mhc_mesh_sent_bytes_total 7",
            "mhc_satellite_carousel_objects 3",
            "mhc_satellite_cycles_total 4",
            "mhc_downlink_objects_total{kind=\"manifest\"} 0",
            "mhc_downlink_objects_total{kind=\"segment\"} 1",
            "mhc_reports_outbox 2",
        ] {
            assert!(
                text.lines().any(|l| l == sample),
                "{sample} missing:\n{text}"
            );
        }
    }
}
