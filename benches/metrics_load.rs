//! Performance figures of `ebb metrics-server`, printed (not asserted).
//!
//! 1. Throughput: the real binary, serving one cached `metrics-api` value over mutual TLS, against a
//!    bare tokio-rustls + hyper responder that answers every request with the same bytes. Both are
//!    driven by the same client, over HTTP/1.1 keep-alive (C connections) and over one HTTP/2
//!    connection (C streams); runs are interleaved bare, ebb, bare, ebb. Goal: ebb/bare ≥ 0.8.
//! 2. Memory: RSS of ebb holding 10,000 cron ScaledObjects, idle and after 1,000 metric reads, next
//!    to the RSS of ebb with one ScaledObject. Goal: ≤ 40 MiB.
//!
//! Run with `scripts/bench` (or `cargo bench --bench metrics_load -- [flags]`). Everything listens
//! on 127.0.0.1; every loop is bounded in count and in time; child processes are killed on every
//! exit path. Without `--bench` (as `cargo test --benches` runs it) only the self-checks run.

#[path = "common/mod.rs"]
mod common;
use common::{
    BoxError, Res,
    ebb::Ebb,
    names::{cron_metric_name, normalize},
    print_loadavg, print_machine,
    procfs::{mib, parse_status, rss, settle_rss},
    runtime,
    stats::percentile,
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

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ClientConfig, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Timeout of one request of the load client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long RSS is watched for stability.
const RSS_SETTLE: Duration = Duration::from_secs(10);
/// The value the bench's JSON endpoint serves.
const JSON_VALUE: &str = "42";
/// Name of the ScaledObject of part 1.
const LOAD_SO: &str = "load-target";

#[derive(Debug, Parser)]
#[command(
    name = "metrics_load",
    about = "Throughput and memory figures of ebb metrics-server"
)]
struct Opts {
    /// Measured seconds of each load run (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Concurrent HTTP/1.1 connections, and concurrent streams on the one HTTP/2 connection.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// ScaledObjects generated for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Cap on requests of one load run (warm-up included).
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Skip the memory figure with many ScaledObjects.
    #[arg(long)]
    skip_rss: bool,
    /// Memory figure with a third each of cron, prometheus and metrics-api ScaledObjects
    /// (scalers with HTTP clients) instead of cron only; reads go to the cron ones.
    #[arg(long)]
    mixed: bool,
    /// Skip the throughput runs (the one-object RSS baseline is still measured).
    #[arg(long)]
    skip_load: bool,
    /// Only drive the bare responder, with certificates generated here (checks the harness
    /// without a working ebb).
    #[arg(long)]
    bare_only: bool,
    /// Drive ebb on this path instead of the metric (attribution, e.g. `/healthz`: TLS, HTTP and
    /// authentication without the metric read); the bare responder still answers the metric bytes.
    #[arg(long)]
    ebb_path: Option<String>,
    /// Passed by `cargo bench`; without it only the self-checks run.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let opts = Opts::parse();
    if !opts.bench {
        self_check();
        println!("metrics_load: self-checks passed (run scripts/bench for the figures)");
        return;
    }
    // Both rustls backends may be compiled in through other crates; the bench uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = run(&opts) {
        eprintln!("metrics_load: error: {e}");
        std::process::exit(1);
    }
}

fn run(opts: &Opts) -> Res<()> {
    if !(opts.duration > 0.0 && opts.duration <= 600.0) {
        return Err("--duration must be in (0, 600]".into());
    }
    if opts.connections == 0 || opts.connections > 4096 {
        return Err("--connections must be in 1..=4096".into());
    }
    // The client (and the JSON endpoint) and the bare responder each get their own runtime with
    // two workers, like ebb's own runtime on a 2-core machine.
    let client_rt = runtime("bench-client", 2)?;
    let bare_rt = runtime("bench-bare", 2)?;
    let tmp = tempfile::Builder::new().prefix("ebb-bench-").tempdir()?;
    print_machine();

    if opts.bare_only {
        let certs = Certs::generate()?;
        let body = Bytes::from_static(br#"{"kind":"ExternalMetricValueList","items":[]}"#);
        let bare = bare_rt.block_on(spawn_bare(server_config(&certs)?, body))?;
        let path = "/bench".to_string();
        for proto in [Proto::H1, Proto::H2] {
            let cfg = client_config(&certs, proto)?;
            let r = client_rt.block_on(run_load(&load_spec(opts, bare, &path, proto), cfg));
            print_header(opts, proto);
            print_row("bare", "1", &r, opts.duration);
        }
        return Ok(());
    }

    if !opts.skip_load || !opts.skip_rss {
        part_one(opts, &client_rt, &bare_rt, tmp.path())?;
    }
    if !opts.skip_rss {
        part_two(opts, &client_rt, tmp.path())?;
    }
    print_loadavg();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 1: throughput ratio, and the one-object RSS baseline.

fn part_one(
    opts: &Opts,
    client_rt: &tokio::runtime::Runtime,
    bare_rt: &tokio::runtime::Runtime,
    tmp: &Path,
) -> Res<()> {
    let json = client_rt.block_on(spawn_json_endpoint())?;
    let dir = tmp.join("one");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("load.yaml"), load_scaled_object(json))?;
    let state = tmp.join("state-one");
    let ebb = Ebb::start(&dir, &state, &tmp.join("ebb-one.log"))?;
    client_rt.block_on(ebb.wait_ready())?;

    let certs = Certs::from_state_dir(&state)?;
    let path = metric_path(LOAD_SO, &metric_name_metrics_api("v"));
    // Warm the cache and capture the exact bytes the bare responder will serve.
    let cfg1 = client_config(&certs, Proto::H1)?;
    let (status, body) = client_rt.block_on(get_once(ebb.secure, &path, cfg1.clone()))?;
    if status != StatusCode::OK {
        return Err(format!(
            "ebb answered {status} to {path}: {}\n{}",
            String::from_utf8_lossy(&body),
            ebb.log_tail()
        )
        .into());
    }
    let value = serde_json::from_slice::<serde_json::Value>(&body)?
        .pointer("/items/0/value")
        .and_then(|v| v.as_str().map(str::to_string));
    if value.as_deref() != Some(JSON_VALUE) {
        return Err(format!(
            "ebb's answer lacks \"value\":\"{JSON_VALUE}\": {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    println!(
        "ebb metric body ({} bytes): {}",
        body.len(),
        String::from_utf8_lossy(&body)
    );

    let baseline = settle_rss(ebb.pid(), RSS_SETTLE)?;
    println!(
        "rss one ScaledObject (idle): rss_mib={:.1} hwm_mib={:.1}",
        mib(baseline.rss_kib),
        mib(baseline.hwm_kib)
    );

    if !opts.skip_load {
        let bare = bare_rt.block_on(spawn_bare(server_config(&certs)?, body))?;
        let mut summary = Vec::new();
        for proto in [Proto::H1, Proto::H2] {
            let cfg = client_config(&certs, proto)?;
            print_header(opts, proto);
            let mut runs: Vec<(&str, LoadResult)> = Vec::new();
            for round in 1..=2 {
                for (name, addr) in [("bare", bare), ("ebb", ebb.secure)] {
                    let path = if name == "ebb" {
                        opts.ebb_path.as_ref().unwrap_or(&path)
                    } else {
                        &path
                    };
                    let r = client_rt.block_on(run_load(&load_spec(opts, addr, path, proto), cfg.clone()));
                    print_row(name, &round.to_string(), &r, opts.duration);
                    runs.push((name, r));
                }
            }
            let mean = |target: &str, f: &dyn Fn(&LoadResult) -> f64| {
                let v: Vec<f64> = runs
                    .iter()
                    .filter(|(n, _)| *n == target)
                    .map(|(_, r)| f(r))
                    .collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            let rps = |r: &LoadResult| r.requests as f64 / opts.duration;
            let (bare_rps, ebb_rps) = (mean("bare", &rps), mean("ebb", &rps));
            for target in ["bare", "ebb"] {
                println!(
                    "{target:<6} {:<5} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>7}",
                    "mean",
                    "",
                    mean(target, &rps),
                    mean(target, &|r| r.percentile_ms(50.0)),
                    mean(target, &|r| r.percentile_ms(99.0)),
                    runs.iter()
                        .filter(|(n, _)| *n == target)
                        .map(|(_, r)| r.errors)
                        .sum::<u64>()
                );
            }
            let ratio = if bare_rps > 0.0 { ebb_rps / bare_rps } else { 0.0 };
            println!(
                "ratio ebb/bare req/s ({}): {ratio:.2}   goal >= 0.80: {}",
                proto.label(),
                if ratio >= 0.8 { "met" } else { "NOT met" }
            );
            summary.push((proto, ratio));
        }
        let after = rss(ebb.pid())?;
        println!(
            "rss one ScaledObject (after load): rss_mib={:.1} hwm_mib={:.1}",
            mib(after.rss_kib),
            mib(after.hwm_kib)
        );
        for (proto, ratio) in summary {
            println!("summary throughput_ratio_{}={ratio:.2}", proto.key());
        }
    }
    println!("summary rss_one_object_mib={:.1}", mib(baseline.rss_kib));
    drop(ebb);
    Ok(())
}

/// The ScaledObject of part 1: one cached `metrics-api` trigger reading the bench's endpoint.
fn load_scaled_object(json: SocketAddr) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {LOAD_SO}
  namespace: default
spec:
  scaleTargetRef:
    name: {LOAD_SO}
  pollingInterval: 30
  triggers:
  - type: metrics-api
    useCachedMetrics: true
    metadata:
      url: \"http://{json}/value.json\"
      valueLocation: \"v\"
      targetValue: \"10\"
"
    )
}

/// Plain-HTTP endpoint answering `{"v": 42}` to every request.
async fn spawn_json_endpoint() -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    let body = format!("{{\"v\": {JSON_VALUE}}}");
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// Part 2: RSS with many ScaledObjects.

fn part_two(opts: &Opts, client_rt: &tokio::runtime::Runtime, tmp: &Path) -> Res<()> {
    let n = opts.objects.max(1);
    let dir = tmp.join("many");
    std::fs::create_dir_all(&dir)?;
    let per_file = 100;
    let t0 = Instant::now();
    for (file, chunk) in (0..n).collect::<Vec<_>>().chunks(per_file).enumerate() {
        let text = scaled_objects(chunk.iter().copied(), opts.mixed);
        std::fs::write(dir.join(format!("cron-{file:03}.yaml")), text)?;
    }
    println!(
        "\n== memory: {n} {} ScaledObjects in {} files ({:.1} s to write) ==",
        if opts.mixed {
            "cron/prometheus/metrics-api"
        } else {
            "cron"
        },
        n.div_ceil(per_file),
        t0.elapsed().as_secs_f64()
    );
    let state = tmp.join("state-many");
    let ebb = Ebb::start(&dir, &state, &tmp.join("ebb-many.log"))?;
    let started = Instant::now();
    client_rt.block_on(ebb.wait_ready())?;
    println!("ready after {:.2} s", started.elapsed().as_secs_f64());
    let idle = settle_rss(ebb.pid(), RSS_SETTLE)?;

    let certs = Certs::from_state_dir(&state)?;
    let cfg = client_config(&certs, Proto::H1)?;
    let metric = metric_name_cron();
    let reads = 1000usize;
    let paths: Vec<String> = (0..reads)
        // With --mixed every third object is a cron one: read only those.
        .map(|k| {
            let i = k * n / reads;
            metric_path(&cron_name(if opts.mixed { i / 3 * 3 } else { i }), &metric)
        })
        .collect();
    let t1 = Instant::now();
    let outcome = client_rt.block_on(fetch_all(ebb.secure, paths, cfg, 4));
    println!(
        "{reads} reads over {} objects: ok={} errors={} in {:.2} s",
        n.min(reads),
        outcome.ok,
        outcome.errors,
        t1.elapsed().as_secs_f64()
    );
    if let Some(first) = &outcome.first_error {
        println!("first error: {first}");
    }
    let after = rss(ebb.pid())?;
    println!("rss_idle_mib={:.1}", mib(idle.rss_kib));
    println!("rss_after_reads_mib={:.1}", mib(after.rss_kib));
    println!("hwm_mib={:.1}", mib(after.hwm_kib));
    let worst = mib(after.rss_kib.max(idle.rss_kib));
    println!(
        "goal <= 40 MiB with {n} ScaledObjects: {}",
        if worst <= 40.0 { "met" } else { "NOT met" }
    );
    println!(
        "summary rss_idle_mib={:.1} rss_after_reads_mib={:.1} hwm_mib={:.1}",
        mib(idle.rss_kib),
        mib(after.rss_kib),
        mib(after.hwm_kib)
    );
    drop(ebb);
    Ok(())
}

fn cron_name(i: usize) -> String {
    format!("cron-{i:05}")
}

/// One YAML stream of ScaledObjects, `---`-separated: cron ones, or with `mixed` a third each
/// of cron, prometheus and metrics-api (their upstream is a closed loopback port; the memory
/// figure never reads them).
fn scaled_objects(indices: impl Iterator<Item = usize>, mixed: bool) -> String {
    let mut out = String::new();
    for (k, i) in indices.enumerate() {
        if k > 0 {
            out.push_str("---\n");
        }
        let name = cron_name(i);
        let trigger = match (mixed, i % 3) {
            (true, 1) => format!(
                "  - type: prometheus
    metadata:
      serverAddress: http://127.0.0.1:9
      query: sum(rate(http_requests_total{{app=\"{name}\"}}[2m]))
      threshold: \"100\"
"
            ),
            (true, 2) => format!(
                "  - type: metrics-api
    metadata:
      url: http://127.0.0.1:9/queues/{name}
      valueLocation: depth
      targetValue: \"10\"
"
            ),
            _ => "  - type: cron
    metadata:
      timezone: Etc/UTC
      start: \"0 8 * * *\"
      end: \"0 18 * * *\"
      desiredReplicas: \"3\"
"
            .to_string(),
        };
        out.push_str(&format!(
            "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {name}
  namespace: default
spec:
  scaleTargetRef:
    name: {name}
  triggers:
{trigger}"
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Metric names and paths, as KEDA builds them.

fn metric_name_metrics_api(value_location: &str) -> String {
    format!("s0-{}", normalize(&format!("metric-api-{value_location}")))
}

/// The cron trigger's name for `Etc/UTC`, `0 8 * * *`, `0 18 * * *`.
fn metric_name_cron() -> String {
    cron_metric_name("Etc/UTC", "0 8 * * *", "0 18 * * *")
}

fn metric_path(so: &str, metric: &str) -> String {
    common::client::metric_path("default", so, metric)
}

// ---------------------------------------------------------------------------------------------
// TLS material.

struct Certs {
    ca: Vec<CertificateDer<'static>>,
    serving: Vec<CertificateDer<'static>>,
    serving_key: PrivateKeyDer<'static>,
    client: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
}

impl Certs {
    /// What `ebb --local` wrote; the bare responder presents ebb's own serving chain.
    fn from_state_dir(dir: &Path) -> Res<Self> {
        let certs = |name: &str| -> Res<Vec<CertificateDer<'static>>> {
            let v = CertificateDer::pem_file_iter(dir.join(name))?.collect::<Result<Vec<_>, _>>()?;
            if v.is_empty() {
                return Err(format!("no certificate in {}", dir.join(name).display()).into());
            }
            Ok(v)
        };
        Ok(Self {
            ca: certs("ca.crt")?,
            serving: certs("serving.crt")?,
            serving_key: PrivateKeyDer::from_pem_file(dir.join("serving.key"))?,
            client: certs("client.crt")?,
            client_key: PrivateKeyDer::from_pem_file(dir.join("client.key"))?,
        })
    }

    /// A CA, a serving certificate for 127.0.0.1 and a client certificate, made here.
    fn generate() -> Res<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "metrics-load-bench-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "bench-client");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        Ok(Self {
            ca: vec![ca_cert.der().clone()],
            serving: vec![server_cert.der().clone()],
            serving_key: PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes())?,
            client: vec![client_cert.der().clone()],
            client_key: PrivateKeyDer::from_pem_slice(client_key.serialize_pem().as_bytes())?,
        })
    }

    fn roots(&self) -> Res<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        Ok(roots)
    }
}

/// The bare responder's TLS: same chain as ebb, client certificate requested but optional.
fn server_config(certs: &Certs) -> Res<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder(Arc::new(certs.roots()?))
        .allow_unauthenticated()
        .build()?;
    let mut cfg = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.serving.clone(), certs.serving_key.clone_key())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn client_config(certs: &Certs, proto: Proto) -> Res<Arc<ClientConfig>> {
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(certs.roots()?)
        .with_client_auth_cert(certs.client.clone(), certs.client_key.clone_key())?;
    cfg.alpn_protocols = vec![proto.alpn().to_vec()];
    Ok(Arc::new(cfg))
}

// ---------------------------------------------------------------------------------------------
// The bare responder.

async fn spawn_bare(cfg: Arc<ServerConfig>, body: Bytes) -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        Response::builder()
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(Full::new(body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// The client.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn alpn(self) -> &'static [u8] {
        match self {
            Proto::H1 => b"http/1.1",
            Proto::H2 => b"h2",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

struct LoadSpec {
    addr: SocketAddr,
    path: String,
    proto: Proto,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    max_requests: u64,
}

fn load_spec(opts: &Opts, addr: SocketAddr, path: &str, proto: Proto) -> LoadSpec {
    LoadSpec {
        addr,
        path: path.to_string(),
        proto,
        concurrency: opts.connections,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(opts.duration),
        max_requests: opts.max_requests,
    }
}

#[derive(Debug, Default)]
struct LoadResult {
    /// Successful requests started inside the measured window.
    requests: u64,
    /// Failed requests (transport errors, timeouts, non-200) inside the measured window.
    errors: u64,
    /// Latencies of the successful measured requests, microseconds.
    latencies_us: Vec<u32>,
    /// Whether the request cap ended the run early.
    capped: bool,
    first_error: Option<String>,
}

impl LoadResult {
    fn merge(&mut self, other: LoadResult) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
        self.capped |= other.capped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p).map_or(f64::NAN, |us| f64::from(us) / 1000.0)
    }
}

/// Shared clock and request budget of one load run.
struct Window {
    measure_from: Instant,
    end: Instant,
    issued: AtomicU64,
    max: u64,
}

impl Window {
    /// Takes one request from the budget; `None` once the time or the count is used up.
    fn next(&self) -> Option<(Instant, bool)> {
        let now = Instant::now();
        if now >= self.end {
            return None;
        }
        if self.issued.fetch_add(1, Ordering::Relaxed) >= self.max {
            return None;
        }
        Some((now, now >= self.measure_from))
    }
}

#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn connect(addr: SocketAddr, cfg: Arc<ClientConfig>, proto: Proto) -> Res<Sender> {
    let tcp = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr)).await??;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio::time::timeout(REQUEST_TIMEOUT, TlsConnector::from(cfg).connect(name, tcp)).await??;
    let io = TokioIo::new(tls);
    match proto {
        Proto::H1 => {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H1(Arc::new(tokio::sync::Mutex::new(send))))
        }
        Proto::H2 => {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2(send))
        }
    }
}

/// One request; `Ok(status, body)` or a transport error (after which an HTTP/1.1 connection is
/// replaced).
async fn request(sender: &Sender, addr: SocketAddr, path: &str) -> Res<(StatusCode, Bytes)> {
    let fut = async {
        let resp = match sender {
            Sender::H1(s) => {
                let req = Request::get(path)
                    .header(header::HOST, addr.to_string())
                    .body(Empty::<Bytes>::new())?;
                let mut s = s.lock().await;
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                let req = Request::get(format!("https://{addr}{path}")).body(Empty::<Bytes>::new())?;
                let mut s = s.clone();
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut).await?
}

async fn run_load(spec: &LoadSpec, cfg: Arc<ClientConfig>) -> LoadResult {
    let start = Instant::now();
    let window = Arc::new(Window {
        measure_from: start + spec.warmup,
        end: start + spec.warmup + spec.duration,
        issued: AtomicU64::new(0),
        max: spec.max_requests,
    });
    // HTTP/2: one shared connection, C concurrent streams.
    let shared = if spec.proto == Proto::H2 {
        match connect(spec.addr, cfg.clone(), Proto::H2).await {
            Ok(s) => Some(s),
            Err(e) => {
                return LoadResult {
                    errors: 1,
                    first_error: Some(format!("connect: {e}")),
                    ..Default::default()
                };
            }
        }
    } else {
        None
    };
    let mut tasks = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        let window = window.clone();
        let cfg = cfg.clone();
        let shared = shared.clone();
        let (addr, path, proto) = (spec.addr, spec.path.clone(), spec.proto);
        tasks.push(tokio::spawn(async move {
            let mut out = LoadResult::default();
            let mut sender = shared.clone();
            let note = |out: &mut LoadResult, measured: bool, e: String| {
                if measured {
                    out.errors += 1;
                }
                if out.first_error.is_none() {
                    out.first_error = Some(e);
                }
            };
            while let Some((t0, measured)) = window.next() {
                let s = match &sender {
                    Some(s) => s.clone(),
                    None => match connect(addr, cfg.clone(), proto).await {
                        Ok(s) => {
                            sender = Some(s.clone());
                            s
                        }
                        Err(e) => {
                            note(&mut out, measured, format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                match request(&s, addr, &path).await {
                    Ok((StatusCode::OK, _)) => {
                        if measured {
                            out.requests += 1;
                            let us = t0.elapsed().as_micros();
                            out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                    }
                    Ok((status, body)) => note(
                        &mut out,
                        measured,
                        format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        ),
                    ),
                    Err(e) => {
                        note(&mut out, measured, format!("request: {e}"));
                        if proto == Proto::H1 {
                            sender = None;
                        } else {
                            // A broken HTTP/2 connection is not replaced; stop this stream.
                            break;
                        }
                    }
                }
            }
            out.capped = window.issued.load(Ordering::Relaxed) >= window.max;
            out
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        match t.await {
            Ok(r) => total.merge(r),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| format!("task: {e}"));
            }
        }
    }
    total.latencies_us.sort_unstable();
    total
}

/// GET one path over mutual TLS and HTTP/1.1.
async fn get_once(addr: SocketAddr, path: &str, cfg: Arc<ClientConfig>) -> Res<(StatusCode, Bytes)> {
    let s = connect(addr, cfg, Proto::H1).await?;
    request(&s, addr, path).await
}

struct FetchOutcome {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// GETs every path once over `conns` HTTP/1.1 connections.
async fn fetch_all(
    addr: SocketAddr,
    paths: Vec<String>,
    cfg: Arc<ClientConfig>,
    conns: usize,
) -> FetchOutcome {
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        let (paths, next, cfg) = (paths.clone(), next.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = FetchOutcome {
                ok: 0,
                errors: 0,
                first_error: None,
            };
            let mut sender: Option<Sender> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(path) = paths.get(i) else { break };
                if Instant::now() >= deadline {
                    out.errors += 1;
                    out.first_error.get_or_insert_with(|| "deadline".into());
                    continue;
                }
                if sender.is_none() {
                    sender = connect(addr, cfg.clone(), Proto::H1).await.ok();
                }
                let Some(s) = &sender else {
                    out.errors += 1;
                    out.first_error.get_or_insert_with(|| "connect failed".into());
                    continue;
                };
                match request(s, addr, path).await {
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
                        sender = None;
                    }
                }
            }
            out
        }));
    }
    let mut total = FetchOutcome {
        ok: 0,
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        if let Ok(o) = t.await {
            total.ok += o.ok;
            total.errors += o.errors;
            if total.first_error.is_none() {
                total.first_error = o.first_error;
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Output.

fn print_header(opts: &Opts, proto: Proto) {
    let how = match proto {
        Proto::H1 => format!("{} keep-alive connections", opts.connections),
        Proto::H2 => format!("1 connection, {} concurrent streams", opts.connections),
    };
    println!(
        "\n== throughput: {}, {how}, {} s each after 1 s warm-up ==",
        proto.label(),
        opts.duration
    );
    println!(
        "{:<6} {:<5} {:>9} {:>10} {:>8} {:>8} {:>7}",
        "target", "run", "requests", "req/s", "p50 ms", "p99 ms", "errors"
    );
}

fn print_row(name: &str, run: &str, r: &LoadResult, duration: f64) {
    println!(
        "{name:<6} {run:<5} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>7}{}",
        r.requests,
        r.requests as f64 / duration,
        r.percentile_ms(50.0),
        r.percentile_ms(99.0),
        r.errors,
        if r.capped {
            "  (request cap reached: raise --max-requests)"
        } else {
            ""
        }
    );
    if let Some(e) = &r.first_error {
        println!("       first error: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Self-checks of the pure pieces (run when the binary is started without `--bench`).

fn self_check() {
    let v: Vec<u32> = (1..=100).collect();
    assert_eq!(percentile(&v, 50.0), Some(50));
    assert_eq!(percentile(&v, 99.0), Some(99));
    assert_eq!(percentile(&v, 100.0), Some(100));
    assert_eq!(percentile(&v, 0.0), Some(1));
    assert_eq!(percentile(&[7], 99.0), Some(7));
    assert_eq!(percentile(&[], 50.0), None);

    assert_eq!(metric_name_metrics_api("v"), "s0-metric-api-v");
    assert_eq!(
        metric_name_metrics_api("queue.depth"),
        "s0-metric-api-queue-depth"
    );
    assert_eq!(metric_name_cron(), "s0-cron-Etc-UTC-08xxx-018xxx");
    assert_eq!(
        metric_path("a", "m"),
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/m?labelSelector=scaledobject.keda.sh%2Fname%3Da"
    );

    let text = scaled_objects(0..100, false);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("generated YAML parses"))
        .collect();
    assert_eq!(docs.len(), 100);
    assert_eq!(docs[99]["metadata"]["name"].as_str(), Some("cron-00099"));
    assert_eq!(
        docs[0]["spec"]["triggers"][0]["metadata"]["start"].as_str(),
        Some("0 8 * * *")
    );

    // The mixed objects are valid for ebb (a broken trigger would not build its HTTP client).
    let mixed = scaled_objects(0..3, true);
    let types: Vec<String> = serde_yaml::Deserializer::from_str(&mixed)
        .map(|d| {
            let so: ebb::crd::ScaledObject = serde::Deserialize::deserialize(d).expect("ScaledObject");
            let problems = ebb::scaling::validate::validate_scaled_object(&so);
            assert!(problems.is_empty(), "{problems:?}");
            so.spec.triggers[0].type_.clone()
        })
        .collect();
    assert_eq!(types, ["cron", "prometheus", "metrics-api"]);

    let one: serde_yaml::Value =
        serde_yaml::from_str(&load_scaled_object(SocketAddr::from(([127, 0, 0, 1], 9))))
            .expect("load ScaledObject parses");
    assert_eq!(
        one["spec"]["triggers"][0]["useCachedMetrics"].as_bool(),
        Some(true)
    );
    assert_eq!(
        one["spec"]["triggers"][0]["metadata"]["url"].as_str(),
        Some("http://127.0.0.1:9/value.json")
    );

    let m = parse_status("Name:\tebb\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n").expect("parses");
    assert_eq!((m.rss_kib, m.hwm_kib), (10240, 20480));
    assert!(parse_status("Name: x\n").is_none());
}
