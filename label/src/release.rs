//! Releases: what an artist asks to release (`POST releases`, [`NewRelease`]) and what the
//! label stores once identifiers are assigned ([`Release`]).

use serde::{Deserialize, Serialize};

use crate::ids::{Icpn, Isrc};

/// Most tracks in one release (a long album or a compilation).
pub const MAX_TRACKS: usize = 100;
/// Most territories a release lists.
pub const MAX_TERRITORIES: usize = 300;
/// Most deals a release lists.
pub const MAX_DEALS: usize = 16;
/// Longest free text (titles, names, lines) in bytes.
pub const MAX_TEXT_BYTES: usize = 500;

/// A release as an artist asks for it. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    /// The artist id the tracks were published under.
    pub artist: String,
    /// Release title.
    pub title: String,
    /// Label name shown on the release.
    pub label: String,
    /// Genre.
    pub genre: String,
    /// `YYYY-MM-DD`; deals start on it.
    pub release_date: String,
    /// `["Worldwide"]` or ISO 3166-1 alpha-2 codes.
    pub territories: Vec<String>,
    /// ℗ line, e.g. `2026 MHC Records` (a leading year is the line's year).
    pub p_line: String,
    /// © line.
    pub c_line: String,
    /// Display artist of the release. Default: `artist`.
    #[serde(default)]
    pub display_artist: Option<String>,
    /// An existing UPC/EAN to use instead of assigning one (checked).
    #[serde(default)]
    pub upc: Option<String>,
    /// Price and deal terms. Default: the label's `default_deals`.
    #[serde(default)]
    pub deals: Option<Vec<Deal>>,
    /// The tracks, in order.
    pub tracks: Vec<NewTrack>,
}

/// A track of a [`NewRelease`]: a published content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTrack {
    /// The published content id.
    pub content_id: String,
    /// Track title. Default: the manifest's title.
    #[serde(default)]
    pub title: Option<String>,
    /// Display artist. Default: the release's.
    #[serde(default)]
    pub display_artist: Option<String>,
    /// An existing ISRC to use instead of assigning one (checked).
    #[serde(default)]
    pub isrc: Option<String>,
}

/// Commercial terms: a DDEX commercial model, the uses it allows, an optional wholesale price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deal {
    /// One of [`COMMERCIAL_MODELS`].
    pub commercial_model: String,
    /// Some of [`USE_TYPES`].
    pub use_types: Vec<String>,
    /// Wholesale price of the release.
    #[serde(default)]
    pub price: Option<Price>,
}

/// A price: a decimal amount and an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Decimal, e.g. `"7.99"`.
    pub amount: String,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
}

/// The DDEX commercial models a deal may name.
pub const COMMERCIAL_MODELS: [&str; 4] = [
    "SubscriptionModel",
    "AdvertisementSupportedModel",
    "PayAsYouGoModel",
    "FreeOfChargeModel",
];

/// The DDEX use types a deal may name.
pub const USE_TYPES: [&str; 5] = [
    "OnDemandStream",
    "NonInteractiveStream",
    "PermanentDownload",
    "ConditionalDownload",
    "Stream",
];

impl Deal {
    /// Subscription and ad-supported on-demand streaming, no price: what a streaming
    /// service needs.
    pub fn default_streaming() -> Vec<Deal> {
        ["SubscriptionModel", "AdvertisementSupportedModel"]
            .into_iter()
            .map(|model| Deal {
                commercial_model: model.into(),
                use_types: vec!["OnDemandStream".into(), "NonInteractiveStream".into()],
                price: None,
            })
            .collect()
    }

    /// Checks the model, the uses and the price.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn validate(&self) -> Result<(), String> {
        if !COMMERCIAL_MODELS.contains(&self.commercial_model.as_str()) {
            return Err(format!(
                "commercial_model {:?} is not one of {}",
                self.commercial_model,
                COMMERCIAL_MODELS.join(", ")
            ));
        }
        if self.use_types.is_empty() {
            return Err("use_types is empty".into());
        }
        for u in &self.use_types {
            if !USE_TYPES.contains(&u.as_str()) {
                return Err(format!(
                    "use_types: {u:?} is not one of {}",
                    USE_TYPES.join(", ")
                ));
            }
        }
        if let Some(price) = &self.price {
            let decimal = price.amount.split_once('.').map_or(
                !price.amount.is_empty() && price.amount.len() <= 12,
                |(units, cents)| {
                    !units.is_empty() && units.len() <= 12 && (1..=4).contains(&cents.len())
                },
            ) && price
                .amount
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.');
            if !decimal {
                return Err(format!(
                    "price.amount {:?} is not a decimal amount like \"7.99\"",
                    price.amount
                ));
            }
            if price.currency.len() != 3 || !price.currency.bytes().all(|b| b.is_ascii_uppercase())
            {
                return Err(format!(
                    "price.currency {:?} is not an ISO 4217 code like \"EUR\"",
                    price.currency
                ));
            }
        }
        Ok(())
    }
}

/// A DSP's name in config and routes: 1..=32 of `a-z 0-9 _ -`.
///
/// # Errors
/// What is wrong, in words.
pub fn check_dsp_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!("DSP name {name:?} must be 1..=32 of a-z 0-9 _ -"));
    }
    Ok(())
}

/// Checks a free-text field: 1..=[`MAX_TEXT_BYTES`] bytes, no control characters, not blank.
///
/// # Errors
/// `<field>: <problem>`.
pub fn check_text(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field}: is empty"));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(format!("{field}: longer than {MAX_TEXT_BYTES} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field}: has a control character"));
    }
    Ok(())
}

/// Parses `YYYY-MM-DD` into (year, month, day), checking the calendar.
///
/// # Errors
/// What is wrong, in words.
pub fn parse_date(value: &str) -> Result<(u16, u8, u8), String> {
    let bad = || format!("{value:?} is not a date YYYY-MM-DD");
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let year: u16 = value[..4].parse().map_err(|_| bad())?;
    let month: u8 = value[5..7].parse().map_err(|_| bad())?;
    let day: u8 = value[8..].parse().map_err(|_| bad())?;
    let month_t = time::Month::try_from(month).map_err(|_| bad())?;
    time::Date::from_calendar_date(i32::from(year), month_t, day).map_err(|_| bad())?;
    if year < 1900 {
        return Err(bad());
    }
    Ok((year, month, day))
}

/// The year a ℗/© line names (its leading four digits), else `fallback`.
pub fn line_year(line: &str, fallback: u16) -> u16 {
    line.get(..4)
        .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|y| y.parse().ok())
        .unwrap_or(fallback)
}

impl NewRelease {
    /// Checks every field but the tracks' content (which the plugin checks against the
    /// catalog and the takedown list).
    ///
    /// # Errors
    /// `<field>: <problem>`.
    pub fn validate(&self) -> Result<(), String> {
        check_text("artist", &self.artist)?;
        check_text("title", &self.title)?;
        check_text("label", &self.label)?;
        check_text("genre", &self.genre)?;
        check_text("p_line", &self.p_line)?;
        check_text("c_line", &self.c_line)?;
        if let Some(d) = &self.display_artist {
            check_text("display_artist", d)?;
        }
        parse_date(&self.release_date).map_err(|p| format!("release_date: {p}"))?;
        if self.territories.is_empty() || self.territories.len() > MAX_TERRITORIES {
            return Err(format!(
                "territories: must list 1..={MAX_TERRITORIES} territories"
            ));
        }
        let worldwide = self.territories.iter().any(|t| t == "Worldwide");
        if worldwide && self.territories.len() > 1 {
            return Err("territories: \"Worldwide\" stands alone".into());
        }
        for t in &self.territories {
            if t != "Worldwide" && (t.len() != 2 || !t.bytes().all(|b| b.is_ascii_uppercase())) {
                return Err(format!(
                    "territories: {t:?} is neither \"Worldwide\" nor an ISO 3166-1 alpha-2 code"
                ));
            }
        }
        if let Some(upc) = &self.upc {
            Icpn::parse(upc).map_err(|e| format!("upc: {e}"))?;
        }
        if let Some(deals) = &self.deals {
            if deals.is_empty() || deals.len() > MAX_DEALS {
                return Err(format!("deals: must list 1..={MAX_DEALS} deals"));
            }
            for (i, d) in deals.iter().enumerate() {
                d.validate().map_err(|p| format!("deals[{i}].{p}"))?;
            }
        }
        if self.tracks.is_empty() || self.tracks.len() > MAX_TRACKS {
            return Err(format!("tracks: must list 1..={MAX_TRACKS} tracks"));
        }
        for (i, t) in self.tracks.iter().enumerate() {
            if let Some(title) = &t.title {
                check_text(&format!("tracks[{i}].title"), title)?;
            }
            if let Some(d) = &t.display_artist {
                check_text(&format!("tracks[{i}].display_artist"), d)?;
            }
            if let Some(isrc) = &t.isrc {
                Isrc::parse(isrc).map_err(|e| format!("tracks[{i}].isrc: {e}"))?;
            }
            if self.tracks[..i]
                .iter()
                .any(|other| other.content_id == t.content_id)
            {
                return Err(format!(
                    "tracks[{i}].content_id: {:?} is listed twice",
                    t.content_id
                ));
            }
        }
        Ok(())
    }
}

/// A release as stored: identifiers assigned, tracks resolved against the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// `rel-<n>`.
    pub id: String,
    /// The artist id.
    pub artist: String,
    /// Title.
    pub title: String,
    /// Display artist.
    pub display_artist: String,
    /// Label name.
    pub label: String,
    /// Genre.
    pub genre: String,
    /// `YYYY-MM-DD`.
    pub release_date: String,
    /// Territories.
    pub territories: Vec<String>,
    /// ℗ line.
    pub p_line: String,
    /// © line.
    pub c_line: String,
    /// The release's UPC (or imported EAN).
    pub upc: Icpn,
    /// Deals.
    pub deals: Vec<Deal>,
    /// Tracks, in order.
    pub tracks: Vec<Track>,
    /// When it was created, Unix ms.
    pub created_ms: u64,
}

/// A track of a stored release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// The published content id.
    pub content_id: String,
    /// Its ISRC.
    pub isrc: Isrc,
    /// Title.
    pub title: String,
    /// Display artist.
    pub display_artist: String,
    /// Duration from the manifest, ms.
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn night_ep() -> NewRelease {
        serde_json::from_str(
            r#"{"artist": "ada", "title": "Night EP", "label": "MHC Records", "genre": "Electronic",
            "release_date": "2026-12-04", "territories": ["Worldwide"], "p_line": "2026 MHC Records",
            "c_line": "2026 MHC Records", "tracks": [{"content_id": "night-drive", "title": "Night Drive"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_issue_example_parses_and_validates() {
        night_ep().validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = serde_json::from_str::<NewRelease>(
            r#"{"artist": "ada", "titel": "x", "title": "t", "label": "l", "genre": "g",
            "release_date": "2026-12-04", "territories": ["FR"], "p_line": "p", "c_line": "c",
            "tracks": []}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `titel`"), "{err}");
        let err =
            serde_json::from_str::<NewTrack>(r#"{"content_id": "a", "isrcs": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `isrcs`"), "{err}");
    }

    #[test]
    fn bad_fields_are_named() {
        type Change = fn(&mut NewRelease);
        let cases: Vec<(Change, &str)> = vec![
            (|r| r.release_date = "2026-02-30".into(), "release_date"),
            (|r| r.territories = vec!["fr".into()], "territories"),
            (
                |r| r.territories = vec!["Worldwide".into(), "FR".into()],
                "territories",
            ),
            (|r| r.upc = Some("036000291453".into()), "upc"),
            (|r| r.title = " ".into(), "title"),
            (|r| r.tracks.clear(), "tracks"),
            (
                |r| r.tracks.push(r.tracks[0].clone()),
                "tracks[1].content_id",
            ),
            (
                |r| r.tracks[0].isrc = Some("USMHC26000001".into()),
                "tracks[0].isrc",
            ),
            (
                |r| {
                    r.deals = Some(vec![Deal {
                        commercial_model: "Gratis".into(),
                        use_types: vec!["OnDemandStream".into()],
                        price: None,
                    }])
                },
                "deals[0].commercial_model",
            ),
            (
                |r| {
                    r.deals = Some(vec![Deal {
                        commercial_model: "PayAsYouGoModel".into(),
                        use_types: vec!["PermanentDownload".into()],
                        price: Some(Price {
                            amount: "7,99".into(),
                            currency: "EUR".into(),
                        }),
                    }])
                },
                "deals[0].price.amount",
            ),
        ];
        for (change, field) in cases {
            let mut r = night_ep();
            change(&mut r);
            let err = r.validate().unwrap_err();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn line_years() {
        assert_eq!(line_year("2026 MHC Records", 2000), 2026);
        assert_eq!(line_year("MHC Records", 2000), 2000);
    }
}
