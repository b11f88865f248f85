//! ScaledObject → `autoscaling/v2` HorizontalPodAutoscaler, shaped exactly as KEDA's
//! `controllers/keda/hpa.go` builds it, so a cluster switched from KEDA sees no HPA churn.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::autoscaling::v2::{
        ContainerResourceMetricSource, CrossVersionObjectReference, ExternalMetricSource, HPAScalingRules,
        HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
        MetricIdentifier, MetricSpec as HpaMetricSpec, MetricTarget as HpaMetricTarget, ResourceMetricSource,
    },
    apimachinery::pkg::{
        api::resource::Quantity as K8sQuantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
    },
};
use serde_json::Value;

use crate::{
    crd::{
        ScaledObject,
        scaled_object::{DEFAULT_MAX_REPLICAS, MetricTargetType, SCALED_OBJECT_NAME_LABEL},
    },
    quantity::{self, Quantity},
    scalers::{MetricSpec, MetricTarget, ResourceTarget, ScalerError, SharedScaler},
    scaling::activation::pause_state,
};

/// Name of the single metric that replaces all external metrics when scalingModifiers are used.
pub const COMPOSITE_METRIC_NAME: &str = "composite-metric";
/// SO annotation listing labels that must not be copied onto the HPA.
pub const HPA_EXCLUDED_LABELS_ANNOTATION: &str = "scaledobject.keda.sh/hpa-excluded-labels";
/// Value of `app.kubernetes.io/managed-by` on the HPA.
///
/// ebb keeps KEDA's value rather than its own name: users' dashboards, alerts and label
/// selectors match `keda-operator`, and a drop-in replacement must not break them.
pub const MANAGED_BY: &str = "keda-operator";
/// Prefix of the default HPA name.
pub const HPA_NAME_PREFIX: &str = "keda-hpa-";

/// Why an HPA could not be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HpaError {
    /// Two triggers produced the same external metric name.
    #[error("metricName {metric} defined multiple times in ScaledObject {scaled_object}")]
    DuplicateMetricName {
        /// The repeated metric name.
        metric: String,
        /// The ScaledObject's name.
        scaled_object: String,
    },
    /// The scalers returned no metric at all.
    #[error("no metric specs returned from scalers for ScaledObject {namespace}/{name}")]
    NoMetricSpecs {
        /// Namespace of the ScaledObject.
        namespace: String,
        /// Name of the ScaledObject.
        name: String,
    },
    /// `scalingModifiers.target` is missing or not a positive number.
    #[error("{0}")]
    InvalidModifiersTarget(String),
    /// An external metric asked for `Utilization`, which only resource metrics support.
    #[error(
        "'Utilization' metric type is unsupported for external metrics, allowed values are 'Value' or 'AverageValue'"
    )]
    UtilizationOnExternal,
    /// The ScaledObject has no name (cannot happen for objects read from the API server).
    #[error("ScaledObject has no metadata.name")]
    MissingName,
}

/// The HPA's name: `advanced.horizontalPodAutoscalerConfig.name` when non-empty, else `keda-hpa-<so>`.
pub fn hpa_name(so: &ScaledObject) -> String {
    so.spec
        .advanced
        .as_ref()
        .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
        .and_then(|c| c.name.as_deref())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{HPA_NAME_PREFIX}{}",
                so.metadata.name.as_deref().unwrap_or_default()
            )
        })
}

/// External metric names in trigger order (`status.externalMetricNames`), composite or not.
pub fn external_metric_names(specs: &[(usize, MetricSpec)]) -> Vec<String> {
    specs
        .iter()
        .filter_map(|(_, s)| match s {
            MetricSpec::External { name, .. } => Some(name.clone()),
            MetricSpec::Resource { .. } => None,
        })
        .collect()
}

/// Plain `Resource` metric names (`status.resourceMetricNames`); ContainerResource is not listed, as in KEDA.
pub fn resource_metric_names(specs: &[(usize, MetricSpec)]) -> Vec<String> {
    specs
        .iter()
        .filter_map(|(_, s)| match s {
            MetricSpec::Resource {
                resource,
                container: None,
                ..
            } => Some(resource.clone()),
            _ => None,
        })
        .collect()
}

/// Truncates a label value to 63 characters and trims trailing non-alphanumerics, as KEDA does
/// for `app.kubernetes.io/name`.
pub fn label_value(s: &str) -> String {
    let truncated: String = s.chars().take(63).collect();
    truncated
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Renders the HPA KEDA would create for `so` from its scalers' metric specs (paired with their
/// trigger index); `version` becomes `app.kubernetes.io/version`.
pub fn render_hpa(
    so: &ScaledObject,
    specs: &[(usize, MetricSpec)],
    version: &str,
) -> Result<HorizontalPodAutoscaler, HpaError> {
    let so_name = so.metadata.name.clone().ok_or(HpaError::MissingName)?;
    let namespace = so.metadata.namespace.clone().unwrap_or_default();
    let name = hpa_name(so);
    let metrics = render_metrics(so, &so_name, &namespace, specs)?;

    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), label_value(&name)),
        ("app.kubernetes.io/version".to_string(), version.to_string()),
        ("app.kubernetes.io/part-of".to_string(), so_name.clone()),
        ("app.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string()),
    ]);
    let annotations = so.metadata.annotations.clone().unwrap_or_default();
    let excluded: Vec<&str> = annotations
        .get(HPA_EXCLUDED_LABELS_ANNOTATION)
        .map(|v| v.split(',').map(str::trim).collect())
        .unwrap_or_default();
    // KEDA labels the ScaledObject with its name before it builds the HPA (reconcile patches
    // the same label onto the object), so the HPA inherits it unless it is excluded.
    let mut so_labels = so.metadata.labels.clone().unwrap_or_default();
    so_labels.insert(SCALED_OBJECT_NAME_LABEL.to_string(), so_name.clone());
    for (k, v) in so_labels {
        if !excluded.contains(&k.as_str()) {
            labels.insert(k, v);
        }
    }

    let owner = OwnerReference {
        api_version: "keda.sh/v1alpha1".to_string(),
        kind: "ScaledObject".to_string(),
        name: so_name.clone(),
        uid: so.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };

    let target = &so.spec.scale_target_ref;
    let spec = HorizontalPodAutoscalerSpec {
        behavior: behavior(so),
        max_replicas: so.spec.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICAS),
        metrics: Some(metrics),
        min_replicas: Some(hpa_min_replicas(so)),
        scale_target_ref: CrossVersionObjectReference {
            api_version: Some(
                target
                    .api_version
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "apps/v1".to_string()),
            ),
            kind: target
                .kind
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "Deployment".to_string()),
            name: target.name.clone(),
        },
    };

    Ok(HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Why the HPA for a ScaledObject could not be built.
#[derive(Debug, Clone)]
pub enum DesiredError {
    /// Triggers whose scaler could not be built, with their index (KEDA builds no HPA then).
    Scalers(Vec<(usize, ScalerError)>),
    /// The metric specs do not make a valid HPA.
    Hpa(HpaError),
}

/// Metric specs paired with the index of the trigger that contributed them.
pub type IndexedSpecs = Vec<(usize, MetricSpec)>;

/// Metric specs of every trigger, paired with the trigger index, from scalers in trigger order.
pub fn metric_specs<'a>(
    scalers: impl IntoIterator<Item = (usize, &'a Result<SharedScaler, ScalerError>)>,
) -> Result<IndexedSpecs, Vec<(usize, ScalerError)>> {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    for (i, scaler) in scalers {
        match scaler {
            Ok(s) => specs.extend(s.metric_specs().into_iter().map(|m| (i, m))),
            Err(e) => errors.push((i, e.clone())),
        }
    }
    if errors.is_empty() { Ok(specs) } else { Err(errors) }
}

/// The HPA KEDA would apply for `so` and the metric specs it came from: the one path shared by
/// reconcile (scalers from the registry) and `ebb render` (scalers built from files), so what
/// `render` prints is the body the operator applies.
pub fn desired_hpa<'a>(
    so: &ScaledObject,
    scalers: impl IntoIterator<Item = (usize, &'a Result<SharedScaler, ScalerError>)>,
    version: &str,
) -> Result<(HorizontalPodAutoscaler, IndexedSpecs), DesiredError> {
    let specs = metric_specs(scalers).map_err(DesiredError::Scalers)?;
    let hpa = render_hpa(so, &specs, version).map_err(DesiredError::Hpa)?;
    Ok((hpa, specs))
}

/// HPA `minReplicas`: `minReplicaCount` when > 0, else 1 (KEDA owns the 0↔1 step).
pub fn hpa_min_replicas(so: &ScaledObject) -> i32 {
    so.spec.min_replica_count.filter(|m| *m > 0).unwrap_or(1)
}

/// The user's behavior with `selectPolicy: Disabled` forced in the paused direction(s).
fn behavior(so: &ScaledObject) -> Option<HorizontalPodAutoscalerBehavior> {
    let mut behavior = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
        .and_then(|c| c.behavior.clone());
    let pause = pause_state(so.metadata.annotations.as_ref());
    let disable = |rules: &mut Option<HPAScalingRules>| {
        rules.get_or_insert_with(HPAScalingRules::default).select_policy = Some("Disabled".to_string());
    };
    if pause.scale_in_paused {
        disable(&mut behavior.get_or_insert_with(Default::default).scale_down);
    }
    if pause.scale_out_paused {
        disable(&mut behavior.get_or_insert_with(Default::default).scale_up);
    }
    behavior
}

/// The parsed `scalingModifiers.target` and metric type, when modifiers are in use.
///
/// Errors carry KEDA's messages; the webhook normally rejects these objects earlier.
pub fn modifiers_target(so: &ScaledObject) -> Result<Option<(f64, MetricTargetType)>, HpaError> {
    if !so.spec.uses_scaling_modifiers() {
        return Ok(None);
    }
    let m = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref());
    let raw = m.and_then(|m| m.target.as_deref()).unwrap_or_default();
    if raw.is_empty() {
        return Err(HpaError::InvalidModifiersTarget(
            "formula is given but target is empty".to_string(),
        ));
    }
    let target: f64 = raw.trim().parse().map_err(|_| {
        HpaError::InvalidModifiersTarget(format!(
            "error converting target for scalingModifiers (string->float) to valid target: {raw:?}"
        ))
    })?;
    if target.is_nan() || target <= 0.0 || !target.is_finite() {
        return Err(HpaError::InvalidModifiersTarget(
            "target for scalingModifiers is smaller or equal to 0".to_string(),
        ));
    }
    let kind = m.and_then(|m| m.metric_type).unwrap_or_default();
    if kind == MetricTargetType::Utilization {
        return Err(HpaError::InvalidModifiersTarget(
            "error trigger type is Utilization, but it needs to be AverageValue or Value for external metrics"
                .to_string(),
        ));
    }
    Ok(Some((target, kind)))
}

fn render_metrics(
    so: &ScaledObject,
    so_name: &str,
    namespace: &str,
    specs: &[(usize, MetricSpec)],
) -> Result<Vec<HpaMetricSpec>, HpaError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::with_capacity(specs.len());
    for (_, spec) in specs {
        if let MetricSpec::External { name, .. } = spec {
            if seen.contains(&name.as_str()) {
                return Err(HpaError::DuplicateMetricName {
                    metric: name.clone(),
                    scaled_object: so_name.to_string(),
                });
            }
            seen.push(name);
        }
        out.push(render_metric(spec, so_name)?);
    }
    // Composite replaces every external metric; it sorts into the External slot like any other.
    if let Some((target, kind)) = modifiers_target(so)? {
        out.retain(|m| m.type_ != "External");
        let milli = (target * 1000.0) as i64;
        out.push(external(
            COMPOSITE_METRIC_NAME,
            so_name,
            target_of(kind, Quantity::from_milli(milli).to_string()),
        ));
    }
    if out.is_empty() {
        return Err(HpaError::NoMetricSpecs {
            namespace: namespace.to_string(),
            name: so_name.to_string(),
        });
    }
    // Vec::sort_by is stable, matching what Go's sort.Slice does in practice for short lists.
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    Ok(out)
}

fn render_metric(spec: &MetricSpec, so_name: &str) -> Result<HpaMetricSpec, HpaError> {
    match spec {
        MetricSpec::External { name, target } => {
            if target.kind == MetricTargetType::Utilization {
                return Err(HpaError::UtilizationOnExternal);
            }
            Ok(external(
                name,
                so_name,
                target_of(target.kind, target_quantity(target)),
            ))
        }
        MetricSpec::Resource {
            resource,
            container,
            target,
        } => {
            let target = match target {
                ResourceTarget::Utilization(p) => HpaMetricTarget {
                    type_: "Utilization".to_string(),
                    average_utilization: Some(*p),
                    ..HpaMetricTarget::default()
                },
                ResourceTarget::AverageValue(q) => HpaMetricTarget {
                    type_: "AverageValue".to_string(),
                    average_value: Some(K8sQuantity(as_written(q))),
                    ..HpaMetricTarget::default()
                },
            };
            Ok(match container {
                Some(c) => HpaMetricSpec {
                    type_: "ContainerResource".to_string(),
                    container_resource: Some(ContainerResourceMetricSource {
                        container: c.clone(),
                        name: resource.clone(),
                        target,
                    }),
                    ..HpaMetricSpec::default()
                },
                None => HpaMetricSpec {
                    type_: "Resource".to_string(),
                    resource: Some(ResourceMetricSource {
                        name: resource.clone(),
                        target,
                    }),
                    ..HpaMetricSpec::default()
                },
            })
        }
    }
}

/// A user-written quantity (`1Gi`, `500m`) is kept as written: the API server stores it that way
/// and canonicalising it here would only make the live HPA look different.
fn as_written(q: &str) -> String {
    q.trim().to_string()
}

/// KEDA's target quantity: integer scalers truncate to a whole number; others format `%.3f` and
/// parse that as a quantity. NaN, infinities and negatives become `0`.
pub fn target_quantity(target: &MetricTarget) -> String {
    let v = target.value;
    if !v.is_finite() || v < 0.0 {
        return "0".to_string();
    }
    if target.integer {
        return format!("{}", v.trunc() as i64);
    }
    quantity::format_milli(v).unwrap_or_else(|_| "0".to_string())
}

fn target_of(kind: MetricTargetType, q: String) -> HpaMetricTarget {
    let q = Some(K8sQuantity(q));
    match kind {
        MetricTargetType::Value => HpaMetricTarget {
            type_: "Value".to_string(),
            value: q,
            ..HpaMetricTarget::default()
        },
        _ => HpaMetricTarget {
            type_: "AverageValue".to_string(),
            average_value: q,
            ..HpaMetricTarget::default()
        },
    }
}

fn external(metric: &str, so_name: &str, target: HpaMetricTarget) -> HpaMetricSpec {
    HpaMetricSpec {
        type_: "External".to_string(),
        external: Some(ExternalMetricSource {
            metric: MetricIdentifier {
                name: metric.to_string(),
                selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        SCALED_OBJECT_NAME_LABEL.to_string(),
                        so_name.to_string(),
                    )])),
                    match_expressions: None,
                }),
            },
            target,
        }),
        ..HpaMetricSpec::default()
    }
}

/// True when the live HPA must be updated to `desired` (KEDA's rule: metric count differs, behavior
/// differs, the desired spec is not a semantic subset of the live one, or labels/annotations are not).
///
/// "Semantic subset" follows apimachinery's `DeepDerivative`: fields unset or empty in `desired` are
/// ignored, quantities compare by value. A desired `behavior: nil` against a live behavior counts as
/// a difference so that removing a paused-scale-in/out annotation restores the original behavior.
pub fn needs_update(desired: &HorizontalPodAutoscaler, live: &HorizontalPodAutoscaler) -> bool {
    let d_spec = desired.spec.as_ref();
    let l_spec = live.spec.as_ref();
    let count =
        |s: Option<&HorizontalPodAutoscalerSpec>| s.and_then(|s| s.metrics.as_ref()).map_or(0, Vec::len);
    if count(d_spec) != count(l_spec) {
        return true;
    }
    let d_behavior = d_spec.and_then(|s| s.behavior.as_ref());
    let l_behavior = l_spec.and_then(|s| s.behavior.as_ref());
    if d_behavior.is_none() != l_behavior.is_none() {
        return true;
    }
    if !derivative(&json(&desired.spec), &json(&live.spec), "") {
        return true;
    }
    !derivative(&json(&desired.metadata.labels), &json(&live.metadata.labels), "")
        || !derivative(
            &json(&desired.metadata.annotations),
            &json(&live.metadata.annotations),
            "",
        )
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// apimachinery `DeepDerivative` over JSON: is `a` (desired) satisfied by `b` (live)?
fn derivative(a: &Value, b: &Value, key: &str) -> bool {
    match (a, b) {
        (Value::Null, _) => true,
        (Value::String(s), _) if s.is_empty() => true,
        (Value::Array(x), _) if x.is_empty() => true,
        (Value::Object(x), _) if x.is_empty() => true,
        (Value::String(x), Value::String(y)) => {
            x == y
                || (matches!(key, "value" | "averageValue" | "tolerance")
                    && matches!((quantity::parse(x), quantity::parse(y)), (Ok(p), Ok(q)) if p == q))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| derivative(p, q, key))
        }
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .all(|(k, v)| derivative(v, y.get(k).unwrap_or(&Value::Null), k)),
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalers::MetricTarget;

    fn so(yaml: &str) -> ScaledObject {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn base() -> ScaledObject {
        so(r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: app, namespace: ns, uid: u1, labels: {team: a, drop: x}, annotations: {scaledobject.keda.sh/hpa-excluded-labels: "drop"}}
spec:
  scaleTargetRef: {name: app}
  triggers: [{type: cron, metadata: {}}]
"#)
    }

    fn ext(name: &str, v: f64, integer: bool) -> MetricSpec {
        MetricSpec::External {
            name: name.to_string(),
            target: MetricTarget {
                kind: MetricTargetType::AverageValue,
                value: v,
                integer,
            },
        }
    }

    #[test]
    fn target_quantities_match_keda_formatting() {
        let t = |v, integer| {
            target_quantity(&MetricTarget {
                kind: MetricTargetType::AverageValue,
                value: v,
                integer,
            })
        };
        assert_eq!(t(100.0, false), "100");
        assert_eq!(t(0.5, false), "500m");
        assert_eq!(t(2.5, false), "2500m");
        assert_eq!(t(1.0, true), "1");
        assert_eq!(t(-1.0, false), "0");
        assert_eq!(t(f64::NAN, false), "0");
    }

    #[test]
    fn labels_defaults_and_exclusions() {
        let hpa = render_hpa(&base(), &[(0, ext("s0-x", 1.0, true))], "main").expect("renders");
        let labels = hpa.metadata.labels.expect("labels");
        assert_eq!(labels["app.kubernetes.io/name"], "keda-hpa-app");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "keda-operator");
        assert_eq!(labels["team"], "a");
        assert!(!labels.contains_key("drop"));
        // KEDA labels the ScaledObject before building the HPA, so the HPA always has the name.
        assert_eq!(labels["scaledobject.keda.sh/name"], "app");
        let spec = hpa.spec.expect("spec");
        assert_eq!(spec.min_replicas, Some(1));
        assert_eq!(spec.max_replicas, 100);
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
    }

    #[test]
    fn duplicate_and_empty_metrics_fail() {
        let e = render_hpa(
            &base(),
            &[(0, ext("s0-x", 1.0, true)), (1, ext("s0-x", 1.0, true))],
            "v",
        );
        assert_eq!(
            e.map(|_| ()).map_err(|e| e.to_string()),
            Err("metricName s0-x defined multiple times in ScaledObject app".to_string())
        );
        let e = render_hpa(&base(), &[], "v");
        assert_eq!(
            e.map(|_| ()).map_err(|e| e.to_string()),
            Err("no metric specs returned from scalers for ScaledObject ns/app".to_string())
        );
    }

    #[test]
    fn label_value_trims() {
        let long = format!("{}-{}", "a".repeat(62), "b");
        assert_eq!(label_value(&long), "a".repeat(62));
    }

    #[test]
    fn update_rule_is_a_semantic_subset() {
        let desired = render_hpa(&base(), &[(0, ext("s0-x", 0.5, false))], "v").expect("renders");
        let mut live = desired.clone();
        assert!(!needs_update(&desired, &live));
        // The API server may add defaults and rewrite quantities; neither is a difference.
        if let Some(e) = live
            .spec
            .as_mut()
            .and_then(|s| s.metrics.as_mut())
            .and_then(|m| m[0].external.as_mut())
        {
            e.target.average_value = Some(K8sQuantity("0.5".to_string()));
        }
        live.metadata
            .labels
            .get_or_insert_default()
            .insert("extra".into(), "y".into());
        assert!(!needs_update(&desired, &live));
        if let Some(s) = live.spec.as_mut() {
            s.max_replicas = 7;
        }
        assert!(needs_update(&desired, &live));
        let mut live = desired.clone();
        if let Some(s) = live.spec.as_mut() {
            s.behavior = Some(Default::default());
        }
        assert!(needs_update(&desired, &live));
    }
}
