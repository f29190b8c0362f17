//! What it means when the host's own sign-in for a connection (a session
//! login, an OAuth token request) is answered with an error. The host knows
//! this better than the plugin, which only sees an `http-error`: the failure
//! decides the call's outcome, so wrong credentials pause the connection
//! instead of being tried again until the account is locked.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use serde_json::Value;

use super::http::OutboundResponse;

/// Waited after a 429 that says nothing about how long to wait.
const DEFAULT_RETRY_AFTER_MS: u64 = 1_000;
/// Characters of an error answer quoted in the message.
const SNIPPET_CHARS: usize = 300;

/// A sign-in the host made for a connection and the server refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailure {
    pub kind: LoginFailureKind,
    /// e.g. `session login failed with HTTP 401: {"error":"bad credentials"}`.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailureKind {
    /// 401 or 403 (and OAuth's `invalid_client`, `invalid_grant`,
    /// `unauthorized_client`): the credentials are wrong, and signing in
    /// again with them can lock the account.
    Refused,
    /// 429: worth trying again after this long.
    RateLimited { retry_after_ms: u64 },
    /// 408 or 5xx: worth trying again.
    Unavailable,
    /// Any other answer, or one without a token: a problem of the manifest
    /// or the provider that trying again does not fix.
    Broken,
}

impl fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl LoginFailure {
    /// The failure a sign-in answered with a non-2xx `response` stands for;
    /// `what` opens the message ("session login failed with").
    pub fn from_answer(what: &str, response: &OutboundResponse, now: SystemTime) -> LoginFailure {
        let kind = match response.status {
            401 | 403 => LoginFailureKind::Refused,
            400 if oauth_error_is_refusal(&response.body) => LoginFailureKind::Refused,
            429 => LoginFailureKind::RateLimited {
                retry_after_ms: response
                    .header("retry-after")
                    .and_then(|v| retry_after_ms(v, now))
                    .unwrap_or(DEFAULT_RETRY_AFTER_MS),
            },
            408 | 500.. => LoginFailureKind::Unavailable,
            _ => LoginFailureKind::Broken,
        };
        LoginFailure {
            kind,
            message: format!(
                "{what} HTTP {}: {}",
                response.status,
                snippet(&response.body)
            ),
        }
    }

    pub fn broken(message: String) -> LoginFailure {
        LoginFailure {
            kind: LoginFailureKind::Broken,
            message,
        }
    }
}

/// RFC 6749 §5.2 errors that mean the client or the grant is not (or no
/// longer) good; providers answer them with 400 as often as with 401.
fn oauth_error_is_refusal(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| {
        matches!(
            v.get("error").and_then(Value::as_str),
            Some("invalid_client" | "invalid_grant" | "unauthorized_client")
        )
    })
}

/// The start of a body, for a message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// Milliseconds a `Retry-After` value asks to wait: delay-seconds (also
/// decimal, as Shopify sends `2.0`) or an HTTP date (one in the past means
/// now). `None` if it is neither.
pub fn retry_after_ms(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') && value.contains(char::is_numeric) {
        let seconds: f64 = value.parse().ok()?;
        return Some((seconds * 1000.0).ceil() as u64);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> OutboundResponse {
        OutboundResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_are_classified() {
        use LoginFailureKind::*;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let table = [
            (answer(401, &[], "bad credentials"), Refused),
            (answer(403, &[], "locked"), Refused),
            (answer(400, &[], r#"{"error":"invalid_grant"}"#), Refused),
            (answer(400, &[], r#"{"error":"invalid_client"}"#), Refused),
            (answer(400, &[], r#"{"error":"invalid_scope"}"#), Broken),
            (answer(400, &[], "not json"), Broken),
            (answer(404, &[], ""), Broken),
            (
                answer(429, &[("Retry-After", "7")], ""),
                RateLimited {
                    retry_after_ms: 7_000,
                },
            ),
            (
                answer(429, &[("retry-after", "2.0")], ""),
                RateLimited {
                    retry_after_ms: 2_000,
                },
            ),
            (
                answer(429, &[("retry-after", "Tue, 14 Nov 2023 22:13:30 GMT")], ""),
                RateLimited {
                    retry_after_ms: 10_000,
                },
            ),
            (
                answer(429, &[("retry-after", "soon")], ""),
                RateLimited {
                    retry_after_ms: DEFAULT_RETRY_AFTER_MS,
                },
            ),
            (answer(408, &[], ""), Unavailable),
            (answer(500, &[], ""), Unavailable),
            (answer(503, &[], "maintenance"), Unavailable),
        ];
        for (response, kind) in table {
            let failure = LoginFailure::from_answer("session login failed with", &response, now);
            assert_eq!(failure.kind, kind, "{}", failure.message);
            assert!(
                failure.message.starts_with(&format!(
                    "session login failed with HTTP {}",
                    response.status
                )),
                "{}",
                failure.message
            );
        }
        let long = "é".repeat(400);
        let message = LoginFailure::from_answer("x", &answer(500, &[], &long), now).message;
        assert!(message.ends_with("...") && message.chars().count() < 320);
    }
}
