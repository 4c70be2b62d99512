//! Serde helper for fixed byte arrays: lowercase hex for human-readable formats (JSON),
//! a plain fixed-length tuple of bytes otherwise (postcard: exactly `N` bytes, no prefix).

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};

/// Serializes `[u8; N]` as hex (human-readable) or an `N`-tuple of bytes.
pub(crate) fn serialize<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex::encode(bytes))
    } else {
        let mut tuple = serializer.serialize_tuple(N)?;
        for b in bytes {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }
}

/// Deserializes what [`serialize`] writes.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(HexVisitor::<N>)
    } else {
        deserializer.deserialize_tuple(N, TupleVisitor::<N>)
    }
}

struct HexVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for HexVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a hex string of {} digits", N * 2)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut out = [0u8; N];
        hex::decode_to_slice(v, &mut out)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))?;
        Ok(out)
    }
}

struct TupleVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for TupleVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; N];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrap {
        #[serde(with = "super")]
        a: [u8; 4],
        #[serde(with = "super")]
        b: [u8; 64],
    }

    #[test]
    fn json_is_hex_postcard_is_raw() {
        let w = Wrap {
            a: [0xde, 0xad, 0xbe, 0xef],
            b: [0xab; 64],
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            format!("{{\"a\":\"deadbeef\",\"b\":\"{}\"}}", "ab".repeat(64))
        );
        assert_eq!(serde_json::from_str::<Wrap>(&json).unwrap(), w);

        let bytes = postcard::to_allocvec(&w).unwrap();
        assert_eq!(bytes.len(), 68);
        assert_eq!(&bytes[..4], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(postcard::from_bytes::<Wrap>(&bytes).unwrap(), w);
        assert!(postcard::from_bytes::<Wrap>(&bytes[..67]).is_err());
    }

    #[test]
    fn bad_hex_rejected() {
        let b = "ab".repeat(64);
        for a in ["dead", "deadbeefff", "xxxxxxxx", ""] {
            let json = format!("{{\"a\":\"{a}\",\"b\":\"{b}\"}}");
            assert!(serde_json::from_str::<Wrap>(&json).is_err(), "{a}");
        }
    }
}
