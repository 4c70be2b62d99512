//! The money-bearing inputs: play usage, tips, subscriptions and manual adjustments.
//!
//! Each is idempotent by its caller-given `reference` (per input kind): the first submission is
//! applied in one transaction, an identical repeat returns the original [`Receipt`] (with
//! `replayed: true`) and changes nothing, and a repeat with different data is refused with
//! [`RoyaltyError::ReferenceReused`] rather than silently ignored.
//!
//! Credits for a content id with a [`SplitSheet`](super::SplitSheet) are divided among its
//! collaborators by largest remainder before they are booked; tips and artist-targeted inputs go
//! to the artist named.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::booking::Booking;
use super::calendar::Month;
use super::config::{check_country, ANY_COUNTRY};
use super::engine::Royalty;
use super::error::{
    check_content_id, check_id, check_text, invalid, MAX_ARTIST_ID_BYTES, MAX_REFERENCE_BYTES,
};
use super::money::{to_minor, Currency, Money, MoneyError};
use super::posting::{PostingKind, Receipt};
use super::split::{accumulate, accumulate_split, largest_remainder, SheetCache};
use super::store::{watch_key, TreeId};
use super::RoyaltyError;
use crate::utc::{format_utc, MAX_TIME_MS};

/// Source name of play credits.
pub const SOURCE_PLAYS: &str = "plays";
/// Source name of tips.
pub const SOURCE_TIPS: &str = "tips";
/// Source name of subscription allocations.
pub const SOURCE_SUBSCRIPTIONS: &str = "subscriptions";
/// Source name of manual adjustments.
pub const SOURCE_ADJUSTMENTS: &str = "adjustments";

/// Most entries in one usage batch; bounds the size of one sled transaction.
pub const MAX_USAGE_ENTRIES: usize = 100_000;

/// What one content earned in one viewer country during a usage period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEntry {
    /// The content watched.
    pub content_id: String,
    /// The content's artist (credited unless the content has a split sheet).
    pub artist_id: String,
    /// Viewer country (ISO 3166-1 alpha-2), or `"*"` when unknown; selects the rate.
    pub country: String,
    /// Milliseconds watched.
    pub seconds_ms: u64,
    /// Plays counted by the node (≥ 30 s of one content by one viewer session).
    pub plays: u64,
}

/// A tip from a viewer to an artist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// Idempotency reference (e.g. the payment provider's charge id).
    pub reference: String,
    /// The artist tipped.
    pub artist_id: String,
    /// The amount, positive, in any currency.
    pub amount: Money,
    /// Who tipped (free text, may be empty), shown in the posting memo.
    pub from: String,
}

/// How a subscription payment is divided among artists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAllocation {
    /// In proportion to the milliseconds watched of each content during the period (all
    /// viewers), by largest remainder; split sheets then divide each content's part.
    BySecondsWatched,
    /// Entirely to one artist.
    Artist(String),
}

/// A subscription payment to allocate to artists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Idempotency reference (e.g. the invoice id).
    pub reference: String,
    /// The month whose usage decides the allocation.
    pub period: Month,
    /// The amount, positive, in any currency.
    pub amount: Money,
    /// How to divide it.
    pub allocation: SubscriptionAllocation,
}

/// Who a manual adjustment applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentTarget {
    /// One artist.
    Artist(String),
    /// A content's collaborators, by its split sheet (which must exist).
    Content(String),
}

/// A manual correction of earnings (positive or negative); withholding follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// Idempotency reference (e.g. the ticket number).
    pub reference: String,
    /// Who is adjusted.
    pub target: AdjustmentTarget,
    /// The correction, non-zero; negative to claw back.
    pub amount: Money,
    /// Why (required: an adjustment without a reason is not auditable).
    pub memo: String,
}

/// Books per-artist minor-unit totals as credits of `kind`.
fn book_totals(
    b: &mut Booking<'_>,
    totals: BTreeMap<String, i128>,
    currency: Currency,
    kind: PostingKind,
    source: &str,
    memo: &str,
) -> Result<(), RoyaltyError> {
    for (artist, amount) in totals {
        b.credit(&artist, currency, to_minor(amount)?, kind, source, memo)?;
    }
    Ok(())
}

fn check_reference(reference: &str) -> Result<(), RoyaltyError> {
    check_id("reference", reference, MAX_REFERENCE_BYTES)
}

fn check_artist(field: &str, artist: &str) -> Result<(), RoyaltyError> {
    check_id(field, artist, MAX_ARTIST_ID_BYTES)
}

impl Royalty {
    /// Credits play usage of one period: each entry earns `seconds_ms × per_second_micro +
    /// plays × per_play_micro × 1000` nano-units at its country's rate (the `"*"` rate if the
    /// country has none), split by the content's split sheet if any, and each artist's total is
    /// booked in whole minor units of the configured currency with the remainder carried
    /// forward. The milliseconds are also counted towards the month of `period_start_ms` for
    /// subscription allocation.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] naming the field (`entries[3].country` …) for a malformed
    /// reference, id or country, `period_start_ms > period_end_ms`, a time past year 9999, or
    /// more than [`MAX_USAGE_ENTRIES`] entries; [`RoyaltyError::ReferenceReused`];
    /// [`RoyaltyError::Money`] on overflow; [`RoyaltyError::Storage`].
    pub fn record_usage(
        &self,
        reference: &str,
        period_start_ms: u64,
        period_end_ms: u64,
        entries: &[UsageEntry],
    ) -> Result<Receipt, RoyaltyError> {
        check_reference(reference)?;
        if period_start_ms > period_end_ms {
            return Err(invalid("period_start_ms", "is after period_end_ms"));
        }
        if period_end_ms > MAX_TIME_MS {
            return Err(invalid(
                "period_end_ms",
                "is past year 9999 (milliseconds expected)",
            ));
        }
        if entries.len() > MAX_USAGE_ENTRIES {
            return Err(invalid(
                "entries",
                format!(
                    "{} entries, at most {MAX_USAGE_ENTRIES} per batch",
                    entries.len()
                ),
            ));
        }
        for (i, e) in entries.iter().enumerate() {
            check_content_id(&format!("entries[{i}].content_id"), &e.content_id)?;
            check_artist(&format!("entries[{i}].artist_id"), &e.artist_id)?;
            if e.country != ANY_COUNTRY {
                check_country(&e.country)
                    .map_err(|p| invalid(format!("entries[{i}].country"), p))?;
            }
        }
        let data = (period_start_ms, period_end_ms, entries);
        let currency = self.rate_currency();
        let month = Month::from_ms(period_start_ms);
        let memo = format!(
            "usage {} .. {}",
            format_utc(period_start_ms),
            format_utc(period_end_ms)
        );
        self.apply_input("usage", reference, &data, |b| {
            let mut sheets = SheetCache::default();
            let mut totals: BTreeMap<String, i128> = BTreeMap::new();
            let mut watched: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            for e in entries {
                let rate = self.config().rate_for(&e.country);
                let nano = i128::from(e.seconds_ms)
                    .checked_mul(i128::from(rate.per_second_micro))
                    .and_then(|s| {
                        let p = i128::from(e.plays)
                            .checked_mul(i128::from(rate.per_play_micro))?
                            .checked_mul(1000)?;
                        s.checked_add(p)
                    })
                    .ok_or(MoneyError::Overflow)?;
                let sheet = sheets.get(b, &e.content_id)?;
                accumulate_split(&mut totals, sheet.as_ref(), &e.artist_id, nano)?;
                let slot = watched
                    .entry(watch_key(month, &e.content_id, &e.artist_id))
                    .or_insert(0);
                *slot = slot.checked_add(e.seconds_ms).ok_or(MoneyError::Overflow)?;
            }
            for (key, ms) in watched {
                let before: u64 = b.staging().get(TreeId::Watch, &key)?.unwrap_or(0);
                let after = before.checked_add(ms).ok_or(MoneyError::Overflow)?;
                b.staging().put(TreeId::Watch, key, &after)?;
            }
            for (artist, nano) in totals {
                b.credit_nano(&artist, currency, nano, SOURCE_PLAYS, &memo)?;
            }
            Ok(())
        })
    }

    /// Credits a tip to its artist (no split: a tip is for the artist named).
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] for a malformed reference or artist id, a non-positive
    /// amount or a bad `from`; [`RoyaltyError::ReferenceReused`]; [`RoyaltyError::Storage`].
    pub fn record_tip(&self, tip: &Tip) -> Result<Receipt, RoyaltyError> {
        check_reference(&tip.reference)?;
        check_artist("artist_id", &tip.artist_id)?;
        check_text("from", &tip.from, true)?;
        if tip.amount.minor <= 0 {
            return Err(invalid("amount", "a tip must be positive"));
        }
        let memo = if tip.from.is_empty() {
            "tip".to_string()
        } else {
            format!("tip from {}", tip.from)
        };
        self.apply_input("tip", &tip.reference, tip, |b| {
            b.credit(
                &tip.artist_id,
                tip.amount.currency,
                tip.amount.minor,
                PostingKind::Credit,
                SOURCE_TIPS,
                &memo,
            )
        })
    }

    /// Allocates a subscription payment to artists, by share of milliseconds watched in
    /// `period` or entirely to one artist.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] for a malformed reference or artist, a non-positive
    /// amount; [`RoyaltyError::NoUsageInPeriod`] when allocating by seconds in a month without
    /// usage; [`RoyaltyError::ReferenceReused`]; [`RoyaltyError::Money`];
    /// [`RoyaltyError::Storage`].
    pub fn record_subscription(&self, sub: &Subscription) -> Result<Receipt, RoyaltyError> {
        check_reference(&sub.reference)?;
        if let SubscriptionAllocation::Artist(artist) = &sub.allocation {
            check_artist("allocation.artist", artist)?;
        }
        if sub.amount.minor <= 0 {
            return Err(invalid("amount", "a subscription payment must be positive"));
        }
        let currency = sub.amount.currency;
        self.apply_input("subscription", &sub.reference, sub, |b| {
            let mut totals: BTreeMap<String, i128> = BTreeMap::new();
            let memo = match &sub.allocation {
                SubscriptionAllocation::Artist(artist) => {
                    accumulate(&mut totals, artist, i128::from(sub.amount.minor))?;
                    format!("subscription {}", sub.period)
                }
                SubscriptionAllocation::BySecondsWatched => {
                    let prefix = sub.period.index().to_be_bytes();
                    let mut weights: Vec<((String, String), u128)> = Vec::new();
                    for (key, ms) in b.staging().store().scan::<u64>(TreeId::Watch, &prefix)? {
                        let rest = &key[prefix.len()..];
                        let (content, artist) = super::store::split_artist(rest)
                            .and_then(|(c, a)| Some((c, std::str::from_utf8(a).ok()?.to_string())))
                            .ok_or_else(|| RoyaltyError::Corrupt {
                                tree: TreeId::Watch.name(),
                                problem: format!("bad key {}", hex::encode(&key)),
                            })?;
                        weights.push(((content, artist), u128::from(ms)));
                    }
                    let parts = largest_remainder(i128::from(sub.amount.minor), &weights)
                        .ok_or_else(|| RoyaltyError::NoUsageInPeriod {
                            reference: sub.reference.clone(),
                            period: sub.period,
                        })?;
                    let mut sheets = SheetCache::default();
                    for ((content, artist), part) in parts {
                        let sheet = sheets.get(b, &content)?;
                        accumulate_split(&mut totals, sheet.as_ref(), &artist, part)?;
                    }
                    format!("subscription {} by seconds watched", sub.period)
                }
            };
            book_totals(
                b,
                totals,
                currency,
                PostingKind::Credit,
                SOURCE_SUBSCRIPTIONS,
                &memo,
            )
        })
    }

    /// Books a manual adjustment to one artist, or to a content's collaborators by its split
    /// sheet. Withholding follows the adjustment (a negative one releases withholding).
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] for a malformed reference or target, a zero amount, an
    /// empty memo; [`RoyaltyError::NoSplitSheet`] for a content without one;
    /// [`RoyaltyError::ReferenceReused`]; [`RoyaltyError::Money`]; [`RoyaltyError::Storage`].
    pub fn record_adjustment(&self, adj: &Adjustment) -> Result<Receipt, RoyaltyError> {
        check_reference(&adj.reference)?;
        check_text("memo", &adj.memo, false)?;
        match &adj.target {
            AdjustmentTarget::Artist(artist) => check_artist("target.artist", artist)?,
            AdjustmentTarget::Content(content) => check_content_id("target.content", content)?,
        }
        if adj.amount.minor == 0 {
            return Err(invalid("amount", "an adjustment must not be zero"));
        }
        self.apply_input("adjustment", &adj.reference, adj, |b| {
            let mut totals: BTreeMap<String, i128> = BTreeMap::new();
            let amount = i128::from(adj.amount.minor);
            match &adj.target {
                AdjustmentTarget::Artist(artist) => accumulate(&mut totals, artist, amount)?,
                AdjustmentTarget::Content(content) => {
                    let sheet = SheetCache::default()
                        .get(b, content)?
                        .ok_or_else(|| RoyaltyError::NoSplitSheet(content.clone()))?;
                    accumulate_split(&mut totals, Some(&sheet), "", amount)?;
                }
            }
            book_totals(
                b,
                totals,
                adj.amount.currency,
                PostingKind::Adjustment,
                SOURCE_ADJUSTMENTS,
                &adj.memo,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{crypto_account, entry, sheet, usd, Harness};
    use super::super::{RateConfig, RoyaltyConfig};
    use super::*;

    fn rates(per_second_micro: u64, per_play_micro: u64) -> RoyaltyConfig {
        let mut c = RoyaltyConfig::default();
        c.rates.insert(
            "*".into(),
            RateConfig {
                per_second_micro,
                per_play_micro,
            },
        );
        c
    }

    #[test]
    fn rates_times_seconds_with_remainders_carried() {
        // 333 µ/s and 1 234 567 µ/play: nothing here divides evenly.
        let h = Harness::with_config(rates(333, 1_234_567));
        let mut rng = fastrand::Rng::with_seed(7);
        let mut exact_nano: i128 = 0;
        for i in 0..200 {
            let e = entry("song", "a", "FR", rng.u64(..400_000), rng.u64(..5));
            exact_nano += i128::from(e.seconds_ms) * 333 + i128::from(e.plays) * 1_234_567_000;
            h.royalty
                .record_usage(&format!("u{i}"), 1000, 2000, &[e])
                .unwrap();
            let b = &h.royalty.balance("a").unwrap()[0];
            // Booked units plus the carried nano-units are exactly the money earned so far.
            assert_eq!(
                i128::from(b.earned_minor) * 1_000_000_000 + i128::from(b.play_carry_nano),
                exact_nano
            );
            assert!((0..1_000_000_000).contains(&b.play_carry_nano));
        }
    }

    #[test]
    fn sub_cent_per_second_rate() {
        // 0.0001 minor units per second: one hour watched is 0.36 units, booked at the third.
        let h = Harness::with_config(rates(100, 0));
        for i in 0..3 {
            let r = h
                .royalty
                .record_usage(
                    &format!("u{i}"),
                    0,
                    1,
                    &[entry("s", "a", "*", 3_600_000, 0)],
                )
                .unwrap();
            assert_eq!(r.postings.len(), usize::from(i == 2));
        }
        let b = &h.royalty.balance("a").unwrap()[0];
        assert_eq!((b.earned_minor, b.play_carry_nano), (1, 80_000_000));
    }

    #[test]
    fn country_rates_and_fallback() {
        let mut c = rates(0, 1_000_000); // 1 unit per play elsewhere
        c.rates.insert(
            "NO".into(),
            RateConfig {
                per_second_micro: 0,
                per_play_micro: 5_000_000,
            },
        );
        let h = Harness::with_config(c);
        h.royalty
            .record_usage(
                "u",
                0,
                1,
                &[
                    entry("s", "a", "NO", 0, 2),
                    entry("s", "a", "BR", 0, 3),
                    entry("s", "a", "*", 0, 1),
                ],
            )
            .unwrap();
        assert_eq!(h.royalty.balance("a").unwrap()[0].earned_minor, 10 + 3 + 1);
    }

    #[test]
    fn usage_is_idempotent_and_conflicts_are_refused() {
        let h = Harness::with_config(rates(1_000, 300_000));
        let entries = [entry("s", "a", "US", 600_000, 10)];
        let first = h
            .royalty
            .record_usage("node1/1", 0, 60_000, &entries)
            .unwrap();
        assert!(!first.replayed);
        let before = h.royalty.balances().unwrap();
        let again = h
            .royalty
            .record_usage("node1/1", 0, 60_000, &entries)
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.postings, first.postings);
        assert_eq!(h.royalty.balances().unwrap(), before);
        let err = h
            .royalty
            .record_usage("node1/1", 0, 60_000, &[entry("s", "a", "US", 1, 10)])
            .unwrap_err();
        assert!(matches!(
            err,
            RoyaltyError::ReferenceReused { kind: "usage", .. }
        ));
        // The same reference in another input kind is a different input.
        h.royalty
            .record_tip(&Tip {
                reference: "node1/1".into(),
                artist_id: "a".into(),
                amount: usd(1),
                from: String::new(),
            })
            .unwrap();
    }

    #[test]
    fn usage_validation_names_the_field() {
        let h = Harness::new();
        let field = |r: Result<Receipt, RoyaltyError>| match r.unwrap_err() {
            RoyaltyError::InvalidInput { field, .. } => field,
            other => panic!("{other}"),
        };
        let ok = entry("s", "a", "US", 1, 0);
        let mut bad = ok.clone();
        bad.country = "us".into();
        assert_eq!(
            field(h.royalty.record_usage("r", 0, 1, &[ok.clone(), bad])),
            "entries[1].country"
        );
        let mut bad = ok.clone();
        bad.content_id = "a b".into();
        assert_eq!(
            field(h.royalty.record_usage("r", 0, 1, &[bad])),
            "entries[0].content_id"
        );
        assert_eq!(field(h.royalty.record_usage("", 0, 1, &[])), "reference");
        assert_eq!(
            field(h.royalty.record_usage("r", 2, 1, &[])),
            "period_start_ms"
        );
        assert_eq!(
            field(h.royalty.record_usage("r", 0, u64::MAX, &[])),
            "period_end_ms"
        );
        assert_eq!(h.royalty.last_seq().unwrap(), 0);
    }

    #[test]
    fn split_sheets_divide_play_credits_exactly() {
        let h = Harness::with_config(rates(0, 1_000_000)); // 1 unit per play
        h.royalty
            .set_split_sheet(sheet("song", &[("a", 3333), ("b", 3333), ("c", 3334)]))
            .unwrap();
        let mut total = 0;
        for i in 0..50u64 {
            let plays = i * 7 + 1;
            total += plays as i64;
            h.royalty
                .record_usage(&format!("u{i}"), 0, 1, &[entry("song", "a", "*", 0, plays)])
                .unwrap();
        }
        let earned: i64 = h
            .royalty
            .balances()
            .unwrap()
            .iter()
            .map(|b| b.earned_minor)
            .sum();
        let carried: i64 = h
            .royalty
            .balances()
            .unwrap()
            .iter()
            .map(|b| b.play_carry_nano)
            .sum();
        assert_eq!(
            i128::from(earned) * 1_000_000_000 + i128::from(carried),
            i128::from(total) * 1_000_000_000
        );
        assert_eq!(h.royalty.balances().unwrap().len(), 3);
    }

    #[test]
    fn withholding_follows_the_artists_tax_country_not_the_viewers() {
        let h = Harness::with_config(rates(0, 1_000_000));
        h.royalty
            .create_account(crypto_account("jp", "JP"))
            .unwrap();
        h.royalty
            .create_account(crypto_account("fr", "FR"))
            .unwrap();
        h.royalty
            .record_usage(
                "u",
                0,
                1,
                &[
                    entry("s1", "jp", "US", 0, 10_000),
                    entry("s2", "fr", "US", 0, 10_000),
                    entry("s3", "nobody", "JP", 0, 10_000),
                ],
            )
            .unwrap();
        let withheld: BTreeMap<String, i64> = h
            .royalty
            .balances()
            .unwrap()
            .into_iter()
            .map(|b| (b.artist_id, b.withheld_minor))
            .collect();
        // JP placeholder 2042 bps, EU placeholder 1500 bps, no account → default 0.
        assert_eq!(withheld["jp"], 2042);
        assert_eq!(withheld["fr"], 1500);
        assert_eq!(withheld["nobody"], 0);
        let b = &h.royalty.balance("jp").unwrap()[0];
        assert_eq!(b.pending_minor, 10_000 - 2042);
    }

    #[test]
    fn tips_are_idempotent_and_validated() {
        let h = Harness::new();
        h.royalty.create_account(crypto_account("a", "GB")).unwrap();
        let tip = Tip {
            reference: "ch_1".into(),
            artist_id: "a".into(),
            amount: Money::new(500, Currency::new("EUR").unwrap()),
            from: "fan42".into(),
        };
        let r = h.royalty.record_tip(&tip).unwrap();
        assert_eq!(r.postings.len(), 2);
        assert_eq!(r.postings[0].memo, "tip from fan42");
        assert_eq!(r.postings[1].amount_minor, -100); // GB placeholder 20 %
        assert_eq!(h.royalty.record_tip(&tip).unwrap().postings, r.postings);
        let mut other = tip.clone();
        other.amount.minor = 501;
        assert!(matches!(
            h.royalty.record_tip(&other),
            Err(RoyaltyError::ReferenceReused { .. })
        ));
        other.reference = "ch_2".into();
        other.amount.minor = 0;
        assert!(h.royalty.record_tip(&other).is_err());
        let b = h.royalty.balance("a").unwrap();
        assert_eq!(
            (b.len(), b[0].currency.as_str(), b[0].pending_minor),
            (1, "EUR", 400)
        );
    }

    #[test]
    fn subscriptions_by_seconds_watched() {
        let h = Harness::with_config(rates(0, 0));
        h.royalty
            .set_split_sheet(sheet("duet", &[("b", 5000), ("c", 5000)]))
            .unwrap();
        let march = Month::new(2025, 3).unwrap();
        let start = march.start_ms();
        h.royalty
            .record_usage(
                "u1",
                start,
                start + 1,
                &[
                    entry("solo", "a", "US", 2_000, 0),
                    entry("duet", "b", "US", 1_000, 0),
                ],
            )
            .unwrap();
        // April usage must not count for March.
        h.royalty
            .record_usage(
                "u2",
                march.end_ms(),
                march.end_ms(),
                &[entry("duet", "b", "US", 9_000, 0)],
            )
            .unwrap();
        let sub = Subscription {
            reference: "inv-1".into(),
            period: march,
            amount: usd(1001),
            allocation: SubscriptionAllocation::BySecondsWatched,
        };
        let r = h.royalty.record_subscription(&sub).unwrap();
        let credited: BTreeMap<String, i64> = r
            .postings
            .iter()
            .map(|p| (p.account.clone(), p.amount_minor))
            .collect();
        // 1001 × 2/3 = 667.33 → 667; 1001 × 1/3 = 333.67 → 334, split 167/167.
        assert_eq!(
            credited,
            BTreeMap::from([("a".into(), 667), ("b".into(), 167), ("c".into(), 167)])
        );
        assert!(h.royalty.record_subscription(&sub).unwrap().replayed);

        let empty = Subscription {
            reference: "inv-2".into(),
            period: Month::new(2024, 1).unwrap(),
            ..sub.clone()
        };
        assert!(matches!(
            h.royalty.record_subscription(&empty),
            Err(RoyaltyError::NoUsageInPeriod { .. })
        ));
        let direct = Subscription {
            reference: "inv-3".into(),
            allocation: SubscriptionAllocation::Artist("d".into()),
            ..sub
        };
        let r = h.royalty.record_subscription(&direct).unwrap();
        assert_eq!(
            (r.postings[0].account.as_str(), r.postings[0].amount_minor),
            ("d", 1001)
        );
        assert_eq!(r.postings[0].source, SOURCE_SUBSCRIPTIONS);
    }

    #[test]
    fn adjustments_to_artists_and_split_content() {
        let h = Harness::new();
        h.royalty.create_account(crypto_account("a", "US")).unwrap();
        h.royalty
            .set_split_sheet(sheet("song", &[("a", 5000), ("b", 5000)]))
            .unwrap();
        let adj = Adjustment {
            reference: "T-1".into(),
            target: AdjustmentTarget::Content("song".into()),
            amount: usd(-1001),
            memo: "duplicate statement".into(),
        };
        let r = h.royalty.record_adjustment(&adj).unwrap();
        let amounts: Vec<(String, PostingKind, i64)> = r
            .postings
            .iter()
            .map(|p| (p.account.clone(), p.kind, p.amount_minor))
            .collect();
        assert_eq!(
            amounts,
            vec![
                ("a".into(), PostingKind::Adjustment, -501),
                ("a".into(), PostingKind::Withholding, 151), // 30 % of -501, floor: releases 151
                ("b".into(), PostingKind::Adjustment, -500),
            ]
        );
        assert!(h.royalty.record_adjustment(&adj).unwrap().replayed);
        let missing = Adjustment {
            reference: "T-2".into(),
            target: AdjustmentTarget::Content("other".into()),
            ..adj.clone()
        };
        assert!(matches!(
            h.royalty.record_adjustment(&missing),
            Err(RoyaltyError::NoSplitSheet(_))
        ));
        let no_memo = Adjustment {
            reference: "T-3".into(),
            memo: String::new(),
            ..adj
        };
        assert!(h.royalty.record_adjustment(&no_memo).is_err());
    }

    #[test]
    fn a_failing_input_changes_nothing() {
        let h = Harness::with_config(rates(0, 1_000_000));
        h.royalty
            .record_usage("ok", 0, 1, &[entry("s", "a", "*", 0, 1)])
            .unwrap();
        let before = (h.royalty.balances().unwrap(), h.royalty.last_seq().unwrap());
        // The first entry books fine, the second overflows i64 minor units: all or nothing.
        let entries = [
            entry("s", "b", "*", 0, 5),
            entry("s", "c", "*", 0, u64::MAX),
        ];
        let err = h.royalty.record_usage("bad", 0, 1, &entries).unwrap_err();
        assert!(
            matches!(err, RoyaltyError::Money(MoneyError::Overflow)),
            "{err}"
        );
        assert_eq!(
            (h.royalty.balances().unwrap(), h.royalty.last_seq().unwrap()),
            before
        );
        // The reference was not consumed.
        h.royalty.record_usage("bad", 0, 1, &entries[..1]).unwrap();
    }
}
