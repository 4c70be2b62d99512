//! Artist accounts: who is paid, where they are taxed, and how the money reaches them.
//!
//! Payout details are checked as far as they can be offline (IBAN check digits, BIC shape,
//! Stripe account id prefix) so a typo is caught when the account is saved, not when a bank
//! rejects a payout batch weeks later.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::check_country;
use super::error::{check_id, check_text, invalid, MAX_ARTIST_ID_BYTES};
use super::wallet::{check_evm_address, EVM_NETWORKS};
use super::RoyaltyError;

/// An artist's account: the payee of credits booked under `artist_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtistAccount {
    /// The artist id used in manifests and play reports (1..=128 bytes).
    pub artist_id: String,
    /// Display name, for statements.
    pub name: String,
    /// Country of tax residence (ISO 3166-1 alpha-2): decides the withholding rate.
    pub tax_country: String,
    /// Where payouts go.
    pub payout_method: PayoutMethod,
}

/// How an artist is paid. Serialized externally tagged: `{"bank": {"iban": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutMethod {
    /// A Stripe Connect account receiving transfers.
    Stripe {
        /// The connected account id, `acct_…`.
        account_id: String,
    },
    /// A bank account reached by SEPA-style credit transfer.
    Bank {
        /// IBAN, uppercase without spaces; its check digits are verified.
        iban: String,
        /// BIC (8 or 11 characters).
        bic: String,
        /// Account holder name as the bank knows it.
        holder: String,
    },
    /// A cryptocurrency address.
    Crypto {
        /// Network name, lowercase (`ethereum`, `bitcoin`, `solana`…).
        network: String,
        /// Address on that network.
        address: String,
    },
}

/// The kind of a [`PayoutMethod`], which selects a payout batch and its export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutMethodKind {
    /// Stripe Connect transfers (CSV export).
    Stripe,
    /// Bank credit transfers (CSV export).
    Bank,
    /// Crypto transfers (JSON export).
    Crypto,
}

impl PayoutMethodKind {
    /// The lowercase name used in batch ids and posting sources: `stripe`, `bank`, `crypto`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PayoutMethodKind::Stripe => "stripe",
            PayoutMethodKind::Bank => "bank",
            PayoutMethodKind::Crypto => "crypto",
        }
    }
}

impl fmt::Display for PayoutMethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PayoutMethod {
    /// Which kind of method this is.
    pub fn kind(&self) -> PayoutMethodKind {
        match self {
            PayoutMethod::Stripe { .. } => PayoutMethodKind::Stripe,
            PayoutMethod::Bank { .. } => PayoutMethodKind::Bank,
            PayoutMethod::Crypto { .. } => PayoutMethodKind::Crypto,
        }
    }

    /// Checks the method's details.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] naming the field (`payout_method.iban` …): a Stripe id not
    /// starting with `acct_`, an IBAN with wrong check digits, a malformed BIC, a holder name
    /// that is empty or starts like a spreadsheet formula, an empty network or address.
    pub fn validate(&self) -> Result<(), RoyaltyError> {
        match self {
            PayoutMethod::Stripe { account_id } => {
                let rest = account_id.strip_prefix("acct_").unwrap_or("");
                if rest.is_empty()
                    || rest.len() > 64
                    || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(invalid(
                        "payout_method.account_id",
                        format!("{account_id:?} is not a Stripe account id (acct_ + letters and digits)"),
                    ));
                }
            }
            PayoutMethod::Bank { iban, bic, holder } => {
                check_iban(iban).map_err(|p| invalid("payout_method.iban", p))?;
                check_bic(bic).map_err(|p| invalid("payout_method.bic", p))?;
                // SEPA limits the creditor name to 70 characters.
                if holder.chars().count() > 70 {
                    return Err(invalid("payout_method.holder", "longer than 70 characters"));
                }
                check_text("payout_method.holder", holder, false)?;
                // Bank files get opened in spreadsheets; no legal name starts with these.
                if holder.starts_with(['=', '+', '-', '@']) || holder.trim() != holder {
                    return Err(invalid(
                        "payout_method.holder",
                        "must not start with =, +, - or @ or have surrounding spaces",
                    ));
                }
            }
            PayoutMethod::Crypto { network, address } => {
                let ok_network = !network.is_empty()
                    && network.len() <= 32
                    && network
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok_network {
                    return Err(invalid(
                        "payout_method.network",
                        "must be 1..=32 of lowercase letters, digits and '-'",
                    ));
                }
                let ok_address = !address.is_empty()
                    && address.len() <= 128
                    && address
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b":._-".contains(&b));
                if !ok_address {
                    return Err(invalid(
                        "payout_method.address",
                        "must be 1..=128 of letters, digits and ':', '.', '_', '-'",
                    ));
                }
                if EVM_NETWORKS.contains(&network.as_str()) {
                    check_evm_address(address).map_err(|p| invalid("payout_method.address", p))?;
                }
            }
        }
        Ok(())
    }
}

impl ArtistAccount {
    /// Checks every field of the account.
    ///
    /// # Errors
    /// [`RoyaltyError::InvalidInput`] naming the field: an artist id that is empty, too long or
    /// has control characters; an empty name; a tax country that is not ISO 3166-1 alpha-2; any
    /// problem of [`PayoutMethod::validate`].
    pub fn validate(&self) -> Result<(), RoyaltyError> {
        check_id("artist_id", &self.artist_id, MAX_ARTIST_ID_BYTES)?;
        check_text("name", &self.name, false)?;
        check_country(&self.tax_country).map_err(|p| invalid("tax_country", p))?;
        self.payout_method.validate()
    }
}

/// Verifies an IBAN's shape and its ISO 13616 mod-97 check digits.
fn check_iban(iban: &str) -> Result<(), String> {
    let b = iban.as_bytes();
    if !(15..=34).contains(&b.len()) {
        return Err(format!(
            "{iban:?} is not 15..=34 characters (write it without spaces)"
        ));
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(format!(
            "{iban:?}: only uppercase letters and digits, no spaces"
        ));
    }
    if !b[..2].iter().all(u8::is_ascii_uppercase) || !b[2..4].iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "{iban:?} must start with a country code and two check digits"
        ));
    }
    // Move the first four characters to the end, letters become 10..35, and the whole number
    // mod 97 must be 1; computed digit by digit so no big integer is needed.
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    if rem != 1 {
        return Err(format!("{iban:?}: check digits do not match (typo?)"));
    }
    Ok(())
}

/// Verifies a BIC's shape (ISO 9362): 4 letters, 2-letter country, 2 alphanumerics, optional 3.
fn check_bic(bic: &str) -> Result<(), String> {
    let b = bic.as_bytes();
    let alnum = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    let ok = (b.len() == 8 || b.len() == 11)
        && b[..6].iter().all(u8::is_ascii_uppercase)
        && alnum(&b[6..]);
    if !ok {
        return Err(format!(
            "{bic:?} is not a BIC (8 or 11 uppercase characters)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(iban: &str, bic: &str, holder: &str) -> PayoutMethod {
        PayoutMethod::Bank {
            iban: iban.into(),
            bic: bic.into(),
            holder: holder.into(),
        }
    }

    fn account(method: PayoutMethod) -> ArtistAccount {
        ArtistAccount {
            artist_id: "ar-1".into(),
            name: "-Wumpscut-".into(),
            tax_country: "DE".into(),
            payout_method: method,
        }
    }

    fn field(err: RoyaltyError) -> String {
        match err {
            RoyaltyError::InvalidInput { field, .. } => field,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn valid_ibans_pass_and_typos_fail() {
        for good in [
            "GB82WEST12345698765432",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
        ] {
            check_iban(good).unwrap();
        }
        // One digit changed, two digits swapped.
        assert!(check_iban("GB82WEST12345698765433").is_err());
        assert!(check_iban("DE89370400440532031000").is_err());
        assert!(check_iban("DE89 3704 0044 0532 0130 00").is_err());
        assert!(check_iban("de89370400440532013000").is_err());
        assert!(check_iban("DE8937").is_err());
    }

    #[test]
    fn bics() {
        check_bic("DEUTDEFF").unwrap();
        check_bic("DEUTDEFF500").unwrap();
        assert!(check_bic("DEUTDEF").is_err());
        assert!(check_bic("DEU1DEFF").is_err());
        assert!(check_bic("deutdeff").is_err());
    }

    #[test]
    fn accounts_validate_each_field() {
        account(bank("DE89370400440532013000", "DEUTDEFF", "Jane Doe"))
            .validate()
            .unwrap();
        let stripe = PayoutMethod::Stripe {
            account_id: "acct_1Nv0FGQ9RKHgCVdK".into(),
        };
        assert_eq!(stripe.kind(), PayoutMethodKind::Stripe);
        account(stripe).validate().unwrap();
        let crypto = PayoutMethod::Crypto {
            network: "ethereum".into(),
            address: "0x52908400098527886E0F7030069857D2E4169EE7".into(),
        };
        account(crypto.clone()).validate().unwrap();

        let cases = [
            (
                PayoutMethod::Stripe {
                    account_id: "cus_123".into(),
                },
                "payout_method.account_id",
            ),
            (
                bank("DE00370400440532013000", "DEUTDEFF", "J"),
                "payout_method.iban",
            ),
            (
                bank("DE89370400440532013000", "DEUT", "J"),
                "payout_method.bic",
            ),
            (
                bank("DE89370400440532013000", "DEUTDEFF", ""),
                "payout_method.holder",
            ),
            (
                bank("DE89370400440532013000", "DEUTDEFF", "=cmd"),
                "payout_method.holder",
            ),
            (
                PayoutMethod::Crypto {
                    network: "ETH".into(),
                    address: "x".into(),
                },
                "payout_method.network",
            ),
            (
                PayoutMethod::Crypto {
                    network: "eth".into(),
                    address: "a b".into(),
                },
                "payout_method.address",
            ),
            // One letter's case changed: EIP-55 catches the typo.
            (
                PayoutMethod::Crypto {
                    network: "ethereum".into(),
                    address: "0x52908400098527886E0F7030069857D2E4169eE7".into(),
                },
                "payout_method.address",
            ),
            (
                PayoutMethod::Crypto {
                    network: "polygon".into(),
                    address: "0x5290840009852788".into(),
                },
                "payout_method.address",
            ),
        ];
        // EIP-55's own examples, and the same digits in lowercase (no checksum to check).
        for address in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        ] {
            check_evm_address(address).unwrap();
        }
        for (method, expected) in cases {
            assert_eq!(field(account(method).validate().unwrap_err()), expected);
        }

        let mut a = account(crypto);
        a.tax_country = "UK".into();
        assert_eq!(field(a.validate().unwrap_err()), "tax_country");
        a.tax_country = "GB".into();
        a.name.clear();
        assert_eq!(field(a.validate().unwrap_err()), "name");
        a.name = "x".into();
        a.artist_id = "a\u{0}b".into();
        assert_eq!(field(a.validate().unwrap_err()), "artist_id");
    }

    #[test]
    fn serde_shapes() {
        let a = account(bank("DE89370400440532013000", "DEUTDEFF", "Jane Doe"));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["payout_method"]["bank"]["bic"], "DEUTDEFF");
        let back: ArtistAccount = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
        let bytes = postcard::to_allocvec(&a).unwrap();
        assert_eq!(postcard::from_bytes::<ArtistAccount>(&bytes).unwrap(), a);
        assert_eq!(
            serde_json::to_string(&PayoutMethodKind::Crypto).unwrap(),
            "\"crypto\""
        );
    }
}
