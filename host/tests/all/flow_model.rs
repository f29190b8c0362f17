//! Flows that branch, loop, wait and answer, end to end against the
//! warehouse connector and its fake: upsert (search, then create or update),
//! a loop over line items with one item failing for a while, paths routing
//! statuses, a synchronous flow answering through `respond`, a called flow
//! waited for, `on_error: continue`, what publishing refuses, and the tools
//! an editor uses (step testing, trigger samples, poll history).
//!
//! Flows here have a schedule that never fires while a test runs; their runs
//! are started by hand with `POST /v1/flows/{id}/run`, the event in the body.

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    fake_warehouse::FakeWarehouse,
    support::{TestHost, read, sandbox_config, wait_for},
};

/// Never while a test runs: once a year.
const NEVER: &str = "0 0 1 1 *";

fn retry() -> Value {
    json!({"initial_delay_ms": 50, "max_delay_ms": 300, "max_attempts": 20})
}

struct Rig {
    host: TestHost,
    warehouse: FakeWarehouse,
    wms: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let host = TestHost::start(sandbox_config(dir.path())).await;
        let (status, body) = host.upload_file(artifacts::WAREHOUSE).await;
        assert_eq!(status, 201, "{body}");
        let warehouse = FakeWarehouse::start().await;
        let wms = host.connect("warehouse", warehouse.properties()).await;
        Rig {
            host,
            warehouse,
            wms,
            _dir: dir,
        }
    }

    async fn publish(&self, flow: Value) -> String {
        let (status, body) = self.host.call(Method::POST, "/v1/flows", Some(flow)).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Starts a run and waits up to 20 s for its answer.
    async fn run(&self, flow: &str, event: Value) -> (reqwest::StatusCode, Value) {
        self.host
            .call(
                Method::POST,
                &format!("/v1/flows/{flow}/run?wait_ms=20000"),
                Some(event),
            )
            .await
    }

    async fn full_run(&self, id: &str) -> Value {
        let (status, run) = self.host.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{run}");
        run
    }

    /// The warehouse's order for a channel order id, if there is one.
    fn order_for(&self, channel_order_id: &str) -> Option<Value> {
        self.warehouse
            .lock()
            .orders
            .values()
            .find(|o| o["channel_order_id"] == json!(channel_order_id))
            .cloned()
    }

    fn creates(&self) -> usize {
        self.warehouse
            .mutations()
            .iter()
            .filter(|m| m.method == "POST" && m.path == "/orders")
            .count()
    }

    async fn stop(self) {
        self.host.stop().await;
    }
}

/// A step's record in a run, by key.
fn step<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == json!(key))
        .unwrap_or_else(|| panic!("no step `{key}` in {run}"))
}

fn line_items() -> Value {
    json!([
        {"sku": "W-1", "quantity": 1},
        {"sku": "W-2", "quantity": 2},
        {"sku": "W-3", "quantity": 3},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_creates_a_missing_order_and_updates_a_found_one() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(json!({
            "name": "Upsert warehouse orders",
            "trigger": {"schedule": NEVER},
            "steps": [
                {"key": "find", "plugin": "warehouse", "action": "get-order", "connection": rig.wms,
                 "input": {"channel_order_id": "{{ trigger.id }}"}},
                {"key": "create", "if": "not steps.find.found",
                 "plugin": "warehouse", "action": "create-order", "connection": rig.wms,
                 "input": {"channel_order_id": "{{ trigger.id }}", "items": "{{ trigger.items }}"}},
                {"key": "update", "if": "steps.find.found",
                 "plugin": "warehouse", "action": "update-order-status", "connection": rig.wms,
                 "input": {"order_id": "{{ steps.find.order.id }}", "status": "packed"}},
            ],
        }))
        .await;

    // Not found: created, the update skipped with its expression.
    let (status, first) = rig
        .run(&flow, json!({"id": "7001", "items": line_items()}))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], json!("succeeded"), "{first}");
    let run = rig.full_run(first["id"].as_str().unwrap()).await;
    assert_eq!(step(&run, "find")["output"]["found"], json!(false));
    assert_eq!(step(&run, "create")["status"], json!("succeeded"));
    assert_eq!(step(&run, "update")["status"], json!("skipped"));
    assert!(
        step(&run, "update")["note"]
            .as_str()
            .unwrap()
            .contains("steps.find.found"),
        "{run}"
    );
    let order = rig.order_for("7001").expect("the order was created");
    assert_eq!(order["status"], json!("created"));

    // Found: updated, the create skipped; still one order.
    let (_, second) = rig
        .run(&flow, json!({"id": "7001", "items": line_items()}))
        .await;
    assert_eq!(second["status"], json!("succeeded"), "{second}");
    let run = rig.full_run(second["id"].as_str().unwrap()).await;
    assert_eq!(step(&run, "create")["status"], json!("skipped"));
    assert_eq!(step(&run, "update")["status"], json!("succeeded"));
    assert_eq!(rig.order_for("7001").unwrap()["status"], json!("packed"));
    assert_eq!(rig.creates(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_item_is_applied_once_and_only_the_failing_one_is_retried() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(json!({
            "name": "One warehouse order per line item",
            "trigger": {"schedule": NEVER},
            "steps": [{
                "key": "lines",
                "for_each": {
                    "items": "{{ trigger.line_items }}",
                    "steps": [{
                        "key": "create", "plugin": "warehouse", "action": "create-order",
                        "connection": rig.wms, "retry": retry(),
                        "input": {
                            "channel_order_id": "{{ trigger.id }}-{{ index }}",
                            "items": ["{{ item }}"],
                        },
                    }],
                },
            }],
        }))
        .await;
    // The first item goes through; the second meets two 503s; the third is fine.
    rig.warehouse.fail_after(1, 2, 503);
    let (status, answer) = rig
        .run(&flow, json!({"id": "8001", "line_items": line_items()}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], json!("succeeded"), "{answer}");
    let id = answer["id"].as_str().unwrap();
    let run = rig.full_run(id).await;
    let attempts: Vec<u64> = (0..3)
        .map(|i| {
            step(&run, &format!("create[{i}]"))["attempts"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        attempts,
        [1, 3, 1],
        "only the failing item was retried: {run}"
    );
    for i in 0..3 {
        assert_eq!(
            step(&run, &format!("create[{i}]"))["idempotency_key"],
            json!(format!("{id}:create:{i}"))
        );
        let order = rig
            .order_for(&format!("8001-{i}"))
            .expect("each item's order");
        assert_eq!(order["items"][0]["sku"], json!(format!("W-{}", i + 1)));
    }
    assert_eq!(rig.creates(), 3, "each item applied exactly once");
    let results = step(&run, "lines")["output"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["create"]["created"], json!(true));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_resumes_at_the_failed_item() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(json!({
            "name": "Line items, replayed",
            "trigger": {"schedule": NEVER},
            "steps": [{"key": "lines", "for_each": {
                "items": "{{ trigger.line_items }}",
                "steps": [{"key": "create", "plugin": "warehouse", "action": "create-order",
                           "connection": rig.wms,
                           "input": {"channel_order_id": "{{ trigger.id }}-{{ index }}",
                                     "items": ["{{ item }}"]}}],
            }}],
        }))
        .await;
    // The second item is refused (a 400 is not worth retrying): dead letter.
    rig.warehouse.fail_after(1, 1, 400);
    let (_, failed) = rig
        .run(&flow, json!({"id": "8101", "line_items": line_items()}))
        .await;
    assert_eq!(failed["status"], json!("failed"), "{failed}");
    assert_eq!(failed["error"]["step"], json!("create[1]"), "{failed}");
    assert_eq!(rig.creates(), 1, "the third item did not start");
    let id = failed["id"].as_str().unwrap();

    let (status, replayed) = rig
        .host
        .call(Method::POST, &format!("/v1/runs/{id}/replay"), None)
        .await;
    assert_eq!(status, 200, "{replayed}");
    let run = wait_for(
        &rig.host,
        &format!("/v1/runs/{id}"),
        "the replay finishes",
        |r| r["status"] == json!("succeeded"),
    )
    .await;
    let attempts: Vec<u64> = (0..3)
        .map(|i| {
            step(&run, &format!("create[{i}]"))["attempts"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        attempts,
        [1, 1, 1],
        "the first item was not repeated: {run}"
    );
    assert_eq!(rig.creates(), 3);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_over_more_items_than_its_cap_fails_with_a_clear_error() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(json!({
            "name": "Capped loop",
            "trigger": {"schedule": NEVER},
            "steps": [{"key": "lines", "for_each": {
                "items": "{{ trigger.line_items }}", "max_items": 2,
                "steps": [{"key": "noop", "stop": "never reached"}],
            }}],
        }))
        .await;
    let (_, answer) = rig
        .run(&flow, json!({"id": "1", "line_items": line_items()}))
        .await;
    assert_eq!(answer["status"], json!("failed"), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3 items, more than its max_items (2)"),
        "{message}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_route_shipment_statuses_to_their_actions() {
    let rig = Rig::start().await;
    let order = |channel: &str| {
        let rig = &rig;
        let channel = channel.to_string();
        async move {
            let (status, body) = rig
                .host
                .call(
                    Method::POST,
                    "/v1/invoke",
                    Some(json!({"plugin": "warehouse", "action": "create-order", "connection": rig.wms,
                                "input": {"channel_order_id": channel, "items": line_items()}})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["output"]["order"]["id"].as_str().unwrap().to_string()
        }
    };
    let packed = order("9001").await;
    let cancelled = order("9002").await;
    let flow = rig
        .publish(json!({
            "name": "Route shipment statuses",
            "trigger": {"schedule": NEVER},
            "steps": [{
                "key": "route",
                "paths": {"branches": [
                    {"name": "packed", "when": "trigger.status == 'packed'", "steps": [
                        {"key": "mark_packed", "plugin": "warehouse", "action": "update-order-status",
                         "connection": rig.wms, "input": {"order_id": "{{ trigger.order }}", "status": "packed"}}]},
                    {"name": "cancelled", "when": "trigger.status == 'cancelled'", "steps": [
                        {"key": "mark_cancelled", "plugin": "warehouse", "action": "update-order-status",
                         "connection": rig.wms, "input": {"order_id": "{{ trigger.order }}", "status": "cancelled"}}]},
                    {"name": "otherwise", "steps": [
                        {"key": "ignore", "stop": "status {{ trigger.status }} needs nothing"}]},
                ]},
            }],
        }))
        .await;

    let (_, a) = rig
        .run(&flow, json!({"order": packed, "status": "packed"}))
        .await;
    let (_, b) = rig
        .run(&flow, json!({"order": cancelled, "status": "cancelled"}))
        .await;
    let (_, c) = rig
        .run(&flow, json!({"order": packed, "status": "returned"}))
        .await;
    for answer in [&a, &b, &c] {
        assert_eq!(answer["status"], json!("succeeded"), "{answer}");
    }
    assert_eq!(
        rig.warehouse.order(&packed).unwrap()["status"],
        json!("packed")
    );
    assert_eq!(
        rig.warehouse.order(&cancelled).unwrap()["status"],
        json!("cancelled")
    );
    let run = rig.full_run(a["id"].as_str().unwrap()).await;
    assert_eq!(step(&run, "route")["output"]["taken"], json!(["packed"]));
    assert!(
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["key"] != json!("mark_cancelled"))
    );
    let run = rig.full_run(c["id"].as_str().unwrap()).await;
    assert_eq!(step(&run, "route")["output"]["taken"], json!(["otherwise"]));
    assert_eq!(run["stopped"], json!("status returned needs nothing"));
    let updates = rig
        .warehouse
        .mutations()
        .iter()
        .filter(|m| m.method == "PATCH")
        .count();
    assert_eq!(updates, 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_flow_answers_through_respond() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(json!({
            "name": "Order lookup",
            "trigger": {"schedule": NEVER},
            "steps": [
                {"key": "find", "plugin": "warehouse", "action": "get-order", "connection": rig.wms,
                 "input": {"channel_order_id": "{{ trigger.id }}"}},
                {"key": "answer", "respond": {
                    "status": 202,
                    "headers": {"x-found": "{{ steps.find.found }}"},
                    "body": {"order": "{{ steps.find.order.id if steps.find.found else none }}",
                             "asked": "{{ trigger.id }}"},
                }},
                {"key": "after", "stop": "the caller had its answer already"},
            ],
        }))
        .await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/flows/{flow}/run?wait_ms=20000",
            rig.host.url
        ))
        .bearer_auth(crate::support::TOKEN)
        .json(&json!({"id": "404404"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-found"], "false");
    let (status, body) = read(response).await;
    assert_eq!(status, 202);
    assert_eq!(body, json!({"order": null, "asked": "404404"}));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_called_flow_is_waited_for_and_its_output_used() {
    let rig = Rig::start().await;
    rig.publish(json!({
        "name": "Create a warehouse order",
        "trigger": {"schedule": NEVER},
        "steps": [{"key": "create", "plugin": "warehouse", "action": "create-order",
                   "connection": rig.wms,
                   "input": {"channel_order_id": "{{ trigger.id }}", "items": "{{ trigger.items }}"}}],
    }))
    .await;
    let dispatcher = rig
        .publish(json!({
            "name": "Dispatch orders",
            "trigger": {"schedule": NEVER},
            "steps": [
                {"key": "sub", "call_flow": {"flow": "Create a warehouse order", "wait": true,
                 "event": {"id": "{{ trigger.id }}", "items": "{{ trigger.items }}"}}},
                {"key": "fire_and_forget", "call_flow": {"flow": "Create a warehouse order",
                 "event": {"id": "{{ trigger.id }}-copy", "items": "{{ trigger.items }}"}}},
                {"key": "answer", "respond": {"body": {
                    "order": "{{ steps.sub.output.order.id }}",
                    "child": "{{ steps.sub.run }}",
                    "other": "{{ steps.fire_and_forget.run }}"}}},
            ],
        }))
        .await;
    let (status, body) = rig
        .run(&dispatcher, json!({"id": "6001", "items": line_items()}))
        .await;
    assert_eq!(status, 200, "{body}");
    let order = rig.order_for("6001").expect("the called flow created it");
    assert_eq!(body["order"], order["id"], "{body}");
    let (_, child) = rig
        .host
        .get(&format!("/v1/runs/{}", body["child"].as_str().unwrap()))
        .await;
    assert_eq!(child["status"], json!("succeeded"), "{child}");
    assert!(child["parent"]["run"].is_string(), "{child}");
    wait_for(
        &rig.host,
        &format!("/v1/runs/{}", body["other"].as_str().unwrap()),
        "the flow called without waiting ran too",
        |run| run["status"] == json!("succeeded"),
    )
    .await;
    assert_eq!(rig.creates(), 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_continue_records_the_error_for_later_steps() {
    let rig = Rig::start().await;
    let flow = rig
        .publish(json!({
            "name": "Best effort",
            "trigger": {"schedule": NEVER},
            "steps": [
                {"key": "bad", "on_error": "continue", "plugin": "warehouse",
                 "action": "update-order-status", "connection": rig.wms,
                 "input": {"order_id": "WO-999999", "status": "packed"}},
                {"key": "report", "if": "steps.bad.error is defined",
                 "respond": {"body": {"failed": "{{ steps.bad.error.kind }}",
                                      "why": "{{ steps.bad.error.message }}"}}},
            ],
        }))
        .await;
    let (status, body) = rig.run(&flow, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failed"], json!("invalid_input"), "{body}");
    assert!(
        body["why"].as_str().unwrap().contains("WO-999999"),
        "{body}"
    );
    let (_, runs) = rig.host.get(&format!("/v1/runs?flow={flow}")).await;
    let run = rig.full_run(runs["runs"][0]["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], json!("succeeded"));
    assert_eq!(step(&run, "bad")["status"], json!("failed_continued"));
    rig.stop().await;
}

/// Loops nested `depth` deep: `d1` holding `d2`... holding a stop.
fn nested(depth: usize) -> Value {
    let mut inner = json!({"key": format!("d{}", depth + 1), "stop": "x"});
    for level in (1..=depth).rev() {
        inner = json!({"key": format!("d{level}"), "for_each": {"items": [1], "steps": [inner]}});
    }
    inner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_places_every_problem_of_the_new_constructs() {
    let rig = Rig::start().await;
    let wms = rig.wms.clone();
    let action = |key: &str, input: Value| json!({"key": key, "plugin": "warehouse", "action": "get-order", "connection": wms, "input": input});
    let flow = json!({
        "name": "Everything wrong",
        "trigger": {"schedule": NEVER},
        "steps": [
            action("find", json!({"channel_order_id": "{{ trigger.id }}"})),
            {"key": "nothing"},
            {"key": "two", "stop": "x", "fail": "y"},
            {"key": "bad_if", "if": "trigger.x ==", "stop": "x"},
            {"key": "route", "paths": {"branches": [
                {"name": "a", "steps": [action("in_a", json!({"order_id": "{{ item }}"}))]},
                {"name": "a", "when": "true", "steps": []},
            ]}},
            action("after", json!({"order_id": "{{ steps.in_a.order.id }}"})),
            {"key": "literal", "for_each": {"items": 5, "concurrency": 0, "steps": [{"key": "s1", "stop": "x"}]}},
            {"key": "typed", "for_each": {"items": "{{ steps.find.found }}", "steps": [{"key": "s2", "stop": "x"}]}},
            {"key": "wait", "delay": {"seconds": 1, "until": "{{ trigger.at }}"}, "on_error": "continue"},
            {"key": "answer", "respond": {"status": 42}},
            {"key": "call", "call_flow": {"flow": "no such flow"}},
            nested(5),
            {"key": "find", "stop": "again"},
        ],
    });
    let (status, body) = rig.host.call(Method::POST, "/v1/flows", Some(flow)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], json!("invalid_flow"));
    let message = body["error"]["message"].as_str().unwrap();
    for needle in [
        "steps[nothing]: a step needs one of",
        "steps[two]: a step is one thing; this one has stop and fail",
        "steps[bad_if].if:",
        "steps[route].paths.branches[a].when: only the last branch may go without a condition",
        "steps[route].paths.branches[a]: two branches have this name",
        "steps[route].paths.branches[a].steps: a branch needs at least one step",
        "steps[in_a].input/order_id: `item` exists only inside a `for_each`",
        "steps[after].input/order_id: `steps.in_a.order.id` refers to step `in_a`, which may not have run before this point",
        "steps[literal].for_each.items: must be an array",
        "steps[literal].for_each.concurrency: from 1 to 64",
        "steps[typed].for_each.items: `{{ steps.find.found }}` is a boolean by its schema, not an array",
        "steps[wait].delay: give `seconds` or `until`, one of them",
        "steps[wait].on_error: only actions and flow calls can fail and continue",
        "steps[answer].respond.status: 42 is not an HTTP status",
        "steps[call].call_flow.flow: flow `no such flow` does not exist",
        "steps[d5].for_each: steps nest at most 4 deep",
        "steps[find]: duplicate step key",
    ] {
        assert!(
            message.contains(needle),
            "`{needle}` missing from:\n{message}"
        );
    }
    let (_, flows) = rig.host.get("/v1/flows").await;
    assert_eq!(flows["flows"], json!([]), "nothing was stored");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_tests_a_step_and_sees_samples_and_polls() {
    let rig = Rig::start().await;
    rig.warehouse
        .insert_shipment("5001", "packed", 1_700_000_000);
    // Step testing: a draft, never published; no run is created.
    let draft = json!({
        "name": "Draft",
        "trigger": {"schedule": NEVER},
        "steps": [{"key": "find", "plugin": "warehouse", "action": "get-order",
                   "connection": rig.wms, "input": {"channel_order_id": "{{ trigger.id }}"}}],
    });
    let (status, tested) = rig
        .host
        .call(
            Method::POST,
            "/v1/flows/test-step",
            Some(json!({"flow": draft, "step": "find", "trigger": {"id": "123"}})),
        )
        .await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["input"], json!({"channel_order_id": "123"}));
    assert_eq!(tested["output"], json!({"found": false}));
    let exchange = &tested["journal"]["exchanges"][0];
    assert_eq!(exchange["status"], json!(200), "{tested}");
    assert!(!tested.to_string().contains(crate::fake_warehouse::TOKEN));
    let (status, bad) = rig
        .host
        .call(
            Method::POST,
            "/v1/flows/test-step",
            Some(json!({"flow": draft, "step": "find", "trigger": {}})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("steps[find].input")
    );
    let (_, runs) = rig.host.get("/v1/runs").await;
    assert_eq!(runs["runs"], json!([]));

    // A polling flow: its samples on demand, then its poll history.
    let flow = rig
        .publish(json!({
            "name": "Shipment updates",
            "trigger": {"plugin": "warehouse", "trigger": "shipment-updates",
                        "connection": rig.wms, "interval_secs": 1,
                        "params": {"include_existing": true}},
            "steps": [{"key": "answer", "stop": "seen {{ trigger.id }}"}],
        }))
        .await;
    let (status, samples) = rig
        .host
        .get(&format!("/v1/flows/{flow}/samples?fetch=true"))
        .await;
    assert_eq!(status, 200, "{samples}");
    assert_eq!(
        samples["samples"][0]["payload"]["channel_order_id"],
        json!("5001")
    );
    assert_eq!(samples["samples"][0]["source"], json!("poll"));
    rig.host
        .call(Method::POST, &format!("/v1/flows/{flow}/activate"), None)
        .await;
    let polls = wait_for(
        &rig.host,
        &format!("/v1/flows/{flow}/polls"),
        "two polls are recorded",
        |b| b["polls"].as_array().is_some_and(|p| p.len() >= 2),
    )
    .await;
    let newest = &polls["polls"][0];
    assert!(newest["cursor_after"].is_string(), "{newest}");
    assert_eq!(newest["error"], Value::Null);
    assert!(
        newest["journal"]["exchanges"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "{newest}"
    );
    let oldest = polls["polls"].as_array().unwrap().last().unwrap();
    assert_eq!(
        oldest["cursor_before"],
        Value::Null,
        "the first poll started from nothing"
    );
    rig.stop().await;
}
