//! `switchyard connector watch`: a YAML project (no compiler needed) is
//! watched against a host on loopback. Its unchanged first build is the
//! release it already is (`0.1.0`), an edit becomes `0.1.0-dev.1`, a
//! broken edit is reported and pushes nothing, the next good one is
//! `0.1.0-dev.2`, and flows keep the released `0.1.0`, even when upgraded.

use std::{path::Path, process::Stdio};

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::support::{DEADLINE, TestHost, config, serve::BIN};

/// The versions of `key` the host has, oldest first.
fn versions(host: &TestHost, key: &str) -> Vec<String> {
    let mut versions: Vec<semver::Version> = host
        .app
        .registry
        .versions(key)
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    versions.sort();
    versions.iter().map(ToString::to_string).collect()
}

fn write_spec(project: &Path, from: &str, to: &str) {
    let spec = project.join("connector.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&spec, text.replace(from, to)).unwrap();
}

/// Polls `check` until it holds; a timeout shows what the watcher printed.
async fn wait_for(what: &str, dir: &Path, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !check() {
        if std::time::Instant::now() > deadline {
            let read = |name| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            panic!(
                "timed out waiting until {what}\nthe watcher printed:\n{}\n{}",
                read("watch.log"),
                read("watch.err")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The trigger version a flow pinned.
async fn pinned(host: &TestHost, flow: &str) -> Value {
    let (status, body) = host.get(&format!("/v1/flows/{flow}")).await;
    assert_eq!(status, 200, "{body}");
    body["pinned"]["trigger"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_project_is_pushed_as_development_versions() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    host.upload_file(artifacts::DECLARATIVE_INTERPRETER).await;
    let project = dir.path().join("acme");
    let output = std::process::Command::new(BIN)
        .args(["connector", "new", "acme", "--lang", "yaml", "--dir"])
        .arg(&project)
        .arg("--sdk")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    // The release, and a flow on it.
    let (status, body) = host
        .upload(std::fs::read(project.join("connector.yaml")).unwrap())
        .await;
    assert_eq!(status, 201, "{body}");
    let connection = host
        .connect(
            "acme",
            json!({"base_url": "https://api.acme.test", "api_key": "k", "webhook_secret": "s"}),
        )
        .await;
    let flow = json!({
        "name": "Acme items",
        "trigger": {"plugin": "acme@^0.1", "trigger": "item-event", "connection": connection},
        "steps": [{"key": "create", "plugin": "acme@^0.1", "action": "create-item",
                   "connection": connection, "input": {"name": "{{ trigger.id }}"}}],
    });
    let (status, published) = host.call(Method::POST, "/v1/flows", Some(flow)).await;
    assert_eq!(status, 201, "{published}");
    let flow_id = published["id"].as_str().unwrap().to_string();

    let log = dir.path().join("watch.log");
    let mut watch = tokio::process::Command::new(BIN)
        .args(["connector", "watch", "--dir"])
        .arg(&project)
        .args(["--host", &host.url])
        .env("SWITCHYARD_TOKEN", crate::support::TOKEN)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("watch.err")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The first build is the release's own bytes: it is that version.
    wait_for("the first build is found unchanged", dir.path(), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("unchanged: acme@0.1.0 on"))
    })
    .await;
    assert_eq!(versions(&host, "acme"), ["0.1.0"]);
    write_spec(
        &project,
        "description: Creates items",
        "description: Makes items",
    );
    wait_for("the edit is pushed", dir.path(), || {
        versions(&host, "acme") == ["0.1.0-dev.1", "0.1.0"]
    })
    .await;
    let dev1 = host.app.registry.versions("acme").unwrap();
    assert!(
        dev1.iter().any(|r| r.version.to_string() == "0.1.0-dev.1"
            && r.manifest.description.contains("Makes items")),
        "the development build is the edited spec"
    );

    // A spec the host refuses: reported, nothing pushed, still watching.
    let err = dir.path().join("watch.err");
    write_spec(&project, "version: 0.1.0", "version: 0.1.0\nnot_a_field: 1");
    wait_for("the refusal is reported", dir.path(), || {
        std::fs::read_to_string(&err).is_ok_and(|e| e.contains("refused the build"))
    })
    .await;
    assert_eq!(versions(&host, "acme"), ["0.1.0-dev.1", "0.1.0"]);
    std::fs::write(
        project.join("connector.yaml"),
        std::fs::read_to_string(project.join("connector.yaml"))
            .unwrap()
            .replace("version: 0.1.0\nnot_a_field: 1", "version: 0.1.0")
            .replace("description: Makes items", "description: Builds items"),
    )
    .unwrap();
    wait_for("the fix is pushed", dir.path(), || {
        versions(&host, "acme").contains(&"0.1.0-dev.2".to_string())
    })
    .await;
    assert!(watch.try_wait().unwrap().is_none(), "the watch goes on");
    watch.start_kill().unwrap();
    watch.wait().await.unwrap();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(
        printed.contains(&format!("pushed acme@0.1.0-dev.1 to {}", host.url)),
        "{printed}"
    );

    // Flows keep the release, even when upgraded to the newest match.
    assert_eq!(pinned(&host, &flow_id).await, json!("0.1.0"));
    let (status, upgraded) = host
        .call(Method::POST, &format!("/v1/flows/{flow_id}/upgrade"), None)
        .await;
    assert_eq!(status, 200, "{upgraded}");
    assert_eq!(pinned(&host, &flow_id).await, json!("0.1.0"));
    // A development build is reached by its exact version.
    let (_, resolved) = host.get("/v1/plugins/acme/resolve?req==0.1.0-dev.1").await;
    assert_eq!(resolved["version"], json!("0.1.0-dev.1"), "{resolved}");

    // `--once` pushes an unchanged build as the version it already is.
    let once = tokio::process::Command::new(BIN)
        .args(["connector", "watch", "--once", "--dir"])
        .arg(&project)
        .env("SWITCHYARD_URL", &host.url)
        .env("SWITCHYARD_TOKEN", crate::support::TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&once.stdout);
    assert!(once.status.success(), "{once:?}");
    assert!(stdout.contains("unchanged: acme@0.1.0-dev.2"), "{stdout}");
    host.stop().await;
}
