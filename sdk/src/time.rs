//! Timestamps without a date library: what "changed since" APIs send and take.
//!
//! Connectors compare timestamps from APIs that write them with offsets
//! (`2024-10-01T08:00:00-04:00` is `2024-10-01T12:00:00Z`), so text order is
//! not time order: parse both sides with [`parse_rfc3339`] before comparing.
//! APIs that write `2024-10-01 12:00:00` (no offset, in UTC or in a zone of
//! their own) or Unix seconds are read and written by a [`TimeFormat`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp such as
/// `2024-10-01T12:00:00Z`, `2024-10-01T08:00:00.250-04:00` or (as some APIs
/// write it) with a space or a lowercase `t` between date and time. `None`
/// if the text is not one, including impossible dates like February 30.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let (local, rest) = parse_date_time(text.trim().as_bytes())?;
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let minutes = number(&[*h1, *h2])? * 60 + number(&[*m1, *m2])?;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    Some(local - offset_minutes * 60_000)
}

/// `YYYY-MM-DD HH:MM:SS[.fff...]` (`T`, `t` or a space between date and
/// time): the milliseconds since the epoch it would be in UTC, and the text
/// after it (an RFC 3339 offset, or nothing).
fn parse_date_time(b: &[u8]) -> Option<(i64, &[u8])> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = number(&b[0..4])?;
    let month = number(&b[5..7])?;
    let day = number(&b[8..10])?;
    let (hour, minute, second) = (
        number(&b[11..13])?,
        number(&b[14..16])?,
        number(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60 is a leap second; counting it as the next second's start is close enough.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (i, digit) in fraction[..digits].iter().enumerate().take(3) {
            millis += i64::from(digit - b'0') * [100, 10, 1][i];
        }
        rest = &fraction[digits..];
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some((seconds * 1_000 + millis, rest))
}

/// `2024-10-01T12:00:00Z`: the UTC RFC 3339 text of seconds since the Unix epoch.
pub fn format_rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// How an API writes its timestamps; [`TimeFormat::Rfc3339`] by default.
///
/// ```
/// use switchyard_sdk::time::TimeFormat;
///
/// // An API that writes its times in UTC+02:00, without saying so.
/// let format = TimeFormat::naive_at_offset(120);
/// assert_eq!(format.parse("2024-10-01 14:00:00"), Some(1_727_784_000_000));
/// assert_eq!(format.format(1_727_784_000), "2024-10-01 14:00:00");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339 with an offset, as [`parse_rfc3339`] reads it; written in
    /// UTC (`2024-10-01T12:00:00Z`).
    #[default]
    Rfc3339,
    /// `YYYY-MM-DD HH:MM:SS` (a `T` instead of the space and a fraction of
    /// a second are read too) with no offset in the text: the time is at
    /// `offset_minutes` east of UTC (0 for UTC, 120 for UTC+02:00, -300 for
    /// UTC-05:00). A zone with daylight saving time has no fixed offset:
    /// ask the API for UTC.
    Naive {
        /// Minutes east of UTC, from -1439 to 1439.
        offset_minutes: i32,
    },
    /// Whole seconds since the Unix epoch, as decimal text (`1727784000`).
    UnixSeconds,
    /// Milliseconds since the Unix epoch, as decimal text (`1727784000000`).
    UnixMillis,
}

impl TimeFormat {
    /// `YYYY-MM-DD HH:MM:SS` in UTC.
    pub fn naive_utc() -> Self {
        Self::Naive { offset_minutes: 0 }
    }

    /// `YYYY-MM-DD HH:MM:SS` at a fixed offset, in minutes east of UTC.
    pub fn naive_at_offset(offset_minutes: i32) -> Self {
        Self::Naive { offset_minutes }
    }

    /// Milliseconds since the Unix epoch of `text`; `None` if it is not a
    /// timestamp of this format (including impossible dates like February 30).
    pub fn parse(self, text: &str) -> Option<i64> {
        match self {
            Self::Rfc3339 => parse_rfc3339(text),
            Self::Naive { offset_minutes } => {
                if offset_minutes.abs() >= 1_440 {
                    return None;
                }
                let (local, rest) = parse_date_time(text.trim().as_bytes())?;
                if !rest.is_empty() {
                    return None;
                }
                Some(local - i64::from(offset_minutes) * 60_000)
            }
            Self::UnixSeconds => unix_number(text)?.checked_mul(1_000),
            Self::UnixMillis => unix_number(text),
        }
    }

    /// The text of `unix_secs` (seconds since the Unix epoch) in this format.
    pub fn format(self, unix_secs: i64) -> String {
        match self {
            Self::Rfc3339 => format_rfc3339(unix_secs),
            Self::Naive { offset_minutes } => {
                let local = unix_secs + i64::from(offset_minutes) * 60;
                let mut text = format_rfc3339(local);
                text.pop(); // the `Z`
                text.replace('T', " ")
            }
            Self::UnixSeconds => unix_secs.to_string(),
            Self::UnixMillis => unix_secs.saturating_mul(1_000).to_string(),
        }
    }
}

/// Decimal digits with an optional leading `-`, nothing else.
fn unix_number(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Seconds since the Unix epoch by the wall clock (the only clock a connector has).
pub fn now_unix_secs() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn number(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
    })
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-10-01T12:00:00Z", Some(1_727_784_000_000)),
            ("2024-10-01T08:00:00-04:00", Some(1_727_784_000_000)),
            ("2024-10-01T17:30:00+05:30", Some(1_727_784_000_000)),
            ("2024-10-01t12:00:00.25z", Some(1_727_784_000_250)),
            ("2024-10-01 12:00:00.123456Z", Some(1_727_784_000_123)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000)),
            ("1969-12-31T23:59:59Z", Some(-1_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-10-01T24:00:00Z", None),
            ("2024-10-01T12:00:00", None),
            ("2024-10-01T12:00:00.Z", None),
            ("2024-10-01T12:00:00+0400", None),
            ("2024-10-01", None),
            ("", None),
            ("now", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339(text), *expected, "{text}");
        }
    }

    #[test]
    fn parses_each_format() {
        let noon = Some(1_727_784_000_000);
        let cases: &[(TimeFormat, &str, Option<i64>)] = &[
            (TimeFormat::default(), "2024-10-01T12:00:00Z", noon),
            (TimeFormat::default(), "2024-10-01 12:00:00", None),
            (TimeFormat::naive_utc(), "2024-10-01 12:00:00", noon),
            (TimeFormat::naive_utc(), "2024-10-01T12:00:00", noon),
            (
                TimeFormat::naive_utc(),
                " 2024-10-01 12:00:00.250 ",
                Some(1_727_784_000_250),
            ),
            (TimeFormat::naive_utc(), "2024-10-01 12:00:00Z", None),
            (TimeFormat::naive_utc(), "2024-10-01 12:00:00+02:00", None),
            (TimeFormat::naive_utc(), "2024-10-01 12:00", None),
            (TimeFormat::naive_utc(), "2024-02-30 12:00:00", None),
            (
                TimeFormat::naive_at_offset(120),
                "2024-10-01 14:00:00",
                noon,
            ),
            (
                TimeFormat::naive_at_offset(-300),
                "2024-10-01 07:00:00",
                noon,
            ),
            (
                TimeFormat::naive_at_offset(330),
                "2024-10-01 17:30:00",
                noon,
            ),
            // Across midnight and a year's end.
            (
                TimeFormat::naive_at_offset(-60),
                "2023-12-31 23:00:00",
                Some(1_704_067_200_000),
            ),
            (
                TimeFormat::naive_at_offset(1_440),
                "2024-10-01 12:00:00",
                None,
            ),
            (TimeFormat::UnixSeconds, "1727784000", noon),
            (TimeFormat::UnixSeconds, "-1", Some(-1_000)),
            (TimeFormat::UnixSeconds, "1727784000.5", None),
            (TimeFormat::UnixSeconds, "+1", None),
            (TimeFormat::UnixSeconds, "", None),
            (TimeFormat::UnixMillis, "1727784000000", noon),
            (TimeFormat::UnixMillis, "2024-10-01T12:00:00Z", None),
        ];
        for (format, text, expected) in cases {
            assert_eq!(format.parse(text), *expected, "{format:?} {text:?}");
        }
    }

    #[test]
    fn formats_each_format_and_round_trips() {
        let cases: &[(TimeFormat, i64, &str)] = &[
            (TimeFormat::Rfc3339, 1_727_784_000, "2024-10-01T12:00:00Z"),
            (
                TimeFormat::naive_utc(),
                1_727_784_000,
                "2024-10-01 12:00:00",
            ),
            (
                TimeFormat::naive_at_offset(120),
                1_727_784_000,
                "2024-10-01 14:00:00",
            ),
            (
                TimeFormat::naive_at_offset(-300),
                1_727_784_000,
                "2024-10-01 07:00:00",
            ),
            (
                TimeFormat::naive_at_offset(-60),
                1_704_067_200,
                "2023-12-31 23:00:00",
            ),
            (TimeFormat::UnixSeconds, 1_727_784_000, "1727784000"),
            (TimeFormat::UnixMillis, 1_727_784_000, "1727784000000"),
        ];
        for (format, secs, text) in cases {
            assert_eq!(format.format(*secs), *text, "{format:?}");
            assert_eq!(format.parse(text), Some(secs * 1_000), "{format:?}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_727_784_000), "2024-10-01T12:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        for secs in [0, 951_782_400, 1_709_164_800, 4_102_444_800, -86_400 * 800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Some(secs * 1000));
        }
        assert!(now_unix_secs() > 1_700_000_000);
    }
}
