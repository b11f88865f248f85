//! A real Prometheus scrapes the admin port of `ebb metrics-server --local` after kubectl has read
//! every metric of the shipped examples (plus a prometheus trigger whose query is empty): the
//! scrape is up, every family docs/metrics.md says the metrics server records has a sample, the
//! page passes `promtool check metrics`, and the Grafana dashboard asks only for documented names.

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::net::{PORT_ATTEMPTS, free_port, http_get};

use ebb::scalers::registry::{Registry, RegistryConfig};

/// Kills the server when the test ends, however it ends.
struct Ebb(Child);

impl Drop for Ebb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One row of docs/metrics.md.
struct Documented {
    name: String,
    histogram: bool,
    recorded_by: String,
}

fn documented() -> Vec<Documented> {
    let doc = std::fs::read_to_string("docs/metrics.md").expect("docs/metrics.md");
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 5, "row without a Recorded by column: {l}");
            Documented {
                name: cells[0].trim_matches('`').to_string(),
                histogram: cells[1].starts_with("histogram"),
                recorded_by: cells[3].to_string(),
            }
        })
        .collect()
}

/// The sample names a documented family is stored under.
fn sample_names(d: &Documented) -> Vec<String> {
    if d.histogram {
        ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{}{s}", d.name))
            .collect()
    } else {
        vec![d.name.clone()]
    }
}

/// Every `keda_*` / `ebb_*` identifier in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("keda_") || t.starts_with("ebb_"))
        .map(str::to_string)
        .collect()
}

async fn prom_get(http: &reqwest::Client, url: &str, params: &[(&str, &str)]) -> serde_json::Value {
    let r = http
        .get(url)
        .query(params)
        .send()
        .await
        .expect("Prometheus answers");
    r.json().await.expect("Prometheus JSON")
}

/// Names of the series Prometheus holds for job `ebb`.
async fn scraped_names(http: &reqwest::Client, prom: &str) -> BTreeSet<String> {
    let v = prom_get(
        http,
        &format!("{prom}/api/v1/label/__name__/values"),
        &[("match[]", "{job=\"ebb\"}")],
    )
    .await;
    v["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn up(http: &reqwest::Client, prom: &str) -> Option<String> {
    let v = prom_get(
        http,
        &format!("{prom}/api/v1/query"),
        &[("query", "up{job=\"ebb\"}")],
    )
    .await;
    v["data"]["result"][0]["value"][1].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_documented_family_after_real_reads() {
    // The admin port is named before ebb starts (by the examples and by Prometheus's scrape
    // target), so it is picked free; if another process takes it before ebb binds it, ebb exits
    // and everything starts again on a new one. The secure port is 0 (the kubeconfig names it).
    let mut attempts = 0;
    let (prom, admin, objects, state, _dir, _ebb) = loop {
        attempts += 1;
        let admin = free_port();
        let prom = common::prometheus::PromServer::start_scraping(&format!("127.0.0.1:{admin}"));

        // The shipped examples as `--local` writes them, plus a prometheus trigger on the real
        // Prometheus whose query matches nothing (the empty-upstream family).
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = dir.path().join("objects");
        ebb::local_mode::write_examples(&objects, SocketAddr::from(([127, 0, 0, 1], admin)))
            .expect("examples");
        std::fs::write(
            objects.join("dashboards.yaml"),
            format!(
                "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: dashboards, namespace: monitoring}}\n\
                 spec:\n  scaleTargetRef: {{name: dashboards}}\n  triggers:\n  - type: prometheus\n    metadata:\n      \
                 serverAddress: {}\n      query: ebb_test_series_that_does_not_exist\n      threshold: '5'\n",
                prom.url
            ),
        )
        .expect("write");
        let state = dir.path().join("state");
        let mut ebb = Ebb(Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["metrics-server", "--local"])
            .arg(&objects)
            .arg("--state-dir")
            .arg(&state)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--metrics-bind-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", "0", "--metrics-port", &admin.to_string()])
            .args(["--local-poll-interval", "100", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ebb"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let exited = loop {
            if http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                break false;
            }
            if let Ok(Some(status)) = ebb.0.try_wait() {
                eprintln!("ebb exited ({status}) before it was ready on admin port {admin}");
                break true;
            }
            assert!(Instant::now() < deadline, "ebb did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !exited {
            break (prom, admin, objects, state, dir, ebb);
        }
        assert!(attempts < PORT_ATTEMPTS, "ebb could not bind a free admin port");
    };

    // Every external metric of every object, read with kubectl as the HPA reads it.
    let (parsed, errors) = ebb::source::files::load_dir(&objects);
    assert!(errors.is_empty(), "{errors:?}");
    let registry = Registry::new(RegistryConfig::default());
    for so in &parsed.scaled_objects {
        registry.apply(so);
    }
    let kubectl = std::env::var("EBB_KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let mut reads = 0;
    for key in registry.keys() {
        let entry = registry.get(&key).expect("entry");
        for t in &entry.triggers {
            assert!(t.scaler.is_ok(), "{key} trigger {}: {:?}", t.index, t.scaler);
            for metric in &t.metric_names {
                let path = format!(
                    "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{}?labelSelector=scaledobject.keda.sh%2Fname%3D{}",
                    key.namespace,
                    percent_encoding::utf8_percent_encode(metric, percent_encoding::NON_ALPHANUMERIC),
                    key.name
                );
                let out = Command::new(&kubectl)
                    .arg("--kubeconfig")
                    .arg(state.join("kubeconfig"))
                    .args(["--request-timeout", "10s", "get", "--raw", &path])
                    .output()
                    .expect("kubectl must be installed (scripts/test installs it)");
                assert!(
                    out.status.success(),
                    "{key} {metric}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                reads += 1;
            }
        }
    }
    assert!(reads >= 7, "only {reads} metrics read");

    // The scrape after those reads: up, and every family the metrics server records is there.
    let docs = documented();
    let wanted: BTreeSet<String> = docs
        .iter()
        .filter(|d| d.recorded_by.contains("metrics server") && !d.recorded_by.contains("only when"))
        .flat_map(sample_names)
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let names = loop {
        let names = scraped_names(&http, &prom.url).await;
        if up(&http, &prom.url).await.as_deref() == Some("1") && wanted.is_subset(&names) {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "up{{job=\"ebb\"}} = {:?}; documented families without a sample: {:?}",
            up(&http, &prom.url).await,
            wanted.difference(&names).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The escaped label value arrives intact. Waited for: the families above may have come from
    // a scrape taken while kubectl was still reading, before this series existed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = prom_get(
            &http,
            &format!("{}/api/v1/query", prom.url),
            &[(
                "query",
                r#"keda_scaler_metrics_value{job="ebb",metric="s3-metric-api-demo_queue_depth{queue=\"mail\"}"}"#,
            )],
        )
        .await;
        let found = v["data"]["result"].as_array().map(Vec::len);
        if found == Some(1) || Instant::now() > deadline {
            assert_eq!(found, Some(1), "{v}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Everything ebb exports is documented.
    let all_documented: BTreeSet<String> = docs.iter().flat_map(sample_names).collect();
    let undocumented: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("keda_") || n.starts_with("ebb_"))
        .filter(|n| !all_documented.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but not documented: {undocumented:?}"
    );

    // promtool reads the classic text format a plain scraper gets; its only complaints may be
    // KEDA's own names (camelCase label names, `_total` on two gauges), never a parse error.
    let page = http_get(admin, "/metrics").expect("scrape");
    let body = page.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    assert!(page.contains("text/plain; version=0.0.4"), "{page}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by scripts/prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool ran");
    let complaints = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool failed ({}): {complaints}",
        out.status
    );
    for line in complaints.lines() {
        let keda_name = line.starts_with("keda_")
            && (line.ends_with("label names should be written in 'snake_case' not 'camelCase'")
                || line.starts_with(
                    "keda_trigger_registered_total non-counter metrics should not have \"_total\" suffix",
                )
                || line.starts_with(
                    "keda_resource_registered_total non-counter metrics should not have \"_total\" suffix",
                ));
        assert!(keda_name, "promtool: {line}\n{body}");
    }
    drop(prom);
}

#[test]
fn grafana_dashboard_queries_only_documented_metrics() {
    let text = std::fs::read_to_string("docs/grafana-dashboard.json").expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        assert!(
            panel["gridPos"].is_object(),
            "panel {} has no gridPos",
            panel["title"]
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}");
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        exprs.push(var["query"]["query"].as_str().expect("query").to_string());
    }
    // docs/metrics.md is checked against a live scrape above; the dashboard against the docs.
    let known: BTreeSet<String> = documented().iter().flat_map(sample_names).collect();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names_in(expr) {
            assert!(
                known.contains(&name),
                "dashboard uses unknown metric {name} in {expr}"
            );
            used.insert(name);
        }
    }
    for required in [
        "keda_scaler_metrics_value",
        "keda_scaler_detail_errors_total",
        "keda_scaler_active",
        "keda_scaled_object_paused",
        "keda_internal_scale_loop_latency_seconds",
        "keda_scaler_http_requests_total",
        "keda_trigger_registered_total",
        "keda_resource_registered_total",
        "keda_scaler_empty_upstream_responses_total",
        "ebb_scaler_upstream_latency_seconds_bucket",
        "ebb_apiserver_requests_total",
        "ebb_apiserver_request_duration_seconds_bucket",
        "ebb_metric_cache_reads_total",
        "ebb_metric_value_age_seconds_bucket",
    ] {
        assert!(used.contains(required), "no panel on {required}");
    }
}
