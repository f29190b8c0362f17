//! Example REST connector: the template to copy when writing a Switchyard connector in Rust.
//!
//! It talks to a small items API at the connection's `base_url`:
//!
//! | call | request |
//! | --- | --- |
//! | test-connection | `GET /me` |
//! | action `create-item` | `POST /items` with `Idempotency-Key` |
//! | action `get-item` | `GET /items/{id}` (404 means not found) |
//! | polling trigger `new-item` | `GET /items?since={cursor}` |
//! | webhook trigger `item-event` | deliveries signed with `X-Signature: sha256=<hex>` |
//!
//! The host adds the API key (`X-Api-Key`) to every request and checks the
//! webhook signature with the secret `webhook_secret`: this code never sees
//! either secret. `echo` does no I/O at all; it measures the cost of a call.

use serde::Deserialize;
use switchyard_sdk::http::{Request, percent_encode};
use switchyard_sdk::webhooks::{Encoding, Scheme};
use switchyard_sdk::{
    Action, AuthScheme, Connector, Context, Error, Event, Manifest, PollResult, Property, Trigger,
    Value, WebhookOutcome, WebhookRequest, json, log,
};

/// The connector; its behaviour is in the `Connector` impl.
struct Example;

switchyard_sdk::export_connector!(Example);

impl Connector for Example {
    fn describe() -> Manifest {
        Manifest::new(
            "example",
            "Example REST connector",
            env!("CARGO_PKG_VERSION"),
        )
        .description(
            "Creates, fetches and watches items of a simple REST API. \
                 The starting template for connector authors.",
        )
        .auth(AuthScheme::api_key_header("X-Api-Key", ""))
        .property(
            Property::new("base_url", "Base URL")
                .description("Root URL of the API, for example https://api.example.com")
                .required()
                .schema(json!({ "type": "string", "format": "uri" })),
        )
        .property(
            Property::new("api_key", "API key")
                .description("Sent by the host in the X-Api-Key header")
                .required()
                .secret()
                .schema(json!({ "type": "string", "minLength": 1 })),
        )
        .property(
            Property::new("webhook_secret", "Webhook secret")
                .description(
                    "Checks item-event deliveries: X-Signature is sha256= and the \
                         hex HMAC-SHA256 of the body with this secret",
                )
                .secret()
                .schema(json!({ "type": "string", "minLength": 1 })),
        )
        .allowed_host("{base_url}")
        .rate_limit(10, 1000, 10)
        .trigger(
            Trigger::polling("new-item", "New item")
                .description("Items created or changed since the last poll")
                .poll_interval_secs(60)
                .params_schema(no_params())
                .event_schema(item_schema()),
        )
        .trigger(
            Trigger::webhook("item-event", "Item event")
                .description("A signed delivery from the API about one item")
                .params_schema(no_params())
                .event_schema(json!({
                    "type": "object",
                    "required": ["id", "type"],
                    "properties": {
                        "id": { "type": ["string", "integer"] },
                        "type": { "type": "string" }
                    }
                })),
        )
        .action(
            Action::other("echo", "Echo")
                .description("Returns its input under `echo` without any HTTP")
                .input_schema(json!({ "description": "Any JSON value" }))
                .output_schema(json!({
                    "type": "object",
                    "required": ["echo"],
                    "properties": { "echo": {} }
                })),
        )
        .action(
            Action::create("create-item", "Create item")
                .description("POST /items with the input as the JSON body")
                .input_schema(json!({
                    "type": "object",
                    "description": "The item to create",
                    "additionalProperties": true
                }))
                .output_schema(item_schema()),
        )
        .action(
            Action::search("get-item", "Get item")
                .description("GET /items/{id}; `found` is false when there is no such item")
                .input_schema(json!({
                    "type": "object",
                    "required": ["id"],
                    "properties": { "id": { "type": "string", "minLength": 1 } },
                    "additionalProperties": false
                }))
                .output_schema(json!({
                    "type": "object",
                    "required": ["found"],
                    "properties": {
                        "found": { "type": "boolean" },
                        "item": item_schema()
                    }
                })),
        )
    }

    fn test_connection(ctx: &Context) -> Result<(), Error> {
        Request::get(url(ctx, "/me")?).send()?.error_for_status()?;
        Ok(())
    }

    fn perform(
        ctx: &Context,
        action: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<Value, Error> {
        match action {
            "echo" => Ok(json!({ "echo": input })),
            "create-item" => Request::post(url(ctx, "/items")?)
                // The same for every retry of the step, so the API creates one item.
                .header("Idempotency-Key", idempotency_key)
                .json(&input)
                .send()?
                .error_for_status()?
                .json(),
            "get-item" => {
                let id = input
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::invalid_input("`id` must be a string"))?;
                let response =
                    Request::get(url(ctx, &format!("/items/{}", percent_encode(id)))?).send()?;
                if response.status == 404 {
                    return Ok(json!({ "found": false }));
                }
                let item: Value = response.error_for_status()?.json()?;
                Ok(json!({ "found": true, "item": item }))
            }
            _ => Err(Error::unknown_action(action)),
        }
    }

    fn poll(
        ctx: &Context,
        trigger: &str,
        _params: Value,
        cursor: Option<&str>,
    ) -> Result<PollResult, Error> {
        if trigger != "new-item" {
            return Err(Error::unknown_trigger(trigger));
        }
        let page: Page = Request::get(url(ctx, "/items")?)
            .query("since", cursor.unwrap_or(""))
            .send()?
            .error_for_status()?
            .json()?;
        log::debug!("new-item: {} items", page.items.len());
        let events = page
            .items
            .into_iter()
            .map(|item| Ok(Event::new(id_of(&item)?, item)))
            .collect::<Result<_, Error>>()?;
        Ok(PollResult::new(events, page.next))
    }

    /// The API has no endpoint to register webhooks: whoever sets up the
    /// connection pastes the target URL into the API's settings. So there is
    /// nothing to register and no state to keep.
    fn subscribe(
        _ctx: &Context,
        trigger: &str,
        _params: Value,
        target_url: &str,
    ) -> Result<String, Error> {
        if trigger != "item-event" {
            return Err(Error::unknown_trigger(trigger));
        }
        log::info!("item-event: register {target_url} in the API's webhook settings");
        Ok(String::new())
    }

    fn unsubscribe(
        _ctx: &Context,
        trigger: &str,
        _params: Value,
        _state: &str,
    ) -> Result<(), Error> {
        if trigger != "item-event" {
            return Err(Error::unknown_trigger(trigger));
        }
        Ok(())
    }

    fn handle_webhook(
        _ctx: &Context,
        trigger: &str,
        _params: Value,
        request: WebhookRequest,
    ) -> Result<WebhookOutcome, Error> {
        if trigger != "item-event" {
            return Err(Error::unknown_trigger(trigger));
        }
        request.verify(
            &Scheme::hmac_sha256("X-Signature", Encoding::Hex, "sha256="),
            "webhook_secret",
        )?;
        let body: Value = request.json()?;
        if !body.is_object() {
            return Err(Error::invalid_input("an item event must be a JSON object"));
        }
        // The API resends a delivery with the same X-Event-Id; the host drops repeats by id.
        let id = match request.header("X-Event-Id") {
            Some(id) => id.to_owned(),
            None => id_of(&body)?,
        };
        Ok(WebhookOutcome::new(vec![Event::new(id, body)]))
    }
}

/// One page of `GET /items?since=`.
#[derive(Deserialize)]
struct Page {
    items: Vec<Value>,
    /// Where the next page starts; absent or null keeps the current cursor.
    next: Option<String>,
}

/// `base_url` joined with `path`.
fn url(ctx: &Context, path: &str) -> Result<String, Error> {
    let base = ctx.string_property("base_url")?;
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// The `id` of an item or event as text (the API may use strings or numbers).
fn id_of(object: &Value) -> Result<String, Error> {
    match object.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::Number(id)) => Ok(id.to_string()),
        _ => Err(Error::permanent("the API sent an item without an `id`")),
    }
}

fn item_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": { "type": ["string", "integer"] },
            "updated_at": { "type": "string" }
        },
        "additionalProperties": true
    })
}

fn no_params() -> Value {
    json!({ "type": "object", "properties": {}, "additionalProperties": false })
}

#[cfg(test)]
mod tests {
    //! Native unit tests (`cargo test` in `plugins/`): the export macro
    //! expands to nothing off WebAssembly, so the connector is plain Rust here.
    //! Calls that reach the host (HTTP, logs) belong in the host's tests.

    use super::*;

    #[test]
    fn manifest_declares_everything() {
        let m = Example::describe();
        assert_eq!((m.key.as_str(), m.version.as_str()), ("example", "0.1.0"));
        let keys: Vec<_> = m.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["echo", "create-item", "get-item"]);
        assert_eq!(m.allowed_hosts, ["{base_url}"]);
    }

    #[test]
    fn echo_needs_no_connection() {
        let out = Example::perform(&Context::default(), "echo", json!({ "a": 1 }), "k").unwrap();
        assert_eq!(out, json!({ "echo": { "a": 1 } }));
        assert_eq!(
            Example::perform(&Context::default(), "create-item", json!({}), "k"),
            Err(Error::invalid_input(
                "this call needs a connection (for the property `base_url`)"
            ))
        );
    }

    #[test]
    fn ids_of_items() {
        assert_eq!(id_of(&json!({ "id": "a1" })), Ok("a1".into()));
        assert_eq!(id_of(&json!({ "id": 7 })), Ok("7".into()));
        assert!(id_of(&json!({ "id": "" })).is_err());
        assert!(id_of(&json!({})).is_err());
    }
}
