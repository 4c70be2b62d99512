//! [`SharedGeo`]: the database in use, swapped atomically when its files change.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use serde::Serialize;

use super::db::database_files;
use super::{GeoCacheStats, GeoDb, GeoError, GeoFileInfo, GeoInfo};
use parking_lot::{Mutex, RwLock};

/// How often [`SharedGeo::spawn_reloader`] looks at the files by default. Databases change
/// monthly at most; 10 s costs a few `stat` calls and picks up a new file before an operator
/// checking the status would.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest poll interval accepted: `tokio::time::interval` panics on zero, and polling
/// faster only burns `stat` calls.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(10);

/// A cheaply cloneable handle to the geo database in use, if any.
///
/// [`SharedGeo::current`] hands out the database as an `Arc`: a request keeps the database it
/// started with even if a reload swaps in a new one meanwhile, so a reload drops no request.
///
/// # Examples
/// ```no_run
/// # async fn run() {
/// use mhc_node::{SharedGeo, DEFAULT_GEO_RELOAD_INTERVAL as DEFAULT_RELOAD_INTERVAL};
///
/// let geo = SharedGeo::new();
/// let reloader = geo.spawn_reloader("/var/lib/mhc/geo", DEFAULT_RELOAD_INTERVAL);
/// // Per request: one Arc for the whole request, even across a reload.
/// if let Some(db) = geo.current() {
///     let client = "81.2.69.142".parse().unwrap();
///     if let Ok(Some(here)) = db.lookup_ref(client) {
///         let _ = here.location;
///     }
/// }
/// println!("{:?}", geo.status());
/// reloader.abort();
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SharedGeo {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    db: RwLock<Option<Arc<GeoDb>>>,
    state: Mutex<ReloadState>,
}

#[derive(Debug, Default)]
struct ReloadState {
    /// The path of the last load attempt.
    path: Option<PathBuf>,
    /// What the files looked like at the last attempt, successful or not: a failed load is not
    /// retried until the files change again.
    seen: Option<Fingerprint>,
    loaded_at: Option<SystemTime>,
    loads: u64,
    last_error: Option<(SystemTime, String)>,
}

/// Names, sizes and modification times of a database's files; empty when the path is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl Fingerprint {
    fn of(path: &Path) -> Self {
        let files = database_files(path).unwrap_or_default();
        Self(
            files
                .into_iter()
                .map(|p| {
                    let meta = fs::metadata(&p).ok();
                    let len = meta.as_ref().map_or(0, fs::Metadata::len);
                    let modified = meta.and_then(|m| m.modified().ok());
                    (p, len, modified)
                })
                .collect(),
        )
    }
}

/// What [`SharedGeo::status`] reports, for `/v1/status` and the admin CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeoStatus {
    /// The configured path, once a load was attempted.
    pub path: Option<PathBuf>,
    /// The files of the database in use; empty when none is loaded.
    pub files: Vec<GeoFileInfo>,
    /// When the database in use was loaded, Unix seconds.
    pub loaded_at_unix_s: Option<u64>,
    /// Successful loads since start.
    pub loads: u64,
    /// The last failed load since the last successful one, naming the file.
    pub last_error: Option<String>,
    /// When that load failed, Unix seconds.
    pub last_error_at_unix_s: Option<u64>,
    /// The prefix cache of the database in use: slots, hits and misses since it was loaded.
    pub cache: Option<GeoCacheStats>,
}

impl SharedGeo {
    /// A handle with no database loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle holding `db`.
    pub fn with_db(db: GeoDb) -> Self {
        let geo = Self::new();
        geo.swap_in(db);
        geo
    }

    /// The database in use. Keep the `Arc` for the whole request.
    pub fn current(&self) -> Option<Arc<GeoDb>> {
        self.inner.db.read().clone()
    }

    /// [`GeoDb::lookup`] in the database in use; `Ok(None)` without one.
    ///
    /// # Errors
    /// As [`GeoDb::lookup`].
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<GeoInfo>, GeoError> {
        match self.current() {
            Some(db) => db.lookup(ip),
            None => Ok(None),
        }
    }

    /// Opens `path` now and swaps it in. On failure the database in use (if any) stays, and
    /// the error is logged and kept for [`SharedGeo::status`]. Blocking: reads whole files.
    ///
    /// # Errors
    /// As [`GeoDb::open`].
    pub fn load(&self, path: &Path) -> Result<(), GeoError> {
        self.load_with(path, Fingerprint::of(path))
    }

    /// Loads `path` if its files changed (names, sizes or modification times) since the last
    /// attempt; returns whether it loaded. A failed attempt is not retried until the files
    /// change again. Blocking.
    ///
    /// # Errors
    /// As [`SharedGeo::load`].
    pub fn reload_if_changed(&self, path: &Path) -> Result<bool, GeoError> {
        let now = Fingerprint::of(path);
        {
            let state = self.state();
            if state.path.as_deref() == Some(path) && state.seen.as_ref() == Some(&now) {
                return Ok(false);
            }
        }
        self.load_with(path, now).map(|()| true)
    }

    /// Polls `path` every `interval` (see [`DEFAULT_RELOAD_INTERVAL`]) on the tokio runtime and
    /// swaps in a freshly opened database when its files change. The first poll is immediate,
    /// so this also performs the first load when none was done. Failed loads keep the old
    /// database; they are logged and reported by [`SharedGeo::status`].
    ///
    /// The task ends when every `SharedGeo` handle is dropped, or when the returned handle is
    /// aborted.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_reloader(
        &self,
        path: impl Into<PathBuf>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let path: PathBuf = path.into();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut ticker = tokio::time::interval(interval.max(MIN_RELOAD_INTERVAL));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(async move {
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                let geo = SharedGeo { inner };
                let path = path.clone();
                // Errors are logged and recorded by `load_with`.
                let poll = tokio::task::spawn_blocking(move || geo.reload_if_changed(&path));
                if let Err(err) = poll.await {
                    tracing::error!(error = %err, "geo database reload task failed");
                }
            }
        })
    }

    /// Which files are loaded, their build epochs and types, and the last reload error.
    pub fn status(&self) -> GeoStatus {
        let db = self.current();
        let files = db
            .as_ref()
            .map(|db| db.files().cloned().collect())
            .unwrap_or_default();
        let state = self.state();
        GeoStatus {
            path: state.path.clone(),
            files,
            loaded_at_unix_s: state.loaded_at.map(unix_s),
            loads: state.loads,
            last_error: state.last_error.as_ref().map(|(_, e)| e.clone()),
            last_error_at_unix_s: state.last_error.as_ref().map(|(t, _)| unix_s(*t)),
            cache: db.map(|db| db.cache_stats()),
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, ReloadState> {
        self.inner.state.lock()
    }

    /// Opens `path`, whose files looked like `seen` just before, and swaps it in.
    fn load_with(&self, path: &Path, seen: Fingerprint) -> Result<(), GeoError> {
        {
            let mut state = self.state();
            state.path = Some(path.to_owned());
            state.seen = Some(seen);
        }
        match GeoDb::open(path) {
            Ok(db) => {
                for f in db.files() {
                    tracing::info!(
                        file = %f.path.display(),
                        database_type = %f.database_type,
                        build_epoch = f.build_epoch,
                        ip_version = f.ip_version,
                        "geo database loaded"
                    );
                }
                self.swap_in(db);
                Ok(())
            }
            Err(err) => {
                let kept = self.current().is_some();
                tracing::error!(error = %err, kept_previous = kept, "geo database not loaded");
                self.state().last_error = Some((SystemTime::now(), err.to_string()));
                Err(err)
            }
        }
    }

    fn swap_in(&self, db: GeoDb) {
        let db = Arc::new(db);
        // The old database is dropped here only if no request holds it; otherwise the last
        // request to finish frees it.
        let old = self.inner.db.write().replace(db);
        drop(old);
        let mut state = self.state();
        state.loaded_at = Some(SystemTime::now());
        state.loads += 1;
        state.last_error = None;
    }
}

/// `mhc_geo_cache_lookups_total{result="hit|miss"}`, read from the database in use at every
/// scrape (a reload starts them again from zero, as a new database starts with an empty cache).
/// It holds the handle weakly, so it keeps neither the database nor the reloader alive.
#[derive(Debug)]
pub struct GeoCacheMetrics(Weak<Inner>);

impl GeoCacheMetrics {
    /// The metrics of `geo`'s database in use.
    pub fn new(geo: &SharedGeo) -> Self {
        Self(Arc::downgrade(&geo.inner))
    }
}

impl Collector for GeoCacheMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(db) = self.0.upgrade().and_then(|inner| inner.db.read().clone()) else {
            return Ok(());
        };
        let stats = db.cache_stats();
        let mut family = encoder.encode_descriptor(
            "mhc_geo_cache_lookups",
            "Geo lookups of routing decisions answered from the per-prefix cache (hit) or by a \
             walk of the database (miss), since the database in use was loaded",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("hit", stats.hits), ("miss", stats.misses)] {
            ConstCounter::new(n).encode(family.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::time::Instant;

    use super::super::fixtures::{dbip_ipv4_db, dbip_ipv6_db, geoip2_city_db, write};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address literal")
    }

    fn country(geo: &SharedGeo, addr: &str) -> Option<String> {
        geo.lookup(ip(addr))
            .expect("lookup")
            .and_then(|g| g.country)
    }

    /// Sets the modification time of `path` to `secs` after the epoch: file systems keep
    /// coarse timestamps, so two writes in a row can otherwise look unchanged.
    fn set_mtime(path: &Path, secs: u64) {
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)))
            .expect("setting mtime");
    }

    #[test]
    fn reload_swaps_and_a_bad_file_keeps_the_old_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("geo.mmdb");
        // A: GeoIP2 layout, 8.8.8.8 in the US.
        write(&path, &geoip2_city_db(1_000));
        set_mtime(&path, 1_000_000);
        let geo = SharedGeo::new();
        assert_eq!(geo.current().map(|_| ()), None);
        assert_eq!(geo.lookup(ip("8.8.8.8")).expect("no db"), None);
        assert!(geo.reload_if_changed(&path).expect("loads A"));
        assert!(!geo.reload_if_changed(&path).expect("unchanged"));
        assert_eq!(country(&geo, "81.2.69.1").as_deref(), Some("GB"));
        // Answers A's prefix cache now holds: none for 1.1.1.0/24, Wichita for 8.8.8.0/24.
        let city = |geo: &SharedGeo, addr: &str| {
            geo.lookup(ip(addr)).expect("lookup").and_then(|g| g.city)
        };
        for _ in 0..2 {
            assert_eq!(country(&geo, "1.1.1.1"), None);
            assert_eq!(city(&geo, "8.8.8.8").as_deref(), Some("Wichita"));
        }
        assert_eq!(geo.status().cache.expect("cache").hits, 2);
        let held_a = geo.current().expect("A loaded");

        // B: the DB-IP IPv4 file, where 1.1.1.1 has a record and 81.2.69.1 has none.
        write(&path, &dbip_ipv4_db());
        set_mtime(&path, 1_000_001);
        assert!(geo.reload_if_changed(&path).expect("loads B"));
        // A reload starts from an empty cache: nothing A answered survives.
        assert_eq!(geo.status().cache.expect("cache").hits, 0);
        assert_eq!(country(&geo, "1.1.1.1").as_deref(), Some("AU"));
        assert_eq!(city(&geo, "8.8.8.8").as_deref(), Some("Mountain View"));
        assert_eq!(country(&geo, "81.2.69.1"), None);
        // A request that started on A still answers from A.
        let a_answer = held_a.lookup(ip("81.2.69.1")).expect("lookup");
        assert_eq!(a_answer.and_then(|g| g.country).as_deref(), Some("GB"));
        let status = geo.status();
        assert_eq!(status.loads, 2);
        assert_eq!(status.files.len(), 1);
        assert_eq!(status.files[0].database_type, "city ipv4");
        assert_eq!(status.files[0].build_epoch, 1_780_000_000);
        assert_eq!(status.last_error, None);

        // Garbage: the load fails, B stays, and the status names the file.
        std::fs::write(&path, b"\0garbage, not a database").expect("write");
        set_mtime(&path, 1_000_002);
        let err = geo.reload_if_changed(&path).expect_err("garbage");
        assert!(matches!(err, GeoError::Corrupt { .. }), "{err:?}");
        assert_eq!(country(&geo, "1.1.1.1").as_deref(), Some("AU"));
        let status = geo.status();
        let msg = status.last_error.expect("error reported");
        assert!(
            msg.contains("geo.mmdb") && msg.contains("metadata"),
            "{msg}"
        );
        assert!(status.last_error_at_unix_s.is_some());
        assert_eq!(status.files[0].database_type, "city ipv4", "B still in use");
        assert_eq!(status.loads, 2);
        // Not retried until the file changes again.
        assert!(!geo.reload_if_changed(&path).expect("same garbage"));

        // Removing the file is an error too, and B still stays.
        std::fs::remove_file(&path).expect("remove");
        let err = geo.reload_if_changed(&path).expect_err("missing");
        assert!(matches!(err, GeoError::Missing { .. }), "{err:?}");
        assert_eq!(country(&geo, "1.1.1.1").as_deref(), Some("AU"));

        // A good file again clears the error.
        write(&path, &geoip2_city_db(2_000));
        assert!(geo.reload_if_changed(&path).expect("loads A again"));
        let status = geo.status();
        assert_eq!(status.last_error, None);
        assert_eq!(status.files[0].build_epoch, 2_000);
        assert_eq!(status.loads, 3);
    }

    #[test]
    fn a_new_file_in_the_directory_triggers_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("dbip-city-ipv4.mmdb"), &dbip_ipv4_db());
        let geo = SharedGeo::new();
        geo.load(dir.path()).expect("loads");
        assert!(geo.lookup(ip("2001:4860::1")).is_err(), "no IPv6 file yet");
        assert!(!geo.reload_if_changed(dir.path()).expect("unchanged"));
        write(&dir.path().join("dbip-city-ipv6.mmdb"), &dbip_ipv6_db());
        assert!(geo.reload_if_changed(dir.path()).expect("reloads"));
        assert_eq!(country(&geo, "2001:4860::1").as_deref(), Some("CA"));
        let status = geo.status();
        assert_eq!(status.path.as_deref(), Some(dir.path()));
        let types: Vec<_> = status
            .files
            .iter()
            .map(|f| f.database_type.as_str())
            .collect();
        assert_eq!(types, ["city ipv4", "city ipv6"]);
    }

    /// Polls `cond` until it holds, failing the test after 10 s.
    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn reloader_task_picks_up_changes() -> Result<(), GeoError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("geo.mmdb");
        // Not there at first: the node runs without geo and the status says why.
        let geo = SharedGeo::new();
        let task = geo.spawn_reloader(&path, Duration::from_millis(20));
        wait_for("the missing-file error", || {
            geo.status().last_error.is_some()
        })
        .await;
        assert!(geo.current().is_none());

        write(&path, &geoip2_city_db(1));
        wait_for("the first load", || geo.current().is_some()).await;
        assert_eq!(country(&geo, "8.8.8.8").as_deref(), Some("US"));

        write(&path, &dbip_ipv4_db());
        set_mtime(&path, 2_000_000);
        wait_for("the swap", || country(&geo, "1.1.1.1").is_some()).await;
        assert_eq!(geo.status().last_error, None);
        let sydney = geo.lookup(ip("1.1.1.1"))?.and_then(|g| g.city);
        assert_eq!(sydney.as_deref(), Some("Sydney"));

        // The task ends once every handle is gone.
        drop(geo);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("reloader stops without handles")
            .expect("reloader did not panic");
        Ok(())
    }

    #[test]
    fn with_db_and_status_without_loads() {
        let geo = SharedGeo::new();
        assert_eq!(
            geo.status(),
            GeoStatus {
                path: None,
                files: Vec::new(),
                loaded_at_unix_s: None,
                loads: 0,
                last_error: None,
                last_error_at_unix_s: None,
                cache: None,
            }
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.mmdb");
        write(&path, &dbip_ipv4_db());
        let geo = SharedGeo::with_db(GeoDb::open(&path).expect("opens"));
        let clone = geo.clone();
        assert_eq!(country(&clone, "8.8.8.8").as_deref(), Some("US"));
        assert_eq!(clone.status().loads, 1);
    }
}
