//! The Rust SDK for Switchyard connectors: a connector is a [`Manifest`] plus a [`Connector`] impl.
//!
//! A connector is a WebAssembly component built for `wasm32-wasip2` from a
//! `cdylib` crate. It describes itself with a manifest (auth, connection
//! properties, allowed hosts, triggers, actions with JSON Schemas) and
//! reaches the outside world only through [`http`], which the host sandboxes
//! and adds credentials to. Secrets never reach the connector.
//!
//! ```
//! use switchyard_sdk::{Action, Connector, Context, Error, Manifest, Value, http, json, log};
//!
//! struct Hello;
//!
//! impl Connector for Hello {
//!     fn describe() -> Manifest {
//!         Manifest::new("hello", "Hello", env!("CARGO_PKG_VERSION"))
//!             .description("Says hello, or fetches a greeting")
//!             .allowed_host("https://api.hello.test")
//!             .action(
//!                 Action::other("greet", "Greet")
//!                     .input_schema(json!({
//!                         "type": "object",
//!                         "required": ["name"],
//!                         "properties": { "name": { "type": "string" } }
//!                     }))
//!                     .output_schema(json!({ "type": "object" })),
//!             )
//!             .action(Action::search("fetch-greeting", "Fetch a greeting"))
//!     }
//!
//!     fn perform(ctx: &Context, action: &str, input: Value, _key: &str) -> Result<Value, Error> {
//!         match action {
//!             "greet" => {
//!                 let name = input["name"].as_str().unwrap_or("there");
//!                 Ok(json!({ "greeting": format!("Hello, {name}!") }))
//!             }
//!             "fetch-greeting" => {
//!                 log::info!("fetching a greeting for {}", ctx.trace_id);
//!                 let response = http::Request::get("https://api.hello.test/greeting")
//!                     .send()?
//!                     .error_for_status()?;
//!                 response.json()
//!             }
//!             _ => Err(Error::unknown_action(action)),
//!         }
//!     }
//! }
//!
//! // In a connector crate (`crate-type = ["cdylib"]`), this exports `Hello`
//! // as the component's functions. It expands to nothing on native targets,
//! // where connector code can be unit-tested directly:
//! switchyard_sdk::export_connector!(Hello);
//!
//! let out = Hello::perform(&Context::default(), "greet", json!({ "name": "Ada" }), "k1").unwrap();
//! assert_eq!(out, json!({ "greeting": "Hello, Ada!" }));
//! assert_eq!(Hello::describe().actions.len(), 2);
//! ```
//!
//! `plugins/example` in the Switchyard repository is a complete connector
//! (API-key auth, actions, a polling and a webhook trigger) to start from.

#![deny(missing_docs)]

#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bindings;

mod connector;
mod context;
pub mod cursor;
mod error;
mod export;
pub mod http;
pub mod log;
pub mod manifest;
pub mod paging;
pub mod time;
pub mod webhooks;

pub use connector::Connector;
pub use context::{
    Connection, Context, Event, PollResult, WebhookOutcome, WebhookRequest, WebhookResponse,
};
pub use error::{Error, Result};
pub use manifest::{
    Action, ActionKind, AuthScheme, Manifest, Property, RateLimit, Session, TokenSource, Trigger,
    TriggerKind,
};
pub use serde_json::{self, Value, json};
