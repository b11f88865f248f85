//! The activator's Prometheus metrics, per route (labels `route_namespace`, `route_name`, as the
//! add-on's interceptor names them since v0.14).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// `route_namespace`, `route_name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Namespace of the HTTPScaledObject.
    pub route_namespace: String,
    /// Its name.
    pub route_name: String,
}

impl RouteLabels {
    /// The labels of a `<namespace>/<name>` key.
    pub fn of(key: &str) -> RouteLabels {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        RouteLabels {
            route_namespace: ns.to_owned(),
            route_name: name.to_owned(),
        }
    }
}

/// Route labels plus the response code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// Namespace of the HTTPScaledObject.
    pub route_namespace: String,
    /// Its name.
    pub route_name: String,
    /// HTTP status code sent to the client.
    pub code: String,
    /// `true` when the request was held for a cold start.
    pub cold_start: String,
}

/// Request durations: up to 300 s, since a held request may wait for a cold start (the add-on
/// moved its buckets to 300 s for the same reason, #1783).
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Cold starts: held → forwarded.
const COLD_START_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Wakes: held → `/scale` sent, one API round trip (the GET) at best.
const WAKE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn wake_histogram() -> Histogram {
    Histogram::new(WAKE_BUCKETS)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn cold_start_histogram() -> Histogram {
    Histogram::new(COLD_START_BUCKETS)
}

/// Every metric of the activator.
#[derive(Debug)]
pub struct ActivatorMetrics {
    /// Requests answered, by route and code.
    pub requests: Family<CodeLabels, Counter>,
    /// Request duration (until the response headers), by route.
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Requests in flight, held ones included (the add-on's concurrency).
    pub concurrency: Family<RouteLabels, Gauge>,
    /// Requests held for a target at zero.
    pub held: Family<RouteLabels, Gauge>,
    /// Held requests answered 504 at the hold deadline.
    pub timeouts: Family<RouteLabels, Counter>,
    /// Requests refused 503 at a hold cap.
    pub overflows: Family<RouteLabels, Counter>,
    /// Upstream failures (502, 504).
    pub upstream_errors: Family<RouteLabels, Counter>,
    /// Starts from zero.
    pub cold_starts: Family<RouteLabels, Counter>,
    /// Held → forwarded.
    pub cold_start_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Requests that matched no route (404).
    pub no_route: Counter,
    /// Cluster mode: first held request → the `/scale` write sent.
    pub wake_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Cluster mode: wakes that failed (`/scale` unreadable or refused).
    pub wake_errors: Family<RouteLabels, Counter>,
}

impl ActivatorMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> ActivatorMetrics {
        let m = ActivatorMetrics::detached();
        let r = registry.sub_registry_with_prefix("ebb_activator");
        r.register(
            "requests",
            "Requests answered by the activator, by route and status code",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response headers, held time included",
            m.duration.clone(),
        );
        r.register(
            "concurrency",
            "Requests in flight per route, held ones included",
            m.concurrency.clone(),
        );
        r.register(
            "held_requests",
            "Requests held while the route's target is at zero or starting",
            m.held.clone(),
        );
        r.register(
            "hold_timeouts",
            "Held requests answered 504 because the target was not ready in time",
            m.timeouts.clone(),
        );
        r.register(
            "overflows",
            "Requests refused 503 because a hold cap was reached",
            m.overflows.clone(),
        );
        r.register(
            "upstream_errors",
            "Forwarded requests that failed upstream (502 or 504)",
            m.upstream_errors.clone(),
        );
        r.register(
            "cold_starts",
            "Starts of a target from zero",
            m.cold_starts.clone(),
        );
        r.register(
            "cold_start_duration_seconds",
            "Time a request was held before it was forwarded",
            m.cold_start_duration.clone(),
        );
        r.register(
            "wake_duration_seconds",
            "Time from the first request held for a target at zero to the /scale write that wakes it",
            m.wake_duration.clone(),
        );
        r.register(
            "wake_errors",
            "Wakes that failed: the target's /scale could not be read or written",
            m.wake_errors.clone(),
        );
        r.register(
            "no_route_requests",
            "Requests that matched no route (404)",
            m.no_route.clone(),
        );
        m
    }

    /// Metrics registered nowhere (tests, benchmarks).
    pub fn detached() -> ActivatorMetrics {
        ActivatorMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            concurrency: Family::default(),
            held: Family::default(),
            timeouts: Family::default(),
            overflows: Family::default(),
            upstream_errors: Family::default(),
            cold_starts: Family::default(),
            cold_start_duration: Family::new_with_constructor(cold_start_histogram),
            no_route: Counter::default(),
            wake_duration: Family::new_with_constructor(wake_histogram),
            wake_errors: Family::default(),
        }
    }

    /// Drops the series of a removed route; `responses` are the (code, cold start) pairs it answered.
    pub fn forget(&self, labels: &RouteLabels, responses: impl IntoIterator<Item = (u16, bool)>) {
        self.duration.remove(labels);
        self.concurrency.remove(labels);
        self.held.remove(labels);
        self.timeouts.remove(labels);
        self.overflows.remove(labels);
        self.upstream_errors.remove(labels);
        self.cold_starts.remove(labels);
        self.cold_start_duration.remove(labels);
        self.wake_duration.remove(labels);
        self.wake_errors.remove(labels);
        for (code, cold) in responses {
            self.requests.remove(&labels.with_code(code, cold));
        }
    }
}

impl RouteLabels {
    /// These labels plus a response code.
    pub fn with_code(&self, code: u16, cold_start: bool) -> CodeLabels {
        CodeLabels {
            route_namespace: self.route_namespace.clone(),
            route_name: self.route_name.clone(),
            code: code.to_string(),
            cold_start: cold_start.to_string(),
        }
    }
}
