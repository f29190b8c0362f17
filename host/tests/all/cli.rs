//! The `switchyard` binary end to end: `serve` in a child process, then the
//! plugin and invoke commands against it, as an operator would use them.

use std::process::{Command, Output};

use switchyard_tests as artifacts;

use crate::support::serve::{BIN, Serve};

/// `switchyard serve` on a new data directory: it generates the operator
/// token and prints it once.
struct Server {
    url: String,
    token: String,
    /// Stops the host when the test ends.
    _serve: Serve,
}

fn serve(data_dir: &std::path::Path, load_dir: &std::path::Path) -> Server {
    let serve = Serve::start(data_dir, load_dir, &[]);
    let token = serve
        .generated_token
        .clone()
        .expect("a first start prints a generated token");
    Server {
        url: serve.url.clone(),
        token,
        _serve: serve,
    }
}

fn run(server: &Server, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_URL", &server.url)
        .env("SWITCHYARD_TOKEN", &server.token)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn operator_workflow_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let load_dir = dir.path().join("connectors");
    std::fs::create_dir(&load_dir).unwrap();
    std::fs::copy(artifacts::EXAMPLE, load_dir.join("example.wasm")).unwrap();
    let server = serve(&dir.path().join("data"), &load_dir);

    // The example connector from --load-dir is available at once.
    let list = stdout(&run(&server, &["plugin", "list"]));
    assert!(
        list.contains("example") && list.contains("0.1.0") && list.contains("create-item"),
        "{list}"
    );

    let pushed = stdout(&run(
        &server,
        &["plugin", "push", artifacts::FIXTURE_EXAMPLE_V2],
    ));
    assert!(pushed.starts_with("uploaded example@0.2.0"), "{pushed}");
    let again = stdout(&run(
        &server,
        &["plugin", "push", artifacts::FIXTURE_EXAMPLE_V2],
    ));
    assert!(
        again.starts_with("already registered: example@0.2.0"),
        "{again}"
    );

    let out = stdout(&run(
        &server,
        &[
            "invoke",
            "example@0.1.0",
            "echo",
            "--input",
            r#"{"hello":"cli"}"#,
        ],
    ));
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value["output"],
        serde_json::json!({"echo": {"hello": "cli"}})
    );
    assert_eq!(value["plugin"], "example@0.1.0");

    stdout(&run(
        &server,
        &["plugin", "env", "set", "example@0.2.0", "REGION=eu"],
    ));
    let env = stdout(&run(&server, &["plugin", "env", "list", "example@0.2.0"]));
    assert_eq!(env.trim(), "REGION=eu");
    // Secret variables: given inline or on stdin, never shown back.
    stdout(&run(
        &server,
        &[
            "plugin",
            "env",
            "set",
            "example@0.2.0",
            "--secret",
            "API_TOKEN=tok-3f9a1c77",
        ],
    ));
    let mut piped = Command::new(BIN)
        .args([
            "plugin",
            "env",
            "set",
            "example@0.2.0",
            "--secret",
            "CLIENT_SECRET",
        ])
        .env("SWITCHYARD_URL", &server.url)
        .env("SWITCHYARD_TOKEN", &server.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(piped.stdin.as_mut().unwrap(), b"cs-from-stdin-51e0\n").unwrap();
    let shown = stdout(&piped.wait_with_output().unwrap());
    let env = stdout(&run(&server, &["plugin", "env", "list", "example@0.2.0"]));
    assert_eq!(
        env.trim(),
        "API_TOKEN=********\nCLIENT_SECRET=********\nREGION=eu"
    );
    assert!(
        !shown.contains("cs-from-stdin") && !env.contains("tok-3f9a1c77"),
        "{shown}{env}"
    );

    stdout(&run(&server, &["plugin", "deprecate", "example@0.2.0"]));
    let list = stdout(&run(&server, &["plugin", "list"]));
    assert!(
        list.lines()
            .any(|l| l.contains("0.2.0") && l.contains("deprecated")),
        "{list}"
    );
    let shown = stdout(&run(&server, &["plugin", "show", "example@0.1.0"]));
    assert!(shown.contains("\"allowed_hosts\""), "{shown}");

    // Tenants: the token printed once works for that tenant only.
    let created = stdout(&run(&server, &["tenant", "create", "Initech"]));
    let tenant_token = created
        .lines()
        .find_map(|l| l.strip_prefix("its API token (shown only this once): "))
        .expect("the token is printed")
        .to_string();
    assert!(stdout(&run(&server, &["tenant", "list"])).contains("Initech"));
    let as_tenant = Command::new(BIN)
        .args(["tenant", "list"])
        .env("SWITCHYARD_URL", &server.url)
        .env("SWITCHYARD_TOKEN", &tenant_token)
        .output()
        .unwrap();
    assert!(!as_tenant.status.success());
    assert!(
        String::from_utf8_lossy(&as_tenant.stderr).contains("only the operator may list tenants")
    );

    // Connections: secrets go in, never come out.
    let created = stdout(&run(
        &server,
        &[
            "connection",
            "create",
            "example",
            "--name",
            "Acme",
            "--set",
            "base_url=https://api.acme.test",
            "--set",
            "api_key=sk_cli_secret_1",
        ],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["secrets"]["api_key"], "********");
    let listed = stdout(&run(&server, &["connection", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("Acme") && !listed.contains("sk_cli_secret_1"),
        "{listed}"
    );
    let updated = stdout(&run(
        &server,
        &[
            "connection",
            "update",
            &id,
            "--set",
            "base_url=https://eu.acme.test",
        ],
    ));
    assert!(
        updated.contains("eu.acme.test") && !updated.contains("sk_cli_secret_1"),
        "{updated}"
    );
    let bad = run(
        &server,
        &["connection", "create", "example", "--set", "nope=1"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`nope` is not a property of example"));
    // Flows are files applied by name: a second apply is a new version.
    let flow_file = dir.path().join("flow.yaml");
    std::fs::write(
        &flow_file,
        format!(
            "name: Echo new items\ntrigger:\n  plugin: example@^0.1\n  trigger: new-item\n  connection: {id}\n\
             steps:\n  - key: echo\n    plugin: example@^0.1\n    action: echo\n    connection: {id}\n    input:\n      id: \"{{{{ trigger.id }}}}\"\n"
        ),
    )
    .unwrap();
    let first = stdout(&run(
        &server,
        &["flow", "apply", flow_file.to_str().unwrap()],
    ));
    assert!(
        first.starts_with("published Echo new items") && first.trim_end().ends_with("version 1"),
        "{first}"
    );
    let second = stdout(&run(
        &server,
        &["flow", "apply", flow_file.to_str().unwrap()],
    ));
    assert!(second.trim_end().ends_with("version 2"), "{second}");
    let flows = stdout(&run(&server, &["flow", "list"]));
    assert!(
        flows.contains("Echo new items") && flows.contains("example@0.1.0 new-item"),
        "{flows}"
    );
    let flow_id = flows
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // A synchronous run by hand, then the run history.
    let ran = stdout(&run(
        &server,
        &["flow", "run", &flow_id, "--event", r#"{"id": "i-9"}"#],
    ));
    let ran: serde_json::Value = serde_json::from_str(&ran).unwrap();
    assert_eq!(ran["status"], "succeeded", "{ran}");
    assert_eq!(ran["output"]["echo"]["id"], "i-9", "{ran}");
    let runs = stdout(&run(&server, &["run", "list", "--flow", &flow_id]));
    assert!(
        runs.contains(ran["id"].as_str().unwrap()) && runs.contains("succeeded"),
        "{runs}"
    );
    let shown = stdout(&run(&server, &["run", "show", ran["id"].as_str().unwrap()]));
    assert!(shown.contains("\"flow_version\": 2"), "{shown}");
    let bad_status = run(&server, &["run", "list", "--status", "lost"]);
    assert!(String::from_utf8_lossy(&bad_status.stderr).contains("unknown run status `lost`"));
    stdout(&run(&server, &["flow", "delete", &flow_id]));

    stdout(&run(&server, &["connection", "delete", &id]));
    assert!(!stdout(&run(&server, &["connection", "list"])).contains(&id));

    stdout(&run(&server, &["plugin", "delete", "example@0.2.0"]));
    let list = stdout(&run(&server, &["plugin", "list"]));
    assert!(!list.contains("0.2.0"), "{list}");

    // Failures exit non-zero with the host's explanation.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let failed = run(&server, &["plugin", "push", garbage.to_str().unwrap()]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("not a WebAssembly binary") && stderr.contains("422"),
        "{stderr}"
    );

    let unauthorised = Command::new(BIN)
        .args(["plugin", "list"])
        .env("SWITCHYARD_URL", &server.url)
        .env("SWITCHYARD_TOKEN", "sy_wrong")
        .output()
        .unwrap();
    assert!(!unauthorised.status.success());
    assert!(String::from_utf8_lossy(&unauthorised.stderr).contains("SWITCHYARD_TOKEN"));
}

#[test]
fn declarative_specs_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let load_dir = dir.path().join("connectors");
    std::fs::create_dir(&load_dir).unwrap();
    // The interpreter and a spec in --load-dir: components load first.
    std::fs::copy(
        artifacts::DECLARATIVE_INTERPRETER,
        load_dir.join("z-interpreter.wasm"),
    )
    .unwrap();
    let spec = crate::support::spec_path("shipping.yaml");
    std::fs::copy(&spec, load_dir.join("a-shipping.yaml")).unwrap();
    let server = serve(&dir.path().join("data"), &load_dir);
    let list = stdout(&run(&server, &["plugin", "list"]));
    assert!(
        list.lines().any(|l| l.contains("shipping")
            && l.contains("0.2.0")
            && l.contains("custom-api-call")),
        "{list}"
    );

    // A refused push names every problem's line and path; nothing is stored.
    let bad = std::fs::read_to_string(&spec).unwrap().replacen(
        "    kind: search\n",
        "    kind: search\n    colour: blue\n",
        1,
    );
    let bad_path = dir.path().join("bad.yaml");
    std::fs::write(&bad_path, bad.replace("0.2.0", "0.3.0")).unwrap();
    let refused = run(&server, &["plugin", "push", bad_path.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("(/actions/get-tracking/colour): unknown key `colour`")
            && stderr.contains("line 45"),
        "{stderr}"
    );
    let list = stdout(&run(&server, &["plugin", "list"]));
    assert!(!list.contains("0.3.0"), "{list}");

    // A good one, then a live test: the sandbox refuses loopback here, and
    // the test shows the request it refused.
    let good_path = dir.path().join("good.yaml");
    std::fs::write(
        &good_path,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("0.2.0", "0.3.0"),
    )
    .unwrap();
    let pushed = stdout(&run(
        &server,
        &["plugin", "push", good_path.to_str().unwrap()],
    ));
    assert!(pushed.starts_with("uploaded shipping@0.3.0"), "{pushed}");
    let tested = stdout(&run(
        &server,
        &[
            "plugin",
            "test",
            good_path.to_str().unwrap(),
            "--set",
            "base_url=http://127.0.0.1:9",
            "--set",
            "token=shp-cli-secret",
            "--action",
            "get-tracking",
            "--input",
            r#"{"awb": "SY1"}"#,
        ],
    ));
    let result: serde_json::Value = serde_json::from_str(&tested).unwrap();
    assert_eq!(result["ok"], serde_json::json!(false), "{result}");
    assert_eq!(
        result["pages"][0]["request"]["url"],
        serde_json::json!("http://127.0.0.1:9/tracking/SY1"),
        "{result}"
    );
    assert!(
        result["pages"][0]["error"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{result}"
    );
    assert!(!tested.contains("shp-cli-secret"));
}

#[test]
fn topics_and_streams_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let load_dir = dir.path().join("connectors");
    std::fs::create_dir(&load_dir).unwrap();
    let server = serve(&dir.path().join("data"), &load_dir);

    stdout(&run(
        &server,
        &["topic", "create", "orders", "--partitions", "2"],
    ));
    for (key, status) in [("1001", "paid"), ("1002", "new"), ("1001", "shipped")] {
        let data = format!(r#"{{"status":"{status}"}}"#);
        stdout(&run(
            &server,
            &[
                "topic",
                "publish",
                "orders",
                key,
                "order.updated",
                "--data",
                &data,
            ],
        ));
    }
    let topics = stdout(&run(&server, &["topic", "list"]));
    assert!(
        topics.contains("orders") && topics.contains(" 3 "),
        "{topics}"
    );
    let current = stdout(&run(&server, &["topic", "get", "orders", "1001"]));
    assert!(current.contains("shipped"), "{current}");

    let created = stdout(&run(
        &server,
        &["stream", "create", "orders", "--where", "status=\"paid\""],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap();
    let read = stdout(&run(&server, &["stream", "read", id]));
    assert!(read.contains("1001") && !read.contains("1002"), "{read}");
    let cursor = read
        .lines()
        .last()
        .unwrap()
        .strip_prefix("cursor: ")
        .unwrap();
    stdout(&run(&server, &["stream", "commit", id, cursor]));
    let stats = stdout(&run(&server, &["stream", "stats", id]));
    assert!(stats.contains("total lag: 0"), "{stats}");

    // A bad filter says what is wrong.
    let failed = run(
        &server,
        &["stream", "create", "orders", "--where", "status"],
    );
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("FIELD=JSON"));
}
