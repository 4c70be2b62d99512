//! Calendar months in UTC, with the civil-date arithmetic done by the `time` crate.
//!
//! Royalty periods are calendar months in UTC; times are milliseconds since the Unix epoch. This
//! file only maps between the two: month lengths, leap years and day numbers are `time`'s.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::Date;

use crate::utc::utc;

/// Milliseconds in a UTC day (no leap seconds in Unix time).
const MS_PER_DAY: u64 = 86_400_000;

/// Why a month could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonthError {
    /// The text is not `YYYY-MM`.
    #[error("invalid month {0:?}: expected YYYY-MM")]
    Syntax(String),
    /// Year outside 1970..=9999 or month outside 1..=12.
    #[error("month out of range: year {year}, month {month}")]
    OutOfRange {
        /// The year given.
        year: i64,
        /// The month given.
        month: i64,
    },
}

/// Milliseconds since the epoch at midnight UTC starting `date` (a date from 1970 on).
fn midnight_ms(date: Date) -> u64 {
    let secs = date.midnight().as_utc().unix_timestamp();
    // Dates before 1970 never reach here: every Month is 1970-01 or later.
    u64::try_from(secs).unwrap_or(0) * 1000
}

/// A calendar month in UTC, `1970-01` to `9999-12`. Serialized as `"YYYY-MM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: u16,
    month: u8,
}

impl Month {
    /// The month `year-month`.
    ///
    /// # Errors
    /// [`MonthError::OutOfRange`] unless `1970 <= year <= 9999` and `1 <= month <= 12`.
    pub fn new(year: i64, month: i64) -> Result<Self, MonthError> {
        let out_of_range = || MonthError::OutOfRange { year, month };
        if !(1970..=9999).contains(&year) {
            return Err(out_of_range());
        }
        let month = u8::try_from(month).map_err(|_| out_of_range())?;
        time::Month::try_from(month).map_err(|_| out_of_range())?;
        Ok(Month {
            year: year as u16,
            month,
        })
    }

    /// The month containing `time_ms` (milliseconds since the epoch, UTC). Times past
    /// [`MAX_TIME_MS`](crate::royalty::MAX_TIME_MS) map to `9999-12`.
    pub fn from_ms(time_ms: u64) -> Self {
        let t = utc(time_ms);
        Month {
            // 1970..=9999 by the clamp in `utc`.
            year: t.year() as u16,
            month: u8::from(t.month()),
        }
    }

    /// The year, 1970..=9999.
    pub fn year(&self) -> u16 {
        self.year
    }

    /// The month of the year, 1..=12.
    pub fn month(&self) -> u8 {
        self.month
    }

    /// The first and the last day of the month.
    fn days(&self) -> (Date, Date) {
        let year = i32::from(self.year);
        // `new` and `from_ms` only build valid months of years 1970..=9999.
        let month = time::Month::try_from(self.month).expect("month in 1..=12");
        let day = |d| Date::from_calendar_date(year, month, d).expect("a day of the month");
        (day(1), day(month.length(year)))
    }

    /// First millisecond of the month (midnight UTC on the 1st).
    pub fn start_ms(&self) -> u64 {
        midnight_ms(self.days().0)
    }

    /// First millisecond after the month (the next month's start); for `9999-12` the first
    /// millisecond of year 10000.
    pub fn end_ms(&self) -> u64 {
        // The day after the last: year 10000 is past `time`'s range, a millisecond count is not.
        midnight_ms(self.days().1) + MS_PER_DAY
    }

    /// Months since year 0: a dense, order-preserving number used in storage keys.
    pub(crate) fn index(&self) -> u32 {
        u32::from(self.year) * 12 + u32::from(self.month) - 1
    }

    /// Inverse of [`Month::index`]; `None` outside the supported range.
    pub(crate) fn from_index(index: u32) -> Option<Self> {
        Month::new(i64::from(index / 12), i64::from(index % 12) + 1).ok()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = MonthError;

    /// Parses exactly `YYYY-MM` (four digits, dash, two digits).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 7 || b[4] != b'-' || !digits(0..4) || !digits(5..7) {
            return Err(MonthError::Syntax(s.to_string()));
        }
        let year: i64 = s[0..4]
            .parse()
            .map_err(|_| MonthError::Syntax(s.to_string()))?;
        let month: i64 = s[5..7]
            .parse()
            .map_err(|_| MonthError::Syntax(s.to_string()))?;
        Month::new(year, month)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days since 1970-01-01 of a proleptic Gregorian date, by the `time` crate (the assertions
    /// below were written for the hand-written algorithm this file used to carry).
    fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let month = time::Month::try_from(month as u8).unwrap();
        let date = Date::from_calendar_date(year as i32, month, day as u8).unwrap();
        i64::from(date.to_julian_day() - UtcDateTime::UNIX_EPOCH.to_julian_day())
    }

    /// The date `(year, month, day)` of `days` since 1970-01-01, by the `time` crate.
    fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let julian = UtcDateTime::UNIX_EPOCH.to_julian_day() + days as i32;
        let date = Date::from_julian_day(julian).unwrap();
        (
            i64::from(date.year()),
            u32::from(u8::from(date.month())),
            u32::from(date.day()),
        )
    }

    use time::UtcDateTime;

    use crate::utc::{format_utc, MAX_TIME_MS};

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(2024, 3, 1), 19_783);
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }

    #[test]
    fn civil_round_trip_over_many_years() {
        // Every day from 1900 to 2500: each converts back, and consecutive days are consecutive
        // dates (so month lengths and leap years come out right).
        let first = days_from_civil(1900, 1, 1);
        let last = days_from_civil(2500, 12, 31);
        let mut prev = civil_from_days(first - 1);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let next_day = (y, m, d) == (prev.0, prev.1, prev.2 + 1);
            let next_month =
                d == 1 && ((y, m) == (prev.0, prev.1 + 1) || (m == 1 && y == prev.0 + 1));
            assert!(next_day || next_month, "{prev:?} -> {:?}", (y, m, d));
            if next_month {
                let leap = (prev.0 % 4 == 0 && prev.0 % 100 != 0) || prev.0 % 400 == 0;
                let expected = match prev.1 {
                    2 if leap => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                assert_eq!(prev.2, expected, "{prev:?}");
            }
            prev = (y, m, d);
        }
    }

    #[test]
    fn month_boundaries_in_ms() {
        let feb = Month::new(2024, 2).unwrap();
        assert_eq!(feb.start_ms(), 1_706_745_600_000); // 2024-02-01T00:00:00Z
        assert_eq!(feb.end_ms(), 1_709_251_200_000); // 2024-03-01T00:00:00Z
        assert_eq!(Month::from_ms(feb.start_ms()), feb);
        assert_eq!(Month::from_ms(feb.end_ms() - 1), feb);
        assert_eq!(Month::from_ms(feb.end_ms()), Month::new(2024, 3).unwrap());
        assert_eq!(Month::from_ms(0), Month::new(1970, 1).unwrap());
        let dec = Month::new(2023, 12).unwrap();
        assert_eq!(dec.end_ms(), Month::new(2024, 1).unwrap().start_ms());
        assert_eq!(Month::from_ms(u64::MAX), Month::new(9999, 12).unwrap());
        assert_eq!(Month::from_ms(MAX_TIME_MS), Month::new(9999, 12).unwrap());
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(format_utc(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn month_index_is_dense_and_ordered() {
        let a = Month::new(2023, 12).unwrap();
        let b = Month::new(2024, 1).unwrap();
        assert_eq!(a.index() + 1, b.index());
        assert!(a < b);
        assert_eq!(Month::from_index(b.index()), Some(b));
        assert_eq!(Month::from_index(0), None);
    }

    #[test]
    fn month_text() {
        let m: Month = "2025-03".parse().unwrap();
        assert_eq!((m.year(), m.month()), (2025, 3));
        assert_eq!(m.to_string(), "2025-03");
        for bad in [
            "2025-3",
            "2025/03",
            "25-03",
            "2025-03-01",
            "",
            "２０２５-03",
            "+025-03",
        ] {
            assert!(
                matches!(bad.parse::<Month>(), Err(MonthError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "2025-13".parse::<Month>(),
            Err(MonthError::OutOfRange { .. })
        ));
        assert!(matches!(
            "1969-12".parse::<Month>(),
            Err(MonthError::OutOfRange { .. })
        ));
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"2025-03\"");
        assert_eq!(serde_json::from_str::<Month>("\"2025-03\"").unwrap(), m);
    }
}
