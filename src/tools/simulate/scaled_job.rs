//! `ebb simulate -f scaledjob.yaml --trace trace.csv`: replays a metric trace through the
//! ScaledJob decisions the controller makes (`crate::scaling::scaled_job`), with a simple model
//! of the Jobs it creates.
//!
//! ```text
//! every pollingInterval: trace row in force ─ per trigger value/error ─ combine ─ plan
//!                        model Jobs (pending → running → done) ──────────┘     │
//!                        ◄──────────────────────── created Jobs ◄───────────────┘
//! ```
//!
//! The Job model: a created Job is pending for `--startup`, then runs for `--job-duration`
//! (forever when not given), then completes. `--running N` Jobs run from the start,
//! `--pending N` Jobs start after `--startup`. The trace is the queue as the scaler reads it:
//! the replay does not drain it as Jobs finish.

use std::io::Write;

use serde::Serialize;

use super::{SimulateArgs, SimulateError, trace::Trace};
use crate::{
    crd::ScaledJob,
    resolver::{cluster_object_namespace, files::LocalObjects},
    scalers::MetricSpec,
    scaling::scaled_job::{self as decide, Reading, Strategy, as_scaled_object},
    tools::render::build_offline_with,
};

/// One trigger metric of the replay.
#[derive(Debug, Clone)]
struct Metric {
    trigger: usize,
    name: String,
    target: f64,
    activation: f64,
    column: usize,
}

/// A modelled Job: when it starts running and when it ends (ms from the start).
#[derive(Debug, Clone, Copy)]
struct ModelJob {
    running_at: i64,
    done_at: Option<i64>,
}

/// One trigger's value at a poll.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TriggerValue {
    /// `sN-…` metric name.
    pub metric: String,
    /// The value read (absent when the trigger failed).
    pub value: Option<f64>,
    /// Whether it was active.
    pub active: bool,
    /// Whether the trace failed it.
    pub error: bool,
}

/// One polling interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// Seconds from the start.
    pub time: f64,
    /// Each trigger's value.
    pub triggers: Vec<TriggerValue>,
    /// Combined queue length (`multipleScalersCalculation`).
    pub queue: f64,
    /// Whether the ScaledJob was active.
    pub active: bool,
    /// Unfinished Jobs (pending included), before creating.
    pub running: i64,
    /// Of those, pending.
    pub pending: i64,
    /// The strategy's effective maximum.
    pub effective_max: i64,
    /// Jobs created.
    pub created: i64,
}

/// Totals of the replay.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The strategy in force.
    pub strategy: &'static str,
    /// Polls replayed.
    pub polls: usize,
    /// Jobs created in all.
    pub jobs_created: i64,
    /// Most Jobs unfinished at once (after creating).
    pub peak_in_flight: i64,
    /// Polls where a trigger failed.
    pub polls_with_errors: usize,
}

/// Replays `trace` for `sj` (triggers built offline as `ebb render` builds them).
pub fn replay(
    sj: &ScaledJob,
    others: &[serde_yaml::Value],
    trace: &Trace,
    args: &SimulateArgs,
) -> Result<(Vec<Step>, Summary), SimulateError> {
    let who = format!(
        "{}/{}",
        sj.metadata.namespace.as_deref().unwrap_or("default"),
        sj.metadata.name.as_deref().unwrap_or_default()
    );
    let fail = |message: String| SimulateError::Input(format!("ScaledJob {who}: {message}"));
    let problems = decide::validate::validate_scaled_job(sj);
    if let Some(p) = problems.first() {
        return Err(fail(format!("{}: {}", p.field, p.message)));
    }
    let so = as_scaled_object(sj);
    let template = sj
        .spec
        .job_target_ref
        .as_ref()
        .and_then(|j| j.template.spec.clone())
        .unwrap_or_default();
    let objects = LocalObjects::from_documents(others);
    let cluster_ns = cluster_object_namespace(None);
    let mut metrics = Vec::new();
    for i in 0..so.spec.triggers.len() {
        let scaler = build_offline_with(&so, i, &objects, &cluster_ns, Some(&template))
            .scaler
            .map_err(|e| fail(format!("trigger {i} cannot be built: {e}")))?;
        let externals: Vec<(String, f64)> = scaler
            .metric_specs()
            .into_iter()
            .filter_map(|m| match m {
                MetricSpec::External { name, target } => Some((name, target.value)),
                MetricSpec::Resource { .. } => None,
            })
            .collect();
        // As the controller: the first metric is the queue, the target is the mean of all.
        let Some((name, _)) = externals.first().cloned() else {
            continue;
        };
        let target = externals.iter().map(|(_, t)| t).sum::<f64>() / externals.len() as f64;
        let column = trace.column_for(&name, i).ok_or_else(|| {
            fail(format!(
                "the trace has no column for trigger {i} (name it {name} or s{i})"
            ))
        })?;
        metrics.push(Metric {
            trigger: i,
            name,
            target,
            activation: scaler.activation_threshold(),
            column,
        });
    }
    let known: Vec<(String, usize)> = metrics.iter().map(|m| (m.name.clone(), m.trigger)).collect();
    trace
        .check_columns(&known)
        .map_err(|e| SimulateError::Input(e.to_string()))?;

    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let startup = ms(args.startup);
    let duration = args.job_duration.map(ms);
    let interval = i64::try_from(decide::polling_interval_secs(&sj.spec)).unwrap_or(30) * 1000;
    let mut jobs: Vec<ModelJob> = Vec::new();
    for _ in 0..args.running {
        jobs.push(ModelJob {
            running_at: 0,
            done_at: duration,
        });
    }
    for _ in 0..args.pending {
        jobs.push(ModelJob {
            running_at: startup,
            done_at: duration.map(|d| startup.saturating_add(d)),
        });
    }
    let mut steps = Vec::new();
    let mut cursor = 0usize;
    let mut t = 0i64;
    let mut summary = Summary {
        strategy: Strategy::of(&sj.spec).name(),
        polls: 0,
        jobs_created: 0,
        peak_in_flight: 0,
        polls_with_errors: 0,
    };
    while t <= trace.end_ms() {
        let row = trace.row_at(t, &mut cursor);
        let mut triggers = Vec::new();
        let mut readings = Vec::new();
        for m in &metrics {
            let failed = trace.fails(row, &m.name, m.trigger);
            let value = trace
                .values
                .get(m.column)
                .and_then(|c| c.get(row))
                .copied()
                .flatten();
            match (failed, value) {
                (false, Some(v)) => {
                    let active = v > m.activation;
                    readings.push(Reading::new(v, m.target, active));
                    triggers.push(TriggerValue {
                        metric: m.name.clone(),
                        value: Some(v),
                        active,
                        error: false,
                    });
                }
                _ => triggers.push(TriggerValue {
                    metric: m.name.clone(),
                    value: None,
                    active: false,
                    error: true,
                }),
            }
        }
        let unfinished: Vec<&ModelJob> = jobs.iter().filter(|j| j.done_at.is_none_or(|d| d > t)).collect();
        let running = i64::try_from(unfinished.len()).unwrap_or(i64::MAX);
        let pending = i64::try_from(unfinished.iter().filter(|j| j.running_at > t).count()).unwrap_or(0);
        let (combined, decision) = decide::plan(&sj.spec, &readings, running, pending);
        for _ in 0..decision.create {
            let running_at = t.saturating_add(startup);
            jobs.push(ModelJob {
                running_at,
                done_at: duration.map(|d| running_at.saturating_add(d)),
            });
        }
        summary.polls += 1;
        summary.jobs_created += decision.create;
        summary.peak_in_flight = summary.peak_in_flight.max(running + decision.create);
        if triggers.iter().any(|v| v.error) {
            summary.polls_with_errors += 1;
        }
        steps.push(Step {
            time: t as f64 / 1000.0,
            triggers,
            queue: combined.queue_length,
            active: combined.active,
            running,
            pending,
            effective_max: decision.effective_max,
            created: decision.create,
        });
        // Finished Jobs leave the model (history cleanup has no effect on the counts).
        jobs.retain(|j| j.done_at.is_none_or(|d| d > t));
        t = t.saturating_add(interval);
    }
    Ok((steps, summary))
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "error".to_string(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v:.2}"),
    }
}

/// The table: one line per poll.
pub fn table(out: &mut impl Write, steps: &[Step], summary: &Summary) -> std::io::Result<()> {
    let names: Vec<String> = steps
        .first()
        .map(|s| s.triggers.iter().map(|t| t.metric.clone()).collect())
        .unwrap_or_default();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(8);
    write!(out, "{:>8}", "time")?;
    for n in &names {
        write!(out, " {n:>width$}")?;
    }
    writeln!(
        out,
        " {:>8} {:>6} {:>7} {:>7} {:>7} {:>7}",
        "queue", "active", "running", "pending", "max", "create"
    )?;
    for s in steps {
        write!(out, "{:>8}", format!("{}s", s.time))?;
        for t in &s.triggers {
            write!(out, " {:>width$}", num(t.value))?;
        }
        writeln!(
            out,
            " {:>8} {:>6} {:>7} {:>7} {:>7} {:>7}",
            num(Some(s.queue)),
            if s.active { "yes" } else { "no" },
            s.running,
            s.pending,
            s.effective_max,
            s.created
        )?;
    }
    writeln!(
        out,
        "strategy {}: {} polls, {} Jobs created, at most {} in flight, {} polls with a failing trigger",
        summary.strategy,
        summary.polls,
        summary.jobs_created,
        summary.peak_in_flight,
        summary.polls_with_errors
    )
}

/// JSON lines: one object per poll, then `{"summary": …}`.
pub fn json_lines(out: &mut impl Write, steps: &[Step], summary: &Summary) -> std::io::Result<()> {
    for s in steps {
        serde_json::to_writer(&mut *out, s)?;
        writeln!(out)?;
    }
    serde_json::to_writer(&mut *out, &serde_json::json!({ "summary": summary }))?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SimulateArgs {
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            a: SimulateArgs,
        }
        let mut argv = vec!["x", "-f", "sj.yaml", "--trace", "t.csv"];
        argv.extend_from_slice(extra);
        A::parse_from(argv).a
    }

    fn sj(strategy: &str) -> ScaledJob {
        serde_yaml::from_str(&format!(
            r#"
metadata: {{name: encode, namespace: media}}
spec:
  pollingInterval: 10
  maxReplicaCount: 10
  scalingStrategy: {{strategy: {strategy}}}
  jobTargetRef: {{template: {{spec: {{containers: [{{name: w, image: w:1}}]}}}}}}
  triggers:
  - type: aws-sqs-queue
    metadata: {{queueURL: "http://sqs.local/1/orders", queueLength: "1", awsRegion: eu-west-1, identityOwner: operator}}
"#
        ))
        .expect("ScaledJob")
    }

    const TRACE: &str = "time,s0,error\n0,6,\n10,6,\n20,0,s0\n30,2,\n";

    #[test]
    fn replays_polls_with_the_job_model() {
        let trace = Trace::parse(TRACE).expect("trace");
        let (steps, summary) = replay(
            &sj("default"),
            &[],
            &trace,
            &args(&["--running", "3", "--job-duration", "15"]),
        )
        .expect("replays");
        let created: Vec<i64> = steps.iter().map(|s| s.created).collect();
        let running: Vec<i64> = steps.iter().map(|s| s.running).collect();
        // t=0: 3 running, queue 6 → 3 more; t=10: 6 running → none; t=20: every Job ended at
        // 15 s and the trigger fails → none; t=30: queue 2, nothing running → 2.
        assert_eq!(created, [3, 0, 0, 2]);
        assert_eq!(running, [3, 6, 0, 0]);
        assert!(steps[2].triggers[0].error);
        assert_eq!(summary.jobs_created, 5);
        assert_eq!(summary.polls_with_errors, 1);
        let (steps, _) = replay(&sj("eager"), &[], &trace, &args(&["--running", "3"])).expect("replays");
        assert_eq!(steps[0].created, 6);
        assert_eq!(steps[0].effective_max, 6);
    }

    #[test]
    fn a_trace_without_the_trigger_is_refused() {
        let trace = Trace::parse("time,other\n0,1\n").expect("trace");
        let err = replay(&sj("default"), &[], &trace, &args(&[])).expect_err("refused");
        assert!(err.to_string().contains("no column for trigger 0"), "{err}");
    }

    #[test]
    fn outputs() {
        let trace = Trace::parse(TRACE).expect("trace");
        let (steps, summary) = replay(&sj("default"), &[], &trace, &args(&[])).expect("replays");
        let mut text = Vec::new();
        table(&mut text, &steps, &summary).expect("table");
        let text = String::from_utf8(text).expect("utf8");
        assert!(text.contains("s0-aws-sqs-orders"), "{text}");
        assert!(text.contains("error"), "{text}");
        let mut json = Vec::new();
        json_lines(&mut json, &steps, &summary).expect("json");
        let lines: Vec<serde_json::Value> = String::from_utf8(json)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["created"], 6);
        assert_eq!(lines[4]["summary"]["strategy"], "default");
    }
}
