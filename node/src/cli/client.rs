//! Talking to a running daemon: its admin socket (JSON, or the raw answers of plugin routes)
//! and, for signed operator commands, any node's viewer plane.

use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Sends one request to the daemon's admin socket and returns the JSON answer.
///
/// # Errors
/// The daemon is not running (no socket), or it answered with an error (its message is returned).
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let body = match body {
        Some(v) => serde_json::to_vec(&v)?,
        None => Vec::new(),
    };
    let (status, bytes) = call_raw(socket, method.as_str(), path, "application/json", body).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "admin answer is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    if !status.is_success() {
        let msg = value["error"].as_str().unwrap_or("unknown error");
        bail!("{msg}");
    }
    Ok(value)
}

/// Sends one request to the daemon's admin socket and returns the status and body as they are
/// (plugin routes answer JSON, CSV or export files).
///
/// # Errors
/// The daemon is not running (no socket), or the exchange failed.
pub async fn call_raw(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "connecting to the admin socket {} (is mhc-node running with this data_dir?)",
                socket.display()
            )
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("admin socket handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method.to_ascii_uppercase().as_str())
        .uri(path)
        .header(http::header::HOST, "mhc-admin")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await.context("admin request")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// One HTTP/1.1 request to a node's viewer plane (`http://host:port`), JSON answer.
pub async fn http_json(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> anyhow::Result<serde_json::Value> {
    use http_body_util::{BodyExt, Full};
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("{base}: expected http://host:port"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(body.unwrap_or_default()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("answer is not JSON: {}", String::from_utf8_lossy(&bytes)))?;
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {}",
            value["error"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(value)
}

/// One raw request on the admin socket (plugin routes answer JSON, CSV or files).
pub async fn plugin_call(
    socket: &Path,
    method: &str,
    target: &str,
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, Vec<u8>)> {
    let (status, bytes) =
        call_raw(socket, method, target, "application/octet-stream", body).await?;
    Ok((status, bytes.to_vec()))
}
