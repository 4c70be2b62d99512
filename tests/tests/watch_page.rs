//! The pages a person opens, in real browsers (headless Chromium via playwright-core, Debian's
//! Firefox ESR via puppeteer-core, WebKitGTK via WebDriver; `tests/browser/page.mjs`), on real
//! processes: `/watch/{id}` plays a content through an edge
//! and verifies every segment against the publisher's signature; one byte flipped in a segment
//! by a proxy in front of one node is caught, fetched again from another node, and reported
//! to the node that served the page; a manifest signed by a key the page does not trust is
//! refused with the reason. `/ui` shows every member of a 5-node cluster and the mode change
//! after an emergency command (screenshots in `target/test-artifacts/`).

use std::time::Duration;

use mhc_tests::{
    artifacts_dir, assert_success, copy_sample, open_page, wait_until, Cluster, NodeOptions,
};

/// Media segments of the sample (2 s each), plus its init segment: what a full play verifies.
const SAMPLE_SEGMENTS: u64 = 4;

/// An origin holding the sample and `edges` edges that trust it.
fn cluster_with_sample(edges: usize, mesh: usize) -> (Cluster, Vec<usize>) {
    let mut c = Cluster::new();
    let o = c.start_with("origin", NodeOptions::new("origin").heartbeat_ms(250));
    let dir = c.path().join("sample");
    copy_sample(&dir);
    assert_success(&c.node(o).ingest("sample", &dir), "ingest");
    let boot = c.node(o).p2p.clone();
    let trust = format!(
        "[trust]\npublishers = [\"{}\"]\n",
        c.node(o).public_key.as_deref().unwrap()
    );
    let mut all = vec![o];
    for (role, n) in [("edge", edges), ("mesh", mesh)] {
        for i in 0..n {
            all.push(
                c.start_with(
                    &format!("{role}{i}"),
                    NodeOptions::new(role)
                        .heartbeat_ms(250)
                        .bootstrap(&boot)
                        .extra(&trust),
                ),
            );
        }
    }
    let expected = all.len();
    assert!(
        wait_until(Duration::from_secs(20), || all.iter().all(|&n| c
            .node(n)
            .alive_members()
            + 1
            >= expected)),
        "every node sees every other"
    );
    (c, all)
}

#[test]
fn the_watch_page_verifies_every_segment_survives_a_lying_node_and_refuses_an_unknown_publisher() {
    let (c, nodes) = cluster_with_sample(2, 0);
    let edge = c.node(nodes[1]);
    let url = format!("http://{}/watch/sample", edge.addr());

    // The page and its assets: a strict policy, immutable digest URLs, compression.
    let page = edge.get("/watch/sample");
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"),
        "{csp}"
    );
    let html = page.text();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script URL");
    assert!(script.starts_with("/assets/watch.js?v="), "{script}");
    let js = edge.request("GET", script, &[("Accept-Encoding", "gzip, br")]);
    assert_eq!(js.status, 200);
    assert_eq!(js.header("content-encoding"), Some("br"));
    assert!(js
        .header("cache-control")
        .is_some_and(|v| v.contains("immutable")));
    let plain = edge.request("GET", script, &[]);
    assert!(plain.header("content-encoding").is_none());
    assert!(
        plain.body.len() > 3 * js.body.len(),
        "brotli shrinks the bundle"
    );

    // A full play, every segment verified, from the nodes the master playlist lists: in
    // Chromium, in Firefox (Debian's ESR, over WebDriver BiDi) and in WebKit (WebKitGTK's
    // MiniBrowser over WebDriver: Safari's engine).
    for (browser, env) in [
        ("chromium", &[][..]),
        ("firefox", &[("MHC_BROWSER", "firefox")][..]),
        ("webkit", &[("MHC_BROWSER", "webkit")][..]),
    ] {
        let (ok, seen) = open_page(
            &url,
            "watch && (watch.error || watch.currentTime > 7)",
            60,
            Some(&artifacts_dir().join(format!("watch-verified-{browser}.png"))),
            env,
        );
        let w = &seen["watch"];
        assert!(ok && w["error"].is_null(), "{browser} did not play: {seen}");
        assert_eq!(w["verified"], SAMPLE_SEGMENTS + 1, "{browser}: {seen}");
        assert_eq!(w["failed"], 0, "{browser}: {seen}");
        assert!(
            seen["text"].as_str().unwrap().contains("verified"),
            "{seen}"
        );
        assert_eq!(
            seen["cspViolations"],
            serde_json::json!([]),
            "{browser}: {seen}"
        );
        assert_eq!(
            seen["failedResponses"],
            serde_json::json!([]),
            "{browser}: {seen}"
        );
    }

    // A proxy in front of the first node asked for segment 3 flips one of its bytes: the page
    // names it, takes segment 3 from another node, plays on without a stall longer than one
    // segment, and reports the node to the edge that served the page.
    let (ok, seen) = open_page(
        &url,
        "watch && (watch.error || watch.currentTime > 7)",
        60,
        Some(&artifacts_dir().join("watch-lying-node.png")),
        &[("MHC_TAMPER_PATH", "/v1/content/sample/seg/3.")],
    );
    let w = &seen["watch"];
    assert!(ok && w["error"].is_null(), "the page stopped: {seen}");
    let liar = seen["tamperedOrigin"]
        .as_str()
        .expect("a node was lied for");
    assert_eq!(seen["tampered"], 1, "{seen}");
    assert_eq!(w["failed"], 1, "{seen}");
    assert_eq!(w["refetched"], 1, "{seen}");
    assert_eq!(w["verified"], SAMPLE_SEGMENTS + 1, "{seen}");
    let failure = w["failures"][0].as_str().unwrap();
    assert!(
        failure.contains("segment 3") && failure.contains(liar),
        "{failure}"
    );
    assert_ne!(w["node"].as_str(), Some(liar), "still served by the liar");
    assert!(
        w["longestStallMs"].as_f64().unwrap() < 2000.0,
        "a stall longer than one segment: {seen}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || edge
            .metric("mhc_bad_segment_reports_total{outcome=\"accepted\"}")
            == Some(1.0)),
        "the report reached the edge"
    );
    let reports = edge.cluster_view().unwrap()["bad_segment_reports"].clone();
    assert_eq!(reports[0]["node"], liar, "{reports}");
    assert_eq!(reports[0]["segment"], 3, "{reports}");

    // A well-formed manifest signed by a key nobody configured: refused, nothing played.
    let (ok, seen) = open_page(
        &url,
        "watch && watch.error",
        30,
        Some(&artifacts_dir().join("watch-unknown-publisher.png")),
        &[("MHC_RESIGN_MANIFEST", "1")],
    );
    let w = &seen["watch"];
    assert!(ok, "no refusal: {seen}");
    let error = w["error"].as_str().unwrap();
    assert!(
        error.contains("not a publisher this page trusts"),
        "{error}"
    );
    assert!(seen["text"].as_str().unwrap().contains(error), "{seen}");
    assert_eq!(w["verified"], 0);
    assert_eq!(w["playing"], false);

    // Verified segments in the wrong order (a playlist with two swapped): refused, said why.
    let (ok, seen) = open_page(
        &url,
        "watch && watch.error",
        30,
        None,
        &[("MHC_SWAP_PLAYLIST", "1")],
    );
    assert!(ok && seen["swapped"].as_u64() >= Some(1), "{seen}");
    let error = seen["watch"]["error"].as_str().unwrap();
    assert!(
        error.contains("does not match the signed manifest"),
        "{error}"
    );

    // Reports are bounded and checked: only JSON (a page of another site cannot send that
    // without a preflight), well-formed, at most 2 KiB; the reporter's address is kept.
    let post = |content_type: &str, body: &[u8]| {
        mhc_tests::http_post_typed(edge.addr(), "/v1/reports/bad-segment", content_type, body)
            .unwrap()
            .status
    };
    assert_eq!(post("text/plain", b"{}"), 415);
    assert_eq!(post("application/json", b"{\"x\":1}"), 400);
    assert_eq!(post("application/json", &[b'a'; 4096]), 413);
    assert_eq!(reports[0]["reporter"], "127.0.0.1", "{reports}");
    // The routing explainer takes only an address.
    assert_eq!(edge.get("/v1/route/sample?client=nonsense").status, 400);
    let asked = edge.get("/v1/route/sample?client=203.0.113.9").json();
    assert_eq!(asked["client"]["address"], "203.0.113.9", "{asked}");
}

#[test]
fn the_operator_page_shows_every_member_and_the_mode_change() {
    let (c, nodes) = cluster_with_sample(2, 2);
    let edge = c.node(nodes[1]);
    let url = format!("http://{}/ui", edge.addr());
    let peers: Vec<String> = nodes
        .iter()
        .map(|&n| {
            let id = c.node(n).peer_id.clone().unwrap();
            id[id.len() - 12..].to_owned()
        })
        .collect();
    let every_member = peers
        .iter()
        .map(|p| format!("text.includes('{p}')"))
        .collect::<Vec<_>>()
        .join(" && ");
    let (ok, seen) = open_page(
        &url,
        &format!(
            "text.includes('5 alive') && {every_member} && text.includes('origin {}')",
            peers[0]
        ),
        30,
        Some(&artifacts_dir().join("ui-normal.png")),
        &[],
    );
    assert!(ok, "/ui did not show the cluster: {seen}");
    assert_eq!(seen["cspViolations"], serde_json::json!([]), "{seen}");
    let text = seen["text"].as_str().unwrap();
    assert!(text.contains("Mode\nnormal"), "{text}");
    // The content, where it is held (the origin, from its heartbeat), and its watch page.
    assert!(text.contains("sample"), "{text}");

    let key = c.operator_key_file();
    let node = format!("http://{}", edge.addr());
    assert_success(
        &edge.cli(&[
            "emergency",
            "activate",
            "--reason",
            "storm over the coast",
            "--key",
            key.to_str().unwrap(),
            "--node",
            &node,
        ]),
        "emergency activate",
    );
    let (ok, seen) = open_page(
        &url,
        "text.includes('emergency: storm over the coast')",
        30,
        Some(&artifacts_dir().join("ui-emergency.png")),
        &[],
    );
    assert!(ok, "/ui did not show the emergency: {seen}");
}
