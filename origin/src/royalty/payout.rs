//! Payout batches: pay every artist of one payout method whose pending balance reached the
//! threshold, book the payouts, and produce the file to hand to the payment channel.
//!
//! A batch is identified by `<method>-<as_of_ms>` and is idempotent: asking again for the same
//! method and `as_of_ms` returns the stored batch and export, unchanged, and pays nobody twice.
//! Only money booked strictly before `as_of_ms` is paid (pass the first millisecond of the month
//! to pay up to the end of the previous month); anything booked later waits for the next batch.
//!
//! Export formats (amounts are what was booked; nothing is rounded):
//! - **Stripe** — CSV `destination,amount,currency,description`, one Connect transfer per line:
//!   `amount` in minor units and `currency` lowercase, as the Stripe API takes them.
//! - **Bank** — CSV `holder,iban,bic,amount,currency,reference`, SEPA-credit-transfer-like:
//!   `amount` as a decimal with the currency's exponent, `reference` = `<batch>/<artist>`.
//! - **Crypto** — a JSON array of `{artist_id, network, address, amount_minor, amount, currency,
//!   reference}`; converting fiat to a token amount is the operator's step.

use serde::{Deserialize, Serialize};

use super::account::{ArtistAccount, PayoutMethod, PayoutMethodKind};
use super::csv::CsvWriter;
use super::engine::Royalty;
use super::error::invalid;
use super::money::Money;
use super::posting::Posting;
use super::store::{artist_prefix, balance_key, history_key, Totals, TreeId};
use super::RoyaltyError;
use crate::utc::MAX_TIME_MS;

/// One artist paid in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutItem {
    /// The artist.
    pub artist_id: String,
    /// The amount paid (positive).
    pub amount: Money,
    /// Where it goes, as the account said when the batch was made.
    pub method: PayoutMethod,
}

/// The file to hand to the payment channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutExport {
    /// Suggested file name, `<batch id>.csv` or `.json`.
    pub file_name: String,
    /// `text/csv` or `application/json`.
    pub media_type: String,
    /// The file's content.
    pub content: String,
}

/// A payout batch and its export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutBatch {
    /// `<method>-<as_of_ms>`, e.g. `bank-1740787200000`.
    pub id: String,
    /// The payout method of every item.
    pub method: PayoutMethodKind,
    /// Money booked strictly before this time was eligible.
    pub as_of_ms: u64,
    /// When the batch was booked.
    pub created_ms: u64,
    /// The artists paid, by artist id then currency; possibly none.
    pub items: Vec<PayoutItem>,
    /// The export file.
    pub export: PayoutExport,
    /// The payout postings, one per item, in item order.
    pub postings: Vec<Posting>,
    /// `true` when this call returned a batch made earlier.
    pub replayed: bool,
}

impl Royalty {
    /// Creates (or returns, if it exists) the payout batch for `method` as of `as_of_ms`: every
    /// artist with that payout method whose pending balance in a currency — counting only
    /// money booked before `as_of_ms`, and never more than is pending now — is at least the
    /// payout minimum for that currency is paid that amount.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] for `as_of_ms` past year 9999; [`RoyaltyError::Money`];
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn create_payout_batch(
        &self,
        method: PayoutMethodKind,
        as_of_ms: u64,
    ) -> Result<PayoutBatch, RoyaltyError> {
        if as_of_ms > MAX_TIME_MS {
            return Err(invalid(
                "as_of_ms",
                "is past year 9999 (milliseconds expected)",
            ));
        }
        let id = format!("{method}-{as_of_ms}");
        let _guard = self.lock();
        if let Some(mut batch) = self
            .store()
            .get::<PayoutBatch>(TreeId::Payouts, id.as_bytes())?
        {
            batch.replayed = true;
            return Ok(batch);
        }

        let items = self.select_payees(method, as_of_ms)?;
        let mut booking = self.begin(&id)?;
        let source = format!("payout:{method}");
        let memo = format!("payout batch {id}");
        for item in &items {
            booking.payout(
                &item.artist_id,
                item.amount.currency,
                item.amount.minor,
                &source,
                &memo,
            )?;
        }
        let batch = PayoutBatch {
            export: export(&id, method, &items),
            id: id.clone(),
            method,
            as_of_ms,
            created_ms: booking.time_ms(),
            items,
            postings: booking.postings().to_vec(),
            replayed: false,
        };
        booking
            .staging()
            .put(TreeId::Payouts, id.into_bytes(), &batch)?;
        booking.finish(None)?;
        Ok(batch)
    }

    /// Who a payout of `method` as of `as_of_ms` would pay, and how much (as
    /// [`create_payout_batch`](Self::create_payout_batch) selects them); nothing is booked. For
    /// payouts executed outside the books first (on chain), each then booked with
    /// [`book_external_payout`](Self::book_external_payout).
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn payees(
        &self,
        method: PayoutMethodKind,
        as_of_ms: u64,
    ) -> Result<Vec<PayoutItem>, RoyaltyError> {
        let _guard = self.lock();
        self.select_payees(method, as_of_ms)
    }

    /// Books one payout that was made outside the books (an on-chain transfer whose receipt
    /// was checked), with `reference` (its transaction hash) as the posting's reference, so
    /// the ledger entry names it. Idempotent per (`payout_id`, artist, currency): `None` when
    /// it was booked before.
    ///
    /// # Errors
    /// [`RoyaltyError::Money`]; [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn book_external_payout(
        &self,
        payout_id: &str,
        item: &PayoutItem,
        reference: &str,
    ) -> Result<Option<Posting>, RoyaltyError> {
        let key = format!(
            "external/{payout_id}/{}/{}",
            item.artist_id, item.amount.currency
        );
        let _guard = self.lock();
        if self
            .store()
            .get::<Posting>(TreeId::Payouts, key.as_bytes())?
            .is_some()
        {
            return Ok(None);
        }
        let method = item.method.kind();
        let mut booking = self.begin(reference)?;
        booking.payout(
            &item.artist_id,
            item.amount.currency,
            item.amount.minor,
            &format!("payout:{method}"),
            &format!("payout {payout_id}"),
        )?;
        let mut posting = booking.postings()[0].clone();
        booking
            .staging()
            .put(TreeId::Payouts, key.into_bytes(), &posting)?;
        // The seq is assigned when the booking commits.
        if let Some(committed) = booking.finish(None)?.into_iter().next() {
            posting = committed;
        }
        Ok(Some(posting))
    }

    /// A batch made earlier, by id.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn payout_batch(&self, id: &str) -> Result<Option<PayoutBatch>, RoyaltyError> {
        let _guard = self.lock();
        Ok(self
            .store()
            .get::<PayoutBatch>(TreeId::Payouts, id.as_bytes())?
            .map(|mut b| {
                b.replayed = true;
                b
            }))
    }

    /// Who gets paid how much; the caller holds the lock.
    fn select_payees(
        &self,
        method: PayoutMethodKind,
        as_of_ms: u64,
    ) -> Result<Vec<PayoutItem>, RoyaltyError> {
        let mut items = Vec::new();
        for (_, account) in self.store().scan::<ArtistAccount>(TreeId::Accounts, b"")? {
            if account.payout_method.kind() != method {
                continue;
            }
            for balance in self.balances_with_prefix(&artist_prefix(&account.artist_id))? {
                let cur = balance.currency;
                // Earned minus withheld up to `as_of_ms`, minus everything paid so far.
                let prefix = balance_key(&account.artist_id, cur);
                let upto = history_key(&account.artist_id, cur, as_of_ms, 0);
                let then: Totals = self
                    .store()
                    .last_before(TreeId::History, &prefix, &upto)?
                    .unwrap_or_default();
                let eligible = i128::from(then.earned)
                    - i128::from(then.withheld)
                    - i128::from(balance.paid_minor);
                let payable = eligible.min(i128::from(balance.pending_minor));
                let minimum = self.config().minimum_payout_for(cur).max(1);
                if payable >= i128::from(minimum) {
                    items.push(PayoutItem {
                        artist_id: account.artist_id.clone(),
                        // payable ≤ pending, which is an i64.
                        amount: Money::new(payable as i64, cur),
                        method: account.payout_method.clone(),
                    });
                }
            }
        }
        Ok(items)
    }
}

/// Builds the export file of a batch.
fn export(id: &str, method: PayoutMethodKind, items: &[PayoutItem]) -> PayoutExport {
    match method {
        PayoutMethodKind::Stripe => {
            let mut w =
                CsvWriter::with_header(&["destination", "amount", "currency", "description"]);
            for item in items {
                if let PayoutMethod::Stripe { account_id } = &item.method {
                    w.row(&[
                        account_id.clone(),
                        item.amount.minor.to_string(),
                        item.amount.currency.as_str().to_ascii_lowercase(),
                        format!("mhc royalties {id} {}", item.artist_id),
                    ]);
                }
            }
            csv_export(id, w)
        }
        PayoutMethodKind::Bank => {
            let mut w = CsvWriter::with_header(&[
                "holder",
                "iban",
                "bic",
                "amount",
                "currency",
                "reference",
            ]);
            for item in items {
                if let PayoutMethod::Bank { iban, bic, holder } = &item.method {
                    w.row(&[
                        holder.clone(),
                        iban.clone(),
                        bic.clone(),
                        item.amount.to_decimal_string(),
                        item.amount.currency.to_string(),
                        format!("{id}/{}", item.artist_id),
                    ]);
                }
            }
            csv_export(id, w)
        }
        PayoutMethodKind::Crypto => {
            let lines: Vec<serde_json::Value> = items
                .iter()
                .filter_map(|item| match &item.method {
                    PayoutMethod::Crypto { network, address } => Some(serde_json::json!({
                        "artist_id": item.artist_id,
                        "network": network,
                        "address": address,
                        "amount_minor": item.amount.minor,
                        "amount": item.amount.to_decimal_string(),
                        "currency": item.amount.currency,
                        "reference": format!("{id}/{}", item.artist_id),
                    })),
                    _ => None,
                })
                .collect();
            PayoutExport {
                file_name: format!("{id}.json"),
                media_type: "application/json".to_string(),
                // A Vec of JSON values always serializes.
                content: serde_json::to_string_pretty(&lines).expect("json values serialize"),
            }
        }
    }
}

fn csv_export(id: &str, w: CsvWriter) -> PayoutExport {
    PayoutExport {
        file_name: format!("{id}.csv"),
        media_type: "text/csv".to_string(),
        content: w.finish(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::testutil::{crypto_account, entry, sheet, tip, usd, Harness, T0};
    use super::super::{
        Adjustment, AdjustmentTarget, Currency, Month, PostingKind, RoyaltyConfig, Subscription,
        SubscriptionAllocation,
    };
    use super::*;

    fn bank_account(artist: &str) -> ArtistAccount {
        ArtistAccount {
            payout_method: PayoutMethod::Bank {
                iban: "DE89370400440532013000".into(),
                bic: "DEUTDEFF".into(),
                holder: "Jane, Doe".into(),
            },
            ..crypto_account(artist, "BR")
        }
    }

    #[test]
    fn threshold_selects_payees_and_balances_move() {
        let h = Harness::new(); // minimum 1000
        for a in ["rich", "poor", "exact"] {
            h.royalty.create_account(bank_account(a)).unwrap();
        }
        h.royalty
            .create_account(crypto_account("other", "BR"))
            .unwrap();
        tip(&h, "t1", "rich", usd(5000));
        tip(&h, "t2", "poor", usd(999));
        tip(&h, "t3", "exact", usd(1000));
        tip(&h, "t4", "other", usd(5000));
        let batch = h
            .royalty
            .create_payout_batch(PayoutMethodKind::Bank, T0 + 1)
            .unwrap();
        let paid: Vec<(&str, i64)> = batch
            .items
            .iter()
            .map(|i| (i.artist_id.as_str(), i.amount.minor))
            .collect();
        assert_eq!(paid, vec![("exact", 1000), ("rich", 5000)]);
        assert_eq!(batch.id, format!("bank-{}", T0 + 1));
        assert_eq!(batch.postings.len(), 2);
        assert!(batch
            .postings
            .iter()
            .all(|p| p.amount_minor < 0 && p.source == "payout:bank"));
        let rich = &h.royalty.balance("rich").unwrap()[0];
        assert_eq!(
            (rich.earned_minor, rich.paid_minor, rich.pending_minor),
            (5000, 5000, 0)
        );
        assert_eq!(h.royalty.balance("poor").unwrap()[0].pending_minor, 999);
        assert_eq!(h.royalty.balance("other").unwrap()[0].pending_minor, 5000);
        assert_eq!(
            batch.export.content,
            "holder,iban,bic,amount,currency,reference\n\
             \"Jane, Doe\",DE89370400440532013000,DEUTDEFF,10.00,USD,bank-1741564800001/exact\n\
             \"Jane, Doe\",DE89370400440532013000,DEUTDEFF,50.00,USD,bank-1741564800001/rich\n"
        );
        assert_eq!(batch.export.file_name, "bank-1741564800001.csv");
    }

    #[test]
    fn batches_are_idempotent() {
        let h = Harness::new();
        h.royalty.create_account(crypto_account("a", "BR")).unwrap();
        tip(&h, "t1", "a", usd(2500));
        let first = h
            .royalty
            .create_payout_batch(PayoutMethodKind::Crypto, T0 + 1)
            .unwrap();
        tip(&h, "t2", "a", usd(2500));
        let again = h
            .royalty
            .create_payout_batch(PayoutMethodKind::Crypto, T0 + 1)
            .unwrap();
        assert!(again.replayed && !first.replayed);
        assert_eq!(again.export, first.export);
        assert_eq!(again.postings, first.postings);
        assert_eq!(h.royalty.balance("a").unwrap()[0].paid_minor, 2500);
        assert_eq!(
            h.royalty.payout_batch(&first.id).unwrap().unwrap().items,
            first.items
        );
        let json: serde_json::Value = serde_json::from_str(&first.export.content).unwrap();
        assert_eq!(json[0]["amount_minor"], 2500);
        assert_eq!(json[0]["amount"], "25.00");
        assert_eq!(json[0]["network"], "ethereum");
        assert_eq!(first.export.media_type, "application/json");
    }

    #[test]
    fn only_money_booked_before_as_of_is_paid() {
        let h = Harness::new();
        h.royalty.create_account(crypto_account("a", "BR")).unwrap();
        let march = Month::new(2025, 3).unwrap();
        h.set_time(march.start_ms() + 10);
        tip(&h, "march", "a", usd(1500));
        h.set_time(march.end_ms() + 10);
        tip(&h, "april", "a", usd(4000));
        // Pay March only.
        let b = h
            .royalty
            .create_payout_batch(PayoutMethodKind::Crypto, march.end_ms())
            .unwrap();
        assert_eq!(b.items[0].amount.minor, 1500);
        assert_eq!(h.royalty.balance("a").unwrap()[0].pending_minor, 4000);
        // A later batch pays April, and never more than is pending.
        let b = h
            .royalty
            .create_payout_batch(PayoutMethodKind::Crypto, u64::from(u32::MAX) * 1000)
            .unwrap();
        assert_eq!(b.items[0].amount.minor, 4000);
        let b = h
            .royalty
            .create_payout_batch(PayoutMethodKind::Crypto, u64::from(u32::MAX) * 1001)
            .unwrap();
        assert!(b.items.is_empty() && b.postings.is_empty());
        assert!(h
            .royalty
            .create_payout_batch(PayoutMethodKind::Crypto, u64::MAX)
            .is_err());
    }

    #[test]
    fn stripe_export_and_per_currency_minimum() {
        let mut config = RoyaltyConfig::default();
        config
            .minimum_payout_minor_by_currency
            .insert("JPY".into(), 500);
        let h = Harness::with_config(config);
        let mut acct = crypto_account("a", "BR");
        acct.payout_method = PayoutMethod::Stripe {
            account_id: "acct_123".into(),
        };
        h.royalty.create_account(acct).unwrap();
        tip(
            &h,
            "t1",
            "a",
            Money::new(600, Currency::new("JPY").unwrap()),
        );
        tip(&h, "t2", "a", usd(600));
        let b = h
            .royalty
            .create_payout_batch(PayoutMethodKind::Stripe, T0 + 1)
            .unwrap();
        assert_eq!(
            b.export.content,
            format!(
                "destination,amount,currency,description\n\
                 acct_123,600,jpy,mhc royalties stripe-{} a\n",
                T0 + 1
            )
        );
    }

    /// The properties an accountant checks, over a seeded random mix of every input: the
    /// postings of each (artist, currency) sum to its pending balance, pending = earned −
    /// withheld − paid, and the statement months chain (closing = next opening).
    #[test]
    fn seeded_random_ledger_always_balances() {
        let h = Harness::on_disk(RoyaltyConfig::default());
        let mut rng = fastrand::Rng::with_seed(2025);
        let artists = ["a", "b", "c", "d", "e"];
        for (i, a) in artists.iter().enumerate() {
            let mut acct = if i % 2 == 0 {
                crypto_account(a, "US")
            } else {
                bank_account(a)
            };
            acct.tax_country = ["US", "GB", "DE", "JP", "BR"][i].into();
            h.royalty.create_account(acct).unwrap();
        }
        h.royalty
            .set_split_sheet(sheet("duet", &[("a", 3333), ("b", 6667)]))
            .unwrap();
        let mut time = Month::new(2025, 1).unwrap().start_ms();
        for step in 0..300 {
            time += rng.u64(..3 * 86_400_000);
            h.set_time(time);
            let artist = artists[rng.usize(..5)];
            let r = format!("r{step}");
            match rng.u64(..6) {
                0 | 1 => {
                    let content = if rng.bool() { "duet" } else { "solo" };
                    let e = entry(content, artist, "SE", rng.u64(..5_000_000), rng.u64(..40));
                    h.royalty.record_usage(&r, time, time, &[e]).unwrap();
                }
                2 => tip(&h, &r, artist, usd(1 + rng.u64(..3000) as i64)),
                3 => {
                    let result = h.royalty.record_subscription(&Subscription {
                        reference: r,
                        period: Month::from_ms(time),
                        amount: usd(1 + rng.u64(..5000) as i64),
                        allocation: SubscriptionAllocation::BySecondsWatched,
                    });
                    match result {
                        Ok(_) | Err(RoyaltyError::NoUsageInPeriod { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                4 => {
                    let amount = match rng.u64(..2001) as i64 - 1000 {
                        0 => 1,
                        a => a,
                    };
                    h.royalty
                        .record_adjustment(&Adjustment {
                            reference: r,
                            target: AdjustmentTarget::Content("duet".into()),
                            amount: usd(amount),
                            memo: "random".into(),
                        })
                        .unwrap();
                }
                _ => {
                    let kind = if rng.bool() {
                        PayoutMethodKind::Bank
                    } else {
                        PayoutMethodKind::Crypto
                    };
                    h.royalty.create_payout_batch(kind, time).unwrap();
                }
            }
        }
        let check = |h: &Harness| {
            let mut sums: BTreeMap<(String, Currency), i64> = BTreeMap::new();
            let postings = h.royalty.postings_since(0, usize::MAX).unwrap();
            for (i, p) in postings.iter().enumerate() {
                assert_eq!(p.seq, i as u64 + 1);
                *sums.entry((p.account.clone(), p.currency)).or_default() += p.amount_minor;
            }
            let balances = h.royalty.balances().unwrap();
            assert_eq!(balances.len(), sums.len());
            for b in &balances {
                assert_eq!(sums[&(b.artist_id.clone(), b.currency)], b.pending_minor);
                assert_eq!(
                    b.pending_minor,
                    b.earned_minor - b.withheld_minor - b.paid_minor
                );
                // Statements chain month to month and end at today's balance.
                let mut opening = 0;
                let mut month = Month::new(2025, 1).unwrap();
                while month.start_ms() <= time {
                    let s = h.royalty.statement(&b.artist_id, month).unwrap();
                    if let Some(c) = s.currencies.iter().find(|c| c.currency == b.currency) {
                        assert_eq!(c.opening_pending_minor, opening);
                        opening = c.closing_pending_minor;
                    }
                    month = Month::from_ms(month.end_ms());
                }
                assert_eq!(opening, b.pending_minor);
            }
            (postings.len(), balances)
        };
        let before = check(&h);
        assert!(before.0 > 300, "{}", before.0);
        // The mix really exercised every kind of posting and every source.
        let postings = h.royalty.postings_since(0, usize::MAX).unwrap();
        let kinds: std::collections::BTreeSet<PostingKind> =
            postings.iter().map(|p| p.kind).collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        let sources: std::collections::BTreeSet<&str> =
            postings.iter().map(|p| p.source.as_str()).collect();
        for s in [
            "plays",
            "tips",
            "subscriptions",
            "adjustments",
            "payout:bank",
            "payout:crypto",
        ] {
            assert!(sources.contains(s), "{s} missing from {sources:?}");
        }
        // Reopen the database: the same balances, journal and statements.
        let h = h.reopen(RoyaltyConfig::default());
        assert_eq!(check(&h), before);
        assert_eq!(h.royalty.last_seq().unwrap(), before.0 as u64);
    }
}
