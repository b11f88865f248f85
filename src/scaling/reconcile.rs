//! The reconcile plan: KEDA's ScaledObject reconcile (spec §3) as decisions over what the
//! operator observed.
//!
//! Each step of KEDA's reconcile that needs the cluster (label the object, find the target's
//! resource, read its `/scale`, build the scalers, read and apply the HPA) is the operator's; the
//! step after it is a method here that takes the answer and updates the [`Plan`]: the status to
//! write, its conditions, the events to publish, and the next thing to fetch or apply. A step
//! that ends the reconcile returns the [`Requeue`] to ask for; the plan so far is still written.
//!
//! ```text
//! Plan::new ─ pause ─┬─ FullyPaused: (stop loop, delete HPA, set /scale) ─ fully_paused
//!                    └─ Proceed ─ target_named ─ (label, discovery, GET /scale) ─ scale_target
//!    ─ validation ─ (registry) ─ hpa ─ (delete old HPA, GET, apply HPA) ─ hpa_applied
//!    ─ (start the scale loop) ─ scalers_started ─ ready ─ finish: (status patch, events)
//! ```

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

use crate::{
    crd::{
        ScaledObject, ScaledObjectStatus,
        scaled_object::{Condition, GroupVersionKindResource},
    },
    scalers::{ScalerError, SharedScaler},
    scaling::{
        activation::{PausedReplicasError, pause_state},
        conditions::{
            ACTIVE, CHECK_FAILED_ACTIVE_MESSAGE, CondUpdate, ConditionStatus, FALLBACK, NO_FALLBACK_MESSAGE,
            PAUSED, PAUSED_MESSAGE, READY, READY_MESSAGE, UNPAUSED_MESSAGE, condition_status,
            initial_conditions, needs_initial_conditions,
        },
        events::{Event, EventReason},
        fallback::has_valid_fallback,
        hpa::{
            COMPOSITE_METRIC_NAME, DesiredError, IndexedSpecs, desired_hpa, external_metric_names, hpa_name,
            resource_metric_names,
        },
        status::{authentications_types, triggers_types},
        target::{scale_target_gvkr, scale_target_kind},
        validate::Problem,
    },
};

/// KEDA's finalizer, so objects created under KEDA keep working when ebb takes over.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// Condition reason after a failed check (KEDA's `ScaledObjectCheckFailed`).
const CHECK_FAILED_REASON: &str = "ScaledObjectCheckFailed";

/// When the controller should look at the object again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Only when it changes.
    AwaitChange,
    /// After the retry delay: something outside the object may fix it (a target that appears).
    Retry,
}

/// What the pause annotations ask of this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum PauseStep {
    /// Fully paused: stop the scale loop, delete the HPA `hpa`, scale the target to `scale_to`
    /// when given, then [`Plan::fully_paused`] (or [`Plan::check_failed`] on `Err`).
    FullyPaused {
        /// The HPA to delete (the one in status, else the one this object would own).
        hpa: String,
        /// `paused-replicas` as parsed: the count to hold, or why it is invalid.
        replicas: Result<Option<i32>, PausedReplicasError>,
        /// The `/scale` write the paused count asks for.
        scale_to: Option<ScaleTo>,
    },
    /// Scaling goes on; the Paused condition is already up to date in the plan.
    Proceed,
}

/// A replica count to set on a scale target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTo {
    /// The target's group, version, kind and resource.
    pub gvkr: GroupVersionKindResource,
    /// The target's name.
    pub name: String,
    /// The count.
    pub replicas: i32,
}

/// The HPA reconcile wants, and what its status records of it.
#[derive(Debug, Clone)]
pub struct DesiredHpa {
    /// The object to apply.
    pub hpa: HorizontalPodAutoscaler,
    /// Its name.
    pub name: String,
    /// The metric specs it was rendered from, with their trigger index.
    pub specs: IndexedSpecs,
    /// An HPA this object owned under another name, to delete first.
    pub replaces: Option<String>,
}

/// The status and events one reconcile produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    before: ScaledObjectStatus,
    /// The status to write, without its conditions (kept apart while they change).
    pub status: ScaledObjectStatus,
    /// The conditions to write.
    pub conditions: Vec<Condition>,
    /// The events to publish once the status is written, in order.
    pub events: Vec<Event>,
}

impl Plan {
    /// Starts from the object's status; when one of the four initial conditions is missing
    /// KEDA re-initialises them all.
    pub fn new(so: &ScaledObject) -> Plan {
        let before = so.status.clone().unwrap_or_default();
        let mut status = before.clone();
        let mut conditions = status.conditions.take().unwrap_or_default();
        if needs_initial_conditions(&conditions) {
            conditions = initial_conditions();
        }
        Plan {
            before,
            status,
            conditions,
            events: Vec::new(),
        }
    }

    fn set(&mut self, type_: crate::scaling::conditions::ConditionType, update: CondUpdate) -> bool {
        update.apply(&mut self.conditions, type_)
    }

    /// Ready=False/ScaledObjectCheckFailed with `message`, Active=Unknown, and a Warning event.
    pub fn check_failed(&mut self, message: String) {
        self.set(
            READY,
            CondUpdate::new(ConditionStatus::False, CHECK_FAILED_REASON, message.clone()),
        );
        self.set(
            ACTIVE,
            CondUpdate::new(
                ConditionStatus::Unknown,
                "UnknownState",
                CHECK_FAILED_ACTIVE_MESSAGE,
            ),
        );
        self.events
            .push(Event::warning(EventReason::ScaledObjectCheckFailed, message));
    }

    /// Paused=True, with an event when it was not already.
    fn set_paused(&mut self) {
        if self.set(
            PAUSED,
            CondUpdate::new(ConditionStatus::True, "ScaledObjectPaused", PAUSED_MESSAGE),
        ) {
            self.events
                .push(Event::normal(EventReason::ScaledObjectPaused, PAUSED_MESSAGE));
        }
    }

    /// Step 3, the pause annotations. A partial pause (scale-in or scale-out only) and an
    /// unpause only change the Paused condition; a full pause is [`PauseStep::FullyPaused`].
    pub fn pause(&mut self, so: &ScaledObject) -> PauseStep {
        let pause = pause_state(so.metadata.annotations.as_ref());
        if pause.is_fully_paused() {
            let replicas = pause.paused_replica_count();
            let target = &so.spec.scale_target_ref.name;
            let scale_to = match &replicas {
                Ok(Some(n)) if !target.is_empty() => Some(ScaleTo {
                    gvkr: self
                        .status
                        .scale_target_gvkr
                        .clone()
                        .unwrap_or_else(|| scale_target_gvkr(so)),
                    name: target.clone(),
                    replicas: *n,
                }),
                _ => None,
            };
            return PauseStep::FullyPaused {
                hpa: self.status.hpa_name.clone().unwrap_or_else(|| hpa_name(so)),
                replicas,
                scale_to,
            };
        }
        if pause.any() {
            self.set_paused();
        } else if condition_status(&self.conditions, PAUSED) == Some(ConditionStatus::True) {
            self.set(
                PAUSED,
                CondUpdate::new(ConditionStatus::False, "ScaledObjectUnpaused", UNPAUSED_MESSAGE),
            );
            self.events
                .push(Event::normal(EventReason::ScaledObjectUnpaused, UNPAUSED_MESSAGE));
        }
        self.status.paused_replica_count = None;
        PauseStep::Proceed
    }

    /// A fully paused object whose HPA is gone and whose target holds `replicas` (when set).
    pub fn fully_paused(&mut self, replicas: Option<i32>) {
        self.status.paused_replica_count = replicas;
        self.set_paused();
    }

    /// Step 4: a target must be named.
    pub fn target_named(&mut self, so: &ScaledObject) -> Result<(), Requeue> {
        if so.spec.scale_target_ref.name.is_empty() {
            self.check_failed("ScaledObject.spec.scaleTargetRef.name is missing".to_string());
            return Err(Requeue::AwaitChange);
        }
        Ok(())
    }

    /// The target's kind could not be resolved to a resource (discovery said no).
    pub fn target_unresolved(&mut self, error: &str) -> Requeue {
        self.check_failed(format!("Failed to parse Group, Version, Kind, Resource: {error}"));
        Requeue::Retry
    }

    /// Step 5, the target's `/scale` as read: its replicas, or why it could not be read
    /// (`why` in KEDA's words, `error` the API's answer).
    pub fn scale_target(
        &mut self,
        gvkr: &GroupVersionKindResource,
        read: Result<i32, (&str, String)>,
    ) -> Result<(), Requeue> {
        match read {
            Ok(replicas) => {
                if self.status.original_replica_count.is_none() {
                    self.status.original_replica_count = Some(replicas);
                }
                self.status.scale_target_kind = Some(scale_target_kind(gvkr));
                self.status.scale_target_gvkr = Some(gvkr.clone());
                Ok(())
            }
            Err((why, error)) => {
                self.check_failed(format!("{why}: {error}"));
                Err(Requeue::Retry)
            }
        }
    }

    /// Step 6, validation: `problems` (from `validate_scaled_object`) fail the check;
    /// `deprecations` become Warning events. Records the trigger and authentication types.
    pub fn validation(
        &mut self,
        so: &ScaledObject,
        problems: &[Problem],
        deprecations: &[Problem],
    ) -> Result<(), Requeue> {
        if !problems.is_empty() {
            let message = problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            self.check_failed(message);
            return Err(Requeue::AwaitChange);
        }
        for d in deprecations {
            self.events.push(Event::warning(
                EventReason::ScaledObjectDeprecatedSetting,
                format!("{}: {}", d.field, d.message),
            ));
        }
        self.status.triggers_types = Some(triggers_types(so));
        let auths = authentications_types(so);
        self.status.authentications_types = (!auths.is_empty()).then_some(auths);
        Ok(())
    }

    /// Step 7, the HPA from the registry's scalers: the one to apply, or a failed check.
    pub fn hpa<'a>(
        &mut self,
        so: &ScaledObject,
        scalers: impl IntoIterator<Item = (usize, &'a Result<SharedScaler, ScalerError>)>,
        version: &str,
    ) -> Result<DesiredHpa, Requeue> {
        match desired_hpa(so, scalers, version) {
            Ok((hpa, specs)) => {
                let name = hpa_name(so);
                let replaces = self.status.hpa_name.clone().filter(|old| *old != name);
                Ok(DesiredHpa {
                    hpa,
                    name,
                    specs,
                    replaces,
                })
            }
            Err(DesiredError::Scalers(errors)) => {
                let (index, e) = &errors[0];
                let type_ = so
                    .spec
                    .triggers
                    .get(*index)
                    .map(|t| t.type_.as_str())
                    .unwrap_or_default();
                self.check_failed(format!(
                    "Failed to ensure HPA is correctly created for ScaledObject: error getting scaler for trigger #{index} ({type_}): {e}"
                ));
                Err(Requeue::Retry)
            }
            Err(DesiredError::Hpa(e)) => {
                self.check_failed(format!(
                    "Failed to ensure HPA is correctly created for ScaledObject: {e}"
                ));
                Err(Requeue::AwaitChange)
            }
        }
    }

    /// Step 8, what the status records once the HPA named `name`, from `specs`, is in place.
    pub fn hpa_applied(&mut self, so: &ScaledObject, name: &str, specs: &IndexedSpecs) {
        self.status.hpa_name = Some(name.to_string());
        let external = external_metric_names(specs);
        if let Some(health) = self.status.health.as_mut() {
            health.retain(|k, _| external.contains(k));
        }
        self.status.external_metric_names = Some(external);
        let resource = resource_metric_names(specs);
        self.status.resource_metric_names = (!resource.is_empty()).then_some(resource);
        self.status.composite_scaler_name = so
            .spec
            .uses_scaling_modifiers()
            .then(|| COMPOSITE_METRIC_NAME.to_string());
    }

    /// Step 9: the scale loop was (re)started.
    pub fn scalers_started(&mut self) {
        self.events.push(Event::normal(
            EventReason::ScalersStarted,
            "Started scalers watch",
        ));
    }

    /// Step 10: Ready=True (with an event when it was not), and Fallback=False when the object
    /// has no usable fallback.
    pub fn ready(&mut self, so: &ScaledObject) {
        let was_ready = condition_status(&self.conditions, READY) == Some(ConditionStatus::True);
        self.set(
            READY,
            CondUpdate::new(ConditionStatus::True, "ScaledObjectReady", READY_MESSAGE),
        );
        if !was_ready {
            self.events.push(Event::normal(
                EventReason::ScaledObjectReady,
                "ScaledObject is ready for scaling",
            ));
        }
        if !has_valid_fallback(so) {
            self.set(
                FALLBACK,
                CondUpdate::new(ConditionStatus::False, "NoFallbackFound", NO_FALLBACK_MESSAGE),
            );
        }
    }

    /// The status to write (`None` when it did not change) and the events to publish after it.
    pub fn finish(self) -> (Option<ScaledObjectStatus>, Vec<Event>) {
        let mut status = self.status;
        status.conditions = Some(self.conditions);
        let changed = status != self.before;
        (changed.then_some(status), self.events)
    }
}
