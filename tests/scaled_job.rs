//! The ScaledJob controller against a scripted API server on kube's mocked client (tower-test):
//! ScaledJobs, Jobs, pods and events live in memory and are answered with Kubernetes JSON; the
//! trigger is a real metrics-api scaler reading a loopback upstream whose value the test sets.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use ebb::{
    crd::ScaledJob,
    operator::scaled_job::{
        JobContext, key_of,
        poll::{PollReport, poll},
        reconcile::{FINALIZER, reconcile},
    },
    scalers::registry::RegistryConfig,
};
use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};

use common::scripted_api::Pending;

const NS_JOBS: &str = "/apis/batch/v1/namespaces/ns/jobs";
const NS_PODS: &str = "/api/v1/namespaces/ns/pods";
const SJ_BASE: &str = "/apis/keda.sh/v1alpha1/namespaces/ns/scaledjobs/";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// The API server's state.
#[derive(Default)]
struct Server {
    scaled_jobs: HashMap<String, Value>,
    jobs: Vec<Value>,
    pods: Vec<Value>,
    events: Vec<Value>,
    /// (Job name, propagationPolicy) of every delete.
    deletes: Vec<(String, String)>,
    next_suffix: u32,
    fail_job_list: bool,
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

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => {
            let mut fresh = json!({});
            if let Some(p) = patch.as_object() {
                merge(&mut fresh, &Value::Object(p.clone()));
                *target = fresh;
            } else {
                *target = patch.clone();
            }
        }
    }
}

fn selector_matches(labels: &Value, query: &str) -> bool {
    let selector = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        labels[k].as_str() == Some(v)
    })
}

fn answer(
    s: &mut Server,
    method: &Method,
    path: &str,
    query: &str,
    body: &Value,
) -> Option<(StatusCode, Value)> {
    if query.contains("watch=true") || query.contains("watch=1") {
        return None;
    }
    let ok = |v: Value| Some((StatusCode::OK, v));
    if let Some(rest) = path.strip_prefix(SJ_BASE) {
        let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(sj) = s.scaled_jobs.get_mut(name) else {
            return Some((
                StatusCode::NOT_FOUND,
                status(404, "NotFound", "scaledjob not found"),
            ));
        };
        return match (method.as_str(), sub) {
            ("GET", "") => ok(sj.clone()),
            ("PATCH", "") | ("PATCH", "status") => {
                merge(sj, body);
                ok(sj.clone())
            }
            _ => None,
        };
    }
    match (method.as_str(), path) {
        ("GET", "/apis/keda.sh/v1alpha1/scaledjobs") => ok(list(
            "keda.sh/v1alpha1",
            "ScaledJobList",
            s.scaled_jobs.values().cloned().collect(),
        )),
        ("GET", NS_JOBS) => {
            if s.fail_job_list {
                return Some((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    status(500, "InternalError", "etcd down"),
                ));
            }
            let items = s
                .jobs
                .iter()
                .filter(|j| selector_matches(&j["metadata"]["labels"], query))
                .cloned()
                .collect();
            ok(list("batch/v1", "JobList", items))
        }
        ("POST", NS_JOBS) => {
            let mut job = body.clone();
            s.next_suffix += 1;
            let name = format!(
                "{}{:05}",
                job["metadata"]["generateName"].as_str().unwrap_or("job-"),
                s.next_suffix
            );
            job["metadata"]["name"] = json!(name);
            job["metadata"]["uid"] = json!(format!("uid-{name}"));
            s.jobs.push(job.clone());
            Some((StatusCode::CREATED, job))
        }
        ("DELETE", p) if p.starts_with(NS_JOBS) => {
            let name = p.trim_start_matches(NS_JOBS).trim_start_matches('/').to_string();
            let policy = body["propagationPolicy"].as_str().unwrap_or("").to_string();
            s.jobs.retain(|j| j["metadata"]["name"] != json!(name));
            s.deletes.push((name, policy));
            ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
        }
        ("GET", NS_PODS) => {
            let items = s
                .pods
                .iter()
                .filter(|p| selector_matches(&p["metadata"]["labels"], query))
                .cloned()
                .collect();
            ok(list("v1", "PodList", items))
        }
        ("PATCH", p) if p.contains("/events/") => ok(body.clone()),
        ("POST", p) if p.ends_with("/events") => {
            s.events.push(body.clone());
            ok(body.clone())
        }
        _ => {
            s.unexpected.push(format!("{method} {path}?{query}"));
            Some((StatusCode::NOT_FOUND, status(404, "NotFound", "not scripted")))
        }
    }
}

/// A loopback metrics-api upstream answering `{"v": <value>}`, or 500 while the value is None.
#[derive(Clone)]
struct Upstream {
    url: String,
    value: Arc<Mutex<Option<f64>>>,
}

impl Upstream {
    fn start(value: Option<f64>) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let value = Arc::new(Mutex::new(value));
        let shared = value.clone();
        std::thread::spawn(move || {
            // Bounded: far more requests than any test makes.
            for mut s in listener.incoming().flatten().take(10_000) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let v = *shared.lock().unwrap_or_else(|p| p.into_inner());
                let reply = match v {
                    Some(v) => {
                        let body = format!("{{\"v\": {v}}}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    None => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops".to_string(),
                };
                let _ = s.write_all(reply.as_bytes());
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/queue"),
            value,
        }
    }

    fn set(&self, v: Option<f64>) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

struct Harness {
    ctx: Arc<JobContext>,
    server: Arc<Mutex<Server>>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(RegistryConfig::default())
    }

    fn with_config(config: RegistryConfig) -> Self {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = Arc::new(Mutex::new(Server::default()));
        common::scripted_api::serve(handle, server.clone(), answer, |s, _, send| s.watches.push(send));
        let mut ctx = JobContext::new(client, config, None);
        ctx.spawn_loops = false;
        ctx.version = "test".into();
        ctx.clock = Arc::new(now);
        Self {
            ctx: Arc::new(ctx),
            server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Server) -> T) -> T {
        f(&mut self.server.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn put(&self, sj: Value) {
        let name = sj["metadata"]["name"].as_str().expect("name").to_string();
        self.with(|s| s.scaled_jobs.insert(name, sj));
    }

    fn get(&self, name: &str) -> ScaledJob {
        serde_json::from_value(self.with(|s| s.scaled_jobs[name].clone())).expect("ScaledJob")
    }

    async fn reconcile(&self, name: &str) -> Result<(), String> {
        let sj = self.get(name);
        reconcile(&self.ctx, &sj)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn poll(&self, name: &str) -> PollReport {
        let sj = self.get(name);
        poll(&self.ctx, &sj).await.expect("poll")
    }

    fn jobs_of(&self, name: &str) -> Vec<Value> {
        self.with(|s| {
            s.jobs
                .iter()
                .filter(|j| j["metadata"]["labels"]["scaledjob.keda.sh/name"] == json!(name))
                .cloned()
                .collect()
        })
    }

    /// Marks a Job finished as the Job controller would.
    fn finish(&self, job: &str, condition: &str, at: &str) {
        self.with(|s| {
            for j in s.jobs.iter_mut().filter(|j| j["metadata"]["name"] == json!(job)) {
                j["status"] =
                    json!({"conditions": [{"type": condition, "status": "True"}], "completionTime": at});
            }
        });
    }

    /// Gives a Job a pod in `phase` (labelled as the Job controller labels them).
    fn pod(&self, job: &str, sj: &str, phase: &str) {
        self.with(|s| {
            s.pods.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{job}-pod"), "namespace": "ns",
                             "labels": {"job-name": job, "scaledjob.keda.sh/name": sj}},
                "status": {"phase": phase}}))
        });
    }

    fn event_reasons(&self) -> Vec<String> {
        self.with(|s| {
            s.events
                .iter()
                .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
                .collect()
        })
    }

    fn event_notes(&self, reason: &str) -> Vec<String> {
        self.with(|s| {
            s.events
                .iter()
                .filter(|e| e["reason"] == json!(reason))
                .map(|e| e["note"].as_str().unwrap_or_default().to_string())
                .collect()
        })
    }

    fn condition(&self, name: &str, type_: &str) -> (String, String) {
        let sj = self.with(|s| s.scaled_jobs[name].clone());
        let c = sj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == json!(type_))
            .cloned()
            .unwrap_or(Value::Null);
        (
            c["status"].as_str().unwrap_or_default().to_string(),
            c["reason"].as_str().unwrap_or_default().to_string(),
        )
    }
}

fn scaled_job(name: &str, url: &str, extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 1,
                     "labels": {"team": "media"}, "annotations": {"owner": "video"}},
        "spec": {
            "jobTargetRef": {"backoffLimit": 1, "template": {"spec": {"containers": [{"name": "worker", "image": "encoder:1"}]}}},
            "pollingInterval": 5,
            "maxReplicaCount": 10,
            "triggers": [{"type": "metrics-api", "metadata": {"url": url, "valueLocation": "v", "targetValue": "1"}}]
        }
    });
    merge(&mut v, &extra);
    v
}

#[tokio::test]
async fn reconcile_then_a_poll_creates_the_jobs_keda_would() {
    let h = Harness::new();
    let up = Upstream::start(Some(3.0));
    h.put(scaled_job("encode", &up.url, json!({})));
    h.reconcile("encode").await.expect("reconciled");
    let sj = h.get("encode");
    assert_eq!(
        sj.metadata.finalizers.as_deref(),
        Some(&[FINALIZER.to_string()][..])
    );
    assert_eq!(
        h.condition("encode", "Ready"),
        ("True".into(), "ScaledJobReady".into())
    );
    assert_eq!(
        h.condition("encode", "Paused"),
        ("False".into(), "ScaledJobUnpaused".into())
    );
    let status = h.with(|s| s.scaled_jobs["encode"]["status"].clone());
    assert_eq!(status["triggersTypes"], "metrics-api");
    assert!(h.event_reasons().contains(&"ScaledJobReady".to_string()));

    let report = h.poll("encode").await;
    assert_eq!(report.created.len(), 3, "{report:?}");
    let jobs = h.jobs_of("encode");
    assert_eq!(jobs.len(), 3);
    let job = &jobs[0];
    assert_eq!(job["metadata"]["generateName"], "encode-");
    assert_eq!(
        job["metadata"]["labels"],
        json!({"app.kubernetes.io/name": "encode", "app.kubernetes.io/version": "test",
               "app.kubernetes.io/part-of": "encode", "app.kubernetes.io/managed-by": "keda-operator",
               "scaledjob.keda.sh/name": "encode", "team": "media"})
    );
    assert_eq!(
        job["metadata"]["annotations"],
        json!({"scaledjob.keda.sh/generation": "1", "owner": "video"})
    );
    assert_eq!(
        job["metadata"]["ownerReferences"],
        json!([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "name": "encode",
                "uid": "uid-encode", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(job["spec"]["backoffLimit"], 1);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["scaledjob.keda.sh/name"],
        "encode"
    );
    assert_eq!(h.event_notes("KEDAJobsCreated"), ["Created 3 jobs"]);
    assert_eq!(
        h.condition("encode", "Active"),
        ("True".into(), "ScalerActive".into())
    );
    let status = h.with(|s| s.scaled_jobs["encode"]["status"].clone());
    assert_eq!(status["lastActiveTime"], "2026-12-01T12:00:00Z");
    assert_eq!(status["triggersActivity"]["s0-metric-api-v"]["isActive"], true);
    assert!(
        h.with(|s| s.unexpected.is_empty()),
        "{:?}",
        h.with(|s| s.unexpected.clone())
    );
}

#[tokio::test]
async fn counts_follow_jobs_as_they_start_complete_and_fail() {
    let h = Harness::new();
    let up = Upstream::start(Some(5.0));
    h.put(scaled_job("q", &up.url, json!({})));
    h.reconcile("q").await.expect("reconciled");
    // default: 5 − 0 running.
    assert_eq!(h.poll("q").await.created.len(), 5);
    // 5 running, queue still 5: nothing more.
    let r = h.poll("q").await;
    assert_eq!((r.counts.running, r.counts.pending, r.created.len()), (5, 5, 0));
    let names: Vec<String> = h
        .jobs_of("q")
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    h.pod(&names[0], "q", "Running");
    h.pod(&names[1], "q", "Succeeded");
    h.finish(&names[2], "Complete", "2026-12-01T11:00:00Z");
    h.finish(&names[3], "Failed", "2026-12-01T11:01:00Z");
    // 3 unfinished (2 with a started pod, 1 pending): default creates 5 − 3.
    let r = h.poll("q").await;
    assert_eq!((r.counts.running, r.counts.pending, r.created.len()), (3, 1, 2));
}

#[tokio::test]
async fn strategies_decide_against_running_and_pending_jobs() {
    // (strategy, created on the 1st poll, on the 2nd with those Jobs pending); queue 4, max 10.
    // Eager subtracts pending Jobs from the free slots (running already counts them) yet is
    // capped by the queue: min(10 − 4 − 4, 4) = 2 more, as KEDA computes it.
    for (strategy, first, second) in [("default", 4, 0), ("eager", 4, 2), ("accurate", 4, 0)] {
        let h = Harness::new();
        let up = Upstream::start(Some(4.0));
        h.put(scaled_job(
            "s",
            &up.url,
            json!({"spec": {"scalingStrategy": {"strategy": strategy}}}),
        ));
        h.reconcile("s").await.expect("reconciled");
        assert_eq!(h.poll("s").await.created.len(), first, "{strategy}");
        assert_eq!(h.poll("s").await.created.len(), second, "{strategy}");
    }
    // accurate with 6 queued and 4 pending: 6 − 4 more.
    let h = Harness::new();
    let up = Upstream::start(Some(4.0));
    h.put(scaled_job(
        "a",
        &up.url,
        json!({"spec": {"scalingStrategy": {"strategy": "accurate"}}}),
    ));
    h.reconcile("a").await.expect("reconciled");
    assert_eq!(h.poll("a").await.created.len(), 4);
    up.set(Some(6.0));
    let r = h.poll("a").await;
    assert_eq!((r.counts.running, r.counts.pending, r.created.len()), (4, 4, 2));
}

#[tokio::test]
async fn history_cleanup_deletes_the_oldest_finished_jobs() {
    let h = Harness::new();
    let up = Upstream::start(Some(4.0));
    h.put(scaled_job(
        "h",
        &up.url,
        json!({"spec": {"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}}),
    ));
    h.reconcile("h").await.expect("reconciled");
    h.poll("h").await;
    let names: Vec<String> = h
        .jobs_of("h")
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    h.finish(&names[0], "Complete", "2026-12-01T11:03:00Z");
    h.finish(&names[1], "Complete", "2026-12-01T11:01:00Z");
    h.finish(&names[2], "Failed", "2026-12-01T11:02:00Z");
    up.set(Some(0.0));
    let r = h.poll("h").await;
    assert_eq!(r.cleaned, [names[1].clone(), names[2].clone()]);
    let deletes = h.with(|s| s.deletes.clone());
    assert!(deletes.iter().all(|(_, p)| p == "Background"), "{deletes:?}");
    assert_eq!(h.jobs_of("h").len(), 2);
}

#[tokio::test]
async fn rollout_immediate_deletes_old_generations_and_gradual_keeps_them() {
    let h = Harness::new();
    let up = Upstream::start(Some(2.0));
    h.put(scaled_job(
        "r",
        &up.url,
        json!({"spec": {"rollout": {"propagationPolicy": "foreground"}}}),
    ));
    h.reconcile("r").await.expect("reconciled");
    h.poll("r").await;
    assert_eq!(h.jobs_of("r").len(), 2);
    // A spec change: generation 2. Both generation-1 Jobs go, with Foreground propagation.
    h.with(|s| {
        s.scaled_jobs
            .get_mut("r")
            .map(|v| v["metadata"]["generation"] = json!(2))
    });
    h.reconcile("r").await.expect("reconciled");
    assert!(h.jobs_of("r").is_empty());
    let deletes = h.with(|s| s.deletes.clone());
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().all(|(_, p)| p == "Foreground"), "{deletes:?}");
    assert_eq!(
        h.event_notes("ScaledJobRolloutCleanupStarted"),
        ["Deleting 2 jobs owned by the previous version of the scaledJob"]
    );
    // A restart of the operator (same generation) deletes nothing.
    h.poll("r").await;
    h.reconcile("r").await.expect("reconciled");
    assert_eq!(h.jobs_of("r").len(), 2);

    let g = Harness::new();
    g.put(scaled_job(
        "g",
        &up.url,
        json!({"spec": {"rollout": {"strategy": "gradual"}}}),
    ));
    g.reconcile("g").await.expect("reconciled");
    g.poll("g").await;
    g.with(|s| {
        s.scaled_jobs
            .get_mut("g")
            .map(|v| v["metadata"]["generation"] = json!(2))
    });
    g.reconcile("g").await.expect("reconciled");
    assert_eq!(g.jobs_of("g").len(), 2);
    assert!(g.with(|s| s.deletes.is_empty()));
}

#[tokio::test]
async fn pause_and_unpause() {
    let h = Harness::new();
    let up = Upstream::start(Some(2.0));
    h.put(scaled_job(
        "p",
        &up.url,
        json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": "true"}}}),
    ));
    h.reconcile("p").await.expect("reconciled");
    assert_eq!(
        h.condition("p", "Paused"),
        ("True".into(), "ScaledJobPaused".into())
    );
    // Paused reads Ready=True with KEDA's pause message.
    assert_eq!(h.condition("p", "Ready").0, "True");
    assert!(h.event_reasons().contains(&"ScaledJobPaused".to_string()));
    assert!(!h.ctx.has_loop(&key_of(&h.get("p"))));
    h.with(|s| {
        s.scaled_jobs
            .get_mut("p")
            .map(|v| v["metadata"]["annotations"]["autoscaling.keda.sh/paused"] = json!("false"))
    });
    h.reconcile("p").await.expect("reconciled");
    assert_eq!(
        h.condition("p", "Paused"),
        ("False".into(), "ScaledJobUnpaused".into())
    );
    assert!(h.event_reasons().contains(&"ScaledJobUnpaused".to_string()));
    assert_eq!(h.poll("p").await.created.len(), 2);
}

#[tokio::test]
async fn deletion_removes_the_finalizer_and_says_so() {
    let h = Harness::new();
    let up = Upstream::start(Some(1.0));
    h.put(scaled_job("d", &up.url, json!({})));
    h.reconcile("d").await.expect("reconciled");
    h.with(|s| {
        s.scaled_jobs
            .get_mut("d")
            .map(|v| v["metadata"]["deletionTimestamp"] = json!("2026-12-01T12:00:00Z"))
    });
    h.reconcile("d").await.expect("finalized");
    assert_eq!(
        h.with(|s| s.scaled_jobs["d"]["metadata"]["finalizers"].clone()),
        json!([])
    );
    assert_eq!(h.event_notes("ScaledJobDeleted"), ["ScaledJob was deleted"]);
    // Jobs are left to Kubernetes' garbage collector (owner references).
    assert!(h.with(|s| s.deletes.is_empty()));
}

#[tokio::test]
async fn a_broken_scaled_job_beside_a_healthy_one() {
    let h = Harness::new();
    let up = Upstream::start(Some(2.0));
    h.put(scaled_job("healthy", &up.url, json!({})));
    let mut broken = scaled_job("broken", &up.url, json!({}));
    broken["spec"]["triggers"][0]["authenticationRef"] = json!({"name": "missing"});
    h.put(broken);
    let err = h.reconcile("broken").await.expect_err("fails");
    assert!(err.contains("missing"), "{err}");
    assert_eq!(
        h.condition("broken", "Ready"),
        ("False".into(), "ScaledJobCheckFailed".into())
    );
    assert_eq!(
        h.condition("broken", "Active"),
        ("Unknown".into(), "UnknownState".into())
    );
    assert!(h.event_reasons().contains(&"ScaledJobCheckFailed".to_string()));
    h.reconcile("healthy").await.expect("reconciled");
    assert_eq!(h.poll("healthy").await.created.len(), 2);
    assert!(h.jobs_of("broken").is_empty());

    // A ScaledJob without jobTargetRef.
    let mut no_template = scaled_job("bare", &up.url, json!({}));
    no_template["spec"]
        .as_object_mut()
        .map(|s| s.remove("jobTargetRef"));
    h.put(no_template);
    let err = h.reconcile("bare").await.expect_err("fails");
    assert!(err.contains("ScaledJob.spec.jobTargetRef not found"), "{err}");
}

#[tokio::test]
async fn a_failing_scaler_never_creates_jobs() {
    let h = Harness::new();
    let up = Upstream::start(Some(3.0));
    h.put(scaled_job("f", &up.url, json!({})));
    h.reconcile("f").await.expect("reconciled");
    up.set(None);
    let r = h.poll("f").await;
    assert!(r.error);
    assert!(r.created.is_empty());
    assert_eq!(h.condition("f", "Ready"), ("False".into(), "TriggerError".into()));
    assert!(h.event_reasons().contains(&"KEDAScalerFailed".to_string()));
    // With a standing pool the pool is kept, nothing more.
    let p = Harness::new();
    p.put(scaled_job(
        "pool",
        &up.url,
        json!({"spec": {"minReplicaCount": 1}}),
    ));
    p.reconcile("pool").await.expect("reconciled");
    let r = p.poll("pool").await;
    assert_eq!(r.created.len(), 1);
    assert_eq!(
        p.condition("pool", "Ready"),
        ("Unknown".into(), "PartialTriggerError".into())
    );
    // Jobs that cannot be counted are not guessed at.
    up.set(Some(3.0));
    h.with(|s| s.fail_job_list = true);
    let sj = h.get("f");
    assert!(poll(&h.ctx, &sj).await.is_err());
    assert!(h.jobs_of("f").is_empty());
}

/// `ebb simulate` on a ScaledJob: the shipped example replays, as a table and as JSON lines.
#[test]
fn simulate_replays_the_shipped_scaled_job_example() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args([
                "simulate",
                "-f",
                "examples/simulate/scaledjob.yaml",
                "--trace",
                "examples/simulate/scaledjob-trace.csv",
            ])
            .args(extra)
            .output()
            .expect("ebb runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    };
    let table = run(&["--running", "2", "--job-duration", "100"]);
    assert!(
        table.starts_with("    time s0-aws-sqs-encodes    queue active running pending"),
        "{table}"
    );
    assert!(table.contains("strategy accurate: 9 polls"), "{table}");
    let json = run(&["--output", "json"]);
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 10);
    // 12 queued at 5 per Job: 3 Jobs.
    assert_eq!(lines[1]["created"], 3);
    assert_eq!(lines[4]["triggers"][0]["error"], true);
    assert_eq!(lines[4]["created"], 0);
    assert_eq!(lines[9]["summary"]["strategy"], "accurate");
}

/// A real upstream: an SQS queue on moto read through the real AWS SDK feeds a ScaledJob whose
/// queue URL comes from its Job template's env; the Jobs created are checked.
#[tokio::test]
async fn an_sqs_queue_on_moto_feeds_a_scaled_job() {
    use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
    use ebb::scalers::{
        ScalerContext,
        aws::{AwsOptions, AwsShared},
    };
    let moto = common::moto::Moto::shared();
    let aws = AwsShared::new(AwsOptions {
        web_identity_token_file: None,
        default_credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "test",
        ))),
        default_endpoint: None,
    });
    let setup = ebb::scalers::ScalerConfig {
        trigger_type: "setup".into(),
        auth_params: [("awsAccessKeyID", "testing"), ("awsSecretAccessKey", "testing")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        global_http_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let sdk = aws
        .sdk_config(&setup, "us-east-1", Some(&moto.url))
        .await
        .expect("sdk config");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    sqs.create_queue()
        .queue_name("ebb-scaledjob-encodes")
        .send()
        .await
        .expect("create queue");
    let url = format!("{}/123456789012/ebb-scaledjob-encodes", moto.url);
    for i in 0..7 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("encode {i}"))
            .send()
            .await
            .expect("send");
    }
    // Resolution as `--local` does it (no TriggerAuthentication needed: the env is the template's).
    let h = Harness::with_config(RegistryConfig {
        context: ScalerContext {
            aws,
            ..Default::default()
        },
        resolver: Arc::new(ebb::resolver::StaticResolver {
            sources: ebb::resolver::files::LocalObjects::from_documents(&[]),
            cluster_object_namespace: "ebb".into(),
        }),
        ..Default::default()
    });
    let mut sj = scaled_job("encode", "unused", json!({}));
    sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "QUEUE_URL", "value": url}]);
    sj["spec"]["envSourceContainerName"] = json!("worker");
    sj["spec"]["triggers"] = json!([{"type": "aws-sqs-queue", "metadata": {
        "queueURLFromEnv": "QUEUE_URL", "queueLength": "2", "awsRegion": "us-east-1",
        "awsEndpoint": moto.url, "identityOwner": "operator"}}]);
    h.put(sj);
    h.reconcile("encode").await.expect("reconciled");
    // 7 messages at 2 per Job: ceil(7 / 2) = 4 Jobs (default strategy, max 10).
    let r = h.poll("encode").await;
    assert_eq!(r.readings.len(), 1, "{r:?}");
    assert_eq!(r.readings[0].queue_length, 7.0);
    assert_eq!(r.created.len(), 4, "{r:?}");
    let jobs = h.jobs_of("encode");
    assert_eq!(jobs.len(), 4);
    for job in &jobs {
        assert_eq!(job["metadata"]["labels"]["scaledjob.keda.sh/name"], "encode");
        assert_eq!(
            job["metadata"]["annotations"]["scaledjob.keda.sh/generation"],
            "1"
        );
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "ScaledJob");
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
            json!(url)
        );
    }
    let status = h.with(|s| s.scaled_jobs["encode"]["status"].clone());
    assert_eq!(
        status["triggersActivity"]["s0-aws-sqs-ebb-scaledjob-encodes"]["isActive"],
        true
    );
    // Those 4 Jobs are still pending (no pods): the next poll creates none.
    assert!(h.poll("encode").await.created.is_empty());
}

/// A ScaledJob that does not deserialise (a jobTargetRef without its required template) is
/// reported on its status and with a Warning event, not retried in a loop.
#[tokio::test]
async fn a_malformed_scaled_job_is_reported() {
    let h = Harness::new();
    let mut bad = scaled_job("bad", "http://unused", json!({}));
    bad["spec"]["jobTargetRef"] = json!({"backoffLimit": "many"});
    h.put(bad.clone());
    let guard: kube::core::DeserializeGuard<ScaledJob> = serde_json::from_value(bad).expect("guard");
    assert!(guard.0.is_err());
    ebb::operator::scaled_job::reconcile::reconcile_guarded(Arc::new(guard), h.ctx.clone())
        .await
        .expect("not retried");
    assert_eq!(
        h.condition("bad", "Ready"),
        ("False".into(), "ScaledJobCheckFailed".into())
    );
    let notes = h.event_notes("ScaledJobCheckFailed");
    assert_eq!(notes.len(), 1);
    assert!(notes[0].starts_with("ScaledJob cannot be read: "), "{notes:?}");
    assert!(h.jobs_of("bad").is_empty());
}
