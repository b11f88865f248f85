//! `reconcile()` and `error_policy()` for ScaledObjects: the API calls of KEDA's reconcile, in
//! KEDA's order; every decision between them is a step of [`scaling::reconcile::Plan`].

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::{
    context::{Context, FIELD_MANAGER},
    error::{Error, Result},
    scale_loop,
    status::{Writer, patch_status, publish},
};
pub use crate::report::error_chain;
use crate::{
    cluster::{CallError, scale},
    crd::{ScaledObject, scaled_object::SCALED_OBJECT_NAME_LABEL},
    scalers::registry::object_key,
    scaling::{
        activation::pause_state,
        hpa::needs_update,
        reconcile::{PauseStep, Plan, Requeue},
        target::resolution,
        validate::{deprecations, validate_scaled_object},
    },
};

pub use crate::scaling::reconcile::FINALIZER;

/// How long to wait before retrying a failed reconcile or a target that is not there yet.
const RETRY: Duration = Duration::from_secs(30);

/// Reconciles one ScaledObject (kube `Controller` callback).
pub async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action> {
    let ns = so.namespace().ok_or(Error::Unnamed)?;
    // One span per reconcile, so every log line of it (and of the API calls it makes) names
    // the object and the generation it acted on.
    let span = info_span!(
        "reconcile",
        namespace = %ns,
        name = %so.name_any(),
        generation = so.metadata.generation.unwrap_or_default(),
    );
    let objects: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&objects, FINALIZER, so, |event| async {
        match event {
            FinalizerEvent::Apply(so) => apply(&so, &ctx).await,
            FinalizerEvent::Cleanup(so) => cleanup(&so, &ctx).await,
        }
    })
    .instrument(span)
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
    scale_loop::stop(ctx, so).await;
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
            Err(CallError {
                source: kube::Error::Api(ae),
                ..
            }) if ae.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.registry.remove(&key);
    if let Some(m) = &ctx.metrics {
        m.remove_scaled_object(&key.namespace, &key.name);
    }
    info!(scaledobject = %key, "scaledobject deleted");
    Ok(Action::await_change())
}

/// The Apply branch: everything after the finalizer is in place. The plan so far is written
/// even when a step's API call failed, and the failure returned after it.
async fn apply(so: &ScaledObject, ctx: &Arc<Context>) -> Result<Action> {
    let key = object_key(so);
    let mut plan = Plan::new(so);
    let outcome = steps(so, ctx, &mut plan).await;
    let (status, events) = plan.finish();
    if let Some(status) = status {
        patch_status(ctx, so, &status, Writer::Reconcile).await?;
    }
    publish(ctx, so, events).await;
    if let Some(m) = &ctx.metrics {
        let paused = pause_state(so.metadata.annotations.as_ref()).any();
        m.set_paused(&key.namespace, &key.name, paused);
    }
    Ok(match outcome? {
        Requeue::AwaitChange => Action::await_change(),
        Requeue::Retry => Action::requeue(RETRY),
    })
}

/// Steps 3–10 of KEDA's reconcile: each API call, then the plan's step for its answer.
async fn steps(so: &ScaledObject, ctx: &Arc<Context>, plan: &mut Plan) -> Result<Requeue> {
    let ns = so.namespace().ok_or(Error::Unnamed)?;
    let key = object_key(so);
    let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);

    if let PauseStep::FullyPaused {
        hpa,
        replicas,
        scale_to,
    } = plan.pause(so)
    {
        scale_loop::stop(ctx, so).await;
        delete_hpa(&hpa_api, &hpa).await?;
        match replicas {
            Err(e) => plan.check_failed(e.to_string()),
            Ok(count) => {
                if let Some(to) = scale_to {
                    scale::set(&ctx.client, &ns, &to.gvkr, &to.name, to.replicas).await?;
                }
                plan.fully_paused(count);
            }
        }
        return Ok(Requeue::AwaitChange);
    }
    if let Err(requeue) = plan.target_named(so) {
        return Ok(requeue);
    }
    let labeled;
    let so = match ensure_name_label(so, ctx, &ns).await? {
        Some(updated) => {
            labeled = updated;
            &labeled
        }
        None => so,
    };

    let target = &so.spec.scale_target_ref.name;
    let found = resolution(so, plan.status.scale_target_gvkr.as_ref());
    let gvkr = match scale::resolve(&ctx.client, &ctx.plurals, found).await {
        Ok(g) => g,
        Err(e) => return Ok(plan.target_unresolved(&e)),
    };
    let read = match scale::get(&ctx.client, &ns, &gvkr, target).await {
        Ok(s) => Ok(scale::replicas(&s)),
        Err(e) => Err((
            scale::explain_failure(&ctx.client, &ns, &gvkr, target).await,
            error_chain(&e),
        )),
    };
    if let Err(requeue) = plan.scale_target(&gvkr, read) {
        return Ok(requeue);
    }

    let deprecated = deprecations(so);
    for d in &deprecated {
        warn!(scaledobject = %key, field = %d.field, "{}", d.message);
    }
    if let Err(requeue) = plan.validation(so, &validate_scaled_object(so), &deprecated) {
        return Ok(requeue);
    }

    ctx.registry.apply(so);
    let Some(entry) = ctx.registry.get(&key) else {
        return Ok(Requeue::Retry);
    };
    let scalers = entry.triggers.iter().map(|t| (t.index, &t.scaler));
    let desired = match plan.hpa(so, scalers, &ctx.version) {
        Ok(d) => d,
        Err(requeue) => return Ok(requeue),
    };
    if let Some(old) = &desired.replaces {
        delete_hpa(&hpa_api, old).await?;
    }
    let live = hpa_api
        .get_opt(&desired.name)
        .await
        .map_err(Error::kube(format!("get HPA {ns}/{}", desired.name)))?;
    let created = live.is_none();
    if live.as_ref().is_none_or(|l| needs_update(&desired.hpa, l)) {
        hpa_api
            .patch(
                &desired.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired.hpa),
            )
            .await
            .map_err(Error::kube(format!("apply HPA {ns}/{}", desired.name)))?;
        info!(scaledobject = %key, hpa = %desired.name, created, "HPA applied");
    }
    plan.hpa_applied(so, &desired.name, &desired.specs);

    if ctx.spawn_loops && scale_loop::needs_restart(ctx, &key, so.metadata.generation, created) {
        scale_loop::start(ctx, so);
        plan.scalers_started();
    }
    plan.ready(so);
    Ok(Requeue::AwaitChange)
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
