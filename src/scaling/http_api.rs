//! The HTTP add-on's control plane as pure rules: what its API accepts (HTTPScaledObject,
//! InterceptorRoute), the ScaledObject its operator generates from an HTTPScaledObject and the
//! status it writes, the metric names and targets of the `external-push` trigger, and the
//! request-rate window the metric is computed over.
//!
//! Where the add-on's own code is the reference (`pkg/k8s/scaledobject.go`,
//! `operator/controllers/http/*`, `scaler/handlers.go`, `pkg/queue/bucketing.go`), the rule says
//! so; where ebb is stricter (a granularity under 1 s, a window shorter than its granularity,
//! a duration Go cannot parse), docs/http-api.md says why.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::validate::Problem;
use crate::{
    crd::{
        http_scaled_object::{
            HTTPScaledObject, HeaderMatch, HttpCondition, HttpScaledObjectStatus,
            ORPHAN_SCALED_OBJECT_ANNOTATION, PORT_CHOICE_MESSAGE, SKIP_SCALED_OBJECT_ANNOTATION,
        },
        interceptor_route::{COLD_START_MESSAGE, InterceptorRoute, TARGET_PORT_MESSAGE, TargetRef},
        scaled_object::{AdvancedConfig, ScaleTarget, ScaleTrigger, ScaledObject, ScaledObjectSpec},
    },
    scalers::params::parse_go_duration,
};

pub use crate::scalers::http_push::{
    BOTH_METRICS_MESSAGE, DEFAULT_GRANULARITY, DEFAULT_TARGET, DEFAULT_WINDOW, HttpMetrics, MetricsError,
    QueueCounts, RateSpec, RateWindow, http_scaled_object_metric, http_scaled_object_metrics,
    interceptor_route_metric, interceptor_route_metrics, request_delta,
};

/// The trigger type the add-on's generated ScaledObject uses.
pub const EXTERNAL_PUSH: &str = "external-push";
/// Trigger metadata naming the HTTPScaledObject (v0.8+).
pub const HTTP_SCALED_OBJECT_KEY: &str = "httpScaledObject";
/// Trigger metadata naming the InterceptorRoute (v0.14+).
pub const INTERCEPTOR_ROUTE_KEY: &str = "interceptorRoute";
/// Trigger metadata with the add-on scaler's gRPC address.
pub const SCALER_ADDRESS_KEY: &str = "scalerAddress";
/// The `scalerAddress` ebb writes into generated ScaledObjects: the activator's admin Service
/// (manifests/activator.yaml), whose EndpointSlices list the replicas the metric is read from.
pub const DEFAULT_SCALER_ADDRESS: &str = "ebb-activator-admin.ebb:9090";
/// The add-on operator's hard-coded `pollingInterval` (since #829).
pub const GENERATED_POLLING_INTERVAL: i32 = 15;
/// Reason of the Ready condition after a successful reconcile.
pub const REASON_RECONCILED: &str = "Reconciled";
/// Reason of the Ready condition when the ScaledObject could not be written.
pub const REASON_CREATE_ERROR: &str = "CreateError";
/// Message of the Ready condition after a successful reconcile (the add-on's words).
pub const MESSAGE_RECONCILED: &str = "ScaledObject created and configured";

fn problem(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
        reason: "http-add-on",
    }
}

fn header_problems(field: &str, headers: &[HeaderMatch], out: &mut Vec<Problem>) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, h) in headers.iter().enumerate() {
        if h.name.is_empty() {
            out.push(problem(
                format!("{field}[{i}].name"),
                "should be at least 1 chars long",
            ));
        } else if !seen.insert(h.name.as_str()) {
            // A list-map keyed by name: the API server refuses duplicates.
            out.push(problem(
                format!("{field}[{i}]"),
                format!("Duplicate value: {{\"name\":{:?}}}", h.name),
            ));
        }
    }
}

fn duration_problem(field: String, value: Option<&str>, out: &mut Vec<Problem>) {
    if let Some(v) = value
        && let Err(e) = parse_go_duration(v)
    {
        out.push(problem(field, e.to_string()));
    }
}

/// Every problem the add-on (its CRD schema, CEL rules and operator) would report for an
/// HTTPScaledObject, plus ebb's rate checks.
pub fn validate_http_scaled_object(so: &HTTPScaledObject) -> Vec<Problem> {
    let mut out = Vec::new();
    let spec = &so.spec;
    let target = &spec.scale_target_ref;
    if target.service.is_empty() {
        out.push(problem("spec.scaleTargetRef.service", "Required value"));
    }
    if target.port.is_some() == target.port_name.is_some() {
        out.push(problem("spec.scaleTargetRef", PORT_CHOICE_MESSAGE));
    }
    if let Some(f) = &spec.cold_start_timeout_failover_ref {
        if f.service.is_empty() {
            out.push(problem(
                "spec.coldStartTimeoutFailoverRef.service",
                "Required value",
            ));
        }
        if f.port.is_some() == f.port_name.is_some() {
            out.push(problem("spec.coldStartTimeoutFailoverRef", PORT_CHOICE_MESSAGE));
        }
    }
    header_problems("spec.headers", &spec.headers, &mut out);
    if let Some(t) = &spec.timeouts {
        duration_problem(
            "spec.timeouts.conditionWait".into(),
            t.condition_wait.as_deref(),
            &mut out,
        );
        duration_problem(
            "spec.timeouts.responseHeader".into(),
            t.response_header.as_deref(),
            &mut out,
        );
    }
    if let Err(e) = http_scaled_object_metrics(so) {
        out.push(problem(e.field, e.message));
    }
    out
}

fn target_ref_problems(field: &str, t: &TargetRef, out: &mut Vec<Problem>) {
    if t.service.is_empty() {
        out.push(problem(
            format!("{field}.service"),
            "should be at least 1 chars long",
        ));
    }
    if t.port.is_some() == t.port_name.is_some() {
        out.push(problem(field, TARGET_PORT_MESSAGE));
    }
    if let Some(p) = t.port
        && !(1..=65535).contains(&p)
    {
        out.push(problem(
            format!("{field}.port"),
            format!("must be between 1 and 65535, got {p}"),
        ));
    }
    if t.port_name.as_deref() == Some("") {
        out.push(problem(
            format!("{field}.portName"),
            "should be at least 1 chars long",
        ));
    }
}

/// Every problem the add-on would report for an InterceptorRoute, plus ebb's rate checks.
pub fn validate_interceptor_route(ir: &InterceptorRoute) -> Vec<Problem> {
    let mut out = Vec::new();
    let spec = &ir.spec;
    target_ref_problems("spec.target", &spec.target, &mut out);
    if let Some(c) = &spec.cold_start {
        match &c.fallback {
            Some(f) => target_ref_problems("spec.coldStart.fallback", f, &mut out),
            None if c.placeholder.is_none() && c.max_pending_requests.is_none() => {
                out.push(problem("spec.coldStart", COLD_START_MESSAGE));
            }
            None => {}
        }
    }
    if let Some(mode) = spec.proxy_mode.as_deref()
        && !matches!(mode, "Service" | "Endpoint")
    {
        out.push(problem(
            "spec.proxyMode",
            format!("Unsupported value: {mode:?}: supported values: \"Service\", \"Endpoint\""),
        ));
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, p) in rule.paths.iter().enumerate() {
            if p.value.is_empty() {
                out.push(problem(
                    format!("spec.rules[{i}].paths[{j}].value"),
                    "should be at least 1 chars long",
                ));
            }
        }
        header_problems(&format!("spec.rules[{i}].headers"), &rule.headers, &mut out);
        let mut hosts = std::collections::BTreeSet::new();
        for (j, h) in rule.hosts.iter().enumerate() {
            if !hosts.insert(h) {
                out.push(problem(
                    format!("spec.rules[{i}].hosts[{j}]"),
                    format!("Duplicate value: {h:?}"),
                ));
            }
        }
    }
    let m = &spec.scaling_metric;
    let values = [
        ("concurrency", m.concurrency.as_ref().and_then(|c| c.target_value)),
        (
            "requestRate",
            m.request_rate.as_ref().and_then(|r| r.target_value),
        ),
    ];
    for (name, v) in values {
        if let Some(v) = v
            && v < 1
        {
            out.push(problem(
                format!("spec.scalingMetric.{name}.targetValue"),
                format!("should be greater than or equal to 1, got {v}"),
            ));
        }
    }
    if let Some(t) = &spec.timeouts {
        duration_problem("spec.timeouts.readiness".into(), t.readiness.as_deref(), &mut out);
        duration_problem("spec.timeouts.request".into(), t.request.as_deref(), &mut out);
        duration_problem(
            "spec.timeouts.responseHeader".into(),
            t.response_header.as_deref(),
            &mut out,
        );
    }
    if let Err(e) = interceptor_route_metrics(ir) {
        out.push(problem(e.field, e.message));
    }
    if let Some(c) = &spec.cold_start {
        if let Some(m) = c.max_pending_requests
            && m < 1
        {
            out.push(problem(
                "spec.coldStart.maxPendingRequests",
                format!("should be greater than or equal to 1, got {m}"),
            ));
        }
        if let Some(o) = c.overflow.as_deref()
            && !matches!(o, "Reject" | "Placeholder")
        {
            out.push(problem(
                "spec.coldStart.overflow",
                format!("Unsupported value: {o:?}: supported values: \"Reject\", \"Placeholder\""),
            ));
        }
    }
    // Static routes and the placeholder: status range, body size, response mode (the CRD's
    // bounds), as the activator reads them.
    if let Err(crate::scaling::http_route::RouteError::Field(field, message)) =
        crate::scaling::http_route::Route::from_interceptor_route(ir)
        && !out
            .iter()
            .any(|p| p.field.starts_with(&field) || field.starts_with(&p.field))
    {
        out.push(problem(field, message));
    }
    if let Some(p) = spec.cold_start.as_ref().and_then(|c| c.placeholder.as_ref())
        && let Err(crate::scaling::http_route::RouteError::Field(field, message)) =
            crate::scaling::http_route::fixed_response(
                "spec.coldStart.placeholder.response",
                &p.response,
                503,
            )
    {
        out.push(problem(field, message));
    }
    out
}

/// The problems of one `http.keda.sh` document (`kind`, `apiVersion` and the object), or `None`
/// when it is not of that API group: what `ebb check` and the admission webhook report.
pub fn validate_http_document(doc: &serde_json::Value) -> Option<Vec<Problem>> {
    let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
    let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
    let version = api_version.strip_prefix("http.keda.sh/")?;
    let parse_error = |e: serde_json::Error| vec![problem("spec", format!("not a valid {kind}: {e}"))];
    Some(match (version, kind) {
        ("v1alpha1", "HTTPScaledObject") => serde_json::from_value::<HTTPScaledObject>(doc.clone())
            .map_or_else(parse_error, |so| validate_http_scaled_object(&so)),
        ("v1beta1", "InterceptorRoute") => serde_json::from_value::<InterceptorRoute>(doc.clone())
            .map_or_else(parse_error, |ir| validate_interceptor_route(&ir)),
        (_, "HTTPScaledObject" | "InterceptorRoute") => vec![problem(
            "apiVersion",
            format!(
                "{api_version} does not serve {kind}: HTTPScaledObject is http.keda.sh/v1alpha1, InterceptorRoute http.keda.sh/v1beta1"
            ),
        )],
        (_, other) => vec![problem(
            "kind",
            format!(
                "unknown kind `{other}` in {api_version} (its kinds: HTTPScaledObject, InterceptorRoute)"
            ),
        )],
    })
}

fn annotation_true(so: &HTTPScaledObject, key: &str) -> bool {
    so.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

/// The `skip-scaledobject-creation` annotation is `"true"`: no ScaledObject is generated and
/// the one this object owns is deleted.
pub fn skips_scaled_object(so: &HTTPScaledObject) -> bool {
    annotation_true(so, SKIP_SCALED_OBJECT_ANNOTATION)
}

/// The `orphan-scaledobject` annotation is `"true"`: the owned ScaledObject loses its owner
/// reference and is otherwise left alone.
pub fn orphans_scaled_object(so: &HTTPScaledObject) -> bool {
    annotation_true(so, ORPHAN_SCALED_OBJECT_ANNOTATION)
}

/// The controller owner reference the add-on's operator sets (`SetControllerReference`).
pub fn owner_reference(so: &HTTPScaledObject) -> OwnerReference {
    OwnerReference {
        api_version: "http.keda.sh/v1alpha1".into(),
        kind: "HTTPScaledObject".into(),
        name: so.metadata.name.clone().unwrap_or_default(),
        uid: so.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// True when `owner` is an HTTPScaledObject named `name` (the add-on's `isOwnerReferenceMatch`:
/// kind compared case-insensitively, name exactly).
pub fn owned_by(owners: &[OwnerReference], name: &str) -> bool {
    owners
        .iter()
        .any(|o| o.kind.eq_ignore_ascii_case("HTTPScaledObject") && o.name == name)
}

/// The ScaledObject the add-on's operator generates for `so` (`pkg/k8s/scaledobject.go`): same
/// name and namespace, the HTTPScaledObject's labels and annotations, its controller owner
/// reference, the workload reference, `pollingInterval: 15`, min/max and cooldowns copied (nil
/// stays nil), `restoreToOriginalReplicaCount: true` and one `external-push` trigger naming it.
pub fn generated_scaled_object(so: &HTTPScaledObject, scaler_address: &str) -> ScaledObject {
    let spec = &so.spec;
    let target = &spec.scale_target_ref;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let name = so.metadata.name.clone().unwrap_or_default();
    let replicas = spec.replicas.as_ref();
    ScaledObject {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: so.metadata.namespace.clone(),
            labels: so.metadata.labels.clone(),
            annotations: so.metadata.annotations.clone(),
            owner_references: Some(vec![owner_reference(so)]),
            ..ObjectMeta::default()
        },
        spec: ScaledObjectSpec {
            scale_target_ref: ScaleTarget {
                name: target.name.clone(),
                api_version: non_empty(&target.api_version),
                kind: non_empty(&target.kind),
                env_source_container_name: None,
            },
            polling_interval: Some(GENERATED_POLLING_INTERVAL),
            cooldown_period: spec.scaledown_period,
            initial_cooldown_period: spec.initial_cooldown_period,
            min_replica_count: replicas.and_then(|r| r.min),
            max_replica_count: replicas.and_then(|r| r.max),
            advanced: Some(AdvancedConfig {
                restore_to_original_replica_count: Some(true),
                ..AdvancedConfig::default()
            }),
            triggers: vec![ScaleTrigger {
                type_: EXTERNAL_PUSH.into(),
                metadata: BTreeMap::from([
                    (SCALER_ADDRESS_KEY.to_string(), scaler_address.to_string()),
                    (HTTP_SCALED_OBJECT_KEY.to_string(), name),
                ]),
                ..ScaleTrigger::default()
            }],
            ..ScaledObjectSpec::default()
        },
        status: None,
    }
}

/// The merge patch the add-on sends when the ScaledObject already exists: the generated
/// object's metadata (labels, annotations, owner reference) and spec, nothing else.
pub fn scaled_object_merge_patch(generated: &ScaledObject) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "labels": generated.metadata.labels,
            "annotations": generated.metadata.annotations,
            "ownerReferences": generated.metadata.owner_references,
        },
        "spec": generated.spec,
    })
}

/// The status the add-on's operator writes: `targetWorkload` (`apiVersion/kind/name`),
/// `targetService` (`service:port`, `:0` with `portName`) and the `Ready` condition, keeping
/// `lastTransitionTime` when the status does not change; conditions without
/// `lastTransitionTime` (the pre-v0.12 format) are dropped.
pub fn http_status(
    so: &HTTPScaledObject,
    outcome: Result<(), String>,
    now_rfc3339: &str,
) -> HttpScaledObjectStatus {
    let t = &so.spec.scale_target_ref;
    let (status, reason, message) = match outcome {
        Ok(()) => ("True", REASON_RECONCILED, MESSAGE_RECONCILED.to_string()),
        Err(e) => (
            "False",
            REASON_CREATE_ERROR,
            format!("Failed to create scaled objects: {e}"),
        ),
    };
    let old = so.status.as_ref();
    let mut conditions: Vec<HttpCondition> = old
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| c.last_transition_time.is_some() && c.type_ != "Ready")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let previous = old.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.last_transition_time.is_some())
    });
    let since = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now_rfc3339.to_string()),
    };
    conditions.push(HttpCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: since,
        observed_generation: so.metadata.generation,
    });
    HttpScaledObjectStatus {
        target_workload: Some(format!("{}/{}/{}", t.api_version, t.kind, t.name)),
        target_service: Some(format!("{}:{}", t.service, t.port.unwrap_or(0))),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn httpso(yaml: &str) -> HTTPScaledObject {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    const BASE: &str =
        "apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata: {name: app, namespace: web}\n";

    #[test]
    fn validation_table() {
        // (spec, expected problem fields)
        let cases: &[(&str, &[&str])] = &[
            ("{scaleTargetRef: {name: a, service: a, port: 80}}", &[]),
            ("{scaleTargetRef: {name: a, service: a, portName: http}}", &[]),
            (
                "{scaleTargetRef: {name: a, service: a}}",
                &["spec.scaleTargetRef"],
            ),
            (
                "{scaleTargetRef: {name: a, service: a, port: 80, portName: http}}",
                &["spec.scaleTargetRef"],
            ),
            (
                "{scaleTargetRef: {name: a, service: '', port: 80}}",
                &["spec.scaleTargetRef.service"],
            ),
            (
                "{scaleTargetRef: {name: a, service: a, port: 80}, coldStartTimeoutFailoverRef: {service: b}}",
                &["spec.coldStartTimeoutFailoverRef"],
            ),
            (
                "{scaleTargetRef: {name: a, service: a, port: 80}, headers: [{name: X}, {name: X}, {name: ''}]}",
                &["spec.headers[1]", "spec.headers[2].name"],
            ),
            (
                "{scaleTargetRef: {name: a, service: a, port: 80}, timeouts: {conditionWait: forever}}",
                &["spec.timeouts.conditionWait"],
            ),
            (
                "{scaleTargetRef: {name: a, service: a, port: 80}, scalingMetric: {requestRate: {granularity: 100ms}}}",
                &["spec.scalingMetric.requestRate.granularity"],
            ),
            (
                "{scaleTargetRef: {name: a, service: a, port: 80}, scalingMetric: {concurrency: {}, requestRate: {}}}",
                &["spec.scalingMetric"],
            ),
        ];
        for (spec, want) in cases {
            let so = httpso(&format!("{BASE}spec: {spec}\n"));
            let got: Vec<String> = validate_http_scaled_object(&so)
                .into_iter()
                .map(|p| p.field)
                .collect();
            assert_eq!(got, *want, "{spec}");
        }
    }

    #[test]
    fn documents_by_group_and_kind() {
        let doc = |v: &str, k: &str, spec: serde_json::Value| serde_json::json!({"apiVersion": v, "kind": k, "metadata": {"name": "a"}, "spec": spec});
        assert_eq!(
            validate_http_document(&doc("apps/v1", "Deployment", serde_json::json!({}))),
            None
        );
        let ok = serde_json::json!({"scaleTargetRef": {"service": "s", "port": 80}});
        assert_eq!(
            validate_http_document(&doc("http.keda.sh/v1alpha1", "HTTPScaledObject", ok.clone())),
            Some(vec![])
        );
        let fields = |d| -> Vec<String> {
            validate_http_document(&d)
                .expect("http")
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        assert_eq!(
            fields(doc("http.keda.sh/v1beta1", "HTTPScaledObject", ok.clone())),
            ["apiVersion"]
        );
        assert_eq!(
            fields(doc("http.keda.sh/v1alpha1", "HTTPScaledObjekt", ok)),
            ["kind"]
        );
        assert_eq!(
            fields(doc(
                "http.keda.sh/v1alpha1",
                "HTTPScaledObject",
                serde_json::json!({})
            )),
            ["spec"]
        );
    }

    #[test]
    fn interceptor_route_validation_table() {
        let base =
            "apiVersion: http.keda.sh/v1beta1\nkind: InterceptorRoute\nmetadata: {name: r, namespace: web}\n";
        let cases: &[(&str, &[&str])] = &[
            (
                "{target: {service: a, port: 80}, scalingMetric: {concurrency: {}}}",
                &[],
            ),
            (
                "{target: {service: a, port: 80}, scalingMetric: {}}",
                &["spec.scalingMetric"],
            ),
            (
                "{target: {service: a}, scalingMetric: {concurrency: {}}}",
                &["spec.target"],
            ),
            (
                "{target: {service: a, port: 70000}, scalingMetric: {concurrency: {}}}",
                &["spec.target.port"],
            ),
            (
                "{target: {service: a, port: 80}, scalingMetric: {concurrency: {targetValue: 0}}}",
                &["spec.scalingMetric.concurrency.targetValue"],
            ),
            (
                "{target: {service: a, port: 80}, proxyMode: Direct, scalingMetric: {concurrency: {}}}",
                &["spec.proxyMode"],
            ),
            (
                "{target: {service: a, port: 80}, rules: [{paths: [{value: ''}], hosts: [a, a]}], scalingMetric: {concurrency: {}}}",
                &["spec.rules[0].paths[0].value", "spec.rules[0].hosts[1]"],
            ),
            (
                "{target: {service: a, port: 80}, scalingMetric: {requestRate: {window: 1s, granularity: 2s}}}",
                &["spec.scalingMetric.requestRate.window"],
            ),
            (
                "{target: {service: a, port: 80}, scalingMetric: {concurrency: {}}, coldStart: {}}",
                &["spec.coldStart"],
            ),
            (
                "{target: {service: a, port: 80}, scalingMetric: {concurrency: {}}, coldStart: {maxPendingRequests: 0, overflow: Drop, placeholder: {response: {statusCode: 99}}}}",
                &[
                    "spec.coldStart.maxPendingRequests",
                    "spec.coldStart.overflow",
                    "spec.coldStart.placeholder.response.statusCode",
                ],
            ),
            (
                "{target: {service: a, port: 80}, scalingMetric: {concurrency: {}}, staticRoutes: [{response: {}, responseMode: Never}]}",
                &["spec.staticRoutes[0].responseMode"],
            ),
        ];
        for (spec, want) in cases {
            let ir: InterceptorRoute = serde_yaml::from_str(&format!("{base}spec: {spec}\n")).expect("yaml");
            let got: Vec<String> = validate_interceptor_route(&ir)
                .into_iter()
                .map(|p| p.field)
                .collect();
            assert_eq!(got, *want, "{spec}");
        }
    }

    /// The body `pkg/k8s/scaledobject.go` builds, written out from the add-on's code.
    #[test]
    fn generated_scaled_object_has_the_add_ons_shape() {
        let so = httpso(
            r#"apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: app
  namespace: web
  uid: 1234-abcd
  labels: {team: blue}
  annotations: {note: kept}
spec:
  scaleTargetRef: {name: app, apiVersion: apps/v1, kind: Deployment, service: app-svc, port: 8080}
  replicas: {min: 0, max: 10}
  scaledownPeriod: 120
  initialCooldownPeriod: 30
  scalingMetric: {concurrency: {targetValue: 5}}
"#,
        );
        let got = serde_json::to_value(generated_scaled_object(&so, "ebb-activator-admin.keda:9090"))
            .expect("json");
        let want = serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {
                "name": "app",
                "namespace": "web",
                "labels": {"team": "blue"},
                "annotations": {"note": "kept"},
                "ownerReferences": [{
                    "apiVersion": "http.keda.sh/v1alpha1",
                    "kind": "HTTPScaledObject",
                    "name": "app",
                    "uid": "1234-abcd",
                    "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "scaleTargetRef": {"name": "app", "apiVersion": "apps/v1", "kind": "Deployment"},
                "pollingInterval": 15,
                "cooldownPeriod": 120,
                "initialCooldownPeriod": 30,
                "minReplicaCount": 0,
                "maxReplicaCount": 10,
                "advanced": {"restoreToOriginalReplicaCount": true},
                "triggers": [{
                    "type": "external-push",
                    "metadata": {"scalerAddress": "ebb-activator-admin.keda:9090", "httpScaledObject": "app"}
                }]
            }
        });
        assert_eq!(got, want);
        // nil stays nil.
        let bare = httpso(&format!(
            "{BASE}spec: {{scaleTargetRef: {{name: app, service: s, port: 80}}}}\n"
        ));
        let spec = serde_json::to_value(generated_scaled_object(&bare, "x:1")).expect("json")["spec"].clone();
        for absent in [
            "cooldownPeriod",
            "initialCooldownPeriod",
            "minReplicaCount",
            "maxReplicaCount",
        ] {
            assert!(spec.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn annotations_and_ownership() {
        let with = |k: &str, v: &str| {
            let mut so = httpso(&format!(
                "{BASE}spec: {{scaleTargetRef: {{service: s, port: 80}}}}\n"
            ));
            so.metadata.annotations = Some(BTreeMap::from([(k.to_string(), v.to_string())]));
            so
        };
        assert!(skips_scaled_object(&with(SKIP_SCALED_OBJECT_ANNOTATION, "true")));
        assert!(!skips_scaled_object(&with(SKIP_SCALED_OBJECT_ANNOTATION, "True")));
        assert!(orphans_scaled_object(&with(
            ORPHAN_SCALED_OBJECT_ANNOTATION,
            "true"
        )));
        assert!(!orphans_scaled_object(&with(
            SKIP_SCALED_OBJECT_ANNOTATION,
            "true"
        )));
        let so = with("x", "y");
        let mut owner = owner_reference(&so);
        assert!(owned_by(std::slice::from_ref(&owner), "app"));
        owner.kind = "httpscaledobject".into();
        assert!(owned_by(std::slice::from_ref(&owner), "app"));
        assert!(!owned_by(&[owner], "other"));
    }

    #[test]
    fn status_as_the_add_on_writes_it() {
        let mut so = httpso(&format!(
            "{BASE}spec: {{scaleTargetRef: {{name: app, apiVersion: apps/v1, kind: Deployment, service: s, portName: http}}}}\nstatus:\n  conditions:\n  - {{type: Ready, status: 'False', reason: CreateError}}\n"
        ));
        so.metadata.generation = Some(3);
        let s = http_status(&so, Ok(()), "2026-01-01T00:00:00Z");
        assert_eq!(s.target_workload.as_deref(), Some("apps/v1/Deployment/app"));
        assert_eq!(s.target_service.as_deref(), Some("s:0"));
        assert_eq!(s.conditions.len(), 1, "the pre-v0.12 condition is dropped");
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some(REASON_RECONCILED))
        );
        assert_eq!(c.message.as_deref(), Some(MESSAGE_RECONCILED));
        assert_eq!(c.observed_generation, Some(3));
        // Unchanged status keeps its transition time; a change moves it.
        so.status = Some(s);
        let again = http_status(&so, Ok(()), "2026-01-02T00:00:00Z");
        assert_eq!(
            again.conditions[0].last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        let failed = http_status(&so, Err("forbidden".into()), "2026-01-03T00:00:00Z");
        let c = &failed.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some(REASON_CREATE_ERROR))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("Failed to create scaled objects: forbidden")
        );
        assert_eq!(c.last_transition_time.as_deref(), Some("2026-01-03T00:00:00Z"));
    }
}
