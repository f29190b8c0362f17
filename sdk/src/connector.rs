//! The `Connector` trait: what a connector author implements.

use serde_json::Value;

use crate::context::{Context, PollResult, WebhookOutcome, WebhookRequest};
use crate::error::Error;
use crate::manifest::Manifest;

/// A connector: a manifest plus the calls the host makes into it.
///
/// Export an implementation with [`export_connector!`](crate::export_connector).
/// Only [`describe`](Connector::describe) is required; every other call has
/// a default that refuses it, so a connector implements what its manifest
/// declares. JSON crosses the boundary as [`serde_json::Value`]: the host has
/// already validated inputs and params against the manifest's schemas.
///
/// Functions take no `self`: each call may run in a fresh instance, so
/// nothing should be kept between calls (use the poll cursor or the
/// subscription state for that).
pub trait Connector {
    /// The manifest. Must not call imports (no HTTP, no logging) and must
    /// return the same value every time.
    fn describe() -> Manifest;

    /// Checks that a connection works, typically by fetching the current user.
    fn test_connection(ctx: &Context) -> Result<(), Error> {
        let _ = ctx;
        Err(Error::not_supported("test-connection"))
    }

    /// Runs the action `action`. `idempotency_key` is the same for every
    /// retry of a flow step: pass it on to APIs that accept one.
    fn perform(
        ctx: &Context,
        action: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<Value, Error> {
        let _ = (ctx, input, idempotency_key);
        Err(Error::unknown_action(action))
    }

    /// Fetches the events of the polling trigger `trigger` since `cursor`
    /// (`None` on the first poll).
    fn poll(
        ctx: &Context,
        trigger: &str,
        params: Value,
        cursor: Option<&str>,
    ) -> Result<PollResult, Error> {
        let _ = (ctx, params, cursor);
        Err(Error::unknown_trigger(trigger))
    }

    /// Registers a webhook for `trigger` pointing at `target_url` when a flow
    /// is activated; returns state (for example the webhook's id) that the
    /// host hands back to [`unsubscribe`](Connector::unsubscribe).
    fn subscribe(
        ctx: &Context,
        trigger: &str,
        params: Value,
        target_url: &str,
    ) -> Result<String, Error> {
        let _ = (ctx, trigger, params, target_url);
        Err(Error::not_supported("subscribe"))
    }

    /// Removes the webhook registered by [`subscribe`](Connector::subscribe).
    fn unsubscribe(ctx: &Context, trigger: &str, params: Value, state: &str) -> Result<(), Error> {
        let _ = (ctx, trigger, params, state);
        Err(Error::not_supported("unsubscribe"))
    }

    /// Turns a delivery for the webhook trigger `trigger` into events (and
    /// optionally a synchronous response). Verify the signature first.
    fn handle_webhook(
        ctx: &Context,
        trigger: &str,
        params: Value,
        request: WebhookRequest,
    ) -> Result<WebhookOutcome, Error> {
        let _ = (ctx, params, request);
        Err(Error::unknown_trigger(trigger))
    }
}

impl Error {
    /// The invalid-input error for an action key the connector does not have.
    pub fn unknown_action(key: &str) -> Self {
        Self::invalid_input(format!("unknown action `{key}`"))
    }

    /// The invalid-input error for a trigger key the connector does not have
    /// (or not of the kind called).
    pub fn unknown_trigger(key: &str) -> Self {
        Self::invalid_input(format!("unknown trigger `{key}`"))
    }

    /// The permanent error for a call the connector does not implement.
    pub fn not_supported(call: &str) -> Self {
        Self::permanent(format!("{call} is not supported by this connector"))
    }
}
