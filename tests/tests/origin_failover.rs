//! Origins that elect their primary through a real etcd (`[ha]`): one primary writes, the
//! standby refuses writes and names the primary; a SIGKILLed primary is replaced within the
//! lease's TTL + 5 s and comes back as a standby; a primary cut from etcd stops writing before
//! its lease can expire.
//!
//! Needs `etcd` on the PATH (`.ci/run` installs Debian's etcd-server).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mhc_tests::etcd::Etcd;
use mhc_tests::{
    assert_success, wait_until, write_synthetic_rendition, Cluster, NodeOptions, NodeProcess,
};

/// The lease's time to live in these tests, seconds (5: renewals every 1.7 s with a 1 s
/// margin leave room for a loaded 2-core CI machine).
const TTL: u64 = 5;

fn ha_toml(etcd: &Etcd) -> String {
    ha_toml_at(&etcd.url)
}

/// `[ha]` on the etcd at `url`.
fn ha_toml_at(url: &str) -> String {
    format!("[ha]\netcd = [\"{url}\"]\nname = \"test-origins\"\nlease_ttl_s = {TTL}\n")
}

/// An operator's webhook on loopback: the JSON bodies POSTed to it, in order of arrival.
fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice(&body) {
                    seen.lock().unwrap().push(v);
                }
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, events)
}

/// `/v1/cluster`'s `self.ha` of `node`.
fn ha(node: &NodeProcess) -> serde_json::Value {
    node.get("/v1/cluster").json()["self"]["ha"].clone()
}

/// Waits up to `within` for `node` to be in `state`; its `self.ha` then.
fn wait_for(node: &NodeProcess, state: &str, within: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let reached = wait_until(within, || {
        last = ha(node);
        last["state"] == state
    });
    assert!(
        reached,
        "{} is not {state} after {within:?}: {last}\nlog:\n{}",
        node.name,
        node.log_tail()
    );
    last
}

/// What `observer`'s membership table says of origin `peer`'s writes (`accepts`, `epoch`).
fn writes_seen(observer: &NodeProcess, peer: &str) -> Option<(bool, u64)> {
    let view = observer.cluster_view()?;
    let m = view["members"]
        .as_array()?
        .iter()
        .find(|m| m["peer_id"] == peer)?
        .clone();
    Some((
        m["writes"]["accepts"].as_bool()?,
        m["writes"]["epoch"].as_u64()?,
    ))
}

/// A real etcd and two origins on it that sign with one publisher key: A primary (in the
/// returned epoch), then B its standby.
fn primary_and_standby() -> (Etcd, Cluster, usize, usize, u64) {
    let etcd = Etcd::start();
    let mut c = Cluster::new();
    let (key, _) = publisher_key(&c);
    let toml = format!("[origin]\npublisher_key = {key:?}\n{}", ha_toml(&etcd));
    let a = c.start("origin-a", "origin", &toml);
    let epoch = wait_for(c.node(a), "primary", Duration::from_secs(10))["epoch"]
        .as_u64()
        .unwrap();
    let b = c.start("origin-b", "origin", &toml);
    wait_for(c.node(b), "standby", Duration::from_secs(10));
    (etcd, c, a, b, epoch)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_standby_takes_over_from_a_killed_primary_which_returns_as_a_standby() {
    let etcd = Etcd::start();
    let mut c = Cluster::new();
    // Both origins sign with one publisher key, so what either published stays valid.
    let (publisher_key, publisher) = publisher_key(&c);
    let origin_toml = format!(
        "[origin]\npublisher_key = {publisher_key:?}\n{}",
        ha_toml(&etcd)
    );
    let published_by = |node: &NodeProcess, id: &str| -> String {
        node.get(&format!("/v1/content/{id}/manifest?format=json"))
            .json()["manifest"]["publisher"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };

    let a = c.start("origin-a", "origin", &origin_toml);
    let first = wait_for(c.node(a), "primary", Duration::from_secs(10));
    let epoch_a = first["epoch"].as_u64().unwrap();
    assert!(epoch_a > 0, "{first}");
    let peer_a = c.node(a).peer_id.clone().unwrap();
    assert_eq!(first["primary"], peer_a.as_str());

    let p2p_a = c.node(a).p2p.clone();
    let (hook, events) = webhook();
    let b = c.start_with(
        "origin-b",
        NodeOptions::new("origin")
            .bootstrap(&p2p_a)
            .extra(&format!("{origin_toml}notify_url = \"{hook}\"\n")),
    );
    let standby = wait_for(c.node(b), "standby", Duration::from_secs(10));
    assert_eq!(standby["primary"], peer_a.as_str(), "{standby}");
    // An edge learns from gossip which origin takes writes (its reports go there first).
    let edge = c.start_with("edge", NodeOptions::new("edge").bootstrap(&p2p_a));
    let peer_b = c.node(b).peer_id.clone().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            writes_seen(c.node(edge), &peer_a) == Some((true, epoch_a))
                && writes_seen(c.node(edge), &peer_b) == Some((false, epoch_a))
        }),
        "the edge does not see the primary and the standby: {:?}",
        c.node(edge).cluster_view()
    );
    assert_eq!(standby["epoch"].as_u64(), Some(epoch_a), "{standby}");
    let data_b = c.node(b).data_dir.to_str().unwrap().to_owned();
    let status = c.node(b).cli(&["status", "--data-dir", &data_b]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains(&format!("ha: standby (epoch {epoch_a}, primary {peer_a})")),
        "{shown}"
    );
    assert_eq!(c.node(a).metric("mhc_ha_primary"), Some(1.0));
    assert_eq!(c.node(b).metric("mhc_ha_primary"), Some(0.0));

    // The primary publishes; the standby refuses, names the primary and stores nothing.
    let dir = c.path().join("rendition");
    write_synthetic_rendition(&dir, 3, 5_000, 1);
    assert_success(&c.node(a).ingest("song", &dir), "ingest at the primary");
    assert_eq!(published_by(c.node(a), "song"), publisher);
    // The primary's replication log took the publication (the catalog's write, the plugins').
    assert!(
        c.node(a).metric("mhc_replication_log_seq").unwrap_or(0.0) >= 1.0,
        "no replication entry for the ingest"
    );
    let refused = c.node(b).ingest("song", &dir);
    assert!(!refused.status.success());
    let why = stderr(&refused);
    assert!(
        why.contains("standby") && why.contains(&peer_a),
        "the standby's refusal should name the primary: {why}"
    );
    // What it holds is the primary's, replicated: the manifest and its media.
    assert!(
        wait_until(Duration::from_secs(10), || c
            .node(b)
            .get("/v1/content/song/seg/2.ts")
            .status
            == 200),
        "the standby did not replicate the publication:\n{}",
        c.node(b).log_tail()
    );
    assert_eq!(published_by(c.node(b), "song"), publisher);
    // It says how far behind it is; the primary does not.
    assert!(ha(c.node(b))["lag_ms"].is_u64(), "{}", ha(c.node(b)));
    assert!(ha(c.node(a))["lag_ms"].is_null(), "{}", ha(c.node(a)));

    // A crash: the lease is not revoked, it expires.
    let killed = Instant::now();
    c.node_mut(a).kill9();
    let promoted = wait_for(c.node(b), "primary", Duration::from_secs(TTL + 5));
    let takeover = killed.elapsed();
    let epoch_b = promoted["epoch"].as_u64().unwrap();
    assert!(
        epoch_b > epoch_a,
        "epochs only grow: {epoch_a} then {promoted}"
    );
    eprintln!("standby primary {takeover:?} after SIGKILL (lease TTL {TTL} s)");
    write_synthetic_rendition(&dir, 3, 5_000, 2);
    assert_success(
        &c.node(b).ingest("song-2", &dir),
        "ingest at the new primary",
    );
    assert_eq!(published_by(c.node(b), "song-2"), publisher);
    assert_eq!(c.node(b).metric("mhc_ha_epoch"), Some(epoch_b as f64));
    assert!(
        wait_until(Duration::from_secs(10), || writes_seen(
            c.node(edge),
            &peer_b
        ) == Some((true, epoch_b))),
        "the edge does not follow the new primary: {:?}",
        c.node(edge).cluster_view()
    );

    // The operator heard of both primaries from the standby: first A's, then its own.
    let told = |events: &[serde_json::Value]| -> Vec<(String, String, u64)> {
        events
            .iter()
            .map(|e| {
                (
                    e["state"].as_str().unwrap_or("").to_owned(),
                    e["primary"].as_str().unwrap_or("").to_owned(),
                    e["epoch"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let expected = vec![
        ("standby".to_owned(), peer_a.clone(), epoch_a),
        ("primary".to_owned(), peer_b.clone(), epoch_b),
    ];
    assert!(
        wait_until(Duration::from_secs(5), || told(&events.lock().unwrap())
            == expected),
        "notifications: {:?}",
        events.lock().unwrap()
    );
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .all(|e| e["cluster"] == "test-origins" && e["node"] == peer_b.as_str()));

    // The old primary comes back as a standby of the new one and refuses writes.
    c.node_mut(a).options.bootstrap = c.node(b).p2p.clone();
    c.node(a).write_config();
    c.node_mut(a).spawn();
    let back = wait_for(c.node(a), "standby", Duration::from_secs(10));
    assert_eq!(back["primary"], peer_b.as_str(), "{back}");
    assert_eq!(back["epoch"].as_u64(), Some(epoch_b), "{back}");
    let refused = c.node(a).ingest("song-3", &dir);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains(&peer_b), "{}", stderr(&refused));

    // A planned stop revokes the lease: the standby need not wait for it to expire.
    let stopped = Instant::now();
    c.node_mut(b).stop();
    let again = wait_for(c.node(a), "primary", Duration::from_secs(TTL + 5));
    let handover = stopped.elapsed();
    assert!(again["epoch"].as_u64().unwrap() > epoch_b, "{again}");
    eprintln!("standby primary {handover:?} after a graceful stop");
    // An expiring lease takes at least TTL minus a renewal period (2/3 TTL) after the last
    // renewal; a revoked one hands over at once.
    assert!(
        handover < Duration::from_secs(TTL) / 2,
        "a graceful stop should revoke the lease, not let it expire: {handover:?}"
    );
    assert_success(
        &c.node(a).ingest("song-3", &dir),
        "ingest at the returned primary",
    );
}

#[test]
fn a_primary_cut_from_etcd_stops_writing_before_its_lease_can_expire() {
    let (etcd, c, a, b, epoch) = primary_and_standby();

    // etcd stops answering. The lease was last renewed before this instant, so it cannot
    // expire before TTL from now; the primary must have stopped writing by then.
    etcd.freeze();
    let frozen = Instant::now();
    wait_for(c.node(a), "fenced", Duration::from_secs(TTL));
    assert!(
        frozen.elapsed() < Duration::from_secs(TTL),
        "fenced only {:?} after etcd went away",
        frozen.elapsed()
    );
    let dir = c.path().join("rendition");
    write_synthetic_rendition(&dir, 3, 5_000, 1);
    let refused = c.node(a).ingest("song", &dir);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot renew its lease"),
        "{}",
        stderr(&refused)
    );
    // The standby cannot campaign either: nobody writes.
    assert!(!c.node(b).ingest("song", &dir).status.success());

    // etcd back: exactly one primary, in an epoch both agree on. (A frozen etcd expires no
    // lease, so the old primary's renewal may still succeed: then it writes again in its own
    // epoch, which nobody else held meanwhile.)
    etcd.thaw();
    let settled = wait_until(Duration::from_secs(TTL + 10), || {
        let (ha_a, ha_b) = (ha(c.node(a)), ha(c.node(b)));
        let primaries = [&ha_a, &ha_b]
            .iter()
            .filter(|h| h["state"] == "primary")
            .count();
        primaries == 1
            && ha_a["epoch"] == ha_b["epoch"]
            && ha_a["epoch"].as_u64().unwrap_or(0) >= epoch
    });
    assert!(
        settled,
        "no single primary after etcd returned: {} / {}\n{}",
        ha(c.node(a)),
        ha(c.node(b)),
        c.node(a).log_tail()
    );
    let primary = if ha(c.node(a))["state"] == "primary" {
        a
    } else {
        b
    };
    assert_success(
        &c.node(primary).ingest("song", &dir),
        "ingest at the primary",
    );
}

#[test]
fn a_key_deleted_by_hand_elects_anew_only_after_the_old_primary_stopped_writing() {
    let (etcd, c, a, b, epoch) = primary_and_standby();

    // An operator deletes the election key; A's lease lives on until A notices.
    let key = "bWhjL2hhL3Rlc3Qtb3JpZ2lucy9wcmltYXJ5"; // base64("mhc/ha/test-origins/primary")
    let etcd_addr = etcd.url.trim_start_matches("http://").parse().unwrap();
    let deleted = mhc_tests::http_post(
        etcd_addr,
        "/v3/kv/deleterange",
        format!("{{\"key\":\"{key}\"}}").as_bytes(),
    )
    .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(
        deleted.text().contains("\"deleted\":\"1\""),
        "{}",
        deleted.text()
    );

    // Some origin is primary again in a newer epoch (A may win again: it is a race)...
    let mut newer = None;
    let settled = wait_until(Duration::from_secs(TTL + 5), || {
        newer = [a, b].into_iter().find(|&n| {
            let h = ha(c.node(n));
            h["state"] == "primary" && h["epoch"].as_u64().unwrap_or(0) > epoch
        });
        newer.is_some()
    });
    assert!(
        settled,
        "no primary after the key was deleted: {} / {}",
        ha(c.node(a)),
        ha(c.node(b))
    );
    // ...and it became primary only after A had stopped writing (the logs share one clock;
    // tracing's UTC stamps sort as text).
    let stopped = stamp_of(c.node(a), &|l| l.contains("writes stopped"))
        .unwrap_or_else(|| panic!("A never stopped writing:\n{}", c.node(a).log_tail()));
    let promoted = [a, b]
        .into_iter()
        .filter_map(|n| stamp_of(c.node(n), &|l| promoted_after(l, epoch)))
        .min()
        .expect("a promotion in the logs");
    assert!(
        stopped < promoted,
        "a new primary at {promoted}, but A stopped writing only at {stopped}"
    );
}

/// The time stamp of the first line of `node`'s log that `needle` picks (the logs share one
/// clock; tracing's UTC stamps sort as text).
fn stamp_of(node: &NodeProcess, needle: &dyn Fn(&str) -> bool) -> Option<String> {
    std::fs::read_to_string(&node.log_path)
        .unwrap()
        .lines()
        .find(|l| needle(l))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
}

/// Whether a log line says its node became primary in an epoch after `epoch`.
fn promoted_after(line: &str, epoch: u64) -> bool {
    line.contains("primary changed state=\"primary\"")
        && line
            .split("epoch=")
            .nth(1)
            .and_then(|e| e.split_whitespace().next())
            .and_then(|e| e.parse::<u64>().ok())
            .is_some_and(|e| e > epoch)
}

/// Segments of each test content.
const SEGMENTS: usize = 20;
/// Minor units per second watched and per play (from 30 s on), for every country.
const RATE: (i64, i64) = (1, 5);

/// What a session of `segments` 2-second segments earns.
fn earned(segments: usize) -> i64 {
    let seconds = 2 * segments as i64;
    seconds * RATE.0 + if seconds >= 30 { RATE.1 } else { 0 }
}

/// One viewer session at `node` (a session is a client address; the edge trusts loopback's
/// `X-Forwarded-For`): `segments` segments of `id`; how many were served.
fn watch(node: &NodeProcess, id: &str, viewer_ip: &str, segments: usize) -> usize {
    let headers = [("X-Forwarded-For", viewer_ip)];
    (0..segments)
        .filter(|i| {
            node.request("GET", &format!("/v1/content/{id}/seg/{i}.ts"), &headers)
                .status
                == 200
        })
        .count()
}

/// A fresh publisher key in the cluster's folder: its path and public key.
fn publisher_key(c: &Cluster) -> (std::path::PathBuf, String) {
    let path = c.path().join("publisher.key");
    let keygen = std::process::Command::new(mhc_tests::node_binary())
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert_success(&keygen, "keygen");
    let id = std::process::Command::new(mhc_tests::node_binary())
        .args(["id", "--key"])
        .arg(&path)
        .output()
        .unwrap();
    let public = String::from_utf8_lossy(&id.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public_key: ").map(str::to_owned))
        .expect("the publisher's public key");
    (path, public)
}

/// An origin that books plays (royalty at [`RATE`] everywhere, the ledger), signs with the
/// shared publisher key `key` and elects its primary on the etcd at `etcd_url`.
fn booking_origin_toml(key: &std::path::Path, etcd_url: &str) -> String {
    format!(
        "[reports]\nreport_interval_s = 1\n\
         [plugins.royalty]\ncurrency = \"EUR\"\n\
         rates = {{ \"*\" = {{ per_second_micro = {}, per_play_micro = {} }} }}\n\
         [plugins.ledger]\n\
         [origin]\npublisher_key = {key:?}\n{}",
        RATE.0 * 1_000_000,
        RATE.1 * 1_000_000,
        ha_toml_at(etcd_url)
    )
}

/// An edge that trusts `publisher`, reports every second, and takes a viewer's address from
/// the `X-Forwarded-For` that the test (at `proxy_ip`) sends.
fn reporting_edge(publisher: &str, proxy_ip: &str) -> NodeOptions {
    NodeOptions::new("edge").heartbeat_ms(250).extra(&format!(
        "[trust]\npublishers = [\"{publisher}\"]\n[reports]\nreport_interval_s = 1\n\
         [geo]\ntrusted_proxies = [\"{proxy_ip}/32\"]\n"
    ))
}

#[test]
fn acknowledged_reports_and_publications_survive_the_loss_of_the_primary() {
    let etcd = Etcd::start();
    let mut c = Cluster::new();
    let (key, publisher) = publisher_key(&c);
    let origin_toml = booking_origin_toml(&key, &etcd.url);
    let origin = |bootstrap: &[String]| {
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .bootstrap(bootstrap)
            .extra(&origin_toml)
    };
    let a = c.start_with("origin-a", origin(&[]));
    wait_for(c.node(a), "primary", Duration::from_secs(10));
    let p2p_a = c.node(a).p2p.clone();
    let b = c.start_with("origin-b", origin(&p2p_a));
    wait_for(c.node(b), "standby", Duration::from_secs(10));
    let edge = c.start_with(
        "edge",
        reporting_edge(&publisher, "127.0.0.1").bootstrap(&p2p_a),
    );

    // A publication at the primary is acknowledged once the standby holds it, media included.
    let dir = c.path().join("song-a");
    write_synthetic_rendition(&dir, SEGMENTS, 10_000, 1);
    assert_success(
        &c.node(a).ingest_as("song-a", "Song A", "alice", &dir),
        "ingest at the primary",
    );
    // (Its manifest is published there only once every blob was copied and verified; the
    // media is not fetched here, which would be a play.)
    assert_eq!(
        c.node(b)
            .get("/v1/content/song-a/manifest?format=json")
            .status,
        200,
        "acknowledged but not at the standby"
    );
    assert!(
        wait_until(Duration::from_secs(10), || c.node(edge).alive_members()
            >= 2),
        "the edge does not see the origins"
    );

    // Viewers play at the edge while the primary is killed in the middle of an ingest.
    let big = c.path().join("song-b");
    write_synthetic_rendition(&big, 200, 100_000, 2);
    let mut expected = 0;
    let mut ingest = None;
    let mut killed = None;
    for round in 0..10 {
        if round == 3 {
            let data_dir = c.node(a).data_dir.to_str().unwrap().to_owned();
            ingest = Some(
                std::process::Command::new(mhc_tests::node_binary())
                    .args(["ingest", "--data-dir", &data_dir, "--content-id", "song-b"])
                    .args(["--title", "Song B", "--artist", "alice"])
                    .arg(&big)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(300));
            c.node_mut(a).kill9();
            killed = Some(Instant::now());
        }
        let n = watch(
            c.node(edge),
            "song-a",
            &format!("10.0.0.{}", 10 + round),
            16,
        );
        assert_eq!(n, 16, "the edge stopped serving");
        expected += earned(n);
        std::thread::sleep(Duration::from_millis(400));
    }
    let promoted = wait_for(c.node(b), "primary", Duration::from_secs(TTL + 5));
    eprintln!(
        "standby primary {:?} after SIGKILL: {promoted}",
        killed.unwrap().elapsed()
    );
    let ingest = ingest.unwrap().wait_with_output().unwrap();
    eprintln!(
        "the ingest the primary died in: {}",
        if ingest.status.success() {
            "acknowledged"
        } else {
            "not acknowledged"
        }
    );
    if ingest.status.success() {
        // Acknowledged: the standby held it before the primary died.
        assert_eq!(
            c.node(b)
                .get("/v1/content/song-b/manifest?format=json")
                .status,
            200,
            "an acknowledged ingest is missing at the new primary"
        );
    }

    // Every play is in the new primary's books exactly once, and its ledger verifies.
    assert!(
        wait_until(Duration::from_secs(30), || c.node(b).royalty_earned("alice") == expected),
        "alice earned {} at the new primary, the plays made {expected}\nedge:\n{}\nnew primary:\n{}",
        c.node(b).royalty_earned("alice"),
        c.node(edge).log_tail(),
        c.node(b).log_tail(),
    );
    assert!(wait_until(Duration::from_secs(10), || c
        .node(edge)
        .metric("mhc_reports_outbox")
        == Some(0.0)));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.node(b).royalty_earned("alice"), expected, "counted twice");
    let data_b = c.node(b).data_dir.to_str().unwrap().to_owned();
    assert_success(
        &c.node(b).cli(&["ledger", "verify", "--data-dir", &data_b]),
        "ledger verify at the new primary",
    );

    // The edge fills what the new primary publishes.
    let dir = c.path().join("song-c");
    write_synthetic_rendition(&dir, SEGMENTS, 10_000, 3);
    assert_success(
        &c.node(b).ingest_as("song-c", "Song C", "alice", &dir),
        "ingest at the new primary",
    );
    assert!(
        wait_until(Duration::from_secs(10), || watch(
            c.node(edge),
            "song-c",
            "10.0.1.1",
            SEGMENTS
        ) == SEGMENTS),
        "the edge does not fill from the new primary:\n{}",
        c.node(edge).log_tail()
    );

    // The old primary returns as a standby and replicates the new primary's catalog.
    c.node_mut(a).options.bootstrap = c.node(b).p2p.clone();
    c.node(a).write_config();
    c.node_mut(a).spawn();
    wait_for(c.node(a), "standby", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(20), || c
            .node(a)
            .get("/v1/content/song-c/seg/0.ts")
            .status
            == 200),
        "the returned origin does not replicate the new primary:\n{}",
        c.node(a).log_tail()
    );
    assert!(
        wait_until(Duration::from_secs(10), || c
            .node(a)
            .metric("mhc_replication_lag_entries")
            == Some(0.0)),
        "the returned origin does not catch up"
    );
}

/// What `origin`'s QUIC plane answers `as_node` (an enrolled node, whose key and certificate
/// are used; the client binds next to `bind_ip`) when asked for the manifest of `id`.
fn ask_manifest(
    origin: &NodeProcess,
    as_node: &NodeProcess,
    bind_ip: &str,
    id: &str,
) -> mhc_transport::ResponseHeader {
    use mhc_transport::{QuicClient, Request};
    let seed: [u8; 32] = std::fs::read(as_node.data_dir.join("node.key"))
        .unwrap()
        .try_into()
        .expect("a 32-byte node key");
    let certificate = std::fs::read(as_node.data_dir.join("node.cert")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = QuicClient::new(format!("{bind_ip}:0").parse().unwrap(), seed).unwrap();
        let peer = origin.peer_id.as_deref().unwrap().parse().unwrap();
        let conn = client
            .connect(origin.quic.unwrap(), Some(peer))
            .await
            .unwrap();
        conn.request(&Request::Hello { certificate }, 0)
            .await
            .unwrap();
        let req = Request::GetManifest {
            content_id: id.into(),
            min_version: 0,
        };
        conn.request(&req, 1 << 20).await.unwrap().0
    })
}

/// A network namespace joined to the test's own by two cables: one that carries only etcd's
/// traffic, one for everything else; deleted (with its cables) on drop.
struct Island {
    ns: String,
    /// The test's end of the etcd cable.
    etcd_cable: String,
}

/// The island's address on the cable for everything else; the test's end is `HOST_IP`.
const ISLAND_IP: &str = "10.232.0.5";
const HOST_IP: &str = "10.232.0.6";
/// etcd's address on the etcd cable (the island's end is 10.232.0.1).
const ETCD_IP: &str = "10.232.0.2";

impl Island {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let island = Island {
            ns: format!("mhcI{id}"),
            etcd_cable: format!("mhe{id}"),
        };
        mhc_tests::ip(&["netns", "add", &island.ns]);
        for (host_end, island_end, host_ip, island_ip) in [
            (
                island.etcd_cable.clone(),
                format!("mie{id}"),
                ETCD_IP,
                "10.232.0.1",
            ),
            (format!("mho{id}"), format!("mio{id}"), HOST_IP, ISLAND_IP),
        ] {
            mhc_tests::ip(&[
                "link",
                "add",
                &host_end,
                "type",
                "veth",
                "peer",
                "name",
                &island_end,
            ]);
            mhc_tests::ip(&["link", "set", &island_end, "netns", &island.ns]);
            mhc_tests::ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_end]);
            mhc_tests::ip(&[
                "-n",
                &island.ns,
                "addr",
                "add",
                &format!("{island_ip}/30"),
                "dev",
                &island_end,
            ]);
            mhc_tests::ip(&["link", "set", &host_end, "up"]);
            mhc_tests::ip(&["-n", &island.ns, "link", "set", &island_end, "up"]);
        }
        mhc_tests::ip(&["-n", &island.ns, "link", "set", "lo", "up"]);
        island
    }

    /// Cuts (or mends) the etcd cable only.
    fn etcd_cable(&self, up: bool) {
        mhc_tests::ip(&[
            "link",
            "set",
            &self.etcd_cable,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        // Deleting the namespace deletes its ends of the cables, and with them the other ends.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

#[test]
fn a_primary_cut_from_etcd_but_not_from_its_edges_stops_writing_within_the_ttl() {
    let island = Island::new();
    let etcd = Etcd::start_also_on(Some(ETCD_IP));
    // Declared after the island, so it is dropped first: nodes die before their namespace.
    let mut c = Cluster::new();
    let (key, publisher) = publisher_key(&c);
    // A on the island reaches etcd over the etcd cable only; B and the edge on the test's
    // side reach A over the other one.
    let a = c.start_with(
        "origin-a",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .in_netns(&island.ns, ISLAND_IP)
            .extra(&booking_origin_toml(&key, &etcd.url_on(ETCD_IP))),
    );
    let epoch_a = wait_for(c.node(a), "primary", Duration::from_secs(10))["epoch"]
        .as_u64()
        .unwrap();
    let p2p_a = c.node(a).p2p.clone();
    let b = c.start_with(
        "origin-b",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .on_ip(HOST_IP)
            .bootstrap(&p2p_a)
            .extra(&booking_origin_toml(&key, &etcd.url)),
    );
    wait_for(c.node(b), "standby", Duration::from_secs(10));
    let edge = c.start_with(
        "edge",
        reporting_edge(&publisher, HOST_IP)
            .on_ip(HOST_IP)
            .bootstrap(&p2p_a),
    );
    let dir = c.path().join("song-a");
    write_synthetic_rendition(&dir, SEGMENTS, 10_000, 1);
    assert_success(
        &c.node(a).ingest_as("song-a", "Song A", "alice", &dir),
        "ingest at the primary",
    );
    assert!(
        wait_until(Duration::from_secs(10), || c.node(edge).alive_members()
            >= 2),
        "the edge does not see the origins"
    );
    // Both origins tell which versions exist: the primary, and the standby that follows it.
    for origin in [a, b] {
        let answer = ask_manifest(c.node(origin), c.node(edge), HOST_IP, "song-a");
        assert!(
            matches!(
                answer,
                mhc_transport::ResponseHeader::Manifest { version: 1, .. }
            ),
            "{}: {answer:?}",
            c.node(origin).name
        );
    }
    let mut expected = 0;
    let mut round = 0;
    let mut play = |c: &Cluster| {
        let n = watch(
            c.node(edge),
            "song-a",
            &format!("10.0.0.{}", 10 + round),
            16,
        );
        assert_eq!(n, 16, "the edge stopped serving");
        round += 1;
        expected += earned(n);
    };
    play(&c);
    play(&c);

    // The etcd cable is cut; A still talks with the edge and B.
    island.etcd_cable(false);
    let cut = Instant::now();
    wait_for(c.node(a), "fenced", Duration::from_secs(TTL));
    let fenced_after = cut.elapsed();
    assert!(
        fenced_after < Duration::from_secs(TTL),
        "fenced only {fenced_after:?} after the cut"
    );
    let refused = c.node(a).ingest("song-x", &dir);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot renew its lease"),
        "{}",
        stderr(&refused)
    );
    // Fenced, it no longer tells edges which versions exist: what it wrote last may be
    // nowhere else.
    let answer = ask_manifest(c.node(a), c.node(edge), HOST_IP, "song-a");
    assert!(
        matches!(&answer, mhc_transport::ResponseHeader::NotFound { reason } if reason.contains("fenced")),
        "{answer:?}"
    );
    play(&c);
    let promoted = wait_for(c.node(b), "primary", Duration::from_secs(TTL + 5));
    let epoch_b = promoted["epoch"].as_u64().unwrap();
    eprintln!(
        "A fenced {fenced_after:?} after the cut; B primary after {:?}",
        cut.elapsed()
    );
    // Never two primaries: B's epoch is new, and it began only after A had stopped.
    assert!(epoch_b > epoch_a, "{promoted}");
    // (A's gate closed at the end of its lease's margin, before it logged the fence.)
    let stopped = stamp_of(c.node(a), &|l| l.contains("state=\"fenced\""))
        .unwrap_or_else(|| panic!("A never stopped writing:\n{}", c.node(a).log_tail()));
    let began = stamp_of(c.node(b), &|l| promoted_after(l, epoch_a)).expect("B's promotion");
    assert!(
        stopped < began,
        "B primary at {began}, A stopped at {stopped}"
    );
    play(&c);
    play(&c);

    // Every play is booked once, at the new primary, though A stayed reachable to the edge.
    assert!(
        wait_until(Duration::from_secs(30), || c
            .node(b)
            .royalty_earned("alice")
            == expected),
        "alice earned {} at the new primary, the plays made {expected}\nedge:\n{}\nB:\n{}",
        c.node(b).royalty_earned("alice"),
        c.node(edge).log_tail(),
        c.node(b).log_tail(),
    );
    assert!(wait_until(Duration::from_secs(10), || c
        .node(edge)
        .metric("mhc_reports_outbox")
        == Some(0.0)));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.node(b).royalty_earned("alice"), expected, "counted twice");

    // The cable mended, A finds B primary and follows it.
    island.etcd_cable(true);
    let back = wait_for(c.node(a), "standby", Duration::from_secs(TTL + 10));
    assert_eq!(back["epoch"].as_u64(), Some(epoch_b), "{back}");
    assert!(
        wait_until(Duration::from_secs(20), || c
            .node(a)
            .metric("mhc_replication_lag_entries")
            == Some(0.0)),
        "A does not catch up with B:\n{}",
        c.node(a).log_tail()
    );
}

#[test]
fn a_planned_switchover_hands_over_step_by_step_and_loses_nothing() {
    let (_etcd, c, a, b, epoch) = primary_and_standby();
    let dir = c.path().join("rendition");
    write_synthetic_rendition(&dir, 3, 5_000, 1);
    assert_success(&c.node(a).ingest("song", &dir), "ingest at the primary");
    let switchover = |node: &NodeProcess| {
        node.cli(&[
            "ha",
            "switchover",
            "--config",
            node.config_path.to_str().unwrap(),
        ])
    };
    // The standby refuses: the switchover runs at the primary.
    let refused = switchover(c.node(b));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not the primary"),
        "{}",
        stderr(&refused)
    );

    let out = switchover(c.node(a));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{shown}");
    assert_success(&out, "ha switchover");
    for step in [
        "stop writes",
        "wait for catch-up",
        "release the lease",
        "promote",
        "verify health",
        "notify",
    ] {
        assert!(
            shown
                .lines()
                .any(|l| l.contains(step) && l.contains(" ok ")),
            "step {step:?} missing or failed:\n{shown}"
        );
    }
    let now = ha(c.node(b));
    assert_eq!(now["state"], "primary", "{now}");
    assert!(now["epoch"].as_u64().unwrap() > epoch, "{now}");
    assert_eq!(
        ha(c.node(a))["state"],
        "standby",
        "the old primary should follow the new one"
    );
    // What the old primary published is at the new one; the new one takes writes.
    assert_eq!(c.node(b).get("/v1/content/song/seg/2.ts").status, 200);
    write_synthetic_rendition(&dir, 3, 5_000, 2);
    assert_success(
        &c.node(b).ingest("song-2", &dir),
        "ingest at the new primary",
    );
    assert!(
        wait_until(Duration::from_secs(10), || c
            .node(a)
            .get("/v1/content/song-2/seg/2.ts")
            .status
            == 200),
        "the old primary does not follow the new one:\n{}",
        c.node(a).log_tail()
    );
}

/// Sends `signal` (`STOP`, `CONT`) to `node`'s process.
fn signal(node: &NodeProcess, signal: &str) {
    let pid = node.pid().expect("the node runs");
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {}", node.name);
}

#[test]
fn a_version_no_standby_acknowledged_is_dropped_when_the_old_primary_returns() {
    let (_etcd, mut c, a, b, _) = primary_and_standby();
    let dir = c.path().join("rendition");
    write_synthetic_rendition(&dir, 3, 5_000, 1);
    assert_success(&c.node(a).ingest("song", &dir), "ingest v1 at the primary");
    assert!(
        wait_until(Duration::from_secs(10), || c
            .node(b)
            .get("/v1/content/song/manifest?format=json")
            .status
            == 200),
        "v1 did not reach the standby"
    );

    // The standby stalls: the primary waits for it, gives up, detaches it and acknowledges
    // v2 alone. Then the primary dies with v2 nowhere else.
    signal(c.node(b), "STOP");
    write_synthetic_rendition(&dir, 3, 5_000, 2);
    assert_success(&c.node(a).ingest("song", &dir), "ingest v2 at the primary");
    c.node_mut(a).kill9();
    signal(c.node(b), "CONT");
    wait_for(c.node(b), "primary", Duration::from_secs(TTL + 5));
    let version = |node: &NodeProcess| {
        node.get("/v1/content/song/manifest?format=json").json()["manifest"]["version"].as_u64()
    };
    assert_eq!(
        version(c.node(b)),
        Some(1),
        "v2 was never acknowledged by B"
    );
    // The new primary publishes its own v2.
    write_synthetic_rendition(&dir, 3, 5_000, 3);
    assert_success(
        &c.node(b).ingest("song", &dir),
        "ingest v2 at the new primary",
    );
    assert_eq!(version(c.node(b)), Some(2));
    let segment_b = c.node(b).get("/v1/content/song/seg/0.ts").body;

    // The old primary returns: its own v2 goes, the new primary's takes its place.
    c.node_mut(a).options.bootstrap = c.node(b).p2p.clone();
    c.node(a).write_config();
    c.node_mut(a).spawn();
    wait_for(c.node(a), "standby", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(15), || c
            .node(a)
            .get("/v1/content/song/seg/0.ts")
            .body
            == segment_b),
        "the returned origin still serves its own v2:\n{}",
        c.node(a).log_tail()
    );
    assert_eq!(version(c.node(a)), Some(2));
    assert!(
        std::fs::read_to_string(&c.node(a).log_path)
            .unwrap()
            .contains("dropped a version the primary does not have"),
        "{}",
        c.node(a).log_tail()
    );
}

#[test]
fn a_standby_takes_verified_backups_of_what_it_replicated() {
    let etcd = Etcd::start();
    let mut c = Cluster::new();
    let (key, publisher) = publisher_key(&c);
    let password = c.path().join("backup.pass");
    std::fs::write(&password, "standby backups\n").unwrap();
    let repo = c.path().join("repo");
    let origin_toml = |backup: bool| {
        let mut toml = booking_origin_toml(&key, &etcd.url);
        if backup {
            toml.push_str(&format!(
                "[backup]\nrepository = {repo:?}\npassword_file = {password:?}\nschedule = false\n"
            ));
        }
        toml
    };
    let a = c.start_with(
        "origin-a",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .extra(&origin_toml(false)),
    );
    wait_for(c.node(a), "primary", Duration::from_secs(10));
    let p2p_a = c.node(a).p2p.clone();
    let b = c.start_with(
        "origin-b",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .bootstrap(&p2p_a)
            .extra(&origin_toml(true)),
    );
    wait_for(c.node(b), "standby", Duration::from_secs(10));
    let edge = c.start_with(
        "edge",
        reporting_edge(&publisher, "127.0.0.1").bootstrap(&p2p_a),
    );
    let dir = c.path().join("song-a");
    write_synthetic_rendition(&dir, SEGMENTS, 10_000, 1);
    assert_success(
        &c.node(a).ingest_as("song-a", "Song A", "alice", &dir),
        "ingest at the primary",
    );
    assert!(wait_until(Duration::from_secs(10), || c
        .node(edge)
        .alive_members()
        >= 2));
    assert_eq!(watch(c.node(edge), "song-a", "10.0.0.1", 16), 16);
    // The plays reach the primary's books (and its ledger), and through them the standby's.
    assert!(
        wait_until(Duration::from_secs(20), || c
            .node(a)
            .royalty_earned("alice")
            == earned(16)),
        "the plays were not booked at the primary"
    );
    std::thread::sleep(Duration::from_secs(3));

    // The standby backs up what it holds; the snapshot verifies, ledger included.
    let config_b = c.node(b).config_path.to_str().unwrap().to_owned();
    assert_success(
        &c.node(b).cli(&["backup", "now", "--config", &config_b]),
        "backup now at the standby",
    );
    let verified = c.node(b).cli(&["backup", "verify", "--config", &config_b]);
    assert_success(&verified, "backup verify of the standby's snapshot");
    let shown = String::from_utf8_lossy(&verified.stdout);
    assert!(
        shown.contains("1 signed manifests") && shown.contains("latest signed head matches"),
        "{shown}"
    );
}
