//! The satellite downlink receiver (any role with `satellite.downlink`): decodes objects,
//! checks each one before anything is stored — a manifest's signature against
//! `trust.publishers`, a segment's hash against a verified manifest, a bulletin's operator
//! signature — and commits a content once every segment of a verified manifest is in; from
//! then on the node holds and serves it like a mesh node. Nothing is ever sent back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use mhc_manifest::{Hash32, SignedManifest};
use mhc_transport::carousel::{
    bind_receiver, run_receiver, Assembler, AssemblerConfig, Event, ObjectKind,
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
    let assembler = match Assembler::new(AssemblerConfig::default()) {
        Ok(a) => Arc::new(Mutex::new(a)),
        Err(err) => {
            tracing::error!(error = %err, "satellite downlink not started");
            return;
        }
    };
    tracing::info!(%addr, "satellite downlink listening");
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let receiver = {
        let assembler = Arc::clone(&assembler);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            if let Err(err) = run_receiver(&socket, assembler, tx, stopped).await {
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
                let a = assembler.lock();
                let sat = &state.metrics.broadcast;
                sat.objects_incomplete.set(a.incomplete().len() as u64);
                mirror_total(&sat.malformed, a.stats().malformed);
            }
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Complete { kind, bytes, first_cycle, cycle, .. } => {
                        if cycle != first_cycle {
                            state.metrics.broadcast.objects_late.inc();
                        }
                        on_object(&state, &cluster, kind, bytes, &mut pending, &mut orphans, &mut orphan_bytes);
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
            } else if listed_in_catalog(state, &hash) {
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

fn listed_in_catalog(state: &Core, hash: &Hash32) -> bool {
    state.catalog.list().iter().any(|p| {
        let m = p.manifest();
        m.segments.iter().any(|s| &s.hash == hash)
            || m.hls.init.as_ref().is_some_and(|i| &i.hash == hash)
    })
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
