//! The scale loop's 0↔1 decision (KEDA's `scale_scaledobjects.go` executor) as a pure function
//! of the object, the trigger results and an injected clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use crate::{
    crd::scaled_object::{DEFAULT_COOLDOWN_PERIOD, ScaledObjectSpec},
    scalers::params::parse_go_bool,
    scaling::{
        conditions::{
            ACTIVE_FORCED_MESSAGE, ACTIVE_MESSAGE, COOLDOWN_MESSAGE, CondUpdate, ConditionStatus,
            NOT_ACTIVE_MESSAGE, PARTIAL_TRIGGER_ERROR_MESSAGE, PAUSED_MESSAGE, READY_MESSAGE,
            TRIGGER_ERROR_MESSAGE,
        },
        events::{Event, EventReason},
    },
};

/// Annotation: pause and force the target to this replica count.
pub const PAUSED_REPLICAS_ANNOTATION: &str = "autoscaling.keda.sh/paused-replicas";
/// Annotation: pause at the current replica count.
pub const PAUSED_ANNOTATION: &str = "autoscaling.keda.sh/paused";
/// Annotation: block scale-in only.
pub const PAUSED_SCALE_IN_ANNOTATION: &str = "autoscaling.keda.sh/paused-scale-in";
/// Annotation: block scale-out only.
pub const PAUSED_SCALE_OUT_ANNOTATION: &str = "autoscaling.keda.sh/paused-scale-out";
/// Annotation: treat the object as active whatever the triggers say.
pub const FORCE_ACTIVATION_ANNOTATION: &str = "autoscaling.keda.sh/force-activation";

/// What the pause-related annotations ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseState {
    /// Raw `paused-replicas` value; its presence alone pauses the object.
    pub paused_replicas: Option<String>,
    /// `paused` is true-ish.
    pub paused: bool,
    /// `paused-scale-in` is true-ish.
    pub scale_in_paused: bool,
    /// `paused-scale-out` is true-ish.
    pub scale_out_paused: bool,
    /// `force-activation` is true-ish.
    pub force_activation: bool,
}

/// `paused-replicas` is not a base-10 int32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for annotation autoscaling.keda.sh/paused-replicas")]
pub struct PausedReplicasError {
    /// The annotation's value.
    pub value: String,
}

impl PauseState {
    /// Full pause: loop stopped, HPA deleted (paused-replicas wins over `paused: "false"`).
    pub fn is_fully_paused(&self) -> bool {
        self.paused_replicas.is_some() || self.paused
    }

    /// Whether the Paused condition should be True (any pause, including scale-in/out only).
    pub fn any(&self) -> bool {
        self.is_fully_paused() || self.scale_in_paused || self.scale_out_paused
    }

    /// The paused replica count, parsed like Go's `strconv.ParseInt(v, 10, 32)`.
    pub fn paused_replica_count(&self) -> Result<Option<i32>, PausedReplicasError> {
        self.paused_replicas
            .as_deref()
            .map(|v| {
                v.parse::<i32>()
                    .map_err(|_| PausedReplicasError { value: v.to_string() })
            })
            .transpose()
    }
}

/// KEDA's annotation boolean: absent → false; Go `ParseBool` result when it parses; any other
/// value (including empty) → true, because KEDA assumes the user wants the pause.
pub fn annotation_flag(annotations: Option<&BTreeMap<String, String>>, key: &str) -> bool {
    annotations
        .and_then(|a| a.get(key))
        .is_some_and(|v| parse_go_bool(v).unwrap_or(true))
}

/// Reads the pause and force-activation annotations of a ScaledObject.
pub fn pause_state(annotations: Option<&BTreeMap<String, String>>) -> PauseState {
    PauseState {
        paused_replicas: annotations
            .and_then(|a| a.get(PAUSED_REPLICAS_ANNOTATION))
            .cloned(),
        paused: annotation_flag(annotations, PAUSED_ANNOTATION),
        scale_in_paused: annotation_flag(annotations, PAUSED_SCALE_IN_ANNOTATION),
        scale_out_paused: annotation_flag(annotations, PAUSED_SCALE_OUT_ANNOTATION),
        force_activation: annotation_flag(annotations, FORCE_ACTIVATION_ANNOTATION),
    }
}

/// One trigger's result after fallback, as the loop sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerOutcome {
    /// cpu/memory trigger (Resource metric; no activity contribution).
    pub resource: bool,
    /// Scaler active, or fallback active.
    pub active: bool,
    /// Scaler error that fallback did not absorb.
    pub error: bool,
}

/// Object-level `(is_active, is_error)` from trigger outcomes (§6.1). With scalingModifiers pass
/// `Some((composite value, activationTarget))`: activity then comes from the composite only and
/// is false on any error. An object with only cpu/memory triggers and no error is always active.
pub fn object_activity(triggers: &[TriggerOutcome], composite: Option<(Option<f64>, f64)>) -> (bool, bool) {
    let is_error = triggers.iter().any(|t| t.error);
    let mut is_active = triggers.iter().any(|t| !t.resource && t.active);
    if let Some((value, activation_target)) = composite {
        is_active = !is_error && value.is_some_and(|v| v > activation_target);
    }
    if !triggers.is_empty() && triggers.iter().all(|t| t.resource) && !is_error {
        is_active = true;
    }
    (is_active, is_error)
}

/// Why the executor changes the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleReason {
    /// 0/idle → min (or 1).
    Activate,
    /// → idle/min after cooldown.
    Deactivate,
    /// Below min without idle configured: raise to min.
    ToMin,
}

/// What the executor should do to the target's `/scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave replicas alone.
    None,
    /// GET `/scale`, set `spec.replicas`, PUT.
    ScaleTo {
        /// New replica count.
        replicas: i32,
        /// Why.
        reason: ScaleReason,
    },
}

/// The executor's decision for one loop iteration.
///
/// For `ScaleTo` actions `set_last_active` and `event` apply only once the `/scale` PUT
/// succeeded; on failure the runtime records [`failure_event`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Change to the target's replicas.
    pub action: Action,
    /// New Active condition, if it changes.
    pub active_condition: Option<CondUpdate>,
    /// New Ready condition (KEDA resets it to True each iteration unless a trigger error overrides).
    pub ready_condition: Option<CondUpdate>,
    /// New Paused condition (only for a fully paused object).
    pub paused_condition: Option<CondUpdate>,
    /// Set `status.lastActiveTime = now`.
    pub set_last_active: bool,
    /// Event to record (type Normal).
    pub event: Option<Event>,
}

/// Everything one loop iteration decides on.
#[derive(Debug, Clone)]
pub struct LoopInput<'a> {
    /// The ScaledObject spec.
    pub spec: &'a ScaledObjectSpec,
    /// Pause annotations.
    pub pause: &'a PauseState,
    /// `status.scaleTargetKind`, e.g. `apps/v1.Deployment` (used in event messages).
    pub scale_target_kind: &'a str,
    /// ScaledObject namespace.
    pub namespace: &'a str,
    /// Target replicas now.
    pub current_replicas: i32,
    /// Any trigger active (after fallback and modifiers).
    pub is_active: bool,
    /// Any trigger errored.
    pub is_error: bool,
    /// Names of the active triggers' metrics, for the activation event.
    pub active_triggers: &'a [String],
    /// `status.lastActiveTime`.
    pub last_active_time: Option<DateTime<Utc>>,
    /// `metadata.creationTimestamp`.
    pub creation_timestamp: Option<DateTime<Utc>>,
    /// The clock.
    pub now: DateTime<Utc>,
}

/// KEDA's executor decision table (spec §6.3).
pub fn decide(input: &LoopInput<'_>) -> Decision {
    let spec = input.spec;
    let pause = input.pause;
    let mut d = Decision {
        action: Action::None,
        active_condition: None,
        ready_condition: Some(CondUpdate::new(
            ConditionStatus::True,
            "ScaledObjectReady",
            READY_MESSAGE,
        )),
        paused_condition: None,
        set_last_active: false,
        event: None,
    };
    if pause.is_fully_paused() {
        d.ready_condition = None;
        d.paused_condition = Some(CondUpdate::new(
            ConditionStatus::True,
            "ScaledObjectPaused",
            PAUSED_MESSAGE,
        ));
        return d;
    }
    let current = input.current_replicas;
    let min = spec.min_replica_count.unwrap_or(0);
    let idle = spec.idle_replica_count;
    let target = &spec.scale_target_ref.name;
    let ns = input.namespace;
    let kind = input.scale_target_kind;

    if input.is_active || pause.force_activation {
        let message = if pause.force_activation {
            ACTIVE_FORCED_MESSAGE
        } else {
            ACTIVE_MESSAGE
        };
        d.active_condition = Some(CondUpdate::new(ConditionStatus::True, "ScalerActive", message));
        if (idle.is_some() && current < min) || current == 0 {
            if !pause.scale_out_paused {
                let replicas = if min > 0 { min } else { 1 };
                d.action = Action::ScaleTo {
                    replicas,
                    reason: ScaleReason::Activate,
                };
                let cause = if pause.force_activation && !input.is_active {
                    "caused by forced activation annotation".to_string()
                } else {
                    format!("triggered by {}", input.active_triggers.join(";"))
                };
                d.event = Some(Event::normal(
                    EventReason::ScaleTargetActivated,
                    format!("Scaled {kind} {ns}/{target} from {current} to {replicas}, {cause}"),
                ));
                d.set_last_active = true;
            }
        } else if input.is_error {
            d.ready_condition = Some(CondUpdate::new(
                ConditionStatus::Unknown,
                "PartialTriggerError",
                PARTIAL_TRIGGER_ERROR_MESSAGE,
            ));
        } else {
            d.set_last_active = true;
        }
        return d;
    }

    d.active_condition = Some(CondUpdate::new(
        ConditionStatus::False,
        "ScalerNotActive",
        NOT_ACTIVE_MESSAGE,
    ));
    let fallback = spec.fallback.as_ref();
    if input.is_error && fallback.is_some_and(|f| f.replicas != 0) {
        return d;
    }
    if input.is_error && fallback.is_none() {
        d.ready_condition = Some(CondUpdate::new(
            ConditionStatus::False,
            "TriggerError",
            TRIGGER_ERROR_MESSAGE,
        ));
        return d;
    }
    if idle.is_some_and(|i| current > i) || (current > 0 && min == 0) {
        if pause.scale_in_paused {
            return d;
        }
        if cooldown_passed(input) {
            let replicas = idle.unwrap_or(min);
            d.action = Action::ScaleTo {
                replicas,
                reason: ScaleReason::Deactivate,
            };
            d.event = Some(Event::normal(
                EventReason::ScaleTargetDeactivated,
                format!("Deactivated {kind} {ns}/{target} from {current} to {replicas}"),
            ));
        } else {
            d.active_condition = Some(CondUpdate::new(
                ConditionStatus::False,
                "ScalerCooldown",
                COOLDOWN_MESSAGE,
            ));
        }
        return d;
    }
    if idle.is_none() && current < min {
        d.action = Action::ScaleTo {
            replicas: min,
            reason: ScaleReason::ToMin,
        };
    }
    d
}

/// Whether the scale-in cooldown is over (both comparisons strict, like Go's `Before`).
///
/// A missing creation timestamp is Go's zero time, i.e. long ago.
fn cooldown_passed(input: &LoopInput<'_>) -> bool {
    let spec = input.spec;
    match input.last_active_time {
        None => {
            let initial = Duration::seconds(i64::from(spec.initial_cooldown_period.unwrap_or(0)));
            input.creation_timestamp.is_none_or(|c| c + initial < input.now)
        }
        Some(last) => {
            let cooldown =
                Duration::seconds(i64::from(spec.cooldown_period.unwrap_or(DEFAULT_COOLDOWN_PERIOD)));
            last + cooldown < input.now
        }
    }
}

/// The event to record when the `/scale` PUT of `action` failed.
pub fn failure_event(action: &Action, error: &str) -> Option<Event> {
    match action {
        Action::ScaleTo {
            reason: ScaleReason::Activate,
            ..
        } => Some(Event::warning(
            EventReason::ScaleTargetActivationFailed,
            format!("Failed to scale target from zero/idle: {error}"),
        )),
        Action::ScaleTo {
            reason: ScaleReason::Deactivate,
            ..
        } => Some(Event::warning(
            EventReason::ScaleTargetDeactivationFailed,
            format!("Failed to deactivate target: {error}"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::crd::scaled_object::Fallback;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("valid time")
    }

    fn spec(min: Option<i32>, idle: Option<i32>) -> ScaledObjectSpec {
        let mut s = ScaledObjectSpec::default();
        s.scale_target_ref.name = "web".into();
        s.min_replica_count = min;
        s.idle_replica_count = idle;
        s
    }

    struct Case {
        spec: ScaledObjectSpec,
        pause: PauseState,
        current: i32,
        active: bool,
        error: bool,
        last_active: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    }

    impl Case {
        fn new(spec: ScaledObjectSpec, current: i32, active: bool) -> Self {
            Case {
                spec,
                pause: PauseState::default(),
                current,
                active,
                error: false,
                last_active: None,
                now: t(10),
            }
        }
        fn run(&self) -> Decision {
            let triggers = ["s0-cron".to_string(), "s1-prometheus".to_string()];
            decide(&LoopInput {
                spec: &self.spec,
                pause: &self.pause,
                scale_target_kind: "apps/v1.Deployment",
                namespace: "ns",
                current_replicas: self.current,
                is_active: self.active,
                is_error: self.error,
                active_triggers: &triggers,
                last_active_time: self.last_active,
                creation_timestamp: Some(t(0)),
                now: self.now,
            })
        }
    }

    fn scale(replicas: i32, reason: ScaleReason) -> Action {
        Action::ScaleTo { replicas, reason }
    }

    #[test]
    fn activates_from_zero_with_event() {
        let d = Case::new(spec(Some(3), None), 0, true).run();
        assert_eq!(d.action, scale(3, ScaleReason::Activate));
        assert!(d.set_last_active);
        let e = d.event.expect("event");
        assert_eq!(e.reason, "KEDAScaleTargetActivated");
        assert_eq!(
            e.message,
            "Scaled apps/v1.Deployment ns/web from 0 to 3, triggered by s0-cron;s1-prometheus"
        );
        assert_eq!(d.active_condition.expect("active").reason, "ScalerActive");
        // min 0 activates to 1; idle set and below min activates too.
        assert_eq!(
            Case::new(spec(None, None), 0, true).run().action,
            scale(1, ScaleReason::Activate)
        );
        assert_eq!(
            Case::new(spec(Some(2), Some(0)), 1, true).run().action,
            scale(2, ScaleReason::Activate)
        );
    }

    #[test]
    fn forced_activation_and_paused_scale_out() {
        let mut c = Case::new(spec(None, None), 0, false);
        c.pause.force_activation = true;
        let d = c.run();
        assert_eq!(d.action, scale(1, ScaleReason::Activate));
        assert!(
            d.event
                .expect("event")
                .message
                .ends_with("caused by forced activation annotation")
        );
        assert_eq!(
            d.active_condition.expect("active").message,
            "Scaling is performed because activation is being forced by annotation"
        );
        let mut c = Case::new(spec(None, None), 0, true);
        c.pause.scale_out_paused = true;
        let d = c.run();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.event, None);
    }

    #[test]
    fn active_with_error_is_partial() {
        let mut c = Case::new(spec(Some(1), None), 2, true);
        c.error = true;
        let d = c.run();
        assert_eq!(d.action, Action::None);
        assert!(!d.set_last_active);
        assert_eq!(d.ready_condition.expect("ready").reason, "PartialTriggerError");
        let d = Case::new(spec(Some(1), None), 2, true).run();
        assert!(d.set_last_active);
        assert_eq!(d.ready_condition.expect("ready").reason, "ScaledObjectReady");
    }

    #[test]
    fn inactive_errors() {
        let mut c = Case::new(spec(None, None), 2, false);
        c.error = true;
        c.spec.fallback = Some(Fallback {
            failure_threshold: 3,
            replicas: 5,
            behavior: None,
        });
        assert_eq!(c.run().action, Action::None);
        c.spec.fallback = None;
        let d = c.run();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.ready_condition.expect("ready").reason, "TriggerError");
        // fallback.replicas == 0 takes the normal scale-to-zero path.
        c.spec.fallback = Some(Fallback::default());
        assert_eq!(c.run().action, scale(0, ScaleReason::Deactivate));
    }

    #[test]
    fn deactivation_respects_cooldowns() {
        // Fresh object, initialCooldownPeriod 0: scaled to zero at once.
        let d = Case::new(spec(None, None), 3, false).run();
        assert_eq!(d.action, scale(0, ScaleReason::Deactivate));
        let e = d.event.expect("event");
        assert_eq!(e.reason, "KEDAScaleTargetDeactivated");
        assert_eq!(e.message, "Deactivated apps/v1.Deployment ns/web from 3 to 0");
        // initialCooldownPeriod not over yet.
        let mut c = Case::new(spec(None, None), 3, false);
        c.spec.initial_cooldown_period = Some(10);
        let d = c.run();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.active_condition.expect("active").reason, "ScalerCooldown");
        // cooldownPeriod from lastActiveTime; equal is not yet "before".
        let mut c = Case::new(spec(None, None), 3, false);
        c.spec.cooldown_period = Some(60);
        c.last_active = Some(t(0));
        c.now = t(60);
        assert_eq!(c.run().action, Action::None);
        c.now = t(61);
        assert_eq!(c.run().action, scale(0, ScaleReason::Deactivate));
        // Idle replica count is the target when set.
        let mut c = Case::new(spec(Some(2), Some(0)), 2, false);
        c.last_active = Some(t(-1000));
        assert_eq!(c.run().action, scale(0, ScaleReason::Deactivate));
        // Paused scale-in never deactivates.
        let mut c = Case::new(spec(None, None), 3, false);
        c.pause.scale_in_paused = true;
        assert_eq!(c.run().action, Action::None);
    }

    #[test]
    fn below_min_and_nothing_cases() {
        let d = Case::new(spec(Some(3), None), 1, false).run();
        assert_eq!(d.action, scale(3, ScaleReason::ToMin));
        assert_eq!(d.event, None);
        let mut c = Case::new(spec(Some(3), None), 1, false);
        c.pause.scale_out_paused = true;
        assert_eq!(c.run().action, scale(3, ScaleReason::ToMin));
        assert_eq!(
            Case::new(spec(Some(3), None), 3, false).run().action,
            Action::None
        );
        assert_eq!(Case::new(spec(None, None), 0, false).run().action, Action::None);
        assert_eq!(
            Case::new(spec(Some(2), Some(0)), 0, false).run().action,
            Action::None
        );
    }

    #[test]
    fn object_level_activity() {
        let t = |resource, active, error| TriggerOutcome {
            resource,
            active,
            error,
        };
        assert_eq!(
            object_activity(&[t(false, true, false), t(false, false, true)], None),
            (true, true)
        );
        assert_eq!(object_activity(&[t(true, false, false)], None), (true, false));
        assert_eq!(object_activity(&[t(true, false, true)], None), (false, true));
        assert_eq!(
            object_activity(&[t(false, true, false)], Some((Some(1.0), 1.0))),
            (false, false)
        );
        assert_eq!(
            object_activity(&[t(false, false, false)], Some((Some(1.5), 1.0))),
            (true, false)
        );
        assert_eq!(
            object_activity(&[t(false, true, true)], Some((Some(5.0), 0.0))),
            (false, true)
        );
    }

    #[test]
    fn full_pause_only_sets_paused() {
        let mut c = Case::new(spec(None, None), 0, true);
        c.pause.paused = true;
        let d = c.run();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.paused_condition.expect("paused").reason, "ScaledObjectPaused");
        assert_eq!(d.active_condition, None);
    }

    #[test]
    fn pause_annotations_parse_like_go() {
        let a = |pairs: &[(&str, &str)]| {
            pause_state(Some(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
        };
        assert!(!a(&[(PAUSED_ANNOTATION, "false")]).is_fully_paused());
        assert!(a(&[(PAUSED_ANNOTATION, "yes")]).is_fully_paused());
        assert!(a(&[(PAUSED_ANNOTATION, "")]).is_fully_paused());
        assert!(a(&[(PAUSED_ANNOTATION, "false"), (PAUSED_REPLICAS_ANNOTATION, "2")]).is_fully_paused());
        assert_eq!(
            a(&[(PAUSED_REPLICAS_ANNOTATION, "2")]).paused_replica_count(),
            Ok(Some(2))
        );
        assert!(
            a(&[(PAUSED_REPLICAS_ANNOTATION, "x")])
                .paused_replica_count()
                .is_err()
        );
        let s = a(&[
            (PAUSED_SCALE_IN_ANNOTATION, "1"),
            (PAUSED_SCALE_OUT_ANNOTATION, "F"),
        ]);
        assert!(s.scale_in_paused && !s.scale_out_paused && s.any() && !s.is_fully_paused());
        assert_eq!(pause_state(None), PauseState::default());
    }
}
