//! A hostile libp2p peer, written here with libp2p itself, attacks a node's control plane:
//! heartbeats signed by one key claiming another peer, forged signatures, unparseable and
//! oversized payloads, heartbeats with no certificate, and a flood from an enrolled member.
//! Each is rejected and counted, the attacker's score drops, memory stays bounded, and the
//! node keeps serving. And an enrolled member that offers a content at version `u64::MAX`
//! under a made-up root: the mesh replicates the real version, and the lie is counted.

use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions};
use mhc_transport::gossip::cert::{NodeCertificate, SignedCertificate};
use mhc_transport::gossip::envelope::seal;
use mhc_transport::gossip::messages::{
    encode, ContentAnnouncement, Heartbeat, HeldContent, Load, Mode, PlaneAddrs, WireRole,
    CONTENT_TOPIC, HEALTH_TOPIC, MAX_MESSAGE_BYTES, MESSAGE_FORMAT,
};

/// A hostile peer: a libp2p swarm and the ed25519 key of its identity (to seal envelopes as
/// a real node would, or not).
struct Evil {
    swarm: Swarm<gossipsub::Behaviour>,
    key: ed25519_dalek::SigningKey,
}

impl Evil {
    /// Publishes `payload` sealed with its own key.
    fn send(&mut self, payload: &[u8]) {
        let sealed = seal(&self.key, HEALTH_TOPIC, 1, payload);
        let _ = self
            .swarm
            .behaviour_mut()
            .publish(IdentTopic::new(HEALTH_TOPIC), sealed);
    }

    /// Publishes `payload` on `topic`, sealed with its own key.
    fn send_on(&mut self, topic: &str, payload: &[u8]) {
        let sealed = seal(&self.key, topic, 1, payload);
        let _ = self
            .swarm
            .behaviour_mut()
            .publish(IdentTopic::new(topic), sealed);
    }

    /// Publishes raw bytes, no envelope.
    fn send_raw(&mut self, data: Vec<u8>) {
        let _ = self
            .swarm
            .behaviour_mut()
            .publish(IdentTopic::new(HEALTH_TOPIC), data);
    }
}

fn hostile_swarm(seed: [u8; 32]) -> Swarm<gossipsub::Behaviour> {
    let keypair = identity::Keypair::ed25519_from_bytes(seed).unwrap();
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_: &identity::Keypair| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::Anonymous)
                // Content-addressed ids, as the nodes use.
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(&blake3::hash(&m.data).as_bytes()[..20])
                })
                // The attacker's own limit is generous, to push oversized messages at the node.
                .max_transmit_size(256 * 1024)
                .build()
                .unwrap();
            gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config).unwrap()
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn heartbeat(claimed: PeerId, seq: u64) -> Vec<u8> {
    encode(&heartbeat_with(claimed, seq, Vec::new()))
}

fn heartbeat_with(claimed: PeerId, seq: u64, certificate: Vec<u8>) -> Heartbeat {
    Heartbeat {
        peer_id: claimed.to_bytes(),
        incarnation: 1,
        seq,
        sent_at_ms: 0,
        role: WireRole::Edge,
        region: "nowhere".into(),
        location: None,
        addrs: PlaneAddrs::default(),
        mode: Mode::Normal,
        load: Load::default(),
        contents: Vec::new(),
        contents_total: 0,
        software: "evil".into(),
        interval_ms: 1000,
        replicating: Vec::new(),
        plays: Vec::new(),
        emergency_seq: 0,
        downlink: false,
        certificate,
        revoked: [0; 32],
        revoked_count: 0,
        writes: Default::default(),
    }
}

/// A certificate from `operator` for `key` as an edge in the region the heartbeats claim.
fn certificate_for(
    key: &ed25519_dalek::SigningKey,
    operator: &ed25519_dalek::SigningKey,
) -> Vec<u8> {
    let now = mhc_clock::Clock::system().now_ms();
    let cert = NodeCertificate {
        node: key.verifying_key().to_bytes(),
        role: WireRole::Edge,
        region: "nowhere".into(),
        area: None,
        http: Vec::new(),
        not_before_ms: now - 60_000,
        not_after_ms: now + 3_600_000,
        serial: 1,
        operator: [0; 32],
    };
    SignedCertificate::sign(cert, operator).encode()
}

/// Drives the swarm for `d`, so queued messages go out and events are answered.
async fn pump(swarm: &mut Swarm<gossipsub::Behaviour>, d: Duration) {
    let _ = tokio::time::timeout(d, async {
        loop {
            swarm.select_next_some().await;
        }
    })
    .await;
}

/// A fresh attacker identity connected to the victim and subscribed to the health topic.
async fn attacker(victim_addr: &Multiaddr, victim_id: PeerId) -> Evil {
    let seed: [u8; 32] =
        *blake3::hash(format!("{:?}", std::time::Instant::now()).as_bytes()).as_bytes();
    let mut evil = hostile_swarm(seed);
    evil.behaviour_mut()
        .subscribe(&IdentTopic::new(HEALTH_TOPIC))
        .unwrap();
    evil.dial(victim_addr.clone()).unwrap();
    // Wait until the victim has told us it subscribes to the health topic.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. }) =
                evil.select_next_some().await
            {
                if peer_id == victim_id {
                    break;
                }
            }
        }
    })
    .await
    .expect("victim subscribed");
    Evil {
        swarm: evil,
        key: ed25519_dalek::SigningKey::from_bytes(&seed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_rejected_penalised_and_harmless() {
    let mut c = Cluster::new();
    c.start_with("victim", NodeOptions::new("edge").heartbeat_ms(500));
    let victim_addr: Multiaddr = c.node(0).p2p[0].parse().unwrap();
    let victim_id: PeerId = c.node(0).peer_id.clone().unwrap().parse().unwrap();
    let rejected = |reason: &str| {
        c.node(0)
            .metric(&format!("mhc_gossip_rejected_total{{reason=\"{reason}\"}}"))
            .unwrap_or(0.0)
    };
    let score_of = |peer: PeerId| {
        c.node(0).cluster_view().and_then(|v| {
            v["gossip_peers"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["peer_id"] == peer.to_string()).cloned())
                .and_then(|p| p["score"].as_f64())
        })
    };

    // 1. Signed by one key, claiming to be another peer. Each attack uses a fresh identity:
    //    after two rejected messages a peer is graylisted and nothing more it sends is looked at.
    let mut evil = attacker(&victim_addr, victim_id).await;
    let someone = PeerId::random();
    evil.send(&heartbeat(someone, 1));
    pump(&mut evil.swarm, Duration::from_millis(300)).await;
    assert!(wait_until(Duration::from_secs(5), || rejected(
        "signer_mismatch"
    ) >= 1.0));
    let view = c.node(0).cluster_view().unwrap();
    assert!(
        !view.to_string().contains(&someone.to_string()),
        "impostor admitted"
    );
    let impostor = *evil.swarm.local_peer_id();
    assert!(
        wait_until(Duration::from_secs(5), || score_of(impostor)
            .is_some_and(|s| s < 0.0)),
        "impostor score: {:?}",
        score_of(impostor)
    );

    // 2. A forged signature: its own heartbeat, one byte of the signature changed.
    let mut evil = attacker(&victim_addr, victim_id).await;
    let me = *evil.swarm.local_peer_id();
    let mut forged = seal(&evil.key, HEALTH_TOPIC, 1, &heartbeat(me, 1));
    forged[50] ^= 1;
    evil.send_raw(forged);
    pump(&mut evil.swarm, Duration::from_millis(300)).await;
    assert!(wait_until(Duration::from_secs(5), || rejected(
        "bad_signature"
    ) >= 1.0));
    assert!(
        c.node(0).member_state(&me.to_string()).is_none(),
        "forgery admitted"
    );

    // 3. Unparseable: sealed garbage, and garbage without an envelope.
    let mut evil = attacker(&victim_addr, victim_id).await;
    evil.send(b"\x02this is not postcard at all");
    evil.send_raw(b"not even an envelope".to_vec());
    pump(&mut evil.swarm, Duration::from_millis(300)).await;
    assert!(wait_until(Duration::from_secs(5), || rejected("malformed") >= 2.0));

    // 4. Over our size limit but under gossipsub's frame limit; 5. far over the frame limit,
    //    dropped by the codec before any validation.
    let mut evil = attacker(&victim_addr, victim_id).await;
    let mut oversize = vec![MESSAGE_FORMAT];
    oversize.extend(std::iter::repeat_n(0x42, MAX_MESSAGE_BYTES + 100));
    evil.send(&oversize);
    pump(&mut evil.swarm, Duration::from_millis(300)).await;
    evil.send_raw(vec![7u8; 200_000]);
    pump(&mut evil.swarm, Duration::from_millis(300)).await;
    assert!(wait_until(Duration::from_secs(5), || rejected("oversize") >= 1.0));
    assert_eq!(c.node(0).get("/healthz").status, 200);

    // 6. Well-formed heartbeats from a key no operator enrolled: refused, never a member.
    let mut evil = attacker(&victim_addr, victim_id).await;
    let stranger = *evil.swarm.local_peer_id();
    evil.send(&heartbeat(stranger, 1));
    pump(&mut evil.swarm, Duration::from_millis(300)).await;
    assert!(wait_until(Duration::from_secs(5), || rejected(
        "not_enrolled"
    ) >= 1.0));
    assert!(
        c.node(0).member_state(&stranger.to_string()).is_none(),
        "an unenrolled key became a member"
    );

    // 7. Enrolled keys that claim what their certificate does not allow: a place, and a
    // viewer address it does not list (one that would take redirected viewers anywhere).
    // Each is refused and never a member, so never routed to.
    type Lie = fn(&mut Heartbeat);
    let lies: [(&str, Lie); 2] = [
        ("a place", |h| h.location = Some((48.8566, 2.3522))),
        ("a viewer address", |h| {
            h.addrs.http = "203.0.113.9:80".into()
        }),
    ];
    for (n, (what, lie)) in lies.into_iter().enumerate() {
        let mut evil = attacker(&victim_addr, victim_id).await;
        let liar = *evil.swarm.local_peer_id();
        let mut hb = heartbeat_with(liar, 1, certificate_for(&evil.key, &c.operator()));
        lie(&mut hb);
        evil.send(&encode(&hb));
        pump(&mut evil.swarm, Duration::from_millis(300)).await;
        assert!(wait_until(Duration::from_secs(5), || rejected("claim")
            >= (n + 1) as f64));
        assert!(
            c.node(0).member_state(&liar.to_string()).is_none(),
            "a member claiming {what} beyond its certificate was admitted"
        );
    }

    // 8. A flood of well-formed heartbeats from a member (enrolled by the cluster's operator).
    let mut evil = attacker(&victim_addr, victim_id).await;
    let flooder = *evil.swarm.local_peer_id();
    let flooder_cert = certificate_for(&evil.key, &c.operator());
    let rss_before = c.node(0).rss_kb();
    let accepted = || {
        c.node(0)
            .metric("mhc_gossip_messages_total{direction=\"in\",topic=\"mhc/health/1\"}")
            .unwrap_or(0.0)
    };
    let accepted_before = accepted();
    for seq in 1..=3000u64 {
        evil.send(&encode(&heartbeat_with(flooder, seq, flooder_cert.clone())));
        if seq % 100 == 0 {
            pump(&mut evil.swarm, Duration::from_millis(20)).await;
            assert_eq!(
                c.node(0).get("/healthz").status,
                200,
                "victim stopped serving"
            );
        }
    }
    pump(&mut evil.swarm, Duration::from_secs(1)).await;
    let rss_after = c.node(0).rss_kb();
    assert!(rejected("rate") >= 2.0, "flood not rate-limited");
    assert!(
        rss_after < rss_before + 50 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB under the flood"
    );
    // The first rejections graylist the flooder, after which gossipsub drops its messages
    // unread: of 3000 heartbeats only a handful were ever applied.
    let applied = accepted() - accepted_before;
    assert!(
        applied < 100.0,
        "{applied} of 3000 flood heartbeats were applied"
    );
    assert!(
        score_of(flooder).is_none_or(|s| s < 0.0),
        "flooder score after the flood: {:?}",
        score_of(flooder)
    );
    assert_eq!(c.node(0).get("/healthz").status, 200);

    eprintln!(
        "rejected: signer_mismatch {} bad_signature {} malformed {} oversize {} rate {}; flood applied {applied}/3000; flooder score {:?}; rss {rss_before} -> {rss_after} kB",
        rejected("signer_mismatch"),
        rejected("bad_signature"),
        rejected("malformed"),
        rejected("oversize"),
        rejected("rate"),
        score_of(flooder)
    );
    // A well-behaved peer is unaffected.
    let boot = c.node(0).p2p.clone();
    let friend = c.start_with(
        "friend",
        NodeOptions::new("edge").heartbeat_ms(500).bootstrap(&boot),
    );
    let friend = c.node(friend).peer_id.clone().unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        c.node(0).member_state(&friend).as_deref() == Some("alive")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_offering_a_version_nobody_signed_shadows_nothing_on_the_mesh() {
    let mut c = Cluster::new();
    let o = c.start_with("origin", NodeOptions::new("origin").heartbeat_ms(250));
    let dir = c.path().join("song");
    mhc_tests::write_synthetic_rendition(&dir, 5, 50_000, 4);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    let trust = format!(
        "[trust]\npublishers = [\"{}\"]\n",
        c.node(o).public_key.as_deref().unwrap()
    );
    let boot = c.node(o).p2p.clone();
    let m = c.start_with(
        "mesh",
        NodeOptions::new("mesh")
            .heartbeat_ms(250)
            .bootstrap(&boot)
            .extra(&trust),
    );
    let mesh_addr: Multiaddr = c.node(m).p2p[0].parse().unwrap();
    let mesh_id: PeerId = c.node(m).peer_id.clone().unwrap().parse().unwrap();
    let mut evil = attacker(&mesh_addr, mesh_id).await;
    let liar = *evil.swarm.local_peer_id();
    let cert = certificate_for(&evil.key, &c.operator());
    let fake_root = [7u8; 32];
    let lie = |seq: u64| {
        let mut hb = heartbeat_with(liar, seq, cert.clone());
        hb.contents = vec![HeldContent {
            id: "song".into(),
            version: u64::MAX,
            mesh_root: fake_root,
            bytes: 1,
        }];
        hb.contents_total = 1;
        encode(&hb)
    };
    let mut seq = 0;
    let mut beat = |evil: &mut Evil| {
        seq += 1;
        evil.send(&lie(seq));
    };
    // The liar is a member (its certificate is genuine) before the content is pinned.
    let mut member = false;
    for _ in 0..40 {
        beat(&mut evil);
        pump(&mut evil.swarm, Duration::from_millis(250)).await;
        if c.node(m).member_state(&liar.to_string()).as_deref() == Some("alive") {
            member = true;
            break;
        }
    }
    assert!(member, "the enrolled liar never became a member");
    // It also announces the version, as only origins may.
    let announcement = ContentAnnouncement {
        peer_id: liar.to_bytes(),
        id: "song".into(),
        version: u64::MAX,
        manifest_hash: [9; 32],
        publisher: [9; 32],
        mesh_root: fake_root,
        sent_at_ms: 0,
    };
    evil.send_on(CONTENT_TOPIC, &encode(&announcement));
    assert_success(&c.node(m).pin("song"), "pin");
    let replicated = |c: &Cluster| {
        c.node(m)
            .metric("mhc_mesh_replications_total")
            .unwrap_or(0.0)
            >= 1.0
    };
    for _ in 0..120 {
        if replicated(&c) {
            break;
        }
        beat(&mut evil);
        pump(&mut evil.swarm, Duration::from_millis(250)).await;
    }
    let mesh = c.node(m);
    assert!(
        replicated(&c),
        "the real version was shadowed:\n{}",
        mesh.log_tail()
    );
    assert!(
        mesh.metric("mhc_mesh_rejected_total").unwrap_or(0.0) >= 1.0,
        "the fake offer was not counted"
    );
    assert!(
        mesh.metric("mhc_gossip_rejected_total{reason=\"claim\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "the member's announcement was not refused"
    );
    // What the mesh node holds and serves is version 1, byte for byte, without the origin.
    c.node_mut(o).kill9();
    let mesh = c.node(m);
    let playlist = mesh.get("/v1/content/song/index.m3u8");
    assert_eq!(playlist.status, 200);
    assert_eq!(playlist.header("x-mhc-content-version"), Some("1"));
    for i in 0..5 {
        let r = mesh.get(&format!("/v1/content/song/seg/{i}.ts"));
        let file = std::fs::read(dir.join(format!("seg_{i:03}.ts"))).unwrap();
        assert!(r.status == 200 && r.body == file, "segment {i}");
    }
}
