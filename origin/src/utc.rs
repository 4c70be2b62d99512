//! Unix milliseconds as UTC dates and times, through the `time` crate: the one place the origin
//! turns a millisecond count into a calendar date (royalty months, statement and ledger times).

use time::UtcDateTime;

/// Latest time the origin dates: 9999-12-31T23:59:59.999Z. Statements and exports print
/// four-digit years, a time past this is a unit mistake (seconds vs. microseconds), not a real
/// date, and it is the last millisecond `time` represents without its `large-dates` feature.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// The UTC date and time of `time_ms` (milliseconds since the epoch); times past
/// [`MAX_TIME_MS`] are that time.
pub(crate) fn utc(time_ms: u64) -> UtcDateTime {
    let nanos = i128::from(time_ms.min(MAX_TIME_MS)) * 1_000_000;
    // 0..=MAX_TIME_MS is 1970-01-01..=9999-12-31, inside `time`'s range.
    UtcDateTime::from_unix_timestamp_nanos(nanos).expect("clamped time is within 1970..=9999")
}

/// Formats `time_ms` as an RFC 3339 UTC timestamp with second precision,
/// e.g. `2025-03-01T12:00:00Z` (times past [`MAX_TIME_MS`] print as that time).
pub fn format_utc(time_ms: u64) -> String {
    let t = utc(time_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `time_ms` as ISO 8601 UTC with milliseconds, e.g. `2024-03-01T12:34:56.789Z` (times past
/// [`MAX_TIME_MS`] print as that time).
pub(crate) fn format_utc_millis(time_ms: u64) -> String {
    let t = utc(time_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_precisions() {
        assert_eq!(format_utc(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(
            format_utc_millis(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(format_utc_millis(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(utc(MAX_TIME_MS).year(), 9999);
    }
}
