//! A deterministic simulation of a SWIM cluster: every member a real [`foca::Foca`] with the
//! node's configuration ([`crate::swim_config`]), driven by a simulated clock and a simulated
//! network that delays, loses and partitions packets. One seed, one outcome: a failing run can
//! be replayed exactly.
//!
//! Costs are counted per member as they would be on the wire (messages and bytes sent), and
//! what members conclude about each other (up, down) is recorded with the simulated time, so
//! tests and `swim-sim` can ask how long a failure took to be known everywhere and whether a
//! live member was ever declared down.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use foca::OwnedNotification;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::{Agent, AgentTimer, MemberId};

/// How the simulated network treats packets.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Share of packets lost, independently, 0.0–1.0.
    pub loss: f64,
    /// Shortest one-way delay.
    pub delay_min: Duration,
    /// Longest one-way delay (each packet's is uniform in between).
    pub delay_max: Duration,
}

impl Network {
    /// A LAN: no loss, 0.2–2 ms one way.
    pub fn lan() -> Self {
        Self {
            loss: 0.0,
            delay_min: Duration::from_micros(200),
            delay_max: Duration::from_millis(2),
        }
    }
}

/// What one member concluded about another, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Simulated time.
    pub at: Duration,
    /// The member that concluded.
    pub observer: usize,
    /// The member it concluded about.
    pub subject: usize,
    /// Whether it now holds the subject up (`true`) or down.
    pub up: bool,
}

/// Messages and bytes one member sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Packets.
    pub messages: u64,
    /// Their bytes (the encoded SWIM message; no UDP/IP headers).
    pub bytes: u64,
}

enum Event {
    Timer { node: usize, timer: AgentTimer },
    Deliver { to: usize, data: Bytes },
}

struct Node {
    swim: Agent,
    running: bool,
    sent: Sent,
}

/// A simulated cluster.
#[allow(missing_debug_implementations)] // thousands of members: nothing a debug print could show
pub struct Sim {
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Event>,
    nodes: Vec<Node>,
    network: Network,
    rng: SmallRng,
    /// Each member's side of a partition (`None`: no partition); packets cross no side.
    sides: Option<Vec<u8>>,
    observations: Vec<Observation>,
}

/// Member `index`'s identity: its key and address encode the index.
pub fn member_id(index: usize) -> MemberId {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(index as u64).to_le_bytes());
    let ip = Ipv4Addr::from(0x0a00_0000 | (index as u32 & 0x00ff_ffff));
    MemberId {
        key,
        addr: SocketAddr::new(ip.into(), 7946),
        generation: 0,
    }
}

fn index_of(id: &MemberId) -> usize {
    u64::from_le_bytes(id.key[..8].try_into().expect("8 bytes")) as usize
}

impl Sim {
    /// `members` members that already know each other (as after a completed join), each
    /// starting its probes at a random point of its first period.
    pub fn converged(members: usize, network: Network, seed: u64) -> Self {
        let mut sim = Self::new(members, network, seed);
        let everyone: Vec<MemberId> = (0..members).map(member_id).collect();
        for node in 0..members {
            let others = everyone.iter().filter(|id| index_of(id) != node).cloned();
            sim.nodes[node]
                .swim
                .add_members(others, Duration::ZERO)
                .expect("applying the roster");
            sim.drain(node);
        }
        sim
    }

    /// `members` members of which only the first knows anyone: every other one announces itself
    /// to member 0, one every `stagger`.
    pub fn joining(members: usize, network: Network, seed: u64, stagger: Duration) -> Self {
        let mut sim = Self::new(members, network, seed);
        for node in 1..members {
            sim.now = stagger * node as u32;
            sim.nodes[node]
                .swim
                .announce(member_id(0), sim.now)
                .expect("announce");
            sim.drain(node);
        }
        sim.now = Duration::ZERO;
        sim
    }

    fn new(members: usize, network: Network, seed: u64) -> Self {
        let config = crate::swim_config(members);
        let nodes = (0..members)
            .map(|i| Node {
                swim: Agent::new(
                    member_id(i),
                    &config,
                    seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
                running: true,
                sent: Sent::default(),
            })
            .collect();
        Self {
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes,
            network,
            rng: SmallRng::seed_from_u64(seed),
            sides: None,
            observations: Vec::new(),
        }
    }

    /// Simulated time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// How many members the simulation has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, event);
    }

    /// Takes what member `node`'s last call produced: packets onto the network, timers onto
    /// the clock, conclusions into the record.
    fn drain(&mut self, node: usize) {
        while let Some((to, data)) = self.nodes[node].swim.to_send() {
            let sent = &mut self.nodes[node].sent;
            sent.messages += 1;
            sent.bytes += data.len() as u64;
            let to = index_of(&to);
            let lost = self.network.loss > 0.0 && self.rng.random::<f64>() < self.network.loss;
            let cut = self.sides.as_ref().is_some_and(|s| s[node] != s[to]);
            if lost || cut || to >= self.nodes.len() {
                continue;
            }
            let span = self
                .network
                .delay_max
                .saturating_sub(self.network.delay_min);
            let delay = self.network.delay_min + span.mul_f64(self.rng.random::<f64>());
            self.schedule(self.now + delay, Event::Deliver { to, data });
        }
        while let Some((after, timer)) = self.nodes[node].swim.to_schedule() {
            self.schedule(self.now + after, Event::Timer { node, timer });
        }
        while let Some(notification) = self.nodes[node].swim.to_notify() {
            let (subject, up) = match notification {
                OwnedNotification::MemberUp(id) => (index_of(&id), true),
                OwnedNotification::MemberDown(id) => (index_of(&id), false),
                _ => continue,
            };
            self.observations.push(Observation {
                at: self.now,
                observer: node,
                subject,
                up,
            });
        }
    }

    /// Runs the simulation until `until` (simulated).
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            let event = self
                .events
                .remove(&seq)
                .expect("every queued event is stored");
            self.now = at;
            let node = match &event {
                Event::Timer { node, .. } => *node,
                Event::Deliver { to, .. } => *to,
            };
            if !self.nodes[node].running {
                continue;
            }
            let swim = &mut self.nodes[node].swim;
            let now = self.now;
            // A member that refuses a packet or a timer (malformed, not for it) goes on.
            let _ = match event {
                Event::Timer { timer, .. } => swim.handle_timer(timer, now),
                Event::Deliver { data, .. } => swim.handle_data(&data, now),
            };
            self.drain(node);
        }
        self.now = until;
    }

    /// Runs for `span` more simulated time.
    pub fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    /// Stops member `node` at once, as SIGKILL would: it sends and answers nothing more.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].running = false;
    }

    /// Splits the network: packets between members of different `sides` are lost.
    pub fn partition(&mut self, sides: Vec<u8>) {
        assert_eq!(sides.len(), self.nodes.len(), "one side per member");
        self.sides = Some(sides);
    }

    /// Joins the sides again.
    pub fn heal(&mut self) {
        self.sides = None;
    }

    /// How many members `node` holds active (itself excluded).
    pub fn active_seen_by(&self, node: usize) -> usize {
        self.nodes[node].swim.members().count()
    }

    /// Whether member `node` is running.
    pub fn running(&self, node: usize) -> bool {
        self.nodes[node].running
    }

    /// What member `node` has sent so far.
    pub fn sent(&self, node: usize) -> Sent {
        self.nodes[node].sent
    }

    /// What members concluded about each other so far, in time order.
    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    /// When every running member other than `subject` had concluded it down, at or after
    /// `since`; `None` if some had not.
    pub fn known_down_everywhere(&self, subject: usize, since: Duration) -> Option<Duration> {
        let mut latest = since;
        for observer in (0..self.nodes.len()).filter(|&o| o != subject && self.nodes[o].running) {
            let seen = self
                .observations
                .iter()
                .filter(|o| o.observer == observer && o.subject == subject && o.at >= since)
                .find(|o| !o.up)?;
            latest = latest.max(seen.at);
        }
        Some(latest)
    }

    /// Conclusions that a running member was down, at or after `since`: false positives
    /// (unless the member was cut off by a partition).
    pub fn running_declared_down(&self, since: Duration) -> Vec<Observation> {
        self.observations
            .iter()
            .filter(|o| o.at >= since && !o.up && self.nodes[o.subject].running)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total_sent(sim: &Sim) -> Sent {
        (0..sim.len()).fold(Sent::default(), |acc, n| Sent {
            messages: acc.messages + sim.sent(n).messages,
            bytes: acc.bytes + sim.sent(n).bytes,
        })
    }

    #[test]
    fn members_that_join_through_one_learn_of_everyone() {
        let mut sim = Sim::joining(40, Network::lan(), 1, Duration::from_millis(50));
        sim.run_until(Duration::from_secs(30));
        for node in 0..40 {
            assert_eq!(sim.active_seen_by(node), 39, "member {node}'s view");
        }
        assert!(sim.running_declared_down(Duration::ZERO).is_empty());
    }

    #[test]
    fn one_seed_one_outcome() {
        let run = |seed| {
            let mut sim = Sim::converged(
                30,
                Network {
                    loss: 0.05,
                    ..Network::lan()
                },
                seed,
            );
            sim.run_for(Duration::from_secs(5));
            sim.kill(7);
            sim.run_for(Duration::from_secs(10));
            (total_sent(&sim), sim.observations().to_vec())
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42).0, run(43).0);
    }

    #[test]
    fn idle_traffic_per_member_does_not_grow_with_the_cluster() {
        let per_member = |members: usize| {
            let mut sim = Sim::converged(members, Network::lan(), 3);
            sim.run_for(Duration::from_secs(5));
            let before = total_sent(&sim);
            sim.run_for(Duration::from_secs(10));
            let after = total_sent(&sim);
            let per = (members * 10) as f64;
            (
                (after.messages - before.messages) as f64 / per,
                (after.bytes - before.bytes) as f64 / per,
            )
        };
        let (m50, b50) = per_member(50);
        assert!(m50 > 1.0, "members probe: {m50} messages/s");
        for members in [500, 2000] {
            let (m, b) = per_member(members);
            assert!(
                (m / m50 - 1.0).abs() < 0.1 && (b / b50 - 1.0).abs() < 0.1,
                "{members} members: {m:.2} msgs/s, {b:.0} B/s against {m50:.2}, {b50:.0} at 50"
            );
        }
    }

    #[test]
    fn five_percent_loss_declares_no_live_member_down() {
        let network = Network {
            loss: 0.05,
            ..Network::lan()
        };
        let mut sim = Sim::converged(50, network, 11);
        sim.run_for(Duration::from_secs(120));
        assert_eq!(sim.running_declared_down(Duration::ZERO), vec![]);
        assert!((0..50).all(|n| sim.active_seen_by(n) == 49));
    }

    #[test]
    fn killed_members_are_known_down_everywhere_within_three_seconds() {
        // The goal, in simulated time: 20 kills in turn in a 50-member cluster.
        let mut sim = Sim::converged(50, Network::lan(), 5);
        sim.run_for(Duration::from_secs(5));
        for k in 0..20 {
            sim.run_for(Duration::from_millis(137 * k as u64 % 1000));
            let at = sim.now();
            sim.kill(k * 2);
            sim.run_for(Duration::from_secs(8));
            let known = sim.known_down_everywhere(k * 2, at).expect("known down");
            assert!(
                known - at <= Duration::from_secs(3),
                "kill {k}: {:?}",
                known - at
            );
        }
        assert_eq!(sim.running_declared_down(Duration::ZERO), vec![]);
    }

    #[test]
    fn a_killed_member_is_known_down_everywhere_and_a_partition_heals() {
        let mut sim = Sim::converged(50, Network::lan(), 7);
        sim.run_for(Duration::from_secs(5));
        let killed_at = sim.now();
        sim.kill(13);
        sim.run_for(Duration::from_secs(15));
        let known = sim
            .known_down_everywhere(13, killed_at)
            .expect("known down");
        assert!(known - killed_at < Duration::from_secs(10), "{known:?}");
        assert!(sim.running_declared_down(Duration::ZERO).is_empty());

        // Two sides for a while: each declares the other down; healed, they merge again.
        let sides = (0..50).map(|n| u8::from(n >= 25)).collect();
        sim.partition(sides);
        sim.run_for(Duration::from_secs(20));
        assert!(sim.active_seen_by(0) < 30, "{}", sim.active_seen_by(0));
        sim.heal();
        sim.run_for(Duration::from_secs(60));
        for node in (0..50).filter(|&n| n != 13) {
            assert_eq!(sim.active_seen_by(node), 48, "member {node} after the heal");
        }
    }
}
