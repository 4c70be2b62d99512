//! This node as operators see it: the `self` of `/v1/cluster` and `mhc-node status`, and the
//! gauges `/metrics` reads at scrape time.

use std::sync::Arc;

use serde_json::json;

use crate::control::{BoundAddrs, ClusterHandle};
use crate::core::metrics::Gauges;
use crate::core::Core;
use crate::ha::follow::Lag;

/// What the viewer and admin planes say about this node.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    core: Arc<Core>,
    cluster: ClusterHandle,
    addrs: BoundAddrs,
    /// A standby origin's replication lag (an origin with `[ha]`).
    lag: Option<Arc<Lag>>,
}

impl NodeStatus {
    /// The status of the node of `core`, whose planes listen at `addrs` (and whose replication
    /// lag is `lag`, at an origin with `[ha]`).
    pub fn new(
        core: Arc<Core>,
        cluster: ClusterHandle,
        addrs: BoundAddrs,
        lag: Option<Arc<Lag>>,
    ) -> Self {
        Self {
            core,
            cluster,
            addrs,
            lag,
        }
    }

    /// Where the planes listen.
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// This node as `/v1/cluster` and `mhc-node status` describe it.
    pub fn self_description(&self) -> serde_json::Value {
        let core = &self.core;
        let c = &core.config;
        let emergency = core.emergency.state();
        let store = &core.store;
        json!({
            "peer_id": core.identity.peer_id().to_string(),
            "public_key": core.identity.public_key_hex(),
            "role": c.role.as_str(),
            "region": c.region,
            "location": c.location.as_ref().map(|l| json!({"lat": l.lat, "lon": l.lon})),
            "state": "alive",
            "incarnation": core.incarnation,
            "mode": core.mode().as_str(),
            "mode_since_ms": emergency.since_ms,
            "emergency": emergency.to_json(),
            "revocations": core.admission.revocations_json(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_ms": core.uptime().as_millis() as u64,
            "addrs": {
                "http": self.addrs.http.to_string(),
                "quic": self.addrs.quic.to_string(),
                "iroh": self.addrs.iroh.to_string(),
            },
            "load": {
                "connections_open": core.metrics.connections_open(),
                "ram_bytes": store.ram().used_bytes(),
                "disk_bytes": store.disk().used_bytes(),
                "disk_capacity_bytes": store.disk().capacity_bytes(),
            },
            "contents": core.catalog.len(),
            "ha": self.ha(),
        })
    }

    /// This origin's standing in its election (null for the other roles): `state` (alone, electing, primary, standby,
    /// fenced), `epoch`, `primary` (peer id) and `lag_ms` (a standby's: how long since it last held everything
    /// its primary had; null otherwise).
    fn ha(&self) -> serde_json::Value {
        use crate::core::writes::Standing;
        if self.core.config.role != mhc_config::Role::Origin {
            return serde_json::Value::Null;
        }
        let standing = self.core.writes.standing();
        let primary = match &standing {
            Standing::Primary { .. } | Standing::Alone => {
                Some(self.core.identity.peer_id().to_string())
            }
            Standing::Standby { primary, .. } => primary.clone(),
            Standing::Electing | Standing::Fenced { .. } => None,
        };
        json!({
            "state": standing.name(),
            "epoch": standing.epoch(),
            "primary": primary,
            "lag_ms": match standing {
                Standing::Standby { .. } => self.lag.as_ref().and_then(|l| l.millis()),
                _ => None,
            },
        })
    }

    /// The admin plane's `status`: this node, its mode, the members, the contents.
    pub fn status_json(&self) -> serde_json::Value {
        let contents: Vec<_> = self
            .core
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
            "self": self.self_description(),
            "mode": self.core.mode().as_str(),
            "emergency": self.core.emergency.state().to_json(),
            "members": self.cluster.members_json(|peer| crate::status::certificate_json(&self.core, peer)),
            "contents": contents,
        })
    }

    /// Point-in-time gauges for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        let core = &self.core;
        let store = &core.store;
        Gauges {
            role: core.config.role.as_str(),
            ram_bytes: store.ram().used_bytes(),
            ram_capacity_bytes: store.ram().capacity_bytes(),
            disk_bytes: store.disk().used_bytes(),
            disk_capacity_bytes: store.disk().capacity_bytes(),
            contents: core.catalog.len() as u64,
            uptime_s: core.uptime().as_secs_f64(),
            members: self.cluster.counts(),
            emergency: core.emergency.is_emergency(),
            mode_since_ms: core.emergency.state().since_ms,
        }
    }
}

/// What this node knows of `peer`'s certificate: the one it was admitted on, while valid.
pub fn certificate_json(core: &Core, peer: &libp2p::PeerId) -> Option<serde_json::Value> {
    let key = crate::core::identity::peer_key(peer)?;
    let cert = core.admission.admitted(&key)?;
    let c = &cert.certificate;
    Some(json!({
        "serial": c.serial,
        "not_after_ms": c.not_after_ms,
        "operator": hex::encode(c.operator),
    }))
}
