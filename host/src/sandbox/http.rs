//! The outbound HTTP client behind `http.send`: a reqwest client whose DNS
//! resolver refuses forbidden addresses (so the address checked is the address
//! connected to), no automatic redirects, size caps and timeouts.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::Serialize;
use url::Url;

use super::policy::{self, Denied, HostPattern};

/// Operator settings for outbound traffic.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Networks exempt from the special-address ban (tests allow 127.0.0.1/32).
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
            max_request_bytes: 4 << 20,
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

/// Why a request did not get a response; mirrors the contract's `http-error`.
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
}

/// One exchange as recorded in the run log. Never holds credentials.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
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
}

/// What one call of one plugin may reach, resolved from its manifest and
/// connection before the call starts.
#[derive(Clone)]
pub struct Outbound {
    pub sandbox: HttpSandbox,
    pub allowed: Arc<[HostPattern]>,
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
        Ok(HttpSandbox { client, config })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Sends one request for a plugin, within `budget` (the time its call has
    /// left). Returns the exchange record whatever happens.
    pub async fn send(
        &self,
        allowed: &[HostPattern],
        request: OutboundRequest,
        budget: Duration,
    ) -> (Result<OutboundResponse, SendError>, Exchange) {
        let started = Instant::now();
        let mut exchange = Exchange {
            method: request.method.clone(),
            url: request.url.clone(),
            status: None,
            error: None,
            duration_ms: 0.0,
            request_bytes: request.body.len(),
            response_bytes: 0,
        };
        let result = self
            .send_checked(allowed, request, budget, &mut exchange)
            .await;
        exchange.duration_ms = started.elapsed().as_secs_f64() * 1e3;
        match &result {
            Ok(response) => exchange.status = Some(response.status),
            Err(e) => exchange.error = Some(e.to_string()),
        }
        (result, exchange)
    }

    async fn send_checked(
        &self,
        allowed: &[HostPattern],
        request: OutboundRequest,
        budget: Duration,
        exchange: &mut Exchange,
    ) -> Result<OutboundResponse, SendError> {
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
        if request.body.len() > self.config.max_request_bytes {
            return Err(SendError::TooLarge(format!(
                "request body of {} bytes is over the {} byte limit",
                request.body.len(),
                self.config.max_request_bytes
            )));
        }
        let mut builder = self.client.request(method, url);
        for (name, value) in &request.headers {
            if HOST_OWNED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                continue;
            }
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SendError::InvalidRequest(format!("bad header name `{name}`")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| SendError::InvalidRequest(format!("bad value for header `{name}`")))?;
            builder = builder.header(name, value);
        }
        let timeout = request
            .timeout
            .unwrap_or(self.config.request_timeout)
            .min(self.config.request_timeout)
            .min(budget);
        let exchange_fut = async {
            let mut response = builder
                .body(request.body)
                .send()
                .await
                .map_err(|e| classify(&e))?;
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
                .is_some_and(|len| len as usize > cap)
            {
                return Err(SendError::TooLarge(format!(
                    "response is over the {cap} byte limit"
                )));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
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
        };
        let response = tokio::time::timeout(timeout, exchange_fut)
            .await
            .map_err(|_| {
                SendError::Timeout(format!(
                    "no complete response within {} ms",
                    timeout.as_millis()
                ))
            })??;
        exchange.response_bytes = response.body.len();
        Ok(response)
    }
}

fn classify(error: &reqwest::Error) -> SendError {
    // The resolver's refusal travels inside reqwest's error chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
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
