//! `--prometheus URL --start T --end T --step S`: each prometheus trigger's own query over a
//! range, from a real Prometheus, becomes the trace.
//!
//! The trigger is built as the operator builds it (metadata, TriggerAuthentication resolved from
//! the same file, headers, auth, AMP signing); only `serverAddress` is replaced by `URL`, since the
//! in-cluster address is rarely reachable from where `ebb simulate` runs.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{SimulateArgs, SimulateError, trace::Trace};
use crate::{
    crd::ScaledObject,
    resolver::{
        cluster_object_namespace,
        files::{FileResolution, FileResolver, LocalObjects},
    },
    scalers::{
        MetricSpec, Scaler, ScalerContext,
        prometheus::PrometheusScaler,
        registry::{AuthResolver, trigger_config},
    },
};

/// Timeout of each range query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most points one replay fetches per trigger (Prometheus itself refuses above 11,000 per query;
/// longer ranges are fetched in chunks).
const MAX_POINTS: i64 = 200_000;
/// Points per `query_range` call, under Prometheus' 11,000 limit.
const CHUNK_POINTS: i64 = 10_000;

/// `2026-01-01T00:00:00Z` or Unix seconds.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(secs) = s.trim().parse::<f64>()
        && secs.is_finite()
    {
        return DateTime::from_timestamp_millis((secs * 1000.0).round() as i64)
            .ok_or_else(|| format!("time {s:?} is out of range"));
    }
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("time {s:?} is neither RFC 3339 nor Unix seconds: {e}"))
}

/// Fetches every prometheus trigger of `so` over `--start`..`--end` every `--step`.
pub async fn fetch(
    so: &ScaledObject,
    others: &[serde_yaml::Value],
    url: &str,
    args: &SimulateArgs,
) -> Result<Trace, SimulateError> {
    let err = |m: String| SimulateError::Prometheus(m);
    let start = parse_instant(
        args.start
            .as_deref()
            .ok_or_else(|| err("--start is required".into()))?,
    )
    .map_err(err)?;
    let end = parse_instant(
        args.end
            .as_deref()
            .ok_or_else(|| err("--end is required".into()))?,
    )
    .map_err(err)?;
    let step_ms = i64::try_from(args.step.as_millis()).unwrap_or(i64::MAX);
    if step_ms <= 0 {
        return Err(err("--step must be positive".into()));
    }
    let span = (end - start).num_milliseconds();
    if span <= 0 {
        return Err(err("--end must be after --start".into()));
    }
    let points = span / step_ms + 1;
    if points > MAX_POINTS {
        return Err(err(format!(
            "{points} points per trigger; widen --step or shorten the range (at most {MAX_POINTS})"
        )));
    }
    let objects = LocalObjects::from_documents(others);
    let cluster_ns = cluster_object_namespace(args.cluster_object_namespace.as_deref());
    let ctx = ScalerContext::default();
    let times: Vec<i64> = (0..points).map(|i| i * step_ms).collect();
    let mut columns = Vec::new();
    for (i, t) in so.spec.triggers.iter().enumerate() {
        if t.type_ != "prometheus" {
            return Err(err(format!(
                "trigger {i} is of type {}; --prometheus replays prometheus triggers only (give a --trace for the others)",
                t.type_
            )));
        }
        let mut config = trigger_config(so, i, QUERY_TIMEOUT);
        let resolver = FileResolver::new(&objects, &cluster_ns);
        resolver
            .resolve(so, i, &mut config)
            .map_err(|e| err(format!("trigger {i}: {e}")))?;
        if let FileResolution::NotChecked(missing) = resolver.resolution() {
            return Err(err(format!(
                "trigger {i}: its authentication needs {} which the file does not hold; add them to -f",
                missing.join(", ")
            )));
        }
        config
            .metadata
            .insert("serverAddress".to_string(), url.to_string());
        let scaler = PrometheusScaler::new(&config, &ctx).map_err(|e| err(format!("trigger {i}: {e}")))?;
        let name = scaler
            .metric_specs()
            .into_iter()
            .find_map(|m| match m {
                MetricSpec::External { name, .. } => Some(name),
                MetricSpec::Resource { .. } => None,
            })
            .unwrap_or_else(|| format!("s{i}"));
        let mut series = vec![None; times.len()];
        let mut from = 0i64;
        while from < points {
            let to = (from + CHUNK_POINTS - 1).min(points - 1);
            let seconds = |idx: i64| (start.timestamp_millis() + idx * step_ms) as f64 / 1000.0;
            let got = scaler
                .query_range(
                    &format!("{}", seconds(from)),
                    &format!("{}", seconds(to)),
                    step_ms as f64 / 1000.0,
                )
                .await
                .map_err(|e| err(format!("trigger {i}: {e}")))?;
            for (t_ms, v) in got {
                let offset = t_ms - start.timestamp_millis();
                let idx = (offset as f64 / step_ms as f64).round() as i64;
                if (0..points).contains(&idx) {
                    series[idx as usize] = Some(v);
                }
            }
            from = to + 1;
        }
        columns.push((name, series));
    }
    let mut trace = Trace::from_series(times, columns);
    trace.start = Some(start);
    Ok(trace)
}
