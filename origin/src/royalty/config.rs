//! The `[plugins.royalty]` configuration: currency, play rates per country, payout threshold and
//! tax withholding per country.
//!
//! These are plain serde structs for the node's TOML file, with defaults for every field, and one
//! [`RoyaltyConfig::validate`] that names the offending field (relative to the
//! `[plugins.royalty]` table, e.g. `rates.FR.per_second_micro`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::money::Currency;

/// The key of the rate (and withholding) that applies to countries not listed.
pub const ANY_COUNTRY: &str = "*";

/// Largest accepted rate, in micro-units. One million minor units per second or per play is
/// far past any real royalty rate; the bound keeps every intermediate product (milliseconds ×
/// rate, summed over a batch) comfortably inside `i128`.
pub const MAX_RATE_MICRO: u64 = 1_000_000_000_000;

/// Basis points in one whole (100 %).
pub const BPS_WHOLE: u32 = 10_000;

/// EU member states (ISO 3166-1 alpha-2; Greece is `GR`, not the EU's `EL`), to which
/// [`WithholdingConfig::eu_bps`] applies unless `countries_bps` lists them individually.
pub const EU_MEMBERS: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// Why a royalty configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field has a value the plugin cannot use.
    #[error("plugins.royalty.{field}: {problem}")]
    Invalid {
        /// Path of the field inside `[plugins.royalty]`, e.g. `withholding.countries_bps.UK`.
        field: String,
        /// What is wrong, in words.
        problem: String,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Play rates for one country, in micro-units (10⁻⁶ of a minor unit) so that per-second rates
/// below one cent are exact integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Micro-units credited per second watched (pro rata per millisecond). Default 0.
    #[serde(default)]
    pub per_second_micro: u64,
    /// Micro-units credited per counted play. Default 0.
    #[serde(default)]
    pub per_play_micro: u64,
}

/// Tax withholding in basis points (1/100 of a percent), looked up by the **artist's tax
/// country** (an account attribute), never by the viewer's country.
///
/// The built-in values are **placeholders** chosen only so the mechanism is visible; they are not
/// tax advice. The operator must set every rate from their own tax advice (treaties, forms on
/// file, the payer's own jurisdiction all change the right number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithholdingConfig {
    /// Rate per tax country (ISO 3166-1 alpha-2). Default (placeholders): US 3000, GB 2000,
    /// CA 2500, AU 3000, JP 2042. Writing this table replaces the built-in one entirely.
    #[serde(default = "default_countries_bps")]
    pub countries_bps: BTreeMap<String, u32>,
    /// Rate for every EU member state not in `countries_bps`. Default (placeholder) 1500.
    #[serde(default = "default_eu_bps")]
    pub eu_bps: u32,
    /// Rate for any other country, and for artists without an account (no tax country known).
    /// Default 0.
    #[serde(default)]
    pub default_bps: u32,
}

fn default_countries_bps() -> BTreeMap<String, u32> {
    [
        ("US", 3000),
        ("GB", 2000),
        ("CA", 2500),
        ("AU", 3000),
        ("JP", 2042),
    ]
    .into_iter()
    .map(|(c, bps)| (c.to_string(), bps))
    .collect()
}

fn default_eu_bps() -> u32 {
    1500
}

impl Default for WithholdingConfig {
    fn default() -> Self {
        WithholdingConfig {
            countries_bps: default_countries_bps(),
            eu_bps: default_eu_bps(),
            default_bps: 0,
        }
    }
}

impl WithholdingConfig {
    /// The rate in basis points for an artist whose tax country is `tax_country` (`None`: no
    /// account, so no tax country known).
    pub fn bps_for(&self, tax_country: Option<&str>) -> u32 {
        let Some(country) = tax_country else {
            return self.default_bps;
        };
        if let Some(bps) = self.countries_bps.get(country) {
            *bps
        } else if EU_MEMBERS.contains(&country) {
            self.eu_bps
        } else {
            self.default_bps
        }
    }
}

/// The `[plugins.royalty]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoyaltyConfig {
    /// ISO 4217 currency the play rates are paid in. Default `"USD"`.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Play rates per viewer country (ISO 3166-1 alpha-2), plus `"*"` for every other country
    /// (required). Default: `"*"` = 1000 µ/s and 300 000 µ/play (0.001 and 0.3 minor units:
    /// placeholders to be set by the operator).
    #[serde(default = "default_rates")]
    pub rates: BTreeMap<String, RateConfig>,
    /// Smallest pending balance paid out, in minor units of the balance's currency. Default 1000.
    #[serde(default = "default_minimum_payout_minor")]
    pub minimum_payout_minor: i64,
    /// Per-currency overrides of `minimum_payout_minor` (e.g. `JPY = 1500`). Default empty.
    #[serde(default)]
    pub minimum_payout_minor_by_currency: BTreeMap<String, i64>,
    /// Tax withholding by the artist's tax country.
    #[serde(default)]
    pub withholding: WithholdingConfig,
    /// `[plugins.royalty.crypto]`: crypto payouts executed on an EVM chain. Default: none (a
    /// crypto payout batch is a JSON file for the operator to execute).
    #[serde(default)]
    pub crypto: Option<CryptoPayoutConfig>,
}

/// `[plugins.royalty.crypto]`: `POST payouts/crypto` executes the batch on an EVM chain, one
/// transfer per artist wallet (the work is `mhc-chain`'s; this is the table and its checks).
///
/// There is no exchange rate: one unit of `asset` is worth one unit of `currency` (a
/// stablecoin of that currency), and only balances in `currency` are paid on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoPayoutConfig {
    /// JSON-RPC endpoint, `http://` or `https://`.
    pub rpc_url: String,
    /// The chain's id.
    pub chain_id: u64,
    /// File holding the paying account's secp256k1 private key, hex, mode `0600`.
    pub key: std::path::PathBuf,
    /// `"native"` (the chain's coin) or an ERC-20 contract address. Default `"native"`.
    #[serde(default = "default_asset")]
    pub asset: String,
    /// Decimals of the asset (18 for ether and most tokens, 6 for USDC), `0..=36`, at least the
    /// currency's minor-unit exponent. Default 18.
    #[serde(default = "default_decimals")]
    pub decimals: u32,
    /// The ISO 4217 currency one unit of the asset is worth. Default: the plugin's `currency`.
    #[serde(default)]
    pub currency: Option<String>,
    /// Blocks on top of a transfer's block (its own counted) before it is booked as paid,
    /// `1..=1000`. Default 2.
    #[serde(default = "default_payout_confirmations")]
    pub confirmations: u64,
}

fn default_payout_confirmations() -> u64 {
    2
}

fn default_asset() -> String {
    "native".to_string()
}

/// Whether `url` is an `http://` or `https://` URL with a host: the JSON-RPC endpoints of
/// `[plugins.royalty.crypto]` and `[plugins.ledger.anchor]`.
pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    !rest.is_empty() && !rest.starts_with('/') && !url.chars().any(char::is_whitespace)
}

fn default_decimals() -> u32 {
    18
}

impl CryptoPayoutConfig {
    /// The currency balances must be in to be paid on chain.
    pub fn currency_or<'a>(&'a self, plugin_currency: &'a str) -> &'a str {
        self.currency.as_deref().unwrap_or(plugin_currency)
    }

    /// Checks the table (not the key file, read when payouts start).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `crypto.<field>`.
    pub fn validate(&self, plugin_currency: &str) -> Result<(), ConfigError> {
        let url = self.rpc_url.as_str();
        if !is_http_url(url) {
            return Err(invalid(
                "crypto.rpc_url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        if self.chain_id == 0 {
            return Err(invalid(
                "crypto.chain_id",
                "must be the chain's id (1 is Ethereum)",
            ));
        }
        if self.key.as_os_str().is_empty() {
            return Err(invalid(
                "crypto.key",
                "must name the paying account's key file",
            ));
        }
        if self.asset != "native" {
            super::wallet::check_evm_address(&self.asset).map_err(|p| {
                invalid(
                    "crypto.asset",
                    format!("\"native\" or an ERC-20 contract: {p}"),
                )
            })?;
        }
        let currency = self.currency_or(plugin_currency);
        let Some(exponent) = crate::ledger::currency_exponent(currency) else {
            return Err(invalid(
                "crypto.currency",
                format!("{currency:?} is not an ISO 4217 currency"),
            ));
        };
        if self.decimals > 36 || self.decimals < exponent {
            return Err(invalid(
                "crypto.decimals",
                format!(
                    "{} must be {exponent}..=36 (at least {currency}'s minor-unit exponent)",
                    self.decimals
                ),
            ));
        }
        Ok(())
    }
}

fn default_currency() -> String {
    "USD".to_string()
}

fn default_rates() -> BTreeMap<String, RateConfig> {
    BTreeMap::from([(
        ANY_COUNTRY.to_string(),
        RateConfig {
            per_second_micro: 1_000,
            per_play_micro: 300_000,
        },
    )])
}

fn default_minimum_payout_minor() -> i64 {
    1000
}

impl Default for RoyaltyConfig {
    fn default() -> Self {
        RoyaltyConfig {
            currency: default_currency(),
            rates: default_rates(),
            minimum_payout_minor: default_minimum_payout_minor(),
            minimum_payout_minor_by_currency: BTreeMap::new(),
            withholding: WithholdingConfig::default(),
            crypto: None,
        }
    }
}

impl RoyaltyConfig {
    /// Checks every field; the node calls this at startup (and for `--check-config`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad field: a malformed or unknown (not ISO 4217)
    /// currency, a malformed country code, no `"*"` rate, a rate above [`MAX_RATE_MICRO`], a
    /// withholding rate above 10000 bps, a negative payout minimum.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.currency_code()?;
        if !self.rates.contains_key(ANY_COUNTRY) {
            return Err(invalid(
                "rates",
                "a \"*\" entry is required: the rate for countries not listed",
            ));
        }
        for (country, rate) in &self.rates {
            if country != ANY_COUNTRY {
                check_country(country).map_err(|p| invalid(format!("rates.{country}"), p))?;
            }
            for (name, value) in [
                ("per_second_micro", rate.per_second_micro),
                ("per_play_micro", rate.per_play_micro),
            ] {
                if value > MAX_RATE_MICRO {
                    return Err(invalid(
                        format!("rates.{country}.{name}"),
                        format!("{value} exceeds the maximum {MAX_RATE_MICRO}"),
                    ));
                }
            }
        }
        if self.minimum_payout_minor < 0 {
            return Err(invalid("minimum_payout_minor", "must not be negative"));
        }
        for (code, minimum) in &self.minimum_payout_minor_by_currency {
            let field = format!("minimum_payout_minor_by_currency.{code}");
            Currency::new(code).map_err(|e| invalid(&field, e.to_string()))?;
            if *minimum < 0 {
                return Err(invalid(field, "must not be negative"));
            }
        }
        let w = &self.withholding;
        for (country, bps) in &w.countries_bps {
            let field = format!("withholding.countries_bps.{country}");
            if country == "EU" {
                return Err(invalid(
                    field,
                    "EU is not a country: use withholding.eu_bps",
                ));
            }
            check_country(country).map_err(|p| invalid(&field, p))?;
            check_bps(&field, *bps)?;
        }
        check_bps("withholding.eu_bps", w.eu_bps)?;
        check_bps("withholding.default_bps", w.default_bps)?;
        if let Some(crypto) = &self.crypto {
            crypto.validate(&self.currency)?;
        }
        Ok(())
    }

    /// The validated currency of the play rates.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for `currency` if it is not an ISO 4217 code with a minor unit.
    pub fn currency_code(&self) -> Result<Currency, ConfigError> {
        Currency::new(&self.currency).map_err(|e| invalid("currency", e.to_string()))
    }

    /// The rate for viewers in `country`: its own entry, else the `"*"` entry (zero if a
    /// configuration that skipped [`RoyaltyConfig::validate`] lacks it).
    pub fn rate_for(&self, country: &str) -> RateConfig {
        self.rates
            .get(country)
            .or_else(|| self.rates.get(ANY_COUNTRY))
            .copied()
            .unwrap_or_default()
    }

    /// The payout threshold for balances in `currency`, in its minor units.
    pub fn minimum_payout_for(&self, currency: Currency) -> i64 {
        self.minimum_payout_minor_by_currency
            .get(currency.as_str())
            .copied()
            .unwrap_or(self.minimum_payout_minor)
    }
}

fn check_bps(field: &str, bps: u32) -> Result<(), ConfigError> {
    if bps > BPS_WHOLE {
        return Err(invalid(
            field,
            format!("{bps} basis points exceeds 10000 (100 %)"),
        ));
    }
    Ok(())
}

/// Checks an ISO 3166-1 alpha-2 code: two ASCII uppercase letters, with a pointed message for
/// the classic mistake `UK`.
pub(crate) fn check_country(code: &str) -> Result<(), String> {
    if code == "UK" {
        return Err("the ISO 3166 code for the United Kingdom is GB".to_string());
    }
    let b = code.as_bytes();
    if b.len() != 2 || !b.iter().all(u8::is_ascii_uppercase) {
        return Err(format!(
            "{code:?} is not a country code (two uppercase letters, ISO 3166-1 alpha-2)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: ConfigError) -> String {
        let ConfigError::Invalid { field, .. } = err;
        field
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = RoyaltyConfig::default();
        c.validate().unwrap();
        assert_eq!(c.currency_code().unwrap(), Currency::USD);
        assert_eq!(c.minimum_payout_minor, 1000);
        assert_eq!(c.rate_for("FR").per_play_micro, 300_000);
        assert_eq!(c.withholding.bps_for(Some("US")), 3000);
        assert_eq!(c.withholding.bps_for(Some("GB")), 2000);
        assert_eq!(c.withholding.bps_for(Some("CA")), 2500);
        assert_eq!(c.withholding.bps_for(Some("AU")), 3000);
        assert_eq!(c.withholding.bps_for(Some("JP")), 2042);
        for eu in EU_MEMBERS {
            assert_eq!(c.withholding.bps_for(Some(eu)), 1500, "{eu}");
        }
        assert_eq!(c.withholding.bps_for(Some("BR")), 0);
        assert_eq!(c.withholding.bps_for(None), 0);
    }

    #[test]
    fn unknown_currency_codes_are_refused_by_field() {
        let c = RoyaltyConfig {
            currency: "XYZ".into(),
            ..RoyaltyConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "plugins.royalty.currency: \"XYZ\" is not an ISO 4217 currency code"
        );
        let mut c = RoyaltyConfig::default();
        c.minimum_payout_minor_by_currency.insert("EUD".into(), 5);
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "minimum_payout_minor_by_currency.EUD"
        );
        for (code, exponent) in [("JPY", 0), ("EUR", 2), ("BHD", 3)] {
            let c = RoyaltyConfig {
                currency: code.into(),
                ..RoyaltyConfig::default()
            };
            c.validate().unwrap();
            assert_eq!(c.currency_code().unwrap().exponent(), exponent, "{code}");
        }
    }

    #[test]
    fn empty_table_deserializes_to_defaults() {
        let c: RoyaltyConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, RoyaltyConfig::default());
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let c: RoyaltyConfig = serde_json::from_str(
            r#"{"currency":"EUR","rates":{"*":{"per_play_micro":5},"FR":{"per_second_micro":7}},
                "withholding":{"countries_bps":{"FR":100},"default_bps":50}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.rate_for("FR"),
            RateConfig {
                per_second_micro: 7,
                per_play_micro: 0
            }
        );
        assert_eq!(c.rate_for("DE").per_play_micro, 5);
        // An explicit country beats the EU default; the replaced table drops the built-in US.
        assert_eq!(c.withholding.bps_for(Some("FR")), 100);
        assert_eq!(c.withholding.bps_for(Some("DE")), 1500);
        assert_eq!(c.withholding.bps_for(Some("US")), 50);
        assert!(serde_json::from_str::<RoyaltyConfig>(r#"{"curency":"EUR"}"#).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = RoyaltyConfig {
            currency: "usd".into(),
            ..RoyaltyConfig::default()
        };
        assert_eq!(field_of(c.validate().unwrap_err()), "currency");

        c.currency = "USD".into();
        c.rates.remove("*");
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string().starts_with("plugins.royalty.rates:"),
            "{err}"
        );

        c.rates = default_rates();
        c.rates.insert("fr".into(), RateConfig::default());
        assert_eq!(field_of(c.validate().unwrap_err()), "rates.fr");

        c.rates = default_rates();
        c.rates.insert(
            "FR".into(),
            RateConfig {
                per_second_micro: MAX_RATE_MICRO + 1,
                per_play_micro: 0,
            },
        );
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "rates.FR.per_second_micro"
        );

        c.rates = default_rates();
        c.minimum_payout_minor = -1;
        assert_eq!(field_of(c.validate().unwrap_err()), "minimum_payout_minor");

        c.minimum_payout_minor = 0;
        c.minimum_payout_minor_by_currency.insert("yen".into(), 1);
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "minimum_payout_minor_by_currency.yen"
        );

        c.minimum_payout_minor_by_currency.clear();
        c.withholding.countries_bps.insert("UK".into(), 2000);
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("GB"), "{err}");
        assert_eq!(field_of(err), "withholding.countries_bps.UK");

        c.withholding.countries_bps = BTreeMap::from([("EU".to_string(), 1)]);
        assert!(c.validate().unwrap_err().to_string().contains("eu_bps"));

        c.withholding.countries_bps = BTreeMap::from([("US".to_string(), 10_001)]);
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "withholding.countries_bps.US"
        );

        c.withholding.countries_bps.clear();
        c.withholding.eu_bps = 10_001;
        assert_eq!(field_of(c.validate().unwrap_err()), "withholding.eu_bps");
        c.withholding.eu_bps = 10_000;
        c.withholding.default_bps = 20_000;
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "withholding.default_bps"
        );
    }

    #[test]
    fn payout_minimum_per_currency() {
        let mut c = RoyaltyConfig::default();
        c.minimum_payout_minor_by_currency
            .insert("JPY".into(), 1500);
        c.validate().unwrap();
        assert_eq!(c.minimum_payout_for(Currency::new("JPY").unwrap()), 1500);
        assert_eq!(c.minimum_payout_for(Currency::USD), 1000);
    }
}
