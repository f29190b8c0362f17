//! Polling triggers: the first poll's seed, the incremental cursor (by
//! date-time or by id, with a lookback window), events with their ids.
//!
//! Records must come oldest first (ask the API to sort by the cursor's
//! field): then stopping after some pages loses nothing, and the cursor is
//! the newest value read. With an API whose filter is exclusive
//! (`modified_after`), a poll cut short drops the records that share the
//! last value (the next poll asks for what is after it, and the rest of
//! that value's records would be lost otherwise). With an inclusive filter
//! (`updated_at_min`), the cursor remembers the ids seen at its value.

use std::collections::BTreeSet;

use declarative_spec::{CursorSpec, CursorType, Trigger};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_sdk::time::{format_rfc3339, now_unix_secs, parse_rfc3339};
use switchyard_sdk::{Error, Event, PollResult, log};

use crate::exchange::Runner;
use crate::template::Scope;

/// An inclusive cursor as stored: the newest value and the ids seen at it
/// (the SDK's `Watermark` format).
#[derive(Serialize, Deserialize)]
struct Stored {
    since: String,
    #[serde(default)]
    ids: BTreeSet<String>,
}

/// A cursor value that can be compared.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
struct Point(i64);

fn point(kind: CursorType, text: &str) -> Option<Point> {
    match kind {
        // A date-time without a zone (WooCommerce's `_gmt` fields) is UTC.
        CursorType::Datetime => parse_rfc3339(text)
            .or_else(|| parse_rfc3339(&format!("{}Z", text.trim())))
            .map(Point),
        CursorType::Number => text.trim().parse::<i64>().ok().map(Point),
    }
}

/// `text` moved back by `lookback` (seconds or units), written the way
/// `text` is (UTC, without a zone if it had none).
fn back(kind: CursorType, text: &str, lookback: u64) -> Option<String> {
    let lookback = i64::try_from(lookback).ok()?;
    match kind {
        CursorType::Number => Some((point(kind, text)?.0 - lookback).to_string()),
        CursorType::Datetime => {
            let ms = point(kind, text)?.0;
            let shifted = format_rfc3339((ms - lookback * 1000).div_euclid(1000));
            let zoned = parse_rfc3339(text.trim()).is_some();
            Some(if zoned {
                shifted
            } else {
                shifted.trim_end_matches('Z').to_string()
            })
        }
    }
}

/// Runs one poll of `trigger`.
pub(crate) fn poll(
    runner: &Runner<'_>,
    key: &str,
    trigger: &Trigger,
    params: &Value,
    cursor: Option<&str>,
) -> Result<PollResult, Error> {
    let at = format!("triggers.{key}");
    let t = &runner.templates;
    let scope = runner.scope.with("params", params);
    let spec = trigger.cursor.as_ref();
    let kind = spec.map(|c| c.kind).unwrap_or_default();

    // Where we are: the stored value and the ids seen at it.
    let (mark, mut ids) = match cursor {
        Some(text) => parse_cursor(spec, text)?,
        None => {
            let from = match (&runner.limits.seed, &trigger.seed) {
                (Some(forced), _) => forced.clone(),
                (None, Some(seed)) => t
                    .text(&seed.from, &scope, &format!("{at}.seed.from"))?
                    .unwrap_or_else(|| "beginning".to_string()),
                (None, None) => "beginning".to_string(),
            };
            match from.as_str() {
                "beginning" => (None, BTreeSet::new()),
                "now" => {
                    let now = format_rfc3339(now_unix_secs());
                    log::info!("{key}: starts from now ({now})");
                    return Ok(PollResult::new(
                        Vec::new(),
                        store(spec, &now, &BTreeSet::new()),
                    ));
                }
                "newest" => return seed_newest(runner, key, trigger, &scope),
                other => {
                    return Err(Error::invalid_input(format!(
                        "{at}.seed.from: `{other}` is not now, newest or beginning"
                    )));
                }
            }
        }
    };
    let lookback = spec.and_then(|c| c.lookback).unwrap_or(0);
    let since = match &mark {
        Some(m) if lookback > 0 => back(kind, m, lookback).or_else(|| Some(m.clone())),
        other => other.clone(),
    };
    let scope = scope
        .with("cursor", &json!(mark))
        .with("since", &json!(since));
    let op = trigger
        .poll
        .as_ref()
        .ok_or_else(|| Error::permanent(format!("{at}: a polling trigger needs a request")))?;
    let initial = match (spec, &mark) {
        (Some(_), Some(m)) => point(kind, m),
        _ => None,
    };
    let floor = match (&since, initial) {
        (Some(s), Some(_)) if lookback > 0 => point(kind, s),
        _ => None,
    };
    // Each record as it is read: its event id, cursor value and whether it
    // is news. An inclusive cursor moves as records are read (the SDK's
    // `Watermark`); an exclusive one compares with where the poll started.
    let mut entries: Vec<Entry> = Vec::new();
    let mut running: Option<(String, Point)> = mark.clone().zip(initial);
    let mut sink = |record: &Value| -> Result<bool, Error> {
        let record_scope = scope.with("record", record);
        let event_id = t
            .text(&trigger.event_id, &record_scope, &format!("{at}.event_id"))?
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::permanent(format!("{at}.event_id: empty for a record")))?;
        let Some(c) = spec else {
            entries.push(Entry {
                event_id,
                value: None,
                fresh: true,
            });
            return Ok(true);
        };
        let text = t
            .text(&c.value, &record_scope, &format!("{at}.cursor.value"))?
            .ok_or_else(|| {
                Error::permanent(format!("{at}.cursor.value: undefined for a record"))
            })?;
        let p = point(kind, &text).ok_or_else(|| {
            Error::permanent(format!(
                "{at}.cursor.value: `{text}` is not a {}",
                match kind {
                    CursorType::Datetime => "date-time",
                    CursorType::Number => "number",
                }
            ))
        })?;
        let id = match &c.id {
            Some(template) => t
                .text(template, &record_scope, &format!("{at}.cursor.id"))?
                .unwrap_or_else(|| event_id.clone()),
            None => event_id.clone(),
        };
        let fresh = if lookback > 0 {
            // The window is read again on purpose; the host drops repeats by id.
            floor.is_none_or(|f| p >= f)
        } else if c.inclusive {
            match &running {
                None => true,
                Some((_, m)) => p > *m || (p == *m && !ids.contains(&id)),
            }
        } else {
            initial.is_none_or(|m| p > m)
        };
        match &running {
            Some((_, m)) if p < *m => {}
            Some((_, m)) if p == *m => {
                ids.insert(id);
            }
            _ => {
                running = Some((text.clone(), p));
                ids.clear();
                ids.insert(id);
            }
        }
        entries.push(Entry {
            event_id,
            value: Some((text, p)),
            fresh,
        });
        Ok(fresh)
    };
    let fetched = runner.fetch(op, &scope, &format!("{at}.poll"), true, Some(&mut sink))?;
    let mut records = fetched.records;
    // Cut short with an exclusive filter: the next poll asks for what is
    // after the last value, so that value's records must go whole.
    if let Some(c) = spec
        && fetched.more
        && !c.inclusive
        && let Some(Some((_, last))) = entries.last().map(|e| e.value.clone())
    {
        let keep = entries
            .iter()
            .filter(|e| e.value.as_ref().is_some_and(|(_, p)| *p != last))
            .count();
        if keep > 0 {
            records.truncate(keep);
            entries.truncate(keep);
        }
    }
    if records.is_empty() {
        return Ok(PollResult::new(Vec::new(), None));
    }
    let newest = match spec {
        Some(c) if c.inclusive => running,
        Some(_) => entries
            .iter()
            .filter_map(|e| e.value.clone())
            .chain(mark.clone().zip(initial))
            .fold(None, |best: Option<(String, Point)>, v| match best {
                Some(b) if b.1 >= v.1 => Some(b),
                _ => Some(v),
            }),
        None => None,
    };
    let mut events = Vec::new();
    for (record, entry) in records.iter().zip(entries) {
        if !entry.fresh {
            continue;
        }
        let record_scope = scope.with("record", record);
        if let Some(filter) = &trigger.filter
            && !t.holds(filter, &record_scope, &format!("{at}.filter"))?
        {
            continue;
        }
        let payload = match &trigger.event {
            Some(shape) => t.value(shape, &record_scope, &format!("{at}.event"))?,
            None => record.clone(),
        };
        events.push(Event::new(entry.event_id, payload));
    }
    log::debug!("{key}: {} records, {} events", records.len(), events.len());
    let cursor = newest.and_then(|(text, _)| store(spec, &text, &ids));
    Ok(PollResult::new(events, cursor))
}

/// One record of a poll as it was read.
struct Entry {
    event_id: String,
    value: Option<(String, Point)>,
    fresh: bool,
}

/// The stored cursor's value and ids.
fn parse_cursor(
    spec: Option<&CursorSpec>,
    text: &str,
) -> Result<(Option<String>, BTreeSet<String>), Error> {
    let text = text.trim();
    if spec.is_some_and(|c| c.inclusive) && text.starts_with('{') {
        let stored: Stored = serde_json::from_str(text)
            .map_err(|e| Error::invalid_input(format!("unreadable poll cursor: {e}")))?;
        return Ok((Some(stored.since), stored.ids));
    }
    Ok((Some(text.to_string()), BTreeSet::new()))
}

/// The cursor text to store: the value, or `{"since", "ids"}` when inclusive.
fn store(spec: Option<&CursorSpec>, value: &str, ids: &BTreeSet<String>) -> Option<String> {
    match spec {
        Some(c) if c.inclusive => serde_json::to_string(&Stored {
            since: value.to_string(),
            ids: ids.clone(),
        })
        .ok(),
        _ => Some(value.to_string()),
    }
}

/// A first poll seeded at the newest record: no events, the cursor there.
fn seed_newest(
    runner: &Runner<'_>,
    key: &str,
    trigger: &Trigger,
    scope: &Scope,
) -> Result<PollResult, Error> {
    let at = format!("triggers.{key}.seed");
    let seed = trigger
        .seed
        .as_ref()
        .ok_or_else(|| Error::permanent(format!("{at}: missing")))?;
    let spec = trigger.cursor.as_ref();
    let scope = scope
        .with("cursor", &Value::Null)
        .with("since", &Value::Null);
    let start = match &seed.request {
        Some(op) => {
            let fetched = runner.fetch(op, &scope, &format!("{at}.request"), false, None)?;
            match (fetched.records.first(), spec) {
                (Some(record), Some(c)) => runner.templates.text(
                    &c.value,
                    &scope.with("record", record),
                    &format!("{at}.cursor.value"),
                )?,
                _ => None,
            }
        }
        None => None,
    };
    let start = start.or_else(|| seed.default.clone());
    log::debug!(
        "{key}: starting after {}",
        start.as_deref().unwrap_or("nothing")
    );
    Ok(PollResult::new(
        Vec::new(),
        start.and_then(|s| store(spec, &s, &BTreeSet::new())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_values_compare_as_instants_and_numbers() {
        let table = [
            (
                CursorType::Datetime,
                "2025-01-01T00:00:01",
                "2025-01-01T00:00:01Z",
                true,
            ),
            (
                CursorType::Datetime,
                "2025-01-01T08:00:00-04:00",
                "2025-01-01T12:00:00Z",
                true,
            ),
            (
                CursorType::Datetime,
                "2025-01-01T00:00:02Z",
                "2025-01-01T00:00:01Z",
                false,
            ),
            (CursorType::Number, "42", " 42 ", true),
            (CursorType::Number, "9", "10", false),
        ];
        for (kind, a, b, equal) in table {
            let (a, b) = (point(kind, a).unwrap(), point(kind, b).unwrap());
            assert_eq!(a == b, equal, "{}", a.0);
        }
        assert!(point(CursorType::Number, "2025-01-01").is_none());
        assert!(point(CursorType::Datetime, "yesterday").is_none());
        assert!(point(CursorType::Number, "9").unwrap() < point(CursorType::Number, "10").unwrap());
    }

    #[test]
    fn a_lookback_keeps_the_values_style() {
        let table = [
            (
                CursorType::Datetime,
                "2025-01-01T00:05:00",
                300,
                "2025-01-01T00:00:00",
            ),
            (
                CursorType::Datetime,
                "2025-01-01T00:05:00Z",
                60,
                "2025-01-01T00:04:00Z",
            ),
            (
                CursorType::Datetime,
                "2025-01-01T00:05:00+01:00",
                0,
                "2024-12-31T23:05:00Z",
            ),
            (CursorType::Number, "1000", 25, "975"),
        ];
        for (kind, value, lookback, expected) in table {
            assert_eq!(
                back(kind, value, lookback).as_deref(),
                Some(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn inclusive_cursors_keep_the_ids_seen_at_their_instant() {
        let inclusive = CursorSpec {
            value: String::new(),
            kind: CursorType::Datetime,
            inclusive: true,
            id: None,
            lookback: None,
        };
        let ids = BTreeSet::from(["7".to_string()]);
        let text = store(Some(&inclusive), "2025-01-01T00:00:00Z", &ids).unwrap();
        assert_eq!(text, r#"{"since":"2025-01-01T00:00:00Z","ids":["7"]}"#);
        let (mark, read) = parse_cursor(Some(&inclusive), &text).unwrap();
        assert_eq!((mark.as_deref(), read), (Some("2025-01-01T00:00:00Z"), ids));
        // A bare timestamp (set by hand) is read too; an exclusive cursor is the value.
        let (mark, read) = parse_cursor(Some(&inclusive), "2025-01-02T00:00:00Z").unwrap();
        assert_eq!(
            (mark.as_deref(), read.len()),
            (Some("2025-01-02T00:00:00Z"), 0)
        );
        assert_eq!(store(None, "5", &BTreeSet::new()).as_deref(), Some("5"));
    }
}
