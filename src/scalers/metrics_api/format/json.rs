//! `json`: full GJSON, as KEDA (the `gjson` crate).

use super::{FormatError, quantity_value};

/// The GJSON type name KEDA's message uses for a value that is not a number (Go's `Type.String()`).
fn gjson_type_name(kind: gjson::Kind) -> &'static str {
    match kind {
        gjson::Kind::Null => "Null",
        gjson::Kind::False => "False",
        gjson::Kind::True => "True",
        gjson::Kind::Number => "Number",
        gjson::Kind::String => "String",
        gjson::Kind::Array | gjson::Kind::Object => "JSON",
    }
}

/// KEDA evaluates `valueLocation` with GJSON (wildcards, `#` counts and `#(...)` queries,
/// `@` modifiers, `\` escapes); the `gjson` crate implements the same syntax. The body is
/// validated first because GJSON reads invalid JSON without complaint.
pub(super) fn value(body: &[u8], path: &str) -> Result<f64, FormatError> {
    let text = std::str::from_utf8(body).map_err(|e| FormatError::unparsable("json", e))?;
    if !gjson::valid(text) {
        return Err(FormatError::unparsable("json", "the body is not valid JSON"));
    }
    let v = gjson::get(text, path);
    match v.kind() {
        gjson::Kind::Number => {
            let n = v.f64();
            if n.is_finite() {
                Ok(n)
            } else {
                Err(FormatError::OutOfRange {
                    path: path.to_string(),
                    number: v.json().to_string(),
                })
            }
        }
        gjson::Kind::String => quantity_value(v.str()),
        other => Err(FormatError::wrong_type(path, gjson_type_name(other))),
    }
}
