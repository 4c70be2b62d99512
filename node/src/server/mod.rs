//! Accept loops for the viewer plane (TCP) and the admin plane (unix socket): bounded
//! connections (in all and per client address), deadlines for every stage a client could stall
//! (its first bytes, its headers, its body, an idle keep-alive, an unanswered HTTP/2 ping, a dead
//! TCP peer), and graceful shutdown.
//!
//! The protocol (HTTP/1.1 or HTTP/2 with prior knowledge) is read from the first bytes here,
//! under the header deadline, rather than by hyper-util's auto builder, which waits for them
//! with no timer: a socket that sends nothing, or half the HTTP/2 preface, would otherwise hold a
//! connection permit for ever. Plain HTTP/1.1 is served by [`h1`], our own loop, which sends
//! segment bodies from their files with `sendfile`; HTTP/2 and TLS by hyper.
//!
//! A handler that panics answers `500` and the node goes on: the panic is caught per request,
//! logged, and shared state stays usable (its locks are `parking_lot`'s, which do not poison).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use mhc_config::HttpLimits;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

mod h1;

use crate::core::metrics::Metrics;
use crate::http::{error, Body, FileBody};
use crate::tls::ViewerTls;

/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most concurrent HTTP/2 streams per connection.
const MAX_H2_STREAMS: u32 = 256;

fn admin_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS);
    builder
}

/// The request body handlers of the viewer plane get: the connection's body with a deadline for
/// the whole of it ([`HttpLimits::body_read_timeout`]). The timer starts when the request
/// arrives and is armed only if the handler reads the body (a `GET` costs no timer).
#[derive(Debug)]
pub struct ViewerBody {
    /// `None` for a request without a body (read by [`h1`], not hyper).
    inner: Option<Incoming>,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl ViewerBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner: Some(inner),
            deadline: Instant::now() + timeout,
            timer: None,
        }
    }

    /// The body of a request that has none.
    fn empty(timeout: Duration) -> Self {
        Self {
            inner: None,
            deadline: Instant::now() + timeout,
            timer: None,
        }
    }
}

impl HttpBody for ViewerBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        let inner = self.inner.as_mut().expect("checked above");
        Pin::new(inner)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as Self::Error)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// Requests of one connection being answered (from the request until its response body is
/// sent or dropped), and when that number last changed: what its idle deadline is measured
/// from.
#[derive(Debug)]
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    changed_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            changed_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.changed_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// When the connection falls idle if nothing happens until then.
    fn idle_at(&self, idle: Duration) -> Instant {
        self.born + Duration::from_millis(self.changed_ms.load(Ordering::Relaxed)) + idle
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_at(idle)
    }
}

/// One request in flight on its connection, until dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client address as connections are counted: an IPv6 client is its /64 (one household or
/// phone, however many addresses it takes), an IPv4-mapped one its IPv4 address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Connections open per client address; an entry lives while its client has one open, so the
/// table is bounded by the connection limit.
#[derive(Debug)]
struct PerClient {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerClient {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: Arc::clone(self),
            key,
        })
    }
}

/// One connection of a client, counted until dropped.
#[derive(Debug)]
struct ClientSlot {
    table: Arc<PerClient>,
    key: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// An open viewer connection: counted while it lives, its permits held; released however the
/// connection's task ends (also by a panic).
struct OpenConnection {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
    _client: ClientSlot,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, permit: OwnedSemaphorePermit, client: ClientSlot) -> Self {
        metrics.connection_opened();
        Self {
            metrics,
            _permit: permit,
            _client: client,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// The protocol a new connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Reads a new connection's first bytes until they tell HTTP/2's preface from anything else
/// (HTTP/1.1); returns them, to be read again by the protocol.
async fn detect(stream: &mut TcpStream) -> io::Result<(Protocol, Vec<u8>)> {
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let mut chunk = [0u8; H2_PREFACE.len()];
    loop {
        let want = H2_PREFACE.len() - seen.len();
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&chunk[..n]);
        if !H2_PREFACE.starts_with(&seen) {
            return Ok((Protocol::Http1, seen));
        }
        if seen.len() == H2_PREFACE.len() {
            return Ok((Protocol::Http2, seen));
        }
    }
}

/// A stream whose first bytes were already read: they are read again, then the stream.
#[derive(Debug)]
struct Rewound {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Rewound {
    fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Awaits a handler's answer, turning a panic into a logged `500`.
async fn guarded(answer: impl Future<Output = Response<Body>>) -> Response<Body> {
    match AssertUnwindSafe(answer).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!(panic = %what, "request handler panicked; answered 500");
            error(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (logged at the node)",
            )
        }
    }
}

/// What watches one connection besides the protocol: its activity, the idle limit, the
/// node's shutdown.
struct Watch<'a> {
    activity: Arc<Activity>,
    idle: Duration,
    metrics: &'a Metrics,
    shutdown: watch::Receiver<bool>,
    remote: SocketAddr,
}

impl Watch<'_> {
    /// Runs the connection until it ends; closes it gracefully (in-flight requests finish)
    /// when it has been idle for `idle` or the node shuts down.
    async fn drive<C>(mut self, conn: C)
    where
        C: GracefulConnection,
        C::Error: std::fmt::Display,
    {
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        loop {
            let idle_at = self.activity.idle_at(self.idle);
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(err) = ended {
                        tracing::debug!(remote = %self.remote, error = %err,
                            "viewer connection ended with an error");
                    }
                    return;
                }
                _ = self.shutdown.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(idle_at), if !closing => {
                    if self.activity.is_idle(self.idle) {
                        self.metrics.record_http_closed("idle");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// How a listener's connections begin.
#[derive(Debug, Clone)]
pub enum Security {
    /// Plain TCP: HTTP/1.1, or HTTP/2 with prior knowledge, told apart by the first bytes.
    Plain,
    /// TLS with the viewer plane's certificate: HTTP/2 or HTTP/1.1 as ALPN chose. Requests
    /// carry [`OverTls`] in their extensions.
    Tls(Arc<ViewerTls>),
}

/// Marks a request that came over TLS (in its extensions).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Serves HTTP/1.1 and HTTP/2 on `listener`, plain or over TLS as `security` says, until
/// `shutdown` turns true, with the viewer plane's `limits`: at most `max_connections` at a time
/// (further clients wait in the kernel's accept queue), at most `max_connections_per_client`
/// from one address (further ones are closed at once). The two listeners of a node share
/// neither count: each has its own.
pub async fn serve_tcp<F, Fut>(
    listener: TcpListener,
    security: Security,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Request<ViewerBody>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient {
        max: limits.max_connections_per_client,
        open: Mutex::new(HashMap::new()),
    });
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(limits.keepalive_interval)
        .with_interval(limits.keepalive_interval);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(client) = per_client.enter(remote.ip()) else {
            metrics.record_http_closed("per_client");
            tracing::debug!(%remote, "connection refused: the client's connection limit is reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let open = OpenConnection::new(Arc::clone(&metrics), permit, client);
        let (handler, limits, metrics, shutdown, security) = (
            handler.clone(),
            Arc::clone(&limits),
            Arc::clone(&metrics),
            shutdown.clone(),
            security.clone(),
        );
        tokio::spawn(async move {
            let _open = open;
            let conn = Conn {
                remote,
                limits: &limits,
                metrics: &metrics,
                shutdown,
            };
            match security {
                Security::Plain => conn.serve_plain(stream, handler).await,
                Security::Tls(tls) => conn.serve_tls(stream, &tls, handler).await,
            }
        });
    }
    drop(listener);
    // Every connection task holds a permit until it ends: all of them back means all ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("viewer connections still open after the drain timeout; closing");
    }
}

/// One viewer connection and what it is served under.
struct Conn<'a> {
    remote: SocketAddr,
    limits: &'a HttpLimits,
    metrics: &'a Metrics,
    shutdown: watch::Receiver<bool>,
}

impl Conn<'_> {
    /// Plain TCP: the protocol is read from the first bytes under the header deadline.
    async fn serve_plain<F, Fut>(self, mut stream: TcpStream, handler: F)
    where
        F: Fn(Request<ViewerBody>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let detected =
            tokio::time::timeout(self.limits.header_read_timeout, detect(&mut stream)).await;
        let (protocol, prefix) = match detected {
            Ok(Ok(detected)) => detected,
            Ok(Err(_)) => return,
            Err(_) => {
                self.metrics.record_http_closed("first_bytes_timeout");
                return;
            }
        };
        match protocol {
            // Our own loop, which can send files (and hands hyper what it does not take).
            Protocol::Http1 => h1::serve(self, stream, prefix, handler).await,
            Protocol::Http2 => {
                let io = TokioIo::new(Rewound::new(prefix, stream));
                self.serve(io, protocol, false, handler).await;
            }
        }
    }

    /// TLS: the handshake must end within the header deadline; the protocol is ALPN's.
    async fn serve_tls<F, Fut>(self, stream: TcpStream, tls: &ViewerTls, handler: F)
    where
        F: Fn(Request<ViewerBody>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let accepted = tokio::time::timeout(
            self.limits.header_read_timeout,
            tls.acceptor().accept(stream),
        )
        .await;
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                self.metrics.record_http_closed("tls_handshake");
                tracing::debug!(remote = %self.remote, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.record_http_closed("first_bytes_timeout");
                return;
            }
        };
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        self.serve(TokioIo::new(stream), protocol, true, handler)
            .await;
    }

    /// Serves `io` in `protocol` until it ends, is idle too long, or the node shuts down.
    async fn serve<I, F, Fut>(self, io: I, protocol: Protocol, over_tls: bool, handler: F)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        F: Fn(Request<ViewerBody>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let Conn {
            remote,
            limits,
            metrics,
            shutdown,
        } = self;
        let activity = Activity::new();
        let body_timeout = limits.body_read_timeout;
        let service = {
            let activity = Arc::clone(&activity);
            service_fn(move |req: Request<Incoming>| {
                let in_flight = activity.begin();
                let mut req = req.map(|body| ViewerBody::new(body, body_timeout));
                if over_tls {
                    req.extensions_mut().insert(OverTls);
                }
                let answer = guarded(handler(req, remote));
                async move {
                    let mut resp = answer.await;
                    if resp.extensions_mut().remove::<FileBody>().is_some() {
                        // Only requests marked `SendsFiles` (h1's) may be answered with a file.
                        tracing::error!("a file body reached hyper; answered 500");
                        resp = error(
                            http::StatusCode::INTERNAL_SERVER_ERROR,
                            "internal error (logged at the node)",
                        );
                    }
                    let resp = resp.map(|inner| TrackedBody {
                        inner,
                        _in_flight: in_flight,
                    });
                    Ok::<_, std::convert::Infallible>(resp)
                }
            })
        };
        let watch = Watch {
            activity,
            idle: limits.idle_timeout,
            metrics,
            shutdown,
            remote,
        };
        match protocol {
            Protocol::Http1 => {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .keep_alive(true)
                    .serve_connection(io, service);
                watch.drive(conn).await;
            }
            Protocol::Http2 => {
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(MAX_H2_STREAMS)
                    .keep_alive_interval(Some(limits.keepalive_interval))
                    .keep_alive_timeout(limits.keepalive_interval)
                    .serve_connection(io, service);
                watch.drive(conn).await;
            }
        }
    }
}

/// Serves the admin API on a unix socket until `shutdown` turns true.
pub async fn serve_unix<F, Fut>(
    listener: UnixListener,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = admin_builder();
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let answer = guarded(handler(req));
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(20),
            max_connections_per_client: 16,
            admin_token: None,
            tls: None,
        }
    }

    /// A server with `limits` whose handler answers `/body` with the length of the request
    /// body it read (or `408` when it did not arrive), anything else with `ok`.
    async fn start(
        limits: HttpLimits,
    ) -> (
        SocketAddr,
        Arc<Metrics>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = watch::channel(false);
        let handler = |req: Request<ViewerBody>, _remote| async move {
            if req.uri().path() == "/body" {
                return match crate::http::read_limited(req.into_body(), 1 << 20).await {
                    Ok(body) => crate::http::full(
                        http::StatusCode::OK,
                        "text/plain",
                        Bytes::from(body.len().to_string()),
                        "no-store",
                    ),
                    Err(e) => error(http::StatusCode::REQUEST_TIMEOUT, &e),
                };
            }
            crate::http::full(
                http::StatusCode::OK,
                "text/plain",
                Bytes::from_static(b"ok"),
                "no-store",
            )
        };
        let server = tokio::spawn(serve_tcp(
            listener,
            Security::Plain,
            limits,
            Arc::clone(&metrics),
            stopped,
            handler,
        ));
        (addr, metrics, stop, server)
    }

    /// Whether the server closed `s` (a read ends) within `within`.
    fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_and_half_preface_connections_are_closed_at_the_header_deadline() {
        let (addr, metrics, stop, server) = start(HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            ..limits()
        })
        .await;
        let results = tokio::task::spawn_blocking(move || {
            let mut silent = std::net::TcpStream::connect(addr).unwrap();
            let mut half = std::net::TcpStream::connect(addr).unwrap();
            half.write_all(&H2_PREFACE[..10]).unwrap();
            // Meanwhile others are served.
            let (status, body) = get(addr, "/");
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            assert_eq!(body, "ok");
            (
                closed_within(&mut silent, Duration::from_secs(3)),
                closed_within(&mut half, Duration::from_secs(3)),
            )
        })
        .await
        .unwrap();
        assert_eq!(results, (true, true), "both closed");
        assert_eq!(metrics.http_closed("first_bytes_timeout"), 2);
        let _ = stop.send(true);
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_over_its_connection_limit_is_closed_at_once_and_others_are_served() {
        let (addr, metrics, stop, server) = start(HttpLimits {
            max_connections_per_client: 2,
            ..limits()
        })
        .await;
        tokio::task::spawn_blocking(move || {
            let held: Vec<_> = (0..2)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            std::thread::sleep(Duration::from_millis(200));
            let mut third = std::net::TcpStream::connect(addr).unwrap();
            assert!(closed_within(&mut third, Duration::from_secs(2)));
            drop(held);
            std::thread::sleep(Duration::from_millis(200));
            let (status, _) = get(addr, "/");
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        })
        .await
        .unwrap();
        assert_eq!(metrics.http_closed("per_client"), 1);
        let _ = stop.send(true);
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_keep_alive_connection_is_closed_and_a_stalled_body_times_out() {
        let (addr, metrics, stop, server) = start(HttpLimits {
            idle_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            ..limits()
        })
        .await;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut answer = [0u8; 512];
            let n = s.read(&mut answer).unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
            assert!(
                closed_within(&mut s, Duration::from_secs(3)),
                "idle: closed"
            );

            // Ten bytes announced, two sent: the handler's read fails at the body deadline.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let n = s.read(&mut answer).unwrap();
            let head = String::from_utf8_lossy(&answer[..n]);
            assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        })
        .await
        .unwrap();
        assert!(metrics.http_closed("idle") >= 1);
        let _ = stop.send(true);
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http2_with_prior_knowledge_is_served() {
        let (addr, _metrics, stop, server) = start(limits()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = Request::builder()
                .uri(format!("http://{addr}/"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), http::StatusCode::OK);
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(body.as_ref(), b"ok");
        }
        let _ = stop.send(true);
        server.await.unwrap();
    }

    /// One HTTP/1.1 request on a fresh connection; the status line and body.
    fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        let status = answer.lines().next().unwrap_or_default().to_owned();
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_panics_holding_a_lock_answers_500_and_the_next_request_is_served(
    ) -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = watch::channel(false);
        // Shared state a request locks, as the membership table or the catalog are.
        let served = Arc::new(Mutex::new(0u32));
        let handler = {
            let served = Arc::clone(&served);
            move |req: Request<ViewerBody>, _remote| {
                let served = Arc::clone(&served);
                async move {
                    let mut count = served.lock();
                    *count += 1;
                    if req.uri().path() == "/panic" {
                        panic!("a bug met while holding the lock");
                    }
                    let body = Bytes::from(count.to_string());
                    crate::http::full(http::StatusCode::OK, "text/plain", body, "no-store")
                }
            }
        };
        let server = tokio::spawn(serve_tcp(
            listener,
            Security::Plain,
            limits(),
            Arc::clone(&metrics),
            stopped,
            handler,
        ));
        let (status, _) = tokio::task::spawn_blocking(move || get(addr, "/panic")).await?;
        assert!(status.starts_with("HTTP/1.1 500"), "{status}");
        let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/ok")).await?;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(
            body, "2",
            "the lock the panic held is usable, with its count"
        );
        // Both connections are closed and no longer counted.
        for _ in 0..100 {
            if metrics.connections_open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.connections_open(), 0);
        let _ = stop.send(true);
        server.await?;
        Ok(())
    }
}
