//! Request metrics labelled by matched route (never the raw path, which would be unbounded).

use std::{sync::OnceLock, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// The route a request matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/version`.
    Version,
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3...`.
    OpenApiV3,
    /// `/apis`.
    Apis,
    /// `/apis/external.metrics.k8s.io`.
    Group,
    /// `/apis/external.metrics.k8s.io/v1beta1`.
    ResourceList,
    /// A metric read.
    Metric,
    /// Anything else.
    NotFound,
}

impl Route {
    /// Classifies a path.
    pub fn of(path: &str) -> Self {
        match path {
            "/healthz" | "/livez" | "/readyz" => Self::Health,
            "/version" | "/version/" => Self::Version,
            "/openapi/v2" => Self::OpenApiV2,
            "/apis" | "/apis/" => Self::Apis,
            "/apis/external.metrics.k8s.io" | "/apis/external.metrics.k8s.io/" => Self::Group,
            "/apis/external.metrics.k8s.io/v1beta1" | "/apis/external.metrics.k8s.io/v1beta1/" => {
                Self::ResourceList
            }
            p if p.starts_with("/openapi/v3") => Self::OpenApiV3,
            p if p.starts_with("/apis/external.metrics.k8s.io/v1beta1/namespaces/") => Self::Metric,
            _ => Self::NotFound,
        }
    }

    /// Position among the routes, for per-route slots.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Version => "version",
            Self::OpenApiV2 => "openapi-v2",
            Self::OpenApiV3 => "openapi-v3",
            Self::Apis => "apis",
            Self::Group => "group",
            Self::ResourceList => "resource-list",
            Self::Metric => "metric",
            Self::NotFound => "not-found",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

/// Status codes the API answers with, for the lock-free per-(route, code) counter slots.
const CODES: [u16; 12] = [200, 304, 400, 401, 403, 404, 405, 406, 500, 503, 504, 0];
const ROUTES: usize = 9;

/// Metrics of the external metrics API.
///
/// Label families take a lock and hash the labels on every lookup; the request path resolves
/// each (route, code) series once and keeps the handle, so recording is a few atomic adds.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    value_age: Histogram,
    hits: Counter,
    misses: Counter,
    request_slots: [[OnceLock<Counter>; CODES.len()]; ROUTES],
    duration_slots: [OnceLock<Histogram>; ROUTES],
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl ApiMetrics {
    /// Creates the metrics and registers them under `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let cache_reads: Family<CacheLabels, Counter> = Family::default();
        // Each lookup returns a read guard on the family: let it drop before the next one.
        let hits = cache_reads.get_or_create(&CacheLabels { result: "hit" }).clone();
        let misses = cache_reads.get_or_create(&CacheLabels { result: "miss" }).clone();
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            hits,
            misses,
            request_slots: Default::default(),
            duration_slots: Default::default(),
            value_age: Histogram::new([0.1, 0.5, 1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
        };
        registry.register(
            "ebb_apiserver_requests",
            "Requests to the external metrics API by route and HTTP code",
            m.requests.clone(),
        );
        registry.register(
            "ebb_apiserver_request_duration_seconds",
            "Time to answer a request to the external metrics API, by route",
            m.duration.clone(),
        );
        registry.register(
            "ebb_metric_cache_reads",
            "Metric reads by cache result (hit or miss)",
            cache_reads,
        );
        registry.register(
            "ebb_metric_value_age_seconds",
            "Age of the metric value served, from the upstream answer to the response",
            m.value_age.clone(),
        );
        m
    }

    /// Metrics registered nowhere, for tests.
    pub fn detached() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Records one request.
    pub fn observe_request(&self, route: Route, code: u16, elapsed: Duration) {
        let r = route.index();
        match CODES.iter().position(|c| *c == code) {
            Some(c) => self.request_slots[r][c]
                .get_or_init(|| {
                    self.requests
                        .get_or_create(&RequestLabels {
                            route: route.label(),
                            code,
                        })
                        .clone()
                })
                .inc(),
            None => self
                .requests
                .get_or_create(&RequestLabels {
                    route: route.label(),
                    code,
                })
                .inc(),
        };
        self.duration_slots[r]
            .get_or_init(|| {
                self.duration
                    .get_or_create(&RouteLabels { route: route.label() })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a cache read.
    pub fn observe_read(&self, hit: bool) {
        if hit {
            self.hits.inc()
        } else {
            self.misses.inc()
        };
    }

    /// Records the age of a served value.
    pub fn observe_age(&self, age: Duration) {
        self.value_age.observe(age.as_secs_f64());
    }
}
