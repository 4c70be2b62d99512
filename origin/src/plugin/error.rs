//! [`PluginError`]: why a plugin, or the host on a plugin's behalf, failed.
//!
//! Errors say who caused them, and the two questions the host and the admin API ask of every
//! error have one answer each: [`PluginError::is_retryable`] (hold the delivery cursor and try
//! again later, or dead-letter the event) and [`PluginError::http_status`] (what the admin route
//! answers).

use crate::ledger::LedgerError;
use crate::report::ReportError;
use crate::royalty::RoyaltyError;

/// Why a plugin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `[plugins.*]` configuration is unusable (caller's fault, at startup).
    #[error("plugins.{plugin}: {problem}")]
    Config {
        /// The plugin's table, e.g. `ledger`.
        plugin: String,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// The royalty module refused or failed.
    #[error("royalty: {0}")]
    Royalty(#[from] RoyaltyError),
    /// The ledger refused or failed.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A play report failed a check (only from host operations on reports).
    #[error("play report: {0}")]
    Report(#[from] ReportError),
    /// The plugin's own sled trees failed; retrying may help.
    #[error("plugin storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record of a plugin or of the inbox does not decode.
    #[error("corrupt plugin record: {0}")]
    Corrupt(String),
    /// An admin request is malformed (bad JSON, bad query parameter...): the client's fault.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An admin request names something that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An input conflicts with what is already stored (a content version republished with other
    /// data...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// No plugin by that name is enabled.
    #[error("no plugin named {0:?} is enabled")]
    UnknownPlugin(String),
    /// The plugin panicked; the host caught it.
    #[error("plugin {plugin} panicked: {message}")]
    Panicked {
        /// The plugin.
        plugin: String,
        /// The panic message, if it was a string.
        message: String,
    },
    /// Any other failure of a third-party plugin.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// Whether delivering the same event again later may succeed.
        retryable: bool,
    },
}

impl PluginError {
    /// Whether the same call may succeed later: storage failures (sled, the royalty store, the
    /// ledger's store). The host keeps a plugin's cursor on a retryable error and dead-letters the
    /// event on any other.
    pub fn is_retryable(&self) -> bool {
        match self {
            PluginError::Storage(_) => true,
            PluginError::Royalty(e) => e.is_retryable(),
            PluginError::Ledger(e) => matches!(e, LedgerError::Db(_) | LedgerError::Io(_)),
            PluginError::Report(e) => e.is_retryable(),
            PluginError::Other { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The HTTP status an admin route answers with: 400 for malformed input, 404 for something
    /// missing, 409 for a conflict with stored state, 503 for a retryable storage failure, 500
    /// for everything that is the server's fault.
    pub fn http_status(&self) -> u16 {
        match self {
            PluginError::BadRequest(_) | PluginError::Report(_) => 400,
            PluginError::NotFound(_) | PluginError::UnknownPlugin(_) => 404,
            PluginError::Conflict(_) => 409,
            PluginError::Royalty(e) => match e {
                RoyaltyError::InvalidInput { .. }
                | RoyaltyError::Money(_)
                | RoyaltyError::Csv(_)
                | RoyaltyError::SplitSum { .. }
                | RoyaltyError::NoSplitSheet(_)
                | RoyaltyError::NoUsageInPeriod { .. } => 400,
                RoyaltyError::UnknownArtist(_) => 404,
                RoyaltyError::AccountExists(_) | RoyaltyError::ReferenceReused { .. } => 409,
                RoyaltyError::Storage(_) => 503,
                RoyaltyError::Config(_) | RoyaltyError::Corrupt { .. } => 500,
            },
            PluginError::Ledger(e) => match e {
                LedgerError::EmptyBatch
                | LedgerError::InvalidEntry { .. }
                | LedgerError::TimeWentBackwards { .. }
                | LedgerError::Proof(_) => 400,
                LedgerError::IndexOutOfRange { .. } => 404,
                LedgerError::Db(_) | LedgerError::Io(_) => 503,
                _ => 500,
            },
            PluginError::Storage(_) => 503,
            PluginError::Other { retryable, .. } => {
                if *retryable {
                    503
                } else {
                    500
                }
            }
            PluginError::Config { .. } | PluginError::Corrupt(_) | PluginError::Panicked { .. } => {
                500
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_status_agree_on_storage() {
        let storage = || sled::Error::Unsupported("disk gone".into());
        for e in [
            PluginError::Storage(storage()),
            PluginError::Royalty(RoyaltyError::Storage(storage())),
            PluginError::Ledger(LedgerError::Db(storage())),
        ] {
            assert!(e.is_retryable(), "{e}");
            assert_eq!(e.http_status(), 503, "{e}");
        }
    }

    #[test]
    fn client_errors_are_not_retryable() {
        let cases = [
            (PluginError::BadRequest("x".into()), 400),
            (PluginError::NotFound("x".into()), 404),
            (PluginError::UnknownPlugin("x".into()), 404),
            (PluginError::Conflict("x".into()), 409),
            (
                PluginError::Royalty(RoyaltyError::UnknownArtist("a".into())),
                404,
            ),
            (
                PluginError::Royalty(RoyaltyError::ReferenceReused {
                    kind: "tip",
                    reference: "r".into(),
                }),
                409,
            ),
            (
                PluginError::Ledger(LedgerError::IndexOutOfRange { index: 3, len: 1 }),
                404,
            ),
            (PluginError::Ledger(LedgerError::EmptyBatch), 400),
            (PluginError::Report(ReportError::Truncated), 400),
            (
                PluginError::Panicked {
                    plugin: "p".into(),
                    message: "boom".into(),
                },
                500,
            ),
        ];
        for (e, status) in cases {
            assert!(!e.is_retryable(), "{e}");
            assert_eq!(e.http_status(), status, "{e}");
        }
        let other = PluginError::Other {
            message: "busy".into(),
            retryable: true,
        };
        assert!(other.is_retryable());
        assert_eq!(other.http_status(), 503);
        assert_eq!(other.to_string(), "busy");
    }
}
