//! Table tests of the checks a pushed spec passes: the shipped specs are
//! accepted; each kind of bad spec is refused with its path and line.

use super::*;

fn repository_file(name: &str) -> String {
    let path = format!(
        "{}/../plugins/declarative/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_shipped_specs_are_accepted() {
    for name in ["woocommerce.yaml", "shipping.yaml", "shopify-lite.yaml"] {
        let declared = parse(&repository_file(name))
            .unwrap_or_else(|problems| panic!("{name}: {problems:#?}"));
        assert!(!declared.manifest.actions.is_empty(), "{name}");
        let envelope: Envelope = serde_json::from_str(&declared.canonical).unwrap();
        assert_eq!(envelope.spec.key, declared.manifest.key);
    }
}

#[test]
fn shorthands_are_expanded() {
    let declared = parse(&repository_file("woocommerce.yaml")).unwrap();
    let spec = &declared.spec;
    let update = &spec.actions["update-order-status"];
    assert_eq!(update.cases.len(), 1);
    assert_eq!(update.cases[0].request.method, "PUT");
    assert_eq!(update.cases[0].responses[0].status, vec![[404, 404]]);
    let poll = spec.triggers["order-updated"].poll.as_ref().unwrap();
    assert_eq!(poll.records.as_deref(), Some(""));
    assert!(poll.pagination.is_some());
    assert_eq!(
        ranges(&json!(["4xx", "500-504", 429])),
        vec![[400, 499], [500, 504], [429, 429]]
    );
}

const GOOD: &str = r#"declarative: "0.1"
key: thing
name: Thing
version: 1.0.0
auth: { type: bearer }
properties:
  base_url: { required: true, schema: { type: string } }
  token: { required: true, secret: true }
  hook_secret: { secret: true }
allowed_hosts: ["{base_url}", "https://api.thing.test"]
base_url: "{{ connection.base_url }}/v1"
actions:
  get:
    name: Get
    request:
      url: "/things/{{ input.id }}"
triggers:
  changed:
    kind: polling
    name: Changed
    request: { url: /things }
    records: /data
    pagination:
      type: page_number
      stop: [empty_page]
    event_id: "{{ record.id }}"
"#;

/// `GOOD` with `from` replaced by `to`, and what its refusal must say.
fn refused(from: &str, to: &str) -> Vec<Problem> {
    assert!(GOOD.contains(from), "`{from}` is not in the good spec");
    let text = GOOD.replacen(from, to, 1);
    match parse(&text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(problems) => problems,
    }
}

#[test]
fn the_good_spec_is_accepted() {
    let declared = parse(GOOD).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(declared.manifest.key, "thing");
}

#[test]
fn bad_specs_are_refused_with_their_place() {
    // (what is changed, into what, the path, the line, words of the message)
    let table: &[(&str, &str, &str, usize, &str)] = &[
        (
            "    name: Get\n",
            "    name: Get\n    colour: blue\n",
            "/actions/get/colour",
            15,
            "unknown key `colour`",
        ),
        (
            "url: \"/things/{{ input.id }}\"",
            "url: \"/things/{{ input.id \"",
            "/actions/get/request/url",
            16,
            "template syntax",
        ),
        (
            "      stop: [empty_page]\n",
            "",
            "/triggers/changed/pagination",
            23,
            "no stop rule",
        ),
        (
            "url: \"/things/{{ input.id }}\"",
            "url: \"https://{{ input.host }}/things\"",
            "/actions/get/request/url",
            16,
            "could leave the allowed hosts",
        ),
        (
            "url: \"/things/{{ input.id }}\"",
            "url: \"https://evil.test/things\"",
            "/actions/get/request/url",
            16,
            "matches none of allowed_hosts",
        ),
        (
            "url: \"/things/{{ input.id }}\"",
            "url: \"{{ input.base }}/things\"",
            "/actions/get/request/url",
            16,
            "could leave the allowed hosts",
        ),
        (
            "url: \"/things/{{ input.id }}\"",
            "url: \"/things?key={{ connection.token }}\"",
            "/actions/get/request/url",
            16,
            "secret property `token`",
        ),
        (
            "      url: \"/things/{{ input.id }}\"\n",
            "      url: /things\n      method: POST\n      json: { auth: \"{{ connection.token }}\" }\n",
            "/actions/get/request/json/auth",
            18,
            "secret property `token`",
        ),
        (
            "    event_id: \"{{ record.id }}\"\n",
            "",
            "/triggers/changed",
            18,
            "\"event_id\" is a required property",
        ),
        (
            "  get:\n",
            "  custom-api-call:\n",
            "/actions/custom-api-call",
            13,
            "reserved",
        ),
        (
            "url: \"/things/{{ input.id }}\"",
            "url: \"/things/{{ inptu.id }}\"",
            "/actions/get/request/url",
            16,
            "`inptu` is not something a template can see",
        ),
    ];
    for (from, to, path, line, words) in table {
        let problems = refused(from, to);
        let found = problems
            .iter()
            .find(|p| p.path == *path && p.message.contains(words));
        let Some(found) = found else {
            panic!("{from:?} -> {to:?}: no problem at {path} saying {words:?}: {problems:#?}");
        };
        assert_eq!(found.line, *line, "{found}");
    }
}

#[test]
fn webhook_rules_are_checked() {
    let hook = GOOD.to_string()
        + r#"  delivered:
    kind: webhook
    name: Delivered
    verify: { scheme: hmac_sha256, secret: base_url, header: X-Sig }
    event_id: "{{ request.headers['x-id'] }}"
"#;
    let problems = parse(&hook).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "/triggers/delivered/verify/secret" && p.line == 30),
        "{problems:#?}"
    );
    let fixed = hook.replace("secret: base_url", "secret: hook_secret");
    parse(&fixed).unwrap_or_else(|p| panic!("{p:#?}"));
    // A polling-only key in a webhook trigger.
    let wrong = fixed.replace(
        "    name: Delivered\n",
        "    name: Delivered\n    seed: { from: now }\n",
    );
    let problems = parse(&wrong).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "/triggers/delivered/seed"),
        "{problems:#?}"
    );
}

#[test]
fn syntax_errors_name_their_line() {
    let problems = parse("declarative: \"0.1\"\nkey: [unclosed\nname: x\n").unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].message.starts_with("not valid YAML"),
        "{problems:?}"
    );
    assert!(problems[0].line >= 2, "{problems:?}");
    let problems = parse("{\n  \"key\": \"x\",\n  oops\n}").unwrap_err();
    assert_eq!(problems[0].line, 3, "{problems:?}");
}
