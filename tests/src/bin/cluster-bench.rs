//! Control-plane benchmark: N real nodes on loopback (default 50, default heartbeat 1 s).
//!
//! Measures: time until every node sees every other alive; time for one gossip message (a
//! content announcement from the origin) to reach every node, p50 and max; time for a signed
//! emergency command posted to one node to switch every node's mode (and back); CPU and RSS of
//! an idle node, and the failure detector's (SWIM) datagrams and bytes each node sends per
//! second; over the idle period, whether any node ever marked a live peer suspect or dead
//! (false positives); then KILLS nodes SIGKILLed one at a time, and for each the time until
//! every other node listed it dead (p50, p99, max over the kills).
//!
//! Then, where `serf` is installed (Debian package), the same number of Serf agents at its
//! defaults, measured the same way: packets and bytes each sends per second idle, and the time
//! until every agent saw a SIGKILLed one fail. Packets are counted by the kernel (nftables, on
//! the nodes' membership and gossip ports; needs root and `nft`) for both, so neither side's
//! own counting is trusted.
//!
//! Usage: `cargo run --release -p mhc-tests --bin cluster-bench -- [NODES] [IDLE_SECONDS] [KILLS]`
//! (`NO_WIRE=1`: no kernel counting and no Serf, so the idle CPU figure has no counting rules
//! in the loopback path: the kernel time they cost is charged to the sending processes)
//! (build the release mhc-node first: `cargo build --release -p mhc-node`; the harness uses the
//! binary beside this one).

use std::time::{Duration, Instant};

use mhc_tests::serf::{serf_program, SerfCluster};
use mhc_tests::wire::{PortCounters, Sent};
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
    let kills: usize = args.next().map_or(20, |a| a.parse().expect("KILLS"));
    assert!(
        kills < n.saturating_sub(2),
        "KILLS must leave the origin and two more"
    );
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
    let swim_out = |node: &mhc_tests::NodeProcess| {
        let m = |s: &str| node.metric(s).unwrap_or(0.0);
        (
            m("mhc_swim_packets_total{direction=\"out\"}"),
            m("mhc_swim_bytes_total{direction=\"out\"}"),
        )
    };
    let swim_before: Vec<(f64, f64)> = c.nodes.iter().map(swim_out).collect();
    // The kernel's count of what leaves each node's membership (UDP) and gossip (TCP) ports.
    let ports = |key: &str| -> Vec<u16> {
        c.nodes
            .iter()
            .filter_map(|node| {
                let info: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(node.data_dir.join("runtime.json")).ok()?,
                )
                .ok()?;
                let addr = match &info[key] {
                    serde_json::Value::Array(a) => {
                        let multiaddr = a.first()?.as_str()?;
                        multiaddr
                            .split("/tcp/")
                            .nth(1)?
                            .split('/')
                            .next()?
                            .to_owned()
                    }
                    v => v.as_str()?.rsplit(':').next()?.to_owned(),
                };
                addr.parse().ok()
            })
            .collect()
    };
    let no_wire = std::env::var_os("NO_WIRE").is_some_and(|v| v == "1");
    let wire = if no_wire {
        Err("NO_WIRE=1".to_owned())
    } else {
        PortCounters::new("swim", &ports("swim"), &[])
            .and_then(|swim| Ok((swim, PortCounters::new("gossip", &[], &ports("p2p"))?)))
    };
    if let Err(why) = &wire {
        println!("packets on the wire not counted: {why}");
    }
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
    let swim: Vec<(f64, f64)> = c
        .nodes
        .iter()
        .zip(&swim_before)
        .map(|(node, (p0, b0))| {
            let (p, b) = swim_out(node);
            ((p - p0) / secs, (b - b0) / secs)
        })
        .collect();
    let mean = |f: fn(&(f64, f64)) -> f64| swim.iter().map(f).sum::<f64>() / swim.len() as f64;
    let max = |f: fn(&(f64, f64)) -> f64| swim.iter().map(f).fold(0.0, f64::max);
    println!(
        "idle SWIM traffic sent per node: {:.2} datagrams/s (max {:.2}), {:.0} B/s (max {:.0}), signature included",
        mean(|s| s.0),
        max(|s| s.0),
        mean(|s| s.1),
        max(|s| s.1)
    );
    let mut mhc_wire = None;
    if let Ok((swim, gossip)) = &wire {
        let (s, g) = (swim.read(), gossip.read());
        let per = |x: u64| x as f64 / n as f64 / secs;
        println!(
            "idle, on the wire, per node: SWIM {:.2} packets/s {:.0} B/s; gossip (libp2p TCP) {:.2} packets/s {:.0} B/s",
            per(s.packets),
            per(s.bytes),
            per(g.packets),
            per(g.bytes)
        );
        mhc_wire = Some((s, g, secs));
    }
    drop(wire);
    println!("non-alive members seen during the idle period (false suspect/dead): {false_alarms}");

    // Failure detection: SIGKILL one node at a time (never the origin), and time until every
    // running node lists it dead. A node's answer says for how long the state has held, so
    // the moment it changed is known to within the status command's round trip (counted
    // against the detector: an upper bound).
    let mut running: Vec<bool> = vec![true; n];
    let mut took = Vec::new();
    for k in 0..kills {
        let v = n - 1 - k;
        let victim = c.node(v).peer_id.clone().unwrap();
        std::thread::sleep(Duration::from_millis(137 * k as u64 % 1000));
        let killed_ms = now_ms();
        c.node_mut(v).kill9();
        running[v] = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut latest = 0u64;
        for (i, node) in c.nodes.iter().enumerate().filter(|(i, _)| running[*i]) {
            loop {
                let dead_for = node.cluster_view().and_then(|view| {
                    view["members"].as_array()?.iter().find_map(|m| {
                        (m["peer_id"] == victim.as_str() && m["state"] == "dead")
                            .then(|| m["state_for_ms"].as_u64())
                            .flatten()
                    })
                });
                if let Some(dead_for) = dead_for {
                    latest = latest.max(now_ms().saturating_sub(dead_for));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {i} never listed node {v} dead"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        took.push(latest.saturating_sub(killed_ms));
    }
    if !took.is_empty() {
        println!(
            "SIGKILLed node dead on every other node, {kills} kills: {} (each: {took:?})",
            quantiles(&took)
        );
    }
    drop(c);

    match serf_program() {
        _ if no_wire => {}
        None => println!("serf not installed (apt install serf): no comparison"),
        Some(_) => compare_with_serf(n, idle_s, kills, mhc_wire, &took),
    }
}

/// `p50 … ms, p99 … ms, max … ms` of `times` (milliseconds).
fn quantiles(times: &[u64]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1]
    )
}

/// The same figures for `n` Serf agents at their defaults, and the table of both.
fn compare_with_serf(
    n: usize,
    idle_s: u64,
    kills: usize,
    mhc_wire: Option<(Sent, Sent, f64)>,
    mhc_took: &[u64],
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    let mut serf = SerfCluster::start(dir.path(), n);
    let converged = mhc_tests::wait_until(Duration::from_secs(120), || serf.all_see(n));
    assert!(converged, "serf agents did not converge");
    println!();
    println!(
        "serf: {n} agents started and converged in {:.2?}",
        t0.elapsed()
    );
    let ports: Vec<u16> = serf.agents.iter().map(|a| a.port).collect();
    let wire = PortCounters::new("serf", &ports, &ports);
    let idle_from = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_s));
    let secs = idle_from.elapsed().as_secs_f64();
    let serf_wire = wire.as_ref().ok().map(PortCounters::read);
    drop(wire);
    let mut took = Vec::new();
    for k in 0..kills {
        let v = n - 1 - k;
        std::thread::sleep(Duration::from_millis(137 * k as u64 % 1000));
        let killed_ms = now_ms();
        serf.kill(v);
        let name = serf.agents[v].name.clone();
        let at = serf
            .wait_failed(&name, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("serf agents did not all see {name} fail"));
        took.push(at.saturating_sub(killed_ms));
    }
    drop(serf);

    let per = |sent: Sent, secs: f64| {
        (
            sent.packets as f64 / n as f64 / secs,
            sent.bytes as f64 / n as f64 / secs,
        )
    };
    println!();
    println!(
        "| {n} members on loopback | mhc: SWIM | mhc: SWIM + gossip heartbeats | Serf (defaults) |"
    );
    println!("|---|---|---|---|");
    if let (Some((s, g, mhc_secs)), Some(serf_sent)) = (mhc_wire, serf_wire) {
        let (sp, sb) = per(s, mhc_secs);
        let (ap, ab) = per(
            Sent {
                packets: s.packets + g.packets,
                bytes: s.bytes + g.bytes,
            },
            mhc_secs,
        );
        let (fp, fb) = per(serf_sent, secs);
        println!("| packets sent per node per second, idle | {sp:.2} | {ap:.2} | {fp:.2} |");
        println!("| bytes sent per node per second, idle | {sb:.0} | {ab:.0} | {fb:.0} |");
    }
    if !took.is_empty() && !mhc_took.is_empty() {
        println!(
            "| SIGKILLed member known failed by every other, {kills} kills | {} | (same detector) | {} |",
            quantiles(mhc_took),
            quantiles(&took)
        );
    }
}
