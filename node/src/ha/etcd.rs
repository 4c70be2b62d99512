//! The part of etcd's v3 API the election needs — leases, one transaction, a watch — spoken
//! through etcd's JSON gateway (`POST /v3/...` on the client URL, served by every etcd since
//! 3.3 and on by default), with the hyper client the node already has.
//!
//! Why not the `etcd-client` crate: its build compiles etcd's `.proto` files with `protoc`,
//! which a fresh machine does not have (the README's `cargo run ... demo` would stop there),
//! and it brings tonic and its router into a tree that is already large for two cores. The
//! gateway is the same server-side API (each call is one gRPC call inside etcd); int64 fields
//! travel as JSON strings and bytes as base64, as protobuf's JSON mapping says.
//!
//! etcd is the operators' own infrastructure, yet what it answers is still bounded: an answer
//! larger than [`MAX_ANSWER`] closes the call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

/// Largest answer (or watch message) read from etcd.
pub const MAX_ANSWER: usize = 1 << 20;

/// A client of one etcd cluster, by its client URLs.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    /// The endpoint that answered last: calls start there (a host that drops traffic costs
    /// one timeout, not one per call).
    preferred: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Endpoint {
    /// `host:port`.
    authority: String,
}

/// A key and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The value.
    pub value: Vec<u8>,
    /// The revision at which the key was created.
    pub create_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// The answer to a create-if-absent transaction.
#[derive(Debug, Clone)]
pub struct CreateAnswer {
    /// Whether the key was created.
    pub created: bool,
    /// The store's revision after the transaction (the key's create revision if created).
    pub revision: i64,
    /// The key's holder when it was not created (`None`: deleted in between).
    pub holder: Option<KeyValue>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key was written; its create revision.
    Put {
        /// The create revision of the key written.
        create_revision: i64,
    },
    /// The key was deleted (or its lease expired or was revoked).
    Delete,
}

/// The stream of changes of one watched key.
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
}

impl Etcd {
    /// A client for the cluster at `urls` (`http://host:port`, checked by the config); every
    /// call gives up after `timeout`.
    ///
    /// # Errors
    /// A URL has no `host:port`.
    pub fn new(urls: &[String], timeout: Duration) -> anyhow::Result<Self> {
        let endpoints = urls
            .iter()
            .map(|u| {
                let authority = u
                    .strip_prefix("http://")
                    .map(|a| a.trim_end_matches('/'))
                    .filter(|a| a.contains(':') && !a.contains('/'))
                    .ok_or_else(|| anyhow!("{u:?} is not an etcd client URL"))?;
                Ok(Endpoint {
                    authority: authority.to_owned(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            bail!("no etcd endpoint");
        }
        Ok(Etcd {
            endpoints,
            timeout,
            preferred: AtomicUsize::new(0),
        })
    }

    /// Grants a lease of `ttl`; its id and the TTL granted.
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses.
    pub async fn lease_grant(&self, ttl: Duration) -> anyhow::Result<(i64, Duration)> {
        let a = self
            .call(
                "/v3/lease/grant",
                &json!({ "TTL": ttl.as_secs().to_string() }),
            )
            .await?;
        let id = int(&a["ID"]);
        if id == 0 {
            bail!("etcd granted no lease: {a}");
        }
        Ok((id, secs(&a["TTL"])))
    }

    /// Renews lease `id` once; the TTL it has now (zero: the lease is gone).
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses.
    pub async fn lease_keep_alive(&self, id: i64) -> anyhow::Result<Duration> {
        let a = self
            .call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))
            .await?;
        // The gateway wraps a streaming call's messages in `result`.
        Ok(secs(&a["result"]["TTL"]))
    }

    /// Revokes lease `id`, deleting the keys attached to it. A lease that is gone already is
    /// not an error.
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses for another reason.
    pub async fn lease_revoke(&self, id: i64) -> anyhow::Result<()> {
        match self
            .call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .await
        {
            Err(err) if format!("{err}").contains("lease not found") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Creates `key` holding `value`, attached to `lease`, if and only if it does not exist;
    /// otherwise reads it — in one transaction.
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses.
    pub async fn create_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> anyhow::Result<CreateAnswer> {
        let key = B64.encode(key);
        let a = self
            .call(
                "/v3/kv/txn",
                &json!({
                    "compare": [{ "target": "CREATE", "key": key, "create_revision": "0" }],
                    "success": [{ "request_put": {
                        "key": key, "value": B64.encode(value), "lease": lease.to_string() } }],
                    "failure": [{ "request_range": { "key": key } }],
                }),
            )
            .await?;
        let revision = int(&a["header"]["revision"]);
        if revision == 0 {
            bail!("etcd answered without a revision: {a}");
        }
        let created = a["succeeded"].as_bool().unwrap_or(false);
        let holder = if created {
            None
        } else {
            a["responses"][0]["response_range"]["kvs"]
                .get(0)
                .map(key_value)
                .transpose()?
        };
        Ok(CreateAnswer {
            created,
            revision,
            holder,
        })
    }

    /// Deletes `key` if its create revision is `create_revision` (so only that holder's key).
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses.
    pub async fn delete_if_created_at(
        &self,
        key: &[u8],
        create_revision: i64,
    ) -> anyhow::Result<bool> {
        let key = B64.encode(key);
        let a = self
            .call(
                "/v3/kv/txn",
                &json!({
                    "compare": [{ "target": "CREATE", "key": key,
                                  "create_revision": create_revision.to_string() }],
                    "success": [{ "request_delete_range": { "key": key } }],
                }),
            )
            .await?;
        Ok(a["succeeded"].as_bool().unwrap_or(false))
    }

    /// Whether `key` still exists as created at `create_revision` and attached to `lease`:
    /// the holder's check that the key it renews the lease of is still its own.
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses.
    pub async fn key_held(
        &self,
        key: &[u8],
        create_revision: i64,
        lease: i64,
    ) -> anyhow::Result<bool> {
        let key = B64.encode(key);
        let a = self
            .call(
                "/v3/kv/txn",
                &json!({ "compare": [
                    { "target": "CREATE", "key": key,
                      "create_revision": create_revision.to_string() },
                    { "target": "LEASE", "key": key, "lease": lease.to_string() },
                ] }),
            )
            .await?;
        Ok(a["succeeded"].as_bool().unwrap_or(false))
    }

    /// The time lease `id` has left; `None` once it is gone (expired or revoked).
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses.
    pub async fn lease_time_to_live(&self, id: i64) -> anyhow::Result<Option<Duration>> {
        let a = self
            .call("/v3/lease/timetolive", &json!({ "ID": id.to_string() }))
            .await?;
        let ttl = int(&a["TTL"]);
        Ok((ttl > 0).then(|| Duration::from_secs(u64::try_from(ttl).unwrap_or(0))))
    }

    /// Watches `key` from `start_revision` on.
    ///
    /// # Errors
    /// No endpoint answers, or etcd refuses the watch.
    pub async fn watch(&self, key: &[u8], start_revision: i64) -> anyhow::Result<Watch> {
        let body = json!({ "create_request": {
            "key": B64.encode(key), "start_revision": start_revision.to_string() } });
        let mut last = None;
        for (_, e) in self.in_order() {
            match tokio::time::timeout(self.timeout, e.post("/v3/watch", &body)).await {
                Ok(Ok(incoming)) => {
                    let mut w = Watch {
                        body: incoming,
                        buf: BytesMut::new(),
                        scanned: 0,
                    };
                    // The first message confirms the watch (or says why not).
                    let first = tokio::time::timeout(self.timeout, w.message())
                        .await
                        .map_err(|_| anyhow!("etcd did not confirm the watch"))??;
                    match first {
                        Some(m) if m["result"]["created"].as_bool() == Some(true) => return Ok(w),
                        other => bail!("etcd refused the watch: {other:?}"),
                    }
                }
                Ok(Err(err)) => last = Some(err),
                Err(_) => {
                    last = Some(anyhow!(
                        "{}: no answer within {:?}",
                        e.authority,
                        self.timeout
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no etcd endpoint")))
    }

    /// The endpoints in the order to try them: the one that answered last first.
    fn in_order(&self) -> impl Iterator<Item = (usize, &Endpoint)> {
        let first = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        let n = self.endpoints.len();
        (0..n).map(move |i| {
            let at = (first + i) % n;
            (at, &self.endpoints[at])
        })
    }

    /// One unary call, tried on each endpoint in turn until one answers. etcd's refusal of
    /// the request itself (a 4xx: invalid, not found, failed precondition) is final; a member
    /// that cannot serve (5xx: no leader, timeout) hands over to the next.
    async fn call(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut last = None;
        for (at, e) in self.in_order() {
            let attempt = async {
                let incoming = e.post(path, body).await?;
                let bytes = read_bounded(incoming).await?;
                let answer: Value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("etcd's answer to {path} is not JSON"))?;
                anyhow::Ok(answer)
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(answer)) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(err)) if err.is::<Refused>() => return Err(err),
                Ok(Err(err)) => last = Some(err.context(e.authority.clone())),
                Err(_) => {
                    last = Some(anyhow!(
                        "{}: no answer to {path} within {:?}",
                        e.authority,
                        self.timeout
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no etcd endpoint")))
    }
}

/// etcd refused the request itself (HTTP 4xx from the gateway): no other member will differ.
#[derive(Debug, thiserror::Error)]
#[error("etcd refused {path} ({status}): {message}")]
struct Refused {
    path: String,
    status: u16,
    message: String,
}

impl Endpoint {
    /// POSTs `body` to `path` on a fresh connection; the answer's body if the status is 2xx,
    /// or etcd's error.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Incoming> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to etcd at {}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = read_bounded(resp.into_body()).await.unwrap_or_default();
            let message = String::from_utf8_lossy(&bytes).into_owned();
            if status.is_client_error() {
                return Err(Refused {
                    path: path.to_owned(),
                    status: status.as_u16(),
                    message,
                }
                .into());
            }
            bail!("{path}: etcd could not serve it ({status}): {message}");
        }
        Ok(resp.into_body())
    }
}

impl Watch {
    /// The next changes (empty for a message without events, such as a progress report);
    /// `None` when etcd ends the watch.
    ///
    /// # Errors
    /// The connection broke, or etcd sent something that is not a watch message.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<Change>>> {
        let Some(m) = self.message().await? else {
            return Ok(None);
        };
        let result = &m["result"];
        if result["canceled"].as_bool() == Some(true) {
            return Ok(None);
        }
        let changes = result["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| match e["type"].as_str() {
                        Some("DELETE") => Change::Delete,
                        _ => Change::Put {
                            create_revision: int(&e["kv"]["create_revision"]),
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(changes))
    }

    /// The next newline-delimited JSON message of the stream.
    async fn message(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(self.scanned + at + 1);
                self.scanned = 0;
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let m: Value = serde_json::from_slice(line).context("a watch message")?;
                if let Some(error) = m.get("error") {
                    bail!("etcd ended the watch: {error}");
                }
                return Ok(Some(m));
            }
            self.scanned = self.buf.len();
            match self.body.frame().await {
                None => {
                    return if self.buf.iter().all(u8::is_ascii_whitespace) {
                        Ok(None)
                    } else {
                        // The last message need not end with a newline.
                        let m = serde_json::from_slice(&std::mem::take(&mut self.buf))?;
                        Ok(Some(m))
                    };
                }
                Some(frame) => {
                    if let Ok(mut data) = frame?.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                        if self.buf.len() > MAX_ANSWER {
                            bail!("a watch message longer than {MAX_ANSWER} bytes");
                        }
                    }
                }
            }
        }
    }
}

/// Reads a whole answer, at most [`MAX_ANSWER`] bytes.
async fn read_bounded(body: Incoming) -> anyhow::Result<Bytes> {
    let limited = http_body_util::Limited::new(body, MAX_ANSWER);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| anyhow!("reading etcd's answer: {e}"))
}

/// A protobuf int64 in JSON: a string (or, leniently, a number); absent is 0.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A TTL in seconds (negative or absent: zero).
fn secs(v: &Value) -> Duration {
    Duration::from_secs(u64::try_from(int(v)).unwrap_or(0))
}

fn key_value(v: &Value) -> anyhow::Result<KeyValue> {
    let value = match v["value"].as_str() {
        Some(s) => B64.decode(s).context("a value that is not base64")?,
        None => Vec::new(),
    };
    Ok(KeyValue {
        value,
        create_revision: int(&v["create_revision"]),
        lease: int(&v["lease"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_are_read_as_protobuf_json_writes_them() {
        assert_eq!(
            int(&json!("2324035838292881415")),
            2_324_035_838_292_881_415
        );
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
        assert_eq!(secs(&json!("-1")), Duration::ZERO);
        let kv = key_value(&json!({"key": "bWhjL2s=", "create_revision": "2",
                                   "value": "aGk=", "lease": "9"}))
        .unwrap();
        assert_eq!(
            kv,
            KeyValue {
                value: b"hi".to_vec(),
                create_revision: 2,
                lease: 9
            }
        );
    }

    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What a member answers: status and body, or nothing at all.
    #[derive(Clone)]
    enum Answer {
        Json(u16, &'static str),
        Silent,
    }

    /// A stand-in for one etcd member whose answers the test chooses (the failures a real
    /// one-member etcd cannot be made to give on demand: no leader, a silent host). Counts the
    /// requests it got.
    async fn member(answer: Answer) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    match answer {
                        Answer::Silent => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        Answer::Json(status, body) => {
                            let head = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = conn.write_all(head.as_bytes()).await;
                            let _ = conn.write_all(body.as_bytes()).await;
                        }
                    }
                });
            }
        });
        (url, hits)
    }

    const GRANTED: &str = r#"{"header":{"revision":"1"},"ID":"42","TTL":"5"}"#;

    #[tokio::test]
    async fn a_member_that_cannot_serve_hands_over_to_the_next_which_is_then_tried_first() {
        let (sick, sick_hits) = member(Answer::Json(
            503,
            r#"{"error":"etcdserver: no leader","code":14}"#,
        ))
        .await;
        let (well, well_hits) = member(Answer::Json(200, GRANTED)).await;
        let etcd = Etcd::new(&[sick, well], Duration::from_secs(2)).unwrap();
        assert_eq!(
            etcd.lease_grant(Duration::from_secs(5)).await.unwrap(),
            (42, Duration::from_secs(5))
        );
        etcd.lease_grant(Duration::from_secs(5)).await.unwrap();
        assert_eq!(sick_hits.load(Ordering::SeqCst), 1);
        assert_eq!(well_hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_silent_member_costs_one_timeout_not_one_per_call() {
        let (silent, silent_hits) = member(Answer::Silent).await;
        let (well, _) = member(Answer::Json(200, GRANTED)).await;
        let etcd = Etcd::new(&[silent, well], Duration::from_millis(300)).unwrap();
        for _ in 0..3 {
            etcd.lease_grant(Duration::from_secs(5)).await.unwrap();
        }
        assert_eq!(silent_hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refusal_is_final_and_a_revoked_lease_is_no_error() {
        let (strict, _) = member(Answer::Json(
            404,
            r#"{"error":"etcdserver: requested lease not found","code":5}"#,
        ))
        .await;
        let (other, other_hits) = member(Answer::Json(200, GRANTED)).await;
        let etcd = Etcd::new(&[strict, other], Duration::from_secs(2)).unwrap();
        etcd.lease_revoke(42).await.unwrap();
        let refused = etcd.lease_keep_alive(42).await.unwrap_err();
        assert!(refused.is::<Refused>(), "{refused:#}");
        assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_renewal_without_a_ttl_means_the_lease_is_gone() {
        let (gone, _) = member(Answer::Json(200, r#"{"result":{"header":{},"ID":"42"}}"#)).await;
        let etcd = Etcd::new(&[gone], Duration::from_secs(2)).unwrap();
        assert_eq!(etcd.lease_keep_alive(42).await.unwrap(), Duration::ZERO);
    }

    #[test]
    fn urls_name_host_and_port() {
        assert!(Etcd::new(&["http://127.0.0.1:2379/".into()], Duration::from_secs(1)).is_ok());
        assert!(Etcd::new(&["127.0.0.1:2379".into()], Duration::from_secs(1)).is_err());
        assert!(Etcd::new(&[], Duration::from_secs(1)).is_err());
    }
}
