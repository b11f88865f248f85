//! The activator's admin port: `/queue` in the add-on's exact shape (what a metrics server sums
//! over activator replicas), `/routes` with ebb's fuller per-route view, and the shared admin
//! endpoints (`/metrics`, `/livez`, `/readyz`).
//!
//! ```text
//! GET /queue  → {"<ns>/<name>": {"Concurrency": 3, "RequestCount": 17}, ...}
//! GET /routes → {"<ns>/<name>": {"concurrency": 3, "requestCount": 17, "held": 1, ...}, ...}
//! ```

use std::sync::{Arc, atomic::Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use super::proxy::Proxy;

/// What the admin port serves.
#[derive(Debug)]
pub struct AdminState {
    /// `/metrics`, `/livez`, `/readyz`.
    pub base: crate::admin::AdminState,
    /// The live routes.
    pub proxy: Arc<Proxy>,
}

/// The add-on's `/queue` body: in-flight (held included) and monotonic request count per route.
pub fn queue_json(proxy: &Proxy) -> Value {
    let routing = proxy.routing();
    let mut keys: Vec<_> = routing.targets.keys().collect();
    keys.sort();
    let mut out = Map::new();
    for key in keys {
        let Some((target, _)) = routing.targets.get(key) else {
            continue;
        };
        let (in_flight, _) = target.counts();
        out.insert(
            key.to_string(),
            json!({
                "Concurrency": in_flight,
                "RequestCount": target.counters.requests.load(Ordering::Relaxed),
            }),
        );
    }
    Value::Object(out)
}

/// ebb's per-route view.
pub fn routes_json(proxy: &Proxy) -> Value {
    let routing = proxy.routing();
    let mut keys: Vec<_> = routing.targets.keys().collect();
    keys.sort();
    let mut out = Map::new();
    for key in keys {
        let Some((target, _)) = routing.targets.get(key) else {
            continue;
        };
        let (in_flight, held) = target.counts();
        let c = &target.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let port = match &target.route.port {
            crate::scaling::http_route::RoutePort::Number(n) => json!(n),
            crate::scaling::http_route::RoutePort::Name(n) => json!(n),
        };
        out.insert(
            key.to_string(),
            json!({
                "concurrency": in_flight,
                "requestCount": load(&c.requests),
                "held": held,
                "holdTimeouts": load(&c.timeouts),
                "overflows": load(&c.overflows),
                "upstreamErrors": load(&c.upstream_errors),
                "abandoned": load(&c.abandoned),
                "coldStarts": load(&c.cold_starts),
                "wakeErrors": load(&c.wake_errors),
                "fallbacks": load(&c.fallbacks),
                "placeholders": load(&c.placeholders),
                "kind": match target.route.kind {
                    crate::scaling::http_route::RouteKind::HttpScaledObject => "HTTPScaledObject",
                    crate::scaling::http_route::RouteKind::InterceptorRoute => "InterceptorRoute",
                },
                "endpoints": target.endpoints().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "service": target.route.service,
                "port": port,
                "scaledownPeriodSeconds": target.route.scaledown_period,
            }),
        );
    }
    Value::Object(out)
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Answers one admin request.
pub fn respond<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/queue" => json_response(&queue_json(&state.proxy)),
        "/routes" => json_response(&routes_json(&state.proxy)),
        _ => {
            let mut r = crate::admin::respond(&state.base, req);
            if r.status() == StatusCode::SERVICE_UNAVAILABLE && req.uri().path() == "/readyz" {
                *r.body_mut() = Full::new(Bytes::from_static(b"HTTPScaledObjects not loaded yet"));
            }
            r
        }
    }
}
