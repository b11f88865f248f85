//! ScaledObject status conditions with KEDA's exact types, reasons and messages.

use std::borrow::Cow;

use crate::crd::scaled_object::Condition;

/// A condition type KEDA writes on a ScaledObject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// `Ready`: the object is defined correctly and its triggers answer.
    Ready,
    /// `Active`: the triggers ask for more than zero (or idle) replicas.
    Active,
    /// `Fallback`: at least one metric is answered by fallback.
    Fallback,
    /// `Paused`: a pause annotation is in effect.
    Paused,
    /// `HPAActive`: the HPA's `ScalingActive` condition, mirrored (added lazily).
    HpaActive,
}

impl ConditionType {
    /// The type as written in `status.conditions[].type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Active => "Active",
            ConditionType::Fallback => "Fallback",
            ConditionType::Paused => "Paused",
            ConditionType::HpaActive => "HPAActive",
        }
    }
}

/// Condition type `Ready`.
pub const READY: ConditionType = ConditionType::Ready;
/// Condition type `Active`.
pub const ACTIVE: ConditionType = ConditionType::Active;
/// Condition type `Fallback`.
pub const FALLBACK: ConditionType = ConditionType::Fallback;
/// Condition type `Paused`.
pub const PAUSED: ConditionType = ConditionType::Paused;
/// Condition type `HPAActive`, added lazily.
pub const HPA_ACTIVE: ConditionType = ConditionType::HpaActive;

/// A condition's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// The status as written in `status.conditions[].status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// Reads a written status; anything but the three values Kubernetes defines is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "True" => Some(ConditionStatus::True),
            "False" => Some(ConditionStatus::False),
            "Unknown" => Some(ConditionStatus::Unknown),
            _ => None,
        }
    }
}

/// Ready=True message.
pub const READY_MESSAGE: &str = "ScaledObject is defined correctly and is ready for scaling";
/// Ready=Unknown/PartialTriggerError message.
pub const PARTIAL_TRIGGER_ERROR_MESSAGE: &str =
    "Some triggers defined in ScaledObject are not working correctly";
/// Ready=False/TriggerError message.
pub const TRIGGER_ERROR_MESSAGE: &str = "Triggers defined in ScaledObject are not working correctly";
/// Active=True message.
pub const ACTIVE_MESSAGE: &str = "Scaling is performed because triggers are active";
/// Active=True message under the force-activation annotation.
pub const ACTIVE_FORCED_MESSAGE: &str =
    "Scaling is performed because activation is being forced by annotation";
/// Active=False/ScalerNotActive message.
pub const NOT_ACTIVE_MESSAGE: &str = "Scaling is not performed because triggers are not active";
/// Active=False/ScalerCooldown message.
pub const COOLDOWN_MESSAGE: &str = "Scaler cooling down because triggers are not active";
/// Fallback=True message.
pub const FALLBACK_EXISTS_MESSAGE: &str = "At least one trigger is falling back on this scaled object";
/// Fallback=False message.
pub const NO_FALLBACK_MESSAGE: &str = "No fallbacks are active on this scaled object";
/// Paused=True message.
pub const PAUSED_MESSAGE: &str = "ScaledObject is paused";
/// Paused=False message after the annotation is removed.
pub const UNPAUSED_MESSAGE: &str = "pause annotation removed for ScaledObject";
/// Active=Unknown message after a failed reconcile.
pub const CHECK_FAILED_ACTIVE_MESSAGE: &str = "ScaledObject check failed";

/// A condition value to write: status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CondUpdate {
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Reason: KEDA's constant, or one copied from the HPA's own condition.
    pub reason: Cow<'static, str>,
    /// Message (owned because some embed errors).
    pub message: String,
}

impl CondUpdate {
    /// Builds an update.
    pub fn new(
        status: ConditionStatus,
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        CondUpdate {
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Writes this update into `conditions` as condition `type_`; true when something changed.
    pub fn apply(&self, conditions: &mut Vec<Condition>, type_: ConditionType) -> bool {
        set_condition(conditions, type_, self.status, &self.reason, &self.message)
    }
}

/// The four conditions KEDA writes on first reconcile: Ready/Active/Fallback Unknown, Paused False.
pub fn initial_conditions() -> Vec<Condition> {
    [
        (READY, ConditionStatus::Unknown),
        (ACTIVE, ConditionStatus::Unknown),
        (FALLBACK, ConditionStatus::Unknown),
        (PAUSED, ConditionStatus::False),
    ]
    .into_iter()
    .map(|(t, s)| Condition {
        type_: t.as_str().to_string(),
        status: s.as_str().to_string(),
        reason: None,
        message: None,
    })
    .collect()
}

/// True when any of the four initial conditions is missing (KEDA then re-initialises them all).
pub fn needs_initial_conditions(conditions: &[Condition]) -> bool {
    [READY, ACTIVE, FALLBACK, PAUSED]
        .iter()
        .any(|t| !conditions.iter().any(|c| c.type_ == t.as_str()))
}

/// Sets (or appends) condition `type_`; returns true when anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> bool {
    let type_ = type_.as_str();
    let wanted = Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
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

/// Status of condition `type_`, if present (and one of the three Kubernetes values).
pub fn condition_status(conditions: &[Condition], type_: ConditionType) -> Option<ConditionStatus> {
    conditions
        .iter()
        .find(|c| c.type_ == type_.as_str())
        .and_then(|c| ConditionStatus::parse(&c.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_set_once() {
        let mut c = initial_conditions();
        assert!(!needs_initial_conditions(&c));
        assert_eq!(condition_status(&c, PAUSED), Some(ConditionStatus::False));
        assert!(set_condition(
            &mut c,
            READY,
            ConditionStatus::True,
            "ScaledObjectReady",
            READY_MESSAGE
        ));
        assert!(!set_condition(
            &mut c,
            READY,
            ConditionStatus::True,
            "ScaledObjectReady",
            READY_MESSAGE
        ));
        assert!(set_condition(
            &mut c,
            HPA_ACTIVE,
            ConditionStatus::True,
            "HPAActive",
            "HPA is actively scaling"
        ));
        assert_eq!(c.len(), 5);
        assert!(needs_initial_conditions(&c[1..]));
    }
}
