//! A restic repository in a bucket of an S3-compatible object store: `rustic_core`'s backend
//! traits over signed S3 requests (`rusty-s3` signs them, reqwest's blocking client sends
//! them; rustic calls backends from its own threads, never from the async runtime).
//!
//! The layout is restic's default one, so `restic -r s3:…` reads what this writes and the
//! other way round: `PREFIX/config`, `PREFIX/{keys,snapshots,index,locks}/ID` and
//! `PREFIX/data/XX/ID`, `XX` being the id's first two hex digits.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use mhc_config::S3Location;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use rusty_s3::actions::{
    CreateBucket, DeleteObject, GetObject, HeadBucket, HeadObject, ListObjectsV2, PutObject,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// How long a signed request stays valid: long enough for a big pack on a slow link.
const SIGNATURE_TTL: Duration = Duration::from_secs(3600);

/// Attempts per request: transport errors, 5xx and 429 are tried again, after 0.5 s then 2 s.
const ATTEMPTS: u32 = 3;

/// Bytes of an error answer kept for the message (S3 errors are short XML documents).
const ERROR_BODY_LIMIT: u64 = 1024;

/// Keys asked for per listing page (S3's maximum).
const LIST_PAGE: usize = 1000;

/// The region requests are signed for when the environment names none (restic's default).
const DEFAULT_REGION: &str = "us-east-1";

/// The credentials of an S3 repository, as restic reads them.
#[derive(Clone)]
pub struct S3Credentials(Credentials);

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("key", &self.0.key())
            .finish_non_exhaustive()
    }
}

impl S3Credentials {
    /// An access key and its secret (and a session token, for temporary credentials).
    pub fn new(key: &str, secret: &str, token: Option<&str>) -> Self {
        Self(match token {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        })
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (if set).
    ///
    /// # Errors
    /// The key or the secret is not set.
    pub fn from_env() -> anyhow::Result<Self> {
        Credentials::from_env().map(Self).ok_or_else(|| {
            anyhow::anyhow!(
                "backup.repository is an S3 bucket: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY in the environment (as for restic)"
            )
        })
    }
}

/// Why one S3 request failed.
#[derive(Debug, thiserror::Error)]
enum S3Error {
    /// Without its URL: a presigned URL carries a signature valid for an hour (and a session
    /// token), which must not reach a log.
    #[error("{0}")]
    Http(reqwest::Error),
    #[error("HTTP {status}: {}", body.trim_start())]
    Status { status: StatusCode, body: String },
    #[error("{0}")]
    Answer(String),
}

impl From<reqwest::Error> for S3Error {
    fn from(e: reqwest::Error) -> Self {
        S3Error::Http(e.without_url())
    }
}

impl S3Error {
    fn status(status: StatusCode, response: Response) -> Self {
        let mut body = String::new();
        let _ = response.take(ERROR_BODY_LIMIT).read_to_string(&mut body);
        // S3 names the problem in <Code>; the rest is request ids.
        let code = body
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(code, _)| code.to_owned());
        let mut body = code.unwrap_or(body);
        if status == StatusCode::FORBIDDEN {
            // A HEAD answer has no body to say why; the likely cause is ours to name.
            body.push_str(
                " (access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the \
                 key's rights on the bucket)",
            );
        }
        S3Error::Status { status, body }
    }

    fn worth_retrying(&self) -> bool {
        match self {
            S3Error::Http(e) => !e.is_builder() && !e.is_decode(),
            S3Error::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            S3Error::Answer(_) => false,
        }
    }
}

/// A restic repository under a prefix of an S3 bucket.
pub struct S3Backend {
    bucket: Bucket,
    credentials: Credentials,
    /// `""` or the folder inside the bucket with a trailing `/`.
    prefix: String,
    location: String,
    client: Client,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// The repository at `location`, reached with `credentials`; requests are signed for the
    /// region in `AWS_DEFAULT_REGION` (or `AWS_REGION`), else `us-east-1`. Nothing is sent yet.
    ///
    /// # Errors
    /// The location is not a usable URL, or the HTTP client cannot be built.
    pub fn new(location: &S3Location, credentials: S3Credentials) -> anyhow::Result<Self> {
        let endpoint: url::Url = location
            .endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("backup.repository {}: {e}", location.endpoint))?;
        let region = ["AWS_DEFAULT_REGION", "AWS_REGION"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|r| !r.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        // Amazon's own endpoints take the bucket in the host name; every other S3 service
        // (Ceph, MinIO, Garage…) is addressed by path, as restic does.
        let style = if endpoint
            .host_str()
            .is_some_and(|h| h.ends_with(".amazonaws.com"))
        {
            UrlStyle::VirtualHost
        } else {
            UrlStyle::Path
        };
        let bucket = Bucket::new(endpoint, style, location.bucket.clone(), region)
            .map_err(|e| anyhow::anyhow!("backup.repository {}: {e}", location.endpoint))?;
        // reqwest takes the process's TLS provider (ring, as for every TLS of this node).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // A pack is at most a few tens of MB; ten minutes covers a slow link.
            .timeout(Duration::from_secs(600))
            .build()?;
        let prefix = if location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", location.prefix)
        };
        Ok(Self {
            bucket,
            credentials: credentials.0,
            prefix,
            location: location.restic_location(),
            client,
        })
    }

    /// The object key of a repository file.
    fn key(&self, tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        let hex = hex.as_str();
        match tpe {
            FileType::Config => format!("{}config", self.prefix),
            FileType::Pack => format!("{}data/{}/{hex}", self.prefix, &hex[..2]),
            other => format!("{}{}/{hex}", self.prefix, other.dirname()),
        }
    }

    /// Sends the request `build` makes, again on a transient failure; the answer must have
    /// one of the `ok` statuses.
    fn send(
        &self,
        ok: &[StatusCode],
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, S3Error> {
        let mut attempt = 1;
        loop {
            let result = build().send().map_err(S3Error::from).and_then(|response| {
                let status = response.status();
                if ok.contains(&status) {
                    Ok(response)
                } else {
                    Err(S3Error::status(status, response))
                }
            });
            match result {
                Err(e) if attempt < ATTEMPTS && e.worth_retrying() => {
                    tracing::warn!(error = %e, attempt, "S3 request failed; trying again");
                    std::thread::sleep(Duration::from_millis(500) * 4u32.pow(attempt - 1));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn get(&self, key: &str, range: Option<(u32, u32)>) -> Result<Bytes, S3Error> {
        let url = GetObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGNATURE_TTL);
        let ok: &[StatusCode] = match range {
            Some(_) => &[StatusCode::PARTIAL_CONTENT],
            None => &[StatusCode::OK],
        };
        let response = self.send(ok, || {
            let request = self.client.get(url.clone());
            match range {
                Some((offset, length)) => request.header(
                    "Range",
                    format!(
                        "bytes={offset}-{}",
                        u64::from(offset) + u64::from(length) - 1
                    ),
                ),
                None => request,
            }
        })?;
        let bytes = response.bytes()?;
        if let Some((_, length)) = range {
            if bytes.len() != length as usize {
                return Err(S3Error::Answer(format!(
                    "asked for {length} bytes, got {}",
                    bytes.len()
                )));
            }
        }
        Ok(bytes)
    }

    /// Every key under `prefix` with its size, all pages.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, S3Error> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix);
            action.with_max_keys(LIST_PAGE);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNATURE_TTL);
            let text = self
                .send(&[StatusCode::OK], || self.client.get(url.clone()))?
                .text()?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| S3Error::Answer(format!("a listing that does not parse: {e}")))?;
            found.extend(
                page.contents
                    .into_iter()
                    // An entry without a size cannot be a repository file rustic may read.
                    .filter_map(|c| Some((c.key, c.size?))),
            );
            match page.next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(found),
            }
        }
    }
}

/// A backend error naming the operation and the object.
fn backend_error(what: &str, key: &str, e: S3Error) -> Box<RusticError> {
    RusticError::with_source(
        ErrorKind::Backend,
        format!("S3 {what} of `{key}` failed"),
        e,
    )
}

impl ReadBackend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let key = self.key(tpe, &Id::default());
            let url =
                HeadObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNATURE_TTL);
            let response = self
                .send(&[StatusCode::OK, StatusCode::NOT_FOUND], || {
                    self.client.head(url.clone())
                })
                .map_err(|e| backend_error("HEAD", &key, e))?;
            return Ok(if response.status() == StatusCode::OK {
                let size = response.content_length().unwrap_or(0);
                vec![(Id::default(), u32::try_from(size).unwrap_or(u32::MAX))]
            } else {
                Vec::new()
            });
        }
        let prefix = format!("{}{}/", self.prefix, tpe.dirname());
        let listed = self
            .list(&prefix)
            .map_err(|e| backend_error("listing", &prefix, e))?;
        Ok(listed
            .into_iter()
            .filter_map(|(key, size)| {
                let name = key.rsplit('/').next()?;
                let id = Id::parse_some(name, tpe)?;
                Some((id, u32::try_from(size).ok()?))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let key = self.key(tpe, id);
        self.get(&key, None)
            .map_err(|e| backend_error("GET", &key, e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let key = self.key(tpe, id);
        if length == 0 {
            return Ok(Bytes::new());
        }
        self.get(&key, Some((offset, length)))
            .map_err(|e| backend_error("ranged GET", &key, e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.key(tpe, id)
    }
}

impl WriteBackend for S3Backend {
    /// Creates the bucket when it is not there (restic does the same).
    fn create(&self) -> RusticResult<()> {
        let name = self.bucket.name().to_owned();
        let url = HeadBucket::new(&self.bucket, Some(&self.credentials)).sign(SIGNATURE_TTL);
        let head = self
            .send(&[StatusCode::OK, StatusCode::NOT_FOUND], || {
                self.client.head(url.clone())
            })
            .map_err(|e| backend_error("HEAD bucket", &name, e))?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }
        let action = CreateBucket::new(&self.bucket, &self.credentials);
        let body = action.body();
        let url = action.sign(SIGNATURE_TTL);
        match self.send(&[StatusCode::OK], || {
            self.client.put(url.clone()).body(body.clone())
        }) {
            Ok(_) => Ok(()),
            // A retry of a creation whose answer was lost.
            Err(S3Error::Status { status, body })
                if status == StatusCode::CONFLICT
                    && body.starts_with("BucketAlreadyOwnedByYou") =>
            {
                Ok(())
            }
            Err(e) => Err(backend_error("creating bucket", &name, e)),
        }
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let key = self.key(tpe, id);
        let body: Bytes = match content.into_vec().as_slice() {
            [one] => one.clone(),
            parts => parts.concat().into(),
        };
        let url = PutObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNATURE_TTL);
        self.send(&[StatusCode::OK], || {
            self.client.put(url.clone()).body(body.clone())
        })
        .map_err(|e| backend_error("PUT", &key, e))?;
        Ok(())
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let key = self.key(tpe, id);
        let url =
            DeleteObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNATURE_TTL);
        // Deleting what is gone already is done.
        self.send(
            &[
                StatusCode::NO_CONTENT,
                StatusCode::OK,
                StatusCode::NOT_FOUND,
            ],
            || self.client.delete(url.clone()),
        )
        .map_err(|e| backend_error("DELETE", &key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(prefix: &str) -> S3Backend {
        S3Backend::new(
            &S3Location {
                endpoint: "http://127.0.0.1:7480".into(),
                bucket: "mhc-backups".into(),
                prefix: prefix.into(),
            },
            S3Credentials::new("k", "s", None),
        )
        .unwrap()
    }

    #[test]
    fn keys_follow_restics_default_layout() {
        let id: Id = "ab12cd00000000000000000000000000000000000000000000000000000000ff"
            .parse()
            .unwrap();
        let b = backend("origin/a");
        assert_eq!(b.key(FileType::Config, &id), "origin/a/config");
        assert_eq!(
            b.key(FileType::Pack, &id),
            format!("origin/a/data/ab/{}", id.to_hex().as_str())
        );
        assert_eq!(
            b.key(FileType::Snapshot, &id),
            format!("origin/a/snapshots/{}", id.to_hex().as_str())
        );
        assert_eq!(
            backend("").key(FileType::Key, &id).split('/').next(),
            Some("keys")
        );
        assert_eq!(
            b.location(),
            "s3:http://127.0.0.1:7480/mhc-backups/origin/a"
        );
    }

    #[test]
    fn only_transient_failures_are_tried_again() {
        let status = |s: u16| S3Error::Status {
            status: StatusCode::from_u16(s).unwrap(),
            body: String::new(),
        };
        assert!(status(503).worth_retrying());
        assert!(status(429).worth_retrying());
        assert!(!status(403).worth_retrying());
        assert!(!status(404).worth_retrying());
        assert!(!S3Error::Answer("x".into()).worth_retrying());
    }
}
