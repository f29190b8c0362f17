//! What a connector can be asked to do, whatever runs it. The call path
//! (`calls`) talks to this trait only; today's implementation is a
//! WebAssembly component run by the wasmtime [`Engine`], and another kind of
//! connector is another implementation, with no change to its callers.

use std::sync::Arc;

use crate::{
    engine::{
        CallEnv, CallOutcome, Engine, GuestContext, LoadedPlugin, PollOutput, WebhookInput,
        WebhookOutput,
    },
    store::BoxFuture,
};

/// The operations of the contract, each returning the outcome with its
/// journal and duration. Arguments that are JSON in the contract are JSON
/// text here.
pub trait Connector: Send + Sync {
    fn test_connection(&self, env: CallEnv, ctx: GuestContext) -> BoxFuture<'_, CallOutcome<()>>;

    fn perform<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        action: &'a str,
        input: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, CallOutcome<String>>;

    fn poll<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, CallOutcome<PollOutput>>;

    fn subscribe<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        target_url: &'a str,
    ) -> BoxFuture<'a, CallOutcome<String>>;

    fn unsubscribe<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        state: &'a str,
    ) -> BoxFuture<'a, CallOutcome<()>>;

    fn handle_webhook<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        request: WebhookInput,
    ) -> BoxFuture<'a, CallOutcome<WebhookOutput>>;
}

/// A connector compiled to a WebAssembly component: a fresh isolated
/// instance per call.
pub struct WasmConnector {
    pub engine: Arc<Engine>,
    pub plugin: LoadedPlugin,
}

impl Connector for WasmConnector {
    fn test_connection(&self, env: CallEnv, ctx: GuestContext) -> BoxFuture<'_, CallOutcome<()>> {
        Box::pin(self.engine.test_connection(&self.plugin, env, ctx))
    }

    fn perform<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        action: &'a str,
        input: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, CallOutcome<String>> {
        Box::pin(
            self.engine
                .perform(&self.plugin, env, ctx, action, input, idempotency_key),
        )
    }

    fn poll<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, CallOutcome<PollOutput>> {
        Box::pin(
            self.engine
                .poll(&self.plugin, env, ctx, trigger, params, cursor),
        )
    }

    fn subscribe<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        target_url: &'a str,
    ) -> BoxFuture<'a, CallOutcome<String>> {
        Box::pin(
            self.engine
                .subscribe(&self.plugin, env, ctx, trigger, params, target_url),
        )
    }

    fn unsubscribe<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        state: &'a str,
    ) -> BoxFuture<'a, CallOutcome<()>> {
        Box::pin(
            self.engine
                .unsubscribe(&self.plugin, env, ctx, trigger, params, state),
        )
    }

    fn handle_webhook<'a>(
        &'a self,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &'a str,
        params: &'a str,
        request: WebhookInput,
    ) -> BoxFuture<'a, CallOutcome<WebhookOutput>> {
        Box::pin(
            self.engine
                .handle_webhook(&self.plugin, env, ctx, trigger, params, request),
        )
    }
}
