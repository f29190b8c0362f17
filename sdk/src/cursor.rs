//! A poll cursor for "changed since" APIs: the newest change seen and the records seen at that instant.
//!
//! APIs like Shopify's `updated_at_min` filter inclusively, so the record the
//! last poll ended on comes back on the next one, and so does any record
//! changed within the same second. A [`Watermark`] remembers the newest
//! timestamp and the ids seen at exactly that instant: records already seen
//! are skipped, and one changed in that second but after the poll is not lost.
//! Records must be fed oldest first (ask the API to sort by change time).
//! Timestamps are RFC 3339 unless the watermark is made with another
//! [`TimeFormat`] (`2024-10-01 12:00:00` in UTC, Unix seconds).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::time::{TimeFormat, now_unix_secs};

/// Where a polling trigger goes on from. See the [module docs](self).
///
/// ```
/// use switchyard_sdk::cursor::Watermark;
///
/// let mut mark = Watermark::parse("2024-10-01T12:00:00Z").unwrap();
/// assert!(mark.advance("7", "2024-10-01T12:00:00Z").unwrap());
/// assert!(mark.advance("8", "2024-10-01T08:00:01-04:00").unwrap());
/// let cursor = mark.to_cursor().unwrap();
///
/// // The next poll sees order 8 again (the filter is inclusive) and skips it.
/// let mut next = Watermark::parse(&cursor).unwrap();
/// assert_eq!(next.since(), Some("2024-10-01T08:00:01-04:00"));
/// assert!(!next.advance("8", "2024-10-01T08:00:01-04:00").unwrap());
/// assert!(next.advance("9", "2024-10-01T12:00:01Z").unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The newest change seen, as the API wrote it; `None` before any.
    since: Option<String>,
    since_ms: i64,
    /// Ids of the records changed at exactly `since`.
    ids: BTreeSet<String>,
    /// How `since` and the records' change times are written.
    format: TimeFormat,
}

/// The cursor text: `{"since": "...", "ids": [...]}`.
#[derive(Serialize, Deserialize)]
struct Stored {
    since: String,
    #[serde(default)]
    ids: BTreeSet<String>,
}

impl Watermark {
    /// Before every record: everything is new. RFC 3339 timestamps.
    pub fn beginning() -> Self {
        Self::beginning_in(TimeFormat::Rfc3339)
    }

    /// [`beginning`](Self::beginning) for an API that writes its
    /// timestamps in `format`.
    pub fn beginning_in(format: TimeFormat) -> Self {
        Self {
            since: None,
            since_ms: i64::MIN,
            ids: BTreeSet::new(),
            format,
        }
    }

    /// Now by the wall clock, with nothing seen: where a trigger starts when
    /// it should not read the history at all. RFC 3339 timestamps.
    pub fn now() -> Self {
        Self::now_in(TimeFormat::Rfc3339)
    }

    /// [`now`](Self::now) written in `format` (what [`since`](Self::since)
    /// gives the API).
    pub fn now_in(format: TimeFormat) -> Self {
        let now = now_unix_secs();
        Self {
            since: Some(format.format(now)),
            since_ms: now.saturating_mul(1000),
            ids: BTreeSet::new(),
            format,
        }
    }

    /// Reads a cursor made by [`to_cursor`](Self::to_cursor), or a bare RFC
    /// 3339 timestamp (handy when an operator sets a cursor by hand).
    pub fn parse(cursor: &str) -> Result<Self, Error> {
        Self::parse_in(cursor, TimeFormat::Rfc3339)
    }

    /// [`parse`](Self::parse) for an API that writes its timestamps in
    /// `format`: the cursor's timestamp, and those given to
    /// [`advance`](Self::advance), are read in it.
    ///
    /// ```
    /// use switchyard_sdk::cursor::Watermark;
    /// use switchyard_sdk::time::TimeFormat;
    ///
    /// let utc = TimeFormat::naive_utc();
    /// let mut mark = Watermark::parse_in("2024-10-01 12:00:00", utc).unwrap();
    /// assert!(!mark.advance("7", "2024-10-01 11:59:59").unwrap());
    /// assert!(mark.advance("8", "2024-10-01 12:00:01").unwrap());
    /// assert_eq!(mark.since(), Some("2024-10-01 12:00:01"));
    /// ```
    pub fn parse_in(cursor: &str, format: TimeFormat) -> Result<Self, Error> {
        let cursor = cursor.trim();
        let stored = if cursor.starts_with('{') {
            serde_json::from_str(cursor)
                .map_err(|e| Error::invalid_input(format!("unreadable poll cursor: {e}")))?
        } else {
            Stored {
                since: cursor.to_owned(),
                ids: BTreeSet::new(),
            }
        };
        let since_ms = format.parse(&stored.since).ok_or_else(|| {
            Error::invalid_input(format!(
                "poll cursor `{}` is not a timestamp of the format {format:?}",
                stored.since
            ))
        })?;
        Ok(Self {
            since: Some(stored.since),
            since_ms,
            ids: stored.ids,
            format,
        })
    }

    /// The timestamp to ask the API for changes since (inclusive); `None` at
    /// the beginning.
    pub fn since(&self) -> Option<&str> {
        self.since.as_deref()
    }

    /// Takes a record changed at `changed_at`: `true` if it is new (then the
    /// mark moves up to it), `false` if it is at or before the mark and was
    /// already seen. A timestamp that does not parse is a permanent error:
    /// the API sent something this cursor cannot order.
    pub fn advance(&mut self, id: &str, changed_at: &str) -> Result<bool, Error> {
        let at = self.format.parse(changed_at).ok_or_else(|| {
            Error::permanent(format!(
                "record {id} has an unreadable change time `{changed_at}`"
            ))
        })?;
        if at < self.since_ms || (at == self.since_ms && self.ids.contains(id)) {
            return Ok(false);
        }
        if at > self.since_ms {
            self.since = Some(changed_at.to_owned());
            self.since_ms = at;
            self.ids.clear();
        }
        self.ids.insert(id.to_owned());
        Ok(true)
    }

    /// The cursor to return from `poll`; `None` at the beginning (keep the
    /// previous one).
    pub fn to_cursor(&self) -> Option<String> {
        let since = self.since.clone()?;
        let stored = Stored {
            since,
            ids: self.ids.clone(),
        };
        serde_json::to_string(&stored).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_what_was_seen_at_the_mark_only() {
        let mut mark = Watermark::beginning();
        assert_eq!((mark.since(), mark.to_cursor()), (None, None));
        assert!(mark.advance("1", "2024-10-01T10:00:00Z").unwrap());
        assert!(mark.advance("2", "2024-10-01T12:00:00Z").unwrap());
        assert!(mark.advance("3", "2024-10-01T08:00:00-04:00").unwrap());
        let cursor = mark.to_cursor().unwrap();
        assert_eq!(
            cursor,
            r#"{"since":"2024-10-01T12:00:00Z","ids":["2","3"]}"#
        );

        let mut next = Watermark::parse(&cursor).unwrap();
        assert_eq!(next.since(), Some("2024-10-01T12:00:00Z"));
        assert!(!next.advance("2", "2024-10-01T12:00:00Z").unwrap());
        assert!(!next.advance("3", "2024-10-01T12:00:00Z").unwrap());
        assert!(!next.advance("1", "2024-10-01T10:00:00Z").unwrap());
        // Changed in the same second, after the last poll: not lost.
        assert!(next.advance("4", "2024-10-01T12:00:00Z").unwrap());
        // Changed again later: new again.
        assert!(next.advance("2", "2024-10-01T12:00:05Z").unwrap());
        assert_eq!(
            next.to_cursor().unwrap(),
            r#"{"since":"2024-10-01T12:00:05Z","ids":["2"]}"#
        );
    }

    #[test]
    fn keeps_to_the_api_s_time_format() {
        let utc = TimeFormat::naive_utc();
        let mut mark = Watermark::beginning_in(utc);
        assert!(mark.advance("1", "2024-10-01 10:00:00").unwrap());
        assert!(mark.advance("2", "2024-10-01 12:00:00").unwrap());
        // RFC 3339 is not this API's format.
        assert!(matches!(
            mark.advance("3", "2024-10-01T13:00:00Z"),
            Err(Error::Permanent(_))
        ));
        let cursor = mark.to_cursor().unwrap();
        assert_eq!(cursor, r#"{"since":"2024-10-01 12:00:00","ids":["2"]}"#);
        let mut next = Watermark::parse_in(&cursor, utc).unwrap();
        assert!(!next.advance("2", "2024-10-01 12:00:00").unwrap());
        assert!(next.advance("4", "2024-10-01 12:00:00").unwrap());
        assert!(matches!(
            Watermark::parse(&cursor),
            Err(Error::InvalidInput(_))
        ));

        // The same instant written at UTC+02:00 compares equal.
        let cest = TimeFormat::naive_at_offset(120);
        let mut mark = Watermark::parse_in("2024-10-01 14:00:00", cest).unwrap();
        assert!(!mark.advance("1", "2024-10-01 13:59:59").unwrap());
        assert!(mark.advance("2", "2024-10-01 14:00:00").unwrap());

        let now = Watermark::now_in(TimeFormat::UnixSeconds);
        let secs: i64 = now.since().unwrap().parse().unwrap();
        assert!(secs > 1_700_000_000);
        let now = Watermark::now_in(utc);
        assert!(utc.parse(now.since().unwrap()).is_some(), "{now:?}");
    }

    #[test]
    fn reads_bare_timestamps_and_refuses_garbage() {
        let mark = Watermark::parse("2024-10-01T12:00:00Z").unwrap();
        assert_eq!(
            mark.to_cursor().unwrap(),
            r#"{"since":"2024-10-01T12:00:00Z","ids":[]}"#
        );
        assert!(matches!(
            Watermark::parse("yesterday"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            Watermark::parse("{nope"),
            Err(Error::InvalidInput(_))
        ));
        let mut mark = Watermark::beginning();
        assert!(matches!(
            mark.advance("1", "last week"),
            Err(Error::Permanent(_))
        ));
        let now = Watermark::now();
        assert!(crate::time::parse_rfc3339(now.since().unwrap()).is_some());
    }
}
