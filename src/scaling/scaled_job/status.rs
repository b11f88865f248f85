//! A ScaledJob's conditions and events as KEDA writes them (§2, §8, §9, §10): the controller
//! hands in what happened, these functions update the conditions and say which events to emit.

use crate::crd::{ScaledJobSpec, scaled_object::Condition};

/// Condition types.
pub const READY: &str = "Ready";
/// See [`READY`].
pub const ACTIVE: &str = "Active";
/// Never leaves `Unknown` for ScaledJobs (no fallback for jobs).
pub const FALLBACK: &str = "Fallback";
/// See [`READY`].
pub const PAUSED: &str = "Paused";

/// Ready message after a successful reconcile.
pub const READY_MESSAGE: &str = "ScaledJob is defined correctly and is ready to scaling";
/// Ready message written by the scale loop (KEDA's wording differs from the reconciler's).
pub const LOOP_READY_MESSAGE: &str = "ScaledJob is defined correctly and is ready for scaling";
/// Ready message while paused.
pub const PAUSED_RECONCILE_MESSAGE: &str = "ScaledJob is paused, skipping reconcile loop";

/// Event reasons (KEDA's `eventreason` package).
pub mod reason {
    /// Reconcile succeeded after Ready was not True.
    pub const READY: &str = "ScaledJobReady";
    /// A reconcile step failed.
    pub const CHECK_FAILED: &str = "ScaledJobCheckFailed";
    /// A status write failed.
    pub const UPDATE_FAILED: &str = "ScaledJobUpdateFailed";
    /// Pause annotation set.
    pub const PAUSED: &str = "ScaledJobPaused";
    /// Pause annotation cleared.
    pub const UNPAUSED: &str = "ScaledJobUnpaused";
    /// Rollout cleanup started.
    pub const ROLLOUT_STARTED: &str = "ScaledJobRolloutCleanupStarted";
    /// Rollout cleanup done.
    pub const ROLLOUT_COMPLETED: &str = "ScaledJobRolloutCleanupCompleted";
    /// A rollout delete failed.
    pub const ROLLOUT_FAILED: &str = "ScaledJobRolloutCleanupFailed";
    /// Finalizer done.
    pub const DELETED: &str = "ScaledJobDeleted";
    /// Active condition became True.
    pub const ACTIVE: &str = "ScaledJobActive";
    /// Active condition became False.
    pub const INACTIVE: &str = "ScaledJobInactive";
    /// Scale loop started, or a scaler built.
    pub const SCALERS_STARTED: &str = "KEDAScalersStarted";
    /// Scale loop stopped.
    pub const SCALERS_STOPPED: &str = "KEDAScalersStopped";
    /// A scaler failed to build or to answer.
    pub const SCALER_FAILED: &str = "KEDAScalerFailed";
    /// Jobs created this poll.
    pub const JOBS_CREATED: &str = "KEDAJobsCreated";
    /// A Job create failed.
    pub const JOB_CREATE_FAILED: &str = "KEDAJobCreateFailed";
}

/// An event to publish on the ScaledJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// Reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

impl Event {
    /// A Normal event.
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    /// A Warning event.
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// KEDA's `GetInitializedConditions` for a ScaledJob.
pub fn initial_conditions() -> Vec<Condition> {
    [
        (READY, "Unknown"),
        (ACTIVE, "Unknown"),
        (FALLBACK, "Unknown"),
        (PAUSED, "False"),
    ]
    .into_iter()
    .map(|(t, s)| Condition {
        type_: t.to_string(),
        status: s.to_string(),
        reason: None,
        message: None,
    })
    .collect()
}

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

/// The status of condition `type_`.
pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// Sets one condition; true when it changed.
pub fn set(conditions: &mut Vec<Condition>, type_: &str, status: &str, reason: &str, message: &str) -> bool {
    let wanted = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if *c == wanted => false,
        Some(c) => {
            *c = wanted;
            true
        }
        None => {
            conditions.push(wanted);
            true
        }
    }
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
            set(conditions, READY, "False", reason::CHECK_FAILED, msg);
            set(
                conditions,
                ACTIVE,
                "Unknown",
                "UnknownState",
                "ScaledJob check failed",
            );
            vec![Event::warning(reason::CHECK_FAILED, msg.clone())]
        }
        Reconciled::Ready | Reconciled::Paused => {
            let was_ready = status_of(conditions, READY) == Some("True");
            let msg = if *outcome == Reconciled::Paused {
                PAUSED_RECONCILE_MESSAGE
            } else {
                READY_MESSAGE
            };
            set(conditions, READY, "True", reason::READY, msg);
            if was_ready {
                Vec::new()
            } else {
                vec![Event::normal(reason::READY, "ScaledJob is ready for scaling")]
            }
        }
    }
}

/// Applies the pause annotation to the `Paused` condition; an event when it flipped.
pub fn paused(conditions: &mut Vec<Condition>, paused: bool) -> Vec<Event> {
    let was = status_of(conditions, PAUSED) == Some("True");
    if paused {
        set(conditions, PAUSED, "True", reason::PAUSED, "ScaledJob is paused");
        if !was {
            return vec![Event::normal(reason::PAUSED, "ScaledJob is paused")];
        }
    } else {
        set(
            conditions,
            PAUSED,
            "False",
            reason::UNPAUSED,
            "ScaledJob is unpaused",
        );
        if was {
            return vec![Event::normal(reason::UNPAUSED, "ScaledJob is unpaused")];
        }
    }
    Vec::new()
}

/// Applies one poll's outcome to Ready and Active (§9); events for an Active flip.
pub fn polled(conditions: &mut Vec<Condition>, active: bool, error: bool) -> Vec<Event> {
    match (error, active) {
        (false, _) => set(conditions, READY, "True", reason::READY, LOOP_READY_MESSAGE),
        (true, true) => set(
            conditions,
            READY,
            "Unknown",
            "PartialTriggerError",
            "Some triggers defined in ScaledJob are not working correctly",
        ),
        (true, false) => set(
            conditions,
            READY,
            "False",
            "TriggerError",
            "Triggers defined in ScaledJob are not working correctly",
        ),
    };
    let (status, r, msg, event) = if active {
        (
            "True",
            "ScalerActive",
            "Scaling is performed because triggers are active",
            reason::ACTIVE,
        )
    } else {
        (
            "False",
            "ScalerNotActive",
            "Scaling is not performed because triggers are not active",
            reason::INACTIVE,
        )
    };
    let before = status_of(conditions, ACTIVE).map(str::to_string);
    set(conditions, ACTIVE, status, r, msg);
    if before.as_deref() != Some(status) {
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
                reason::JOB_CREATE_FAILED,
                format!("Failed to create job {prefix}: {e}"),
            )
        })
        .collect();
    out.push(Event::normal(
        reason::JOBS_CREATED,
        format!("Created {attempted} jobs"),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(cs: &'a [Condition], t: &str) -> (&'a str, &'a str) {
        let c = cs.iter().find(|c| c.type_ == t).expect("condition");
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
            [Event::normal(reason::READY, "ScaledJob is ready for scaling")]
        );
        // Already ready: no second event.
        assert!(reconciled(&mut cs, &Reconciled::Ready).is_empty());
        let ev = reconciled(&mut cs, &Reconciled::Failed("bad trigger".into()));
        assert_eq!(ev, [Event::warning(reason::CHECK_FAILED, "bad trigger")]);
        assert_eq!(get(&cs, READY), ("False", reason::CHECK_FAILED));
        assert_eq!(get(&cs, ACTIVE), ("Unknown", "UnknownState"));
        // Paused reads Ready=True with the pause message.
        reconciled(&mut cs, &Reconciled::Paused);
        let ready = cs.iter().find(|c| c.type_ == READY).expect("ready");
        assert_eq!(ready.message.as_deref(), Some(PAUSED_RECONCILE_MESSAGE));
    }

    #[test]
    fn poll_conditions() {
        // (active, error) → (Ready, reason)
        let cases = [
            (true, false, "True", reason::READY),
            (false, false, "True", reason::READY),
            (true, true, "Unknown", "PartialTriggerError"),
            (false, true, "False", "TriggerError"),
        ];
        for (active, error, status, r) in cases {
            let mut cs = initial_conditions();
            polled(&mut cs, active, error);
            assert_eq!(get(&cs, READY), (status, r), "active {active} error {error}");
        }
        let mut cs = initial_conditions();
        assert_eq!(polled(&mut cs, true, false)[0].reason, reason::ACTIVE);
        assert!(polled(&mut cs, true, false).is_empty());
        assert_eq!(polled(&mut cs, false, false)[0].reason, reason::INACTIVE);
    }

    #[test]
    fn pause_flips_emit_once() {
        let mut cs = initial_conditions();
        assert_eq!(paused(&mut cs, false), []);
        assert_eq!(paused(&mut cs, true)[0].reason, reason::PAUSED);
        assert_eq!(paused(&mut cs, true), []);
        assert_eq!(paused(&mut cs, false)[0].reason, reason::UNPAUSED);
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
                reason::JOB_CREATE_FAILED,
                "Failed to create job encode-: quota exceeded"
            )
        );
        assert_eq!(ev[1], Event::normal(reason::JOBS_CREATED, "Created 3 jobs"));
    }
}
