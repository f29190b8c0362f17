//! What the fakes of third-party APIs share: a loopback server that stops
//! when dropped, switches that make the next requests fail, idempotent
//! mutations recorded with their keys, a log of every request, replies, and
//! RFC 3339 text for the fakes' clocks.
//!
//! A fake keeps its state behind one `Arc<Mutex<..>>` that tests read and
//! change directly; handlers lock it without awaiting, so a test never sees
//! half a request applied.

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, Method, Uri},
    response::Response,
};
use serde_json::Value;

use crate::sandbox::serve_on_127_0_0_2;

/// A fake's HTTP server on 127.0.0.2 (the network the test hosts allow),
/// aborted when dropped, also when a test fails.
pub struct Server {
    /// `http://127.0.0.2:PORT`.
    pub origin: String,
    handle: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router) -> Server {
        let (origin, handle) = serve_on_127_0_0_2(router).await;
        Server { origin, handle }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// An answer of a fake: status, extra headers and a JSON body (`Null` for none).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn new(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn ok(body: Value) -> Reply {
        Reply::new(200, body)
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn into_response(self) -> Response {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let body = if self.body.is_null() {
            Body::empty()
        } else {
            builder = builder.header("content-type", "application/json; charset=utf-8");
            Body::from(self.body.to_string())
        };
        builder.body(body).unwrap()
    }
}

/// One request as a fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    /// The status the fake answered with.
    pub status: u16,
}

impl Received {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A change a fake applied, with the key it came with. A request replayed
/// from the idempotency store is not applied again and not recorded again,
/// so "exactly once" is one entry per key.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

/// Failures to serve instead of the real answer, for tests of retries.
#[derive(Debug, Default)]
pub struct Switches {
    /// Requests to let through before the failures start.
    pub fail_after: u32,
    /// How many requests then fail with `fail_status`.
    pub fail_next: u32,
    pub fail_status: u16,
    /// How many requests get 429 (before the fake's own rate limit).
    pub throttle_next: u32,
    /// How many mutations are applied but answered with 503, as if the
    /// response was lost on the way back.
    pub lose_next_responses: u32,
}

impl Switches {
    /// The status to fail this request with, if any, counting it.
    pub fn failure(&mut self) -> Option<u16> {
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            return Some(429);
        }
        if self.fail_next == 0 {
            return None;
        }
        if self.fail_after > 0 {
            self.fail_after -= 1;
            return None;
        }
        self.fail_next -= 1;
        Some(if self.fail_status == 0 {
            503
        } else {
            self.fail_status
        })
    }

    /// Whether to drop the answer of a mutation that was just applied.
    pub fn lose_response(&mut self) -> bool {
        if self.lose_next_responses > 0 {
            self.lose_next_responses -= 1;
            true
        } else {
            false
        }
    }
}

/// Answers stored by `Idempotency-Key`, with what the request was, so a
/// key reused for a different request is refused as Stripe does.
#[derive(Debug, Default)]
pub struct IdempotencyStore {
    answers: HashMap<String, (String, Reply)>,
}

/// What a replayed answer says about itself (as Stripe's `Idempotent-Replayed`).
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

impl IdempotencyStore {
    /// The stored answer for `key`, or `Err` with a 422 if the key was used
    /// for another request.
    pub fn replay(&self, key: &str, fingerprint: &str) -> Option<Result<Reply, ()>> {
        let (stored, reply) = self.answers.get(key)?;
        Some(if stored == fingerprint {
            Ok(reply.clone().header(REPLAYED_HEADER, "true"))
        } else {
            Err(())
        })
    }

    pub fn store(&mut self, key: &str, fingerprint: String, reply: &Reply) {
        self.answers
            .insert(key.to_string(), (fingerprint, reply.clone()));
    }
}

/// A request taken apart for a fake's router.
pub struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Incoming {
    pub fn new(method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> Incoming {
        let query = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Incoming {
            method,
            path: uri.path().to_string(),
            query,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON: {e}"))
    }

    pub fn is_mutation(&self) -> bool {
        matches!(
            self.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
    }

    /// What identifies the request for idempotency: method, path and body.
    pub fn fingerprint(&self) -> String {
        format!(
            "{} {} {}",
            self.method,
            self.path,
            String::from_utf8_lossy(&self.body)
        )
    }

    pub fn received(&self, status: u16) -> Received {
        Received {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            idempotency_key: self.header("idempotency-key").map(str::to_string),
            status,
        }
    }

    pub fn mutation(&self) -> Mutation {
        Mutation {
            method: self.method.to_string(),
            path: self.path.clone(),
            idempotency_key: self.header("idempotency-key").map(str::to_string),
            body: serde_json::from_slice(&self.body).unwrap_or(Value::Null),
        }
    }
}

/// What every fake keeps besides its data.
#[derive(Debug, Default)]
pub struct Common {
    pub switches: Switches,
    pub idempotency: IdempotencyStore,
    /// Every request, in order, with the status it got.
    pub requests: Vec<Received>,
    /// Every change applied, in order.
    pub mutations: Vec<Mutation>,
    /// Webhook deliveries made and not yet taken by a test.
    pub outbox: Vec<Delivery>,
}

/// A fake API's own parts; [`serve`] runs them in the order a real API does.
pub trait FakeApi {
    fn common(&mut self) -> &mut Common;
    /// The error answer with this status, in the API's error format.
    fn failure(&self, status: u16, message: &str) -> Reply;
    /// Authentication and rate limiting: headers to add to the answer, or a refusal.
    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply>;
    fn route(&mut self, request: &Incoming) -> Reply;
}

/// Serves one request: fail by switch, admit, replay by idempotency key or
/// apply (recording the mutation), maybe lose the answer; logs it.
pub fn serve(api: &mut impl FakeApi, request: &Incoming) -> Reply {
    let reply = serve_inner(api, request);
    api.common().requests.push(request.received(reply.status));
    reply
}

fn serve_inner(api: &mut impl FakeApi, request: &Incoming) -> Reply {
    if let Some(status) = api.common().switches.failure() {
        return api.failure(status, "failure switched on by the test");
    }
    let extra = match api.admit(request) {
        Ok(extra) => extra,
        Err(refusal) => return refusal,
    };
    let key = request
        .header("idempotency-key")
        .filter(|_| request.is_mutation());
    if let Some(key) = key {
        match api.common().idempotency.replay(key, &request.fingerprint()) {
            Some(Ok(reply)) => return with_headers(reply, extra),
            Some(Err(())) => {
                return api.failure(422, "this Idempotency-Key was used for another request");
            }
            None => {}
        }
    }
    let reply = with_headers(api.route(request), extra);
    if request.is_mutation() && reply.is_success() {
        let common = api.common();
        common.mutations.push(request.mutation());
        if let Some(key) = key {
            common.idempotency.store(key, request.fingerprint(), &reply);
        }
        if common.switches.lose_response() {
            return api.failure(503, "the answer was lost (switched on by the test)");
        }
    }
    reply
}

fn with_headers(mut reply: Reply, extra: Vec<(String, String)>) -> Reply {
    reply.headers.extend(extra);
    reply
}

/// A webhook delivery a fake made: where it goes and what it carries.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The registered address (empty for one made without a registration).
    pub address: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The same delivery with a header replaced (or removed when `None`).
    pub fn with_header(mut self, name: &str, value: Option<&str>) -> Delivery {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// What the host's engine takes for `handle_webhook`.
    pub fn input(&self) -> switchyard::engine::WebhookInput {
        switchyard::engine::WebhookInput {
            method: "POST".to_string(),
            query: String::new(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
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
