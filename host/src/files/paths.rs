//! What bucket names and object paths may be, and which paths a pattern
//! selects: a prefix (`orders/`) or a glob (`orders/*.csv`, `**/*.xml`,
//! with `globset`, where `*` stays within one folder and `**` crosses
//! them). Pure decisions with table tests.

use globset::{Glob, GlobBuilder, GlobMatcher};

/// Bucket names: 3 to 63 lowercase letters, digits, `-` and `.`, starting
/// and ending with a letter or digit (S3's rule, so a bucket can be
/// mirrored to S3 under the same name).
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket name `{name}`: 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"
        ))
    }
}

/// Object paths: up to 1,024 bytes of text without control characters,
/// folders separated by `/`, no empty, `.` or `..` folder, no leading `/`.
pub fn check_path(path: &str) -> Result<(), String> {
    let problem = if path.is_empty() {
        Some("is empty")
    } else if path.len() > 1024 {
        Some("is longer than 1,024 bytes")
    } else if path.chars().any(char::is_control) {
        Some("has a control character")
    } else if path.starts_with('/') {
        Some("starts with `/`")
    } else if path.split('/').enumerate().any(|(i, part)| {
        matches!(part, "." | "..") || (part.is_empty() && i + 1 < path.split('/').count())
    }) {
        Some("has an empty, `.` or `..` folder")
    } else if path.ends_with('/') {
        Some("ends with `/` (a folder, not a file)")
    } else {
        None
    };
    match problem {
        Some(why) => Err(format!("path `{path}` {why}")),
        None => Ok(()),
    }
}

/// Which paths a trigger or a listing takes: those under `prefix` and, if
/// given, matching `glob`.
#[derive(Debug, Clone)]
pub struct PathFilter {
    pub prefix: String,
    glob: Option<GlobMatcher>,
}

impl PathFilter {
    pub fn new(prefix: Option<&str>, glob: Option<&str>) -> Result<PathFilter, String> {
        let glob = glob
            .map(|pattern| {
                GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map(|g: Glob| g.compile_matcher())
                    .map_err(|e| format!("glob `{pattern}`: {e}"))
            })
            .transpose()?;
        // Listing can start at the glob's literal beginning.
        let prefix = match (prefix, &glob) {
            (Some(prefix), _) => prefix.to_string(),
            (None, Some(g)) => literal_prefix(g.glob().glob()),
            (None, None) => String::new(),
        };
        Ok(PathFilter { prefix, glob })
    }

    pub fn matches(&self, path: &str) -> bool {
        path.starts_with(&self.prefix) && self.glob.as_ref().is_none_or(|g| g.is_match(path))
    }
}

/// The part of a glob before its first special character, up to a `/`.
fn literal_prefix(glob: &str) -> String {
    let end = glob.find(['*', '?', '[', '{', '\\']).unwrap_or(glob.len());
    match glob[..end].rfind('/') {
        Some(slash) => glob[..=slash].to_string(),
        None if end == glob.len() => glob.to_string(),
        None => String::new(),
    }
}

/// The folder of a path, with its trailing `/` (empty at the top).
pub fn folder_of(path: &str) -> &str {
    path.rfind('/').map_or("", |at| &path[..=at])
}

/// The last part of a path.
pub fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["inbox", "erp-drop.2026", "a1b"] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Inbox",
            "-inbox",
            "inbox-",
            "in box",
            "in/box",
            &"a".repeat(64),
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        for ok in ["a.csv", "orders/2026/01/a.csv", "with space/ü.xml"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/a", "starts with"),
            ("a//b", "empty"),
            ("a/../b", "`..`"),
            ("./a", "`.`"),
            ("a/", "ends with"),
            ("a\nb", "control"),
        ] {
            let err = check_path(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn filters() {
        let table: &[(Option<&str>, Option<&str>, &str, bool)] = &[
            (Some("orders/"), None, "orders/a.csv", true),
            (Some("orders/"), None, "orders.csv", false),
            (None, Some("orders/*.csv"), "orders/a.csv", true),
            (None, Some("orders/*.csv"), "orders/2026/a.csv", false),
            (None, Some("orders/**/*.csv"), "orders/2026/a.csv", true),
            (None, Some("*.csv"), "a.csv", true),
            (None, Some("*.csv"), "a.xml", false),
            (None, Some("*.{csv,tsv}"), "a.tsv", true),
            (Some("in/"), Some("**/*.xml"), "in/x/y.xml", true),
            (Some("in/"), Some("**/*.xml"), "out/y.xml", false),
            (None, None, "anything", true),
        ];
        for (prefix, glob, path, expected) in table {
            let filter = PathFilter::new(*prefix, *glob).unwrap();
            assert_eq!(
                filter.matches(path),
                *expected,
                "{prefix:?} {glob:?} {path}"
            );
        }
        assert_eq!(
            PathFilter::new(None, Some("orders/2026/*.csv"))
                .unwrap()
                .prefix,
            "orders/2026/"
        );
        assert_eq!(PathFilter::new(None, Some("*.csv")).unwrap().prefix, "");
        assert!(PathFilter::new(None, Some("a[")).is_err());
        assert_eq!(
            (folder_of("a/b/c.csv"), name_of("a/b/c.csv")),
            ("a/b/", "c.csv")
        );
        assert_eq!((folder_of("c.csv"), name_of("c.csv")), ("", "c.csv"));
    }
}
