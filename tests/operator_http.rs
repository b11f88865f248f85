//! The HTTPScaledObject controller against a scripted API server (tower-test): the generated
//! ScaledObject's body as the add-on's operator sends it, create then merge-patch on conflict,
//! both annotations, the add-on's finalizer, and the status it writes.

use std::time::Duration;

use ebb::{crd::http_scaled_object::HTTPScaledObject, operator::http_scaled_object::*};
use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};

mod common;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const STEP: Duration = Duration::from_secs(30);
const SOS: &str = "/apis/keda.sh/v1alpha1/namespaces/web/scaledobjects";
const SO: &str = "/apis/keda.sh/v1alpha1/namespaces/web/scaledobjects/app";
const HTTPSO: &str = "/apis/http.keda.sh/v1alpha1/namespaces/web/httpscaledobjects/app";
const NOW: &str = "2026-12-01T12:00:00Z";

fn httpso(annotations: Value) -> HTTPScaledObject {
    serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "app", "namespace": "web", "uid": "u-1", "generation": 2,
                     "resourceVersion": "41", "labels": {"team": "blue"}, "annotations": annotations},
        "spec": {
            "hosts": ["app.example.com"],
            "scaleTargetRef": {"name": "app", "apiVersion": "apps/v1", "kind": "Deployment", "service": "app", "port": 8080},
            "replicas": {"min": 0, "max": 10},
            "scaledownPeriod": 120,
            "scalingMetric": {"concurrency": {"targetValue": 5}}
        }
    }))
    .expect("HTTPScaledObject")
}

/// The ScaledObject the add-on's `NewScaledObject` + `SetControllerReference` produce.
fn expected_scaled_object(annotations: Value) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": "app", "namespace": "web",
            "labels": {"team": "blue"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
                                 "name": "app", "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "scaleTargetRef": {"name": "app", "apiVersion": "apps/v1", "kind": "Deployment"},
            "pollingInterval": 15,
            "cooldownPeriod": 120,
            "minReplicaCount": 0,
            "maxReplicaCount": 10,
            "advanced": {"restoreToOriginalReplicaCount": true},
            "triggers": [{"type": "external-push",
                          "metadata": {"scalerAddress": "ebb-activator-admin.ebb:9090", "httpScaledObject": "app"}}]
        }
    })
}

async fn expect(handle: &mut Handle, method: Method, path: &str, code: StatusCode, reply: Value) -> Value {
    let (req, send) = tokio::time::timeout(STEP, handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
        .expect("service alive");
    assert_eq!((req.method(), req.uri().path()), (&method, path), "{}", req.uri());
    let bytes = req.into_body().collect_bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    send.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).expect("json")))
            .expect("response"),
    );
    body
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason}"), "reason": reason, "code": code})
}

fn run(obj: HTTPScaledObject) -> (tokio::task::JoinHandle<Result<Applied, kube::Error>>, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let task = tokio::spawn(async move {
        reconcile_http_scaled_object(&client, &obj, "ebb-activator-admin.ebb:9090", NOW).await
    });
    (task, handle)
}

async fn done(task: tokio::task::JoinHandle<Result<Applied, kube::Error>>) -> Result<Applied, kube::Error> {
    tokio::time::timeout(STEP, task)
        .await
        .expect("ended")
        .expect("joined")
}

/// The status write the reconcile ends with (answered with the object); its body.
async fn expect_status(handle: &mut Handle, obj: &HTTPScaledObject) -> Value {
    let reply = serde_json::to_value(obj).expect("json");
    expect(
        handle,
        Method::PATCH,
        &format!("{HTTPSO}/status"),
        StatusCode::OK,
        reply,
    )
    .await
}

fn ready(body: &Value) -> &Value {
    &body["status"]["conditions"][0]
}

#[tokio::test]
async fn creates_the_add_ons_scaled_object_and_sets_ready() {
    let obj = httpso(json!({"note": "kept"}));
    let (task, mut h) = run(obj.clone());
    let sent = expect(
        &mut h,
        Method::POST,
        SOS,
        StatusCode::CREATED,
        expected_scaled_object(json!({"note": "kept"})),
    )
    .await;
    assert_eq!(sent, expected_scaled_object(json!({"note": "kept"})));
    let st = expect_status(&mut h, &obj).await;
    assert_eq!(st["status"]["targetWorkload"], "apps/v1/Deployment/app");
    assert_eq!(st["status"]["targetService"], "app:8080");
    assert_eq!(
        ready(&st),
        &json!({"type": "Ready", "status": "True", "reason": "Reconciled",
                "message": "ScaledObject created and configured",
                "lastTransitionTime": NOW, "observedGeneration": 2})
    );
    assert_eq!(done(task).await.expect("ok"), Applied::Created);
}

#[tokio::test]
async fn an_existing_scaled_object_is_merge_patched() {
    let obj = httpso(json!({}));
    let (task, mut h) = run(obj.clone());
    expect(
        &mut h,
        Method::POST,
        SOS,
        StatusCode::CONFLICT,
        status(409, "AlreadyExists"),
    )
    .await;
    let patch = expect(
        &mut h,
        Method::PATCH,
        SO,
        StatusCode::OK,
        expected_scaled_object(json!({})),
    )
    .await;
    assert_eq!(patch["spec"], expected_scaled_object(json!({}))["spec"]);
    assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "u-1");
    expect_status(&mut h, &obj).await;
    assert_eq!(done(task).await.expect("ok"), Applied::Patched);
}

#[tokio::test]
async fn a_refused_create_sets_create_error() {
    let obj = httpso(json!({}));
    let (task, mut h) = run(obj.clone());
    expect(
        &mut h,
        Method::POST,
        SOS,
        StatusCode::FORBIDDEN,
        status(403, "Forbidden"),
    )
    .await;
    let st = expect_status(&mut h, &obj).await;
    assert_eq!(ready(&st)["status"], "False");
    assert_eq!(ready(&st)["reason"], "CreateError");
    assert!(
        ready(&st)["message"]
            .as_str()
            .expect("message")
            .starts_with("Failed to create scaled objects: ")
    );
    assert!(done(task).await.is_err(), "retried by the controller");
}

#[tokio::test]
async fn skip_annotation_deletes_the_owned_scaled_object_only() {
    let ann = json!({"httpscaledobject.keda.sh/skip-scaledobject-creation": "true"});
    let obj = httpso(ann.clone());
    let (task, mut h) = run(obj.clone());
    expect(
        &mut h,
        Method::GET,
        SO,
        StatusCode::OK,
        expected_scaled_object(json!({})),
    )
    .await;
    expect(&mut h, Method::DELETE, SO, StatusCode::OK, status(200, "Success")).await;
    let st = expect_status(&mut h, &obj).await;
    assert_eq!(ready(&st)["status"], "True");
    assert_eq!(done(task).await.expect("ok"), Applied::Skipped);

    // A user's ScaledObject of the same name (no owner reference) is left alone.
    let (task, mut h) = run(obj.clone());
    let mut users = expected_scaled_object(json!({}));
    users["metadata"]["ownerReferences"] = json!([]);
    expect(&mut h, Method::GET, SO, StatusCode::OK, users).await;
    expect_status(&mut h, &obj).await;
    assert_eq!(done(task).await.expect("ok"), Applied::Skipped);
}

#[tokio::test]
async fn orphan_annotation_removes_only_the_owner_reference() {
    let obj = httpso(json!({"httpscaledobject.keda.sh/orphan-scaledobject": "true"}));
    let (task, mut h) = run(obj.clone());
    let mut existing = expected_scaled_object(json!({}));
    existing["metadata"]["resourceVersion"] = json!("9");
    expect(&mut h, Method::GET, SO, StatusCode::OK, existing.clone()).await;
    let patch = expect(&mut h, Method::PATCH, SO, StatusCode::OK, existing).await;
    assert_eq!(
        patch,
        json!({"metadata": {"ownerReferences": [], "resourceVersion": "9"}})
    );
    expect_status(&mut h, &obj).await;
    assert_eq!(done(task).await.expect("ok"), Applied::Orphaned);
}

#[tokio::test]
async fn deletion_removes_the_add_ons_finalizer() {
    let mut obj = httpso(json!({}));
    obj.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-12-01T11:00:00Z")).expect("time"));
    obj.metadata.finalizers = Some(vec![ADD_ON_FINALIZER.to_string(), "other/keep".to_string()]);
    let (task, mut h) = run(obj.clone());
    let patch = expect(
        &mut h,
        Method::PATCH,
        HTTPSO,
        StatusCode::OK,
        serde_json::to_value(&obj).expect("json"),
    )
    .await;
    assert_eq!(
        patch,
        json!({"metadata": {"finalizers": ["other/keep"], "resourceVersion": "41"}})
    );
    assert_eq!(done(task).await.expect("ok"), Applied::Finalized);
}

mod scale_loop_activity {
    //! The operator's scale loop reads the `external-push` trigger like any other: a request
    //! held on an activator replica (counted in its `/queue` concurrency) is activity, so a
    //! target past its cooldown is not scaled to zero while requests wait.
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, TimeZone, Utc};
    use ebb::{
        cache::MetricCache,
        crd::ScaledObject,
        operator::{context::Context, scale_loop},
        scalers::{
            ScalerContext,
            http_push::{ActivatorDiscovery, HttpShared},
            registry::{Registry, RegistryConfig},
        },
    };
    use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};

    use super::*;

    use super::common::activator_admin;

    const SCALE: &str = "/apis/apps/v1/namespaces/web/deployments/app/scale";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
            .single()
            .expect("time")
    }

    fn scale(replicas: i32) -> Value {
        serde_json::to_value(Scale {
            metadata: kube::api::ObjectMeta {
                name: Some("app".into()),
                namespace: Some("web".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(ScaleSpec {
                replicas: Some(replicas),
            }),
            status: Some(ScaleStatus {
                replicas,
                selector: Some("app=app".into()),
            }),
        })
        .expect("json")
    }

    #[tokio::test]
    async fn a_held_request_keeps_the_target_up_past_its_cooldown() {
        let queue = Arc::new(Mutex::new(Some(
            r#"{"web/app": {"Concurrency": 1, "RequestCount": 1}}"#.to_string(),
        )));
        let admin = activator_admin::admin_server(queue).await;
        let (svc, mut h) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let registry = Arc::new(Registry::new(RegistryConfig {
            context: ScalerContext {
                http: HttpShared::new(
                    Default::default(),
                    ActivatorDiscovery {
                        admin_urls: vec![admin],
                        service: None,
                    },
                ),
                ..Default::default()
            },
            ..Default::default()
        }));
        let mut ctx = Context::new(
            client,
            registry,
            Arc::new(MetricCache::new(Duration::from_secs(5))),
        );
        ctx.spawn_loops = false;
        ctx.clock = Arc::new(now);
        let ctx = Arc::new(ctx);
        let mut so = expected_scaled_object(json!({}));
        so["metadata"]["uid"] = json!("so-1");
        so["status"] = json!({
            "scaleTargetKind": "apps/v1.Deployment",
            "scaleTargetGVKR": {"group": "apps", "version": "v1", "kind": "Deployment", "resource": "deployments"},
            // Active twenty minutes ago; the cooldown is two.
            "lastActiveTime": "2026-12-01T11:40:00Z",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ScaledObject is defined correctly and is ready for scaling"},
                {"type": "Active", "status": "False", "reason": "ScalerNotActive", "message": "Scaling is not performed because triggers are not active"},
                {"type": "Fallback", "status": "False", "reason": "NoFallbackFound", "message": "No fallbacks are active on this scaled object"},
                {"type": "Paused", "status": "False"}
            ]
        });
        let typed: ScaledObject = serde_json::from_value(so.clone()).expect("ScaledObject");
        let task = tokio::spawn({
            let ctx = ctx.clone();
            async move { scale_loop::iterate(&ctx, &typed).await }
        });
        expect(&mut h, Method::GET, SCALE, StatusCode::OK, scale(1)).await;
        // No PUT to 0: the next request is the status patch marking the object active.
        let status = expect(
            &mut h,
            Method::PATCH,
            &format!("{SO}/status"),
            StatusCode::OK,
            so.clone(),
        )
        .await;
        let active = status["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Active"))
            .expect("Active condition");
        assert_eq!(active["status"], "True", "{status}");
        assert_eq!(status["status"]["lastActiveTime"], "2026-12-01T12:00:00Z");
        // Whatever else it sends (an activation event), it never sets replicas to 0.
        while let Ok(Some((req, send))) =
            tokio::time::timeout(Duration::from_millis(500), h.next_request()).await
        {
            assert_ne!(req.method(), Method::PUT, "{}", req.uri());
            send.send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(b"{}".to_vec()))
                    .expect("response"),
            );
        }
        tokio::time::timeout(STEP, task)
            .await
            .expect("ended")
            .expect("joined")
            .expect("iterated");
    }
}
