//! The real `kubectl` (and a front proxy) against a running `ebb metrics-server --local`.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    fs::write_atomic,
    net::{Banner, LogLines, http_get, refused_url},
};
use ebb::tls::certgen;

const GV: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// Generous for a loaded 2-core machine; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills the server when the test ends, however it ends.
struct Ebb {
    child: Child,
    state: PathBuf,
    secure: u16,
    admin: u16,
    /// Its log (stderr), to wait for what it reports.
    logs: LogLines,
    _dir: tempfile::TempDir,
}

impl Drop for Ebb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP upstream answering `{"v": <value>}`; the value can be changed by the test.
fn upstream() -> (u16, Arc<AtomicU64>) {
    upstream_with_token(None)
}

/// Like [`upstream`], answering 401 unless the request carries `Authorization: Bearer <token>`.
fn upstream_with_token(token: Option<&'static str>) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    let value = Arc::new(AtomicU64::new(42));
    let v = value.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let v = v.clone();
            std::thread::spawn(move || serve_one(stream, v.load(Ordering::SeqCst), token));
        }
    });
    (port, value)
}

fn serve_one(mut stream: TcpStream, value: u64, token: Option<&str>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // The whole head, however the client's writes were split.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let allowed =
        token.is_none_or(|t| request.contains(&format!("authorization: bearer {}", t.to_ascii_lowercase())));
    let (status, body) = if allowed {
        ("200 OK", format!("{{\"v\": {value}}}"))
    } else {
        ("401 Unauthorized", String::new())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn scaled_objects(upstream_port: u16) -> String {
    format!(
        r#"apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: worker
  namespace: team-a
spec:
  scaleTargetRef:
    name: worker
  triggers:
  - type: metrics-api
    metadata:
      url: "http://127.0.0.1:{upstream_port}/value"
      valueLocation: "v"
      targetValue: "10"
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: nightly
  namespace: team-a
spec:
  scaleTargetRef:
    name: nightly
  triggers:
  - type: cron
    metadata:
      timezone: Etc/UTC
      start: "0 0 1 1 *"
      end: "1 0 1 1 *"
      desiredReplicas: "3"
"#
    )
}

fn start(extra: &[&str], upstream_port: u16) -> Ebb {
    start_with(extra, &scaled_objects(upstream_port))
}

fn start_with(extra: &[&str], documents: &str) -> Ebb {
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).expect("mkdir");
    std::fs::write(objects.join("so.yaml"), documents).expect("write");
    let state = dir.path().join("state");
    let mut child = launch_local(Some(&objects), &state, extra);
    let logs = LogLines::capture(child.stderr.take().expect("stderr"));
    let banner = read_banner(&mut child);
    let ebb = Ebb {
        child,
        state,
        secure: banner.secure,
        admin: banner.admin,
        logs,
        _dir: dir,
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        if http_get(ebb.admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(Instant::now() < deadline, "ebb did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    ebb
}

/// The banner of `child` (see [`common::net::read_banner`]); kills it and fails the test when
/// none comes.
fn read_banner(child: &mut Child) -> Banner {
    common::net::read_banner(child, DEADLINE).unwrap_or_else(|e| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{e}");
    })
}

fn kubectl(kubeconfig: &Path, path: &str) -> Output {
    let bin = std::env::var("EBB_KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "10s", "get", "--raw", path])
        .output()
        .expect("kubectl must be installed (scripts/test installs it)")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn metric_path(ns: &str, metric: &str, so: &str) -> String {
    format!("{GV}/namespaces/{ns}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}")
}

#[test]
fn kubectl_reads_discovery_values_and_errors() {
    let (port, value) = upstream();
    let ebb = start(&[], port);
    let kc = ebb.state.join("kubeconfig");

    let out = kubectl(&kc, GV);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["resources"][0]["name"], "externalmetrics");

    // A live value, asked in lower case as the HPA asks, echoed as asked.
    let out = kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "worker"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["kind"], "ExternalMetricValueList");
    assert_eq!(v["items"][0]["metricName"], "s0-metric-api-v");
    assert_eq!(v["items"][0]["value"], "42");
    assert!(v["items"][0]["metricLabels"].is_null());
    value.store(8600, Ordering::SeqCst);
    let out = kubectl(&kc, &metric_path("team-a", "S0-Metric-API-V", "worker"));
    let v: serde_json::Value = serde_json::from_str(&text(&out).0).expect("json");
    assert_eq!(
        v["items"][0]["value"], "8600",
        "without useCachedMetrics every read is live"
    );
    assert_eq!(v["items"][0]["metricName"], "S0-Metric-API-V");

    let out = kubectl(
        &kc,
        &metric_path("team-a", "s0-cron-Etc-UTC-0011x-1011x", "nightly"),
    );
    let v: serde_json::Value = serde_json::from_str(&text(&out).0).expect("json");
    assert_eq!(v["items"][0]["value"], "0");

    let out = kubectl(&kc, &metric_path("team-a", "s9-unknown", "worker"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Error from server (NotFound)") && stderr.contains("s9-unknown"),
        "{stderr}"
    );

    // Upstream reads are counted under KEDA's metric names on the admin port.
    let metrics = http_get(ebb.admin, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("keda_scaler_metrics_value{namespace=\"team-a\",metric=\"s0-metric-api-v\",scaledObject=\"worker\",scaler=\"metricsAPIScaler\",triggerIndex=\"0\",type=\"scaledobject\"} 8600"),
        "{metrics}"
    );

    let out = kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "nobody"));
    assert!(text(&out).1.contains("(NotFound)"), "{}", text(&out).1);

    let out = kubectl(
        &kc,
        &format!("{GV}/namespaces/team-a/s0-metric-api-v?labelSelector=a+in+%28"),
    );
    let (_, stderr) = text(&out);
    assert!(stderr.contains("Error from server (BadRequest)"), "{stderr}");

    // Same server, a kubeconfig without a client certificate (an empty user would make kubectl
    // prompt for a password, so it carries a token nobody can review here): 401.
    let anon = ebb.state.join("anonymous.kubeconfig");
    let body = std::fs::read_to_string(&kc).expect("kubeconfig");
    let cut = body.find("users:").expect("users section");
    std::fs::write(
        &anon,
        format!(
            "{}users:\n- name: ebb-local-admin\n  user:\n    token: not-a-valid-token\n",
            &body[..cut]
        ),
    )
    .expect("write");
    let out = kubectl(&anon, &metric_path("team-a", "s0-metric-api-v", "worker"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("Unauthorized"), "{stderr}");
}

/// A ScaledObject whose metrics-api triggers read `urls` (named as given), with extra spec YAML.
fn api_object(name: &str, triggers: &[(&str, String)], extra: &str) -> String {
    let triggers: String = triggers
        .iter()
        .map(|(n, url)| {
            format!(
                "  - type: metrics-api\n    name: {n}\n    metadata: {{url: \"{url}\", valueLocation: v, targetValue: \"10\"}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}, namespace: team-a}}\nspec:\n  scaleTargetRef: {{name: {name}}}\n{extra}  triggers:\n{triggers}---\n"
    )
}

fn value_of(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    v["items"][0]["value"].as_str().unwrap_or_default().to_string()
}

#[test]
fn fallback_and_composite_metric_as_the_hpa_reads_them() {
    let (port, _value) = upstream();
    let live = format!("http://127.0.0.1:{port}/value");
    // Every read of it fails.
    let dead = refused_url("/value");
    let docs = [
        api_object(
            "flaky",
            &[("a", dead.clone())],
            "  fallback: {failureThreshold: 1, replicas: 6}\n",
        ),
        api_object(
            "flaky-current",
            &[("a", dead.clone())],
            "  fallback: {failureThreshold: 0, replicas: 6, behavior: currentReplicas}\n",
        ),
        api_object(
            "sum",
            &[("a", live.clone()), ("b", live.clone())],
            "  advanced: {scalingModifiers: {formula: \"a + b\", target: \"5\"}}\n",
        ),
        api_object(
            "coalesce",
            &[("primary", dead.clone()), ("secondary", live.clone())],
            "  fallback: {failureThreshold: 0, replicas: 3, behavior: scalingModifiers}\n  advanced: {scalingModifiers: {formula: \"primary ?? secondary / 2\", target: \"2\"}}\n",
        ),
        api_object(
            "all-nil",
            &[("primary", dead.clone())],
            "  fallback: {failureThreshold: 0, replicas: 3, behavior: scalingModifiers}\n  advanced: {scalingModifiers: {formula: \"primary ?? nil\", target: \"2\"}}\n",
        ),
        api_object(
            "no-fallback",
            &[("primary", dead)],
            "  advanced: {scalingModifiers: {formula: \"primary\", target: \"2\"}}\n",
        ),
    ]
    .concat();
    let ebb = start_with(&[], &docs);
    let kc = ebb.state.join("kubeconfig");

    // failureThreshold 1: the first failure is an error, the second answers target × replicas.
    let out = kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "flaky"));
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("InternalError") && stderr.contains("flaky"),
        "{stderr}"
    );
    let out = kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "flaky"));
    assert_eq!(value_of(&out), "60", "10 (target) × 6 (fallback.replicas)");
    assert_eq!(
        value_of(&kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "flaky"))),
        "60"
    );
    // The value answered is the value recorded under KEDA's name.
    let metrics = http_get(ebb.admin, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("keda_scaler_metrics_value{namespace=\"team-a\",metric=\"s0-metric-api-v\",scaledObject=\"flaky\",scaler=\"a\",triggerIndex=\"0\",type=\"scaledobject\"} 60"),
        "{metrics}"
    );

    // currentReplicas needs the scale target, which --local cannot read: said so, not guessed.
    let out = kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "flaky-current"));
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("error performing fallback") && stderr.contains("--local"),
        "{stderr}"
    );

    // scalingModifiers: the HPA reads one composite metric computed from every trigger.
    assert_eq!(
        value_of(&kubectl(&kc, &metric_path("team-a", "composite-metric", "sum"))),
        "84"
    );
    // A failing trigger past the threshold is nil in the formula; `??` coalesces it.
    assert_eq!(
        value_of(&kubectl(
            &kc,
            &metric_path("team-a", "composite-metric", "coalesce")
        )),
        "21"
    );
    let metrics = http_get(ebb.admin, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("keda_scaler_metrics_value{namespace=\"team-a\",metric=\"composite-metric\",scaledObject=\"coalesce\",scaler=\"composite-metric\",triggerIndex=\"0\",type=\"scaledobject\"} 21"),
        "{metrics}"
    );
    // A nil formula result falls back to fallback.replicas × target.
    assert_eq!(
        value_of(&kubectl(
            &kc,
            &metric_path("team-a", "composite-metric", "all-nil")
        )),
        "6"
    );
    // Without a fallback a failing trigger fails the composite metric, naming it.
    let out = kubectl(&kc, &metric_path("team-a", "composite-metric", "no-fallback"));
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success()
            && stderr.contains("composite-metric encountered error")
            && stderr.contains("trigger 0"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_local_mode_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "--local"])
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--secure-port",
            "0",
            "--metrics-port",
            "0",
            "--bind-address",
            "127.0.0.1",
        ])
        .args(["--metrics-bind-address", "127.0.0.1"])
        .output()
        .expect("run ebb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ebb run drives a cluster and cannot use --local"),
        "{stderr}"
    );
}

#[test]
fn scaledobject_files_are_reread() {
    let (port, _value) = upstream();
    let ebb = start(&[], port);
    let kc = ebb.state.join("kubeconfig");
    let file = ebb._dir.path().join("objects/so.yaml");
    let text_before = std::fs::read_to_string(&file).expect("read");
    write_atomic(
        &file,
        text_before.replace("name: nightly\n  namespace", "name: weekly\n  namespace"),
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = kubectl(
            &kc,
            &metric_path("team-a", "s0-cron-Etc-UTC-0011x-1011x", "weekly"),
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renamed ScaledObject never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = kubectl(
        &kc,
        &metric_path("team-a", "s0-cron-Etc-UTC-0011x-1011x", "nightly"),
    );
    assert!(text(&out).1.contains("NotFound"));
    // A broken file keeps its last good content (checked once ebb has read it and said so).
    let rejected = ["cannot read manifest file", "so.yaml"];
    let before = ebb.logs.count(&rejected);
    write_atomic(
        &file,
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: [",
    );
    ebb.logs.wait_for(&rejected, before, DEADLINE);
    let out = kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "worker"));
    assert!(out.status.success(), "{}", text(&out).1);
}

fn https_client(identity: Option<&certgen::CertPair>, ca_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca")]);
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

#[tokio::test]
async fn front_proxy_headers_are_trusted_only_with_the_proxy_certificate() {
    let proxy_ca = certgen::generate_ca("front-proxy-ca").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("front-proxy-ca.crt");
    std::fs::write(&ca_file, proxy_ca.cert_pem()).expect("write");
    let (port, _value) = upstream();
    let ca_arg = ca_file.display().to_string();
    let ebb = start(
        &[
            "--requestheader-client-ca-file",
            &ca_arg,
            "--requestheader-allowed-names",
            "front-proxy-client",
        ],
        port,
    );
    let serving_ca = std::fs::read_to_string(ebb.state.join("ca.crt")).expect("ca");
    let url = format!(
        "https://127.0.0.1:{}{}",
        ebb.secure,
        metric_path("team-a", "s0-metric-api-v", "worker")
    );
    let proxy = proxy_ca
        .issue_client("front-proxy-client", &[])
        .expect("proxy cert");
    let other = proxy_ca.issue_client("someone-else", &[]).expect("other cert");

    let send = |client: reqwest::Client| {
        let url = url.clone();
        async move {
            client
                .get(url)
                .header(
                    "X-Remote-User",
                    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                )
                .header("X-Remote-Group", "system:authenticated")
                .send()
                .await
                .expect("request")
        }
    };
    let ok = send(https_client(Some(&proxy), &serving_ca)).await;
    assert_eq!(ok.status(), 200);
    let body = ok.text().await.expect("body");
    assert!(body.contains("\"value\":\"42\""), "{body}");

    let no_cert = send(https_client(None, &serving_ca)).await;
    assert_eq!(no_cert.status(), 401);
    let status: serde_json::Value =
        serde_json::from_str(&no_cert.text().await.expect("body")).expect("status json");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");

    let wrong_cn = send(https_client(Some(&other), &serving_ca)).await;
    assert_eq!(wrong_cn.status(), 401);

    // Health paths stay open to anyone.
    let health = https_client(None, &serving_ca)
        .get(format!("https://127.0.0.1:{}/healthz", ebb.secure))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

#[test]
fn trigger_authentication_and_secret_files_feed_the_scaler() {
    let (port, _value) = upstream_with_token(Some("s3cret"));
    let ebb = start(&[], port);
    let kc = ebb.state.join("kubeconfig");
    let objects = ebb._dir.path().join("objects");
    let so = format!(
        r#"apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: private
  namespace: team-a
spec:
  scaleTargetRef:
    name: private
  triggers:
  - type: metrics-api
    authenticationRef:
      name: api-auth
    metadata:
      url: "http://127.0.0.1:{port}/value"
      valueLocation: "v"
      targetValue: "10"
      authMode: bearer
"#
    );
    write_atomic(&objects.join("private.yaml"), so);
    let path = metric_path("team-a", "s0-metric-api-v", "private");
    // Without the TriggerAuthentication the error names it.
    let deadline = Instant::now() + DEADLINE;
    let stderr = loop {
        let out = kubectl(&kc, &path);
        let (_, stderr) = text(&out);
        if stderr.contains("api-auth") || Instant::now() > deadline {
            break stderr;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        stderr.contains("TriggerAuthentication") && stderr.contains("api-auth"),
        "{stderr}"
    );
    write_atomic(
        &objects.join("auth.yaml"),
        "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata:\n  name: api-auth\n  namespace: team-a\nspec:\n  secretTargetRef:\n  - parameter: bearerToken\n    name: api-token\n    key: token\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: api-token\n  namespace: team-a\ndata:\n  token: czNjcmV0\n",
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = kubectl(&kc, &path);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_str(&text(&out).0).expect("json");
            assert_eq!(v["items"][0]["value"], "42");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the trigger never healed: {}",
            text(&out).1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ebb metrics-server --local [DIR]` with explicit ports and state directory, stdout piped.
/// `ebb metrics-server --local` on port 0 for both ports (the kernel picks free ones as ebb binds
/// them, so no other process can take them in between; the banner says which).
fn launch_local(dir: Option<&Path>, state: &Path, extra: &[&str]) -> Child {
    launch_local_on(dir, state, 0, 0, extra)
}

fn launch_local_on(dir: Option<&Path>, state: &Path, secure: u16, admin: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args(["metrics-server", "--local"]);
    if let Some(d) = dir {
        cmd.arg(d);
    }
    cmd.arg("--state-dir")
        .arg(state)
        .args([
            "--bind-address",
            "127.0.0.1",
            "--metrics-bind-address",
            "127.0.0.1",
        ])
        .args([
            "--secure-port",
            &secure.to_string(),
            "--metrics-port",
            &admin.to_string(),
        ])
        .args(["--local-poll-interval", "100", "--log-level", "warn"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("start ebb")
}

/// Waits for `/readyz` on `admin`, failing with the server's stderr if it exits first.
fn wait_ready(child: &mut Child, admin: u16) {
    let deadline = Instant::now() + DEADLINE;
    while !http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("ebb exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "ebb did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs ebb to completion (bounded) and returns its status and stderr.
fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ebb did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_port_in_use_is_one_error_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    // The other port is 0: the kernel picks one no other process holds.
    for (secure, admin, flag) in [(port, 0, "--secure-port"), (0, port, "--metrics-port")] {
        let child = launch_local_on(
            Some(dir.path()),
            &dir.path().join(format!("state-{flag}")),
            secure,
            admin,
            &[],
        );
        let (status, stderr) = finish(child);
        assert!(!status.success());
        let address = format!("127.0.0.1:{port}");
        assert_eq!(stderr.matches(&address).count(), 1, "said once: {stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {address}: the port is already in use"))
                && stderr.contains(&format!("choose another with {flag}")),
            "{stderr}"
        );
    }
}

#[test]
fn a_second_local_instance_keeps_the_first_ones_kubeconfig() {
    let (port, _value) = upstream();
    let ebb = start(&[], port);
    let kc = ebb.state.join("kubeconfig");
    let before = std::fs::read_to_string(&kc).expect("kubeconfig");
    let objects = ebb._dir.path().join("objects");
    let (status, stderr) = finish(launch_local(Some(&objects), &ebb.state, &[]));
    assert!(!status.success());
    assert!(
        stderr.contains("is in use by another `ebb metrics-server --local`")
            && stderr.contains(&format!("https://127.0.0.1:{}", ebb.secure))
            && stderr.contains("--state-dir"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&kc).expect("kubeconfig"), before);
    // The first instance's README command still works.
    let out = kubectl(&kc, &metric_path("team-a", "s0-metric-api-v", "worker"));
    assert!(out.status.success(), "{}", text(&out).1);
    // With its own state directory the second one runs.
    let other = ebb._dir.path().join("other-state");
    let mut second = Killed(launch_local(Some(&objects), &other, &[]));
    let admin = read_banner(&mut second.0).admin;
    wait_ready(&mut second.0, admin);
}

#[test]
fn the_banner_reads_an_object_that_is_loaded() {
    let (port, _value) = upstream();
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).expect("mkdir");
    std::fs::write(objects.join("so.yaml"), scaled_objects(port)).expect("write");
    let state = dir.path().join("state");
    let mut ebb = Killed(launch_local(Some(&objects), &state, &[]));
    let path = read_banner(&mut ebb.0).path;
    assert_eq!(
        path,
        format!("{GV}/namespaces/team-a/s0-metric-api-v?labelSelector=scaledobject.keda.sh%2Fname%3Dworker")
    );
    let out = kubectl(&state.join("kubeconfig"), &path);
    assert_eq!(value_of(&out), "42");
}

#[test]
fn shipped_examples_follow_the_metrics_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let first_admin = {
        let mut first = Killed(launch_local(None, &state, &[]));
        let admin = read_banner(&mut first.0).admin;
        wait_ready(&mut first.0, admin);
        admin
    };
    // Same state directory, another admin port: the untouched copies now read this demo. The
    // first one's port is held meanwhile, so the kernel cannot hand it out again.
    let _held = TcpListener::bind(("127.0.0.1", first_admin));
    let mut second = Killed(launch_local(None, &state, &[]));
    let Banner { admin, path, .. } = read_banner(&mut second.0);
    let copy = std::fs::read_to_string(state.join("scaledobjects/queue-worker.yaml")).expect("copy");
    assert!(
        copy.contains(&format!("http://127.0.0.1:{admin}/demo/"))
            && !copy.contains(&format!(":{first_admin}/")),
        "{copy}"
    );
    let out = kubectl(&state.join("kubeconfig"), &path);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("\"metricName\":\"s0-metric-api-queue-depth\""),
        "{stdout}"
    );
}

/// A plain-HTTP stand-in for kube-apiserver: every list is empty, every watch stays open, and
/// the paths asked for are recorded.
fn recording_api_server() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                let mut buf = [0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                if let Ok(mut r) = record.lock() {
                    r.push(target.clone());
                }
                if target.contains("watch=true") || target.contains("watch=1") {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    );
                    // Held open until ebb goes away.
                    let _ = stream.read(&mut buf);
                    return;
                }
                let body =
                    r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (port, seen)
}

#[test]
fn the_operator_honours_kedas_watch_namespace() {
    let (api, seen) = recording_api_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{api}\n\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .expect("kubeconfig");
    // Port 0: no other process can take the admin port before the operator binds it.
    let _operator = Killed(
        Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["operator", "--kubeconfig"])
            .arg(&kc)
            .args(["--metrics-port", "0", "--metrics-bind-address", "127.0.0.1"])
            .args(["--log-level", "warn"])
            .env("WATCH_NAMESPACE", "team-a")
            .env_remove("EBB_WATCH_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ebb operator"),
    );
    let wanted = "/apis/keda.sh/v1alpha1/namespaces/team-a/scaledobjects?";
    let deadline = Instant::now() + DEADLINE;
    loop {
        let paths = seen.lock().map(|p| p.clone()).unwrap_or_default();
        if paths.iter().any(|p| p.starts_with(wanted)) {
            assert!(
                !paths
                    .iter()
                    .any(|p| p.starts_with("/apis/keda.sh/v1alpha1/scaledobjects")),
                "watched all namespaces too: {paths:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ScaledObject list in team-a: {paths:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
