//! Delivery of releases to DSPs over SFTP, as durable jobs, following DDEX's choreography for
//! file drops:
//!
//! ```text
//! <drop>/<BatchId>/                         one folder per delivery (batch)
//! <drop>/<BatchId>/<UPC>/<UPC>.xml          the release's ERN message
//! <drop>/<BatchId>/<UPC>/resources/<ISRC>.<ext>
//! <drop>/<BatchId>/BatchComplete_<BatchId>.xml   written last: the batch is complete
//! ```
//!
//! Every file goes up under a temporary name and is renamed once complete
//! ([`SftpSession::upload`]), so a DSP never sees a partial file under a final name.
//!
//! A job per (release, DSP) lives in the `label/jobs` tree and moves
//! `queued → uploading → delivered → acknowledged` (an `ACK*` file the DSP leaves in the batch
//! folder), or to `failed` with the reason, retried with exponential backoff (also after a
//! restart: the state is durable; an `uploading` job found at start is resumed). A retry
//! reuses the job's batch id and skips resources already complete under their final names.
//! Delivering again what was already delivered does nothing; a changed release (metadata, or a
//! track republished) is sent again in full as an update, a takedown as a takedown message.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ern::MessageKind;
use crate::media::{TrackMedia, TrackReader};
use crate::release::Release;
use crate::sftp::{SftpError, SftpSession, SftpTarget};
use crate::store::StoreError;

/// Jobs by `<release id>/<dsp>` (JSON).
pub const JOBS_TREE: &str = "label/jobs";

/// How long connecting (TCP, key exchange, authentication, subsystem) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of an ACK file kept (and read).
pub const MAX_ACK_BYTES: usize = 64 * 1024;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the worker.
    Queued,
    /// Being uploaded (or interrupted by a restart: resumed).
    Uploading,
    /// Every file is on the DSP's server, BatchComplete last.
    Delivered,
    /// The DSP left an ACK file for the batch.
    Acknowledged,
    /// The last attempt failed; `last_error` says why, `next_attempt_ms` when it is retried.
    Failed,
}

impl JobState {
    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Uploading => "uploading",
            JobState::Delivered => "delivered",
            JobState::Acknowledged => "acknowledged",
            JobState::Failed => "failed",
        }
    }

    /// Every state, for metrics.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Uploading,
        JobState::Delivered,
        JobState::Acknowledged,
        JobState::Failed,
    ];
}

/// What a job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// First delivery.
    Insert,
    /// A changed release, sent again in full.
    Update,
    /// The release withdrawn from the DSP.
    Takedown,
}

impl From<DeliveryKind> for MessageKind {
    fn from(k: DeliveryKind) -> MessageKind {
        match k {
            DeliveryKind::Insert => MessageKind::Insert,
            DeliveryKind::Update => MessageKind::Update,
            DeliveryKind::Takedown => MessageKind::Takedown,
        }
    }
}

/// One release's delivery to one DSP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The release.
    pub release: String,
    /// The DSP.
    pub dsp: String,
    /// Where it stands.
    pub state: JobState,
    /// What it sends.
    pub kind: DeliveryKind,
    /// What it sends, hashed: the release, its tracks' published versions, the kind.
    pub fingerprint: String,
    /// What was last delivered (delivered or acknowledged), hashed the same way.
    pub delivered_fingerprint: Option<String>,
    /// The batch folder's name: digits, unique per delivery.
    pub batch_id: String,
    /// Attempts of this delivery so far.
    pub attempts: u32,
    /// When a failed job is tried again, or a delivered one checked for its ACK, Unix ms.
    pub next_attempt_ms: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Whether a failed job is retried by itself (false for a wrong host key or a refused
    /// login: an operator fixes the configuration and delivers again).
    pub retry: bool,
    /// When this delivery was asked for, Unix ms.
    pub queued_ms: u64,
    /// When it completed, Unix ms.
    pub delivered_ms: Option<u64>,
    /// When the ACK was found, Unix ms.
    pub acknowledged_ms: Option<u64>,
    /// The ACK file's name and first bytes.
    pub ack: Option<String>,
    /// Bytes uploaded by the last successful attempt.
    pub bytes: u64,
}

/// What `deliver` did for one DSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queued {
    /// A first delivery was queued.
    Insert,
    /// The release changed since it was delivered: an update was queued.
    Update,
    /// A takedown was queued.
    Takedown,
    /// The same release is delivered or on its way: nothing to do.
    Unchanged,
}

/// The hash that decides whether a release changed for a DSP.
pub fn fingerprint(release: &Release, media: &[TrackMedia], kind: DeliveryKind) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"mhc-label-delivery-v1");
    h.update(&serde_json::to_vec(release).unwrap_or_default());
    for m in media {
        h.update(m.content_id.as_bytes());
        h.update(&m.version.to_be_bytes());
        for (hash, size) in &m.parts {
            h.update(hash);
            h.update(&size.to_be_bytes());
        }
    }
    // Insert and update send the same message; a takedown does not.
    h.update(if kind == DeliveryKind::Takedown {
        b"takedown"
    } else {
        b"release"
    });
    h.finalize().to_hex().to_string()
}

/// The jobs tree.
#[derive(Debug, Clone)]
pub struct Jobs {
    db: sled::Db,
    tree: sled::Tree,
}

fn job_key(release: &str, dsp: &str) -> String {
    format!("{release}/{dsp}")
}

fn decode_job(bytes: &[u8]) -> Result<Job, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: JOBS_TREE,
        problem: e.to_string(),
    })
}

impl Jobs {
    /// Opens the tree.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(JOBS_TREE)?,
        })
    }

    /// The job of `release` to `dsp`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn get(&self, release: &str, dsp: &str) -> Result<Option<Job>, StoreError> {
        self.tree
            .get(job_key(release, dsp).as_bytes())?
            .map(|v| decode_job(&v))
            .transpose()
    }

    /// Stores a job, flushed.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn put(&self, job: &Job) -> Result<(), StoreError> {
        self.tree.insert(
            job_key(&job.release, &job.dsp).as_bytes(),
            serde_json::to_vec(job).unwrap_or_default(),
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// Every job.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn all(&self) -> Result<Vec<Job>, StoreError> {
        self.tree.iter().values().map(|v| decode_job(&v?)).collect()
    }

    /// The jobs of one release.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn of_release(&self, release: &str) -> Result<Vec<Job>, StoreError> {
        self.tree
            .scan_prefix(format!("{release}/").as_bytes())
            .values()
            .map(|v| decode_job(&v?))
            .collect()
    }
}

/// The delay before attempt `attempts + 1`: `base` doubled per attempt, at most `max`.
pub fn backoff_ms(attempts: u32, base_s: u64, max_s: u64) -> u64 {
    let factor = 1u64 << attempts.saturating_sub(1).min(20);
    base_s
        .saturating_mul(factor)
        .min(max_s)
        .saturating_mul(1000)
}

/// The batch id of a delivery: its UTC time to the millisecond and a sequence number, digits
/// only (`20261204101500123` + `0042`).
pub fn batch_id(now_ms: u64, seq: u64) -> String {
    let mut id: String = mhc_origin::royalty::format_utc(now_ms)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    id.push_str(&format!("{:03}{:04}", now_ms % 1000, seq % 10_000));
    id
}

/// One file of a batch, as BatchComplete lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFile {
    /// Path relative to the batch folder.
    pub path: String,
    /// SHA-256, hex.
    pub sha256_hex: String,
    /// Size in bytes.
    pub size: u64,
}

/// The batch's completion manifest, `BatchComplete_<BatchId>.xml`: the batch id, the sender
/// and recipient, and every file of the batch with its hash, so that the DSP can check the
/// batch before ingesting it.
pub fn batch_complete_xml(
    batch_id: &str,
    sender: &str,
    recipient: &str,
    created: &str,
    messages: &[BatchFile],
    resources: &[BatchFile],
) -> String {
    use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
    let mut w = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    let text = |w: &mut quick_xml::Writer<Vec<u8>>, name: &str, value: &str| {
        // Writing into a Vec cannot fail.
        let _ = w.write_event(Event::Start(BytesStart::new(name)));
        let _ = w.write_event(Event::Text(BytesText::new(value)));
        let _ = w.write_event(Event::End(BytesEnd::new(name)));
    };
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    let _ = w.write_event(Event::Start(BytesStart::new("BatchComplete")));
    text(&mut w, "BatchId", batch_id);
    text(&mut w, "MessageSender", sender);
    text(&mut w, "MessageRecipient", recipient);
    text(&mut w, "CreatedDateTime", created);
    text(&mut w, "NumberOfMessages", &messages.len().to_string());
    for (element, files) in [("Message", messages), ("Resource", resources)] {
        for f in files {
            let _ = w.write_event(Event::Start(BytesStart::new(element)));
            text(&mut w, "URL", &f.path);
            text(&mut w, "HashSumAlgorithm", "SHA-256");
            text(&mut w, "HashSum", &f.sha256_hex);
            text(&mut w, "FileSize", &f.size.to_string());
            let _ = w.write_event(Event::End(BytesEnd::new(element)));
        }
    }
    let _ = w.write_event(Event::End(BytesEnd::new("BatchComplete")));
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

/// What an upload needs, resolved by the plugin before going async.
#[derive(Debug)]
pub struct Upload {
    /// Where.
    pub target: SftpTarget,
    /// The drop folder on the server.
    pub drop_dir: String,
    /// The batch id.
    pub batch_id: String,
    /// The release's UPC (its folder and message name).
    pub upc: String,
    /// The ERN message.
    pub message_xml: String,
    /// Resources: final name under `resources/`, the reader's source, hash and size.
    pub resources: Vec<(String, TrackMedia, String, u64)>,
    /// Sender and recipient party ids, and the time, for BatchComplete.
    pub parties: (String, String, String),
}

/// Uploads one batch: resources (skipping those already complete under their final names,
/// from an interrupted attempt of the same batch), the message, then BatchComplete.
/// Returns the bytes uploaded.
///
/// # Errors
/// [`SftpError`]; a resource whose upload produced another size is an error (the file is left
/// for the next attempt to replace).
pub async fn upload_batch(
    upload: Upload,
    library: Arc<dyn crate::media::MediaLibrary>,
) -> Result<u64, SftpError> {
    let session = SftpSession::connect(&upload.target, CONNECT_TIMEOUT).await?;
    let batch_dir = format!(
        "{}/{}",
        upload.drop_dir.trim_end_matches('/'),
        upload.batch_id
    );
    let release_dir = format!("{batch_dir}/{}", upload.upc);
    session
        .mkdir_all(&format!("{release_dir}/resources"))
        .await?;
    let mut bytes = 0u64;
    let mut resources = Vec::with_capacity(upload.resources.len());
    for (name, media, sha, size) in &upload.resources {
        let path = format!("{release_dir}/resources/{name}");
        if session.size_of(&path).await? != Some(*size) {
            let reader = TrackReader::new(Arc::clone(&library), media);
            let written = session.upload(Box::new(reader), &path).await?;
            if written != *size {
                return Err(SftpError::Io(format!(
                    "{path}: uploaded {written} bytes, expected {size}"
                )));
            }
            bytes += written;
        }
        resources.push(BatchFile {
            path: format!("{}/resources/{name}", upload.upc),
            sha256_hex: sha.clone(),
            size: *size,
        });
    }
    let message_path = format!("{release_dir}/{}.xml", upload.upc);
    let message = upload.message_xml.into_bytes();
    let message_file = BatchFile {
        path: format!("{}/{}.xml", upload.upc, upload.upc),
        sha256_hex: sha256_hex(&message),
        size: message.len() as u64,
    };
    bytes += session
        .upload(Box::new(std::io::Cursor::new(message)), &message_path)
        .await?;
    let (sender, recipient, created) = &upload.parties;
    let complete = batch_complete_xml(
        &upload.batch_id,
        sender,
        recipient,
        created,
        &[message_file],
        &resources,
    );
    bytes += session
        .upload(
            Box::new(std::io::Cursor::new(complete.into_bytes())),
            &format!("{batch_dir}/BatchComplete_{}.xml", upload.batch_id),
        )
        .await?;
    let _ = session.close().await;
    Ok(bytes)
}

/// Looks for the DSP's acknowledgement of a batch: a file whose name starts with `ACK` in the
/// batch folder. Returns its name and (at most [`MAX_ACK_BYTES`] of) its text.
///
/// # Errors
/// [`SftpError`].
pub async fn find_ack(
    target: &SftpTarget,
    drop_dir: &str,
    batch_id: &str,
) -> Result<Option<String>, SftpError> {
    let session = SftpSession::connect(target, CONNECT_TIMEOUT).await?;
    let batch_dir = format!("{}/{batch_id}", drop_dir.trim_end_matches('/'));
    let found = match session
        .list(&batch_dir)
        .await?
        .into_iter()
        .find(|n| n.starts_with("ACK"))
    {
        Some(name) => {
            let body = session
                .read_small(&format!("{batch_dir}/{name}"), MAX_ACK_BYTES)
                .await?;
            Some(format!("{name}: {}", String::from_utf8_lossy(&body).trim()))
        }
        None => None,
    };
    let _ = session.close().await;
    Ok(found)
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(1, 30, 3600), 30_000);
        assert_eq!(backoff_ms(2, 30, 3600), 60_000);
        assert_eq!(backoff_ms(5, 30, 3600), 480_000);
        assert_eq!(backoff_ms(50, 30, 3600), 3_600_000);
    }

    #[test]
    fn batch_ids_are_digits_in_time_order() {
        let a = batch_id(1_796_380_500_123, 42);
        assert_eq!(a, "202612041035001230042");
        assert!(batch_id(1_796_380_500_124, 1) > a);
    }

    #[test]
    fn batch_complete_lists_every_file() {
        let f = |p: &str| BatchFile {
            path: p.into(),
            sha256_hex: "ab".into(),
            size: 3,
        };
        let xml = batch_complete_xml(
            "1",
            "PADPIDA0000000000001",
            "PADPIDA0000000000002",
            "2026-12-04T10:15:00Z",
            &[f("0614/0614.xml")],
            &[f("0614/resources/a.m4a"), f("0614/resources/<b>.m4a")],
        );
        assert!(xml.contains("<NumberOfMessages>1</NumberOfMessages>"));
        assert_eq!(xml.matches("<Resource>").count(), 2);
        assert!(xml.contains("&lt;b&gt;.m4a"));
    }
}
