//! Import of DSP (streaming service) royalty statements in a simple CSV format.
//!
//! The file format is documented on [`DspStatement`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::calendar::Month;
use super::config::check_country;
use super::csv::{parse_records, CsvError};
use super::engine::Royalty;
use super::error::{check_content_id, check_id, MAX_ARTIST_ID_BYTES};
use super::money::{to_minor, Currency};
use super::posting::{PostingKind, Receipt};
use super::split::{accumulate_split, SheetCache};
use super::RoyaltyError;

/// The header row, column by column.
pub const DSP_COLUMNS: [&str; 8] = [
    "period",
    "dsp",
    "isrc_or_content_id",
    "artist_id",
    "country",
    "units",
    "amount_minor",
    "currency",
];

/// Most rows one statement file may hold. A month of one catalogue on one service is one row
/// per track and territory: 1,000 tracks in 200 territories fit. A larger statement is
/// imported as several files (each is its own idempotent import for the period), so one
/// request never holds more than about 50 MB of parsed rows.
pub const MAX_DSP_ROWS: usize = 200_000;

/// One parsed statement row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DspLine {
    /// Line number in the file (the header is line 1).
    pub line: usize,
    /// ISRC or content id.
    pub content_id: String,
    /// Artist credited, if given.
    pub artist_id: Option<String>,
    /// Territory.
    pub country: String,
    /// Units (streams, downloads).
    pub units: u64,
    /// Revenue in minor units (negative for reversals).
    pub amount_minor: i64,
    /// Currency of `amount_minor`.
    pub currency: Currency,
}

/// A parsed DSP statement file.
///
/// # Format
///
/// Strict UTF-8 CSV: fields separated by `,`, optionally quoted with `"` (`""` for a quote, no
/// field spanning lines), LF or CRLF line ends, an optional BOM, no blank lines, lines of at
/// most [`MAX_LINE_BYTES`](super::csv::MAX_LINE_BYTES) bytes; exactly this header row, then one
/// row per statement line, at most [`MAX_DSP_ROWS`]:
///
/// ```text
/// period,dsp,isrc_or_content_id,artist_id,country,units,amount_minor,currency
/// 2025-03,spotify,USRC17607839,ar-1,SE,1520,4210,EUR
/// 2025-03,spotify,my-song,,DE,10,-35,EUR
/// ```
///
/// | column | rule |
/// |---|---|
/// | `period` | sales month `YYYY-MM`; the same on every row |
/// | `dsp` | the service, 1..=32 of `a-z 0-9 . _ -`; the same on every row; revenue source `dsp:<dsp>` |
/// | `isrc_or_content_id` | 1..=64 of `A-Z a-z 0-9 _ -`; if a split sheet exists for it, the amount is divided by it |
/// | `artist_id` | the artist credited; may be empty only if the id has a split sheet |
/// | `country` | territory, ISO 3166-1 alpha-2 (informational) |
/// | `units` | streams/downloads, a non-negative integer (informational) |
/// | `amount_minor` | the artist's revenue in minor units, an integer, negative for reversals; no decimal point |
/// | `currency` | ISO 4217 code; a code ISO 4217 does not list is refused |
///
/// An import is idempotent by (dsp, period, BLAKE3 of the file's bytes): the same file again
/// returns the original result; a different file for the same period (a supplementary
/// statement) is a new import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DspStatement {
    /// The service.
    pub dsp: String,
    /// The sales month.
    pub period: Month,
    /// BLAKE3 of the file's bytes, hex.
    pub file_hash: String,
    /// The rows, in file order.
    pub lines: Vec<DspLine>,
}

/// The result of [`Royalty::import_dsp_statement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DspImport {
    /// The service.
    pub dsp: String,
    /// The sales month.
    pub period: Month,
    /// BLAKE3 of the file, hex.
    pub file_hash: String,
    /// Rows in the file.
    pub lines: usize,
    /// The postings, under reference `<dsp>/<period>/<file_hash>`.
    pub receipt: Receipt,
}

/// Parses a strictly non-negative decimal integer (no sign, no spaces).
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `-?[0-9]+` into an `i64`.
fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn check_dsp_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1..=32 of lowercase letters, digits, '.', '_', '-'"
        ))
    }
}

impl DspStatement {
    /// Parses and checks a statement file.
    ///
    /// # Errors
    /// [`CsvError`] naming the line and (for field problems) the column: a wrong header, a
    /// malformed value, a row whose period or dsp differs from the first row's, no rows at all,
    /// a line too long, more than [`MAX_DSP_ROWS`] rows.
    pub fn parse(bytes: &[u8]) -> Result<Self, CsvError> {
        let cols = &DSP_COLUMNS;
        let records = parse_records(bytes, cols, MAX_DSP_ROWS + 1)?;
        let mut rows = records.into_iter();
        let header = rows.next().ok_or_else(|| CsvError::Line {
            line: 1,
            problem: format!("empty file; expected the header {}", cols.join(",")),
        })?;
        for (i, (found, expected)) in header.fields.iter().zip(cols).enumerate() {
            if found != expected {
                return Err(CsvError::field(
                    1,
                    i + 1,
                    cols,
                    format!("header is {found:?}, expected {expected:?}"),
                ));
            }
        }
        let mut first: Option<(Month, String)> = None;
        let mut lines = Vec::new();
        for record in rows {
            let line = record.line;
            let f = &record.fields;
            let err = |column: usize, problem: String| CsvError::field(line, column, cols, problem);
            let period: Month = f[0].parse().map_err(|e| err(1, format!("{e}")))?;
            check_dsp_name(&f[1]).map_err(|p| err(2, p))?;
            match &first {
                None => first = Some((period, f[1].clone())),
                Some((p, d)) => {
                    if *p != period {
                        return Err(err(
                            1,
                            format!("period {period} differs from the first row's {p}"),
                        ));
                    }
                    if *d != f[1] {
                        return Err(err(
                            2,
                            format!("dsp {:?} differs from the first row's {d:?}", f[1]),
                        ));
                    }
                }
            }
            check_content_id("", &f[2]).map_err(|e| err(3, problem_of(e)))?;
            let artist_id = if f[3].is_empty() {
                None
            } else {
                check_id("", &f[3], MAX_ARTIST_ID_BYTES).map_err(|e| err(4, problem_of(e)))?;
                Some(f[3].clone())
            };
            check_country(&f[4]).map_err(|p| err(5, p))?;
            let units = parse_u64(&f[5])
                .ok_or_else(|| err(6, format!("{:?} is not a non-negative integer", f[5])))?;
            let amount_minor = parse_i64(&f[6]).ok_or_else(|| {
                err(
                    7,
                    format!(
                        "{:?} is not an integer number of minor units (no decimal point)",
                        f[6]
                    ),
                )
            })?;
            let currency = Currency::new(&f[7]).map_err(|e| err(8, e.to_string()))?;
            lines.push(DspLine {
                line,
                content_id: f[2].clone(),
                artist_id,
                country: f[4].clone(),
                units,
                amount_minor,
                currency,
            });
        }
        let (period, dsp) = first.ok_or_else(|| CsvError::Line {
            line: 2,
            problem: "the statement has no rows".to_string(),
        })?;
        Ok(DspStatement {
            dsp,
            period,
            file_hash: blake3::hash(bytes).to_hex().to_string(),
            lines,
        })
    }
}

/// The problem text of an `InvalidInput`, for re-wrapping as a CSV field error.
fn problem_of(e: RoyaltyError) -> String {
    match e {
        RoyaltyError::InvalidInput { problem, .. } => problem,
        other => other.to_string(),
    }
}

impl Royalty {
    /// Imports a DSP statement file (format on [`DspStatement`]): each row's amount is
    /// credited to its artist, or divided by the id's split sheet, as source `dsp:<dsp>`, one
    /// credit per artist and currency, with withholding. Idempotent by (dsp, period, file hash).
    ///
    /// # Errors
    /// [`RoyaltyError::Csv`] naming line and column for any problem in the file, including a
    /// row with no artist whose id has no split sheet; [`RoyaltyError::Money`] on overflow;
    /// [`RoyaltyError::Storage`].
    pub fn import_dsp_statement(&self, csv: &[u8]) -> Result<DspImport, RoyaltyError> {
        let statement = DspStatement::parse(csv)?;
        let reference = format!(
            "{}/{}/{}",
            statement.dsp, statement.period, statement.file_hash
        );
        let source = format!("dsp:{}", statement.dsp);
        let memo = format!(
            "{} statement {}, {} lines",
            statement.dsp,
            statement.period,
            statement.lines.len()
        );
        let receipt = self.apply_input("dsp", &reference, &statement.file_hash, |b| {
            let mut sheets = SheetCache::default();
            let mut totals: BTreeMap<Currency, BTreeMap<String, i128>> = BTreeMap::new();
            for row in &statement.lines {
                let sheet = sheets.get(b, &row.content_id)?;
                let artist = match (&sheet, &row.artist_id) {
                    (Some(_), _) => "",
                    (None, Some(artist)) => artist.as_str(),
                    (None, None) => {
                        return Err(CsvError::field(
                            row.line,
                            4,
                            &DSP_COLUMNS,
                            format!("empty, and {:?} has no split sheet", row.content_id),
                        )
                        .into())
                    }
                };
                let per_artist = totals.entry(row.currency).or_default();
                accumulate_split(
                    per_artist,
                    sheet.as_ref(),
                    artist,
                    i128::from(row.amount_minor),
                )?;
            }
            for (currency, per_artist) in totals {
                for (artist, amount) in per_artist {
                    b.credit(
                        &artist,
                        currency,
                        to_minor(amount)?,
                        PostingKind::Credit,
                        &source,
                        &memo,
                    )?;
                }
            }
            Ok(())
        })?;
        Ok(DspImport {
            dsp: statement.dsp,
            period: statement.period,
            file_hash: statement.file_hash,
            lines: statement.lines.len(),
            receipt,
        })
    }
}

/// One track's revenue in one currency from a DSP's sales report, as the label plugin reads
/// it from a DDEX DSR file: credited to `artist_id` (or divided by `content_id`'s split sheet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRevenue {
    /// The track's content id (its split sheet, if any, divides the amount).
    pub content_id: String,
    /// The artist the content was published under.
    pub artist_id: String,
    /// The currency of `nano`.
    pub currency: Currency,
    /// Revenue in nano-units of the currency's minor unit (10^-9 cent for EUR): DSR amounts
    /// have more decimals than minor units; remainders below a minor unit are carried in the
    /// balance.
    pub nano: i128,
}

impl Royalty {
    /// Credits the revenue of a DSP's sales report (a DDEX DSR file, parsed by the label
    /// plugin), as source `dsp:<dsp>`: each entry to its artist or divided by the content's
    /// split sheet, one credit per artist and currency, with withholding. Idempotent by
    /// (`dsp`, `file_hash`): the same file again changes nothing (`replayed`), other data under
    /// the same file hash is refused.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] for a malformed dsp or id; [`RoyaltyError::ReferenceReused`];
    /// [`RoyaltyError::Money`] on overflow; [`RoyaltyError::Storage`].
    pub fn import_dsp_revenue(
        &self,
        dsp: &str,
        file_hash: &str,
        memo: &str,
        revenue: &[UsageRevenue],
    ) -> Result<Receipt, RoyaltyError> {
        check_dsp_name(dsp).map_err(|p| RoyaltyError::InvalidInput {
            field: "dsp".into(),
            problem: p,
        })?;
        for r in revenue {
            check_content_id("content_id", &r.content_id)?;
            check_id("artist_id", &r.artist_id, MAX_ARTIST_ID_BYTES)?;
        }
        let reference = format!("{dsp}/dsr/{file_hash}");
        let source = format!("dsp:{dsp}");
        self.apply_input("dsr", &reference, &revenue, |b| {
            let mut sheets = SheetCache::default();
            let mut totals: BTreeMap<Currency, BTreeMap<String, i128>> = BTreeMap::new();
            for r in revenue {
                let sheet = sheets.get(b, &r.content_id)?;
                accumulate_split(
                    totals.entry(r.currency).or_default(),
                    sheet.as_ref(),
                    &r.artist_id,
                    r.nano,
                )?;
            }
            for (currency, per_artist) in totals {
                for (artist, nano) in per_artist {
                    b.credit_nano(&artist, currency, nano, &source, memo)?;
                }
            }
            Ok(())
        })
    }

    /// Milliseconds of `content_id` watched on the platform in `month`, from the play reports
    /// credited (for reconciling a DSP's usage against the platform's own).
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn watched_ms(&self, month: Month, content_id: &str) -> Result<u64, RoyaltyError> {
        let mut prefix = month.index().to_be_bytes().to_vec();
        prefix.extend_from_slice(content_id.as_bytes());
        prefix.push(0);
        Ok(self
            .store()
            .scan::<u64>(super::store::TreeId::Watch, &prefix)?
            .into_iter()
            .map(|(_, ms)| ms)
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{crypto_account, sheet, Harness};
    use super::*;

    const HEADER: &str =
        "period,dsp,isrc_or_content_id,artist_id,country,units,amount_minor,currency\n";

    fn file(rows: &[&str]) -> Vec<u8> {
        let mut s = HEADER.to_string();
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s.into_bytes()
    }

    fn parse_err(rows: &[&str]) -> CsvError {
        DspStatement::parse(&file(rows)).unwrap_err()
    }

    #[test]
    fn parses_a_good_statement() {
        let s = DspStatement::parse(&file(&[
            "2025-03,spotify,USRC17607839,ar-1,SE,1520,4210,EUR",
            "2025-03,spotify,my-song,\"ar,2\",DE,10,-35,EUR",
        ]))
        .unwrap();
        assert_eq!(
            (s.dsp.as_str(), s.period.to_string().as_str()),
            ("spotify", "2025-03")
        );
        assert_eq!(s.lines.len(), 2);
        assert_eq!(s.lines[1].artist_id.as_deref(), Some("ar,2"));
        assert_eq!(s.lines[1].amount_minor, -35);
        assert_eq!(s.lines[1].line, 3);
        assert_eq!(s.file_hash.len(), 64);
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&[&str], usize, Option<usize>, &str)] = &[
            (&["2025-3,spotify,s,a,SE,1,1,EUR"], 2, Some(1), "(period)"),
            (&["2025-03,Spotify,s,a,SE,1,1,EUR"], 2, Some(2), "(dsp)"),
            (
                &["2025-03,spotify,s s,a,SE,1,1,EUR"],
                2,
                Some(3),
                "(isrc_or_content_id)",
            ),
            (&["2025-03,spotify,s,a,se,1,1,EUR"], 2, Some(5), "(country)"),
            (&["2025-03,spotify,s,a,SE,-1,1,EUR"], 2, Some(6), "(units)"),
            (
                &["2025-03,spotify,s,a,SE,1,12.50,EUR"],
                2,
                Some(7),
                "no decimal point",
            ),
            (
                &["2025-03,spotify,s,a,SE,1,+5,EUR"],
                2,
                Some(7),
                "(amount_minor)",
            ),
            (
                &["2025-03,spotify,s,a,SE,1,99999999999999999999,EUR"],
                2,
                Some(7),
                "(amount_minor)",
            ),
            (
                &["2025-03,spotify,s,a,SE,1,1,eur"],
                2,
                Some(8),
                "(currency)",
            ),
            (
                &["2025-03,spotify,s,a,SE,1,1,XYZ"],
                2,
                Some(8),
                "(currency): \"XYZ\" is not an ISO 4217 currency code",
            ),
            (
                &[
                    "2025-03,spotify,s,a,SE,1,1,EUR",
                    "2025-04,spotify,s,a,SE,1,1,EUR",
                ],
                3,
                Some(1),
                "differs",
            ),
            (
                &[
                    "2025-03,spotify,s,a,SE,1,1,EUR",
                    "2025-03,deezer,s,a,SE,1,1,EUR",
                ],
                3,
                Some(2),
                "differs",
            ),
            (
                &["2025-03,spotify,s,a,SE,1,1"],
                2,
                None,
                "expected 8 fields",
            ),
            (&[], 2, None, "no rows"),
        ];
        for (rows, line, column, text) in cases {
            let e = parse_err(rows);
            assert_eq!((e.line(), e.column()), (*line, *column), "{e}");
            assert!(e.to_string().contains(text), "{e} should mention {text}");
        }
        let e =
            DspStatement::parse(b"period,dsp,isrc,artist_id,country,units,amount_minor,currency\n")
                .unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 3 (isrc_or_content_id): header is \"isrc\", expected \"isrc_or_content_id\"");
        assert_eq!(DspStatement::parse(b"").unwrap_err().line(), 1);
    }

    #[test]
    fn hostile_files_are_refused_with_a_line_not_a_panic() {
        // One huge line, of commas (each a field to index) or of one field.
        for filler in [b',', b'x'] {
            let mut big = HEADER.as_bytes().to_vec();
            big.extend(std::iter::repeat_n(filler, 8 << 20));
            let e = DspStatement::parse(&big).unwrap_err();
            assert_eq!(e.to_string(), "line 2: longer than 4096 bytes");
        }
        // A quoted field left open swallows no further lines: it is refused where it starts.
        let mut open = file(&["2025-03,spotify,s,a,SE,1,1,\"EUR"]);
        for _ in 0..10_000 {
            open.extend_from_slice(b"2025-03,spotify,s,a,SE,1,1,EUR\n");
        }
        let e = DspStatement::parse(&open).unwrap_err();
        assert_eq!((e.line(), e.column()), (2, Some(8)), "{e}");
        // Too many rows: refused at the first row past the limit.
        let row = "2025-03,spotify,s,a,SE,1,1,EUR\n";
        let many = format!("{HEADER}{}", row.repeat(MAX_DSP_ROWS + 1));
        let e = DspStatement::parse(many.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "line {}: more than {} records",
                MAX_DSP_ROWS + 2,
                MAX_DSP_ROWS + 1
            )
        );
        assert_eq!(
            DspStatement::parse(&many.as_bytes()[..many.len() - row.len()])
                .unwrap()
                .lines
                .len(),
            MAX_DSP_ROWS
        );
        // Wrong column counts and bad UTF-8 anywhere.
        assert!(parse_err(&["2025-03,spotify,s,a,SE,1,1,EUR,extra"])
            .to_string()
            .contains("expected 8 fields, found 9"));
        let mut bad = file(&["2025-03,spotify,s,a,SE,1,1,EUR"]);
        bad.extend_from_slice(b"2025-03,spotify,s,\xc3\x28,SE,1,1,EUR\n");
        assert_eq!(
            DspStatement::parse(&bad).unwrap_err().to_string(),
            "line 3: not valid UTF-8"
        );
        // Pseudo-random bytes, with and without a valid header: an error, never a panic.
        let mut noise = vec![0; 1 << 16];
        blake3::Hasher::new()
            .update(b"dsp noise")
            .finalize_xof()
            .fill(&mut noise);
        for (i, chunk) in noise.chunks(997).enumerate() {
            let mut input = if i % 2 == 0 {
                HEADER.as_bytes().to_vec()
            } else {
                Vec::new()
            };
            // Mostly CSV punctuation, so the quoting checks are reached.
            input.extend(chunk.iter().map(|&b| match b % 8 {
                0 => b'"',
                1 => b',',
                2 => b'\n',
                3 => b'\r',
                _ => b,
            }));
            assert!(DspStatement::parse(&input).is_err());
        }
    }

    #[test]
    fn import_credits_splits_and_is_idempotent() {
        let h = Harness::new();
        h.royalty
            .create_account(crypto_account("ar-1", "SE"))
            .unwrap();
        h.royalty
            .set_split_sheet(sheet("duet", &[("ar-1", 2500), ("ar-2", 7500)]))
            .unwrap();
        let csv = file(&[
            "2025-03,spotify,USRC17607839,ar-1,SE,1520,4210,EUR",
            "2025-03,spotify,duet,,DE,10,1001,EUR",
            "2025-03,spotify,duet,ar-9,DE,1,-1,EUR",
            "2025-03,spotify,solo,ar-2,US,5,250,USD",
        ]);
        let import = h.royalty.import_dsp_statement(&csv).unwrap();
        assert_eq!(import.lines, 4);
        assert!(!import.receipt.replayed);
        assert!(import.receipt.reference.starts_with("spotify/2025-03/"));
        let credits: Vec<(String, String, i64)> = import
            .receipt
            .postings
            .iter()
            .filter(|p| p.kind == PostingKind::Credit)
            .map(|p| (p.account.clone(), p.currency.to_string(), p.amount_minor))
            .collect();
        // duet: 1000 net → 250 / 750; ar-9 is ignored because the sheet decides.
        assert_eq!(
            credits,
            vec![
                ("ar-1".into(), "EUR".into(), 4210 + 250),
                ("ar-2".into(), "EUR".into(), 750),
                ("ar-2".into(), "USD".into(), 250),
            ]
        );
        assert!(import
            .receipt
            .postings
            .iter()
            .all(|p| p.source == "dsp:spotify"));
        let again = h.royalty.import_dsp_statement(&csv).unwrap();
        assert!(again.receipt.replayed);
        assert_eq!(again.receipt.postings, import.receipt.postings);

        // A supplementary statement for the same period is a new import.
        let extra = file(&["2025-03,spotify,solo,ar-2,US,1,50,USD"]);
        assert!(
            !h.royalty
                .import_dsp_statement(&extra)
                .unwrap()
                .receipt
                .replayed
        );
    }

    #[test]
    fn missing_artist_without_split_sheet_names_the_cell() {
        let h = Harness::new();
        let err = h
            .royalty
            .import_dsp_statement(&file(&[
                "2025-03,spotify,s,a,SE,1,1,EUR",
                "2025-03,spotify,lonely,,SE,1,1,EUR",
            ]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dsp statement: line 3, column 4 (artist_id): empty, and \"lonely\" has no split sheet"
        );
        assert_eq!(h.royalty.last_seq().unwrap(), 0);
    }
}
