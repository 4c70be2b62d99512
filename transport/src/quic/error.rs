//! Errors of the QUIC socket layer: who caused them and whether a retry may help.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use libp2p_identity::PeerId;
use quinn::{ConnectionError, TransportErrorCode};

use crate::identity::IdentityError;
use crate::proto::ProtoError;

/// Who caused a [`QuicError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOrigin {
    /// This node: configuration, socket, a request it should not have sent, its own limits.
    Local,
    /// Reaching or keeping the peer: unreachable, handshake failed, connection lost, too slow.
    Connection,
    /// The peer: broke the protocol, or is not the node it was expected to be.
    Peer,
}

/// Errors of [`QuicServer`](crate::QuicServer), [`QuicClient`](crate::QuicClient) and
/// [`QuicConnection`](crate::QuicConnection).
///
/// [`origin`](Self::origin) says who caused it and [`is_retryable`](Self::is_retryable)
/// whether asking again (later, on a new connection, or another peer) may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The UDP socket could not be bound (address in use, no permission, or no tokio runtime).
    #[error("cannot bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The node's TLS identity could not be built.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// quinn refused to start the connection (unusable address, endpoint closed).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address asked for.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectError,
    },
    /// The handshake failed: no answer, refused, or one side rejected the other's certificate.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// Address of the peer.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: ConnectionError,
    },
    /// The server at `addr` proved a key other than that of the pinned peer.
    #[error("{addr} is not peer {expected}")]
    WrongPeer {
        /// Address of the server.
        addr: SocketAddr,
        /// The peer that was expected there.
        expected: PeerId,
    },
    /// An established connection was closed or lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] ConnectionError),
    /// The peer reset the response stream (for instance while shutting down).
    #[error("peer reset the stream with code {code}")]
    StreamReset {
        /// Application error code of the reset.
        code: u64,
    },
    /// The peer sent a frame or body that breaks the protocol.
    #[error("protocol violation by the peer: {0}")]
    PeerProtocol(#[source] ProtoError),
    /// The request was not sent because it is invalid (e.g. a content id over the limit).
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] ProtoError),
    /// The response announced a body longer than the caller accepts; the body was not read.
    #[error("response body of {body_len} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// Announced length.
        body_len: u64,
        /// The caller's limit.
        max: u64,
    },
    /// No response header arrived within `request_timeout`.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

impl QuicError {
    /// Who caused the error.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            QuicError::Bind { .. }
            | QuicError::Identity(_)
            | QuicError::Connect { .. }
            | QuicError::InvalidRequest(_) => ErrorOrigin::Local,
            QuicError::Handshake { source, .. } | QuicError::ConnectionLost(source) => {
                connection_error_origin(source)
            }
            QuicError::Timeout(_) => ErrorOrigin::Connection,
            // The peer offered more than we accept for this request; for a segment, a size
            // that contradicts the manifest.
            QuicError::WrongPeer { .. }
            | QuicError::StreamReset { .. }
            | QuicError::PeerProtocol(_)
            | QuicError::BodyTooLarge { .. } => ErrorOrigin::Peer,
        }
    }

    /// Whether the same request may succeed if tried again, possibly on a new connection or
    /// after a pause.
    ///
    /// `false` means trying the same thing with the same peer will fail the same way; another
    /// peer may still have the data.
    pub fn is_retryable(&self) -> bool {
        match self {
            QuicError::Bind { .. }
            | QuicError::Identity(_)
            | QuicError::Connect { .. }
            | QuicError::WrongPeer { .. }
            | QuicError::PeerProtocol(_)
            | QuicError::InvalidRequest(_)
            | QuicError::BodyTooLarge { .. } => false,
            QuicError::Handshake { source, .. } | QuicError::ConnectionLost(source) => {
                connection_error_retryable(source)
            }
            QuicError::StreamReset { .. } | QuicError::Timeout(_) => true,
        }
    }

    /// Classifies the failure of an outgoing handshake.
    pub(crate) fn handshake(
        addr: SocketAddr,
        expected: Option<PeerId>,
        source: ConnectionError,
    ) -> Self {
        // Our verifier rejects an unexpected server key with `access_denied`; a locally
        // generated TransportError carrying that alert can only come from there.
        if let (Some(expected), ConnectionError::TransportError(err)) = (expected, &source) {
            let access_denied = u8::from(rustls::AlertDescription::AccessDenied);
            if err.code == TransportErrorCode::crypto(access_denied) {
                return QuicError::WrongPeer { addr, expected };
            }
        }
        QuicError::Handshake { addr, source }
    }
}

fn connection_error_origin(err: &ConnectionError) -> ErrorOrigin {
    match err {
        ConnectionError::LocallyClosed => ErrorOrigin::Local,
        // Detected here, but caused by what the peer sent (bad certificate, bad packet).
        ConnectionError::TransportError(_) | ConnectionError::VersionMismatch => ErrorOrigin::Peer,
        ConnectionError::ConnectionClosed(_)
        | ConnectionError::ApplicationClosed(_)
        | ConnectionError::Reset
        | ConnectionError::TimedOut
        | ConnectionError::CidsExhausted => ErrorOrigin::Connection,
    }
}

fn connection_error_retryable(err: &ConnectionError) -> bool {
    match err {
        // Incompatible or rejected peers, or our own close: asking again changes nothing.
        ConnectionError::VersionMismatch
        | ConnectionError::TransportError(_)
        | ConnectionError::LocallyClosed => false,
        // The peer refused the connection at the transport level (overloaded, shutting
        // down) or with a crypto alert (our certificate): only the former may pass later.
        ConnectionError::ConnectionClosed(close) => {
            close.error_code == TransportErrorCode::CONNECTION_REFUSED
                || close.error_code == TransportErrorCode::NO_ERROR
        }
        // An application close is a shutdown or restart of the peer.
        ConnectionError::ApplicationClosed(_)
        | ConnectionError::Reset
        | ConnectionError::TimedOut
        | ConnectionError::CidsExhausted => true,
    }
}
