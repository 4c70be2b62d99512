//! `swim-sim`: the membership protocol's figures from the deterministic simulator.
//!
//!     cargo run --release -p mhc-membership --bin swim-sim [SEED [SEEDS]]
//!
//! With `SEEDS`, figures 2 and 3 are repeated for that many seeds from `SEED` on, one line
//! each, and the worst of them printed last.
//!
//! 1. Idle cost per member as the cluster grows (50, 500, 2,000 members, LAN, no loss):
//!    messages and bytes each member sends per second, converged, over 30 simulated seconds.
//! 2. Detection: 20 members killed one at a time in a 50-member cluster; for each, the time
//!    until every other member held it down; p50, p99 and max.
//! 3. False positives: 10 simulated minutes of a 50-member cluster with 5% packet loss; live
//!    members declared down by anyone.

use std::time::{Duration, Instant};

use mhc_membership::sim::{Network, Sim};

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SEED is a number"))
        .unwrap_or(1);
    let seeds: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().expect("SEEDS is a number"))
        .unwrap_or(1);
    println!("seed {seed}; timing: mhc_membership::swim_config");
    println!();
    println!("members  msgs/s/member  bytes/s/member  (idle, 30 s simulated)  wall");
    let mut first: Option<(f64, f64)> = None;
    for members in [50, 500, 2000] {
        let wall = Instant::now();
        let (msgs, bytes) = idle_rates(members, seed);
        let (m0, b0) = *first.get_or_insert((msgs, bytes));
        println!(
            "{members:>7}  {msgs:>13.2}  {bytes:>14.0}  ({:.2}x, {:.2}x of 50)  {:.1} s",
            msgs / m0,
            bytes / b0,
            wall.elapsed().as_secs_f64()
        );
    }

    println!();
    println!("seed  detection of a killed member by every other (50 members, 20 kills)  false positives (50 members, 5% loss, 10 min)");
    let (mut worst_p99, mut all_wrong) = (Duration::ZERO, 0);
    for seed in seed..seed + seeds {
        let mut times = detection_times(50, 20, seed);
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let wrong = false_positives(50, 0.05, Duration::from_secs(600), seed);
        println!(
            "{seed:>4}  p50 {:.2} s, p99 {:.2} s, max {:.2} s  {wrong}",
            at(0.5).as_secs_f64(),
            at(0.99).as_secs_f64(),
            times.last().expect("20 kills").as_secs_f64()
        );
        worst_p99 = worst_p99.max(at(0.99));
        all_wrong += wrong;
    }
    if seeds > 1 {
        println!(
            "worst p99 {:.2} s; false positives in all {all_wrong}",
            worst_p99.as_secs_f64()
        );
    }
}

/// Messages and bytes per member per second in a converged idle cluster.
fn idle_rates(members: usize, seed: u64) -> (f64, f64) {
    let mut sim = Sim::converged(members, Network::lan(), seed);
    sim.run_for(Duration::from_secs(10));
    let before: Vec<_> = (0..members).map(|n| sim.sent(n)).collect();
    let span = Duration::from_secs(30);
    sim.run_for(span);
    let (msgs, bytes) = (0..members).fold((0u64, 0u64), |(m, b), n| {
        let now = sim.sent(n);
        (
            m + now.messages - before[n].messages,
            b + now.bytes - before[n].bytes,
        )
    });
    let per = members as f64 * span.as_secs_f64();
    (msgs as f64 / per, bytes as f64 / per)
}

/// Time until every other member held the killed one down, for `kills` kills in turn.
fn detection_times(members: usize, kills: usize, seed: u64) -> Vec<Duration> {
    let mut sim = Sim::converged(members, Network::lan(), seed);
    sim.run_for(Duration::from_secs(5));
    (0..kills)
        .map(|k| {
            // Kills land at different points of the probe cycles.
            sim.run_for(Duration::from_millis(137 * k as u64 % 1000));
            let victim = k * (members / kills);
            let at = sim.now();
            sim.kill(victim);
            sim.run_for(Duration::from_secs(20));
            sim.known_down_everywhere(victim, at)
                .map_or(Duration::MAX, |known| known - at)
        })
        .collect()
}

/// Live members declared down by anyone over `span` with `loss`.
fn false_positives(members: usize, loss: f64, span: Duration, seed: u64) -> usize {
    let network = Network {
        loss,
        ..Network::lan()
    };
    let mut sim = Sim::converged(members, network, seed);
    sim.run_for(span);
    sim.running_declared_down(Duration::ZERO).len()
}
