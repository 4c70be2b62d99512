//! The framing every signed control-plane statement shares (node certificates, revocations): a
//! format byte, then the postcard encoding, decoded only within a size bound, to the last byte,
//! and only from the one canonical encoding, so one statement has one byte string.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// `format`, then the postcard encoding of `value`.
pub(crate) fn encode<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = vec![format];
    out.extend(postcard::to_allocvec(value).expect("control-plane statements serialise"));
    out
}

/// Decodes what [`encode`] wrote with `format`, refusing more than `max` bytes, another
/// format, trailing bytes and non-canonical encodings; the error says which, in words.
pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    format: u8,
    max: usize,
) -> Result<T, String> {
    if bytes.len() > max {
        return Err(format!("{} bytes", bytes.len()));
    }
    let Some((&found, body)) = bytes.split_first() else {
        return Err("empty".into());
    };
    if found != format {
        return Err(format!("unknown format {found}"));
    }
    let (value, rest): (T, _) = postcard::take_from_bytes(body).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes".into());
    }
    if encode(format, &value) != bytes {
        return Err("non-canonical encoding".into());
    }
    Ok(value)
}
