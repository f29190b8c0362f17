//! The one call path into plugins. Every call of a step, a poll, a webhook,
//! a subscription, a connection test or a hand-made invocation is prepared
//! here (the pinned plugin version, the tenant's connection, what the call
//! may reach, its credentials, the guest's context) and finished here (call
//! latency recorded; an auth error pauses the connection). A paused
//! connection refuses the calls that would only fail again and lock the
//! account: steps and polls.
//!
//! Also here: the custom API call of a component (`custom.rs`, made by the
//! host through the same sandbox), and the live test of an unpublished
//! declarative spec (`draft.rs`).

mod custom;
mod draft;
mod hosts;

pub use draft::{DraftDelivery, DraftLimits, DraftTest};

use std::{collections::BTreeMap, sync::Arc};

use rand::RngCore;
use semver::Version;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    connections::{ConnectionRecord, ConnectionStatus, Connections, as_text, texts},
    engine::{
        CallEnv, CallError, CallOutcome, ConnectorError, GuestConnection, GuestContext, Journal,
        PollOutput, WebhookInput, WebhookOutput,
    },
    error::ServiceError,
    manifest::CUSTOM_API_CALL,
    metrics::Metrics,
    registry::{PluginKind, PluginVersion, Registry, parse_plugin_ref},
    sandbox::{
        HttpSandbox, Outbound,
        auth::{AuthState, Credentials, PersistState, VersionEnv},
        policy::HostPattern,
    },
    schema::check_against,
};

/// Why a call is made: decides whether a paused connection refuses it and
/// whether an auth error pauses the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A step of a flow's run.
    Step { run: String, step: String },
    /// A poll of a flow's trigger.
    Poll { flow: String, trigger: String },
    /// Anything else: handling a webhook (a bad signature is not the
    /// connection's fault), subscribing, testing a connection, invoking by
    /// hand. Runs on a paused connection and never pauses it.
    Other,
}

impl Purpose {
    /// What the call was doing, for a pause reason; `None` when an auth
    /// error must not pause the connection.
    fn doing(&self) -> Option<String> {
        match self {
            Purpose::Step { run, step } => Some(format!("step `{step}` of run `{run}`")),
            Purpose::Poll { flow, trigger } => {
                Some(format!("polling `{trigger}` of flow `{flow}`"))
            }
            Purpose::Other => None,
        }
    }
}

/// The plugin version a call goes to, and for whom.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub tenant: &'a str,
    /// The plugin key.
    pub plugin: &'a str,
    /// The exact (pinned) version.
    pub version: &'a Version,
    pub connection: Option<&'a str>,
}

/// Why a call was not made.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The plugin version cannot be found or loaded.
    #[error("{0}")]
    Plugin(ServiceError),
    /// The connection cannot be found, opened or used with this plugin.
    #[error("{0}")]
    Connection(ServiceError),
    /// The connection is paused (an earlier auth error) until resumed.
    #[error("connection `{connection}` is paused ({reason})")]
    Paused { connection: String, reason: String },
}

impl From<Refused> for ServiceError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Plugin(e) | Refused::Connection(e) => e,
            paused @ Refused::Paused { .. } => ServiceError::State(paused.to_string()),
        }
    }
}

/// Where a call's connection comes from.
enum Source<'a> {
    /// A stored connection.
    Stored(&'a ConnectionRecord),
    /// Non-secret properties for one call (a hand-made invocation).
    Adhoc(BTreeMap<String, Value>),
    /// Every property, secret ones included, for one call (a live test of
    /// a spec that has no connection yet); never stored.
    Inline(BTreeMap<String, Value>),
}

/// A call ready to be made.
pub struct Call {
    pub plugin: PluginVersion,
    pub connection: Option<Arc<ConnectionRecord>>,
    purpose: Purpose,
    env: CallEnv,
    ctx: GuestContext,
}

impl Call {
    /// The id the call's logs and the guest's context carry.
    pub fn trace_id(&self) -> &str {
        &self.ctx.trace_id
    }
}

/// One action to run by hand: `plugin` is `key`, `key@1.2.0` or `key@^1`;
/// a stored `connection`, or ad-hoc non-secret `properties`; the
/// `idempotency_key` the action gets (a new one when `None`).
#[derive(Debug)]
pub struct InvokeRequest {
    pub plugin: String,
    pub action: String,
    pub input: Value,
    pub connection: Option<String>,
    pub properties: BTreeMap<String, Value>,
    pub idempotency_key: Option<String>,
}

/// The outcome of running one action by hand.
#[derive(Debug, Serialize)]
pub struct Invocation {
    pub plugin: String,
    pub action: String,
    /// The key the action got: the one asked for, or the generated one.
    pub idempotency_key: String,
    pub output: Option<Value>,
    pub error: Option<CallError>,
    pub duration_ms: f64,
    pub journal: Journal,
}

pub struct Calls {
    registry: Arc<Registry>,
    connections: Arc<Connections>,
    sandbox: HttpSandbox,
    metrics: Arc<Metrics>,
    hosts: hosts::ParsedHosts,
}

impl Calls {
    pub fn new(
        registry: Arc<Registry>,
        connections: Arc<Connections>,
        sandbox: HttpSandbox,
        metrics: Arc<Metrics>,
    ) -> Self {
        Calls {
            registry,
            connections,
            sandbox,
            metrics,
            hosts: hosts::ParsedHosts::default(),
        }
    }

    /// Prepares a call of a pinned plugin version with a tenant's connection.
    pub fn prepare(
        &self,
        target: Target<'_>,
        purpose: Purpose,
        trace_id: String,
    ) -> Result<Call, Refused> {
        let plugin = self
            .registry
            .get(target.plugin, target.version)
            .map_err(Refused::Plugin)?;
        let connection = target
            .connection
            .map(|id| self.connections.current(target.tenant, id))
            .transpose()
            .map_err(Refused::Connection)?;
        self.prepare_for(plugin, connection, BTreeMap::new(), purpose, trace_id)
    }

    /// Prepares a call of the newest version of `plugin` that satisfies
    /// `req` (a draft's step, not yet pinned).
    pub fn prepare_ref(
        &self,
        tenant: &str,
        plugin: &str,
        req: &semver::VersionReq,
        connection: Option<&str>,
        purpose: Purpose,
        trace_id: String,
    ) -> Result<Call, ServiceError> {
        let plugin = self.registry.resolved(plugin, req)?;
        let connection = connection
            .map(|id| self.connections.current(tenant, id))
            .transpose()?;
        Ok(self.prepare_for(plugin, connection, BTreeMap::new(), purpose, trace_id)?)
    }

    /// Prepares a call of `plugin` with a connection, or with ad-hoc
    /// non-secret properties (a hand-made invocation without one).
    pub fn prepare_for(
        &self,
        plugin: PluginVersion,
        connection: Option<Arc<ConnectionRecord>>,
        adhoc: BTreeMap<String, Value>,
        purpose: Purpose,
        trace_id: String,
    ) -> Result<Call, Refused> {
        if let (Some(c), Some(_)) = (&connection, purpose.doing())
            && let ConnectionStatus::Paused { reason } = &c.status
        {
            return Err(Refused::Paused {
                connection: c.id.clone(),
                reason: reason.clone(),
            });
        }
        let source = match &connection {
            Some(c) => Source::Stored(c),
            None => Source::Adhoc(adhoc),
        };
        let (env, ctx) = self
            .setup(&plugin, source, trace_id)
            .map_err(Refused::Connection)?;
        Ok(Call {
            plugin,
            connection,
            purpose,
            env,
            ctx,
        })
    }

    pub async fn test_connection(&self, call: Call) -> CallOutcome<()> {
        let Call {
            plugin,
            connection,
            purpose,
            env,
            ctx,
        } = call;
        let outcome = plugin.connector.test_connection(env, ctx).await;
        self.finish(
            &plugin,
            connection.as_deref(),
            &purpose,
            "test_connection",
            &outcome,
        );
        outcome
    }

    pub async fn perform(
        &self,
        call: Call,
        action: &str,
        input: &str,
        idempotency_key: &str,
    ) -> CallOutcome<String> {
        let Call {
            plugin,
            connection,
            purpose,
            env,
            ctx,
        } = call;
        // A component has no custom API call of its own: the host makes it,
        // through the same sandbox, credentials and limits.
        let outcome = if action == CUSTOM_API_CALL && plugin.record.kind == PluginKind::Component {
            let timeout = env.timeout.unwrap_or(self.sandbox.config().request_timeout);
            custom::call(env, input, timeout).await
        } else {
            plugin
                .connector
                .perform(env, ctx, action, input, idempotency_key)
                .await
        };
        self.finish(
            &plugin,
            connection.as_deref(),
            &purpose,
            "perform",
            &outcome,
        );
        outcome
    }

    pub async fn poll(
        &self,
        call: Call,
        trigger: &str,
        params: &str,
        cursor: Option<&str>,
    ) -> CallOutcome<PollOutput> {
        let Call {
            plugin,
            connection,
            purpose,
            env,
            ctx,
        } = call;
        let outcome = plugin
            .connector
            .poll(env, ctx, trigger, params, cursor)
            .await;
        self.finish(&plugin, connection.as_deref(), &purpose, "poll", &outcome);
        outcome
    }

    pub async fn subscribe(
        &self,
        call: Call,
        trigger: &str,
        params: &str,
        target_url: &str,
    ) -> CallOutcome<String> {
        let Call {
            plugin,
            connection,
            purpose,
            env,
            ctx,
        } = call;
        let outcome = plugin
            .connector
            .subscribe(env, ctx, trigger, params, target_url)
            .await;
        self.finish(
            &plugin,
            connection.as_deref(),
            &purpose,
            "subscribe",
            &outcome,
        );
        outcome
    }

    pub async fn unsubscribe(
        &self,
        call: Call,
        trigger: &str,
        params: &str,
        state: &str,
    ) -> CallOutcome<()> {
        let Call {
            plugin,
            connection,
            purpose,
            env,
            ctx,
        } = call;
        let outcome = plugin
            .connector
            .unsubscribe(env, ctx, trigger, params, state)
            .await;
        self.finish(
            &plugin,
            connection.as_deref(),
            &purpose,
            "unsubscribe",
            &outcome,
        );
        outcome
    }

    pub async fn handle_webhook(
        &self,
        call: Call,
        trigger: &str,
        params: &str,
        request: WebhookInput,
    ) -> CallOutcome<WebhookOutput> {
        let Call {
            plugin,
            connection,
            purpose,
            env,
            ctx,
        } = call;
        let outcome = plugin
            .connector
            .handle_webhook(env, ctx, trigger, params, request)
            .await;
        self.finish(
            &plugin,
            connection.as_deref(),
            &purpose,
            "handle_webhook",
            &outcome,
        );
        outcome
    }

    /// What every call does when it returns: its latency is recorded, and
    /// an auth error of a step or poll pauses the connection (once: a
    /// connection already paused keeps its first reason).
    fn finish<T>(
        &self,
        plugin: &PluginVersion,
        connection: Option<&ConnectionRecord>,
        purpose: &Purpose,
        function: &str,
        outcome: &CallOutcome<T>,
    ) {
        self.metrics.call(
            &self.metrics.plugin_call_latency,
            &plugin.record.key,
            function,
            outcome.duration.as_secs_f64(),
        );
        let Err(
            error @ CallError::Connector {
                error: ConnectorError::Auth { .. },
            },
        ) = &outcome.result
        else {
            return;
        };
        let (Some(connection), Some(doing)) = (connection, purpose.doing()) else {
            return;
        };
        let reason = format!("{doing}: {error}");
        match self
            .connections
            .pause(&connection.tenant, &connection.id, &reason)
        {
            Ok(true) => tracing::warn!(
                connection = %connection.id,
                "connection paused after an auth error: {reason}"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(connection = %connection.id, "cannot pause the connection: {e}")
            }
        }
    }

    /// Runs the plugin's `test-connection` through the sandbox.
    pub async fn check_connection(&self, tenant: &str, id: &str) -> Result<Value, ServiceError> {
        let record = self.connections.get(tenant, id)?;
        let plugin = self.connections.plugin_for(&record)?;
        let name = plugin.name();
        let call = self.prepare_for(
            plugin,
            Some(Arc::new(record)),
            BTreeMap::new(),
            Purpose::Other,
            trace_id("test"),
        )?;
        let outcome = self.test_connection(call).await;
        Ok(json!({
            "ok": outcome.result.is_ok(),
            "plugin": name,
            "error": outcome.result.err(),
            "journal": outcome.journal,
            "duration_ms": outcome.duration.as_secs_f64() * 1e3,
        }))
    }

    /// Runs one action of a plugin by hand (`switchyard invoke`), with a
    /// stored connection or with ad-hoc non-secret properties. The input is
    /// checked against the action's schema before the plugin runs.
    pub async fn invoke(
        &self,
        tenant: &str,
        request: InvokeRequest,
    ) -> Result<Invocation, ServiceError> {
        let InvokeRequest {
            plugin: plugin_ref,
            action,
            input,
            connection,
            properties,
            idempotency_key,
        } = request;
        let action = action.as_str();
        let (key, req) = parse_plugin_ref(&plugin_ref)?;
        let plugin = self.registry.resolved(&key, &req)?;
        let name = plugin.name();
        let manifest = &plugin.record.manifest;
        let Some(spec) = manifest.actions.iter().find(|a| a.key == action) else {
            let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
            return Err(ServiceError::BadRequest(format!(
                "{name} has no action `{action}` (it has: {})",
                known.join(", ")
            )));
        };
        check_against(
            &spec.input_schema,
            &input,
            &format!("input of {name} action `{action}`"),
        )?;
        if idempotency_key.as_deref().is_some_and(str::is_empty) {
            return Err(ServiceError::BadRequest(
                "the idempotency key must not be empty".into(),
            ));
        }
        let connection = connection
            .map(|id| self.connections.current(tenant, &id))
            .transpose()?;
        let call = self.prepare_for(
            plugin,
            connection,
            properties,
            Purpose::Other,
            trace_id("invoke"),
        )?;
        // An author retrying an action by hand gives the key a retried step
        // would repeat; otherwise every invocation is a new operation.
        let idempotency_key = idempotency_key.unwrap_or_else(|| call.trace_id().to_string());
        let outcome = self
            .perform(call, action, &input.to_string(), &idempotency_key)
            .await;
        let (output, error) = match outcome.result.and_then(parse_output) {
            Ok(value) => (Some(value), None),
            Err(e) => (None, Some(e)),
        };
        Ok(Invocation {
            plugin: name,
            action: action.to_string(),
            idempotency_key,
            output,
            error,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            journal: outcome.journal,
        })
    }

    /// What a host-run sign-in (the OAuth flow) uses: the connection's
    /// credentials as a call would hold them (the version's own client when
    /// the connection has none), and the hosts the plugin may reach.
    pub fn credentials_for(
        &self,
        plugin: &PluginVersion,
        connection: &ConnectionRecord,
    ) -> Result<(Outbound, Arc<Credentials>), ServiceError> {
        let (env, _) = self.setup(plugin, Source::Stored(connection), trace_id("oauth"))?;
        let outbound = env.outbound.ok_or_else(|| {
            ServiceError::Internal("a call with a connection has no way out".into())
        })?;
        let credentials = outbound.credentials.clone().ok_or_else(|| {
            ServiceError::Internal("a call with a connection has no credentials".into())
        })?;
        Ok((outbound, credentials))
    }

    /// Everything a call of `plugin` needs: what it may reach, the
    /// connection's credentials (kept by the host) and the guest's context
    /// (non-secret properties and environment variables only).
    fn setup(
        &self,
        plugin: &PluginVersion,
        source: Source<'_>,
        trace_id: String,
    ) -> Result<(CallEnv, GuestContext), ServiceError> {
        let manifest = &plugin.record.manifest;
        let connection = match &source {
            Source::Stored(c) => Some(*c),
            _ => None,
        };
        let inline = matches!(source, Source::Inline(_));
        let (plain, secrets, connection_id) = match source {
            Source::Inline(all) => {
                let (secret, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
                    all.into_iter().partition(|(k, _)| {
                        manifest
                            .connection_properties
                            .iter()
                            .any(|p| p.secret && p.key == *k)
                    });
                (
                    plain,
                    Arc::new(secret),
                    format!("draft-{:016x}", rand::rng().next_u64()),
                )
            }
            Source::Stored(c) => {
                if c.plugin != manifest.key {
                    return Err(ServiceError::BadRequest(format!(
                        "connection `{}` belongs to plugin `{}`, not `{}`",
                        c.id, c.plugin, manifest.key
                    )));
                }
                (
                    c.properties.clone(),
                    self.connections.secrets(c)?,
                    c.id.clone(),
                )
            }
            Source::Adhoc(adhoc_properties) => {
                if let Some(secret) = manifest
                    .connection_properties
                    .iter()
                    .find(|p| p.secret && adhoc_properties.contains_key(&p.key))
                {
                    return Err(ServiceError::BadRequest(format!(
                        "property `{}` is secret: create a connection for it instead of passing it here",
                        secret.key
                    )));
                }
                (adhoc_properties, Arc::default(), String::new())
            }
        };
        let parse = || -> Vec<HostPattern> {
            manifest
                .allowed_hosts
                .iter()
                .filter_map(|pattern| match HostPattern::parse(pattern, &plain) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::debug!(plugin = %manifest.key, "allowed host left out: {e}");
                        None
                    }
                })
                .collect()
        };
        // A stored connection's are kept for its next calls.
        let allowed: Arc<[HostPattern]> = match connection {
            Some(c) => self
                .hosts
                .get(&c.id, &manifest.allowed_hosts, &plain, parse),
            None => parse().into(),
        };
        // The version's secret variables serve the host's auth only.
        let secret_env = if connection.is_some() || inline {
            self.registry.secret_env(&plugin.record)?
        } else {
            BTreeMap::new()
        };
        // Tokens a stored connection obtains are kept with it; a live
        // test's (inline properties) are not kept anywhere.
        let persist: Option<PersistState> = connection.map(|c| {
            let connections = self.connections.clone();
            let tenant = c.tenant.clone();
            Arc::new(move |id: &str, state: &AuthState| {
                if let Err(e) = connections.save_auth_state(&tenant, id, state) {
                    tracing::error!(connection = id, "cannot store new tokens: {e}");
                }
            }) as PersistState
        });
        let credentials = (connection.is_some() || inline).then(|| {
            let mut values = texts(&plain);
            values.extend(texts(&secrets));
            Arc::new(Credentials {
                connection_id: connection_id.clone(),
                scheme: manifest.auth.clone(),
                values,
                secrets: (secrets.values().map(as_text))
                    .chain(secret_env.values().cloned())
                    .collect(),
                env: VersionEnv {
                    plain: plugin.record.env.clone(),
                    secret: secret_env.clone(),
                },
                stored: connection.and_then(|c| self.connections.auth_state(c)),
                states: self.connections.auth_states().clone(),
                persist,
                tokens: Default::default(),
            })
        });
        let limiter = manifest.rate_limit.as_ref().map(|limit| {
            self.sandbox
                .limiter(&format!("{}:{connection_id}", manifest.key), limit)
        });
        let env = CallEnv {
            outbound: Some(Outbound {
                sandbox: self.sandbox.clone(),
                allowed,
                credentials,
                limiter,
            }),
            secrets: Arc::new(texts(&secrets)),
            warm: connection
                .filter(|c| c.warm_instances)
                .map(|c| format!("{}/{}", c.tenant, c.id).into()),
            ..CallEnv::default()
        };
        let ctx = GuestContext {
            connection: Some(GuestConnection {
                id: if connection_id.is_empty() {
                    "adhoc".to_string()
                } else {
                    connection_id
                },
                properties: Value::Object(plain.into_iter().collect()).to_string(),
            }),
            env: plugin.record.env.clone().into_iter().collect(),
            trace_id,
        };
        Ok((env, ctx))
    }
}

/// A plugin's output text as JSON; output that is not JSON is the plugin's bug.
pub fn parse_output(text: String) -> Result<Value, CallError> {
    serde_json::from_str(&text).map_err(|e| CallError::Trap {
        message: format!("the plugin returned output that is not JSON: {e}"),
    })
}

/// A fresh id for a call that belongs to no run: `{kind}-{16 hex}`.
pub fn trace_id(kind: &str) -> String {
    format!("{kind}-{:016x}", rand::rng().next_u64())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{Router, http::StatusCode, routing::get};
    use serde_json::json;

    use super::*;
    use crate::{
        config::ServeConfig, engine::Engine, sandbox::SandboxConfig, secrets::MasterKey,
        store::sled::SledStore,
    };

    /// A real host's call path (engine, registry, connections, sandbox) with
    /// the example connector, and a third party that refuses every key.
    struct Rig {
        calls: Calls,
        connections: Arc<Connections>,
        metrics: Arc<Metrics>,
        refused: Arc<AtomicUsize>,
        connection: String,
        _dir: tempfile::TempDir,
    }

    async fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::for_data_dir(dir.path());
        config.max_instances = 4;
        let kv = SledStore::open(dir.path()).unwrap().stores().kv;
        let engine = Arc::new(Engine::new(config.engine()).unwrap());
        let key =
            Arc::new(MasterKey::load_or_create(None, &dir.path().join("master.key")).unwrap());
        let registry = Arc::new(
            Registry::open(kv.clone(), engine, key.clone())
                .await
                .unwrap(),
        );
        let bytes = std::fs::read(switchyard_tests::EXAMPLE).unwrap();
        registry.upload(bytes, None).await.unwrap();
        let connections = Arc::new(Connections::new(
            kv,
            key,
            registry.clone(),
            Default::default(),
        ));
        let refused = Arc::new(AtomicUsize::new(0));
        let api = {
            let refused = refused.clone();
            Router::new().route(
                "/items/{id}",
                get(move || {
                    refused.fetch_add(1, Ordering::SeqCst);
                    async { (StatusCode::UNAUTHORIZED, "bad key") }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, api).await });
        let record = connections
            .create(
                "t",
                "example",
                "Example",
                json!({"base_url": format!("http://{addr}"), "api_key": "wrong"})
                    .as_object()
                    .unwrap()
                    .clone(),
                false,
            )
            .unwrap();
        let sandbox = HttpSandbox::new(SandboxConfig {
            allow_networks: vec!["127.0.0.1/32".parse().unwrap()],
            ..SandboxConfig::default()
        })
        .unwrap();
        let metrics = Arc::new(Metrics::default());
        Rig {
            calls: Calls::new(registry, connections.clone(), sandbox, metrics.clone()),
            connections,
            metrics,
            refused,
            connection: record.id,
            _dir: dir,
        }
    }

    impl Rig {
        fn prepare(&self, purpose: Purpose) -> Result<Call, Refused> {
            let version = Version::new(0, 1, 0);
            let target = Target {
                tenant: "t",
                plugin: "example",
                version: &version,
                connection: Some(&self.connection),
            };
            self.calls.prepare(target, purpose, "trace".into())
        }

        async fn get_item(&self, purpose: Purpose) -> CallOutcome<String> {
            let call = self.prepare(purpose).unwrap();
            self.calls
                .perform(call, "get-item", r#"{"id":"item-1"}"#, "key")
                .await
        }

        fn status(&self) -> ConnectionStatus {
            self.connections.get("t", &self.connection).unwrap().status
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_share_the_connection_decoded_once_until_it_changes() {
        let rig = rig().await;
        let shared = |call: Call| call.connection.expect("a stored connection");
        let first = shared(rig.prepare(Purpose::Other).unwrap());
        let second = shared(rig.prepare(Purpose::Other).unwrap());
        assert!(Arc::ptr_eq(&first, &second), "decoded again unchanged");
        // A change is read at once: the next call holds the new record.
        rig.connections
            .update(
                "t",
                &rig.connection,
                Some("renamed"),
                serde_json::Map::new(),
                None,
            )
            .unwrap();
        let third = shared(rig.prepare(Purpose::Other).unwrap());
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(third.name, "renamed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secrets_are_opened_once_until_they_change() {
        let rig = rig().await;
        let record = || rig.connections.current("t", &rig.connection).unwrap();
        let first = rig.connections.secrets(&record()).unwrap();
        assert_eq!(first["api_key"], json!("wrong"));
        let again = rig.connections.secrets(&record()).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "opened again unchanged");
        // A change seals the secrets anew; the next call opens them.
        let change = json!({"api_key": "right"}).as_object().unwrap().clone();
        rig.connections
            .update("t", &rig.connection, None, change, None)
            .unwrap();
        let changed = rig.connections.secrets(&record()).unwrap();
        assert_eq!(changed["api_key"], json!("right"));
    }

    fn step(run: &str) -> Purpose {
        Purpose::Step {
            run: run.into(),
            step: "get".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_auth_error_of_a_step_pauses_the_connection_once_and_refuses_the_next_steps() {
        let rig = rig().await;
        let first = rig.get_item(step("run_1")).await;
        assert!(
            matches!(
                first.result,
                Err(CallError::Connector {
                    error: ConnectorError::Auth { .. }
                })
            ),
            "{:?}",
            first.result
        );
        let ConnectionStatus::Paused { reason } = rig.status() else {
            panic!("the connection is still active");
        };
        assert!(
            reason.starts_with("step `get` of run `run_1`: auth"),
            "{reason}"
        );

        // The next step and the next poll are refused before the plugin runs.
        for purpose in [
            step("run_2"),
            Purpose::Poll {
                flow: "f".into(),
                trigger: "new-item".into(),
            },
        ] {
            match rig.prepare(purpose) {
                Err(Refused::Paused {
                    connection,
                    reason: why,
                }) => {
                    assert_eq!(connection, rig.connection);
                    assert_eq!(why, reason);
                }
                other => panic!("not refused: {:?}", other.map(|_| ())),
            }
        }
        assert_eq!(rig.refused.load(Ordering::SeqCst), 1);

        // Other calls (a webhook, a hand-made test) still run, and their auth
        // errors neither pause nor change the first reason.
        let other = rig.get_item(Purpose::Other).await;
        assert!(other.result.is_err());
        assert_eq!(rig.refused.load(Ordering::SeqCst), 2);
        assert_eq!(
            rig.status(),
            ConnectionStatus::Paused {
                reason: reason.clone()
            }
        );

        // Resumed, two steps failing at once pause it once, with one reason.
        rig.connections
            .set_status("t", &rig.connection, ConnectionStatus::Active)
            .unwrap();
        let (a, b) = (rig.prepare(step("run_a")), rig.prepare(step("run_b")));
        let input = r#"{"id":"item-1"}"#;
        let (a, b) = tokio::join!(
            rig.calls.perform(a.unwrap(), "get-item", input, "a"),
            rig.calls.perform(b.unwrap(), "get-item", input, "b"),
        );
        assert!(a.result.is_err() && b.result.is_err());
        let ConnectionStatus::Paused { reason } = rig.status() else {
            panic!("not paused again");
        };
        assert!(
            reason.contains("run `run_a`") != reason.contains("run `run_b`"),
            "{reason}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_call_records_its_latency_by_plugin_and_function() {
        let rig = rig().await;
        let before = rig.metrics.encode();
        assert!(
            !before.contains(r#"plugin="example",function="perform""#),
            "{before}"
        );
        rig.get_item(Purpose::Other).await;
        rig.get_item(Purpose::Other).await;
        let text = rig.metrics.encode();
        let count = text
            .lines()
            .find(|l| {
                l.starts_with("switchyard_plugin_call_duration_seconds_count")
                    && l.contains(r#"plugin="example",function="perform""#)
            })
            .unwrap_or_else(|| panic!("no latency recorded: {text}"));
        assert!(count.ends_with(" 2"), "{count}");
    }
}
