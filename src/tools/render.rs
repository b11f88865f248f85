//! `ebb render` and `ebb check`: the operator's own code applied to manifest files, without a
//! cluster. `render` prints the HPAs the operator would apply; `check` prints what KEDA would
//! reject.
//!
//! Both build every trigger's scaler through [`build_trigger`], the registry's function, with
//! a [`FileResolver`] over the TriggerAuthentications, Secrets, ConfigMaps and workloads found
//! in the same files; the HPA comes from [`desired_hpa`], reconcile's function. A trigger whose
//! referenced objects are not in the files is built with placeholder credentials instead, and
//! `check` says it was not checked.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    cli::{CheckArgs, RenderArgs},
    crd::ScaledJob,
    crd::ScaledObject,
    resolver::{
        cluster_object_namespace,
        files::{FileResolution, FileResolver, LocalObjects},
    },
    scalers::{
        ScalerContext, ScalerError, SharedScaler, build_scaler,
        registry::{build_trigger, object_key},
    },
    scaling::{
        hpa::{DesiredError, desired_hpa},
        scaled_job::{as_scaled_object, jobs::generate_job, validate::validate_scaled_job_with},
        validate::{
            Problem, deprecations, offline_scaler_config_assuming_sources, validate_scaled_object_with,
            validate_trigger_authentication,
        },
    },
    source::files::{Parsed, manifest_files, parse_file},
};

/// Namespace assumed for objects without one, as `kubectl apply` without `-n` would.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Default timeout of scaler HTTP calls, as the operator's default (no call is made offline).
const HTTP_TIMEOUT: Duration = Duration::from_millis(3000);

/// Kinds of the `keda.sh/v1alpha1` API.
const KEDA_KINDS: &[&str] = &[
    "ScaledObject",
    "ScaledJob",
    "TriggerAuthentication",
    "ClusterTriggerAuthentication",
];

/// Expands directories into the manifests below them; plain paths are kept as given.
fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .flat_map(|p| {
            if p.is_dir() {
                manifest_files(p)
            } else {
                vec![p.clone()]
            }
        })
        .collect()
}

/// Reads and parses one file; the error is already formatted for output.
fn load(path: &Path) -> Result<Parsed, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut parsed = parse_file(path, &text).map_err(|e| e.to_string())?;
    for so in &mut parsed.scaled_objects {
        so.metadata
            .namespace
            .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string());
    }
    Ok(parsed)
}

/// Every file read, with its parse result, and the lookups built from all their documents.
struct Inputs {
    files: Vec<(PathBuf, Result<Parsed, String>)>,
    objects: LocalObjects,
}

fn read_inputs(paths: &[PathBuf]) -> Inputs {
    let files: Vec<(PathBuf, Result<Parsed, String>)> =
        expand(paths).into_iter().map(|p| (p.clone(), load(&p))).collect();
    let docs: Vec<serde_yaml::Value> = files
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok())
        .flat_map(|p| p.others.iter().cloned())
        .collect();
    Inputs {
        files,
        objects: LocalObjects::from_documents(&docs),
    }
}

fn so_ref(so: &ScaledObject) -> String {
    object_key(so).to_string()
}

/// One trigger built from files: its scaler and how its references resolved.
pub struct OfflineTrigger {
    /// The scaler, as the registry would build it (with placeholders when not checked).
    pub scaler: Result<SharedScaler, ScalerError>,
    /// What resolving its TriggerAuthentication and environment against the files found.
    pub resolution: FileResolution,
}

/// Builds trigger `i` of `so` with the registry's code over `objects`; when the objects it
/// references are not in the files, with placeholder credentials so the rest still builds.
pub fn build_offline(
    so: &ScaledObject,
    i: usize,
    objects: &LocalObjects,
    cluster_ns: &str,
) -> OfflineTrigger {
    build_offline_with(so, i, objects, cluster_ns, None)
}

/// [`build_offline`]; for a ScaledJob (as a ScaledObject), `job_template` is its pod template.
pub fn build_offline_with(
    so: &ScaledObject,
    i: usize,
    objects: &LocalObjects,
    cluster_ns: &str,
    job_template: Option<&k8s_openapi::api::core::v1::PodSpec>,
) -> OfflineTrigger {
    let ctx = ScalerContext::default();
    let resolver = FileResolver::new(objects, cluster_ns);
    let built = match job_template {
        Some(template) => {
            let for_job = crate::resolver::ForJob {
                inner: &resolver,
                template,
            };
            build_trigger(so, i, &for_job, &ctx, HTTP_TIMEOUT)
        }
        None => build_trigger(so, i, &resolver, &ctx, HTTP_TIMEOUT),
    };
    let resolution = resolver.resolution();
    let scaler = match (&resolution, so.spec.triggers.get(i)) {
        (FileResolution::NotChecked(_), Some(t)) => {
            build_scaler(&offline_scaler_config_assuming_sources(so, i, t), &ctx)
        }
        _ => built,
    };
    OfflineTrigger { scaler, resolution }
}

/// Everything `check` and `render` learn about one ScaledObject.
struct Analysis {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// `(field, what was not in the files)` per trigger that could not be resolved.
    not_checked: Vec<(String, Vec<String>)>,
    triggers: Vec<OfflineTrigger>,
}

fn analyse(so: &ScaledObject, objects: &LocalObjects, cluster_ns: &str) -> Analysis {
    let triggers: Vec<OfflineTrigger> = (0..so.spec.triggers.len())
        .map(|i| build_offline(so, i, objects, cluster_ns))
        .collect();
    let ref_field = |i: usize| {
        let has_ref = so.spec.triggers[i].authentication_ref.is_some();
        format!(
            "spec.triggers[{i}].{}",
            if has_ref { "authenticationRef" } else { "metadata" }
        )
    };
    let mut problems = validate_scaled_object_with(so, &|i| match &triggers[i].resolution {
        FileResolution::Resolved => Some(triggers[i].scaler.as_ref().map(|_| ()).map_err(Clone::clone)),
        // Reported below, at the reference.
        FileResolution::Failed(_) => Some(Ok(())),
        FileResolution::NotChecked(_) => None,
    });
    let mut not_checked = Vec::new();
    for (i, t) in triggers.iter().enumerate() {
        match &t.resolution {
            FileResolution::Failed(e) => problems.push(Problem {
                field: ref_field(i),
                message: e.to_string(),
                reason: "incorrect-triggers",
            }),
            FileResolution::NotChecked(what) => not_checked.push((ref_field(i), what.clone())),
            FileResolution::Resolved => {}
        }
    }
    Analysis {
        problems,
        warnings: deprecations(so),
        not_checked,
        triggers,
    }
}

/// `ebb render`: prints one YAML document per HPA; returns 1 when any file or object failed.
pub fn run_render(args: &RenderArgs) -> i32 {
    let inputs = read_inputs(&args.files);
    let cluster_ns = cluster_object_namespace(args.cluster_objects.cluster_object_namespace.as_deref());
    let mut failed = false;
    let mut docs = Vec::new();
    for (path, parsed) in &inputs.files {
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                failed = true;
                continue;
            }
        };
        for so in &parsed.scaled_objects {
            let who = format!("{}: ScaledObject {}", path.display(), so_ref(so));
            let analysis = analyse(so, &inputs.objects, &cluster_ns);
            for w in &analysis.warnings {
                eprintln!("{who}: {}: warning: {}", w.field, w.message);
            }
            if !analysis.problems.is_empty() {
                // The operator stops at a failed check: no HPA either.
                for p in &analysis.problems {
                    eprintln!("{who}: {}: {}", p.field, p.message);
                }
                failed = true;
                continue;
            }
            let scalers = analysis.triggers.iter().enumerate().map(|(i, t)| (i, &t.scaler));
            let rendered = match desired_hpa(so, scalers, &args.version_label) {
                Ok((hpa, _)) => serde_yaml::to_string(&hpa).map_err(|e| e.to_string()),
                Err(DesiredError::Scalers(errors)) => Err(errors
                    .iter()
                    .map(|(i, e)| format!("spec.triggers[{i}]: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")),
                Err(DesiredError::Hpa(e)) => Err(e.to_string()),
            };
            match rendered {
                Ok(yaml) => docs.push(yaml),
                Err(e) => {
                    eprintln!("{who}: {e}");
                    failed = true;
                }
            }
        }
    }
    for (path, parsed) in &inputs.files {
        let Ok(parsed) = parsed else { continue };
        for doc in parsed
            .others
            .iter()
            .filter(|d| str_at(d, &["kind"]) == Some("ScaledJob"))
        {
            let who = format!("{}: {}", path.display(), doc_ref(doc, "ScaledJob"));
            let rendered = parse_scaled_job(doc).and_then(|sj| {
                let analysis = analyse_scaled_job(&sj, &inputs.objects, &cluster_ns);
                if analysis.problems.is_empty() {
                    render_job(&sj, &args.version_label)
                } else {
                    Err(analysis
                        .problems
                        .iter()
                        .map(|p| format!("{}: {}", p.field, p.message))
                        .collect::<Vec<_>>()
                        .join("; "))
                }
            });
            match rendered {
                Ok(yaml) => docs.push(yaml),
                Err(e) => {
                    eprintln!("{who}: {e}");
                    failed = true;
                }
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(docs.join("---\n").as_bytes());
    i32::from(failed)
}

fn str_at<'a>(doc: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(doc, |v, k| v.get(*k))?.as_str()
}

/// A document's `Kind ns/name` (cluster-scoped kinds without namespace).
fn doc_ref(doc: &serde_yaml::Value, kind: &str) -> String {
    let name = str_at(doc, &["metadata", "name"]).unwrap_or_default();
    if kind == "ClusterTriggerAuthentication" {
        return format!("{kind} {name}");
    }
    let ns = str_at(doc, &["metadata", "namespace"])
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    format!("{kind} {ns}/{name}")
}

/// The problem with a document of the KEDA API groups that is not a checkable object, if any.
fn keda_kind_problem(api_version: &str, kind: &str) -> Option<(&'static str, String)> {
    if let Some(version) = api_version.strip_prefix("keda.k8s.io/") {
        return Some((
            "apiVersion",
            format!(
                "keda.k8s.io/{version} is the API group of KEDA 1.x, which KEDA 2 and ebb no longer serve; \
                 migrate the object to apiVersion keda.sh/v1alpha1 (KEDA's 1.x to 2.0 migration guide lists the \
                 field changes, e.g. scaleTargetRef.deploymentName became scaleTargetRef.name)"
            ),
        ));
    }
    let version = api_version.strip_prefix("keda.sh/")?;
    if version != "v1alpha1" {
        return Some((
            "apiVersion",
            format!("keda.sh/{version} is not served; KEDA's API is keda.sh/v1alpha1"),
        ));
    }
    match kind {
        "TriggerAuthentication" | "ClusterTriggerAuthentication" | "ScaledJob" => None,
        other => {
            let nearest = KEDA_KINDS
                .iter()
                .map(|k| {
                    (
                        strsim::damerau_levenshtein(&other.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                        *k,
                    )
                })
                .filter(|(d, _)| *d <= 3)
                .min();
            let hint = nearest
                .map(|(_, k)| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            Some((
                "kind",
                format!(
                    "unknown kind `{other}` in keda.sh/v1alpha1{hint} (its kinds: {})",
                    KEDA_KINDS.join(", ")
                ),
            ))
        }
    }
}

/// `ebb check`: one line per problem, `FILE: Kind ns/name: FIELD: MESSAGE`; warnings and
/// references that could not be checked as `FIELD: warning: ...` and `FIELD: not checked: ...`;
/// `ok: N objects` when clean. A file with nothing to check is a problem unless
/// `--allow-other-kinds`, and checking nothing at all always is.
pub fn run_check(args: &CheckArgs) -> i32 {
    let inputs = read_inputs(&args.files);
    let cluster_ns = cluster_object_namespace(args.cluster_objects.cluster_object_namespace.as_deref());
    let mut problems = 0usize;
    let mut objects = 0usize;
    let mut out = std::io::stdout().lock();
    for (path, parsed) in &inputs.files {
        let file = path.display();
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                report(&mut out, e.clone());
                problems += 1;
                continue;
            }
        };
        let mut checked_here = parsed.scaled_objects.len();
        for so in &parsed.scaled_objects {
            let who = format!("{file}: ScaledObject {}", so_ref(so));
            let analysis = analyse(so, &inputs.objects, &cluster_ns);
            for p in &analysis.problems {
                problems += 1;
                report(&mut out, format!("{who}: {}: {}", p.field, p.message));
            }
            for w in &analysis.warnings {
                report(&mut out, format!("{who}: {}: warning: {}", w.field, w.message));
            }
            for (field, what) in &analysis.not_checked {
                let verb = if what.len() == 1 { "is" } else { "are" };
                report(
                    &mut out,
                    format!(
                        "{who}: {field}: not checked: {} {verb} not in the given files",
                        what.join(", ")
                    ),
                );
            }
        }
        let mut others = Vec::new();
        for doc in &parsed.others {
            let kind = str_at(doc, &["kind"]).unwrap_or_default();
            let api_version = str_at(doc, &["apiVersion"]).unwrap_or_default();
            if let Some((field, message)) = keda_kind_problem(api_version, kind) {
                checked_here += 1;
                problems += 1;
                report(
                    &mut out,
                    format!("{file}: {}: {field}: {message}", doc_ref(doc, kind)),
                );
                continue;
            }
            if !api_version.starts_with("keda.sh/") {
                others.push(doc_ref(doc, kind));
                continue;
            }
            checked_here += 1;
            if kind == "ScaledJob" {
                problems += check_scaled_job(
                    &mut out,
                    &format!("{file}: {}", doc_ref(doc, kind)),
                    doc,
                    &inputs.objects,
                    &cluster_ns,
                );
                continue;
            }
            let json = serde_json::to_value(doc).unwrap_or(serde_json::Value::Null);
            for p in validate_trigger_authentication(&json) {
                problems += 1;
                report(
                    &mut out,
                    format!("{file}: {}: {}: {}", doc_ref(doc, kind), p.field, p.message),
                );
            }
        }
        objects += checked_here;
        if checked_here == 0 && !args.allow_other_kinds {
            problems += 1;
            let found = if others.is_empty() {
                "no document".to_string()
            } else {
                others.join(", ")
            };
            report(
                &mut out,
                format!(
                    "{file}: no ScaledObject, ScaledJob, TriggerAuthentication or ClusterTriggerAuthentication to check (found: {found}); \
                     --allow-other-kinds accepts files without one"
                ),
            );
        }
    }
    if objects == 0 && problems == 0 {
        report(
            &mut out,
            "no ScaledObject, ScaledJob, TriggerAuthentication or ClusterTriggerAuthentication found in the given files"
                .to_string(),
        );
        return 1;
    }
    if problems > 0 {
        return 1;
    }
    report(&mut out, format!("ok: {objects} objects"));
    0
}

/// Reports one ScaledJob document as `check` does; returns the number of problems.
fn check_scaled_job(
    out: &mut std::io::StdoutLock<'_>,
    who: &str,
    doc: &serde_yaml::Value,
    objects: &LocalObjects,
    cluster_ns: &str,
) -> usize {
    let sj = match parse_scaled_job(doc) {
        Ok(sj) => sj,
        Err(e) => {
            report(out, format!("{who}: {e}"));
            return 1;
        }
    };
    let analysis = analyse_scaled_job(&sj, objects, cluster_ns);
    for p in &analysis.problems {
        report(out, format!("{who}: {}: {}", p.field, p.message));
    }
    for (field, what) in &analysis.not_checked {
        let verb = if what.len() == 1 { "is" } else { "are" };
        report(
            out,
            format!(
                "{who}: {field}: not checked: {} {verb} not in the given files",
                what.join(", ")
            ),
        );
    }
    analysis.problems.len()
}

fn report(out: &mut std::io::StdoutLock<'_>, line: String) {
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keda_kinds() {
        assert_eq!(
            keda_kind_problem("keda.sh/v1alpha1", "TriggerAuthentication"),
            None
        );
        assert_eq!(keda_kind_problem("apps/v1", "Deployment"), None);
        let (field, m) = keda_kind_problem("keda.sh/v1alpha1", "ScaledObjet").expect("refused");
        assert_eq!(field, "kind");
        assert!(
            m.starts_with("unknown kind `ScaledObjet` in keda.sh/v1alpha1; did you mean `ScaledObject`?"),
            "{m}"
        );
        let (field, m) = keda_kind_problem("keda.k8s.io/v1alpha1", "ScaledObject").expect("refused");
        assert_eq!(field, "apiVersion");
        assert!(m.contains("KEDA 1.x"), "{m}");
        assert_eq!(keda_kind_problem("keda.sh/v1alpha1", "ScaledJob"), None);
    }
}

// ScaledJobs: `check` reports what the API server (CRD schema), KEDA's webhook and reconciler,
// or the Job API would refuse; `render` prints the Job a poll would create.

/// What `check` learns about one ScaledJob.
#[derive(Debug, Default)]
pub struct JobAnalysis {
    /// Refusals.
    pub problems: Vec<Problem>,
    /// `(field, what was not in the files)` per trigger whose references could not be resolved.
    pub not_checked: Vec<(String, Vec<String>)>,
}

/// Reads a `ScaledJob` document (namespace `default` when unset, as `kubectl apply` would).
pub fn parse_scaled_job(doc: &serde_yaml::Value) -> Result<ScaledJob, String> {
    let mut sj: ScaledJob = serde_yaml::from_value(doc.clone()).map_err(|e| e.to_string())?;
    sj.metadata
        .namespace
        .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string());
    Ok(sj)
}

/// Validates `sj`, building each trigger's scaler with its TriggerAuthentication and env
/// resolved from the files when they hold what it references.
pub fn analyse_scaled_job(sj: &ScaledJob, objects: &LocalObjects, cluster_ns: &str) -> JobAnalysis {
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
pub fn render_job(sj: &ScaledJob, version: &str) -> Result<String, String> {
    let mut sj = sj.clone();
    sj.metadata.generation.get_or_insert(1);
    let job = generate_job(&sj, version).map_err(|e| e.to_string())?;
    serde_yaml::to_string(&job).map_err(|e| e.to_string())
}

#[cfg(test)]
mod scaled_job_tests {
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
        let sj = parse_scaled_job(&doc).expect("parses");
        assert_eq!(sj.metadata.namespace.as_deref(), Some("default"));
        let a = analyse_scaled_job(&sj, &LocalObjects::from_documents(&[]), "ebb");
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let mut broken = sj.clone();
        broken.spec.env_source_container_name = Some("sidecar".into());
        let a = analyse_scaled_job(&broken, &LocalObjects::from_documents(&[]), "ebb");
        assert_eq!(a.problems[0].field, "spec.envSourceContainerName");
    }

    #[test]
    fn renders_the_materialised_job() {
        let doc: serde_yaml::Value = serde_yaml::from_str(SJ).expect("yaml");
        let yaml = render_job(&parse_scaled_job(&doc).expect("parses"), "2.20.1").expect("renders");
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
