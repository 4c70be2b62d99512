//! The state every plane shares, and nothing else: configuration, identity and its certificate,
//! the verified catalog, the blob store, the emergency state and the metrics. No sockets, no tasks.
//!
//! Planes are built from an `Arc<Core>` plus the narrow handles they need (the control plane's
//! [`ClusterHandle`](crate::control::ClusterHandle), the filler, the mesh plane); the
//! composition root ([`crate::node`]) builds the core first and the planes around it.

pub mod admission;
pub mod catalog;
pub mod emergency;
pub mod enrollment;
pub mod identity;
pub mod metrics;
pub mod store;
pub mod writes;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ed25519_dalek::VerifyingKey;
use mhc_clock::Clock;
use mhc_config::Config;

use crate::role::{Mode, RolePolicy};
use admission::Admission;
use catalog::Catalog;
use emergency::Emergency;
use enrollment::Enrollment;
use identity::Identity;
use metrics::Metrics;
use store::{BlobSource, Store};
use writes::Writes;

/// sled tree of the node's own lifecycle facts.
const NODE_TREE: &str = "cluster";
/// Key of the incarnation counter (in the control plane's tree, where it always was).
const INCARNATION_KEY: &[u8] = b"incarnation";

/// The shared state of one node.
#[derive(Debug)]
pub struct Core {
    /// Validated configuration.
    pub config: Config,
    /// The node key.
    pub identity: Identity,
    /// The key that signs manifests and the ledger's heads: `origin.publisher_key`, shared by
    /// the origins of one `[ha]` cluster, or the node key.
    pub publisher: ed25519_dalek::SigningKey,
    /// Its certificate from an operator, checked at start; `None`: not enrolled.
    pub enrollment: Option<Enrollment>,
    /// Who is a member, on which certificate: the check at every door (gossip, QUIC, reports).
    pub admission: Admission,
    /// Verified manifests.
    pub catalog: Catalog,
    /// The content-addressed blob store.
    pub store: Arc<Store>,
    /// The last applied operator command, persisted.
    pub emergency: Emergency,
    /// The gate of the origin's durable writes (a backup pauses it).
    pub writes: Writes,
    /// Every metric of the node.
    pub metrics: Arc<Metrics>,
    /// The wall clock every time stamp reads (commands, heartbeats, reports, plugins).
    pub clock: Clock,
    /// The sled database (catalog, membership snapshot, emergency state, outbox, plugins).
    pub db: sled::Db,
    /// This run's incarnation number (grows at every start, so peers tell a restart from a
    /// delayed heartbeat).
    pub incarnation: u64,
    started: Instant,
    ready: AtomicBool,
}

impl Core {
    /// Opens the stores of `config.data_dir` around an already opened database: the blob
    /// store (with `behind` as its last tier, the mesh plane's store), the catalog (verifying
    /// every stored manifest again), the emergency state; and advances the incarnation.
    ///
    /// # Errors
    /// A store cannot be opened, or `trust.publishers` holds something that is not a key.
    pub fn open(
        config: Config,
        identity: Identity,
        db: sled::Db,
        metrics: Arc<Metrics>,
        clock: Clock,
        behind: Option<Arc<dyn BlobSource>>,
    ) -> anyhow::Result<Self> {
        let policy = RolePolicy::new(config.role, Mode::Normal, false);
        let enrollment = Enrollment::load(&config, &identity, clock.now_ms())?;
        let data_dir = &config.data_dir;
        let store = Arc::new(
            Store::open(
                &data_dir.join("blobs"),
                config.cache.memory_bytes,
                config.cache.disk_bytes,
                policy.evicts(),
                Arc::clone(&metrics),
                behind,
            )
            .with_context(|| format!("opening blob store in {}", data_dir.display()))?,
        );
        let mut trusted: Vec<VerifyingKey> = Vec::new();
        for (i, key) in config.trust.publishers.iter().enumerate() {
            trusted.push(
                VerifyingKey::from_bytes(key).map_err(|e| {
                    anyhow::anyhow!("trust.publishers[{i}]: not an ed25519 key: {e}")
                })?,
            );
        }
        let publisher = match &config.publisher_key {
            None => identity.signing_key().clone(),
            Some(path) => Identity::load(path)
                .with_context(|| format!("origin.publisher_key {}", path.display()))?
                .signing_key()
                .clone(),
        };
        if policy.publishes() {
            // A lone origin needs no trust config: it trusts what it signs itself (with the
            // node key before a publisher key was configured, with the publisher key since).
            trusted.push(identity.signing_key().verifying_key());
            trusted.push(publisher.verifying_key());
        }
        let catalog = Catalog::open(&db, trusted)?;
        let emergency = Emergency::open(&db, config.trust.operators.clone(), clock.clone())?;
        let incarnation = next_incarnation(&db).context("advancing the incarnation")?;
        let admission = Admission::open(&db, config.trust.operators.clone(), clock.clone())
            .context("reading the revocations")?;
        metrics.set_revoked_nodes(admission.revoked_count());
        let writes = Writes::new(config.ha.is_some());
        Ok(Self {
            config,
            identity,
            publisher,
            enrollment,
            admission,
            catalog,
            store,
            emergency,
            writes,
            metrics,
            clock,
            db,
            incarnation,
            started: Instant::now(),
            ready: AtomicBool::new(false),
        })
    }

    /// The mode the node is in now.
    pub fn mode(&self) -> Mode {
        if self.emergency.is_emergency() {
            Mode::Emergency
        } else {
            Mode::Normal
        }
    }

    /// What this node does in its role and current mode.
    pub fn policy(&self) -> RolePolicy {
        RolePolicy::new(
            self.config.role,
            self.mode(),
            self.config.satellite.downlink.is_some(),
        )
    }

    /// Marks the node ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// How long the node has been up.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

/// Opens the node's sled database under `data_dir/db`.
///
/// # Errors
/// The database cannot be opened (another process holds it: the admin socket is the way in).
pub fn open_db(path: &Path) -> anyhow::Result<sled::Db> {
    sled::Config::new()
        .path(path)
        // Catalog and plugin state are small; sled's 1 GiB default cache would only hide leaks.
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .with_context(|| {
            format!(
                "opening database {} (is another mhc-node using this data_dir? talk to it through \
                 its admin socket instead)",
                path.display()
            )
        })
}

/// Opens the sled database at `path` in a unit test, also right after another handle to it was
/// dropped: sled's background flusher lets go of the file lock a moment after the last handle,
/// so an immediate reopen may find it still held (seen as a flaky test under load).
#[cfg(test)]
pub(crate) fn test_db(path: &Path) -> sled::Db {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if Instant::now() >= deadline => panic!("opening {}: {e}", path.display()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

/// Runs `work`, which may block on the disk (an fsync can take tens of milliseconds), without
/// stalling the other tasks of the calling async worker: on a worker of a multi-thread runtime
/// (the node's) the worker's queue is handed to another thread first (`block_in_place`);
/// elsewhere (a blocking thread, a test's single-thread runtime) it just runs.
pub fn blocking<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Flushes `tree` to disk through [`blocking`]: durable when it returns.
///
/// # Errors
/// The flush failed; what was written may or may not be on disk.
pub fn flush(tree: &sled::Tree) -> sled::Result<usize> {
    blocking(|| tree.flush())
}

/// Increments and durably stores the node's incarnation number, returning the new value.
/// Moves the incarnation of a restored database to at least `now_s` (seconds since the Unix
/// epoch): far past any count of restarts, so peers that remember the lost node's incarnation
/// hear the restored one as a restart, not as an old node.
///
/// # Errors
/// The database cannot be written.
pub fn restore_incarnation(db: &sled::Db, now_s: u64) -> anyhow::Result<()> {
    let tree = db.open_tree(NODE_TREE)?;
    let held = tree
        .get(INCARNATION_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    tree.insert(INCARNATION_KEY, &held.max(now_s).to_be_bytes())?;
    tree.flush()?;
    Ok(())
}

fn next_incarnation(db: &sled::Db) -> anyhow::Result<u64> {
    let tree = db.open_tree(NODE_TREE)?;
    let previous = tree
        .get(INCARNATION_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    let next = previous + 1;
    tree.insert(INCARNATION_KEY, &next.to_be_bytes())?;
    tree.flush()?;
    Ok(next)
}
