//! The broadcast plane on real processes: a satellite uplink carries a content and the
//! operator's emergency bulletin in a RaptorQ carousel; receivers that are not in the cluster
//! (no return channel of any kind) rebuild, verify and serve them through a lossy link, and a
//! link lossier than the repair overhead costs more cycles, not the content.

use std::net::SocketAddr;
use std::time::Duration;

use mhc_tests::udp::{free_udp_port, FanOut};
use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions, NodeProcess};
use mhc_transport::carousel::{LossyRelay, RelayConfig};

fn metric(node: &NodeProcess, name: &str) -> f64 {
    node.metric(name).unwrap_or(0.0)
}

struct Setup {
    c: Cluster,
    operator_key: std::path::PathBuf,
    origin: usize,
    uplink: usize,
    receivers: Vec<usize>,
    _relays: Vec<LossyRelay>,
    _fan: FanOut,
    dir: std::path::PathBuf,
}

/// Origin, an uplink that replicates from it and carries `news`, and two receivers outside
/// the cluster behind links with `loss_percent` loss and reordering (the links send from
/// 127.0.0.1), each with its `[satellite]` settings `receiver_satellite` added.
fn setup(loss_percent: f64, repair_percent: u32, receiver_satellite: [&str; 2]) -> Setup {
    let mut c = Cluster::new();
    let (operator_key, operator) = mhc_tests::operator_key(c.path(), "operator.key");
    let o = c.start_with("origin", NodeOptions::new("origin").heartbeat_ms(250));
    let publisher = c.node(o).public_key.clone().unwrap();
    let dir = c.path().join("news");
    mhc_tests::write_synthetic_rendition(&dir, 8, 60_000, 21);
    assert_success(&c.node(o).ingest("news", &dir), "ingest");

    let ports: Vec<u16> = (0..2).map(|_| free_udp_port()).collect();
    let relays: Vec<LossyRelay> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            LossyRelay::start(
                "127.0.0.1:0".parse().unwrap(),
                SocketAddr::from(([127, 0, 0, 1], *port)),
                RelayConfig {
                    loss_percent,
                    reorder_percent: 10.0,
                    reorder_max_delay: 8,
                    seed: 7 + i as u64,
                },
            )
            .unwrap()
        })
        .collect();
    let fan = FanOut::start(relays.iter().map(LossyRelay::local_addr).collect());
    let receivers: Vec<usize> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            c.start_with(
                &format!("receiver{i}"),
                NodeOptions::new("edge").heartbeat_ms(250).extra(&format!(
                    "[trust]\npublishers = [\"{publisher}\"]\noperators = [\"{operator}\"]\n\
                     [satellite]\ndownlink = \"udp://127.0.0.1:{port}\"\n{}\n",
                    receiver_satellite[i]
                )),
            )
        })
        .collect();
    let boot = c.node(o).p2p.clone();
    let uplink = c.start_with(
        "uplink",
        NodeOptions::new("satellite-uplink")
            .heartbeat_ms(250)
            .bootstrap(&boot)
            .extra(&format!(
                "[trust]\npublishers = [\"{publisher}\"]\noperators = [\"{operator}\"]\n\
                 [satellite]\nuplink = \"udp://{}\"\nrate_kbps = 20000\n\
                 repair_overhead_percent = {repair_percent}\n",
                fan.addr()
            )),
    );
    assert_success(&c.node(uplink).pin("news"), "pin on the uplink");
    Setup {
        c,
        operator_key,
        origin: o,
        uplink,
        receivers,
        _relays: relays,
        _fan: fan,
        dir,
    }
}

#[test]
fn receivers_outside_the_cluster_rebuild_verify_and_serve_through_twenty_percent_loss() {
    let mut s = setup(20.0, 25, ["", ""]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            s.receivers
                .iter()
                .all(|&r| metric(s.c.node(r), "mhc_downlink_contents_total") >= 1.0)
        }),
        "receivers did not complete: {}",
        s.c.node(s.receivers[0]).log_tail()
    );
    // The origin goes away: what the receivers serve came from the sky.
    s.c.node_mut(s.origin).kill9();
    for &r in &s.receivers {
        assert_eq!(
            s.c.node(r).alive_members(),
            0,
            "a receiver talked to the cluster"
        );
        for i in 0..8 {
            let resp = s.c.node(r).get(&format!("/v1/content/news/seg/{i}.ts"));
            assert_eq!(resp.status, 200, "segment {i}: {}", resp.text());
            let file = std::fs::read(s.dir.join(format!("seg_{i:03}.ts"))).unwrap();
            assert!(resp.body == file, "segment {i} differs");
        }
        assert_eq!(
            metric(s.c.node(r), "mhc_downlink_objects_rejected_total"),
            0.0
        );
    }

    // An emergency declared at the uplink reaches the receivers as a signed bulletin in the
    // carousel, the only way anything reaches them; as receivers they serve in emergency mode
    // although they are edges.
    let url = format!("http://{}", s.c.node(s.uplink).addr());
    let key = s.operator_key.to_str().unwrap().to_owned();
    assert_success(
        &s.c.node(s.uplink).cli(&[
            "emergency",
            "activate",
            "--reason",
            "storm",
            "--essential",
            "news",
            "--key",
            &key,
            "--node",
            &url,
        ]),
        "emergency activate",
    );
    assert!(
        wait_until(Duration::from_secs(20), || s.receivers.iter().all(|&r| s
            .c
            .node(r)
            .cluster_view()
            .is_some_and(|v| v["self"]["mode"] == "emergency"))),
        "the bulletin did not reach the receivers"
    );
    for &r in &s.receivers {
        assert_eq!(s.c.node(r).get("/v1/content/news/seg/2.ts").status, 200);
    }
}

#[test]
fn loss_above_the_repair_overhead_leaves_objects_incomplete_until_a_later_cycle() {
    let s = setup(40.0, 25, ["", ""]);
    let r = s.receivers[0];
    let mut saw_incomplete = false;
    let done = wait_until(Duration::from_secs(90), || {
        saw_incomplete |= metric(s.c.node(r), "mhc_downlink_objects_incomplete") > 0.0;
        metric(s.c.node(r), "mhc_downlink_contents_total") >= 1.0
    });
    assert!(
        done,
        "the receiver never completed: {}",
        s.c.node(r).log_tail()
    );
    assert!(saw_incomplete, "no object was ever reported incomplete");
    let late = metric(s.c.node(r), "mhc_downlink_objects_late_total");
    let all: f64 = ["manifest", "segment"]
        .iter()
        .map(|k| {
            metric(
                s.c.node(r),
                &format!("mhc_downlink_objects_total{{kind=\"{k}\"}}"),
            )
        })
        .sum();
    println!(
        "through 40% loss with 25% repair: {late} of {all} objects completed in a later cycle"
    );
    assert!(
        late >= 1.0,
        "every object completed in its first cycle despite loss above the overhead"
    );
}

#[test]
fn a_receiver_takes_the_broadcast_only_from_its_sources() {
    let s = setup(
        0.0,
        25,
        [
            "downlink_sources = [\"127.0.0.1\"]",
            "downlink_sources = [\"192.0.2.1\", \"127.0.0.2\"]",
        ],
    );
    let (listening, deaf) = (s.c.node(s.receivers[0]), s.c.node(s.receivers[1]));
    assert!(
        wait_until(Duration::from_secs(60), || metric(
            listening,
            "mhc_downlink_contents_total"
        ) >= 1.0),
        "the receiver whose source is the link did not complete: {}",
        listening.log_tail()
    );
    assert_eq!(listening.get("/v1/content/news/seg/0.ts").status, 200);
    assert_eq!(
        metric(listening, "mhc_downlink_foreign_datagrams_total"),
        0.0
    );

    // The other receiver hears the same datagrams from an address it does not list.
    assert!(wait_until(Duration::from_secs(10), || metric(
        deaf,
        "mhc_downlink_foreign_datagrams_total"
    ) >= 100.0));
    for kind in ["manifest", "segment", "bulletin"] {
        let sample = format!("mhc_downlink_objects_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(deaf, &sample), 0.0, "{sample}");
    }
    assert_eq!(metric(deaf, "mhc_downlink_objects_incomplete"), 0.0);
    assert_eq!(deaf.get("/v1/content/news/seg/0.ts").status, 404);
}
