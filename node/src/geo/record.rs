//! Decoding one database record into the few fields routing reads, borrowed from the database.
//!
//! The layout is detected per record, not per file, by the fields it has:
//!
//! - GeoIP2/GeoLite2 City and Country: `country.iso_code` (or `registered_country.iso_code`),
//!   `continent.code`, `location.latitude`/`longitude`, `city.names.en`;
//! - the flat ip-location-db / DB-IP lite layout: `country_code`, `latitude`, `longitude`,
//!   `city` (a string), plus `state1`, `postcode`, … which routing does not read.
//!
//! A serde visitor walks the record once, borrows strings from the database buffer and skips
//! every other field without expanding it, so a lookup allocates nothing. It is lenient about
//! types: a field of an unexpected type counts as absent instead of failing the lookup, and
//! coordinates may be doubles (GeoIP2) or floats (DB-IP lite stores `float`, which maxminddb's
//! typed `f64` decoding rejects) or integers.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::GeoRef;

/// The fields of one record that routing reads, as stored.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct RawRecord<'a> {
    country: Option<&'a str>,
    registered_country: Option<&'a str>,
    continent: Option<&'a str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    city: Option<&'a str>,
}

impl<'a> RawRecord<'a> {
    /// The validated view, or `None` when the record has none of the fields.
    pub(crate) fn into_geo(self) -> Option<GeoRef<'a>> {
        let code = |s: Option<&'a str>| {
            s.filter(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()))
        };
        // "ZZ" is the user-assigned ISO code databases use for "unknown".
        let known = |s: Option<&'a str>| code(s).filter(|c| !c.eq_ignore_ascii_case("ZZ"));
        let country = known(self.country).or(known(self.registered_country));
        let location = match (self.latitude, self.longitude) {
            (Some(lat), Some(lon))
                if lat.is_finite()
                    && lon.is_finite()
                    && lat.abs() <= 90.0
                    && lon.abs() <= 180.0 =>
            {
                Some((lat, lon))
            }
            _ => None,
        };
        let geo = GeoRef {
            country,
            continent: code(self.continent),
            location,
            city: self.city.filter(|c| !c.is_empty()),
        };
        let empty = geo.country.is_none()
            && geo.continent.is_none()
            && geo.location.is_none()
            && geo.city.is_none();
        (!empty).then_some(geo)
    }
}

impl<'de> de::Deserialize<'de> for RawRecord<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RecordVisitor)
    }
}

/// The top-level keys of either layout.
#[derive(Debug, Clone, Copy)]
enum Field {
    Country,
    RegisteredCountry,
    Continent,
    Location,
    City,
    CountryCode,
    ContinentCode,
    Latitude,
    Longitude,
    Other,
}

impl Field {
    fn from_key(key: &[u8]) -> Self {
        match key {
            b"country" => Self::Country,
            b"registered_country" => Self::RegisteredCountry,
            b"continent" => Self::Continent,
            b"location" => Self::Location,
            b"city" => Self::City,
            b"country_code" => Self::CountryCode,
            b"continent_code" => Self::ContinentCode,
            b"latitude" => Self::Latitude,
            b"longitude" => Self::Longitude,
            _ => Self::Other,
        }
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = RawRecord<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a geo record (map)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rec = RawRecord::default();
        while let Some(field) = map.next_key_seed(KeySeed(Field::from_key))? {
            match field {
                Field::Country => rec.country = map.next_value_seed(StrAt(&["iso_code"]))?,
                Field::RegisteredCountry => {
                    rec.registered_country = map.next_value_seed(StrAt(&["iso_code"]))?;
                }
                Field::Continent => rec.continent = map.next_value_seed(StrAt(&["code"]))?,
                Field::ContinentCode => rec.continent = map.next_value_seed(StrAt(&[]))?,
                Field::CountryCode => rec.country = map.next_value_seed(StrAt(&[]))?,
                // A map in GeoIP2, a string in the flat layout: `StrAt` takes either.
                Field::City => rec.city = map.next_value_seed(StrAt(&["names", "en"]))?,
                Field::Location => {
                    let (lat, lon) = map.next_value_seed(LocationSeed)?;
                    rec.latitude = lat;
                    rec.longitude = lon;
                }
                Field::Latitude => rec.latitude = map.next_value_seed(NumSeed)?,
                Field::Longitude => rec.longitude = map.next_value_seed(NumSeed)?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(rec)
    }
}

/// Reads a map key as raw bytes (maxminddb hands identifiers out without UTF-8 checks or
/// copies) and classifies it with the function.
struct KeySeed<F>(F);

impl<'de, T, F: FnOnce(&[u8]) -> T> DeserializeSeed<'de> for KeySeed<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<T, F: FnOnce(&[u8]) -> T> Visitor<'_> for KeySeed<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string map key")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<T, E> {
        Ok((self.0)(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v.as_bytes()))
    }
}

/// Reads and discards the rest of a sequence.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads and discards the rest of a map. A visitor must consume every entry: the decoder reads
/// the parent's next key where the child map's visitor stopped.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Visitor methods that accept any scalar of a type the field does not expect, as "absent".
macro_rules! absent_for_other_scalars {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
                Ok(Self::Value::default())
            }
        )*
    };
}

/// The string at `path` inside nested maps (empty path: the value itself). A string met before
/// the end of the path is taken too: the flat layout stores `city` as a string where GeoIP2 has
/// `city.names.en`.
struct StrAt(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for StrAt {
    type Value = Option<&'de str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrAt {
    type Value = Option<&'de str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string or a map holding {:?}", self.0)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    absent_for_other_scalars!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8]),
    );

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return drain_map(map).map(|()| None);
        };
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeySeed(|k: &[u8]| k == first.as_bytes()))? {
            if hit {
                found = map.next_value_seed(StrAt(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A coordinate: a double, a float, an integer or a numeric string.
struct NumSeed;

impl<'de> DeserializeSeed<'de> for NumSeed {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumSeed {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Self::Value, E> {
        Ok(Some(f64::from(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.trim().parse().ok())
    }

    absent_for_other_scalars!(
        visit_bool(bool),
        visit_i128(i128),
        visit_u128(u128),
        visit_bytes(&[u8]),
    );

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| None)
    }
}

/// GeoIP2's `location` map: `(latitude, longitude)`.
struct LocationSeed;

impl<'de> DeserializeSeed<'de> for LocationSeed {
    type Value = (Option<f64>, Option<f64>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Keys of the `location` map that matter.
#[derive(Debug, Clone, Copy)]
enum LocationKey {
    Latitude,
    Longitude,
    Other,
}

impl<'de> Visitor<'de> for LocationSeed {
    type Value = (Option<f64>, Option<f64>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a location map")
    }

    absent_for_other_scalars!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8]),
    );

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((None, None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| (None, None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut lat, mut lon) = (None, None);
        let classify = |k: &[u8]| match k {
            b"latitude" => LocationKey::Latitude,
            b"longitude" => LocationKey::Longitude,
            _ => LocationKey::Other,
        };
        while let Some(key) = map.next_key_seed(KeySeed(classify))? {
            match key {
                LocationKey::Latitude => lat = map.next_value_seed(NumSeed)?,
                LocationKey::Longitude => lon = map.next_value_seed(NumSeed)?,
                LocationKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((lat, lon))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use maxminddb::Reader;

    use super::super::mmdb_writer::{dbip_flat, geoip2_city, MmdbValue, MmdbWriter};
    use super::*;

    /// Writes `value` for 1.0.0.0/8 into a fresh database and decodes the record of 1.2.3.4.
    fn decode(value: MmdbValue) -> Result<Option<GeoRef<'static>>, maxminddb::MaxMindDbError> {
        let mut w = MmdbWriter::new("Test", 6);
        w.insert("1.0.0.0/8".parse().expect("net"), value);
        // Leaked so the borrowed view can be returned; a few bytes per test.
        let reader: &'static Reader<Vec<u8>> =
            Box::leak(Box::new(Reader::from_source(w.to_bytes()).expect("opens")));
        let ip: IpAddr = "1.2.3.4".parse().expect("ip");
        Ok(reader
            .lookup(ip)?
            .decode::<RawRecord<'_>>()?
            .and_then(RawRecord::into_geo))
    }

    #[test]
    fn geoip2_layout() {
        let geo = decode(geoip2_city("US", "NA", 37.751, -97.822, "Wichita"))
            .expect("decodes")
            .expect("record");
        assert_eq!(geo.country, Some("US"));
        assert_eq!(geo.continent, Some("NA"));
        assert_eq!(geo.location, Some((37.751, -97.822)));
        assert_eq!(geo.city, Some("Wichita"));
    }

    #[test]
    fn flat_layout_with_float_coordinates() {
        let geo = decode(dbip_flat("GB", 51.5143, -0.0912, "London"))
            .expect("decodes")
            .expect("record");
        assert_eq!(geo.country, Some("GB"));
        assert_eq!(geo.continent, None);
        let (lat, lon) = geo.location.expect("location");
        assert!((lat - 51.5143).abs() < 1e-4 && (lon + 0.0912).abs() < 1e-4);
        assert_eq!(geo.city, Some("London"));
    }

    #[test]
    fn country_only_and_registered_country_fallback() {
        let geo = decode(MmdbValue::map([("country_code", MmdbValue::from("se"))]))
            .expect("decodes")
            .expect("record");
        assert_eq!(geo.country, Some("se"), "as stored; GeoInfo uppercases");
        assert_eq!(geo.location, None);
        let registered = MmdbValue::map([(
            "registered_country",
            MmdbValue::map([("iso_code", MmdbValue::from("NL"))]),
        )]);
        let geo = decode(registered).expect("decodes").expect("record");
        assert_eq!(geo.country, Some("NL"));
        let unknown_then_registered = MmdbValue::map([
            (
                "country",
                MmdbValue::map([("iso_code", MmdbValue::from("ZZ"))]),
            ),
            (
                "registered_country",
                MmdbValue::map([("iso_code", MmdbValue::from("NL"))]),
            ),
        ]);
        let geo = decode(unknown_then_registered)
            .expect("decodes")
            .expect("record");
        assert_eq!(geo.country, Some("NL"));
    }

    #[test]
    fn odd_types_count_as_absent() {
        let odd = MmdbValue::map([
            ("country", MmdbValue::U32(840)),
            ("continent", MmdbValue::Array(vec![MmdbValue::from("EU")])),
            ("city", MmdbValue::map([("names", MmdbValue::U16(1))])),
            (
                "location",
                MmdbValue::map([
                    ("latitude", MmdbValue::I32(48)),
                    ("longitude", MmdbValue::from(" 2.5 ")),
                    ("extra", MmdbValue::map([("deep", MmdbValue::Bool(true))])),
                ]),
            ),
            (
                "zzz_after",
                MmdbValue::from("still parsed after odd fields"),
            ),
        ]);
        let geo = decode(odd).expect("decodes").expect("record");
        assert_eq!(geo.country, None);
        assert_eq!(geo.continent, None);
        assert_eq!(geo.city, None);
        assert_eq!(geo.location, Some((48.0, 2.5)));
    }

    #[test]
    fn invalid_values_are_dropped() {
        let bad = MmdbValue::map([
            ("country_code", MmdbValue::from("ZZ")),
            ("city", MmdbValue::from("")),
            ("latitude", MmdbValue::Double(91.0)),
            ("longitude", MmdbValue::Double(0.0)),
        ]);
        assert_eq!(decode(bad).expect("decodes"), None, "nothing usable");
        let long_code = MmdbValue::map([
            ("country_code", MmdbValue::from("USA")),
            ("latitude", MmdbValue::Double(f64::NAN)),
            ("longitude", MmdbValue::Double(1.0)),
        ]);
        assert_eq!(decode(long_code).expect("decodes"), None);
    }

    #[test]
    fn a_record_that_is_not_a_map_is_a_decoding_error() {
        let err = decode(MmdbValue::from("just a string")).expect_err("not a map");
        assert!(
            matches!(err, maxminddb::MaxMindDbError::Decoding { .. }),
            "{err:?}"
        );
    }
}
