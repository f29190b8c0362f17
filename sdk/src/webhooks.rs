//! Webhook signature checks, done by the host against secrets the connector never sees.

use crate::bindings::switchyard::connector::types::Header;
use crate::bindings::switchyard::connector::webhooks as wit;
use crate::error::Error;

pub use crate::bindings::switchyard::connector::webhooks::{Encoding, GenericHmac, Scheme};

/// Checks a delivery's signature with the secret connection property
/// `secret_property`.
///
/// A bad or missing signature (or a secret the connection does not have)
/// is an invalid-input error with the host's reason: the delivery is
/// refused, and it says nothing about the connection's own credentials.
pub fn verify(
    scheme: &Scheme,
    secret_property: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), Error> {
    let headers: Vec<Header> = headers
        .iter()
        .map(|(name, value)| Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    wit::verify(scheme, secret_property, &headers, body)
        .map_err(|reason| Error::invalid_input(format!("webhook signature rejected: {reason}")))
}

impl Scheme {
    /// HMAC-SHA256 of the raw body in `header`, encoded as `encoding`, after
    /// `prefix` (for example `sha256=`, or empty).
    pub fn hmac_sha256(
        header: impl Into<String>,
        encoding: Encoding,
        prefix: impl Into<String>,
    ) -> Self {
        Self::HmacSha256(GenericHmac {
            header: header.into(),
            encoding,
            prefix: prefix.into(),
        })
    }
}
