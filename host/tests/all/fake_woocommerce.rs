//! A fake WooCommerce store (REST API v3) for the `woocommerce` connector
//! (`plugins/woocommerce-js`), on 127.0.0.2.
//!
//! It behaves like WooCommerce: HTTP Basic with the consumer key and secret
//! ([`CONSUMER_KEY`], [`CONSUMER_SECRET`]; 401 otherwise), errors as
//! `{"code", "message", "data": {"status"}}`, `GET /wp-json/wc/v3/orders`
//! with `modified_after`, `dates_are_gmt`, `orderby`, `order`, `search`,
//! `page`, `per_page` (at most 100) and the `X-WP-Total` and
//! `X-WP-TotalPages` headers, `GET`/`PUT /orders/{id}` (400 for an unknown
//! status, 404 for an unknown order), `POST /orders/{id}/notes`, and
//! `order.created` deliveries signed with `X-WC-Webhook-Signature` (base64
//! HMAC-SHA256 of the body under [`WEBHOOK_SECRET`]). Faults are scripted
//! through [`FakeWooCommerce::gate`].
//!
//! Like WooCommerce it has no idempotency keys: a repeated request is applied
//! again. Every mutation is recorded with the `Idempotency-Key` the connector
//! sent anyway ([`FakeWooCommerce::mutations`]), so a test can assert that a
//! step was applied exactly once.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fake_common::{Clock, Gate, Seen, Server, header, hmac_sha256, json_response, serve};

pub const CONSUMER_KEY: &str = "ck_3f9d0c5e7a1b46d2a8e0f1c2b3d4e5f6a7b8c9d0";
pub const CONSUMER_SECRET: &str = "cs_8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5";
/// The secret set on the store's `order.created` webhook.
pub const WEBHOOK_SECRET: &str = "wc-whsec-0d1e2f3a4b5c";

/// WooCommerce's own order statuses, and `delivered`, which a status plugin
/// adds in many stores.
pub const STATUSES: &[&str] = &[
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "delivered",
];

/// A change the store carried out at the connector's request.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// `update-order` or `add-note`.
    pub kind: &'static str,
    pub order_id: u64,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Data {
    clock: Clock,
    orders: BTreeMap<u64, Value>,
    notes: BTreeMap<u64, Vec<Value>>,
    next_order: u64,
    next_note: u64,
    next_delivery: u64,
    mutations: Vec<Mutation>,
}

#[derive(Clone)]
struct Api {
    data: Arc<Mutex<Data>>,
    gate: Gate,
}

pub struct FakeWooCommerce {
    pub origin: String,
    /// Scripted faults and the log of requests.
    pub gate: Gate,
    data: Arc<Mutex<Data>>,
    _server: Server,
}

/// WordPress's error body.
fn wp_error(status: StatusCode, message: &str) -> Value {
    let code = match status {
        StatusCode::UNAUTHORIZED => "woocommerce_rest_cannot_view",
        StatusCode::NOT_FOUND => "woocommerce_rest_shop_order_invalid_id",
        StatusCode::BAD_REQUEST => "rest_invalid_param",
        _ => "http_request_failed",
    };
    json!({"code": code, "message": message, "data": {"status": status.as_u16()}})
}

impl FakeWooCommerce {
    pub async fn start() -> FakeWooCommerce {
        let api = Api {
            data: Arc::default(),
            gate: Gate::new(wp_error),
        };
        let router = Router::new()
            .route("/wp-json/wc/v3/orders", get(list_orders))
            .route(
                "/wp-json/wc/v3/orders/{id}",
                get(get_order).put(update_order),
            )
            .route("/wp-json/wc/v3/orders/{id}/notes", post(add_note))
            .with_state(api.clone());
        let server = serve(router, api.gate.clone()).await;
        FakeWooCommerce {
            origin: server.origin.clone(),
            gate: api.gate,
            data: api.data,
            _server: server,
        }
    }

    /// A customer places an order; returns it as the API shows it.
    pub fn add_order(&self, status: &str, total: &str) -> Value {
        let mut data = self.data.lock().unwrap();
        data.next_order += 1;
        let id = 1000 + data.next_order;
        let now = data.clock.tick();
        let order = json!({
            "id": id,
            "number": id.to_string(),
            "status": status,
            "currency": "INR",
            "total": total,
            "date_created_gmt": now,
            "date_modified_gmt": now,
            "billing": {"first_name": "Asha", "last_name": "Rao", "email": format!("asha{id}@example.com")},
            "shipping": {"city": "Bengaluru", "postcode": "560001"},
            "line_items": [{"id": id * 10, "sku": "TSHIRT-M", "quantity": 1, "total": total}],
        });
        data.orders.insert(id, order.clone());
        order
    }

    /// The shop manager changes an order in the admin; returns it.
    pub fn set_status(&self, id: u64, status: &str) -> Value {
        let mut data = self.data.lock().unwrap();
        let now = data.clock.tick();
        let order = data
            .orders
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no order {id}"));
        order["status"] = json!(status);
        order["date_modified_gmt"] = json!(now);
        order.clone()
    }

    pub fn order(&self, id: u64) -> Option<Value> {
        self.data.lock().unwrap().orders.get(&id).cloned()
    }

    pub fn notes(&self, id: u64) -> Vec<Value> {
        let data = self.data.lock().unwrap();
        data.notes.get(&id).cloned().unwrap_or_default()
    }

    /// The changes made through the API, in order.
    pub fn mutations(&self) -> Vec<Mutation> {
        self.data.lock().unwrap().mutations.clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.gate.seen()
    }

    /// A signed `order.created` delivery of `order`, as WooCommerce sends it.
    pub fn order_created_delivery(&self, order: &Value) -> (Vec<(String, String)>, Vec<u8>) {
        let delivery = {
            let mut data = self.data.lock().unwrap();
            data.next_delivery += 1;
            data.next_delivery
        };
        let body = order.to_string().into_bytes();
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("X-WC-Webhook-Source", format!("{}/", self.origin)),
            ("X-WC-Webhook-Topic", "order.created".to_string()),
            ("X-WC-Webhook-Resource", "order".to_string()),
            ("X-WC-Webhook-Event", "created".to_string()),
            ("X-WC-Webhook-ID", "7".to_string()),
            ("X-WC-Webhook-Delivery-ID", format!("{}", 5000 + delivery)),
            ("X-WC-Webhook-Signature", sign(&body)),
        ];
        let headers = headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        (headers, body)
    }

    /// The ping WooCommerce sends when a webhook is saved: form-encoded, no topic.
    pub fn ping_delivery(&self, webhook_id: u64) -> (Vec<(String, String)>, Vec<u8>) {
        let body = format!("webhook_id={webhook_id}").into_bytes();
        let headers = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            (
                "X-WC-Webhook-Source".to_string(),
                format!("{}/", self.origin),
            ),
        ];
        (headers, body)
    }
}

/// The base64 HMAC-SHA256 of `body` under [`WEBHOOK_SECRET`].
pub fn sign(body: &[u8]) -> String {
    BASE64.encode(hmac_sha256(WEBHOOK_SECRET, body))
}

impl Api {
    /// The Basic credentials check every endpoint makes: the 401 to answer, if any.
    fn unauthorized(&self, headers: &HeaderMap) -> Option<Response> {
        let expected = format!(
            "Basic {}",
            BASE64.encode(format!("{CONSUMER_KEY}:{CONSUMER_SECRET}"))
        );
        match header(headers, "authorization") {
            Some(value) if value == expected => None,
            _ => Some(self.gate.error(
                StatusCode::UNAUTHORIZED,
                "Sorry, you cannot list resources.",
            )),
        }
    }

    fn not_found(&self) -> Response {
        self.gate.error(StatusCode::NOT_FOUND, "Invalid ID.")
    }
}

#[derive(Deserialize)]
struct ListQuery {
    modified_after: Option<String>,
    search: Option<String>,
    orderby: Option<String>,
    order: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn list_orders(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    let per_page = query.per_page.unwrap_or(10);
    let page = query.page.unwrap_or(1);
    if !(1..=100).contains(&per_page) || page == 0 {
        return api.gate.error(
            StatusCode::BAD_REQUEST,
            "Invalid parameter(s): per_page, page",
        );
    }
    let data = api.data.lock().unwrap();
    let mut orders: Vec<&Value> = data
        .orders
        .values()
        .filter(|o| {
            query.modified_after.as_deref().is_none_or(|after| {
                o["date_modified_gmt"].as_str().unwrap() > after.trim_end_matches('Z')
            })
        })
        .filter(|o| {
            query.search.as_deref().is_none_or(|s| {
                o["number"] == json!(s) || o["billing"]["email"].as_str().unwrap().contains(s)
            })
        })
        .collect();
    // WooCommerce lists newest first by creation date unless told otherwise.
    let field = match query.orderby.as_deref() {
        Some("modified") => "date_modified_gmt",
        Some("id") => "id",
        _ => "date_created_gmt",
    };
    orders.sort_by_key(|o| (o[field].to_string(), o["id"].as_u64().unwrap()));
    if query.order.as_deref() != Some("asc") {
        orders.reverse();
    }
    let total = orders.len();
    let page_of: Vec<&Value> = orders
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    json_response(
        StatusCode::OK,
        &[
            ("x-wp-total", total.to_string()),
            ("x-wp-totalpages", total.div_ceil(per_page).to_string()),
        ],
        &json!(page_of),
    )
}

async fn get_order(State(api): State<Api>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    match api.data.lock().unwrap().orders.get(&id) {
        Some(order) => json_response(StatusCode::OK, &[], order),
        None => api.not_found(),
    }
}

async fn update_order(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    if let Some(status) = body.get("status")
        && !status.as_str().is_some_and(|s| STATUSES.contains(&s))
    {
        return api.gate.error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid parameter(s): status ({status} is not one of {STATUSES:?})"),
        );
    }
    let mut data = api.data.lock().unwrap();
    if !data.orders.contains_key(&id) {
        return api.not_found();
    }
    let now = data.clock.tick();
    let order = data.orders.get_mut(&id).unwrap();
    if let Some(status) = body.get("status") {
        order["status"] = status.clone();
    }
    order["date_modified_gmt"] = json!(now);
    let order = order.clone();
    data.mutations.push(Mutation {
        kind: "update-order",
        order_id: id,
        idempotency_key: header(&headers, "idempotency-key"),
        body,
    });
    json_response(StatusCode::OK, &[], &order)
}

async fn add_note(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(denied) = api.unauthorized(&headers) {
        return denied;
    }
    let Some(text) = body["note"].as_str().filter(|n| !n.is_empty()) else {
        return api
            .gate
            .error(StatusCode::BAD_REQUEST, "Missing parameter(s): note");
    };
    let mut data = api.data.lock().unwrap();
    if !data.orders.contains_key(&id) {
        return api.not_found();
    }
    data.next_note += 1;
    let note = json!({
        "id": data.next_note,
        "author": "WooCommerce",
        "date_created_gmt": data.clock.tick(),
        "note": text,
        "customer_note": body["customer_note"].as_bool().unwrap_or(false),
    });
    data.notes.entry(id).or_default().push(note.clone());
    data.mutations.push(Mutation {
        kind: "add-note",
        order_id: id,
        idempotency_key: header(&headers, "idempotency-key"),
        body,
    });
    json_response(StatusCode::CREATED, &[], &note)
}
