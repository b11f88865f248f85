//! ScaledObject fixtures rendered into HPAs and compared, field by field, with the HPA KEDA creates.

use std::path::PathBuf;

use ebb::{
    crd::{ScaledObject, scaled_object::MetricTargetType},
    resolver::files::LocalObjects,
    scalers::{MetricSpec, MetricTarget},
    scaling::{
        hpa::{metric_specs, needs_update, render_hpa},
        validate::validate_scaled_object,
    },
    tools::render::build_offline,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keda")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Renders `<name>.so.yaml` (with hand-built specs when given) and compares with `<name>.hpa.yaml`.
fn check(name: &str, specs: Option<Vec<(usize, MetricSpec)>>) {
    let so: ScaledObject = serde_yaml::from_str(&fixture(&format!("{name}.so.yaml"))).expect("SO parses");
    let want: HorizontalPodAutoscaler =
        serde_yaml::from_str(&fixture(&format!("{name}.hpa.yaml"))).expect("HPA parses");
    let specs = specs.unwrap_or_else(|| {
        let objects = LocalObjects::default();
        let scalers: Vec<_> = (0..so.spec.triggers.len())
            .map(|i| build_offline(&so, i, &objects, "ebb").scaler)
            .collect();
        metric_specs(scalers.iter().enumerate())
            .unwrap_or_else(|errors| panic!("{name}: scaler errors {errors:?}"))
    });
    let got = render_hpa(&so, &specs, "main").unwrap_or_else(|e| panic!("{name}: {e}"));

    assert_eq!(got.metadata.name, want.metadata.name, "{name}: name");
    assert_eq!(
        got.metadata.namespace, want.metadata.namespace,
        "{name}: namespace"
    );
    assert_eq!(got.metadata.labels, want.metadata.labels, "{name}: labels");
    assert_eq!(
        got.metadata.annotations, want.metadata.annotations,
        "{name}: annotations"
    );
    assert_eq!(
        got.metadata.owner_references, want.metadata.owner_references,
        "{name}: owner"
    );
    let (g, w) = (
        got.spec.as_ref().expect("spec"),
        want.spec.as_ref().expect("spec"),
    );
    assert_eq!(g.scale_target_ref, w.scale_target_ref, "{name}: scaleTargetRef");
    assert_eq!(g.min_replicas, w.min_replicas, "{name}: minReplicas");
    assert_eq!(g.max_replicas, w.max_replicas, "{name}: maxReplicas");
    assert_eq!(g.behavior, w.behavior, "{name}: behavior");
    let (gm, wm) = (
        g.metrics.as_deref().unwrap_or_default(),
        w.metrics.as_deref().unwrap_or_default(),
    );
    assert_eq!(gm.len(), wm.len(), "{name}: metric count");
    for (i, (a, b)) in gm.iter().zip(wm).enumerate() {
        assert_eq!(a, b, "{name}: metrics[{i}]");
    }
    assert_eq!(got, want, "{name}: whole object");
    // A live HPA equal to the desired one needs no update.
    assert!(
        !needs_update(&got, &want),
        "{name}: needs_update on identical HPA"
    );
    // Every fixture is a valid KEDA object.
    assert_eq!(validate_scaled_object(&so), vec![], "{name}: validation");
}

#[test]
fn cron() {
    check("cron", None);
}

#[test]
fn metrics_api_value_target() {
    check("metrics-api", None);
}

#[test]
fn prometheus_custom_name_annotations_excluded_labels() {
    let spec = MetricSpec::External {
        name: "s0-prometheus".to_string(),
        target: MetricTarget {
            kind: MetricTargetType::AverageValue,
            value: 0.5,
            integer: false,
        },
    };
    check("prometheus", Some(vec![(0, spec)]));
}

#[test]
fn cpu_utilization() {
    check("cpu", None);
}

#[test]
fn memory_container_resource_sorted_before_external() {
    check("memory-container", None);
}

#[test]
fn scaling_modifiers_composite() {
    check("scaling-modifiers", None);
}

#[test]
fn paused_scale_in_and_out_behavior() {
    check("paused-scale-in", None);
}

#[test]
fn min_replica_count_zero() {
    check("min-zero", None);
}

#[test]
fn aws_sqs_queue_with_trigger_authentication() {
    check("aws-sqs-queue", None);
}

#[test]
fn aws_cloudwatch_with_trigger_authentication() {
    check("aws-cloudwatch", None);
}

#[test]
fn kubernetes_workload() {
    check("kubernetes-workload", None);
}
