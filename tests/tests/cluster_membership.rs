//! The control plane on real processes: a 10-node cluster converges, a SIGKILLed node is dead
//! everywhere within `dead_after_missed` periods and alive again soon after its restart, content
//! announcements reach everyone, and a restarted node finds its peers from its snapshot alone.

use std::time::{Duration, Instant};

use mhc_tests::{assert_success, wait_until, write_synthetic_rendition, Cluster, NodeOptions};

/// Starts `n` nodes (node 0 an origin, the rest edges) bootstrapping from node 0.
fn cluster_of(n: usize) -> Cluster {
    let mut c = Cluster::new();
    c.start_with("n0", NodeOptions::new("origin"));
    let boot = c.node(0).p2p.clone();
    for i in 1..n {
        c.start_with(&format!("n{i}"), NodeOptions::new("edge").bootstrap(&boot));
    }
    c
}

/// The first member of `node`'s cluster view that matches.
fn member(
    node: &mhc_tests::NodeProcess,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let view = node.cluster_view().expect("node answers");
    view["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| pick(m))
        .expect("member listed")
        .clone()
}

#[test]
fn ten_nodes_converge_detect_a_crash_and_see_the_restart() {
    let mut c = cluster_of(10);
    let period = c.node(0).heartbeat();
    assert!(
        wait_until(Duration::from_secs(30), || c.all_see_alive(None, 9)),
        "cluster did not converge: {:?}",
        c.nodes
            .iter()
            .map(|n| n.alive_members())
            .collect::<Vec<_>>()
    );
    let view = c.node(3).cluster_view().unwrap();
    assert_eq!(view["counts"]["alive"], 10);
    let origin = member(c.node(3), |m| m["role"] == "origin");
    assert_eq!(origin["addrs"]["http"], c.node(0).addr().to_string());
    assert!(origin["incarnation"].as_u64().unwrap() >= 1);

    // SIGKILL node 5: dead on every other node within dead_after_missed periods (plus the
    // sweep granularity and the heartbeat that may have been in flight: one more period), by
    // whichever detector is first: heartbeat silence or SWIM (tests/tests/cluster_swim.rs
    // shows SWIM alone).
    let victim = c.node(5).peer_id.clone().unwrap();
    c.node_mut(5).kill9();
    let killed_at = Instant::now();
    let dead_everywhere = || c.all_list(5, &victim, "dead");
    assert!(
        wait_until(period * 12, dead_everywhere),
        "victim not dead everywhere"
    );
    let took = killed_at.elapsed();
    eprintln!("killed node dead everywhere after {took:?}");
    assert!(
        took <= period * 7,
        "dead after {took:?}, more than dead_after_missed (6) + 1 periods of {period:?}"
    );
    let m = member(c.node(1), |m| m["peer_id"] == victim.as_str());
    let reason = m["reason"].as_str().unwrap();
    assert!(
        reason.contains("no heartbeat") || reason.contains("failure detector"),
        "{m}"
    );
    assert_eq!(
        c.node(1).metric("mhc_cluster_members{state=\"dead\"}"),
        Some(1.0)
    );

    // Restart: same identity, higher incarnation, alive everywhere within 3 periods.
    c.node_mut(5).spawn();
    let restarted_at = Instant::now();
    assert!(
        wait_until(period * 20, || c.all_see_alive(None, 9)),
        "restarted node not alive everywhere"
    );
    let took = restarted_at.elapsed();
    eprintln!("restarted node alive everywhere after {took:?}");
    assert!(
        took <= period * 3,
        "alive again after {took:?} (> 3 periods of {period:?})"
    );
    assert_eq!(c.node(5).peer_id.as_deref(), Some(victim.as_str()));
    let m = member(c.node(2), |m| m["peer_id"] == victim.as_str());
    assert!(m["reason"].as_str().unwrap().contains("restarted"), "{m}");
    assert_eq!(m["incarnation"], 2);

    // A publish at the origin is announced to every node.
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 2, 1_000, 1);
    assert_success(&c.node(0).ingest("song", &dir), "ingest");
    assert!(
        wait_until(Duration::from_secs(10), || c.nodes.iter().skip(1).all(
            |n| {
                n.cluster_view().is_some_and(|v| {
                    v["announced"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x["id"] == "song"))
                })
            }
        )),
        "announcement did not reach every node"
    );
    // Heartbeats carry what the origin holds.
    let origin = member(c.node(4), |m| m["role"] == "origin");
    assert!(
        wait_until(Duration::from_secs(5), || {
            c.node(4).cluster_view().is_some_and(|v| {
                v["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["role"] == "origin" && m["contents"] == 1)
            })
        }),
        "{origin}"
    );
    assert!(
        c.node(4)
            .metric("mhc_gossip_messages_total{direction=\"in\",topic=\"mhc/health/1\"}")
            .unwrap()
            > 10.0
    );
}

#[test]
fn a_restarted_node_finds_its_peers_from_its_snapshot() {
    let mut c = cluster_of(3);
    assert!(wait_until(Duration::from_secs(20), || c.all_see_alive(None, 2)));
    // Give the snapshot (rewritten within a second of a change) time to land.
    std::thread::sleep(Duration::from_millis(1500));
    c.node_mut(2).stop();
    // No bootstrap any more: only the snapshot knows where the others are.
    c.node_mut(2).options.bootstrap.clear();
    c.node(2).write_config();
    c.node_mut(2).spawn();
    assert!(
        wait_until(Duration::from_secs(15), || c.all_see_alive(None, 2)),
        "node 2 did not rejoin from its snapshot: {}",
        c.node(2).log_tail()
    );
}
