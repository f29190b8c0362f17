//! Field mappings and conditions over the trigger event and earlier steps'
//! outputs, with minijinja (Jinja2 syntax): `"{{ trigger.order.id }}"`,
//! `"Order {{ trigger.name }} is ready"`, `trigger.status == "packed"`.
//!
//! A string that is exactly one `{{ expression }}` keeps the expression's JSON
//! type (a number stays a number); any other string with `{{` or `{%` renders
//! to text; everything else is copied as is.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use minijinja::{Environment, Expression, UndefinedBehavior};
use serde_json::Value;

/// What one rendering or condition may spend, in minijinja's fuel units
/// (an instruction, or about 64 bytes allocated or written): roughly a
/// million instructions or 64 MB. Templates are written by tenants and run
/// in the host, so without a budget one loop or one `[0] * 100000000` holds
/// a worker for seconds and its memory for as long.
const FUEL: u64 = 1_000_000;

pub(crate) static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // A reference to a missing field is an error, not an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
});

/// Lone expressions (conditions, `{{ trigger.order.id }}` inputs), compiled
/// once: every run of a flow evaluates the same few texts, and compiling one
/// cost more than evaluating it.
static COMPILED: LazyLock<Compiled> = LazyLock::new(|| Compiled::new(4096));

/// A bounded cache of compiled expressions: past `max` distinct texts it
/// starts again empty (tenants' flows are many, the hot texts few).
struct Compiled {
    max: usize,
    map: Mutex<HashMap<String, Arc<Expression<'static, 'static>>>>,
}

impl Compiled {
    fn new(max: usize) -> Self {
        Compiled {
            max,
            map: Mutex::default(),
        }
    }

    /// `expr` compiled, from the cache when it has been seen. Errors are
    /// not kept: an expression that does not compile is refused when its
    /// flow is saved, so they are rare here.
    fn get(&self, expr: &str) -> Result<Arc<Expression<'static, 'static>>, minijinja::Error> {
        let map = || self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = map().get(expr) {
            return Ok(found.clone());
        }
        let fresh = Arc::new(ENV.compile_expression_owned(expr.to_string())?);
        let mut map = map();
        if map.len() >= self.max {
            map.clear();
        }
        map.insert(expr.to_string(), fresh.clone());
        Ok(fresh)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

pub(crate) fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

pub(crate) fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// The largest value one expression may produce, as JSON text.
const MAX_VALUE_BYTES: usize = 16 << 20;

/// The JSON of an expression's value, refused past [`MAX_VALUE_BYTES`].
/// minijinja repeats sequences lazily (`[0] * 100000000` costs nothing until
/// read, and its fuel does not count the reading), so the size is measured
/// first by writing into a counter that stops at the bound.
pub(crate) fn to_json(value: &minijinja::Value) -> Result<Value, String> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            if self.0 > MAX_VALUE_BYTES {
                return Err(std::io::Error::other("over the bound"));
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    match serde_json::to_writer(Counter(0), value) {
        Err(e) if e.is_io() => Err(format!(
            "the value is larger than {} MiB",
            MAX_VALUE_BYTES >> 20
        )),
        Err(e) => Err(e.to_string()),
        Ok(()) => serde_json::to_value(value).map_err(|e| e.to_string()),
    }
}

/// Renders every template inside `value` against `context`.
pub fn render(value: &Value, context: &Value) -> Result<Value, String> {
    render_at(value, context, "")
}

fn render_at(value: &Value, context: &Value, at: &str) -> Result<Value, String> {
    let place = |at: &str| {
        if at.is_empty() {
            "(root)".to_string()
        } else {
            at.to_string()
        }
    };
    match value {
        Value::String(text) if is_template(text) => {
            if let Some(expr) = single_expression(text) {
                let compiled = COMPILED
                    .get(expr)
                    .map_err(|e| format!("{}: {e}", place(at)))?;
                let out = compiled
                    .eval(minijinja::Value::from(minijinja::value::Serde(context)))
                    .map_err(|e| format!("{}: {e}", place(at)))?;
                if out.is_undefined() {
                    return Err(format!("{}: `{expr}` is undefined", place(at)));
                }
                to_json(&out).map_err(|e| format!("{}: {e}", place(at)))
            } else {
                let out = ENV
                    .render_str(
                        text,
                        minijinja::Value::from(minijinja::value::Serde(context)),
                    )
                    .map_err(|e| format!("{}: {e}", place(at)))?;
                Ok(Value::String(out))
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| render_at(v, context, &format!("{at}/{i}")))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), render_at(v, context, &format!("{at}/{k}"))?)))
            .collect::<Result<_, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Evaluates a condition; anything but a true boolean result is false.
pub fn condition(expr: &str, context: &Value) -> Result<bool, String> {
    let compiled = COMPILED.get(expr).map_err(|e| e.to_string())?;
    let out = compiled
        .eval(minijinja::Value::from(minijinja::value::Serde(context)))
        .map_err(|e| e.to_string())?;
    if out.is_undefined() {
        return Err(format!("`{expr}` is undefined"));
    }
    Ok(out.is_true())
}

/// Checks the syntax of every template in `value` and collects the names
/// they use (`trigger.order`, `steps.find`), each with the place it is used.
pub fn check(value: &Value, at: &str, roots: &mut Vec<(String, String)>) -> Result<(), String> {
    match value {
        Value::String(text) if is_template(text) => {
            let names = match single_expression(text) {
                Some(expr) => ENV
                    .compile_expression(expr)
                    .map_err(|e| format!("{at}: {e}"))?
                    .undeclared_variables(true),
                None => ENV
                    .template_from_str(text)
                    .map_err(|e| format!("{at}: {e}"))?
                    .undeclared_variables(true),
            };
            roots.extend(names.into_iter().map(|n| (n, at.to_string())));
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check(v, &format!("{at}/{i}"), roots)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check(v, &format!("{at}/{k}"), roots)),
        _ => Ok(()),
    }
}

/// The names a condition uses (`trigger.status`).
pub fn check_condition(expr: &str) -> Result<Vec<String>, String> {
    Ok(ENV
        .compile_expression(expr)
        .map_err(|e| e.to_string())?
        .undeclared_variables(true)
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiled_expressions_are_kept_and_bounded() {
        let cache = Compiled::new(2);
        let first = cache.get("trigger.n > 1").unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get("trigger.n > 1").unwrap()));
        // One compiled expression, evaluated against different contexts.
        let at = |n: i64| {
            let ctx = json!({"trigger": {"n": n}});
            first
                .eval(minijinja::Value::from(minijinja::value::Serde(&ctx)))
                .unwrap()
                .is_true()
        };
        assert!(at(2));
        assert!(!at(0));
        assert!(cache.get("trigger.n >").is_err());
        assert_eq!(cache.len(), 1, "an error is not kept");
        cache.get("trigger.m").unwrap();
        assert_eq!(cache.len(), 2);
        // Full: the cache starts again with the newcomer.
        cache.get("trigger.k").unwrap();
        assert_eq!(cache.len(), 1);
        assert!(!Arc::ptr_eq(&first, &cache.get("trigger.n > 1").unwrap()));
    }

    #[test]
    fn mappings() {
        let ctx = json!({
            "trigger": {"order": {"id": 1001, "name": "#1001", "tags": ["a", "b"]}, "status": "packed"},
            "steps": {"find": {"found": true, "item": {"sku": "W-1"}}}
        });
        let table = [
            (json!("Ready to ship"), Ok(json!("Ready to ship"))),
            (json!("{{ trigger.order.id }}"), Ok(json!(1001))),
            (json!(" {{trigger.order.id}} "), Ok(json!(1001))),
            (
                json!("Order {{ trigger.order.name }}"),
                Ok(json!("Order #1001")),
            ),
            (json!("{{ trigger.order.tags }}"), Ok(json!(["a", "b"]))),
            (json!("{{ steps.find.item.sku | lower }}"), Ok(json!("w-1"))),
            (json!("{{ trigger.order.id + 1 }}"), Ok(json!(1002))),
            (
                json!({"a": ["{{ trigger.status }}", 3]}),
                Ok(json!({"a": ["packed", 3]})),
            ),
            (
                json!("{% if steps.find.found %}yes{% endif %}"),
                Ok(json!("yes")),
            ),
            (json!("{{ trigger.missing.id }}"), Err("(root)")),
            (json!({"x": {"y": "{{ nope }}"}}), Err("/x/y")),
            (json!("{{ trigger.order.id"), Err("(root)")),
        ];
        for (input, expected) in table {
            match (render(&input, &ctx), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(e), Err(place)) => assert!(e.starts_with(place), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn conditions() {
        let ctx = json!({"trigger": {"status": "packed", "qty": 3}});
        let table = [
            (r#"trigger.status == "packed""#, Ok(true)),
            (r#"trigger.status == "shipped""#, Ok(false)),
            (
                r#"trigger.qty > 2 and trigger.status in ["packed", "shipped"]"#,
                Ok(true),
            ),
            ("trigger.qty", Ok(true)),
            ("trigger.nope == 1", Err(())),
            ("trigger.status ==", Err(())),
        ];
        for (expr, expected) in table {
            assert_eq!(condition(expr, &ctx).map_err(|_| ()), expected, "{expr}");
        }
    }

    #[test]
    fn work_is_bounded() {
        let ctx = json!({"trigger": {"items": [1, 2, 3]}});
        for (template, why) in [
            ("{{ [4] * 20000000 }}", "larger than 16 MiB"),
            ("{{ [[4] * 20000000] }}", "larger than 16 MiB"),
            ("{{ 'x' * 100000000 }}", "out of fuel"),
            (
                "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
                "out of fuel",
            ),
            ("{% set a = 'x' * 50000000 %}{{ a ~ a ~ a }}", "out of fuel"),
        ] {
            match render(&json!(template), &ctx) {
                Err(e) => assert!(e.contains(why), "{template}: {e}"),
                Ok(v) => panic!("{template}: rendered {} bytes", v.to_string().len()),
            }
        }
        // Ordinary mappings are far below the budget.
        let items = json!({"trigger": {"items": (0..1000).collect::<Vec<_>>()}});
        assert_eq!(
            render(&json!("{{ trigger.items | length }}"), &items),
            Ok(json!(1000))
        );
        assert_eq!(
            render(&json!("{{ trigger.items }}"), &items),
            Ok(items["trigger"]["items"].clone())
        );
    }

    #[test]
    fn references() {
        let mut roots = Vec::new();
        check(
            &json!({"a": "{{ trigger.x }}", "b": ["{{ steps.find.y }} and {{ env.Z }}"]}),
            "input",
            &mut roots,
        )
        .unwrap();
        let names: Vec<&str> = roots.iter().map(|(n, _)| n.as_str()).collect();
        for name in ["trigger.x", "steps.find.y", "env.Z"] {
            assert!(names.contains(&name), "{name} not in {roots:?}");
        }
        assert!(
            check(&json!("{{ oops"), "input/a", &mut roots)
                .unwrap_err()
                .starts_with("input/a")
        );
        assert_eq!(
            check_condition("trigger.a == 1").unwrap(),
            vec!["trigger.a".to_string()]
        );
    }
}
