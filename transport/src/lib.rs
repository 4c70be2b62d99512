//! Wire protocols of `mhc-node`.
//!
//! Viewer plane (HTTP, served by the node with hyper):
//! - [`parse_range`], [`if_none_match_matches`], [`if_range_matches`]: the RFC 9110 logic,
//!   without sockets, so it is tested on its own.
//! - [`headers`]: header names and fixed values players and CDNs see.
//!
//! Hierarchical data plane (node to node over QUIC, ALPN [`ALPN`]), split like quinn-proto /
//! quinn:
//! - Protocol, without I/O: [`Request`], [`ResponseHeader`], [`encode_request`],
//!   [`encode_response_header`], [`FrameDecoder`] and the limits ([`MAX_REQUEST_BYTES`] …).
//! - TLS identity: a node's ed25519 key is its certificate key, so the peer of every connection
//!   is a libp2p `PeerId` ([`server_config`], [`client_config`], [`peer_id_of`]).
//! - Sockets: [`QuicServer::bind`] serves requests with a [`Handler`];
//!   [`QuicClient::connect`] gives a [`QuicConnection`] whose [`QuicConnection::request`] and
//!   [`QuicConnection::request_streaming`] fetch manifests and segments.
//!
//! Control plane (gossiped over libp2p by the node):
//! - [`gossip`]: heartbeats, content announcements and the signed envelope, bounded and
//!   canonical.
//!
//! Broadcast plane (one-way UDP, unicast or multicast, e.g. over a satellite link):
//! - [`carousel`]: a RaptorQ-protected object carousel; [`Carousel`] is the sans-I/O sender,
//!   [`Assembler`] the sans-I/O receiver, and [`carousel::run_sender`] /
//!   [`carousel::run_receiver`] the tokio socket loops.

pub mod carousel;
mod conditional;
pub mod gossip;
pub mod headers;
mod identity;
mod proto;
mod quic;

pub use carousel::{Assembler, Carousel};
pub use conditional::{
    content_range, if_none_match_matches, if_range_matches, parse_range, unsatisfied_range,
    RangeOutcome,
};
pub use identity::{peer_id_of, IdentityError};
pub use proto::{
    encode_request, encode_response_header, Frame, FrameDecoder, ProtoError, Request,
    ResponseHeader, ALPN, MAX_CONTENT_ID_BYTES, MAX_PLAY_REPORT_BYTES, MAX_PROOF_HASHES,
    MAX_REPLICATE_WAIT_MS, MAX_REQUEST_BYTES, MAX_RESPONSE_HEADER_BYTES, MAX_SNAPSHOT_CURSOR_BYTES,
    MAX_TEXT_BYTES, PROTOCOL_VERSION,
};
pub use quic::{
    client_config, server_config, ErrorOrigin, Handler, QuicClient, QuicConnection, QuicError,
    QuicLimits, QuicServer, Refusal, Response, ResponseBody,
};
