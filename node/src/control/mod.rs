//! The control plane: libp2p gossip of signed heartbeats, content announcements and operator
//! commands, the membership table with failure detection (heartbeat silence, and SWIM probes
//! among admitted members: [`swim`]), and the operator's view of both.
//!
//! [`ClusterHandle`] is what the rest of the node sees of it (members, announcements, peers'
//! scores, publishing); [`ControlPlane`] is the thread that owns the libp2p swarm and keeps
//! them current. What this node says about itself in its heartbeats comes from the rest of the
//! node through [`Advertise`], so the control plane depends on no other plane.

pub mod membership;
mod swarm;
mod swim;

pub use mhc_transport::gossip::{envelope, messages};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use parking_lot::{Mutex, MutexGuard};
use serde_json::json;
use tokio::sync::mpsc;

use crate::core::admission::{RevokeError, Revoked};
use crate::core::emergency::{Action, Applied, Rejected, SignedCommand};
use crate::core::Core;
use membership::{MemberState, Membership, MembershipConfig, SnapshotEntry};
use messages::{ContentAnnouncement, HeldContent, OriginWrites, PlayCount, WireRole};

pub use swarm::{ControlPlane, Wiring};

/// sled tree of the control plane's persistent state.
const CLUSTER_TREE: &str = "cluster";
/// Key of the membership snapshot in that tree.
const SNAPSHOT_KEY: &[u8] = b"membership";
/// Most content announcements remembered (oldest forgotten first).
const MAX_KNOWN_CONTENTS: usize = 10_000;
/// Contents of one member `/v1/cluster` lists (its heartbeat may name more).
pub const MAX_HELD_SHOWN: usize = 64;
/// How long dead members stay listed for the operator.
const DEAD_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most members tracked.
const MAX_MEMBERS: usize = 4096;
/// A member is judged by its own heartbeat period, but by at most this many of this node's
/// (`cluster.heartbeat_interval`): members cannot buy themselves hours of silence.
const MAX_PERIOD_FACTOR: u32 = 4;

/// Requests to the swarm task.
#[derive(Debug)]
enum ClusterCommand {
    /// Publish a content announcement (the task fills in sender and time).
    AnnounceContent(ContentAnnouncement),
    /// Publish an encoded, already applied emergency command on `mhc/emergency/1`.
    PublishEmergency(Vec<u8>),
    /// Publish encoded, already applied revocations on `mhc/revocations/1`.
    PublishRevocations(Vec<Vec<u8>>),
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
    /// Root of the version's mesh HashSeq.
    pub mesh_root: [u8; 32],
    /// Announcing peer.
    pub announced_by: PeerId,
    /// When this node received it (wall clock, ms).
    pub received_at_ms: u64,
    /// When the announcer sent it (its wall clock, ms).
    pub sent_at_ms: u64,
}

/// What this node tells the cluster about itself beyond its configuration: the content it
/// holds (with mesh roots), what it replicates now and what its viewers play. Read once per
/// heartbeat period by the control plane; implemented by the composition root over the
/// catalog and the mesh plane.
pub trait Advertise: Send + Sync + 'static {
    /// Content held, newest catalog order, at most `limit` entries, and the total count.
    fn contents(&self, limit: usize) -> (Vec<HeldContent>, u32);
    /// Mesh roots being replicated now.
    fn replicating(&self) -> Vec<[u8; 32]>;
    /// The most played contents here recently.
    fn plays(&self) -> Vec<PlayCount>;
}

/// Where this node's planes listen, once bound (port 0 resolved), as heartbeats advertise them.
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// Viewer plane.
    pub http: SocketAddr,
    /// QUIC data plane.
    pub quic: SocketAddr,
    /// Mesh plane (iroh).
    pub iroh: SocketAddr,
    /// Membership and failure detection (SWIM).
    pub swim: SocketAddr,
    /// Viewer plane over TLS, if configured.
    pub https: Option<SocketAddr>,
}

/// An alive origin of the membership table, as a place to fill from or report to.
#[derive(Debug, Clone)]
pub struct OriginMember {
    /// Its peer id (pinned by the QUIC handshake).
    pub peer_id: PeerId,
    /// Its QUIC data-plane address.
    pub quic: SocketAddr,
    /// Viewer connections it reported (for ordering: least loaded first).
    pub connections: u32,
    /// Whether it accepts writes, in which epoch.
    pub writes: OriginWrites,
}

/// The control plane as the rest of the node sees it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    shared: Arc<ClusterShared>,
}

/// Control-plane state shared between the swarm thread and the handles.
#[derive(Debug)]
struct ClusterShared {
    /// The membership table.
    membership: Mutex<Membership>,
    known_contents: Mutex<HashMap<String, KnownContent>>,
    scores: Mutex<Vec<(PeerId, f64)>>,
    commands: mpsc::Sender<ClusterCommand>,
    /// Set when a member joins, restarts or changes state: the snapshot is then rewritten.
    snapshot_dirty: AtomicBool,
    /// Set when a member's heartbeat shows it has not applied this node's last emergency
    /// command: the command is published again (at most every few seconds).
    emergency_behind: AtomicBool,
    /// Set when a member's heartbeat shows it knows other revocations than this node: this
    /// node's are published again (at most every few seconds), and so are the member's.
    revocations_behind: AtomicBool,
}

/// The receiving end of a [`ClusterHandle`]'s requests, for [`ControlPlane::spawn`].
#[derive(Debug)]
pub struct ClusterCommands(mpsc::Receiver<ClusterCommand>);

impl ClusterHandle {
    /// A fresh control-plane state, its membership restored from `db`'s snapshot, and the
    /// receiving end of its requests for the swarm thread.
    pub fn new(config: &mhc_config::Config, db: &sled::Db) -> (Self, ClusterCommands) {
        let mut membership = Membership::new(MembershipConfig {
            suspect_after_missed: config.cluster.suspect_after_missed,
            dead_after_missed: config.cluster.dead_after_missed,
            dead_retention: DEAD_RETENTION,
            max_members: MAX_MEMBERS,
            max_period: config.cluster.heartbeat_interval * MAX_PERIOD_FACTOR,
        });
        if let Some(snapshot) = load_snapshot(db) {
            tracing::info!(members = snapshot.len(), "restored membership snapshot");
            membership.restore(snapshot, Instant::now());
        }
        // Bounded: announcements are rare; a full queue means the swarm task is stuck and the
        // announcement is dropped (heartbeats list held content anyway).
        let (tx, rx) = mpsc::channel(256);
        let shared = ClusterShared {
            membership: Mutex::new(membership),
            known_contents: Mutex::new(HashMap::new()),
            scores: Mutex::new(Vec::new()),
            commands: tx,
            snapshot_dirty: AtomicBool::new(false),
            emergency_behind: AtomicBool::new(false),
            revocations_behind: AtomicBool::new(false),
        };
        (
            Self {
                shared: Arc::new(shared),
            },
            ClusterCommands(rx),
        )
    }

    /// The membership table, locked: routing borrows members while it decides. Hold it briefly.
    pub fn membership(&self) -> MutexGuard<'_, Membership> {
        self.shared.membership.lock()
    }

    /// Verifies and applies an encoded operator command that arrived by `via` (`gossip`,
    /// `http`, `admin`, `satellite`): counted, logged, and, when it came from outside the
    /// control plane, published to the cluster. The signature is the authority, not the
    /// sender.
    ///
    /// # Errors
    /// [`Rejected`], counted by reason; nothing changes.
    pub fn obey(&self, core: &Core, bytes: &[u8], via: &'static str) -> Result<(), Rejected> {
        match core.emergency.apply(bytes) {
            Ok((Applied::Applied { emergency }, cmd)) => {
                core.metrics.record_emergency("applied");
                tracing::warn!(
                    via,
                    seq = cmd.command.seq,
                    operator = %hex::encode(cmd.command.operator),
                    mode = if emergency { "emergency" } else { "normal" },
                    reason = command_reason(&cmd),
                    "operator command applied"
                );
                if via != "gossip" {
                    self.publish_emergency(cmd.encode());
                }
                Ok(())
            }
            Err(err) => {
                core.metrics.record_emergency(err.label());
                if !matches!(err, Rejected::Stale { .. }) {
                    tracing::warn!(via, error = %err, "operator command rejected");
                }
                Err(err)
            }
        }
    }

    /// Verifies and applies an encoded revocation that arrived by `via` (`gossip`, `http`,
    /// `admin`): the revoked node is dead in the membership table at once, counted, logged,
    /// and, when the revocation came from outside the control plane, published to the cluster.
    /// The operator's signature is the authority, not the sender.
    ///
    /// # Errors
    /// [`RevokeError`], counted by reason; nothing changes.
    pub fn revoke(
        &self,
        core: &Core,
        bytes: &[u8],
        via: &'static str,
    ) -> Result<Revoked, RevokeError> {
        let admission = &core.admission;
        let outcome = admission.revoke(bytes);
        let count = admission.revoked_count();
        match &outcome {
            Ok(Revoked::New(signed)) => {
                core.metrics.record_revocation("applied", count);
                let r = &signed.revocation;
                let peer = libp2p_identity::ed25519::PublicKey::try_from_bytes(&r.node)
                    .ok()
                    .map(|k| libp2p_identity::PublicKey::from(k).to_peer_id());
                let reason = format!(
                    "revoked by operator {}: {}",
                    hex::encode(r.operator),
                    r.reason
                );
                if let Some(peer) = peer {
                    if self.membership().expel(&peer, &reason, Instant::now()) {
                        self.shared.mark_dirty();
                    }
                }
                if r.node == core.identity.public_key() {
                    tracing::error!(via, operator = %hex::encode(r.operator), reason = %r.reason,
                        "this node's key was revoked: no member admits it any more; an operator \
                         must enroll a new key");
                } else {
                    tracing::warn!(via, node = %hex::encode(r.node), operator = %hex::encode(r.operator),
                        reason = %r.reason, "node revoked");
                }
                if via != "gossip" {
                    self.publish_revocations(vec![bytes.to_vec()]);
                }
            }
            Ok(Revoked::Known) => core.metrics.record_revocation("known", count),
            Err(err) => {
                core.metrics.record_revocation(err.label(), count);
                tracing::warn!(via, error = %err, "revocation refused");
            }
        }
        outcome
    }

    /// Asks the swarm thread to publish applied revocations to the cluster.
    fn publish_revocations(&self, encoded: Vec<Vec<u8>>) {
        if let Err(err) = self
            .shared
            .commands
            .try_send(ClusterCommand::PublishRevocations(encoded))
        {
            tracing::warn!(error = %err, "revocations not published");
        }
    }

    /// Asks the swarm thread to publish an applied emergency command to the cluster.
    fn publish_emergency(&self, encoded: Vec<u8>) {
        if let Err(err) = self
            .shared
            .commands
            .try_send(ClusterCommand::PublishEmergency(encoded))
        {
            tracing::warn!(error = %err, "emergency command not published");
        }
    }

    /// Asks the swarm thread to announce a published content version.
    pub fn announce(&self, announcement: ContentAnnouncement) {
        if let Err(err) = self
            .shared
            .commands
            .try_send(ClusterCommand::AnnounceContent(announcement))
        {
            tracing::warn!(error = %err, "content announcement dropped");
        }
    }

    /// Content versions announced on the control plane, newest first.
    pub fn known_contents(&self) -> Vec<KnownContent> {
        let mut all: Vec<_> = self
            .shared
            .known_contents
            .lock()
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|k| std::cmp::Reverse(k.received_at_ms));
        all
    }

    /// Whether some origin announced `id`.
    pub fn is_announced(&self, id: &str) -> bool {
        self.shared.known_contents.lock().contains_key(id)
    }

    /// Gossipsub scores of connected peers (as of the last heartbeat).
    pub fn peer_scores(&self) -> Vec<(PeerId, f64)> {
        self.shared.scores.lock().clone()
    }

    /// Members by state, `(alive, suspect, dead)`, not counting this node.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.membership().counts()
    }

    /// The alive origins with a usable QUIC address: those that accept writes first, in the
    /// highest epoch first (a primary that has not yet heard it was replaced sorts after its
    /// successor), then the least loaded.
    pub fn origins(&self) -> Vec<OriginMember> {
        let mut out: Vec<OriginMember> = self
            .membership()
            .members()
            .filter(|m| m.state == MemberState::Alive && m.heartbeat.role == WireRole::Origin)
            .filter_map(|m| {
                Some(OriginMember {
                    peer_id: m.peer_id,
                    quic: m.heartbeat.addrs.quic.parse().ok()?,
                    connections: m.heartbeat.load.connections,
                    writes: m.heartbeat.writes,
                })
            })
            .collect();
        out.sort_by_key(|o| {
            (
                !o.writes.accepts,
                std::cmp::Reverse(o.writes.epoch),
                o.connections,
            )
        });
        out
    }

    /// The members as `/v1/cluster` shows them (each with at most [`MAX_HELD_SHOWN`] of the
    /// contents its heartbeat says it holds); `certificate` says what is known of a
    /// member's certificate (shown as its `certificate`).
    pub fn members_json(
        &self,
        certificate: impl Fn(&PeerId) -> Option<serde_json::Value>,
    ) -> Vec<serde_json::Value> {
        let now = Instant::now();
        let membership = self.membership();
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
                let certificate = certificate(&m.peer_id);
                json!({
                    "certificate": certificate,
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
                        "swim": hb.addrs.swim,
                    },
                    "load": {
                        "connections_open": hb.load.connections,
                        "bytes_out_per_s": hb.load.bytes_out_per_s,
                        "cache_fill_permille": hb.load.cache_fill_permille,
                    },
                    "contents": hb.contents_total,
                    "held": hb.contents.iter().take(MAX_HELD_SHOWN)
                        .map(|h| json!({"id": h.id, "version": h.version}))
                        .collect::<Vec<_>>(),
                    "writes": (hb.role == WireRole::Origin).then(|| json!({
                        "accepts": hb.writes.accepts,
                        "epoch": hb.writes.epoch,
                    })),
                })
            })
            .collect()
    }
}

/// Wraps a payload in the node-key-signed envelope, for `topic` (gossip and SWIM alike).
fn seal(state: &Core, topic: &str, payload: &[u8]) -> Vec<u8> {
    envelope::seal(
        state.identity.signing_key(),
        topic,
        state.clock.now_ms(),
        payload,
    )
}

fn command_reason(cmd: &SignedCommand) -> &str {
    match &cmd.command.action {
        Action::Activate { reason, .. } => reason,
        Action::Deactivate => "",
    }
}

impl ClusterShared {
    fn record_announcement(&self, c: KnownContent) {
        let mut known = self.known_contents.lock();
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
        *self.scores.lock() = scores;
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
        let snapshot = self.membership.lock().snapshot();
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

/// Plausible control-plane values for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::messages::{Heartbeat, HeldContent, Load, Mode, PlaneAddrs, WireRole};

    /// A heartbeat of an alive edge in eu-west holding `song` v2.
    pub(crate) fn heartbeat() -> Heartbeat {
        Heartbeat {
            peer_id: vec![1, 2, 3],
            incarnation: 4,
            seq: 5,
            sent_at_ms: 6,
            role: WireRole::Edge,
            region: "eu-west".into(),
            location: Some((52.37, 4.9)),
            addrs: PlaneAddrs {
                http: "10.0.0.1:8080".into(),
                quic: "10.0.0.1:4433".into(),
                iroh: "10.0.0.1:4434".into(),
                p2p: vec!["/ip4/10.0.0.1/tcp/4001".into()],
                swim: "10.0.0.1:4435".into(),
            },
            mode: Mode::Normal,
            load: Load {
                connections: 3,
                bytes_out_per_s: 1000,
                cache_fill_permille: 10,
            },
            contents: vec![HeldContent {
                id: "song".into(),
                version: 2,
                mesh_root: [0; 32],
                bytes: 0,
            }],
            contents_total: 1,
            software: "0.1.0".into(),
            interval_ms: 1000,
            replicating: Vec::new(),
            plays: Vec::new(),
            emergency_seq: 0,
            downlink: false,
            certificate: Vec::new(),
            revoked: [0; 32],
            revoked_count: 0,
            writes: Default::default(),
        }
    }
}
