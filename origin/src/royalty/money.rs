//! Money as integer minor units of one ISO 4217 currency; never floats.
//!
//! Every operation is checked: an overflow or a mix of currencies is an error, never a wrap, a
//! saturation or a silent conversion. Decimal strings (for bank files and people) are produced from
//! the currency's exponent with integer arithmetic only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a money value or operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency code is not three ASCII uppercase letters.
    #[error("invalid currency code {0:?}: expected three uppercase letters (ISO 4217)")]
    InvalidCurrency(String),
    /// The code has the right shape but ISO 4217 does not list it as a currency with a minor
    /// unit (a typo such as `EUD`, a retired-and-reused guess, gold `XAU`, `XXX`): refused rather
    /// than formatted with a guessed exponent.
    #[error("{0:?} is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    /// Two amounts of different currencies were combined.
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },
    /// The result does not fit the integer type (i64 minor units, or an intermediate).
    #[error("amount overflow")]
    Overflow,
}

/// An ISO 4217 alphabetic currency code, such as `USD`.
///
/// Only codes the ISO 4217 table (the `iso_currency` crate) lists with a minor unit are
/// accepted, so every currency has a known exponent. Serialized as its three-letter string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollar, the configuration's default currency.
    pub const USD: Currency = Currency(*b"USD");

    /// Parses and validates a three-letter code.
    ///
    /// # Errors
    /// [`MoneyError::InvalidCurrency`] unless `code` is exactly three ASCII uppercase letters;
    /// [`MoneyError::UnknownCurrency`] if ISO 4217 does not list it with a minor unit.
    pub fn new(code: &str) -> Result<Self, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(MoneyError::InvalidCurrency(code.to_string()));
        }
        if !crate::ledger::is_currency_code(code) {
            return Err(MoneyError::UnknownCurrency(code.to_string()));
        }
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    /// The code as a string slice, e.g. `"EUR"`.
    pub fn as_str(&self) -> &str {
        // Construction only admits ASCII uppercase, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The three code bytes (used in storage keys).
    pub fn as_bytes(&self) -> [u8; 3] {
        self.0
    }

    /// Number of decimal places of the minor unit: 0 for JPY/KRW, 3 for BHD/KWD, 2 for most
    /// (the ISO 4217 table, shared with the ledger: [`crate::ledger::currency_exponent`]).
    pub fn exponent(&self) -> u32 {
        // `new` admits only codes with an exponent.
        crate::ledger::currency_exponent(self.as_str()).unwrap_or(0)
    }

    /// Formats `minor` units as a decimal string with this currency's exponent, e.g. `-0.05`.
    pub fn format_minor(&self, minor: i64) -> String {
        crate::ledger::format_minor(minor, self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::new(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Currency::new(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: a signed number of minor units (cents, yen, fils) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units; negative for debits and reversals.
    pub minor: i64,
    /// The currency the amount is in.
    pub currency: Currency,
}

impl Money {
    /// An amount of `minor` units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    /// Zero of `currency`.
    pub fn zero(currency: Currency) -> Self {
        Money { minor: 0, currency }
    }

    /// `self + other`.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] if the currencies differ, [`MoneyError::Overflow`] if
    /// the sum does not fit an `i64`.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// `self - other`.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] if the currencies differ, [`MoneyError::Overflow`] if
    /// the difference does not fit an `i64`.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// `-self`.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] for `i64::MIN`, whose negation does not fit.
    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// The amount as a decimal string in major units, e.g. `12.34` (USD), `1234` (JPY).
    pub fn to_decimal_string(&self) -> String {
        self.currency.format_minor(self.minor)
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Adds two `i64` amounts, mapping overflow to [`MoneyError::Overflow`].
pub(crate) fn add_minor(a: i64, b: i64) -> Result<i64, MoneyError> {
    a.checked_add(b).ok_or(MoneyError::Overflow)
}

/// Narrows an `i128` intermediate to `i64` minor units.
pub(crate) fn to_minor(v: i128) -> Result<i64, MoneyError> {
    i64::try_from(v).map_err(|_| MoneyError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::new(code).unwrap()
    }

    #[test]
    fn currency_codes_are_validated() {
        assert_eq!(cur("EUR").as_str(), "EUR");
        for bad in ["", "usd", "US", "USDD", "U$D", "ÉUR", "12A"] {
            assert!(
                matches!(Currency::new(bad), Err(MoneyError::InvalidCurrency(_))),
                "{bad:?}"
            );
        }
        assert_eq!("GBP".parse::<Currency>().unwrap(), cur("GBP"));
    }

    #[test]
    fn exponents_follow_the_iso_table() {
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("KRW").exponent(), 0);
        assert_eq!(cur("USD").exponent(), 2);
        assert_eq!(cur("EUR").exponent(), 2);
        assert_eq!(cur("BHD").exponent(), 3);
        assert_eq!(cur("KWD").exponent(), 3);
        assert_eq!(cur("CLF").exponent(), 4);
        // Unknown but well-formed codes are refused (they used to get the common exponent 2).
        assert_eq!(
            Currency::new("XYZ"),
            Err(MoneyError::UnknownCurrency("XYZ".into()))
        );
    }

    #[test]
    fn unknown_and_unitless_codes_are_refused() {
        for code in ["XYZ", "EUD", "ABC", "XAU", "XXX", "XTS"] {
            let err = Currency::new(code).unwrap_err();
            assert_eq!(err, MoneyError::UnknownCurrency(code.into()));
            assert_eq!(
                err.to_string(),
                format!("\"{code}\" is not an ISO 4217 currency code")
            );
        }
        assert!(serde_json::from_str::<Money>(r#"{"minor":1,"currency":"XYZ"}"#).is_err());
        // A code replaced since (HRK by EUR in 2023) still names money someone was paid in.
        assert_eq!(cur("HRK").exponent(), 2);
    }

    #[test]
    fn decimal_formatting_is_exact() {
        let usd = Currency::USD;
        assert_eq!(Money::new(1234, usd).to_decimal_string(), "12.34");
        assert_eq!(Money::new(5, usd).to_decimal_string(), "0.05");
        assert_eq!(Money::new(-5, usd).to_decimal_string(), "-0.05");
        assert_eq!(Money::new(0, usd).to_decimal_string(), "0.00");
        assert_eq!(Money::new(1234, cur("JPY")).to_decimal_string(), "1234");
        assert_eq!(Money::new(-1234, cur("KWD")).to_decimal_string(), "-1.234");
        assert_eq!(
            Money::new(i64::MIN, usd).to_decimal_string(),
            "-92233720368547758.08"
        );
        assert_eq!(Money::new(250, usd).to_string(), "2.50 USD");
    }

    #[test]
    fn arithmetic_is_checked() {
        let usd = Currency::USD;
        let eur = cur("EUR");
        let a = Money::new(100, usd);
        assert_eq!(a.checked_add(Money::new(-30, usd)).unwrap().minor, 70);
        assert_eq!(a.checked_sub(Money::new(130, usd)).unwrap().minor, -30);
        assert_eq!(a.checked_neg().unwrap().minor, -100);
        assert_eq!(
            a.checked_add(Money::new(1, eur)),
            Err(MoneyError::CurrencyMismatch {
                left: usd,
                right: eur
            })
        );
        assert!(a.checked_sub(Money::new(1, eur)).is_err());
        assert_eq!(
            Money::new(i64::MAX, usd).checked_add(Money::new(1, usd)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::new(i64::MIN, usd).checked_sub(Money::new(1, usd)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::new(i64::MIN, usd).checked_neg(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(add_minor(i64::MAX, 1), Err(MoneyError::Overflow));
        assert_eq!(
            to_minor(i128::from(i64::MAX) + 1),
            Err(MoneyError::Overflow)
        );
        assert_eq!(to_minor(-7), Ok(-7));
    }

    #[test]
    fn serde_uses_the_code_string() {
        let m = Money::new(-42, cur("JPY"));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"minor":-42,"currency":"JPY"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Money>(r#"{"minor":1,"currency":"jpy"}"#).is_err());
        let bytes = postcard::to_allocvec(&m).unwrap();
        assert_eq!(postcard::from_bytes::<Money>(&bytes).unwrap(), m);
    }
}
