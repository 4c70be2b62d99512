//! Geo-routing on real processes with a tiny MaxMind database written by the test (known
//! networks, exact answers): four nodes on three continents, clients arriving through a trusted
//! proxy (`X-Forwarded-For`) from each network are sent to the nearest node that can serve,
//! `/v1/route` explains it, the master playlist lists the best three nodes, and killing the
//! nearest node moves the answer to the next one within one failure-detection period.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mhc_tests::mmdb::{geoip2_city, MmdbValue, MmdbWriter};
use mhc_tests::{assert_success, wait_until, write_synthetic_rendition, Cluster, NodeOptions};

/// Heartbeat period of the test cluster.
const HEARTBEAT_MS: u64 = 500;
/// `dead_after_missed`: the failure-detection period is this many heartbeats.
const DEAD_AFTER: u32 = 6;

const LONDON: (f64, f64) = (51.5074, -0.1278);
const MOUNTAIN_VIEW: (f64, f64) = (37.3861, -122.0839);
const SYDNEY: (f64, f64) = (-33.8688, 151.2093);
const TOKYO: (f64, f64) = (35.6762, 139.6503);

/// The test database: where the database says each network is (GeoLite2-City layout, IPv6
/// tree with IPv4 inside).
fn write_db(path: &Path) {
    let net = |s: &str| s.parse().expect("network literal");
    let mut w = MmdbWriter::new("GeoLite2-City", 6);
    w.insert(
        net("8.8.8.0/24"),
        geoip2_city("US", "NA", 37.4056, -122.0775, "Mountain View"),
    )
    .insert(
        net("81.2.69.0/24"),
        geoip2_city("GB", "EU", 51.5142, -0.0931, "London"),
    )
    .insert(
        net("1.1.1.0/24"),
        geoip2_city("AU", "OC", -33.8591, 151.2002, "Sydney"),
    )
    .insert(
        net("126.0.0.0/8"),
        geoip2_city("JP", "AS", 35.6895, 139.6917, "Tokyo"),
    )
    .insert(
        net("2001:4860::/32"),
        geoip2_city("CA", "NA", 45.5019, -73.5674, "Montreal"),
    )
    .insert(
        net("5.5.5.0/24"),
        MmdbValue::map([(
            "country",
            MmdbValue::map([("iso_code", MmdbValue::from("DE"))]),
        )]),
    );
    std::fs::write(path, w.to_bytes()).expect("writing the test database");
}

/// The test's own haversine, independent of the node's.
fn km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let (dp, dl) = (p2 - p1, (b.1 - a.1).to_radians());
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

fn geo_toml(db: &Path) -> String {
    format!(
        "[geo]\ndatabase = {:?}\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        db.to_str().expect("utf-8 path")
    )
}

struct Setup {
    c: Cluster,
    /// Node index by name.
    idx: HashMap<&'static str, usize>,
}

impl Setup {
    fn node(&self, name: &str) -> &mhc_tests::NodeProcess {
        self.c.node(self.idx[name])
    }

    /// The playlist URL of node `name`.
    fn playlist(&self, name: &str) -> String {
        format!(
            "http://{}/v1/content/song/index.m3u8",
            self.node(name).addr()
        )
    }

    /// Where `/play/song` at node `at` sends a client "from" `client` (via the trusted proxy).
    fn play_from(&self, at: &str, client: &str) -> (u16, Option<String>) {
        let r = self
            .node(at)
            .request("GET", "/play/song", &[("X-Forwarded-For", client)]);
        (r.status, r.header("location").map(str::to_owned))
    }

    fn route_from(&self, at: &str, client: &str) -> serde_json::Value {
        let r = self
            .node(at)
            .request("GET", "/v1/route/song", &[("X-Forwarded-For", client)]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

fn start() -> Setup {
    let mut c = Cluster::new();
    let db = c.path().join("test-city.mmdb");
    write_db(&db);
    let opts = |role: &str, region: &str, (lat, lon): (f64, f64)| {
        NodeOptions::new(role)
            .heartbeat_ms(HEARTBEAT_MS)
            .placed(region, lat, lon)
            .extra(&geo_toml(&db))
    };
    let mut idx = HashMap::new();
    let mut o = opts("origin", "eu-west", LONDON);
    o.dead_after = DEAD_AFTER;
    idx.insert("lon", c.start_with("lon", o));
    let dir = c.path().join("song");
    write_synthetic_rendition(&dir, 3, 2_000, 7);
    assert_success(&c.node(idx["lon"]).ingest("song", &dir), "ingest");
    let boot = c.node(idx["lon"]).p2p.clone();
    for (name, role, region, at) in [
        ("sfo", "edge", "us-west", MOUNTAIN_VIEW),
        ("syd", "edge", "ap-southeast", SYDNEY),
        ("tyo", "mesh", "ap-northeast", TOKYO),
    ] {
        let mut o = opts(role, region, at).bootstrap(&boot);
        o.dead_after = DEAD_AFTER;
        idx.insert(name, c.start_with(name, o));
    }
    let s = Setup { c, idx };
    // Everyone alive everywhere, and the origin's heartbeat (listing "song") heard by all.
    let converged = wait_until(Duration::from_secs(30), || {
        s.c.nodes.iter().all(|n| {
            n.alive_members() == 3
                && n.cluster_view().is_some_and(|v| {
                    v["self"]["role"] == "origin"
                        || v["members"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m["role"] == "origin" && m["contents"] == 1)
                })
        })
    });
    assert!(converged, "cluster did not converge");
    s
}

#[test]
fn clients_go_to_the_nearest_node_and_fail_over() {
    let s = start();

    // Any node answers, including one that does not hold the content (tyo, a mesh node).
    for at in ["tyo", "lon", "sfo"] {
        for (client, expect) in [
            ("8.8.8.8", "sfo"),
            ("81.2.69.142", "lon"),
            ("1.1.1.1", "syd"),
            // Tokyo's mesh node does not hold "song": the nearest that can serve is Sydney.
            ("126.1.2.3", "syd"),
            // IPv6, placed in Montreal by the database: Mountain View is nearer than London.
            ("2001:4860:4860::8888", "sfo"),
        ] {
            assert_eq!(
                s.play_from(at, client),
                (302, Some(s.playlist(expect))),
                "client {client} asking {at}"
            );
        }
    }

    // The explanation, exactly.
    let v = s.route_from("tyo", "8.8.8.8");
    assert_eq!(v["outcome"], "geo");
    assert_eq!(v["client"]["address"], "8.8.8.8");
    assert_eq!(v["client"]["peer"], "127.0.0.1");
    assert!(v["client"]["address_source"]
        .as_str()
        .unwrap()
        .starts_with("X-Forwarded-For from a trusted proxy"));
    assert_eq!(v["client"]["location_source"], "geo database");
    assert_eq!(v["client"]["country"], "US");
    assert_eq!(v["client"]["continent"], "NA");
    assert_eq!(v["client"]["location"]["lat"], 37.4056);
    assert_eq!(v["chosen"]["playlist"], s.playlist("sfo"));
    let client = (37.4056, -122.0775);
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 4, "{v:#}");
    let by_peer = |name: &str| {
        let peer = s.node(name).peer_id.clone().unwrap();
        cands
            .iter()
            .find(|c| c["peer_id"] == peer.as_str())
            .unwrap_or_else(|| panic!("{name} not among the candidates: {v:#}"))
            .clone()
    };
    for (name, at) in [
        ("lon", LONDON),
        ("sfo", MOUNTAIN_VIEW),
        ("syd", SYDNEY),
        ("tyo", TOKYO),
    ] {
        let c = by_peer(name);
        let d = c["distance_km"].as_f64().unwrap();
        assert!((d - km(client, at)).abs() < 0.2, "{name}: {d} km");
        assert_eq!(c["state"], "alive");
        assert_eq!(c["self"], name == "tyo");
        assert!(c["load"]["connections_open"].is_u64());
        assert_eq!(c["playlist"], s.playlist(name));
    }
    let sfo = by_peer("sfo");
    assert_eq!(sfo["chosen"], true);
    assert_eq!(sfo["rank"], 1);
    assert_eq!(sfo["holds_content"], false);
    assert_eq!(sfo["fills_on_demand"], true);
    assert!(sfo["reason"]
        .as_str()
        .unwrap()
        .starts_with("chosen: nearest node that can serve"));
    let lon = by_peer("lon");
    assert_eq!(
        (lon["chosen"].clone(), lon["rank"].clone()),
        (false.into(), 2.into())
    );
    assert_eq!(lon["holds_content"], true);
    let gap = km(client, LONDON) - km(client, MOUNTAIN_VIEW);
    assert_eq!(
        lon["reason"],
        format!("farther than the chosen node by {gap:.0} km")
    );
    let tyo = by_peer("tyo");
    assert_eq!(tyo["eligible"], false);
    assert_eq!(tyo["rank"], serde_json::Value::Null);
    assert_eq!(tyo["reason"], "does not hold the content");
    assert!(s
        .node("tyo")
        .metric("mhc_routing_decisions_total{outcome=\"geo\"}")
        .is_some_and(|n| n >= 6.0));
    assert!(
        s.node("tyo")
            .metric("mhc_http_requests_total{route=\"play\",status=\"302\"}")
            >= Some(5.0)
    );
    // Five prefixes walked once each; the explanation for 8.8.8.8 came from the prefix cache
    // (and said exactly what the walk said, above).
    let tyo = s.node("tyo");
    assert!(tyo.metric("mhc_geo_cache_lookups_total{result=\"miss\"}") >= Some(5.0));
    assert!(tyo.metric("mhc_geo_cache_lookups_total{result=\"hit\"}") >= Some(1.0));

    // Master playlist at the origin (which holds the manifest): the best three for the client,
    // best first, as redundant streams with the manifest's attributes.
    let r = s.node("lon").request(
        "GET",
        "/v1/content/song/master.m3u8",
        &[("X-Forwarded-For", "8.8.8.8")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let text = r.text();
    let err = mhc_manifest::parse_media_playlist(&text).expect_err("a master playlist");
    assert!(err.to_string().contains("master playlist"), "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    let infs: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(infs.len(), 3, "{text}");
    let uris: Vec<&str> = infs.iter().map(|&i| lines[i + 1]).collect();
    assert_eq!(
        uris,
        [s.playlist("sfo"), s.playlist("lon"), s.playlist("syd")],
        "{text}"
    );
    let manifest = s
        .node("lon")
        .get("/v1/content/song/manifest?format=json")
        .json();
    let hls = &manifest["manifest"]["hls"];
    let mut expected = format!("#EXT-X-STREAM-INF:BANDWIDTH={}", hls["bandwidth_bps"]);
    if hls["average_bandwidth_bps"].as_u64().unwrap() > 0 {
        expected.push_str(&format!(
            ",AVERAGE-BANDWIDTH={}",
            hls["average_bandwidth_bps"]
        ));
    }
    if let Some(codecs) = hls["codecs"].as_str() {
        expected.push_str(&format!(",CODECS=\"{codecs}\""));
    }
    for &i in &infs {
        assert_eq!(lines[i], expected, "{text}");
    }
    // At a node without the manifest: a redirect to the master playlist of a node holding it.
    let r = s.node("tyo").request(
        "GET",
        "/v1/content/song/master.m3u8",
        &[("X-Forwarded-For", "8.8.8.8")],
    );
    let at_origin = format!(
        "http://{}/v1/content/song/master.m3u8",
        s.node("lon").addr()
    );
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some(at_origin.as_str()))
    );

    // Kill the nearest node of the 8.8.8.8 client: the answer moves to London within one
    // failure-detection period (dead_after × heartbeat; routing already drops a member when it
    // turns suspect, after suspect_after of those periods).
    let bound = Duration::from_millis(HEARTBEAT_MS * u64::from(DEAD_AFTER));
    let mut s = s;
    let sfo_idx = s.idx["sfo"];
    s.c.node_mut(sfo_idx).kill9();
    let killed = Instant::now();
    let moved = wait_until(bound * 3, || {
        s.play_from("tyo", "8.8.8.8") == (302, Some(s.playlist("lon")))
    });
    let took = killed.elapsed();
    eprintln!("the answer moved {took:?} after the kill (bound {bound:?})");
    assert!(moved, "the answer never moved to London");
    assert!(
        took <= bound,
        "moved after {took:?}, more than one failure-detection period ({bound:?})"
    );
    let v = s.route_from("tyo", "8.8.8.8");
    let sfo = by_peer_in(&v, s.node("sfo").peer_id.as_deref().unwrap());
    assert_eq!(sfo["eligible"], false);
    let state = sfo["state"].as_str().unwrap();
    assert!(matches!(state, "suspect" | "dead"), "{sfo}");
    assert_eq!(sfo["reason"], state);
    assert_eq!(v["chosen"]["playlist"], s.playlist("lon"));
    // The other clients are unaffected.
    assert_eq!(
        s.play_from("lon", "1.1.1.1"),
        (302, Some(s.playlist("syd")))
    );
}

fn by_peer_in(v: &serde_json::Value, peer: &str) -> serde_json::Value {
    v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["peer_id"] == peer)
        .unwrap_or_else(|| panic!("{peer} not among the candidates: {v:#}"))
        .clone()
}
