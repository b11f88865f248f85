//! `ebb activator --local` end to end on loopback: real upstreams (HTTP/1.1, h2c, streamed
//! bodies with trailers, a Python process started on demand), held requests released the moment
//! the port accepts, the hold caps, the deadline, clients that leave, idle scale-down, and the
//! admin port's `/queue`, `/routes` and `/metrics`.
//!
//! No sleeps stand for "long enough": every wait polls a condition under a deadline.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use ebb::{
    cli::{Cli, Command},
    shutdown,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};

const BUDGET: Duration = Duration::from_secs(20);

/// An activator serving in this process on ephemeral ports.
struct Activator {
    proxy: SocketAddr,
    admin: SocketAddr,
    trigger: shutdown::Trigger,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Activator {
    async fn start(objects: &[String], flags: &[&str]) -> Activator {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, text) in objects.iter().enumerate() {
            common::fs::write_atomic(&dir.path().join(format!("route-{i}.yaml")), text);
        }
        let mut argv = vec!["ebb", "activator", "--local", dir.path().to_str().expect("utf-8")];
        argv.extend_from_slice(flags);
        let Command::Activator(args) = Cli::try_parse_from(argv).expect("flags").command else {
            panic!("not the activator subcommand");
        };
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let proxy = proxy_listener.local_addr().expect("addr");
        let admin = admin_listener.local_addr().expect("addr");
        let (trigger, signal) = shutdown::channel();
        let path = dir.path().to_path_buf();
        let task = tokio::spawn(ebb::activator::serve(
            *args,
            path,
            proxy_listener,
            admin_listener,
            signal,
        ));
        Activator {
            proxy,
            admin,
            trigger,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(BUDGET, self.task)
            .await
            .expect("the activator stops in time")
            .expect("the activator task ends cleanly");
    }

    async fn admin_json(&self, path: &str) -> Value {
        let (status, _, body) = get(self.admin, "admin", path).await.expect("admin answers");
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Polls `/routes` until `check` holds for the route.
    async fn wait_route(&self, key: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + BUDGET;
        loop {
            let routes = self.admin_json("/routes").await;
            if check(&routes[key]) {
                return routes[key].clone();
            }
            assert!(Instant::now() < deadline, "{what}: {routes}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An HTTPScaledObject for `--local`.
fn object(
    name: &str,
    host: &str,
    port: u16,
    command: &str,
    extra_spec: &str,
    extra_annotations: &str,
) -> String {
    format!(
        r#"apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: {name}
  namespace: web
  annotations:
    activator.ebb/local-command: "{command}"
{extra_annotations}
spec:
  hosts: ["{host}"]
  scaleTargetRef:
    name: {name}
    service: {name}
    port: {port}
{extra_spec}
"#
    )
}

/// A command that runs until stopped and opens no port (the test serves the port itself).
const IDLE_COMMAND: &str = "exec sleep 600";

/// `GET path` with `Host: host` over HTTP/1.1.
async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(StatusCode, http::HeaderMap, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(http::header::HOST, host)
        .header("x-forwarded-for", "203.0.113.9")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// An upstream answering with what it saw.
async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let h = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let host = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| h("host"));
    let text = format!(
        "{:?} {} host={host} xff={} xfh={} xfp={}",
        request.version(),
        request.uri().path(),
        h("x-forwarded-for"),
        h("x-forwarded-host"),
        h("x-forwarded-proto"),
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// Serves `echo` on `listener` (HTTP/1.1 and h2c).
fn serve_echo(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(echo))
                    .await;
            });
        }
    })
}

/// A port bound but not listening: connections are refused until `listen` is called, and no
/// other test can take it meanwhile.
fn reserved_port() -> (TcpSocket, u16) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, port)
}

#[tokio::test]
async fn requests_are_routed_by_host_with_the_forwarded_headers() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _server = serve_echo(upstream);
    let activator = Activator::start(&[object("app", "app.test", port, IDLE_COMMAND, "", "")], &[]).await;

    let (status, headers, body) = get(activator.proxy, "app.test:8080", "/hello")
        .await
        .expect("proxied");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("HTTP/1.1 /hello host=app.test:8080"), "{body}");
    assert!(body.contains("xff=203.0.113.9, 127.0.0.1"), "{body}");
    assert!(body.contains("xfh=app.test:8080 xfp=http"), "{body}");
    // Every route starts at zero: the first request waited for the (instant) start.
    assert_eq!(
        headers.get("x-keda-http-cold-start").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );

    let (status, _, _) = get(activator.proxy, "other.test", "/").await.expect("answered");
    assert_eq!(status, StatusCode::NOT_FOUND);

    let queue = activator.admin_json("/queue").await;
    assert_eq!(queue["web/app"]["RequestCount"], 1, "{queue}");
    assert_eq!(queue["web/app"]["Concurrency"], 0, "{queue}");
    activator.stop().await;
}

#[tokio::test]
async fn a_held_request_is_forwarded_the_moment_the_port_accepts() {
    let (socket, port) = reserved_port();
    let activator = Activator::start(&[object("app", "app.test", port, IDLE_COMMAND, "", "")], &[]).await;

    let proxy = activator.proxy;
    let request = tokio::spawn(async move { get(proxy, "app.test", "/cold").await });
    activator
        .wait_route("web/app", "the request is held", |r| r["held"] == 1)
        .await;
    let routes = activator.admin_json("/routes").await;
    assert_eq!(
        routes["web/app"]["coldStarts"], 1,
        "the wake fired at once: {routes}"
    );
    assert_eq!(
        routes["web/app"]["concurrency"], 1,
        "held requests count as concurrency: {routes}"
    );

    let _server = serve_echo(socket.listen(64).expect("listen"));
    let (status, headers, body) = tokio::time::timeout(BUDGET, request)
        .await
        .expect("released in time")
        .expect("task")
        .expect("proxied");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("/cold"), "{body}");
    assert_eq!(
        headers.get("x-keda-http-cold-start").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let route = activator
        .wait_route("web/app", "the hold ended", |r| r["held"] == 0)
        .await;
    assert_eq!(route["endpoints"][0], format!("127.0.0.1:{port}"), "{route}");
    activator.stop().await;
}

#[tokio::test]
async fn the_hold_deadline_answers_504_and_the_cap_503_with_retry_after() {
    let (_socket, port) = reserved_port();
    let spec = "  timeouts:\n    conditionWait: 700ms";
    let activator = Activator::start(
        &[object("app", "app.test", port, IDLE_COMMAND, spec, "")],
        &["--max-held-per-route", "1", "--hold-timeout", "5s"],
    )
    .await;

    let proxy = activator.proxy;
    let first = tokio::spawn(async move { get(proxy, "app.test", "/").await });
    activator
        .wait_route("web/app", "the first request is held", |r| r["held"] == 1)
        .await;
    let (status, headers, _) = get(activator.proxy, "app.test", "/").await.expect("answered");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"5"[..]));

    let (status, _, body) = tokio::time::timeout(BUDGET, first)
        .await
        .expect("in time")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let route = activator
        .wait_route("web/app", "counted", |r| r["held"] == 0)
        .await;
    assert_eq!(route["holdTimeouts"], 1, "{route}");
    assert_eq!(route["overflows"], 1, "{route}");
    assert_eq!(route["concurrency"], 0, "{route}");
    activator.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_releases_its_hold() {
    let (_socket, port) = reserved_port();
    let activator = Activator::start(&[object("app", "app.test", port, IDLE_COMMAND, "", "")], &[]).await;
    let mut raw = TcpStream::connect(activator.proxy).await.expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    activator.wait_route("web/app", "held", |r| r["held"] == 1).await;
    drop(raw);
    let route = activator
        .wait_route("web/app", "the hold is released", |r| {
            r["held"] == 0 && r["concurrency"] == 0
        })
        .await;
    assert_eq!(route["abandoned"], 1, "{route}");
    activator.stop().await;
}

#[tokio::test]
async fn http2_streams_and_trailers_pass_through() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(4);
    let chunks_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(chunks_rx)));
    // A gRPC-style upstream: h2c, a streamed body as the test feeds it, then trailers. It
    // accepts in a loop: the activator's readiness probe is a connection too.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = upstream.accept().await {
            let chunks_rx = std::sync::Arc::clone(&chunks_rx);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let chunks_rx = std::sync::Arc::clone(&chunks_rx);
                async move {
                    assert_eq!(request.version(), http::Version::HTTP_2);
                    let mut rx = chunks_rx.lock().await.take().expect("one stream");
                    let stream = async_stream(move |tx| async move {
                        while let Some(chunk) = rx.recv().await {
                            let _ = tx.send(Ok::<_, Infallible>(Frame::data(chunk))).await;
                        }
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
                    });
                    Ok::<_, Infallible>(Response::new(StreamBody::new(stream)))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    let activator = Activator::start(&[object("grpc", "grpc.test", port, IDLE_COMMAND, "", "")], &[]).await;

    let tcp = TcpStream::connect(activator.proxy).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2c handshake");
    tokio::spawn(conn);
    let request = Request::post("http://grpc.test/pkg.Service/Stream")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"ping")))
        .expect("request");
    let response = tokio::time::timeout(BUDGET, sender.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // Each chunk reaches the client before the next is produced: nothing is buffered.
    for chunk in ["one", "two"] {
        chunks_tx
            .send(Bytes::from_static(chunk.as_bytes()))
            .await
            .expect("feed");
        let frame = tokio::time::timeout(BUDGET, body.frame())
            .await
            .expect("chunk in time")
            .expect("a frame")
            .expect("no error");
        assert_eq!(frame.into_data().expect("data"), chunk.as_bytes());
    }
    drop(chunks_tx);
    let trailers = loop {
        let frame = tokio::time::timeout(BUDGET, body.frame())
            .await
            .expect("trailers in time")
            .expect("a frame")
            .expect("no error");
        if let Ok(t) = frame.into_trailers() {
            break t;
        }
    };
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    activator.stop().await;
}

/// A stream fed by a task: enough of `async-stream` for one test.
fn async_stream<T, F, Fut>(produce: F) -> impl futures::Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(produce(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// True while something accepts connections on `port`.
async fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test]
async fn a_local_process_starts_on_the_first_request_and_stops_after_idle() {
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("index.html"), "hello from python\n").expect("write");
    let port = common::net::free_port();
    let command = format!(
        "exec python3 -m http.server --bind 127.0.0.1 --directory {} {port}",
        site.path().display()
    );
    let activator = Activator::start(
        &[object(
            "py",
            "py.test",
            port,
            &command,
            "  scaledownPeriod: 1",
            "",
        )],
        &["--stop-grace-period", "5s"],
    )
    .await;
    assert!(!port_open(port).await, "nothing runs before the first request");

    let (status, headers, body) = get(activator.proxy, "py.test", "/index.html")
        .await
        .expect("proxied");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "hello from python\n");
    assert_eq!(
        headers.get("x-keda-http-cold-start").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let (status, headers, _) = get(activator.proxy, "py.test", "/index.html")
        .await
        .expect("proxied");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("x-keda-http-cold-start").map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );

    // One second without traffic: the process is stopped and the route is at zero again.
    activator
        .wait_route("web/py", "scaled to zero", |r| {
            r["endpoints"].as_array().is_some_and(|e| e.is_empty())
        })
        .await;
    let deadline = Instant::now() + BUDGET;
    while port_open(port).await {
        assert!(
            Instant::now() < deadline,
            "the process still listens after the idle stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the next request starts it again.
    let (status, _, body) = get(activator.proxy, "py.test", "/index.html")
        .await
        .expect("proxied");
    assert_eq!(status, StatusCode::OK, "{body}");
    let route = activator.admin_json("/routes").await;
    assert_eq!(route["web/py"]["coldStarts"], 2, "{route}");
    activator.stop().await;
    assert!(
        !port_open(port).await,
        "the process is stopped with the activator"
    );
}

#[tokio::test]
async fn metrics_are_served_per_route() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _server = serve_echo(upstream);
    let activator = Activator::start(&[object("app", "app.test", port, IDLE_COMMAND, "", "")], &[]).await;
    get(activator.proxy, "app.test", "/").await.expect("proxied");
    let (status, _, text) = get(activator.admin, "admin", "/metrics").await.expect("metrics");
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"ebb_activator_requests_total{route_namespace="web",route_name="app",code="200",cold_start="true"} 1"#,
        r#"ebb_activator_cold_starts_total{route_namespace="web",route_name="app"} 1"#,
        r#"ebb_activator_concurrency{route_namespace="web",route_name="app"} 0"#,
        r#"ebb_activator_request_duration_seconds_count{route_namespace="web",route_name="app"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    promtool_check(&text);
    activator.stop().await;
}

/// `promtool check metrics` accepts the exposition (Prometheus is part of the test set-up).
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}");
}

#[tokio::test]
async fn objects_added_and_removed_in_the_directory_are_followed() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _server = serve_echo(upstream);
    let activator = Activator::start(&[object("one", "one.test", port, IDLE_COMMAND, "", "")], &[]).await;
    let dir = activator._dir.path().to_path_buf();
    common::fs::write_atomic(
        &dir.join("two.yaml"),
        object("two", "two.test", port, IDLE_COMMAND, "", ""),
    );
    let deadline = Instant::now() + BUDGET;
    while activator.admin_json("/queue").await.get("web/two").is_none() {
        assert!(Instant::now() < deadline, "the new object is never routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = get(activator.proxy, "two.test", "/").await.expect("proxied");
    assert_eq!(status, StatusCode::OK, "{body}");

    std::fs::remove_file(dir.join("route-0.yaml")).expect("remove");
    while activator.admin_json("/queue").await.get("web/one").is_some() {
        assert!(Instant::now() < deadline, "the removed object is still routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, _) = get(activator.proxy, "one.test", "/").await.expect("answered");
    assert_eq!(status, StatusCode::NOT_FOUND);
    activator.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_fails_instead_of_pinning_the_upstream() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    // An upstream that reads the whole body before answering.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = upstream.accept().await {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    let activator = Activator::start(
        &[object("app", "app.test", port, IDLE_COMMAND, "", "")],
        &["--request-body-timeout", "200ms"],
    )
    .await;
    let mut raw = TcpStream::connect(activator.proxy).await.expect("connect");
    raw.write_all(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nab")
        .await
        .expect("write");
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(BUDGET, tokio::io::AsyncReadExt::read(&mut raw, &mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    activator.stop().await;
}

#[test]
fn the_shipped_example_is_a_valid_local_route() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/activator");
    let (routes, problems) = ebb::activator::load_local(&dir);
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(routes.len(), 1);
    assert_eq!(&*routes[0].route.key, "default/hello");
    assert_eq!(routes[0].local.port, 8081);
    assert!(dir.join("site/index.html").is_file());
}

#[test]
fn without_local_the_activator_says_the_cluster_mode_is_not_built_yet() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["activator", "--proxy-port", "0", "--metrics-port", "0"])
        .env_remove("EBB_LOCAL")
        .output()
        .expect("ebb runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs --local DIR"), "{stderr}");
}
