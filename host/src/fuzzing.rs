//! The bodies of the fuzz targets (`fuzz/`), here so that the corpora and
//! the crashes kept as regressions are replayed by `cargo test` without
//! libFuzzer (`tests/all/fuzz_corpus.rs`).
//!
//! Each function takes the fuzzer's bytes, drives the code under test with
//! them and panics only when a property the host relies on does not hold:
//! refusing an input is fine, panicking, hanging or accepting something that
//! breaks a later step is a bug. The input formats are documented on each
//! function; the seeds under `fuzz/corpus/<target>/` are examples of them.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use url::Url;

use crate::{
    engine::{
        CallEnv, CallError, Engine, EngineConfig, GuestConnection, GuestContext, LoadedPlugin,
    },
    error::ServiceError,
    flows::{Catalogue, FlowSpec, template, walk},
    manifest::{
        ActionKind, AuthScheme, Manifest, RateLimit, RawAction, RawManifest, RawProperty,
        RawTrigger, TriggerKind,
    },
    runs::RetryPolicy,
    sandbox::{
        policy::{self, HostPattern},
        signatures::{self, Scheme},
    },
    store::Delivery,
    triggers::HookTarget,
};

/// Splits `data` at the first `\n`: the line and the rest.
fn first_line(data: &str) -> (&str, &str) {
    data.split_once('\n').unwrap_or((data, ""))
}

// ---------------------------------------------------------------------------
// Manifest validation

/// A manifest as a connector's `describe` returns it, in the JSON shape the
/// host stores manifests in (`Manifest`'s fields), except that a schema may
/// also be a string holding JSON text, as it crosses the WIT boundary.
#[derive(Deserialize)]
struct ManifestInput {
    key: String,
    name: String,
    #[serde(default)]
    description: String,
    version: String,
    auth: AuthScheme,
    #[serde(default)]
    connection_properties: Vec<PropertyInput>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    triggers: Vec<TriggerInput>,
    #[serde(default)]
    actions: Vec<ActionInput>,
}

#[derive(Deserialize)]
struct PropertyInput {
    key: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    schema: SchemaText,
}

#[derive(Deserialize)]
struct TriggerInput {
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    kind: TriggerKind,
    params_schema: SchemaText,
    event_schema: SchemaText,
    #[serde(default)]
    poll_interval_secs: Option<u32>,
}

#[derive(Deserialize)]
struct ActionInput {
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    kind: ActionKind,
    input_schema: SchemaText,
    output_schema: SchemaText,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SchemaText {
    Text(String),
    Json(Value),
}

impl SchemaText {
    fn into_text(self) -> String {
        match self {
            SchemaText::Text(text) => text,
            SchemaText::Json(value) => value.to_string(),
        }
    }
}

impl From<ManifestInput> for RawManifest {
    fn from(m: ManifestInput) -> Self {
        RawManifest {
            key: m.key,
            name: m.name,
            description: m.description,
            version: m.version,
            auth: m.auth,
            connection_properties: m
                .connection_properties
                .into_iter()
                .map(|p| RawProperty {
                    key: p.key,
                    label: p.label,
                    description: p.description,
                    required: p.required,
                    secret: p.secret,
                    schema: p.schema.into_text(),
                })
                .collect(),
            allowed_hosts: m.allowed_hosts,
            rate_limit: m.rate_limit,
            triggers: m
                .triggers
                .into_iter()
                .map(|t| RawTrigger {
                    key: t.key,
                    name: t.name,
                    description: t.description,
                    kind: t.kind,
                    params_schema: t.params_schema.into_text(),
                    event_schema: t.event_schema.into_text(),
                    poll_interval_secs: t.poll_interval_secs,
                })
                .collect(),
            actions: m
                .actions
                .into_iter()
                .map(|a| RawAction {
                    key: a.key,
                    name: a.name,
                    description: a.description,
                    kind: a.kind,
                    input_schema: a.input_schema.into_text(),
                    output_schema: a.output_schema.into_text(),
                })
                .collect(),
        }
    }
}

/// Manifest validation. Input: a manifest as JSON (see `ManifestInput`).
///
/// A manifest the host accepts must be stored and read back unchanged (the
/// registry keeps it as JSON), every allow-list entry must parse once its
/// placeholders are filled with host-name text, and a refusal must say why.
pub fn manifest(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<ManifestInput>(data) else {
        return;
    };
    let manifest = match RawManifest::from(input).validate() {
        Ok(manifest) => manifest,
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a reason");
            return;
        }
    };
    let stored = serde_json::to_vec(&manifest).expect("an accepted manifest serialises");
    let read: Manifest = serde_json::from_slice(&stored).expect("a stored manifest reads back");
    assert_eq!(
        read, manifest,
        "the manifest changed on its way through storage"
    );
    for pattern in &manifest.allowed_hosts {
        let names = policy::placeholders(pattern);
        let whole = names.len() == 1 && *pattern == format!("{{{}}}", names[0]);
        let value = if whole { "https://a.example" } else { "a" };
        let properties = names
            .iter()
            .map(|n| (n.to_string(), Value::String(value.to_string())))
            .collect();
        if let Err(e) = HostPattern::parse(pattern, &properties) {
            panic!("accepted allowed host `{pattern}` does not parse: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Flow parsing and validation

/// Flow parsing and the publish checks that need no registry or connections.
/// Input: a flow file (JSON, or YAML when it does not start with `{`).
///
/// The rest of `FlowSpec::validate` resolves plugins and connections through
/// the `App`, so it is not fuzzed here. A parsed flow must survive storage (the
/// flow store keeps it as JSON) unchanged, and the expression checks the
/// publish step runs must not panic.
pub fn flow(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = FlowSpec::parse(text) else {
        return;
    };
    let stored = serde_json::to_string(&spec).expect("a parsed flow serialises");
    let read = FlowSpec::parse(&stored).expect("a stored flow parses");
    assert_eq!(read, spec, "the flow changed on its way through storage");

    // Every publish-time check, against a catalogue with no plugins and
    // no connections: the problems are reported, never a panic.
    let _ = spec.validate(&EmptyCatalogue, "tenant", &HashMap::new());
    for step in walk(&spec.steps) {
        let policy = RetryPolicy::for_step(step.retry.as_ref());
        assert!(
            policy.max_attempts >= 1,
            "a step must be tried at least once"
        );
    }
}

/// A catalogue without plugins or connections.
struct EmptyCatalogue;

impl Catalogue for EmptyCatalogue {
    fn resolve(&self, key: &str, _: &semver::VersionReq) -> Result<semver::Version, ServiceError> {
        Err(ServiceError::NotFound(format!(
            "plugin `{key}` does not exist"
        )))
    }

    fn manifest(&self, key: &str, _: &semver::Version) -> Result<Manifest, ServiceError> {
        Err(ServiceError::NotFound(format!(
            "plugin `{key}` does not exist"
        )))
    }

    fn connection_plugin(&self, _: &str, id: &str) -> Result<String, ServiceError> {
        Err(ServiceError::NotFound(format!(
            "connection `{id}` does not exist"
        )))
    }
}

// ---------------------------------------------------------------------------
// Template rendering

/// Template rendering. Input: a first line holding the template (a JSON
/// value, or else the line itself as a string), then the context as JSON
/// (`{"trigger": ..., "steps": ...}`; a default one if it is not JSON).
///
/// Rendering, conditions and the publish-time checks must not panic, and
/// what renders must be JSON the next step can be given.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (line, rest) = first_line(text);
    let value = serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_string()));
    let context = serde_json::from_str(rest).unwrap_or_else(|_| {
        serde_json::json!({
            "trigger": {"id": 1001, "name": "#1001", "tags": ["a", "b"], "total": "9.50"},
            "steps": {"find": {"found": true, "item": {"sku": "W-1", "qty": 3}}},
        })
    });
    let mut names = Vec::new();
    let _ = template::check(&value, "input", &mut names);
    let _ = template::check_condition(line);
    if let Ok(rendered) = template::render(&value, &context) {
        let text = serde_json::to_string(&rendered).expect("a rendered input serialises");
        let _: Value = serde_json::from_str(&text).expect("a rendered input reads back");
    }
    let _ = template::condition(line, &context);
}

// ---------------------------------------------------------------------------
// Webhook signature verification

/// Webhook signature verification. Input, line by line: the scheme
/// (`shopify`, `standard-webhooks`, `stripe`, or `hmac-sha256 HEADER
/// hex|base64 [PREFIX]`), the secret, the time as Unix seconds, then
/// `Name: value` header lines up to an empty line, then the body.
///
/// A signature that verifies must not verify another body, nor (for the
/// schemes with a timestamp) the same delivery far outside the tolerance.
pub fn signature(data: &[u8]) {
    let Some((scheme, secret, now, headers, body)) = parse_signed(data) else {
        return;
    };
    if signatures::verify(&scheme, secret, &headers, body, now).is_err() {
        return;
    }
    let mut other = body.to_vec();
    other.push(b'x');
    assert!(
        signatures::verify(&scheme, secret, &headers, &other, now).is_err(),
        "a signature verified two different bodies"
    );
    let later = now.checked_add(signatures::TOLERANCE * 2 + Duration::from_secs(1));
    if let Some(later) = later
        && matches!(scheme, Scheme::StandardWebhooks | Scheme::Stripe)
    {
        assert!(
            signatures::verify(&scheme, secret, &headers, body, later).is_err(),
            "a timestamped signature verified far outside the tolerance"
        );
    }
}

type Signed<'a> = (
    Scheme,
    &'a [u8],
    SystemTime,
    Vec<(String, String)>,
    &'a [u8],
);

fn parse_signed(data: &[u8]) -> Option<Signed<'_>> {
    let mut rest = data;
    let mut line = || -> Option<&[u8]> {
        let end = rest.iter().position(|&b| b == b'\n')?;
        let (line, after) = (&rest[..end], &rest[end + 1..]);
        rest = after;
        Some(line)
    };
    let scheme = std::str::from_utf8(line()?).ok()?;
    let scheme = match scheme.split(' ').collect::<Vec<_>>()[..] {
        ["shopify"] => Scheme::Shopify,
        ["standard-webhooks"] => Scheme::StandardWebhooks,
        ["stripe"] => Scheme::Stripe,
        ["hmac-sha256", header, encoding, ref prefix @ ..] => Scheme::HmacSha256 {
            header: header.to_string(),
            base64: encoding == "base64",
            prefix: prefix.join(" "),
        },
        _ => return None,
    };
    let secret = line()?;
    let now: u64 = std::str::from_utf8(line()?).ok()?.trim().parse().ok()?;
    let now = UNIX_EPOCH.checked_add(Duration::from_secs(now))?;
    let mut headers = Vec::new();
    loop {
        let header = std::str::from_utf8(line()?).ok()?;
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Some((scheme, secret, now, headers, rest))
}

// ---------------------------------------------------------------------------
// The SSRF policy

/// The SSRF policy's URL and address handling. Input, line by line: an
/// allowed-host pattern, the connection properties as a JSON object, a URL,
/// an IP address, and the operator's allowed networks (comma-separated).
///
/// A pattern that parses must be shown (in refusals) as a pattern that
/// parses to itself; an IPv4 address must be judged the same in every IPv6
/// form that embeds it; an operator's network admits what it contains.
pub fn ssrf_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let pattern = lines.next().unwrap_or("");
    let properties: BTreeMap<String, Value> = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let url = lines.next().and_then(|l| Url::parse(l).ok());
    let address = lines.next().and_then(|l| l.trim().parse::<IpAddr>().ok());
    let networks: Vec<IpNet> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();

    let _ = policy::placeholders(pattern);
    let allowed: Vec<HostPattern> = HostPattern::parse(pattern, &properties)
        .into_iter()
        .collect();
    for p in &allowed {
        let shown = p.to_string();
        match HostPattern::parse(&shown, &BTreeMap::new()) {
            Ok(again) => assert!(
                again.same_reach(p),
                "`{pattern}` is shown as `{shown}`, which reaches {again:?}, not {p:?}"
            ),
            Err(e) => panic!("`{pattern}` is shown as `{shown}`, which does not parse: {e}"),
        }
    }
    if let Some(url) = &url {
        let _ = policy::check_url(url, &allowed);
    }
    let Some(ip) = address else { return };
    let default = policy::check_ip(ip, &[]).is_ok();
    if let IpAddr::V4(v4) = ip {
        let [a, b, c, d] = v4.octets();
        let forms = [
            v4.to_ipv6_mapped(),
            Ipv6Addr::new(
                0x64,
                0xff9b,
                0,
                0,
                0,
                0,
                u16::from_be_bytes([a, b]),
                u16::from_be_bytes([c, d]),
            ),
            Ipv6Addr::new(
                0x2002,
                u16::from_be_bytes([a, b]),
                u16::from_be_bytes([c, d]),
                0,
                0,
                0,
                0,
                1,
            ),
        ];
        for v6 in forms {
            assert_eq!(
                policy::check_ip(IpAddr::V6(v6), &[]).is_ok(),
                default,
                "{v4} and its IPv6 form {v6} are judged differently"
            );
        }
        // The v4-compatible form (`::a.b.c.d`) of 0.0.0.0 and 0.0.0.1 is
        // `::` and `::1`, which are refused on their own account.
        if v4 > Ipv4Addr::new(0, 0, 0, 1) {
            assert_eq!(
                policy::check_ip(IpAddr::V6(v4.to_ipv6_compatible()), &[]).is_ok(),
                default,
                "{v4} and ::{v4} are judged differently"
            );
        }
    }
    if networks.iter().any(|n| n.contains(&ip)) {
        assert!(
            policy::check_ip(ip, &networks).is_ok(),
            "{ip} is refused though the operator allowed a network containing it"
        );
    }
}

// ---------------------------------------------------------------------------
// A webhook delivery, from raw bytes to events

/// The Shopify webhook secret the harness's connection holds (and the seeds
/// are signed with).
pub const WEBHOOK_SECRET: &str = "fuzz-webhook-secret";

/// An `X-Shopify-Hmac-Sha256` value the harness replaces with the body's
/// real signature, so that mutated bodies still reach the connector's
/// parsing instead of stopping at the signature check.
pub const SIGN_HERE: &str = "sign-here";

/// The Shopify connector in an engine, ready to be handed deliveries, one
/// fresh instance per delivery as in the host.
pub struct WebhookHarness {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    plugin: LoadedPlugin,
}

impl WebhookHarness {
    /// Loads the Shopify connector component (`plugins/shopify`, built for
    /// wasm32-wasip2). Compiled artifacts are cached in the temporary
    /// directory, keyed like the host's.
    pub fn new(component: &[u8]) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the harness's runtime")?;
        let engine = Engine::new(EngineConfig {
            call_timeout: Duration::from_secs(5),
            memory_limit: 64 << 20,
            max_instances: 4,
            cache_dir: std::env::temp_dir().join("switchyard-fuzz-artifacts"),
        })?;
        let plugin = engine
            .load(&Engine::content_hash(component), component)
            .context("loading the Shopify connector")?;
        Ok(WebhookHarness {
            runtime,
            engine,
            plugin,
        })
    }

    /// A webhook delivery from raw bytes to events. Input: an HTTP request
    /// head as text (`METHOD /path?query`, then `Name: value` lines), an
    /// empty line, then the body; an `X-Shopify-Hmac-Sha256: sign-here`
    /// header is replaced by the body's signature.
    ///
    /// The request goes through the ingress's conversion (what a delivery
    /// keeps of a request, and what `handle-webhook` is given) into the
    /// connector's `order-created` trigger. The connector may refuse a
    /// delivery, but must not trap or run out of time or memory, and a
    /// delivery whose signature does not verify must never become events.
    pub fn run(&self, data: &[u8]) -> Handled {
        let Some(request) = http_request(data) else {
            return Handled::NotARequest;
        };
        let (parts, body) = request.into_parts();
        let target = HookTarget {
            tenant: "fuzz".into(),
            subscription: "sub".into(),
        };
        let delivery = Delivery::received(&target, 0, &parts).with_body(&body);
        let input = delivery.webhook_input();
        assert_eq!(input.body, body, "the body changed in the inbox");
        let signed = signatures::verify(
            &Scheme::Shopify,
            WEBHOOK_SECRET.as_bytes(),
            &input.headers,
            &input.body,
            SystemTime::now(),
        )
        .is_ok();
        let env = CallEnv {
            outbound: None,
            secrets: Arc::new(BTreeMap::from([(
                "webhook_secret".to_string(),
                WEBHOOK_SECRET.to_string(),
            )])),
            ..CallEnv::default()
        };
        let ctx = GuestContext {
            connection: Some(GuestConnection {
                id: "fuzz".into(),
                properties: r#"{"shop":"acme"}"#.into(),
            }),
            env: Vec::new(),
            trace_id: "fuzz".into(),
        };
        let outcome = self.runtime.block_on(self.engine.handle_webhook(
            &self.plugin,
            env,
            ctx,
            "order-created",
            "{}",
            input,
        ));
        match outcome.result {
            Ok(output) => {
                assert!(
                    signed || output.events.is_empty(),
                    "a delivery without a valid signature became {} events",
                    output.events.len()
                );
                for event in &output.events {
                    assert!(!event.id.is_empty(), "an event without an id");
                    if let Err(e) = serde_json::from_str::<Value>(&event.payload) {
                        panic!("event {} has a payload that is not JSON: {e}", event.id);
                    }
                }
                Handled::Events(output.events.len())
            }
            Err(CallError::Connector { error }) => Handled::Refused(error.to_string()),
            Err(e) => panic!("the connector failed on a delivery: {e}"),
        }
    }
}

/// What became of a delivery in [`WebhookHarness::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The bytes are not a request the HTTP server would have passed on.
    NotARequest,
    /// The connector turned it into this many events.
    Events(usize),
    /// The connector refused it, saying why.
    Refused(String),
}

/// Parses a request head and body as the HTTP server would have, signing
/// the body where asked; `None` where the server would have refused it.
fn http_request(data: &[u8]) -> Option<http::Request<Vec<u8>>> {
    let split = data.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&data[..split]).ok()?;
    let body = data[split + 2..].to_vec();
    let mut lines = head.lines();
    let (method, path) = lines.next()?.split_once(' ')?;
    let mut request = http::Request::builder().method(method).uri(path);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        let value = if name.eq_ignore_ascii_case("X-Shopify-Hmac-Sha256") && value == SIGN_HERE {
            sign(&body)
        } else {
            value.to_string()
        };
        request = request.header(name, value);
    }
    request.body(body).ok()
}

/// The `X-Shopify-Hmac-Sha256` value of `body` under [`WEBHOOK_SECRET`].
pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    B64.encode(mac.finalize().into_bytes())
}

/// Where the webhook target finds the Shopify component when the fuzzer
/// runs: `SWITCHYARD_FUZZ_SHOPIFY`, else the plugins workspace's release build.
pub fn shopify_component_path(fuzz_dir: &str) -> PathBuf {
    std::env::var_os("SWITCHYARD_FUZZ_SHOPIFY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(fuzz_dir).join("../plugins/target/wasm32-wasip2/release/shopify.wasm")
        })
}

/// The body of a fuzz target.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay (the webhook target
/// needs a [`WebhookHarness`] and is replayed on its own).
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("flow", flow),
    ("template", template),
    ("signature", signature),
    ("ssrf_policy", ssrf_policy),
];
