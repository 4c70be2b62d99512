//! Geo-routing: which node a viewer should play from, and why (`ARCHITECTURE.md`, "Routing").
//!
//! Pure logic, fed with plain values so it is tested without sockets or clocks:
//!
//! 1. [`resolve_client`]: the client's address. `X-Forwarded-For` is believed only when the TCP
//!    peer is inside `geo.trusted_proxies`; then the right-most address that is not itself a
//!    trusted proxy is the client (everything left of it was written by the client and proves
//!    nothing).
//! 2. [`locate`]: where that address is, from the geo database, with the source stated.
//! 3. [`Candidate`]s: this node and every member, each with whether it may serve (alive, its role
//!    serves viewers in the current mode ([`RolePolicy::serves_viewers`]), it holds the content or is an edge
//!    that fills it, it advertises a viewer address).
//! 4. [`rank`]: eligible candidates by great-circle distance from the client (in
//!    [`DISTANCE_BAND_KM`] bands), then load (connections, then bytes/s), then freshness; without a
//!    client location, by "in this node's region" first, then load and freshness.
//!
//! [`decide`] runs all four into a caller-provided `Vec`, allocating nothing when the vector has
//! room ([`take_scratch`] / [`return_scratch`] keep one per thread); the words of an answer
//! ([`Candidate::reason`], [`Decision::basis`]) are produced only when an answer is rendered.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use libp2p::PeerId;

use crate::control::membership::{Member, MemberState};
use crate::control::messages::{Load, WireRole};
use crate::geo::{GeoDb, GeoError, GeoRef};
use crate::role::{Mode, NotServing, RolePolicy};

/// Mean Earth radius (IUGG), km: the radius of the sphere the haversine formula assumes.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Width of the distance bands nodes are compared in, km. Two nodes whose distances from the
/// client fall in the same band are equally near and the less loaded one wins. City-level geo-IP
/// is no more precise than this (MaxMind's accuracy radius is 20 km or more for most city
/// records, and DB-IP lite places whole networks at one city), so finer distinctions would rank
/// by noise and never let load matter between nodes of one metro area.
pub const DISTANCE_BAND_KM: f64 = 25.0;

/// Most `X-Forwarded-For` entries looked at, right to left: a proxy chain is a handful of hops;
/// a longer list is treated as malformed rather than walked without bound.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// Great-circle distance between two `(lat, lon)` points in degrees, km (haversine formula).
///
/// # Examples
/// ```
/// let london = (51.5074, -0.1278);
/// let paris = (48.8566, 2.3522);
/// let km = mhc_node::haversine_km(london, paris);
/// assert!((km - 343.6).abs() < 1.0);
/// ```
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    Point::new(a).km_to(b)
}

/// A usable coordinate pair: finite and in range.
fn valid_location(loc: Option<(f64, f64)>) -> Option<(f64, f64)> {
    loc.filter(|(lat, lon)| {
        lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
    })
}

// ---------------------------------------------------------------------------------------------
// Client address

/// Where the client address of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSource {
    /// The TCP peer; no `X-Forwarded-For` was sent.
    Peer,
    /// The TCP peer is a trusted proxy but sent no `X-Forwarded-For`.
    TrustedPeerWithoutHeader,
    /// The TCP peer is not a trusted proxy: its `X-Forwarded-For` was ignored.
    UntrustedForwardedFor,
    /// The right-most `X-Forwarded-For` entry that is not a trusted proxy.
    ForwardedFor,
    /// Every `X-Forwarded-For` entry is a trusted proxy: the left-most one.
    ForwardedForAllTrusted,
    /// The trusted proxy's `X-Forwarded-For` could not be read: the TCP peer is used.
    MalformedForwardedFor(&'static str),
}

impl AddrSource {
    /// Whether the address was taken from `X-Forwarded-For`.
    pub fn is_forwarded(self) -> bool {
        matches!(self, Self::ForwardedFor | Self::ForwardedForAllTrusted)
    }
}

impl fmt::Display for AddrSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer => f.write_str("connection peer (no X-Forwarded-For)"),
            Self::TrustedPeerWithoutHeader => {
                f.write_str("connection peer (a trusted proxy, but it sent no X-Forwarded-For)")
            }
            Self::UntrustedForwardedFor => f.write_str(
                "connection peer: X-Forwarded-For ignored, the peer is not in geo.trusted_proxies",
            ),
            Self::ForwardedFor => f.write_str(
                "X-Forwarded-For from a trusted proxy: the right-most address that is not a \
                 trusted proxy",
            ),
            Self::ForwardedForAllTrusted => f.write_str(
                "X-Forwarded-For from a trusted proxy: every address in it is a trusted proxy, \
                 so the left-most one",
            ),
            Self::MalformedForwardedFor(why) => write!(
                f,
                "connection peer: the trusted proxy's X-Forwarded-For is malformed ({why}) and \
                 was ignored"
            ),
        }
    }
}

/// The address a request is routed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client address used.
    pub ip: IpAddr,
    /// The TCP peer of the request.
    pub peer: IpAddr,
    /// How `ip` was chosen.
    pub source: AddrSource,
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally bracketed or with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:443`), as some proxies write them.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The client address of a request from TCP peer `peer` whose `X-Forwarded-For` header lines
/// are `forwarded_for` (in the order received; several lines form one list).
///
/// The header is believed only when `peer` is inside `trusted`. Then the list is walked from the
/// right, skipping trusted proxies; the first other address is the client. An entry that is not
/// an address, met before that, makes the whole header malformed: the peer is used and
/// [`AddrSource::MalformedForwardedFor`] says why. Entries left of the client are never
/// parsed (the client wrote them). IPv4-mapped IPv6 addresses count as IPv4.
///
/// # Examples
/// ```
/// use mhc_node::{resolve_client, AddrSource};
/// let trusted = ["10.0.0.0/8".parse().unwrap()];
/// let peer = "10.0.0.2".parse().unwrap();
/// let header: &[u8] = b"203.0.113.9, 198.51.100.7, 10.0.0.1";
/// let c = resolve_client(peer, [header], &trusted);
/// assert_eq!(c.ip.to_string(), "198.51.100.7");
/// assert_eq!(c.source, AddrSource::ForwardedFor);
/// ```
pub fn resolve_client<'h, I>(peer: IpAddr, forwarded_for: I, trusted: &[IpNet]) -> ClientAddr
where
    I: IntoIterator<Item = &'h [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    let peer = peer.to_canonical();
    let mut lines = forwarded_for.into_iter().peekable();
    let from_peer = |source| ClientAddr {
        ip: peer,
        peer,
        source,
    };
    if !is_trusted(peer, trusted) {
        return from_peer(if lines.peek().is_some() {
            AddrSource::UntrustedForwardedFor
        } else {
            AddrSource::Peer
        });
    }
    if lines.peek().is_none() {
        return from_peer(AddrSource::TrustedPeerWithoutHeader);
    }
    let mut hops = 0;
    let mut leftmost = None;
    for line in lines.rev() {
        let Ok(line) = std::str::from_utf8(line) else {
            return from_peer(AddrSource::MalformedForwardedFor("not ASCII text"));
        };
        for entry in line.rsplit(',') {
            hops += 1;
            if hops > MAX_FORWARDED_HOPS {
                return from_peer(AddrSource::MalformedForwardedFor("more than 32 entries"));
            }
            let Some(ip) = parse_forwarded_entry(entry) else {
                let why = if entry.trim().is_empty() {
                    "an empty entry"
                } else {
                    "an entry is not an IP address"
                };
                return from_peer(AddrSource::MalformedForwardedFor(why));
            };
            let ip = ip.to_canonical();
            if !is_trusted(ip, trusted) {
                return ClientAddr {
                    ip,
                    peer,
                    source: AddrSource::ForwardedFor,
                };
            }
            leftmost = Some(ip);
        }
    }
    match leftmost {
        Some(ip) => ClientAddr {
            ip,
            peer,
            source: AddrSource::ForwardedForAllTrusted,
        },
        // Unreachable in practice (a line always yields at least one entry), kept total.
        None => from_peer(AddrSource::MalformedForwardedFor("no entry")),
    }
}

// ---------------------------------------------------------------------------------------------
// Client location

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

// ---------------------------------------------------------------------------------------------
// Candidates

/// Why a candidate may not serve this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// Marked dead by failure detection.
    Dead,
    /// Marked suspect by failure detection.
    Suspect,
    /// Its role does not serve viewers in the current mode.
    NotServing(NotServing),
    /// It does not hold the content and cannot fill it (not an edge).
    DoesNotHold,
    /// It advertises no usable viewer address (empty or unspecified).
    NoViewerAddress,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dead => f.write_str("dead"),
            Self::Suspect => f.write_str("suspect"),
            Self::NotServing(n) => n.fmt(f),
            Self::DoesNotHold => f.write_str("does not hold the content"),
            Self::NoViewerAddress => f.write_str("advertises no usable viewer address"),
        }
    }
}

/// One node considered for a request: this node or a member.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Peer id.
    pub peer_id: &'a PeerId,
    /// Whether this is the node answering.
    pub is_self: bool,
    /// Role.
    pub role: WireRole,
    /// Region label.
    pub region: &'a str,
    /// `(lat, lon)`, if configured (and valid).
    pub location: Option<(f64, f64)>,
    /// Viewer-plane address, `ip:port`.
    pub http: &'a str,
    /// Liveness.
    pub state: MemberState,
    /// Load, as last reported.
    pub load: Load,
    /// Time since last heard from (zero for this node).
    pub silent_for: Duration,
    /// Whether it holds the content (lists it in its heartbeat, or in this node's catalog).
    pub holds: bool,
    /// Whether it receives the satellite downlink (serves in emergency mode whatever its role).
    pub receiver: bool,
    /// Distance from the client, km, when both locations are known (set by [`rank`]).
    pub distance_km: Option<f64>,
    /// Why it may not serve (set by [`rank`]); `None` means eligible.
    pub exclusion: Option<Exclusion>,
    band: u32,
    key: Key,
}

/// What candidates are sorted by, precomputed by [`rank`] so comparisons are integer compares:
/// distance band (or 0/1 for "in this node's region"), connections, bytes/s, microseconds since
/// heard, and this node before others. Peer ids break the remaining ties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    first: u32,
    connections: u32,
    bytes_out_per_s: u64,
    silent_us: u64,
    not_self: bool,
}

impl<'a> Candidate<'a> {
    /// The node answering the request.
    pub fn this_node(
        peer_id: &'a PeerId,
        role: WireRole,
        region: &'a str,
        location: Option<(f64, f64)>,
        http: &'a str,
        load: Load,
        holds: bool,
    ) -> Self {
        Self {
            peer_id,
            is_self: true,
            receiver: false,
            role,
            region,
            location: valid_location(location),
            http,
            state: MemberState::Alive,
            load,
            silent_for: Duration::ZERO,
            holds,
            distance_km: None,
            exclusion: None,
            band: 0,
            key: Key::default(),
        }
    }

    /// Marks this node as a receiver of the satellite downlink (or not).
    pub fn receiving_downlink(mut self, receiver: bool) -> Self {
        self.receiver = receiver;
        self
    }

    /// A member of the membership table, for content `content_id`, as of `now`.
    pub fn member(m: &'a Member, content_id: &str, now: Instant) -> Self {
        let hb = &m.heartbeat;
        Self {
            peer_id: &m.peer_id,
            is_self: false,
            role: hb.role,
            region: &hb.region,
            location: valid_location(hb.location),
            http: &hb.addrs.http,
            state: m.state,
            load: hb.load,
            silent_for: now.saturating_duration_since(m.last_seen),
            holds: hb.contents.iter().any(|c| c.id == content_id),
            receiver: hb.downlink,
            distance_km: None,
            exclusion: None,
            band: 0,
            key: Key::default(),
        }
    }

    /// Sets the distance from `client` and the sort key.
    fn set_key(&mut self, client: Option<&Point>, basis: &Basis<'_>) {
        self.distance_km = client.zip(self.location).map(|(a, b)| a.km_to(b));
        self.band = self
            .distance_km
            .map_or(u32::MAX, |d| (d / DISTANCE_BAND_KM) as u32);
        self.key = Key {
            first: match basis {
                Basis::Distance => self.band,
                Basis::Region { home } => u32::from(self.region != *home),
            },
            connections: self.load.connections,
            bytes_out_per_s: self.load.bytes_out_per_s,
            silent_us: self.silent_for.as_micros().min(u128::from(u64::MAX)) as u64,
            not_self: !self.is_self,
        };
    }

    /// Whether it may serve this request.
    pub fn is_eligible(&self) -> bool {
        self.exclusion.is_none()
    }

    /// Whether it may serve the content without holding it (an edge fills on demand), once
    /// [`rank`] has judged it.
    pub fn fills_on_demand(&self) -> bool {
        !self.holds && self.exclusion.is_none()
    }

    /// What this candidate does in `mode`, as far as its heartbeat says.
    fn policy(&self, mode: Mode) -> RolePolicy {
        RolePolicy::new(self.role.into(), mode, self.receiver)
    }

    fn exclusion_in(&self, mode: Mode) -> Option<Exclusion> {
        match self.state {
            MemberState::Dead => return Some(Exclusion::Dead),
            MemberState::Suspect => return Some(Exclusion::Suspect),
            MemberState::Alive => {}
        }
        let policy = self.policy(mode);
        if let Err(n) = policy.serves_viewers() {
            return Some(Exclusion::NotServing(n));
        }
        if !self.holds && !policy.routable_without_content() {
            return Some(Exclusion::DoesNotHold);
        }
        if !has_viewer_address(self.http) {
            return Some(Exclusion::NoViewerAddress);
        }
        None
    }

    /// Why this candidate was or was not chosen, given the chosen one (`None` when nothing was
    /// chosen) and the ranking basis. Allocates: call it when rendering an answer.
    pub fn reason(&self, chosen: Option<&Candidate<'_>>, basis: &Basis<'_>) -> String {
        if let Some(ex) = self.exclusion {
            return ex.to_string();
        }
        let fill = if self.fills_on_demand() {
            "; an edge: fills the content on demand"
        } else {
            ""
        };
        let Some(ch) = chosen else {
            return format!("eligible{fill}");
        };
        if self.peer_id == ch.peer_id {
            let why = match (basis, self.distance_km) {
                (Basis::Distance, Some(d)) => format!("nearest node that can serve ({d:.0} km)"),
                (Basis::Distance, None) => {
                    "can serve; no node that can serve has a location".into()
                }
                (Basis::Region { home }, _) if self.region == *home => {
                    format!("in this node's region ({home}), least loaded")
                }
                (Basis::Region { home }, _) => {
                    format!(
                        "least loaded; no node that can serve is in this node's region ({home})"
                    )
                }
            };
            return format!("chosen: {why}{fill}");
        }
        let why = self.behind(ch, basis);
        format!("{why}{fill}")
    }

    /// Why this eligible candidate ranks behind `ch`.
    fn behind(&self, ch: &Candidate<'_>, basis: &Basis<'_>) -> String {
        let level = match basis {
            Basis::Distance => match (self.distance_km, ch.distance_km) {
                (None, Some(_)) => return "no location known: ranked after nodes with one".into(),
                (Some(d), Some(dc)) if self.band != ch.band => {
                    return format!("farther than the chosen node by {:.0} km", d - dc);
                }
                (Some(_), Some(_)) => format!(
                    "as near as the chosen node (same {DISTANCE_BAND_KM:.0} km distance band)"
                ),
                _ => "no location known, like the chosen node".to_owned(),
            },
            Basis::Region { home } => {
                if self.region != *home && ch.region == *home {
                    return format!("not in this node's region ({home})");
                }
                "in the same standing by region as the chosen node".to_owned()
            }
        };
        let (l, lc) = (self.load, ch.load);
        if l.connections != lc.connections {
            format!(
                "{level}, more loaded: {} connections vs {}",
                l.connections, lc.connections
            )
        } else if l.bytes_out_per_s != lc.bytes_out_per_s {
            format!(
                "{level}, more loaded: {} bytes/s out vs {}",
                l.bytes_out_per_s, lc.bytes_out_per_s
            )
        } else if self.silent_for != ch.silent_for {
            format!(
                "{level} and as loaded, heard from less recently ({} ms ago vs {} ms)",
                self.silent_for.as_millis(),
                ch.silent_for.as_millis()
            )
        } else {
            format!("{level}: a tie, broken in favour of this node, then by peer id")
        }
    }
}

/// A viewer address another machine could connect to: not empty, not unspecified.
fn has_viewer_address(http: &str) -> bool {
    !(http.is_empty() || http.starts_with("0.0.0.0:") || http.starts_with("[::]:"))
}

// ---------------------------------------------------------------------------------------------
// Ranking

/// What the ranking was based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis<'a> {
    /// Distance from the client's location.
    Distance,
    /// The client has no location: this node's region first.
    Region {
        /// This node's region.
        home: &'a str,
    },
}

impl fmt::Display for Basis<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Distance => write!(
                f,
                "great-circle distance from the client (in {DISTANCE_BAND_KM:.0} km bands), then \
                 load (connections, then bytes/s), then freshness (most recently heard)"
            ),
            Self::Region { home } => write!(
                f,
                "the client has no location: nodes in this node's region ({home}) first, then \
                 load (connections, then bytes/s), then freshness (most recently heard)"
            ),
        }
    }
}

/// The outcome of a routing decision, as counted in
/// `mhc_routing_decisions_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A node was chosen by distance from the client.
    Geo,
    /// A node was chosen without a client location (by region).
    Fallback,
    /// No node may serve the content now.
    NoCandidate,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Geo => "geo",
            Self::Fallback => "fallback",
            Self::NoCandidate => "no_candidate",
        }
    }
}

/// How much of the candidate list [`rank`] puts in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every candidate, each with its distance: eligible ones best first, then the excluded
    /// ones nearest first (for answers that list them all, `/v1/route`).
    All,
    /// Only the best `n` eligible candidates, in order, at the front; what follows them is in
    /// no particular order, and excluded candidates' distances are left unset. `/play` needs 1,
    /// a master playlist 3. When no candidate is eligible, everything is ranked as with
    /// [`Depth::All`] (the answer then lists them all).
    Best(usize),
}

/// Up to this many, [`Depth::Best`] picks the best by repeated scans (a few swaps of whole
/// candidates) rather than partitioning and sorting the list.
const MAX_SCAN_PICKS: usize = 4;

/// Ranks `candidates` in place for a client at `client` (or unknown), from the point of view
/// of a node in region `home` in mode `mode`, to `depth`: eligible candidates first, best first;
/// then the excluded ones. Sets each candidate's exclusion and, where it matters, distance.
pub fn rank<'a>(
    candidates: &mut [Candidate<'_>],
    client: Option<(f64, f64)>,
    home: &'a str,
    mode: Mode,
    depth: Depth,
) -> (Basis<'a>, Outcome) {
    let basis = if client.is_some() {
        Basis::Distance
    } else {
        Basis::Region { home }
    };
    let client = client.map(Point::new);
    let mut eligible = 0;
    for c in candidates.iter_mut() {
        c.exclusion = c.exclusion_in(mode);
        eligible += usize::from(c.exclusion.is_none());
        // An excluded candidate's distance only shows in full answers: skip the trigonometry
        // for the others (it is most of the cost of a decision).
        if c.exclusion.is_none() || depth == Depth::All {
            c.set_key(client.as_ref(), &basis);
        }
    }
    let depth = if eligible == 0 {
        for c in candidates.iter_mut().filter(|c| c.exclusion.is_some()) {
            if depth != Depth::All {
                c.set_key(client.as_ref(), &basis);
            }
        }
        Depth::All
    } else {
        depth
    };
    match depth {
        Depth::Best(n) if n <= MAX_SCAN_PICKS => {
            for i in 0..n.min(eligible) {
                let best = (i..candidates.len())
                    .filter(|&j| candidates[j].is_eligible())
                    .min_by(|&x, &y| compare(&candidates[x], &candidates[y]))
                    .expect("an eligible candidate is left");
                candidates.swap(i, best);
            }
        }
        _ => {
            // Eligible candidates to the front, then each part in order (or the best n).
            let mut front_len = 0;
            for j in 0..candidates.len() {
                if candidates[j].is_eligible() {
                    candidates.swap(front_len, j);
                    front_len += 1;
                }
            }
            let (front, back) = candidates.split_at_mut(front_len);
            match depth {
                Depth::Best(n) if n < front.len() => {
                    if n > 0 {
                        front.select_nth_unstable_by(n - 1, compare);
                        front[..n].sort_unstable_by(compare);
                    }
                }
                _ => front.sort_unstable_by(compare),
            }
            if depth == Depth::All {
                back.sort_unstable_by(compare);
            }
        }
    }
    let outcome = match (eligible > 0, basis) {
        (false, _) => Outcome::NoCandidate,
        (true, Basis::Distance) => Outcome::Geo,
        (true, Basis::Region { .. }) => Outcome::Fallback,
    };
    (basis, outcome)
}

fn compare(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    a.key.cmp(&b.key).then_with(|| a.peer_id.cmp(b.peer_id))
}

/// A client location with its trigonometry done once per decision, not once per candidate.
#[derive(Debug, Clone, Copy)]
struct Point {
    lat_rad: f64,
    cos_lat: f64,
    lon: f64,
}

impl Point {
    fn new((lat, lon): (f64, f64)) -> Self {
        let lat_rad = lat.to_radians();
        Self {
            lat_rad,
            cos_lat: lat_rad.cos(),
            lon,
        }
    }

    /// [`haversine_km`] from this point.
    fn km_to(&self, (lat, lon): (f64, f64)) -> f64 {
        let lat2 = lat.to_radians();
        let dlat = lat2 - self.lat_rad;
        let dlon = (lon - self.lon).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + self.cos_lat * lat2.cos() * (dlon / 2.0).sin().powi(2);
        // Rounding can push h a hair above 1 for antipodal points.
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

// ---------------------------------------------------------------------------------------------
// One decision

/// What [`decide`] needs besides the request and the candidates.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The geo database.
    pub geo: GeoAvailability<'a>,
    /// `geo.trusted_proxies`.
    pub trusted_proxies: &'a [IpNet],
    /// This node's region.
    pub home_region: &'a str,
    /// The current mode.
    pub mode: Mode,
}

/// A routing decision; the candidates are in the vector given to [`decide`], ranked.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The client address used and how it was found.
    pub client: ClientAddr,
    /// The client's location and its source.
    pub geo: ClientGeo<'a>,
    /// What the ranking was based on.
    pub basis: Basis<'a>,
    /// The outcome.
    pub outcome: Outcome,
    /// Whether any candidate holds the content (this node or a member in any state).
    pub held_anywhere: bool,
}

/// Resolves the client, locates it and ranks `this` node and `members` for `content_id` into
/// `out` (cleared first), to `depth`. With room in `out`, nothing is allocated.
#[allow(clippy::too_many_arguments)]
pub fn decide<'a, 'h, I>(
    settings: &Settings<'a>,
    peer: IpAddr,
    forwarded_for: I,
    this: Candidate<'a>,
    members: impl Iterator<Item = &'a Member>,
    content_id: &str,
    now: Instant,
    depth: Depth,
    out: &mut Vec<Candidate<'a>>,
) -> Decision<'a>
where
    I: IntoIterator<Item = &'h [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    let client = resolve_client(peer, forwarded_for, settings.trusted_proxies);
    let geo = locate(settings.geo, client.ip);
    out.clear();
    let self_id = this.peer_id;
    out.push(this);
    out.extend(
        members
            .filter(|m| &m.peer_id != self_id)
            .map(|m| Candidate::member(m, content_id, now)),
    );
    let held_anywhere = out.iter().any(|c| c.holds);
    let (basis, outcome) = rank(
        out,
        geo.location(),
        settings.home_region,
        settings.mode,
        depth,
    );
    Decision {
        client,
        geo,
        basis,
        outcome,
        held_anywhere,
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<Candidate<'static>>> = const { RefCell::new(Vec::new()) };
}

/// This thread's candidate vector (empty, with the capacity of earlier decisions), so a
/// decision reuses it instead of allocating. Hand it back with [`return_scratch`].
pub fn take_scratch() -> Vec<Candidate<'static>> {
    SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// Gives a vector from [`take_scratch`] back, keeping its allocation for the next decision.
pub fn return_scratch(mut v: Vec<Candidate<'_>>) {
    v.clear();
    // An empty vector of borrowed candidates becomes one of 'static candidates in place (same
    // layout, so std's in-place collection keeps the allocation): no unsafe lifetime cast.
    let v: Vec<Candidate<'static>> = v.into_iter().map(|_| unreachable!("empty")).collect();
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if v.capacity() > s.capacity() {
            *s = v;
        }
    });
}

/// A distance as an answer shows it: km to one decimal.
pub fn round_km(d: Option<f64>) -> Option<f64> {
    d.map(|d| (d * 10.0).round() / 10.0)
}

/// The chosen candidate of a list ranked by [`rank`]: the first, if eligible.
pub fn chosen<'c, 'a>(ranked: &'c [Candidate<'a>]) -> Option<&'c Candidate<'a>> {
    ranked.first().filter(|c| c.is_eligible())
}

/// The best `n` eligible candidates.
pub fn best<'c, 'a>(
    ranked: &'c [Candidate<'a>],
    n: usize,
) -> impl Iterator<Item = &'c Candidate<'a>> {
    ranked.iter().take_while(|c| c.is_eligible()).take(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::messages::HeldContent;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address literal")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    fn resolve(peer: &str, xff: &[&str], trusted: &[&str]) -> ClientAddr {
        let lines: Vec<&[u8]> = xff.iter().map(|s| s.as_bytes()).collect();
        resolve_client(ip(peer), lines, &nets(trusted))
    }

    #[test]
    fn haversine_known_distances() {
        let r = EARTH_RADIUS_KM;
        let pi = std::f64::consts::PI;
        assert!((haversine_km((0.0, 0.0), (0.0, 180.0)) - pi * r).abs() < 1e-6);
        assert!((haversine_km((90.0, 0.0), (-90.0, 0.0)) - pi * r).abs() < 1e-6);
        assert!((haversine_km((0.0, 0.0), (0.0, 90.0)) - pi * r / 2.0).abs() < 1e-6);
        assert_eq!(haversine_km((10.0, 20.0), (10.0, 20.0)), 0.0);
        // Across the antimeridian: 2 degrees of longitude at the equator.
        let d = haversine_km((0.0, 179.0), (0.0, -179.0));
        assert!((d - 2.0 * pi * r / 180.0).abs() < 1e-6, "{d}");
        // London to New York, about 5570 km.
        let d = haversine_km((51.5074, -0.1278), (40.7128, -74.0060));
        assert!((d - 5570.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        // No header.
        let c = resolve("203.0.113.5", &[], &["10.0.0.0/8"]);
        assert_eq!((c.ip, c.source), (ip("203.0.113.5"), AddrSource::Peer));
        // Untrusted peer: header ignored.
        let c = resolve("203.0.113.5", &["8.8.8.8"], &["10.0.0.0/8"]);
        assert_eq!(
            (c.ip, c.source),
            (ip("203.0.113.5"), AddrSource::UntrustedForwardedFor)
        );
        // No trusted proxies at all: ignored too.
        let c = resolve("10.0.0.1", &["8.8.8.8"], &[]);
        assert_eq!(c.source, AddrSource::UntrustedForwardedFor);
        // Trusted peer without header.
        let c = resolve("10.0.0.1", &[], &["10.0.0.0/8"]);
        assert_eq!(c.source, AddrSource::TrustedPeerWithoutHeader);
        // Trusted peer: right-most non-trusted entry; the client-written left part is ignored,
        // even when it is garbage.
        let c = resolve(
            "10.0.0.1",
            &["garbage, 1.1.1.1, 8.8.8.8 , 10.0.0.7"],
            &["10.0.0.0/8"],
        );
        assert_eq!((c.ip, c.source), (ip("8.8.8.8"), AddrSource::ForwardedFor));
        assert_eq!(c.peer, ip("10.0.0.1"));
        // Several header lines form one list, in order.
        let c = resolve(
            "10.0.0.1",
            &["1.1.1.1", "8.8.8.8, 10.0.0.9"],
            &["10.0.0.0/8"],
        );
        assert_eq!(c.ip, ip("8.8.8.8"));
        let c = resolve("10.0.0.1", &["1.1.1.1", "10.0.0.9"], &["10.0.0.0/8"]);
        assert_eq!(c.ip, ip("1.1.1.1"));
        // All trusted: the left-most.
        let c = resolve("10.0.0.1", &["10.1.1.1, 10.2.2.2"], &["10.0.0.0/8"]);
        assert_eq!(
            (c.ip, c.source),
            (ip("10.1.1.1"), AddrSource::ForwardedForAllTrusted)
        );
        // Ports and brackets as some proxies write them; IPv6.
        let c = resolve("10.0.0.1", &["[2001:db8::7]:443"], &["10.0.0.0/8"]);
        assert_eq!(c.ip, ip("2001:db8::7"));
        let c = resolve("10.0.0.1", &["81.2.69.142:5555"], &["10.0.0.0/8"]);
        assert_eq!(c.ip, ip("81.2.69.142"));
        let c = resolve("10.0.0.1", &["[2001:4860:4860::8888]"], &["10.0.0.0/8"]);
        assert_eq!(c.ip, ip("2001:4860:4860::8888"));
        // IPv4-mapped peers and entries count as IPv4.
        let c = resolve("::ffff:10.0.0.1", &["::ffff:8.8.4.4"], &["10.0.0.0/8"]);
        assert_eq!((c.ip, c.peer), (ip("8.8.4.4"), ip("10.0.0.1")));
        // A private address the proxy vouches for is the client (and has no location).
        let c = resolve("127.0.0.1", &["192.168.1.20"], &["127.0.0.1/32"]);
        assert_eq!(
            (c.ip, c.source),
            (ip("192.168.1.20"), AddrSource::ForwardedFor)
        );
    }

    #[test]
    fn malformed_forwarded_for_falls_back_to_the_peer() {
        for (xff, why) in [
            ("not-an-ip", "an entry is not an IP address"),
            ("1.2.3", "an entry is not an IP address"),
            ("unknown", "an entry is not an IP address"),
            ("8.8.8.8, ", "an empty entry"),
            ("", "an empty entry"),
            ("999.1.1.1", "an entry is not an IP address"),
            ("8.8.8.8 1.1.1.1", "an entry is not an IP address"),
        ] {
            let c = resolve("127.0.0.1", &[xff], &["127.0.0.0/8"]);
            assert_eq!(
                (c.ip, c.source),
                (ip("127.0.0.1"), AddrSource::MalformedForwardedFor(why)),
                "{xff:?}"
            );
            assert!(c.source.to_string().contains("malformed"));
        }
        let long = vec!["10.0.0.1"; 40].join(",");
        let c = resolve("10.0.0.1", &[&long], &["10.0.0.0/8"]);
        assert_eq!(
            c.source,
            AddrSource::MalformedForwardedFor("more than 32 entries")
        );
        let c = resolve_client(ip("10.0.0.1"), [&b"\xff\xfe"[..]], &nets(&["10.0.0.0/8"]));
        assert_eq!(
            c.source,
            AddrSource::MalformedForwardedFor("not ASCII text")
        );
    }

    #[test]
    fn non_public_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_non_public(ip(a)), "{a}");
        }
        for a in [
            "8.8.8.8",
            "100.128.0.1",
            "2001:4860:4860::8888",
            "81.2.69.142",
        ] {
            assert!(!is_non_public(ip(a)), "{a}");
        }
    }

    fn peer_ids(n: usize) -> Vec<PeerId> {
        // Deterministic ids from fixed seeds, so tie-breaks are reproducible.
        (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[0] = i as u8 + 1;
                libp2p::identity::Keypair::ed25519_from_bytes(seed)
                    .expect("seed")
                    .public()
                    .to_peer_id()
            })
            .collect()
    }

    struct Spec {
        role: WireRole,
        region: &'static str,
        loc: Option<(f64, f64)>,
        state: MemberState,
        conns: u32,
        bytes: u64,
        silent_ms: u64,
        holds: bool,
        http: &'static str,
    }

    fn spec(role: WireRole, region: &'static str, loc: Option<(f64, f64)>) -> Spec {
        Spec {
            role,
            region,
            loc,
            state: MemberState::Alive,
            conns: 0,
            bytes: 0,
            silent_ms: 0,
            holds: true,
            http: "192.0.2.1:8080",
        }
    }

    fn candidates<'a>(ids: &'a [PeerId], specs: &[Spec]) -> Vec<Candidate<'a>> {
        specs
            .iter()
            .zip(ids)
            .map(|(s, id)| Candidate {
                receiver: false,
                peer_id: id,
                is_self: false,
                role: s.role,
                region: s.region,
                location: s.loc,
                http: s.http,
                state: s.state,
                load: Load {
                    connections: s.conns,
                    bytes_out_per_s: s.bytes,
                    cache_fill_permille: 0,
                },
                silent_for: Duration::from_millis(s.silent_ms),
                holds: s.holds,
                distance_km: None,
                exclusion: None,
                band: 0,
                key: Key::default(),
            })
            .collect()
    }

    const LONDON: (f64, f64) = (51.5074, -0.1278);
    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
    const SYDNEY: (f64, f64) = (-33.8688, 151.2093);

    fn order(c: &[Candidate<'_>], ids: &[PeerId]) -> Vec<usize> {
        c.iter()
            .map(|c| ids.iter().position(|i| i == c.peer_id).expect("known id"))
            .collect()
    }

    #[test]
    fn nearest_first_then_load_then_freshness() {
        let ids = peer_ids(6);
        let mut specs = vec![
            spec(WireRole::Origin, "us-east", Some(NEW_YORK)),
            spec(WireRole::Edge, "eu-west", Some(PARIS)),
            spec(WireRole::Mesh, "ap", Some(SYDNEY)),
            // Same London spot, different loads and freshness.
            spec(WireRole::Edge, "eu-west", Some(LONDON)),
            spec(WireRole::Edge, "eu-west", Some((51.51, -0.13))),
            spec(WireRole::Mesh, "eu-west", Some(LONDON)),
        ];
        specs[3].conns = 5;
        specs[4].conns = 2;
        specs[4].bytes = 900;
        specs[5].conns = 2;
        specs[5].bytes = 900;
        specs[5].silent_ms = 400;
        let mut c = candidates(&ids, &specs);
        let (basis, outcome) = rank(&mut c, Some(LONDON), "eu-west", Mode::Normal, Depth::All);
        assert_eq!((basis, outcome), (Basis::Distance, Outcome::Geo));
        assert_eq!(order(&c, &ids), vec![4, 5, 3, 1, 0, 2]);
        assert!(c.iter().all(Candidate::is_eligible));
        let ch = chosen(&c).expect("chosen");
        assert!(ch.reason(Some(ch), &basis).starts_with("chosen: nearest"));
        assert!(c[1]
            .reason(Some(ch), &basis)
            .contains("heard from less recently"));
        assert!(c[2].reason(Some(ch), &basis).contains("5 connections vs 2"));
        let paris = c[3].reason(Some(ch), &basis);
        assert!(
            paris.starts_with("farther than the chosen node by 343 km"),
            "{paris}"
        );
        // Bytes/s breaks a tie of connections.
        let mut specs = vec![
            spec(WireRole::Edge, "x", Some(LONDON)),
            spec(WireRole::Edge, "x", Some(LONDON)),
        ];
        specs[0].bytes = 10;
        let mut c = candidates(&ids[..2], &specs);
        rank(&mut c, Some(PARIS), "x", Mode::Normal, Depth::All);
        assert_eq!(order(&c, &ids), vec![1, 0]);
        assert!(c[1]
            .reason(chosen(&c), &Basis::Distance)
            .contains("10 bytes/s out vs 0"));
    }

    #[test]
    fn exclusions_and_their_reasons() {
        let ids = peer_ids(7);
        let mut specs = vec![
            spec(WireRole::Origin, "a", Some(LONDON)),
            spec(WireRole::Edge, "a", Some(LONDON)),
            spec(WireRole::SatelliteUplink, "a", Some(LONDON)),
            spec(WireRole::Mesh, "a", Some(LONDON)),
            spec(WireRole::Edge, "a", Some(LONDON)),
            spec(WireRole::Edge, "a", Some(NEW_YORK)),
            spec(WireRole::Origin, "a", Some(LONDON)),
        ];
        specs[0].state = MemberState::Dead;
        specs[1].state = MemberState::Suspect;
        specs[3].holds = false;
        specs[4].http = "0.0.0.0:8080";
        specs[5].holds = false; // an edge: fills on demand
        specs[6].http = "";
        let mut c = candidates(&ids, &specs);
        let (basis, outcome) = rank(&mut c, Some(LONDON), "a", Mode::Normal, Depth::All);
        assert_eq!(outcome, Outcome::Geo);
        let ch = chosen(&c).expect("the New York edge");
        assert_eq!(ch.peer_id, &ids[5]);
        assert!(ch
            .reason(Some(ch), &basis)
            .contains("fills the content on demand"));
        let reasons: Vec<(usize, String)> = c
            .iter()
            .map(|x| {
                (
                    ids.iter().position(|i| i == x.peer_id).unwrap(),
                    x.reason(Some(ch), &basis),
                )
            })
            .collect();
        let reason = |i: usize| reasons.iter().find(|(j, _)| *j == i).unwrap().1.clone();
        assert_eq!(reason(0), "dead");
        assert_eq!(reason(1), "suspect");
        assert_eq!(reason(2), "role satellite-uplink does not serve viewers");
        assert_eq!(reason(3), "does not hold the content");
        assert_eq!(reason(4), "advertises no usable viewer address");
        assert_eq!(reason(6), "advertises no usable viewer address");
        // Excluded candidates still carry their distance.
        assert!(c.iter().all(|x| x.distance_km.is_some()));

        // Nothing eligible.
        let mut specs = vec![spec(WireRole::Origin, "a", Some(LONDON))];
        specs[0].state = MemberState::Dead;
        let mut c = candidates(&ids[..1], &specs);
        let (_, outcome) = rank(&mut c, Some(LONDON), "a", Mode::Normal, Depth::All);
        assert_eq!(outcome, Outcome::NoCandidate);
        assert!(chosen(&c).is_none());
    }

    #[test]
    fn a_partial_ranking_agrees_with_the_full_one() {
        // Seeded pseudo-random tables; many equal loads so the tie-breaks are exercised.
        let ids = peer_ids(40);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for round in 0..200 {
            let specs: Vec<Spec> = (0..40)
                .map(|_| {
                    let mut s = spec(
                        [WireRole::Origin, WireRole::Edge, WireRole::Mesh][next(3) as usize],
                        ["a", "b"][next(2) as usize],
                        (next(5) > 0).then(|| (next(120) as f64 - 60.0, next(360) as f64 - 180.0)),
                    );
                    s.conns = next(3) as u32;
                    s.bytes = next(2);
                    s.silent_ms = next(2) * 100;
                    s.holds = next(2) == 0;
                    s.state = [MemberState::Alive, MemberState::Alive, MemberState::Suspect]
                        [next(3) as usize];
                    s
                })
                .collect();
            let client = (round % 3 != 0).then_some((10.0, 20.0));
            let mut all = candidates(&ids, &specs);
            let (_, outcome) = rank(&mut all, client, "a", Mode::Normal, Depth::All);
            let eligible = all.iter().take_while(|c| c.is_eligible()).count();
            assert!(all[eligible..].iter().all(|c| !c.is_eligible()));
            for n in [0, 1, 3, 100] {
                let mut part = candidates(&ids, &specs);
                let (_, o) = rank(&mut part, client, "a", Mode::Normal, Depth::Best(n));
                assert_eq!(o, outcome);
                let k = n.min(eligible);
                assert_eq!(
                    order(&part[..k], &ids),
                    order(&all[..k], &ids),
                    "round {round}"
                );
                assert!(part[..k].iter().all(Candidate::is_eligible));
                if eligible == 0 {
                    assert_eq!(order(&part, &ids), order(&all, &ids));
                }
            }
        }
    }

    #[test]
    fn without_a_client_location_the_home_region_first() {
        let ids = peer_ids(4);
        let mut specs = vec![
            spec(WireRole::Origin, "us", Some(NEW_YORK)),
            spec(WireRole::Edge, "eu", Some(PARIS)),
            spec(WireRole::Edge, "eu", None),
            spec(WireRole::Edge, "ap", Some(SYDNEY)),
        ];
        specs[1].conns = 3;
        let mut c = candidates(&ids, &specs);
        let (basis, outcome) = rank(&mut c, None, "eu", Mode::Normal, Depth::All);
        assert_eq!(outcome, Outcome::Fallback);
        assert_eq!(basis, Basis::Region { home: "eu" });
        assert_eq!(&order(&c, &ids)[..2], &[2, 1]);
        assert!(c.iter().all(|x| x.distance_km.is_none()));
        let ch = chosen(&c).unwrap();
        assert_eq!(
            ch.reason(Some(ch), &basis),
            "chosen: in this node's region (eu), least loaded"
        );
        assert!(c[2]
            .reason(Some(ch), &basis)
            .contains("not in this node's region (eu)"));
        assert!(basis.to_string().contains("no location"));
        // No node in the region: least loaded anywhere.
        let mut c = candidates(&ids, &specs);
        let (basis, _) = rank(&mut c, None, "mars", Mode::Normal, Depth::All);
        let ch = chosen(&c).unwrap();
        assert!(ch
            .reason(Some(ch), &basis)
            .contains("no node that can serve is in"));
    }

    #[test]
    fn nodes_without_a_location_rank_after_located_ones() {
        let ids = peer_ids(2);
        let specs = vec![
            spec(WireRole::Edge, "x", None),
            spec(WireRole::Edge, "x", Some(SYDNEY)),
        ];
        let mut c = candidates(&ids, &specs);
        rank(&mut c, Some(LONDON), "x", Mode::Normal, Depth::All);
        assert_eq!(order(&c, &ids), vec![1, 0]);
        assert!(c[1]
            .reason(chosen(&c), &Basis::Distance)
            .contains("no location known"));
    }

    #[test]
    fn decide_uses_the_membership_and_reuses_its_vector() {
        use crate::control::membership::{Membership, MembershipConfig};
        use crate::control::messages::tests::heartbeat;

        let mut table = Membership::new(MembershipConfig {
            suspect_after_missed: 3,
            dead_after_missed: 6,
            dead_retention: Duration::from_secs(60),
            max_members: 16,
        });
        let t0 = Instant::now();
        let ids = peer_ids(4);
        for (i, (loc, holds)) in [(PARIS, true), (SYDNEY, true), (NEW_YORK, false)]
            .into_iter()
            .enumerate()
        {
            let mut hb = heartbeat();
            hb.role = WireRole::Mesh;
            hb.location = Some(loc);
            hb.addrs.http = format!("192.0.2.{}:8080", i + 1);
            hb.interval_ms = 1000;
            hb.contents = if holds {
                vec![HeldContent {
                    id: "song".into(),
                    version: 1,
                    mesh_root: [0; 32],
                    bytes: 0,
                }]
            } else {
                Vec::new()
            };
            table.observe(ids[i + 1], hb, t0);
        }
        let trusted = nets(&["127.0.0.1/32"]);
        let settings = Settings {
            geo: GeoAvailability::NotConfigured,
            trusted_proxies: &trusted,
            home_region: "eu",
            mode: Mode::Normal,
        };
        let this = Candidate::this_node(
            &ids[0],
            WireRole::Origin,
            "us",
            Some(NEW_YORK),
            "192.0.2.9:8080",
            Load::default(),
            false,
        );
        let mut out = take_scratch();
        let d = decide(
            &settings,
            ip("127.0.0.1"),
            [&b"8.8.8.8"[..]],
            this,
            table.members(),
            "song",
            t0,
            Depth::All,
            &mut out,
        );
        assert_eq!(d.client.ip, ip("8.8.8.8"));
        assert!(matches!(d.geo.source, LocationSource::NotConfigured));
        assert_eq!(d.outcome, Outcome::Fallback);
        assert!(d.held_anywhere);
        assert_eq!(out.len(), 4);
        // This node (origin, not holding) and the New York mesh node are excluded.
        assert_eq!(out.iter().filter(|c| c.is_eligible()).count(), 2);
        let cap = out.capacity();
        return_scratch(out);
        let again = take_scratch();
        assert!(again.capacity() >= cap && again.is_empty());
        return_scratch(again);
    }
}
