//! Play reports, royalties and the ledger on real processes: viewers "from" two countries play
//! two artists' contents through two edges; the edges' signed play reports reach the origin
//! exactly once (through origin and edge crashes), the royalty balances equal what the test
//! computes from the plays it made, the Merkle ledger verifies (also offline from an export),
//! and tampering or forged and replayed reports change nothing.

use std::path::Path;
use std::time::Duration;

use mhc_origin::{PlayEntry, PlayReportBatch, SignedPlayReport};
use mhc_tests::mmdb::{geoip2_city, MmdbWriter};
use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions, NodeProcess};
use mhc_transport::{QuicClient, Request, ResponseHeader};

const SEGMENTS: usize = 20;
/// Minor units per second watched (rates are micro-units per second) and per play, by country.
const GB: (i64, i64) = (1, 5);
/// Opens the plugins' admin routes on the origin's viewer plane.
const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";
const US: (i64, i64) = (2, 10);

fn write_geo_db(path: &Path) {
    let mut w = MmdbWriter::new("GeoLite2-City", 6);
    w.insert(
        "8.8.8.0/24".parse().unwrap(),
        geoip2_city("US", "NA", 37.4056, -122.0775, "Mountain View"),
    )
    .insert(
        "81.2.69.0/24".parse().unwrap(),
        geoip2_city("GB", "EU", 51.5142, -0.0931, "London"),
    );
    std::fs::write(path, w.to_bytes()).unwrap();
}

fn common_toml(c: &Cluster) -> String {
    let db = c.path().join("geo.mmdb");
    if !db.exists() {
        write_geo_db(&db);
    }
    format!(
        "[geo]\ndatabase = {:?}\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [reports]\nreport_interval_s = 1\n",
        db.to_str().unwrap()
    )
}

fn origin_toml(c: &Cluster) -> String {
    format!(
        "{}[http]\nadmin_token = \"{ADMIN_TOKEN}\"\n[plugins.royalty]\ncurrency = \"EUR\"\n\
         rates = {{ GB = {{ per_second_micro = {}, per_play_micro = {} }}, \
                    US = {{ per_second_micro = {}, per_play_micro = {} }}, \
                    \"*\" = {{ per_second_micro = 0, per_play_micro = 0 }} }}\n\
         [plugins.ledger]\n",
        common_toml(c),
        GB.0 * 1_000_000,
        GB.1 * 1_000_000,
        US.0 * 1_000_000,
        US.1 * 1_000_000,
    )
}

fn edge_options(c: &Cluster, origin: &NodeProcess) -> NodeOptions {
    NodeOptions::new("edge")
        .heartbeat_ms(250)
        .bootstrap(&origin.p2p)
        .extra(&format!(
            "[trust]\npublishers = [\"{}\"]\n{}",
            origin.public_key.as_deref().unwrap(),
            common_toml(c)
        ))
}

fn ingest(c: &Cluster, origin: &NodeProcess, id: &str, artist: &str, seed: u8) {
    let dir = c.path().join(id);
    mhc_tests::write_synthetic_rendition(&dir, SEGMENTS, 10_000, seed);
    assert_success(&origin.ingest_as(id, id, artist, &dir), "ingest");
}

/// One viewer session: `segments` segments of `id` from `ip`, identified by `agent`.
/// Returns how many were served.
fn watch(node: &NodeProcess, id: &str, ip: &str, agent: &str, segments: usize) -> usize {
    let headers = [("X-Forwarded-For", ip), ("User-Agent", agent)];
    (0..segments)
        .filter(|i| {
            node.request("GET", &format!("/v1/content/{id}/seg/{i}.ts"), &headers)
                .status
                == 200
        })
        .count()
}

/// The wire form of `batch` signed by `key` without the rules `SignedPlayReport::sign` checks:
/// what a lying node sends.
fn signed_as_is(mut batch: PlayReportBatch, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    batch.node = key.verifying_key().to_bytes();
    let mut out = vec![mhc_origin::PLAY_REPORT_FORMAT_VERSION];
    out.extend(batch.to_postcard());
    out.extend(key.sign(&batch.signing_bytes()).to_bytes());
    out
}

/// What a session earns: 2 s per segment at the country's rate, and a play from 30 s on.
fn earned(rate: (i64, i64), segments: usize) -> i64 {
    let seconds = 2 * segments as i64;
    seconds * rate.0 + if seconds >= 30 { rate.1 } else { 0 }
}

fn ledger(node: &NodeProcess, args: &[&str]) -> std::process::Output {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let mut all = vec!["ledger"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", &data_dir]);
    node.cli(&all)
}

/// An origin with the royalty and ledger plugins, its viewer plane open to the admin token.
fn start_origin(c: &mut Cluster) -> usize {
    let extra = origin_toml(c);
    c.start_with(
        "origin",
        NodeOptions::new("origin").heartbeat_ms(250).extra(&extra),
    )
}

#[test]
fn balances_equal_the_plays_and_the_ledger_verifies_offline() {
    let mut c = Cluster::new();
    let o = start_origin(&mut c);
    ingest(&c, c.node(o), "song-a", "alice", 1);
    ingest(&c, c.node(o), "song-b", "bob", 2);
    let e1 = c.start_with("edge1", edge_options(&c, c.node(o)));
    let e2 = c.start_with("edge2", edge_options(&c, c.node(o)));
    // Each edge finds its parent in the membership: wait until it has admitted the origin.
    assert!(wait_until(Duration::from_secs(10), || c
        .node(o)
        .alive_members()
        >= 2
        && c.node(e1).alive_members() >= 1
        && c.node(e2).alive_members() >= 1));

    let mut alice = 0;
    let mut bob = 0;
    alice += earned(GB, watch(c.node(e1), "song-a", "81.2.69.142", "a1", 20));
    alice += earned(US, watch(c.node(e1), "song-a", "8.8.8.8", "a2", 16));
    bob += earned(US, watch(c.node(e2), "song-b", "8.8.8.8", "b1", 20));
    bob += earned(GB, watch(c.node(e2), "song-b", "81.2.69.142", "b2", 10));
    assert_eq!((alice, bob), (40 + 5 + 64 + 10, 80 + 10 + 20));
    // Another user agent at the same address is the same viewer: its media time counts, but
    // it makes no second play.
    let again = watch(c.node(e1), "song-a", "81.2.69.142", "a1-rotated", 20);
    alice += 2 * again as i64 * GB.0;

    assert!(
        wait_until(Duration::from_secs(20), || c
            .node(o)
            .royalty_earned("alice")
            == alice
            && c.node(o).royalty_earned("bob") == bob),
        "balances: alice {} (expected {alice}), bob {} (expected {bob})\n{}",
        c.node(o).royalty_earned("alice"),
        c.node(o).royalty_earned("bob"),
        c.node(o).log_tail()
    );
    // The same answers on the viewer plane, with the admin token only.
    let path = "/admin/plugins/royalty/balance/alice";
    assert_eq!(c.node(o).get(path).status, 401);
    let wrong = c.node(o).request(
        "GET",
        path,
        &[("Authorization", "Bearer not-the-token-0123456789abcdef")],
    );
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let r = c
        .node(o)
        .request("GET", path, &[("Authorization", &bearer)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["earned_minor"], alice);
    assert_eq!(
        c.node(e1).get(path).status,
        404,
        "an edge has no plugin routes"
    );

    // Two more reporting periods: nothing counted twice.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.node(o).royalty_earned("alice"), alice);
    assert_eq!(c.node(o).royalty_earned("bob"), bob);

    // The ledger verifies at the origin and offline, from an export.
    assert_success(&ledger(c.node(o), &["verify"]), "ledger verify");
    let export = c.path().join("ledger.json");
    assert_success(
        &ledger(c.node(o), &["export", "--out", export.to_str().unwrap()]),
        "ledger export",
    );
    let proof = c.path().join("proof.json");
    assert_success(
        &ledger(c.node(o), &["proof", "1", "--out", proof.to_str().unwrap()]),
        "ledger proof",
    );
    let key = c.node(o).public_key.clone().unwrap();
    let offline = |args: &[&str]| {
        std::process::Command::new(mhc_tests::node_binary())
            .args(args)
            .output()
            .unwrap()
    };
    assert_success(
        &offline(&[
            "ledger",
            "verify",
            "--export",
            export.to_str().unwrap(),
            "--public-key",
            &key,
        ]),
        "offline verify",
    );
    let out = offline(&[
        "ledger",
        "verify-proof",
        "--export",
        export.to_str().unwrap(),
        "--proof",
        proof.to_str().unwrap(),
    ]);
    assert_success(&out, "offline inclusion proof");
    assert!(String::from_utf8_lossy(&out.stdout).contains("entry 1 "));

    // One byte changed in an export: verification names the entry.
    let text = std::fs::read_to_string(&export).unwrap();
    let line = text
        .lines()
        .position(|l| l.replace(' ', "").contains("\"index\":1,"))
        .unwrap_or_else(|| panic!("entry 1 in the export:\n{}", &text[..text.len().min(3000)]));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = lines[line].find("\"amount_minor\"").expect("amount field") + "\"amount_minor\"".len();
    let digit = lines[line][at..]
        .find(|ch: char| ch.is_ascii_digit())
        .expect("a digit")
        + at;
    lines[line].insert(digit, '9');
    let tampered = c.path().join("tampered.json");
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let out = offline(&["ledger", "verify", "--export", tampered.to_str().unwrap()]);
    assert!(!out.status.success(), "a tampered export verified");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("first bad entry: 1"), "{err}");

    // Forged and replayed reports, straight to the origin's QUIC plane.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let origin_quic = c.node(o).quic.unwrap();
    let origin_peer = c.node(o).peer_id.as_deref().unwrap().parse().unwrap();
    // Sent as the node of `seed`, after a hello with `certificate` when there is one.
    let send_as = |seed: [u8; 32], certificate: Option<Vec<u8>>, bytes: Vec<u8>| {
        runtime.block_on(async {
            let client = QuicClient::new("127.0.0.1:0".parse().unwrap(), seed).unwrap();
            let conn = client
                .connect(origin_quic, Some(origin_peer))
                .await
                .unwrap();
            // A refused hello does not stop a hostile sender: the report goes anyway.
            if let Some(certificate) = certificate {
                conn.request(&Request::Hello { certificate }, 0)
                    .await
                    .unwrap();
            }
            let (header, _) = conn
                .request(&Request::PutPlayReport { report: bytes }, 0)
                .await
                .unwrap();
            header
        })
    };
    let batch = |seq: u64, plays: u64| PlayReportBatch {
        node: [0; 32],
        seq,
        period_start_ms: 1,
        period_end_ms: 2,
        entries: vec![PlayEntry {
            content_id: "song-a".into(),
            country: "GB".into(),
            segments: 100,
            bytes: 1,
            seconds_ms: 200_000,
            sessions: 50,
            plays,
        }],
    };
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let forged = SignedPlayReport::sign(batch(1, 50), &stranger)
        .unwrap()
        .encode();
    // Unenrolled, with and without a hello: not even looked at.
    let empty_hello = Some(Vec::new());
    for hello in [None, empty_hello] {
        let header = send_as([9; 32], hello, forged.clone());
        assert!(
            matches!(header, ResponseHeader::NotAdmitted { .. }),
            "a non-member's report was taken: {header:?}"
        );
    }
    assert_eq!(
        c.node(o)
            .metric("mhc_reports_rejected_total{reason=\"not_enrolled\"}")
            .unwrap(),
        2.0
    );
    // A member's key (edge 1's) over edge 1's own admitted connection.
    let seed: [u8; 32] = std::fs::read(c.node(e1).data_dir.join("node.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let certificate = std::fs::read(c.node(e1).data_dir.join("node.cert")).unwrap();
    let send = |bytes: Vec<u8>| send_as(seed, Some(certificate.clone()), bytes);
    // Signed by a stranger, though: refused.
    assert!(
        matches!(
            send(forged),
            ResponseHeader::Busy { .. } | ResponseHeader::Error { .. }
        ),
        "a non-member's report was acknowledged"
    );
    // With a sequence number edge 1 already used: refused.
    let edge_key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let reused = SignedPlayReport::sign(batch(1, 50), &edge_key)
        .unwrap()
        .encode();
    assert!(matches!(send(reused), ResponseHeader::Error { .. }));
    let rejected = c
        .node(o)
        .metric("mhc_reports_received_total{outcome=\"rejected\"}")
        .unwrap();
    assert!(rejected >= 2.0);
    // Figures that cannot be true, from the member: more plays than sessions (refused as it
    // decodes), more media time than a hundred segments of song-a hold (refused against its
    // manifest). Neither is credited (the balance is checked below).
    let mut too_many_plays = batch(2_000_000, 60);
    too_many_plays.entries[0].sessions = 10;
    let mut too_long = batch(2_000_001, 0);
    too_long.entries[0].seconds_ms = 100 * 3_600_000;
    for lie in [too_many_plays, too_long] {
        assert!(matches!(
            send(signed_as_is(lie, &edge_key)),
            ResponseHeader::Error { .. }
        ));
    }
    assert_eq!(
        c.node(o)
            .metric("mhc_reports_rejected_total{reason=\"implausible\"}")
            .unwrap(),
        2.0
    );
    // An exact replay of a stored report is acknowledged again and changes nothing. (A fresh
    // report of the member, for a country without a rate, so it credits nothing itself.)
    let mut fresh = batch(1_000_000, 0);
    fresh.entries[0].country = "FR".into();
    let fresh = SignedPlayReport::sign(fresh, &edge_key).unwrap().encode();
    assert!(matches!(
        send(fresh.clone()),
        ResponseHeader::ReportAck { .. }
    ));
    assert!(matches!(send(fresh), ResponseHeader::ReportAck { .. }));
    assert_eq!(
        c.node(o)
            .metric("mhc_reports_received_total{outcome=\"duplicate\"}")
            .unwrap(),
        1.0
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        c.node(o).royalty_earned("alice"),
        alice,
        "a forged report was credited"
    );
}

#[test]
fn no_report_is_lost_or_counted_twice_when_the_origin_and_an_edge_are_killed() {
    let mut c = Cluster::new();
    let o = start_origin(&mut c);
    ingest(&c, c.node(o), "song-a", "alice", 1);
    let e = c.start_with("edge", edge_options(&c, c.node(o)));
    // Each side must have admitted the other: the edge finds its parent in the membership.
    assert!(wait_until(Duration::from_secs(10), || c
        .node(o)
        .alive_members()
        >= 1
        && c.node(e).alive_members() >= 1));
    // Fill the edge first, so it serves on while the origin is down.
    assert_eq!(
        watch(c.node(e), "song-a", "10.0.0.1", "warmup", SEGMENTS),
        SEGMENTS
    );

    // Sessions keep coming while the origin is killed mid-stream (reports in flight, ledger
    // appending) and restarted.
    let mut expected = 0;
    for round in 0..12 {
        if round == 4 {
            c.node_mut(o).kill9();
        }
        // A new viewer (a new address) every round.
        let (ip, rate) = if round % 2 == 0 {
            (format!("81.2.69.{}", 10 + round), GB)
        } else {
            (format!("8.8.8.{}", 10 + round), US)
        };
        let n = watch(c.node(e), "song-a", &ip, &format!("viewer-{round}"), 16);
        assert_eq!(n, 16, "the edge stopped serving");
        expected += earned(rate, n);
        std::thread::sleep(Duration::from_millis(300));
    }
    // The last counts are sealed into the outbox; the origin is still down, so they wait.
    assert!(
        wait_until(Duration::from_secs(5), || c
            .node(e)
            .metric("mhc_reports_outbox")
            .unwrap_or(0.0)
            > 0.0),
        "no batch waits for the dead origin"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // The edge dies with unsent batches; both come back (the edge told where the origin now
    // listens, as an operator's bootstrap list would).
    c.node_mut(e).kill9();
    c.node_mut(o).spawn();
    let boot = c.node(o).p2p.clone();
    c.node_mut(e).options.bootstrap = boot;
    c.node(e).write_config();
    c.node_mut(e).spawn();
    assert!(
        wait_until(Duration::from_secs(30), || c
            .node(o)
            .royalty_earned("alice")
            == expected),
        "alice earned {} after the crashes, the plays made {expected}\nedge:\n{}\norigin:\n{}",
        c.node(o).royalty_earned("alice"),
        std::fs::read_to_string(&c.node(e).log_path).unwrap_or_default(),
        std::fs::read_to_string(&c.node(o).log_path).unwrap_or_default(),
    );
    assert!(wait_until(Duration::from_secs(10), || c
        .node(e)
        .metric("mhc_reports_outbox")
        == Some(0.0)));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.node(o).royalty_earned("alice"), expected, "counted twice");
    assert_success(
        &ledger(c.node(o), &["verify"]),
        "ledger verify after the crashes",
    );
}
