//! Webhook triggers: deliveries verified by the host with a named secret,
//! turned into events; subscribing and unsubscribing with requests.

use std::collections::BTreeMap;

use declarative_spec::{Subscription, Trigger, Verify};
use serde_json::{Value, json};
use switchyard_sdk::webhooks::{Encoding, Scheme};
use switchyard_sdk::{Error, Event, WebhookOutcome, WebhookRequest, WebhookResponse, log};

use crate::exchange::{Runner, body_value, select};
use crate::template::Scope;

/// A delivery as templates see it: `method`, `query` (a map), `headers`
/// (lower-case names), `body` (JSON when it parses, else text) and `text`.
fn request_view(request: &WebhookRequest) -> Value {
    let mut headers = BTreeMap::new();
    for (name, value) in &request.headers {
        headers
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| value.clone());
    }
    let query: BTreeMap<String, String> = request
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    let text = String::from_utf8_lossy(&request.body).into_owned();
    json!({
        "method": request.method,
        "query": query,
        "headers": headers,
        "body": body_value(&text),
        "text": text,
    })
}

fn scheme(verify: &Verify) -> Result<Scheme, Error> {
    Ok(match verify.scheme.as_str() {
        "shopify" => Scheme::Shopify,
        "standard_webhooks" => Scheme::StandardWebhooks,
        "stripe" => Scheme::Stripe,
        "hmac_sha256" => Scheme::hmac_sha256(
            verify.header.clone().unwrap_or_default(),
            if verify.encoding.as_deref() == Some("base64") {
                Encoding::Base64
            } else {
                Encoding::Hex
            },
            verify.prefix.clone().unwrap_or_default(),
        ),
        other => {
            return Err(Error::permanent(format!(
                "verify.scheme: `{other}` is not a signature scheme"
            )));
        }
    })
}

/// Turns a delivery into events.
pub(crate) fn handle(
    runner: &Runner<'_>,
    key: &str,
    trigger: &Trigger,
    params: &Value,
    request: &WebhookRequest,
) -> Result<WebhookOutcome, Error> {
    let at = format!("triggers.{key}");
    let t = &runner.templates;
    let delivery = request_view(request);
    let scope = runner
        .scope
        .with("params", params)
        .with("request", &delivery);
    if let Some(ignore) = &trigger.ignore
        && t.holds(ignore, &scope, &format!("{at}.ignore"))?
    {
        log::info!("{key}: acknowledged a delivery that carries no events");
        return Ok(WebhookOutcome::new(Vec::new()));
    }
    if let Some(verify) = &trigger.verify {
        request.verify(&scheme(verify)?, &verify.secret)?;
    }
    if let Some(skip) = &trigger.skip
        && t.holds(skip, &scope, &format!("{at}.skip"))?
    {
        log::info!("{key}: ignored a delivery (`{skip}`)");
        return reply(runner, trigger, &scope, Vec::new());
    }
    let body = &delivery["body"];
    let records = match &trigger.records {
        Some(path) => select(body, path)?,
        None if body.is_null() => Vec::new(),
        None => vec![body.clone()],
    };
    let mut events = Vec::new();
    for record in records {
        let record_scope = scope.with("record", &record);
        for (i, check) in trigger.checks.iter().enumerate() {
            // A check that cannot be evaluated (a missing field) fails.
            let holds = t
                .holds(&check.check, &record_scope, &format!("{at}.checks[{i}]"))
                .unwrap_or(false);
            if !holds {
                return Err(Error::invalid_input(check.message.clone()));
            }
        }
        if let Some(filter) = &trigger.filter
            && !t.holds(filter, &record_scope, &format!("{at}.filter"))?
        {
            continue;
        }
        let id = t
            .text(&trigger.event_id, &record_scope, &format!("{at}.event_id"))?
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                Error::invalid_input(format!("{at}.event_id: empty for this delivery"))
            })?;
        let payload = match &trigger.event {
            Some(shape) => t.value(shape, &record_scope, &format!("{at}.event"))?,
            None => record,
        };
        events.push(Event::new(id, payload));
    }
    reply(runner, trigger, &scope, events)
}

fn reply(
    runner: &Runner<'_>,
    trigger: &Trigger,
    scope: &Scope,
    events: Vec<Event>,
) -> Result<WebhookOutcome, Error> {
    let outcome = WebhookOutcome::new(events);
    let Some(reply) = &trigger.reply else {
        return Ok(outcome);
    };
    let t = &runner.templates;
    let mut response = WebhookResponse::new(reply.status);
    for (name, value) in &reply.headers {
        if let Some(Value::String(text)) = t.render(value, scope, "reply.headers")? {
            response = response.header(name.clone(), text);
        }
    }
    if let Some(body) = &reply.body {
        response = match t.render(body, scope, "reply.body")? {
            Some(Value::String(text)) => response.body(text),
            Some(other) => response.json(&other),
            None => response,
        };
    }
    Ok(outcome.respond(response))
}

/// Subscribes (returns the state to keep) or unsubscribes (`state` given).
pub(crate) fn subscription(
    runner: &Runner<'_>,
    at: &str,
    spec: Option<&Subscription>,
    scope: &Scope,
) -> Result<String, Error> {
    let Some(spec) = spec else {
        return Ok(String::new());
    };
    let t = &runner.templates;
    if let Some(when) = &spec.when
        && !t.holds(when, scope, &format!("{at}.when"))?
    {
        return Ok(String::new());
    }
    if let Some(line) = &spec.log
        && let Some(text) = t.text(line, scope, &format!("{at}.log"))?
    {
        log::info!("{text}");
    }
    let Some(request) = &spec.request else {
        return Ok(String::new());
    };
    let op = declarative_spec::Operation {
        when: None,
        request: request.clone(),
        responses: spec.responses.clone(),
        records: None,
        record: None,
        pagination: None,
        output: None,
    };
    let fetched = runner.fetch(&op, scope, at, false, None)?;
    let Some(state) = &spec.state else {
        return Ok(String::new());
    };
    let scope = scope.with("response", &fetched.last);
    Ok(t.text(state, &scope, &format!("{at}.state"))?
        .unwrap_or_default())
}
