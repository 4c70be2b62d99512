//! The fetching side: one endpoint, many connections, one stream per request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libp2p_identity::PeerId;
use quinn::{Endpoint, RecvStream};
use tokio::io::{AsyncRead, ReadBuf};

use super::config::node_client_config;
use super::{code, read_frame, with_timeout, FrameReadError, QuicError, QuicLimits};
use crate::identity::{peer_id_of, NodeIdentity, CERT_NAME};
use crate::proto::{encode_request, ProtoError, Request, ResponseHeader};

/// The QUIC client of a node: one UDP endpoint from which it connects to other nodes.
///
/// Cheap to keep for the life of the process; connections made from it share its socket.
///
/// # Examples
///
/// ```no_run
/// use mhc_transport::{QuicClient, Request, ResponseHeader};
///
/// # async fn run(seed: [u8; 32], parent: std::net::SocketAddr, id: libp2p_identity::PeerId)
/// # -> Result<(), mhc_transport::QuicError> {
/// let client = QuicClient::new("0.0.0.0:0".parse().unwrap(), seed)?;
/// let conn = client.connect(parent, Some(id)).await?;
/// let request = Request::GetManifest { content_id: "my-song".into(), min_version: 0 };
/// let (header, body) = conn.request(&request, 1 << 20).await?;
/// if let ResponseHeader::Manifest { version, .. } = header {
///     println!("manifest v{version}: {} bytes", body.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct QuicClient {
    endpoint: Endpoint,
    local_addr: SocketAddr,
    identity: NodeIdentity,
    limits: QuicLimits,
}

impl QuicClient {
    /// Binds a client endpoint on `bind` with [`QuicLimits::default`].
    ///
    /// Bind the address family of the peers (`0.0.0.0:0` for IPv4, `[::]:0` for IPv6, which
    /// on Linux also reaches IPv4 peers).
    ///
    /// # Errors
    ///
    /// See [`with_limits`](Self::with_limits).
    pub fn new(bind: SocketAddr, seed: [u8; 32]) -> Result<Self, QuicError> {
        Self::with_limits(bind, seed, QuicLimits::default())
    }

    /// Binds a client endpoint on `bind`, with the idle timeout, keep-alive and request timeout
    /// of `limits` (`max_concurrent_streams_per_connection` is the server's to set).
    ///
    /// # Errors
    ///
    /// [`QuicError::Bind`] if the socket cannot be bound or no tokio runtime is running;
    /// [`QuicError::Identity`] if the TLS identity cannot be built from `seed`.
    pub fn with_limits(
        bind: SocketAddr,
        seed: [u8; 32],
        limits: QuicLimits,
    ) -> Result<Self, QuicError> {
        let identity = NodeIdentity::from_seed(&seed)?;
        let endpoint =
            Endpoint::client(bind).map_err(|source| QuicError::Bind { addr: bind, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| QuicError::Bind { addr: bind, source })?;
        Ok(Self {
            endpoint,
            local_addr,
            identity,
            limits,
        })
    }

    /// The local address of the endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The [`PeerId`] this client proves to servers.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// Connects to the node at `addr`.
    ///
    /// With `expected = Some(id)` the handshake fails unless the server proves the key of
    /// `id`; with `None` any node is accepted and [`QuicConnection::peer_id`] says which.
    ///
    /// # Errors
    ///
    /// [`QuicError::WrongPeer`] if the server is not `expected`; [`QuicError::Handshake`] if
    /// the peer does not answer within the idle timeout, refuses, or rejects this node's
    /// certificate; [`QuicError::Connect`] if quinn cannot start (e.g. port 0, closed
    /// endpoint).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons the handshake.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<QuicConnection, QuicError> {
        let config = node_client_config(&self.identity, expected, &self.limits)?;
        let connecting = self
            .endpoint
            .connect_with(config, addr, CERT_NAME)
            .map_err(|source| QuicError::Connect { addr, source })?;
        let conn = connecting
            .await
            .map_err(|source| QuicError::handshake(addr, expected, source))?;
        let peer = peer_id_of(&conn)?;
        tracing::debug!(%peer, %addr, "quic connection established");
        Ok(QuicConnection {
            conn,
            peer,
            request_timeout: self.limits.request_timeout(),
        })
    }

    /// Closes every connection of this client and waits until the peers were told.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: connections are closed before the first await.
    pub async fn close(&self) {
        self.endpoint.close(code::CLOSED, b"closed");
        self.endpoint.wait_idle().await;
    }
}

/// A connection to one node, over which any number of requests run concurrently.
///
/// Clones share the connection. It stays open while a clone exists, kept alive by
/// keep-alive packets, until either side closes it or it idles out.
#[derive(Debug, Clone)]
pub struct QuicConnection {
    conn: quinn::Connection,
    peer: PeerId,
    request_timeout: Option<Duration>,
}

impl QuicConnection {
    /// The [`PeerId`] proven by the server's certificate.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// Current smoothed round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// The server's address (it may change if the server migrates).
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Whether the connection is closed or lost; a closed connection fails every request.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Closes the connection now; requests in flight fail on both sides.
    pub fn close(&self) {
        self.conn.close(code::CLOSED, b"closed");
    }

    /// Sends `request` and reads the whole response, refusing bodies over `max_body_bytes`.
    ///
    /// If the connection already has as many requests open as the server allows, this waits
    /// for one to finish (that wait is not subject to the request timeout). The response
    /// header must then arrive within `request_timeout`; the body is not time-bounded.
    ///
    /// # Errors
    ///
    /// [`QuicError::BodyTooLarge`] (the body is not read) if the header announces more than
    /// `max_body_bytes`; [`QuicError::Timeout`] if no header came in time;
    /// [`QuicError::PeerProtocol`] for an invalid header, or a body shorter or longer than
    /// announced; [`QuicError::ConnectionLost`] and [`QuicError::StreamReset`] when the
    /// transport fails; [`QuicError::InvalidRequest`] if `request` exceeds a protocol limit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons this request's stream (the server is told
    /// to stop), and the connection stays usable for others.
    pub async fn request(
        &self,
        request: &Request,
        max_body_bytes: u64,
    ) -> Result<(ResponseHeader, Bytes), QuicError> {
        let (header, body) = self.request_streaming(request).await?;
        let body = body.read_to_bytes(max_body_bytes).await?;
        Ok((header, body))
    }

    /// Sends `request` and returns the response header and its body as a stream.
    ///
    /// For bodies too big to hold in memory: the [`ResponseBody`] yields exactly
    /// `header.body_len()` bytes. That length is the peer's claim; check it (for a segment,
    /// against the manifest) before reading. Waiting and timeouts as in
    /// [`request`](Self::request).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), except the body errors, which come from
    /// [`ResponseBody`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`request`](Self::request).
    pub async fn request_streaming(
        &self,
        request: &Request,
    ) -> Result<(ResponseHeader, ResponseBody), QuicError> {
        let frame = encode_request(request).map_err(QuicError::InvalidRequest)?;
        // Waits for stream credit when the server's concurrency limit is reached: this is
        // queueing on our side, so it is not counted against the request timeout.
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(QuicError::ConnectionLost)?;
        let exchange = async {
            match send.write_all(&frame).await {
                Ok(()) => {
                    // Only fails if already finished or reset, which it is not.
                    let _ = send.finish();
                }
                // A server stops reading a request it rejects and still answers why: read on.
                Err(quinn::WriteError::Stopped(_)) => {}
                Err(err) => return Err(write_error(err)),
            }
            read_frame::<ResponseHeader>(&mut recv)
                .await
                .map_err(|err| match err {
                    FrameReadError::Proto(err) => QuicError::PeerProtocol(err),
                    FrameReadError::Read(err) => read_error(err),
                })
        };
        let header = match with_timeout(self.request_timeout, exchange).await {
            Some(header) => header?,
            None => {
                return Err(QuicError::Timeout(self.request_timeout.unwrap_or_default()));
            }
        };
        let body = ResponseBody {
            recv,
            remaining: header.body_len(),
            end_checked: false,
        };
        Ok((header, body))
    }
}

/// The body of a response: exactly the announced number of bytes, then the end of the stream.
///
/// Read it with [`chunk`](Self::chunk), [`read_to_bytes`](Self::read_to_bytes), or as a
/// [`tokio::io::AsyncRead`] (e.g. `tokio::io::copy` into a file). A stream that ends early or
/// carries extra bytes is an error, not a short or long read. Dropping it tells the server to
/// stop sending.
#[derive(Debug)]
pub struct ResponseBody {
    recv: RecvStream,
    remaining: u64,
    /// Whether the end of the stream was seen after the last body byte.
    end_checked: bool,
}

impl ResponseBody {
    /// Body bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next piece of the body, without copying; `None` once all of it was read and the
    /// stream ended.
    ///
    /// # Errors
    ///
    /// [`QuicError::PeerProtocol`] with [`ProtoError::Truncated`] if the stream ends early, or
    /// [`ProtoError::TrailingBytes`] if it continues past the body;
    /// [`QuicError::StreamReset`] / [`QuicError::ConnectionLost`] if the transport fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no data is lost if the future is dropped before completing.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, QuicError> {
        if self.remaining == 0 {
            self.check_end().await?;
            return Ok(None);
        }
        let max = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        match self.recv.read_chunk(max, true).await.map_err(read_error)? {
            Some(chunk) => {
                self.remaining -= chunk.bytes.len() as u64;
                Ok(Some(chunk.bytes))
            }
            None => Err(QuicError::PeerProtocol(ProtoError::Truncated {
                missing: self.remaining,
            })),
        }
    }

    /// Reads the whole body into memory, if it is at most `max_bytes` long.
    ///
    /// # Errors
    ///
    /// [`QuicError::BodyTooLarge`] without reading anything (the server is told to stop) if
    /// more than `max_bytes` remain; otherwise as [`chunk`](Self::chunk).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the bytes read so far are lost with the future (and the body with it,
    /// since it is consumed).
    pub async fn read_to_bytes(mut self, max_bytes: u64) -> Result<Bytes, QuicError> {
        if self.remaining > max_bytes {
            let _ = self.recv.stop(code::CANCELLED);
            return Err(QuicError::BodyTooLarge {
                body_len: self.remaining,
                max: max_bytes,
            });
        }
        // At most `max_bytes`, which the caller accepted to hold.
        let mut buf = BytesMut::with_capacity(usize::try_from(self.remaining).unwrap_or(0));
        while let Some(chunk) = self.chunk().await? {
            if buf.is_empty() && self.remaining == 0 {
                // The whole body came in one piece: hand it over without copying.
                self.check_end().await?;
                return Ok(chunk);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads the whole body into `dst`, which must be exactly as long as the body: for a
    /// caller that owns the buffer (an edge filling into block-aligned memory it then writes
    /// to disk directly), one copy from the transport and no other allocation.
    ///
    /// # Errors
    ///
    /// [`QuicError::BodyTooLarge`] without reading anything if the body is not `dst.len()`
    /// bytes; otherwise as [`chunk`](Self::chunk).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`read_to_bytes`](Self::read_to_bytes).
    pub async fn read_exact_into(mut self, dst: &mut [u8]) -> Result<(), QuicError> {
        if self.remaining != dst.len() as u64 {
            let _ = self.recv.stop(code::CANCELLED);
            return Err(QuicError::BodyTooLarge {
                body_len: self.remaining,
                max: dst.len() as u64,
            });
        }
        let mut at = 0;
        while let Some(chunk) = self.chunk().await? {
            // `chunk` never yields more than `remaining`, so this stays within `dst`.
            dst[at..at + chunk.len()].copy_from_slice(&chunk);
            at += chunk.len();
        }
        Ok(())
    }

    /// After the last body byte, the stream must end.
    async fn check_end(&mut self) -> Result<(), QuicError> {
        if self.end_checked {
            return Ok(());
        }
        match self.recv.read_chunk(1, true).await.map_err(read_error)? {
            None => {
                self.end_checked = true;
                Ok(())
            }
            Some(_) => Err(QuicError::PeerProtocol(ProtoError::TrailingBytes)),
        }
    }
}

impl AsyncRead for ResponseBody {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.remaining == 0 {
            if !this.end_checked {
                let mut probe = [0u8; 1];
                let n = ready!(this.recv.poll_read(cx, &mut probe))?;
                if n > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        ProtoError::TrailingBytes,
                    )));
                }
                this.end_checked = true;
            }
            return Poll::Ready(Ok(()));
        }
        let want = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        // Zeroes the part of `buf` not yet initialized: reading into uninitialized memory
        // would need `unsafe`, which this workspace forbids.
        let dst = buf.initialize_unfilled_to(want);
        let n = ready!(this.recv.poll_read(cx, dst))?;
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                ProtoError::Truncated {
                    missing: this.remaining,
                },
            )));
        }
        buf.advance(n);
        this.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

fn read_error(err: quinn::ReadError) -> QuicError {
    match err {
        quinn::ReadError::Reset(code) => QuicError::StreamReset {
            code: code.into_inner(),
        },
        quinn::ReadError::ConnectionLost(err) => QuicError::ConnectionLost(err),
        // Unreachable: the stream is read in order, not after `stop`, and never over 0-RTT.
        quinn::ReadError::ClosedStream
        | quinn::ReadError::IllegalOrderedRead
        | quinn::ReadError::ZeroRttRejected => QuicError::StreamReset { code: 0 },
    }
}

fn write_error(err: quinn::WriteError) -> QuicError {
    match err {
        quinn::WriteError::Stopped(code) => QuicError::StreamReset {
            code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(err) => QuicError::ConnectionLost(err),
        // Unreachable: the stream is written once, before `finish`, and never over 0-RTT.
        quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => {
            QuicError::StreamReset { code: 0 }
        }
    }
}
