//! Upstream economy of `ebb metrics-server`, printed (not asserted).
//!
//! 1. Cached reads: 25 ScaledObjects with a prometheus trigger (distinct queries) and 25 with an
//!    aws-sqs-queue trigger (25 queues in moto), all `useCachedMetrics: true` and
//!    `pollingInterval: 5`. R readers over C mutual-TLS connections cycle through the 50 metrics
//!    for `--duration` seconds. Queries that reach the upstreams are counted by a loopback counting
//!    proxy in front of each (per trigger: the Prometheus `query`, the SQS `QueueUrl`) and, for
//!    Prometheus, by its own `prometheus_http_requests_total{handler="/api/v1/query"}` counter
//!    read before and after. Goal: triggers × ceil(duration / interval) queries, ±1 per trigger.
//! 2. Coalescing without the cache: bursts of N simultaneous reads of one uncached metric (one
//!    prometheus, one SQS; `useCachedMetrics: false`), each over its own connection, released by
//!    a barrier; the upstream queries each burst caused are counted. Run with the proxies adding
//!    no delay and with `--burst-delay-ms` added to every upstream answer (a remote upstream).
//!
//! Run with `scripts/bench-upstream` (or `cargo bench --bench upstream_economy -- [flags]`).
//! Everything listens on 127.0.0.1; every loop is bounded in count and in time; ebb, Prometheus
//! and moto are stopped on every exit path (guards dropped on return and on panic; Prometheus also
//! watches this process). Without `--bench` (as `cargo test --benches` runs it) only the
//! self-checks run.

#[allow(dead_code)]
#[path = "../tests/common/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "../tests/common/prometheus.rs"]
mod prometheus;

#[path = "common/mod.rs"]
mod common;
use common::{
    Res,
    client::{REQUEST_TIMEOUT, Sender, client_config, connect, read_each, request},
    ebb::Ebb,
    print_loadavg, print_machine, runtime,
    stats::histogram,
    upstream::{Backend, CountingProxy, classify, parse_prom_counter, per_key, prom_query_counter},
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
use hyper::{StatusCode, header};
use rustls::ClientConfig;

/// moto's default account id (part of its queue URLs).
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// Namespace of every generated object.
const NS: &str = "default";
/// ScaledObjects of the burst part.
const BURST_PROM: &str = "burst-prom";
const BURST_SQS: &str = "burst-sqs";
const BURST_QUEUE: &str = "ebb-burst";

#[derive(Debug, Parser)]
#[command(
    name = "upstream_economy",
    about = "Upstream queries of ebb metrics-server under read load"
)]
struct Opts {
    /// Measured seconds of the cached-read load.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// `pollingInterval` of the cached ScaledObjects, seconds.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// ScaledObjects with a prometheus trigger (and as many with an SQS trigger).
    #[arg(long, default_value_t = 25)]
    per_backend: usize,
    /// Concurrent reader tasks.
    #[arg(long, default_value_t = 100)]
    readers: usize,
    /// Connections the readers share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Use HTTP/2 (readers multiplexed on the connections) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Cap on requests of the load run.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Simultaneous reads in one burst.
    #[arg(long, default_value_t = 100)]
    burst: usize,
    /// Bursts per backend and delay setting.
    #[arg(long, default_value_t = 3)]
    burst_rounds: usize,
    /// Delay the proxies add to every upstream answer in the second burst series, ms.
    #[arg(long, default_value_t = 50)]
    burst_delay_ms: u64,
    /// Skip the cached-read load.
    #[arg(long)]
    skip_load: bool,
    /// Skip the bursts.
    #[arg(long)]
    skip_burst: bool,
    /// Passed by `cargo bench`; without it only the self-checks run.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let opts = Opts::parse();
    if !opts.bench {
        self_check();
        println!("upstream_economy: self-checks passed (run scripts/bench-upstream for the figures)");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = run(&opts) {
        eprintln!("upstream_economy: error: {e}");
        std::process::exit(1);
    }
}

fn run(opts: &Opts) -> Res<()> {
    if opts.duration == 0 || opts.duration > 3600 {
        return Err("--duration must be in 1..=3600".into());
    }
    if opts.interval == 0 || opts.interval > 600 {
        return Err("--interval must be in 1..=600".into());
    }
    if opts.per_backend == 0 || opts.per_backend > 500 {
        return Err("--per-backend must be in 1..=500".into());
    }
    if opts.readers == 0 || opts.readers > 10_000 || opts.connections == 0 || opts.connections > 1024 {
        return Err("--readers must be in 1..=10000 and --connections in 1..=1024".into());
    }
    if opts.burst == 0 || opts.burst > 1000 || opts.burst_rounds > 100 {
        return Err("--burst must be in 1..=1000 and --burst-rounds at most 100".into());
    }
    print_machine();
    let client_rt = runtime("bench-client", 2)?;
    // The proxies get their own worker so the client load does not delay the upstream answers.
    let proxy_rt = runtime("bench-proxy", 1)?;
    let tmp = tempfile::Builder::new().prefix("ebb-upstream-").tempdir()?;

    let t0 = Instant::now();
    let prom = prometheus::PromServer::start();
    let moto = moto::Moto::start();
    println!(
        "upstreams: prometheus {} and moto {} ready in {:.1} s",
        prom.url,
        moto.url,
        t0.elapsed().as_secs_f64()
    );
    let prom_proxy = proxy_rt.block_on(CountingProxy::start(&prom.url, Backend::Prometheus))?;
    let sqs_proxy = proxy_rt.block_on(CountingProxy::start(&moto.url, Backend::Sqs))?;

    let n = opts.per_backend;
    let queues: Vec<String> = (0..n).map(queue_name).chain([BURST_QUEUE.to_string()]).collect();
    client_rt.block_on(create_queues(&moto.url, &queues))?;

    let dir = tmp.path().join("objects");
    std::fs::create_dir_all(&dir)?;
    write_objects(&dir, opts, &prom_proxy.url, &sqs_proxy.url)?;
    let state = tmp.path().join("state");
    let ebb = Ebb::start(&dir, &state, &tmp.path().join("ebb.log"))?;
    client_rt.block_on(ebb.wait_ready())?;
    let cfg = client_config(&state, opts.http2)?;

    // Every metric once: the setup works (and the SDK clients and connections exist).
    let cached: Vec<String> = (0..n)
        .map(|i| metric_path(&prom_so(i), "s0-prometheus"))
        .chain((0..n).map(|i| metric_path(&sqs_so(i), &sqs_metric(&queue_name(i)))))
        .collect();
    let burst_prom = metric_path(BURST_PROM, "s0-prometheus");
    let burst_sqs = metric_path(BURST_SQS, &sqs_metric(BURST_QUEUE));
    let mut all = cached.clone();
    all.extend([burst_prom.clone(), burst_sqs.clone()]);
    let check = client_rt.block_on(read_each(ebb.secure, &all, cfg.clone()));
    if let Err(e) = check {
        return Err(format!("{e}\n{}", ebb.log_tail()).into());
    }
    println!(
        "setup: {} ScaledObjects answer ({} prometheus, {} aws-sqs-queue cached; 2 uncached for the bursts)",
        all.len(),
        n,
        n
    );

    if !opts.skip_load {
        // Let the values of the check expire so the window starts cold, like a fresh server.
        std::thread::sleep(Duration::from_secs(opts.interval) + Duration::from_millis(500));
        cached_load(
            opts,
            &client_rt,
            &ebb,
            &cfg,
            &cached,
            &prom,
            &prom_proxy,
            &sqs_proxy,
        )?;
    }
    if !opts.skip_burst {
        bursts(
            opts,
            &client_rt,
            &ebb,
            &state,
            &prom,
            &prom_proxy,
            &sqs_proxy,
            &burst_prom,
            &burst_sqs,
        )?;
    }
    print_loadavg();
    drop(ebb);
    drop(prom_proxy);
    drop(sqs_proxy);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cached_load(
    opts: &Opts,
    rt: &tokio::runtime::Runtime,
    ebb: &Ebb,
    cfg: &Arc<ClientConfig>,
    paths: &[String],
    prom: &prometheus::PromServer,
    prom_proxy: &CountingProxy,
    sqs_proxy: &CountingProxy,
) -> Res<()> {
    let n = opts.per_backend;
    println!(
        "\n== cached reads: {} triggers (pollingInterval {} s), {} readers over {} {} connections, {} s ==",
        paths.len(),
        opts.interval,
        opts.readers,
        opts.connections,
        if opts.http2 { "HTTP/2" } else { "HTTP/1.1" },
        opts.duration
    );
    let prom_before = rt.block_on(prom_query_counter(&prom.url))?;
    let p0 = prom_proxy.snapshot();
    let s0 = sqs_proxy.snapshot();
    let load = rt.block_on(run_load(ebb.secure, paths, cfg.clone(), opts));
    let p1 = prom_proxy.snapshot();
    let s1 = sqs_proxy.snapshot();
    let prom_after = rt.block_on(prom_query_counter(&prom.url))?;

    let per_trigger_ideal = opts.duration.div_ceil(opts.interval);
    let ideal = paths.len() as u64 * per_trigger_ideal;
    println!(
        "reads served: {} ok ({:.0}/s), {} errors{}",
        load.ok,
        load.ok as f64 / opts.duration as f64,
        load.errors,
        if load.capped { " (request cap reached)" } else { "" }
    );
    if let Some(e) = &load.first_error {
        println!("first error: {e}");
    }
    let prom_keys: Vec<String> = (0..n).map(prom_query).collect();
    let sqs_keys: Vec<String> = (0..n).map(queue_name).collect();
    let prom_rows = per_key(&p0, &p1, &prom_keys);
    let sqs_rows = per_key(&s0, &s1, &sqs_keys);
    let prom_total: u64 = prom_rows.values().sum();
    let sqs_total: u64 = sqs_rows.values().sum();
    let prom_counter = prom_after.total.saturating_sub(prom_before.total);
    let prom_counter_200 = prom_after.ok.saturating_sub(prom_before.ok);
    println!(
        "prometheus /api/v1/query: proxy counted {prom_total}, Prometheus' own counter +{prom_counter} (code 200: +{prom_counter_200}); ideal {}",
        n as u64 * per_trigger_ideal
    );
    println!(
        "sqs GetQueueAttributes: proxy counted {sqs_total} (other SQS calls: {}); ideal {}",
        s1.other.saturating_sub(s0.other),
        n as u64 * per_trigger_ideal
    );
    let total = prom_total + sqs_total;
    let ratio = total as f64 / ideal as f64;
    let mut worst = 0i64;
    let mut off = Vec::new();
    for (key, count) in prom_rows.iter().chain(sqs_rows.iter()) {
        let dev = *count as i64 - per_trigger_ideal as i64;
        worst = if dev.abs() > worst.abs() { dev } else { worst };
        if dev.abs() > 1 {
            off.push(format!("{key}={count}"));
        }
    }
    let histogram = histogram(prom_rows.values().chain(sqs_rows.values()));
    println!("per-trigger queries (count: triggers): {histogram}");
    println!(
        "upstream queries: {total}   ideal {} × {per_trigger_ideal} = {ideal}   ratio {ratio:.3}   max per-trigger deviation {worst:+}",
        paths.len()
    );
    if !off.is_empty() {
        println!("triggers off by more than 1: {}", off.join(" "));
    }
    let met = off.is_empty() && load.errors == 0;
    println!(
        "goal: one query per trigger per interval (±1 per trigger): {}",
        if met { "met" } else { "NOT met" }
    );
    println!(
        "summary reads={} prom_queries={prom_total} prom_counter={prom_counter} sqs_queries={sqs_total} ideal={ideal} ratio={ratio:.3} max_dev={worst:+}",
        load.ok
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bursts(
    opts: &Opts,
    rt: &tokio::runtime::Runtime,
    ebb: &Ebb,
    state: &Path,
    prom: &prometheus::PromServer,
    prom_proxy: &CountingProxy,
    sqs_proxy: &CountingProxy,
    burst_prom: &str,
    burst_sqs: &str,
) -> Res<()> {
    // One connection per read: HTTP/1.1 has one request in flight per connection.
    let cfg = client_config(state, false)?;
    println!(
        "\n== bursts: {} simultaneous reads of one uncached metric, each on its own connection ==",
        opts.burst
    );
    println!(
        "{:<11} {:>9} {:>6} {:>8} {:>10} {:>9} {:>9}",
        "backend", "delay ms", "round", "reads ok", "upstream", "prom ctr", "spread ms"
    );
    let mut summary = Vec::new();
    for delay in [0, opts.burst_delay_ms] {
        for (label, proxy, path) in [
            ("prometheus", prom_proxy, burst_prom),
            ("sqs", sqs_proxy, burst_sqs),
        ] {
            proxy.delay_ms.store(delay, Ordering::Relaxed);
            let mut counts = Vec::new();
            for round in 1..=opts.burst_rounds {
                let before = proxy.snapshot();
                let ctr_before = rt.block_on(prom_query_counter(&prom.url))?;
                let b = rt.block_on(burst(ebb.secure, path, cfg.clone(), opts.burst))?;
                let after = proxy.snapshot();
                let ctr_after = rt.block_on(prom_query_counter(&prom.url))?;
                let up = after.total.saturating_sub(before.total);
                let ctr = if label == "prometheus" {
                    ctr_after.total.saturating_sub(ctr_before.total).to_string()
                } else {
                    "-".into()
                };
                println!(
                    "{label:<11} {delay:>9} {round:>6} {:>8} {up:>10} {ctr:>9} {:>9.1}",
                    b.ok, b.spread_ms
                );
                if let Some(e) = &b.first_error {
                    println!("            first error: {e}");
                }
                counts.push(up);
            }
            summary.push(format!(
                "burst_{label}_delay{delay}={}",
                counts.iter().map(u64::to_string).collect::<Vec<_>>().join("/")
            ));
        }
    }
    prom_proxy.delay_ms.store(0, Ordering::Relaxed);
    sqs_proxy.delay_ms.store(0, Ordering::Relaxed);
    println!("summary {}", summary.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The generated objects.

fn prom_so(i: usize) -> String {
    format!("econ-prom-{i:02}")
}

fn sqs_so(i: usize) -> String {
    format!("econ-sqs-{i:02}")
}

fn queue_name(i: usize) -> String {
    format!("ebb-econ-{i:02}")
}

fn prom_query(i: usize) -> String {
    format!("sum(ebb_test_queue_depth) + {i}")
}

fn sqs_metric(queue: &str) -> String {
    format!("s0-aws-sqs-{queue}")
}

fn metric_path(so: &str, metric: &str) -> String {
    common::client::metric_path(NS, so, metric)
}

fn scaled_object(name: &str, interval: u64, cached: bool, trigger: &str) -> String {
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
  - useCachedMetrics: {cached}
{trigger}"
    )
}

fn prom_trigger(server: &str, query: &str) -> String {
    format!(
        "    type: prometheus
    metadata:
      serverAddress: \"{server}\"
      query: \"{query}\"
      threshold: \"10\"
"
    )
}

fn sqs_trigger(endpoint: &str, queue: &str) -> String {
    format!(
        "    type: aws-sqs-queue
    authenticationRef:
      name: sqs-keys
    metadata:
      queueURL: \"{endpoint}/{ACCOUNT}/{queue}\"
      awsRegion: \"{REGION}\"
      awsEndpoint: \"{endpoint}\"
      queueLength: \"5\"
"
    )
}

const AUTH: &str = "apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: sqs-keys
  namespace: default
spec:
  secretTargetRef:
  - parameter: awsAccessKeyID
    name: sqs-keys
    key: id
  - parameter: awsSecretAccessKey
    name: sqs-keys
    key: secret
---
apiVersion: v1
kind: Secret
metadata:
  name: sqs-keys
  namespace: default
data:
  id: dGVzdGluZw==
  secret: dGVzdGluZw==
";

fn write_objects(dir: &Path, opts: &Opts, prom: &str, sqs: &str) -> Res<()> {
    std::fs::write(dir.join("auth.yaml"), AUTH)?;
    let join = |docs: Vec<String>| docs.join("---\n");
    let n = opts.per_backend;
    let proms = (0..n)
        .map(|i| {
            scaled_object(
                &prom_so(i),
                opts.interval,
                true,
                &prom_trigger(prom, &prom_query(i)),
            )
        })
        .collect();
    std::fs::write(dir.join("prometheus.yaml"), join(proms))?;
    let sqss = (0..n)
        .map(|i| scaled_object(&sqs_so(i), opts.interval, true, &sqs_trigger(sqs, &queue_name(i))))
        .collect();
    std::fs::write(dir.join("sqs.yaml"), join(sqss))?;
    let burst = vec![
        scaled_object(
            BURST_PROM,
            opts.interval,
            false,
            &prom_trigger(prom, "sum(ebb_test_queue_depth) + 1000"),
        ),
        scaled_object(BURST_SQS, opts.interval, false, &sqs_trigger(sqs, BURST_QUEUE)),
    ];
    std::fs::write(dir.join("burst.yaml"), join(burst))?;
    Ok(())
}

/// Creates the queues in moto (query protocol with a dummy signature: moto does not check it).
async fn create_queues(moto: &str, names: &[String]) -> Res<()> {
    let client = reqwest::Client::new();
    for name in names {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "CreateQueue")
            .append_pair("QueueName", name)
            .append_pair("Version", "2012-11-05")
            .finish();
        let resp = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client
                .post(format!("{moto}/"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                // moto routes by the service of the credential scope; the signature is not checked.
                .header(
                    header::AUTHORIZATION,
                    format!(
                        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/sqs/aws4_request, SignedHeaders=host, Signature=0"
                    ),
                )
                .body(body)
                .send(),
        )
        .await??;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("CreateQueue {name}: {status}: {text}").into());
        }
    }
    Ok(())
}

/// One shared connection: HTTP/1.1 readers hold the lock for their request, HTTP/2 readers clone
/// the sender out of it. `None` after a transport error; the next reader reconnects.
type Slot = Arc<tokio::sync::Mutex<Option<Sender>>>;

#[derive(Debug, Default)]
struct LoadOutcome {
    ok: u64,
    errors: u64,
    capped: bool,
    first_error: Option<String>,
}

async fn run_load(addr: SocketAddr, paths: &[String], cfg: Arc<ClientConfig>, opts: &Opts) -> LoadOutcome {
    let end = Instant::now() + Duration::from_secs(opts.duration);
    let issued = Arc::new(AtomicU64::new(0));
    let slots: Vec<Slot> = (0..opts.connections).map(|_| Slot::default()).collect();
    let paths = Arc::new(paths.to_vec());
    let mut tasks = Vec::with_capacity(opts.readers);
    for r in 0..opts.readers {
        let (slot, paths, cfg, issued) = (
            slots[r % slots.len()].clone(),
            paths.clone(),
            cfg.clone(),
            issued.clone(),
        );
        let max = opts.max_requests;
        tasks.push(tokio::spawn(async move {
            let mut out = LoadOutcome::default();
            let mut k = r;
            while Instant::now() < end {
                if issued.fetch_add(1, Ordering::Relaxed) >= max {
                    out.capped = true;
                    break;
                }
                let path = &paths[k % paths.len()];
                k += 1;
                let result = {
                    let mut guard = slot.lock().await;
                    if guard.is_none() {
                        match connect(addr, cfg.clone()).await {
                            Ok(s) => *guard = Some(s),
                            Err(e) => {
                                out.errors += 1;
                                out.first_error.get_or_insert_with(|| format!("connect: {e}"));
                                drop(guard);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let Some(sender) = guard.as_mut() else { continue };
                    match sender {
                        Sender::H1(_) => request(sender, addr, path).await,
                        Sender::H2(h2) => {
                            let mut s = Sender::H2(h2.clone());
                            drop(guard);
                            let r = request(&mut s, addr, path).await;
                            if r.is_err() {
                                *slot.lock().await = None;
                            }
                            r
                        }
                    }
                };
                match result {
                    Ok((StatusCode::OK, _)) => out.ok += 1,
                    Ok((status, body)) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| {
                            format!(
                                "{path}: {status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            )
                        });
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| format!("{path}: {e}"));
                        *slot.lock().await = None;
                    }
                }
            }
            out
        }));
    }
    let mut total = LoadOutcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => {
                total.ok += o.ok;
                total.errors += o.errors;
                total.capped |= o.capped;
                if total.first_error.is_none() {
                    total.first_error = o.first_error;
                }
            }
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| format!("task: {e}"));
            }
        }
    }
    total
}

struct BurstOutcome {
    ok: u64,
    /// Time between the first and the last answer.
    spread_ms: f64,
    first_error: Option<String>,
}

/// `n` reads of `path`, each on its own (already connected) HTTP/1.1 connection, released at once.
async fn burst(addr: SocketAddr, path: &str, cfg: Arc<ClientConfig>, n: usize) -> Res<BurstOutcome> {
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        senders.push(connect(addr, cfg.clone()).await?);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for mut s in senders {
        let (barrier, path) = (barrier.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = request(&mut s, addr, &path).await;
            (r, Instant::now())
        }));
    }
    let mut out = BurstOutcome {
        ok: 0,
        spread_ms: 0.0,
        first_error: None,
    };
    let mut done = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok((Ok((StatusCode::OK, _)), at)) => {
                out.ok += 1;
                done.push(at);
            }
            Ok((Ok((status, body)), _)) => {
                out.first_error.get_or_insert_with(|| {
                    format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    )
                });
            }
            Ok((Err(e), _)) => {
                out.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                out.first_error.get_or_insert_with(|| format!("task: {e}"));
            }
        }
    }
    if let (Some(a), Some(b)) = (done.iter().min(), done.iter().max()) {
        out.spread_ms = b.duration_since(*a).as_secs_f64() * 1000.0;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Output.

// ---------------------------------------------------------------------------------------------
// Self-checks of the pure pieces (run when the binary is started without `--bench`).

fn self_check() {
    let text = "# HELP x\nprometheus_http_requests_total{code=\"200\",handler=\"/api/v1/query\"} 7\n\
                prometheus_http_requests_total{code=\"400\",handler=\"/api/v1/query\"} 2\n\
                prometheus_http_requests_total{code=\"200\",handler=\"/api/v1/query_range\"} 5\n";
    let c = parse_prom_counter(text);
    assert_eq!((c.total, c.ok), (9, 7));

    let h = http::HeaderMap::new();
    assert_eq!(
        classify(
            Backend::Prometheus,
            "/api/v1/query",
            Some("query=sum%28ebb_test_queue_depth%29+%2B+3&time=1"),
            &h,
            b""
        )
        .as_deref(),
        Some("sum(ebb_test_queue_depth) + 3")
    );
    assert_eq!(classify(Backend::Prometheus, "/metrics", None, &h, b""), None);
    let mut json = http::HeaderMap::new();
    json.insert(
        "x-amz-target",
        http::HeaderValue::from_static("AmazonSQS.GetQueueAttributes"),
    );
    assert_eq!(
        classify(
            Backend::Sqs,
            "/",
            None,
            &json,
            br#"{"QueueUrl":"http://127.0.0.1:1/123456789012/ebb-econ-04","AttributeNames":[]}"#
        )
        .as_deref(),
        Some("ebb-econ-04")
    );
    assert_eq!(
        classify(
            Backend::Sqs,
            "/",
            None,
            &h,
            b"Action=GetQueueAttributes&QueueUrl=http%3A%2F%2Fx%2F1%2Febb-econ-09"
        )
        .as_deref(),
        Some("ebb-econ-09")
    );
    assert_eq!(classify(Backend::Sqs, "/", None, &h, b"Action=CreateQueue"), None);

    let opts = Opts::parse_from(["upstream_economy"]);
    let dir = tempfile::tempdir().expect("tempdir");
    write_objects(dir.path(), &opts, "http://127.0.0.1:1", "http://127.0.0.1:2").expect("write");
    let mut docs = 0;
    for file in ["auth.yaml", "prometheus.yaml", "sqs.yaml", "burst.yaml"] {
        let text = std::fs::read_to_string(dir.path().join(file)).expect("read");
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).expect("generated YAML parses");
            docs += 1;
            if v["kind"].as_str() == Some("ScaledObject") {
                assert_eq!(v["spec"]["pollingInterval"].as_u64(), Some(5));
                assert!(v["spec"]["triggers"][0]["useCachedMetrics"].as_bool().is_some());
            }
        }
    }
    assert_eq!(docs, 2 + 25 + 25 + 2);
    assert_eq!(
        metric_path("a", "m"),
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/m?labelSelector=scaledobject.keda.sh%2Fname%3Da"
    );
    assert_eq!(histogram([3u64, 3, 4].iter()), "3: 2, 4: 1");
}
