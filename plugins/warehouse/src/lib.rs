//! Warehouse connector: sends orders to a warehouse/OMS (the Eshopbox role) and reports shipment status and stock changes back.
//!
//! | call | requests |
//! | --- | --- |
//! | test-connection | `GET /account` |
//! | action `create-order` | `POST /orders` with `Idempotency-Key` |
//! | action `update-order-status` | `PATCH /orders/{id}` with `Idempotency-Key` |
//! | action `get-order` | `GET /orders/{id}`, or `GET /orders?channel=&channel_order_id=` |
//! | webhook trigger `shipment-status` | `POST /webhooks` / `DELETE /webhooks/{id}`; `shipment.status_changed` deliveries |
//! | webhook trigger `stock-changed` | the same, for `stock.changed` deliveries |
//! | polling trigger `shipment-updates` | `GET /shipments?updated_since=&limit=`, then `&cursor=` pages |
//!
//! Paths are under the connection's `base_url`. The host sends the API
//! token as `Authorization: Bearer`: warehouse APIs of this kind issue one
//! long-lived token per account, and bearer is the scheme the host guards
//! best (any `Authorization` header a plugin sets is dropped, and the token
//! never appears in the run log). Deliveries are signed the Standard
//! Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`)
//! with the account's `whsec_` secret, which the host checks.

mod events;
mod orders;
mod schemas;

use switchyard_sdk::http::Request;
use switchyard_sdk::{
    Action, AuthScheme, Connector, Context, Error, Manifest, PollResult, Property, Trigger, Value,
    WebhookOutcome, WebhookRequest, json,
};

/// The connector; its behaviour is in the `Connector` impl.
struct Warehouse;

switchyard_sdk::export_connector!(Warehouse);

impl Connector for Warehouse {
    fn describe() -> Manifest {
        Manifest::new("warehouse", "Warehouse", env!("CARGO_PKG_VERSION"))
            .description(
                "Orders to a warehouse or order management system; shipment status and stock back",
            )
            .auth(AuthScheme::Bearer)
            .property(
                Property::new("base_url", "API URL")
                    .description("Root of the warehouse API, for example https://api.warehouse.example/v1")
                    .required()
                    .schema(json!({ "type": "string", "format": "uri" })),
            )
            .property(
                Property::new("token", "API token")
                    .description("Sent by the host as Authorization: Bearer")
                    .required()
                    .secret()
                    .schema(json!({ "type": "string", "minLength": 1 })),
            )
            .property(
                Property::new("webhook_secret", "Webhook signing secret")
                    .description("The account's whsec_... secret that signs deliveries (Standard Webhooks)")
                    .secret()
                    .schema(json!({ "type": "string", "pattern": "^whsec_" })),
            )
            .allowed_host("{base_url}")
            .rate_limit(10, 1000, 10)
            .trigger(
                Trigger::webhook("shipment-status", "Shipment status changed")
                    .description("A shipment was packed, shipped or delivered")
                    .params_schema(schemas::shipment_status_params())
                    .event_schema(schemas::shipment()),
            )
            .trigger(
                Trigger::webhook("stock-changed", "Stock changed")
                    .description("The available quantity of a SKU at a location changed")
                    .params_schema(schemas::no_params())
                    .event_schema(schemas::stock_change()),
            )
            .trigger(
                Trigger::polling("shipment-updates", "Shipment updated (polling)")
                    .description("Shipments changed since the last poll, oldest first: shipment-status without webhooks")
                    .poll_interval_secs(120)
                    .params_schema(schemas::shipment_updates_params())
                    .event_schema(schemas::shipment()),
            )
            .action(
                Action::create("create-order", "Create order")
                    .description("Sends a sales-channel order to the warehouse; a repeated step gets the same order back")
                    .input_schema(schemas::create_order_input())
                    .output_schema(schemas::create_order_output()),
            )
            .action(
                Action::update("update-order-status", "Update order status")
                    .description("Moves an order on (packed, shipped, delivered) or cancels it")
                    .input_schema(schemas::update_order_status_input())
                    .output_schema(schemas::order()),
            )
            .action(
                Action::search("get-order", "Get order")
                    .description("By the warehouse's id or the channel's order id; found is false when there is none")
                    .input_schema(schemas::get_order_input())
                    .output_schema(schemas::get_order_output()),
            )
    }

    fn test_connection(ctx: &Context) -> Result<(), Error> {
        Request::get(url(ctx, "/account")?)
            .send()?
            .error_for_status()?;
        Ok(())
    }

    fn perform(
        ctx: &Context,
        action: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<Value, Error> {
        match action {
            "create-order" => orders::create(ctx, parse(input)?, idempotency_key),
            "update-order-status" => orders::update_status(ctx, parse(input)?, idempotency_key),
            "get-order" => orders::get(ctx, parse(input)?),
            _ => Err(Error::unknown_action(action)),
        }
    }

    fn poll(
        ctx: &Context,
        trigger: &str,
        params: Value,
        cursor: Option<&str>,
    ) -> Result<PollResult, Error> {
        match trigger {
            "shipment-updates" => events::poll_shipments(ctx, parse(params)?, cursor),
            _ => Err(Error::unknown_trigger(trigger)),
        }
    }

    fn subscribe(
        ctx: &Context,
        trigger: &str,
        _params: Value,
        target_url: &str,
    ) -> Result<String, Error> {
        events::subscribe(ctx, events::event_type(trigger)?, target_url)
    }

    fn unsubscribe(ctx: &Context, trigger: &str, _params: Value, state: &str) -> Result<(), Error> {
        events::event_type(trigger)?;
        events::unsubscribe(ctx, state)
    }

    fn handle_webhook(
        _ctx: &Context,
        trigger: &str,
        params: Value,
        request: WebhookRequest,
    ) -> Result<WebhookOutcome, Error> {
        let event_type = events::event_type(trigger)?;
        events::handle_delivery(event_type, parse(params)?, &request)
    }
}

/// `base_url` joined with `path`.
pub(crate) fn url(ctx: &Context, path: &str) -> Result<String, Error> {
    let base = ctx.string_property("base_url")?;
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// Reads an input or params object (already checked against its schema by the host).
fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Error> {
    switchyard_sdk::serde_json::from_value(value)
        .map_err(|e| Error::invalid_input(format!("bad input: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_declares_everything() {
        let m = Warehouse::describe();
        assert_eq!((m.key.as_str(), m.version.as_str()), ("warehouse", "0.1.0"));
        let actions: Vec<_> = m.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            actions,
            ["create-order", "update-order-status", "get-order"]
        );
        let triggers: Vec<_> = m.triggers.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            triggers,
            ["shipment-status", "stock-changed", "shipment-updates"]
        );
        assert_eq!(m.auth, AuthScheme::Bearer);
    }
}
