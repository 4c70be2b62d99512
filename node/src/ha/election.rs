//! One origin's side of the election on etcd: campaign for the key, hold its lease while
//! primary, wait for it to fall vacant while standby.
//!
//! The key `mhc/ha/<name>/primary` exists only while its holder's lease lives; it is created
//! with a transaction that succeeds only if the key does not exist, so at most one origin
//! holds it, and the revision at which it was created is the **epoch** (it only grows, and
//! etcd never hands out one revision twice). The holder renews the lease every third of its
//! time to live; each answer extends the instant until which the lease is *certainly* held —
//! the send time of the renewal plus the granted TTL, less a margin — and the write gate
//! refuses every write after that instant, whatever the tasks are doing. A standby can win
//! only once etcd has expired the lease, which is after that instant.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::etcd::{Change, Etcd};

/// What the election key holds: who the primary is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The primary's peer id.
    pub peer_id: String,
    /// Its incarnation when it won (tells a restarted holder's stale claim apart).
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
        /// The lease is certainly held until then.
        held_until: Instant,
    },
    /// Another origin holds it.
    Lost {
        /// Its epoch.
        epoch: u64,
        /// Who holds it.
        primary: Claim,
        /// The store revision the answer was read at (watch from the next one).
        revision: i64,
    },
}

/// Why holding the lease ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// The node is stopping; the lease was revoked so a standby takes over at once.
    Shutdown,
    /// The lease expired, could not be renewed in time, or the key was taken away.
    Lost(String),
}

/// One origin's view of the election of one cluster.
#[derive(Debug)]
pub struct Election {
    etcd: Etcd,
    key: Vec<u8>,
    ttl: Duration,
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
        })
    }

    /// How long before the earliest possible expiry of the lease writes stop: a fifth of the
    /// TTL, at least half a second (the longest a write that entered just before may take,
    /// and slack for the two clocks' rates).
    fn margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(500))
    }

    /// Tries once to become primary with `claim`. A claim of this node's own from an earlier
    /// term (a restart within the TTL, a term it was fenced in) is removed and the campaign
    /// tried again, so the key never names a primary that does not write.
    ///
    /// # Errors
    /// etcd cannot be reached or answers something unexpected.
    pub async fn campaign(&mut self, claim: &Claim) -> anyhow::Result<Campaign> {
        let value = serde_json::to_vec(claim)?;
        for _ in 0..3 {
            let sent = Instant::now();
            let (lease, granted) = self
                .etcd
                .lease_grant(self.ttl)
                .await
                .context("granting a lease")?;
            let answer = match self.etcd.create_if_absent(&self.key, &value, lease).await {
                Ok(a) => a,
                Err(err) => {
                    self.revoke(lease).await;
                    return Err(err).context("the campaign's transaction");
                }
            };
            if answer.created {
                return Ok(Campaign::Won {
                    lease,
                    epoch: u64::try_from(answer.revision)?,
                    held_until: sent + granted.saturating_sub(self.margin()),
                });
            }
            self.revoke(lease).await;
            // Deleted between the compare and the read: campaign again.
            let Some(kv) = answer.holder else { continue };
            let primary: Claim = serde_json::from_slice(&kv.value)
                .with_context(|| format!("the value of {}", String::from_utf8_lossy(&self.key)))?;
            // This node's own claim, from an earlier run or a term it lost the certainty of
            // (it writes nothing now, so nobody else is writing under that claim).
            if primary.peer_id == claim.peer_id {
                tracing::info!(
                    epoch = kv.create_revision,
                    "removing this node's claim from an earlier term"
                );
                self.etcd
                    .delete_if_created_at(&self.key, kv.create_revision)
                    .await?;
                self.revoke(kv.lease).await;
                continue;
            }
            return Ok(Campaign::Lost {
                epoch: u64::try_from(kv.create_revision)?,
                primary,
                revision: answer.revision,
            });
        }
        bail!("the election key kept changing under three campaigns in a row")
    }

    /// Holds the lease of `epoch` until it is lost or `stop` fires, telling `renewed` the new
    /// instant until which it is certainly held after each renewal. The key is watched too:
    /// an operator deleting it ends the term at once.
    pub async fn hold(
        &mut self,
        lease: i64,
        epoch: u64,
        mut held_until: Instant,
        renewed: impl Fn(Instant),
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Release {
        let period = self.ttl / 3;
        let epoch_rev = i64::try_from(epoch).unwrap_or(i64::MAX);
        let mut watch = match self.etcd.watch(&self.key, epoch_rev).await {
            Ok(w) => Some(w),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "watching the election key; renewing only");
                None
            }
        };
        let mut next_renewal = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    self.revoke(lease).await;
                    return Release::Shutdown;
                }
                changes = async {
                    match watch.as_mut() {
                        Some(w) => w.next().await,
                        None => std::future::pending().await,
                    }
                } => match changes {
                    Ok(Some(changes)) => {
                        let taken = changes.iter().any(|c| match c {
                            Change::Delete => true,
                            Change::Put { create_revision } => *create_revision != epoch_rev,
                        });
                        if taken {
                            self.revoke(lease).await;
                            return Release::Lost("the election key was deleted or replaced".into());
                        }
                    }
                    Ok(None) | Err(_) => watch = None,
                },
                () = tokio::time::sleep_until(next_renewal) => {
                    next_renewal += period;
                    let sent = Instant::now();
                    match self.etcd.lease_keep_alive(lease).await {
                        Ok(granted) if granted > Duration::ZERO => {
                            held_until = sent + granted.saturating_sub(self.margin());
                            renewed(held_until);
                        }
                        Ok(_) => return Release::Lost("the lease expired".into()),
                        Err(err) => {
                            tracing::warn!(error = %format!("{err:#}"), "renewing the lease");
                        }
                    }
                    if Instant::now() >= held_until {
                        return Release::Lost(format!(
                            "the lease could not be renewed within {:?}",
                            self.ttl
                        ));
                    }
                    if watch.is_none() {
                        watch = self.etcd.watch(&self.key, epoch_rev).await.ok();
                    }
                }
            }
        }
    }

    /// Waits until the key may be vacant: deleted after `revision`, the watch broken, or a
    /// while passed (then the caller campaigns again, which reads the holder afresh).
    pub async fn await_vacancy(
        &mut self,
        revision: i64,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) {
        const RECHECK: Duration = Duration::from_secs(30);
        let mut watch = match self.etcd.watch(&self.key, revision + 1).await {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "watching the election key");
                let _ = tokio::time::timeout(Duration::from_secs(1), stop.changed()).await;
                return;
            }
        };
        let deadline = tokio::time::sleep(RECHECK);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = &mut deadline => return,
                changes = watch.next() => match changes {
                    Ok(Some(changes)) if changes.contains(&Change::Delete) => return,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), stop.changed()).await;
                        return;
                    }
                },
            }
        }
    }

    /// Revokes `lease`, best effort (its TTL ends it anyway).
    async fn revoke(&mut self, lease: i64) {
        if let Err(err) = self.etcd.lease_revoke(lease).await {
            tracing::debug!(lease, error = %format!("{err:#}"), "revoking a lease failed; it expires by itself");
        }
    }
}
