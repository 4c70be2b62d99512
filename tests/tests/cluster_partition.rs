//! A network partition between two network namespaces joined by a veth pair: each side marks
//! the other dead, and healing the link converges the cluster again. Needs root (CI runs as root).

use std::process::Command;
use std::time::{Duration, Instant};

use mhc_tests::{ip, wait_until, Cluster, NodeOptions};

/// Two namespaces and the cable between them; deleted on drop, even when the test fails.
struct TwoHosts {
    a: String,
    b: String,
    veth_a: String,
}

impl TwoHosts {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let hosts = Self {
            a: format!("mhcA{id}"),
            b: format!("mhcB{id}"),
            veth_a: format!("mva{id}"),
        };
        let veth_b = format!("mvb{id}");
        ip(&["netns", "add", &hosts.a]);
        ip(&["netns", "add", &hosts.b]);
        ip(&[
            "link",
            "add",
            &hosts.veth_a,
            "type",
            "veth",
            "peer",
            "name",
            &veth_b,
        ]);
        ip(&["link", "set", &hosts.veth_a, "netns", &hosts.a]);
        ip(&["link", "set", &veth_b, "netns", &hosts.b]);
        ip(&[
            "-n",
            &hosts.a,
            "addr",
            "add",
            "10.231.0.1/24",
            "dev",
            &hosts.veth_a,
        ]);
        ip(&[
            "-n",
            &hosts.b,
            "addr",
            "add",
            "10.231.0.2/24",
            "dev",
            &veth_b,
        ]);
        for (ns, dev) in [(&hosts.a, &hosts.veth_a), (&hosts.b, &veth_b)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        hosts
    }

    fn cable(&self, up: bool) {
        ip(&[
            "-n",
            &self.a,
            "link",
            "set",
            &self.veth_a,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn each_side_of_a_partition_marks_the_other_dead_and_heals() {
    let hosts = TwoHosts::new();
    // Declared after the hosts, so it is dropped first: nodes die before their namespaces.
    let mut c = Cluster::new();
    c.start_with(
        "a0",
        NodeOptions::new("origin").in_netns(&hosts.a, "10.231.0.1"),
    );
    let boot = c.node(0).p2p.clone();
    assert!(boot[0].starts_with("/ip4/10.231.0.1/"), "{boot:?}");
    c.start_with(
        "a1",
        NodeOptions::new("edge")
            .in_netns(&hosts.a, "10.231.0.1")
            .bootstrap(&boot),
    );
    c.start_with(
        "b0",
        NodeOptions::new("edge")
            .in_netns(&hosts.b, "10.231.0.2")
            .bootstrap(&boot),
    );
    c.start_with(
        "b1",
        NodeOptions::new("mesh")
            .in_netns(&hosts.b, "10.231.0.2")
            .bootstrap(&boot),
    );
    let period = c.node(0).heartbeat();
    let all_alive = |c: &Cluster| c.nodes.iter().all(|n| n.alive_members() == 3);
    assert!(
        wait_until(Duration::from_secs(30), || all_alive(&c)),
        "did not converge"
    );

    let side = |i: usize| if i < 2 { 0 } else { 1 };
    let peers: Vec<String> = c.nodes.iter().map(|n| n.peer_id.clone().unwrap()).collect();
    let split_seen = |c: &Cluster| {
        (0..4).all(|i| {
            let view = c.node(i).cluster_view();
            (0..4).filter(|j| *j != i).all(|j| {
                let want = if side(i) == side(j) { "alive" } else { "dead" };
                view.as_ref().is_some_and(|v| {
                    v["members"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|m| m["peer_id"] == peers[j] && m["state"] == want)
                    })
                })
            })
        })
    };

    hosts.cable(false);
    let cut = Instant::now();
    assert!(
        wait_until(period * 30, || split_seen(&c)),
        "each side should see its own side alive and the other dead"
    );
    eprintln!("partition seen on both sides after {:?}", cut.elapsed());

    hosts.cable(true);
    let healed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || all_alive(&c)),
        "did not converge after healing: {:?}",
        c.nodes
            .iter()
            .map(|n| n.alive_members())
            .collect::<Vec<_>>()
    );
    eprintln!("converged {:?} after healing", healed.elapsed());
}
