//! Lifeguard's suspicion (Dadgar et al., "Lifeguard: Local Health Awareness for More Accurate
//! Failure Detection", 2018; memberlist's `suspicion.go`), which foca lacks: a member that
//! failed its own probe of another does not wait a fixed time before declaring it down, but
//! from [`SuspicionTiming::max`] down to [`SuspicionTiming::min`] as other members report that
//! their probes failed too. A member that is really gone fails everyone's probes and is declared
//! down after the short timeout; one that only lost a few packets is suspected by one member,
//! keeps the long timeout and has time to hear of it and refute.
//!
//! Each member whose probe fails says so once: a [`Confirmation`] (the suspect, at its
//! incarnation, and the confirming member), disseminated like any update. [`Suspicions`] keeps, per suspected
//! member, who confirmed and, when this member suspects it too, when its own timeout ends.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::MemberId;

/// How long a suspicion lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspicionTiming {
    /// The timeout once [`Self::confirmations`] other members confirmed.
    pub min: Duration,
    /// The timeout with no confirmation.
    pub max: Duration,
    /// Confirmations that bring the timeout down to `min` (`k` in the paper).
    pub confirmations: u32,
}

impl SuspicionTiming {
    /// The timeout after `confirmed` confirmations by others: from `max` down to `min`,
    /// logarithmically, as memberlist does (the first confirmations count most).
    pub fn timeout(&self, confirmed: u32) -> Duration {
        if self.confirmations == 0 || confirmed >= self.confirmations {
            return self.min;
        }
        let share = f64::from(confirmed + 1).ln() / f64::from(self.confirmations + 1).ln();
        let span = self.max.saturating_sub(self.min);
        self.max.saturating_sub(span.mul_f64(share)).max(self.min)
    }
}

/// A member as suspected: its key and generation (one identity; a rejoined member is another)
/// and the incarnation it was suspected at (a refutation raises it, which ends the suspicion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Suspect {
    /// Its key.
    pub key: [u8; 32],
    /// Its generation.
    pub generation: u64,
    /// Its incarnation when suspected.
    pub incarnation: u16,
}

impl Suspect {
    /// `member` at `incarnation`.
    pub fn of(member: &MemberId, incarnation: u16) -> Self {
        Self {
            key: member.key,
            generation: member.generation,
            incarnation,
        }
    }

    /// Whether this is `member` at `incarnation`.
    pub fn is(&self, member: &MemberId, incarnation: u16) -> bool {
        *self == Self::of(member, incarnation)
    }
}

/// "My probe of `suspect` failed", from `from`: one member's independent evidence that the
/// suspect is down. What a member says of others is trusted as every SWIM update is;
/// admission decides who may say anything at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Confirmation {
    /// The suspected member.
    pub suspect: Suspect,
    /// The member whose probe failed.
    pub from: [u8; 32],
}

/// A suspicion of this member's own: the member and the token of the timer foca asked for.
#[derive(Debug, Clone)]
struct Own {
    member: MemberId,
    token: foca::TimerToken,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Distinct confirming members other than this one, at most `confirmations` of them.
    confirmers: Vec<[u8; 32]>,
    /// When this member first suspected or heard of the suspicion.
    started: Duration,
    /// When it is due: `started` plus the timeout for the confirmations so far.
    due: Duration,
    /// Set once it fired: later confirmations do not start it again.
    fired: bool,
    own: Option<Own>,
}

/// A suspicion whose due time is new or moved earlier: its timer must be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The suspected member.
    pub suspect: Suspect,
    /// When it is due.
    pub due: Duration,
}

/// A suspicion that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// This member's own (its probe failed): hand foca back its timer.
    Own(MemberId, foca::TimerToken),
    /// One this member heard of from others: declare the member down if it is still at the
    /// suspected incarnation.
    Heard,
}

/// The suspicions this member knows of, with their confirmations. As in memberlist, every
/// member times every suspicion it hears of, not only the one whose probe failed: a member
/// that is really gone is then declared down by everyone at about the same time, and no
/// member waits for the "down" to reach it. Bounded: at most `max_entries` suspected
/// (member, incarnation) pairs, each with at most `timing.confirmations` confirmers; entries
/// no timeout can still need are dropped first.
#[derive(Debug)]
pub struct Suspicions {
    me: [u8; 32],
    timing: SuspicionTiming,
    max_entries: usize,
    entries: HashMap<Suspect, Entry>,
    moved: Vec<Moved>,
}

impl Suspicions {
    /// No suspicions yet, for member `me`.
    pub fn new(me: [u8; 32], timing: SuspicionTiming, max_entries: usize) -> Self {
        Self {
            me,
            timing,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            moved: Vec::new(),
        }
    }

    /// The timing in force.
    pub fn timing(&self) -> SuspicionTiming {
        self.timing
    }

    /// Changes the timing of suspicions from now on.
    pub fn set_timing(&mut self, timing: SuspicionTiming) {
        self.timing = timing;
    }

    /// This member's own probe of `member` failed at `now` and foca asked for the timer that
    /// declares it down (`token` is foca's): returns when it is due, and the confirmation to
    /// disseminate. A suspicion already heard of keeps its start and confirmations.
    pub fn start(
        &mut self,
        member: MemberId,
        incarnation: u16,
        token: foca::TimerToken,
        now: Duration,
    ) -> (Duration, Confirmation) {
        let key = Suspect::of(&member, incarnation);
        self.make_room(&key, now);
        let timing = self.timing;
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            confirmers: Vec::new(),
            started: now,
            due: now + timing.max,
            fired: false,
            own: None,
        });
        entry.fired = false;
        entry.own = Some(Own {
            member: member.clone(),
            token,
        });
        let confirmation = Confirmation {
            suspect: key,
            from: self.me,
        };
        (entry.due.max(now), confirmation)
    }

    /// A confirmation heard at `now`. Returns whether it is news (to be passed on); a
    /// suspicion it starts or brings forward is queued in [`Self::take_moved`].
    pub fn confirm(&mut self, c: Confirmation, now: Duration) -> bool {
        if c.from == self.me {
            return false;
        }
        let key = c.suspect;
        if !self.make_room(&key, now) {
            return false;
        }
        let timing = self.timing;
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            confirmers: Vec::new(),
            started: now,
            due: Duration::MAX,
            fired: false,
            own: None,
        });
        if entry.confirmers.contains(&c.from)
            || entry.confirmers.len() >= timing.confirmations.max(1) as usize
        {
            return false;
        }
        entry.confirmers.push(c.from);
        let due = entry.started + timing.timeout(entry.confirmers.len() as u32);
        if due < entry.due && !entry.fired {
            entry.due = due;
            self.moved.push(Moved {
                suspect: key,
                due: due.max(now),
            });
        }
        true
    }

    /// Suspicions started or brought forward since the last call.
    pub fn take_moved(&mut self) -> Vec<Moved> {
        std::mem::take(&mut self.moved)
    }

    /// Whether the suspicion of `suspect` is due at `now`, and whose it is. Each fires once.
    pub fn due(&mut self, suspect: Suspect, now: Duration) -> Option<Due> {
        let entry = self.entries.get_mut(&suspect)?;
        if entry.fired || entry.due > now {
            return None;
        }
        entry.fired = true;
        Some(match entry.own.take() {
            Some(own) => Due::Own(own.member, own.token),
            None => Due::Heard,
        })
    }

    /// How many suspicions are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes room for `key`: drops entries no timeout needs any more (started more than
    /// twice `max` ago), then, if still full, refuses.
    fn make_room(&mut self, key: &Suspect, now: Duration) -> bool {
        if self.entries.len() < self.max_entries || self.entries.contains_key(key) {
            return true;
        }
        let horizon = self.timing.max * 2;
        self.entries.retain(|_, e| e.started + horizon > now);
        self.entries.len() < self.max_entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> SuspicionTiming {
        SuspicionTiming {
            min: Duration::from_secs(1),
            max: Duration::from_secs(5),
            confirmations: 3,
        }
    }

    fn member(n: u8) -> MemberId {
        MemberId {
            key: [n; 32],
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 0,
        }
    }

    fn suspect(n: u8, incarnation: u16) -> Suspect {
        Suspect::of(&member(n), incarnation)
    }

    #[test]
    fn the_timeout_falls_from_max_to_min_with_confirmations() {
        let t = timing();
        assert_eq!(t.timeout(0), t.max);
        assert!(t.timeout(1) < t.max && t.timeout(1) > t.timeout(2));
        assert!(t.timeout(2) > t.min);
        assert_eq!(t.timeout(3), t.min);
        assert_eq!(t.timeout(30), t.min);
    }

    #[test]
    fn confirmations_bring_an_own_suspicion_forward_once_per_member() {
        let mut s = Suspicions::new([0; 32], timing(), 16);
        let t0 = Duration::from_secs(10);
        let (due, c) = s.start(member(9), 4, 7, t0);
        assert_eq!(due, t0 + timing().max);
        assert_eq!((c.suspect, c.from), (suspect(9, 4), [0; 32]));

        let from = |n| Confirmation {
            suspect: suspect(9, 4),
            from: [n; 32],
        };
        assert!(!s.confirm(from(0), t0), "its own confirmation is not news");
        assert!(s.confirm(from(1), t0));
        assert!(!s.confirm(from(1), t0), "a confirmer counts once");
        let moved = s.take_moved();
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].due, t0 + timing().timeout(1));
        assert!(s.due(suspect(9, 4), t0 + Duration::from_secs(1)).is_none());

        assert!(s.confirm(from(2), t0));
        assert!(s.confirm(from(3), t0));
        assert!(
            !s.confirm(from(4), t0),
            "enough confirmers: no more passed on"
        );
        assert_eq!(s.take_moved().last().unwrap().due, t0 + timing().min);
        let due = s.due(suspect(9, 4), t0 + timing().min).expect("due");
        assert_eq!(due, Due::Own(member(9), 7));
        assert!(
            s.due(suspect(9, 4), t0 + timing().max).is_none(),
            "fired once"
        );
    }

    #[test]
    fn confirmations_heard_first_count_when_this_member_suspects_too() {
        let mut s = Suspicions::new([0; 32], timing(), 16);
        for n in 1..=3 {
            s.confirm(
                Confirmation {
                    suspect: suspect(9, 1),
                    from: [n; 32],
                },
                Duration::ZERO,
            );
        }
        // Heard of at 0 with three confirmations: due at `min` from then, whoever suspects.
        let moved = s.take_moved();
        assert_eq!(moved.last().unwrap().due, timing().min);
        let (due, _) = s.start(member(9), 1, 0, Duration::from_millis(200));
        assert_eq!(due, timing().min);
        assert_eq!(
            s.due(suspect(9, 1), timing().min),
            Some(Due::Own(member(9), 0))
        );
        // Another incarnation, or another generation, is another suspicion.
        let renewed = MemberId {
            generation: 1,
            ..member(9)
        };
        let (due, _) = s.start(renewed, 1, 0, Duration::from_secs(2));
        assert_eq!(due, Duration::from_secs(2) + timing().max);
        let (due, _) = s.start(member(9), 2, 0, Duration::from_secs(2));
        assert_eq!(due, Duration::from_secs(2) + timing().max);
    }

    #[test]
    fn what_others_suspect_cannot_grow_the_table() {
        let mut s = Suspicions::new([0; 32], timing(), 4);
        for n in 0..100u8 {
            s.confirm(
                Confirmation {
                    suspect: suspect(n, 0),
                    from: [200; 32],
                },
                Duration::ZERO,
            );
        }
        assert_eq!(s.len(), 4);
        // Once they are older than any timeout, room is made again.
        assert!(s.confirm(
            Confirmation {
                suspect: suspect(101, 0),
                from: [200; 32],
            },
            timing().max * 2 + Duration::from_millis(1),
        ));
        assert_eq!(s.len(), 1);
    }
}
