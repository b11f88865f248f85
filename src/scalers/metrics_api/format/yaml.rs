//! `yaml`: a dot path through maps and lists.

use super::{FormatError, quantity_value};

fn scalar(path: &str, v: &serde_yaml::Value) -> Result<f64, FormatError> {
    use serde_yaml::Value;
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| FormatError::OutOfRange {
            path: path.to_string(),
            number: n.to_string(),
        }),
        Value::String(s) => quantity_value(s),
        Value::Tagged(t) => scalar(path, &t.value),
        Value::Null => Err(FormatError::wrong_type(path, "null")),
        Value::Bool(_) => Err(FormatError::wrong_type(path, "bool")),
        Value::Sequence(_) => Err(FormatError::wrong_type(path, "list")),
        Value::Mapping(_) => Err(FormatError::wrong_type(path, "map")),
    }
}

/// A dot path through maps and lists (list indices as keys); walking stops at the first scalar,
/// so extra segments after it are ignored, as in KEDA.
pub(super) fn value(body: &[u8], path: &str) -> Result<f64, FormatError> {
    use serde_yaml::Value;
    let doc: Value = serde_yaml::from_slice(body).map_err(|e| FormatError::unparsable("yaml", e))?;
    let mut cur = &doc;
    for seg in path.split('.') {
        let next = match cur {
            Value::Mapping(map) => map.get(seg).or_else(|| {
                // Non-string keys (`1: x`) are addressed by their text, as after Go's conversion.
                map.iter()
                    .find(|(k, _)| key_text(k).as_deref() == Some(seg))
                    .map(|(_, v)| v)
            }),
            Value::Sequence(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        let next = next.ok_or_else(|| FormatError::KeyNotFound(seg.to_string()))?;
        match next {
            Value::Mapping(_) | Value::Sequence(_) => cur = next,
            found => return scalar(path, found),
        }
    }
    scalar(path, cur)
}

fn key_text(k: &serde_yaml::Value) -> Option<String> {
    match k {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
