//! `ebb simulate`: the shipped example through the binary (JSON lines, chart), KEDA's rules
//! through the replay (cooldown, stabilization, fallback, modifiers, pause), and
//! `--prometheus` against a real Prometheus.

mod common;

use std::{path::Path, process::Command};

use clap::Parser;
use ebb::{
    cli::SimulateArgs,
    tools::simulate::{load, replay, setup, trace::Trace},
};
use serde_json::Value;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: SimulateArgs,
}

fn ebb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/simulate")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Replays `yaml` over `csv` with extra flags; returns the rows.
fn replay(yaml: &str, csv: &str, flags: &[&str]) -> replay::Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let so_path = dir.path().join("so.yaml");
    std::fs::write(&so_path, yaml).expect("write");
    let so_arg = so_path.to_string_lossy().into_owned();
    let mut argv = vec!["x", "-f", &so_arg, "--trace", "unused.csv"];
    argv.extend_from_slice(flags);
    let args = Wrap::parse_from(argv).args;
    let loaded = load(&so_path).expect("load");
    let trace = Trace::parse(csv).expect("trace");
    let s = setup(&loaded.scaled_objects[0], &loaded.others, &trace, &args).expect("setup");
    replay::run(&s, &trace).expect("replay")
}

/// The replicas after the last step at or before `t` seconds.
fn replicas_at(o: &replay::Outcome, t: i64) -> i32 {
    o.rows
        .iter()
        .rfind(|r| r.time_ms <= t * 1000)
        .map_or(-1, |r| r.replicas)
}

fn csv(rows: &[(i64, &str)]) -> String {
    let mut out = String::from("time,s0,error\n");
    for (t, rest) in rows {
        out.push_str(&format!("{t},{rest}\n"));
    }
    out
}

const PROM_SO: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w, namespace: ns}
spec:
  scaleTargetRef: {name: w}
  pollingInterval: 30
  cooldownPeriod: 60
  minReplicaCount: 0
  maxReplicaCount: 20
  triggers:
    - type: prometheus
      metadata: {serverAddress: "http://prom:9090", query: "q", threshold: "10", activationThreshold: "5"}
"#;

#[test]
fn activation_then_cooldown_to_zero() {
    // 50 for two minutes, then nothing: KEDA activates at once, the HPA climbs by its 2×/4 rule,
    // and KEDA takes it to zero once cooldownPeriod has passed since the last active poll.
    let o = replay(PROM_SO, &csv(&[(0, "50,"), (120, "0,"), (600, "0,")]), &[]);
    let first = &o.rows[0];
    assert_eq!((first.time_ms, first.replicas), (0, 1), "KEDA activates 0 → 1");
    assert!(first.events[0].starts_with("KEDAScaleTargetActivated"));
    let hpa0 = o
        .rows
        .iter()
        .find(|r| r.actor == replay::Actor::Hpa)
        .expect("hpa row");
    assert_eq!((hpa0.replicas, hpa0.limit.as_str()), (4, "ScaleUpLimit"));
    assert_eq!(replicas_at(&o, 15), 5);
    // Last active poll at 90 s; cooldown 60 s: zero at the first poll after 150 s.
    assert_eq!(replicas_at(&o, 149), 5);
    assert_eq!(replicas_at(&o, 180), 0);
    let deactivated = o
        .rows
        .iter()
        .find(|r| {
            r.events
                .iter()
                .any(|e| e.starts_with("KEDAScaleTargetDeactivated"))
        })
        .expect("deactivated");
    assert!(deactivated.time_ms <= 180_000 && deactivated.time_ms >= 150_000);
    assert!(
        o.rows
            .last()
            .is_some_and(|r| r.idle && r.limit == "ScalingDisabled")
    );
    // Activation needs a value above 5: 5 itself keeps it at zero.
    let o = replay(PROM_SO, &csv(&[(0, "5,"), (300, "5,")]), &[]);
    assert!(o.rows.iter().all(|r| r.replicas == 0));
}

#[test]
fn five_minute_stabilization_without_behavior() {
    let so = PROM_SO.replace("minReplicaCount: 0", "minReplicaCount: 1");
    let o = replay(
        &so,
        &csv(&[(0, "50,"), (60, "10,"), (900, "10,")]),
        &["--replicas", "5"],
    );
    assert_eq!(replicas_at(&o, 60), 5);
    // The 5 proposals of the first minute hold for 5 minutes after the last of them.
    assert_eq!(replicas_at(&o, 345), 5);
    assert_eq!(replicas_at(&o, 375), 1);
    // With a shorter controller flag, it comes down sooner.
    let o = replay(
        &so,
        &csv(&[(0, "50,"), (60, "10,"), (900, "10,")]),
        &["--replicas", "5", "--downscale-stabilization", "1m"],
    );
    assert_eq!(replicas_at(&o, 135), 1);
}

#[test]
fn fallback_after_failure_threshold() {
    let so = PROM_SO.replace(
        "  triggers:",
        "  fallback: {failureThreshold: 2, replicas: 7}\n  triggers:",
    );
    let trace = csv(&[(0, "20,"), (60, "20,s0"), (400, "20,"), (500, "20,")]);
    let o = replay(&so, &trace, &[]);
    assert_eq!(replicas_at(&o, 59), 2);
    // HPA reads and scale-loop reads count into one counter: more than 2 failures in a row
    // make the metrics server answer 10 × 7, and the HPA converges on 7.
    let falling: Vec<_> = o.rows.iter().filter(|r| r.fallback).collect();
    assert!(!falling.is_empty(), "fallback engages");
    assert!(falling[0].time_ms <= 120_000);
    assert_eq!(replicas_at(&o, 399), 7);
    assert!(
        o.rows
            .iter()
            .any(|r| r.metrics.iter().any(|(_, m)| m.fallback && m.value == Some(70.0)))
    );
    // Recovery: real values again.
    assert_eq!(o.rows.last().map(|r| r.fallback), Some(false));
}

#[test]
fn scaling_modifiers_composite_metric() {
    let so = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w, namespace: ns}
spec:
  scaleTargetRef: {name: w}
  minReplicaCount: 1
  maxReplicaCount: 20
  advanced:
    scalingModifiers: {formula: "a + b", target: "10", activationTarget: "1"}
  triggers:
    - type: prometheus
      name: a
      metadata: {serverAddress: "http://prom:9090", query: "qa", threshold: "1"}
    - type: prometheus
      name: b
      metadata: {serverAddress: "http://prom:9090", query: "qb", threshold: "1"}
"#;
    let o = replay(so, "time,s0,s1\n0,20,30\n120,20,30\n", &["--replicas", "5"]);
    assert_eq!(o.metric_names, ["composite-metric"]);
    let hpa = o
        .rows
        .iter()
        .find(|r| r.actor == replay::Actor::Hpa)
        .expect("hpa row");
    assert_eq!(hpa.metrics[0].1.value, Some(50.0));
    assert_eq!(hpa.metrics[0].1.proposal, Some(5));
}

#[test]
fn paused_replicas_hold_the_count() {
    let so = PROM_SO.replace(
        "metadata: {name: w, namespace: ns}",
        "metadata: {name: w, namespace: ns, annotations: {autoscaling.keda.sh/paused-replicas: \"2\"}}",
    );
    let o = replay(&so, &csv(&[(0, "500,"), (300, "0,")]), &[]);
    assert!(
        o.rows
            .iter()
            .all(|r| r.replicas == 2 && r.actor == replay::Actor::Keda)
    );
    assert!(o.rows.iter().all(|r| r.limit == "paused"));
    assert_eq!(o.summary.scale_events, 0);
}

#[test]
fn trace_columns_must_match_triggers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let so = dir.path().join("so.yaml");
    std::fs::write(&so, PROM_SO).expect("write");
    let bad = dir.path().join("t.csv");
    std::fs::write(&bad, "time,s3\n0,1\n").expect("write");
    let out = ebb()
        .args(["simulate", "-f"])
        .arg(&so)
        .arg("--trace")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trace column \"s3\" names no trigger; known: s0-prometheus (s0)"),
        "{err}"
    );
}

/// Counts the chart's data series (polylines of more than two points; legend marks have two)
/// and collects its texts.
fn svg_series_and_texts(svg: &str) -> (usize, Vec<String>) {
    use quick_xml::{Reader, events::Event};
    let mut reader = Reader::from_str(svg);
    let (mut series, mut texts, mut in_text) = (0, Vec::new(), false);
    loop {
        match reader.read_event().expect("valid SVG") {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"polyline" => {
                let points = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"points")
                    .map(|a| String::from_utf8_lossy(&a.value).split_whitespace().count())
                    .unwrap_or(0);
                if points > 2 {
                    series += 1;
                }
            }
            Event::Start(e) if e.name().as_ref() == b"text" => in_text = true,
            Event::Text(t) if in_text => texts.push(String::from_utf8_lossy(&t).trim().to_string()),
            Event::End(e) if e.name().as_ref() == b"text" => in_text = false,
            Event::Eof => break,
            _ => {}
        }
    }
    (series, texts)
}

#[test]
fn example_replays_as_json_lines_and_a_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("chart.svg");
    let out = ebb()
        .args([
            "simulate",
            "-f",
            &example("scaledobject.yaml"),
            "--trace",
            &example("trace.csv"),
        ])
        .args(["--startup", "30s", "--output", "json", "--out"])
        .arg(&chart)
        .output()
        .expect("run ebb simulate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let (summary, steps) = lines.split_last().expect("lines");
    for s in steps {
        for key in ["time", "replicas", "desired", "metrics"] {
            assert!(s.get(key).is_some(), "{key} in {s}");
        }
        assert!(s["metrics"].get("s0-aws-sqs-orders").is_some(), "{s}");
    }
    let summary = &summary["summary"];
    assert_eq!(summary["max_replicas"], 19);
    assert_eq!(summary["duration_seconds"], 7200.0);
    assert!(summary["replica_seconds"].as_f64().is_some_and(|v| v > 0.0));
    assert!(summary["scale_events"].as_u64().is_some_and(|v| v > 10));
    // The queue first reaches its activation threshold at minute 10: KEDA wakes it then.
    let woke = steps
        .iter()
        .find(|s| s["replicas"].as_i64() > Some(0))
        .expect("scaled up");
    assert_eq!(woke["time"], 600.0);
    assert_eq!(woke["by"], "keda");
    // Minutes 85–88 the queue cannot be read: fallback holds 6 replicas.
    assert!(steps.iter().any(|s| s["fallback"] == true && s["replicas"] == 6));

    let svg = std::fs::read_to_string(&chart).expect("chart written");
    let (series, texts) = svg_series_and_texts(&svg);
    // Two metrics with their capacity lines, replicas, HPA desired.
    assert_eq!(series, 6, "{texts:?}");
    for label in [
        "time (minutes)",
        "metric value",
        "replicas",
        "s0-aws-sqs-orders",
        "s1-prometheus",
        "HPA desired replicas",
    ] {
        assert!(texts.iter().any(|t| t == label), "{label} in {texts:?}");
    }
}

#[test]
fn table_output_has_a_summary() {
    let out = ebb()
        .args([
            "simulate",
            "-f",
            &example("scaledobject.yaml"),
            "--trace",
            &example("trace.csv"),
        ])
        .output()
        .expect("run ebb simulate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.contains("desired") && h.contains("replicas"))
    );
    for part in [
        "summary over 2:00:00:",
        "replica-seconds",
        "under target",
        "scale events",
    ] {
        assert!(text.contains(part), "{part}");
    }
}

#[test]
fn prometheus_range_feeds_the_replay() {
    let prom = common::prometheus::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let so = dir.path().join("so.yaml");
    std::fs::write(&so, PROM_SO.replace("query: \"q\"", "query: \"vector(40) + 2\"")).expect("write");
    let out = ebb()
        .args(["simulate", "-f"])
        .arg(&so)
        .args([
            "--prometheus",
            &prom.url,
            "--start",
            "2026-01-01T00:00:00Z",
            "--end",
            "2026-01-01T00:10:00Z",
        ])
        .args(["--step", "30s", "--output", "json"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let (summary, steps) = lines.split_last().expect("lines");
    assert_eq!(summary["summary"]["duration_seconds"], 600.0);
    assert!(
        steps.iter().all(|s| s["metrics"]["s0-prometheus"] == 42.0),
        "{steps:?}"
    );
    assert_eq!(summary["summary"]["max_replicas"], 5);

    // A query Prometheus refuses is reported with its reason.
    std::fs::write(&so, PROM_SO.replace("query: \"q\"", "query: \"sum(\"")).expect("write");
    let out = ebb()
        .args(["simulate", "-f"])
        .arg(&so)
        .args(["--prometheus", &prom.url, "--start", "0", "--end", "600"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prometheus query api returned error. status: 400"),
        "{err}"
    );
}
