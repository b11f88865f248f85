//! `reconcile()` and `error_policy()` for ScaledObjects: KEDA's step order (spec §3), each step
//! a call into the pure modules (`status`, `validate`, `hpa`, `activation`) or one API request.

pub use crate::report::error_chain;
use std::{sync::Arc, time::Duration};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    activation::pause_state,
    context::{Context, Error, FIELD_MANAGER, Result},
    fallback::has_valid_fallback,
    hpa::{
        COMPOSITE_METRIC_NAME, DesiredError, desired_hpa, external_metric_names, hpa_name, needs_update,
        resource_metric_names,
    },
    loop_, scale,
    status::{
        ACTIVE, CHECK_FAILED_ACTIVE_MESSAGE, CondUpdate, FALLBACK, NO_FALLBACK_MESSAGE, PAUSED,
        PAUSED_MESSAGE, READY, READY_MESSAGE, UNPAUSED_MESSAGE, authentications_types, condition_status,
        initial_conditions, needs_initial_conditions, scale_target_gvkr, scale_target_kind, triggers_types,
    },
    validate::{deprecations, validate_scaled_object},
};
use crate::{
    crd::{
        ScaledObject, ScaledObjectStatus,
        scaled_object::{Condition, GroupVersionKindResource, SCALED_OBJECT_NAME_LABEL},
    },
    scalers::registry::object_key,
};

/// KEDA's finalizer, so objects created under KEDA keep working when ebb takes over.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// Event reason after a failed check (KEDA's `ScaledObjectCheckFailed`).
pub const EVENT_CHECK_FAILED: &str = "ScaledObjectCheckFailed";
/// Event reason when the object becomes Ready.
pub const EVENT_READY: &str = "ScaledObjectReady";
/// Event reason when the scale loop starts.
pub const EVENT_SCALERS_STARTED: &str = "KEDAScalersStarted";
/// Event reason when a pause annotation takes effect.
pub const EVENT_PAUSED: &str = "ScaledObjectPaused";
/// Event reason when the pause annotations are removed.
pub const EVENT_UNPAUSED: &str = "ScaledObjectUnpaused";
/// Event reason for a setting KEDA 2.17 accepts but has deprecated (ebb's own reason).
pub const EVENT_DEPRECATED: &str = "ScaledObjectDeprecatedSetting";
/// Event reason after the object was deleted.
pub const EVENT_DELETED: &str = "ScaledObjectDeleted";

/// How long to wait before retrying a failed reconcile or a target that is not there yet.
const RETRY: Duration = Duration::from_secs(30);

/// Reconciles one ScaledObject (kube `Controller` callback).
pub async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action> {
    let ns = so.namespace().ok_or(Error::Unnamed)?;
    let objects: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&objects, FINALIZER, so, |event| async {
        match event {
            FinalizerEvent::Apply(so) => apply(&so, &ctx).await,
            FinalizerEvent::Cleanup(so) => cleanup(&so, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Retry after a failed reconcile; the failure is logged with its stable label.
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(
        scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()),
        error = %error_chain(error),
        label = error.metric_label(),
        "reconcile failed"
    );
    if let Some(m) = &ctx.metrics {
        m.record_scaled_object_error(&so.namespace().unwrap_or_default(), &so.name_any());
    }
    Action::requeue(RETRY)
}

/// Deletion: stop the loop, optionally restore the original replica count; the HPA goes by GC.
async fn cleanup(so: &ScaledObject, ctx: &Context) -> Result<Action> {
    let key = object_key(so);
    ctx.stop_scalers(so).await;
    let status = so.status.clone().unwrap_or_default();
    let restore = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.restore_to_original_replica_count)
        .unwrap_or(false);
    if restore
        && let (Some(original), Some(gvkr)) =
            (status.original_replica_count, status.scale_target_gvkr.as_ref())
        && !so.spec.scale_target_ref.name.is_empty()
    {
        match scale::set(
            &ctx.client,
            &key.namespace,
            gvkr,
            &so.spec.scale_target_ref.name,
            original,
        )
        .await
        {
            Ok(_) => {}
            // A target that is already gone has nothing to restore.
            Err(Error::Kube {
                source: kube::Error::Api(ae),
                ..
            }) if ae.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    ctx.registry.remove(&key);
    if let Some(m) = &ctx.metrics {
        m.remove_scaled_object(&key.namespace, &key.name);
    }
    info!(scaledobject = %key, "scaledobject deleted");
    Ok(Action::await_change())
}

/// Events to publish once the status is written.
type Events = Vec<(EventType, &'static str, String)>;

/// Everything a reconcile changes in the status, plus its events.
struct Work {
    status: ScaledObjectStatus,
    conditions: Vec<Condition>,
    events: Events,
}

impl Work {
    fn set(&mut self, type_: &str, update: CondUpdate) -> bool {
        update.apply(&mut self.conditions, type_)
    }

    /// Ready=False/ScaledObjectCheckFailed with `message`, Active=Unknown, and a Warning event.
    fn check_failed(&mut self, message: String) {
        self.set(
            READY,
            CondUpdate::new("False", EVENT_CHECK_FAILED, message.clone()),
        );
        self.set(
            ACTIVE,
            CondUpdate::new("Unknown", "UnknownState", CHECK_FAILED_ACTIVE_MESSAGE),
        );
        self.events
            .push((EventType::Warning, EVENT_CHECK_FAILED, message));
    }
}

/// The Apply branch: everything after the finalizer is in place.
async fn apply(so: &ScaledObject, ctx: &Arc<Context>) -> Result<Action> {
    let ns = so.namespace().ok_or(Error::Unnamed)?;
    let key = object_key(so);
    let before = so.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let mut conditions = status.conditions.take().unwrap_or_default();
    if needs_initial_conditions(&conditions) {
        conditions = initial_conditions();
    }
    let mut w = Work {
        status,
        conditions,
        events: Vec::new(),
    };
    let action = steps(so, ctx, &ns, &mut w).await;
    finish(so, ctx, &before, w).await?;
    if let Some(m) = &ctx.metrics {
        let paused = pause_state(so.metadata.annotations.as_ref()).any();
        m.set_paused(&key.namespace, &key.name, paused);
    }
    action
}

/// Steps 3–10 of KEDA's reconcile; a failed check is recorded in `w` and ends the run early.
async fn steps(so: &ScaledObject, ctx: &Arc<Context>, ns: &str, w: &mut Work) -> Result<Action> {
    let key = object_key(so);
    let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let pause = pause_state(so.metadata.annotations.as_ref());
    let target = so.spec.scale_target_ref.name.clone();

    if pause.is_fully_paused() {
        ctx.stop_scalers(so).await;
        let hpa = w.status.hpa_name.clone().unwrap_or_else(|| hpa_name(so));
        delete_hpa(&hpa_api, &hpa).await?;
        let count = match pause.paused_replica_count() {
            Ok(c) => c,
            Err(e) => {
                w.check_failed(e.to_string());
                return Ok(Action::await_change());
            }
        };
        if let Some(n) = count
            && !target.is_empty()
        {
            let gvkr = w
                .status
                .scale_target_gvkr
                .clone()
                .unwrap_or_else(|| scale_target_gvkr(so));
            scale::set(&ctx.client, ns, &gvkr, &target, n).await?;
        }
        w.status.paused_replica_count = count;
        if w.set(PAUSED, CondUpdate::new("True", EVENT_PAUSED, PAUSED_MESSAGE)) {
            w.events
                .push((EventType::Normal, EVENT_PAUSED, PAUSED_MESSAGE.to_string()));
        }
        return Ok(Action::await_change());
    }
    if pause.any() {
        if w.set(PAUSED, CondUpdate::new("True", EVENT_PAUSED, PAUSED_MESSAGE)) {
            w.events
                .push((EventType::Normal, EVENT_PAUSED, PAUSED_MESSAGE.to_string()));
        }
    } else if condition_status(&w.conditions, PAUSED) == Some("True") {
        w.set(PAUSED, CondUpdate::new("False", EVENT_UNPAUSED, UNPAUSED_MESSAGE));
        w.events
            .push((EventType::Normal, EVENT_UNPAUSED, UNPAUSED_MESSAGE.to_string()));
    }
    w.status.paused_replica_count = None;

    if target.is_empty() {
        w.check_failed("ScaledObject.spec.scaleTargetRef.name is missing".to_string());
        return Ok(Action::await_change());
    }
    let labeled;
    let so = match ensure_name_label(so, ctx, ns).await? {
        Some(updated) => {
            labeled = updated;
            &labeled
        }
        None => so,
    };

    let gvkr = match resolve_gvkr(ctx, so, w.status.scale_target_gvkr.as_ref()).await {
        Ok(g) => g,
        Err(e) => {
            w.check_failed(format!("Failed to parse Group, Version, Kind, Resource: {e}"));
            return Ok(Action::requeue(RETRY));
        }
    };
    match scale::get(&ctx.client, ns, &gvkr, &target).await {
        Ok(s) => {
            if w.status.original_replica_count.is_none() {
                w.status.original_replica_count = Some(scale::replicas(&s));
            }
            w.status.scale_target_kind = Some(scale_target_kind(&gvkr));
            w.status.scale_target_gvkr = Some(gvkr.clone());
        }
        Err(e) => {
            let why = scale::explain_failure(&ctx.client, ns, &gvkr, &target).await;
            w.check_failed(format!("{why}: {}", error_chain(&e)));
            return Ok(Action::requeue(RETRY));
        }
    }

    let problems = validate_scaled_object(so);
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        w.check_failed(message);
        return Ok(Action::await_change());
    }
    for d in deprecations(so) {
        warn!(scaledobject = %key, field = %d.field, "{}", d.message);
        w.events.push((
            EventType::Warning,
            EVENT_DEPRECATED,
            format!("{}: {}", d.field, d.message),
        ));
    }
    w.status.triggers_types = Some(triggers_types(so));
    let auths = authentications_types(so);
    w.status.authentications_types = (!auths.is_empty()).then_some(auths);

    ctx.registry.apply(so);
    let Some(entry) = ctx.registry.get(&key) else {
        return Ok(Action::requeue(RETRY));
    };
    let scalers = entry.triggers.iter().map(|t| (t.index, &t.scaler));
    let (desired, specs) = match desired_hpa(so, scalers, &ctx.version) {
        Ok(d) => d,
        Err(DesiredError::Scalers(errors)) => {
            let (index, e) = &errors[0];
            let type_ = so
                .spec
                .triggers
                .get(*index)
                .map(|t| t.type_.as_str())
                .unwrap_or_default();
            w.check_failed(format!(
                "Failed to ensure HPA is correctly created for ScaledObject: error getting scaler for trigger #{index} ({type_}): {e}"
            ));
            return Ok(Action::requeue(RETRY));
        }
        Err(DesiredError::Hpa(e)) => {
            w.check_failed(format!(
                "Failed to ensure HPA is correctly created for ScaledObject: {e}"
            ));
            return Ok(Action::await_change());
        }
    };
    let desired_name = hpa_name(so);
    if let Some(old) = w.status.hpa_name.clone()
        && old != desired_name
    {
        delete_hpa(&hpa_api, &old).await?;
    }
    let live = hpa_api
        .get_opt(&desired_name)
        .await
        .map_err(Error::kube(format!("get HPA {ns}/{desired_name}")))?;
    let created = live.is_none();
    if live.as_ref().is_none_or(|l| needs_update(&desired, l)) {
        hpa_api
            .patch(
                &desired_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(Error::kube(format!("apply HPA {ns}/{desired_name}")))?;
        info!(scaledobject = %key, hpa = %desired_name, created, "HPA applied");
    }
    w.status.hpa_name = Some(desired_name);
    let external = external_metric_names(&specs);
    if let Some(health) = w.status.health.as_mut() {
        health.retain(|k, _| external.contains(k));
    }
    w.status.external_metric_names = Some(external);
    let resource = resource_metric_names(&specs);
    w.status.resource_metric_names = (!resource.is_empty()).then_some(resource);
    w.status.composite_scaler_name = so
        .spec
        .uses_scaling_modifiers()
        .then(|| COMPOSITE_METRIC_NAME.to_string());

    if ctx.spawn_loops && loop_::needs_restart(ctx, &key, so.metadata.generation, created) {
        loop_::start(ctx, so);
        w.events.push((
            EventType::Normal,
            EVENT_SCALERS_STARTED,
            "Started scalers watch".to_string(),
        ));
    }

    let was_ready = condition_status(&w.conditions, READY) == Some("True");
    w.set(READY, CondUpdate::new("True", EVENT_READY, READY_MESSAGE));
    if !was_ready {
        w.events.push((
            EventType::Normal,
            EVENT_READY,
            "ScaledObject is ready for scaling".to_string(),
        ));
    }
    if !has_valid_fallback(so) {
        w.set(
            FALLBACK,
            CondUpdate::new("False", "NoFallbackFound", NO_FALLBACK_MESSAGE),
        );
    }
    Ok(Action::await_change())
}

/// KEDA labels every ScaledObject with `scaledobject.keda.sh/name` (the HPA inherits it);
/// returns the object with the label when a patch was needed.
async fn ensure_name_label(so: &ScaledObject, ctx: &Context, ns: &str) -> Result<Option<ScaledObject>> {
    let name = so.name_any();
    if so.labels().get(SCALED_OBJECT_NAME_LABEL) == Some(&name) {
        return Ok(None);
    }
    let objects: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"metadata": {"labels": {SCALED_OBJECT_NAME_LABEL: name}}});
    objects
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("label ScaledObject {ns}/{name}")))?;
    let mut updated = so.clone();
    updated
        .labels_mut()
        .insert(SCALED_OBJECT_NAME_LABEL.to_string(), name);
    Ok(Some(updated))
}

/// Deletes an HPA; a missing one is fine.
async fn delete_hpa(hpas: &Api<HorizontalPodAutoscaler>, name: &str) -> Result<()> {
    match hpas.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(ae)) if ae.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube {
            action: format!("delete HPA {name}"),
            source: e,
        }),
    }
}

/// Writes the status when it changed, then publishes the events.
async fn finish(so: &ScaledObject, ctx: &Context, before: &ScaledObjectStatus, w: Work) -> Result<()> {
    let mut status = w.status;
    status.conditions = Some(w.conditions);
    if status != *before {
        patch_status(ctx, so, &status, Writer::Reconcile).await?;
    }
    publish(ctx, so, w.events).await;
    Ok(())
}

/// The target's group, version, kind and resource, from `status.scaleTargetGVKR` when it was
/// resolved before, else through [`scale::resolve_gvkr`].
async fn resolve_gvkr(
    ctx: &Context,
    so: &ScaledObject,
    known: Option<&GroupVersionKindResource>,
) -> Result<GroupVersionKindResource, String> {
    let wanted = scale_target_gvkr(so);
    if let Some(k) = known
        && (k.group.as_str(), k.version.as_str(), k.kind.as_str())
            == (
                wanted.group.as_str(),
                wanted.version.as_str(),
                wanted.kind.as_str(),
            )
        && !k.resource.is_empty()
    {
        return Ok(k.clone());
    }
    scale::resolve_gvkr(&ctx.client, &ctx.plurals, wanted).await
}

/// Server-side applies the whole status under ebb's field manager.
///
/// Reconcile and scale loop run concurrently on different snapshots, so each applies only the
/// fields it computes, under its own field manager: a stale snapshot then cannot remove or roll
/// back the other's fields. The loop owns `lastActiveTime`, `triggersActivity` and `health`;
/// conditions are shared and every writer sends the whole list.
pub async fn patch_status(
    ctx: &Context,
    so: &ScaledObject,
    status: &ScaledObjectStatus,
    writer: Writer,
) -> Result<()> {
    let ns = so.namespace().ok_or(Error::Unnamed)?;
    let name = so.meta().name.clone().ok_or(Error::Unnamed)?;
    let objects: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    let (manager, status) = match writer {
        Writer::Reconcile => {
            let mut s = status.clone();
            s.last_active_time = None;
            s.triggers_activity = None;
            (FIELD_MANAGER, serde_json::to_value(s))
        }
        Writer::ScaleLoop => (
            LOOP_FIELD_MANAGER,
            serde_json::to_value(ScaledObjectStatus {
                conditions: status.conditions.clone(),
                last_active_time: status.last_active_time.clone(),
                triggers_activity: status.triggers_activity.clone(),
                health: status.health.clone(),
                ..ScaledObjectStatus::default()
            }),
        ),
    };
    let status = status.map_err(|e| Error::Serialize("status", e))?;
    let body = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "status": status,
    });
    objects
        .patch_status(&name, &PatchParams::apply(manager).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube(format!("patch status of ScaledObject {ns}/{name}")))?;
    Ok(())
}

/// Which component writes the status (see [`patch_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The reconciler: everything but the loop's fields.
    Reconcile,
    /// The scale loop: conditions, lastActiveTime, triggersActivity, health.
    ScaleLoop,
}

/// Field manager of the scale loop's status writes.
pub const LOOP_FIELD_MANAGER: &str = "ebb-scale-loop";

/// Publishes events on the ScaledObject; a failed event is logged, never fatal.
pub async fn publish(ctx: &Context, so: &ScaledObject, events: Events) {
    let reference = so.object_ref(&());
    for (type_, reason, message) in events {
        let ev = KubeEvent {
            type_,
            reason: reason.to_string(),
            note: Some(message),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %e, reason, "event not recorded");
        }
    }
}
