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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
