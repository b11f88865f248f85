//! The activator's proxy overhead and wake latency (issue 11), all in one process on loopback:
//!
//! 1. overhead: C keep-alive HTTP/1.1 connections GET a tiny upstream for D seconds, three ways
//!    in alternating rounds: directly, through a bare hyper reverse proxy (the baseline: a
//!    `hyper_util` pooled client behind a hyper server, nothing else), and through
//!    `ebb activator --local` (routing, counting, forwarded headers, metrics). Printed:
//!    requests/s, p50/p99 latency, ebb/bare throughput, p99 added over the direct call, and
//!    proxy CPU per request (this process's CPU per request minus the direct rounds' share,
//!    since client and upstream run here too). With `--variants`, a fourth target: the bare
//!    proxy served the way ebb's serving loop builds its server (`hyper_util`'s auto server with
//!    upgrades and the HTTP/1 header-read timer), which attributes that part of the gap.
//!    Then latency without queueing: one connection, one request at a time, the three targets
//!    alternating; printed: p50/p99 and p99 added over the direct call.
//! 2. wake: N routes whose ports are bound but not listening; a request is sent to each and,
//!    once it is held, the port starts listening; printed: listen → request at the upstream
//!    (the "endpoint ready → first byte forwarded" figure; it includes the port probe interval).
//!
//! 3. cluster wake: `ebb::activator::serve_cluster` on kube's mocked client answering like an API
//!    server in this process (HTTPScaledObjects listed, EndpointSlice watches open and empty,
//!    `/scale` at 0); a request is sent to each of N routes in turn; printed: request sent →
//!    the `/scale` write received (the "first held request → /scale request sent").
//! 4. memory: the same cluster activator with R more routes (at 1 replica, no endpoint), then H
//!    requests held over them from a child process (so the client sockets are not counted);
//!    printed: this process's RSS before the activator, with the routes, with H held.
//!
//! Run with `cargo bench --bench activator -- [--connections C] [--duration D] [--rounds R]
//! [--wakes N] [--cluster-wakes N] [--routes R] [--held H] [--variants]`. Without `--bench` (as `cargo test --benches` runs it) a short self-check runs and
//! only checks that every request succeeded. Every loop is bounded in count and time.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use ebb::{
    cli::{Cli, Command},
    shutdown,
};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

mod common;

use common::{BoxError, Res, print_loadavg, print_machine, procfs, stats::percentile};

#[derive(Debug, Parser)]
#[command(
    name = "activator",
    about = "Proxy overhead and wake latency of ebb activator"
)]
struct Opts {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds per round and target.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Rounds per target (direct, bare, ebb alternate).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Cold starts measured.
    #[arg(long, default_value_t = 50)]
    wakes: usize,
    /// Cluster-mode wakes measured (request sent → /scale write).
    #[arg(long, default_value_t = 50)]
    cluster_wakes: usize,
    /// Routes for the memory figure.
    #[arg(long, default_value_t = 1000)]
    routes: usize,
    /// Requests held for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    held: usize,
    /// Also measure the bare proxy served as ebb serves (auto server, upgrades, header timer).
    #[arg(long)]
    variants: bool,
    /// Internal: be a child serving one proxy (`bare`, `bare-auto` or `ebb`) in front of
    /// `--upstream`; prints its port, serves until stdin closes.
    #[arg(long, hide = true)]
    serve_proxy: Option<String>,
    /// Internal: the upstream a `--serve-proxy` child forwards to.
    #[arg(long, hide = true)]
    upstream: Option<SocketAddr>,
    /// Internal: be the child that opens and holds `--held` connections to this proxy address.
    #[arg(long, hide = true)]
    hold_clients_for: Option<SocketAddr>,
    /// Passed by `cargo bench`; without it only the self-check runs.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Res<()> {
    let opts = Opts::parse();
    if let Some(proxy) = opts.hold_clients_for {
        return hold_clients(proxy, opts.held, opts.routes);
    }
    if let (Some(kind), Some(upstream)) = (&opts.serve_proxy, opts.upstream) {
        return serve_proxy_child(kind, upstream);
    }
    let (connections, duration, rounds, wakes) = if opts.bench {
        (
            opts.connections.clamp(1, 1024),
            opts.duration.clamp(0.1, 600.0),
            opts.rounds.clamp(1, 20),
            opts.wakes.clamp(1, 500),
        )
    } else {
        (4, 0.2, 1, 3)
    };
    let (cluster_wakes, routes, held) = if opts.bench {
        (
            opts.cluster_wakes.clamp(1, 500),
            opts.routes.clamp(1, 5000),
            opts.held.clamp(1, 10_000),
        )
    } else {
        (3, 10, 20)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        print_machine();
        let ticks = procfs::clock_ticks_per_second();
        let upstream = start_upstream().await?;
        // Each proxy of the overhead figures runs in a process of its own, so its CPU per
        // request is read from its own /proc entry, apart from the load generator's.
        let bare = ProxyChild::start("bare", upstream)?;
        let ebb_child = ProxyChild::start("ebb", upstream)?;
        let bare_auto = if opts.variants {
            Some(ProxyChild::start("bare-auto", upstream)?)
        } else {
            None
        };
        let mut targets: Vec<(&str, SocketAddr, Option<u32>)> = vec![
            ("direct", upstream, None),
            ("bare hyper proxy", bare.addr, Some(bare.pid())),
            ("ebb activator", ebb_child.addr, Some(ebb_child.pid())),
        ];
        if let Some(child) = &bare_auto {
            targets.push(("bare, served as ebb serves", child.addr, Some(child.pid())));
        }
        let mut results: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, (name, addr, pid)) in targets.iter().enumerate() {
                let round = load(*addr, *pid, connections, Duration::from_secs_f64(duration), ticks).await?;
                if round.errors > 0 {
                    return Err(format!("{name}: {} failed requests", round.errors).into());
                }
                results[i].push(round);
            }
        }
        println!("\n## overhead: {connections} connections, {rounds} x {duration} s per target");
        println!("| target | requests/s | p50 µs | p99 µs | proxy process CPU µs/request | requests per proxy CPU-second |");
        println!("| --- | --- | --- | --- | --- | --- |");
        let summaries: Vec<Summary> = results.iter().map(|r| summarize(r)).collect();
        for ((name, _, pid), s) in targets.iter().zip(&summaries) {
            let (cpu, per_cpu) = match pid {
                Some(_) => (format!("{:.1}", s.proxy_cpu_us_per_request), format!("{:.0}", 1e6 / s.proxy_cpu_us_per_request.max(0.01))),
                None => ("-".to_owned(), "-".to_owned()),
            };
            println!("| {name} | {:.0} | {} | {} | {cpu} | {per_cpu} |", s.rps, s.p50, s.p99);
        }
        let (bare_s, ebb_s) = (&summaries[1], &summaries[2]);
        println!("ebb/bare throughput: {:.3}", ebb_s.rps / bare_s.rps);
        // Each round's ratio, bare and ebb measured back to back: a slow spell of the machine
        // falls on one pair, and the median sets it aside where the totals above cannot.
        let mut pairs: Vec<f64> = results[1]
            .iter()
            .zip(&results[2])
            .map(|(bare, ebb)| ebb.rps() / bare.rps().max(1e-9))
            .collect();
        pairs.sort_by(f64::total_cmp);
        if let (Some(low), Some(high)) = (pairs.first(), pairs.last()) {
            println!(
                "ebb/bare throughput per round: median {:.3}, range {low:.3}–{high:.3} ({} rounds)",
                median(&pairs),
                pairs.len()
            );
        }
        println!(
            "ebb/bare proxy CPU per request: {:.3}",
            ebb_s.proxy_cpu_us_per_request / bare_s.proxy_cpu_us_per_request.max(0.01)
        );

        // Latency without queueing: one connection, one request at a time, the three targets
        // alternating; the "p99 added over a direct call" is read here.
        let mut sequential: Vec<Vec<Round>> = vec![vec![], vec![], vec![]];
        for _ in 0..rounds {
            for (i, (name, addr, pid)) in targets.iter().take(3).enumerate() {
                let round = load(*addr, *pid, 1, Duration::from_secs_f64(duration / 2.0), ticks).await?;
                if round.errors > 0 {
                    return Err(format!("{name}: {} failed requests", round.errors).into());
                }
                sequential[i].push(round);
            }
        }
        let sequential: Vec<Summary> = sequential.iter().map(|r| summarize(r)).collect();
        let direct_p99 = i64::from(sequential[0].p99);
        println!("\n## latency: 1 connection, one request at a time, {rounds} x {:.1} s per target", duration / 2.0);
        println!("| target | p50 µs | p99 µs | p99 added over direct µs |");
        println!("| --- | --- | --- | --- |");
        for ((name, _, _), s) in targets.iter().zip(&sequential) {
            println!("| {name} | {} | {} | {} |", s.p50, s.p99, i64::from(s.p99) - direct_p99);
        }
        drop((bare, ebb_child, bare_auto));

        // The wake figures: an in-process `--local` activator whose routes' ports are bound but
        // not listening yet.
        let dir = tempfile::tempdir()?;
        let mut objects = Vec::new();
        let mut reserved = Vec::new();
        for i in 0..wakes {
            let socket = TcpSocket::new_v4()?;
            socket.bind("127.0.0.1:0".parse()?)?;
            objects.push(object(&format!("wake{i}"), socket.local_addr()?.port()));
            reserved.push(socket);
        }
        std::fs::write(dir.path().join("routes.yaml"), objects.join("---\n"))?;
        let (trigger, ebb) = start_activator(dir.path(), objects.len()).await?;

        let mut wake_us = Vec::new();
        for (i, socket) in reserved.into_iter().enumerate() {
            wake_us.push(wake_once(&ebb, socket, i).await?);
        }
        wake_us.sort_unstable();
        println!("\n## wake: {} cold starts (local mode, default --probe-interval 2ms)", wake_us.len());
        println!(
            "port listening → request at the upstream: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            f64::from(pct(&wake_us, 50.0)) / 1000.0,
            f64::from(pct(&wake_us, 99.0)) / 1000.0,
            f64::from(*wake_us.last().unwrap_or(&0)) / 1000.0
        );
        trigger.fire();
        let _ = tokio::time::timeout(Duration::from_secs(30), ebb.task).await;

        cluster_figures(cluster_wakes, routes, held).await?;
        print_loadavg();
        if !opts.bench {
            println!("activator: self-checks passed (cargo bench --bench activator for the figures)");
        }
        Ok(())
    })
}

fn object(name: &str, port: u16) -> String {
    format!(
        "apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata:\n  name: {name}\n  namespace: bench\n  annotations:\n    activator.ebb/local-command: \"exec sleep 600\"\nspec:\n  hosts: [{name}.test]\n  scaledownPeriod: 600\n  scaleTargetRef: {{name: {name}, service: {name}, port: {port}}}\n"
    )
}

async fn start_upstream() -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(tcp),
                hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }),
            ));
        }
    });
    Ok(addr)
}

/// The baseline: a hyper server forwarding every request through a pooled hyper client.
async fn start_bare_proxy(upstream: SocketAddr, served: Served) -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let client = client.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    *req.uri_mut() = format!("http://{upstream}{path}")
                        .parse::<Uri>()
                        .unwrap_or_default();
                    match client.request(req).await {
                        Ok(resp) => Ok::<_, Infallible>(resp.map(|b| b.map_err(BoxError::from).boxed())),
                        Err(_) => {
                            let mut r = Response::new(Empty::<Bytes>::new().map_err(BoxError::from).boxed());
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            Ok(r)
                        }
                    }
                }
            });
            match served {
                Served::Http1 => {
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service),
                    );
                }
                Served::AutoWithTimer => {
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(32));
                    tokio::spawn(async move {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            }
        }
    });
    Ok(addr)
}

/// How the bare proxy's server side is built.
#[derive(Debug, Clone, Copy)]
enum Served {
    /// hyper's HTTP/1 server, nothing else (the baseline).
    Http1,
    /// As ebb's serving loop builds it: `hyper_util`'s auto server with upgrades and the
    /// HTTP/1 header-read timer; attributes that part of ebb's cost (`--variants`).
    AutoWithTimer,
}

struct Ebb {
    proxy: SocketAddr,
    admin: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Starts `ebb activator --local DIR` and returns once its `/queue` lists all `routes` (the
/// directory is read on a task of its own: a request before that is a 404).
async fn start_activator(dir: &std::path::Path, routes: usize) -> Res<(shutdown::Trigger, Ebb)> {
    let dir_text = dir.to_str().ok_or("non-UTF-8 temp dir")?;
    let Command::Activator(args) =
        Cli::try_parse_from(["ebb", "activator", "--local", dir_text, "--hold-timeout", "30s"])?.command
    else {
        return Err("not the activator".into());
    };
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = proxy_listener.local_addr()?;
    let admin = admin_listener.local_addr()?;
    let (trigger, signal) = shutdown::channel();
    let task = tokio::spawn(ebb::activator::serve(
        *args,
        dir.to_path_buf(),
        proxy_listener,
        admin_listener,
        signal,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get_once(admin, "admin", "/queue").await?;
        let queue: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if queue.as_object().is_some_and(|q| q.len() == routes) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the local activator never listed its routes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((trigger, Ebb { proxy, admin, task }))
}

async fn get_once(addr: SocketAddr, host: &str, path: &str) -> Res<(StatusCode, Bytes)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req)).await??;
    let status = resp.status();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

struct Round {
    latencies_us: Vec<u32>,
    errors: usize,
    elapsed: Duration,
    /// CPU the proxy's own process spent in the round (0 for the direct target).
    proxy_cpu_us: f64,
}

async fn load(
    target: SocketAddr,
    proxy: Option<u32>,
    connections: usize,
    duration: Duration,
    ticks: u64,
) -> Res<Round> {
    let stop = Arc::new(AtomicBool::new(false));
    let proxy_cpu = |pid: Option<u32>| pid.map_or(0.0, |pid| pid_cpu_us(pid, ticks));
    let cpu_before = proxy_cpu(proxy);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0usize;
            let Ok(tcp) = TcpStream::connect(target).await else {
                return (latencies, 1);
            };
            let _ = tcp.set_nodelay(true);
            let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else {
                return (latencies, 1);
            };
            tokio::spawn(conn);
            // Bounded by the stop flag (set after `duration`) and a hard cap on requests.
            for _ in 0..10_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(req) = Request::get("/")
                    .header(http::header::HOST, "bench.test")
                    .body(Empty::<Bytes>::new())
                else {
                    errors += 1;
                    break;
                };
                let t = Instant::now();
                match send.send_request(req).await {
                    Ok(resp) if resp.status() == StatusCode::OK => {
                        if resp.into_body().collect().await.is_err() {
                            errors += 1;
                            break;
                        }
                        latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = tokio::time::timeout(Duration::from_secs(30), t).await??;
        latencies_us.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    Ok(Round {
        latencies_us,
        errors,
        elapsed,
        proxy_cpu_us: proxy_cpu(proxy) - cpu_before,
    })
}

impl Round {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The median of sorted values (0 when empty).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

struct Summary {
    rps: f64,
    p50: u32,
    p99: u32,
    proxy_cpu_us_per_request: f64,
}

fn summarize(rounds: &[Round]) -> Summary {
    let mut all: Vec<u32> = rounds
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    all.sort_unstable();
    let requests = all.len().max(1) as f64;
    let secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let cpu: f64 = rounds.iter().map(|r| r.proxy_cpu_us).sum();
    Summary {
        rps: requests / secs.max(1e-9),
        p50: pct(&all, 50.0),
        p99: pct(&all, 99.0),
        proxy_cpu_us_per_request: cpu / requests,
    }
}

/// Percentile `p` (0–100) of `sorted`, 0 when empty.
fn pct(sorted: &[u32], p: f64) -> u32 {
    percentile(sorted, p).unwrap_or(0)
}

/// One cold start on route `wake{i}`: hold a request, then open the port; microseconds from
/// `listen` to the request arriving at the upstream.
async fn wake_once(ebb: &Ebb, socket: TcpSocket, i: usize) -> Res<u32> {
    let host = format!("wake{i}.test");
    let proxy = ebb.proxy;
    let request = tokio::spawn(async move { get_once(proxy, &host, "/").await });
    let key = format!("bench/wake{i}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get_once(ebb.admin, "admin", "/routes").await?;
        let routes: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if routes[&key]["held"] == 1 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{key}: the request was never held").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let listener = socket.listen(64)?;
    let opened = Instant::now();
    // The first connection is the readiness probe; the request comes on a later one.
    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (tcp, _) = listener.accept().await?;
            let mut buf = [0u8; 1];
            if tcp.peek(&mut buf).await? > 0 {
                let at = opened.elapsed();
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(tcp),
                    hyper::service::service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }),
                ));
                return Ok::<_, std::io::Error>(at);
            }
        }
    })
    .await??;
    let (status, _) = tokio::time::timeout(Duration::from_secs(30), request).await???;
    if status != StatusCode::OK {
        return Err(format!("{key}: cold request answered {status}").into());
    }
    Ok(u32::try_from(arrived.as_micros()).unwrap_or(u32::MAX))
}

/// This process's user+system CPU time in microseconds.
fn pid_cpu_us(pid: u32, ticks_per_second: u64) -> f64 {
    procfs::cpu_ticks(pid).unwrap_or(0) as f64 * 1e6 / ticks_per_second as f64
}

/// A proxy served by a child process of this bench (`--serve-proxy`), stopped when dropped.
struct ProxyChild {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ProxyChild {
    /// Starts the child and waits for the port it prints once it serves.
    fn start(kind: &str, upstream: SocketAddr) -> Res<ProxyChild> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["--serve-proxy", kind, "--upstream", &upstream.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("serving ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("the {kind} proxy child did not start: {line:?}"))?;
        Ok(ProxyChild { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        // Closing stdin tells the child to stop; it exits at once.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The `--serve-proxy` child: one proxy on its own runtime, its port on stdout, until stdin
/// closes.
fn serve_proxy_child(kind: &str, upstream: SocketAddr) -> Res<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir()?;
        let (addr, _ebb) = match kind {
            "bare" => (start_bare_proxy(upstream, Served::Http1).await?, None),
            "bare-auto" => (start_bare_proxy(upstream, Served::AutoWithTimer).await?, None),
            "ebb" => {
                std::fs::write(dir.path().join("routes.yaml"), object("bench", upstream.port()))?;
                let (trigger, ebb) = start_activator(dir.path(), 1).await?;
                // The route starts at zero: one request wakes it before anything is measured.
                let (status, _) = get_once(ebb.proxy, "bench.test", "/").await?;
                if status != StatusCode::OK {
                    return Err(format!("warm-up through ebb answered {status}").into());
                }
                (ebb.proxy, Some((trigger, ebb)))
            }
            other => return Err(format!("unknown proxy kind {other}").into()),
        };
        println!("serving {addr}");
        tokio::task::spawn_blocking(|| {
            use std::io::Read;
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        Ok(())
    })
}

/// What the scripted API server of the cluster figures saw.
#[derive(Default)]
struct ApiLog {
    /// When each target's `/scale` write arrived, by workload name.
    puts: std::collections::HashMap<String, Instant>,
    scale_gets: usize,
    unexpected: Vec<String>,
}

fn cluster_object(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": "bench", "resourceVersion": "3",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"hosts": [format!("{name}.test")],
                 "scaleTargetRef": {"name": name, "service": name, "portName": "http"}}
    })
}

/// kube's mocked client answering as an API server would: HTTPScaledObjects listed, watches
/// left open (a quiet cluster), no EndpointSlices, `/scale` at 0 for `wake*` targets and at 1
/// for the others, writes recorded with their arrival time.
fn mock_api(
    objects: Vec<serde_json::Value>,
) -> (
    kube::Client,
    Arc<std::sync::Mutex<ApiLog>>,
    Arc<tokio::sync::Notify>,
) {
    use kube::client::Body;
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(std::sync::Mutex::new(ApiLog::default()));
    let wrote = Arc::new(tokio::sync::Notify::new());
    let (log2, wrote2) = (Arc::clone(&log), Arc::clone(&wrote));
    tokio::spawn(async move {
        let mut open = Vec::new();
        let mut replicas: std::collections::HashMap<String, i32> = std::collections::HashMap::new();
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let watching = req
                .uri()
                .query()
                .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
            let body = req.into_body().collect_bytes().await.unwrap_or_default();
            let list = |kind: &str, api: &str, items: Vec<serde_json::Value>| serde_json::json!({"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items});
            let answer = if watching {
                open.push(send);
                continue;
            } else if path == "/apis/http.keda.sh/v1alpha1/httpscaledobjects" {
                list("HTTPScaledObjectList", "http.keda.sh/v1alpha1", objects.clone())
            } else if path == "/apis/http.keda.sh/v1beta1/interceptorroutes" {
                list("InterceptorRouteList", "http.keda.sh/v1beta1", vec![])
            } else if path == "/apis/discovery.k8s.io/v1/namespaces/bench/endpointslices" {
                list("EndpointSliceList", "discovery.k8s.io/v1", vec![])
            } else if let Some(name) = path
                .strip_prefix("/apis/apps/v1/namespaces/bench/deployments/")
                .and_then(|p| p.strip_suffix("/scale"))
            {
                let name = name.to_owned();
                let current = *replicas
                    .entry(name.clone())
                    .or_insert(if name.starts_with("wake") { 0 } else { 1 });
                if method == http::Method::PUT {
                    let at = Instant::now();
                    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let wanted = sent["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
                    replicas.insert(name.clone(), wanted);
                    log2.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .puts
                        .insert(name.clone(), at);
                    wrote2.notify_waiters();
                } else {
                    log2.lock().unwrap_or_else(|p| p.into_inner()).scale_gets += 1;
                }
                let now = replicas.get(&name).copied().unwrap_or(current);
                serde_json::json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {"name": name, "namespace": "bench", "resourceVersion": "7"},
                    "spec": {"replicas": now}, "status": {"replicas": now}})
            } else {
                log2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unexpected
                    .push(format!("{method} {path}"));
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"})
            };
            let response = Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()));
            if let Ok(r) = response {
                send.send_response(r);
            }
        }
    });
    (kube::Client::new(svc, "default"), log, wrote)
}

/// Cluster mode: the wake latency, then the memory with `routes` routes and `held` requests.
async fn cluster_figures(wakes: usize, routes: usize, held: usize) -> Res<()> {
    let pid = std::process::id();
    let before = procfs::rss(pid)?;
    let mut objects: Vec<serde_json::Value> =
        (0..wakes).map(|i| cluster_object(&format!("wake{i}"))).collect();
    objects.extend((0..routes).map(|i| cluster_object(&format!("hold{i}"))));
    let (client, log, wrote) = mock_api(objects);
    let Command::Activator(args) = Cli::try_parse_from([
        "ebb",
        "activator",
        "--hold-timeout",
        "300s",
        "--max-held",
        "10000",
        "--max-held-per-route",
        "1000",
        "--max-connections",
        "15000",
    ])?
    .command
    else {
        return Err("not the activator".into());
    };
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
    let (proxy, admin) = (proxy_listener.local_addr()?, admin_listener.local_addr()?);
    let (trigger, signal) = shutdown::channel();
    let task = tokio::spawn(ebb::activator::serve_cluster(
        *args,
        client,
        proxy_listener,
        admin_listener,
        signal,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get_once(admin, "admin", "/queue").await?;
        let queue: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if queue.as_object().is_some_and(|q| q.len() == wakes + routes) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the cluster activator never listed its routes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut wake_us = Vec::new();
    for i in 0..wakes {
        let name = format!("wake{i}");
        let mut tcp = TcpStream::connect(proxy).await?;
        let request = format!("GET / HTTP/1.1\r\nHost: {name}.test\r\n\r\n");
        let sent = Instant::now();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await?;
        let arrived = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = wrote.notified();
                if let Some(at) = log.lock().unwrap_or_else(|p| p.into_inner()).puts.get(&name) {
                    return *at;
                }
                notified.await;
            }
        })
        .await
        .map_err(|_| format!("{name}: no /scale write"))?;
        wake_us.push(u32::try_from(arrived.saturating_duration_since(sent).as_micros()).unwrap_or(u32::MAX));
        drop(tcp);
    }
    wake_us.sort_unstable();
    println!(
        "\n## cluster wake: {} targets at zero (in-process scripted API server)",
        wake_us.len()
    );
    println!(
        "request sent → /scale write received: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f64::from(pct(&wake_us, 50.0)) / 1000.0,
        f64::from(pct(&wake_us, 99.0)) / 1000.0,
        f64::from(*wake_us.last().unwrap_or(&0)) / 1000.0
    );

    let listed = procfs::rss(pid)?;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args([
            "--hold-clients-for",
            &proxy.to_string(),
            "--held",
            &held.to_string(),
            "--routes",
            &routes.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let holding = loop {
        let (_, body) = get_once(admin, "admin", "/routes").await?;
        let view: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let n: u64 = view
            .as_object()
            .map(|o| o.values().filter_map(|r| r["held"].as_u64()).sum())
            .unwrap_or(0);
        if n as usize >= held {
            break n;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("only {n} of {held} requests held").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let holding_mem = procfs::rss(pid)?;
    drop(child.stdin.take());
    let _ = child.wait();
    println!("\n## memory: {routes} routes (+{wakes} woken), {holding} requests held (RSS of this process)");
    println!("| state | RSS MiB |");
    println!("| --- | ---: |");
    println!(
        "| before the cluster activator | {:.1} |",
        procfs::mib(before.rss_kib)
    );
    println!(
        "| routes listed, endpoint watches open | {:.1} |",
        procfs::mib(listed.rss_kib)
    );
    println!(
        "| {holding} requests held | {:.1} |",
        procfs::mib(holding_mem.rss_kib)
    );
    println!(
        "per route {:.1} KiB, per held request {:.2} KiB",
        listed.rss_kib.saturating_sub(before.rss_kib) as f64 / (routes + wakes) as f64,
        holding_mem.rss_kib.saturating_sub(listed.rss_kib) as f64 / holding as f64
    );
    {
        let log = log.lock().unwrap_or_else(|p| p.into_inner());
        if !log.unexpected.is_empty() {
            return Err(format!("unscripted API calls: {:?}", log.unexpected).into());
        }
        if log.puts.len() != wakes {
            return Err(format!("{} /scale writes for {wakes} wakes", log.puts.len()).into());
        }
    }
    trigger.fire();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    Ok(())
}

/// The child of the memory figure: `held` connections to `proxy`, each sending one request to
/// route `hold{i % routes}`, kept open until stdin closes.
fn hold_clients(proxy: SocketAddr, held: usize, routes: usize) -> Res<()> {
    use std::io::{Read, Write};
    let mut open = Vec::with_capacity(held);
    for i in 0..held {
        let mut tcp = std::net::TcpStream::connect(proxy)?;
        write!(
            tcp,
            "GET / HTTP/1.1\r\nHost: hold{}.test\r\n\r\n",
            i % routes.max(1)
        )?;
        open.push(tcp);
    }
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(open);
    Ok(())
}
