//! The Shopify and warehouse connectors (`plugins/shopify`, `plugins/warehouse`)
//! against fakes of their APIs: actions through `POST /v1/invoke` (or the
//! engine, where a test needs to choose the idempotency key), triggers
//! through the engine as the scheduler calls them, and what the host makes of
//! the APIs' failures. The fakes listen on 127.0.0.2, the one network these
//! hosts allow.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use switchyard::{
    calls::{Call, Purpose},
    engine::{CallError, ConnectorError, PollOutput, WebhookOutput},
    tenants::DEFAULT_TENANT,
};
use switchyard_tests as artifacts;

use crate::{
    fake_shopify::{self, FakeShopify},
    fake_warehouse::{self, FakeWarehouse},
    support::{
        TestHost,
        clock::{now_secs, parse_rfc3339, rfc3339},
        fake::{Delivery, Mutation},
        sandbox_config,
    },
};

/// A host with both connectors uploaded.
struct Rig {
    host: TestHost,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let host = TestHost::start(sandbox_config(dir.path())).await;
        for path in [artifacts::SHOPIFY, artifacts::WAREHOUSE] {
            let (status, body) = host.upload_file(path).await;
            assert!(status.is_success(), "{path}: {body}");
        }
        Rig { host, _dir: dir }
    }

    async fn connect(&self, plugin: &str, properties: Value) -> String {
        self.host.connect(plugin, properties).await
    }

    /// `POST /v1/connections/{id}/test`: `Ok` or the connector's error.
    async fn test_connection(&self, connection: &str) -> Result<(), Value> {
        let (status, body) = self
            .host
            .call(
                Method::POST,
                &format!("/v1/connections/{connection}/test"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["ok"] == json!(true) {
            Ok(())
        } else {
            Err(body["error"]["error"].clone())
        }
    }

    /// Runs an action through `POST /v1/invoke`: its output, or the
    /// connector's error as the API shows it (`{"kind": ..., "message": ...}`).
    async fn invoke(
        &self,
        plugin: &str,
        connection: &str,
        action: &str,
        input: Value,
    ) -> Result<Value, Value> {
        let (status, body) = self
            .host
            .call(
                Method::POST,
                "/v1/invoke",
                Some(json!({"plugin": plugin, "action": action, "connection": connection, "input": input})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["error"].is_null() {
            Ok(body["output"].clone())
        } else {
            assert_eq!(body["error"]["kind"], json!("connector"), "{body}");
            Err(body["error"]["error"].clone())
        }
    }

    /// What the engine needs to call `plugin` for `connection`.
    fn setup(&self, plugin: &str, connection: &str) -> Call {
        let app = &self.host.app;
        let plugin = app.registry.newest(plugin).unwrap();
        let record = app.connections.current(DEFAULT_TENANT, connection).unwrap();
        app.calls
            .prepare_for(
                plugin,
                Some(record),
                BTreeMap::new(),
                Purpose::Other,
                "test".into(),
            )
            .unwrap()
    }

    /// Runs an action with a chosen idempotency key, as a flow step's retries do.
    async fn perform(
        &self,
        plugin: &str,
        connection: &str,
        action: &str,
        input: Value,
        key: &str,
    ) -> Result<Value, CallError> {
        let call = self.setup(plugin, connection);
        let outcome = self
            .host
            .app
            .calls
            .perform(call, action, &input.to_string(), key)
            .await;
        outcome
            .result
            .map(|text| serde_json::from_str(&text).unwrap())
    }

    async fn poll(
        &self,
        plugin: &str,
        connection: &str,
        trigger: &str,
        params: Value,
        cursor: Option<&str>,
    ) -> Result<PollOutput, CallError> {
        let call = self.setup(plugin, connection);
        self.host
            .app
            .calls
            .poll(call, trigger, &params.to_string(), cursor)
            .await
            .result
    }

    async fn webhook(
        &self,
        plugin: &str,
        connection: &str,
        trigger: &str,
        params: Value,
        delivery: &Delivery,
    ) -> Result<WebhookOutput, CallError> {
        let call = self.setup(plugin, connection);
        self.host
            .app
            .calls
            .handle_webhook(call, trigger, &params.to_string(), delivery.input())
            .await
            .result
    }

    async fn subscribe(
        &self,
        plugin: &str,
        connection: &str,
        trigger: &str,
        target: &str,
    ) -> Result<String, CallError> {
        let call = self.setup(plugin, connection);
        self.host
            .app
            .calls
            .subscribe(call, trigger, "{}", target)
            .await
            .result
    }

    async fn unsubscribe(
        &self,
        plugin: &str,
        connection: &str,
        trigger: &str,
        state: &str,
    ) -> Result<(), CallError> {
        let call = self.setup(plugin, connection);
        self.host
            .app
            .calls
            .unsubscribe(call, trigger, "{}", state)
            .await
            .result
    }
}

/// The connector error inside a failed call.
fn connector_error<T: std::fmt::Debug>(result: Result<T, CallError>) -> ConnectorError {
    match result {
        Err(CallError::Connector { error }) => error,
        other => panic!("expected a connector error, got {other:?}"),
    }
}

fn invalid_input<T: std::fmt::Debug>(result: Result<T, CallError>) -> String {
    match connector_error(result) {
        ConnectorError::InvalidInput { message } => message,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

/// The event ids and payloads of a poll.
fn events(output: &PollOutput) -> Vec<(String, Value)> {
    output
        .events
        .iter()
        .map(|e| (e.id.clone(), serde_json::from_str(&e.payload).unwrap()))
        .collect()
}

fn cursor_since(cursor: &str) -> String {
    let cursor: Value = serde_json::from_str(cursor).unwrap();
    cursor["since"].as_str().unwrap().to_string()
}

fn order_id(order: &Value) -> u64 {
    order["id"].as_u64().unwrap()
}

fn keyed<'a>(mutations: &'a [Mutation], key: &str) -> Vec<&'a Mutation> {
    mutations
        .iter()
        .filter(|m| m.idempotency_key.as_deref() == Some(key))
        .collect()
}

const HOOK: &str = "https://hooks.switchyard.test/w/4f6a2c";

#[tokio::test]
async fn shopify_connections_are_tested_with_the_host_held_token() {
    let rig = Rig::start().await;
    let shop = FakeShopify::start().await;
    let good = rig.connect("shopify", shop.properties()).await;
    rig.test_connection(&good).await.unwrap();
    let seen = shop.requests();
    assert_eq!(seen.last().unwrap().path, "/admin/api/2024-10/shop.json");

    let mut properties = shop.properties();
    properties["api_key"] = json!("shpat_revoked");
    let bad = rig.connect("shopify", properties).await;
    let error = rig.test_connection(&bad).await.unwrap_err();
    assert_eq!(error["kind"], json!("auth"), "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Invalid API key or access token"),
        "{error}"
    );
    assert_eq!(shop.requests().last().unwrap().status, 401);
    rig.host.stop().await;
}

#[tokio::test]
async fn shopify_finds_and_tags_orders() {
    let rig = Rig::start().await;
    let shop = FakeShopify::start().await;
    let conn = rig.connect("shopify", shop.properties()).await;
    let first = shop.create_order(json!({}));
    let second = shop.create_order(json!({"tags": "vip"}));

    let found = rig
        .invoke(
            "shopify",
            &conn,
            "find-order",
            json!({"order_id": order_id(&first)}),
        )
        .await
        .unwrap();
    assert_eq!(found["found"], json!(true));
    assert_eq!(found["order"], first);
    // Ids copied out of text fields work too.
    let found = rig
        .invoke(
            "shopify",
            &conn,
            "find-order",
            json!({"order_id": order_id(&first).to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(found["order"]["name"], json!("#1001"));
    for name in ["#1002", "1002"] {
        let found = rig
            .invoke("shopify", &conn, "find-order", json!({"name": name}))
            .await
            .unwrap();
        assert_eq!(found["order"]["id"], second["id"], "{name}");
    }
    for input in [json!({"name": "#9999"}), json!({"order_id": 42})] {
        let found = rig
            .invoke("shopify", &conn, "find-order", input)
            .await
            .unwrap();
        assert_eq!(found, json!({"found": false}));
    }
    // The schema wants one of the two, not both.
    let (status, body) = rig
        .host
        .invoke(
            "shopify",
            "find-order",
            json!({"order_id": 1, "name": "#1"}),
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // A status tag and a note, sent once with the step's key.
    let id = order_id(&second);
    let tagged = rig
        .perform(
            "shopify",
            &conn,
            "tag-order",
            json!({"order_id": id, "tags": ["Ready to ship"], "note": "Packed by the warehouse"}),
            "step-tag-1",
        )
        .await
        .unwrap();
    assert_eq!(
        tagged,
        json!({"order_id": id, "tags": ["vip", "Ready to ship"], "note": "Packed by the warehouse", "changed": true})
    );
    assert_eq!(shop.order(id).unwrap()["tags"], json!("vip, Ready to ship"));
    let mutations = shop.mutations();
    let sent = keyed(&mutations, "step-tag-1");
    assert_eq!(sent.len(), 1, "{mutations:?}");
    assert_eq!(
        (sent[0].method.as_str(), sent[0].path.as_str()),
        ("PUT", &*format!("/admin/api/2024-10/orders/{id}.json"))
    );

    // The same again changes nothing and sends nothing.
    let again = rig
        .perform(
            "shopify",
            &conn,
            "tag-order",
            json!({"order_id": id, "tags": ["ready to ship"], "note": "Packed by the warehouse"}),
            "step-tag-2",
        )
        .await
        .unwrap();
    assert_eq!(again["changed"], json!(false));
    assert_eq!(shop.mutations().len(), mutations.len());

    // The next status replaces the previous one; the note gets a line.
    let delivered = rig
        .invoke(
            "shopify",
            &conn,
            "tag-order",
            json!({"order_id": id.to_string(), "tags": ["Delivered"], "remove_tags": ["READY TO SHIP"], "note": "Delivered"}),
        )
        .await
        .unwrap();
    assert_eq!(delivered["tags"], json!(["vip", "Delivered"]));
    assert_eq!(
        delivered["note"],
        json!("Packed by the warehouse\nDelivered")
    );
    assert_eq!(shop.order(id).unwrap()["tags"], json!("vip, Delivered"));

    let missing = rig
        .perform(
            "shopify",
            &conn,
            "tag-order",
            json!({"order_id": 42, "tags": ["x"]}),
            "k",
        )
        .await;
    assert!(invalid_input(missing).contains("order 42 does not exist"));
    rig.host.stop().await;
}

#[tokio::test]
async fn shopify_fulfils_orders_and_sets_inventory() {
    let rig = Rig::start().await;
    let shop = FakeShopify::start().await;
    let conn = rig.connect("shopify", shop.properties()).await;
    let order = shop.create_order(json!({}));
    let id = order_id(&order);
    let input = json!({
        "order_id": id,
        "tracking_number": "1Z999AA10123456784",
        "tracking_url": "https://track.example/1Z999AA10123456784",
        "tracking_company": "UPS",
    });
    let out = rig
        .perform(
            "shopify",
            &conn,
            "create-fulfillment",
            input.clone(),
            "step-ful-1",
        )
        .await
        .unwrap();
    assert_eq!(out["created"], json!(true), "{out}");
    let fulfillment = &out["fulfillments"][0];
    assert_eq!(fulfillment["order_id"], json!(id));
    assert_eq!(fulfillment["status"], json!("success"));
    assert_eq!(fulfillment["tracking_number"], json!("1Z999AA10123456784"));
    assert_eq!(fulfillment["tracking_company"], json!("UPS"));
    assert_eq!(
        shop.order(id).unwrap()["fulfillment_status"],
        json!("fulfilled")
    );
    let mutations = shop.mutations();
    let sent = keyed(&mutations, "step-ful-1");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/admin/api/2024-10/fulfillments.json");
    let fo_id = *shop.lock().fulfillment_orders.keys().next().unwrap();
    assert_eq!(
        sent[0].body,
        json!({"fulfillment": {
            "line_items_by_fulfillment_order": [{"fulfillment_order_id": fo_id}],
            "tracking_info": {"number": "1Z999AA10123456784", "url": "https://track.example/1Z999AA10123456784", "company": "UPS"},
            "notify_customer": false,
        }})
    );
    // Nothing is left to fulfil: no second fulfillment.
    let again = rig
        .perform("shopify", &conn, "create-fulfillment", input, "step-ful-2")
        .await
        .unwrap();
    assert_eq!(again, json!({"created": false, "fulfillments": []}));
    assert_eq!(shop.lock().fulfillments.len(), 1);

    // Inventory by SKU: found through GraphQL, where W-1 also matches W-10.
    let item = shop.add_variant("W-1", 5);
    let other = shop.add_variant("W-10", 7);
    let set = rig
        .perform(
            "shopify",
            &conn,
            "set-inventory",
            json!({"sku": "W-1", "available": 12}),
            "step-inv-1",
        )
        .await
        .unwrap();
    assert_eq!(set["inventory_item_id"], json!(item));
    assert_eq!(set["location_id"], json!(fake_shopify::LOCATION_ID));
    assert_eq!(set["available"], json!(12));
    assert_eq!(shop.available(item), Some(12));
    assert_eq!(shop.available(other), Some(7));
    assert_eq!(keyed(&shop.mutations(), "step-inv-1").len(), 1);

    let set = rig
        .invoke(
            "shopify",
            &conn,
            "set-inventory",
            json!({"inventory_item_id": item, "location_id": fake_shopify::LOCATION_ID, "available": 3}),
        )
        .await
        .unwrap();
    assert_eq!(set["available"], json!(3));
    assert_eq!(shop.available(item), Some(3));

    let unknown = rig
        .perform(
            "shopify",
            &conn,
            "set-inventory",
            json!({"sku": "NOPE", "available": 1}),
            "k1",
        )
        .await;
    assert!(invalid_input(unknown).contains("no variant has the SKU `NOPE`"));
    let refused = rig
        .perform(
            "shopify",
            &conn,
            "set-inventory",
            json!({"inventory_item_id": 999, "available": 1}),
            "k2",
        )
        .await;
    let message = invalid_input(refused);
    assert!(
        message.contains("422") && message.contains("Inventory item does not exist"),
        "{message}"
    );
    rig.host.stop().await;
}

#[tokio::test]
async fn shopify_failures_become_what_the_host_acts_on() {
    let rig = Rig::start().await;
    let shop = FakeShopify::start().await;
    let conn = rig.connect("shopify", shop.properties()).await;
    let order = shop.create_order(json!({}));
    let find = json!({"order_id": order_id(&order)});

    shop.fail_next(1, 503);
    let error = rig
        .invoke("shopify", &conn, "find-order", find.clone())
        .await
        .unwrap_err();
    assert_eq!(error["kind"], json!("transient"), "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("503"),
        "{error}"
    );

    shop.rate_limit_next(1, "2.0");
    let error = rig
        .invoke("shopify", &conn, "find-order", find.clone())
        .await
        .unwrap_err();
    assert_eq!(error["kind"], json!("rate_limited"), "{error}");
    assert_eq!(
        error["retry_after_ms"],
        json!(2000),
        "Retry-After: 2.0 is 2 s"
    );

    // The shop's own bucket, made small and kept full by other apps of the
    // shop (it leaks nothing for this app, however slow its calls are).
    shop.set_bucket(2, 0.0);
    let mut limited = None;
    for _ in 0..10 {
        if let Err(e) = rig
            .invoke("shopify", &conn, "find-order", find.clone())
            .await
        {
            limited = Some(e);
            break;
        }
    }
    let error = limited.expect("the small bucket overflowed");
    assert_eq!(error["kind"], json!("rate_limited"), "{error}");
    assert_eq!(error["retry_after_ms"], json!(2000));
    assert_eq!(shop.lock().bucket.throttled, 1);
    shop.set_bucket(40, 2.0);

    let mut properties = shop.properties();
    properties["api_key"] = json!("shpat_revoked");
    let revoked = rig.connect("shopify", properties).await;
    let error = rig
        .invoke("shopify", &revoked, "find-order", find)
        .await
        .unwrap_err();
    assert_eq!(error["kind"], json!("auth"), "{error}");
    rig.host.stop().await;
}

#[tokio::test]
async fn shopify_a_retried_step_is_applied_once() {
    let rig = Rig::start().await;
    let shop = FakeShopify::start().await;
    let conn = rig.connect("shopify", shop.properties()).await;
    let item = shop.add_variant("W-1", 5);
    let input = json!({"inventory_item_id": item, "available": 9});

    // Applied, but the answer is lost: the step fails as transient...
    shop.lose_next_responses(1);
    let first = rig
        .perform(
            "shopify",
            &conn,
            "set-inventory",
            input.clone(),
            "run-7-step-3",
        )
        .await;
    assert!(
        matches!(connector_error(first), ConnectorError::Transient { .. }),
        "a lost answer is worth retrying"
    );
    assert_eq!(shop.available(item), Some(9));
    // ...and its retry, with the same key, gets the first answer back.
    let retried = rig
        .perform("shopify", &conn, "set-inventory", input, "run-7-step-3")
        .await
        .unwrap();
    assert_eq!(retried["available"], json!(9));
    let posts: Vec<_> = shop
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/inventory_levels/set.json"))
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(
        posts
            .iter()
            .all(|r| r.method == "POST" && r.idempotency_key.as_deref() == Some("run-7-step-3"))
    );
    assert_eq!(
        keyed(&shop.mutations(), "run-7-step-3").len(),
        1,
        "applied exactly once"
    );
    rig.host.stop().await;
}

#[tokio::test]
async fn shopify_order_created_webhook() {
    let rig = Rig::start().await;
    let shop = FakeShopify::start().await;
    let conn = rig.connect("shopify", shop.properties()).await;

    let state = rig
        .subscribe("shopify", &conn, "order-created", HOOK)
        .await
        .unwrap();
    let hooks: Vec<Value> = shop.lock().webhooks.values().cloned().collect();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["id"].to_string(), state);
    assert_eq!(
        (&hooks[0]["topic"], &hooks[0]["address"]),
        (&json!("orders/create"), &json!(HOOK))
    );
    // A retried activation adopts the webhook instead of failing.
    let again = rig
        .subscribe("shopify", &conn, "order-created", HOOK)
        .await
        .unwrap();
    assert_eq!(again, state);
    assert_eq!(shop.lock().webhooks.len(), 1);
    // Shopify delivers only to https.
    let refused = rig
        .subscribe(
            "shopify",
            &conn,
            "order-created",
            "http://hooks.switchyard.test/w",
        )
        .await;
    assert!(invalid_input(refused).contains("not supported"));

    let order = shop.create_order(json!({"email": "grace@example.com"}));
    let deliveries = shop.take_deliveries();
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery.address, HOOK);
    assert_eq!(delivery.json(), order);
    let out = rig
        .webhook("shopify", &conn, "order-created", json!({}), delivery)
        .await
        .unwrap();
    assert_eq!(out.events.len(), 1);
    assert_eq!(
        out.events[0].id,
        delivery.header("X-Shopify-Event-Id").unwrap()
    );
    let payload: Value = serde_json::from_str(&out.events[0].payload).unwrap();
    assert_eq!(payload, order);
    assert!(out.response.is_none());

    // Older API versions only send the webhook id.
    let older = delivery.clone().with_header("X-Shopify-Event-Id", None);
    let out = rig
        .webhook("shopify", &conn, "order-created", json!({}), &older)
        .await
        .unwrap();
    assert_eq!(
        out.events[0].id,
        delivery.header("X-Shopify-Webhook-Id").unwrap()
    );

    // Forged, tampered and unsigned deliveries are refused.
    let mut tampered = delivery.clone();
    tampered.body = serde_json::to_vec(&json!({"id": order["id"], "total_price": "0.01"})).unwrap();
    let forged = delivery.clone().with_header(
        "X-Shopify-Hmac-Sha256",
        Some(&fake_shopify::sign("not-the-secret", &delivery.body)),
    );
    let unsigned = delivery.clone().with_header("X-Shopify-Hmac-Sha256", None);
    for (what, bad) in [
        ("tampered", tampered),
        ("forged", forged),
        ("unsigned", unsigned),
    ] {
        let result = rig
            .webhook("shopify", &conn, "order-created", json!({}), &bad)
            .await;
        assert!(
            invalid_input(result).contains("webhook signature rejected"),
            "{what}"
        );
    }

    // Another topic sent to this trigger makes no event.
    let updated = shop.delivery("orders/updated", &order);
    let out = rig
        .webhook("shopify", &conn, "order-created", json!({}), &updated)
        .await
        .unwrap();
    assert!(out.events.is_empty());

    rig.unsubscribe("shopify", &conn, "order-created", &state)
        .await
        .unwrap();
    assert!(shop.lock().webhooks.is_empty());
    // Already gone is fine.
    rig.unsubscribe("shopify", &conn, "order-created", &state)
        .await
        .unwrap();
    rig.host.stop().await;
}

#[tokio::test]
async fn shopify_order_updated_polls_pages_without_losing_or_repeating() {
    order_updated_polls_pages_without_losing_or_repeating("shopify").await;
}

/// The same pages, the same cursor and the same events from a spec
/// (`plugins/declarative/shopify-lite.yaml`): `Link` pages followed as
/// they are, an inclusive `updated_at_min` cursor, a partial poll kept.
#[tokio::test]
async fn declarative_shopify_order_updated_polls_pages_without_losing_or_repeating() {
    order_updated_polls_pages_without_losing_or_repeating("shopify-lite").await;
}

async fn order_updated_polls_pages_without_losing_or_repeating(plugin: &str) {
    let rig = Rig::start().await;
    if plugin != "shopify" {
        let (status, body) = rig.host.upload_spec(&format!("{plugin}.yaml")).await;
        assert_eq!(status, 201, "{body}");
    }
    let shop = FakeShopify::start().await;
    let conn = rig.connect(plugin, shop.properties()).await;
    // Five orders changed an hour ago, two of them in the same second.
    let base = now_secs() - 3600;
    let at = |offset: i64| rfc3339(base + offset, fake_shopify::SHOP_OFFSET_MINUTES);
    let orders: Vec<Value> = [0, 60, 120, 120, 180]
        .iter()
        .map(|t| shop.create_order(json!({"created_at": at(*t), "updated_at": at(*t)})))
        .collect();
    let ids: Vec<u64> = orders.iter().map(order_id).collect();
    let event_id = |i: usize| format!("{}:{}", ids[i], orders[i]["updated_at"].as_str().unwrap());

    // The first poll starts from now, without asking Shopify anything.
    let seed = rig
        .poll(plugin, &conn, "order-updated", json!({}), None)
        .await
        .unwrap();
    assert!(seed.events.is_empty());
    let seeded = seed.cursor.unwrap();
    let since = cursor_since(&seeded);
    assert!(unix_secs(&since) >= now_secs() - 60, "seeded at {since}");
    assert!(shop.requests().is_empty());

    // With include_existing, every page, oldest first.
    let requests_before = shop.requests().len();
    let all = rig
        .poll(
            plugin,
            &conn,
            "order-updated",
            json!({"include_existing": true, "page_size": 2}),
            None,
        )
        .await
        .unwrap();
    let got: Vec<String> = events(&all).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, (0..5).map(event_id).collect::<Vec<_>>());
    assert_eq!(events(&all)[2].1, orders[2]);
    let pages: Vec<_> = shop.requests().split_off(requests_before);
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].param("status"), Some("any"));
    assert_eq!(pages[0].param("order"), Some("updated_at asc"));
    assert_eq!(pages[0].param("limit"), Some("2"));
    assert_eq!(pages[0].param("updated_at_min"), None);
    for page in &pages[1..] {
        assert!(page.param("page_info").is_some(), "{page:?}");
        assert_eq!(page.status, 200, "a page_info request carries no filters");
    }
    // The cursor is the newest change, written as Shopify wrote it.
    let cursor = all.cursor.unwrap();
    assert_eq!(
        cursor_since(&cursor),
        orders[4]["updated_at"].as_str().unwrap()
    );
    assert!(cursor_since(&cursor).ends_with("-04:00"));
    let next = rig
        .poll(plugin, &conn, "order-updated", json!({}), Some(&cursor))
        .await
        .unwrap();
    assert!(next.events.is_empty(), "{:?}", next.events);

    // One page per poll: the same five events, none twice, the tie included.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..6 {
        let out = rig
            .poll(
                plugin,
                &conn,
                "order-updated",
                json!({"include_existing": true, "page_size": 2, "max_pages": 1}),
                cursor.as_deref(),
            )
            .await
            .unwrap();
        seen.extend(events(&out).into_iter().map(|(id, _)| id));
        cursor = out.cursor.or(cursor);
    }
    assert_eq!(seen, (0..5).map(event_id).collect::<Vec<_>>());

    // A change after the seed is reported, with a new event id.
    let touched = shop.touch_order(ids[1]);
    let out = rig
        .poll(plugin, &conn, "order-updated", json!({}), Some(&seeded))
        .await
        .unwrap();
    let got = events(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        format!("{}:{}", ids[1], touched["updated_at"].as_str().unwrap())
    );
    assert_ne!(got[0].0, event_id(1));

    // A failure on a later page keeps what was read; the next poll goes on.
    // Oldest first is now 1, 3, 4, 5 and the touched 2.
    let touched_id = format!("{}:{}", ids[1], touched["updated_at"].as_str().unwrap());
    shop.fail_after(1, 1, 503);
    let partial = rig
        .poll(
            plugin,
            &conn,
            "order-updated",
            json!({"include_existing": true, "page_size": 2}),
            None,
        )
        .await
        .unwrap();
    let got: Vec<String> = events(&partial).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, [event_id(0), event_id(2)]);
    let cursor = partial.cursor.unwrap();
    assert_eq!(
        cursor_since(&cursor),
        orders[2]["updated_at"].as_str().unwrap()
    );
    let rest = rig
        .poll(
            plugin,
            &conn,
            "order-updated",
            json!({"page_size": 2}),
            Some(&cursor),
        )
        .await
        .unwrap();
    let got: Vec<String> = events(&rest).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, [event_id(3), event_id(4), touched_id]);
    rig.host.stop().await;
}

/// Seconds since the epoch of RFC 3339 text, by the fakes' clock.
fn unix_secs(text: &str) -> i64 {
    parse_rfc3339(text).unwrap()
}

#[tokio::test]
async fn shopify_requests_are_spaced_to_the_shops_bucket() {
    let rig = Rig::start().await;
    let shop = FakeShopify::start().await;
    let conn = rig.connect("shopify", shop.properties()).await;
    let order = shop.create_order(json!({}));
    // The manifest allows 35 at once, then 2 a second: 37 calls take at
    // least a second, and Shopify's bucket of 40 never overflows.
    let started = Instant::now();
    for _ in 0..37 {
        rig.invoke(
            "shopify",
            &conn,
            "find-order",
            json!({"order_id": order_id(&order)}),
        )
        .await
        .unwrap();
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "took {elapsed:?}");
    let (throttled, max_level) = {
        let state = shop.lock();
        (state.bucket.throttled, state.bucket.max_level)
    };
    assert_eq!(throttled, 0);
    assert!(max_level <= 36.0, "{max_level}");
    rig.host.stop().await;
}

fn shopify_line_items() -> Value {
    json!([
        {"id": 1301, "variant_id": 44001, "sku": "W-1", "title": "Widget", "quantity": 2, "price": "25.00"},
        {"id": 1302, "variant_id": 44002, "sku": "G-7", "title": "Gadget", "quantity": 1, "price": 9.5},
    ])
}

#[tokio::test]
async fn warehouse_orders_are_created_once_and_moved_on() {
    let rig = Rig::start().await;
    let warehouse = FakeWarehouse::start().await;
    let conn = rig.connect("warehouse", warehouse.properties()).await;
    rig.test_connection(&conn).await.unwrap();
    let mut properties = warehouse.properties();
    properties["token"] = json!("wh_live_revoked");
    let revoked = rig.connect("warehouse", properties).await;
    assert_eq!(
        rig.test_connection(&revoked).await.unwrap_err()["kind"],
        json!("auth")
    );

    let input = json!({
        "channel_order_id": 5_800_000_000_123u64,
        "channel_order_name": "#1001",
        "items": shopify_line_items(),
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "shipping_address": {"city": "London", "country_code": "GB"},
    });
    let created = rig
        .perform(
            "warehouse",
            &conn,
            "create-order",
            input.clone(),
            "run-1-step-2",
        )
        .await
        .unwrap();
    assert_eq!(created["created"], json!(true), "{created}");
    let order = &created["order"];
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!(order["status"], json!("created"));
    assert_eq!(order["channel"], json!("shopify"));
    assert_eq!(order["channel_order_id"], json!("5800000000123"));
    assert_eq!(
        order["items"],
        json!([
            {"sku": "W-1", "quantity": 2, "price": "25.00", "name": "Widget"},
            {"sku": "G-7", "quantity": 1, "price": "9.5", "name": "Gadget"},
        ])
    );
    // The same step again: the warehouse answers with the same order.
    let again = rig
        .perform(
            "warehouse",
            &conn,
            "create-order",
            input.clone(),
            "run-1-step-2",
        )
        .await
        .unwrap();
    assert_eq!(again, created);
    assert_eq!(warehouse.lock().orders.len(), 1);
    assert_eq!(keyed(&warehouse.mutations(), "run-1-step-2").len(), 1);

    // A lost answer, then the retry: still one order for the key.
    warehouse.lose_next_responses(1);
    let other =
        json!({"channel_order_id": "5800000000124", "items": [{"sku": "W-1", "quantity": 1}]});
    let lost = rig
        .perform(
            "warehouse",
            &conn,
            "create-order",
            other.clone(),
            "run-2-step-2",
        )
        .await;
    assert!(matches!(
        connector_error(lost),
        ConnectorError::Transient { .. }
    ));
    let retried = rig
        .perform("warehouse", &conn, "create-order", other, "run-2-step-2")
        .await
        .unwrap();
    assert_eq!(retried["created"], json!(true));
    assert_eq!(warehouse.lock().orders.len(), 2);
    assert_eq!(keyed(&warehouse.mutations(), "run-2-step-2").len(), 1);

    // Another run for the same channel order gets the existing order back.
    let duplicate = rig
        .invoke("warehouse", &conn, "create-order", input)
        .await
        .unwrap();
    assert_eq!(duplicate["created"], json!(false));
    assert_eq!(duplicate["order"]["id"], json!(id));
    assert_eq!(warehouse.lock().orders.len(), 2);

    for lookup in [
        json!({"order_id": id}),
        json!({"channel_order_id": 5_800_000_000_123u64}),
        json!({"channel": "shopify", "channel_order_id": "5800000000123"}),
    ] {
        let found = rig
            .invoke("warehouse", &conn, "get-order", lookup.clone())
            .await
            .unwrap();
        assert_eq!(found["order"]["id"], json!(id), "{lookup}");
    }
    for lookup in [
        json!({"order_id": "WO-999999"}),
        json!({"channel_order_id": "1"}),
    ] {
        let found = rig
            .invoke("warehouse", &conn, "get-order", lookup)
            .await
            .unwrap();
        assert_eq!(found, json!({"found": false}));
    }

    let packed = rig
        .perform(
            "warehouse",
            &conn,
            "update-order-status",
            json!({"order_id": id, "status": "packed", "note": "Gift wrap"}),
            "run-3-step-1",
        )
        .await
        .unwrap();
    assert_eq!(packed["status"], json!("packed"));
    assert_eq!(packed["notes"], json!("Gift wrap"));
    assert_eq!(warehouse.order(&id).unwrap()["status"], json!("packed"));
    let sent = keyed(&warehouse.mutations(), "run-3-step-1")[0].clone();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("PATCH", &*format!("/orders/{id}"))
    );
    let refused = rig
        .perform(
            "warehouse",
            &conn,
            "update-order-status",
            json!({"order_id": id, "status": "delivered"}),
            "run-3-step-2",
        )
        .await;
    assert!(invalid_input(refused).contains("is packed and cannot become delivered"));
    let unknown = rig
        .perform(
            "warehouse",
            &conn,
            "update-order-status",
            json!({"order_id": "WO-999999", "status": "packed"}),
            "run-3-step-3",
        )
        .await;
    assert!(invalid_input(unknown).contains("has no order WO-999999"));

    warehouse.fail_next(1, 503);
    let error = rig
        .invoke("warehouse", &conn, "get-order", json!({"order_id": id}))
        .await
        .unwrap_err();
    assert_eq!(error["kind"], json!("transient"), "{error}");
    warehouse.rate_limit_next(1, "3");
    let error = rig
        .invoke("warehouse", &conn, "get-order", json!({"order_id": id}))
        .await
        .unwrap_err();
    assert_eq!(error["kind"], json!("rate_limited"), "{error}");
    assert_eq!(error["retry_after_ms"], json!(3000));
    rig.host.stop().await;
}

#[tokio::test]
async fn warehouse_webhooks_report_shipments_and_stock() {
    let rig = Rig::start().await;
    let warehouse = FakeWarehouse::start().await;
    let conn = rig.connect("warehouse", warehouse.properties()).await;
    let ship_hook = format!("{HOOK}/ship");
    let stock_hook = format!("{HOOK}/stock");
    let ship = rig
        .subscribe("warehouse", &conn, "shipment-status", &ship_hook)
        .await
        .unwrap();
    assert_eq!(
        rig.subscribe("warehouse", &conn, "shipment-status", &ship_hook)
            .await
            .unwrap(),
        ship,
        "registering again is the same endpoint"
    );
    let stock = rig
        .subscribe("warehouse", &conn, "stock-changed", &stock_hook)
        .await
        .unwrap();
    assert_ne!(ship, stock);
    assert_eq!(
        warehouse.lock().endpoints[&ship]["events"],
        json!(["shipment.status_changed"])
    );

    let created = rig
        .invoke(
            "warehouse",
            &conn,
            "create-order",
            json!({"channel_order_id": 5_800_000_000_123u64, "items": [{"sku": "W-1", "quantity": 1}]}),
        )
        .await
        .unwrap();
    let id = created["order"]["id"].as_str().unwrap().to_string();
    for status in ["packed", "shipped", "delivered"] {
        warehouse.advance(&id, status);
    }
    let deliveries = warehouse.take_deliveries();
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries.iter().all(|d| d.address == ship_hook));

    let packed = rig
        .webhook(
            "warehouse",
            &conn,
            "shipment-status",
            json!({}),
            &deliveries[0],
        )
        .await
        .unwrap();
    assert_eq!(packed.events.len(), 1);
    assert_eq!(
        packed.events[0].id,
        deliveries[0].header("webhook-id").unwrap()
    );
    let payload: Value = serde_json::from_str(&packed.events[0].payload).unwrap();
    assert_eq!(payload["status"], json!("packed"));
    assert_eq!(payload["order_id"], json!(id));
    assert_eq!(payload["channel_order_id"], json!("5800000000123"));

    // Only the statuses a flow asks for.
    let only_delivered = json!({"statuses": ["delivered"]});
    let mut reported = Vec::new();
    for delivery in &deliveries {
        let out = rig
            .webhook(
                "warehouse",
                &conn,
                "shipment-status",
                only_delivered.clone(),
                delivery,
            )
            .await
            .unwrap();
        reported.extend(out.events);
    }
    assert_eq!(reported.len(), 1);
    let delivered: Value = serde_json::from_str(&reported[0].payload).unwrap();
    assert_eq!(delivered["status"], json!("delivered"));
    assert!(delivered["awb"].as_str().unwrap().starts_with("AWB"));

    // Tampered, forged and stale deliveries are refused by the host's check.
    let mut tampered = deliveries[2].clone();
    tampered.body = tampered.body.replace_str("delivered", "cancelled");
    let forged = deliveries[2].clone().with_header(
        "webhook-signature",
        Some(&fake_warehouse::sign(
            "whsec_bm90LXRoZS1zZWNyZXQ=",
            deliveries[2].header("webhook-id").unwrap(),
            deliveries[2]
                .header("webhook-timestamp")
                .unwrap()
                .parse()
                .unwrap(),
            &deliveries[2].body,
        )),
    );
    let stale = warehouse.delivery_at("shipment.status_changed", &delivered, now_secs() - 600);
    for (what, bad, reason) in [
        ("tampered", tampered, "no valid v1 signature"),
        ("forged", forged, "no valid v1 signature"),
        ("stale", stale, "tolerance"),
    ] {
        let message = invalid_input(
            rig.webhook("warehouse", &conn, "shipment-status", json!({}), &bad)
                .await,
        );
        assert!(message.contains(reason), "{what}: {message}");
    }

    let change = warehouse.set_stock("W-1", 17);
    let deliveries = warehouse.take_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].address, stock_hook);
    let out = rig
        .webhook(
            "warehouse",
            &conn,
            "stock-changed",
            json!({}),
            &deliveries[0],
        )
        .await
        .unwrap();
    let payload: Value = serde_json::from_str(&out.events[0].payload).unwrap();
    assert_eq!(payload, change);
    assert_eq!(
        (
            &payload["sku"],
            &payload["available"],
            &payload["location_id"]
        ),
        (&json!("W-1"), &json!(17), &json!(fake_warehouse::LOCATION))
    );
    // A stock delivery sent to the shipment trigger makes no event.
    let out = rig
        .webhook(
            "warehouse",
            &conn,
            "shipment-status",
            json!({}),
            &deliveries[0],
        )
        .await
        .unwrap();
    assert!(out.events.is_empty());

    for (trigger, state) in [("shipment-status", &ship), ("stock-changed", &stock)] {
        rig.unsubscribe("warehouse", &conn, trigger, state)
            .await
            .unwrap();
        rig.unsubscribe("warehouse", &conn, trigger, state)
            .await
            .unwrap();
    }
    assert!(warehouse.lock().endpoints.is_empty());
    rig.host.stop().await;
}

#[tokio::test]
async fn warehouse_shipment_updates_poll_cursor_pages() {
    let rig = Rig::start().await;
    let warehouse = FakeWarehouse::start().await;
    let conn = rig.connect("warehouse", warehouse.properties()).await;
    let base = now_secs() - 3600;
    let shipments: Vec<Value> = [
        (0, "packed"),
        (60, "shipped"),
        (120, "delivered"),
        (120, "packed"),
        (180, "delivered"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (t, status))| warehouse.insert_shipment(&format!("58000000001{i}"), status, base + t))
    .collect();
    let event_id = |s: &Value| {
        format!(
            "{}:{}",
            s["id"].as_str().unwrap(),
            s["updated_at"].as_str().unwrap()
        )
    };

    let seed = rig
        .poll("warehouse", &conn, "shipment-updates", json!({}), None)
        .await
        .unwrap();
    assert!(seed.events.is_empty() && seed.cursor.is_some());
    assert!(warehouse.requests().is_empty());

    let all = rig
        .poll(
            "warehouse",
            &conn,
            "shipment-updates",
            json!({"include_existing": true, "page_size": 2}),
            None,
        )
        .await
        .unwrap();
    let got: Vec<String> = events(&all).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, shipments.iter().map(event_id).collect::<Vec<_>>());
    let pages = warehouse.requests();
    assert_eq!(pages.len(), 3);
    assert!(pages[0].param("cursor").is_none() && pages[0].param("updated_since").is_none());
    assert!(
        pages[1..]
            .iter()
            .all(|p| p.param("cursor").is_some() && p.status == 200)
    );
    let cursor = all.cursor.unwrap();
    assert_eq!(
        cursor_since(&cursor),
        shipments[4]["updated_at"].as_str().unwrap()
    );
    let next = rig
        .poll(
            "warehouse",
            &conn,
            "shipment-updates",
            json!({}),
            Some(&cursor),
        )
        .await
        .unwrap();
    assert!(next.events.is_empty());
    assert_eq!(
        warehouse.requests().last().unwrap().param("updated_since"),
        shipments[4]["updated_at"].as_str()
    );

    // Only delivered shipments, one page a poll: the others still move the cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..6 {
        let out = rig
            .poll(
                "warehouse",
                &conn,
                "shipment-updates",
                json!({"include_existing": true, "page_size": 2, "max_pages": 1, "statuses": ["delivered"]}),
                cursor.as_deref(),
            )
            .await
            .unwrap();
        seen.extend(events(&out).into_iter().map(|(id, _)| id));
        cursor = out.cursor.or(cursor);
    }
    assert_eq!(seen, [event_id(&shipments[2]), event_id(&shipments[4])]);
    assert_eq!(
        cursor_since(&cursor.unwrap()),
        shipments[4]["updated_at"].as_str().unwrap()
    );

    warehouse.fail_after(1, 1, 503);
    let partial = rig
        .poll(
            "warehouse",
            &conn,
            "shipment-updates",
            json!({"include_existing": true, "page_size": 2}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(partial.events.len(), 2);
    rig.host.stop().await;
}

/// `replace` for a byte body known to be UTF-8 JSON.
trait ReplaceStr {
    fn replace_str(&self, from: &str, to: &str) -> Vec<u8>;
}

impl ReplaceStr for Vec<u8> {
    fn replace_str(&self, from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(self.clone())
            .unwrap()
            .replace(from, to)
            .into_bytes()
    }
}
