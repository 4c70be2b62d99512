//! Where the client is, as far as the geo database knows, and where that came from.

use std::fmt;
use std::net::IpAddr;

use crate::geo::{GeoDb, GeoError, GeoRef};

/// The geo database as a request finds it.
#[derive(Debug, Clone, Copy)]
pub enum GeoAvailability<'a> {
    /// A database is loaded.
    Loaded(&'a GeoDb),
    /// `geo.database` is not set.
    NotConfigured,
    /// `geo.database` is set, but no database could be loaded; the load error.
    LoadFailed(&'a str),
}

/// Where the client's location came from, or why there is none.
#[derive(Debug)]
pub enum LocationSource<'a> {
    /// The geo database has a record with coordinates.
    Database,
    /// The database has a record for the address, without coordinates (a country-level
    /// database, say).
    RecordWithoutCoordinates,
    /// The database has no record: loopback, private and other non-public addresses never have
    /// one (`private` says whether the address is one of those).
    NoRecord {
        /// Loopback, private, link-local, unique-local, documentation or unspecified.
        private: bool,
    },
    /// No geo database is configured.
    NotConfigured,
    /// The configured database could not be loaded.
    LoadFailed(&'a str),
    /// The lookup failed (an IPv6 address with IPv4-only files, an undecodable record).
    LookupFailed(GeoError),
}

impl fmt::Display for LocationSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Database => f.write_str("geo database"),
            Self::RecordWithoutCoordinates => {
                f.write_str("geo database (its record for this address has no coordinates)")
            }
            Self::NoRecord { private: true } => {
                f.write_str("no record for this address (private/loopback)")
            }
            Self::NoRecord { private: false } => {
                f.write_str("no record for this address in the geo database")
            }
            Self::NotConfigured => f.write_str("no geo database configured"),
            Self::LoadFailed(err) => write!(f, "geo database failed to load: {err}"),
            Self::LookupFailed(err) => write!(f, "geo lookup failed: {err}"),
        }
    }
}

/// The client's location as far as the geo database knows.
#[derive(Debug)]
pub struct ClientGeo<'a> {
    /// The record, if any (country, continent, coordinates, city, borrowed from the database).
    pub record: Option<GeoRef<'a>>,
    /// Where it came from.
    pub source: LocationSource<'a>,
}

impl ClientGeo<'_> {
    /// `(lat, lon)` of the client, if known.
    pub fn location(&self) -> Option<(f64, f64)> {
        self.record.and_then(|r| r.location)
    }
}

/// Whether `ip` is an address no geo database places: loopback, private, link-local,
/// unique-local, documentation, shared (CGNAT) or unspecified.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Looks `ip` up in the geo database, if there is one; never fails, says why instead.
pub fn locate<'a>(geo: GeoAvailability<'a>, ip: IpAddr) -> ClientGeo<'a> {
    let db = match geo {
        GeoAvailability::Loaded(db) => db,
        GeoAvailability::NotConfigured => {
            return ClientGeo {
                record: None,
                source: LocationSource::NotConfigured,
            }
        }
        GeoAvailability::LoadFailed(err) => {
            return ClientGeo {
                record: None,
                source: LocationSource::LoadFailed(err),
            }
        }
    };
    match db.lookup_ref(ip) {
        Ok(Some(record)) => {
            let source = if record.location.is_some() {
                LocationSource::Database
            } else {
                LocationSource::RecordWithoutCoordinates
            };
            ClientGeo {
                record: Some(record),
                source,
            }
        }
        Ok(None) => ClientGeo {
            record: None,
            source: LocationSource::NoRecord {
                private: is_non_public(ip),
            },
        },
        Err(err) => ClientGeo {
            record: None,
            source: LocationSource::LookupFailed(err),
        },
    }
}
