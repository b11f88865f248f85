//! A ScaledJob's conditions and events as KEDA writes them (§2, §8, §9, §10): the controller
//! hands in what happened, these functions update the conditions and say which events to emit.

use crate::{
    crd::{ScaledJobSpec, scaled_object::Condition},
    scaling::{
        conditions::{
            ACTIVE, ConditionStatus, ConditionType, PAUSED, READY, condition_status, set_condition,
        },
        events::{Event, EventReason},
    },
};

/// Ready message after a successful reconcile.
pub const READY_MESSAGE: &str = "ScaledJob is defined correctly and is ready to scaling";
/// Ready message written by the scale loop (KEDA's wording differs from the reconciler's).
pub const LOOP_READY_MESSAGE: &str = "ScaledJob is defined correctly and is ready for scaling";
/// Ready message while paused.
pub const PAUSED_RECONCILE_MESSAGE: &str = "ScaledJob is paused, skipping reconcile loop";

/// KEDA's `GetInitializedConditions`, the same four conditions as a ScaledObject's (Fallback
/// never leaves `Unknown`: jobs have no fallback).
pub use crate::scaling::conditions::initial_conditions;

/// Adds the initial conditions missing from `conditions`; true when something was added.
pub fn ensure_conditions(conditions: &mut Vec<Condition>) -> bool {
    let mut changed = false;
    for c in initial_conditions() {
        if !conditions.iter().any(|have| have.type_ == c.type_) {
            conditions.push(c);
            changed = true;
        }
    }
    changed
}

/// Sets one condition; its reason is an event reason or KEDA's condition-only reason.
fn set(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: impl AsRef<str>,
    message: &str,
) -> bool {
    set_condition(conditions, type_, status, reason.as_ref(), message)
}

/// `status.triggersTypes`: trigger types, de-duplicated in order, comma-joined.
pub fn triggers_types(spec: &ScaledJobSpec) -> Option<String> {
    join_distinct(spec.triggers.iter().map(|t| t.type_.as_str()))
}

/// `status.authenticationsTypes`: authenticationRef names, de-duplicated in order.
pub fn authentications_types(spec: &ScaledJobSpec) -> Option<String> {
    join_distinct(
        spec.triggers
            .iter()
            .filter_map(|t| t.authentication_ref.as_ref().map(|a| a.name.as_str())),
    )
}

fn join_distinct<'a>(items: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for i in items.filter(|i| !i.is_empty()) {
        if !seen.contains(&i) {
            seen.push(i);
        }
    }
    (!seen.is_empty()).then(|| seen.join(","))
}

/// What the reconcile concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// Ready to scale (the loop runs).
    Ready,
    /// Paused: Ready stays True with the pause message, no loop.
    Paused,
    /// A step failed with this message.
    Failed(String),
}

/// Applies a reconcile outcome to the conditions (§2 step 8) and returns its events.
pub fn reconciled(conditions: &mut Vec<Condition>, outcome: &Reconciled) -> Vec<Event> {
    match outcome {
        Reconciled::Failed(msg) => {
            set(
                conditions,
                READY,
                ConditionStatus::False,
                EventReason::ScaledJobCheckFailed,
                msg,
            );
            set(
                conditions,
                ACTIVE,
                ConditionStatus::Unknown,
                "UnknownState",
                "ScaledJob check failed",
            );
            vec![Event::warning(EventReason::ScaledJobCheckFailed, msg.clone())]
        }
        Reconciled::Ready | Reconciled::Paused => {
            let was_ready = condition_status(conditions, READY) == Some(ConditionStatus::True);
            let msg = if *outcome == Reconciled::Paused {
                PAUSED_RECONCILE_MESSAGE
            } else {
                READY_MESSAGE
            };
            set(
                conditions,
                READY,
                ConditionStatus::True,
                EventReason::ScaledJobReady,
                msg,
            );
            if was_ready {
                Vec::new()
            } else {
                vec![Event::normal(
                    EventReason::ScaledJobReady,
                    "ScaledJob is ready for scaling",
                )]
            }
        }
    }
}

/// Applies the pause annotation to the `Paused` condition; an event when it flipped.
pub fn paused(conditions: &mut Vec<Condition>, paused: bool) -> Vec<Event> {
    let was = condition_status(conditions, PAUSED) == Some(ConditionStatus::True);
    if paused {
        set(
            conditions,
            PAUSED,
            ConditionStatus::True,
            EventReason::ScaledJobPaused,
            "ScaledJob is paused",
        );
        if !was {
            return vec![Event::normal(EventReason::ScaledJobPaused, "ScaledJob is paused")];
        }
    } else {
        set(
            conditions,
            PAUSED,
            ConditionStatus::False,
            EventReason::ScaledJobUnpaused,
            "ScaledJob is unpaused",
        );
        if was {
            return vec![Event::normal(
                EventReason::ScaledJobUnpaused,
                "ScaledJob is unpaused",
            )];
        }
    }
    Vec::new()
}

/// Applies one poll's outcome to Ready and Active (§9); events for an Active flip.
pub fn polled(conditions: &mut Vec<Condition>, active: bool, error: bool) -> Vec<Event> {
    match (error, active) {
        (false, _) => set(
            conditions,
            READY,
            ConditionStatus::True,
            EventReason::ScaledJobReady,
            LOOP_READY_MESSAGE,
        ),
        (true, true) => set(
            conditions,
            READY,
            ConditionStatus::Unknown,
            "PartialTriggerError",
            "Some triggers defined in ScaledJob are not working correctly",
        ),
        (true, false) => set(
            conditions,
            READY,
            ConditionStatus::False,
            "TriggerError",
            "Triggers defined in ScaledJob are not working correctly",
        ),
    };
    let (status, r, msg, event) = if active {
        (
            ConditionStatus::True,
            "ScalerActive",
            "Scaling is performed because triggers are active",
            EventReason::ScaledJobActive,
        )
    } else {
        (
            ConditionStatus::False,
            "ScalerNotActive",
            "Scaling is not performed because triggers are not active",
            EventReason::ScaledJobInactive,
        )
    };
    let before = condition_status(conditions, ACTIVE);
    set(conditions, ACTIVE, status, r, msg);
    if before != Some(status) {
        vec![Event::normal(event, msg)]
    } else {
        Vec::new()
    }
}

/// The events of one poll's Job creation (§4.6): one Warning per failed create, then always
/// `Created <n> jobs` where n counts failures too.
pub fn created(prefix: &str, attempted: i64, failures: &[String]) -> Vec<Event> {
    let mut out: Vec<Event> = failures
        .iter()
        .map(|e| {
            Event::warning(
                EventReason::JobCreateFailed,
                format!("Failed to create job {prefix}: {e}"),
            )
        })
        .collect();
    out.push(Event::normal(
        EventReason::JobsCreated,
        format!("Created {attempted} jobs"),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(cs: &[Condition], t: ConditionType) -> (&str, &str) {
        let c = cs.iter().find(|c| c.type_ == t.as_str()).expect("condition");
        (c.status.as_str(), c.reason.as_deref().unwrap_or(""))
    }

    #[test]
    fn initial_then_ready_then_failed() {
        let mut cs = Vec::new();
        assert!(ensure_conditions(&mut cs));
        assert!(!ensure_conditions(&mut cs));
        assert_eq!(get(&cs, PAUSED), ("False", ""));
        let ev = reconciled(&mut cs, &Reconciled::Ready);
        assert_eq!(
            ev,
            [Event::normal(
                EventReason::ScaledJobReady,
                "ScaledJob is ready for scaling"
            )]
        );
        // Already ready: no second event.
        assert!(reconciled(&mut cs, &Reconciled::Ready).is_empty());
        let ev = reconciled(&mut cs, &Reconciled::Failed("bad trigger".into()));
        assert_eq!(
            ev,
            [Event::warning(EventReason::ScaledJobCheckFailed, "bad trigger")]
        );
        assert_eq!(get(&cs, READY), ("False", "ScaledJobCheckFailed"));
        assert_eq!(get(&cs, ACTIVE), ("Unknown", "UnknownState"));
        // Paused reads Ready=True with the pause message.
        reconciled(&mut cs, &Reconciled::Paused);
        let ready = cs.iter().find(|c| c.type_ == READY.as_str()).expect("ready");
        assert_eq!(ready.message.as_deref(), Some(PAUSED_RECONCILE_MESSAGE));
    }

    #[test]
    fn poll_conditions() {
        // (active, error) → (Ready, reason)
        let cases = [
            (true, false, "True", "ScaledJobReady"),
            (false, false, "True", "ScaledJobReady"),
            (true, true, "Unknown", "PartialTriggerError"),
            (false, true, "False", "TriggerError"),
        ];
        for (active, error, status, r) in cases {
            let mut cs = initial_conditions();
            polled(&mut cs, active, error);
            assert_eq!(get(&cs, READY), (status, r), "active {active} error {error}");
        }
        let mut cs = initial_conditions();
        assert_eq!(
            polled(&mut cs, true, false)[0].reason,
            EventReason::ScaledJobActive
        );
        assert!(polled(&mut cs, true, false).is_empty());
        assert_eq!(
            polled(&mut cs, false, false)[0].reason,
            EventReason::ScaledJobInactive
        );
    }

    #[test]
    fn pause_flips_emit_once() {
        let mut cs = initial_conditions();
        assert_eq!(paused(&mut cs, false), []);
        assert_eq!(paused(&mut cs, true)[0].reason, EventReason::ScaledJobPaused);
        assert_eq!(paused(&mut cs, true), []);
        assert_eq!(paused(&mut cs, false)[0].reason, EventReason::ScaledJobUnpaused);
    }

    #[test]
    fn types_are_distinct_and_ordered() {
        let spec: ScaledJobSpec = serde_yaml::from_str(
            "triggers: [{type: cron, metadata: {}}, {type: aws-sqs-queue, metadata: {}, authenticationRef: {name: aws}}, {type: cron, metadata: {}, authenticationRef: {name: aws}}]",
        )
        .expect("spec");
        assert_eq!(triggers_types(&spec).as_deref(), Some("cron,aws-sqs-queue"));
        assert_eq!(authentications_types(&spec).as_deref(), Some("aws"));
        assert_eq!(authentications_types(&ScaledJobSpec::default()), None);
    }

    #[test]
    fn created_events_count_failures() {
        let ev = created("encode-", 3, &["quota exceeded".to_string()]);
        assert_eq!(
            ev[0],
            Event::warning(
                EventReason::JobCreateFailed,
                "Failed to create job encode-: quota exceeded"
            )
        );
        assert_eq!(ev[1], Event::normal(EventReason::JobsCreated, "Created 3 jobs"));
    }
}
