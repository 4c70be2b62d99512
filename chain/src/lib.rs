//! EVM chains for the origin, over JSON-RPC on HTTP: the ledger's signed tree heads anchored on
//! a public chain ([`anchor`]), and crypto payouts executed as transfers ([`payout`]).
//!
//! Chains are configuration (`rpc_url`, `chain_id`): nothing here is specific to Ethereum,
//! Polygon, Besu or anvil. Transactions are signed locally by [`evm::Account`] and recorded
//! before they are sent, so a crash never turns one intended transaction into two.

pub mod evm;

pub use evm::{Account, ChainError, Rpc};
pub mod anchor;
pub mod payout;
pub mod verify;

pub use anchor::{AnchorStats, Anchoring};
pub use payout::{CryptoPayout, CryptoPayouts, PayoutBooks, PayoutError};
pub use verify::{verify_export_anchors, verify_records, AnchorCheck};
