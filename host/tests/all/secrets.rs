//! Secrets the host holds for a plugin version and for a connection, end to
//! end: secret environment variables (sealed, write-only, copied forward,
//! never in the guest's context), an app's OAuth client taken from them so a
//! tenant only connects, templated auth URLs that a tenant's property cannot
//! redirect, a partner key beside the user's own, and credentials scrubbed
//! out of responses that echo them. Fakes listen on 127.0.0.2.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Router,
    extract::RawQuery,
    http::{HeaderMap, StatusCode},
    routing::get,
};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    auth::{
        CLIENT_ID, CLIENT_SECRET, basic, consent, failed, files_containing, header, host_with,
        probe, provider, reply, succeeded, trail, upload, visit,
    },
    sandbox::SECRET,
    support::{TestHost, error_message, fake::Server, sandbox_config},
};

/// Sets a variable of `plugin` (`key/version`); returns the API's answer.
async fn set_env(host: &TestHost, plugin: &str, name: &str, value: &str, secret: bool) -> Value {
    let (status, body) = host
        .call(
            Method::PUT,
            &format!("/v1/plugins/{plugin}/env/{name}"),
            Some(json!({"value": value, "secret": secret})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The port of an `http://127.0.0.2:PORT` origin.
fn port(origin: &str) -> String {
    origin.rsplit(':').next().unwrap().to_string()
}

// --- Secret environment variables ------------------------------------------

#[tokio::test]
async fn secret_variables_are_sealed_write_only_copied_forward_and_kept_from_the_guest() {
    const VALUE: &str = "sk_operator_7d1e4b9a2c";
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    upload(&host, &[artifacts::EXAMPLE, artifacts::FIXTURE_HOSTILE]).await;

    set_env(&host, "example/0.1.0", "REGION", "eu", false).await;
    let answer = set_env(&host, "example/0.1.0", "SIGNING_KEY", VALUE, true).await;
    let expected = json!({
        "env": {"REGION": "eu", "SIGNING_KEY": "********"},
        "secret": ["SIGNING_KEY"],
    });
    assert_eq!(answer, expected);
    let (_, listed) = host.get("/v1/plugins/example/0.1.0/env").await;
    assert_eq!(listed, expected);
    let (_, shown) = host.get("/v1/plugins/example/0.1.0").await;
    assert_eq!(shown["secret_env"], json!({"SIGNING_KEY": "********"}));
    assert_eq!(shown["env"], json!({"REGION": "eu"}));
    assert!(!shown.to_string().contains(VALUE), "{shown}");
    let (status, body) = host
        .call(
            Method::PUT,
            "/v1/plugins/example/0.1.0/env/bad-name",
            Some(json!({"value": "x", "secret": true})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_message(&body, "bad_request").contains("bad-name"));

    // A new version gets the variables, the secret one sealed for it anew.
    host.upload_file(artifacts::FIXTURE_EXAMPLE_V2).await;
    let (_, copied) = host.get("/v1/plugins/example/0.2.0/env").await;
    assert_eq!(copied, expected);
    let registry = &host.app.registry;
    for version in ["0.1.0", "0.2.0"] {
        let record = registry
            .record("example", &version.parse().unwrap())
            .unwrap();
        let opened = registry.secret_env(&record).unwrap();
        assert_eq!(opened["SIGNING_KEY"], VALUE, "{version}");
        // Bound to its version: a sealed value moved to another does not open.
        let mut moved = record.clone();
        moved.version = if version == "0.1.0" { "0.2.0" } else { "0.1.0" }
            .parse()
            .unwrap();
        assert!(registry.secret_env(&moved).is_err(), "{version}");
    }

    // Plain and secret replace each other; unset removes either.
    set_env(&host, "example/0.2.0", "REGION", "us", true).await;
    let answer = set_env(&host, "example/0.2.0", "SIGNING_KEY", "now-plain", false).await;
    assert_eq!(
        answer,
        json!({"env": {"REGION": "********", "SIGNING_KEY": "now-plain"}, "secret": ["REGION"]})
    );
    let (status, answer) = host
        .call(Method::DELETE, "/v1/plugins/example/0.2.0/env/REGION", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"env": {"SIGNING_KEY": "now-plain"}, "secret": []})
    );

    // The guest's context has the plain variables only.
    set_env(&host, "hostile/0.1.0", "REGION", "eu", false).await;
    set_env(&host, "hostile/0.1.0", "SIGNING_KEY", VALUE, true).await;
    let (status, body) = host
        .invoke("hostile@0.1.0", "observe", json!({}), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["ctx"]["env"], json!({"REGION": "eu"}));
    let id = host
        .connect(
            "hostile",
            json!({"token": SECRET, "target": "http://127.0.0.2:9"}),
        )
        .await;
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/invoke",
            Some(json!({"plugin": "hostile", "action": "observe", "connection": id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["ctx"]["env"], json!({"REGION": "eu"}));
    assert!(!body.to_string().contains(VALUE), "{body}");

    // Sealed at rest, and opened again after a restart.
    host.stop().await;
    assert_eq!(
        files_containing(dir.path(), VALUE),
        Vec::<std::path::PathBuf>::new()
    );
    let host = TestHost::start(sandbox_config(dir.path())).await;
    let record = host
        .app
        .registry
        .record("example", &"0.1.0".parse().unwrap())
        .unwrap();
    assert_eq!(
        host.app.registry.secret_env(&record).unwrap()["SIGNING_KEY"],
        VALUE
    );
    host.stop().await;
}

// --- The app's own OAuth client ----------------------------------------------

#[tokio::test]
async fn the_app_s_oauth_client_comes_from_the_environment_so_a_tenant_only_connects() {
    let (fake, provider) = provider(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    upload(&host, &[artifacts::FIXTURE_AUTH_OAUTH_APP]).await;
    let plugin = "auth-oauth-app";
    set_env(&host, "auth-oauth-app/0.1.0", "CLIENT_ID", CLIENT_ID, false).await;
    set_env(
        &host,
        "auth-oauth-app/0.1.0",
        "CLIENT_SECRET",
        CLIENT_SECRET,
        true,
    )
    .await;

    // The tenant's connection holds no client at all.
    let (status, tenant) = host
        .call(Method::POST, "/v1/tenants", Some(json!({"name": "Acme"})))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_token = tenant["token"].as_str().unwrap().to_string();
    let as_tenant = |method: Method, path: String, body: Option<Value>| {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", host.url))
            .bearer_auth(&tenant_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { crate::support::read(request.send().await.unwrap()).await }
    };
    let (status, created) = as_tenant(
        Method::POST,
        "/v1/connections".into(),
        Some(json!({"plugin": plugin, "properties": {"base_url": fake.origin, "port": port(&fake.origin)}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, started) = as_tenant(
        Method::POST,
        format!("/v1/connections/{id}/oauth/authorize"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let callback = consent(&browser, started["authorize_url"].as_str().unwrap()).await;
    let (status, done) = visit(&browser, &callback).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["connection"]["authorized"], json!(true), "{done}");
    {
        let p = provider.lock().unwrap();
        assert_eq!(p.authorize_requests[0]["client_id"], CLIENT_ID);
        // The provider checked the operator's client on the code exchange.
        assert_eq!(p.grants(), ["authorization_code"]);
    }

    // Calls use the token; a revoked token is refreshed with the app's client.
    let (status, body) = as_tenant(
        Method::POST,
        "/v1/invoke".into(),
        Some(json!({"plugin": plugin, "action": "get", "connection": id, "input": {"path": "/data"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    succeeded(&body);
    provider.lock().unwrap().access.clear();
    let (_, body) = as_tenant(
        Method::POST,
        "/v1/invoke".into(),
        Some(json!({"plugin": plugin, "action": "get", "connection": id, "input": {"path": "/data"}})),
    )
    .await;
    succeeded(&body);
    assert_eq!(trail(&body), ["plugin 401", "token 200", "retry 200"]);
    assert_eq!(
        provider.lock().unwrap().grants(),
        ["authorization_code", "refresh_token"]
    );
    assert!(!body.to_string().contains(CLIENT_SECRET), "{body}");

    // The tenant cannot read the app's environment.
    let (status, _) = as_tenant(
        Method::GET,
        "/v1/plugins/auth-oauth-app/0.1.0/env".into(),
        None,
    )
    .await;
    assert_eq!(status, 403);
    host.stop().await;
    assert_eq!(
        files_containing(dir.path(), CLIENT_SECRET),
        Vec::<std::path::PathBuf>::new()
    );
}

/// A TCP listener on 127.0.0.2 that only counts the connections it gets.
async fn counting_listener() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted: Arc<AtomicUsize> = Default::default();
    let count = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{addr}"), accepted, server)
}

#[tokio::test]
async fn a_tenant_s_shop_cannot_send_the_operator_s_client_secret_elsewhere() {
    let (origin, accepted, listener) = counting_listener().await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_OAUTH_SHOP]).await;
    let plugin = "auth-oauth-shop";
    set_env(&host, "auth-oauth-shop/0.1.0", "CLIENT_ID", CLIENT_ID, true).await;
    set_env(
        &host,
        "auth-oauth-shop/0.1.0",
        "CLIENT_SECRET",
        CLIENT_SECRET,
        true,
    )
    .await;
    // `https://{{shop}}.myshopify.com/...` with these would be a request to
    // evil.example, and to the listener, with the operator's client.
    let authority = origin.trim_start_matches("http://");
    for shop in ["evil.example/x?", &format!("{authority}/x?")] {
        let id = host
            .connect(plugin, json!({"base_url": origin, "shop": shop}))
            .await;
        let body = probe(&host, plugin, &id, "/orders").await;
        let message = failed(&body)["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("property `shop` may hold only letters, digits"),
            "{message}"
        );
        assert_eq!(trail(&body), Vec::<String>::new(), "{body}");
        assert!(!body.to_string().contains(CLIENT_SECRET), "{body}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    listener.abort();
    host.stop().await;
}

// --- A partner key -----------------------------------------------------------

const USER_KEY: &str = "uk_tenant_4c2a91";
/// The (`X-Api-Key`, `X-Partner-Key`) pairs a fake received.
type SeenKeys = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;
const PARTNER_KEY: &str = "pk_operator_b83f07d2";

#[tokio::test]
async fn a_partner_key_goes_beside_the_user_s_key_to_hosts_the_manifest_names() {
    let seen: SeenKeys = Default::default();
    let api = |seen: SeenKeys| {
        Router::new().route(
            "/whoami",
            get(move |headers: HeaderMap| async move {
                let keys = (
                    header(&headers, "x-api-key"),
                    header(&headers, "x-partner-key"),
                );
                seen.lock().unwrap().push(keys.clone());
                if keys == (Some(USER_KEY.into()), Some(PARTNER_KEY.into())) {
                    reply(StatusCode::OK, &[], json!({"user": "acme"}))
                } else {
                    reply(StatusCode::UNAUTHORIZED, &[], json!({"error": "keys"}))
                }
            }),
        )
    };
    let fake = Server::start(api(seen.clone())).await;
    let elsewhere_seen: SeenKeys = Default::default();
    let elsewhere = Server::start(api(elsewhere_seen.clone())).await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_APIKEY_PARTNER]).await;
    let plugin = "auth-apikey-partner";
    let version = "auth-apikey-partner/0.1.0";
    set_env(&host, version, "PARTNER_KEY", PARTNER_KEY, true).await;

    let id = host
        .connect(
            plugin,
            json!({"base_url": fake.origin, "port": port(&fake.origin), "api_key": USER_KEY}),
        )
        .await;
    // Without PARTNER_KEY_NAME the host does not guess where the key goes.
    let body = probe(&host, plugin, &id, "/whoami").await;
    let message = failed(&body)["message"].as_str().unwrap().to_string();
    assert!(message.contains("PARTNER_KEY_NAME"), "{message}");
    assert!(seen.lock().unwrap().is_empty());

    set_env(&host, version, "PARTNER_KEY_NAME", "X-Partner-Key", false).await;
    let body = probe(&host, plugin, &id, "/whoami").await;
    succeeded(&body);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [(Some(USER_KEY.to_string()), Some(PARTNER_KEY.to_string()))]
    );
    let text = body.to_string();
    assert!(
        !text.contains(PARTNER_KEY) && !text.contains(USER_KEY),
        "{text}"
    );

    // A `base_url` of the tenant's choosing is allowed, but gets no partner key.
    let moved = host
        .connect(
            plugin,
            json!({"base_url": elsewhere.origin, "port": port(&fake.origin), "api_key": USER_KEY}),
        )
        .await;
    let body = probe(&host, plugin, &moved, "/whoami").await;
    let message = failed(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("goes only to hosts the manifest names"),
        "{message}"
    );
    assert!(elsewhere_seen.lock().unwrap().is_empty());
    host.stop().await;
}

// --- Scrubbing ---------------------------------------------------------------

/// Answers every request with what it got: the `Authorization` header in a
/// header and in the body, the raw query, and what the body quotes.
fn echo_api() -> Router {
    Router::new().route(
        "/echo",
        get(|headers: HeaderMap, RawQuery(query): RawQuery| async move {
            let authorization = header(&headers, "authorization").unwrap_or_default();
            let encoding = header(&headers, "accept-encoding").unwrap_or_default();
            reply(
                StatusCode::BAD_REQUEST,
                &[("x-echo-authorization", &authorization)],
                json!({
                    "error": format!("cannot serve {}", query.unwrap_or_default()),
                    "you_sent": {"authorization": authorization, "accept-encoding": encoding},
                    "decoded": basic(&headers, false).map(|(u, p)| format!("{u}:{p}")),
                }),
            )
        }),
    )
}

#[tokio::test]
async fn credentials_a_server_echoes_are_scrubbed_before_the_plugin_reads_them() {
    let fake = Server::start(echo_api()).await;
    let (_dir, host) = host_with(&[
        artifacts::FIXTURE_HOSTILE,
        artifacts::FIXTURE_AUTH_APIKEY_QUERY,
        artifacts::FIXTURE_AUTH_BASIC,
    ])
    .await;

    // Bearer: the plugin reads the echoed header and body, token masked.
    let id = host
        .connect("hostile", json!({"token": SECRET, "target": fake.origin}))
        .await;
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/invoke",
            Some(json!({
                "plugin": "hostile", "action": "http", "connection": id,
                "input": {"url": format!("{}/echo", fake.origin), "headers": {"Accept-Encoding": "gzip"}},
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = &body["output"];
    assert_eq!(seen["status"], json!(400), "{body}");
    assert_eq!(
        seen["headers"]["x-echo-authorization"],
        json!("Bearer ********")
    );
    let echoed: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed["you_sent"],
        json!({"authorization": "Bearer ********", "accept-encoding": ""})
    );
    assert_eq!(
        seen["headers"]["content-length"],
        json!(seen["body"].as_str().unwrap().len().to_string())
    );
    assert!(!body.to_string().contains(SECRET), "{body}");

    // An API key in the query, quoted back percent-encoded and in JSON.
    const KEY: &str = "qk_7f3a/9+z&Q=";
    let id = host
        .connect(
            "auth-apikey-query",
            json!({"base_url": fake.origin, "api_key": KEY}),
        )
        .await;
    let body = probe(&host, "auth-apikey-query", &id, "/echo?page=2").await;
    let message = failed(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("cannot serve page=2&key=********"),
        "{message}"
    );
    let text = body.to_string();
    let encoded: String = url::form_urlencoded::byte_serialize(KEY.as_bytes()).collect();
    assert!(
        !text.contains(KEY) && !text.contains(&encoded),
        "the key leaked: {text}"
    );

    // Basic: the base64 pair and, decoded, the password.
    const PASSWORD: &str = "correct horse: battery";
    let id = host
        .connect(
            "auth-basic",
            json!({"base_url": fake.origin, "username": "ops", "password": PASSWORD}),
        )
        .await;
    let body = probe(&host, "auth-basic", &id, "/echo").await;
    let message = failed(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(r#""authorization":"Basic ********""#)
            && message.contains(r#""decoded":"ops:********""#),
        "{message}"
    );
    assert!(!body.to_string().contains(PASSWORD), "{body}");
    host.stop().await;
}
