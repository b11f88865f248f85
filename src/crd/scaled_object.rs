//! `keda.sh/v1alpha1` ScaledObject, read leniently so any manifest written for KEDA loads.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// KEDA's default `pollingInterval` in seconds.
pub const DEFAULT_POLLING_INTERVAL: i32 = 30;
/// KEDA's default `cooldownPeriod` in seconds.
pub const DEFAULT_COOLDOWN_PERIOD: i32 = 300;
/// KEDA's default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICAS: i32 = 100;
/// Label that ties an HPA metric selector to its ScaledObject.
pub const SCALED_OBJECT_NAME_LABEL: &str = "scaledobject.keda.sh/name";

/// Desired state of a ScaledObject.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    shortname = "so",
    category = "keda",
    category = "all",
    namespaced,
    status = "ScaledObjectStatus",
    printcolumn = r#"{"name":"ScaleTargetKind","type":"string","jsonPath":".status.scaleTargetKind"}"#,
    printcolumn = r#"{"name":"ScaleTargetName","type":"string","jsonPath":".spec.scaleTargetRef.name"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicaCount"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicaCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.conditions[?(@.type==\"Active\")].status"}"#,
    printcolumn = r#"{"name":"Fallback","type":"string","jsonPath":".status.conditions[?(@.type==\"Fallback\")].status"}"#,
    printcolumn = r#"{"name":"Paused","type":"string","jsonPath":".status.conditions[?(@.type==\"Paused\")].status"}"#,
    printcolumn = r#"{"name":"Triggers","type":"string","jsonPath":".status.triggersTypes"}"#,
    printcolumn = r#"{"name":"Authentications","type":"string","jsonPath":".status.authenticationsTypes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    /// The workload to scale.
    pub scale_target_ref: ScaleTarget,
    /// Seconds between trigger polls (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    /// Seconds to wait after the last active trigger before scaling to zero (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i32>,
    /// Cooldown after creation while `lastActiveTime` is unset (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    /// Replica count while inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_replica_count: Option<i32>,
    /// Minimum replicas (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    /// Maximum replicas (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    /// HPA and modifier settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<AdvancedConfig>,
    /// Replica count to converge on when triggers keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// The triggers; each becomes one or more HPA metrics.
    #[serde(default)]
    pub triggers: Vec<ScaleTrigger>,
}

/// `spec.scaleTargetRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    /// Target name in the ScaledObject's namespace.
    #[serde(default)]
    pub name: String,
    /// Defaults to `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Defaults to `Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Container whose env feeds `*FromEnv` metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

impl ScaleTarget {
    /// `apiVersion`, `apps/v1` when unset or empty.
    pub fn api_version_or_default(&self) -> &str {
        self.api_version
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("apps/v1")
    }

    /// `kind`, `Deployment` when unset or empty.
    pub fn kind_or_default(&self) -> &str {
        self.kind
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("Deployment")
    }
}

/// `spec.advanced`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedConfig {
    /// Name and behavior of the generated HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HpaConfig>,
    /// Put the original replica count back when the ScaledObject is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    /// Composite metric over named triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// `spec.advanced.horizontalPodAutoscalerConfig`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaConfig {
    /// HPA name override (default `keda-hpa-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Copied verbatim into the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// `spec.advanced.scalingModifiers`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingModifiers {
    /// Expression over named triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// Composite metric target (a number as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Composite activation threshold (a number as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<String>,
    /// `AverageValue` (default) or `Value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<MetricTargetType>,
}

/// `spec.fallback`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failures before the fallback applies.
    #[serde(default)]
    pub failure_threshold: i32,
    /// Replicas to converge on.
    #[serde(default)]
    pub replicas: i32,
    /// `static` (default), `currentReplicas`, `currentReplicasIfHigher`, `currentReplicasIfLower`, `scalingModifiers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<String>,
}

/// HPA metric target type.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MetricTargetType {
    /// Divide by the replica count (KEDA's default).
    #[default]
    AverageValue,
    /// Compare the raw value.
    Value,
    /// Percentage of requests (cpu/memory only).
    Utilization,
}

impl MetricTargetType {
    /// The string used in the HPA.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AverageValue => "AverageValue",
            Self::Value => "Value",
            Self::Utilization => "Utilization",
        }
    }
}

/// One entry of `spec.triggers`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTrigger {
    /// Scaler type, e.g. `prometheus`.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// Optional unique name, used in formulas and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scaler parameters; every value is a string.
    #[serde(default, deserialize_with = "lenient_string_map")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub metadata: BTreeMap<String, String>,
    /// TriggerAuthentication reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// `AverageValue` (default), `Value` or `Utilization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<MetricTargetType>,
    /// Serve HPA reads from the value cached by the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
}

/// `triggers[].authenticationRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    /// Name of the (Cluster)TriggerAuthentication.
    pub name: String,
    /// `TriggerAuthentication` (default) or `ClusterTriggerAuthentication`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Observed state, as KEDA writes it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectStatus {
    /// `<group>/<version>.<Kind>` of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    /// Resolved group/version/kind/resource of the target.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "scaleTargetGVKR")]
    pub scale_target_gvkr: Option<GroupVersionKindResource>,
    /// Target replicas when first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    /// Last time a trigger was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// External metric names in trigger order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    /// Resource metric names (`cpu`, `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_metric_names: Option<Vec<String>>,
    /// `composite-metric` when scalingModifiers are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_scaler_name: Option<String>,
    /// Ready, Active, Fallback, Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Failure bookkeeping per external metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BTreeMap<String, HealthStatus>>,
    /// Activity per external metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivity>>,
    /// Mirror of the paused-replicas annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replica_count: Option<i32>,
    /// Name of the owned HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
    /// Comma-joined distinct trigger types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Comma-joined distinct authenticationRef names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
}

/// `status.scaleTargetGVKR`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct GroupVersionKindResource {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Plural resource.
    #[serde(default)]
    pub resource: String,
}

/// A status condition as KEDA writes it (no timestamps).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Condition {
    /// Condition type.
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
}

/// `status.health[metric]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// Consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_failures: Option<i32>,
    /// `Happy` or `Failing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `status.triggersActivity[metric]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerActivity {
    /// Whether the trigger is active.
    #[serde(default)]
    pub is_active: bool,
}

/// Accepts metadata values written as YAML numbers or booleans (`queueLength: 5`) as strings,
/// since KEDA users sometimes omit the quotes and the API server would coerce nothing for us.
fn lenient_string_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(deserializer)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => return None,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => other.to_string(),
            };
            Some((k, s))
        })
        .collect())
}

impl ScaledObjectSpec {
    /// `pollingInterval` with KEDA's default applied.
    pub fn polling_interval_secs(&self) -> u64 {
        u64::try_from(self.polling_interval.unwrap_or(DEFAULT_POLLING_INTERVAL).max(1)).unwrap_or(30)
    }

    /// True when any field of `advanced.scalingModifiers` is set.
    pub fn uses_scaling_modifiers(&self) -> bool {
        self.advanced
            .as_ref()
            .and_then(|a| a.scaling_modifiers.as_ref())
            .is_some_and(|m| {
                m.formula.as_deref().is_some_and(|s| !s.is_empty())
                    || m.target.as_deref().is_some_and(|s| !s.is_empty())
                    || m.activation_target.as_deref().is_some_and(|s| !s.is_empty())
                    || m.metric_type.is_some()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_keda_manifest_leniently() {
        let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: worker
  namespace: default
  annotations:
    autoscaling.keda.sh/paused: "false"
spec:
  scaleTargetRef:
    name: worker
  pollingInterval: 5
  unknownFutureField: {a: 1}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 60
  triggers:
  - type: aws-sqs-queue
    metadata:
      queueURL: http://q/1/jobs
      queueLength: 5
      scaleOnInFlight: false
    useCachedMetrics: true
"#;
        let so: ScaledObject = serde_yaml::from_str(yaml).expect("parses");
        assert_eq!(so.spec.polling_interval_secs(), 5);
        let t = &so.spec.triggers[0];
        assert_eq!(t.metadata["queueLength"], "5");
        assert_eq!(t.metadata["scaleOnInFlight"], "false");
        assert_eq!(t.use_cached_metrics, Some(true));
        assert!(!so.spec.uses_scaling_modifiers());
    }
}
