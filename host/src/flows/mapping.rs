//! Mappings compiled once and rendered many times: a record job maps every
//! record of a file with the same templates, so each `{{ expression }}` is
//! compiled when the job starts, and the context is built from minijinja
//! values that are shared, not converted again, for every record. Same
//! language and rules as [`super::template`] (a lone expression keeps its
//! JSON type; text templates render to text; fuel and size bounds apply).

use minijinja::Expression;
use serde_json::{Map, Value};

use super::template::{ENV, is_template, single_expression, to_json};

/// A template tree, compiled.
pub struct Mapping {
    root: Node,
}

enum Node {
    Literal(Value),
    Expression {
        compiled: Expression<'static, 'static>,
        source: String,
        at: String,
    },
    Text {
        source: String,
        at: String,
    },
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Mapping {
    /// Compiles every template in `value`; errors name the place.
    pub fn compile(value: &Value) -> Result<Mapping, String> {
        Ok(Mapping {
            root: compile(value, "")?,
        })
    }

    /// Renders against a context of minijinja values (see [`context`]).
    pub fn render(&self, context: &minijinja::Value) -> Result<Value, String> {
        render(&self.root, context)
    }
}

fn place(at: &str) -> String {
    if at.is_empty() {
        "(root)".to_string()
    } else {
        at.to_string()
    }
}

fn compile(value: &Value, at: &str) -> Result<Node, String> {
    Ok(match value {
        Value::String(text) if is_template(text) => match single_expression(text) {
            Some(expr) => Node::Expression {
                compiled: ENV
                    .compile_expression_owned(expr.to_string())
                    .map_err(|e| format!("{}: {e}", place(at)))?,
                source: expr.to_string(),
                at: at.to_string(),
            },
            None => {
                ENV.template_from_str(text)
                    .map_err(|e| format!("{}: {e}", place(at)))?;
                Node::Text {
                    source: text.clone(),
                    at: at.to_string(),
                }
            }
        },
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| compile(v, &format!("{at}/{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile(v, &format!("{at}/{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

fn render(node: &Node, context: &minijinja::Value) -> Result<Value, String> {
    match node {
        Node::Literal(value) => Ok(value.clone()),
        Node::Expression {
            compiled,
            source,
            at,
        } => {
            let out = compiled
                .eval(context.clone())
                .map_err(|e| format!("{}: {e}", place(at)))?;
            if out.is_undefined() {
                return Err(format!("{}: `{source}` is undefined", place(at)));
            }
            to_json(&out).map_err(|e| format!("{}: {e}", place(at)))
        }
        Node::Text { source, at } => ENV
            .render_str(source, context.clone())
            .map(Value::String)
            .map_err(|e| format!("{}: {e}", place(at))),
        Node::Array(items) => items
            .iter()
            .map(|n| render(n, context))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Node::Object(fields) => fields
            .iter()
            .map(|(k, n)| Ok((k.clone(), render(n, context)?)))
            .collect::<Result<Map<_, _>, String>>()
            .map(Value::Object),
    }
}

/// A minijinja value of JSON, made once and shared by many renderings.
pub fn shared(value: &Value) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// A rendering context from named minijinja values.
pub fn context<'a>(
    pairs: impl IntoIterator<Item = (&'a str, minijinja::Value)>,
) -> minijinja::Value {
    minijinja::Value::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_string(), v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_compiled_mapping_renders_like_a_template() {
        let mapping = Mapping::compile(&json!({
            "sku": "{{ record.SKU | upper }}",
            "qty": "{{ record.Qty | int }}",
            "note": "Row {{ index }} of {{ trigger.name }}",
            "fixed": 3,
            "list": ["{{ record.SKU }}", true]
        }))
        .unwrap();
        let trigger = shared(&json!({"name": "a.csv"}));
        for (i, (sku, qty)) in [("w-1", "2"), ("w-2", "10")].into_iter().enumerate() {
            let ctx = context([
                ("record", shared(&json!({"SKU": sku, "Qty": qty}))),
                ("index", minijinja::Value::from(i)),
                ("trigger", trigger.clone()),
            ]);
            let out = mapping.render(&ctx).unwrap();
            assert_eq!(
                out,
                json!({
                    "sku": sku.to_uppercase(),
                    "qty": qty.parse::<i64>().unwrap(),
                    "note": format!("Row {i} of a.csv"),
                    "fixed": 3,
                    "list": [sku, true]
                })
            );
        }
        let ctx = context([("record", shared(&json!({})))]);
        let err = mapping.render(&ctx).unwrap_err();
        assert!(err.starts_with("/"), "{err}");
        assert!(
            Mapping::compile(&json!({"a": "{{ oops"}))
                .err()
                .unwrap()
                .starts_with("/a")
        );
    }
}
