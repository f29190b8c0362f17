//! Shopify connector: orders, fulfillments and inventory through the Admin REST API.
//!
//! | call | requests |
//! | --- | --- |
//! | test-connection | `GET /shop.json` |
//! | action `find-order` | `GET /orders/{id}.json`, or `GET /orders.json?name=` |
//! | action `tag-order` | `GET /orders/{id}.json`, then `PUT /orders/{id}.json` with the merged tags and note |
//! | action `create-fulfillment` | `GET /orders/{id}/fulfillment_orders.json`, then `POST /fulfillments.json` |
//! | action `set-inventory` | (`POST /graphql.json` to find a SKU's inventory item), `POST /inventory_levels/set.json` |
//! | polling trigger `order-updated` | `GET /orders.json?status=any&order=updated_at asc&updated_at_min=`, following `Link` pages |
//! | webhook trigger `order-created` | `POST /webhooks.json` / `DELETE /webhooks/{id}.json`; deliveries signed with `X-Shopify-Hmac-Sha256` |
//!
//! Paths are under `https://{shop}.myshopify.com/admin/api/{api_version}`
//! (or the connection's `base_url`). The host adds the access token
//! (`X-Shopify-Access-Token`), checks webhook signatures with the secret
//! `webhook_secret`, and spaces requests to Shopify's 2 per second: this code
//! never sees a secret. Mutations carry the flow step's `Idempotency-Key`.

mod actions;
mod api;
mod schemas;
mod triggers;

use switchyard_sdk::{
    Action, AuthScheme, Connector, Context, Error, Manifest, PollResult, Property, Trigger, Value,
    WebhookOutcome, WebhookRequest, json,
};

/// The connector; its behaviour is in the `Connector` impl.
struct Shopify;

switchyard_sdk::export_connector!(Shopify);

impl Connector for Shopify {
    fn describe() -> Manifest {
        Manifest::new("shopify", "Shopify", env!("CARGO_PKG_VERSION"))
            .description("Orders, fulfillments and inventory of a Shopify store (Admin REST API)")
            .auth(AuthScheme::api_key_header("X-Shopify-Access-Token", ""))
            .property(
                Property::new("shop", "Shop")
                    .description("The store's subdomain: acme for acme.myshopify.com")
                    .required()
                    .schema(json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$" })),
            )
            .property(
                Property::new("api_key", "Admin API access token")
                    .description("The custom app's token (shpat_...); sent by the host as X-Shopify-Access-Token")
                    .required()
                    .secret()
                    .schema(json!({ "type": "string", "minLength": 1 })),
            )
            .property(
                Property::new("webhook_secret", "Webhook signing secret")
                    .description("The app's API secret key, which signs webhook deliveries (X-Shopify-Hmac-Sha256)")
                    .secret()
                    .schema(json!({ "type": "string", "minLength": 1 })),
            )
            .property(
                Property::new("api_version", "API version")
                    .description(format!("Admin API version, default {}", api::DEFAULT_API_VERSION))
                    .schema(json!({ "type": "string", "pattern": "^([0-9]{4}-[0-9]{2}|unstable)$" })),
            )
            .property(
                Property::new("location_id", "Default location")
                    .description("Inventory location set-inventory uses when its input names none")
                    .schema(schemas::id()),
            )
            .property(
                Property::new("base_url", "Base URL")
                    .description("Replaces https://{shop}.myshopify.com (a proxy, or a test double)")
                    .schema(json!({ "type": "string", "format": "uri" })),
            )
            .allowed_host("https://{shop}.myshopify.com")
            .allowed_host("{base_url}")
            // Shopify's bucket holds 40 calls and leaks 2 per second; it is
            // shared by everything using the same app on the store, so keep
            // a few calls in reserve instead of filling it.
            .rate_limit(2, 1000, 35)
            .trigger(
                Trigger::webhook("order-created", "Order created")
                    .description("A new order (topic orders/create), signed by Shopify")
                    .params_schema(schemas::no_params())
                    .event_schema(schemas::order()),
            )
            .trigger(
                Trigger::webhook("order-changed", "Order changed")
                    .description(
                        "An order created or changed (topic orders/updated), signed by Shopify; \
                         Shopify may send it late, twice or not at all: pair it with \
                         order-updated for reconciliation",
                    )
                    .params_schema(schemas::no_params())
                    .event_schema(schemas::order()),
            )
            .trigger(
                Trigger::polling("order-updated", "Order updated")
                    .description("Orders created or changed since the last poll, oldest first")
                    .poll_interval_secs(60)
                    .params_schema(schemas::order_updated_params())
                    .event_schema(schemas::order()),
            )
            .action(
                Action::search("find-order", "Find order")
                    .description("By id or by name (#1001); found is false when there is none")
                    .input_schema(schemas::find_order_input())
                    .output_schema(schemas::find_order_output()),
            )
            .action(
                Action::update("tag-order", "Tag order")
                    .description(
                        "Adds and removes tags (a status such as Ready to ship or Delivered) and adds a note",
                    )
                    .input_schema(schemas::tag_order_input())
                    .output_schema(schemas::tag_order_output()),
            )
            .action(
                Action::create("create-fulfillment", "Create fulfillment")
                    .description("Fulfils what is left of an order, with tracking details")
                    .input_schema(schemas::create_fulfillment_input())
                    .output_schema(schemas::create_fulfillment_output()),
            )
            .action(
                Action::update("set-inventory", "Set inventory")
                    .description("Sets the available quantity of an item (or a SKU) at a location")
                    .input_schema(schemas::set_inventory_input())
                    .output_schema(schemas::set_inventory_output()),
            )
    }

    fn test_connection(ctx: &Context) -> Result<(), Error> {
        let shop = api::Shop::new(ctx)?;
        api::send(switchyard_sdk::http::Request::get(shop.url("/shop.json")))?;
        Ok(())
    }

    fn perform(
        ctx: &Context,
        action: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<Value, Error> {
        match action {
            "find-order" => actions::find_order(ctx, api::input(input)?),
            "tag-order" => actions::tag_order(ctx, api::input(input)?, idempotency_key),
            "create-fulfillment" => {
                actions::create_fulfillment(ctx, api::input(input)?, idempotency_key)
            }
            "set-inventory" => actions::set_inventory(ctx, api::input(input)?, idempotency_key),
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
            "order-updated" => triggers::poll_orders(ctx, api::input(params)?, cursor),
            _ => Err(Error::unknown_trigger(trigger)),
        }
    }

    fn subscribe(
        ctx: &Context,
        trigger: &str,
        _params: Value,
        target_url: &str,
    ) -> Result<String, Error> {
        let topic = triggers::topic(trigger)?;
        triggers::subscribe(ctx, topic, target_url)
    }

    fn unsubscribe(ctx: &Context, trigger: &str, _params: Value, state: &str) -> Result<(), Error> {
        triggers::topic(trigger)?;
        triggers::unsubscribe(ctx, state)
    }

    fn handle_webhook(
        _ctx: &Context,
        trigger: &str,
        _params: Value,
        request: WebhookRequest,
    ) -> Result<WebhookOutcome, Error> {
        let topic = triggers::topic(trigger)?;
        triggers::handle_delivery(topic, &request)
    }
}

#[cfg(test)]
mod tests {
    //! Native unit tests of what needs no HTTP; the host's tests drive the
    //! connector against a fake Shopify.

    use super::*;

    #[test]
    fn manifest_declares_everything() {
        let m = Shopify::describe();
        assert_eq!((m.key.as_str(), m.version.as_str()), ("shopify", "0.1.1"));
        let actions: Vec<_> = m.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            actions,
            [
                "find-order",
                "tag-order",
                "create-fulfillment",
                "set-inventory"
            ]
        );
        let triggers: Vec<_> = m.triggers.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            triggers,
            ["order-created", "order-changed", "order-updated"]
        );
        assert_eq!(
            m.allowed_hosts,
            ["https://{shop}.myshopify.com", "{base_url}"]
        );
        let secret: Vec<_> = m
            .connection_properties
            .iter()
            .filter(|p| p.secret)
            .map(|p| p.key.as_str())
            .collect();
        assert_eq!(secret, ["api_key", "webhook_secret"]);
    }

    #[test]
    fn the_shop_root() {
        let ctx = |properties: Value| Context {
            connection: Some(switchyard_sdk::Connection {
                id: "c".into(),
                properties,
            }),
            ..Context::default()
        };
        let url = |p: Value| api::Shop::new(&ctx(p)).map(|s| s.url("/shop.json"));
        assert_eq!(
            url(json!({ "shop": "acme" })).unwrap(),
            "https://acme.myshopify.com/admin/api/2024-10/shop.json"
        );
        assert_eq!(
            url(json!({ "shop": "acme", "api_version": "2025-01", "base_url": "http://127.0.0.2:9/" }))
                .unwrap(),
            "http://127.0.0.2:9/admin/api/2025-01/shop.json"
        );
        assert!(url(json!({})).is_err());
    }
}
