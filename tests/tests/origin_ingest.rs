//! Ingest at a real origin through the CLI and the admin socket: atomic, idempotent, versioned,
//! durable, and refused where it makes no sense.

use std::fs;
use std::path::Path;

use mhc_tests::{assert_success, write_synthetic_rendition, Cluster};

/// Files in the blob store's shard folders (what ingest left on disk).
fn blob_files(data_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(data_dir.join("blobs")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().len() == 2)
        .map(|e| fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0))
        .sum()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_or_unreadable_segments_publish_nothing() {
    let mut c = Cluster::new();
    let o = c.start("origin", "origin", "");
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 5, 10_000, 1);
    fs::remove_file(dir.join("seg_003.ts")).unwrap();
    let out = c.node(o).ingest("song", &dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("seg_003.ts"), "{}", stderr(&out));

    // A segment that is a folder, not a file.
    fs::create_dir(dir.join("seg_003.ts")).unwrap();
    let out = c.node(o).ingest("song", &dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );

    // An unfinished (live) playlist.
    fs::remove_dir(dir.join("seg_003.ts")).unwrap();
    write_synthetic_rendition(&dir, 5, 10_000, 1);
    let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    fs::write(dir.join("index.m3u8"), text.replace("#EXT-X-ENDLIST\n", "")).unwrap();
    let out = c.node(o).ingest("song", &dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ENDLIST"), "{}", stderr(&out));

    // Not a folder at all; a malformed id.
    let out = c.node(o).ingest("song", &c.path().join("does-not-exist"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does-not-exist"), "{}", stderr(&out));
    write_synthetic_rendition(&dir, 5, 10_000, 1);
    let out = c.node(o).ingest("Bad Id", &dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("content id"), "{}", stderr(&out));

    let node = c.node(o);
    assert_eq!(
        node.get("/v1/content").json()["content"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(node.get("/v1/content/song/index.m3u8").status, 404);
    assert_eq!(blob_files(&node.data_dir), 0);
    assert_eq!(
        node.metric("mhc_ingests_total{outcome=\"failed\"}"),
        Some(5.0)
    );
}

#[test]
fn links_fifos_and_devices_in_a_rendition_publish_nothing() {
    let mut c = Cluster::new();
    let o = c.start("origin", "origin", "");
    let key = c.node(o).data_dir.join("node.key");
    let dir = c.path().join("r1");
    type Spoil = fn(&Path, &Path) -> bool;
    let cases: [(&str, &str, Spoil); 3] = [
        ("a link to the node key", "symbolic link", |dir, key| {
            std::os::unix::fs::symlink(key, dir.join("seg_002.ts")).unwrap();
            true
        }),
        ("a FIFO", "not a regular file", |dir, _| {
            let made = std::process::Command::new("mkfifo")
                .arg(dir.join("seg_002.ts"))
                .status()
                .unwrap();
            assert!(made.success(), "mkfifo");
            true
        }),
        ("a device node", "not a regular file", |dir, _| {
            // /dev/zero's numbers; mknod needs root (as in CI).
            std::process::Command::new("mknod")
                .arg(dir.join("seg_002.ts"))
                .args(["c", "1", "5"])
                .status()
                .is_ok_and(|s| s.success())
        }),
    ];
    for (what, expected, spoil) in cases {
        let _ = fs::remove_dir_all(&dir);
        write_synthetic_rendition(&dir, 5, 10_000, 1);
        fs::remove_file(dir.join("seg_002.ts")).unwrap();
        if !spoil(&dir, &key) {
            eprintln!("skipping {what}: mknod needs root");
            continue;
        }
        let out = c.node(o).ingest("song", &dir);
        assert!(!out.status.success(), "{what} was published");
        assert!(
            stderr(&out).contains(expected) && stderr(&out).contains("seg_002.ts"),
            "{what}: {}",
            stderr(&out)
        );
    }
    let node = c.node(o);
    assert_eq!(node.get("/v1/content/song/index.m3u8").status, 404);
    assert_eq!(blob_files(&node.data_dir), 0, "nothing imported");
}

#[test]
fn a_store_filling_up_mid_ingest_rolls_back_every_new_blob() {
    let mut c = Cluster::new();
    // 0.0001 GiB = 107,374 bytes: two 40 kB segments fit, the third does not.
    let o = c.start("origin", "origin", "[cache]\ndisk_gb = 0.0001\n");
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 4, 40_000, 1);
    let out = c.node(o).ingest("song", &dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("full"), "{}", stderr(&out));
    let node = c.node(o);
    assert_eq!(blob_files(&node.data_dir), 0, "rollback left blobs behind");
    assert_eq!(node.get("/v1/content/song/manifest").status, 404);
    assert_eq!(node.metric("mhc_store_disk_bytes"), Some(0.0));

    // A rendition that fits publishes fine afterwards.
    let small = c.path().join("r2");
    write_synthetic_rendition(&small, 2, 40_000, 2);
    assert_success(&c.node(o).ingest("song", &small), "ingest");
    assert_eq!(blob_files(&c.node(o).data_dir), 2);
}

#[test]
fn same_bytes_same_version_changed_bytes_next_version_and_old_versions_stay_playable() {
    let mut c = Cluster::new();
    let o = c.start("origin", "origin", "");
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 3, 5_000, 1);
    let first = c.node(o).ingest("song", &dir);
    assert_success(&first, "first ingest");
    assert!(String::from_utf8_lossy(&first.stdout).starts_with("published song v1"));
    let m1 = c.node(o).get("/v1/content/song/manifest").body;

    let again = c.node(o).ingest("song", &dir);
    assert_success(&again, "second ingest");
    assert!(
        String::from_utf8_lossy(&again.stdout).starts_with("unchanged song v1"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(c.node(o).get("/v1/content/song/manifest").body, m1);
    assert_eq!(blob_files(&c.node(o).data_dir), 3);

    // Change one segment: version 2, sharing the unchanged blobs.
    let old_seg1 = fs::read(dir.join("seg_001.ts")).unwrap();
    fs::write(dir.join("seg_001.ts"), b"different bytes").unwrap();
    let third = c.node(o).ingest("song", &dir);
    assert_success(&third, "third ingest");
    assert!(String::from_utf8_lossy(&third.stdout).starts_with("published song v2"));
    assert_eq!(blob_files(&c.node(o).data_dir), 4);

    let node = c.node(o);
    let pl = node.get("/v1/content/song/index.m3u8").text();
    assert!(pl.contains("seg/1.ts?v=2"), "{pl}");
    assert_eq!(
        node.get("/v1/content/song/seg/1.ts").body,
        b"different bytes"
    );
    assert_eq!(
        node.get("/v1/content/song/seg/1.ts?v=2").body,
        b"different bytes"
    );
    // A player that started on v1 keeps its bytes.
    assert_eq!(node.get("/v1/content/song/seg/1.ts?v=1").body, old_seg1);
    assert_eq!(node.get("/v1/content/song/manifest?v=1").body, m1);
    assert_eq!(
        node.get("/v1/content/song/manifest?v=1")
            .header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
}

#[test]
fn published_content_survives_sigkill_and_restart() {
    let mut c = Cluster::new();
    let o = c.start("origin", "origin", "");
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 3, 5_000, 7);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    let before = c.node(o).get("/v1/content/song/manifest").body;
    let peer = c.node(o).peer_id.clone();

    // Acknowledged means flushed: a crash right after loses nothing.
    c.node_mut(o).kill9();
    c.node_mut(o).spawn();
    let node = c.node(o);
    assert_eq!(node.peer_id, peer, "identity is stable across restarts");
    assert_eq!(node.get("/v1/content/song/manifest").body, before);
    assert_eq!(node.get("/v1/content/song/seg/2.ts").status, 200);

    c.node_mut(o).stop();
    c.node_mut(o).spawn();
    assert_eq!(c.node(o).get("/v1/content/song/manifest").body, before);
}

#[test]
fn only_an_origin_publishes_and_one_daemon_owns_a_data_dir() {
    let mut c = Cluster::new();
    let e = c.start("edge", "edge", "");
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 2, 1_000, 1);
    let out = c.node(e).ingest("song", &dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only an origin publishes"),
        "{}",
        stderr(&out)
    );

    // A second daemon on the same data_dir is refused with a clear reason.
    let config = c.node(e).config_path.to_str().unwrap().to_owned();
    let out = c.node(e).cli(&["run", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("another mhc-node"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.node(e).get("/healthz").status, 200);
}
