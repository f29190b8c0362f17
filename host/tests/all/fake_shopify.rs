//! A fake Shopify Admin REST API for the connector tests: orders with
//! `Link`/`page_info` pagination, tags and notes, fulfillment orders and
//! fulfillments, inventory levels, a GraphQL SKU search, webhooks with
//! signed deliveries, the access-token check, and the leaky-bucket rate limit
//! (`X-Shopify-Shop-Api-Call-Limit`, 429 with `Retry-After: 2.0`).
//!
//! Tests drive it through [`FakeShopify`] (the framework's faults, request
//! log, applied writes and deliveries, in `support::fake`): make orders and
//! variants, read the shop's state, and take the webhook deliveries it made. Times are written at the shop's offset
//! (-04:00), as Shopify does, so connectors must not compare them as text.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use axum::http::Method;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};

use crate::support::{
    clock::{now_secs, parse_rfc3339, rfc3339},
    fake::{Common, Delivery, Fake, FakeApi, Incoming, Reply, hmac_sha256},
};

pub const SHOP: &str = "acme-test";
pub const ACCESS_TOKEN: &str = "shpat_fake_0123456789abcdef";
pub const WEBHOOK_SECRET: &str = "shpss_fake_webhook_secret_42";
pub const API_VERSION: &str = "2024-10";
/// The shop's one location.
pub const LOCATION_ID: u64 = 65_000_001;
/// The shop's time zone, as an offset from UTC in minutes.
pub const SHOP_OFFSET_MINUTES: i64 = -240;
pub const TOPICS: &[&str] = &[
    "orders/create",
    "orders/updated",
    "orders/cancelled",
    "fulfillments/create",
    "inventory_levels/update",
];

/// A running fake, stopped when dropped.
pub type FakeShopify = Fake<ShopState>;

/// Shopify's leaky bucket: `size` calls, leaking `leak_per_sec`.
#[derive(Debug)]
pub struct Bucket {
    pub size: f64,
    pub leak_per_sec: f64,
    level: f64,
    last: Instant,
    /// The fullest the bucket has been.
    pub max_level: f64,
    /// Requests refused with 429 because the bucket was full.
    pub throttled: u32,
}

impl Bucket {
    /// Takes one call, or says the bucket is full. Returns the header value.
    fn take(&mut self) -> Result<String, String> {
        let now = Instant::now();
        let leaked = now.duration_since(self.last).as_secs_f64() * self.leak_per_sec;
        self.level = (self.level - leaked).max(0.0);
        self.last = now;
        let header = |level: f64| format!("{}/{}", level.ceil() as u64, self.size as u64);
        if self.level + 1.0 > self.size {
            self.throttled += 1;
            return Err(header(self.level));
        }
        self.level += 1.0;
        self.max_level = self.max_level.max(self.level);
        Ok(header(self.level))
    }
}

#[derive(Debug, Clone)]
pub struct Variant {
    pub id: u64,
    pub sku: String,
    pub inventory_item_id: u64,
}

/// Where a `page_info` token leads: the filtered query and the offset.
#[derive(Debug, Clone)]
struct PageQuery {
    filters: Vec<(String, String)>,
    offset: usize,
}

#[derive(Debug)]
pub struct ShopState {
    pub origin: String,
    pub orders: BTreeMap<u64, Value>,
    pub fulfillment_orders: BTreeMap<u64, Value>,
    pub fulfillments: Vec<Value>,
    pub variants: Vec<Variant>,
    /// (inventory item, location) to available.
    pub inventory: BTreeMap<(u64, u64), i64>,
    pub webhooks: BTreeMap<u64, Value>,
    pub bucket: Bucket,
    pub common: Common,
    page_infos: HashMap<String, PageQuery>,
    next_id: u64,
    next_order_number: u64,
    next_event: u64,
}

impl FakeShopify {
    pub async fn start() -> FakeShopify {
        let fake = Fake::serve(ShopState {
            origin: String::new(),
            orders: BTreeMap::new(),
            fulfillment_orders: BTreeMap::new(),
            fulfillments: Vec::new(),
            variants: Vec::new(),
            inventory: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            bucket: Bucket {
                size: 40.0,
                leak_per_sec: 2.0,
                level: 0.0,
                last: Instant::now(),
                max_level: 0.0,
                throttled: 0,
            },
            common: Common::default(),
            page_infos: HashMap::new(),
            next_id: 5_800_000_000_001,
            next_order_number: 1001,
            next_event: 1,
        })
        .await;
        fake.lock().origin = fake.origin().to_string();
        fake
    }

    /// Connection properties for this shop, secrets included.
    pub fn properties(&self) -> Value {
        json!({
            "shop": SHOP,
            "base_url": self.server.origin,
            "api_version": API_VERSION,
            "api_key": ACCESS_TOKEN,
            "webhook_secret": WEBHOOK_SECRET,
            "location_id": LOCATION_ID,
        })
    }

    /// A customer places an order. `fields` override the defaults (`email`,
    /// `line_items`, `created_at`/`updated_at` as RFC 3339, `tags`...). Makes
    /// its fulfillment order and the `orders/create` deliveries.
    pub fn create_order(&self, fields: Value) -> Value {
        self.lock().create_order(fields)
    }

    /// The merchant edits an order: `updated_at` becomes now.
    pub fn touch_order(&self, id: u64) -> Value {
        let mut state = self.lock();
        let order = state.orders.get_mut(&id).expect("no such order");
        order["updated_at"] = json!(shop_time(now_secs()));
        order.clone()
    }

    /// The merchant changes an order in the admin: `fields` replace the
    /// order's, `updated_at` becomes now, and Shopify makes its
    /// `orders/updated` deliveries.
    pub fn edit_order(&self, id: u64, fields: Value) -> Value {
        let mut state = self.lock();
        let order = state.orders.get_mut(&id).expect("no such order");
        if let Value::Object(fields) = fields {
            for (key, value) in fields {
                order[key] = value;
            }
        }
        order["updated_at"] = json!(shop_time(now_secs()));
        let order = order.clone();
        state.notify("orders/updated", &order);
        order
    }

    pub fn order(&self, id: u64) -> Option<Value> {
        self.lock().orders.get(&id).cloned()
    }

    /// A product variant with this SKU, stocked at [`LOCATION_ID`]; returns
    /// its inventory item id.
    pub fn add_variant(&self, sku: &str, available: i64) -> u64 {
        let mut state = self.lock();
        let (id, item) = (state.next_id(), state.next_id());
        state.variants.push(Variant {
            id,
            sku: sku.to_string(),
            inventory_item_id: item,
        });
        state.inventory.insert((item, LOCATION_ID), available);
        item
    }

    pub fn available(&self, inventory_item_id: u64) -> Option<i64> {
        self.lock()
            .inventory
            .get(&(inventory_item_id, LOCATION_ID))
            .copied()
    }

    /// Changes the bucket's size (Shopify Plus stores have 400) and how
    /// fast it leaks for this app.
    pub fn set_bucket(&self, size: u32, leak_per_sec: f64) {
        let mut state = self.lock();
        state.bucket.size = f64::from(size);
        state.bucket.leak_per_sec = leak_per_sec;
    }

    /// A delivery of `payload` for `topic` as Shopify signs it, not sent anywhere.
    pub fn delivery(&self, topic: &str, payload: &Value) -> Delivery {
        self.lock().delivery("", topic, payload)
    }
}

/// `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body with the app's secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    BASE64.encode(hmac_sha256(secret.as_bytes(), body))
}

fn shop_time(secs: i64) -> String {
    rfc3339(secs, SHOP_OFFSET_MINUTES)
}

fn errors(status: u16, errors: Value) -> Reply {
    Reply::new(status, json!({ "errors": errors }))
}

fn not_found() -> Reply {
    errors(404, json!("Not Found"))
}

impl FakeApi for ShopState {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn failure(&self, status: u16, message: &str) -> Reply {
        let reply = match status {
            429 => errors(
                429,
                json!(
                    "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
                ),
            ),
            503 => errors(503, json!("Service Unavailable")),
            _ => errors(status, json!(message)),
        };
        reply.header("X-Fake-Reason", message)
    }

    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply> {
        if request.header("x-shopify-access-token") != Some(ACCESS_TOKEN) {
            return Err(errors(
                401,
                json!(
                    "[API] Invalid API key or access token (unrecognized login or wrong password)"
                ),
            ));
        }
        match self.bucket.take() {
            Ok(level) => Ok(vec![("X-Shopify-Shop-Api-Call-Limit".into(), level)]),
            Err(level) => Err(self
                .failure(429, "the leaky bucket is full")
                .header("Retry-After", "2.0")
                .header("X-Shopify-Shop-Api-Call-Limit", level)),
        }
    }

    fn route(&mut self, request: &Incoming) -> Reply {
        let Some(rest) = request.path.strip_prefix("/admin/api/") else {
            return not_found();
        };
        let Some((version, rest)) = rest.split_once('/') else {
            return not_found();
        };
        let valid_version =
            version == "unstable" || (version.len() == 7 && version.as_bytes()[4] == b'-');
        if !valid_version {
            return not_found();
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok());
        let body = || request.json();
        match (&request.method, segments.as_slice()) {
            (&Method::GET, ["shop.json"]) => Reply::ok(json!({ "shop": {
                "id": 1, "name": "Acme Test", "myshopify_domain": format!("{SHOP}.myshopify.com"),
                "currency": "USD", "iana_timezone": "America/New_York",
            }})),
            (&Method::GET, ["orders.json"]) => self.list_orders(version, request),
            (&Method::GET, ["orders", order]) => {
                match id(order).and_then(|id| self.orders.get(&id)) {
                    Some(order) => Reply::ok(json!({ "order": order })),
                    None => not_found(),
                }
            }
            (&Method::PUT, ["orders", order]) => match (id(order), body()) {
                (Some(id), Ok(body)) => self.update_order(id, &body),
                (None, _) => not_found(),
                (_, Err(e)) => errors(400, json!(e)),
            },
            (&Method::GET, ["orders", order, "fulfillment_orders.json"]) => {
                match order
                    .parse::<u64>()
                    .ok()
                    .filter(|id| self.orders.contains_key(id))
                {
                    Some(id) => {
                        let fos: Vec<&Value> = self
                            .fulfillment_orders
                            .values()
                            .filter(|fo| fo["order_id"] == json!(id))
                            .collect();
                        Reply::ok(json!({ "fulfillment_orders": fos }))
                    }
                    None => not_found(),
                }
            }
            (&Method::POST, ["fulfillments.json"]) => match body() {
                Ok(body) => self.create_fulfillment(&body),
                Err(e) => errors(400, json!(e)),
            },
            (&Method::POST, ["inventory_levels", "set.json"]) => match body() {
                Ok(body) => self.set_inventory(&body),
                Err(e) => errors(400, json!(e)),
            },
            (&Method::POST, ["graphql.json"]) => match body() {
                Ok(body) => self.graphql(&body),
                Err(e) => errors(400, json!(e)),
            },
            (&Method::GET, ["webhooks.json"]) => {
                let hooks: Vec<&Value> = self
                    .webhooks
                    .values()
                    .filter(|w| {
                        request
                            .param("topic")
                            .is_none_or(|t| w["topic"] == json!(t))
                    })
                    .filter(|w| {
                        request
                            .param("address")
                            .is_none_or(|a| w["address"] == json!(a))
                    })
                    .collect();
                Reply::ok(json!({ "webhooks": hooks }))
            }
            (&Method::POST, ["webhooks.json"]) => match body() {
                Ok(body) => self.create_webhook(version, &body),
                Err(e) => errors(400, json!(e)),
            },
            (&Method::DELETE, ["webhooks", hook]) => {
                match id(hook).and_then(|id| self.webhooks.remove(&id)) {
                    Some(_) => Reply::ok(json!({})),
                    None => not_found(),
                }
            }
            _ => not_found(),
        }
    }
}

impl ShopState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn create_order(&mut self, fields: Value) -> Value {
        let id = self.next_id();
        let number = self.next_order_number;
        self.next_order_number += 1;
        let now = shop_time(now_secs());
        let line_item_id = self.next_id();
        let mut order = json!({
            "id": id,
            "name": format!("#{number}"),
            "order_number": number,
            "email": format!("customer{number}@example.com"),
            "created_at": now,
            "updated_at": now,
            "closed_at": null,
            "cancelled_at": null,
            "currency": "USD",
            "total_price": "25.00",
            "financial_status": "paid",
            "fulfillment_status": null,
            "tags": "",
            "note": null,
            "line_items": [{
                "id": line_item_id, "variant_id": 44_000_001, "sku": "W-1", "title": "Widget",
                "quantity": 1, "price": "25.00"
            }],
            "shipping_address": {
                "name": "Ada Lovelace", "address1": "12 Analytical Row", "city": "London",
                "zip": "N1 9GU", "country_code": "GB", "phone": "+44 20 7946 0000"
            },
        });
        if let Value::Object(fields) = fields {
            for (key, value) in fields {
                order[key] = value;
            }
        }
        if order["updated_at"] == json!(now) && order["created_at"] != json!(now) {
            order["updated_at"] = order["created_at"].clone();
        }
        let fo_id = self.next_id();
        let items: Vec<Value> = order["line_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|li| json!({ "id": li["id"], "line_item_id": li["id"], "quantity": li["quantity"], "fulfillable_quantity": li["quantity"] }))
            .collect();
        self.fulfillment_orders.insert(
            fo_id,
            json!({ "id": fo_id, "order_id": id, "status": "open",
                     "assigned_location_id": LOCATION_ID, "line_items": items }),
        );
        self.orders.insert(id, order.clone());
        self.notify("orders/create", &order);
        order
    }

    /// Queues a signed delivery of `payload` to every webhook for `topic`.
    fn notify(&mut self, topic: &str, payload: &Value) {
        let addresses: Vec<String> = self
            .webhooks
            .values()
            .filter(|w| w["topic"] == json!(topic))
            .map(|w| w["address"].as_str().unwrap().to_string())
            .collect();
        for address in addresses {
            let delivery = self.delivery(&address, topic, payload);
            self.common.outbox.push(delivery);
        }
    }

    fn delivery(&mut self, address: &str, topic: &str, payload: &Value) -> Delivery {
        let body = payload.to_string().into_bytes();
        let event = self.next_event;
        self.next_event += 1;
        Delivery {
            address: address.to_string(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Shopify-Topic".into(), topic.into()),
                ("X-Shopify-Hmac-Sha256".into(), sign(WEBHOOK_SECRET, &body)),
                (
                    "X-Shopify-Shop-Domain".into(),
                    format!("{SHOP}.myshopify.com"),
                ),
                ("X-Shopify-API-Version".into(), API_VERSION.into()),
                (
                    "X-Shopify-Webhook-Id".into(),
                    format!("b54557e4-bdd9-4b37-8a5f-bf7d70bc{event:04}"),
                ),
                (
                    "X-Shopify-Event-Id".into(),
                    format!("98880550-7158-44d4-b7cd-2c97c8a0{event:04}"),
                ),
                ("X-Shopify-Triggered-At".into(), rfc3339(now_secs(), 0)),
            ],
            body,
        }
    }

    /// `GET /orders.json`: filters, sorting, and `page_info` pages that
    /// refuse any filter beside `limit` (as Shopify does).
    fn list_orders(&mut self, version: &str, request: &Incoming) -> Reply {
        let limit = match request.param("limit").map(str::parse::<usize>) {
            None => 50,
            Some(Ok(n)) if (1..=250).contains(&n) => n,
            Some(_) => return errors(400, json!({ "limit": ["must be between 1 and 250"] })),
        };
        let (filters, offset) = match request.param("page_info") {
            Some(token) => {
                if let Some((name, _)) = request
                    .query
                    .iter()
                    .find(|(n, _)| !matches!(n.as_str(), "page_info" | "limit" | "fields"))
                {
                    return errors(
                        400,
                        json!({ name.clone(): format!("{name} cannot be passed when page_info is present") }),
                    );
                }
                match self.page_infos.get(token) {
                    Some(page) => (page.filters.clone(), page.offset),
                    None => return errors(400, json!({ "page_info": "Invalid value." })),
                }
            }
            None => (
                request
                    .query
                    .iter()
                    .filter(|(n, _)| n != "limit")
                    .cloned()
                    .collect(),
                0,
            ),
        };
        let param = |name: &str| {
            filters
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let time_of =
            |o: &Value, field: &str| parse_rfc3339(o[field].as_str().unwrap_or("")).unwrap_or(0);
        let updated_min = match param("updated_at_min").map(parse_rfc3339) {
            None => None,
            Some(Some(t)) => Some(t),
            Some(None) => return errors(400, json!({ "updated_at_min": ["is invalid"] })),
        };
        let status = param("status").unwrap_or("open");
        let mut orders: Vec<&Value> = self
            .orders
            .values()
            .filter(|o| match status {
                "any" => true,
                "open" => o["closed_at"].is_null() && o["cancelled_at"].is_null(),
                "closed" => !o["closed_at"].is_null(),
                "cancelled" => !o["cancelled_at"].is_null(),
                _ => false,
            })
            .filter(|o| updated_min.is_none_or(|min| time_of(o, "updated_at") >= min))
            .filter(|o| {
                param("name")
                    .is_none_or(|n| o["name"] == json!(n) || o["name"] == json!(format!("#{n}")))
            })
            .filter(|o| param("since_id").is_none_or(|s| o["id"].as_u64() > s.parse::<u64>().ok()))
            .collect();
        let id_of = |o: &Value| o["id"].as_u64().unwrap();
        match param("order").unwrap_or("id desc") {
            "updated_at asc" => orders.sort_by_key(|o| (time_of(o, "updated_at"), id_of(o))),
            "updated_at desc" => {
                orders.sort_by_key(|o| std::cmp::Reverse((time_of(o, "updated_at"), id_of(o))))
            }
            "created_at asc" => orders.sort_by_key(|o| (time_of(o, "created_at"), id_of(o))),
            _ => orders.sort_by_key(|o| std::cmp::Reverse(id_of(o))),
        }
        let total = orders.len();
        let page: Vec<Value> = orders
            .into_iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        let mut links = Vec::new();
        let mut link = |rel: &str, offset: usize, state: &mut Self| {
            let token = format!("pi{:08x}", state.page_infos.len() + 1);
            state.page_infos.insert(
                token.clone(),
                PageQuery {
                    filters: filters.clone(),
                    offset,
                },
            );
            links.push(format!(
                "<{}/admin/api/{version}/orders.json?limit={limit}&page_info={token}>; rel=\"{rel}\"",
                state.origin
            ));
        };
        if offset > 0 {
            link("previous", offset.saturating_sub(limit), self);
        }
        if offset + limit < total {
            link("next", offset + limit, self);
        }
        let reply = Reply::ok(json!({ "orders": page }));
        if links.is_empty() {
            reply
        } else {
            reply.header("Link", links.join(", "))
        }
    }

    fn update_order(&mut self, id: u64, body: &Value) -> Reply {
        let Some(changes) = body.get("order").and_then(Value::as_object) else {
            return errors(
                400,
                json!({ "order": "Required parameter missing or invalid" }),
            );
        };
        let Some(order) = self.orders.get_mut(&id) else {
            return not_found();
        };
        if let Some(tags) = changes.get("tags") {
            let Some(tags) = tags.as_str() else {
                return errors(422, json!({ "tags": ["must be a string"] }));
            };
            let tags: Vec<&str> = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            if let Some(long) = tags.iter().find(|t| t.chars().count() > 40) {
                return errors(
                    422,
                    json!({ "tags": [format!("{long} is too long (maximum is 40 characters)")] }),
                );
            }
            order["tags"] = json!(tags.join(", "));
        }
        for field in ["note", "email"] {
            if let Some(value) = changes.get(field) {
                order[field] = value.clone();
            }
        }
        order["updated_at"] = json!(shop_time(now_secs()));
        let order = order.clone();
        self.notify("orders/updated", &order);
        Reply::ok(json!({ "order": order }))
    }

    fn create_fulfillment(&mut self, body: &Value) -> Reply {
        let Some(groups) = body
            .pointer("/fulfillment/line_items_by_fulfillment_order")
            .and_then(Value::as_array)
            .filter(|g| !g.is_empty())
        else {
            return errors(
                400,
                json!({ "fulfillment": "Required parameter missing or invalid" }),
            );
        };
        let mut order_id = None;
        let mut line_items = Vec::new();
        for group in groups {
            let fo_id = group["fulfillment_order_id"].as_u64().unwrap_or(0);
            let Some(fo) = self.fulfillment_orders.get(&fo_id) else {
                return errors(404, json!("Not Found"));
            };
            let status = fo["status"].as_str().unwrap_or("");
            if !matches!(status, "open" | "in_progress") {
                return errors(
                    422,
                    json!([format!(
                        "Fulfillment order {fo_id} has an unfulfillable status= {status}."
                    )]),
                );
            }
            order_id = fo["order_id"].as_u64();
            line_items.extend(fo["line_items"].as_array().unwrap().iter().cloned());
        }
        for group in groups {
            let fo_id = group["fulfillment_order_id"].as_u64().unwrap();
            self.fulfillment_orders.get_mut(&fo_id).unwrap()["status"] = json!("closed");
        }
        let order_id = order_id.unwrap();
        let now = shop_time(now_secs());
        let tracking = body
            .pointer("/fulfillment/tracking_info")
            .cloned()
            .unwrap_or(json!({}));
        let id = self.next_id();
        let fulfillment = json!({
            "id": id,
            "order_id": order_id,
            "status": "success",
            "created_at": now,
            "updated_at": now,
            "tracking_company": tracking.get("company"),
            "tracking_number": tracking.get("number"),
            "tracking_url": tracking.get("url"),
            "tracking_numbers": tracking.get("number").into_iter().collect::<Vec<_>>(),
            "tracking_urls": tracking.get("url").into_iter().collect::<Vec<_>>(),
            "line_items": line_items,
            "location_id": LOCATION_ID,
        });
        self.fulfillments.push(fulfillment.clone());
        let order = self.orders.get_mut(&order_id).unwrap();
        order["fulfillment_status"] = json!("fulfilled");
        order["updated_at"] = json!(now);
        Reply::new(201, json!({ "fulfillment": fulfillment }))
    }

    fn set_inventory(&mut self, body: &Value) -> Reply {
        let (Some(location), Some(item), Some(available)) = (
            body["location_id"].as_u64(),
            body["inventory_item_id"].as_u64(),
            body["available"].as_i64(),
        ) else {
            return errors(
                400,
                json!({ "inventory_level": "location_id, inventory_item_id and available are required" }),
            );
        };
        if location != LOCATION_ID {
            return errors(422, json!(["Location not found"]));
        }
        if !self.variants.iter().any(|v| v.inventory_item_id == item) {
            return errors(422, json!(["Inventory item does not exist"]));
        }
        self.inventory.insert((item, location), available);
        Reply::ok(json!({ "inventory_level": {
            "inventory_item_id": item,
            "location_id": location,
            "available": available,
            "updated_at": shop_time(now_secs()),
            "admin_graphql_api_id": format!("gid://shopify/InventoryLevel/{location}?inventory_item_id={item}"),
        }}))
    }

    /// Understands the one query a connector needs: variants by SKU. Shopify's
    /// search matches prefixes, so `sku:"W-1"` also finds `W-10`.
    fn graphql(&mut self, body: &Value) -> Reply {
        let query = body["query"].as_str().unwrap_or("");
        let search = body
            .pointer("/variables/q")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !query.contains("productVariants") {
            return Reply::ok(
                json!({ "errors": [{ "message": "the fake only knows productVariants" }] }),
            );
        }
        let Some(sku) = search.strip_prefix("sku:") else {
            return Reply::ok(
                json!({ "errors": [{ "message": format!("unsupported search `{search}`") }] }),
            );
        };
        let sku = sku
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .map(|s| s.replace("\\\"", "\"").replace("\\\\", "\\"))
            .unwrap_or_else(|| sku.to_string());
        let edges: Vec<Value> = self
            .variants
            .iter()
            .filter(|v| v.sku.starts_with(&sku))
            .map(|v| json!({ "node": {
                "id": format!("gid://shopify/ProductVariant/{}", v.id),
                "sku": v.sku,
                "inventoryItem": { "id": format!("gid://shopify/InventoryItem/{}", v.inventory_item_id) },
            }}))
            .collect();
        Reply::ok(json!({ "data": { "productVariants": { "edges": edges } } }))
    }

    fn create_webhook(&mut self, version: &str, body: &Value) -> Reply {
        let hook = &body["webhook"];
        let (Some(topic), Some(address)) = (hook["topic"].as_str(), hook["address"].as_str())
        else {
            return errors(
                400,
                json!({ "webhook": "Required parameter missing or invalid" }),
            );
        };
        if !TOPICS.contains(&topic) {
            return errors(
                422,
                json!({ "topic": [format!("Invalid topic specified: {topic}")] }),
            );
        }
        if !address.starts_with("https://") {
            return errors(
                422,
                json!({ "address": ["protocol http:// is not supported"] }),
            );
        }
        if self
            .webhooks
            .values()
            .any(|w| w["topic"] == json!(topic) && w["address"] == json!(address))
        {
            return errors(
                422,
                json!({ "address": ["for this topic has already been taken"] }),
            );
        }
        let id = self.next_id();
        let now = shop_time(now_secs());
        let webhook = json!({
            "id": id, "address": address, "topic": topic, "format": "json",
            "api_version": version, "created_at": now, "updated_at": now,
        });
        self.webhooks.insert(id, webhook.clone());
        Reply::new(201, json!({ "webhook": webhook }))
    }
}
