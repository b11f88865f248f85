//! Fallback (KEDA's `pkg/fallback/fallback.go`): failure bookkeeping per external metric and the
//! synthetic value that makes the HPA converge on the fallback replica count.

use crate::locks::LockExt;
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use crate::{
    crd::{
        ScaledObject,
        scaled_object::{HealthStatus, MetricTargetType},
    },
    scalers::registry::ObjectKey,
};

/// `status.health[..].status` after a success.
pub const HAPPY: &str = "Happy";
/// `status.health[..].status` after a failure.
pub const FAILING: &str = "Failing";

/// `fallback.behavior` values.
pub const BEHAVIOR_STATIC: &str = "static";
/// Use the current replica count.
pub const BEHAVIOR_CURRENT_REPLICAS: &str = "currentReplicas";
/// max(current, fallback.replicas).
pub const BEHAVIOR_CURRENT_REPLICAS_IF_HIGHER: &str = "currentReplicasIfHigher";
/// min(current, fallback.replicas).
pub const BEHAVIOR_CURRENT_REPLICAS_IF_LOWER: &str = "currentReplicasIfLower";
/// Failing triggers become `nil` in the scalingModifiers formula.
pub const BEHAVIOR_SCALING_MODIFIERS: &str = "scalingModifiers";

/// Why a synthetic fallback value could not be produced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FallbackError {
    /// A `Value` target needs ready pods to divide by.
    #[error("error performing fallback: the scale target has no ready pods")]
    NoReadyPods,
}

/// Records one evaluation result in `health`; returns true when fallback is now active for it
/// (`numberOfFailures > threshold`). Callers only record when the fallback is valid, as KEDA does.
pub fn record(health: &mut HealthStatus, ok: bool, threshold: i32) -> bool {
    if ok {
        health.number_of_failures = Some(0);
        health.status = Some(HAPPY.to_string());
        return false;
    }
    let failures = health.number_of_failures.unwrap_or(0).saturating_add(1);
    health.number_of_failures = Some(failures);
    health.status = Some(FAILING.to_string());
    failures > threshold
}

/// True when `health` says the metric has failed more than `threshold` times in a row.
pub fn fallback_active(health: &HealthStatus, threshold: i32) -> bool {
    health.status.as_deref() == Some(FAILING) && health.number_of_failures.unwrap_or(0) > threshold
}

/// True when any metric in `status.health` is falling back (drives the Fallback condition).
pub fn any_fallback_active(health: &BTreeMap<String, HealthStatus>, threshold: i32) -> bool {
    health.values().any(|h| fallback_active(h, threshold))
}

/// KEDA's runtime `HasValidFallback`: thresholds ≥ 0, and with scalingModifiers the modifiers
/// target must parse as an **integer** > 0 (so `"2.5"` silently disables fallback, as in KEDA).
pub fn has_valid_fallback(so: &ScaledObject) -> bool {
    let Some(f) = so.spec.fallback.as_ref() else {
        return false;
    };
    if f.failure_threshold < 0 || f.replicas < 0 {
        return false;
    }
    if so.spec.uses_scaling_modifiers() {
        let target = so
            .spec
            .advanced
            .as_ref()
            .and_then(|a| a.scaling_modifiers.as_ref())
            .and_then(|m| m.target.as_deref())
            .unwrap_or_default();
        return target.parse::<i64>().is_ok_and(|t| t > 0);
    }
    true
}

/// What to do with one scaler result after fallback bookkeeping (§8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Use the scaler's values as they are.
    Pass,
    /// Return the scaler's error (no valid fallback, or failures still ≤ threshold).
    Error,
    /// Fallback is active: report [`synthetic_value`]; the trigger counts as active, not errored.
    Synthetic,
    /// `behavior: scalingModifiers`: report KEDA's placeholder `-1` without error and without
    /// fallback activity; the formula sees this trigger as `nil`.
    ModifiersNil,
}

/// Updates `health` for one evaluation of a metric (`ok` = the scaler answered) and says what to
/// return; health is only touched when the object has a valid fallback, as in KEDA.
pub fn on_result(so: &ScaledObject, health: &mut HealthStatus, ok: bool) -> Step {
    let Some(f) = so.spec.fallback.as_ref().filter(|_| has_valid_fallback(so)) else {
        return if ok { Step::Pass } else { Step::Error };
    };
    if !record(health, ok, f.failure_threshold) {
        return if ok { Step::Pass } else { Step::Error };
    }
    if f.behavior.as_deref() == Some(BEHAVIOR_SCALING_MODIFIERS) {
        Step::ModifiersNil
    } else {
        Step::Synthetic
    }
}

/// Consecutive-failure counters per ScaledObject metric, shared by every reader in one process.
///
/// KEDA counts HPA reads and poll-loop reads into one counter; under `ebb run` the metrics server
/// and the scale loop share this store, so ebb does the same. The loop persists counters to
/// `status.health`; a process without a counter for a metric takes the one published there
/// (after a restart, or a standalone metrics server seeing the loop's count) and counts on.
#[derive(Debug, Default)]
pub struct HealthStore {
    objects: Mutex<HashMap<ObjectKey, BTreeMap<String, HealthStatus>>>,
}

impl HealthStore {
    /// Records one evaluation of `metric` of `so` (see [`on_result`]) and returns what to do
    /// with it and the counter after it; `seed` is used when this process has no counter yet.
    pub fn step(
        &self,
        so: &ScaledObject,
        key: &ObjectKey,
        metric: &str,
        seed: Option<&HealthStatus>,
        ok: bool,
    ) -> (Step, HealthStatus) {
        if !has_valid_fallback(so) {
            return (if ok { Step::Pass } else { Step::Error }, HealthStatus::default());
        }
        let mut objects = self.objects.lock_or_recover();
        let per_object = objects.entry(key.clone()).or_default();
        let health = match per_object.get_mut(metric) {
            Some(h) => h,
            None => per_object
                .entry(metric.to_string())
                .or_insert_with(|| seed.cloned().unwrap_or_default()),
        };
        let step = on_result(so, health, ok);
        (step, health.clone())
    }

    /// Takes the counters in `status.health` for metrics this process has not counted yet, so a
    /// restarted metrics server resumes where the scale loop's published count stands.
    pub fn seed(&self, key: &ObjectKey, so: &ScaledObject) {
        let Some(health) = so.status.as_ref().and_then(|s| s.health.as_ref()) else {
            return;
        };
        if health.is_empty() || !has_valid_fallback(so) {
            return;
        }
        let mut objects = self.objects.lock_or_recover();
        let per_object = objects.entry(key.clone()).or_default();
        for (metric, h) in health {
            if !per_object.contains_key(metric) {
                per_object.insert(metric.clone(), h.clone());
            }
        }
    }

    /// Drops the counters of a deleted ScaledObject.
    pub fn forget(&self, key: &ObjectKey) {
        self.objects.lock_or_recover().remove(key);
    }

    /// The counter of one metric, if this process has one.
    pub fn get(&self, key: &ObjectKey, metric: &str) -> Option<HealthStatus> {
        self.objects
            .lock_or_recover()
            .get(key)
            .and_then(|m| m.get(metric).cloned())
    }
}

/// The replica count the fallback aims for under `behavior`.
///
/// Unknown or empty behaviors use `fallback.replicas`, as KEDA's switch default does.
pub fn fallback_replicas(behavior: Option<&str>, fallback_replicas: i32, current_replicas: i32) -> i32 {
    match behavior.unwrap_or(BEHAVIOR_STATIC) {
        BEHAVIOR_CURRENT_REPLICAS => current_replicas,
        BEHAVIOR_CURRENT_REPLICAS_IF_HIGHER => current_replicas.max(fallback_replicas),
        BEHAVIOR_CURRENT_REPLICAS_IF_LOWER => current_replicas.min(fallback_replicas),
        _ => fallback_replicas,
    }
}

/// The synthetic metric value: `target × replicas` (per ready pod for `Value` targets), truncated
/// to milli precision like KEDA's `int64(normalisation × 1000 × replicas)` milli-quantity.
///
/// `ready_pods` only matters for `Value`. ebb divides as floats: KEDA does the same, and it is what
/// makes the HPA's `ceil(value / target × readyPods)` land exactly on the fallback count.
pub fn synthetic_value(
    behavior: Option<&str>,
    fallback_replicas_count: i32,
    current_replicas: i32,
    target: f64,
    target_type: MetricTargetType,
    ready_pods: i32,
) -> Result<f64, FallbackError> {
    let mut replicas = f64::from(fallback_replicas(
        behavior,
        fallback_replicas_count,
        current_replicas,
    ));
    if target_type == MetricTargetType::Value {
        if ready_pods <= 0 {
            return Err(FallbackError::NoReadyPods);
        }
        replicas /= f64::from(ready_pods);
    }
    Ok((target * 1000.0 * replicas).trunc() / 1000.0)
}

/// Composite value when a `scalingModifiers` formula evaluates to nil: `fallback.replicas × target`
/// (§10.4); `None` when no fallback is configured, which KEDA treats as an error.
pub fn composite_nil_value(so: &ScaledObject, target: f64) -> Option<f64> {
    so.spec.fallback.as_ref().map(|f| f64::from(f.replicas) * target)
}

/// Why the `composite-metric` has no value; the texts are the ones the metrics server answers.
#[derive(Debug, thiserror::Error)]
pub enum CompositeError {
    /// The formula does not compile or evaluate.
    #[error("scalingModifiers formula: {0}")]
    Formula(#[from] super::formula::FormulaError),
    /// The formula gave nil and there is no `fallback` to stand in.
    #[error("the formula evaluated to nil and no fallback is configured")]
    NilWithoutFallback,
}

/// The `composite-metric` value from the per-trigger formula variables: the formula's value,
/// or [`composite_nil_value`] when it is nil (the flag says that fallback value was used).
pub fn composite_value(
    so: &ScaledObject,
    values: &HashMap<String, Option<f64>>,
    target: f64,
) -> Result<(f64, bool), CompositeError> {
    match super::formula::evaluate_for(so, values)? {
        Some(v) => Ok((v, false)),
        None => composite_nil_value(so, target)
            .map(|v| (v, true))
            .ok_or(CompositeError::NilWithoutFallback),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_counts_failures() {
        let mut h = HealthStatus::default();
        assert!(!record(&mut h, false, 2));
        assert!(!record(&mut h, false, 2));
        assert!(record(&mut h, false, 2));
        assert_eq!(h.number_of_failures, Some(3));
        assert_eq!(h.status.as_deref(), Some("Failing"));
        assert!(fallback_active(&h, 2));
        assert!(any_fallback_active(
            &BTreeMap::from([("s0-x".to_string(), h.clone())]),
            2
        ));
        assert!(!record(&mut h, true, 2));
        assert_eq!(h.number_of_failures, Some(0));
        assert_eq!(h.status.as_deref(), Some("Happy"));
        assert!(!fallback_active(&h, 2));
        // Threshold 0: the first failure already falls back.
        assert!(record(&mut HealthStatus::default(), false, 0));
    }

    #[test]
    fn synthetic_values() {
        let v = |b, cur, t, ty, ready| synthetic_value(b, 10, cur, t, ty, ready);
        assert_eq!(v(None, 3, 10.0, MetricTargetType::AverageValue, 0), Ok(100.0));
        assert_eq!(
            v(
                Some("currentReplicas"),
                3,
                10.0,
                MetricTargetType::AverageValue,
                0
            ),
            Ok(30.0)
        );
        assert_eq!(
            v(
                Some("currentReplicasIfHigher"),
                12,
                1.0,
                MetricTargetType::AverageValue,
                0
            ),
            Ok(12.0)
        );
        assert_eq!(
            v(
                Some("currentReplicasIfLower"),
                12,
                1.0,
                MetricTargetType::AverageValue,
                0
            ),
            Ok(10.0)
        );
        assert_eq!(
            v(Some("bogus"), 12, 1.0, MetricTargetType::AverageValue, 0),
            Ok(10.0)
        );
        assert_eq!(v(None, 3, 10.0, MetricTargetType::Value, 4), Ok(25.0));
        assert_eq!(
            v(None, 3, 10.0, MetricTargetType::Value, 0),
            Err(FallbackError::NoReadyPods)
        );
        // Milli truncation: 1/3 of a replica at target 1.
        assert_eq!(
            synthetic_value(None, 1, 0, 1.0, MetricTargetType::Value, 3),
            Ok(0.333)
        );
    }

    #[test]
    fn steps() {
        let so = |behavior: &str| -> ScaledObject {
            serde_yaml::from_str(&format!(
                "metadata: {{name: a}}\nspec: {{scaleTargetRef: {{name: t}}, fallback: {{failureThreshold: 1, replicas: 6{behavior}}}}}"
            ))
            .expect("parses")
        };
        let plain = so("");
        let mut h = HealthStatus::default();
        assert_eq!(on_result(&plain, &mut h, false), Step::Error);
        assert_eq!(on_result(&plain, &mut h, false), Step::Synthetic);
        assert_eq!(on_result(&plain, &mut h, true), Step::Pass);
        assert_eq!(h.number_of_failures, Some(0));
        let mods = so(", behavior: scalingModifiers");
        let mut h = HealthStatus::default();
        on_result(&mods, &mut h, false);
        assert_eq!(on_result(&mods, &mut h, false), Step::ModifiersNil);
        let none: ScaledObject =
            serde_yaml::from_str("metadata: {name: a}\nspec: {scaleTargetRef: {name: t}}").expect("parses");
        let mut h = HealthStatus::default();
        assert_eq!(on_result(&none, &mut h, false), Step::Error);
        assert_eq!(h, HealthStatus::default());
    }

    #[test]
    fn store_counts_across_readers_and_seeds_once() {
        let so: ScaledObject = serde_yaml::from_str(
            "metadata: {name: a}\nspec: {scaleTargetRef: {name: t}, fallback: {failureThreshold: 2, replicas: 6}}",
        )
        .expect("parses");
        let store = HealthStore::default();
        let key = ObjectKey::new("ns", "a");
        let seed = HealthStatus {
            number_of_failures: Some(2),
            status: Some(FAILING.to_string()),
        };
        // A restarted loop resumes from status: the third failure is past the threshold.
        assert_eq!(
            store.step(&so, &key, "s0-x", Some(&seed), false).0,
            Step::Synthetic
        );
        // The seed is not applied again once this process counts.
        assert_eq!(store.step(&so, &key, "s0-x", None, true).0, Step::Pass);
        assert_eq!(store.step(&so, &key, "s0-x", Some(&seed), false).0, Step::Error);
        // Another reader of the same metric (the HPA path) adds to the same counter.
        assert_eq!(store.step(&so, &key, "s0-x", None, false).0, Step::Error);
        assert_eq!(store.step(&so, &key, "s0-x", None, false).0, Step::Synthetic);
        assert_eq!(
            store.get(&key, "s0-x").and_then(|h| h.number_of_failures),
            Some(3)
        );
        store.forget(&key);
        assert_eq!(store.get(&key, "s0-x"), None);
        let plain: ScaledObject =
            serde_yaml::from_str("metadata: {name: a}\nspec: {scaleTargetRef: {name: t}}").expect("parses");
        assert_eq!(store.step(&plain, &key, "s0-x", None, false).0, Step::Error);
        assert_eq!(store.get(&key, "s0-x"), None);
    }

    #[test]
    fn validity() {
        let so = |yaml: &str| -> ScaledObject { serde_yaml::from_str(yaml).expect("parses") };
        assert!(!has_valid_fallback(&so(
            "metadata: {name: a}\nspec: {scaleTargetRef: {name: t}}"
        )));
        assert!(has_valid_fallback(&so(
            "metadata: {name: a}\nspec: {scaleTargetRef: {name: t}, fallback: {failureThreshold: 3, replicas: 6}}"
        )));
        assert!(!has_valid_fallback(&so(
            "metadata: {name: a}\nspec: {scaleTargetRef: {name: t}, fallback: {failureThreshold: -1, replicas: 6}}"
        )));
        let with_target = |t: &str| {
            so(&format!(
                "metadata: {{name: a}}\nspec: {{scaleTargetRef: {{name: t}}, fallback: {{failureThreshold: 3, replicas: 6}}, advanced: {{scalingModifiers: {{formula: a, target: '{t}'}}}}}}"
            ))
        };
        assert!(has_valid_fallback(&with_target("2")));
        assert!(!has_valid_fallback(&with_target("2.5")));
        assert_eq!(composite_nil_value(&with_target("2"), 2.0), Some(12.0));
    }

    #[test]
    fn composite_value_sums_a_triggers_metrics_and_falls_back_on_nil() {
        let so = |fallback: &str, formula: &str| -> ScaledObject {
            serde_yaml::from_str(&format!(
                "metadata: {{name: a}}\nspec: {{scaleTargetRef: {{name: t}}, {fallback}triggers: [{{type: cron, name: a, metadata: {{}}}}, {{type: cron, name: b, metadata: {{}}}}, {{type: cron, metadata: {{}}}}], advanced: {{scalingModifiers: {{formula: '{formula}', target: '2'}}}}}}"
            ))
            .expect("parses")
        };
        let fallback = "fallback: {failureThreshold: 3, replicas: 6}, ";
        let mut values = HashMap::new();
        super::super::formula::add_to_trigger(&mut values, "a", Some(1.0));
        super::super::formula::add_to_trigger(&mut values, "a", Some(2.0));
        super::super::formula::add_to_trigger(&mut values, "b", Some(4.0));
        super::super::formula::add_to_trigger(&mut values, "", Some(100.0));
        assert_eq!(values.len(), 2);
        let sum = so(fallback, "a + b");
        assert_eq!(composite_value(&sum, &values, 2.0).ok(), Some((7.0, false)));

        // One nil metric makes its trigger nil; a nil formula value is replaced by fallback × target.
        super::super::formula::add_to_trigger(&mut values, "b", None);
        assert_eq!(values.get("b"), Some(&None));
        assert_eq!(
            composite_value(&so(fallback, "b ?? nil"), &values, 2.0).ok(),
            Some((12.0, true))
        );
        assert_eq!(
            composite_value(&so("", "b ?? nil"), &values, 2.0).map_err(|e| e.to_string()),
            Err("the formula evaluated to nil and no fallback is configured".to_string())
        );
        assert!(
            composite_value(&sum, &values, 2.0)
                .is_err_and(|e| e.to_string().starts_with("scalingModifiers formula: "))
        );
    }
}
