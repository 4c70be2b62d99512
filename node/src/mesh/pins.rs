//! Content pinned by the operator (`mhc-node pin ID`): a mesh node replicates the latest
//! version of every pinned id and never drops it for space.

use anyhow::Context;
use mhc_manifest::ContentId;

/// sled tree of pins: key the content id, value empty.
const PINS_TREE: &str = "mesh_pins";

/// The operator's pins, persisted.
#[derive(Debug, Clone)]
pub struct Pins {
    tree: sled::Tree,
}

impl Pins {
    /// Opens the pins of `db`.
    ///
    /// # Errors
    /// The tree cannot be opened.
    pub fn open(db: &sled::Db) -> anyhow::Result<Self> {
        Ok(Self {
            tree: db.open_tree(PINS_TREE).context("opening the pins tree")?,
        })
    }

    /// Pins `id`; returns whether it was newly pinned. Durable when it returns.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn pin(&self, id: &ContentId) -> anyhow::Result<bool> {
        let fresh = self.tree.insert(id.as_str(), &[])?.is_none();
        crate::core::flush(&self.tree)?;
        Ok(fresh)
    }

    /// Unpins `id`; returns whether it was pinned. Durable when it returns.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn unpin(&self, id: &ContentId) -> anyhow::Result<bool> {
        let was = self.tree.remove(id.as_str())?.is_some();
        crate::core::flush(&self.tree)?;
        Ok(was)
    }

    /// Whether `id` is pinned.
    #[cfg(test)]
    pub fn is_pinned(&self, id: &str) -> bool {
        self.tree.contains_key(id).unwrap_or(false)
    }

    /// Every pinned id, sorted.
    pub fn list(&self) -> Vec<String> {
        self.tree
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| String::from_utf8(k.to_vec()).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id: ContentId = "song".parse().unwrap();
        {
            let db = crate::core::test_db(dir.path());
            let pins = Pins::open(&db).unwrap();
            assert!(pins.pin(&id).unwrap());
            assert!(!pins.pin(&id).unwrap());
        }
        let db = crate::core::test_db(dir.path());
        let pins = Pins::open(&db).unwrap();
        assert!(pins.is_pinned("song"));
        assert_eq!(pins.list(), vec!["song".to_owned()]);
        assert!(pins.unpin(&id).unwrap());
        assert!(!pins.is_pinned("song"));
    }
}
