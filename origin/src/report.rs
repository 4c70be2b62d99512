//! Play reports: what one node served, per content and viewer country, over one period — the
//! royalty input a node sends to its origin.
//!
//! A node aggregates its viewer sessions into a [`PlayReportBatch`], signs it with its ed25519
//! node key into a [`SignedPlayReport`] and keeps it in its outbox until the origin acknowledges
//! it. The wire form ([`SignedPlayReport::encode`]) is
//!
//! ```text
//! version (1 byte, PLAY_REPORT_FORMAT_VERSION) ‖ postcard(batch) ‖ ed25519 signature (64 bytes)
//! ```
//!
//! and the signature covers [`PLAY_REPORT_DOMAIN_TAG`] ‖ postcard(batch). Decoding is canonical:
//! one batch has exactly one encoding, so a report's bytes (and their hash) identify it.
//!
//! `seq` numbers the batches of one node, strictly increasing; the origin de-duplicates by
//! (`node`, `seq`), so a node may resend a batch as often as it needs to until it is acknowledged.

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::royalty::{ANY_COUNTRY, MAX_TIME_MS};

/// Domain-separation tag in front of every signed batch, so that a node's signature over a play
/// report can never be replayed as its signature over anything else (manifests, gossip...).
pub const PLAY_REPORT_DOMAIN_TAG: &[u8] = b"mhc-play-report-v2";

/// Version byte in front of every encoded report. Postcard has no field names, so any change to
/// the fields of [`PlayReportBatch`] or [`PlayEntry`] is a new format and must bump this.
/// (2: entries count the sessions served, so plays can be checked against them.)
pub const PLAY_REPORT_FORMAT_VERSION: u8 = 2;

/// Largest encoded report, in bytes. A realistic entry is 30–40 bytes, so 1 MiB holds the
/// [`MAX_PLAY_ENTRIES`] of a busy node with room to spare, while bounding what one unauthenticated
/// message can make the origin decode.
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// Most entries in one batch. A node serving 10,000 distinct (content, country) pairs in one
/// period splits them over several batches; the bound keeps one royalty transaction small.
pub const MAX_PLAY_ENTRIES: usize = 10_000;

/// Length of an ed25519 signature.
const SIGNATURE_LEN: usize = 64;

/// What one content was served for in one viewer country during the batch's period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayEntry {
    /// The content served: a manifest content slug, `[a-z0-9][a-z0-9_-]{0,63}`.
    pub content_id: String,
    /// Viewer country, ISO 3166-1 alpha-2 (two uppercase letters, `GB` not `UK`), or `"*"` when
    /// unknown.
    pub country: String,
    /// Media segments served.
    pub segments: u64,
    /// Bytes served (payload only).
    pub bytes: u64,
    /// Media milliseconds served, summed from the served segments' durations.
    pub seconds_ms: u64,
    /// Viewer sessions served this content during the period: distinct client addresses (a
    /// /64 for IPv6), each idle for at most five minutes between segments.
    pub sessions: u64,
    /// Viewer sessions that watched at least 30 s of this content (counted once, in the period
    /// in which they crossed 30 s).
    pub plays: u64,
}

/// One node's usage over one period: the signed part of a [`SignedPlayReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayReportBatch {
    /// Ed25519 public key of the reporting node (its node id); the key the batch is signed with.
    pub node: [u8; 32],
    /// Batch number of this node, strictly increasing; with `node`, the de-duplication key.
    pub seq: u64,
    /// Start of the period, Unix milliseconds.
    pub period_start_ms: u64,
    /// End of the period, Unix milliseconds, `>= period_start_ms`.
    pub period_end_ms: u64,
    /// Usage per (content, country), each pair at most once; at most [`MAX_PLAY_ENTRIES`].
    pub entries: Vec<PlayEntry>,
}

/// A [`PlayReportBatch`] with its node's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPlayReport {
    /// The signed batch.
    pub batch: PlayReportBatch,
    /// Ed25519 signature by `batch.node` over [`PLAY_REPORT_DOMAIN_TAG`] ‖ postcard(`batch`).
    pub signature: [u8; 64],
}

/// Why a play report was refused. Everything but [`ReportError::Storage`] and
/// [`ReportError::Corrupt`] is the sender's fault and fails the same way if resent unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The encoded report is longer than [`MAX_REPORT_BYTES`].
    #[error("report is {len} bytes, at most {max} allowed")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes end before the report does.
    #[error("report is truncated")]
    Truncated,
    /// The first byte names a format this build does not know.
    #[error("unknown play report format version {0}")]
    UnknownVersion(u8),
    /// The batch does not decode.
    #[error("report does not decode: {0}")]
    Decode(String),
    /// Bytes follow the signature.
    #[error("{0} bytes follow the report")]
    TrailingBytes(usize),
    /// The batch decodes, but from a non-canonical encoding (over-long integers): two byte
    /// strings must never be the same report.
    #[error("report encoding is not canonical")]
    NotCanonical,
    /// The figures cannot be true (more plays than sessions, more sessions than segments
    /// served, or more media time or bytes than the segments served hold); `field` names one.
    #[error("implausible {field}: {problem}")]
    Implausible {
        /// Path of the offending field.
        field: String,
        /// Why it cannot be, in words.
        problem: String,
    },
    /// A field breaks a rule; `field` names it (`entries[3].country`...).
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong, in words.
        problem: String,
    },
    /// `node` is not a valid ed25519 public key.
    #[error("node key {0} is not an ed25519 public key")]
    BadNodeKey(String),
    /// The signature is not the node's over this batch.
    #[error("signature of report {reference} does not verify")]
    BadSignature {
        /// The report's reference, `play:<node hex>:<seq>`.
        reference: String,
    },
    /// The node is not enrolled in the cluster, or its certificate grants no role that
    /// reports plays (checked by the origin's inbox).
    #[error("node {0} is not an enrolled member of this cluster")]
    NotMember(String),
    /// The node already sent a different batch under this seq (its state was reset?). Refused:
    /// acknowledging it would drop its usage, applying it would count a seq twice.
    #[error("node {node} already reported a different batch as seq {seq}")]
    SeqReused {
        /// The node, hex.
        node: String,
        /// The reused seq.
        seq: u64,
    },
    /// The origin's database failed; resending later may succeed. Nothing was stored.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record does not decode: the database is damaged.
    #[error("corrupt play-report inbox: {0}")]
    Corrupt(String),
}

impl ReportError {
    /// The same error, its field named relative to the batch (`entries[i].field`).
    pub fn in_entry(self, i: usize) -> Self {
        match self {
            ReportError::Invalid { field, problem } => ReportError::Invalid {
                field: format!("entries[{i}].{field}"),
                problem,
            },
            ReportError::Implausible { field, problem } => ReportError::Implausible {
                field: format!("entries[{i}].{field}"),
                problem,
            },
            other => other,
        }
    }

    /// Whether the node should keep the report and resend it later (only storage failures; every
    /// other error would repeat).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReportError::Storage(_))
    }

    /// Metric label of a refusal (`mhc_reports_rejected_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            ReportError::TooLarge { .. }
            | ReportError::Truncated
            | ReportError::UnknownVersion(_)
            | ReportError::Decode(_)
            | ReportError::TrailingBytes(_)
            | ReportError::NotCanonical => "malformed",
            ReportError::Invalid { .. } => "invalid",
            ReportError::Implausible { .. } => "implausible",
            ReportError::BadNodeKey(_) | ReportError::BadSignature { .. } => "signature",
            ReportError::NotMember(_) => "not_enrolled",
            ReportError::SeqReused { .. } => "seq_reused",
            ReportError::Storage(_) | ReportError::Corrupt(_) => "storage",
        }
    }
}

fn implausible(field: impl Into<String>, problem: impl Into<String>) -> ReportError {
    ReportError::Implausible {
        field: field.into(),
        problem: problem.into(),
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ReportError {
    ReportError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks a viewer country: `"*"` or two uppercase ASCII letters, refusing `UK` (reserved; the
/// United Kingdom is `GB`) exactly as the royalty rates do, so that a report the inbox accepts is
/// one the royalty module can book.
fn check_country(code: &str) -> Result<(), String> {
    if code == ANY_COUNTRY {
        return Ok(());
    }
    if code == "UK" {
        return Err("the ISO 3166 code for the United Kingdom is GB".to_string());
    }
    let b = code.as_bytes();
    if b.len() != 2 || !b.iter().all(u8::is_ascii_uppercase) {
        return Err(format!(
            "{code:?} is not \"*\" or a country code (two uppercase letters, ISO 3166-1 alpha-2)"
        ));
    }
    Ok(())
}

impl PlayEntry {
    /// Checks the content id and the country, and that the figures agree with each other: a
    /// play is a session, and a session was served at least one segment in the period.
    ///
    /// # Errors
    /// [`ReportError::Invalid`] or [`ReportError::Implausible`] naming the field relative to
    /// the entry (`content_id`, `country`, `plays`, `sessions`).
    pub fn validate(&self) -> Result<(), ReportError> {
        mhc_manifest::ContentId::new(self.content_id.as_str())
            .map_err(|e| invalid("content_id", e.to_string()))?;
        check_country(&self.country).map_err(|p| invalid("country", p))?;
        if self.plays > self.sessions {
            return Err(implausible(
                "plays",
                format!("{} plays by {} sessions", self.plays, self.sessions),
            ));
        }
        if self.sessions > self.segments {
            return Err(implausible(
                "sessions",
                format!(
                    "{} sessions served {} segments",
                    self.sessions, self.segments
                ),
            ));
        }
        Ok(())
    }

    /// Checks the figures against what the content is: no more media time than `segments`
    /// of the longest segment (`max_duration_ms`), no more bytes than `segments` of the
    /// largest (`max_size`).
    ///
    /// # Errors
    /// [`ReportError::Implausible`] naming `seconds_ms` or `bytes`.
    pub fn check_against(&self, max_duration_ms: u64, max_size: u64) -> Result<(), ReportError> {
        let most_ms = self.segments.saturating_mul(max_duration_ms);
        if self.seconds_ms > most_ms {
            return Err(implausible(
                "seconds_ms",
                format!(
                    "{} ms of media in {} segments of at most {max_duration_ms} ms",
                    self.seconds_ms, self.segments
                ),
            ));
        }
        let most_bytes = self.segments.saturating_mul(max_size);
        if self.bytes > most_bytes {
            return Err(implausible(
                "bytes",
                format!(
                    "{} bytes in {} segments of at most {max_size} bytes",
                    self.bytes, self.segments
                ),
            ));
        }
        Ok(())
    }
}

impl PlayReportBatch {
    /// Checks every rule: at most [`MAX_PLAY_ENTRIES`] entries, a period that does not end
    /// before it starts nor after year 9999 (milliseconds, not seconds or microseconds), valid
    /// entries, and no (content, country) pair twice.
    ///
    /// # Errors
    /// [`ReportError::Invalid`] naming the first offending field.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.entries.len() > MAX_PLAY_ENTRIES {
            return Err(invalid(
                "entries",
                format!(
                    "{} entries, at most {MAX_PLAY_ENTRIES} per batch",
                    self.entries.len()
                ),
            ));
        }
        if self.period_start_ms > self.period_end_ms {
            return Err(invalid("period_start_ms", "is after period_end_ms"));
        }
        if self.period_end_ms > MAX_TIME_MS {
            return Err(invalid(
                "period_end_ms",
                "is past year 9999 (milliseconds expected)",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            e.validate().map_err(|err| err.in_entry(i))?;
            if !seen.insert((e.content_id.as_str(), e.country.as_str())) {
                return Err(invalid(
                    format!("entries[{i}]"),
                    format!(
                        "content {:?} in country {:?} is listed twice",
                        e.content_id, e.country
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The postcard encoding of the batch (what follows the version byte on the wire).
    pub fn to_postcard(&self) -> Vec<u8> {
        // Integers, strings and byte arrays always encode into a Vec.
        postcard::to_allocvec(self).expect("postcard encoding of a play report")
    }

    /// The exact bytes the signature covers: [`PLAY_REPORT_DOMAIN_TAG`] ‖ postcard(batch).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let out = PLAY_REPORT_DOMAIN_TAG.to_vec();
        postcard::to_extend(self, out).expect("postcard encoding of a play report")
    }

    /// The batch's idempotency reference in the royalty accounts: `play:<node hex>:<seq>`.
    pub fn reference(&self) -> String {
        format!("play:{}:{}", hex::encode(self.node), self.seq)
    }
}

impl SignedPlayReport {
    /// Signs `batch` with the node key `key`, setting `batch.node` to the key's public key (a
    /// batch is always signed by the node it names).
    ///
    /// # Errors
    /// [`ReportError::Invalid`] from [`PlayReportBatch::validate`]: an invalid batch is refused
    /// here, at the node, rather than by the origin after a round trip.
    pub fn sign(mut batch: PlayReportBatch, key: &SigningKey) -> Result<Self, ReportError> {
        batch.node = key.verifying_key().to_bytes();
        batch.validate()?;
        let signature = key.sign(&batch.signing_bytes()).to_bytes();
        Ok(SignedPlayReport { batch, signature })
    }

    /// Checks the batch's rules and that the signature is `batch.node`'s over it (strict
    /// ed25519: no malleable signatures, no small-order keys).
    ///
    /// # Errors
    /// [`ReportError::Invalid`], [`ReportError::BadNodeKey`], [`ReportError::BadSignature`].
    pub fn verify(&self) -> Result<(), ReportError> {
        self.batch.validate()?;
        let key = VerifyingKey::from_bytes(&self.batch.node)
            .map_err(|_| ReportError::BadNodeKey(hex::encode(self.batch.node)))?;
        key.verify_strict(
            &self.batch.signing_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| ReportError::BadSignature {
            reference: self.reference(),
        })
    }

    /// The wire form: [`PLAY_REPORT_FORMAT_VERSION`] ‖ postcard(batch) ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 64 + 40 * self.batch.entries.len() + SIGNATURE_LEN);
        out.push(PLAY_REPORT_FORMAT_VERSION);
        let mut out = postcard::to_extend(&self.batch, out).expect("postcard encoding");
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the wire form, insisting on the canonical encoding of a valid batch. The
    /// signature is *not* checked here: call [`verify`](Self::verify) (the origin's inbox does).
    ///
    /// # Errors
    /// [`ReportError::TooLarge`], [`ReportError::Truncated`], [`ReportError::UnknownVersion`],
    /// [`ReportError::Decode`], [`ReportError::TrailingBytes`], [`ReportError::NotCanonical`],
    /// or [`ReportError::Invalid`] for a batch that breaks a rule.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge {
                len: bytes.len(),
                max: MAX_REPORT_BYTES,
            });
        }
        let (&version, body) = bytes.split_first().ok_or(ReportError::Truncated)?;
        if version != PLAY_REPORT_FORMAT_VERSION {
            return Err(ReportError::UnknownVersion(version));
        }
        let (batch, rest) =
            postcard::take_from_bytes::<PlayReportBatch>(body).map_err(|e| match e {
                postcard::Error::DeserializeUnexpectedEnd => ReportError::Truncated,
                other => ReportError::Decode(other.to_string()),
            })?;
        if rest.len() < SIGNATURE_LEN {
            return Err(ReportError::Truncated);
        }
        if rest.len() > SIGNATURE_LEN {
            return Err(ReportError::TrailingBytes(rest.len() - SIGNATURE_LEN));
        }
        // Postcard accepts over-long varints; re-encoding catches them.
        let batch_len = body.len() - SIGNATURE_LEN;
        if batch.to_postcard() != body[..batch_len] {
            return Err(ReportError::NotCanonical);
        }
        batch.validate()?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(rest);
        Ok(SignedPlayReport { batch, signature })
    }

    /// The batch's royalty reference, `play:<node hex>:<seq>`.
    pub fn reference(&self) -> String {
        self.batch.reference()
    }

    /// BLAKE3 of the encoded report: tells a resend (same digest) from a different batch under a
    /// reused seq.
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    pub(crate) fn play(content: &str, country: &str, seconds_ms: u64, plays: u64) -> PlayEntry {
        PlayEntry {
            content_id: content.into(),
            country: country.into(),
            segments: (seconds_ms / 4_000).max(plays),
            bytes: seconds_ms * 250,
            seconds_ms,
            sessions: plays,
            plays,
        }
    }

    /// A signed report of node `n` with `seq` and the given entries, over one minute.
    pub(crate) fn report(n: u8, seq: u64, entries: Vec<PlayEntry>) -> SignedPlayReport {
        let batch = PlayReportBatch {
            node: [0; 32],
            seq,
            period_start_ms: 1_741_564_800_000 + seq * 60_000,
            period_end_ms: 1_741_564_800_000 + (seq + 1) * 60_000,
            entries,
        };
        SignedPlayReport::sign(batch, &node_key(n)).unwrap()
    }

    fn sample() -> SignedPlayReport {
        report(
            1,
            42,
            vec![
                play("song-1", "FR", 180_000, 3),
                play("song-1", "*", 30_000, 1),
                play("video_2", "US", 3_600_000, 12),
            ],
        )
    }

    #[test]
    fn round_trip_sign_verify() {
        let r = sample();
        r.verify().unwrap();
        let bytes = r.encode();
        assert_eq!(bytes[0], PLAY_REPORT_FORMAT_VERSION);
        let back = SignedPlayReport::decode(&bytes).unwrap();
        assert_eq!(back, r);
        back.verify().unwrap();
        assert_eq!(back.digest(), r.digest());
        assert_eq!(r.batch.node, node_key(1).verifying_key().to_bytes());
        assert_eq!(
            r.reference(),
            format!("play:{}:42", hex::encode(r.batch.node))
        );
        assert!(r.reference().len() <= crate::royalty::MAX_REFERENCE_BYTES);
    }

    #[test]
    fn signature_is_domain_separated() {
        let r = sample();
        // A signature over the bare batch (no tag) must not verify.
        let bare = node_key(1).sign(&r.batch.to_postcard()).to_bytes();
        let forged = SignedPlayReport {
            batch: r.batch.clone(),
            signature: bare,
        };
        assert!(matches!(
            forged.verify(),
            Err(ReportError::BadSignature { .. })
        ));
        assert!(r.batch.signing_bytes().starts_with(PLAY_REPORT_DOMAIN_TAG));
    }

    #[test]
    fn another_nodes_signature_is_refused() {
        let mut r = sample();
        r.batch.node = node_key(2).verifying_key().to_bytes();
        assert!(matches!(r.verify(), Err(ReportError::BadSignature { .. })));
        // A node field that is no curve point at all.
        let mut bad = sample();
        bad.batch.node = [0xff; 32];
        bad.batch.node[31] = 0x7f;
        let err = bad.verify().unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::BadNodeKey(_) | ReportError::BadSignature { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let outcome = SignedPlayReport::decode(&b).and_then(|r| r.verify());
                assert!(outcome.is_err(), "flip of bit {bit} of byte {i} accepted");
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                SignedPlayReport::decode(&bytes[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            SignedPlayReport::decode(&longer),
            Err(ReportError::TrailingBytes(1))
        ));
    }

    #[test]
    fn random_tampering_never_panics_nor_verifies() {
        let original = sample().encode();
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for round in 0..5_000 {
            let mut b = original.clone();
            match round % 4 {
                0 => {
                    // Overwrite a few random bytes.
                    for _ in 0..rng.usize(1..=4) {
                        let i = rng.usize(..b.len());
                        b[i] = rng.u8(..);
                    }
                }
                1 => {
                    // Insert a random byte.
                    let i = rng.usize(..b.len());
                    b.insert(i, rng.u8(..));
                }
                2 => {
                    // Remove a byte.
                    let i = rng.usize(..b.len());
                    b.remove(i);
                }
                _ => {
                    // Pure garbage of random length, version byte kept half the time.
                    let len = rng.usize(..300);
                    b = (0..len).map(|_| rng.u8(..)).collect();
                    if rng.bool() && !b.is_empty() {
                        b[0] = PLAY_REPORT_FORMAT_VERSION;
                    }
                }
            }
            if b == original {
                continue;
            }
            let outcome = SignedPlayReport::decode(&b).and_then(|r| r.verify());
            assert!(outcome.is_err(), "round {round} accepted tampered bytes");
        }
    }

    #[test]
    fn non_canonical_varints_are_refused() {
        let r = report(1, 5, vec![]);
        let bytes = r.encode();
        // Layout: version, 32-byte node, then seq = 5 as the one-byte varint 0x05. Re-encode it
        // as the over-long 0x85 0x00.
        assert_eq!(bytes[33], 5);
        let mut long = bytes[..33].to_vec();
        long.extend_from_slice(&[0x85, 0x00]);
        long.extend_from_slice(&bytes[34..]);
        assert!(matches!(
            SignedPlayReport::decode(&long),
            Err(ReportError::NotCanonical)
        ));
    }

    #[test]
    fn figures_that_cannot_be_true_are_implausible() {
        let honest = play("song", "FR", 40_000, 1);
        honest.validate().unwrap();
        honest.check_against(4_000, 1_000_000).unwrap();
        type Lie = fn(&mut PlayEntry);
        let lies: [(&str, Lie); 4] = [
            ("plays", |e| e.plays = e.sessions + 1),
            ("sessions", |e| {
                e.sessions = e.segments + 1;
                e.plays = 0
            }),
            ("seconds_ms", |e| e.seconds_ms = e.segments * 4_000 + 1),
            ("bytes", |e| e.bytes = e.segments * 1_000_000 + 1),
        ];
        for (field, lie) in lies {
            let mut e = honest.clone();
            lie(&mut e);
            let err = e
                .validate()
                .and_then(|()| e.check_against(4_000, 1_000_000))
                .unwrap_err();
            assert!(
                matches!(&err, ReportError::Implausible { field: f, .. } if f == field),
                "{field}: {err}"
            );
            assert_eq!(err.reason(), "implausible");
        }
        // In a batch, the entry is named.
        let mut batch = sample().batch;
        batch.entries[0].plays = batch.entries[0].sessions + 1;
        assert!(matches!(
            batch.validate(),
            Err(ReportError::Implausible { field, .. }) if field == "entries[0].plays"
        ));
    }

    #[test]
    fn version_and_size_are_checked() {
        let mut bytes = sample().encode();
        // The format before sessions were counted, and one from the future.
        for version in [1, PLAY_REPORT_FORMAT_VERSION + 1] {
            bytes[0] = version;
            assert!(matches!(
                SignedPlayReport::decode(&bytes),
                Err(ReportError::UnknownVersion(v)) if v == version
            ));
        }
        assert!(matches!(
            SignedPlayReport::decode(&[]),
            Err(ReportError::Truncated)
        ));
        let huge = vec![PLAY_REPORT_FORMAT_VERSION; MAX_REPORT_BYTES + 1];
        assert!(matches!(
            SignedPlayReport::decode(&huge),
            Err(ReportError::TooLarge { .. })
        ));
    }

    fn field(err: ReportError) -> String {
        match err {
            ReportError::Invalid { field, .. } => field,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn batch_rules_name_the_field() {
        let key = node_key(3);
        let sign = |entries: Vec<PlayEntry>| {
            SignedPlayReport::sign(
                PlayReportBatch {
                    node: [0; 32],
                    seq: 1,
                    period_start_ms: 0,
                    period_end_ms: 1,
                    entries,
                },
                &key,
            )
        };
        assert_eq!(
            field(sign(vec![play("Song", "FR", 1, 0)]).unwrap_err()),
            "entries[0].content_id"
        );
        assert_eq!(
            field(sign(vec![play("a", "FR", 1, 0), play("b", "UK", 1, 0)]).unwrap_err()),
            "entries[1].country"
        );
        for bad in ["fr", "FRA", "", "F1", "**"] {
            assert_eq!(
                field(sign(vec![play("a", bad, 1, 0)]).unwrap_err()),
                "entries[0].country",
                "{bad:?}"
            );
        }
        assert_eq!(
            field(sign(vec![play("a", "FR", 1, 0), play("a", "FR", 2, 0)]).unwrap_err()),
            "entries[1]"
        );
        assert_eq!(
            field(sign(vec![play(&"a".repeat(65), "FR", 1, 0)]).unwrap_err()),
            "entries[0].content_id"
        );
        sign(vec![play("a", "FR", 1, 0), play("a", "*", 1, 0)]).unwrap();
        sign(vec![]).unwrap();

        let mut batch = sample().batch;
        batch.period_start_ms = batch.period_end_ms + 1;
        assert_eq!(
            field(SignedPlayReport::sign(batch.clone(), &key).unwrap_err()),
            "period_start_ms"
        );
        batch.period_start_ms = 0;
        batch.period_end_ms = MAX_TIME_MS + 1;
        assert_eq!(
            field(SignedPlayReport::sign(batch, &key).unwrap_err()),
            "period_end_ms"
        );
    }

    #[test]
    fn entry_count_is_bounded_on_both_sides() {
        let entries: Vec<PlayEntry> = (0..=MAX_PLAY_ENTRIES)
            .map(|i| play(&format!("c{i}"), "*", 1, 0))
            .collect();
        let batch = PlayReportBatch {
            node: [0; 32],
            seq: 1,
            period_start_ms: 0,
            period_end_ms: 0,
            entries,
        };
        assert_eq!(
            field(SignedPlayReport::sign(batch.clone(), &node_key(1)).unwrap_err()),
            "entries"
        );
        // A report built by hand past the limit (well under the byte limit) is refused by decode.
        let forged = SignedPlayReport {
            batch,
            signature: [0; 64],
        };
        let bytes = forged.encode();
        assert!(bytes.len() < MAX_REPORT_BYTES);
        assert_eq!(
            field(SignedPlayReport::decode(&bytes).unwrap_err()),
            "entries"
        );
        // Exactly at the limit is fine.
        let mut ok = forged.batch.clone();
        ok.entries.pop();
        SignedPlayReport::sign(ok, &node_key(1)).unwrap();
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate_or_panic() {
        // version, node, seq 1, start 0, end 0, then an entry count of u32::MAX (varint).
        let mut b = vec![PLAY_REPORT_FORMAT_VERSION];
        b.extend_from_slice(&[7; 32]);
        b.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        b.extend_from_slice(&[0; 64]);
        assert!(SignedPlayReport::decode(&b).is_err());
    }

    #[test]
    fn only_storage_errors_are_retryable() {
        assert!(!ReportError::Truncated.is_retryable());
        assert!(!ReportError::NotMember("x".into()).is_retryable());
        assert!(ReportError::Storage(sled::Error::Unsupported("x".into())).is_retryable());
    }
}
