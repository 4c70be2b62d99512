//! Segment bodies go from verified blob files to the socket with `sendfile` on plain HTTP/1.1:
//! whole and ranged, keep-alive and pipelined, never for `HEAD`; a request the node's own
//! loop does not take is handed to hyper with the connection; and a file written after it was
//! verified is hashed again before a byte of it leaves, so tampering on disk is still caught,
//! counted and never served, with the good copy in RAM or not.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mhc_manifest::SignedManifest;
use mhc_tests::{assert_success, wait_until, write_synthetic_rendition, Cluster, NodeOptions};

const SEGMENT_BYTES: usize = 300_000;

/// One response read off a raw connection: status, lowercased headers, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response; its body is `Content-Length` bytes unless `head_only`.
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Raw {
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut chunk).expect("read a response head");
        assert!(n > 0, "connection closed before a response head");
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(pending[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header field");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    pending.drain(..head_end);
    let len: usize = if head_only {
        0
    } else {
        headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap())
    };
    while pending.len() < len {
        let n = s.read(&mut chunk).expect("read a response body");
        assert!(n > 0, "connection closed inside a body");
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = pending.drain(..len).collect();
    Raw {
        status,
        headers,
        body,
    }
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn blob_of(data_dir: &Path, manifest: &SignedManifest, index: usize) -> PathBuf {
    let hex = hex::encode(manifest.manifest.segments[index].hash);
    data_dir.join("blobs").join(&hex[..2]).join(hex)
}

/// Flips one byte of a file where it is: same inode, same length.
fn flip_in_place(path: &Path, at: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0x40]).unwrap();
}

/// An origin (with `extra` config) that published `segments` synthetic segments as `song`;
/// the rendition's folder.
fn origin_with_song(c: &mut Cluster, extra: &str, segments: usize) -> (usize, PathBuf) {
    let o = c.start("origin", "origin", extra);
    let dir = c.path().join("r1");
    write_synthetic_rendition(&dir, segments, SEGMENT_BYTES, 9);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    (o, dir)
}

#[test]
fn verified_files_are_sent_by_the_kernel_ranged_pipelined_and_tampering_is_still_caught() {
    let mut c = Cluster::new();
    let (o, dir) = origin_with_song(&mut c, "[cache]\nmemory_mb = 16\n", 3);
    let node = c.node(o);
    let manifest = SignedManifest::decode(&node.get("/v1/content/song/manifest").body).unwrap();
    let seg = |i: usize| fs::read(dir.join(format!("seg_{i:03}.ts"))).unwrap();
    let from_files = || node.metric("mhc_http_file_body_bytes_total").unwrap_or(0.0);

    // The first read hashes the file (and keeps it in RAM); from then on the file is sent.
    assert_eq!(node.get("/v1/content/song/seg/1.ts").body, seg(1));
    let before = from_files();
    let r = node.get("/v1/content/song/seg/1.ts");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, seg(1));
    assert_eq!(
        from_files() - before,
        SEGMENT_BYTES as f64,
        "sent by sendfile"
    );
    assert!(r.header("x-mhc-merkle-proof").is_some());
    assert_eq!(
        r.header("content-length"),
        Some(SEGMENT_BYTES.to_string().as_str())
    );

    // A range of the file, and a suffix range.
    let before = from_files();
    let r = node.request(
        "GET",
        "/v1/content/song/seg/1.ts",
        &[("Range", "bytes=1000-1999")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, seg(1)[1000..2000]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-1999/{SEGMENT_BYTES}").as_str())
    );
    let r = node.request(
        "GET",
        "/v1/content/song/seg/1.ts",
        &[("Range", "bytes=-10")],
    );
    assert_eq!(r.body, seg(1)[SEGMENT_BYTES - 10..]);
    assert_eq!(from_files() - before, 1010.0);

    // One connection: HEAD (a length, no body), then two pipelined GETs in one write, then a
    // request with a body (hyper's from here on), then a GET again.
    assert_eq!(node.get("/v1/content/song/seg/0.ts").body, seg(0));
    let mut s = connect(node.addr());
    let mut pending = Vec::new();
    s.write_all(b"HEAD /v1/content/song/seg/1.ts HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = read_response(&mut s, &mut pending, true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(SEGMENT_BYTES.to_string().as_str())
    );
    s.write_all(
        b"GET /v1/content/song/seg/0.ts HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /v1/content/song/seg/1.ts HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    // Had HEAD sent a body, these would read its bytes as a response.
    let first = read_response(&mut s, &mut pending, false);
    let second = read_response(&mut s, &mut pending, false);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body, seg(0), "pipelined answers in order");
    assert_eq!(second.body, seg(1));
    let report = br#"{"content":"song","segment":1,"node":"x","reason":"test"}"#;
    write!(
        s,
        "POST /v1/reports/bad-segment HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        report.len()
    )
    .unwrap();
    s.write_all(report).unwrap();
    let posted = read_response(&mut s, &mut pending, false);
    assert!(
        posted.status < 500,
        "the POST was answered by a handler: {}",
        posted.status
    );
    s.write_all(b"GET /v1/content/song/seg/2.ts HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let after = read_response(&mut s, &mut pending, false);
    assert_eq!(after.body, seg(2), "the connection goes on under hyper");
    assert!(after.header("date").is_some());
    drop(s);

    // Tampering after the file was verified and its bytes cached in RAM: the next request
    // hashes the file again, finds it corrupt, moves it aside, and serves nothing of it.
    let blob = blob_of(&node.data_dir, &manifest, 1);
    flip_in_place(&blob, 4242);
    let r = node.get("/v1/content/song/seg/1.ts");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("corrupt"), "{}", r.text());
    assert_eq!(node.metric("mhc_store_corrupt_total"), Some(1.0));
    assert!(!blob.exists(), "the corrupt file left its name");
    assert_eq!(node.get("/v1/content/song/seg/1.ts").status, 500);
    assert_eq!(node.get("/v1/content/song/seg/0.ts").body, seg(0));
}

#[test]
fn an_edge_sends_filled_segments_from_their_files_once_it_has_hashed_them() {
    let mut c = Cluster::new();
    let (o, dir) = origin_with_song(&mut c, "", 2);
    let parent = c.node(o).as_parent();
    let e = c.start_with(
        "edge",
        NodeOptions::new("edge").extra(&format!(
            "[trust]\npublishers = [\"{}\"]\n[upstream]\nparents = [\"{parent}\"]\n",
            c.node(o).public_key.as_deref().unwrap(),
        )),
    );
    let edge = c.node(e);
    let seg0 = fs::read(dir.join("seg_000.ts")).unwrap();
    // Filled from the origin (verified, written without the page cache), served from RAM.
    assert_eq!(edge.get("/v1/content/song/seg/0.ts").body, seg0);
    // The file is hashed in the background; then requests are sent from it.
    let sent_from_file = wait_until(Duration::from_secs(10), || {
        let before = edge.metric("mhc_http_file_body_bytes_total").unwrap_or(0.0);
        let r = edge.get("/v1/content/song/seg/0.ts");
        assert_eq!(r.body, seg0);
        edge.metric("mhc_http_file_body_bytes_total").unwrap_or(0.0) - before
            == SEGMENT_BYTES as f64
    });
    assert!(sent_from_file, "the edge never sent the filled file");
    assert_eq!(edge.metric("mhc_store_corrupt_total").unwrap_or(0.0), 0.0);
}
