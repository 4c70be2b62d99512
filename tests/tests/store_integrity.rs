//! Bytes that rot or are tampered with on disk are never served: the origin answers 5xx, counts
//! it, moves the file aside, and a re-ingest of the good bytes repairs it.

use std::fs;

use mhc_manifest::SignedManifest;
use mhc_tests::{assert_success, write_synthetic_rendition, Cluster};

#[test]
fn a_flipped_byte_on_disk_is_detected_counted_and_never_served() {
    let mut c = Cluster::new();
    // RAM tier off, so every request reads (and re-hashes) the disk tier.
    let o = c.start("origin", "origin", "[cache]\nmemory_mb = 0\n");
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 3, 20_000, 3);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    let node = c.node(o);
    let manifest = SignedManifest::decode(&node.get("/v1/content/song/manifest").body).unwrap();
    let hash_hex = hex::encode(manifest.manifest.segments[1].hash);
    let blob = node
        .data_dir
        .join("blobs")
        .join(&hash_hex[..2])
        .join(&hash_hex);
    assert_eq!(node.get("/v1/content/song/seg/1.ts").status, 200);

    let mut bytes = fs::read(&blob).unwrap();
    bytes[12_345] ^= 0x01;
    fs::write(&blob, &bytes).unwrap();

    let r = node.get("/v1/content/song/seg/1.ts");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("corrupt"), "{}", r.text());
    assert_eq!(node.metric("mhc_store_corrupt_total"), Some(1.0));
    assert!(!blob.exists(), "corrupt blob left under its name");
    assert!(node.data_dir.join("blobs/corrupt").join(&hash_hex).exists());
    assert!(node.log_tail().contains("does not match its hash"));
    // Still not served on the next request, and the other segments are fine.
    assert_eq!(node.get("/v1/content/song/seg/1.ts").status, 500);
    assert_eq!(node.get("/v1/content/song/seg/0.ts").status, 200);
    assert_eq!(node.get("/v1/content/song/seg/2.ts").status, 200);

    // Re-ingesting the good bytes restores the blob; same version, nothing republished.
    let out = node.ingest("song", &dir);
    assert_success(&out, "repair ingest");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("unchanged song v1"));
    let r = node.get("/v1/content/song/seg/1.ts");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, fs::read(dir.join("seg_001.ts")).unwrap());
}

#[test]
fn a_truncated_blob_is_never_served_from_ram_either() {
    let mut c = Cluster::new();
    let o = c.start("origin", "origin", "[cache]\nmemory_mb = 16\n");
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, 2, 20_000, 4);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    let node = c.node(o);
    let manifest = SignedManifest::decode(&node.get("/v1/content/song/manifest").body).unwrap();
    let hash_hex = hex::encode(manifest.manifest.segments[0].hash);
    let blob = node
        .data_dir
        .join("blobs")
        .join(&hash_hex[..2])
        .join(&hash_hex);
    // Damage it before it was ever read into RAM.
    let bytes = fs::read(&blob).unwrap();
    fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(node.get("/v1/content/song/seg/0.ts").status, 500);
    assert_eq!(node.get("/v1/content/song/seg/0.ts").status, 500);
    assert_eq!(node.metric("mhc_store_corrupt_total"), Some(1.0));
}
