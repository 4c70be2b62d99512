//! The control plane: libp2p gossip of signed heartbeats and content announcements, the
//! membership table with failure detection, and the operator's view of both.
//!
//! [`ClusterShared`] is what the rest of the node sees (the table, announcements, connected
//! peers' scores); [`swarm::run`] is the task that owns the libp2p swarm and keeps them current.

pub mod envelope;
pub mod membership;
pub mod messages;
pub mod swarm;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde_json::json;
use tokio::sync::mpsc;

use membership::{MemberState, Membership, MembershipConfig, SnapshotEntry};
use messages::ContentAnnouncement;

/// sled tree of the control plane's persistent state.
const CLUSTER_TREE: &str = "cluster";
/// Key of the membership snapshot in that tree.
const SNAPSHOT_KEY: &[u8] = b"membership";
/// Key of the incarnation counter.
const INCARNATION_KEY: &[u8] = b"incarnation";
/// Most content announcements remembered (oldest forgotten first).
const MAX_KNOWN_CONTENTS: usize = 10_000;
/// How long dead members stay listed for the operator.
const DEAD_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most members tracked.
const MAX_MEMBERS: usize = 4096;

/// Requests to the swarm task.
#[derive(Debug)]
pub enum ClusterCommand {
    /// Publish a content announcement (the task fills in sender and time).
    AnnounceContent(ContentAnnouncement),
    /// Publish an encoded, already applied emergency command on `mhc/emergency/1`.
    PublishEmergency(Vec<u8>),
}

/// A content version some origin announced.
#[derive(Debug, Clone)]
pub struct KnownContent {
    /// Content id.
    pub id: String,
    /// Version.
    pub version: u64,
    /// Hash of the encoded signed manifest.
    pub manifest_hash: [u8; 32],
    /// Publisher key.
    pub publisher: [u8; 32],
    /// Root of the version's mesh HashSeq.
    pub mesh_root: [u8; 32],
    /// Announcing peer.
    pub announced_by: PeerId,
    /// When this node received it (wall clock, ms).
    pub received_at_ms: u64,
    /// When the announcer sent it (its wall clock, ms).
    pub sent_at_ms: u64,
}

/// Control-plane state shared with the viewer and admin planes.
#[derive(Debug)]
pub struct ClusterShared {
    /// The membership table.
    pub membership: Mutex<Membership>,
    known_contents: Mutex<HashMap<String, KnownContent>>,
    scores: Mutex<Vec<(PeerId, f64)>>,
    commands: mpsc::Sender<ClusterCommand>,
    /// Set when a member joins, restarts or changes state: the snapshot is then rewritten.
    snapshot_dirty: AtomicBool,
    /// Set when a member's heartbeat shows it has not applied this node's last emergency
    /// command: the command is published again (at most every few seconds).
    pub(crate) emergency_behind: AtomicBool,
}

impl ClusterShared {
    /// A fresh shared state, its membership restored from `db`'s snapshot, and the receiving
    /// end of the command channel for the swarm task.
    pub fn new(
        config: &mhc_config::Config,
        db: &sled::Db,
    ) -> (Self, mpsc::Receiver<ClusterCommand>) {
        let mut membership = Membership::new(MembershipConfig {
            suspect_after_missed: config.cluster.suspect_after_missed,
            dead_after_missed: config.cluster.dead_after_missed,
            dead_retention: DEAD_RETENTION,
            max_members: MAX_MEMBERS,
        });
        if let Some(snapshot) = load_snapshot(db) {
            tracing::info!(members = snapshot.len(), "restored membership snapshot");
            membership.restore(snapshot, Instant::now());
        }
        // Bounded: announcements are rare; a full queue means the swarm task is stuck and the
        // announcement is dropped (heartbeats list held content anyway).
        let (tx, rx) = mpsc::channel(256);
        (
            Self {
                membership: Mutex::new(membership),
                known_contents: Mutex::new(HashMap::new()),
                scores: Mutex::new(Vec::new()),
                commands: tx,
                snapshot_dirty: AtomicBool::new(false),
                emergency_behind: AtomicBool::new(false),
            },
            rx,
        )
    }

    /// Asks the swarm task to publish an applied emergency command to the cluster.
    pub fn publish_emergency(&self, encoded: Vec<u8>) {
        if let Err(err) = self
            .commands
            .try_send(ClusterCommand::PublishEmergency(encoded))
        {
            tracing::warn!(error = %err, "emergency command not published");
        }
    }

    /// Asks the swarm task to announce a published content version.
    pub fn announce(&self, announcement: ContentAnnouncement) {
        if let Err(err) = self
            .commands
            .try_send(ClusterCommand::AnnounceContent(announcement))
        {
            tracing::warn!(error = %err, "content announcement dropped");
        }
    }

    fn record_announcement(&self, c: KnownContent) {
        let mut known = self.known_contents.lock().expect("known contents lock");
        if known.len() >= MAX_KNOWN_CONTENTS && !known.contains_key(&c.id) {
            if let Some(oldest) = known
                .values()
                .min_by_key(|k| k.received_at_ms)
                .map(|k| k.id.clone())
            {
                known.remove(&oldest);
            }
        }
        match known.get(&c.id) {
            Some(old) if old.version >= c.version => {}
            _ => {
                known.insert(c.id.clone(), c);
            }
        }
    }

    /// Content versions announced on the control plane, newest first.
    pub fn known_contents(&self) -> Vec<KnownContent> {
        let mut all: Vec<_> = self
            .known_contents
            .lock()
            .expect("known contents lock")
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|k| std::cmp::Reverse(k.received_at_ms));
        all
    }

    fn update_scores<D, F>(
        &self,
        gs: &libp2p::gossipsub::Behaviour<D, F>,
        connected: &HashSet<PeerId>,
    ) where
        D: libp2p::gossipsub::DataTransform + Send + 'static,
        F: libp2p::gossipsub::TopicSubscriptionFilter + Send + 'static,
    {
        let scores = connected
            .iter()
            .map(|p| (*p, gs.peer_score(p).unwrap_or(0.0)))
            .collect();
        *self.scores.lock().expect("scores lock") = scores;
    }

    /// Gossipsub scores of connected peers (as of the last heartbeat).
    pub fn peer_scores(&self) -> Vec<(PeerId, f64)> {
        self.scores.lock().expect("scores lock").clone()
    }

    /// Members by state, `(alive, suspect, dead)`, not counting this node.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.membership.lock().expect("membership lock").counts()
    }

    fn mark_dirty(&self) {
        self.snapshot_dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the snapshot if the membership changed since the last write.
    fn save_snapshot_if_dirty(&self, db: &sled::Db) {
        if self.snapshot_dirty.swap(false, Ordering::Relaxed) {
            self.save_snapshot(db);
        }
    }

    fn save_snapshot(&self, db: &sled::Db) {
        let snapshot = self.membership.lock().expect("membership lock").snapshot();
        let result = db.open_tree(CLUSTER_TREE).and_then(|t| {
            t.insert(
                SNAPSHOT_KEY,
                postcard::to_allocvec(&snapshot).expect("snapshot serialises"),
            )
        });
        if let Err(err) = result {
            tracing::warn!(error = %err, "saving membership snapshot");
        }
    }

    /// The members as `/v1/cluster` shows them.
    pub fn members_json(&self) -> Vec<serde_json::Value> {
        let now = Instant::now();
        let membership = self.membership.lock().expect("membership lock");
        // Each peer id is printed once: base58 is slow, and `sort_by_key` printed two per
        // comparison (~600 for 50 members), which showed in perf of an idle cluster whose
        // operator view was polled every 5 s.
        let mut members: Vec<_> = membership
            .members()
            .map(|m| (m.peer_id.to_string(), m))
            .collect();
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        members
            .into_iter()
            .map(|(peer_id, m)| {
                let hb = &m.heartbeat;
                json!({
                    "peer_id": peer_id,
                    "role": hb.role.as_str(),
                    "region": hb.region,
                    "location": hb.location.map(|(lat, lon)| json!({"lat": lat, "lon": lon})),
                    "state": m.state.as_str(),
                    "reason": m.reason,
                    "last_seen_ms": now.saturating_duration_since(m.last_seen).as_millis() as u64,
                    "state_for_ms": now.saturating_duration_since(m.state_since).as_millis() as u64,
                    "incarnation": hb.incarnation,
                    "seq": hb.seq,
                    "mode": hb.mode.as_str(),
                    "version": hb.software,
                    "addrs": {
                        "http": hb.addrs.http,
                        "quic": hb.addrs.quic,
                        "iroh": hb.addrs.iroh,
                        "p2p": hb.addrs.p2p,
                    },
                    "load": {
                        "connections_open": hb.load.connections,
                        "bytes_out_per_s": hb.load.bytes_out_per_s,
                        "cache_fill_permille": hb.load.cache_fill_permille,
                    },
                    "contents": hb.contents_total,
                })
            })
            .collect()
    }

    /// Whether a member is alive (for routing).
    pub fn is_alive(&self, peer: &PeerId) -> bool {
        self.membership
            .lock()
            .expect("membership lock")
            .get(peer)
            .is_some_and(|m| m.state == MemberState::Alive)
    }
}

fn load_snapshot(db: &sled::Db) -> Option<Vec<SnapshotEntry>> {
    let bytes = db.open_tree(CLUSTER_TREE).ok()?.get(SNAPSHOT_KEY).ok()??;
    match postcard::from_bytes(&bytes) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(error = %err, "membership snapshot unreadable; starting empty");
            None
        }
    }
}

/// Increments and durably stores the node's incarnation number, returning the new value.
///
/// # Errors
/// The database cannot be written.
pub fn next_incarnation(db: &sled::Db) -> anyhow::Result<u64> {
    let tree = db.open_tree(CLUSTER_TREE)?;
    let previous = tree
        .get(INCARNATION_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    let next = previous + 1;
    tree.insert(INCARNATION_KEY, &next.to_be_bytes())?;
    tree.flush()?;
    Ok(next)
}
