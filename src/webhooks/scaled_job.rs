//! Admission of ScaledJobs (KEDA's `vscaledjob.kb.io`): the checks of `ebb check` — the CRD
//! schema, KEDA's `ValidateTriggers`, what KEDA's reconciler and the Job API would refuse —
//! answered with the first problem. KEDA counts a refusal in the ScaledObject error counter
//! (`reason="incorrect-triggers"`) and keeps no total for ScaledJobs; so does ebb.

use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, Operation},
};

use super::WebhookContext;
use crate::{crd::ScaledJob, scaling::scaled_job::validate::validate_scaled_job};

fn decode(obj: &DynamicObject) -> Result<ScaledJob, String> {
    serde_json::to_value(obj)
        .and_then(serde_json::from_value::<ScaledJob>)
        .map_err(|e| format!("could not decode ScaledJob: {e}"))
}

/// Reviews a ScaledJob CREATE or UPDATE.
pub fn review_scaled_job(
    req: &AdmissionRequest<DynamicObject>,
    resp: AdmissionResponse,
    ctx: &WebhookContext,
) -> AdmissionResponse {
    let Some(obj) = req.object.as_ref() else {
        return super::review::deny(resp, 400, "request has no object".to_string());
    };
    let mut sj = match decode(obj) {
        Ok(sj) => sj,
        Err(m) => return super::review::deny(resp, 400, m),
    };
    if sj.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        sj.metadata.namespace = req.namespace.clone();
    }
    if sj.metadata.name.as_deref().is_none_or(str::is_empty) && !req.name.is_empty() {
        sj.metadata.name = Some(req.name.clone());
    }
    // An UPDATE that only drops finalizers with an unchanged spec is let through (deletion).
    if matches!(req.operation, Operation::Update)
        && let Some(old) = req.old_object.as_ref().and_then(|o| decode(o).ok())
    {
        let old_f = old.metadata.finalizers.as_deref().unwrap_or_default();
        let new_f = sj.metadata.finalizers.as_deref().unwrap_or_default();
        if old.spec == sj.spec && new_f.len() < old_f.len() && new_f.iter().all(|f| old_f.contains(f)) {
            return resp;
        }
    }
    let problems = validate_scaled_job(&sj);
    super::review::log_problems(req, &problems);
    match problems.first() {
        Some(p) => {
            let namespace = sj.metadata.namespace.clone().unwrap_or_default();
            ctx.metrics.record_webhook_validation_error(
                &namespace,
                super::review::action(&req.operation),
                p.reason,
            );
            super::review::deny_problem(resp, p)
        }
        None => resp,
    }
}
