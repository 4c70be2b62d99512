//! Identifiers a label needs: ISRC (ISO 3901) for every track, ICPN (UPC-A or EAN-13, GS1) for
//! every release, DDEX Party IDs for the sender and the DSPs.
//!
//! Only syntax and check digits live here; allocation from persisted counters is in
//! [`crate::store`].

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An identifier that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} {value:?}: {problem}")]
pub struct IdError {
    /// `ISRC`, `UPC`, `party id`, `ISRC registrant`, `GS1 company prefix`.
    pub kind: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong.
    pub problem: String,
}

fn id_error(kind: &'static str, value: &str, problem: impl Into<String>) -> IdError {
    IdError {
        kind,
        value: value.to_string(),
        problem: problem.into(),
    }
}

fn is_upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// The first five characters of an ISRC: country code (two letters, ISO 3166-1 alpha-2 as
/// the ISRC agencies assign them) and registrant code (three alphanumerics), e.g. `USMHC`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IsrcRegistrant(String);

impl IsrcRegistrant {
    /// Parses `CCXXX` (hyphens allowed: `CC-XXX`).
    ///
    /// # Errors
    /// [`IdError`] naming what is wrong.
    pub fn new(value: &str) -> Result<Self, IdError> {
        let kind = "ISRC registrant";
        let compact: String = value.chars().filter(|c| *c != '-').collect();
        let b = compact.as_bytes();
        if b.len() != 5 {
            return Err(id_error(
                kind,
                value,
                "must be a 2-letter country code and a 3-character registrant code, e.g. USMHC",
            ));
        }
        if !b[..2].iter().all(u8::is_ascii_uppercase) {
            return Err(id_error(
                kind,
                value,
                "the country code must be two capital letters",
            ));
        }
        if !b[2..].iter().copied().all(is_upper_alnum) {
            return Err(id_error(
                kind,
                value,
                "the registrant code must be three capital letters or digits",
            ));
        }
        Ok(Self(compact))
    }

    /// `CCXXX`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IsrcRegistrant {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(&s)
    }
}

impl From<IsrcRegistrant> for String {
    fn from(r: IsrcRegistrant) -> String {
        r.0
    }
}

/// Highest ISRC designation code: five digits per registrant and year.
pub const MAX_ISRC_DESIGNATION: u32 = 99_999;

/// An ISRC (ISO 3901): 12 characters `CCXXXYYNNNNN` (country, registrant, two-digit year of
/// reference, designation). It has no check digit. Stored and sent to DSPs without hyphens;
/// [`Isrc::hyphenated`] is the display form `CC-XXX-YY-NNNNN`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Isrc(String);

impl Isrc {
    /// Parses an ISRC, with or without the hyphens of its display form (case-sensitive: ISO
    /// 3901 codes are upper case).
    ///
    /// # Errors
    /// [`IdError`] naming what is wrong.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let kind = "ISRC";
        let compact: String = if value.contains('-') {
            let parts: Vec<&str> = value.split('-').collect();
            let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            if lens != [2, 3, 2, 5] {
                return Err(id_error(kind, value, "hyphenated form is CC-XXX-YY-NNNNN"));
            }
            parts.concat()
        } else {
            value.to_string()
        };
        let b = compact.as_bytes();
        if b.len() != 12 {
            return Err(id_error(kind, value, "must be 12 characters CCXXXYYNNNNN"));
        }
        IsrcRegistrant::new(&compact[..5]).map_err(|e| id_error(kind, value, e.problem))?;
        if !b[5..].iter().all(u8::is_ascii_digit) {
            return Err(id_error(
                kind,
                value,
                "the year (YY) and designation (NNNNN) must be digits",
            ));
        }
        Ok(Self(compact))
    }

    /// The ISRC of `designation` (1..=[`MAX_ISRC_DESIGNATION`]) in `year` (its last two digits
    /// are used) for `registrant`.
    ///
    /// # Errors
    /// [`IdError`] when the designation is out of range.
    pub fn assemble(
        registrant: &IsrcRegistrant,
        year: u16,
        designation: u32,
    ) -> Result<Self, IdError> {
        if designation == 0 || designation > MAX_ISRC_DESIGNATION {
            return Err(id_error(
                "ISRC",
                &format!("{}{:02}{designation}", registrant.as_str(), year % 100),
                format!("designation must be 1..={MAX_ISRC_DESIGNATION}"),
            ));
        }
        Ok(Self(format!(
            "{}{:02}{designation:05}",
            registrant.as_str(),
            year % 100
        )))
    }

    /// The 12-character code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `CC-XXX-YY-NNNNN`.
    pub fn hyphenated(&self) -> String {
        let s = &self.0;
        format!("{}-{}-{}-{}", &s[..2], &s[2..5], &s[5..7], &s[7..])
    }
}

impl fmt::Display for Isrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Isrc {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Isrc> for String {
    fn from(i: Isrc) -> String {
        i.0
    }
}

/// The GS1 mod-10 check digit of `digits` (the code without its check digit): from the right,
/// digits are weighted 3, 1, 3, 1, ...; the check digit brings the sum to a multiple of 10.
/// The same rule serves GTIN-8, UPC-A (GTIN-12), EAN-13 and GTIN-14.
///
/// # Panics
/// Never for ASCII digits; other bytes are a caller bug (checked by [`Icpn::parse`]).
pub fn gs1_check_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                d * 3
            } else {
                d
            }
        })
        .sum();
    // The sum is a u32 of at most 14 digits * 27: fits in u8 after the modulo.
    ((10 - sum % 10) % 10) as u8
}

/// An ICPN (the DDEX name for a release's product code): a UPC-A (12 digits) or an EAN-13
/// (13 digits), whose last digit is the GS1 check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Icpn(String);

impl Icpn {
    /// Parses and checks an imported code (12 or 13 digits, check digit included).
    ///
    /// # Errors
    /// [`IdError`] for a wrong length, a non-digit, or a wrong check digit (naming the right
    /// one).
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let kind = "UPC";
        if !(value.len() == 12 || value.len() == 13) {
            return Err(id_error(
                kind,
                value,
                "must be 12 digits (UPC-A) or 13 digits (EAN-13)",
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(id_error(kind, value, "must be digits only"));
        }
        let (body, check) = value.split_at(value.len() - 1);
        let expected = gs1_check_digit(body);
        if check.as_bytes()[0] - b'0' != expected {
            return Err(id_error(
                kind,
                value,
                format!("wrong check digit: {check}, expected {expected}"),
            ));
        }
        Ok(Self(value.to_string()))
    }

    /// The UPC-A of item `item` under a GS1 company prefix: prefix ‖ item reference
    /// (zero-padded to fill 11 digits) ‖ check digit.
    ///
    /// # Errors
    /// [`IdError`] when `item` does not fit in the digits the prefix leaves.
    pub fn assemble_upc(prefix: &Gs1Prefix, item: u64) -> Result<Self, IdError> {
        let width = 11 - prefix.0.len();
        if item >= 10u64.pow(u32::try_from(width).unwrap_or(0)) {
            return Err(id_error(
                "UPC",
                &format!("{}{item}", prefix.0),
                format!(
                    "item reference {item} does not fit in the {width} digits the GS1 company \
                     prefix {} leaves",
                    prefix.0
                ),
            ));
        }
        let body = format!("{}{item:0width$}", prefix.0);
        let check = gs1_check_digit(&body);
        Ok(Self(format!("{body}{check}")))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Icpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Icpn {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Icpn> for String {
    fn from(i: Icpn) -> String {
        i.0
    }
}

/// A GS1 company prefix for UPC-A: 6 to 10 digits (the item reference fills the rest of the
/// 11 digits before the check digit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Gs1Prefix(String);

impl Gs1Prefix {
    /// Parses a prefix.
    ///
    /// # Errors
    /// [`IdError`] for a wrong length or a non-digit.
    pub fn new(value: &str) -> Result<Self, IdError> {
        if !(6..=10).contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(id_error(
                "GS1 company prefix",
                value,
                "must be 6 to 10 digits (a UPC-A company prefix)",
            ));
        }
        Ok(Self(value.to_string()))
    }

    /// How many item references the prefix allows (10^(11 - digits)).
    pub fn capacity(&self) -> u64 {
        10u64.pow(u32::try_from(11 - self.0.len()).unwrap_or(0))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Gs1Prefix {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(&s)
    }
}

impl From<Gs1Prefix> for String {
    fn from(p: Gs1Prefix) -> String {
        p.0
    }
}

/// A DDEX Party ID (DPID): `PADPIDA` followed by capital letters or digits. DDEX assigns
/// `PADPIDA` + date (8 digits) + number (2) + check character, 18 characters in all, as in
/// DDEX's own samples (`PADPIDA2007050901U`); the shared notes describe 14 alphanumerics after
/// the prefix. Both forms (11 to 14 after the prefix) are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartyId(String);

impl PartyId {
    /// Parses a Party ID.
    ///
    /// # Errors
    /// [`IdError`] naming what is wrong.
    pub fn new(value: &str) -> Result<Self, IdError> {
        let Some(rest) = value.strip_prefix("PADPIDA") else {
            return Err(id_error("party id", value, "must start with PADPIDA"));
        };
        if !(11..=14).contains(&rest.len()) || !rest.bytes().all(is_upper_alnum) {
            return Err(id_error(
                "party id",
                value,
                "PADPIDA must be followed by 11 to 14 capital letters or digits",
            ));
        }
        Ok(Self(value.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PartyId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(&s)
    }
}

impl From<PartyId> for String {
    fn from(p: PartyId) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs1_check_digits_of_known_codes() {
        // GS1's own example (GTIN-12 614141000036) and two retail barcodes.
        assert_eq!(gs1_check_digit("61414100003"), 6);
        assert_eq!(gs1_check_digit("03600029145"), 2); // UPC-A 036000291452
        assert_eq!(gs1_check_digit("400638133393"), 1); // EAN-13 4006381333931
        assert!(Icpn::parse("036000291452").is_ok());
        assert!(Icpn::parse("4006381333931").is_ok());
        let err = Icpn::parse("036000291453").unwrap_err();
        assert!(err.problem.contains("expected 2"), "{err}");
        assert!(Icpn::parse("03600029145").is_err());
        assert!(Icpn::parse("03600029145a").is_err());
    }

    #[test]
    fn upcs_are_assembled_under_the_prefix() {
        let prefix = Gs1Prefix::new("0614141").unwrap();
        assert_eq!(prefix.capacity(), 10_000);
        let upc = Icpn::assemble_upc(&prefix, 3).unwrap();
        assert_eq!(upc.as_str(), "061414100038");
        assert!(Icpn::parse(upc.as_str()).is_ok());
        assert!(Icpn::assemble_upc(&prefix, 10_000).is_err());
        for item in 0..2000 {
            let upc = Icpn::assemble_upc(&prefix, item).unwrap();
            Icpn::parse(upc.as_str()).unwrap();
        }
        assert!(Gs1Prefix::new("12345").is_err());
        assert!(Gs1Prefix::new("12345678901").is_err());
    }

    #[test]
    fn isrcs_parse_and_assemble() {
        let reg = IsrcRegistrant::new("USMHC").unwrap();
        let isrc = Isrc::assemble(&reg, 2026, 1).unwrap();
        assert_eq!(isrc.as_str(), "USMHC2600001");
        assert_eq!(isrc.hyphenated(), "US-MHC-26-00001");
        assert_eq!(Isrc::parse("US-MHC-26-00001").unwrap(), isrc);
        assert_eq!(
            Isrc::parse("GBAYC1700598").unwrap().as_str(),
            "GBAYC1700598"
        );
        assert!(Isrc::assemble(&reg, 2026, 100_000).is_err());
        assert!(Isrc::assemble(&reg, 2026, 0).is_err());
        for bad in [
            "usmhc2600001",
            "USMHC260001",
            "USMHC26A0001",
            "U1MHC2600001",
            "US-MHC-2600001",
        ] {
            assert!(Isrc::parse(bad).is_err(), "{bad}");
        }
        assert!(IsrcRegistrant::new("US-MHC").is_ok());
        assert!(IsrcRegistrant::new("USMH").is_err());
    }

    #[test]
    fn party_ids() {
        assert!(PartyId::new("PADPIDA2007050901U").is_ok());
        assert!(PartyId::new("PADPIDA2007050901XYZ").is_ok());
        assert!(PartyId::new("PADPIDA200705090").is_err());
        assert!(PartyId::new("PADPIDA2007050901XYZAB").is_err());
        assert!(PartyId::new("PADPIDB2007050901U").is_err());
        assert!(PartyId::new("PADPIDA2007050901u").is_err());
    }
}
