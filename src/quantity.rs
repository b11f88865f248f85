//! Canonical Kubernetes Quantity strings (being written).

/// Why a number or string is not a usable Quantity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantityError {
    /// Not a number the HPA can use.
    #[error("{0}")]
    Invalid(String),
}

/// Canonical DecimalSI string for `value` rounded to milli precision (as KEDA reports values).
pub fn format_milli(value: f64) -> Result<String, QuantityError> {
    Err(QuantityError::Invalid(format!("unimplemented {value}")))
}

/// Parses a Kubernetes quantity string (`64`, `1k`, `500m`, `1Gi`, `1e3`) into a float.
pub fn parse_quantity(s: &str) -> Result<f64, QuantityError> {
    Err(QuantityError::Invalid(format!("unimplemented {s}")))
}
