//! Routing decisions, end to end through [`decide`] and piece by piece.

use super::locate::{is_non_public, LocationSource};
use std::time::Duration;

use libp2p::PeerId;

use super::rank::{km_between, Key, EARTH_RADIUS_KM};
use super::*;
use crate::control::membership::MemberState;
use crate::control::messages::{HeldContent, Load, WireRole};
use crate::geo::UnitVector;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().expect("net")).collect()
}

fn resolve(peer: &str, xff: &[&str], trusted: &[&str]) -> ClientAddr {
    let lines: Vec<&[u8]> = xff.iter().map(|s| s.as_bytes()).collect();
    resolve_client(ip(peer), lines, &nets(trusted))
}

#[test]
fn the_per_decision_distance_agrees_with_haversine() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..1000 {
        let a = (rng.f64() * 180.0 - 90.0, rng.f64() * 360.0 - 180.0);
        let b = (rng.f64() * 180.0 - 90.0, rng.f64() * 360.0 - 180.0);
        assert!(
            (km_between(&UnitVector::from_lat_lon(a), &UnitVector::from_lat_lon(b))
                - haversine_km(a, b))
            .abs()
                < 1e-6,
            "{a:?} {b:?}"
        );
    }
}

#[test]
fn the_per_decision_distance_holds_at_the_extremes() {
    let pi = std::f64::consts::PI;
    let km = |a, b| km_between(&UnitVector::from_lat_lon(a), &UnitVector::from_lat_lon(b));
    for (a, b, want) in [
        ((0.0, 0.0), (0.0, 180.0), pi * EARTH_RADIUS_KM),
        ((90.0, 0.0), (-90.0, 0.0), pi * EARTH_RADIUS_KM),
        ((45.0, 10.0), (-45.0, -170.0), pi * EARTH_RADIUS_KM),
        ((10.0, 20.0), (10.0, 20.0), 0.0),
        (
            (0.0, 179.0),
            (0.0, -179.0),
            2.0 * pi * EARTH_RADIUS_KM / 180.0,
        ),
        // About 11 m apart: no cancellation to speak of at the bands' scale.
        (
            (48.0, 2.0),
            (48.0001, 2.0),
            1e-4_f64.to_radians() * EARTH_RADIUS_KM,
        ),
    ] {
        assert!((km(a, b) - want).abs() < 1e-6, "{a:?} {b:?}: {}", km(a, b));
    }
}

#[test]
fn haversine_known_distances() {
    let r = EARTH_RADIUS_KM;
    let pi = std::f64::consts::PI;
    assert!((haversine_km((0.0, 0.0), (0.0, 180.0)) - pi * r).abs() < 1e-6);
    assert!((haversine_km((90.0, 0.0), (-90.0, 0.0)) - pi * r).abs() < 1e-6);
    assert!((haversine_km((0.0, 0.0), (0.0, 90.0)) - pi * r / 2.0).abs() < 1e-6);
    assert_eq!(haversine_km((10.0, 20.0), (10.0, 20.0)), 0.0);
    // Across the antimeridian: 2 degrees of longitude at the equator.
    let d = haversine_km((0.0, 179.0), (0.0, -179.0));
    assert!((d - 2.0 * pi * r / 180.0).abs() < 1e-6, "{d}");
    // London to New York, about 5570 km.
    let d = haversine_km((51.5074, -0.1278), (40.7128, -74.0060));
    assert!((d - 5570.0).abs() < 10.0, "{d}");
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    // No header.
    let c = resolve("203.0.113.5", &[], &["10.0.0.0/8"]);
    assert_eq!((c.ip, c.source), (ip("203.0.113.5"), AddrSource::Peer));
    // Untrusted peer: header ignored.
    let c = resolve("203.0.113.5", &["8.8.8.8"], &["10.0.0.0/8"]);
    assert_eq!(
        (c.ip, c.source),
        (ip("203.0.113.5"), AddrSource::UntrustedForwardedFor)
    );
    // No trusted proxies at all: ignored too.
    let c = resolve("10.0.0.1", &["8.8.8.8"], &[]);
    assert_eq!(c.source, AddrSource::UntrustedForwardedFor);
    // Trusted peer without header.
    let c = resolve("10.0.0.1", &[], &["10.0.0.0/8"]);
    assert_eq!(c.source, AddrSource::TrustedPeerWithoutHeader);
    // Trusted peer: right-most non-trusted entry; the client-written left part is ignored,
    // even when it is garbage.
    let c = resolve(
        "10.0.0.1",
        &["garbage, 1.1.1.1, 8.8.8.8 , 10.0.0.7"],
        &["10.0.0.0/8"],
    );
    assert_eq!((c.ip, c.source), (ip("8.8.8.8"), AddrSource::ForwardedFor));
    assert_eq!(c.peer, ip("10.0.0.1"));
    // Several header lines form one list, in order.
    let c = resolve(
        "10.0.0.1",
        &["1.1.1.1", "8.8.8.8, 10.0.0.9"],
        &["10.0.0.0/8"],
    );
    assert_eq!(c.ip, ip("8.8.8.8"));
    let c = resolve("10.0.0.1", &["1.1.1.1", "10.0.0.9"], &["10.0.0.0/8"]);
    assert_eq!(c.ip, ip("1.1.1.1"));
    // All trusted: the left-most.
    let c = resolve("10.0.0.1", &["10.1.1.1, 10.2.2.2"], &["10.0.0.0/8"]);
    assert_eq!(
        (c.ip, c.source),
        (ip("10.1.1.1"), AddrSource::ForwardedForAllTrusted)
    );
    // Ports and brackets as some proxies write them; IPv6.
    let c = resolve("10.0.0.1", &["[2001:db8::7]:443"], &["10.0.0.0/8"]);
    assert_eq!(c.ip, ip("2001:db8::7"));
    let c = resolve("10.0.0.1", &["81.2.69.142:5555"], &["10.0.0.0/8"]);
    assert_eq!(c.ip, ip("81.2.69.142"));
    let c = resolve("10.0.0.1", &["[2001:4860:4860::8888]"], &["10.0.0.0/8"]);
    assert_eq!(c.ip, ip("2001:4860:4860::8888"));
    // IPv4-mapped peers and entries count as IPv4.
    let c = resolve("::ffff:10.0.0.1", &["::ffff:8.8.4.4"], &["10.0.0.0/8"]);
    assert_eq!((c.ip, c.peer), (ip("8.8.4.4"), ip("10.0.0.1")));
    // A private address the proxy vouches for is the client (and has no location).
    let c = resolve("127.0.0.1", &["192.168.1.20"], &["127.0.0.1/32"]);
    assert_eq!(
        (c.ip, c.source),
        (ip("192.168.1.20"), AddrSource::ForwardedFor)
    );
}

#[test]
fn malformed_forwarded_for_falls_back_to_the_peer() {
    for (xff, why) in [
        ("not-an-ip", "an entry is not an IP address"),
        ("1.2.3", "an entry is not an IP address"),
        ("unknown", "an entry is not an IP address"),
        ("8.8.8.8, ", "an empty entry"),
        ("", "an empty entry"),
        ("999.1.1.1", "an entry is not an IP address"),
        ("8.8.8.8 1.1.1.1", "an entry is not an IP address"),
    ] {
        let c = resolve("127.0.0.1", &[xff], &["127.0.0.0/8"]);
        assert_eq!(
            (c.ip, c.source),
            (ip("127.0.0.1"), AddrSource::MalformedForwardedFor(why)),
            "{xff:?}"
        );
        assert!(c.source.to_string().contains("malformed"));
    }
    let long = vec!["10.0.0.1"; 40].join(",");
    let c = resolve("10.0.0.1", &[&long], &["10.0.0.0/8"]);
    assert_eq!(
        c.source,
        AddrSource::MalformedForwardedFor("more than 32 entries")
    );
    let c = resolve_client(ip("10.0.0.1"), [&b"\xff\xfe"[..]], &nets(&["10.0.0.0/8"]));
    assert_eq!(
        c.source,
        AddrSource::MalformedForwardedFor("not ASCII text")
    );
}

#[test]
fn non_public_addresses() {
    for a in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "2001:db8::1",
        "::ffff:10.0.0.1",
    ] {
        assert!(is_non_public(ip(a)), "{a}");
    }
    for a in [
        "8.8.8.8",
        "100.128.0.1",
        "2001:4860:4860::8888",
        "81.2.69.142",
    ] {
        assert!(!is_non_public(ip(a)), "{a}");
    }
}

fn peer_ids(n: usize) -> Vec<PeerId> {
    // Deterministic ids from fixed seeds, so tie-breaks are reproducible.
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[0] = i as u8 + 1;
            libp2p::identity::Keypair::ed25519_from_bytes(seed)
                .expect("seed")
                .public()
                .to_peer_id()
        })
        .collect()
}

struct Spec {
    role: WireRole,
    region: &'static str,
    loc: Option<(f64, f64)>,
    state: MemberState,
    conns: u32,
    bytes: u64,
    silent_ms: u64,
    holds: bool,
    http: &'static str,
}

fn spec(role: WireRole, region: &'static str, loc: Option<(f64, f64)>) -> Spec {
    Spec {
        role,
        region,
        loc,
        state: MemberState::Alive,
        conns: 0,
        bytes: 0,
        silent_ms: 0,
        holds: true,
        http: "192.0.2.1:8080",
    }
}

fn candidates<'a>(ids: &'a [PeerId], specs: &[Spec]) -> Vec<Candidate<'a>> {
    specs
        .iter()
        .zip(ids)
        .map(|(s, id)| Candidate {
            receiver: false,
            peer_id: id,
            is_self: false,
            role: s.role,
            region: s.region,
            location: s.loc,
            unit: s.loc.map(UnitVector::from_lat_lon),
            http: s.http,
            state: s.state,
            load: Load {
                connections: s.conns,
                bytes_out_per_s: s.bytes,
                cache_fill_permille: 0,
            },
            silent_for: Duration::from_millis(s.silent_ms),
            holds: s.holds,
            distance_km: None,
            exclusion: None,
            band: 0,
            key: Key::default(),
        })
        .collect()
}

const LONDON: (f64, f64) = (51.5074, -0.1278);
const PARIS: (f64, f64) = (48.8566, 2.3522);
const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
const SYDNEY: (f64, f64) = (-33.8688, 151.2093);

fn order(c: &[Candidate<'_>], ids: &[PeerId]) -> Vec<usize> {
    c.iter()
        .map(|c| ids.iter().position(|i| i == c.peer_id).expect("known id"))
        .collect()
}

#[test]
fn nearest_first_then_load_then_freshness() {
    let ids = peer_ids(6);
    let mut specs = vec![
        spec(WireRole::Origin, "us-east", Some(NEW_YORK)),
        spec(WireRole::Edge, "eu-west", Some(PARIS)),
        spec(WireRole::Mesh, "ap", Some(SYDNEY)),
        // Same London spot, different loads and freshness.
        spec(WireRole::Edge, "eu-west", Some(LONDON)),
        spec(WireRole::Edge, "eu-west", Some((51.51, -0.13))),
        spec(WireRole::Mesh, "eu-west", Some(LONDON)),
    ];
    specs[3].conns = 5;
    specs[4].conns = 2;
    specs[4].bytes = 900;
    specs[5].conns = 2;
    specs[5].bytes = 900;
    specs[5].silent_ms = 400;
    let mut c = candidates(&ids, &specs);
    let (basis, outcome) = rank(&mut c, Some(LONDON), "eu-west", Mode::Normal, Depth::All);
    assert_eq!((basis, outcome), (Basis::Distance, Outcome::Geo));
    assert_eq!(order(&c, &ids), vec![4, 5, 3, 1, 0, 2]);
    assert!(c.iter().all(Candidate::is_eligible));
    let ch = chosen(&c).expect("chosen");
    assert!(ch.reason(Some(ch), &basis).starts_with("chosen: nearest"));
    assert!(c[1]
        .reason(Some(ch), &basis)
        .contains("heard from less recently"));
    assert!(c[2].reason(Some(ch), &basis).contains("5 connections vs 2"));
    let paris = c[3].reason(Some(ch), &basis);
    assert!(
        paris.starts_with("farther than the chosen node by 343 km"),
        "{paris}"
    );
    // Bytes/s breaks a tie of connections.
    let mut specs = vec![
        spec(WireRole::Edge, "x", Some(LONDON)),
        spec(WireRole::Edge, "x", Some(LONDON)),
    ];
    specs[0].bytes = 10;
    let mut c = candidates(&ids[..2], &specs);
    rank(&mut c, Some(PARIS), "x", Mode::Normal, Depth::All);
    assert_eq!(order(&c, &ids), vec![1, 0]);
    assert!(c[1]
        .reason(chosen(&c), &Basis::Distance)
        .contains("10 bytes/s out vs 0"));
}

#[test]
fn exclusions_and_their_reasons() {
    let ids = peer_ids(7);
    let mut specs = vec![
        spec(WireRole::Origin, "a", Some(LONDON)),
        spec(WireRole::Edge, "a", Some(LONDON)),
        spec(WireRole::SatelliteUplink, "a", Some(LONDON)),
        spec(WireRole::Mesh, "a", Some(LONDON)),
        spec(WireRole::Edge, "a", Some(LONDON)),
        spec(WireRole::Edge, "a", Some(NEW_YORK)),
        spec(WireRole::Origin, "a", Some(LONDON)),
    ];
    specs[0].state = MemberState::Dead;
    specs[1].state = MemberState::Suspect;
    specs[3].holds = false;
    specs[4].http = "0.0.0.0:8080";
    specs[5].holds = false; // an edge: fills on demand
    specs[6].http = "";
    let mut c = candidates(&ids, &specs);
    let (basis, outcome) = rank(&mut c, Some(LONDON), "a", Mode::Normal, Depth::All);
    assert_eq!(outcome, Outcome::Geo);
    let ch = chosen(&c).expect("the New York edge");
    assert_eq!(ch.peer_id, &ids[5]);
    assert!(ch
        .reason(Some(ch), &basis)
        .contains("fills the content on demand"));
    let reasons: Vec<(usize, String)> = c
        .iter()
        .map(|x| {
            (
                ids.iter().position(|i| i == x.peer_id).unwrap(),
                x.reason(Some(ch), &basis),
            )
        })
        .collect();
    let reason = |i: usize| reasons.iter().find(|(j, _)| *j == i).unwrap().1.clone();
    assert_eq!(reason(0), "dead");
    assert_eq!(reason(1), "suspect");
    assert_eq!(reason(2), "role satellite-uplink does not serve viewers");
    assert_eq!(reason(3), "does not hold the content");
    assert_eq!(reason(4), "advertises no usable viewer address");
    assert_eq!(reason(6), "advertises no usable viewer address");
    // Excluded candidates still carry their distance.
    assert!(c.iter().all(|x| x.distance_km.is_some()));

    // Nothing eligible.
    let mut specs = vec![spec(WireRole::Origin, "a", Some(LONDON))];
    specs[0].state = MemberState::Dead;
    let mut c = candidates(&ids[..1], &specs);
    let (_, outcome) = rank(&mut c, Some(LONDON), "a", Mode::Normal, Depth::All);
    assert_eq!(outcome, Outcome::NoCandidate);
    assert!(chosen(&c).is_none());
}

#[test]
fn a_partial_ranking_agrees_with_the_full_one() {
    // Seeded pseudo-random tables; many equal loads so the tie-breaks are exercised.
    let ids = peer_ids(40);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for round in 0..200 {
        let specs: Vec<Spec> = (0..40)
            .map(|_| {
                let mut s = spec(
                    [WireRole::Origin, WireRole::Edge, WireRole::Mesh][next(3) as usize],
                    ["a", "b"][next(2) as usize],
                    (next(5) > 0).then(|| (next(120) as f64 - 60.0, next(360) as f64 - 180.0)),
                );
                s.conns = next(3) as u32;
                s.bytes = next(2);
                s.silent_ms = next(2) * 100;
                s.holds = next(2) == 0;
                s.state = [MemberState::Alive, MemberState::Alive, MemberState::Suspect]
                    [next(3) as usize];
                s
            })
            .collect();
        let client = (round % 3 != 0).then_some((10.0, 20.0));
        let mut all = candidates(&ids, &specs);
        let (_, outcome) = rank(&mut all, client, "a", Mode::Normal, Depth::All);
        let eligible = all.iter().take_while(|c| c.is_eligible()).count();
        assert!(all[eligible..].iter().all(|c| !c.is_eligible()));
        for n in [0, 1, 3, 100] {
            let mut part = candidates(&ids, &specs);
            let (_, o) = rank(&mut part, client, "a", Mode::Normal, Depth::Best(n));
            assert_eq!(o, outcome);
            let k = n.min(eligible);
            assert_eq!(
                order(&part[..k], &ids),
                order(&all[..k], &ids),
                "round {round}"
            );
            assert!(part[..k].iter().all(Candidate::is_eligible));
            if eligible == 0 {
                assert_eq!(order(&part, &ids), order(&all, &ids));
            }
        }
    }
}

#[test]
fn without_a_client_location_the_home_region_first() {
    let ids = peer_ids(4);
    let mut specs = vec![
        spec(WireRole::Origin, "us", Some(NEW_YORK)),
        spec(WireRole::Edge, "eu", Some(PARIS)),
        spec(WireRole::Edge, "eu", None),
        spec(WireRole::Edge, "ap", Some(SYDNEY)),
    ];
    specs[1].conns = 3;
    let mut c = candidates(&ids, &specs);
    let (basis, outcome) = rank(&mut c, None, "eu", Mode::Normal, Depth::All);
    assert_eq!(outcome, Outcome::Fallback);
    assert_eq!(basis, Basis::Region { home: "eu" });
    assert_eq!(&order(&c, &ids)[..2], &[2, 1]);
    assert!(c.iter().all(|x| x.distance_km.is_none()));
    let ch = chosen(&c).unwrap();
    assert_eq!(
        ch.reason(Some(ch), &basis),
        "chosen: in this node's region (eu), least loaded"
    );
    assert!(c[2]
        .reason(Some(ch), &basis)
        .contains("not in this node's region (eu)"));
    assert!(basis.to_string().contains("no location"));
    // No node in the region: least loaded anywhere.
    let mut c = candidates(&ids, &specs);
    let (basis, _) = rank(&mut c, None, "mars", Mode::Normal, Depth::All);
    let ch = chosen(&c).unwrap();
    assert!(ch
        .reason(Some(ch), &basis)
        .contains("no node that can serve is in"));
}

#[test]
fn nodes_without_a_location_rank_after_located_ones() {
    let ids = peer_ids(2);
    let specs = vec![
        spec(WireRole::Edge, "x", None),
        spec(WireRole::Edge, "x", Some(SYDNEY)),
    ];
    let mut c = candidates(&ids, &specs);
    rank(&mut c, Some(LONDON), "x", Mode::Normal, Depth::All);
    assert_eq!(order(&c, &ids), vec![1, 0]);
    assert!(c[1]
        .reason(chosen(&c), &Basis::Distance)
        .contains("no location known"));
}

#[test]
fn decide_uses_the_membership_and_reuses_its_vector() {
    use crate::control::fixtures::heartbeat;
    use crate::control::membership::{Membership, MembershipConfig};

    let mut table = Membership::new(MembershipConfig {
        suspect_after_missed: 3,
        dead_after_missed: 6,
        dead_retention: Duration::from_secs(60),
        max_members: 16,
        max_period: Duration::from_secs(4),
    });
    let t0 = Instant::now();
    let ids = peer_ids(4);
    for (i, (loc, holds)) in [(PARIS, true), (SYDNEY, true), (NEW_YORK, false)]
        .into_iter()
        .enumerate()
    {
        let mut hb = heartbeat();
        hb.role = WireRole::Mesh;
        hb.location = Some(loc);
        hb.addrs.http = format!("192.0.2.{}:8080", i + 1);
        hb.interval_ms = 1000;
        hb.contents = if holds {
            vec![HeldContent {
                id: "song".into(),
                version: 1,
                mesh_root: [0; 32],
                bytes: 0,
            }]
        } else {
            Vec::new()
        };
        table.observe(ids[i + 1], hb, t0);
    }
    let trusted = nets(&["127.0.0.1/32"]);
    let settings = Settings {
        geo: GeoAvailability::NotConfigured,
        trusted_proxies: &trusted,
        home_region: "eu",
        mode: Mode::Normal,
    };
    let this = Candidate::this_node(
        &ids[0],
        WireRole::Origin,
        "us",
        Some(NEW_YORK),
        "192.0.2.9:8080",
        Load::default(),
        false,
    );
    let mut out = take_scratch();
    let d = decide(
        &settings,
        ip("127.0.0.1"),
        [&b"8.8.8.8"[..]],
        this,
        table.members(),
        "song",
        t0,
        Depth::All,
        &mut out,
    );
    assert_eq!(d.client.ip, ip("8.8.8.8"));
    assert!(matches!(d.geo.source, LocationSource::NotConfigured));
    assert_eq!(d.outcome, Outcome::Fallback);
    assert!(d.held_anywhere);
    assert_eq!(out.len(), 4);
    // This node (origin, not holding) and the New York mesh node are excluded.
    assert_eq!(out.iter().filter(|c| c.is_eligible()).count(), 2);
    let cap = out.capacity();
    return_scratch(out);
    let again = take_scratch();
    assert!(again.capacity() >= cap && again.is_empty());
    return_scratch(again);
}
