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
//! HMAC-SHA256 of the body under [`WEBHOOK_SECRET`]). Faults, the request
//! log and the applied writes are the framework's (`support::fake`).
//!
//! Like WooCommerce it has no idempotency keys: a repeated request is applied
//! again. Every write is recorded with the `Idempotency-Key` the connector
//! sent anyway (`mutations()`), so a test can assert that a step was applied
//! exactly once.

use std::collections::BTreeMap;

use axum::http::Method;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};

use crate::support::{
    clock::Clock,
    fake::{Common, Delivery, Fake, FakeApi, Incoming, Reply, hmac_sha256},
};

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

/// A running fake, stopped when dropped.
pub type FakeWooCommerce = Fake<Store>;

/// The store's data.
#[derive(Debug, Default)]
pub struct Store {
    common: Common,
    clock: Clock,
    orders: BTreeMap<u64, Value>,
    notes: BTreeMap<u64, Vec<Value>>,
    next_order: u64,
    next_note: u64,
    next_delivery: u64,
}

/// WordPress's error answer.
fn wp_error(status: u16, message: &str) -> Reply {
    let code = match status {
        401 => "woocommerce_rest_cannot_view",
        404 => "woocommerce_rest_shop_order_invalid_id",
        400 => "rest_invalid_param",
        _ => "http_request_failed",
    };
    Reply::new(
        status,
        json!({"code": code, "message": message, "data": {"status": status}}),
    )
}

fn not_found() -> Reply {
    wp_error(404, "Invalid ID.")
}

impl FakeWooCommerce {
    pub async fn start() -> FakeWooCommerce {
        Fake::serve(Store::default()).await
    }

    /// A customer places an order; returns it as the API shows it.
    pub fn add_order(&self, status: &str, total: &str) -> Value {
        let mut store = self.lock();
        store.next_order += 1;
        let id = 1000 + store.next_order;
        let now = store.clock.tick();
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
        store.orders.insert(id, order.clone());
        order
    }

    /// The shop manager changes an order in the admin; returns it.
    pub fn set_status(&self, id: u64, status: &str) -> Value {
        let mut store = self.lock();
        let now = store.clock.tick();
        let order = store
            .orders
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no order {id}"));
        order["status"] = json!(status);
        order["date_modified_gmt"] = json!(now);
        order.clone()
    }

    pub fn order(&self, id: u64) -> Option<Value> {
        self.lock().orders.get(&id).cloned()
    }

    pub fn notes(&self, id: u64) -> Vec<Value> {
        self.lock().notes.get(&id).cloned().unwrap_or_default()
    }

    /// A signed `order.created` delivery of `order`, as WooCommerce sends it.
    pub fn order_created_delivery(&self, order: &Value) -> Delivery {
        let delivery = {
            let mut store = self.lock();
            store.next_delivery += 1;
            store.next_delivery
        };
        let body = order.to_string().into_bytes();
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("X-WC-Webhook-Source", format!("{}/", self.origin())),
            ("X-WC-Webhook-Topic", "order.created".to_string()),
            ("X-WC-Webhook-Resource", "order".to_string()),
            ("X-WC-Webhook-Event", "created".to_string()),
            ("X-WC-Webhook-ID", "7".to_string()),
            ("X-WC-Webhook-Delivery-ID", format!("{}", 5000 + delivery)),
            ("X-WC-Webhook-Signature", sign(&body)),
        ];
        Delivery {
            address: String::new(),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            body,
        }
    }

    /// The ping WooCommerce sends when a webhook is saved: form-encoded, no topic.
    pub fn ping_delivery(&self, webhook_id: u64) -> Delivery {
        let headers = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            (
                "X-WC-Webhook-Source".to_string(),
                format!("{}/", self.origin()),
            ),
        ];
        Delivery {
            address: String::new(),
            headers,
            body: format!("webhook_id={webhook_id}").into_bytes(),
        }
    }
}

/// The base64 HMAC-SHA256 of `body` under [`WEBHOOK_SECRET`].
pub fn sign(body: &[u8]) -> String {
    BASE64.encode(hmac_sha256(WEBHOOK_SECRET.as_bytes(), body))
}

impl FakeApi for Store {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn failure(&self, status: u16, message: &str) -> Reply {
        wp_error(status, message)
    }

    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply> {
        let expected = format!(
            "Basic {}",
            BASE64.encode(format!("{CONSUMER_KEY}:{CONSUMER_SECRET}"))
        );
        match request.header("authorization") {
            Some(value) if value == expected => Ok(Vec::new()),
            _ => Err(wp_error(401, "Sorry, you cannot list resources.")),
        }
    }

    fn route(&mut self, request: &Incoming) -> Reply {
        let Some(rest) = request.path.strip_prefix("/wp-json/wc/v3/orders") else {
            return wp_error(
                404,
                "No route was found matching the URL and request method.",
            );
        };
        let segments: Vec<&str> = rest.split('/').skip(1).collect();
        let id = segments.first().map(|s| s.parse::<u64>());
        match (&request.method, id, segments.get(1)) {
            (&Method::GET, None, None) => self.list_orders(request),
            (&Method::GET, Some(Ok(id)), None) => match self.orders.get(&id) {
                Some(order) => Reply::ok(order.clone()),
                None => not_found(),
            },
            (&Method::PUT, Some(Ok(id)), None) => match request.json() {
                Ok(body) => self.update_order(id, &body),
                Err(e) => wp_error(400, &e),
            },
            (&Method::POST, Some(Ok(id)), Some(&"notes")) => match request.json() {
                Ok(body) => self.add_note(id, &body),
                Err(e) => wp_error(400, &e),
            },
            _ => wp_error(
                404,
                "No route was found matching the URL and request method.",
            ),
        }
    }

    fn replays_idempotency_keys(&self) -> bool {
        false
    }
}

impl Store {
    fn list_orders(&self, request: &Incoming) -> Reply {
        let number = |name: &str, default: usize| match request.param(name) {
            None => Some(default),
            Some(text) => text.parse::<usize>().ok(),
        };
        let (Some(per_page), Some(page)) = (number("per_page", 10), number("page", 1)) else {
            return wp_error(400, "Invalid parameter(s): per_page, page");
        };
        if !(1..=100).contains(&per_page) || page == 0 {
            return wp_error(400, "Invalid parameter(s): per_page, page");
        }
        let mut orders: Vec<&Value> = self
            .orders
            .values()
            .filter(|o| {
                request.param("modified_after").is_none_or(|after| {
                    o["date_modified_gmt"].as_str().unwrap() > after.trim_end_matches('Z')
                })
            })
            .filter(|o| {
                request.param("search").is_none_or(|s| {
                    o["number"] == json!(s) || o["billing"]["email"].as_str().unwrap().contains(s)
                })
            })
            .collect();
        // WooCommerce lists newest first by creation date unless told otherwise.
        let field = match request.param("orderby") {
            Some("modified") => "date_modified_gmt",
            Some("id") => "id",
            _ => "date_created_gmt",
        };
        orders.sort_by_key(|o| (o[field].to_string(), o["id"].as_u64().unwrap()));
        if request.param("order") != Some("asc") {
            orders.reverse();
        }
        let total = orders.len();
        let page_of: Vec<&Value> = orders
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        Reply::ok(json!(page_of))
            .header("X-WP-Total", total.to_string())
            .header("X-WP-TotalPages", total.div_ceil(per_page).to_string())
    }

    fn update_order(&mut self, id: u64, body: &Value) -> Reply {
        if let Some(status) = body.get("status")
            && !status.as_str().is_some_and(|s| STATUSES.contains(&s))
        {
            return wp_error(
                400,
                &format!("Invalid parameter(s): status ({status} is not one of {STATUSES:?})"),
            );
        }
        if !self.orders.contains_key(&id) {
            return not_found();
        }
        let now = self.clock.tick();
        let order = self.orders.get_mut(&id).unwrap();
        if let Some(status) = body.get("status") {
            order["status"] = status.clone();
        }
        order["date_modified_gmt"] = json!(now);
        Reply::ok(order.clone())
    }

    fn add_note(&mut self, id: u64, body: &Value) -> Reply {
        let Some(text) = body["note"].as_str().filter(|n| !n.is_empty()) else {
            return wp_error(400, "Missing parameter(s): note");
        };
        if !self.orders.contains_key(&id) {
            return not_found();
        }
        self.next_note += 1;
        let note = json!({
            "id": self.next_note,
            "author": "WooCommerce",
            "date_created_gmt": self.clock.tick(),
            "note": text,
            "customer_note": body["customer_note"].as_bool().unwrap_or(false),
        });
        self.notes.entry(id).or_default().push(note.clone());
        Reply::new(201, note)
    }
}
