//! The scale-loop plan: one iteration of KEDA's per-object scale loop (`scale_handler.go` and
//! `scale_scaledobjects.go`) as decisions over what the loop read.
//!
//! The operator reads every trigger through the cache and the target's `/scale`, and passes
//! each answer here; the [`Plan`] keeps the trigger outcomes, `status.health`,
//! `triggersActivity` and the events, decides the replica count with
//! [`activation::decide`](super::activation::decide), and says what status to write.
//!
//! ```text
//! Plan::new ─ per trigger: scaler_failed | resource_trigger, per metric: metric ─ trigger_done
//!    ─ activity ─ (GET /scale) ─ decide ─ (PUT /scale) ─ scaled ─ (GET HPA) ─ mirror_hpa
//!    ─ fallback ─ finish: (status patch, events)
//! ```

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{
    crd::{
        ScaledObject, ScaledObjectStatus,
        scaled_object::{Condition, GroupVersionKindResource, HealthStatus, TriggerActivity},
    },
    scaling::{
        activation::{
            self, Action, Decision, LoopInput, PauseState, TriggerOutcome, failure_event, pause_state,
        },
        conditions::{
            ACTIVE, CondUpdate, ConditionStatus, FALLBACK, FALLBACK_EXISTS_MESSAGE, HPA_ACTIVE,
            NO_FALLBACK_MESSAGE, PAUSED, READY, condition_status,
        },
        events::{Event, EventReason},
        fallback::{self, Step, has_valid_fallback},
        formula,
        target::{scale_target_gvkr, scale_target_kind},
    },
};

/// With scalingModifiers: the composite value from the formula over named trigger values
/// (failed or fallen-back triggers are nil) and the activation target (default 0).
pub fn composite(so: &ScaledObject, values: &HashMap<String, Option<f64>>) -> Option<(Option<f64>, f64)> {
    if !so.spec.uses_scaling_modifiers() {
        return None;
    }
    let m = so.spec.advanced.as_ref()?.scaling_modifiers.as_ref()?;
    let activation = m
        .activation_target
        .as_deref()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    // A formula that fails to compile or evaluate gives no value: the object is inactive,
    // as in KEDA, and the reconcile has already reported the formula as invalid.
    let value = formula::evaluate_for(so, values).ok().flatten();
    Some((value, activation))
}

/// What a metric read contributes to KEDA's per-scaler metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recorded {
    /// The scaler answered and its value is used: record the value and a success.
    Value(f64),
    /// The read failed and fallback did not cover it: record an error.
    Error,
    /// Fallback answered instead (or the formula sees nil): nothing to record.
    Nothing,
}

/// One metric's result after fallback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricOutcome {
    /// The metric counts as active.
    pub active: bool,
    /// The metric counts as errored.
    pub error: bool,
    /// What to record in KEDA's metrics.
    pub recorded: Recorded,
}

/// The status and events one scale-loop iteration produces.
#[derive(Debug, Clone)]
pub struct Plan {
    before: ScaledObjectStatus,
    status: ScaledObjectStatus,
    conditions: Vec<Condition>,
    health: BTreeMap<String, HealthStatus>,
    events: Vec<Event>,
    pause: PauseState,
    valid_fallback: bool,
    uses_modifiers: bool,
    outcomes: Vec<TriggerOutcome>,
    active_names: Vec<String>,
    activity: BTreeMap<String, TriggerActivity>,
    named_values: HashMap<String, Option<f64>>,
}

impl Plan {
    /// Starts from the object as just read (its status, annotations and fallback settings).
    pub fn new(so: &ScaledObject) -> Plan {
        Plan::from_status(so, so.status.clone().unwrap_or_default())
    }

    /// [`Plan::new`] with the status given apart from the object (`ebb simulate`, benchmarks).
    pub fn from_status(so: &ScaledObject, before: ScaledObjectStatus) -> Plan {
        let mut status = before.clone();
        let conditions = status.conditions.take().unwrap_or_default();
        let health = status.health.take().unwrap_or_default();
        Plan {
            before,
            status,
            conditions,
            health,
            events: Vec::new(),
            pause: pause_state(so.metadata.annotations.as_ref()),
            valid_fallback: has_valid_fallback(so),
            uses_modifiers: so.spec.uses_scaling_modifiers(),
            outcomes: Vec::new(),
            active_names: Vec::new(),
            activity: BTreeMap::new(),
            named_values: HashMap::new(),
        }
    }

    /// The failure count `status.health` holds for `metric`, to seed a process that has none.
    pub fn health(&self, metric: &str) -> Option<&HealthStatus> {
        self.health.get(metric)
    }

    /// The HPA recorded in status, whose `ScalingActive` condition the loop mirrors.
    pub fn hpa_name(&self) -> Option<&str> {
        self.before.hpa_name.as_deref()
    }

    /// A trigger whose scaler could not be built: a Warning event, and the trigger errs.
    pub fn scaler_failed(&mut self, outcome: &mut TriggerOutcome, error: String) {
        self.events.push(Event::warning(EventReason::ScalerFailed, error));
        outcome.error = true;
    }

    /// A cpu/memory trigger: the HPA reads it from metrics.k8s.io; it never gates activation.
    pub fn resource_trigger(&mut self, outcome: &mut TriggerOutcome) {
        outcome.resource = true;
        outcome.active = true;
    }

    /// One metric of a trigger named `trigger_name` (may be empty), after fallback bookkeeping
    /// gave `step` and the counter `health`; `read` is the sum of the values and the scaler's
    /// activity, or the read's error.
    pub fn metric(
        &mut self,
        outcome: &mut TriggerOutcome,
        trigger_name: &str,
        metric: &str,
        (step, health): (Step, HealthStatus),
        read: Result<(f64, bool), String>,
    ) -> MetricOutcome {
        if self.valid_fallback {
            self.health.insert(metric.to_string(), health);
        }
        let (active, error, recorded) = match (step, &read) {
            (Step::Pass, Ok((value, active))) => {
                if !trigger_name.is_empty() {
                    self.named_values.insert(trigger_name.to_string(), Some(*value));
                }
                (*active, false, Recorded::Value(*value))
            }
            (Step::Synthetic, _) => (true, false, Recorded::Nothing),
            (Step::ModifiersNil, _) => (false, false, Recorded::Nothing),
            (_, Err(_)) => (false, true, Recorded::Error),
            (Step::Error, Ok(_)) => (false, true, Recorded::Nothing),
        };
        // KEDA reports every failed read as an event, whether or not fallback covers it.
        if let Err(e) = read {
            let reason = if self.uses_modifiers {
                EventReason::MetricSourceFailed
            } else {
                EventReason::ScalerFailed
            };
            self.events.push(Event::warning(reason, e));
        }
        self.activity
            .insert(metric.to_string(), TriggerActivity { is_active: active });
        if active {
            self.active_names.push(metric.to_string());
        }
        outcome.active |= active;
        outcome.error |= error;
        MetricOutcome {
            active,
            error,
            recorded,
        }
    }

    /// A trigger whose metrics have all been read.
    pub fn trigger_done(&mut self, outcome: TriggerOutcome) {
        self.outcomes.push(outcome);
    }

    /// The object's `(is_active, is_error)` over every trigger (and the scalingModifiers
    /// formula, when the object has one).
    pub fn activity(&self, so: &ScaledObject) -> (bool, bool) {
        activation::object_activity(&self.outcomes, composite(so, &self.named_values))
    }

    /// The scale target as status recorded it, else as the spec names it.
    pub fn scale_target(&self, so: &ScaledObject) -> GroupVersionKindResource {
        self.status
            .scale_target_gvkr
            .clone()
            .unwrap_or_else(|| scale_target_gvkr(so))
    }

    /// The target's `/scale` could not be read: Ready=False with the error; the status to write
    /// (`None` when unchanged). The iteration ends here.
    pub fn scale_unreadable(mut self, error: String) -> Option<ScaledObjectStatus> {
        CondUpdate::new(ConditionStatus::False, "ErrorGettingCurrentReplicas", error)
            .apply(&mut self.conditions, READY);
        self.status.conditions = Some(self.conditions);
        (self.status != self.before).then_some(self.status)
    }

    /// KEDA's executor decision for a target at `current_replicas`, at `now`.
    pub fn decide(
        &self,
        so: &ScaledObject,
        gvkr: &GroupVersionKindResource,
        current_replicas: i32,
        now: DateTime<Utc>,
    ) -> Decision {
        let (is_active, is_error) = self.activity(so);
        let last_active_time = self
            .before
            .last_active_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let creation_timestamp = so.metadata.creation_timestamp.as_ref().and_then(|t| {
            DateTime::from_timestamp(
                t.0.as_second(),
                u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0),
            )
        });
        let kind = self
            .before
            .scale_target_kind
            .clone()
            .unwrap_or_else(|| scale_target_kind(gvkr));
        activation::decide(&LoopInput {
            spec: &so.spec,
            pause: &self.pause,
            scale_target_kind: &kind,
            namespace: so.metadata.namespace.as_deref().unwrap_or_default(),
            current_replicas,
            is_active,
            is_error,
            active_triggers: &self.active_names,
            last_active_time,
            creation_timestamp,
            now,
        })
    }

    /// Applies `decision` at `now`; `scaled` is the outcome of its `/scale` write (`Ok` when the
    /// decision wrote nothing).
    pub fn scaled(&mut self, decision: &Decision, scaled: Result<(), String>, now: DateTime<Utc>) {
        let mut set_last_active = decision.set_last_active;
        match (decision.action, scaled) {
            (Action::ScaleTo { .. }, Err(e)) => {
                set_last_active = false;
                if let Some(ev) = failure_event(&decision.action, &e) {
                    self.events.push(ev);
                }
            }
            _ => {
                if let Some(ev) = &decision.event {
                    self.events.push(ev.clone());
                }
            }
        }
        if set_last_active {
            self.status.last_active_time = Some(now.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
        for (update, type_) in [
            (&decision.active_condition, ACTIVE),
            (&decision.ready_condition, READY),
            (&decision.paused_condition, PAUSED),
        ] {
            if let Some(c) = update {
                c.apply(&mut self.conditions, type_);
            }
        }
    }

    /// Mirrors the HPA's `ScalingActive` condition (`status` as parsed by
    /// [`ConditionStatus::parse`], `reason`, `message`) into `HPAActive`; an unreadable HPA or
    /// one without that condition leaves `HPAActive` as it was, as in KEDA, so the operator only
    /// calls this when it read one.
    pub fn mirror_hpa(&mut self, status: Option<ConditionStatus>, reason: &str, message: &str) {
        let update = if reason == "ScalingDisabled" {
            CondUpdate::new(ConditionStatus::True, "ScalingDisabled", message.to_string())
        } else if status == Some(ConditionStatus::True) {
            CondUpdate::new(ConditionStatus::True, "HPAActive", "HPA is actively scaling")
        } else if status == Some(ConditionStatus::False) {
            let reason = if reason.is_empty() {
                "HPAMetricsUnavailable"
            } else {
                reason
            };
            CondUpdate::new(
                ConditionStatus::False,
                reason.to_string(),
                format!("HPA is not actively scaling: {message}"),
            )
        } else {
            return;
        };
        update.apply(&mut self.conditions, HPA_ACTIVE);
    }

    /// The Fallback condition from the failure counters, with an event when it changes.
    pub fn fallback(&mut self, so: &ScaledObject) {
        let threshold = so.spec.fallback.as_ref().map_or(0, |f| f.failure_threshold);
        let falling_back = self.valid_fallback && fallback::any_fallback_active(&self.health, threshold);
        let update = if falling_back {
            CondUpdate::new(ConditionStatus::True, "FallbackExists", FALLBACK_EXISTS_MESSAGE)
        } else {
            CondUpdate::new(ConditionStatus::False, "NoFallbackFound", NO_FALLBACK_MESSAGE)
        };
        let was_falling_back = condition_status(&self.conditions, FALLBACK) == Some(ConditionStatus::True);
        if update.apply(&mut self.conditions, FALLBACK) && self.valid_fallback {
            if falling_back {
                self.events.push(Event::warning(
                    EventReason::FallbackActivated,
                    FALLBACK_EXISTS_MESSAGE,
                ));
            } else if was_falling_back {
                self.events.push(Event::normal(
                    EventReason::FallbackDeactivated,
                    NO_FALLBACK_MESSAGE,
                ));
            }
        }
    }

    /// The status to write (`None` when it did not change) and the events to publish after it.
    pub fn finish(self) -> (Option<ScaledObjectStatus>, Vec<Event>) {
        let mut status = self.status;
        status.conditions = Some(self.conditions);
        status.health = (!self.health.is_empty() || self.before.health.is_some()).then_some(self.health);
        status.triggers_activity =
            (!self.activity.is_empty() || self.before.triggers_activity.is_some()).then_some(self.activity);
        let changed = status != self.before;
        (changed.then_some(status), self.events)
    }
}
