//! One member of the protocol, sans-I/O: foca, with Lifeguard's suspicion on top
//! ([`crate::suspicion`]). Whoever drives it (the node over a UDP socket, [`crate::sim`] over a
//! simulated network) hands it packets and due timers with the time they arrive, and takes
//! from it packets to send, timers to set and what it concluded about other members.
//!
//! foca sets one timer per failed probe, `ChangeSuspectToDown`, after a fixed time, and only the
//! member whose probe failed ever declares the suspect down; the rest wait to hear it. The
//! agent keeps that timer itself: it disseminates a [`Confirmation`] for every suspicion of its
//! own, counts the confirmations others disseminate, and hands foca the timer when the
//! suspicion is due ([`SuspicionTiming::timeout`]), which is earlier the more members
//! confirmed. A suspicion it only heard of is timed the same way (as memberlist does), and
//! when due the agent declares the member down itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification, Timer};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::suspicion::{Confirmation, Due, Suspect, SuspicionTiming, Suspicions};
use crate::{MemberId, Timing};

/// Most suspicions a member keeps (each a few hundred bytes).
const MAX_SUSPICIONS: usize = 4096;

/// First byte of a custom broadcast: what follows.
const CONFIRMATION_TAG: u8 = 1;

/// A timer the driver sets and hands back to [`Agent::handle_timer`] when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTimer {
    /// One of foca's own.
    Swim(Timer<MemberId>),
    /// A suspicion may be due.
    Suspicion(Suspect),
}

/// Why a packet or timer was refused; the agent goes on.
pub type Error = foca::Error;

/// What foca's broadcast handler and the agent share: the suspicions, and the time of the
/// call in progress (foca calls the handler in the middle of `handle_data`).
#[derive(Debug)]
struct Shared {
    suspicions: Suspicions,
    now: Duration,
}

#[derive(Debug, Clone)]
struct SharedHandle(Arc<Mutex<Shared>>);

impl SharedHandle {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Nothing panics while holding it; if something did, the state is still consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A custom broadcast that is not one: malformed or of an unknown kind.
#[derive(Debug)]
pub struct BadBroadcast;

impl std::fmt::Display for BadBroadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed membership broadcast")
    }
}

impl std::error::Error for BadBroadcast {}

/// foca's dissemination of our own items: confirmations.
#[derive(Debug)]
struct Broadcasts(SharedHandle);

/// A confirmation as foca's dissemination backlog knows it: a newer incarnation of one
/// member's confirmation about one subject replaces the older.
#[derive(Debug)]
struct ConfirmationKey(Confirmation);

impl Invalidates for ConfirmationKey {
    fn invalidates(&self, other: &Self) -> bool {
        let (a, b) = (&self.0.suspect, &other.0.suspect);
        self.0.from == other.0.from
            && a.key == b.key
            && (a.generation, a.incarnation) >= (b.generation, b.incarnation)
    }
}

fn encode_confirmation(c: &Confirmation) -> Vec<u8> {
    let mut out = vec![CONFIRMATION_TAG];
    out.extend(postcard::to_allocvec(c).expect("a confirmation serialises"));
    out
}

impl BroadcastHandler<MemberId> for Broadcasts {
    type Key = ConfirmationKey;
    type Error = BadBroadcast;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&MemberId>,
    ) -> Result<Option<ConfirmationKey>, BadBroadcast> {
        let Some((&CONFIRMATION_TAG, body)) = data.split_first() else {
            return Err(BadBroadcast);
        };
        let c: Confirmation = postcard::from_bytes(body).map_err(|_| BadBroadcast)?;
        if sender.is_none() {
            // This member's own, added by the agent: disseminate it.
            return Ok(Some(ConfirmationKey(c)));
        }
        let mut shared = self.0.lock();
        let now = shared.now;
        Ok(shared
            .suspicions
            .confirm(c, now)
            .then_some(ConfirmationKey(c)))
    }
}

/// The sender and the addressee a packet names in its header, read without applying it: the
/// node checks them against who signed the datagram and who received it.
pub fn addressed(packet: &[u8]) -> Option<(MemberId, MemberId)> {
    use foca::Codec;
    let header = foca::PostcardCodec.decode_header(packet).ok()?;
    Some((header.src, header.dst))
}

type Swim = Foca<MemberId, foca::PostcardCodec, SmallRng, Broadcasts>;

/// One member of the protocol.
#[allow(missing_debug_implementations)] // foca's state has no useful print
pub struct Agent {
    swim: Swim,
    shared: SharedHandle,
    runtime: AccumulatingRuntime<MemberId>,
    sends: VecDeque<(MemberId, Bytes)>,
    timers: VecDeque<(Duration, AgentTimer)>,
    notifications: VecDeque<OwnedNotification<MemberId>>,
}

impl Agent {
    /// A member known as `id`, with `timing`, its randomness seeded by `seed` (one seed, one
    /// behaviour: the simulator depends on it).
    pub fn new(id: MemberId, timing: &Timing, seed: u64) -> Self {
        let shared = SharedHandle(Arc::new(Mutex::new(Shared {
            suspicions: Suspicions::new(id.key, timing.suspicion, MAX_SUSPICIONS),
            now: Duration::ZERO,
        })));
        let swim = Foca::with_custom_broadcast(
            id,
            timing.swim.clone(),
            SmallRng::seed_from_u64(seed),
            foca::PostcardCodec,
            Broadcasts(shared.clone()),
        );
        Self {
            swim,
            shared,
            runtime: AccumulatingRuntime::new(),
            sends: VecDeque::new(),
            timers: VecDeque::new(),
            notifications: VecDeque::new(),
        }
    }

    /// The suspicion timing in force.
    pub fn suspicion_timing(&self) -> SuspicionTiming {
        self.shared.lock().suspicions.timing()
    }

    /// Changes the timing (for a cluster that grew or shrank); suspicions already running
    /// keep the timeouts they had.
    ///
    /// # Errors
    /// foca refuses the settings.
    pub fn retime(&mut self, timing: &Timing) -> Result<(), Error> {
        self.swim.set_config(timing.swim.clone())?;
        self.shared.lock().suspicions.set_timing(timing.suspicion);
        Ok(())
    }

    /// This member's identity (its generation rises when it rejoins).
    pub fn identity(&self) -> &MemberId {
        self.swim.identity()
    }

    /// Members held active (alive or suspect), this one excluded.
    pub fn members(&self) -> impl Iterator<Item = &MemberId> {
        self.swim.iter_members().map(|m| m.id())
    }

    /// Takes `members` as alive, as from a roster or a snapshot.
    pub fn add_members(
        &mut self,
        members: impl IntoIterator<Item = MemberId>,
        now: Duration,
    ) -> Result<(), Error> {
        self.begin(now);
        let members = members.into_iter().map(foca::Member::alive);
        let result = self.swim.apply_many(members, false, &mut self.runtime);
        self.settle(now);
        result
    }

    /// Asks `to` to let this member in.
    pub fn announce(&mut self, to: MemberId, now: Duration) -> Result<(), Error> {
        self.begin(now);
        let result = self.swim.announce(to, &mut self.runtime);
        self.settle(now);
        result
    }

    /// A packet arrived at `now`.
    ///
    /// # Errors
    /// A malformed packet or one not for this member; nothing was applied from it past the
    /// point it failed, and the agent goes on.
    pub fn handle_data(&mut self, data: &[u8], now: Duration) -> Result<(), Error> {
        self.begin(now);
        let result = self.swim.handle_data(data, &mut self.runtime);
        self.settle(now);
        result
    }

    /// A timer set earlier is due at `now`.
    pub fn handle_timer(&mut self, timer: AgentTimer, now: Duration) -> Result<(), Error> {
        self.begin(now);
        let result = match timer {
            AgentTimer::Swim(timer) => self.swim.handle_timer(timer, &mut self.runtime),
            AgentTimer::Suspicion(suspect) => {
                let due = self.shared.lock().suspicions.due(suspect, now);
                match due {
                    Some(Due::Own(member_id, token)) => self.swim.handle_timer(
                        Timer::ChangeSuspectToDown {
                            member_id,
                            incarnation: suspect.incarnation,
                            token,
                        },
                        &mut self.runtime,
                    ),
                    Some(Due::Heard) => self.declare_down(suspect),
                    None => Ok(()),
                }
            }
        };
        self.settle(now);
        result
    }

    /// The next packet to send: to whom, and its bytes.
    pub fn to_send(&mut self) -> Option<(MemberId, Bytes)> {
        self.sends.pop_front()
    }

    /// The next timer to set: after how long, and what to hand back then.
    pub fn to_schedule(&mut self) -> Option<(Duration, AgentTimer)> {
        self.timers.pop_front()
    }

    /// The next conclusion about a member.
    pub fn to_notify(&mut self) -> Option<OwnedNotification<MemberId>> {
        self.notifications.pop_front()
    }

    /// Declares down a member others suspected, if it is still at the suspected incarnation
    /// (a member that refuted has a higher one), as foca does when its own timer fires.
    fn declare_down(&mut self, suspect: Suspect) -> Result<(), Error> {
        let Some(member) = self
            .swim
            .iter_members()
            .find(|m| suspect.is(m.id(), m.incarnation()))
            .map(|m| m.id().clone())
        else {
            return Ok(());
        };
        let down = foca::Member::new(member, suspect.incarnation, foca::State::Down);
        self.swim
            .apply_many(std::iter::once(down), true, &mut self.runtime)
    }

    fn begin(&mut self, now: Duration) {
        self.shared.lock().now = now;
    }

    /// Takes what foca produced: its suspicion timers become the agent's (with a confirmation
    /// disseminated for each), suspicions that confirmations brought forward get a new timer,
    /// and everything else passes through.
    fn settle(&mut self, now: Duration) {
        while let Some((after, timer)) = self.runtime.to_schedule() {
            match timer {
                Timer::ChangeSuspectToDown {
                    member_id,
                    incarnation,
                    token,
                } => {
                    let (due, confirmation) =
                        self.shared
                            .lock()
                            .suspicions
                            .start(member_id, incarnation, token, now);
                    // A confirmation that does not fit foca's packet size is not sent; the
                    // suspicion then lasts longer, never shorter.
                    let _ = self.swim.add_broadcast(&encode_confirmation(&confirmation));
                    self.timers.push_back((
                        due.saturating_sub(now),
                        AgentTimer::Suspicion(confirmation.suspect),
                    ));
                }
                other => self.timers.push_back((after, AgentTimer::Swim(other))),
            }
        }
        for moved in self.shared.lock().suspicions.take_moved() {
            self.timers.push_back((
                moved.due.saturating_sub(now),
                AgentTimer::Suspicion(moved.suspect),
            ));
        }
        while let Some(packet) = self.runtime.to_send() {
            self.sends.push_back(packet);
        }
        while let Some(notification) = self.runtime.to_notify() {
            self.notifications.push_back(notification);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::member_id;

    #[test]
    fn garbage_is_refused_and_the_agent_goes_on() {
        let timing = crate::swim_config(2);
        let mut a = Agent::new(member_id(0), &timing, 1);
        let mut b = Agent::new(member_id(1), &timing, 2);
        assert!(a.handle_data(b"not a swim packet", Duration::ZERO).is_err());
        // A custom broadcast of an unknown kind is refused too.
        assert!(Broadcasts(a.shared.clone())
            .receive_item(&[9, 1, 2], Some(&member_id(1)))
            .is_err());

        b.announce(member_id(0), Duration::ZERO).unwrap();
        let (to, packet) = b.to_send().expect("announce sent");
        assert_eq!(to, member_id(0));
        assert_eq!(addressed(&packet), Some((member_id(1), member_id(0))));
        assert_eq!(addressed(b"garbage"), None);
        a.handle_data(&packet, Duration::from_millis(1)).unwrap();
        assert_eq!(a.members().cloned().collect::<Vec<_>>(), vec![member_id(1)]);
    }
}
