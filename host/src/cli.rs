//! The `switchyard` command line: `serve` runs the host; the other commands
//! talk to a running host over its API.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::{app::App, config::ServeConfig};

mod changes;

mod connector;

mod connector_test;

mod fixtures;

mod files;

mod progress;

mod watch;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Integration platform: sandboxed WebAssembly connectors and durable flows",
    long_about = "Integration platform: sandboxed WebAssembly connectors and durable flows.\n\n\
        `switchyard serve` runs the host. Every other command talks to a running host \
        over its API, at --server with --token (or SWITCHYARD_URL and SWITCHYARD_TOKEN)."
)]
pub struct Cli {
    /// URL of a running host.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,

    /// API token (the operator token printed on the host's first start).
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the host: admin API, plugin engine, storage in one process.
    Serve(Box<ServeConfig>),
    /// Manage connector plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage connections: a plugin's credentials and custom properties.
    /// Secret values are stored encrypted and never shown again.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Publish and manage flows ("when TRIGGER then ACTIONS", as JSON or YAML).
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Inspect runs, replay failed ones (the dead-letter list), cancel.
    #[command(subcommand)]
    Run(RunCommand),
    /// Manage buckets: a tenant's file storage.
    #[command(subcommand)]
    Bucket(files::BucketCommand),
    /// Upload, download, list and delete files in buckets.
    #[command(subcommand)]
    File(files::FileCommand),
    /// Record jobs: progress, rejected records, replays; file triggers' ledgers.
    #[command(subcommand)]
    Job(files::JobCommand),
    /// Manage tenants (operator only): each gets its own API token, which sees
    /// only that tenant's connections.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Topics: logs of change records that flows publish and partners read.
    #[command(subcommand)]
    Topic(changes::TopicCommand),
    /// Streams over topics: read, commit, seek, stats.
    #[command(subcommand)]
    Stream(changes::StreamCommand),
    /// Batched, signed webhooks of a topic's changes.
    #[command(subcommand)]
    Subscription(changes::SubscriptionCommand),
    /// Write connector projects from templates, test connectors against
    /// fixtures (no host needed), and watch a project to push development
    /// builds to a host.
    #[command(subcommand)]
    Connector(connector::ConnectorCommand),
    /// Print a shell completion script.
    ///
    /// Example: switchyard completions bash > /etc/bash_completion.d/switchyard
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run one action of a plugin by hand and print its output, logs and
    /// HTTP exchanges.
    ///
    /// Example: switchyard invoke example@0.1.0 echo --input '{"hello":"world"}'
    Invoke {
        /// `key`, `key@1.2.0` (exact) or `key@^1` (newest matching).
        plugin: String,
        /// The action's key (see `switchyard plugin show KEY@VERSION`).
        action: String,
        /// The action's input as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Run with this stored connection (its credentials are added by the host).
        #[arg(long)]
        connection: Option<String>,
        /// Or non-secret connection properties as a JSON object, e.g.
        /// '{"base_url":"https://api.example.com"}'.
        #[arg(long, default_value = "{}")]
        properties: String,
        /// The idempotency key the action gets (default: a new one each
        /// time). Invoke twice with the same key to see what a retried
        /// step does.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum FlowCommand {
    /// Publish a flow file (JSON or YAML): a new version of the flow with the
    /// same name, or a new flow. Pins exact plugin versions.
    Apply { file: PathBuf },
    /// List flows.
    List,
    /// Show a flow with its pinned versions.
    Show { id: String },
    /// List a flow's published versions.
    Versions { id: String },
    /// Move a flow to the newest plugin versions its requirements allow,
    /// after checking they still have its trigger, actions and inputs.
    Upgrade { id: String },
    /// Delete a flow (deactivating it first).
    Delete { id: String },
    /// Activate a flow: a webhook trigger is registered with the third party
    /// and its URL printed; a polling or cron trigger starts its schedule.
    Activate { id: String },
    /// Deactivate a flow: its webhook is unregistered, polls stop.
    Deactivate { id: String },
    /// Show a flow's trigger: webhook URL, or cursor and last poll.
    Trigger { id: String },
    /// Show what the flow's trigger events came to (by path: webhook, poll,
    /// reconcile; dropped as no-op or out of order; coalesced) and the
    /// deliveries its webhook rejected, with the reasons.
    Deliveries { id: String },
    /// Resume a flow paused because it kept firing for one entity (a loop);
    /// the events held while it was paused are cancelled runs to replay.
    Resume { id: String },
    /// Start a run with EVENT (JSON) as the trigger event and wait for its
    /// result (a synchronous flow).
    ///
    /// Example: switchyard flow run flow_ab12 --event '{"id": 7, "status": "packed"}'
    Run {
        id: String,
        #[arg(long, default_value = "{}")]
        event: String,
        /// How long to wait for the result, in ms (0: do not wait).
        #[arg(long, default_value_t = 30_000)]
        wait_ms: u64,
    },
    /// Show the flow's last polls: when, how long, how many events, the
    /// cursor before and after, errors, HTTP exchanges and plugin logs.
    Polls { id: String },
    /// Show the last events the flow's trigger produced (samples for
    /// mappings); with --fetch a polling trigger is asked for some now.
    Samples {
        id: String,
        #[arg(long)]
        fetch: bool,
    },
    /// Run one action step of a flow file against a sample event, without
    /// publishing or creating a run; prints the input, output and HTTP
    /// exchanges.
    ///
    /// Example: switchyard flow test-step flow.yaml --step create --trigger '{"id": 7}'
    TestStep {
        file: PathBuf,
        #[arg(long)]
        step: String,
        /// The trigger event (JSON).
        #[arg(long, default_value = "{}")]
        trigger: String,
        /// Earlier steps' outputs, as a JSON object by step key.
        #[arg(long, default_value = "{}")]
        steps: String,
    },
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// List runs, newest first, a page at a time: when there are more, the
    /// last line says how to see them.
    List {
        #[arg(long)]
        flow: Option<String>,
        /// queued, retrying, paused, succeeded, skipped, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Runs per page (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The runs listed after this one: the cursor the previous page
        /// ended with.
        #[arg(long, value_name = "CURSOR")]
        before: Option<String>,
    },
    /// Show a run: the event, every step's input, output, attempts, errors
    /// and HTTP exchanges.
    Show { id: String },
    /// Run a failed or cancelled run again from the step that failed (same
    /// idempotency keys).
    Replay { id: String },
    /// Replay every failed run (the dead-letter list), or those of one flow.
    ReplayFailed {
        #[arg(long)]
        flow: Option<String>,
    },
    /// Cancel a run that has not finished.
    Cancel { id: String },
}

async fn run_command(client: &Client, command: RunCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let result = match command {
        RunCommand::List {
            flow,
            status,
            limit,
            before,
        } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &limit.to_string());
            for (name, value) in [("flow", flow), ("status", status), ("before", before)] {
                if let Some(value) = value {
                    query.append_pair(name, &value);
                }
            }
            let path = format!("/v1/runs?{}", query.finish());
            let result = client.send(Method::GET, &path, Body::None).await?;
            println!(
                "{:<30} {:<26} {:<10} {:<14} DETAIL",
                "ID", "FLOW", "STATUS", "STEP"
            );
            for r in result["runs"].as_array().into_iter().flatten() {
                let detail = match (r["waiting_until"].as_u64(), r["stopped"].as_str()) {
                    (Some(until), _) => format!("waiting until {}", iso_ms(until)),
                    (_, Some(reason)) => format!("stopped: {reason}"),
                    _ => r["error"]["message"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "{:<30} {:<26} {:<10} {:<14} {}",
                    str_of(&r["id"]),
                    str_of(&r["flow_id"]),
                    str_of(&r["status"]),
                    r["current_step"].as_str().unwrap_or("-"),
                    detail
                );
            }
            if let Some(next) = result["next"].as_str() {
                let shown = result["runs"].as_array().map_or(0, Vec::len);
                println!(
                    "showing {shown} runs, there are older ones: --before {next} for the next \
                     page, or a larger --limit"
                );
            }
            return Ok(());
        }
        RunCommand::Show { id } => {
            client
                .send(Method::GET, &format!("/v1/runs/{id}"), Body::None)
                .await?
        }
        RunCommand::Replay { id } => {
            client
                .send(Method::POST, &format!("/v1/runs/{id}/replay"), Body::None)
                .await?
        }
        RunCommand::ReplayFailed { flow } => replay_failed(client, flow).await?,
        RunCommand::Cancel { id } => {
            client
                .send(Method::POST, &format!("/v1/runs/{id}/cancel"), Body::None)
                .await?
        }
    };
    print_json(&result);
    Ok(())
}

/// Replays the dead-letter list (of one flow) run by run, so that a long one
/// shows its progress: `{"replayed": [ids]}`, as `POST /v1/runs/replay`
/// answers. A run that changed since the listing (replayed by someone else)
/// is skipped, as there.
async fn replay_failed(client: &Client, flow: Option<String>) -> anyhow::Result<Value> {
    use reqwest::Method;
    let mut failed = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", "1000");
        if let Some(flow) = &flow {
            query.append_pair("flow", flow);
        }
        if let Some(before) = &before {
            query.append_pair("before", before);
        }
        let page = client
            .send(
                Method::GET,
                &format!("/v1/dead-letters?{}", query.finish()),
                Body::None,
            )
            .await?;
        let ids = page["runs"].as_array().into_iter().flatten();
        failed.extend(ids.map(|run| str_of(&run["id"])));
        match page["next"].as_str() {
            Some(next) => before = Some(next.to_string()),
            None => break,
        }
    }
    // Oldest first, as the runs failed.
    failed.reverse();
    let bar = progress::items(failed.len() as u64, "replaying");
    let mut replayed = Vec::new();
    for id in failed {
        let path = format!("/v1/runs/{id}/replay");
        match client.send(Method::POST, &path, Body::None).await {
            Ok(_) => replayed.push(id),
            Err(e) => bar.suspend(|| eprintln!("skipped {id}: {e:#}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(json!({ "replayed": replayed }))
}

async fn flow(client: &Client, command: FlowCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let result = match command {
        FlowCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let result = client
                .send(Method::POST, "/v1/flows/apply", Body::Text(text))
                .await?;
            println!(
                "published {} ({}) version {}",
                str_of(&result["spec"]["name"]),
                str_of(&result["id"]),
                result["version"]
            );
            return Ok(());
        }
        FlowCommand::List => {
            let result = client.send(Method::GET, "/v1/flows", Body::None).await?;
            println!("{:<26} {:<8} {:<30} TRIGGER", "ID", "VERSION", "NAME");
            for f in result["flows"].as_array().into_iter().flatten() {
                println!(
                    "{:<26} {:<8} {:<30} {}",
                    str_of(&f["id"]),
                    f["version"],
                    str_of(&f["name"]),
                    str_of(&f["trigger"])
                );
            }
            return Ok(());
        }
        FlowCommand::Show { id } => {
            client
                .send(Method::GET, &format!("/v1/flows/{id}"), Body::None)
                .await?
        }
        FlowCommand::Versions { id } => {
            client
                .send(Method::GET, &format!("/v1/flows/{id}/versions"), Body::None)
                .await?
        }
        FlowCommand::Upgrade { id } => {
            client
                .send(Method::POST, &format!("/v1/flows/{id}/upgrade"), Body::None)
                .await?
        }
        FlowCommand::Activate { id } => {
            client
                .send(
                    Method::POST,
                    &format!("/v1/flows/{id}/activate"),
                    Body::None,
                )
                .await?
        }
        FlowCommand::Deactivate { id } => {
            client
                .send(
                    Method::POST,
                    &format!("/v1/flows/{id}/deactivate"),
                    Body::None,
                )
                .await?
        }
        FlowCommand::Resume { id } => {
            client
                .send(Method::POST, &format!("/v1/flows/{id}/resume"), Body::None)
                .await?
        }
        FlowCommand::Trigger { id } => {
            client
                .send(Method::GET, &format!("/v1/flows/{id}/trigger"), Body::None)
                .await?
        }
        FlowCommand::Deliveries { id } => {
            client
                .send(
                    Method::GET,
                    &format!("/v1/flows/{id}/deliveries"),
                    Body::None,
                )
                .await?
        }
        FlowCommand::Run { id, event, wait_ms } => {
            let event: Value = serde_json::from_str(&event).context("--event must be JSON")?;
            client
                .send(
                    Method::POST,
                    &format!("/v1/flows/{id}/run?wait_ms={wait_ms}"),
                    Body::Json(event),
                )
                .await?
        }
        FlowCommand::Polls { id } => {
            client
                .send(Method::GET, &format!("/v1/flows/{id}/polls"), Body::None)
                .await?
        }
        FlowCommand::Samples { id, fetch } => {
            client
                .send(
                    Method::GET,
                    &format!("/v1/flows/{id}/samples?fetch={fetch}"),
                    Body::None,
                )
                .await?
        }
        FlowCommand::TestStep {
            file,
            step,
            trigger,
            steps,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let flow = crate::flows::FlowSpec::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let trigger: Value =
                serde_json::from_str(&trigger).context("--trigger must be JSON")?;
            let steps: Value =
                serde_json::from_str(&steps).context("--steps must be a JSON object")?;
            client
                .send(
                    Method::POST,
                    "/v1/flows/test-step",
                    Body::Json(serde_json::json!({
                        "flow": flow,
                        "step": step,
                        "trigger": trigger,
                        "steps": steps,
                    })),
                )
                .await?
        }
        FlowCommand::Delete { id } => {
            client
                .send(Method::DELETE, &format!("/v1/flows/{id}"), Body::None)
                .await?;
            println!("deleted {id}");
            return Ok(());
        }
    };
    print_json(&result);
    Ok(())
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its API token (shown only once).
    Create { name: String },
    /// List tenants.
    List,
    /// Replace a tenant's token; the old one stops working.
    RotateToken { id: String },
    /// Delete a tenant (its token stops working).
    Delete { id: String },
}

async fn tenant(client: &Client, command: TenantCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        TenantCommand::Create { name } => {
            let result = client
                .send(
                    Method::POST,
                    "/v1/tenants",
                    Body::Json(json!({"name": name})),
                )
                .await?;
            println!(
                "created tenant {} ({})",
                str_of(&result["tenant"]["id"]),
                str_of(&result["tenant"]["name"])
            );
            println!(
                "its API token (shown only this once): {}",
                str_of(&result["token"])
            );
        }
        TenantCommand::List => {
            let result = client.send(Method::GET, "/v1/tenants", Body::None).await?;
            println!("{:<22} NAME", "ID");
            for t in result["tenants"].as_array().into_iter().flatten() {
                println!("{:<22} {}", str_of(&t["id"]), str_of(&t["name"]));
            }
        }
        TenantCommand::RotateToken { id } => {
            let result = client
                .send(Method::POST, &format!("/v1/tenants/{id}/token"), Body::None)
                .await?;
            println!(
                "new API token for {id} (shown only this once): {}",
                str_of(&result["token"])
            );
        }
        TenantCommand::Delete { id } => {
            client
                .send(Method::DELETE, &format!("/v1/tenants/{id}"), Body::None)
                .await?;
            println!("deleted tenant {id}");
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum ConnectionCommand {
    /// Create a connection for the newest version of PLUGIN.
    ///
    /// Example: switchyard connection create example --name "Acme" \
    ///   --set base_url=https://api.acme.test --set api_key=sk_live_...
    Create {
        /// Plugin key.
        plugin: String,
        #[arg(long)]
        name: Option<String>,
        /// A property as text: KEY=VALUE (repeat).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A property as JSON: KEY=JSON, e.g. location_id=42 (repeat).
        #[arg(long = "set-json", value_name = "KEY=JSON")]
        set_json: Vec<String>,
    },
    /// List connections (secrets redacted).
    List,
    /// Show one connection (secrets redacted).
    Show { id: String },
    /// Change a connection's name or properties.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "set-json", value_name = "KEY=JSON")]
        set_json: Vec<String>,
        /// Remove a property (repeat).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Delete a connection.
    Delete { id: String },
    /// Run the plugin's test-connection check with this connection.
    Test { id: String },
    /// Start the OAuth authorization code flow; prints the URL to open.
    Authorize { id: String },
    /// Mark a paused connection active again (after fixing its credentials)
    /// and queue the runs that waited for it.
    Resume { id: String },
}

/// Builds a properties object from --set, --set-json and --unset.
fn properties_from(set: &[String], set_json: &[String], unset: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for item in set {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("`{item}`: give KEY=VALUE"))?;
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    for item in set_json {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("`{item}`: give KEY=JSON"))?;
        let value = serde_json::from_str(v).with_context(|| format!("`{k}`: not valid JSON"))?;
        map.insert(k.to_string(), value);
    }
    for k in unset {
        map.insert(k.clone(), Value::Null);
    }
    Ok(Value::Object(map))
}

async fn connection(client: &Client, command: ConnectionCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let result = match command {
        ConnectionCommand::Create {
            plugin,
            name,
            set,
            set_json,
        } => {
            let properties = properties_from(&set, &set_json, &[])?;
            let body = json!({"plugin": plugin, "name": name.unwrap_or_default(), "properties": properties});
            client
                .send(Method::POST, "/v1/connections", Body::Json(body))
                .await?
        }
        ConnectionCommand::List => {
            let result = client
                .send(Method::GET, "/v1/connections", Body::None)
                .await?;
            println!("{:<30} {:<20} {:<10} NAME", "ID", "PLUGIN", "STATUS");
            for c in result["connections"].as_array().into_iter().flatten() {
                println!(
                    "{:<30} {:<20} {:<10} {}",
                    str_of(&c["id"]),
                    str_of(&c["plugin"]),
                    str_of(&c["status"]["state"]),
                    str_of(&c["name"])
                );
            }
            return Ok(());
        }
        ConnectionCommand::Show { id } => {
            client
                .send(Method::GET, &format!("/v1/connections/{id}"), Body::None)
                .await?
        }
        ConnectionCommand::Update {
            id,
            name,
            set,
            set_json,
            unset,
        } => {
            let properties = properties_from(&set, &set_json, &unset)?;
            client
                .send(
                    Method::PATCH,
                    &format!("/v1/connections/{id}"),
                    Body::Json(json!({"name": name, "properties": properties})),
                )
                .await?
        }
        ConnectionCommand::Delete { id } => {
            client
                .send(Method::DELETE, &format!("/v1/connections/{id}"), Body::None)
                .await?;
            println!("deleted {id}");
            return Ok(());
        }
        ConnectionCommand::Resume { id } => {
            client
                .send(
                    Method::POST,
                    &format!("/v1/connections/{id}/resume"),
                    Body::None,
                )
                .await?
        }
        ConnectionCommand::Test { id } => {
            let result = client
                .send(
                    Method::POST,
                    &format!("/v1/connections/{id}/test"),
                    Body::None,
                )
                .await?;
            print_json(&result);
            if result["ok"] != json!(true) {
                bail!("the connection test failed: {}", result["error"]);
            }
            return Ok(());
        }
        ConnectionCommand::Authorize { id } => {
            let result = client
                .send(
                    Method::POST,
                    &format!("/v1/connections/{id}/oauth/authorize"),
                    Body::None,
                )
                .await?;
            println!(
                "Open this URL to authorize the connection:\n  {}",
                str_of(&result["authorize_url"])
            );
            return Ok(());
        }
    };
    print_json(&result);
    Ok(())
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Upload a component (.wasm), a declarative spec (.yaml, .yml, .json)
    /// or the declarative interpreter. Re-uploading identical bytes is a
    /// no-op; a refused spec lists every problem with its line.
    Push {
        file: PathBuf,
        /// Refuse the upload unless the manifest declares this version.
        #[arg(long)]
        version: Option<String>,
    },
    /// List every version of every plugin.
    List,
    /// Show one version's manifest (KEY@VERSION), or a plugin's versions (KEY).
    Show { plugin: String },
    /// Mark a version deprecated: flows keep it, new resolutions skip it.
    Deprecate {
        plugin: String,
        /// Undo a deprecation.
        #[arg(long)]
        undo: bool,
    },
    /// Delete a version (refused while a flow uses it).
    Delete { plugin: String },
    /// Manage a version's environment variables (copied to its next version).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Run one operation of an unpublished spec against real data, with caps:
    /// prints each page's request and response (secrets cut out), the
    /// records or output, and a JSON Schema inferred from them.
    ///
    /// Example: switchyard plugin test shop.yaml --connection conn_... \
    ///   --trigger order-updated --params '{}' --pages 2
    Test {
        /// The spec (YAML or JSON).
        file: PathBuf,
        /// A stored connection of the spec's key.
        #[arg(long)]
        connection: Option<String>,
        /// Or a property for this test only, secrets included (repeat).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A property as JSON (repeat).
        #[arg(long = "set-json", value_name = "KEY=JSON")]
        set_json: Vec<String>,
        /// The action to run...
        #[arg(long, conflicts_with = "trigger")]
        action: Option<String>,
        /// ...with this input (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Or the trigger to poll (or to hand `--delivery`).
        #[arg(long)]
        trigger: Option<String>,
        /// Its params (JSON).
        #[arg(long, default_value = "{}")]
        params: String,
        /// Poll from this cursor (from the beginning without one).
        #[arg(long)]
        cursor: Option<String>,
        /// A webhook delivery: JSON `{"headers": {...}, "body": ...}`.
        #[arg(long)]
        delivery: Option<String>,
        /// Pages the test may read.
        #[arg(long, default_value_t = 5)]
        pages: u32,
        /// Records the test may collect.
        #[arg(long, default_value_t = 100)]
        records: u32,
        /// Time the test may take, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum EnvCommand {
    /// List the variables of KEY@VERSION.
    List { plugin: String },
    /// Set NAME=VALUE on KEY@VERSION.
    Set {
        plugin: String,
        /// NAME=VALUE; with --secret, NAME alone reads the value from stdin
        /// (so it stays out of the shell history).
        assignment: String,
        /// Keep the value sealed and write-only, for the host's auth only
        /// (an app's CLIENT_SECRET, a PARTNER_KEY); plugin code never sees it.
        #[arg(long)]
        secret: bool,
    },
    /// Remove NAME from KEY@VERSION.
    Unset { plugin: String, name: String },
}

pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Plugin(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            plugin(&client, command).await
        }
        Command::Flow(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            flow(&client, command).await
        }
        Command::Run(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            run_command(&client, command).await
        }
        Command::Tenant(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            tenant(&client, command).await
        }
        Command::Bucket(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            files::bucket(&client, command).await
        }
        Command::File(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            files::file(&client, command).await
        }
        Command::Connector(command) => connector::connector(command, &cli.server, cli.token).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "switchyard",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Job(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            files::job(&client, command).await
        }
        Command::Topic(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            changes::topic(&client, command).await
        }
        Command::Stream(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            changes::stream(&client, command).await
        }
        Command::Subscription(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            changes::subscription(&client, command).await
        }
        Command::Connection(command) => {
            let client = Client::new(&cli.server, cli.token)?;
            connection(&client, command).await
        }
        Command::Invoke {
            plugin,
            action,
            input,
            connection,
            properties,
            idempotency_key,
        } => {
            let client = Client::new(&cli.server, cli.token)?;
            let input: Value = serde_json::from_str(&input).context("--input is not valid JSON")?;
            let properties: Value =
                serde_json::from_str(&properties).context("--properties is not valid JSON")?;
            let result = client
                .send(
                    reqwest::Method::POST,
                    "/v1/invoke",
                    Body::Json(json!({
                        "plugin": plugin,
                        "action": action,
                        "input": input,
                        "connection": connection,
                        "properties": properties,
                        "idempotency_key": idempotency_key,
                    })),
                )
                .await?;
            print_json(&result);
            if result.get("error").is_some_and(|e| !e.is_null()) {
                bail!("the action failed: {}", result["error"]);
            }
            Ok(())
        }
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let (app, new_token) = App::open(config).await?;
    if let Some(token) = new_token {
        println!("Generated the operator token (shown only this once; only its hash is stored):");
        println!("  export SWITCHYARD_TOKEN={token}");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("switchyard listening on http://{}", listener.local_addr()?);
    app.feeds
        .set_base_url(&format!("http://{}", listener.local_addr()?));
    std::io::stdout().flush().ok();
    app.start();
    // The peer's address is what the public endpoints' rate limits key on.
    let service = app
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the API")?;
    app.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn split_ref(plugin: &str) -> anyhow::Result<(&str, &str)> {
    plugin
        .split_once('@')
        .with_context(|| format!("`{plugin}`: give KEY@VERSION, e.g. example@0.1.0"))
}

async fn plugin(client: &Client, command: PluginCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        PluginCommand::Push { file, version } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = match version {
                Some(v) => format!("/v1/plugins?version={v}"),
                None => "/v1/plugins".to_string(),
            };
            let body = if bytes.starts_with(b"\0asm") {
                Body::Bytes(bytes)
            } else {
                Body::Text(String::from_utf8(bytes).with_context(|| {
                    format!("{} is neither a component nor a text spec", file.display())
                })?)
            };
            let result = client.send(Method::POST, &path, body).await?;
            if let Some(i) = result.get("interpreter") {
                let verb = if result["created"] == json!(true) {
                    "uploaded"
                } else {
                    "already registered:"
                };
                println!(
                    "{verb} the declarative interpreter {} (sha256 {})",
                    str_of(&i["version"]),
                    str_of(&i["sha256"])
                );
                return Ok(());
            }
            let p = &result["plugin"];
            let verb = if result["created"] == json!(true) {
                "uploaded"
            } else {
                "already registered:"
            };
            println!(
                "{verb} {}@{} (sha256 {})",
                str_of(&p["key"]),
                str_of(&p["version"]),
                str_of(&p["sha256"])
            );
        }
        PluginCommand::Test {
            file,
            connection,
            set,
            set_json,
            action,
            input,
            trigger,
            params,
            cursor,
            delivery,
            pages,
            records,
            timeout_ms,
        } => {
            let spec = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let json_arg = |text: &str, what: &str| -> anyhow::Result<Value> {
                serde_json::from_str(text).with_context(|| format!("--{what} is not valid JSON"))
            };
            let mut body = json!({
                "spec": spec,
                "connection": connection,
                "properties": properties_from(&set, &set_json, &[])?,
                "action": action,
                "input": json_arg(&input, "input")?,
                "trigger": trigger,
                "params": json_arg(&params, "params")?,
                "cursor": cursor,
                "limits": {"pages": pages, "records": records, "time_ms": timeout_ms},
            });
            if let Some(delivery) = delivery {
                body["delivery"] = json_arg(&delivery, "delivery")?;
            }
            let result = client
                .send(Method::POST, "/v1/plugins/test", Body::Json(body))
                .await?;
            print_json(&result);
        }
        PluginCommand::List => {
            let result = client.send(Method::GET, "/v1/plugins", Body::None).await?;
            println!(
                "{:<24} {:<14} {:<11} ACTIONS / TRIGGERS",
                "KEY", "VERSION", "STATUS"
            );
            for p in result["plugins"].as_array().into_iter().flatten() {
                let status = if p["deprecated"] == json!(true) {
                    "deprecated"
                } else {
                    "active"
                };
                let names = |v: &Value| {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .map(str_of)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "{:<24} {:<14} {:<11} {} / {}",
                    str_of(&p["key"]),
                    str_of(&p["version"]),
                    status,
                    names(&p["actions"]),
                    names(&p["triggers"])
                );
            }
        }
        PluginCommand::Show { plugin } => {
            let path = match plugin.split_once('@') {
                Some((key, version)) => format!("/v1/plugins/{key}/{version}"),
                None => format!("/v1/plugins/{plugin}"),
            };
            print_json(&client.send(Method::GET, &path, Body::None).await?);
        }
        PluginCommand::Deprecate { plugin, undo } => {
            let (key, version) = split_ref(&plugin)?;
            client
                .send(
                    Method::POST,
                    &format!("/v1/plugins/{key}/{version}/deprecate"),
                    Body::Json(json!({"deprecated": !undo})),
                )
                .await?;
            println!(
                "{plugin} {}",
                if undo {
                    "is active again"
                } else {
                    "is deprecated"
                }
            );
        }
        PluginCommand::Delete { plugin } => {
            let (key, version) = split_ref(&plugin)?;
            client
                .send(
                    Method::DELETE,
                    &format!("/v1/plugins/{key}/{version}"),
                    Body::None,
                )
                .await?;
            println!("deleted {plugin}");
        }
        PluginCommand::Env(env) => {
            let result = match env {
                EnvCommand::List { plugin } => {
                    let (key, version) = split_ref(&plugin)?;
                    client
                        .send(
                            Method::GET,
                            &format!("/v1/plugins/{key}/{version}/env"),
                            Body::None,
                        )
                        .await?
                }
                EnvCommand::Set {
                    plugin,
                    assignment,
                    secret,
                } => {
                    let (key, version) = split_ref(&plugin)?;
                    let (name, value) = match assignment.split_once('=') {
                        Some((name, value)) => (name.to_string(), value.to_string()),
                        None if secret => (assignment.clone(), read_secret_value(&assignment)?),
                        None => anyhow::bail!("`{assignment}`: give NAME=VALUE"),
                    };
                    client
                        .send(
                            Method::PUT,
                            &format!("/v1/plugins/{key}/{version}/env/{name}"),
                            Body::Json(json!({"value": value, "secret": secret})),
                        )
                        .await?
                }
                EnvCommand::Unset { plugin, name } => {
                    let (key, version) = split_ref(&plugin)?;
                    client
                        .send(
                            Method::DELETE,
                            &format!("/v1/plugins/{key}/{version}/env/{name}"),
                            Body::None,
                        )
                        .await?
                }
            };
            for (name, value) in result["env"].as_object().into_iter().flatten() {
                println!("{name}={}", str_of(value));
            }
        }
    }
    Ok(())
}

/// One line of stdin, without its line break: a secret's value.
fn read_secret_value(name: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("reading the value of {name} from stdin"))?;
    let value = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!value.is_empty(), "no value for {name} on stdin");
    Ok(value.to_string())
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
    Text(String),
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        Ok(Client {
            http: reqwest::Client::builder().no_proxy().build()?,
            base: server.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Body) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(v) => request.json(&v),
            Body::Bytes(b) => request
                .header("content-type", "application/wasm")
                .body(upload_body(b)),
            Body::Text(t) => request
                .header("content-type", "text/plain; charset=utf-8")
                .body(t),
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the host at {} (is `switchyard serve` running?)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await.context("reading the host's answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!("{message} (set --token or SWITCHYARD_TOKEN)");
            }
            bail!("{message} (HTTP {status})");
        }
        Ok(value)
    }
}

/// The bytes to upload; on a terminal and when large, sent in chunks that
/// move a progress bar (the bar is done when the last chunk is handed over).
fn upload_body(bytes: Vec<u8>) -> reqwest::Body {
    if bytes.len() < progress::UPLOAD_BAR_BYTES || !progress::on_terminal() {
        return bytes.into();
    }
    let bar = progress::bytes(bytes.len() as u64, "uploading");
    let bytes = bytes::Bytes::from(bytes);
    let chunks: Vec<bytes::Bytes> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|start| bytes.slice(start..(start + 64 * 1024).min(bytes.len())))
        .collect();
    let total = chunks.len();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks.into_iter().enumerate().map(
        move |(i, chunk)| {
            bar.inc(chunk.len() as u64);
            if i + 1 == total {
                bar.finish_and_clear();
            }
            Ok::<_, std::io::Error>(chunk)
        },
    )))
}

/// Milliseconds since the epoch as an RFC 3339 time.
fn iso_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
