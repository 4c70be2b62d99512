//! Accept loops for the viewer plane (TCP) and the admin plane (unix socket), with bounded
//! connections, header timeouts and graceful shutdown.
//!
//! A handler that panics answers `500` and the node goes on: the panic is caught per request,
//! logged, and shared state stays usable (its locks are `parking_lot`'s, which do not poison).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::core::metrics::Metrics;
use crate::http::{error, Body};

/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    builder
}

/// An open viewer connection: counted while it lives, its permit held; released however the
/// connection's task ends (also by a panic).
struct OpenConnection {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, permit: OwnedSemaphorePermit) -> Self {
        metrics.connection_opened();
        Self {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connection_closed();
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

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on `listener` until `shutdown` turns true, at
/// most `max_connections` at a time (further clients wait in the kernel's accept queue).
pub async fn serve_tcp<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    header_read_timeout: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Request<Incoming>, std::net::SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = builder(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
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
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let answer = guarded(handler(req, remote));
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let open = OpenConnection::new(Arc::clone(&metrics), permit);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%remote, error = %err, "viewer connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("viewer connections still open after the drain timeout; closing");
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
    let builder = builder(Duration::from_secs(30));
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

    use bytes::Bytes;
    use parking_lot::Mutex;

    use super::*;

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
            move |req: Request<Incoming>, _remote| {
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
            16,
            Duration::from_secs(5),
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
