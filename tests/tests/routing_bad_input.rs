//! Every bad input of geo-routing has a defined answer on real processes: malformed, private and
//! untrusted `X-Forwarded-For`, a record without coordinates, no database, a missing and a
//! corrupt database file (fallback by region, with the reason stated); unknown and malformed
//! content ids (404, 400); a cluster with no live candidate (503 with `Retry-After`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use mhc_tests::mmdb::{geoip2_city, MmdbValue, MmdbWriter};
use mhc_tests::{
    assert_success, wait_until, write_synthetic_rendition, Cluster, NodeOptions, NodeProcess,
};

const LONDON: (f64, f64) = (51.5074, -0.1278);
const PARIS: (f64, f64) = (48.8566, 2.3522);
const SYDNEY: (f64, f64) = (-33.8688, 151.2093);

fn write_db(path: &Path) {
    let net = |s: &str| s.parse().expect("network literal");
    let mut w = MmdbWriter::new("GeoLite2-City", 6);
    w.insert(
        net("8.8.8.0/24"),
        geoip2_city("US", "NA", 37.4056, -122.0775, "Mountain View"),
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

fn geo(db: &Path, trusted: &str) -> String {
    format!(
        "[geo]\ndatabase = {:?}\ntrusted_proxies = [{trusted:?}]\n",
        db.to_str().expect("utf-8 path")
    )
}

fn route(n: &NodeProcess, xff: Option<&str>) -> (u16, serde_json::Value) {
    let headers: Vec<(&str, &str)> = xff.map(|x| ("X-Forwarded-For", x)).into_iter().collect();
    let r = n.request("GET", "/v1/route/song", &headers);
    (r.status, r.json())
}

#[test]
fn bad_inputs_have_defined_answers() {
    let mut c = Cluster::new();
    let db = c.path().join("city.mmdb");
    write_db(&db);
    let corrupt = c.path().join("corrupt.mmdb");
    std::fs::write(
        &corrupt,
        b"this is not a MaxMind database, just some bytes".repeat(50),
    )
    .unwrap();
    let missing = c.path().join("no-such-dir/city.mmdb");

    let mut idx: HashMap<&str, usize> = HashMap::new();
    let lon = c.start_with(
        "lon",
        NodeOptions::new("origin")
            .placed("eu-west", LONDON.0, LONDON.1)
            .extra(&geo(&db, "127.0.0.1")),
    );
    idx.insert("lon", lon);
    let dir = c.path().join("song");
    write_synthetic_rendition(&dir, 2, 1_000, 3);
    assert_success(&c.node(lon).ingest("song", &dir), "ingest");
    let boot = c.node(lon).p2p.clone();
    for (name, role, region, at, extra) in [
        // Trusts only 10.0.0.0/8, so the test's 127.0.0.1 is not a trusted proxy; no database.
        (
            "nodb",
            "mesh",
            "eu-west",
            PARIS,
            "[geo]\ntrusted_proxies = [\"10.0.0.0/8\"]\n".to_owned(),
        ),
        (
            "missing",
            "satellite-uplink",
            "ap-southeast",
            SYDNEY,
            format!(
                "{}[satellite]\nuplink = \"udp://127.0.0.1:5999\"\n",
                geo(&missing, "127.0.0.1")
            ),
        ),
        (
            "corrupt",
            "edge",
            "eu-west",
            PARIS,
            geo(&corrupt, "127.0.0.1"),
        ),
        ("syd", "edge", "ap-southeast", SYDNEY, String::new()),
    ] {
        let i = c.start_with(
            name,
            NodeOptions::new(role)
                .placed(region, at.0, at.1)
                .bootstrap(&boot)
                .extra(&extra),
        );
        idx.insert(name, i);
    }
    let node = |name: &str| c.node(idx[name]);
    assert!(
        wait_until(Duration::from_secs(30), || {
            c.nodes.iter().all(|n| {
                n.alive_members() == 4
                    && n.cluster_view().is_some_and(|v| {
                        v["members"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m["role"] == "origin" && m["contents"] == 1)
                            || v["self"]["role"] == "origin"
                    })
            })
        }),
        "cluster did not converge"
    );
    let region_of: HashMap<String, &str> = [
        ("lon", "eu-west"),
        ("corrupt", "eu-west"),
        ("syd", "ap-southeast"),
    ]
    .into_iter()
    .map(|(n, r)| {
        (
            format!("http://{}/v1/content/song/index.m3u8", node(n).addr()),
            r,
        )
    })
    .collect();
    let fallback = |v: &serde_json::Value, home: &str| {
        assert_eq!(v["outcome"], "fallback", "{v:#}");
        assert!(v["ranking"].as_str().unwrap().starts_with(&format!(
            "the client has no location: nodes in this node's region ({home}) first"
        )));
        let chosen = v["chosen"]["playlist"].as_str().unwrap();
        assert_eq!(region_of.get(chosen).copied(), Some(home), "{v:#}");
        assert!(v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["distance_km"].is_null()));
    };

    // Malformed X-Forwarded-For from a trusted proxy: the peer address, and it says so.
    for bad in ["not-an-ip", "1.2.3", "8.8.8.8, ", "unknown", "999.0.0.1"] {
        let (status, v) = route(node("lon"), Some(bad));
        assert_eq!(status, 200, "{bad:?}: {v:#}");
        assert_eq!(v["client"]["address"], "127.0.0.1", "{bad:?}");
        let source = v["client"]["address_source"].as_str().unwrap();
        assert!(
            source.contains("malformed") && source.contains("ignored"),
            "{source}"
        );
        assert_eq!(
            v["client"]["location_source"],
            "no record for this address (private/loopback)"
        );
        fallback(&v, "eu-west");
        let r = node("lon").request("GET", "/play/song", &[("X-Forwarded-For", bad)]);
        assert_eq!(r.status, 302);
        assert_eq!(
            region_of.get(r.header("location").unwrap()).copied(),
            Some("eu-west")
        );
    }
    // A private address vouched for by the proxy: used, but the database has no record.
    let (_, v) = route(node("lon"), Some("192.168.1.20"));
    assert_eq!(v["client"]["address"], "192.168.1.20");
    assert_eq!(v["client"]["location"], serde_json::Value::Null);
    assert_eq!(
        v["client"]["location_source"],
        "no record for this address (private/loopback)"
    );
    fallback(&v, "eu-west");
    // A record with a country but no coordinates.
    let (_, v) = route(node("lon"), Some("5.5.5.5"));
    assert_eq!(v["client"]["country"], "DE");
    assert_eq!(
        v["client"]["location_source"],
        "geo database (its record for this address has no coordinates)"
    );
    fallback(&v, "eu-west");
    // The same node routes by distance when the address is good (the database works).
    let (_, v) = route(node("lon"), Some("8.8.8.8"));
    assert_eq!(v["outcome"], "geo");

    // Untrusted peer: X-Forwarded-For ignored; and this node has no geo database.
    let (status, v) = route(node("nodb"), Some("8.8.8.8"));
    assert_eq!(status, 200);
    assert_eq!(v["client"]["address"], "127.0.0.1");
    assert_eq!(
        v["client"]["address_source"],
        "connection peer: X-Forwarded-For ignored, the peer is not in geo.trusted_proxies"
    );
    assert_eq!(v["client"]["location_source"], "no geo database configured");
    fallback(&v, "eu-west");
    let me = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["self"] == true)
        .unwrap()
        .clone();
    assert_eq!(me["reason"], "does not hold the content");

    // Missing database file: stated, with the path; the node itself (an uplink) never serves.
    let (status, v) = route(node("missing"), Some("8.8.8.8"));
    assert_eq!(status, 200);
    assert_eq!(v["client"]["address"], "8.8.8.8");
    let source = v["client"]["location_source"].as_str().unwrap();
    assert!(
        source.starts_with("geo database failed to load: ")
            && source.contains("no such file or directory")
            && source.contains("no-such-dir/city.mmdb"),
        "{source}"
    );
    fallback(&v, "ap-southeast");
    let me = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["self"] == true)
        .unwrap()
        .clone();
    assert_eq!(me["reason"], "role satellite-uplink does not serve viewers");
    assert_eq!(me["eligible"], false);

    // Corrupt database file.
    let (status, v) = route(node("corrupt"), Some("8.8.8.8"));
    assert_eq!(status, 200);
    let source = v["client"]["location_source"].as_str().unwrap();
    assert!(
        source.starts_with("geo database failed to load: ") && source.contains("corrupt"),
        "{source}"
    );
    fallback(&v, "eu-west");

    // Unknown and malformed content ids, on a node that holds content and on one that does not.
    for n in ["lon", "nodb"] {
        for path in [
            "/play/nope",
            "/v1/route/nope",
            "/v1/content/nope/master.m3u8",
        ] {
            let r = node(n).get(path);
            assert_eq!(r.status, 404, "{n} {path}: {}", r.text());
            assert!(r.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("unknown content nope"));
        }
        for path in [
            "/play/Bad!Id",
            "/v1/route/UPPER",
            "/v1/content/a%20b/master.m3u8",
        ] {
            assert_eq!(node(n).get(path).status, 400, "{n} {path}");
        }
    }
    assert!(node("lon").metric("mhc_routing_decisions_total{outcome=\"fallback\"}") >= Some(7.0));

    // No live candidate: every node that may serve "song" is killed (the origin and both
    // edges); the content is still known (the dead origin listed it), so the answer is 503.
    for name in ["lon", "corrupt", "syd"] {
        let i = idx[name];
        c.node_mut(i).kill9();
    }
    let node = |name: &str| c.node(idx[name]);
    for asked in ["nodb", "missing"] {
        assert!(
            wait_until(Duration::from_secs(15), || node(asked)
                .get("/play/song")
                .status
                == 503),
            "{asked} never answered 503"
        );
        for path in [
            "/play/song",
            "/v1/route/song",
            "/v1/content/song/master.m3u8",
        ] {
            let r = node(asked).get(path);
            assert_eq!(r.status, 503, "{asked} {path}: {}", r.text());
            let retry: u64 = r
                .header("retry-after")
                .expect("Retry-After")
                .parse()
                .expect("Retry-After in seconds");
            assert!(retry >= 1);
            let v = r.json();
            assert!(v["error"]
                .as_str()
                .unwrap()
                .starts_with("no live node can serve song"));
            assert_eq!(v["outcome"], "no_candidate");
            assert!(v["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["eligible"] == false && c["chosen"] == false));
        }
        assert!(
            node(asked).metric("mhc_routing_decisions_total{outcome=\"no_candidate\"}")
                >= Some(3.0)
        );
    }
}
