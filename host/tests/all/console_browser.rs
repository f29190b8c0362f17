//! The console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, which `./dev test` installs)
//! against a real `switchyard serve` on loopback, with the Shopify and
//! warehouse fakes. A merchant signs in with a tenant token, creates
//! connections from the generated forms (a bad value is shown at its field
//! first), builds "packed shipment → Shopify Ready to ship" with a
//! condition and a step whose inputs come from the data picker, tests the
//! step, publishes, activates, and sees a signed delivery's run succeed; a
//! run the fake makes fail is replayed from its page and succeeds; another
//! tenant sees none of it. A second walk covers the operator's pages (a
//! declarative connector built, tested against a local API, pushed and
//! edited again in the builder) and a viewer. Every page is saved as a
//! screenshot in `target/console-screenshots/`.
//!
//! Waits are for elements or states with a deadline, never for a time.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    console::{NEW_CONNECTOR, items_api},
    fake_shopify::FakeShopify,
    fake_warehouse::FakeWarehouse,
    support::{TOKEN, fake::Delivery, read},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const PUBLIC_URL: &str = "https://switchyard.test";
const DEADLINE: Duration = Duration::from_secs(30);

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `switchyard serve` as a child process on a free loopback port.
struct Serve {
    child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Serve {
    async fn start() -> Serve {
        Serve::with_plugins(&[]).await
    }

    /// With the Shopify and warehouse components and `more` (name, path).
    async fn with_plugins(more: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for &(name, path) in [
            ("shopify", artifacts::SHOPIFY),
            ("warehouse", artifacts::WAREHOUSE),
        ]
        .iter()
        .chain(more)
        {
            std::fs::copy(path, plugins.join(format!("{name}.wasm"))).unwrap();
        }
        let mut child = tokio::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--load-dir")
            .arg(&plugins)
            .args([
                "--allow-network",
                "127.0.0.2/32",
                "--public-url",
                PUBLIC_URL,
            ])
            .args(["--http-timeout-ms", "2000"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("switchyard serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("switchyard listening on ") {
                    return url.to_string();
                }
            }
            panic!("serve exited before listening");
        })
        .await
        .expect("serve listens within two minutes");
        // Keep reading so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Serve {
            child,
            url,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            _dir: dir,
        }
    }

    async fn api(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let (status, body) = read(r.send().await.unwrap()).await;
        (status.as_u16(), body)
    }

    /// Posts a delivery the fake made to the registered address, as the
    /// third party would.
    async fn deliver(&self, delivery: &Delivery) -> Value {
        let path = delivery.address.strip_prefix(PUBLIC_URL).unwrap();
        let mut r = self
            .http
            .post(format!("{}{path}", self.url))
            .body(delivery.body.clone());
        for (name, value) in &delivery.headers {
            r = r.header(name, value);
        }
        let (status, body) = read(r.send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// chromedriver on a free loopback port and a headless Chromium session.
struct Browser {
    client: Client,
    driver: tokio::process::Child,
    base: String,
    /// The HTML of every page screenshot, by screenshot name: searched for
    /// secrets at the end of a walk.
    seen: std::sync::Mutex<Vec<(String, String)>>,
    _profile: tempfile::TempDir,
}

/// A Chrome DevTools Protocol command, sent through ChromeDriver.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl Cdp {
    fn new(cmd: &'static str, params: Value) -> Cdp {
        Cdp { cmd, params }
    }
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

impl Browser {
    async fn start(base: &str) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (./dev test installs chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,1000", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }))
        .unwrap();
        let deadline = Instant::now() + DEADLINE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client,
            driver,
            base: base.to_string(),
            seen: Default::default(),
            _profile: profile,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    /// Waits for an element.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` within {DEADLINE:?}: {e}"))
    }

    async fn click(&self, css: &str) {
        // An htmx swap may replace the element between finding and
        // clicking it: find it again then.
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot click `{css}`: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn select(&self, css: &str, value: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.find(css).await.select_by_value(value).await {
                Ok(()) => return,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot select {value} in `{css}`: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    async fn html(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Opens a page and waits for its heading; it must not be an error page.
    async fn open(&self, path: &str) {
        self.goto(path).await;
        self.find("main h1").await;
        let html = self.html().await;
        assert!(
            !html.contains("Something went wrong") && !html.contains("That did not work"),
            "{path} is an error page: {html}"
        );
    }

    /// Waits until the page's HTML contains `text` (reloading with
    /// `reload` between looks, for pages that do not update themselves).
    async fn wait_for_text(&self, text: &str, reload: bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if self.html().await.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{text}` never appeared on {}",
                self.client.current_url().await.unwrap()
            );
            if reload {
                self.client.refresh().await.unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    async fn wait_for_path(&self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let path = self.path().await;
            if path.starts_with(prefix) {
                return path;
            }
            assert!(Instant::now() < deadline, "still at {path}, not {prefix}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole page, however tall, through the DevTools protocol
    /// (WebDriver's screenshot is of the window only).
    async fn screenshot(&self, name: &str) {
        let metrics = self
            .client
            .issue_cmd(Cdp::new("Page.getLayoutMetrics", json!({})))
            .await
            .unwrap();
        let size = &metrics["cssContentSize"];
        let (width, height) = (
            size["width"].as_f64().unwrap_or(1280.0),
            size["height"].as_f64().unwrap_or(1000.0).min(8000.0),
        );
        let shot = self
            .client
            .issue_cmd(Cdp::new(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            ))
            .await
            .unwrap();
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            shot["data"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
        let html = self.html().await;
        self.seen.lock().unwrap().push((name.to_string(), html));
    }

    /// Fails if any page screenshot so far shows one of `secrets`.
    fn assert_shown_nowhere(&self, secrets: &[&str]) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        for (page, html) in seen.iter() {
            for secret in secrets {
                assert!(!html.contains(secret), "page {page} shows a secret");
            }
        }
    }

    async fn sign_in_token(&self, token: &str) {
        self.goto("/sign-in").await;
        self.fill("#token", token).await;
        self.click("#token-submit").await;
        self.find(".tiles").await;
    }

    async fn sign_out(&self) {
        self.click("header .who button").await;
        self.find("#password-form").await;
    }

    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.start_kill();
        let _ = self.driver.wait().await;
    }
}

/// Fills a connection form from the fake's properties.
async fn fill_connection(browser: &Browser, properties: &Value) {
    for (key, value) in properties.as_object().unwrap() {
        let text = value
            .as_str()
            .map(str::to_string)
            .unwrap_or(value.to_string());
        browser.fill(&format!("#props-{key}"), &text).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_builds_runs_and_replays_a_flow_in_the_browser() {
    // Chromium loads the machine: not beside a test that measures latency.
    let _busy = crate::support::machine().read().await;
    let shop = FakeShopify::start().await;
    let warehouse = FakeWarehouse::start().await;
    let serve = Serve::start().await;
    let (status, created) = serve
        .api(
            TOKEN,
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "Acme Retail"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    let browser = Browser::start(&serve.url).await;

    // Sign in with the tenant's token.
    browser.goto("/").await;
    browser.wait_for_path("/sign-in").await;
    browser.find("#token").await;
    browser.screenshot("01-sign-in").await;
    browser.sign_in_token(&token).await;
    browser.screenshot("02-overview-empty").await;

    // The warehouse connection, from the generated form.
    browser.goto("/connections").await;
    browser.screenshot("03-connections-empty").await;
    browser.click("#new-connection").await;
    browser.find("#choose-warehouse").await;
    browser.screenshot("04-connection-choose").await;
    browser.click("#choose-warehouse").await;
    browser.fill("#name", "Warehouse").await;
    fill_connection(&browser, &warehouse.properties()).await;
    browser.screenshot("05-connection-form").await;
    browser.click("#save-connection").await;
    browser.wait_for_text("Created.", false).await;

    // Shopify: a bad shop name first, shown at its field; nothing stored.
    browser.goto("/connections/new?plugin=shopify").await;
    let mut properties = shop.properties();
    properties["shop"] = json!("Not A Shop!");
    browser.fill("#name", "Shopify").await;
    fill_connection(&browser, &properties).await;
    browser.click("#save-connection").await;
    browser.find("#error-props-shop").await;
    browser.screenshot("06-connection-bad-value").await;
    let (_, list) = serve
        .api(&token, Method::GET, "/v1/connections", None)
        .await;
    assert_eq!(
        list["connections"].as_array().unwrap().len(),
        1,
        "nothing stored"
    );
    // Secrets are not sent back: they are typed again.
    assert_eq!(browser.value("#props-api_key").await, "");
    fill_connection(&browser, &shop.properties()).await;
    browser.click("#save-connection").await;
    browser.wait_for_text("Created.", false).await;
    browser.screenshot("07-connection-saved").await;
    let (_, list) = serve
        .api(&token, Method::GET, "/v1/connections", None)
        .await;
    let id_of = |plugin: &str| {
        list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["plugin"] == plugin)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (wms, shopify) = (id_of("warehouse"), id_of("shopify"));
    // "Test connection" asks the warehouse, and says it works.
    browser.goto(&format!("/connections/{wms}")).await;
    browser.click("#test-connection").await;
    browser
        .wait_for_text("status-ok\">works</span>", false)
        .await;
    browser.goto("/connections").await;
    browser.screenshot("08-connections").await;

    // An order in Shopify, sent to the warehouse (as workflow 1 would).
    let order_in_warehouse = async |order: &Value| {
        let input = json!({"channel_order_id": order["id"], "channel_order_name": order["name"], "items": order["line_items"]});
        let (status, body) = serve
            .api(&token, Method::POST, "/v1/invoke", Some(json!({"plugin": "warehouse", "action": "create-order", "connection": wms, "input": input})))
            .await;
        assert_eq!(status, 200, "{body}");
        body["output"]["order"]["id"].as_str().unwrap().to_string()
    };
    let order = shop.create_order(json!({"tags": "vip"}));
    let order_id = order["id"].as_u64().unwrap();
    let wo = order_in_warehouse(&order).await;

    // The flow, built in the editor.
    browser.goto("/flows").await;
    browser.screenshot("09-flows-empty").await;
    browser.click("#new-flow").await;
    browser
        .fill("#flow-name", "Packed shipments are ready to ship")
        .await;
    browser.click("#start").await;
    browser.find("#editor").await;
    browser.select("#trigger-plugin", "warehouse").await;
    browser
        .find("#trigger-trigger option[value='shipment-status']")
        .await;
    browser.select("#trigger-trigger", "shipment-status").await;
    browser
        .find(&format!("#trigger-connection option[value='{wms}']"))
        .await;
    browser.select("#trigger-connection", &wms).await;
    // Only packed shipments: the field from the data picker.
    browser.click("#add-condition").await;
    browser.click("button[data-picker-for='cond-0-left']").await;
    browser
        .click("#conditions-block button[data-insert='trigger.status']")
        .await;
    assert_eq!(browser.value("#cond-0-left").await, "trigger.status");
    browser.fill("#cond-0-right", "packed").await;
    // Then tag the Shopify order.
    browser.select("#step-0-plugin", "shopify").await;
    browser
        .find("#step-0-action option[value='tag-order']")
        .await;
    browser.select("#step-0-action", "tag-order").await;
    browser.find("#step-0-input-order_id").await;
    browser.select("#step-0-connection", &shopify).await;
    browser.fill("#step-0-key", "tag").await;
    browser
        .click("button[data-picker-for='step-0-input-order_id']")
        .await;
    browser.screenshot("10-editor-data-picker").await;
    browser
        .click("#step-0 button[data-insert='trigger.channel_order_id']")
        .await;
    assert_eq!(
        browser.value("#step-0-input-order_id").await,
        "{{ trigger.channel_order_id }}"
    );
    browser.fill("#step-0-input-tags", "Ready to ship").await;
    browser.fill("#step-0-input-note", "Packed as ").await;
    browser
        .click("button[data-picker-for='step-0-input-note']")
        .await;
    browser
        .click("#step-0 button[data-insert='trigger.order_id']")
        .await;
    assert_eq!(
        browser.value("#step-0-input-note").await,
        "Packed as {{ trigger.order_id }}"
    );
    // The draft saves itself and survives a reload.
    browser.wait_for_text("All changes saved", false).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        browser.client.refresh().await.unwrap();
        if browser.value("#step-0-input-note").await == "Packed as {{ trigger.order_id }}"
            && browser.value("#cond-0-right").await == "packed"
        {
            break;
        }
        assert!(Instant::now() < deadline, "the draft did not keep the form");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        browser.value("#step-0-input-order_id").await,
        "{{ trigger.channel_order_id }}"
    );
    browser.screenshot("11-editor").await;
    // Test the step against a sample event (the shipment of the order).
    let sample = json!({"id": "SH-TEST", "order_id": wo, "channel": "shopify", "channel_order_id": order_id.to_string(), "status": "packed"});
    browser.click(".sample-event summary").await;
    browser.fill("#test-trigger", &sample.to_string()).await;
    browser.click("#test-step-0").await;
    browser.find("#test-0 #test-output-value").await;
    browser.wait_for_text("succeeded</span>", false).await;
    browser.screenshot("12-editor-test-step").await;
    assert!(
        browser.html().await.contains("/admin/api/"),
        "the exchange with Shopify is listed"
    );

    // Publish, activate.
    browser.click("#publish").await;
    let flow_path = browser.wait_for_path("/flows/flow_").await;
    let flow_id = flow_path
        .trim_start_matches("/flows/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    browser.find("#activate").await;
    browser.click("#activate").await;
    browser.find("#webhook-url").await;
    browser.screenshot("13-flow-active").await;
    let endpoints: Vec<Value> = warehouse.lock().endpoints.values().cloned().collect();
    assert_eq!(endpoints.len(), 1, "activation registered the webhook");

    // The warehouse packs the order. A copy of its delivery with a forged
    // signature is turned away and listed with the reason...
    warehouse.advance(&wo, "packed");
    let deliveries = warehouse.take_deliveries();
    assert_eq!(deliveries.len(), 1);
    let forged = deliveries[0]
        .clone()
        .with_header("webhook-signature", Some("v1,Zm9yZ2Vk"));
    let path = forged.address.strip_prefix(PUBLIC_URL).unwrap();
    let mut r = serve
        .http
        .post(format!("{}{path}", serve.url))
        .body(forged.body.clone());
    for (name, value) in &forged.headers {
        r = r.header(name, value);
    }
    assert_eq!(r.send().await.unwrap().status(), 400);
    browser.goto("/webhooks").await;
    browser.wait_for_text("signature", true).await;
    // ...and the signed one starts a run.
    assert_eq!(serve.deliver(&deliveries[0]).await["runs"], json!(1));
    browser
        .goto(&format!("/runs?flow={flow_id}&status=succeeded"))
        .await;
    browser
        .wait_for_text("status-succeeded\">succeeded", true)
        .await;
    browser.screenshot("14-runs").await;
    browser.click("table a[href^='/runs/run_']").await;
    browser.find("#run-body[data-status='succeeded']").await;
    browser.screenshot("15-run-succeeded").await;
    let tags = shop.order(order_id).unwrap()["tags"].clone();
    assert!(tags.as_str().unwrap().contains("Ready to ship"), "{tags}");

    // Shopify refuses the next request (422, not worth a retry): the run is
    // a dead letter; replayed once Shopify answers again, it succeeds.
    let second = shop.create_order(json!({}));
    let second_wo = order_in_warehouse(&second).await;
    shop.fail_next(1, 422);
    warehouse.advance(&second_wo, "packed");
    for d in warehouse.take_deliveries() {
        serve.deliver(&d).await;
    }
    browser.goto("/runs?status=failed").await;
    browser.wait_for_text("status-failed\">failed", true).await;
    browser.screenshot("16-runs-failed").await;
    browser.click("table a[href^='/runs/run_']").await;
    browser.find("#run-body[data-status='failed']").await;
    browser.find("#run-error").await;
    browser.screenshot("17-run-failed").await;
    browser.click("#replay").await;
    // The page updates itself until the run is done.
    browser.find("#run-body[data-status='succeeded']").await;
    browser.screenshot("18-run-replayed").await;
    let html = browser.html().await;
    assert!(
        html.contains("Replayed: attempt 1") && html.contains("2 attempts"),
        "the failed attempt and the replayed one are both listed"
    );
    let tags = shop.order(second["id"].as_u64().unwrap()).unwrap()["tags"].clone();
    assert!(tags.as_str().unwrap().contains("Ready to ship"), "{tags}");

    let flow_page = format!("/flows/{flow_id}");
    for (path, name) in [
        ("/", "19-overview"),
        ("/webhooks", "20-webhooks"),
        ("/flows", "21-flows"),
        ("/audit", "22-audit"),
        (flow_page.as_str(), "23-flow"),
        ("/connectors", "24-connectors"),
        ("/connectors/shopify/0.1.1", "25-connector"),
    ] {
        browser.open(path).await;
        browser.screenshot(name).await;
    }
    assert!(
        browser.html().await.contains("Tag order"),
        "the connector lists its actions"
    );
    // Editing the published flow again, as YAML.
    browser.open(&flow_page).await;
    browser.click("#edit-flow").await;
    browser.click("#edit-yaml").await;
    assert!(
        browser
            .value("#yaml")
            .await
            .contains("Packed as {{ trigger.order_id }}"),
        "the YAML view shows the draft"
    );
    browser.screenshot("26-yaml").await;

    // What the tenant publishes, and who reads it.
    let records = json!({"records": [
        {"key": "1001", "type": "order.updated", "data": {"status": "paid", "total": "49.00"}},
        {"key": "1002", "type": "order.updated", "data": {"status": "packed", "total": "12.50"}},
        {"key": "1001", "type": "order.updated", "data": {"status": "shipped", "total": "49.00"}},
    ]});
    let (status, body) = serve
        .api(
            &token,
            Method::POST,
            "/v1/topics/orders/records",
            Some(records),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, stream) = serve
        .api(
            &token,
            Method::POST,
            "/v1/streams",
            Some(json!({"topic": "orders"})),
        )
        .await;
    assert_eq!(status, 201, "{stream}");
    let (status, body) = serve
        .api(
            &token,
            Method::POST,
            "/v1/webhook-subscriptions",
            Some(json!({"topic": "orders", "url": "https://erp.example/hooks", "interval_secs": 300})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    browser.open("/changes").await;
    browser
        .wait_for_text(stream["id"].as_str().unwrap(), false)
        .await;
    assert!(browser.html().await.contains("https://erp.example/hooks"));
    browser.screenshot("27-changes").await;
    browser.open("/changes/topics/orders").await;
    browser.wait_for_text("order.updated", false).await;
    // Each partition says how many records it holds (three records on
    // two of the four partitions by their keys' hash).
    let page = browser.html().await;
    assert!(page.contains("(empty)"), "{page}");
    assert!(
        page.contains("(1 record)") && page.contains("(2 records)"),
        "{page}"
    );
    browser.screenshot("28-topic").await;

    // No page showed a secret typed into the connection forms (their
    // values went to the fakes in the runs' HTTP exchanges).
    let (shop_props, wms_props) = (shop.properties(), warehouse.properties());
    let secrets = [
        shop_props["api_key"].as_str().unwrap(),
        shop_props["webhook_secret"].as_str().unwrap(),
        wms_props["token"].as_str().unwrap(),
        wms_props["webhook_secret"].as_str().unwrap(),
    ];
    browser.assert_shown_nowhere(&secrets);

    // Another tenant sees none of it.
    let (_, other) = serve
        .api(
            TOKEN,
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "Other"})),
        )
        .await;
    browser.sign_out().await;
    browser
        .sign_in_token(other["token"].as_str().unwrap())
        .await;
    browser.goto("/runs").await;
    browser.wait_for_text("No runs match", false).await;
    browser.goto(&format!("/flows/{flow_id}")).await;
    browser.wait_for_text("Not found", false).await;
    browser.goto("/connections").await;
    browser.wait_for_text("No connections yet", false).await;
    assert!(!browser.html().await.contains("Warehouse"));
    browser.goto("/changes").await;
    browser.wait_for_text("No topics yet", false).await;

    browser.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_and_a_viewer_in_the_browser() {
    // Chromium loads the machine: not beside a test that measures latency.
    let _busy = crate::support::machine().read().await;
    let serve = Serve::with_plugins(&[(
        "declarative-interpreter",
        artifacts::DECLARATIVE_INTERPRETER,
    )])
    .await;
    let browser = Browser::start(&serve.url).await;
    browser.sign_in_token(TOKEN).await;
    browser.goto("/tenants").await;
    browser.fill("#tenant-name", "Acme Retail").await;
    browser.click("#create-tenant").await;
    let token = browser.find("#new-token").await.text().await.unwrap();
    assert!(token.starts_with("syt_"), "{token}");
    browser.screenshot("30-tenants").await;
    browser.goto("/connectors").await;
    browser.find("#upload-form").await;
    browser.screenshot("31-connectors").await;
    build_a_connector(&browser).await;
    browser.sign_out().await;

    // The owner invites a viewer, who signs in with a password.
    browser.sign_in_token(&token).await;
    browser.goto("/users").await;
    browser.fill("#invite-email", "vera@acme.example").await;
    browser.select("#invite-role", "viewer").await;
    browser.click("#invite").await;
    let link = browser.find("#invite-link").await.text().await.unwrap();
    browser.screenshot("32-users").await;
    browser.sign_out().await;
    // The link names the public address; this host is on loopback.
    let link = link.replace(PUBLIC_URL, &serve.url);
    assert!(link.contains("/invite/inv_"), "{link}");
    browser.client.goto(&link).await.unwrap();
    browser.fill("#password", "viewer password 1").await;
    browser.fill("#confirm", "viewer password 1").await;
    browser.screenshot("33-invitation").await;
    browser.click("button[type='submit']").await;
    browser.wait_for_text("Your account is ready", false).await;
    browser.fill("#email", "vera@acme.example").await;
    browser.fill("#password", "viewer password 1").await;
    browser.click("#password-form button").await;
    browser.find(".tiles").await;
    for path in ["/flows", "/connections", "/runs"] {
        browser.open(path).await;
        let html = browser.html().await;
        assert!(
            !html.contains("id=\"new-flow\"") && !html.contains("id=\"new-connection\""),
            "{path}"
        );
        assert!(html.contains("role-viewer"), "{path}");
    }
    browser.screenshot("34-viewer").await;
    browser.stop().await;
    serve.stop().await;
}

/// The operator builds a declarative connector: a problem is placed at its
/// line (a click selects that line), the fixed spec is tested against a
/// local API, pushed, and edited again as the next version.
async fn build_a_connector(browser: &Browser) {
    const SECRET: &str = "tok_browser_builder_93e1";
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let api = crate::support::fake::Server::start(items_api(seen.clone())).await;
    browser.click("#new-spec").await;
    browser.find("#problems .status-ok").await;
    // A key with capitals and spaces: one problem, at the key's line.
    let bad = NEW_CONNECTOR.replace("key: my-api", "key: My API!");
    let line = bad.lines().position(|l| l.starts_with("key:")).unwrap() + 1;
    browser.fill("#spec", &bad).await;
    browser
        .wait_for_text("status-failed\">1 problem</span>", false)
        .await;
    browser
        .click(&format!("#problems button[data-line='{line}']"))
        .await;
    assert_eq!(
        browser.find("#spec-cursor").await.text().await.unwrap(),
        format!("Line {line}, column 1"),
        "the problem's line is selected"
    );
    browser.screenshot("35-builder-problem").await;
    // Fixed, and tried against the API with properties for this test.
    browser.fill("#spec", NEW_CONNECTOR).await;
    browser.wait_for_text("1 action, 1 trigger", false).await;
    browser.select("#test-operation", "action:get-item").await;
    let properties = json!({"base_url": api.origin, "token": SECRET});
    browser
        .fill("#test-properties", &properties.to_string())
        .await;
    browser.fill("#test-input", r#"{"id": "7"}"#).await;
    browser.click("#run-test").await;
    browser.find("#test-result .status-succeeded").await;
    browser.wait_for_text("Blue kettle", false).await;
    browser.screenshot("36-builder-test").await;
    assert_eq!(
        seen.lock().unwrap().last().map(String::as_str),
        Some(format!("Bearer {SECRET}").as_str())
    );
    // Pushed: the new version's page.
    browser.click("#push").await;
    browser.wait_for_path("/connectors/my-api/0.1.0").await;
    browser.wait_for_text("Pushed", false).await;
    browser.screenshot("37-builder-pushed").await;
    // Edited again: the next version.
    browser.click("#edit-spec").await;
    browser.wait_for_text("version: 0.1.1", false).await;
    browser.screenshot("38-builder-edit").await;
    browser.click("#push").await;
    browser.wait_for_path("/connectors/my-api/0.1.1").await;
    browser.open("/connectors").await;
    browser
        .wait_for_text("href=\"/connectors/my-api/0.1.1\"", false)
        .await;
    browser.assert_shown_nowhere(&[SECRET]);
}
