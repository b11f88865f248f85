//! The `/scale` subresource of any scale target, through `DynamicObject` and an `ApiResource`
//! built from the resolved GVKR, so Deployments, StatefulSets and custom kinds share one path.

use crate::locks::LockExt;
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};

use super::CallError;
use crate::{
    crd::scaled_object::GroupVersionKindResource,
    scaling::target::{Resolution, is_well_known},
};

/// Result of a `/scale` call.
type Result<T, E = CallError> = std::result::Result<T, E>;

/// Resource names of scale-target kinds found by discovery: (group, version, kind) → plural.
pub type Plurals = std::sync::Mutex<std::collections::HashMap<(String, String, String), String>>;

/// Completes a [`Resolution`]: a known GVKR as it is, else the resource of its kind through
/// discovery, as KEDA's REST mapper does, once per kind per process.
pub async fn resolve(
    client: &Client,
    plurals: &Plurals,
    resolution: Resolution,
) -> std::result::Result<GroupVersionKindResource, String> {
    match resolution {
        Resolution::Known(gvkr) => Ok(gvkr),
        Resolution::Discover(gvkr) => resolve_gvkr(client, plurals, gvkr).await,
    }
}

/// Fills in the resource of `gvkr` (as [`crate::scaling::target::scale_target_gvkr`] built it):
/// Deployments and StatefulSets are known; any other kind is looked up through discovery, once
/// per kind per process.
pub async fn resolve_gvkr(
    client: &Client,
    plurals: &Plurals,
    mut gvkr: GroupVersionKindResource,
) -> std::result::Result<GroupVersionKindResource, String> {
    if is_well_known(&gvkr) {
        return Ok(gvkr);
    }
    let id = (gvkr.group.clone(), gvkr.version.clone(), gvkr.kind.clone());
    if let Some(resource) = plurals.lock_or_recover().get(&id) {
        gvkr.resource = resource.clone();
        return Ok(gvkr);
    }
    let gvk = GroupVersionKind::gvk(&gvkr.group, &gvkr.version, &gvkr.kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| match e {
            kube::Error::Discovery(_) => format!(
                "no matches for kind \"{}\" in version \"{}\"",
                gvkr.kind,
                gvk.api_version()
            ),
            other => crate::report::error_chain(&other),
        })?;
    gvkr.resource = resource.plural;
    plurals.lock_or_recover().insert(id, gvkr.resource.clone());
    Ok(gvkr)
}

/// The namespaced API of the target's kind.
pub fn target_api(client: &Client, namespace: &str, gvkr: &GroupVersionKindResource) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(&gvkr.group, &gvkr.version, &gvkr.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &gvkr.resource);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// `spec.replicas` of a `/scale` answer (absent means 0, as the apiserver omits zero).
pub fn replicas(scale: &Scale) -> i32 {
    scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// GET `/scale` of the target.
pub async fn get(
    client: &Client,
    namespace: &str,
    gvkr: &GroupVersionKindResource,
    name: &str,
) -> Result<Scale> {
    target_api(client, namespace, gvkr)
        .get_scale(name)
        .await
        .map_err(CallError::new(format!("get {}/{name}/scale", gvkr.resource)))
}

/// PUT `/scale` with `replicas`, starting from a fetched `scale` so its resourceVersion guards
/// against a concurrent writer (a conflict fails this attempt; the next poll retries).
pub async fn put(
    client: &Client,
    namespace: &str,
    gvkr: &GroupVersionKindResource,
    mut scale: Scale,
    replicas: i32,
) -> Result<Scale> {
    let name = scale.metadata.name.clone().unwrap_or_default();
    scale.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
    // The status is ignored by PUT /scale; dropping it keeps the request minimal.
    scale.status = None;
    target_api(client, namespace, gvkr)
        .replace_scale(&name, &PostParams::default(), &scale)
        .await
        .map_err(CallError::new(format!("put {}/{name}/scale", gvkr.resource)))
}

/// GET then PUT `/scale` when the count differs; returns the count before.
pub async fn set(
    client: &Client,
    namespace: &str,
    gvkr: &GroupVersionKindResource,
    name: &str,
    replicas: i32,
) -> Result<i32> {
    let scale = get(client, namespace, gvkr, name).await?;
    let before = self::replicas(&scale);
    if before != replicas {
        put(client, namespace, gvkr, scale, replicas).await?;
    }
    Ok(before)
}

/// Why `/scale` did not answer, in KEDA's words: the object is missing, or it has no `/scale`.
pub async fn explain_failure(
    client: &Client,
    namespace: &str,
    gvkr: &GroupVersionKindResource,
    name: &str,
) -> &'static str {
    match target_api(client, namespace, gvkr).get_opt(name).await {
        Ok(Some(_)) => "Target resource doesn't expose /scale subresource",
        Ok(None) => "Target resource doesn't exist",
        Err(_) => "Target resource doesn't exist",
    }
}
