//! Postings: the double-checkable trail every input leaves, one entry per change to a balance.
//!
//! Each credit, withholding, payout and adjustment is a [`Posting`], returned by the call that
//! created it and kept in order (by `seq`) so the node can append it to the Merkle ledger and,
//! after a crash between "applied here" and "appended there", replay from its last cursor with
//! [`Royalty::postings_since`](super::Royalty::postings_since).
//!
//! **Sign convention**: `amount_minor` is the posting's effect on the account's *pending*
//! balance. Credits are positive (negative for a DSP reversal), withholdings and payouts
//! negative, adjustments either. So for every account and currency, the sum of its postings is
//! exactly its pending balance.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::money::Currency;

/// What a posting records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    /// Earnings from plays, tips, subscriptions or a DSP statement (adds to `earned`).
    Credit,
    /// Tax withheld from a credit or adjustment (adds `-amount` to `withheld`).
    Withholding,
    /// Money sent to the artist in a payout batch (adds `-amount` to `paid`).
    Payout,
    /// A manual correction of earnings by the operator (adds to `earned`).
    Adjustment,
}

impl PostingKind {
    /// Lowercase name used in CSV files: `credit`, `withholding`, `payout`, `adjustment`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PostingKind::Credit => "credit",
            PostingKind::Withholding => "withholding",
            PostingKind::Payout => "payout",
            PostingKind::Adjustment => "adjustment",
        }
    }
}

impl fmt::Display for PostingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to one artist's balance in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// Position in the royalty journal: 1, 2, 3… without gaps, in booking order. The cursor of
    /// [`Royalty::postings_since`](super::Royalty::postings_since).
    pub seq: u64,
    /// The input that caused it: the caller's reference, the DSP import key
    /// (`dsp/period/hash`), or the payout batch id.
    pub reference: String,
    /// When it was booked (ms since the epoch, UTC); never earlier than the posting before it.
    pub time_ms: u64,
    /// What it records.
    pub kind: PostingKind,
    /// The artist id whose balance changes.
    pub account: String,
    /// Effect on the pending balance, in minor units (see the module's sign convention).
    pub amount_minor: i64,
    /// The balance's currency.
    pub currency: Currency,
    /// Revenue source: `plays`, `tips`, `subscriptions`, `dsp:<name>`, `adjustments`; for
    /// payouts `payout:<method>`. A withholding carries the source of the credit it came from.
    pub source: String,
    /// Human explanation (period, rate, batch…).
    pub memo: String,
}

/// What applying one input produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The input's reference (as stored in its postings).
    pub reference: String,
    /// The postings the input created, in `seq` order; possibly none (e.g. usage worth less than
    /// one minor unit, which is carried forward).
    pub postings: Vec<Posting>,
    /// `true` when this call was a repeat of an input already applied: nothing changed, and
    /// `postings` are the ones the first call created.
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_names() {
        let names: Vec<&str> = [
            PostingKind::Credit,
            PostingKind::Withholding,
            PostingKind::Payout,
            PostingKind::Adjustment,
        ]
        .iter()
        .map(PostingKind::as_str)
        .collect();
        assert_eq!(names, ["credit", "withholding", "payout", "adjustment"]);
        assert_eq!(
            serde_json::to_string(&PostingKind::Withholding).unwrap(),
            "\"withholding\""
        );
    }

    #[test]
    fn postings_round_trip_through_postcard_and_json() {
        let p = Posting {
            seq: 7,
            reference: "node-1/42".into(),
            time_ms: 1_700_000_000_000,
            kind: PostingKind::Credit,
            account: "ar-1".into(),
            amount_minor: -12,
            currency: Currency::USD,
            source: "dsp:spotify".into(),
            memo: "reversal".into(),
        };
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<Posting>(&bytes).unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"currency\":\"USD\""), "{json}");
        assert_eq!(serde_json::from_str::<Posting>(&json).unwrap(), p);
    }
}
