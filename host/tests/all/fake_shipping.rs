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
//! [`WEBHOOK_SECRET`]. Errors are `{"message": ...}`.
//!
//! Driving it: [`FakeShipping::add_shipment`] and [`FakeShipping::set_status`]
//! change the carrier's side (each change gets a later `updated_at`);
//! [`FakeShipping::delivery`] builds a signed webhook delivery and
//! [`FakeShipping::notify`] posts one to every registered webhook (for end to
//! end tests through the host's ingress). Faults, the request log and the
//! applied writes are the framework's (`support::fake`).

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::{
    clock::Clock,
    fake::{Common, Delivery, Fake, FakeApi, Incoming, Reply, hmac_sha256},
};

/// The API token the fake accepts (`Authorization: Bearer`).
pub const TOKEN: &str = "shp-live-7c1f0e9a4b2d";
/// The account's webhook signing secret.
pub const WEBHOOK_SECRET: &str = "shp-whsec-52be81d4a09c";

/// A running fake, stopped when dropped.
pub type FakeShipping = Fake<Aggregator>;

/// The aggregator's data.
#[derive(Debug, Default)]
pub struct Aggregator {
    common: Common,
    clock: Clock,
    /// By AWB.
    shipments: BTreeMap<String, Value>,
    next_awb: u64,
    /// Webhook id -> registration.
    webhooks: BTreeMap<String, Value>,
    next_webhook: u64,
    next_delivery: u64,
}

impl FakeShipping {
    pub async fn start() -> FakeShipping {
        Fake::serve(Aggregator::default()).await
    }

    /// Connection properties for this account, secrets included.
    pub fn properties(&self) -> Value {
        json!({"base_url": self.origin(), "token": TOKEN, "webhook_secret": WEBHOOK_SECRET})
    }

    /// A shipment booked outside the connector; returns its tracking record.
    pub fn add_shipment(&self, order_ref: &str, status: &str) -> Value {
        self.lock().new_shipment(order_ref, "Delhivery", status)
    }

    /// The carrier reports a new status; returns the updated record.
    pub fn set_status(&self, awb: &str, status: &str) -> Value {
        let mut state = self.lock();
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
        self.lock().shipments.get(awb).cloned()
    }

    /// Registered webhooks (`{"id", "url", "events"}`).
    pub fn webhooks(&self) -> Vec<Value> {
        self.lock().webhooks.values().cloned().collect()
    }

    /// A signed `tracking.updated` delivery for `record`, not sent anywhere.
    pub fn delivery(&self, record: &Value) -> Delivery {
        let id = {
            let mut state = self.lock();
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
        Delivery {
            address: String::new(),
            headers,
            body,
        }
    }

    /// Posts a signed delivery of `awb`'s current record to every registered
    /// webhook, as the aggregator does on a status change; returns each
    /// target's answer.
    pub async fn notify(&self, awb: &str) -> Vec<(String, u16)> {
        let record = self
            .shipment(awb)
            .unwrap_or_else(|| panic!("no shipment {awb}"));
        let client = crate::support::client();
        let mut answers = Vec::new();
        for hook in self.webhooks() {
            let url = hook["url"].as_str().unwrap().to_string();
            let delivery = self.delivery(&record);
            let mut request = client.post(&url).body(delivery.body);
            for (name, value) in delivery.headers {
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
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(WEBHOOK_SECRET.as_bytes(), body))
    )
}

fn rfc3339(logical: String) -> String {
    format!("{logical}Z")
}

fn error(status: u16, message: impl Into<String>) -> Reply {
    Reply::new(status, json!({ "message": message.into() }))
}

impl FakeApi for Aggregator {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn failure(&self, status: u16, message: &str) -> Reply {
        error(status, message)
    }

    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply> {
        match request.header("authorization") {
            Some(value) if value == format!("Bearer {TOKEN}") => Ok(Vec::new()),
            _ => Err(error(401, "invalid or expired API token")),
        }
    }

    fn route(&mut self, request: &Incoming) -> Reply {
        match (&request.method, request.segments().as_slice()) {
            (&Method::GET, ["account"]) => {
                Reply::ok(json!({"company": "Acme Retail", "plan": "pro"}))
            }
            (&Method::GET, ["tracking"]) => self.list_tracking(request),
            (&Method::GET, ["tracking", awb]) => {
                // The path as sent: an AWB with a `/` arrives encoded.
                let awb = percent_decode(awb);
                match self.shipments.get(&awb) {
                    Some(record) => Reply::ok(record.clone()),
                    None => error(404, format!("no shipment with AWB {awb}")),
                }
            }
            (&Method::POST, ["shipments"]) => self.create_shipment(request),
            (&Method::POST, ["webhooks"]) => match request.json() {
                Ok(body) => self.create_webhook(&body),
                Err(e) => error(400, e),
            },
            (&Method::DELETE, ["webhooks", id]) => match self.webhooks.remove(*id) {
                Some(_) => Reply::new(204, Value::Null),
                None => error(404, format!("no webhook {id}")),
            },
            _ => error(404, "no such endpoint"),
        }
    }
}

/// A path segment with its `%XX` escapes decoded.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Aggregator {
    fn new_shipment(&mut self, order_ref: &str, courier: &str, status: &str) -> Value {
        self.next_awb += 1;
        let awb = format!("SY{:010}", 7_700_000_000 + self.next_awb);
        let record = json!({
            "awb": awb,
            "order_ref": order_ref,
            "courier": courier,
            "status": status,
            "status_detail": format!("Shipment {}", status.to_lowercase()),
            "location": "Bengaluru Hub",
            "updated_at": rfc3339(self.clock.tick()),
        });
        self.shipments.insert(awb, record.clone());
        record
    }

    fn list_tracking(&self, request: &Incoming) -> Reply {
        let number = |name: &str, default: usize| match request.param(name) {
            None => Some(default),
            Some(text) => text.parse::<usize>().ok(),
        };
        let (Some(per_page), Some(page)) = (number("per_page", 20), number("page", 1)) else {
            return error(400, "page and per_page must be numbers");
        };
        if per_page == 0 || per_page > 100 || page == 0 {
            return error(422, "page must be >= 1 and per_page 1..=100");
        }
        let mut records: Vec<&Value> = self
            .shipments
            .values()
            .filter(|r| {
                request
                    .param("updated_since")
                    .is_none_or(|since| r["updated_at"].as_str().unwrap() > since)
            })
            .collect();
        records.sort_by_key(|r| {
            (
                r["updated_at"].as_str().unwrap().to_string(),
                r["awb"].as_str().unwrap().to_string(),
            )
        });
        if request.param("order") == Some("desc") {
            records.reverse();
        }
        let total = records.len();
        let data: Vec<&Value> = records
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        Reply::ok(json!({
            "data": data,
            "meta": {
                "page": page,
                "per_page": per_page,
                "total": total,
                "total_pages": total.div_ceil(per_page),
            }
        }))
    }

    /// Books a shipment. A replay of the same key never gets here (the
    /// framework answers it from the idempotency store).
    fn create_shipment(&mut self, request: &Incoming) -> Reply {
        if request.header("idempotency-key").is_none() {
            return error(400, "the Idempotency-Key header is required");
        }
        let body = match request.json() {
            Ok(body) => body,
            Err(e) => return error(400, e),
        };
        let (Some(order_ref), Some(_), Some(destination)) = (
            body["order_ref"].as_str(),
            body["weight_grams"].as_u64(),
            body["destination"].as_object(),
        ) else {
            return error(422, "order_ref, weight_grams and destination are required");
        };
        let routable = destination
            .get("pincode")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty());
        if !routable {
            return error(422, "destination.pincode is required");
        }
        let courier = body["courier"].as_str().unwrap_or("Delhivery").to_string();
        Reply::new(201, self.new_shipment(order_ref, &courier, "CREATED"))
    }

    fn create_webhook(&mut self, body: &Value) -> Reply {
        let Some(url) = body["url"].as_str().filter(|u| u.starts_with("http")) else {
            return error(422, "url must be an http(s) URL");
        };
        self.next_webhook += 1;
        let id = format!("wh_{}", self.next_webhook);
        let hook = json!({"id": id, "url": url, "events": body["events"]});
        self.webhooks.insert(id, hook.clone());
        Reply::new(201, hook)
    }
}
