//! What a running node shares between its planes: config, identity, store, catalog, metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mhc_config::Config;
use serde_json::json;

use crate::catalog::Catalog;
use crate::cluster::messages::WireMode;
use crate::cluster::ClusterShared;
use crate::emergency::Emergency;
use crate::fill::Filler;
use crate::geo::SharedGeo;
use crate::identity::Identity;
use crate::mesh::MeshPlane;
use crate::metrics::{Gauges, Metrics};
use crate::store::Store;

/// The shared state of one node.
#[derive(Debug)]
pub struct NodeState {
    /// Validated configuration.
    pub config: Config,
    /// The node key.
    pub identity: Identity,
    /// Segment store.
    pub store: Arc<Store>,
    /// Verified manifests.
    pub catalog: Catalog,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The sled database (catalog and, later, membership, emergency state, plugin state).
    pub db: sled::Db,
    /// Address the viewer plane is bound to (known after bind; port 0 resolved).
    pub http_addr: SocketAddr,
    /// Serialises ingests so versions are assigned one at a time.
    pub ingest_lock: Mutex<()>,
    /// Control plane: membership, announcements.
    pub cluster: ClusterShared,
    /// This run's incarnation number (grows at every start).
    pub incarnation: u64,
    /// The geo database (`geo.database`), reloaded when its files change; empty without one.
    pub geo: SharedGeo,
    /// Fill from parents over QUIC.
    pub filler: Filler,
    /// Address the QUIC data plane is bound to.
    pub quic_addr: SocketAddr,
    /// The mesh data plane (iroh endpoint and blob store).
    pub mesh: Arc<MeshPlane>,
    /// Emergency mode: the last applied operator command, persisted.
    pub emergency: Emergency,
    /// Broadcast-plane counters.
    pub satellite: crate::satellite::SatelliteMetrics,
    /// Play counting and the report outbox.
    pub reports: crate::reports::Reports,
    /// The origin's plugin host (set at start, origin role only).
    pub plugins: std::sync::OnceLock<Arc<mhc_origin::PluginHost>>,
    /// Play reports received (origin).
    pub inbox: crate::plugins::InboxMetrics,
    started: Instant,
    ready: AtomicBool,
}

impl NodeState {
    /// Assembles the state; the node is not ready until [`NodeState::set_ready`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        identity: Identity,
        store: Arc<Store>,
        catalog: Catalog,
        metrics: Arc<Metrics>,
        db: sled::Db,
        http_addr: SocketAddr,
        cluster: ClusterShared,
        incarnation: u64,
        geo: SharedGeo,
        filler: Filler,
        quic_addr: SocketAddr,
        mesh: Arc<MeshPlane>,
        emergency: Emergency,
        reports: crate::reports::Reports,
    ) -> Self {
        Self {
            config,
            identity,
            store,
            catalog,
            metrics,
            db,
            http_addr,
            ingest_lock: Mutex::new(()),
            cluster,
            incarnation,
            geo,
            filler,
            quic_addr,
            mesh,
            emergency,
            satellite: crate::satellite::SatelliteMetrics::default(),
            reports,
            plugins: std::sync::OnceLock::new(),
            inbox: crate::plugins::InboxMetrics::default(),
            started: Instant::now(),
            ready: AtomicBool::new(false),
        }
    }

    /// Marks the node ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The mode the node is in: `"normal"` or `"emergency"`.
    pub fn mode_name(&self) -> &'static str {
        self.wire_mode().as_str()
    }

    /// The mode the node is in, as heartbeats and routing carry it.
    pub fn wire_mode(&self) -> WireMode {
        if self.emergency.is_emergency() {
            WireMode::Emergency
        } else {
            WireMode::Normal
        }
    }

    /// Whether this node serves viewers in its current mode (see
    /// [`crate::routing::serves_viewers`]).
    pub fn serves_viewers(&self) -> Result<(), crate::routing::NotServing> {
        crate::routing::serves_viewers(
            self.config.role.into(),
            self.wire_mode(),
            self.config.satellite.downlink.is_some(),
        )
    }

    /// Content the current emergency command marks essential (mesh nodes replicate it). Empty
    /// in normal mode.
    pub fn essential_contents(&self) -> Vec<String> {
        self.emergency.mode().essential()
    }

    /// The emergency state as `/v1/cluster` and `status` show it.
    pub fn emergency_json(&self) -> serde_json::Value {
        let mode = self.emergency.mode();
        json!({
            "active": mode.is_emergency(),
            "seq": mode.seq(),
            "since_ms": mode.since_ms,
            "reason": mode.reason(),
            "essential": mode.essential(),
            "command_hex": mode.last.as_ref().map(|c| hex::encode(c.encode())),
        })
    }

    /// Point-in-time gauges for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            role: self.config.role.as_str(),
            ram_bytes: self.store.ram().used_bytes(),
            ram_capacity_bytes: self.store.ram().capacity_bytes(),
            disk_bytes: self.store.disk().used_bytes(),
            disk_capacity_bytes: self.store.disk().capacity_bytes(),
            contents: self.catalog.len() as u64,
            uptime_s: self.started.elapsed().as_secs_f64(),
            members: self.cluster.counts(),
            emergency: self.emergency.is_emergency(),
            mode_since_ms: self.emergency.mode().since_ms,
        }
    }

    /// This node as `/v1/cluster` and `mhc-node status` describe it.
    pub fn self_description(&self) -> serde_json::Value {
        let c = &self.config;
        json!({
            "peer_id": self.identity.peer_id().to_string(),
            "public_key": self.identity.public_key_hex(),
            "role": c.role.as_str(),
            "region": c.region,
            "location": c.location.as_ref().map(|l| json!({"lat": l.lat, "lon": l.lon})),
            "state": "alive",
            "incarnation": self.incarnation,
            "mode": self.mode_name(),
            "mode_since_ms": self.emergency.mode().since_ms,
            "emergency": self.emergency_json(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "addrs": {
                "http": self.http_addr.to_string(),
                "quic": self.quic_addr.to_string(),
                "iroh": self.mesh.local_addr().to_string(),
            },
            "load": {
                "connections_open": self.metrics.connections_open(),
                "ram_bytes": self.store.ram().used_bytes(),
                "disk_bytes": self.store.disk().used_bytes(),
                "disk_capacity_bytes": self.store.disk().capacity_bytes(),
            },
            "contents": self.catalog.len(),
        })
    }
}
