//! A standby origin and failover (`[ha]`): origins that share a name elect their primary
//! through an etcd lease ([`election`]); only the primary writes (the write gate of
//! [`crate::core::writes`] is the fence), the others are standbys that take over when the
//! primary's lease expires. Every change of primary this node sees is logged, counted and,
//! with `notify_url`, POSTed to the operator as JSON.

pub mod election;
pub mod etcd;
pub mod follow;
pub mod log;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use tokio::sync::{oneshot, watch, Notify};

use crate::control::BoundAddrs;
use crate::core::writes::{BootTime, Standing};
use crate::core::Core;
use election::{Campaign, Claim, Election, Release};
use follow::{leader_of, Follower};
use log::ReplicationLog;
use source::Source;

/// How long a failed campaign waits before the next.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Longest a notification may take.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// The election of one origin.
#[derive(Debug)]
pub struct Ha {
    core: Arc<Core>,
    settings: mhc_config::Ha,
    claim: Claim,
    metrics: HaMetrics,
    /// The last (epoch, primary) this node reported, so each change is told once.
    told: Mutex<Option<(u64, String)>>,
    /// What this origin serves its standbys while primary.
    source: Arc<Source>,
    /// How it follows the primary while standby.
    follower: Arc<Follower>,
    /// A switchover an operator asked for, waiting for the primary's term to take it up.
    handover: Mutex<Option<oneshot::Sender<Vec<Step>>>>,
    /// Wakes the primary's term when a switchover is asked for.
    handover_asked: Notify,
}

/// One step of a planned switchover, as `mhc-node ha switchover` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// What was done.
    pub step: &'static str,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, for the operator.
    pub detail: String,
    /// Milliseconds since the switchover began.
    pub at_ms: u64,
}

/// A switchover under way: its steps so far.
struct Handover {
    started: std::time::Instant,
    steps: Vec<Step>,
    reply: oneshot::Sender<Vec<Step>>,
    /// The epoch being handed over.
    epoch: u64,
}

impl Handover {
    fn step(&mut self, step: &'static str, ok: bool, detail: String) {
        tracing::info!(step, ok, detail, "switchover");
        self.steps.push(Step {
            step,
            ok,
            detail,
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }

    fn finish(self) {
        let _ = self.reply.send(self.steps);
    }
}

/// How long a switchover waits for the standbys to hold every entry.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(10);
/// How long it waits for the new primary to answer as primary on its viewer plane.
const HEALTHY_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct HaMetrics {
    primary: Gauge,
    epoch: Gauge,
    changes: Counter,
    log_seq: Gauge,
}

/// Bytes of replication entries a primary keeps for its standbys.
const LOG_BYTES: usize = 64 << 20;

/// Mirrors the newest log position into `gauge` until the log is dropped.
async fn mirror_seq(mut seq: watch::Receiver<u64>, gauge: Gauge) {
    loop {
        gauge.set(i64::try_from(*seq.borrow_and_update()).unwrap_or(i64::MAX));
        if seq.changed().await.is_err() {
            return;
        }
    }
}

impl Ha {
    /// The election of `core`'s origin, whose planes listen at `addrs`, serving its log
    /// through `source` while primary and following the primary with `follower` while
    /// standby; `None` without `[ha]`.
    pub fn new(
        core: Arc<Core>,
        addrs: &BoundAddrs,
        source: Arc<Source>,
        follower: Arc<Follower>,
    ) -> Option<Arc<Self>> {
        let settings = core.config.ha.clone()?;
        let claim = Claim {
            peer_id: core.identity.peer_id().to_string(),
            incarnation: core.incarnation,
            http: addrs.http.to_string(),
            quic: addrs.quic.to_string(),
        };
        let metrics = HaMetrics::default();
        let r = &core.metrics;
        r.register(
            "mhc_ha_primary",
            "1 while this origin is the primary of its [ha] cluster",
            metrics.primary.clone(),
        );
        r.register(
            "mhc_ha_epoch",
            "The epoch of the primary this origin knows (the election key's create revision)",
            metrics.epoch.clone(),
        );
        r.register(
            "mhc_replication_log_seq",
            "Position of the newest entry of this primary's replication log (this term)",
            metrics.log_seq.clone(),
        );
        r.register(
            "mhc_ha_primary_changes",
            "Changes of primary this origin has seen",
            metrics.changes.clone(),
        );
        Some(Arc::new(Ha {
            core,
            settings,
            claim,
            metrics,
            told: Mutex::new(None),
            source,
            follower,
            handover: Mutex::new(None),
            handover_asked: Notify::new(),
        }))
    }

    /// Takes part in the election until shutdown; a primary revokes its lease on the way out,
    /// so a standby takes over at once.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let s = &self.settings;
        let mut election = match Election::new(&s.etcd, &s.name, s.lease_ttl) {
            Ok(e) => e,
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "no election: writes stay closed");
                return;
            }
        };
        tracing::info!(key = %election::election_key(&s.name), ttl = ?s.lease_ttl, "taking part in the origin election");
        // A switchover this origin is handing over, between its term's end and the next
        // primary's.
        let mut handing_over: Option<Handover> = None;
        // A closed sender (the node is gone) counts as shutdown too.
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            if handing_over.is_some() {
                // Let a standby take the vacant key first.
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
            match election.campaign(&self.claim).await {
                Ok(Campaign::Won {
                    lease,
                    epoch,
                    asked,
                    held_until,
                }) => {
                    // Nothing of the old primary lands once this origin writes.
                    let follower = Arc::clone(&self.follower);
                    let _ = tokio::task::spawn_blocking(move || follower.quiesce()).await;
                    // Each term keeps its own log: what a standby of this term applies.
                    let log = Arc::new(ReplicationLog::new(self.core.db.clone(), LOG_BYTES));
                    let mirror =
                        tokio::spawn(mirror_seq(log.subscribe(), self.metrics.log_seq.clone()));
                    self.core.writes.attach_log(Some(
                        Arc::clone(&log) as Arc<dyn crate::core::writes::UnitLog>
                    ));
                    self.source.set_term(Some((epoch, Arc::clone(&log))));
                    self.set(Standing::Primary { epoch }, Some(held_until));
                    if let Some(mut h) = handing_over.take() {
                        h.step(
                            "promote",
                            false,
                            format!("no standby took the lease; this origin is primary again (epoch {epoch})"),
                        );
                        h.finish();
                    }
                    let writes = &self.core.writes;
                    let release = tokio::select! {
                        release = election.hold(
                            lease,
                            epoch,
                            asked,
                            held_until,
                            |until| writes.renewed(epoch, until),
                            &mut shutdown,
                        ) => Some(release),
                        () = self.handover_asked.notified() => None,
                    };
                    let reply = if release.is_none() {
                        self.handover.lock().take()
                    } else {
                        None
                    };
                    let mut handover = reply.map(|reply| Handover {
                        started: std::time::Instant::now(),
                        steps: Vec::new(),
                        reply,
                        epoch,
                    });
                    // Close the gate and let the writes inside finish before the lease goes:
                    // revoking it is what lets a standby in.
                    self.set(Standing::Fenced { epoch }, None);
                    self.source.set_term(None);
                    let core = Arc::clone(&self.core);
                    let _ = tokio::task::spawn_blocking(move || drop(core.writes.pause())).await;
                    if let Some(h) = handover.as_mut() {
                        h.step(
                            "stop writes",
                            true,
                            format!("the write gate of epoch {epoch} is closed; writes inside it finished (log at {})", log.last_seq()),
                        );
                        let detail = match log.caught_up(CATCH_UP_WITHIN).await {
                            Some(standby) => (true, format!("standby {standby} holds all {} entries", log.last_seq())),
                            None => (false, format!("no standby acknowledged all {} entries within {CATCH_UP_WITHIN:?}; acknowledged writes are held by the standbys that were synced", log.last_seq())),
                        };
                        h.step("wait for catch-up", detail.0, detail.1);
                    }
                    self.core.writes.attach_log(None);
                    mirror.abort();
                    election.resign(lease).await;
                    if let Some(h) = handover.as_mut() {
                        h.step(
                            "release the lease",
                            true,
                            format!("lease of epoch {epoch} revoked"),
                        );
                    }
                    match release {
                        Some(Release::Shutdown) => return,
                        Some(Release::Lost(why)) => {
                            tracing::error!(epoch, why = %why, "lost the primary's lease: writes stopped");
                        }
                        None => handing_over = handover,
                    }
                }
                Ok(Campaign::Lost {
                    epoch,
                    primary,
                    lease,
                    revision,
                }) => {
                    let leader = leader_of(epoch, &primary.peer_id, &primary.quic);
                    let told = self.set(
                        Standing::Standby {
                            epoch,
                            primary: Some(primary.peer_id.clone()),
                        },
                        None,
                    );
                    if let Some(h) = handing_over.take() {
                        tokio::spawn(conclude(
                            h,
                            epoch,
                            primary,
                            told,
                            self.settings.notify_url.clone(),
                        ));
                    }
                    let stop_following = shutdown.clone();
                    let follow = async {
                        match leader {
                            Ok(leader) => self.follower.follow(leader, stop_following).await,
                            Err(err) => {
                                tracing::error!(error = %format!("{err:#}"), "cannot follow the primary's claim");
                                std::future::pending().await
                            }
                        }
                    };
                    let vacancy = election.await_vacancy(revision, lease, &mut shutdown);
                    tokio::select! {
                        () = vacancy => {}
                        () = follow => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "campaign failed");
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(RECONNECT_AFTER) => {}
                    }
                }
            }
        }
    }

    /// Moves the write gate to `standing`, and tells of a change of primary; the notification
    /// under way, if any.
    fn set(
        &self,
        standing: Standing,
        held_until: Option<BootTime>,
    ) -> Option<tokio::task::JoinHandle<anyhow::Result<()>>> {
        let me = &self.claim.peer_id;
        let primary = match &standing {
            Standing::Primary { epoch } => Some((*epoch, me.clone())),
            Standing::Standby {
                epoch,
                primary: Some(p),
            } => Some((*epoch, p.clone())),
            _ => None,
        };
        self.metrics
            .primary
            .set(i64::from(matches!(standing, Standing::Primary { .. })));
        self.metrics
            .epoch
            .set(i64::try_from(standing.epoch()).unwrap_or(i64::MAX));
        let event = json!({
            "event": "ha",
            "cluster": self.settings.name,
            "node": me,
            "state": standing.name(),
            "epoch": standing.epoch(),
            "primary": primary.as_ref().map(|(_, p)| p),
            "at_ms": self.core.clock.now_ms(),
        });
        self.core.writes.set_standing(standing, held_until);
        let Some(primary) = primary else {
            tracing::warn!(state = %event["state"], epoch = %event["epoch"], "ha standing changed");
            return None;
        };
        {
            let mut told = self.told.lock();
            if told.as_ref() == Some(&primary) {
                return None;
            }
            *told = Some(primary.clone());
        }
        self.metrics.changes.inc();
        tracing::info!(state = %event["state"], epoch = primary.0, primary = %primary.1, "primary changed");
        let url = self.settings.notify_url.clone()?;
        Some(tokio::spawn(async move {
            let sent = notify(&url, &event).await;
            if let Err(err) = &sent {
                tracing::warn!(url, error = %format!("{err:#}"), "notifying the change of primary");
            }
            sent
        }))
    }

    /// Runs a planned switchover from this primary to a synced standby: stop writes, wait for
    /// catch-up, release the lease so the standby is promoted, verify the new primary answers
    /// as primary, notify. Returns the steps as they went.
    ///
    /// # Errors
    /// This origin is not the primary, no standby is synced to take over, or a switchover is
    /// already under way; nothing changed.
    pub async fn switchover(&self) -> Result<Vec<Step>, String> {
        let Standing::Primary { epoch } = self.core.writes.standing() else {
            return Err(format!(
                "this origin is not the primary ({}); run the switchover at the primary",
                self.core.writes.standing().name()
            ));
        };
        let synced = self.source.current().map_or(0, |l| l.synced_followers());
        if synced == 0 {
            return Err(format!(
                "no standby is synced with this primary (epoch {epoch}) to take over; nothing changed"
            ));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut slot = self.handover.lock();
            if slot.is_some() {
                return Err("a switchover is already under way".into());
            }
            *slot = Some(tx);
        }
        self.handover_asked.notify_one();
        let within = self.settings.lease_ttl * 4 + CATCH_UP_WITHIN + HEALTHY_WITHIN;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(steps)) => Ok(steps),
            Ok(Err(_)) => Err("the election stopped during the switchover".into()),
            Err(_) => {
                self.handover.lock().take();
                Err(format!("the switchover did not finish within {within:?}"))
            }
        }
    }
}

/// The last steps of a switchover, once another origin holds the lease: it answers as
/// primary on its viewer plane, and the operator was told.
async fn conclude(
    mut h: Handover,
    epoch: u64,
    primary: Claim,
    told: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    notify_url: Option<String>,
) {
    h.step(
        "promote",
        epoch > h.epoch,
        format!("{} is primary in epoch {epoch}", primary.peer_id),
    );
    let url = format!("http://{}/v1/cluster", primary.http);
    let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
    let healthy = loop {
        let answer = get_json(&url).await;
        let seen = match &answer {
            Ok(v) => {
                let ha = &v["self"]["ha"];
                ha["state"] == "primary" && ha["epoch"].as_u64() == Some(epoch)
            }
            Err(_) => false,
        };
        if seen {
            break Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(match answer {
                Ok(v) => format!("it answers {}", v["self"]["ha"]),
                Err(e) => format!("{e:#}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match healthy {
        Ok(()) => h.step(
            "verify health",
            true,
            format!("{url} answers primary, epoch {epoch}"),
        ),
        Err(why) => h.step("verify health", false, format!("{url}: {why}")),
    }
    match (told, notify_url) {
        (Some(sent), Some(url)) => match sent.await {
            Ok(Ok(())) => h.step("notify", true, format!("the change was POSTed to {url}")),
            Ok(Err(e)) => h.step("notify", false, format!("{url}: {e:#}")),
            Err(e) => h.step("notify", false, format!("{url}: {e}")),
        },
        (_, None) => h.step("notify", true, "no [ha] notify_url set".into()),
        (None, Some(url)) => h.step(
            "notify",
            true,
            format!("{url} was already told of this primary"),
        ),
    }
    h.finish();
}

/// GETs `url` (http only) and reads its JSON answer (at most 1 MiB).
async fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = exchange(url, hyper::Method::GET, None).await?;
    anyhow::ensure!(status.is_success(), "answered {status}");
    Ok(serde_json::from_slice(&body)?)
}

/// POSTs `event` as JSON to `url` (http only; validated by the config).
async fn notify(url: &str, event: &serde_json::Value) -> anyhow::Result<()> {
    let (status, _) = exchange(url, hyper::Method::POST, Some(serde_json::to_vec(event)?)).await?;
    anyhow::ensure!(status.is_success(), "answered {status}");
    Ok(())
}

/// One HTTP/1.1 request to `url` (http only), bounded by [`NOTIFY_TIMEOUT`]; the status and
/// at most 1 MiB of the body.
async fn exchange(
    url: &str,
    method: hyper::Method,
    json: Option<Vec<u8>>,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let send = async {
        let stream = tokio::net::TcpStream::connect((authority.host(), port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json.unwrap_or_default())))?;
        let answer = sender.send_request(req).await?;
        let status = answer.status();
        let body = http_body_util::Limited::new(answer.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(NOTIFY_TIMEOUT, send)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {NOTIFY_TIMEOUT:?}"))?
}
