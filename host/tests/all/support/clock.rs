//! Time as the fakes write it: seconds since the epoch now, RFC 3339 text at
//! a shop's offset and back (counted day by day, unlike the connectors' SDK,
//! so the two check each other), and a logical clock for fakes whose
//! timestamps must be distinct and ordered without sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

/// A logical clock: every tick is one second after the previous one, from
/// 2025-01-01T00:00:00, so each change has its own ordered timestamp.
#[derive(Debug, Default)]
pub struct Clock {
    ticks: u64,
}

impl Clock {
    /// The next timestamp as `2025-01-DDTHH:MM:SS` (no zone).
    pub fn tick(&mut self) -> String {
        self.ticks += 1;
        let t = self.ticks;
        assert!(t < 30 * 86_400, "the fake's clock ran out of January");
        format!(
            "2025-01-{:02}T{:02}:{:02}:{:02}",
            1 + t / 86_400,
            t / 3600 % 24,
            t / 60 % 60,
            t % 60
        )
    }
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const DAYS_IN_MONTH: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

fn leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn month_days(year: i64, month: usize) -> i64 {
    DAYS_IN_MONTH[month] + i64::from(month == 1 && leap(year))
}

/// `2024-10-01T08:00:00-04:00`: a time (after 1970) as RFC 3339 text at a
/// fixed offset from UTC, the way a shop in a time zone writes it. Counted
/// day by day, unlike the connector's SDK, so the two check each other.
pub fn rfc3339(unix_secs: i64, offset_minutes: i64) -> String {
    let local = unix_secs + offset_minutes * 60;
    let (mut days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let mut year = 1970;
    while days >= 365 + i64::from(leap(year)) {
        days -= 365 + i64::from(leap(year));
        year += 1;
    }
    let mut month = 0;
    while days >= month_days(year, month) {
        days -= month_days(year, month);
        month += 1;
    }
    let offset = if offset_minutes == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let abs = offset_minutes.abs();
        format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
    };
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}{offset}",
        month + 1,
        days + 1,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` (after
/// 1970), or `None`.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-');
    let (year, month, day) = (num(date.next()?)?, num(date.next()?)?, num(date.next()?)?);
    let (clock, offset) = match time.strip_suffix('Z') {
        Some(clock) => (clock, 0),
        None => {
            let at = time.rfind(['+', '-'])?;
            let (h, m) = time[at + 1..].split_once(':')?;
            let minutes = num(h)? * 60 + num(m)?;
            (
                &time[..at],
                if &time[at..at + 1] == "-" {
                    -minutes
                } else {
                    minutes
                },
            )
        }
    };
    let clock = clock.split('.').next()?;
    let mut clock = clock.splitn(3, ':');
    let (h, m, s) = (
        num(clock.next()?)?,
        num(clock.next()?)?,
        num(clock.next()?)?,
    );
    if !(1..=12).contains(&month) || year < 1970 {
        return None;
    }
    let mut days: i64 = (1970..year).map(|y| 365 + i64::from(leap(y))).sum();
    days += (0..(month - 1) as usize)
        .map(|m| month_days(year, m))
        .sum::<i64>();
    days += day - 1;
    Some(days * 86_400 + h * 3600 + m * 60 + s - offset * 60)
}

#[test]
fn clock_text_round_trips() {
    assert_eq!(rfc3339(1_727_784_000, 0), "2024-10-01T12:00:00Z");
    assert_eq!(rfc3339(1_727_784_000, -240), "2024-10-01T08:00:00-04:00");
    assert_eq!(rfc3339(1_709_164_800, 330), "2024-02-29T05:30:00+05:30");
    for t in [0, 951_782_400, 1_709_164_800, 1_727_784_000, 4_102_444_799] {
        for offset in [-240, 0, 330] {
            assert_eq!(parse_rfc3339(&rfc3339(t, offset)), Some(t), "{t} {offset}");
        }
    }
    assert_eq!(
        parse_rfc3339("2024-10-01T12:00:00.250Z"),
        Some(1_727_784_000)
    );
    assert_eq!(parse_rfc3339("yesterday"), None);
}
