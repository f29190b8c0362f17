//! A fake warehouse/OMS API (the Eshopbox role) for the connector tests:
//! bearer-token auth, orders created once per `Idempotency-Key` (and once per
//! channel order), status moves with the rules a warehouse enforces,
//! shipments listed by `updated_since` with opaque cursors, webhook endpoints,
//! and deliveries signed the Standard Webhooks way.
//!
//! Tests drive it through [`FakeWarehouse`]: the warehouse's own work
//! (packing, shipping, delivering, stock counts) happens by
//! [`FakeWarehouse::advance`] and [`FakeWarehouse::set_stock`], which make the
//! deliveries a real warehouse would send.

use std::collections::{BTreeMap, HashMap};

use axum::http::Method;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};

use crate::support::{
    clock::{now_secs, parse_rfc3339, rfc3339},
    fake::{Common, Delivery, Fake, FakeApi, Incoming, Reply, hmac_sha256},
};

pub const TOKEN: &str = "wh_live_fake_token_0123456789";
/// The account's signing secret: `whsec_` and base64 of the key.
pub const WEBHOOK_SECRET: &str = "whsec_ZmFrZS13YXJlaG91c2Utc2lnbmluZy1rZXktMDAwMQ==";
pub const EVENT_TYPES: &[&str] = &["shipment.status_changed", "stock.changed"];
pub const LOCATION: &str = "BLR-1";

/// A running fake, stopped when dropped.
pub type FakeWarehouse = Fake<WarehouseState>;

#[derive(Debug, Default)]
pub struct WarehouseState {
    /// By id (`WO-000001`).
    pub orders: BTreeMap<String, Value>,
    /// By id (`SH-000001`).
    pub shipments: BTreeMap<String, Value>,
    /// (sku, location) to available.
    pub stock: BTreeMap<(String, String), i64>,
    /// Webhook endpoints by id (`ep_1`).
    pub endpoints: BTreeMap<String, Value>,
    pub common: Common,
    /// Opaque list cursors: the `updated_since` they belong to and the offset.
    cursors: HashMap<String, (Option<String>, usize)>,
    counter: u64,
}

impl FakeWarehouse {
    pub async fn start() -> FakeWarehouse {
        Fake::serve(WarehouseState::default()).await
    }

    /// Connection properties for this account, secrets included.
    pub fn properties(&self) -> Value {
        json!({
            "base_url": self.server.origin,
            "token": TOKEN,
            "webhook_secret": WEBHOOK_SECRET,
        })
    }

    pub fn order(&self, id: &str) -> Option<Value> {
        self.lock().orders.get(id).cloned()
    }

    /// The warehouse moves an order on (`packed`, `shipped`, `delivered`),
    /// as its staff would; returns the shipment and queues the deliveries.
    pub fn advance(&self, order_id: &str, status: &str) -> Value {
        let mut state = self.lock();
        if let Err(reply) = state.move_order(order_id, status) {
            panic!("cannot move {order_id} to {status}: {}", reply.body);
        }
        let order = &state.orders[order_id];
        state.shipments[order["shipment_id"].as_str().unwrap()].clone()
    }

    /// A shipment record with a chosen `updated_at` (seconds since the
    /// epoch), for tests of pagination; no delivery.
    pub fn insert_shipment(&self, channel_order_id: &str, status: &str, updated_at: i64) -> Value {
        let mut state = self.lock();
        let id = format!("SH-{:06}", state.next());
        let shipment = json!({
            "id": id.clone(), "order_id": format!("WO-{:06}", state.next()), "channel": "shopify",
            "channel_order_id": channel_order_id, "status": status,
            "awb": null, "courier": null, "tracking_url": null,
            "updated_at": rfc3339(updated_at, 0),
        });
        state.shipments.insert(id, shipment.clone());
        shipment
    }

    /// A stock count changes; queues `stock.changed` deliveries.
    pub fn set_stock(&self, sku: &str, available: i64) -> Value {
        let mut state = self.lock();
        state
            .stock
            .insert((sku.to_string(), LOCATION.to_string()), available);
        let change = json!({
            "sku": sku, "location_id": LOCATION, "available": available,
            "updated_at": rfc3339(now_secs(), 0),
        });
        state.notify("stock.changed", &change);
        change
    }

    /// A signed delivery of `data` as `event_type`, not sent anywhere, made
    /// at `timestamp` (seconds since the epoch).
    pub fn delivery_at(&self, event_type: &str, data: &Value, timestamp: i64) -> Delivery {
        self.lock().delivery("", event_type, data, timestamp)
    }
}

/// `webhook-signature` for Standard Webhooks: `v1,` and the base64
/// HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the decoded secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap();
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", BASE64.encode(hmac_sha256(&key, &signed)))
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
    Reply::new(
        status,
        json!({ "error": { "code": code, "message": message.into() } }),
    )
}

fn not_found(what: &str) -> Reply {
    error(404, "not_found", format!("no {what}"))
}

impl FakeApi for WarehouseState {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn failure(&self, status: u16, message: &str) -> Reply {
        match status {
            429 => error(429, "rate_limited", "too many requests"),
            503 => error(503, "unavailable", message),
            _ => error(status, "failed", message),
        }
    }

    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply> {
        match request.header("authorization") {
            Some(value) if value == format!("Bearer {TOKEN}") => Ok(Vec::new()),
            _ => Err(
                error(401, "unauthorized", "missing or invalid bearer token")
                    .header("WWW-Authenticate", "Bearer"),
            ),
        }
    }

    fn route(&mut self, request: &Incoming) -> Reply {
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        let body = || request.json();
        match (&request.method, segments.as_slice()) {
            (&Method::GET, ["account"]) => {
                Reply::ok(json!({ "account": { "id": "acc_1", "name": "Acme Fulfilment" } }))
            }
            (&Method::POST, ["orders"]) => match body() {
                Ok(body) => self.create_order(&body),
                Err(e) => error(400, "bad_request", e),
            },
            (&Method::GET, ["orders"]) => {
                let channel = request.param("channel").unwrap_or("shopify");
                let orders: Vec<&Value> = self
                    .orders
                    .values()
                    .filter(|o| o["channel"] == json!(channel))
                    .filter(|o| {
                        request
                            .param("channel_order_id")
                            .is_none_or(|id| o["channel_order_id"] == json!(id))
                    })
                    .collect();
                Reply::ok(json!({ "orders": orders }))
            }
            (&Method::GET, ["orders", id]) => match self.orders.get(*id) {
                Some(order) => Reply::ok(json!({ "order": order })),
                None => not_found("such order"),
            },
            (&Method::PATCH, ["orders", id]) => match body() {
                Ok(body) => {
                    let Some(status) = body["status"].as_str() else {
                        return error(422, "validation_failed", "status is required");
                    };
                    if !self.orders.contains_key(*id) {
                        return not_found("such order");
                    }
                    if let Err(reply) = self.move_order(id, status) {
                        return reply;
                    }
                    if let Some(note) = body["note"].as_str() {
                        let order = self.orders.get_mut(*id).unwrap();
                        let notes = match order["notes"].as_str() {
                            Some(old) if !old.is_empty() => format!("{old}\n{note}"),
                            _ => note.to_string(),
                        };
                        order["notes"] = json!(notes);
                    }
                    Reply::ok(json!({ "order": self.orders[*id] }))
                }
                Err(e) => error(400, "bad_request", e),
            },
            (&Method::GET, ["shipments"]) => self.list_shipments(request),
            (&Method::GET, ["webhooks"]) => {
                Reply::ok(json!({ "webhooks": self.endpoints.values().collect::<Vec<_>>() }))
            }
            (&Method::POST, ["webhooks"]) => match body() {
                Ok(body) => self.create_endpoint(&body),
                Err(e) => error(400, "bad_request", e),
            },
            (&Method::DELETE, ["webhooks", id]) => match self.endpoints.remove(*id) {
                Some(_) => Reply::new(204, Value::Null),
                None => not_found("such webhook"),
            },
            _ => not_found("such endpoint"),
        }
    }
}

impl WarehouseState {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn create_order(&mut self, body: &Value) -> Reply {
        let channel = body["channel"].as_str().unwrap_or("shopify").to_string();
        let Some(channel_order_id) = body["channel_order_id"].as_str().filter(|s| !s.is_empty())
        else {
            return error(422, "validation_failed", "channel_order_id is required");
        };
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return error(
                422,
                "validation_failed",
                "items: at least one item is required",
            );
        }
        for (i, item) in items.iter().enumerate() {
            let sku_ok = item["sku"].as_str().is_some_and(|s| !s.is_empty());
            let quantity_ok = item["quantity"].as_u64().is_some_and(|q| q >= 1);
            if !sku_ok || !quantity_ok {
                return error(
                    422,
                    "validation_failed",
                    format!("items[{i}]: sku and a quantity of at least 1 are required"),
                );
            }
        }
        if let Some(existing) = self.orders.values().find(|o| {
            o["channel"] == json!(channel) && o["channel_order_id"] == json!(channel_order_id)
        }) {
            let mut reply = error(
                409,
                "duplicate_order",
                format!("{channel} order {channel_order_id} already exists"),
            );
            reply.body["error"]["order_id"] = existing["id"].clone();
            return reply;
        }
        let id = format!("WO-{:06}", self.next());
        let now = rfc3339(now_secs(), 0);
        let order = json!({
            "id": id,
            "channel": channel,
            "channel_order_id": channel_order_id,
            "channel_order_name": body["channel_order_name"],
            "status": "created",
            "items": items,
            "customer": body["customer"],
            "shipping_address": body["shipping_address"],
            "notes": body["notes"],
            "shipment_id": null,
            "created_at": now,
            "updated_at": now,
        });
        self.orders.insert(id, order.clone());
        Reply::new(201, json!({ "order": order }))
    }

    /// The moves a warehouse allows; the same status again changes nothing.
    /// Packing makes the shipment; each shipment move is delivered.
    fn move_order(&mut self, id: &str, status: &str) -> Result<(), Reply> {
        let Some(order) = self.orders.get(id) else {
            return Err(not_found("such order"));
        };
        let from = order["status"].as_str().unwrap().to_string();
        if from == status {
            return Ok(());
        }
        let allowed = matches!(
            (from.as_str(), status),
            ("created", "packed" | "cancelled")
                | ("packed", "shipped" | "cancelled")
                | ("shipped", "delivered")
        );
        if !allowed {
            return Err(error(
                422,
                "invalid_transition",
                format!("order {id} is {from} and cannot become {status}"),
            ));
        }
        let now = rfc3339(now_secs(), 0);
        let shipment_id = match order["shipment_id"].as_str() {
            Some(existing) => existing.to_string(),
            None => format!("SH-{:06}", self.next()),
        };
        let n = self.next();
        let order = self.orders.get_mut(id).unwrap();
        order["status"] = json!(status);
        order["updated_at"] = json!(now);
        if status == "cancelled" {
            return Ok(());
        }
        order["shipment_id"] = json!(shipment_id);
        let order = order.clone();
        let shipment = self
            .shipments
            .entry(shipment_id.clone())
            .or_insert_with(|| {
                json!({
                    "id": shipment_id, "order_id": id, "channel": order["channel"],
                    "channel_order_id": order["channel_order_id"],
                    "awb": null, "courier": null, "tracking_url": null,
                })
            });
        shipment["status"] = json!(status);
        shipment["updated_at"] = json!(now);
        if status == "shipped" {
            let awb = format!("AWB{:08}", 40_000_000 + n);
            shipment["courier"] = json!("Delhivery");
            shipment["tracking_url"] = json!(format!("https://track.example/{awb}"));
            shipment["awb"] = json!(awb);
        }
        let shipment = shipment.clone();
        self.notify("shipment.status_changed", &shipment);
        Ok(())
    }

    fn list_shipments(&mut self, request: &Incoming) -> Reply {
        let limit = match request.param("limit").map(str::parse::<usize>) {
            None => 50,
            Some(Ok(n)) if (1..=100).contains(&n) => n,
            Some(_) => return error(400, "bad_request", "limit must be between 1 and 100"),
        };
        let since = request.param("updated_since").map(str::to_string);
        let since_secs = match since.as_deref().map(parse_rfc3339) {
            None => None,
            Some(Some(t)) => Some(t),
            Some(None) => return error(400, "bad_request", "updated_since is not RFC 3339"),
        };
        let offset = match request.param("cursor") {
            None => 0,
            Some(token) => match self.cursors.get(token) {
                Some((for_since, offset)) if *for_since == since => *offset,
                Some(_) => {
                    return error(400, "invalid_cursor", "the cursor belongs to another query");
                }
                None => return error(400, "invalid_cursor", "unknown cursor"),
            },
        };
        let time_of = |s: &Value| parse_rfc3339(s["updated_at"].as_str().unwrap()).unwrap();
        let mut shipments: Vec<&Value> = self
            .shipments
            .values()
            .filter(|s| since_secs.is_none_or(|min| time_of(s) >= min))
            .collect();
        shipments.sort_by_key(|s| (time_of(s), s["id"].as_str().unwrap().to_string()));
        let total = shipments.len();
        let page: Vec<Value> = shipments
            .into_iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        let next_cursor = (offset + limit < total).then(|| {
            let token = format!("cur_{:x}", 0xc0ffee + self.cursors.len());
            self.cursors
                .insert(token.clone(), (since.clone(), offset + limit));
            token
        });
        Reply::ok(json!({ "shipments": page, "next_cursor": next_cursor }))
    }

    fn create_endpoint(&mut self, body: &Value) -> Reply {
        let Some(url) = body["url"].as_str().filter(|u| u.starts_with("https://")) else {
            return error(422, "validation_failed", "url must be an https URL");
        };
        let mut events: Vec<String> = body["events"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        events.sort();
        if events.is_empty() || events.iter().any(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return error(
                422,
                "validation_failed",
                format!("events must be some of {EVENT_TYPES:?}"),
            );
        }
        if let Some(existing) = self
            .endpoints
            .values()
            .find(|e| e["url"] == json!(url) && e["events"] == json!(events))
        {
            return Reply::ok(json!({ "webhook": existing }));
        }
        let id = format!("ep_{}", self.next());
        let endpoint = json!({
            "id": id, "url": url, "events": events, "created_at": rfc3339(now_secs(), 0),
        });
        self.endpoints.insert(id, endpoint.clone());
        Reply::new(201, json!({ "webhook": endpoint }))
    }

    /// Queues a signed delivery to every endpoint subscribed to `event_type`.
    fn notify(&mut self, event_type: &str, data: &Value) {
        let urls: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| e["events"].as_array().unwrap().contains(&json!(event_type)))
            .map(|e| e["url"].as_str().unwrap().to_string())
            .collect();
        for url in urls {
            let delivery = self.delivery(&url, event_type, data, now_secs());
            self.common.outbox.push(delivery);
        }
    }

    fn delivery(&mut self, url: &str, event_type: &str, data: &Value, timestamp: i64) -> Delivery {
        let id = format!("msg_2Lh9KHoG{:06}", self.next());
        let body = json!({ "type": event_type, "timestamp": rfc3339(timestamp, 0), "data": data })
            .to_string()
            .into_bytes();
        Delivery {
            address: url.to_string(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                (
                    "webhook-signature".into(),
                    sign(WEBHOOK_SECRET, &id, timestamp, &body),
                ),
            ],
            body,
        }
    }
}
