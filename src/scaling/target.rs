//! Scale-target rules: the group/version/kind/resource of `spec.scaleTargetRef` as KEDA
//! resolves it, and the `status.scaleTargetKind` printer value. Looking a kind up through
//! discovery is I/O and lives in `cluster::scale`; what to look up, and when, is decided here.

use crate::crd::{ScaledObject, scaled_object::GroupVersionKindResource};

/// The scale target's GVKR: `apps/v1` Deployment/StatefulSet are hard-coded as in KEDA; other
/// kinds get a naive lower-case plural (the runtime should prefer the API server's discovery).
pub fn scale_target_gvkr(so: &ScaledObject) -> GroupVersionKindResource {
    let r = &so.spec.scale_target_ref;
    gvkr_of(r.api_version_or_default(), r.kind_or_default())
}

/// The GVKR of a target named by `apiVersion` and `kind` (already defaulted): the HTTP add-on's
/// `scaleTargetRef` resolves the same way.
pub fn gvkr_of(api_version: &str, kind: &str) -> GroupVersionKindResource {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let resource = match (group, kind) {
        ("apps", "Deployment") => "deployments".to_string(),
        ("apps", "StatefulSet") => "statefulsets".to_string(),
        _ => naive_plural(kind),
    };
    GroupVersionKindResource {
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        resource,
    }
}

/// `status.scaleTargetKind`: `<group>/<version>.<Kind>` (`v1.Kind` for the core group).
pub fn scale_target_kind(gvkr: &GroupVersionKindResource) -> String {
    if gvkr.group.is_empty() {
        format!("{}.{}", gvkr.version, gvkr.kind)
    } else {
        format!("{}/{}.{}", gvkr.group, gvkr.version, gvkr.kind)
    }
}

/// Lower-case plural the way apimachinery's `UnsafeGuessKindToResource` guesses it.
pub fn naive_plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower.is_empty() {
        return lower;
    }
    if lower.ends_with('s') {
        return format!("{lower}es");
    }
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    format!("{lower}s")
}

/// Kinds whose resource KEDA hard-codes instead of asking discovery.
pub fn is_well_known(gvkr: &GroupVersionKindResource) -> bool {
    gvkr.group == "apps" && matches!(gvkr.kind.as_str(), "Deployment" | "StatefulSet")
}

/// Where the resource name of a scale target comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Known without asking: recorded in `status.scaleTargetGVKR` for the same kind, or a
    /// well-known kind.
    Known(GroupVersionKindResource),
    /// Ask discovery for the resource of this group/version/kind (the naive plural is a guess).
    Discover(GroupVersionKindResource),
}

/// How reconcile finds the target's resource: `status.scaleTargetGVKR` when it was resolved
/// before for the same group, version and kind; else the well-known kinds; else discovery.
pub fn resolution(so: &ScaledObject, recorded: Option<&GroupVersionKindResource>) -> Resolution {
    let wanted = scale_target_gvkr(so);
    if let Some(k) = recorded
        && (k.group.as_str(), k.version.as_str(), k.kind.as_str())
            == (
                wanted.group.as_str(),
                wanted.version.as_str(),
                wanted.kind.as_str(),
            )
        && !k.resource.is_empty()
    {
        return Resolution::Known(k.clone());
    }
    if is_well_known(&wanted) {
        Resolution::Known(wanted)
    } else {
        Resolution::Discover(wanted)
    }
}
