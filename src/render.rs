//! `ebb render` and `ebb check`: the operator's pure functions applied to manifest files, without a
//! cluster. `render` prints the HPAs KEDA would create; `check` prints what KEDA would reject.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    cli::{CheckArgs, RenderArgs},
    crd::{ScaledObject, scaled_object::MetricTargetType},
    operator::{
        hpa::render_hpa,
        validate::{
            offline_scaler_config_assuming_sources, validate_scaled_object, validate_trigger_authentication,
        },
    },
    scalers::{MetricSpec, ResourceTarget, ScalerError, build_scaler},
    source::local::{Parsed, manifest_files, parse_file},
};

/// Namespace assumed for objects without one, as `kubectl apply` without `-n` would.
pub const DEFAULT_NAMESPACE: &str = "default";

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

/// Reads and parses one file; the error is already formatted for stderr.
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

fn so_ref(so: &ScaledObject) -> String {
    format!(
        "{}/{}",
        so.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        so.metadata.name.as_deref().unwrap_or_default()
    )
}

/// cpu/memory metric spec from trigger metadata, used while `build_scaler` does not know these
/// types yet (their scaler is written elsewhere).
fn resource_spec(so: &ScaledObject, i: usize) -> Option<MetricSpec> {
    let t = so.spec.triggers.get(i)?;
    let value = t.metadata.get("value")?.trim().to_string();
    let target = match t.metric_type? {
        MetricTargetType::Utilization => ResourceTarget::Utilization(value.parse().ok()?),
        MetricTargetType::AverageValue => ResourceTarget::AverageValue(value),
        MetricTargetType::Value => return None,
    };
    Some(MetricSpec::Resource {
        resource: t.type_.clone(),
        container: t.metadata.get("containerName").filter(|c| !c.is_empty()).cloned(),
        target,
    })
}

/// Metric specs paired with their trigger index, as `render_hpa` takes them.
pub type IndexedSpecs = Vec<(usize, MetricSpec)>;

/// Metric specs of every trigger, paired with the trigger index, or the build error per trigger.
pub fn offline_metric_specs(so: &ScaledObject) -> (IndexedSpecs, Vec<(usize, ScalerError)>) {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    for (i, t) in so.spec.triggers.iter().enumerate() {
        match build_scaler(
            &offline_scaler_config_assuming_sources(so, i, t),
            &Default::default(),
        ) {
            Ok(s) => specs.extend(s.metric_specs().into_iter().map(|m| (i, m))),
            Err(ScalerError::UnknownType(ty)) if matches!(ty.as_str(), "cpu" | "memory") => {
                match resource_spec(so, i) {
                    Some(m) => specs.push((i, m)),
                    None => errors.push((
                        i,
                        ScalerError::Config(format!("invalid {ty} trigger: needs metricType and value")),
                    )),
                }
            }
            Err(e) => errors.push((i, e)),
        }
    }
    (specs, errors)
}

/// `ebb render`: prints one YAML document per HPA; returns 1 when any file or object failed.
pub fn run_render(args: &RenderArgs) -> i32 {
    let mut failed = false;
    let mut docs = Vec::new();
    for path in expand(&args.files) {
        let parsed = match load(&path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                failed = true;
                continue;
            }
        };
        for so in &parsed.scaled_objects {
            let who = format!("{}: ScaledObject {}", path.display(), so_ref(so));
            let (specs, errors) = offline_metric_specs(so);
            if !errors.is_empty() {
                // KEDA fails the whole reconcile when one scaler cannot be built, so no HPA either.
                for (i, e) in errors {
                    eprintln!("{who}: spec.triggers[{i}]: {e}");
                }
                failed = true;
                continue;
            }
            match render_hpa(so, &specs, &args.version_label)
                .map_err(|e| e.to_string())
                .and_then(|hpa| serde_yaml::to_string(&hpa).map_err(|e| e.to_string()))
            {
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

/// `ebb check`: one line per problem, `FILE: Kind ns/name: FIELD: MESSAGE`; `ok: N objects` when clean.
pub fn run_check(args: &CheckArgs) -> i32 {
    let mut problems = 0usize;
    let mut objects = 0usize;
    let mut out = std::io::stdout().lock();
    for path in expand(&args.files) {
        let parsed = match load(&path) {
            Ok(p) => p,
            Err(e) => {
                let _ = writeln!(out, "{e}");
                problems += 1;
                continue;
            }
        };
        for so in &parsed.scaled_objects {
            objects += 1;
            for p in validate_scaled_object(so) {
                problems += 1;
                let _ = writeln!(
                    out,
                    "{}: ScaledObject {}: {}: {}",
                    path.display(),
                    so_ref(so),
                    p.field,
                    p.message
                );
            }
        }
        for doc in &parsed.others {
            let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            let keda = doc
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .is_some_and(|v| v.starts_with("keda.sh/"));
            if !keda || !matches!(kind, "TriggerAuthentication" | "ClusterTriggerAuthentication") {
                continue;
            }
            objects += 1;
            let meta = |k: &str| {
                doc.get("metadata")
                    .and_then(|m| m.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let name = meta("name").unwrap_or_default();
            let who = if kind == "ClusterTriggerAuthentication" {
                name
            } else {
                format!(
                    "{}/{name}",
                    meta("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
                )
            };
            let json = serde_json::to_value(doc).unwrap_or(serde_json::Value::Null);
            for p in validate_trigger_authentication(&json) {
                problems += 1;
                let _ = writeln!(
                    out,
                    "{}: {kind} {who}: {}: {}",
                    path.display(),
                    p.field,
                    p.message
                );
            }
        }
    }
    if problems > 0 {
        return 1;
    }
    let _ = writeln!(out, "ok: {objects} objects");
    0
}
