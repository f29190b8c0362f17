//! The JavaScript WooCommerce connector (`plugins/woocommerce-js`) against
//! the fake store: order look-ups and updates, error mapping, the polling
//! trigger's seed, `X-WP-TotalPages` pages and cursor, and signed
//! `order.created` deliveries.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use super::{Build, Conn, assert_no_secret, connector_error, kind_of, payloads, start_host};
use crate::{
    fake_woocommerce::{CONSUMER_KEY, CONSUMER_SECRET, FakeWooCommerce, WEBHOOK_SECRET},
    support::TestHost,
};

const SECRETS: [&str; 3] = [CONSUMER_KEY, CONSUMER_SECRET, WEBHOOK_SECRET];

async fn connection<'a>(host: &'a TestHost, fake: &FakeWooCommerce, secret: &str) -> Conn<'a> {
    let properties = json!({
        "base_url": fake.origin(),
        "username": CONSUMER_KEY,
        "password": secret,
        "webhook_secret": WEBHOOK_SECRET,
    });
    Conn::create(host, "woocommerce", properties).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_woocommerce_actions_update_orders_and_map_errors() {
    woocommerce_actions_update_orders_and_map_errors(Build::Code(artifacts::WOOCOMMERCE_JS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_woocommerce_actions_update_orders_and_map_errors() {
    woocommerce_actions_update_orders_and_map_errors(Build::Spec("woocommerce.yaml")).await;
}

async fn woocommerce_actions_update_orders_and_map_errors(build: Build) {
    let fake = FakeWooCommerce::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), build).await;
    let store = connection(&host, &fake, CONSUMER_SECRET).await;
    assert_eq!(store.test().await["ok"], json!(true));

    let order = fake.add_order("processing", "1499.00");
    let id = order["id"].as_u64().unwrap();
    let found = store.invoke("get-order", json!({"id": id})).await;
    assert_eq!(
        found["output"],
        json!({"found": true, "order": order}),
        "{found}"
    );
    eprintln!("woocommerce get-order: {} ms", found["duration_ms"]);
    let searched = store
        .invoke("get-order", json!({"search": order["number"]}))
        .await;
    assert_eq!(searched["output"]["order"]["id"], json!(id), "{searched}");
    let missing = store.invoke("get-order", json!({"id": 9})).await;
    assert_eq!(missing["output"], json!({"found": false}), "{missing}");
    let missing = store.invoke("get-order", json!({"search": "nobody"})).await;
    assert_eq!(missing["output"], json!({"found": false}), "{missing}");
    let basic = format!(
        "Basic {}",
        BASE64.encode(format!("{CONSUMER_KEY}:{CONSUMER_SECRET}"))
    );
    assert!(
        fake.requests()
            .iter()
            .all(|s| s.authorization.as_deref() == Some(basic.as_str()))
    );

    // A custom status (from a status plugin) is set with PUT; the store
    // records the step's idempotency key with the change.
    let delivered = json!({"id": id, "status": "delivered"});
    let updated = store.invoke("update-order-status", delivered).await;
    assert_eq!(updated["output"]["status"], json!("delivered"), "{updated}");
    assert_eq!(fake.order(id).unwrap()["status"], json!("delivered"));
    let text = "Delivered by Delhivery (SY7700000001)";
    let noted = store
        .invoke("add-order-note", json!({"id": id, "note": text}))
        .await;
    assert_eq!(
        (&noted["output"]["note"], &noted["output"]["customer_note"]),
        (&json!(text), &json!(false))
    );
    assert_eq!(fake.notes(id).len(), 1);
    let mutations = fake.mutations();
    let applied: Vec<_> = mutations
        .iter()
        .map(|m| (m.method.as_str(), m.path.as_str()))
        .collect();
    let order_path = format!("/wp-json/wc/v3/orders/{id}");
    let notes_path = format!("{order_path}/notes");
    assert_eq!(applied, [("PUT", &*order_path), ("POST", &*notes_path)]);
    assert!(
        mutations
            .iter()
            .all(|m| m.idempotency_key.as_deref().is_some_and(|k| !k.is_empty()))
    );

    // Errors: a status the store does not know (400), an unknown order (404),
    // 429 with Retry-After, 503, and a revoked secret (401).
    let teleported = json!({"id": id, "status": "teleported"});
    let bad_status = store.invoke("update-order-status", teleported).await;
    let (kind, error) = connector_error(&bad_status);
    assert_eq!(kind, "invalid_input", "{bad_status}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("rest_invalid_param"),
        "{error}"
    );
    let unknown = json!({"id": 4242, "status": "completed"});
    let no_order = store.invoke("update-order-status", unknown).await;
    let (kind, error) = connector_error(&no_order);
    assert_eq!(kind, "invalid_input", "{no_order}");
    assert!(
        error["message"].as_str().unwrap().contains("no order 4242"),
        "{error}"
    );
    fake.rate_limit_next(1, "3");
    let limited = store.invoke("get-order", json!({"id": id})).await;
    let (kind, error) = connector_error(&limited);
    assert_eq!(
        (kind.as_str(), &error["retry_after_ms"]),
        ("rate_limited", &json!(3000))
    );
    fake.fail_next(1, 503);
    let unavailable = store.invoke("get-order", json!({"id": id})).await;
    assert_eq!(
        connector_error(&unavailable).0,
        "transient",
        "{unavailable}"
    );
    let revoked = connection(&host, &fake, "cs_revoked").await;
    let denied = revoked.invoke("get-order", json!({"id": id})).await;
    assert_eq!(connector_error(&denied).0, "auth", "{denied}");
    assert_eq!(fake.mutations().len(), 2, "failed calls changed nothing");
    for body in [
        &found,
        &updated,
        &noted,
        &bad_status,
        &limited,
        &unavailable,
        &denied,
    ] {
        assert_no_secret(body, &SECRETS);
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_woocommerce_polls_pages_and_verifies_webhooks() {
    woocommerce_polls_pages_and_verifies_webhooks(Build::Code(artifacts::WOOCOMMERCE_JS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_woocommerce_polls_pages_and_verifies_webhooks() {
    woocommerce_polls_pages_and_verifies_webhooks(Build::Spec("woocommerce.yaml")).await;
}

async fn woocommerce_polls_pages_and_verifies_webhooks(build: Build) {
    let fake = FakeWooCommerce::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), build).await;
    let store = connection(&host, &fake, CONSUMER_SECRET).await;
    let trigger = "order-updated";

    // An empty store seeds the cursor at the epoch, a store with orders at
    // its newest change: history is not replayed.
    let seeded = store.poll_ok(trigger, json!({}), None).await;
    assert_eq!(
        (seeded.events.len(), seeded.cursor.as_deref()),
        (0, Some("1970-01-01T00:00:00"))
    );
    let first = fake.add_order("pending", "10.00");
    let seeded = store.poll_ok(trigger, json!({}), None).await;
    assert!(seeded.events.is_empty());
    let cursor = seeded.cursor.unwrap();
    assert_eq!(cursor, first["date_modified_gmt"].as_str().unwrap());

    // 60 new orders and a change to the first: two pages of 50 (the number
    // of pages comes from X-WP-TotalPages), oldest change first.
    let mut expected: Vec<Value> = (0..60)
        .map(|n| fake.add_order("processing", &format!("{n}.00")))
        .collect();
    expected.push(fake.set_status(first["id"].as_u64().unwrap(), "cancelled"));
    let before = fake.requests().len();
    let polled = store.poll_ok(trigger, json!({}), Some(&cursor)).await;
    assert_eq!(payloads(&polled.events), expected);
    let last = expected.last().unwrap();
    let last_at = last["date_modified_gmt"].as_str().unwrap();
    assert_eq!(
        polled.events.last().unwrap().id,
        format!("{}:{last_at}", last["id"])
    );
    let cursor = polled.cursor.unwrap();
    assert_eq!(cursor, last_at);
    let pages: Vec<String> = fake.requests()[before..]
        .iter()
        .map(|s| s.uri.clone())
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    for (n, uri) in pages.iter().enumerate() {
        assert!(uri.starts_with("/wp-json/wc/v3/orders?"), "{uri}");
        assert!(
            uri.contains(&format!("page={}", n + 1)) && uri.contains("per_page=50"),
            "{uri}"
        );
        assert!(
            uri.contains("modified_after=2025-01-01T00%3A00%3A01"),
            "{uri}"
        );
    }
    let idle = store.poll_ok(trigger, json!({}), Some(&cursor)).await;
    assert!(idle.events.is_empty() && idle.cursor.is_none(), "{idle:?}");

    let completed = fake.set_status(expected[3]["id"].as_u64().unwrap(), "completed");
    fake.set_status(expected[4]["id"].as_u64().unwrap(), "on-hold");
    fake.fail_next(1, 502);
    assert_eq!(
        kind_of(store.poll(trigger, json!({}), Some(&cursor)).await).0,
        "transient"
    );
    let completed_only = json!({"statuses": ["completed"]});
    let filtered = store.poll_ok(trigger, completed_only, Some(&cursor)).await;
    assert_eq!(payloads(&filtered.events), [completed]);
    assert!(filtered.cursor.unwrap() > cursor);

    // order.created deliveries, verified with the store's webhook secret.
    let created = fake.add_order("processing", "799.00");
    let delivery = fake.order_created_delivery(&created);
    let output = store
        .webhook("order-created", &delivery)
        .await
        .result
        .unwrap();
    assert_eq!(output.events.len(), 1);
    assert_eq!(
        output.events[0].id,
        delivery.header("X-WC-Webhook-Delivery-ID").unwrap()
    );
    assert_eq!(payloads(&output.events), std::slice::from_ref(&created));
    assert!(output.response.is_none());

    let mut tampered = delivery.clone();
    tampered.body[0] = b' ';
    let unsigned = delivery.clone().with_header("X-WC-Webhook-Signature", None);
    for bad in [tampered, unsigned] {
        let (kind, error) = kind_of(store.webhook("order-created", &bad).await);
        assert_eq!(kind, "invalid_input");
        assert!(error.to_string().contains("signature"), "{error}");
    }
    // A connection without the webhook secret cannot accept deliveries.
    let properties =
        json!({"base_url": fake.origin(), "username": CONSUMER_KEY, "password": CONSUMER_SECRET});
    let no_secret = Conn::create(&host, "woocommerce", properties).await;
    let (_, error) = kind_of(no_secret.webhook("order-created", &delivery).await);
    assert!(error.to_string().contains("webhook_secret"), "{error}");
    // Another topic on the same URL is acknowledged and produces nothing.
    let mut updated = fake.order_created_delivery(&created);
    updated = updated.with_header("X-WC-Webhook-Topic", Some("order.updated"));
    assert!(
        store
            .webhook("order-created", &updated)
            .await
            .result
            .unwrap()
            .events
            .is_empty()
    );

    // The ping WooCommerce sends when a webhook is saved is acknowledged.
    let ping = store.webhook("order-created", &fake.ping_delivery(7)).await;
    assert!(ping.result.unwrap().events.is_empty());

    // Subscribing registers nothing (the store owner adds the webhook with
    // its secret) and says what to do in the run log.
    let target = "https://hooks.switchyard.test/w/1";
    let subscribed = store.subscribe("order-created", target).await;
    assert_eq!(subscribed.result.as_deref(), Ok(""));
    let logs = &subscribed.journal.logs;
    assert!(logs.iter().any(|l| l.message.contains(target)), "{logs:?}");
    for body in [
        json!(format!("{:?}", output.events)),
        json!(format!("{logs:?}")),
    ] {
        assert_no_secret(&body, &SECRETS);
    }
    host.stop().await;
}
