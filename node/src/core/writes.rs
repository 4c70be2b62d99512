//! The gate every durable write of an origin's own state passes: catalog publications, play
//! reports and the plugins' books. Writers enter it shared; a backup pauses it to export the
//! database at one point in time (sled has no snapshots, and its trees are written by several
//! writers whose related writes span trees: an inbox event, a royalty posting, a ledger entry).
//!
//! Writes to state that is not the origin's to lose (the membership snapshot, the outbox of an
//! edge, the incarnation counter) do not pass it.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The write gate of one node.
#[derive(Debug, Default)]
pub struct Writes {
    gate: RwLock<()>,
}

/// Held by a writer for the length of one write (and its flush).
pub type Writing<'a> = RwLockReadGuard<'a, ()>;

/// Held while nothing may write: the backup's export.
pub type Paused<'a> = RwLockWriteGuard<'a, ()>;

impl Writes {
    /// Enters the gate for one write; waits while a backup is exporting. Blocking: call it on a
    /// blocking thread, and hold it only around synchronous store calls.
    pub fn enter(&self) -> Writing<'_> {
        self.gate.read()
    }

    /// Waits for the writes in progress to finish and keeps new ones out until the guard is
    /// dropped. A writer waiting behind it is served next (parking_lot's lock lets no new
    /// reader pass a waiting writer, so a stream of reports cannot starve a backup).
    pub fn pause(&self) -> Paused<'_> {
        self.gate.write()
    }
}
