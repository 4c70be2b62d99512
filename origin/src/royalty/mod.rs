//! Royalty accounting: what each artist has earned, what was withheld for tax, what was paid, and
//! what is pending — in integer minor units, never floats, with every unit accounted for.
//!
//! Entry point: [`Royalty::open`] on the node's sled db with the `[plugins.royalty]`
//! [`RoyaltyConfig`]. Then:
//! - **inputs**, each idempotent by a caller-given reference and applied in one sled transaction,
//!   flushed before the call returns: [`Royalty::record_usage`] (play reports),
//!   [`Royalty::record_tip`], [`Royalty::record_subscription`], [`Royalty::record_adjustment`],
//!   [`Royalty::import_dsp_statement`] (CSV, format documented on [`DspStatement`]);
//! - **accounts and splits**: [`Royalty::create_account`], [`Royalty::update_account`],
//!   [`Royalty::set_split_sheet`] (shares divided by largest remainder, see
//!   [`largest_remainder`]);
//! - **outputs**: [`Royalty::balances`], [`Royalty::statement`] (JSON/CSV),
//!   [`Royalty::revenue_breakdown`], [`Royalty::create_payout_batch`] (Stripe/bank CSV, crypto
//!   JSON);
//! - **the ledger feed**: every call that books money returns its [`Posting`]s; the node appends
//!   them to the Merkle ledger and, after a crash, replays with [`Royalty::postings_since`].
//!
//! Exactness: rates are micro-units per second and per play, play earnings are accumulated in
//! nano-units and only whole minor units are booked, with the remainder carried per (artist,
//! currency) to the next usage — as is the sub-unit remainder of withholding. Splits and
//! subscription allocations use largest remainder, so parts always sum to the whole. Every sum is
//! checked; overflow and currency mixing are errors.
//!
//! Time: postings are dated at booking time (the clock when the input is applied, never going
//! backwards); statements and the revenue breakdown are by booking month, UTC.

mod account;
mod booking;
mod calendar;
mod config;
mod csv;
mod dsp;
mod engine;
mod error;
mod inputs;
mod money;
mod payout;
mod posting;
mod split;
mod statement;
mod store;
#[cfg(test)]
mod testutil;
mod wallet;

pub use crate::utc::{format_utc, MAX_TIME_MS};
pub use account::{ArtistAccount, PayoutMethod, PayoutMethodKind};
pub use calendar::{Month, MonthError};
pub(crate) use config::is_http_url;
pub use config::{
    ConfigError, CryptoPayoutConfig, RateConfig, RoyaltyConfig, WithholdingConfig, ANY_COUNTRY,
    BPS_WHOLE, EU_MEMBERS, MAX_RATE_MICRO,
};
pub use csv::{CsvError, MAX_LINE_BYTES};
pub use dsp::{DspImport, DspLine, DspStatement, UsageRevenue, DSP_COLUMNS, MAX_DSP_ROWS};
pub use engine::{Balance, BalanceAudit, Clock, Royalty, MAX_POSTINGS_PAGE};
pub use error::{
    RoyaltyError, MAX_ARTIST_ID_BYTES, MAX_CONTENT_ID_BYTES, MAX_REFERENCE_BYTES, MAX_TEXT_BYTES,
};
pub use inputs::{
    Adjustment, AdjustmentTarget, Subscription, SubscriptionAllocation, Tip, UsageEntry,
    MAX_USAGE_ENTRIES, SOURCE_ADJUSTMENTS, SOURCE_PLAYS, SOURCE_SUBSCRIPTIONS, SOURCE_TIPS,
};
pub use money::{Currency, Money, MoneyError};
pub use payout::{PayoutBatch, PayoutExport, PayoutItem};
pub use posting::{Posting, PostingKind, Receipt};
pub use split::{largest_remainder, SplitShare, SplitSheet, MAX_SPLIT_PARTIES};
pub use statement::{
    CurrencyStatement, RevenueBreakdown, RevenueQuery, RevenueRow, Statement, StatementLine,
    STATEMENT_CSV_HEADER,
};
pub use wallet::{check_evm_address, EVM_NETWORKS};
