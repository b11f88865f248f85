//! What would refuse a ScaledJob, without the cluster: the CRD schema (enums, minimums,
//! required fields — the API server), KEDA's webhook (`ValidateTriggers`), KEDA's reconciler
//! (jobTargetRef, building the scalers) and the Job API (a Job KEDA would create but the API
//! server rejects). `ebb check -f`, `ebb render -f` and the admission webhook share it.

use crate::{
    crd::ScaledJob,
    scaling::validate::{Problem, ResolvedBuild, validate_scaled_object_with},
};

use super::as_scaled_object;

fn problem(field: impl Into<String>, message: impl Into<String>, reason: &'static str) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
        reason,
    }
}

/// Every problem of `sj`; `resolved(i)` is trigger `i`'s build with its TriggerAuthentication
/// resolved when the caller could, `None` to check it offline as the webhook does.
pub fn validate_scaled_job_with(sj: &ScaledJob, resolved: &dyn Fn(usize) -> ResolvedBuild) -> Vec<Problem> {
    let mut out = schema(sj);
    let spec = &sj.spec;
    let name = sj.metadata.name.as_deref().unwrap_or_default();
    if name.len() > 63 {
        out.push(problem(
            "metadata.name",
            format!(
                "ScaledJob name must be no more than 63 characters: it is the value of the label scaledjob.keda.sh/name on every Job ({} characters)",
                name.len()
            ),
            "name-too-long",
        ));
    }
    match &spec.job_target_ref {
        None => out.push(problem(
            "spec.jobTargetRef",
            "ScaledJob.spec.jobTargetRef not found",
            "incorrect-target",
        )),
        Some(job) => {
            let pod = job.template.spec.as_ref();
            let containers = pod.map(|p| p.containers.as_slice()).unwrap_or_default();
            if containers.is_empty() {
                out.push(problem(
                    "spec.jobTargetRef.template.spec.containers",
                    "target object doesn't have containers",
                    "incorrect-target",
                ));
            }
            if let Some(c) = spec
                .env_source_container_name
                .as_deref()
                .filter(|c| !c.is_empty())
                && !containers.is_empty()
                && !containers.iter().any(|have| have.name == c)
            {
                out.push(problem(
                    "spec.envSourceContainerName",
                    format!("couldn't find container with name {c} on Target object"),
                    "incorrect-target",
                ));
            }
            if let Some(policy) = pod.and_then(|p| p.restart_policy.as_deref())
                && !matches!(policy, "" | "OnFailure" | "Never")
            {
                out.push(problem(
                    "spec.jobTargetRef.template.spec.restartPolicy",
                    format!(
                        "Unsupported value: {policy:?}: supported values: \"OnFailure\", \"Never\" (the Job API refuses every Job this ScaledJob would create)"
                    ),
                    "incorrect-target",
                ));
            }
        }
    }
    // The trigger rules and scaler builds are the ScaledObject's; only their findings apply.
    let so = as_scaled_object(sj);
    out.extend(
        validate_scaled_object_with(&so, resolved)
            .into_iter()
            .filter(|p| p.field.starts_with("spec.triggers"))
            .filter(|p| !p.field.ends_with(".metricType")),
    );
    for (i, t) in spec.triggers.iter().enumerate() {
        if t.metric_type.is_some() {
            out.push(problem(
                format!("spec.triggers[{i}].metricType"),
                "Cannot set metricType in ScaledJob triggers (the API server prunes it: KEDA's CRD has no such field for ScaledJobs)",
                "incorrect-triggers",
            ));
        }
    }
    out
}

/// [`validate_scaled_job_with`] offline.
pub fn validate_scaled_job(sj: &ScaledJob) -> Vec<Problem> {
    validate_scaled_job_with(sj, &|_| None)
}

/// The CRD schema's minimums and enums (the API server's refusals).
fn schema(sj: &ScaledJob) -> Vec<Problem> {
    let spec = &sj.spec;
    let mut out = Vec::new();
    for (field, value, min) in [
        ("pollingInterval", spec.polling_interval, 1),
        (
            "successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit,
            0,
        ),
        ("failedJobsHistoryLimit", spec.failed_jobs_history_limit, 0),
        ("minReplicaCount", spec.min_replica_count, 0),
        ("maxReplicaCount", spec.max_replica_count, 1),
    ] {
        if let Some(v) = value
            && v < min
        {
            out.push(problem(
                format!("spec.{field}"),
                format!("spec.{field}: Invalid value: {v}: spec.{field} in body should be greater than or equal to {min}"),
                "schema",
            ));
        }
    }
    let rollout = spec.rollout.as_ref();
    let strategy = spec.scaling_strategy.as_ref();
    let enums: [(&str, Option<&str>, &[&str]); 5] = [
        (
            "rolloutStrategy",
            spec.rollout_strategy.as_deref(),
            &["gradual", "immediate"],
        ),
        (
            "rollout.strategy",
            rollout.and_then(|r| r.strategy.as_deref()),
            &["gradual", "immediate"],
        ),
        (
            "rollout.propagationPolicy",
            rollout.and_then(|r| r.propagation_policy.as_deref()),
            &["foreground", "background"],
        ),
        (
            "scalingStrategy.strategy",
            strategy.and_then(|s| s.strategy.as_deref()),
            &["default", "custom", "accurate", "eager"],
        ),
        (
            "scalingStrategy.multipleScalersCalculation",
            strategy.and_then(|s| s.multiple_scalers_calculation.as_deref()),
            &["min", "avg", "sum", "max"],
        ),
    ];
    for (field, value, allowed) in enums {
        if let Some(v) = value
            && !allowed.contains(&v)
        {
            let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            out.push(problem(
                format!("spec.{field}"),
                format!(
                    "spec.{field}: Unsupported value: {v:?}: supported values: {}",
                    quoted.join(", ")
                ),
                "schema",
            ));
        }
    }
    for (i, t) in spec.triggers.iter().enumerate() {
        if let Some(kind) = t.authentication_ref.as_ref().and_then(|a| a.kind.as_deref())
            && !matches!(kind, "TriggerAuthentication" | "ClusterTriggerAuthentication")
        {
            out.push(problem(
                format!("spec.triggers[{i}].authenticationRef.kind"),
                format!(
                    "spec.triggers[{i}].authenticationRef.kind: Unsupported value: {kind:?}: supported values: \"TriggerAuthentication\", \"ClusterTriggerAuthentication\""
                ),
                "schema",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sj(extra: &str) -> ScaledJob {
        let yaml = format!(
            "metadata: {{name: encode, namespace: media}}\nspec:\n  jobTargetRef:\n    template:\n      spec:\n        containers: [{{name: worker, image: e:1}}]\n  triggers: [{{type: cron, metadata: {{timezone: Etc/UTC, start: '0 * * * *', end: '30 * * * *', desiredReplicas: '2'}}}}]\n{extra}"
        );
        serde_yaml::from_str(&yaml).expect("ScaledJob")
    }

    fn fields(sj: &ScaledJob) -> Vec<String> {
        validate_scaled_job(sj).into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_valid_scaled_job_has_no_problem() {
        assert_eq!(validate_scaled_job(&sj("")), []);
    }

    #[test]
    fn schema_and_keda_refusals() {
        let cases = [
            ("  pollingInterval: 0\n", "spec.pollingInterval"),
            ("  maxReplicaCount: 0\n", "spec.maxReplicaCount"),
            ("  minReplicaCount: -1\n", "spec.minReplicaCount"),
            ("  failedJobsHistoryLimit: -1\n", "spec.failedJobsHistoryLimit"),
            ("  rollout: {strategy: default}\n", "spec.rollout.strategy"),
            (
                "  rollout: {propagationPolicy: orphan}\n",
                "spec.rollout.propagationPolicy",
            ),
            ("  rolloutStrategy: fast\n", "spec.rolloutStrategy"),
            (
                "  scalingStrategy: {strategy: greedy}\n",
                "spec.scalingStrategy.strategy",
            ),
            (
                "  scalingStrategy: {multipleScalersCalculation: median}\n",
                "spec.scalingStrategy.multipleScalersCalculation",
            ),
            (
                "  envSourceContainerName: sidecar\n",
                "spec.envSourceContainerName",
            ),
        ];
        for (extra, field) in cases {
            assert_eq!(fields(&sj(extra)), [field], "{extra}");
        }
    }

    #[test]
    fn triggers_and_job_template() {
        let mut s = sj("");
        s.spec.triggers.clear();
        assert_eq!(fields(&s), ["spec.triggers"]);
        let mut s = sj("");
        s.spec.triggers.push(s.spec.triggers[0].clone());
        s.spec.triggers[0].name = Some("a".into());
        s.spec.triggers[1].name = Some("a".into());
        assert_eq!(fields(&s), ["spec.triggers[1].name"]);
        let mut s = sj("");
        s.spec.triggers[0].metadata.remove("start");
        assert_eq!(fields(&s), ["spec.triggers[0].metadata.start"]);
        let mut s = sj("");
        s.spec.triggers[0].metric_type = Some(crate::crd::scaled_object::MetricTargetType::Value);
        assert_eq!(fields(&s), ["spec.triggers[0].metricType"]);
        let mut s = sj("");
        s.spec.job_target_ref = None;
        assert_eq!(fields(&s), ["spec.jobTargetRef"]);
        let mut s = sj("");
        if let Some(p) = s
            .spec
            .job_target_ref
            .as_mut()
            .and_then(|j| j.template.spec.as_mut())
        {
            p.restart_policy = Some("Always".into());
        }
        assert_eq!(fields(&s), ["spec.jobTargetRef.template.spec.restartPolicy"]);
        let mut s = sj("");
        s.metadata.name = Some("n".repeat(64));
        assert_eq!(fields(&s), ["metadata.name"]);
    }
}
