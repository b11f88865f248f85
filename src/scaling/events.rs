//! The Kubernetes events ebb records on the objects it manages, with KEDA's reasons, so event
//! queries and alerts written for KEDA keep matching.

use std::fmt;

/// An event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something went as intended.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

/// Why an event is recorded: KEDA's reasons (`pkg/eventreason`), spelled as KEDA spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// A reconcile check failed (Warning).
    ScaledObjectCheckFailed,
    /// The object became Ready.
    ScaledObjectReady,
    /// The scale loop started.
    ScalersStarted,
    /// The scale loop stopped (pause or deletion).
    ScalersStopped,
    /// A pause annotation took effect.
    ScaledObjectPaused,
    /// The pause annotations were removed.
    ScaledObjectUnpaused,
    /// A setting KEDA 2.17 accepts but has deprecated (ebb's own reason, a Warning).
    ScaledObjectDeprecatedSetting,
    /// A trigger could not be read (Warning).
    ScalerFailed,
    /// A trigger read as a scalingModifiers source could not be read (Warning).
    MetricSourceFailed,
    /// The target was scaled up from zero or idle.
    ScaleTargetActivated,
    /// Scaling the target up from zero or idle failed (Warning).
    ScaleTargetActivationFailed,
    /// The target was scaled down to zero or idle.
    ScaleTargetDeactivated,
    /// Scaling the target down to zero or idle failed (Warning).
    ScaleTargetDeactivationFailed,
    /// A metric started falling back (Warning).
    FallbackActivated,
    /// No metric falls back any more.
    FallbackDeactivated,
    /// A TriggerAuthentication was created.
    TriggerAuthenticationAdded,
    /// A TriggerAuthentication was deleted.
    TriggerAuthenticationDeleted,
    /// A ClusterTriggerAuthentication was created.
    ClusterTriggerAuthenticationAdded,
    /// A (Cluster)TriggerAuthentication changed: KEDA uses this one reason for both kinds.
    ClusterTriggerAuthenticationUpdated,
    /// A ClusterTriggerAuthentication was deleted.
    ClusterTriggerAuthenticationDeleted,
    /// A ScaledJob reconcile succeeded after Ready was not True.
    ScaledJobReady,
    /// A ScaledJob reconcile step failed (Warning).
    ScaledJobCheckFailed,
    /// A ScaledJob status write failed (Warning).
    ScaledJobUpdateFailed,
    /// A ScaledJob's pause annotation took effect.
    ScaledJobPaused,
    /// A ScaledJob's pause annotation was removed.
    ScaledJobUnpaused,
    /// A ScaledJob's rollout cleanup started.
    ScaledJobRolloutCleanupStarted,
    /// A ScaledJob's rollout cleanup finished.
    ScaledJobRolloutCleanupCompleted,
    /// Deleting a Job during rollout cleanup failed (Warning).
    ScaledJobRolloutCleanupFailed,
    /// A ScaledJob's finalizer ran (KEDA records it as a Warning).
    ScaledJobDeleted,
    /// A ScaledJob's Active condition became True.
    ScaledJobActive,
    /// A ScaledJob's Active condition became False.
    ScaledJobInactive,
    /// Jobs were created by one poll (the count includes failed creates, as KEDA's).
    JobsCreated,
    /// Creating a Job failed (Warning).
    JobCreateFailed,
}

impl EventReason {
    /// The reason as recorded on the event.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::ScaledObjectCheckFailed => "ScaledObjectCheckFailed",
            EventReason::ScaledObjectReady => "ScaledObjectReady",
            EventReason::ScalersStarted => "KEDAScalersStarted",
            EventReason::ScalersStopped => "KEDAScalersStopped",
            EventReason::ScaledObjectPaused => "ScaledObjectPaused",
            EventReason::ScaledObjectUnpaused => "ScaledObjectUnpaused",
            EventReason::ScaledObjectDeprecatedSetting => "ScaledObjectDeprecatedSetting",
            EventReason::ScalerFailed => "KEDAScalerFailed",
            EventReason::MetricSourceFailed => "KEDAMetricSourceFailed",
            EventReason::ScaleTargetActivated => "KEDAScaleTargetActivated",
            EventReason::ScaleTargetActivationFailed => "KEDAScaleTargetActivationFailed",
            EventReason::ScaleTargetDeactivated => "KEDAScaleTargetDeactivated",
            EventReason::ScaleTargetDeactivationFailed => "KEDAScaleTargetDeactivationFailed",
            EventReason::FallbackActivated => "ScaledObjectFallbackActivated",
            EventReason::FallbackDeactivated => "ScaledObjectFallbackDeactivated",
            EventReason::TriggerAuthenticationAdded => "TriggerAuthenticationAdded",
            EventReason::TriggerAuthenticationDeleted => "TriggerAuthenticationDeleted",
            EventReason::ClusterTriggerAuthenticationAdded => "ClusterTriggerAuthenticationAdded",
            EventReason::ClusterTriggerAuthenticationUpdated => "ClusterTriggerAuthenticationUpdated",
            EventReason::ClusterTriggerAuthenticationDeleted => "ClusterTriggerAuthenticationDeleted",
            EventReason::ScaledJobReady => "ScaledJobReady",
            EventReason::ScaledJobCheckFailed => "ScaledJobCheckFailed",
            EventReason::ScaledJobUpdateFailed => "ScaledJobUpdateFailed",
            EventReason::ScaledJobPaused => "ScaledJobPaused",
            EventReason::ScaledJobUnpaused => "ScaledJobUnpaused",
            EventReason::ScaledJobRolloutCleanupStarted => "ScaledJobRolloutCleanupStarted",
            EventReason::ScaledJobRolloutCleanupCompleted => "ScaledJobRolloutCleanupCompleted",
            EventReason::ScaledJobRolloutCleanupFailed => "ScaledJobRolloutCleanupFailed",
            EventReason::ScaledJobDeleted => "ScaledJobDeleted",
            EventReason::ScaledJobActive => "ScaledJobActive",
            EventReason::ScaledJobInactive => "ScaledJobInactive",
            EventReason::JobsCreated => "KEDAJobsCreated",
            EventReason::JobCreateFailed => "KEDAJobCreateFailed",
        }
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for EventReason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<&str> for EventReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An event to record on an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning.
    pub type_: EventType,
    /// Why.
    pub reason: EventReason,
    /// What happened, for a person.
    pub message: String,
}

impl Event {
    /// A Normal event.
    pub fn normal(reason: EventReason, message: impl Into<String>) -> Self {
        Event {
            type_: EventType::Normal,
            reason,
            message: message.into(),
        }
    }

    /// A Warning event.
    pub fn warning(reason: EventReason, message: impl Into<String>) -> Self {
        Event {
            type_: EventType::Warning,
            reason,
            message: message.into(),
        }
    }
}
