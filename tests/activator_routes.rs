//! The activator's routes beyond a plain HTTPScaledObject, end to end on loopback with real
//! upstreams: InterceptorRoutes (rules, static routes, placeholder, pending cap, fallback,
//! `timeouts.request` and `responseHeader`), an InterceptorRoute winning over the
//! HTTPScaledObject of its name, the HTTPScaledObject's failover Service, and held requests
//! following edits and deletions of their object. `--local` first; then cluster mode
//! (`cluster_*`) on the scripted cluster (`common::activator_cluster`, real API JSON): one
//! EndpointSlice watch per Service shared by every route on it, the Service port's
//! `appProtocol` choosing h2c, an InterceptorRoute's wake through the ScaledObject naming it
//! (held or answered by a placeholder), `bodyFromConfigMap` bodies from watched ConfigMaps.
//!
//! No sleeps stand for "long enough": every wait polls a condition under a deadline.

mod common;

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::activator::{
    Activator, BUDGET, IDLE_COMMAND, cold_start, get, object, reserved_port, serve_echo,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// `GET path` with `Host: host` and `headers`, over HTTP/1.1.
async fn get_with(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut request = Request::get(path).header(http::header::HOST, host);
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("answered");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// An InterceptorRoute `web/NAME` for `--local` (target port `port`), `extra` appended to spec.
fn interceptor_route(name: &str, port: u16, command: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: {name}
  namespace: web
  annotations:
    activator.ebb/local-command: "{command}"
spec:
  target: {{service: {name}, port: {port}}}
  scalingMetric: {{concurrency: {{targetValue: 10}}}}
{extra}
"#
    )
}

async fn echo_port() -> u16 {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _server = serve_echo(upstream);
    port
}

fn header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interceptor_route_is_routed_by_its_rules_and_wins_over_the_httpso_of_its_name() {
    let port = echo_port().await;
    let ir = interceptor_route(
        "app",
        port,
        IDLE_COMMAND,
        r#"  rules:
    - hosts: [a.test]
      paths: [{value: /api}]
      headers: [{name: X-Tenant, value: blue}]
    - hosts: [b.test]"#,
    );
    // Same namespace/name, another host: the InterceptorRoute takes its place.
    let httpso = object("app", "c.test", port, IDLE_COMMAND, "", "");
    let activator = Activator::start(&[ir, httpso], &[]).await;

    let (status, headers, body) =
        get_with(activator.proxy, "a.test", "/api/x", &[("x-tenant", "blue")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("/api/x host=a.test"), "{body}");
    assert_eq!(cold_start(&headers), Some("true"));
    // AND within a rule: without the header, or outside the path, no route.
    assert_eq!(
        get_with(activator.proxy, "a.test", "/api/x", &[]).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_with(activator.proxy, "a.test", "/other", &[("x-tenant", "blue")])
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // OR across rules.
    assert_eq!(
        get_with(activator.proxy, "b.test", "/any", &[]).await.0,
        StatusCode::OK
    );
    // The HTTPScaledObject of the same name is not routed.
    assert_eq!(
        get_with(activator.proxy, "c.test", "/", &[]).await.0,
        StatusCode::NOT_FOUND
    );

    // Counted under the route's key: what /queue (and the interceptorRoute trigger) reads.
    let queue = activator.admin_json("/queue").await;
    assert_eq!(queue["web/app"]["RequestCount"], 2, "{queue}");
    let routes = activator.admin_json("/routes").await;
    assert_eq!(routes["web/app"]["kind"], "InterceptorRoute", "{routes}");
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_routes_answer_without_counting_or_waking() {
    let port = echo_port().await;
    let ir = interceptor_route(
        "app",
        port,
        IDLE_COMMAND,
        r#"  rules: [{hosts: [app.test]}]
  staticRoutes:
    - rules: [{paths: [{value: /healthz}]}]
      response: {body: OK}
    - rules: [{paths: [{value: /maintenance}]}]
      responseMode: Always
      response: {statusCode: 503, body: "<h1>down</h1>", headers: {Content-Type: text/html}}"#,
    );
    let activator = Activator::start(&[ir], &[]).await;

    // At zero: the static answer, not counted, no start.
    let (status, _, body) = get_with(activator.proxy, "app.test", "/healthz", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));
    let route = activator.admin_json("/routes").await["web/app"].clone();
    assert_eq!(
        (route["requestCount"].clone(), route["coldStarts"].clone()),
        (json!(0), json!(0)),
        "{route}"
    );

    // Up (a request woke it): WhenUnavailable now forwards; Always still answers.
    assert_eq!(
        get_with(activator.proxy, "app.test", "/", &[]).await.0,
        StatusCode::OK
    );
    let (status, _, body) = get_with(activator.proxy, "app.test", "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/healthz host=app.test"), "forwarded: {body}");
    let (status, headers, body) = get_with(activator.proxy, "app.test", "/maintenance/x", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "<h1>down</h1>")
    );
    assert_eq!(header(&headers, "content-type"), Some("text/html"));
    let route = activator.admin_json("/routes").await["web/app"].clone();
    assert_eq!(route["requestCount"], 2, "the forwarded /healthz counts: {route}");
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_answers_at_once_counts_the_request_and_still_wakes() {
    let (socket, port) = reserved_port();
    let ir = interceptor_route(
        "app",
        port,
        IDLE_COMMAND,
        r#"  coldStart:
    placeholder:
      response: {body: "<h1>Loading</h1>", headers: {Refresh: "5", Content-Type: text/html}}"#,
    );
    let activator = Activator::start(&[ir], &[]).await;

    let (status, headers, body) = tokio::time::timeout(BUDGET, get_with(activator.proxy, "x.test", "/", &[]))
        .await
        .expect("answered at once, not held");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "<h1>Loading</h1>")
    );
    assert_eq!(header(&headers, "refresh"), Some("5"));
    assert_eq!(cold_start(&headers), Some("true"));
    // The wake fired (the process was started) and the request is in the rate window's count
    // although nothing was ever in flight for long (jaseci-labs/jac#8695).
    let route = activator
        .wait_route("web/app", "the wake", |r| r["coldStarts"] == 1)
        .await;
    assert_eq!(
        (route["held"].clone(), route["placeholders"].clone()),
        (json!(0), json!(1)),
        "{route}"
    );
    assert_eq!(activator.admin_json("/queue").await["web/app"]["RequestCount"], 1);

    // The target comes up: requests go to it.
    let _server = serve_echo(socket.listen(64).expect("listen"));
    activator
        .wait_route("web/app", "ready", |r| {
            r["endpoints"].as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
    let (status, headers, _) = get_with(activator.proxy, "x.test", "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cold_start(&headers), Some("false"));
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_pending_requests_the_overflow_answer_is_sent() {
    let (_socket, port) = reserved_port();
    let reject = interceptor_route(
        "reject",
        port,
        IDLE_COMMAND,
        "  rules: [{hosts: [reject.test]}]\n  coldStart: {maxPendingRequests: 1}",
    );
    let page = interceptor_route(
        "page",
        port,
        IDLE_COMMAND,
        "  rules: [{hosts: [page.test]}]\n  coldStart: {maxPendingRequests: 1, overflow: Placeholder}",
    );
    let activator = Activator::start(&[reject, page], &["--hold-timeout", "30s"]).await;
    let proxy = activator.proxy;
    let held: Vec<_> = ["reject.test", "page.test"]
        .into_iter()
        .map(|host| tokio::spawn(async move { get(proxy, host, "/").await }))
        .collect();
    activator
        .wait_route("web/reject", "held", |r| r["held"] == 1)
        .await;
    activator.wait_route("web/page", "held", |r| r["held"] == 1).await;

    let (status, headers, _) = get_with(activator.proxy, "reject.test", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let (status, headers, body) = get_with(activator.proxy, "page.test", "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, ""));
    assert!(
        !headers.contains_key("retry-after"),
        "the placeholder, not the 503 of a cap"
    );
    assert_eq!(cold_start(&headers), Some("true"));
    for (key, placeholders) in [("web/reject", 0), ("web/page", 1)] {
        let route = activator.admin_json("/routes").await[key].clone();
        assert_eq!(
            (route["overflows"].clone(), route["placeholders"].clone()),
            (json!(1), json!(placeholders)),
            "{key}: {route}"
        );
    }
    for h in held {
        h.abort();
    }
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_takes_held_requests_at_the_deadline() {
    let fallback = echo_port().await;
    let (_never, port) = reserved_port();
    // HTTPScaledObject: coldStartTimeoutFailoverRef (with --local, a loopback port).
    let httpso = object(
        "so",
        "so.test",
        port,
        IDLE_COMMAND,
        &format!("  coldStartTimeoutFailoverRef: {{service: sorry, port: {fallback}, timeoutSeconds: 1}}"),
        "",
    );
    // InterceptorRoute: coldStart.fallback, its readiness deadline.
    let ir = interceptor_route(
        "ir",
        port,
        IDLE_COMMAND,
        &format!(
            "  rules: [{{hosts: [ir.test]}}]\n  timeouts: {{readiness: 300ms}}\n  coldStart: {{fallback: {{service: sorry, port: {fallback}}}}}"
        ),
    );
    let activator = Activator::start(&[httpso, ir], &["--hold-timeout", "60s"]).await;
    for (host, key, at_least) in [
        ("so.test", "web/so", Duration::from_secs(1)),
        ("ir.test", "web/ir", Duration::from_millis(300)),
    ] {
        let started = Instant::now();
        let (status, headers, body) =
            tokio::time::timeout(BUDGET, get_with(activator.proxy, host, "/p", &[]))
                .await
                .expect("answered by the fallback");
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        assert!(body.contains(&format!("/p host={host}")), "{body}");
        assert!(started.elapsed() >= at_least, "{host}: after the deadline");
        assert_eq!(cold_start(&headers), Some("true"));
        let route = activator.admin_json("/routes").await[key].clone();
        assert_eq!(
            (route["fallbacks"].clone(), route["holdTimeouts"].clone()),
            (json!(1), json!(0)),
            "{route}"
        );
    }
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_follow_an_edit_and_end_at_once_on_delete() {
    let (_never, cold_port) = reserved_port();
    let warm_port = echo_port().await;
    let activator = Activator::start(
        &[object("app", "app.test", cold_port, IDLE_COMMAND, "", "")],
        &["--hold-timeout", "60s"],
    )
    .await;
    let dir = activator.dir.as_ref().expect("local").path().to_path_buf();
    let proxy = activator.proxy;
    let held = tokio::spawn(async move { get(proxy, "app.test", "/edited").await });
    activator.wait_route("web/app", "held", |r| r["held"] == 1).await;

    // The target's port changes: the held request goes to the new target, long before 60 s.
    common::fs::write_atomic(
        &dir.join("route-0.yaml"),
        object("app", "app.test", warm_port, IDLE_COMMAND, "", ""),
    );
    let (status, _, body) = tokio::time::timeout(BUDGET, held)
        .await
        .expect("re-routed in time")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("/edited host=app.test"), "{body}");

    // Held on a route whose object is then deleted: 404 at once.
    common::fs::write_atomic(
        &dir.join("route-0.yaml"),
        object("app", "app.test", cold_port, IDLE_COMMAND, "", ""),
    );
    activator
        .wait_route("web/app", "the cold target back", |r| r["port"] == cold_port)
        .await;
    let held = tokio::spawn(async move { get(proxy, "app.test", "/deleted").await });
    activator.wait_route("web/app", "held", |r| r["held"] == 1).await;
    std::fs::remove_file(dir.join("route-0.yaml")).expect("delete");
    let (status, _, body) = tokio::time::timeout(BUDGET, held)
        .await
        .expect("answered at once")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    activator.stop().await;
}

/// An upstream on a port of its own that sends response headers only once `release` turns
/// true (`late` then); on `/stall-body` it sends headers and a first chunk at once and the rest
/// on release.
async fn slow_port(release: watch::Receiver<bool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let release = release.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let mut release = release.clone();
                    async move {
                        if request.uri().path() == "/stall-body" {
                            let chunks = futures::stream::unfold(0, move |n| {
                                let mut release = release.clone();
                                async move {
                                    match n {
                                        0 => {
                                            Some((Ok::<_, Infallible>(Frame::data(Bytes::from("first "))), 1))
                                        }
                                        1 => {
                                            let _ = release.wait_for(|r| *r).await;
                                            Some((Ok(Frame::data(Bytes::from("rest"))), 2))
                                        }
                                        _ => None,
                                    }
                                }
                            });
                            return Ok::<_, Infallible>(Response::new(
                                StreamBody::new(chunks).boxed_unsync(),
                            ));
                        }
                        let _ = release.wait_for(|r| *r).await;
                        Ok(Response::new(Full::new(Bytes::from("late")).boxed_unsync()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    port
}

/// `GET path` with `Host: host` through the proxy, awaited up to the test budget.
async fn answered(proxy: std::net::SocketAddr, host: &str, path: &str) -> (StatusCode, String, Duration) {
    let started = Instant::now();
    let (status, _, body) = tokio::time::timeout(BUDGET, get_with(proxy, host, path, &[]))
        .await
        .expect("answered in time");
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_request_bounds_the_hold_the_response_headers_and_the_body() {
    let (release, released) = watch::channel(false);
    let slow = slow_port(released).await;
    let (_never, cold) = reserved_port();
    let fast = echo_port().await;
    let route = |name: &str, port: u16, request: &str| {
        interceptor_route(
            name,
            port,
            IDLE_COMMAND,
            &format!("  rules: [{{hosts: [{name}.test]}}]\n  timeouts: {{request: {request}}}"),
        )
    };
    let activator = Activator::start(
        &[
            route("slow", slow, "300ms"),
            route("cold", cold, "300ms"),
            route("fast", fast, "5s"),
        ],
        &["--hold-timeout", "60s"],
    )
    .await;
    let key = |name: &str| format!("web/{name}");

    // No response headers within the request deadline: 504, an upstream timeout.
    let (status, body, took) = answered(activator.proxy, "slow.test", "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let r = activator.admin_json("/routes").await[key("slow")].clone();
    assert_eq!(
        (r["upstreamErrors"].clone(), r["holdTimeouts"].clone()),
        (json!(1), json!(0)),
        "{r}"
    );

    // Held with no endpoint: 504 at the request deadline, long before the 60 s hold deadline.
    let (status, body, took) = answered(activator.proxy, "cold.test", "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let r = activator.admin_json("/routes").await[key("cold")].clone();
    assert_eq!(r["holdTimeouts"], 1, "{r}");

    // Headers in time, then the body stalls past the deadline: the body is cut.
    let tcp = TcpStream::connect(activator.proxy).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get("/stall-body")
        .header(http::header::HOST, "slow.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(BUDGET, sender.send_request(request))
        .await
        .expect("headers in time")
        .expect("headers");
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(BUDGET, response.into_body().collect())
        .await
        .expect("the body ends in time");
    assert!(body.is_err(), "cut at the deadline, not completed: {body:?}");

    // Within the deadline: answered.
    let (status, body, _) = answered(activator.proxy, "fast.test", "/ok").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("/ok host=fast.test"), "{body}");
    let _ = release.send(true);
    activator.stop().await;
}

/// Sends `GET /` to `host`, checks it is still waiting after three times `deadline`, then
/// releases the upstream: the answer is the upstream's.
async fn outlives(
    proxy: std::net::SocketAddr,
    host: &'static str,
    deadline: Duration,
    release: &watch::Sender<bool>,
) {
    let request = tokio::spawn(async move { get_with(proxy, host, "/", &[]).await });
    // What is tested is that no deadline fires: waiting past it is the test.
    tokio::time::sleep(deadline * 3).await;
    assert!(!request.is_finished(), "{host}: answered before the upstream was");
    let _ = release.send(true);
    let (status, _, body) = tokio::time::timeout(BUDGET, request)
        .await
        .expect("answered in time")
        .expect("task");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "late"), "{host}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_request_0s_disables_the_global_request_deadline() {
    let (release, released) = watch::channel(false);
    let slow = slow_port(released).await;
    let global = interceptor_route("global", slow, IDLE_COMMAND, "  rules: [{hosts: [global.test]}]");
    let off = interceptor_route(
        "off",
        slow,
        IDLE_COMMAND,
        "  rules: [{hosts: [off.test]}]\n  timeouts: {request: 0s}",
    );
    let activator = Activator::start(&[global, off], &["--request-timeout", "300ms"]).await;
    let (status, body, _) = answered(activator.proxy, "global.test", "/").await;
    assert_eq!(
        status,
        StatusCode::GATEWAY_TIMEOUT,
        "--request-timeout applies: {body}"
    );
    outlives(activator.proxy, "off.test", Duration::from_millis(300), &release).await;
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_response_header_answers_504_and_0s_disables_the_global_one() {
    let (release, released) = watch::channel(false);
    let slow = slow_port(released).await;
    let short = interceptor_route(
        "short",
        slow,
        IDLE_COMMAND,
        "  rules: [{hosts: [short.test]}]\n  timeouts: {responseHeader: 300ms}",
    );
    let off = interceptor_route(
        "off",
        slow,
        IDLE_COMMAND,
        "  rules: [{hosts: [off.test]}]\n  timeouts: {responseHeader: 0s}",
    );
    let activator = Activator::start(&[short, off], &["--response-header-timeout", "300ms"]).await;
    let (status, body, took) = answered(activator.proxy, "short.test", "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let r = activator.admin_json("/routes").await["web/short"].clone();
    assert_eq!(r["upstreamErrors"], 1, "{r}");
    outlives(activator.proxy, "off.test", Duration::from_millis(300), &release).await;
    activator.stop().await;
}

// Cluster mode, against the scripted cluster of `common::activator_cluster` (real API JSON).

use common::activator_cluster::{
    Cluster, config_map, httpso, interceptor_route as cluster_route, lock, push_config_map, push_object,
    push_slice, route_scaled_object, service, slice, spawn_api_server, wait_cluster,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_on_one_service_share_its_watch_and_app_protocol_h2c_is_spoken() {
    let port = echo_port().await;
    let ir = cluster_route("api", "api.example", json!({}));
    let mut c = Cluster::new(
        vec![httpso("web", "web.example", json!({})), ir],
        vec![slice(
            "web",
            5,
            port,
            Some("kubernetes.io/h2c"),
            &[("127.0.0.1", false, false)],
        )],
    );
    // The user's ScaledObject for the route: it names the workload the activator wakes.
    c.scaled_objects.push(route_scaled_object("api", "api"));
    c.services
        .insert("web".into(), service("web", Some("kubernetes.io/h2c")));
    let cluster = c.shared();
    let activator = Activator::start_cluster(spawn_api_server(cluster.clone()), &[]).await;

    let proxy = activator.proxy;
    let held = tokio::spawn(async move { get(proxy, "api.example", "/held").await });
    activator.wait_route("ns/api", "held", |r| r["held"] == 1).await;
    wait_cluster(&cluster, "the InterceptorRoute's wake", |c| {
        !c.scale_puts.is_empty()
    })
    .await;
    {
        let c = lock(&cluster);
        assert_eq!(c.scaled_object_lists, 1);
        let (name, put) = &c.scale_puts[0];
        assert_eq!(
            (name.as_str(), &put["spec"]["replicas"]),
            ("api", &json!(1)),
            "{put}"
        );
        // Two routes on Service web: one list and watch of its slices, not one per route.
        assert_eq!(c.slice_lists.get("web"), Some(&1), "{:?}", c.slice_lists);
        assert_eq!(c.slice_lists.len(), 1, "{:?}", c.slice_lists);
    }

    push_slice(
        &cluster,
        slice(
            "web",
            9,
            port,
            Some("kubernetes.io/h2c"),
            &[("127.0.0.1", true, false)],
        ),
    );
    let (status, _, body) = tokio::time::timeout(BUDGET, held)
        .await
        .expect("released")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::OK, "{body}");
    // The client spoke HTTP/1.1; the port's appProtocol asked for h2c.
    assert!(body.starts_with("HTTP/2.0 /held host=api.example"), "{body}");
    let (status, _, body) = get(activator.proxy, "web.example", "/w").await.expect("answered");
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("HTTP/2.0 /w"), "{body}");
    assert!(
        lock(&cluster).unexpected.is_empty(),
        "{:?}",
        lock(&cluster).unexpected
    );
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_failover_service_takes_held_requests_and_a_deleted_object_ends_its_holds() {
    let fallback = echo_port().await;
    let (_never, dead) = reserved_port();
    let web = httpso(
        "web",
        "web.example",
        json!({"coldStartTimeoutFailoverRef": {"service": "sorry", "portName": "http", "timeoutSeconds": 1}}),
    );
    let other = httpso(
        "other",
        "other.example",
        json!({"timeouts": {"conditionWait": "60s"}}),
    );
    let mut c = Cluster::new(
        vec![web.clone(), other.clone()],
        vec![
            slice("web", 5, dead, None, &[("127.0.0.1", false, false)]),
            slice("sorry", 5, fallback, None, &[("127.0.0.1", true, false)]),
        ],
    );
    c.replicas.insert("web".into(), 1);
    let cluster = c.shared();
    let activator = Activator::start_cluster(spawn_api_server(cluster.clone()), &[]).await;

    // Not ready within timeoutSeconds: the failover Service's ready pod answers.
    let started = Instant::now();
    let (status, headers, body) = tokio::time::timeout(BUDGET, get(activator.proxy, "web.example", "/f"))
        .await
        .expect("in time")
        .expect("answered");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("/f host=web.example"), "{body}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(cold_start(&headers), Some("true"));
    let route = activator.admin_json("/routes").await["ns/web"].clone();
    assert_eq!(
        (route["fallbacks"].clone(), route["holdTimeouts"].clone()),
        (json!(1), json!(0)),
        "{route}"
    );
    {
        let c = lock(&cluster);
        // Two routes and a fallback on two Services: two watches.
        assert_eq!(c.slice_lists.get("web"), Some(&1), "{:?}", c.slice_lists);
        assert_eq!(c.slice_lists.get("sorry"), Some(&1), "{:?}", c.slice_lists);
    }

    // Held on `other`, then `other` is deleted: 404 at once, not at its 60 s deadline.
    let proxy = activator.proxy;
    let held = tokio::spawn(async move { get(proxy, "other.example", "/").await });
    activator.wait_route("ns/other", "held", |r| r["held"] == 1).await;
    push_object(&cluster, "DELETED", other);
    let (status, _, body) = tokio::time::timeout(BUDGET, held)
        .await
        .expect("answered at once")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The last route on Service web goes: its watch stops; the route back: a new watch.
    push_object(&cluster, "DELETED", web.clone());
    activator.wait_route("ns/web", "removed", |r| r.is_null()).await;
    push_object(&cluster, "ADDED", web);
    activator.wait_route("ns/web", "back", |r| !r.is_null()).await;
    wait_cluster(&cluster, "a new watch of web's slices", |c| {
        c.slice_lists.get("web") == Some(&2) && c.slice_lists.get("sorry") == Some(&2)
    })
    .await;
    assert!(
        lock(&cluster).unexpected.is_empty(),
        "{:?}",
        lock(&cluster).unexpected
    );
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_the_interceptor_route_crd_http_scaled_objects_are_still_routed() {
    let port = echo_port().await;
    let mut c = Cluster::new(
        vec![httpso("web", "web.example", json!({}))],
        vec![slice("web", 5, port, None, &[("127.0.0.1", true, false)])],
    );
    c.replicas.insert("web".into(), 1);
    c.interceptor_routes_error = Some(404);
    let cluster = c.shared();
    // Ready (start_cluster waits for /readyz) although InterceptorRoutes cannot be listed.
    let activator = Activator::start_cluster(spawn_api_server(cluster.clone()), &[]).await;
    activator
        .wait_route("ns/web", "ready", |r| {
            r["endpoints"].as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
    let (status, _, body) = get(activator.proxy, "web.example", "/").await.expect("answered");
    assert_eq!(status, StatusCode::OK, "{body}");
    activator.stop().await;
}

/// `GET path` on `host` until `check` holds for the answer (a ConfigMap's watch delivers it a
/// moment after the route is in); the last answer.
async fn answer_until(
    proxy: std::net::SocketAddr,
    host: &str,
    path: &str,
    what: &str,
    check: impl Fn(StatusCode, &str) -> bool,
) -> (StatusCode, http::HeaderMap, String) {
    let deadline = Instant::now() + BUDGET;
    loop {
        let (status, headers, body) = get_with(proxy, host, path, &[]).await;
        if check(status, &body) {
            return (status, headers, body);
        }
        assert!(Instant::now() < deadline, "{what}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_bodies_from_config_maps_are_watched_and_served() {
    let static_route = |path: &str, response: serde_json::Value| json!({"rules": [{"paths": [{"value": path}]}], "responseMode": "Always", "response": response});
    let ir = cluster_route(
        "page",
        "page.example",
        json!({
            "staticRoutes": [
                static_route("/maintenance", json!({"statusCode": 503, "bodyFromConfigMap": {"name": "pages", "key": "maintenance.html"}})),
                static_route("/missing-key", json!({"bodyFromConfigMap": {"name": "pages", "key": "nope.html"}})),
                static_route("/unlabelled", json!({"bodyFromConfigMap": {"name": "plain", "key": "index.html"}})),
            ],
            "coldStart": {"placeholder": {"response": {"bodyFromConfigMap": {"name": "pages"}}}}
        }),
    );
    let mut c = Cluster::new(vec![ir], vec![]);
    c.scaled_objects.push(route_scaled_object("page", "web"));
    let pages = |maintenance: &str| {
        config_map(
            "pages",
            20,
            true,
            json!({"maintenance.html": maintenance, "index.html": "<h1>starting</h1>", "style.css": "h1 {}"}),
        )
    };
    c.config_maps.insert("pages".into(), pages("<h1>down</h1>"));
    c.config_maps.insert(
        "plain".into(),
        config_map("plain", 21, false, json!({"index.html": "not served"})),
    );
    let cluster = c.shared();
    let activator = Activator::start_cluster(spawn_api_server(cluster.clone()), &[]).await;
    let proxy = activator.proxy;

    // A static route's body from a named key; its Content-Type from the key's extension.
    let (_, headers, _) = answer_until(
        proxy,
        "page.example",
        "/maintenance",
        "the ConfigMap's body",
        |s, b| s == StatusCode::SERVICE_UNAVAILABLE && b == "<h1>down</h1>",
    )
    .await;
    assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"));
    // A named key the ConfigMap lacks, and a ConfigMap without the label: 500, as the add-on.
    assert_eq!(
        get_with(proxy, "page.example", "/missing-key", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get_with(proxy, "page.example", "/unlabelled", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // The placeholder without a key: the key is the path (index.html for /); a missing one
    // is an empty body.
    for (path, body, content_type) in [
        ("/", "<h1>starting</h1>", Some("text/html; charset=utf-8")),
        ("/style.css", "h1 {}", Some("text/css; charset=utf-8")),
        ("/favicon.ico", "", None),
    ] {
        let (status, headers, got) = get_with(proxy, "page.example", path, &[]).await;
        assert_eq!(
            (status, got.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, body),
            "{path}"
        );
        assert_eq!(header(&headers, "content-type"), content_type, "{path}");
        assert_eq!(cold_start(&headers), Some("true"), "{path}");
    }

    // An edit of the ConfigMap is served without touching the route; deleting it is a 500.
    push_config_map(&cluster, "MODIFIED", pages("<h1>back soon</h1>"));
    answer_until(
        proxy,
        "page.example",
        "/maintenance",
        "the edited body",
        |_, b| b == "<h1>back soon</h1>",
    )
    .await;
    push_config_map(&cluster, "DELETED", pages("<h1>back soon</h1>"));
    answer_until(
        proxy,
        "page.example",
        "/maintenance",
        "the deleted ConfigMap",
        |s, _| s == StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    {
        let c = lock(&cluster);
        // One watch per ConfigMap, shared by the static routes and the placeholder.
        assert_eq!(
            c.config_map_lists.get("pages"),
            Some(&1),
            "{:?}",
            c.config_map_lists
        );
        assert_eq!(
            c.config_map_lists.get("plain"),
            Some(&1),
            "{:?}",
            c.config_map_lists
        );
        assert!(c.unexpected.is_empty(), "{:?}", c.unexpected);
    }
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_bodies_from_config_maps_come_from_the_directory() {
    let (_never, port) = reserved_port();
    let ir = interceptor_route(
        "app",
        port,
        IDLE_COMMAND,
        r#"  rules: [{hosts: [app.test]}]
  staticRoutes:
    - rules: [{paths: [{value: /maintenance}]}]
      responseMode: Always
      response: {bodyFromConfigMap: {name: pages, key: maintenance.html}}
    - rules: [{paths: [{value: /other}]}]
      responseMode: Always
      response: {bodyFromConfigMap: {name: absent}}"#,
    );
    let pages = |text: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pages\n  namespace: web\n  labels: {{http.keda.sh/response-body: \"true\"}}\ndata:\n  maintenance.html: \"{text}\"\n"
        )
    };
    let activator = Activator::start(&[ir, pages("<p>down</p>")], &[]).await;
    let (status, headers, body) = get_with(activator.proxy, "app.test", "/maintenance", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "<p>down</p>"));
    assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        get_with(activator.proxy, "app.test", "/other", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR,
        "no such ConfigMap in the directory"
    );
    // The directory is re-read: an edited ConfigMap is served.
    let dir = activator.dir.as_ref().expect("local").path().to_path_buf();
    common::fs::write_atomic(&dir.join("route-1.yaml"), pages("<p>back</p>"));
    answer_until(
        activator.proxy,
        "app.test",
        "/maintenance",
        "the edited file",
        |_, b| b == "<p>back</p>",
    )
    .await;
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_placeholder_answers_at_once_and_the_scale_write_is_sent() {
    let port = echo_port().await;
    let ir = cluster_route(
        "ph",
        "ph.example",
        json!({"coldStart": {"placeholder": {"response": {"body": "<h1>Loading</h1>", "headers": {"Refresh": "2"}}}}}),
    );
    let mut c = Cluster::new(vec![ir], vec![]);
    c.scaled_objects.push(route_scaled_object("ph", "web"));
    let cluster = c.shared();
    let activator =
        Activator::start_cluster(spawn_api_server(cluster.clone()), &["--hold-timeout", "60s"]).await;

    // Answered at once (not held for the 60 s hold deadline), with the add-on's 503.
    let (status, headers, body) =
        tokio::time::timeout(BUDGET, get_with(activator.proxy, "ph.example", "/", &[]))
            .await
            .expect("answered at once");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "<h1>Loading</h1>")
    );
    assert_eq!(header(&headers, "refresh"), Some("2"));
    assert_eq!(cold_start(&headers), Some("true"));
    // The wake went out: the ScaledObject naming the route was read, its workload set to 1.
    wait_cluster(&cluster, "the /scale write", |c| !c.scale_puts.is_empty()).await;
    {
        let c = lock(&cluster);
        let (name, put) = &c.scale_puts[0];
        assert_eq!(
            (name.as_str(), &put["spec"]["replicas"]),
            ("web", &json!(1)),
            "{put}"
        );
        assert_eq!(c.scaled_object_lists, 1);
    }
    // Counted (activity in the rate window), never held.
    let route = activator
        .wait_route("ns/ph", "the wake counted", |r| r["coldStarts"] == 1)
        .await;
    assert_eq!(
        (
            route["requestCount"].clone(),
            route["placeholders"].clone(),
            route["held"].clone(),
            route["holdTimeouts"].clone()
        ),
        (json!(1), json!(1), json!(0), json!(0)),
        "{route}"
    );
    assert_eq!(activator.admin_json("/queue").await["ns/ph"]["RequestCount"], 1);

    // The pod is ready: requests go to it.
    push_slice(
        &cluster,
        slice("web", 9, port, None, &[("127.0.0.1", true, false)]),
    );
    let (_, headers, body) = answer_until(activator.proxy, "ph.example", "/up", "forwarded", |s, _| {
        s == StatusCode::OK
    })
    .await;
    assert!(body.contains("/up host=ph.example"), "{body}");
    assert_eq!(cold_start(&headers), Some("false"));
    {
        let c = lock(&cluster);
        assert_eq!(c.scale_puts.len(), 1, "one wake: {:?}", c.scale_puts);
        assert!(c.unexpected.is_empty(), "{:?}", c.unexpected);
    }
    activator.stop().await;
}
