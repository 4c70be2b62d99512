//! The label's delivery queue and its worker: [`Label::deliver`] and takedowns queue durable
//! jobs ([`crate::delivery`]); one task per open plugin runs them, one at a time, uploading
//! each batch over SFTP, retrying failures with backoff and looking for the DSPs' ACKs.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::SftpUrl;
use crate::delivery::{
    backoff_ms, batch_id, find_ack, fingerprint, upload_batch, DeliveryKind, Job, JobState, Queued,
    Upload,
};
use crate::ern::{ErnMessage, MessageKind};
use crate::media::TrackMedia;
use crate::plugin::{bad, not_found, Label, LabelError, LabelStats, Result};
use crate::release::Release;
use crate::sftp::SftpTarget;

impl Label {
    /// Queues the delivery of release `id` to each of `dsps`: an insert if the DSP never had
    /// it, an update if it changed since, nothing if the same release is delivered or on its
    /// way. A release with taken-down content is not delivered.
    ///
    /// # Errors
    /// `NotFound` for an unknown release or DSP, a track no longer published; `BadRequest` for
    /// content on the takedown list.
    pub fn deliver(&self, id: &str, dsps: &[String]) -> Result<BTreeMap<String, Queued>> {
        let release = self.release(id)?;
        if dsps.is_empty() {
            return Err(bad("dsps: name at least one DSP"));
        }
        for dsp in dsps {
            if !self.config.dsps.contains_key(dsp) {
                return Err(not_found(format!("no DSP {dsp:?} in [plugins.label.dsps]")));
            }
        }
        for t in &release.tracks {
            if let Some(td) = self.store.takedown(&t.content_id)? {
                return Err(bad(format!(
                    "{:?} is on the takedown list ({})",
                    t.content_id, td.reason
                )));
            }
        }
        let media = self.media_of(&release)?;
        let mut out = BTreeMap::new();
        for dsp in dsps {
            let queued = self.queue(&release, dsp, &media, DeliveryKind::Insert)?;
            out.insert(dsp.clone(), queued);
        }
        self.wake.notify_one();
        Ok(out)
    }

    /// Queues a takedown of every release holding `content_id` to every DSP that has it.
    pub(crate) fn queue_takedowns(&self, content_id: &str) -> Result<Vec<String>> {
        let mut queued = Vec::new();
        for release in self.store.releases()? {
            if !release.tracks.iter().any(|t| t.content_id == content_id) {
                continue;
            }
            for job in self.jobs.of_release(&release.id)? {
                if job.delivered_fingerprint.is_none() || job.kind == DeliveryKind::Takedown {
                    continue;
                }
                // A takedown sends no files: the media need not be published any more.
                if self.queue(&release, &job.dsp, &[], DeliveryKind::Takedown)? != Queued::Unchanged
                {
                    queued.push(format!("{}/{}", release.id, job.dsp));
                }
            }
        }
        self.wake.notify_one();
        Ok(queued)
    }

    /// Queues one job unless the same delivery is done or under way.
    fn queue(
        &self,
        release: &Release,
        dsp: &str,
        media: &[TrackMedia],
        wanted: DeliveryKind,
    ) -> Result<Queued> {
        let fp = fingerprint(release, media, wanted);
        let now_ms = self.clock.now_ms();
        let old = self.jobs.get(&release.id, dsp)?;
        if let Some(old) = &old {
            let under_way = matches!(old.state, JobState::Queued | JobState::Uploading)
                || (old.state == JobState::Failed && old.retry);
            let done = old.delivered_fingerprint.as_deref() == Some(fp.as_str())
                && matches!(old.state, JobState::Delivered | JobState::Acknowledged);
            if (under_way && old.fingerprint == fp) || done {
                return Ok(Queued::Unchanged);
            }
        }
        let kind = match (
            wanted,
            old.as_ref().and_then(|o| o.delivered_fingerprint.as_ref()),
        ) {
            (DeliveryKind::Takedown, _) => DeliveryKind::Takedown,
            (_, Some(_)) => DeliveryKind::Update,
            (_, None) => DeliveryKind::Insert,
        };
        let seq = self.store.next_delivery_seq()?;
        let job = Job {
            release: release.id.clone(),
            dsp: dsp.to_string(),
            state: JobState::Queued,
            kind,
            fingerprint: fp,
            delivered_fingerprint: old.and_then(|o| o.delivered_fingerprint),
            batch_id: batch_id(now_ms, seq),
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
            retry: true,
            queued_ms: now_ms,
            delivered_ms: None,
            acknowledged_ms: None,
            ack: None,
            bytes: 0,
        };
        self.jobs.put(&job)?;
        tracing::info!(release = %job.release, dsp, kind = ?kind, batch = %job.batch_id, "label: delivery queued");
        Ok(match kind {
            DeliveryKind::Insert => Queued::Insert,
            DeliveryKind::Update => Queued::Update,
            DeliveryKind::Takedown => Queued::Takedown,
        })
    }

    /// Jobs counted by state, and bytes uploaded since start, for metrics.
    pub fn stats(&self) -> LabelStats {
        let mut jobs: BTreeMap<&'static str, u64> =
            JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for job in self.jobs.all().unwrap_or_default() {
            *jobs.entry(job.state.as_str()).or_default() += 1;
        }
        LabelStats {
            jobs,
            uploaded_bytes: self.uploaded_bytes.load(Ordering::Relaxed),
        }
    }

    /// The SFTP target and drop folder of a DSP.
    fn target(&self, dsp: &str) -> Result<(SftpTarget, String), String> {
        let config = self
            .config
            .dsps
            .get(dsp)
            .ok_or_else(|| format!("no DSP {dsp:?} in [plugins.label.dsps] any more"))?;
        let url = SftpUrl::parse(&config.sftp)?;
        Ok((
            SftpTarget {
                host: url.host,
                port: url.port,
                user: url.user,
                key: config.key.clone(),
                known_host: config.known_host.clone(),
            },
            url.path,
        ))
    }

    /// Everything an attempt uploads, resolved from the stores (blocking: hashes files).
    fn prepare(&self, job: &mut Job) -> Result<Upload> {
        let release = self.release(&job.release)?;
        let media = if job.kind == DeliveryKind::Takedown {
            Vec::new()
        } else {
            self.media_of(&release)?
        };
        // Deliver the release as it is now (a track republished while queued goes too).
        job.fingerprint = fingerprint(&release, &media, job.kind);
        let (target, drop_dir) = self.target(&job.dsp).map_err(bad)?;
        let message_id = format!("{}-{}-{}", release.id, job.dsp, job.batch_id);
        let message = if job.kind == DeliveryKind::Takedown {
            self.takedown_ern(&release, &job.dsp, &message_id)?
        } else {
            self.ern(&release, &job.dsp, job.kind.into(), &message_id, &media)?
        };
        let resources = message
            .release
            .tracks
            .iter()
            .zip(media)
            .map(|(t, m)| {
                let name = t.file.uri.trim_start_matches("resources/").to_string();
                (name, m, t.file.sha256_hex.clone(), t.file.size)
            })
            .collect();
        Ok(Upload {
            target,
            drop_dir,
            batch_id: job.batch_id.clone(),
            upc: release.upc.to_string(),
            message_xml: message.to_xml(),
            resources,
            parties: (
                message.sender.party_id.clone(),
                message.recipient.party_id.clone(),
                message.created.clone(),
            ),
        })
    }

    /// A takedown message: the release as last described, with no files to send.
    fn takedown_ern(&self, release: &Release, dsp: &str, message_id: &str) -> Result<ErnMessage> {
        let media: Vec<TrackMedia> = release
            .tracks
            .iter()
            .map(|t| {
                self.library.track(&t.content_id).unwrap_or(TrackMedia {
                    content_id: t.content_id.clone(),
                    version: 0,
                    artist_id: release.artist.clone(),
                    title: t.title.clone(),
                    audio_only: true,
                    duration_ms: t.duration_ms,
                    codecs: String::new(),
                    bandwidth_bps: 0,
                    extension: "m4a",
                    parts: Vec::new(),
                })
            })
            .collect();
        self.ern(release, dsp, MessageKind::Takedown, message_id, &media)
    }

    /// Runs queued and due jobs one at a time, checks delivered batches for their ACK; forever.
    pub(crate) async fn deliver_forever(self: Arc<Self>) {
        loop {
            let wait_ms = self.run_due().await;
            let wait = Duration::from_millis(wait_ms.clamp(20, 60_000));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over the jobs; returns the time until the next one is due, ms.
    async fn run_due(self: &Arc<Self>) -> u64 {
        let Ok(jobs) = self.jobs.all() else {
            tracing::error!("label: reading delivery jobs");
            return 5_000;
        };
        for job in jobs {
            let due = job.next_attempt_ms <= self.clock.now_ms();
            match job.state {
                JobState::Queued | JobState::Uploading => self.attempt(job).await,
                JobState::Failed if job.retry && due => self.attempt(job).await,
                JobState::Delivered if due => self.check_ack(job).await,
                _ => {}
            }
        }
        // When the next job is due, counting the ones this pass just failed or delivered.
        let now = self.clock.now_ms();
        self.jobs
            .all()
            .unwrap_or_default()
            .iter()
            .filter(|j| (j.state == JobState::Failed && j.retry) || j.state == JobState::Delivered)
            .map(|j| j.next_attempt_ms.saturating_sub(now))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// One attempt at a job.
    async fn attempt(self: &Arc<Self>, mut job: Job) {
        job.state = JobState::Uploading;
        job.attempts += 1;
        if let Err(e) = self.jobs.put(&job) {
            tracing::error!(error = %e, "label: storing a delivery job");
            return;
        }
        let label = Arc::clone(self);
        let prepared = tokio::task::spawn_blocking(move || {
            let upload = label.prepare(&mut job);
            (job, upload)
        })
        .await;
        let Ok((mut job, upload)) = prepared else {
            return;
        };
        let outcome = match upload {
            Ok(upload) => upload_batch(upload, Arc::clone(&self.library))
                .await
                .map_err(|e| (e.to_string(), e.is_retryable())),
            Err(LabelError(e)) => Err((e.to_string(), e.is_retryable())),
        };
        let now = self.clock.now_ms();
        match outcome {
            Ok(bytes) => {
                self.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
                tracing::info!(release = %job.release, dsp = %job.dsp, batch = %job.batch_id, bytes, "label: delivered");
                job.state = JobState::Delivered;
                job.delivered_fingerprint = Some(job.fingerprint.clone());
                job.delivered_ms = Some(now);
                job.last_error = None;
                job.bytes = bytes;
                job.next_attempt_ms = now + self.config.ack_poll_s * 1000;
            }
            Err((error, retry)) => {
                let delay = backoff_ms(
                    job.attempts,
                    self.config.retry_base_s,
                    self.config.retry_max_s,
                );
                tracing::warn!(release = %job.release, dsp = %job.dsp, attempt = job.attempts, retry, error = %error, "label: delivery failed");
                job.state = JobState::Failed;
                job.last_error = Some(error);
                job.retry = retry;
                job.next_attempt_ms = now + delay;
            }
        }
        if let Err(e) = self.jobs.put(&job) {
            tracing::error!(error = %e, "label: storing a delivery job");
        }
    }

    /// Looks for the DSP's ACK of a delivered batch.
    async fn check_ack(&self, mut job: Job) {
        let now = self.clock.now_ms();
        job.next_attempt_ms = now + self.config.ack_poll_s * 1000;
        match self.target(&job.dsp) {
            Ok((target, drop_dir)) => match find_ack(&target, &drop_dir, &job.batch_id).await {
                Ok(Some(ack)) => {
                    tracing::info!(release = %job.release, dsp = %job.dsp, batch = %job.batch_id, "label: acknowledged");
                    job.state = JobState::Acknowledged;
                    job.acknowledged_ms = Some(now);
                    job.ack = Some(ack);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(dsp = %job.dsp, error = %e, "label: checking for an ACK"),
            },
            Err(e) => tracing::debug!(dsp = %job.dsp, error = %e, "label: checking for an ACK"),
        }
        if let Err(e) = self.jobs.put(&job) {
            tracing::error!(error = %e, "label: storing a delivery job");
        }
    }
}
