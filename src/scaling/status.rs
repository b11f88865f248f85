//! ScaledObject printer-column values in `status`: trigger and authentication types.

use crate::crd::ScaledObject;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::target::{naive_plural, scale_target_gvkr, scale_target_kind};

    fn so(yaml: &str) -> ScaledObject {
        serde_yaml::from_str(yaml).expect("parses")
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
