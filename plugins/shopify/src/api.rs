//! The Admin REST API's shape: where a connection's shop lives, how its errors map to connector errors, and its `Link` pagination.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use switchyard_sdk::http::{Request, Response};
use switchyard_sdk::{Context, Error, Value, log};

/// The API version used when the connection does not choose one.
pub(crate) const DEFAULT_API_VERSION: &str = "2024-10";

/// The root of a shop's Admin API: `https://{shop}.myshopify.com/admin/api/{version}`,
/// or the same path under the connection's `base_url`.
pub(crate) struct Shop {
    root: String,
}

impl Shop {
    pub(crate) fn new(ctx: &Context) -> Result<Self, Error> {
        let version = match ctx.property("api_version") {
            Some(Value::String(v)) if !v.is_empty() => v.as_str(),
            _ => DEFAULT_API_VERSION,
        };
        let origin = match ctx.property("base_url") {
            Some(Value::String(base)) if !base.is_empty() => base.trim_end_matches('/').to_owned(),
            _ => format!("https://{}.myshopify.com", ctx.string_property("shop")?),
        };
        Ok(Self {
            root: format!("{origin}/admin/api/{version}"),
        })
    }

    /// `path` (starting with `/`) under the API root.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }
}

/// Sends `request` and turns an error status into the connector error the host acts on.
pub(crate) fn send(request: Request) -> Result<Response, Error> {
    check(request.send()?)
}

/// Like [`send`], with the body parsed as `T`.
pub(crate) fn send_json<T: DeserializeOwned>(request: Request) -> Result<T, Error> {
    send(request)?.json()
}

/// Shopify's statuses as connector errors: 429 waits for `Retry-After`
/// (Shopify sends `2.0`), 401/403 pause the connection, 5xx retry, 404 and
/// 422 are input that cannot work. 402 (unpaid plan) and 423 (locked shop)
/// are permanent: retrying within a flow's backoff will not unlock a shop.
pub(crate) fn check(response: Response) -> Result<Response, Error> {
    warn_when_bucket_is_low(&response);
    match response.status {
        402 | 423 => Err(Error::permanent(format!(
            "{} {} returned {}: the shop is unavailable: {}",
            response.method,
            response.url,
            response.status,
            errors_text(&response)
        ))),
        _ => response.error_for_status(),
    }
}

/// The `errors` of a Shopify error body (`{"errors": "..."}` or
/// `{"errors": {"field": ["..."]}}`) as text, or the raw body.
pub(crate) fn errors_text(response: &Response) -> String {
    match response.json::<Value>() {
        Ok(Value::Object(body)) => match body.get("errors") {
            Some(Value::String(text)) => text.clone(),
            Some(errors) => errors.to_string(),
            None => response.text().into_owned(),
        },
        _ => response.text().into_owned(),
    }
}

/// `X-Shopify-Shop-Api-Call-Limit: 32/40` says how full the shop's bucket is.
/// The host's rate limit keeps this connection under it; other apps of the
/// same shop share the bucket, so say so when it runs nearly full.
fn warn_when_bucket_is_low(response: &Response) {
    let Some(limit) = response.header("X-Shopify-Shop-Api-Call-Limit") else {
        return;
    };
    let Some((used, size)) = limit.split_once('/') else {
        return;
    };
    if let (Ok(used), Ok(size)) = (used.trim().parse::<u32>(), size.trim().parse::<u32>())
        && size > 0
        && used * 10 >= size * 9
    {
        log::warn!("the shop's API bucket is at {used}/{size}");
    }
}

/// The `rel="next"` URL of a `Link` header:
/// `<https://...?page_info=abc&limit=50>; rel="previous", <...>; rel="next"`.
pub(crate) fn next_link(link: Option<&str>) -> Option<String> {
    let mut rest = link?;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let url = &rest[start + 1..end];
        let params = rest[end + 1..].split('<').next().unwrap_or("");
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        if is_next {
            return Some(url.to_owned());
        }
        rest = &rest[end + 1..];
    }
    None
}

/// A Shopify resource id: a JSON integer, or its digits as a string (what a
/// flow gets when it copies an id out of another system's text field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id(pub(crate) u64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n
                .as_u64()
                .filter(|n| *n > 0)
                .map(Id)
                .ok_or_else(|| de::Error::custom(format!("{n} is not a positive integer id"))),
            Value::String(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Id)
                .ok_or_else(|| de::Error::custom(format!("`{s}` is not a numeric id"))),
            other => Err(de::Error::custom(format!("{other} is not an id"))),
        }
    }
}

/// The trailing number of a GraphQL global id (`gid://shopify/InventoryItem/42`).
pub(crate) fn gid_number(gid: &str) -> Option<u64> {
    gid.rsplit('/').next()?.parse().ok()
}

/// Reads an action's input (already checked against its schema by the host).
pub(crate) fn input<T: DeserializeOwned>(input: Value) -> Result<T, Error> {
    switchyard_sdk::serde_json::from_value(input)
        .map_err(|e| Error::invalid_input(format!("bad input: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::json;

    #[test]
    fn next_links() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (None, None),
            (Some(""), None),
            (
                Some(r#"<https://a.test/orders.json?limit=2&page_info=p2>; rel="next""#),
                Some("https://a.test/orders.json?limit=2&page_info=p2"),
            ),
            (
                Some(
                    r#"<https://a.test/o.json?page_info=p1>; rel="previous", <https://a.test/o.json?page_info=p3>; rel="next""#,
                ),
                Some("https://a.test/o.json?page_info=p3"),
            ),
            (
                Some(r#"<https://a.test/o.json?page_info=p1>; rel="previous""#),
                None,
            ),
            (
                Some("<https://a.test/x>; rel=next"),
                Some("https://a.test/x"),
            ),
            (Some("garbage"), None),
        ];
        for (header, expected) in cases {
            assert_eq!(next_link(*header).as_deref(), *expected, "{header:?}");
        }
    }

    #[test]
    fn ids() {
        let parse = |v: Value| {
            switchyard_sdk::serde_json::from_value::<Id>(v)
                .map(|id| id.0)
                .ok()
        };
        assert_eq!(parse(json!(5_800_000_000_001u64)), Some(5_800_000_000_001));
        assert_eq!(parse(json!("1001")), Some(1001));
        assert_eq!(parse(json!(" 7 ")), Some(7));
        assert_eq!(parse(json!(0)), None);
        assert_eq!(parse(json!(-3)), None);
        assert_eq!(parse(json!("#1001")), None);
        assert_eq!(parse(json!(1.5)), None);
        assert_eq!(parse(json!(null)), None);
        assert_eq!(gid_number("gid://shopify/InventoryItem/42"), Some(42));
        assert_eq!(gid_number("nope"), None);
    }
}
