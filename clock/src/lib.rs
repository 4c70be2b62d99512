//! One injectable wall clock for the workspace.
//!
//! Entry point: [`Clock`]. Code that stamps times (royalty bookings, ledger entries, plugin
//! ticks, benchmarks) holds a `Clock` set at construction instead of calling
//! [`SystemTime::now`] itself: [`Clock::system`] in production, and in tests a [`ManualClock`]
//! that the test sets and advances, shared by every clone of its [`Clock`].
//!
//! ```
//! use mhc_clock::{Clock, ManualClock};
//!
//! let manual = ManualClock::new(1_700_000_000_000);
//! let clock: Clock = manual.clock();
//! manual.advance_ms(1_500);
//! assert_eq!(clock.now_ms(), 1_700_000_001_500);
//!
//! // The system clock: milliseconds since the Unix epoch.
//! assert!(Clock::system().now_ms() > 1_700_000_000_000);
//! ```
//!
//! Only wall-clock time lives here. Intervals and deadlines use [`std::time::Instant`] (or
//! tokio's), which a wall clock stepping backwards cannot disturb.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time: the system clock or a [`ManualClock`]. Cheap to clone (at most
/// one reference count), `Send + Sync`; clones of a manual clock see the same time.
///
/// The default is the system clock.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
        }
    }

    /// Milliseconds since the Unix epoch: 0 if the system clock reads before 1970, `u64::MAX`
    /// past the year 584 million.
    pub fn now_ms(&self) -> u64 {
        match &self.source {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Source::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }

    /// The current time as a [`SystemTime`] (for a manual clock, to the millisecond).
    pub fn now(&self) -> SystemTime {
        match &self.source {
            Source::System => SystemTime::now(),
            Source::Manual(ms) => UNIX_EPOCH + Duration::from_millis(ms.load(Ordering::SeqCst)),
        }
    }

    /// Whether this is a [`ManualClock`]'s clock (for logs and debug output).
    pub fn is_manual(&self) -> bool {
        matches!(self.source, Source::Manual(_))
    }
}

/// A clock that only moves when told to, for tests and replays. [`ManualClock::clock`] hands out
/// [`Clock`]s that read it; setting or advancing the `ManualClock` moves all of them at once.
///
/// Only the holder of the `ManualClock` can move time: code given a [`Clock`] can only read it.
#[derive(Clone, Debug)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_ms` milliseconds since the Unix epoch.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// A [`Clock`] that reads this one.
    pub fn clock(&self) -> Clock {
        Clock {
            source: Source::Manual(self.ms.clone()),
        }
    }

    /// The time it reads, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }

    /// Sets the time, forwards or backwards (a system clock can step back too).
    pub fn set_ms(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `delta_ms`, saturating at `u64::MAX`; returns the new time.
    pub fn advance_ms(&self, delta_ms: u64) -> u64 {
        let mut current = self.ms.load(Ordering::SeqCst);
        loop {
            let next = current.saturating_add(delta_ms);
            match self
                .ms
                .compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Clock {
        manual.clock()
    }
}

impl From<&ManualClock> for Clock {
    fn from(manual: &ManualClock) -> Clock {
        manual.clock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}

    #[test]
    fn system_clock_reads_the_system_time() {
        assert_send_sync::<Clock>();
        assert_send_sync::<ManualClock>();
        let clock = Clock::default();
        assert!(!clock.is_manual());
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let ms = clock.now_ms();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(before.as_millis() as u64 <= ms && ms <= after.as_millis() as u64);
        let now = clock.now();
        assert!(now >= UNIX_EPOCH + before);
    }

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let manual = ManualClock::new(1_000);
        let a = manual.clock();
        let b = a.clone();
        let c: Clock = (&manual).into();
        assert!(a.is_manual());
        assert_eq!((a.now_ms(), b.now_ms(), c.now_ms()), (1_000, 1_000, 1_000));
        assert_eq!(manual.advance_ms(234), 1_234);
        assert_eq!(b.now_ms(), 1_234);
        assert_eq!(b.now(), UNIX_EPOCH + Duration::from_millis(1_234));
        manual.set_ms(5);
        assert_eq!((a.now_ms(), manual.now_ms()), (5, 5));
        manual.set_ms(u64::MAX - 1);
        assert_eq!(manual.advance_ms(10), u64::MAX);
        assert_eq!(c.now_ms(), u64::MAX);
    }

    #[test]
    fn manual_clock_moves_across_threads() {
        let manual = ManualClock::new(0);
        let clock = manual.clock();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let manual = manual.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        manual.advance_ms(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(clock.now_ms(), 4_000);
    }
}
