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
use tokio::sync::watch;

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
}

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
        // A closed sender (the node is gone) counts as shutdown too.
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
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
                    let writes = &self.core.writes;
                    let release = election
                        .hold(
                            lease,
                            epoch,
                            asked,
                            held_until,
                            |until| writes.renewed(epoch, until),
                            &mut shutdown,
                        )
                        .await;
                    // Close the gate and let the writes inside finish before the lease goes:
                    // revoking it is what lets a standby in.
                    self.set(Standing::Fenced { epoch }, None);
                    self.source.set_term(None);
                    let core = Arc::clone(&self.core);
                    let _ = tokio::task::spawn_blocking(move || drop(core.writes.pause())).await;
                    self.core.writes.attach_log(None);
                    mirror.abort();
                    election.resign(lease).await;
                    match release {
                        Release::Shutdown => return,
                        Release::Lost(why) => {
                            tracing::error!(epoch, why = %why, "lost the primary's lease: writes stopped");
                        }
                    }
                }
                Ok(Campaign::Lost {
                    epoch,
                    primary,
                    lease,
                    revision,
                }) => {
                    let leader = leader_of(epoch, &primary.peer_id, &primary.quic);
                    self.set(
                        Standing::Standby {
                            epoch,
                            primary: Some(primary.peer_id),
                        },
                        None,
                    );
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

    /// Moves the write gate to `standing`, and tells of a change of primary.
    fn set(&self, standing: Standing, held_until: Option<BootTime>) {
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
            return;
        };
        {
            let mut told = self.told.lock();
            if told.as_ref() == Some(&primary) {
                return;
            }
            *told = Some(primary.clone());
        }
        self.metrics.changes.inc();
        tracing::info!(state = %event["state"], epoch = primary.0, primary = %primary.1, "primary changed");
        if let Some(url) = self.settings.notify_url.clone() {
            tokio::spawn(async move {
                if let Err(err) = notify(&url, &event).await {
                    tracing::warn!(url, error = %format!("{err:#}"), "notifying the change of primary");
                }
            });
        }
    }
}

/// POSTs `event` as JSON to `url` (http only; validated by the config).
async fn notify(url: &str, event: &serde_json::Value) -> anyhow::Result<()> {
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
        let req = hyper::Request::post(uri.clone())
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(event)?)))?;
        // Only the status matters; the body is not read (whatever its size).
        let status = sender.send_request(req).await?.status();
        anyhow::ensure!(status.is_success(), "answered {status}");
        anyhow::Ok(())
    };
    tokio::time::timeout(NOTIFY_TIMEOUT, send)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {NOTIFY_TIMEOUT:?}"))?
}
