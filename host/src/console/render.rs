//! Pages from templates: one minijinja environment, built once, with the
//! templates embedded in the binary and HTML autoescaping on (every value a
//! template prints is escaped unless a template says otherwise, and none
//! does for anything a user typed), the filters the pages share, and the
//! layout's context (who is signed in, the CSRF token, the current section).

use std::sync::LazyLock;

use axum::response::Html;
use minijinja::{Environment, Value as Ctx, context};
use serde_json::Value;

use super::{Member, PageError, assets};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("invite.html", include_str!("templates/invite.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("connectors.html", include_str!("templates/connectors.html")),
    ("connector.html", include_str!("templates/connector.html")),
    (
        "connections.html",
        include_str!("templates/connections.html"),
    ),
    (
        "connection_form.html",
        include_str!("templates/connection_form.html"),
    ),
    ("flows.html", include_str!("templates/flows.html")),
    ("flow.html", include_str!("templates/flow.html")),
    ("editor.html", include_str!("templates/editor.html")),
    (
        "editor_form.html",
        include_str!("templates/editor_form.html"),
    ),
    ("yaml.html", include_str!("templates/yaml.html")),
    (
        "test_result.html",
        include_str!("templates/test_result.html"),
    ),
    ("builder.html", include_str!("templates/builder.html")),
    (
        "builder_check.html",
        include_str!("templates/builder_check.html"),
    ),
    (
        "builder_selects.html",
        include_str!("templates/builder_selects.html"),
    ),
    (
        "builder_test.html",
        include_str!("templates/builder_test.html"),
    ),
    ("runs.html", include_str!("templates/runs.html")),
    ("run.html", include_str!("templates/run.html")),
    ("run_body.html", include_str!("templates/run_body.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("changes.html", include_str!("templates/changes.html")),
    ("topic.html", include_str!("templates/topic.html")),
    ("tenants.html", include_str!("templates/tenants.html")),
    ("users.html", include_str!("templates/users.html")),
    ("audit.html", include_str!("templates/audit.html")),
];

/// The largest JSON a page prints whole; larger values are cut, with a note.
const MAX_JSON: usize = 16 << 10;

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Escape by file name: every template here is `.html`.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            // A broken template is a bug caught by the tests that render it.
            tracing::error!("console template {name}: {e}");
        }
    }
    // Our own URLs: printed as they are (the escaper would write `/` as `&#x2f;`).
    env.add_function("asset", |name: String| {
        Ctx::from_safe_string(assets::url(&name))
    });
    env.add_filter("ms", |ms: Option<u64>| format_time(ms.map(|m| m as i64)));
    env.add_filter("secs", |s: Option<u64>| {
        format_time(s.map(|s| s as i64 * 1000))
    });
    env.add_filter("pretty", |value: Ctx| {
        pretty(&serde_json::to_value(&value).unwrap_or(Value::Null))
    });
    env.add_filter("rows", |value: Ctx| {
        let value = serde_json::to_value(&value).unwrap_or(Value::Null);
        Ctx::from(minijinja::value::Serde(rows(&value)))
    });
    env.add_filter("short", |text: String, n: Option<usize>| {
        let n = n.unwrap_or(60);
        if text.chars().count() > n {
            format!("{}…", text.chars().take(n).collect::<String>())
        } else {
            text
        }
    });
    env
});

/// `2026-12-03 11:29:15 UTC`, or a dash.
pub(super) fn format_time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".to_string())
}

/// A JSON object as (path, value) rows for a table: nested objects by
/// their dotted path, arrays of scalars joined; empty when the value is not
/// an object or has too many fields for a table (the page shows JSON then).
pub(super) fn rows(value: &Value) -> Vec<(String, String)> {
    /// A cell's text: long values end in an ellipsis (the JSON view under
    /// the table has them whole, up to [`MAX_JSON`]).
    fn cell(text: String) -> String {
        const MAX_CELL: usize = 300;
        if text.chars().count() > MAX_CELL {
            format!("{}…", text.chars().take(MAX_CELL).collect::<String>())
        } else {
            text
        }
    }
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, &p, out);
                }
            }
            Value::String(s) => out.push((path.to_string(), cell(s.clone()))),
            Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                // Joined only as far as a cell shows.
                let mut text = String::new();
                for item in items {
                    if text.len() > 400 {
                        break;
                    }
                    if !text.is_empty() {
                        text.push_str(", ");
                    }
                    match item.as_str() {
                        Some(s) => text.push_str(s),
                        None => text.push_str(&item.to_string()),
                    }
                }
                out.push((path.to_string(), cell(text)));
            }
            other => out.push((path.to_string(), cell(other.to_string()))),
        }
    }
    let mut out = Vec::new();
    if value.as_object().is_some_and(|m| !m.is_empty()) {
        walk(value, "", &mut out);
    }
    if out.len() > 80 {
        out.clear();
    }
    out
}

/// Indented JSON, cut at [`MAX_JSON`] bytes so a large payload cannot make
/// a page slow.
pub(super) fn pretty(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if text.len() <= MAX_JSON {
        return text;
    }
    let mut cut = MAX_JSON;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n… (cut here: {} KiB in all; the API has the whole value)",
        &text[..cut],
        text.len() >> 10
    )
}

/// Renders a template on its own (an htmx fragment, the sign-in page).
pub(super) fn fragment(template: &str, ctx: Ctx) -> Result<Html<String>, PageError> {
    let tmpl = ENV
        .get_template(template)
        .map_err(|e| PageError::internal(format!("template {template}: {e}")))?;
    tmpl.render(ctx)
        .map(Html)
        .map_err(|e| PageError::internal(format!("rendering {template}: {e:#}")))
}

/// Renders a page in the layout, for a signed-in member.
pub(super) fn page(
    member: &Member,
    nav: &str,
    template: &str,
    ctx: Ctx,
) -> Result<Html<String>, PageError> {
    fragment(template, context! { ..ctx, ..layout(member, nav) })
}

/// What the layout shows of the person signed in.
pub(super) fn layout(member: &Member, nav: &str) -> Ctx {
    let p = &member.principal;
    ctx! {
        nav => nav,
        csrf => member.csrf,
        me => ctx! {
            actor => p.actor(),
            role => if p.is_operator() { "operator" } else { p.role().as_str() },
            tenant => member.tenant_name,
            operator => p.is_operator(),
            can_write => p.can_write(),
            owner => p.can_manage_users(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(ENV.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn large_values_are_cut() {
        let big = Value::String("x".repeat(100_000));
        let text = pretty(&big);
        assert!(text.len() < 20_000, "{}", text.len());
        assert!(text.contains("cut here"));
        assert_eq!(pretty(&serde_json::json!({"a": 1})), "{\n  \"a\": 1\n}");
    }

    #[test]
    fn table_cells_of_large_values_are_cut() {
        let value = serde_json::json!({
            "note": "n".repeat(10_000),
            "skus": (0..100_000).collect::<Vec<u32>>(),
            "tags": ["a", "b"],
            "order": {"id": 7, "lines": [{"sku": "X"}]},
        });
        let rows = rows(&value);
        let cell = |path: &str| {
            rows.iter()
                .find(|(p, _)| p == path)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(cell("note").chars().count(), 301);
        assert!(cell("note").ends_with('…'));
        assert!(cell("skus").starts_with("0, 1, 2, ") && cell("skus").ends_with('…'));
        assert!(cell("skus").chars().count() <= 301);
        assert_eq!(cell("tags"), "a, b");
        assert_eq!(cell("order.id"), "7");
        assert_eq!(cell("order.lines"), "[{\"sku\":\"X\"}]");
        // Too many fields for a table: none (the page shows JSON).
        let wide: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("f{i}"), Value::from(i)))
            .collect();
        assert!(super::rows(&Value::Object(wide)).is_empty());
    }

    #[test]
    fn templates_escape_what_they_print() {
        let html = fragment(
            "error.html",
            ctx! { status => 400, title => "<script>x</script>", message => "a & b" },
        )
        .unwrap()
        .0;
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
