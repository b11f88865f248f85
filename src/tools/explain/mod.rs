//! `ebb explain -n NAMESPACE NAME`: why a ScaledObject has its replica count now.
//!
//! With `--admin URL` (or `--local`) it asks a metrics server's admin port
//! (`/debug/scaledobjects/NAMESPACE/NAME`, served from that process's cache and counters).
//! Without, it reads the cluster through the kubeconfig ([`cluster`]): the ScaledObject, its
//! HPA and scale target, and the metrics server's view through the API server's service proxy
//! (or a fresh offline read of the triggers from this machine when that is not reachable).
//! Either way it prints the verdict ([`crate::scaling::explain::verdict`]) first.

pub mod cluster;

use std::{fmt::Write as _, time::Duration};

use crate::{
    cli::{ExplainArgs, OutputFormat},
    scaling::explain::{ObjectView, TriggerView, human_seconds, plain_number},
};

/// Why `ebb explain` has no view to print.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The admin port could not be asked.
    #[error("cannot read {url}")]
    Admin {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The admin port answered with an error status.
    #[error("{url} answered {code}: {message}")]
    AdminStatus {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        code: u16,
        /// The `Status` message, or the body.
        message: String,
    },
    /// The admin port answered something that is not a view.
    #[error("{url} answered with something other than a ScaledObject view: {source}")]
    AdminBody {
        /// The URL asked.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The cluster part failed.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// The admin port `--local` means: `ebb metrics-server --local`'s default.
pub const LOCAL_ADMIN: &str = "http://127.0.0.1:8080";

/// The subcommand: prints the view; 0, or 1 with the error on stderr.
pub async fn run(args: ExplainArgs) -> i32 {
    let admin = args
        .admin
        .clone()
        .or_else(|| args.local.then(|| LOCAL_ADMIN.to_string()));
    let view = match admin {
        Some(url) => from_admin(&url, &args.namespace, &args.name, args.timeout).await,
        None => from_kubeconfig(&args).await,
    };
    match view {
        Ok(view) => {
            match args.output {
                OutputFormat::Json => match serde_json::to_string_pretty(&view) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                },
                OutputFormat::Table => print!("{}", render(&view)),
            }
            0
        }
        Err(e) => {
            eprintln!("error: {}", crate::report::error_chain(&e));
            1
        }
    }
}

async fn from_kubeconfig(args: &ExplainArgs) -> Result<ObjectView, ExplainError> {
    let client = crate::cluster::client(args.kubeconfig.as_deref())
        .await
        .map_err(cluster::ClusterError::from)?;
    let opts = cluster::Options::new(&args.namespace, &args.name, &args.metrics_service, args.timeout)?;
    Ok(cluster::view(&client, &opts, chrono::Utc::now().timestamp()).await?)
}

/// The view a metrics server's admin port at `base` (`http://HOST:PORT`) serves.
pub async fn from_admin(
    base: &str,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<ObjectView, ExplainError> {
    let url = format!(
        "{}/debug/scaledobjects/{namespace}/{name}",
        base.trim_end_matches('/')
    );
    let err = |source| ExplainError::Admin {
        url: url.clone(),
        source,
    };
    let http = reqwest::Client::builder().timeout(timeout).build().map_err(err)?;
    let response = http.get(&url).send().await.map_err(err)?;
    let code = response.status();
    let body = response.bytes().await.map_err(err)?;
    if !code.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
        return Err(ExplainError::AdminStatus {
            url,
            code: code.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|source| ExplainError::AdminBody { url, source })
}

fn dash<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_string())
}

fn trigger_row(t: &TriggerView) -> Vec<String> {
    let id = if t.name.is_empty() {
        format!("s{}", t.index)
    } else {
        format!("s{} ({})", t.index, t.name)
    };
    let metric = match (&t.metric, &t.broken) {
        (Some(m), _) => m.clone(),
        (None, Some(_)) => "(broken)".to_string(),
        (None, None) => "(metrics.k8s.io)".to_string(),
    };
    let target = match (t.target, &t.target_type) {
        (Some(v), Some(k)) => format!("{} {k}", plain_number(v)),
        (Some(v), None) => plain_number(v),
        (None, _) => "-".to_string(),
    };
    let failures = if t.fallback_active {
        format!("{} (fallback)", t.consecutive_failures)
    } else {
        t.consecutive_failures.to_string()
    };
    vec![
        id,
        t.trigger_type.clone(),
        metric,
        dash(t.value, plain_number),
        dash(t.value_age_seconds, |a| format!("{a:.1} s")),
        if t.value_source.is_empty() {
            "-".to_string()
        } else {
            t.value_source.clone()
        },
        target,
        dash(t.activation_threshold, |a| format!("> {}", plain_number(a))),
        dash(t.active, |a| if a { "yes" } else { "no" }.to_string()),
        failures,
        if t.auth_fields.is_empty() {
            "-".to_string()
        } else {
            t.auth_fields.join(",")
        },
    ]
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// The view for people: the verdict, one table row per trigger, then the object, the HPA and
/// what could not be read.
pub fn render(view: &ObjectView) -> String {
    let mut out = format!("{}\n\n", view.verdict);
    let header = [
        "TRIGGER",
        "TYPE",
        "METRIC",
        "VALUE",
        "AGE",
        "FROM",
        "TARGET",
        "ACTIVATION",
        "ACTIVE",
        "FAILURES",
        "AUTH",
    ];
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    rows.extend(view.triggers.iter().map(trigger_row));
    out.push_str(&table(&rows));
    for t in &view.triggers {
        if let Some(b) = &t.broken {
            let _ = writeln!(out, "  s{}: cannot be built: {b}", t.index);
        }
        if let Some(e) = &t.error {
            let _ = writeln!(
                out,
                "  s{} {}: {e}",
                t.index,
                t.metric.as_deref().unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        out,
        "\nScaledObject {}/{} (from {})",
        view.namespace, view.name, view.source
    );
    let _ = writeln!(
        out,
        "  replicas: {} (ready {}); min {}, max {}, idle {}; cooldown {} s, polling every {} s",
        dash(view.replicas, |r| r.to_string()),
        dash(view.ready_pods, |r| r.to_string()),
        view.min_replica_count,
        view.max_replica_count,
        dash(view.idle_replica_count, |r| r.to_string()),
        view.cooldown_period,
        view.polling_interval
    );
    if let Some(f) = &view.formula {
        let _ = writeln!(out, "  scalingModifiers formula: {f}");
    }
    let p = &view.pause;
    let mut pause = Vec::new();
    if p.paused {
        pause.push("paused".to_string());
    }
    if let Some(n) = &p.paused_replicas {
        pause.push(format!("paused-replicas={n}"));
    }
    if p.scale_in {
        pause.push("paused-scale-in".to_string());
    }
    if p.scale_out {
        pause.push("paused-scale-out".to_string());
    }
    let _ = writeln!(
        out,
        "  pause: {}",
        if pause.is_empty() {
            "none".to_string()
        } else {
            pause.join(", ")
        }
    );
    if let Some(t) = &view.last_active_time {
        let _ = write!(out, "  last active: {t}");
        if let Some(left) = view.cooldown_left_seconds {
            let _ = write!(out, "; scale to zero/idle in {}", human_seconds(left));
        }
        if let Some(idle) = view.idle_for_seconds {
            let _ = write!(out, "; idle for {}", human_seconds(idle));
        }
        out.push('\n');
    }
    for c in &view.conditions {
        let _ = writeln!(
            out,
            "  condition {}={} {}: {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    if let Some(h) = &view.hpa {
        let _ = writeln!(
            out,
            "\nHPA {}: desired {}, current {}; min {}, max {}",
            h.name,
            dash(h.desired_replicas, |r| r.to_string()),
            dash(h.current_replicas, |r| r.to_string()),
            dash(h.min_replicas, |r| r.to_string()),
            dash(h.max_replicas, |r| r.to_string())
        );
        for (m, v) in &h.current_metrics {
            let _ = writeln!(out, "  currentMetrics {m} = {}", plain_number(*v));
        }
        for c in &h.conditions {
            let _ = writeln!(out, "  {}={} {}: {}", c.type_, c.status, c.reason, c.message);
        }
    }
    for (k, v) in &view.extensions {
        let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        let _ = writeln!(out, "\n{k}: {}", text.replace('\n', "\n  "));
    }
    if !view.problems.is_empty() {
        out.push_str("\nnot known:\n");
        for p in &view.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_puts_the_verdict_first_and_one_row_per_trigger() {
        let view = ObjectView {
            namespace: "ns".into(),
            name: "so".into(),
            source: "local".into(),
            verdict: "replicas unknown: s0-x = 3 against an average target of 10 per pod → 1".into(),
            triggers: vec![
                TriggerView {
                    index: 0,
                    trigger_type: "metrics-api".into(),
                    metric: Some("s0-x".into()),
                    value: Some(3.0),
                    value_age_seconds: Some(0.3),
                    value_source: "cache".into(),
                    target: Some(10.0),
                    target_type: Some("AverageValue".into()),
                    activation_threshold: Some(0.0),
                    active: Some(true),
                    auth_fields: vec!["token".into()],
                    ..TriggerView::default()
                },
                TriggerView {
                    index: 1,
                    trigger_type: "prometheus".into(),
                    broken: Some("no serverAddress given".into()),
                    ..TriggerView::default()
                },
            ],
            ..ObjectView::default()
        };
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], view.verdict);
        assert!(lines[2].starts_with("TRIGGER  TYPE"), "{text}");
        assert!(lines[3].starts_with("s0       metrics-api  s0-x"), "{text}");
        assert!(
            lines[3].contains("0.3 s") && lines[3].contains("10 AverageValue"),
            "{text}"
        );
        assert!(lines[3].ends_with("token"), "{text}");
        assert!(
            text.contains("s1: cannot be built: no serverAddress given"),
            "{text}"
        );
        assert!(text.contains("pause: none"), "{text}");
    }
}
