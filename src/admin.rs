//! Plain-HTTP admin port: `/metrics`, `/livez`, `/readyz`, with `--local` the demo values the
//! shipped example ScaledObjects read, and on the metrics server `ebb explain`'s view of one
//! ScaledObject (`/debug/scaledobjects/NAMESPACE/NAME`, through [`ObjectDebug`]).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    net::{PlainTcp, Server},
    shutdown::Signal,
};

/// What the admin port serves.
pub struct AdminState {
    /// Every metric of the process.
    pub registry: Registry,
    /// Readiness (the ScaledObject source has synced).
    pub ready: Arc<AtomicBool>,
    /// Serve `/demo/*` values for the `--local` examples.
    pub demo: bool,
    /// Serves `/debug/scaledobjects/NAMESPACE/NAME` (the metrics server fills it; the other
    /// components hold no scaler values and pass `None`).
    pub debug: Option<Arc<dyn ObjectDebug>>,
}

/// What a process knows about one ScaledObject, as JSON: `ebb explain`'s view.
pub trait ObjectDebug: Send + Sync {
    /// The view of `namespace/name`, or `None` when the process does not hold it.
    fn view(&self, namespace: &str, name: &str) -> BoxFuture<'static, Option<serde_json::Value>>;
}

/// Path prefix of [`ObjectDebug`]'s route.
pub const DEBUG_PREFIX: &str = "/debug/scaledobjects/";

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("demo", &self.demo)
            .field("debug", &self.debug.is_some())
            .finish_non_exhaustive()
    }
}

/// Serves the admin port until `shutdown`, with default limits.
pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: Signal) {
    run_with(&Server::detached("admin"), listener, state, shutdown).await;
}

/// Serves the admin port until `shutdown` under `server`'s limits: header and idle timeouts,
/// the connection cap, and a back-off after failed accepts.
pub async fn run_with(server: &Server, listener: TcpListener, state: Arc<AdminState>, shutdown: Signal) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin server listening");
    }
    let handler = move |req: Request<Incoming>, _peer: Arc<SocketAddr>| {
        let state = state.clone();
        async move { respond_async(&state, &req).await }
    };
    if let Err(e) = server
        .serve(listener, PlainTcp, handler, async move { shutdown.wait().await })
        .await
    {
        warn!(error = %e, "the admin server stopped");
    }
}

fn text(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answers one admin request, the `/debug/scaledobjects/` route included.
pub async fn respond_async<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    match (&state.debug, req.uri().path().strip_prefix(DEBUG_PREFIX)) {
        (Some(debug), Some(rest)) => debug_object(debug.as_ref(), req.method(), rest).await,
        _ => respond(state, req),
    }
}

/// A Kubernetes `Status` (as the API server answers errors), in JSON.
fn status(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<serde_json::Value>,
) -> Response<Full<Bytes>> {
    let mut body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    text(code, "application/json", body.to_string())
}

/// A DNS-1123 subdomain (namespace and ScaledObject names are), so nothing else reaches the
/// lookup or is echoed back.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

async fn debug_object(debug: &dyn ObjectDebug, method: &Method, rest: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not supported on this path; use GET"),
            None,
        );
    }
    let mut parts = rest.split('/');
    let (Some(namespace), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the path is /debug/scaledobjects/NAMESPACE/NAME",
            None,
        );
    };
    if !valid_name(namespace) || !valid_name(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "namespace and name must be lowercase DNS-1123 names",
            None,
        );
    }
    match debug.view(namespace, name).await {
        Some(view) => text(StatusCode::OK, "application/json", view.to_string()),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("scaledobjects.keda.sh \"{name}\" not found in namespace \"{namespace}\""),
            Some(serde_json::json!({"name": name, "group": "keda.sh", "kind": "scaledobjects"})),
        ),
    }
}

/// Answers one admin request (every route but `/debug/scaledobjects/`, which needs
/// [`respond_async`]).
pub fn respond<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            // OpenMetrics when the scraper asks for it (Prometheus does), else the classic text
            // format, as client_golang negotiates.
            let open_metrics = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let encoded = if open_metrics {
                let mut out = String::new();
                prometheus_client::encoding::text::encode(&mut out, &state.registry)
                    .map(|()| ("application/openmetrics-text; version=1.0.0; charset=utf-8", out))
            } else {
                crate::keda_metrics::encode_text(&state.registry)
                    .map(|out| ("text/plain; version=0.0.4; charset=utf-8", out))
            };
            match encoded {
                Ok((content_type, out)) => text(StatusCode::OK, content_type, out),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
            }
        }
        "/livez" | "/healthz" => text(StatusCode::OK, "text/plain", "ok".into()),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "text/plain", "ok".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "ScaledObjects not synced yet".into(),
                )
            }
        }
        p if state.demo && p.starts_with("/demo/") => demo(p),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}

/// Demo queue depth: a slow wave between 0 and 120 with a period of ten minutes, so HPA
/// targets are crossed both ways while a person watches.
pub fn demo_depth(unix_secs: f64) -> f64 {
    let phase = (unix_secs % 600.0) / 600.0 * std::f64::consts::TAU;
    ((phase.sin() + 1.0) * 60.0).round()
}

fn demo(path: &str) -> Response<Full<Bytes>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let depth = demo_depth(now);
    let latency = 0.05 + depth / 1000.0;
    match path {
        "/demo/queue.json" => text(
            StatusCode::OK,
            "application/json",
            format!(
                "{{\"queue\":{{\"name\":\"jobs\",\"depth\":{depth}}},\"latency\":\"{}m\"}}",
                (latency * 1000.0).round()
            ),
        ),
        "/demo/queue.yaml" => text(
            StatusCode::OK,
            "application/yaml",
            format!("queue:\n  name: jobs\n  depth: {depth}\nlatency: {latency}\n"),
        ),
        "/demo/queue.xml" => text(
            StatusCode::OK,
            "application/xml",
            format!(
                "<status><queue><name>jobs</name><depth>{depth}</depth></queue><latency>{latency}</latency></status>"
            ),
        ),
        "/demo/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            format!(
                "# HELP demo_queue_depth Messages waiting.\n# TYPE demo_queue_depth gauge\ndemo_queue_depth{{queue=\"jobs\"}} {depth}\ndemo_queue_depth{{queue=\"mail\"}} {}\n",
                (depth / 2.0).round()
            ),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}
