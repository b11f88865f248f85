//! The activator's routes beyond a plain HTTPScaledObject, end to end on loopback with real
//! upstreams: InterceptorRoutes (rules, static routes, placeholder, pending cap, fallback), an
//! InterceptorRoute winning over the HTTPScaledObject of its name, the HTTPScaledObject's
//! failover Service, and held requests following edits and deletions of their object. `--local`
//! first; then cluster mode (`cluster_*`) on the scripted API server fed real API JSON: one
//! EndpointSlice watch per Service shared by every route on it, the Service port's
//! `appProtocol` choosing h2c, an InterceptorRoute's wake through the ScaledObject naming it.
//!
//! No sleeps stand for "long enough": every wait polls a condition under a deadline.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::activator::{Activator, BUDGET, IDLE_COMMAND, get, object, reserved_port, serve_echo};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

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
    assert_eq!(header(&headers, "x-keda-http-cold-start"), Some("true"));
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
    assert_eq!(header(&headers, "x-keda-http-cold-start"), Some("true"));
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
    assert_eq!(header(&headers, "x-keda-http-cold-start"), Some("false"));
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
    assert_eq!(header(&headers, "x-keda-http-cold-start"), Some("true"));
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
        assert_eq!(header(&headers, "x-keda-http-cold-start"), Some("true"));
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

// Cluster mode, against a scripted API server on kube's mocked client (tower-test): lists carry
// the objects, watches stay open until the test pushes an event, `/scale` reads and writes are
// recorded. Shapes are the API server's: discovery.k8s.io/v1 EndpointSlice, autoscaling/v1
// Scale, keda.sh/v1alpha1 ScaledObjectList.

use common::scripted_api::{Handle as ApiHandle, Pending, reply};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What the scripted API server holds and saw.
#[derive(Default)]
struct Cluster {
    http_scaled_objects: Vec<Value>,
    interceptor_routes: Vec<Value>,
    scaled_objects: Vec<Value>,
    services: HashMap<String, Value>,
    /// EndpointSlices by name (each labelled with its Service).
    slices: BTreeMap<String, Value>,
    /// Per Service: EndpointSlice lists served (one per watch started), the open watch, events
    /// not delivered yet.
    slice_lists: HashMap<String, usize>,
    slice_watches: HashMap<String, Pending>,
    slice_events: HashMap<String, Vec<Value>>,
    /// The Service of the slice watch `answer` just left open (for `hold`).
    opening: Option<String>,
    httpso_watch: Option<Pending>,
    httpso_events: Vec<Value>,
    watches: Vec<Pending>,
    /// Deployment name → replicas.
    replicas: HashMap<String, i32>,
    resource_version: u64,
    scale_puts: Vec<(String, Value)>,
    scaled_object_lists: usize,
    service_gets: usize,
    /// Answer InterceptorRoute lists with this error code (the CRD missing: 404).
    interceptor_routes_error: Option<u16>,
    unexpected: Vec<String>,
}

fn lock(c: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn query_param(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn watch_body(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend(serde_json::to_vec(e).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

fn scale_json(name: &str, replicas: i32, rv: u64) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string()},
           "spec": {"replicas": replicas},
           "status": {"replicas": replicas, "selector": format!("app={name}")}})
}

fn answer_api(
    c: &mut Cluster,
    method: &http::Method,
    path: &str,
    query: &str,
    body: &Value,
) -> Option<(StatusCode, Value)> {
    let watching = query_param(query, "watch").is_some_and(|w| w == "true" || w == "1");
    let list = |api_version: &str, kind: &str, items: Vec<Value>, rv: u64| json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv.to_string()}, "items": items});
    const SCALE_PREFIX: &str = "/apis/apps/v1/namespaces/ns/deployments/";
    match (method.as_str(), path) {
        ("GET", "/apis/http.keda.sh/v1alpha1/httpscaledobjects") => (!watching).then(|| {
            let items = c.http_scaled_objects.clone();
            (
                StatusCode::OK,
                list("http.keda.sh/v1alpha1", "HTTPScaledObjectList", items, 10),
            )
        }),
        ("GET", "/apis/http.keda.sh/v1beta1/interceptorroutes") if c.interceptor_routes_error.is_some() => {
            let code = c.interceptor_routes_error.unwrap_or(404);
            Some((
                StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND),
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                       "message": "the server could not find the requested resource", "code": code}),
            ))
        }
        ("GET", "/apis/http.keda.sh/v1beta1/interceptorroutes") => (!watching).then(|| {
            let items = c.interceptor_routes.clone();
            (
                StatusCode::OK,
                list("http.keda.sh/v1beta1", "InterceptorRouteList", items, 10),
            )
        }),
        ("GET", "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects") => {
            c.scaled_object_lists += 1;
            let items = c.scaled_objects.clone();
            Some((
                StatusCode::OK,
                list("keda.sh/v1alpha1", "ScaledObjectList", items, 10),
            ))
        }
        ("GET", "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices") => {
            let selector = query_param(query, "labelSelector").unwrap_or_default();
            let service = selector
                .strip_prefix("kubernetes.io/service-name=")
                .unwrap_or_default()
                .to_owned();
            if watching {
                c.opening = Some(service);
                return None;
            }
            *c.slice_lists.entry(service.clone()).or_default() += 1;
            let items = c
                .slices
                .values()
                .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service.as_str())
                .cloned()
                .collect();
            Some((
                StatusCode::OK,
                list(
                    "discovery.k8s.io/v1",
                    "EndpointSliceList",
                    items,
                    c.resource_version,
                ),
            ))
        }
        ("GET", p) if p.starts_with("/api/v1/namespaces/ns/services/") => {
            c.service_gets += 1;
            let name = p.rsplit('/').next().unwrap_or_default();
            Some(match c.services.get(name) {
                Some(s) => (StatusCode::OK, s.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
            })
        }
        (m, p) if p.starts_with(SCALE_PREFIX) && p.ends_with("/scale") => {
            let name = p[SCALE_PREFIX.len()..].trim_end_matches("/scale").to_owned();
            let rv = c.resource_version;
            if m == "PUT" {
                c.scale_puts.push((name.clone(), body.clone()));
                let wanted = body["spec"]["replicas"].as_i64().unwrap_or(-1) as i32;
                c.replicas.insert(name.clone(), wanted);
                c.resource_version += 1;
            }
            let replicas = c.replicas.get(&name).copied().unwrap_or(0);
            Some((StatusCode::OK, scale_json(&name, replicas, rv)))
        }
        _ => {
            c.unexpected.push(format!("{method} {path}?{query}"));
            Some((
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ))
        }
    }
}

fn spawn_api_server(cluster: Arc<Mutex<Cluster>>) -> kube::Client {
    let (svc, handle): (_, ApiHandle) = tower_test::mock::pair();
    common::scripted_api::serve(handle, cluster, answer_api, |c, path, send| {
        if path.ends_with("/endpointslices") {
            let service = c.opening.take().unwrap_or_default();
            match c.slice_events.remove(&service).filter(|e| !e.is_empty()) {
                Some(events) => reply(send, StatusCode::OK, watch_body(&events)),
                None => {
                    c.slice_watches.insert(service, send);
                }
            }
        } else if path.ends_with("/httpscaledobjects") {
            if c.httpso_events.is_empty() {
                c.httpso_watch = Some(send);
            } else {
                let events = std::mem::take(&mut c.httpso_events);
                reply(send, StatusCode::OK, watch_body(&events));
            }
        } else {
            c.watches.push(send);
        }
    });
    kube::Client::new(svc, "default")
}

/// An EndpointSlice of `service` as the EndpointSlice controller writes it: one port named
/// `http` (`port`, with `appProtocol` when given), one endpoint per (address, ready).
fn slice(service: &str, rv: u64, port: u16, app_protocol: Option<&str>, endpoints: &[(&str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (ip, ready))| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": "ns", "name": format!("{service}-{i}")}
            })
        })
        .collect();
    let mut port = json!({"name": "http", "protocol": "TCP", "port": port});
    if let Some(p) = app_protocol {
        port["appProtocol"] = json!(p);
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abc12"), "namespace": "ns", "resourceVersion": rv.to_string(),
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [port],
        "endpoints": endpoints
    })
}

/// Service `name`: port 80 named `http` (appProtocol as given) → 8080.
fn service(name: &str, app_protocol: Option<&str>) -> Value {
    let mut port = json!({"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080});
    if let Some(p) = app_protocol {
        port["appProtocol"] = json!(p);
    }
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "ns", "resourceVersion": "2"},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "ports": [port]}})
}

/// HTTPScaledObject `ns/NAME` for `host`, Service `web` port 80, Deployment `web`.
fn httpso(name: &str, host: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"hosts": [host],
        "scaleTargetRef": {"name": "web", "kind": "Deployment", "apiVersion": "apps/v1", "service": "web", "port": 80}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
           "metadata": {"name": name, "namespace": "ns", "uid": format!("9b1c0f7e-0000-4000-8000-{name:0>12}"),
                        "resourceVersion": "3", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": spec})
}

/// Sends a slice event to its Service's open watch, or queues it for the next one.
fn push_slice(cluster: &Mutex<Cluster>, slice: Value) {
    let mut c = lock(cluster);
    let name = slice["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let service = slice["metadata"]["labels"]["kubernetes.io/service-name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let kind = if c.slices.contains_key(&name) {
        "MODIFIED"
    } else {
        "ADDED"
    };
    c.slices.insert(name, slice.clone());
    let mut events = c.slice_events.remove(&service).unwrap_or_default();
    events.push(json!({"type": kind, "object": slice}));
    match c.slice_watches.remove(&service) {
        Some(send) => reply(send, StatusCode::OK, watch_body(&events)),
        None => {
            c.slice_events.insert(service, events);
        }
    }
}

/// Sends an HTTPScaledObject event (`ADDED`, `DELETED`) to the open watch, or queues it.
fn push_httpso(cluster: &Mutex<Cluster>, kind: &str, object: Value) {
    let mut c = lock(cluster);
    match kind {
        "DELETED" => c
            .http_scaled_objects
            .retain(|o| o["metadata"]["name"] != object["metadata"]["name"]),
        _ => c.http_scaled_objects.push(object.clone()),
    }
    c.httpso_events.push(json!({"type": kind, "object": object}));
    if let Some(send) = c.httpso_watch.take() {
        let events = std::mem::take(&mut c.httpso_events);
        reply(send, StatusCode::OK, watch_body(&events));
    }
}

async fn wait_cluster(cluster: &Mutex<Cluster>, what: &str, done: impl Fn(&Cluster) -> bool) {
    let deadline = Instant::now() + BUDGET;
    loop {
        {
            let c = lock(cluster);
            if done(&c) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; unexpected: {:?}; puts: {:?}; lists: {:?}",
                c.unexpected,
                c.scale_puts,
                c.slice_lists
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_on_one_service_share_its_watch_and_app_protocol_h2c_is_spoken() {
    let port = echo_port().await;
    let ir = json!({"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "api", "namespace": "ns", "resourceVersion": "4", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"target": {"service": "web", "portName": "http"},
                 "rules": [{"hosts": ["api.example"]}],
                 "scalingMetric": {"concurrency": {"targetValue": 10}}}});
    // The user's ScaledObject for the route: it names the workload the activator wakes.
    let so = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "api", "namespace": "ns", "resourceVersion": "5"},
        "spec": {"scaleTargetRef": {"name": "api"}, "minReplicaCount": 0,
                 "triggers": [{"type": "external-push",
                               "metadata": {"scalerAddress": "ebb-activator-admin.ebb:9090", "interceptorRoute": "api"}}]}});
    let cluster = Arc::new(Mutex::new(Cluster {
        http_scaled_objects: vec![httpso("web", "web.example", json!({}))],
        interceptor_routes: vec![ir],
        scaled_objects: vec![so],
        resource_version: 7,
        ..Default::default()
    }));
    {
        let mut c = lock(&cluster);
        c.services
            .insert("web".into(), service("web", Some("kubernetes.io/h2c")));
        let s = slice("web", 5, port, Some("kubernetes.io/h2c"), &[("127.0.0.1", false)]);
        c.slices.insert("web-abc12".into(), s);
    }
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
        slice("web", 9, port, Some("kubernetes.io/h2c"), &[("127.0.0.1", true)]),
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
    let cluster = Arc::new(Mutex::new(Cluster {
        http_scaled_objects: vec![web.clone(), other.clone()],
        replicas: HashMap::from([("web".to_owned(), 1)]),
        resource_version: 7,
        ..Default::default()
    }));
    {
        let mut c = lock(&cluster);
        c.services.insert("web".into(), service("web", None));
        c.slices.insert(
            "web-abc12".into(),
            slice("web", 5, dead, None, &[("127.0.0.1", false)]),
        );
        c.slices.insert(
            "sorry-abc12".into(),
            slice("sorry", 5, fallback, None, &[("127.0.0.1", true)]),
        );
    }
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
    assert_eq!(header(&headers, "x-keda-http-cold-start"), Some("true"));
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
    push_httpso(&cluster, "DELETED", other);
    let (status, _, body) = tokio::time::timeout(BUDGET, held)
        .await
        .expect("answered at once")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The last route on Service web goes: its watch stops; the route back: a new watch.
    push_httpso(&cluster, "DELETED", web.clone());
    activator.wait_route("ns/web", "removed", |r| r.is_null()).await;
    push_httpso(&cluster, "ADDED", web);
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
    let cluster = Arc::new(Mutex::new(Cluster {
        http_scaled_objects: vec![httpso("web", "web.example", json!({}))],
        replicas: HashMap::from([("web".to_owned(), 1)]),
        interceptor_routes_error: Some(404),
        resource_version: 7,
        ..Default::default()
    }));
    {
        let mut c = lock(&cluster);
        c.services.insert("web".into(), service("web", None));
        c.slices.insert(
            "web-abc12".into(),
            slice("web", 5, port, None, &[("127.0.0.1", true)]),
        );
    }
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
