//! Wire types of `external.metrics.k8s.io/v1beta1` (k8s-openapi does not ship them).

use std::collections::BTreeMap;

use serde::Serialize;

/// API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// API version served.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// `ExternalMetricValueList`.
#[derive(Serialize, Debug)]
pub struct ExternalMetricValueList<'a> {
    /// Always `ExternalMetricValueList`.
    pub kind: &'static str,
    /// Always `external.metrics.k8s.io/v1beta1`.
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    /// Always `{}`.
    pub metadata: EmptyObject,
    /// One item per scaler value; never empty on success.
    pub items: Vec<ExternalMetricValue<'a>>,
}

/// An empty JSON object (`ListMeta` with nothing set).
#[derive(Serialize, Debug, Default)]
pub struct EmptyObject {}

/// One `ExternalMetricValue`.
#[derive(Serialize, Debug)]
pub struct ExternalMetricValue<'a> {
    /// Metric name as the client asked for it.
    #[serde(rename = "metricName")]
    pub metric_name: &'a str,
    /// Always null, as KEDA sends it.
    #[serde(rename = "metricLabels")]
    pub metric_labels: Option<BTreeMap<String, String>>,
    /// RFC 3339, UTC, whole seconds.
    pub timestamp: String,
    /// Canonical Quantity string.
    pub value: String,
}

impl<'a> ExternalMetricValueList<'a> {
    /// A list with the given items.
    pub fn new(items: Vec<ExternalMetricValue<'a>>) -> Self {
        Self {
            kind: "ExternalMetricValueList",
            api_version: GROUP_VERSION,
            metadata: EmptyObject {},
            items,
        }
    }
}
