//! The per-ScaledObject scale loop (KEDA's scale loop; ebb's "activator"): every
//! `pollingInterval` read each trigger through the shared cache and the target's `/scale`, let
//! [`scaling::scale_loop::Plan`] decide, act on `/scale`, and write status only when it changed.
//!
//! ```text
//! reconcile --start/stop--> loop task --read--> MetricCache --> scaler
//!                              \--GET/PUT /scale, status patch, events--> API server
//! ```

use crate::locks::LockExt;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info_span, warn};

use super::{
    context::{Context, LoopHandle},
    error::{Error, Result},
    status::{Writer, patch_status, publish},
};
use crate::{
    cluster::scale,
    crd::ScaledObject,
    keda_metrics::{ScaledResourceType, ScalerLabels},
    report::error_chain,
    scalers::registry::{ObjectKey, Resolved, object_key},
    scaling::{
        activation::{Action, TriggerOutcome},
        conditions::ConditionStatus,
        events::{Event, EventReason},
        scale_loop::{Plan, Recorded},
    },
};

/// Wait after a failed re-read of the ScaledObject before trying again.
const REREAD_BACKOFF: Duration = Duration::from_secs(5);

/// Stops the scale loop of `so` and, when one was running, says so with KEDA's
/// `KEDAScalersStopped` event (KEDA emits it when a paused or deleted object's loop ends).
pub async fn stop(ctx: &Context, so: &ScaledObject) {
    if ctx.stop_loop(&object_key(so)) {
        publish(
            ctx,
            so,
            vec![Event::normal(
                EventReason::ScalersStopped,
                "Stopped scalers watch",
            )],
        )
        .await;
    }
}

/// True when the loop of `key` must be (re)started: none runs, it ended, the HPA was just
/// created, or the ScaledObject's generation changed.
pub fn needs_restart(ctx: &Context, key: &ObjectKey, generation: Option<i64>, hpa_created: bool) -> bool {
    let loops = ctx.loops.lock_or_recover();
    match loops.get(key) {
        None => true,
        Some(h) => hpa_created || h.generation != generation || h.abort.is_finished(),
    }
}

/// Starts (or restarts) the scale loop of `so`.
pub fn start(ctx: &Arc<Context>, so: &ScaledObject) {
    let key = object_key(so);
    let task_ctx = ctx.clone();
    let task_key = key.clone();
    let span = info_span!("scale_loop", namespace = %key.namespace, name = %key.name);
    let task = tokio::spawn(async move { run(task_ctx, task_key).await }.instrument(span));
    let handle = LoopHandle {
        generation: so.metadata.generation,
        abort: task.abort_handle(),
    };
    let mut loops = ctx.loops.lock_or_recover();
    if let Some(old) = loops.insert(key, handle) {
        old.abort.abort();
    }
}

/// Polls until the ScaledObject is gone or the task is aborted.
async fn run(ctx: Arc<Context>, key: ObjectKey) {
    let api: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut due: Option<Instant> = None;
    loop {
        // KEDA re-reads the object each iteration so annotations and status are current.
        let so = match api.get_opt(&key.name).await {
            Ok(Some(so)) => so,
            Ok(None) => return,
            Err(e) => {
                warn!(scaledobject = %key, error = %e, "scale loop could not read the ScaledObject");
                tokio::time::sleep(REREAD_BACKOFF).await;
                continue;
            }
        };
        if so.metadata.deletion_timestamp.is_some() {
            return;
        }
        let started = Instant::now();
        if let (Some(m), Some(due)) = (&ctx.metrics, due) {
            // KEDA's keda_internal_scale_loop_latency_seconds: how late this iteration started.
            m.record_scale_loop_latency(
                &key.namespace,
                ScaledResourceType::ScaledObject,
                &key.name,
                started.saturating_duration_since(due),
            );
        }
        if let Err(e) = iterate(&ctx, &so).await {
            warn!(scaledobject = %key, error = %error_chain(&e), label = e.metric_label(), "scale loop iteration failed");
        }
        let interval = Duration::from_secs(so.spec.polling_interval_secs());
        due = Some(started + interval);
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

/// Reads the HPA's `ScalingActive` condition into the plan; an unreadable HPA or one without
/// that condition leaves `HPAActive` as it was, as in KEDA.
async fn mirror_hpa_condition(ctx: &Context, ns: &str, hpa: &str, plan: &mut Plan) {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let live = match hpas.get_opt(hpa).await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            debug!(hpa, error = %e, "HPA unreadable; HPAActive left as is");
            return;
        }
    };
    if let Some(c) = live
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "ScalingActive"))
    {
        plan.mirror_hpa(
            ConditionStatus::parse(&c.status),
            c.reason.as_deref().unwrap_or_default(),
            c.message.as_deref().unwrap_or_default(),
        );
    }
}

/// One iteration of the scale loop for `so` as just read from the API server.
pub async fn iterate(ctx: &Context, so: &ScaledObject) -> Result<()> {
    let key = object_key(so);
    let ns = so.namespace().ok_or(Error::Unnamed)?;
    let mut plan = Plan::new(so);

    ctx.registry.apply(so);
    let entry = ctx.registry.get(&key);
    for (ti, t) in entry.iter().flat_map(|e| e.triggers.iter().enumerate()) {
        let Some(entry) = entry.as_ref() else { break };
        let labels = |metric: &str| ScalerLabels {
            namespace: key.namespace.clone(),
            metric: metric.to_string(),
            scaled_object: key.name.clone(),
            scaler: crate::keda_metrics::scaler_label(&t.trigger_name, &t.trigger_type),
            trigger_index: t.index,
            type_: ScaledResourceType::ScaledObject,
        };
        let mut outcome = TriggerOutcome::default();
        match &t.scaler {
            Err(e) => {
                debug!(scaledobject = %key, trigger = t.index, error = %e, "trigger has no scaler");
                plan.scaler_failed(&mut outcome, e.to_string());
            }
            Ok(_) if t.metric_names.is_empty() => {
                plan.resource_trigger(&mut outcome);
                if let Some(m) = &ctx.metrics {
                    m.set_active(&labels(&t.trigger_type), true);
                }
            }
            Ok(_) => {}
        }
        for (mi, metric) in t.metric_names.iter().enumerate() {
            let resolved = Resolved {
                object: entry.clone(),
                trigger: ti,
                metric: mi,
                metric_name: metric.clone(),
            };
            let started = Instant::now();
            let (read, _) = ctx.cache.read(&resolved).await;
            // The process-wide counter (which the metrics server's reads also feed under
            // `ebb run`) is seeded from status after a restart and persisted back to it.
            let step = ctx
                .health
                .step(so, &key, metric, plan.health(metric), read.is_ok());
            if let Err(e) = read.as_ref() {
                warn!(scaledobject = %key, metric, error = %e, "error getting scale decision");
            }
            let read = Result::as_ref(&read)
                .map(|sample| (sample.values.iter().sum(), sample.active))
                .map_err(|e| e.to_string());
            let result = plan.metric(&mut outcome, &t.trigger_name, metric, step, read);
            if let Some(m) = &ctx.metrics {
                let l = labels(metric);
                match result.recorded {
                    Recorded::Value(v) => {
                        m.record_scaler_value(&l, v);
                        m.record_scaler_latency(&l, started.elapsed());
                        m.record_scaler_success(&l);
                    }
                    Recorded::Error => m.record_scaler_error(&l),
                    Recorded::Nothing => {}
                }
                m.set_active(&l, result.active);
            }
        }
        plan.trigger_done(outcome);
    }

    let gvkr = plan.scale_target(so);
    let target = &so.spec.scale_target_ref.name;
    let current = match scale::get(&ctx.client, &ns, &gvkr, target).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(status) = plan.scale_unreadable(error_chain(&e)) {
                patch_status(ctx, so, &status, Writer::ScaleLoop).await?;
            }
            return Err(e.into());
        }
    };
    let now = (ctx.clock)();
    let decision = plan.decide(so, &gvkr, scale::replicas(&current), now);
    let scaled = match decision.action {
        Action::ScaleTo { replicas, .. } => scale::put(&ctx.client, &ns, &gvkr, current, replicas)
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e)),
        Action::None => Ok(()),
    };
    plan.scaled(&decision, scaled, now);
    if let Some(hpa) = plan.hpa_name().map(str::to_string) {
        mirror_hpa_condition(ctx, &ns, &hpa, &mut plan).await;
    }
    plan.fallback(so);
    let (status, events) = plan.finish();
    if let Some(status) = status {
        patch_status(ctx, so, &status, Writer::ScaleLoop).await?;
    }
    publish(ctx, so, events).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::keda_metrics::scaler_label;

    #[test]
    fn scaler_label_is_trigger_name_or_go_type() {
        assert_eq!(scaler_label("", "aws-sqs-queue"), "awsSqsQueueScaler");
        assert_eq!(scaler_label("", "cron"), "cronScaler");
        assert_eq!(scaler_label("mine", "cron"), "mine");
    }
}
