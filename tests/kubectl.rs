//! The real `kubectl` (and a front proxy) against a running `ebb metrics-server --local`.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    fs::write_atomic,
    net::{LogLines, http_get, refused_url},
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    // Port 0: the kernel picks free ports as ebb binds them (no race with other processes), and
    // ebb's banner says which.
    cmd.args(["metrics-server", "--local"])
        .arg(&objects)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "--bind-address",
            "127.0.0.1",
            "--metrics-bind-address",
            "127.0.0.1",
        ])
        .args(["--secure-port", "0", "--metrics-port", "0"])
        .args(["--local-poll-interval", "100", "--log-level", "warn"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start ebb");
    let logs = LogLines::capture(child.stderr.take().expect("stderr"));
    let (secure, admin) = match read_ports(child.stdout.take().expect("stdout")) {
        Ok(ports) => ports,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}");
        }
    };
    let ebb = Ebb {
        child,
        state,
        secure,
        admin,
        logs,
        _dir: dir,
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        if http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(Instant::now() < deadline, "ebb did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    ebb
}

/// The secure and admin ports from the banner `ebb metrics-server --local` prints once bound;
/// the rest of stdout is drained on a thread so ebb never blocks on a full pipe.
fn read_ports(stdout: ChildStdout) -> Result<(u16, u16), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let port_after = |line: &str, scheme: &str| -> Option<u16> {
            let rest = &line[line.find(scheme)? + scheme.len()..];
            rest.split('/').next()?.rsplit(':').next()?.parse().ok()
        };
        let (mut secure, mut admin) = (None, None);
        let mut seen = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("is serving external.metrics.k8s.io") {
                secure = port_after(&line, "https://");
            } else if line.contains("Prometheus metrics:") {
                admin = port_after(&line, "http://");
            }
            seen.push(line);
            if let (Some(s), Some(a)) = (secure, admin) {
                let _ = tx.send(Ok((s, a)));
                lines.for_each(drop);
                return;
            }
        }
        let _ = tx.send(Err(format!(
            "ebb closed stdout before printing both ports: {seen:?}"
        )));
    });
    rx.recv_timeout(DEADLINE)
        .map_err(|_| "ebb printed no ports in time".to_string())?
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
