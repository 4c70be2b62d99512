//! The serving side: accept connections, read one request per stream, answer with a handler.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use libp2p_identity::PeerId;
use quinn::{Endpoint, Incoming, RecvStream, SendStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn, Instrument};

use super::config::node_server_config;
use super::slots::{Refusal, Slots};
use super::{code, read_frame, with_timeout, FrameReadError, QuicError, QuicLimits};
use crate::identity::{peer_id_of, NodeIdentity};
use crate::proto::{encode_response_header, Request, ResponseHeader};

/// What a [`Handler`] answers: a header and exactly `header.body_len()` body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Sent first, as one frame.
    pub header: ResponseHeader,
    /// Sent raw after the header; its length must equal `header.body_len()`, or the server
    /// sends [`ResponseHeader::Error`] instead (a mismatch is a handler bug).
    pub body: Bytes,
}

impl Response {
    /// A response with a body.
    pub fn new(header: ResponseHeader, body: Bytes) -> Self {
        Self { header, body }
    }

    /// A response without body (`NotFound`, `Busy`, `Error`).
    pub fn without_body(header: ResponseHeader) -> Self {
        Self {
            header,
            body: Bytes::new(),
        }
    }
}

/// Answers requests for a [`QuicServer`].
///
/// Called once per request, concurrently, with the [`PeerId`] proven by the peer's TLS
/// certificate. The future is dropped if the peer abandons the request, and a panic in it is
/// answered with [`ResponseHeader::Error`] on that stream only.
///
/// Closures `Fn(PeerId, Request) -> BoxFuture<'static, Response>` implement it.
pub trait Handler: Send + Sync + 'static {
    /// Produces the response to `request` from `peer`.
    fn handle(&self, peer: PeerId, request: Request) -> BoxFuture<'static, Response>;

    /// Told of each connection refused by a cap of [`QuicLimits`] (`peer` once the handshake
    /// proved it), to count it. Does nothing unless implemented.
    fn refused(&self, remote: SocketAddr, peer: Option<PeerId>, why: Refusal) {
        let _ = (remote, peer, why);
    }
}

impl<F> Handler for F
where
    F: Fn(PeerId, Request) -> BoxFuture<'static, Response> + Send + Sync + 'static,
{
    fn handle(&self, peer: PeerId, request: Request) -> BoxFuture<'static, Response> {
        self(peer, request)
    }
}

/// The QUIC server of a node: serves manifests and segments to other nodes.
///
/// Dropping it closes the endpoint and every connection at once; [`shutdown`](Self::shutdown)
/// also waits until peers were told.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use futures::FutureExt;
/// use mhc_transport::{QuicLimits, QuicServer, Request, Response, ResponseHeader};
///
/// # async fn run(seed: [u8; 32]) -> Result<(), mhc_transport::QuicError> {
/// let handler = |_peer, req: Request| {
///     async move { Response::without_body(ResponseHeader::not_found(req.content_id().unwrap_or("-"))) }.boxed()
/// };
/// let server = QuicServer::bind(
///     "0.0.0.0:4433".parse().unwrap(),
///     seed,
///     QuicLimits::default(),
///     Arc::new(handler),
/// )?;
/// println!("serving as {} on {}", server.peer_id(), server.local_addr());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct QuicServer {
    endpoint: Endpoint,
    local_addr: SocketAddr,
    peer_id: PeerId,
    accept_task: JoinHandle<()>,
}

impl QuicServer {
    /// Binds `addr` and starts accepting connections on the current tokio runtime.
    ///
    /// Every connection must present a node certificate; its [`PeerId`] is passed to
    /// `handler` with each request. Port 0 picks a free port (see [`local_addr`]).
    ///
    /// [`local_addr`]: Self::local_addr
    ///
    /// # Errors
    ///
    /// [`QuicError::Bind`] if the socket cannot be bound or no tokio runtime is running;
    /// [`QuicError::Identity`] if the TLS identity cannot be built from `seed`.
    pub fn bind(
        addr: SocketAddr,
        seed: [u8; 32],
        limits: QuicLimits,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, QuicError> {
        let identity = NodeIdentity::from_seed(&seed)?;
        let config = node_server_config(&identity, &limits)?;
        // Fails (instead of panicking) when called outside a tokio runtime, which also makes
        // the `tokio::spawn` below safe.
        let endpoint =
            Endpoint::server(config, addr).map_err(|source| QuicError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| QuicError::Bind { addr, source })?;
        let peer_id = identity.peer_id();
        let accept_task = tokio::spawn(
            accept_loop(endpoint.clone(), handler, Arc::new(limits))
                .instrument(tracing::debug_span!("quic_server", %local_addr)),
        );
        Ok(Self {
            endpoint,
            local_addr,
            peer_id,
            accept_task,
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The [`PeerId`] this server proves to its clients.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Stops accepting, closes every connection, and waits until peers were notified.
    ///
    /// Requests in flight are cut; their clients see [`QuicError::ConnectionLost`], which is
    /// retryable (on another node, or here after a restart).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the endpoint is closed before the first await; cancelling only stops
    /// waiting for the close to reach the peers.
    pub async fn shutdown(&self) {
        self.endpoint.close(code::CLOSED, b"shutdown");
        self.accept_task.abort();
        self.endpoint.wait_idle().await;
    }
}

impl Drop for QuicServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.endpoint.close(code::CLOSED, b"shutdown");
    }
}

async fn accept_loop(endpoint: Endpoint, handler: Arc<dyn Handler>, limits: Arc<QuicLimits>) {
    let slots = Slots::new(&limits);
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        // Past half the table, a client proves it receives at its address (a retry round
        // trip) before it takes a slot, so handshakes from spoofed addresses cannot fill it.
        if !incoming.remote_address_validated() && slots.under_pressure() {
            if let Err(err) = incoming.retry() {
                err.into_incoming().refuse();
            }
            continue;
        }
        let slot = match slots.admit_address(remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                debug!(%remote, reason = why.label(), "connection refused");
                handler.refused(remote, None, why);
                incoming.refuse();
                continue;
            }
        };
        tokio::spawn(
            serve_connection(
                incoming,
                slot,
                slots.clone(),
                handler.clone(),
                limits.clone(),
            )
            .in_current_span(),
        );
    }
    debug!("quic endpoint closed");
}

/// Serves one connection; `_address_slot` holds its place in the table until it ends.
async fn serve_connection(
    incoming: Incoming,
    _address_slot: super::slots::AddressSlot,
    slots: Arc<Slots>,
    handler: Arc<dyn Handler>,
    limits: Arc<QuicLimits>,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(err) => {
            debug!(%remote, err = %err, "quic handshake failed");
            return;
        }
    };
    let peer = match peer_id_of(&conn) {
        Ok(peer) => peer,
        Err(err) => {
            warn!(%remote, err = %err, "no peer identity after handshake");
            conn.close(code::BAD_IDENTITY, b"bad identity");
            return;
        }
    };
    let _peer_slot = match slots.admit_peer(peer) {
        Ok(slot) => slot,
        Err(why) => {
            debug!(%remote, %peer, reason = why.label(), "connection refused");
            handler.refused(remote, Some(peer), why);
            conn.close(code::BUSY, b"too many connections");
            return;
        }
    };
    let request_timeout = limits.request_timeout();
    async move {
        debug!("connection accepted");
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    tokio::spawn(
                        serve_stream(peer, send, recv, handler.clone(), request_timeout)
                            .in_current_span(),
                    );
                }
                Err(err) => {
                    debug!(reason = %err, "connection closed");
                    break;
                }
            }
        }
    }
    .instrument(tracing::debug_span!("quic_conn", %peer, %remote))
    .await
}

/// Serves one stream: one request, one response. Failures end this stream only.
async fn serve_stream(
    peer: PeerId,
    mut send: SendStream,
    mut recv: RecvStream,
    handler: Arc<dyn Handler>,
    request_timeout: Option<Duration>,
) {
    let stream = send.id();
    let request = match with_timeout(request_timeout, read_frame::<Request>(&mut recv)).await {
        Some(Ok(request)) => request,
        Some(Err(FrameReadError::Proto(err))) => {
            debug!(%stream, err = %err, "rejecting malformed request");
            reject(send, recv, format!("bad request: {err}")).await;
            return;
        }
        Some(Err(FrameReadError::Read(err))) => {
            debug!(%stream, err = %err, "request stream failed");
            // Reset rather than let the drop finish the stream: a FIN without a header would
            // read as a protocol violation on the other side.
            let _ = send.reset(code::CANCELLED);
            return;
        }
        None => {
            debug!(%stream, "request timed out");
            reject(send, recv, "request timeout".to_owned()).await;
            return;
        }
    };
    // Whatever the client sends after its frame (at most its FIN) is not needed.
    drop(recv);

    let handled = AssertUnwindSafe(handler.handle(peer, request)).catch_unwind();
    let response = tokio::select! {
        response = handled => match response {
            Ok(response) => response,
            Err(_) => {
                warn!(%stream, "request handler panicked");
                Response::without_body(ResponseHeader::error("internal error"))
            }
        },
        // The client gave up (timeout, drop) or the connection died: stop working for it.
        _ = send.stopped() => {
            debug!(%stream, "request abandoned by the client");
            return;
        }
    };

    let (frame, body) = match checked_response(response) {
        Ok(ok) => ok,
        Err(reason) => {
            warn!(%stream, reason, "handler returned an invalid response");
            match encode_response_header(&ResponseHeader::error("internal error")) {
                Ok(frame) => (frame, Bytes::new()),
                Err(_) => {
                    let _ = send.reset(code::CANCELLED);
                    return;
                }
            }
        }
    };
    if let Err(err) = write_response(&mut send, &frame, body).await {
        debug!(%stream, err = %err, "response not delivered");
    }
}

/// Encodes a handler's response, refusing one whose body contradicts its header.
fn checked_response(response: Response) -> Result<(Vec<u8>, Bytes), String> {
    let Response { header, body } = response;
    if header.body_len() != body.len() as u64 {
        return Err(format!(
            "header announces {} body bytes, body has {}",
            header.body_len(),
            body.len()
        ));
    }
    let frame = encode_response_header(&header).map_err(|err| err.to_string())?;
    Ok((frame, body))
}

/// Answers a request that could not be read with an Error header, without reading the rest.
async fn reject(mut send: SendStream, mut recv: RecvStream, message: String) {
    // STOP_SENDING first: the rest of a garbage or oversize request is never read, and the
    // client should stop sending it.
    let _ = recv.stop(code::BAD_REQUEST);
    match encode_response_header(&ResponseHeader::error(message)) {
        Ok(frame) => {
            // Under a kilobyte: fits in the initial stream window, so this does not block on
            // a client that does not read.
            if let Err(err) = write_response(&mut send, &frame, Bytes::new()).await {
                debug!(err = %err, "rejection not delivered");
            }
        }
        Err(_) => {
            let _ = send.reset(code::BAD_REQUEST);
        }
    }
}

async fn write_response(
    send: &mut SendStream,
    frame: &[u8],
    body: Bytes,
) -> Result<(), quinn::WriteError> {
    send.write_all(frame).await?;
    if !body.is_empty() {
        // Hands the buffer to quinn without copying it.
        send.write_chunk(body).await?;
    }
    send.finish()?;
    Ok(())
}
