//! Forms generated from a plugin's JSON Schemas: a field per property with
//! its type, whether it is required, its choices (`enum`), default and
//! description; and the way back from the submitted text to JSON values,
//! with every problem placed at its field. Values may be templates
//! (`{{ trigger.id }}`) where a field takes data from a flow's run, so a
//! field that holds one keeps it as text whatever its type.

use serde::Serialize;
use serde_json::{Map, Value};

/// One field of a generated form.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Field {
    /// The form field's name, e.g. `props.shop` or `step.0.input.order_id`.
    pub name: String,
    /// The HTML id (the name with dots as dashes).
    pub id: String,
    pub key: String,
    pub label: String,
    pub description: String,
    /// `text`, `number`, `boolean`, `select`, `list`, `json`, `secret`,
    /// `object` (with `children`).
    pub kind: &'static str,
    pub required: bool,
    pub options: Vec<String>,
    /// The current value as the input shows it (never a secret's).
    pub value: String,
    /// The default, shown as the placeholder.
    pub placeholder: String,
    pub error: Option<String>,
    pub children: Vec<Field>,
    /// Whether the data picker may insert into it.
    pub picker: bool,
    /// A secret that is stored (its value is never shown).
    pub is_set: bool,
}

/// `order_id` → `Order id`.
pub(super) fn humanise(key: &str) -> String {
    let text = key.replace(['_', '-'], " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub(super) fn html_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A schema with the members of its `allOf` merged in (their keys where
/// the schema has none), which is how manifests share definitions
/// (`{"description": "...", "allOf": [tag_list]}`).
pub(super) fn effective(schema: &Value) -> Value {
    let mut out = schema.clone();
    if let (Some(map), Some(members)) = (out.as_object_mut(), schema["allOf"].as_array()) {
        for member in members.iter().filter_map(Value::as_object) {
            for (k, v) in member {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        map.remove("allOf");
    }
    out
}

fn type_of(schema: &Value) -> &str {
    match &schema["type"] {
        Value::String(t) => t,
        // `["string", "null"]`: the first that is not null.
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ if schema["properties"].is_object() => "object",
        _ if schema["enum"].is_array() => "string",
        // An `anyOf`/`oneOf` or no type at all: JSON text.
        _ => "any",
    }
}

/// The text an input shows for a value.
pub(super) fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// The fields of an object schema's properties, filled from `values`:
/// required ones first, then in name order.
pub(super) fn object_fields(
    schema: &Value,
    prefix: &str,
    values: &Value,
    picker: bool,
) -> Vec<Field> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = properties.keys().collect();
    keys.sort_by_key(|k| (!required.contains(&k.as_str()), k.to_string()));
    keys.into_iter()
        .map(|key| {
            field(
                &properties[key],
                &format!("{prefix}.{key}"),
                key,
                required.contains(&key.as_str()),
                &values[key],
                picker,
            )
        })
        .collect()
}

/// One field for a property schema.
pub(super) fn field(
    schema: &Value,
    name: &str,
    key: &str,
    required: bool,
    value: &Value,
    picker: bool,
) -> Field {
    let schema = &effective(schema);
    let options: Vec<String> = schema["enum"]
        .as_array()
        .map(|e| e.iter().map(as_text).collect())
        .unwrap_or_default();
    let kind = match type_of(schema) {
        _ if !options.is_empty() => "select",
        "integer" | "number" => "number",
        "boolean" => "boolean",
        "array" if !matches!(type_of(&schema["items"]), "object" | "array" | "any") => "list",
        "object" if schema["properties"].is_object() && !is_template(value) => "object",
        "string" => "text",
        _ => "json",
    };
    let children = if kind == "object" {
        object_fields(schema, name, value, picker)
    } else {
        Vec::new()
    };
    let description = schema["description"].as_str().unwrap_or("").to_string();
    Field {
        name: name.to_string(),
        id: html_id(name),
        key: key.to_string(),
        label: schema["title"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| humanise(key)),
        description,
        kind,
        required,
        options,
        value: if kind == "object" {
            String::new()
        } else {
            as_text(value)
        },
        placeholder: schema
            .get("default")
            .map(as_text)
            .or_else(|| schema["format"].as_str().map(str::to_string))
            .unwrap_or_default(),
        error: None,
        children,
        picker,
        is_set: false,
    }
}

/// Whether a text is (or holds) a template.
pub(super) fn is_template(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.contains("{{") || s.contains("{%"))
}

/// The value a field's text stands for under its schema: `None` when the
/// field is empty. Text with a template stays text (it is rendered when
/// the flow runs); a number that is not one is an error at the field.
pub(super) fn parse_value(schema: &Value, text: &str) -> Result<Option<Value>, String> {
    let schema = &effective(schema);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.contains("{{") || trimmed.contains("{%") {
        // A list may hold one template per line.
        if type_of(schema) == "array" && trimmed.lines().count() > 1 {
            return Ok(Some(Value::Array(
                trimmed
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Value::String(l.to_string()))
                    .collect(),
            )));
        }
        return Ok(Some(Value::String(text.to_string())));
    }
    let has_enum = schema["enum"].is_array();
    match type_of(schema) {
        "integer" => trimmed
            .parse::<i64>()
            .map(|n| Some(Value::from(n)))
            .map_err(|_| format!("`{trimmed}` is not a whole number")),
        "number" => trimmed
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| format!("`{trimmed}` is not a number")),
        "boolean" => match trimmed {
            "true" => Ok(Some(Value::Bool(true))),
            "false" => Ok(Some(Value::Bool(false))),
            other => Err(format!("`{other}` is neither true nor false")),
        },
        "array" if !matches!(type_of(&schema["items"]), "object" | "array" | "any") => {
            let items: Result<Vec<Value>, String> = trimmed
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| parse_value(&schema["items"], l).map(|v| v.unwrap_or(Value::Null)))
                .collect();
            items.map(|i| Some(Value::Array(i)))
        }
        "string" => Ok(Some(Value::String(text.to_string()))),
        _ if has_enum => Ok(Some(Value::String(text.to_string()))),
        _ => serde_json::from_str(trimmed)
            .map(Some)
            .map_err(|e| format!("not valid JSON: {e}")),
    }
}

/// Reads an object schema's fields back from a submitted form: the value,
/// and the problems by field name. Keys of `previous` that the schema does
/// not list are kept.
pub(super) fn collect(
    schema: &Value,
    prefix: &str,
    form: &[(String, String)],
    previous: &Value,
) -> (Value, Vec<(String, String)>) {
    let mut out = previous.as_object().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let Some(properties) = schema["properties"].as_object() else {
        return (Value::Object(out), problems);
    };
    for (key, sub) in properties {
        let sub = &effective(sub);
        let name = format!("{prefix}.{key}");
        let nested = type_of(sub) == "object"
            && sub["properties"].is_object()
            && !form.iter().any(|(k, _)| *k == name);
        if nested {
            let (value, more) = collect(sub, &name, form, &previous[key]);
            problems.extend(more);
            if value.as_object().is_some_and(|o| !o.is_empty()) {
                out.insert(key.clone(), value);
            } else {
                out.remove(key);
            }
            continue;
        }
        let Some(text) = super::field(form, &name) else {
            continue;
        };
        match parse_value(sub, text) {
            Ok(Some(value)) => {
                out.insert(key.clone(), value);
            }
            Ok(None) => {
                out.remove(key);
            }
            Err(problem) => {
                // Kept as typed, so the draft shows it; publishing refuses it.
                out.insert(key.clone(), Value::String(text.to_string()));
                problems.push((name, problem));
            }
        }
    }
    (Value::Object(out), problems)
}

/// Puts each problem on the field it names (by form name).
pub(super) fn place(fields: &mut [Field], problems: &[(String, String)]) -> Vec<String> {
    let mut unplaced = Vec::new();
    for (name, problem) in problems {
        if !place_one(fields, name, problem) {
            unplaced.push(problem.clone());
        }
    }
    unplaced
}

fn place_one(fields: &mut [Field], name: &str, problem: &str) -> bool {
    for f in fields.iter_mut() {
        if f.name == name {
            f.error = Some(match &f.error {
                Some(e) => format!("{e}; {problem}"),
                None => problem.to_string(),
            });
            return true;
        }
        if name.starts_with(&format!("{}.", f.name)) && place_one(&mut f.children, name, problem) {
            return true;
        }
    }
    false
}

/// An example value of a schema, for a sample event when none was seen.
pub(super) fn example(schema: &Value, depth: usize) -> Value {
    if depth > 6 {
        return Value::Null;
    }
    if let Some(first) = schema["examples"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(default) = schema.get("default") {
        return default.clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match type_of(schema) {
        "object" => Value::Object(
            schema["properties"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .map(|(k, s)| (k.clone(), example(s, depth + 1)))
                        .collect::<Map<_, _>>()
                })
                .unwrap_or_default(),
        ),
        "array" => Value::Array(vec![example(&schema["items"], depth + 1)]),
        "integer" | "number" => Value::from(0),
        "boolean" => Value::Bool(false),
        "string" => Value::String(String::new()),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["order_id"],
            "properties": {
                "order_id": {"type": ["string", "integer"], "description": "The order"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "count": {"type": "integer", "default": 1},
                "notify": {"type": "boolean"},
                "status": {"type": "string", "enum": ["open", "closed"]},
                "address": {"type": "object", "properties": {"city": {"type": "string"}}},
                "extra": {},
                "shared": {"description": "Tags", "allOf": [{"type": "array", "items": {"type": "string"}}]}
            }
        })
    }

    #[test]
    fn fields_follow_the_schema() {
        let fields = object_fields(&schema(), "in", &json!({"tags": ["a", "b"]}), true);
        let kinds: Vec<(&str, &str, bool)> = fields
            .iter()
            .map(|f| (f.key.as_str(), f.kind, f.required))
            .collect();
        assert_eq!(
            kinds,
            [
                ("order_id", "text", true),
                ("address", "object", false),
                ("count", "number", false),
                ("extra", "json", false),
                ("notify", "boolean", false),
                ("shared", "list", false),
                ("status", "select", false),
                ("tags", "list", false),
            ]
        );
        assert_eq!(fields[2].placeholder, "1");
        assert_eq!(fields[7].value, "a\nb");
        assert_eq!(fields[5].description, "Tags");
        assert_eq!(fields[1].children[0].name, "in.address.city");
        assert_eq!(fields[0].description, "The order");
    }

    #[test]
    fn text_becomes_typed_values_or_placed_problems() {
        let s = schema();
        type Row<'a> = (&'a str, &'a str, Result<Option<Value>, ()>);
        let table: &[Row] = &[
            ("count", "7", Ok(Some(json!(7)))),
            ("count", "seven", Err(())),
            (
                "count",
                "{{ trigger.n }}",
                Ok(Some(json!("{{ trigger.n }}"))),
            ),
            ("count", "  ", Ok(None)),
            ("notify", "true", Ok(Some(json!(true)))),
            ("notify", "yes", Err(())),
            (
                "tags",
                "Ready to ship\nvip\n",
                Ok(Some(json!(["Ready to ship", "vip"]))),
            ),
            ("extra", "{\"a\": 1}", Ok(Some(json!({"a": 1})))),
            ("extra", "{oops", Err(())),
            ("status", "open", Ok(Some(json!("open")))),
        ];
        for (key, text, expected) in table {
            let got = parse_value(&s["properties"][key], text).map_err(|_| ());
            assert_eq!(&got, expected, "{key} {text:?}");
        }
        let form = vec![
            ("in.order_id".to_string(), "{{ trigger.id }}".to_string()),
            ("in.count".to_string(), "x".to_string()),
            ("in.address.city".to_string(), "Pune".to_string()),
            ("in.tags".to_string(), String::new()),
        ];
        let (value, problems) = collect(&s, "in", &form, &json!({"tags": ["old"], "kept": 1}));
        assert_eq!(
            value,
            json!({"order_id": "{{ trigger.id }}", "count": "x", "address": {"city": "Pune"}, "kept": 1})
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "in.count");
        let mut fields = object_fields(&s, "in", &value, false);
        assert!(place(&mut fields, &problems).is_empty());
        assert!(fields.iter().any(|f| f.key == "count" && f.error.is_some()));
    }

    #[test]
    fn examples_have_the_schema_shape() {
        assert_eq!(example(&schema(), 0)["address"], json!({"city": ""}));
        assert_eq!(example(&schema(), 0)["status"], json!("open"));
    }
}
