//! The one framework of the third-party fakes. A fake is its API's data and
//! rules (a [`FakeApi`]: admission, routes, the API's error format) behind
//! a [`Fake`] handle that serves it on 127.0.0.2 (the network test hosts
//! allow) until dropped, and gives every fake the same test controls:
//!
//! - scripted faults: the next N requests fail with a status, get 429 with a
//!   `Retry-After`, or pass; the answers of the next N applied writes are
//!   lost (503 after the change is made);
//! - a slow API (latency per request) and held requests (answered only when
//!   the test releases them), with the most requests in flight at once;
//! - the log of every request with the status it got, the writes applied
//!   (a replay by `Idempotency-Key` is not applied again), and the webhook
//!   deliveries the API made.
//!
//! A fake keeps its state behind one `Arc<Mutex<..>>` that tests read and
//! change directly; the API's part runs under that lock without awaiting, so
//! a test never sees half a request applied.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, Uri},
    response::Response,
};
use serde_json::Value;

/// An HTTP server on 127.0.0.2, aborted when dropped (also when a test fails).
pub struct Server {
    /// `http://127.0.0.2:PORT`.
    pub origin: String,
    handle: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Server { origin, handle }
    }

    /// A server for `serve`, which owns the listener (for servers that are
    /// not HTTP APIs: one that hangs up, one that never answers).
    pub async fn raw<F>(serve: impl FnOnce(tokio::net::TcpListener) -> F) -> Server
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(serve(listener));
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

/// A request taken apart for a fake's routes.
pub struct Incoming {
    pub method: Method,
    /// The path as sent (percent-encoding kept), without the query.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Path and query, as sent.
    uri: String,
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
            uri: uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
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

    /// The path's segments after the leading `/`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_start_matches('/').split('/').collect()
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
    fn fingerprint(&self) -> String {
        format!(
            "{} {} {}",
            self.method,
            self.path,
            String::from_utf8_lossy(&self.body)
        )
    }

    fn received(&self, status: u16) -> Received {
        Received {
            method: self.method.to_string(),
            path: self.path.clone(),
            uri: self.uri.clone(),
            query: self.query.clone(),
            authorization: self.header("authorization").map(str::to_string),
            idempotency_key: self.header("idempotency-key").map(str::to_string),
            status,
        }
    }

    fn mutation(&self) -> Mutation {
        Mutation {
            method: self.method.to_string(),
            path: self.path.clone(),
            idempotency_key: self.header("idempotency-key").map(str::to_string),
            body: serde_json::from_slice(&self.body).unwrap_or(Value::Null),
        }
    }
}

/// One request as a fake received it, and the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path without the query, as sent.
    pub path: String,
    /// Path and query, as sent.
    pub uri: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
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

/// A write a fake applied, with the key it came with. A request replayed
/// from the idempotency store is not applied again and not recorded again,
/// so "exactly once" is one entry per key.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

/// One scripted answer, used up by one request.
#[derive(Debug, Clone)]
enum Scripted {
    /// Served as usual.
    Pass,
    Fail(u16),
    RateLimited {
        retry_after: String,
    },
}

/// Failures to serve instead of the real answer, in order, for tests of
/// retries; they come before the API's own checks, as from a load balancer.
#[derive(Debug, Default)]
pub struct Faults {
    script: VecDeque<Scripted>,
    /// Applied writes whose answer is replaced by a 503.
    lose_responses: u32,
}

impl Faults {
    /// The next `n` requests fail with `status`.
    pub fn fail_next(&mut self, n: u32, status: u16) {
        let failures = std::iter::repeat_n(Scripted::Fail(status), n as usize);
        self.script.extend(failures);
    }

    /// The next `ok` requests pass, then `n` fail with `status`.
    pub fn fail_after(&mut self, ok: u32, n: u32, status: u16) {
        self.script
            .extend(std::iter::repeat_n(Scripted::Pass, ok as usize));
        self.fail_next(n, status);
    }

    /// The next `n` requests get 429 with this `Retry-After` (seconds or a date).
    pub fn rate_limit_next(&mut self, n: u32, retry_after: &str) {
        let limited = Scripted::RateLimited {
            retry_after: retry_after.to_string(),
        };
        self.script.extend(std::iter::repeat_n(limited, n as usize));
    }

    /// The next `n` writes are applied but answered with 503, as if the
    /// answer was lost on the way back.
    pub fn lose_next_responses(&mut self, n: u32) {
        self.lose_responses += n;
    }

    fn lose_response(&mut self) -> bool {
        let lose = self.lose_responses > 0;
        self.lose_responses = self.lose_responses.saturating_sub(1);
        lose
    }
}

/// Answers stored by `Idempotency-Key`, with what the request was, so a
/// key reused for a different request is refused as Stripe does.
#[derive(Debug, Default)]
struct IdempotencyStore {
    answers: HashMap<String, (String, Reply)>,
}

/// What a replayed answer says about itself (as Stripe's `Idempotent-Replayed`).
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

impl IdempotencyStore {
    /// The stored answer for `key`, or `Err` if the key was used for
    /// another request.
    fn replay(&self, key: &str, fingerprint: &str) -> Option<Result<Reply, ()>> {
        let (stored, reply) = self.answers.get(key)?;
        Some(if stored == fingerprint {
            Ok(reply.clone().header(REPLAYED_HEADER, "true"))
        } else {
            Err(())
        })
    }

    fn store(&mut self, key: &str, fingerprint: String, reply: &Reply) {
        self.answers
            .insert(key.to_string(), (fingerprint, reply.clone()));
    }
}

/// Requests held until the test releases them.
struct Hold {
    matches: fn(&Incoming) -> bool,
    open: tokio::sync::watch::Sender<bool>,
}

/// What every fake keeps besides its data.
#[derive(Default)]
pub struct Common {
    pub faults: Faults,
    idempotency: IdempotencyStore,
    /// Every request, in order, with the status it got.
    pub requests: Vec<Received>,
    /// Every write applied, in order.
    pub mutations: Vec<Mutation>,
    /// Webhook deliveries made and not yet taken by a test.
    pub outbox: Vec<Delivery>,
    /// How long the API takes to answer each request.
    latency: Duration,
    hold: Option<Hold>,
    held: usize,
    in_flight: usize,
    max_in_flight: usize,
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("faults", &self.faults)
            .field("requests", &self.requests.len())
            .field("mutations", &self.mutations.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

/// A fake API's own parts; the framework runs them in the order a real API
/// does (faults, admission, idempotent replay, routes).
pub trait FakeApi: Send + 'static {
    fn common(&mut self) -> &mut Common;
    /// The error answer with this status, in the API's error format.
    fn failure(&self, status: u16, message: &str) -> Reply;
    /// Authentication and rate limiting: headers to add to the answer, or a refusal.
    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply>;
    fn route(&mut self, request: &Incoming) -> Reply;
    /// Whether a write repeated with its `Idempotency-Key` gets the first
    /// answer again instead of being applied again (WooCommerce has no keys).
    fn replays_idempotency_keys(&self) -> bool {
        true
    }
}

/// Serves one request: scripted fault, admission, replay by idempotency key
/// or routing (recording an applied write), maybe a lost answer; logs it.
fn answer(api: &mut impl FakeApi, request: &Incoming) -> Reply {
    let reply = answer_inner(api, request);
    api.common().requests.push(request.received(reply.status));
    reply
}

fn answer_inner(api: &mut impl FakeApi, request: &Incoming) -> Reply {
    match api.common().faults.script.pop_front() {
        None | Some(Scripted::Pass) => {}
        Some(Scripted::Fail(status)) => {
            return api.failure(status, "the service is temporarily unavailable");
        }
        Some(Scripted::RateLimited { retry_after }) => {
            return api
                .failure(429, "too many requests")
                .header("Retry-After", retry_after);
        }
    }
    let extra = match api.admit(request) {
        Ok(extra) => extra,
        Err(refusal) => return refusal,
    };
    let key = request
        .header("idempotency-key")
        .filter(|_| request.is_mutation() && api.replays_idempotency_keys());
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
        if common.faults.lose_response() {
            return api.failure(503, "the answer was lost (a scripted fault)");
        }
    }
    reply
}

fn with_headers(mut reply: Reply, extra: Vec<(String, String)>) -> Reply {
    reply.headers.extend(extra);
    reply
}

/// A running fake of one API, stopped when dropped.
pub struct Fake<A> {
    pub server: Server,
    state: Arc<Mutex<A>>,
}

impl<A: FakeApi> Fake<A> {
    /// Serves `api` on 127.0.0.2 until the handle is dropped.
    pub async fn serve(api: A) -> Fake<A> {
        let state = Arc::new(Mutex::new(api));
        let router = Router::new()
            .fallback(handle::<A>)
            .with_state(state.clone());
        let server = Server::start(router).await;
        Fake { server, state }
    }

    /// `http://127.0.0.2:PORT`.
    pub fn origin(&self) -> &str {
        &self.server.origin
    }

    /// The API's state, for a test to read or change.
    pub fn lock(&self) -> MutexGuard<'_, A> {
        self.state.lock().unwrap()
    }

    fn common<R>(&self, f: impl FnOnce(&mut Common) -> R) -> R {
        f(self.lock().common())
    }

    /// The next `n` requests fail with `status` (a 503 from a load balancer).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.common(|c| c.faults.fail_next(n, status));
    }

    /// After `ok` more requests, the `n` following fail with `status`.
    pub fn fail_after(&self, ok: u32, n: u32, status: u16) {
        self.common(|c| c.faults.fail_after(ok, n, status));
    }

    /// The next `n` requests get 429 with this `Retry-After`.
    pub fn rate_limit_next(&self, n: u32, retry_after: &str) {
        self.common(|c| c.faults.rate_limit_next(n, retry_after));
    }

    /// The next `n` writes are applied but answered with 503.
    pub fn lose_next_responses(&self, n: u32) {
        self.common(|c| c.faults.lose_next_responses(n));
    }

    /// Every request so far, in order, with the status it got.
    pub fn requests(&self) -> Vec<Received> {
        self.common(|c| c.requests.clone())
    }

    /// Every write applied so far, in order.
    pub fn mutations(&self) -> Vec<Mutation> {
        self.common(|c| c.mutations.clone())
    }

    /// The deliveries made since the last call, oldest first.
    pub fn take_deliveries(&self) -> Vec<Delivery> {
        self.common(|c| std::mem::take(&mut c.outbox))
    }

    /// Every request from now on takes `latency` to answer (a slow API).
    pub fn set_latency(&self, latency: Duration) {
        self.common(|c| c.latency = latency);
    }

    /// Requests that `matches` accepts wait, unanswered, until [`Fake::release`].
    pub fn hold(&self, matches: fn(&Incoming) -> bool) {
        let (open, _) = tokio::sync::watch::channel(false);
        self.common(|c| c.hold = Some(Hold { matches, open }));
    }

    /// Lets the held requests (and the ones that would be) through.
    pub fn release(&self) {
        if let Some(hold) = self.common(|c| c.hold.take()) {
            hold.open.send_replace(true);
        }
    }

    /// How many requests are held now.
    pub fn held(&self) -> usize {
        self.common(|c| c.held)
    }

    /// The most requests the fake has had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.common(|c| c.max_in_flight)
    }
}

/// Counts a request in flight until it is answered or abandoned.
struct InFlight<A: FakeApi>(Arc<Mutex<A>>);

impl<A: FakeApi> InFlight<A> {
    fn enter(state: &Arc<Mutex<A>>) -> InFlight<A> {
        let mut api = state.lock().unwrap();
        let common = api.common();
        common.in_flight += 1;
        common.max_in_flight = common.max_in_flight.max(common.in_flight);
        InFlight(state.clone())
    }
}

impl<A: FakeApi> Drop for InFlight<A> {
    fn drop(&mut self) {
        if let Ok(mut api) = self.0.lock() {
            api.common().in_flight -= 1;
        }
    }
}

async fn handle<A: FakeApi>(
    State(state): State<Arc<Mutex<A>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Incoming::new(method, &uri, headers, body);
    let _in_flight = InFlight::enter(&state);
    let (latency, hold) = {
        let mut api = state.lock().unwrap();
        let common = api.common();
        let hold = common
            .hold
            .as_ref()
            .filter(|h| (h.matches)(&request))
            .map(|h| h.open.subscribe());
        common.held += usize::from(hold.is_some());
        (common.latency, hold)
    };
    if let Some(mut open) = hold {
        // The sender is dropped only with the fake itself.
        let _ = open.wait_for(|open| *open).await;
        state.lock().unwrap().common().held -= 1;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut api = state.lock().unwrap();
    answer(&mut *api, &request).into_response()
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

/// `hmac-sha256(secret, body)`, as webhook signatures are made.
pub fn hmac_sha256(secret: &[u8], body: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}
