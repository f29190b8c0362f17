//! The error a connector returns: one variant per thing the host can do about it.

use crate::bindings::switchyard::connector::types::{ConnectorError, RateLimited};

/// A failed call, classified by what the host should do next.
///
/// The host retries [`Error::Transient`] with backoff, retries
/// [`Error::RateLimited`] after the given delay, pauses the connection on
/// [`Error::Auth`], and gives up on [`Error::InvalidInput`] and
/// [`Error::Permanent`]. Messages end up in the run log, so they should say
/// what failed and never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Worth retrying later with backoff: timeouts, 5xx, dropped connections.
    #[error("transient: {0}")]
    Transient(String),
    /// Worth retrying after `retry_after_ms` milliseconds (a 429 with `Retry-After`).
    #[error("rate limited, retry after {retry_after_ms} ms: {message}")]
    RateLimited {
        /// How long to wait before the next attempt.
        retry_after_ms: u64,
        /// What was rate limited.
        message: String,
    },
    /// The credentials are wrong or expired: the host pauses the connection.
    #[error("auth: {0}")]
    Auth(String),
    /// The input cannot work; retrying will not help.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Any other failure that retrying will not fix.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl Error {
    /// A failure worth retrying with backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(message.into())
    }

    /// A failure worth retrying after `retry_after_ms` milliseconds.
    pub fn rate_limited(retry_after_ms: u64, message: impl Into<String>) -> Self {
        Self::RateLimited {
            retry_after_ms,
            message: message.into(),
        }
    }

    /// Wrong or expired credentials.
    pub fn auth(message: impl Into<String>) -> Self {
        Self::Auth(message.into())
    }

    /// Input that cannot work, whatever the number of retries.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// Any other failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::Transient(m) | Self::Auth(m) | Self::InvalidInput(m) | Self::Permanent(m) => m,
            Self::RateLimited { message, .. } => message,
        }
    }

    /// Whether the host would try the call again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::RateLimited { .. })
    }
}

impl From<Error> for ConnectorError {
    fn from(error: Error) -> Self {
        match error {
            Error::Transient(m) => Self::Transient(m),
            Error::RateLimited {
                retry_after_ms,
                message,
            } => Self::RateLimited(RateLimited {
                retry_after_ms,
                message,
            }),
            Error::Auth(m) => Self::Auth(m),
            Error::InvalidInput(m) => Self::InvalidInput(m),
            Error::Permanent(m) => Self::Permanent(m),
        }
    }
}

/// The result type of connector code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_the_wit_variant() {
        let wit: ConnectorError = Error::rate_limited(1500, "slow down").into();
        assert_eq!(
            wit,
            ConnectorError::RateLimited(RateLimited {
                retry_after_ms: 1500,
                message: "slow down".into()
            })
        );
        assert_eq!(
            ConnectorError::from(Error::auth("bad key")),
            ConnectorError::Auth("bad key".into())
        );
    }

    #[test]
    fn message_and_retryability() {
        assert_eq!(Error::permanent("nope").message(), "nope");
        assert!(Error::transient("x").is_retryable());
        assert!(!Error::invalid_input("x").is_retryable());
        assert_eq!(
            Error::rate_limited(10, "m").to_string(),
            "rate limited, retry after 10 ms: m"
        );
    }
}
