//! `ebb activator --local` end to end on loopback: real upstreams (HTTP/1.1, h2c, streamed
//! bodies with trailers, a Python process started on demand), held requests released the moment
//! the port accepts, the hold caps, the deadline, clients that leave, idle scale-down, and the
//! admin port's `/queue`, `/routes` and `/metrics`. Cluster mode (tests named `cluster_*`) runs
//! against a scripted API server: EndpointSlices release held requests to a real loopback
//! upstream, the first held request writes `/scale` once.
//!
//! No sleeps stand for "long enough": every wait polls a condition under a deadline.

mod common;

use common::activator::{
    Activator, BUDGET, IDLE_COMMAND, cold_start, get, object, reserved_port, serve_echo,
};
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};

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
    assert_eq!(cold_start(&headers), Some("true"));

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
    assert_eq!(cold_start(&headers), Some("true"));
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
    assert_eq!(cold_start(&headers), Some("true"));
    let (status, headers, _) = get(activator.proxy, "py.test", "/index.html")
        .await
        .expect("proxied");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cold_start(&headers), Some("false"));

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
    let dir = activator.dir.as_ref().expect("local mode").path().to_path_buf();
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
    let keys: Vec<&str> = routes.iter().map(|r| &*r.route.key).collect();
    assert_eq!(keys, ["default/hello", "default/route"]);
    let ports: Vec<u16> = routes
        .iter()
        .map(|r| match &r.backend {
            ebb::activator::Backend::Local(local) => local.port,
            other => panic!("a local route: {other:?}"),
        })
        .collect();
    assert_eq!(ports, [8081, 8082]);
    assert!(routes[1].options.cold.placeholder.is_some());
    assert_eq!(routes[1].route.statics.len(), 1);
    assert!(dir.join("site/index.html").is_file());
}

#[test]
fn without_local_or_a_cluster_the_activator_says_so() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["activator", "--proxy-port", "0", "--metrics-port", "0"])
        .env_remove("EBB_LOCAL")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", home.path().join("none"))
        .env("HOME", home.path())
        .output()
        .expect("ebb runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to create a Kubernetes client (use --local to run without a cluster)"),
        "{stderr}"
    );
}

// Cluster mode, against the scripted cluster of `common::activator_cluster` (real API JSON).

use common::activator_cluster::{Cluster, httpso, lock, push_slice, slice, spawn_api_server, wait_cluster};

/// HTTPScaledObject `ns/web` for host `web.example`; `port` is `{"port": 80}` or `{"portName": …}`.
fn cluster_object(port: Value, extra_spec: Value) -> Value {
    let mut target = json!({"port": null});
    if let (Some(t), Some(p)) = (target.as_object_mut(), port.as_object()) {
        t.extend(p.clone());
    }
    let mut spec = json!({"scaleTargetRef": target});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    httpso("web", "web.example", spec)
}

/// The scripted cluster with `objects`, Deployment `web` at `replicas` and `slices` of Service
/// `web`.
fn scripted(
    objects: Vec<Value>,
    replicas: i32,
    slices: Vec<Value>,
) -> std::sync::Arc<std::sync::Mutex<Cluster>> {
    let mut c = Cluster::new(objects, slices);
    c.replicas.insert("web".into(), replicas);
    c.shared()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_first_held_request_wakes_the_target_once_and_a_ready_slice_releases_it() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _server = serve_echo(upstream);
    // The pod exists but is not ready yet: held requests must not go to it.
    let cluster = scripted(
        vec![cluster_object(json!({"port": 80}), json!({}))],
        0,
        vec![slice("web", 5, port, None, &[("127.0.0.1", false, false)])],
    );
    let activator = Activator::start_cluster(spawn_api_server(cluster.clone()), &[]).await;

    let requests: Vec<_> = (0..3)
        .map(|i| {
            let proxy = activator.proxy;
            tokio::spawn(async move { get(proxy, "web.example", &format!("/r{i}")).await })
        })
        .collect();
    activator
        .wait_route("ns/web", "three requests held", |r| r["held"] == 3)
        .await;
    wait_cluster(&cluster, "the /scale write", |c| !c.scale_puts.is_empty()).await;
    {
        let c = lock(&cluster);
        assert_eq!(c.scale_puts.len(), 1, "one write per wake: {:?}", c.scale_puts);
        let put = &c.scale_puts[0].1;
        assert_eq!(put["spec"]["replicas"], 1, "{put}");
        assert_eq!(put["metadata"]["resourceVersion"], "7", "conflict-safe: {put}");
        assert_eq!(
            (put["kind"].as_str(), put["apiVersion"].as_str()),
            (Some("Scale"), Some("autoscaling/v1"))
        );
        assert_eq!(c.replicas_of("web"), 1);
        assert_eq!(c.service_gets, 1, "port 80 mapped through the Service once");
        assert!(
            !c.slice_selectors.is_empty()
                && c.slice_selectors
                    .iter()
                    .all(|s| s == "kubernetes.io/service-name=web"),
            "only the routed Service's slices: {:?}",
            c.slice_selectors
        );
    }

    // The pod turns ready: every held request goes to it, to the pod's address and port.
    push_slice(
        &cluster,
        slice("web", 9, port, None, &[("127.0.0.1", true, false)]),
    );
    for (i, request) in requests.into_iter().enumerate() {
        let (status, headers, body) = tokio::time::timeout(BUDGET, request)
            .await
            .expect("released in time")
            .expect("task")
            .expect("proxied");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(&format!("/r{i} host=web.example")), "{body}");
        assert_eq!(cold_start(&headers), Some("true"));
    }
    let route = activator
        .wait_route("ns/web", "released", |r| r["held"] == 0)
        .await;
    assert_eq!(
        route["endpoints"],
        json!([format!("127.0.0.1:{port}")]),
        "{route}"
    );
    assert_eq!(route["coldStarts"], 1, "{route}");
    assert_eq!(route["wakeErrors"], 0, "{route}");

    // Warm now: straight through, no /scale call.
    let (status, headers, _) = get(activator.proxy, "web.example", "/warm")
        .await
        .expect("proxied");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cold_start(&headers), Some("false"));
    let (_, _, metrics) = get(activator.admin, "admin", "/metrics").await.expect("metrics");
    assert!(
        metrics.contains(
            r#"ebb_activator_wake_duration_seconds_count{route_namespace="ns",route_name="web"} 1"#
        ),
        "{metrics}"
    );
    {
        let c = lock(&cluster);
        assert_eq!((c.scale_gets, c.scale_puts.len()), (1, 1));
        assert!(c.unexpected.is_empty(), "{:?}", c.unexpected);
    }
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_terminating_endpoints_are_skipped_and_the_cap_and_deadline_hold() {
    let (_socket, port) = reserved_port();
    // Already scaled up, its only pod terminating: held, no /scale write, 504 at the deadline.
    let cluster = scripted(
        vec![cluster_object(
            json!({"port": 80}),
            json!({"timeouts": {"conditionWait": "700ms"}}),
        )],
        1,
        vec![slice("web", 5, port, None, &[("127.0.0.1", true, true)])],
    );
    let activator = Activator::start_cluster(
        spawn_api_server(cluster.clone()),
        &["--max-held-per-route", "1", "--hold-timeout", "5s"],
    )
    .await;
    let proxy = activator.proxy;
    let first = tokio::spawn(async move { get(proxy, "web.example", "/").await });
    activator.wait_route("ns/web", "held", |r| r["held"] == 1).await;
    let (status, headers, _) = get(activator.proxy, "web.example", "/").await.expect("answered");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"5"[..]));
    let (status, _, body) = tokio::time::timeout(BUDGET, first)
        .await
        .expect("in time")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    wait_cluster(&cluster, "the /scale read", |c| c.scale_gets >= 1).await;
    let route = activator
        .wait_route("ns/web", "counted", |r| r["held"] == 0)
        .await;
    assert_eq!(
        route["endpoints"],
        json!([]),
        "terminating pods get no request: {route}"
    );
    assert_eq!(
        (route["holdTimeouts"].clone(), route["overflows"].clone()),
        (json!(1), json!(1)),
        "{route}"
    );
    assert_eq!(route["coldStarts"], 0, "{route}");
    {
        let c = lock(&cluster);
        assert!(
            c.scale_puts.is_empty(),
            "replicas > 0: nothing to write: {:?}",
            c.scale_puts
        );
        assert!(c.unexpected.is_empty(), "{:?}", c.unexpected);
    }
    activator.stop().await;
}

/// A held request meets a `/scale` write conflict; "another writer" left `raced` replicas.
async fn wake_through_a_conflict(raced: i32) -> (Vec<Value>, usize, usize) {
    // portName: the EndpointSlice port is found by name, the Service is never read.
    let cluster = scripted(
        vec![cluster_object(json!({"portName": "http"}), json!({}))],
        0,
        vec![],
    );
    {
        let mut c = lock(&cluster);
        c.conflicts = 1;
        c.raced_replicas = raced;
    }
    let activator = Activator::start_cluster(spawn_api_server(cluster.clone()), &[]).await;
    let proxy = activator.proxy;
    let held = tokio::spawn(async move { get(proxy, "web.example", "/").await });
    wait_cluster(&cluster, "the wake to settle", |c| {
        c.replicas_of("web") == 1 && c.scale_gets == 2
    })
    .await;
    let route = activator.wait_route("ns/web", "held", |r| r["held"] == 1).await;
    // The client leaves: nothing waits on the held request at shutdown.
    held.abort();
    let _ = held.await;
    activator
        .wait_route("ns/web", "abandoned", |r| r["held"] == 0)
        .await;
    activator.stop().await;
    let c = lock(&cluster);
    assert!(c.unexpected.is_empty(), "{:?}", c.unexpected);
    assert_eq!(route["wakeErrors"], 0, "{route}");
    (
        c.scale_puts.iter().map(|(_, put)| put.clone()).collect(),
        c.scale_gets,
        c.service_gets,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_scale_conflict_is_read_again_and_written_with_the_new_version() {
    let (puts, gets, service_gets) = wake_through_a_conflict(0).await;
    assert_eq!(gets, 2);
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(puts[0]["metadata"]["resourceVersion"], "7");
    assert_eq!(puts[1]["metadata"]["resourceVersion"], "8");
    assert_eq!(puts[1]["spec"]["replicas"], 1);
    assert_eq!(service_gets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_scale_conflict_with_the_target_already_up_writes_nothing_more() {
    let (puts, gets, _) = wake_through_a_conflict(1).await;
    assert_eq!(gets, 2);
    assert_eq!(puts.len(), 1, "the other writer already woke it: {puts:?}");
}

/// A WebSocket echo server (tokio-tungstenite) on `listener`.
fn serve_websocket_echo(listener: TcpListener) -> JoinHandle<()> {
    use futures::{SinkExt, StreamExt};
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() {
                        break;
                    }
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// Opens a WebSocket to `ws://host/path` through the proxy; returns the stream and the
/// handshake response's cold-start header.
async fn websocket(
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> (tokio_tungstenite::WebSocketStream<TcpStream>, Option<String>) {
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let (ws, response) = tokio_tungstenite::client_async(format!("ws://{host}{path}"), tcp)
        .await
        .expect("WebSocket handshake through the proxy");
    let cold = cold_start(response.headers()).map(str::to_owned);
    (ws, cold)
}

async fn echo_round_trip(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, text: &str) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.expect("send");
    let back = tokio::time::timeout(BUDGET, ws.next())
        .await
        .expect("echo in time")
        .expect("a message")
        .expect("not an error");
    assert_eq!(back, Message::text(text));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    let back = tokio::time::timeout(BUDGET, ws.next())
        .await
        .expect("echo in time")
        .expect("a message")
        .expect("not an error");
    assert_eq!(back, Message::binary(vec![0u8, 1, 2, 255]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_held_at_zero_then_tunnelled() {
    let (socket, port) = reserved_port();
    let activator = Activator::start(&[object("chat", "chat.test", port, IDLE_COMMAND, "", "")], &[]).await;

    let proxy = activator.proxy;
    let opening = tokio::spawn(async move { websocket(proxy, "chat.test", "/socket").await });
    activator
        .wait_route("web/chat", "the upgrade request is held", |r| r["held"] == 1)
        .await;
    let _server = serve_websocket_echo(socket.listen(64).expect("listen"));
    let (mut ws, cold) = tokio::time::timeout(BUDGET, opening)
        .await
        .expect("released in time")
        .expect("task");
    assert_eq!(cold.as_deref(), Some("true"));
    echo_round_trip(&mut ws, "hello through a cold start").await;
    // An open tunnel is a request in flight (the target must not go to zero under it).
    let route = activator.admin_json("/routes").await;
    assert_eq!(route["web/chat"]["concurrency"], 1, "{route}");

    let (mut warm, cold) = websocket(activator.proxy, "chat.test", "/socket").await;
    assert_eq!(cold.as_deref(), Some("false"));
    echo_round_trip(&mut warm, "warm").await;

    ws.close(None).await.expect("close");
    warm.close(None).await.expect("close");
    drop((ws, warm));
    activator
        .wait_route("web/chat", "both tunnels counted out", |r| r["concurrency"] == 0)
        .await;
    let (_, _, metrics) = get(activator.admin, "admin", "/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"ebb_activator_requests_total{route_namespace="web",route_name="chat",code="101",cold_start="true"} 1"#),
        "{metrics}"
    );
    activator.stop().await;
}
