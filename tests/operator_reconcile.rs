//! The operator against a scripted fake API server (tower-test): each expected request is
//! checked for method, path and body, answered with Kubernetes JSON, and bounded by a timeout.

mod common;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use ebb::{
    cache::MetricCache,
    crd::ScaledObject,
    operator::{
        context::Context,
        reconcile::{FINALIZER, reconcile},
        scale_loop,
    },
    scalers::{
        ScalerContext,
        registry::{Registry, RegistryConfig, object_key},
    },
    scaling::hpa::render_hpa,
};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// How long the operator may take to send its next request: generous for a loaded 2-core
/// machine, since it is only reached when the request never comes.
const STEP: Duration = Duration::from_secs(30);
const SO_PATH: &str = "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/web-so";
const SCALE_PATH: &str = "/apis/apps/v1/namespaces/ns/deployments/web/scale";
const HPA_PATH: &str = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/keda-hpa-web-so";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn context() -> (Arc<Context>, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    // The scalers read the same injected clock the scale loop decides with: the fixture's cron
    // trigger is inactive at `now()` whatever the real date.
    let registry = Arc::new(Registry::new(RegistryConfig {
        context: ScalerContext {
            clock: Some(Arc::new(now)),
            ..Default::default()
        },
        ..Default::default()
    }));
    let cache = Arc::new(MetricCache::new(Duration::from_secs(5)));
    let mut ctx = Context::new(client, registry, cache);
    ctx.spawn_loops = false;
    ctx.version = "test".to_string();
    ctx.clock = Arc::new(now);
    (Arc::new(ctx), handle)
}

fn fixture() -> Value {
    let text = std::fs::read_to_string("tests/fixtures/operator/scaledobject-cron.json").expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn with_finalizer(mut v: Value) -> Value {
    v["metadata"]["finalizers"] = json!([FINALIZER]);
    v
}

fn so(v: &Value) -> ScaledObject {
    serde_json::from_value(v.clone()).expect("ScaledObject")
}

fn scale(replicas: i32) -> Scale {
    Scale {
        metadata: kube::api::ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            resource_version: Some("7".into()),
            ..Default::default()
        },
        spec: Some(ScaleSpec {
            replicas: Some(replicas),
        }),
        status: Some(ScaleStatus {
            replicas,
            selector: Some("app=web".into()),
        }),
    }
}

fn not_found(kind: &str, name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404}),
    )
}

fn ok(v: impl serde::Serialize) -> (StatusCode, Value) {
    (StatusCode::OK, serde_json::to_value(v).expect("serialisable"))
}

/// Waits for the next request, checks method and path, answers, and returns the query and body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    answer: impl FnOnce(&Value) -> (StatusCode, Value),
) -> (String, Value) {
    let (req, send) = tokio::time::timeout(STEP, handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
        .expect("service alive");
    assert_eq!(
        (req.method(), req.uri().path()),
        (&method, path),
        "unexpected request {} {}",
        req.method(),
        req.uri()
    );
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req.into_body().collect_bytes().await.expect("body");
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    let (code, reply) = answer(&body);
    let response = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
        .expect("response");
    send.send_response(response);
    (query, body)
}

/// The outcome of a reconcile or loop task, which ends soon after its last expected request was
/// answered: one stuck on a request the test did not expect fails the test instead of hanging it.
async fn joined<T>(task: JoinHandle<T>) -> T {
    tokio::time::timeout(STEP, task)
        .await
        .expect("the task ended (is it waiting on an unexpected request?)")
        .expect("joined")
}

/// Asserts nothing else is asked of the API server.
async fn expect_quiet(handle: &mut Handle) {
    if let Ok(Some((req, _))) = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

/// Answers a status apply with a whole ScaledObject carrying the applied status.
fn status_reply(b: &Value) -> (StatusCode, Value) {
    let mut o = with_finalizer(fixture());
    o["status"] = b["status"].clone();
    ok(o)
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("condition {type_} in {status}"))
}

fn spawn_reconcile(
    ctx: &Arc<Context>,
    v: &Value,
) -> JoinHandle<Result<kube::runtime::controller::Action, ebb::operator::error::Error>> {
    let so = Arc::new(so(v));
    let ctx = ctx.clone();
    tokio::spawn(async move { reconcile(so, ctx).await })
}

/// Runs one scale-loop iteration of `v` in the background.
fn spawn_iterate(ctx: &Arc<Context>, v: &Value) -> JoinHandle<Result<(), ebb::operator::error::Error>> {
    let so = so(v);
    let ctx = ctx.clone();
    tokio::spawn(async move { scale_loop::iterate(&ctx, &so).await })
}

/// Expects the ScaledObject status patch and answers it; returns the query and the patch.
async fn expect_status_patch(handle: &mut Handle) -> (String, Value) {
    expect(handle, Method::PATCH, &format!("{SO_PATH}/status"), status_reply).await
}

async fn expect_event(handle: &mut Handle, reason: &str) -> Value {
    let (_, body) = expect(handle, Method::POST, EVENTS_PATH, |b| ok(b.clone())).await;
    assert_eq!(body["reason"], reason, "event {body}");
    body
}

#[tokio::test]
async fn create_adds_finalizer_then_applies_hpa_and_status() {
    let (ctx, mut handle) = context();
    let v = fixture();
    let task = spawn_reconcile(&ctx, &v);
    let (_, patch) = expect(&mut handle, Method::PATCH, SO_PATH, |_| {
        ok(with_finalizer(fixture()))
    })
    .await;
    assert!(patch.to_string().contains(FINALIZER), "finalizer patch {patch}");
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;

    let v = with_finalizer(v);
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(2))).await;
    expect(&mut handle, Method::GET, HPA_PATH, |_| {
        not_found("horizontalpodautoscalers", "keda-hpa-web-so")
    })
    .await;
    let (query, hpa) = expect(&mut handle, Method::PATCH, HPA_PATH, |b| ok(b.clone())).await;
    assert!(query.contains("fieldManager=ebb-operator"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    let entry = ctx.registry.get(&object_key(&so(&v))).expect("registered");
    let specs: Vec<_> = entry
        .triggers
        .iter()
        .flat_map(|t| {
            let s = t.scaler.as_ref().expect("cron scaler builds");
            s.metric_specs().into_iter().map(move |m| (t.index, m))
        })
        .collect();
    let desired = render_hpa(&so(&v), &specs, "test").expect("renders");
    assert_eq!(hpa, serde_json::to_value(&desired).expect("JSON"));

    let (query, status) = expect_status_patch(&mut handle).await;
    assert!(query.contains("fieldManager=ebb-operator"), "{query}");
    let status = &status["status"];
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Ready")["reason"], "ScaledObjectReady");
    assert_eq!(condition(status, "Paused")["status"], "False");
    assert_eq!(condition(status, "Fallback")["reason"], "NoFallbackFound");
    assert_eq!(status["hpaName"], "keda-hpa-web-so");
    assert_eq!(status["originalReplicaCount"], 2);
    assert_eq!(status["scaleTargetKind"], "apps/v1.Deployment");
    assert_eq!(status["scaleTargetGVKR"]["resource"], "deployments");
    assert_eq!(status["triggersTypes"], "cron");
    assert_eq!(status["externalMetricNames"][0], "s0-cron-Etc-UTC-0011x-1011x");
    expect_event(&mut handle, "ScaledObjectReady").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn missing_target_name_fails_without_hpa() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["spec"]["scaleTargetRef"]["name"] = json!("");
    let task = spawn_reconcile(&ctx, &v);
    let (_, status) = expect_status_patch(&mut handle).await;
    let ready = condition(&status["status"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ScaledObjectCheckFailed");
    assert_eq!(
        ready["message"],
        "ScaledObject.spec.scaleTargetRef.name is missing"
    );
    assert_eq!(condition(&status["status"], "Active")["status"], "Unknown");
    let ev = expect_event(&mut handle, "ScaledObjectCheckFailed").await;
    assert_eq!(ev["type"], "Warning");
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn unknown_trigger_type_fails_without_hpa() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["spec"]["triggers"] = json!([{"type": "no-such-scaler", "metadata": {}}]);
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(1))).await;
    let (_, status) = expect_status_patch(&mut handle).await;
    let ready = condition(&status["status"], "Ready");
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-scaler")),
        "{ready}"
    );
    expect_event(&mut handle, "ScaledObjectCheckFailed").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn one_bad_object_does_not_stop_another() {
    let (ctx, mut handle) = context();
    let mut bad = with_finalizer(fixture());
    bad["spec"]["scaleTargetRef"]["name"] = json!("");
    let task = spawn_reconcile(&ctx, &bad);
    expect_status_patch(&mut handle).await;
    expect_event(&mut handle, "ScaledObjectCheckFailed").await;
    joined(task).await.expect("reconciled");

    let mut good = with_finalizer(fixture());
    good["metadata"]["name"] = json!("other");
    good["metadata"]["labels"]["scaledobject.keda.sh/name"] = json!("other");
    let task = spawn_reconcile(&ctx, &good);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(1))).await;
    let other_hpa = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/keda-hpa-other";
    expect(&mut handle, Method::GET, other_hpa, |_| {
        not_found("horizontalpodautoscalers", "keda-hpa-other")
    })
    .await;
    expect(&mut handle, Method::PATCH, other_hpa, |b| ok(b.clone())).await;
    let so_other = "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/other/status";
    expect(&mut handle, Method::PATCH, so_other, status_reply).await;
    expect_event(&mut handle, "ScaledObjectReady").await;
    joined(task).await.expect("reconciled");
}

#[tokio::test]
async fn pause_deletes_hpa_and_scales_then_unpause_recreates() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["metadata"]["annotations"] = json!({"autoscaling.keda.sh/paused-replicas": "1"});
    v["status"] = json!({
        "hpaName": "keda-hpa-web-so",
        "originalReplicaCount": 3,
        "scaleTargetKind": "apps/v1.Deployment",
        "scaleTargetGVKR": {"group": "apps", "version": "v1", "kind": "Deployment", "resource": "deployments"},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ScaledObject is defined correctly and is ready for scaling"},
            {"type": "Active", "status": "False"},
            {"type": "Fallback", "status": "False"},
            {"type": "Paused", "status": "False"}
        ]
    });
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::DELETE, HPA_PATH, |_| {
        ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
    })
    .await;
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(3))).await;
    let (_, put) = expect(&mut handle, Method::PUT, SCALE_PATH, |b| ok(b.clone())).await;
    assert_eq!(put["spec"]["replicas"], 1);
    assert_eq!(put["metadata"]["resourceVersion"], "7");
    let (_, status) = expect_status_patch(&mut handle).await;
    let status = &status["status"];
    assert_eq!(condition(status, "Paused")["status"], "True");
    assert_eq!(condition(status, "Paused")["reason"], "ScaledObjectPaused");
    assert_eq!(status["pausedReplicaCount"], 1);
    expect_event(&mut handle, "ScaledObjectPaused").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;

    // Annotation removed: Paused=False/ScaledObjectUnpaused and the HPA comes back.
    v["metadata"]["annotations"] = json!({});
    v["status"]["pausedReplicaCount"] = json!(1);
    v["status"]["conditions"][3] = json!({"type": "Paused", "status": "True", "reason": "ScaledObjectPaused", "message": "ScaledObject is paused"});
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(1))).await;
    expect(&mut handle, Method::GET, HPA_PATH, |_| {
        not_found("horizontalpodautoscalers", "keda-hpa-web-so")
    })
    .await;
    expect(&mut handle, Method::PATCH, HPA_PATH, |b| ok(b.clone())).await;
    let (_, status) = expect_status_patch(&mut handle).await;
    let status = &status["status"];
    assert_eq!(condition(status, "Paused")["status"], "False");
    assert_eq!(condition(status, "Paused")["reason"], "ScaledObjectUnpaused");
    assert!(status.get("pausedReplicaCount").is_none(), "{status}");
    expect_event(&mut handle, "ScaledObjectUnpaused").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn delete_restores_original_replicas_and_removes_finalizer() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["metadata"]["deletionTimestamp"] = json!("2026-11-23T11:59:00Z");
    v["spec"]["advanced"] = json!({"restoreToOriginalReplicaCount": true});
    v["status"] = json!({
        "originalReplicaCount": 4,
        "scaleTargetGVKR": {"group": "apps", "version": "v1", "kind": "Deployment", "resource": "deployments"}
    });
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(0))).await;
    let (_, put) = expect(&mut handle, Method::PUT, SCALE_PATH, |b| ok(b.clone())).await;
    assert_eq!(put["spec"]["replicas"], 4);
    let (_, patch) = expect(&mut handle, Method::PATCH, SO_PATH, |_| ok(fixture())).await;
    assert!(patch.to_string().contains("remove"), "finalizer removal {patch}");
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

fn looping(v: &mut Value) {
    v["status"] = json!({
        "scaleTargetKind": "apps/v1.Deployment",
        "scaleTargetGVKR": {"group": "apps", "version": "v1", "kind": "Deployment", "resource": "deployments"},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ScaledObject is defined correctly and is ready for scaling"},
            {"type": "Active", "status": "Unknown"},
            {"type": "Fallback", "status": "False", "reason": "NoFallbackFound", "message": "No fallbacks are active on this scaled object"},
            {"type": "Paused", "status": "False"}
        ]
    });
}

#[tokio::test]
async fn inactive_trigger_after_cooldown_scales_to_zero() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    // Active ten minutes ago; cooldown is five.
    v["status"]["lastActiveTime"] = json!("2026-11-23T11:50:00Z");
    let task = spawn_iterate(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(3))).await;
    let (_, put) = expect(&mut handle, Method::PUT, SCALE_PATH, |b| ok(b.clone())).await;
    assert_eq!(put["spec"]["replicas"], 0);
    let (query, status) = expect_status_patch(&mut handle).await;
    // The loop applies only its own fields under its own manager.
    assert!(query.contains("fieldManager=ebb-scale-loop"), "{query}");
    assert!(status["status"].get("scaleTargetKind").is_none(), "{status}");
    assert_eq!(
        condition(&status["status"], "Active")["reason"],
        "ScalerNotActive"
    );
    assert_eq!(status["status"]["lastActiveTime"], "2026-11-23T11:50:00Z");
    let ev = expect_event(&mut handle, "KEDAScaleTargetDeactivated").await;
    assert_eq!(ev["note"], "Deactivated apps/v1.Deployment ns/web from 3 to 0");
    joined(task).await.expect("iterated");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn inactive_trigger_within_cooldown_keeps_replicas() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    v["status"]["lastActiveTime"] = json!("2026-11-23T11:58:00Z");
    let task = spawn_iterate(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(3))).await;
    let (_, status) = expect_status_patch(&mut handle).await;
    assert_eq!(condition(&status["status"], "Active")["reason"], "ScalerCooldown");
    joined(task).await.expect("iterated");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn active_trigger_at_zero_scales_to_min() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    v["spec"]["minReplicaCount"] = json!(2);
    v["spec"]["triggers"] =
        json!([{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}]);
    let task = spawn_iterate(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(0))).await;
    let (_, put) = expect(&mut handle, Method::PUT, SCALE_PATH, |b| ok(b.clone())).await;
    assert_eq!(put["spec"]["replicas"], 2);
    let (_, status) = expect_status_patch(&mut handle).await;
    assert_eq!(condition(&status["status"], "Active")["status"], "True");
    assert_eq!(status["status"]["lastActiveTime"], "2026-11-23T12:00:00Z");
    let ev = expect_event(&mut handle, "KEDAScaleTargetActivated").await;
    assert!(
        ev["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("Scaled apps/v1.Deployment ns/web from 0 to 2")),
        "{ev}"
    );
    joined(task).await.expect("iterated");
    expect_quiet(&mut handle).await;
}

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ebb/leases/ebb-operator";

fn lease_config() -> ebb::lease::LeaseConfig {
    ebb::lease::LeaseConfig {
        name: "ebb-operator".into(),
        namespace: "ebb".into(),
        identity: "me".into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_millis(50),
        renew_deadline: Duration::from_secs(10),
    }
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "ebb-operator", "namespace": "ebb", "resourceVersion": "42"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 3}
    })
}

#[tokio::test]
async fn lease_held_by_another_is_not_taken() {
    let (ctx, mut handle) = context();
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(ctx.client.clone(), "ebb");
    let task = tokio::spawn(async move { ebb::lease::try_acquire(&api, &lease_config(), now()).await });
    expect(&mut handle, Method::GET, LEASE_PATH, |_| {
        ok(lease("other", "2026-11-23T11:59:55.000000Z"))
    })
    .await;
    assert!(!joined(task).await.expect("step"));
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn expired_lease_is_taken_over_and_missing_one_created() {
    let (ctx, mut handle) = context();
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(ctx.client.clone(), "ebb");
    let a = api.clone();
    let task = tokio::spawn(async move { ebb::lease::try_acquire(&a, &lease_config(), now()).await });
    expect(&mut handle, Method::GET, LEASE_PATH, |_| {
        ok(lease("other", "2026-11-23T11:59:00.000000Z"))
    })
    .await;
    let (_, put) = expect(&mut handle, Method::PUT, LEASE_PATH, |b| ok(b.clone())).await;
    assert_eq!(put["spec"]["holderIdentity"], "me");
    assert_eq!(put["spec"]["leaseTransitions"], 4);
    assert_eq!(put["metadata"]["resourceVersion"], "42");
    assert!(joined(task).await.expect("step"));

    let task = tokio::spawn(async move { ebb::lease::try_acquire(&api, &lease_config(), now()).await });
    expect(&mut handle, Method::GET, LEASE_PATH, |_| {
        not_found("leases", "ebb-operator")
    })
    .await;
    let (_, created) = expect(
        &mut handle,
        Method::POST,
        "/apis/coordination.k8s.io/v1/namespaces/ebb/leases",
        |b| ok(b.clone()),
    )
    .await;
    assert_eq!(created["spec"]["holderIdentity"], "me");
    assert!(joined(task).await.expect("step"));
}

#[tokio::test]
async fn non_leader_makes_no_write() {
    let (ctx, mut handle) = context();
    let (trigger, signal) = ebb::shutdown::channel();
    let leader = ebb::lease::spawn(ctx.client.clone(), lease_config(), signal.clone());
    let gated = tokio::spawn(ebb::operator::controller::run_gated(
        ctx.clone(),
        leader,
        None,
        None,
        signal,
    ));
    // The lease is renewed by someone else every time we look: only lease reads may happen.
    for _ in 0..5 {
        let renewed = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        expect(&mut handle, Method::GET, LEASE_PATH, |_| {
            ok(lease("other", &renewed))
        })
        .await;
    }
    trigger.fire();
    tokio::time::timeout(STEP, gated)
        .await
        .expect("stops on shutdown")
        .expect("joined");
}

#[tokio::test]
async fn leader_starts_the_controller() {
    let (ctx, mut handle) = context();
    let (trigger, signal) = ebb::shutdown::channel();
    let leader = ebb::lease::spawn(ctx.client.clone(), lease_config(), signal.clone());
    let gated = tokio::spawn(ebb::operator::controller::run_gated(
        ctx.clone(),
        leader,
        None,
        None,
        signal,
    ));
    let mut saw_scaledobject_watch = false;
    // Lease renewals (every 50 ms) interleave with the controller's first lists, the more of
    // them the slower the machine: bounded by count and by STEP per request.
    for _ in 0..1000 {
        let (req, send) = tokio::time::timeout(STEP, handle.next_request())
            .await
            .expect("a request")
            .expect("service alive");
        let path = req.uri().path().to_string();
        let reply = if path == LEASE_PATH && req.method() == Method::GET {
            lease(
                "me",
                &Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )
        } else if path == LEASE_PATH {
            let bytes = req.into_body().collect_bytes().await.expect("body");
            serde_json::from_slice(&bytes).expect("JSON")
        } else {
            saw_scaledobject_watch |= path == "/apis/keda.sh/v1alpha1/scaledobjects";
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})
        };
        let response = Response::builder()
            .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
            .expect("response");
        send.send_response(response);
        if saw_scaledobject_watch {
            break;
        }
    }
    assert!(saw_scaledobject_watch, "the leader lists ScaledObjects");
    trigger.fire();
    tokio::time::timeout(STEP, gated)
        .await
        .expect("stops on shutdown")
        .expect("joined");
}

#[tokio::test]
async fn composite_formula_decides_activity() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    // The cron trigger is inactive (value 0), but the formula lifts the composite above activation.
    v["spec"]["triggers"][0]["name"] = json!("a");
    v["spec"]["advanced"] =
        json!({"scalingModifiers": {"formula": "a + 1", "target": "2", "activationTarget": "0.5"}});
    let task = spawn_iterate(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(0))).await;
    let (_, put) = expect(&mut handle, Method::PUT, SCALE_PATH, |b| ok(b.clone())).await;
    assert_eq!(put["spec"]["replicas"], 1);
    expect_status_patch(&mut handle).await;
    expect_event(&mut handle, "KEDAScaleTargetActivated").await;
    joined(task).await.expect("iterated");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn missing_name_label_is_added_before_the_hpa() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["metadata"]["labels"] = json!({"team": "a"});
    let task = spawn_reconcile(&ctx, &v);
    let (_, patch) = expect(&mut handle, Method::PATCH, SO_PATH, |_| {
        ok(with_finalizer(fixture()))
    })
    .await;
    assert_eq!(
        patch,
        json!({"metadata": {"labels": {"scaledobject.keda.sh/name": "web-so"}}})
    );
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(1))).await;
    expect(&mut handle, Method::GET, HPA_PATH, |_| {
        not_found("horizontalpodautoscalers", "keda-hpa-web-so")
    })
    .await;
    let (_, hpa) = expect(&mut handle, Method::PATCH, HPA_PATH, |b| ok(b.clone())).await;
    assert_eq!(hpa["metadata"]["labels"]["scaledobject.keda.sh/name"], "web-so");
    assert_eq!(hpa["metadata"]["labels"]["team"], "a");
    expect_status_patch(&mut handle).await;
    expect_event(&mut handle, "ScaledObjectReady").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn hpa_scaling_active_is_mirrored() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    v["status"]["hpaName"] = json!("keda-hpa-web-so");
    v["status"]["lastActiveTime"] = json!("2026-11-23T11:58:00Z");
    let task = spawn_iterate(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(3))).await;
    expect(&mut handle, Method::GET, HPA_PATH, |_| {
        ok(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa-web-so", "namespace": "ns"},
            "spec": {"maxReplicas": 100, "scaleTargetRef": {"kind": "Deployment", "name": "web"}},
            "status": {"desiredReplicas": 3, "conditions": [
                {"type": "ScalingActive", "status": "False", "reason": "FailedGetExternalMetric", "message": "no metric"}
            ]}
        }))
    })
    .await;
    let (_, status) = expect_status_patch(&mut handle).await;
    let hpa_active = condition(&status["status"], "HPAActive");
    assert_eq!(hpa_active["status"], "False");
    assert_eq!(hpa_active["reason"], "FailedGetExternalMetric");
    assert_eq!(hpa_active["message"], "HPA is not actively scaling: no metric");
    joined(task).await.expect("iterated");
    expect_quiet(&mut handle).await;
}

/// A loopback upstream answering `{"v": 7}` to every request, for a metrics-api trigger.
fn live_upstream() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten().take(16) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{\"v\": 7}",
            );
        }
    });
    format!("http://127.0.0.1:{port}/value")
}

/// Every read fails at once.
fn dead_upstream() -> String {
    common::net::refused_url("/value")
}

fn with_api_trigger(v: &mut Value, url: &str) {
    v["spec"]["triggers"] = json!([{"type": "metrics-api",
        "metadata": {"url": url, "valueLocation": "v", "targetValue": "10", "activationTargetValue": "1"}}]);
    v["spec"]["fallback"] = json!({"failureThreshold": 1, "replicas": 5});
}

#[tokio::test]
async fn fallback_activates_after_the_threshold_and_reports_it() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    with_api_trigger(&mut v, &dead_upstream());
    // One failure already recorded (by an earlier iteration, persisted in status).
    v["status"]["health"] = json!({"s0-metric-api-v": {"numberOfFailures": 1, "status": "Failing"}});
    let key = object_key(&so(&v));
    let task = spawn_iterate(&ctx, &v);
    // Fallback makes the trigger active: a target at zero is woken up.
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(0))).await;
    let (_, put) = expect(&mut handle, Method::PUT, SCALE_PATH, |b| ok(b.clone())).await;
    assert_eq!(put["spec"]["replicas"], 1);
    let (_, status) = expect_status_patch(&mut handle).await;
    let s = &status["status"];
    assert_eq!(
        s["health"]["s0-metric-api-v"],
        json!({"numberOfFailures": 2, "status": "Failing"})
    );
    assert_eq!(condition(s, "Fallback")["status"], "True");
    assert_eq!(condition(s, "Fallback")["reason"], "FallbackExists");
    assert_eq!(condition(s, "Active")["status"], "True");
    assert_eq!(condition(s, "Ready")["status"], "True");
    // KEDA reports the failed read even though fallback covers it.
    let ev = expect_event(&mut handle, "KEDAScalerFailed").await;
    assert_eq!(ev["type"], "Warning");
    expect_event(&mut handle, "KEDAScaleTargetActivated").await;
    let ev = expect_event(&mut handle, "ScaledObjectFallbackActivated").await;
    assert_eq!(ev["type"], "Warning");
    joined(task).await.expect("iterated");
    expect_quiet(&mut handle).await;
    // The counter lives on in the process: the metrics server's reads add to it under `ebb run`.
    assert_eq!(
        ctx.health
            .get(&key, "s0-metric-api-v")
            .and_then(|h| h.number_of_failures),
        Some(2)
    );
}

#[tokio::test]
async fn fallback_ends_on_the_first_success() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    with_api_trigger(&mut v, &live_upstream());
    v["status"]["health"] = json!({"s0-metric-api-v": {"numberOfFailures": 4, "status": "Failing"}});
    v["status"]["conditions"][2] = json!({"type": "Fallback", "status": "True", "reason": "FallbackExists",
        "message": "At least one trigger is falling back on this scaled object"});
    let task = spawn_iterate(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(5))).await;
    let (_, status) = expect_status_patch(&mut handle).await;
    let s = &status["status"];
    assert_eq!(
        s["health"]["s0-metric-api-v"],
        json!({"numberOfFailures": 0, "status": "Happy"})
    );
    assert_eq!(condition(s, "Fallback")["status"], "False");
    assert_eq!(condition(s, "Fallback")["reason"], "NoFallbackFound");
    assert_eq!(condition(s, "Active")["status"], "True", "7 > activation 1");
    let ev = expect_event(&mut handle, "ScaledObjectFallbackDeactivated").await;
    assert_eq!(ev["type"], "Normal");
    joined(task).await.expect("iterated");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn update_rewrites_the_hpa_only_when_the_spec_changed() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    v["status"]["hpaName"] = json!("keda-hpa-web-so");
    v["status"]["originalReplicaCount"] = json!(2);
    v["status"]["externalMetricNames"] = json!(["s0-cron-Etc-UTC-0011x-1011x"]);
    v["status"]["triggersTypes"] = json!("cron");
    // The HPA as the previous generation rendered it, as the API server returns it.
    let specs = |v: &Value| -> Vec<(usize, ebb::scalers::MetricSpec)> {
        ctx.registry.apply(&so(v));
        let entry = ctx.registry.get(&object_key(&so(v))).expect("registered");
        entry
            .triggers
            .iter()
            .flat_map(|t| {
                let s = t.scaler.as_ref().expect("cron scaler builds");
                s.metric_specs().into_iter().map(move |m| (t.index, m))
            })
            .collect()
    };
    let mut live =
        serde_json::to_value(render_hpa(&so(&v), &specs(&v), "test").expect("renders")).expect("JSON");
    live["metadata"]["resourceVersion"] = json!("55");
    live["metadata"]["uid"] = json!("0a1b2c3d-0000-4000-8000-0000000000aa");

    // Same spec: the HPA is read and left alone.
    let task = spawn_reconcile(&ctx, &v);
    let unchanged = live.clone();
    // The scale target is checked on every reconcile (it may have been deleted meanwhile).
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(2))).await;
    expect(&mut handle, Method::GET, HPA_PATH, move |_| ok(unchanged)).await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;

    // maxReplicaCount raised in generation 2: one apply carrying the new bound.
    v["metadata"]["generation"] = json!(2);
    v["spec"]["maxReplicaCount"] = json!(40);
    let task = spawn_reconcile(&ctx, &v);
    let old = live.clone();
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(2))).await;
    expect(&mut handle, Method::GET, HPA_PATH, move |_| ok(old)).await;
    let (query, hpa) = expect(&mut handle, Method::PATCH, HPA_PATH, |b| ok(b.clone())).await;
    assert!(query.contains("fieldManager=ebb-operator"), "{query}");
    assert_eq!(hpa["spec"]["maxReplicas"], 40);
    assert_eq!(hpa["spec"]["minReplicas"], live["spec"]["minReplicas"]);
    assert_eq!(hpa["spec"]["metrics"], live["spec"]["metrics"]);
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["kind"], "ScaledObject");
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

/// `/apis/argoproj.io/v1alpha1` as the API server lists it with Argo Rollouts installed.
fn argo_resources() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "argoproj.io/v1alpha1",
        "resources": [
            {"name": "rollouts", "singularName": "rollout", "namespaced": true, "kind": "Rollout",
             "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
             "shortNames": ["ro"], "categories": ["all"]},
            {"name": "rollouts/scale", "singularName": "", "namespaced": true, "group": "autoscaling",
             "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
            {"name": "rollouts/status", "singularName": "", "namespaced": true, "kind": "Rollout",
             "verbs": ["get", "patch", "update"]}
        ]
    })
}

#[tokio::test]
async fn custom_scale_targets_are_found_through_discovery() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["spec"]["scaleTargetRef"] =
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"});
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, "/apis/argoproj.io/v1alpha1", |_| {
        ok(argo_resources())
    })
    .await;
    let rollout_scale = "/apis/argoproj.io/v1alpha1/namespaces/ns/rollouts/web/scale";
    expect(&mut handle, Method::GET, rollout_scale, |_| ok(scale(2))).await;
    expect(&mut handle, Method::GET, HPA_PATH, |_| {
        not_found("horizontalpodautoscalers", "keda-hpa-web-so")
    })
    .await;
    let (_, hpa) = expect(&mut handle, Method::PATCH, HPA_PATH, |b| ok(b.clone())).await;
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"})
    );
    let (_, status) = expect_status_patch(&mut handle).await;
    assert_eq!(
        status["status"]["scaleTargetGVKR"],
        json!({"group": "argoproj.io", "version": "v1alpha1", "kind": "Rollout", "resource": "rollouts"})
    );
    assert_eq!(
        status["status"]["scaleTargetKind"],
        "argoproj.io/v1alpha1.Rollout"
    );
    expect_event(&mut handle, "ScaledObjectReady").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;

    // The plural is remembered: the next reconcile goes straight to /scale.
    v["status"] = status["status"].clone();
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, rollout_scale, |_| ok(scale(2))).await;
    let hpa_live = hpa.clone();
    expect(&mut handle, Method::GET, HPA_PATH, move |_| ok(hpa_live)).await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

#[tokio::test]
async fn an_unknown_scale_target_kind_fails_the_check() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["spec"]["scaleTargetRef"] =
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rolout", "name": "web"});
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, "/apis/argoproj.io/v1alpha1", |_| {
        ok(argo_resources())
    })
    .await;
    let (_, status) = expect_status_patch(&mut handle).await;
    let ready = condition(&status["status"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ScaledObjectCheckFailed");
    assert_eq!(
        ready["message"],
        "Failed to parse Group, Version, Kind, Resource: no matches for kind \"Rolout\" in version \"argoproj.io/v1alpha1\""
    );
    let ev = expect_event(&mut handle, "ScaledObjectCheckFailed").await;
    assert_eq!(ev["type"], "Warning");
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

/// Answers every request until `task` ends: scale reads with `replicas`, status patches with
/// the patched object, events as posted. Returns the task's outcome and the posted events.
/// (Waiting for the end, not for a quiet spell: a loaded machine can be quiet for a while.)
async fn serve_until_done<T>(handle: &mut Handle, replicas: i32, mut task: JoinHandle<T>) -> (T, Vec<Value>) {
    let mut events = Vec::new();
    loop {
        let (req, send) = tokio::select! {
            joined = &mut task => return (joined.expect("joined"), events),
            next = tokio::time::timeout(STEP, handle.next_request()) => {
                next.expect("a request or the end of the task").expect("service alive")
            }
        };
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let bytes = req.into_body().collect_bytes().await.expect("body");
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (code, reply) = match (method.as_str(), path.as_str()) {
            ("GET", SCALE_PATH) => ok(scale(replicas)),
            ("PATCH", p) if p == format!("{SO_PATH}/status") => status_reply(&body),
            ("POST", p) if p.ends_with("/events") => {
                events.push(body.clone());
                ok(body)
            }
            _ => panic!("unexpected request {method} {path}"),
        };
        let response = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
            .expect("response");
        send.send_response(response);
    }
}

#[tokio::test]
async fn a_failing_scaler_is_a_warning_event_naming_host_and_cause() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    looping(&mut v);
    let dead = dead_upstream();
    v["spec"]["triggers"] = json!([{"type": "metrics-api",
        "metadata": {"url": dead, "valueLocation": "v", "targetValue": "10"}}]);
    let task = spawn_iterate(&ctx, &v);
    let (iterated, events) = serve_until_done(&mut handle, 3, task).await;
    iterated.expect("iterated");
    let failed = events
        .iter()
        .find(|e| e["reason"] == "KEDAScalerFailed")
        .unwrap_or_else(|| panic!("no KEDAScalerFailed in {events:?}"));
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["note"], format!("GET {dead}: connection refused"));
    assert_eq!(failed["regarding"]["name"], "web-so");
}

#[tokio::test]
async fn pausing_a_running_loop_says_the_scalers_stopped() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["metadata"]["annotations"] = json!({"autoscaling.keda.sh/paused": "true"});
    // A scale loop is running for the object (spawned by an earlier reconcile).
    let idle = tokio::spawn(std::future::pending::<()>());
    ctx.loops.lock().expect("loops").insert(
        object_key(&so(&v)),
        ebb::operator::context::LoopHandle {
            generation: Some(1),
            abort: idle.abort_handle(),
        },
    );
    let task = spawn_reconcile(&ctx, &v);
    let ev = expect_event(&mut handle, "KEDAScalersStopped").await;
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["note"], "Stopped scalers watch");
    expect(&mut handle, Method::DELETE, HPA_PATH, |_| {
        ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
    })
    .await;
    expect_status_patch(&mut handle).await;
    expect_event(&mut handle, "ScaledObjectPaused").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
    assert!(
        idle.await.is_err_and(|e| e.is_cancelled()),
        "the loop was aborted"
    );
}

/// A context whose KEDA metrics land in a registry the test reads.
fn context_with_metrics() -> (Arc<Context>, Handle, prometheus_client::registry::Registry) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let registry = Arc::new(Registry::new(RegistryConfig::default()));
    let cache = Arc::new(MetricCache::new(Duration::from_secs(5)));
    let mut prom = prometheus_client::registry::Registry::default();
    let mut ctx = Context::new(client, registry, cache);
    ctx.spawn_loops = false;
    ctx.metrics = Some(Arc::new(ebb::keda_metrics::KedaMetrics::register(&mut prom)));
    (Arc::new(ctx), handle, prom)
}

fn metrics_text(prom: &prometheus_client::registry::Registry) -> String {
    ebb::keda_metrics::encode_text(prom).expect("encodes")
}

fn auth_fixture(file: &str) -> Value {
    let text = std::fs::read_to_string(format!("tests/fixtures/operator/{file}")).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[tokio::test]
async fn trigger_authentications_get_keda_finalizer_events_and_count() {
    use ebb::{
        crd::TriggerAuthentication,
        operator::trigger_auth::{AuthContext, reconcile as reconcile_auth},
    };
    const TA_PATH: &str = "/apis/keda.sh/v1alpha1/namespaces/ns/triggerauthentications/db-auth";
    let (ctx, mut handle, prom) = context_with_metrics();
    let auth = Arc::new(AuthContext::new(ctx.clone()));
    let spawn = |v: &Value| {
        let ta: TriggerAuthentication = serde_json::from_value(v.clone()).expect("TriggerAuthentication");
        let auth = auth.clone();
        tokio::spawn(async move { reconcile_auth(Arc::new(ta), auth).await })
    };

    // New: KEDA's finalizer first, nothing else.
    let v = auth_fixture("triggerauthentication.json");
    let task = spawn(&v);
    let (_, patch) = expect(&mut handle, Method::PATCH, TA_PATH, |_| {
        ok(with_finalizer(v.clone()))
    })
    .await;
    assert!(patch.to_string().contains(FINALIZER), "{patch}");
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;

    // With the finalizer, generation 1: Added, counted once however often it is reconciled.
    let v = with_finalizer(v);
    let task = spawn(&v);
    let ev = expect_event(&mut handle, "TriggerAuthenticationAdded").await;
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["note"], "New TriggerAuthentication configured");
    assert_eq!(ev["regarding"]["kind"], "TriggerAuthentication");
    joined(task).await.expect("reconciled");
    // Reconciled again (a restart re-lists it): the same event again, as a series update.
    let task = spawn(&v);
    let (req, send) = tokio::time::timeout(STEP, handle.next_request())
        .await
        .expect("the repeated event")
        .expect("service alive");
    assert_eq!(req.method(), Method::PATCH);
    assert!(req.uri().path().starts_with(EVENTS_PATH), "{}", req.uri());
    send.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&ev).expect("JSON")))
            .expect("response"),
    );
    joined(task).await.expect("reconciled");
    let gauge = "keda_resource_registered_total{type=\"trigger_authentication\",namespace=\"ns\"}";
    assert!(
        metrics_text(&prom).contains(&format!("{gauge} 1")),
        "{}",
        metrics_text(&prom)
    );

    // A later generation: KEDA's update event, reason and message as KEDA spells them.
    let mut updated = v.clone();
    updated["metadata"]["generation"] = json!(2);
    let task = spawn(&updated);
    let ev = expect_event(&mut handle, "ClusterTriggerAuthenticationUpdated").await;
    assert_eq!(ev["note"], "ClusterTriggerAuthentication db-auth is updated");
    joined(task).await.expect("reconciled");

    // Deleted: the event, then the finalizer goes, and the gauge comes down.
    let mut deleted = updated.clone();
    deleted["metadata"]["deletionTimestamp"] = json!("2026-11-23T11:59:00Z");
    let task = spawn(&deleted);
    let ev = expect_event(&mut handle, "TriggerAuthenticationDeleted").await;
    assert_eq!(ev["note"], "TriggerAuthentication was deleted");
    let (_, patch) = expect(&mut handle, Method::PATCH, TA_PATH, |_| ok(updated.clone())).await;
    assert!(patch.to_string().contains("remove"), "{patch}");
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
    assert!(
        metrics_text(&prom).contains(&format!("{gauge} 0")),
        "{}",
        metrics_text(&prom)
    );
}

#[tokio::test]
async fn cluster_trigger_authentications_are_counted_under_default() {
    use ebb::{
        crd::ClusterTriggerAuthentication,
        operator::trigger_auth::{AuthContext, reconcile as reconcile_auth},
    };
    const CTA_PATH: &str = "/apis/keda.sh/v1alpha1/clustertriggerauthentications/shared-auth";
    let (ctx, mut handle, prom) = context_with_metrics();
    let auth = Arc::new(AuthContext::new(ctx.clone()));
    let v = with_finalizer(auth_fixture("clustertriggerauthentication.json"));
    let cta: ClusterTriggerAuthentication = serde_json::from_value(v.clone()).expect("CTA");
    let task = tokio::spawn(reconcile_auth(Arc::new(cta), auth.clone()));
    // A cluster-scoped object's events go to namespace default.
    let (_, ev) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
        |b| ok(b.clone()),
    )
    .await;
    assert_eq!(ev["reason"], "ClusterTriggerAuthenticationAdded");
    assert_eq!(ev["note"], "New ClusterTriggerAuthentication configured");
    joined(task).await.expect("reconciled");
    assert!(
        metrics_text(&prom).contains(
            "keda_resource_registered_total{type=\"cluster_trigger_authentication\",namespace=\"default\"} 1"
        ),
        "{}",
        metrics_text(&prom)
    );
    let mut deleted = v.clone();
    deleted["metadata"]["deletionTimestamp"] = json!("2026-11-23T11:59:00Z");
    let cta: ClusterTriggerAuthentication = serde_json::from_value(deleted).expect("CTA");
    let task = tokio::spawn(reconcile_auth(Arc::new(cta), auth));
    let (_, ev) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
        |b| ok(b.clone()),
    )
    .await;
    assert_eq!(ev["reason"], "ClusterTriggerAuthenticationDeleted");
    assert_eq!(ev["note"], "ClusterTriggerAuthentication was deleted");
    expect(&mut handle, Method::PATCH, CTA_PATH, |_| ok(v.clone())).await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}

/// Runs one reconcile of `v` (finalizer already on) against an API server that has its scale
/// target and no HPA, answering requests in whatever order they come; returns the HPA body
/// the operator applied (if any) and the events it published.
async fn reconcile_and_capture(
    ctx: &Arc<Context>,
    handle: &mut Handle,
    v: &Value,
) -> (Option<Value>, Vec<Value>) {
    let ns = v["metadata"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_string();
    let name = v["metadata"]["name"].as_str().expect("name").to_string();
    let so_path = format!("/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{name}");
    let mut task = spawn_reconcile(ctx, v);
    let mut hpa = None;
    let mut events = Vec::new();
    loop {
        tokio::select! {
            joined = &mut task => {
                joined.expect("joined").expect("reconciled");
                break;
            }
            next = tokio::time::timeout(STEP, handle.next_request()) => {
                let (req, send) = next.expect("a request or the end of the reconcile").expect("service alive");
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let bytes = req.into_body().collect_bytes().await.expect("body");
                let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
                let (code, reply) = match (method.as_str(), path.as_str()) {
                    ("PATCH", p) if p == so_path => {
                        let mut o = v.clone();
                        o["metadata"]["labels"]["scaledobject.keda.sh/name"] = json!(name);
                        ok(o)
                    }
                    ("PATCH", p) if p == format!("{so_path}/status") => {
                        let mut o = v.clone();
                        o["status"] = body["status"].clone();
                        ok(o)
                    }
                    ("GET", p) if p.starts_with(&format!("/apis/apps/v1/namespaces/{ns}/")) && p.ends_with("/scale") => ok(scale(1)),
                    ("GET", p) if p.contains("/horizontalpodautoscalers/") => not_found("horizontalpodautoscalers", "x"),
                    ("PATCH", p) if p.contains("/horizontalpodautoscalers/") => {
                        hpa = Some(body.clone());
                        ok(body)
                    }
                    ("POST", EVENTS_PATH) | ("POST", _) if path.ends_with("/events") => {
                        events.push(body.clone());
                        ok(body)
                    }
                    other => panic!("unexpected request {other:?}"),
                };
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
                    .expect("response");
                send.send_response(response);
            }
        }
    }
    (hpa, events)
}

/// Every ScaledObject fixture, as JSON, with the documents its TriggerAuthentications need.
fn scaled_object_fixtures() -> Vec<(std::path::PathBuf, Value)> {
    let mut out = Vec::new();
    for dir in ["tests/fixtures/keda", "tests/fixtures/operator"] {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .expect("fixture dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("fixture");
            let doc: serde_yaml::Value = match serde_yaml::from_str(&text) {
                Ok(d) => d,
                Err(_) => continue,
            };
            if doc.get("kind").and_then(|k| k.as_str()) == Some("ScaledObject") {
                out.push((path, serde_json::to_value(doc).expect("JSON")));
            }
        }
    }
    assert!(out.len() >= 12, "fixtures found: {}", out.len());
    out
}

fn auth_documents() -> (String, Vec<serde_yaml::Value>) {
    let path = "tests/fixtures/keda/aws-credentials.auth.yaml";
    let text = std::fs::read_to_string(path).expect("auth fixture");
    let docs = text
        .split("\n---\n")
        .map(|d| serde_yaml::from_str(d).expect("auth document"))
        .collect();
    (path.to_string(), docs)
}

/// Issue 9 item 1: `ebb render` prints, field for field, the HPA the operator applies, for
/// every fixture (KEDA labels the ScaledObject with its name first, so both HPAs carry it).
#[tokio::test]
async fn render_prints_the_hpa_the_operator_applies_for_every_fixture() {
    let (auth_path, auth_docs) = auth_documents();
    for (path, so_json) in scaled_object_fixtures() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["render", "--version-label", "test", "-f"])
            .arg(&path)
            .arg(&auth_path)
            .output()
            .expect("ebb render runs");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered: Value = serde_yaml::from_slice(&out.stdout).expect("one HPA document");

        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let registry = Arc::new(Registry::new(RegistryConfig::default()));
        registry.configure(
            Arc::new(
                ebb::resolver::files::LocalResolver::from_documents(&auth_docs)
                    .with_cluster_object_namespace("ebb"),
            ),
            Default::default(),
        );
        let mut ctx = Context::new(
            Client::new(svc, "default"),
            registry,
            Arc::new(MetricCache::new(Duration::from_secs(5))),
        );
        ctx.spawn_loops = false;
        ctx.version = "test".to_string();
        ctx.clock = Arc::new(now);
        let ctx = Arc::new(ctx);
        let (applied, _) = reconcile_and_capture(&ctx, &mut handle, &with_finalizer(so_json)).await;
        let applied = applied.unwrap_or_else(|| panic!("{}: the operator applied no HPA", path.display()));
        assert_eq!(applied, rendered, "{}", path.display());
        assert_eq!(
            applied["metadata"]["labels"]["scaledobject.keda.sh/name"],
            so_json_name(&path),
            "{}",
            path.display()
        );
    }
}

fn so_json_name(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("fixture");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("fixture");
    json!(doc["metadata"]["name"].as_str().expect("name"))
}

/// Item 2: a deprecated `metadata.type` is accepted, with a Warning event (and a log line).
#[tokio::test]
async fn deprecated_cpu_memory_type_is_applied_with_a_warning_event() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["spec"]["minReplicaCount"] = json!(1);
    v["spec"]["triggers"] = json!([{"type": "memory", "metadata": {"type": "Utilization", "value": "60"}}]);
    let (hpa, events) = reconcile_and_capture(&ctx, &mut handle, &v).await;
    let hpa = hpa.expect("HPA applied");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"],
        json!({"name": "memory", "target": {"type": "Utilization", "averageUtilization": 60}})
    );
    let warning = events
        .iter()
        .find(|e| e["reason"] == "ScaledObjectDeprecatedSetting")
        .unwrap_or_else(|| panic!("deprecation event in {events:?}"));
    assert_eq!(warning["type"], "Warning");
    assert_eq!(
        warning["note"],
        "spec.triggers[0].metadata.type: The 'type' setting is DEPRECATED and will be removed in v2.18 - Use 'metricType' instead."
    );
}

/// Item 7: an unknown cron timezone fails the check at reconcile, not at the first read.
#[tokio::test]
async fn unknown_cron_timezone_fails_the_check() {
    let (ctx, mut handle) = context();
    let mut v = with_finalizer(fixture());
    v["spec"]["triggers"][0]["metadata"]["timezone"] = json!("Europe/Berln");
    let task = spawn_reconcile(&ctx, &v);
    expect(&mut handle, Method::GET, SCALE_PATH, |_| ok(scale(1))).await;
    let (_, status) = expect_status_patch(&mut handle).await;
    let ready = condition(&status["status"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(
        ready["message"],
        "error parsing cron metadata: unable to load timezone. Error: unknown time zone Europe/Berln"
    );
    expect_event(&mut handle, "ScaledObjectCheckFailed").await;
    joined(task).await.expect("reconciled");
    expect_quiet(&mut handle).await;
}
