//! The edge role on real processes: verified QUIC fill from the origin with request
//! coalescing, serving on after the origin dies, edges as parents of edges, an enrolled hostile
//! parent that flips a byte, an unenrolled parent that is never believed, and a parent whose
//! TLS certificate is not the peer it claims to be.

use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use mhc_tests::{assert_success, copy_sample, wait_until, Cluster, NodeOptions, NodeProcess};
use mhc_transport::{Handler, QuicClient, QuicServer, Request, Response, ResponseHeader};

/// Trust the origin's key and fill from `parents` (each `peerid@addr`).
fn edge_options(origin: &NodeProcess, parents: &[String]) -> NodeOptions {
    let parents: Vec<String> = parents.iter().map(|p| format!("{p:?}")).collect();
    NodeOptions::new("edge").extra(&format!(
        "[trust]\npublishers = [\"{}\"]\n[upstream]\nparents = [{}]\n",
        origin.public_key.as_deref().unwrap(),
        parents.join(", ")
    ))
}

fn origin_with_sample(c: &mut Cluster) -> usize {
    let o = c.start("origin", "origin", "");
    let sample = c.path().join("sample");
    copy_sample(&sample);
    assert_success(&c.node(o).ingest("sample", &sample), "ingest");
    o
}

fn sample_file(c: &Cluster, i: usize) -> Vec<u8> {
    fs::read(c.path().join(format!("sample/seg_{i:03}.m4s"))).unwrap()
}

fn quic_sent(node: &NodeProcess, kind: &str) -> f64 {
    node.metric(&format!(
        "mhc_quic_responses_total{{kind=\"{kind}\",outcome=\"ok\"}}"
    ))
    .unwrap_or(0.0)
}

#[test]
fn edges_fill_once_serve_after_the_origin_dies_and_parent_each_other() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let parent = c.node(o).as_parent();
    let e1 = c.start_with("edge1", edge_options(c.node(o), &[parent]));

    // 20 viewers at once, each playing the whole content through edge 1.
    let addr = c.node(e1).addr();
    let viewers: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let get = |p: &str| mhc_tests::http_request(addr, "GET", p, &[]).unwrap();
                let pl = get("/v1/content/sample/index.m3u8");
                assert_eq!(pl.status, 200, "{}", pl.text());
                assert_eq!(get("/v1/content/sample/init.mp4").status, 200);
                (0..4)
                    .map(|i| get(&format!("/v1/content/sample/seg/{i}.m4s?v=1")).body)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for v in viewers {
        let bodies = v.join().expect("viewer thread");
        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(body, &sample_file(&c, i), "segment {i} through the edge");
        }
    }
    // Each segment (and the init segment and manifest) left the origin exactly once.
    let origin = c.node(o);
    assert_eq!(quic_sent(origin, "segment"), 4.0);
    assert_eq!(quic_sent(origin, "init"), 1.0);
    assert_eq!(quic_sent(origin, "manifest"), 1.0);
    assert_eq!(c.node(e1).metric("mhc_fills_total"), Some(5.0));

    // The origin dies; edge 1 still serves all of it, playlist included (stale but signed).
    c.node_mut(o).kill9();
    std::thread::sleep(Duration::from_millis(5_500)); // past the manifest refresh interval
    let edge = c.node(e1);
    assert_eq!(edge.get("/v1/content/sample/index.m3u8").status, 200);
    assert_eq!(edge.get("/v1/content/sample/manifest").status, 200);
    for i in 0..4 {
        assert_eq!(
            edge.get(&format!("/v1/content/sample/seg/{i}.m4s")).body,
            sample_file(&c, i)
        );
    }

    // Edge 2 has edge 1 as its parent and fills from it (the origin is gone).
    let e1_parent = c.node(e1).as_parent();
    let origin_key = c.node(o).public_key.clone().unwrap();
    let e2 = c.start_with(
        "edge2",
        NodeOptions::new("edge").extra(&format!(
            "[trust]\npublishers = [\"{origin_key}\"]\n[upstream]\nparents = [\"{e1_parent}\"]\n"
        )),
    );
    let before = quic_sent(c.node(e1), "segment");
    let edge2 = c.node(e2);
    let pl = edge2.get("/v1/content/sample/index.m3u8");
    assert_eq!(pl.status, 200, "{}", pl.text());
    for i in 0..4 {
        let r = edge2.get(&format!("/v1/content/sample/seg/{i}.m4s"));
        assert_eq!(r.body, sample_file(&c, i), "segment {i} through edge 2");
        // The proof headers are the origin's, whoever served the bytes.
        assert!(r.header("x-mhc-merkle-proof").is_some());
    }
    assert_eq!(quic_sent(c.node(e1), "segment") - before, 4.0);
    // Playlists point at the edge itself (relative URIs).
    assert!(pl.text().contains("\nseg/0.m4s?v=1\n"));
}

#[test]
fn unknown_content_is_a_404_and_is_cached_briefly() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let parent = c.node(o).as_parent();
    let e = c.start_with("edge", edge_options(c.node(o), &[parent]));
    for _ in 0..5 {
        assert_eq!(c.node(e).get("/v1/content/nope/index.m3u8").status, 404);
    }
    // One upstream question, not five.
    assert_eq!(
        c.node(o)
            .metric("mhc_quic_responses_total{kind=\"manifest\",outcome=\"not_found\"}"),
        Some(1.0)
    );
}

/// A parent that relays to the real origin but flips one byte of segment 3. It says hello
/// with `certificate` (empty: it is not enrolled), and relays as an enrolled edge
/// (`relay_certificate`, for the key of its client).
struct FlipSegment3 {
    origin: SocketAddr,
    client: Arc<QuicClient>,
    certificate: Vec<u8>,
    relay_certificate: Vec<u8>,
}

impl Handler for FlipSegment3 {
    fn handle(&self, _peer: libp2p::PeerId, req: Request) -> BoxFuture<'static, Response> {
        let (origin, client) = (self.origin, Arc::clone(&self.client));
        if let Request::Hello { .. } = req {
            let certificate = self.certificate.clone();
            return async move { Response::without_body(ResponseHeader::Hello { certificate }) }
                .boxed();
        }
        let certificate = self.relay_certificate.clone();
        async move {
            let conn = client.connect(origin, None).await.unwrap();
            let hello = Request::Hello { certificate };
            let (admitted, _) = conn.request(&hello, 0).await.unwrap();
            assert!(
                matches!(admitted, ResponseHeader::Hello { .. }),
                "{admitted:?}"
            );
            let flip = matches!(req, Request::GetSegment { index: 3, .. });
            let (header, body) = conn.request(&req, 64 << 20).await.unwrap();
            let mut body = body.to_vec();
            if flip {
                body[100] ^= 0x01;
            }
            Response::new(header, Bytes::from(body))
        }
        .boxed()
    }
}

/// The byte-flipping parent, enrolled as an edge (`enrolled`) or not, relaying as an
/// enrolled edge.
fn flipping_parent(c: &Cluster, origin: SocketAddr, enrolled: bool) -> QuicServer {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    QuicServer::bind(
        loopback,
        [66u8; 32],
        Default::default(),
        Arc::new(FlipSegment3 {
            origin,
            client: Arc::new(QuicClient::new(loopback, [67u8; 32]).unwrap()),
            certificate: if enrolled {
                c.certificate([66u8; 32], "edge")
            } else {
                Vec::new()
            },
            relay_certificate: c.certificate([67u8; 32], "edge"),
        }),
    )
    .unwrap()
}

/// A viewer asks edge `e` for segments 0-3 of the sample and gets exactly the published bytes.
async fn viewer_gets_the_first_four_segments(c: &Cluster, e: usize) {
    let edge_addr = c.node(e).addr();
    let expected: Vec<Vec<u8>> = (0..4).map(|i| sample_file(c, i)).collect();
    let bodies = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|i| {
                let path = format!("/v1/content/sample/seg/{i}.m4s");
                mhc_tests::http_request(edge_addr, "GET", &path, &[]).unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (i, r) in bodies.iter().enumerate() {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, expected[i], "segment {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_parent_is_caught_and_the_viewer_gets_the_right_bytes() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let origin_quic = c.node(o).quic.unwrap();
    // Enrolled, and lying anyway: enrollment is no reason to believe bytes.
    let hostile = flipping_parent(&c, origin_quic, true);
    let hostile_parent = format!("{}@{}", hostile.peer_id(), hostile.local_addr());
    // The hostile parent comes first, the honest origin second.
    let parents = [hostile_parent, c.node(o).as_parent()];
    let e = c.start_with("edge", edge_options(c.node(o), &parents));
    viewer_gets_the_first_four_segments(&c, e).await;
    let edge = c.node(e);
    assert_eq!(
        edge.metric("mhc_fill_failures_total{reason=\"verification\"}"),
        Some(1.0)
    );
    assert!(edge.log_tail().contains("fail verification"));
    // Segment 3 came from the origin after the hostile parent was caught.
    assert!(
        c.node(o)
            .metric("mhc_quic_responses_total{kind=\"segment\",outcome=\"ok\"}")
            .unwrap()
            >= 5.0
    );
    hostile.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unenrolled_parent_is_never_asked_for_content() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let origin_quic = c.node(o).quic.unwrap();
    let stranger = flipping_parent(&c, origin_quic, false);
    let stranger_parent = format!("{}@{}", stranger.peer_id(), stranger.local_addr());
    let parents = [stranger_parent, c.node(o).as_parent()];
    let e = c.start_with("edge", edge_options(c.node(o), &parents));
    viewer_gets_the_first_four_segments(&c, e).await;
    let edge = c.node(e);
    assert!(
        edge.metric("mhc_fill_failures_total{reason=\"not_enrolled\"}")
            .unwrap()
            >= 1.0
    );
    // Its hello was refused, so nothing it would have sent was taken or even asked for.
    assert_eq!(
        edge.metric("mhc_fill_failures_total{reason=\"verification\"}"),
        None
    );
    assert!(edge.log_tail().contains("not enrolled"));
    stranger.shutdown().await;
}

#[test]
fn a_parent_with_the_wrong_identity_is_refused_at_the_handshake() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let origin_quic = c.node(o).quic.unwrap();
    // Claims to be some other peer at the origin's address: the TLS handshake fails (the
    // certificate key is the origin's, not that peer's) and the edge moves on.
    let impostor = format!("{}@{}", libp2p::PeerId::random(), origin_quic);
    let parents = [impostor, c.node(o).as_parent()];
    let e = c.start_with("edge", edge_options(c.node(o), &parents));
    let r = c.node(e).get("/v1/content/sample/seg/0.m4s");
    assert_eq!(r.status, 200, "{}", c.node(e).log_tail());
    assert_eq!(r.body, sample_file(&c, 0));
    assert!(
        c.node(e)
            .metric("mhc_fill_failures_total{reason=\"unreachable\"}")
            .unwrap()
            >= 1.0
    );
}

#[test]
fn a_burst_of_1000_requests_does_not_grow_memory_without_bound() {
    let mut c = Cluster::new();
    let o = origin_with_sample(&mut c);
    let parent = c.node(o).as_parent();
    // All 500 clients come from 127.0.0.1: lift the per-client connection cap (256), which a
    // slow machine would otherwise hit with overlapping requests (this measures memory).
    let e = c.start_with(
        "edge",
        edge_options(c.node(o), &[parent]).extra("[http]\nmax_connections_per_client = 1024\n"),
    );
    let addr = c.node(e).addr();
    let rss = || c.node(e).rss_kb();
    assert_eq!(c.node(e).get("/v1/content/sample/seg/0.m4s").status, 200);
    let before = rss();
    let mut peak = before;
    for _round in 0..2 {
        let threads: Vec<_> = (0..500)
            .map(|i| {
                std::thread::spawn(move || {
                    let path = format!("/v1/content/sample/seg/{}.m4s", i % 4);
                    mhc_tests::http_request(addr, "GET", &path, &[]).map(|r| r.status)
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), 200);
        }
        peak = peak.max(rss());
    }
    assert!(
        wait_until(Duration::from_secs(5), || rss() < before + 64 * 1024),
        "edge RSS went from {before} kB to {} kB (peak {peak} kB) after 1000 requests",
        rss()
    );
}

#[test]
fn filling_three_times_the_disk_cap_evicts_and_stays_within_it() {
    let mut c = Cluster::new();
    let o = c.start("origin", "origin", "");
    // Three contents of 10 × 30 kB; the edge's disk holds 0.0003 GiB ≈ 322 kB, about one.
    for (n, id) in ["a", "b", "c"].iter().enumerate() {
        let dir = c.path().join(id);
        mhc_tests::write_synthetic_rendition(&dir, 10, 30_000, n as u8 * 50);
        assert_success(&c.node(o).ingest(id, &dir), "ingest");
    }
    let parent = c.node(o).as_parent();
    let e = c.start_with(
        "edge",
        edge_options(c.node(o), &[parent]).extra("[cache]\nmemory_mb = 0\ndisk_gb = 0.0003\n"),
    );
    let cap = c.node(e).metric("mhc_store_disk_capacity_bytes").unwrap();
    for id in ["a", "b", "c"] {
        for i in 0..10 {
            let r = c.node(e).get(&format!("/v1/content/{id}/seg/{i}.ts"));
            assert_eq!(r.status, 200, "{id}/{i}: {}", r.text());
            let file = fs::read(c.path().join(format!("{id}/seg_{i:03}.ts"))).unwrap();
            assert_eq!(r.body, file);
            let used = c.node(e).metric("mhc_store_disk_bytes").unwrap();
            assert!(used <= cap, "{used} bytes on disk over the {cap}-byte cap");
        }
    }
    // What was evicted is filled again on demand.
    let r = c.node(e).get("/v1/content/a/seg/0.ts");
    assert_eq!(r.status, 200);
    assert!(c.node(e).metric("mhc_fills_total").unwrap() > 30.0);
    // That request also prefetches the next segments in the background, and a folder listed
    // while a file in it is replaced may show both; so the count is taken once the edge is idle.
    let blobs = c.node(e).data_dir.join("blobs");
    let files = || -> usize {
        fs::read_dir(&blobs)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|d| d.file_name().len() == 2)
            .map(|d| fs::read_dir(d.path()).unwrap().count())
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(5), || files() * 30_000 <= cap as usize),
        "{} blobs on disk",
        files()
    );
}

/// Ingests `n` synthetic segments of 64 KiB as `song` at the origin.
fn origin_with_synthetic(c: &mut Cluster, n: usize) -> (usize, std::path::PathBuf) {
    let o = c.start("origin", "origin", "");
    let dir = c.path().join("song");
    mhc_tests::write_synthetic_rendition(&dir, n, 64 * 1024, 9);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    (o, dir)
}

#[test]
fn a_blackholed_first_parent_costs_one_connect_timeout_not_one_per_fill() {
    let mut c = Cluster::new();
    let (o, dir) = origin_with_synthetic(&mut c, 20);
    // A UDP socket that reads nothing: the QUIC handshake gets no answer at all, as with a
    // parent behind a firewall that drops packets.
    let blackhole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let parents = [
        blackhole.local_addr().unwrap().to_string(),
        c.node(o).as_parent(),
    ];
    let e = c.start_with("edge", edge_options(c.node(o), &parents));
    let addr = c.node(e).addr();

    let started = std::time::Instant::now();
    let playlist = mhc_tests::http_request(addr, "GET", "/v1/content/song/index.m3u8", &[]);
    assert_eq!(playlist.unwrap().status, 200);
    let viewers: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let path = format!("/v1/content/song/seg/{i}.ts");
                mhc_tests::http_request(addr, "GET", &path, &[]).unwrap()
            })
        })
        .collect();
    for (i, v) in viewers.into_iter().enumerate() {
        let r = v.join().unwrap();
        assert_eq!(r.status, 200, "segment {i}: {}", r.text());
        assert_eq!(
            r.body,
            fs::read(dir.join(format!("seg_{i:03}.ts"))).unwrap()
        );
    }
    let took = started.elapsed();
    // One connect timeout (2 s by default) for the first question, then the blackholed parent
    // is asked after the origin: not 20 × 30 s of QUIC idle timeout behind a global lock.
    assert!(
        took < Duration::from_secs(5),
        "20 cold segments took {took:?}"
    );
    let edge = c.node(e);
    assert!(
        edge.metric("mhc_fill_failures_total{reason=\"unreachable\"}")
            .unwrap()
            >= 1.0
    );
    assert!(edge.log_tail().contains("avoided for a while"));
    drop(blackhole);
}

/// A parent that says hello as an enrolled edge, knows no manifest, and answers every blob
/// request with the origin's true header and the first half of its body, then nothing: the
/// stream stays open for as long as the parent lives.
async fn stop_mid_body_parent(
    c: &Cluster,
    origin: SocketAddr,
    blob_requests: Arc<std::sync::atomic::AtomicUsize>,
) -> (quinn::Endpoint, libp2p::PeerId) {
    use mhc_transport::{encode_response_header, FrameDecoder};
    let seed = [71u8; 32];
    let config = mhc_transport::server_config(&seed, &Default::default()).unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let peer_id = {
        let mut s = seed;
        libp2p::identity::Keypair::ed25519_from_bytes(&mut s)
            .unwrap()
            .public()
            .to_peer_id()
    };
    let certificate = c.certificate(seed, "edge");
    let relay_certificate = c.certificate([72u8; 32], "edge");
    let relay = Arc::new(QuicClient::new("127.0.0.1:0".parse().unwrap(), [72u8; 32]).unwrap());
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let (certificate, relay_certificate) = (certificate.clone(), relay_certificate.clone());
            let (relay, blob_requests) = (Arc::clone(&relay), Arc::clone(&blob_requests));
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let frame = recv.read_to_end(64 * 1024).await.unwrap();
                    let req: Request = FrameDecoder::new().push(&frame).unwrap().unwrap();
                    let (header, body) = match req {
                        Request::Hello { .. } => (
                            ResponseHeader::Hello {
                                certificate: certificate.clone(),
                            },
                            Bytes::new(),
                        ),
                        Request::GetSegment { .. } | Request::GetInit { .. } => {
                            blob_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let conn = relay.connect(origin, None).await.unwrap();
                            let hello = Request::Hello {
                                certificate: relay_certificate.clone(),
                            };
                            conn.request(&hello, 0).await.unwrap();
                            let (header, body) = conn.request(&req, 64 << 20).await.unwrap();
                            (header, body.slice(..body.len() / 2))
                        }
                        _ => (ResponseHeader::not_found("not here"), Bytes::new()),
                    };
                    let stall = !body.is_empty();
                    send.write_all(&encode_response_header(&header).unwrap())
                        .await
                        .unwrap();
                    send.write_all(&body).await.unwrap();
                    if stall {
                        // Half a body, then silence with the stream open.
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(send);
                        });
                    } else {
                        let _ = send.finish();
                    }
                }
            });
        }
    });
    (endpoint, peer_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_stops_mid_body_does_not_stall_the_segments_viewers() {
    let mut c = Cluster::new();
    let (o, dir) = origin_with_synthetic(&mut c, 4);
    let origin_quic = c.node(o).quic.unwrap();
    let blob_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (staller, staller_id) =
        stop_mid_body_parent(&c, origin_quic, Arc::clone(&blob_requests)).await;
    let parents = [
        format!("{staller_id}@{}", staller.local_addr().unwrap()),
        c.node(o).as_parent(),
    ];
    let options = edge_options(c.node(o), &parents).extra("first_byte_timeout_ms = 1000\n");
    let e = c.start_with("edge", options);
    let addr = c.node(e).addr();
    // Five viewers of segment 0 at once share one fill, which the staller holds: after a
    // second of silence it moves to the origin for all of them.
    let expected = fs::read(dir.join("seg_000.ts")).unwrap();
    let viewers = tokio::task::spawn_blocking(move || {
        let threads: Vec<_> = (0..5)
            .map(|_| {
                std::thread::spawn(move || {
                    mhc_tests::http_request(addr, "GET", "/v1/content/song/seg/0.ts", &[]).unwrap()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for r in &viewers {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, expected);
    }
    assert_eq!(blob_requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    let edge = c.node(e);
    assert!(
        edge.log_tail().contains("body stalled"),
        "{}",
        edge.log_tail()
    );
    // The staller is now asked after the origin: the next segments do not wait for it.
    for i in 1..4 {
        let r = edge.get(&format!("/v1/content/song/seg/{i}.ts"));
        assert_eq!(r.status, 200);
    }
    assert_eq!(blob_requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    staller.close(0u32.into(), b"done");
}
