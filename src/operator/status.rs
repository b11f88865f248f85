//! Writing what a plan decided: the ScaledObject status (server-side apply, one field manager
//! per writer) and the events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder},
};
use serde_json::json;
use tracing::warn;

use super::{
    context::{Context, FIELD_MANAGER},
    error::{Error, Result},
};
use crate::{
    crd::{ScaledObject, ScaledObjectStatus},
    scaling::events::{Event, EventType},
};

/// Field manager of the scale loop's status writes.
pub const LOOP_FIELD_MANAGER: &str = "ebb-scale-loop";

/// Which component writes the status (see [`patch_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The reconciler: everything but the loop's fields.
    Reconcile,
    /// The scale loop: conditions, lastActiveTime, triggersActivity, health.
    ScaleLoop,
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

/// Publishes events on `object`; a failed event is logged, never fatal.
pub async fn publish<K>(ctx: &Context, object: &K, events: Vec<Event>)
where
    K: Resource<DynamicType = ()>,
{
    publish_to(&ctx.recorder, &object.object_ref(&()), events).await;
}

/// Publishes events on the object `reference` names (also one too malformed to decode); a failed
/// event is logged, never fatal.
pub async fn publish_to(recorder: &Recorder, reference: &ObjectReference, events: Vec<Event>) {
    for event in events {
        let reason = event.reason.as_str();
        let ev = KubeEvent {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(event.message),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, reference).await {
            warn!(error = %e, reason, "event not recorded");
        }
    }
}
