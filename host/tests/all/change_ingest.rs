//! Change that arrives well, end to end against the Shopify and warehouse
//! fakes: flows that name the entity an event is about keep its state with
//! no time window, so an event that changes nothing that matters starts no
//! run, a late one is dropped and a run sees exactly what changed; runs of
//! one entity go one at a time in arrival order; one webhook subscription
//! serves every flow of its trigger and connection; reconciliation polls
//! recover the deliveries Shopify lost, once; thin events are hydrated and
//! bursts coalesced; a flow that keeps re-firing on its own writes is
//! paused; and entity state and routing survive a SIGKILL.

use std::{collections::BTreeMap, path::Path, time::Instant};

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    fake_shopify::FakeShopify,
    fake_warehouse::FakeWarehouse,
    support::{
        DEADLINE, PUBLIC_URL, TOKEN, TestHost, client, fake::Delivery, metrics::sample, read,
        sandbox_config, serve::Serve, wait_for, wait_until,
    },
};

/// Short retries, so a test recovers in a second or two.
fn retry() -> Value {
    json!({"initial_delay_ms": 50, "max_delay_ms": 500, "max_attempts": 20})
}

/// A host with the Shopify and warehouse connectors, their fakes and a
/// connection to each.
struct Rig {
    host: TestHost,
    shop: FakeShopify,
    warehouse: FakeWarehouse,
    shopify: String,
    wms: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = sandbox_config(dir.path());
        cfg.public_url = Some(PUBLIC_URL.to_string());
        let host = TestHost::start(cfg).await;
        for path in [artifacts::SHOPIFY, artifacts::WAREHOUSE] {
            let (status, body) = host.upload_file(path).await;
            assert_eq!(status, 201, "{path}: {body}");
        }
        let shop = FakeShopify::start().await;
        let warehouse = FakeWarehouse::start().await;
        let shopify = host.connect("shopify", shop.properties()).await;
        let wms = host.connect("warehouse", warehouse.properties()).await;
        Rig {
            host,
            shop,
            warehouse,
            shopify,
            wms,
            _dir: dir,
        }
    }

    async fn publish(&self, flow: Value) -> String {
        let (status, body) = self.host.call(Method::POST, "/v1/flows", Some(flow)).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Activates a webhook flow; returns the URL it was registered with.
    async fn activate(&self, flow: &str) -> String {
        let (status, body) = self
            .host
            .call(Method::POST, &format!("/v1/flows/{flow}/activate"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["webhook_url"].as_str().unwrap().to_string()
    }

    async fn deactivate(&self, flow: &str) {
        let (status, body) = self
            .host
            .call(Method::POST, &format!("/v1/flows/{flow}/deactivate"), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Posts every delivery the fakes have made since the last call.
    async fn pump(&self) -> Vec<Delivery> {
        let mut deliveries = self.shop.take_deliveries();
        deliveries.extend(self.warehouse.take_deliveries());
        for delivery in &deliveries {
            let (status, body) = self.host.deliver(delivery).await;
            assert_eq!(status, 200, "{body}");
        }
        deliveries
    }

    /// A delivery Shopify signs for `payload`, posted to `url`.
    async fn post_to(&self, url: &str, topic: &str, payload: &Value) -> Value {
        let delivery = self.shop.delivery(topic, payload);
        let (status, body) = self
            .host
            .post_hook(url, &delivery.headers, delivery.body)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The runs of `flow`, newest first, in full.
    async fn runs(&self, flow: &str) -> Vec<Value> {
        let (status, body) = self.host.get(&format!("/v1/runs?flow={flow}")).await;
        assert_eq!(status, 200, "{body}");
        let mut runs = Vec::new();
        for summary in body["runs"].as_array().unwrap() {
            let id = summary["id"].as_str().unwrap();
            let (status, run) = self.host.get(&format!("/v1/runs/{id}")).await;
            assert_eq!(status, 200, "{run}");
            runs.push(run);
        }
        runs
    }

    /// Waits until `flow` has exactly the runs `want` names by status and
    /// none unfinished; returns them (newest first).
    async fn settle(&self, flow: &str, want: &[(&str, usize)]) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let runs = self.runs(flow).await;
            let count = |status: &str| runs.iter().filter(|r| r["status"] == json!(status)).count();
            if want.iter().all(|(s, n)| count(s) == *n)
                && want.iter().map(|(_, n)| n).sum::<usize>() == runs.len()
            {
                return runs;
            }
            let statuses: Vec<&Value> = runs.iter().map(|r| &r["status"]).collect();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {want:?} runs of {flow}; they are {statuses:?}: {runs:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// What the flow's trigger events came to (`GET …/deliveries`).
    async fn events(&self, flow: &str) -> Value {
        let (status, body) = self.host.get(&format!("/v1/flows/{flow}/deliveries")).await;
        assert_eq!(status, 200, "{body}");
        body["events"].clone()
    }

    /// A flow on Shopify's `order-changed` webhook about orders, whose
    /// tags and fulfillment status matter, that looks the order up; `more`
    /// adds or replaces fields of the flow.
    fn order_flow(&self, name: &str, more: Value) -> Value {
        let mut flow = json!({
            "name": name,
            "trigger": {"plugin": "shopify@^0.1", "trigger": "order-changed", "connection": self.shopify},
            "entity": {
                "type": "order",
                "key": "{{ trigger.id }}",
                "version": "{{ trigger.updated_at }}",
                "fields": ["tags", "fulfillment_status"],
            },
            "steps": [{
                "key": "find",
                "plugin": "shopify@^0.1",
                "action": "find-order",
                "connection": self.shopify,
                "input": {"order_id": "{{ trigger.id }}"},
                "retry": retry(),
            }],
        });
        for (key, value) in more.as_object().unwrap() {
            flow[key] = value.clone();
        }
        flow
    }
}

fn id_of(order: &Value) -> u64 {
    order["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_events_are_dropped_changes_are_named_and_late_ones_ignored() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(rig.order_flow("Order changes", json!({})))
        .await;
    let url = rig.activate(&flow).await;
    let order = rig.shop.create_order(json!({"tags": "vip"}));
    let id = id_of(&order);

    // Three deliveries of the order with the same tags and status (the
    // merchant edited only its note): one run.
    for note in ["gift wrap", "gift wrap, blue", "leave at the door"] {
        rig.shop.edit_order(id, json!({"note": note}));
    }
    assert_eq!(rig.pump().await.len(), 3);
    let runs = rig.settle(&flow, &[("succeeded", 1)]).await;
    let first = &runs[0];
    assert_eq!(first["entity"]["key"], json!(id.to_string()), "{first}");
    assert_eq!(first["previous"], Value::Null, "{first}");
    let events = rig.events(&flow).await;
    assert_eq!(events["no_op"], json!(2), "{events}");
    assert_eq!(events["by_source"]["webhook"], json!(3), "{events}");

    // A changed status: a run whose `changes` hold exactly that field.
    rig.shop
        .edit_order(id, json!({"fulfillment_status": "fulfilled"}));
    rig.pump().await;
    let runs = rig.settle(&flow, &[("succeeded", 2)]).await;
    let changed = &runs[0];
    assert_eq!(
        changed["changes"],
        json!({"fulfillment_status": {"old": null, "new": "fulfilled"}}),
        "{changed}"
    );
    assert_eq!(
        changed["previous"],
        json!({"tags": "vip", "fulfillment_status": null}),
        "{changed}"
    );

    // An older update arriving late (sent before the change, delivered
    // after it): dropped, whatever it says.
    let mut late = rig.shop.order(id).unwrap();
    late["fulfillment_status"] = json!("partial");
    late["updated_at"] = json!("2020-01-01T00:00:00-04:00");
    rig.post_to(&url, "orders/updated", &late).await;
    let events = rig.events(&flow).await;
    assert_eq!(events["out_of_order"], json!(1), "{events}");
    rig.settle(&flow, &[("succeeded", 2)]).await;

    let text = rig.host.metrics().await;
    for (outcome, n) in [
        ("new", "1"),
        ("changed", "1"),
        ("no_op", "2"),
        ("out_of_order", "1"),
    ] {
        let series = format!("switchyard_entity_events_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(n), "{series} in:\n{text}");
    }
    rig.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscription_serves_every_flow_of_its_trigger_and_connection() {
    let rig = Rig::start().await;
    let every = rig.publish(rig.order_flow("Every change", json!({}))).await;
    let vip = rig
        .publish(rig.order_flow(
            "VIP orders",
            json!({"conditions": ["'vip' in trigger.tags"]}),
        ))
        .await;
    let fulfilled = rig
        .publish(rig.order_flow(
            "Fulfilled orders",
            json!({"conditions": ["trigger.fulfillment_status == 'fulfilled'"]}),
        ))
        .await;
    let urls = [
        rig.activate(&every).await,
        rig.activate(&vip).await,
        rig.activate(&fulfilled).await,
    ];
    assert!(urls.iter().all(|u| *u == urls[0]), "{urls:?}");
    let registrations = |rig: &Rig| {
        rig.shop
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/webhooks.json"))
            .count()
    };
    assert_eq!(registrations(&rig), 1, "Shopify was subscribed once");
    assert_eq!(rig.shop.lock().webhooks.len(), 1);

    // One delivery, stored once, three runs: each flow with its conditions.
    let order = rig.shop.create_order(json!({}));
    rig.shop.edit_order(id_of(&order), json!({"tags": "vip"}));
    assert_eq!(rig.pump().await.len(), 1);
    rig.settle(&every, &[("succeeded", 1)]).await;
    rig.settle(&vip, &[("succeeded", 1)]).await;
    rig.settle(&fulfilled, &[("skipped", 1)]).await;

    // Flows leave without touching the subscription; the last one ends it.
    rig.deactivate(&every).await;
    rig.deactivate(&vip).await;
    assert_eq!(rig.shop.lock().webhooks.len(), 1);
    assert_eq!(registrations(&rig), 1);
    rig.shop
        .edit_order(id_of(&order), json!({"tags": "vip, rush"}));
    assert_eq!(rig.pump().await.len(), 1);
    rig.shop
        .edit_order(id_of(&order), json!({"fulfillment_status": "fulfilled"}));
    rig.pump().await;
    rig.settle(&fulfilled, &[("skipped", 2), ("succeeded", 1)])
        .await;
    assert_eq!(
        rig.runs(&every).await.len(),
        1,
        "an inactive flow got a run"
    );
    rig.deactivate(&fulfilled).await;
    assert!(rig.shop.lock().webhooks.is_empty());
    rig.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_recovers_each_lost_delivery_once() {
    let rig = Rig::start().await;
    let orders: Vec<u64> = (0..20)
        .map(|_| id_of(&rig.shop.create_order(json!({}))))
        .collect();
    let flow = rig
        .publish(rig.order_flow(
            "Order changes, reconciled",
            json!({"trigger": {
                "plugin": "shopify@^0.1", "trigger": "order-changed", "connection": rig.shopify,
                "reconcile": {"trigger": "order-updated", "every_secs": 1},
            }}),
        ))
        .await;
    rig.activate(&flow).await;
    // The first reconciliation only records where to start.
    wait_for(
        &rig.host,
        &format!("/v1/flows/{flow}/trigger"),
        "the first reconciliation",
        |t| t["state"]["seeded"] == json!(true),
    )
    .await;

    // Every order changes once; Shopify loses every tenth delivery.
    for (i, id) in orders.iter().enumerate() {
        rig.shop
            .edit_order(*id, json!({"tags": format!("batch-{i}")}));
    }
    let deliveries = rig.shop.take_deliveries();
    assert_eq!(deliveries.len(), 20);
    let mut lost = Vec::new();
    for (i, delivery) in deliveries.iter().enumerate() {
        if i % 10 == 9 {
            lost.push(delivery.json()["id"].as_u64().unwrap());
            continue;
        }
        let (status, body) = rig.host.deliver(delivery).await;
        assert_eq!(status, 200, "{body}");
    }

    // One run per change, whichever way it came; the lost ones by
    // reconciliation.
    let runs = rig.settle(&flow, &[("succeeded", 20)]).await;
    let mut by_order: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for run in &runs {
        let id = run["event"]["payload"]["id"].as_u64().unwrap();
        by_order.entry(id).or_default().push(run);
    }
    assert_eq!(by_order.keys().copied().collect::<Vec<_>>(), {
        let mut sorted = orders.clone();
        sorted.sort();
        sorted
    });
    for id in &lost {
        let run = by_order[id][0];
        assert_eq!(run["source"], json!("reconcile"), "{run}");
        assert_eq!(
            run["changes"]["tags"]["new"], run["event"]["payload"]["tags"],
            "{run}"
        );
    }
    // More reconciliations find nothing new to run.
    let polls = |t: &Value| t["state"]["polls"].as_u64().unwrap_or(0);
    let (_, trigger) = rig.host.get(&format!("/v1/flows/{flow}/trigger")).await;
    let seen = polls(&trigger);
    wait_for(
        &rig.host,
        &format!("/v1/flows/{flow}/trigger"),
        "two more reconciliations",
        |t| polls(t) >= seen + 2,
    )
    .await;
    rig.settle(&flow, &[("succeeded", 20)]).await;
    let events = rig.events(&flow).await;
    assert_eq!(events["by_source"]["webhook"], json!(18), "{events}");
    let text = rig.host.metrics().await;
    let reconciled: u64 = sample(&text, "switchyard_reconciled_runs_total")
        .unwrap_or_else(|| panic!("no reconciled events in:\n{text}"))
        .parse()
        .unwrap();
    assert!(
        (2..=20).contains(&reconciled),
        "{reconciled} reconciled (2 were lost)"
    );
    rig.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_events_are_hydrated_with_one_fetch_for_a_burst() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(rig.order_flow(
            "Thin order events",
            json!({
                "hydrate": {
                    "action": "find-order",
                    "input": {"order_id": "{{ trigger.id }}"},
                    "select": "order",
                    "retry": retry(),
                },
                "entity": {
                    "type": "order",
                    "key": "{{ trigger.id }}",
                    "fields": ["tags", "email"],
                    "coalesce": {"window_ms": 1500},
                },
                "conditions": ["changes.tags is defined"],
                "steps": [{
                    "key": "tag",
                    "plugin": "shopify@^0.1",
                    "action": "tag-order",
                    "connection": rig.shopify,
                    "input": {"order_id": "{{ trigger.id }}", "tags": ["Seen {{ trigger.email }}"]},
                    "retry": retry(),
                }],
            }),
        ))
        .await;
    let url = rig.activate(&flow).await;
    let order = rig.shop.create_order(json!({"tags": "new"}));
    let id = id_of(&order);
    let fetches = |rig: &Rig| {
        rig.shop
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/orders/{id}.json")))
            .count()
    };
    let before = fetches(&rig);
    // Three thin events (the id only) at once: one fetch, one run with the
    // whole order.
    let thin = json!({"id": id});
    let (a, b, c) = tokio::join!(
        rig.post_to(&url, "orders/updated", &thin),
        rig.post_to(&url, "orders/updated", &thin),
        rig.post_to(&url, "orders/updated", &thin),
    );
    let ids: Vec<&Value> = [&a, &b, &c].iter().map(|b| &b["runs"]).collect();
    let runs = rig.settle(&flow, &[("succeeded", 1), ("skipped", 2)]).await;
    let done = runs
        .iter()
        .find(|r| r["status"] == json!("succeeded"))
        .unwrap();
    assert_eq!(
        done["event"]["payload"]["email"], order["email"],
        "hydrated: {done}; answers {ids:?}"
    );
    assert_eq!(
        done["changes"]["tags"],
        json!({"old": null, "new": "new"}),
        "{done}"
    );
    for skipped in runs.iter().filter(|r| r["status"] == json!("skipped")) {
        assert_eq!(skipped["error"]["kind"], json!("coalesced"), "{skipped}");
    }
    // The run fetched once for itself and once in tag-order.
    assert_eq!(fetches(&rig) - before, 2, "{:#?}", rig.shop.requests());
    assert_eq!(
        rig.shop.order(id).unwrap()["tags"],
        json!(format!("new, Seen {}", order["email"].as_str().unwrap()))
    );
    rig.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_quick_updates_of_one_entity_make_one_run() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(rig.order_flow(
            "Coalesced order changes",
            json!({"entity": {
                "type": "order",
                "key": "{{ trigger.id }}",
                "fields": ["tags"],
                "coalesce": {"window_ms": 2000, "max_delay_ms": 20000},
            }}),
        ))
        .await;
    rig.activate(&flow).await;
    let order = rig.shop.create_order(json!({"tags": "t0"}));
    // Known first: the burst is then a change from t0.
    rig.shop.edit_order(id_of(&order), json!({"tags": "t0"}));
    rig.pump().await;
    rig.settle(&flow, &[("succeeded", 1)]).await;

    for i in 1..=20 {
        rig.shop
            .edit_order(id_of(&order), json!({"tags": format!("t{i}")}));
    }
    assert_eq!(rig.pump().await.len(), 20);
    let runs = rig
        .settle(&flow, &[("succeeded", 2), ("skipped", 19)])
        .await;
    let last = &runs
        .iter()
        .filter(|r| r["status"] == json!("succeeded"))
        .collect::<Vec<_>>()[0];
    assert_eq!(last["event"]["payload"]["tags"], json!("t20"), "{last}");
    // What changed since the last run, not since the event before.
    assert_eq!(
        last["changes"],
        json!({"tags": {"old": "t0", "new": "t20"}}),
        "{last}"
    );
    assert_eq!(last["previous"], json!({"tags": "t0"}), "{last}");
    let events = rig.events(&flow).await;
    assert_eq!(events["coalesced"], json!(19), "{events}");
    rig.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_one_entity_keep_their_order_while_the_first_retries() {
    let rig = Rig::start().await;
    let a = rig.shop.add_variant("SKU-A", 0);
    let b = rig.shop.add_variant("SKU-B", 0);
    let flow = rig
        .publish(json!({
            "name": "Stock to Shopify, in order per SKU",
            "trigger": {"plugin": "warehouse@^0.1", "trigger": "stock-changed", "connection": rig.wms},
            "entity": {"type": "stock", "key": "{{ trigger.sku }}", "version": "{{ trigger.updated_at }}"},
            "steps": [{
                "key": "stock",
                "plugin": "shopify@^0.1",
                "action": "set-inventory",
                "connection": rig.shopify,
                "input": {"sku": "{{ trigger.sku }}", "available": "{{ trigger.available }}"},
                "retry": {"initial_delay_ms": 1500, "max_delay_ms": 3000, "max_attempts": 10},
            }],
        }))
        .await;
    rig.activate(&flow).await;

    // SKU-A to 17 is held at Shopify...
    rig.shop
        .hold(|r| r.json().is_ok_and(|body| body["available"] == json!(17)));
    rig.warehouse.set_stock("SKU-A", 17);
    rig.pump().await;
    wait_until("the first update reaches Shopify", || rig.shop.held() == 1).await;
    // ... while SKU-A goes on to 16, and SKU-B to 5: SKU-B does not wait.
    rig.warehouse.set_stock("SKU-A", 16);
    rig.warehouse.set_stock("SKU-B", 5);
    rig.pump().await;
    wait_until("SKU-B is set while SKU-A is held", || {
        rig.shop.available(b) == Some(5)
    })
    .await;
    assert_eq!(
        rig.shop.available(a),
        Some(0),
        "SKU-A's 16 waits for its 17"
    );
    // SKU-A's first update meets a 503 and waits to retry; 16 still waits.
    rig.shop.fail_next(1, 503);
    rig.shop.release();
    wait_for(
        &rig.host,
        &format!("/v1/runs?flow={flow}&status=retrying"),
        "the first update retries",
        |b| b["runs"].as_array().is_some_and(|r| r.len() == 1),
    )
    .await;
    assert_eq!(
        rig.shop.available(a),
        Some(0),
        "SKU-A's 16 waits for the retry"
    );
    rig.settle(&flow, &[("succeeded", 3)]).await;
    assert_eq!(rig.shop.available(a), Some(16), "the later count wins");
    let sets_of = |item: u64| -> Vec<i64> {
        rig.shop
            .mutations()
            .iter()
            .filter(|m| m.path.ends_with("/inventory_levels/set.json"))
            .filter(|m| m.body["inventory_item_id"].as_u64() == Some(item))
            .map(|m| m.body["available"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(sets_of(a), [17, 16], "SKU-A's updates keep their order");
    assert_eq!(sets_of(b), [5]);
    rig.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_echoes_its_own_writes_is_paused_before_its_tenth_run() {
    let rig = Rig::start().await;
    // Writes the order (a note), which Shopify reports as a change of the
    // order: the flow triggers itself.
    let noting = |name: &str, echo: Option<&str>| {
        let mut entity = json!({"type": "order", "key": "{{ trigger.id }}", "fields": ["note"]});
        if let Some(echo) = echo {
            entity["echo"] = json!(echo);
        }
        rig.order_flow(
            name,
            json!({
                "entity": entity,
                "steps": [{
                    "key": "note",
                    "plugin": "shopify@^0.1",
                    "action": "tag-order",
                    "connection": rig.shopify,
                    "input": {"order_id": "{{ trigger.id }}", "note": "{{ trigger.note }}+",
                              "note_mode": "replace"},
                    "retry": retry(),
                }],
            }),
        )
    };
    let order = rig.shop.create_order(json!({}));
    let id = id_of(&order);

    // Told where its write shows (`entity.echo`), the flow knows the echo.
    let knowing = rig
        .publish(noting(
            "Note orders, knowing the echo",
            Some("{{ {'note': steps.note.note} }}"),
        ))
        .await;
    rig.activate(&knowing).await;
    rig.shop.edit_order(id, json!({"note": "please check"}));
    assert_eq!(rig.pump().await.len(), 1);
    rig.settle(&knowing, &[("succeeded", 1)]).await;
    // Its write's echo: a no-op.
    assert_eq!(rig.pump().await.len(), 1);
    rig.settle(&knowing, &[("succeeded", 1)]).await;
    assert_eq!(rig.events(&knowing).await["no_op"], json!(1));
    rig.deactivate(&knowing).await;

    // Without it, the flow re-fires on its own writes until it is paused.
    let looping = rig.publish(noting("Note orders", None)).await;
    rig.activate(&looping).await;
    rig.shop
        .edit_order(id, json!({"note": "please check again"}));
    let deadline = Instant::now() + DEADLINE;
    let flow = loop {
        rig.pump().await;
        let (_, flow) = rig.host.get(&format!("/v1/flows/{looping}")).await;
        if flow["paused"].is_string() {
            break flow;
        }
        assert!(Instant::now() < deadline, "never paused: {flow}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    let reason = flow["paused"].as_str().unwrap();
    assert!(reason.contains("8 runs for order"), "{reason}");
    let runs = rig
        .settle(&looping, &[("succeeded", 8), ("failed", 1)])
        .await;
    assert_eq!(runs[0]["error"]["kind"], json!("loop"), "{:#}", runs[0]);
    // While paused, its events are kept as cancelled runs, not run.
    rig.pump().await;
    rig.shop.edit_order(id, json!({"note": "one more"}));
    rig.pump().await;
    let runs = rig
        .settle(
            &looping,
            &[("succeeded", 8), ("failed", 1), ("cancelled", 1)],
        )
        .await;
    assert_eq!(runs[0]["error"]["kind"], json!("paused"), "{:#}", runs[0]);
    // Resumed, it runs again (and would loop again: its writes still echo).
    let (status, resumed) = rig
        .host
        .call(Method::POST, &format!("/v1/flows/{looping}/resume"), None)
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert!(resumed["paused"].is_null(), "{resumed}");
    rig.shop.edit_order(id, json!({"note": "after the fix"}));
    rig.pump().await;
    wait_for(
        &rig.host,
        &format!("/v1/runs?flow={looping}&status=succeeded"),
        "a run after resuming",
        |b| b["runs"].as_array().is_some_and(|r| r.len() >= 9),
    )
    .await;
    rig.deactivate(&looping).await;
    rig.host.stop().await;
}

/// `switchyard serve` on `data`, loading the Shopify connector, allowed to
/// reach the fake.
fn serve(data: &Path, load: &Path) -> Serve {
    let args = [
        "--allow-network",
        "127.0.0.2/32",
        "--token",
        TOKEN,
        "--public-url",
        PUBLIC_URL,
    ];
    Serve::start(data, load, &args)
}

async fn api(url: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = client()
        .request(method, format!("{url}{path}"))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let (status, body) = read(request.send().await.unwrap()).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Posts a delivery the fake made to the host at `url` (the real binary).
async fn deliver_to(url: &str, delivery: &Delivery) {
    let path = delivery.address.strip_prefix(PUBLIC_URL).unwrap();
    let mut request = client()
        .post(format!("{url}{path}"))
        .body(delivery.body.clone());
    for (name, value) in &delivery.headers {
        request = request.header(name, value);
    }
    let (status, body) = read(request.send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until the flow at `url` has `n` runs with `status`.
async fn runs_of(url: &str, flow: &str, status: &str, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let runs = api(
            url,
            Method::GET,
            &format!("/v1/runs?flow={flow}&status={status}"),
            None,
        )
        .await;
        let count = runs["runs"].as_array().unwrap().len();
        assert!(count <= n, "{count} {status} runs of {flow}, more than {n}");
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} {status} runs of {flow}, not {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_state_and_routing_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (data, load) = (dir.path().join("data"), dir.path().join("connectors"));
    std::fs::create_dir(&load).unwrap();
    std::fs::copy(artifacts::SHOPIFY, load.join("shopify.wasm")).unwrap();
    let shop = FakeShopify::start().await;
    let mut server = serve(&data, &load);
    let conn = api(
        &server.url,
        Method::POST,
        "/v1/connections",
        Some(json!({"plugin": "shopify", "properties": shop.properties()})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let flow = |name: &str| {
        json!({
            "name": name,
            "trigger": {"plugin": "shopify", "trigger": "order-changed", "connection": conn},
            "entity": {"type": "order", "key": "{{ trigger.id }}", "fields": ["tags"]},
            "steps": [{"key": "find", "plugin": "shopify", "action": "find-order",
                       "connection": conn, "input": {"order_id": "{{ trigger.id }}"}}],
        })
    };
    let mut flows = Vec::new();
    for name in ["First", "Second"] {
        let id = api(&server.url, Method::POST, "/v1/flows", Some(flow(name))).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        api(
            &server.url,
            Method::POST,
            &format!("/v1/flows/{id}/activate"),
            None,
        )
        .await;
        flows.push(id);
    }
    let order = shop.create_order(json!({"tags": "a"}));
    shop.edit_order(id_of(&order), json!({"tags": "b"}));
    for delivery in shop.take_deliveries() {
        deliver_to(&server.url, &delivery).await;
    }
    for flow in &flows {
        runs_of(&server.url, flow, "succeeded", 1).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let server = serve(&data, &load);
    // The same state again: known, so no run; a change: a run in each flow,
    // through the one subscription still routed to both.
    shop.edit_order(id_of(&order), json!({"note": "only the note"}));
    shop.edit_order(id_of(&order), json!({"tags": "c"}));
    let deliveries = shop.take_deliveries();
    assert_eq!(deliveries.len(), 2);
    for delivery in &deliveries {
        deliver_to(&server.url, delivery).await;
    }
    for flow in &flows {
        runs_of(&server.url, flow, "succeeded", 2).await;
        let events = api(
            &server.url,
            Method::GET,
            &format!("/v1/flows/{flow}/deliveries"),
            None,
        )
        .await;
        assert_eq!(events["events"]["no_op"], json!(1), "{events}");
        let runs = api(
            &server.url,
            Method::GET,
            &format!("/v1/runs?flow={flow}"),
            None,
        )
        .await;
        let newest = runs["runs"][0]["id"].as_str().unwrap().to_string();
        let run = api(
            &server.url,
            Method::GET,
            &format!("/v1/runs/{newest}"),
            None,
        )
        .await;
        assert_eq!(
            run["changes"],
            json!({"tags": {"old": "b", "new": "c"}}),
            "{run}"
        );
    }
    assert_eq!(shop.lock().webhooks.len(), 1);
}
