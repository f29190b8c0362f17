//! The console as HTML, without a browser: sign-in and sessions, the
//! security headers and assets, roles (a viewer changes nothing, in the
//! console and in the API), CSRF, tenant isolation page by page, secrets
//! that never reach a page, and bad input shown at its field with nothing
//! stored. The browser walk is in `console_browser.rs`.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::support::{TOKEN, TestHost, config};

/// A signed-in browser, as far as HTTP goes: its session cookie and the
/// CSRF token its pages carry.
pub struct Page {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

/// A client that does not follow redirects (the tests look at them).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The value of `name="_csrf" value="..."` in a page.
fn hidden_csrf(html: &str) -> String {
    let at = html
        .find("name=\"_csrf\" value=\"")
        .expect("a form with a CSRF field");
    let rest = &html[at + "name=\"_csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Signs in with a form: `fields` are the credentials. Returns the answer
/// to the sign-in post and, on success, the page.
pub async fn sign_in(base: &str, fields: &[(&str, &str)]) -> (StatusCode, String, Option<Page>) {
    let http = client();
    let form = http.get(format!("{base}/sign-in")).send().await.unwrap();
    let guard = set_cookie(&form, "sy_signin").expect("the sign-in form sets its cookie");
    let guard = guard.split(';').next().unwrap().to_string();
    let html = form.text().await.unwrap();
    let csrf = hidden_csrf(&html);
    let mut body: Vec<(&str, &str)> = vec![("_csrf", &csrf), ("next", "/")];
    body.extend_from_slice(fields);
    let response = http
        .post(format!("{base}/sign-in"))
        .header(header::COOKIE, &guard)
        .form(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let Some(session) = set_cookie(&response, "sy_session") else {
        return (status, response.text().await.unwrap(), None);
    };
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    let cookie = session.split(';').next().unwrap().to_string();
    let mut page = Page {
        http,
        base: base.to_string(),
        cookie,
        csrf: String::new(),
    };
    let (_, home) = page.get("/").await;
    page.csrf = between(&home, "data-csrf=\"", "\"").expect("the layout carries the CSRF token");
    (status, String::new(), Some(page))
}

pub async fn sign_in_token(base: &str, token: &str) -> Page {
    let (status, body, page) = sign_in(base, &[("token", token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    page.unwrap()
}

/// The text between two markers, HTML entities of `/`, `'`, `"` and `&`
/// decoded.
pub fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let at = text.find(start)? + start.len();
    let rest = &text[at..];
    Some(
        rest[..rest.find(end)?]
            .replace("&#x2f;", "/")
            .replace("&#x27;", "'")
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

impl Page {
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// Posts a form with the session's CSRF token; returns the status, the
    /// redirect target if any, and the body.
    pub async fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let mut body: Vec<(&str, &str)> = vec![("_csrf", &self.csrf)];
        body.extend_from_slice(fields);
        self.post_raw(path, &body).await
    }

    /// Posts exactly these fields (no CSRF token added).
    pub async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (r.status(), location, r.text().await.unwrap())
    }

    /// Calls the API with the session cookie (and the CSRF header when
    /// `csrf`).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie);
        if csrf {
            request = request.header("x-csrf-token", &self.csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Creates a tenant through the API; returns its id and token.
pub async fn tenant(host: &TestHost, name: &str) -> (String, String) {
    let (status, body) = host
        .call(Method::POST, "/v1/tenants", Some(json!({"name": name})))
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["tenant"]["id"].as_str().unwrap().to_string(),
        body["token"].as_str().unwrap().to_string(),
    )
}

/// An owner invites `email` as `role` in the console; the invitee accepts
/// with `password`.
pub async fn invite(owner: &Page, email: &str, role: &str, password: &str) {
    let (status, _, html) = owner
        .post("/users", &[("email", email), ("role", role)])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{html}");
    let link = between(&html, "<code id=\"invite-link\">", "</code>").expect("the invitation link");
    let http = client();
    assert!(
        link.starts_with(&format!("{}/invite/inv_", owner.base)),
        "{link}"
    );
    let form = http.get(&link).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let guard = set_cookie(&form, "sy_signin").unwrap();
    let guard = guard.split(';').next().unwrap().to_string();
    let csrf = hidden_csrf(&form.text().await.unwrap());
    let r = http
        .post(&link)
        .header(header::COOKIE, guard)
        .form(&[
            ("_csrf", csrf.as_str()),
            ("password", password),
            ("confirm", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
}

async fn host() -> (TestHost, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    for path in [artifacts::EXAMPLE, artifacts::SHOPIFY] {
        let (status, body) = host.upload_file(path).await;
        assert_eq!(status, 201, "{body}");
    }
    (host, dir)
}

#[tokio::test]
async fn pages_need_a_session_and_allow_nothing_inline_or_foreign() {
    let (host, _dir) = host().await;
    let http = client();
    let r = http
        .get(format!("{}/runs?status=failed", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[header::LOCATION],
        "/sign-in?next=%2Fruns%3Fstatus%3Dfailed"
    );
    let r = http
        .get(format!("{}/sign-in", host.url))
        .send()
        .await
        .unwrap();
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    let html = r.text().await.unwrap();
    // No inline script or style anywhere, nothing from another origin.
    let page = sign_in_token(&host.url, TOKEN).await;
    for path in [
        "/",
        "/connectors",
        "/connections",
        "/flows",
        "/runs",
        "/webhooks",
        "/tenants",
        "/audit",
        "/flows/new",
    ] {
        let (status, body) = page.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        for html in [&html, &body] {
            assert!(
                !html.contains("<script>") && !html.contains("style=\""),
                "{path}"
            );
            assert!(
                !html.contains("src=\"http") && !html.contains("href=\"http"),
                "{path}"
            );
            assert!(
                !html.contains(" on") || !html.contains(" onclick="),
                "{path}"
            );
        }
    }
    // Assets: a hashed name cached for a year, gzip, and ETag revalidation.
    let (_, body) = page.get("/").await;
    let css = between(&body, "<link rel=\"stylesheet\" href=\"", "\"").unwrap();
    assert!(
        css.starts_with("/assets/console.") && css.ends_with(".css"),
        "{css}"
    );
    let r = http
        .get(format!("{}{css}", host.url))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(
        r.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = r.headers()[header::ETAG].clone();
    let r = http
        .get(format!("{}/assets/htmx.js", host.url))
        .header(header::IF_NONE_MATCH, "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("htmx"));
    let r = http
        .get(format!("{}{css}", host.url))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    host.stop().await;
}

#[tokio::test]
async fn sign_in_slows_after_failures_sign_out_ends_the_session_and_https_makes_it_secure() {
    let (host, _dir) = host().await;
    for _ in 0..3 {
        let (status, body, page) = sign_in(&host.url, &[("token", "syt_wrong")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("are not right"), "{body}");
        assert!(page.is_none());
    }
    // The fourth in a row waits, even with the right token.
    let (status, body, _) = sign_in(&host.url, &[("token", TOKEN)]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("try again in"), "{body}");
    // A user's password is throttled by email, independently.
    let (status, body, _) = sign_in(
        &host.url,
        &[
            ("email", "nobody@shop.example"),
            ("password", "wrong password"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (status, _, page) = sign_in(&host.url, &[("token", TOKEN)]).await;
        if let Some(page) = page {
            break page;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the wait never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, html) = page.get("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("operator"), "{html}");
    let (status, location, _) = page.post("/sign-out", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/sign-in?notice=signed-out"));
    let (status, _) = page.get("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session is gone");
    let (status, _) = page.api(Method::GET, "/v1/connections", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Behind a proxy that ends https the session cookie is Secure; on
    // plain http it is not (a browser would drop it).
    for https in [false, true] {
        let http = client();
        let with_proto = |r: reqwest::RequestBuilder| {
            if https {
                r.header("x-forwarded-proto", "https")
            } else {
                r
            }
        };
        let form = with_proto(http.get(format!("{}/sign-in", host.url)))
            .send()
            .await
            .unwrap();
        let guard = set_cookie(&form, "sy_signin").unwrap();
        let guard = guard.split(';').next().unwrap().to_string();
        let csrf = hidden_csrf(&form.text().await.unwrap());
        let r = with_proto(http.post(format!("{}/sign-in", host.url)))
            .header(header::COOKIE, guard)
            .form(&[("_csrf", csrf.as_str()), ("next", "/"), ("token", TOKEN)])
            .send()
            .await
            .unwrap();
        let session = set_cookie(&r, "sy_session").expect("signed in");
        assert_eq!(session.contains("; Secure"), https, "{session}");
    }
    host.stop().await;
}

#[tokio::test]
async fn an_expired_session_sends_the_browser_to_sign_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.session_secs = 1;
    let host = TestHost::start(cfg).await;
    let page = sign_in_token(&host.url, TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let location = loop {
        let r = page
            .http
            .get(format!("{}/flows", host.url))
            .header(header::COOKIE, &page.cookie)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SEE_OTHER {
            break r.headers()[header::LOCATION].to_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(location, "/sign-in?next=%2Fflows&expired=1");
    let r = client()
        .get(format!("{}{location}", host.url))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Your session has expired"));
    // An htmx request is told where to go instead.
    let r = page
        .http
        .post(format!("{}/runs/bulk", host.url))
        .header(header::COOKIE, &page.cookie)
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["hx-redirect"]
            .to_str()
            .unwrap()
            .contains("expired=1")
    );
    let (status, body) = page.api(Method::GET, "/v1/flows", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_viewer_changes_nothing_in_the_console_or_the_api() {
    let (host, _dir) = host().await;
    let (_, token) = tenant(&host, "Acme Retail").await;
    let owner = sign_in_token(&host.url, &token).await;
    invite(&owner, "vera@acme.example", "viewer", "viewer password 1").await;
    invite(&owner, "ed@acme.example", "editor", "editor password 1").await;
    let (status, body, viewer) = sign_in(
        &host.url,
        &[
            ("email", "Vera@Acme.example"),
            ("password", "viewer password 1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let viewer = viewer.unwrap();
    let (_, _, editor) = sign_in(
        &host.url,
        &[
            ("email", "ed@acme.example"),
            ("password", "editor password 1"),
        ],
    )
    .await;
    let editor = editor.unwrap();

    // The editor creates a connection; the viewer sees it, without buttons.
    let (status, location, body) = editor
        .post(
            "/connections/new",
            &[
                ("plugin", "example"),
                ("name", "Items"),
                ("props.base_url", "https://api.acme.test"),
                ("props.api_key", "k-viewer-test"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let id = created_id(location.unwrap());
    let (status, html) = viewer.get("/connections").await;
    assert_eq!(status, 200);
    assert!(html.contains("Items"), "{html}");
    assert!(
        !html.contains("New connection"),
        "no create button for a viewer"
    );
    let (_, html) = viewer.get(&format!("/connections/{id}")).await;
    assert!(
        !html.contains("Save changes") && !html.contains("Delete</button>"),
        "{html}"
    );
    let (_, html) = viewer.get("/flows").await;
    assert!(!html.contains("New flow"));
    assert!(!html.contains("/users"), "a viewer has no users page");

    // Crafted requests are refused, and nothing changes.
    let (status, _, html) = viewer.post(&format!("/connections/{id}/delete"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    let (status, _, _) = viewer
        .post(
            "/connections/new",
            &[
                ("plugin", "example"),
                ("props.base_url", "https://x.test"),
                ("props.api_key", "k"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = viewer
        .post("/users", &[("email", "x@acme.example"), ("role", "owner")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = viewer
        .api(Method::POST, "/v1/connections", Some(json!({"plugin": "example", "properties": {"base_url": "https://x.test", "api_key": "k"}})), true)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    for path in ["/v1/flows/flow_any/resume", "/v1/flows/flow_any/activate"] {
        let (status, _) = viewer.api(Method::POST, path, None, true).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _) = viewer
        .api(Method::DELETE, &format!("/v1/connections/{id}"), None, true)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = viewer
        .api(Method::POST, "/v1/flows", Some(json!({"name": "x"})), true)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = viewer
        .api(Method::GET, "/v1/connections", None, false)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["connections"].as_array().unwrap().len(), 1);
    let (_, who) = viewer.api(Method::GET, "/v1/whoami", None, false).await;
    assert_eq!(
        (&who["member_role"], &who["user"]),
        (&json!("viewer"), &json!("vera@acme.example"))
    );
    // An editor may not manage users; the owner may.
    let (status, _) = editor.api(Method::GET, "/v1/users", None, false).await;
    assert_eq!(status, 200);
    let (status, _) = editor
        .api(
            Method::POST,
            "/v1/users/invitations",
            Some(json!({"email": "z@acme.example", "role": "owner"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The owner promotes the viewer; the change applies at once.
    let (_, users) = owner.api(Method::GET, "/v1/users", None, false).await;
    let vera = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "vera@acme.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = owner
        .post(&format!("/users/{vera}/role"), &[("role", "editor")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = viewer.get("/connections").await;
    assert!(html.contains("New connection"));

    // Who did what is in the audit log.
    let (_, html) = owner.get("/audit").await;
    assert!(
        html.contains("ed@acme.example") && html.contains("connection.create"),
        "{html}"
    );
    assert!(html.contains("user.role"), "{html}");
    let (_, log) = owner.api(Method::GET, "/v1/audit", None, false).await;
    assert_eq!(log["entries"][0]["action"], "user.role");
    host.stop().await;
}

#[tokio::test]
async fn a_form_without_the_session_token_changes_nothing() {
    let (host, _dir) = host().await;
    let page = sign_in_token(&host.url, TOKEN).await;
    let fields = [
        ("plugin", "example"),
        ("props.base_url", "https://api.acme.test"),
        ("props.api_key", "k-1"),
    ];
    for csrf in [None, Some("forged-token"), Some("")] {
        let mut body: Vec<(&str, &str)> = fields.to_vec();
        if let Some(t) = csrf {
            body.push(("_csrf", t));
        }
        let (status, _, html) = page.post_raw("/connections/new", &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{csrf:?}");
        assert!(html.contains("Nothing was changed"), "{html}");
    }
    // The API with only the cookie is refused too.
    let (status, body) = page
        .api(Method::POST, "/v1/connections", Some(json!({"plugin": "example", "properties": {"base_url": "https://x.test", "api_key": "k"}})), false)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "csrf");
    let (_, list) = host.get("/v1/connections").await;
    assert_eq!(list["connections"], json!([]));
    // With the token it works.
    let (status, _, body) = page.post("/connections/new", &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    host.stop().await;
}

/// The connection id in the address a created connection's form leads
/// to (`/connections/{id}?notice=...`).
fn created_id(location: String) -> String {
    location
        .trim_start_matches("/connections/")
        .split('?')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn warm_instances_are_turned_on_and_off_on_the_connection_form() {
    let (host, _dir) = host().await;
    let page = sign_in_token(&host.url, TOKEN).await;
    let (_, html) = page.get("/connections/new?plugin=example").await;
    assert!(
        html.contains("Keep instances warm") && !html.contains(r#"value="on" checked"#),
        "{html}"
    );
    let (status, location, body) = page
        .post(
            "/connections/new",
            &[
                ("plugin", "example"),
                ("props.base_url", "https://api.acme.test"),
                ("props.api_key", "k-warm"),
                ("warm_instances", "on"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let id = created_id(location.unwrap());
    let (_, record) = host.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(record["warm_instances"], json!(true), "{record}");
    let (_, html) = page.get(&format!("/connections/{id}")).await;
    assert!(html.contains(r#"value="on" checked"#), "{html}");

    // Saved without the box ticked: off, and the key is kept as it was.
    let (status, _, body) = page
        .post(
            &format!("/connections/{id}"),
            &[
                ("plugin", "example"),
                ("props.base_url", "https://api.acme.test"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (_, record) = host.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(record["warm_instances"], json!(false), "{record}");
    assert_eq!(record["secrets"]["api_key"], json!("********"), "{record}");
    let (_, html) = page.get("/audit").await;
    assert!(html.contains("warm_instances=false"), "{html}");
    host.stop().await;
}

#[tokio::test]
async fn another_tenants_ids_lead_nowhere_page_by_page() {
    let (host, _dir) = host().await;
    let (_, token_a) = tenant(&host, "Tenant A").await;
    let (_, token_b) = tenant(&host, "Tenant B").await;
    let a = sign_in_token(&host.url, &token_a).await;
    let b = sign_in_token(&host.url, &token_b).await;
    let (_, location, body) = a
        .post(
            "/connections/new",
            &[
                ("plugin", "example"),
                ("name", "A's secret shop"),
                ("props.base_url", "https://a.test"),
                ("props.api_key", "k-a"),
            ],
        )
        .await;
    let conn = created_id(location.unwrap_or_else(|| panic!("{body}")));
    let flow = json!({
        "name": "A's flow", "trigger": {"schedule": "0 0 1 1 *"},
        "steps": [{"key": "s", "plugin": "example@^0.1", "action": "echo", "connection": conn, "input": {"x": 1}}],
    });
    let (status, created) = a.api(Method::POST, "/v1/flows", Some(flow), true).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let flow_id = created["id"].as_str().unwrap().to_string();
    let (status, run) = a
        .api(
            Method::POST,
            &format!("/v1/flows/{flow_id}/run?wait_ms=10000"),
            Some(json!({"order": 1})),
            true,
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    let (status, _, _) = a.post("/flows/drafts", &[("flow", &flow_id)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, drafts) = a.get("/flows").await;
    let draft = between(&drafts, "href=\"/flows/drafts/", "\"").unwrap();

    for path in [
        format!("/connections/{conn}"),
        format!("/flows/{flow_id}"),
        format!("/runs/{run_id}"),
        format!("/flows/drafts/{draft}"),
        format!("/flows/drafts/{draft}/yaml"),
    ] {
        let (status, html) = b.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {html}");
        assert!(
            !html.contains("A&#x27;s") && !html.contains("A's"),
            "{path}"
        );
        let (status, _) = a.get(&path).await;
        assert_eq!(status, 200, "{path} is A's own");
    }
    for path in [
        format!("/connections/{conn}/delete"),
        format!("/connections/{conn}"),
        format!("/flows/{flow_id}/delete"),
        format!("/flows/{flow_id}/activate"),
        format!("/runs/{run_id}/replay"),
        format!("/flows/drafts/{draft}/save"),
        format!("/flows/drafts/{draft}/publish"),
    ] {
        let (status, _, _) = b.post(&path, &[("name", "B was here")]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/",
        "/connections",
        "/flows",
        "/runs",
        "/webhooks",
        "/audit",
        "/connectors",
        "/connectors/example/0.1.0",
    ] {
        let (_, html) = b.get(path).await;
        assert!(
            !html.contains("secret shop")
                && !html.contains("A&#x27;s flow")
                && !html.contains(&flow_id),
            "{path}"
        );
    }
    // A sees its own flow among the connector's users, by name.
    let (_, html) = a.get("/connectors/example/0.1.0").await;
    assert!(
        html.contains(&format!("href=\"/flows/{flow_id}\">A&#x27;s flow</a>")),
        "{html}"
    );
    // A's things are unchanged.
    let (_, c) = a
        .api(Method::GET, &format!("/v1/connections/{conn}"), None, false)
        .await;
    assert_eq!(c["name"], "A's secret shop");
    let (_, f) = a
        .api(Method::GET, &format!("/v1/flows/{flow_id}"), None, false)
        .await;
    assert_eq!(f["spec"]["name"], "A's flow");
    host.stop().await;
}

#[tokio::test]
async fn a_secret_typed_into_a_form_is_on_no_page_afterwards() {
    let (host, _dir) = host().await;
    let page = sign_in_token(&host.url, TOKEN).await;
    const SECRET: &str = "sk_live_console_9f8e7d6c5b4a";
    // Refused (another field is wrong): the secret is not echoed back.
    let (status, _, html) = page
        .post(
            "/connections/new",
            &[
                ("plugin", "shopify"),
                ("name", "Shop"),
                ("props.shop", "Not A Shop!"),
                ("props.api_key", SECRET),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(!html.contains(SECRET), "the refused form echoes the secret");
    assert!(
        html.contains("value=\"Not A Shop!\""),
        "the plain value stays: {html}"
    );
    // Stored.
    let (status, location, html) = page
        .post(
            "/connections/new",
            &[
                ("plugin", "shopify"),
                ("name", "Shop"),
                ("props.shop", "acme"),
                ("props.api_key", SECRET),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let path = location.unwrap();
    let id = created_id(path.clone());
    // Saving without retyping it keeps it.
    let (status, _, html) = page
        .post(
            &format!("/connections/{id}"),
            &[
                ("name", "Main shop"),
                ("props.shop", "acme"),
                ("props.api_key", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (_, view) = host.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(view["secrets"]["api_key"], "********", "{view}");
    assert_eq!(view["name"], "Main shop");
    for path in [
        "/".to_string(),
        "/connections".into(),
        format!("/connections/{id}"),
        "/audit".into(),
        "/connectors".into(),
        "/connectors/shopify/0.1.1".into(),
        "/flows".into(),
        "/runs".into(),
    ] {
        let (status, html) = page.get(&path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!html.contains(SECRET), "{path} shows the secret");
    }
    let (_, html) = page.get(&format!("/connections/{id}")).await;
    assert!(html.contains("stored — leave empty to keep"), "{html}");
    host.stop().await;
}

#[tokio::test]
async fn a_bad_value_is_shown_at_its_field_and_nothing_is_stored() {
    let (host, _dir) = host().await;
    let page = sign_in_token(&host.url, TOKEN).await;
    let (status, _, html) = page
        .post(
            "/connections/new",
            &[
                ("plugin", "shopify"),
                ("props.shop", "Not A Shop!"),
                ("props.api_key", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let shop = between(&html, "id=\"error-props-shop\">", "</p>").unwrap_or_default();
    assert!(shop.contains("does not match"), "{html}");
    assert!(
        html.contains("id=\"error-props-api_key\""),
        "the missing secret is marked: {html}"
    );
    let (_, list) = host.get("/v1/connections").await;
    assert_eq!(list["connections"], json!([]));
    // An unknown plugin, a flow draft with a wrong type, an unknown version.
    let (status, _, html) = page.post("/connections/new", &[("plugin", "nope")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");
    let (status, html) = page.get("/connectors/example/9.9.9").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");
    let (status, html) = page.get("/connectors/example/not-a-version").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("is not a version"), "{html}");
    let (status, html) = page.get("/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("is not a date and time"), "{html}");
    // A YAML that is not a flow is refused at the text, and the draft keeps its old value.
    let (_, location, _) = page.post("/flows/drafts", &[("name", "Draft one")]).await;
    let draft = location.unwrap();
    let (status, _, html) = page
        .post(&format!("{draft}/yaml"), &[("yaml", "- just\n- a list")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("yaml-error"), "{html}");
    let (_, html) = page.get(&format!("{draft}/yaml")).await;
    assert!(html.contains("name: Draft one"), "{html}");
    // An oversized upload is refused with the limit, and nothing is stored.
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wasm\"\r\nContent-Type: application/wasm\r\n\r\n".to_vec();
    body.extend(vec![0u8; 65 << 20]);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let r = page
        .http
        .post(format!(
            "{}/connectors/upload?_csrf={}",
            host.url, page.csrf
        ))
        .header(header::COOKIE, &page.cookie)
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("larger than this host accepts")
    );
    let (_, plugins) = host.get("/v1/plugins").await;
    assert_eq!(
        plugins["plugins"].as_array().unwrap().len(),
        2,
        "nothing new"
    );
    host.stop().await;
}

#[tokio::test]
async fn the_flow_editor_publishes_and_places_each_problem() {
    let (host, _dir) = host().await;
    let page = sign_in_token(&host.url, TOKEN).await;
    let conn = host
        .connect(
            "example",
            json!({"base_url": "https://api.acme.test", "api_key": "k-1"}),
        )
        .await;
    let (_, location, _) = page
        .post("/flows/drafts", &[("name", "Echo on schedule")])
        .await;
    let draft = location.unwrap();
    // The YAML view round-trips keys the form does not edit.
    let yaml = "name: Echo on schedule\nlane: fast\ntrigger:\n  schedule: 0 0 1 1 *\nsteps:\n- key: s\n  if: trigger.x == 1\n  plugin: example@^0.1\n  action: echo\n  input:\n    n: 5\n  retry:\n    max_attempts: 3\n";
    let (status, _, html) = page.post(&format!("{draft}/yaml"), &[("yaml", yaml)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (status, html) = page.get(&draft).await;
    assert_eq!(status, 200);
    assert!(html.contains("Also set in YAML"), "{html}");
    // Saving the form leaves `if` and `retry` as they were.
    let (status, _, _) = page
        .post(
            &format!("{draft}/save"),
            &[
                ("name", "Echo on schedule"),
                ("step.0.key", "s"),
                ("step.0.plugin", "example"),
                ("step.0.action", "echo"),
                ("step.0.connection", ""),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let (_, html) = page.get(&format!("{draft}/yaml")).await;
    assert!(
        html.contains("lane: fast")
            && html.contains("max_attempts: 3")
            && html.contains("if: trigger.x == 1"),
        "{html}"
    );
    // A step that refers to a later step is refused at its field.
    let (status, _, html) = page
        .post(
            &format!("{draft}/publish"),
            &[
                ("name", "Echo on schedule"),
                ("step.0.key", "s"),
                ("step.0.plugin", "example"),
                ("step.0.action", "echo"),
                ("step.0.connection", &conn),
                ("step.0.input_json", "{\"n\": \"{{ steps.later.x }}\"}"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("Not published"), "{html}");
    assert!(html.contains("does not run before this point"), "{html}");
    let (_, flows) = host.get("/v1/flows").await;
    assert_eq!(flows["flows"], json!([]), "nothing was published");
    let (status, location, html) = page
        .post(
            &format!("{draft}/publish"),
            &[
                ("name", "Echo on schedule"),
                ("step.0.key", "s"),
                ("step.0.plugin", "example"),
                ("step.0.action", "echo"),
                ("step.0.connection", &conn),
                ("step.0.input_json", "{\"n\": 5}"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let flow = location.unwrap();
    assert!(flow.starts_with("/flows/flow_"), "{flow}");
    let (_, html) = page.get(&flow).await;
    assert!(html.contains("Published."), "{html}");
    let (_, record) = host
        .get(
            &flow
                .replace("/flows/", "/v1/flows/")
                .replace("?notice=published", ""),
        )
        .await;
    assert_eq!(
        record["spec"]["steps"][0]["retry"]["max_attempts"], 3,
        "{record}"
    );
    assert_eq!(record["spec"]["lane"], "fast", "{record}");
    assert_eq!(
        record["spec"]["steps"][0]["if"], "trigger.x == 1",
        "{record}"
    );
    // Edit the published flow: a draft of it, a second version, its diff.
    let id = record["id"].as_str().unwrap().to_string();
    let (status, location, _) = page.post("/flows/drafts", &[("flow", &id)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let draft = location.unwrap();
    let (_, html) = page.get(&format!("/flows/{id}")).await;
    assert!(
        html.contains("Continue editing"),
        "the flow page leads to its draft"
    );
    let (_, yaml) = page.get(&format!("{draft}/yaml")).await;
    let yaml = between(&yaml, "spellcheck=\"false\">", "</textarea>").unwrap();
    let (status, _, _) = page
        .post(
            &format!("{draft}/yaml"),
            &[("yaml", &yaml.replace("n: 5", "n: 6"))],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, location, html) = page.post(&format!("{draft}/publish"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert!(location.unwrap().starts_with(&format!("/flows/{id}")));
    let (_, html) = page.get(&format!("/flows/{id}?diff=2")).await;
    assert!(
        html.contains("class=\"del\">-     n: 5</span><span class=\"add\">+     n: 6</span>"),
        "{html}"
    );
    let (status, location, _) = page.post(&format!("/flows/{id}/upgrade"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.unwrap(), format!("/flows/{id}?notice=upgraded"));
    let (_, versions) = host.get(&format!("/v1/flows/{id}/versions")).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 3);
    // Activated and deactivated from its page.
    for (action, active) in [("activate", true), ("deactivate", false)] {
        let (status, _, html) = page.post(&format!("/flows/{id}/{action}"), &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
        let (_, flow) = host.get(&format!("/v1/flows/{id}")).await;
        assert_eq!(flow["active"], active, "{flow}");
    }
    // Paused for looping (as the runs do when it keeps starting for one
    // record): shown with its reason in the list and on its page, resumed
    // from there.
    let reason = "started 50 times for order 7 within a minute";
    assert!(
        host.app
            .flows
            .set_paused("default", &id, Some(reason.into()))
            .unwrap()
    );
    let (_, html) = page.get("/flows").await;
    assert!(
        html.contains(reason) && html.contains("status-paused"),
        "{html}"
    );
    let (_, html) = page.get(&format!("/flows/{id}")).await;
    assert!(
        html.contains("id=\"flow-paused\"")
            && html.contains(reason)
            && html.contains("id=\"resume-flow\""),
        "{html}"
    );
    let (status, location, _) = page.post(&format!("/flows/{id}/resume"), &[]).await;
    assert_eq!(
        (status, location),
        (
            StatusCode::SEE_OTHER,
            Some(format!("/flows/{id}?notice=flow-resumed"))
        )
    );
    let (_, flow) = host.get(&format!("/v1/flows/{id}")).await;
    assert!(flow["paused"].is_null(), "{flow}");
    let (_, html) = page.get(&format!("/flows/{id}")).await;
    assert!(!html.contains("id=\"flow-paused\""), "{html}");
    // Deleted from its page.
    let (status, location, _) = page.post(&format!("/flows/{id}/delete"), &[]).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/flows?notice=deleted"))
    );
    let (status, _) = host.get(&format!("/v1/flows/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop().await;
}

#[tokio::test]
async fn connect_goes_through_the_providers_consent_and_back_to_the_page() {
    use crate::auth::{CLIENT_ID, CLIENT_SECRET, consent, host_with, provider};
    let (fake, _provider) = provider(3600).await;
    let (_dir, host) = host_with(&[artifacts::FIXTURE_AUTH_OAUTH_CODE]).await;
    let page = sign_in_token(&host.url, TOKEN).await;
    let (status, location, body) = page
        .post(
            "/connections/new",
            &[
                ("plugin", "auth-oauth-code"),
                ("name", "Shop with OAuth"),
                ("props.base_url", &fake.origin),
                ("props.client_id", CLIENT_ID),
                ("props.client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let path = location.unwrap();
    let path = path.split('?').next().unwrap().to_string();
    let (_, html) = page.get(&path).await;
    assert!(html.contains("id=\"oauth-connect\""), "{html}");
    // Connect: to the provider, its consent, back to the host's callback...
    let (status, authorize, _) = page.post(&format!("{path}/connect"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let authorize = authorize.unwrap();
    assert!(
        authorize.starts_with(&format!("{}/oauth/authorize?", fake.origin)),
        "{authorize}"
    );
    let callback = consent(&client(), &authorize).await;
    let r = client().get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    // ...which sends the browser on to the connection's page.
    let back = format!("{path}?notice=connected");
    assert!(
        html.contains(&format!("content=\"0;url={back}\"")),
        "{html}"
    );
    let (_, html) = page.get(&back).await;
    assert!(html.contains("The connection is authorized."), "{html}");
    let id = path.trim_start_matches("/connections/");
    let (_, view) = host.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(view["authorized"], json!(true), "{view}");
    host.stop().await;
}

#[tokio::test]
async fn runs_are_found_by_their_event_and_replayed_or_cancelled_in_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(crate::support::sandbox_config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let page = sign_in_token(&host.url, TOKEN).await;
    // A connection to an allowed address where nothing listens: every
    // call fails, and may be tried again.
    let conn = host
        .connect(
            "example",
            json!({"base_url": "http://127.0.0.2:9", "api_key": "k-1"}),
        )
        .await;
    let flow = |attempts: u32, delay_ms: u64| {
        json!({
            "name": format!("Items, {attempts} attempts"),
            "trigger": {"schedule": "0 0 1 1 *"},
            "steps": [{"key": "create", "plugin": "example@^0.1", "action": "create-item",
                       "connection": conn, "input": {"name": "{{ trigger.order }}"},
                       "retry": {"max_attempts": attempts, "initial_delay_ms": delay_ms}}],
        })
    };
    let (_, once) = host
        .call(Method::POST, "/v1/flows", Some(flow(1, 10)))
        .await;
    let (_, later) = host
        .call(Method::POST, "/v1/flows", Some(flow(5, 3_600_000)))
        .await;
    let run = async |flow: &Value, order: &str| {
        let id = flow["id"].as_str().unwrap();
        let (_, body) = host
            .call(
                Method::POST,
                &format!("/v1/flows/{id}/run?wait_ms=0"),
                Some(json!({"order": order})),
            )
            .await;
        body["id"].as_str().unwrap().to_string()
    };
    // Testing the connection fails (nothing listens), and the page says so.
    let (status, _, html) = page.post(&format!("/connections/{conn}/test"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("status-failed\">failed</span>"), "{html}");
    let (_, html) = page.get("/").await;
    assert!(
        html.contains("id=\"chart-empty\""),
        "no runs, no chart: {html}"
    );
    let failed = run(&once, "ORD-1001").await;
    let other = run(&once, "ORD-2002").await;
    let waiting = run(&later, "ORD-3003").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, a) = host.get(&format!("/v1/runs/{failed}")).await;
        let (_, b) = host.get(&format!("/v1/runs/{other}")).await;
        let (_, c) = host.get(&format!("/v1/runs/{waiting}")).await;
        if a["status"] == "failed" && b["status"] == "failed" && c["status"] == "retrying" {
            break;
        }
        assert!(Instant::now() < deadline, "{a} {b} {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The overview counts them, charts them and lists the failing flow first.
    let (_, html) = page.get("/").await;
    assert!(
        html.contains("id=\"runs-hour\">3<")
            && html.contains("id=\"dead-letters\">2<")
            && html.contains("class=\"bar-failed\"")
            && html.contains("busiest minute: "),
        "{html}"
    );
    let first = html
        .find("Items, 1 attempts")
        .expect("the failing flow is listed");
    let second = html
        .find("Items, 5 attempts")
        .expect("the other flow is listed");
    assert!(first < second, "failing flows first");
    // Text in the event finds one run.
    let (status, html) = page.get("/runs?q=ORD-1001").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&failed[..20]) && !html.contains(&other[..20]),
        "{html}"
    );
    let (_, html) = page.get("/runs?status=failed").await;
    assert!(
        html.contains(&failed[..20])
            && html.contains(&other[..20])
            && !html.contains(&waiting[..20])
    );
    // The run waiting for its next try says when, and its page refreshes
    // itself while it is open.
    let (_, html) = page.get(&format!("/runs/{waiting}")).await;
    assert!(
        html.contains("Next try at") && html.contains("hx-trigger=\"every 2s\""),
        "{html}"
    );
    // The flow and time-range filters; a time that is not one is shown at
    // its field.
    let later_id = later["id"].as_str().unwrap();
    let (_, html) = page.get(&format!("/runs?flow={later_id}")).await;
    assert!(html.contains(&waiting[..20]) && !html.contains(&failed[..20]));
    let (_, html) = page.get("/runs?until=2000-01-01T00:00").await;
    assert!(!html.contains(&failed[..20]) && !html.contains(&waiting[..20]));
    let (_, html) = page.get("/runs?since=2000-01-01T00:00").await;
    assert!(html.contains(&failed[..20]) && html.contains(&waiting[..20]));
    let (status, html) = page.get("/runs?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(html.contains("is not a date and time"), "{html}");
    // Bulk replay of the failed runs, bulk cancel of the waiting one.
    let (status, location, _) = page
        .post(
            "/runs/bulk",
            &[("action", "replay"), ("run", &failed), ("run", &other)],
        )
        .await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/runs?notice=replayed"))
    );
    for id in [&failed, &other] {
        let (_, r) = host.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(r["replays"], 1, "{r}");
    }
    let (status, _, _) = page
        .post("/runs/bulk", &[("action", "cancel"), ("run", &waiting)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, r) = host.get(&format!("/v1/runs/{waiting}")).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    let (status, _, html) = page.post("/runs/bulk", &[("action", "replay")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("Nothing selected"));
    // The run page of a waiting run refreshes itself; a finished one does not.
    let (_, html) = page.get(&format!("/runs/{waiting}")).await;
    assert!(
        !html.contains("hx-trigger=\"every 2s\""),
        "a cancelled run is finished"
    );
    let (_, audit) = host.get("/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        &actions[..3],
        ["run.cancel", "run.replay", "run.replay"],
        "{audit}"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_paused_connection_is_shown_with_its_reason_and_resumed() {
    let (host, _dir) = host().await;
    let page = sign_in_token(&host.url, TOKEN).await;
    let conn = host
        .connect(
            "example",
            json!({"base_url": "https://api.acme.test", "api_key": "k-1"}),
        )
        .await;
    assert!(
        host.app
            .connections
            .pause("default", &conn, "the API key was refused (401)")
            .unwrap()
    );
    let (_, html) = page.get("/").await;
    assert!(
        html.contains("the API key was refused (401)"),
        "the overview lists it"
    );
    let (_, html) = page.get(&format!("/connections/{conn}")).await;
    assert!(
        html.contains("Paused: the API key was refused (401)") && html.contains("id=\"resume\""),
        "{html}"
    );
    let (status, location, _) = page.post(&format!("/connections/{conn}/resume"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page.get(&location.unwrap()).await;
    assert!(
        html.contains("The connection is active again") && !html.contains("id=\"resume\""),
        "{html}"
    );
    let (_, view) = host.get(&format!("/v1/connections/{conn}")).await;
    assert_eq!(view["status"]["state"], "active", "{view}");
    host.stop().await;
}

/// A `.wasm` file as a browser's file input sends it.
fn multipart(bytes: &[u8]) -> Vec<u8> {
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"plugin.wasm\"\r\nContent-Type: application/wasm\r\n\r\n".to_vec();
    body.extend_from_slice(bytes);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    body
}

#[tokio::test]
async fn the_operator_manages_connectors_in_the_console() {
    let (host, _dir) = host().await;
    let operator = sign_in_token(&host.url, TOKEN).await;
    let upload = async |page: &Page| {
        page.http
            .post(format!(
                "{}/connectors/upload?_csrf={}",
                page.base, page.csrf
            ))
            .header(header::COOKIE, &page.cookie)
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
            .body(multipart(&std::fs::read(artifacts::WAREHOUSE).unwrap()))
            .send()
            .await
            .unwrap()
    };
    // A tenant may look, not upload.
    let (_, token) = tenant(&host, "Acme").await;
    let merchant = sign_in_token(&host.url, &token).await;
    assert_eq!(upload(&merchant).await.status(), StatusCode::FORBIDDEN);
    let (_, html) = merchant.get("/connectors").await;
    assert!(!html.contains("upload-form"));
    // The operator uploads; the version's page lists its triggers and actions.
    let r = upload(&operator).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    assert!(location.starts_with("/connectors/warehouse/"), "{location}");
    let (_, html) = operator.get(&location).await;
    assert!(
        html.contains("shipment-status") && html.contains("create-order"),
        "{html}"
    );
    // Deleting a version a flow uses is refused, with the reason.
    let conn = host
        .connect(
            "example",
            json!({"base_url": "https://api.acme.test", "api_key": "k-1"}),
        )
        .await;
    let (status, flow) = host
        .call(
            Method::POST,
            "/v1/flows",
            Some(json!({"name": "Uses example", "trigger": {"schedule": "0 0 1 1 *"},
                        "steps": [{"key": "s", "plugin": "example@^0.1", "action": "echo", "connection": conn, "input": {}}]})),
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let (status, _, html) = operator.post("/connectors/example/0.1.0/delete", &[]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        html.contains("Not deleted") && html.contains(flow["id"].as_str().unwrap()),
        "{html}"
    );
    // Deprecation and environment variables.
    let (status, _, _) = operator
        .post(
            "/connectors/example/0.1.0/deprecate",
            &[("deprecated", "true")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = operator
        .post(
            "/connectors/example/0.1.0/env",
            &[("name", "REGION"), ("value", "eu")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, record) = host.get("/v1/plugins/example/0.1.0").await;
    assert_eq!(
        (&record["deprecated"], &record["env"]["REGION"]),
        (&json!(true), &json!("eu")),
        "{record}"
    );
    let (_, html) = operator.get("/connectors/example/0.1.0").await;
    assert!(
        html.contains("Undo deprecation") && html.contains("REGION"),
        "{html}"
    );
    let (status, _, _) = operator
        .post(
            "/connectors/example/0.1.0/env",
            &[
                ("name", "PARTNER_KEY"),
                ("value", "pk_live_sealed_7a6b"),
                ("secret", "on"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = operator.get("/connectors/example/0.1.0").await;
    assert!(
        html.contains("PARTNER_KEY") && !html.contains("pk_live_sealed_7a6b"),
        "{html}"
    );
    let (_, html) = merchant.get("/connectors/example/0.1.0").await;
    assert!(
        !html.contains("REGION"),
        "environment variables are the operator's"
    );
    host.stop().await;
}

#[tokio::test]
async fn the_operator_rotates_and_deletes_a_tenant_and_an_owner_removes_a_user() {
    let (host, _dir) = host().await;
    let operator = sign_in_token(&host.url, TOKEN).await;
    let (status, _, html) = operator
        .post("/tenants", &[("name", "Northwind Goods")])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{html}");
    let first = between(&html, "<code id=\"new-token\">", "</code>").expect("the token, once");
    let (_, html) = operator.get("/tenants").await;
    assert!(
        html.contains("Northwind Goods") && !html.contains(&first),
        "the token is shown only once"
    );
    let (_, tenants) = host.get("/v1/tenants").await;
    let id = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Northwind Goods")
        .expect("the tenant is stored")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let with_token = async |token: &str| {
        client()
            .get(format!("{}/v1/flows", host.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(with_token(&first).await, StatusCode::OK);

    // The owner removes a user: the user's session ends with it.
    let owner = sign_in_token(&host.url, &first).await;
    invite(&owner, "ed@acme.example", "editor", "editor password 1").await;
    let (_, _, editor) = sign_in(
        &host.url,
        &[
            ("email", "ed@acme.example"),
            ("password", "editor password 1"),
        ],
    )
    .await;
    let editor = editor.expect("the editor signs in");
    let (_, users) = owner.api(Method::GET, "/v1/users", None, false).await;
    let ed = users["users"][0]["id"].as_str().unwrap().to_string();
    let (_, html) = owner.get("/users").await;
    assert!(
        html.contains(&format!("action=\"/users/{ed}/remove\"")),
        "{html}"
    );
    let (status, location, _) = owner.post(&format!("/users/{ed}/remove"), &[]).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/users?notice=removed"))
    );
    let (_, html) = owner.get("/users").await;
    assert!(!html.contains("ed@acme.example<"), "{html}");
    let (status, _) = editor.get("/flows").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the removed user is signed out"
    );
    let (_, log) = owner.api(Method::GET, "/v1/audit", None, false).await;
    assert_eq!(log["entries"][0]["action"], "user.remove", "{log}");
    // A tenant's owner does not manage tenants.
    let (status, _, _) = owner.post(&format!("/tenants/{id}/rotate"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(with_token(&first).await, StatusCode::OK);

    // Rotation: the new token works, the old one and its sessions do not.
    let (status, _, html) = operator.post(&format!("/tenants/{id}/rotate"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let second = between(&html, "<code id=\"new-token\">", "</code>").expect("the new token");
    assert_ne!(first, second);
    assert_eq!(with_token(&first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(with_token(&second).await, StatusCode::OK);
    let (status, _) = owner.get("/flows").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the old token's session ended"
    );

    // Deletion: the tenant and its token are gone.
    let (status, location, _) = operator.post(&format!("/tenants/{id}/delete"), &[]).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/tenants?notice=deleted"))
    );
    assert_eq!(with_token(&second).await, StatusCode::UNAUTHORIZED);
    let (_, html) = operator.get("/tenants").await;
    assert!(!html.contains("Northwind Goods"), "{html}");
    let (status, _, _) = operator.post(&format!("/tenants/{id}/rotate"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop().await;
}

/// The spec a new connector starts from in the builder.
pub const NEW_CONNECTOR: &str = include_str!("../../src/console/templates/new_connector.yaml");

/// A JSON API for the builder's template: item 7, and a list of items;
/// it records the `Authorization` header of every request.
pub fn items_api(seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> axum::Router {
    use axum::{Json, extract::Path, http::HeaderMap, routing::get};
    let item = json!({"id": "7", "name": "Blue kettle", "updated_at": "2026-12-01T10:00:00Z"});
    let list = json!({"items": [item.clone()], "next_cursor": null});
    let record = move |h: &HeaderMap| {
        let auth = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        seen.lock().unwrap().push(auth);
    };
    let r2 = record.clone();
    axum::Router::new()
        .route(
            "/items/{id}",
            get(move |h: HeaderMap, Path(id): Path<String>| {
                record(&h);
                let item = item.clone();
                async move {
                    if id == "7" {
                        (StatusCode::OK, Json(item))
                    } else {
                        (
                            StatusCode::NOT_FOUND,
                            Json(json!({"error": "no such item"})),
                        )
                    }
                }
            }),
        )
        .route(
            "/items",
            get(move |h: HeaderMap| {
                r2(&h);
                let list = list.clone();
                async move { Json(list) }
            }),
        )
}

/// The line of the spec that starts with `start`.
fn line_of(spec: &str, start: &str) -> usize {
    spec.lines().position(|l| l.starts_with(start)).unwrap() + 1
}

#[tokio::test]
async fn the_operator_builds_tests_and_pushes_a_spec_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(crate::support::sandbox_config(dir.path())).await;
    host.upload_file(artifacts::DECLARATIVE_INTERPRETER).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let api = crate::support::fake::Server::start(items_api(seen.clone())).await;
    const SECRET: &str = "tok_builder_5f2c91";
    let properties = json!({"base_url": api.origin, "token": SECRET}).to_string();
    let operator = sign_in_token(&host.url, TOKEN).await;

    // The builder is the operator's, as uploads are.
    let (_, token) = tenant(&host, "Acme").await;
    let merchant = sign_in_token(&host.url, &token).await;
    let (_, html) = merchant.get("/connectors").await;
    assert!(!html.contains("href=\"/builder\""));
    assert_eq!(merchant.get("/builder").await.0, StatusCode::FORBIDDEN);
    let (status, _, _) = merchant
        .post("/builder/push", &[("spec", NEW_CONNECTOR)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A new connector starts from a template that passes every check, its
    // action and trigger offered to the test panel.
    let (_, html) = operator.get("/connectors").await;
    assert!(html.contains("href=\"/builder\""), "{html}");
    let (status, html) = operator.get("/builder").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("key: my-api") && html.contains("no problems"),
        "{html}"
    );
    assert!(
        html.contains("value=\"action:get-item\" selected")
            && html.contains("value=\"trigger:item-updated\""),
        "{html}"
    );

    // As the author types: a problem is placed at its line, and the test
    // panel keeps what it offered (nothing swapped out of band).
    let bad = NEW_CONNECTOR.replace("key: my-api", "key: My API!");
    let (status, _, html) = operator
        .post(
            "/builder/check",
            &[("spec", &bad), ("operation", "action:get-item")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let line = line_of(&bad, "key:");
    assert!(
        html.contains(&format!("data-line=\"{line}\"")) && html.contains("<code>&#x2f;key</code>"),
        "{html}"
    );
    assert!(
        html.contains("1 problem") && !html.contains("hx-swap-oob"),
        "{html}"
    );
    // Lines are counted as the editor shows them, whatever line ends the
    // browser sent.
    let (_, _, html) = operator
        .post("/builder/check", &[("spec", &bad.replace('\n', "\r\n"))])
        .await;
    assert!(html.contains(&format!("data-line=\"{line}\"")), "{html}");
    // Fixed: the operations come back, the one chosen still chosen.
    let (_, _, html) = operator
        .post(
            "/builder/check",
            &[
                ("spec", NEW_CONNECTOR),
                ("operation", "trigger:item-updated"),
            ],
        )
        .await;
    assert!(
        html.contains("no problems")
            && html.contains("hx-swap-oob")
            && html.contains("value=\"trigger:item-updated\" selected"),
        "{html}"
    );

    // The test panel runs the spec in the editor against the API, with
    // properties for this test only; the journal shows each request
    // without the credentials the host added.
    let test = async |spec: &str, operation: &str, input: &str| {
        let (status, _, html) = operator
            .post(
                "/builder/test",
                &[
                    ("spec", spec),
                    ("operation", operation),
                    ("connection", ""),
                    ("properties", &properties),
                    ("input", input),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{html}");
        html.replace("&#x2f;", "/")
    };
    let html = test(NEW_CONNECTOR, "action:get-item", r#"{"id": "7"}"#).await;
    assert!(
        html.contains("status-succeeded") && html.contains("Blue kettle"),
        "{html}"
    );
    assert!(html.contains("GET ") && html.contains("/items/7"), "{html}");
    assert!(!html.contains(SECRET), "a secret reached the page");
    assert_eq!(
        seen.lock().unwrap().last().map(String::as_str),
        Some(format!("Bearer {SECRET}").as_str()),
        "the host sent the token"
    );
    // The API's 404 is the spec's "not found"; the polling trigger reads
    // from the beginning.
    let html = test(NEW_CONNECTOR, "action:get-item", r#"{"id": "8"}"#).await;
    assert!(
        html.contains("status-succeeded") && html.contains("404"),
        "{html}"
    );
    let html = test(NEW_CONNECTOR, "trigger:item-updated", "").await;
    assert!(
        html.contains("Events (1)") && html.contains("Blue kettle"),
        "{html}"
    );
    // What cannot run says why.
    let html = test(NEW_CONNECTOR, "action:get-item", "{id: 7").await;
    assert!(html.contains("The input is not JSON"), "{html}");
    let html = test(&bad, "action:get-item", r#"{"id": "7"}"#).await;
    assert!(html.contains("The spec has 1 problem"), "{html}");
    let html = test(NEW_CONNECTOR, "action:get-item", "{}").await;
    assert!(html.contains("input of `get-item`"), "{html}");

    // A refused push stores nothing and shows the builder again, with the
    // spec as it was typed and its problems.
    let (status, _, html) = operator.post("/builder/push", &[("spec", &bad)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("Not pushed") && html.contains("key: My API!") && html.contains("data-line"),
        "{html}"
    );
    let (_, listed) = host.get("/v1/plugins").await;
    assert!(!listed.to_string().contains("my-api"), "{listed}");

    // Pushed: the version's page, which offers to edit the spec.
    let (status, location, _) = operator
        .post("/builder/push", &[("spec", NEW_CONNECTOR)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some("/connectors/my-api/0.1.0?notice=pushed")
    );
    let (_, html) = operator.get("/connectors/my-api/0.1.0?notice=pushed").await;
    assert!(
        html.contains("Pushed") && html.contains("href=\"/builder?from=my-api@0.1.0\""),
        "{html}"
    );
    let (_, audit) = host.get("/v1/audit").await;
    assert!(audit.to_string().contains("plugin.push"), "{audit}");
    // Now a stored connection of the key can be chosen for a test, and is
    // kept chosen as the author types.
    let conn = host
        .connect("my-api", json!({"base_url": api.origin, "token": SECRET}))
        .await;
    let (_, _, html) = operator
        .post(
            "/builder/check",
            &[("spec", NEW_CONNECTOR), ("connection", &conn)],
        )
        .await;
    assert!(
        html.contains(&format!("value=\"{conn}\" selected")),
        "{html}"
    );
    let (_, _, html) = operator
        .post(
            "/builder/test",
            &[
                ("spec", NEW_CONNECTOR),
                ("operation", "action:get-item"),
                ("connection", &conn),
                ("properties", ""),
                ("input", r#"{"id": "7"}"#),
            ],
        )
        .await;
    assert!(
        html.contains("status-succeeded") && html.contains("Blue kettle"),
        "{html}"
    );
    // The same text again changes nothing; other text under the version
    // is refused with the reason.
    let (_, location, _) = operator
        .post("/builder/push", &[("spec", NEW_CONNECTOR)])
        .await;
    assert_eq!(
        location.as_deref(),
        Some("/connectors/my-api/0.1.0?notice=unchanged")
    );
    let other = NEW_CONNECTOR.replace("name: My API", "name: My other API");
    let (status, _, html) = operator.post("/builder/push", &[("spec", &other)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(
        html.contains("Not pushed") && html.contains("0.1.0"),
        "{html}"
    );

    // "Edit spec" opens the version's text as the next version.
    let (status, html) = operator.get("/builder?from=my-api@0.1.0").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("version: 0.1.1") && html.contains("as version 0.1.1"),
        "{html}"
    );
    let (_, location, _) = operator
        .post(
            "/builder/push",
            &[("spec", &other.replace("version: 0.1.0", "version: 0.1.1"))],
        )
        .await;
    assert_eq!(
        location.as_deref(),
        Some("/connectors/my-api/0.1.1?notice=pushed")
    );
    let (_, versions) = host.get("/v1/plugins/my-api").await;
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(2),
        "{versions}"
    );
    // A component has no spec to edit.
    let (status, html) = operator.get("/builder?from=example@0.1.0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("Not a declarative connector"), "{html}");
    host.stop().await;
}
