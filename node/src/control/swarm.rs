//! The libp2p swarm of the control plane: TCP + noise + yamux, identify, kademlia, gossipsub with
//! signed messages, strict validation, peer scoring and bounded queues; and the task that drives
//! it (heartbeats out, heartbeats and announcements in, failure detection, reconnection).

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use libp2p::gossipsub::{
    self, IdentTopic, MaxCountSubscriptionFilter, MessageAcceptance, MessageAuthenticity,
    PeerScoreParams, PeerScoreThresholds, TopicScoreParams, ValidationMode,
    WhitelistSubscriptionFilter,
};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, identity, kad, noise, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use tokio::sync::watch;

use super::messages::{
    decode, encode, ContentAnnouncement, Heartbeat, Load, OriginWrites, PlaneAddrs, WireRole,
    CONTENT_TOPIC, EMERGENCY_TOPIC, HEALTH_TOPIC, MAX_HEARTBEAT_CONTENTS,
    MAX_HEARTBEAT_REPLICATING, MAX_MESSAGE_BYTES, MAX_P2P_ADDRS,
};
use super::{
    seal, Advertise, BoundAddrs, ClusterCommand, ClusterCommands, ClusterHandle, ClusterShared,
    KnownContent,
};
use crate::core::Core;
use mhc_transport::gossip::cert::split_host_port;
use mhc_transport::gossip::revocation::{RevocationBatch, MAX_BATCH, REVOCATION_TOPIC};

/// Peers this node dials on its own (from the DHT, heartbeats and its snapshot). The control
/// plane needs a connected graph, not a clique: with 8 dialled (and as many accepted), a
/// gossipsub mesh of 3 plus lazy gossip to 4 more has room to form and re-form, and a 50-node
/// cluster still converges in about 2 s with one message reaching all in ~20 ms, while each
/// connection's keep-alives, gossip control, buffers and per-peer state are paid 8-16 times
/// instead of 49. cluster-bench 50 300, against 12 dialled and gossipsub's 60 s duplicate
/// cache: idle CPU 1.55-1.71 % → 1.51 % of a core, steady RSS ~41 → ~40 MB.
const TARGET_PEERS: usize = 8;

/// How long gossipsub remembers a message id, so a copy arriving later is dropped unread.
/// Copies arrive within milliseconds and lazy gossip only offers the last 3 heartbeats, so
/// 20 s is ample; gossipsub's 60 s default holds three times as many ids (~1 MB at 50 nodes'
/// heartbeats). A copy older than this is checked again and changes nothing: heartbeats are
/// ordered by sequence number, announcements and emergency commands are idempotent.
///
/// Peer scoring's delivery records live as long (our patch to gossipsub, `vendor/README.md`;
/// upstream holds them 120 s). cluster-bench 50 300, same session: steady idle RSS per node
/// 40 → 36 MB (anonymous memory 17.5 → 13.4 MB).
const DUPLICATE_CACHE_TIME: Duration = Duration::from_secs(20);
/// Connections accepted in all: well above the dialling target, so a bootstrap node keeps
/// admitting newcomers after its own quota is met (a newcomer that cannot reach its bootstrap
/// peer cannot join at all).
const MAX_CONNECTIONS: u32 = 512;
/// Messages queued per connection before gossipsub drops (its default is 5000; heartbeats are
/// small and periodic, so a deep queue only stores a flood).
const CONNECTION_QUEUE_LEN: usize = 256;
/// Heartbeats accepted per sender per heartbeat period beyond which messages are rejected (and
/// the sender penalised). Legitimate senders send one.
const MAX_HEARTBEATS_PER_PERIOD: u32 = 4;
/// Announcements accepted per sender per period.
const MAX_ANNOUNCEMENTS_PER_PERIOD: u32 = 64;
/// Emergency commands accepted per peer per heartbeat period (real ones are rare; relays of
/// the same command by several peers arrive from each of them once).
const MAX_EMERGENCY_PER_PERIOD: u32 = 4;
/// Least time between re-publications of the last emergency command for members that are
/// behind (they joined or restarted after it was sent).
const EMERGENCY_REPUBLISH_INTERVAL: Duration = Duration::from_secs(3);
/// Revocation batches accepted per peer per heartbeat period: a whole list
/// ([`MAX_REVOCATIONS`](crate::core::admission::MAX_REVOCATIONS) keys) sent again at once, and
/// some room.
const MAX_REVOCATION_BATCHES_PER_PERIOD: u32 =
    (crate::core::admission::MAX_REVOCATIONS / MAX_BATCH) as u32 + 8;
/// Least time between re-publications of this node's revocations for members whose heartbeats
/// show another list.
const REVOCATION_REPUBLISH_INTERVAL: Duration = Duration::from_secs(2);
/// About how many members send their revocations again when one member's heartbeat shows a
/// list that differs (and is not longer): enough that one lost message does not matter, few
/// enough that the cluster does not flood itself for a node that was away.
const REVOCATION_SENDERS: usize = 3;
/// Application score taken per rejected message (weighted ×10 by gossipsub: ten rejections
/// reach the graylist threshold of -80 even against full delivery credit).
const ABUSE_PENALTY: f64 = 1.0;
/// Per-second decay of abuse points: halves in about 30 s.
const ABUSE_DECAY_PER_SECOND: f64 = 0.977;
/// Failure detection runs this many times per heartbeat period.
const SWEEPS_PER_PERIOD: u32 = 10;
/// How often the membership snapshot is rewritten if the membership changed.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Redial back-off bounds for peers we know but are not connected to.
const REDIAL_MIN: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(30);
/// Window of the bytes-per-second load figure.
const LOAD_WINDOW: Duration = Duration::from_secs(10);

/// The composed behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour<
        gossipsub::IdentityTransform,
        MaxCountSubscriptionFilter<WhitelistSubscriptionFilter>,
    >,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Behaviour")
    }
}

fn topics() -> [IdentTopic; 4] {
    [
        IdentTopic::new(HEALTH_TOPIC),
        IdentTopic::new(CONTENT_TOPIC),
        IdentTopic::new(EMERGENCY_TOPIC),
        IdentTopic::new(REVOCATION_TOPIC),
    ]
}

fn gossipsub_behaviour() -> anyhow::Result<
    gossipsub::Behaviour<
        gossipsub::IdentityTransform,
        MaxCountSubscriptionFilter<WhitelistSubscriptionFilter>,
    >,
> {
    let config = gossipsub::ConfigBuilder::default()
        // Signatures are checked once per distinct message in our envelope (see
        // `envelope`), not by gossipsub on every copy.
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        // Protobuf framing and our 105-byte envelope add under 1 KiB to the payload.
        .max_transmit_size(MAX_MESSAGE_BYTES + 1024)
        // Content-addressed ids: the same payload relayed twice is one message.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(&blake3::hash(&m.data).as_bytes()[..20])
        })
        .connection_handler_queue_len(CONNECTION_QUEUE_LEN)
        // An idle node's CPU goes on relaying other nodes' heartbeats: every copy it sends or
        // receives is a syscall, a noise frame, a gossipsub queue entry and a timer. Publishing
        // to the mesh only (not to every connected peer) and a mesh of 3 keep that to ~2 copies
        // per heartbeat each way, at the cost of a hop or two (50 nodes: p50 ~10 ms, max
        // ~20 ms to all). A mesh of 4 cost ~20% more idle CPU (cluster-bench 50 60: 1.97–2.13%
        // vs 1.55–1.71% of a core). What a thinner mesh gives up in redundancy the lazy gossip
        // (IHAVE to 4 more peers each second) and the 8-16 connections per node make up for; the
        // partition and hostile-peer tests hold either way.
        .flood_publish(false)
        .mesh_n(3)
        .mesh_n_low(2)
        .mesh_n_high(6)
        .mesh_outbound_min(1)
        .gossip_lazy(4)
        .heartbeat_interval(Duration::from_secs(1))
        .duplicate_cache_time(DUPLICATE_CACHE_TIME)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let filter = MaxCountSubscriptionFilter {
        filter: WhitelistSubscriptionFilter(topics().iter().map(|t| t.hash()).collect()),
        max_subscribed_topics: 8,
        max_subscriptions_per_request: 8,
    };
    let mut gs = gossipsub::Behaviour::new_with_subscription_filter(
        MessageAuthenticity::Anonymous,
        config,
        filter,
    )
    .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;

    let mut params = PeerScoreParams {
        // Community nodes share NATs and test clusters share 127.0.0.1: co-location is normal.
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    for topic in topics() {
        params.topics.insert(
            topic.hash(),
            TopicScoreParams {
                topic_weight: 1.0,
                // Small positive credit for steady members (at most 0.6 + 5): never enough to
                // outweigh a single rejected message.
                time_in_mesh_weight: 0.01,
                time_in_mesh_quantum: Duration::from_secs(1),
                time_in_mesh_cap: 60.0,
                first_message_deliveries_weight: 0.5,
                first_message_deliveries_cap: 10.0,
                // Heartbeats are one per peer per second: a delivery quota would punish honest
                // peers of small clusters, so P3/P3b are off.
                mesh_message_deliveries_weight: 0.0,
                mesh_failure_penalty_weight: 0.0,
                // Invalid messages weigh heavily: two rejected messages take a peer below the
                // graylist threshold (2² × -30 = -120 < -80).
                invalid_message_deliveries_weight: -30.0,
                invalid_message_deliveries_decay: 0.5,
                ..TopicScoreParams::default()
            },
        );
    }
    gs.with_peer_score(
        params,
        PeerScoreThresholds {
            gossip_threshold: -10.0,
            publish_threshold: -50.0,
            graylist_threshold: -80.0,
            accept_px_threshold: 10.0,
            opportunistic_graft_threshold: 20.0,
        },
    )
    .map_err(|e| anyhow::anyhow!("gossipsub peer scoring: {e}"))?;
    for topic in topics() {
        gs.subscribe(&topic)
            .map_err(|e| anyhow::anyhow!("subscribing {topic}: {e}"))?;
    }
    Ok(gs)
}

/// Builds the swarm and starts listening on `listen.p2p`.
///
/// # Errors
/// Bad listen address, transport setup or bind failure.
pub fn build_swarm(seed: [u8; 32], listen: &str) -> anyhow::Result<Swarm<Behaviour>> {
    let mut seed = seed;
    let key = identity::Keypair::ed25519_from_bytes(&mut seed).expect("32-byte seed");
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kad_cfg = kad::Config::new(StreamProtocol::new("/mhc/kad/1.0.0"));
            kad_cfg.set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_cfg,
            );
            // Daemons are reachable: answer DHT queries rather than waiting for a confirmed
            // external address.
            kad.set_mode(Some(kad::Mode::Server));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(MAX_CONNECTIONS))
                        .with_max_established_per_peer(Some(1))
                        .with_max_pending_incoming(Some(32))
                        .with_max_pending_outgoing(Some(32)),
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new("/mhc/id/1.0.0".into(), key.public())
                        .with_agent_version(format!("mhc-node/{}", env!("CARGO_PKG_VERSION"))),
                ),
                kad,
                gossipsub: gossipsub_behaviour()?,
            })
        })?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(60))
                .with_max_negotiating_inbound_streams(64)
                .with_notify_handler_buffer_size(NonZeroUsize::new(64).expect("non-zero"))
        })
        .build();
    let addr: Multiaddr = listen
        .parse()
        .with_context(|| format!("listen.p2p {listen:?} is not a multiaddr"))?;
    swarm
        .listen_on(addr)
        .with_context(|| format!("listening on listen.p2p {listen}"))?;
    Ok(swarm)
}

/// Waits until the swarm reports its listen addresses (the OS picks the port when the config
/// says 0), so they can be advertised and written to `runtime.json` before the node is ready.
///
/// # Errors
/// The listener failed or did not come up within 10 s.
pub async fn wait_listening(swarm: &mut Swarm<Behaviour>) -> anyhow::Result<Vec<Multiaddr>> {
    let mut addrs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while addrs.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .context("listen.p2p did not come up within 10 s")?;
        match event {
            SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
            SwarmEvent::ListenerError { error, .. } => {
                anyhow::bail!("listen.p2p listener failed: {error}")
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                anyhow::bail!("listen.p2p listener closed: {reason:?}")
            }
            _ => {}
        }
    }
    Ok(addrs)
}

/// Everything the control plane needs of the rest of the node.
pub struct Wiring {
    /// The shared state.
    pub core: Arc<Core>,
    /// The handle whose shared state the swarm keeps current.
    pub cluster: ClusterHandle,
    /// Its requests.
    pub commands: ClusterCommands,
    /// What heartbeats say about this node's content.
    pub advertise: Arc<dyn Advertise>,
    /// Where the other planes listen.
    pub addrs: BoundAddrs,
    /// The membership socket, bound at `addrs.swim`.
    pub swim_socket: std::net::UdpSocket,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// The control plane's own thread: the swarm, its sockets and its timers live on one
/// current-thread runtime, so a gossip message wakes one thread instead of bouncing between the
/// node's worker threads (measured on a 50-node loopback cluster: most of an idle node's CPU was
/// cross-thread wake-ups and signature checks).
#[derive(Debug)]
pub struct ControlPlane {
    thread: std::thread::JoinHandle<()>,
}

impl ControlPlane {
    /// Builds the swarm on a new thread, listening on `listen.p2p`, and runs the control plane
    /// there until shutdown; returns once it listens, with its listen addresses.
    ///
    /// # Errors
    /// As [`build_swarm`] and [`wait_listening`].
    pub fn spawn(wiring: Wiring) -> anyhow::Result<(Self, Vec<Multiaddr>)> {
        let (addrs_tx, addrs_rx) = std::sync::mpsc::sync_channel(1);
        let seed = wiring.core.identity.signing_key().to_bytes();
        let listen = wiring.core.config.listen.p2p.clone();
        let thread = std::thread::Builder::new()
            .name("mhc-control".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addrs_tx.send(Err(anyhow::anyhow!("control-plane runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut swarm = match build_swarm(seed, &listen) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = addrs_tx.send(Err(e));
                            return;
                        }
                    };
                    let addrs = match wait_listening(&mut swarm).await {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = addrs_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addrs_tx.send(Ok(addrs.clone()));
                    run(wiring, swarm, addrs).await;
                });
            })
            .context("spawning the control-plane thread")?;
        let addrs = addrs_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("control-plane thread ended during start"))??;
        Ok((Self { thread }, addrs))
    }

    /// Waits for the thread to end (after the shutdown signal).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Splits `/ip4/…/tcp/…/p2p/<id>` into the peer id and the address without it.
pub fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, addr)),
        _ => None,
    }
}

/// Per-sender admission counters, reset every heartbeat period.
#[derive(Default)]
struct RateLimiter {
    counts: HashMap<(PeerId, &'static str), u32>,
}

impl RateLimiter {
    fn admit(&mut self, peer: PeerId, topic: &'static str, limit: u32) -> bool {
        // Bounded: a flood of distinct senders is bounded by the connection limit, since
        // messages only arrive from connected peers' relays.
        let n = self.counts.entry((peer, topic)).or_default();
        *n += 1;
        *n <= limit
    }

    fn reset(&mut self) {
        self.counts.clear();
    }
}

struct Redial {
    next: Instant,
    backoff: Duration,
}

/// Runs the control plane until `shutdown` turns true.
async fn run(wiring: Wiring, mut swarm: Swarm<Behaviour>, mut listen_addrs: Vec<Multiaddr>) {
    let Wiring {
        core,
        cluster,
        commands: ClusterCommands(mut commands),
        advertise,
        addrs,
        swim_socket,
        mut shutdown,
    } = wiring;
    let state = &*core;
    let shared = &*cluster.shared;
    let interval = state.config.cluster.heartbeat_interval;
    let [health, content, emergency, revocations] = topics();
    let mut last_republish: Option<Instant> = None;
    let mut last_revocations_republish: Option<Instant> = None;
    let local = *swarm.local_peer_id();

    for addr in &state.config.cluster.bootstrap {
        match addr.parse::<Multiaddr>().ok().as_ref().and_then(split_p2p) {
            Some((peer, base)) if peer != local => {
                swarm.behaviour_mut().kad.add_address(&peer, base);
                if let Err(err) = swarm.dial(addr.parse::<Multiaddr>().expect("parsed above")) {
                    tracing::warn!(%addr, error = %err, "dialling bootstrap peer");
                }
            }
            Some(_) => {}
            None => tracing::warn!(%addr, "cluster.bootstrap entry is not a /p2p/ multiaddr"),
        }
    }

    let advertised_swim = advertised_addr(addrs.swim, advertised_ip(&listen_addrs));
    let mut swim = match super::swim::Swim::new(state, swim_socket, advertised_swim) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "membership socket unusable; control plane stopped");
            return;
        }
    };

    let mut heartbeat_tick = tokio::time::interval(interval);
    heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(interval / SWEEPS_PER_PERIOD);
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshot_tick = tokio::time::interval(SNAPSHOT_INTERVAL);
    snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redial_tick = tokio::time::interval(Duration::from_millis(500));
    redial_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut seq = 0u64;
    let mut limiter = RateLimiter::default();
    let mut redial: HashMap<PeerId, Redial> = HashMap::new();
    let mut load_samples: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut connected: HashSet<PeerId> = HashSet::new();
    let mut abuse: HashMap<PeerId, f64> = HashMap::new();

    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = heartbeat_tick.tick() => {
                limiter.reset();
                seq += 1;
                let hb = build_heartbeat(state, advertise.as_ref(), &addrs, seq, &listen_addrs, &mut load_samples);
                let bytes = encode(&hb);
                let bytes = seal(state, HEALTH_TOPIC, &bytes);
                match swarm.behaviour_mut().gossipsub.publish(health.clone(), bytes) {
                    Ok(_) => state.metrics.record_gossip("out", HEALTH_TOPIC),
                    // Alone in the cluster: nothing to tell.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(err) => tracing::debug!(error = %err, "publishing heartbeat"),
                }
                shared.update_scores(&swarm.behaviour().gossipsub, &connected);
                let due = last_republish.is_none_or(|t| t.elapsed() >= EMERGENCY_REPUBLISH_INTERVAL);
                if due && shared.emergency_behind.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    if let Some(cmd) = state.emergency.state().last {
                        last_republish = Some(Instant::now());
                        let bytes = seal(state, EMERGENCY_TOPIC, &cmd.encode());
                        match swarm.behaviour_mut().gossipsub.publish(emergency.clone(), bytes) {
                            Ok(_) => state.metrics.record_gossip("out", EMERGENCY_TOPIC),
                            Err(err) => tracing::debug!(error = %err, "re-publishing emergency command"),
                        }
                    }
                }
                let due = last_revocations_republish.is_none_or(|t| t.elapsed() >= REVOCATION_REPUBLISH_INTERVAL);
                if due && shared.revocations_behind.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    last_revocations_republish = Some(Instant::now());
                    publish_revocations(&mut swarm, state, &revocations, state.admission.revocations());
                }
            }
            () = swim.turn(state, shared) => {}
            _ = sweep_tick.tick() => {
                swim.sync(state, shared);
                let changes = shared.membership.lock().sweep(Instant::now());
                if !changes.is_empty() {
                    shared.mark_dirty();
                }
                for t in changes {
                    tracing::info!(peer = %t.peer_id, from = t.from.as_str(), to = t.to.as_str(), "member state changed");
                }
            }
            _ = snapshot_tick.tick() => {
                shared.save_snapshot_if_dirty(&state.db);
                // Forgive slowly (halve every ~30 s) and forget peers that left.
                abuse.retain(|p, points| {
                    *points *= ABUSE_DECAY_PER_SECOND;
                    connected.contains(p) && *points > 0.1
                });
                for (peer, points) in &abuse {
                    let _ = swarm.behaviour_mut().gossipsub.set_application_score(peer, -*points);
                }
            }
            _ = redial_tick.tick() => maintain_connections(&mut swarm, shared, &connected, &mut redial),
            Some(cmd) = commands.recv() => match cmd {
                ClusterCommand::AnnounceContent(mut ann) => {
                    ann.peer_id = local.to_bytes();
                    ann.sent_at_ms = state.clock.now_ms();
                    let bytes = seal(state, CONTENT_TOPIC, &encode(&ann));
                    match swarm.behaviour_mut().gossipsub.publish(content.clone(), bytes) {
                        Ok(_) => state.metrics.record_gossip("out", CONTENT_TOPIC),
                        Err(err) => tracing::debug!(error = %err, content = %ann.id, "announcing content"),
                    }
                }
                ClusterCommand::PublishRevocations(list) => {
                    publish_revocations(&mut swarm, state, &revocations, list);
                }
                ClusterCommand::PublishEmergency(bytes) => {
                    let bytes = seal(state, EMERGENCY_TOPIC, &bytes);
                    match swarm.behaviour_mut().gossipsub.publish(emergency.clone(), bytes) {
                        Ok(_) => state.metrics.record_gossip("out", EMERGENCY_TOPIC),
                        Err(err) => tracing::warn!(error = %err, "publishing emergency command"),
                    }
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, "p2p listening");
                    listen_addrs.push(address);
                }
                SwarmEvent::ExpiredListenAddr { address, .. } => listen_addrs.retain(|a| a != &address),
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    connected.insert(peer_id);
                    redial.remove(&peer_id);
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    connected.remove(&peer_id);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for addr in info.listen_addrs.into_iter().take(MAX_P2P_ADDRS) {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, addresses, .. }))
                    if !connected.contains(&peer) && connected.len() < TARGET_PEERS =>
                {
                    if let Some(addr) = addresses.iter().next() {
                        let _ = swarm.dial(addr.clone().with(Protocol::P2p(peer)));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                    propagation_source, message_id, message,
                })) => {
                    let verdict = admit_message(state, &cluster, &mut limiter, &message);
                    if matches!(verdict, MessageAcceptance::Reject) {
                        // Beyond gossipsub's own invalid-delivery penalty (which decays fast and
                        // is offset by delivery credit), every rejection costs the sender
                        // application score: ten bad messages reach the graylist.
                        let points = abuse.entry(propagation_source).or_insert(0.0);
                        *points += ABUSE_PENALTY;
                        let _ = swarm.behaviour_mut().gossipsub.set_application_score(&propagation_source, -*points);
                    }
                    swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id, &propagation_source, verdict,
                    );
                }
                _ => {}
            },
        }
    }
    shared.save_snapshot(&state.db);
}

/// Publishes encoded revocations in batches of at most [`MAX_BATCH`].
fn publish_revocations(
    swarm: &mut Swarm<Behaviour>,
    state: &Core,
    topic: &IdentTopic,
    list: Vec<Vec<u8>>,
) {
    for chunk in list.chunks(MAX_BATCH) {
        let batch = RevocationBatch {
            revocations: chunk.to_vec(),
        };
        let bytes = seal(state, REVOCATION_TOPIC, &encode(&batch));
        match swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), bytes)
        {
            Ok(_) => state.metrics.record_gossip("out", REVOCATION_TOPIC),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(err) => tracing::warn!(error = %err, "publishing revocations"),
        }
    }
}

/// Validates one gossip message and applies it; the verdict goes back to gossipsub (which
/// relays accepted messages and penalises the senders of rejected ones).
fn admit_message(
    state: &Core,
    cluster: &ClusterHandle,
    limiter: &mut RateLimiter,
    message: &gossipsub::Message,
) -> MessageAcceptance {
    let metrics = &state.metrics;
    let topic = message.topic.as_str();
    // The one signature check of this message (gossipsub dropped its duplicates already).
    let (signer, data) = match super::envelope::open(&message.data, topic) {
        Ok(opened) => opened,
        Err(super::envelope::EnvelopeError::Malformed) => {
            metrics.record_gossip_rejected("malformed");
            return MessageAcceptance::Reject;
        }
        Err(super::envelope::EnvelopeError::BadSignature) => {
            metrics.record_gossip_rejected("bad_signature");
            return MessageAcceptance::Reject;
        }
    };
    // This node's own message, back through a relay: a restarted node can be offered a
    // heartbeat of its previous run (gossip keeps the last few), which would list it as a
    // member of its own cluster. Everything it published it applied already.
    if signer == state.identity.peer_id() {
        return MessageAcceptance::Ignore;
    }
    let reject = |reason: &'static str| {
        metrics.record_gossip_rejected(reason);
        tracing::debug!(peer = %signer, topic, reason, "gossip message rejected");
        MessageAcceptance::Reject
    };
    if topic == HEALTH_TOPIC {
        if !limiter.admit(signer, HEALTH_TOPIC, MAX_HEARTBEATS_PER_PERIOD) {
            return reject("rate");
        }
        let hb: Heartbeat = match decode(data) {
            Ok(hb) => hb,
            Err(super::messages::MessageError::TooLarge(_)) => return reject("oversize"),
            Err(_) => return reject("malformed"),
        };
        if hb.peer_id != signer.to_bytes() {
            return reject("signer_mismatch");
        }
        if hb.check_bounds().is_err() {
            return reject("bounds");
        }
        // Only an enrolled node is a member, and only as far as its certificate allows.
        let Some(key) = crate::core::identity::peer_key(&signer) else {
            return reject("signer_mismatch");
        };
        if let Err(refusal) = state.admission.admit(&key, &hb) {
            tracing::debug!(peer = %signer, error = %refusal, "heartbeat refused");
            return reject(refusal.label());
        }
        metrics.record_gossip("in", HEALTH_TOPIC);
        // Another list of revocations: send ours if it may hold what the member lacks (it is
        // not smaller). Every member that notices would, so each does with a probability that
        // makes about three senders in the cluster per round.
        let (digest, count) = (
            state.admission.revoked_digest(),
            state.admission.revoked_count(),
        );
        if hb.revoked != digest && count >= hb.revoked_count as usize {
            let alive = cluster.counts().0.max(1);
            if fastrand::usize(..alive) < REVOCATION_SENDERS {
                cluster
                    .shared
                    .revocations_behind
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if hb.emergency_seq < state.emergency.last_seq() {
            cluster
                .shared
                .emergency_behind
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let outcome = cluster.membership().observe(signer, hb, Instant::now());
        match outcome {
            super::membership::Observed::Stale => MessageAcceptance::Ignore,
            super::membership::Observed::Full => MessageAcceptance::Ignore,
            super::membership::Observed::New => {
                cluster.shared.mark_dirty();
                tracing::info!(peer = %signer, "member joined");
                MessageAcceptance::Accept
            }
            super::membership::Observed::Restarted { previous } => {
                cluster.shared.mark_dirty();
                tracing::info!(peer = %signer, previous, "member restarted");
                MessageAcceptance::Accept
            }
            super::membership::Observed::Recovered(from) => {
                tracing::info!(peer = %signer, from = from.as_str(), "member alive again");
                MessageAcceptance::Accept
            }
            super::membership::Observed::Updated => MessageAcceptance::Accept,
        }
    } else if topic == CONTENT_TOPIC {
        if !limiter.admit(signer, CONTENT_TOPIC, MAX_ANNOUNCEMENTS_PER_PERIOD) {
            return reject("rate");
        }
        let ann: ContentAnnouncement = match decode(data) {
            Ok(a) => a,
            Err(super::messages::MessageError::TooLarge(_)) => return reject("oversize"),
            Err(_) => return reject("malformed"),
        };
        if ann.peer_id != signer.to_bytes() {
            return reject("signer_mismatch");
        }
        if mhc_manifest::ContentId::new(ann.id.clone()).is_err() {
            return reject("bounds");
        }
        // Announcements come from origins that are members. A sender not (yet) a member is
        // ignored, not held guilty: its first heartbeat may still be on its way, and heartbeats
        // list held content anyway.
        match cluster.membership().get(&signer).map(|m| m.heartbeat.role) {
            None => return MessageAcceptance::Ignore,
            Some(WireRole::Origin) => {}
            Some(_) => return reject("claim"),
        }
        metrics.record_gossip("in", CONTENT_TOPIC);
        cluster.shared.record_announcement(KnownContent {
            id: ann.id,
            version: ann.version,
            manifest_hash: ann.manifest_hash,
            mesh_root: ann.mesh_root,
            announced_by: signer,
            received_at_ms: state.clock.now_ms(),
            sent_at_ms: ann.sent_at_ms,
        });
        MessageAcceptance::Accept
    } else if topic == EMERGENCY_TOPIC {
        if !limiter.admit(signer, EMERGENCY_TOPIC, MAX_EMERGENCY_PER_PERIOD) {
            return reject("rate");
        }
        // The operator's signature is the authority, but only members' publications are
        // looked at (a stranger's copy of a genuine command arrives from members too).
        if !is_member(state, cluster, &signer) {
            return MessageAcceptance::Ignore;
        }
        metrics.record_gossip("in", EMERGENCY_TOPIC);
        match cluster.obey(state, data, "gossip") {
            Ok(()) => MessageAcceptance::Accept,
            // Already applied (another peer relayed it first) or older: harmless, not relayed.
            Err(crate::core::emergency::Rejected::Stale { .. }) => MessageAcceptance::Ignore,
            Err(_) => reject("emergency"),
        }
    } else if topic == REVOCATION_TOPIC {
        if !limiter.admit(signer, REVOCATION_TOPIC, MAX_REVOCATION_BATCHES_PER_PERIOD) {
            return reject("rate");
        }
        if !is_member(state, cluster, &signer) {
            return MessageAcceptance::Ignore;
        }
        let batch: RevocationBatch = match decode(data) {
            Ok(b) => b,
            Err(super::messages::MessageError::TooLarge(_)) => return reject("oversize"),
            Err(_) => return reject("malformed"),
        };
        if batch.check_bounds().is_err() {
            return reject("bounds");
        }
        metrics.record_gossip("in", REVOCATION_TOPIC);
        for bytes in &batch.revocations {
            match cluster.revoke(state, bytes, "gossip") {
                Ok(_) => {}
                // Signed by an operator this node does not trust: a cluster whose nodes trust
                // different operators, not a lie of the sender.
                Err(crate::core::admission::RevokeError::Invalid(
                    mhc_transport::gossip::revocation::RevocationError::UnknownOperator(_),
                )) => {}
                Err(crate::core::admission::RevokeError::Invalid(_)) => {
                    return reject("revocation")
                }
                Err(_) => return MessageAcceptance::Ignore,
            }
        }
        // Relayed also when this node knew it all: the member that is behind may be further
        // on (gossipsub drops copies of one message, so this does not loop).
        MessageAcceptance::Accept
    } else {
        MessageAcceptance::Ignore
    }
}

/// Whether `peer` is a member whose key is not revoked: only such members' copies of operator
/// statements are looked at.
fn is_member(state: &Core, cluster: &ClusterHandle, peer: &PeerId) -> bool {
    cluster.membership().get(peer).is_some()
        && crate::core::identity::peer_key(peer).is_some_and(|k| !state.admission.is_revoked(&k))
}

/// Dials members we know but are not connected to, with exponential back-off per peer, so a
/// healed partition or a restarted node reconnects without waiting for the DHT.
fn maintain_connections(
    swarm: &mut Swarm<Behaviour>,
    shared: &ClusterShared,
    connected: &HashSet<PeerId>,
    redial: &mut HashMap<PeerId, Redial>,
) {
    if connected.len() >= TARGET_PEERS {
        return;
    }
    let now = Instant::now();
    let targets: Vec<(PeerId, Vec<Multiaddr>)> = {
        let membership = shared.membership.lock();
        membership
            .members()
            .filter(|m| !connected.contains(&m.peer_id))
            .map(|m| {
                let addrs = m
                    .heartbeat
                    .addrs
                    .p2p
                    .iter()
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                    .collect();
                (m.peer_id, addrs)
            })
            .collect()
    };
    for (peer, addrs) in targets {
        let entry = redial.entry(peer).or_insert(Redial {
            next: now,
            backoff: REDIAL_MIN,
        });
        if entry.next > now || addrs.is_empty() {
            continue;
        }
        entry.next = now + entry.backoff;
        entry.backoff = (entry.backoff * 2).min(REDIAL_MAX);
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .build();
        let _ = swarm.dial(opts);
    }
    redial.retain(|p, _| !connected.contains(p));
}

/// What this node's heartbeats say of its writes: an origin's standing in its election.
fn origin_writes(state: &Core) -> OriginWrites {
    if state.config.role != mhc_config::Role::Origin {
        return OriginWrites::default();
    }
    match state.writes.may_write() {
        Ok(epoch) => OriginWrites {
            accepts: true,
            epoch,
        },
        Err(not_primary) => OriginWrites {
            accepts: false,
            epoch: not_primary.0.epoch(),
        },
    }
}

fn build_heartbeat(
    state: &Core,
    advertised: &dyn Advertise,
    bound: &BoundAddrs,
    seq: u64,
    listen_addrs: &[Multiaddr],
    load_samples: &mut VecDeque<(Instant, u64)>,
) -> Heartbeat {
    let c = &state.config;
    let now = Instant::now();
    let sent = state.metrics.response_bytes();
    load_samples.push_back((now, sent));
    while load_samples
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > LOAD_WINDOW)
    {
        load_samples.pop_front();
    }
    let bytes_out_per_s = match load_samples.front() {
        Some((t0, b0)) if now > *t0 => {
            (sent.saturating_sub(*b0) as f64 / now.duration_since(*t0).as_secs_f64()) as u64
        }
        _ => 0,
    };
    let disk = state.store.disk();
    let cache_fill_permille =
        (disk.used_bytes().saturating_mul(1000) / disk.capacity_bytes().max(1)).min(1000) as u16;
    let p2p: Vec<String> = listen_addrs
        .iter()
        .filter(|a| !is_unspecified(a))
        .take(MAX_P2P_ADDRS)
        .map(ToString::to_string)
        .collect();
    let ip = advertised_ip(listen_addrs);
    let advertise = |addr: std::net::SocketAddr| advertised_addr(addr, ip).to_string();
    let (contents, contents_total) = advertised.contents(MAX_HEARTBEAT_CONTENTS);
    Heartbeat {
        peer_id: state.identity.peer_id().to_bytes(),
        incarnation: state.incarnation,
        seq,
        sent_at_ms: state.clock.now_ms(),
        role: crate::role::wire_role(c.role),
        region: c.region.clone(),
        location: c.location.as_ref().map(|l| (l.lat, l.lon)),
        addrs: PlaneAddrs {
            http: viewer_address(state, advertise(bound.http), bound.http.port()),
            quic: advertise(bound.quic),
            iroh: advertise(bound.iroh),
            p2p,
            swim: advertise(bound.swim),
        },
        mode: state.mode(),
        load: Load {
            connections: state.metrics.connections_open().max(0) as u32,
            bytes_out_per_s,
            cache_fill_permille,
        },
        contents,
        contents_total,
        software: env!("CARGO_PKG_VERSION").into(),
        interval_ms: c
            .cluster
            .heartbeat_interval
            .as_millis()
            .min(u32::MAX as u128) as u32,
        replicating: advertised
            .replicating()
            .into_iter()
            .take(MAX_HEARTBEAT_REPLICATING)
            .collect(),
        plays: advertised.plays(),
        emergency_seq: state.emergency.last_seq(),
        downlink: c.satellite.downlink.is_some(),
        certificate: state
            .enrollment
            .as_ref()
            .map(|e| e.encoded.clone())
            .unwrap_or_default(),
        revoked: state.admission.revoked_digest(),
        revoked_count: state.admission.revoked_count() as u32,
        writes: origin_writes(state),
    }
}

/// The first specified IP address the libp2p listener is bound to: what heartbeats give in
/// place of an unspecified one (`0.0.0.0`).
fn advertised_ip(listen_addrs: &[Multiaddr]) -> Option<std::net::IpAddr> {
    listen_addrs.iter().find_map(|a| {
        a.iter().find_map(|p| match p {
            Protocol::Ip4(ip) if !ip.is_unspecified() => Some(std::net::IpAddr::V4(ip)),
            Protocol::Ip6(ip) if !ip.is_unspecified() => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        })
    })
}

/// `addr` as heartbeats advertise it: an unspecified IP replaced by `ip`.
fn advertised_addr(
    addr: std::net::SocketAddr,
    ip: Option<std::net::IpAddr>,
) -> std::net::SocketAddr {
    match (addr.ip().is_unspecified(), ip) {
        (true, Some(ip)) => std::net::SocketAddr::new(ip, addr.port()),
        _ => addr,
    }
}

/// The viewer address heartbeats advertise: the bound one, unless the node's certificate lists
/// viewer hosts and does not allow it; then the first of them, with the bound port when it
/// names none (a certificate for `edge1.example.net` makes the node advertise that name).
fn viewer_address(core: &Core, bound: String, port: u16) -> String {
    let Some(enrollment) = &core.enrollment else {
        return bound;
    };
    let c = &enrollment.signed.certificate;
    if c.allows_http(&bound) {
        return bound;
    }
    match c.http.first() {
        None => String::new(),
        Some(entry) if split_host_port(entry).is_some() => entry.clone(),
        Some(host) => format!("{host}:{port}"),
    }
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
