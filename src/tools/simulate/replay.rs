//! The ScaledObject replay: KEDA's scale loop and the HPA controller taking turns over a trace,
//! with a model of the target's pods.
//!
//! Every decision is made by the code ebb runs in the cluster: the scale loop's activation and
//! cooldown (`activation::decide`), fallback bookkeeping and synthetic values (`fallback`), the
//! scalingModifiers formula (`formula`), the scalers' activation thresholds, the HPA ebb
//! writes (`hpa::desired_hpa`); and the Kubernetes HPA controller's model
//! ([`hpa_controller`](crate::scaling::hpa_controller)). The replay only moves time and pods.
//!
//! ```text
//! t = 0, step, ...:  KEDA poll (every pollingInterval) ─┐ at the same instant, KEDA first
//!                    HPA sync (every --sync-period)  ───┘
//!  poll: read triggers → fallback → activity → decide (0↔1, idle, cooldown) → spec.replicas
//!  sync: read HPA metrics as the metrics server answers them (fallback, composite-metric)
//!        → HpaState::sync → spec.replicas
//!  pods: follow spec.replicas at once; a new pod is ready after --startup
//! ```
//!
//! Shared failure counters: like `ebb run` (and KEDA), an HPA read and a scale-loop read of the
//! same metric count into the same `status.health` entry.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

use super::trace::{Trace, TraceError};
use crate::{
    crd::{
        ScaledObject,
        scaled_object::{HealthStatus, MetricTargetType},
    },
    quantity,
    scaling::{
        activation::{self, Action, LoopInput, PauseState, TriggerOutcome, pause_state},
        fallback::{self, Step, has_valid_fallback},
        formula,
        hpa::{COMPOSITE_METRIC_NAME, modifiers_target},
        hpa_controller::{ControllerFlags, HpaConfig, HpaState, ModelError, Observed},
        target::{scale_target_gvkr, scale_target_kind},
    },
};

/// One external metric of one trigger, as the replay reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerMetric {
    /// Trigger index in `spec.triggers`.
    pub trigger: usize,
    /// `spec.triggers[].name` (for scalingModifiers formulas).
    pub trigger_name: String,
    /// `spec.triggers[].type`.
    pub trigger_type: String,
    /// HPA metric name, `s<i>-...`.
    pub metric: String,
    /// The HPA target value.
    pub target: f64,
    /// The HPA target type.
    pub kind: MetricTargetType,
    /// The scaler's activation threshold (active when value > it).
    pub activation: f64,
    /// The trace column that feeds it.
    pub column: usize,
}

/// A cpu/memory trigger: the HPA reads it from metrics.k8s.io, which a trace does not model.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceTrigger {
    /// Trigger index.
    pub trigger: usize,
}

/// Everything the replay needs besides the trace.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The ScaledObject.
    pub so: ScaledObject,
    /// The HPA ebb would write for it (`None`: no HPA, e.g. fully paused).
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// External trigger metrics, in trigger order.
    pub metrics: Vec<TriggerMetric>,
    /// Triggers the replay cannot feed (cpu/memory).
    pub resources: Vec<ResourceTrigger>,
    /// Replicas at the start.
    pub replicas: i32,
    /// HPA sync period.
    pub sync_period_ms: i64,
    /// Pod startup time (until ready).
    pub startup_ms: i64,
    /// Controller-manager flags.
    pub flags: ControllerFlags,
}

/// Why a replay cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace does not fit the object.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The HPA cannot be modelled.
    #[error("the HPA cannot be modelled: {0}")]
    Model(#[from] ModelError),
    /// A trigger has no column.
    #[error("the trace has no column for trigger {trigger} ({metric}); name one `{metric}` or `s{trigger}`")]
    MissingColumn {
        /// Trigger index.
        trigger: usize,
        /// Its metric.
        metric: String,
    },
    /// Bad timing parameters.
    #[error("{0}")]
    Timing(String),
}

/// Who acted at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// KEDA's scale loop polled.
    Keda,
    /// The HPA controller synced.
    Hpa,
}

/// One metric at one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricRow {
    /// The trace value (or the synthetic/composite value the HPA read), if any.
    pub value: Option<f64>,
    /// The HPA's replica proposal for it (HPA steps only).
    pub proposal: Option<i32>,
    /// The read failed (trace `error` column, or no value yet).
    pub error: Option<String>,
    /// Fallback answers for it.
    pub fallback: bool,
}

/// One row of the replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// Milliseconds from the start.
    pub time_ms: i64,
    /// Who acted.
    pub actor: Actor,
    /// Per HPA metric name (or trigger metric on KEDA steps).
    pub metrics: Vec<(String, MetricRow)>,
    /// The HPA's desired replicas after its last sync.
    pub desired: i32,
    /// `spec.replicas` after this step.
    pub replicas: i32,
    /// Ready pods after this step.
    pub ready: i32,
    /// KEDA's last activity verdict.
    pub active: bool,
    /// The target is at `idleReplicaCount` (or 0) because KEDA deactivated it.
    pub idle: bool,
    /// Any metric is falling back.
    pub fallback: bool,
    /// What limits the count now: a `ScalingLimited` reason, a `ScalingActive=False` reason,
    /// `paused`, or empty.
    pub limit: String,
    /// Event reasons and messages of this step.
    pub events: Vec<String>,
}

/// Totals over the replay.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Simulated seconds.
    pub duration_seconds: f64,
    /// ∫ replicas dt (cost).
    pub replica_seconds: f64,
    /// Most replicas at once.
    pub max_replicas: i32,
    /// Fewest replicas at once.
    pub min_replicas: i32,
    /// Seconds during which some metric was above its target for the ready pods (a backlog
    /// grows): `AverageValue` value > target × ready pods, `Value` value > target.
    pub seconds_under_target: f64,
    /// Changes of `spec.replicas`.
    pub scale_events: usize,
    /// HPA syncs simulated.
    pub hpa_syncs: usize,
    /// KEDA polls simulated.
    pub keda_polls: usize,
}

/// The replay's result.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// HPA metric names, in HPA order (the table's columns).
    pub metric_names: Vec<String>,
    /// Targets of those metrics, for the chart.
    pub targets: Vec<(f64, MetricTargetType)>,
    /// One row per poll or sync.
    pub rows: Vec<Row>,
    /// Totals.
    pub summary: Summary,
    /// Things the user should know (e.g. cpu triggers that were not simulated).
    pub warnings: Vec<String>,
}

/// The target's pods: creation times, oldest first.
#[derive(Debug, Default)]
struct Pods {
    created: Vec<i64>,
}

impl Pods {
    fn scale(&mut self, to: i32, now: i64) {
        let to = usize::try_from(to).unwrap_or(0);
        // A ReplicaSet deletes not-ready and newer pods first: drop from the young end.
        self.created.truncate(to);
        while self.created.len() < to {
            self.created.push(now);
        }
    }

    fn ready(&self, now: i64, startup_ms: i64) -> i32 {
        let n = self.created.iter().filter(|c| **c + startup_ms <= now).count();
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    fn count(&self) -> i32 {
        i32::try_from(self.created.len()).unwrap_or(i32::MAX)
    }
}

/// The metric value as the HPA receives it: KEDA's milli-rounded quantity, read with
/// `MilliValue`, through the same formatting the metrics server uses.
fn served_milli(value: f64) -> Result<i64, String> {
    let text = quantity::format_milli(value).map_err(|e| e.to_string())?;
    quantity::parse(&text)
        .map(|q| q.milli_value())
        .map_err(|e| e.to_string())
}

/// The replay state.
struct Replay<'a> {
    setup: &'a Setup,
    trace: &'a Trace,
    pause: PauseState,
    valid_fallback: bool,
    health: BTreeMap<String, HealthStatus>,
    cursor: usize,
    replicas: i32,
    pods: Pods,
    last_active: Option<DateTime<Utc>>,
    active: bool,
    desired: i32,
    hpa: Option<(HpaConfig, HpaState)>,
    hpa_metric_names: Vec<String>,
    scale_events: usize,
    origin: DateTime<Utc>,
    kind: String,
    composite: Option<(f64, MetricTargetType)>,
}

/// A trigger read at one instant.
struct Read {
    value: Result<f64, String>,
}

impl<'a> Replay<'a> {
    fn read(&mut self, m: &TriggerMetric, now_ms: i64) -> Read {
        let row = self.trace.row_at(now_ms, &mut self.cursor);
        if self.trace.fails(row, &m.metric, m.trigger) {
            return Read {
                value: Err(format!("trigger {} failed (trace error column)", m.trigger)),
            };
        }
        Read {
            value: self.trace.values[m.column][row].ok_or_else(|| format!("no value for {} yet", m.metric)),
        }
    }

    fn step_health(&mut self, metric: &str, ok: bool) -> Step {
        let health = self.health.entry(metric.to_string()).or_default();
        fallback::on_result(&self.setup.so, health, ok)
    }

    fn falling_back(&self) -> bool {
        let threshold = self
            .setup
            .so
            .spec
            .fallback
            .as_ref()
            .map_or(0, |f| f.failure_threshold);
        self.valid_fallback && fallback::any_fallback_active(&self.health, threshold)
    }

    fn now(&self, ms: i64) -> DateTime<Utc> {
        self.origin + Duration::milliseconds(ms)
    }

    fn set_replicas(&mut self, to: i32, now_ms: i64) {
        if to != self.replicas {
            self.scale_events += 1;
            self.replicas = to;
        }
        self.pods.scale(to, now_ms);
    }

    fn ready(&self, now_ms: i64) -> i32 {
        let row = self
            .trace
            .times_ms
            .partition_point(|t| *t <= now_ms)
            .saturating_sub(1);
        let own = self.pods.ready(now_ms, self.setup.startup_ms);
        match self.trace.ready.get(row).copied().flatten() {
            Some(r) => r.min(self.pods.count()),
            None => own,
        }
    }

    /// One KEDA scale-loop iteration.
    fn poll(&mut self, now_ms: i64) -> Row {
        let mut outcomes = Vec::new();
        let mut active_names = Vec::new();
        let mut named: HashMap<String, Option<f64>> = HashMap::new();
        let mut rows = Vec::new();
        let metrics = self.setup.metrics.clone();
        let mut current_trigger = None;
        for m in &metrics {
            if current_trigger != Some(m.trigger) {
                outcomes.push(TriggerOutcome::default());
                current_trigger = Some(m.trigger);
            }
            let read = self.read(m, now_ms);
            let step = self.step_health(&m.metric, read.value.is_ok());
            let (active, error) = match (step, &read.value) {
                (Step::Pass, Ok(v)) => {
                    if !m.trigger_name.is_empty() {
                        named.insert(m.trigger_name.clone(), Some(*v));
                    }
                    (*v > m.activation, false)
                }
                (Step::Synthetic, _) => (true, false),
                (Step::ModifiersNil, _) => (false, false),
                (_, Err(_)) | (Step::Error, Ok(_)) => (false, true),
            };
            if let Some(outcome) = outcomes.last_mut() {
                outcome.active |= active;
                outcome.error |= error;
            }
            if active {
                active_names.push(m.metric.clone());
            }
            rows.push((
                m.metric.clone(),
                MetricRow {
                    value: read.value.as_ref().ok().copied(),
                    proposal: None,
                    error: read.value.err(),
                    fallback: step == Step::Synthetic,
                },
            ));
        }
        for _ in &self.setup.resources {
            outcomes.push(TriggerOutcome {
                resource: true,
                active: true,
                error: false,
            });
        }
        let composite = crate::scaling::scale_loop::composite(&self.setup.so, &named);
        let (is_active, is_error) = activation::object_activity(&outcomes, composite);
        let now = self.now(now_ms);
        let decision = activation::decide(&LoopInput {
            spec: &self.setup.so.spec,
            pause: &self.pause,
            scale_target_kind: &self.kind,
            namespace: self.setup.so.metadata.namespace.as_deref().unwrap_or("default"),
            current_replicas: self.replicas,
            is_active,
            is_error,
            active_triggers: &active_names,
            last_active_time: self.last_active,
            creation_timestamp: Some(self.origin),
            now,
        });
        let mut events = Vec::new();
        if let Action::ScaleTo { replicas, .. } = decision.action {
            self.set_replicas(replicas, now_ms);
        }
        if decision.set_last_active {
            self.last_active = Some(now);
        }
        if let Some(e) = decision.event {
            events.push(format!("{}: {}", e.reason, e.message));
        }
        self.active = is_active || self.pause.force_activation;
        let limit = if self.pause.is_fully_paused() {
            "paused".to_string()
        } else {
            String::new()
        };
        Row {
            time_ms: now_ms,
            actor: Actor::Keda,
            metrics: rows,
            desired: self.desired,
            replicas: self.replicas,
            ready: self.ready(now_ms),
            active: self.active,
            idle: self.idle(),
            fallback: self.falling_back(),
            limit,
            events,
        }
    }

    /// KEDA has the target at its idle count (`idleReplicaCount`, else 0) for inactivity.
    fn idle(&self) -> bool {
        let idle = self.setup.so.spec.idle_replica_count.unwrap_or(0);
        !self.active && self.replicas <= idle
    }

    /// What the metrics server answers for one HPA metric.
    fn serve(&mut self, name: &str, now_ms: i64, ready: i32) -> (Result<f64, String>, bool) {
        if name.eq_ignore_ascii_case(COMPOSITE_METRIC_NAME)
            && let Some((target, kind)) = self.composite
        {
            return self.serve_composite(now_ms, ready, target, kind);
        }
        let Some(m) = self
            .setup
            .metrics
            .iter()
            .find(|m| m.metric.eq_ignore_ascii_case(name))
            .cloned()
        else {
            return (Err(format!("no trigger serves metric {name}")), false);
        };
        let read = self.read(&m, now_ms);
        match self.step_health(&m.metric, read.value.is_ok()) {
            Step::Pass => (read.value, false),
            Step::Synthetic => (self.synthetic(m.target, m.kind, ready), true),
            Step::Error | Step::ModifiersNil => (read.value.and(Err("scaler error".to_string())), false),
        }
    }

    fn synthetic(&self, target: f64, kind: MetricTargetType, ready: i32) -> Result<f64, String> {
        let Some(f) = self.setup.so.spec.fallback.as_ref() else {
            return Err("no fallback is configured".to_string());
        };
        fallback::synthetic_value(
            f.behavior.as_deref().filter(|b| !b.is_empty()),
            f.replicas,
            self.replicas,
            target,
            kind,
            ready,
        )
        .map_err(|e| e.to_string())
    }

    /// The `composite-metric`: every trigger read, fallback per metric, then the formula
    /// (as `external_metrics::fallback::composite` does for a live read).
    fn serve_composite(
        &mut self,
        now_ms: i64,
        ready: i32,
        target: f64,
        kind: MetricTargetType,
    ) -> (Result<f64, String>, bool) {
        let mut values: HashMap<String, Option<f64>> = HashMap::new();
        let mut fell_back = false;
        for m in self.setup.metrics.clone() {
            let read = self.read(&m, now_ms);
            let value = match (self.step_health(&m.metric, read.value.is_ok()), read.value) {
                (Step::Pass, Ok(v)) => Some(v),
                (Step::Synthetic, _) => {
                    fell_back = true;
                    match self.synthetic(target, kind, ready) {
                        Ok(v) => Some(v),
                        Err(e) => return (Err(format!("{}: {e}", m.metric)), true),
                    }
                }
                (Step::ModifiersNil, _) => None,
                (_, Err(e)) => {
                    return (
                        Err(format!("trigger {} ({}): {e}", m.trigger, m.trigger_type)),
                        false,
                    );
                }
                (Step::Error, Ok(_)) => return (Err(m.metric.clone()), false),
            };
            formula::add_to_trigger(&mut values, &m.trigger_name, value);
        }
        match fallback::composite_value(&self.setup.so, &values, target) {
            Ok((v, nil_fallback)) => (Ok(v), fell_back || nil_fallback),
            Err(e) => (Err(e.to_string()), fell_back),
        }
    }

    /// One HPA controller sync.
    fn sync(&mut self, now_ms: i64) -> Option<Row> {
        self.hpa.as_ref()?;
        let ready = self.ready(now_ms);
        let names = self.hpa_metric_names.clone();
        let mut served: Vec<(Result<f64, String>, bool)> = Vec::with_capacity(names.len());
        // The controller reads metrics only when it will use them.
        let (config, _) = self.hpa.as_ref()?;
        let reads_metrics = !(self.replicas == 0 && config.min_replicas != 0)
            && self.replicas <= config.max_replicas
            && self.replicas >= config.min_replicas;
        if reads_metrics {
            for n in &names {
                served.push(self.serve(n, now_ms, ready));
            }
        }
        let milli: Vec<Result<[i64; 1], String>> = served
            .iter()
            .map(|(v, _)| v.clone().and_then(|v| served_milli(v).map(|m| [m])))
            .collect();
        let reads: Vec<Result<&[i64], String>> = milli
            .iter()
            .map(|r| r.as_ref().map(|a| &a[..]).map_err(Clone::clone))
            .collect();
        let (config, state) = self.hpa.as_mut()?;
        let result = state.sync(
            config,
            &Observed {
                now_ms,
                spec_replicas: self.replicas,
                status_replicas: self.pods.count(),
                ready_pods: ready,
                metrics: &reads,
            },
        );
        let limit = match (
            state.condition("ScalingActive"),
            state.condition("ScalingLimited"),
        ) {
            (Some(a), _) if !a.status => a.reason.to_string(),
            (_, Some(l)) if l.status => l.reason.to_string(),
            _ => String::new(),
        };
        let events = result
            .events
            .iter()
            .map(|e| format!("{}: {}", e.reason, e.message))
            .collect();
        let metrics = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (value, fell_back) = served
                    .get(i)
                    .map(|(v, f)| (v.clone(), *f))
                    .unwrap_or((Err(String::new()), false));
                (
                    n.clone(),
                    MetricRow {
                        value: value.as_ref().ok().copied(),
                        proposal: result.metrics.get(i).and_then(|m| m.proposal.clone().ok()),
                        error: value.err().filter(|e| !e.is_empty()),
                        fallback: fell_back,
                    },
                )
            })
            .collect();
        self.desired = result.desired;
        if result.rescale {
            self.set_replicas(result.desired, now_ms);
        }
        Some(Row {
            time_ms: now_ms,
            actor: Actor::Hpa,
            metrics,
            desired: self.desired,
            replicas: self.replicas,
            ready: self.ready(now_ms),
            active: self.active,
            idle: self.idle(),
            fallback: self.falling_back(),
            limit,
            events,
        })
    }

    /// Whether some metric is above its target for the ready pods at `now_ms`.
    fn under_target(&mut self, now_ms: i64, ready: i32) -> bool {
        let row = self.trace.row_at(now_ms, &mut self.cursor);
        self.setup.metrics.iter().any(|m| {
            let Some(v) = self.trace.values[m.column][row] else {
                return false;
            };
            match m.kind {
                MetricTargetType::Value => v > m.target,
                _ => v > m.target * f64::from(ready.max(0)),
            }
        })
    }
}

/// Replays `trace` through the setup's object and HPA.
pub fn run(setup: &Setup, trace: &Trace) -> Result<Outcome, ReplayError> {
    if setup.sync_period_ms <= 0 {
        return Err(ReplayError::Timing("--sync-period must be positive".to_string()));
    }
    let so = &setup.so;
    let poll_ms = i64::try_from(so.spec.polling_interval_secs())
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000)
        .max(1);
    let (hpa, hpa_metric_names) = match setup.hpa.as_ref().and_then(|h| h.spec.as_ref()) {
        Some(spec) => {
            let ns = so.metadata.namespace.as_deref().unwrap_or("default");
            let (config, _skipped) = HpaConfig::from_spec(spec, ns, &setup.flags)?;
            let names = config.metrics.iter().map(|m| m.name.clone()).collect();
            (Some((config, HpaState::default())), names)
        }
        None => (None, Vec::new()),
    };
    let pause = pause_state(so.metadata.annotations.as_ref());
    let gvkr = scale_target_gvkr(so);
    let mut replay = Replay {
        setup,
        trace,
        valid_fallback: has_valid_fallback(so),
        health: BTreeMap::new(),
        cursor: 0,
        replicas: setup.replicas,
        pods: Pods::default(),
        last_active: None,
        active: false,
        desired: setup.replicas,
        hpa,
        hpa_metric_names: hpa_metric_names.clone(),
        scale_events: 0,
        origin: trace.start.unwrap_or(DateTime::UNIX_EPOCH),
        kind: scale_target_kind(&gvkr),
        composite: modifiers_target(so).ok().flatten(),
        pause,
    };
    let mut warnings = Vec::new();
    for r in &setup.resources {
        warnings.push(format!(
            "trigger {} ({}) is a cpu/memory trigger: the HPA reads it from metrics.k8s.io, which the trace does not model; it is left out",
            r.trigger,
            so.spec.triggers.get(r.trigger).map_or("", |t| t.type_.as_str())
        ));
    }
    replay.pods.scale(setup.replicas, -setup.startup_ms);
    // Paused with a replica count: KEDA's reconcile sets it once and nothing else moves.
    if let Ok(Some(n)) = replay.pause.paused_replica_count() {
        replay.set_replicas(n, 0);
        replay.scale_events = 0;
        replay.pods.scale(n, -setup.startup_ms);
    }
    if replay.pause.is_fully_paused() {
        replay.hpa = None;
    }
    let end = trace.end_ms();
    let mut rows = Vec::new();
    let mut summary = Summary {
        min_replicas: replay.replicas,
        max_replicas: replay.replicas,
        ..Summary::default()
    };
    let (mut next_poll, mut next_sync) = (0i64, 0i64);
    let mut last_t = 0i64;
    let mut last_under = false;
    let mut last_replicas = replay.replicas;
    while next_poll <= end || next_sync <= end {
        let t = next_poll.min(next_sync);
        // Integrate the interval just ended at the state it had.
        let dt = (t - last_t) as f64 / 1000.0;
        summary.replica_seconds += f64::from(last_replicas) * dt;
        if last_under {
            summary.seconds_under_target += dt;
        }
        if next_poll == t {
            rows.push(replay.poll(t));
            summary.keda_polls += 1;
            next_poll += poll_ms;
        }
        if next_sync == t {
            if let Some(row) = replay.sync(t) {
                rows.push(row);
                summary.hpa_syncs += 1;
            }
            next_sync += setup.sync_period_ms;
        }
        summary.max_replicas = summary.max_replicas.max(replay.replicas);
        summary.min_replicas = summary.min_replicas.min(replay.replicas);
        last_replicas = replay.replicas;
        let ready = replay.ready(t);
        last_under = replay.under_target(t, ready);
        last_t = t;
    }
    summary.duration_seconds = end as f64 / 1000.0;
    summary.scale_events = replay.scale_events;
    let targets = hpa_metric_names
        .iter()
        .map(|n| {
            setup
                .metrics
                .iter()
                .find(|m| m.metric.eq_ignore_ascii_case(n))
                .map(|m| (m.target, m.kind))
                .or(replay.composite)
                .unwrap_or((0.0, MetricTargetType::AverageValue))
        })
        .collect();
    let metric_names = if hpa_metric_names.is_empty() {
        setup.metrics.iter().map(|m| m.metric.clone()).collect()
    } else {
        hpa_metric_names
    };
    Ok(Outcome {
        metric_names,
        targets,
        rows,
        summary,
        warnings,
    })
}
