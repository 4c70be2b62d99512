//! The restic repository, through `rustic_core`: snapshots of the image folder, listing,
//! retention, `check --read-data` of one snapshot, and restore. The repository is a directory
//! or an S3 bucket ([`super::s3`]).
//!
//! Every snapshot holds one folder, `/mhc-backup` (the image), has the label `mhc` and the tags
//! `mhc` and its kinds (`hourly`, `daily`, `weekly`, or `manual`), so that `restic snapshots
//! --tag daily` and `restic restore latest --tag mhc` work as an operator expects.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use mhc_config::{Backup, BackupRetention, BackupTarget};
use rustic_backend::LocalBackend;
use rustic_core::repofile::SnapshotFile;
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, KeyOptions, LocalDestination,
    LsOptions, OpenStatus, ParentOptions, PathList, PruneOptions, Repository, RepositoryBackends,
    RepositoryOptions, RestoreOptions, SnapshotOptions, WriteBackend,
};
use serde::Serialize;

use super::image::IMAGE_DIR;
use super::s3::{S3Backend, S3Credentials};

/// The label and first tag of every snapshot of ours.
const LABEL: &str = "mhc";

/// Why a snapshot was taken; each is a tag, and a kind's snapshots are kept for its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Taken every hour.
    Hourly,
    /// Taken every day, and verified after it is taken.
    Daily,
    /// Taken every week.
    Weekly,
    /// Taken by an operator (`backup now` without `--kind`); kept until forgotten by hand.
    Manual,
}

impl Kind {
    /// The scheduled kinds.
    pub const SCHEDULED: [Kind; 3] = [Kind::Hourly, Kind::Daily, Kind::Weekly];

    /// The tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hourly => "hourly",
            Kind::Daily => "daily",
            Kind::Weekly => "weekly",
            Kind::Manual => "manual",
        }
    }

    /// How often the scheduler takes one; `None` for manual snapshots.
    pub fn period(self) -> Option<Duration> {
        match self {
            Kind::Hourly => Some(Duration::from_secs(3600)),
            Kind::Daily => Some(Duration::from_secs(86_400)),
            Kind::Weekly => Some(Duration::from_secs(7 * 86_400)),
            Kind::Manual => None,
        }
    }

    /// How long its snapshots are kept; `None`: until forgotten by hand.
    pub fn keep(self, keep: &BackupRetention) -> Option<Duration> {
        match self {
            Kind::Hourly => Some(keep.hourly),
            Kind::Daily => Some(keep.daily),
            Kind::Weekly => Some(keep.weekly),
            Kind::Manual => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "hourly" => Ok(Kind::Hourly),
            "daily" => Ok(Kind::Daily),
            "weekly" => Ok(Kind::Weekly),
            "manual" => Ok(Kind::Manual),
            other => bail!("kind {other:?}: expected hourly, daily, weekly or manual"),
        }
    }
}

/// One snapshot of ours, as `backup list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The snapshot id (hex, as restic prints it in full).
    pub id: String,
    /// When it was taken, Unix milliseconds.
    pub time_ms: u64,
    /// When it was taken, RFC 3339.
    pub time: String,
    /// Its kinds.
    pub kinds: Vec<Kind>,
    /// The host that took it.
    pub host: String,
    /// Files in it.
    pub files: u64,
    /// Bytes in it.
    pub bytes: u64,
    /// Bytes it added to the repository (before compression).
    pub bytes_added: u64,
}

/// A repository opened with its password.
pub struct Repo {
    repo: Repository<OpenStatus>,
    keep: BackupRetention,
}

impl fmt::Debug for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repo").finish_non_exhaustive()
    }
}

fn rustic(e: impl fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// The first line of a password file, as restic reads `--password-file`.
///
/// # Errors
/// The file cannot be read, or its first line is empty.
pub fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("backup.password_file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!(
            "backup.password_file {}: the first line is empty",
            path.display()
        );
    }
    Ok(line.to_owned())
}

impl Repo {
    /// Opens the repository of `settings`; creates it first when `create` and none is there.
    /// An S3 repository is reached with the credentials in the environment.
    ///
    /// # Errors
    /// Backups are off, the password file cannot be read, the password is wrong, there is no
    /// repository (and `create` is false), an S3 repository's credentials are not set.
    pub fn open(settings: &Backup, create: bool) -> anyhow::Result<Self> {
        Self::open_with(settings, create, S3Credentials::from_env)
    }

    /// [`Repo::open`], an S3 repository reached with the credentials `s3` gives.
    ///
    /// # Errors
    /// As [`Repo::open`].
    pub fn open_with(
        settings: &Backup,
        create: bool,
        s3: impl FnOnce() -> anyhow::Result<S3Credentials>,
    ) -> anyhow::Result<Self> {
        let Some(target) = &settings.repository else {
            bail!("backups are off: set backup.repository");
        };
        let password = read_password(&settings.password_file)?;
        let backend: Arc<dyn WriteBackend> = match target {
            BackupTarget::Local(path) => {
                let location = path
                    .to_str()
                    .with_context(|| format!("backup.repository {}: not UTF-8", path.display()))?;
                Arc::new(
                    LocalBackend::new(location, Vec::<(String, String)>::new()).map_err(rustic)?,
                )
            }
            BackupTarget::S3(location) => Arc::new(S3Backend::new(location, s3()?)?),
        };
        let backends = RepositoryBackends::new(backend, None);
        // No local cache: the daemon keeps nothing under the operator's home, and what a
        // backup reads back (the index, the parent snapshot's trees) is small.
        let options = RepositoryOptions::default().no_cache(true);
        let repo = Repository::new(&options, &backends).map_err(rustic)?;
        let credentials = Credentials::password(&password);
        let initialised = repo
            .config_id()
            .map_err(|e| anyhow!("reading the backup repository {target}: {e}"))?
            .is_some();
        let repo = if initialised {
            repo.open(&credentials)
                .map_err(|e| anyhow!("opening the backup repository {target}: {e}"))?
        } else if create {
            tracing::info!(repository = %target, "creating the backup repository");
            repo.init(
                &credentials,
                &KeyOptions::default(),
                &ConfigOptions::default(),
            )
            .map_err(|e| anyhow!("creating the backup repository {target}: {e}"))?
        } else {
            bail!("{target}: no backup repository there yet");
        };
        Ok(Repo {
            repo,
            keep: settings.keep,
        })
    }

    /// Snapshots the image folder `image` (its parent is the staging folder) with `kinds`,
    /// dated `time_ms`.
    ///
    /// # Errors
    /// The repository cannot be written.
    pub fn snapshot(
        self,
        image: &Path,
        kinds: &[Kind],
        time_ms: u64,
    ) -> anyhow::Result<SnapshotInfo> {
        let mut options = SnapshotOptions::default()
            .label(LABEL.to_owned())
            .add_tags(LABEL)
            .map_err(rustic)?;
        for kind in kinds {
            options = options.add_tags(kind.as_str()).map_err(rustic)?;
        }
        let mut snap = SnapshotFile::from_options(&options).map_err(rustic)?;
        snap.time = zoned(time_ms)?;
        // The image is written afresh each time: its files' change times and inodes say
        // nothing, so unchanged files are recognised by size and modification time (the blobs
        // are hard links that keep theirs) and their contents deduplicated in any case.
        let parent = ParentOptions::default()
            .ignore_ctime(true)
            .ignore_inode(true);
        let options = BackupOptions::default()
            .as_path(PathBuf::from(format!("/{IMAGE_DIR}")))
            .parent_opts(parent);
        let repo = self.repo.to_indexed_ids().map_err(rustic)?;
        let source = PathList::from_iter(Some(image.to_path_buf()));
        let snap = repo.backup(&options, &source, snap).map_err(rustic)?;
        Ok(info(&snap))
    }

    /// Every snapshot of ours, oldest first.
    ///
    /// # Errors
    /// The repository cannot be read.
    pub fn snapshots(&self) -> anyhow::Result<Vec<SnapshotInfo>> {
        let mut all: Vec<SnapshotInfo> = self
            .repo
            .get_all_snapshots()
            .map_err(rustic)?
            .iter()
            .filter(|s| s.label == LABEL)
            .map(info)
            .collect();
        all.sort_by(|a, b| (a.time_ms, &a.id).cmp(&(b.time_ms, &b.id)));
        Ok(all)
    }

    /// The snapshot `id` (a full id, a unique prefix, or `latest`).
    ///
    /// # Errors
    /// No such snapshot, or an ambiguous prefix.
    pub fn find(&self, id: &str) -> anyhow::Result<SnapshotInfo> {
        let all = self.snapshots()?;
        if id == "latest" {
            return all
                .last()
                .cloned()
                .context("the repository holds no snapshot of mhc");
        }
        let matching: Vec<_> = all.iter().filter(|s| s.id.starts_with(id)).collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => bail!("no snapshot {id:?} in the repository"),
            _ => bail!("snapshot id {id:?} is ambiguous: give more of it"),
        }
    }

    /// Forgets the snapshots none of whose kinds keeps them at `now_ms`, then prunes the data
    /// only they used. Returns the forgotten snapshots.
    ///
    /// # Errors
    /// The repository cannot be read or written.
    pub fn apply_retention(&self, now_ms: u64) -> anyhow::Result<Vec<SnapshotInfo>> {
        let expired: Vec<SnapshotInfo> = self
            .snapshots()?
            .into_iter()
            .filter(|s| expired(s, &self.keep, now_ms))
            .collect();
        if expired.is_empty() {
            return Ok(expired);
        }
        let ids = expired
            .iter()
            .map(|s| s.id.parse().map_err(rustic))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.repo.delete_snapshots(&ids).map_err(rustic)?;
        // Deleted at once: the daemon takes one backup at a time and prunes inside it, so no
        // backup of ours is writing packs this prune could take away.
        let options = PruneOptions::default().instant_delete(true);
        let plan = self.repo.prune_plan(&options).map_err(rustic)?;
        self.repo.prune(&options, plan).map_err(rustic)?;
        Ok(expired)
    }

    /// Reads back every pack snapshot `id` uses and checks it (restic's `check --read-data`,
    /// limited to one snapshot).
    ///
    /// # Errors
    /// The first problem found, naming the pack or file.
    pub fn check(&self, id: &str) -> anyhow::Result<()> {
        let snap = self.snapshot_file(id)?;
        let results = self
            .repo
            .check_with_trees(CheckOptions::default().read_data(true), vec![snap.tree])
            .map_err(rustic)?;
        // Warnings pass; the first error is named (its level type is not exported by
        // rustic_core, so it is told by name).
        if let Some((_, first)) = results
            .0
            .iter()
            .find(|(level, _)| format!("{level:?}") == "Error")
        {
            bail!("repository check of snapshot {}: {first}", snap.id);
        }
        Ok(())
    }

    /// Restores snapshot `id` into `into` (created); returns the image folder inside it.
    ///
    /// # Errors
    /// The snapshot cannot be read (a damaged pack is named), `into` cannot be written.
    pub fn restore(self, id: &str, into: &Path) -> anyhow::Result<PathBuf> {
        let snap = self.snapshot_file(id)?;
        let repo = self.repo.to_indexed().map_err(rustic)?;
        let node = repo
            .node_from_snapshot_and_path(&snap, "")
            .map_err(rustic)?;
        let ls = repo.ls(&node, &LsOptions::default()).map_err(rustic)?;
        std::fs::create_dir_all(into)?;
        let target = into
            .to_str()
            .with_context(|| format!("{}: not UTF-8", into.display()))?;
        let dest = LocalDestination::new(target, true, false).map_err(rustic)?;
        let options = RestoreOptions::default();
        let plan = repo
            .prepare_restore(&options, ls.clone(), &dest, false)
            .map_err(rustic)?;
        repo.restore(plan, &options, ls, &dest)
            .map_err(|e| anyhow!("restoring snapshot {}: {e}", snap.id))?;
        let image = into.join(IMAGE_DIR);
        if image.is_dir() {
            Ok(image)
        } else {
            bail!(
                "snapshot {} holds no {IMAGE_DIR} folder: not a snapshot of mhc-node",
                snap.id
            )
        }
    }

    fn snapshot_file(&self, id: &str) -> anyhow::Result<SnapshotFile> {
        let id = self.find(id)?.id;
        let mut found = self.repo.get_snapshots(&[id.as_str()]).map_err(rustic)?;
        found
            .pop()
            .with_context(|| format!("snapshot {id} vanished"))
    }
}

/// Whether `s` has outlived every kind it was taken for.
fn expired(s: &SnapshotInfo, keep: &BackupRetention, now_ms: u64) -> bool {
    let age = Duration::from_millis(now_ms.saturating_sub(s.time_ms));
    !s.kinds.is_empty()
        && s.kinds
            .iter()
            .all(|k| k.keep(keep).is_some_and(|window| age > window))
}

fn zoned(ms: u64) -> anyhow::Result<rustic_core::jiff::Zoned> {
    let ts = rustic_core::jiff::Timestamp::from_millisecond(i64::try_from(ms)?)?;
    Ok(ts.to_zoned(rustic_core::jiff::tz::TimeZone::UTC))
}

fn info(s: &SnapshotFile) -> SnapshotInfo {
    let ms = s.time.timestamp().as_millisecond();
    let summary = s.summary.as_ref();
    SnapshotInfo {
        id: s.id.to_hex().as_str().to_owned(),
        time_ms: u64::try_from(ms).unwrap_or(0),
        time: s.time.timestamp().to_string(),
        kinds: s.tags.iter().filter_map(|t| t.parse().ok()).collect(),
        host: s.hostname.clone(),
        files: summary.map_or(0, |x| x.total_files_processed),
        bytes: summary.map_or(0, |x| x.total_bytes_processed),
        bytes_added: summary.map_or(0, |x| x.data_added),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(days_old: u64, kinds: &[Kind]) -> SnapshotInfo {
        let now = 1000 * 86_400_000;
        SnapshotInfo {
            id: String::new(),
            time_ms: now - days_old * 86_400_000,
            time: String::new(),
            kinds: kinds.to_vec(),
            host: String::new(),
            files: 0,
            bytes: 0,
            bytes_added: 0,
        }
    }

    #[test]
    fn a_snapshot_is_kept_while_any_of_its_kinds_keeps_it() {
        let keep = BackupRetention::default();
        let now = 1000 * 86_400_000;
        assert!(!expired(&snap(6, &[Kind::Hourly]), &keep, now));
        assert!(expired(&snap(8, &[Kind::Hourly]), &keep, now));
        assert!(!expired(
            &snap(8, &[Kind::Hourly, Kind::Weekly]),
            &keep,
            now
        ));
        assert!(expired(&snap(31, &[Kind::Daily, Kind::Weekly]), &keep, now));
        assert!(!expired(&snap(400, &[Kind::Manual]), &keep, now));
        assert!(!expired(
            &snap(400, &[Kind::Manual, Kind::Hourly]),
            &keep,
            now
        ));
        assert!(!expired(&snap(400, &[]), &keep, now));
    }
}
