//! Reconcile cost (issue 4): N generated ScaledObjects (default 10,000) through the operator's
//! reconcile and activation logic, printed as time per object and resident memory (nothing is
//! asserted in `--bench` mode).
//!
//! Phases, each over every object while all N stay parsed in memory (as in a watch cache):
//! 1. parse: `serde_json::from_slice` of each object's JSON (the baseline every ratio divides by),
//!    and `serde_json::from_value` next to it;
//! 2. the pure reconcile steps: validation, the registry build (scalers), metric specs, HPA
//!    rendering, `needs_update` against the previous render, the status and condition helpers;
//! 3. the pure scale-loop steps: pause annotations, fallback bookkeeping, scalingModifiers
//!    formulas, `object_activity` + `decide`, and all of them together as one loop decision;
//! 4. the full async `reconcile()` against kube's client on a tower-test mock answered by an
//!    in-process fake API server: first sight (finalizer added), create (HPA absent), and a
//!    steady resync where nothing changed. The fake server's own time is measured and reported
//!    separately, so the operator's share can be told apart.
//!
//! Run with `cargo bench --bench reconcile -- [--objects N] [--rounds R] [--deadline S]
//! [--phases all|pure|reconcile] [--kinds cron,prometheus,...]`. RSS figures are of this process:
//! memory freed by one phase stays with the allocator, so `--phases reconcile` gives the operator's
//! own footprint. Every loop is bounded in count and by the wall-clock deadline; each reconcile
//! has a timeout.
//! Without `--bench` (as `cargo test --benches` runs it) a quick self-check with 100 objects
//! runs instead and the figures are checked for plausibility.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    hint::black_box,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use ebb::{
    cache::MetricCache,
    crd::{
        ScaledObject, ScaledObjectStatus,
        scaled_object::{HealthStatus, MetricTargetType, SCALED_OBJECT_NAME_LABEL},
    },
    operator::{
        context::Context,
        reconcile::{FINALIZER, error_chain, reconcile},
    },
    scalers::{
        MetricSpec, ScalerConfig, ScalerContext, build_scaler,
        http_client::build_http_client,
        registry::{ObjectEntry, Registry, RegistryConfig, object_key},
    },
    scaling::{
        activation::{self, LoopInput, PauseState, TriggerOutcome, pause_state},
        conditions::{READY, initial_conditions},
        events::Event,
        fallback::{self, Step, has_valid_fallback},
        hpa::{hpa_name, needs_update, render_hpa},
        reconcile::{PauseStep, Plan},
        scale_loop::{self, Plan as LoopPlan},
        target::{Resolution, resolution, scale_target_gvkr, scale_target_kind},
        validate::{offline_scaler_config, validate_scaled_object},
    },
};
use http::{Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Client, client::Body};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Specs = Vec<(usize, MetricSpec)>;

/// One reconcile may take this long before it counts as hung.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(10);
/// Objects in the self-check run.
const SELF_CHECK_OBJECTS: usize = 100;
/// Scaler builds timed per trigger type (enough for a per-build figure, bounded in time).
const ATTRIBUTION_CAP: usize = 1_000;
/// Value of `app.kubernetes.io/version` on rendered HPAs.
const VERSION: &str = "bench";

#[derive(Debug, Parser)]
#[command(
    name = "reconcile",
    about = "Time per ScaledObject and RSS of ebb's reconcile and activation logic"
)]
struct Opts {
    /// ScaledObjects generated.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Rounds per phase; the table shows the median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Wall-clock cap in seconds for the whole run; phases stop early (and say so) past it.
    #[arg(long, default_value_t = 1800.0)]
    deadline: f64,
    /// Which phases to run after parsing: `all`, `pure` (phases 2 and 3) or `reconcile`
    /// (phase 4 only, so its RSS is not inflated by memory the pure phases freed).
    #[arg(long, value_enum, default_value_t = PhaseSet::All)]
    phases: PhaseSet,
    /// Trigger types to generate, comma-separated (default: all seven), to attribute costs.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Passed by `cargo bench`; without it only the self-check runs.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PhaseSet {
    All,
    Pure,
    Reconcile,
}

#[derive(Debug, Clone, Copy)]
struct Phases {
    pure: bool,
    reconcile: bool,
}

impl From<PhaseSet> for Phases {
    fn from(p: PhaseSet) -> Self {
        Phases {
            pure: p != PhaseSet::Reconcile,
            reconcile: p != PhaseSet::Pure,
        }
    }
}

fn main() {
    let opts = Opts::parse();
    let all: Vec<Kind> = KIND_WEIGHTS.iter().map(|(k, _)| *k).collect();
    if !opts.bench {
        let report = run(
            SELF_CHECK_OBJECTS,
            1,
            Duration::from_secs(60),
            PhaseSet::All.into(),
            &all,
        );
        self_check(&report);
        println!("reconcile: self-checks passed (cargo bench --bench reconcile for the figures)");
        return;
    }
    if opts.objects == 0 || opts.objects > 1_000_000 {
        eprintln!("reconcile: --objects must be in 1..=1000000");
        std::process::exit(2);
    }
    if opts.rounds == 0 || opts.rounds > 50 {
        eprintln!("reconcile: --rounds must be in 1..=50");
        std::process::exit(2);
    }
    if !(opts.deadline > 0.0 && opts.deadline <= 3600.0) {
        eprintln!("reconcile: --deadline must be in (0, 3600]");
        std::process::exit(2);
    }
    let mut kinds = Vec::new();
    for name in &opts.kinds {
        match all.iter().find(|k| k.type_name() == name.trim()) {
            Some(k) => kinds.push(*k),
            None => {
                eprintln!("reconcile: unknown trigger type {name:?} in --kinds");
                std::process::exit(2);
            }
        }
    }
    if kinds.is_empty() {
        kinds = all;
    }
    let report = run(
        opts.objects,
        opts.rounds,
        Duration::from_secs_f64(opts.deadline),
        opts.phases.into(),
        &kinds,
    );
    print!("{}", report.render());
}

// ---------------------------------------------------------------------------------------------
// Generated ScaledObjects.

/// splitmix64: cheap, deterministic, and good enough to decorrelate the choices per object.
struct Rng(u64);

impl Rng {
    fn for_object(i: usize) -> Self {
        Rng(0x00eb_b5ee_d000_0000 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A hash of small integers, for per-object inputs that must not depend on evaluation order.
fn mix(a: usize, b: usize) -> u64 {
    let mut r = Rng(((a as u64) << 20) ^ b as u64);
    r.next()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cron,
    Prometheus,
    Sqs,
    MetricsApi,
    Cpu,
    Memory,
    Workload,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Kind::Cron => "cron",
            Kind::Prometheus => "prometheus",
            Kind::Sqs => "aws-sqs-queue",
            Kind::MetricsApi => "metrics-api",
            Kind::Cpu => "cpu",
            Kind::Memory => "memory",
            Kind::Workload => "kubernetes-workload",
        }
    }

    fn is_resource(self) -> bool {
        matches!(self, Kind::Cpu | Kind::Memory)
    }
}

/// Weights of the trigger types, roughly what a fleet of KEDA users writes.
const KIND_WEIGHTS: &[(Kind, u64)] = &[
    (Kind::Prometheus, 25),
    (Kind::Cron, 20),
    (Kind::Sqs, 15),
    (Kind::MetricsApi, 15),
    (Kind::Workload, 10),
    (Kind::Cpu, 10),
    (Kind::Memory, 5),
];

fn pick_kind(r: &mut Rng, allowed: &[Kind]) -> Kind {
    let weights = || KIND_WEIGHTS.iter().filter(|(k, _)| allowed.contains(k));
    let total: u64 = weights().map(|(_, w)| w).sum();
    let mut x = r.below(total.max(1));
    for (k, w) in weights() {
        if x < *w {
            return *k;
        }
        x -= w;
    }
    allowed.first().copied().unwrap_or(Kind::Cron)
}

/// What the generator decided, for the self-check's expectations.
#[derive(Debug, Clone, Copy, Default)]
struct Traits {
    /// A trigger is broken on purpose: reconcile must report ScaledObjectCheckFailed.
    invalid: bool,
    /// `paused` or `paused-replicas`: reconcile deletes the HPA and creates none.
    fully_paused: bool,
    /// Carries `scaledobject.keda.sh/name` already (else reconcile patches the label first).
    labeled: bool,
    modifiers: bool,
    fallback: bool,
}

const TIMEZONES: &[&str] = &["Etc/UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];
const CRON_WINDOWS: &[(&str, &str)] = &[
    ("0 8 * * 1-5", "0 18 * * 1-5"),
    ("30 6 * * *", "0 22 * * *"),
    ("0 * * * *", "15 * * * *"),
];
const FORMULAS: &[&str] = &[
    "{a} + {b}",
    "max({a}, {b})",
    "({a} + {b}) / 2",
    "{a} > 10 ? {a} : {b}",
];
const FALLBACK_BEHAVIORS: &[&str] = &[
    "static",
    "currentReplicas",
    "currentReplicasIfHigher",
    "currentReplicasIfLower",
];

fn trigger(kind: Kind, i: usize, ns: &str, name: Option<&str>, broken: bool, r: &mut Rng) -> Value {
    let mut t = match kind {
        Kind::Cron => {
            let (start, end) = r.pick(CRON_WINDOWS);
            json!({"type": "cron", "metadata": {
                "timezone": r.pick(TIMEZONES), "start": start, "end": end,
                "desiredReplicas": (2 + r.below(8)).to_string()}})
        }
        Kind::Prometheus => {
            let mut meta = json!({
                "serverAddress": "http://prometheus.monitoring.svc:9090",
                "query": format!("sum(rate(http_requests_total{{namespace=\"{ns}\",app=\"app-{i}\"}}[2m]))"),
                "threshold": (10 * (1 + r.below(20))).to_string(),
            });
            if r.chance(40) {
                meta["activationThreshold"] = json!("5");
            }
            if broken && let Some(m) = meta.as_object_mut() {
                m.remove("query");
            }
            json!({"type": "prometheus", "metadata": meta})
        }
        Kind::Sqs => {
            let region = r.pick(&["eu-west-1", "us-east-1", "ap-northeast-1"]);
            json!({"type": "aws-sqs-queue", "metadata": {
                "queueURL": format!("https://sqs.{region}.amazonaws.com/123456789012/orders-{i}"),
                "queueLength": (5 * (1 + r.below(10))).to_string(),
                "activationQueueLength": "1",
                // The operator's own identity: no TriggerAuthentication to resolve.
                "identityOwner": "operator"}})
        }
        Kind::MetricsApi => json!({"type": "metrics-api", "metadata": {
            "url": format!("http://stats.{ns}.svc:8080/api/v1/stats"),
            "valueLocation": "components.worker.tasks",
            "targetValue": r.pick(&["2.5", "10", "50"])}}),
        Kind::Workload => json!({"type": "kubernetes-workload", "metadata": {
            "podSelector": format!("app=worker-{i},tier in (batch)"), "value": "5"}}),
        Kind::Cpu => json!({"type": "cpu", "metricType": "Utilization",
            "metadata": {"value": r.pick(&["60", "70", "80"])}}),
        Kind::Memory => {
            let mut t = json!({"type": "memory", "metricType": "AverageValue",
                "metadata": {"value": r.pick(&["256Mi", "512Mi", "1Gi"])}});
            if r.chance(50) {
                t["metadata"]["containerName"] = json!("app");
            }
            t
        }
    };
    if !kind.is_resource() {
        match r.below(20) {
            0..=2 => t["metricType"] = json!("AverageValue"),
            3 => t["metricType"] = json!("Value"),
            _ => {}
        }
        if !matches!(kind, Kind::Cron) && r.chance(20) {
            t["useCachedMetrics"] = json!(true);
        }
    }
    if let Some(n) = name {
        t["name"] = json!(n);
    }
    t
}

/// Object `i` as the API server would send it (finalizer present: ebb has seen it before).
fn scaled_object(i: usize, allowed: &[Kind]) -> (Value, Traits) {
    let mut r = Rng::for_object(i);
    let ns = format!("team-{:02}", i % 64);
    let name = format!("app-{i}");
    let mut tr = Traits {
        // The broken trigger is a prometheus one without its query.
        invalid: r.chance(1) && allowed.contains(&Kind::Prometheus),
        ..Traits::default()
    };

    let count = match r.below(10) {
        0..=5 => 1,
        6..=8 => 2,
        _ => 3,
    };
    let mut kinds: Vec<Kind> = Vec::new();
    for _ in 0..count {
        let k = pick_kind(&mut r, allowed);
        // Two cpu (or memory) triggers would ask the HPA for the same resource metric twice.
        if !(k.is_resource() && kinds.contains(&k)) {
            kinds.push(k);
        }
    }
    if tr.invalid {
        kinds[0] = Kind::Prometheus;
    }
    let external = kinds.iter().filter(|k| !k.is_resource()).count();
    let only_resources = external == 0;
    tr.modifiers = !tr.invalid && external >= 2 && r.chance(35);
    tr.fallback = external > 0 && r.chance(25);

    let mut external_names = Vec::new();
    let triggers: Vec<Value> = kinds
        .iter()
        .enumerate()
        .map(|(k, kind)| {
            let tname = if tr.modifiers && !kind.is_resource() {
                let n = format!("q{k}");
                external_names.push(n.clone());
                Some(n)
            } else if r.chance(15) {
                Some(format!("trigger-{k}"))
            } else {
                None
            };
            trigger(*kind, i, &ns, tname.as_deref(), tr.invalid && k == 0, &mut r)
        })
        .collect();

    let min: Option<i64> = if only_resources {
        Some(1 + r.below(3) as i64)
    } else if r.chance(30) {
        None
    } else {
        Some(r.below(4) as i64)
    };
    let mut spec = json!({
        "scaleTargetRef": {"name": format!("worker-{i}")},
        "triggers": triggers,
    });
    match r.below(100) {
        0..=14 => {
            spec["scaleTargetRef"]["apiVersion"] = json!("apps/v1");
            spec["scaleTargetRef"]["kind"] = json!("StatefulSet");
        }
        15..=24 => {
            spec["scaleTargetRef"]["apiVersion"] = json!("apps/v1");
            spec["scaleTargetRef"]["kind"] = json!("Deployment");
        }
        _ => {}
    }
    if let Some(m) = min {
        spec["minReplicaCount"] = json!(m);
    }
    if r.chance(80) {
        spec["maxReplicaCount"] = json!(min.unwrap_or(0) + 5 + r.below(45) as i64);
    }
    if min.is_some_and(|m| m >= 1) && !only_resources && r.chance(8) {
        spec["idleReplicaCount"] = json!(0);
    }
    if r.chance(50) {
        spec["pollingInterval"] = json!(r.pick(&[5, 15, 30, 60]));
    }
    if r.chance(50) {
        spec["cooldownPeriod"] = json!(r.pick(&[60, 300, 900]));
    }

    let mut advanced = serde_json::Map::new();
    if r.chance(15) {
        let mut hpa = json!({"behavior": {"scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}}});
        if r.chance(30) {
            hpa["name"] = json!(format!("{name}-autoscaler"));
        }
        advanced.insert("horizontalPodAutoscalerConfig".into(), hpa);
    }
    if r.chance(10) {
        advanced.insert("restoreToOriginalReplicaCount".into(), json!(true));
    }
    if tr.modifiers {
        let formula = r
            .pick(FORMULAS)
            .replace("{a}", &external_names[0])
            .replace("{b}", &external_names[1]);
        let mut m = json!({"formula": formula, "target": r.pick(&["10", "20", "2.5"]),
            "activationTarget": "1"});
        if r.chance(30) {
            m["metricType"] = json!("AverageValue");
        }
        advanced.insert("scalingModifiers".into(), m);
    }
    if !advanced.is_empty() {
        spec["advanced"] = Value::Object(advanced);
    }
    if tr.fallback {
        let mut f = json!({"failureThreshold": 1 + r.below(5), "replicas": 2 + r.below(8)});
        if tr.modifiers && r.chance(50) {
            f["behavior"] = json!("scalingModifiers");
        } else if r.chance(60) {
            f["behavior"] = json!(r.pick(FALLBACK_BEHAVIORS));
        }
        spec["fallback"] = f;
    }

    let mut annotations = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), json!(format!("app-{i}")));
    labels.insert("team".into(), json!(format!("team-{}", i % 64)));
    tr.labeled = r.chance(95);
    if tr.labeled {
        labels.insert(SCALED_OBJECT_NAME_LABEL.into(), json!(name));
    }
    if r.chance(5) {
        labels.insert("internal/build".into(), json!(format!("{}", 1000 + i)));
        annotations.insert(
            "scaledobject.keda.sh/hpa-excluded-labels".into(),
            json!("internal/build"),
        );
    }
    if r.chance(20) {
        annotations.insert("owner".into(), json!("platform"));
    }
    if !tr.invalid {
        match r.below(100) {
            0..=1 => {
                annotations.insert(
                    "autoscaling.keda.sh/paused-replicas".into(),
                    json!(r.below(4).to_string()),
                );
                tr.fully_paused = true;
            }
            2..=3 => {
                annotations.insert("autoscaling.keda.sh/paused".into(), json!("true"));
                tr.fully_paused = true;
            }
            4..=5 => {
                annotations.insert("autoscaling.keda.sh/paused-scale-in".into(), json!("true"));
            }
            6 => {
                annotations.insert("autoscaling.keda.sh/paused-scale-out".into(), json!("true"));
            }
            7 => {
                annotations.insert("autoscaling.keda.sh/paused".into(), json!("false"));
            }
            8 => {
                annotations.insert("autoscaling.keda.sh/force-activation".into(), json!("true"));
            }
            _ => {}
        }
    }

    let mut metadata = json!({
        "name": name,
        "namespace": ns,
        "uid": format!("0a1b2c3d-0000-4000-8000-{i:012}"),
        "generation": 1 + r.below(3),
        "resourceVersion": (100_000 + i).to_string(),
        "creationTimestamp": format!("2026-0{}-{:02}T{:02}:00:00Z", 1 + i % 9, 1 + i % 28, i % 24),
        "finalizers": [FINALIZER],
        "labels": labels,
    });
    if !annotations.is_empty() {
        metadata["annotations"] = Value::Object(annotations);
    }
    let so = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata,
        "spec": spec,
    });
    (so, tr)
}

// ---------------------------------------------------------------------------------------------
// Memory.

#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
}

fn mem() -> Mem {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5), so each phase gets its own peak.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Measurement.

#[derive(Debug, Clone, Copy)]
struct Sample {
    elapsed: Duration,
    objects: usize,
    before: Mem,
    after: Mem,
    /// Mock API server time inside `elapsed` (reconcile phases only).
    mock: Duration,
}

fn sample(f: impl FnOnce() -> (usize, Duration)) -> Sample {
    reset_peak();
    let before = mem();
    let (objects, elapsed) = f();
    let after = mem();
    Sample {
        elapsed,
        objects,
        before,
        after,
        mock: Duration::ZERO,
    }
}

/// Times `f` over `items`, stopping early past `deadline`; returns how many were done.
fn timed<T>(items: &[T], deadline: Instant, mut f: impl FnMut(usize, &T)) -> (usize, Duration) {
    let start = Instant::now();
    let mut done = 0;
    for (i, item) in items.iter().enumerate() {
        // Checking the clock every object would itself show up in the cheapest phases.
        if i % 256 == 0 && Instant::now() > deadline {
            break;
        }
        f(i, item);
        done += 1;
    }
    (done, start.elapsed())
}

#[derive(Debug, Default)]
struct Row {
    phase: String,
    /// Items a complete round covers (fewer means the deadline cut it short).
    expected: usize,
    samples: Vec<Sample>,
    note: String,
    /// API requests per reconcile, by method and resource (reconcile phases only).
    requests: BTreeMap<String, u64>,
}

impl Row {
    fn new(phase: &str, expected: usize) -> Self {
        Row {
            phase: phase.to_string(),
            expected,
            ..Row::default()
        }
    }

    /// The round with the median time per object.
    fn median(&self) -> Option<&Sample> {
        let mut s: Vec<&Sample> = self.samples.iter().filter(|s| s.objects > 0).collect();
        s.sort_by(|a, b| per_object(a).total_cmp(&per_object(b)));
        s.get(s.len() / 2).copied()
    }

    fn us(&self) -> f64 {
        self.median().map_or(f64::NAN, per_object)
    }
}

fn per_object(s: &Sample) -> f64 {
    s.elapsed.as_secs_f64() * 1e6 / s.objects.max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// Fake API server behind tower-test's mock service.

/// Enough of an API server for reconcile: stores ScaledObjects, HPAs, scale subresources and
/// status writes, answers everything else with a 404 Status, and counts what it was asked.
#[derive(Default)]
struct FakeApi {
    /// `ns/name` → the ScaledObject's JSON (shared with the bench's input, never copied).
    objects: HashMap<String, Bytes>,
    hpas: HashMap<String, Bytes>,
    statuses: HashMap<String, Value>,
    replicas: HashMap<String, i64>,
    requests: BTreeMap<String, u64>,
    unexpected: Vec<String>,
    /// Time spent answering, so it can be told apart from the operator's time.
    busy: Duration,
}

fn status_json(code: StatusCode, reason: &str, message: &str) -> Value {
    let failure = !code.is_success();
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": if failure { "Failure" } else { "Success" },
           "message": message, "reason": reason, "code": code.as_u16()})
}

impl FakeApi {
    fn answer(&mut self, method: &Method, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
        let seg: Vec<&str> = path.split('/').collect();
        let Some(at) = seg.iter().position(|s| *s == "namespaces") else {
            return self.unexpected(method, path);
        };
        let ns = seg.get(at + 1).copied().unwrap_or_default();
        let resource = seg.get(at + 2).copied().unwrap_or_default();
        let name = seg.get(at + 3).copied();
        let sub = seg.get(at + 4).copied();
        let key = format!("{ns}/{}", name.unwrap_or_default());
        let label = format!(
            "{method} {resource}{}",
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        );
        *self.requests.entry(label).or_default() += 1;
        let not_found = |what: &str| {
            let v = status_json(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{what} \"{}\" not found", name.unwrap_or_default()),
            );
            (StatusCode::NOT_FOUND, to_vec(&v))
        };
        match (method.as_str(), resource, name.is_some(), sub) {
            ("GET" | "PATCH", "scaledobjects", true, None) => match self.objects.get(&key) {
                Some(b) => (StatusCode::OK, b.to_vec()),
                None => not_found("scaledobjects.keda.sh"),
            },
            ("PATCH", "scaledobjects", true, Some("status")) => {
                let Some(stored) = self.objects.get(&key) else {
                    return not_found("scaledobjects.keda.sh");
                };
                let patch: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let status = patch.get("status").cloned().unwrap_or(Value::Null);
                let mut whole: Value = serde_json::from_slice(stored).unwrap_or(Value::Null);
                whole["status"] = status.clone();
                self.statuses.insert(key, status);
                (StatusCode::OK, to_vec(&whole))
            }
            ("GET", "horizontalpodautoscalers", true, None) => match self.hpas.get(&key) {
                Some(b) => (StatusCode::OK, b.to_vec()),
                None => not_found("horizontalpodautoscalers.autoscaling"),
            },
            ("PATCH", "horizontalpodautoscalers", true, None) => {
                self.hpas.insert(key, Bytes::copy_from_slice(body));
                (StatusCode::OK, body.to_vec())
            }
            ("DELETE", "horizontalpodautoscalers", true, None) => match self.hpas.remove(&key) {
                Some(_) => (StatusCode::OK, to_vec(&status_json(StatusCode::OK, "", ""))),
                None => not_found("horizontalpodautoscalers.autoscaling"),
            },
            ("GET", "deployments" | "statefulsets", true, Some("scale")) => {
                let n = name.unwrap_or_default();
                let replicas = *self
                    .replicas
                    .entry(key)
                    .or_insert_with(|| (mix(n.len(), n.bytes().map(usize::from).sum()) % 4) as i64);
                let scale = json!({
                    "apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": n, "namespace": ns, "resourceVersion": "7"},
                    "spec": {"replicas": replicas},
                    "status": {"replicas": replicas, "selector": format!("app={n}")}});
                (StatusCode::OK, to_vec(&scale))
            }
            ("PUT", "deployments" | "statefulsets", true, Some("scale")) => {
                let put: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                if let Some(r) = put.pointer("/spec/replicas").and_then(Value::as_i64) {
                    self.replicas.insert(key, r);
                }
                (StatusCode::OK, body.to_vec())
            }
            ("POST", "events", false, None) | ("PATCH", "events", true, None) => {
                (StatusCode::OK, body.to_vec())
            }
            _ => self.unexpected(method, path),
        }
    }

    fn unexpected(&mut self, method: &Method, path: &str) -> (StatusCode, Vec<u8>) {
        if self.unexpected.len() < 20 {
            self.unexpected.push(format!("{method} {path}"));
        }
        let v = status_json(StatusCode::NOT_FOUND, "NotFound", "not served by the bench");
        (StatusCode::NOT_FOUND, to_vec(&v))
    }
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn lock(api: &Mutex<FakeApi>) -> MutexGuard<'_, FakeApi> {
    api.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(mut handle: Handle, api: Arc<Mutex<FakeApi>>) {
    while let Some((req, send)) = handle.next_request().await {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let (code, reply) = lock(&api).answer(&parts.method, parts.uri.path(), &bytes);
        let response = Response::builder()
            .status(code)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(reply))
            .expect("static response parts are valid");
        send.send_response(response);
        lock(&api).busy += started.elapsed();
    }
}

/// One operator (context, registry, event recorder) against one fresh fake API server.
struct Cluster {
    ctx: Arc<Context>,
    api: Arc<Mutex<FakeApi>>,
    server: tokio::task::JoinHandle<()>,
}

impl Cluster {
    fn start(rt: &tokio::runtime::Runtime, input: &Input) -> Self {
        let _guard = rt.enter();
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let registry = Arc::new(Registry::new(RegistryConfig::default()));
        let cache = Arc::new(MetricCache::new(Duration::from_secs(5)));
        let mut ctx = Context::new(client, registry, cache);
        // Scale loops would poll scalers over the network; the loop's logic is measured apart.
        ctx.spawn_loops = false;
        ctx.version = VERSION.to_string();
        let api = Arc::new(Mutex::new(FakeApi {
            objects: input.by_key(),
            ..FakeApi::default()
        }));
        let server = rt.spawn(serve(handle, api.clone()));
        Cluster {
            ctx: Arc::new(ctx),
            api,
            server,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug, Default, Clone)]
struct PassOutcome {
    ok: usize,
    errors: usize,
    timeouts: usize,
    first_error: Option<String>,
}

/// Reconciles `objects` one after another, as a controller with concurrency 1 would.
async fn reconcile_all(ctx: &Arc<Context>, objects: &[Arc<ScaledObject>], deadline: Instant) -> PassOutcome {
    let mut out = PassOutcome::default();
    for (i, so) in objects.iter().enumerate() {
        if i % 64 == 0 && Instant::now() > deadline {
            break;
        }
        match tokio::time::timeout(RECONCILE_TIMEOUT, reconcile(so.clone(), ctx.clone())).await {
            Ok(Ok(_)) => out.ok += 1,
            Ok(Err(e)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| error_chain(&e));
            }
            Err(_) => out.timeouts += 1,
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The pure pieces, arranged as reconcile and the scale loop arrange them.

/// Metric specs of an object's triggers as reconcile collects them; `None` when a trigger has no
/// scaler (reconcile then reports the object and renders nothing).
fn specs_of(entry: Option<&ObjectEntry>) -> Option<Specs> {
    let entry = entry?;
    let mut specs = Vec::new();
    for t in &entry.triggers {
        let s = t.scaler.as_ref().ok()?;
        specs.extend(s.metric_specs().into_iter().map(|m| (t.index, m)));
    }
    Some(specs)
}

/// The status and events reconcile writes for an object whose target answers with `replicas`:
/// every step of reconcile's plan, without the API calls between them (validation and the HPA
/// render have rows of their own).
fn reconcile_status(
    so: &ScaledObject,
    specs: &Specs,
    replicas: i32,
) -> (Option<ScaledObjectStatus>, Vec<Event>) {
    let mut plan = Plan::new(so);
    if let PauseStep::FullyPaused { replicas, .. } = plan.pause(so) {
        match replicas {
            Ok(count) => plan.fully_paused(count),
            Err(e) => plan.check_failed(e.to_string()),
        }
        return plan.finish();
    }
    if plan.target_named(so).is_err() {
        return plan.finish();
    }
    let gvkr = match resolution(so, plan.status.scale_target_gvkr.as_ref()) {
        Resolution::Known(g) | Resolution::Discover(g) => g,
    };
    if plan.scale_target(&gvkr, Ok(replicas)).is_err() || plan.validation(so, &[], &[]).is_err() {
        return plan.finish();
    }
    plan.hpa_applied(so, &hpa_name(so), specs);
    plan.ready(so);
    plan.finish()
}

/// What one scale-loop iteration learns from outside (scaler reads, `/scale`, the status),
/// prepared before the timed phases: the loop's pure decision is what is measured.
struct LoopPrep {
    /// External metrics: name, HPA target value and type.
    externals: Vec<(String, f64, MetricTargetType)>,
    /// One flag per external metric: did the scaler answer?
    read_ok: Vec<bool>,
    /// One flag per external metric: was its value above activation?
    read_active: Vec<bool>,
    /// Per trigger: (is cpu/memory, index range into `externals`).
    triggers: Vec<(bool, std::ops::Range<usize>)>,
    /// Per trigger: its name (empty when unnamed).
    trigger_names: Vec<String>,
    /// One value per external metric, as the scaler answered.
    values: Vec<f64>,
    /// The status the previous iterations left (health, conditions, lastActiveTime).
    status: ScaledObjectStatus,
    /// `status.health` as the previous iterations left it.
    health: BTreeMap<String, HealthStatus>,
    /// Named trigger values for a scalingModifiers formula.
    named: HashMap<String, Option<f64>>,
    current_replicas: i32,
    last_active: Option<DateTime<Utc>>,
    created: Option<DateTime<Utc>>,
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("a valid fixed instant")
}

fn loop_prep(i: usize, so: &ScaledObject, entry: Option<&ObjectEntry>, specs: Option<&Specs>) -> LoopPrep {
    let mut externals = Vec::new();
    let mut triggers = Vec::new();
    let mut trigger_names = Vec::new();
    let mut values = Vec::new();
    let mut named = HashMap::new();
    for t in entry.map(|e| e.triggers.as_slice()).unwrap_or_default() {
        let from = externals.len();
        for name in &t.metric_names {
            let (value, kind) = specs
                .and_then(|s| {
                    s.iter().find_map(|(_, m)| match m {
                        MetricSpec::External { name: n, target } if n == name => {
                            Some((target.value, target.kind))
                        }
                        _ => None,
                    })
                })
                .unwrap_or((1.0, MetricTargetType::AverageValue));
            externals.push((name.clone(), value, kind));
            values.push((mix(i, t.index) % 40) as f64);
        }
        let resource = t.scaler.is_ok() && t.metric_names.is_empty();
        triggers.push((resource, from..externals.len()));
        trigger_names.push(t.trigger_name.clone());
        if !t.trigger_name.is_empty() {
            named.insert(t.trigger_name.clone(), Some((mix(i, t.index) % 40) as f64));
        }
    }
    let read_ok: Vec<bool> = (0..externals.len())
        .map(|m| !mix(i, 100 + m).is_multiple_of(10))
        .collect();
    let read_active = (0..externals.len())
        .map(|m| mix(i, 200 + m).is_multiple_of(3))
        .collect();
    let mut health = BTreeMap::new();
    if let Some(f) = so.spec.fallback.as_ref() {
        for (m, (name, ..)) in externals.iter().enumerate() {
            // Some metrics are one failure away from falling back, some already fall back.
            let failures = match mix(i, 300 + m) % 4 {
                0 => f.failure_threshold,
                1 => f.failure_threshold + 1,
                _ => 0,
            };
            health.insert(
                name.clone(),
                HealthStatus {
                    number_of_failures: Some(failures),
                    status: Some(
                        if failures > 0 {
                            fallback::FAILING
                        } else {
                            fallback::HAPPY
                        }
                        .to_string(),
                    ),
                },
            );
        }
    }
    let created = so
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0));
    let last_active = match mix(i, 400) % 3 {
        0 => None,
        k => Some(now() - chrono::Duration::minutes((k * 7) as i64)),
    };
    let status = ScaledObjectStatus {
        health: (!health.is_empty()).then(|| health.clone()),
        conditions: Some(initial_conditions()),
        last_active_time: last_active.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ..ScaledObjectStatus::default()
    };
    LoopPrep {
        externals,
        read_ok,
        read_active,
        triggers,
        trigger_names,
        values,
        status,
        health,
        named,
        current_replicas: (mix(i, 500) % 4) as i32,
        last_active,
        created,
    }
}

/// Fallback bookkeeping of one iteration; returns per-metric (active, error) and whether the
/// object falls back.
fn fallback_step(
    so: &ScaledObject,
    p: &LoopPrep,
) -> (Vec<(bool, bool)>, bool, BTreeMap<String, HealthStatus>) {
    let valid = has_valid_fallback(so);
    let mut health = p.health.clone();
    let f = so.spec.fallback.as_ref();
    let mut results = Vec::with_capacity(p.externals.len());
    for (m, (name, target, kind)) in p.externals.iter().enumerate() {
        let mut h = health.get(name).cloned().unwrap_or_default();
        let ok = p.read_ok[m];
        let step = fallback::on_result(so, &mut h, ok);
        if valid {
            health.insert(name.clone(), h);
        }
        results.push(match step {
            Step::Pass if ok => (p.read_active[m], false),
            Step::Synthetic => {
                if let Some(f) = f {
                    let v = fallback::synthetic_value(
                        f.behavior.as_deref(),
                        f.replicas,
                        p.current_replicas,
                        *target,
                        *kind,
                        p.current_replicas.max(1),
                    );
                    black_box(v.ok());
                }
                (true, false)
            }
            Step::ModifiersNil => (false, false),
            _ => (false, true),
        });
    }
    let threshold = f.map_or(0, |f| f.failure_threshold);
    let falling_back = valid && fallback::any_fallback_active(&health, threshold);
    (results, falling_back, health)
}

fn outcomes(p: &LoopPrep, per_metric: &[(bool, bool)]) -> (Vec<TriggerOutcome>, Vec<String>) {
    let mut active_names = Vec::new();
    let out = p
        .triggers
        .iter()
        .map(|(resource, range)| {
            let mut o = TriggerOutcome {
                resource: *resource,
                active: *resource,
                error: !*resource && range.is_empty(),
            };
            for m in range.clone() {
                let (active, error) = per_metric.get(m).copied().unwrap_or_default();
                if active {
                    active_names.push(p.externals[m].0.clone());
                }
                o.active |= active;
                o.error |= error;
            }
            o
        })
        .collect();
    (out, active_names)
}

fn decide(
    so: &ScaledObject,
    pause: &PauseState,
    p: &LoopPrep,
    outcomes: &[TriggerOutcome],
    active_names: &[String],
    composite: Option<(Option<f64>, f64)>,
    kind: &str,
) -> activation::Decision {
    let (is_active, is_error) = activation::object_activity(outcomes, composite);
    activation::decide(&LoopInput {
        spec: &so.spec,
        pause,
        scale_target_kind: kind,
        namespace: so.metadata.namespace.as_deref().unwrap_or_default(),
        current_replicas: p.current_replicas,
        is_active,
        is_error,
        active_triggers: active_names,
        last_active_time: p.last_active,
        creation_timestamp: p.created,
        now: now(),
    })
}

/// One scale-loop iteration's pure work end to end, as `operator::scale_loop::iterate` runs it
/// between its reads: the loop plan over every metric's answer, the decision, the conditions,
/// the status and events to write.
fn loop_decision(so: &ScaledObject, p: &LoopPrep) -> (Option<ScaledObjectStatus>, Vec<Event>) {
    let mut plan = LoopPlan::from_status(so, p.status.clone());
    for (t, (resource, range)) in p.triggers.iter().enumerate() {
        let mut outcome = TriggerOutcome::default();
        if *resource {
            plan.resource_trigger(&mut outcome);
        } else if range.is_empty() {
            plan.scaler_failed(&mut outcome, "no scaler".to_string());
        }
        for m in range.clone() {
            let name = &p.externals[m].0;
            let mut health = plan.health(name).cloned().unwrap_or_default();
            let ok = p.read_ok[m];
            let step = fallback::on_result(so, &mut health, ok);
            let read = if ok {
                Ok((p.values[m], p.read_active[m]))
            } else {
                Err("connection refused".to_string())
            };
            plan.metric(&mut outcome, &p.trigger_names[t], name, (step, health), read);
        }
        plan.trigger_done(outcome);
    }
    let gvkr = plan.scale_target(so);
    let d = plan.decide(so, &gvkr, p.current_replicas, now());
    plan.scaled(&d, Ok(()), now());
    plan.fallback(so);
    plan.finish()
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Input {
    /// Each object's JSON, as one watch event carries it.
    json: Vec<Bytes>,
    traits: Vec<Traits>,
}

impl Input {
    fn generate(n: usize, kinds: &[Kind]) -> Self {
        let mut json = Vec::with_capacity(n);
        let mut traits = Vec::with_capacity(n);
        for i in 0..n {
            let (v, t) = scaled_object(i, kinds);
            json.push(Bytes::from(
                serde_json::to_vec(&v).expect("generated JSON serialises"),
            ));
            traits.push(t);
        }
        Input { json, traits }
    }

    fn by_key(&self) -> HashMap<String, Bytes> {
        self.json
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("team-{:02}/app-{i}", i % 64), b.clone()))
            .collect()
    }

    fn bytes(&self) -> usize {
        self.json.iter().map(Bytes::len).sum()
    }
}

/// Everything a run measured, plus what the self-check looks at.
struct Report {
    objects: usize,
    rounds: usize,
    json_bytes: usize,
    start: Mem,
    after_input: Mem,
    after_parse: Mem,
    peak_reset: bool,
    rows: Vec<Row>,
    passes: Vec<(String, PassOutcome)>,
    unexpected: Vec<String>,
    /// Status conditions after the create pass: (Ready status, Ready reason) → count.
    ready: BTreeMap<(String, String), usize>,
    traits: Vec<Traits>,
    /// Validation problems and HPAs rendered, when the pure phases ran.
    pure: Option<(usize, usize)>,
    triggers_by_type: BTreeMap<String, usize>,
    reconciled: bool,
    hpas_stored: usize,
    kinds: Vec<&'static str>,
    /// Objects in the operator's registry after the create pass.
    registry_len: usize,
    /// JSON the fake API server holds after the create pass (HPAs and statuses).
    store_bytes: usize,
    steady_writes: u64,
    deadline_hit: bool,
}

fn run(n: usize, rounds: usize, deadline: Duration, phases: Phases, kinds: &[Kind]) -> Report {
    let deadline = Instant::now() + deadline;
    let start = mem();
    let input = Input::generate(n, kinds);
    let after_input = mem();
    let mut rows = Vec::new();

    // 1. Parse: the baseline.
    let mut objects: Vec<Arc<ScaledObject>> = Vec::new();
    let mut parse = Row::new("parse: `serde_json::from_slice` (baseline)", n);
    for _ in 0..rounds {
        objects = Vec::new();
        parse.samples.push(sample(|| {
            let start = Instant::now();
            let mut out = Vec::with_capacity(n);
            for b in &input.json {
                out.push(Arc::new(
                    serde_json::from_slice::<ScaledObject>(b).expect("generated objects parse"),
                ));
            }
            let elapsed = start.elapsed();
            objects = out;
            (n, elapsed)
        }));
    }
    rows.push(parse);
    let after_parse = mem();

    let mut from_value = Row::new("parse: `serde_json::from_value`", n);
    // Its Values would stay in the allocator's free lists and inflate every later RSS figure.
    for _ in 0..if phases.pure { rounds } else { 0 } {
        let values: Vec<Value> = input
            .json
            .iter()
            .map(|b| serde_json::from_slice(b).expect("generated JSON parses"))
            .collect();
        from_value.samples.push(sample(|| {
            let start = Instant::now();
            let mut out = Vec::with_capacity(n);
            for v in values {
                out.push(serde_json::from_value::<ScaledObject>(v).expect("generated objects parse"));
            }
            let elapsed = start.elapsed();
            black_box(&out);
            (out.len(), elapsed)
        }));
    }
    if phases.pure {
        rows.push(from_value);
    }
    let mut triggers_by_type: BTreeMap<String, usize> = BTreeMap::new();
    for so in &objects {
        for t in &so.spec.triggers {
            *triggers_by_type.entry(t.type_.clone()).or_default() += 1;
        }
    }
    let pure = phases
        .pure
        .then(|| pure_phases(&objects, rounds, deadline, &mut rows));

    // 4. Full reconcile against the fake API server.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut first = Row::new("reconcile: first sight (adds finalizer)", n);
    let mut create = Row::new("reconcile: create (HPA absent)", n);
    let mut steady = Row::new("reconcile: steady resync (no change)", n);
    let mut passes = Vec::new();
    let mut unexpected = Vec::new();
    let mut ready = BTreeMap::new();
    let mut hpas_stored = 0;
    let mut steady_writes = 0;
    let mut registry_len = 0;
    let mut store_bytes = 0;
    for round in 0..if phases.reconcile { rounds } else { 0 } {
        let cluster = Cluster::start(&rt, &input);
        let unfinalized: Vec<Arc<ScaledObject>> = objects
            .iter()
            .map(|so| {
                let mut so = ScaledObject::clone(so);
                so.metadata.finalizers = None;
                Arc::new(so)
            })
            .collect();
        let (s, out, req) = reconcile_pass(&rt, &cluster, &unfinalized, deadline);
        drop(unfinalized);
        first.samples.push(s);
        first.requests = req;
        passes.push((format!("first sight, round {}", round + 1), out));

        let (s, out, req) = reconcile_pass(&rt, &cluster, &objects, deadline);
        create.samples.push(s);
        create.requests = req;
        passes.push((format!("create, round {}", round + 1), out));

        // What the watch delivers next: the objects with the status and label just written.
        let (resynced, counts, stored) = {
            let api = lock(&cluster.api);
            let mut counts = BTreeMap::new();
            let resynced: Vec<Arc<ScaledObject>> = objects
                .iter()
                .map(|so| {
                    let key = format!(
                        "{}/{}",
                        so.metadata.namespace.as_deref().unwrap_or_default(),
                        so.metadata.name.as_deref().unwrap_or_default()
                    );
                    let mut so = ScaledObject::clone(so);
                    let status: Option<ScaledObjectStatus> = api
                        .statuses
                        .get(&key)
                        .and_then(|s| serde_json::from_value(s.clone()).ok());
                    if let Some(c) = status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.type_ == READY.as_str()))
                    {
                        *counts
                            .entry((c.status.clone(), c.reason.clone().unwrap_or_default()))
                            .or_insert(0) += 1;
                    }
                    so.status = status;
                    let name = so.metadata.name.clone().unwrap_or_default();
                    so.metadata
                        .labels
                        .get_or_insert_default()
                        .insert(SCALED_OBJECT_NAME_LABEL.to_string(), name);
                    Arc::new(so)
                })
                .collect();
            store_bytes = api.hpas.values().map(Bytes::len).sum::<usize>()
                + api.statuses.values().map(|s| to_vec(s).len()).sum::<usize>();
            (resynced, counts, api.hpas.len())
        };
        registry_len = cluster.ctx.registry.len();
        ready = counts;
        hpas_stored = stored;
        let (s, out, req) = reconcile_pass(&rt, &cluster, &resynced, deadline);
        steady.samples.push(s);
        steady_writes = req
            .iter()
            .filter(|(k, _)| !k.starts_with("GET ") && !k.starts_with("DELETE horizontal"))
            .map(|(_, v)| *v)
            .sum();
        steady.requests = req;
        passes.push((format!("steady, round {}", round + 1), out));
        unexpected.append(&mut lock(&cluster.api).unexpected);
        drop(resynced);
        drop(cluster);
    }
    for row in [&mut first, &mut create, &mut steady] {
        let mock = row
            .median()
            .map_or(0.0, |s| s.mock.as_secs_f64() * 1e6 / s.objects.max(1) as f64);
        row.note = format!("fake API server {mock:.1} µs of it");
    }
    if phases.reconcile {
        rows.extend([first, create, steady]);
    }

    let deadline_hit = rows
        .iter()
        .any(|r| r.samples.iter().any(|s| s.objects < r.expected));
    Report {
        objects: n,
        rounds,
        json_bytes: input.bytes(),
        start,
        after_input,
        after_parse,
        peak_reset: reset_peak(),
        rows,
        passes,
        unexpected,
        ready,
        traits: input.traits.clone(),
        pure,
        hpas_stored,
        registry_len,
        store_bytes,
        kinds: kinds.iter().map(|k| k.type_name()).collect(),
        triggers_by_type,
        reconciled: phases.reconcile,
        steady_writes,
        deadline_hit,
    }
}

/// Phases 2 and 3; returns the validation problems found and the HPAs rendered.
fn pure_phases(
    objects: &[Arc<ScaledObject>],
    rounds: usize,
    deadline: Instant,
    rows: &mut Vec<Row>,
) -> (usize, usize) {
    let n = objects.len();
    // 2. Pure reconcile steps.
    let mut problems = 0;
    let mut row = Row::new("validate_scaled_object", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let mut found = 0;
            let r = timed(objects, deadline, |_, so| {
                found += validate_scaled_object(so).len()
            });
            problems = found;
            r
        }));
    }
    rows.push(row);

    let mut registry = Registry::new(RegistryConfig::default());
    let mut row = Row::new("Registry::apply (builds scalers)", n);
    for _ in 0..rounds {
        registry = Registry::new(RegistryConfig::default());
        row.samples
            .push(sample(|| timed(objects, deadline, |_, so| registry.apply(so))));
    }
    row.note = "fresh registry each round".into();
    rows.push(row);
    let entries: Vec<Option<Arc<ObjectEntry>>> =
        objects.iter().map(|so| registry.get(&object_key(so))).collect();

    // Attribution of the two rows above: one scaler build per trigger, by type, built and
    // dropped as validation does; and the HTTP client that some of them build.
    let mut by_type: BTreeMap<String, Vec<ScalerConfig>> = BTreeMap::new();
    for so in objects {
        for (i, t) in so.spec.triggers.iter().enumerate() {
            by_type
                .entry(t.type_.clone())
                .or_default()
                .push(offline_scaler_config(so, i, t));
        }
    }
    let scaler_ctx = ScalerContext::default();
    for (ty, configs) in &mut by_type {
        configs.truncate(ATTRIBUTION_CAP);
        let mut row = Row::new(&format!("build_scaler: {ty} (per trigger)"), configs.len());
        for _ in 0..rounds {
            row.samples.push(sample(|| {
                timed(configs, deadline, |_, c| {
                    black_box(build_scaler(c, &scaler_ctx).is_ok());
                })
            }));
        }
        row.note = format!("first {} triggers of this type", configs.len());
        rows.push(row);
    }
    let http_clients =
        by_type.get("prometheus").map_or(0, Vec::len) + by_type.get("metrics-api").map_or(0, Vec::len);
    drop(by_type);
    let http_clients = http_clients.min(ATTRIBUTION_CAP);
    let mut row = Row::new("build_http_client alone (per call)", http_clients);
    for _ in 0..rounds {
        let calls = vec![(); http_clients];
        row.samples.push(sample(|| {
            timed(&calls, deadline, |_, ()| {
                black_box(build_http_client(Duration::from_secs(3), false, None).is_ok());
            })
        }));
    }
    row.note = "once per prometheus / metrics-api scaler".into();
    rows.push(row);

    let mut specs: Vec<Option<Specs>> = Vec::new();
    let mut row = Row::new("metric specs from the registry entry", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let mut out = Vec::with_capacity(n);
            let r = timed(&entries, deadline, |_, e| out.push(specs_of(e.as_deref())));
            specs = out;
            r
        }));
    }
    rows.push(row);

    let mut rendered: Vec<Option<HorizontalPodAutoscaler>> = Vec::new();
    let mut row = Row::new("render_hpa", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let mut out = Vec::with_capacity(n);
            let r = timed(objects, deadline, |i, so| {
                out.push(
                    specs
                        .get(i)
                        .and_then(Option::as_ref)
                        .and_then(|s| render_hpa(so, s, VERSION).ok()),
                );
            });
            rendered = out;
            r
        }));
    }
    rows.push(row);
    let rendered_count = rendered.iter().flatten().count();

    // The previous render stands in for the live HPA: the steady state, where every field is
    // compared and nothing differs (the most expensive outcome).
    let previous: Vec<Option<HorizontalPodAutoscaler>> = objects
        .iter()
        .enumerate()
        .map(|(i, so)| {
            specs
                .get(i)
                .and_then(Option::as_ref)
                .and_then(|s| render_hpa(so, s, VERSION).ok())
        })
        .collect();
    let mut row = Row::new("needs_update vs previous render", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let mut differ = 0usize;
            let r = timed(&rendered, deadline, |i, d| {
                if let (Some(d), Some(Some(l))) = (d, previous.get(i)) {
                    differ += usize::from(needs_update(d, l));
                }
            });
            black_box(differ);
            r
        }));
    }
    rows.push(row);
    drop(previous);

    let mut row = Row::new("status + conditions (reconcile's plan)", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let empty = Vec::new();
            timed(objects, deadline, |i, so| {
                let s = specs.get(i).and_then(Option::as_ref).unwrap_or(&empty);
                black_box(reconcile_status(so, s, 1));
            })
        }));
    }
    rows.push(row);

    // 3. Pure scale-loop steps.
    let preps: Vec<LoopPrep> = objects
        .iter()
        .enumerate()
        .map(|(i, so)| {
            loop_prep(
                i,
                so,
                entries.get(i).and_then(Option::as_deref),
                specs.get(i).and_then(Option::as_ref),
            )
        })
        .collect();
    let pauses: Vec<PauseState> = objects
        .iter()
        .map(|so| pause_state(so.metadata.annotations.as_ref()))
        .collect();

    let mut row = Row::new("pause_state", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            timed(objects, deadline, |_, so| {
                black_box(pause_state(so.metadata.annotations.as_ref()).any());
            })
        }));
    }
    rows.push(row);

    let mut per_metric: Vec<Vec<(bool, bool)>> = Vec::new();
    let mut row = Row::new("fallback: has_valid_fallback, on_result, synthetic_value", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let mut out = Vec::with_capacity(n);
            let r = timed(objects, deadline, |i, so| {
                let (m, falling, health) = fallback_step(so, &preps[i]);
                black_box((falling, health));
                out.push(m);
            });
            per_metric = out;
            r
        }));
    }
    let with_fallback = objects.iter().filter(|so| so.spec.fallback.is_some()).count();
    row.note = format!("{with_fallback} objects have a fallback");
    rows.push(row);

    let mut composites: Vec<Option<(Option<f64>, f64)>> = Vec::new();
    let mut row = Row::new("scalingModifiers formula: compile + eval", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let mut out = Vec::with_capacity(n);
            let r = timed(objects, deadline, |i, so| {
                out.push(scale_loop::composite(so, &preps[i].named))
            });
            composites = out;
            r
        }));
    }
    let with_modifiers = objects
        .iter()
        .filter(|so| so.spec.uses_scaling_modifiers())
        .count();
    row.note = format!("{with_modifiers} objects use scalingModifiers");
    rows.push(row);

    let kinds: Vec<String> = objects
        .iter()
        .map(|so| scale_target_kind(&scale_target_gvkr(so)))
        .collect();
    let mut row = Row::new("object_activity + decide", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            let empty = Vec::new();
            timed(objects, deadline, |i, so| {
                let p = &preps[i];
                let (outs, names) = outcomes(p, per_metric.get(i).unwrap_or(&empty));
                let c = composites.get(i).copied().flatten();
                black_box(decide(so, &pauses[i], p, &outs, &names, c, &kinds[i]));
            })
        }));
    }
    rows.push(row);

    let mut row = Row::new("scale-loop decision, all pure steps", n);
    for _ in 0..rounds {
        row.samples.push(sample(|| {
            timed(objects, deadline, |i, so| {
                black_box(loop_decision(so, &preps[i]));
            })
        }));
    }
    row.note = "the loop's plan end to end: reads, decision, conditions, status".into();
    rows.push(row);
    drop(preps);
    drop(per_metric);
    drop(entries);
    drop(registry);
    (problems, rendered_count)
}

/// Runs one reconcile pass; the sample's `mock` is the fake API server's share of its time,
/// and the request counts are per reconciled object.
fn reconcile_pass(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    objects: &[Arc<ScaledObject>],
    deadline: Instant,
) -> (Sample, PassOutcome, BTreeMap<String, u64>) {
    let (busy0, req0) = {
        let api = lock(&cluster.api);
        (api.busy, api.requests.clone())
    };
    let mut outcome = PassOutcome::default();
    let mut s = sample(|| {
        let start = Instant::now();
        outcome = rt.block_on(reconcile_all(&cluster.ctx, objects, deadline));
        (outcome.ok + outcome.errors + outcome.timeouts, start.elapsed())
    });
    let api = lock(&cluster.api);
    s.mock = api.busy.saturating_sub(busy0);
    let requests = api
        .requests
        .iter()
        .map(|(k, v)| (k.clone(), v - req0.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    (s, outcome, requests)
}

impl Report {
    fn render(&self) -> String {
        let mut o = String::new();
        let base = self.rows.first().map_or(f64::NAN, Row::us);
        let _ = writeln!(o, "trigger types: {}", self.kinds.join(","));
        let _ = writeln!(
            o,
            "reconcile bench: {} ScaledObjects ({:.1} MiB of JSON, {:.0} bytes each), {} round(s), median round shown",
            self.objects,
            self.json_bytes as f64 / 1048576.0,
            self.json_bytes as f64 / self.objects.max(1) as f64,
            self.rounds
        );
        let _ = writeln!(
            o,
            "VmRSS: {:.1} MiB at start, {:.1} MiB with the JSON, {:.1} MiB with the parsed objects too",
            mib(self.start.rss_kib),
            mib(self.after_input.rss_kib),
            mib(self.after_parse.rss_kib)
        );
        if !self.peak_reset {
            let _ = writeln!(
                o,
                "note: /proc/self/clear_refs not writable: VmHWM is the peak since start"
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "| phase | objects | total ms | µs/object | × parse | VmRSS before → after, round 1 (MiB) | VmHWM in round 1 (MiB) | note |"
        );
        let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for r in &self.rows {
            let Some(m) = r.median() else {
                let _ = writeln!(o, "| {} | 0 | – | – | – | – | – | not run |", r.phase);
                continue;
            };
            let us = r.us();
            // Later rounds reuse memory the allocator kept from earlier ones: round 1 is the
            // honest footprint.
            let first = r.samples.first().unwrap_or(m);
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {:.2} | {:.2} | {:.1} → {:.1} | {:.1} | {} |",
                r.phase,
                m.objects,
                m.elapsed.as_secs_f64() * 1e3,
                us,
                us / base,
                mib(first.before.rss_kib),
                mib(first.after.rss_kib),
                mib(first.after.hwm_kib),
                r.note
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "API requests per reconciled object:");
        for r in self.rows.iter().filter(|r| !r.requests.is_empty()) {
            let n = r.median().map_or(1, |s| s.objects.max(1)) as f64;
            let list: Vec<String> = r
                .requests
                .iter()
                .map(|(k, v)| format!("{k} {:.3}", *v as f64 / n))
                .collect();
            let _ = writeln!(o, "  {}: {}", r.phase, list.join(", "));
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "triggers by type: {:?}", self.triggers_by_type);
        if let Some((problems, rendered)) = self.pure {
            let _ = writeln!(
                o,
                "validation problems: {problems}; HPAs rendered: {rendered}/{}",
                self.objects
            );
        }
        if self.reconciled {
            let _ = writeln!(
                o,
                "after create: {} HPAs stored, Ready conditions {:?}, {} objects in the registry; the fake API server holds {:.1} MiB of HPA and status JSON",
                self.hpas_stored,
                self.ready,
                self.registry_len,
                self.store_bytes as f64 / 1048576.0
            );
            let _ = writeln!(o, "writes in the last steady pass: {}", self.steady_writes);
        }
        for (name, p) in &self.passes {
            if p.errors > 0 || p.timeouts > 0 {
                let _ = writeln!(
                    o,
                    "pass {name}: {} ok, {} errors ({}), {} timeouts",
                    p.ok,
                    p.errors,
                    p.first_error.as_deref().unwrap_or_default(),
                    p.timeouts
                );
            }
        }
        if !self.unexpected.is_empty() {
            let _ = writeln!(o, "unexpected requests: {:?}", self.unexpected);
        }
        if self.deadline_hit {
            let _ = writeln!(
                o,
                "DEADLINE HIT: some phases covered fewer objects than generated"
            );
        }
        o
    }
}

// ---------------------------------------------------------------------------------------------
// Self-check (run without `--bench`).

fn self_check(r: &Report) {
    let text = r.render();
    assert!(!r.deadline_hit, "self-check ran out of time:\n{text}");
    assert!(r.unexpected.is_empty(), "unexpected requests:\n{text}");
    for (name, p) in &r.passes {
        assert_eq!(
            (p.ok, p.errors, p.timeouts),
            (r.objects, 0, 0),
            "pass {name}:\n{text}"
        );
    }
    let invalid = r.traits.iter().filter(|t| t.invalid).count();
    let paused = r.traits.iter().filter(|t| t.fully_paused).count();
    let get = |status: &str, reason: &str| {
        r.ready
            .get(&(status.to_string(), reason.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(get("False", "ScaledObjectCheckFailed"), invalid, "{text}");
    assert_eq!(
        get("True", "ScaledObjectReady"),
        r.objects - invalid - paused,
        "{text}"
    );
    assert_eq!(r.hpas_stored, r.objects - invalid - paused, "{text}");
    let (problems, rendered) = r.pure.unwrap_or_default();
    assert!(problems >= invalid, "{text}");
    assert_eq!(rendered, r.objects - invalid, "{text}");
    // A resync of unchanged objects writes nothing but the repeated check-failed events.
    assert!(r.steady_writes as usize <= invalid, "{text}");
    for row in &r.rows {
        let m = row
            .median()
            .unwrap_or_else(|| panic!("{} not measured:\n{text}", row.phase));
        assert_eq!(m.objects, row.expected, "{}:\n{text}", row.phase);
        assert!(m.elapsed > Duration::ZERO, "{}:\n{text}", row.phase);
    }
    // The generator's mix: every trigger type appears, and the JSON round-trips.
    let every: Vec<Kind> = KIND_WEIGHTS.iter().map(|(k, _)| *k).collect();
    let all = Input::generate(r.objects, &every);
    let types: std::collections::BTreeSet<String> = all
        .json
        .iter()
        .flat_map(|b| {
            let so: ScaledObject = serde_json::from_slice(b).expect("parses");
            so.spec.triggers.into_iter().map(|t| t.type_)
        })
        .collect();
    for t in [
        "cron",
        "prometheus",
        "aws-sqs-queue",
        "metrics-api",
        "cpu",
        "memory",
        "kubernetes-workload",
    ] {
        assert!(types.contains(t), "no {t} trigger among {types:?}");
    }
    assert!(r.traits.iter().any(|t| t.modifiers), "no scalingModifiers object");
    assert!(r.traits.iter().any(|t| t.fallback), "no fallback object");
    assert!(r.traits.iter().any(|t| !t.labeled), "no unlabeled object");
    assert!(mem().rss_kib > 0, "VmRSS readable");
}
