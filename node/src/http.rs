//! HTTP helpers the viewer plane and the admin plane share: the response body type, JSON and
//! text answers, errors, and bounded request bodies.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use mhc_transport::headers::CACHE_NONE;
use serde_json::json;

/// Response body of the viewer and admin planes: bytes in memory, or (for a connection whose
/// writer can send files, see [`SendsFiles`]) empty with a [`FileBody`] in the response's
/// extensions.
pub type Body = Full<Bytes>;

/// Marks a request (in its extensions) whose connection's writer sends a [`FileBody`] with
/// `sendfile`: plain HTTP/1.1, where hyper does not own the socket. Handlers answer other
/// requests with bytes.
#[derive(Debug, Clone, Copy)]
pub struct SendsFiles;

/// A response body that is part of a file, sent by the kernel from the page cache to the
/// socket (in the response's extensions; the `Body` itself is empty). Only for requests
/// marked [`SendsFiles`]; `Content-Length` is `len`.
#[derive(Debug, Clone)]
pub struct FileBody {
    /// The file (shared only because extensions must be `Clone`).
    pub file: std::sync::Arc<std::fs::File>,
    /// Where the body starts in the file.
    pub offset: u64,
    /// How many bytes it has.
    pub len: u64,
    /// The file's stamp when it was opened (which matched its verified one): the writer
    /// checks it again before the last bytes leave.
    pub stamp: crate::core::store::FileStamp,
}

/// A response whose body is `body`, part of a file, for a request marked [`SendsFiles`].
pub fn file_response(
    status: StatusCode,
    content_type: &'static str,
    body: FileBody,
    cache: &'static str,
) -> Response<Body> {
    let len = body.len;
    let mut resp = full(status, content_type, Bytes::new(), cache);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp.extensions_mut().insert(body);
    resp
}

/// A response with a body, its type, length and `Cache-Control`.
pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    cache: &'static str,
) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str, cache: &'static str) -> Response<Body> {
    full(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
        cache,
    )
}

/// A JSON response, pretty-printed (people read these), ending in a newline.
pub fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
    cache: &'static str,
) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    body.push(b'\n');
    full(status, "application/json", Bytes::from(body), cache)
}

/// An error answer: JSON `{"error": "...", "status": N}`, never cached.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error": message, "status": status.as_u16() }),
        CACHE_NONE,
    )
}

/// An error answer not rendered yet: its status and message (small enough to return in a
/// `Result`, unlike a whole response).
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub String);

impl Refused {
    /// The answer: [`error`] with this status and message.
    pub fn into_response(self) -> Response<Body> {
        error(self.0, &self.1)
    }
}

/// The `Content-Length` a response announces (0 when it announces none).
pub fn content_length(resp: &Response<Body>) -> u64 {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads a request body of at most `limit` bytes.
///
/// # Errors
/// The body is longer, or reading it failed (the message says which).
///
/// # Cancel safety
/// Not cancel-safe: what was read is lost.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::{BodyExt, Limited};
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

/// Reads a request body: into memory while it is at most `in_memory` bytes, else into a
/// temporary file in `spool_dir` (removed when the returned path is dropped), refusing more
/// than `max` bytes in all.
///
/// # Errors
/// The body is larger than `max`, the connection failed, or the file cannot be written.
pub async fn read_or_spool<B>(
    body: B,
    in_memory: usize,
    max: u64,
    spool_dir: &std::path::Path,
) -> Result<(Vec<u8>, Option<tempfile::TempPath>), String>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let mut body = std::pin::pin!(body);
    let mut memory: Vec<u8> = Vec::new();
    let mut spool: Option<(tokio::fs::File, tempfile::TempPath)> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.into().to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > max {
            return Err(format!("larger than {max} bytes"));
        }
        if spool.is_none() && memory.len() + data.len() > in_memory {
            let file = tempfile::Builder::new()
                .prefix(".spool-")
                .tempfile_in(spool_dir)
                .map_err(|e| format!("spooling to {}: {e}", spool_dir.display()))?;
            let (file, path) = file.into_parts();
            let mut file = tokio::fs::File::from_std(file);
            file.write_all(&memory).await.map_err(|e| e.to_string())?;
            memory = Vec::new();
            spool = Some((file, path));
        }
        match &mut spool {
            Some((file, _)) => file.write_all(&data).await.map_err(|e| e.to_string())?,
            None => memory.extend_from_slice(&data),
        }
    }
    match spool {
        Some((mut file, path)) => {
            file.flush().await.map_err(|e| e.to_string())?;
            Ok((Vec::new(), Some(path)))
        }
        None => Ok((memory, None)),
    }
}

/// A plugin's admin answer as an HTTP response.
pub fn plugin_response(a: mhc_origin::plugin::AdminResponse) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(a.body)));
    *resp.status_mut() =
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = HeaderValue::from_str(&a.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}
