//! [`LedgerEntry`]: one money movement, its validation, and its canonical leaf bytes (the exact
//! bytes the Merkle tree commits to).

use serde::{Deserialize, Serialize};

use super::merkle::{leaf_hash, Hash};

/// Version byte in front of every leaf's postcard encoding. Postcard has no field names, so any
/// change to [`LedgerEntry`]'s fields or their order is a new format and must bump this; old
/// leaves stay readable because the byte says how to decode them.
pub const ENTRY_FORMAT_VERSION: u8 = 1;

/// Longest artist id, in bytes.
pub const MAX_ACCOUNT_LEN: usize = 128;
/// Longest source tag, in bytes (`"dsp:spotify"`-style tags are a few dozen at most).
pub const MAX_SOURCE_LEN: usize = 64;
/// Longest reference, in bytes (room for a UUID or a payment processor's batch id).
pub const MAX_REFERENCE_LEN: usize = 128;
/// Longest memo, in bytes: a line of explanation for an accountant, not a document.
pub const MAX_MEMO_LEN: usize = 1024;

/// What kind of money movement an entry records. The sign of the amount follows from the kind
/// (see [`LedgerEntry::amount_minor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money earned by the artist (plays, tips, subscriptions, DSP statements): amount > 0.
    Credit,
    /// Money paid out to the artist: amount < 0 (it reduces what is owed).
    Payout,
    /// A correction in either direction (refund, chargeback, fix of an earlier entry): amount ≠ 0.
    Adjustment,
}

impl EntryKind {
    /// The lowercase name used in exports (`credit`, `payout`, `adjustment`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::Payout => "payout",
            EntryKind::Adjustment => "adjustment",
        }
    }
}

/// Why an entry is refused, or why stored leaf bytes do not decode to a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A required text field is empty.
    #[error("{field} is empty")]
    EmptyField {
        /// The field's name.
        field: &'static str,
    },
    /// A text field is longer than its limit.
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// The limit, in bytes.
        max: usize,
    },
    /// A text field contains a control character (they would break CSV rows and log lines).
    #[error("{field} contains a control character")]
    ControlCharacter {
        /// The field's name.
        field: &'static str,
    },
    /// The source tag has characters outside `a-z 0-9 : . _ -`.
    #[error("source {0:?} may only use a-z, 0-9, ':', '.', '_' and '-'")]
    BadSource(String),
    /// The currency is not an ISO 4217 code with a minor unit ([`is_currency_code`]).
    #[error("currency {0:?} is not an ISO 4217 currency code")]
    BadCurrency(String),
    /// The amount's sign does not fit the kind (credits are positive, payouts negative,
    /// adjustments non-zero).
    #[error("{} of {amount_minor} minor units: {}", kind.as_str(), sign_rule(*kind))]
    AmountSign {
        /// The entry's kind.
        kind: EntryKind,
        /// The refused amount.
        amount_minor: i64,
    },
    /// The leaf bytes start with a format version this build does not know.
    #[error("unknown entry format version {0}")]
    UnknownVersion(u8),
    /// The leaf bytes do not decode as an entry.
    #[error("entry does not decode: {0}")]
    Decode(String),
    /// The leaf bytes decode, but are not the canonical encoding of what they decode to
    /// (trailing or padded bytes): two byte strings must never commit to the same entry.
    #[error("entry bytes are not canonical")]
    NotCanonical,
}

fn sign_rule(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Credit => "a credit must be positive",
        EntryKind::Payout => "a payout must be negative",
        EntryKind::Adjustment => "an adjustment must not be zero",
    }
}

/// An entry to append: everything but the index and time, which the ledger assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Credit, payout or adjustment.
    pub kind: EntryKind,
    /// The artist id the money belongs to.
    pub account: String,
    /// Signed amount in the currency's minor units (cents; yen): see [`LedgerEntry::amount_minor`].
    pub amount_minor: i64,
    /// ISO 4217 code, three uppercase letters (`EUR`, `JPY`).
    pub currency: String,
    /// Where the money came from or went: `plays`, `tip`, `subscription`, `dsp:spotify`, `bank`.
    pub source: String,
    /// Idempotency or batch reference (payment id, statement id); may be empty.
    pub reference: String,
    /// Free text for humans; may be empty.
    pub memo: String,
}

impl NewEntry {
    /// An entry with an empty reference and memo.
    pub fn new(
        kind: EntryKind,
        account: impl Into<String>,
        amount_minor: i64,
        currency: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            account: account.into(),
            amount_minor,
            currency: currency.into(),
            source: source.into(),
            reference: String::new(),
            memo: String::new(),
        }
    }

    /// Sets the reference.
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = reference.into();
        self
    }

    /// Sets the memo.
    pub fn with_memo(mut self, memo: impl Into<String>) -> Self {
        self.memo = memo.into();
        self
    }

    /// Checks every field against the rules of [`LedgerEntry::validate`].
    ///
    /// # Errors
    /// The first rule the entry breaks.
    pub fn validate(&self) -> Result<(), EntryError> {
        check_fields(Fields {
            kind: self.kind,
            account: &self.account,
            amount_minor: self.amount_minor,
            currency: &self.currency,
            source: &self.source,
            reference: &self.reference,
            memo: &self.memo,
        })
    }

    /// The entry as it will be stored at `index`, stamped with `time_ms`.
    pub fn into_entry(self, index: u64, time_ms: u64) -> LedgerEntry {
        LedgerEntry {
            index,
            time_ms,
            kind: self.kind,
            account: self.account,
            amount_minor: self.amount_minor,
            currency: self.currency,
            source: self.source,
            reference: self.reference,
            memo: self.memo,
        }
    }
}

/// One money movement as stored in the ledger. The field order is the leaf encoding's order (see
/// [`ENTRY_FORMAT_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the log, from 0; also the Merkle leaf index.
    pub index: u64,
    /// When the ledger recorded it, in Unix milliseconds. Never decreases along the log, so a
    /// time range is a contiguous index range.
    pub time_ms: u64,
    /// Credit, payout or adjustment.
    pub kind: EntryKind,
    /// The artist id the money belongs to.
    pub account: String,
    /// Signed amount in minor units, from the artist's point of view: credits are positive,
    /// payouts negative, so an account's balance is the sum of its amounts per currency. Integer
    /// minor units only: money is never a float.
    pub amount_minor: i64,
    /// ISO 4217 code, three uppercase letters.
    pub currency: String,
    /// Where the money came from or went (`plays`, `tip`, `subscription`, `dsp:spotify`).
    pub source: String,
    /// Idempotency or batch reference; may be empty.
    pub reference: String,
    /// Free text for humans; may be empty.
    pub memo: String,
}

impl LedgerEntry {
    /// Checks the field rules: `account` and `source` non-empty, every text field within its
    /// `MAX_*_LEN` and free of control characters, `source` in `a-z 0-9 : . _ -`, `currency` an
    /// ISO 4217 code, and the amount's sign matching the kind.
    ///
    /// # Errors
    /// The first rule the entry breaks.
    pub fn validate(&self) -> Result<(), EntryError> {
        check_fields(Fields {
            kind: self.kind,
            account: &self.account,
            amount_minor: self.amount_minor,
            currency: &self.currency,
            source: &self.source,
            reference: &self.reference,
            memo: &self.memo,
        })
    }

    /// The canonical leaf bytes: [`ENTRY_FORMAT_VERSION`] followed by the postcard encoding.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.memo.len() + self.account.len());
        out.push(ENTRY_FORMAT_VERSION);
        // Serializing plain strings and integers into a Vec cannot fail.
        postcard::to_extend(self, out).expect("postcard encoding of an entry")
    }

    /// The Merkle leaf hash of [`leaf_bytes`](Self::leaf_bytes).
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.leaf_bytes())
    }

    /// Decodes leaf bytes, insisting that they are the canonical encoding of a valid entry.
    ///
    /// # Errors
    /// [`EntryError::UnknownVersion`], [`EntryError::Decode`] or [`EntryError::NotCanonical`] for
    /// bytes that are not an entry, any validation error for an entry that breaks a rule.
    pub fn from_leaf_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| EntryError::Decode("no bytes".into()))?;
        if version != ENTRY_FORMAT_VERSION {
            return Err(EntryError::UnknownVersion(version));
        }
        let entry: LedgerEntry =
            postcard::from_bytes(body).map_err(|e| EntryError::Decode(e.to_string()))?;
        // Postcard ignores trailing bytes and accepts over-long varints; re-encoding catches both.
        if entry.leaf_bytes() != bytes {
            return Err(EntryError::NotCanonical);
        }
        entry.validate()?;
        Ok(entry)
    }

    /// The amount as a decimal string in major units (`-12.34` EUR, `500` JPY).
    pub fn amount_decimal(&self) -> String {
        format_minor(self.amount_minor, &self.currency)
    }
}

/// The fields both [`NewEntry`] and [`LedgerEntry`] are checked on.
struct Fields<'a> {
    kind: EntryKind,
    account: &'a str,
    amount_minor: i64,
    currency: &'a str,
    source: &'a str,
    reference: &'a str,
    memo: &'a str,
}

fn check_fields(f: Fields<'_>) -> Result<(), EntryError> {
    check_text("account", f.account, MAX_ACCOUNT_LEN, true)?;
    check_text("source", f.source, MAX_SOURCE_LEN, true)?;
    check_text("reference", f.reference, MAX_REFERENCE_LEN, false)?;
    check_text("memo", f.memo, MAX_MEMO_LEN, false)?;
    let source_ok = f
        .source
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b':' | b'.' | b'_' | b'-'));
    if !source_ok {
        return Err(EntryError::BadSource(f.source.to_owned()));
    }
    if !is_currency_code(f.currency) {
        return Err(EntryError::BadCurrency(f.currency.to_owned()));
    }
    let sign_ok = match f.kind {
        EntryKind::Credit => f.amount_minor > 0,
        EntryKind::Payout => f.amount_minor < 0,
        EntryKind::Adjustment => f.amount_minor != 0,
    };
    if !sign_ok {
        return Err(EntryError::AmountSign {
            kind: f.kind,
            amount_minor: f.amount_minor,
        });
    }
    Ok(())
}

fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), EntryError> {
    if required && value.is_empty() {
        return Err(EntryError::EmptyField { field });
    }
    if value.len() > max {
        return Err(EntryError::TooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(EntryError::ControlCharacter { field });
    }
    Ok(())
}

/// Whether `code` is an ISO 4217 currency code with a minor unit (`EUR`, `JPY`, `BHD`; not the
/// metals, `XXX` or `XTS`), by the table of the `iso_currency` crate.
pub fn is_currency_code(code: &str) -> bool {
    currency_exponent(code).is_some()
}

/// The number of minor-unit digits of an ISO 4217 currency, by the table of the `iso_currency`
/// crate: 0 for JPY and KRW, 2 for EUR and most, 3 for the dinars, 4 for CLF and UYW. `None` for
/// a code ISO 4217 does not list, and for one without a minor unit (gold, `XXX`, `XTS`).
pub fn currency_exponent(code: &str) -> Option<u32> {
    iso_currency::Currency::from_code(code)?
        .exponent()
        .map(u32::from)
}

/// Formats an amount of minor units as a decimal string in major units, by the currency's
/// exponent: `format_minor(-1234, "EUR") == "-12.34"`, `format_minor(500, "JPY") == "500"`.
/// Integer arithmetic only, exact for every `i64`. A code [`is_currency_code`] refuses (no entry
/// that validates has one) has no exponent to go by: its amount prints as plain minor units.
pub fn format_minor(amount_minor: i64, currency: &str) -> String {
    let exponent = currency_exponent(currency).unwrap_or(0);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let abs = amount_minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(exponent);
    let width = exponent as usize;
    format!("{sign}{}.{:0width$}", abs / scale, abs % scale)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(i: u64) -> NewEntry {
        let kind = match i % 3 {
            0 => EntryKind::Credit,
            1 => EntryKind::Payout,
            _ => EntryKind::Adjustment,
        };
        let amount = match kind {
            EntryKind::Credit => 100 + i as i64,
            EntryKind::Payout => -(50 + i as i64),
            EntryKind::Adjustment => 7,
        };
        NewEntry::new(kind, format!("artist-{}", i % 5), amount, "EUR", "plays")
            .with_reference(format!("batch-{}", i / 10))
            .with_memo(format!("entry {i}"))
    }

    #[test]
    fn leaf_bytes_round_trip_and_are_versioned() {
        let e = sample(4).into_entry(4, 1_700_000_000_000);
        let bytes = e.leaf_bytes();
        assert_eq!(bytes[0], ENTRY_FORMAT_VERSION);
        assert_eq!(LedgerEntry::from_leaf_bytes(&bytes).unwrap(), e);
        assert_eq!(e.leaf_hash(), leaf_hash(&bytes));
        // Deterministic: same entry, same bytes.
        assert_eq!(e.clone().leaf_bytes(), bytes);
    }

    #[test]
    fn changed_leaf_bytes_are_refused_or_change_the_hash() {
        let e = sample(2).into_entry(9, 1_700_000_000_000);
        let bytes = e.leaf_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            if let Ok(decoded) = LedgerEntry::from_leaf_bytes(&bad) {
                assert_ne!(decoded, e, "byte {i}");
                assert_ne!(decoded.leaf_hash(), e.leaf_hash());
            }
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            LedgerEntry::from_leaf_bytes(&trailing),
            Err(EntryError::NotCanonical)
        );
        let mut version = bytes;
        version[0] = 2;
        assert_eq!(
            LedgerEntry::from_leaf_bytes(&version),
            Err(EntryError::UnknownVersion(2))
        );
        assert!(matches!(
            LedgerEntry::from_leaf_bytes(&[]),
            Err(EntryError::Decode(_))
        ));
    }

    #[test]
    fn validation_rules() {
        assert!(sample(0).validate().is_ok());
        let cases: Vec<(NewEntry, EntryError)> = vec![
            (
                NewEntry {
                    account: String::new(),
                    ..sample(0)
                },
                EntryError::EmptyField { field: "account" },
            ),
            (
                NewEntry {
                    source: String::new(),
                    ..sample(0)
                },
                EntryError::EmptyField { field: "source" },
            ),
            (
                NewEntry {
                    memo: "x".repeat(MAX_MEMO_LEN + 1),
                    ..sample(0)
                },
                EntryError::TooLong {
                    field: "memo",
                    max: MAX_MEMO_LEN,
                },
            ),
            (
                NewEntry {
                    reference: "a\nb".into(),
                    ..sample(0)
                },
                EntryError::ControlCharacter { field: "reference" },
            ),
            (
                NewEntry {
                    source: "DSP Spotify".into(),
                    ..sample(0)
                },
                EntryError::BadSource("DSP Spotify".into()),
            ),
            (
                NewEntry {
                    currency: "eur".into(),
                    ..sample(0)
                },
                EntryError::BadCurrency("eur".into()),
            ),
            (
                NewEntry {
                    currency: "EURO".into(),
                    ..sample(0)
                },
                EntryError::BadCurrency("EURO".into()),
            ),
            (
                NewEntry {
                    amount_minor: 0,
                    ..sample(0)
                },
                EntryError::AmountSign {
                    kind: EntryKind::Credit,
                    amount_minor: 0,
                },
            ),
            (
                NewEntry {
                    amount_minor: 10,
                    ..sample(1)
                },
                EntryError::AmountSign {
                    kind: EntryKind::Payout,
                    amount_minor: 10,
                },
            ),
            (
                NewEntry {
                    amount_minor: 0,
                    ..sample(2)
                },
                EntryError::AmountSign {
                    kind: EntryKind::Adjustment,
                    amount_minor: 0,
                },
            ),
        ];
        for (entry, expected) in cases {
            assert_eq!(entry.validate(), Err(expected));
        }
        assert!(
            NewEntry::new(EntryKind::Adjustment, "a", -5, "JPY", "dsp:spotify")
                .validate()
                .is_ok()
        );
        assert!(NewEntry {
            memo: "Zahlung für März — ok".into(),
            ..sample(0)
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn unknown_currency_codes_are_refused() {
        for code in ["XYZ", "EUD", "XAU", "XXX"] {
            let entry = NewEntry {
                currency: code.into(),
                ..sample(0)
            };
            assert_eq!(entry.validate(), Err(EntryError::BadCurrency(code.into())));
            assert!(!is_currency_code(code));
        }
        assert_eq!(
            EntryError::BadCurrency("XYZ".into()).to_string(),
            "currency \"XYZ\" is not an ISO 4217 currency code"
        );
        assert_eq!(currency_exponent("JPY"), Some(0));
        assert_eq!(currency_exponent("EUR"), Some(2));
        assert_eq!(currency_exponent("BHD"), Some(3));
    }

    #[test]
    fn decimal_formatting_by_exponent() {
        assert_eq!(format_minor(-1234, "EUR"), "-12.34");
        assert_eq!(format_minor(5, "USD"), "0.05");
        assert_eq!(format_minor(-5, "USD"), "-0.05");
        assert_eq!(format_minor(100, "GBP"), "1.00");
        assert_eq!(format_minor(500, "JPY"), "500");
        assert_eq!(format_minor(-500, "KRW"), "-500");
        assert_eq!(format_minor(1234, "KWD"), "1.234");
        assert_eq!(format_minor(1, "CLF"), "0.0001");
        assert_eq!(format_minor(i64::MIN, "EUR"), "-92233720368547758.08");
        assert_eq!(format_minor(i64::MAX, "JPY"), "9223372036854775807");
        // A code the table does not list has no exponent: unknown codes are refused, not
        // guessed at (this used to assert the common exponent 2).
        assert_eq!(currency_exponent("ABC"), None);
    }
}
