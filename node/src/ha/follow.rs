//! A standby following its primary: the primary's replication log applied entry by entry, in
//! order, over the QUIC data plane, resumed from the position the standby last made durable;
//! a standby that cannot resume (a new primary, or it fell behind what the log keeps) loads a
//! snapshot of the replicated trees first.
//!
//! The catalog is not written as raw keys: a manifest the primary published is checked
//! against the trusted publishers, its blobs are copied from the primary and verified, and
//! only then is it published here, so this standby never holds a manifest whose media it
//! cannot serve, nor bytes it could not verify. The plugins' trees (inbox, royalty, ledger)
//! are written as they are; the plugin host is closed on a standby and opens on them at
//! promotion.
//!
//! Every entry is stamped with the epoch it was written in; one from another epoch than the
//! primary's that this standby follows is refused, so a deposed primary's writes never land.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::PeerId;
use mhc_manifest::SignedManifest;
use mhc_transport::{Request, ResponseHeader};
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log::{is_replicated, Entry, Op, SnapshotPair, MAX_ANSWER_BYTES};
use crate::core::catalog::{CatalogError, Published, MANIFESTS_TREE};
use crate::core::Core;
use crate::fill::{Filler, ParentAddr, Part};

/// The tree of a standby's own replication state (not replicated).
const REPLICA_TREE: &str = "ha/replica";
/// Its key: the [`Position`] applied and flushed.
const POSITION_KEY: &[u8] = b"position";
/// How long one poll waits for a new entry.
const POLL: Duration = Duration::from_secs(1);
/// Pause after a failed attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Blobs of one manifest copied at once.
const COPY_CONCURRENCY: usize = 8;

/// Where a standby stands in its primary's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The primary's epoch.
    pub epoch: u64,
    /// The last entry applied and made durable.
    pub seq: u64,
}

/// How far behind its primary this standby is, for metrics and `/v1/cluster`.
#[derive(Debug, Default)]
pub struct Lag {
    /// Entries the primary has that this standby has not applied (`u64::MAX`: unknown).
    entries: AtomicU64,
    /// Milliseconds since it last held everything the primary had (`u64::MAX`: unknown).
    millis: AtomicU64,
    entries_gauge: Gauge,
    seconds_gauge: Gauge<f64, AtomicU64>,
    /// The epoch whose primary this standby holds a consistent copy of (0: none yet).
    following: AtomicU64,
}

impl Lag {
    /// Lag figures registered as `mhc_replication_lag_entries` and `_seconds`.
    pub fn new(core: &Core) -> Arc<Self> {
        let lag = Arc::new(Lag {
            entries: AtomicU64::new(u64::MAX),
            millis: AtomicU64::new(u64::MAX),
            ..Lag::default()
        });
        core.metrics.register(
            "mhc_replication_lag_entries",
            "Entries of the primary's replication log this standby has not applied yet",
            lag.entries_gauge.clone(),
        );
        core.metrics.register(
            "mhc_replication_lag_seconds",
            "How long since this standby last held everything its primary had",
            lag.seconds_gauge.clone(),
        );
        lag
    }

    fn set(&self, entries: u64, since_caught_up: Duration) {
        let millis = u64::try_from(since_caught_up.as_millis()).unwrap_or(u64::MAX);
        self.entries.store(entries, Ordering::Relaxed);
        self.millis.store(millis, Ordering::Relaxed);
        self.entries_gauge
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.seconds_gauge.set(since_caught_up.as_secs_f64());
    }

    /// Whether this standby holds a consistent copy of the primary of `epoch`: it loaded its
    /// snapshot or resumed its log (not merely what this origin held before).
    pub fn follows(&self, epoch: u64) -> bool {
        epoch != 0 && self.following.load(Ordering::Relaxed) == epoch
    }

    /// Not following anyone (a primary, or no primary known).
    pub fn clear(&self) {
        self.following.store(0, Ordering::Relaxed);
        self.entries.store(u64::MAX, Ordering::Relaxed);
        self.millis.store(u64::MAX, Ordering::Relaxed);
        self.entries_gauge.set(0);
        self.seconds_gauge.set(0.0);
    }

    /// Milliseconds behind the primary, while following one.
    pub fn millis(&self) -> Option<u64> {
        Some(self.millis.load(Ordering::Relaxed)).filter(|m| *m != u64::MAX)
    }
}

/// The standby side of replication.
#[derive(Debug)]
pub struct Follower {
    core: Arc<Core>,
    filler: Arc<Filler>,
    lag: Arc<Lag>,
    /// Held while an entry or a snapshot page is applied; a promotion takes it, so no write
    /// of the old primary lands after this origin starts writing.
    applying: Arc<Mutex<()>>,
}

/// The primary being followed.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Its epoch.
    pub epoch: u64,
    /// Its QUIC plane.
    pub addr: ParentAddr,
}

impl Follower {
    /// A follower that applies to `core`'s stores and copies blobs through `filler`.
    pub fn new(core: Arc<Core>, filler: Arc<Filler>, lag: Arc<Lag>) -> Self {
        Follower {
            core,
            filler,
            lag,
            applying: Arc::new(Mutex::new(())),
        }
    }

    /// Waits for an entry being applied to finish; nothing is applied after this returns
    /// (the caller has stopped [`Follower::follow`]). Blocking.
    pub fn quiesce(&self) {
        drop(self.applying.lock());
        self.lag.clear();
    }

    /// Follows `leader` until cancelled (dropped), starting over after every failure.
    pub async fn follow(&self, leader: Leader, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(epoch = leader.epoch, primary = %leader.addr.addr, "following the primary");
        loop {
            let outcome = self.follow_once(&leader).await;
            if let Err(err) = outcome {
                tracing::warn!(epoch = leader.epoch, error = %format!("{err:#}"), "replication from the primary interrupted");
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    async fn follow_once(&self, leader: &Leader) -> anyhow::Result<()> {
        let epoch = leader.epoch;
        let mut after = match self.position()? {
            Some(p) if p.epoch == epoch => p.seq,
            Some(p) if p.epoch > epoch => anyhow::bail!(
                "this standby already followed epoch {}; epoch {epoch} is older and refused",
                p.epoch
            ),
            _ => self.load_snapshot(leader).await?,
        };
        self.lag.following.store(epoch, Ordering::Relaxed);
        let mut caught_up_at = Instant::now();
        loop {
            let req = Request::Replicate {
                epoch,
                after,
                wait_ms: u32::try_from(POLL.as_millis()).unwrap_or(1000),
            };
            let (header, body) = self
                .filler
                .exchange(&leader.addr, &req, MAX_ANSWER_BYTES)
                .await?;
            let last = match header {
                ResponseHeader::Entries { epoch: e, last, .. } if e == epoch => last,
                ResponseHeader::NotFound { reason } if reason.contains("start from a snapshot") => {
                    tracing::warn!(
                        epoch,
                        after,
                        reason,
                        "fell behind the primary's log: loading a snapshot"
                    );
                    after = self.load_snapshot(leader).await?;
                    continue;
                }
                other => anyhow::bail!("the primary answered {other:?}"),
            };
            let entries: Vec<Entry> =
                postcard::from_bytes(&body).context("decoding the primary's entries")?;
            for entry in entries {
                anyhow::ensure!(
                    entry.epoch == epoch,
                    "refused an entry stamped with epoch {} from the primary of epoch {epoch}",
                    entry.epoch
                );
                anyhow::ensure!(
                    entry.seq == after + 1,
                    "the primary sent entry {} after {after}",
                    entry.seq
                );
                self.apply(leader, entry).await?;
                after += 1;
            }
            self.save(Position { epoch, seq: after }).await?;
            if after >= last {
                caught_up_at = Instant::now();
            }
            self.lag
                .set(last.saturating_sub(after), caught_up_at.elapsed());
        }
    }

    /// The position this standby made durable, if any.
    fn position(&self) -> anyhow::Result<Option<Position>> {
        let tree = self.core.db.open_tree(REPLICA_TREE)?;
        Ok(tree
            .get(POSITION_KEY)?
            .and_then(|v| postcard::from_bytes(&v).ok()))
    }

    /// Makes everything applied durable, then records `position`, durably too: it is then
    /// acknowledged to the primary by the next poll.
    async fn save(&self, position: Position) -> anyhow::Result<()> {
        let db = self.core.db.clone();
        tokio::task::spawn_blocking(move || {
            db.flush()?;
            let tree = db.open_tree(REPLICA_TREE)?;
            tree.insert(POSITION_KEY, postcard::to_allocvec(&position)?)?;
            tree.flush()?;
            anyhow::Ok(())
        })
        .await?
    }

    /// Applies one entry: its manifests through the catalog (blobs first), the rest as is.
    async fn apply(&self, leader: &Leader, entry: Entry) -> anyhow::Result<()> {
        let (manifests, rest): (Vec<Op>, Vec<Op>) = entry
            .ops
            .into_iter()
            .filter(|op| is_replicated(&op.tree))
            .partition(|op| op.tree == MANIFESTS_TREE.as_bytes());
        for op in manifests {
            match op.value {
                Some(value) => self.publish(leader, &value).await?,
                // The catalog removes a manifest only when its own write failed halfway.
                None => tracing::debug!("a manifest removal by the primary is not replayed"),
            }
        }
        let rest = Entry {
            seq: entry.seq,
            epoch: entry.epoch,
            ops: rest,
        };
        let (core, applying) = (Arc::clone(&self.core), Arc::clone(&self.applying));
        tokio::task::spawn_blocking(move || {
            let _applying = applying.lock();
            let _unit = core.writes.replicating();
            rest.apply(&core.db)
        })
        .await??;
        Ok(())
    }

    /// Publishes a manifest of the primary here: checked against the trusted publishers, its
    /// blobs copied from the primary and verified first.
    async fn publish(&self, leader: &Leader, encoded: &[u8]) -> anyhow::Result<()> {
        let signed = SignedManifest::decode(encoded).context("a manifest from the primary")?;
        signed
            .verify(self.core.catalog.trusted())
            .context("a manifest from the primary that no trusted publisher signed")?;
        let (id, version) = (signed.manifest.content_id.clone(), signed.manifest.version);
        match self.core.catalog.version(&id, version) {
            Some(held) if held.encoded.as_ref() == encoded => return Ok(()),
            // This origin wrote another version under that number (as a primary whose write
            // no standby acknowledged): it and what it built on go; the primary's is the one.
            Some(_) => {
                let (core, applying, doomed) = (
                    Arc::clone(&self.core),
                    Arc::clone(&self.applying),
                    id.clone(),
                );
                let dropped = tokio::task::spawn_blocking(move || {
                    let _applying = applying.lock();
                    core.catalog.retain(|_, p| {
                        let m = p.manifest();
                        m.content_id != doomed || m.version < version
                    })
                })
                .await??;
                log_dropped(&dropped);
            }
            None => {}
        }
        let published = Arc::new(Published::new(signed.clone()));
        let m = published.manifest();
        let mut parts: Vec<Part> = m.hls.init.iter().map(|_| Part::Init).collect();
        parts.extend((0..m.segments.len()).map(Part::Segment));
        {
            use futures::stream::{self, StreamExt, TryStreamExt};
            stream::iter(parts)
                .map(|part| {
                    let published = Arc::clone(&published);
                    let id = &id;
                    async move {
                        self.filler
                            .copy_blob(&leader.addr, &published, part)
                            .await
                            .with_context(|| format!("copying {id} v{version} {part:?}"))
                    }
                })
                .buffer_unordered(COPY_CONCURRENCY)
                .try_for_each(|()| async { Ok(()) })
                .await?;
        }
        let (core, applying) = (Arc::clone(&self.core), Arc::clone(&self.applying));
        let published = tokio::task::spawn_blocking(move || {
            let _applying = applying.lock();
            let _unit = core.writes.replicating();
            core.catalog.publish(signed)
        })
        .await?;
        match published {
            Ok(_) => {
                tracing::info!(content = %id, version, "replicated a publication");
                Ok(())
            }
            // A newer version came first (a snapshot page): nothing to do.
            Err(CatalogError::Stale { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Loads the primary's replicated trees page by page; returns the log position to resume
    /// after. The plugins' trees are emptied first (and the position forgotten, so a crash
    /// halfway starts over); the catalog keeps what it has and gains what it lacks.
    async fn load_snapshot(&self, leader: &Leader) -> anyhow::Result<u64> {
        let started = Instant::now();
        self.lag.following.store(0, Ordering::Relaxed);
        let epoch = leader.epoch;
        let (db, applying) = (self.core.db.clone(), Arc::clone(&self.applying));
        tokio::task::spawn_blocking(move || {
            let _applying = applying.lock();
            db.open_tree(REPLICA_TREE)?.remove(POSITION_KEY)?;
            db.flush()?;
            for name in db.tree_names() {
                if is_replicated(&name) && name.as_ref() != MANIFESTS_TREE.as_bytes() {
                    db.open_tree(&name)?.clear()?;
                }
            }
            anyhow::Ok(())
        })
        .await??;
        let (mut tree, mut after_key) = (Vec::new(), Vec::new());
        let mut start = None;
        let mut pairs_loaded = 0u64;
        // The primary's catalog (key and hash of each version): versions held here that it
        // does not have are dropped at the end.
        let mut primary_versions = std::collections::HashMap::new();
        loop {
            let req = Request::Snapshot {
                epoch,
                tree: tree.clone(),
                after_key: after_key.clone(),
            };
            let (header, body) = self
                .filler
                .exchange(&leader.addr, &req, MAX_ANSWER_BYTES)
                .await?;
            let (at, done) = match header {
                ResponseHeader::SnapshotPage {
                    epoch: e, at, done, ..
                } if e == epoch => (at, done),
                other => anyhow::bail!("the primary answered a snapshot request with {other:?}"),
            };
            start.get_or_insert(at);
            let pairs: Vec<SnapshotPair> =
                postcard::from_bytes(&body).context("decoding a snapshot page")?;
            if let Some((t, k, _)) = pairs.last() {
                (tree, after_key) = (t.clone(), k.clone());
            }
            pairs_loaded += pairs.len() as u64;
            primary_versions.extend(
                pairs
                    .iter()
                    .filter(|(t, _, _)| t == MANIFESTS_TREE.as_bytes())
                    .map(|(_, k, v)| (k.clone(), *blake3::hash(v).as_bytes())),
            );
            let ops: Vec<Op> = pairs
                .into_iter()
                .map(|(tree, key, value)| Op {
                    tree,
                    key,
                    value: Some(value),
                })
                .collect();
            self.apply(leader, Entry { seq: 0, epoch, ops }).await?;
            if done {
                break;
            }
        }
        let (core, applying) = (Arc::clone(&self.core), Arc::clone(&self.applying));
        let dropped = tokio::task::spawn_blocking(move || {
            let _applying = applying.lock();
            core.catalog.retain(|key, p| {
                primary_versions.get(key) == Some(blake3::hash(&p.encoded).as_bytes())
            })
        })
        .await??;
        log_dropped(&dropped);
        let at = start.unwrap_or(0);
        self.save(Position { epoch, seq: at }).await?;
        self.lag.following.store(epoch, Ordering::Relaxed);
        tracing::info!(epoch, at, pairs = pairs_loaded, took = ?started.elapsed(), "loaded the primary's snapshot");
        Ok(at)
    }
}

/// Says which versions a standby dropped because its primary does not have them.
fn log_dropped(dropped: &[(mhc_manifest::ContentId, u64)]) {
    for (id, version) in dropped {
        tracing::warn!(content = %id, version, "dropped a version the primary does not have (written here, never acknowledged by a standby)");
    }
}

/// The primary's QUIC plane from its election claim.
///
/// # Errors
/// The claim's address or peer id does not parse.
pub fn leader_of(epoch: u64, peer_id: &str, quic: &str) -> anyhow::Result<Leader> {
    let peer: PeerId = peer_id.parse().context("the primary's peer id")?;
    let addr = quic.parse().context("the primary's QUIC address")?;
    Ok(Leader {
        epoch,
        addr: ParentAddr {
            addr,
            peer_id: Some(peer),
        },
    })
}
