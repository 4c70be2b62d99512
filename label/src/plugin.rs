//! [`LabelPlugin`]: the `label` origin plugin and its admin routes under
//! `/admin/plugins/label/`.
//!
//! | route | what |
//! |---|---|
//! | `POST releases` | a [`NewRelease`] (JSON); answers the stored [`Release`] with its UPC and ISRCs |
//! | `GET releases`, `GET releases/{id}` | stored releases |
//! | `GET releases/{id}/ern?dsp=D[&kind=insert\|update\|takedown]` | the ERN 4.3 message for DSP `D` |
//! | `POST releases/{id}/deliver` | `{"dsps": [..]}`: queues a delivery to each (insert, update or `unchanged`) |
//! | `GET releases/{id}/status` | each DSP's delivery: state, kind, batch, attempts, last error, ACK |
//! | `POST takedowns`, `GET takedowns` | the takedown list (`{"content_id", "reason"}`); a takedown is sent to every DSP that has the release |
//! | `POST dsr/{dsp}` | a DDEX DSR sales report (`.tsv` or gzip): credited through royalty once per file |
//! | `GET reconciliation/{dsp}/{YYYY-MM}` | the DSP's reports for the month against deliveries, their own totals and the platform's plays |
//!
//! Deliveries run on a worker task (`worker.rs`); DSR imports in [`crate::sales`].

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use mhc_clock::Clock;
use mhc_origin::plugin::{AdminRequest, AdminResponse, CoreEvent, Plugin, PluginError};
use mhc_origin::royalty::{Month, Royalty};
use serde::Deserialize;

use crate::config::LabelConfig;
use crate::delivery::{DeliveryKind, Job, JobState, Jobs};
use crate::ern::{self, ErnDeal, ErnFile, ErnMessage, ErnRelease, ErnTrack, MessageKind, Party};
use crate::ids::{Icpn, Isrc};
use crate::media::{file_digest, MediaLibrary, TrackMedia};
use crate::release::{line_year, parse_date, NewRelease, Release, Track};
use crate::sales::{self, SalesError};
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
    pub(crate) config: LabelConfig,
    pub(crate) store: Store,
    pub(crate) jobs: Jobs,
    pub(crate) library: Arc<dyn MediaLibrary>,
    /// The royalty books DSR revenue is credited to (`None`: royalty disabled).
    pub(crate) royalty: Option<Arc<Royalty>>,
    pub(crate) clock: Clock,
    /// Wakes the worker when a delivery is queued.
    pub(crate) wake: tokio::sync::Notify,
    /// Bytes uploaded since start.
    pub(crate) uploaded_bytes: AtomicU64,
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

pub(crate) type Result<T, E = LabelError> = std::result::Result<T, E>;

pub(crate) fn bad(problem: impl Into<String>) -> LabelError {
    LabelError(PluginError::BadRequest(problem.into()))
}

pub(crate) fn not_found(what: impl Into<String>) -> LabelError {
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

    pub(crate) fn release(&self, id: &str) -> Result<Release> {
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
