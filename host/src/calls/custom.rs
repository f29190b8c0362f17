//! The custom API call of a connector compiled as a component: the plugin
//! has no such action, so the host makes the one request itself, through
//! the same `HttpSandbox::send` and the call's `Outbound` (allow-list,
//! SSRF guard, the connection's credentials, rate limit, journal). Still
//! the one way out; only no plugin code runs. A declarative connector's
//! custom API call is made by the interpreter instead, with the spec's
//! base URL and response rules.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    engine::{CallEnv, CallError, CallOutcome, ConnectorError, Journal},
    sandbox::{OutboundRequest, SendError},
};

/// Retry-After when a 429 gives none.
const DEFAULT_RETRY_AFTER_MS: u64 = 60_000;

pub(super) async fn call(env: CallEnv, input: &str, timeout: Duration) -> CallOutcome<String> {
    let started = Instant::now();
    let mut journal = Journal::default();
    let result = run(&env, input, timeout, &mut journal).await;
    CallOutcome {
        result: result.map_err(|error| CallError::Connector { error }),
        journal,
        duration: started.elapsed(),
    }
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidInput {
        message: message.into(),
    }
}

async fn run(
    env: &CallEnv,
    input: &str,
    timeout: Duration,
    journal: &mut Journal,
) -> Result<String, ConnectorError> {
    let input: Value =
        serde_json::from_str(input).map_err(|e| invalid(format!("the input is not JSON: {e}")))?;
    let outbound = env
        .outbound
        .as_ref()
        .ok_or_else(|| ConnectorError::Permanent {
            message: "this call has no network access".to_string(),
        })?;
    let method = input["method"]
        .as_str()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let path = input["path"]
        .as_str()
        .ok_or_else(|| invalid("custom-api-call needs a `path`"))?;
    let url = if path.starts_with("http://") || path.starts_with("https://") {
        path.to_string()
    } else {
        let base = outbound
            .allowed
            .iter()
            .find_map(|p| p.origin())
            .ok_or_else(|| {
                invalid("the connector allows no single host to join a relative path to; give an absolute URL")
            })?;
        format!("{base}/{}", path.trim_start_matches('/'))
    };
    let mut url =
        url::Url::parse(&url).map_err(|e| invalid(format!("`{url}` is not a URL: {e}")))?;
    if let Some(query) = input["query"].as_object() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            match value {
                Value::String(s) => pairs.append_pair(name, s),
                other => pairs.append_pair(name, &other.to_string()),
            };
        }
    }
    let mut headers: Vec<(String, String)> = input["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .filter_map(|(n, v)| v.as_str().map(|v| (n.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let body = match &input["body"] {
        Value::Null => Vec::new(),
        Value::String(text) => text.as_bytes().to_vec(),
        other => {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            other.to_string().into_bytes()
        }
    };
    let request = OutboundRequest {
        method: method.clone(),
        url: url.to_string(),
        headers,
        body,
        timeout: None,
    };
    let (result, exchanges) = outbound.sandbox.send(outbound, request, timeout).await;
    journal.exchanges.extend(exchanges);
    let what = format!("{method} {}", url.path());
    // As the SDK maps the sandbox's refusals.
    let response = result.map_err(|e| match e {
        SendError::Denied(m) | SendError::TooLarge(m) => ConnectorError::Permanent {
            message: format!("{what}: {m}"),
        },
        SendError::Timeout(m) | SendError::Connection(m) => ConnectorError::Transient {
            message: format!("{what}: {m}"),
        },
        SendError::InvalidRequest(m) => invalid(format!("{what}: {m}")),
        // The host's sign-in for the connection failed: that is the outcome.
        SendError::Login(failure) => failure.into(),
    })?;
    let text = String::from_utf8_lossy(&response.body).into_owned();
    let status = response.status;
    if status >= 400 {
        let snippet: String = text.trim().chars().take(300).collect();
        let message = format!("{what} returned {status}: {snippet}");
        return Err(match status {
            429 => ConnectorError::RateLimited {
                retry_after_ms: response
                    .header("retry-after")
                    .and_then(retry_after_ms)
                    .unwrap_or(DEFAULT_RETRY_AFTER_MS),
                message,
            },
            401 | 403 => ConnectorError::Auth { message },
            408 | 500.. => ConnectorError::Transient { message },
            _ => ConnectorError::InvalidInput { message },
        });
    }
    let headers: BTreeMap<String, String> = response
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok(json!({"status": status, "headers": headers, "body": body}).to_string())
}

/// Milliseconds of a `Retry-After`: seconds (`2` or `2.0`) or an HTTP date.
fn retry_after_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).ceil() as u64);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(wait.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        assert_eq!(retry_after_ms("2"), Some(2000));
        assert_eq!(retry_after_ms("2.0"), Some(2000));
        assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(retry_after_ms("soon"), None);
    }
}
