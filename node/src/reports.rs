//! Play reports, the origin's royalty input: what this node served, per content and viewer
//! country, turned every `reports.report_interval_s` into signed batches that wait in a
//! persistent outbox until an origin acknowledges them.
//!
//! **Counting.** Every media segment served is counted (segments, bytes, media milliseconds
//! from the manifest's durations) under the viewer's country from the geo database (`"*"`
//! when unknown). A viewer session is one client address (its /64 for IPv6: one household or
//! phone, whatever user agents it rotates through), idle for at most [`SESSION_IDLE`]; a play
//! is a session that has been served 30 s of one content, counted once, as DSPs count. Each
//! entry also says how many sessions it was served to, so the origin can check that plays ≤
//! sessions ≤ segments served.
//!
//! **Exactly once.** A batch is signed and flushed to the outbox before the counts it holds
//! are forgotten; it is deleted only when an origin acknowledges it, which the origin does
//! only after storing it durably, de-duplicated by `(node, seq)`. A lost acknowledgement
//! means a resend that the origin recognises. While no origin can be reached (or in
//! emergency mode) batches wait on disk, at most `reports.max_outbox_batches`, the oldest
//! kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::HeaderMap;
use mhc_clock::Clock;
use mhc_origin::{PlayEntry, PlayReportBatch, SignedPlayReport};
use mhc_transport::{Request, ResponseHeader, MAX_PLAY_REPORT_BYTES};
use prometheus_client::metrics::counter::Counter;
use sled::transaction::{TransactionError, Transactional};
use tokio::sync::watch;

use crate::control::ClusterHandle;
use crate::core::metrics::{fixed_family, CountGauge, Metrics, OutcomeLabel};
use crate::core::Core;
use crate::fill::Filler;
use crate::geo::SharedGeo;
use crate::plugins::{Outcome, Plugins};
use parking_lot::Mutex;

/// A session that has not been served for this long is over; the next request starts a new one.
pub const SESSION_IDLE: Duration = Duration::from_secs(300);
/// Media time after which a session's viewing counts as a play.
pub const PLAY_THRESHOLD_MS: u64 = 30_000;
/// Sessions tracked at once; beyond it the least recently active is forgotten (bounded memory
/// under a flood of distinct clients).
const MAX_SESSIONS: usize = 200_000;
/// (content, country) pairs counted per period; usage of new pairs beyond it is dropped and
/// counted (bounded memory).
const MAX_PAIRS: usize = 100_000;
/// sled tree of the outbox: `seq` (u64 BE) → encoded signed report.
const OUTBOX_TREE: &str = "reports/outbox";
/// sled tree of the outbox's counters.
const META_TREE: &str = "reports/meta";
const NEXT_SEQ_KEY: &[u8] = b"next_seq";
/// Longest wait for one origin's answer to one batch; a dead origin must not hold the outbox.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is watching, as far as counting goes.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// ISO 3166-1 alpha-2, or `"*"`.
    pub country: String,
    /// Hash of the client address (its /64 for IPv6).
    pub session: u64,
}

/// The viewer of a request: address (through `trusted_proxies`), country (from `geo`),
/// session key.
pub fn viewer(
    geo: &SharedGeo,
    trusted_proxies: &[ipnet::IpNet],
    headers: &HeaderMap,
    remote: std::net::SocketAddr,
) -> Viewer {
    let forwarded: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(http::HeaderValue::as_bytes)
        .collect();
    let client = crate::routing::resolve_client(remote.ip(), forwarded, trusted_proxies);
    let country = geo
        .current()
        .and_then(|db| {
            db.lookup_ref(client.ip)
                .ok()
                .flatten()
                .and_then(|r| r.country.map(str::to_ascii_uppercase))
        })
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) && c != "ZZ")
        .map_or_else(
            || "*".to_owned(),
            |c| if c == "UK" { "GB".to_owned() } else { c },
        );
    Viewer {
        country,
        session: session_key(client.ip),
    }
}

/// The session key of a client address: the address itself for IPv4, its /64 for IPv6 (one
/// subscriber's prefix; the interface half rotates freely). The user agent plays no part: a
/// client cannot mint plays by changing it.
fn session_key(ip: std::net::IpAddr) -> u64 {
    let mut h = blake3::Hasher::new();
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => h.update(&v4.octets()),
        std::net::IpAddr::V6(v6) => h.update(&v6.octets()[..8]),
    };
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    segments: u64,
    bytes: u64,
    seconds_ms: u64,
    sessions: u64,
    plays: u64,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
        self.segments += other.segments;
        self.bytes += other.bytes;
        self.seconds_ms += other.seconds_ms;
        self.sessions += other.sessions;
        self.plays += other.plays;
    }
}

#[derive(Debug)]
struct Session {
    served_ms: u64,
    counted: bool,
    last: Instant,
    /// The period it was last counted among a pair's sessions in.
    counted_in: Option<u64>,
}

/// Usage of one (content, country) pair.
#[derive(Debug)]
struct PairUsage {
    content_id: String,
    country: String,
    usage: Usage,
}

/// The counts of the current period. Both maps are keyed by a 64-bit digest of what they count
/// (pair; session and content), so recording a segment allocates only for a new pair or session.
#[derive(Debug)]
struct Counts {
    period_start_ms: u64,
    /// Number of the current period (grows at every seal that empties the counts).
    period: u64,
    keys: std::collections::hash_map::RandomState,
    usage: HashMap<u64, PairUsage>,
    sessions: HashMap<u64, Session>,
}

/// Counters of the reporting pipeline, registered with the node's metrics.
#[derive(Debug)]
pub struct ReportMetrics {
    /// Batches written to the outbox.
    pub batches_written: Counter,
    /// Batches acknowledged by an origin.
    pub batches_acked: Counter,
    /// Batches dropped: outbox full, or refused for good by the origin.
    pub batches_dropped: Counter,
    /// Batches waiting in the outbox.
    pub outbox: CountGauge,
    /// Usage the bounds made us drop (pairs beyond the per-period bound); not exposed.
    pub dropped_usage: AtomicU64,
}

impl ReportMetrics {
    /// The counters, registered with `metrics`.
    fn new(metrics: &Metrics) -> Self {
        let (batches, [batches_written, batches_acked, batches_dropped]) =
            fixed_family(["written", "acked", "dropped"].map(|outcome| OutcomeLabel { outcome }));
        let outbox = CountGauge::default();
        metrics.register(
            "mhc_reports_batches",
            "Play-report batches of this node, by fate",
            batches,
        );
        metrics.register(
            "mhc_reports_outbox",
            "Play-report batches waiting for an origin",
            outbox.clone(),
        );
        Self {
            batches_written,
            batches_acked,
            batches_dropped,
            outbox,
            dropped_usage: AtomicU64::new(0),
        }
    }
}

/// The node's play counter and outbox.
#[derive(Debug)]
pub struct Reports {
    counts: Mutex<Counts>,
    outbox: sled::Tree,
    meta: sled::Tree,
    /// Serialises batch creation (sequence numbers).
    writer: Mutex<()>,
    clock: Clock,
    max_outbox: u64,
    /// Counters.
    pub metrics: ReportMetrics,
}

impl Reports {
    /// Opens the outbox in `db`; its counters join `metrics`.
    ///
    /// # Errors
    /// The trees cannot be opened.
    pub fn open(
        db: &sled::Db,
        max_outbox: u64,
        clock: Clock,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let outbox = db
            .open_tree(OUTBOX_TREE)
            .context("opening the report outbox")?;
        let metrics = ReportMetrics::new(metrics);
        metrics.outbox.set(outbox.len() as u64);
        Ok(Self {
            counts: Mutex::new(Counts {
                period_start_ms: clock.now_ms(),
                period: 0,
                keys: std::collections::hash_map::RandomState::new(),
                usage: HashMap::new(),
                sessions: HashMap::new(),
            }),
            outbox,
            meta: db
                .open_tree(META_TREE)
                .context("opening the report counters")?,
            writer: Mutex::new(()),
            clock,
            max_outbox,
            metrics,
        })
    }

    /// Counts one media segment served to `viewer`.
    pub fn record_segment(&self, content_id: &str, viewer: &Viewer, bytes: u64, duration_ms: u64) {
        let now = Instant::now();
        let mut c = self.counts.lock();
        let key = std::hash::BuildHasher::hash_one(&c.keys, (viewer.session, content_id));
        if !c.sessions.contains_key(&key) && c.sessions.len() >= MAX_SESSIONS {
            c.sessions
                .retain(|_, s| now.duration_since(s.last) < SESSION_IDLE);
            if c.sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = c
                    .sessions
                    .iter()
                    .min_by_key(|(_, s)| s.last)
                    .map(|(k, _)| *k)
                {
                    c.sessions.remove(&oldest);
                }
            }
        }
        let period = c.period;
        let fresh = || Session {
            served_ms: 0,
            counted: false,
            last: now,
            counted_in: None,
        };
        let session = c.sessions.entry(key).or_insert_with(fresh);
        if now.duration_since(session.last) >= SESSION_IDLE {
            *session = fresh();
        }
        session.last = now;
        session.served_ms += duration_ms;
        let new_play = !session.counted && session.served_ms >= PLAY_THRESHOLD_MS;
        if new_play {
            session.counted = true;
        }
        let new_session = session.counted_in != Some(period);
        session.counted_in = Some(period);
        let pair = std::hash::BuildHasher::hash_one(&c.keys, (content_id, viewer.country.as_str()));
        if !c.usage.contains_key(&pair) && c.usage.len() >= MAX_PAIRS {
            self.metrics.dropped_usage.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let u = &mut c
            .usage
            .entry(pair)
            .or_insert_with(|| PairUsage {
                content_id: content_id.to_owned(),
                country: viewer.country.clone(),
                usage: Usage::default(),
            })
            .usage;
        u.segments += 1;
        u.bytes += bytes;
        u.seconds_ms += duration_ms;
        u.sessions += u64::from(new_session);
        u.plays += u64::from(new_play);
    }

    /// Turns what was counted since the last call into signed batches in the outbox (flushed
    /// before the counts are forgotten). Returns the number of batches written.
    ///
    /// # Errors
    /// The outbox cannot be written; the counts are kept for the next call.
    pub fn seal(&self, key: &ed25519_dalek::SigningKey) -> anyhow::Result<usize> {
        let _writer = self.writer.lock();
        let now = self.clock.now_ms();
        // The counts leave the table at once, so segments served while the batches are signed
        // count in the next period rather than vanish; they come back if the outbox fails.
        let (start, taken) = {
            let mut c = self.counts.lock();
            // Idle sessions are over.
            let cutoff = Instant::now();
            c.sessions
                .retain(|_, s| cutoff.duration_since(s.last) < SESSION_IDLE);
            let start = std::mem::replace(&mut c.period_start_ms, now);
            if c.usage.is_empty() {
                return Ok(0);
            }
            c.period += 1;
            (start, std::mem::take(&mut c.usage))
        };
        let usage: Vec<PlayEntry> = taken
            .values()
            .map(|p| PlayEntry {
                content_id: p.content_id.clone(),
                country: p.country.clone(),
                segments: p.usage.segments,
                bytes: p.usage.bytes,
                seconds_ms: p.usage.seconds_ms,
                sessions: p.usage.sessions,
                plays: p.usage.plays,
            })
            .collect();
        match self.split_and_sign(key, start, now, usage) {
            Ok(batches) => Ok(batches.len()),
            Err(e) => {
                let mut c = self.counts.lock();
                c.period_start_ms = start;
                for (pair, p) in taken {
                    let u = &mut c.usage.entry(pair).or_insert(PairUsage {
                        usage: Usage::default(),
                        ..p
                    });
                    u.usage.add(&p.usage);
                }
                Err(e)
            }
        }
    }

    /// Signs `entries` as as few batches as fit a QUIC request, and stores them with the next
    /// sequence number in one transaction: either every batch is in the outbox or none is (and
    /// the caller puts the counts back). A flush that fails after the transaction is logged, not
    /// returned: the batches are in the outbox and sled writes them out later, so giving the
    /// counts back would count them twice.
    fn split_and_sign(
        &self,
        key: &ed25519_dalek::SigningKey,
        start: u64,
        end: u64,
        mut entries: Vec<PlayEntry>,
    ) -> anyhow::Result<Vec<u64>> {
        entries.sort_by(|a, b| (&a.content_id, &a.country).cmp(&(&b.content_id, &b.country)));
        let mut seq = self
            .meta
            .get(NEXT_SEQ_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes);
        let mut room = self.max_outbox.saturating_sub(self.outbox.len() as u64);
        let mut batches = Vec::new();
        let mut rest = entries.as_slice();
        while !rest.is_empty() {
            // Largest prefix that encodes within the request bound (halving on overflow).
            let mut take = rest.len();
            let encoded = loop {
                let batch = PlayReportBatch {
                    node: key.verifying_key().to_bytes(),
                    seq,
                    period_start_ms: start,
                    period_end_ms: end.max(start),
                    entries: rest[..take].to_vec(),
                };
                let bytes = SignedPlayReport::sign(batch, key)
                    .map_err(|e| anyhow::anyhow!("signing a play report: {e}"))?
                    .encode();
                if bytes.len() <= MAX_PLAY_REPORT_BYTES || take == 1 {
                    break bytes;
                }
                take = take.div_ceil(2);
            };
            rest = &rest[take..];
            if room == 0 {
                self.metrics.batches_dropped.inc();
                tracing::error!(
                    seq,
                    "play-report outbox full; batch dropped (the oldest are kept)"
                );
            } else {
                room -= 1;
                batches.push((seq, encoded));
            }
            seq += 1;
        }
        let next_seq = seq;
        let committed: Result<(), TransactionError<()>> =
            (&self.outbox, &self.meta).transaction(|(outbox, meta)| {
                for (seq, encoded) in &batches {
                    outbox.insert(&seq.to_be_bytes(), encoded.as_slice())?;
                }
                meta.insert(NEXT_SEQ_KEY, &next_seq.to_be_bytes())?;
                Ok(())
            });
        match committed {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(e.into()),
            Err(TransactionError::Abort(())) => anyhow::bail!("outbox transaction aborted"),
        }
        let flushed = crate::core::blocking(|| self.outbox.flush().and_then(|_| self.meta.flush()));
        if let Err(err) = flushed {
            tracing::error!(
                error = %err,
                "flushing the play-report outbox failed; its batches stay and are written later"
            );
        }
        self.metrics.batches_written.inc_by(batches.len() as u64);
        self.metrics.outbox.set(self.outbox.len() as u64);
        Ok(batches.into_iter().map(|(seq, _)| seq).collect())
    }

    /// The batches waiting, oldest first.
    pub fn pending(&self) -> Vec<(u64, Vec<u8>)> {
        self.outbox
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                Some((u64::from_be_bytes(k.as_ref().try_into().ok()?), v.to_vec()))
            })
            .collect()
    }

    /// Deletes an acknowledged (or refused for good) batch, durably.
    ///
    /// # Errors
    /// The outbox cannot be written.
    pub fn remove(&self, seq: u64) -> anyhow::Result<()> {
        self.outbox.remove(seq.to_be_bytes())?;
        crate::core::flush(&self.outbox)?;
        self.metrics.outbox.set(self.outbox.len() as u64);
        Ok(())
    }
}

/// What the reporting task needs: the counts and outbox, the node key, who to deliver to and
/// how.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared state (node key, mode, config).
    pub core: Arc<Core>,
    /// The counts and the outbox.
    pub reports: Arc<Reports>,
    /// Where the origins are.
    pub cluster: ClusterHandle,
    /// The QUIC client.
    pub filler: Arc<Filler>,
    /// At an origin, its own inbox.
    pub plugins: Option<Arc<Plugins>>,
}

impl Delivery {
    /// Seals a batch every `reports.report_interval_s` and, separately, delivers the outbox to
    /// an origin, until shutdown (when it seals once more). Sealing never waits for delivery:
    /// an unreachable origin must not keep counts in memory, where a crash would lose them.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let interval = self.core.config.reports.interval;
        let (sealed_tx, mut sealed_rx) = watch::channel(());
        let deliverer = {
            let this = self.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    this.deliver().await;
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = sealed_rx.changed() => {}
                        () = tokio::time::sleep(interval) => {}
                    }
                }
            })
        };
        loop {
            let stopping = tokio::select! {
                _ = shutdown.changed() => true,
                () = tokio::time::sleep(interval) => false,
            };
            let sealed = {
                let (reports, core) = (Arc::clone(&self.reports), Arc::clone(&self.core));
                tokio::task::spawn_blocking(move || reports.seal(core.identity.signing_key())).await
            };
            match sealed {
                Ok(Ok(n)) if n > 0 => {
                    tracing::debug!(batches = n, "play reports sealed");
                    let _ = sealed_tx.send(());
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = %format!("{err:#}"), "sealing play reports")
                }
                Err(err) => tracing::error!(error = %err, "sealing play reports"),
            }
            if stopping {
                break;
            }
        }
        deliverer.abort();
    }

    /// Sends every waiting batch to the first origin that takes them.
    async fn deliver(&self) {
        let pending = self.reports.pending();
        if pending.is_empty() {
            return;
        }
        if self.core.emergency.is_emergency() {
            tracing::debug!(waiting = pending.len(), "emergency mode: play reports wait");
            return;
        }
        // An origin with plugins takes its own reports directly — while it accepts writes; a
        // standby sends them to the primary like an edge.
        if let Some(plugins) = self
            .plugins
            .as_ref()
            .filter(|_| self.core.writes.may_write().is_ok())
        {
            for (seq, bytes) in pending {
                let outcome = plugins.ingest_encoded(bytes).await;
                if !self.settle(seq, outcome) {
                    break;
                }
            }
            return;
        }
        for origin in self.cluster.origins() {
            let mut delivered_all = true;
            for (seq, bytes) in &pending {
                let response = tokio::time::timeout(
                    DELIVERY_TIMEOUT,
                    self.filler.request(
                        origin.quic,
                        Some(origin.peer_id),
                        Request::PutPlayReport {
                            report: bytes.clone(),
                        },
                    ),
                )
                .await;
                let outcome = match response {
                    Ok(Ok(ResponseHeader::ReportAck { .. })) => Outcome::Acked,
                    Ok(Ok(ResponseHeader::Error { message })) => Outcome::Refused(message),
                    Ok(Ok(other)) => Outcome::Later(format!("{other:?}")),
                    Ok(Err(err)) => Outcome::Later(err.to_string()),
                    Err(_) => Outcome::Later(format!("no answer within {DELIVERY_TIMEOUT:?}")),
                };
                if !self.settle(*seq, outcome) {
                    delivered_all = false;
                    break;
                }
            }
            if delivered_all {
                return;
            }
        }
    }

    /// Applies an outcome; `false` means stop sending for now.
    fn settle(&self, seq: u64, outcome: Outcome) -> bool {
        let reports = &self.reports;
        let m = &reports.metrics;
        match outcome {
            Outcome::Acked => {
                m.batches_acked.inc();
                if let Err(err) = reports.remove(seq) {
                    tracing::error!(seq, error = %format!("{err:#}"), "removing an acknowledged report");
                    return false;
                }
                true
            }
            Outcome::Refused(why) => {
                m.batches_dropped.inc();
                tracing::error!(seq, why = %why, "play report refused by the origin; dropped");
                let _ = reports.remove(seq);
                true
            }
            Outcome::Later(why) => {
                tracing::debug!(seq, why = %why, "play report not delivered; kept for later");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(country: &str, session: u64) -> Viewer {
        Viewer {
            country: country.into(),
            session,
        }
    }

    #[test]
    fn a_play_is_thirty_seconds_of_one_session_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::core::test_db(dir.path());
        let r = Reports::open(&db, 10, Clock::system(), &Metrics::default()).unwrap();
        for _ in 0..20 {
            r.record_segment("song", &viewer("DE", 1), 1000, 2_000);
        }
        for _ in 0..3 {
            r.record_segment("song", &viewer("DE", 2), 1000, 2_000);
        }
        let c = r.counts.lock();
        let u = c
            .usage
            .values()
            .find(|p| p.content_id == "song" && p.country == "DE")
            .unwrap()
            .usage;
        assert_eq!(u.segments, 23);
        assert_eq!(u.seconds_ms, 46_000);
        assert_eq!(
            u.plays, 1,
            "40 s by one session is one play, 6 s by another is none"
        );
    }

    #[test]
    fn sessions_are_counted_once_per_period_and_bound_the_plays() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::core::test_db(dir.path());
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let r = Reports::open(&db, 10, Clock::system(), &Metrics::default()).unwrap();
        for session in 1..=3 {
            for _ in 0..4 {
                r.record_segment("song", &viewer("DE", session), 1000, 10_000);
            }
        }
        r.seal(&key).unwrap();
        // The same three go on watching in the next period: counted again there, no new play.
        for session in 1..=3 {
            r.record_segment("song", &viewer("DE", session), 1000, 10_000);
        }
        r.seal(&key).unwrap();
        let entries: Vec<PlayEntry> = r
            .pending()
            .iter()
            .map(|(_, b)| SignedPlayReport::decode(b).unwrap().batch.entries[0].clone())
            .collect();
        assert_eq!(
            (entries[0].segments, entries[0].sessions, entries[0].plays),
            (12, 3, 3)
        );
        assert_eq!(
            (entries[1].segments, entries[1].sessions, entries[1].plays),
            (3, 3, 0)
        );
    }

    #[test]
    fn a_session_is_an_address_or_an_ipv6_64_whatever_the_user_agent() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            session_key(ip("2001:db8:1:2::1")),
            session_key(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_ne!(
            session_key(ip("2001:db8:1:2::1")),
            session_key(ip("2001:db8:1:3::1"))
        );
        assert_ne!(session_key(ip("192.0.2.1")), session_key(ip("192.0.2.2")));
        assert_eq!(
            session_key(ip("192.0.2.1")),
            session_key(ip("::ffff:192.0.2.1"))
        );
        let geo = SharedGeo::default();
        let remote: std::net::SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let as_agent = |ua: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::USER_AGENT, ua.parse().unwrap());
            super::viewer(&geo, &[], &h, remote).session
        };
        assert_eq!(as_agent("player/1"), as_agent("player/2"));
    }

    #[test]
    fn sealed_batches_survive_reopen_and_sequence_numbers_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let seqs: Vec<u64> = {
            let db = crate::core::test_db(dir.path());
            let r = Reports::open(&db, 1000, Clock::system(), &Metrics::default()).unwrap();
            // Enough pairs to need several batches.
            for i in 0..300 {
                r.record_segment(&format!("content-{i}"), &viewer("FR", i), 500, 2_000);
            }
            assert!(r.seal(&key).unwrap() > 1);
            assert_eq!(r.seal(&key).unwrap(), 0, "nothing new, nothing sealed");
            r.pending().iter().map(|(s, _)| *s).collect()
        };
        let db = crate::core::test_db(dir.path());
        let r = Reports::open(&db, 1000, Clock::system(), &Metrics::default()).unwrap();
        let pending = r.pending();
        assert_eq!(pending.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs);
        let mut entries = 0;
        for (seq, bytes) in &pending {
            assert!(bytes.len() <= MAX_PLAY_REPORT_BYTES);
            let report = SignedPlayReport::decode(bytes).unwrap();
            report.verify().unwrap();
            assert_eq!(report.batch.seq, *seq);
            entries += report.batch.entries.len();
        }
        assert_eq!(entries, 300);
        r.remove(seqs[0]).unwrap();
        r.record_segment("again", &viewer("FR", 1), 1, 1);
        r.seal(&key).unwrap();
        let last = r.pending().last().unwrap().0;
        assert!(
            last > *seqs.last().unwrap(),
            "sequence numbers continue after a restart"
        );
    }

    #[test]
    fn a_full_outbox_keeps_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::core::test_db(dir.path());
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let r = Reports::open(&db, 2, Clock::system(), &Metrics::default()).unwrap();
        for round in 0..4u64 {
            r.record_segment("song", &viewer("US", round), 1, 1);
            r.seal(&key).unwrap();
        }
        let seqs: Vec<u64> = r.pending().iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(r.metrics.batches_dropped.get(), 2);
    }
}
