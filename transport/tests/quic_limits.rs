//! Limits on real loopback QUIC: bad requests cost only their own stream, slow requests time
//! out, and requests over the concurrency limit wait instead of failing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::FutureExt;
use mhc_transport::{
    encode_request, ErrorOrigin, FrameDecoder, QuicError, QuicLimits, QuicServer, Request,
    ResponseHeader, MAX_CONTENT_ID_BYTES, MAX_REQUEST_BYTES,
};

/// A plain quinn connection with the node's TLS identity, to send bytes the typed client
/// would refuse to send.
async fn raw_connection(
    server: std::net::SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection), Box<dyn std::error::Error + Send + Sync>> {
    let endpoint = quinn::Endpoint::client(localhost())?;
    let config = mhc_transport::client_config(&CLIENT_SEED, None)?;
    let conn = endpoint.connect_with(config, server, "mhc")?.await?;
    Ok((endpoint, conn))
}

/// Sends `bytes` on a new stream (finishing it if `finish`) and reads the response header and
/// the body that follows it.
async fn raw_exchange(
    conn: &quinn::Connection,
    bytes: &[u8],
    finish: bool,
) -> Result<(ResponseHeader, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
    let (mut send, mut recv) = conn.open_bi().await?;
    // The server stops reading a request it rejects; a write can then fail with `Stopped`.
    match send.write_all(bytes).await {
        Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
        Err(err) => return Err(err.into()),
    }
    if finish {
        let _ = send.finish();
    }
    let mut decoder = FrameDecoder::<ResponseHeader>::new();
    let header = loop {
        let chunk = recv
            .read_chunk(decoder.needed(), true)
            .await?
            .ok_or("stream ended before the header")?;
        if let Some(header) = decoder.push(&chunk.bytes)? {
            break header;
        }
    };
    let body = recv.read_to_end(1 << 20).await?;
    Ok((header, body))
}

fn error_message(header: &ResponseHeader) -> &str {
    match header {
        ResponseHeader::Error { message } => message,
        other => panic!("expected an Error header, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_requests_close_only_their_stream() -> TestResult {
    let (server, _client) = start(QuicLimits::default())?;
    let (_endpoint, conn) = raw_connection(server.local_addr()).await?;
    let good = encode_request(&manifest_request(0))?;

    // Garbage payload under a plausible length.
    let (header, body) = raw_exchange(&conn, &[0, 0, 0, 3, 1, 0xff, 0xff], true).await?;
    assert!(
        error_message(&header).starts_with("bad request: malformed"),
        "{header:?}"
    );
    assert!(body.is_empty());

    // A length prefix over the limit, followed by far more data than the limit.
    let mut oversize = (MAX_REQUEST_BYTES as u32 * 4).to_be_bytes().to_vec();
    oversize.extend(std::iter::repeat_n(0xab, MAX_REQUEST_BYTES * 4));
    let (header, _) = raw_exchange(&conn, &oversize, true).await?;
    assert!(
        error_message(&header).contains("exceeds the limit"),
        "{header:?}"
    );

    // Another protocol version.
    let mut future = good.clone();
    future[4] = 2;
    let (header, _) = raw_exchange(&conn, &future, true).await?;
    assert!(error_message(&header).contains("unsupported protocol version 2"));

    // A frame cut short by the end of the stream.
    let (header, _) = raw_exchange(&conn, &good[..good.len() - 1], true).await?;
    assert!(
        error_message(&header).contains("stream ended"),
        "{header:?}"
    );

    // Random bytes, seeded.
    for salt in 1..20 {
        let junk = pseudo_random(1 + salt as usize * 7, salt);
        let (header, _) = raw_exchange(&conn, &junk, true).await?;
        assert!(matches!(header, ResponseHeader::Error { .. }), "{header:?}");
    }

    // The same connection still serves a good request.
    let (header, body) = raw_exchange(&conn, &good, true).await?;
    assert!(
        matches!(header, ResponseHeader::Manifest { .. }),
        "{header:?}"
    );
    assert_eq!(body, MANIFEST_BODY);
    assert!(conn.close_reason().is_none());
    Ok(())
}

#[tokio::test]
async fn a_request_that_never_completes_times_out_alone() -> TestResult {
    let limits = QuicLimits {
        request_timeout: Duration::from_millis(200),
        ..QuicLimits::default()
    };
    let (server, _client) = start(limits)?;
    let (_endpoint, conn) = raw_connection(server.local_addr()).await?;

    // Half a length prefix, and the stream left open.
    let (header, _) = raw_exchange(&conn, &[0, 0], false).await?;
    assert_eq!(error_message(&header), "request timeout");

    let good = encode_request(&manifest_request(0))?;
    let (header, _) = raw_exchange(&conn, &good, true).await?;
    assert!(matches!(header, ResponseHeader::Manifest { .. }));
    Ok(())
}

#[tokio::test]
async fn invalid_requests_are_refused_locally() -> TestResult {
    let (server, client) = start(QuicLimits::default())?;
    let conn = client.connect(server.local_addr(), None).await?;
    let long = Request::GetInit {
        content_id: "x".repeat(MAX_CONTENT_ID_BYTES + 1),
        version: 1,
    };
    let err = conn
        .request(&long, 0)
        .await
        .expect_err("content id too long");
    assert!(matches!(err, QuicError::InvalidRequest(_)), "{err:?}");
    assert_eq!(err.origin(), ErrorOrigin::Local);
    assert!(!err.is_retryable());
    Ok(())
}

/// Counts requests inside the handler and holds them until the test opens the gate.
struct Gate {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    open: tokio::sync::Semaphore,
}

#[tokio::test]
async fn streams_over_the_limit_wait_instead_of_failing() -> TestResult {
    const LIMIT: u32 = 2;
    const REQUESTS: u32 = 8;
    let gate = Arc::new(Gate {
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        open: tokio::sync::Semaphore::new(0),
    });
    let handler = {
        let gate = gate.clone();
        move |peer, request| {
            let gate = gate.clone();
            async move {
                let now = gate.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                gate.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let permit = gate.open.acquire().await;
                gate.in_flight.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
                answer(peer, request)
            }
            .boxed()
        }
    };
    let limits = QuicLimits {
        max_concurrent_streams_per_connection: LIMIT,
        ..QuicLimits::default()
    };
    let server = QuicServer::bind(localhost(), SERVER_SEED, limits, Arc::new(handler))?;
    let client = mhc_transport::QuicClient::new(localhost(), CLIENT_SEED)?;
    let conn = client.connect(server.local_addr(), None).await?;

    let tasks: Vec<_> = (0..REQUESTS)
        .map(|index| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let request = Request::GetSegment {
                    content_id: "song".into(),
                    version: SONG_VERSION,
                    index,
                };
                conn.request(&request, 1 << 20).await
            })
        })
        .collect();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gate.in_flight.load(Ordering::SeqCst) < LIMIT as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give the surplus requests time to reach the handler (or to fail) if the limit were not
    // enforced; with it, they wait for stream credit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gate.in_flight.load(Ordering::SeqCst), LIMIT as usize);
    assert!(tasks.iter().all(|task| !task.is_finished()));

    gate.open.add_permits(REQUESTS as usize);
    for (index, task) in tasks.into_iter().enumerate() {
        let (header, body) = task.await??;
        assert!(matches!(header, ResponseHeader::Segment { .. }));
        assert_eq!(body, segment_body(index as u32));
    }
    assert_eq!(gate.max_in_flight.load(Ordering::SeqCst), LIMIT as usize);
    Ok(())
}
