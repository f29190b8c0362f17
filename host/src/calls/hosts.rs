//! A stored connection's allowed hosts, parsed once and kept for its next
//! calls. What a call may reach is a pure function of the version's
//! patterns and the connection's non-secret properties (`{shop}` in
//! `https://{shop}.myshopify.com`); parsing them (a URL parse per pattern
//! that names a property) was about 1.3% of the server's CPU in the
//! end-to-end benchmark, done twice per run (the webhook and the step).
//! An entry is used only while both are what it was parsed from, so an
//! edited connection or another version's patterns parse afresh.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use serde_json::Value;

use crate::sandbox::policy::HostPattern;

/// How many connections' hosts are kept; past it the map starts again
/// empty (entries are cheap to rebuild, and a host has far fewer
/// connections in use at once).
const MOST: usize = 4096;

#[derive(Default)]
pub(super) struct ParsedHosts {
    by_connection: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    patterns: Vec<String>,
    properties: BTreeMap<String, Value>,
    parsed: Arc<[HostPattern]>,
}

impl ParsedHosts {
    /// The hosts `patterns` allow for `connection` with `properties`,
    /// parsed by `parse` only when they are not kept already.
    pub(super) fn get(
        &self,
        connection: &str,
        patterns: &[String],
        properties: &BTreeMap<String, Value>,
        parse: impl FnOnce() -> Vec<HostPattern>,
    ) -> Arc<[HostPattern]> {
        if let Some(entry) = self.lock().get(connection)
            && entry.patterns == patterns
            && entry.properties == *properties
        {
            return entry.parsed.clone();
        }
        let parsed: Arc<[HostPattern]> = parse().into();
        let mut kept = self.lock();
        if kept.len() >= MOST && !kept.contains_key(connection) {
            kept.clear();
        }
        kept.insert(
            connection.to_string(),
            Entry {
                patterns: patterns.to_vec(),
                properties: properties.clone(),
                parsed: parsed.clone(),
            },
        );
        parsed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding it leaves nothing half-done: a map of
        // finished entries.
        self.by_connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;

    use super::*;
    use crate::sandbox::policy::check_url;

    fn parse_all(patterns: &[String], properties: &BTreeMap<String, Value>) -> Vec<HostPattern> {
        patterns
            .iter()
            .map(|p| HostPattern::parse(p, properties).unwrap())
            .collect()
    }

    #[test]
    fn parses_again_only_when_the_patterns_or_the_properties_change() {
        let shop = |name: &str| BTreeMap::from([("shop".to_string(), json!(name))]);
        let mine = vec!["https://{shop}.example.com".to_string()];
        let theirs = vec!["https://api.example.org".to_string()];
        // (connection, patterns, properties, parsed afresh, a host it allows)
        let cases = [
            ("c1", &mine, shop("a"), true, "a.example.com"),
            ("c1", &mine, shop("a"), false, "a.example.com"),
            ("c1", &mine, shop("b"), true, "b.example.com"),
            ("c2", &mine, shop("b"), true, "b.example.com"),
            ("c1", &theirs, shop("b"), true, "api.example.org"),
            ("c1", &theirs, shop("b"), false, "api.example.org"),
        ];
        let hosts = ParsedHosts::default();
        for (i, (connection, patterns, properties, afresh, host)) in cases.into_iter().enumerate() {
            let parsed = Cell::new(false);
            let allowed = hosts.get(connection, patterns, &properties, || {
                parsed.set(true);
                parse_all(patterns, &properties)
            });
            assert_eq!(parsed.get(), afresh, "case {i}: parsed afresh");
            let url = url::Url::parse(&format!("https://{host}/x")).unwrap();
            assert!(
                check_url(&url, &allowed).is_ok(),
                "case {i}: {host} allowed"
            );
        }
    }

    #[test]
    fn a_full_map_starts_again() {
        let hosts = ParsedHosts::default();
        let none = BTreeMap::new();
        for i in 0..=MOST {
            hosts.get(&format!("c{i}"), &[], &none, Vec::new);
        }
        assert_eq!(hosts.lock().len(), 1, "cleared when full, then the new one");
    }
}
