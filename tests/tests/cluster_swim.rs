//! SWIM failure detection on real processes (issue 22): members probe each other over their
//! own UDP sockets (`listen.swim`), and a SIGKILLed node is declared dead everywhere by the
//! failure detector, with heartbeat silence set so slow that it cannot be what found it. A
//! restarted node is a member again and stays one. Datagrams that are not signed, or signed by
//! a key that is no member, are dropped and counted, and change nothing.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use mhc_tests::{wait_until, Cluster, NodeOptions};

/// Heartbeats every 300 ms, but a member is dead by their silence only after 100 periods
/// (30 s): within the 10 s the test waits, only SWIM can declare a member dead.
fn slow_heartbeat_detection(role: &str) -> NodeOptions {
    let mut o = NodeOptions::new(role);
    o.suspect_after = 50;
    o.dead_after = 100;
    o
}

/// What `node` lists of `peer`.
fn listed(node: &mhc_tests::NodeProcess, peer: &str) -> Option<serde_json::Value> {
    node.cluster_view()?["members"]
        .as_array()?
        .iter()
        .find(|m| m["peer_id"] == peer)
        .cloned()
}

#[test]
fn the_failure_detector_declares_a_killed_node_dead_everywhere() {
    let mut c = Cluster::new();
    c.start_with("n0", slow_heartbeat_detection("origin"));
    let boot = c.node(0).p2p.clone();
    for i in 1..6 {
        c.start_with(
            &format!("n{i}"),
            slow_heartbeat_detection("edge").bootstrap(&boot),
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || c.all_see_alive(None, 5)),
        "cluster did not converge"
    );
    // Every member probes and is probed.
    assert!(wait_until(Duration::from_secs(5), || c.nodes.iter().all(
        |n| {
            n.metric("mhc_swim_packets_total{direction=\"in\"}")
                .is_some_and(|v| v > 0.0)
                && n.metric("mhc_swim_packets_total{direction=\"out\"}")
                    .is_some_and(|v| v > 0.0)
        }
    )));
    let victim = c.node(3).peer_id.clone().unwrap();
    let swim_addr = listed(c.node(0), &victim).unwrap()["addrs"]["swim"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(swim_addr.starts_with("127.0.0.1:"), "{swim_addr}");

    c.node_mut(3).kill9();
    let killed_at = Instant::now();
    let dead_everywhere = || c.all_list(3, &victim, "dead");
    assert!(
        wait_until(Duration::from_secs(10), dead_everywhere),
        "killed node not dead everywhere within 10 s"
    );
    eprintln!(
        "killed node dead everywhere after {:?} (SWIM)",
        killed_at.elapsed()
    );
    for n in c
        .nodes
        .iter()
        .filter(|n| n.peer_id.as_deref() != Some(&victim))
    {
        let m = listed(n, &victim).unwrap();
        assert!(
            m["reason"].as_str().unwrap().contains("failure detector"),
            "{m}"
        );
    }

    // Restarted: a member again everywhere (its heartbeat), and not declared down again by
    // what the detector knew of its previous run.
    c.node_mut(3).spawn();
    assert!(
        wait_until(Duration::from_secs(15), || c.all_see_alive(None, 5)),
        "restarted node not alive everywhere"
    );
    std::thread::sleep(Duration::from_secs(4));
    let declared = |n: &mhc_tests::NodeProcess| {
        std::fs::read_to_string(&n.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("declared down by the failure detector"))
            .count()
    };
    // Each other node declared the victim down once, and no one else ever.
    for (i, n) in c.nodes.iter().enumerate() {
        assert_eq!(
            declared(n),
            usize::from(i != 3),
            "node {i}:\n{}",
            n.log_tail()
        );
    }

    // Strangers' datagrams: dropped, counted, harmless.
    let target = listed(c.node(1), c.node(0).peer_id.as_deref().unwrap()).unwrap()["addrs"]["swim"]
        .as_str()
        .unwrap()
        .to_owned();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(b"not an envelope at all", &target).unwrap();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let sealed = mhc_transport::gossip::envelope::seal(&stranger, "mhc/swim/1", 0, b"ping");
    socket.send_to(&sealed, &target).unwrap();
    let n0 = c.node(0);
    assert!(
        wait_until(Duration::from_secs(5), || {
            n0.metric("mhc_swim_dropped_total{reason=\"bad_signature\"}") >= Some(1.0)
                && n0.metric("mhc_swim_dropped_total{reason=\"not_member\"}") >= Some(1.0)
        }),
        "stranger datagrams not counted"
    );
    assert!(
        wait_until(Duration::from_secs(5), || c.all_see_alive(None, 5)),
        "{:?}",
        c.nodes
            .iter()
            .map(|n| n.cluster_view().map(|v| v["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| format!("{} {} {}", m["peer_id"], m["state"], m["reason"]))
                .collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    );
}
