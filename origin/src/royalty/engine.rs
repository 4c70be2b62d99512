//! [`Royalty`]: the handle the node holds — opening, accounts, split sheets, balances and the
//! posting journal. The inputs, statements and payouts are `impl Royalty` blocks in their own
//! files.
//!
//! Concurrency: every operation takes one lock, so inputs are applied one at a time and reads
//! of several records (a statement, a payout selection) see a consistent state. Royalty traffic
//! is a few calls per second at most; simplicity wins over parallelism here.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use mhc_clock::Clock;

use serde::{Deserialize, Serialize};

use super::account::ArtistAccount;
use super::booking::{pending_of, Booking};
use super::config::RoyaltyConfig;
use super::error::check_content_id;
use super::money::{add_minor, Currency};
use super::posting::{Posting, PostingKind, Receipt};
use super::split::SplitSheet;
use super::store::{
    artist_prefix, currency_at, encode, input_key, split_artist, BalanceState, InputRecord,
    Journal, Staging, Store, TreeId, JOURNAL_KEY,
};
use super::RoyaltyError;

/// Largest page [`Royalty::postings_since`] returns.
pub const MAX_POSTINGS_PAGE: usize = 10_000;

/// The royalty accounts of one origin, persisted in `royalty/...` trees of the node's sled db.
///
/// Every input is idempotent by its reference, applied in one transaction and flushed before the
/// call returns: when a call returns `Ok`, its effect is durable; when it returns `Err`, nothing
/// changed.
pub struct Royalty {
    store: Store,
    config: RoyaltyConfig,
    currency: Currency,
    clock: Clock,
    lock: Mutex<()>,
}

impl std::fmt::Debug for Royalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Royalty")
            .field("currency", &self.currency)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What [`Royalty::audit`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceAudit {
    /// Postings replayed.
    pub postings: u64,
    /// Balances compared.
    pub balances: usize,
}

/// An artist's balance in one currency. All amounts are integer minor units;
/// `pending = earned − withheld − paid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The artist.
    pub artist_id: String,
    /// The currency of every amount here.
    pub currency: Currency,
    /// Σ credits and adjustments.
    pub earned_minor: i64,
    /// Σ tax withheld.
    pub withheld_minor: i64,
    /// Σ paid out.
    pub paid_minor: i64,
    /// Owed to the artist and not yet paid: `earned − withheld − paid`.
    pub pending_minor: i64,
    /// Play earnings below one minor unit, in 10⁻⁹ minor units, carried to the next usage
    /// (never rounded away; booked once they make a whole unit).
    pub play_carry_nano: i64,
    /// Withholding below one minor unit, in 10⁻⁴ minor units, carried to the next credit.
    pub withholding_carry_e4: i64,
}

impl Balance {
    fn from_state(
        artist_id: String,
        currency: Currency,
        s: &BalanceState,
    ) -> Result<Self, RoyaltyError> {
        Ok(Balance {
            artist_id,
            currency,
            earned_minor: s.earned,
            withheld_minor: s.withheld,
            paid_minor: s.paid,
            pending_minor: pending_of(s)?,
            play_carry_nano: s.carry_nano,
            withholding_carry_e4: s.withholding_carry,
        })
    }
}

impl Royalty {
    /// Opens the royalty state in `db` (creating its trees on first use) with `config`,
    /// booking inputs at the system clock's time.
    ///
    /// # Errors
    /// [`RoyaltyError::Config`] if `config` does not validate; [`RoyaltyError::Storage`] if
    /// the trees cannot be opened; [`RoyaltyError::Corrupt`] if they hold another schema.
    pub fn open(db: &sled::Db, config: RoyaltyConfig) -> Result<Self, RoyaltyError> {
        Self::open_with_clock(db, config, Clock::system())
    }

    /// Like [`Royalty::open`], with booking times taken from `clock` (tests and replays inject
    /// a [`mhc_clock::ManualClock`]'s).
    ///
    /// # Errors
    /// As [`Royalty::open`].
    pub fn open_with_clock(
        db: &sled::Db,
        config: RoyaltyConfig,
        clock: Clock,
    ) -> Result<Self, RoyaltyError> {
        config.validate()?;
        let currency = config.currency_code()?;
        Ok(Royalty {
            store: Store::open(db)?,
            config,
            currency,
            clock,
            lock: Mutex::new(()),
        })
    }

    /// The clock bookings are dated by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The configuration in force.
    pub fn config(&self) -> &RoyaltyConfig {
        &self.config
    }

    /// Takes the module lock. A panic while holding it cannot leave bad state behind (writes
    /// are staged and committed atomically), so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The currency of play rates.
    pub(crate) fn rate_currency(&self) -> Currency {
        self.currency
    }

    /// Starts a booking at the clock's time; the caller holds the lock.
    pub(crate) fn begin(&self, reference: &str) -> Result<Booking<'_>, RoyaltyError> {
        Booking::begin(&self.store, &self.config, self.clock.now_ms(), reference)
    }

    /// Applies an input idempotently: a first submission runs `apply` and records the input
    /// under (`kind`, `reference`) with the digest of `data`; a repeat with the same data returns
    /// the original postings; a repeat with other data is refused.
    pub(crate) fn apply_input<T: Serialize>(
        &self,
        kind: &'static str,
        reference: &str,
        data: &T,
        apply: impl FnOnce(&mut Booking<'_>) -> Result<(), RoyaltyError>,
    ) -> Result<Receipt, RoyaltyError> {
        let digest = *blake3::hash(&encode(&(kind, reference, data))?).as_bytes();
        let _guard = self.lock();
        let key = input_key(kind, reference);
        if let Some(record) = self.store.get::<InputRecord>(TreeId::Inputs, &key)? {
            if record.digest != digest {
                return Err(RoyaltyError::ReferenceReused {
                    kind,
                    reference: reference.to_string(),
                });
            }
            return Ok(Receipt {
                reference: reference.to_string(),
                postings: self.load_postings(record.first_seq, record.count)?,
                replayed: true,
            });
        }
        let mut booking = self.begin(reference)?;
        apply(&mut booking)?;
        let postings = booking.finish(Some((key, digest)))?;
        Ok(Receipt {
            reference: reference.to_string(),
            postings,
            replayed: false,
        })
    }

    /// Reads `count` consecutive postings from `first_seq`.
    pub(crate) fn load_postings(
        &self,
        first_seq: u64,
        count: u64,
    ) -> Result<Vec<Posting>, RoyaltyError> {
        (first_seq..first_seq.saturating_add(count))
            .map(|seq| {
                self.store
                    .get::<Posting>(TreeId::Postings, &seq.to_be_bytes())?
                    .ok_or_else(|| RoyaltyError::Corrupt {
                        tree: TreeId::Postings.name(),
                        problem: format!("posting {seq} is missing"),
                    })
            })
            .collect()
    }

    /// Creates an artist's account. Creating the identical account again is a no-op.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] from [`ArtistAccount::validate`];
    /// [`RoyaltyError::AccountExists`] if the artist has a different account;
    /// [`RoyaltyError::Storage`].
    pub fn create_account(&self, account: ArtistAccount) -> Result<(), RoyaltyError> {
        account.validate()?;
        let _guard = self.lock();
        match self.account_unlocked(&account.artist_id)? {
            Some(existing) if existing == account => Ok(()),
            Some(_) => Err(RoyaltyError::AccountExists(account.artist_id)),
            None => self.write_account(&account),
        }
    }

    /// Replaces an existing account (name, tax country, payout method) and returns the old one.
    /// Withholding already booked is not recomputed; book an adjustment if it should be.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`]; [`RoyaltyError::UnknownArtist`] if there is no account to
    /// update; [`RoyaltyError::Storage`].
    pub fn update_account(&self, account: ArtistAccount) -> Result<ArtistAccount, RoyaltyError> {
        account.validate()?;
        let _guard = self.lock();
        let previous = self
            .account_unlocked(&account.artist_id)?
            .ok_or_else(|| RoyaltyError::UnknownArtist(account.artist_id.clone()))?;
        self.write_account(&account)?;
        Ok(previous)
    }

    /// The artist's account, if any.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn account(&self, artist_id: &str) -> Result<Option<ArtistAccount>, RoyaltyError> {
        let _guard = self.lock();
        self.account_unlocked(artist_id)
    }

    /// Every account, by artist id.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn accounts(&self) -> Result<Vec<ArtistAccount>, RoyaltyError> {
        let _guard = self.lock();
        Ok(self
            .store
            .scan::<ArtistAccount>(TreeId::Accounts, b"")?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    pub(crate) fn account_unlocked(
        &self,
        artist_id: &str,
    ) -> Result<Option<ArtistAccount>, RoyaltyError> {
        self.store.get(TreeId::Accounts, artist_id.as_bytes())
    }

    fn write_account(&self, account: &ArtistAccount) -> Result<(), RoyaltyError> {
        let mut st = Staging::new(&self.store);
        st.put(
            TreeId::Accounts,
            account.artist_id.as_bytes().to_vec(),
            account,
        )?;
        st.commit()
    }

    /// Sets the split sheet of a content id, replacing (and returning) any previous one. It
    /// applies to credits booked from now on; past credits are not re-divided.
    ///
    /// # Errors
    /// [`RoyaltyError::SplitSum`] / [`RoyaltyError::InvalidInput`] from
    /// [`SplitSheet::validate`]; [`RoyaltyError::Storage`].
    pub fn set_split_sheet(&self, sheet: SplitSheet) -> Result<Option<SplitSheet>, RoyaltyError> {
        sheet.validate()?;
        let _guard = self.lock();
        let key = sheet.content_id.as_bytes().to_vec();
        let previous = self.store.get(TreeId::Splits, &key)?;
        let mut st = Staging::new(&self.store);
        st.put(TreeId::Splits, key, &sheet)?;
        st.commit()?;
        Ok(previous)
    }

    /// Removes a content's split sheet, returning it; later credits go to the entry's artist.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] for a malformed id; [`RoyaltyError::Storage`].
    pub fn remove_split_sheet(&self, content_id: &str) -> Result<Option<SplitSheet>, RoyaltyError> {
        check_content_id("content_id", content_id)?;
        let _guard = self.lock();
        let key = content_id.as_bytes().to_vec();
        let previous = self.store.get(TreeId::Splits, &key)?;
        if previous.is_some() {
            let mut st = Staging::new(&self.store);
            st.remove(TreeId::Splits, key);
            st.commit()?;
        }
        Ok(previous)
    }

    /// The split sheet of `content_id`, if any.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn split_sheet(&self, content_id: &str) -> Result<Option<SplitSheet>, RoyaltyError> {
        let _guard = self.lock();
        self.store.get(TreeId::Splits, content_id.as_bytes())
    }

    /// Every split sheet, by content id.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn split_sheets(&self) -> Result<Vec<SplitSheet>, RoyaltyError> {
        let _guard = self.lock();
        Ok(self
            .store
            .scan::<SplitSheet>(TreeId::Splits, b"")?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// The artist's balances, one per currency they have been booked in.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn balance(&self, artist_id: &str) -> Result<Vec<Balance>, RoyaltyError> {
        let _guard = self.lock();
        self.balances_with_prefix(&artist_prefix(artist_id))
    }

    /// Every artist's balances, by artist id then currency.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn balances(&self) -> Result<Vec<Balance>, RoyaltyError> {
        let _guard = self.lock();
        self.balances_with_prefix(b"")
    }

    /// Balances whose key starts with `prefix`; the caller holds the lock.
    pub(crate) fn balances_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Balance>, RoyaltyError> {
        self.store
            .scan::<BalanceState>(TreeId::Balances, prefix)?
            .into_iter()
            .map(|(key, state)| {
                let (artist, rest) = split_artist(&key)
                    .and_then(|(a, rest)| Some((a, currency_at(rest)?)))
                    .ok_or_else(|| RoyaltyError::Corrupt {
                        tree: TreeId::Balances.name(),
                        problem: format!("bad key {}", hex::encode(&key)),
                    })?;
                Balance::from_state(artist, rest, &state)
            })
            .collect()
    }

    /// Up to `limit` (at most [`MAX_POSTINGS_PAGE`]) postings with `seq > cursor`, in order.
    /// Pass the seq of the last posting appended to the ledger (0 at first) to replay whatever
    /// a crash kept from being appended.
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn postings_since(&self, cursor: u64, limit: usize) -> Result<Vec<Posting>, RoyaltyError> {
        let _guard = self.lock();
        let start = cursor.saturating_add(1).to_be_bytes();
        self.store
            .tree(TreeId::Postings)
            .range(start..)
            .take(limit.min(MAX_POSTINGS_PAGE))
            .map(|item| super::store::decode(TreeId::Postings, &item?.1))
            .collect()
    }

    /// Recomputes every balance from the postings (credits and adjustments earn, withholdings
    /// and payouts take away) and compares it with the stored balance; also checks that the
    /// postings run `1..=last_seq` without a gap. This is what a restored backup is held to.
    ///
    /// # Errors
    /// [`RoyaltyError::Corrupt`] naming the first posting out of place or the first balance
    /// that differs (artist, currency, stored and recomputed figures);
    /// [`RoyaltyError::Storage`].
    pub fn audit(&self) -> Result<BalanceAudit, RoyaltyError> {
        let _guard = self.lock();
        let mut sums: BTreeMap<(String, Currency), [i64; 3]> = BTreeMap::new();
        let mut expected_seq = 1u64;
        for item in self.store.tree(TreeId::Postings).iter() {
            let (_, bytes) = item?;
            let p: Posting = super::store::decode(TreeId::Postings, &bytes)?;
            if p.seq != expected_seq {
                return Err(RoyaltyError::Corrupt {
                    tree: TreeId::Postings.name(),
                    problem: format!("posting {} found where {expected_seq} belongs", p.seq),
                });
            }
            expected_seq += 1;
            let sum = sums.entry((p.account.clone(), p.currency)).or_default();
            let (slot, amount) = match p.kind {
                PostingKind::Credit | PostingKind::Adjustment => (0, p.amount_minor),
                PostingKind::Withholding => (1, -p.amount_minor),
                PostingKind::Payout => (2, -p.amount_minor),
            };
            sum[slot] = add_minor(sum[slot], amount)?;
        }
        let postings = expected_seq - 1;
        let last = self
            .store
            .get::<Journal>(TreeId::Meta, JOURNAL_KEY)?
            .unwrap_or_default()
            .last_seq;
        if last != postings {
            return Err(RoyaltyError::Corrupt {
                tree: TreeId::Postings.name(),
                problem: format!("the journal says {last} postings, {postings} are stored"),
            });
        }
        let balances = self.balances_with_prefix(b"")?;
        for b in &balances {
            let want = sums
                .remove(&(b.artist_id.clone(), b.currency))
                .unwrap_or_default();
            let have = [b.earned_minor, b.withheld_minor, b.paid_minor];
            if have != want {
                return Err(RoyaltyError::Corrupt {
                    tree: TreeId::Balances.name(),
                    problem: format!(
                        "artist {:?} {}: stored earned/withheld/paid {have:?}, recomputed from \
                         the postings {want:?}",
                        b.artist_id, b.currency
                    ),
                });
            }
        }
        if let Some(((artist, currency), want)) = sums.into_iter().find(|(_, v)| *v != [0; 3]) {
            return Err(RoyaltyError::Corrupt {
                tree: TreeId::Balances.name(),
                problem: format!(
                    "artist {artist:?} {currency}: no stored balance, the postings sum to {want:?}"
                ),
            });
        }
        Ok(BalanceAudit {
            postings,
            balances: balances.len(),
        })
    }

    /// Seq of the last posting booked (0 if none).
    ///
    /// # Errors
    /// [`RoyaltyError::Storage`], [`RoyaltyError::Corrupt`].
    pub fn last_seq(&self) -> Result<u64, RoyaltyError> {
        let _guard = self.lock();
        Ok(self
            .store
            .get::<Journal>(TreeId::Meta, JOURNAL_KEY)?
            .unwrap_or_default()
            .last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{crypto_account, tip, Harness};
    use super::super::{PayoutMethod, SplitShare, Tip};
    use super::*;
    use crate::royalty::Money;

    #[test]
    fn the_audit_recomputes_balances_and_names_one_that_differs() {
        let h = Harness::new();
        tip(&h, "t1", "alice", Money::new(250, Currency::USD));
        tip(&h, "t2", "alice", Money::new(100, Currency::USD));
        tip(&h, "t3", "bob", Money::new(40, Currency::USD));
        let audit = h.royalty.audit().unwrap();
        assert_eq!(audit.balances, 2);
        assert_eq!(audit.postings, h.royalty.last_seq().unwrap());

        // A balance changed behind the postings' back is named, with both figures.
        let key = super::super::store::balance_key("bob", Currency::USD);
        let tree = h.royalty.store().tree(TreeId::Balances);
        let mut state: BalanceState =
            super::super::store::decode(TreeId::Balances, &tree.get(&key).unwrap().unwrap())
                .unwrap();
        state.earned += 1;
        tree.insert(&key, encode(&state).unwrap()).unwrap();
        let err = h.royalty.audit().unwrap_err().to_string();
        assert!(err.contains("\"bob\" USD") && err.contains("[41"), "{err}");
    }

    #[test]
    fn royalty_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Royalty>();
    }

    #[test]
    fn invalid_config_is_refused_at_open() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let config = RoyaltyConfig {
            currency: "dollars".into(),
            ..RoyaltyConfig::default()
        };
        let err = Royalty::open(&db, config).unwrap_err();
        assert!(
            err.to_string().contains("plugins.royalty.currency"),
            "{err}"
        );
    }

    #[test]
    fn accounts_create_update_list() {
        let h = Harness::new();
        let a = crypto_account("ar-1", "US");
        h.royalty.create_account(a.clone()).unwrap();
        // Identical re-creation is a no-op; a different one is refused.
        h.royalty.create_account(a.clone()).unwrap();
        let mut b = a.clone();
        b.name = "Renamed".into();
        assert!(matches!(
            h.royalty.create_account(b.clone()),
            Err(RoyaltyError::AccountExists(_))
        ));
        assert_eq!(h.royalty.update_account(b.clone()).unwrap(), a);
        assert_eq!(h.royalty.account("ar-1").unwrap(), Some(b.clone()));
        let mut c = crypto_account("ar-0", "GB");
        c.payout_method = PayoutMethod::Stripe {
            account_id: "acct_1".into(),
        };
        assert!(matches!(
            h.royalty.update_account(c.clone()),
            Err(RoyaltyError::UnknownArtist(_))
        ));
        h.royalty.create_account(c.clone()).unwrap();
        assert_eq!(h.royalty.accounts().unwrap(), vec![c, b]);
        assert!(h.royalty.account("nobody").unwrap().is_none());
        let mut bad = crypto_account("ar-2", "XX");
        bad.tax_country = "x".into();
        assert!(h.royalty.create_account(bad).is_err());
    }

    #[test]
    fn split_sheets_set_get_remove() {
        let h = Harness::new();
        let sheet = SplitSheet {
            content_id: "song".into(),
            shares: vec![
                SplitShare {
                    artist_id: "a".into(),
                    share_bps: 6000,
                },
                SplitShare {
                    artist_id: "b".into(),
                    share_bps: 4000,
                },
            ],
        };
        assert_eq!(h.royalty.set_split_sheet(sheet.clone()).unwrap(), None);
        assert_eq!(h.royalty.split_sheet("song").unwrap(), Some(sheet.clone()));
        assert_eq!(h.royalty.split_sheets().unwrap(), vec![sheet.clone()]);
        let mut bad = sheet.clone();
        bad.shares[0].share_bps = 5999;
        assert!(matches!(
            h.royalty.set_split_sheet(bad),
            Err(RoyaltyError::SplitSum { sum: 9999, .. })
        ));
        assert_eq!(h.royalty.remove_split_sheet("song").unwrap(), Some(sheet));
        assert_eq!(h.royalty.remove_split_sheet("song").unwrap(), None);
    }

    #[test]
    fn postings_since_pages_through_the_journal() {
        let h = Harness::new();
        for i in 0..5 {
            h.royalty
                .record_tip(&Tip {
                    reference: format!("t{i}"),
                    artist_id: "a".into(),
                    amount: Money::new(100 + i, Currency::USD),
                    from: "fan".into(),
                })
                .unwrap();
        }
        // No accounts: default 0 bps withholding, so one posting per tip.
        assert_eq!(h.royalty.last_seq().unwrap(), 5);
        let all = h.royalty.postings_since(0, 100).unwrap();
        assert_eq!(
            all.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        let page = h.royalty.postings_since(2, 2).unwrap();
        assert_eq!(page.iter().map(|p| p.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(h.royalty.postings_since(5, 10).unwrap().is_empty());
        assert!(h.royalty.postings_since(u64::MAX, 10).unwrap().is_empty());
        assert_eq!(h.royalty.balance("a").unwrap()[0].pending_minor, 510);
        assert!(format!("{:?}", h.royalty).contains("Royalty"));
    }
}
