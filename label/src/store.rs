//! The label's sled trees: code counters, releases, the index of every code ever issued, the
//! takedown list.
//!
//! Codes are never issued twice: a release and the counters it advanced are written in one
//! sled transaction and flushed before the release is answered; every issued code is indexed
//! (`label/codes`) and an allocation that meets an indexed code skips it; and after a restore
//! from backup the counters jump by `restore_skip` (codes issued after the backup was taken
//! are not in it).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::ids::{Gs1Prefix, Icpn, IdError, Isrc, IsrcRegistrant, MAX_ISRC_DESIGNATION};
use crate::release::Release;

/// Counters: `isrc/<year>`, `upc`, `release` → u64 big-endian (the last one used).
pub const COUNTERS_TREE: &str = "label/counters";
/// Releases by id (JSON).
pub const RELEASES_TREE: &str = "label/releases";
/// Every code issued or imported: `isrc:<code>` / `upc:<code>` → release id.
pub const CODES_TREE: &str = "label/codes";
/// Content taken down: content id → [`Takedown`] (JSON).
pub const TAKEDOWNS_TREE: &str = "label/takedowns";
/// Markers: `restored` (set by a restore from backup, cleared once the counters moved on).
pub const META_TREE: &str = "label/meta";

const RESTORED_KEY: &[u8] = b"restored";

/// A store failure or a refused write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("label store: {0}")]
    Storage(#[from] sled::Error),
    /// A stored value does not decode.
    #[error("label store: {tree} holds an undecodable value: {problem}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The decoder's message.
        problem: String,
    },
    /// The counters ran out or an imported code is taken.
    #[error("{0}")]
    Codes(String),
    /// An identifier could not be formed.
    #[error(transparent)]
    Id(#[from] IdError),
}

/// An entry of the takedown list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takedown {
    /// The content.
    pub content_id: String,
    /// Why, as the operator wrote it.
    pub reason: String,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// The label's trees in the node's database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    counters: sled::Tree,
    releases: sled::Tree,
    codes: sled::Tree,
    takedowns: sled::Tree,
    meta: sled::Tree,
}

/// What a new release needs allocated: for each track, an imported ISRC or none (assign one).
#[derive(Debug, Clone)]
pub struct Allocation<'a> {
    /// The registrant.
    pub registrant: &'a IsrcRegistrant,
    /// The GS1 prefix.
    pub prefix: &'a Gs1Prefix,
    /// The year of reference of new ISRCs (the year of allocation).
    pub year: u16,
    /// An imported UPC, if any.
    pub upc: Option<Icpn>,
    /// Per track, an imported ISRC or `None`.
    pub isrcs: Vec<Option<Isrc>>,
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        problem: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data with string keys: serialising to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Advances counter `key` past codes already indexed, returning the next free value.
fn next_free(
    counters: &TransactionalTree,
    codes: &TransactionalTree,
    key: &str,
    max: u64,
    code_of: impl Fn(u64) -> Result<String, StoreError>,
) -> TxResult<(u64, String)> {
    let mut n = read_u64(counters.get(key)?);
    loop {
        n += 1;
        if n > max {
            return abort(StoreError::Codes(format!(
                "the {key} counter is exhausted (last {max})"
            )));
        }
        let code = match code_of(n) {
            Ok(c) => c,
            Err(e) => return abort(e),
        };
        if codes.get(code.as_bytes())?.is_none() {
            counters.insert(key.as_bytes(), &n.to_be_bytes())?;
            return Ok((n, code));
        }
    }
}

fn unwrap_tx<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Storage(e),
    })
}

impl Store {
    /// Opens the trees.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            counters: db.open_tree(COUNTERS_TREE)?,
            releases: db.open_tree(RELEASES_TREE)?,
            codes: db.open_tree(CODES_TREE)?,
            takedowns: db.open_tree(TAKEDOWNS_TREE)?,
            meta: db.open_tree(META_TREE)?,
        })
    }

    /// The database (for the delivery jobs' trees).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Assigns the release id, its UPC and its tracks' ISRCs and stores `build(id, upc,
    /// isrcs)`, all in one transaction, flushed before it returns.
    ///
    /// # Errors
    /// [`StoreError::Codes`] for an imported code already issued to another release or a
    /// counter that ran out; [`StoreError::Storage`].
    pub fn create_release(
        &self,
        alloc: &Allocation<'_>,
        build: impl Fn(String, Icpn, Vec<Isrc>) -> Release,
    ) -> Result<Release, StoreError> {
        let isrc_key = format!("isrc/{}", alloc.year);
        let release = unwrap_tx((&self.counters, &self.releases, &self.codes).transaction(
            |(counters, releases, codes)| {
                let (n, _) = next_free(counters, codes, "release", u64::MAX - 1, |n| {
                    Ok(format!("release:rel-{n}"))
                })?;
                let id = format!("rel-{n}");
                let upc = match &alloc.upc {
                    Some(upc) => {
                        if let Some(owner) = codes.get(format!("upc:{upc}").as_bytes())? {
                            return abort(StoreError::Codes(format!(
                                "upc {upc} is already issued to {}",
                                String::from_utf8_lossy(&owner)
                            )));
                        }
                        upc.clone()
                    }
                    None => {
                        let capacity = alloc.prefix.capacity() - 1;
                        let (n, _) = next_free(counters, codes, "upc", capacity, |n| {
                            Ok(format!(
                                "upc:{}",
                                Icpn::assemble_upc(alloc.prefix, n)?.as_str()
                            ))
                        })?;
                        match Icpn::assemble_upc(alloc.prefix, n) {
                            Ok(u) => u,
                            Err(e) => return abort(e.into()),
                        }
                    }
                };
                let mut isrcs = Vec::with_capacity(alloc.isrcs.len());
                for imported in &alloc.isrcs {
                    let isrc = match imported {
                        Some(isrc) => {
                            if let Some(owner) = codes.get(format!("isrc:{isrc}").as_bytes())? {
                                return abort(StoreError::Codes(format!(
                                    "isrc {isrc} is already issued to {}",
                                    String::from_utf8_lossy(&owner)
                                )));
                            }
                            isrc.clone()
                        }
                        None => {
                            let (n, _) = next_free(
                                counters,
                                codes,
                                &isrc_key,
                                u64::from(MAX_ISRC_DESIGNATION),
                                |n| {
                                    let d = u32::try_from(n).unwrap_or(u32::MAX);
                                    Ok(format!(
                                        "isrc:{}",
                                        Isrc::assemble(alloc.registrant, alloc.year, d)?
                                    ))
                                },
                            )?;
                            let d = u32::try_from(n).unwrap_or(u32::MAX);
                            match Isrc::assemble(alloc.registrant, alloc.year, d) {
                                Ok(i) => i,
                                Err(e) => return abort(e.into()),
                            }
                        }
                    };
                    // Two tracks of one request importing the same code.
                    if isrcs.contains(&isrc) {
                        return abort(StoreError::Codes(format!(
                            "isrc {isrc} is given to two tracks"
                        )));
                    }
                    codes.insert(format!("isrc:{isrc}").as_bytes(), id.as_bytes())?;
                    isrcs.push(isrc);
                }
                codes.insert(format!("upc:{upc}").as_bytes(), id.as_bytes())?;
                codes.insert(format!("release:{id}").as_bytes(), id.as_bytes())?;
                let release = build(id.clone(), upc, isrcs);
                releases.insert(id.as_bytes(), encode(&release))?;
                Ok(release)
            },
        ))?;
        self.db.flush()?;
        Ok(release)
    }

    /// The next delivery sequence number (batch ids), flushed.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn next_delivery_seq(&self) -> Result<u64, StoreError> {
        let n = self.counters.update_and_fetch("delivery", |old| {
            Some(
                (read_u64(old.map(sled::IVec::from)) + 1)
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        self.db.flush()?;
        Ok(read_u64(n))
    }

    /// A release by id.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn release(&self, id: &str) -> Result<Option<Release>, StoreError> {
        self.releases
            .get(id.as_bytes())?
            .map(|v| decode(RELEASES_TREE, &v))
            .transpose()
    }

    /// Every release, by id.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn releases(&self) -> Result<Vec<Release>, StoreError> {
        let mut all: Vec<Release> = self
            .releases
            .iter()
            .values()
            .map(|v| decode(RELEASES_TREE, &v?))
            .collect::<Result<_, _>>()?;
        all.sort_by_key(|r| r.id.trim_start_matches("rel-").parse::<u64>().unwrap_or(0));
        Ok(all)
    }

    /// The release a code was issued to (`isrc:<code>` or `upc:<code>`).
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn owner_of(&self, code_key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .codes
            .get(code_key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Puts content on the takedown list (flushed). Returns `false` when it was already there.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn add_takedown(&self, takedown: &Takedown) -> Result<bool, StoreError> {
        let old = self
            .takedowns
            .insert(takedown.content_id.as_bytes(), encode(takedown))?;
        self.db.flush()?;
        Ok(old.is_none())
    }

    /// The takedown of a content, if listed.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn takedown(&self, content_id: &str) -> Result<Option<Takedown>, StoreError> {
        self.takedowns
            .get(content_id.as_bytes())?
            .map(|v| decode(TAKEDOWNS_TREE, &v))
            .transpose()
    }

    /// The takedown list.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn takedowns(&self) -> Result<Vec<Takedown>, StoreError> {
        self.takedowns
            .iter()
            .values()
            .map(|v| decode(TAKEDOWNS_TREE, &v?))
            .collect()
    }

    /// After a restore from backup: moves every code counter `skip` past its restored value,
    /// once (the marker [`mark_restored`] set is cleared in the same transaction).
    /// Returns whether it did.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn skip_after_restore(&self, skip: u32) -> Result<bool, StoreError> {
        if self.meta.get(RESTORED_KEY)?.is_none() {
            return Ok(false);
        }
        let keys: Vec<sled::IVec> = self
            .counters
            .iter()
            .keys()
            .filter(|k| {
                k.as_ref()
                    .map_or(true, |k| k.starts_with(b"isrc/") || k.as_ref() == b"upc")
            })
            .collect::<Result<_, _>>()?;
        unwrap_tx(
            (&self.counters, &self.meta).transaction(|(counters, meta)| {
                for key in &keys {
                    let n = read_u64(counters.get(key)?);
                    counters.insert(key.as_ref(), &(n + u64::from(skip)).to_be_bytes())?;
                }
                meta.remove(RESTORED_KEY)?;
                Ok(())
            }),
        )?;
        self.db.flush()?;
        Ok(true)
    }
}

impl Store {
    /// Stores a JSON value under `key` in `tree` (one of the label's), flushed.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn put_json<T: Serialize>(
        &self,
        tree: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.db
            .open_tree(tree)?
            .insert(key.as_bytes(), encode(value))?;
        self.db.flush()?;
        Ok(())
    }

    /// The JSON values under `prefix` in `tree`, in key order.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn scan_json<T: DeserializeOwned>(
        &self,
        tree: &'static str,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.db
            .open_tree(tree)?
            .scan_prefix(prefix.as_bytes())
            .values()
            .map(|v| decode(tree, &v?))
            .collect()
    }
}

/// Marks a database as restored from a backup, so the label plugin skips its code counters
/// forward when it next opens (see [`Store::skip_after_restore`]). Called by the restore.
///
/// # Errors
/// [`sled::Error`].
pub fn mark_restored(db: &sled::Db, now_ms: u64) -> Result<(), sled::Error> {
    db.open_tree(META_TREE)?
        .insert(RESTORED_KEY, &now_ms.to_be_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Track;

    fn release(id: String, upc: Icpn, isrcs: Vec<Isrc>) -> Release {
        Release {
            id,
            artist: "ada".into(),
            title: "t".into(),
            display_artist: "Ada".into(),
            label: "l".into(),
            genre: "g".into(),
            release_date: "2026-12-04".into(),
            territories: vec!["Worldwide".into()],
            p_line: "p".into(),
            c_line: "c".into(),
            upc,
            deals: Vec::new(),
            tracks: isrcs
                .into_iter()
                .map(|isrc| Track {
                    content_id: "x".into(),
                    isrc,
                    title: "t".into(),
                    display_artist: "Ada".into(),
                    duration_ms: 1,
                })
                .collect(),
            created_ms: 0,
        }
    }

    #[test]
    fn codes_are_never_issued_twice_across_reopen_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let reg = IsrcRegistrant::new("USMHC").unwrap();
        let prefix = Gs1Prefix::new("0614141").unwrap();
        let alloc = |isrcs: Vec<Option<Isrc>>, upc: Option<Icpn>| Allocation {
            registrant: &reg,
            prefix: &prefix,
            year: 2026,
            upc,
            isrcs,
        };
        let first = {
            let db = sled::open(dir.path()).unwrap();
            let store = Store::open(&db).unwrap();
            let r = store
                .create_release(&alloc(vec![None, None], None), release)
                .unwrap();
            assert_eq!(r.id, "rel-1");
            assert_eq!(r.upc.as_str(), "061414100014");
            assert_eq!(r.tracks[0].isrc.as_str(), "USMHC2600001");
            assert_eq!(r.tracks[1].isrc.as_str(), "USMHC2600002");
            // An imported ISRC that collides with an issued one is refused, and nothing moves.
            let err = store
                .create_release(
                    &alloc(vec![Some(Isrc::parse("USMHC2600002").unwrap())], None),
                    release,
                )
                .unwrap_err();
            assert!(err.to_string().contains("already issued to rel-1"), "{err}");
            // An imported code the counter would reach later is skipped when it gets there.
            let r2 = store
                .create_release(
                    &alloc(vec![Some(Isrc::parse("USMHC2600003").unwrap()), None], None),
                    release,
                )
                .unwrap();
            assert_eq!(r2.id, "rel-2");
            assert_eq!(r2.tracks[1].isrc.as_str(), "USMHC2600004");
            r
        };
        // Reopened: the counters continued.
        let db = sled::open(dir.path()).unwrap();
        let store = Store::open(&db).unwrap();
        assert_eq!(store.release("rel-1").unwrap().unwrap(), first);
        assert_eq!(
            store.owner_of("isrc:USMHC2600003").unwrap().as_deref(),
            Some("rel-2")
        );
        // A restore marks the db; the next open skips the counters forward once.
        mark_restored(&db, 1).unwrap();
        assert!(store.skip_after_restore(1000).unwrap());
        assert!(!store.skip_after_restore(1000).unwrap());
        let r3 = store
            .create_release(&alloc(vec![None], None), release)
            .unwrap();
        assert_eq!(r3.tracks[0].isrc.as_str(), "USMHC2601005");
        assert_eq!(r3.upc.as_str(), "061414110037");
        assert_eq!(r3.id, "rel-3");
    }
}
