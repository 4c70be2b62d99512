//! The royalty module's error type, and the checks of caller-given identifiers and text that
//! produce its [`RoyaltyError::InvalidInput`].
//!
//! Errors say who caused them: everything but [`RoyaltyError::Storage`] and
//! [`RoyaltyError::Corrupt`] is the caller's input and will fail the same way if retried; a
//! storage error may succeed on retry, and since every input is one transaction a failed call
//! has changed nothing.

use super::calendar::Month;
use super::config::ConfigError;
use super::csv::CsvError;
use super::money::MoneyError;

/// Why a royalty operation was refused or failed. No variant leaves a partial change behind.
#[derive(Debug, thiserror::Error)]
pub enum RoyaltyError {
    /// The configuration handed to [`Royalty::open`](super::Royalty::open) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A field of the caller's input is malformed; `field` names it (e.g. `entries[2].country`).
    #[error("invalid {field}: {problem}")]
    InvalidInput {
        /// Path of the offending field in the input.
        field: String,
        /// What is wrong, in words.
        problem: String,
    },
    /// An amount overflowed or currencies were mixed.
    #[error("money: {0}")]
    Money(#[from] MoneyError),
    /// A DSP statement file does not parse; the error names line and column.
    #[error("dsp statement: {0}")]
    Csv(#[from] CsvError),
    /// The artist has no account (for updates and lookups that need one).
    #[error("no account for artist {0:?}")]
    UnknownArtist(String),
    /// [`Royalty::create_account`](super::Royalty::create_account) for an artist that already
    /// has a different account.
    #[error("artist {0:?} already has a different account; update it instead")]
    AccountExists(String),
    /// A split sheet's shares do not add up to exactly 10000 basis points.
    #[error("split sheet for {content_id:?}: shares sum to {sum} basis points, not 10000")]
    SplitSum {
        /// The content the sheet is for.
        content_id: String,
        /// What the shares add up to.
        sum: u64,
    },
    /// An adjustment targets a content id that has no split sheet.
    #[error("no split sheet for content {0:?}")]
    NoSplitSheet(String),
    /// The reference was already used for an input with different data. Identical resubmissions
    /// are not errors: they return the original result.
    #[error("{kind} reference {reference:?} was already used with different data")]
    ReferenceReused {
        /// The input kind (`usage`, `tip`, `subscription`, `adjustment`).
        kind: &'static str,
        /// The reused reference.
        reference: String,
    },
    /// A subscription to allocate by seconds watched, in a month with no recorded usage.
    #[error("subscription {reference:?}: no seconds watched in {period} to allocate by")]
    NoUsageInPeriod {
        /// The subscription's reference.
        reference: String,
        /// The month with no usage.
        period: Month,
    },
    /// The sled database failed; retrying may help. Nothing of the call was applied.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record does not decode: the database was written by something else, or damaged.
    #[error("corrupt royalty record in {tree}: {problem}")]
    Corrupt {
        /// The sled tree holding the record.
        tree: &'static str,
        /// What failed to decode.
        problem: String,
    },
}

impl RoyaltyError {
    /// Whether retrying the same call may succeed (only storage failures).
    pub fn is_retryable(&self) -> bool {
        matches!(self, RoyaltyError::Storage(_))
    }
}

/// Shorthand for [`RoyaltyError::InvalidInput`].
pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> RoyaltyError {
    RoyaltyError::InvalidInput {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Longest artist id, in bytes: the manifest's own limit for `artist_id`.
pub const MAX_ARTIST_ID_BYTES: usize = 128;

/// Longest input reference, in bytes. Play-report ids (`node/batch_seq`) fit many times over.
pub const MAX_REFERENCE_BYTES: usize = 200;

/// Longest content id accepted for split sheets and statements, in bytes. Covers the manifest's
/// 64-byte content slugs and ISRCs (12 characters, 15 with hyphens).
pub const MAX_CONTENT_ID_BYTES: usize = 64;

/// Longest free-text field (names, memos, tip senders), in bytes.
pub const MAX_TEXT_BYTES: usize = 200;

/// Checks an artist id or reference: `1..=max` bytes, no control characters (they would break
/// storage keys, which use NUL as a separator, and CSV rows), no surrounding whitespace.
pub(crate) fn check_id(field: &str, value: &str, max: usize) -> Result<(), RoyaltyError> {
    if value.is_empty() || value.len() > max {
        return Err(invalid(
            field,
            format!("must be 1..={max} bytes, is {}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains a control character"));
    }
    if value.trim() != value {
        return Err(invalid(field, "has leading or trailing whitespace"));
    }
    Ok(())
}

/// Checks a content id (or ISRC) keyed by split sheets: `1..=64` of `[A-Za-z0-9_-]`.
pub(crate) fn check_content_id(field: &str, value: &str) -> Result<(), RoyaltyError> {
    if value.is_empty() || value.len() > MAX_CONTENT_ID_BYTES {
        return Err(invalid(
            field,
            format!(
                "must be 1..={MAX_CONTENT_ID_BYTES} bytes, is {}",
                value.len()
            ),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            field,
            format!("{value:?} may only contain letters, digits, '_' and '-'"),
        ));
    }
    Ok(())
}

/// Checks free text: at most [`MAX_TEXT_BYTES`] bytes (empty allowed only if `allow_empty`), no
/// control characters.
pub(crate) fn check_text(field: &str, value: &str, allow_empty: bool) -> Result<(), RoyaltyError> {
    if value.is_empty() && !allow_empty {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(invalid(
            field,
            format!("longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: RoyaltyError) -> String {
        match err {
            RoyaltyError::InvalidInput { field, .. } => field,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn ids_are_checked() {
        check_id("artist_id", "Ärtist 1", MAX_ARTIST_ID_BYTES).unwrap();
        assert_eq!(
            field(check_id("artist_id", "", 8).unwrap_err()),
            "artist_id"
        );
        assert!(check_id("a", "123456789", 8).is_err());
        assert!(check_id("a", "a\0b", 8).is_err());
        assert!(check_id("a", "a\nb", 8).is_err());
        assert!(check_id("a", " ab", 8).is_err());
    }

    #[test]
    fn content_ids_and_text() {
        check_content_id("c", "my-song_1").unwrap();
        check_content_id("c", "USRC17607839").unwrap();
        assert!(check_content_id("c", "a/b").is_err());
        assert!(check_content_id("c", "").is_err());
        assert!(check_content_id("c", &"a".repeat(65)).is_err());
        check_text("memo", "", true).unwrap();
        assert!(check_text("memo", "", false).is_err());
        assert!(check_text("memo", "tab\there", true).is_err());
        assert!(check_text("memo", &"x".repeat(201), true).is_err());
    }

    #[test]
    fn only_storage_errors_are_retryable() {
        assert!(!invalid("x", "y").is_retryable());
        let err = RoyaltyError::Storage(sled::Error::Unsupported("x".into()));
        assert!(err.is_retryable());
        assert!(err.to_string().starts_with("storage:"));
    }
}
