//! [`LabelPlugin`]: the `label` origin plugin and its admin routes under
//! `/admin/plugins/label/`.
//!
//! | route | what |
//! |---|---|
//! | `POST releases` | a [`NewRelease`] (JSON); answers the stored [`Release`] with its UPC and ISRCs |
//! | `GET releases`, `GET releases/{id}` | stored releases |
//! | `GET releases/{id}/ern?dsp=D[&kind=insert\|update\|takedown]` | the ERN 4.3 message for DSP `D` |
//! | `POST takedowns`, `GET takedowns` | the takedown list (`{"content_id", "reason"}`) |

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mhc_clock::Clock;
use mhc_origin::plugin::{AdminRequest, AdminResponse, CoreEvent, Plugin, PluginError};
use mhc_origin::royalty::{Month, Royalty};
use serde::Deserialize;

use crate::config::{LabelConfig, SftpUrl};
use crate::delivery::{
    backoff_ms, batch_id, find_ack, fingerprint, upload_batch, DeliveryKind, Job, JobState, Jobs,
    Queued, Upload,
};
use crate::ern::{self, ErnDeal, ErnFile, ErnMessage, ErnRelease, ErnTrack, MessageKind, Party};
use crate::ids::{Icpn, Isrc};
use crate::media::{file_digest, MediaLibrary, TrackMedia};
use crate::release::{line_year, parse_date, NewRelease, Release, Track};
use crate::sales::{self, SalesError};
use crate::sftp::SftpTarget;
use crate::store::{Allocation, Store, StoreError, Takedown};

/// The plugin's name: its routes live under `/admin/plugins/label/`.
pub const LABEL_PLUGIN_NAME: &str = "label";

/// The label plugin: its state is shared with the delivery worker, a task on the runtime the
/// plugin was opened on, which stops when the plugin is dropped (a delivery interrupted so is
/// resumed by the next host that opens the plugin).
#[derive(Debug)]
pub struct LabelPlugin {
    label: Arc<Label>,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LabelPlugin {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.abort();
        }
    }
}

impl std::ops::Deref for LabelPlugin {
    type Target = Label;
    fn deref(&self) -> &Label {
        &self.label
    }
}

/// The plugin's state: configuration, stores, the catalog, the clock.
#[derive(Debug)]
pub struct Label {
    config: LabelConfig,
    store: Store,
    jobs: Jobs,
    library: Arc<dyn MediaLibrary>,
    /// The royalty books DSR revenue is credited to (`None`: royalty disabled).
    royalty: Option<Arc<Royalty>>,
    clock: Clock,
    /// Wakes the worker when a delivery is queued.
    wake: tokio::sync::Notify,
    /// Bytes uploaded since start.
    uploaded_bytes: AtomicU64,
}

impl From<StoreError> for LabelError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(e) => LabelError(PluginError::Storage(e)),
            StoreError::Corrupt { .. } => LabelError(PluginError::Corrupt(e.to_string())),
            StoreError::Codes(p) => LabelError(PluginError::Conflict(p)),
            StoreError::Id(e) => LabelError(PluginError::BadRequest(e.to_string())),
        }
    }
}

/// A [`PluginError`] the label's helpers build with `?` from their own errors.
#[derive(Debug)]
pub struct LabelError(pub PluginError);

impl From<PluginError> for LabelError {
    fn from(e: PluginError) -> Self {
        LabelError(e)
    }
}

type Result<T, E = LabelError> = std::result::Result<T, E>;

fn bad(problem: impl Into<String>) -> LabelError {
    LabelError(PluginError::BadRequest(problem.into()))
}

fn not_found(what: impl Into<String>) -> LabelError {
    LabelError(PluginError::NotFound(what.into()))
}

/// `YYYY-MM-DDThh:mm:ssZ` of a Unix time in ms.
pub fn rfc3339(ms: u64) -> String {
    mhc_origin::royalty::format_utc(ms)
}

/// The year of a Unix time in ms.
fn year_of(ms: u64) -> u16 {
    mhc_origin::royalty::Month::from_ms(ms).year()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TakedownRequest {
    content_id: String,
    reason: String,
}

impl LabelPlugin {
    /// Opens the label's store on the node's database with `config` (checked), reading the
    /// catalog through `library`. After a restore from backup, moves the code counters on.
    ///
    /// # Errors
    /// [`PluginError::Config`] naming the field; [`PluginError::Storage`].
    pub fn open(
        db: &sled::Db,
        config: LabelConfig,
        library: Arc<dyn MediaLibrary>,
        royalty: Option<Arc<Royalty>>,
        clock: Clock,
    ) -> Result<Self, PluginError> {
        config.validate().map_err(|e| PluginError::Config {
            plugin: LABEL_PLUGIN_NAME.into(),
            problem: e.to_string(),
        })?;
        let store = Store::open(db).map_err(|e| LabelError::from(e).0)?;
        if store
            .skip_after_restore(config.restore_skip)
            .map_err(|e| LabelError::from(e).0)?
        {
            tracing::warn!(
                skip = config.restore_skip,
                "label: restored from a backup; ISRC and UPC counters moved on so that no code \
                 issued after the backup is issued again"
            );
        }
        let jobs = Jobs::open(db).map_err(|e| LabelError::from(e).0)?;
        let label = Arc::new(Label {
            config,
            store,
            jobs,
            library,
            royalty,
            clock,
            wake: tokio::sync::Notify::new(),
            uploaded_bytes: AtomicU64::new(0),
        });
        let worker = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn(Arc::clone(&label).deliver_forever())),
            Err(_) => {
                tracing::warn!("label: no async runtime; deliveries stay queued");
                None
            }
        };
        Ok(Self { label, worker })
    }
}

impl Label {
    /// The store (for delivery and reports).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &LabelConfig {
        &self.config
    }

    /// Creates a release: checks it, checks the artist's rights on every track (published
    /// under the artist's id, audio, not taken down), assigns codes, stores it.
    ///
    /// # Errors
    /// `BadRequest` naming the field; `Conflict` for an imported code already issued.
    pub fn create_release(&self, new: NewRelease) -> Result<Release> {
        new.validate().map_err(bad)?;
        let mut media = Vec::with_capacity(new.tracks.len());
        for (i, t) in new.tracks.iter().enumerate() {
            media.push(self.releasable(&new.artist, &t.content_id).map_err(|e| {
                LabelError(match e.0 {
                    PluginError::BadRequest(p) => {
                        PluginError::BadRequest(format!("tracks[{i}].content_id: {p}"))
                    }
                    other => other,
                })
            })?);
        }
        let now_ms = self.clock.now_ms();
        let alloc = Allocation {
            registrant: &self.config.isrc_registrant,
            prefix: &self.config.gs1_prefix,
            year: year_of(now_ms),
            upc: new
                .upc
                .as_deref()
                .map(Icpn::parse)
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            isrcs: new
                .tracks
                .iter()
                .map(|t| t.isrc.as_deref().map(Isrc::parse).transpose())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?,
        };
        let display_artist = new
            .display_artist
            .clone()
            .unwrap_or_else(|| new.artist.clone());
        let release = self
            .store
            .create_release(&alloc, |id, upc, isrcs| Release {
                id,
                artist: new.artist.clone(),
                title: new.title.clone(),
                display_artist: display_artist.clone(),
                label: new.label.clone(),
                genre: new.genre.clone(),
                release_date: new.release_date.clone(),
                territories: new.territories.clone(),
                p_line: new.p_line.clone(),
                c_line: new.c_line.clone(),
                upc,
                deals: new
                    .deals
                    .clone()
                    .unwrap_or_else(|| self.config.default_deals.clone()),
                tracks: new
                    .tracks
                    .iter()
                    .zip(&media)
                    .zip(isrcs)
                    .map(|((t, m), isrc)| Track {
                        content_id: t.content_id.clone(),
                        isrc,
                        title: t.title.clone().unwrap_or_else(|| m.title.clone()),
                        display_artist: t
                            .display_artist
                            .clone()
                            .unwrap_or_else(|| display_artist.clone()),
                        duration_ms: m.duration_ms,
                    })
                    .collect(),
                created_ms: now_ms,
            })?;
        tracing::info!(release = %release.id, upc = %release.upc, tracks = release.tracks.len(), "label: release created");
        Ok(release)
    }

    /// The published content `content_id`, if `artist` may release it.
    fn releasable(&self, artist: &str, content_id: &str) -> Result<TrackMedia> {
        let media = self
            .library
            .track(content_id)
            .ok_or_else(|| bad(format!("{content_id:?} is not published here")))?;
        if media.artist_id != artist {
            return Err(bad(format!(
                "{content_id:?} is published under artist {:?}, not {artist:?}",
                media.artist_id
            )));
        }
        if !media.audio_only {
            return Err(bad(format!(
                "{content_id:?} is video; label delivery sends sound recordings"
            )));
        }
        if let Some(t) = self.store.takedown(content_id)? {
            return Err(bad(format!(
                "{content_id:?} is on the takedown list ({})",
                t.reason
            )));
        }
        Ok(media)
    }

    /// The published media of a release's tracks, as they are now.
    ///
    /// # Errors
    /// `NotFound` for a track no longer published.
    pub fn media_of(&self, release: &Release) -> Result<Vec<TrackMedia>> {
        release
            .tracks
            .iter()
            .map(|t| {
                self.library
                    .track(&t.content_id)
                    .ok_or_else(|| not_found(format!("{:?} is no longer published", t.content_id)))
            })
            .collect()
    }

    /// The ERN message for `release` to `dsp` with the tracks' files `media` (hashed from the
    /// store, each part verified), and each file's SHA-256 and size. Blocking (reads files).
    ///
    /// # Errors
    /// `NotFound` for an unknown DSP; `Other` (retryable) if a file cannot be read and
    /// verified.
    pub fn ern(
        &self,
        release: &Release,
        dsp: &str,
        kind: MessageKind,
        message_id: &str,
        media: &[TrackMedia],
    ) -> Result<ErnMessage> {
        let dsp_config = self
            .config
            .dsps
            .get(dsp)
            .ok_or_else(|| not_found(format!("no DSP {dsp:?} in [plugins.label.dsps]")))?;
        let (year, _, _) = parse_date(&release.release_date).map_err(bad)?;
        let mut tracks = Vec::with_capacity(release.tracks.len());
        for (t, media) in release.tracks.iter().zip(media) {
            let (sha, size) = file_digest(&self.library, media).map_err(|e| {
                LabelError(PluginError::Other {
                    message: format!("reading {:?}: {e}", t.content_id),
                    retryable: true,
                })
            })?;
            tracks.push(ErnTrack {
                isrc: t.isrc.to_string(),
                title: t.title.clone(),
                display_artist: t.display_artist.clone(),
                duration_ms: media.duration_ms,
                file: ErnFile {
                    uri: format!("resources/{}.{}", t.isrc, media.extension),
                    sha256_hex: hex::encode(sha),
                    size,
                    codec: ern::avs_audio_codec(&media.codecs).map(str::to_string),
                    bitrate_kbps: u32::try_from(media.bandwidth_bps / 1000)
                        .ok()
                        .filter(|k| *k > 0),
                },
            });
        }
        Ok(ErnMessage {
            message_id: message_id.to_string(),
            thread_id: format!("{}-{dsp}", release.id),
            created: rfc3339(self.clock.now_ms()),
            sender: Party {
                party_id: self.config.sender_party_id.to_string(),
                name: self.config.sender_name.clone(),
            },
            recipient: Party {
                party_id: dsp_config.party_id.to_string(),
                name: self.config.dsp_name(dsp).to_string(),
            },
            kind,
            release: ErnRelease {
                release_id: release.id.clone(),
                icpn: release.upc.to_string(),
                title: release.title.clone(),
                display_artist: release.display_artist.clone(),
                label_name: release.label.clone(),
                genre: release.genre.clone(),
                release_date: release.release_date.clone(),
                p_line: (line_year(&release.p_line, year), release.p_line.clone()),
                c_line: (line_year(&release.c_line, year), release.c_line.clone()),
                territories: release.territories.clone(),
                deals: release
                    .deals
                    .iter()
                    .map(|d| ErnDeal {
                        commercial_model: d.commercial_model.clone(),
                        use_types: d.use_types.clone(),
                        price: d
                            .price
                            .as_ref()
                            .map(|p| (p.amount.clone(), p.currency.clone())),
                    })
                    .collect(),
                tracks,
            },
        })
    }

    fn route(&self, req: &AdminRequest) -> Result<AdminResponse> {
        let segments = req.segments()?;
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (req.method.as_str(), segs.as_slice()) {
            ("POST", ["releases"]) => {
                let new: NewRelease = req.json_body()?;
                let release = self.create_release(new)?;
                Ok(AdminResponse::json(201, &release))
            }
            ("GET", ["releases"]) => Ok(AdminResponse::ok(&self.store.releases()?)),
            ("GET", ["releases", id]) => Ok(AdminResponse::ok(&self.release(id)?)),
            ("GET", ["releases", id, "ern"]) => {
                let release = self.release(id)?;
                let dsp = match req.param("dsp") {
                    Some(d) => d.to_string(),
                    None if self.config.dsps.len() == 1 => {
                        self.config.dsps.keys().next().cloned().unwrap_or_default()
                    }
                    None => return Err(bad("name the DSP: ?dsp=<name>")),
                };
                let kind = match req.param("kind").unwrap_or("insert") {
                    "insert" => MessageKind::Insert,
                    "update" => MessageKind::Update,
                    "takedown" => MessageKind::Takedown,
                    other => {
                        return Err(bad(format!(
                            "kind {other:?} is not insert, update or takedown"
                        )))
                    }
                };
                let message_id = format!("{}-{dsp}-preview", release.id);
                let media = self.media_of(&release)?;
                let xml = self
                    .ern(&release, &dsp, kind, &message_id, &media)?
                    .to_xml();
                Ok(AdminResponse::bytes("application/xml", xml))
            }
            ("POST", ["releases", id, "deliver"]) => {
                let body: DeliverRequest = req.json_body()?;
                let queued = self.deliver(id, &body.dsps)?;
                Ok(AdminResponse::ok(&serde_json::json!({ "dsps": queued })))
            }
            ("GET", ["releases", id, "status"]) => {
                let release = self.release(id)?;
                let jobs = self.jobs.of_release(&release.id)?;
                let dsps: BTreeMap<String, serde_json::Value> = jobs
                    .into_iter()
                    .map(|j| (j.dsp.clone(), job_status(&j)))
                    .collect();
                Ok(AdminResponse::ok(
                    &serde_json::json!({ "release": release.id, "dsps": dsps }),
                ))
            }
            ("POST", ["dsr", dsp]) => {
                if !self.config.dsps.contains_key(*dsp) {
                    return Err(not_found(format!("no DSP {dsp:?} in [plugins.label.dsps]")));
                }
                let royalty = self.royalty.as_ref().ok_or_else(|| {
                    LabelError(PluginError::Conflict(
                        "DSR revenue is credited through the royalty plugin: enable \
                         [plugins.royalty]"
                            .into(),
                    ))
                })?;
                let import = sales::import(
                    &self.store,
                    royalty,
                    dsp,
                    self.config.sender_party_id.as_str(),
                    req.body_reader()?,
                )
                .map_err(|e| match e {
                    SalesError::File(p) | SalesError::Refused(p) => bad(p),
                    SalesError::Royalty(e) => LabelError(PluginError::Royalty(e)),
                    SalesError::Store(e) => LabelError::from(e),
                })?;
                tracing::info!(dsp, period = %import.period, lines = import.usage_lines, matched = import.matched_lines, replayed = import.replayed, "label: sales report imported");
                Ok(AdminResponse::ok(&import))
            }
            ("GET", ["reconciliation", dsp, period]) => {
                let month: Month = period.parse().map_err(|e| bad(format!("period: {e}")))?;
                let imports = sales::imports(&self.store, dsp, period)?;
                let facts = |isrc: &str| self.track_facts(dsp, isrc, month);
                Ok(AdminResponse::ok(&sales::reconcile(
                    dsp, period, &imports, facts,
                )))
            }
            ("POST", ["takedowns"]) => {
                let t: TakedownRequest = req.json_body()?;
                mhc_manifest::ContentId::new(t.content_id.as_str())
                    .map_err(|e| bad(format!("content_id: {e}")))?;
                crate::release::check_text("reason", &t.reason).map_err(bad)?;
                let takedown = Takedown {
                    content_id: t.content_id,
                    reason: t.reason,
                    at_ms: self.clock.now_ms(),
                };
                let new = self.store.add_takedown(&takedown)?;
                let queued = self.queue_takedowns(&takedown.content_id)?;
                Ok(AdminResponse::json(
                    if new { 201 } else { 200 },
                    &serde_json::json!({ "takedown": takedown, "queued": queued }),
                ))
            }
            ("GET", ["takedowns"]) => Ok(AdminResponse::ok(&self.store.takedowns()?)),
            _ => Err(not_found(format!(
                "no label route {} {}",
                req.method, req.path
            ))),
        }
    }

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
    fn queue_takedowns(&self, content_id: &str) -> Result<Vec<String>> {
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
    async fn deliver_forever(self: Arc<Self>) {
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

    /// What reconciliation needs to know of an ISRC the label issued.
    fn track_facts(&self, dsp: &str, isrc: &str, month: Month) -> Option<sales::TrackFacts> {
        let release_id = self.store.owner_of(&format!("isrc:{isrc}")).ok()??;
        let release = self.store.release(&release_id).ok()??;
        let track = release.tracks.iter().find(|t| t.isrc.as_str() == isrc)?;
        let live = self
            .jobs
            .get(&release.id, dsp)
            .ok()
            .flatten()
            .is_some_and(|j| {
                j.kind != DeliveryKind::Takedown
                    && matches!(j.state, JobState::Delivered | JobState::Acknowledged)
            })
            && self
                .store
                .takedown(&track.content_id)
                .ok()
                .flatten()
                .is_none();
        let platform_ms = self
            .royalty
            .as_ref()
            .and_then(|r| r.watched_ms(month, &track.content_id).ok())
            .unwrap_or(0);
        Some(sales::TrackFacts {
            content_id: track.content_id.clone(),
            territories: release.territories.clone(),
            live,
            platform_ms,
        })
    }

    fn release(&self, id: &str) -> Result<Release> {
        self.store
            .release(id)?
            .ok_or_else(|| not_found(format!("no release {id:?}")))
    }
}

impl Plugin for LabelPlugin {
    fn name(&self) -> &'static str {
        LABEL_PLUGIN_NAME
    }

    fn on_event(&self, _ev: &CoreEvent<'_>) -> Result<(), PluginError> {
        Ok(())
    }

    fn admin(&self, req: &AdminRequest) -> Option<Result<AdminResponse, PluginError>> {
        Some(self.route(req).map_err(|e| e.0))
    }
}

/// Jobs by state and bytes uploaded, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelStats {
    /// Delivery jobs by state ([`JobState::as_str`]).
    pub jobs: BTreeMap<&'static str, u64>,
    /// Bytes uploaded to DSPs since start.
    pub uploaded_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverRequest {
    dsps: Vec<String>,
}

/// A job as `GET releases/{id}/status` shows it.
fn job_status(j: &Job) -> serde_json::Value {
    serde_json::json!({
        "state": j.state.as_str(),
        "kind": j.kind,
        "batch_id": j.batch_id,
        "attempts": j.attempts,
        "last_error": j.last_error,
        "retry": j.retry,
        "queued_at": rfc3339(j.queued_ms),
        "delivered_at": j.delivered_ms.map(rfc3339),
        "acknowledged_at": j.acknowledged_ms.map(rfc3339),
        "ack": j.ack,
        "bytes": j.bytes,
    })
}
