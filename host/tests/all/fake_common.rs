//! What the third-party fakes share: a server on 127.0.0.2 that stops when
//! dropped, scripted faults (the next N requests fail with 503, or get 429
//! with Retry-After), a log of the requests seen, and a logical clock so
//! timestamps are distinct and ordered without sleeping.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::Response,
};
use serde_json::Value;

pub use crate::fake_api::Server;

/// Serves `router` on 127.0.0.2 behind the scripted faults and the request log.
pub async fn serve(router: Router, gate: Gate) -> Server {
    Server::start(router.layer(middleware::from_fn_with_state(gate, admit))).await
}

/// A request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
}

/// One scripted fault, used up by one request.
#[derive(Debug, Clone)]
enum Fault {
    Status(StatusCode),
    RateLimited { retry_after: String },
}

/// Faults to answer before the API proper, and the log of requests.
#[derive(Clone, Default)]
pub struct Gate {
    faults: Arc<Mutex<VecDeque<Fault>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How the API words an error body: `{"message": ...}` or WordPress's shape.
    error_body: Option<fn(StatusCode, &str) -> Value>,
}

impl Gate {
    pub fn new(error_body: fn(StatusCode, &str) -> Value) -> Gate {
        Gate {
            error_body: Some(error_body),
            ..Gate::default()
        }
    }

    /// The next `n` requests fail with `status` (a 503 from a load balancer).
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a status code");
        let mut faults = self.faults.lock().unwrap();
        faults.extend(std::iter::repeat_n(Fault::Status(status), n));
    }

    /// The next `n` requests get 429 with this `Retry-After` (seconds or a date).
    pub fn rate_limit_next(&self, n: usize, retry_after: &str) {
        let mut faults = self.faults.lock().unwrap();
        faults.extend(std::iter::repeat_n(
            Fault::RateLimited {
                retry_after: retry_after.to_string(),
            },
            n,
        ));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A JSON error response in the API's shape.
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = (self.error_body.unwrap_or(plain_error))(status, message);
        json_response(status, &[], &body)
    }
}

fn plain_error(_: StatusCode, message: &str) -> Value {
    serde_json::json!({ "message": message })
}

async fn admit(
    axum::extract::State(gate): axum::extract::State<Gate>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    gate.seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        uri: request
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authorization: header(headers, "authorization"),
        idempotency_key: header(headers, "idempotency-key"),
    });
    let fault = gate.faults.lock().unwrap().pop_front();
    match fault {
        Some(Fault::Status(status)) => gate.error(status, "the service is temporarily unavailable"),
        Some(Fault::RateLimited { retry_after }) => {
            let mut response = gate.error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
            response
                .headers_mut()
                .insert("retry-after", retry_after.parse().unwrap());
            response
        }
        None => next.run(request).await,
    }
}

pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub fn json_response(status: StatusCode, headers: &[(&str, String)], body: &Value) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

/// A logical clock: every tick is one second after the previous one, from
/// 2025-01-01T00:00:00, so each change has its own ordered timestamp.
#[derive(Default)]
pub struct Clock {
    ticks: u64,
}

impl Clock {
    /// The next timestamp as `2025-01-DDTHH:MM:SS` (no zone).
    pub fn tick(&mut self) -> String {
        self.ticks += 1;
        let t = self.ticks;
        assert!(t < 30 * 86_400, "the fake's clock ran out of January");
        format!(
            "2025-01-{:02}T{:02}:{:02}:{:02}",
            1 + t / 86_400,
            t / 3600 % 24,
            t / 60 % 60,
            t % 60
        )
    }
}

/// `hmac-sha256(secret, body)`.
pub fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}
