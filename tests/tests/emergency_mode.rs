//! Emergency broadcast mode on real processes: a signed operator command switches the whole
//! cluster (origins and edges stop serving viewers, routing sends them to mesh nodes and
//! downlink receivers, mesh nodes replicate the essential content), survives restarts, and is
//! undone by a later command; forged, tampered and replayed commands change nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use mhc_tests::udp::{free_udp_port, FanOut};
use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions, NodeProcess};

/// `mhc-node emergency <args> --key KEY --node http://NODE`.
fn emergency(node: &NodeProcess, key: &Path, args: &[&str]) -> std::process::Output {
    let url = format!("http://{}", node.addr());
    let mut all: Vec<&str> = vec!["emergency"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--key", key.to_str().unwrap(), "--node", &url]);
    node.cli(&all)
}

fn mode(node: &NodeProcess) -> String {
    node.cluster_view()
        .map(|v| v["self"]["mode"].as_str().unwrap_or("?").to_owned())
        .unwrap_or_default()
}

fn options(role: &str, boot: &[String], trust: &str) -> NodeOptions {
    NodeOptions::new(role)
        .heartbeat_ms(250)
        .bootstrap(boot)
        .extra(trust)
}

#[test]
fn a_signed_command_switches_every_node_and_a_later_one_switches_back() {
    let mut c = Cluster::new();
    let (key, operator) = mhc_tests::operator_key(c.path(), "operator.key");
    let (other_key, _) = mhc_tests::operator_key(c.path(), "stranger.key");
    let o = c.start_with(
        "origin",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .extra(&format!("[trust]\noperators = [\"{operator}\"]\n")),
    );
    let boot = c.node(o).p2p.clone();
    let trust = format!(
        "[trust]\npublishers = [\"{}\"]\noperators = [\"{operator}\"]\n",
        c.node(o).public_key.as_deref().unwrap()
    );
    let edges: Vec<usize> = (0..2)
        .map(|i| c.start_with(&format!("edge{i}"), options("edge", &boot, &trust)))
        .collect();
    let mesh: Vec<usize> = (0..3)
        .map(|i| c.start_with(&format!("mesh{i}"), options("mesh", &boot, &trust)))
        .collect();
    // Two edges that also receive the satellite downlink, and the uplink feeding them.
    let ports: Vec<u16> = (0..2).map(|_| free_udp_port()).collect();
    let fan = FanOut::start(
        ports
            .iter()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect(),
    );
    let receivers: Vec<usize> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let extra = format!("{trust}[satellite]\ndownlink = \"udp://127.0.0.1:{port}\"\n");
            c.start_with(&format!("receiver{i}"), options("edge", &boot, &extra))
        })
        .collect();
    let uplink = c.start_with(
        "uplink",
        options(
            "satellite-uplink",
            &boot,
            &format!(
                "{trust}[satellite]\nuplink = \"udp://{}\"\nrate_kbps = 20000\n",
                fan.addr()
            ),
        ),
    );
    let all: Vec<usize> = std::iter::once(o)
        .chain(edges.clone())
        .chain(mesh.clone())
        .chain(receivers.clone())
        .chain([uplink])
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || all
            .iter()
            .all(|&n| c.node(n).alive_members() >= all.len() - 1)),
        "the cluster did not form"
    );
    let news = c.path().join("news");
    mhc_tests::write_synthetic_rendition(&news, 6, 50_000, 11);
    assert_success(&c.node(o).ingest("news", &news), "ingest");

    // Forged, tampered and replayed commands: no effect anywhere.
    let out = emergency(c.node(edges[0]), &other_key, &["activate", "--reason", "x"]);
    assert!(!out.status.success(), "an unknown operator was obeyed");
    let tampered = {
        let mut bytes = signed_activate(&key, c.node(o));
        let n = bytes.len();
        bytes[n - 80] ^= 1;
        bytes
    };
    let r = post_command(c.node(mesh[0]), &tampered);
    assert_eq!(r.status, 403, "tampered command: {}", r.text());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        all.iter().all(|&n| mode(c.node(n)) == "normal"),
        "a forged or tampered command changed a node's mode"
    );

    // Activate at one edge: every node reports emergency within 2 s.
    let t0 = Instant::now();
    let out = emergency(
        c.node(edges[1]),
        &key,
        &["activate", "--reason", "storm", "--essential", "news"],
    );
    assert_success(&out, "emergency activate");
    assert!(
        wait_until(Duration::from_secs(2), || all
            .iter()
            .all(|&n| mode(c.node(n)) == "emergency")),
        "not every node switched within 2 s: {:?}\n{}",
        all.iter().map(|&n| mode(c.node(n))).collect::<Vec<_>>(),
        c.node(o).log_tail()
    );
    println!("every node in emergency mode after {:?}", t0.elapsed());

    // A replay of an old command: refused, counted.
    let replay = last_command_bytes(c.node(mesh[1]));
    let r = post_command(c.node(mesh[1]), &replay);
    assert_eq!(r.status, 409, "replay: {}", r.text());

    // Origins and edges refuse viewers and point to /play.
    for &n in std::iter::once(&o).chain(&edges) {
        let r = c.node(n).get("/v1/content/news/index.m3u8");
        assert_eq!(r.status, 503, "{} still serves", c.node(n).name);
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.json()["play"], "/play/news");
    }
    // Mesh nodes replicate the essential content and routing offers only them.
    assert!(
        wait_until(Duration::from_secs(30), || mesh.iter().all(|&m| c
            .node(m)
            .metric("mhc_mesh_replications_total")
            .unwrap_or(0.0)
            >= 1.0)),
        "the essential content was not replicated to every mesh node"
    );
    // The uplink replicates the essential content and broadcasts it; the receivers rebuild it.
    assert!(
        wait_until(Duration::from_secs(30), || receivers.iter().all(|&r| c
            .node(r)
            .metric("mhc_downlink_contents_total")
            .unwrap_or(0.0)
            >= 1.0)),
        "the receivers did not get the essential content from the uplink: {}",
        c.node(uplink).log_tail()
    );
    let serving: Vec<String> = mesh
        .iter()
        .chain(&receivers)
        .map(|&m| c.node(m).addr().to_string())
        .collect();
    for &n in &all {
        // Holdings reach routing with the next heartbeats.
        wait_until(Duration::from_secs(3), || {
            c.node(n).get("/play/news").status == 302
        });
        let r = c.node(n).get("/play/news");
        assert_eq!(r.status, 302, "{}: {}", c.node(n).name, r.text());
        let location = r.header("location").unwrap();
        assert!(
            serving.iter().any(|a| location.contains(a.as_str())),
            "{} routed to {location}, not a mesh node or receiver",
            c.node(n).name
        );
        // The explanation offers no origin, plain edge or uplink.
        let route = c.node(n).get("/v1/route/news").json();
        for cand in route["candidates"].as_array().unwrap() {
            if cand["eligible"] == true {
                let playlist = cand["playlist"].as_str().unwrap_or_default();
                assert!(
                    serving.iter().any(|a| playlist.contains(a.as_str())),
                    "{playlist} ({}) offered in emergency mode",
                    cand["role"]
                );
            }
        }
    }
    // A client plays the essential content from a mesh node and from a receiver.
    let file = std::fs::read(news.join("seg_003.ts")).unwrap();
    for &n in [mesh[2], receivers[1]].iter() {
        let r = c.node(n).get("/v1/content/news/seg/3.ts");
        assert_eq!(r.status, 200, "{}: {}", c.node(n).name, r.text());
        assert!(r.body == file);
    }

    // The mode survives a restart.
    c.node_mut(edges[0]).stop();
    c.node_mut(edges[0]).spawn();
    assert_eq!(mode(c.node(edges[0])), "emergency");
    assert_eq!(
        c.node(edges[0]).get("/v1/content/news/index.m3u8").status,
        503
    );

    // Deactivate: normal service again.
    assert_success(
        &emergency(c.node(mesh[0]), &key, &["deactivate"]),
        "emergency deactivate",
    );
    assert!(
        wait_until(Duration::from_secs(5), || all
            .iter()
            .all(|&n| mode(c.node(n)) == "normal")),
        "not every node went back to normal"
    );
    assert_eq!(c.node(o).get("/v1/content/news/index.m3u8").status, 200);
    assert_eq!(
        c.node(edges[1]).get("/v1/content/news/seg/0.ts").status,
        200
    );
    let rejected = c
        .node(mesh[1])
        .metric("mhc_emergency_commands_total{outcome=\"stale\"}")
        .unwrap_or(0.0);
    assert!(rejected >= 1.0);
}

/// A valid activate command signed with `key`, as the CLI would send it.
fn signed_activate(key: &Path, node: &NodeProcess) -> Vec<u8> {
    let seed: [u8; 32] = std::fs::read(key).unwrap().try_into().unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let _ = node;
    mhc_node::SignedCommand::sign(
        mhc_node::Action::Activate {
            reason: "tampered".into(),
            essential: vec![],
        },
        mhc_clock::Clock::system().now_ms(),
        mhc_clock::Clock::system().now_ms(),
        &signing,
    )
    .encode()
}

/// The last applied command of a node, re-encoded from its status (what an eavesdropper on
/// the gossip would have captured).
fn last_command_bytes(node: &NodeProcess) -> Vec<u8> {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let out = node.cli(&["status", "--json", "--data-dir", &data_dir]);
    assert_success(&out, "status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    hex::decode(
        v["emergency"]["command_hex"]
            .as_str()
            .expect("command_hex in status"),
    )
    .unwrap()
}

fn post_command(node: &NodeProcess, bytes: &[u8]) -> mhc_tests::HttpResponse {
    mhc_tests::http_post(node.addr(), "/v1/emergency", bytes).unwrap()
}
