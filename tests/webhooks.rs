//! Admission webhook: AdmissionReview round trips against a YAML-backed cluster, and one
//! end-to-end run of `ebb webhooks --local` over TLS.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::net::{http_get, spawn_on_free_ports};

use ebb::{
    keda_metrics::KedaMetrics,
    webhooks::{LocalCluster, WebhookContext, review},
};
use prometheus_client::registry::Registry;
use serde_json::Value;

/// The cluster the fixtures are reviewed against.
const CLUSTER: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web, namespace: apps}
spec:
  scaleTargetRef: {name: web}
  triggers:
  - type: cron
    metadata: {timezone: Europe/Berlin, start: "0 8 * * 1-5", end: "0 18 * * 1-5", desiredReplicas: "4"}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: legacy-api, namespace: apps}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  maxReplicas: 4
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: keda-hpa-web
  namespace: apps
  ownerReferences:
  - {apiVersion: keda.sh/v1alpha1, kind: ScaledObject, name: web, uid: 6c1a0d4e-0000-4000-8000-000000000003}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 10
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: apps}
spec:
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers:
      - {name: app, image: worker:1}
"#;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn context_with(cluster: &str) -> (WebhookContext, Registry) {
    let mut registry = Registry::default();
    let metrics = Arc::new(KedaMetrics::register(&mut registry));
    let cluster = Arc::new(LocalCluster::from_yaml(cluster).expect("cluster yaml"));
    (WebhookContext { cluster, metrics }, registry)
}

fn context() -> (WebhookContext, Registry) {
    context_with(CLUSTER)
}

/// Reviews a fixture and returns the response as JSON, checking the envelope on the way.
async fn answer(ctx: &WebhookContext, name: &str) -> Value {
    let body = fixture(name);
    let request: Value = serde_json::from_slice(&body).expect("fixture json");
    let out = serde_json::to_value(review(&body, ctx).await).expect("serializes");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{out}");
    assert_eq!(out["kind"], "AdmissionReview", "{out}");
    assert!(out.get("request").is_none(), "{out}");
    let resp = out["response"].clone();
    assert_eq!(
        resp["uid"], request["request"]["uid"],
        "uid must echo the request"
    );
    resp
}

async fn denied(name: &str) -> String {
    let (ctx, _) = context();
    let resp = answer(&ctx, name).await;
    assert_eq!(resp["allowed"], false, "{name}: {resp}");
    assert_eq!(resp["status"]["code"], 403, "{resp}");
    resp["status"]["message"].as_str().expect("message").to_string()
}

#[tokio::test]
async fn accepted_object_is_allowed_without_warnings() {
    let (ctx, registry) = context();
    let resp = answer(&ctx, "accepted.json").await;
    assert_eq!(resp["allowed"], true, "{resp}");
    assert!(resp.get("warnings").is_none(), "{resp}");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("keda_webhook_scaled_object_validations_total{namespace=\"apps\",action=\"create\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn second_scaled_object_on_one_target_is_refused() {
    let msg = denied("duplicate-target.json").await;
    assert_eq!(
        msg,
        "spec.scaleTargetRef.name: the workload 'web' of type 'apps/v1.Deployment' is already managed by the ScaledObject 'web'"
    );
}

#[tokio::test]
async fn foreign_hpa_is_refused_and_the_opt_out_annotation_allows_it() {
    let msg = denied("foreign-hpa.json").await;
    assert_eq!(
        msg,
        "spec.scaleTargetRef.name: the workload 'api' of type 'apps/v1.Deployment' is already managed by the hpa 'legacy-api'"
    );
    let opted_out = CLUSTER.replace(
        "metadata: {name: legacy-api, namespace: apps}",
        "metadata: {name: legacy-api, namespace: apps, annotations: {validations.keda.sh/hpa-ownership: \"false\"}}",
    );
    let (ctx, _) = context_with(&opted_out);
    assert_eq!(answer(&ctx, "foreign-hpa.json").await["allowed"], true);
}

#[tokio::test]
async fn transfer_annotation_needs_the_hpa_named() {
    let mut body: Value = serde_json::from_slice(&fixture("foreign-hpa.json")).expect("json");
    body["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"scaledobject.keda.sh/transfer-hpa-ownership": "true"});
    let (ctx, registry) = context();
    let bytes = serde_json::to_vec(&body).expect("json");
    let out = serde_json::to_value(review(&bytes, &ctx).await).expect("json");
    let msg = out["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("spec.advanced.horizontalPodAutoscalerConfig.name: ")
            && msg.contains("ownership transfer"),
        "{out}"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("reason=\"transfer-ownership-missing-hpa-name\""),
        "{text}"
    );

    body["request"]["object"]["spec"]["advanced"] =
        serde_json::json!({"horizontalPodAutoscalerConfig": {"name": "legacy-api"}});
    let bytes = serde_json::to_vec(&body).expect("json");
    let out = serde_json::to_value(review(&bytes, &ctx).await).expect("json");
    assert_eq!(out["response"]["allowed"], true, "{out}");
}

#[tokio::test]
async fn cpu_trigger_without_requests_is_refused_unless_a_limit_range_defaults_it() {
    let msg = denied("cpu-without-requests.json").await;
    assert_eq!(
        msg,
        "spec.triggers[0]: the scaledobject has a cpu trigger but the container app doesn't have the cpu request defined"
    );
    let with_range = format!(
        "{CLUSTER}\n---\napiVersion: v1\nkind: LimitRange\nmetadata: {{name: defaults, namespace: apps}}\nspec:\n  limits:\n  - type: Container\n    defaultRequest: {{cpu: 100m}}\n"
    );
    let (ctx, _) = context_with(&with_range);
    assert_eq!(answer(&ctx, "cpu-without-requests.json").await["allowed"], true);
}

#[tokio::test]
async fn cpu_check_is_skipped_on_dry_run() {
    let mut body: Value = serde_json::from_slice(&fixture("cpu-without-requests.json")).expect("json");
    body["request"]["dryRun"] = Value::Bool(true);
    let (ctx, _) = context();
    let bytes = serde_json::to_vec(&body).expect("json");
    let out = serde_json::to_value(review(&bytes, &ctx).await).expect("json");
    assert_eq!(out["response"]["allowed"], true, "{out}");
}

#[tokio::test]
async fn invalid_formula_is_refused() {
    let msg = denied("invalid-formula.json").await;
    assert!(
        msg.starts_with(
            "spec.advanced.scalingModifiers.formula: error validating formula in ScalingModifiers"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn unknown_trigger_type_is_refused() {
    let msg = denied("unknown-trigger.json").await;
    assert!(msg.starts_with("spec.triggers[0].type: "), "{msg}");
    assert!(msg.contains("rabbit-hole"), "{msg}");
}

#[tokio::test]
async fn bad_trigger_metadata_is_refused_naming_the_key() {
    let msg = denied("bad-metadata.json").await;
    assert!(msg.starts_with("spec.triggers[0].metadata.start: "), "{msg}");
    assert!(msg.contains("missing required parameter"), "{msg}");
}

#[tokio::test]
async fn min_above_max_is_refused_and_counted() {
    let (ctx, registry) = context();
    let resp = answer(&ctx, "min-greater-than-max.json").await;
    assert_eq!(resp["allowed"], false);
    assert_eq!(
        resp["status"]["message"],
        "spec.minReplicaCount: MinReplicaCount=5 must be less than MaxReplicaCount=2"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(text.contains("reason=\"incorrect-replicas\""), "{text}");
}

#[tokio::test]
async fn delete_and_finalizer_removal_are_allowed() {
    let (ctx, _) = context();
    assert_eq!(answer(&ctx, "delete.json").await["allowed"], true);
    // web-second duplicates web's target, yet removing its finalizer must never be blocked.
    assert_eq!(answer(&ctx, "remove-finalizer.json").await["allowed"], true);
}

#[tokio::test]
async fn ineffective_settings_produce_warnings() {
    let (ctx, _) = context();
    let resp = answer(&ctx, "warnings.json").await;
    assert_eq!(resp["allowed"], true);
    let warnings = resp["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{resp}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap_or_default()
            .contains("pollingInterval")
    );
    assert!(
        warnings[1]
            .as_str()
            .unwrap_or_default()
            .contains("cooldownPeriod")
    );
}

#[tokio::test]
async fn trigger_authentication_rules_depend_on_the_kind() {
    let msg = denied("ta-file-path.json").await;
    assert_eq!(
        msg,
        "spec.filePath: filePath is only supported on ClusterTriggerAuthentication"
    );
    let (ctx, _) = context();
    assert_eq!(answer(&ctx, "cta-file-path.json").await["allowed"], true);
}

/// ScaledJobs are reviewed with `ebb check`'s rules; a refusal is counted as KEDA counts it.
#[tokio::test]
async fn scaled_jobs_are_validated() {
    let (ctx, registry) = context();
    let review_of = |spec: Value| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "sj-1", "kind": {"group": "keda.sh", "version": "v1alpha1", "kind": "ScaledJob"},
                "resource": {"group": "keda.sh", "version": "v1alpha1", "resource": "scaledjobs"},
                "name": "encode", "namespace": "media", "operation": "CREATE",
                "userInfo": {"username": "dev"},
                "object": {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
                           "metadata": {"name": "encode", "namespace": "media"}, "spec": spec}
            }
        }))
        .expect("json")
    };
    let template = serde_json::json!({"template": {"spec": {"containers": [{"name": "w", "image": "w:1"}]}}});
    let cron = serde_json::json!({"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 * * * *", "end": "30 * * * *", "desiredReplicas": "1"}});
    let ok = review(
        &review_of(serde_json::json!({"jobTargetRef": template, "triggers": [cron]})),
        &ctx,
    )
    .await;
    let ok = serde_json::to_value(ok).expect("json");
    assert_eq!(ok["response"]["allowed"], true, "{ok}");
    let bad = review(
        &review_of(serde_json::json!({"jobTargetRef": template, "triggers": []})),
        &ctx,
    )
    .await;
    let bad = serde_json::to_value(bad).expect("json");
    assert_eq!(bad["response"]["allowed"], false, "{bad}");
    assert_eq!(
        bad["response"]["status"]["message"],
        "spec.triggers: no triggers defined in the ScaledObject/ScaledJob"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    assert!(
        text.contains(r#"keda_webhook_scaled_object_validation_errors_total{namespace="media",action="create",reason="incorrect-triggers"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn malformed_bodies_are_denied_without_panicking() {
    let (ctx, _) = context();
    for body in [
        &b""[..],
        b"{",
        b"[]",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\",\"request\":{}}",
    ] {
        let out = serde_json::to_value(review(body, &ctx).await).expect("json");
        assert_eq!(out["response"]["allowed"], false, "{out}");
        assert_eq!(out["response"]["status"]["code"], 400, "{out}");
    }
    // A well-formed review whose object is not a ScaledObject is refused with 400, not a panic.
    let mut body: Value = serde_json::from_slice(&fixture("accepted.json")).expect("json");
    body["request"]["object"]["spec"] = serde_json::json!({"triggers": "nope"});
    let bytes = serde_json::to_vec(&body).expect("json");
    let out = serde_json::to_value(review(&bytes, &ctx).await).expect("json");
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert_eq!(out["response"]["status"]["code"], 400, "{out}");
    assert_eq!(out["response"]["uid"], body["request"]["uid"]);
}

/// Generous for a loaded 2-core machine; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(60);

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn ebb_webhooks_serves_reviews_over_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ebb::tls::certgen::generate_ca("webhook-test-ca").expect("ca");
    let pair = ca
        .issue_server(&["localhost".to_string()], &["127.0.0.1".parse().expect("ip")])
        .expect("cert");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &pair.cert_pem).expect("write");
    std::fs::write(&key, &pair.key_pem).expect("write");
    let cluster_dir = dir.path().join("cluster");
    std::fs::create_dir(&cluster_dir).expect("mkdir");
    std::fs::write(cluster_dir.join("cluster.yaml"), CLUSTER).expect("write");

    // Ready on the admin port once the certificates are loaded; both ports are bound by then.
    let (child, [port, admin]) = spawn_on_free_ports(
        "ebb webhooks",
        DEADLINE,
        |[port, admin]| {
            Command::new(env!("CARGO_BIN_EXE_ebb"))
                .args([
                    "webhooks",
                    "--port",
                    &port.to_string(),
                    "--metrics-port",
                    &admin.to_string(),
                ])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-private-key-file")
                .arg(&key)
                .arg("--local")
                .arg(&cluster_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ebb webhooks")
        },
        |[_, admin]| http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")),
    );
    let _child = Running(child);

    let root = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("ca pem");
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .expect("client");
    let base = format!("https://localhost:{port}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() > deadline => panic!("ebb webhooks did not become healthy"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    let readyz = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), 200);

    let post = |path: &str, body: Vec<u8>| {
        client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = post(
        "/validate-keda-sh-v1alpha1-scaledobject",
        fixture("duplicate-target.json"),
    )
    .await
    .expect("post");
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.expect("json");
    assert_eq!(out["response"]["uid"], "0d5f3a52-1a8e-4b8f-9a55-0000000000a2");
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already managed by the ScaledObject 'web'"),
        "{out}"
    );

    let resp = post(
        "/validate-keda-sh-v1alpha1-triggerauthentication",
        fixture("ta-file-path.json"),
    )
    .await
    .expect("post");
    let out: Value = resp.json().await.expect("json");
    assert_eq!(out["response"]["allowed"], false, "{out}");

    let resp = post("/validate-keda-sh-v1alpha1-scaledobject", b"not json".to_vec())
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let status: Value = resp.json().await.expect("json");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 400);

    let resp = post("/nowhere", Vec::new()).await.expect("post");
    assert_eq!(resp.status(), 404);

    let metrics = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("reason=\"other-scaled-object\""), "{metrics}");
}

/// The Deployment's args must parse, and the registration must point at the served paths.
#[test]
fn manifests_match_the_webhook_server() {
    use clap::Parser;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let deploy_text = std::fs::read_to_string(root.join("webhooks.yaml")).expect("webhooks.yaml");
    let deploy: Value =
        serde_yaml::from_str(deploy_text.split("\n---").next().unwrap_or_default()).expect("yaml");
    let args: Vec<String> =
        serde_json::from_value(deploy["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .expect("args");
    let cli =
        ebb::cli::Cli::try_parse_from(std::iter::once("ebb".to_string()).chain(args)).expect("args parse");
    let ebb::cli::Command::Webhooks(a) = cli.command else {
        panic!("the Deployment does not run `ebb webhooks`");
    };
    assert_eq!(a.port, 9443);
    assert_eq!(a.metrics_port, 8080);

    let vwc: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("validatingwebhook.yaml")).expect("validatingwebhook.yaml"),
    )
    .expect("yaml");
    let paths: Vec<&str> = vwc["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .filter_map(|w| w["clientConfig"]["service"]["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        [
            ebb::webhooks::SCALED_OBJECT_PATH,
            ebb::webhooks::SCALED_JOB_PATH,
            ebb::webhooks::TRIGGER_AUTHENTICATION_PATH,
            ebb::webhooks::CLUSTER_TRIGGER_AUTHENTICATION_PATH
        ]
    );
}

mod discovery {
    //! The REST-mapper check against a scripted API server (kube's mocked client).
    use super::*;
    use ebb::{crd::ScaledObject, webhooks::KubeCluster};
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// Answers each expected GET path in order with `reply`; panics on anything else.
    async fn serve(mut handle: Handle, script: Vec<(&'static str, Value)>) {
        for (path, reply) in script {
            let (req, send) = tokio::time::timeout(DEADLINE, handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for GET {path}"))
                .expect("service alive");
            assert_eq!((req.method().as_str(), req.uri().path()), ("GET", path));
            let code = reply["code"].as_u64().unwrap_or(200) as u16;
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).expect("json")))
                    .expect("response"),
            );
        }
        if let Ok(Some((req, _))) =
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
        {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }

    fn rollout_so(kind: &str) -> ScaledObject {
        serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "name": "web"},
                     "triggers": [{"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 8 * * *", "end": "0 9 * * *", "desiredReplicas": "2"}}]}
        }))
        .expect("ScaledObject")
    }

    fn argo() -> Value {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "argoproj.io/v1alpha1",
               "resources": [{"name": "rollouts", "singularName": "rollout", "namespaced": true, "kind": "Rollout",
                              "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                             {"name": "rollouts/scale", "singularName": "", "namespaced": true, "group": "autoscaling",
                              "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}]})
    }

    fn empty(kind: &str, api_version: &str) -> Value {
        json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": []})
    }

    #[tokio::test]
    async fn a_kind_the_cluster_does_not_serve_is_refused() {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = KubeCluster::new(kube::Client::new(svc, "default"));
        let server = tokio::spawn(serve(handle, vec![("/apis/argoproj.io/v1alpha1", argo())]));
        let problems = ebb::webhooks::review::cluster_problems(&rollout_so("Rolout"), false, &cluster)
            .await
            .expect("checked");
        server.await.expect("script followed");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].message,
            "no matches for kind \"Rolout\" in version \"argoproj.io/v1alpha1\""
        );
        assert_eq!(problems[0].field, "spec.scaleTargetRef");
    }

    #[tokio::test]
    async fn a_served_custom_kind_goes_on_to_the_other_checks() {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = KubeCluster::new(kube::Client::new(svc, "default"));
        let server = tokio::spawn(serve(
            handle,
            vec![
                ("/apis/argoproj.io/v1alpha1", argo()),
                (
                    "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects",
                    empty("ScaledObjectList", "keda.sh/v1alpha1"),
                ),
                (
                    "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers",
                    empty("HorizontalPodAutoscalerList", "autoscaling/v2"),
                ),
            ],
        ));
        let problems = ebb::webhooks::review::cluster_problems(&rollout_so("Rollout"), false, &cluster)
            .await
            .expect("checked");
        server.await.expect("script followed");
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[tokio::test]
    async fn a_group_the_cluster_does_not_serve_is_refused() {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = KubeCluster::new(kube::Client::new(svc, "default"));
        let not_found = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404});
        let server = tokio::spawn(serve(handle, vec![("/apis/argoproj.io/v1alpha1", not_found)]));
        let problems = ebb::webhooks::review::cluster_problems(&rollout_so("Rollout"), false, &cluster)
            .await
            .expect("checked");
        server.await.expect("script followed");
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}

/// Reviews `accepted.json` with its triggers replaced (and as a dry run, which skips the
/// cluster's container-request check, as KEDA does).
async fn answer_with_triggers(triggers: Value) -> Value {
    let mut body: Value = serde_json::from_slice(&fixture("accepted.json")).expect("json");
    body["request"]["object"]["spec"]["triggers"] = triggers;
    body["request"]["object"]["spec"]["minReplicaCount"] = Value::from(1);
    body["request"]["dryRun"] = Value::Bool(true);
    let (ctx, _) = context();
    let bytes = serde_json::to_vec(&body).expect("json");
    serde_json::to_value(review(&bytes, &ctx).await).expect("json")["response"].clone()
}

/// Issue 9 item 2: KEDA 2.17's deprecated cpu/memory `metadata.type` is admitted with a warning.
#[tokio::test]
async fn deprecated_cpu_memory_type_is_admitted_with_a_warning() {
    let resp = answer_with_triggers(serde_json::json!([
        {"type": "memory", "metadata": {"type": "Utilization", "value": "60"}}
    ]))
    .await;
    assert_eq!(resp["allowed"], true, "{resp}");
    assert_eq!(
        resp["warnings"],
        serde_json::json!([
            "spec.triggers[0].metadata.type: The 'type' setting is DEPRECATED and will be removed in v2.18 - Use 'metricType' instead."
        ])
    );
    let resp = answer_with_triggers(serde_json::json!([
        {"type": "memory", "metricType": "AverageValue", "metadata": {"type": "Utilization", "value": "60"}}
    ]))
    .await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert!(
        resp["status"]["message"].as_str().is_some_and(|m| m.starts_with(
            "spec.triggers[0].metadata.type: metadata.type Utilization and metricType AverageValue disagree"
        )),
        "{resp}"
    );
}

/// Items 5 and 7: unsupported KEDA scalers and unknown cron zones are refused at admission.
#[tokio::test]
async fn unsupported_scalers_and_unknown_zones_are_refused() {
    let resp = answer_with_triggers(serde_json::json!([{"type": "kafka", "metadata": {}}])).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert!(
        resp["status"]["message"].as_str().is_some_and(
            |m| m.starts_with("spec.triggers[0].type: KEDA scaler `kafka` is not supported by ebb yet")
        ),
        "{resp}"
    );
    let resp = answer_with_triggers(serde_json::json!([{"type": "cron", "metadata": {
        "timezone": "Europe/Berln", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "2"}}]))
    .await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(
        resp["status"]["message"],
        "spec.triggers[0].metadata.timezone: error parsing cron metadata: unable to load timezone. Error: unknown time zone Europe/Berln"
    );
}
