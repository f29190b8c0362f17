//! Host-held credentials end to end, through the API: each auth probe
//! connector (`plugins/fixtures/auth-*`) calls a fake third-party API that
//! checks what a real one would (Basic, an API key in the query, OAuth 2.0
//! client credentials and authorization code with PKCE, session login), Digest
//! is answered to Apache's mod_auth_digest, and the per-connection rate limit
//! spaces requests. Fakes listen on 127.0.0.2, the one network these hosts
//! allow, and stop when the test drops them.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Query, RawQuery},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use switchyard_tests as artifacts;
use tokio::io::AsyncReadExt as _;

use crate::{
    digest::{self, Apache},
    support::{TestHost, fake::Server, read, sandbox_config},
};

pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub fn reply(status: StatusCode, headers: &[(&str, &str)], body: Value) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

/// Decoded `application/x-www-form-urlencoded` pairs, in order.
pub type Pairs = Vec<(String, String)>;

/// The pairs of a query or a form body.
pub fn pairs(text: &str) -> Pairs {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn form(text: &str) -> HashMap<String, String> {
    pairs(text).into_iter().collect()
}

pub fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `Authorization: Basic` as (user, password), decoded the way RFC 6749
/// §2.3.1 encodes OAuth client credentials when `form_decoded`.
pub fn basic(headers: &HeaderMap, form_decoded: bool) -> Option<(String, String)> {
    let encoded = header(headers, "authorization")?
        .strip_prefix("Basic ")?
        .to_string();
    let decoded = String::from_utf8(BASE64.decode(encoded).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    if !form_decoded {
        return Some((user.to_string(), pass.to_string()));
    }
    let decode = |s: &str| form(&format!("v={s}")).remove("v").unwrap_or_default();
    Some((decode(user), decode(pass)))
}

pub async fn host_with(plugins: &[&str]) -> (tempfile::TempDir, TestHost) {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    upload(&host, plugins).await;
    (dir, host)
}

pub async fn upload(host: &TestHost, plugins: &[&str]) {
    for plugin in plugins {
        let (status, body) = host.upload_file(plugin).await;
        assert!(status.is_success(), "{plugin}: {body}");
    }
}

pub async fn invoke(
    host: &TestHost,
    plugin: &str,
    action: &str,
    connection: &str,
    input: Value,
) -> Value {
    let (status, body) = host
        .call(
            reqwest::Method::POST,
            "/v1/invoke",
            Some(json!({"plugin": plugin, "action": action, "connection": connection, "input": input})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The probe's `get` action: GET `{base_url}{path}`.
pub async fn probe(host: &TestHost, plugin: &str, connection: &str, path: &str) -> Value {
    invoke(host, plugin, "get", connection, json!({"path": path})).await
}

/// The output of a call that must have succeeded with a 200.
pub fn succeeded(body: &Value) -> &Value {
    assert!(body["error"].is_null(), "the call failed: {body}");
    assert_eq!(body["output"]["status"], json!(200), "{body}");
    &body["output"]
}

/// The connector error of a call that must have failed with one.
pub fn failed(body: &Value) -> &Value {
    assert!(body["output"].is_null(), "the call succeeded: {body}");
    assert_eq!(body["error"]["kind"], json!("connector"), "{body}");
    &body["error"]["error"]
}

/// The call's exchanges as `purpose status`, e.g. `["plugin 401", "token 200",
/// "retry 200"]`.
pub fn trail(body: &Value) -> Vec<String> {
    body["journal"]["exchanges"]
        .as_array()
        .expect("exchanges in the journal")
        .iter()
        .map(|e| {
            let outcome = e["status"]
                .as_u64()
                .map_or_else(|| "error".to_string(), |s| s.to_string());
            format!("{} {outcome}", e["purpose"].as_str().unwrap())
        })
        .collect()
}

// --- Basic -----------------------------------------------------------------

#[tokio::test]
async fn basic_credentials_are_sent_and_a_wrong_password_is_an_auth_error() {
    const USER: &str = "ops@acme.test";
    const PASSWORD: &str = "correct horse: battery";
    let seen: Arc<Mutex<Vec<Option<String>>>> = Default::default();
    let fake = Server::start(Router::new().route(
        "/whoami",
        get({
            let seen = seen.clone();
            move |headers: HeaderMap| async move {
                seen.lock().unwrap().push(header(&headers, "authorization"));
                match basic(&headers, false) {
                    Some((user, pass)) if user == USER && pass == PASSWORD => {
                        reply(StatusCode::OK, &[], json!({"user": user}))
                    }
                    _ => reply(
                        StatusCode::UNAUTHORIZED,
                        &[("www-authenticate", r#"Basic realm="fake", charset="UTF-8""#)],
                        json!({"error": "bad credentials"}),
                    ),
                }
            }
        }),
    ))
    .await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_BASIC]).await;

    let good = host
        .connect(
            "auth-basic",
            json!({"base_url": fake.origin, "username": USER, "password": PASSWORD}),
        )
        .await;
    let body = probe(&host, "auth-basic", &good, "/whoami").await;
    let output = succeeded(&body);
    assert!(output["body"].as_str().unwrap().contains(USER), "{body}");
    assert_eq!(trail(&body), ["plugin 200"]);
    let expected = format!("Basic {}", BASE64.encode(format!("{USER}:{PASSWORD}")));
    assert_eq!(seen.lock().unwrap().as_slice(), [Some(expected)]);
    assert!(!body.to_string().contains(PASSWORD), "{body}");

    let bad = host
        .connect(
            "auth-basic",
            json!({"base_url": fake.origin, "username": USER, "password": "wrong password"}),
        )
        .await;
    let body = probe(&host, "auth-basic", &bad, "/whoami").await;
    let error = failed(&body);
    assert_eq!(error["kind"], json!("auth"), "{body}");
    assert!(error["message"].as_str().unwrap().contains("401"), "{body}");
    // Basic cannot recover from a 401: no second attempt.
    assert_eq!(trail(&body), ["plugin 401"]);
    assert_eq!(
        seen.lock().unwrap().last().unwrap().as_deref(),
        Some(&*format!(
            "Basic {}",
            BASE64.encode(format!("{USER}:wrong password"))
        ))
    );
    host.stop().await;
}

// --- API key in the query --------------------------------------------------

/// Special characters, so both the raw and the percent-encoded forms matter.
const QUERY_KEY: &str = "qk_7f3a/9+z&Q=";

/// Accepts connections, records each request head and hangs up without an
/// answer (a server that crashes mid-request).
async fn hang_up_server() -> (Server, Arc<Mutex<Vec<String>>>) {
    let heads: Arc<Mutex<Vec<String>>> = Default::default();
    let recorded = heads.clone();
    let server = Server::raw(|listener| async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            recorded
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
        }
    })
    .await;
    (server, heads)
}

#[tokio::test]
async fn an_api_key_in_the_query_is_sent_but_never_recorded() {
    let encoded_key = form_encode(QUERY_KEY);
    let queries: Arc<Mutex<Vec<Pairs>>> = Default::default();
    let fake = Server::start(Router::new().route(
        "/items",
        get({
            let queries = queries.clone();
            move |RawQuery(query): RawQuery| async move {
                let pairs = pairs(query.as_deref().unwrap_or_default());
                queries.lock().unwrap().push(pairs.clone());
                let keys: Vec<&str> = pairs
                    .iter()
                    .filter(|(k, _)| k == "key")
                    .map(|(_, v)| v.as_str())
                    .collect();
                if keys == [QUERY_KEY] {
                    reply(StatusCode::OK, &[], json!({"items": []}))
                } else {
                    reply(
                        StatusCode::UNAUTHORIZED,
                        &[],
                        json!({"error": "missing or invalid key"}),
                    )
                }
            }
        }),
    ))
    .await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_APIKEY_QUERY]).await;
    let plugin = "auth-apikey-query";
    let id = host
        .connect(
            plugin,
            json!({"base_url": fake.origin, "api_key": QUERY_KEY}),
        )
        .await;

    // The plugin's own `key` is replaced, its other parameters kept.
    let body = probe(&host, plugin, &id, "/items?page=2&key=chosen-by-the-plugin").await;
    succeeded(&body);
    assert_eq!(trail(&body), ["plugin 200"]);
    let sent = queries.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        sent,
        [
            ("page".to_string(), "2".to_string()),
            ("key".to_string(), QUERY_KEY.to_string())
        ]
    );
    let url = body["journal"]["exchanges"][0]["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/items?page=2&key=[redacted]", fake.origin));
    let text = body.to_string();
    assert!(
        !text.contains(QUERY_KEY) && !text.contains(&encoded_key),
        "the key leaked: {text}"
    );

    let wrong = host
        .connect(
            plugin,
            json!({"base_url": fake.origin, "api_key": "not-the-key"}),
        )
        .await;
    let body = probe(&host, plugin, &wrong, "/items").await;
    assert_eq!(failed(&body)["kind"], json!("auth"), "{body}");
    assert_eq!(
        body["journal"]["exchanges"][0]["url"],
        json!(format!("{}/items?key=[redacted]", fake.origin))
    );

    // A failed request's error names the URL it was sending to: that URL
    // holds the key, which must reach neither the plugin nor the journal.
    let (broken, heads) = hang_up_server().await;
    let id = host
        .connect(
            plugin,
            json!({"base_url": broken.origin, "api_key": QUERY_KEY}),
        )
        .await;
    let body = probe(&host, plugin, &id, "/items").await;
    assert_eq!(failed(&body)["kind"], json!("transient"), "{body}");
    assert_eq!(trail(&body), ["plugin error"]);
    assert!(
        heads
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with(&format!("GET /items?key={encoded_key} "))),
        "the request did not reach the server with the key: {:?}",
        heads.lock().unwrap()
    );
    let text = body.to_string();
    assert!(
        !text.contains(QUERY_KEY) && !text.contains(&encoded_key),
        "the key leaked: {text}"
    );
    host.stop().await;
}

// --- OAuth 2.0 -------------------------------------------------------------

pub const CLIENT_ID: &str = "client-42";
/// Characters that RFC 6749 §2.3.1 says to form-encode before Basic.
pub const CLIENT_SECRET: &str = "cs:with/special+chars";

/// One authorization waiting for its code to be exchanged.
struct IssuedCode {
    challenge: String,
    redirect_uri: String,
}

/// A fake OAuth provider and resource server: `/oauth/authorize`,
/// `/oauth/token` (client credentials, authorization code with PKCE S256,
/// refresh with rotation) and `/data`, which wants a current bearer token.
#[derive(Default)]
pub struct Provider {
    /// `expires_in` of the tokens it issues.
    pub expires_in: u64,
    /// Every `/oauth/authorize` query.
    pub authorize_requests: Vec<HashMap<String, String>>,
    codes: HashMap<String, IssuedCode>,
    pub access: HashSet<String>,
    pub refresh: HashSet<String>,
    /// Every token request's grant type, and `refused: why` for refusals.
    pub token_requests: Vec<String>,
    pub issued: Vec<String>,
    /// Bearer tokens `/data` was called with.
    pub bearers: Vec<String>,
    /// `/data` refuses every token (a revoked grant).
    pub refuse_all: bool,
    serial: u32,
}

pub type SharedProvider = Arc<Mutex<Provider>>;

impl Provider {
    fn next(&mut self, prefix: &str) -> String {
        self.serial += 1;
        // Long and unusual, so a search of the data directory cannot match by chance.
        format!("{prefix}-{}-5e0c93b7d41fa286", self.serial)
    }

    fn token(&mut self, headers: &HeaderMap, body: &str) -> Response {
        let refuse = |p: &mut Provider, status: StatusCode, error: &str, why: String| {
            p.token_requests.push(format!("refused: {why}"));
            let challenge: &[(&str, &str)] = if status == StatusCode::UNAUTHORIZED {
                &[("www-authenticate", r#"Basic realm="oauth""#)]
            } else {
                &[]
            };
            reply(
                status,
                challenge,
                json!({"error": error, "error_description": why}),
            )
        };
        if header(headers, "content-type").as_deref() != Some("application/x-www-form-urlencoded") {
            return refuse(
                self,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "not a form".into(),
            );
        }
        if basic(headers, true) != Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string())) {
            return refuse(
                self,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed".into(),
            );
        }
        let form = form(body);
        let field = |name: &str| form.get(name).cloned().unwrap_or_default();
        let grant = field("grant_type");
        let with_refresh = match grant.as_str() {
            "client_credentials" => {
                if field("scope") != "read" {
                    return refuse(
                        self,
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        format!("scope {:?}", field("scope")),
                    );
                }
                false
            }
            "authorization_code" => {
                let Some(issued) = self.codes.remove(&field("code")) else {
                    return refuse(
                        self,
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "unknown or used code".into(),
                    );
                };
                if field("redirect_uri") != issued.redirect_uri {
                    return refuse(
                        self,
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "redirect_uri differs".into(),
                    );
                }
                let verifier = field("code_verifier");
                if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != issued.challenge {
                    return refuse(
                        self,
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        format!("code_verifier {verifier:?} does not match the challenge"),
                    );
                }
                true
            }
            "refresh_token" => {
                // Rotation: a refresh token works once.
                if !self.refresh.remove(&field("refresh_token")) {
                    return refuse(
                        self,
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "unknown or used refresh token".into(),
                    );
                }
                true
            }
            other => {
                return refuse(
                    self,
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    other.to_string(),
                );
            }
        };
        self.token_requests.push(grant);
        let access = self.next("at");
        self.access.insert(access.clone());
        self.issued.push(access.clone());
        let mut answer = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        });
        if with_refresh {
            let refresh = self.next("rt");
            self.refresh.insert(refresh.clone());
            self.issued.push(refresh.clone());
            answer["refresh_token"] = json!(refresh);
        }
        reply(
            StatusCode::OK,
            &[("cache-control", "no-store"), ("pragma", "no-cache")],
            answer,
        )
    }

    fn authorize(&mut self, query: HashMap<String, String>) -> Response {
        self.authorize_requests.push(query.clone());
        let field = |name: &str| query.get(name).cloned().unwrap_or_default();
        let redirect_uri = field("redirect_uri");
        if field("response_type") != "code"
            || field("client_id") != CLIENT_ID
            || field("code_challenge_method") != "S256"
            || field("code_challenge").len() != 43
            || field("state").is_empty()
            || !redirect_uri.starts_with("http://")
        {
            return reply(
                StatusCode::BAD_REQUEST,
                &[],
                json!({"error": "invalid_request"}),
            );
        }
        let code = self.next("code");
        self.codes.insert(
            code.clone(),
            IssuedCode {
                challenge: field("code_challenge"),
                redirect_uri: redirect_uri.clone(),
            },
        );
        let mut location = url::Url::parse(&redirect_uri).unwrap();
        location
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &field("state"));
        reply(
            StatusCode::FOUND,
            &[("location", location.as_str())],
            Value::Null,
        )
    }

    fn data(&mut self, headers: &HeaderMap) -> Response {
        let bearer = header(headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
            .unwrap_or_default();
        self.bearers.push(bearer.clone());
        if !self.refuse_all && self.access.contains(&bearer) {
            reply(StatusCode::OK, &[], json!({"orders": [1, 2, 3]}))
        } else {
            reply(
                StatusCode::UNAUTHORIZED,
                &[(
                    "www-authenticate",
                    r#"Bearer realm="fake", error="invalid_token""#,
                )],
                json!({"error": "invalid_token"}),
            )
        }
    }

    /// Grant types of the token requests it answered with a token.
    pub fn grants(&self) -> Vec<&str> {
        self.token_requests
            .iter()
            .map(String::as_str)
            .filter(|r| !r.starts_with("refused"))
            .collect()
    }
}

pub async fn provider(expires_in: u64) -> (Server, SharedProvider) {
    let state: SharedProvider = Arc::new(Mutex::new(Provider {
        expires_in,
        ..Provider::default()
    }));
    let (token, authorize, data) = (state.clone(), state.clone(), state.clone());
    let router = Router::new()
        .route(
            "/oauth/token",
            post(move |headers: HeaderMap, body: String| async move {
                token.lock().unwrap().token(&headers, &body)
            }),
        )
        .route(
            "/oauth/authorize",
            get(
                move |Query(query): Query<HashMap<String, String>>| async move {
                    authorize.lock().unwrap().authorize(query)
                },
            ),
        )
        .route(
            "/data",
            get(move |headers: HeaderMap| async move { data.lock().unwrap().data(&headers) }),
        );
    (Server::start(router).await, state)
}

/// Every file under `dir` that holds `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn oauth_client_credentials_tokens_are_cached_refreshed_and_survive_a_restart() {
    let (fake, provider) = provider(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    upload(&host, &[artifacts::FIXTURE_AUTH_OAUTH_CC]).await;
    let plugin = "auth-oauth-cc";
    let id = host.connect(plugin,
        json!({"base_url": fake.origin, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )
    .await;

    // One token for several calls, sequential or at once.
    let first = probe(&host, plugin, &id, "/data").await;
    succeeded(&first);
    assert_eq!(trail(&first), ["token 200", "plugin 200"]);
    let body = probe(&host, plugin, &id, "/data").await;
    assert_eq!(trail(&body), ["plugin 200"]);
    let parallel = futures::future::join_all((0..3).map(|_| probe(&host, plugin, &id, "/data")));
    for body in parallel.await {
        succeeded(&body);
        assert_eq!(trail(&body), ["plugin 200"]);
    }
    {
        let p = provider.lock().unwrap();
        assert_eq!(p.grants(), ["client_credentials"]);
        assert_eq!(p.bearers.len(), 5);
        assert!(
            p.bearers.iter().all(|b| *b == p.issued[0]),
            "{:?}",
            p.bearers
        );
    }
    let text = first.to_string();
    assert!(
        !text.contains(&provider.lock().unwrap().issued[0]) && !text.contains(CLIENT_SECRET),
        "{text}"
    );

    // The provider revokes the token: a 401, one new token, one retry.
    provider.lock().unwrap().access.clear();
    let body = probe(&host, plugin, &id, "/data").await;
    succeeded(&body);
    assert_eq!(trail(&body), ["plugin 401", "token 200", "retry 200"]);
    {
        let p = provider.lock().unwrap();
        assert_eq!(p.grants(), ["client_credentials", "client_credentials"]);
        assert_eq!(p.bearers.last(), p.issued.last());
    }

    // Calls that meet the revoked token at once share one new token.
    provider.lock().unwrap().access.clear();
    let calls = (0..3).map(|_| probe(&host, plugin, &id, "/data"));
    for body in futures::future::join_all(calls).await {
        succeeded(&body);
    }
    let current = {
        let p = provider.lock().unwrap();
        assert_eq!(p.grants().len(), 3, "{:?}", p.token_requests);
        p.issued.last().unwrap().clone()
    };

    // The token is stored sealed with the connection and used after a restart.
    host.stop().await;
    assert_eq!(
        files_containing(dir.path(), &current),
        Vec::<std::path::PathBuf>::new()
    );
    let host = TestHost::start(sandbox_config(dir.path())).await;
    let body = probe(&host, plugin, &id, "/data").await;
    succeeded(&body);
    assert_eq!(trail(&body), ["plugin 200"]);
    assert_eq!(provider.lock().unwrap().grants().len(), 3);
    assert_eq!(provider.lock().unwrap().bearers.last(), Some(&current));

    // A token the API keeps refusing: exactly one refresh and one retry, then
    // the 401 reaches the plugin as an auth error.
    provider.lock().unwrap().refuse_all = true;
    let body = probe(&host, plugin, &id, "/data").await;
    assert_eq!(failed(&body)["kind"], json!("auth"), "{body}");
    assert_eq!(trail(&body), ["plugin 401", "token 200", "retry 401"]);
    assert_eq!(provider.lock().unwrap().grants().len(), 4);
    provider.lock().unwrap().refuse_all = false;

    // A token that expires within the host's refresh margin (60 s) is
    // replaced before it is used, not after a 401.
    {
        let mut p = provider.lock().unwrap();
        p.expires_in = 30;
        p.access.clear();
    }
    let body = probe(&host, plugin, &id, "/data").await;
    assert_eq!(trail(&body), ["plugin 401", "token 200", "retry 200"]);
    let short_lived = provider.lock().unwrap().issued.last().unwrap().clone();
    let body = probe(&host, plugin, &id, "/data").await;
    succeeded(&body);
    assert_eq!(trail(&body), ["token 200", "plugin 200"]);
    {
        let p = provider.lock().unwrap();
        assert_eq!(p.grants().len(), 6);
        assert_ne!(p.bearers.last(), Some(&short_lived));
        assert_eq!(p.bearers.last(), p.issued.last());
    }

    // Wrong client credentials: the token endpoint's refusal is the error,
    // an auth error (it pauses a flow's connection), and it is held: the
    // next call does not ask the token endpoint again.
    let wrong = host
        .connect(
            plugin,
            json!({"base_url": fake.origin, "client_id": CLIENT_ID, "client_secret": "nope"}),
        )
        .await;
    let body = probe(&host, plugin, &wrong, "/data").await;
    let error = failed(&body);
    assert_eq!(error["kind"], json!("auth"), "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("token endpoint answered HTTP 401") && message.contains("invalid_client"),
        "{message}"
    );
    assert_eq!(trail(&body), ["token 401"]);
    let refusals = provider.lock().unwrap().token_requests.len();
    let body = probe(&host, plugin, &wrong, "/data").await;
    assert_eq!(failed(&body)["kind"], json!("auth"), "{body}");
    assert_eq!(trail(&body), Vec::<String>::new());
    assert_eq!(provider.lock().unwrap().token_requests.len(), refusals);
    host.stop().await;
}

/// The user's part: follows the authorize URL to the provider, which
/// redirects to the host's callback; returns that callback URL.
pub async fn consent(browser: &reqwest::Client, authorize_url: &str) -> String {
    let response = browser.get(authorize_url).send().await.unwrap();
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    response.headers()["location"].to_str().unwrap().to_string()
}

pub async fn visit(browser: &reqwest::Client, url: &str) -> (axum::http::StatusCode, Value) {
    read(browser.get(url).send().await.unwrap()).await
}

#[tokio::test]
async fn oauth_authorization_code_with_pkce_then_refresh() {
    let (fake, provider) = provider(3600).await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_OAUTH_CODE]).await;
    let plugin = "auth-oauth-code";
    let id = host.connect(plugin,
        json!({"base_url": fake.origin, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )
    .await;
    // No API token and no redirects: a browser, not an operator.
    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let body = probe(&host, plugin, &id, "/data").await;
    let message = failed(&body)["message"].as_str().unwrap().to_string();
    assert!(message.contains("not authorized yet"), "{message}");

    // Two flows at once: each callback must use its own verifier.
    let mut callbacks = Vec::new();
    for _ in 0..2 {
        let (status, started) = host
            .call(
                reqwest::Method::POST,
                &format!("/v1/connections/{id}/oauth/authorize"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{started}");
        let redirect_uri = format!("{}/oauth/callback", host.url);
        assert_eq!(started["redirect_uri"], json!(redirect_uri));
        let authorize_url = started["authorize_url"].as_str().unwrap();
        assert!(authorize_url.starts_with(&format!("{}/oauth/authorize?", fake.origin)));
        let callback = consent(&browser, authorize_url).await;
        assert!(
            callback.starts_with(&format!("{redirect_uri}?code=")),
            "{callback}"
        );
        callbacks.push(callback);
    }
    {
        let p = provider.lock().unwrap();
        assert_eq!(p.authorize_requests.len(), 2);
        for query in &p.authorize_requests {
            assert_eq!(
                query["redirect_uri"],
                format!("{}/oauth/callback", host.url)
            );
            assert_eq!(query["scope"], "orders");
        }
        assert_ne!(
            p.authorize_requests[0]["state"],
            p.authorize_requests[1]["state"]
        );
        assert_ne!(
            p.authorize_requests[0]["code_challenge"],
            p.authorize_requests[1]["code_challenge"]
        );
    }
    for callback in callbacks.iter().rev() {
        let (status, done) = visit(&browser, callback).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["connection"]["authorized"], json!(true), "{done}");
    }
    assert_eq!(
        provider.lock().unwrap().grants(),
        ["authorization_code", "authorization_code"]
    );

    // A state works once; an unknown one not at all; a refusal is reported.
    let (status, body) = visit(&browser, &callbacks[0]).await;
    assert_eq!(status, 400, "{body}");
    let unknown = format!("{}/oauth/callback?code=x&state=0123456789abcdef", host.url);
    let (status, body) = visit(&browser, &unknown).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown or expired OAuth state"),
        "{body}"
    );
    let refused = format!(
        "{}/oauth/callback?error=access_denied&state=0123456789abcdef",
        host.url
    );
    let (status, body) = visit(&browser, &refused).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("access_denied"), "{body}");
    // None of that spent a code.
    assert_eq!(provider.lock().unwrap().grants().len(), 2);

    let (status, view) = host.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["authorized"], json!(true), "{view}");
    assert!(view["token_expires_at"].as_u64().is_some(), "{view}");
    let view = view.to_string();
    for token in provider.lock().unwrap().issued.iter() {
        assert!(!view.contains(token.as_str()), "{token} in {view}");
    }
    assert!(!view.contains(CLIENT_SECRET));

    // The bearer token from the last code exchange.
    let body = probe(&host, plugin, &id, "/data").await;
    succeeded(&body);
    assert_eq!(trail(&body), ["plugin 200"]);
    {
        let p = provider.lock().unwrap();
        let last_access = p.issued.iter().rev().find(|t| t.starts_with("at-"));
        assert_eq!(p.bearers.last(), last_access);
    }

    // Revoked access token: the refresh token gets a new one. Twice, so the
    // rotated refresh token must have been kept.
    for round in 1..=2 {
        provider.lock().unwrap().access.clear();
        let body = probe(&host, plugin, &id, "/data").await;
        succeeded(&body);
        assert_eq!(trail(&body), ["plugin 401", "token 200", "retry 200"]);
        let p = provider.lock().unwrap();
        assert_eq!(p.grants().len(), 2 + round, "{:?}", p.token_requests);
        assert_eq!(p.grants().last(), Some(&"refresh_token"));
    }
    host.stop().await;
}

// --- Session login ---------------------------------------------------------

#[derive(Default)]
struct Sessions {
    logins: Vec<Value>,
    valid: HashSet<String>,
    seen: Vec<Option<String>>,
}

#[tokio::test]
async fn a_session_is_opened_once_and_reopened_after_it_expires() {
    const USER: &str = "robot";
    // JSON-special characters: the login body must escape them.
    const PASSWORD: &str = r#"p"a\ss{word}"#;
    let sessions: Arc<Mutex<Sessions>> = Default::default();
    let (login, data) = (sessions.clone(), sessions.clone());
    let fake = Server::start(
        Router::new()
            .route(
                "/login",
                post(move |headers: HeaderMap, body: String| async move {
                    let mut s = login.lock().unwrap();
                    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    s.logins.push(json.clone());
                    let is_json =
                        header(&headers, "content-type").as_deref() == Some("application/json");
                    if is_json && json == json!({"user": USER, "pass": PASSWORD}) {
                        let token = format!("sess-{}", s.logins.len());
                        // One session per user: a login ends the previous one.
                        s.valid.clear();
                        s.valid.insert(token.clone());
                        reply(StatusCode::OK, &[], json!({"data": {"token": token}}))
                    } else {
                        reply(
                            StatusCode::UNAUTHORIZED,
                            &[],
                            json!({"error": "bad credentials"}),
                        )
                    }
                }),
            )
            .route(
                "/data",
                get(move |headers: HeaderMap| async move {
                    let mut s = data.lock().unwrap();
                    let sent = header(&headers, "x-session");
                    s.seen.push(sent.clone());
                    let token = sent.as_deref().and_then(|v| v.strip_prefix("Token "));
                    if token.is_some_and(|t| s.valid.contains(t)) {
                        reply(StatusCode::OK, &[], json!({"rows": 3}))
                    } else {
                        reply(
                            StatusCode::UNAUTHORIZED,
                            &[],
                            json!({"error": "session expired"}),
                        )
                    }
                }),
            ),
    )
    .await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_SESSION]).await;
    let plugin = "auth-session";
    let id = host
        .connect(
            plugin,
            json!({"base_url": fake.origin, "username": USER, "password": PASSWORD}),
        )
        .await;

    for call in 0..3 {
        let body = probe(&host, plugin, &id, "/data").await;
        succeeded(&body);
        let expected: &[&str] = if call == 0 {
            &["login 200", "plugin 200"]
        } else {
            &["plugin 200"]
        };
        assert_eq!(trail(&body), expected);
    }
    {
        let s = sessions.lock().unwrap();
        assert_eq!(s.logins.len(), 1);
        assert!(s.seen.iter().all(|v| v.as_deref() == Some("Token sess-1")));
    }

    // The API forgets every session: one new login, one retry.
    sessions.lock().unwrap().valid.clear();
    let body = probe(&host, plugin, &id, "/data").await;
    succeeded(&body);
    assert_eq!(trail(&body), ["plugin 401", "login 200", "retry 200"]);
    {
        let s = sessions.lock().unwrap();
        assert_eq!(s.logins.len(), 2);
        assert_eq!(s.seen.last().unwrap().as_deref(), Some("Token sess-2"));
    }
    let body = probe(&host, plugin, &id, "/data").await;
    assert_eq!(trail(&body), ["plugin 200"]);
    assert_eq!(sessions.lock().unwrap().logins.len(), 2);

    // Calls that meet the expired session at once share one new login: a
    // login per call would end the sessions the other calls just opened.
    sessions.lock().unwrap().valid.clear();
    let calls = (0..4).map(|_| probe(&host, plugin, &id, "/data"));
    for body in futures::future::join_all(calls).await {
        succeeded(&body);
        assert!(
            trail(&body)
                .iter()
                .filter(|e| e.starts_with("login"))
                .count()
                <= 1,
            "{body}"
        );
    }
    assert_eq!(sessions.lock().unwrap().logins.len(), 3);

    // Wrong credentials: the login's refusal, clearly, as an auth error, and
    // no request without a session.
    let wrong = host
        .connect(
            plugin,
            json!({"base_url": fake.origin, "username": USER, "password": "guess"}),
        )
        .await;
    let seen_before = sessions.lock().unwrap().seen.len();
    let body = probe(&host, plugin, &wrong, "/data").await;
    let error = failed(&body);
    assert_eq!(error["kind"], json!("auth"), "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("session login failed with HTTP 401")
            && message.contains("bad credentials"),
        "{message}"
    );
    assert_eq!(trail(&body), ["login 401"]);
    assert_eq!(sessions.lock().unwrap().seen.len(), seen_before);
    assert_eq!(sessions.lock().unwrap().logins.len(), 4);
    assert!(!body.to_string().contains("guess"), "{body}");
    host.stop().await;
}

/// A session API whose login can be made to fail: `/login` takes
/// `{"user", "pass"}` and answers `outage` if one is set, 401 for a wrong
/// password, else a token; `/data` wants `X-Session: Token <token>`.
#[derive(Default)]
struct LoginApi {
    logins: usize,
    valid: HashSet<String>,
    /// The status (and `Retry-After`) every login gets while set.
    outage: Option<(StatusCode, Option<&'static str>)>,
}

const SESSION_USER: &str = "robot";
const SESSION_PASSWORD: &str = "the-right-password";

async fn login_api() -> (Server, Arc<Mutex<LoginApi>>) {
    let api: Arc<Mutex<LoginApi>> = Default::default();
    let (login, data) = (api.clone(), api.clone());
    let fake = Server::start(
        Router::new()
            .route(
                "/login",
                post(move |body: String| async move {
                    let mut api = login.lock().unwrap();
                    api.logins += 1;
                    if let Some((status, retry_after)) = api.outage {
                        let headers: Vec<(&str, &str)> = retry_after
                            .map(|v| ("retry-after", v))
                            .into_iter()
                            .collect();
                        return reply(status, &headers, json!({"error": "try again later"}));
                    }
                    let sent: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if sent == json!({"user": SESSION_USER, "pass": SESSION_PASSWORD}) {
                        let token = format!("sess-{}-8c1f2e", api.logins);
                        api.valid.insert(token.clone());
                        reply(StatusCode::OK, &[], json!({"data": {"token": token}}))
                    } else {
                        reply(
                            StatusCode::UNAUTHORIZED,
                            &[],
                            json!({"error": "bad credentials"}),
                        )
                    }
                }),
            )
            .route(
                "/data",
                get(move |headers: HeaderMap| async move {
                    let api = data.lock().unwrap();
                    let token = header(&headers, "x-session")
                        .and_then(|v| v.strip_prefix("Token ").map(str::to_string));
                    if token.is_some_and(|t| api.valid.contains(&t)) {
                        reply(StatusCode::OK, &[], json!({"rows": 3}))
                    } else {
                        reply(
                            StatusCode::UNAUTHORIZED,
                            &[],
                            json!({"error": "session expired"}),
                        )
                    }
                }),
            ),
    )
    .await;
    (fake, api)
}

/// A flow that runs the probe's `get` of `/data` on `connection` when run by
/// hand (its schedule is once a year), retrying fast.
async fn session_flow(host: &TestHost, connection: &str) -> String {
    let (status, body) = host
        .call(
            reqwest::Method::POST,
            "/v1/flows",
            Some(json!({
                "name": format!("Session data {connection}"),
                "trigger": {"schedule": "0 0 1 1 *"},
                "steps": [{
                    "key": "get", "plugin": "auth-session", "action": "get",
                    "connection": connection, "input": {"path": "/data"},
                    "retry": {"initial_delay_ms": 50, "max_delay_ms": 200},
                }],
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Starts a run of `flow` and returns its id.
async fn start_run(host: &TestHost, flow: &str) -> String {
    let (status, run) = host
        .call(
            reqwest::Method::POST,
            &format!("/v1/flows/{flow}/run?wait_ms=0"),
            Some(json!({"id": format!("e-{}", rand_suffix())})),
        )
        .await;
    assert!(status.is_success(), "{run}");
    run["id"].as_str().unwrap().to_string()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// What the guest was told when its requests failed (the probe logs it).
fn guest_errors(body: &Value) -> Vec<String> {
    body["journal"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.starts_with("http.send failed"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_login_pauses_the_connection_until_it_is_resumed() {
    let (fake, api) = login_api().await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_SESSION]).await;
    let plugin = "auth-session";
    let conn = host.connect(plugin,
        json!({"base_url": fake.origin, "username": SESSION_USER, "password": "wrong-password"}),
    )
    .await;
    let logins = || api.lock().unwrap().logins;

    // A run meets the refusal: an auth error that pauses the connection and
    // parks the run (not a dead letter).
    let flow = session_flow(&host, &conn).await;
    let run = start_run(&host, &flow).await;
    let parked =
        crate::support::wait_for(&host, &format!("/v1/runs/{run}"), "the run parks", |r| {
            r["status"] == json!("paused")
        })
        .await;
    assert_eq!(parked["error"]["kind"], json!("auth"), "{parked}");
    let message = parked["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("session login failed with HTTP 401") && !message.contains("denied"),
        "{message}"
    );
    let (_, view) = host.get(&format!("/v1/connections/{conn}")).await;
    assert_eq!(view["status"]["state"], json!("paused"), "{view}");
    assert!(
        view["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("session login failed with HTTP 401"),
        "{view}"
    );
    assert_eq!(logins(), 1);

    // Calls made meanwhile, at once, are refused without a login; the
    // plugin is told the login failed, not that the sandbox denied it.
    let calls = (0..3).map(|_| probe(&host, plugin, &conn, "/data"));
    for body in futures::future::join_all(calls).await {
        let error = failed(&body);
        assert_eq!(error["kind"], json!("auth"), "{body}");
        assert_eq!(trail(&body), Vec::<String>::new());
        let told = guest_errors(&body);
        assert!(
            told.len() == 1
                && told[0].contains("Connection(\"session login failed with HTTP 401")
                && !told[0].to_lowercase().contains("denied"),
            "{told:?}"
        );
    }
    assert_eq!(logins(), 1);

    // A poller on the paused connection does not log in either.
    let (status, polling) = host
        .call(
            reqwest::Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "Session changes",
                "trigger": {"plugin": plugin, "trigger": "changes", "connection": conn,
                            "params": {"path": "/data"}, "interval_secs": 1},
                "steps": [{"key": "get", "plugin": plugin, "action": "get",
                           "connection": conn, "input": {"path": "/data"}}],
            })),
        )
        .await;
    assert_eq!(status, 201, "{polling}");
    let polling = polling["id"].as_str().unwrap().to_string();
    let path = format!("/v1/flows/{polling}/activate");
    let (status, body) = host.call(reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 200, "{body}");
    crate::support::wait_for(
        &host,
        &format!("/v1/flows/{polling}/trigger"),
        "a poll finds the connection paused",
        |t| {
            t["state"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("is paused"))
        },
    )
    .await;
    assert_eq!(logins(), 1);
    let path = format!("/v1/flows/{polling}/deactivate");
    let (status, body) = host.call(reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 200, "{body}");

    // Resuming allows one new login; refused again, the connection pauses again.
    let path = format!("/v1/connections/{conn}/resume");
    let (status, body) = host.call(reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 200, "{body}");
    crate::support::wait_for(
        &host,
        &format!("/v1/connections/{conn}"),
        "the connection pauses again",
        |c| c["status"]["state"] == json!("paused") && logins() == 2,
    )
    .await;
    crate::support::wait_for(
        &host,
        &format!("/v1/runs/{run}"),
        "the run parks again",
        |r| r["status"] == json!("paused"),
    )
    .await;
    assert_eq!(logins(), 2);

    // Fixed credentials: the connection is active again, and so is the run.
    let (status, body) = host
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/connections/{conn}"),
            Some(json!({"properties": {"password": SESSION_PASSWORD}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let path = format!("/v1/connections/{conn}/resume");
    let (status, body) = host.call(reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 200, "{body}");
    crate::support::wait_for(&host, &format!("/v1/runs/{run}"), "the run succeeds", |r| {
        r["status"] == json!("succeeded")
    })
    .await;
    assert_eq!(logins(), 3);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_logins_answered_429_or_503_are_retried_never_dead_lettered() {
    let (fake, api) = login_api().await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_SESSION]).await;
    let plugin = "auth-session";
    let conn = host.connect(plugin,
        json!({"base_url": fake.origin, "username": SESSION_USER, "password": SESSION_PASSWORD}),
    )
    .await;

    // By hand: the kinds the engine acts on, with the Retry-After.
    api.lock().unwrap().outage = Some((StatusCode::TOO_MANY_REQUESTS, Some("7")));
    let body = probe(&host, plugin, &conn, "/data").await;
    let error = failed(&body);
    assert_eq!(error["kind"], json!("rate_limited"), "{body}");
    assert_eq!(error["retry_after_ms"], json!(7000), "{body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("session login failed with HTTP 429"),
        "{body}"
    );
    assert_eq!(trail(&body), ["login 429"]);
    api.lock().unwrap().outage = Some((StatusCode::SERVICE_UNAVAILABLE, None));
    for _ in 0..2 {
        let body = probe(&host, plugin, &conn, "/data").await;
        assert_eq!(failed(&body)["kind"], json!("transient"), "{body}");
        // Not held like a refusal: every call may try again.
        assert_eq!(trail(&body), ["login 503"]);
    }
    assert_eq!(api.lock().unwrap().logins, 3);

    // In a run: retried on the step's schedule (after the Retry-After), the
    // connection stays active, and the run succeeds once logins work again.
    api.lock().unwrap().outage = Some((StatusCode::TOO_MANY_REQUESTS, Some("1")));
    let flow = session_flow(&host, &conn).await;
    let run = start_run(&host, &flow).await;
    let waiting = crate::support::wait_for(
        &host,
        &format!("/v1/runs/{run}"),
        "the run waits for the Retry-After",
        |r| r["status"] == json!("retrying"),
    )
    .await;
    assert_eq!(waiting["error"]["kind"], json!("rate_limited"), "{waiting}");
    let wait = waiting["due_at"].as_u64().unwrap() - waiting["updated_at"].as_u64().unwrap();
    assert!(wait >= 1000, "retried {wait} ms after a Retry-After of 1 s");
    api.lock().unwrap().outage = Some((StatusCode::SERVICE_UNAVAILABLE, None));
    crate::support::wait_for(
        &host,
        &format!("/v1/runs/{run}"),
        "a retry meets the 503",
        |r| r["status"] == json!("retrying") && r["error"]["kind"] == json!("transient"),
    )
    .await;
    let (_, view) = host.get(&format!("/v1/connections/{conn}")).await;
    assert_eq!(view["status"]["state"], json!("active"), "{view}");
    api.lock().unwrap().outage = None;
    crate::support::wait_for(&host, &format!("/v1/runs/{run}"), "the run succeeds", |r| {
        r["status"] == json!("succeeded")
    })
    .await;
    let (_, dead) = host.get("/v1/dead-letters").await;
    assert_eq!(dead["runs"], json!([]), "{dead}");
    host.stop().await;
}

// --- Digest ----------------------------------------------------------------

#[tokio::test]
async fn digest_through_the_sandbox_against_apache() {
    let apache = Apache::start();
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_DIGEST]).await;
    let plugin = "auth-digest";
    let id = host.connect(plugin,
        json!({"base_url": apache.origin(), "username": digest::USER, "password": digest::PASSWORD}),
    )
    .await;
    let target = "/private/secret.txt";

    let body = probe(&host, plugin, &id, target).await;
    let output = succeeded(&body);
    assert_eq!(
        output["body"],
        json!(digest::SECRET),
        "{}",
        apache.error_log()
    );
    assert_eq!(trail(&body), ["plugin 401", "retry 200"]);

    // The cached challenge answers at once, with the next nonce counts:
    // Apache checks them (AuthDigestNcCheck) and refuses a replay.
    for _ in 0..2 {
        let body = probe(&host, plugin, &id, target).await;
        succeeded(&body);
        assert_eq!(trail(&body), ["plugin 200"], "{}", apache.error_log());
    }

    let wrong = host
        .connect(
            plugin,
            json!({"base_url": apache.origin(), "username": digest::USER, "password": "sesame"}),
        )
        .await;
    let body = probe(&host, plugin, &wrong, target).await;
    assert_eq!(failed(&body)["kind"], json!("auth"), "{body}");
    assert_eq!(trail(&body), ["plugin 401", "retry 401"]);
    host.stop().await;
}

// --- Rate limits -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_connection_rate_limit_spaces_requests() {
    const KEY: &str = "k-rate-limited";
    let arrivals: Arc<Mutex<Vec<Instant>>> = Default::default();
    let fake = Server::start(Router::new().route(
        "/items",
        post({
            let arrivals = arrivals.clone();
            move |headers: HeaderMap, body: String| async move {
                if header(&headers, "x-api-key").as_deref() != Some(KEY) {
                    return reply(StatusCode::UNAUTHORIZED, &[], json!({"error": "key"}));
                }
                let mut arrivals = arrivals.lock().unwrap();
                arrivals.push(Instant::now());
                let mut item: Value = serde_json::from_str(&body).unwrap_or_default();
                item["id"] = json!(format!("item-{}", arrivals.len()));
                reply(StatusCode::CREATED, &[], item)
            }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(dir.path());
    // Every call holds an instance while it waits for the limiter.
    config.max_instances = 32;
    let host = TestHost::start(config).await;
    upload(&host, &[artifacts::EXAMPLE]).await;
    let id = host
        .connect("example", json!({"base_url": fake.origin, "api_key": KEY}))
        .await;

    // 10 per second with a burst of 10: 10 at once, then one every 100 ms.
    let started = Instant::now();
    let calls = futures::future::join_all((0..25).map(|i| {
        invoke(
            &host,
            "example",
            "create-item",
            &id,
            json!({"name": format!("x{i}")}),
        )
    }))
    .await;
    let elapsed = started.elapsed();
    for body in &calls {
        assert!(body["error"].is_null(), "{body}");
        assert!(body["output"]["id"].as_str().unwrap().starts_with("item-"));
    }
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    assert_eq!(arrivals.len(), 25);
    // Measured from the calls' start, which comes before the first permit:
    // the first request may reach the fake late, the last cannot be early.
    let span = arrivals[24] - started;
    assert!(
        span >= Duration::from_millis(1400),
        "25 requests in {span:?}"
    );
    assert!(elapsed >= Duration::from_millis(1400), "took {elapsed:?}");
    // Beyond the burst, no request is early (with 100 ms of slack for jitter).
    for (k, at) in arrivals.iter().enumerate().skip(10) {
        let earliest = Duration::from_millis(100) * (k as u32 - 9);
        assert!(
            *at - started + Duration::from_millis(100) >= earliest,
            "request {k} came {:?} after the calls started",
            *at - started
        );
    }
    host.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_a_rate_limited_error() {
    let hits: Arc<Mutex<usize>> = Default::default();
    let fake = Server::start(Router::new().route(
        "/busy",
        get({
            let hits = hits.clone();
            move || async move {
                *hits.lock().unwrap() += 1;
                reply(
                    StatusCode::TOO_MANY_REQUESTS,
                    &[("retry-after", "2")],
                    json!({"error": "rate limit exceeded"}),
                )
            }
        }),
    ))
    .await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_BASIC]).await;
    let id = host
        .connect(
            "auth-basic",
            json!({"base_url": fake.origin, "username": "u", "password": "pw-1234"}),
        )
        .await;
    let body = probe(&host, "auth-basic", &id, "/busy").await;
    let error = failed(&body);
    assert_eq!(error["kind"], json!("rate_limited"), "{body}");
    assert_eq!(error["retry_after_ms"], json!(2000), "{body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("rate limit exceeded"),
        "{body}"
    );
    // The host does not retry a 429 itself: that is the caller's decision.
    assert_eq!(trail(&body), ["plugin 429"]);
    assert_eq!(*hits.lock().unwrap(), 1);
    host.stop().await;
}
