//! Decimal: the exact `xs:decimal` cells of a DSR.

use std::fmt;
use std::str::FromStr;

/// An exact decimal number, as nano-units (the value × 10⁹): money, exchange rates and the
/// other `xs:decimal` cells.
///
/// DSR Part 1 leaves the precision to sender and recipient; nine fractional digits is more
/// than any DSP sends, and a value with more is refused rather than rounded. The range
/// (±1.7 × 10²⁹) is beyond any revenue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal {
    nanos: i128,
}

/// Why a string is not a [`Decimal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct DecimalError {
    problem: &'static str,
}

impl Decimal {
    /// Zero.
    pub const ZERO: Self = Self { nanos: 0 };

    /// The number of fractional digits kept.
    pub const SCALE: u32 = 9;

    const ONE: i128 = 1_000_000_000;

    /// The decimal that is `nanos` × 10⁻⁹.
    pub const fn from_nanos(nanos: i128) -> Self {
        Self { nanos }
    }

    /// The value × 10⁹.
    pub const fn nanos(self) -> i128 {
        self.nanos
    }

    /// The sum, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.nanos.checked_add(other.nanos).map(Self::from_nanos)
    }

    /// The difference, or `None` on overflow.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.nanos.checked_sub(other.nanos).map(Self::from_nanos)
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;

    /// Parses `xs:decimal` syntax: an optional sign, digits, an optional `.` and at most nine
    /// fractional digits (`5`, `5.`, `5.0`, `-0.25`, `.5`). No exponent, no separators.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let not_decimal = DecimalError {
            problem: "is not a decimal number",
        };
        let (negative, unsigned) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(not_decimal);
        }
        if frac.len() > Self::SCALE as usize {
            return Err(DecimalError {
                problem: "has more than 9 fractional digits",
            });
        }
        let out_of_range = DecimalError {
            problem: "is out of range",
        };
        let mut nanos: i128 = 0;
        for digit in int.bytes() {
            nanos = nanos
                .checked_mul(10)
                .and_then(|n| n.checked_add(i128::from(digit - b'0')))
                .ok_or(out_of_range)?;
        }
        nanos = nanos.checked_mul(Self::ONE).ok_or(out_of_range)?;
        let mut unit = Self::ONE;
        for digit in frac.bytes() {
            unit /= 10;
            nanos += i128::from(digit - b'0') * unit;
        }
        Ok(Self::from_nanos(if negative { -nanos } else { nanos }))
    }
}

impl fmt::Display for Decimal {
    /// The shortest exact form: `1.5`, `0`, `-0.000000001` (DSR Part 1 wants zero as `0`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let one = Self::ONE.unsigned_abs();
        let (int, frac) = (abs / one, abs % one);
        if frac == 0 {
            return write!(f, "{sign}{int}");
        }
        let digits = format!("{frac:09}");
        write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsr::testutil::dec;

    #[test]
    fn decimals_are_exact() {
        for (text, nanos) in [
            ("5", 5_000_000_000),
            ("5.", 5_000_000_000),
            ("5.0", 5_000_000_000),
            ("+1.25", 1_250_000_000),
            ("-0.5", -500_000_000),
            (".5", 500_000_000),
            ("0.000000001", 1),
            ("-0", 0),
            (
                "123456789012345678901.123456789",
                123_456_789_012_345_678_901_123_456_789,
            ),
        ] {
            assert_eq!(dec(text).nanos(), nanos, "{text}");
        }
        for text in [
            "",
            "-",
            ".",
            "1.2.3",
            "1e3",
            "1,5",
            " 1",
            "0x10",
            "0.0000000001",
        ] {
            assert!(text.parse::<Decimal>().is_err(), "{text:?}");
        }
        assert!("1".repeat(40).parse::<Decimal>().is_err());
        for (nanos, text) in [
            (0, "0"),
            (1_500_000_000, "1.5"),
            (-1, "-0.000000001"),
            (6_123_456_789, "6.123456789"),
            (-42_000_000_000, "-42"),
        ] {
            assert_eq!(Decimal::from_nanos(nanos).to_string(), text);
            assert_eq!(dec(text).nanos(), nanos);
        }
        assert_eq!(dec("0.1").checked_add(dec("0.2")), Some(dec("0.3")));
        assert_eq!(
            Decimal::from_nanos(i128::MAX).checked_add(dec("0.000000001")),
            None
        );
    }
}
