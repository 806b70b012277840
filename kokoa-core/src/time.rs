//! Points in time: whole Unix seconds, shown as RFC 3339 (`2025-01-21T10:30:00Z`).

use std::{
    fmt,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// `0000-01-01T00:00:00Z`: RFC 3339 years have exactly four digits.
const MIN: i64 = -62_167_219_200;
/// `9999-12-31T23:59:59Z`.
const MAX: i64 = 253_402_300_799;
const DAY: i64 = 86_400;

/// A point in time in whole seconds since the Unix epoch (UTC), between the years 0000 and
/// 9999 so that it always has an RFC 3339 form.
///
/// The database stores [`as_unix`](Self::as_unix); the API shows the RFC 3339 form, which is
/// also how it is serialised.
///
/// ```
/// use kokoa_core::Timestamp;
///
/// let t = Timestamp::from_unix(1_737_455_400)?;
/// assert_eq!(t.to_string(), "2025-01-21T10:30:00Z");
/// assert_eq!("2025-01-21T19:30:00+09:00".parse::<Timestamp>()?, t);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time of the system clock (a clock before 1970 counts as 1970).
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self(i64::try_from(secs).unwrap_or(MAX).min(MAX))
    }

    /// The time `seconds` after the Unix epoch; an error outside the years 0000–9999.
    pub fn from_unix(seconds: i64) -> Result<Self, Error> {
        if (MIN..=MAX).contains(&seconds) {
            Ok(Self(seconds))
        } else {
            Err(Error::TimestampOutOfRange { seconds })
        }
    }

    /// Seconds since the Unix epoch.
    pub fn as_unix(self) -> i64 {
        self.0
    }

    /// The time `seconds` later (earlier when negative), held within the years 0000–9999.
    ///
    /// ```
    /// use kokoa_core::Timestamp;
    /// let t = Timestamp::from_unix(1_737_455_400)?;
    /// assert_eq!(t.plus_secs(30).to_string(), "2025-01-21T10:30:30Z");
    /// assert_eq!(t.plus_secs(-30).seconds_since(t), -30);
    /// # Ok::<(), kokoa_core::Error>(())
    /// ```
    pub fn plus_secs(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds).clamp(MIN, MAX))
    }

    /// Seconds from `earlier` to this time (negative when `earlier` is later).
    pub fn seconds_since(self, earlier: Self) -> i64 {
        self.0 - earlier.0
    }

    /// Parses RFC 3339: `YYYY-MM-DDTHH:MM:SS`, optional fraction (dropped), then `Z` or an
    /// offset `±HH:MM`. Leap seconds (`:60`) are not accepted.
    pub fn parse_rfc3339(input: &str) -> Result<Self, Error> {
        let fail = || Error::InvalidTimestamp {
            input: input.chars().take(100).collect(),
        };
        let b = input.as_bytes();
        if b.len() < 20 || !matches!(b[10], b'T' | b't') {
            return Err(fail());
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = b.get(range)?;
            digits.iter().try_fold(0, |n, d| {
                d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
            })
        };
        let seps_ok = b[4] == b'-' && b[7] == b'-' && b[13] == b':' && b[16] == b':';
        let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
            num(0..4),
            num(5..7),
            num(8..10),
            num(11..13),
            num(14..16),
            num(17..19),
        ) else {
            return Err(fail());
        };
        let date_ok = (1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day);
        if !seps_ok || !date_ok || hour > 23 || minute > 59 || second > 59 {
            return Err(fail());
        }
        let mut rest = &b[19..];
        if let Some(frac) = rest.strip_prefix(b".") {
            let digits = frac.iter().take_while(|d| d.is_ascii_digit()).count();
            if digits == 0 {
                return Err(fail());
            }
            rest = &frac[digits..];
        }
        let offset = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let two = |a: u8, b: u8| -> Option<i64> {
                    (a.is_ascii_digit() && b.is_ascii_digit())
                        .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
                };
                let (Some(h), Some(m)) = (two(*h1, *h2), two(*m1, *m2)) else {
                    return Err(fail());
                };
                if h > 23 || m > 59 {
                    return Err(fail());
                }
                let minutes = h * 60 + m;
                if *sign == b'+' { minutes } else { -minutes }
            }
            _ => return Err(fail()),
        };
        let local = days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second;
        Self::from_unix(local - offset * 60).map_err(|_| fail())
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
///
/// Counts in 400-year eras starting on 1 March, so the leap day is the last day of its
/// "year" and every era has the same 146 097 days.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.0.div_euclid(DAY));
        let secs = self.0.rem_euclid(DAY);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse_rfc3339(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_unix(s).unwrap()
    }

    #[test]
    fn formats_known_instants() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_737_455_400, "2025-01-21T10:30:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (MIN, "0000-01-01T00:00:00Z"),
            (MAX, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(ts(secs).to_string(), text);
            assert_eq!(text.parse::<Timestamp>().unwrap(), ts(secs), "{text}");
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let t = ts(1_737_455_400);
        for text in [
            "2025-01-21T10:30:00.999Z",
            "2025-01-21t10:30:00z",
            "2025-01-21T05:00:00-05:30",
            "2025-01-21T10:30:00+00:00",
        ] {
            assert_eq!(text.parse::<Timestamp>().unwrap(), t, "{text}");
        }
    }

    #[test]
    fn rejects_bad_text_naming_it() {
        for bad in [
            "",
            "2025-01-21",
            "2025-01-21 10:30:00Z",
            "2025-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2025-01-21T24:00:00Z",
            "2025-01-21T10:30:60Z",
            "2025-01-21T10:30:00",
            "2025-01-21T10:30:00.Z",
            "2025-01-21T10:30:00+0900",
            "+025-01-21T10:30:00Z",
            "0000-01-01T00:00:00+00:01",
        ] {
            let err = bad.parse::<Timestamp>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        let err = Timestamp::from_unix(MAX + 1).unwrap_err().to_string();
        assert!(err.contains(&(MAX + 1).to_string()), "{err}");
    }

    #[test]
    fn serde_uses_rfc3339() {
        let t = ts(1_737_455_400);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2025-01-21T10:30:00Z\""
        );
        assert_eq!(
            serde_json::from_str::<Timestamp>("\"2025-01-21T10:30:00Z\"").unwrap(),
            t
        );
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(Timestamp::now() > ts(1_735_689_600));
    }

    proptest! {
        #[test]
        fn format_and_parse_round_trip(secs in MIN..=MAX) {
            let text = ts(secs).to_string();
            prop_assert_eq!(text.len(), 20);
            prop_assert_eq!(text.parse::<Timestamp>().unwrap(), ts(secs));
        }

        #[test]
        fn days_agree_with_a_day_by_day_walk(days in -800_000i64..800_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
            let (y2, m2, d2) = civil_from_days(days + 1);
            let next = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            prop_assert_eq!((y2, m2, d2), next);
        }
    }
}
