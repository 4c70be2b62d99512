//! The satellite uplink's carousel (role `satellite-uplink`): holds, through mesh replication,
//! the essential content of the active emergency and whatever its operator pinned (what it is
//! configured to carry), and sends a carousel of them to `satellite.uplink`: each version's
//! signed manifest, its init and media segments, and the last operator command as a signed
//! bulletin, every object cut into RaptorQ symbols plus `repair_overhead_percent` of repair
//! symbols, paced to `rate_kbps`, repeated in cycles ([`mhc_transport::carousel`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use mhc_transport::carousel::{
    bind_sender, run_sender, Carousel, CarouselConfig, ObjectKind, SenderOptions,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::REFRESH;
use crate::core::catalog::Published;
use crate::core::metrics::mirror_total;
use crate::core::Core;
use crate::mesh::MeshPlane;

/// Runs the uplink carousel until shutdown.
pub async fn run_uplink(
    state: Arc<Core>,
    mesh: Arc<MeshPlane>,
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
        let wanted = uplink_set(&state, &mesh);
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
                        move || carousel.lock().replace_all(objects)
                    })
                    .await;
                    match encoded {
                        Ok(Ok(_)) => {
                            carried = fingerprint;
                            state.metrics.broadcast.carousel_objects.set(n as u64);
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
        let cycles = carousel.lock().cycle_number();
        mirror_total(&state.metrics.broadcast.cycles, u64::from(cycles));
    }
    let _ = sender.await;
}

/// What the uplink carries now.
struct UplinkSet {
    contents: Vec<Arc<Published>>,
    bulletin: Option<Vec<u8>>,
    bulletin_seq: u64,
}

fn uplink_set(state: &Core, mesh: &MeshPlane) -> UplinkSet {
    let emergency = state.emergency.state();
    let mut ids: Vec<String> = emergency.essential();
    ids.extend(mesh.pins().list());
    ids.sort();
    ids.dedup();
    let contents = ids
        .iter()
        .filter_map(|id| id.parse().ok())
        .filter_map(|id| state.catalog.latest(&id))
        .filter(|p| {
            // Only what this node holds whole (replicated), never a partial fill.
            mesh.held(p.manifest().content_id.as_str())
                .is_some_and(|h| h.version == p.manifest().version)
        })
        .collect();
    UplinkSet {
        contents,
        bulletin: emergency.last.as_ref().map(|c| c.encode()),
        bulletin_seq: emergency.seq(),
    }
}

async fn uplink_objects(state: &Core, set: &UplinkSet) -> anyhow::Result<Vec<(ObjectKind, Bytes)>> {
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
