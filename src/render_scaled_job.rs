//! `ebb check -f` and `ebb render -f` for ScaledJobs: the controller's own code applied to a
//! manifest, without a cluster. `check` reports what the API server (CRD schema), KEDA's webhook
//! and reconciler, or the Job API would refuse; `render` prints the Job a poll would create.

use crate::{
    crd::ScaledJob,
    operator::validate::Problem,
    render::{DEFAULT_NAMESPACE, build_offline_with},
    resolver::local::{FileResolution, LocalObjects},
    scaling::scaled_job::{as_scaled_object, jobs::generate_job, validate::validate_scaled_job_with},
};

/// What `check` learns about one ScaledJob.
#[derive(Debug, Default)]
pub struct JobAnalysis {
    /// Refusals.
    pub problems: Vec<Problem>,
    /// `(field, what was not in the files)` per trigger whose references could not be resolved.
    pub not_checked: Vec<(String, Vec<String>)>,
}

/// Reads a `ScaledJob` document (namespace `default` when unset, as `kubectl apply` would).
pub fn parse(doc: &serde_yaml::Value) -> Result<ScaledJob, String> {
    let mut sj: ScaledJob = serde_yaml::from_value(doc.clone()).map_err(|e| e.to_string())?;
    sj.metadata
        .namespace
        .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string());
    Ok(sj)
}

/// Validates `sj`, building each trigger's scaler with its TriggerAuthentication and env
/// resolved from the files when they hold what it references.
pub fn analyse(sj: &ScaledJob, objects: &LocalObjects, cluster_ns: &str) -> JobAnalysis {
    let so = as_scaled_object(sj);
    let template = sj
        .spec
        .job_target_ref
        .as_ref()
        .and_then(|j| j.template.spec.clone())
        .unwrap_or_default();
    let triggers: Vec<_> = (0..so.spec.triggers.len())
        .map(|i| build_offline_with(&so, i, objects, cluster_ns, Some(&template)))
        .collect();
    let mut problems = validate_scaled_job_with(sj, &|i| match &triggers[i].resolution {
        FileResolution::Resolved => Some(triggers[i].scaler.as_ref().map(|_| ()).map_err(Clone::clone)),
        FileResolution::Failed(_) => Some(Ok(())),
        FileResolution::NotChecked(_) => None,
    });
    let mut not_checked = Vec::new();
    for (i, t) in triggers.iter().enumerate() {
        let field = format!(
            "spec.triggers[{i}].{}",
            if so.spec.triggers[i].authentication_ref.is_some() {
                "authenticationRef"
            } else {
                "metadata"
            }
        );
        match &t.resolution {
            FileResolution::Failed(e) => problems.push(Problem {
                field,
                message: e.to_string(),
                reason: "incorrect-triggers",
            }),
            FileResolution::NotChecked(what) => not_checked.push((field, what.clone())),
            FileResolution::Resolved => {}
        }
    }
    JobAnalysis {
        problems,
        not_checked,
    }
}

/// The Job a poll would create for `sj`, as YAML; the generation is 1 when unset (a new object).
pub fn render(sj: &ScaledJob, version: &str) -> Result<String, String> {
    let mut sj = sj.clone();
    sj.metadata.generation.get_or_insert(1);
    let job = generate_job(&sj, version).map_err(|e| e.to_string())?;
    serde_yaml::to_string(&job).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SJ: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: encode, labels: {team: media}}
spec:
  envSourceContainerName: worker
  jobTargetRef:
    template:
      spec:
        containers:
        - name: worker
          image: encoder:1
          env: [{name: QUEUE_URL, value: "http://sqs.local/1/jobs"}]
  triggers:
  - type: aws-sqs-queue
    metadata: {queueURLFromEnv: QUEUE_URL, queueLength: "2", awsRegion: eu-west-1, identityOwner: operator}
"#;

    #[test]
    fn env_from_the_job_template_feeds_the_trigger() {
        let doc: serde_yaml::Value = serde_yaml::from_str(SJ).expect("yaml");
        let sj = parse(&doc).expect("parses");
        assert_eq!(sj.metadata.namespace.as_deref(), Some("default"));
        let a = analyse(&sj, &LocalObjects::from_documents(&[]), "ebb");
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let mut broken = sj.clone();
        broken.spec.env_source_container_name = Some("sidecar".into());
        let a = analyse(&broken, &LocalObjects::from_documents(&[]), "ebb");
        assert_eq!(a.problems[0].field, "spec.envSourceContainerName");
    }

    #[test]
    fn renders_the_materialised_job() {
        let doc: serde_yaml::Value = serde_yaml::from_str(SJ).expect("yaml");
        let yaml = render(&parse(&doc).expect("parses"), "2.20.1").expect("renders");
        for wanted in [
            "apiVersion: batch/v1",
            "kind: Job",
            "generateName: encode-",
            "scaledjob.keda.sh/generation: '1'",
            "app.kubernetes.io/managed-by: keda-operator",
            "team: media",
            "restartPolicy: OnFailure",
            "value: http://sqs.local/1/jobs",
        ] {
            assert!(yaml.contains(wanted), "no {wanted:?} in\n{yaml}");
        }
    }
}
