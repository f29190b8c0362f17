//! The glue between the `Connector` trait and the generated `Guest` trait, and `export_connector!`.
//!
//! Converts JSON text to `serde_json::Value` and back, the WIT records to the
//! SDK's types, and `Error` to the WIT `connector-error`.

use serde_json::Value;

use crate::bindings::exports::switchyard::connector::plugin::{
    Guest, PollResult, WebhookOutcome, WebhookRequest,
};
use crate::bindings::switchyard::connector::manifest::Manifest as WitManifest;
use crate::bindings::switchyard::connector::types::{self as wit, ConnectorError};
use crate::connector::Connector;
use crate::context::{self, Context};
use crate::error::Error;

impl<T: Connector> Guest for T {
    fn describe() -> WitManifest {
        T::describe().into_wit()
    }

    fn test_connection(ctx: wit::Context) -> Result<(), ConnectorError> {
        let ctx = Context::from_wit(ctx)?;
        Ok(T::test_connection(&ctx)?)
    }

    fn perform(
        ctx: wit::Context,
        action: String,
        input: wit::Json,
        idempotency_key: String,
    ) -> Result<wit::Json, ConnectorError> {
        let ctx = Context::from_wit(ctx)?;
        let input = parse("input", &input)?;
        Ok(T::perform(&ctx, &action, input, &idempotency_key)?.to_string())
    }

    fn poll(
        ctx: wit::Context,
        trigger: String,
        params: wit::Json,
        cursor: Option<String>,
    ) -> Result<PollResult, ConnectorError> {
        let ctx = Context::from_wit(ctx)?;
        let params = parse("params", &params)?;
        Ok(T::poll(&ctx, &trigger, params, cursor.as_deref())?.into_wit())
    }

    fn subscribe(
        ctx: wit::Context,
        trigger: String,
        params: wit::Json,
        target_url: String,
    ) -> Result<String, ConnectorError> {
        let ctx = Context::from_wit(ctx)?;
        let params = parse("params", &params)?;
        Ok(T::subscribe(&ctx, &trigger, params, &target_url)?)
    }

    fn unsubscribe(
        ctx: wit::Context,
        trigger: String,
        params: wit::Json,
        state: String,
    ) -> Result<(), ConnectorError> {
        let ctx = Context::from_wit(ctx)?;
        let params = parse("params", &params)?;
        Ok(T::unsubscribe(&ctx, &trigger, params, &state)?)
    }

    fn handle_webhook(
        ctx: wit::Context,
        trigger: String,
        params: wit::Json,
        request: WebhookRequest,
    ) -> Result<WebhookOutcome, ConnectorError> {
        let ctx = Context::from_wit(ctx)?;
        let params = parse("params", &params)?;
        let request = context::WebhookRequest::from_wit(request);
        Ok(T::handle_webhook(&ctx, &trigger, params, request)?.into_wit())
    }
}

/// Parses the JSON text of the argument `field`.
fn parse(field: &str, text: &str) -> Result<Value, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::invalid_input(format!("`{field}` is not valid JSON: {e}")))
}

/// Exports a [`Connector`](crate::Connector) implementation as the
/// component's `describe`, `perform`, `poll`... functions.
///
/// Use it once, in the connector's crate root: `switchyard_sdk::export_connector!(MyConnector);`.
/// It expands to nothing when not compiling for WebAssembly, so a connector's
/// own unit tests can run natively (the exported names, such as `poll`,
/// would clash with the C library's there).
#[macro_export]
macro_rules! export_connector {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
    $crate::bindings::export!($ty with_types_in $crate::bindings);
        };
        // A clearer error than "Guest is not implemented" when the trait is missing.
        const _: fn() = || {
            fn assert_connector<T: $crate::Connector>() {}
            assert_connector::<$ty>();
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::switchyard::connector::types::{Connection, Header};
    use crate::context::{Event, WebhookOutcome as Outcome};
    use crate::manifest::{Action, Manifest};
    use serde_json::json;

    struct Echo;

    impl Connector for Echo {
        fn describe() -> Manifest {
            Manifest::new("echo", "Echo", "0.1.0").action(Action::other("echo", "Echo"))
        }

        fn perform(
            ctx: &Context,
            action: &str,
            input: Value,
            idempotency_key: &str,
        ) -> Result<Value, Error> {
            match action {
                "echo" => Ok(json!({
                    "input": input,
                    "key": idempotency_key,
                    "shop": ctx.string_property("shop")?,
                })),
                _ => Err(Error::unknown_action(action)),
            }
        }

        fn handle_webhook(
            _ctx: &Context,
            _trigger: &str,
            params: Value,
            request: crate::WebhookRequest,
        ) -> Result<Outcome, Error> {
            let body: Value = request.json()?;
            Ok(Outcome::new(vec![Event::new(
                "e1",
                json!({ "body": body, "params": params }),
            )]))
        }
    }

    fn ctx() -> wit::Context {
        wit::Context {
            connection: Some(Connection {
                id: "c".into(),
                properties: r#"{"shop":"acme"}"#.into(),
            }),
            env: vec![],
            trace_id: "t".into(),
        }
    }

    #[test]
    fn json_crosses_as_text() {
        let out =
            <Echo as Guest>::perform(ctx(), "echo".into(), r#"[1,2]"#.into(), "k".into()).unwrap();
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out, json!({ "input": [1, 2], "key": "k", "shop": "acme" }));
        assert_eq!(
            <Echo as Guest>::describe().actions[0].input_schema,
            r#"{"type":"object"}"#
        );
    }

    #[test]
    fn invalid_json_names_the_field() {
        let err = <Echo as Guest>::perform(ctx(), "echo".into(), "{".into(), "k".into());
        assert!(
            matches!(err, Err(ConnectorError::InvalidInput(m)) if m.starts_with("`input` is not valid JSON"))
        );
        let err = <Echo as Guest>::poll(ctx(), "t".into(), "nope".into(), None);
        assert!(
            matches!(err, Err(ConnectorError::InvalidInput(m)) if m.starts_with("`params` is not valid JSON"))
        );
    }

    #[test]
    fn defaults_refuse() {
        assert_eq!(
            <Echo as Guest>::perform(ctx(), "nope".into(), "{}".into(), "k".into()),
            Err(ConnectorError::InvalidInput("unknown action `nope`".into()))
        );
        assert_eq!(
            <Echo as Guest>::poll(ctx(), "new".into(), "{}".into(), None),
            Err(ConnectorError::InvalidInput("unknown trigger `new`".into()))
        );
        assert_eq!(
            <Echo as Guest>::test_connection(ctx()),
            Err(ConnectorError::Permanent(
                "test-connection is not supported by this connector".into()
            ))
        );
        assert_eq!(
            <Echo as Guest>::subscribe(ctx(), "t".into(), "{}".into(), "https://x".into()),
            Err(ConnectorError::Permanent(
                "subscribe is not supported by this connector".into()
            ))
        );
        assert_eq!(
            <Echo as Guest>::unsubscribe(ctx(), "t".into(), "{}".into(), "s".into()),
            Err(ConnectorError::Permanent(
                "unsubscribe is not supported by this connector".into()
            ))
        );
    }

    #[test]
    fn webhook_outcome_converts() {
        let request = WebhookRequest {
            method: "POST".into(),
            query: String::new(),
            headers: vec![Header {
                name: "Content-Type".into(),
                value: "application/json".into(),
            }],
            body: br#"{"id":1}"#.to_vec(),
        };
        let outcome =
            <Echo as Guest>::handle_webhook(ctx(), "t".into(), r#"{"p":true}"#.into(), request)
                .unwrap();
        assert_eq!(outcome.events.len(), 1);
        assert_eq!(outcome.events[0].id, "e1");
        let payload: Value = serde_json::from_str(&outcome.events[0].payload).unwrap();
        assert_eq!(
            payload,
            json!({ "body": { "id": 1 }, "params": { "p": true } })
        );
        assert!(outcome.response.is_none());
    }
}
