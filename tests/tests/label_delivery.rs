//! The label plugin end to end: an origin assigns ISRCs and a UPC to a release of two
//! published tracks, writes its DDEX ERN 4.3 message, and delivers it to a DSP's drop on a real
//! OpenSSH server (`sshd -D` on loopback, key-only, `internal-sftp`) following DDEX's file-drop
//! choreography; the DSP's ACK is picked up. A wrong host key delivers nothing; sshd killed
//! mid-upload fails the job, which is retried and completes once sshd is back, never leaving a
//! partial file under a final name.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mhc_label::ids::{Icpn, Isrc};
use mhc_tests::sshd::Sshd;
use mhc_tests::{assert_success, wait_until, Cluster, NodeProcess};
use sha2::Digest;

/// Writes an audio rendition (ADTS-named segments, so the origin publishes it as audio): `n`
/// segments of `len` bytes depending on `seed`. The node never parses media.
fn write_audio_rendition(dir: &Path, n: usize, len: usize, seed: u8) {
    fs::create_dir_all(dir).unwrap();
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    let mut rng = fastrand::Rng::with_seed(u64::from(seed));
    for i in 0..n {
        let name = format!("seg_{i:03}.aac");
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes);
        fs::write(dir.join(&name), bytes).unwrap();
        playlist.push_str(&format!("#EXTINF:4.000000,\n{name}\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    fs::write(dir.join("index.m3u8"), playlist).unwrap();
}

/// The concatenated segments of a rendition written by [`write_audio_rendition`]: the file the
/// label delivers.
fn rendition_sha256(dir: &Path, n: usize) -> String {
    let mut sha = sha2::Sha256::new();
    for i in 0..n {
        sha.update(fs::read(dir.join(format!("seg_{i:03}.aac"))).unwrap());
    }
    hex::encode(sha.finalize())
}

/// The ERN 4.3 schema beside the checkout (`../shared/ddex/ern43`, or `$MHC_SHARED/ddex/ern43`).
fn ern_schema() -> PathBuf {
    let shared = std::env::var_os("MHC_SHARED").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    let xsd = shared.join("ddex/ern43/release-notification.xsd");
    assert!(
        xsd.exists(),
        "the DDEX ERN 4.3 schema is not at {}: the project's shared folder must sit beside the \
         checkout (or MHC_SHARED name it)",
        xsd.display()
    );
    xsd
}

/// Validates an XML file against the ERN 4.3 schema with libxml2's xmllint.
fn assert_valid_ern(file: &Path) {
    let xmllint = mhc_tests::installed_program("xmllint", "libxml2-utils");
    let out = Command::new(xmllint)
        .arg("--noout")
        .arg("--schema")
        .arg(ern_schema())
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not validate against ERN 4.3:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

const ARTIST: &str = "ada";
const SEGMENTS: usize = 4;

struct Setup {
    cluster: Cluster,
    sshd: Sshd,
    origin: usize,
    drop_dir: PathBuf,
}

/// An origin with the label plugin delivering to `spotify` on `sshd`, whose host key the
/// config names as `known_host`; two tracks by `ada` published (`night-drive`, `day-walk`) of
/// `segment_len` bytes per segment.
fn setup(known_host: Option<String>, segment_len: usize) -> Setup {
    let mut cluster = Cluster::new();
    let sshd = Sshd::start();
    let drop_dir = sshd.root().join("incoming");
    fs::create_dir_all(&drop_dir).unwrap();
    let toml = format!(
        "[plugins.royalty]\ncurrency = \"EUR\"\n[plugins.ledger]\n\
         [plugins.label]\nisrc_registrant = \"USMHC\"\ngs1_prefix = \"0614141\"\n\
         sender_party_id = \"PADPIDA2007050901U\"\nsender_name = \"MHC Streaming\"\n\
         retry_base_s = 1\nretry_max_s = 2\nack_poll_s = 1\n\
         [plugins.label.dsps.spotify]\nparty_id = \"PADPIDA2015120100H\"\nname = \"Spotify\"\n\
         sftp = \"sftp://{}@127.0.0.1:{}{}\"\nkey = \"{}\"\nknown_host = \"{}\"\n",
        sshd.user(),
        sshd.port(),
        drop_dir.display(),
        sshd.client_key_path().display(),
        known_host.unwrap_or_else(|| sshd.known_host()),
    );
    let origin = cluster.start("origin", "origin", &toml);
    for (id, seed) in [("night-drive", 1u8), ("day-walk", 2)] {
        let dir = cluster.path().join(id);
        write_audio_rendition(&dir, SEGMENTS, segment_len, seed);
        let node = cluster.node(origin);
        assert_success(&node.ingest_as(id, id, ARTIST, &dir), "ingest");
    }
    Setup {
        cluster,
        sshd,
        origin,
        drop_dir,
    }
}

/// `mhc-node plugin label METHOD PATH [--body JSON]`: status and answer.
fn label(node: &NodeProcess, method: &str, path: &str, body: Option<&str>) -> (bool, Vec<u8>) {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let mut args = vec!["plugin", "--data-dir", &data_dir, "label", method, path];
    let body_file = body.map(|b| {
        let f = tempfile::NamedTempFile::new().unwrap();
        fs::write(f.path(), b).unwrap();
        f
    });
    let body_path = body_file
        .as_ref()
        .map(|f| f.path().to_str().unwrap().to_owned());
    if let Some(p) = &body_path {
        args.extend(["--body", p.as_str()]);
    }
    let out = node.cli(&args);
    (out.status.success(), out.stdout)
}

fn label_json(
    node: &NodeProcess,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> serde_json::Value {
    let (ok, out) = label(node, method, path, body);
    assert!(ok, "{method} {path}: {}", String::from_utf8_lossy(&out));
    serde_json::from_slice(&out).unwrap()
}

const NIGHT_EP: &str = r#"{"artist": "ada", "title": "Night EP", "label": "MHC Records",
    "genre": "Electronic", "release_date": "2026-12-04", "territories": ["Worldwide"],
    "p_line": "2026 MHC Records", "c_line": "2026 MHC Records",
    "tracks": [{"content_id": "night-drive", "title": "Night Drive"},
               {"content_id": "day-walk", "title": "Day Walk"}]}"#;

/// `POST releases/{release}/deliver` to `spotify`: what was queued.
fn deliver_to_spotify(node: &NodeProcess, release: &str) -> serde_json::Value {
    label_json(
        node,
        "POST",
        &format!("releases/{release}/deliver"),
        Some(r#"{"dsps": ["spotify"]}"#),
    )
}

/// The HEAD of a report from `spotify` to the label for one month.
fn spotify_head(message_id: &str, start: &str, end: &str) -> mhc_label::dsr::Head {
    mhc_label::dsr::Head {
        message_version: "dsrf/1.4/1.2/1.2".into(),
        profile: "BasicAudioProfile".into(),
        profile_version: "1.2".into(),
        message_id: message_id.into(),
        message_created_date_time: "2027-02-05T10:00:00Z".into(),
        file_number: 1,
        number_of_files: 1,
        usage_start_date: start.into(),
        usage_end_date: end.into(),
        sender_party_id: "PADPIDA2015120100H".into(),
        sender_name: "Spotify".into(),
        recipient_party_id: Some("PADPIDA2007050901U".into()),
        recipient_name: Some("MHC Streaming".into()),
        ..mhc_label::dsr::Head::default()
    }
}

fn status_of(node: &NodeProcess, release: &str) -> serde_json::Value {
    label_json(node, "GET", &format!("releases/{release}/status"), None)["dsps"]["spotify"].clone()
}

fn wait_for_state(node: &NodeProcess, release: &str, state: &str, secs: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let reached = wait_until(Duration::from_secs(secs), || {
        last = status_of(node, release);
        last["state"] == state
    });
    assert!(reached, "the delivery never became {state}: {last}");
    last
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_release_is_delivered_by_the_ddex_choreography_and_acknowledged() {
    let s = setup(None, 50_000);
    let node = s.cluster.node(s.origin);

    let release = label_json(node, "POST", "releases", Some(NIGHT_EP));
    let id = release["id"].as_str().unwrap().to_owned();
    let upc = release["upc"].as_str().unwrap().to_owned();
    Icpn::parse(&upc).expect("a UPC with a correct GS1 check digit");
    assert!(upc.starts_with("0614141"), "{upc}");
    let isrcs: Vec<String> = release["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["isrc"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(isrcs.len(), 2);
    for isrc in &isrcs {
        let parsed = Isrc::parse(isrc).expect("a well-formed ISRC");
        assert!(parsed.as_str().starts_with("USMHC"), "{isrc}");
    }
    assert_ne!(isrcs[0], isrcs[1]);
    assert_eq!(release["tracks"][0]["duration_ms"], SEGMENTS as u64 * 4000);

    // The message as the route shows it validates.
    let (ok, ern) = label(node, "GET", &format!("releases/{id}/ern?dsp=spotify"), None);
    assert!(ok, "{}", String::from_utf8_lossy(&ern));
    let preview = s.cluster.path().join("preview.xml");
    fs::write(&preview, &ern).unwrap();
    assert_valid_ern(&preview);

    let queued = deliver_to_spotify(node, &id);
    assert_eq!(queued["dsps"]["spotify"], "insert");
    let status = wait_for_state(node, &id, "delivered", 60);
    let batch = status["batch_id"].as_str().unwrap().to_owned();

    // On the server: the batch folder, the release folder with its message and resources,
    // BatchComplete; no temporary file left.
    let files = files_under(&s.drop_dir.join(&batch));
    let mut expected = vec![
        format!("{upc}/{upc}.xml"),
        format!("{upc}/resources/{}.aac", isrcs[0]),
        format!("{upc}/resources/{}.aac", isrcs[1]),
        format!("BatchComplete_{batch}.xml"),
    ];
    expected.sort();
    assert_eq!(files, expected);
    let batch_dir = s.drop_dir.join(&batch);
    for (isrc, id) in isrcs.iter().zip(["night-drive", "day-walk"]) {
        let on_server = fs::read(batch_dir.join(format!("{upc}/resources/{isrc}.aac"))).unwrap();
        let published = rendition_sha256(&s.cluster.path().join(id), SEGMENTS);
        assert_eq!(hex::encode(sha2::Sha256::digest(&on_server)), published);
        let message = fs::read_to_string(batch_dir.join(format!("{upc}/{upc}.xml"))).unwrap();
        assert!(
            message.contains(&published),
            "the ERN carries the file's SHA-256"
        );
    }
    assert_valid_ern(&batch_dir.join(format!("{upc}/{upc}.xml")));
    let complete =
        fs::read_to_string(batch_dir.join(format!("BatchComplete_{batch}.xml"))).unwrap();
    assert!(
        complete.contains(&format!("<BatchId>{batch}</BatchId>")),
        "{complete}"
    );
    // BatchComplete appeared last: every file got its final name by a rename, which sets the
    // file's change time, and BatchComplete's is the latest.
    let changed = |rel: &str| {
        let m = fs::metadata(batch_dir.join(rel)).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    let complete_at = changed(&format!("BatchComplete_{batch}.xml"));
    for f in &files {
        assert!(
            changed(f) <= complete_at,
            "{f} appeared after BatchComplete"
        );
    }

    // Delivering the same release again does nothing.
    let again = deliver_to_spotify(node, &id);
    assert_eq!(again["dsps"]["spotify"], "unchanged");

    // The DSP acknowledges the batch.
    fs::write(
        batch_dir.join(format!("ACK_{batch}.xml")),
        "<Acknowledgement>ok</Acknowledgement>",
    )
    .unwrap();
    let acked = wait_for_state(node, &id, "acknowledged", 30);
    assert!(acked["ack"].as_str().unwrap().contains("ACK_"), "{acked}");
    assert_eq!(
        node.metric("mhc_label_deliveries{state=\"acknowledged\"}"),
        Some(1.0)
    );
    assert!(node.metric("mhc_label_uploaded_bytes_total").unwrap() > 0.0);

    // A track republished: delivering again sends the release in full as an update, in a
    // batch of its own.
    let dir = s.cluster.path().join("night-drive-v2");
    write_audio_rendition(&dir, SEGMENTS, 50_000, 9);
    assert_success(
        &node.ingest_as("night-drive", "night-drive", ARTIST, &dir),
        "ingest",
    );
    let update = deliver_to_spotify(node, &id);
    assert_eq!(update["dsps"]["spotify"], "update");
    let updated = wait_for_state(node, &id, "delivered", 60);
    let batch2 = updated["batch_id"].as_str().unwrap().to_owned();
    assert_ne!(batch2, batch);
    assert_eq!(updated["kind"], "update");
    let resent = fs::read(
        s.drop_dir
            .join(&batch2)
            .join(format!("{upc}/resources/{}.aac", isrcs[0])),
    )
    .unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&resent)),
        rendition_sha256(&dir, SEGMENTS)
    );
    assert_valid_ern(&s.drop_dir.join(&batch2).join(format!("{upc}/{upc}.xml")));

    // A takedown withdraws the release from the DSP with a takedown message.
    let takedown = label_json(
        node,
        "POST",
        "takedowns",
        Some(r#"{"content_id": "day-walk", "reason": "rights dispute"}"#),
    );
    assert_eq!(takedown["queued"][0], format!("{id}/spotify"), "{takedown}");
    let taken = wait_for_state(node, &id, "delivered", 60);
    assert_eq!(taken["kind"], "takedown");
    let batch3 = taken["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(
        files_under(&s.drop_dir.join(&batch3)),
        vec![
            format!("{upc}/{upc}.xml"),
            format!("BatchComplete_{batch3}.xml"),
        ]
    );
    let withdrawn = s.drop_dir.join(&batch3).join(format!("{upc}/{upc}.xml"));
    assert_valid_ern(&withdrawn);
    assert!(fs::read_to_string(&withdrawn)
        .unwrap()
        .contains("EndDateTime"));

    // Unknown fields are refused, naming the field.
    let (ok, answer) = label(
        node,
        "POST",
        "releases",
        Some(&NIGHT_EP.replace("\"genre\"", "\"genres\": [], \"genre\"")),
    );
    assert!(!ok);
    assert!(
        String::from_utf8_lossy(&answer).contains("genres"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // An artist cannot release another artist's content.
    let (ok, answer) = label(
        node,
        "POST",
        "releases",
        Some(&NIGHT_EP.replace("\"ada\"", "\"bob\"")),
    );
    assert!(!ok);
    assert!(
        String::from_utf8_lossy(&answer).contains("bob"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_wrong_host_key_is_refused_and_nothing_is_uploaded() {
    let other = tempfile::tempdir().unwrap();
    let impostor = mhc_tests::sshd::keygen(&other.path().join("impostor"), "ed25519");
    let s = setup(Some(impostor), 10_000);
    let node = s.cluster.node(s.origin);
    let release = label_json(node, "POST", "releases", Some(NIGHT_EP));
    let id = release["id"].as_str().unwrap().to_owned();
    deliver_to_spotify(node, &id);
    let status = wait_for_state(node, &id, "failed", 30);
    assert_eq!(status["retry"], false, "{status}");
    assert!(
        status["last_error"].as_str().unwrap().contains("host key"),
        "{status}"
    );
    assert!(
        files_under(&s.drop_dir).is_empty(),
        "{:?}",
        files_under(&s.drop_dir)
    );
}

#[test]
fn sshd_killed_mid_upload_fails_the_job_which_completes_once_sshd_is_back() {
    // Two tracks of 4 x 8 MiB: long enough to kill the server while a file is on its way.
    let mut s = setup(None, 8 << 20);
    let node = s.cluster.node(s.origin);
    let release = label_json(node, "POST", "releases", Some(NIGHT_EP));
    let id = release["id"].as_str().unwrap().to_owned();
    deliver_to_spotify(node, &id);
    // Kill sshd as soon as a temporary file is growing on the server.
    let drop_dir = s.drop_dir.clone();
    let growing = wait_until(Duration::from_secs(60), || {
        files_under(&drop_dir).iter().any(|f| {
            f.ends_with(".part") && fs::metadata(drop_dir.join(f)).is_ok_and(|m| m.len() > 0)
        })
    });
    assert!(growing, "no upload started: {:?}", files_under(&drop_dir));
    let t0 = std::time::Instant::now();
    s.sshd.stop();
    let failed = wait_for_state(s.cluster.node(s.origin), &id, "failed", 60);
    eprintln!("failed after {:?}: {failed}", t0.elapsed());
    assert_eq!(failed["retry"], true, "{failed}");
    // No file under a final name is partial: only finished files were renamed.
    let release_files = files_under(&drop_dir);
    for f in &release_files {
        assert!(
            f.ends_with(".part")
                || !f.contains("/resources/")
                || fs::metadata(drop_dir.join(f)).unwrap().len() == 4 * (8 << 20),
            "a partial file under a final name: {f}"
        );
        assert!(
            !f.contains("BatchComplete"),
            "BatchComplete before the batch was complete"
        );
    }
    s.sshd.restart();
    let done = wait_for_state(s.cluster.node(s.origin), &id, "delivered", 120);
    eprintln!("delivered after {:?}", t0.elapsed());
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");
    let batch = done["batch_id"].as_str().unwrap();
    let files = files_under(&drop_dir.join(batch));
    assert!(files.iter().all(|f| !f.ends_with(".part")), "{files:?}");
    assert_eq!(files.len(), 4, "{files:?}");
}

/// A DSR flat file (Basic Audio Profile) from `spotify` for December 2026: one summary of
/// 12.00 EUR over 1,500 streams in FR, and streams of the two delivered tracks (800 and 400)
/// and of an ISRC the label never issued (300).
fn sales_report(isrcs: &[String]) -> Vec<u8> {
    use mhc_label::dsr::{DsrWriter, Resource, Summary, SummaryKind, Usage};
    let mut w = DsrWriter::new(Vec::new());
    w.head(&spotify_head(
        "SPOTIFY-2026-12-1",
        "2026-12-01",
        "2026-12-31",
    ))
    .unwrap();
    w.summary(&Summary {
        kind: SummaryKind::Sy0202,
        summary_record_id: "S1".into(),
        commercial_model: "SubscriptionModel".into(),
        use_type: "OnDemandStream".into(),
        territory: "FR".into(),
        service_description: Some("Premium".into()),
        usages: 1500,
        currency_of_reporting: "EUR".into(),
        net_revenue: "40.00".parse().unwrap(),
        allocated_usages: vec!["1500".parse().unwrap()],
        allocated_net_revenue: Some("12.00".parse().unwrap()),
        content_category: Some("Music".into()),
        ..Summary::default()
    })
    .unwrap();
    let unknown = "GBXXX2600042".to_string();
    for (b, (isrc, streams)) in [(&isrcs[0], 800u64), (&isrcs[1], 400), (&unknown, 300)]
        .into_iter()
        .enumerate()
    {
        let block = format!("B{b}");
        w.resource(&Resource {
            block_id: block.clone(),
            resource_reference: "R1".into(),
            dsp_resource_id: format!("sp-{b}"),
            isrc: vec![isrc.clone()],
            title: format!("Track {b}"),
            display_artist_name: "ada".into(),
            resource_type: "SoundRecording".into(),
            ..Resource::default()
        })
        .unwrap();
        w.usage(&Usage {
            block_id: block,
            summary_record_id: "S1".into(),
            sales_transaction_id: format!("T{b}"),
            transacted_resource: Some("R1".into()),
            usages: streams,
            ..Usage::default()
        })
        .unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn a_sales_report_credits_the_exact_amounts_once_and_reconciles() {
    let s = setup(None, 10_000);
    let node = s.cluster.node(s.origin);
    let release = label_json(node, "POST", "releases", Some(NIGHT_EP));
    let id = release["id"].as_str().unwrap().to_owned();
    let isrcs: Vec<String> = release["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["isrc"].as_str().unwrap().to_owned())
        .collect();
    deliver_to_spotify(node, &id);
    wait_for_state(node, &id, "delivered", 60);
    assert_eq!(node.royalty_earned(ARTIST), 0);

    let report = s.cluster.path().join(
        "DSR_PADPIDA2007050901U_PADPIDA2015120100H_Premium_2026-12_FR_1of1_20270105T100000.tsv",
    );
    fs::write(&report, sales_report(&isrcs)).unwrap();
    let body = fs::read_to_string(&report).unwrap();
    let import = label_json(node, "POST", "dsr/spotify", Some(&body));
    assert_eq!(import["usage_lines"], 3, "{import}");
    assert_eq!(import["matched_lines"], 2, "{import}");
    assert_eq!(import["replayed"], false);
    // 12.00 EUR x 800/1500 + 12.00 EUR x 400/1500 = 6.40 + 3.20 = 9.60 EUR to ada; the
    // unknown ISRC's 2.40 EUR to nobody.
    assert_eq!(node.royalty_earned(ARTIST), 960);
    assert_eq!(import["credited_nano"]["EUR"], 9_600_000_000i64);
    assert_eq!(import["uncredited_nano"]["EUR"], 2_400_000_000i64);

    // The same file again changes nothing.
    let again = label_json(node, "POST", "dsr/spotify", Some(&body));
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(node.royalty_earned(ARTIST), 960);

    let rec = label_json(node, "GET", "reconciliation/spotify/2026-12", None);
    assert_eq!(rec["unknown_isrcs"]["lines"], 1, "{rec}");
    assert_eq!(
        rec["unknown_isrcs"]["first"][0]["isrc"], "GBXXX2600042",
        "{rec}"
    );
    assert_eq!(rec["totals"]["credited"]["EUR"], "9.6", "{rec}");
    assert_eq!(rec["totals"]["uncredited"]["EUR"], "2.4", "{rec}");
    assert_eq!(rec["totals"]["file_revenue"]["EUR"], "12", "{rec}");
    assert!(rec["not_live"].as_array().unwrap().is_empty(), "{rec}");
    assert_eq!(rec["tracks"].as_array().unwrap().len(), 2, "{rec}");

    // A report larger than an admin body kept in memory (16 MiB) is spooled by the daemon and
    // read as a stream: 600,000 lines, 60.00 EUR over 600,000 streams, 2/3 and 1/3.
    let big = s.cluster.path().join("DSR_big.tsv");
    {
        use mhc_label::dsr::{DsrWriter, Resource, Summary, SummaryKind, Usage};
        let out = std::io::BufWriter::new(fs::File::create(&big).unwrap());
        let mut w = DsrWriter::new(out);
        w.head(&spotify_head(
            "SPOTIFY-2027-01-1",
            "2027-01-01",
            "2027-01-31",
        ))
        .unwrap();
        w.summary(&Summary {
            kind: SummaryKind::Sy0202,
            summary_record_id: "S1".into(),
            commercial_model: "SubscriptionModel".into(),
            use_type: "OnDemandStream".into(),
            territory: "DE".into(),
            service_description: Some("Premium".into()),
            usages: 600_000,
            currency_of_reporting: "EUR".into(),
            net_revenue: "60.00".parse().unwrap(),
            content_category: Some("Music".into()),
            ..Summary::default()
        })
        .unwrap();
        for (b, (isrc, lines)) in [(&isrcs[0], 400_000u32), (&isrcs[1], 200_000)]
            .into_iter()
            .enumerate()
        {
            w.resource(&Resource {
                block_id: format!("B{b}"),
                resource_reference: "R1".into(),
                dsp_resource_id: format!("sp-{b}"),
                isrc: vec![isrc.clone()],
                title: format!("Track {b}"),
                display_artist_name: "ada".into(),
                resource_type: "SoundRecording".into(),
                ..Resource::default()
            })
            .unwrap();
            for n in 0..lines {
                w.usage(&Usage {
                    block_id: format!("B{b}"),
                    summary_record_id: "S1".into(),
                    sales_transaction_id: format!("T{b}-{n}"),
                    transacted_resource: Some("R1".into()),
                    usages: 1,
                    ..Usage::default()
                })
                .unwrap();
            }
        }
        w.finish().unwrap();
    }
    assert!(fs::metadata(&big).unwrap().len() > 16 << 20);
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let out = node.cli(&[
        "plugin",
        "--data-dir",
        &data_dir,
        "label",
        "POST",
        "dsr/spotify",
        "--body",
        big.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let import: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(import["matched_lines"], 600_000, "{import}");
    assert_eq!(node.royalty_earned(ARTIST), 960 + 6000);
    // Nothing is left spooled in the data directory.
    assert!(
        !fs::read_dir(&node.data_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".spool-")),
        "a spooled body was left behind"
    );

    // The credits are in the ledger.
    let ledger = node.cli(&[
        "plugin",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
        "ledger",
        "GET",
        "head",
    ]);
    let head: serde_json::Value = serde_json::from_slice(&ledger.stdout).unwrap();
    assert!(head["size"].as_u64().unwrap() >= 1, "{head}");
}

#[test]
fn an_origin_killed_mid_delivery_resumes_the_job_when_it_restarts() {
    let mut s = setup(None, 8 << 20);
    let origin = s.origin;
    let release = label_json(s.cluster.node(origin), "POST", "releases", Some(NIGHT_EP));
    let id = release["id"].as_str().unwrap().to_owned();
    deliver_to_spotify(s.cluster.node(origin), &id);
    // Crash the origin while a file is on its way.
    let drop_dir = s.drop_dir.clone();
    let growing = wait_until(Duration::from_secs(60), || {
        files_under(&drop_dir).iter().any(|f| {
            f.ends_with(".part") && fs::metadata(drop_dir.join(f)).is_ok_and(|m| m.len() > 0)
        })
    });
    assert!(growing, "no upload started: {:?}", files_under(&drop_dir));
    s.cluster.node_mut(origin).kill9();
    let interrupted = files_under(&drop_dir);
    assert!(
        !interrupted.iter().any(|f| f.contains("BatchComplete")),
        "{interrupted:?}"
    );
    // The job was durable: the restarted origin resumes it in the same batch.
    s.cluster.node_mut(origin).spawn();
    let done = wait_for_state(s.cluster.node(origin), &id, "delivered", 120);
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");
    let batch = done["batch_id"].as_str().unwrap();
    let files = files_under(&drop_dir);
    assert!(
        files.iter().all(|f| f.starts_with(batch)),
        "one batch: {files:?}"
    );
    assert!(files.iter().all(|f| !f.ends_with(".part")), "{files:?}");
    assert_eq!(files.len(), 4, "{files:?}");
}
