//! The HorizontalPodAutoscaler controller of kube-controller-manager (`horizontal.go` and
//! `replica_calculator.go`), for external metrics, as a pure model: time, the target's replica
//! counts and the metric values are inputs; the replica count, the conditions and the events the
//! controller would produce are outputs.
//!
//! Written from Kubernetes' behaviour rather than reusing anything of ebb's, because `ebb simulate`
//! and `ebb explain` must predict what the real controller does, quirks included (the 2×/4
//! scale-up limit without `behavior`, the single recycled stabilization sample, truncating
//! Percent scale-down policies). Every sync is `O(metrics + window / sync period)`.
//!
//! ```text
//! HpaConfig::from_hpa(HPA spec, flags) ─┐
//! Observed { now, replicas, ready, metric sums } ─ HpaState::sync ─→ SyncResult
//!      (recommendations, scale events and conditions stay in HpaState, as in the controller)
//! ```

use std::fmt::Write as _;

use k8s_openapi::{
    api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerSpec, MetricSpec},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

use crate::quantity;

/// `--horizontal-pod-autoscaler-sync-period` default.
pub const DEFAULT_SYNC_PERIOD_MS: i64 = 15_000;
/// `--horizontal-pod-autoscaler-tolerance` default.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-downscale-stabilization` default.
pub const DEFAULT_DOWNSCALE_STABILIZATION_MS: i64 = 300_000;

/// The controller-manager flags the model honours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerFlags {
    /// Dead band around a usage ratio of 1.0, both directions.
    pub tolerance: f64,
    /// Scale-down stabilization window without `behavior` (and its default with it).
    pub downscale_stabilization_ms: i64,
}

impl Default for ControllerFlags {
    fn default() -> Self {
        ControllerFlags {
            tolerance: DEFAULT_TOLERANCE,
            downscale_stabilization_ms: DEFAULT_DOWNSCALE_STABILIZATION_MS,
        }
    }
}

/// Which branch of the external-metric calculation a metric takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `target.value`: the total against the target, scaled by ready pods.
    Value,
    /// `target.averageValue`: the total divided by the target gives the replica count.
    AverageValue,
}

/// One `type: External` metric of the HPA.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricConfig {
    /// `external.metric.name`.
    pub name: String,
    /// `external metric <name>(<selector>)`, as the controller names it in messages.
    pub describe: String,
    /// `<namespace>/<name>/<selector>`, as the controller names it in fetch errors.
    fetch_ref: String,
    /// The branch and the target in milli-units; `None` when neither target field is set.
    pub target: Option<(TargetKind, i64)>,
}

impl MetricConfig {
    /// An external metric of an HPA in `namespace` with its selector and target.
    pub fn new(
        namespace: &str,
        name: &str,
        selector: Option<&LabelSelector>,
        target: Option<(TargetKind, i64)>,
    ) -> Self {
        let sel = go_selector(selector);
        MetricConfig {
            name: name.to_string(),
            describe: format!("external metric {name}({sel})"),
            fetch_ref: format!("{namespace}/{name}/{sel}"),
            target,
        }
    }
}

/// How a direction's rate policies combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One `behavior.*.policies` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Add or remove at most `value` pods per `period_ms`.
    Pods {
        /// Pods per period.
        value: i32,
        /// Period length.
        period_ms: i64,
    },
    /// Add or remove at most `value` percent of the period's starting count per `period_ms`.
    Percent {
        /// Percent per period.
        value: i32,
        /// Period length.
        period_ms: i64,
    },
}

impl Policy {
    fn period_ms(&self) -> i64 {
        match *self {
            Policy::Pods { period_ms, .. } | Policy::Percent { period_ms, .. } => period_ms,
        }
    }
}

/// One direction of `spec.behavior`, after API defaulting.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Stabilization window.
    pub window_ms: i64,
    /// How policies combine.
    pub select: SelectPolicy,
    /// Rate policies.
    pub policies: Vec<Policy>,
}

impl Rules {
    fn longest_period_ms(&self) -> i64 {
        self.policies.iter().map(Policy::period_ms).max().unwrap_or(0)
    }
}

/// The HPA as the controller uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaConfig {
    /// `spec.minReplicas` (default 1).
    pub min_replicas: i32,
    /// `spec.maxReplicas`.
    pub max_replicas: i32,
    /// The external metrics, in spec order.
    pub metrics: Vec<MetricConfig>,
    /// `spec.behavior` after defaulting: (scaleUp, scaleDown).
    pub behavior: Option<(Rules, Rules)>,
    /// Tolerance below 1.0 (scale down).
    pub tolerance_down: f64,
    /// Tolerance above 1.0 (scale up).
    pub tolerance_up: f64,
    /// Downscale window without behavior.
    pub downscale_stabilization_ms: i64,
}

/// The HPA cannot be modelled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The HPA has no spec.
    #[error("the HorizontalPodAutoscaler has no spec")]
    NoSpec,
    /// A quantity in the spec does not parse.
    #[error("{field}: {message}")]
    Quantity {
        /// Where.
        field: String,
        /// Why.
        message: String,
    },
    /// A policy type other than Pods or Percent.
    #[error("{field}: unknown scaling policy type {value:?}")]
    PolicyType {
        /// Where.
        field: String,
        /// The type.
        value: String,
    },
}

/// Go's `%+v` of a `*metav1.LabelSelector`, which the controller prints in messages.
fn go_selector(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else {
        return "nil".to_string();
    };
    let mut s = String::from("&LabelSelector{MatchLabels:map[string]string{");
    for (k, v) in sel.match_labels.iter().flatten() {
        let _ = write!(s, "{k}: {v},");
    }
    s.push_str("},MatchExpressions:[]LabelSelectorRequirement{");
    for e in sel.match_expressions.iter().flatten() {
        let _ = write!(
            s,
            "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
            e.key,
            e.operator,
            e.values.as_deref().unwrap_or_default().join(" ")
        );
    }
    s.push_str("},}");
    s
}

fn milli(
    field: &str,
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<i64, ModelError> {
    quantity::parse(&q.0)
        .map(|q| q.milli_value())
        .map_err(|e| ModelError::Quantity {
            field: field.to_string(),
            message: e.to_string(),
        })
}

fn approx(
    field: &str,
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<f64, ModelError> {
    quantity::parse(&q.0)
        .map(|q| q.as_f64())
        .map_err(|e| ModelError::Quantity {
            field: field.to_string(),
            message: e.to_string(),
        })
}

/// `GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules` (API defaulting), then the
/// controller's substitution of the downscale flag for an unset scale-down window.
fn rules(
    field: &str,
    given: Option<&HPAScalingRules>,
    up: bool,
    down_window_ms: i64,
) -> Result<Rules, ModelError> {
    let default_policies = if up {
        vec![
            Policy::Pods {
                value: 4,
                period_ms: 15_000,
            },
            Policy::Percent {
                value: 100,
                period_ms: 15_000,
            },
        ]
    } else {
        vec![Policy::Percent {
            value: 100,
            period_ms: 15_000,
        }]
    };
    let policies = match given.and_then(|g| g.policies.as_ref()) {
        None => default_policies,
        Some(ps) => ps
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let period_ms = i64::from(p.period_seconds) * 1000;
                match p.type_.as_str() {
                    "Pods" => Ok(Policy::Pods {
                        value: p.value,
                        period_ms,
                    }),
                    "Percent" => Ok(Policy::Percent {
                        value: p.value,
                        period_ms,
                    }),
                    other => Err(ModelError::PolicyType {
                        field: format!("{field}.policies[{i}].type"),
                        value: other.to_string(),
                    }),
                }
            })
            .collect::<Result<_, _>>()?,
    };
    let select = match given.and_then(|g| g.select_policy.as_deref()) {
        Some("Min") => SelectPolicy::Min,
        Some("Disabled") => SelectPolicy::Disabled,
        _ => SelectPolicy::Max,
    };
    let window_ms = given
        .and_then(|g| g.stabilization_window_seconds)
        .map(|s| i64::from(s) * 1000)
        .unwrap_or(if up { 0 } else { down_window_ms });
    Ok(Rules {
        window_ms,
        select,
        policies,
    })
}

impl HpaConfig {
    /// Reads an `autoscaling/v2` HPA spec. Metrics other than `External` are returned apart
    /// (by index) and left out: the model has no pods to measure.
    pub fn from_spec(
        spec: &HorizontalPodAutoscalerSpec,
        namespace: &str,
        flags: &ControllerFlags,
    ) -> Result<(HpaConfig, Vec<usize>), ModelError> {
        let mut metrics = Vec::new();
        let mut skipped = Vec::new();
        for (i, m) in spec.metrics.iter().flatten().enumerate() {
            match m {
                MetricSpec {
                    external: Some(ext),
                    type_,
                    ..
                } if type_ == "External" => {
                    let target = if let Some(q) = &ext.target.average_value {
                        Some((
                            TargetKind::AverageValue,
                            milli(&format!("spec.metrics[{i}].external.target.averageValue"), q)?,
                        ))
                    } else if let Some(q) = &ext.target.value {
                        Some((
                            TargetKind::Value,
                            milli(&format!("spec.metrics[{i}].external.target.value"), q)?,
                        ))
                    } else {
                        None
                    };
                    metrics.push(MetricConfig::new(
                        namespace,
                        &ext.metric.name,
                        ext.metric.selector.as_ref(),
                        target,
                    ));
                }
                _ => skipped.push(i),
            }
        }
        let mut tolerance_up = flags.tolerance;
        let mut tolerance_down = flags.tolerance;
        let behavior = match &spec.behavior {
            None => None,
            Some(b) => {
                // HPAConfigurableTolerance (beta, on by default from 1.35): a direction's own
                // tolerance replaces the flag.
                if let Some(t) = b.scale_up.as_ref().and_then(|r| r.tolerance.as_ref()) {
                    tolerance_up = approx("spec.behavior.scaleUp.tolerance", t)?;
                }
                if let Some(t) = b.scale_down.as_ref().and_then(|r| r.tolerance.as_ref()) {
                    tolerance_down = approx("spec.behavior.scaleDown.tolerance", t)?;
                }
                Some((
                    rules(
                        "spec.behavior.scaleUp",
                        b.scale_up.as_ref(),
                        true,
                        flags.downscale_stabilization_ms,
                    )?,
                    rules(
                        "spec.behavior.scaleDown",
                        b.scale_down.as_ref(),
                        false,
                        flags.downscale_stabilization_ms,
                    )?,
                ))
            }
        };
        Ok((
            HpaConfig {
                min_replicas: spec.min_replicas.unwrap_or(1),
                max_replicas: spec.max_replicas,
                metrics,
                behavior,
                tolerance_down,
                tolerance_up,
                downscale_stabilization_ms: flags.downscale_stabilization_ms,
            },
            skipped,
        ))
    }

    fn within_tolerance(&self, ratio: f64) -> bool {
        (1.0 - self.tolerance_down) <= ratio && ratio <= (1.0 + self.tolerance_up)
    }
}

/// What the controller reads in one sync.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The clock, in milliseconds.
    pub now_ms: i64,
    /// The target's `/scale` `spec.replicas`.
    pub spec_replicas: i32,
    /// The target's `/scale` `status.replicas` (pods that exist).
    pub status_replicas: i32,
    /// Pods selected by the target that are Running and Ready.
    pub ready_pods: i32,
    /// Per metric of [`HpaConfig::metrics`]: the items' values in milli-units, or the
    /// metrics API's error. An empty list is the API's "no metrics returned" error.
    pub metrics: &'a [Result<&'a [i64], String>],
}

/// One of the HPA's status conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaCondition {
    /// `AbleToScale`, `ScalingActive` or `ScalingLimited`.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// Reason, e.g. `TooManyReplicas`.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// An event the controller records on the HPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// Reason, e.g. `SuccessfulRescale`.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// One metric's part of a sync.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    /// The replica count this metric proposes, or why it is invalid.
    pub proposal: Result<i32, String>,
    /// `currentMetrics[].external.current` in milli-units: the total for `Value`, the total
    /// per replica (rounded up) for `AverageValue`.
    pub current_milli: Option<i64>,
}

/// What one sync decided.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    /// The replica count after the sync (`status.desiredReplicas`; equal to the current count
    /// when nothing changes).
    pub desired: i32,
    /// The controller writes `/scale`.
    pub rescale: bool,
    /// The largest valid proposal before stabilization and limits.
    pub metric_replicas: Option<i32>,
    /// Per metric, in [`HpaConfig::metrics`] order (empty when metrics were not consulted).
    pub metrics: Vec<MetricResult>,
    /// Events recorded in this sync.
    pub events: Vec<HpaEvent>,
}

/// What the controller keeps in memory for one HPA between syncs.
#[derive(Debug, Clone, Default)]
pub struct HpaState {
    recommendations: Option<Vec<(i64, i32)>>,
    scale_up_events: Vec<(i64, i32)>,
    scale_down_events: Vec<(i64, i32)>,
    conditions: Vec<HpaCondition>,
}

/// `ScalingLimited` reasons and messages.
const DESIRED_WITHIN_RANGE: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const SCALE_UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const SCALE_DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// Saturating sum of the items, as `GetExternalMetric` does since Kubernetes 1.32.
fn sum(items: &[i64]) -> i64 {
    items.iter().fold(0i64, |a, v| a.saturating_add(*v))
}

/// `int32(math.Ceil(x))` capped at int32's range, as the replica calculator does since 1.32.
fn ceil_replicas(x: f64) -> i32 {
    let c = x.ceil();
    if c.is_nan() {
        0
    } else if c >= f64::from(i32::MAX) {
        i32::MAX
    } else if c <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        c as i32
    }
}

impl HpaState {
    /// A controller that already remembers `recommendations` and scale events, each
    /// `(time ms, replicas)`; `None` recommendations means the HPA was never synced, so the
    /// first sync records the current count (`recordInitialRecommendation`).
    pub fn with_history(
        recommendations: Option<Vec<(i64, i32)>>,
        scale_up_events: Vec<(i64, i32)>,
        scale_down_events: Vec<(i64, i32)>,
    ) -> HpaState {
        HpaState {
            recommendations,
            scale_up_events,
            scale_down_events,
            conditions: Vec::new(),
        }
    }

    /// The normalization step alone (stabilization, then the 2×/4 rule or the behavior's
    /// rate policies, then min/max): what the controller makes of a metrics proposal.
    pub fn normalize_desired(
        &mut self,
        cfg: &HpaConfig,
        now_ms: i64,
        current: i32,
        prenormalized: i32,
    ) -> i32 {
        self.recommendations.get_or_insert_with(Vec::new);
        if cfg.behavior.is_none() {
            self.normalize(cfg, now_ms, current, prenormalized)
        } else {
            self.normalize_with_behaviors(cfg, now_ms, current, prenormalized)
        }
    }

    /// The conditions as the HPA status would show them now.
    pub fn conditions(&self) -> &[HpaCondition] {
        &self.conditions
    }

    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&HpaCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    fn set(&mut self, type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) {
        let c = HpaCondition {
            type_,
            status,
            reason,
            message: message.into(),
        };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(old) => *old = c,
            None => self.conditions.push(c),
        }
    }

    /// One `reconcileAutoscaler` of the HPA described by `cfg`.
    pub fn sync(&mut self, cfg: &HpaConfig, obs: &Observed<'_>) -> SyncResult {
        let now = obs.now_ms;
        let current = obs.spec_replicas;
        let mut events = Vec::new();
        self.set(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        );
        // recordInitialRecommendation: the first sync remembers the current count.
        self.recommendations.get_or_insert_with(|| vec![(now, current)]);
        let mut metrics = Vec::new();
        let mut metric_replicas = None;
        let (desired, rescale, reason) = if current == 0 && cfg.min_replicas != 0 {
            self.set(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
            (0, false, String::new())
        } else if current > cfg.max_replicas {
            (
                cfg.max_replicas,
                true,
                "Current number of replicas above Spec.MaxReplicas".to_string(),
            )
        } else if current < cfg.min_replicas {
            (
                cfg.min_replicas,
                true,
                "Current number of replicas below Spec.MinReplicas".to_string(),
            )
        } else {
            let computed = self.compute_replicas_for_metrics(cfg, obs, &mut events);
            metrics = computed.metrics;
            let Some((proposal, metric)) = computed.proposal else {
                let message = computed.error.unwrap_or_default();
                events.push(HpaEvent {
                    warning: true,
                    reason: "FailedComputeMetricsReplicas",
                    message,
                });
                return SyncResult {
                    desired: current,
                    rescale: false,
                    metric_replicas: None,
                    metrics,
                    events,
                };
            };
            metric_replicas = Some(proposal);
            // reconcileAutoscaler starts from desiredReplicas = 0 and takes the metrics' value
            // when larger, so a proposal of 0 leaves no metric named.
            let mut rescale_metric = "";
            let mut desired = 0;
            if proposal > desired {
                desired = proposal;
                rescale_metric = &metric;
            }
            let reason = if desired > current {
                format!("{rescale_metric} above target")
            } else if desired < current {
                "All metrics below target".to_string()
            } else {
                String::new()
            };
            let desired = if cfg.behavior.is_none() {
                self.normalize(cfg, now, current, desired)
            } else {
                self.normalize_with_behaviors(cfg, now, current, desired)
            };
            (desired, desired != current, reason)
        };
        let desired = if rescale {
            self.set(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            events.push(HpaEvent {
                warning: false,
                reason: "SuccessfulRescale",
                message: format!("New size: {desired}; reason: {reason}"),
            });
            self.store_scale_event(cfg, now, current, desired);
            desired
        } else {
            current
        };
        SyncResult {
            desired,
            rescale,
            metric_replicas,
            metrics,
            events,
        }
    }

    fn compute_replicas_for_metrics(
        &mut self,
        cfg: &HpaConfig,
        obs: &Observed<'_>,
        events: &mut Vec<HpaEvent>,
    ) -> Computed {
        let mut replicas = 0i32;
        let mut metric = String::new();
        let mut results = Vec::with_capacity(cfg.metrics.len());
        let mut invalid = 0usize;
        let mut first_error: Option<String> = None;
        for (i, m) in cfg.metrics.iter().enumerate() {
            let read = obs.metrics.get(i).cloned().unwrap_or(Ok(&[]));
            let r = external_proposal(cfg, m, obs, read);
            match &r.proposal {
                Ok(p) => {
                    if replicas == 0 || *p > replicas {
                        replicas = *p;
                        metric.clone_from(&m.describe);
                    }
                }
                Err(e) => {
                    events.push(HpaEvent {
                        warning: true,
                        reason: "FailedGetExternalMetric",
                        message: e.clone(),
                    });
                    if invalid == 0 {
                        first_error = Some(e.clone());
                    }
                    invalid += 1;
                }
            }
            results.push(r);
        }
        let error = first_error.as_ref().map(|e| {
            format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {e}",
                cfg.metrics.len()
            )
        });
        if invalid >= cfg.metrics.len() || (invalid > 0 && replicas < obs.spec_replicas) {
            let message = match &first_error {
                Some(e) => format!("the HPA was unable to compute the replica count: {e}"),
                None => "the HPA was unable to compute the replica count: no metrics".to_string(),
            };
            self.set("ScalingActive", false, "FailedGetExternalMetric", message);
            return Computed {
                proposal: None,
                metrics: results,
                error: error.or_else(|| Some("invalid metrics (0 invalid out of 0)".to_string())),
            };
        }
        self.set(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {metric}"),
        );
        Computed {
            proposal: Some((replicas, metric)),
            metrics: results,
            error,
        }
    }

    /// `normalizeDesiredReplicas`: the recycled-sample stabilization and the 2×/4 rule.
    fn normalize(&mut self, cfg: &HpaConfig, now: i64, current: i32, prenormalized: i32) -> i32 {
        let cutoff = now - cfg.downscale_stabilization_ms;
        let recs = self.recommendations.get_or_insert_with(Vec::new);
        let mut max = prenormalized;
        let mut old = None;
        for (i, (t, r)) in recs.iter().enumerate() {
            if *t < cutoff {
                old = Some(i);
            } else if *r > max {
                max = *r;
            }
        }
        match old {
            Some(i) => recs[i] = (now, prenormalized),
            None => recs.push((now, prenormalized)),
        }
        if max != prenormalized {
            self.set(
                "AbleToScale",
                true,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            );
        } else {
            self.set(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
            );
        }
        let scale_up_limit = (2.0 * f64::from(current)).max(4.0) as i32;
        let (maximum, limiting) = if cfg.max_replicas > scale_up_limit {
            (scale_up_limit, SCALE_UP_LIMIT)
        } else {
            (cfg.max_replicas, TOO_MANY)
        };
        let (desired, (reason, message)) = if max < cfg.min_replicas {
            (cfg.min_replicas, TOO_FEW)
        } else if max > maximum {
            (maximum, limiting)
        } else {
            (max, DESIRED_WITHIN_RANGE)
        };
        self.set("ScalingLimited", desired != max, reason, message);
        desired
    }

    /// `normalizeDesiredReplicasWithBehaviors`: two-sided stabilization, then rate policies.
    fn normalize_with_behaviors(
        &mut self,
        cfg: &HpaConfig,
        now: i64,
        current: i32,
        prenormalized: i32,
    ) -> i32 {
        let Some((up, down)) = &cfg.behavior else {
            return prenormalized;
        };
        let up_cutoff = now - up.window_ms;
        let down_cutoff = now - down.window_ms;
        let recs = self.recommendations.get_or_insert_with(Vec::new);
        let mut up_rec = prenormalized;
        let mut down_rec = prenormalized;
        let mut old = None;
        for (i, (t, r)) in recs.iter().enumerate() {
            if *t > up_cutoff {
                up_rec = up_rec.min(*r);
            }
            if *t > down_cutoff {
                down_rec = down_rec.max(*r);
            }
            if *t < up_cutoff && *t < down_cutoff {
                old = Some(i);
            }
        }
        let stabilized = current.max(up_rec).min(down_rec);
        match old {
            Some(i) => recs[i] = (now, prenormalized),
            None => recs.push((now, prenormalized)),
        }
        if stabilized != prenormalized {
            if prenormalized >= current {
                self.set(
                    "AbleToScale",
                    true,
                    "ScaleUpStabilized",
                    "recent recommendations were lower than current one, applying the lowest recent recommendation",
                );
            } else {
                self.set(
                    "AbleToScale",
                    true,
                    "ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation",
                );
            }
        } else {
            self.set(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
            );
        }
        let (desired, (reason, message)) = self.behavior_rate(cfg, up, down, now, current, stabilized);
        self.set("ScalingLimited", desired != stabilized, reason, message);
        desired
    }

    /// `convertDesiredReplicasWithBehaviorRate`.
    fn behavior_rate(
        &self,
        cfg: &HpaConfig,
        up: &Rules,
        down: &Rules,
        now: i64,
        current: i32,
        desired: i32,
    ) -> (i32, (&'static str, &'static str)) {
        if desired > current {
            let limit = self.rate_limit(up, now, current, true).max(current);
            let (maximum, limiting) = if cfg.max_replicas > limit {
                (limit, SCALE_UP_LIMIT)
            } else {
                (cfg.max_replicas, TOO_MANY)
            };
            if desired > maximum {
                return (maximum, limiting);
            }
        } else if desired < current {
            let limit = self.rate_limit(down, now, current, false).min(current);
            let (minimum, limiting) = if cfg.min_replicas < limit {
                (limit, SCALE_DOWN_LIMIT)
            } else {
                (cfg.min_replicas, TOO_FEW)
            };
            if desired < minimum {
                return (minimum, limiting);
            }
        }
        (desired, DESIRED_WITHIN_RANGE)
    }

    /// `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors`.
    fn rate_limit(&self, rules: &Rules, now: i64, current: i32, up: bool) -> i32 {
        // For scale-up the largest change is the largest limit; for scale-down the smallest.
        let pick_largest = match rules.select {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Max => up,
            SelectPolicy::Min => !up,
        };
        let mut result = if pick_largest { i32::MIN } else { i32::MAX };
        for p in &rules.policies {
            let cutoff = now - p.period_ms();
            let change = |events: &[(i64, i32)]| -> i32 {
                events
                    .iter()
                    .filter(|(t, _)| *t > cutoff)
                    .fold(0i32, |a, (_, c)| a.saturating_add(*c))
            };
            let start = current
                .saturating_sub(change(&self.scale_up_events))
                .saturating_add(change(&self.scale_down_events));
            let proposed = match (*p, up) {
                (Policy::Pods { value, .. }, true) => start.saturating_add(value),
                (Policy::Pods { value, .. }, false) => start.saturating_sub(value),
                (Policy::Percent { value, .. }, true) => {
                    // Rounded up, or a small target would never grow.
                    ceil_replicas(f64::from(start) * (1.0 + f64::from(value) / 100.0))
                }
                (Policy::Percent { value, .. }, false) => {
                    // Go's int32() conversion truncates toward zero.
                    (f64::from(start) * (1.0 - f64::from(value) / 100.0)) as i32
                }
            };
            result = if pick_largest {
                result.max(proposed)
            } else {
                result.min(proposed)
            };
        }
        result
    }

    /// `storeScaleEvent`: only with behavior; an outdated event's slot is reused.
    fn store_scale_event(&mut self, cfg: &HpaConfig, now: i64, prev: i32, new: i32) {
        let Some((up, down)) = &cfg.behavior else {
            return;
        };
        let (events, longest, change) = if new > prev {
            (&mut self.scale_up_events, up.longest_period_ms(), new - prev)
        } else {
            (&mut self.scale_down_events, down.longest_period_ms(), prev - new)
        };
        let cutoff = now - longest;
        match events.iter_mut().find(|(t, _)| *t < cutoff) {
            Some(slot) => *slot = (now, change),
            None => events.push((now, change)),
        }
    }
}

struct Computed {
    proposal: Option<(i32, String)>,
    metrics: Vec<MetricResult>,
    error: Option<String>,
}

/// `computeStatusForExternalMetric` with the replica calculator's two external branches.
fn external_proposal(
    cfg: &HpaConfig,
    m: &MetricConfig,
    obs: &Observed<'_>,
    read: Result<&[i64], String>,
) -> MetricResult {
    let fail = |e: String| MetricResult {
        proposal: Err(format!("failed to get {} external metric: {e}", m.name)),
        current_milli: None,
    };
    let Some((kind, target)) = m.target else {
        return MetricResult {
            proposal: Err(
                "invalid external metric source: neither a value target nor an average value target was set"
                    .to_string(),
            ),
            current_milli: None,
        };
    };
    let items = match read {
        Ok([]) => Err("no metrics returned from external metrics API".to_string()),
        Ok(items) => Ok(items),
        Err(e) => Err(e),
    };
    let usage = match items {
        Ok(items) => sum(items),
        Err(e) => return fail(format!("unable to get external metric {}: {e}", m.fetch_ref)),
    };
    match kind {
        TargetKind::AverageValue => {
            let status = obs.status_replicas;
            let ratio = usage as f64 / (target as f64 * f64::from(status));
            let proposal = if cfg.within_tolerance(ratio) {
                status
            } else {
                ceil_replicas(usage as f64 / target as f64)
            };
            let per_pod = (usage as f64 / f64::from(status)).ceil();
            MetricResult {
                proposal: Ok(proposal),
                current_milli: per_pod.is_finite().then_some(per_pod as i64),
            }
        }
        TargetKind::Value => {
            let current = obs.spec_replicas;
            let ratio = usage as f64 / target as f64;
            let proposal = if current == 0 {
                Ok(ceil_replicas(ratio))
            } else if cfg.within_tolerance(ratio) {
                Ok(current)
            } else if obs.status_replicas <= 0 {
                Err("unable to calculate ready pods: no pods returned by selector while calculating replica count"
                    .to_string())
            } else {
                Ok(ceil_replicas(ratio * f64::from(obs.ready_pods)))
            };
            match proposal {
                Ok(p) => MetricResult {
                    proposal: Ok(p),
                    current_milli: Some(usage),
                },
                Err(e) => fail(e),
            }
        }
    }
}

#[cfg(test)]
mod tests;
