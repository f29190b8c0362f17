//! The per-call store state and the imports the host gives a connector:
//! `http.send` (through the sandbox), `log`, and webhook signature checks.
//! WASI is linked with an empty context: no files, environment or sockets.
//! A failed sign-in of the host's is kept here to become the call's outcome.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView, p2::pipe::MemoryOutputPipe};

use std::sync::Arc;

use super::bindings::declarative_v0_1::switchyard::declarative::spec;
use super::bindings::v0_1::switchyard::connector::{http, log, manifest, types, webhooks};
use super::call::{CallEnv, Captured, CapturedMessage, Journal, LogLevel, redact};
use crate::sandbox::{LoginFailure, OutboundRequest, SendError, signatures};

/// Bytes of stdout or stderr kept per call; writes past it fail in the guest.
pub(super) const OUTPUT_CAP: usize = 256 << 10;

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) deadline: Instant,
    pub(super) env: CallEnv,
    pub(super) journal: Journal,
    /// The host's sign-in for the connection failed during this call: that
    /// decides the call's outcome, whatever the guest makes of its error.
    pub(super) login_failure: Option<LoginFailure>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Bytes of stdout and stderr already moved into a journal (a warm
    /// instance's pipes hold its earlier calls' output too).
    printed: [usize; 2],
    /// What the `spec` import returns (declarative versions only).
    spec: Option<Arc<str>>,
}

impl HostState {
    pub(super) fn new(
        env: CallEnv,
        limiter: Limiter,
        deadline: Instant,
        spec: Option<Arc<str>>,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAP);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAP);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            deadline,
            env,
            journal: Journal::default(),
            login_failure: None,
            stdout,
            stderr,
            printed: [0, 0],
            spec,
        }
    }

    /// Readies a warm instance's state for its next call: that call's
    /// environment (outbound access, credentials, secrets) and deadline, an
    /// empty journal, no failed sign-in. The WASI context and its resource
    /// table stay: the guest's standard library holds handles into them.
    pub(super) fn begin_call(&mut self, env: CallEnv, deadline: Instant) {
        self.env = env;
        self.deadline = deadline;
        self.journal = Journal::default();
        self.login_failure = None;
    }

    /// Lets go of the finished call's environment before the instance waits
    /// idle: its credentials (which hold the host's services) are not kept
    /// past the call.
    pub(super) fn end_call(&mut self) {
        self.env = CallEnv::default();
    }

    /// Bytes of output the pipes hold, of [`OUTPUT_CAP`] each: a warm
    /// instance is retired before its pipes fill up.
    pub(super) fn output_used(&self) -> usize {
        self.printed[0].max(self.printed[1])
    }

    /// Moves what the guest printed into the journal and hands it over.
    pub(super) fn take_journal(&mut self) -> Journal {
        for (i, pipe, level) in [
            (0, &self.stdout, LogLevel::Info),
            (1, &self.stderr, LogLevel::Warn),
        ] {
            let bytes = pipe.contents();
            let new = bytes.get(self.printed[i]..).unwrap_or_default();
            self.printed[i] = bytes.len();
            for line in String::from_utf8_lossy(new)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                self.journal.log(level, line.to_string());
            }
        }
        std::mem::take(&mut self.journal)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps each linear memory of an instance and the size of its tables.
pub(super) struct Limiter {
    pub(super) memory_limit: usize,
}

/// Raised from the limiter so the engine can tell a memory cap from a bug.
#[derive(Debug)]
pub(super) struct MemoryLimitHit {
    pub(super) desired: usize,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory limit reached growing to {} bytes", self.desired)
    }
}

impl std::error::Error for MemoryLimitHit {}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryLimitHit { desired }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl types::Host for HostState {}

impl spec::Host for HostState {
    /// The version's spec; empty when the interpreter runs without one (it
    /// then describes itself).
    async fn get(&mut self) -> String {
        self.spec.as_deref().unwrap_or_default().to_string()
    }
}
impl manifest::Host for HostState {}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let Some(outbound) = self.env.outbound.clone() else {
            return Err(http::HttpError::Denied(
                "this call has no network access (no connection or allowed hosts)".to_string(),
            ));
        };
        // One failed sign-in per call: a guest that retries must not make
        // the host log in again (a refused one is also held for other calls).
        if let Some(failure) = &self.login_failure {
            return Err(http::HttpError::Connection(failure.message.clone()));
        }
        let budget = self.deadline.saturating_duration_since(Instant::now());
        // Connection secrets and the version's secret variables.
        let secrets: Vec<String> = if self.env.capture {
            let held = outbound.credentials.as_ref().map(|c| c.secrets.clone());
            self.env
                .secrets
                .values()
                .cloned()
                .chain(held.into_iter().flatten())
                .collect()
        } else {
            Vec::new()
        };
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let captured_request = self.env.capture.then(|| CapturedMessage {
            method: Some(request.method.clone()),
            url: Some(redact(&request.url, &secrets)),
            status: None,
            headers: request
                .headers
                .iter()
                .map(|h| (h.name.clone(), redact(&h.value, &secrets)))
                .collect(),
            body: CapturedMessage::body_text(&request.body, &secrets),
        });
        let request = OutboundRequest {
            method: request.method,
            url: request.url,
            headers: request
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: request.body,
            timeout: request
                .timeout_ms
                .map(|ms| std::time::Duration::from_millis(ms.into())),
        };
        let (result, exchanges) = outbound.sandbox.send(&outbound, request, budget).await;
        self.journal.exchanges.extend(exchanges);
        if let Some(request) = captured_request {
            self.journal.pages.push(Captured {
                request,
                response: result.as_ref().ok().map(|r| CapturedMessage {
                    method: None,
                    url: None,
                    status: Some(r.status),
                    headers: r
                        .headers
                        .iter()
                        .map(|(n, v)| (n.clone(), redact(v, &secrets)))
                        .collect(),
                    body: CapturedMessage::body_text(&r.body, &secrets),
                }),
                error: result
                    .as_ref()
                    .err()
                    .map(|e| redact(&e.to_string(), &secrets)),
            });
        }
        result
            .map(|r| http::Response {
                status: r.status,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(name, value)| types::Header { name, value })
                    .collect(),
                body: r.body,
            })
            .map_err(|e| match e {
                SendError::Denied(m) => http::HttpError::Denied(m),
                SendError::Timeout(m) => http::HttpError::Timeout(m),
                SendError::TooLarge(m) => http::HttpError::TooLarge(m),
                SendError::Connection(m) => http::HttpError::Connection(m),
                SendError::InvalidRequest(m) => http::HttpError::InvalidRequest(m),
                // Not `denied`: the sandbox allowed the request; the server
                // refused the host's sign-in (or was unavailable for it).
                SendError::Login(failure) => {
                    let message = failure.message.clone();
                    self.login_failure = Some(failure);
                    http::HttpError::Connection(message)
                }
            })
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.journal.log(level, message);
    }
}

impl webhooks::Host for HostState {
    async fn verify(
        &mut self,
        scheme: webhooks::Scheme,
        secret_property: String,
        headers: Vec<types::Header>,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let Some(secret) = self.env.secrets.get(&secret_property) else {
            return Err(format!(
                "the connection has no secret property `{secret_property}`"
            ));
        };
        let headers: Vec<(String, String)> =
            headers.into_iter().map(|h| (h.name, h.value)).collect();
        let scheme = match scheme {
            webhooks::Scheme::Shopify => signatures::Scheme::Shopify,
            webhooks::Scheme::StandardWebhooks => signatures::Scheme::StandardWebhooks,
            webhooks::Scheme::Stripe => signatures::Scheme::Stripe,
            webhooks::Scheme::HmacSha256(g) => signatures::Scheme::HmacSha256 {
                header: g.header,
                base64: matches!(g.encoding, webhooks::Encoding::Base64),
                prefix: g.prefix,
            },
        };
        signatures::verify(
            &scheme,
            secret.as_bytes(),
            &headers,
            &body,
            std::time::SystemTime::now(),
        )
    }
}
