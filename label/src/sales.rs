//! DSP sales reports back in: a DDEX DSR flat file (Basic Audio Profile, parsed by [`crate::dsr`]) is
//! read as a stream, every usage line is matched to a track the label issued (by ISRC), its
//! share of the summary record's revenue is credited through the royalty plugin (so it lands
//! in the ledger too), and what the file said is kept for reconciliation.
//!
//! **Revenue.** In the Basic Audio Profile a usage line (`SU01`/`SU02`) carries counts, not
//! money: money is on the summary record it points to (`SY02.02`: the revenue allocated to
//! this rights controller, `AllocatedNetRevenue`, over its `AllocatedUsages`; `SY01.01`:
//! `NetRevenue` over `Usages`). A line's revenue is the summary's revenue × its usages ÷ the
//! summary's usages, in nano-units of the minor unit (10^-9 cent: rounding down loses less than
//! a cent in 10^9 lines), summed per track. A file whose lines count more usages than their
//! summary declares is refused (the summary's revenue would be overpaid). Usage lines whose
//! ISRC the label never issued are credited to nobody; their share is reported as uncredited.
//!
//! **Exactly once.** A file is imported as one royalty input keyed by (DSP, BLAKE3 of the
//! file's bytes): every line of it is credited in that one booking, and importing the same
//! file again changes nothing.
//!
//! **Memory.** Only the summary records, the current block's resources and per-track totals
//! (with a territory bitmap) are held; never the lines. [`MAX_SUMMARIES`] and
//! [`MAX_UNMATCHED_KEPT`] bound what a hostile file can make us keep; tracks are the label's
//! own.

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

/// One track's usage in a report, as the DSP reported it.
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
    /// The territories it was used in: ISO codes, sorted, separated by spaces (compact: a
    /// worldwide catalogue has 200 per track).
    pub territories: String,
}

/// A set of territory codes as a bitmap over `AA..ZZ` (85 bytes), plus the rare others
/// (`Worldwide`): what a track's territories cost while a file is read.
#[derive(Debug, Clone, Default)]
struct Territories {
    bits: Vec<u64>,
    others: BTreeSet<String>,
}

impl Territories {
    fn index(code: &str) -> Option<usize> {
        let b = code.as_bytes();
        (b.len() == 2 && b.iter().all(u8::is_ascii_uppercase))
            .then(|| usize::from(b[0] - b'A') * 26 + usize::from(b[1] - b'A'))
    }

    fn insert(&mut self, code: &str) {
        match Self::index(code) {
            Some(i) => {
                if self.bits.is_empty() {
                    self.bits = vec![0; 26 * 26 / 64 + 1];
                }
                self.bits[i / 64] |= 1 << (i % 64);
            }
            None => {
                // Bounded: a summary's territory is one of the file's summaries.
                self.others.insert(code.to_string());
            }
        }
    }

    /// The codes, sorted, separated by spaces.
    fn codes(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        for i in 0..26 * 26 {
            if self
                .bits
                .get(i / 64)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
            {
                let (a, b) = ((i / 26) as u8 + b'A', (i % 26) as u8 + b'A');
                out.push(String::from_utf8(vec![a, b]).unwrap_or_default());
            }
        }
        out.extend(self.others.iter().cloned());
        out.sort();
        out.join(" ")
    }
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
    /// By ISRC.
    pub tracks: BTreeMap<String, TrackUsage>,
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

/// A summary record while the file is read: its revenue in nano-units of the currency's
/// minor unit (the royalty books' unit), its declared usages, its currency.
struct SummaryRate {
    revenue_minor_nano: i128,
    declared: u64,
    currency: String,
    /// 10^exponent: minor units per major unit.
    minor_per_major: i128,
}

impl SummaryRate {
    /// The revenue of `usages` of this summary, nano-units of the minor unit, rounded down
    /// (at most one nano-unit, 10^-9 cent, per line).
    fn revenue_of(&self, usages: u64) -> i128 {
        if self.declared == 0 {
            0
        } else {
            self.revenue_minor_nano * i128::from(usages) / i128::from(self.declared)
        }
    }
}

/// A matched track while the file is read.
struct TrackTotals {
    isrc: String,
    issued: Issued,
    usages: u64,
    territories: Territories,
    /// Revenue by currency, nano-units of the minor unit.
    revenue_minor_nano: BTreeMap<String, i128>,
}

/// Reads a DSR file from `input` (plain or gzip, detected) as a report from `dsp` to the label
/// whose party id is `label_party`, credits it through `royalty` and stores the import.
///
/// Memory is bounded by the file's summary records and the label's tracks it names, not by
/// its lines: each usage line's revenue is computed as it is read (its summary came before
/// it) and added to its track's total.
///
/// # Errors
/// [`SalesError::File`] naming the line for a malformed file, or a summary whose lines count
/// more usages than it declares (its revenue would be overpaid); [`SalesError::Refused`] for a
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
    let mut rates: HashMap<String, SummaryRate> = HashMap::new();
    let mut track_ids: HashMap<String, usize> = HashMap::new();
    let mut tracks: Vec<TrackTotals> = Vec::new();
    let mut uncredited_minor_nano: BTreeMap<String, i128> = BTreeMap::new();
    let mut block: (String, HashMap<String, String>) = (String::new(), HashMap::new());
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
                    // when it says so (SY02.02), else the whole.
                    let (revenue, declared) = match s.allocated_net_revenue {
                        Some(net) if !s.allocated_usages.is_empty() => {
                            let usages: i128 =
                                s.allocated_usages.iter().map(|d| d.nanos()).sum::<i128>()
                                    / 1_000_000_000;
                            (net.nanos(), u64::try_from(usages).unwrap_or(0))
                        }
                        Some(net) => (net.nanos(), s.usages),
                        None => (s.net_revenue.nanos(), s.usages),
                    };
                    let currency = Currency::new(&s.currency_of_reporting).map_err(|e| {
                        SalesError::File(format!(
                            "line {line}: CurrencyOfReporting {:?}: {e}",
                            s.currency_of_reporting
                        ))
                    })?;
                    let minor_per_major = 10i128.pow(currency.exponent());
                    // Decimal nanos are 10^-9 major units; the books count 10^-9 minor units.
                    let revenue_minor_nano =
                        revenue.checked_mul(minor_per_major).ok_or_else(|| {
                            SalesError::File(format!("line {line}: the revenue overflows"))
                        })?;
                    rates.insert(
                        s.summary_record_id.clone(),
                        SummaryRate {
                            revenue_minor_nano,
                            declared,
                            currency: s.currency_of_reporting.clone(),
                            minor_per_major,
                        },
                    );
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
                    let (Some(summary), Some(rate)) = (
                        import.summaries.get_mut(&u.summary_record_id),
                        rates.get(&u.summary_record_id),
                    ) else {
                        return Err(SalesError::File(format!(
                            "line {line}: summary record {:?} is not in the file",
                            u.summary_record_id
                        )));
                    };
                    summary.counted_usages = summary.counted_usages.saturating_add(u.usages);
                    let revenue = rate.revenue_of(u.usages);
                    match catalog.issued(&isrc)? {
                        Some(issued) => {
                            import.matched_lines += 1;
                            summary.matched_usages =
                                summary.matched_usages.saturating_add(u.usages);
                            let t = *track_ids.entry(isrc.clone()).or_insert_with(|| {
                                tracks.push(TrackTotals {
                                    isrc,
                                    issued,
                                    usages: 0,
                                    territories: Territories::default(),
                                    revenue_minor_nano: BTreeMap::new(),
                                });
                                tracks.len() - 1
                            });
                            let track = &mut tracks[t];
                            track.usages = track.usages.saturating_add(u.usages);
                            track.territories.insert(&summary.territory);
                            *track
                                .revenue_minor_nano
                                .entry(rate.currency.clone())
                                .or_default() += revenue;
                        }
                        None => {
                            import.unmatched_lines += 1;
                            *uncredited_minor_nano
                                .entry(rate.currency.clone())
                                .or_default() += revenue;
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
    // Drain what the reader did not need (a gzip trailer) so that the hash covers the file.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| SalesError::File(e.to_string()))?;
    import.file_hash = hashing.into_inner().hasher.finalize().to_hex().to_string();
    if import.period.is_empty() {
        return Err(SalesError::Refused("the file has no HEAD record".into()));
    }
    // Lines counting more than their summary declares would be paid more than it holds.
    if let Some((id, s)) = import
        .summaries
        .iter()
        .find(|(_, s)| s.counted_usages > s.declared_usages)
    {
        return Err(SalesError::File(format!(
            "summary record {id:?} declares {} usages but its usage lines count {}: the \
             report is inconsistent and nothing was credited",
            s.declared_usages, s.counted_usages
        )));
    }

    let scale = |currency: &str| {
        rates
            .values()
            .find(|r| r.currency == currency)
            .map_or(1, |r| r.minor_per_major)
    };
    let mut revenue: BTreeMap<(String, String, String), i128> = BTreeMap::new();
    for t in tracks {
        for (currency, nano) in &t.revenue_minor_nano {
            *revenue
                .entry((
                    t.issued.content_id.clone(),
                    t.issued.artist.clone(),
                    currency.clone(),
                ))
                .or_default() += nano;
            *import.credited_nano.entry(currency.clone()).or_default() += nano / scale(currency);
        }
        import.tracks.insert(
            t.isrc,
            TrackUsage {
                content_id: t.issued.content_id,
                release: t.issued.release,
                usages: t.usages,
                revenue_nano: t
                    .revenue_minor_nano
                    .iter()
                    .map(|(c, n)| (c.clone(), n / scale(c)))
                    .collect(),
                territories: t.territories.codes(),
            },
        );
    }
    for (currency, nano) in &uncredited_minor_nano {
        import
            .uncredited_nano
            .insert(currency.clone(), nano / scale(currency));
    }
    let mut credits = Vec::with_capacity(revenue.len());
    for ((content_id, artist_id, currency), nano) in revenue {
        let currency = Currency::new(&currency)
            .map_err(|e| SalesError::File(format!("currency {currency:?}: {e}")))?;
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
        for (isrc, usage) in &import.tracks {
            let entry = per_track.entry(isrc.clone()).or_default();
            entry.0 += usage.usages;
            entry
                .1
                .extend(usage.territories.split_whitespace().map(str::to_string));
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
