//! Failure detection by SWIM (issue 22): the [`mhc_membership::Agent`] on a UDP socket of its
//! own (`listen.swim`), on the control plane's thread.
//!
//! Only admitted members take part. A member's SWIM address is the one its admitted heartbeat
//! advertises (certificate checked, key not revoked, not dead in the membership table);
//! [`Swim::sync`] keeps that list. Every datagram is the agent's packet in the node-key-signed
//! gossip envelope (topic [`SWIM_TOPIC`]); one is applied only when its signer is such a
//! member and the packet's header names the signer as its sender and this node as its
//! addressee. Packets go only to such members, at the address their heartbeat gave, never at
//! one a packet names, so a member cannot make this node send to anyone else.
//!
//! What the agent concludes flows one way into the membership table: a member it declares down
//! is `dead` at once (heartbeat silence still finds failures on its own, more slowly, and a
//! member wrongly declared down is alive again at its next heartbeat).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use mhc_membership::{Agent, AgentTimer, MemberId, OwnedNotification};
use tokio::net::UdpSocket;

use super::membership::MemberState;
use super::ClusterShared;
use crate::core::Core;

/// Envelope topic of membership datagrams (signed, so a datagram cannot pass for gossip).
pub const SWIM_TOPIC: &str = "mhc/swim/1";

/// Largest datagram read: foca's packets are at most 1,400 bytes, plus the envelope's 105.
const MAX_DATAGRAM: usize = 2048;

/// The cluster size the timing is chosen for until the membership table says otherwise.
const INITIAL_CLUSTER_SIZE: usize = 16;

/// A member this node may talk to: where its heartbeat says its SWIM socket is, and the
/// incarnation of that heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Admitted {
    addr: SocketAddr,
    incarnation: u64,
}

/// The agent, its socket and its timers.
pub struct Swim {
    agent: Agent,
    socket: UdpSocket,
    me: [u8; 32],
    /// Agent time zero.
    start: Instant,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_events: HashMap<u64, AgentTimer>,
    timer_seq: u64,
    /// Members that may take part, by key.
    admitted: HashMap<[u8; 32], Admitted>,
    /// The cluster size the timing was chosen for.
    timed_for: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Swim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swim")
            .field("me", &hex::encode(self.me))
            .field("admitted", &self.admitted.len())
            .finish_non_exhaustive()
    }
}

impl Swim {
    /// The agent of this node, known as `advertised` (its socket's address as others reach
    /// it), on `socket` (bound by the composition root, so a bind error names `listen.swim`).
    /// Must be called on the runtime that will drive it.
    ///
    /// # Errors
    /// The socket cannot be registered with the runtime.
    pub fn new(
        core: &Core,
        socket: std::net::UdpSocket,
        advertised: SocketAddr,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let me = core.identity.public_key();
        let id = MemberId {
            key: me,
            addr: advertised,
            generation: core.incarnation,
        };
        let timing = mhc_membership::swim_config(INITIAL_CLUSTER_SIZE);
        Ok(Self {
            agent: Agent::new(id, &timing, fastrand::u64(..)),
            socket,
            me,
            start: Instant::now(),
            timers: BinaryHeap::new(),
            timer_events: HashMap::new(),
            timer_seq: 0,
            admitted: HashMap::new(),
            timed_for: INITIAL_CLUSTER_SIZE,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Makes the admitted members those of the membership table that are not dead, have a
    /// SWIM address and an unrevoked key; members new to it (or restarted) are handed to the
    /// agent. Called on every sweep of the table.
    pub fn sync(&mut self, core: &Core, shared: &ClusterShared) {
        let mut fresh = Vec::new();
        let mut next = HashMap::with_capacity(self.admitted.len());
        {
            let membership = shared.membership.lock();
            for m in membership.members() {
                if m.state == MemberState::Dead {
                    continue;
                }
                let Ok(addr) = m.heartbeat.addrs.swim.parse::<SocketAddr>() else {
                    continue;
                };
                let Some(key) = crate::core::identity::peer_key(&m.peer_id) else {
                    continue;
                };
                if core.admission.is_revoked(&key) {
                    continue;
                }
                let admitted = Admitted {
                    addr,
                    incarnation: m.heartbeat.incarnation,
                };
                if self.admitted.get(&key) != Some(&admitted) {
                    fresh.push(MemberId {
                        key,
                        addr,
                        generation: admitted.incarnation,
                    });
                }
                next.insert(key, admitted);
            }
        }
        self.admitted = next;
        // The timing follows the cluster's size (suspicion grows with log n), re-chosen when
        // it doubled or halved.
        let size = self.admitted.len() + 1;
        if size >= self.timed_for * 2 || size * 2 <= self.timed_for {
            self.timed_for = size.max(INITIAL_CLUSTER_SIZE);
            if let Err(err) = self
                .agent
                .retime(&mhc_membership::swim_config(self.timed_for))
            {
                tracing::warn!(error = %err, "membership: timing not changed");
            }
        }
        if !fresh.is_empty() {
            let now = self.now();
            // A member the agent already holds under a higher generation (it rejoined) keeps
            // that one: the higher generation wins.
            if let Err(err) = self.agent.add_members(fresh, now) {
                tracing::debug!(error = %err, "membership: adding members");
            }
            self.settle(core, shared);
        }
    }

    /// Waits for a datagram or the next timer and handles it.
    pub async fn turn(&mut self, core: &Core, shared: &ClusterShared) {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = self.socket.recv_from(&mut self.buf) => match received {
                Ok((len, from)) => self.receive(core, len, from),
                Err(err) => {
                    // ICMP errors of earlier sends surface here on some systems; nothing to do.
                    tracing::trace!(error = %err, "membership socket");
                    return;
                }
            },
            () = sleep => self.fire_due(),
        }
        self.settle(core, shared);
    }

    fn receive(&mut self, core: &Core, len: usize, from: SocketAddr) {
        let metrics = &core.metrics;
        if len >= MAX_DATAGRAM {
            metrics.record_swim_dropped("oversize");
            return;
        }
        let data = &self.buf[..len];
        let Ok((signer, packet)) = super::envelope::open(data, SWIM_TOPIC) else {
            metrics.record_swim_dropped("bad_signature");
            return;
        };
        let Some(signer_key) = crate::core::identity::peer_key(&signer) else {
            metrics.record_swim_dropped("bad_signature");
            return;
        };
        if !self.admitted.contains_key(&signer_key) {
            metrics.record_swim_dropped("not_member");
            tracing::trace!(peer = %signer, %from, "membership datagram from a non-member");
            return;
        }
        match mhc_membership::addressed(packet) {
            Some((src, dst)) if src.key == signer_key && dst.key == self.me => {}
            Some(_) => {
                metrics.record_swim_dropped("mismatch");
                return;
            }
            None => {
                metrics.record_swim_dropped("malformed");
                return;
            }
        }
        metrics.record_swim("in", len);
        let now = self.now();
        if let Err(err) = self.agent.handle_data(packet, now) {
            metrics.record_swim_dropped("refused");
            tracing::debug!(peer = %signer, error = %err, "membership packet refused");
        }
    }

    fn fire_due(&mut self) {
        let now_instant = Instant::now();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now_instant {
                break;
            }
            self.timers.pop();
            if let Some(timer) = self.timer_events.remove(&seq) {
                let now = self.now();
                if let Err(err) = self.agent.handle_timer(timer, now) {
                    tracing::debug!(error = %err, "membership timer");
                }
            }
        }
    }

    /// Takes what the agent produced: packets out (to admitted members only), timers onto the
    /// heap, members it declared down into the membership table.
    fn settle(&mut self, core: &Core, shared: &ClusterShared) {
        while let Some((to, packet)) = self.agent.to_send() {
            let Some(admitted) = self.admitted.get(&to.key) else {
                core.metrics.record_swim_dropped("unknown_peer");
                continue;
            };
            let sealed = super::seal(core, SWIM_TOPIC, &packet);
            match self.socket.try_send_to(&sealed, admitted.addr) {
                Ok(_) => core.metrics.record_swim("out", sealed.len()),
                // A full socket buffer loses the packet, as the network may: SWIM copes.
                Err(err) => {
                    core.metrics.record_swim_dropped("send_failed");
                    tracing::trace!(error = %err, "membership send");
                }
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.agent.to_schedule() {
            self.timer_seq += 1;
            self.timers.push(Reverse((now + after, self.timer_seq)));
            self.timer_events.insert(self.timer_seq, timer);
        }
        while let Some(notification) = self.agent.to_notify() {
            match notification {
                OwnedNotification::MemberDown(id) => self.declared_down(shared, &id),
                OwnedNotification::Rejoin(id) => {
                    tracing::warn!(
                        generation = id.generation,
                        "membership: this node was declared down by the cluster; rejoined"
                    );
                }
                _ => {}
            }
        }
    }

    fn declared_down(&self, shared: &ClusterShared, id: &MemberId) {
        let Ok(public) = libp2p_identity::ed25519::PublicKey::try_from_bytes(&id.key) else {
            return;
        };
        let peer = PeerId::from(libp2p_identity::PublicKey::from(public));
        let mut membership = shared.membership.lock();
        // The down of a run before the member's latest restart says nothing of this one.
        let current = membership
            .get(&peer)
            .is_some_and(|m| m.heartbeat.incarnation <= id.generation);
        if current {
            let reason =
                "declared down by the failure detector (SWIM: probes failed and others confirmed)";
            if membership.expel(&peer, reason, Instant::now()) {
                drop(membership);
                shared.mark_dirty();
                tracing::info!(peer = %peer, "member declared down by the failure detector");
            }
        }
    }
}
