//! Templates and expressions of a spec, with minijinja: the flows' language.
//!
//! A string that is exactly one `{{ expression }}` keeps the expression's
//! JSON type and may be undefined (a query parameter is then left out);
//! any other string with `{{` or `{%` renders to text; everything else is
//! copied as it is. Undefined values are false in conditions (minijinja's
//! semi-strict mode), so `params.statuses` can be tested for presence, and
//! a condition that compares or reads into an undefined value is false.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, value::Serde};
use serde_json::Value;
use switchyard_sdk::{Error, http::percent_encode};

/// What one rendering may spend, as in flows: about a million
/// instructions or 64 MB.
const FUEL: u64 = 1_000_000;

/// The template environment, and the values a template can see.
pub(crate) struct Templates {
    env: Environment<'static>,
}

/// The names in scope: a map merged over its parent without copying.
#[derive(Clone)]
pub(crate) struct Scope(minijinja::Value);

impl Scope {
    /// A scope of these JSON values.
    pub(crate) fn new(values: BTreeMap<&str, Value>) -> Self {
        let map: BTreeMap<String, minijinja::Value> = values
            .into_iter()
            .map(|(k, v)| (k.to_string(), minijinja::Value::from(Serde(&v))))
            .collect();
        Scope(minijinja::Value::from(map))
    }

    /// This scope with `name` set (over any outer `name`).
    pub(crate) fn with(&self, name: &str, value: &Value) -> Self {
        self.with_value(name, minijinja::Value::from(Serde(value)))
    }

    fn with_value(&self, name: &str, value: minijinja::Value) -> Self {
        let mut map = BTreeMap::new();
        map.insert(name.to_string(), value);
        Scope(minijinja::value::merge_maps([
            minijinja::Value::from(map),
            self.0.clone(),
        ]))
    }
}

fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

impl Templates {
    pub(crate) fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL));
        // One path segment: `/` and everything but unreserved characters
        // percent-encoded (minijinja's own `urlencode` keeps `/`).
        env.add_filter("segment", |text: String| percent_encode(&text));
        env.add_filter("urlencode", |text: String| percent_encode(&text));
        Templates { env }
    }

    /// Renders every template in `value`; `None` when `value` is a lone
    /// expression whose value is undefined.
    pub(crate) fn render(
        &self,
        value: &Value,
        scope: &Scope,
        at: &str,
    ) -> Result<Option<Value>, Error> {
        match value {
            Value::String(text) if is_template(text) => {
                if let Some(expr) = single_expression(text) {
                    let out = self
                        .env
                        .compile_expression(expr)
                        .and_then(|e| e.eval(scope.0.clone()))
                        .map_err(|e| template_error(at, &e))?;
                    if out.is_undefined() {
                        return Ok(None);
                    }
                    serde_json::to_value(&out)
                        .map(Some)
                        .map_err(|e| Error::invalid_input(format!("{at}: {e}")))
                } else {
                    self.env
                        .render_str(text, scope.0.clone())
                        .map(|s| Some(Value::String(s)))
                        .map_err(|e| template_error(at, &e))
                }
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(
                        self.render(item, scope, &format!("{at}/{i}"))?
                            .unwrap_or(Value::Null),
                    );
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (key, item) in map {
                    if let Some(v) = self.render(item, scope, &format!("{at}/{key}"))? {
                        out.insert(key.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    /// Renders a template that must have a value.
    pub(crate) fn value(&self, value: &Value, scope: &Scope, at: &str) -> Result<Value, Error> {
        self.render(value, scope, at)?
            .ok_or_else(|| Error::invalid_input(format!("{at}: the template's value is undefined")))
    }

    /// Renders a template string to text (a value that is not a string is
    /// written as JSON; undefined and null are `None`).
    pub(crate) fn text(
        &self,
        template: &str,
        scope: &Scope,
        at: &str,
    ) -> Result<Option<String>, Error> {
        Ok(
            match self.render(&Value::String(template.to_string()), scope, at)? {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(other) => Some(other.to_string()),
            },
        )
    }

    /// Evaluates a condition: anything but a true value is false, and so is
    /// a condition that reads what the data does not have
    /// (`response.body.success == false` on a body without `success`).
    pub(crate) fn holds(&self, expr: &str, scope: &Scope, at: &str) -> Result<bool, Error> {
        let expression = self
            .env
            .compile_expression(expr)
            .map_err(|e| template_error(at, &e))?;
        match expression.eval(scope.0.clone()) {
            Ok(out) => Ok(!out.is_undefined() && out.is_true()),
            Err(e) if e.kind() == minijinja::ErrorKind::UndefinedError => Ok(false),
            Err(e) => Err(template_error(at, &e)),
        }
    }
}

/// A template failed at run time: the spec or the data is at fault, not
/// something a retry fixes.
fn template_error(at: &str, error: &minijinja::Error) -> Error {
    let mut text = format!("{at}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Error::invalid_input(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_on_missing_data_are_false() {
        let templates = Templates::new();
        let scope = Scope::new(BTreeMap::from([
            ("response", json!({"status": 200, "body": {"ok": 1}})),
            ("params", json!({})),
        ]));
        let table = [
            ("response.body.success == false", false),
            ("response.body.ok == 1", true),
            (
                "response.status == 200 and response.body.error is not defined",
                true,
            ),
            ("params.statuses", false),
            ("not params.statuses", true),
            ("response.body.missing.deeper == 'x'", false),
        ];
        for (expr, expected) in table {
            assert_eq!(
                templates.holds(expr, &scope, "t").unwrap(),
                expected,
                "{expr}"
            );
        }
        // What is wrong with the expression itself is still an error.
        assert!(templates.holds("response.status ==", &scope, "t").is_err());
        assert!(
            templates
                .holds("response.status + 'a'", &scope, "t")
                .is_err()
        );
    }
}
