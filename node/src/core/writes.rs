//! The gate every durable write of an origin's own state passes: catalog publications, play
//! reports and the plugins' books. Writers enter it shared; a backup pauses it to export the
//! database at one point in time (sled has no snapshots, and its trees are written by several
//! writers whose related writes span trees: an inbox event, a royalty posting, a ledger entry).
//!
//! It is also the **fence** of an origin that elects its primary (`[ha]`): only a primary whose
//! lease is still certainly held may enter. The election ([`crate::ha`]) moves the
//! [`Standing`] and, while primary, the instant until which the lease is certainly held; the
//! gate compares that instant with the clock at every entry, so a primary whose election task
//! is stalled (or whose etcd is unreachable) stops writing on time without any task having to
//! run. The epoch (the revision at which the primary's election key was created) is handed to
//! each writer.
//!
//! Writes to state that is not the origin's to lose (the membership snapshot, the outbox of an
//! edge, the incarnation counter) do not pass it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What records write units as they end: a primary's replication log
/// ([`crate::ha::log::ReplicationLog`]; the gate knows it only by this trait, so the core does
/// not depend on the election).
pub trait UnitLog: fmt::Debug + Send + Sync {
    /// Before a unit (under the gate).
    fn begin(&self);
    /// After a unit in `epoch`, still under the gate.
    fn seal(&self, epoch: u64);
    /// Resolves once the standbys that follow the log hold every unit sealed so far, or after
    /// `within` (then the standbys that did not make it are given up on): before a write is
    /// acknowledged.
    fn replicated(self: Arc<Self>, within: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
use serde::Serialize;

/// An instant of `CLOCK_BOOTTIME`: unlike `std::time::Instant` (`CLOCK_MONOTONIC`) it goes on
/// while the host is suspended or the VM frozen, as etcd's clock does on another host — a
/// primary that wakes from a freeze must not believe in a lease that expired meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootTime(Duration);

impl BootTime {
    /// Now.
    pub fn now() -> Self {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        BootTime(Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        ))
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: BootTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `d` later, saturating (a deadline that far out is never reached).
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        BootTime(self.0.saturating_add(d))
    }
}

/// An origin's standing in its election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Standing {
    /// No election: the only origin of its cluster, always writable.
    Alone,
    /// Elected but not yet settled: the first answer from etcd has not come.
    Electing,
    /// Holds the lease of `epoch`.
    Primary {
        /// The election's epoch.
        epoch: u64,
    },
    /// Another origin holds the lease.
    Standby {
        /// The primary's epoch (0 while no origin holds the lease).
        epoch: u64,
        /// The primary's peer id, if known.
        primary: Option<String>,
    },
    /// Was primary of `epoch` and can no longer be sure that it still is.
    Fenced {
        /// The epoch it held.
        epoch: u64,
    },
}

impl Standing {
    /// The name `/v1/cluster` shows.
    pub fn name(&self) -> &'static str {
        match self {
            Standing::Alone => "alone",
            Standing::Electing => "electing",
            Standing::Primary { .. } => "primary",
            Standing::Standby { .. } => "standby",
            Standing::Fenced { .. } => "fenced",
        }
    }

    /// The epoch this standing refers to (0: none).
    pub fn epoch(&self) -> u64 {
        match self {
            Standing::Alone | Standing::Electing => 0,
            Standing::Primary { epoch }
            | Standing::Standby { epoch, .. }
            | Standing::Fenced { epoch } => *epoch,
        }
    }
}

/// Why a write was refused: this origin is not a primary that certainly holds its lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NotPrimary(pub Standing);

impl fmt::Display for NotPrimary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Standing::Standby {
                epoch,
                primary: Some(p),
            } => write!(
                f,
                "this origin is a standby; the primary is {p} (epoch {epoch}): write there"
            ),
            Standing::Standby { primary: None, .. } => write!(
                f,
                "this origin is a standby and no primary is elected yet; try again shortly"
            ),
            Standing::Fenced { epoch } | Standing::Primary { epoch } => write!(
                f,
                "this origin was primary (epoch {epoch}) but cannot renew its lease, so it \
                 accepts no writes; a standby takes over when the lease expires"
            ),
            Standing::Electing => write!(
                f,
                "this origin has not yet learned from etcd whether it is primary; try again shortly"
            ),
            Standing::Alone => write!(f, "writes are open"),
        }
    }
}

/// How long an acknowledgement waits for the standbys to hold a small write (a play report, a
/// plugin's admin write): under the 5 s a sender waits for an answer, so a slow standby delays
/// a write, never loses it.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// The write gate of one node.
#[derive(Debug)]
pub struct Writes {
    gate: RwLock<()>,
    authority: Mutex<Authority>,
    /// While a primary keeps a replication log: writers enter one at a time and each one's
    /// writes become one entry.
    log: RwLock<Option<Arc<dyn UnitLog>>>,
}

#[derive(Debug)]
struct Authority {
    standing: Standing,
    /// While primary: the lease is certainly held before this instant.
    held_until: Option<BootTime>,
}

/// Held by a writer for the length of one write (and its flush).
#[derive(Debug)]
pub struct Writing<'a> {
    _entered: Entered<'a>,
    epoch: u64,
    /// The log the write unit is sealed into when the guard drops.
    log: Option<Arc<dyn UnitLog>>,
}

#[derive(Debug)]
enum Entered<'a> {
    /// Among other writers.
    Shared { _guard: RwLockReadGuard<'a, ()> },
    /// Alone: its writes are one replication entry.
    Alone { _guard: RwLockWriteGuard<'a, ()> },
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // Sealed while the gate is still held, so no other unit's writes mix in.
        if let Some(log) = &self.log {
            log.seal(self.epoch);
        }
    }
}

impl Writing<'_> {
    /// The epoch the write is made in (0: a lone origin).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the write may still be acknowledged: the lease of its epoch is still certainly
    /// held now that it is done (a write that outlasted the margin is not acknowledged; its
    /// sender tries again, at the new primary if there is one).
    pub fn still_held(&self, writes: &Writes) -> bool {
        writes.may_write() == Ok(self.epoch)
    }
}

/// Held while nothing may write: the backup's export.
pub type Paused<'a> = RwLockWriteGuard<'a, ()>;

impl Writes {
    /// The gate of a lone origin (`elects == false`: always writable) or of one that elects its
    /// primary (closed until the election says otherwise).
    pub fn new(elects: bool) -> Self {
        let standing = if elects {
            Standing::Electing
        } else {
            Standing::Alone
        };
        Writes {
            gate: RwLock::new(()),
            authority: Mutex::new(Authority {
                standing,
                held_until: None,
            }),
            log: RwLock::new(None),
        }
    }

    /// Attaches the replication log of a primary's term (`None`: detaches it).
    pub fn attach_log(&self, log: Option<Arc<dyn UnitLog>>) {
        *self.log.write() = log;
    }

    /// Resolves once the standbys attached to this primary hold every write made so far (at
    /// once without a replication log): what an acknowledgement waits for, so an acknowledged
    /// write survives the loss of the primary's disk. Bounded by `within`: a standby that does
    /// not answer in time is detached rather than waited for.
    pub async fn replicated(&self, within: Duration) {
        let log = self.log.read().clone();
        if let Some(log) = log {
            log.replicated(within).await;
        }
    }

    /// Enters the gate for one write; waits while a backup is exporting. Blocking: call it on a
    /// blocking thread, and hold it only around synchronous store calls.
    ///
    /// # Errors
    /// This origin is not a primary that certainly holds its lease.
    pub fn enter(&self) -> Result<Writing<'_>, NotPrimary> {
        let log = self.log.read().clone();
        let entered = match &log {
            None => Entered::Shared {
                _guard: self.gate.read(),
            },
            Some(_) => Entered::Alone {
                _guard: self.gate.write(),
            },
        };
        let epoch = self.may_write()?;
        if let Some(log) = &log {
            log.begin();
        }
        Ok(Writing {
            _entered: entered,
            epoch,
            log,
        })
    }

    /// Whether a write could enter now, and in which epoch (0: a lone origin); for refusing
    /// early, before work that only a primary should do.
    ///
    /// # Errors
    /// As [`Writes::enter`].
    pub fn may_write(&self) -> Result<u64, NotPrimary> {
        let a = self.authority.lock();
        match &a.standing {
            Standing::Alone => Ok(0),
            Standing::Primary { epoch } if a.held_until.is_some_and(|t| BootTime::now() < t) => {
                Ok(*epoch)
            }
            Standing::Primary { epoch } => Err(NotPrimary(Standing::Fenced { epoch: *epoch })),
            other => Err(NotPrimary(other.clone())),
        }
    }

    /// The standing as operators see it (a primary past its certain lease shows as fenced).
    pub fn standing(&self) -> Standing {
        match self.may_write() {
            Ok(_) => self.authority.lock().standing.clone(),
            Err(NotPrimary(s)) => s,
        }
    }

    /// The election's new standing. Becoming primary takes the instant until which the lease
    /// is certainly held; any other standing closes the gate at once.
    pub fn set_standing(&self, standing: Standing, held_until: Option<BootTime>) {
        let mut a = self.authority.lock();
        a.held_until = match standing {
            Standing::Primary { .. } => held_until,
            _ => None,
        };
        a.standing = standing;
    }

    /// A renewal of the primary's lease of `epoch`: writes may go on until `held_until`.
    /// Ignored unless this origin is primary of that epoch.
    pub fn renewed(&self, epoch: u64, held_until: BootTime) {
        let mut a = self.authority.lock();
        if a.standing == (Standing::Primary { epoch }) {
            a.held_until = Some(a.held_until.map_or(held_until, |t| t.max(held_until)));
        }
    }

    /// Waits for the writes in progress to finish and keeps new ones out until the guard is
    /// dropped. A writer waiting behind it is served next (parking_lot's lock lets no new
    /// reader pass a waiting writer, so a stream of reports cannot starve a backup).
    pub fn pause(&self) -> Paused<'_> {
        self.gate.write()
    }

    /// Held by a standby while it applies one unit its primary wrote: not fenced (the
    /// follower checks the primary's epoch itself), but inside a backup's pause, so a
    /// standby's backup holds whole units. Blocking, like [`Writes::enter`].
    pub fn replicating(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }
}

impl Default for Writes {
    fn default() -> Self {
        Writes::new(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_origin_always_writes_in_epoch_zero() {
        let w = Writes::new(false);
        assert_eq!(w.enter().unwrap().epoch(), 0);
        assert_eq!(w.standing(), Standing::Alone);
    }

    #[test]
    fn an_electing_origin_writes_only_while_its_lease_is_certainly_held() {
        let w = Writes::new(true);
        assert_eq!(w.enter().unwrap_err().0, Standing::Electing);
        let now = BootTime::now();
        w.set_standing(
            Standing::Primary { epoch: 7 },
            Some(now.after(Duration::from_secs(60))),
        );
        assert_eq!(w.enter().unwrap().epoch(), 7);
        // A lease held until a past instant: fenced without anyone saying so.
        w.set_standing(Standing::Primary { epoch: 8 }, Some(now));
        let refused = w.enter().unwrap_err();
        assert_eq!(refused.0, Standing::Fenced { epoch: 8 });
        assert!(refused.to_string().contains("epoch 8"), "{refused}");
        assert_eq!(w.standing(), Standing::Fenced { epoch: 8 });
        // A renewal of another epoch does not reopen it; one of its own does.
        w.renewed(7, now.after(Duration::from_secs(60)));
        assert!(w.enter().is_err());
        w.renewed(8, now.after(Duration::from_secs(60)));
        assert_eq!(w.enter().unwrap().epoch(), 8);
        w.set_standing(
            Standing::Standby {
                epoch: 9,
                primary: Some("12D3KooWother".into()),
            },
            Some(now.after(Duration::from_secs(60))),
        );
        let refused = w.enter().unwrap_err();
        assert!(refused.to_string().contains("12D3KooWother"), "{refused}");
    }
}
