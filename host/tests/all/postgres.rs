//! The PostgreSQL store's guarantees between hosts, on the test cluster,
//! with several stores (hosts) open on one database in this process: the
//! schema is migrated once whoever starts first, a due run is claimed by
//! one host, a host restarted under its name cannot write under its old
//! claims, a silent host's claims go back with their idempotency keys
//! unchanged, a trigger's lease grows its epoch on takeover and refuses
//! the old holder's writes, a schedule's slot makes its runs once, and
//! topic records are kept, read and truncated as on sled, and two hosts
//! publishing to one partition get offsets of their own.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;
use switchyard::store::{
    Along, Lane, RunRecord, RunStatus, RunStore, StoreError, TriggerState, TriggerStore, Visit,
    postgres::{PgSettings, PgStore},
};

use crate::support::{pg, wait_until};

fn open(url: &str, node: &str, lease: Duration) -> Arc<PgStore> {
    PgStore::open(PgSettings {
        url: url.to_string(),
        node: node.to_string(),
        lease,
        connections: 4,
        files_dir: std::env::temp_dir().join("switchyard-pg-files"),
    })
    .unwrap_or_else(|e| panic!("opening the store as {node}: {e}"))
}

/// A queued run due now (built from JSON, so only the fields a run needs).
fn queued(id: &str, flow: &str) -> RunRecord {
    serde_json::from_value(json!({
        "id": id,
        "tenant": "t",
        "flow_id": flow,
        "flow_version": 1,
        "source": "api",
        "event": {"id": id, "payload": {}},
        "lane": "normal",
        "status": "queued",
        "steps": [],
        "error": null,
        "due_at": 1,
        "created_at": 1,
        "updated_at": 1,
        "finished_at": null,
    }))
    .expect("a run record")
}

fn succeeded(run: &RunRecord) -> RunRecord {
    let mut after = run.clone();
    after.status = RunStatus::Succeeded;
    after.updated_at = run.updated_at + 1;
    after.finished_at = Some(after.updated_at);
    after
}

/// Starts every due run `store` offers (up to `free`); returns their ids.
fn start_due(store: &PgStore, free: usize) -> Vec<String> {
    let mut started = Vec::new();
    store
        .visit_due(Lane::Normal, u64::MAX / 2, free, free, &mut |entry| {
            started.push(entry.run.clone());
            Visit::Start
        })
        .expect("claiming due runs");
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_at_once_apply_the_schema_once() {
    let url = pg::fresh_database().await;
    let hosts: Vec<_> = (0..3)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || open(&url, &format!("host-{n}"), Duration::from_secs(30)))
        })
        .collect();
    let stores: Vec<_> = hosts.into_iter().map(|h| h.join().unwrap()).collect();
    let versions = pg::query(
        &url,
        "SELECT version FROM schema_migrations ORDER BY version",
    )
    .await;
    let versions: Vec<i32> = versions.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, [1, 2, 3], "each migration is recorded once");
    let nodes = pg::query(&url, "SELECT name, epoch FROM nodes ORDER BY name").await;
    let nodes: Vec<(String, i64)> = nodes.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        nodes,
        [
            ("host-0".to_string(), 1),
            ("host-1".to_string(), 1),
            ("host-2".to_string(), 1)
        ]
    );
    drop(stores);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_due_run_is_claimed_by_one_host() {
    let url = pg::fresh_database().await;
    let (a, b) = (
        open(&url, "a", Duration::from_secs(30)),
        open(&url, "b", Duration::from_secs(30)),
    );
    let runs: Vec<RunRecord> = (0..300)
        .map(|n| queued(&format!("run-{n:03}"), &format!("flow-{}", n % 7)))
        .collect();
    a.create(&runs, &[], &[], Along::Nothing).unwrap();
    // Both hosts claim at the same time, a few at a time, until none is left.
    let started = Arc::new(Mutex::new(Vec::new()));
    let claimers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            let started = started.clone();
            std::thread::spawn(move || {
                loop {
                    let got = start_due(&store, 8);
                    if got.is_empty() {
                        break;
                    }
                    started.lock().unwrap().extend(got);
                }
            })
        })
        .collect();
    for claimer in claimers {
        claimer.join().unwrap();
    }
    let started = started.lock().unwrap().clone();
    let unique: HashSet<&String> = started.iter().collect();
    assert_eq!(unique.len(), started.len(), "a run was claimed twice");
    assert_eq!(unique.len(), 300, "every due run was claimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_restarted_under_its_name_cannot_complete_its_old_claims() {
    let url = pg::fresh_database().await;
    let old = open(&url, "worker", Duration::from_secs(30));
    let run = queued("run-1", "flow-1");
    old.create(std::slice::from_ref(&run), &[], &[], Along::Nothing)
        .unwrap();
    assert_eq!(start_due(&old, 4), ["run-1"]);
    // The same name joins again (a restart): a new epoch.
    let new = open(&url, "worker", Duration::from_secs(30));
    assert_eq!(new.epoch(), old.epoch() + 1);
    match old.update(&run, &succeeded(&run)) {
        Err(StoreError::Fenced(why)) => assert!(why.contains("run-1"), "{why}"),
        other => panic!("the old epoch completed its claim: {other:?}"),
    }
    // Its claim went back at the restart: the new epoch takes and ends it.
    assert_eq!(start_due(&new, 4), ["run-1"]);
    new.update(&run, &succeeded(&run)).unwrap();
    new.release("t", "run-1").unwrap();
    let stored = new.run("t", "run-1").unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(new.queue_depth().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_hosts_claims_go_back_to_the_queue() {
    let url = pg::fresh_database().await;
    let lease = Duration::from_secs(1);
    let (a, b) = (open(&url, "a", lease), open(&url, "b", lease));
    let runs = [queued("run-1", "flow-1"), queued("run-2", "flow-1")];
    a.create(&runs, &[], &[], Along::Nothing).unwrap();
    let mut claimed = start_due(&a, 8);
    claimed.sort();
    assert_eq!(claimed, ["run-1", "run-2"]);
    assert!(start_due(&b, 8).is_empty(), "b took runs a holds");
    // `a` stops beating (its process is gone): after the lease, b's reaper
    // puts its claims back and b runs them, the same runs (same ids, so
    // the same idempotency keys for their steps).
    drop(a);
    let mut taken = Vec::new();
    wait_until("b takes over a's claimed runs", || {
        taken.extend(start_due(&b, 8));
        taken.len() == 2
    })
    .await;
    taken.sort();
    assert_eq!(taken, ["run-1", "run-2"]);
    let attempts = pg::query(&url, "SELECT attempt FROM run_queue ORDER BY run").await;
    let attempts: Vec<i32> = attempts.iter().map(|r| r.get(0)).collect();
    assert_eq!(attempts, [2, 2], "each claim counts an attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_lease_taken_over_refuses_the_old_holders_writes() {
    let url = pg::fresh_database().await;
    // Hosts beat every 10 s: `a`, made silent below by the test (its last
    // beat an hour ago), stays silent long enough.
    let a = open(&url, "a", Duration::from_secs(30));
    let b = open(&url, "b", Duration::from_secs(30));
    assert_eq!(
        a.lease("t", "poller", 0).unwrap(),
        None,
        "a takes the lease"
    );
    assert!(b.lease("t", "poller", 0).unwrap().is_some(), "a holds it");
    let state = TriggerState {
        cursor: Some("a-1".into()),
        ..TriggerState::default()
    };
    a.save_state("t", "poller", &state).unwrap();

    pg::query(
        &url,
        "UPDATE nodes SET heartbeat_at = now() - interval '1 hour' WHERE name = 'a'",
    )
    .await;
    assert_eq!(b.lease("t", "poller", 0).unwrap(), None, "b takes over");
    let epoch = pg::query(&url, "SELECT epoch, owner FROM trigger_leases").await;
    assert_eq!(epoch[0].get::<_, i64>(0), 2, "the takeover grew the epoch");
    assert_eq!(epoch[0].get::<_, String>(1), "b");

    // The old holder's late poll: its cursor and its events are refused.
    let late = TriggerState {
        cursor: Some("a-2".into()),
        ..TriggerState::default()
    };
    let run = queued("late-event", "poller");
    let refused = a.create(
        std::slice::from_ref(&run),
        &[],
        &[],
        Along::TriggerState {
            tenant: "t",
            flow: "poller",
            state: &late,
        },
    );
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    assert!(matches!(
        a.save_state("t", "poller", &late),
        Err(StoreError::Fenced(_))
    ));
    assert!(
        !b.exists("t", "late-event").unwrap(),
        "the late events stay out"
    );
    let cursor = b.state("t", "poller").unwrap().unwrap().cursor;
    assert_eq!(cursor.as_deref(), Some("a-1"), "the late cursor stays out");

    // The new holder's writes go through.
    b.save_state("t", "poller", &late).unwrap();
    assert_eq!(
        b.state("t", "poller").unwrap().unwrap().cursor.as_deref(),
        Some("a-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_slot_makes_its_runs_once() {
    let url = pg::fresh_database().await;
    let (a, b) = (
        open(&url, "a", Duration::from_secs(30)),
        open(&url, "b", Duration::from_secs(30)),
    );
    let state = TriggerState::default();
    let slot = |tenant, flow| Along::Slot {
        tenant,
        flow,
        fire_at: 60_000,
        state: &state,
    };
    a.create(&[queued("tick-a", "cron")], &[], &[], slot("t", "cron"))
        .unwrap();
    // Another host firing the same slot (with a run id of its own).
    let again = b.create(&[queued("tick-b", "cron")], &[], &[], slot("t", "cron"));
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(!b.exists("t", "tick-b").unwrap());
    // The next slot is another key.
    b.create(
        &[queued("tick-c", "cron")],
        &[],
        &[],
        Along::Slot {
            tenant: "t",
            flow: "cron",
            fire_at: 61_000,
            state: &state,
        },
    )
    .unwrap();
    assert!(a.exists("t", "tick-c").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_records_read_back_by_partition_and_truncate_from_the_front() {
    use switchyard::store::{TopicRecord, TopicStore};
    let url = pg::fresh_database().await;
    let store = open(&url, "a", Duration::from_secs(30));
    let record = |partition, offset: u64, key: &str, data| TopicRecord {
        partition,
        offset,
        key: key.into(),
        kind: "order".into(),
        time: 1_000 + offset,
        data,
        idempotency: Some(format!("run:{partition}:{offset}")),
    };
    let batch = [
        record(0, 0, "a", json!({"n": 1})),
        record(1, 0, "b", json!({"n": 1})),
        record(0, 1, "a", json!({"n": 2})),
        record(0, 2, "c", serde_json::Value::Null),
    ];
    store.append("t", "orders", &batch).await.unwrap();
    let head = store.head("t", "orders", 0).unwrap();
    assert_eq!((head.first, head.next, head.last_time), (0, 3, 1_002));
    assert_eq!(store.read("t", "orders", 0, 1, 10).unwrap(), &batch[2..]);
    assert_eq!(
        store.published("t", "orders", "run:1:0").unwrap(),
        Some((1, 0))
    );
    assert_eq!(
        store.object("t", "orders", "a").unwrap().unwrap().data,
        json!({"n": 2})
    );
    let keys: Vec<String> = store
        .objects("t", "orders", None, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
    // The same offsets again (another host's append at the same moment):
    // refused whole, nothing overwritten.
    let clash = [record(0, 2, "d", json!({"n": 9}))];
    assert!(store.append("t", "orders", &clash).await.is_err());
    assert!(store.object("t", "orders", "d").unwrap().is_none());
    // Truncated below 3: the records and their keys go, the tombstone of
    // `c` (older than the cut-off) leaves the compacted view.
    store.truncate("t", "orders", 0, 3, 5_000).unwrap();
    assert!(store.read("t", "orders", 0, 0, 10).unwrap().is_empty());
    assert_eq!(store.head("t", "orders", 0).unwrap().first, 3);
    assert_eq!(store.published("t", "orders", "run:0:1").unwrap(), None);
    assert!(store.object("t", "orders", "c").unwrap().is_none());
    assert!(store.object("t", "orders", "a").unwrap().is_some());
    store.drop_topic("t", "orders").unwrap();
    assert!(store.objects("t", "orders", None, 10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_publishing_to_one_partition_share_its_offsets() {
    use switchyard::{
        tasks::Tasks,
        topics::{NewRecord, TopicSpec, Topics},
    };
    let url = pg::fresh_database().await;
    let hosts: Vec<Arc<Topics>> = ["a", "b"]
        .into_iter()
        .map(|node| {
            let store = open(&url, node, Duration::from_secs(30));
            Arc::new(Topics::new(
                store.clone(),
                store,
                Arc::new(Tasks::default()),
            ))
        })
        .collect();
    let spec = TopicSpec {
        name: "orders".into(),
        partitions: Some(1),
        ..Default::default()
    };
    hosts[0].create("t", spec).unwrap();
    // Both hosts load their heads before either appends: each one's cache
    // is about to fall behind the other's appends.
    for host in &hosts {
        let topic = host.get("t", "orders").unwrap();
        assert_eq!(host.heads("t", &topic).unwrap()[0].next, 0);
    }
    let publishers: Vec<_> = (0..40)
        .map(|n| {
            let host = hosts[n % 2].clone();
            tokio::spawn(async move {
                let records = (0..5)
                    .map(|i| NewRecord {
                        key: format!("order-{n}-{i}"),
                        kind: "order".into(),
                        data: json!({"n": n, "i": i}),
                        idempotency: Some(format!("publish-{n}-{i}")),
                    })
                    .collect();
                host.publish("t", "orders", records)
                    .await
                    .unwrap_or_else(|e| panic!("publisher {n}: {e}"))
            })
        })
        .collect();
    let mut offsets = Vec::new();
    for publisher in publishers {
        offsets.extend(publisher.await.unwrap().into_iter().map(|r| r.offset));
    }
    offsets.sort();
    assert_eq!(
        offsets,
        (0..200).collect::<Vec<u64>>(),
        "every record its own offset"
    );
    // Each host reads what both appended, in one order.
    let mut seen = Vec::new();
    for host in &hosts {
        let topic = host.get("t", "orders").unwrap();
        assert_eq!(host.heads("t", &topic).unwrap()[0].next, 200);
        let records = host.read("t", &topic, 0, 0, 1_000).unwrap();
        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 200);
        seen.push(keys);
    }
    assert_eq!(seen[0], seen[1]);
    // A publish repeated on the other host finds the first record.
    let again = hosts[1]
        .publish(
            "t",
            "orders",
            vec![NewRecord {
                key: "order-0-0".into(),
                kind: "order".into(),
                data: json!({"n": 0, "i": 0}),
                idempotency: Some("publish-0-0".into()),
            }],
        )
        .await
        .unwrap();
    assert!(again[0].offset < 200);
}
