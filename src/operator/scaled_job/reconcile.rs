//! One reconcile of a ScaledJob (spec `scaledjob.md` §2, §6, §8): finalizer, conditions,
//! pause, validation, scaler build, rollout cleanup, loop start; or the finalizer on deletion.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{batch::v1::Job, core::v1::ObjectReference};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};

use super::{JobContext, key_of};
use crate::{
    crd::{ScaledJob, scaled_job::SCALED_JOB_NAME_LABEL},
    scaling::{
        events::{Event, EventReason},
        scaled_job::{
            jobs::{self, Propagation},
            status::{self, Reconciled},
            validate::validate_scaled_job,
        },
    },
};

/// KEDA's finalizer on ScaledJobs.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// How soon a failed reconcile is retried.
const RETRY: Duration = Duration::from_secs(60);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was attempted.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The ScaledJob cannot be scaled (reported as `Ready=False`).
    #[error("{0}")]
    Check(String),
    /// The ScaledJob has no name.
    #[error("ScaledJob without a name")]
    Unnamed,
}

impl JobError {
    /// Wraps a kube error with what was attempted.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> JobError {
        let action = action.into();
        move |source| JobError::Kube { action, source }
    }
}

/// A ScaledJob that does not deserialise gets `Ready=False` and a Warning event naming the cause,
/// and is retried only when it changes.
pub async fn reconcile_guarded(
    obj: Arc<DeserializeGuard<ScaledJob>>,
    ctx: Arc<JobContext>,
) -> Result<Action, JobError> {
    match &obj.0 {
        Ok(sj) => reconcile(&ctx, sj).await,
        Err(bad) => {
            report_malformed(&ctx, &bad.metadata, &bad.error.to_string()).await;
            Ok(Action::await_change())
        }
    }
}

/// Retries a failed reconcile after a minute (KEDA requeues with a back-off).
pub fn error_policy(
    _obj: Arc<DeserializeGuard<ScaledJob>>,
    _error: &JobError,
    _ctx: Arc<JobContext>,
) -> Action {
    Action::requeue(RETRY)
}

async fn report_malformed(ctx: &JobContext, meta: &kube::api::ObjectMeta, error: &str) {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return;
    };
    let message = format!("ScaledJob cannot be read: {error}");
    warn!(scaledjob = %format!("{ns}/{name}"), error, "malformed ScaledJob");
    let mut conditions = status::initial_conditions();
    status::reconciled(&mut conditions, &Reconciled::Failed(message.clone()));
    let api: Api<DeserializeGuard<ScaledJob>> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({"status": {"conditions": conditions}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        warn!(scaledjob = %format!("{ns}/{name}"), error = %e, "status of a malformed ScaledJob not written");
    }
    let reference = ObjectReference {
        api_version: Some("keda.sh/v1alpha1".into()),
        kind: Some("ScaledJob".into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    };
    let event = Event::warning(EventReason::ScaledJobCheckFailed, message);
    crate::operator::status::publish_to(&ctx.recorder, &reference, vec![event]).await;
}

/// Reconciles one ScaledJob.
pub async fn reconcile(ctx: &Arc<JobContext>, sj: &ScaledJob) -> Result<Action, JobError> {
    let key = key_of(sj);
    let name = sj.metadata.name.clone().ok_or(JobError::Unnamed)?;
    let api: Api<ScaledJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let has_finalizer = sj.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);

    if sj.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            let stopped = ctx.stop_loop(&key);
            ctx.forget(&key);
            let rest: Vec<&String> = sj
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != FINALIZER)
                .collect();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
            )
            .await
            .map_err(JobError::kube(format!("remove finalizer of ScaledJob {key}")))?;
            let mut events = Vec::new();
            if stopped {
                events.push(Event::normal(
                    EventReason::ScalersStopped,
                    "Stopped scalers watch",
                ));
            }
            events.push(Event::warning(
                EventReason::ScaledJobDeleted,
                "ScaledJob was deleted",
            ));
            ctx.publish(sj, events).await;
            info!(scaledjob = %key, "ScaledJob deleted");
        }
        return Ok(Action::await_change());
    }

    if !has_finalizer {
        let mut all: Vec<String> = sj.metadata.finalizers.clone().unwrap_or_default();
        all.push(FINALIZER.to_string());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": all}})),
        )
        .await
        .map_err(JobError::kube(format!("add finalizer to ScaledJob {key}")))?;
    }

    let before = sj.status.clone().unwrap_or_default();
    let mut new_status = before.clone();
    let mut conditions = new_status.conditions.take().unwrap_or_default();
    status::ensure_conditions(&mut conditions);
    let mut events = Vec::new();

    let outcome = if jobs::is_paused(sj) {
        events.extend(status::paused(&mut conditions, true));
        if ctx.stop_loop(&key) {
            events.push(Event::normal(
                EventReason::ScalersStopped,
                "Stopped scalers watch",
            ));
        }
        Reconciled::Paused
    } else {
        events.extend(status::paused(&mut conditions, false));
        match prepare(ctx, sj, &mut events).await {
            Ok(()) => {
                new_status.triggers_types = status::triggers_types(&sj.spec);
                new_status.authentications_types = status::authentications_types(&sj.spec);
                if ctx.ensure_loop(sj) {
                    events.push(Event::normal(
                        EventReason::ScalersStarted,
                        "Started scalers watch",
                    ));
                }
                Reconciled::Ready
            }
            Err(msg) => {
                ctx.stop_loop(&key);
                if let Some(m) = &ctx.metrics {
                    m.record_scaled_job_error(&key.namespace, &key.name);
                }
                Reconciled::Failed(msg)
            }
        }
    };
    events.extend(status::reconciled(&mut conditions, &outcome));
    new_status.conditions = Some(conditions);
    if new_status != before
        && let Err(e) = patch_status(ctx, sj, &serde_json::to_value(&new_status).unwrap_or_default()).await
    {
        events.push(Event::warning(EventReason::ScaledJobUpdateFailed, e.to_string()));
    }
    ctx.publish(sj, events).await;
    match outcome {
        Reconciled::Failed(msg) => {
            warn!(scaledjob = %key, error = %msg, "ScaledJob check failed");
            Err(JobError::Check(msg))
        }
        _ => Ok(Action::await_change()),
    }
}

/// Validation, rollout cleanup and scaler build; the message of the first failing step.
async fn prepare(ctx: &JobContext, sj: &ScaledJob, events: &mut Vec<Event>) -> Result<(), String> {
    let problems = validate_scaled_job(sj);
    if !problems.is_empty() {
        let all: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        return Err(all.join("; "));
    }
    rollout(ctx, sj, events).await?;
    let entry = ctx
        .register(sj)
        .ok_or_else(|| "ScaledJob could not be registered".to_string())?;
    let mut broken = Vec::new();
    for t in &entry.triggers {
        match &t.scaler {
            Ok(_) => {}
            Err(e) => {
                events.push(Event::warning(EventReason::ScalerFailed, e.to_string()));
                broken.push(format!("trigger {} ({}): {e}", t.index, t.trigger_type));
            }
        }
    }
    if !broken.is_empty() {
        return Err(format!("error building scalers: {}", broken.join("; ")));
    }
    if !ctx.has_loop(&key_of(sj)) {
        for t in &entry.triggers {
            events.push(Event::normal(
                EventReason::ScalersStarted,
                format!("Scaler {} is built", t.trigger_type),
            ));
        }
    }
    Ok(())
}

/// KEDA's `deletePreviousVersionScaleJobs`.
async fn rollout(ctx: &JobContext, sj: &ScaledJob, events: &mut Vec<Event>) -> Result<(), String> {
    if jobs::is_gradual(sj) {
        return Ok(());
    }
    let key = key_of(sj);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let listed = jobs_api
        .list(&ListParams::default().labels(&format!("{SCALED_JOB_NAME_LABEL}={}", key.name)))
        .await
        .map_err(|e| format!("Not able to list jobs: {e}"))?;
    let plan = jobs::rollout(sj, &listed.items);
    if plan.delete.is_empty() {
        return Ok(());
    }
    events.push(Event::normal(
        EventReason::ScaledJobRolloutCleanupStarted,
        format!(
            "Deleting {} jobs owned by the previous version of the scaledJob",
            plan.delete.len()
        ),
    ));
    let params = match plan.propagation {
        Propagation::Foreground => DeleteParams::foreground(),
        Propagation::Background => DeleteParams::background(),
    };
    for job in &plan.delete {
        if let Err(e) = jobs_api.delete(job, &params).await {
            events.push(Event::warning(
                EventReason::ScaledJobRolloutCleanupFailed,
                format!("Failed to delete job {job}: {e}"),
            ));
            return Err(format!("Not able to delete job: {job}"));
        }
    }
    events.push(Event::normal(
        EventReason::ScaledJobRolloutCleanupCompleted,
        format!(
            "Deleted {} jobs owned by the previous version of the scaledJob",
            plan.delete.len()
        ),
    ));
    Ok(())
}

/// Merge-patches `status` (the reconcile and the loop each send what they own).
pub async fn patch_status(
    ctx: &JobContext,
    sj: &ScaledJob,
    status: &serde_json::Value,
) -> Result<(), JobError> {
    let key = key_of(sj);
    let api: Api<ScaledJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    api.patch_status(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map_err(JobError::kube(format!("patch status of ScaledJob {key}")))?;
    Ok(())
}
