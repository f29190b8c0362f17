//! The merchant's five workflows end to end, through the real flow engine:
//! flows published and activated through the API (activation registers the
//! webhooks with the fakes), deliveries the fakes make posted to the host's
//! ingress as the third parties would, runs executed by the dispatchers, and
//! the Shopify, warehouse and shipping connectors calling fakes of their APIs.
//!
//! 1. A Shopify order is created in the warehouse.
//! 2. A shipment packed in the warehouse marks the Shopify order "Ready to ship".
//! 3. The carrier's "delivered" completes the warehouse order (webhook and polling).
//! 4. A shipment delivered by the warehouse marks the Shopify order "Delivered".
//! 5. A warehouse stock change sets Shopify's available inventory.
//!
//! Each test checks the third party's final data, the runs and their step
//! outputs, and exactly-once: one applied mutation per idempotency key and one
//! per event. The last runs all five while the APIs answer 503 and 429 for a
//! while (and lose answers of applied writes): every run still completes, each
//! write is applied once, nothing is dead-lettered, and a delivery sent twice
//! runs once.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use switchyard::runs::record::run_id_for;
use switchyard_tests as artifacts;

use crate::{
    fake_shipping::FakeShipping,
    fake_shopify::{self, FakeShopify},
    fake_warehouse::FakeWarehouse,
    support::{
        DEADLINE, PUBLIC_URL, TestHost,
        fake::{Delivery, Mutation, Received},
        metrics::sample,
        sandbox_config, wait_for,
    },
};

/// The retry schedule of every step: short, so a test recovers in seconds.
fn retry() -> Value {
    json!({"initial_delay_ms": 50, "max_delay_ms": 500, "max_attempts": 20})
}

/// A merchant's setup: the host with the three connectors, the fakes of
/// Shopify, the warehouse and the carrier, and one connection to each.
struct Merchant {
    host: TestHost,
    shop: FakeShopify,
    warehouse: FakeWarehouse,
    carrier: FakeShipping,
    shopify: String,
    wms: String,
    shipping: String,
    _dir: tempfile::TempDir,
}

impl Merchant {
    async fn start() -> Merchant {
        let dir = tempfile::tempdir().unwrap();
        // The Python component, compiled once per test process.
        let compiled = crate::polyglot::compiled_artifacts().await;
        let cache = dir.path().join("data").join("artifacts");
        std::fs::create_dir_all(&cache).unwrap();
        for entry in std::fs::read_dir(compiled).unwrap() {
            let entry = entry.unwrap();
            let target = cache.join(entry.file_name());
            if std::fs::hard_link(entry.path(), &target).is_err() {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
        let mut cfg = sandbox_config(dir.path());
        cfg.public_url = Some(PUBLIC_URL.to_string());
        let host = TestHost::start(cfg).await;
        for path in [
            artifacts::SHOPIFY,
            artifacts::WAREHOUSE,
            artifacts::SHIPPING_PY,
        ] {
            let (status, body) = host.upload_file(path).await;
            assert_eq!(status, 201, "{path}: {body}");
        }
        let shop = FakeShopify::start().await;
        let warehouse = FakeWarehouse::start().await;
        let carrier = FakeShipping::start().await;
        let shopify = host.connect("shopify", shop.properties()).await;
        let wms = host.connect("warehouse", warehouse.properties()).await;
        let shipping = host.connect("shipping", carrier.properties()).await;
        Merchant {
            host,
            shop,
            warehouse,
            carrier,
            shopify,
            wms,
            shipping,
            _dir: dir,
        }
    }

    async fn publish(&self, flow: Value) -> String {
        let (status, body) = self.host.call(Method::POST, "/v1/flows", Some(flow)).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Activates a flow; returns its trigger view.
    async fn activate(&self, flow: &str) -> Value {
        let (status, body) = self
            .host
            .call(Method::POST, &format!("/v1/flows/{flow}/activate"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["active"], json!(true), "{body}");
        body
    }

    /// Activates a webhook flow; returns the URL it was registered with.
    async fn activate_hook(&self, flow: &str) -> String {
        let view = self.activate(flow).await;
        assert_eq!(view["kind"], json!("webhook"), "{view}");
        let url = view["webhook_url"].as_str().unwrap().to_string();
        assert!(url.starts_with(&format!("{PUBLIC_URL}/hooks/")), "{url}");
        url
    }

    /// Activates a polling flow and waits for its first poll (which only
    /// records where to start).
    async fn activate_poll(&self, flow: &str) {
        let view = self.activate(flow).await;
        assert_eq!(view["kind"], json!("polling"), "{view}");
        wait_for(
            &self.host,
            &format!("/v1/flows/{flow}/trigger"),
            "the first poll",
            |b| b["state"]["seeded"] == json!(true),
        )
        .await;
    }

    async fn deliver(&self, delivery: &Delivery) -> Value {
        let (status, body) = self.host.deliver(delivery).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Posts every delivery Shopify and the warehouse have made since the
    /// last call; returns how many.
    async fn pump(&self) -> usize {
        let mut deliveries = self.shop.take_deliveries();
        deliveries.extend(self.warehouse.take_deliveries());
        for delivery in &deliveries {
            self.deliver(delivery).await;
        }
        deliveries.len()
    }

    /// A signed `tracking.updated` delivery of the carrier's record for
    /// `awb`, posted to the address the flow registered.
    async fn carrier_reports(&self, awb: &str) -> Value {
        let hooks = self.carrier.webhooks();
        assert_eq!(hooks.len(), 1, "{hooks:?}");
        let record = self.carrier.shipment(awb).unwrap();
        let delivery = self.carrier.delivery(&record);
        let (status, answer) = self
            .host
            .post_hook(
                hooks[0]["url"].as_str().unwrap(),
                &delivery.headers,
                delivery.body,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// The runs of `flow` with `status`, newest first (summaries).
    async fn runs(&self, flow: &str, status: &str) -> Vec<Value> {
        let (code, body) = self
            .host
            .get(&format!("/v1/runs?flow={flow}&status={status}"))
            .await;
        assert_eq!(code, 200, "{body}");
        body["runs"].as_array().unwrap().clone()
    }

    /// One run in full: its event and steps with inputs, outputs, attempts.
    async fn run(&self, id: &str) -> Value {
        let (status, body) = self.host.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Posts deliveries as they are made until each `(flow, status, n)`
    /// holds: `flow` has exactly `n` runs with `status`.
    async fn settle(&self, what: &str, want: &[(&str, &str, usize)]) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pump().await;
            let mut counts = Vec::new();
            for (flow, status, _) in want {
                counts.push(self.runs(flow, status).await.len());
            }
            if want.iter().zip(&counts).all(|((_, _, n), c)| c == n) {
                return;
            }
            assert!(
                want.iter().zip(&counts).all(|((_, _, n), c)| c <= n),
                "more runs than events while waiting until {what}: {counts:?} for {want:?}"
            );
            let (_, dead) = self.host.get("/v1/dead-letters").await;
            assert_eq!(
                dead["runs"],
                json!([]),
                "a run failed while waiting until {what}"
            );
            if Instant::now() > deadline {
                let (_, all) = self.host.get("/v1/runs").await;
                let unfinished: Vec<&Value> = all["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| !matches!(r["status"].as_str(), Some("succeeded" | "skipped")))
                    .collect();
                panic!(
                    "timed out waiting until {what}: counts {counts:?} for {want:?}; \
                     runs neither succeeded nor skipped: {unfinished:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The order the warehouse has for a Shopify order, made by hand
    /// (`POST /v1/invoke`): for workflows that start further along.
    async fn warehouse_order_for(&self, order: &Value) -> String {
        let input = json!({
            "channel_order_id": order["id"],
            "channel_order_name": order["name"],
            "items": order["line_items"],
        });
        let (status, body) = self
            .host
            .call(
                Method::POST,
                "/v1/invoke",
                Some(json!({"plugin": "warehouse", "action": "create-order",
                            "connection": self.wms, "input": input})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["output"]["created"], json!(true), "{body}");
        body["output"]["order"]["id"].as_str().unwrap().to_string()
    }

    // The flows, as a merchant would write them.

    /// Workflow 1: Shopify `order-created` → warehouse `create-order`.
    fn orders_to_warehouse(&self) -> Value {
        json!({
            "name": "Shopify orders to the warehouse",
            "lane": "fast",
            "trigger": {"plugin": "shopify@^0.1", "trigger": "order-created", "connection": self.shopify},
            "steps": [{
                "key": "create",
                "plugin": "warehouse@^0.1",
                "action": "create-order",
                "connection": self.wms,
                "input": {
                    "channel": "shopify",
                    "channel_order_id": "{{ trigger.id }}",
                    "channel_order_name": "{{ trigger.name }}",
                    "items": "{{ trigger.line_items }}",
                    "customer": {
                        "name": "{{ trigger.shipping_address.name }}",
                        "email": "{{ trigger.email }}",
                        "phone": "{{ trigger.shipping_address.phone }}",
                    },
                    "shipping_address": "{{ trigger.shipping_address }}",
                    "notes": "Shopify order {{ trigger.name }}",
                },
                "retry": retry(),
            }],
        })
    }

    /// Workflow 2: warehouse `shipment-status` packed → Shopify "Ready to ship".
    fn packed_to_shopify(&self) -> Value {
        json!({
            "name": "Packed shipments are ready to ship",
            "trigger": {"plugin": "warehouse@^0.1", "trigger": "shipment-status", "connection": self.wms},
            "conditions": ["trigger.status == \"packed\""],
            "steps": [{
                "key": "tag",
                "plugin": "shopify@^0.1",
                "action": "tag-order",
                "connection": self.shopify,
                "input": {
                    "order_id": "{{ trigger.channel_order_id }}",
                    "tags": ["Ready to ship"],
                    "note": "Ready to ship",
                },
                "retry": retry(),
            }],
        })
    }

    /// Workflow 3: the carrier's DELIVERED → the warehouse order is
    /// delivered, by webhook (`tracking-update`) or by polling
    /// (`tracking-status`).
    fn carrier_delivered_to_warehouse(&self, polling: bool) -> Value {
        let trigger = if polling {
            json!({"plugin": "shipping@^0.1", "trigger": "tracking-status",
                   "connection": self.shipping, "interval_secs": 1})
        } else {
            json!({"plugin": "shipping@^0.1", "trigger": "tracking-update",
                   "connection": self.shipping})
        };
        json!({
            "name": if polling { "Carrier deliveries (polled)" } else { "Carrier deliveries" },
            "trigger": trigger,
            "conditions": ["trigger.status == \"DELIVERED\""],
            "steps": [
                {
                    "key": "find",
                    "plugin": "warehouse@^0.1",
                    "action": "get-order",
                    "connection": self.wms,
                    "input": {"channel": "shopify", "channel_order_id": "{{ trigger.order_ref }}"},
                    "retry": retry(),
                },
                {
                    "key": "deliver",
                    "plugin": "warehouse@^0.1",
                    "action": "update-order-status",
                    "connection": self.wms,
                    "input": {
                        "order_id": "{{ steps.find.order.id }}",
                        "status": "delivered",
                        "note": "Delivered by {{ trigger.courier }}, AWB {{ trigger.awb }}",
                    },
                    "retry": retry(),
                },
            ],
        })
    }

    /// Workflow 4: warehouse `shipment-status` delivered → Shopify "Delivered".
    fn delivered_to_shopify(&self) -> Value {
        json!({
            "name": "Delivered shipments are delivered on Shopify",
            "trigger": {"plugin": "warehouse@^0.1", "trigger": "shipment-status", "connection": self.wms},
            "conditions": ["trigger.status == \"delivered\""],
            "steps": [
                {
                    "key": "find",
                    "plugin": "shopify@^0.1",
                    "action": "find-order",
                    "connection": self.shopify,
                    "input": {"order_id": "{{ trigger.channel_order_id }}"},
                    "retry": retry(),
                },
                {
                    "key": "tag",
                    "plugin": "shopify@^0.1",
                    "action": "tag-order",
                    "connection": self.shopify,
                    "input": {
                        "order_id": "{{ steps.find.order.id }}",
                        "tags": ["Delivered"],
                        "remove_tags": ["Ready to ship"],
                        "note": "Delivered",
                    },
                    "retry": retry(),
                },
            ],
        })
    }

    /// Workflow 5: warehouse `stock-changed` → Shopify `set-inventory` by SKU.
    fn stock_to_shopify(&self) -> Value {
        json!({
            "name": "Warehouse stock to Shopify",
            "lane": "fast",
            "trigger": {"plugin": "warehouse@^0.1", "trigger": "stock-changed", "connection": self.wms},
            "steps": [{
                "key": "stock",
                "plugin": "shopify@^0.1",
                "action": "set-inventory",
                "connection": self.shopify,
                "input": {"sku": "{{ trigger.sku }}", "available": "{{ trigger.available }}"},
                "retry": retry(),
            }],
        })
    }
}

fn id_of(run: &Value) -> &str {
    run["id"].as_str().unwrap()
}

/// The step `key` of a full run.
fn step<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == json!(key))
        .unwrap_or_else(|| panic!("no step {key} in {run}"))
}

/// The idempotency keys of the flow runs' mutations (`run_...:step`) with
/// `method` on a path `path` accepts, sorted: a key applied twice shows
/// twice.
fn applied_keys(mutations: &[Mutation], method: &str, path: impl Fn(&str) -> bool) -> Vec<String> {
    let mut keys: Vec<String> = mutations
        .iter()
        .filter(|m| m.method == method && path(&m.path))
        .map(|m| m.idempotency_key.clone().unwrap_or_default())
        .filter(|k| k.starts_with("run_"))
        .collect();
    keys.sort();
    keys
}

/// `{run}:{step}` for each run, sorted: what exactly once per event means.
fn step_keys(runs: &[Value], step: &str) -> Vec<String> {
    let mut keys: Vec<String> = runs
        .iter()
        .map(|r| format!("{}:{step}", id_of(r)))
        .collect();
    keys.sort();
    keys
}

fn is_order_update(path: &str) -> bool {
    path.starts_with("/admin/api/2024-10/orders/") && path.ends_with(".json")
}

fn is_inventory_set(path: &str) -> bool {
    path == "/admin/api/2024-10/inventory_levels/set.json"
}

fn order_id(order: &Value) -> u64 {
    order["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_on_shopify_is_created_in_the_warehouse() {
    let m = Merchant::start().await;
    let flow = m.publish(m.orders_to_warehouse()).await;
    let url = m.activate_hook(&flow).await;
    let hooks: Vec<Value> = m.shop.lock().webhooks.values().cloned().collect();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        (&hooks[0]["topic"], &hooks[0]["address"]),
        (&json!("orders/create"), &json!(url))
    );

    // A customer places an order with two lines.
    let order = m.shop.create_order(json!({
        "email": "grace@example.com",
        "line_items": [
            {"id": 1301, "variant_id": 44001, "sku": "W-1", "title": "Widget", "quantity": 2, "price": "25.00"},
            {"id": 1302, "variant_id": 44002, "sku": "G-7", "title": "Gadget", "quantity": 1, "price": "9.50"},
        ],
        "shipping_address": {
            "name": "Grace Hopper", "address1": "1 Navy Yard", "city": "Arlington",
            "zip": "22202", "country_code": "US", "phone": "+1 703 555 0100",
        },
    }));
    let deliveries = m.shop.take_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].address, url);
    let answer = m.deliver(&deliveries[0]).await;
    assert_eq!(
        answer,
        json!({"accepted": true, "runs": 1, "duplicates": 0})
    );
    let event_id = deliveries[0].header("X-Shopify-Event-Id").unwrap();
    m.settle("the order's run succeeds", &[(&flow, "succeeded", 1)])
        .await;

    // The warehouse has the order, mapped from Shopify's.
    let orders: Vec<Value> = m.warehouse.lock().orders.values().cloned().collect();
    assert_eq!(orders.len(), 1, "{orders:?}");
    let created = &orders[0];
    let expected = json!({
        "channel": "shopify",
        "channel_order_id": order_id(&order).to_string(),
        "channel_order_name": "#1001",
        "status": "created",
        "items": [
            {"sku": "W-1", "quantity": 2, "price": "25.00", "name": "Widget"},
            {"sku": "G-7", "quantity": 1, "price": "9.50", "name": "Gadget"},
        ],
        "customer": {"name": "Grace Hopper", "email": "grace@example.com", "phone": "+1 703 555 0100"},
        "shipping_address": order["shipping_address"],
        "notes": "Shopify order #1001",
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&created[field], value, "{field} of {created}");
    }

    // The run: started by this webhook event, its output the new order.
    let run = m.run(id_of(&m.runs(&flow, "succeeded").await[0])).await;
    assert_eq!(id_of(&run), run_id_for(&flow, event_id));
    assert_eq!(run["source"], json!("webhook"));
    assert_eq!(run["event"]["payload"], order);
    let create = step(&run, "create");
    assert_eq!(create["output"], json!({"created": true, "order": created}));
    assert_eq!(create["attempts"], json!(1));
    assert_eq!(
        create["idempotency_key"],
        json!(format!("{}:create", id_of(&run)))
    );

    // Exactly once: one POST /orders, with the step's key.
    let mutations = m.warehouse.mutations();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert_eq!(
        applied_keys(&mutations, "POST", |p| p == "/orders"),
        [format!("{}:create", id_of(&run))]
    );

    // A second order: a second warehouse order, one more mutation.
    let second = m.shop.create_order(json!({"email": "ada@example.com"}));
    assert_eq!(m.pump().await, 1);
    m.settle(
        "the second order's run succeeds",
        &[(&flow, "succeeded", 2)],
    )
    .await;
    let runs = m.runs(&flow, "succeeded").await;
    assert_eq!(
        applied_keys(&m.warehouse.mutations(), "POST", |p| p == "/orders"),
        step_keys(&runs, "create")
    );
    let channel_ids: Vec<Value> = m
        .warehouse
        .lock()
        .orders
        .values()
        .map(|o| o["channel_order_id"].clone())
        .collect();
    assert_eq!(
        channel_ids,
        [
            json!(order_id(&order).to_string()),
            json!(order_id(&second).to_string())
        ]
    );
    let (_, dead) = m.host.get("/v1/dead-letters").await;
    assert_eq!(dead["runs"], json!([]));
    m.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_shipment_marks_the_shopify_order_ready_to_ship() {
    let m = Merchant::start().await;
    let order = m.shop.create_order(json!({"tags": "vip"}));
    let id = order_id(&order);
    let wo = m.warehouse_order_for(&order).await;
    let flow = m.publish(m.packed_to_shopify()).await;
    let url = m.activate_hook(&flow).await;
    let endpoints: Vec<Value> = m.warehouse.lock().endpoints.values().cloned().collect();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(
        (&endpoints[0]["url"], &endpoints[0]["events"]),
        (&json!(url), &json!(["shipment.status_changed"]))
    );

    // The warehouse packs the order.
    m.warehouse.advance(&wo, "packed");
    let deliveries = m.warehouse.take_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(m.deliver(&deliveries[0]).await["runs"], json!(1));
    m.settle("the packed run succeeds", &[(&flow, "succeeded", 1)])
        .await;
    let shopify_order = m.shop.order(id).unwrap();
    assert_eq!(shopify_order["tags"], json!("vip, Ready to ship"));
    assert_eq!(shopify_order["note"], json!("Ready to ship"));
    let runs = m.runs(&flow, "succeeded").await;
    let run = m.run(id_of(&runs[0])).await;
    assert_eq!(run["event"]["payload"]["status"], json!("packed"));
    assert_eq!(run["event"]["payload"]["order_id"], json!(wo));
    let tag = step(&run, "tag");
    assert_eq!(
        tag["input"],
        json!({"order_id": id.to_string(), "tags": ["Ready to ship"], "note": "Ready to ship"})
    );
    assert_eq!(
        tag["output"],
        json!({"order_id": id, "tags": ["vip", "Ready to ship"], "note": "Ready to ship", "changed": true})
    );
    let puts = applied_keys(&m.shop.mutations(), "PUT", is_order_update);
    assert_eq!(puts, step_keys(&runs, "tag"));

    // Shipped is not packed: the run is skipped and Shopify is not called.
    let requests = m.shop.requests().len();
    m.warehouse.advance(&wo, "shipped");
    let deliveries = m.warehouse.take_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(m.deliver(&deliveries[0]).await["runs"], json!(1));
    m.settle(
        "the shipped run is skipped",
        &[(&flow, "skipped", 1), (&flow, "succeeded", 1)],
    )
    .await;
    let skipped = m.runs(&flow, "skipped").await;
    let error = &skipped[0]["error"];
    assert_eq!(error["kind"], json!("condition"), "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("packed"),
        "{error}"
    );
    assert_eq!(
        m.run(id_of(&skipped[0])).await["event"]["payload"]["status"],
        json!("shipped")
    );
    assert_eq!(m.shop.requests().len(), requests, "no call to Shopify");
    assert_eq!(
        applied_keys(&m.shop.mutations(), "PUT", is_order_update),
        puts
    );
    assert_eq!(
        m.shop.order(id).unwrap()["tags"],
        json!("vip, Ready to ship")
    );
    m.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_reported_by_the_carrier_completes_the_warehouse_order() {
    let m = Merchant::start().await;
    // An order that left the warehouse with the carrier.
    let order = m.shop.create_order(json!({}));
    let wo = m.warehouse_order_for(&order).await;
    m.warehouse.advance(&wo, "packed");
    m.warehouse.advance(&wo, "shipped");
    let record = m
        .carrier
        .add_shipment(&order_id(&order).to_string(), "IN_TRANSIT");
    let awb = record["awb"].as_str().unwrap().to_string();

    let flow = m.publish(m.carrier_delivered_to_warehouse(false)).await;
    let url = m.activate_hook(&flow).await;
    let hooks = m.carrier.webhooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        (&hooks[0]["url"], &hooks[0]["events"]),
        (&json!(url), &json!(["tracking.updated"]))
    );

    // In transit: nothing to do.
    assert_eq!(m.carrier_reports(&awb).await["runs"], json!(1));
    m.settle("the in-transit run is skipped", &[(&flow, "skipped", 1)])
        .await;
    assert_eq!(m.warehouse.order(&wo).unwrap()["status"], json!("shipped"));

    // Delivered: the warehouse order is found by the Shopify id and completed.
    m.carrier.set_status(&awb, "DELIVERED");
    assert_eq!(m.carrier_reports(&awb).await["runs"], json!(1));
    m.settle("the delivered run succeeds", &[(&flow, "succeeded", 1)])
        .await;
    let warehouse_order = m.warehouse.order(&wo).unwrap();
    assert_eq!(warehouse_order["status"], json!("delivered"));
    let note = format!("Delivered by Delhivery, AWB {awb}");
    assert_eq!(warehouse_order["notes"], json!(note));
    let runs = m.runs(&flow, "succeeded").await;
    let run = m.run(id_of(&runs[0])).await;
    assert_eq!(run["event"]["payload"]["status"], json!("DELIVERED"));
    let find = step(&run, "find");
    assert_eq!(
        find["input"],
        json!({"channel": "shopify", "channel_order_id": order_id(&order).to_string()})
    );
    assert_eq!(find["output"]["found"], json!(true));
    assert_eq!(find["output"]["order"]["id"], json!(wo));
    let deliver = step(&run, "deliver");
    assert_eq!(
        deliver["input"],
        json!({"order_id": wo, "status": "delivered", "note": note})
    );
    assert_eq!(deliver["output"], warehouse_order);
    let patches = |m: &Merchant| {
        applied_keys(&m.warehouse.mutations(), "PATCH", |p| {
            p.starts_with("/orders/")
        })
    };
    assert_eq!(patches(&m), step_keys(&runs, "deliver"));

    // The same, by polling the carrier: a second order out for delivery.
    let polled = m.publish(m.carrier_delivered_to_warehouse(true)).await;
    m.activate_poll(&polled).await;
    let other = m.shop.create_order(json!({}));
    let other_wo = m.warehouse_order_for(&other).await;
    m.warehouse.advance(&other_wo, "packed");
    m.warehouse.advance(&other_wo, "shipped");
    let other_awb = m
        .carrier
        .add_shipment(&order_id(&other).to_string(), "OUT_FOR_DELIVERY")["awb"]
        .as_str()
        .unwrap()
        .to_string();
    m.settle(
        "the polled out-for-delivery run is skipped",
        &[(&polled, "skipped", 1)],
    )
    .await;
    let delivered = m.carrier.set_status(&other_awb, "DELIVERED");
    m.settle(
        "the polled delivered run succeeds",
        &[(&polled, "succeeded", 1), (&polled, "skipped", 1)],
    )
    .await;
    assert_eq!(
        m.warehouse.order(&other_wo).unwrap()["status"],
        json!("delivered")
    );
    let polled_runs = m.runs(&polled, "succeeded").await;
    let run = m.run(id_of(&polled_runs[0])).await;
    assert_eq!(run["source"], json!("poll"));
    assert_eq!(
        run["event"]["id"],
        json!(format!(
            "{other_awb}:{}",
            delivered["updated_at"].as_str().unwrap()
        ))
    );
    assert_eq!(
        step(&run, "deliver")["output"]["status"],
        json!("delivered")
    );
    let mut expected = step_keys(&runs, "deliver");
    expected.extend(step_keys(&polled_runs, "deliver"));
    expected.sort();
    assert_eq!(patches(&m), expected, "one status change per delivery");
    // The webhook flow saw nothing of the polled order.
    assert_eq!(m.runs(&flow, "succeeded").await.len(), 1);
    m.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_delivered_by_the_warehouse_marks_the_shopify_order_delivered() {
    let m = Merchant::start().await;
    let order = m
        .shop
        .create_order(json!({"tags": "vip, Ready to ship", "note": "Ready to ship"}));
    let id = order_id(&order);
    let wo = m.warehouse_order_for(&order).await;
    m.warehouse.advance(&wo, "packed");
    m.warehouse.advance(&wo, "shipped");
    let flow = m.publish(m.delivered_to_shopify()).await;
    m.activate_hook(&flow).await;

    m.warehouse.advance(&wo, "delivered");
    let deliveries = m.warehouse.take_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(m.deliver(&deliveries[0]).await["runs"], json!(1));
    m.settle("the delivered run succeeds", &[(&flow, "succeeded", 1)])
        .await;
    let shopify_order = m.shop.order(id).unwrap();
    assert_eq!(shopify_order["tags"], json!("vip, Delivered"));
    assert_eq!(shopify_order["note"], json!("Ready to ship\nDelivered"));
    let runs = m.runs(&flow, "succeeded").await;
    let run = m.run(id_of(&runs[0])).await;
    assert_eq!(
        run["event"]["id"],
        json!(deliveries[0].header("webhook-id").unwrap())
    );
    let find = step(&run, "find");
    assert_eq!(find["input"], json!({"order_id": id.to_string()}));
    assert_eq!(find["output"]["found"], json!(true));
    assert_eq!(find["output"]["order"]["id"], json!(id));
    assert_eq!(
        step(&run, "tag")["output"],
        json!({"order_id": id, "tags": ["vip", "Delivered"], "note": "Ready to ship\nDelivered", "changed": true})
    );
    let puts = applied_keys(&m.shop.mutations(), "PUT", is_order_update);
    assert_eq!(puts, step_keys(&runs, "tag"));

    // The warehouse sends the delivery again (same webhook-id): dropped.
    let requests = m.shop.requests().len();
    let answer = m.deliver(&deliveries[0]).await;
    assert_eq!(
        answer,
        json!({"accepted": true, "runs": 0, "duplicates": 1})
    );
    let (_, all) = m.host.get(&format!("/v1/runs?flow={flow}")).await;
    assert_eq!(all["runs"].as_array().unwrap().len(), 1);
    assert_eq!(m.shop.requests().len(), requests);
    assert_eq!(
        applied_keys(&m.shop.mutations(), "PUT", is_order_update),
        puts
    );
    m.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_change_in_the_warehouse_updates_shopify_inventory() {
    let m = Merchant::start().await;
    let widget = m.shop.add_variant("W-1", 5);
    // Shopify's SKU search matches prefixes: W-10 must stay as it is.
    let widget_ten = m.shop.add_variant("W-10", 7);
    let gadget = m.shop.add_variant("G-7", 0);
    let flow = m.publish(m.stock_to_shopify()).await;
    let url = m.activate_hook(&flow).await;
    let endpoints: Vec<Value> = m.warehouse.lock().endpoints.values().cloned().collect();
    assert_eq!(
        (&endpoints[0]["url"], &endpoints[0]["events"]),
        (&json!(url), &json!(["stock.changed"]))
    );

    m.warehouse.set_stock("W-1", 17);
    m.warehouse.set_stock("G-7", 4);
    assert_eq!(m.pump().await, 2);
    m.settle("both stock runs succeed", &[(&flow, "succeeded", 2)])
        .await;
    assert_eq!(m.shop.available(widget), Some(17));
    assert_eq!(m.shop.available(gadget), Some(4));
    assert_eq!(m.shop.available(widget_ten), Some(7));
    let runs = m.runs(&flow, "succeeded").await;
    let mut outputs = BTreeMap::new();
    for summary in &runs {
        let run = m.run(id_of(summary)).await;
        let stock = step(&run, "stock");
        assert_eq!(
            stock["input"],
            json!({"sku": run["event"]["payload"]["sku"], "available": run["event"]["payload"]["available"]})
        );
        let output = &stock["output"];
        assert_eq!(output["location_id"], json!(fake_shopify::LOCATION_ID));
        outputs.insert(
            output["inventory_item_id"].as_u64().unwrap(),
            output["available"].clone(),
        );
    }
    assert_eq!(
        outputs,
        BTreeMap::from([(widget, json!(17)), (gadget, json!(4))])
    );
    let sets = applied_keys(&m.shop.mutations(), "POST", is_inventory_set);
    assert_eq!(sets, step_keys(&runs, "stock"));

    // A later count replaces the earlier one.
    m.warehouse.set_stock("W-1", 16);
    m.settle("the third stock run succeeds", &[(&flow, "succeeded", 3)])
        .await;
    assert_eq!(m.shop.available(widget), Some(16));
    let runs = m.runs(&flow, "succeeded").await;
    assert_eq!(
        applied_keys(&m.shop.mutations(), "POST", is_inventory_set),
        step_keys(&runs, "stock")
    );
    // Per item, the counts were set in the order the warehouse sent them.
    // The runs of different items are independent: no order between items.
    let mut per_item: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for write in m.shop.mutations() {
        if is_inventory_set(&write.path) {
            let item = write.body["inventory_item_id"].as_u64().unwrap();
            per_item.entry(item).or_default().push(write.body);
        }
    }
    let location = fake_shopify::LOCATION_ID;
    let set = |item: u64, available: i64| json!({"location_id": location, "inventory_item_id": item, "available": available});
    assert_eq!(
        per_item,
        BTreeMap::from([
            (widget, vec![set(widget, 17), set(widget, 16)]),
            (gadget, vec![set(gadget, 4)]),
        ])
    );
    m.host.stop().await;
}

/// How many requests a fake answered with `status`.
fn answered(requests: &[Received], status: u16) -> usize {
    requests.iter().filter(|r| r.status == status).count()
}

/// Whether some attempt of some step of these runs failed with `kind`;
/// returns the wait before its next attempt (ms).
async fn waited_after(m: &Merchant, runs: &[Value], kind: &str) -> Option<u64> {
    for summary in runs {
        let run = m.run(id_of(summary)).await;
        for step in run["steps"].as_array().unwrap() {
            for attempt in step["history"].as_array().unwrap() {
                if attempt["error"]["error"]["kind"] == json!(kind) {
                    let started = attempt["started_at"].as_u64().unwrap();
                    return Some(attempt["retry_at"].as_u64().unwrap() - started);
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workflow_completes_exactly_once_while_the_apis_fail_for_a_while() {
    let m = Merchant::start().await;
    let widget = m.shop.add_variant("W-1", 5);
    let gadget = m.shop.add_variant("G-7", 0);
    let orders_flow = m.publish(m.orders_to_warehouse()).await;
    let packed_flow = m.publish(m.packed_to_shopify()).await;
    let carrier_flow = m.publish(m.carrier_delivered_to_warehouse(true)).await;
    let delivered_flow = m.publish(m.delivered_to_shopify()).await;
    let stock_flow = m.publish(m.stock_to_shopify()).await;
    for flow in [&orders_flow, &packed_flow, &delivered_flow, &stock_flow] {
        m.activate_hook(flow).await;
    }

    // 1. Three orders while the warehouse throttles (Retry-After: 3), is
    // down for four requests and loses the answer of one applied order.
    m.warehouse.rate_limit_next(1, "3");
    m.warehouse.fail_next(4, 503);
    m.warehouse.lose_next_responses(1);
    let orders: Vec<Value> = (0..3).map(|_| m.shop.create_order(json!({}))).collect();
    let deliveries = m.shop.take_deliveries();
    assert_eq!(deliveries.len(), 3);
    for delivery in &deliveries {
        assert_eq!(m.deliver(delivery).await["runs"], json!(1));
    }
    // Shopify retries a delivery it got no answer for: same event id.
    assert_eq!(
        m.deliver(&deliveries[1]).await,
        json!({"accepted": true, "runs": 0, "duplicates": 1})
    );
    m.settle(
        "the orders reach the warehouse",
        &[(&orders_flow, "succeeded", 3)],
    )
    .await;
    let requests = m.warehouse.requests();
    assert_eq!(answered(&requests, 429), 1, "{requests:?}");
    assert_eq!(answered(&requests, 503), 5, "4 failures, 1 lost answer");
    let order_runs = m.runs(&orders_flow, "succeeded").await;
    assert!(waited_after(&m, &order_runs, "rate_limited").await.unwrap() >= 3000);
    assert!(waited_after(&m, &order_runs, "transient").await.is_some());
    assert_eq!(
        applied_keys(&m.warehouse.mutations(), "POST", |p| p == "/orders"),
        step_keys(&order_runs, "create")
    );
    let wos: Vec<String> = orders
        .iter()
        .map(|order| {
            let state = m.warehouse.lock();
            let found: Vec<&Value> = state
                .orders
                .values()
                .filter(|o| o["channel_order_id"] == json!(order_id(order).to_string()))
                .collect();
            assert_eq!(found.len(), 1, "one warehouse order per Shopify order");
            found[0]["id"].as_str().unwrap().to_string()
        })
        .collect();

    // 2. Packed and shipped while Shopify throttles (Retry-After: 2.0), is
    // down for four requests and loses the answer of one applied tag.
    m.shop.rate_limit_next(2, "2.0");
    m.shop.fail_next(4, 503);
    m.shop.lose_next_responses(1);
    for wo in &wos {
        m.warehouse.advance(wo, "packed");
    }
    // Two shipment-status flows on one connection share one registration:
    // each packing is delivered once, and routed to both flows.
    let packed = m.warehouse.take_deliveries();
    assert_eq!(packed.len(), 3);
    for delivery in &packed {
        m.deliver(delivery).await;
    }
    assert_eq!(m.deliver(&packed[0]).await["duplicates"], json!(2));
    for wo in &wos {
        m.warehouse.advance(wo, "shipped");
    }
    m.settle(
        "packed orders are ready to ship",
        &[
            (&packed_flow, "succeeded", 3),
            (&packed_flow, "skipped", 3),
            (&delivered_flow, "skipped", 6),
        ],
    )
    .await;
    for order in &orders {
        let tags = m.shop.order(order_id(order)).unwrap()["tags"].clone();
        assert_eq!(tags, json!("Ready to ship"));
    }
    let requests = m.shop.requests();
    assert_eq!(answered(&requests, 429), 2, "{requests:?}");
    assert_eq!(answered(&requests, 503), 5, "4 failures, 1 lost answer");
    let packed_runs = m.runs(&packed_flow, "succeeded").await;
    assert!(
        waited_after(&m, &packed_runs, "rate_limited")
            .await
            .unwrap()
            >= 2000
    );
    assert_eq!(
        applied_keys(&m.shop.mutations(), "PUT", is_order_update),
        step_keys(&packed_runs, "tag")
    );

    // 3. The carrier delivers; its API is down twice and throttles once
    // while polled, then the warehouse and Shopify fail again.
    let awbs: Vec<String> = orders
        .iter()
        .map(|order| {
            let record = m
                .carrier
                .add_shipment(&order_id(order).to_string(), "IN_TRANSIT");
            record["awb"].as_str().unwrap().to_string()
        })
        .collect();
    m.activate_poll(&carrier_flow).await;
    m.carrier.fail_next(2, 503);
    m.carrier.rate_limit_next(1, "1");
    m.warehouse.fail_next(3, 503);
    m.warehouse.lose_next_responses(1);
    m.shop.rate_limit_next(1, "2.0");
    m.shop.fail_next(3, 503);
    m.shop.lose_next_responses(1);
    for awb in &awbs {
        m.carrier.set_status(awb, "DELIVERED");
    }
    m.settle(
        "delivered orders are delivered everywhere",
        &[
            (&carrier_flow, "succeeded", 3),
            (&delivered_flow, "succeeded", 3),
            (&delivered_flow, "skipped", 6),
            (&packed_flow, "skipped", 6),
        ],
    )
    .await;
    for (order, wo) in orders.iter().zip(&wos) {
        assert_eq!(m.warehouse.order(wo).unwrap()["status"], json!("delivered"));
        let tags = m.shop.order(order_id(order)).unwrap()["tags"].clone();
        assert_eq!(tags, json!("Delivered"));
    }
    let carrier_runs = m.runs(&carrier_flow, "succeeded").await;
    assert_eq!(
        applied_keys(&m.warehouse.mutations(), "PATCH", |p| p
            .starts_with("/orders/")),
        step_keys(&carrier_runs, "deliver")
    );
    let delivered_runs = m.runs(&delivered_flow, "succeeded").await;
    let mut tagged = step_keys(&packed_runs, "tag");
    tagged.extend(step_keys(&delivered_runs, "tag"));
    tagged.sort();
    assert_eq!(
        applied_keys(&m.shop.mutations(), "PUT", is_order_update),
        tagged
    );
    let text = m.host.metrics().await;
    assert_eq!(
        sample(&text, "switchyard_polls_total{outcome=\"error\"}"),
        Some("3"),
        "two 503s and a 429 while polling:\n{text}"
    );

    // 4. Stock counts while Shopify throttles and fails once more.
    m.shop.rate_limit_next(1, "2.0");
    m.shop.fail_next(3, 503);
    m.shop.lose_next_responses(1);
    m.warehouse.set_stock("W-1", 17);
    m.warehouse.set_stock("G-7", 4);
    m.settle("stock reaches Shopify", &[(&stock_flow, "succeeded", 2)])
        .await;
    assert_eq!(m.shop.available(widget), Some(17));
    assert_eq!(m.shop.available(gadget), Some(4));
    let stock_runs = m.runs(&stock_flow, "succeeded").await;
    assert_eq!(
        applied_keys(&m.shop.mutations(), "POST", is_inventory_set),
        step_keys(&stock_runs, "stock")
    );

    // Every fault was served; every run finished well; none is dead.
    let requests = m.shop.requests();
    assert_eq!(answered(&requests, 429), 4);
    assert_eq!(answered(&requests, 503), 5 + 4 + 4);
    assert_eq!(m.shop.lock().bucket.throttled, 0);
    assert_eq!(answered(&m.warehouse.requests(), 503), 5 + 4);
    let (_, all) = m.host.get("/v1/runs").await;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for run in all["runs"].as_array().unwrap() {
        *by_status
            .entry(run["status"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        by_status,
        BTreeMap::from([("skipped".to_string(), 12), ("succeeded".to_string(), 14)])
    );
    let (_, dead) = m.host.get("/v1/dead-letters").await;
    assert_eq!(dead["runs"], json!([]));
    assert_eq!(m.warehouse.lock().orders.len(), 3);
    m.host.stop().await;
}
