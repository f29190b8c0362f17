//! A fake shipping aggregator API (the Shiprocket/Delhivery role) for the
//! `shipping` connector (`plugins/shipping-py`), on 127.0.0.2.
//!
//! It behaves like such an API: bearer auth ([`TOKEN`], 401 otherwise),
//! `GET /tracking?updated_since=&page=&per_page=&order=` with
//! `{"data": [...], "meta": {"page", "per_page", "total", "total_pages"}}`,
//! `GET /tracking/{awb}` (404 when unknown), `POST /shipments` that needs an
//! `Idempotency-Key` and books once per key, webhook registration
//! (`POST /webhooks`, `DELETE /webhooks/{id}`), and deliveries signed with
//! `X-Shipping-Signature: sha256=<hex HMAC-SHA256 of the body>` under
//! [`WEBHOOK_SECRET`]. Faults are scripted through [`FakeShipping::gate`].
//!
//! Driving it: [`FakeShipping::add_shipment`] and [`FakeShipping::set_status`]
//! change the carrier's side (each change gets a later `updated_at`);
//! [`FakeShipping::delivery`] builds a signed webhook delivery and
//! [`FakeShipping::notify`] posts one to every registered webhook (for end to
//! end tests through the host's ingress). [`FakeShipping::applied`] lists the
//! mutations the API carried out, for exactly-once assertions.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{delete, get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fake_common::{Clock, Gate, Seen, Server, header, hmac_sha256, json_response, serve};

/// The API token the fake accepts (`Authorization: Bearer`).
pub const TOKEN: &str = "shp-live-7c1f0e9a4b2d";
/// The account's webhook signing secret.
pub const WEBHOOK_SECRET: &str = "shp-whsec-52be81d4a09c";

/// A change the API carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// `create-shipment`, `subscribe` or `unsubscribe`.
    pub kind: &'static str,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Data {
    clock: Clock,
    /// By AWB.
    shipments: BTreeMap<String, Value>,
    next_awb: u64,
    /// Idempotency key -> (request body, response body).
    idempotency: HashMap<String, (Value, Value)>,
    applied: Vec<Mutation>,
    /// Webhook id -> registration.
    webhooks: BTreeMap<String, Value>,
    next_webhook: u64,
    next_delivery: u64,
}

#[derive(Clone)]
struct Api {
    state: Arc<Mutex<Data>>,
    gate: Gate,
}

pub struct FakeShipping {
    pub origin: String,
    /// Scripted faults and the log of requests.
    pub gate: Gate,
    state: Arc<Mutex<Data>>,
    _server: Server,
}

impl FakeShipping {
    pub async fn start() -> FakeShipping {
        let api = Api {
            state: Arc::default(),
            gate: Gate::default(),
        };
        let router = Router::new()
            .route("/account", get(account))
            .route("/tracking", get(list_tracking))
            .route("/tracking/{awb}", get(get_tracking))
            .route("/shipments", post(create_shipment))
            .route("/webhooks", post(create_webhook))
            .route("/webhooks/{id}", delete(delete_webhook))
            .with_state(api.clone());
        let server = serve(router, api.gate.clone()).await;
        FakeShipping {
            origin: server.origin.clone(),
            gate: api.gate,
            state: api.state,
            _server: server,
        }
    }

    /// A shipment booked outside the connector; returns its tracking record.
    pub fn add_shipment(&self, order_ref: &str, status: &str) -> Value {
        let mut state = self.state.lock().unwrap();
        new_shipment(&mut state, order_ref, "Delhivery", status)
    }

    /// The carrier reports a new status; returns the updated record.
    pub fn set_status(&self, awb: &str, status: &str) -> Value {
        let mut state = self.state.lock().unwrap();
        let updated_at = rfc3339(state.clock.tick());
        let record = state
            .shipments
            .get_mut(awb)
            .unwrap_or_else(|| panic!("no shipment {awb}"));
        record["status"] = json!(status);
        record["status_detail"] = json!(format!("Shipment {}", status.to_lowercase()));
        record["updated_at"] = json!(updated_at);
        record.clone()
    }

    pub fn shipment(&self, awb: &str) -> Option<Value> {
        self.state.lock().unwrap().shipments.get(awb).cloned()
    }

    /// The mutations the API carried out, in order (a replayed request is not one).
    pub fn applied(&self) -> Vec<Mutation> {
        self.state.lock().unwrap().applied.clone()
    }

    /// Registered webhooks (`{"id", "url", "events"}`).
    pub fn webhooks(&self) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state.webhooks.values().cloned().collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.gate.seen()
    }

    /// A signed `tracking.updated` delivery for `record`: headers and body.
    pub fn delivery(&self, record: &Value) -> (Vec<(String, String)>, Vec<u8>) {
        let id = {
            let mut state = self.state.lock().unwrap();
            state.next_delivery += 1;
            format!("dlv_{:06}", state.next_delivery)
        };
        let body = json!({ "event": "tracking.updated", "data": record })
            .to_string()
            .into_bytes();
        let headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (
                "X-Shipping-Event".to_string(),
                "tracking.updated".to_string(),
            ),
            ("X-Shipping-Delivery-Id".to_string(), id),
            ("X-Shipping-Signature".to_string(), sign(&body)),
        ];
        (headers, body)
    }

    /// Posts a signed delivery of `awb`'s current record to every registered
    /// webhook, as the aggregator does on a status change; returns each
    /// target's answer.
    pub async fn notify(&self, awb: &str) -> Vec<(String, u16)> {
        let record = self
            .shipment(awb)
            .unwrap_or_else(|| panic!("no shipment {awb}"));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut answers = Vec::new();
        for hook in self.webhooks() {
            let url = hook["url"].as_str().unwrap().to_string();
            let (headers, body) = self.delivery(&record);
            let mut request = client.post(&url).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let status = request.send().await.map_or(0, |r| r.status().as_u16());
            answers.push((url, status));
        }
        answers
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under [`WEBHOOK_SECRET`].
pub fn sign(body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(WEBHOOK_SECRET, body)))
}

fn rfc3339(logical: String) -> String {
    format!("{logical}Z")
}

fn new_shipment(state: &mut Data, order_ref: &str, courier: &str, status: &str) -> Value {
    state.next_awb += 1;
    let awb = format!("SY{:010}", 7_700_000_000 + state.next_awb);
    let record = json!({
        "awb": awb,
        "order_ref": order_ref,
        "courier": courier,
        "status": status,
        "status_detail": format!("Shipment {}", status.to_lowercase()),
        "location": "Bengaluru Hub",
        "updated_at": rfc3339(state.clock.tick()),
    });
    state.shipments.insert(awb, record.clone());
    record
}

impl Api {
    /// The bearer token check every endpoint makes: the 401 to answer, if any.
    fn unauthorized(&self, headers: &HeaderMap) -> Option<Response> {
        match header(headers, "authorization") {
            Some(value) if value == format!("Bearer {TOKEN}") => None,
            _ => Some(
                self.gate
                    .error(StatusCode::UNAUTHORIZED, "invalid or expired API token"),
            ),
        }
    }
}

async fn account(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    json_response(
        StatusCode::OK,
        &[],
        &json!({"company": "Acme Retail", "plan": "pro"}),
    )
}

#[derive(Deserialize)]
struct TrackingQuery {
    updated_since: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
    order: Option<String>,
}

async fn list_tracking(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<TrackingQuery>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    let per_page = query.per_page.unwrap_or(20);
    let page = query.page.unwrap_or(1);
    if per_page == 0 || per_page > 100 || page == 0 {
        return api.gate.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "page must be >= 1 and per_page 1..=100",
        );
    }
    let state = api.state.lock().unwrap();
    let mut records: Vec<&Value> = state
        .shipments
        .values()
        .filter(|r| {
            query
                .updated_since
                .as_deref()
                .is_none_or(|since| r["updated_at"].as_str().unwrap() > since)
        })
        .collect();
    records.sort_by_key(|r| {
        (
            r["updated_at"].as_str().unwrap().to_string(),
            r["awb"].as_str().unwrap().to_string(),
        )
    });
    if query.order.as_deref() == Some("desc") {
        records.reverse();
    }
    let total = records.len();
    let data: Vec<&Value> = records
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    json_response(
        StatusCode::OK,
        &[],
        &json!({
            "data": data,
            "meta": {
                "page": page,
                "per_page": per_page,
                "total": total,
                "total_pages": total.div_ceil(per_page),
            }
        }),
    )
}

async fn get_tracking(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(awb): Path<String>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    match api.state.lock().unwrap().shipments.get(&awb) {
        Some(record) => json_response(StatusCode::OK, &[], record),
        None => api.gate.error(
            StatusCode::NOT_FOUND,
            &format!("no shipment with AWB {awb}"),
        ),
    }
}

async fn create_shipment(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    let Some(key) = header(&headers, "idempotency-key") else {
        return api.gate.error(
            StatusCode::BAD_REQUEST,
            "the Idempotency-Key header is required",
        );
    };
    let mut state = api.state.lock().unwrap();
    if let Some((request, response)) = state.idempotency.get(&key) {
        if *request != body {
            return api.gate.error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used with a different request",
            );
        }
        return json_response(
            StatusCode::OK,
            &[("idempotent-replayed", "true".to_string())],
            response,
        );
    }
    let (Some(order_ref), Some(_), Some(destination)) = (
        body["order_ref"].as_str(),
        body["weight_grams"].as_u64(),
        body["destination"].as_object(),
    ) else {
        return api.gate.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "order_ref, weight_grams and destination are required",
        );
    };
    let routable = destination
        .get("pincode")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    if !routable {
        return api.gate.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "destination.pincode is required",
        );
    }
    let courier = body["courier"].as_str().unwrap_or("Delhivery").to_string();
    let record = new_shipment(&mut state, order_ref, &courier, "CREATED");
    state
        .idempotency
        .insert(key.clone(), (body.clone(), record.clone()));
    state.applied.push(Mutation {
        kind: "create-shipment",
        idempotency_key: Some(key),
        body,
    });
    json_response(StatusCode::CREATED, &[], &record)
}

async fn create_webhook(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    let Some(url) = body["url"].as_str().filter(|u| u.starts_with("http")) else {
        return api.gate.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "url must be an http(s) URL",
        );
    };
    let mut state = api.state.lock().unwrap();
    state.next_webhook += 1;
    let id = format!("wh_{}", state.next_webhook);
    let hook = json!({"id": id, "url": url, "events": body["events"]});
    state.webhooks.insert(id, hook.clone());
    state.applied.push(Mutation {
        kind: "subscribe",
        idempotency_key: header(&headers, "idempotency-key"),
        body,
    });
    json_response(StatusCode::CREATED, &[], &hook)
}

async fn delete_webhook(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    let mut state = api.state.lock().unwrap();
    if state.webhooks.remove(&id).is_none() {
        return api
            .gate
            .error(StatusCode::NOT_FOUND, &format!("no webhook {id}"));
    }
    state.applied.push(Mutation {
        kind: "unsubscribe",
        idempotency_key: None,
        body: json!({"id": id}),
    });
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(axum::body::Body::empty())
        .unwrap()
}
