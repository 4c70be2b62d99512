//! Test helpers: a royalty instance on a temporary or on-disk sled db with a settable clock, and
//! builders for common inputs. (Randomized tests seed a `fastrand::Rng`.)

use std::path::PathBuf;

use mhc_clock::ManualClock;

use super::{
    ArtistAccount, Currency, Money, PayoutMethod, Royalty, RoyaltyConfig, SplitShare, SplitSheet,
    Tip, UsageEntry,
};

/// A royalty instance with a clock the test sets.
#[derive(Debug)]
pub(crate) struct Harness {
    pub royalty: Royalty,
    pub db: sled::Db,
    pub clock: ManualClock,
    pub path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

/// 2025-03-10T00:00:00Z, the harness's starting time.
pub(crate) const T0: u64 = 1_741_564_800_000;

impl Harness {
    pub fn new() -> Self {
        Self::with_config(RoyaltyConfig::default())
    }

    pub fn with_config(config: RoyaltyConfig) -> Self {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Self::build(db, config, None, None, ManualClock::new(T0))
    }

    /// On a real directory, so the test can [`Harness::reopen`].
    pub fn on_disk(config: RoyaltyConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = sled::open(&path).unwrap();
        Self::build(db, config, Some(path), Some(dir), ManualClock::new(T0))
    }

    fn build(
        db: sled::Db,
        config: RoyaltyConfig,
        path: Option<PathBuf>,
        dir: Option<tempfile::TempDir>,
        clock: ManualClock,
    ) -> Self {
        let royalty = Royalty::open_with_clock(&db, config, clock.clock()).unwrap();
        Harness {
            royalty,
            db,
            clock,
            path,
            _dir: dir,
        }
    }

    /// Closes the database (as a process exit would) and opens it again.
    pub fn reopen(self, config: RoyaltyConfig) -> Self {
        let Harness {
            royalty,
            db,
            clock,
            path,
            _dir,
        } = self;
        drop(royalty);
        drop(db);
        let path = path.expect("reopen needs Harness::on_disk");
        let db = sled::open(&path).unwrap();
        Self::build(db, config, Some(path), _dir, clock)
    }

    pub fn set_time(&self, ms: u64) {
        self.clock.set_ms(ms);
    }
}

pub(crate) fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

pub(crate) fn entry(
    content: &str,
    artist: &str,
    country: &str,
    seconds_ms: u64,
    plays: u64,
) -> UsageEntry {
    UsageEntry {
        content_id: content.into(),
        artist_id: artist.into(),
        country: country.into(),
        seconds_ms,
        plays,
    }
}

pub(crate) fn sheet(content: &str, shares: &[(&str, u32)]) -> SplitSheet {
    SplitSheet {
        content_id: content.into(),
        shares: shares
            .iter()
            .map(|(a, bps)| SplitShare {
                artist_id: a.to_string(),
                share_bps: *bps,
            })
            .collect(),
    }
}

pub(crate) fn crypto_account(artist: &str, tax_country: &str) -> ArtistAccount {
    ArtistAccount {
        artist_id: artist.into(),
        name: format!("Artist {artist}"),
        tax_country: tax_country.into(),
        payout_method: PayoutMethod::Crypto {
            network: "ethereum".into(),
            // Lowercase: an address without an EIP-55 checksum to get wrong.
            address: format!("0x{}", &blake3::hash(artist.as_bytes()).to_hex()[..40]),
        },
    }
}

/// Records an anonymous tip of `amount` to `artist`.
pub(crate) fn tip(h: &Harness, reference: &str, artist: &str, amount: Money) {
    h.royalty
        .record_tip(&Tip {
            reference: reference.into(),
            artist_id: artist.into(),
            amount,
            from: String::new(),
        })
        .unwrap();
}
