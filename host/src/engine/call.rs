//! What a plugin call takes from its caller and gives back: the call's
//! environment, the connector's own errors, the host's limits, and the journal
//! (log lines and HTTP exchanges) every call produces.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use crate::sandbox::{Exchange, LoginFailure, LoginFailureKind, Outbound};

/// Everything a call may use besides its arguments.
#[derive(Clone, Default)]
pub struct CallEnv {
    /// Where the plugin may send requests; `None` refuses every request.
    pub outbound: Option<Outbound>,
    /// Secret connection properties, used by the host for signature checks.
    /// Never handed to the guest.
    pub secrets: Arc<BTreeMap<String, String>>,
    /// A deadline other than the engine's (a live test's).
    pub timeout: Option<Duration>,
    /// Record every request the guest sends and the response it gets,
    /// bodies included, secrets cut out (a live test shows them).
    pub capture: bool,
    /// A connection that opts in to warm instances: its key
    /// (`{tenant}/{connection}`). The call may run in an instance kept from
    /// an earlier call with the same key, and leaves its own for the next.
    pub warm: Option<Arc<str>>,
}

/// A failure the connector reported; the engine decides what to do from its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConnectorError {
    #[error("transient: {message}")]
    Transient { message: String },
    #[error("rate limited (retry after {retry_after_ms} ms): {message}")]
    RateLimited {
        retry_after_ms: u64,
        message: String,
    },
    #[error("auth: {message}")]
    Auth { message: String },
    #[error("invalid input: {message}")]
    InvalidInput { message: String },
    #[error("permanent: {message}")]
    Permanent { message: String },
}

impl From<LoginFailure> for ConnectorError {
    /// The kind the engine acts on: wrong credentials pause the connection,
    /// a 429 waits for its Retry-After, an unavailable server is retried.
    fn from(failure: LoginFailure) -> Self {
        let message = failure.message;
        match failure.kind {
            LoginFailureKind::Refused => ConnectorError::Auth { message },
            LoginFailureKind::RateLimited { retry_after_ms } => ConnectorError::RateLimited {
                retry_after_ms,
                message,
            },
            LoginFailureKind::Unavailable => ConnectorError::Transient { message },
            LoginFailureKind::Broken => ConnectorError::Permanent { message },
        }
    }
}

/// Why a call did not produce the connector's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallError {
    /// The connector returned an error value.
    #[error("{error}")]
    Connector { error: ConnectorError },
    /// The call ran past its deadline and was stopped.
    #[error("the plugin ran past its {limit_ms} ms deadline and was stopped")]
    Timeout { limit_ms: u64 },
    /// The plugin tried to grow a memory past its cap.
    #[error("the plugin tried to grow its memory to {desired} bytes, over its {limit} byte limit")]
    MemoryLimit { limit: usize, desired: usize },
    /// The plugin trapped (a panic, an unreachable, a bad memory access).
    #[error("the plugin trapped: {message}")]
    Trap { message: String },
    /// The plugin could not be instantiated (limits, exhausted pool).
    #[error("the plugin could not be started: {message}")]
    Instantiate { message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// What a call left behind for the run log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Journal {
    pub logs: Vec<LogLine>,
    pub exchanges: Vec<Exchange>,
    /// Lines dropped because the call logged more than the host keeps.
    pub dropped_logs: usize,
    /// With [`CallEnv::capture`]: each request as the guest sent it and
    /// the response it got (no credentials: the host adds those later).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<Captured>,
}

/// One request of a captured call and its answer, as the guest saw them,
/// with every secret value of the connection cut out.
#[derive(Debug, Clone, Serialize)]
pub struct Captured {
    pub request: CapturedMessage,
    pub response: Option<CapturedMessage>,
    pub error: Option<String>,
}

/// A request or response of a captured call.
#[derive(Debug, Clone, Serialize)]
pub struct CapturedMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// The body as text (cut at 64 KiB).
    pub body: String,
}

/// Bytes of a captured body kept.
const CAPTURED_BODY: usize = 64 << 10;

impl CapturedMessage {
    /// `bytes` as text for a captured message, cut at 64 KiB, with every
    /// `secrets` value replaced by `********`.
    pub(crate) fn body_text(bytes: &[u8], secrets: &[&str]) -> String {
        let mut text =
            String::from_utf8_lossy(&bytes[..bytes.len().min(CAPTURED_BODY)]).into_owned();
        if bytes.len() > CAPTURED_BODY {
            text.push('…');
        }
        redact(&text, secrets)
    }
}

/// `text` with every secret value (of four characters or more) replaced.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(secret) {
            out = out.replace(secret, "********");
        }
    }
    out
}

const MAX_LOG_LINES: usize = 1000;
const MAX_LOG_LINE: usize = 8 << 10;

impl Journal {
    pub fn log(&mut self, level: LogLevel, mut message: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            self.dropped_logs += 1;
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.logs.push(LogLine { level, message });
    }
}

/// The result of one call with its journal and duration.
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub result: Result<T, CallError>,
    pub journal: Journal,
    pub duration: Duration,
}
