//! The QUIC socket layer of the node data plane: tokio + quinn around [`crate::proto`].
//!
//! [`QuicServer`] accepts connections and answers each bidirectional stream with a
//! [`Handler`]; [`QuicClient`] opens [`QuicConnection`]s and sends requests over them. All
//! framing and limits live in the sans-I/O [`crate::proto`]; this module moves bytes, applies
//! timeouts, and turns transport events into [`QuicError`]s.

mod client;
mod config;
mod error;
mod limits;
mod server;
mod slots;

use quinn::{RecvStream, VarInt};

use crate::proto::{Frame, FrameDecoder, ProtoError};

pub use client::{QuicClient, QuicConnection, ResponseBody};
pub use config::{client_config, server_config};
pub use error::{ErrorOrigin, QuicError};
pub use limits::QuicLimits;
pub use server::{Handler, QuicServer, Response};
pub use slots::Refusal;

/// Application error codes in CONNECTION_CLOSE, RESET_STREAM and STOP_SENDING frames.
mod code {
    use super::VarInt;

    /// Normal close: a node shutting down, or a client done with a connection.
    pub(super) const CLOSED: VarInt = VarInt::from_u32(0);
    /// The request on this stream was rejected (malformed, oversize, too slow); an Error
    /// response explains why when it could be sent.
    pub(super) const BAD_REQUEST: VarInt = VarInt::from_u32(1);
    /// The reader no longer wants the rest of the stream (body over its limit, or dropped).
    pub(super) const CANCELLED: VarInt = VarInt::from_u32(2);
    /// The server could not read the peer's identity; unreachable once the TLS verifiers
    /// accepted the certificate.
    pub(super) const BAD_IDENTITY: VarInt = VarInt::from_u32(3);
    /// The server holds as many connections as it allows (in all, from the client's address
    /// or for its peer id); try later or elsewhere.
    pub(super) const BUSY: VarInt = VarInt::from_u32(4);
}

/// Why one frame could not be read from a stream.
#[derive(Debug)]
enum FrameReadError {
    /// The bytes arrived but are not a valid frame.
    Proto(ProtoError),
    /// The stream or connection failed underneath.
    Read(quinn::ReadError),
}

impl From<ProtoError> for FrameReadError {
    fn from(err: ProtoError) -> Self {
        FrameReadError::Proto(err)
    }
}

impl From<quinn::ReadError> for FrameReadError {
    fn from(err: quinn::ReadError) -> Self {
        FrameReadError::Read(err)
    }
}

/// Reads exactly one frame, never consuming a byte past its end.
///
/// Cancel safe in the sense that matters here: dropping it loses the partial frame, and the
/// stream is then abandoned by the caller anyway.
async fn read_frame<T: Frame>(recv: &mut RecvStream) -> Result<T, FrameReadError> {
    let mut decoder = FrameDecoder::<T>::new();
    loop {
        // `needed()` is non-zero until the frame is complete, and at most T::MAX_BYTES once
        // the prefix passed its check, so this never buffers more than the limit.
        match recv.read_chunk(decoder.needed(), true).await? {
            Some(chunk) => {
                if let Some(frame) = decoder.push(&chunk.bytes)? {
                    return Ok(frame);
                }
            }
            None => {
                // A complete frame was returned above, so `finish` reports the truncation.
                decoder.finish()?;
                return Err(ProtoError::Truncated { missing: 0 }.into());
            }
        }
    }
}

/// Runs `fut` under `limit`; `None` (no limit configured) never times out.
async fn with_timeout<F: std::future::Future>(
    limit: Option<std::time::Duration>,
    fut: F,
) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        None => Some(fut.await),
    }
}
