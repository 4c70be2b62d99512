//! DSP sales reports back in: a DDEX DSR flat file (Basic Audio Profile, parsed by [`dsr`]) is
//! read as a stream, every usage line is matched to a track the label issued (by ISRC), its
//! share of the summary record's revenue is credited through the royalty plugin (so it lands
//! in the ledger too), and what the file said is kept for reconciliation.
//!
//! **Revenue.** In the Basic Audio Profile a usage line (`SU01`/`SU02`) carries counts, not
//! money: money is on the summary record it points to (`SY02.02`: the revenue allocated to
//! this rights controller, `AllocatedNetRevenue`, over its `AllocatedUsages`; `SY01.01`:
//! `NetRevenue` over `Usages`). A track's revenue is the summary's revenue × its usages ÷ the
//! summary's usages, in nano-units, summed per track first and divided once (no per-line
//! rounding). Usage lines whose ISRC the label never issued are credited to nobody; their
//! share is reported as uncredited.
//!
//! **Exactly once.** A file is imported as one royalty input keyed by (DSP, BLAKE3 of the
//! file's bytes): every line of it is credited in that one booking, and importing the same
//! file again changes nothing.
//!
//! **Memory.** Only the summary records, the current block's resources, and per-track and
//! per-territory totals are held; never the lines. [`MAX_SUMMARIES`] and
//! [`MAX_UNMATCHED_KEPT`] bound what a hostile file can make us keep.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, Read};

use mhc_origin::royalty::{Currency, Month, Royalty, UsageRevenue};
use serde::{Deserialize, Serialize};

use crate::dsr::{DsrReader, DsrRecord};
use crate::release::Release;
use crate::store::{Store, StoreError};

/// Summary records one file may hold (one per territory, commercial model and use type is a
/// few thousand for a worldwide service).
pub const MAX_SUMMARIES: usize = 100_000;
/// Unmatched usage lines kept (with their line numbers) per file; the rest are counted.
pub const MAX_UNMATCHED_KEPT: usize = 1_000;
/// Distinct (track, territory) pairs one file may report.
pub const MAX_TRACK_TERRITORIES: usize = 1_000_000;

/// DSR imports by `<dsp>/<YYYY-MM>/<file hash>` (JSON [`DsrImport`]).
pub const DSR_TREE: &str = "label/dsr";

/// What one summary record declared and what the usage lines pointing to it add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryTotals {
    /// Territory.
    pub territory: String,
    /// Commercial model.
    pub commercial_model: String,
    /// Use type.
    pub use_type: String,
    /// Currency of the revenue.
    pub currency: String,
    /// The revenue the summary allocates to the label, nano-units.
    pub revenue_nano: i128,
    /// The usages the summary declares.
    pub declared_usages: u64,
    /// The usages of the lines pointing to it.
    pub counted_usages: u64,
    /// Of which on tracks the label issued.
    pub matched_usages: u64,
}

/// One usage line that matched no track of the label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmatched {
    /// Line number in the file.
    pub line: u64,
    /// The ISRC the DSP reported (or its resource id when there was none).
    pub isrc: String,
    /// Usages.
    pub usages: u64,
    /// Territory (from the summary record).
    pub territory: String,
}

/// One track's usage in one territory, as the DSP reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackUsage {
    /// The track's content id.
    pub content_id: String,
    /// The release it was delivered in.
    pub release: String,
    /// Usages.
    pub usages: u64,
    /// Revenue credited, nano-units, by currency.
    pub revenue_nano: BTreeMap<String, i128>,
}

/// One imported DSR file: what it said and what was credited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsrImport {
    /// The DSP.
    pub dsp: String,
    /// `YYYY-MM` of the usage period's start.
    pub period: String,
    /// BLAKE3 of the file's bytes (as sent, compressed or not).
    pub file_hash: String,
    /// The report's message id.
    pub message_id: String,
    /// Lines read.
    pub lines: u64,
    /// Usage lines.
    pub usage_lines: u64,
    /// Usage lines matched to a track of the label.
    pub matched_lines: u64,
    /// Usage lines matched to nothing (all counted; the first [`MAX_UNMATCHED_KEPT`] kept).
    pub unmatched_lines: u64,
    /// The first unmatched lines.
    pub unmatched: Vec<Unmatched>,
    /// By summary record id.
    pub summaries: BTreeMap<String, SummaryTotals>,
    /// By ISRC, then territory.
    pub tracks: BTreeMap<String, BTreeMap<String, TrackUsage>>,
    /// Revenue credited to artists, nano-units, by currency.
    pub credited_nano: BTreeMap<String, i128>,
    /// Revenue of unmatched lines (credited to nobody), nano-units, by currency.
    pub uncredited_nano: BTreeMap<String, i128>,
    /// Postings the royalty plugin booked.
    pub postings: usize,
    /// Whether this file had been imported before (nothing changed).
    pub replayed: bool,
}

/// A DSR import that failed, with what to tell the sender.
#[derive(Debug, thiserror::Error)]
pub enum SalesError {
    /// The file does not parse or does not hold (line and column named).
    #[error("{0}")]
    File(String),
    /// The file is well formed but cannot be imported (addressed to another label, ...).
    #[error("{0}")]
    Refused(String),
    /// The royalty plugin refused or failed.
    #[error("royalty: {0}")]
    Royalty(#[from] mhc_origin::royalty::RoyaltyError),
    /// The label's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A track the label issued an ISRC for.
#[derive(Debug, Clone)]
struct Issued {
    content_id: String,
    artist: String,
    release: String,
}

/// Resolves ISRCs to the label's tracks, remembering what it looked up (bounded).
struct Catalog<'a> {
    store: &'a Store,
    cache: HashMap<String, Option<Issued>>,
    releases: HashMap<String, Release>,
}

const MAX_CACHED_ISRCS: usize = 100_000;

impl Catalog<'_> {
    fn issued(&mut self, isrc: &str) -> Result<Option<Issued>, StoreError> {
        if let Some(hit) = self.cache.get(isrc) {
            return Ok(hit.clone());
        }
        let found = match self.store.owner_of(&format!("isrc:{isrc}"))? {
            Some(release_id) => {
                if !self.releases.contains_key(&release_id) {
                    if let Some(r) = self.store.release(&release_id)? {
                        self.releases.insert(release_id.clone(), r);
                    }
                }
                self.releases.get(&release_id).and_then(|r| {
                    r.tracks
                        .iter()
                        .find(|t| t.isrc.as_str() == isrc)
                        .map(|t| Issued {
                            content_id: t.content_id.clone(),
                            artist: r.artist.clone(),
                            release: r.id.clone(),
                        })
                })
            }
            None => None,
        };
        if self.cache.len() < MAX_CACHED_ISRCS {
            self.cache.insert(isrc.to_string(), found.clone());
        }
        Ok(found)
    }
}

/// Reads a DSR file from `input` (plain or gzip, detected) as a report from `dsp` to the label
/// whose party id is `label_party`, credits it through `royalty` and stores the import.
///
/// # Errors
/// [`SalesError::File`] naming the line for a malformed file; [`SalesError::Refused`] for a
/// report addressed to another party or with no usage period; royalty and store failures.
pub fn import(
    store: &Store,
    royalty: &Royalty,
    dsp: &str,
    label_party: &str,
    input: impl BufRead,
) -> Result<DsrImport, SalesError> {
    let mut hashing = io::BufReader::with_capacity(
        256 * 1024,
        Hashing {
            inner: input,
            hasher: blake3::Hasher::new(),
        },
    );
    let mut import = DsrImport {
        dsp: dsp.to_string(),
        ..DsrImport::default()
    };
    let mut catalog = Catalog {
        store,
        cache: HashMap::new(),
        releases: HashMap::new(),
    };
    // (summary id, content id, artist, release, isrc) -> usages: the revenue is divided once
    // per pair at the end.
    let mut shares: BTreeMap<(String, String), (Issued, u64)> = BTreeMap::new();
    let mut unmatched_by_summary: BTreeMap<String, u64> = BTreeMap::new();
    let mut block: (String, HashMap<String, String>) = (String::new(), HashMap::new());
    let mut track_territories = 0usize;
    {
        let mut reader =
            DsrReader::open(&mut hashing).map_err(|e| SalesError::File(e.to_string()))?;
        // Not a `for` loop: the body asks the reader for the line number.
        #[allow(clippy::while_let_on_iterator)]
        while let Some(record) = reader.next() {
            let record = record.map_err(|e| SalesError::File(e.to_string()))?;
            let line = reader.line();
            match record {
                DsrRecord::Head(h) => {
                    if let Some(to) = &h.recipient_party_id {
                        if to != label_party {
                            return Err(SalesError::Refused(format!(
                                "line {line}: the report is addressed to {to}, not to this \
                                 label ({label_party})"
                            )));
                        }
                    }
                    import.period = h.usage_start_date.get(..7).unwrap_or_default().to_string();
                    if import.period.parse::<Month>().is_err() {
                        return Err(SalesError::Refused(format!(
                            "line {line}: UsageStartDate {:?} is not a date",
                            h.usage_start_date
                        )));
                    }
                    import.message_id = h.message_id;
                }
                DsrRecord::Summary(s) => {
                    if import.summaries.len() >= MAX_SUMMARIES {
                        return Err(SalesError::File(format!(
                            "line {line}: more than {MAX_SUMMARIES} summary records"
                        )));
                    }
                    // The label's share: what the summary allocates to this rights controller
                    // when it says (SY02.02), else the whole.
                    let (revenue, declared) = match s.allocated_net_revenue {
                        Some(net) => {
                            let usages: i128 =
                                s.allocated_usages.iter().map(|d| d.nanos()).sum::<i128>()
                                    / 1_000_000_000;
                            (
                                net.nanos(),
                                if s.allocated_usages.is_empty() {
                                    s.usages
                                } else {
                                    u64::try_from(usages).unwrap_or(0)
                                },
                            )
                        }
                        None => (s.net_revenue.nanos(), s.usages),
                    };
                    import.summaries.insert(
                        s.summary_record_id.clone(),
                        SummaryTotals {
                            territory: s.territory,
                            commercial_model: s.commercial_model,
                            use_type: s.use_type,
                            currency: s.currency_of_reporting,
                            revenue_nano: revenue,
                            declared_usages: declared,
                            counted_usages: 0,
                            matched_usages: 0,
                        },
                    );
                }
                DsrRecord::Resource(r) => {
                    if r.block_id != block.0 {
                        block = (r.block_id.clone(), HashMap::new());
                    }
                    let isrc = r.isrc.first().cloned().unwrap_or(r.dsp_resource_id);
                    block.1.insert(r.resource_reference, isrc);
                }
                DsrRecord::Usage(u) => {
                    import.usage_lines += 1;
                    let reference = u
                        .transacted_resource
                        .or(u.transacted_release)
                        .unwrap_or_default();
                    let isrc = if u.block_id == block.0 {
                        block.1.get(&reference).cloned()
                    } else {
                        None
                    }
                    .unwrap_or(reference);
                    let Some(summary) = import.summaries.get_mut(&u.summary_record_id) else {
                        return Err(SalesError::File(format!(
                            "line {line}: summary record {:?} is not in the file",
                            u.summary_record_id
                        )));
                    };
                    summary.counted_usages = summary.counted_usages.saturating_add(u.usages);
                    match catalog.issued(&isrc)? {
                        Some(track) => {
                            import.matched_lines += 1;
                            summary.matched_usages =
                                summary.matched_usages.saturating_add(u.usages);
                            let per_territory = import.tracks.entry(isrc.clone()).or_default();
                            if !per_territory.contains_key(&summary.territory) {
                                track_territories += 1;
                                if track_territories > MAX_TRACK_TERRITORIES {
                                    return Err(SalesError::File(format!(
                                        "line {line}: more than {MAX_TRACK_TERRITORIES} \
                                         (track, territory) pairs"
                                    )));
                                }
                            }
                            let usage = per_territory
                                .entry(summary.territory.clone())
                                .or_insert_with(|| TrackUsage {
                                    content_id: track.content_id.clone(),
                                    release: track.release.clone(),
                                    ..TrackUsage::default()
                                });
                            usage.usages = usage.usages.saturating_add(u.usages);
                            let slot = shares
                                .entry((u.summary_record_id.clone(), isrc))
                                .or_insert((track, 0));
                            slot.1 = slot.1.saturating_add(u.usages);
                        }
                        None => {
                            import.unmatched_lines += 1;
                            *unmatched_by_summary
                                .entry(u.summary_record_id.clone())
                                .or_default() += u.usages;
                            if import.unmatched.len() < MAX_UNMATCHED_KEPT {
                                import.unmatched.push(Unmatched {
                                    line,
                                    isrc,
                                    usages: u.usages,
                                    territory: summary.territory.clone(),
                                });
                            }
                        }
                    }
                }
                DsrRecord::Release(_)
                | DsrRecord::Foot(_)
                | DsrRecord::Other { .. }
                | DsrRecord::Comment { .. } => {}
            }
        }
        import.lines = reader.line();
    }
    // Drain what the reader did not need (trailing bytes after FOOT are refused by the reader;
    // a gzip trailer is read here) so that the hash covers the whole file.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| SalesError::File(e.to_string()))?;
    import.file_hash = hashing.into_inner().hasher.finalize().to_hex().to_string();
    if import.period.is_empty() {
        return Err(SalesError::Refused("the file has no HEAD record".into()));
    }

    // Divide each summary's revenue by usages, once per (summary, track).
    let share = |revenue: i128, usages: u64, of: u64| -> i128 {
        if of == 0 {
            0
        } else {
            revenue * i128::from(usages) / i128::from(of)
        }
    };
    let mut revenue: BTreeMap<(String, String, String), i128> = BTreeMap::new();
    for ((summary_id, isrc), (track, usages)) in &shares {
        let s = &import.summaries[summary_id];
        let nano = share(
            s.revenue_nano,
            *usages,
            s.declared_usages.max(s.counted_usages),
        );
        *revenue
            .entry((
                track.content_id.clone(),
                track.artist.clone(),
                s.currency.clone(),
            ))
            .or_default() += nano;
        *import.credited_nano.entry(s.currency.clone()).or_default() += nano;
        if let Some(t) = import
            .tracks
            .get_mut(isrc)
            .and_then(|t| t.get_mut(&s.territory))
        {
            *t.revenue_nano.entry(s.currency.clone()).or_default() += nano;
        }
    }
    for (summary_id, usages) in &unmatched_by_summary {
        let s = &import.summaries[summary_id];
        *import
            .uncredited_nano
            .entry(s.currency.clone())
            .or_default() += share(
            s.revenue_nano,
            *usages,
            s.declared_usages.max(s.counted_usages),
        );
    }
    let mut credits = Vec::with_capacity(revenue.len());
    for ((content_id, artist_id, currency), nano) in revenue {
        let currency = Currency::new(&currency)
            .map_err(|e| SalesError::File(format!("currency {currency:?}: {e}")))?;
        // DSR amounts are in major units; the royalty books count nano-units of the minor unit.
        let nano = nano
            .checked_mul(10i128.pow(currency.exponent()))
            .ok_or_else(|| SalesError::File(format!("revenue of {content_id} overflows")))?;
        credits.push(UsageRevenue {
            content_id,
            artist_id,
            currency,
            nano,
        });
    }
    let memo = format!(
        "{dsp} sales report {} ({} usage lines)",
        import.period, import.usage_lines
    );
    let receipt = royalty.import_dsp_revenue(dsp, &import.file_hash, &memo, &credits)?;
    import.postings = receipt.postings.len();
    import.replayed = receipt.replayed;
    store.put_json(
        DSR_TREE,
        &format!("{dsp}/{}/{}", import.period, import.file_hash),
        &import,
    )?;
    Ok(import)
}

/// The imports of `dsp` for `period` (`YYYY-MM`).
///
/// # Errors
/// [`StoreError`].
pub fn imports(store: &Store, dsp: &str, period: &str) -> Result<Vec<DsrImport>, StoreError> {
    store.scan_json(DSR_TREE, &format!("{dsp}/{period}/"))
}

/// What the label knows of a track when reconciling.
#[derive(Debug, Clone)]
pub struct TrackFacts {
    /// Content id.
    pub content_id: String,
    /// The territories its release is offered in (`Worldwide` or codes).
    pub territories: Vec<String>,
    /// Whether the release was delivered to the DSP (delivered or acknowledged, not taken
    /// down).
    pub live: bool,
    /// Milliseconds the platform's own viewers played it in the period.
    pub platform_ms: u64,
}

/// Compares a DSP's reports for a period with what was delivered to it, with the files' own
/// summaries, and with the platform's play reports.
pub fn reconcile(
    dsp: &str,
    period: &str,
    imports: &[DsrImport],
    facts: impl Fn(&str) -> Option<TrackFacts>,
) -> serde_json::Value {
    let mut unknown = Vec::new();
    let mut unknown_count = 0u64;
    let mut not_live = Vec::new();
    let mut disagreements = Vec::new();
    let mut per_track: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut revenue_file: BTreeMap<String, i128> = BTreeMap::new();
    let mut credited: BTreeMap<String, i128> = BTreeMap::new();
    let mut uncredited: BTreeMap<String, i128> = BTreeMap::new();
    for import in imports {
        unknown_count += import.unmatched_lines;
        unknown.extend(import.unmatched.iter().map(|u| {
            serde_json::json!({"file": import.file_hash, "line": u.line, "isrc": u.isrc,
                               "usages": u.usages, "territory": u.territory})
        }));
        for (id, s) in &import.summaries {
            *revenue_file.entry(s.currency.clone()).or_default() += s.revenue_nano;
            if s.counted_usages != s.declared_usages {
                disagreements.push(serde_json::json!({
                    "file": import.file_hash, "summary": id, "territory": s.territory,
                    "declared_usages": s.declared_usages, "counted_usages": s.counted_usages,
                }));
            }
        }
        for (c, n) in &import.credited_nano {
            *credited.entry(c.clone()).or_default() += n;
        }
        for (c, n) in &import.uncredited_nano {
            *uncredited.entry(c.clone()).or_default() += n;
        }
        for (isrc, territories) in &import.tracks {
            let entry = per_track.entry(isrc.clone()).or_default();
            for (territory, usage) in territories {
                entry.0 += usage.usages;
                entry.1.insert(territory.clone());
            }
        }
    }
    let decimal = |n: &i128| crate::dsr::Decimal::from_nanos(*n).to_string();
    let money = |m: &BTreeMap<String, i128>| -> BTreeMap<String, String> {
        m.iter().map(|(c, n)| (c.clone(), decimal(n))).collect()
    };
    let mut tracks = Vec::new();
    for (isrc, (usages, territories)) in &per_track {
        let Some(f) = facts(isrc) else { continue };
        if !f.live {
            not_live.push(serde_json::json!({"isrc": isrc, "content_id": f.content_id,
                "reason": "not delivered to this DSP (or taken down)", "usages": usages}));
        }
        let worldwide = f.territories.iter().any(|t| t == "Worldwide");
        for t in territories {
            if !worldwide && !f.territories.contains(t) && t != "Worldwide" {
                not_live.push(serde_json::json!({"isrc": isrc, "content_id": f.content_id,
                    "territory": t, "reason": "the release is not offered in this territory"}));
            }
        }
        tracks.push(serde_json::json!({
            "isrc": isrc, "content_id": f.content_id, "dsp_usages": usages,
            "platform_seconds": f.platform_ms / 1000,
        }));
    }
    let unaccounted: BTreeMap<String, String> = revenue_file
        .iter()
        .filter_map(|(c, total)| {
            let diff = total
                - credited.get(c).copied().unwrap_or(0)
                - uncredited.get(c).copied().unwrap_or(0);
            (diff != 0).then(|| (c.clone(), decimal(&diff)))
        })
        .collect();
    serde_json::json!({
        "dsp": dsp,
        "period": period,
        "files": imports.iter().map(|i| serde_json::json!({
            "file_hash": i.file_hash, "message_id": i.message_id, "usage_lines": i.usage_lines,
            "matched_lines": i.matched_lines, "unmatched_lines": i.unmatched_lines})).collect::<Vec<_>>(),
        "unknown_isrcs": {"lines": unknown_count, "first": unknown},
        "not_live": not_live,
        "totals": {
            "file_revenue": money(&revenue_file),
            "credited": money(&credited),
            "uncredited": money(&uncredited),
            // Rounding down per track leaves at most a few nano-units here.
            "rounding": unaccounted,
            "summary_disagreements": disagreements,
        },
        "tracks": tracks,
    })
}
