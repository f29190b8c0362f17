//! Outbound HTTP through the host's sandbox, and the mapping of failures to connector errors.
//!
//! `http.send` is the connector's only way out. The host checks the URL
//! against the manifest's allowed hosts, adds the connection's credentials and
//! applies rate limits and timeouts; this module adds a builder, JSON helpers
//! and [`Response::error_for_status`], which turns HTTP statuses into the
//! [`Error`] kinds the host retries (or does not).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::switchyard::connector::http as wit;
use crate::bindings::switchyard::connector::types::Header;
use crate::error::Error;

pub use crate::bindings::switchyard::connector::http::HttpError;

/// How long to wait after a 429 that does not say (or says something unparseable).
pub const DEFAULT_RETRY_AFTER_MS: u64 = 1_000;

/// How much of an error response's body goes into the error message.
const BODY_SNIPPET_CHARS: usize = 500;

/// An outgoing request. Credentials are added by the host: do not set auth headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD` or `OPTIONS`.
    pub method: String,
    /// The absolute URL; it must match one of the manifest's allowed hosts.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Lowers the host's total timeout for this request.
    pub timeout_ms: Option<u32>,
    /// A body that failed to serialize, reported by `send` so the builder can chain.
    json_error: Option<String>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
            json_error: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends `name=value` to the URL's query string, percent-encoded.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        self.url = format!(
            "{}{separator}{}={}",
            self.url,
            percent_encode(name),
            percent_encode(value)
        );
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and, unless already set, `Content-Type: application/json`.
    /// A value that cannot be serialized (a map with non-string keys) makes
    /// [`send`](Request::send) fail with invalid input.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => self.body = body,
            Err(e) => self.json_error = Some(format!("request body is not serializable: {e}")),
        }
        if find_header(&self.headers, "content-type").is_none() {
            self.headers
                .push(("Content-Type".into(), "application/json".into()));
        }
        self
    }

    /// Lowers the total timeout for this request.
    pub fn timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Sends the request. Any answer, 4xx and 5xx included, is `Ok`: chain
    /// [`Response::error_for_status`] to turn those into errors. Sandbox
    /// failures become errors: denied and too-large are permanent, timeouts
    /// and connection failures transient, malformed requests invalid input.
    pub fn send(self) -> Result<Response, Error> {
        let what = format!("{} {}", self.method, self.url);
        self.send_raw().map_err(|e| Error::from(e).prefixed(&what))
    }

    /// Sends the request and returns the host's own error unmapped (for
    /// connectors and tests that need to tell the sandbox's failures apart).
    pub fn send_raw(self) -> Result<Response, HttpError> {
        if let Some(message) = self.json_error {
            return Err(HttpError::InvalidRequest(message));
        }
        let request = wit::Request {
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            body: self.body,
            timeout_ms: self.timeout_ms,
        };
        let response = wit::send(&request)?;
        Ok(Response {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: response.body,
            method: self.method,
            url: self.url,
        })
    }
}

/// An answer from the third party.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// Response headers, names as received.
    pub headers: Vec<(String, String)>,
    /// The body (capped by the host).
    pub body: Vec<u8>,
    /// The method of the request, for error messages.
    pub method: String,
    /// The URL of the request, for error messages.
    pub url: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON; a permanent error if it is not the expected shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::permanent(format!(
                "{} {}: response is not the expected JSON: {e}",
                self.method, self.url
            ))
        })
    }

    /// `Ok(self)` for 1xx-3xx; otherwise the error the host should act on:
    /// 429 is rate-limited (after `Retry-After`, seconds or an HTTP date,
    /// default 1 s), 401 and 403 are auth, 408 and 5xx are transient, and any
    /// other 4xx is invalid input quoting the start of the body.
    pub fn error_for_status(self) -> Result<Self, Error> {
        match self.status_error(SystemTime::now()) {
            Some(error) => Err(error),
            None => Ok(self),
        }
    }

    fn status_error(&self, now: SystemTime) -> Option<Error> {
        let status = self.status;
        if status < 400 {
            return None;
        }
        let what = format!("{} {} returned {status}", self.method, self.url);
        let detail = || {
            let text = self.text();
            let text = text.trim();
            if text.is_empty() {
                what.clone()
            } else if text.chars().count() > BODY_SNIPPET_CHARS {
                let snippet: String = text.chars().take(BODY_SNIPPET_CHARS).collect();
                format!("{what}: {snippet}...")
            } else {
                format!("{what}: {text}")
            }
        };
        Some(match status {
            429 => {
                let retry_after_ms = self
                    .header("retry-after")
                    .and_then(|v| retry_after_ms(v, now))
                    .unwrap_or(DEFAULT_RETRY_AFTER_MS);
                Error::rate_limited(retry_after_ms, detail())
            }
            401 | 403 => Error::auth(detail()),
            408 | 500.. => Error::transient(detail()),
            _ => Error::invalid_input(detail()),
        })
    }
}

/// Milliseconds to wait according to a `Retry-After` value: delay-seconds or
/// an HTTP date (a date in the past means now). `None` if it is neither.
///
/// Decimal seconds are accepted too: RFC 9110 says delay-seconds is an
/// integer, but Shopify sends `Retry-After: 2.0`, and reading that as "no
/// value" would retry twice as early as asked.
pub fn retry_after_ms(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    if let Some(ms) = decimal_seconds_ms(value) {
        return Some(ms);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// `2.0` or `0.25` (digits, a dot, digits) as milliseconds, rounded up.
fn decimal_seconds_ms(value: &str) -> Option<u64> {
    let (whole, fraction) = value.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    // Milliseconds from the first three decimals, plus one if any later digit is not 0.
    let mut ms = 0;
    for (i, b) in fraction.bytes().enumerate() {
        let digit = u64::from(b - b'0');
        match i {
            0..3 => ms = ms * 10 + digit,
            _ if digit > 0 => {
                ms += 1;
                break;
            }
            _ => {}
        }
    }
    for _ in fraction.len()..3 {
        ms *= 10;
    }
    Some(whole.saturating_mul(1000).saturating_add(ms))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a
/// path segment or a query component.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The first header named `name`, compared case-insensitively.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Denied(m) => Error::permanent(format!("request denied: {m}")),
            HttpError::Timeout(m) => Error::transient(format!("request timed out: {m}")),
            HttpError::TooLarge(m) => Error::permanent(format!("too large: {m}")),
            HttpError::Connection(m) => Error::transient(format!("connection failed: {m}")),
            HttpError::InvalidRequest(m) => Error::invalid_input(format!("invalid request: {m}")),
        }
    }
}

impl Error {
    /// The same error with `what: ` before its message.
    fn prefixed(self, what: &str) -> Self {
        match self {
            Error::Transient(m) => Error::Transient(format!("{what}: {m}")),
            Error::RateLimited {
                retry_after_ms,
                message,
            } => Error::RateLimited {
                retry_after_ms,
                message: format!("{what}: {message}"),
            },
            Error::Auth(m) => Error::Auth(format!("{what}: {m}")),
            Error::InvalidInput(m) => Error::InvalidInput(format!("{what}: {m}")),
            Error::Permanent(m) => Error::Permanent(format!("{what}: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            method: "GET".into(),
            url: "https://api.test/x".into(),
        }
    }

    fn now() -> SystemTime {
        httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap()
    }

    #[test]
    fn status_mapping() {
        type Case = (
            u16,
            &'static [(&'static str, &'static str)],
            &'static str,
            Option<Error>,
        );
        let cases: &[Case] = &[
            (200, &[], "ok", None),
            (204, &[], "", None),
            (304, &[], "", None),
            (
                429,
                &[("Retry-After", "3")],
                "",
                Some(Error::rate_limited(
                    3000,
                    "GET https://api.test/x returned 429",
                )),
            ),
            (
                429,
                &[],
                "",
                Some(Error::rate_limited(
                    1000,
                    "GET https://api.test/x returned 429",
                )),
            ),
            (
                429,
                &[("retry-after", "soon")],
                "",
                Some(Error::rate_limited(
                    1000,
                    "GET https://api.test/x returned 429",
                )),
            ),
            (
                401,
                &[],
                "bad key",
                Some(Error::auth("GET https://api.test/x returned 401: bad key")),
            ),
            (
                403,
                &[],
                "",
                Some(Error::auth("GET https://api.test/x returned 403")),
            ),
            (
                408,
                &[],
                "",
                Some(Error::transient("GET https://api.test/x returned 408")),
            ),
            (
                500,
                &[],
                "boom",
                Some(Error::transient(
                    "GET https://api.test/x returned 500: boom",
                )),
            ),
            (
                503,
                &[("Retry-After", "5")],
                "",
                Some(Error::transient("GET https://api.test/x returned 503")),
            ),
            (
                404,
                &[],
                " not found\n",
                Some(Error::invalid_input(
                    "GET https://api.test/x returned 404: not found",
                )),
            ),
            (
                422,
                &[],
                r#"{"error":"name is required"}"#,
                Some(Error::invalid_input(
                    r#"GET https://api.test/x returned 422: {"error":"name is required"}"#,
                )),
            ),
        ];
        for (status, headers, body, expected) in cases {
            let got = response(*status, headers, body).status_error(now());
            assert_eq!(&got, expected, "status {status}");
        }
    }

    #[test]
    fn long_bodies_are_cut_to_500_chars() {
        let body = "é".repeat(600);
        let Some(Error::InvalidInput(message)) = response(400, &[], &body).status_error(now())
        else {
            panic!("expected invalid input");
        };
        let expected = format!(
            "GET https://api.test/x returned 400: {}...",
            "é".repeat(500)
        );
        assert_eq!(message, expected);
    }

    #[test]
    fn retry_after_values() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("120", Some(120_000)),
            (" 7 ", Some(7_000)),
            ("Sun, 06 Nov 1994 08:49:47 GMT", Some(10_000)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(0)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(0)),
            ("Sunday, 06-Nov-94 08:50:37 GMT", Some(60_000)),
            ("-1", None),
            ("1.5", Some(1_500)),
            ("2.0", Some(2_000)),
            ("0.25", Some(250)),
            ("0.0001", Some(1)),
            ("1.", None),
            (".5", None),
            ("-1.5", None),
            ("tomorrow", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(retry_after_ms(value, now()), *expected, "{value:?}");
        }
        assert_eq!(
            retry_after_ms("18446744073709551615", now()),
            Some(u64::MAX)
        );
    }

    #[test]
    fn http_errors_map_to_connector_errors() {
        let cases = [
            (HttpError::Denied("host not allowed".into()), "permanent"),
            (HttpError::Timeout("30 s".into()), "transient"),
            (HttpError::TooLarge("10 MiB".into()), "permanent"),
            (HttpError::Connection("refused".into()), "transient"),
            (HttpError::InvalidRequest("bad url".into()), "invalid input"),
        ];
        for (http_error, kind) in cases {
            let error = Error::from(http_error).prefixed("GET u");
            assert!(error.to_string().starts_with(kind), "{error}");
            assert!(error.message().starts_with("GET u: "), "{error}");
        }
        assert_eq!(
            Error::from(HttpError::Denied("host not allowed".into())),
            Error::permanent("request denied: host not allowed")
        );
    }

    #[test]
    fn builder() {
        let req = Request::post("https://api.test/items")
            .query("since", "a b&c")
            .query("n", "1")
            .header("Idempotency-Key", "k1")
            .json(&serde_json::json!({ "name": "x" }));
        assert_eq!(req.url, "https://api.test/items?since=a%20b%26c&n=1");
        assert_eq!(
            find_header(&req.headers, "content-type"),
            Some("application/json")
        );
        assert_eq!(find_header(&req.headers, "IDEMPOTENCY-KEY"), Some("k1"));
        assert_eq!(req.body, br#"{"name":"x"}"#);
        assert_eq!(percent_encode("a/b é"), "a%2Fb%20%C3%A9");
    }

    #[test]
    fn response_helpers() {
        let r = response(200, &[("Content-Type", "application/json")], r#"{"a":1}"#);
        assert!(r.is_success());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json::<serde_json::Value>().unwrap()["a"], 1);
        assert!(matches!(
            response(200, &[], "<html>").json::<serde_json::Value>(),
            Err(Error::Permanent(_))
        ));
    }
}
