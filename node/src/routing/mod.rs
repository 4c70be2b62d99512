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

mod client;
mod locate;
mod rank;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;

use crate::control::membership::{ContentKey, Member};
use crate::role::Mode;
pub use client::{resolve_client, AddrSource, ClientAddr};
pub use locate::{locate, ClientGeo, GeoAvailability};
pub use rank::{best, chosen, haversine_km, rank, round_km, Basis, Candidate, Depth, Outcome};

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
    let content = ContentKey::new(content_id);
    out.extend(
        members
            .filter(|m| &m.peer_id != self_id)
            .map(|m| Candidate::member(m, &content, now)),
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
