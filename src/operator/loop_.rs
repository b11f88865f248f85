//! The per-ScaledObject scale loop (KEDA's scale loop; ebb's "activator"): every
//! `pollingInterval` ask each trigger through the shared cache, decide with
//! [`activation::decide`], act on `/scale`, and write status only when it changed.
//!
//! ```text
//! reconcile --start/stop--> loop task --read--> MetricCache --> scaler
//!                              \--GET/PUT /scale, status patch, events--> API server
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use super::status::{HPA_ACTIVE, set_condition};
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, ResourceExt, runtime::events::EventType};
use tracing::{debug, warn};

use super::{
    activation::{self, Action, LoopInput, TriggerOutcome, failure_event, pause_state},
    context::{Context, Error, LoopHandle, Result},
    fallback::{self, EVENT_FALLBACK_ACTIVATED, EVENT_FALLBACK_DEACTIVATED, Step, has_valid_fallback},
    formula,
    reconcile::{Writer, error_chain, patch_status, publish},
    scale,
    status::{
        ACTIVE, CondUpdate, FALLBACK, FALLBACK_EXISTS_MESSAGE, NO_FALLBACK_MESSAGE, PAUSED, READY,
        scale_target_gvkr,
    },
};
use crate::{
    crd::{
        ScaledObject,
        scaled_object::{Condition, TriggerActivity},
    },
    keda_metrics::{ScaledResourceType, ScalerLabels},
    scalers::registry::{ObjectKey, Resolved, object_key},
};

/// Event reason when a trigger cannot be read (KEDA's `KEDAScalerFailed`, a Warning).
pub const EVENT_SCALER_FAILED: &str = "KEDAScalerFailed";
/// The same for a trigger read as a scalingModifiers source (KEDA's `KEDAMetricSourceFailed`).
pub const EVENT_METRIC_SOURCE_FAILED: &str = "KEDAMetricSourceFailed";

/// Wait after a failed re-read of the ScaledObject before trying again.
const REREAD_BACKOFF: Duration = Duration::from_secs(5);

/// True when the loop of `key` must be (re)started: none runs, it ended, the HPA was just
/// created, or the ScaledObject's generation changed.
pub fn needs_restart(ctx: &Context, key: &ObjectKey, generation: Option<i64>, hpa_created: bool) -> bool {
    let loops = ctx.loops.lock().unwrap_or_else(|p| p.into_inner());
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
    let task = tokio::spawn(async move { run(task_ctx, task_key).await });
    let handle = LoopHandle {
        generation: so.metadata.generation,
        abort: task.abort_handle(),
    };
    let mut loops = ctx.loops.lock().unwrap_or_else(|p| p.into_inner());
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

/// Mirrors the HPA's `ScalingActive` condition into `HPAActive`; an unreadable HPA or one
/// without that condition leaves `HPAActive` as it was, as in KEDA.
async fn mirror_hpa_condition(ctx: &Context, ns: &str, hpa: &str, conditions: &mut Vec<Condition>) {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let live = match hpas.get_opt(hpa).await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            debug!(hpa, error = %e, "HPA unreadable; HPAActive left as is");
            return;
        }
    };
    let Some(c) = live
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "ScalingActive"))
    else {
        return;
    };
    let reason = c.reason.as_deref().unwrap_or_default();
    let message = c.message.as_deref().unwrap_or_default();
    if reason == "ScalingDisabled" {
        set_condition(conditions, HPA_ACTIVE, "True", "ScalingDisabled", message);
    } else if c.status == "True" {
        set_condition(
            conditions,
            HPA_ACTIVE,
            "True",
            "HPAActive",
            "HPA is actively scaling",
        );
    } else if c.status == "False" {
        let reason = if reason.is_empty() {
            "HPAMetricsUnavailable"
        } else {
            reason
        };
        set_condition(
            conditions,
            HPA_ACTIVE,
            "False",
            reason,
            &format!("HPA is not actively scaling: {message}"),
        );
    }
}

/// With scalingModifiers: the composite value from the formula over named trigger values
/// (failed or fallen-back triggers are nil) and the activation target (default 0).
pub fn composite(so: &ScaledObject, values: &HashMap<String, Option<f64>>) -> Option<(Option<f64>, f64)> {
    if !so.spec.uses_scaling_modifiers() {
        return None;
    }
    let m = so.spec.advanced.as_ref()?.scaling_modifiers.as_ref()?;
    let activation = m
        .activation_target
        .as_deref()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    // A formula that fails to compile or evaluate gives no value: the object is inactive,
    // as in KEDA, and the reconcile has already reported the formula as invalid.
    let value = formula::evaluate_for(so, values).ok().flatten();
    Some((value, activation))
}

/// One iteration of the scale loop for `so` as just read from the API server.
pub async fn iterate(ctx: &Context, so: &ScaledObject) -> Result<()> {
    let key = object_key(so);
    let ns = so.namespace().ok_or(Error::Unnamed)?;
    let before = so.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let mut health = status.health.take().unwrap_or_default();
    let mut events = Vec::new();
    let pause = pause_state(so.metadata.annotations.as_ref());

    ctx.registry.apply(so);
    let entry = ctx.registry.get(&key);
    let valid_fallback = has_valid_fallback(so);
    let mut outcomes = Vec::new();
    let mut active_names = Vec::new();
    let mut activity = BTreeMap::new();
    let mut named_values: HashMap<String, Option<f64>> = HashMap::new();
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
                events.push((EventType::Warning, EVENT_SCALER_FAILED, e.to_string()));
                outcome.error = true;
            }
            Ok(_) if t.metric_names.is_empty() => {
                // cpu/memory: the HPA reads them from metrics.k8s.io; they never gate activation.
                outcome.resource = true;
                outcome.active = true;
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
            let (step, h) = ctx
                .health
                .step(so, &key, metric, health.get(metric), read.is_ok());
            if valid_fallback {
                health.insert(metric.clone(), h);
            }
            let l = labels(metric);
            let (active, error) = match (step, read.as_ref()) {
                (Step::Pass, Ok(sample)) => {
                    if let Some(m) = &ctx.metrics {
                        m.record_scaler_value(&l, sample.values.iter().sum());
                        m.record_scaler_latency(&l, started.elapsed());
                        m.record_scaler_success(&l);
                    }
                    if !t.trigger_name.is_empty() {
                        named_values.insert(t.trigger_name.clone(), Some(sample.values.iter().sum()));
                    }
                    (sample.active, false)
                }
                (Step::Synthetic, _) => (true, false),
                (Step::ModifiersNil, _) => (false, false),
                (_, Err(_)) => {
                    if let Some(m) = &ctx.metrics {
                        m.record_scaler_error(&l);
                    }
                    (false, true)
                }
                (Step::Error, Ok(_)) => (false, true),
            };
            // KEDA reports every failed read as an event, whether or not fallback covers it.
            if let Err(e) = read.as_ref() {
                warn!(scaledobject = %key, metric, error = %e, "error getting scale decision");
                let reason = if so.spec.uses_scaling_modifiers() {
                    EVENT_METRIC_SOURCE_FAILED
                } else {
                    EVENT_SCALER_FAILED
                };
                events.push((EventType::Warning, reason, e.to_string()));
            }
            if let Some(m) = &ctx.metrics {
                m.set_active(&l, active);
            }
            activity.insert(metric.clone(), TriggerActivity { is_active: active });
            if active {
                active_names.push(metric.clone());
            }
            outcome.active |= active;
            outcome.error |= error;
        }
        outcomes.push(outcome);
    }
    let (is_active, is_error) = activation::object_activity(&outcomes, composite(so, &named_values));

    let gvkr = status
        .scale_target_gvkr
        .clone()
        .unwrap_or_else(|| scale_target_gvkr(so));
    let target = so.spec.scale_target_ref.name.clone();
    let current = match scale::get(&ctx.client, &ns, &gvkr, &target).await {
        Ok(s) => s,
        Err(e) => {
            CondUpdate::new("False", "ErrorGettingCurrentReplicas", error_chain(&e))
                .apply(&mut conditions, READY);
            status.conditions = Some(conditions);
            if status != before {
                patch_status(ctx, so, &status, Writer::ScaleLoop).await?;
            }
            return Err(e);
        }
    };
    let current_replicas = scale::replicas(&current);
    let now = (ctx.clock)();
    let last_active_time = before
        .last_active_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let creation_timestamp = so.metadata.creation_timestamp.as_ref().and_then(|t| {
        DateTime::from_timestamp(
            t.0.as_second(),
            u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0),
        )
    });
    let kind = before
        .scale_target_kind
        .clone()
        .unwrap_or_else(|| super::status::scale_target_kind(&gvkr));
    let decision = activation::decide(&LoopInput {
        spec: &so.spec,
        pause: &pause,
        scale_target_kind: &kind,
        namespace: &ns,
        current_replicas,
        is_active,
        is_error,
        active_triggers: &active_names,
        last_active_time,
        creation_timestamp,
        now,
    });

    let mut set_last_active = decision.set_last_active;
    match decision.action {
        Action::ScaleTo { replicas, .. } => {
            match scale::put(&ctx.client, &ns, &gvkr, current, replicas).await {
                Ok(_) => {
                    if let Some(ev) = &decision.event {
                        events.push((EventType::Normal, ev.reason, ev.message.clone()));
                    }
                }
                Err(e) => {
                    set_last_active = false;
                    if let Some(ev) = failure_event(&decision.action, &error_chain(&e)) {
                        events.push((EventType::Warning, ev.reason, ev.message));
                    }
                }
            }
        }
        Action::None => {
            if let Some(ev) = &decision.event {
                events.push((EventType::Normal, ev.reason, ev.message.clone()));
            }
        }
    }
    if set_last_active {
        status.last_active_time = Some(now.to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    if let Some(c) = &decision.active_condition {
        c.apply(&mut conditions, ACTIVE);
    }
    if let Some(c) = &decision.ready_condition {
        c.apply(&mut conditions, READY);
    }
    if let Some(c) = &decision.paused_condition {
        c.apply(&mut conditions, PAUSED);
    }
    if let Some(hpa) = before.hpa_name.as_deref() {
        mirror_hpa_condition(ctx, &ns, hpa, &mut conditions).await;
    }
    let threshold = so.spec.fallback.as_ref().map_or(0, |f| f.failure_threshold);
    let falling_back = valid_fallback && fallback::any_fallback_active(&health, threshold);
    let fallback_update = if falling_back {
        CondUpdate::new("True", "FallbackExists", FALLBACK_EXISTS_MESSAGE)
    } else {
        CondUpdate::new("False", "NoFallbackFound", NO_FALLBACK_MESSAGE)
    };
    let was_falling_back = super::status::condition_status(&conditions, FALLBACK) == Some("True");
    if fallback_update.apply(&mut conditions, FALLBACK) && valid_fallback {
        if falling_back {
            events.push((
                EventType::Warning,
                EVENT_FALLBACK_ACTIVATED,
                FALLBACK_EXISTS_MESSAGE.to_string(),
            ));
        } else if was_falling_back {
            events.push((
                EventType::Normal,
                EVENT_FALLBACK_DEACTIVATED,
                NO_FALLBACK_MESSAGE.to_string(),
            ));
        }
    }
    status.conditions = Some(conditions);
    status.health = (!health.is_empty() || before.health.is_some()).then_some(health);
    status.triggers_activity =
        (!activity.is_empty() || before.triggers_activity.is_some()).then_some(activity);
    if status != before {
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
