//! One origin's side of the election on etcd: campaign for the key, hold its lease while
//! primary, wait for it to fall vacant while standby.
//!
//! The key `mhc/ha/<name>/primary` exists only while its holder's lease lives; it is created
//! with a transaction that succeeds only if the key does not exist, so at most one origin
//! holds it, and the revision at which it was created is the **epoch** (it only grows, and
//! etcd never hands out one revision twice). The holder renews the lease every third of its
//! time to live; each answer extends the instant until which the lease is *certainly* held —
//! the send time of the renewal plus the granted TTL, less a margin, on `CLOCK_BOOTTIME` — and
//! the write gate refuses every write after that instant, whatever the tasks are doing. Each
//! renewal also checks that the key is still the holder's (same create revision, same lease),
//! so a key deleted by hand ends the term at the next renewal.
//!
//! A standby campaigns only once the former holder's **lease** is gone, not merely its key:
//! a lease outlives its key when the key is deleted by hand, and its holder may write until it
//! notices. Leaving, a holder closes its gate and lets the writes in flight finish before it
//! revokes the lease — the revocation is what lets a standby in.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::etcd::{Change, Etcd};
use crate::core::writes::BootTime;

/// What the election key holds: who the primary is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The primary's peer id.
    pub peer_id: String,
    /// Its incarnation when it won.
    pub incarnation: u64,
    /// Its viewer plane.
    pub http: String,
    /// Its QUIC data plane.
    pub quic: String,
}

/// The result of one campaign.
#[derive(Debug)]
pub enum Campaign {
    /// This origin holds the key.
    Won {
        /// The lease to keep alive.
        lease: i64,
        /// The key's create revision.
        epoch: u64,
        /// When the lease was asked for (renewals are timed from it).
        asked: BootTime,
        /// The lease is certainly held until then.
        held_until: BootTime,
    },
    /// Another origin holds it.
    Lost {
        /// Its epoch.
        epoch: u64,
        /// Who holds it.
        primary: Claim,
        /// The holder's lease.
        lease: i64,
        /// The store revision the answer was read at (watch from the next one).
        revision: i64,
    },
}

/// Why holding the lease ended. The lease is not revoked yet: the caller closes its write
/// gate and drains it first, then calls [`Election::resign`].
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// The node is stopping.
    Shutdown,
    /// The lease expired, could not be renewed in time, or the key is no longer ours.
    Lost(String),
}

/// Leases this process remembers granting (to recognise its own claims).
const REMEMBERED_LEASES: usize = 16;

/// One origin's view of the election of one cluster.
#[derive(Debug)]
pub struct Election {
    etcd: Etcd,
    key: Vec<u8>,
    ttl: Duration,
    /// The leases this process was granted, newest last: a claim on one of them is this
    /// process's own from a term it has given up, and may be removed without waiting.
    granted: VecDeque<i64>,
}

/// The election key of the cluster `name`.
pub fn election_key(name: &str) -> String {
    format!("mhc/ha/{name}/primary")
}

impl Election {
    /// The election of `name` on the etcd cluster at `endpoints`, with leases of `ttl`.
    ///
    /// # Errors
    /// An endpoint is not an `http://host:port` URL.
    pub fn new(endpoints: &[String], name: &str, ttl: Duration) -> anyhow::Result<Self> {
        // A call that takes longer than a third of the TTL is as good as lost: the renewals
        // come that often.
        let etcd = Etcd::new(endpoints, (ttl / 3).max(Duration::from_millis(500)))?;
        Ok(Election {
            etcd,
            key: election_key(name).into_bytes(),
            ttl,
            granted: VecDeque::new(),
        })
    }

    /// How long before the earliest possible expiry of the lease writes stop: a fifth of the
    /// TTL, at least half a second (the longest a write that entered just before may take,
    /// and slack for the two clocks' rates).
    fn margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(500))
    }

    /// Until when a lease renewed (or granted) at `sent` for `granted` is certainly held. A
    /// TTL above the one asked for is not believed.
    fn held_until(&self, sent: BootTime, granted: Duration) -> BootTime {
        sent.after(granted.min(self.ttl).saturating_sub(self.margin()))
    }

    /// Tries once to become primary with `claim`. A claim on a lease this process was granted
    /// (a term it has given up) is removed and the campaign tried again; any other claim —
    /// another origin's, or this node's from an earlier run, whose lease may still be renewed
    /// by a process this one cannot see — is waited out.
    ///
    /// # Errors
    /// etcd cannot be reached or answers something unexpected.
    pub async fn campaign(&mut self, claim: &Claim) -> anyhow::Result<Campaign> {
        let value = serde_json::to_vec(claim)?;
        for _ in 0..3 {
            let asked = BootTime::now();
            let (lease, granted) = self
                .etcd
                .lease_grant(self.ttl)
                .await
                .context("granting a lease")?;
            self.granted.push_back(lease);
            if self.granted.len() > REMEMBERED_LEASES {
                self.granted.pop_front();
            }
            let answer = match self.etcd.create_if_absent(&self.key, &value, lease).await {
                Ok(a) => a,
                Err(err) => {
                    self.resign(lease).await;
                    return Err(err).context("the campaign's transaction");
                }
            };
            if answer.created {
                return Ok(Campaign::Won {
                    lease,
                    epoch: u64::try_from(answer.revision)?,
                    asked,
                    held_until: self.held_until(asked, granted),
                });
            }
            self.resign(lease).await;
            // Deleted between the compare and the read: campaign again.
            let Some(kv) = answer.holder else { continue };
            if self.granted.contains(&kv.lease) {
                tracing::info!(
                    epoch = kv.create_revision,
                    "removing this process's claim from a term it gave up"
                );
                self.etcd
                    .delete_if_created_at(&self.key, kv.create_revision)
                    .await?;
                self.resign(kv.lease).await;
                continue;
            }
            let primary: Claim = serde_json::from_slice(&kv.value)
                .with_context(|| format!("the value of {}", String::from_utf8_lossy(&self.key)))?;
            return Ok(Campaign::Lost {
                epoch: u64::try_from(kv.create_revision)?,
                primary,
                lease: kv.lease,
                revision: answer.revision,
            });
        }
        bail!("the election key kept changing under three campaigns in a row")
    }

    /// Holds the lease of `epoch` until it is lost or `stop` fires, telling `renewed` the new
    /// instant until which it is certainly held after each renewal. A renewal counts only if
    /// etcd renewed the lease *and* the key is still ours.
    pub async fn hold(
        &mut self,
        lease: i64,
        epoch: u64,
        asked: BootTime,
        mut held_until: BootTime,
        renewed: impl Fn(BootTime),
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Release {
        let period = self.ttl / 3;
        let epoch_rev = i64::try_from(epoch).unwrap_or(i64::MAX);
        // Renewals are timed from the grant, not from now: the campaign took some of the TTL.
        let since_asked = BootTime::now().since(asked);
        let mut next = tokio::time::Instant::now() + period.saturating_sub(since_asked);
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return Release::Shutdown;
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    let sent = BootTime::now();
                    let renewal = async {
                        let granted = self.etcd.lease_keep_alive(lease).await?;
                        if granted.is_zero() {
                            return anyhow::Ok(None);
                        }
                        let ours = self.etcd.key_held(&self.key, epoch_rev, lease).await?;
                        anyhow::Ok(ours.then_some(granted))
                    };
                    match renewal.await {
                        Ok(Some(granted)) => {
                            held_until = held_until.max(self.held_until(sent, granted));
                            renewed(held_until);
                            next += period;
                        }
                        Ok(None) => {
                            return Release::Lost(
                                "the lease expired or the election key is no longer ours".into(),
                            );
                        }
                        Err(err) => {
                            tracing::warn!(error = %format!("{err:#}"), "renewing the lease");
                            // Try again soon; the gate closes by itself at `held_until`.
                            next = tokio::time::Instant::now() + Duration::from_millis(250);
                        }
                    }
                    if BootTime::now() >= held_until {
                        return Release::Lost(format!(
                            "the lease could not be renewed within {:?}",
                            self.ttl
                        ));
                    }
                }
            }
        }
    }

    /// Waits until the key held on `lease` may be vacant: deleted after `revision` (or a
    /// TTL passed, or the watch broke), and then until `lease` itself is gone — bounded by
    /// two TTLs, after which the caller campaigns anyway (and loses if the key is held).
    pub async fn await_vacancy(
        &mut self,
        revision: i64,
        lease: i64,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) {
        let recheck = self.ttl.max(Duration::from_secs(2));
        match self.etcd.watch(&self.key, revision + 1).await {
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "watching the election key");
                let _ = tokio::time::timeout(Duration::from_secs(1), stop.changed()).await;
            }
            Ok(mut watch) => {
                let deadline = tokio::time::sleep(recheck);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        () = &mut deadline => break,
                        changes = watch.next() => match changes {
                            Ok(Some(changes)) if changes.contains(&Change::Delete) => break,
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break,
                        },
                    }
                }
            }
        }
        // The key may be gone while its lease lives on (deleted by hand): its holder writes
        // until its next renewal finds the key missing. Wait for the lease.
        let until = tokio::time::Instant::now() + 2 * self.ttl;
        while tokio::time::Instant::now() < until {
            if let Ok(None) = self.etcd.lease_time_to_live(lease).await {
                return;
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Revokes `lease`, best effort (its TTL ends it anyway). Call it only once nothing writes
    /// under the lease any more.
    pub async fn resign(&mut self, lease: i64) {
        if let Err(err) = self.etcd.lease_revoke(lease).await {
            tracing::debug!(lease, error = %format!("{err:#}"), "revoking a lease failed; it expires by itself");
        }
    }
}
