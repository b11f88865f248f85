//! Cost of `ebb explain`'s admin route (issue 13): `/debug/scaledobjects/NAMESPACE/NAME` against
//! `/livez` on the same admin port of one `ebb metrics-server --local`, in alternating rounds.
//!
//! The object has three triggers: metrics-api with `useCachedMetrics` (served from the cache),
//! metrics-api without (a fresh read once, then the inspector's recent read for the
//! `pollingInterval`) and cron, so after the first request no view waits on an upstream and the
//! figure is the route's own cost: registry lookup, cache and counter reads, the verdict (one HPA
//! model sync per metric) and the JSON. The upstream's request count is printed too: explaining
//! must not multiply upstream calls.
//!
//! C keep-alive HTTP/1.1 connections GET one path for D seconds per round. Printed per path:
//! requests/s, p50/p99 latency; then explain/livez throughput and the p99 difference.
//!
//! `cargo bench --bench explain -- [--connections C] [--duration D] [--rounds R]`. Without
//! `--bench` (as `cargo test --benches` runs it) a short self-check runs: every request 200, the
//! view parses, and the upstream saw one request per uncached metric at most.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{Res, ebb::Ebb, print_machine, stats::percentile};

#[derive(Debug, Parser)]
#[command(name = "explain", about = "Cost of the explain admin route against /livez")]
struct Opts {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds per round and path.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Rounds per path (livez and explain alternate).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Passed by `cargo bench`; without it only the self-check runs.
    #[arg(long, hide = true)]
    bench: bool,
}

const VIEW: &str = "/debug/scaledobjects/bench/bench";

/// A metrics-api upstream answering `{"v": 42}`, counting requests.
async fn upstream(hits: Arc<AtomicU64>) -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    hits.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"{\"v\": 42}")));
                        r.headers_mut()
                            .insert(header::CONTENT_TYPE, "application/json".parse().expect("static"));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn objects(upstream: SocketAddr) -> String {
    format!(
        r#"apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: bench, namespace: bench}}
spec:
  scaleTargetRef: {{name: bench}}
  pollingInterval: 600
  maxReplicaCount: 50
  fallback: {{failureThreshold: 3, replicas: 5}}
  triggers:
  - type: metrics-api
    useCachedMetrics: true
    metadata: {{url: "http://{upstream}/a", valueLocation: v, targetValue: "10", activationTargetValue: "5"}}
  - type: metrics-api
    metadata: {{url: "http://{upstream}/b", valueLocation: v, targetValue: "20"}}
  - type: cron
    metadata: {{timezone: Etc/UTC, start: "0 0 1 1 *", end: "1 0 1 1 *", desiredReplicas: "3"}}
"#
    )
}

/// One round: `connections` keep-alive clients GET `path` for `duration`; latencies in µs.
async fn round(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    duration: Duration,
) -> Res<(Vec<u32>, f64)> {
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut lat = Vec::new();
            // Bounded in time, and in count as a backstop.
            while Instant::now() < until && lat.len() < 10_000_000 {
                let req = Request::get(path)
                    .header(header::HOST, addr.to_string())
                    .body(Empty::<Bytes>::new())?;
                let t = Instant::now();
                let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await??;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                if !status.is_success() || body.is_empty() {
                    return Err(format!("{path}: {status} {}", String::from_utf8_lossy(&body)).into());
                }
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Ok::<_, common::BoxError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((all, secs))
}

struct Figures {
    rps: f64,
    p50: u32,
    p99: u32,
}

fn figures(mut lat: Vec<u32>, secs: f64) -> Figures {
    lat.sort_unstable();
    Figures {
        rps: lat.len() as f64 / secs,
        p50: percentile(&lat, 50.0).unwrap_or(0),
        p99: percentile(&lat, 99.0).unwrap_or(0),
    }
}

async fn run(opts: &Opts) -> Res<()> {
    let hits = Arc::new(AtomicU64::new(0));
    let up = upstream(hits.clone()).await?;
    let dir = tempfile::tempdir()?;
    let objects_dir = dir.path().join("objects");
    std::fs::create_dir_all(&objects_dir)?;
    std::fs::write(objects_dir.join("so.yaml"), objects(up))?;
    let ebb = Ebb::start(
        &objects_dir,
        &dir.path().join("state"),
        &dir.path().join("ebb.log"),
    )?;
    ebb.wait_ready().await?;
    // The object is registered once the directory is read; the first view makes the reads.
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let (status, body) = common::get_plain(ebb.metrics, VIEW).await?;
        if status.is_success() {
            break serde_json::from_slice::<serde_json::Value>(&body)?;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no view: {status} {}\n{}",
                String::from_utf8_lossy(&body),
                ebb.log_tail()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let verdict = view["verdict"].as_str().unwrap_or_default().to_string();
    if !verdict.starts_with("replicas unknown: s0-metric-api-v = 42") {
        return Err(format!("unexpected verdict: {verdict}").into());
    }
    let after_first = hits.load(Ordering::Relaxed);
    let duration = Duration::from_secs_f64(opts.duration);
    let (mut livez, mut explain) = ((Vec::new(), 0.0), (Vec::new(), 0.0));
    for _ in 0..opts.rounds {
        let (l, s) = round(ebb.metrics, "/livez", opts.connections, duration).await?;
        livez.0.extend(l);
        livez.1 += s;
        let (l, s) = round(ebb.metrics, VIEW, opts.connections, duration).await?;
        explain.0.extend(l);
        explain.1 += s;
    }
    let upstream_calls = hits.load(Ordering::Relaxed);
    let (n_livez, n_explain) = (livez.0.len(), explain.0.len());
    let l = figures(livez.0, livez.1);
    let e = figures(explain.0, explain.1);
    println!("verdict: {verdict}");
    println!(
        "{} connections, {} rounds × {:.1} s per path",
        opts.connections, opts.rounds, opts.duration
    );
    println!(
        "/livez:   {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  ({n_livez} requests)",
        l.rps, l.p50, l.p99
    );
    println!(
        "explain:  {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  ({n_explain} requests)",
        e.rps, e.p50, e.p99
    );
    println!(
        "explain/livez throughput {:.2}, p99 +{} µs; upstream requests: {after_first} for the first view, {upstream_calls} after all",
        e.rps / l.rps.max(1e-9),
        e.p99.saturating_sub(l.p99)
    );
    // Two uncached reads at most for the first view (one per metrics-api trigger); later views
    // reuse them within pollingInterval.
    if upstream_calls > 2 {
        return Err(
            format!("explaining made {upstream_calls} upstream requests (at most 2 expected)").into(),
        );
    }
    if n_explain == 0 || n_livez == 0 {
        return Err("no request completed".into());
    }
    Ok(())
}

fn main() -> Res<()> {
    let mut opts = Opts::parse();
    if opts.bench {
        print_machine();
    } else {
        // Self-check: small and short; figures are not meaningful here.
        opts.connections = 2;
        opts.duration = 0.3;
        opts.rounds = 1;
    }
    common::runtime("explain-bench", 2)?.block_on(run(&opts))
}
