//! The broadcast plane: the satellite uplink's carousel and the downlink receiver.
//!
//! **Uplink** (role `satellite-uplink`): holds, through mesh replication, the essential content
//! of the active emergency and whatever its operator pinned (what it is configured to carry),
//! and sends a carousel of them to `satellite.uplink`: each version's signed manifest, its init
//! and media segments, and the last operator command as a signed bulletin, every object cut
//! into RaptorQ symbols plus `repair_overhead_percent` of repair symbols, paced to
//! `rate_kbps`, repeated in cycles ([`mhc_transport::carousel`]).
//!
//! **Downlink** (any role with `satellite.downlink`): decodes objects, checks each one before
//! anything is stored — a manifest's signature against `trust.publishers`, a segment's hash
//! against a verified manifest, a bulletin's operator signature — and commits a content once
//! every segment of a verified manifest is in; from then on it holds and serves it like a
//! mesh node. Nothing is ever sent back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mhc_manifest::{Hash32, SignedManifest};
use mhc_transport::carousel::{
    bind_receiver, bind_sender, run_receiver, run_sender, Assembler, AssemblerConfig, Carousel,
    CarouselConfig, Event, ObjectKind, SenderOptions,
};
use tokio::sync::{mpsc, watch};

use crate::catalog::{CatalogError, Published};
use crate::state::NodeState;

/// How often the uplink looks at what it should carry, and the receiver reports progress.
const REFRESH: Duration = Duration::from_millis(500);
/// How often the receiver publishes the number of incomplete objects.
const PROGRESS_REPORT: Duration = Duration::from_millis(100);
/// Segments that arrived before their manifest, kept (bounded) until it does.
const MAX_ORPHAN_BYTES: usize = 256 * 1024 * 1024;

/// Broadcast-plane counters and gauges for `/metrics`.
#[derive(Debug, Default)]
pub struct SatelliteMetrics {
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

impl SatelliteMetrics {
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

// ---------------------------------------------------------------------------------------------
// Uplink

/// Runs the uplink carousel until shutdown.
pub async fn run_uplink(
    state: Arc<NodeState>,
    target: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let sat = &state.config.satellite;
    let config = CarouselConfig {
        repair_overhead_percent: sat.repair_overhead_percent,
        ..CarouselConfig::default()
    };
    let carousel = match Carousel::new(config) {
        Ok(c) => Arc::new(Mutex::new(c)),
        Err(err) => {
            tracing::error!(error = %err, "satellite carousel not started");
            return;
        }
    };
    let options = SenderOptions {
        rate_kbps: sat.rate_kbps,
        ..SenderOptions::default()
    };
    let socket = match bind_sender(target, &options).await {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, %target, "satellite uplink socket");
            return;
        }
    };
    tracing::info!(%target, rate_kbps = sat.rate_kbps, repair = sat.repair_overhead_percent, "satellite uplink started");
    let sender = {
        let carousel = Arc::clone(&carousel);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            match run_sender(&socket, target, carousel, &options, stopped).await {
                Ok(stats) => tracing::info!(
                    cycles = stats.cycles,
                    datagrams = stats.datagrams,
                    "satellite uplink stopped"
                ),
                Err(err) => tracing::error!(error = %err, "satellite uplink failed"),
            }
        })
    };
    let mut carried: HashSet<(String, u64, u64)> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            () = tokio::time::sleep(REFRESH) => {}
        }
        let wanted = uplink_set(&state);
        let fingerprint: HashSet<(String, u64, u64)> = wanted
            .contents
            .iter()
            .map(|p| (p.manifest().content_id.to_string(), p.manifest().version, 0))
            .chain(std::iter::once((
                "bulletin".to_owned(),
                wanted.bulletin_seq,
                1,
            )))
            .collect();
        if fingerprint != carried {
            match uplink_objects(&state, &wanted).await {
                Ok(objects) => {
                    let n = objects.len();
                    let encoded = tokio::task::spawn_blocking({
                        let carousel = Arc::clone(&carousel);
                        move || carousel.lock().expect("carousel lock").replace_all(objects)
                    })
                    .await;
                    match encoded {
                        Ok(Ok(_)) => {
                            carried = fingerprint;
                            state
                                .satellite
                                .carousel_objects
                                .store(n as u64, Ordering::Relaxed);
                            tracing::info!(
                                objects = n,
                                contents = wanted.contents.len(),
                                "carousel updated"
                            );
                        }
                        Ok(Err(err)) => tracing::error!(error = %err, "carousel update refused"),
                        Err(err) => tracing::error!(error = %err, "carousel update failed"),
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %format!("{err:#}"), "carousel content not all readable yet")
                }
            }
        }
        let cycles = carousel.lock().expect("carousel lock").cycle_number();
        state
            .satellite
            .cycles
            .store(u64::from(cycles), Ordering::Relaxed);
    }
    let _ = sender.await;
}

/// What the uplink carries now.
struct UplinkSet {
    contents: Vec<Arc<Published>>,
    bulletin: Option<Vec<u8>>,
    bulletin_seq: u64,
}

fn uplink_set(state: &NodeState) -> UplinkSet {
    let mut ids: Vec<String> = state.essential_contents();
    ids.extend(state.mesh.pins().list());
    ids.sort();
    ids.dedup();
    let contents = ids
        .iter()
        .filter_map(|id| id.parse().ok())
        .filter_map(|id| state.catalog.latest(&id))
        .filter(|p| {
            // Only what this node holds whole (replicated), never a partial fill.
            state
                .mesh
                .held(p.manifest().content_id.as_str())
                .is_some_and(|h| h.version == p.manifest().version)
        })
        .collect();
    let mode = state.emergency.mode();
    UplinkSet {
        contents,
        bulletin: mode.last.as_ref().map(|c| c.encode()),
        bulletin_seq: mode.seq(),
    }
}

async fn uplink_objects(
    state: &NodeState,
    set: &UplinkSet,
) -> anyhow::Result<Vec<(ObjectKind, Bytes)>> {
    let mut out = Vec::new();
    if let Some(b) = &set.bulletin {
        out.push((ObjectKind::Bulletin, Bytes::from(b.clone())));
    }
    for p in &set.contents {
        out.push((ObjectKind::Manifest, p.encoded.clone()));
        let m = p.manifest();
        let hashes = m
            .hls
            .init
            .iter()
            .map(|i| i.hash)
            .chain(m.segments.iter().map(|s| s.hash));
        for h in hashes {
            out.push((ObjectKind::Segment, state.store.get(&h).await?));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Downlink

/// A verified manifest whose segments are still arriving.
struct Pending {
    signed: SignedManifest,
    missing: HashSet<Hash32>,
}

/// Receives the broadcast on `addr` until shutdown.
pub async fn run_downlink(
    state: Arc<NodeState>,
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
                let a = assembler.lock().expect("assembler lock");
                let sat = &state.satellite;
                sat.objects_incomplete.store(a.incomplete().len() as u64, Ordering::Relaxed);
                sat.malformed.store(a.stats().malformed, Ordering::Relaxed);
            }
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Complete { kind, bytes, first_cycle, cycle, .. } => {
                        if cycle != first_cycle {
                            state.satellite.objects_late.fetch_add(1, Ordering::Relaxed);
                        }
                        on_object(&state, kind, bytes, &mut pending, &mut orphans, &mut orphan_bytes);
                    }
                    Event::Corrupt { id, kind } => {
                        state.satellite.objects_rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(object = %id, ?kind, "broadcast object did not hash to its id; dropped");
                    }
                }
            }
        }
    }
    let _ = receiver.await;
}

fn on_object(
    state: &NodeState,
    kind: ObjectKind,
    bytes: Bytes,
    pending: &mut HashMap<(String, u64), Pending>,
    orphans: &mut VecDeque<(Hash32, Bytes)>,
    orphan_bytes: &mut usize,
) {
    let sat = &state.satellite;
    let hash = *blake3::hash(&bytes).as_bytes();
    match kind {
        ObjectKind::Bulletin => match crate::emergency::apply(state, &bytes, "satellite") {
            Ok(()) | Err(crate::emergency::Rejected::Stale { .. }) => {
                sat.objects_received[2].fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                sat.objects_rejected.fetch_add(1, Ordering::Relaxed);
            }
        },
        ObjectKind::Manifest => {
            let signed = match SignedManifest::decode(&bytes)
                .and_then(|s| s.verify(state.catalog.trusted()).map(|()| s))
            {
                Ok(s) => s,
                Err(err) => {
                    sat.objects_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, "broadcast manifest not trusted; dropped");
                    return;
                }
            };
            sat.objects_received[0].fetch_add(1, Ordering::Relaxed);
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
                sat.objects_received[1].fetch_add(1, Ordering::Relaxed);
                store_segment(state, &hash, &bytes, pending);
                commit_complete(state, pending);
            } else if state.store.disk().contains(&hash) {
                // A repeat from a later cycle of something already held: checked by its hash
                // on the way in, nothing to store (and no scan of the catalog per datagram
                // burst).
                sat.objects_received[1].fetch_add(1, Ordering::Relaxed);
            } else if listed_in_catalog(state, &hash) {
                // Held content whose copy here was lost (evicted): restore it.
                sat.objects_received[1].fetch_add(1, Ordering::Relaxed);
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

fn listed_in_catalog(state: &NodeState, hash: &Hash32) -> bool {
    state.catalog.list().iter().any(|p| {
        let m = p.manifest();
        m.segments.iter().any(|s| &s.hash == hash)
            || m.hls.init.as_ref().is_some_and(|i| &i.hash == hash)
    })
}

fn store_segment(
    state: &NodeState,
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

fn commit_complete(state: &NodeState, pending: &mut HashMap<(String, u64), Pending>) {
    let done: Vec<(String, u64)> = pending
        .iter()
        .filter(|(_, p)| p.missing.is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    for key in done {
        let p = pending.remove(&key).expect("listed above");
        match state.catalog.publish(p.signed) {
            Ok(_) | Err(CatalogError::Stale { .. }) => {
                state
                    .satellite
                    .contents_received
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(content = %key.0, version = key.1, "received whole from the satellite");
            }
            Err(err) => {
                tracing::error!(error = %err, content = %key.0, "committing a broadcast manifest")
            }
        }
    }
}
