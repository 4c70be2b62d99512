//! The viewer plane of a real origin process: every path and header of the map's table, RFC 9110
//! ranges and validators, CORS, Merkle proof headers, and the bad inputs.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;

use mhc_manifest::{parse_media_playlist, verify_segment, SignedManifest};
use mhc_tests::{assert_success, copy_sample, Cluster, NodeProcess};

fn origin_with_sample(c: &mut Cluster) -> usize {
    let i = c.start("origin", "origin", "[cache]\nmemory_mb = 64\ndisk_gb = 1\n");
    let sample = c.path().join("sample");
    copy_sample(&sample);
    let out = c.node(i).ingest("sample", &sample);
    assert_success(&out, "ingest");
    i
}

fn public_key(node: &NodeProcess) -> ed25519_dalek::VerifyingKey {
    let runtime: serde_json::Value =
        serde_json::from_slice(&fs::read(node.data_dir.join("runtime.json")).unwrap()).unwrap();
    let mut key = [0u8; 32];
    hex::decode_to_slice(runtime["public_key"].as_str().unwrap(), &mut key).unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap()
}

#[test]
fn playlist_manifest_and_segments_verify_end_to_end() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let node = c.node(o);

    let pl = node.get("/v1/content/sample/index.m3u8");
    assert_eq!(pl.status, 200);
    assert_eq!(
        pl.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(pl.header("access-control-allow-origin"), Some("*"));
    assert!(pl.header("etag").is_some());
    let playlist = parse_media_playlist(&pl.text()).expect("served playlist parses");
    assert_eq!(playlist.segments.len(), 4);
    assert_eq!(playlist.map_uri.as_deref(), Some("init.mp4?v=1"));
    assert!(playlist.end_list);

    // The manifest is signed by the origin's key and names every segment.
    let resp = node.get("/v1/content/sample/manifest");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/vnd.mhc.manifest")
    );
    let signed = SignedManifest::decode(&resp.body).expect("manifest decodes");
    signed
        .verify(&[public_key(node)])
        .expect("signed by the origin");
    let m = &signed.manifest;
    assert_eq!(m.segments.len(), 4);
    let json = node.get("/v1/content/sample/manifest?format=json").json();
    assert_eq!(json["manifest"]["content_id"], "sample");
    assert_eq!(json["manifest"]["merkle_root"], hex::encode(m.merkle_root));

    let root_hex = hex::encode(m.merkle_root);
    for (i, seg) in playlist.segments.iter().enumerate() {
        let resp = node.get(&format!("/v1/content/sample/{}", seg.uri));
        assert_eq!(resp.status, 200, "segment {i}");
        let file = fs::read(c.path().join(format!("sample/seg_{i:03}.m4s"))).unwrap();
        assert_eq!(resp.body, file, "segment {i} bytes");
        let hash = *blake3::hash(&resp.body).as_bytes();
        assert_eq!(hash, m.segments[i].hash);
        assert_eq!(
            resp.header("x-mhc-segment-hash"),
            Some(hex::encode(hash).as_str())
        );
        assert_eq!(
            resp.header("etag"),
            Some(format!("\"{}\"", hex::encode(hash)).as_str())
        );
        assert_eq!(resp.header("x-mhc-merkle-root"), Some(root_hex.as_str()));
        assert_eq!(
            resp.header("x-mhc-segment-index"),
            Some(format!("{i}/4").as_str())
        );
        assert_eq!(
            resp.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(resp.header("content-type"), Some("video/iso.segment"));
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        assert!(resp
            .header("access-control-expose-headers")
            .unwrap()
            .contains("x-mhc-merkle-proof"));
        // A player holding only the signed root checks this one segment.
        let proof = resp.header("x-mhc-merkle-proof").unwrap();
        assert!(
            verify_segment(&m.merkle_root, i, 4, &hash, proof),
            "proof {i}"
        );
        assert!(!verify_segment(
            &m.merkle_root,
            (i + 1) % 4,
            4,
            &hash,
            proof
        ));
    }
    let init = node.get("/v1/content/sample/init.mp4");
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    assert_eq!(
        init.body,
        fs::read(c.path().join("sample/init.mp4")).unwrap()
    );
}

#[test]
fn ranges_head_and_validators_per_rfc_9110() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let node = c.node(o);
    let path = "/v1/content/sample/seg/1.m4s";
    let full = node.get(path);
    let len = full.body.len();
    let etag = full.header("etag").unwrap().to_owned();

    let r = node.request("GET", path, &[("Range", "bytes=0-99")]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-99/{len}").as_str())
    );
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(r.body, full.body[..100]);

    let r = node.request("GET", path, &[("Range", "bytes=-10")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, full.body[len - 10..]);
    let r = node.request("GET", path, &[("Range", "bytes=100-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, full.body[100..]);
    let r = node.request("GET", path, &[("Range", &format!("bytes=10-{}", len * 2))]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, full.body[10..]);

    let r = node.request("GET", path, &[("Range", &format!("bytes={len}-"))]);
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    assert!(r.body.is_empty());

    // Multiple ranges and garbage are ignored: the whole representation.
    for range in ["bytes=0-1,5-6", "bytes=x-y", "lines=1-2"] {
        let r = node.request("GET", path, &[("Range", range)]);
        assert_eq!(r.status, 200, "{range}");
        assert_eq!(r.body.len(), len);
    }
    // If-Range: honoured only with the current strong tag.
    let r = node.request("GET", path, &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    let r = node.request(
        "GET",
        path,
        &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len);

    // HEAD: the GET headers, no body.
    let h = node.request("HEAD", path, &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), Some(len.to_string().as_str()));
    for name in [
        "etag",
        "x-mhc-merkle-proof",
        "x-mhc-segment-hash",
        "content-type",
    ] {
        assert_eq!(h.header(name), full.header(name), "{name}");
    }

    // If-None-Match → 304 with the validator, no body.
    for inm in [
        etag.clone(),
        format!("W/\"nope\", W/{etag}"),
        "*".to_owned(),
    ] {
        let r = node.request("GET", path, &[("If-None-Match", &inm)]);
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = node.request("GET", path, &[("If-None-Match", "\"other\"")]);
    assert_eq!(r.status, 200);

    let pl = node.get("/v1/content/sample/index.m3u8");
    let pl_etag = pl.header("etag").unwrap().to_owned();
    let r = node.request(
        "GET",
        "/v1/content/sample/index.m3u8",
        &[("If-None-Match", &pl_etag)],
    );
    assert_eq!(r.status, 304);

    // CORS preflight of a browser player asking for a range.
    let r = node.request(
        "OPTIONS",
        path,
        &[
            ("Origin", "http://player.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("range"));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("GET"));

    let r = node.request("POST", path, &[("Content-Length", "0")]);
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("HEAD"));

    // Everything above is counted by route and status.
    assert!(
        node.metric("mhc_http_requests_total{route=\"segment\",status=\"206\"}")
            .unwrap()
            >= 5.0
    );
    assert!(
        node.metric("mhc_http_requests_total{route=\"segment\",status=\"416\"}")
            .unwrap()
            >= 1.0
    );
    assert!(
        node.metric("mhc_http_requests_total{route=\"segment\",status=\"304\"}")
            .unwrap()
            >= 3.0
    );
    assert!(node.metric("mhc_store_hits_total").unwrap() >= 1.0);
    assert!(node.metric("mhc_http_response_body_bytes_total").unwrap() >= len as f64);
    assert!(
        node.metric("mhc_http_request_duration_seconds_count")
            .unwrap()
            >= 10.0
    );
}

#[test]
fn bad_requests_get_clear_answers_and_the_node_keeps_serving() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let node = c.node(o);
    let cases: &[(&str, u16)] = &[
        ("/v1/content/BAD!id/index.m3u8", 400),
        ("/v1/content/-starts-with-dash/index.m3u8", 400),
        ("/v1/content/nope/index.m3u8", 404),
        ("/v1/content/nope/manifest", 404),
        ("/v1/content/nope/seg/0.m4s", 404),
        ("/v1/content/sample/seg/abc.m4s", 400),
        ("/v1/content/sample/seg/1", 400),
        ("/v1/content/sample/seg/-1.m4s", 400),
        ("/v1/content/sample/seg/99.m4s", 404),
        ("/v1/content/sample/seg/1.ts", 404),
        ("/v1/content/sample/seg/1.m4s?v=abc", 400),
        ("/v1/content/sample/seg/1.m4s?v=0", 400),
        ("/v1/content/sample/seg/1.m4s?v=9", 404),
        ("/v1/content/sample/other", 404),
        ("/v1/content/sample", 404),
        ("/nothing/here", 404),
        ("/v1//content", 400),
        ("/play/nope", 404),
        ("/play/NOPE!", 400),
        ("/v1/route/nope", 404),
    ];
    for (path, want) in cases {
        let r = node.get(path);
        assert_eq!(r.status, *want, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
    let long = format!("/v1/content/{}/index.m3u8", "a".repeat(600));
    assert_eq!(node.get(&long).status, 400);

    // Garbage on the socket: that connection is answered 400 or closed; the node lives on.
    for garbage in [
        &b"\x00\x01\x02 not http\r\n\r\n"[..],
        b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(node.addr()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(garbage).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{text}"
        );
    }
    assert_eq!(node.get("/v1/content/sample/seg/0.m4s").status, 200);
}

#[test]
fn listing_routing_cluster_and_health() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let node = c.node(o);
    assert_eq!(node.get("/healthz").status, 200);
    assert_eq!(node.get("/readyz").status, 200);

    let list = node.get("/v1/content").json();
    let items = list["content"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], "sample");
    assert_eq!(items[0]["segments"], 4);
    assert_eq!(items[0]["duration_ms"], 8000);
    assert_eq!(items[0]["playlist"], "/v1/content/sample/index.m3u8");

    let play = node.get("/play/sample");
    assert_eq!(play.status, 302);
    // Routed: an absolute URL on the chosen node (here the only one, this node).
    let here = format!("http://{}/v1/content/sample/index.m3u8", node.addr());
    assert_eq!(play.header("location"), Some(here.as_str()));
    assert_eq!(play.header("cache-control"), Some("no-store"));

    let route = node.get("/v1/route/sample").json();
    assert_eq!(route["content_id"], "sample");
    assert_eq!(route["client"]["address"], "127.0.0.1");
    assert_eq!(route["candidates"][0]["chosen"], true);
    assert_eq!(
        route["candidates"][0]["peer_id"],
        node.peer_id.clone().unwrap()
    );

    let cluster = node.get("/v1/cluster").json();
    assert_eq!(cluster["self"]["peer_id"], node.peer_id.clone().unwrap());
    assert_eq!(cluster["self"]["role"], "origin");
    assert_eq!(cluster["mode"], "normal");
    assert!(cluster["members"].is_array());

    let metrics = node.get("/metrics");
    assert_eq!(
        metrics.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = metrics.text();
    for family in [
        "mhc_http_requests_total",
        "mhc_http_response_body_bytes_total",
        "mhc_http_request_duration_seconds_bucket",
        "mhc_store_hits_total",
        "mhc_store_misses_total",
        "mhc_store_corrupt_total",
        "mhc_ingests_total{outcome=\"published\"} 1",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }

    // The operator's view through the admin socket.
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let out = node.cli(&["status", "--data-dir", &data_dir]);
    assert_success(&out, "status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(node.peer_id.as_deref().unwrap()), "{table}");
    assert!(table.contains("sample"), "{table}");
}
