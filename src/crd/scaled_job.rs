//! `keda.sh/v1alpha1` ScaledJob: one Kubernetes Job per unit of queued work.
//!
//! Read leniently like the ScaledObject: defaults are applied in code (`crate::scaling::scaled_job`)
//! and never written back, so a created object reads back as written.

use k8s_openapi::{
    api::batch::v1::JobSpec, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::scaled_object::{Condition, ScaleTrigger, TriggerActivity};

/// Label every Job (and its pods) carries, naming its ScaledJob.
pub const SCALED_JOB_NAME_LABEL: &str = "scaledjob.keda.sh/name";
/// Annotation on every Job: the ScaledJob `metadata.generation` it was created from.
pub const GENERATION_ANNOTATION: &str = "scaledjob.keda.sh/generation";
/// Annotation on a ScaledJob listing (comma-separated) labels not to copy onto its Jobs.
pub const EXCLUDED_LABELS_ANNOTATION: &str = "scaledjob.keda.sh/job-excluded-labels";

/// Desired state of a ScaledJob.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledJob",
    plural = "scaledjobs",
    shortname = "sj",
    category = "keda",
    category = "all",
    namespaced,
    status = "ScaledJobStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicaCount"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicaCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.conditions[?(@.type==\"Active\")].status"}"#,
    printcolumn = r#"{"name":"Paused","type":"string","jsonPath":".status.conditions[?(@.type==\"Paused\")].status"}"#,
    printcolumn = r#"{"name":"Triggers","type":"string","jsonPath":".status.triggersTypes"}"#,
    printcolumn = r#"{"name":"Authentications","type":"string","jsonPath":".status.authenticationsTypes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobSpec {
    /// Template of every Job created. Optional in the type so a ScaledJob without one can be
    /// reported (KEDA: "ScaledJob.spec.jobTargetRef not found"); the CRD requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_target_ref: Option<JobSpec>,
    /// Seconds between polls (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    /// Finished-OK Jobs kept (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<i32>,
    /// Failed Jobs kept (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<i32>,
    /// Container of `jobTargetRef.template` whose env feeds `*FromEnv` trigger parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
    /// Jobs kept in flight regardless of load (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    /// Cap on Jobs in flight (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    /// Deprecated twin of `rollout.strategy`; wins when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<String>,
    /// What happens to running Jobs when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// How many Jobs to create from the queue length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_strategy: Option<ScalingStrategy>,
    /// The triggers (same shape as a ScaledObject's; `metricType` is not allowed).
    #[serde(default)]
    pub triggers: Vec<ScaleTrigger>,
}

/// `spec.rollout`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `gradual` or `immediate` (the default behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// `foreground` or `background` (default): delete propagation of the rollout cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<String>,
}

/// `spec.scalingStrategy`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStrategy {
    /// `default`, `custom`, `accurate` or `eager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// `custom`: subtracted from the scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// `custom`: fraction of running Jobs subtracted, a float written as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod condition types that, all `True` on one pod, mark its Job as no longer pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_pod_conditions: Option<Vec<String>>,
    /// `max` (default), `min`, `avg` or `sum`: how several triggers combine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_scalers_calculation: Option<String>,
}

/// Observed state, as KEDA writes it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    /// Last poll at which the ScaledJob was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// Ready, Active, Fallback, Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Comma-joined distinct trigger types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Comma-joined distinct authenticationRef names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    /// Activity per external metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<std::collections::BTreeMap<String, TriggerActivity>>,
    /// External metric names (KEDA keeps these in memory only for ScaledJobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    /// Legacy field, never written.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "Paused")]
    pub paused: Option<String>,
}

/// The ScaledJob CRD with KEDA's validation: the generated schema plus the enums, minimums and
/// required fields of KEDA's CRD (`metricType` dropped from triggers, as KEDA's patch does).
pub fn scaled_job_crd() -> CustomResourceDefinition {
    let crd = ScaledJob::crd();
    let Ok(mut v) = serde_json::to_value(&crd) else {
        return crd;
    };
    if let Some(spec) = v.pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec") {
        constrain_spec(spec);
    }
    serde_json::from_value(v).unwrap_or(crd)
}

fn constrain_spec(spec: &mut serde_json::Value) {
    use serde_json::json;
    spec["required"] = json!(["jobTargetRef", "triggers"]);
    let props = &mut spec["properties"];
    for (field, min) in [
        ("pollingInterval", 1),
        ("successfulJobsHistoryLimit", 0),
        ("failedJobsHistoryLimit", 0),
        ("minReplicaCount", 0),
        ("maxReplicaCount", 1),
    ] {
        props[field]["minimum"] = json!(min);
    }
    let enums = [
        ("/rolloutStrategy", json!(["gradual", "immediate"])),
        ("/rollout/properties/strategy", json!(["gradual", "immediate"])),
        (
            "/rollout/properties/propagationPolicy",
            json!(["foreground", "background"]),
        ),
        (
            "/scalingStrategy/properties/strategy",
            json!(["default", "custom", "accurate", "eager"]),
        ),
        (
            "/scalingStrategy/properties/multipleScalersCalculation",
            json!(["min", "avg", "sum", "max"]),
        ),
    ];
    for (path, values) in enums {
        if let Some(p) = props.pointer_mut(path) {
            p["enum"] = values;
        }
    }
    let triggers = &mut props["triggers"];
    triggers["minItems"] = json!(1);
    if let Some(t) = triggers.as_object_mut() {
        t.remove("default");
    }
    let items = &mut triggers["items"];
    if let Some(p) = items.get_mut("properties").and_then(|p| p.as_object_mut()) {
        p.remove("metricType");
    }
    items["required"] = json!(["metadata", "type"]);
    items["properties"]["type"]["minLength"] = json!(1);
    if let Some(kind) = items.pointer_mut("/properties/authenticationRef/properties/kind") {
        kind["enum"] = json!(["TriggerAuthentication", "ClusterTriggerAuthentication"]);
    }
    if let Some(meta) = props.pointer_mut("/jobTargetRef/properties/template/properties/metadata") {
        meta["x-kubernetes-preserve-unknown-fields"] = json!(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_carries_kedas_validation() {
        let crd = serde_json::to_value(scaled_job_crd()).expect("json");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["jobTargetRef", "triggers"]));
        assert_eq!(spec["properties"]["pollingInterval"]["minimum"], 1.0);
        assert_eq!(spec["properties"]["maxReplicaCount"]["minimum"], 1.0);
        assert_eq!(spec["properties"]["triggers"]["minItems"], 1);
        assert!(spec["properties"]["triggers"]["items"]["properties"]["metricType"].is_null());
        assert_eq!(
            spec["properties"]["scalingStrategy"]["properties"]["strategy"]["enum"],
            serde_json::json!(["default", "custom", "accurate", "eager"])
        );
        assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["sj"]));
    }

    #[test]
    fn reads_a_keda_manifest() {
        let sj: ScaledJob = serde_yaml::from_str(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: encode, namespace: media}
spec:
  jobTargetRef:
    template:
      spec:
        containers: [{name: worker, image: encoder:1}]
  pollingInterval: 10
  scalingStrategy: {strategy: custom, customScalingRunningJobPercentage: "0.5"}
  triggers:
  - type: aws-sqs-queue
    metadata: {queueURL: http://q/1/jobs, queueLength: 5}
"#,
        )
        .expect("parses");
        assert_eq!(sj.spec.polling_interval, Some(10));
        assert_eq!(sj.spec.triggers[0].metadata["queueLength"], "5");
        assert!(sj.spec.job_target_ref.is_some());
    }
}
