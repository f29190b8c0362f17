//! The only way out of the sandbox: every outbound request of every plugin
//! passes through [`HttpSandbox::send`], which decides (see [`policy`]), adds
//! credentials, enforces limits, records the exchange and scrubs the
//! connection's secrets out of the response.

pub mod auth;
mod auth_url;
pub mod digest;
mod http;
pub mod login;
pub mod policy;
pub mod scrub;
pub mod signatures;
pub mod sigv4;

pub use http::{
    Exchange, HttpSandbox, Outbound, OutboundRequest, OutboundResponse, SandboxConfig, SendError,
};
pub use login::{LoginFailure, LoginFailureKind};
