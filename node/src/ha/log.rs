//! The primary's replication log: every write unit (what one writer did inside the write gate)
//! to the trees that are the origin's to lose, as one ordered [`Entry`] a standby applies
//! whole.
//!
//! What the writes are is learnt from sled itself: a [`Capture`] subscribes to every replicated
//! tree (`Tree::watch_prefix`), so the plugins (royalty, ledger) need not know about
//! replication. sled hands a subscriber each event before the write returns, and blocks
//! writers once 1024 events wait, so one task pulls the events as they come
//! ([`Capture::spawn`]) and a unit's end asks it for everything pulled so far. While the log is
//! attached the write gate lets one writer in at a time, so each drain is exactly one unit.
//!
//! The log keeps the newest entries up to a byte bound; a standby that falls further behind
//! starts over from a snapshot.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::catalog::MANIFESTS_TREE;
use crate::core::writes::UnitLog;

/// Trees (by name prefix) that the plugins own; with the catalog's, what a standby replicates.
const REPLICATED_PREFIXES: [&[u8]; 3] = [b"plugins/", b"ledger/", b"royalty/"];

/// Whether tree `name` is the origin's to replicate: the catalog and the plugins' books. The
/// rest (membership, the outbox, emergency state, revocations, pins) each node keeps itself.
pub fn is_replicated(name: &[u8]) -> bool {
    name == MANIFESTS_TREE.as_bytes() || REPLICATED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One write to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The tree's name.
    pub tree: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None`: removed.
    pub value: Option<Vec<u8>>,
}

/// One write unit, in the primary's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log (from 1, without gaps within one primary's term).
    pub seq: u64,
    /// The epoch it was written in.
    pub epoch: u64,
    /// The writes, in the order each key saw them.
    pub ops: Vec<Op>,
}

impl Entry {
    /// Bytes it holds (for the log's bound).
    pub fn weight(&self) -> usize {
        self.ops
            .iter()
            .map(|o| o.tree.len() + o.key.len() + o.value.as_ref().map_or(0, Vec::len) + 16)
            .sum::<usize>()
            + 24
    }

    /// Applies the writes to `db`, one batch per tree. Idempotent: every op sets or removes a
    /// whole value, so applying an entry again (after a crash halfway) ends in the same state.
    ///
    /// # Errors
    /// sled fails.
    pub fn apply(&self, db: &sled::Db) -> sled::Result<()> {
        let mut batches: Vec<(&[u8], sled::Batch)> = Vec::new();
        for op in &self.ops {
            let at = match batches.iter().position(|(t, _)| *t == op.tree.as_slice()) {
                Some(at) => at,
                None => {
                    batches.push((&op.tree, sled::Batch::default()));
                    batches.len() - 1
                }
            };
            match &op.value {
                Some(v) => batches[at].1.insert(op.key.as_slice(), v.as_slice()),
                None => batches[at].1.remove(op.key.as_slice()),
            }
        }
        for (tree, batch) in batches {
            db.open_tree(tree)?.apply_batch(batch)?;
        }
        Ok(())
    }
}

/// What the standby asked for is no longer in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("entries after {asked} are gone (the log starts at {first}); start from a snapshot")]
pub struct Trimmed {
    /// The position asked for.
    pub asked: u64,
    /// The oldest entry still held.
    pub first: u64,
}

/// The events of the replicated trees, pulled as they come by one task.
#[derive(Debug, Clone)]
pub struct Capture {
    requests: mpsc::UnboundedSender<Request>,
}

enum Request {
    /// Subscribe to the replicated trees that appeared since.
    Refresh(oneshot::Sender<()>),
    /// Everything pulled so far.
    Drain(oneshot::Sender<Vec<Op>>),
}

impl Capture {
    /// Starts the task that subscribes to `db`'s replicated trees and pulls their events.
    /// Must be called inside a tokio runtime; the task ends when every handle is dropped.
    pub fn spawn(db: sled::Db) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            let mut watched: Vec<Vec<u8>> = Vec::new();
            let mut pending: Vec<Op> = Vec::new();
            let mut events = FuturesUnordered::new();
            // What the trees hold now is what a standby starts from (a snapshot): not logged.
            subscribe_new(&db, &mut watched, &mut events);
            loop {
                tokio::select! {
                    request = rx.recv() => match request {
                        None => return,
                        Some(Request::Refresh(done)) => {
                            let new = subscribe_new(&db, &mut watched, &mut events);
                            dump(new, &mut pending);
                            let _ = done.send(());
                        }
                        Some(Request::Drain(reply)) => {
                            // Every event of a finished write is ready: take them all.
                            while let Some(Some(ready)) = events.next().now_or_never() {
                                pull(ready, &mut pending, &mut events);
                            }
                            // Trees created during the unit: their events before the
                            // subscription were missed, so their whole content goes in.
                            let new = subscribe_new(&db, &mut watched, &mut events);
                            dump(new, &mut pending);
                            let _ = reply.send(std::mem::take(&mut pending));
                        }
                    },
                    Some(ready) = events.next(), if !events.is_empty() => {
                        pull(ready, &mut pending, &mut events);
                    }
                }
            }
        });
        Capture { requests: tx }
    }

    /// Subscribes to replicated trees created since the last call (blocking; call from a
    /// blocking thread, before a write unit).
    pub fn refresh(&self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Refresh(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Every write pulled since the last drain (blocking; call from a blocking thread, after a
    /// write unit).
    pub fn drain(&self) -> Vec<Op> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Drain(tx)).is_err() {
            return Vec::new();
        }
        rx.blocking_recv().unwrap_or_default()
    }
}

type Pulled = (Vec<u8>, sled::Subscriber, Option<sled::Event>);
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Pulled> + Send>>;

fn next_event(tree: Vec<u8>, mut subscriber: sled::Subscriber) -> Pending {
    Box::pin(async move {
        let event = (&mut subscriber).await;
        (tree, subscriber, event)
    })
}

/// Subscribes to the replicated trees not watched yet; returns them.
fn subscribe_new(
    db: &sled::Db,
    watched: &mut Vec<Vec<u8>>,
    events: &mut FuturesUnordered<Pending>,
) -> Vec<(Vec<u8>, sled::Tree)> {
    let mut new = Vec::new();
    for name in db.tree_names() {
        let name = name.to_vec();
        if !is_replicated(&name) || watched.contains(&name) {
            continue;
        }
        match db.open_tree(&name) {
            Ok(tree) => {
                events.push(next_event(name.clone(), tree.watch_prefix(vec![])));
                watched.push(name.clone());
                new.push((name, tree));
            }
            Err(err) => tracing::error!(error = %err, "subscribing to a replicated tree"),
        }
    }
    new
}

/// The whole content of trees the log has just found, as writes: what was written to them
/// before they were watched (a plugin that creates its trees as it opens, inside a unit).
/// Writing a value again is harmless: every op sets a whole value.
fn dump(trees: Vec<(Vec<u8>, sled::Tree)>, pending: &mut Vec<Op>) {
    for (name, tree) in trees {
        for pair in tree.iter() {
            match pair {
                Ok((key, value)) => pending.push(Op {
                    tree: name.clone(),
                    key: key.to_vec(),
                    value: Some(value.to_vec()),
                }),
                Err(err) => tracing::error!(error = %err, "reading a new replicated tree"),
            }
        }
    }
}

fn pull(ready: Pulled, pending: &mut Vec<Op>, events: &mut FuturesUnordered<Pending>) {
    let (tree, subscriber, event) = ready;
    let Some(event) = event else {
        // The database is closing.
        return;
    };
    let op = match event {
        sled::Event::Insert { key, value } => Op {
            tree: tree.clone(),
            key: key.to_vec(),
            value: Some(value.to_vec()),
        },
        sled::Event::Remove { key } => Op {
            tree: tree.clone(),
            key: key.to_vec(),
            value: None,
        },
    };
    pending.push(op);
    events.push(next_event(tree, subscriber));
}

/// What a standby accepts in one answer of its primary: a page of a snapshot or a batch of
/// entries, and one entry that is larger on its own.
pub const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// Most standbys one primary tracks (each is an admitted origin of the cluster).
const MAX_FOLLOWERS: usize = 16;

/// A standby as its primary sees it.
#[derive(Debug, Clone)]
struct Follower {
    /// The last position it holds durably.
    acked: u64,
    /// Whether writes wait for it: it caught up with the log once and has kept up since.
    synced: bool,
    /// When it last asked.
    seen: Instant,
}

/// The primary's log: entries in order, the newest up to a byte bound, and the standbys that
/// follow it.
#[derive(Debug)]
pub struct ReplicationLog {
    capture: Capture,
    inner: Mutex<LogInner>,
    max_bytes: usize,
    appended: watch::Sender<u64>,
    followers: Mutex<HashMap<String, Follower>>,
    /// Bumped at every acknowledgement, to wake the writes that wait for one.
    acked: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct LogInner {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    last_seq: u64,
}

impl ReplicationLog {
    /// A log of `db`'s replicated trees holding at most `max_bytes` of entries.
    pub fn new(db: sled::Db, max_bytes: usize) -> Self {
        ReplicationLog {
            capture: Capture::spawn(db),
            inner: Mutex::new(LogInner::default()),
            max_bytes,
            appended: watch::channel(0).0,
            followers: Mutex::new(HashMap::new()),
            acked: watch::channel(0).0,
        }
    }

    /// The position of the newest entry.
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().last_seq
    }

    /// Standby `follower` holds everything up to `after` durably (it asked for what follows).
    /// It is waited for from the moment it has caught up with the log.
    pub fn ack(&self, follower: &str, after: u64) {
        let last = self.last_seq();
        let mut followers = self.followers.lock();
        if !followers.contains_key(follower) && followers.len() >= MAX_FOLLOWERS {
            // Forget the one heard from least recently.
            if let Some(oldest) = followers
                .iter()
                .min_by_key(|(_, f)| f.seen)
                .map(|(k, _)| k.clone())
            {
                followers.remove(&oldest);
            }
        }
        let f = followers
            .entry(follower.to_owned())
            .or_insert_with(|| Follower {
                acked: 0,
                synced: false,
                seen: Instant::now(),
            });
        f.acked = f.acked.max(after);
        f.seen = Instant::now();
        if !f.synced && f.acked >= last {
            f.synced = true;
            tracing::info!(
                standby = follower,
                seq = f.acked,
                "standby caught up: writes wait for it"
            );
        }
        drop(followers);
        self.acked.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Re-reads the standbys at every acknowledgement until `ready` finds what it waits for,
    /// at most `within`.
    async fn await_followers<T>(
        &self,
        within: Duration,
        ready: impl Fn(&HashMap<String, Follower>) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        let mut acked = self.acked.subscribe();
        loop {
            if let Some(found) = ready(&self.followers.lock()) {
                return Some(found);
            }
            tokio::time::timeout_at(deadline, acked.changed())
                .await
                .ok()?
                .ok()?;
        }
    }

    /// The standbys writes wait for now.
    pub fn synced_followers(&self) -> usize {
        self.followers.lock().values().filter(|f| f.synced).count()
    }

    /// Waits up to `within` for a standby that holds everything logged so far; its name.
    pub async fn caught_up(&self, within: Duration) -> Option<String> {
        let target = self.last_seq();
        self.await_followers(within, |followers| {
            followers
                .iter()
                .find(|(_, f)| f.acked >= target)
                .map(|(name, _)| name.clone())
        })
        .await
    }

    /// Waits until every synced standby holds everything logged so far, at most `within`; a
    /// standby that did not make it is detached (writes stop waiting for it until it catches
    /// up again).
    pub async fn replicated(&self, within: Duration) {
        let target = self.last_seq();
        let done = self
            .await_followers(within, |followers| {
                (!followers.values().any(|f| f.synced && f.acked < target)).then_some(())
            })
            .await;
        if done.is_some() {
            return;
        }
        for (name, f) in self.followers.lock().iter_mut() {
            if f.synced && f.acked < target {
                f.synced = false;
                tracing::warn!(standby = %name, acked = f.acked, seq = target, ?within, "standby did not acknowledge in time: detached, writes no longer wait for it");
            }
        }
    }

    /// Before a write unit: watch trees created since the last one.
    pub fn begin(&self) {
        self.capture.refresh();
    }

    /// After a write unit in `epoch`: its writes become the next entry (none: no entry).
    /// Returns the entry's position.
    pub fn seal_unit(&self, epoch: u64) -> Option<u64> {
        let ops = self.capture.drain();
        if ops.is_empty() {
            return None;
        }
        let mut inner = self.inner.lock();
        inner.last_seq += 1;
        let entry = Arc::new(Entry {
            seq: inner.last_seq,
            epoch,
            ops,
        });
        inner.bytes += entry.weight();
        inner.entries.push_back(entry);
        while inner.bytes > self.max_bytes && inner.entries.len() > 1 {
            if let Some(old) = inner.entries.pop_front() {
                inner.bytes -= old.weight();
            }
        }
        let seq = inner.last_seq;
        drop(inner);
        self.appended.send_replace(seq);
        Some(seq)
    }

    /// The entries after position `after`, in order.
    ///
    /// # Errors
    /// Some of them were dropped to keep the bound.
    pub fn since(&self, after: u64) -> Result<Vec<Arc<Entry>>, Trimmed> {
        let inner = self.inner.lock();
        let first = inner.entries.front().map_or(inner.last_seq + 1, |e| e.seq);
        if after + 1 < first {
            return Err(Trimmed {
                asked: after,
                first,
            });
        }
        Ok(inner
            .entries
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect())
    }

    /// The position of the newest entry, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }
}

impl UnitLog for ReplicationLog {
    fn begin(&self) {
        ReplicationLog::begin(self);
    }

    fn seal(&self, epoch: u64) {
        self.seal_unit(epoch);
    }

    fn replicated(self: Arc<Self>, within: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { ReplicationLog::replicated(&self, within).await })
    }
}

/// One key of a replicated tree in a snapshot page: (tree, key, value).
pub type SnapshotPair = (Vec<u8>, Vec<u8>, Vec<u8>);

/// The replicated trees of `db` in (tree, key) order from just after `(tree, after_key)`
/// (empty `tree`: from the start), up to about `max_bytes`; and whether that was the end.
///
/// # Errors
/// sled fails.
pub fn snapshot_page(
    db: &sled::Db,
    tree: &[u8],
    after_key: &[u8],
    max_bytes: usize,
) -> sled::Result<(Vec<SnapshotPair>, bool)> {
    let mut names: Vec<Vec<u8>> = db
        .tree_names()
        .into_iter()
        .map(|n| n.to_vec())
        .filter(|n| is_replicated(n) && n.as_slice() >= tree)
        .collect();
    names.sort();
    let mut page = Vec::new();
    let mut bytes = 0;
    for name in names {
        let t = db.open_tree(&name)?;
        let pairs = if !tree.is_empty() && name == tree {
            t.range::<&[u8], _>((
                std::ops::Bound::Excluded(after_key),
                std::ops::Bound::Unbounded,
            ))
        } else {
            t.iter()
        };
        for pair in pairs {
            let (k, v) = pair?;
            bytes += name.len() + k.len() + v.len() + 8;
            page.push((name.clone(), k.to_vec(), v.to_vec()));
            if bytes >= max_bytes {
                return Ok((page, false));
            }
        }
    }
    Ok((page, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree's name and its pairs.
    type TreeDump = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    fn trees(db: &sled::Db) -> Vec<TreeDump> {
        let mut out: Vec<_> = db
            .tree_names()
            .into_iter()
            .filter(|n| is_replicated(n))
            .map(|n| {
                let t = db.open_tree(&n).unwrap();
                let kv = t
                    .iter()
                    .map(|r| {
                        let (k, v) = r.unwrap();
                        (k.to_vec(), v.to_vec())
                    })
                    .collect();
                (n.to_vec(), kv)
            })
            .filter(|(_, kv): &TreeDump| !kv.is_empty())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn replaying_the_log_rebuilds_the_replicated_trees_and_nothing_else() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let primary = sled::Config::new().temporary(true).open().unwrap();
        let manifests = primary.open_tree(MANIFESTS_TREE).unwrap();
        let log = rt.block_on(async { ReplicationLog::new(primary.clone(), 1 << 20) });

        // Unit 1: the catalog and a plugin tree created and written inside the unit (its
        // writes before the log watched it come from its content).
        log.begin();
        manifests.insert(b"song/1", &b"m1"[..]).unwrap();
        let postings = primary.open_tree("royalty/postings").unwrap();
        postings.insert(b"1", &b"p1"[..]).unwrap();
        assert_eq!(log.seal_unit(7), Some(1));
        // Unit 2: more than sled's 1024-event subscriber buffer in one tree, a transaction
        // across two trees, a removal, and a write to a tree that is not replicated.
        log.begin();
        for i in 0..3000u32 {
            postings.insert(i.to_be_bytes(), &b"x"[..]).unwrap();
        }
        let ledger = primary.open_tree("ledger/entries").unwrap();
        use sled::Transactional;
        (&ledger, &postings)
            .transaction(|(l, p)| {
                l.insert(b"0", b"e0")?;
                p.remove(b"1")?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .unwrap();
        primary
            .open_tree("reports/outbox")
            .unwrap()
            .insert(b"k", b"v")
            .unwrap();
        assert_eq!(log.seal_unit(7), Some(2));
        // A unit that wrote nothing makes no entry.
        log.begin();
        assert_eq!(log.seal_unit(7), None);

        let entries = log.since(0).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries
            .iter()
            .flat_map(|e| &e.ops)
            .all(|o| is_replicated(&o.tree)));
        let standby = sled::Config::new().temporary(true).open().unwrap();
        for e in &entries {
            // Through the wire encoding, and twice (idempotent).
            let e: Entry = postcard::from_bytes(&postcard::to_allocvec(&**e).unwrap()).unwrap();
            e.apply(&standby).unwrap();
            e.apply(&standby).unwrap();
        }
        assert_eq!(trees(&standby), trees(&primary));
        assert!(!standby
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"reports/outbox"));
        assert_eq!(log.since(1).unwrap().len(), 1);
        assert_eq!(*log.subscribe().borrow(), 2);
    }

    #[test]
    fn a_plugin_host_opened_and_written_inside_a_unit_is_replicated_whole() {
        use mhc_origin::plugin::ContentPublished;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let primary = sled::Config::new().temporary(true).open().unwrap();
        let log = rt.block_on(async { ReplicationLog::new(primary.clone(), 1 << 20) });
        let config: mhc_origin::PluginsConfig = toml::from_str(
            "[royalty]\ncurrency = \"EUR\"\nrates = { \"*\" = { per_second_micro = 1, per_play_micro = 1 } }\n[ledger]\n",
        )
        .unwrap();
        log.begin();
        let host = mhc_origin::PluginHost::with_clock(
            &primary,
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            &config,
            mhc_clock::Clock::system(),
        )
        .unwrap();
        host.publish(ContentPublished {
            content_id: "song-a".into(),
            version: 1,
            artist_id: "alice".into(),
            title: "Song A".into(),
        })
        .unwrap();
        assert_eq!(log.seal_unit(3), Some(1));
        let standby = sled::Config::new().temporary(true).open().unwrap();
        for e in log.since(0).unwrap() {
            e.apply(&standby).unwrap();
        }
        assert_eq!(trees(&standby), trees(&primary));
    }

    #[test]
    fn the_log_keeps_the_newest_entries_within_its_bound() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("plugins/inbox").unwrap();
        let log = rt.block_on(async { ReplicationLog::new(db.clone(), 4096) });
        for i in 0..20u32 {
            log.begin();
            tree.insert(i.to_be_bytes(), vec![0u8; 1000]).unwrap();
            log.seal_unit(1);
        }
        let err = log.since(0).unwrap_err();
        assert!(err.first > 1 && err.first <= 20, "{err}");
        let kept = log.since(err.first - 1).unwrap();
        assert_eq!(kept.last().unwrap().seq, 20);
        assert!(kept.iter().map(|e| e.weight()).sum::<usize>() <= 4096);
    }
}
