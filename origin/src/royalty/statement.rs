//! Monthly artist statements and the revenue breakdown by source and period.
//!
//! Both read the per-artist, per-month, per-currency totals that [`Booking`](super::booking)
//! keeps in step with every posting, so they cost a scan of an artist's months, not of every
//! posting ever booked.
//!
//! Periods are calendar months (UTC) of **booking** time: a posting belongs to the month in
//! which the input was applied, like a label's accounting period, so a closed month's statement
//! never changes afterwards. The usage period or DSP sales month an amount relates to is in its
//! posting memo.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::account::ArtistAccount;
use super::calendar::Month;
use super::csv::{text_cell, CsvWriter};
use super::engine::Royalty;
use super::money::{add_minor, Currency};
use super::posting::PostingKind;
use super::store::{artist_prefix, currency_at, split_artist, MonthTotals, TreeId};
use super::RoyaltyError;

/// One aggregated statement line: every posting of one kind and source in the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Credit, withholding, payout or adjustment.
    pub kind: PostingKind,
    /// Revenue source (`plays`, `tips`, `dsp:spotify`, `payout:bank` …).
    pub source: String,
    /// Number of postings aggregated.
    pub count: u64,
    /// Their sum, in minor units (effect on the pending balance).
    pub amount_minor: i64,
}

/// An artist's month in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyStatement {
    /// The currency of every amount here.
    pub currency: Currency,
    /// Pending balance at the start of the month.
    pub opening_pending_minor: i64,
    /// The month's lines, by kind then source.
    pub lines: Vec<StatementLine>,
    /// Credits and adjustments in the month.
    pub earned_minor: i64,
    /// Tax withheld in the month (positive when withheld).
    pub withheld_minor: i64,
    /// Paid out in the month (positive when paid).
    pub paid_minor: i64,
    /// Pending balance at the end of the month:
    /// `opening + earned − withheld − paid`.
    pub closing_pending_minor: i64,
}

/// An artist's monthly statement, one section per currency with activity or a balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The artist.
    pub artist_id: String,
    /// Display name, if the artist has an account.
    pub name: Option<String>,
    /// Tax country, if the artist has an account.
    pub tax_country: Option<String>,
    /// The month.
    pub period: Month,
    /// Per-currency sections, by currency code.
    pub currencies: Vec<CurrencyStatement>,
}

/// Header of [`Statement::to_csv`].
pub const STATEMENT_CSV_HEADER: [&str; 9] = [
    "artist_id",
    "period",
    "currency",
    "row",
    "kind",
    "source",
    "count",
    "amount_minor",
    "amount",
];

impl Statement {
    /// The statement as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Plain structs with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("statement serializes")
    }

    /// The statement as CSV with header [`STATEMENT_CSV_HEADER`]: per currency an
    /// `opening_balance` row, one `line` row per line, `earned`, `withheld`, `paid` totals and a
    /// `closing_balance` row; `amount` is the decimal form of `amount_minor`.
    pub fn to_csv(&self) -> String {
        let mut w = CsvWriter::with_header(&STATEMENT_CSV_HEADER);
        let artist = text_cell(&self.artist_id);
        let period = self.period.to_string();
        for c in &self.currencies {
            let code = c.currency.to_string();
            let mut row = |row: &str, kind: &str, source: &str, count: String, minor: i64| {
                w.row(&[
                    artist.as_str(),
                    &period,
                    &code,
                    row,
                    kind,
                    &text_cell(source),
                    &count,
                    &minor.to_string(),
                    &c.currency.format_minor(minor),
                ]);
            };
            row(
                "opening_balance",
                "",
                "",
                String::new(),
                c.opening_pending_minor,
            );
            for l in &c.lines {
                row(
                    "line",
                    l.kind.as_str(),
                    &l.source,
                    l.count.to_string(),
                    l.amount_minor,
                );
            }
            row("earned", "", "", String::new(), c.earned_minor);
            row("withheld", "", "", String::new(), c.withheld_minor);
            row("paid", "", "", String::new(), c.paid_minor);
            row(
                "closing_balance",
                "",
                "",
                String::new(),
                c.closing_pending_minor,
            );
        }
        w.finish()
    }
}

/// Which revenue to break down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueQuery {
    /// Only this artist (all artists if `None`).
    pub artist_id: Option<String>,
    /// First month included (from the beginning if `None`).
    pub from: Option<Month>,
    /// Last month included (to the end if `None`).
    pub to: Option<Month>,
}

/// Revenue of one source in one month and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueRow {
    /// Booking month.
    pub period: Month,
    /// `plays`, `tips`, `subscriptions`, `dsp:<name>`, `adjustments`.
    pub source: String,
    /// Currency.
    pub currency: Currency,
    /// Gross revenue (credits and adjustments, before withholding), minor units.
    pub amount_minor: i64,
}

/// Gross revenue (before withholding) by source and by month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueBreakdown {
    /// Per (month, source, currency), ordered by month, source, currency.
    pub rows: Vec<RevenueRow>,
    /// Per (source, currency) over the whole range.
    pub by_source: Vec<(String, Currency, i64)>,
    /// Per (month, currency) over all sources.
    pub by_period: Vec<(Month, Currency, i64)>,
}

impl RevenueBreakdown {
    /// The rows as CSV: `period,source,currency,amount_minor,amount`.
    pub fn to_csv(&self) -> String {
        let mut w =
            CsvWriter::with_header(&["period", "source", "currency", "amount_minor", "amount"]);
        for r in &self.rows {
            w.row(&[
                r.period.to_string(),
                text_cell(&r.source),
                r.currency.to_string(),
                r.amount_minor.to_string(),
                r.currency.format_minor(r.amount_minor),
            ]);
        }
        w.finish()
    }
}

/// Decodes a [`TreeId::Months`] key into (artist, month, currency).
fn month_key_parts(key: &[u8]) -> Result<(String, Month, Currency), RoyaltyError> {
    split_artist(key)
        .and_then(|(artist, rest)| {
            let index = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            Some((
                artist,
                Month::from_index(index)?,
                currency_at(rest.get(4..)?)?,
            ))
        })
        .ok_or_else(|| RoyaltyError::Corrupt {
            tree: TreeId::Months.name(),
            problem: format!("bad key {}", hex::encode(key)),
        })
}

fn is_revenue(kind: PostingKind) -> bool {
    matches!(kind, PostingKind::Credit | PostingKind::Adjustment)
}

impl Royalty {
    /// The artist's statement for `period`.
    ///
    /// # Errors
    /// [`RoyaltyError::Money`] if a total overflows; [`RoyaltyError::Storage`],
    /// [`RoyaltyError::Corrupt`].
    pub fn statement(&self, artist_id: &str, period: Month) -> Result<Statement, RoyaltyError> {
        let _guard = self.lock();
        let account: Option<ArtistAccount> = self.account_unlocked(artist_id)?;
        let mut sections: BTreeMap<Currency, CurrencyStatement> = BTreeMap::new();
        let months = self
            .store()
            .scan::<MonthTotals>(TreeId::Months, &artist_prefix(artist_id))?;
        for (key, totals) in months {
            let (_, month, currency) = month_key_parts(&key)?;
            if month > period {
                continue;
            }
            let s = sections
                .entry(currency)
                .or_insert_with(|| CurrencyStatement {
                    currency,
                    opening_pending_minor: 0,
                    lines: Vec::new(),
                    earned_minor: 0,
                    withheld_minor: 0,
                    paid_minor: 0,
                    closing_pending_minor: 0,
                });
            for ((kind, source), line) in totals.lines {
                if month < period {
                    s.opening_pending_minor =
                        add_minor(s.opening_pending_minor, line.amount_minor)?;
                    continue;
                }
                match kind {
                    PostingKind::Credit | PostingKind::Adjustment => {
                        s.earned_minor = add_minor(s.earned_minor, line.amount_minor)?;
                    }
                    PostingKind::Withholding => {
                        s.withheld_minor = add_minor(s.withheld_minor, -line.amount_minor)?;
                    }
                    PostingKind::Payout => {
                        s.paid_minor = add_minor(s.paid_minor, -line.amount_minor)?
                    }
                }
                s.lines.push(StatementLine {
                    kind,
                    source,
                    count: line.count,
                    amount_minor: line.amount_minor,
                });
            }
        }
        let mut currencies = Vec::new();
        for (_, mut s) in sections {
            let net = s
                .lines
                .iter()
                .try_fold(0i64, |acc, l| add_minor(acc, l.amount_minor))?;
            s.closing_pending_minor = add_minor(s.opening_pending_minor, net)?;
            if !s.lines.is_empty() || s.opening_pending_minor != 0 {
                currencies.push(s);
            }
        }
        Ok(Statement {
            artist_id: artist_id.to_string(),
            name: account.as_ref().map(|a| a.name.clone()),
            tax_country: account.map(|a| a.tax_country),
            period,
            currencies,
        })
    }

    /// Statements for `period` of every artist with activity in it or a balance carried into it.
    ///
    /// # Errors
    /// As [`Royalty::statement`].
    pub fn statements(&self, period: Month) -> Result<Vec<Statement>, RoyaltyError> {
        let mut artists = Vec::new();
        {
            let _guard = self.lock();
            for item in self.store().tree(TreeId::Months).iter().keys() {
                let key = item?;
                let (artist, _, _) = month_key_parts(&key)?;
                if artists.last() != Some(&artist) {
                    artists.push(artist);
                }
            }
        }
        let mut out = Vec::new();
        for artist in artists {
            let s = self.statement(&artist, period)?;
            if !s.currencies.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Gross revenue (credits and adjustments, before withholding) by source and by month.
    ///
    /// # Errors
    /// [`RoyaltyError::Money`] if a total overflows; [`RoyaltyError::Storage`],
    /// [`RoyaltyError::Corrupt`].
    pub fn revenue_breakdown(
        &self,
        query: &RevenueQuery,
    ) -> Result<RevenueBreakdown, RoyaltyError> {
        let _guard = self.lock();
        let prefix = query
            .artist_id
            .as_deref()
            .map(artist_prefix)
            .unwrap_or_default();
        let mut rows: BTreeMap<(Month, String, Currency), i64> = BTreeMap::new();
        let mut by_source: BTreeMap<(String, Currency), i64> = BTreeMap::new();
        let mut by_period: BTreeMap<(Month, Currency), i64> = BTreeMap::new();
        for (key, totals) in self.store().scan::<MonthTotals>(TreeId::Months, &prefix)? {
            let (_, month, currency) = month_key_parts(&key)?;
            if query.from.is_some_and(|f| month < f) || query.to.is_some_and(|t| month > t) {
                continue;
            }
            for ((kind, source), line) in totals.lines {
                if !is_revenue(kind) {
                    continue;
                }
                let a = line.amount_minor;
                let slot = rows.entry((month, source.clone(), currency)).or_insert(0);
                *slot = add_minor(*slot, a)?;
                let slot = by_source.entry((source, currency)).or_insert(0);
                *slot = add_minor(*slot, a)?;
                let slot = by_period.entry((month, currency)).or_insert(0);
                *slot = add_minor(*slot, a)?;
            }
        }
        Ok(RevenueBreakdown {
            rows: rows
                .into_iter()
                .map(|((period, source, currency), amount_minor)| RevenueRow {
                    period,
                    source,
                    currency,
                    amount_minor,
                })
                .collect(),
            by_source: by_source.into_iter().map(|((s, c), a)| (s, c, a)).collect(),
            by_period: by_period.into_iter().map(|((m, c), a)| (m, c, a)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{crypto_account, entry, tip, usd, Harness};
    use super::super::{Adjustment, AdjustmentTarget, Money};
    use super::*;

    fn march() -> Month {
        Month::new(2025, 3).unwrap()
    }

    fn april() -> Month {
        Month::new(2025, 4).unwrap()
    }

    #[test]
    fn statement_has_opening_lines_totals_and_closing() {
        let h = Harness::new();
        h.royalty.create_account(crypto_account("a", "US")).unwrap();
        h.set_time(march().start_ms() + 5);
        tip(&h, "t1", "a", usd(1000));
        h.set_time(april().start_ms() + 5);
        tip(&h, "t2", "a", usd(2000));
        h.royalty
            .record_usage("u1", 0, 1, &[entry("s", "a", "US", 3_600_000, 100)])
            .unwrap();
        h.royalty
            .record_adjustment(&Adjustment {
                reference: "adj".into(),
                target: AdjustmentTarget::Artist("a".into()),
                amount: usd(-100),
                memo: "correction".into(),
            })
            .unwrap();
        tip(
            &h,
            "t3",
            "a",
            Money::new(700, Currency::new("JPY").unwrap()),
        );

        let s = h.royalty.statement("a", april()).unwrap();
        assert_eq!(s.name.as_deref(), Some("Artist a"));
        assert_eq!(s.currencies.len(), 2);
        let jpy = &s.currencies[0];
        assert_eq!(
            (jpy.currency.as_str(), jpy.opening_pending_minor),
            ("JPY", 0)
        );
        assert_eq!(jpy.closing_pending_minor, 700 - 210);
        let usd_s = &s.currencies[1];
        // March: 1000 tip − 300 withheld (US placeholder 30 %).
        assert_eq!(usd_s.opening_pending_minor, 700);
        // April: tip 2000; plays 3600 s × 0.001 + 100 × 0.3 = 33.6 → 33 booked; adjustment −100.
        assert_eq!(usd_s.earned_minor, 2000 + 33 - 100);
        // Withholding carries: 2000 → 600; 33 → 9.9 → 9 (0.9 carried); −100 → −30 + 0.9 → −30.
        assert_eq!(usd_s.withheld_minor, 600 + 9 - 30);
        assert_eq!(usd_s.paid_minor, 0);
        assert_eq!(
            usd_s.closing_pending_minor,
            usd_s.opening_pending_minor + usd_s.earned_minor - usd_s.withheld_minor
        );
        assert_eq!(
            usd_s.closing_pending_minor,
            h.royalty.balance("a").unwrap()[1].pending_minor
        );
        let sources: Vec<(PostingKind, &str)> = usd_s
            .lines
            .iter()
            .map(|l| (l.kind, l.source.as_str()))
            .collect();
        assert_eq!(
            sources,
            vec![
                (PostingKind::Credit, "plays"),
                (PostingKind::Credit, "tips"),
                (PostingKind::Withholding, "adjustments"),
                (PostingKind::Withholding, "plays"),
                (PostingKind::Withholding, "tips"),
                (PostingKind::Adjustment, "adjustments"),
            ]
        );

        // March alone: no opening, closing = 700; May: only the carried balances.
        let m = h.royalty.statement("a", march()).unwrap();
        assert_eq!(
            (m.currencies.len(), m.currencies[0].closing_pending_minor),
            (1, 700)
        );
        let may = h
            .royalty
            .statement("a", Month::new(2025, 5).unwrap())
            .unwrap();
        assert!(may
            .currencies
            .iter()
            .all(|c| c.lines.is_empty() && c.opening_pending_minor == c.closing_pending_minor));
        assert!(h
            .royalty
            .statement("nobody", march())
            .unwrap()
            .currencies
            .is_empty());
    }

    #[test]
    fn statement_json_and_csv() {
        let h = Harness::new();
        h.set_time(march().start_ms());
        tip(&h, "t1", "=evil", usd(1234));
        let s = h.royalty.statement("=evil", march()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(json["period"], "2025-03");
        assert_eq!(json["currencies"][0]["closing_pending_minor"], 1234);
        assert_eq!(
            s.to_csv(),
            "artist_id,period,currency,row,kind,source,count,amount_minor,amount\n\
             '=evil,2025-03,USD,opening_balance,,,,0,0.00\n\
             '=evil,2025-03,USD,line,credit,tips,1,1234,12.34\n\
             '=evil,2025-03,USD,earned,,,,1234,12.34\n\
             '=evil,2025-03,USD,withheld,,,,0,0.00\n\
             '=evil,2025-03,USD,paid,,,,0,0.00\n\
             '=evil,2025-03,USD,closing_balance,,,,1234,12.34\n"
        );
        let all = h.royalty.statements(march()).unwrap();
        assert_eq!(all.len(), 1);
        assert!(h
            .royalty
            .statements(Month::new(2025, 2).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn revenue_by_source_and_period() {
        let h = Harness::new();
        h.royalty.create_account(crypto_account("a", "US")).unwrap();
        h.set_time(march().start_ms());
        tip(&h, "t1", "a", usd(1000));
        tip(&h, "t2", "b", usd(500));
        h.set_time(april().start_ms());
        tip(&h, "t3", "a", usd(300));
        h.royalty
            .import_dsp_statement(
                b"period,dsp,isrc_or_content_id,artist_id,country,units,amount_minor,currency\n\
                  2025-02,deezer,x,a,FR,3,90,USD\n",
            )
            .unwrap();
        let all = h
            .royalty
            .revenue_breakdown(&RevenueQuery::default())
            .unwrap();
        assert_eq!(
            all.by_source,
            vec![
                ("dsp:deezer".to_string(), Currency::USD, 90),
                ("tips".to_string(), Currency::USD, 1800)
            ]
        );
        assert_eq!(
            all.by_period,
            vec![
                (march(), Currency::USD, 1500),
                (april(), Currency::USD, 390)
            ]
        );
        assert_eq!(all.rows.len(), 3);
        let only_a_april = h
            .royalty
            .revenue_breakdown(&RevenueQuery {
                artist_id: Some("a".into()),
                from: Some(april()),
                to: None,
            })
            .unwrap();
        assert_eq!(only_a_april.by_period, vec![(april(), Currency::USD, 390)]);
        let csv = only_a_april.to_csv();
        assert!(csv.contains("2025-04,dsp:deezer,USD,90,0.90\n"), "{csv}");
        let none = h
            .royalty
            .revenue_breakdown(&RevenueQuery {
                artist_id: None,
                from: None,
                to: Some(Month::new(2025, 2).unwrap()),
            })
            .unwrap();
        assert_eq!(none, RevenueBreakdown::default());
    }
}
