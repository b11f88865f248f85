//! One poll of a ScaledJob's scale loop (spec `scaledjob.md` §4, §7, §9): read every trigger,
//! count Jobs, decide with `crate::scaling::scaled_job`, create Jobs, trim history, write status.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use chrono::SecondsFormat;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tracing::{debug, warn};

use super::{
    JobContext, key_of,
    reconcile::{JobError, patch_status},
};
use crate::{
    cache::Outcome,
    crd::{ScaledJob, scaled_job::SCALED_JOB_NAME_LABEL, scaled_object::TriggerActivity},
    keda_metrics::{ScaledResourceType, ScalerLabels, scaler_label},
    scalers::{
        MetricSpec,
        registry::{ObjectEntry, Resolved},
    },
    scaling::{
        events::{Event, EventReason},
        scaled_job::{
            Combined, Decision, Reading,
            jobs::{self, Counts},
            plan, status,
        },
    },
};

/// What one poll saw and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PollReport {
    /// Readings of the triggers that answered, in trigger order.
    pub readings: Vec<Reading>,
    /// Whether a trigger failed.
    pub error: bool,
    /// Triggers combined.
    pub combined: Combined,
    /// Jobs counted before creating.
    pub counts: Counts,
    /// The decision.
    pub decision: Decision,
    /// Names of the Jobs created.
    pub created: Vec<String>,
    /// Names of the finished Jobs deleted by history cleanup.
    pub cleaned: Vec<String>,
}

/// Reads trigger `ti`'s metrics of `entry` through the cache.
async fn read_trigger(ctx: &JobContext, entry: &Arc<ObjectEntry>, ti: usize) -> Vec<(String, Outcome, f64)> {
    let mut out = Vec::new();
    for (mi, metric) in entry.triggers[ti].metric_names.iter().enumerate() {
        let resolved = Resolved {
            object: entry.clone(),
            trigger: ti,
            metric: mi,
            metric_name: metric.clone(),
        };
        let started = Instant::now();
        let (read, _) = ctx.cache.read(&resolved).await;
        let failed = read.is_err();
        out.push((metric.clone(), read, started.elapsed().as_secs_f64()));
        if failed {
            break;
        }
    }
    out
}

/// One poll of `sj` as just read from the API server.
pub async fn poll(ctx: &Arc<JobContext>, sj: &ScaledJob) -> Result<PollReport, JobError> {
    let key = key_of(sj);
    let mut report = PollReport::default();
    let mut events: Vec<Event> = Vec::new();
    let mut activity = BTreeMap::new();
    let mut entry = ctx.register(sj);
    let trigger_count = entry.as_ref().map_or(0, |e| e.triggers.len());
    for ti in 0..trigger_count {
        let Some(e) = entry.clone() else { break };
        let t = &e.triggers[ti];
        let labels = |metric: &str| ScalerLabels {
            namespace: key.namespace.clone(),
            metric: metric.to_string(),
            scaled_object: key.name.clone(),
            scaler: scaler_label(&t.trigger_name, &t.trigger_type),
            trigger_index: t.index,
            type_: ScaledResourceType::ScaledJob,
        };
        let scaler = match &t.scaler {
            Ok(s) => s.clone(),
            Err(err) => {
                report.error = true;
                events.push(Event::warning(EventReason::ScalerFailed, err.to_string()));
                if let Some(m) = &ctx.metrics {
                    m.record_scaled_job_error(&key.namespace, &key.name);
                }
                continue;
            }
        };
        // cpu/memory triggers have no External metric: they contribute nothing to a ScaledJob.
        let targets: Vec<f64> = scaler
            .metric_specs()
            .into_iter()
            .filter_map(|m| match m {
                MetricSpec::External { target, .. } => Some(target.value),
                MetricSpec::Resource { .. } => None,
            })
            .collect();
        if targets.is_empty() || t.metric_names.is_empty() {
            continue;
        }
        let target = targets.iter().sum::<f64>() / targets.len() as f64;
        let mut reads = read_trigger(ctx, &e, ti).await;
        if reads.iter().any(|(_, r, _)| r.is_err()) {
            // KEDA refreshes the scaler once and retries before giving up on the trigger.
            debug!(scaledjob = %key, trigger = ti, "scaler failed; rebuilding it once");
            entry = ctx.rebuild(sj);
            if let Some(fresh) = entry.as_ref().filter(|f| f.triggers.len() == trigger_count) {
                reads = read_trigger(ctx, fresh, ti).await;
            }
        }
        let mut queue = 0.0;
        let mut active = false;
        let mut failed = false;
        for (i, (metric, read, latency)) in reads.iter().enumerate() {
            match read.as_ref() {
                Ok(sample) => {
                    let sum: f64 = sample.values.iter().sum();
                    if i == 0 {
                        queue += sum;
                    }
                    active |= sample.active;
                    if let Some(m) = &ctx.metrics {
                        let l = labels(metric);
                        m.record_scaler_value(&l, sum);
                        m.record_scaler_latency(&l, std::time::Duration::from_secs_f64(*latency));
                        m.set_active(&l, sample.active);
                        m.record_job_scaler_success(&l);
                    }
                }
                Err(err) => {
                    failed = true;
                    warn!(scaledjob = %key, metric, error = %err, "error getting ScaledJob metrics");
                    events.push(Event::warning(EventReason::ScalerFailed, err.to_string()));
                    if let Some(m) = &ctx.metrics {
                        m.record_scaled_job_error(&key.namespace, &key.name);
                    }
                }
            }
        }
        if failed || reads.is_empty() {
            report.error = true;
            continue;
        }
        for metric in &t.metric_names {
            activity.insert(metric.clone(), TriggerActivity { is_active: active });
        }
        report.readings.push(Reading::new(queue, target, active));
    }

    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let selector = format!("{SCALED_JOB_NAME_LABEL}={}", key.name);
    // KEDA counts 0 running Jobs when the list fails, and may then create up to the maximum;
    // ebb creates nothing on a poll whose Jobs it could not count.
    let listed = jobs_api.list(&ListParams::default().labels(&selector)).await;
    let job_list = match &listed {
        Ok(l) => Some(l.items.clone()),
        Err(e) => {
            warn!(scaledjob = %key, error = %e, "cannot list the ScaledJob's Jobs; no Job is created this poll");
            None
        }
    };
    let existing = job_list.clone().unwrap_or_default();
    let conditions_wanted = jobs::pending_pod_conditions(sj);
    let pods_by_job: Option<HashMap<String, Vec<Pod>>> =
        if existing.iter().any(|j| jobs::finished(j).is_none()) {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
            match pods.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => {
                    let mut by_job: HashMap<String, Vec<Pod>> = HashMap::new();
                    for p in list.items {
                        if let Some(job) = p.metadata.labels.as_ref().and_then(|l| l.get("job-name")) {
                            by_job.entry(job.clone()).or_default().push(p);
                        }
                    }
                    Some(by_job)
                }
                Err(e) => {
                    debug!(scaledjob = %key, error = %e, "pods unreadable; unfinished Jobs count as pending");
                    None
                }
            }
        } else {
            Some(HashMap::new())
        };
    let empty: Vec<Pod> = Vec::new();
    report.counts = jobs::count(
        &existing,
        |name| match &pods_by_job {
            Some(m) => Some(m.get(name).map_or(empty.as_slice(), Vec::as_slice)),
            None => None,
        },
        conditions_wanted,
    );
    let (combined, decision) = plan(
        &sj.spec,
        &report.readings,
        report.counts.running,
        report.counts.pending,
    );
    report.combined = combined;
    report.decision = decision;

    let before = sj.status.clone().unwrap_or_default();
    let mut new_status = before.clone();
    if combined.active {
        new_status.last_active_time = Some((ctx.clock)().to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    if combined.active && job_list.is_some() && decision.create > 0 {
        match jobs::generate_job(sj, &ctx.version) {
            Ok(job) => {
                let mut failures = Vec::new();
                for _ in 0..decision.create {
                    match jobs_api.create(&PostParams::default(), &job).await {
                        Ok(created) => report.created.push(created.metadata.name.unwrap_or_default()),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                let prefix = job.metadata.generate_name.clone().unwrap_or_default();
                events.extend(status::created(&prefix, decision.create, &failures));
            }
            Err(e) => events.push(Event::warning(EventReason::JobCreateFailed, e.to_string())),
        }
    }
    let mut conditions = new_status.conditions.take().unwrap_or_default();
    status::ensure_conditions(&mut conditions);
    events.extend(status::polled(&mut conditions, combined.active, report.error));
    new_status.conditions = Some(conditions);
    new_status.triggers_activity =
        (!activity.is_empty() || before.triggers_activity.is_some()).then_some(activity);

    if let Some(listed) = &job_list {
        for name in jobs::history_cleanup(sj, listed) {
            if let Err(e) = jobs_api.delete(&name, &DeleteParams::background()).await {
                warn!(scaledjob = %key, job = %name, error = %e, "history cleanup stopped");
                break;
            }
            report.cleaned.push(name);
        }
    }

    if new_status != before {
        let mut body = serde_json::json!({
            "conditions": new_status.conditions,
            "lastActiveTime": new_status.last_active_time,
        });
        // A merge patch merges maps: keys of removed triggers are removed with null.
        let mut activity = serde_json::Map::new();
        for k in before.triggers_activity.iter().flat_map(|a| a.keys()) {
            activity.insert(k.clone(), serde_json::Value::Null);
        }
        for (k, v) in new_status.triggers_activity.iter().flatten() {
            activity.insert(k.clone(), serde_json::json!({"isActive": v.is_active}));
        }
        body["triggersActivity"] = serde_json::Value::Object(activity);
        patch_status(ctx, sj, &body).await?;
    }
    ctx.publish(sj, events).await;
    if let Err(e) = listed {
        return Err(JobError::kube(format!("list Jobs of ScaledJob {key}"))(e));
    }
    Ok(report)
}
