//! `ebb simulate` speed (issue 13): a 7-day trace at 15 s steps (40,320 HPA syncs, 20,160 KEDA
//! polls at the default 30 s pollingInterval) with 3 triggers, replayed end to end.
//!
//! Phases, each the median of `--rounds`:
//! 1. baseline: parsing the trace CSV (what every replay pays first; the ratio's denominator);
//! 2. the HPA controller model alone (`HpaState::sync` over the same values);
//! 3. the whole replay (`replay::run`: KEDA loop, fallback, HPA model, pods, summary);
//! 4. writing the JSON lines and the SVG chart of the result.
//!
//! `cargo bench --bench simulate -- [--days D] [--rounds R]`. Without `--bench` (as
//! `cargo test --benches` runs it) a one-day self-check runs and checks the figures' sanity.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use clap::Parser;
use ebb::{
    cli::SimulateArgs,
    scaling::hpa_controller::{HpaConfig, HpaState, MetricConfig, Observed, TargetKind},
    tools::simulate::{load, output, replay, setup, trace::Trace},
};

const SO: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: bench, namespace: ns}
spec:
  scaleTargetRef: {name: bench}
  minReplicaCount: 0
  maxReplicaCount: 200
  cooldownPeriod: 300
  fallback: {failureThreshold: 3, replicas: 10}
  triggers:
    - type: prometheus
      metadata: {serverAddress: "http://prom:9090", query: "a", threshold: "10", activationThreshold: "2"}
    - type: prometheus
      metadata: {serverAddress: "http://prom:9090", query: "b", threshold: "50"}
    - type: prometheus
      metadata: {serverAddress: "http://prom:9090", query: "c", threshold: "100", metricType: Value}
"#;

#[derive(Debug, Parser)]
#[command(name = "simulate", about = "Replay speed of ebb simulate")]
struct Opts {
    /// Days of trace at 15 s steps.
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// Rounds per phase; the median is shown.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Passed by `cargo bench`; without it only the self-check runs.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: SimulateArgs,
}

/// A deterministic daily wave with bursts, a quiet night and a few failing reads.
fn trace_csv(days: i64) -> String {
    let mut out = String::from("time,s0,s1,s2,error\n");
    let steps = days * 24 * 3600 / 15;
    for i in 0..steps {
        let t = i * 15;
        let day = (t % 86_400) as f64 / 86_400.0;
        let wave = (std::f64::consts::PI * 2.0 * (day - 0.25)).sin().max(0.0);
        let burst = if (t / 900) % 7 == 3 { 80.0 } else { 0.0 };
        let a = (wave * 300.0 + burst).round();
        let b = (wave * 900.0 + ((t % 613) as f64)).round();
        let c = (wave * 150.0).round();
        let error = if (t / 3600) % 29 == 5 && (t % 3600) < 120 {
            "s0"
        } else {
            ""
        };
        out.push_str(&format!("{t},{a},{b},{c},{error}\n"));
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

struct Figures {
    syncs: usize,
    polls: usize,
    parse: Duration,
    model: Duration,
    replay: Duration,
    output: Duration,
}

fn run(days: i64, rounds: usize) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let so_path = dir.path().join("so.yaml");
    std::fs::write(&so_path, SO).expect("write");
    let so_arg = so_path.to_string_lossy().into_owned();
    let args = Wrap::parse_from(["x", "-f", &so_arg, "--trace", "t.csv"]).args;
    let loaded = load(&so_path).expect("load");
    let csv = trace_csv(days);
    let parse = time(rounds, || Trace::parse(&csv).expect("trace"));
    let trace = Trace::parse(&csv).expect("trace");
    let s = setup(&loaded.scaled_objects[0], &loaded.others, &trace, &args).expect("setup");

    // The HPA model alone, fed the trace's values at every sync.
    let config = HpaConfig {
        min_replicas: 1,
        max_replicas: 200,
        metrics: vec![
            MetricConfig::new("ns", "s0", None, Some((TargetKind::AverageValue, 10_000))),
            MetricConfig::new("ns", "s1", None, Some((TargetKind::AverageValue, 50_000))),
            MetricConfig::new("ns", "s2", None, Some((TargetKind::Value, 100_000))),
        ],
        behavior: None,
        tolerance_down: 0.1,
        tolerance_up: 0.1,
        downscale_stabilization_ms: 300_000,
    };
    let model = time(rounds, || {
        let mut state = HpaState::default();
        let mut replicas = 1;
        for (row, t) in trace.times_ms.iter().enumerate() {
            let v: Vec<[i64; 1]> = (0..3)
                .map(|c| [(trace.values[c][row].unwrap_or(0.0) * 1000.0) as i64])
                .collect();
            let reads: Vec<Result<&[i64], String>> = v.iter().map(|a| Ok(&a[..])).collect();
            let r = state.sync(
                &config,
                &Observed {
                    now_ms: *t,
                    spec_replicas: replicas,
                    status_replicas: replicas,
                    ready_pods: replicas,
                    metrics: &reads,
                },
            );
            replicas = r.desired.max(1);
        }
        replicas
    });
    let replay_time = time(rounds, || replay::run(&s, &trace).expect("replay"));
    let outcome = replay::run(&s, &trace).expect("replay");
    let chart = dir.path().join("chart.svg");
    let output = time(rounds.min(3), || {
        let mut sink = Vec::with_capacity(1 << 24);
        output::json_lines(&mut sink, &outcome).expect("json");
        ebb::tools::simulate::chart::write_svg(&chart, &outcome).expect("chart");
        sink.len()
    });
    Figures {
        syncs: outcome.summary.hpa_syncs,
        polls: outcome.summary.keda_polls,
        parse,
        model,
        replay: replay_time,
        output,
    }
}

fn main() {
    let opts = Opts::parse();
    if !opts.bench {
        let f = run(1, 1);
        assert_eq!(f.syncs, 5_760, "one day at 15 s");
        assert_eq!(f.polls, 2_880, "one day at 30 s");
        assert!(f.replay > Duration::ZERO && f.parse > Duration::ZERO);
        println!("simulate: self-checks passed (cargo bench --bench simulate for the figures)");
        return;
    }
    if !(1..=60).contains(&opts.days) || !(1..=50).contains(&opts.rounds) {
        eprintln!("simulate: --days must be in 1..=60 and --rounds in 1..=50");
        std::process::exit(2);
    }
    let f = run(opts.days, opts.rounds);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = |d: Duration| d.as_secs_f64() / f.parse.as_secs_f64();
    println!(
        "simulate bench: {} days at 15 s, 3 triggers: {} HPA syncs, {} KEDA polls; median of {} rounds",
        opts.days, f.syncs, f.polls, opts.rounds
    );
    println!(
        "{:<38} {:>10} {:>14} {:>10}",
        "phase", "ms", "ns per sync", "× parse"
    );
    for (name, d) in [
        ("parse the trace CSV (baseline)", f.parse),
        ("HPA controller model alone", f.model),
        ("whole replay (KEDA + HPA + pods)", f.replay),
        ("JSON lines + SVG chart", f.output),
    ] {
        println!(
            "{:<38} {:>10.1} {:>14.0} {:>10.2}",
            name,
            ms(d),
            d.as_nanos() as f64 / f.syncs as f64,
            ratio(d)
        );
    }
}
