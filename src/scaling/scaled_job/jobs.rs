//! The Jobs of a ScaledJob: how KEDA builds them (§5), counts them running and pending (§4.3),
//! trims finished ones beyond the history limits (§7), and retires old generations on a spec
//! change (§6). Pure functions over the objects the controller listed.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use super::DEFAULT_HISTORY_LIMIT;
use crate::crd::{
    ScaledJob,
    scaled_job::{EXCLUDED_LABELS_ANNOTATION, GENERATION_ANNOTATION, SCALED_JOB_NAME_LABEL},
};

/// KEDA's pause annotation (shared with ScaledObjects).
pub const PAUSED_ANNOTATION: &str = "autoscaling.keda.sh/paused";

/// Why a Job cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// `spec.jobTargetRef` is missing.
    #[error("ScaledJob.spec.jobTargetRef not found")]
    NoJobTargetRef,
    /// The ScaledJob has no name.
    #[error("ScaledJob has no name")]
    Unnamed,
    /// The name label would be rejected by the API server (#7 of the user traps).
    #[error(
        "ScaledJob name {0:?} is longer than 63 characters: the label scaledjob.keda.sh/name on its Jobs would be rejected"
    )]
    NameTooLong(String),
}

/// KEDA's `NeedToBePausedByAnnotation`: present and true, or present and unparsable.
pub fn is_paused(sj: &ScaledJob) -> bool {
    match sj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSED_ANNOTATION))
    {
        None => false,
        Some(v) => parse_go_bool(v).unwrap_or(true),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The Job KEDA would create for `sj` (without a name: the API server adds the suffix to
/// `generateName`). `version` is the `app.kubernetes.io/version` label value.
pub fn generate_job(sj: &ScaledJob, version: &str) -> Result<Job, JobError> {
    let name = sj
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(JobError::Unnamed)?;
    if name.len() > 63 {
        return Err(JobError::NameTooLong(name));
    }
    let mut spec = sj.spec.job_target_ref.clone().ok_or(JobError::NoJobTargetRef)?;
    let prefix = format!("{name}-");

    let template_meta = spec.template.metadata.get_or_insert_with(ObjectMeta::default);
    template_meta.generate_name = Some(prefix.clone());
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(SCALED_JOB_NAME_LABEL.to_string(), name.clone());
    if let Some(pod) = spec.template.spec.as_mut()
        && pod.restart_policy.as_deref().is_none_or(str::is_empty)
    {
        // Jobs reject `Always`, which clients default an empty policy to.
        pod.restart_policy = Some("OnFailure".to_string());
    }

    let mut labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name", name.as_str()),
        ("app.kubernetes.io/version", version),
        ("app.kubernetes.io/part-of", name.as_str()),
        ("app.kubernetes.io/managed-by", "keda-operator"),
        (SCALED_JOB_NAME_LABEL, name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations = sj.metadata.annotations.clone().unwrap_or_default();
    // Split on "," with no trimming, as KEDA does.
    let excluded: Vec<&str> = annotations
        .get(EXCLUDED_LABELS_ANNOTATION)
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    for (k, v) in sj.metadata.labels.iter().flatten() {
        if !excluded.contains(&k.as_str()) {
            labels.insert(k.clone(), v.clone());
        }
    }
    let mut job_annotations = BTreeMap::from([(
        GENERATION_ANNOTATION.to_string(),
        sj.metadata.generation.unwrap_or(0).to_string(),
    )]);
    job_annotations.extend(annotations);

    Ok(Job {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: Some(
                sj.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string()),
            ),
            labels: Some(labels),
            annotations: Some(job_annotations),
            owner_references: Some(vec![owner_reference(sj, &name)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

fn owner_reference(sj: &ScaledJob, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: "keda.sh/v1alpha1".to_string(),
        kind: "ScaledJob".to_string(),
        name: name.to_string(),
        uid: sj.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// How a Job ended, from its first `Complete=True` or `Failed=True` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// `Complete`.
    Succeeded,
    /// `Failed`.
    Failed,
}

/// `Some` once the Job has a `Complete` or `Failed` condition with status `True`; nothing else
/// (suspension, `SuccessCriteriaMet`, a deletion timestamp) finishes it.
pub fn finished(job: &Job) -> Option<Finished> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => Some(Finished::Succeeded),
            ("Failed", "True") => Some(Finished::Failed),
            _ => None,
        })
}

/// Whether an unfinished Job still counts as pending, from the pods labelled `job-name=<job>`
/// (`None` when the pod list failed: KEDA then counts the Job as pending).
pub fn is_pending(pods: Option<&[Pod]>, pending_pod_conditions: &[String]) -> bool {
    let Some(pods) = pods else { return true };
    if pending_pod_conditions.is_empty() {
        return !pods.iter().any(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Running" | "Succeeded")
            )
        });
    }
    // KEDA (since #6980) counts, per pod, the distinct listed types that are `True` and
    // compares with the list length, so a duplicated entry can never be satisfied (kept).
    let fulfilled_on = |p: &Pod| {
        let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
        let mut met: Vec<&str> = Vec::new();
        for c in conditions.into_iter().flatten() {
            if c.status == "True"
                && pending_pod_conditions.contains(&c.type_)
                && !met.contains(&c.type_.as_str())
            {
                met.push(&c.type_);
            }
        }
        met.len()
    };
    !pods
        .iter()
        .any(|p| fulfilled_on(p) == pending_pod_conditions.len())
}

/// Running (unfinished, pending included) and pending Job counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Unfinished Jobs.
    pub running: i64,
    /// Unfinished Jobs none of whose pods has started.
    pub pending: i64,
}

/// Counts `jobs`; `pods_of` gives the pods of a Job by name (`None` when they could not be listed).
pub fn count<'a>(
    jobs: &[Job],
    pods_of: impl Fn(&str) -> Option<&'a [Pod]>,
    pending_pod_conditions: &[String],
) -> Counts {
    let mut counts = Counts::default();
    for job in jobs.iter().filter(|j| finished(j).is_none()) {
        counts.running += 1;
        let name = job.metadata.name.as_deref().unwrap_or_default();
        if is_pending(pods_of(name), pending_pod_conditions) {
            counts.pending += 1;
        }
    }
    counts
}

/// The pending-pod conditions of `sj`.
pub fn pending_pod_conditions(sj: &ScaledJob) -> &[String] {
    sj.spec
        .scaling_strategy
        .as_ref()
        .and_then(|s| s.pending_pod_conditions.as_deref())
        .unwrap_or(&[])
}

/// Names of the finished Jobs to delete this poll, in deletion order: the oldest successful
/// Jobs beyond `successfulJobsHistoryLimit`, then the oldest failed beyond
/// `failedJobsHistoryLimit` (KEDA: sorted by `completionTime`, a missing time never earlier).
pub fn history_cleanup(sj: &ScaledJob, jobs: &[Job]) -> Vec<String> {
    let limit = |v: Option<i32>| usize::try_from(v.map_or(DEFAULT_HISTORY_LIMIT, i64::from)).unwrap_or(0);
    let mut succeeded: Vec<&Job> = Vec::new();
    let mut failed: Vec<&Job> = Vec::new();
    for job in jobs {
        match finished(job) {
            Some(Finished::Succeeded) => succeeded.push(job),
            Some(Finished::Failed) => failed.push(job),
            None => {}
        }
    }
    let mut out = Vec::new();
    for (mut group, keep) in [
        (succeeded, limit(sj.spec.successful_jobs_history_limit)),
        (failed, limit(sj.spec.failed_jobs_history_limit)),
    ] {
        sort_by_completion(&mut group);
        let excess = group.len().saturating_sub(keep);
        out.extend(
            group
                .into_iter()
                .take(excess)
                .filter_map(|j| j.metadata.name.clone()),
        );
    }
    out
}

/// Go's `sort.Sort` by `CompletionTime.Before` as KEDA runs it: for the group sizes history
/// limits produce this is an insertion sort, and `Before` with a missing time is false both
/// ways, so an untimed Job is never passed by a timed one. (A total-order sort would need an
/// invented rank for untimed Jobs.)
fn sort_by_completion(group: &mut [&Job]) {
    let before = |a: &Job, b: &Job| matches!((completion(a), completion(b)), (Some(x), Some(y)) if x < y);
    for i in 1..group.len() {
        let mut j = i;
        while j > 0 && before(group[j], group[j - 1]) {
            group.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn completion(job: &Job) -> Option<k8s_openapi::jiff::Timestamp> {
    job.status.as_ref()?.completion_time.as_ref().map(|t| t.0)
}

/// Delete propagation of a rollout cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// `Foreground`.
    Foreground,
    /// `Background`.
    Background,
}

impl Propagation {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Foreground => "Foreground",
            Self::Background => "Background",
        }
    }
}

/// What a reconcile does to the Jobs of earlier generations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Jobs to delete (finished ones included), in list order.
    pub delete: Vec<String>,
    /// With which propagation.
    pub propagation: Propagation,
}

/// `true` when old Jobs are left to finish (`gradual`); the deprecated `rolloutStrategy` wins
/// when non-empty.
pub fn is_gradual(sj: &ScaledJob) -> bool {
    let strategy = sj
        .spec
        .rollout_strategy
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(sj.spec.rollout.as_ref().and_then(|r| r.strategy.as_deref()));
    strategy == Some("gradual")
}

/// KEDA's `deletePreviousVersionScaleJobs`: every Job whose generation annotation is missing or
/// differs from the ScaledJob's, unless the rollout is gradual.
pub fn rollout(sj: &ScaledJob, jobs: &[Job]) -> Rollout {
    let propagation = match sj
        .spec
        .rollout
        .as_ref()
        .and_then(|r| r.propagation_policy.as_deref())
    {
        Some("foreground") => Propagation::Foreground,
        _ => Propagation::Background,
    };
    if is_gradual(sj) {
        return Rollout {
            delete: Vec::new(),
            propagation,
        };
    }
    let current = sj.metadata.generation.unwrap_or(0).to_string();
    let delete = jobs
        .iter()
        .filter(|j| {
            j.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(GENERATION_ANNOTATION))
                != Some(&current)
        })
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    Rollout { delete, propagation }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sj(yaml: &str) -> ScaledJob {
        serde_yaml::from_str(yaml).expect("ScaledJob")
    }

    const BASE: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: encode
  namespace: media
  uid: u-1
  generation: 3
  labels: {team: video, app.kubernetes.io/name: custom, secret-label: x}
  annotations: {scaledjob.keda.sh/job-excluded-labels: "secret-label,team ", note: hi}
spec:
  jobTargetRef:
    backoffLimit: 2
    template:
      metadata: {labels: {tier: batch}}
      spec:
        containers: [{name: worker, image: encoder:1}]
  triggers: [{type: cron, metadata: {}}]
"#;

    #[test]
    fn generates_the_job_keda_would() {
        let job = generate_job(&sj(BASE), "2.20.1").expect("job");
        let v = serde_json::to_value(&job).expect("json");
        assert_eq!(v["metadata"]["generateName"], "encode-");
        assert_eq!(v["metadata"]["namespace"], "media");
        assert_eq!(
            v["metadata"]["labels"],
            serde_json::json!({
                // The ScaledJob's own label wins over KEDA's.
                "app.kubernetes.io/name": "custom",
                "app.kubernetes.io/version": "2.20.1",
                "app.kubernetes.io/part-of": "encode",
                "app.kubernetes.io/managed-by": "keda-operator",
                "scaledjob.keda.sh/name": "encode",
                // "team " (with the space) is excluded, not "team".
                "team": "video",
            })
        );
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({
                "scaledjob.keda.sh/generation": "3",
                "scaledjob.keda.sh/job-excluded-labels": "secret-label,team ",
                "note": "hi",
            })
        );
        assert_eq!(
            v["metadata"]["ownerReferences"],
            serde_json::json!([{
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "name": "encode", "uid": "u-1",
                "controller": true, "blockOwnerDeletion": true
            }])
        );
        assert_eq!(v["spec"]["backoffLimit"], 2);
        assert_eq!(v["spec"]["template"]["metadata"]["generateName"], "encode-");
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"],
            serde_json::json!({"tier": "batch", "scaledjob.keda.sh/name": "encode"})
        );
        assert_eq!(v["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    }

    #[test]
    fn keeps_an_explicit_restart_policy_and_refuses_what_cannot_be_created() {
        let mut s = sj(BASE);
        if let Some(pod) = s
            .spec
            .job_target_ref
            .as_mut()
            .and_then(|j| j.template.spec.as_mut())
        {
            pod.restart_policy = Some("Never".into());
        }
        let job = generate_job(&s, "main").expect("job");
        let policy = job
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.restart_policy);
        assert_eq!(policy.as_deref(), Some("Never"));
        let mut s = sj(BASE);
        s.spec.job_target_ref = None;
        assert_eq!(generate_job(&s, "main"), Err(JobError::NoJobTargetRef));
        let mut s = sj(BASE);
        s.metadata.name = Some("x".repeat(64));
        assert!(matches!(generate_job(&s, "main"), Err(JobError::NameTooLong(_))));
    }

    fn job(
        name: &str,
        state: Option<(&str, &str)>,
        completed: Option<&str>,
        generation: Option<&str>,
    ) -> Job {
        let mut v = serde_json::json!({"metadata": {"name": name}, "spec": {"template": {}}, "status": {}});
        if let Some((t, s)) = state {
            v["status"]["conditions"] = serde_json::json!([{"type": t, "status": s}]);
        }
        if let Some(c) = completed {
            v["status"]["completionTime"] = serde_json::json!(c);
        }
        if let Some(g) = generation {
            v["metadata"]["annotations"] = serde_json::json!({GENERATION_ANNOTATION: g});
        }
        serde_json::from_value(v).expect("job")
    }

    fn pod(phase: &str, conditions: &[(&str, &str)]) -> Pod {
        let conditions: Vec<_> = conditions
            .iter()
            .map(|(t, s)| serde_json::json!({"type": t, "status": s}))
            .collect();
        serde_json::from_value(serde_json::json!({"status": {"phase": phase, "conditions": conditions}}))
            .expect("pod")
    }

    #[test]
    fn what_finishes_a_job() {
        assert_eq!(
            finished(&job("a", Some(("Complete", "True")), None, None)),
            Some(Finished::Succeeded)
        );
        assert_eq!(
            finished(&job("a", Some(("Failed", "True")), None, None)),
            Some(Finished::Failed)
        );
        assert_eq!(finished(&job("a", Some(("Failed", "False")), None, None)), None);
        assert_eq!(
            finished(&job("a", Some(("SuccessCriteriaMet", "True")), None, None)),
            None
        );
        assert_eq!(
            finished(&job("a", Some(("FailureTarget", "True")), None, None)),
            None
        );
        assert_eq!(finished(&job("a", Some(("Suspended", "True")), None, None)), None);
        assert_eq!(finished(&job("a", None, None, None)), None);
    }

    #[test]
    fn pending_pod_conditions() {
        let ready = ["Ready".to_string()];
        let two = ["Initialized".to_string(), "Ready".to_string()];
        let dup = ["Ready".to_string(), "Ready".to_string()];
        // (pods, conditions, pending)
        type Case<'a> = (Option<Vec<Pod>>, &'a [String], bool);
        let cases: Vec<Case> = vec![
            (Some(vec![]), &[], true),
            (None, &[], true),
            (Some(vec![pod("Pending", &[])]), &[], true),
            (Some(vec![pod("Failed", &[])]), &[], true),
            (Some(vec![pod("Unknown", &[])]), &[], true),
            (Some(vec![pod("Running", &[])]), &[], false),
            (Some(vec![pod("Succeeded", &[])]), &[], false),
            (Some(vec![pod("Failed", &[]), pod("Running", &[])]), &[], false),
            // With conditions the phase is ignored.
            (Some(vec![pod("Running", &[("Ready", "False")])]), &ready, true),
            (Some(vec![pod("Pending", &[("Ready", "True")])]), &ready, false),
            (Some(vec![pod("Running", &[("Ready", "True")])]), &two, true),
            (
                Some(vec![pod(
                    "Running",
                    &[("Initialized", "True"), ("Ready", "True")],
                )]),
                &two,
                false,
            ),
            // Every listed type on ONE pod (#6980): split across two pods is still pending.
            (
                Some(vec![
                    pod("Running", &[("Initialized", "True")]),
                    pod("Running", &[("Ready", "True")]),
                ]),
                &two,
                true,
            ),
            (None, &ready, true),
            (Some(vec![]), &ready, true),
            // A duplicated entry can never be satisfied (KEDA quirk).
            (Some(vec![pod("Running", &[("Ready", "True")])]), &dup, true),
            // Types compare exactly.
            (Some(vec![pod("Running", &[("ready", "True")])]), &ready, true),
        ];
        for (pods, conditions, want) in cases {
            assert_eq!(
                is_pending(pods.as_deref(), conditions),
                want,
                "{pods:?} {conditions:?}"
            );
        }
    }

    #[test]
    fn counts_running_and_pending() {
        let jobs = vec![
            job("done", Some(("Complete", "True")), None, None),
            job("failed", Some(("Failed", "True")), None, None),
            job("starting", None, None, None),
            job("working", None, None, None),
            job("unlisted", None, None, None),
        ];
        let running_pod = vec![pod("Running", &[])];
        let pending_pod = vec![pod("Pending", &[])];
        let pods_of = |name: &str| -> Option<&[Pod]> {
            match name {
                "starting" => Some(&pending_pod),
                "working" => Some(&running_pod),
                // A failed (or any finished) Job is never asked about.
                "done" | "failed" => panic!("finished Jobs are not pending"),
                _ => None,
            }
        };
        assert_eq!(
            count(&jobs, pods_of, &[]),
            Counts {
                running: 3,
                pending: 2
            }
        );
    }

    #[test]
    fn history_cleanup_deletes_the_oldest_finished_beyond_the_limits() {
        let mut s = sj(BASE);
        s.spec.successful_jobs_history_limit = Some(1);
        s.spec.failed_jobs_history_limit = Some(1);
        let jobs = vec![
            job(
                "ok-new",
                Some(("Complete", "True")),
                Some("2026-01-01T00:03:00Z"),
                None,
            ),
            job("failed-a", Some(("Failed", "True")), None, None),
            job("running", None, None, None),
            job(
                "ok-old",
                Some(("Complete", "True")),
                Some("2026-01-01T00:01:00Z"),
                None,
            ),
            job(
                "ok-mid",
                Some(("Complete", "True")),
                Some("2026-01-01T00:02:00Z"),
                None,
            ),
            job("failed-b", Some(("Failed", "True")), None, None),
        ];
        // Successful group first, oldest first; failed Jobs without a time keep list order.
        assert_eq!(history_cleanup(&s, &jobs), ["ok-old", "ok-mid", "failed-a"]);
        s.spec.successful_jobs_history_limit = Some(0);
        s.spec.failed_jobs_history_limit = Some(0);
        assert_eq!(
            history_cleanup(&s, &jobs),
            ["ok-old", "ok-mid", "ok-new", "failed-a", "failed-b"]
        );
        // Defaults: 100 each.
        assert!(history_cleanup(&sj(BASE), &jobs).is_empty());
    }

    #[test]
    fn rollout_deletes_other_generations_unless_gradual() {
        let jobs = vec![
            job("current", None, None, Some("3")),
            job("old", None, None, Some("2")),
            job("old-done", Some(("Complete", "True")), None, Some("1")),
            job("legacy", None, None, None),
        ];
        let mut s = sj(BASE);
        let r = rollout(&s, &jobs);
        assert_eq!(r.delete, ["old", "old-done", "legacy"]);
        assert_eq!(r.propagation, Propagation::Background);
        s.spec.rollout = Some(crate::crd::scaled_job::Rollout {
            strategy: Some("immediate".into()),
            propagation_policy: Some("foreground".into()),
        });
        assert_eq!(rollout(&s, &jobs).propagation, Propagation::Foreground);
        s.spec.rollout = Some(crate::crd::scaled_job::Rollout {
            strategy: Some("gradual".into()),
            propagation_policy: None,
        });
        assert!(rollout(&s, &jobs).delete.is_empty());
        // The deprecated field wins when set.
        s.spec.rollout_strategy = Some("immediate".into());
        assert_eq!(rollout(&s, &jobs).delete.len(), 3);
    }

    #[test]
    fn pause_annotation() {
        let with = |v: Option<&str>| {
            let mut s = sj(BASE);
            if let Some(v) = v {
                s.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(PAUSED_ANNOTATION.into(), v.into());
            }
            is_paused(&s)
        };
        assert!(!with(None));
        assert!(with(Some("true")));
        assert!(with(Some("1")));
        assert!(!with(Some("false")));
        assert!(!with(Some("F")));
        // Present but unparsable: paused, as in KEDA.
        assert!(with(Some("yes")));
        assert!(with(Some("")));
    }
}
