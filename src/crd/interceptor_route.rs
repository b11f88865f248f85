//! `http.keda.sh/v1beta1` InterceptorRoute, the HTTP add-on's successor to HTTPScaledObject
//! (`operator/apis/http/v1beta1/interceptorroute_types.go`): a routed Service, routing rules and
//! the scaling metric; the user writes the ScaledObject (trigger metadata `interceptorRoute`).
//!
//! Field for field as the add-on defines it, with its defaults, bounds, list types and CEL rules in
//! the generated CRD. Durations stay strings (Go's `metav1.Duration`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::http_scaled_object::{HeaderMatch, HttpCondition};

/// The add-on's message when both or neither of `port` and `portName` are set.
pub const TARGET_PORT_MESSAGE: &str = "exactly one of 'port' or 'portName' must be set";
/// The add-on's message when `scalingMetric` names no metric.
pub const SCALING_METRIC_MESSAGE: &str = "at least one of 'concurrency' or 'requestRate' must be set";
/// The message when `coldStart` sets nothing (the add-on's v0.14 rule asked for `fallback`;
/// since v0.15 a placeholder or a pending-request cap alone is a valid cold start).
pub const COLD_START_MESSAGE: &str =
    "at least one of 'fallback', 'placeholder' or 'maxPendingRequests' must be set";
/// Largest inline `body` of a static or placeholder response (the add-on's 32 KiB).
pub const MAX_STATIC_BODY: usize = 32 * 1024;

/// Desired state of an InterceptorRoute.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "http.keda.sh",
    version = "v1beta1",
    kind = "InterceptorRoute",
    plural = "interceptorroutes",
    namespaced,
    status = "InterceptorRouteStatus",
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteSpec {
    /// The Service requests are routed to.
    pub target: TargetRef,
    /// `Service` (through the Service's address) or `Endpoint` (straight to ready pod IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "proxy_mode_schema")]
    pub proxy_mode: Option<String>,
    /// What happens while the target scales from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStartSpec>,
    /// Per-route timeouts (unset: the proxy's globals; `0s`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    /// Rules matched with OR; within a rule hosts, paths and headers are ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub rules: Vec<RoutingRule>,
    /// The metrics the target scales on.
    pub scaling_metric: RouteScalingMetric,
    /// Requests answered with a fixed response instead of the target (never counted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub static_routes: Vec<StaticRoute>,
}

/// `spec.target` and `spec.coldStart.fallback`: a Service and exactly one of its port or port name.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.port) != has(self.portName)").message(TARGET_PORT_MESSAGE))]
pub struct TargetRef {
    /// Service name.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: Option<i32>,
    /// Service port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// `spec.coldStart`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.fallback) || has(self.placeholder) || has(self.maxPendingRequests)").message(COLD_START_MESSAGE))]
pub struct ColdStartSpec {
    /// Where requests go when the target is not ready before the readiness deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<TargetRef>,
    /// Answered at once while the target has no ready endpoint (the wake still fires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<PlaceholderSpec>,
    /// Requests held at once per proxy replica; more get the `overflow` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1))]
    pub max_pending_requests: Option<i32>,
    /// `Reject` (503, the default) or `Placeholder` past `maxPendingRequests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "overflow_schema")]
    pub overflow: Option<String>,
}

/// `spec.coldStart.placeholder`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PlaceholderSpec {
    /// The response (status 503 when unset).
    pub response: StaticResponse,
}

/// A fixed response: `statusCode`, a body inline or from a ConfigMap, headers.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticResponse {
    /// Status code (200 for static routes, 503 for placeholders when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 100, "maximum" = 599))]
    pub status_code: Option<i32>,
    /// The body, at most 32 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub body: Option<String>,
    /// The body from a ConfigMap labelled `http.keda.sh/response-body: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_from_config_map: Option<ConfigMapBody>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// `bodyFromConfigMap`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigMapBody {
    /// ConfigMap name (same namespace).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Data key (unset: from the request path, `index.html` for `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One `spec.staticRoutes[]` entry.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticRoute {
    /// Rules matched with OR, as `spec.rules`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub rules: Vec<RoutingRule>,
    /// The response.
    pub response: StaticResponse,
    /// `WhenUnavailable` (default: only while the target has no ready endpoint) or `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "response_mode_schema")]
    pub response_mode: Option<String>,
}

/// `spec.timeouts`: Go durations.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// How long a request waits for a ready endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    /// The whole request's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// How long the upstream may take to send response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
}

/// One `spec.rules[]` entry.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct RoutingRule {
    /// Hosts (exact, `*.` wildcards, `*`); none means every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub hosts: Vec<String>,
    /// Path prefixes (the longest wins); none means `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub paths: Vec<PathMatch>,
    /// Headers that must all match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<HeaderMatch>,
}

/// `rules[].paths[]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PathMatch {
    /// A path prefix.
    #[schemars(length(min = 1))]
    pub value: String,
}

/// `spec.scalingMetric`: one or both; with both the HPA takes the larger replica count.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.concurrency) || has(self.requestRate)").message(SCALING_METRIC_MESSAGE))]
pub struct RouteScalingMetric {
    /// Scale on requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyTarget>,
    /// Scale on requests per second over a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RequestRateTarget>,
}

/// `scalingMetric.concurrency`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyTarget {
    /// Target in-flight requests per replica (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "default" = 100))]
    pub target_value: Option<i32>,
}

/// `scalingMetric.requestRate`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRateTarget {
    /// Bucket width, a Go duration (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1s"))]
    pub granularity: Option<String>,
    /// Target requests per second per replica (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "default" = 100))]
    pub target_value: Option<i32>,
    /// Averaging window, a Go duration (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1m"))]
    pub window: Option<String>,
}

/// Observed state: the operator sets `Ready`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct InterceptorRouteStatus {
    /// Conditions (only `Ready`), `metav1.Condition`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<HttpCondition>,
}

/// `coldStart.overflow`: the add-on's enum.
fn overflow_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Reject", "Placeholder"], "default": "Reject"})
}

/// `staticRoutes[].responseMode`: the add-on's enum with its default.
fn response_mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Always", "WhenUnavailable"], "default": "WhenUnavailable"})
}

/// `proxyMode`: the add-on's enum with its default.
fn proxy_mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Service", "Endpoint"], "default": "Service"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_on_route_parses_field_for_field() {
        let yaml = r#"
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: app, namespace: web}
spec:
  target: {service: app, port: 8080}
  proxyMode: Endpoint
  coldStart:
    fallback: {service: sorry, portName: http}
  timeouts: {readiness: 20s, request: 1m, responseHeader: 5s}
  rules:
    - hosts: [app.example.com]
      paths: [{value: /api}]
      headers: [{name: X-Tenant, value: blue}, {name: X-Canary}]
    - hosts: ["*.example.org"]
  scalingMetric:
    concurrency: {targetValue: 10}
    requestRate: {targetValue: 50, window: 2m, granularity: 2s}
"#;
        let ir: InterceptorRoute = serde_yaml::from_str(yaml).expect("parses");
        assert_eq!(ir.spec.target.port, Some(8080));
        assert_eq!(ir.spec.rules.len(), 2);
        assert_eq!(ir.spec.rules[0].paths[0].value, "/api");
        assert_eq!(ir.spec.rules[0].headers[1].value, None);
        let rate = ir.spec.scaling_metric.request_rate.as_ref().expect("rate");
        assert_eq!(rate.granularity.as_deref(), Some("2s"));
        assert_eq!(
            ir.spec
                .cold_start
                .as_ref()
                .and_then(|c| c.fallback.as_ref())
                .map(|f| f.port_name.as_deref()),
            Some(Some("http"))
        );
    }
}
