//! `switchyard topic|stream|subscription …`: the change APIs from the
//! command line (topics and their records, streams read and committed,
//! batched webhook subscriptions and their attempts).

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Body, Client, iso_ms, print_json, str_of};

#[derive(Debug, Subcommand)]
pub(super) enum TopicCommand {
    /// List topics with their record counts.
    List,
    /// Create a topic (publishing to a missing one creates it with the defaults).
    Create {
        name: String,
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Hours records are kept.
        #[arg(long, default_value_t = 168)]
        retention_hours: u64,
        /// Records kept per partition at most (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_records: u64,
    },
    Show {
        name: String,
    },
    /// Delete a topic and its records (refused while streams or
    /// subscriptions read it).
    Delete {
        name: String,
    },
    /// Publish one record: `topic publish orders 1001 order.updated --data '{…}'`.
    Publish {
        topic: String,
        key: String,
        #[arg(name = "TYPE")]
        kind: String,
        /// The record's data as JSON; leave out for a deletion (a tombstone).
        #[arg(long)]
        data: Option<String>,
        /// Publishing the same key again is a no-op.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// A partition's records from an offset.
    Records {
        topic: String,
        #[arg(long, default_value_t = 0)]
        partition: u32,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The current state of one key.
    Get {
        topic: String,
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum StreamCommand {
    List,
    /// Create a stream over a topic.
    Create {
        topic: String,
        /// Only records of these types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only records whose data has FIELD=JSON (dotted paths; repeatable).
        #[arg(long = "where")]
        filter: Vec<String>,
        #[arg(long)]
        partitions: Option<u32>,
        /// earliest or latest.
        #[arg(long, default_value = "earliest")]
        start: String,
    },
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Read one batch (from the checkpoint, or after --cursor).
    Read {
        id: String,
        #[arg(long, default_value = "cli")]
        reader: String,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
    /// Move the checkpoint to a batch's cursor.
    Commit {
        id: String,
        cursor: String,
        #[arg(long, default_value = "cli")]
        reader: String,
    },
    /// Move the checkpoint: `earliest`, `latest`, an RFC 3339 time, or a cursor.
    Seek {
        id: String,
        to: String,
    },
    /// Lag per partition and who reads it.
    Stats {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum SubscriptionCommand {
    List,
    /// Batched webhooks of a topic's changes to URL; prints the signing
    /// secret once.
    Create {
        topic: String,
        url: String,
        #[arg(long, default_value_t = 60)]
        interval_secs: u64,
        /// changes (batches of what changed) or all (the whole state each time).
        #[arg(long, default_value = "changes")]
        mode: String,
        #[arg(long = "type")]
        types: Vec<String>,
    },
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// The next batch carries the whole current state.
    TrueUp {
        id: String,
    },
    /// A new signing secret (printed once); the old one signs for a day more.
    RotateSecret {
        id: String,
    },
    /// Enable a subscription a 410 or long failures disabled.
    Enable {
        id: String,
    },
    /// The delivery attempts, newest first.
    Attempts {
        id: String,
    },
    /// The batches and their delivery state.
    Batches {
        id: String,
    },
    /// Send one batch again.
    Redeliver {
        id: String,
        batch: String,
    },
    /// Send again every batch not delivered since TIME (RFC 3339).
    Recover {
        id: String,
        since: String,
    },
}

pub(super) async fn topic(client: &Client, command: TopicCommand) -> anyhow::Result<()> {
    let result = match command {
        TopicCommand::List => {
            let result = client.send(Method::GET, "/v1/topics", Body::None).await?;
            println!(
                "{:<30} {:>10} {:>10} {:>10}",
                "TOPIC", "PARTITIONS", "RECORDS", "KEPT (H)"
            );
            for t in result["topics"].as_array().into_iter().flatten() {
                println!(
                    "{:<30} {:>10} {:>10} {:>10}",
                    str_of(&t["name"]),
                    t["partitions"],
                    t["records"],
                    t["retention_hours"]
                );
            }
            return Ok(());
        }
        TopicCommand::Create {
            name,
            partitions,
            retention_hours,
            max_records,
        } => {
            let body = json!({"name": name, "partitions": partitions,
                              "retention_hours": retention_hours, "max_records": max_records});
            client
                .send(Method::POST, "/v1/topics", Body::Json(body))
                .await?
        }
        TopicCommand::Show { name } => {
            client
                .send(Method::GET, &format!("/v1/topics/{name}"), Body::None)
                .await?
        }
        TopicCommand::Delete { name } => {
            client
                .send(Method::DELETE, &format!("/v1/topics/{name}"), Body::None)
                .await?;
            println!("deleted topic {name}");
            return Ok(());
        }
        TopicCommand::Publish {
            topic,
            key,
            kind,
            data,
            idempotency_key,
        } => {
            let data: Value = match data {
                Some(text) => serde_json::from_str(&text).context("--data is not valid JSON")?,
                None => Value::Null,
            };
            let body = json!({"records": [{"key": key, "type": kind, "data": data,
                                           "idempotency_key": idempotency_key}]});
            client
                .send(
                    Method::POST,
                    &format!("/v1/topics/{topic}/records"),
                    Body::Json(body),
                )
                .await?
        }
        TopicCommand::Records {
            topic,
            partition,
            from,
            limit,
        } => {
            let mut path =
                format!("/v1/topics/{topic}/records?partition={partition}&limit={limit}");
            if let Some(from) = from {
                path.push_str(&format!("&from={from}"));
            }
            let result = client.send(Method::GET, &path, Body::None).await?;
            print_records(&result["records"]);
            return Ok(());
        }
        TopicCommand::Get { topic, key } => {
            client
                .send(
                    Method::GET,
                    &format!("/v1/topics/{topic}/objects/{}", encode(&key)),
                    Body::None,
                )
                .await?
        }
    };
    print_json(&result);
    Ok(())
}

pub(super) async fn stream(client: &Client, command: StreamCommand) -> anyhow::Result<()> {
    let result = match command {
        StreamCommand::List => {
            let result = client.send(Method::GET, "/v1/streams", Body::None).await?;
            println!("{:<30} {:<24} {:>10}", "STREAM", "TOPIC", "PARTITIONS");
            for s in result["streams"].as_array().into_iter().flatten() {
                println!(
                    "{:<30} {:<24} {:>10}",
                    str_of(&s["id"]),
                    str_of(&s["topic"]),
                    s["partitions"]
                );
            }
            return Ok(());
        }
        StreamCommand::Create {
            topic,
            types,
            filter,
            partitions,
            start,
        } => {
            let mut fields = serde_json::Map::new();
            for condition in filter {
                let (path, value) = condition
                    .split_once('=')
                    .with_context(|| format!("--where `{condition}` is not FIELD=JSON"))?;
                let value = serde_json::from_str(value)
                    .unwrap_or_else(|_| Value::String(value.to_string()));
                fields.insert(path.to_string(), value);
            }
            let body = json!({"topic": topic, "types": types, "filter": fields,
                              "partitions": partitions, "start": start});
            client
                .send(Method::POST, "/v1/streams", Body::Json(body))
                .await?
        }
        StreamCommand::Show { id } => {
            client
                .send(Method::GET, &format!("/v1/streams/{id}"), Body::None)
                .await?
        }
        StreamCommand::Delete { id } => {
            client
                .send(Method::DELETE, &format!("/v1/streams/{id}"), Body::None)
                .await?;
            println!("deleted stream {id}");
            return Ok(());
        }
        StreamCommand::Read {
            id,
            reader,
            cursor,
            limit,
            wait_ms,
        } => {
            let mut path =
                format!("/v1/streams/{id}/records?reader={reader}&limit={limit}&wait_ms={wait_ms}");
            if let Some(cursor) = cursor {
                path.push_str(&format!("&cursor={}", encode(&cursor)));
            }
            let result = client.send(Method::GET, &path, Body::None).await?;
            print_records(&result["records"]);
            println!("cursor: {}", str_of(&result["cursor"]));
            return Ok(());
        }
        StreamCommand::Commit { id, cursor, reader } => {
            client
                .send(
                    Method::POST,
                    &format!("/v1/streams/{id}/commit"),
                    Body::Json(json!({"reader": reader, "cursor": cursor})),
                )
                .await?
        }
        StreamCommand::Seek { id, to } => {
            let body = if matches!(to.as_str(), "earliest" | "latest") {
                json!({"to": to})
            } else if to.contains('~') {
                json!({"cursor": to})
            } else {
                json!({"time": to})
            };
            client
                .send(
                    Method::POST,
                    &format!("/v1/streams/{id}/seek"),
                    Body::Json(body),
                )
                .await?
        }
        StreamCommand::Stats { id } => {
            let result = client
                .send(Method::GET, &format!("/v1/streams/{id}/stats"), Body::None)
                .await?;
            println!(
                "{:>9} {:>12} {:>12} {:>8}  READER",
                "PARTITION", "COMMITTED", "END", "LAG"
            );
            for p in result["partitions"].as_array().into_iter().flatten() {
                println!(
                    "{:>9} {:>12} {:>12} {:>8}  {}",
                    p["partition"],
                    p["committed"],
                    p["end"],
                    p["lag"],
                    p["reader"].as_str().unwrap_or("-")
                );
            }
            println!("total lag: {}", result["lag"]);
            return Ok(());
        }
    };
    print_json(&result);
    Ok(())
}

pub(super) async fn subscription(
    client: &Client,
    command: SubscriptionCommand,
) -> anyhow::Result<()> {
    let base = "/v1/webhook-subscriptions";
    let result = match command {
        SubscriptionCommand::List => {
            let result = client.send(Method::GET, base, Body::None).await?;
            println!("{:<30} {:<20} {:<9} URL", "ID", "TOPIC", "STATUS");
            for s in result["subscriptions"].as_array().into_iter().flatten() {
                println!(
                    "{:<30} {:<20} {:<9} {}",
                    str_of(&s["id"]),
                    str_of(&s["topic"]),
                    str_of(&s["status"]),
                    str_of(&s["url"])
                );
            }
            return Ok(());
        }
        SubscriptionCommand::Create {
            topic,
            url,
            interval_secs,
            mode,
            types,
        } => {
            let body = json!({"topic": topic, "url": url, "interval_secs": interval_secs,
                              "mode": mode, "types": types});
            let result = client.send(Method::POST, base, Body::Json(body)).await?;
            println!("created {}", str_of(&result["id"]));
            println!(
                "signing secret (shown only this once): {}",
                str_of(&result["secret"])
            );
            return Ok(());
        }
        SubscriptionCommand::Show { id } => {
            client
                .send(Method::GET, &format!("{base}/{id}"), Body::None)
                .await?
        }
        SubscriptionCommand::Delete { id } => {
            client
                .send(Method::DELETE, &format!("{base}/{id}"), Body::None)
                .await?;
            println!("deleted subscription {id}");
            return Ok(());
        }
        SubscriptionCommand::TrueUp { id } => {
            client
                .send(Method::POST, &format!("{base}/{id}/true-up"), Body::None)
                .await?
        }
        SubscriptionCommand::RotateSecret { id } => {
            let result = client
                .send(
                    Method::POST,
                    &format!("{base}/{id}/rotate-secret"),
                    Body::None,
                )
                .await?;
            println!(
                "new signing secret (shown only this once): {}",
                str_of(&result["secret"])
            );
            return Ok(());
        }
        SubscriptionCommand::Enable { id } => {
            client
                .send(Method::POST, &format!("{base}/{id}/enable"), Body::None)
                .await?
        }
        SubscriptionCommand::Attempts { id } => {
            let result = client
                .send(Method::GET, &format!("{base}/{id}/attempts"), Body::None)
                .await?;
            println!(
                "{:<24} {:<34} {:>6} {:>8}  ERROR",
                "AT", "BATCH", "STATUS", "MS"
            );
            for a in result["attempts"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<34} {:>6} {:>8}  {}",
                    iso_ms(a["at"].as_u64().unwrap_or(0)),
                    str_of(&a["batch"]),
                    a["status"]
                        .as_u64()
                        .map_or("-".to_string(), |s| s.to_string()),
                    a["duration_ms"],
                    a["error"].as_str().unwrap_or("")
                );
            }
            return Ok(());
        }
        SubscriptionCommand::Batches { id } => {
            client
                .send(Method::GET, &format!("{base}/{id}/batches"), Body::None)
                .await?
        }
        SubscriptionCommand::Redeliver { id, batch } => {
            client
                .send(
                    Method::POST,
                    &format!("{base}/{id}/batches/{batch}/redeliver"),
                    Body::None,
                )
                .await?
        }
        SubscriptionCommand::Recover { id, since } => {
            client
                .send(
                    Method::POST,
                    &format!("{base}/{id}/recover"),
                    Body::Json(json!({"since": since})),
                )
                .await?
        }
    };
    print_json(&result);
    Ok(())
}

fn print_records(records: &Value) {
    println!(
        "{:>9} {:>10} {:<24} {:<20} {:<24} DATA",
        "PARTITION", "OFFSET", "KEY", "TYPE", "TIME"
    );
    for r in records.as_array().into_iter().flatten() {
        println!(
            "{:>9} {:>10} {:<24} {:<20} {:<24} {}",
            r["partition"],
            r["offset"],
            str_of(&r["key"]),
            str_of(&r["type"]),
            str_of(&r["time"]),
            r["data"]
        );
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
