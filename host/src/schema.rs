//! JSON Schema checks of values against the schemas plugins declare (action
//! inputs, trigger params, connection properties), with every problem named
//! by its place. Validators are compiled once per schema and cached.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use serde_json::Value;

/// Compiled validators by schema text: schemas come from manifests, so there
/// are few of them, and compiling one costs far more than using it.
static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
    LazyLock::new(Default::default);

const MAX_CACHED_VALIDATORS: usize = 4096;

fn validator(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    let key = schema.to_string();
    let mut cache = VALIDATORS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let compiled = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
    if cache.len() >= MAX_CACHED_VALIDATORS {
        cache.clear();
    }
    cache.insert(key, compiled.clone());
    Ok(compiled)
}

/// Why a value was refused by a schema, named after `what` it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The value does not satisfy the schema: every problem with its place.
    #[error("{what} is invalid: {}", problems.join("; "))]
    Invalid { what: String, problems: Vec<String> },
    /// The plugin's schema itself cannot be compiled.
    #[error("{what}: the plugin's schema is unusable: {message}")]
    Unusable { what: String, message: String },
}

/// Validates `value` against a JSON Schema from a manifest, naming the place.
pub fn check_against(schema: &Value, value: &Value, what: &str) -> Result<(), SchemaError> {
    let validator = validator(schema).map_err(|message| SchemaError::Unusable {
        what: what.to_string(),
        message,
    })?;
    if validator.is_valid(value) {
        return Ok(());
    }
    let problems: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "(root)".into() } else { at };
            format!("{at}: {e}")
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Invalid {
            what: what.to_string(),
            problems,
        })
    }
}

/// A JSON Schema that every one of `samples` satisfies, as tight as they
/// allow: types merged, object properties with those present in every
/// sample required, array items merged, RFC 3339 strings marked
/// `date-time`. What a live test of a spec returns beside its records.
pub fn infer(samples: &[Value]) -> Value {
    let mut schema: Option<Value> = None;
    for sample in samples {
        let one = of(sample);
        schema = Some(match schema {
            None => one,
            Some(s) => merge(s, one),
        });
    }
    schema.unwrap_or_else(|| serde_json::json!({}))
}

fn of(value: &Value) -> Value {
    use serde_json::json;
    match value {
        Value::Null => json!({"type": "null"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            json!({"type": "string", "format": "date-time"})
        }
        Value::String(_) => json!({"type": "string"}),
        Value::Array(items) => {
            let mut schema = json!({"type": "array"});
            if !items.is_empty() {
                schema["items"] = infer(items);
            }
            schema
        }
        Value::Object(map) => json!({
            "type": "object",
            "properties": map.iter().map(|(k, v)| (k.clone(), of(v))).collect::<serde_json::Map<_, _>>(),
            "required": map.keys().collect::<Vec<_>>(),
        }),
    }
}

fn merge(a: Value, b: Value) -> Value {
    use serde_json::json;
    let type_of = |s: &Value| s["type"].as_str().map(str::to_string);
    match (type_of(&a), type_of(&b)) {
        (Some(x), Some(y)) if x == y && x == "object" => {
            let (pa, pb) = (&a["properties"], &b["properties"]);
            let mut properties = serde_json::Map::new();
            let keys: std::collections::BTreeSet<&String> = pa
                .as_object()
                .into_iter()
                .chain(pb.as_object())
                .flat_map(|m| m.keys())
                .collect();
            for key in keys {
                let merged = match (pa.get(key), pb.get(key)) {
                    (Some(x), Some(y)) => merge(x.clone(), y.clone()),
                    (Some(x), None) | (None, Some(x)) => x.clone(),
                    (None, None) => continue,
                };
                properties.insert(key.clone(), merged);
            }
            let required: Vec<&Value> = a["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|k| b["required"].as_array().is_some_and(|r| r.contains(k)))
                .collect();
            json!({"type": "object", "properties": properties, "required": required})
        }
        (Some(x), Some(y)) if x == y && x == "array" => match (a.get("items"), b.get("items")) {
            (Some(i), Some(j)) => json!({"type": "array", "items": merge(i.clone(), j.clone())}),
            (Some(i), None) | (None, Some(i)) => json!({"type": "array", "items": i}),
            (None, None) => json!({"type": "array"}),
        },
        (Some(x), Some(y)) if x == y => {
            if a == b {
                a
            } else {
                json!({"type": x})
            }
        }
        (Some(x), Some(y))
            if [x.as_str(), y.as_str()] == ["integer", "number"]
                || [x.as_str(), y.as_str()] == ["number", "integer"] =>
        {
            json!({"type": "number"})
        }
        _ => {
            let mut types: Vec<Value> = Vec::new();
            for s in [&a, &b] {
                match &s["type"] {
                    Value::Array(list) => types.extend(list.iter().cloned()),
                    Value::String(t) => types.push(json!(t)),
                    _ => {}
                }
            }
            types.sort_by_key(|t| t.to_string());
            types.dedup();
            json!({"type": types})
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inferred_schemas_fit_their_samples() {
        let samples = vec![
            json!({"id": 1, "at": "2025-01-01T00:00:00Z", "tags": ["a"], "total": "9.50", "note": null}),
            json!({"id": 2, "at": "2025-01-02T00:00:00Z", "tags": [], "total": 3, "extra": true}),
        ];
        let schema = infer(&samples);
        assert_eq!(schema["type"], json!("object"));
        assert_eq!(schema["required"], json!(["at", "id", "tags", "total"]));
        assert_eq!(schema["properties"]["id"], json!({"type": "integer"}));
        assert_eq!(schema["properties"]["at"]["format"], json!("date-time"));
        assert_eq!(
            schema["properties"]["tags"]["items"],
            json!({"type": "string"})
        );
        assert_eq!(
            schema["properties"]["total"]["type"],
            json!(["integer", "string"])
        );
        for sample in &samples {
            assert_eq!(check_against(&schema, sample, "sample"), Ok(()));
        }
        assert_eq!(infer(&[]), json!({}));
    }

    #[test]
    fn problems_are_named_by_their_place() {
        let schema = json!({
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}
        });
        assert_eq!(
            check_against(&schema, &json!({"id": "a", "n": 3}), "input"),
            Ok(())
        );
        let Err(SchemaError::Invalid { what, problems }) =
            check_against(&schema, &json!({"n": "x"}), "input")
        else {
            panic!("an invalid value must be refused");
        };
        assert_eq!(what, "input");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with("/n:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("(root):")),
            "{problems:?}"
        );
        assert!(matches!(
            check_against(&json!({"type": 5}), &json!(1), "x"),
            Err(SchemaError::Unusable { .. })
        ));
    }
}
