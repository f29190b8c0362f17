//! The outbound HTTP client behind `http.send`: a reqwest client whose DNS
//! resolver refuses forbidden addresses (so the address checked is the address
//! connected to), no automatic redirects, size caps, timeouts, per-connection
//! rate limits, credentials added by the host, and responses with the
//! connection's secrets cut out.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota};
use ipnet::IpNet;
use serde::Serialize;
use url::Url;

use super::{
    auth::Credentials,
    login::LoginFailure,
    policy::{self, Denied, HostPattern},
    scrub::Scrubber,
};
use crate::manifest::RateLimit;

/// Operator settings for outbound traffic.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Networks exempt from the special-address ban (tests allow a loopback
    /// address for their fakes).
    pub allow_networks: Vec<IpNet>,
    pub connect_timeout: Duration,
    /// Upper bound for one request, whatever the plugin asks for.
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            allow_networks: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            // A multipart upload's part (5 to 8 MiB) goes up in one request.
            max_request_bytes: 16 << 20,
            max_response_bytes: 16 << 20,
        }
    }
}

/// A request as a plugin asked for it.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl OutboundResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request did not get a response; mirrors the contract's `http-error`,
/// plus the host's own failed sign-in, which the engine makes the call's
/// outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("connection: {0}")]
    Connection(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The session login or token request the host made for the
    /// connection was answered with an error.
    #[error("{0}")]
    Login(LoginFailure),
}

impl SendError {
    /// The same error with the connection's secrets cut out of its text
    /// (a login's error answer may quote what it was sent).
    pub fn scrubbed(self, scrubber: &Scrubber) -> SendError {
        match self {
            SendError::Denied(m) => SendError::Denied(scrubber.text(&m)),
            SendError::Timeout(m) => SendError::Timeout(scrubber.text(&m)),
            SendError::TooLarge(m) => SendError::TooLarge(scrubber.text(&m)),
            SendError::Connection(m) => SendError::Connection(scrubber.text(&m)),
            SendError::InvalidRequest(m) => SendError::InvalidRequest(scrubber.text(&m)),
            SendError::Login(f) => SendError::Login(LoginFailure {
                message: scrubber.text(&f.message),
                ..f
            }),
        }
    }
}

/// One exchange as recorded in the run log. Never holds credentials: headers
/// are not recorded and secret values are cut out of the URL.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// `plugin` for the plugin's own requests; `login`, `token` and `retry`
    /// for what the host sent on the connection's behalf.
    pub purpose: &'static str,
    pub method: String,
    pub url: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: f64,
    pub request_bytes: usize,
    pub response_bytes: usize,
}

/// The shared client. Cheap to clone.
#[derive(Clone)]
pub struct HttpSandbox {
    client: reqwest::Client,
    config: Arc<SandboxConfig>,
    limiters: Arc<Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>>,
}

/// What one call of one plugin may reach and how, resolved from its manifest
/// and connection before the call starts.
#[derive(Clone)]
pub struct Outbound {
    pub sandbox: HttpSandbox,
    pub allowed: Arc<[HostPattern]>,
    pub credentials: Option<Arc<Credentials>>,
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

/// Headers a guest may never set: the host owns authentication and framing.
const HOST_OWNED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// A request after the checks, ready to go on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) method: reqwest::Method,
    pub(crate) url: Url,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Prepared {
    pub(crate) fn set_header(&mut self, name: &str, value: String) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value));
    }

    /// Path and query, as Digest signs it.
    pub(crate) fn request_target(&self) -> String {
        match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_string(),
        }
    }
}

impl HttpSandbox {
    pub fn new(config: SandboxConfig) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver {
                allow: config.allow_networks.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpSandbox {
            client,
            config,
            limiters: Default::default(),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The rate limiter of one connection (or plugin), created on first use.
    pub fn limiter(&self, key: &str, limit: &RateLimit) -> Arc<DefaultDirectRateLimiter> {
        let mut limiters = self.limiters.lock().expect("limiter map lock");
        limiters
            .entry(format!(
                "{key}:{}/{}ms/{}",
                limit.requests, limit.period_ms, limit.burst
            ))
            .or_insert_with(|| {
                let per_request =
                    Duration::from_millis(u64::from(limit.period_ms)) / limit.requests.max(1);
                let quota = Quota::with_period(per_request.max(Duration::from_micros(1)))
                    .expect("period is positive")
                    .allow_burst(NonZeroU32::new(limit.burst.max(1)).expect("burst is positive"));
                Arc::new(DefaultDirectRateLimiter::direct(quota))
            })
            .clone()
    }

    /// Sends one request for a plugin within `budget` (the time its call has
    /// left), adding credentials and retrying once after a 401 where the auth
    /// scheme can recover (token refresh, re-login, Digest challenge).
    /// Returns every exchange made, whatever happens. The connection's
    /// secrets and tokens are cut out of the response and the error before
    /// the plugin or the journal gets them.
    pub async fn send(
        &self,
        outbound: &Outbound,
        request: OutboundRequest,
        budget: Duration,
    ) -> (Result<OutboundResponse, SendError>, Vec<Exchange>) {
        let deadline = Instant::now() + budget;
        let mut exchanges = Vec::new();
        let mut result = self
            .send_inner(outbound, request, deadline, &mut exchanges)
            .await;
        if let Some(credentials) = &outbound.credentials {
            for exchange in &mut exchanges {
                exchange.url = credentials.redact(&exchange.url);
            }
            if let Some(scrubber) = credentials.scrubber() {
                result = result
                    .map(|response| scrubber.response(response))
                    .map_err(|e| e.scrubbed(&scrubber));
                for error in exchanges.iter_mut().filter_map(|e| e.error.as_mut()) {
                    *error = scrubber.text(error);
                }
            }
        }
        (result, exchanges)
    }

    async fn send_inner(
        &self,
        outbound: &Outbound,
        request: OutboundRequest,
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<OutboundResponse, SendError> {
        let guest_timeout = request.timeout;
        let (method, url) = (request.method.clone(), request.url.clone());
        let mut prepared = self.check(&outbound.allowed, request).inspect_err(|e| {
            // Refused requests are part of the record too.
            exchanges.push(Exchange {
                purpose: "plugin",
                method,
                url,
                status: None,
                error: Some(e.to_string()),
                duration_ms: 0.0,
                request_bytes: 0,
                response_bytes: 0,
            })
        })?;
        if let Some(credentials) = &outbound.credentials {
            let owned = credentials.host_owned_headers();
            // Without Accept-Encoding the server answers uncompressed, so an
            // echoed secret is in plain sight for the scrubber.
            prepared.headers.retain(|(n, _)| {
                !n.eq_ignore_ascii_case("accept-encoding")
                    && !owned.iter().any(|o| o.eq_ignore_ascii_case(n))
            });
            credentials
                .apply(self, &outbound.allowed, &mut prepared, deadline, exchanges)
                .await?;
        }
        if let Some(limiter) = &outbound.limiter {
            let wait = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(wait, limiter.until_ready())
                .await
                .map_err(|_| {
                    SendError::Timeout(
                        "the connection's rate limit left no time for this request".into(),
                    )
                })?;
        }
        let response = self
            .transmit(
                "plugin",
                prepared.clone(),
                guest_timeout,
                deadline,
                exchanges,
            )
            .await?;
        if response.status != 401 {
            return Ok(response);
        }
        let Some(credentials) = &outbound.credentials else {
            return Ok(response);
        };
        if !credentials
            .recover(
                self,
                &outbound.allowed,
                &mut prepared,
                &response,
                deadline,
                exchanges,
            )
            .await?
        {
            return Ok(response);
        }
        self.transmit("retry", prepared, guest_timeout, deadline, exchanges)
            .await
    }

    /// The URL, method, header and size checks every request passes.
    pub(crate) fn check(
        &self,
        allowed: &[HostPattern],
        request: OutboundRequest,
    ) -> Result<Prepared, SendError> {
        let url = Url::parse(&request.url)
            .map_err(|e| SendError::InvalidRequest(format!("bad URL `{}`: {e}", request.url)))?;
        policy::check_url(&url, allowed).map_err(|Denied(why)| SendError::Denied(why))?;
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
            let ip: IpAddr = url
                .host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .parse()
                .map_err(|_| SendError::InvalidRequest("bad IP address".to_string()))?;
            policy::check_ip(ip, &self.config.allow_networks)
                .map_err(|Denied(why)| SendError::Denied(why))?;
        }
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| SendError::InvalidRequest(format!("bad method `{}`", request.method)))?;
        if !matches!(
            method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
        ) {
            return Err(SendError::InvalidRequest(format!(
                "method `{method}` is not allowed"
            )));
        }
        if request.body.len() > self.config.max_request_bytes {
            return Err(SendError::TooLarge(format!(
                "request body of {} bytes is over the {} byte limit",
                request.body.len(),
                self.config.max_request_bytes
            )));
        }
        let headers = request
            .headers
            .into_iter()
            .filter(|(name, _)| !HOST_OWNED_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
            .collect();
        Ok(Prepared {
            method,
            url,
            headers,
            body: request.body,
        })
    }

    /// Puts one checked request on the wire and reads the response within the
    /// caps, recording the exchange.
    pub(crate) async fn transmit(
        &self,
        purpose: &'static str,
        request: Prepared,
        timeout: Option<Duration>,
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<OutboundResponse, SendError> {
        let started = Instant::now();
        let mut exchange = Exchange {
            purpose,
            method: request.method.to_string(),
            url: request.url.to_string(),
            status: None,
            error: None,
            duration_ms: 0.0,
            request_bytes: request.body.len(),
            response_bytes: 0,
        };
        let timeout = timeout
            .unwrap_or(self.config.request_timeout)
            .min(self.config.request_timeout)
            .min(deadline.saturating_duration_since(started));
        let result = match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(format!(
                "no complete response within {} ms",
                timeout.as_millis()
            ))),
        };
        exchange.duration_ms = started.elapsed().as_secs_f64() * 1e3;
        match &result {
            Ok(response) => {
                exchange.status = Some(response.status);
                exchange.response_bytes = response.body.len();
            }
            Err(e) => exchange.error = Some(e.to_string()),
        }
        exchanges.push(exchange);
        result
    }

    async fn exchange(&self, request: Prepared) -> Result<OutboundResponse, SendError> {
        let mut builder = self.client.request(request.method, request.url);
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SendError::InvalidRequest(format!("bad header name `{name}`")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| SendError::InvalidRequest(format!("bad value for header `{name}`")))?;
            builder = builder.header(name, value);
        }
        let mut response = builder.body(request.body).send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let cap = self.config.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(SendError::TooLarge(format!(
                "response is over the {cap} byte limit"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > cap {
                return Err(SendError::TooLarge(format!(
                    "response is over the {cap} byte limit"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(OutboundResponse {
            status,
            headers,
            body,
        })
    }
}

fn classify(error: reqwest::Error) -> SendError {
    // reqwest's message names the URL, which may carry a credential the host
    // put in the query (an API key): the guest and the journal get it without.
    let error = error.without_url();
    // The resolver's refusal travels inside reqwest's error chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(Denied(why)) = e.downcast_ref::<Denied>() {
            return SendError::Denied(why.clone());
        }
        chain.push(e.to_string());
        source = e.source();
    }
    chain.dedup();
    let text = chain.join(": ");
    if error.is_timeout() {
        SendError::Timeout(text)
    } else if error.is_builder() {
        SendError::InvalidRequest(text)
    } else {
        SendError::Connection(text)
    }
}

/// Resolves names itself and drops every address the policy forbids, so a
/// name that resolves to a private address (or rebinds to one) is refused.
struct CheckedResolver {
    allow: Vec<IpNet>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|addr| match policy::check_ip(addr.ip(), &allow) {
                    Ok(()) => true,
                    Err(Denied(why)) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".to_string());
                return Err(Box::new(Denied(format!(
                    "{host} resolves to a refused address: {why}"
                ))) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
