//! What a process's [`Engine`] knows about one ScaledObject, as `ebb explain`'s view: each
//! trigger's value and age (through the cache: a cached value when `useCachedMetrics` keeps one,
//! else a fresh read that joins any read in flight), target, activation, the fallback counter
//! and the TriggerAuthentication parameters resolved (names only).
//!
//! Served on the admin port as `/debug/scaledobjects/NAMESPACE/NAME`. Reading here never
//! counts toward fallback: the counters are read, not stepped.
//!
//! The admin port has no authentication, so an [`Inspector`] keeps the outcome of the fresh
//! reads it made: a client asking again within the trigger's `pollingInterval` gets that
//! outcome (with its age) instead of another upstream call, so explaining cannot cost an
//! upstream (CloudWatch bills per request) more than the scale loop does.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;

use crate::{
    cache::{Outcome, ReadKind},
    engine::Engine,
    scalers::{
        MetricSpec,
        registry::{ObjectKey, Resolved},
    },
    scaling::{
        activation::pause_state,
        explain::{ObjectView, PauseView, TriggerView, verdict},
        fallback::{fallback_active, has_valid_fallback},
    },
};

/// Fresh reads an [`Inspector`] keeps at most (a view holds a few; thousands of distinct
/// objects explained within one polling interval are not a person at a terminal).
const RECENT_READS: u64 = 4096;

/// One build's metric: (epoch, trigger index, metric index).
type ReadKey = (u64, usize, usize);

/// Views for the admin port: the engine, what the process is (`local` or `metrics-server`),
/// and the recent fresh reads (see the module doc).
#[derive(Clone)]
pub struct Inspector {
    engine: Engine,
    source: &'static str,
    recent: moka::sync::Cache<ReadKey, (Outcome, Instant)>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// Views of `engine`'s objects, labelled `source` (`local`, `metrics-server`).
    pub fn new(engine: Engine, source: &'static str) -> Self {
        Self {
            engine,
            source,
            recent: moka::sync::Cache::builder()
                .max_capacity(RECENT_READS)
                // No polling interval is longer in practice; the age check below is the rule.
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    /// The view of `namespace/name`, or `None` when the engine does not hold it.
    pub async fn view(&self, namespace: &str, name: &str) -> Option<ObjectView> {
        view_with(&self.engine, Some(self), self.source, namespace, name).await
    }
}

/// The view of `namespace/name`, or `None` when the engine does not hold it; every read goes
/// through the cache (an offline tool's engine: nobody else reads it).
pub async fn view(engine: &Engine, namespace: &str, name: &str) -> Option<ObjectView> {
    view_with(engine, None, "offline read", namespace, name).await
}

async fn view_with(
    engine: &Engine,
    inspector: Option<&Inspector>,
    source: &str,
    namespace: &str,
    name: &str,
) -> Option<ObjectView> {
    let key = ObjectKey::new(namespace, name);
    let entry = engine.registry.get(&key)?;
    let so = entry.object.clone();
    let summary = &entry.summary;
    let mut out = ObjectView {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source: source.to_string(),
        min_replica_count: summary.min_replica_count,
        max_replica_count: summary.max_replica_count,
        idle_replica_count: summary.idle_replica_count,
        cooldown_period: summary.cooldown_period,
        polling_interval: i64::try_from(entry.polling_interval.as_secs()).unwrap_or(i64::MAX),
        formula: summary.formula.clone(),
        ..ObjectView::default()
    };
    let pause = pause_state(Some(&summary.annotations));
    out.pause = PauseView {
        paused: pause.paused,
        paused_replicas: pause.paused_replicas.clone(),
        scale_in: pause.scale_in_paused,
        scale_out: pause.scale_out_paused,
    };
    let threshold = so
        .as_deref()
        .filter(|so| has_valid_fallback(so))
        .and_then(|so| so.spec.fallback.as_ref())
        .map(|f| f.failure_threshold);
    for (ti, t) in entry.triggers.iter().enumerate() {
        let base = TriggerView {
            index: t.index,
            trigger_type: t.trigger_type.clone(),
            name: t.trigger_name.clone(),
            auth_fields: t.auth_fields.clone(),
            ..TriggerView::default()
        };
        let scaler = match &t.scaler {
            Ok(s) => s.clone(),
            Err(e) => {
                out.triggers.push(TriggerView {
                    broken: Some(e.to_string()),
                    ..base
                });
                continue;
            }
        };
        if let Some((key, detail)) = scaler.live_detail().await {
            out.extensions.insert(key, detail);
        }
        let specs = scaler.metric_specs();
        if t.metric_names.is_empty() {
            // cpu/memory: the HPA reads them from metrics.k8s.io.
            out.triggers.push(base);
            continue;
        }
        for (mi, metric) in t.metric_names.iter().enumerate() {
            let mut tv = base.clone();
            tv.metric = Some(metric.clone());
            tv.activation_threshold = Some(scaler.activation_threshold());
            if let Some((value, kind)) = specs.iter().find_map(|s| match s {
                MetricSpec::External { name, target } if name == metric => Some((target.value, target.kind)),
                _ => None,
            }) {
                tv.target = Some(value);
                tv.target_type = Some(format!("{kind:?}"));
            }
            let resolved = Resolved {
                object: Arc::clone(&entry),
                trigger: ti,
                metric: mi,
                metric_name: metric.clone(),
            };
            let read_key = (entry.epoch, ti, mi);
            let recent = inspector
                .filter(|_| !t.use_cached_metrics)
                .and_then(|i| i.recent.get(&read_key))
                .filter(|(_, at)| at.elapsed() < entry.polling_interval);
            let (outcome, source) = match recent {
                Some((outcome, _)) => (outcome, "recent read"),
                None => {
                    let (outcome, kind) = engine.cache.read(&resolved).await;
                    if let Some(i) = inspector.filter(|_| kind == ReadKind::Miss) {
                        i.recent.insert(read_key, (outcome.clone(), Instant::now()));
                    }
                    let source = match kind {
                        ReadKind::Hit => "cache",
                        ReadKind::Miss => "fresh read",
                    };
                    (outcome, source)
                }
            };
            tv.value_source = source.to_string();
            match outcome.as_ref() {
                Ok(sample) => {
                    tv.value = Some(sample.values.iter().sum());
                    tv.active = Some(sample.active);
                    let age = Utc::now() - sample.timestamp;
                    tv.value_age_seconds = Some(age.num_milliseconds().max(0) as f64 / 1000.0);
                }
                Err(e) => tv.error = Some(e.to_string()),
            }
            if let Some(h) = engine.health.get(&entry.key, metric) {
                tv.consecutive_failures = h.number_of_failures.unwrap_or(0);
                tv.fallback_active = threshold.is_some_and(|th| fallback_active(&h, th));
            }
            out.triggers.push(tv);
        }
    }
    let why = match source {
        "local" => Some("--local has no cluster"),
        "metrics-server" => Some("the metrics server does not read the scale target or the HPA"),
        _ => None,
    };
    if let Some(why) = why {
        out.problems.push(format!(
            "{why}: replicas, the HPA and cooldown come from the cluster (`ebb explain` without --admin)"
        ));
    }
    out.verdict = verdict(&out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::crd::ScaledObject;

    #[tokio::test]
    async fn view_reads_values_counters_and_broken_triggers() {
        let engine = Engine::new(Duration::from_secs(1));
        let so: ScaledObject = serde_yaml::from_str(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w, namespace: ns, annotations: {autoscaling.keda.sh/paused-scale-in: "true"}}
spec:
  scaleTargetRef: {name: w}
  maxReplicaCount: 7
  triggers:
    - type: cron
      metadata: {timezone: Etc/UTC, start: "0 0 1 1 *", end: "1 0 1 1 *", desiredReplicas: "3"}
    - type: prometheus
      metadata: {query: "up"}
"#,
        )
        .expect("yaml");
        engine.registry.apply(&so);
        assert!(view(&engine, "ns", "other").await.is_none());
        let v = view(&engine, "ns", "w").await.expect("registered");
        assert_eq!((v.max_replica_count, v.cooldown_period), (7, 300));
        assert!(v.pause.scale_in);
        let cron = &v.triggers[0];
        assert!(cron.metric.as_deref().is_some_and(|m| m.starts_with("s0-cron-")));
        assert_eq!(
            (cron.target, cron.target_type.as_deref()),
            (Some(1.0), Some("AverageValue"))
        );
        assert_eq!(cron.value_source, "fresh read");
        assert!(cron.value_age_seconds.is_some_and(|a| a < 60.0));
        assert_eq!(cron.activation_threshold, Some(0.0));
        assert!(
            v.triggers[1]
                .broken
                .as_deref()
                .is_some_and(|b| b.contains("serverAddress"))
        );
        assert!(
            v.verdict
                .starts_with("replicas unknown: broken: trigger 1 (prometheus)"),
            "{}",
            v.verdict
        );
        // Through an Inspector (the admin port), a second view within pollingInterval reuses
        // the first fresh read instead of asking the upstream again.
        let inspector = Inspector::new(engine.clone(), "local");
        let first = inspector.view("ns", "w").await.expect("registered");
        assert_eq!(first.triggers[0].value_source, "fresh read");
        let again = inspector.view("ns", "w").await.expect("registered");
        assert_eq!(again.triggers[0].value_source, "recent read");
        assert_eq!(again.triggers[0].value, first.triggers[0].value);
        assert!(again.problems[0].starts_with("--local has no cluster"));
    }
}
