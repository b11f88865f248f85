//! `ebb simulate`: replay a metric trace through the decisions ebb and the HPA make, and show
//! the replica count, the limits hit and what it cost.
//!
//! ```text
//! -f scaledobject.yaml ─ parse, pick (--name) ─ offline scalers + desired HPA (as ebb render)
//! --trace trace.csv | --prometheus URL ─→ Trace
//!                     replay::run ─→ rows + summary ─→ table | --output json | --out chart.svg
//! ```
//!
//! A ScaledJob in the file is dispatched to the ScaledJob replay (`simulate_scaled_job`).

pub mod chart;
pub mod output;
pub mod prometheus;
pub mod replay;
pub mod scaled_job;
pub mod trace;

use std::path::Path;

use self::{
    replay::{ReplayError, ResourceTrigger, Setup, TriggerMetric},
    trace::Trace,
};
use crate::{
    cli::{OutputFormat, SimulateArgs},
    crd::ScaledObject,
    resolver::{cluster_object_namespace, files::LocalObjects},
    scalers::MetricSpec,
    scaling::{hpa::desired_hpa, hpa_controller::ControllerFlags},
    source::files::parse_file,
    tools::render::build_offline,
};

/// Why `ebb simulate` stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A file could not be read or parsed.
    #[error("{0}")]
    Input(String),
    /// The object cannot be simulated.
    #[error("ScaledObject {name}: {message}")]
    Object {
        /// namespace/name.
        name: String,
        /// Why.
        message: String,
    },
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Prometheus could not be read.
    #[error("prometheus: {0}")]
    Prometheus(String),
    /// Output could not be written.
    #[error("{0}")]
    Output(String),
}

/// The objects a manifest file holds.
pub struct Loaded {
    /// ScaledObjects, namespace defaulted.
    pub scaled_objects: Vec<ScaledObject>,
    /// Every other document (TriggerAuthentications, Secrets, ScaledJobs ...).
    pub others: Vec<serde_yaml::Value>,
}

/// Reads a manifest.
pub fn load(path: &Path) -> Result<Loaded, SimulateError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SimulateError::Input(format!("{}: {e}", path.display())))?;
    let parsed = parse_file(path, &text).map_err(|e| SimulateError::Input(e.to_string()))?;
    let mut scaled_objects = parsed.scaled_objects;
    for so in &mut scaled_objects {
        so.metadata
            .namespace
            .get_or_insert_with(|| crate::tools::render::DEFAULT_NAMESPACE.to_string());
    }
    Ok(Loaded {
        scaled_objects,
        others: parsed.others,
    })
}

fn kind_of(doc: &serde_yaml::Value) -> &str {
    doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default()
}

fn name_of(doc: &serde_yaml::Value) -> &str {
    doc.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
}

/// Picks the object: `--name`, else the only one.
fn pick<'a>(loaded: &'a Loaded, name: Option<&str>) -> Result<&'a ScaledObject, SimulateError> {
    let named = |so: &&ScaledObject| name.is_none_or(|n| so.metadata.name.as_deref() == Some(n));
    let found: Vec<&ScaledObject> = loaded.scaled_objects.iter().filter(named).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(SimulateError::Input(match name {
            Some(n) => format!("no ScaledObject named {n:?} in the file"),
            None => "the file holds no ScaledObject".to_string(),
        })),
        many => Err(SimulateError::Input(format!(
            "the file holds {} ScaledObjects ({}); pick one with --name",
            many.len(),
            many.iter()
                .filter_map(|so| so.metadata.name.as_deref())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Builds the replay's setup for `so` with the same code `ebb render` uses (offline scalers,
/// the HPA the operator would apply); the trace decides which column feeds which trigger.
pub fn setup(
    so: &ScaledObject,
    others: &[serde_yaml::Value],
    columns: &Trace,
    args: &SimulateArgs,
) -> Result<Setup, SimulateError> {
    let who = crate::scalers::registry::object_key(so).to_string();
    let fail = |message: String| SimulateError::Object {
        name: who.clone(),
        message,
    };
    let objects = LocalObjects::from_documents(others);
    let cluster_ns = cluster_object_namespace(args.cluster_object_namespace.as_deref());
    let triggers: Vec<_> = (0..so.spec.triggers.len())
        .map(|i| build_offline(so, i, &objects, &cluster_ns).scaler)
        .collect();
    let mut metrics = Vec::new();
    let mut resources = Vec::new();
    for (i, scaler) in triggers.iter().enumerate() {
        let scaler = scaler
            .as_ref()
            .map_err(|e| fail(format!("trigger {i} cannot be built: {e}")))?;
        let trigger = &so.spec.triggers[i];
        for spec in scaler.metric_specs() {
            match spec {
                MetricSpec::External { name, target } => {
                    let column = columns.column_for(&name, i);
                    metrics.push(TriggerMetric {
                        trigger: i,
                        trigger_name: trigger.name.clone().unwrap_or_default(),
                        trigger_type: trigger.type_.clone(),
                        metric: name,
                        target: target.value,
                        kind: target.kind,
                        activation: scaler.activation_threshold(),
                        column: column.unwrap_or(usize::MAX),
                    });
                }
                MetricSpec::Resource { .. } => resources.push(ResourceTrigger { trigger: i }),
            }
        }
    }
    let known: Vec<(String, usize)> = metrics.iter().map(|m| (m.metric.clone(), m.trigger)).collect();
    columns.check_columns(&known).map_err(ReplayError::from)?;
    for m in &metrics {
        if m.column == usize::MAX {
            return Err(ReplayError::MissingColumn {
                trigger: m.trigger,
                metric: m.metric.clone(),
            }
            .into());
        }
    }
    let hpa = match desired_hpa(so, triggers.iter().enumerate(), env!("CARGO_PKG_VERSION")) {
        Ok((hpa, _)) => Some(hpa),
        Err(crate::scaling::hpa::DesiredError::Hpa(e)) => return Err(fail(e.to_string())),
        Err(crate::scaling::hpa::DesiredError::Scalers(errs)) => {
            let list: Vec<String> = errs.iter().map(|(i, e)| format!("trigger {i}: {e}")).collect();
            return Err(fail(list.join("; ")));
        }
    };
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Ok(Setup {
        so: so.clone(),
        hpa,
        metrics,
        resources,
        replicas: args
            .replicas
            .unwrap_or_else(|| so.spec.min_replica_count.unwrap_or(0))
            .max(0),
        sync_period_ms: millis(args.sync_period),
        startup_ms: millis(args.startup),
        flags: ControllerFlags {
            tolerance: args.tolerance,
            downscale_stabilization_ms: millis(args.downscale_stabilization),
        },
    })
}

/// The ScaledJob replay (`scaled_job`): a trace file only (`--prometheus` reads ScaledObjects').
fn simulate_scaled_job(
    doc: &serde_yaml::Value,
    others: &[serde_yaml::Value],
    args: &SimulateArgs,
) -> Result<(), SimulateError> {
    let sj = crate::tools::render::parse_scaled_job(doc).map_err(SimulateError::Input)?;
    let Some(path) = &args.trace else {
        return Err(SimulateError::Input(
            "a ScaledJob is replayed from --trace (--prometheus is not supported for ScaledJobs)".to_string(),
        ));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| SimulateError::Input(format!("{}: {e}", path.display())))?;
    let trace = Trace::parse(&text).map_err(|e| SimulateError::Input(format!("{}: {e}", path.display())))?;
    let (steps, summary) = scaled_job::replay(&sj, others, &trace, args)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.output {
        OutputFormat::Table => scaled_job::table(&mut out, &steps, &summary),
        OutputFormat::Json => scaled_job::json_lines(&mut out, &steps, &summary),
    }
    .map_err(|e| SimulateError::Output(e.to_string()))
}

/// `ebb simulate`: returns the exit status.
pub async fn run(args: SimulateArgs) -> i32 {
    match simulate(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn simulate(args: &SimulateArgs) -> Result<(), SimulateError> {
    let loaded = load(&args.file)?;
    if loaded.scaled_objects.is_empty()
        && let Some(job) = loaded
            .others
            .iter()
            .find(|d| kind_of(d) == "ScaledJob" && args.name.as_deref().is_none_or(|n| name_of(d) == n))
    {
        return simulate_scaled_job(job, &loaded.others, args);
    }
    let so = pick(&loaded, args.name.as_deref())?;
    let trace = match (&args.trace, &args.prometheus) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SimulateError::Input(format!("{}: {e}", path.display())))?;
            Trace::parse(&text).map_err(|e| SimulateError::Input(format!("{}: {e}", path.display())))?
        }
        (None, Some(url)) => prometheus::fetch(so, &loaded.others, url, args).await?,
        (None, None) => return Err(SimulateError::Input("give --trace or --prometheus".to_string())),
    };
    let setup = setup(so, &loaded.others, &trace, args)?;
    let outcome = replay::run(&setup, &trace)?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.output {
        OutputFormat::Table => output::table(&mut out, &outcome),
        OutputFormat::Json => output::json_lines(&mut out, &outcome),
    }
    .map_err(|e| SimulateError::Output(e.to_string()))?;
    if let Some(path) = &args.out {
        chart::write_svg(path, &outcome)
            .map_err(|e| SimulateError::Output(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
