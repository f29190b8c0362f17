//! The URLs the host signs in at (OAuth authorize and token URLs, the session
//! login URL), filled from their manifest templates under the allow-list's
//! rules, so that a connection property cannot point the host's sign-in, and
//! the credentials it carries, somewhere the plugin may not go.

use std::collections::BTreeMap;

use url::Url;

use super::policy::{self, HostPattern};

/// A filled auth URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthUrl {
    pub(crate) url: Url,
    /// The manifest names the URL's host: the operator's own credentials may
    /// go there (see [`policy::named_by_manifest`]).
    pub(crate) named: bool,
}

/// Fills the `{{name}}` placeholders of `template` (the `what`, e.g. "token
/// URL", for messages) with connection properties, and checks the result
/// against the plugin's allowed hosts.
///
/// As in the allow-list, a placeholder that starts the template stands for
/// a URL (a self-hosted shop's `{{base_url}}/oauth/token`); anywhere else a
/// value must be host-name text (letters, digits, `-`, `.`), so
/// `https://{{shop}}.myshopify.com` cannot become `https://evil.example/x?.myshopify.com`.
/// Refused values are not quoted: the property may be secret.
pub(crate) fn fill(
    what: &str,
    template: &str,
    values: &BTreeMap<String, String>,
    allowed: &[HostPattern],
) -> Result<AuthUrl, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some((name, after)) = rest[start + 2..].split_once("}}") else {
            return Err(format!("the {what} `{template}` has an unclosed `{{{{`"));
        };
        let name = name.trim();
        let value = values.get(name).ok_or_else(|| {
            format!("the {what} uses `{{{{{name}}}}}`, which the connection does not have")
        })?;
        if out.is_empty() && start == 0 {
            out.push_str(url_prefix(what, name, value)?);
        } else if value.is_empty()
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "the connection property `{name}` may hold only letters, digits, `-` and `.` \
                 where the {what} uses it"
            ));
        } else {
            out.push_str(value);
        }
        rest = after;
    }
    out.push_str(rest);
    let url = Url::parse(&out).map_err(|e| format!("the {what} `{template}` is not a URL: {e}"))?;
    policy::check_url(&url, allowed).map_err(|policy::Denied(why)| format!("the {what}: {why}"))?;
    let named = policy::named_by_manifest(&url, allowed);
    Ok(AuthUrl { url, named })
}

/// A property standing for the start of a URL: an absolute http(s) URL with
/// a host and nothing after its path, without its trailing `/`.
fn url_prefix<'a>(what: &str, name: &str, value: &'a str) -> Result<&'a str, String> {
    let refused = |why: &str| {
        Err(format!(
            "the connection property `{name}` that starts the {what} {why}"
        ))
    };
    let Ok(url) = Url::parse(value) else {
        return refused("is not an absolute URL");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return refused("is not an http or https URL with a host");
    }
    if url.query().is_some() || url.fragment().is_some() || value.contains(['?', '#']) {
        return refused("must not have a query or fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refused("must not hold credentials");
    }
    Ok(value.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn allowed(patterns: &[&str], values: &BTreeMap<String, String>) -> Vec<HostPattern> {
        let properties = values
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        patterns
            .iter()
            .filter_map(|p| HostPattern::parse(p, &properties).ok())
            .collect()
    }

    #[test]
    fn auth_url_table() {
        const SHOPIFY: &str = "https://{{shop}}.myshopify.com/admin/oauth/access_token";
        // template, properties, allowed hosts, Ok((url, named)) or Err(part of the message)
        type Row<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
            Result<(&'a str, bool), &'a str>,
        );
        let table: &[Row] = &[
            (
                SHOPIFY,
                &[("shop", "acme")],
                &["https://{shop}.myshopify.com"],
                Ok(("https://acme.myshopify.com/admin/oauth/access_token", true)),
            ),
            // A tenant cannot move the host with a path, query, port or userinfo.
            (
                SHOPIFY,
                &[("shop", "evil.example/x?")],
                &["https://{shop}.myshopify.com"],
                Err("property `shop` may hold only"),
            ),
            (
                SHOPIFY,
                &[("shop", "evil.example:443")],
                &["https://{shop}.myshopify.com"],
                Err("property `shop` may hold only"),
            ),
            (
                SHOPIFY,
                &[("shop", "x@evil.example")],
                &["https://{shop}.myshopify.com"],
                Err("property `shop` may hold only"),
            ),
            (
                SHOPIFY,
                &[("shop", "")],
                &["https://{shop}.myshopify.com"],
                Err("property `shop` may hold only"),
            ),
            (
                SHOPIFY,
                &[],
                &["https://x.myshopify.com"],
                Err("`{{shop}}`, which the connection does not have"),
            ),
            // Host-name text that is still outside the allowed hosts.
            (
                "https://{{region}}.api.test/token",
                &[("region", "evil.example")],
                &["https://eu.api.test"],
                Err("not in this plugin's allowed hosts"),
            ),
            // A URL property may start the template, and only there.
            (
                "{{base_url}}/oauth/token",
                &[("base_url", "http://127.0.0.2:8080/")],
                &["{base_url}"],
                Ok(("http://127.0.0.2:8080/oauth/token", false)),
            ),
            (
                "{{base_url}}/oauth/token",
                &[("base_url", "http://127.0.0.2:8080/x?")],
                &["{base_url}"],
                Err("must not have a query"),
            ),
            (
                "{{base_url}}/oauth/token",
                &[("base_url", "acme")],
                &["https://acme"],
                Err("is not an absolute URL"),
            ),
            (
                "https://auth.test/{{base_url}}/token",
                &[("base_url", "https://evil.example")],
                &["https://auth.test"],
                Err("property `base_url` may hold only"),
            ),
            // A host taken entirely from a property is allowed, but not named.
            (
                "http://{{host}}:{{port}}/login",
                &[("host", "api.acme.test"), ("port", "8080")],
                &["http://{host}:{port}"],
                Ok(("http://api.acme.test:8080/login", false)),
            ),
            (
                "http://127.0.0.2:{{port}}/oauth/token",
                &[("port", "8080")],
                &["http://127.0.0.2:{port}"],
                Ok(("http://127.0.0.2:8080/oauth/token", true)),
            ),
            (
                "https://login.test/{{tenant}}/token",
                &[("tenant", "a-b.c")],
                &["https://login.test"],
                Ok(("https://login.test/a-b.c/token", true)),
            ),
            (
                "https://login.test/{{tenant",
                &[("tenant", "x")],
                &["https://login.test"],
                Err("unclosed"),
            ),
        ];
        for (template, props, patterns, expected) in table {
            let values = values(props);
            let got = fill("token URL", template, &values, &allowed(patterns, &values));
            match (got, expected) {
                (Ok(got), Ok((url, named))) => {
                    assert_eq!(got.url.as_str(), *url, "{template} {props:?}");
                    assert_eq!(got.named, *named, "{template} {props:?}");
                }
                (Err(message), Err(part)) => {
                    assert!(message.contains(part), "{template} {props:?}: {message}");
                    if message.contains("property") {
                        for (_, value) in props.iter().filter(|(_, v)| v.len() > 4) {
                            assert!(!message.contains(value), "quotes a value: {message}");
                        }
                    }
                }
                (got, expected) => panic!("{template} {props:?}: {got:?}, expected {expected:?}"),
            }
        }
    }
}
