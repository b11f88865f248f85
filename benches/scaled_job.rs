//! One ScaledJob polling cycle over N generated ScaledJobs (default 1,000), each with J Jobs
//! (default 40: running, pending, succeeded, failed, an old generation), printed as time per
//! object and resident memory. Ratios divide by the cost of parsing the ScaledJob's JSON in the
//! same run (these machines are noisy; absolute times are not comparable between runs).
//!
//! Per object, the cycle is the controller's pure work (`ebb::scaling::scaled_job`): combine two
//! trigger readings, count running/pending Jobs from their pods, plan with the strategy, build
//! the Job body, plan history cleanup and the rollout, update conditions. The API calls around
//! it are not included (the scripted-API-server tests in tests/scaled_job.rs cover them).
//!
//! `cargo bench --bench scaled_job -- [--objects N] [--jobs J]`. Without `--bench` (as
//! `cargo test --benches` runs it) a self-check with 50 objects runs and the decisions are
//! checked against what the strategies must give.

use std::{
    collections::HashMap,
    hint::black_box,
    time::{Duration, Instant},
};

use ebb::{
    crd::ScaledJob,
    scaling::scaled_job::{
        Reading,
        jobs::{count, generate_job, history_cleanup, pending_pod_conditions, rollout},
        plan,
        status::{initial_conditions, polled},
    },
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use serde_json::json;

const STRATEGIES: [&str; 4] = ["default", "custom", "accurate", "eager"];

fn scaled_job_json(i: usize) -> Vec<u8> {
    let strategy = STRATEGIES[i % 4];
    serde_json::to_vec(&json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": format!("sj-{i}"), "namespace": format!("ns-{}", i % 10), "uid": format!("u-{i}"),
                     "generation": 2, "labels": {"team": "media", "app": format!("a{i}")},
                     "annotations": {"owner": "video"}},
        "spec": {
            "jobTargetRef": {"backoffLimit": 2, "template": {"spec": {"containers": [{
                "name": "worker", "image": "encoder:1",
                "env": [{"name": "QUEUE_URL", "value": format!("http://sqs.local/1/q{i}")}],
                "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]}}},
            "pollingInterval": 10,
            "maxReplicaCount": 50,
            "minReplicaCount": i % 3,
            "successfulJobsHistoryLimit": 5,
            "failedJobsHistoryLimit": 5,
            "scalingStrategy": {"strategy": strategy, "customScalingRunningJobPercentage": "0.5",
                                "multipleScalersCalculation": "sum",
                                "pendingPodConditions": if i.is_multiple_of(2) { json!(["Ready"]) } else { json!(null) }},
            "triggers": [
                {"type": "aws-sqs-queue", "metadata": {"queueURLFromEnv": "QUEUE_URL", "queueLength": "5", "awsRegion": "eu-west-1"}},
                {"type": "metrics-api", "metadata": {"url": "http://m.local/v", "valueLocation": "v", "targetValue": "2"}}
            ]
        }
    }))
    .unwrap_or_default()
}

/// J Jobs of one ScaledJob and their pods: a fifth each running, pending, succeeded, failed,
/// and from the previous generation.
type JobsAndPods = (Vec<Job>, HashMap<String, Vec<Pod>>);

fn jobs_of(i: usize, n: usize) -> JobsAndPods {
    let mut jobs = Vec::with_capacity(n);
    let mut pods = HashMap::new();
    for j in 0..n {
        let name = format!("sj-{i}-{j:05}");
        let mut v = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"scaledjob.keda.sh/name": format!("sj-{i}")},
                         "annotations": {"scaledjob.keda.sh/generation": if j % 5 == 4 { "1" } else { "2" }}},
            "spec": {"template": {}}, "status": {}});
        match j % 5 {
            2 => {
                v["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}],
                                     "completionTime": format!("2026-12-01T10:{:02}:00Z", j % 60)})
            }
            3 => v["status"] = json!({"conditions": [{"type": "Failed", "status": "True"}]}),
            _ => {}
        }
        let phase = if j % 5 == 1 { "Pending" } else { "Running" };
        pods.insert(
            name.clone(),
            vec![serde_json::from_value(json!({"status": {"phase": phase,
                "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]}}))
            .unwrap_or_default()],
        );
        jobs.push(serde_json::from_value(v).unwrap_or_default());
    }
    (jobs, pods)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What one cycle decided for one object (checked by the self-check).
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    create: i64,
    running: i64,
    pending: i64,
    cleaned: usize,
    rolled: usize,
}

fn cycle(sj: &ScaledJob, jobs: &[Job], pods: &HashMap<String, Vec<Pod>>, queue: f64) -> Outcome {
    let readings = [
        Reading::new(queue, 5.0, queue > 0.0),
        Reading::new(queue / 2.0, 2.0, queue > 0.0),
    ];
    let counts = count(
        jobs,
        |n| pods.get(n).map(Vec::as_slice),
        pending_pod_conditions(sj),
    );
    let (combined, decision) = plan(&sj.spec, &readings, counts.running, counts.pending);
    if decision.create > 0 {
        black_box(generate_job(sj, "bench").ok());
    }
    let mut conditions = initial_conditions();
    black_box(polled(&mut conditions, combined.active, false));
    let cleaned = history_cleanup(sj, jobs).len();
    let rolled = rollout(sj, jobs).delete.len();
    Outcome {
        create: decision.create,
        running: counts.running,
        pending: counts.pending,
        cleaned,
        rolled,
    }
}

struct Figures {
    parse_us: f64,
    cycle_us: f64,
    rss_start: u64,
    rss_loaded: u64,
    rss_after: u64,
    outcomes: Vec<Outcome>,
}

fn run(objects: usize, jobs_per: usize, deadline: Duration) -> Figures {
    let started = Instant::now();
    let rss_start = rss_kib();
    let raw: Vec<Vec<u8>> = (0..objects).map(scaled_job_json).collect();
    let t = Instant::now();
    let parsed: Vec<ScaledJob> = raw
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .collect();
    let parse_us = t.elapsed().as_secs_f64() * 1e6 / objects.max(1) as f64;
    let state: Vec<JobsAndPods> = (0..objects).map(|i| jobs_of(i, jobs_per)).collect();
    let rss_loaded = rss_kib();
    let t = Instant::now();
    let mut outcomes = Vec::with_capacity(objects);
    for (i, sj) in parsed.iter().enumerate() {
        if started.elapsed() > deadline {
            break;
        }
        let (jobs, pods) = &state[i];
        outcomes.push(cycle(sj, jobs, pods, 40.0 + (i % 7) as f64));
    }
    let cycle_us = t.elapsed().as_secs_f64() * 1e6 / outcomes.len().max(1) as f64;
    Figures {
        parse_us,
        cycle_us,
        rss_start,
        rss_loaded,
        rss_after: rss_kib(),
        outcomes,
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !bench {
        let f = run(50, 40, Duration::from_secs(60));
        assert_eq!(f.outcomes.len(), 50, "every object decided");
        for (i, o) in f.outcomes.iter().enumerate() {
            // 40 Jobs: 8 running, 8 pending, 8 succeeded, 8 failed, 8 of generation 1 (unfinished).
            assert_eq!(o.running, 24, "object {i}: {o:?}");
            // Pending: the Jobs whose pod is Pending (with pendingPodConditions [Ready] on even
            // objects: the same 8, whose pods are not Ready).
            assert_eq!(o.pending, 8, "object {i}: {o:?}");
            // History limits 5/5: 3 succeeded and 3 failed go; the rollout removes generation 1.
            assert_eq!((o.cleaned, o.rolled), (6, 8), "object {i}: {o:?}");
            assert!(o.create >= 0 && o.create <= 50, "object {i}: {o:?}");
        }
        assert!(f.cycle_us > 0.0 && f.parse_us > 0.0);
        println!("scaled_job: self-checks passed (cargo bench --bench scaled_job for the figures)");
        return;
    }
    let objects = arg("--objects", 1_000);
    let jobs = arg("--jobs", 40);
    let f = run(objects, jobs, Duration::from_secs(600));
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "ScaledJob polling cycle: {} objects × {jobs} Jobs",
        f.outcomes.len()
    );
    println!("| phase | µs/object | × parse |");
    println!("| --- | --- | --- |");
    println!("| parse ScaledJob JSON (baseline) | {:.1} | 1.0 |", f.parse_us);
    println!(
        "| one polling cycle (decisions) | {:.1} | {:.1} |",
        f.cycle_us,
        f.cycle_us / f.parse_us.max(1e-9)
    );
    println!(
        "| whole cycle over all objects | {:.1} ms total | |",
        f.cycle_us * f.outcomes.len() as f64 / 1000.0
    );
    println!(
        "VmRSS: {:.1} MiB at start, {:.1} MiB with ScaledJobs, Jobs and pods loaded ({:.1} KiB/object), {:.1} MiB after the cycle",
        mib(f.rss_start),
        mib(f.rss_loaded),
        (f.rss_loaded.saturating_sub(f.rss_start)) as f64 / f.outcomes.len().max(1) as f64,
        mib(f.rss_after)
    );
    let created: i64 = f.outcomes.iter().map(|o| o.create).sum();
    println!("Jobs the cycle would create: {created}");
}
