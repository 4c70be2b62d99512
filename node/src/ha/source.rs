//! What a primary serves its standbys over the QUIC data plane: the entries of its replication
//! log after a position (a long poll, which also carries the standby's acknowledgement), and
//! pages of its replicated trees for a standby that starts over.
//!
//! Only the primary of the asked epoch answers; everyone else says `NotFound`, and the standby
//! asks etcd who the primary is now.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use libp2p::PeerId;
use mhc_transport::{Response, ResponseHeader};
use parking_lot::RwLock;

use super::follow::Lag;
use super::log::{snapshot_page, Entry, ReplicationLog};
use crate::core::writes::Standing;
use crate::core::Core;

/// Bytes of entries in one answer (more than one entry only while under it).
const ENTRIES_BYTES: usize = 4 << 20;
/// Bytes of pairs in one snapshot page.
const PAGE_BYTES: usize = 4 << 20;

/// The current term's log, as the election hands it over and the QUIC plane reads it; and
/// whether this origin, as a standby, holds a consistent copy of its primary.
#[derive(Debug)]
pub struct Source {
    term: RwLock<Option<(u64, Arc<ReplicationLog>)>>,
    lag: Arc<Lag>,
}

impl Source {
    /// The source of an origin whose standby side measures itself in `lag`.
    pub fn new(lag: Arc<Lag>) -> Self {
        Source {
            term: RwLock::new(None),
            lag,
        }
    }

    /// Why this origin must not tell other nodes which versions exist (`GetManifest`), if
    /// so: it is neither the primary nor a standby with a consistent copy of the current
    /// primary's catalog. A fenced former primary, or one back from a crash that has not
    /// loaded the new primary's snapshot, may hold versions no standby acknowledged, which
    /// the new primary will publish differently under the same numbers.
    pub fn withholds_versions(&self, core: &Core) -> Option<String> {
        match core.writes.standing() {
            Standing::Primary { .. } | Standing::Alone => None,
            Standing::Standby { epoch, .. } if self.lag.follows(epoch) => None,
            standing => Some(format!(
                "this origin is {} without a copy of the current primary's catalog: ask the primary",
                standing.name()
            )),
        }
    }

    /// While primary of `epoch`: its log; `None` when the term ends.
    pub fn set_term(&self, term: Option<(u64, Arc<ReplicationLog>)>) {
        *self.term.write() = term;
    }

    /// The current term's log, if this origin is primary.
    pub fn current(&self) -> Option<Arc<ReplicationLog>> {
        self.term.read().as_ref().map(|(_, log)| Arc::clone(log))
    }

    /// The log of `epoch`, while this origin is its primary.
    fn log(&self, core: &Core, epoch: u64) -> Result<Arc<ReplicationLog>, Response> {
        let term = self.term.read().clone();
        match term {
            Some((e, log)) if e == epoch && core.writes.may_write() == Ok(epoch) => Ok(log),
            _ => Err(Response::without_body(ResponseHeader::not_found(format!(
                "not the primary of epoch {epoch} (this origin is {})",
                core.writes.standing().name()
            )))),
        }
    }

    /// Answers [`mhc_transport::Request::Replicate`] from standby `peer`.
    pub async fn entries(
        &self,
        core: &Core,
        peer: PeerId,
        epoch: u64,
        after: u64,
        wait: Duration,
    ) -> Response {
        let log = match self.log(core, epoch) {
            Ok(log) => log,
            Err(refused) => return refused,
        };
        let mut appended = log.subscribe();
        if after > *appended.borrow_and_update() {
            return Response::without_body(ResponseHeader::error(format!(
                "position {after} is past the end of the log of epoch {epoch}"
            )));
        }
        log.ack(&peer.to_string(), after);
        let mut entries = match log.since(after) {
            Ok(e) => e,
            Err(trimmed) => {
                return Response::without_body(ResponseHeader::not_found(trimmed.to_string()))
            }
        };
        if entries.is_empty() {
            let _ = tokio::time::timeout(wait, appended.changed()).await;
            entries = match log.since(after) {
                Ok(e) => e,
                Err(trimmed) => {
                    return Response::without_body(ResponseHeader::not_found(trimmed.to_string()))
                }
            };
        }
        let mut bytes = 0;
        let batch: Vec<&Entry> = entries
            .iter()
            .take_while(|e| {
                let first = bytes == 0;
                bytes += e.weight();
                first || bytes <= ENTRIES_BYTES
            })
            .map(|e| &**e)
            .collect();
        let body = match postcard::to_allocvec(&batch) {
            Ok(b) => Bytes::from(b),
            Err(err) => return Response::without_body(ResponseHeader::error(err.to_string())),
        };
        Response::new(
            ResponseHeader::Entries {
                epoch,
                last: log.last_seq(),
                body_len: body.len() as u64,
            },
            body,
        )
    }

    /// Answers [`mhc_transport::Request::Snapshot`].
    pub async fn snapshot(
        &self,
        core: &Arc<Core>,
        epoch: u64,
        tree: Vec<u8>,
        after_key: Vec<u8>,
    ) -> Response {
        let log = match self.log(core, epoch) {
            Ok(log) => log,
            Err(refused) => return refused,
        };
        // Read before the page: every write after it is in the log past `at`.
        let at = log.last_seq();
        let db = core.db.clone();
        let page =
            tokio::task::spawn_blocking(move || snapshot_page(&db, &tree, &after_key, PAGE_BYTES))
                .await;
        let (pairs, done) = match page {
            Ok(Ok(p)) => p,
            Ok(Err(err)) => return Response::without_body(ResponseHeader::error(err.to_string())),
            Err(err) => return Response::without_body(ResponseHeader::error(err.to_string())),
        };
        let body = match postcard::to_allocvec(&pairs) {
            Ok(b) => Bytes::from(b),
            Err(err) => return Response::without_body(ResponseHeader::error(err.to_string())),
        };
        Response::new(
            ResponseHeader::SnapshotPage {
                epoch,
                at,
                done,
                body_len: body.len() as u64,
            },
            body,
        )
    }
}
