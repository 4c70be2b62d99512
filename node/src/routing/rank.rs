//! Candidates and their ranking: who may serve a request, and in what order.

use std::cmp::Ordering;
use std::fmt;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::control::membership::{ContentKey, Member, MemberState};
use crate::control::messages::{Load, WireRole};
use crate::geo::UnitVector;
use crate::role::{role_of, Mode, NotServing, RolePolicy};

pub use mhc_transport::gossip::cert::{haversine_km, EARTH_RADIUS_KM};

/// Width of the distance bands nodes are compared in, km. Two nodes whose distances from the
/// client fall in the same band are equally near and the less loaded one wins. City-level geo-IP
/// is no more precise than this (MaxMind's accuracy radius is 20 km or more for most city
/// records, and DB-IP lite places whole networks at one city), so finer distinctions would rank
/// by noise and never let load matter between nodes of one metro area.
pub const DISTANCE_BAND_KM: f64 = 25.0;

/// A usable coordinate pair: finite and in range.
fn valid_location(loc: Option<(f64, f64)>) -> Option<(f64, f64)> {
    loc.filter(|(lat, lon)| {
        lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
    })
}

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
    /// `location` on the unit sphere, for the distance.
    pub(super) unit: Option<UnitVector>,
    pub(super) band: u32,
    pub(super) key: Key,
}

/// What candidates are sorted by, precomputed by [`rank`] so comparisons are integer compares:
/// distance band (or 0/1 for "in this node's region"), connections, bytes/s, microseconds since
/// heard, and this node before others. Peer ids break the remaining ties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
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
            unit: valid_location(location).map(UnitVector::from_lat_lon),
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
    pub fn member(m: &'a Member, content: &ContentKey<'_>, now: Instant) -> Self {
        let hb = &m.heartbeat;
        let location = valid_location(hb.location);
        Self {
            peer_id: &m.peer_id,
            is_self: false,
            role: hb.role,
            region: &hb.region,
            location,
            // Computed when the heartbeat arrived: no trigonometry per member per decision.
            unit: location.and(m.position()),
            http: &hb.addrs.http,
            state: m.state,
            load: hb.load,
            silent_for: now.saturating_duration_since(m.last_seen),
            holds: m.holds(content),
            receiver: hb.downlink,
            distance_km: None,
            exclusion: None,
            band: 0,
            key: Key::default(),
        }
    }

    /// Sets the distance from `client` and the sort key.
    fn set_key(&mut self, client: Option<&UnitVector>, basis: &Basis<'_>) {
        self.distance_km = client.zip(self.unit).map(|(a, b)| km_between(a, &b));
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
        RolePolicy::new(role_of(self.role), mode, self.receiver)
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
    let client = client.map(UnitVector::from_lat_lon);
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

/// The great-circle distance between two points, km ([`haversine_km`]'s answer, from points
/// whose trigonometry was done once: one square root and one arcsine).
pub(super) fn km_between(a: &UnitVector, b: &UnitVector) -> f64 {
    // Rounding can push the half-chord a hair above 1 for antipodal points.
    2.0 * EARTH_RADIUS_KM * (a.chord(b) / 2.0).min(1.0).asin()
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
