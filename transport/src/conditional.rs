//! RFC 9110 validators and byte ranges for immutable, content-addressed resources.
//!
//! Segments and manifests are named by their BLAKE3 hash, so every representation has one strong
//! entity tag that never changes. That makes the conditional-request logic small: `If-None-Match`
//! compares tags, `If-Range` decides whether a `Range` is honoured, and `Range` is parsed into at
//! most one satisfiable byte interval.

use std::ops::Range;

/// What a `Range` request header asks of a representation of a known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable `Range`: send the whole representation with `200`.
    ///
    /// Also the answer for syntax the server may ignore (RFC 9110 §14.2): unknown units, malformed
    /// specs and multiple ranges (players ask for one; multipart responses buy them nothing).
    Full,
    /// One satisfiable range: send `206` with `Content-Range: bytes start-end/len`.
    Partial(Range<u64>),
    /// A well-formed range that does not overlap the representation: send `416` with
    /// `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Longest `Range` header value looked at; longer values are ignored (served in full).
const MAX_RANGE_HEADER_LEN: usize = 256;

/// Interprets a `Range` header value for a representation of `len` bytes.
///
/// ```
/// use mhc_transport::{parse_range, RangeOutcome};
/// assert_eq!(parse_range("bytes=0-99", 1000), RangeOutcome::Partial(0..100));
/// assert_eq!(parse_range("bytes=-100", 1000), RangeOutcome::Partial(900..1000));
/// assert_eq!(parse_range("bytes=1000-", 1000), RangeOutcome::Unsatisfiable);
/// ```
pub fn parse_range(header: &str, len: u64) -> RangeOutcome {
    if header.len() > MAX_RANGE_HEADER_LEN {
        return RangeOutcome::Full;
    }
    let Some((unit, set)) = header.split_once('=') else {
        return RangeOutcome::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    let specs: Vec<&str> = set.split(',').map(str::trim).collect();
    if specs.len() != 1 {
        return RangeOutcome::Full;
    }
    let spec = specs[0];
    let Some((first, last)) = spec.split_once('-') else {
        return RangeOutcome::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // suffix-range: the last N bytes.
        let Some(suffix) = parse_digits(last) else {
            return RangeOutcome::Full;
        };
        if suffix == 0 || len == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        return RangeOutcome::Partial(len.saturating_sub(suffix)..len);
    }
    let Some(start) = parse_digits(first) else {
        return RangeOutcome::Full;
    };
    let end_inclusive = if last.is_empty() {
        None
    } else {
        match parse_digits(last) {
            Some(end) if end >= start => Some(end),
            // `last-pos < first-pos` is invalid syntax, which the server ignores.
            _ => return RangeOutcome::Full,
        }
    };
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    let end = end_inclusive.map_or(len, |e| e.saturating_add(1).min(len));
    RangeOutcome::Partial(start..end)
}

/// `Content-Range` value for a `206` of `range` out of `len` bytes.
pub fn content_range(range: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{}", range.start, range.end - 1, len)
}

/// `Content-Range` value for a `416` on a representation of `len` bytes.
pub fn unsatisfied_range(len: u64) -> String {
    format!("bytes */{len}")
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether an `If-None-Match` header value matches the strong entity tag `etag` (given with its
/// quotes, e.g. `"ab12…"`), using the weak comparison RFC 9110 §13.1.2 prescribes.
pub fn if_none_match_matches(header: &str, etag: &str) -> bool {
    let header = header.trim();
    if header == "*" {
        return true;
    }
    let wanted = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == wanted)
}

/// Whether an `If-Range` header value still names the current representation, so that the
/// `Range` may be honoured. Only a strong, exactly equal entity tag qualifies (RFC 9110 §13.1.5);
/// dates are never strong validators for us, so a date means "send it all".
pub fn if_range_matches(header: &str, etag: &str) -> bool {
    let header = header.trim();
    !header.starts_with("W/") && header == etag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_per_rfc_9110() {
        let len = 10_000;
        assert_eq!(
            parse_range("bytes=0-499", len),
            RangeOutcome::Partial(0..500)
        );
        assert_eq!(
            parse_range("bytes=500-999", len),
            RangeOutcome::Partial(500..1000)
        );
        assert_eq!(
            parse_range("bytes=-500", len),
            RangeOutcome::Partial(9500..10_000)
        );
        assert_eq!(
            parse_range("bytes=9500-", len),
            RangeOutcome::Partial(9500..10_000)
        );
        assert_eq!(parse_range("bytes=0-0", len), RangeOutcome::Partial(0..1));
        assert_eq!(
            parse_range("bytes=-1", len),
            RangeOutcome::Partial(9999..10_000)
        );
        // End past the length is clamped.
        assert_eq!(
            parse_range("bytes=9000-20000", len),
            RangeOutcome::Partial(9000..10_000)
        );
        // Suffix longer than the representation is the whole thing.
        assert_eq!(
            parse_range("bytes=-20000", len),
            RangeOutcome::Partial(0..10_000)
        );
        assert_eq!(parse_range("BYTES = 1-2", len), RangeOutcome::Partial(1..3));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(
            parse_range("bytes=10000-", 10_000),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=20000-30000", 10_000),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 10_000), RangeOutcome::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeOutcome::Unsatisfiable);
    }

    #[test]
    fn ignorable_ranges_serve_everything() {
        for h in [
            "",
            "bytes",
            "items=0-1",
            "bytes=abc",
            "bytes=5-1",
            "bytes=0-1,5-6",
            "bytes=--1",
            "bytes=1-2-3",
            "bytes=99999999999999999999-",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(h, 100), RangeOutcome::Full, "{h:?}");
        }
        assert_eq!(
            parse_range(&"bytes=1-2".repeat(100), 100),
            RangeOutcome::Full
        );
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(&(0..500), 10_000), "bytes 0-499/10000");
        assert_eq!(unsatisfied_range(10_000), "bytes */10000");
    }

    #[test]
    fn entity_tags() {
        let etag = "\"abc\"";
        assert!(if_none_match_matches("\"abc\"", etag));
        assert!(if_none_match_matches("W/\"abc\"", etag));
        assert!(if_none_match_matches("\"x\", \"abc\"", etag));
        assert!(if_none_match_matches("*", etag));
        assert!(!if_none_match_matches("\"abd\"", etag));
        assert!(!if_none_match_matches("abc", etag));
        assert!(if_range_matches("\"abc\"", etag));
        assert!(!if_range_matches("W/\"abc\"", etag));
        assert!(!if_range_matches("Tue, 15 Nov 1994 08:12:31 GMT", etag));
    }
}
