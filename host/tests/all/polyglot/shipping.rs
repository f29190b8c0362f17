//! The Python shipping connector (`plugins/shipping-py`) against the fake
//! aggregator: actions, error mapping and exactly-once booking; the polling
//! trigger's seed, pages and cursor; webhook subscription and signatures.

use serde_json::{Value, json};
use switchyard::engine::ConnectorError;
use switchyard_tests as artifacts;

use super::{
    Build, Conn, assert_no_secret, connector_error, kind_of, payloads, receiver, start_host,
};
use crate::{
    fake_shipping::{FakeShipping, TOKEN, WEBHOOK_SECRET},
    support::{TestHost, fake::hmac_sha256},
};

const SECRETS: [&str; 2] = [TOKEN, WEBHOOK_SECRET];

async fn connection<'a>(host: &'a TestHost, fake: &FakeShipping, token: &str) -> Conn<'a> {
    let properties =
        json!({"base_url": fake.origin(), "token": token, "webhook_secret": WEBHOOK_SECRET});
    Conn::create(host, "shipping", properties).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_shipping_actions_map_errors_and_book_once() {
    shipping_actions_map_errors_and_book_once(Build::Code(artifacts::SHIPPING_PY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_shipping_actions_map_errors_and_book_once() {
    shipping_actions_map_errors_and_book_once(Build::Spec("shipping.yaml")).await;
}

async fn shipping_actions_map_errors_and_book_once(build: Build) {
    let fake = FakeShipping::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), build).await;
    let shop = connection(&host, &fake, TOKEN).await;
    assert_eq!(shop.test().await["ok"], json!(true));

    // A search that finds, and one that does not.
    let shipped = fake.add_shipment("1001", "IN_TRANSIT");
    let awb = shipped["awb"].as_str().unwrap();
    let found = shop.invoke("get-tracking", json!({"awb": awb})).await;
    assert_eq!(
        found["output"],
        json!({"found": true, "tracking": shipped}),
        "{found}"
    );
    eprintln!("shipping get-tracking: {} ms", found["duration_ms"]);
    let missing = shop.invoke("get-tracking", json!({"awb": "SY/../x"})).await;
    assert_eq!(missing["output"], json!({"found": false}), "{missing}");
    let seen = fake.requests();
    assert!(
        seen.iter().any(|s| s.uri == "/tracking/SY%2F..%2Fx"),
        "the AWB is one path segment: {seen:?}"
    );

    // The host sent the token on every request; the plugin never had it.
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(bearer.as_str()))
    );
    assert_no_secret(&found, &SECRETS);

    // Booking: the same idempotency key books once, whatever the retries.
    let order = json!({
        "order_ref": "1002",
        "weight_grams": 500,
        "destination": {"name": "Asha Rao", "pincode": "560001", "city": "Bengaluru"},
    });
    let booked = shop.invoke("create-shipment", order.clone()).await;
    assert_eq!(booked["output"]["status"], json!("CREATED"), "{booked}");
    assert_eq!(booked["output"]["order_ref"], json!("1002"));
    let first = shop
        .perform_with_key("create-shipment", &order, "step-7")
        .await;
    let again = shop
        .perform_with_key("create-shipment", &order, "step-7")
        .await;
    assert_eq!(first, again, "a retry gets the same shipment");
    let applied = fake.mutations();
    assert_eq!(
        applied.len(),
        2,
        "three requests, two bookings: {applied:?}"
    );
    assert_eq!(applied[1].idempotency_key.as_deref(), Some("step-7"));
    let invoke_key = applied[0].idempotency_key.as_deref();
    assert!(invoke_key.is_some_and(|k| !k.is_empty() && k != "step-7"));
    let booking_keys: Vec<Option<String>> = fake
        .requests()
        .into_iter()
        .filter(|s| s.method == "POST" && s.uri == "/shipments")
        .map(|s| s.idempotency_key)
        .collect();
    assert_eq!(
        booking_keys[1..],
        [Some("step-7".into()), Some("step-7".into())]
    );

    // Errors: 429 with Retry-After, 503, the API refusing the input, 401.
    fake.rate_limit_next(1, "7");
    let limited = shop.invoke("get-tracking", json!({"awb": awb})).await;
    let (kind, error) = connector_error(&limited);
    assert_eq!(
        (kind.as_str(), &error["retry_after_ms"]),
        ("rate_limited", &json!(7000))
    );
    fake.fail_next(1, 503);
    let unavailable = shop.invoke("get-tracking", json!({"awb": awb})).await;
    assert_eq!(
        connector_error(&unavailable).0,
        "transient",
        "{unavailable}"
    );
    // An empty pincode passes the schema; the API cannot route it.
    let unroutable = json!({"order_ref": "1003", "weight_grams": 1, "destination": {"name": "X", "pincode": ""}});
    let refused = shop.invoke("create-shipment", unroutable).await;
    assert_eq!(connector_error(&refused).0, "invalid_input", "{refused}");
    assert_eq!(fake.mutations().len(), 2, "refused calls booked nothing");

    let revoked = connection(&host, &fake, "shp-revoked-token").await;
    let denied = revoked.invoke("get-tracking", json!({"awb": awb})).await;
    let (kind, error) = connector_error(&denied);
    assert_eq!(kind, "auth", "{denied}");
    assert!(
        error["message"].as_str().unwrap().contains("401"),
        "{error}"
    );
    let tested = revoked.test().await;
    assert_eq!(
        (&tested["ok"], &tested["error"]["error"]["kind"]),
        (&json!(false), &json!("auth"))
    );
    for body in [&booked, &limited, &unavailable, &refused, &denied, &tested] {
        assert_no_secret(body, &SECRETS);
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_shipping_polls_pages_and_verifies_webhooks() {
    shipping_polls_pages_and_verifies_webhooks(Build::Code(artifacts::SHIPPING_PY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_shipping_polls_pages_and_verifies_webhooks() {
    shipping_polls_pages_and_verifies_webhooks(Build::Spec("shipping.yaml")).await;
}

async fn shipping_polls_pages_and_verifies_webhooks(build: Build) {
    let fake = FakeShipping::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), build).await;
    let shop = connection(&host, &fake, TOKEN).await;
    let trigger = "tracking-status";
    let old = fake.add_shipment("900", "DELIVERED");
    let newest = fake.add_shipment("901", "IN_TRANSIT");

    // The first poll only seeds the cursor: history is not replayed.
    let seeded = shop.poll_ok(trigger, json!({}), None).await;
    assert!(seeded.events.is_empty(), "{:?}", seeded.events);
    let cursor = seeded.cursor.unwrap();
    assert_eq!(cursor, newest["updated_at"].as_str().unwrap());

    // 120 new shipments and one change: two pages of 100, oldest first.
    let mut expected: Vec<Value> = (0..120)
        .map(|n| fake.add_shipment(&format!("2{n:03}"), "CREATED"))
        .collect();
    expected.push(fake.set_status(old["awb"].as_str().unwrap(), "RTO_INITIATED"));
    let requests_before = fake.requests().len();
    let polled = shop.poll_ok(trigger, json!({}), Some(&cursor)).await;
    assert_eq!(payloads(&polled.events), expected);
    let last = expected.last().unwrap();
    let (last_awb, last_at) = (
        last["awb"].as_str().unwrap(),
        last["updated_at"].as_str().unwrap(),
    );
    assert_eq!(
        polled.events.last().unwrap().id,
        format!("{last_awb}:{last_at}")
    );
    let cursor = polled.cursor.unwrap();
    assert_eq!(cursor, last_at);
    let pages: Vec<String> = fake.requests()[requests_before..]
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    for (n, uri) in pages.iter().enumerate() {
        assert!(uri.starts_with("GET /tracking?"), "{uri}");
        assert!(uri.contains(&format!("page={}", n + 1)), "{uri}");
        assert!(
            uri.contains("updated_since=2025-01-01T00%3A00%3A02Z"),
            "{uri}"
        );
    }

    // Nothing new: no events and the cursor stays.
    let idle = shop.poll_ok(trigger, json!({}), Some(&cursor)).await;
    assert!(idle.events.is_empty() && idle.cursor.is_none(), "{idle:?}");

    // A 503 or a 429 fails the poll (the host keeps the cursor); a status
    // filter passes only what a flow wants while the cursor moves past
    // everything read.
    let awb = expected[0]["awb"].as_str().unwrap().to_string();
    let delivered = fake.set_status(&awb, "DELIVERED");
    fake.set_status(expected[1]["awb"].as_str().unwrap(), "IN_TRANSIT");
    fake.fail_next(1, 503);
    let failed = shop.poll(trigger, json!({}), Some(&cursor)).await;
    assert_eq!(kind_of(failed).0, "transient");
    fake.rate_limit_next(1, "2");
    let limited = shop.poll(trigger, json!({}), Some(&cursor)).await;
    assert!(matches!(
        kind_of(limited).1,
        ConnectorError::RateLimited {
            retry_after_ms: 2000,
            ..
        }
    ));
    let delivered_only = json!({"statuses": ["DELIVERED"]});
    let filtered = shop.poll_ok(trigger, delivered_only, Some(&cursor)).await;
    assert_eq!(payloads(&filtered.events), std::slice::from_ref(&delivered));
    assert!(filtered.cursor.unwrap().as_str() > delivered["updated_at"].as_str().unwrap());

    // Webhooks: subscribing registers the flow's URL; on a status change the
    // aggregator posts there, and the host verifies the delivery with the
    // secret the plugin never sees.
    let (_receiver, target, received) = receiver().await;
    let state = shop
        .subscribe("tracking-update", &target)
        .await
        .result
        .unwrap();
    let registered = json!({"id": state, "url": target, "events": ["tracking.updated"]});
    assert_eq!(fake.webhooks(), [registered]);
    assert_eq!(fake.notify(&awb).await, [(target.clone(), 200)]);
    let delivery = received.lock().unwrap().pop().expect("a delivery arrived");
    let output = shop
        .webhook("tracking-update", &delivery)
        .await
        .result
        .unwrap();
    assert_eq!(output.events.len(), 1);
    // Header names arrive lower-cased, as from any HTTP stack.
    assert_eq!(
        output.events[0].id,
        delivery.header("X-Shipping-Delivery-Id").unwrap()
    );
    let event = &payloads(&output.events)[0];
    assert_eq!(event, &fake.shipment(&awb).unwrap());
    assert_eq!(
        (&event["status"], &event["order_ref"]),
        (&json!("DELIVERED"), &delivered["order_ref"])
    );

    // A tampered body, a signature made with another secret, none at all.
    let mut tampered = delivery.clone();
    tampered.body.extend_from_slice(b" ");
    let guessed = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"guess", &delivery.body))
    );
    let forged = delivery
        .clone()
        .with_header("X-Shipping-Signature", Some(&guessed));
    let unsigned = delivery.clone().with_header("X-Shipping-Signature", None);
    for bad in [tampered, forged, unsigned] {
        let (kind, error) = kind_of(shop.webhook("tracking-update", &bad).await);
        assert_eq!(kind, "invalid_input");
        assert!(error.to_string().contains("signature"), "{error}");
        assert!(!error.to_string().contains(WEBHOOK_SECRET));
    }

    shop.unsubscribe("tracking-update", &state)
        .await
        .result
        .unwrap();
    assert!(fake.webhooks().is_empty());
    // Gone already is as good as removed.
    let again = shop.unsubscribe("tracking-update", &state).await;
    assert!(again.result.is_ok(), "{:?}", again.result);
    host.stop().await;
}
