//! Test helpers: an on-disk sled db that can be closed and reopened (a process restart), the
//! shipped plugins and hosts on it, and an invariant check of royalty against the ledger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;

use super::{
    AdminRequest, ContentPublished, LedgerPlugin, LedgerPluginConfig, Plugin, PluginHost,
    PluginsConfig, RoyaltyPlugin,
};
use crate::ledger::open_when_unlocked;
use crate::royalty::RoyaltyConfig;

/// A sled db in a temporary directory.
#[derive(Debug)]
pub(crate) struct Fixture {
    pub db: sled::Db,
    pub path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Fixture {
            db: sled::open(&path).unwrap(),
            path,
            _dir: Some(dir),
        }
    }

    /// The db at an existing path (a crash-test child's), not deleted afterwards.
    pub fn at(path: &Path) -> Self {
        Fixture {
            db: open_when_unlocked(path),
            path: path.to_path_buf(),
            _dir: None,
        }
    }

    /// Closes the db (every other handle must be dropped first) and opens it again.
    pub fn reopen(self) -> Self {
        let Fixture { db, path, _dir } = self;
        drop(db);
        Fixture {
            db: open_when_unlocked(&path),
            path,
            _dir,
        }
    }

    /// The origin's signing key.
    pub fn key(&self) -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    pub fn royalty_plugin(&self) -> RoyaltyPlugin {
        RoyaltyPlugin::open(&self.db, RoyaltyConfig::default()).unwrap()
    }

    pub fn ledger_plugin(
        &self,
        royalty: Option<Arc<crate::royalty::Royalty>>,
        config: LedgerPluginConfig,
    ) -> LedgerPlugin {
        LedgerPlugin::open(&self.db, self.key(), royalty, config).unwrap()
    }

    /// A host with royalty and ledger, default configs.
    pub fn host(&self) -> PluginHost {
        let config = PluginsConfig {
            royalty: Some(RoyaltyConfig::default()),
            ledger: Some(LedgerPluginConfig::default()),
        };
        PluginHost::new(&self.db, self.key(), &config).unwrap()
    }

    /// A host with royalty only.
    pub fn royalty_host(&self) -> PluginHost {
        let config = PluginsConfig {
            royalty: Some(RoyaltyConfig::default()),
            ledger: None,
        };
        PluginHost::new(&self.db, self.key(), &config).unwrap()
    }
}

pub(crate) fn published(content: &str, version: u64, artist: &str) -> ContentPublished {
    ContentPublished {
        content_id: content.into(),
        version,
        artist_id: artist.into(),
        title: format!("Title of {content}"),
    }
}

/// Sends `method target` with `body` to `plugin`; (404, null) when it has no such route.
pub(crate) fn admin_json(
    plugin: &dyn Plugin,
    method: &str,
    target: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let req = AdminRequest::from_target(method, target, body.to_vec()).unwrap();
    match plugin.admin(&req) {
        None => (404, serde_json::Value::Null),
        Some(Ok(resp)) => (resp.status, resp.json_body().unwrap_or_default()),
        Some(Err(e)) => {
            let resp = super::AdminResponse::from_error(&e);
            (resp.status, resp.json_body().unwrap())
        }
    }
}

/// Checks that the ledger records every royalty posting exactly once: as many entries as
/// postings (no external entries in these tests), the full verification passes, and per
/// (account, currency) the ledger amounts sum to the pending balance. Returns the entry count.
pub(crate) fn assert_ledger_matches_royalty(host: &PluginHost) -> u64 {
    let royalty = host.royalty().expect("royalty enabled").royalty();
    let ledger = host.ledger().expect("ledger enabled");
    let last = royalty.last_seq().unwrap();
    ledger.with_ledger(|l| {
        l.verify().unwrap_or_else(|e| panic!("ledger verify: {e}"));
        assert_eq!(l.len(), last, "ledger entries vs royalty postings");
        let mut sums: BTreeMap<(String, String), i64> = BTreeMap::new();
        for e in l.entries(0..l.len()).unwrap() {
            *sums.entry((e.account, e.currency)).or_default() += e.amount_minor;
        }
        let pending: BTreeMap<(String, String), i64> = royalty
            .balances()
            .unwrap()
            .into_iter()
            .filter(|b| {
                b.pending_minor != 0
                    || sums.contains_key(&(b.artist_id.clone(), b.currency.to_string()))
            })
            .map(|b| ((b.artist_id, b.currency.to_string()), b.pending_minor))
            .collect();
        assert_eq!(sums, pending, "ledger sums vs pending balances");
        l.len()
    })
}
