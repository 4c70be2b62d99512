//! The viewer plane of a real origin held by connections that do not make requests: 2,000
//! that send nothing and 200 that send a header byte every 5 s, from nine loopback addresses
//! (under the per-address cap, as many households would be). A new client is answered at once
//! and gets a segment whole, every holding connection is closed at the header deadline, and
//! the node's memory stays bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mhc_tests::{assert_success, wait_until, Cluster};
use socket2::{Domain, Socket, Type};

const IDLE: usize = 2_000;
const SLOW: usize = 200;
/// The test's `http.header_read_timeout_ms`: longer than opening every holding connection takes
/// a debug build on 2 cores (~12 s), so all of them hold when the new viewer comes.
const HEADER_DEADLINE: Duration = Duration::from_secs(25);

/// A TCP connection to `to` from `from` (any port).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Whether the server closed `s` (EOF or reset), waiting at most 100 ms for it.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn idle_and_slow_connections_neither_keep_a_new_viewer_waiting_nor_stay() {
    let mut c = Cluster::new();
    let o = c.start(
        "origin",
        "origin",
        &format!(
            "[http]\nheader_read_timeout_ms = {}\n",
            HEADER_DEADLINE.as_millis()
        ),
    );
    let dir = c.path().join("song");
    mhc_tests::write_synthetic_rendition(&dir, 2, 2 << 20, 4);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    let addr = c.node(o).addr();
    let segment = std::fs::read(dir.join("seg_001.ts")).unwrap();
    assert_eq!(c.node(o).get("/v1/content/song/seg/1.ts").body, segment);
    let rss_before = c.node(o).rss_kb();

    // 2,000 that send nothing, 250 from each of 127.0.0.2 ..= 127.0.0.9; 200 from 127.0.0.10
    // that send the first byte of a request line, then one more every 5 s.
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8), addr))
        .collect();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 10), addr);
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    let trickle = std::thread::spawn({
        let mut slow: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        move || {
            for byte in b"ET /v1/content/song/seg/0.ts HTTP/1.1\r\n" {
                std::thread::sleep(Duration::from_secs(5));
                slow.retain_mut(|s| s.write_all(&[*byte]).is_ok());
                if slow.is_empty() {
                    return;
                }
            }
        }
    });
    let opened = started.elapsed();
    assert!(
        opened < HEADER_DEADLINE,
        "opening took {opened:?}, past the header deadline: the test would prove nothing"
    );

    // While they hold: a new viewer is answered, and served the whole segment.
    let asked = Instant::now();
    let health = c.node(o).get("/healthz");
    let answered = asked.elapsed();
    assert_eq!(health.status, 200);
    let got = c.node(o).get("/v1/content/song/seg/1.ts");
    let served = asked.elapsed();
    assert_eq!(got.status, 200);
    assert!(got.body == segment, "the segment came back different");
    let rss_during = c.node(o).rss_kb();
    eprintln!(
        "{} connections opened in {opened:?}; /healthz answered in {answered:?}, a 2 MiB \
         segment in {:?}; origin RSS {rss_before} KiB before, {rss_during} KiB holding them",
        IDLE + SLOW,
        served - answered
    );
    assert!(
        answered < Duration::from_secs(1),
        "/healthz took {answered:?} behind {} holding connections",
        IDLE + SLOW
    );
    // Each held connection costs a task, its socket and a few small buffers: well under 32 KiB.
    let grown_kib = rss_during.saturating_sub(rss_before);
    assert!(
        grown_kib < ((IDLE + SLOW) * 32) as u64,
        "the origin grew by {grown_kib} KiB holding {} connections",
        IDLE + SLOW
    );

    // Past the header deadline, every one of them is closed by the node.
    std::thread::sleep(HEADER_DEADLINE.saturating_sub(started.elapsed()));
    let mut open = IDLE + SLOW;
    let all_closed = wait_until(HEADER_DEADLINE, || {
        idle.retain_mut(|s| !closed_by_server(s));
        slow.retain_mut(|s| !closed_by_server(s));
        open = idle.len() + slow.len();
        open == 0
    });
    assert!(
        all_closed,
        "{open} holding connections still open after the header deadline"
    );
    let cut = c
        .node(o)
        .metric("mhc_http_connections_closed_total{reason=\"first_bytes_timeout\"}")
        .unwrap_or(0.0);
    assert!(cut >= IDLE as f64, "first_bytes_timeout closed {cut}");
    trickle.join().unwrap();
    assert_eq!(c.node(o).get("/healthz").status, 200);
}
