//! Verified backups of an origin in the restic repository format (`[backup]`).
//!
//! A backup exports the origin's state at one point in time into an image folder
//! ([`image`]: sled trees exported while the write gate is paused, the blobs the catalog
//! names, the node key, a description), snapshots that folder into the repository with
//! `rustic_core` ([`repo`], in a directory or an S3 bucket: [`s3`]; unchanged blobs cost
//! nothing the second time), then forgets and
//! prunes what no kind's window keeps. A daily backup is verified right after it is taken
//! ([`verify`]): the snapshot's packs are read back, the image restored into a scratch folder
//! and every signature, hash, ledger head and balance recomputed.
//!
//! The daemon takes hourly, daily and weekly backups by itself ([`Backups::run`]), one at a
//! time; `mhc-node backup now` asks it for one over the admin socket. `list`, `verify` and
//! `restore` work on the repository directly and need no daemon.

pub mod image;
pub mod repo;
pub mod s3;
pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mhc_clock::Clock;
use mhc_config::Config;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::watch;

use crate::core::Core;
use crate::plugins::Plugins;
pub use repo::{Kind, Repo, SnapshotInfo};
pub use s3::S3Credentials;
pub use verify::Verified;

/// How often the scheduler looks whether a kind is due.
const SCHEDULER_TICK: Duration = Duration::from_secs(30);
/// How long the scheduler waits after a failed backup before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// What one backup did.
#[derive(Debug, Clone, Serialize)]
pub struct Taken {
    /// The snapshot.
    pub snapshot: SnapshotInfo,
    /// What the image holds.
    pub contents: usize,
    /// Distinct blobs in it.
    pub blobs: u64,
    /// Ledger size, when the ledger is enabled.
    pub ledger_size: Option<u64>,
    /// Snapshots forgotten by retention afterwards.
    pub forgotten: Vec<String>,
    /// The verification run after a daily backup.
    pub verified: Option<Verified>,
    /// Seconds from the start of the export to the end (retention and verification included).
    pub seconds: f64,
}

/// The backup service of an origin with `[backup] repository` set.
#[derive(Debug)]
pub struct Backups {
    core: Arc<Core>,
    plugins: Option<Arc<Plugins>>,
    /// Never two backups at once: the scheduler and `backup now` queue here.
    one_at_a_time: tokio::sync::Mutex<()>,
    /// When each scheduled kind last succeeded (Unix ms), read from the repository once.
    last: Mutex<Option<HashMap<Kind, u64>>>,
    metrics: BackupMetrics,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Default)]
struct BackupMetrics {
    last_success: Family<KindLabel, Gauge>,
    duration_ms: Gauge,
    bytes_added: Counter,
    failures: Counter,
    running: Gauge,
    verify_last_success: Gauge,
    verify_failures: Counter,
}

impl BackupMetrics {
    fn register(core: &Core) -> Self {
        let m = Self::default();
        let r = &core.metrics;
        r.register(
            "mhc_backup_last_success_timestamp_seconds",
            "When the last backup of each kind succeeded, Unix seconds",
            m.last_success.clone(),
        );
        r.register(
            "mhc_backup_duration_milliseconds",
            "How long the last successful backup took (export, snapshot, retention, verification)",
            m.duration_ms.clone(),
        );
        r.register(
            "mhc_backup_added_bytes",
            "Bytes backups added to the repository, before compression",
            m.bytes_added.clone(),
        );
        r.register(
            "mhc_backup_failures",
            "Backups that failed",
            m.failures.clone(),
        );
        r.register(
            "mhc_backup_running",
            "1 while a backup runs",
            m.running.clone(),
        );
        r.register(
            "mhc_backup_verify_last_success_timestamp_seconds",
            "When a backup last passed verification, Unix seconds",
            m.verify_last_success.clone(),
        );
        r.register(
            "mhc_backup_verify_failures",
            "Verifications of backups that failed",
            m.verify_failures.clone(),
        );
        m
    }
}

impl Backups {
    /// The service, when `[backup] repository` is set (origins only).
    ///
    /// # Errors
    /// The password file cannot be read, or the repository is an S3 bucket and its credentials
    /// are not in the environment: a node told to back up refuses to start without them.
    pub fn new(
        core: Arc<Core>,
        plugins: Option<Arc<Plugins>>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if core.config.backup.repository.is_none() {
            return Ok(None);
        }
        repo::read_password(&core.config.backup.password_file)?;
        if let Some(mhc_config::BackupTarget::S3(_)) = &core.config.backup.repository {
            S3Credentials::from_env()?;
        }
        let metrics = BackupMetrics::register(&core);
        Ok(Some(Arc::new(Self {
            core,
            plugins,
            one_at_a_time: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
            metrics,
        })))
    }

    /// Takes one backup of `kinds` now, after any backup in progress.
    ///
    /// # Errors
    /// Any step failing (named); a daily backup whose verification fails is an error too.
    pub async fn take(self: &Arc<Self>, kinds: Vec<Kind>) -> anyhow::Result<Taken> {
        let _one = self.one_at_a_time.lock().await;
        self.metrics.running.set(1);
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || this.take_blocking(&kinds))
            .await
            .context("the backup task")
            .and_then(|r| r);
        self.metrics.running.set(0);
        if result.is_err() {
            self.metrics.failures.inc();
        }
        result
    }

    fn take_blocking(&self, kinds: &[Kind]) -> anyhow::Result<Taken> {
        let core = &self.core;
        let settings = &core.config.backup;
        let started = Instant::now();
        let work = work_dir(&core.config);
        let staging = work.join("staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("clearing {}", staging.display()))?;
        }
        let image_dir = staging.join(image::IMAGE_DIR);
        let plugins = self.plugins.clone();
        let result = (|| {
            let image = image::export(core, &image_dir, || {
                plugins.as_ref().map(|p| p.facts()).unwrap_or_default()
            })
            .context("exporting the origin's state")?;
            let snapshot = Repo::open(settings, true)?
                .snapshot(&image_dir, kinds, image.created_ms)
                .context("writing the snapshot")?;
            Ok::<_, anyhow::Error>((image, snapshot))
        })();
        let _ = std::fs::remove_dir_all(&staging);
        let (image, snapshot) = result?;
        self.metrics.bytes_added.inc_by(snapshot.bytes_added);
        tracing::info!(
            snapshot = %&snapshot.id[..8],
            kinds = ?kinds,
            contents = image.contents.len(),
            blobs = image.blobs,
            bytes_added = snapshot.bytes_added,
            "backup taken"
        );
        let forgotten = Repo::open(settings, false)?
            .apply_retention(core.clock.now_ms())
            .context("applying retention")?;
        for f in &forgotten {
            tracing::info!(snapshot = %&f.id[..8], time = %f.time, "backup forgotten (retention)");
        }
        let verified = if kinds.contains(&Kind::Daily) {
            match verify_snapshot(&core.config, &snapshot.id, &core.clock) {
                Ok((_, v)) => {
                    self.metrics
                        .verify_last_success
                        .set(secs(core.clock.now_ms()));
                    Some(v)
                }
                Err(err) => {
                    self.metrics.verify_failures.inc();
                    return Err(err.context(format!(
                        "snapshot {} was taken but fails verification",
                        &snapshot.id[..8]
                    )));
                }
            }
        } else {
            None
        };
        let now = core.clock.now_ms();
        {
            let mut last = self.last.lock();
            let last = last.get_or_insert_with(HashMap::new);
            for kind in kinds {
                last.insert(*kind, snapshot.time_ms);
                self.metrics
                    .last_success
                    .get_or_create(&KindLabel {
                        kind: kind.as_str(),
                    })
                    .set(secs(now));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .duration_ms
            .set(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        Ok(Taken {
            snapshot,
            contents: image.contents.len(),
            blobs: image.blobs,
            ledger_size: image.ledger_head.map(|h| h.size),
            forgotten: forgotten.into_iter().map(|s| s.id).collect(),
            verified,
            seconds,
        })
    }

    /// The scheduled kinds due at `now_ms`: those never taken, or last taken a period ago.
    fn due(&self, now_ms: u64) -> anyhow::Result<Vec<Kind>> {
        let mut last = self.last.lock();
        if last.is_none() {
            let mut found = HashMap::new();
            if let Ok(repo) = Repo::open(&self.core.config.backup, false) {
                for s in repo.snapshots()? {
                    for k in s.kinds {
                        let t = found.entry(k).or_insert(0);
                        *t = s.time_ms.max(*t);
                    }
                }
            }
            *last = Some(found);
        }
        let last = last.as_ref().expect("filled above");
        Ok(Kind::SCHEDULED
            .into_iter()
            .filter(|k| {
                let period = k.period().expect("scheduled kinds have a period");
                last.get(k)
                    .is_none_or(|t| Duration::from_millis(now_ms.saturating_sub(*t)) >= period)
            })
            .collect())
    }

    /// Takes the scheduled backups when they are due, until shutdown. Kinds due together
    /// share one snapshot (tagged with each).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut next_attempt = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep_until(next_attempt.into()) => {}
            }
            next_attempt = Instant::now() + SCHEDULER_TICK;
            let this = Arc::clone(&self);
            let now = self.core.clock.now_ms();
            let due = match tokio::task::spawn_blocking(move || this.due(now)).await {
                Ok(Ok(due)) => due,
                Ok(Err(err)) => {
                    tracing::warn!(error = %format!("{err:#}"), "reading the backup repository");
                    continue;
                }
                Err(_) => continue,
            };
            if due.is_empty() {
                continue;
            }
            if let Err(err) = self.take(due.clone()).await {
                tracing::error!(kinds = ?due, error = %format!("{err:#}"), "scheduled backup failed");
                next_attempt = Instant::now() + RETRY_AFTER_FAILURE;
            }
        }
    }
}

fn secs(ms: u64) -> i64 {
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}

/// Where backups stage their image and verifications restore: `data_dir/backup` (on the blob
/// store's file system, so blobs are hard-linked, not copied).
pub fn work_dir(config: &Config) -> PathBuf {
    config.data_dir.join("backup")
}

/// Verifies snapshot `id` (or `latest`): reads back its packs, restores it into a scratch
/// folder under [`work_dir`] (removed afterwards) and checks the restored data directory.
///
/// # Errors
/// The first failure, named: a damaged pack, a file that cannot be restored, a manifest, blob,
/// ledger head or balance that does not check out.
pub fn verify_snapshot(
    config: &Config,
    id: &str,
    clock: &Clock,
) -> anyhow::Result<(SnapshotInfo, Verified)> {
    let settings = &config.backup;
    let repo = Repo::open(settings, false)?;
    let snapshot = repo.find(id)?;
    repo.check(&snapshot.id)?;
    let work = work_dir(config);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(&work)
        .with_context(|| format!("a scratch folder in {}", work.display()))?;
    let image =
        Repo::open(settings, false)?.restore(&snapshot.id, &scratch.path().join("snapshot"))?;
    let restored = scratch.path().join("data");
    let manifest = image::install(&image, &restored, clock.now_ms())?;
    let verified = verify::verify_data_dir(&restored, &manifest, config)?;
    Ok((snapshot, verified))
}

/// Restores snapshot `id` (or `latest`) into the new data directory `to`, then verifies it.
///
/// # Errors
/// As [`verify_snapshot`]; `to` not empty.
pub fn restore_snapshot(
    config: &Config,
    id: &str,
    to: &Path,
    clock: &Clock,
) -> anyhow::Result<(SnapshotInfo, Verified)> {
    let settings = &config.backup;
    if to.exists() && std::fs::read_dir(to)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty: restore into a new directory",
            to.display()
        );
    }
    let repo = Repo::open(settings, false)?;
    let snapshot = repo.find(id)?;
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let scratch = tempfile::Builder::new()
        .prefix(".mhc-restore-")
        .tempdir_in(parent)
        .with_context(|| format!("a scratch folder in {}", parent.display()))?;
    let image = repo.restore(&snapshot.id, scratch.path())?;
    let manifest = image::install(&image, to, clock.now_ms())?;
    let verified = verify::verify_data_dir(to, &manifest, config)
        .with_context(|| format!("the data restored into {} fails verification", to.display()))?;
    Ok((snapshot, verified))
}
