//! A fake of the example connector's API (`plugins/example`), on 127.0.0.2:
//! `GET /me`, `POST /items` (which needs an `Idempotency-Key` and creates
//! one item per key), `GET /items/{id}` (404 when unknown), and `GET
//! /items?since=SEQ`, the feed the `new-item` polling trigger reads
//! (`{"items": [...], "next": SEQ}`, a page at a time when a page size is
//! set). Requests carry `X-Api-Key: API_KEY`;
//! a wrong key, or any key once revoked, gets 401. Faults, the request log
//! and the applied writes are the framework's (`support::fake`).

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::fake::{Common, Fake, FakeApi, Incoming, Reply, hmac_sha256};

pub const API_KEY: &str = "k-fake-items-1";
/// The secret the example connector checks webhook signatures with.
pub const WEBHOOK_SECRET: &str = "whsec-items-fake";

/// A running fake, stopped when dropped.
pub type FakeItems = Fake<Items>;

/// The API's data.
#[derive(Debug, Default)]
pub struct Items {
    common: Common,
    /// Requests without a key are let in (an API open to anyone), for calls
    /// made with ad-hoc properties, which hold no secret.
    open: bool,
    /// Every key is refused (the merchant revoked it).
    revoked: bool,
    /// By id (`item-1`).
    created: BTreeMap<String, Value>,
    /// What the feed lists: (sequence, item).
    feed: Vec<(u64, Value)>,
    /// Items per answer of the feed (all when `None`): the connector pages
    /// with `since`, one page a poll.
    page_size: Option<usize>,
}

impl FakeItems {
    pub async fn start() -> FakeItems {
        Fake::serve(Items::default()).await
    }

    /// A fake that also answers requests without a key.
    pub async fn start_open() -> FakeItems {
        Fake::serve(Items {
            open: true,
            ..Items::default()
        })
        .await
    }

    /// Connection properties for this API, secrets included.
    pub fn properties(&self) -> Value {
        json!({"base_url": self.origin(), "api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET})
    }

    /// Revokes the key (every request gets 401), or restores it.
    pub fn revoke_key(&self, revoked: bool) {
        self.lock().revoked = revoked;
    }

    /// A new item appears in the feed.
    pub fn add_to_feed(&self, id: &str) {
        let mut items = self.lock();
        let seq = items.feed.len() as u64 + 1;
        items.feed.push((seq, json!({"id": id, "seq": seq})));
    }

    /// The feed answers at most `n` items at a time.
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = Some(n);
    }

    /// An item leaves the feed (deleted upstream): later reads miss it.
    pub fn remove_from_feed(&self, id: &str) {
        self.lock().feed.retain(|(_, item)| item["id"] != json!(id));
    }

    /// The items created, in order: the key each came with and the body sent.
    pub fn created(&self) -> Vec<(String, Value)> {
        self.mutations()
            .into_iter()
            .filter(|m| m.method == "POST" && m.path == "/items")
            .map(|m| (m.idempotency_key.unwrap_or_default(), m.body))
            .collect()
    }

    /// The idempotency key of every `POST /items` that reached the API,
    /// whatever it was answered.
    pub fn posted_keys(&self) -> Vec<Option<String>> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/items")
            .map(|r| r.idempotency_key)
            .collect()
    }

    /// How many times the feed was read.
    pub fn polls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/items" && r.status == 200)
            .count()
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under [`WEBHOOK_SECRET`], as
/// the example connector's webhook trigger expects it.
pub fn sign(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(WEBHOOK_SECRET.as_bytes(), body))
    )
}

fn error(status: u16, message: &str) -> Reply {
    Reply::new(status, json!({"error": message}))
}

impl FakeApi for Items {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn failure(&self, status: u16, message: &str) -> Reply {
        error(status, message)
    }

    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply> {
        match request.header("x-api-key") {
            Some(API_KEY) if !self.revoked => Ok(Vec::new()),
            None if self.open => Ok(Vec::new()),
            _ => Err(error(401, "bad api key")),
        }
    }

    fn route(&mut self, request: &Incoming) -> Reply {
        match (&request.method, request.segments().as_slice()) {
            (&Method::GET, ["me"]) => Reply::ok(json!({"user": "acme"})),
            (&Method::GET, ["items"]) => {
                let since: u64 = request
                    .param("since")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let items: Vec<&(u64, Value)> = self
                    .feed
                    .iter()
                    .filter(|(s, _)| *s > since)
                    .take(self.page_size.unwrap_or(usize::MAX))
                    .collect();
                Reply::ok(json!({
                    "items": items.iter().map(|(_, item)| item).collect::<Vec<_>>(),
                    "next": items.last().map(|(s, _)| s.to_string()),
                }))
            }
            (&Method::POST, ["items"]) => {
                if request.header("idempotency-key").is_none() {
                    return error(400, "Idempotency-Key required");
                }
                let Ok(mut item) = request.json() else {
                    return error(400, "the body is not JSON");
                };
                let id = format!("item-{}", self.created.len() + 1);
                item["id"] = json!(id);
                self.created.insert(id, item.clone());
                Reply::new(201, item)
            }
            (&Method::GET, ["items", id]) => match self.created.get(*id) {
                Some(item) => Reply::ok(json!({"id": id, "name": item["name"]})),
                None => error(404, "no such item"),
            },
            _ => error(404, "no such endpoint"),
        }
    }
}
