//! The viewer plane's own HTTP/1.1 loop for plain TCP: what lets a segment body go from a
//! verified blob file to the socket with `sendfile`, copied by no one (hyper owns its socket
//! and writes only buffers).
//!
//! It answers the requests players make — `GET`, `HEAD` and `OPTIONS` over HTTP/1.1 without a
//! body — keep-alive and pipelined, under the same deadlines as hyper's connections (the head
//! within [`HttpLimits::header_read_timeout`] of its first byte, the next request within
//! [`HttpLimits::idle_timeout`]) and one more hyper lacks: a response the client stops reading
//! for `idle_timeout` closes the connection (one read slowly but steadily is not cut, as with
//! hyper). The first request it does not take (a body, an
//! `Upgrade`, `Expect`, HTTP/1.0) hands the connection, with every byte read and not yet
//! answered, to hyper for the rest of its life, so nothing is parsed here that hyper does better.
//!
//! Requests it takes carry [`SendsFiles`]; a response with a [`FileBody`] has its head sent with
//! `MSG_MORE` (one segment with the body's first bytes) and its body by `sendfile`.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::{guarded, Conn, Protocol, Rewound, ViewerBody};
use crate::http::{Body, FileBody, SendsFiles};
use hyper_util::rt::TokioIo;

/// Largest request head taken (request line and headers); longer ones are answered `431`.
/// Players send a few hundred bytes; hyper's default buffer is larger, but a `GET` needs no more.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields in a request (hyper's default too).
const MAX_HEADERS: usize = 100;

/// Most bytes one `sendfile` call is asked for (the kernel sends at most 2 GiB − 4 KiB anyway).
const SENDFILE_CHUNK: usize = 1 << 30;

/// What to do with a request head.
enum Take {
    /// Answer it here; the head is this many bytes long.
    Here {
        req: Box<Request<ViewerBody>>,
        head_len: usize,
        keep_alive: bool,
    },
    /// Hand the connection to hyper, from this request on.
    HandOff,
    /// Answer this error and close.
    Refuse(StatusCode, &'static str),
}

/// Serves a plain HTTP/1.1 connection whose first bytes (`prefix`) were already read.
pub(super) async fn serve<F, Fut>(
    conn: Conn<'_>,
    mut stream: TcpStream,
    prefix: Vec<u8>,
    handler: F,
) where
    F: Fn(Request<ViewerBody>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let mut buf = BytesMut::from(&prefix[..]);
    let mut shutdown = conn.shutdown.clone();
    let limits = conn.limits;
    loop {
        // The next request: within the idle deadline (unless bytes of it are here already),
        // then its whole head within the header deadline.
        if buf.is_empty() {
            tokio::select! {
                read = tokio::time::timeout(limits.idle_timeout, stream.read_buf(&mut buf)) => match read {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        conn.metrics.record_http_closed("idle");
                        return;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
        let head_deadline = tokio::time::Instant::now() + limits.header_read_timeout;
        // A head ends with an empty line: parse only when a line feed has come since the last
        // try, so a client trickling bytes costs a scan of each byte once, not once per byte.
        let mut scanned: usize = 0;
        let take = loop {
            let fresh = &buf[scanned.saturating_sub(3)..];
            scanned = buf.len();
            if fresh.contains(&b'\n') {
                if let Some(take) = judge(&buf, limits.body_read_timeout) {
                    break take;
                }
            }
            if buf.len() >= MAX_HEAD_BYTES {
                break Take::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head too large",
                );
            }
            match tokio::time::timeout_at(head_deadline, stream.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    conn.metrics.record_http_closed("header_timeout");
                    return;
                }
            }
        };
        let (req, head_len, keep_alive) = match take {
            Take::Here {
                req,
                head_len,
                keep_alive,
            } => (*req, head_len, keep_alive),
            Take::HandOff => {
                let io = TokioIo::new(Rewound::new(buf.to_vec(), stream));
                return conn.serve(io, Protocol::Http1, false, handler).await;
            }
            Take::Refuse(status, why) => {
                let resp = crate::http::error(status, why);
                let _ = write_response(&conn, &mut stream, resp, false, false).await;
                return;
            }
        };
        buf.advance(head_len);
        let is_head = req.method() == Method::HEAD;
        let resp = guarded(handler(req, conn.remote)).await;
        // A node shutting down finishes this answer and closes, as hyper's graceful shutdown.
        let keep_alive = keep_alive && !*shutdown.borrow();
        if let Err(err) = write_response(&conn, &mut stream, resp, is_head, keep_alive).await {
            tracing::debug!(remote = %conn.remote, error = %err, "viewer connection ended while answering");
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Whether a complete request head is in `buf`, and what to do with it (for a request
/// answered here, the request itself, with no body); `None` while it is not complete yet.
fn judge(buf: &[u8], body_timeout: Duration) -> Option<Take> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(Take::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(_) => {
            return Some(Take::Refuse(
                StatusCode::BAD_REQUEST,
                "malformed HTTP/1.1 request",
            ))
        }
    };
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Some(Take::HandOff),
    };
    if parsed.version != Some(1) {
        return Some(Take::HandOff);
    }
    let refuse = |why| Some(Take::Refuse(StatusCode::BAD_REQUEST, why));
    let mut keep_alive = true;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = h.name;
        let has_body = (name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || name.eq_ignore_ascii_case("transfer-encoding");
        if has_body || name.eq_ignore_ascii_case("expect") || name.eq_ignore_ascii_case("upgrade") {
            return Some(Take::HandOff);
        }
        if name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        }
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            return refuse("malformed header name");
        };
        let Ok(value) = HeaderValue::from_bytes(h.value) else {
            return refuse("malformed header value");
        };
        headers.append(name, value);
    }
    let Ok(uri) = parsed.path.unwrap_or_default().parse::<http::Uri>() else {
        return refuse("malformed request target");
    };
    let mut req = Request::new(ViewerBody::empty(body_timeout));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(SendsFiles);
    Some(Take::Here {
        req: Box::new(req),
        head_len,
        keep_alive,
    })
}

/// Writes `resp`: its head, then its body (none for `HEAD`, `204` and `304`) from memory or,
/// for a [`FileBody`], by `sendfile`. The `Content-Length` sent is the body's own, whatever
/// the handler wrote (a `HEAD` answer keeps the handler's: it names the body not sent).
async fn write_response(
    conn: &Conn<'_>,
    stream: &mut TcpStream,
    mut resp: Response<Body>,
    is_head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let file = resp.extensions_mut().remove::<FileBody>();
    let status = resp.status();
    let no_body_allowed = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let bytes = match file {
        Some(_) => Bytes::new(),
        None => match resp.body_mut().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        },
    };
    let length = if no_body_allowed {
        Length::None
    } else if is_head {
        Length::Handler
    } else {
        Length::Is(file.as_ref().map_or(bytes.len() as u64, |f| f.len))
    };
    let head = head(&resp, length, keep_alive);
    let stall = conn.limits.idle_timeout;
    match file {
        Some(file) if !is_head && !no_body_allowed && file.len > 0 => {
            send_all(stream, &head, true, stall, conn).await?;
            send_file(stream, &file, stall, conn).await?;
            conn.metrics.record_file_body(file.len);
            Ok(())
        }
        _ if is_head || no_body_allowed || bytes.is_empty() => {
            send_all(stream, &head, false, stall, conn).await
        }
        _ => {
            send_all(stream, &head, true, stall, conn).await?;
            send_all(stream, &bytes, false, stall, conn).await
        }
    }
}

/// What a response head says of its body's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// `Content-Length` of this many bytes.
    Is(u64),
    /// The handler's `Content-Length`, if any (a `HEAD` answer).
    Handler,
    /// No `Content-Length` (`1xx`, `204`, `304`).
    None,
}

/// The status line and header fields of `resp`, with `Content-Length` as `length` says,
/// `Date` and, when the connection ends after it, `Connection: close`.
fn head(resp: &Response<Body>, length: Length, keep_alive: bool) -> Vec<u8> {
    let status = resp.status();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        let ours = name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && length != Length::Handler);
        if ours {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Length::Is(len) = length {
        out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    if !resp.headers().contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Waits until the socket takes bytes again, at most `stall`.
async fn writable(stream: &TcpStream, stall: Duration, conn: &Conn<'_>) -> io::Result<()> {
    match tokio::time::timeout(stall, stream.writable()).await {
        Ok(ready) => ready,
        Err(_) => {
            conn.metrics.record_http_closed("send_stalled");
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))
        }
    }
}

/// Sends all of `bytes`; with `more`, the kernel holds a short last packet for what follows
/// (`MSG_MORE`), so a head and its body's first bytes leave together.
async fn send_all(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    more: bool,
    stall: Duration,
    conn: &Conn<'_>,
) -> io::Result<()> {
    let flags = if more {
        rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL
    } else {
        rustix::net::SendFlags::NOSIGNAL
    };
    while !bytes.is_empty() {
        let sent =
            when_writable(stream, stall, conn, |s| rustix::net::send(s, bytes, flags)).await?;
        bytes = &bytes[sent..];
    }
    Ok(())
}

/// Runs a non-blocking write `op` on the socket once it takes bytes (waiting at most `stall`
/// each time it does not), until `op` does not answer `EAGAIN`: how many bytes it wrote.
async fn when_writable(
    stream: &TcpStream,
    stall: Duration,
    conn: &Conn<'_>,
    mut op: impl FnMut(&TcpStream) -> rustix::io::Result<usize>,
) -> io::Result<usize> {
    loop {
        writable(stream, stall, conn).await?;
        match stream.try_io(Interest::WRITABLE, || op(stream).map_err(io::Error::from)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            written => return written,
        }
    }
}

/// How much of a file body's end is read into memory and sent after a last look at the
/// file: one page.
const TAIL_BYTES: u64 = 4096;

/// Sends `body` from its file: all but its last page with `sendfile` (the kernel hands the
/// page cache's pages to the socket), then the last page read into memory, after the file's
/// stamp was checked once more. A file written since it was verified changes its stamp, so the
/// response is cut short of its announced length and the client sees it fail rather than end
/// with bytes that were not verified; a file cut shorter ends the connection the same way.
async fn send_file(
    stream: &mut TcpStream,
    body: &FileBody,
    stall: Duration,
    conn: &Conn<'_>,
) -> io::Result<()> {
    let end = body.offset + body.len;
    let tail_at = end - body.len.min(TAIL_BYTES);
    let mut offset = body.offset;
    while offset < tail_at {
        let want = usize::try_from(tail_at - offset)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        let sent = when_writable(stream, stall, conn, |s| {
            rustix::fs::sendfile(s, &*body.file, Some(&mut offset), want)
        })
        .await?;
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than when it was opened",
            ));
        }
    }
    let mut tail = vec![0u8; usize::try_from(end - tail_at).expect("at most a page")];
    std::os::unix::fs::FileExt::read_exact_at(&*body.file, &mut tail, tail_at)?;
    let now = crate::core::store::FileStamp::of(&body.file.metadata()?);
    if now != body.stamp {
        tracing::error!(remote = %conn.remote, "a blob file changed while it was sent; the response is cut short and the file will be hashed again");
        return Err(io::Error::other("the blob file changed while it was sent"));
    }
    send_all(stream, &tail, false, stall, conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(raw: &[u8]) -> Option<Take> {
        judge(raw, Duration::from_secs(1))
    }

    #[test]
    fn requests_with_bodies_or_other_versions_go_to_hyper_and_players_requests_stay() {
        let here = |raw: &[u8]| matches!(judged(raw), Some(Take::Here { .. }));
        let handed = |raw: &[u8]| matches!(judged(raw), Some(Take::HandOff));
        assert!(here(
            b"GET /v1/content/a/seg/0.m4s HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(here(b"HEAD / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        assert!(here(b"OPTIONS / HTTP/1.1\r\nOrigin: https://a\r\n\r\n"));
        assert!(handed(
            b"POST /v1/emergency HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        ));
        assert!(handed(
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(handed(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"));
        assert!(handed(
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"
        ));
        assert!(handed(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(handed(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        ));
        assert!(handed(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
        assert!(
            judged(b"GET / HTTP/1.1\r\nHost: x\r\n").is_none(),
            "incomplete"
        );
        let Some(Take::Here {
            req,
            head_len,
            keep_alive,
        }) = judged(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\nGET")
        else {
            panic!("taken here");
        };
        assert!(!keep_alive);
        assert_eq!(
            head_len, 63,
            "the next request's bytes are not part of this head"
        );
        assert_eq!(req.uri().path(), "/a");
        assert_eq!(req.uri().query(), Some("b=1"));
        assert_eq!(req.headers()["host"], "x");
        assert!(req.extensions().get::<SendsFiles>().is_some());
        assert!(matches!(
            judged(b"G\x01T / HTTP/1.1\r\n\r\n"),
            Some(Take::Refuse(StatusCode::BAD_REQUEST, _))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(matches!(
            judged(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Some(Take::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, _))
        ));
    }

    #[test]
    fn a_head_names_the_bodys_own_length_date_and_close_and_a_304_has_no_length() {
        let mut resp = crate::http::full(
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"hello"),
            "no-store",
        );
        // A handler's wrong length is not repeated: the body's own is sent.
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(99));
        let text = String::from_utf8(head(&resp, Length::Is(5), false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(!text.contains("99"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        // HEAD: the handler's length names the body not sent.
        let text = String::from_utf8(head(&resp, Length::Handler, true)).unwrap();
        assert!(text.contains("content-length: 99\r\n"), "{text}");

        let mut resp = Response::new(Body::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        let text = String::from_utf8(head(&resp, Length::None, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
        assert!(!text.contains("connection"), "{text}");
    }
}
