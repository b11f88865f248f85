//! `cpu` / `memory` scaler (spec §12.5): contributes a `Resource` (or `ContainerResource`)
//! metric to the HPA, which reads it from metrics.k8s.io; ebb never queries it.

use futures::future::BoxFuture;

use super::{
    MetricSpec, MetricsAndActivity, ResourceTarget, Scaler, ScalerConfig, ScalerError, params::Params,
};
use crate::crd::scaled_object::MetricTargetType;

/// A cpu or memory resource-metric trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuMemoryScaler {
    resource: String,
    container: Option<String>,
    target: ResourceTarget,
}

const TYPE_REMOVED: &str =
    "The 'type' setting is DEPRECATED and is removed in v2.18 - Use 'metricType' instead.";

impl CpuMemoryScaler {
    /// Parses the trigger metadata and the trigger's `metricType`.
    pub fn new(config: &ScalerConfig) -> Result<Self, ScalerError> {
        let resource = config.trigger_type.clone();
        let err = |msg: String| ScalerError::Config(format!("error parsing {resource} metadata: {msg}"));
        let p = Params::new(config);
        if p.meta("type").is_set() {
            return Err(err(TYPE_REMOVED.to_string()));
        }
        let value: String = p.meta("value").required().map_err(|e| err(e.to_string()))?;
        let container: Option<String> = p
            .meta("containerName")
            .optional()
            .map_err(|e| err(e.to_string()))?;
        let metric_type = config.metric_type_explicit.then_some(config.metric_type);
        let target = match metric_type {
            Some(MetricTargetType::Utilization) => {
                ResourceTarget::Utilization(parse_int32(&value).map_err(err)?)
            }
            Some(MetricTargetType::AverageValue) => {
                // KEDA panics on a bad quantity (resource.MustParse); an error is kinder.
                crate::quantity::parse(&value)
                    .map_err(|e| err(format!("invalid quantity {value:?}: {e}")))?;
                ResourceTarget::AverageValue(value)
            }
            other => {
                return Err(err(format!(
                    "unknown metric type: {}, allowed values are 'Utilization' or 'AverageValue'",
                    other.map(MetricTargetType::as_str).unwrap_or_default()
                )));
            }
        };
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
                Some(Utilization),
                &[("value", "50"), ("type", "Utilization")],
                "Use 'metricType' instead",
            ),
            (
                None,
                &[("value", "50"), ("type", "Utilization")],
                "Use 'metricType' instead",
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

    #[tokio::test]
    async fn always_active_without_values() {
        let s =
            CpuMemoryScaler::new(&config("memory", Some(Utilization), &[("value", "80")])).expect("valid");
        let m = s.get_metrics_and_activity("anything").await.expect("reads");
        assert!(m.active);
        assert!(m.values.is_empty());
    }
}
