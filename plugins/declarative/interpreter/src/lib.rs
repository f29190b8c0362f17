//! The declarative interpreter: one connector component that runs every
//! declarative connector spec (`docs/declarative.md`).
//!
//! It is a `switchyard:connector@0.1.0` connector written with the SDK, plus
//! one import, `switchyard:declarative/spec`, through which the host hands
//! it the spec of the plugin version a call is for (validated and
//! normalised at push). Every request it makes goes through the host's
//! `http.send` like any connector's: the allow-list, the SSRF guard,
//! host-held credentials, rate limits and the journal all apply, and no
//! secret ever reaches it (templates see only the connection's non-secret
//! properties).

mod exchange;
mod poll;
mod template;
mod webhook;

use std::{cell::RefCell, collections::BTreeMap, rc::Rc};

use declarative_spec::{CUSTOM_API_CALL, Envelope, Spec, TriggerKind};
use serde_json::{Value, json};
use switchyard_sdk::{
    Action, ActionKind, AuthScheme, Connector, Context, Error, Manifest, PollResult, Property,
    Trigger, WebhookOutcome, WebhookRequest, http,
};

use exchange::Runner;
use template::Scope;

/// The spec import, generated here; the connector world comes from the SDK
/// (the two worlds merge into one component).
#[allow(unsafe_code, clippy::all, unreachable_pub, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package switchyard:interpreter;

            world spec-import {
                import switchyard:declarative/spec@0.1.0;
            }
        "#,
        path: ["../../../wit/connector@0.1.0", "../../../wit/declarative@0.1.0"],
        world: "spec-import",
        generate_all,
    });
}

/// The component.
struct Interpreter;

switchyard_sdk::export_connector!(Interpreter);

thread_local! {
    /// The spec this instance parsed last, with its text. A fresh instance
    /// serves one call, but a warm one (a connection that opts in to warm
    /// instances) serves many calls of one version, and parsing the spec
    /// was most of such a call.
    static PARSED: RefCell<Option<(String, Rc<Envelope>)>> = const { RefCell::new(None) };
}

/// The spec of this call's plugin version.
fn load() -> Result<Rc<Envelope>, Error> {
    let text = bindings::switchyard::declarative::spec::get();
    PARSED.with(|parsed| {
        if let Some((seen, envelope)) = &*parsed.borrow()
            && *seen == text
        {
            return Ok(envelope.clone());
        }
        let envelope: Rc<Envelope> = Rc::new(
            serde_json::from_str(&text)
                .map_err(|e| Error::permanent(format!("the host's spec is unreadable: {e}")))?,
        );
        *parsed.borrow_mut() = Some((text, envelope.clone()));
        Ok(envelope)
    })
}

/// `connection` (its non-secret properties) and `env` (the version's
/// variables): what every template sees.
fn scope(ctx: &Context) -> Scope {
    let connection = ctx
        .connection
        .as_ref()
        .map(|c| c.properties.clone())
        .unwrap_or_else(|| json!({}));
    let env: serde_json::Map<String, Value> = ctx
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Scope::new(BTreeMap::from([
        ("connection", connection),
        ("env", Value::Object(env)),
    ]))
}

fn runner<'a>(envelope: &'a Envelope, ctx: &Context) -> Result<Runner<'a>, Error> {
    Runner::new(
        &envelope.spec,
        envelope.limits.clone().unwrap_or_default(),
        scope(ctx),
    )
}

fn trigger<'a>(spec: &'a Spec, key: &str) -> Result<&'a declarative_spec::Trigger, Error> {
    spec.triggers
        .get(key)
        .ok_or_else(|| Error::unknown_trigger(key))
}

impl Connector for Interpreter {
    fn describe() -> Manifest {
        match load() {
            Ok(envelope) => manifest(&envelope.spec),
            // Without a spec (the host asks when the interpreter itself is
            // uploaded), it describes itself.
            Err(_) => Manifest::new(
                "declarative-interpreter",
                "Declarative interpreter",
                env!("CARGO_PKG_VERSION"),
            )
            .description("Runs declarative connector specs"),
        }
    }

    fn test_connection(ctx: &Context) -> Result<(), Error> {
        let envelope = load()?;
        let runner = runner(&envelope, ctx)?;
        let Some(test) = &envelope.spec.test else {
            return Ok(());
        };
        runner.fetch(test, &runner.scope, "test", false, None)?;
        Ok(())
    }

    fn perform(
        ctx: &Context,
        action: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<Value, Error> {
        let envelope = load()?;
        let mut runner = runner(&envelope, ctx)?;
        runner.scope = runner
            .scope
            .with("input", &input)
            .with("idempotency_key", &json!(idempotency_key));
        if action == CUSTOM_API_CALL {
            return custom_api_call(&runner, &input);
        }
        let spec = envelope
            .spec
            .actions
            .get(action)
            .ok_or_else(|| Error::unknown_action(action))?;
        let at = format!("actions.{action}");
        for (i, case) in spec.cases.iter().enumerate() {
            let at = format!("{at}.cases[{i}]");
            if let Some(when) = &case.when
                && !runner
                    .templates
                    .holds(when, &runner.scope, &format!("{at}.when"))?
            {
                continue;
            }
            let fetched = runner.fetch(case, &runner.scope, &at, false, None)?;
            if let Some(output) = fetched.output {
                return Ok(output);
            }
            let records = Value::Array(fetched.records);
            return match &case.output {
                Some(template) => {
                    let scope = runner
                        .scope
                        .with("response", &fetched.last)
                        .with("records", &records);
                    runner
                        .templates
                        .value(template, &scope, &format!("{at}.output"))
                }
                None if case.records.is_some() => Ok(records),
                None => Ok(fetched.last["body"].clone()),
            };
        }
        Err(Error::invalid_input(format!(
            "no case of action `{action}` applies to this input"
        )))
    }

    fn poll(
        ctx: &Context,
        key: &str,
        params: Value,
        cursor: Option<&str>,
    ) -> Result<PollResult, Error> {
        let envelope = load()?;
        let runner = runner(&envelope, ctx)?;
        let trigger = trigger(&envelope.spec, key)?;
        if trigger.kind != TriggerKind::Polling {
            return Err(Error::invalid_input(format!(
                "`{key}` is not a polling trigger"
            )));
        }
        poll::poll(&runner, key, trigger, &params, cursor)
    }

    fn subscribe(
        ctx: &Context,
        key: &str,
        params: Value,
        target_url: &str,
    ) -> Result<String, Error> {
        let envelope = load()?;
        let runner = runner(&envelope, ctx)?;
        let trigger = trigger(&envelope.spec, key)?;
        let scope = runner
            .scope
            .with("params", &params)
            .with("target_url", &json!(target_url));
        webhook::subscription(
            &runner,
            &format!("triggers.{key}.subscribe"),
            trigger.subscribe.as_ref(),
            &scope,
        )
    }

    fn unsubscribe(ctx: &Context, key: &str, params: Value, state: &str) -> Result<(), Error> {
        let envelope = load()?;
        let runner = runner(&envelope, ctx)?;
        let trigger = trigger(&envelope.spec, key)?;
        let scope = runner
            .scope
            .with("params", &params)
            .with("state", &json!(state));
        webhook::subscription(
            &runner,
            &format!("triggers.{key}.unsubscribe"),
            trigger.unsubscribe.as_ref(),
            &scope,
        )?;
        Ok(())
    }

    fn handle_webhook(
        ctx: &Context,
        key: &str,
        params: Value,
        request: WebhookRequest,
    ) -> Result<WebhookOutcome, Error> {
        let envelope = load()?;
        let runner = runner(&envelope, ctx)?;
        let trigger = trigger(&envelope.spec, key)?;
        if trigger.kind != TriggerKind::Webhook {
            return Err(Error::invalid_input(format!(
                "`{key}` is not a webhook trigger"
            )));
        }
        webhook::handle(&runner, key, trigger, &params, &request)
    }
}

/// The custom API call: one request of the caller's choosing, relative to
/// the spec's `base_url` (or absolute, to an allowed host: the host checks),
/// judged by the spec's response rules.
fn custom_api_call(runner: &Runner<'_>, input: &Value) -> Result<Value, Error> {
    let method = input["method"]
        .as_str()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let path = input["path"]
        .as_str()
        .or_else(|| input["url"].as_str())
        .ok_or_else(|| Error::invalid_input("custom-api-call needs a `path`"))?;
    let mut request = http::Request::new(method, runner.join(path)?);
    if let Some(query) = input["query"].as_object() {
        for (name, value) in query {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            request = request.query(name, &text);
        }
    }
    if let Some(headers) = input["headers"].as_object() {
        for (name, value) in headers {
            if let Some(text) = value.as_str() {
                request = request.header(name.clone(), text);
            }
        }
    }
    match &input["body"] {
        Value::Null => {}
        Value::String(text) => request = request.body(text.clone()),
        other => request = request.json(other),
    }
    let response = request.send()?;
    let view = exchange::view(&response);
    runner.check(&response, &view)?;
    Ok(json!({"status": view["status"], "headers": view["headers"], "body": view["body"]}))
}

/// The manifest of a spec (the host builds its own from the spec at push;
/// this is what `describe` answers).
fn manifest(spec: &Spec) -> Manifest {
    let mut m = Manifest::new(spec.key.clone(), spec.name.clone(), spec.version.clone())
        .description(spec.description.clone());
    let auth = match spec.auth["type"].as_str() {
        Some("basic") => AuthScheme::Basic,
        Some("bearer") => AuthScheme::Bearer,
        Some("digest") => AuthScheme::Digest,
        Some("api_key") => {
            let name = spec.auth["name"].as_str().unwrap_or_default();
            if spec.auth["placement"].as_str() == Some("query") {
                AuthScheme::api_key_query(name)
            } else {
                AuthScheme::api_key_header(name, spec.auth["prefix"].as_str().unwrap_or_default())
            }
        }
        _ => AuthScheme::None,
    };
    m = m.auth(auth);
    for (key, p) in &spec.properties {
        let mut property = Property::new(key.clone(), p.label.clone())
            .description(p.description.clone())
            .schema(p.schema.clone());
        if p.required {
            property = property.required();
        }
        if p.secret {
            property = property.secret();
        }
        m = m.property(property);
    }
    for host in &spec.allowed_hosts {
        m = m.allowed_host(host.clone());
    }
    if let Some(r) = spec.rate_limit {
        m = m.rate_limit(r.requests, r.period_ms, r.burst.unwrap_or(r.requests));
    }
    for (key, t) in &spec.triggers {
        let mut trigger = match t.kind {
            TriggerKind::Polling => Trigger::polling(key.clone(), t.name.clone()),
            TriggerKind::Webhook => Trigger::webhook(key.clone(), t.name.clone()),
        }
        .description(t.description.clone())
        .params_schema(t.params_schema.clone())
        .event_schema(t.event_schema.clone());
        if let Some(secs) = t.poll_interval_secs {
            trigger = trigger.poll_interval_secs(secs);
        }
        m = m.trigger(trigger);
    }
    for (key, a) in &spec.actions {
        let kind = match a.kind.as_str() {
            "create" => ActionKind::Create,
            "update" => ActionKind::Update,
            "search" => ActionKind::Search,
            _ => ActionKind::Other,
        };
        m = m.action(
            Action::new(key.clone(), a.name.clone(), kind)
                .description(a.description.clone())
                .input_schema(a.input_schema.clone())
                .output_schema(a.output_schema.clone()),
        );
    }
    m
}
