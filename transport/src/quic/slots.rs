//! The server's connection table: how many connections it holds in all, per client address
//! and per proven peer id, against the caps of [`QuicLimits`].
//!
//! A slot is taken when a connection attempt arrives (by address, before any handshake work)
//! and when the handshake proved a peer id; dropping the slot gives it back, however the
//! connection task ends. The maps hold only keys with open connections, so they are bounded by
//! `max_connections`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use libp2p_identity::PeerId;
use parking_lot::Mutex;

use super::QuicLimits;

/// Why a connection was refused; [`label`](Self::label) is how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server holds `max_connections`.
    TooManyConnections,
    /// The client's address (IPv6: its /64) holds `max_connections_per_address`.
    TooManyFromAddress,
    /// The proven peer id holds `max_connections_per_peer`.
    TooManyFromPeer,
}

impl Refusal {
    /// A short label for metrics: `too_many_connections`, `too_many_from_address` or
    /// `too_many_from_peer`.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyFromAddress => "too_many_from_address",
            Self::TooManyFromPeer => "too_many_from_peer",
        }
    }
}

#[derive(Default)]
struct Table {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_peer: HashMap<PeerId, usize>,
}

pub(crate) struct Slots {
    max_total: usize,
    max_per_address: usize,
    max_per_peer: usize,
    table: Mutex<Table>,
}

/// The part of an address that counts as one client: an IPv4 address, or an IPv6 /64 (one
/// subscriber's prefix; a host that owns a /64 has 2⁶⁴ addresses to rotate through).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Slots {
    pub(crate) fn new(limits: &QuicLimits) -> Arc<Self> {
        Arc::new(Self {
            max_total: limits.max_connections,
            max_per_address: limits.max_connections_per_address,
            max_per_peer: limits.max_connections_per_peer,
            table: Mutex::new(Table::default()),
        })
    }

    /// Whether the table is past half full: then new clients must prove their address first.
    pub(crate) fn under_pressure(&self) -> bool {
        self.table.lock().total >= self.max_total.div_ceil(2)
    }

    /// Takes a slot for a connection attempt from `ip`.
    pub(crate) fn admit_address(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, Refusal> {
        let key = client_key(ip);
        let mut t = self.table.lock();
        if t.total >= self.max_total {
            return Err(Refusal::TooManyConnections);
        }
        let n = t.by_address.entry(key).or_insert(0);
        if *n >= self.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        t.total += 1;
        Ok(AddressSlot {
            slots: Arc::clone(self),
            key,
        })
    }

    /// Takes a slot for a connection whose handshake proved `peer`.
    pub(crate) fn admit_peer(self: &Arc<Self>, peer: PeerId) -> Result<PeerSlot, Refusal> {
        let mut t = self.table.lock();
        let n = t.by_peer.entry(peer).or_insert(0);
        if *n >= self.max_per_peer {
            return Err(Refusal::TooManyFromPeer);
        }
        *n += 1;
        Ok(PeerSlot {
            slots: Arc::clone(self),
            peer,
        })
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let t = self.table.lock();
        (t.total, t.by_address.len(), t.by_peer.len())
    }
}

/// Removes `key` from `map` when its count drops to zero, so the map holds open keys only.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// A connection's place in the table by address; given back on drop.
pub(crate) struct AddressSlot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut t = self.slots.table.lock();
        t.total -= 1;
        release(&mut t.by_address, &self.key);
    }
}

/// A connection's place in the table by peer id; given back on drop.
pub(crate) struct PeerSlot {
    slots: Arc<Slots>,
    peer: PeerId,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        release(&mut self.slots.table.lock().by_peer, &self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per_address: usize, per_peer: usize) -> Arc<Slots> {
        Slots::new(&QuicLimits {
            max_connections: total,
            max_connections_per_address: per_address,
            max_connections_per_peer: per_peer,
            ..QuicLimits::default()
        })
    }

    #[test]
    fn each_cap_refuses_with_its_own_reason_and_dropped_slots_are_given_back() {
        let s = slots(4, 2, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = s.admit_address(a).unwrap();
        let a2 = s.admit_address(a).unwrap();
        assert_eq!(s.admit_address(a).err(), Some(Refusal::TooManyFromAddress));
        let _b1 = s.admit_address(b).unwrap();
        assert!(s.under_pressure());
        let _b2 = s.admit_address(b).unwrap();
        assert_eq!(s.admit_address(c).err(), Some(Refusal::TooManyConnections));

        let peer = crate::identity::NodeIdentity::from_seed(&[7; 32])
            .unwrap()
            .peer_id();
        let p1 = s.admit_peer(peer).unwrap();
        assert_eq!(s.admit_peer(peer).err(), Some(Refusal::TooManyFromPeer));
        drop(p1);
        let _p2 = s.admit_peer(peer).unwrap();

        drop(a1);
        drop(a2);
        let _c1 = s.admit_address(c).unwrap();
        assert_eq!(
            s.counts(),
            (3, 2, 1),
            "a's entry is gone once it has no connection"
        );
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let s = slots(100, 2, 1);
        let _x = s.admit_address("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _y = s
            .admit_address("2001:db8:1:2:ffff::9".parse().unwrap())
            .unwrap();
        assert_eq!(
            s.admit_address("2001:db8:1:2:abcd::5".parse().unwrap())
                .err(),
            Some(Refusal::TooManyFromAddress)
        );
        let _other = s.admit_address("2001:db8:1:3::1".parse().unwrap()).unwrap();

        let _v4 = s.admit_address("198.51.100.7".parse().unwrap()).unwrap();
        let _mapped = s
            .admit_address("::ffff:198.51.100.7".parse().unwrap())
            .unwrap();
        assert_eq!(
            s.admit_address("198.51.100.7".parse().unwrap()).err(),
            Some(Refusal::TooManyFromAddress)
        );
    }
}
