//! The membership table: every peer heard from, its latest heartbeat, and whether it is `alive`,
//! `suspect` or `dead`, judged by how many of its heartbeat periods have passed in silence.
//!
//! Pure logic with the clock passed in, so the state machine is tested with virtual time and no
//! sleeps. Ordering uses `(incarnation, seq)` only: wall clocks of other machines are shown to the
//! operator but never trusted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::messages::Heartbeat;
use crate::geo::UnitVector;

/// Liveness of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Heard from within `suspect_after_missed` periods.
    Alive,
    /// Silent for `suspect_after_missed` periods or more; not offered to routing.
    Suspect,
    /// Silent for `dead_after_missed` periods or more; kept for the operator for a while.
    Dead,
}

impl MemberState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
        }
    }
}

/// Failure-detection settings.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Missed periods before `suspect`.
    pub suspect_after_missed: u32,
    /// Missed periods before `dead`.
    pub dead_after_missed: u32,
    /// How long a dead member stays listed for the operator.
    pub dead_retention: Duration,
    /// Most members tracked; new peers beyond this are ignored (dead ones are evicted first).
    pub max_members: usize,
    /// The longest heartbeat period a member is judged by, whatever it claims: a member that
    /// says it beats once an hour is still suspect after a few of this cluster's periods.
    pub max_period: Duration,
}

/// One member as this node sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Peer id.
    pub peer_id: PeerId,
    /// Latest accepted heartbeat.
    pub heartbeat: Heartbeat,
    /// Liveness.
    pub state: MemberState,
    /// When the state last changed.
    pub state_since: Instant,
    /// When the latest heartbeat arrived.
    pub last_seen: Instant,
    /// Why the member is in its state, in words.
    pub reason: String,
    /// The heartbeat's content ids by hash, rebuilt with every accepted heartbeat.
    held: HeldIndex,
    /// The heartbeat's location on the unit sphere, for routing's distances.
    position: Option<UnitVector>,
}

/// A content id with its [`content_hash`], computed once per routing decision and looked up in
/// every member's index.
#[derive(Debug, Clone, Copy)]
pub struct ContentKey<'a> {
    id: &'a str,
    hash: u64,
}

impl<'a> ContentKey<'a> {
    /// The key of `id`.
    pub fn new(id: &'a str) -> Self {
        Self {
            id,
            hash: content_hash(id),
        }
    }

    /// The content id.
    pub fn id(&self) -> &'a str {
        self.id
    }
}

/// The hash a member's content ids are indexed by (SipHash with fixed keys: the same in every
/// process, so it costs nothing to agree on; a member that chose colliding ids only lengthens
/// its own lookups).
fn content_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// A heartbeat's content ids as `(hash, position)` sorted by hash: whether a member holds a
/// content is a binary search over 16 bytes an id, instead of a scan of every [`HeldContent`]
/// (most of a routing decision's memory traffic when each of 100 members lists 32).
///
/// [`HeldContent`]: mhc_transport::gossip::messages::HeldContent
#[derive(Debug, Clone, Default)]
struct HeldIndex(Vec<(u64, u32)>);

impl HeldIndex {
    fn of(hb: &Heartbeat) -> Self {
        let mut index: Vec<(u64, u32)> = hb
            .contents
            .iter()
            .enumerate()
            .map(|(i, c)| (content_hash(&c.id), i as u32))
            .collect();
        index.sort_unstable();
        Self(index)
    }
}

impl Member {
    fn new(
        peer_id: PeerId,
        heartbeat: Heartbeat,
        state: MemberState,
        now: Instant,
        reason: String,
    ) -> Self {
        Self {
            peer_id,
            held: HeldIndex::of(&heartbeat),
            position: heartbeat.location.map(UnitVector::from_lat_lon),
            heartbeat,
            state,
            state_since: now,
            last_seen: now,
            reason,
        }
    }

    /// The latest heartbeat's location as a point on the unit sphere (computed when the
    /// heartbeat arrived; `None` without a location; out-of-range values are the caller's to
    /// refuse).
    pub fn position(&self) -> Option<UnitVector> {
        self.position
    }

    /// Whether the latest heartbeat lists `content`.
    pub fn holds(&self, content: &ContentKey<'_>) -> bool {
        let index = &self.held.0;
        let first = index.partition_point(|&(h, _)| h < content.hash);
        index[first..]
            .iter()
            .take_while(|&&(h, _)| h == content.hash)
            .any(|&(_, i)| {
                self.heartbeat
                    .contents
                    .get(i as usize)
                    .is_some_and(|c| c.id == content.id)
            })
    }

    /// The member's own heartbeat period, within `[50 ms, max]`.
    fn period(&self, max: Duration) -> Duration {
        Duration::from_millis(u64::from(self.heartbeat.interval_ms.max(50))).min(max)
    }
}

/// What a heartbeat did to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A peer not seen before.
    New,
    /// A known, alive peer's next heartbeat.
    Updated,
    /// A suspect or dead peer is heard again (same incarnation).
    Recovered(MemberState),
    /// A restarted peer (higher incarnation).
    Restarted {
        /// The incarnation it had before.
        previous: u64,
    },
    /// Older than what is known (earlier incarnation, or a sequence number already seen).
    Stale,
    /// The table is full of live members.
    Full,
}

/// A state change found by [`Membership::sweep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Peer.
    pub peer_id: PeerId,
    /// Old state.
    pub from: MemberState,
    /// New state.
    pub to: MemberState,
}

/// The table.
#[derive(Debug)]
pub struct Membership {
    cfg: MembershipConfig,
    members: HashMap<PeerId, Member>,
}

/// What the sled snapshot keeps of a member: enough to dial it again after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// Peer id bytes.
    pub peer_id: Vec<u8>,
    /// Its latest heartbeat.
    pub heartbeat: Heartbeat,
}

impl Membership {
    /// An empty table.
    pub fn new(cfg: MembershipConfig) -> Self {
        Self {
            cfg,
            members: HashMap::new(),
        }
    }

    /// Applies a heartbeat (already authenticated: the signer is `peer`).
    pub fn observe(&mut self, peer: PeerId, hb: Heartbeat, now: Instant) -> Observed {
        if let Some(m) = self.members.get_mut(&peer) {
            let known = (m.heartbeat.incarnation, m.heartbeat.seq);
            if (hb.incarnation, hb.seq) <= known {
                return Observed::Stale;
            }
            let outcome = if hb.incarnation > known.0 {
                Observed::Restarted { previous: known.0 }
            } else if m.state != MemberState::Alive {
                Observed::Recovered(m.state)
            } else {
                Observed::Updated
            };
            if m.state != MemberState::Alive {
                m.state = MemberState::Alive;
                m.state_since = now;
            }
            // The reason explains the last transition; routine heartbeats keep it.
            match &outcome {
                Observed::Restarted { previous } => {
                    m.reason = format!("restarted (incarnation {previous} → {})", hb.incarnation)
                }
                Observed::Recovered(from) => {
                    m.reason = format!("heard again after being {}", from.as_str())
                }
                _ => {}
            }
            m.held = HeldIndex::of(&hb);
            if hb.location != m.heartbeat.location {
                m.position = hb.location.map(UnitVector::from_lat_lon);
            }
            m.heartbeat = hb;
            m.last_seen = now;
            return outcome;
        }
        if self.members.len() >= self.cfg.max_members && !self.evict_one_dead() {
            return Observed::Full;
        }
        self.members.insert(
            peer,
            Member::new(peer, hb, MemberState::Alive, now, "joined".into()),
        );
        Observed::New
    }

    fn evict_one_dead(&mut self) -> bool {
        let oldest = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Dead)
            .min_by_key(|m| m.last_seen)
            .map(|m| m.peer_id);
        oldest.is_some_and(|p| self.members.remove(&p).is_some())
    }

    /// Moves silent members to `suspect` / `dead` and forgets members dead for longer than the
    /// retention. Call it several times per heartbeat period.
    pub fn sweep(&mut self, now: Instant) -> Vec<Transition> {
        let mut changes = Vec::new();
        let cfg = &self.cfg;
        for m in self.members.values_mut() {
            let silent = now.saturating_duration_since(m.last_seen);
            let period = m.period(cfg.max_period);
            let missed = (silent.as_nanos() / period.as_nanos().max(1)) as u64;
            let target = if missed >= u64::from(cfg.dead_after_missed) {
                MemberState::Dead
            } else if missed >= u64::from(cfg.suspect_after_missed) {
                MemberState::Suspect
            } else {
                MemberState::Alive
            };
            // Silence only ever worsens the state; only a heartbeat makes a member alive again.
            let worse = matches!(
                (m.state, target),
                (MemberState::Alive, MemberState::Suspect | MemberState::Dead)
                    | (MemberState::Suspect, MemberState::Dead)
            );
            if worse {
                changes.push(Transition {
                    peer_id: m.peer_id,
                    from: m.state,
                    to: target,
                });
                m.reason = format!(
                    "no heartbeat for {} ms ({missed} periods of {} ms missed)",
                    silent.as_millis(),
                    period.as_millis()
                );
                m.state = target;
                m.state_since = now;
            }
        }
        let retention = cfg.dead_retention;
        self.members.retain(|_, m| {
            m.state != MemberState::Dead || now.saturating_duration_since(m.state_since) < retention
        });
        changes
    }

    /// Declares `peer` dead now, for `reason` (its key was revoked): it is no longer offered
    /// to routing, and only a heartbeat that passes admission could make it alive again.
    /// Whether it was listed and not dead already.
    pub fn expel(&mut self, peer: &PeerId, reason: &str, now: Instant) -> bool {
        match self.members.get_mut(peer) {
            Some(m) if m.state != MemberState::Dead => {
                m.state = MemberState::Dead;
                m.state_since = now;
                m.reason = reason.to_owned();
                true
            }
            _ => false,
        }
    }

    /// Every member.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn get(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
    }

    /// Members by state: `(alive, suspect, dead)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for m in self.members.values() {
            match m.state {
                MemberState::Alive => c.0 += 1,
                MemberState::Suspect => c.1 += 1,
                MemberState::Dead => c.2 += 1,
            }
        }
        c
    }

    /// What to persist.
    pub fn snapshot(&self) -> Vec<SnapshotEntry> {
        self.members
            .values()
            .filter(|m| m.state != MemberState::Dead)
            .map(|m| SnapshotEntry {
                peer_id: m.peer_id.to_bytes(),
                heartbeat: m.heartbeat.clone(),
            })
            .collect()
    }

    /// Restores a snapshot after a restart: the peers are known (and dialled) but not trusted to
    /// be alive; they start as `suspect` and become `alive` on their next heartbeat or `dead`
    /// after the usual silence.
    pub fn restore(&mut self, entries: Vec<SnapshotEntry>, now: Instant) {
        for e in entries {
            let Ok(peer) = PeerId::from_bytes(&e.peer_id) else {
                continue;
            };
            if self.members.len() >= self.cfg.max_members {
                break;
            }
            self.members.entry(peer).or_insert_with(|| {
                Member::new(
                    peer,
                    e.heartbeat,
                    MemberState::Suspect,
                    now,
                    "known from the snapshot before this node restarted; not heard since".into(),
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixtures::heartbeat;

    fn cfg() -> MembershipConfig {
        MembershipConfig {
            suspect_after_missed: 3,
            dead_after_missed: 6,
            dead_retention: Duration::from_secs(60),
            max_members: 3,
            max_period: Duration::from_secs(4),
        }
    }

    fn hb(incarnation: u64, seq: u64) -> Heartbeat {
        let mut h = heartbeat();
        h.incarnation = incarnation;
        h.seq = seq;
        h.interval_ms = 1000;
        h
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn holds_follows_the_latest_heartbeat() {
        use mhc_transport::gossip::messages::HeldContent;
        let held = |ids: &[&str]| -> Vec<HeldContent> {
            ids.iter()
                .map(|id| HeldContent {
                    id: (*id).to_owned(),
                    version: 1,
                    mesh_root: [0; 32],
                    bytes: 0,
                })
                .collect()
        };
        let t0 = Instant::now();
        let mut m = Membership::new(cfg());
        let p = PeerId::random();
        let mut first = hb(1, 1);
        let many: Vec<String> = (0..200).map(|i| format!("song-{i}")).collect();
        let ids: Vec<&str> = many.iter().map(String::as_str).collect();
        first.contents = held(&ids);
        m.observe(p, first, t0);
        let member = m.get(&p).expect("member");
        for id in &ids {
            assert!(member.holds(&ContentKey::new(id)), "{id}");
        }
        for id in ["song-200", "song", "", "song-1 "] {
            assert!(!member.holds(&ContentKey::new(id)), "{id:?}");
        }
        // The next heartbeat's list replaces the index.
        let mut next = hb(1, 2);
        next.contents = held(&["other"]);
        m.observe(p, next, t0 + S);
        let member = m.get(&p).expect("member");
        assert!(member.holds(&ContentKey::new("other")));
        assert!(!member.holds(&ContentKey::new("song-0")));
    }

    #[test]
    fn alive_suspect_dead_and_back_in_virtual_time() {
        let t0 = Instant::now();
        let mut m = Membership::new(cfg());
        let p = PeerId::random();
        assert_eq!(m.observe(p, hb(1, 1), t0), Observed::New);
        assert!(m.sweep(t0 + 2 * S + S / 2).is_empty());
        let t = m.sweep(t0 + 3 * S);
        assert_eq!(t[0].to, MemberState::Suspect);
        assert!(m.get(&p).unwrap().reason.contains("3 periods"));
        assert!(m.sweep(t0 + 5 * S).is_empty());
        let t = m.sweep(t0 + 6 * S);
        assert_eq!(
            (t[0].from, t[0].to),
            (MemberState::Suspect, MemberState::Dead)
        );
        // Heard again, same incarnation.
        assert_eq!(
            m.observe(p, hb(1, 2), t0 + 7 * S),
            Observed::Recovered(MemberState::Dead)
        );
        assert_eq!(m.get(&p).unwrap().state, MemberState::Alive);
        // Straight from alive to dead when the sweep was late.
        let t = m.sweep(t0 + 20 * S);
        assert_eq!(
            (t[0].from, t[0].to),
            (MemberState::Alive, MemberState::Dead)
        );
        // Forgotten after the retention.
        m.sweep(t0 + 20 * S + 60 * S);
        assert!(m.get(&p).is_none());
    }

    #[test]
    fn restarts_replays_and_bounds() {
        let t0 = Instant::now();
        let mut m = Membership::new(cfg());
        let p = PeerId::random();
        m.observe(p, hb(1, 10), t0);
        assert_eq!(m.observe(p, hb(1, 10), t0), Observed::Stale);
        assert_eq!(m.observe(p, hb(1, 9), t0), Observed::Stale);
        assert_eq!(m.observe(p, hb(0, 99), t0), Observed::Stale);
        assert_eq!(
            m.observe(p, hb(2, 1), t0 + S),
            Observed::Restarted { previous: 1 }
        );
        assert_eq!(m.observe(p, hb(2, 2), t0 + 2 * S), Observed::Updated);

        m.observe(PeerId::random(), hb(1, 1), t0);
        let third = PeerId::random();
        m.observe(third, hb(1, 1), t0);
        assert_eq!(m.observe(PeerId::random(), hb(1, 1), t0), Observed::Full);
        // A dead member makes room.
        m.sweep(t0 + 7 * S);
        m.observe(p, hb(2, 3), t0 + 7 * S);
        assert_eq!(m.counts(), (1, 0, 2));
        assert_eq!(
            m.observe(PeerId::random(), hb(1, 1), t0 + 7 * S),
            Observed::New
        );
    }

    #[test]
    fn snapshot_restores_as_suspect() {
        let t0 = Instant::now();
        let mut m = Membership::new(cfg());
        let p = PeerId::random();
        m.observe(p, hb(3, 1), t0);
        let snap = m.snapshot();
        let mut fresh = Membership::new(cfg());
        fresh.restore(snap, t0);
        assert_eq!(fresh.get(&p).unwrap().state, MemberState::Suspect);
        assert_eq!(
            fresh.observe(p, hb(3, 2), t0 + S),
            Observed::Recovered(MemberState::Suspect)
        );
    }

    #[test]
    fn a_member_claiming_a_long_period_is_judged_by_the_clusters() {
        let t0 = Instant::now();
        let mut m = Membership::new(cfg());
        let p = PeerId::random();
        let mut lazy = hb(1, 1);
        lazy.interval_ms = 3_600_000;
        m.observe(p, lazy, t0);
        // Three periods of at most 4 s, not three hours.
        let t = m.sweep(t0 + 12 * S);
        assert_eq!(t[0].to, MemberState::Suspect);
        let t = m.sweep(t0 + 24 * S);
        assert_eq!(t[0].to, MemberState::Dead);
    }

    #[test]
    fn an_expelled_member_is_dead_at_once() {
        let t0 = Instant::now();
        let mut m = Membership::new(cfg());
        let p = PeerId::random();
        m.observe(p, hb(1, 1), t0);
        assert!(m.expel(&p, "revoked", t0));
        assert!(!m.expel(&p, "revoked", t0));
        let member = m.get(&p).unwrap();
        assert_eq!(member.state, MemberState::Dead);
        assert_eq!(member.reason, "revoked");
        assert!(!m.expel(&PeerId::random(), "revoked", t0));
    }
}
