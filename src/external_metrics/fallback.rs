//! The parts of a metric read that need the ScaledObject's spec: fallback values after
//! `failureThreshold` consecutive failures (KEDA §8), and the `composite-metric` of
//! `scalingModifiers` (§10), evaluated from every trigger's value.
//!
//! ```text
//! read --cache--> outcome --HealthStore.step--> Pass | Error | Synthetic(target × replicas)
//! composite-metric --> every trigger's outcome --> formula --> value | fallback.replicas × target
//! ```

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::autoscaling::v1::Scale;
use kube::{Api, api::DynamicObject};

use super::error::ApiError;
use crate::{
    cache::{MetricCache, Outcome},
    cluster::scale::{Plurals, resolve_gvkr, target_api},
    crd::{ScaledObject, scaled_object::MetricTargetType},
    scalers::{
        MetricSpec,
        kubernetes_workload::PodIndex,
        registry::{ObjectEntry, ObjectKey, Resolved},
    },
    scaling::{
        fallback::{self, BEHAVIOR_STATIC, HealthStore, Step},
        formula,
        hpa::modifiers_target,
        target::scale_target_gvkr,
    },
    selector,
};

/// Reads what a fallback value depends on: the target's replica count and ready pods.
#[derive(Clone)]
pub struct TargetReader {
    /// Cluster access for `/scale`.
    pub client: kube::Client,
    /// Pods, for the ready count of `Value` targets.
    pub pods: Option<PodIndex>,
    /// Resource names of custom scale-target kinds, found through discovery.
    pub plurals: Arc<Plurals>,
}

impl std::fmt::Debug for TargetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetReader").finish_non_exhaustive()
    }
}

impl TargetReader {
    /// Current replicas of the scale target and, when `want_ready`, its ready pods.
    async fn read(&self, so: &ScaledObject, want_ready: bool) -> Result<(i32, i32), String> {
        let ns = so.metadata.namespace.as_deref().unwrap_or("default");
        let gvkr = resolve_gvkr(&self.client, &self.plurals, scale_target_gvkr(so)).await?;
        let name = &so.spec.scale_target_ref.name;
        let api: Api<DynamicObject> = target_api(&self.client, ns, &gvkr);
        let scale: Scale = api
            .get_scale(name)
            .await
            .map_err(|e| format!("reading {}/{name}/scale: {e}", gvkr.resource))?;
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if !want_ready {
            return Ok((current, 0));
        }
        let raw = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.as_deref())
            .unwrap_or_default();
        let sel = selector::parse(raw).map_err(|e| format!("scale target selector {raw:?}: {e}"))?;
        let pods = self
            .pods
            .as_ref()
            .filter(|p| p.is_ready())
            .ok_or("the pod cache is not synced yet")?;
        let ready = i32::try_from(pods.count_ready(ns, &sel)).unwrap_or(i32::MAX);
        Ok((current, ready))
    }
}

/// What [`synthetic`] computes a value for.
struct Target {
    value: f64,
    kind: MetricTargetType,
}

/// The value that makes the HPA converge on the fallback replica count (§8.3).
async fn synthetic(
    targets: Option<&TargetReader>,
    so: &ScaledObject,
    target: &Target,
) -> Result<f64, String> {
    let Some(f) = so.spec.fallback.as_ref() else {
        return Err("no fallback is configured".to_string());
    };
    let behavior = f.behavior.as_deref().filter(|b| !b.is_empty());
    let needs_current = behavior.is_some_and(|b| b != BEHAVIOR_STATIC);
    let needs_ready = target.kind == MetricTargetType::Value;
    let (current, ready) = if needs_current || needs_ready {
        let reader = targets.ok_or_else(|| {
            format!(
                "fallback with behavior {} and target type {:?} needs the scale target's replicas, which --local mode cannot read",
                behavior.unwrap_or(BEHAVIOR_STATIC),
                target.kind
            )
        })?;
        reader.read(so, needs_ready).await?
    } else {
        (0, 0)
    };
    fallback::synthetic_value(behavior, f.replicas, current, target.value, target.kind, ready)
        .map_err(|e| e.to_string())
}

/// Applies fallback to the outcome of one external metric read. `Ok(None)`: use the outcome
/// as it is; `Ok(Some(v))`: answer `v` instead of the error; `Err`: the fallback itself failed.
pub async fn apply(
    health: &HealthStore,
    targets: Option<&TargetReader>,
    resolved: &Resolved,
    key: &ObjectKey,
    ok: bool,
) -> Result<Option<f64>, String> {
    let Some(so) = resolved.object.read_policy() else {
        return Ok(None);
    };
    let (step, _) = health.step(so, key, &resolved.metric_name, None, ok);
    if step != Step::Synthetic {
        return Ok(None);
    }
    let target = metric_target(resolved).ok_or("the trigger has no metric target")?;
    synthetic(targets, so, &target).await.map(Some)
}

fn metric_target(resolved: &Resolved) -> Option<Target> {
    let scaler = resolved.trigger().scaler.as_ref().ok()?;
    scaler.metric_specs().into_iter().find_map(|m| match m {
        MetricSpec::External { name, target } if name == resolved.metric_name => Some(Target {
            value: target.value,
            kind: target.kind,
        }),
        _ => None,
    })
}

/// True when the object serves a `composite-metric` (it uses scalingModifiers).
pub fn uses_scaling_modifiers(entry: &ObjectEntry) -> bool {
    entry
        .read_policy()
        .is_some_and(|so| so.spec.uses_scaling_modifiers())
}

/// Evaluates the scalingModifiers formula over every trigger's current value (§10.3).
pub async fn composite(
    cache: &MetricCache,
    health: &HealthStore,
    targets: Option<&TargetReader>,
    entry: &Arc<ObjectEntry>,
) -> Result<f64, ApiError> {
    let Some(so) = entry.read_policy() else {
        return Err(ApiError::internal("the ScaledObject has no scalingModifiers"));
    };
    let key = &entry.key;
    let fail = |msg: String| ApiError::internal(format!("metric:composite-metric encountered error: {msg}"));
    let (target, kind) = modifiers_target(so)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("scalingModifiers has no target".to_string()))?;
    let reads: Vec<Resolved> = entry
        .triggers
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            t.metric_names.iter().enumerate().map(move |(mi, m)| Resolved {
                object: entry.clone(),
                trigger: ti,
                metric: mi,
                metric_name: m.clone(),
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = futures::future::join_all(reads.iter().map(|r| async {
        let (outcome, _) = cache.read(r).await;
        outcome
    }))
    .await;
    let mut values: HashMap<String, Option<f64>> = HashMap::new();
    for (r, outcome) in reads.iter().zip(outcomes) {
        let (step, _) = health.step(so, key, &r.metric_name, None, outcome.is_ok());
        let value = match (step, outcome.as_ref()) {
            (Step::Pass, Ok(sample)) => Some(sample.values.iter().sum()),
            (Step::Synthetic, _) => Some(
                synthetic(targets, so, &Target { value: target, kind })
                    .await
                    .map_err(|e| fail(format!("{}: {e}", r.metric_name)))?,
            ),
            (Step::ModifiersNil, _) => None,
            (_, Err(e)) => {
                return Err(fail(format!(
                    "trigger {} ({}): {e}",
                    r.trigger().index,
                    r.trigger().trigger_type
                )));
            }
            (Step::Error, Ok(_)) => return Err(fail(r.metric_name.clone())),
        };
        formula::add_to_trigger(&mut values, &r.trigger().trigger_name, value);
    }
    fallback::composite_value(so, &values, target)
        .map(|(v, _)| v)
        .map_err(|e| fail(e.to_string()))
}
