//! Admission on real processes: a node with a fresh key that no operator enrolled reaches the
//! gossip, placed right next to the viewers, and is never a member nor a routing answer; a node
//! refuses to start with a certificate that has expired or grants another role; and a revoked
//! edge is dead on every member at once, refused after restarts (its own and theirs), and a
//! member that was away learns of it.

use std::process::Command;
use std::time::{Duration, Instant};

use mhc_tests::{
    assert_success, node_binary, operator_key, sample_dir, wait_until, Cluster, NodeOptions,
};

const HEARTBEAT_MS: u64 = 300;

#[test]
fn an_unenrolled_node_is_never_a_member_nor_routed_to() {
    let mut c = Cluster::new();
    let o = c.start_with(
        "origin",
        NodeOptions::new("origin")
            .heartbeat_ms(HEARTBEAT_MS)
            .placed("eu", 48.8566, 2.3522),
    );
    assert_success(&c.node(o).ingest("sample", &sample_dir()), "ingest");
    let boot = c.node(o).p2p.clone();
    let key = c.node(o).public_key.clone().unwrap();
    let trust = format!("[trust]\npublishers = [\"{key}\"]\n");
    let edge = c.start_with(
        "edge",
        NodeOptions::new("edge")
            .heartbeat_ms(HEARTBEAT_MS)
            .placed("eu", 51.5074, -0.1278)
            .bootstrap(&boot)
            .extra(&trust),
    );
    // The stranger claims to be an edge right where the viewer is (the origin's own place).
    let stranger = c.start_with(
        "stranger",
        NodeOptions::new("edge")
            .heartbeat_ms(HEARTBEAT_MS)
            .placed("eu", 48.8566, 2.3522)
            .bootstrap(&boot)
            .extra(&trust)
            .unenrolled(),
    );
    let (edge_id, stranger_id) = (
        c.node(edge).peer_id.clone().unwrap(),
        c.node(stranger).peer_id.clone().unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || c
            .node(o)
            .member_state(&edge_id)
            .as_deref()
            == Some("alive")),
        "the enrolled edge never became a member"
    );
    let origin = c.node(o);
    assert!(
        wait_until(Duration::from_secs(10), || origin
            .metric("mhc_gossip_rejected_total{reason=\"not_enrolled\"}")
            .unwrap_or(0.0)
            >= 1.0),
        "the stranger's heartbeats were not refused as unenrolled"
    );
    // A few more heartbeat periods: still no member, on either enrolled node.
    std::thread::sleep(Duration::from_millis(5 * HEARTBEAT_MS));
    for node in [o, edge] {
        assert_eq!(
            c.node(node).member_state(&stranger_id),
            None,
            "{} admitted the stranger",
            c.node(node).name
        );
    }
    // Routing never offers it: not in /v1/route's candidates, not where /play redirects.
    let route = origin.get("/v1/route/sample").json();
    let candidates = route["candidates"].as_array().unwrap();
    assert!(candidates.iter().any(|c| c["peer_id"] == edge_id.as_str()));
    assert!(
        !candidates
            .iter()
            .any(|c| c["peer_id"] == stranger_id.as_str()),
        "{route:#}"
    );
    let stranger_http = c.node(stranger).addr().to_string();
    let play = origin.get("/play/sample");
    assert_eq!(play.status, 302);
    assert!(!play.header("location").unwrap().contains(&stranger_http));
    let master = origin.get("/v1/content/sample/master.m3u8").text();
    assert!(!master.contains(&stranger_http), "{master}");
    // Nor does it get anything out of the QUIC plane: its hello is refused, so it cannot fill
    // (and so has nothing to serve or report).
    assert_ne!(
        c.node(stranger).get("/v1/content/sample/seg/0.m4s").status,
        200
    );
    assert!(
        origin
            .metric("mhc_quic_refused_total{reason=\"not_enrolled\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn a_node_refuses_to_start_with_an_expired_certificate_or_another_role() {
    let dir = tempfile::tempdir().unwrap();
    let (operator, operator_hex) = operator_key(dir.path(), "operator.key");
    let data_dir = dir.path().join("node");
    let id = Command::new(node_binary())
        .args(["id", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&id, "mhc-node id");
    let node_key = String::from_utf8(id.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("public_key: ").map(str::to_owned))
        .unwrap();
    let enroll = |role: &str, days: &str| {
        let out = Command::new(node_binary())
            .args([
                "enroll",
                "--key",
                operator.to_str().unwrap(),
                "--node",
                &node_key,
            ])
            .args([
                "--role",
                role,
                "--region",
                "eu",
                "--valid-days",
                days,
                "--http",
                "127.0.0.1",
            ])
            .args(["--out", data_dir.join("node.cert").to_str().unwrap()])
            .output()
            .unwrap();
        assert_success(&out, "mhc-node enroll");
    };
    let config = dir.path().join("mesh.toml");
    std::fs::write(
        &config,
        format!(
            "role = \"mesh\"\ndata_dir = {data_dir:?}\nregion = \"eu\"\n[listen]\n\
             http = \"127.0.0.1:0\"\nquic = \"127.0.0.1:0\"\np2p = \"/ip4/127.0.0.1/tcp/0\"\n\
             iroh = \"127.0.0.1:0\"\nswim = \"127.0.0.1:0\"\n[trust]\noperators = [\"{operator_hex}\"]\n"
        ),
    )
    .unwrap();
    let run = || {
        Command::new("timeout")
            .args(["20"])
            .arg(node_binary())
            .args(["run", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };

    enroll("mesh", "0");
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with an expired certificate");
    assert!(
        stderr.contains("node certificate") && stderr.contains("expired on 20"),
        "{stderr}"
    );

    enroll("edge", "30");
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started as mesh with an edge certificate"
    );
    assert!(stderr.contains("grants role edge, not mesh"), "{stderr}");
}

#[test]
fn a_revoked_edge_is_dead_everywhere_at_once_and_stays_refused() {
    let mut c = Cluster::new();
    let o = c.start_with(
        "origin",
        NodeOptions::new("origin").heartbeat_ms(HEARTBEAT_MS),
    );
    assert_success(&c.node(o).ingest("sample", &sample_dir()), "ingest");
    let boot = c.node(o).p2p.clone();
    let key = c.node(o).public_key.clone().unwrap();
    let trust = format!("[trust]\npublishers = [\"{key}\"]\n");
    let edge = || {
        NodeOptions::new("edge")
            .heartbeat_ms(HEARTBEAT_MS)
            .bootstrap(&boot)
            .extra(&trust)
    };
    let (e1, victim, away) = (
        c.start_with("e1", edge()),
        c.start_with("victim", edge()),
        c.start_with("away", edge()),
    );
    let victim_id = c.node(victim).peer_id.clone().unwrap();
    let victim_key = c.node(victim).public_key.clone().unwrap();
    for n in [o, e1, away] {
        assert!(
            wait_until(Duration::from_secs(15), || c
                .node(n)
                .member_state(&victim_id)
                .as_deref()
                == Some("alive")),
            "{} never saw the victim alive",
            c.node(n).name
        );
    }
    // It serves, filling from the origin over QUIC.
    assert_eq!(
        c.node(victim).get("/v1/content/sample/seg/0.m4s").status,
        200
    );
    c.node_mut(away).stop();

    let operator = c.operator_key_file();
    let url = format!("http://{}", c.node(o).addr());
    let revoke = c.node(o).cli(&[
        "revoke",
        "--key",
        operator.to_str().unwrap(),
        "--node",
        &victim_key,
        "--reason",
        "disk stolen",
        "--node-url",
        &url,
    ]);
    assert_success(&revoke, "mhc-node revoke");
    let revoked_at = Instant::now();
    for n in [o, e1] {
        assert!(
            wait_until(Duration::from_secs(2), || c
                .node(n)
                .member_state(&victim_id)
                .as_deref()
                == Some("dead")),
            "{} did not take the victim for dead within 2 s",
            c.node(n).name
        );
    }
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Its QUIC requests are refused: a segment it does not hold cannot be filled.
    assert_ne!(
        c.node(victim).get("/v1/content/sample/seg/3.m4s").status,
        200
    );
    assert!(
        c.node(o)
            .metric("mhc_quic_responses_total{kind=\"segment\",outcome=\"not_admitted\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(c
        .node(victim)
        .log_tail()
        .contains("this node's key was revoked"));

    // It restarts, and so does the origin: still refused (the origin read its list back).
    c.node_mut(victim).stop();
    c.node_mut(o).stop();
    c.node_mut(o).spawn();
    c.node_mut(victim).spawn();
    assert!(
        wait_until(Duration::from_secs(10), || c
            .node(o)
            .metric("mhc_gossip_rejected_total{reason=\"revoked\"}")
            .unwrap_or(0.0)
            >= 2.0),
        "the origin did not refuse the restarted victim's heartbeats as revoked"
    );
    for n in [o, e1] {
        assert_ne!(
            c.node(n).member_state(&victim_id).as_deref(),
            Some("alive"),
            "{} admitted the victim again",
            c.node(n).name
        );
    }

    // The member that was away catches up from the others' heartbeats.
    c.node_mut(away).spawn();
    assert!(
        wait_until(Duration::from_secs(15), || c
            .node(away)
            .cluster_view()
            .is_some_and(|v| v["self"]["revocations"]["revoked_nodes"] == 1)),
        "the node that was away never learnt of the revocation"
    );
    std::thread::sleep(Duration::from_millis(5 * HEARTBEAT_MS));
    assert_ne!(
        c.node(away).member_state(&victim_id).as_deref(),
        Some("alive")
    );
}
