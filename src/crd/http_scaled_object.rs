//! `http.keda.sh/v1alpha1` HTTPScaledObject, the KEDA HTTP add-on's routing and scaling object,
//! field for field as the add-on defines it (`operator/apis/http/v1alpha1/httpscaledobject_types.go`).
//!
//! The activator reads the routing fields and `scaledownPeriod`, the operator the rest; a manifest
//! written for the add-on loads unchanged. Durations stay strings here (Go's `metav1.Duration`);
//! the reader that needs one parses it and reports a bad value by name. The generated CRD carries
//! the add-on's schema: required fields, defaults, list-map keys and its CEL rules.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation (ebb's own) holding the shell command that starts a target in `ebb activator --local`.
pub const LOCAL_COMMAND_ANNOTATION: &str = "activator.ebb/local-command";
/// The add-on's annotation that stops its operator from creating the ScaledObject.
pub const SKIP_SCALED_OBJECT_ANNOTATION: &str = "httpscaledobject.keda.sh/skip-scaledobject-creation";
/// The add-on's annotation that orphans the generated ScaledObject (v0.14).
pub const ORPHAN_SCALED_OBJECT_ANNOTATION: &str = "httpscaledobject.keda.sh/orphan-scaledobject";

/// The add-on's CEL rule on every Service reference: exactly one of `port` and `portName`.
const PORT_CHOICE_RULE: &str = "has(self.portName) != has(self.port)";
/// The add-on's message for [`PORT_CHOICE_RULE`].
pub const PORT_CHOICE_MESSAGE: &str = "must define either the 'portName' or the 'port'";

/// Desired state of an HTTPScaledObject.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "http.keda.sh",
    version = "v1alpha1",
    kind = "HTTPScaledObject",
    plural = "httpscaledobjects",
    shortname = "httpso",
    namespaced,
    status = "HttpScaledObjectStatus",
    printcolumn = r#"{"name":"TargetWorkload","type":"string","jsonPath":".status.targetWorkload"}"#,
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".status.targetService"}"#,
    printcolumn = r#"{"name":"MinReplicas","type":"integer","jsonPath":".spec.replicas.min"}"#,
    printcolumn = r#"{"name":"MaxReplicas","type":"integer","jsonPath":".spec.replicas.max"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HttpScaledObjectSpec {
    /// Hosts routed to the target; empty means every host. `*.example.com` matches any depth.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes routed to the target (segment-aware); empty means `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
    /// Headers that must all be present (and equal, when a value is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<HeaderMatch>,
    /// The workload scaled and the Service routed to.
    #[x_kube(validation = Rule::new(PORT_CHOICE_RULE).message(PORT_CHOICE_MESSAGE))]
    pub scale_target_ref: HttpScaleTargetRef,
    /// Where requests go when the target is not ready in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(PORT_CHOICE_RULE).message(PORT_CHOICE_MESSAGE))]
    pub cold_start_timeout_failover_ref: Option<FailoverRef>,
    /// Replica bounds (nil: KEDA's 0 and 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaBounds>,
    /// Deprecated HPA target (default 100), used when `scalingMetric` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pending_requests: Option<i32>,
    /// Seconds without traffic before scaling to zero (the ScaledObject's `cooldownPeriod`; default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledown_period: Option<i32>,
    /// The ScaledObject's `initialCooldownPeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    /// Concurrency or request-rate scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_metric: Option<ScalingMetric>,
    /// Per-object overrides of the proxy's timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpTimeouts>,
}

/// `spec.scaleTargetRef`: the workload and the Service port (exactly one of `port`, `portName`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpScaleTargetRef {
    /// Workload name.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub name: String,
    /// Workload API version (KEDA's default `apps/v1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Workload kind (KEDA's default `Deployment`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The Service requests are routed to.
    pub service: String,
    /// Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Service port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

/// `spec.coldStartTimeoutFailoverRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRef {
    /// Failover Service.
    pub service: String,
    /// Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Service port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Seconds to wait for the target before failing over (the add-on's default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 30))]
    pub timeout_seconds: Option<i32>,
}

/// `spec.replicas`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReplicaBounds {
    /// Minimum replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// Maximum replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// `spec.scalingMetric`: `concurrency` or `requestRate`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingMetric {
    /// Scale on requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyMetric>,
    /// Scale on requests per second over a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RateMetric>,
}

/// `scalingMetric.concurrency`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyMetric {
    /// Target in-flight requests per replica (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "go_int_100")]
    pub target_value: Option<i64>,
}

/// `scalingMetric.requestRate`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateMetric {
    /// Target requests per second per replica (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "go_int_100")]
    pub target_value: Option<i64>,
    /// Averaging window, a Go duration (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1m"))]
    pub window: Option<String>,
    /// Bucket width, a Go duration (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1s"))]
    pub granularity: Option<String>,
}

/// `spec.timeouts`: Go durations overriding the proxy's globals.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTimeouts {
    /// How long a request waits for the target to become ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_wait: Option<String>,
    /// How long the upstream may take to send response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
}

/// One `spec.headers[]` entry: presence only without a value.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Required value; absent means any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Observed state, as the add-on's operator writes it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpScaledObjectStatus {
    /// `apiVersion/kind/name` of the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_workload: Option<String>,
    /// `service:port` routed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_service: Option<String>,
    /// Conditions (only `Ready`); read leniently, since pre-v0.12 ones lack `lastTransitionTime`
    /// (the schema is `metav1.Condition`'s, as the add-on's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<Condition>")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<HttpCondition>,
}

/// One status condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCondition {
    /// Condition type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `scaleTargetRef.name` is optional in the add-on's CRD without a default; the empty string
/// serde fills in is ours, not the API's.
fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// Go's `int` with the add-on's `+kubebuilder:default=100`: an integer without a format.
fn go_int_100(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "integer", "default": 100})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_on_manifest_parses_field_for_field() {
        let yaml = r#"
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: app
  namespace: web
  annotations:
    activator.ebb/local-command: "python3 -m http.server 8081"
spec:
  hosts: [app.example.com, "*.example.org"]
  pathPrefixes: [/api]
  headers:
    - name: X-Tenant
      value: blue
    - name: X-Canary
  scaleTargetRef:
    name: app
    kind: Deployment
    apiVersion: apps/v1
    service: app
    port: 8081
  coldStartTimeoutFailoverRef:
    service: fallback
    portName: http
  replicas: {min: 0, max: 10}
  targetPendingRequests: 5
  scaledownPeriod: 30
  initialCooldownPeriod: 10
  scalingMetric:
    requestRate: {targetValue: 50, window: 2m, granularity: 2s}
  timeouts: {conditionWait: 20s, responseHeader: 5s}
status:
  targetService: "app:8081"
  conditions:
    - type: Ready
      status: "True"
      reason: Reconciled
"#;
        let so: HTTPScaledObject = serde_yaml::from_str(yaml).expect("parses");
        let spec = &so.spec;
        assert_eq!(spec.hosts, ["app.example.com", "*.example.org"]);
        assert_eq!(
            spec.headers[1],
            HeaderMatch {
                name: "X-Canary".into(),
                value: None
            }
        );
        assert_eq!(spec.scale_target_ref.port, Some(8081));
        assert_eq!(spec.scaledown_period, Some(30));
        let failover = spec.cold_start_timeout_failover_ref.as_ref().expect("failover");
        assert_eq!(failover.port_name.as_deref(), Some("http"));
        let rate = spec.scaling_metric.as_ref().and_then(|m| m.request_rate.as_ref());
        assert_eq!(rate.and_then(|r| r.window.as_deref()), Some("2m"));
        assert_eq!(
            spec.timeouts.as_ref().and_then(|t| t.condition_wait.as_deref()),
            Some("20s")
        );
        let status = so.status.as_ref().expect("status");
        assert_eq!(status.conditions[0].last_transition_time, None);
    }
}
