//! The HTTPScaledObject controller: what the HTTP add-on's operator does
//! (`operator/controllers/http/{httpscaledobject_controller,app,scaled_object}.go`), with the
//! decisions in `scaling::http_api`. Per object: the `orphan-scaledobject` annotation drops the
//! owner reference from the ScaledObject it owns; `skip-scaledobject-creation` deletes the one it
//! owns and creates none; otherwise the generated ScaledObject is created, or merge-patched when
//! it exists. Then the status (`targetWorkload`, `targetService`, `Ready` with the add-on's
//! reasons) is written, so `kubectl get httpso` and `kubectl get so` read as after the add-on.
//!
//! The add-on's finalizer (`httpscaledobject.http.keda.sh`) is removed when an object is deleted,
//! so objects created under the add-on do not hang after a switch; ebb adds none, since the
//! owner reference already lets the garbage collector delete the ScaledObject.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::{info, info_span, warn};

use crate::{
    crd::{ScaledObject, http_scaled_object::HTTPScaledObject},
    scaling::http_api::{
        generated_scaled_object, http_scaled_object_metrics, http_status, orphans_scaled_object, owned_by,
        scaled_object_merge_patch, skips_scaled_object,
    },
};

/// The add-on operator's finalizer, removed on deletion.
pub const ADD_ON_FINALIZER: &str = "httpscaledobject.http.keda.sh";

/// What one reconcile did to the ScaledObject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Created.
    Created,
    /// Existed; merge-patched.
    Patched,
    /// `skip-scaledobject-creation`: the owned one deleted (or none was there).
    Skipped,
    /// `orphan-scaledobject`: the owner reference removed (or none was there).
    Orphaned,
    /// The object is being deleted: the add-on's finalizer removed.
    Finalized,
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Reconciles one HTTPScaledObject against the API: the ScaledObject, then the status.
/// `now` is the RFC 3339 time a changed condition records.
pub async fn reconcile_http_scaled_object(
    client: &Client,
    httpso: &HTTPScaledObject,
    scaler_address: &str,
    now: &str,
) -> Result<Applied, kube::Error> {
    let ns = httpso.namespace().unwrap_or_else(|| "default".into());
    let name = httpso.name_any();
    let httpsos: Api<HTTPScaledObject> = Api::namespaced(client.clone(), &ns);
    if httpso.metadata.deletion_timestamp.is_some() {
        if httpso.finalizers().iter().any(|f| f == ADD_ON_FINALIZER) {
            let kept: Vec<&String> = httpso
                .finalizers()
                .iter()
                .filter(|f| *f != ADD_ON_FINALIZER)
                .collect();
            let patch =
                json!({"metadata": {"finalizers": kept, "resourceVersion": httpso.resource_version()}});
            httpsos
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        return Ok(Applied::Finalized);
    }
    let outcome = apply_scaled_object(client, httpso, &ns, &name, scaler_address).await;
    let status = http_status(
        httpso,
        outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        now,
    );
    let patch = json!({"status": status});
    let written = httpsos
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let applied = outcome?;
    written?;
    Ok(applied)
}

/// Why the ScaledObject could not be written.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The object is invalid (both metrics set, as the add-on refuses at reconcile).
    #[error("{0}")]
    Invalid(String),
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

async fn apply_scaled_object(
    client: &Client,
    httpso: &HTTPScaledObject,
    ns: &str,
    name: &str,
    scaler_address: &str,
) -> Result<Applied, kube::Error> {
    apply_inner(client, httpso, ns, name, scaler_address)
        .await
        .map_err(|e| match e {
            ApplyError::Api(e) => e,
            ApplyError::Invalid(m) => {
                kube::Error::Api(kube::core::Status::failure(&m, "Invalid").with_code(422).boxed())
            }
        })
}

async fn apply_inner(
    client: &Client,
    httpso: &HTTPScaledObject,
    ns: &str,
    name: &str,
    scaler_address: &str,
) -> Result<Applied, ApplyError> {
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    if orphans_scaled_object(httpso) {
        match sos.get_opt(name).await? {
            Some(so) if owned_by(so.owner_references(), name) => {
                let kept: Vec<_> = so
                    .owner_references()
                    .iter()
                    .filter(|o| !(o.kind.eq_ignore_ascii_case("HTTPScaledObject") && o.name == name))
                    .collect();
                let patch =
                    json!({"metadata": {"ownerReferences": kept, "resourceVersion": so.resource_version()}});
                sos.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                info!(scaledobject = %format!("{ns}/{name}"), "orphaned: owner reference removed");
            }
            _ => {}
        }
        return Ok(Applied::Orphaned);
    }
    if skips_scaled_object(httpso) {
        if let Some(so) = sos.get_opt(name).await?
            && owned_by(so.owner_references(), name)
        {
            match sos.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(scaledobject = %format!("{ns}/{name}"), "skip-scaledobject-creation: owned ScaledObject deleted")
                }
                Err(e) if is_code(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Applied::Skipped);
    }
    if let Err(e) = http_scaled_object_metrics(httpso) {
        return Err(ApplyError::Invalid(e.message));
    }
    let mut generated = generated_scaled_object(httpso, scaler_address);
    generated.metadata.namespace = Some(ns.to_string());
    match sos.create(&PostParams::default(), &generated).await {
        Ok(_) => Ok(Applied::Created),
        Err(e) if is_code(&e, 409) => {
            let patch = scaled_object_merge_patch(&generated);
            sos.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(Applied::Patched)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the HTTPScaledObject controller (all namespaces, or `namespace`) until dropped:
/// reconciles on every change of an HTTPScaledObject or of a ScaledObject it owns.
pub async fn run(client: Client, namespace: Option<String>, scaler_address: String) {
    let (httpsos, sos): (Api<HTTPScaledObject>, Api<ScaledObject>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let ctx = Arc::new((client, scaler_address));
    let controller = Controller::new(httpsos, watcher::Config::default())
        .owns(sos, watcher::Config::default())
        .run(
            |obj: Arc<HTTPScaledObject>, ctx: Arc<(Client, String)>| async move {
                let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
                let span = info_span!("reconcile", httpscaledobject = %key);
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                match tracing::Instrument::instrument(
                    reconcile_http_scaled_object(&ctx.0, &obj, &ctx.1, &now),
                    span.clone(),
                )
                .await
                {
                    Ok(applied) => {
                        info!(parent: &span, ?applied, "HTTPScaledObject reconciled");
                        Ok(Action::await_change())
                    }
                    Err(e) => Err(e),
                }
            },
            |obj: Arc<HTTPScaledObject>, e: &kube::Error, _| {
                warn!(httpscaledobject = %obj.name_any(), error = %e, "HTTPScaledObject reconcile failed; retrying");
                Action::requeue(Duration::from_secs(10))
            },
            ctx,
        );
    controller.for_each(|_| async {}).await;
}
