//! The satellite downlink receiver (any role with `satellite.downlink`): decodes objects,
//! checks each one before anything is stored — a manifest's signature against
//! `trust.publishers`, a segment's hash against a verified manifest, a bulletin's operator
//! signature — and commits a content once every segment of a verified manifest is in; from
//! then on the node holds and serves it like a mesh node. Nothing is ever sent back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use mhc_manifest::{Hash32, SignedManifest};
use mhc_transport::carousel::{
    bind_receiver, run_receiver, Assembler, AssemblerConfig, ConfigError, Event, ObjectKind,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::{MAX_ORPHAN_BYTES, PROGRESS_REPORT};
use crate::control::ClusterHandle;
use crate::core::catalog::CatalogError;
use crate::core::metrics::mirror_total;
use crate::core::Core;

/// A verified manifest whose segments are still arriving.
struct Pending {
    signed: SignedManifest,
    missing: HashSet<Hash32>,
}

/// Where the broadcast may come from, each source with its own assembler: datagrams from one
/// source (or forged with its address) can evict only that source's objects in progress. No
/// sources configured: one assembler for any address.
struct Sources {
    networks: Vec<ipnet::IpNet>,
    assemblers: Vec<Arc<Mutex<Assembler>>>,
}

impl Sources {
    fn new(networks: &[ipnet::IpNet]) -> Result<Self, ConfigError> {
        let whole = AssemblerConfig::default();
        let config = if networks.len() > 1 {
            // The receiver's memory bound is shared; each source still fits its largest
            // object twice.
            let share = whole.max_buffered_bytes / networks.len() as u64;
            AssemblerConfig {
                max_buffered_bytes: share.max(2 * whole.max_object_bytes),
                max_in_progress: (whole.max_in_progress / networks.len()).max(4),
                ..whole
            }
        } else {
            whole
        };
        let assemblers = (0..networks.len().max(1))
            .map(|_| Assembler::new(config.clone()).map(|a| Arc::new(Mutex::new(a))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            networks: networks.to_vec(),
            assemblers,
        })
    }

    /// The assembler for datagrams from `ip`, or `None` when `ip` is no source.
    fn assembler_for(&self, ip: IpAddr) -> Option<Arc<Mutex<Assembler>>> {
        if self.networks.is_empty() {
            return self.assemblers.first().cloned();
        }
        // A socket bound to [::] sees IPv4 senders as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let i = self.networks.iter().position(|n| n.contains(&ip))?;
        self.assemblers.get(i).cloned()
    }

    /// Objects in progress and malformed datagrams, over every source.
    fn totals(&self) -> (usize, u64) {
        self.assemblers.iter().fold((0, 0), |(n, m), a| {
            let a = a.lock();
            (n + a.incomplete().len(), m + a.stats().malformed)
        })
    }
}

/// Receives the broadcast on `addr` until shutdown.
pub async fn run_downlink(
    state: Arc<Core>,
    cluster: ClusterHandle,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let socket = match bind_receiver(addr).await {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, %addr, "satellite downlink socket");
            return;
        }
    };
    let sources = match Sources::new(&state.config.satellite.downlink_sources) {
        Ok(s) => Arc::new(s),
        Err(err) => {
            tracing::error!(error = %err, "satellite downlink not started");
            return;
        }
    };
    if state.config.satellite.downlink_sources.is_empty() {
        tracing::warn!(
            %addr,
            "satellite downlink listening to datagrams from any address; \
             set satellite.downlink_sources to the receiver's"
        );
    } else {
        tracing::info!(%addr, sources = ?state.config.satellite.downlink_sources, "satellite downlink listening");
    }
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let receiver = {
        let (sources, core) = (Arc::clone(&sources), Arc::clone(&state));
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            let route = |from: SocketAddr| {
                let assembler = sources.assembler_for(from.ip());
                if assembler.is_none() {
                    core.metrics.broadcast.foreign.inc();
                }
                assembler
            };
            if let Err(err) = run_receiver(&socket, route, tx, stopped).await {
                tracing::error!(error = %err, "satellite downlink failed");
            }
        })
    };
    let mut pending: HashMap<(String, u64), Pending> = HashMap::new();
    let mut orphans: VecDeque<(Hash32, Bytes)> = VecDeque::new();
    let mut orphan_bytes = 0usize;
    let mut report = tokio::time::interval(PROGRESS_REPORT);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = report.tick() => {
                let (incomplete, malformed) = sources.totals();
                let sat = &state.metrics.broadcast;
                sat.objects_incomplete.set(incomplete as u64);
                mirror_total(&sat.malformed, malformed);
            }
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Complete { kind, bytes, first_cycle, cycle, .. } => {
                        if cycle != first_cycle {
                            state.metrics.broadcast.objects_late.inc();
                        }
                        // Stores blobs and commits manifests: disk work, off the worker's queue.
                        crate::core::blocking(|| on_object(&state, &cluster, kind, bytes, &mut pending, &mut orphans, &mut orphan_bytes));
                    }
                    Event::Corrupt { id, kind } => {
                        state.metrics.broadcast.objects_rejected.inc();
                        tracing::warn!(object = %id, ?kind, "broadcast object did not hash to its id; dropped");
                    }
                }
            }
        }
    }
    let _ = receiver.await;
}

fn on_object(
    state: &Core,
    cluster: &ClusterHandle,
    kind: ObjectKind,
    bytes: Bytes,
    pending: &mut HashMap<(String, u64), Pending>,
    orphans: &mut VecDeque<(Hash32, Bytes)>,
    orphan_bytes: &mut usize,
) {
    let sat = &state.metrics.broadcast;
    let hash = *blake3::hash(&bytes).as_bytes();
    match kind {
        ObjectKind::Bulletin => match cluster.obey(state, &bytes, "satellite") {
            Ok(()) | Err(crate::core::emergency::Rejected::Stale { .. }) => {
                sat.objects_received[2].inc();
            }
            Err(_) => {
                sat.objects_rejected.inc();
            }
        },
        ObjectKind::Manifest => {
            let signed = match SignedManifest::decode(&bytes)
                .and_then(|s| s.verify(state.catalog.trusted()).map(|()| s))
            {
                Ok(s) => s,
                Err(err) => {
                    sat.objects_rejected.inc();
                    tracing::warn!(error = %err, "broadcast manifest not trusted; dropped");
                    return;
                }
            };
            sat.objects_received[0].inc();
            let m = &signed.manifest;
            let key = (m.content_id.to_string(), m.version);
            if pending.contains_key(&key)
                || state
                    .catalog
                    .latest(&m.content_id)
                    .is_some_and(|p| p.manifest().version >= m.version)
            {
                return;
            }
            let missing: HashSet<Hash32> = m
                .hls
                .init
                .iter()
                .map(|i| i.hash)
                .chain(m.segments.iter().map(|s| s.hash))
                .filter(|h| !state.store.disk().contains(h))
                .collect();
            pending.insert(key.clone(), Pending { signed, missing });
            // Segments that came first.
            let mut kept = VecDeque::new();
            while let Some((h, b)) = orphans.pop_front() {
                if pending[&key].missing.contains(&h) {
                    *orphan_bytes -= b.len();
                    store_segment(state, &h, &b, pending);
                } else {
                    kept.push_back((h, b));
                }
            }
            *orphans = kept;
            commit_complete(state, pending);
        }
        ObjectKind::Segment => {
            let wanted = pending.values().any(|p| p.missing.contains(&hash));
            if wanted {
                sat.objects_received[1].inc();
                store_segment(state, &hash, &bytes, pending);
                commit_complete(state, pending);
            } else if state.store.disk().contains(&hash) {
                // A repeat from a later cycle of something already held: checked by its hash
                // on the way in, nothing to store (and no scan of the catalog per datagram
                // burst).
                sat.objects_received[1].inc();
            } else if state.catalog.names_blob(&hash) {
                // Held content whose copy here was lost (evicted): restore it.
                sat.objects_received[1].inc();
                let _ = state.store.disk().put_verified(&hash, &bytes);
            } else {
                // Its manifest may come later in the cycle: keep it, bounded, unverified and
                // unserved until then.
                *orphan_bytes += bytes.len();
                orphans.push_back((hash, bytes));
                while *orphan_bytes > MAX_ORPHAN_BYTES {
                    match orphans.pop_front() {
                        Some((_, b)) => *orphan_bytes -= b.len(),
                        None => break,
                    }
                }
            }
        }
    }
}

fn store_segment(
    state: &Core,
    hash: &Hash32,
    bytes: &[u8],
    pending: &mut HashMap<(String, u64), Pending>,
) {
    // put_verified hashes again: nothing unverified is ever stored.
    match state.store.disk().put_verified(hash, bytes) {
        Ok(_) => {
            for p in pending.values_mut() {
                p.missing.remove(hash);
            }
        }
        Err(err) => tracing::warn!(error = %err, "storing a broadcast segment"),
    }
}

fn commit_complete(state: &Core, pending: &mut HashMap<(String, u64), Pending>) {
    let done: Vec<(String, u64)> = pending
        .iter()
        .filter(|(_, p)| p.missing.is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    for key in done {
        let p = pending.remove(&key).expect("listed above");
        match state.catalog.publish(p.signed) {
            Ok(_) | Err(CatalogError::Stale { .. }) => {
                state.metrics.broadcast.contents_received.inc();
                tracing::info!(content = %key.0, version = key.1, "received whole from the satellite");
            }
            Err(err) => {
                tracing::error!(error = %err, content = %key.0, "committing a broadcast manifest")
            }
        }
    }
}
