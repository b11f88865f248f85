//! `ebb run` (metrics server + operator in one process) against a scripted API server on kube's
//! mocked client: list answers carry the objects, watches stay open, writes are recorded. The
//! HPA's reads and the scale loop share one engine, so both feed one fallback counter.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::net::{PORT_ATTEMPTS, free_port, refused_url};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use common::scripted_api::Pending;

const SO_PATH: &str = "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/web-so";

/// What the scripted API server saw and holds.
#[derive(Default)]
struct Server {
    so: Value,
    hpa: Option<Value>,
    /// (field manager, body) of every ScaledObject status patch.
    status_patches: Vec<(String, Value)>,
    /// Open watches: never answered, so the watchers wait as on a quiet cluster.
    watches: Vec<Pending>,
    unexpected: Vec<String>,
}

fn list(api_version: &str, kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn field_manager(query: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "fieldManager")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Answers one request from the scripted state; `None` keeps it open (a watch).
fn answer(
    server: &mut Server,
    method: &Method,
    path: &str,
    query: &str,
    body: &Value,
) -> Option<(StatusCode, Value)> {
    if query.contains("watch=true") || query.contains("watch=1") {
        return None;
    }
    let ok = |v: Value| Some((StatusCode::OK, v));
    match (method.as_str(), path) {
        ("GET", "/apis/keda.sh/v1alpha1/scaledobjects") => ok(list(
            "keda.sh/v1alpha1",
            "ScaledObjectList",
            vec![server.so.clone()],
        )),
        ("GET", "/apis/keda.sh/v1alpha1/scaledjobs") => ok(list("keda.sh/v1alpha1", "ScaledJobList", vec![])),
        ("GET", "/apis/http.keda.sh/v1alpha1/httpscaledobjects") => {
            ok(list("http.keda.sh/v1alpha1", "HTTPScaledObjectList", vec![]))
        }
        ("GET", "/apis/keda.sh/v1alpha1/triggerauthentications") => {
            ok(list("keda.sh/v1alpha1", "TriggerAuthenticationList", vec![]))
        }
        ("GET", "/apis/keda.sh/v1alpha1/clustertriggerauthentications") => ok(list(
            "keda.sh/v1alpha1",
            "ClusterTriggerAuthenticationList",
            vec![],
        )),
        ("GET", "/api/v1/secrets") => ok(list("v1", "SecretList", vec![])),
        ("GET", "/api/v1/configmaps") => ok(list("v1", "ConfigMapList", vec![])),
        ("GET", "/api/v1/pods") => ok(list("v1", "PodList", vec![])),
        ("GET", "/api/v1/serviceaccounts") => ok(list("v1", "ServiceAccountList", vec![])),
        ("GET", "/apis/apps/v1/deployments") => ok(list("apps/v1", "DeploymentList", vec![])),
        ("GET", "/apis/apps/v1/statefulsets") => ok(list("apps/v1", "StatefulSetList", vec![])),
        ("GET", "/apis/autoscaling/v2/horizontalpodautoscalers") => ok(list(
            "autoscaling/v2",
            "HorizontalPodAutoscalerList",
            server.hpa.iter().cloned().collect(),
        )),
        ("GET", "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication") => Some((
            StatusCode::NOT_FOUND,
            status(
                404,
                "NotFound",
                "configmaps \"extension-apiserver-authentication\" not found",
            ),
        )),
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
            let mut review = body.clone();
            review["status"] = json!({"authenticated": true, "user": {
                "username": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                "groups": ["system:serviceaccounts", "system:authenticated"]}});
            ok(review)
        }
        ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews") => {
            let mut review = body.clone();
            review["status"] = json!({"allowed": true});
            ok(review)
        }
        ("GET", SO_PATH) => ok(server.so.clone()),
        ("GET", "/apis/apps/v1/namespaces/ns/deployments/web/scale") => ok(json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"replicas": 2}, "status": {"replicas": 2, "selector": "app=web"}})),
        ("GET", "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/keda-hpa-web-so") => {
            match &server.hpa {
                Some(h) => ok(h.clone()),
                None => Some((
                    StatusCode::NOT_FOUND,
                    status(
                        404,
                        "NotFound",
                        "horizontalpodautoscalers.autoscaling \"keda-hpa-web-so\" not found",
                    ),
                )),
            }
        }
        ("PATCH", "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/keda-hpa-web-so") => {
            server.hpa = Some(body.clone());
            ok(body.clone())
        }
        ("PATCH", p) if p == format!("{SO_PATH}/status") => {
            server.status_patches.push((field_manager(query), body.clone()));
            if let Some(obj) = server.so["status"].as_object_mut()
                && let Some(patch) = body["status"].as_object()
            {
                for (k, v) in patch {
                    obj.insert(k.clone(), v.clone());
                }
            } else {
                server.so["status"] = body["status"].clone();
            }
            ok(server.so.clone())
        }
        ("POST", p) if p.ends_with("/events") => ok(body.clone()),
        _ => {
            server.unexpected.push(format!("{method} {path}?{query}"));
            Some((StatusCode::NOT_FOUND, status(404, "NotFound", "not scripted")))
        }
    }
}

fn scaled_object(dead_url: &str) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": "web-so", "namespace": "ns", "uid": "0a1b2c3d-0000-4000-8000-000000000001",
            "generation": 1, "resourceVersion": "100", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"scaledobject.keda.sh/name": "web-so"},
            "finalizers": ["finalizer.keda.sh"]
        },
        "spec": {
            "scaleTargetRef": {"name": "web"},
            // One loop iteration at start, then none while the test reads.
            "pollingInterval": 600,
            "fallback": {"failureThreshold": 2, "replicas": 4},
            "triggers": [{"type": "metrics-api",
                "metadata": {"url": dead_url, "valueLocation": "v", "targetValue": "10"}}]
        }
    })
}

/// Generous for a loaded 2-core machine; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(60);

async fn wait_for(server: &Arc<Mutex<Server>>, what: &str, done: impl Fn(&Server) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        {
            let s = server.lock().unwrap_or_else(|p| p.into_inner());
            if done(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; unexpected requests: {:?}; status patches: {:?}",
                s.unexpected,
                s.status_patches
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_reads_and_the_scale_loop_share_one_fallback_counter() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dead = refused_url("/value");
    let server = Arc::new(Mutex::new(Server {
        so: scaled_object(&dead),
        ..Server::default()
    }));
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    common::scripted_api::serve(handle, server.clone(), answer, |s, _, send| s.watches.push(send));
    let client = kube::Client::new(svc, "default");

    let dir = tempfile::tempdir().expect("tempdir");
    let (trigger, signal) = ebb::shutdown::channel();
    // Ports picked free just before; started again on new ones if another process took one.
    let mut started = None;
    for _ in 0..PORT_ATTEMPTS {
        let (secure, admin) = (free_port(), free_port());
        let cli = <ebb::cli::Cli as clap::Parser>::parse_from([
            "ebb",
            "run",
            "--secure-port",
            &secure.to_string(),
            "--bind-address",
            "127.0.0.1",
            "--metrics-port",
            &admin.to_string(),
            "--metrics-bind-address",
            "127.0.0.1",
            "--cert-dir",
            &dir.path().display().to_string(),
        ]);
        let ebb::cli::Command::Run(args) = cli.command else {
            panic!("parsed as run");
        };
        assert!(!args.leader.leader_elect);
        let running = tokio::spawn(ebb::run::run_with_client(*args, client.clone(), signal.clone()));
        // Both ports are bound before anything else starts, so the admin port accepting means
        // the server is up; binding fails at once, ending the task.
        let deadline = Instant::now() + DEADLINE;
        while !running.is_finished()
            && tokio::net::TcpStream::connect(("127.0.0.1", admin))
                .await
                .is_err()
        {
            assert!(Instant::now() < deadline, "ebb run did not bind its ports");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if running.is_finished() {
            let result = running.await.expect("joined");
            eprintln!("ebb run ended at start on ports {secure}/{admin}: {result:?}; new ports");
            continue;
        }
        started = Some((secure, admin, running));
        break;
    }
    let (secure, admin, running) = started.expect("ebb run could not bind free ports");

    // The operator half: the HPA KEDA would write, then the scale loop's first iteration,
    // whose read of the dead upstream is failure number one.
    wait_for(&server, "the HPA", |s| s.hpa.is_some()).await;
    wait_for(&server, "the scale loop's status", |s| {
        s.status_patches.iter().any(|(m, _)| m == "ebb-scale-loop")
    })
    .await;
    {
        let s = server.lock().unwrap_or_else(|p| p.into_inner());
        let hpa = s.hpa.as_ref().expect("hpa");
        assert_eq!(
            hpa["spec"]["metrics"][0]["external"]["metric"]["name"],
            "s0-metric-api-v"
        );
        let (_, loop_patch) = s
            .status_patches
            .iter()
            .find(|(m, _)| m == "ebb-scale-loop")
            .expect("loop patch");
        assert_eq!(
            loop_patch["status"]["health"]["s0-metric-api-v"],
            json!({"numberOfFailures": 1, "status": "Failing"})
        );
    }

    // The metrics-server half, read as kube-apiserver's aggregator would (bearer token → TokenReview).
    // Its self-signed certificate is made while the operator half already runs: wait until the
    // server answers over TLS with it (any HTTP answer will do).
    let cert_path = dir.path().join(ebb::tls::certgen::CERT_FILE);
    let deadline = Instant::now() + DEADLINE;
    let http = loop {
        if let Ok(cert) = std::fs::read(&cert_path) {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .tls_certs_only([reqwest::Certificate::from_pem(&cert).expect("cert")])
                .build()
                .expect("client");
            let probe = http.get(format!("https://localhost:{secure}/healthz")).send();
            if probe.await.is_ok() {
                break http;
            }
        }
        assert!(Instant::now() < deadline, "ebb run did not serve TLS in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = format!(
        "https://localhost:{secure}/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-metric-api-v?labelSelector=scaledobject.keda.sh%2Fname%3Dweb-so"
    );
    let read = || async {
        let r = http
            .get(&url)
            .bearer_auth("hpa-token")
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    // Failure two (loop one + this read) is still within failureThreshold 2: an error.
    let (code, body) = read().await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("web-so"), "{body}");
    // Failure three is past it: 10 (target) × 4 (fallback.replicas). A metrics server counting
    // only its own reads would still answer an error here.
    let (code, body) = read().await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["items"][0]["value"], "40", "{body}");

    // `ebb explain`'s view on the admin port, in cluster mode: the same shared counter.
    let body = reqwest::get(format!("http://127.0.0.1:{admin}/debug/scaledobjects/ns/web-so"))
        .await
        .expect("admin port")
        .text()
        .await
        .expect("body");
    let view: Value = serde_json::from_str(&body).expect("a view");
    assert_eq!(view["source"], "metrics-server");
    assert_eq!(view["triggers"][0]["consecutiveFailures"], 3, "{view:#}");
    assert_eq!(view["triggers"][0]["fallbackActive"], true, "{view:#}");
    assert!(
        view["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("s0-metric-api-v fails (3 in a row; fallback answers instead)")),
        "{view:#}"
    );

    let unexpected = server
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unexpected
        .clone();
    assert!(unexpected.is_empty(), "unscripted requests: {unexpected:?}");
    trigger.fire();
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
}
