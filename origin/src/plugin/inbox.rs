//! The plugin host's durable inbox: the ordered log of events to deliver (play reports and
//! publications), its de-duplication index, each plugin's delivery cursor and dead letters.
//!
//! Layout (all in the node's sled db):
//! - [`INBOX_TREE`]: event seq (u64 big-endian, from 1) → version byte ‖ postcard([`StoredEvent`]);
//!   a play report is stored as its canonical wire bytes, signature included, so the inbox is
//!   also the audit trail of what every node reported.
//! - [`INBOX_INDEX_TREE`]: `r` ‖ node key ‖ seq (BE) for reports, `c` ‖ content id ‖ `0x00` ‖
//!   version (BE) for publications → event seq ‖ BLAKE3 of the stored event: exactly-once
//!   acceptance, and telling a resend (same digest) from a conflicting reuse of the key.
//! - [`CURSORS_TREE`]: plugin name → seq of the last event delivered to it (u64 BE).
//! - [`DEAD_LETTERS_TREE`]: plugin name ‖ `0x00` ‖ event seq (BE) → postcard([`DeadLetter`]).
//!
//! An event and its index record are written in one sled transaction and flushed before the
//! caller acknowledges; cursors are written without a flush, because losing a cursor update in a
//! crash only means re-delivering an event, which plugins apply idempotently.

use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sled::transaction::{TransactionError, Transactional};

use super::error::PluginError;
use super::ContentPublished;
use crate::report::ReportError;

/// The event log: event seq → stored event.
pub const INBOX_TREE: &str = "plugins/inbox";
/// De-duplication index: report `(node, seq)` or publication `(content, version)` → event seq.
pub const INBOX_INDEX_TREE: &str = "plugins/inbox-index";
/// Per-plugin delivery cursors.
pub const CURSORS_TREE: &str = "plugins/cursors";
/// Events a plugin failed on permanently, kept for inspection and retry.
pub const DEAD_LETTERS_TREE: &str = "plugins/dead-letters";

/// Version byte of stored events; bump on any change to [`StoredEvent`].
const EVENT_FORMAT_VERSION: u8 = 1;

/// An event as the inbox stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredEvent {
    /// A play report's canonical wire bytes ([`SignedPlayReport::encode`](crate::SignedPlayReport::encode)).
    PlayReport(Vec<u8>),
    /// A publication.
    ContentPublished(ContentPublished),
}

impl StoredEvent {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            StoredEvent::PlayReport(_) => "play_report",
            StoredEvent::ContentPublished(_) => "content_published",
        }
    }

    /// BLAKE3 of the stored bytes: what the index keeps to tell a resend from a conflict.
    pub(crate) fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    fn encode(&self) -> Vec<u8> {
        // Byte vectors and strings always encode.
        postcard::to_extend(self, vec![EVENT_FORMAT_VERSION]).expect("postcard encoding")
    }

    fn decode(bytes: &[u8], seq: u64) -> Result<Self, StoreError> {
        match bytes.split_first() {
            Some((&EVENT_FORMAT_VERSION, body)) => postcard::from_bytes(body)
                .map_err(|e| StoreError::Corrupt(format!("inbox event {seq}: {e}"))),
            Some((v, _)) => Err(StoreError::Corrupt(format!(
                "inbox event {seq}: unknown format version {v}"
            ))),
            None => Err(StoreError::Corrupt(format!("inbox event {seq} is empty"))),
        }
    }
}

/// An event a plugin failed on permanently (a non-retryable error or a panic). It stays here
/// until [`PluginHost::retry_dead_letters`](super::PluginHost::retry_dead_letters) delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The plugin that failed.
    pub plugin: String,
    /// The event's position in the inbox.
    pub event_seq: u64,
    /// `play_report` or `content_published`.
    pub event: String,
    /// The error (or panic message) of the last attempt.
    pub error: String,
    /// Whether the last attempt panicked.
    pub panicked: bool,
    /// How many deliveries failed.
    pub attempts: u32,
}

/// A failure of the inbox's own store, converted into the caller's error type.
#[derive(Debug)]
pub(crate) enum StoreError {
    Storage(sled::Error),
    Corrupt(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(e)
    }
}

impl From<StoreError> for PluginError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(e) => PluginError::Storage(e),
            StoreError::Corrupt(p) => PluginError::Corrupt(p),
        }
    }
}

impl From<StoreError> for ReportError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(e) => ReportError::Storage(e),
            StoreError::Corrupt(p) => ReportError::Corrupt(p),
        }
    }
}

/// One event of [`Inbox::page_after`]: its seq, and the event or why it does not decode.
pub(crate) type PageItem = (u64, Result<StoredEvent, String>);

/// What [`Inbox::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Stored as a new event.
    New(u64),
    /// The identical event is already stored at this seq.
    Existing(u64),
    /// The key is already used by a different event at this seq.
    Conflict(u64),
}

/// The inbox's trees. Appends are serialized by a lock (an append reads the last seq); reads and
/// cursor updates are not.
#[derive(Debug)]
pub(crate) struct Inbox {
    db: sled::Db,
    events: sled::Tree,
    index: sled::Tree,
    cursors: sled::Tree,
    dead: sled::Tree,
    append_lock: Mutex<()>,
}

fn u64_of(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("{what}: expected 8 bytes, got {}", bytes.len())))
}

fn dead_key(plugin: &str, seq: u64) -> Vec<u8> {
    let mut k = plugin.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn dead_prefix(plugin: &str) -> Vec<u8> {
    let mut k = plugin.as_bytes().to_vec();
    k.push(0);
    k
}

impl Inbox {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Inbox {
            db: db.clone(),
            events: db.open_tree(INBOX_TREE)?,
            index: db.open_tree(INBOX_INDEX_TREE)?,
            cursors: db.open_tree(CURSORS_TREE)?,
            dead: db.open_tree(DEAD_LETTERS_TREE)?,
            append_lock: Mutex::new(()),
        })
    }

    /// Index key of a node's report.
    pub(crate) fn report_key(node: &[u8; 32], seq: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(41);
        k.push(b'r');
        k.extend_from_slice(node);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// Index key of a publication. Content ids never contain `0x00`, so the separator is
    /// unambiguous.
    pub(crate) fn publish_key(content_id: &str, version: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(content_id.len() + 10);
        k.push(b'c');
        k.extend_from_slice(content_id.as_bytes());
        k.push(0);
        k.extend_from_slice(&version.to_be_bytes());
        k
    }

    /// The event seq and digest recorded under an index key.
    pub(crate) fn lookup(&self, key: &[u8]) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        match self.index.get(key)? {
            None => Ok(None),
            Some(v) if v.len() == 40 => {
                let seq = u64_of(&v[..8], "inbox index")?;
                let mut digest = [0; 32];
                digest.copy_from_slice(&v[8..]);
                Ok(Some((seq, digest)))
            }
            Some(v) => Err(StoreError::Corrupt(format!(
                "inbox index record of {} bytes",
                v.len()
            ))),
        }
    }

    /// Stores `event` under index `key` unless the key is taken, then flushes: when this returns
    /// [`Appended::New`], the event survives a crash.
    pub(crate) fn append(&self, key: &[u8], event: &StoredEvent) -> Result<Appended, StoreError> {
        let bytes = event.encode();
        let digest = *blake3::hash(&bytes).as_bytes();
        let _guard = self
            .append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((seq, stored)) = self.lookup(key)? {
            return Ok(if stored == digest {
                Appended::Existing(seq)
            } else {
                Appended::Conflict(seq)
            });
        }
        let seq = self.last_seq()? + 1;
        let mut record = seq.to_be_bytes().to_vec();
        record.extend_from_slice(&digest);
        let committed: Result<(), TransactionError<()>> =
            (&self.events, &self.index).transaction(|(events, index)| {
                events.insert(&seq.to_be_bytes()[..], &bytes[..])?;
                index.insert(key, &record[..])?;
                Ok(())
            });
        match committed {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(e.into()),
            Err(TransactionError::Abort(())) => {
                return Err(StoreError::Corrupt("inbox transaction aborted".into()))
            }
        }
        self.db.flush()?;
        Ok(Appended::New(seq))
    }

    /// Seq of the last event stored (0 when empty).
    pub(crate) fn last_seq(&self) -> Result<u64, StoreError> {
        match self.events.last()? {
            Some((k, _)) => u64_of(&k, "inbox key"),
            None => Ok(0),
        }
    }

    /// Up to `limit` events after `cursor`, in order.
    pub(crate) fn page_after(
        &self,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<PageItem>, StoreError> {
        let Some(start) = cursor.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self.events.range(start.to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            let seq = u64_of(&k, "inbox key")?;
            // A record that does not decode is handed to the caller as such, so that one damaged
            // event is dead-lettered instead of stopping delivery of all later ones.
            let event = StoredEvent::decode(&v, seq).map_err(|e| match e {
                StoreError::Corrupt(p) => p,
                StoreError::Storage(e) => e.to_string(),
            });
            out.push((seq, event));
        }
        Ok(out)
    }

    /// The event at `seq`, if stored.
    pub(crate) fn event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        self.events
            .get(seq.to_be_bytes())?
            .map(|v| StoredEvent::decode(&v, seq))
            .transpose()
    }

    /// The plugin's delivery cursor (0: nothing delivered yet).
    pub(crate) fn cursor(&self, plugin: &str) -> Result<u64, StoreError> {
        match self.cursors.get(plugin.as_bytes())? {
            Some(v) => u64_of(&v, "plugin cursor"),
            None => Ok(0),
        }
    }

    /// Records the plugin's cursor (not flushed: see the module docs).
    pub(crate) fn set_cursor(&self, plugin: &str, seq: u64) -> Result<(), StoreError> {
        self.cursors
            .insert(plugin.as_bytes(), &seq.to_be_bytes()[..])?;
        Ok(())
    }

    /// Stores or replaces a dead letter (flushed: it is the only record that the plugin never
    /// applied the event).
    pub(crate) fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(letter).expect("postcard encoding");
        self.dead
            .insert(dead_key(&letter.plugin, letter.event_seq), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// The dead letter of `plugin` for event `seq`, if any.
    #[cfg(test)]
    pub(crate) fn dead_letter(
        &self,
        plugin: &str,
        seq: u64,
    ) -> Result<Option<DeadLetter>, StoreError> {
        self.dead
            .get(dead_key(plugin, seq))?
            .map(|v| {
                postcard::from_bytes(&v)
                    .map_err(|e| StoreError::Corrupt(format!("dead letter {plugin}/{seq}: {e}")))
            })
            .transpose()
    }

    /// The plugin's dead letters, oldest event first.
    pub(crate) fn dead_letters(&self, plugin: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead
            .scan_prefix(dead_prefix(plugin))
            .map(|item| {
                let (k, v) = item?;
                postcard::from_bytes(&v).map_err(|e| {
                    StoreError::Corrupt(format!("dead letter {}: {e}", hex::encode(&k)))
                })
            })
            .collect()
    }

    /// How many dead letters the plugin has.
    pub(crate) fn dead_letter_count(&self, plugin: &str) -> usize {
        self.dead.scan_prefix(dead_prefix(plugin)).count()
    }

    /// Removes a dead letter once the event was applied.
    pub(crate) fn remove_dead_letter(&self, plugin: &str, seq: u64) -> Result<(), StoreError> {
        self.dead.remove(dead_key(plugin, seq))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(id: &str, version: u64) -> StoredEvent {
        StoredEvent::ContentPublished(ContentPublished {
            content_id: id.into(),
            version,
            artist_id: "a".into(),
            title: "t".into(),
        })
    }

    #[test]
    fn appends_are_deduplicated_and_ordered() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let inbox = Inbox::open(&db).unwrap();
        assert_eq!(inbox.last_seq().unwrap(), 0);
        let k1 = Inbox::publish_key("song", 1);
        assert_eq!(
            inbox.append(&k1, &published("song", 1)).unwrap(),
            Appended::New(1)
        );
        assert_eq!(
            inbox.append(&k1, &published("song", 1)).unwrap(),
            Appended::Existing(1)
        );
        assert_eq!(
            inbox.append(&k1, &published("other", 1)).unwrap(),
            Appended::Conflict(1)
        );
        let k2 = Inbox::report_key(&[7; 32], 3);
        let report = StoredEvent::PlayReport(vec![1, 2, 3]);
        assert_eq!(inbox.append(&k2, &report).unwrap(), Appended::New(2));
        let page = inbox.page_after(0, 10).unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[1], (2, Ok(report.clone())));
        assert_eq!(inbox.page_after(1, 10).unwrap().len(), 1);
        assert!(inbox.page_after(2, 10).unwrap().is_empty());
        assert!(inbox.page_after(u64::MAX, 10).unwrap().is_empty());
        assert_eq!(inbox.event(2).unwrap(), Some(report));
        assert_eq!(inbox.event(3).unwrap(), None);
        assert_eq!(inbox.lookup(&k2).unwrap().unwrap().0, 2);
    }

    #[test]
    fn cursors_and_dead_letters_are_per_plugin() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let inbox = Inbox::open(&db).unwrap();
        assert_eq!(inbox.cursor("a").unwrap(), 0);
        inbox.set_cursor("a", 5).unwrap();
        assert_eq!(inbox.cursor("a").unwrap(), 5);
        assert_eq!(inbox.cursor("ab").unwrap(), 0);
        let letter = |plugin: &str, seq| DeadLetter {
            plugin: plugin.into(),
            event_seq: seq,
            event: "play_report".into(),
            error: "boom".into(),
            panicked: true,
            attempts: 1,
        };
        // "a" must not see "ab"'s letters although "a" is a prefix of "ab".
        inbox.put_dead_letter(&letter("a", 2)).unwrap();
        inbox.put_dead_letter(&letter("a", 1)).unwrap();
        inbox.put_dead_letter(&letter("ab", 1)).unwrap();
        let seqs: Vec<u64> = inbox
            .dead_letters("a")
            .unwrap()
            .iter()
            .map(|l| l.event_seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(inbox.dead_letter_count("ab"), 1);
        assert_eq!(inbox.dead_letter("a", 2).unwrap(), Some(letter("a", 2)));
        inbox.remove_dead_letter("a", 1).unwrap();
        assert_eq!(inbox.dead_letter_count("a"), 1);
    }

    #[test]
    fn a_damaged_event_is_reported_not_fatal() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let inbox = Inbox::open(&db).unwrap();
        inbox
            .append(&Inbox::publish_key("a", 1), &published("a", 1))
            .unwrap();
        db.open_tree(INBOX_TREE)
            .unwrap()
            .insert(2u64.to_be_bytes(), &[9u8, 9][..])
            .unwrap();
        inbox
            .events
            .insert(3u64.to_be_bytes(), published("b", 1).encode())
            .unwrap();
        let page = inbox.page_after(0, 10).unwrap();
        assert!(page[0].1.is_ok());
        assert!(page[1].1.as_ref().unwrap_err().contains("version 9"));
        assert!(page[2].1.is_ok());
        assert!(inbox.event(2).is_err());
    }
}
