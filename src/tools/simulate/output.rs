//! The replay for people (a table and a summary) and for scripts (JSON lines).

use std::io::Write;

use serde_json::{Map, Value, json};

use super::replay::{Actor, Outcome, Row, Summary};

/// `12.5` → `12.5`, `3.0` → `3`, `None` → `-`.
fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v:.3}").trim_end_matches('0').to_string(),
    }
}

/// `h:mm:ss` from milliseconds.
pub fn clock(ms: i64) -> String {
    let s = ms / 1000;
    let frac = ms % 1000;
    let base = format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:03}")
    }
}

/// Writes the table, one row per KEDA poll or HPA sync, then the summary.
pub fn table(out: &mut impl Write, o: &Outcome) -> std::io::Result<()> {
    write!(out, "{:>10} {:<4}", "time", "by")?;
    for (i, name) in o.metric_names.iter().enumerate() {
        write!(out, " {:>12} {:>5}", truncate(name, 12), format!("p{i}"))?;
    }
    writeln!(
        out,
        " {:>7} {:>8} {:>5} {:>6} {:>8}  limit / events",
        "desired", "replicas", "ready", "active", "fallback"
    )?;
    for row in &o.rows {
        write!(out, "{:>10} {:<4}", clock(row.time_ms), actor(row.actor))?;
        for name in &o.metric_names {
            let m = row.metrics.iter().find(|(n, _)| n == name).map(|(_, m)| m);
            let value = match m {
                Some(m) if m.error.is_some() => "error".to_string(),
                Some(m) => num(m.value),
                None => "".to_string(),
            };
            let proposal = m
                .and_then(|m| m.proposal)
                .map_or(String::new(), |p| p.to_string());
            write!(out, " {value:>12} {proposal:>5}")?;
        }
        let state = if row.idle {
            "idle"
        } else if row.active {
            "yes"
        } else {
            "no"
        };
        write!(
            out,
            " {:>7} {:>8} {:>5} {:>6} {:>8}  {}",
            row.desired,
            row.replicas,
            row.ready,
            state,
            if row.fallback { "yes" } else { "" },
            row.limit
        )?;
        for e in &row.events {
            write!(out, " [{}]", without_selector(e))?;
        }
        writeln!(out)?;
    }
    writeln!(out)?;
    for (i, name) in o.metric_names.iter().enumerate() {
        writeln!(out, "p{i} = {name}'s replica proposal")?;
    }
    summary(out, &o.summary)
}

/// Drops the Go-printed label selector the controller puts after a metric name, which every
/// KEDA metric shares and which would make each event row several hundred characters wide.
fn without_selector(e: &str) -> String {
    let mut out = e.to_string();
    while let Some(start) = out.find("(&LabelSelector{") {
        match out[start..].find("},})") {
            Some(len) => out.replace_range(start..start + len + 4, ""),
            None => break,
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let head: String = s.chars().take(n - 1).collect();
        format!("{head}…")
    }
}

fn actor(a: Actor) -> &'static str {
    match a {
        Actor::Keda => "keda",
        Actor::Hpa => "hpa",
    }
}

fn summary(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "summary over {}:",
        clock((s.duration_seconds * 1000.0) as i64)
    )?;
    writeln!(
        out,
        "  replica-seconds {:.0} ({:.2} replica-hours, {:.2} replicas on average)",
        s.replica_seconds,
        s.replica_seconds / 3600.0,
        if s.duration_seconds > 0.0 {
            s.replica_seconds / s.duration_seconds
        } else {
            0.0
        }
    )?;
    writeln!(
        out,
        "  replicas between {} and {}",
        s.min_replicas, s.max_replicas
    )?;
    writeln!(
        out,
        "  under target {:.0} s ({:.1} % of the time)",
        s.seconds_under_target,
        if s.duration_seconds > 0.0 {
            100.0 * s.seconds_under_target / s.duration_seconds
        } else {
            0.0
        }
    )?;
    writeln!(
        out,
        "  scale events {} ({} HPA syncs, {} KEDA polls)",
        s.scale_events, s.hpa_syncs, s.keda_polls
    )
}

/// One step as a JSON object.
pub fn row_json(row: &Row) -> Value {
    let mut metrics = Map::new();
    let mut proposals = Map::new();
    let mut errors = Map::new();
    for (name, m) in &row.metrics {
        metrics.insert(name.clone(), m.value.map_or(Value::Null, |v| json!(v)));
        if let Some(p) = m.proposal {
            proposals.insert(name.clone(), json!(p));
        }
        if let Some(e) = &m.error {
            errors.insert(name.clone(), json!(e));
        }
    }
    json!({
        "time": row.time_ms as f64 / 1000.0,
        "by": actor(row.actor),
        "replicas": row.replicas,
        "desired": row.desired,
        "ready": row.ready,
        "metrics": metrics,
        "proposals": proposals,
        "errors": errors,
        "active": row.active,
        "idle": row.idle,
        "fallback": row.fallback,
        "limit": row.limit,
        "events": row.events,
    })
}

/// Writes one JSON object per step, then `{"summary": ...}`.
pub fn json_lines(out: &mut impl Write, o: &Outcome) -> std::io::Result<()> {
    for row in &o.rows {
        serde_json::to_writer(&mut *out, &row_json(row))?;
        writeln!(out)?;
    }
    serde_json::to_writer(&mut *out, &json!({ "summary": o.summary }))?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_clocks_read_well() {
        assert_eq!(num(Some(3.0)), "3");
        assert_eq!(num(Some(2.5)), "2.5");
        assert_eq!(num(None), "-");
        assert_eq!(clock(3_723_000), "1:02:03");
        assert_eq!(clock(1_500), "0:00:01.500");
        assert_eq!(
            without_selector(
                "New size: 2; reason: external metric s0-x(&LabelSelector{MatchLabels:map[string]string{a: b,},MatchExpressions:[]LabelSelectorRequirement{},}) above target"
            ),
            "New size: 2; reason: external metric s0-x above target"
        );
    }
}
