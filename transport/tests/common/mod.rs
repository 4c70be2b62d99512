//! Shared fixtures of the QUIC tests: fixed node keys and a handler with one canned answer per
//! kind of response.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::FutureExt;
use libp2p_identity::PeerId;
use mhc_transport::{
    Handler, QuicClient, QuicError, QuicLimits, QuicServer, Request, Response, ResponseHeader,
};

pub const SERVER_SEED: [u8; 32] = [1; 32];
pub const CLIENT_SEED: [u8; 32] = [2; 32];
pub const OTHER_SEED: [u8; 32] = [3; 32];

/// The only version of "song" the test handler has.
pub const SONG_VERSION: u64 = 3;
pub const MANIFEST_BODY: &[u8] = b"pretend this is a signed manifest";
pub const INIT_BODY: &[u8] = b"ftyp-moov";
pub const BIG_BODY_LEN: usize = 8 << 20;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The libp2p PeerId of a seed, computed by libp2p itself (not by the crate under test).
pub fn peer_id(seed: [u8; 32]) -> PeerId {
    let mut seed = seed;
    libp2p_identity::Keypair::ed25519_from_bytes(&mut seed)
        .expect("32 bytes are an ed25519 seed")
        .public()
        .to_peer_id()
}

/// Deterministic pseudo-random bytes (`fastrand` seeded with `salt`).
pub fn pseudo_random(len: usize, salt: u64) -> Bytes {
    let mut out = vec![0; len];
    fastrand::Rng::with_seed(salt).fill(&mut out);
    Bytes::from(out)
}

pub fn big_body() -> Bytes {
    static BIG: OnceLock<Bytes> = OnceLock::new();
    BIG.get_or_init(|| pseudo_random(BIG_BODY_LEN, 0xb16))
        .clone()
}

pub fn segment_body(index: u32) -> Bytes {
    pseudo_random(1000 + index as usize, u64::from(index) + 1)
}

/// Proof the handler attaches to segment `index`: recognisable, not a real Merkle path.
pub fn segment_proof(index: u32) -> Vec<[u8; 32]> {
    (0..4).map(|level| [index as u8 ^ level; 32]).collect()
}

fn segment(body: Bytes, proof: Vec<[u8; 32]>) -> Response {
    Response::new(
        ResponseHeader::Segment {
            hash: *blake3::hash(&body).as_bytes(),
            size: body.len() as u64,
            proof,
        },
        body,
    )
}

/// Answers from a fixed catalogue; special content ids exercise the other responses.
pub fn answer(peer: PeerId, request: Request) -> Response {
    match (request.content_id().unwrap_or_default(), &request) {
        ("busy", _) => Response::without_body(ResponseHeader::Busy {
            retry_after_ms: 250,
        }),
        ("broken", _) => Response::without_body(ResponseHeader::error("disk on fire")),
        ("whoami", _) => Response::without_body(ResponseHeader::not_found(peer.to_base58())),
        ("liar", _) => Response::new(
            ResponseHeader::Manifest {
                version: 1,
                body_len: 10,
            },
            Bytes::from_static(b"short"),
        ),
        ("panic", _) => panic!("handler bug"),
        ("big", Request::GetSegment { .. }) => segment(big_body(), vec![[9; 32]]),
        ("song", Request::GetManifest { min_version, .. }) if *min_version <= SONG_VERSION => {
            Response::new(
                ResponseHeader::Manifest {
                    version: SONG_VERSION,
                    body_len: MANIFEST_BODY.len() as u64,
                },
                Bytes::from_static(MANIFEST_BODY),
            )
        }
        (
            "song",
            Request::GetSegment {
                version: SONG_VERSION,
                index,
                ..
            },
        ) => segment(segment_body(*index), segment_proof(*index)),
        (
            "song",
            Request::GetInit {
                version: SONG_VERSION,
                ..
            },
        ) => segment(Bytes::from_static(INIT_BODY), vec![]),
        (id, _) => Response::without_body(ResponseHeader::not_found(format!("no {id}"))),
    }
}

pub fn test_handler() -> Arc<dyn Handler> {
    Arc::new(|peer, request| async move { answer(peer, request) }.boxed())
}

/// A server with the test handler and a client, both on loopback.
pub fn start(limits: QuicLimits) -> Result<(QuicServer, QuicClient), QuicError> {
    let server = QuicServer::bind(localhost(), SERVER_SEED, limits, test_handler())?;
    let client = QuicClient::new(localhost(), CLIENT_SEED)?;
    Ok((server, client))
}

pub fn manifest_request(min_version: u64) -> Request {
    Request::GetManifest {
        content_id: "song".into(),
        min_version,
    }
}
