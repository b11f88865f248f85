//! `ebb explain` end to end.
//!
//! - The admin route `/debug/scaledobjects/NAMESPACE/NAME` of `ebb metrics-server --local` with
//!   real scalers: metrics-api on a loopback server (behind a TriggerAuthentication), cron, the
//!   real Prometheus, and a metrics-api trigger whose URL refuses; a paused object and a broken
//!   one; then the `ebb explain --admin` binary's verdict lines. Every shipped example answers.
//! - The cluster path against a scripted API server on kube's mocked client, fed the JSON the
//!   API server returns (ScaledObject, HPA with conditions, Deployment and its `/scale`).

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    net::{Banner, http_get, refused_url},
    scripted_api::{self, Handle},
};
use ebb::{
    scaling::explain::{ObjectView, TriggerView},
    tools::explain::{cluster, render},
};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// Generous for a loaded 2-core machine; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(60);

const TOKEN: &str = "s3cr3t-t0ken";

/// Kills the server when the test ends, however it ends.
struct Ebb {
    child: Child,
    admin: u16,
    state: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Ebb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ebb metrics-server --local [DIR]` on ports it picks, ready.
fn start_local(objects: Option<&str>) -> Ebb {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args(["metrics-server", "--local"]);
    if let Some(docs) = objects {
        let objects = dir.path().join("objects");
        std::fs::create_dir_all(&objects).expect("mkdir");
        std::fs::write(objects.join("so.yaml"), docs).expect("write");
        cmd.arg(&objects);
    }
    let state = dir.path().join("state");
    cmd.arg("--state-dir")
        .arg(&state)
        .args([
            "--bind-address",
            "127.0.0.1",
            "--metrics-bind-address",
            "127.0.0.1",
        ])
        .args(["--secure-port", "0", "--metrics-port", "0"])
        .args(["--local-poll-interval", "100", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start ebb");
    let banner: Banner = match common::net::read_banner(&mut child, DEADLINE) {
        Ok(b) => b,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}");
        }
    };
    let ebb = Ebb {
        child,
        admin: banner.admin,
        state,
        _dir: dir,
    };
    let deadline = Instant::now() + DEADLINE;
    while !http_get(ebb.admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "ebb did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    ebb
}

/// Status code and body of `GET path` on the admin port.
fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path)
}

fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The view of `ns/name`, once the object is registered (the directory is polled).
fn view(port: u16, ns: &str, name: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, body) = get(port, &format!("/debug/scaledobjects/{ns}/{name}"));
        if code == 200 {
            return serde_json::from_str(&body).expect("JSON view");
        }
        assert!(Instant::now() < deadline, "no view of {ns}/{name}: {code} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn explain_bin(port: u16, ns: &str, name: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args([
            "explain",
            "--admin",
            &format!("http://127.0.0.1:{port}"),
            "-n",
            ns,
            name,
        ])
        .args(extra)
        .output()
        .expect("run ebb explain")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A metrics-api upstream answering `{"v": 42}` to requests bearing the token, 401 otherwise;
/// counts the requests it answered.
fn upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = String::from_utf8_lossy(&head)
                    .to_ascii_lowercase()
                    .contains(&format!("authorization: bearer {TOKEN}"));
                counted.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if ok {
                    ("200 OK", "{\"v\": 42}")
                } else {
                    ("401 Unauthorized", "")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (port, hits)
}

fn objects(upstream: u16, prometheus: &str) -> String {
    let refused = refused_url("/v");
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: api-token, namespace: team}}
data: {{token: czNjcjN0LXQwa2Vu}}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: api-auth, namespace: team}}
spec:
  secretTargetRef:
  - {{parameter: token, name: api-token, key: token}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: mixed, namespace: team}}
spec:
  scaleTargetRef: {{name: worker}}
  pollingInterval: 600
  maxReplicaCount: 4
  fallback: {{failureThreshold: 1, replicas: 3}}
  triggers:
  - type: metrics-api
    useCachedMetrics: true
    authenticationRef: {{name: api-auth}}
    metadata: {{url: "http://127.0.0.1:{upstream}/v", valueLocation: v, targetValue: "10", activationTargetValue: "5", authMode: bearer}}
  - type: cron
    metadata: {{timezone: Etc/UTC, start: "0 0 1 1 *", end: "1 0 1 1 *", desiredReplicas: "3"}}
  - type: prometheus
    metadata: {{serverAddress: "{prometheus}", query: 'ebb_test_queue_depth{{queue="jobs"}}', threshold: "10"}}
  - type: metrics-api
    metadata: {{url: "{refused}", valueLocation: v, targetValue: "10"}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: held
  namespace: team
  annotations: {{autoscaling.keda.sh/paused-replicas: "2"}}
spec:
  scaleTargetRef: {{name: held}}
  triggers:
  - type: metrics-api
    authenticationRef: {{name: api-auth}}
    metadata: {{url: "http://127.0.0.1:{upstream}/v", valueLocation: v, targetValue: "10", authMode: bearer}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: broken, namespace: team}}
spec:
  scaleTargetRef: {{name: broken}}
  triggers:
  - type: prometheus
    metadata: {{query: up, threshold: "1"}}
  - type: metrics-api
    authenticationRef: {{name: missing-auth}}
    metadata: {{url: "http://127.0.0.1:{upstream}/v", valueLocation: v, targetValue: "10", authMode: bearer}}
"#
    )
}

/// One read of `metric` through the external metrics API, as the HPA reads it (steps the
/// fallback counter).
fn kubectl_read(state: &Path, ns: &str, metric: &str, object: &str) -> Output {
    let bin = std::env::var("EBB_KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(state.join("kubeconfig"))
        .args([
            "--request-timeout",
            "20s",
            "get",
            "--raw",
            &format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{object}"
            ),
        ])
        .output()
        .expect("kubectl must be installed (scripts/test installs it)")
}

#[test]
fn the_admin_endpoint_explains_real_scalers_failing_paused_and_broken_objects() {
    let prom = common::prometheus::shared();
    let (port, hits) = upstream();
    let ebb = start_local(Some(&objects(port, &prom.url)));

    // The failing trigger is read once as the HPA reads it: one failure, past failureThreshold 1.
    let failing = "s3-metric-api-v";
    let _ = view(ebb.admin, "team", "mixed");
    // KEDA's fallback answers once failures exceed failureThreshold (1): the first read fails,
    // the second is answered by fallback.
    let read = kubectl_read(&ebb.state, "team", failing, "mixed");
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("connection refused"),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let read = kubectl_read(&ebb.state, "team", failing, "mixed");
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));

    let v = view(ebb.admin, "team", "mixed");
    assert_eq!(v["source"], "local");
    let t = &v["triggers"];
    assert_eq!(t.as_array().map(Vec::len), Some(4), "{v:#}");
    // metrics-api behind the TriggerAuthentication: the field's name, never its value.
    assert_eq!(t[0]["metric"], "s0-metric-api-v");
    assert_eq!(
        (t[0]["value"].as_f64(), t[0]["active"].as_bool()),
        (Some(42.0), Some(true))
    );
    assert_eq!(
        (t[0]["target"].as_f64(), t[0]["targetType"].as_str()),
        (Some(10.0), Some("AverageValue"))
    );
    assert_eq!(t[0]["activationThreshold"].as_f64(), Some(5.0));
    assert_eq!(t[0]["authFields"], json!(["token"]));
    assert!(
        t[0]["valueAgeSeconds"]
            .as_f64()
            .is_some_and(|a| (0.0..600.0).contains(&a))
    );
    assert!(!v.to_string().contains(TOKEN), "a secret value in the view: {v}");
    // useCachedMetrics: the second view is served from the cache, no second upstream call.
    assert_eq!(t[0]["valueSource"], "cache");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // cron, outside its window.
    assert!(t[1]["metric"].as_str().is_some_and(|m| m.starts_with("s1-cron-")));
    assert_eq!(
        (t[1]["value"].as_f64(), t[1]["active"].as_bool()),
        (Some(0.0), Some(false))
    );
    // The real Prometheus; a second view within pollingInterval reuses the first read.
    assert_eq!(t[2]["metric"], "s2-prometheus");
    assert_eq!(t[2]["value"].as_f64(), Some(42.0));
    assert_eq!(t[2]["valueSource"], "recent read");
    // The refusing URL: the error, the counter the HPA read stepped, fallback in force.
    assert_eq!(t[3]["metric"], failing);
    assert!(t[3]["value"].is_null());
    assert!(
        t[3]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{:#}",
        t[3]
    );
    assert_eq!(t[3]["consecutiveFailures"].as_i64(), Some(2));
    assert_eq!(t[3]["fallbackActive"].as_bool(), Some(true));
    let verdict = v["verdict"].as_str().expect("verdict");
    assert!(
        verdict.starts_with(
            "replicas unknown: s0-metric-api-v = 42 against an average target of 10 per pod → 5; s1-cron-"
        ),
        "{verdict}"
    );
    assert!(verdict.contains("is inactive (0 ≤ 0); s2-prometheus = 42 against an average target of 10 per pod → 5; s3-metric-api-v fails (2 in a row; fallback answers instead): "), "{verdict}");
    assert!(
        verdict.ends_with("limited by maxReplicaCount=4; the HPA would want 4"),
        "{verdict}"
    );

    // The paused and the broken object answer with a view that says so.
    let held = view(ebb.admin, "team", "held");
    assert_eq!(held["pause"]["pausedReplicas"], "2");
    assert_eq!(
        held["verdict"],
        "replicas unknown: paused at 2 replicas (autoscaling.keda.sh/paused-replicas); nothing scales it"
    );
    let broken = view(ebb.admin, "team", "broken");
    let b = broken["triggers"].as_array().expect("triggers");
    assert!(
        b[0]["broken"]
            .as_str()
            .is_some_and(|e| e.contains("serverAddress")),
        "{broken:#}"
    );
    assert!(
        b[1]["broken"]
            .as_str()
            .is_some_and(|e| e.contains("missing-auth")),
        "{broken:#}"
    );
    assert!(
        broken["verdict"].as_str().is_some_and(|v| v
            .starts_with("replicas unknown: broken: trigger 0 (prometheus) cannot be built: ")
            && v.contains("broken: trigger 1 (metrics-api) cannot be built: ")),
        "{broken:#}"
    );

    // The CLI prints the verdict first, then a row per trigger; --output json is the view.
    let out = explain_bin(ebb.admin, "team", "mixed", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("replicas unknown: s0-metric-api-v = 42 against"),
        "{text}"
    );
    assert!(lines[2].starts_with("TRIGGER"), "{text}");
    assert!(
        lines[3].starts_with("s0 ") && lines[3].contains("cache") && lines[3].ends_with("token"),
        "{text}"
    );
    assert!(
        lines[6].starts_with("s3 ") && lines[6].contains("2 (fallback)"),
        "{text}"
    );
    let out = explain_bin(ebb.admin, "team", "held", &[]);
    assert!(
        stdout(&out).starts_with("replicas unknown: paused at 2 replicas"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("pause: paused-replicas=2"),
        "{}",
        stdout(&out)
    );
    let out = explain_bin(ebb.admin, "team", "broken", &["--output", "json"]);
    let parsed: ObjectView = serde_json::from_slice(&out.stdout).expect("the CLI's JSON is a view");
    assert_eq!(parsed.triggers.len(), 2);
    let out = explain_bin(ebb.admin, "team", "absent", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("scaledobjects.keda.sh \"absent\" not found in namespace \"team\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_debug_route_answers_bad_requests_with_a_status_and_keeps_serving() {
    let ebb = start_local(Some(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: nightly, namespace: team}\n\
         spec:\n  scaleTargetRef: {name: nightly}\n  triggers:\n  - type: cron\n    \
         metadata: {timezone: Etc/UTC, start: \"0 0 1 1 *\", end: \"1 0 1 1 *\", desiredReplicas: \"3\"}\n",
    ));
    let _ = view(ebb.admin, "team", "nightly");
    let (code, body) = get(ebb.admin, "/debug/scaledobjects/team/absent");
    let status: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(code, 404);
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_i64()
        ),
        (Some("Status"), Some("NotFound"), Some(404))
    );
    assert_eq!(status["details"]["kind"], "scaledobjects");
    for (path, code) in [
        ("/debug/scaledobjects/team/Upper", 400),
        ("/debug/scaledobjects/team/%2e%2e", 400),
        ("/debug/scaledobjects/team/nightly/extra", 404),
        ("/debug/scaledobjects/team", 404),
        ("/debug/scaledobjects/", 404),
    ] {
        let (got, body) = get(ebb.admin, path);
        assert_eq!(got, code, "{path}: {body}");
        assert!(body.contains("\"kind\":\"Status\""), "{path}: {body}");
    }
    assert_eq!(
        request(ebb.admin, "POST", "/debug/scaledobjects/team/nightly").0,
        405
    );
    // Clients that never finish their headers do not stop the route.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", ebb.admin)).expect("connect");
        let _ = s.write_all(b"GET /debug/scaledobjects/team/nightly HTTP/1.1\r\nHost: x\r\n");
        slow.push(s);
    }
    assert_eq!(view(ebb.admin, "team", "nightly")["name"], "nightly");
    // The other admin routes are unchanged.
    assert_eq!(get(ebb.admin, "/livez"), (200, "ok".to_string()));
}

/// The ScaledObject names in the shipped `examples/local/` files.
fn example_names() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples/local") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if v["kind"].as_str() == Some("ScaledObject") {
                out.push((
                    v["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                    v["metadata"]["name"].as_str().expect("name").to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn ebb_explain_answers_for_every_shipped_example() {
    let names = example_names();
    assert!(names.len() >= 2, "{names:?}");
    let ebb = start_local(None);
    for (ns, name) in names {
        let _ = view(ebb.admin, &ns, &name);
        let out = explain_bin(ebb.admin, &ns, &name, &[]);
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{ns}/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("replicas unknown: "), "{ns}/{name}: {text}");
        assert!(
            !first.contains("broken") && !first.contains("fails"),
            "{ns}/{name}: {text}"
        );
        assert!(
            text.contains(&format!("ScaledObject {ns}/{name} (from local)")),
            "{text}"
        );
    }
}

// ---- the cluster path, against a scripted API server ----

const SO: &str = "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/web-so";
const PROXY: &str =
    "/api/v1/namespaces/ebb/services/http:ebb-metrics-apiserver:metrics/proxy/debug/scaledobjects/ns/web-so";
const METRIC: &str = "s0-metric-api-v";

/// 2026-01-01T00:10:00Z.
const NOW: i64 = 1_767_226_200;

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn scaled_object(url: &str, min: i32) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "web-so", "namespace": "ns", "uid": "0a1b2c3d-0000-4000-8000-000000000001",
                     "generation": 1, "resourceVersion": "100", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "finalizers": ["finalizer.keda.sh"]},
        "spec": {"scaleTargetRef": {"name": "web"}, "minReplicaCount": min, "maxReplicaCount": 4,
                 "triggers": [{"type": "metrics-api",
                               "metadata": {"url": url, "valueLocation": "v", "targetValue": "10"}}]},
        "status": {
            "scaleTargetKind": "apps/v1.Deployment",
            "scaleTargetGVKR": {"group": "apps", "version": "v1", "kind": "Deployment", "resource": "deployments"},
            "originalReplicaCount": 1,
            "lastActiveTime": "2026-01-01T00:08:20Z",
            "externalMetricNames": [METRIC],
            "hpaName": "keda-hpa-web-so",
            "health": {METRIC: {"numberOfFailures": 0, "status": "Happy"}},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ScaledObject is defined correctly and is ready for scaling"},
                {"type": "Active", "status": "True", "reason": "ScalerActive", "message": "Scaling is performed because triggers are active"},
                {"type": "Fallback", "status": "False", "reason": "NoFallbackFound", "message": "No fallbacks are active on this scaled object"},
                {"type": "Paused", "status": "False", "reason": "ScaledObjectUnpaused", "message": "pause annotation removed for ScaledObject"}
            ]
        }
    })
}

/// The HPA as kube-controller-manager leaves it; `limited`: `ScalingLimited`'s reason when True.
fn hpa(current: i32, desired: i32, average: &str, limited: Option<&str>) -> Value {
    let selector = json!({"matchLabels": {"scaledobject.keda.sh/name": "web-so"}});
    let mut conditions = vec![
        json!({"type": "AbleToScale", "status": "True", "lastTransitionTime": "2026-01-01T00:00:30Z",
               "reason": "ReadyForNewScale", "message": "recommended size matches current size"}),
        json!({"type": "ScalingActive", "status": "True", "lastTransitionTime": "2026-01-01T00:00:30Z",
               "reason": "ValidMetricFound",
               "message": "the HPA was able to successfully calculate a replica count from external metric s0-metric-api-v(&LabelSelector{MatchLabels:map[string]string{scaledobject.keda.sh/name: web-so,},MatchExpressions:[]LabelSelectorRequirement{},})"}),
    ];
    conditions.push(if let Some(reason) = limited {
        let message = match reason {
            "TooManyReplicas" => "the desired replica count is more than the maximum replica count",
            _ => "the desired replica count is less than the minimum replica count",
        };
        json!({"type": "ScalingLimited", "status": "True", "lastTransitionTime": "2026-01-01T00:05:00Z",
               "reason": reason, "message": message})
    } else {
        json!({"type": "ScalingLimited", "status": "False", "lastTransitionTime": "2026-01-01T00:05:00Z",
               "reason": "DesiredWithinRange", "message": "the desired count is within the acceptable range"})
    });
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-web-so", "namespace": "ns", "resourceVersion": "200",
                     "labels": {"app.kubernetes.io/managed-by": "keda-operator", "scaledobject.keda.sh/name": "web-so"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 4,
                 "metrics": [{"type": "External", "external": {"metric": {"name": METRIC, "selector": selector},
                              "target": {"type": "AverageValue", "averageValue": "10"}}}]},
        "status": {"currentReplicas": current, "desiredReplicas": desired,
                   "currentMetrics": [{"type": "External", "external": {"metric": {"name": METRIC, "selector": selector},
                                       "current": {"averageValue": average}}}],
                   "conditions": conditions}
    })
}

fn deployment(replicas: i32, ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "300", "generation": 3},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
           "status": {"observedGeneration": 3, "replicas": replicas, "updatedReplicas": replicas,
                      "readyReplicas": ready, "availableReplicas": ready}})
}

fn scale(replicas: i32) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "300"},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas, "selector": "app=web"}})
}

/// The scripted cluster: path → (code, body); anything else is recorded and answered 404.
#[derive(Default)]
struct Scripted {
    answers: Vec<(String, u16, Value)>,
    unexpected: Vec<String>,
}

fn scripted_client(script: Scripted) -> (kube::Client, Arc<Mutex<Scripted>>) {
    let (svc, handle): (_, Handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let script = Arc::new(Mutex::new(script));
    scripted_api::serve(handle, script.clone(), answer, |_, _, _| {});
    (kube::Client::new(svc, "default"), script)
}

fn answer(s: &mut Scripted, method: &Method, path: &str, _: &str, _: &Value) -> Option<(StatusCode, Value)> {
    let found = s.answers.iter().find(|(p, ..)| p == path);
    Some(match found {
        Some((_, code, body)) => (
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body.clone(),
        ),
        None => {
            s.unexpected.push(format!("{method} {path}"));
            (StatusCode::NOT_FOUND, status(404, "NotFound", "not scripted"))
        }
    })
}

fn opts() -> cluster::Options {
    cluster::Options::new(
        "ns",
        "web-so",
        "ebb/ebb-metrics-apiserver:metrics",
        Duration::from_secs(5),
    )
    .expect("options")
}

fn base(so: Value, hpa: Value, replicas: i32, ready: i32) -> Vec<(String, u16, Value)> {
    vec![
        (SO.to_string(), 200, so),
        (
            "/apis/apps/v1/namespaces/ns/deployments/web/scale".into(),
            200,
            scale(replicas),
        ),
        (
            "/apis/apps/v1/namespaces/ns/deployments/web".into(),
            200,
            deployment(replicas, ready),
        ),
        (
            "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/keda-hpa-web-so".into(),
            200,
            hpa,
        ),
    ]
}

/// What the metrics server's admin port answers for the object (its own view, through the proxy).
fn served_view(value: f64) -> Value {
    let v = ObjectView {
        namespace: "ns".into(),
        name: "web-so".into(),
        source: "metrics-server".into(),
        triggers: vec![TriggerView {
            index: 0,
            trigger_type: "metrics-api".into(),
            metric: Some(METRIC.into()),
            value: Some(value),
            value_age_seconds: Some(3.5),
            value_source: "fresh read".into(),
            target: Some(10.0),
            target_type: Some("AverageValue".into()),
            activation_threshold: Some(0.0),
            active: Some(value > 0.0),
            ..TriggerView::default()
        }],
        problems: vec!["the metrics server does not read the scale target or the HPA".into()],
        ..ObjectView::default()
    };
    serde_json::to_value(v).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_through_the_service_proxy_names_the_limit() {
    let mut answers = base(
        scaled_object("http://metrics.ns.svc:8080/v", 1),
        hpa(4, 4, "9250m", Some("TooManyReplicas")),
        4,
        3,
    );
    answers.push((PROXY.into(), 200, served_view(37.0)));
    let (client, script) = scripted_client(Scripted {
        answers,
        ..Scripted::default()
    });
    let v = cluster::view(&client, &opts(), NOW).await.expect("view");
    assert_eq!(script.lock().expect("lock").unexpected, Vec::<String>::new());
    assert_eq!(
        v.verdict,
        "4 replicas: s0-metric-api-v = 37 against an average target of 10 per pod → 4; limited by maxReplicaCount=4"
    );
    assert!(
        v.source
            .contains("metrics server ebb/ebb-metrics-apiserver (service proxy)"),
        "{}",
        v.source
    );
    assert_eq!((v.replicas, v.ready_pods), (Some(4), Some(3)));
    let h = v.hpa.as_ref().expect("hpa");
    assert_eq!(
        (h.desired_replicas, h.current_replicas, h.max_replicas),
        (Some(4), Some(4), Some(4))
    );
    assert_eq!(h.current_metrics.get(METRIC), Some(&9.25));
    assert_eq!(h.conditions.len(), 3);
    assert_eq!(
        v.conditions.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
        ["Ready", "Active", "Fallback", "Paused"]
    );
    assert_eq!(v.last_active_time.as_deref(), Some("2026-01-01T00:08:20Z"));
    // minReplicaCount 1: nothing counts down to zero.
    assert_eq!((v.cooldown_left_seconds, v.idle_for_seconds), (None, None));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let text = render(&v);
    assert!(text.starts_with(&format!("{}\n\nTRIGGER", v.verdict)), "{text}");
    assert!(text.contains("replicas: 4 (ready 3); min 1, max 4"), "{text}");
    assert!(
        text.contains("HPA keda-hpa-web-so: desired 4, current 4; min 1, max 4"),
        "{text}"
    );
    assert!(text.contains("ScalingLimited=True TooManyReplicas: the desired replica count is more than the maximum replica count"), "{text}");
    assert!(text.contains("condition Ready=True ScaledObjectReady"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_reads_offline_when_the_proxy_fails_and_counts_the_cooldown() {
    // The metrics server cannot be reached; the trigger is read from here (and refuses), the
    // HPA's currentMetrics stand in, and nothing is active: the cooldown runs.
    let mut answers = base(
        scaled_object(&refused_url("/v"), 0),
        hpa(1, 1, "0", Some("TooFewReplicas")),
        1,
        1,
    );
    answers.push((
        PROXY.into(),
        503,
        status(
            503,
            "ServiceUnavailable",
            "no endpoints available for service \"http:ebb-metrics-apiserver:metrics\"",
        ),
    ));
    let (client, script) = scripted_client(Scripted {
        answers,
        ..Scripted::default()
    });
    let v = cluster::view(&client, &opts(), NOW).await.expect("view");
    assert_eq!(script.lock().expect("lock").unexpected, Vec::<String>::new());
    assert!(
        v.source.contains(
            "read once from this machine (metrics server not reachable: 503 no endpoints available"
        ),
        "{}",
        v.source
    );
    let t = &v.triggers[0];
    assert_eq!(
        (t.value, t.value_source.as_str(), t.active),
        (Some(0.0), "hpa", Some(false))
    );
    assert!(
        v.problems
            .iter()
            .any(|p| p.starts_with("s0 read from this machine failed")),
        "{:?}",
        v.problems
    );
    // lastActiveTime 00:08:20, now 00:10:00, cooldown 300 s: 200 s left.
    assert_eq!(v.cooldown_left_seconds, Some(200));
    assert_eq!(
        v.verdict,
        "1 replica: s0-metric-api-v = 0 against an average target of 10 per pod → 0; limited by minReplicaCount=1; \
         scales to 0 in 3 m 20 s unless a trigger activates"
    );

    // At zero, idle: how long, and what activation needs.
    let mut answers = base(scaled_object(&refused_url("/v"), 0), hpa(0, 0, "0", None), 0, 0);
    answers.push((PROXY.into(), 200, served_view(0.0)));
    let (client, _) = scripted_client(Scripted {
        answers,
        ..Scripted::default()
    });
    let v = cluster::view(&client, &opts(), NOW + 600).await.expect("view");
    assert_eq!(v.idle_for_seconds, Some(700));
    assert_eq!(
        v.verdict,
        "0 replicas: idle for 11 m 40 s (cooldown 300 s); activation needs s0 > 0, now 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_of_a_missing_object_is_a_not_found_error() {
    let (client, _) = scripted_client(Scripted::default());
    let e = cluster::view(&client, &opts(), NOW).await.expect_err("absent");
    assert_eq!(
        e.to_string(),
        "scaledobjects.keda.sh \"web-so\" not found in namespace \"ns\""
    );
}
