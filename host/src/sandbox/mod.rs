//! The only way out of the sandbox: every outbound request of every plugin
//! passes through [`HttpSandbox::send`], which decides (see [`policy`]), adds
//! credentials, enforces limits and records the exchange.

pub mod auth;
pub mod digest;
mod http;
pub mod policy;
pub mod signatures;

pub use http::{
    Exchange, HttpSandbox, Outbound, OutboundRequest, OutboundResponse, SandboxConfig, SendError,
};
