//! `cpu` / `memory` scaler (spec §12.5): contributes a `Resource` (or `ContainerResource`)
//! metric to the HPA, which reads it from metrics.k8s.io; ebb never queries it.

use futures::future::BoxFuture;

use super::{MetricSpec, MetricsAndActivity, ResourceTarget, Scaler, ScalerConfig, ScalerError};
use crate::crd::scaled_object::MetricTargetType;

/// A cpu or memory resource-metric trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuMemoryScaler {
    resource: String,
    container: Option<String>,
    target: ResourceTarget,
}

/// KEDA 2.17's log line for the deprecated `metadata.type` (removed in KEDA 2.18; ebb keeps
/// accepting it so manifests written for 2.14–2.17 need no change).
pub const TYPE_DEPRECATED: &str =
    "The 'type' setting is DEPRECATED and will be removed in v2.18 - Use 'metricType' instead.";

/// A cpu/memory setting KEDA refuses, with the field it is about (relative to the trigger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `metricType`, `metadata.type` or `metadata.value`.
    pub field: &'static str,
    /// KEDA's message.
    pub message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// The metric type in effect: the deprecated `metadata.type` fills `metricType` as in KEDA 2.17.
/// KEDA lets `metadata.type` silently win when both are set; ebb refuses the two when they
/// disagree, since one of them is then ignored without a word (docs/compatibility.md).
pub fn effective_metric_type(
    metadata: &std::collections::BTreeMap<String, String>,
    metric_type: Option<MetricTargetType>,
) -> Result<Option<MetricTargetType>, FieldError> {
    let Some(deprecated) = metadata.get("type").map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(metric_type);
    };
    let from_type = match deprecated {
        "Utilization" => MetricTargetType::Utilization,
        "AverageValue" => MetricTargetType::AverageValue,
        other => {
            return Err(field_error(
                "metadata.type",
                format!("unknown metric type: {other}, allowed values are 'Utilization' or 'AverageValue'"),
            ));
        }
    };
    match metric_type {
        Some(explicit) if explicit != from_type => Err(field_error(
            "metadata.type",
            format!(
                "metadata.type {} and metricType {} disagree; remove the deprecated metadata.type",
                from_type.as_str(),
                explicit.as_str()
            ),
        )),
        _ => Ok(Some(from_type)),
    }
}

/// Parses what a cpu/memory trigger contributes: the target and the container, or the first
/// setting KEDA would refuse.
pub fn parse_target(
    metadata: &std::collections::BTreeMap<String, String>,
    metric_type: Option<MetricTargetType>,
) -> Result<(ResourceTarget, Option<String>), FieldError> {
    let metric_type = effective_metric_type(metadata, metric_type)?;
    let value = metadata.get("value").map(|v| v.trim()).filter(|v| !v.is_empty());
    let container = metadata
        .get("containerName")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let target = match metric_type {
        Some(MetricTargetType::Utilization) => {
            let value = value.ok_or_else(|| field_error("metadata.value", missing_value()))?;
            ResourceTarget::Utilization(parse_int32(value).map_err(|e| field_error("metadata.value", e))?)
        }
        Some(MetricTargetType::AverageValue) => {
            let value = value.ok_or_else(|| field_error("metadata.value", missing_value()))?;
            // KEDA panics on a bad quantity (resource.MustParse); an error is kinder.
            crate::quantity::parse(value)
                .map_err(|e| field_error("metadata.value", format!("invalid quantity {value:?}: {e}")))?;
            ResourceTarget::AverageValue(value.to_string())
        }
        other => {
            return Err(field_error(
                "metricType",
                format!(
                    "unknown metric type: {}, allowed values are 'Utilization' or 'AverageValue'",
                    other.map(MetricTargetType::as_str).unwrap_or_default()
                ),
            ));
        }
    };
    Ok((target, container))
}

fn missing_value() -> String {
    ScalerError::MissingParameter {
        name: "value".to_string(),
        sources: vec![super::params::Source::Metadata],
    }
    .to_string()
}

impl CpuMemoryScaler {
    /// Parses the trigger metadata and the trigger's `metricType`.
    pub fn new(config: &ScalerConfig) -> Result<Self, ScalerError> {
        let resource = config.trigger_type.clone();
        let metric_type = config.metric_type_explicit.then_some(config.metric_type);
        let (target, container) = parse_target(&config.metadata, metric_type)
            .map_err(|e| ScalerError::Config(format!("error parsing {resource} metadata: {}", e.message)))?;
        Ok(Self {
            resource,
            container,
            target,
        })
    }
}

/// Go's `strconv.ParseInt(s, 10, 32)`, with its error text.
fn parse_int32(s: &str) -> Result<i32, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseInt: parsing {s:?}: invalid syntax"));
    }
    s.parse::<i32>()
        .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: value out of range"))
}

impl Scaler for CpuMemoryScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::Resource {
            resource: self.resource.clone(),
            container: self.container.clone(),
            target: self.target.clone(),
        }]
    }

    fn get_metrics_and_activity<'a>(
        &'a self,
        _metric_name: &'a str,
    ) -> BoxFuture<'a, Result<MetricsAndActivity, ScalerError>> {
        // The HPA reads resource metrics itself; for ebb the trigger is simply always active.
        Box::pin(async {
            Ok(MetricsAndActivity {
                values: Vec::new(),
                active: true,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ty: &str, metric_type: Option<MetricTargetType>, meta: &[(&str, &str)]) -> ScalerConfig {
        ScalerConfig {
            trigger_type: ty.into(),
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            metric_type: metric_type.unwrap_or_default(),
            metric_type_explicit: metric_type.is_some(),
            ..Default::default()
        }
    }

    use MetricTargetType::{AverageValue, Utilization, Value};

    type Meta = &'static [(&'static str, &'static str)];

    #[test]
    fn valid_metadata() {
        let cases: &[(&str, Option<MetricTargetType>, Meta, MetricSpec)] = &[
            (
                "cpu",
                Some(Utilization),
                &[("value", "50")],
                MetricSpec::Resource {
                    resource: "cpu".into(),
                    container: None,
                    target: ResourceTarget::Utilization(50),
                },
            ),
            (
                "memory",
                Some(AverageValue),
                &[("value", "1Gi"), ("containerName", "app")],
                MetricSpec::Resource {
                    resource: "memory".into(),
                    container: Some("app".into()),
                    target: ResourceTarget::AverageValue("1Gi".into()),
                },
            ),
            (
                "cpu",
                Some(AverageValue),
                &[("value", "500m"), ("containerName", "")],
                MetricSpec::Resource {
                    resource: "cpu".into(),
                    container: None,
                    target: ResourceTarget::AverageValue("500m".into()),
                },
            ),
            (
                "cpu",
                Some(Utilization),
                &[("value", "+7")],
                MetricSpec::Resource {
                    resource: "cpu".into(),
                    container: None,
                    target: ResourceTarget::Utilization(7),
                },
            ),
        ];
        for (ty, mt, meta, want) in cases {
            let s = CpuMemoryScaler::new(&config(ty, *mt, meta)).expect("valid");
            assert_eq!(s.metric_specs(), vec![want.clone()], "{meta:?}");
        }
    }

    #[test]
    fn invalid_metadata() {
        let unknown = "allowed values are 'Utilization' or 'AverageValue'";
        let cases: &[(Option<MetricTargetType>, Meta, &str)] = &[
            (
                None,
                &[("value", "50")],
                "error parsing cpu metadata: unknown metric type: , allowed",
            ),
            (
                Some(Value),
                &[("value", "50")],
                "unknown metric type: Value, allowed",
            ),
            (
                Some(Utilization),
                &[],
                "missing required parameter \"value\" in [triggerMetadata]",
            ),
            (
                Some(Utilization),
                &[("value", " ")],
                "missing required parameter \"value\"",
            ),
            (
                Some(Utilization),
                &[("value", "50.5")],
                "strconv.ParseInt: parsing \"50.5\": invalid syntax",
            ),
            (
                Some(Utilization),
                &[("value", "3000000000")],
                "strconv.ParseInt: parsing \"3000000000\": value out of range",
            ),
            (
                Some(AverageValue),
                &[("value", "lots")],
                "invalid quantity \"lots\"",
            ),
            (
                Some(AverageValue),
                &[("value", "50"), ("type", "Utilization")],
                "metadata.type Utilization and metricType AverageValue disagree",
            ),
            (
                None,
                &[("value", "50"), ("type", "Value")],
                "unknown metric type: Value, allowed",
            ),
        ];
        for (mt, meta, want) in cases {
            let e = CpuMemoryScaler::new(&config("cpu", *mt, meta)).expect_err("invalid");
            assert!(e.to_string().contains(want), "{meta:?}: {e}");
            if want.contains("unknown metric type") {
                assert!(e.to_string().contains(unknown));
            }
        }
    }

    /// KEDA 2.17 accepted the deprecated `metadata.type` and used it as `metricType`.
    #[test]
    fn deprecated_metadata_type_fills_metric_type() {
        let cases: &[(Option<MetricTargetType>, Meta, ResourceTarget)] = &[
            (
                None,
                &[("value", "50"), ("type", "Utilization")],
                ResourceTarget::Utilization(50),
            ),
            (
                None,
                &[("value", "1Gi"), ("type", " AverageValue ")],
                ResourceTarget::AverageValue("1Gi".into()),
            ),
            // Both given and agreeing: accepted.
            (
                Some(Utilization),
                &[("value", "70"), ("type", "Utilization")],
                ResourceTarget::Utilization(70),
            ),
            // An empty type is no type at all.
            (
                Some(Utilization),
                &[("value", "70"), ("type", "")],
                ResourceTarget::Utilization(70),
            ),
        ];
        for (mt, meta, want) in cases {
            let s = CpuMemoryScaler::new(&config("memory", *mt, meta)).expect("accepted");
            assert_eq!(
                s.metric_specs(),
                vec![MetricSpec::Resource {
                    resource: "memory".into(),
                    container: None,
                    target: want.clone(),
                }],
                "{meta:?}"
            );
        }
        let e = parse_target(
            &[("value", "50"), ("type", "AverageValue")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Some(Utilization),
        )
        .expect_err("disagree");
        assert_eq!(e.field, "metadata.type");
    }

    #[tokio::test]
    async fn always_active_without_values() {
        let s =
            CpuMemoryScaler::new(&config("memory", Some(Utilization), &[("value", "80")])).expect("valid");
        let m = s.get_metrics_and_activity("anything").await.expect("reads");
        assert!(m.active);
        assert!(m.values.is_empty());
    }
}
