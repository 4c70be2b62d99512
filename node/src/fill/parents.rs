//! Who a node fills from: the [`Parents`] it is given, in their order, with the parents that
//! misbehaved or could not deliver recently moved behind the others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use parking_lot::Mutex;

/// How long a parent that broke the protocol, sent unverifiable bytes, or missed a deadline
/// is avoided (it is still asked when every other parent failed).
const PENALTY: Duration = Duration::from_secs(60);
/// Most penalties remembered; expired ones are dropped first (bounded however many addresses
/// misbehave).
const MAX_PENALTIES: usize = 1024;

/// A parent to fill from.
#[derive(Debug, Clone)]
pub struct ParentAddr {
    /// QUIC address.
    pub addr: SocketAddr,
    /// Peer id, when known (then the handshake pins it).
    pub peer_id: Option<PeerId>,
}

/// A parent as this node tells parents apart: its address and the peer expected there (an
/// impostor claiming another peer at an honest parent's address is another parent).
pub(super) type ParentKey = (SocketAddr, Option<PeerId>);

impl ParentAddr {
    pub(super) fn key(&self) -> ParentKey {
        (self.addr, self.peer_id)
    }
}

/// The parents of a node, best first. The composition root implements it: configured
/// `upstream.parents` in their order, else the alive origins of the membership table, least
/// loaded first.
pub trait Parents: Send + Sync + std::fmt::Debug + 'static {
    /// The parents to ask now, best first.
    fn parents(&self) -> Vec<ParentAddr>;
}

/// Parents that broke the protocol or sent bad bytes, and until when they are avoided.
#[derive(Debug, Default)]
pub(super) struct Penalties {
    until: Mutex<HashMap<ParentKey, Instant>>,
}

impl Penalties {
    /// Avoids `parent` for [`PENALTY`].
    pub(super) fn penalise(&self, parent: ParentKey) {
        let now = Instant::now();
        let mut until = self.until.lock();
        if until.len() >= MAX_PENALTIES {
            until.retain(|_, t| *t > now);
        }
        if until.len() < MAX_PENALTIES {
            until.insert(parent, now + PENALTY);
        }
    }

    /// `list` without `exclude`, penalised parents moved behind the others (keeping their
    /// relative order).
    pub(super) fn order(
        &self,
        mut list: Vec<ParentAddr>,
        exclude: Option<PeerId>,
    ) -> Vec<ParentAddr> {
        list.retain(|p| exclude.is_none() || p.peer_id != exclude);
        // One lock and one clock reading for the whole sort, not two per comparison.
        let (until, now) = (self.until.lock(), Instant::now());
        list.sort_by_key(|p| until.get(&p.key()).is_some_and(|t| now < *t));
        drop(until);
        list
    }
}
