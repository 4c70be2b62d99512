//! Booking: how one input turns into postings and balance changes, staged for one transaction.
//!
//! Every input (usage, tip, subscription, adjustment, DSP statement, payout batch) runs through a
//! [`Booking`]: it numbers postings, dates them, keeps each balance, the monthly statement totals
//! and the balance history in step, and computes withholding. Nothing here touches sled directly;
//! [`Booking::finish`] hands the staged writes to one transaction.
//!
//! Two remainders are carried forward per (artist, currency) rather than rounded away, so that
//! over any number of inputs no fraction of a minor unit is lost or created:
//! - **play earnings** are computed in nano-units (10⁻⁹ minor unit: a rate in micro-units per
//!   second times milliseconds watched), added to the artist's carry, and only whole minor units
//!   are booked; the rest (`0 ≤ carry < 10⁹`) waits for the next usage and is visible in
//!   [`Balance::play_carry_nano`](super::Balance::play_carry_nano).
//! - **withholding** is `credit × bps / 10000`; the fraction below one minor unit (kept in
//!   10⁻⁴ minor units) is carried to the artist's next credit, so the total withheld is always
//!   the floor of the exact total.

use super::account::ArtistAccount;
use super::calendar::Month;
use super::config::{RoyaltyConfig, BPS_WHOLE};
use super::money::{add_minor, to_minor, Currency, MoneyError};
use super::posting::{Posting, PostingKind};
use super::store::{
    balance_key, history_key, month_key, BalanceState, InputRecord, Journal, MonthTotals, Staging,
    Store, Totals, TreeId, JOURNAL_KEY,
};
use super::RoyaltyError;
use crate::utc::MAX_TIME_MS;

/// Nano-units (10⁻⁹ minor unit) per minor unit. One micro-unit per second over one millisecond
/// is exactly one nano-unit, which is why play earnings are accumulated in this unit.
pub(crate) const NANO_PER_MINOR: i128 = 1_000_000_000;

/// One input being booked: staged writes plus the postings they amount to.
#[derive(Debug)]
pub(crate) struct Booking<'a> {
    st: Staging<'a>,
    config: &'a RoyaltyConfig,
    journal: Journal,
    time_ms: u64,
    reference: String,
    postings: Vec<Posting>,
}

impl<'a> Booking<'a> {
    /// Starts booking an input with `reference` at `now_ms`. The booking time is never earlier
    /// than the previous input's, so postings are in time order as well as seq order even if
    /// the system clock steps back.
    pub fn begin(
        store: &'a Store,
        config: &'a RoyaltyConfig,
        now_ms: u64,
        reference: &str,
    ) -> Result<Self, RoyaltyError> {
        let st = Staging::new(store);
        let journal: Journal = st.get(TreeId::Meta, JOURNAL_KEY)?.unwrap_or_default();
        let time_ms = now_ms.max(journal.last_time_ms).min(MAX_TIME_MS);
        Ok(Booking {
            st,
            config,
            journal,
            time_ms,
            reference: reference.to_string(),
            postings: Vec::new(),
        })
    }

    /// The staged writes, for input-specific records (usage seconds, payout batches…).
    pub fn staging(&mut self) -> &mut Staging<'a> {
        &mut self.st
    }

    /// The staged state, read-only.
    pub fn staging_ref(&self) -> &Staging<'a> {
        &self.st
    }

    /// The booking time of this input.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// The postings booked so far.
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }

    /// Books play earnings of `nano` nano-units: whole minor units become a credit (with its
    /// withholding), the remainder is carried in the balance.
    pub fn credit_nano(
        &mut self,
        artist: &str,
        currency: Currency,
        nano: i128,
        source: &str,
        memo: &str,
    ) -> Result<(), RoyaltyError> {
        let key = balance_key(artist, currency);
        let mut state: BalanceState = self.st.get(TreeId::Balances, &key)?.unwrap_or_default();
        let total = i128::from(state.carry_nano)
            .checked_add(nano)
            .ok_or(MoneyError::Overflow)?;
        let minor = to_minor(total.div_euclid(NANO_PER_MINOR))?;
        // In 0..1e9, so it fits.
        state.carry_nano = total.rem_euclid(NANO_PER_MINOR) as i64;
        self.st.put(TreeId::Balances, key, &state)?;
        self.credit(artist, currency, minor, PostingKind::Credit, source, memo)
    }

    /// Books a credit or adjustment of `minor` units, then the withholding it attracts at the
    /// rate of the artist's tax country. A zero amount books nothing.
    pub fn credit(
        &mut self,
        artist: &str,
        currency: Currency,
        minor: i64,
        kind: PostingKind,
        source: &str,
        memo: &str,
    ) -> Result<(), RoyaltyError> {
        if minor == 0 {
            return Ok(());
        }
        self.post(kind, artist, currency, minor, source, memo)?;

        let account: Option<ArtistAccount> = self.st.get(TreeId::Accounts, artist.as_bytes())?;
        let tax_country = account.map(|a| a.tax_country);
        let bps = self.config.withholding.bps_for(tax_country.as_deref());
        let key = balance_key(artist, currency);
        let mut state: BalanceState = self.st.get(TreeId::Balances, &key)?.unwrap_or_default();
        let whole = i128::from(BPS_WHOLE);
        let numerator = i128::from(minor) * i128::from(bps) + i128::from(state.withholding_carry);
        let withheld = to_minor(numerator.div_euclid(whole))?;
        // In 0..10000, so it fits.
        state.withholding_carry = numerator.rem_euclid(whole) as i64;
        self.st.put(TreeId::Balances, key, &state)?;
        if withheld != 0 {
            let memo = format!(
                "withholding {bps} bps, tax country {}",
                tax_country.as_deref().unwrap_or("unknown (no account)")
            );
            let amount = withheld.checked_neg().ok_or(MoneyError::Overflow)?;
            self.post(
                PostingKind::Withholding,
                artist,
                currency,
                amount,
                source,
                &memo,
            )?;
        }
        Ok(())
    }

    /// Books a payout of `minor` (positive) units to `artist`.
    pub fn payout(
        &mut self,
        artist: &str,
        currency: Currency,
        minor: i64,
        source: &str,
        memo: &str,
    ) -> Result<(), RoyaltyError> {
        let amount = minor.checked_neg().ok_or(MoneyError::Overflow)?;
        self.post(PostingKind::Payout, artist, currency, amount, source, memo)
    }

    /// Writes one posting and everything that must agree with it: the balance, the balance
    /// history, the month's statement totals and the journal.
    fn post(
        &mut self,
        kind: PostingKind,
        artist: &str,
        currency: Currency,
        amount_minor: i64,
        source: &str,
        memo: &str,
    ) -> Result<(), RoyaltyError> {
        let seq = self.journal.last_seq + 1;
        self.journal.last_seq = seq;

        let key = balance_key(artist, currency);
        let mut state: BalanceState = self.st.get(TreeId::Balances, &key)?.unwrap_or_default();
        let effect = amount_minor.checked_neg().ok_or(MoneyError::Overflow);
        match kind {
            PostingKind::Credit | PostingKind::Adjustment => {
                state.earned = add_minor(state.earned, amount_minor)?;
            }
            PostingKind::Withholding => state.withheld = add_minor(state.withheld, effect?)?,
            PostingKind::Payout => state.paid = add_minor(state.paid, effect?)?,
        }
        // The pending balance must stay representable too.
        pending_of(&state)?;
        self.st.put(TreeId::Balances, key, &state)?;
        let totals = Totals {
            earned: state.earned,
            withheld: state.withheld,
            paid: state.paid,
        };
        self.st.put(
            TreeId::History,
            history_key(artist, currency, self.time_ms, seq),
            &totals,
        )?;

        let mkey = month_key(artist, Month::from_ms(self.time_ms), currency);
        let mut month: MonthTotals = self.st.get(TreeId::Months, &mkey)?.unwrap_or_default();
        let line = month.lines.entry((kind, source.to_string())).or_default();
        line.count += 1;
        line.amount_minor = add_minor(line.amount_minor, amount_minor)?;
        self.st.put(TreeId::Months, mkey, &month)?;

        let posting = Posting {
            seq,
            reference: self.reference.clone(),
            time_ms: self.time_ms,
            kind,
            account: artist.to_string(),
            amount_minor,
            currency,
            source: source.to_string(),
            memo: memo.to_string(),
        };
        self.st
            .put(TreeId::Postings, seq.to_be_bytes().to_vec(), &posting)?;
        self.postings.push(posting);
        Ok(())
    }

    /// Records the input under `input` (its key and digest) if given, commits everything in one
    /// transaction, flushes, and returns the postings.
    pub fn finish(
        mut self,
        input: Option<(Vec<u8>, [u8; 32])>,
    ) -> Result<Vec<Posting>, RoyaltyError> {
        let first_seq = self
            .postings
            .first()
            .map_or(self.journal.last_seq + 1, |p| p.seq);
        self.journal.last_time_ms = self.time_ms;
        self.st
            .put(TreeId::Meta, JOURNAL_KEY.to_vec(), &self.journal)?;
        if let Some((key, digest)) = input {
            let record = InputRecord {
                digest,
                first_seq,
                count: self.postings.len() as u64,
            };
            self.st.put(TreeId::Inputs, key, &record)?;
        }
        self.st.commit()?;
        Ok(self.postings)
    }
}

/// `earned − withheld − paid`, checked.
pub(crate) fn pending_of(state: &BalanceState) -> Result<i64, MoneyError> {
    state
        .earned
        .checked_sub(state.withheld)
        .and_then(|v| v.checked_sub(state.paid))
        .ok_or(MoneyError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Store, RoyaltyConfig) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        (Store::open(&db).unwrap(), RoyaltyConfig::default())
    }

    fn balance(store: &Store, artist: &str) -> BalanceState {
        store
            .get(TreeId::Balances, &balance_key(artist, Currency::USD))
            .unwrap()
            .unwrap_or_default()
    }

    #[test]
    fn nano_carry_books_only_whole_units() {
        let (store, config) = setup();
        // 0.4 minor units three times: 0, then 0 (0.8), then 1 with 0.2 carried.
        for (i, expect_postings) in [0usize, 0, 1].into_iter().enumerate() {
            let mut b = Booking::begin(&store, &config, 1_000, &format!("r{i}")).unwrap();
            b.credit_nano("a", Currency::USD, 400_000_000, "plays", "")
                .unwrap();
            assert_eq!(b.finish(None).unwrap().len(), expect_postings);
        }
        let s = balance(&store, "a");
        assert_eq!((s.earned, s.carry_nano), (1, 200_000_000));
    }

    #[test]
    fn withholding_carries_its_fraction() {
        let (store, config) = setup();
        // No account: default 0 bps. Give the artist a US account (3000 bps placeholder).
        let mut st = Staging::new(&store);
        let account = ArtistAccount {
            artist_id: "a".into(),
            name: "A".into(),
            tax_country: "US".into(),
            payout_method: super::super::PayoutMethod::Crypto {
                network: "eth".into(),
                address: "0x1".into(),
            },
        };
        st.put(TreeId::Accounts, b"a".to_vec(), &account).unwrap();
        st.commit().unwrap();
        // Ten credits of 1 unit at 30 %: exactly 3 units withheld in total, not 0 or 10.
        let mut b = Booking::begin(&store, &config, 1_000, "r").unwrap();
        for _ in 0..10 {
            b.credit("a", Currency::USD, 1, PostingKind::Credit, "tips", "")
                .unwrap();
        }
        let postings = b.finish(None).unwrap();
        let s = balance(&store, "a");
        assert_eq!((s.earned, s.withheld, s.withholding_carry), (10, 3, 0));
        assert_eq!(postings.iter().map(|p| p.amount_minor).sum::<i64>(), 7);
        // A reversal of the same credits releases exactly what was withheld.
        let mut b = Booking::begin(&store, &config, 1_000, "r2").unwrap();
        b.credit(
            "a",
            Currency::USD,
            -10,
            PostingKind::Adjustment,
            "adjustments",
            "",
        )
        .unwrap();
        b.finish(None).unwrap();
        let s = balance(&store, "a");
        assert_eq!((s.earned, s.withheld, s.withholding_carry), (0, 0, 0));
    }

    #[test]
    fn booking_time_never_goes_back_and_seq_has_no_gaps() {
        let (store, config) = setup();
        let mut b = Booking::begin(&store, &config, 5_000, "r1").unwrap();
        b.credit("a", Currency::USD, 5, PostingKind::Credit, "tips", "")
            .unwrap();
        let first = b.finish(None).unwrap();
        let mut b = Booking::begin(&store, &config, 1_000, "r2").unwrap();
        assert_eq!(b.time_ms(), 5_000);
        b.credit("a", Currency::USD, 5, PostingKind::Credit, "tips", "")
            .unwrap();
        let second = b.finish(None).unwrap();
        assert_eq!(first[0].seq + 1, second[0].seq);
        assert_eq!(second[0].time_ms, 5_000);
    }

    #[test]
    fn overflow_is_an_error_and_stages_nothing() {
        let (store, config) = setup();
        let mut b = Booking::begin(&store, &config, 1, "r").unwrap();
        b.credit(
            "a",
            Currency::USD,
            i64::MAX,
            PostingKind::Credit,
            "tips",
            "",
        )
        .unwrap();
        let err = b
            .credit("a", Currency::USD, 1, PostingKind::Credit, "tips", "")
            .unwrap_err();
        assert!(matches!(err, RoyaltyError::Money(MoneyError::Overflow)));
        drop(b);
        assert_eq!(balance(&store, "a"), BalanceState::default());
        assert_eq!(
            pending_of(&BalanceState {
                earned: i64::MIN,
                paid: 1,
                ..Default::default()
            }),
            Err(MoneyError::Overflow)
        );
    }
}
