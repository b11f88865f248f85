//! Pure ScaledObject status helpers: conditions with KEDA's exact strings, printer-column values
//! and scale-target GVKR resolution.

use crate::crd::{
    ScaledObject,
    scaled_object::{Condition, GroupVersionKindResource},
};

/// Condition type `Ready`.
pub const READY: &str = "Ready";
/// Condition type `Active`.
pub const ACTIVE: &str = "Active";
/// Condition type `Fallback`.
pub const FALLBACK: &str = "Fallback";
/// Condition type `Paused`.
pub const PAUSED: &str = "Paused";
/// Condition type `HPAActive`, added lazily.
pub const HPA_ACTIVE: &str = "HPAActive";

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
    pub status: &'static str,
    /// Reason.
    pub reason: &'static str,
    /// Message (owned because some embed errors).
    pub message: String,
}

impl CondUpdate {
    /// Builds an update.
    pub fn new(status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        CondUpdate {
            status,
            reason,
            message: message.into(),
        }
    }

    /// Writes this update into `conditions` as condition `type_`; true when something changed.
    pub fn apply(&self, conditions: &mut Vec<Condition>, type_: &str) -> bool {
        set_condition(conditions, type_, self.status, self.reason, &self.message)
    }
}

/// The four conditions KEDA writes on first reconcile: Ready/Active/Fallback Unknown, Paused False.
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

/// True when any of the four initial conditions is missing (KEDA then re-initialises them all).
pub fn needs_initial_conditions(conditions: &[Condition]) -> bool {
    [READY, ACTIVE, FALLBACK, PAUSED]
        .iter()
        .any(|t| !conditions.iter().any(|c| c.type_ == *t))
}

/// Sets (or appends) condition `type_`; returns true when anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> bool {
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

/// Status of condition `type_`, if present.
pub fn condition_status<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// Comma-joined distinct values in first-seen order.
fn distinct_join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for i in items {
        if !seen.contains(&i) {
            seen.push(i);
        }
    }
    seen.join(",")
}

/// `status.triggersTypes`: distinct trigger types in order, comma-joined.
pub fn triggers_types(so: &ScaledObject) -> String {
    distinct_join(so.spec.triggers.iter().map(|t| t.type_.as_str()))
}

/// `status.authenticationsTypes`: distinct authenticationRef **names** in order, comma-joined.
pub fn authentications_types(so: &ScaledObject) -> String {
    distinct_join(
        so.spec
            .triggers
            .iter()
            .filter_map(|t| t.authentication_ref.as_ref())
            .map(|a| a.name.as_str()),
    )
}

/// The scale target's GVKR: `apps/v1` Deployment/StatefulSet are hard-coded as in KEDA; other
/// kinds get a naive lower-case plural (the runtime should prefer the API server's discovery).
pub fn scale_target_gvkr(so: &ScaledObject) -> GroupVersionKindResource {
    let r = &so.spec.scale_target_ref;
    let api_version = r.api_version_or_default();
    let kind = r.kind_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn so(yaml: &str) -> ScaledObject {
        serde_yaml::from_str(yaml).expect("parses")
    }

    #[test]
    fn conditions_are_set_once() {
        let mut c = initial_conditions();
        assert!(!needs_initial_conditions(&c));
        assert_eq!(condition_status(&c, PAUSED), Some("False"));
        assert!(set_condition(
            &mut c,
            READY,
            "True",
            "ScaledObjectReady",
            READY_MESSAGE
        ));
        assert!(!set_condition(
            &mut c,
            READY,
            "True",
            "ScaledObjectReady",
            READY_MESSAGE
        ));
        assert!(set_condition(
            &mut c,
            HPA_ACTIVE,
            "True",
            "HPAActive",
            "HPA is actively scaling"
        ));
        assert_eq!(c.len(), 5);
        assert!(needs_initial_conditions(&c[1..]));
    }

    #[test]
    fn printer_columns_and_gvkr() {
        let s = so(r#"
metadata: {name: a}
spec:
  scaleTargetRef: {name: t, kind: StatefulSet}
  triggers:
  - {type: prometheus, metadata: {}, authenticationRef: {name: ta}}
  - {type: cron, metadata: {}}
  - {type: prometheus, metadata: {}, authenticationRef: {name: ta, kind: ClusterTriggerAuthentication}}
  - {type: cpu, metadata: {}, authenticationRef: {name: tb}}
"#);
        assert_eq!(triggers_types(&s), "prometheus,cron,cpu");
        assert_eq!(authentications_types(&s), "ta,tb");
        let g = scale_target_gvkr(&s);
        assert_eq!(g.resource, "statefulsets");
        assert_eq!(scale_target_kind(&g), "apps/v1.StatefulSet");
        let s = so(
            "metadata: {name: a}\nspec: {scaleTargetRef: {name: t, apiVersion: argoproj.io/v1alpha1, kind: Rollout}}",
        );
        let g = scale_target_gvkr(&s);
        assert_eq!(
            (g.group.as_str(), g.resource.as_str()),
            ("argoproj.io", "rollouts")
        );
        assert_eq!(naive_plural("Policy"), "policies");
        assert_eq!(naive_plural("Ingress"), "ingresses");
    }
}
