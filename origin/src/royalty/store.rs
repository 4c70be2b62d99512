//! Persistence: the `royalty/...` sled trees, their key layouts and records, and the staging
//! area that turns one input into one atomic, flushed sled transaction.
//!
//! An input is computed against a [`Staging`] overlay (reads see the input's own earlier writes),
//! then every write goes to sled in a single multi-tree transaction, then the database is flushed
//! once. A crash before the commit leaves nothing; after it, everything; after the flush returns,
//! it survives power loss. All writers hold the royalty module's lock, so nothing can change
//! between computing and committing.
//!
//! Values are postcard. Keys are built so that prefix scans answer the queries: artist ids may
//! not contain control characters, so the NUL byte after an artist id is an unambiguous
//! separator; numbers are big-endian so byte order is numeric order.

use std::collections::BTreeMap;
use std::convert::Infallible;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{TransactionError, TransactionalTree};
use sled::Transactional;

use super::calendar::Month;
use super::money::Currency;
use super::posting::PostingKind;
use super::RoyaltyError;

/// The trees this module owns, in transaction order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TreeId {
    /// Schema version and the journal cursor ([`Journal`]).
    Meta,
    /// artist id → [`ArtistAccount`](super::ArtistAccount).
    Accounts,
    /// content id → [`SplitSheet`](super::SplitSheet).
    Splits,
    /// kind NUL reference → [`InputRecord`]: what makes inputs idempotent.
    Inputs,
    /// seq (u64 BE) → [`Posting`](super::Posting).
    Postings,
    /// artist NUL currency → [`BalanceState`].
    Balances,
    /// artist NUL month-index (u32 BE) currency → [`MonthTotals`].
    Months,
    /// artist NUL currency time (u64 BE) seq (u64 BE) → [`Totals`] after that posting.
    History,
    /// month-index (u32 BE) content NUL artist → milliseconds watched (u64).
    Watch,
    /// batch id → [`PayoutBatch`](super::PayoutBatch).
    Payouts,
}

const TREES: [(TreeId, &str); 10] = [
    (TreeId::Meta, "royalty/meta"),
    (TreeId::Accounts, "royalty/accounts"),
    (TreeId::Splits, "royalty/splits"),
    (TreeId::Inputs, "royalty/inputs"),
    (TreeId::Postings, "royalty/postings"),
    (TreeId::Balances, "royalty/balances"),
    (TreeId::Months, "royalty/months"),
    (TreeId::History, "royalty/history"),
    (TreeId::Watch, "royalty/watch"),
    (TreeId::Payouts, "royalty/payouts"),
];

/// Version of the key and record layout; bumped (with a migration) on any change, because
/// postcard records are not self-describing.
const SCHEMA_VERSION: u32 = 1;

impl TreeId {
    fn index(self) -> usize {
        self as usize
    }

    /// The sled tree name.
    pub(crate) fn name(self) -> &'static str {
        TREES[self.index()].1
    }
}

/// Key of the [`Journal`] record in [`TreeId::Meta`].
pub(crate) const JOURNAL_KEY: &[u8] = b"journal";
const SCHEMA_KEY: &[u8] = b"schema";

/// The posting journal's cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Journal {
    /// Seq of the last posting written (0: none yet).
    pub last_seq: u64,
    /// Booking time of the last input; booking times never go backwards.
    pub last_time_ms: u64,
}

/// An artist's running balance in one currency, with the sub-minor remainders carried forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BalanceState {
    /// Σ credits and adjustments, minor units.
    pub earned: i64,
    /// Σ withholdings, minor units.
    pub withheld: i64,
    /// Σ payouts, minor units.
    pub paid: i64,
    /// Play earnings not yet booked, in nano-units (10⁻⁹ minor unit), `0..1e9`.
    pub carry_nano: i64,
    /// Withholding not yet booked, in 10⁻⁴ minor units (credit × bps remainder), `0..10000`.
    pub withholding_carry: i64,
}

/// Cumulative totals after one posting (the [`TreeId::History`] value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Totals {
    /// Σ credits and adjustments.
    pub earned: i64,
    /// Σ withholdings.
    pub withheld: i64,
    /// Σ payouts.
    pub paid: i64,
}

/// One statement line's running total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LineTotal {
    /// Postings aggregated.
    pub count: u64,
    /// Σ of their `amount_minor`.
    pub amount_minor: i64,
}

/// An artist's postings in one month and currency, aggregated by (kind, source).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MonthTotals {
    /// Totals per (kind, source).
    pub lines: BTreeMap<(PostingKind, String), LineTotal>,
}

/// What a processed input left behind, so a repeat returns the same result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InputRecord {
    /// BLAKE3 of the input's canonical encoding: a reused reference with other data is refused.
    pub digest: [u8; 32],
    /// Seq of its first posting (its postings are consecutive).
    pub first_seq: u64,
    /// Number of postings.
    pub count: u64,
}

/// The sled trees, opened once.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl Store {
    /// Opens (creating if needed) the royalty trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, RoyaltyError> {
        let trees = TREES
            .iter()
            .map(|(_, name)| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        let store = Store {
            db: db.clone(),
            trees,
        };
        match store.get::<u32>(TreeId::Meta, SCHEMA_KEY)? {
            None => {
                store
                    .tree(TreeId::Meta)
                    .insert(SCHEMA_KEY, encode(&SCHEMA_VERSION)?)?;
                store.db.flush()?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(RoyaltyError::Corrupt {
                    tree: TreeId::Meta.name(),
                    problem: format!("schema version {other}, this build reads {SCHEMA_VERSION}"),
                })
            }
        }
        Ok(store)
    }

    /// The sled tree for `id`.
    pub fn tree(&self, id: TreeId) -> &sled::Tree {
        &self.trees[id.index()]
    }

    /// Reads and decodes one record.
    pub fn get<T: DeserializeOwned>(
        &self,
        id: TreeId,
        key: &[u8],
    ) -> Result<Option<T>, RoyaltyError> {
        match self.tree(id).get(key)? {
            Some(bytes) => Ok(Some(decode(id, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        id: TreeId,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, RoyaltyError> {
        self.tree(id)
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), decode(id, &v)?))
            })
            .collect()
    }

    /// The last record with a key strictly below `below` and starting with `prefix`.
    pub fn last_before<T: DeserializeOwned>(
        &self,
        id: TreeId,
        prefix: &[u8],
        below: &[u8],
    ) -> Result<Option<T>, RoyaltyError> {
        match self.tree(id).range(prefix..below).next_back() {
            Some(item) => Ok(Some(decode(id, &item?.1)?)),
            None => Ok(None),
        }
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), RoyaltyError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RoyaltyError> {
    postcard::to_allocvec(value).map_err(|e| RoyaltyError::Corrupt {
        tree: "(encode)",
        problem: e.to_string(),
    })
}

/// Decodes a record read from tree `id`.
pub(crate) fn decode<T: DeserializeOwned>(id: TreeId, bytes: &[u8]) -> Result<T, RoyaltyError> {
    postcard::from_bytes(bytes).map_err(|e| RoyaltyError::Corrupt {
        tree: id.name(),
        problem: e.to_string(),
    })
}

/// Writes of one input, applied atomically by [`Staging::commit`].
#[derive(Debug)]
pub(crate) struct Staging<'a> {
    store: &'a Store,
    writes: BTreeMap<(TreeId, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a> Staging<'a> {
    /// An empty overlay over `store`.
    pub fn new(store: &'a Store) -> Self {
        Staging {
            store,
            writes: BTreeMap::new(),
        }
    }

    /// The store underneath (for scans, which see committed data only).
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// Reads a record, seeing this overlay's own writes first.
    pub fn get<T: DeserializeOwned>(
        &self,
        id: TreeId,
        key: &[u8],
    ) -> Result<Option<T>, RoyaltyError> {
        match self.writes.get(&(id, key.to_vec())) {
            Some(Some(bytes)) => Ok(Some(decode(id, bytes)?)),
            Some(None) => Ok(None),
            None => self.store.get(id, key),
        }
    }

    /// Stages a write.
    pub fn put<T: Serialize>(
        &mut self,
        id: TreeId,
        key: Vec<u8>,
        value: &T,
    ) -> Result<(), RoyaltyError> {
        self.writes.insert((id, key), Some(encode(value)?));
        Ok(())
    }

    /// Stages a removal.
    pub fn remove(&mut self, id: TreeId, key: Vec<u8>) {
        self.writes.insert((id, key), None);
    }

    /// Applies every staged write in one sled transaction across the trees, then flushes.
    pub fn commit(self) -> Result<(), RoyaltyError> {
        let trees: &[sled::Tree] = &self.store.trees;
        let result = trees.transaction(|views: &Vec<TransactionalTree>| {
            for ((id, key), value) in &self.writes {
                let tree = &views[id.index()];
                match value {
                    Some(bytes) => {
                        tree.insert(key.as_slice(), bytes.as_slice())?;
                    }
                    None => {
                        tree.remove(key.as_slice())?;
                    }
                }
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<Infallible>>(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(e.into()),
            Err(TransactionError::Abort(never)) => match never {},
        }
        self.store.flush()
    }
}

/// `artist NUL`: the prefix of every per-artist key.
pub(crate) fn artist_prefix(artist: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(artist.len() + 1);
    k.extend_from_slice(artist.as_bytes());
    k.push(0);
    k
}

/// [`TreeId::Balances`] key.
pub(crate) fn balance_key(artist: &str, currency: Currency) -> Vec<u8> {
    let mut k = artist_prefix(artist);
    k.extend_from_slice(&currency.as_bytes());
    k
}

/// [`TreeId::Months`] key.
pub(crate) fn month_key(artist: &str, month: Month, currency: Currency) -> Vec<u8> {
    let mut k = artist_prefix(artist);
    k.extend_from_slice(&month.index().to_be_bytes());
    k.extend_from_slice(&currency.as_bytes());
    k
}

/// [`TreeId::History`] key; with `seq = u64::MAX` it bounds everything booked at `time_ms`.
pub(crate) fn history_key(artist: &str, currency: Currency, time_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = balance_key(artist, currency);
    k.extend_from_slice(&time_ms.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// [`TreeId::Watch`] key.
pub(crate) fn watch_key(month: Month, content_id: &str, artist: &str) -> Vec<u8> {
    let mut k = month.index().to_be_bytes().to_vec();
    k.extend_from_slice(content_id.as_bytes());
    k.push(0);
    k.extend_from_slice(artist.as_bytes());
    k
}

/// [`TreeId::Inputs`] key.
pub(crate) fn input_key(kind: &str, reference: &str) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(reference.as_bytes());
    k
}

/// Splits a key that starts with `artist NUL` into the artist and the rest.
pub(crate) fn split_artist(key: &[u8]) -> Option<(String, &[u8])> {
    let nul = key.iter().position(|&b| b == 0)?;
    let artist = std::str::from_utf8(&key[..nul]).ok()?.to_string();
    Some((artist, &key[nul + 1..]))
}

/// Reads a currency from the first three bytes of `bytes`.
pub(crate) fn currency_at(bytes: &[u8]) -> Option<Currency> {
    Currency::new(std::str::from_utf8(bytes.get(..3)?).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> Store {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Store::open(&db).unwrap()
    }

    #[test]
    fn staging_reads_its_own_writes_and_commits_atomically() {
        let store = temp_store();
        let mut st = Staging::new(&store);
        st.put(TreeId::Postings, vec![1], &5u64).unwrap();
        st.put(TreeId::Balances, vec![2], &BalanceState::default())
            .unwrap();
        assert_eq!(st.get::<u64>(TreeId::Postings, &[1]).unwrap(), Some(5));
        assert_eq!(store.get::<u64>(TreeId::Postings, &[1]).unwrap(), None);
        st.remove(TreeId::Postings, vec![1]);
        assert_eq!(st.get::<u64>(TreeId::Postings, &[1]).unwrap(), None);
        st.put(TreeId::Postings, vec![3], &7u64).unwrap();
        st.commit().unwrap();
        assert_eq!(store.get::<u64>(TreeId::Postings, &[3]).unwrap(), Some(7));
        assert!(store
            .get::<BalanceState>(TreeId::Balances, &[2])
            .unwrap()
            .is_some());
        // A dropped staging writes nothing.
        let mut st = Staging::new(&store);
        st.put(TreeId::Postings, vec![9], &1u64).unwrap();
        drop(st);
        assert_eq!(store.get::<u64>(TreeId::Postings, &[9]).unwrap(), None);
    }

    #[test]
    fn keys_sort_and_split() {
        let jan = Month::new(2025, 1).unwrap();
        let feb = Month::new(2025, 2).unwrap();
        assert!(month_key("a", jan, Currency::USD) < month_key("a", feb, Currency::USD));
        // "a" and "ab" never interleave: NUL sorts below every other byte.
        assert!(month_key("a", feb, Currency::USD) < month_key("ab", jan, Currency::USD));
        assert!(history_key("a", Currency::USD, 5, 9) < history_key("a", Currency::USD, 6, 1));
        let key = balance_key("ar 1", Currency::USD);
        let (artist, rest) = split_artist(&key).unwrap();
        assert_eq!(artist, "ar 1");
        assert_eq!(currency_at(rest), Some(Currency::USD));
        assert_eq!(input_key("tip", "r"), b"tip\0r".to_vec());
        assert!(watch_key(jan, "c", "a").starts_with(&jan.index().to_be_bytes()));
    }

    #[test]
    fn corrupt_records_and_schema_are_reported() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::open(&db).unwrap();
        store
            .tree(TreeId::Balances)
            .insert(b"k", &[0xff; 2])
            .unwrap();
        let err = store
            .get::<BalanceState>(TreeId::Balances, b"k")
            .unwrap_err();
        assert!(err.to_string().contains("royalty/balances"), "{err}");
        store
            .tree(TreeId::Meta)
            .insert(SCHEMA_KEY, encode(&99u32).unwrap())
            .unwrap();
        let err = Store::open(&db).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
