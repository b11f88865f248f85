//! Soak of `ebb metrics-server` at scale, printed (not asserted), to set beside KEDA's figure for
//! its operator (333 mCPU and 1,163 MiB with 10,000 Prometheus ScaledObjects).
//!
//! 1. Prometheus: N ScaledObjects (default 10,000), each with one `prometheus` trigger,
//!    `useCachedMetrics: true`, `pollingInterval` 30 s, querying its own series of a real
//!    Prometheus (Debian's, started by `scripts/prometheus` and fed N distinct series). A counting
//!    proxy in front of Prometheus counts the queries per trigger; Prometheus' own
//!    `/api/v1/query` counter and ebb's `ebb_scaler_upstream_latency_seconds_count` cross-check
//!    it. HPA-like readers then read every metric once per 15 s (KEDA's default HPA sync period),
//!    spread evenly over the period, over mutual TLS and HTTP/2 as kube-apiserver's aggregator
//!    talks to an APIService, with 5 concurrent readers (the controller manager's default
//!    `--concurrent-horizontal-pod-autoscaler-syncs`), for `--duration` seconds.
//! 2. Cron: M ScaledObjects (default 100,000) with one `cron` trigger, read the same way.
//!
//! During each phase ebb's CPU time (`/proc/PID/stat`) and RSS (`/proc/PID/status`) are sampled
//! every `--sample-every` seconds, and ebb's own `/metrics` is scraped every `--scrape-every`
//! seconds as a cluster's Prometheus would. Figures are taken over the window after
//! `--warmup`: CPU averaged in mCPU, the RSS series and its least-squares slope, upstream queries
//! per trigger per interval, read latency p50/p99 and errors, and the load average of the machine.
//!
//! Run with `scripts/bench-soak` (or `cargo bench --bench soak -- [flags]`). Everything listens on
//! 127.0.0.1; every loop is bounded in count and in time; ebb and Prometheus are stopped on every
//! exit path. Without `--bench` (as `cargo test --benches` runs it) the self-checks run: the pure
//! pieces, then a few seconds of the same soak on 200 cron ScaledObjects.

#[allow(dead_code)]
#[path = "../tests/common/prometheus.rs"]
mod prometheus;

#[path = "common/mod.rs"]
mod common;
use common::{
    Res,
    client::{Sender, client_config, connect, metric_path, read_each, request},
    ebb::Ebb,
    get_plain_within,
    names::cron_metric_name,
    print_loadavg, print_machine,
    procfs::{clock_ticks_per_second, cpu_ticks, loadavg1, mib, rss},
    runtime,
    stats::{histogram, linear_fit, percentile, sum_samples},
    upstream::{Backend, CountingProxy, PromCounter, Snapshot, per_key, prom_query_counter},
};

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use http::StatusCode;
use rustls::ClientConfig;

/// Namespace of every generated object.
const NS: &str = "default";
/// KEDA's operator with 10,000 Prometheus ScaledObjects, as issue 10 quotes it.
const KEDA_MCPU: f64 = 333.0;
const KEDA_MIB: f64 = 1163.0;
/// ScaledObjects per generated file.
const PER_FILE: usize = 500;
/// How long ebb may take to load the objects and answer `/readyz`.
const READY_DEADLINE: Duration = Duration::from_secs(300);
/// Fitted RSS growth over the measured window below which RSS counts as flat: the larger of
/// 1 MiB and 1 % of the mean.
const FLAT_MIB: f64 = 1.0;
const FLAT_SHARE: f64 = 0.01;

#[derive(Debug, Parser, Clone)]
#[command(name = "soak", about = "Soak of ebb metrics-server with many ScaledObjects")]
struct Opts {
    /// ScaledObjects with a prometheus trigger.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Seconds of HPA-like reads in the prometheus phase.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// ScaledObjects with a cron trigger (0 skips the cron phase).
    #[arg(long, default_value_t = 100_000)]
    cron_objects: usize,
    /// Seconds of HPA-like reads in the cron phase.
    #[arg(long, default_value_t = 600)]
    cron_duration: u64,
    /// Seconds at the start of each phase left out of the CPU, RSS-slope, latency and upstream
    /// figures (first reads fill the cache).
    #[arg(long, default_value_t = 120)]
    warmup: u64,
    /// `pollingInterval` of every ScaledObject, seconds.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Every metric is read once per this many seconds (the HPA's sync period).
    #[arg(long, default_value_t = 15)]
    read_period: u64,
    /// Concurrent readers in the prometheus phase (the HPA controller's workers: kube-controller-
    /// manager's `--concurrent-horizontal-pod-autoscaler-syncs` defaults to 5).
    #[arg(long, default_value_t = 5)]
    workers: usize,
    /// Concurrent readers in the cron phase (5 cannot read 100,000 metrics every 15 s; a cluster
    /// with that many HPAs raises the controller's workers too).
    #[arg(long, default_value_t = 50)]
    cron_workers: usize,
    /// HTTP/2 connections the readers share.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds between CPU and RSS samples.
    #[arg(long, default_value_t = 10)]
    sample_every: u64,
    /// Seconds between scrapes of ebb's own `/metrics` (0: never).
    #[arg(long, default_value_t = 30)]
    scrape_every: u64,
    /// Query Prometheus directly instead of through the counting proxy (no per-trigger counts).
    #[arg(long)]
    no_proxy: bool,
    /// Skip the prometheus phase.
    #[arg(long)]
    skip_prometheus: bool,
    /// Passed by `cargo bench`; without it only the self-checks run.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let opts = Opts::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !opts.bench {
        self_check();
        println!("soak: self-checks passed (run scripts/bench-soak for the figures)");
        return;
    }
    if let Err(e) = run(&opts) {
        eprintln!("soak: error: {e}");
        std::process::exit(1);
    }
}

fn validate(opts: &Opts) -> Res<()> {
    let checks = [
        (opts.objects <= 200_000, "--objects must be at most 200000"),
        (
            opts.cron_objects <= 1_000_000,
            "--cron-objects must be at most 1000000",
        ),
        (
            (1..=86_400).contains(&opts.duration) && (1..=86_400).contains(&opts.cron_duration),
            "--duration and --cron-duration must be in 1..=86400",
        ),
        (
            (1..=3600).contains(&opts.interval),
            "--interval must be in 1..=3600",
        ),
        (
            (1..=3600).contains(&opts.read_period),
            "--read-period must be in 1..=3600",
        ),
        (
            (1..=1000).contains(&opts.workers) && (1..=1000).contains(&opts.cron_workers),
            "--workers and --cron-workers must be in 1..=1000",
        ),
        (
            (1..=64).contains(&opts.connections),
            "--connections must be in 1..=64",
        ),
        (
            (1..=3600).contains(&opts.sample_every),
            "--sample-every must be in 1..=3600",
        ),
        (opts.scrape_every <= 3600, "--scrape-every must be at most 3600"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, msg)) => Err((*msg).into()),
        None => Ok(()),
    }
}

fn run(opts: &Opts) -> Res<()> {
    validate(opts)?;
    print_machine();
    let rt = runtime("soak-client", 2)?;
    let tmp = tempfile::Builder::new().prefix("ebb-soak-").tempdir()?;
    let mut summary = Vec::new();
    if !opts.skip_prometheus && opts.objects > 0 {
        summary.push(prometheus_phase(opts, &rt, tmp.path())?);
    }
    if opts.cron_objects > 0 {
        summary.push(cron_phase(
            opts,
            &rt,
            tmp.path(),
            opts.cron_objects,
            opts.cron_duration,
        )?);
    }
    println!(
        "\n== beside KEDA's operator (10,000 Prometheus ScaledObjects: {KEDA_MCPU} mCPU, {KEDA_MIB} MiB) =="
    );
    for s in &summary {
        println!(
            "{:<11} {:>7} objects  cpu {:>7.1} mCPU ({:.3} of KEDA's)  rss max {:>7.1} MiB ({:.3} of KEDA's)",
            s.label,
            s.objects,
            s.mcpu,
            s.mcpu / KEDA_MCPU,
            s.rss_max_mib,
            s.rss_max_mib / KEDA_MIB
        );
    }
    print_loadavg();
    Ok(())
}

/// The figures compared with KEDA's at the end.
struct PhaseSummary {
    label: &'static str,
    objects: usize,
    mcpu: f64,
    rss_max_mib: f64,
}

// ---------------------------------------------------------------------------------------------
// The phases.

fn prometheus_phase(opts: &Opts, rt: &tokio::runtime::Runtime, tmp: &Path) -> Res<PhaseSummary> {
    let n = opts.objects;
    println!(
        "\n== prometheus: {n} ScaledObjects, pollingInterval {} s, useCachedMetrics, reads every {} s, {} s ==",
        opts.interval, opts.read_period, opts.duration
    );
    let series = tmp.join("series.prom");
    std::fs::write(&series, series_text(n))?;
    let t0 = Instant::now();
    let series_arg = series.to_string_lossy().into_owned();
    // Values never change: one scrape every 5 s keeps every series fresh.
    let prom = prometheus::PromServer::start_with(&[
        ("PROM_EXTRA_METRICS", &series_arg),
        ("PROM_SCRAPE_INTERVAL", "5s"),
    ]);
    println!(
        "prometheus {} ready with {n} extra series in {:.1} s",
        prom.url,
        t0.elapsed().as_secs_f64()
    );
    let proxy_rt = runtime("soak-proxy", 1)?;
    let proxy = if opts.no_proxy {
        None
    } else {
        Some(proxy_rt.block_on(CountingProxy::start(&prom.url, Backend::Prometheus))?)
    };
    let upstream = proxy.as_ref().map_or(prom.url.as_str(), |p| p.url.as_str());

    let dir = tmp.join("prometheus");
    write_files(&dir, n, |i| prom_object(i, opts.interval, upstream))?;
    let targets: Vec<Target> = (0..n)
        .map(|i| Target {
            path: metric_path(NS, &prom_so(i), "s0-prometheus"),
            expect: Some(format!("\"value\":\"{}\"", series_value(i))),
        })
        .collect();
    let counters = Counters {
        prom_url: Some(prom.url.clone()),
        proxy: proxy.as_ref(),
    };
    let outcome = soak(
        opts,
        rt,
        tmp,
        "prometheus",
        &dir,
        targets,
        opts.duration,
        opts.workers,
        &counters,
    )?;
    report_upstream(opts, &outcome, n);
    drop(proxy);
    drop(prom);
    Ok(PhaseSummary {
        label: "prometheus",
        objects: n,
        mcpu: outcome.steady_mcpu(),
        rss_max_mib: outcome.steady_rss_max_mib(),
    })
}

fn cron_phase(
    opts: &Opts,
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    n: usize,
    duration: u64,
) -> Res<PhaseSummary> {
    println!(
        "\n== cron: {n} ScaledObjects, pollingInterval {} s (KEDA refuses useCachedMetrics on cron), reads every {} s, {duration} s ==",
        opts.interval, opts.read_period
    );
    let dir = tmp.join("cron");
    write_files(&dir, n, |i| cron_object(i, opts.interval))?;
    let targets: Vec<Target> = (0..n)
        .map(|i| Target {
            path: metric_path(NS, &cron_so(i), &cron_metric(i)),
            expect: None,
        })
        .collect();
    let counters = Counters {
        prom_url: None,
        proxy: None,
    };
    let outcome = soak(
        opts,
        rt,
        tmp,
        "cron",
        &dir,
        targets,
        duration,
        opts.cron_workers,
        &counters,
    )?;
    Ok(PhaseSummary {
        label: "cron",
        objects: n,
        mcpu: outcome.steady_mcpu(),
        rss_max_mib: outcome.steady_rss_max_mib(),
    })
}

/// Upstream counters read at the start and the end of the measured window.
struct Counters<'a> {
    prom_url: Option<String>,
    proxy: Option<&'a CountingProxy>,
}

/// State at one moment of a phase.
struct Checkpoint {
    at: Instant,
    ticks: u64,
    ebb_metrics: String,
    prom: Option<PromCounter>,
    proxy: Option<Snapshot>,
}

async fn checkpoint(ebb: &Ebb, counters: &Counters<'_>) -> Res<Checkpoint> {
    let at = Instant::now();
    let ticks = cpu_ticks(ebb.pid())?;
    let (status, body) = get_plain_within(ebb.metrics, "/metrics", Duration::from_secs(30)).await?;
    if status != StatusCode::OK {
        return Err(format!("ebb /metrics answered {status}").into());
    }
    let prom = match &counters.prom_url {
        Some(url) => Some(prom_query_counter(url).await?),
        None => None,
    };
    Ok(Checkpoint {
        at,
        ticks,
        ebb_metrics: String::from_utf8_lossy(&body).into_owned(),
        prom,
        proxy: counters.proxy.map(CountingProxy::snapshot),
    })
}

/// One metric the readers ask for, with a piece of the body that proves the value is right.
struct Target {
    path: String,
    expect: Option<String>,
}

/// Everything measured in one phase.
struct Outcome {
    label: String,
    clk: u64,
    samples: Vec<Sample>,
    reads: ReadOutcome,
    scrapes: Vec<Scrape>,
    warm: Checkpoint,
    end: Checkpoint,
    start: Instant,
    warmup: Duration,
    interval: Duration,
}

impl Outcome {
    fn window(&self) -> f64 {
        self.end.at.duration_since(self.warm.at).as_secs_f64()
    }

    fn steady_mcpu(&self) -> f64 {
        let ticks = self.end.ticks.saturating_sub(self.warm.ticks) as f64;
        ticks / self.clk as f64 / self.window().max(1e-9) * 1000.0
    }

    fn steady_samples(&self) -> impl Iterator<Item = &Sample> {
        let from = self.warmup.as_secs_f64();
        self.samples.iter().filter(move |s| s.t >= from)
    }

    fn steady_rss_max_mib(&self) -> f64 {
        self.steady_samples().map(|s| mib(s.rss_kib)).fold(0.0, f64::max)
    }

    fn ebb_delta(&self, name: &str, labels: &[&str]) -> f64 {
        sum_samples(&self.end.ebb_metrics, name, labels) - sum_samples(&self.warm.ebb_metrics, name, labels)
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the phase's reads started.
    t: f64,
    rss_kib: u64,
    ticks: u64,
    load1: f64,
}

struct Scrape {
    t: f64,
    bytes: usize,
    ms: f64,
    ok: bool,
}

#[allow(clippy::too_many_arguments)]
fn soak(
    opts: &Opts,
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    label: &str,
    dir: &Path,
    targets: Vec<Target>,
    duration: u64,
    workers: usize,
    counters: &Counters<'_>,
) -> Res<Outcome> {
    let state = tmp.join(format!("state-{label}"));
    let ebb = Ebb::start(dir, &state, &tmp.join(format!("ebb-{label}.log")))?;
    let started = Instant::now();
    rt.block_on(ebb.wait_ready_within(READY_DEADLINE))?;
    let ready = started.elapsed();
    let at_ready = rss(ebb.pid())?;
    println!(
        "ebb ready after {:.2} s: rss {:.1} MiB, cpu so far {:.2} s",
        ready.as_secs_f64(),
        mib(at_ready.rss_kib),
        cpu_ticks(ebb.pid())? as f64 / clock_ticks_per_second() as f64
    );
    let cfg = client_config(&state, true)?;
    // One read first: the set-up works before the clock starts.
    let first: Vec<String> = targets.iter().take(1).map(|t| t.path.clone()).collect();
    if let Err(e) = rt.block_on(read_each(ebb.secure, &first, client_config(&state, false)?)) {
        return Err(format!("{e}\n{}", ebb.log_tail()).into());
    }
    let spec = Spec {
        duration: Duration::from_secs(duration),
        warmup: Duration::from_secs(opts.warmup.min(duration.saturating_sub(1))),
        period: Duration::from_secs(opts.read_period),
        workers,
        connections: opts.connections,
        sample_every: Duration::from_secs(opts.sample_every),
        scrape_every: (opts.scrape_every > 0).then(|| Duration::from_secs(opts.scrape_every)),
    };
    let outcome = rt.block_on(drive(&ebb, cfg, Arc::new(targets), &spec, counters));
    let outcome = match outcome {
        Ok(mut o) => {
            o.label = label.to_string();
            o.interval = Duration::from_secs(opts.interval);
            o
        }
        Err(e) => return Err(format!("{e}\n{}", ebb.log_tail()).into()),
    };
    report(&outcome);
    drop(ebb);
    Ok(outcome)
}

struct Spec {
    duration: Duration,
    warmup: Duration,
    period: Duration,
    workers: usize,
    connections: usize,
    sample_every: Duration,
    scrape_every: Option<Duration>,
}

/// Reads, samples and scrapes for `spec.duration`, with checkpoints at the end of the warm-up
/// and at the end.
async fn drive(
    ebb: &Ebb,
    cfg: Arc<ClientConfig>,
    targets: Arc<Vec<Target>>,
    spec: &Spec,
    counters: &Counters<'_>,
) -> Res<Outcome> {
    let clk = clock_ticks_per_second();
    let start = Instant::now();
    let end = start + spec.duration;
    let readers = tokio::spawn(read_load(
        ebb.secure,
        cfg,
        targets,
        start,
        end,
        spec.period,
        spec.workers,
        spec.connections,
    ));
    let pid = ebb.pid();
    let sampler = tokio::spawn(sample_loop(pid, start, end, spec.sample_every));
    let scraper = spec
        .scrape_every
        .map(|every| tokio::spawn(scrape_loop(ebb.metrics, start, end, every)));

    tokio::time::sleep_until((start + spec.warmup).into()).await;
    let warm = checkpoint(ebb, counters).await?;
    let reads = readers.await?;
    let end_cp = checkpoint(ebb, counters).await?;
    let samples = sampler.await??;
    let scrapes = match scraper {
        Some(s) => s.await?,
        None => Vec::new(),
    };
    Ok(Outcome {
        label: String::new(),
        clk,
        samples,
        reads,
        scrapes,
        warm,
        end: end_cp,
        start,
        warmup: spec.warmup,
        interval: Duration::ZERO,
    })
}

async fn sample_loop(pid: u32, start: Instant, end: Instant, every: Duration) -> Res<Vec<Sample>> {
    let mut out = Vec::new();
    let mut next = start;
    // Bounded by the phase's end; at most one sample per `every`.
    while next <= end {
        tokio::time::sleep_until(next.into()).await;
        let mem = rss(pid)?;
        out.push(Sample {
            t: next.duration_since(start).as_secs_f64(),
            rss_kib: mem.rss_kib,
            ticks: cpu_ticks(pid)?,
            load1: loadavg1(),
        });
        next += every;
    }
    Ok(out)
}

async fn scrape_loop(admin: SocketAddr, start: Instant, end: Instant, every: Duration) -> Vec<Scrape> {
    let mut out = Vec::new();
    // Half a period out of step with the checkpoints, which read /metrics themselves.
    let mut next = start + every / 2;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let t0 = Instant::now();
        let r = get_plain_within(admin, "/metrics", Duration::from_secs(10)).await;
        out.push(Scrape {
            t: next.duration_since(start).as_secs_f64(),
            bytes: r.as_ref().map_or(0, |(_, b)| b.len()),
            ms: t0.elapsed().as_secs_f64() * 1000.0,
            ok: matches!(r, Ok((StatusCode::OK, _))),
        });
        next += every;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HPA-like readers.

#[derive(Default)]
struct ReadOutcome {
    /// (ms since start, latency µs) of every successful read.
    ok: Vec<(u32, u32)>,
    /// ms since start of every failed read (transport error, timeout, non-200, wrong value).
    errors: Vec<u32>,
    wrong_values: u64,
    /// Largest delay between a read's due time and its start, ms.
    max_lag_ms: u32,
    /// Reads not started because the phase ended first (the readers fell behind).
    missed: u64,
    first_error: Option<String>,
}

impl ReadOutcome {
    fn merge(&mut self, o: ReadOutcome) {
        self.ok.extend(o.ok);
        self.errors.extend(o.errors);
        self.wrong_values += o.wrong_values;
        self.max_lag_ms = self.max_lag_ms.max(o.max_lag_ms);
        self.missed += o.missed;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// When read `k` is due: metric `k % n` of cycle `k / n`, the n reads of a cycle spread evenly
/// over the period.
fn due(start: Instant, period: Duration, n: usize, k: u64) -> Instant {
    let n = n.max(1) as u64;
    let cycle = u32::try_from(k / n).unwrap_or(u32::MAX);
    start + period * cycle + period.mul_f64((k % n) as f64 / n as f64)
}

type Slot = Arc<
    tokio::sync::Mutex<Option<hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>>>,
>;

#[allow(clippy::too_many_arguments)]
async fn read_load(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    targets: Arc<Vec<Target>>,
    start: Instant,
    end: Instant,
    period: Duration,
    workers: usize,
    connections: usize,
) -> ReadOutcome {
    let n = targets.len();
    let next = Arc::new(AtomicU64::new(0));
    let slots: Vec<Slot> = (0..connections.max(1)).map(|_| Slot::default()).collect();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let (next, targets, cfg, slot) = (
            next.clone(),
            targets.clone(),
            cfg.clone(),
            slots[w % slots.len()].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = ReadOutcome::default();
            if n == 0 {
                return out;
            }
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let at = due(start, period, n, k);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let sent = Instant::now();
                if sent >= end {
                    out.missed += 1;
                    continue;
                }
                let lag = sent.duration_since(at).as_millis();
                out.max_lag_ms = out.max_lag_ms.max(u32::try_from(lag).unwrap_or(u32::MAX));
                let t_ms = u32::try_from(sent.duration_since(start).as_millis()).unwrap_or(u32::MAX);
                let target = &targets[(k % n as u64) as usize];
                let sender = {
                    let mut guard = slot.lock().await;
                    if guard.is_none() {
                        match connect(addr, cfg.clone()).await {
                            Ok(Sender::H2(s)) => *guard = Some(s),
                            Ok(Sender::H1(_)) => {
                                out.errors.push(t_ms);
                                out.first_error
                                    .get_or_insert_with(|| "server did not negotiate h2".into());
                                continue;
                            }
                            Err(e) => {
                                out.errors.push(t_ms);
                                out.first_error.get_or_insert_with(|| format!("connect: {e}"));
                                continue;
                            }
                        }
                    }
                    guard.clone()
                };
                let Some(h2) = sender else { continue };
                let mut s = Sender::H2(h2);
                match request(&mut s, addr, &target.path).await {
                    Ok((StatusCode::OK, body)) => {
                        let right = target
                            .expect
                            .as_ref()
                            .is_none_or(|e| body.windows(e.len()).any(|w| w == e.as_bytes()));
                        if right {
                            let us = sent.elapsed().as_micros();
                            out.ok.push((t_ms, u32::try_from(us).unwrap_or(u32::MAX)));
                        } else {
                            out.wrong_values += 1;
                            out.errors.push(t_ms);
                            out.first_error.get_or_insert_with(|| {
                                format!(
                                    "{}: expected {:?} in {}",
                                    target.path,
                                    target.expect,
                                    String::from_utf8_lossy(&body[..body.len().min(300)])
                                )
                            });
                        }
                    }
                    Ok((status, body)) => {
                        out.errors.push(t_ms);
                        out.first_error.get_or_insert_with(|| {
                            format!(
                                "{}: {status}: {}",
                                target.path,
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            )
                        });
                    }
                    Err(e) => {
                        out.errors.push(t_ms);
                        out.first_error
                            .get_or_insert_with(|| format!("{}: {e}", target.path));
                        // A broken connection is replaced by the next read on this slot.
                        *slot.lock().await = None;
                    }
                }
            }
            out
        }));
    }
    let mut total = ReadOutcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => total.merge(o),
            Err(e) => {
                total.errors.push(0);
                total
                    .first_error
                    .get_or_insert_with(|| format!("reader task: {e}"));
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Output.

fn report(o: &Outcome) {
    let warm_s = o.warmup.as_secs_f64();
    let window = o.window();
    println!(
        "\nt_s  rss_mib  mcpu  load1   ({} phase; mCPU since the previous sample)",
        o.label
    );
    for pair in o.samples.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let mcpu = b.ticks.saturating_sub(a.ticks) as f64 / o.clk as f64 / (b.t - a.t).max(1e-9) * 1000.0;
        println!(
            "{:>4.0} {:>8.1} {:>5.0} {:>6.2}{}",
            b.t,
            mib(b.rss_kib),
            mcpu,
            b.load1,
            if b.t < warm_s { "  (warm-up)" } else { "" }
        );
    }
    let steady: Vec<(f64, f64)> = o.steady_samples().map(|s| (s.t / 60.0, mib(s.rss_kib))).collect();
    let mean = steady.iter().map(|p| p.1).sum::<f64>() / steady.len().max(1) as f64;
    let (lo, hi) = steady
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (slope, growth, flat) = match linear_fit(&steady) {
        Some((slope, _)) => {
            let growth = slope * window / 60.0;
            (slope, growth, growth.abs() <= FLAT_MIB.max(FLAT_SHARE * mean))
        }
        None => (f64::NAN, f64::NAN, false),
    };
    let loads: Vec<f64> = o.samples.iter().map(|s| s.load1).collect();
    let load_lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
    let load_hi = loads.iter().copied().fold(0.0, f64::max);
    println!(
        "window: {window:.0} s after a {warm_s:.0} s warm-up; machine load average (1 min) {load_lo:.2}-{load_hi:.2}"
    );
    println!(
        "cpu: {:.1} mCPU averaged over the window ({:.1} mCPU over the whole run)",
        o.steady_mcpu(),
        o.samples
            .last()
            .map(|s| s.ticks as f64 / o.clk as f64 / o.end.at.duration_since(o.start).as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    );
    println!(
        "rss: mean {mean:.1} MiB, min {lo:.1}, max {hi:.1}; slope {slope:+.3} MiB/min, fitted growth over the window {growth:+.2} MiB: {}",
        if flat { "flat" } else { "NOT flat" }
    );

    let r = &o.reads;
    let from_ms = (warm_s * 1000.0) as u32;
    let mut lat: Vec<u32> =
        r.ok.iter()
            .filter(|(t, _)| *t >= from_ms)
            .map(|(_, l)| *l)
            .collect();
    lat.sort_unstable();
    let ms = |p: f64| percentile(&lat, p).map_or(f64::NAN, |us| f64::from(us) / 1000.0);
    let steady_errors = r.errors.iter().filter(|t| **t >= from_ms).count();
    println!(
        "reads: {} ok in the window ({:.0}/s), {} errors in the window, {} during warm-up ({} wrong values), {} not started, max start lag {} ms",
        lat.len(),
        lat.len() as f64 / window.max(1e-9),
        steady_errors,
        r.errors.len() - steady_errors,
        r.wrong_values,
        r.missed,
        r.max_lag_ms
    );
    println!(
        "read latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(50.0),
        ms(99.0),
        ms(99.9),
        ms(100.0)
    );
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
    let hits = o.ebb_delta("ebb_metric_cache_reads_total", &["result=\"hit\""]);
    let misses = o.ebb_delta("ebb_metric_cache_reads_total", &["result=\"miss\""]);
    let age_sum = o.ebb_delta("ebb_metric_value_age_seconds_sum", &[]);
    let age_count = o.ebb_delta("ebb_metric_value_age_seconds_count", &[]);
    let within = o.ebb_delta("ebb_metric_value_age_seconds_bucket", &["le=\"30.0\""]);
    println!(
        "ebb cache in the window: {hits:.0} hits, {misses:.0} misses; value age served: mean {:.1} s, {:.1} % at most 30 s",
        age_sum / age_count.max(1.0),
        100.0 * within / age_count.max(1.0)
    );
    if !o.scrapes.is_empty() {
        let ok = o.scrapes.iter().filter(|s| s.ok).count();
        let max_ms = o.scrapes.iter().map(|s| s.ms).fold(0.0, f64::max);
        let bytes = o.scrapes.iter().map(|s| s.bytes).max().unwrap_or(0);
        let last_t = o.scrapes.last().map_or(0.0, |s| s.t);
        println!(
            "ebb /metrics scrapes: {ok}/{} ok, up to {:.1} KiB, slowest {max_ms:.1} ms (last at {last_t:.0} s)",
            o.scrapes.len(),
            bytes as f64 / 1024.0
        );
    }
    println!(
        "summary phase={} mcpu={:.1} rss_mean_mib={mean:.1} rss_max_mib={hi:.1} rss_slope_mib_per_min={slope:+.3} flat={flat} reads={} errors={} p50_ms={:.2} p99_ms={:.2} load1={load_lo:.2}-{load_hi:.2}",
        o.label,
        o.steady_mcpu(),
        lat.len(),
        r.errors.len(),
        ms(50.0),
        ms(99.0)
    );
}

fn report_upstream(opts: &Opts, o: &Outcome, n: usize) {
    let window = o.window();
    let intervals = window / o.interval.as_secs_f64();
    // Queries at least one interval apart: at most floor(window / interval) + 1 in the window.
    let allowed = intervals.floor() as u64 + 1;
    let ebb_queries = o.ebb_delta(
        "ebb_scaler_upstream_latency_seconds_count",
        &["type=\"prometheus\""],
    );
    println!(
        "upstream in the window ({window:.0} s = {intervals:.2} intervals of {} s):",
        opts.interval
    );
    println!(
        "  ebb_scaler_upstream_latency_seconds_count{{type=\"prometheus\"}}: +{ebb_queries:.0} = {:.3} per trigger per interval",
        ebb_queries / n as f64 / intervals
    );
    if let (Some(a), Some(b)) = (&o.warm.prom, &o.end.prom) {
        let total = b.total.saturating_sub(a.total);
        println!(
            "  Prometheus' own /api/v1/query counter: +{total} (code 200: +{}) = {:.3} per trigger per interval",
            b.ok.saturating_sub(a.ok),
            total as f64 / n as f64 / intervals
        );
    }
    if let (Some(a), Some(b)) = (&o.warm.proxy, &o.end.proxy) {
        let keys: Vec<String> = (0..n).map(series_query).collect();
        let rows = per_key(a, b, &keys);
        let total: u64 = rows.values().sum();
        let max = rows.values().copied().max().unwrap_or(0);
        let over: Vec<&String> = rows
            .iter()
            .filter(|(_, c)| **c > allowed)
            .map(|(k, _)| k)
            .collect();
        println!(
            "  counting proxy: {total} queries = {:.3} per trigger per interval; per trigger (queries: triggers) {}",
            total as f64 / n as f64 / intervals,
            histogram(rows.values())
        );
        println!(
            "  at most one per trigger per interval (≤ {allowed} per trigger in this window): {} (max {max}{})",
            if over.is_empty() { "met" } else { "NOT met" },
            if over.is_empty() {
                String::new()
            } else {
                format!(", {} triggers over, e.g. {}", over.len(), over[0])
            }
        );
        println!(
            "summary upstream_per_trigger_per_interval={:.3} max_per_trigger={max} allowed={allowed}",
            total as f64 / n as f64 / intervals
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The generated objects and series.

fn prom_so(i: usize) -> String {
    format!("soak-prom-{i:05}")
}

fn cron_so(i: usize) -> String {
    format!("soak-cron-{i:06}")
}

/// Value of series `i`: integers below 1000, so the API renders them without a suffix.
fn series_value(i: usize) -> usize {
    i % 997 + 1
}

fn series_query(i: usize) -> String {
    format!("sum(ebb_soak_queue_depth{{queue=\"q{i:05}\"}})")
}

/// `n` distinct series in text exposition, one per prometheus trigger.
fn series_text(n: usize) -> String {
    let mut out = String::from("# TYPE ebb_soak_queue_depth gauge\n");
    for i in 0..n {
        out.push_str(&format!(
            "ebb_soak_queue_depth{{queue=\"q{i:05}\"}} {}\n",
            series_value(i)
        ));
    }
    out
}

fn prom_object(i: usize, interval: u64, server: &str) -> String {
    let name = prom_so(i);
    format!(
        "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {name}
  namespace: {NS}
spec:
  scaleTargetRef:
    name: {name}
  pollingInterval: {interval}
  triggers:
  - type: prometheus
    useCachedMetrics: true
    metadata:
      serverAddress: \"{server}\"
      query: '{}'
      threshold: \"10\"
",
        series_query(i)
    )
}

fn cron_start(i: usize) -> String {
    format!("{} 8 * * *", i % 60)
}

fn cron_metric(i: usize) -> String {
    cron_metric_name("Etc/UTC", &cron_start(i), "0 18 * * *")
}

fn cron_object(i: usize, interval: u64) -> String {
    let name = cron_so(i);
    format!(
        "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {name}
  namespace: {NS}
spec:
  scaleTargetRef:
    name: {name}
  pollingInterval: {interval}
  triggers:
  - type: cron
    metadata:
      timezone: Etc/UTC
      start: \"{}\"
      end: \"0 18 * * *\"
      desiredReplicas: \"3\"
",
        cron_start(i)
    )
}

/// Writes `n` objects, `PER_FILE` `---`-separated documents per file (written then renamed, so
/// ebb never reads half a file).
fn write_files(dir: &Path, n: usize, object: impl Fn(usize) -> String) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let t0 = Instant::now();
    for file in 0..n.div_ceil(PER_FILE) {
        let docs: Vec<String> = (file * PER_FILE..((file + 1) * PER_FILE).min(n))
            .map(&object)
            .collect();
        let tmp = dir.join(format!(".so-{file:04}.tmp"));
        std::fs::write(&tmp, docs.join("---\n"))?;
        std::fs::rename(&tmp, dir.join(format!("so-{file:04}.yaml")))?;
    }
    println!(
        "wrote {n} ScaledObjects in {} files ({:.1} s)",
        n.div_ceil(PER_FILE),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Self-checks (run when the binary is started without `--bench`).

fn self_check() {
    pure_checks();
    // The same soak, a few seconds long, on 200 cron ScaledObjects: the harness still drives
    // the real binary end to end.
    let opts = Opts::parse_from([
        "soak",
        "--skip-prometheus",
        "--cron-objects",
        "200",
        "--cron-duration",
        "3",
        "--warmup",
        "1",
        "--read-period",
        "1",
        "--sample-every",
        "1",
        "--scrape-every",
        "1",
    ]);
    validate(&opts).expect("valid options");
    let rt = runtime("soak-check", 2).expect("runtime");
    let tmp = tempfile::Builder::new()
        .prefix("ebb-soak-check-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().join("cron");
    write_files(&dir, 200, |i| cron_object(i, 1)).expect("write");
    let targets: Vec<Target> = (0..200)
        .map(|i| Target {
            path: metric_path(NS, &cron_so(i), &cron_metric(i)),
            expect: Some("\"metricName\":\"s0-cron-Etc-UTC-".to_string()),
        })
        .collect();
    let counters = Counters {
        prom_url: None,
        proxy: None,
    };
    let o = soak(&opts, &rt, tmp.path(), "check", &dir, targets, 3, 5, &counters).expect("soak runs");
    assert!(o.reads.errors.is_empty(), "errors: {:?}", o.reads.first_error);
    // Three periods of 200 reads: each was served, or not started because the time ran out (a
    // busy machine); the counts, not the timing, are checked.
    assert_eq!(o.reads.ok.len() as u64 + o.reads.missed, 600);
    assert!(!o.reads.ok.is_empty());
    assert_eq!(o.samples.len(), 4, "a sample at 0, 1, 2 and 3 s");
    assert_eq!(o.scrapes.len(), 3, "scrapes at 0.5, 1.5 and 2.5 s");
    assert!(o.scrapes.iter().all(|s| s.ok));
    assert!(o.steady_rss_max_mib() > 1.0);
    assert!(
        sum_samples(
            &o.end.ebb_metrics,
            "ebb_metric_cache_reads_total",
            &["result=\"miss\""]
        ) > 0.0
    );
}

fn pure_checks() {
    assert_eq!(common::stats::percentile(&[1, 2, 3, 4], 50.0), Some(2));
    let (slope, icpt) = linear_fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).expect("fits");
    assert!((slope - 2.0).abs() < 1e-9 && (icpt - 1.0).abs() < 1e-9);
    assert!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    assert_eq!(
        common::procfs::parse_stat_ticks(
            "42 (tokio (rt) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 7 1 2"
        ),
        Some(325)
    );
    let m = common::procfs::parse_status("Name:\tebb\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n")
        .expect("parses");
    assert_eq!((m.rss_kib, m.hwm_kib), (10240, 20480));
    let text = "# TYPE ebb_metric_cache_reads counter\nebb_metric_cache_reads_total{result=\"hit\"} 7\n\
                ebb_metric_cache_reads_total{result=\"miss\"} 2\nebb_x 3 1700000000\n";
    assert_eq!(
        sum_samples(text, "ebb_metric_cache_reads_total", &["result=\"hit\""]),
        7.0
    );
    assert_eq!(sum_samples(text, "ebb_metric_cache_reads_total", &[]), 9.0);
    assert_eq!(sum_samples(text, "ebb_x", &[]), 3.0);
    assert_eq!(sum_samples(text, "ebb_metric_cache_reads", &[]), 0.0);

    let start = Instant::now();
    let p = Duration::from_secs(15);
    assert_eq!(due(start, p, 4, 0), start);
    assert_eq!(due(start, p, 4, 2), start + Duration::from_millis(7500));
    assert_eq!(due(start, p, 4, 5), start + Duration::from_millis(18_750));

    // Generated objects are valid ScaledObjects whose trigger builds, and the names match what
    // ebb derives.
    for (text, cached) in [
        (prom_object(7, 30, "http://127.0.0.1:9"), Some(true)),
        // KEDA refuses useCachedMetrics on cron triggers.
        (cron_object(61, 30), None),
    ] {
        let so: ebb::crd::ScaledObject = serde_yaml::from_str(&text).expect("ScaledObject");
        let problems = ebb::scaling::validate::validate_scaled_object(&so);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(so.spec.triggers[0].use_cached_metrics, cached);
    }
    assert_eq!(cron_metric(61), "s0-cron-Etc-UTC-18xxx-018xxx");
    let prom: ebb::crd::ScaledObject =
        serde_yaml::from_str(&prom_object(7, 30, "http://127.0.0.1:9")).expect("ScaledObject");
    assert_eq!(
        prom.spec.triggers[0].metadata.get("query").map(String::as_str),
        Some("sum(ebb_soak_queue_depth{queue=\"q00007\"})")
    );
    let series = series_text(3);
    assert!(series.contains("ebb_soak_queue_depth{queue=\"q00002\"} 3\n"));
    assert_eq!(series.lines().count(), 4);
    assert_eq!(series_value(996), 997);
    assert_eq!(series_value(997), 1);
}
