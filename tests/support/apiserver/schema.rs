//! The part of a CRD's structural schema a kube-apiserver enforces on writes: types, `required`,
//! `enum`, `default`, and pruning of unknown fields (reported as warnings, or as a 400 under
//! `fieldValidation=Strict`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub causes: Vec<Cause>,
    /// Paths of fields the schema does not know (pruned from the object).
    pub unknown: Vec<String>,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Validate `value` at `path` against `schema`, pruning unknown fields in place.
pub fn validate(schema: &Value, value: &mut Value, path: &str, out: &mut Outcome) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            let shown = match value {
                Value::String(_) => "\"string\"".to_string(),
                other => format!("\"{}\"", type_name(other)),
            };
            out.causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                message: format!(
                    "Invalid value: {shown}: {path} in body must be of type {expected}: {shown}"
                ),
                field: path.to_string(),
            });
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        out.causes.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                value,
                list.join(", ")
            ),
            field: path.to_string(),
        });
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            // Defaults apply when the field is absent, as kube-apiserver applies them on decode.
            for (key, child_schema) in properties.into_iter().flatten() {
                if !map.contains_key(key)
                    && let Some(default) = child_schema.get("default")
                {
                    map.insert(key.clone(), default.clone());
                }
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let child_schema = properties
                    .and_then(|p| p.get(&key))
                    .or(additional.filter(|a| a.is_object()));
                match child_schema {
                    Some(child_schema) => {
                        if let Some(child) = map.get_mut(&key) {
                            validate(child_schema, child, &child_path, out);
                        }
                    }
                    None if preserve || (properties.is_none() && additional.is_none()) => {}
                    None => {
                        out.unknown.push(child_path);
                        map.remove(&key);
                    }
                }
            }
            // After the fields' own errors, as kube-apiserver lists them.
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name) {
                        out.causes.push(Cause {
                            reason: "FieldValueRequired",
                            message: "Required value".into(),
                            field: join(path, name),
                        });
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}
