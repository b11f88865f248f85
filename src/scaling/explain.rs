//! `ebb explain`'s view of one ScaledObject and its verdict: why it has this replica count now,
//! in one line of plain words, from what the caller gathered (ebb's cache and counters, or the
//! cluster's HPA and scale target). Pure: the time is a parameter.
//!
//! The per-metric proposals come from the Kubernetes HPA model
//! ([`hpa_controller`](super::hpa_controller)), so the verdict says what the controller computes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hpa_controller::{HpaConfig, HpaState, MetricConfig, Observed, TargetKind};

/// A status condition (the ScaledObject's or the HPA's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// Type, e.g. `Ready`, `ScalingLimited`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Reason.
    #[serde(default)]
    pub reason: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// One trigger (one metric of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerView {
    /// Position in `spec.triggers`.
    pub index: usize,
    /// Trigger type.
    #[serde(rename = "type")]
    pub trigger_type: String,
    /// Trigger name (may be empty).
    #[serde(default)]
    pub name: String,
    /// HPA metric name (`None` for cpu/memory or a trigger that cannot be built).
    pub metric: Option<String>,
    /// Current value (sum of the scaler's values).
    pub value: Option<f64>,
    /// Seconds since the upstream answered.
    pub value_age_seconds: Option<f64>,
    /// Where the value comes from: `cache`, `fresh read` or `hpa` (the HPA's currentMetrics).
    #[serde(default)]
    pub value_source: String,
    /// HPA target.
    pub target: Option<f64>,
    /// `AverageValue`, `Value` or `Utilization`.
    pub target_type: Option<String>,
    /// The value must exceed it for the trigger to be active.
    pub activation_threshold: Option<f64>,
    /// The scaler's activity at the last read.
    pub active: Option<bool>,
    /// The last read's error.
    pub error: Option<String>,
    /// Consecutive failures (fallback counter).
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Fallback answers for this metric now.
    #[serde(default)]
    pub fallback_active: bool,
    /// TriggerAuthentication parameters resolved (names only).
    #[serde(default)]
    pub auth_fields: Vec<String>,
    /// Why the trigger cannot be built at all.
    pub broken: Option<String>,
}

/// The HPA ebb manages for the object, as the cluster shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaView {
    /// HPA name.
    pub name: String,
    /// `status.desiredReplicas`.
    pub desired_replicas: Option<i32>,
    /// `status.currentReplicas`.
    pub current_replicas: Option<i32>,
    /// `spec.minReplicas`.
    pub min_replicas: Option<i32>,
    /// `spec.maxReplicas`.
    pub max_replicas: Option<i32>,
    /// `status.currentMetrics` (external): metric name → value (average or total).
    #[serde(default)]
    pub current_metrics: BTreeMap<String, f64>,
    /// `status.conditions`.
    #[serde(default)]
    pub conditions: Vec<ConditionView>,
}

/// Pause annotations in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseView {
    /// `autoscaling.keda.sh/paused` is true.
    #[serde(default)]
    pub paused: bool,
    /// `autoscaling.keda.sh/paused-replicas`.
    pub paused_replicas: Option<String>,
    /// `autoscaling.keda.sh/paused-scale-in`.
    #[serde(default)]
    pub scale_in: bool,
    /// `autoscaling.keda.sh/paused-scale-out`.
    #[serde(default)]
    pub scale_out: bool,
}

/// Everything `ebb explain` shows for one ScaledObject.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView {
    /// The plain-words verdict (filled by [`verdict`]); first, so it is what a reader sees first.
    #[serde(default)]
    pub verdict: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Who read the triggers: `local` or `metrics-server` (an admin port), `offline read`, or
    /// for the cluster view a sentence naming which.
    pub source: String,
    /// The target's `spec.replicas`, when known.
    pub replicas: Option<i32>,
    /// Ready pods of the target, when known.
    pub ready_pods: Option<i32>,
    /// `minReplicaCount` (default 0).
    pub min_replica_count: i32,
    /// `maxReplicaCount` (default 100).
    pub max_replica_count: i32,
    /// `idleReplicaCount`.
    pub idle_replica_count: Option<i32>,
    /// `cooldownPeriod` seconds.
    pub cooldown_period: i64,
    /// `pollingInterval` seconds.
    pub polling_interval: i64,
    /// `status.lastActiveTime`.
    pub last_active_time: Option<String>,
    /// Seconds until KEDA scales to zero/idle, when it is counting down.
    pub cooldown_left_seconds: Option<i64>,
    /// Seconds since the object was last active, when idle.
    pub idle_for_seconds: Option<i64>,
    /// Pause annotations.
    #[serde(default)]
    pub pause: PauseView,
    /// The ScaledObject's conditions.
    #[serde(default)]
    pub conditions: Vec<ConditionView>,
    /// Triggers.
    #[serde(default)]
    pub triggers: Vec<TriggerView>,
    /// The HPA, when read from the cluster.
    pub hpa: Option<HpaView>,
    /// The scalingModifiers formula, when set.
    pub formula: Option<String>,
    /// What could not be read (e.g. the HPA is missing).
    #[serde(default)]
    pub problems: Vec<String>,
    /// Views other components add under their own key (e.g. the HTTP activator's live route
    /// counts), shown as they are; `ebb explain` prints each key's JSON.
    #[serde(default)]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

/// Seconds left before KEDA may scale an inactive object down to zero/idle:
/// `lastActiveTime + cooldownPeriod − now`, floored at 0 (times in Unix seconds).
pub fn cooldown_left(last_active_unix: i64, cooldown_seconds: i64, now_unix: i64) -> i64 {
    (last_active_unix + cooldown_seconds - now_unix).max(0)
}

/// `90` → `1 m 30 s`, `7200` → `2 h`.
pub fn human_seconds(s: i64) -> String {
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 && s % 60 == 0 => format!("{} m", s / 60),
        s if s < 3600 => format!("{} m {} s", s / 60, s % 60),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s => format!("{} h {} m", s / 3600, (s % 3600) / 60),
    }
}

/// A number as people write it: `37`, `0.125`, `2.5` (at most three decimals).
pub fn plain_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The metric's short name for prose: `s0-aws-sqs-orders`, else `trigger 0 (cron)`.
fn label(t: &TriggerView) -> String {
    t.metric
        .clone()
        .unwrap_or_else(|| format!("trigger {} ({})", t.index, t.trigger_type))
}

/// What the HPA controller would propose for one metric at `replicas` with `ready` pods.
fn proposal(t: &TriggerView, value: f64, replicas: i32, ready: i32) -> Option<i32> {
    let kind = match t.target_type.as_deref() {
        Some("Value") => TargetKind::Value,
        Some("AverageValue") | None => TargetKind::AverageValue,
        _ => return None,
    };
    let target = (t.target? * 1000.0).round() as i64;
    let cfg = HpaConfig {
        min_replicas: 1,
        max_replicas: i32::MAX,
        metrics: vec![MetricConfig::new(
            "",
            t.metric.as_deref()?,
            None,
            Some((kind, target)),
        )],
        behavior: None,
        tolerance_down: super::hpa_controller::DEFAULT_TOLERANCE,
        tolerance_up: super::hpa_controller::DEFAULT_TOLERANCE,
        downscale_stabilization_ms: 0,
    };
    let items = [(value * 1000.0).round() as i64];
    let reads = [Ok(&items[..])];
    let r = HpaState::with_history(Some(Vec::new()), Vec::new(), Vec::new()).sync(
        &cfg,
        &Observed {
            now_ms: 0,
            spec_replicas: replicas.max(1),
            status_replicas: replicas.max(1),
            ready_pods: ready.max(1),
            metrics: &reads,
        },
    );
    r.metric_replicas
}

/// The HPA condition `type_` when its status is `status`.
fn hpa_condition<'a>(view: &'a ObjectView, type_: &str, status: &str) -> Option<&'a ConditionView> {
    view.hpa
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
}

/// The one-line answer to "why this replica count, now".
pub fn verdict(view: &ObjectView) -> String {
    let replicas = view.replicas;
    let head = match replicas {
        Some(1) => "1 replica".to_string(),
        Some(n) => format!("{n} replicas"),
        None => "replicas unknown".to_string(),
    };
    let mut parts: Vec<String> = Vec::new();
    let broken: Vec<&TriggerView> = view.triggers.iter().filter(|t| t.broken.is_some()).collect();
    if view.triggers.is_empty() && !view.problems.is_empty() {
        return format!("{head}: {}", view.problems.join("; "));
    }
    for t in &broken {
        parts.push(format!(
            "broken: trigger {} ({}) cannot be built: {}",
            t.index,
            t.trigger_type,
            t.broken.as_deref().unwrap_or_default()
        ));
    }
    if let Some(n) = &view.pause.paused_replicas {
        parts.push(format!(
            "paused at {n} replicas (autoscaling.keda.sh/paused-replicas); nothing scales it"
        ));
        return format!("{head}: {}", parts.join("; "));
    }
    if view.pause.paused {
        parts.push("paused (autoscaling.keda.sh/paused); nothing scales it".to_string());
        return format!("{head}: {}", parts.join("; "));
    }
    let ready = view.ready_pods.or(replicas).unwrap_or(0);
    let idle_count = view.idle_replica_count.unwrap_or(0);
    let at_idle = replicas.is_some_and(|r| {
        r <= idle_count && (view.min_replica_count == 0 || view.idle_replica_count.is_some())
    });
    let any_active = view
        .triggers
        .iter()
        .any(|t| t.active == Some(true) || t.fallback_active);
    if at_idle {
        if any_active {
            let who: Vec<String> = view
                .triggers
                .iter()
                .filter(|t| t.active == Some(true) || t.fallback_active)
                .map(label)
                .collect();
            parts.push(format!(
                "active ({}); KEDA scales it up at its next poll (every {} s)",
                who.join(", "),
                view.polling_interval
            ));
        } else {
            let mut idle = match view.idle_for_seconds {
                Some(s) => format!("idle for {}", human_seconds(s)),
                None => "idle".to_string(),
            };
            idle.push_str(&format!(" (cooldown {} s)", view.cooldown_period));
            parts.push(idle);
            for t in view.triggers.iter().filter(|t| t.broken.is_none()) {
                let Some(threshold) = t.activation_threshold else {
                    continue;
                };
                let now = match (&t.error, t.value) {
                    (Some(e), _) => format!("now failing: {e}"),
                    (None, Some(v)) => format!("now {}", plain_number(v)),
                    (None, None) => "no value yet".to_string(),
                };
                parts.push(format!(
                    "activation needs s{} > {}, {now}",
                    t.index,
                    plain_number(threshold)
                ));
            }
        }
        return format!("{head}: {}", parts.join("; "));
    }
    // Scaling: what each metric asks for, then what limits it.
    for t in view.triggers.iter().filter(|t| t.broken.is_none()) {
        let name = label(t);
        if let Some(e) = &t.error {
            let fallback = if t.fallback_active {
                "; fallback answers instead".to_string()
            } else {
                String::new()
            };
            parts.push(format!(
                "{name} fails ({} in a row{fallback}): {e}",
                t.consecutive_failures
            ));
            continue;
        }
        let Some(value) = t.value else {
            if t.metric.is_none() {
                parts.push(format!("{name} is read by the HPA from metrics.k8s.io"));
            } else {
                parts.push(format!("{name} has no value yet"));
            }
            continue;
        };
        if t.active == Some(false) && view.triggers.len() > 1 {
            parts.push(format!(
                "{name} is inactive ({} ≤ {})",
                plain_number(value),
                plain_number(t.activation_threshold.unwrap_or(0.0))
            ));
            continue;
        }
        let target = t.target.map(plain_number).unwrap_or_else(|| "?".to_string());
        let against = match t.target_type.as_deref() {
            Some("Value") => format!("a total target of {target}"),
            _ => format!("an average target of {target} per pod"),
        };
        match proposal(t, value, replicas.unwrap_or(1), ready) {
            Some(p) => parts.push(format!(
                "{name} = {} against {against} → {p}",
                plain_number(value)
            )),
            None => parts.push(format!("{name} = {} against {against}", plain_number(value))),
        }
    }
    if let Some(c) = hpa_condition(view, "ScalingActive", "False") {
        parts.push(format!("the HPA is not scaling ({}): {}", c.reason, c.message));
    } else if let Some(c) = hpa_condition(view, "ScalingLimited", "True") {
        let limit = match c.reason.as_str() {
            "TooManyReplicas" => format!("limited by maxReplicaCount={}", view.max_replica_count),
            "TooFewReplicas" => format!(
                "limited by minReplicaCount={}",
                view.hpa
                    .as_ref()
                    .and_then(|h| h.min_replicas)
                    .unwrap_or(view.min_replica_count.max(1))
            ),
            "ScaleUpLimit" => "limited by the HPA's scale-up rate".to_string(),
            "ScaleDownLimit" => "limited by the HPA's scale-down rate".to_string(),
            other => format!("limited ({other})"),
        };
        parts.push(limit);
    } else if let Some(c) = hpa_condition(view, "AbleToScale", "True")
        .filter(|c| c.reason == "ScaleDownStabilized" || c.reason == "ScaleUpStabilized")
    {
        parts.push(format!("held by the HPA's stabilization window ({})", c.reason));
    } else if view.hpa.is_none() {
        // Without the HPA, say what its bounds would do to the largest proposal.
        let largest = view
            .triggers
            .iter()
            .filter(|t| t.error.is_none() && t.active != Some(false))
            .filter_map(|t| proposal(t, t.value?, replicas.unwrap_or(1), ready))
            .max();
        if let Some(p) = largest {
            if p > view.max_replica_count {
                parts.push(format!("limited by maxReplicaCount={}", view.max_replica_count));
            } else if p < view.min_replica_count.max(1) {
                parts.push(format!(
                    "limited by minReplicaCount={}",
                    view.min_replica_count.max(1)
                ));
            }
            if replicas.is_none() {
                let want = p.clamp(view.min_replica_count.max(1), view.max_replica_count.max(1));
                parts.push(format!("the HPA would want {want}"));
            }
        }
    }
    if view.pause.scale_in {
        parts.push("scale-in paused (autoscaling.keda.sh/paused-scale-in)".to_string());
    }
    if view.pause.scale_out {
        parts.push("scale-out paused (autoscaling.keda.sh/paused-scale-out)".to_string());
    }
    if let Some(left) = view.cooldown_left_seconds.filter(|_| !any_active) {
        parts.push(format!(
            "scales to {idle_count} in {} unless a trigger activates",
            human_seconds(left)
        ));
    }
    if parts.is_empty() {
        return head;
    }
    format!("{head}: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(index: usize, metric: &str, value: f64, target: f64, activation: f64) -> TriggerView {
        TriggerView {
            index,
            trigger_type: "aws-sqs-queue".into(),
            metric: Some(metric.into()),
            value: Some(value),
            target: Some(target),
            target_type: Some("AverageValue".into()),
            activation_threshold: Some(activation),
            active: Some(value > activation),
            ..TriggerView::default()
        }
    }

    fn view(replicas: i32, triggers: Vec<TriggerView>) -> ObjectView {
        ObjectView {
            namespace: "ns".into(),
            name: "so".into(),
            replicas: Some(replicas),
            ready_pods: Some(replicas),
            min_replica_count: 0,
            max_replica_count: 4,
            cooldown_period: 300,
            polling_interval: 30,
            triggers,
            ..ObjectView::default()
        }
    }

    #[test]
    fn scaling_verdict_names_proposals_inactive_triggers_and_the_limit() {
        let mut cron = trigger(1, "s1-cron", 0.0, 1.0, 0.0);
        cron.trigger_type = "cron".into();
        let mut v = view(4, vec![trigger(0, "s0-aws-sqs-orders", 37.0, 10.0, 0.0), cron]);
        v.hpa = Some(HpaView {
            conditions: vec![ConditionView {
                type_: "ScalingLimited".into(),
                status: "True".into(),
                reason: "TooManyReplicas".into(),
                message: String::new(),
            }],
            ..HpaView::default()
        });
        assert_eq!(
            verdict(&v),
            "4 replicas: s0-aws-sqs-orders = 37 against an average target of 10 per pod → 4; \
             s1-cron is inactive (0 ≤ 0); limited by maxReplicaCount=4"
        );
        // Without the HPA (local mode) the model says the same about the bound.
        v.hpa = None;
        v.triggers[0].value = Some(95.0);
        assert!(verdict(&v).ends_with("→ 10; s1-cron is inactive (0 ≤ 0); limited by maxReplicaCount=4"));
    }

    #[test]
    fn idle_verdict_says_what_activation_needs() {
        let mut v = view(0, vec![trigger(0, "s0-aws-sqs-orders", 2.0, 10.0, 5.0)]);
        v.idle_for_seconds = Some(720);
        assert_eq!(
            verdict(&v),
            "0 replicas: idle for 12 m (cooldown 300 s); activation needs s0 > 5, now 2"
        );
        v.triggers[0].value = Some(9.0);
        v.triggers[0].active = Some(true);
        assert!(verdict(&v).starts_with("0 replicas: active (s0-aws-sqs-orders); KEDA scales it up"));
    }

    #[test]
    fn broken_paused_and_failing_objects_say_so() {
        let mut v = view(2, vec![trigger(0, "s0-x", 1.0, 10.0, 0.0)]);
        v.triggers.push(TriggerView {
            index: 1,
            trigger_type: "prometheus".into(),
            broken: Some("no serverAddress given".into()),
            ..TriggerView::default()
        });
        assert!(verdict(&v).starts_with(
            "2 replicas: broken: trigger 1 (prometheus) cannot be built: no serverAddress given; s0-x = 1"
        ));
        v.pause.paused_replicas = Some("2".into());
        assert!(
            verdict(&v)
                .ends_with("paused at 2 replicas (autoscaling.keda.sh/paused-replicas); nothing scales it")
        );
        let mut v = view(3, vec![trigger(0, "s0-x", 0.0, 10.0, 0.0)]);
        v.triggers[0].error = Some("connection refused".into());
        v.triggers[0].consecutive_failures = 4;
        v.triggers[0].fallback_active = true;
        assert_eq!(
            verdict(&v),
            "3 replicas: s0-x fails (4 in a row; fallback answers instead): connection refused"
        );
    }

    #[test]
    fn cooldown_arithmetic() {
        assert_eq!(cooldown_left(1000, 300, 1100), 200);
        assert_eq!(cooldown_left(1000, 300, 2000), 0);
        assert_eq!(human_seconds(90), "1 m 30 s");
        assert_eq!(human_seconds(7200), "2 h");
    }
}
