//! Content identifiers and the 32-byte hash type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 32-byte digest (BLAKE3 output, Merkle node, ed25519 public key).
pub type Hash32 = [u8; 32];

/// Maximum length of a [`ContentId`] in bytes.
pub const MAX_CONTENT_ID_LEN: usize = 64;

/// Why a string is not a valid [`ContentId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContentId {
    /// The id is the empty string.
    #[error("content id is empty")]
    Empty,
    /// The id is longer than [`MAX_CONTENT_ID_LEN`] bytes.
    #[error("content id is {len} bytes long; at most {MAX_CONTENT_ID_LEN} allowed")]
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
    },
    /// The first character is not `a-z` or `0-9`.
    #[error("content id must start with a-z or 0-9, found {found:?}")]
    BadFirstChar {
        /// The offending character.
        found: char,
    },
    /// A character other than `a-z`, `0-9`, `_` or `-`.
    #[error(
        "content id may contain only a-z, 0-9, '_' and '-'; found {found:?} at byte {position}"
    )]
    BadChar {
        /// The offending character.
        found: char,
        /// Its byte offset in the id.
        position: usize,
    },
}

/// A content slug: `[a-z0-9][a-z0-9_-]{0,63}`, safe in URL paths and file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentId(String);

impl ContentId {
    /// Validates and wraps a content slug.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidContentId`] unless the string matches `[a-z0-9][a-z0-9_-]{0,63}`.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidContentId> {
        let id = id.into();
        validate(&id)?;
        Ok(Self(id))
    }

    /// The slug as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(id: &str) -> Result<(), InvalidContentId> {
    if id.is_empty() {
        return Err(InvalidContentId::Empty);
    }
    if id.len() > MAX_CONTENT_ID_LEN {
        return Err(InvalidContentId::TooLong { len: id.len() });
    }
    for (position, found) in id.char_indices() {
        let ok = match found {
            'a'..='z' | '0'..='9' => true,
            '_' | '-' => position != 0,
            _ => false,
        };
        if !ok {
            return Err(if position == 0 {
                InvalidContentId::BadFirstChar { found }
            } else {
                InvalidContentId::BadChar { found, position }
            });
        }
    }
    Ok(())
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ContentId {
    type Err = InvalidContentId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ContentId {
    type Error = InvalidContentId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ContentId> for String {
    fn from(id: ContentId) -> Self {
        id.0
    }
}

impl AsRef<str> for ContentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_slugs() {
        for s in ["a", "0", "abc-def_1", "9lives", &"a".repeat(64)] {
            let id = ContentId::new(s).unwrap();
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
            assert_eq!(s.parse::<ContentId>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_invalid_slugs() {
        assert_eq!(ContentId::new(""), Err(InvalidContentId::Empty));
        assert_eq!(
            ContentId::new("a".repeat(65)),
            Err(InvalidContentId::TooLong { len: 65 })
        );
        assert_eq!(
            ContentId::new("-abc"),
            Err(InvalidContentId::BadFirstChar { found: '-' })
        );
        assert_eq!(
            ContentId::new("_abc"),
            Err(InvalidContentId::BadFirstChar { found: '_' })
        );
        assert_eq!(
            ContentId::new("Abc"),
            Err(InvalidContentId::BadFirstChar { found: 'A' })
        );
        assert_eq!(
            ContentId::new("ab/c"),
            Err(InvalidContentId::BadChar {
                found: '/',
                position: 2
            })
        );
        assert_eq!(
            ContentId::new("ab.."),
            Err(InvalidContentId::BadChar {
                found: '.',
                position: 2
            })
        );
        assert!(ContentId::new("abé").is_err());
        assert!(ContentId::new("a b").is_err());
        assert!(ContentId::new("abC").is_err());
    }

    #[test]
    fn serde_validates() {
        let id = ContentId::new("song-1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"song-1\"");
        assert_eq!(serde_json::from_str::<ContentId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ContentId>("\"../etc\"").is_err());
        assert!(serde_json::from_str::<ContentId>("\"\"").is_err());

        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<ContentId>(&bytes).unwrap(), id);
        let bad = postcard::to_allocvec("Bad").unwrap();
        assert!(postcard::from_bytes::<ContentId>(&bad).is_err());
    }
}
