//! Control-plane benchmark: N real nodes on loopback (default 50, default heartbeat 1 s).
//!
//! Measures: time until every node sees every other alive; time for one gossip message (a
//! content announcement from the origin) to reach every node, p50 and max; time for a signed
//! emergency command posted to one node to switch every node's mode (and back); CPU and RSS of
//! an idle node; and, over the idle period, whether any node ever marked a live peer suspect or
//! dead (false positives).
//!
//! Usage: `cargo run --release -p mhc-tests --bin cluster-bench -- [NODES] [IDLE_SECONDS]`
//! (build the release mhc-node first: `cargo build --release -p mhc-node`; the harness uses the
//! binary beside this one).

use std::time::{Duration, Instant};

use mhc_tests::{write_synthetic_rendition, Cluster, NodeOptions};

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap() // utime + stime
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

/// Wall-clock milliseconds since the Unix epoch (command times and gossip latency stamps).
fn now_ms() -> u64 {
    mhc_clock::Clock::system().now_ms()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(50, |a| a.parse().expect("NODES"));
    let idle_s: u64 = args.next().map_or(60, |a| a.parse().expect("IDLE_SECONDS"));
    let heartbeat_ms = 1000;
    let ticks_per_s = 100.0; // USER_HZ on Linux

    let mut c = Cluster::new();
    let (op_key, operator) = mhc_tests::operator_key(c.path(), "operator.key");
    let trust = format!("[trust]\noperators = [\"{operator}\"]\n");
    let t0 = Instant::now();
    c.start_with(
        "n0",
        NodeOptions::new("origin")
            .heartbeat_ms(heartbeat_ms)
            .extra(&trust),
    );
    let boot = c.node(0).p2p.clone();
    for i in 1..n {
        c.start_with(
            &format!("n{i}"),
            NodeOptions::new("edge")
                .heartbeat_ms(heartbeat_ms)
                .bootstrap(&boot)
                .extra(&trust),
        );
    }
    let started = t0.elapsed();
    let converge_from = Instant::now();
    loop {
        let seen: Vec<usize> = c.nodes.iter().map(|x| x.alive_members()).collect();
        if seen.iter().all(|s| *s == n - 1) {
            break;
        }
        if converge_from.elapsed() > Duration::from_secs(120) {
            if let Some(i) = seen.iter().position(|s| *s != n - 1) {
                let node = c.node(i);
                eprintln!(
                    "node {i} view: {:?}",
                    node.cluster_view().map(|v| v["counts"].clone())
                );
                eprintln!("node {i} log:\n{}", node.log_tail());
            }
            panic!("no convergence: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let converged = converge_from.elapsed();
    println!("nodes: {n}, heartbeat {heartbeat_ms} ms");
    println!(
        "all {n} started in {started:.2?}; full convergence {converged:.2?} after the last start"
    );

    // One gossip message: the origin announces a publish.
    let dir = c.path().join("r");
    write_synthetic_rendition(&dir, 1, 100, 1);
    let sent_ms = now_ms();
    let out = c.node(0).ingest("probe", &dir);
    assert!(out.status.success());
    let mut delays = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in c.nodes.iter().skip(1) {
        loop {
            let got = node.cluster_view().and_then(|v| {
                v["announced"].as_array().and_then(|a| {
                    a.iter()
                        .find(|x| x["id"] == "probe")
                        .and_then(|x| x["received_at_ms"].as_u64())
                })
            });
            if let Some(at) = got {
                delays.push(at.saturating_sub(sent_ms));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "announcement did not reach {}",
                node.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    delays.sort_unstable();
    println!(
        "one message to {}/{} other nodes: p50 {} ms, max {} ms (from the ingest command, incl. publish)",
        delays.len(),
        n - 1,
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );

    // Mode switch: a signed command posted to one node, until every node has applied it.
    let seed: [u8; 32] = std::fs::read(&op_key).unwrap().try_into().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    for (seq, action, mode) in [
        (
            1,
            mhc_node::Action::Activate {
                reason: "bench".into(),
                essential: vec![],
            },
            "emergency",
        ),
        (2, mhc_node::Action::Deactivate, "normal"),
    ] {
        let cmd = mhc_node::SignedCommand::sign(action, seq, now_ms(), &key).encode();
        let sent_ms = now_ms();
        let r = mhc_tests::http_post(c.node(n / 2).addr(), "/v1/emergency", &cmd).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut delays = Vec::new();
        for node in &c.nodes {
            loop {
                let applied = node.cluster_view().and_then(|v| {
                    (v["self"]["mode"] == mode)
                        .then(|| v["self"]["emergency"]["since_ms"].as_u64())
                        .flatten()
                });
                if let Some(at) = applied {
                    delays.push(at.saturating_sub(sent_ms));
                    break;
                }
                assert!(Instant::now() < deadline, "{} did not switch", node.name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        delays.sort_unstable();
        println!(
            "mode switch to {mode}: {}/{n} nodes, p50 {} ms, max {} ms after the POST to one node (target < 1000 ms)",
            delays.len(),
            delays[delays.len() / 2],
            delays[delays.len() - 1]
        );
    }

    // Idle: CPU and RSS of every node over the idle period; false suspicions.
    let pids: Vec<u32> = c.nodes.iter().map(|x| x.pid().unwrap()).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let idle_from = Instant::now();
    let mut false_alarms = 0;
    while idle_from.elapsed() < Duration::from_secs(idle_s) {
        std::thread::sleep(Duration::from_secs(5));
        for node in &c.nodes {
            let view = node.cluster_view().unwrap();
            let bad = view["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["state"] != "alive")
                .count();
            false_alarms += bad;
        }
    }
    let secs = idle_from.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / ticks_per_s / secs * 100.0)
        .collect();
    let rss: Vec<u64> = pids.iter().map(|p| rss_kb(*p)).collect();
    let mean_cpu = cpu.iter().sum::<f64>() / cpu.len() as f64;
    let max_cpu = cpu.iter().cloned().fold(0.0, f64::max);
    println!(
        "idle {secs:.0} s: CPU per node mean {mean_cpu:.2}% max {max_cpu:.2}% of one core; RSS per node mean {} MB max {} MB",
        rss.iter().sum::<u64>() / rss.len() as u64 / 1024,
        rss.iter().max().unwrap() / 1024
    );
    println!("non-alive members seen during the idle period (false suspect/dead): {false_alarms}");
}
