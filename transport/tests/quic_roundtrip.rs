//! Request/response over real loopback QUIC: every kind of answer, and an 8 MiB streamed body.

mod common;

use common::*;
use mhc_transport::{ErrorOrigin, QuicError, QuicLimits, Request, ResponseHeader};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn every_response_kind_roundtrips() -> TestResult {
    let (server, client) = start(QuicLimits::default())?;
    let conn = client.connect(server.local_addr(), None).await?;
    assert_eq!(conn.peer_id(), peer_id(SERVER_SEED));

    let (header, body) = conn.request(&manifest_request(0), 1 << 20).await?;
    assert_eq!(
        header,
        ResponseHeader::Manifest {
            version: SONG_VERSION,
            body_len: MANIFEST_BODY.len() as u64
        }
    );
    assert_eq!(body, MANIFEST_BODY);

    for index in [0, 1, 17] {
        let request = Request::GetSegment {
            content_id: "song".into(),
            version: SONG_VERSION,
            index,
        };
        let (header, body) = conn.request(&request, 1 << 20).await?;
        let expected = segment_body(index);
        assert_eq!(
            header,
            ResponseHeader::Segment {
                hash: *blake3::hash(&expected).as_bytes(),
                size: expected.len() as u64,
                proof: segment_proof(index),
            }
        );
        assert_eq!(body, expected);
    }

    let init = Request::GetInit {
        content_id: "song".into(),
        version: SONG_VERSION,
    };
    let (header, body) = conn.request(&init, 1 << 20).await?;
    assert!(matches!(header, ResponseHeader::Segment { ref proof, .. } if proof.is_empty()));
    assert_eq!(body, INIT_BODY);

    let (header, body) = conn.request(&manifest_request(SONG_VERSION + 1), 0).await?;
    assert!(matches!(header, ResponseHeader::NotFound { .. }));
    assert!(body.is_empty());

    let busy = Request::GetInit {
        content_id: "busy".into(),
        version: 1,
    };
    let (header, _) = conn.request(&busy, 0).await?;
    assert_eq!(
        header,
        ResponseHeader::Busy {
            retry_after_ms: 250
        }
    );

    let broken = Request::GetInit {
        content_id: "broken".into(),
        version: 1,
    };
    let (header, _) = conn.request(&broken, 0).await?;
    assert_eq!(header, ResponseHeader::error("disk on fire"));

    assert!(conn.rtt() > std::time::Duration::ZERO);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn handler_bugs_become_error_responses() -> TestResult {
    let (server, client) = start(QuicLimits::default())?;
    let conn = client.connect(server.local_addr(), None).await?;
    for id in ["liar", "panic"] {
        let request = Request::GetInit {
            content_id: id.into(),
            version: 1,
        };
        let (header, body) = conn.request(&request, 1 << 20).await?;
        assert_eq!(header, ResponseHeader::error("internal error"), "{id}");
        assert!(body.is_empty());
    }
    // The connection survived both.
    let (header, _) = conn.request(&manifest_request(0), 1 << 20).await?;
    assert!(matches!(header, ResponseHeader::Manifest { .. }));
    Ok(())
}

#[tokio::test]
async fn eight_mib_body_streams_intact() -> TestResult {
    let (server, client) = start(QuicLimits::default())?;
    let conn = client
        .connect(server.local_addr(), Some(server.peer_id()))
        .await?;
    let request = Request::GetSegment {
        content_id: "big".into(),
        version: 1,
        index: 0,
    };
    let expected = *blake3::hash(&big_body()).as_bytes();

    // Chunk by chunk, hashing as it arrives (what a fill to disk does).
    let (header, mut body) = conn.request_streaming(&request).await?;
    let ResponseHeader::Segment { hash, size, .. } = header else {
        panic!("unexpected header {header:?}");
    };
    assert_eq!((hash, size), (expected, BIG_BODY_LEN as u64));
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    while let Some(chunk) = body.chunk().await? {
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(received, size);
    assert_eq!(body.remaining(), 0);
    assert_eq!(*hasher.finalize().as_bytes(), hash);

    // As an AsyncRead.
    let (_, mut body) = conn.request_streaming(&request).await?;
    let mut all = Vec::new();
    body.read_to_end(&mut all).await?;
    assert_eq!(*blake3::hash(&all).as_bytes(), expected);

    // Into memory, within the limit...
    let (_, bytes) = conn.request(&request, BIG_BODY_LEN as u64).await?;
    assert_eq!(*blake3::hash(&bytes).as_bytes(), expected);

    // ...and refused over it, without reading the body, leaving the connection usable.
    let err = conn
        .request(&request, BIG_BODY_LEN as u64 - 1)
        .await
        .expect_err("body over the limit");
    assert!(
        matches!(err, QuicError::BodyTooLarge { body_len, .. } if body_len == BIG_BODY_LEN as u64)
    );
    assert!(!err.is_retryable());
    let (header, _) = conn.request(&manifest_request(0), 1 << 20).await?;
    assert!(matches!(header, ResponseHeader::Manifest { .. }));
    Ok(())
}

#[tokio::test]
async fn shutdown_fails_open_connections_retryably() -> TestResult {
    let (server, client) = start(QuicLimits::default())?;
    let conn = client.connect(server.local_addr(), None).await?;
    conn.request(&manifest_request(0), 1 << 20).await?;
    server.shutdown().await;

    let err = conn
        .request(&manifest_request(0), 1 << 20)
        .await
        .expect_err("server is gone");
    assert!(matches!(err, QuicError::ConnectionLost(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.origin(), ErrorOrigin::Connection);
    assert!(conn.is_closed());
    Ok(())
}

#[tokio::test]
async fn one_client_endpoint_serves_many_connections() -> TestResult {
    let (a, client) = start(QuicLimits::default())?;
    let b = mhc_transport::QuicServer::bind(
        localhost(),
        OTHER_SEED,
        QuicLimits::default(),
        test_handler(),
    )?;
    let to_a = client
        .connect(a.local_addr(), Some(peer_id(SERVER_SEED)))
        .await?;
    let to_b = client
        .connect(b.local_addr(), Some(peer_id(OTHER_SEED)))
        .await?;
    let request = manifest_request(0);
    let (ra, rb) = tokio::join!(
        to_a.request(&request, 1 << 20),
        to_b.request(&request, 1 << 20)
    );
    assert_eq!(ra?.1, MANIFEST_BODY);
    assert_eq!(rb?.1, MANIFEST_BODY);
    client.close().await;
    assert!(to_a.is_closed() && to_b.is_closed());
    Ok(())
}
