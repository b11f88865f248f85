//! One route's live state: its ready endpoints, the requests in flight and held, the wake, and
//! the counters `/queue`, `/routes` and `/metrics` read.
//!
//! The endpoint list and the in-flight count change under one lock, so a target is never taken
//! to zero between a request seeing an endpoint and that request being counted: the backend
//! retires a target only through [`Target::try_retire`], which rechecks the count under the lock.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use tokio::sync::{Notify, watch};

use super::metrics::{ActivatorMetrics, RouteLabels};
use super::upstream::Protocol;
use crate::locks::LockExt;
use crate::scaling::{
    http_hold::{self, HoldDecision, HoldLimits},
    http_route::Route,
};

/// Ready endpoints of a target; empty while it is at zero or starting.
pub type Endpoints = Arc<[SocketAddr]>;

#[derive(Debug)]
struct Activity {
    in_flight: usize,
    held: usize,
    last_active: Instant,
    /// When the oldest request still held was held (the wake's clock).
    held_since: Option<Instant>,
}

/// Monotonic per-route counters (the `/routes` view).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests routed here (the add-on's `RequestCount`).
    pub requests: AtomicU64,
    /// Held requests answered 504 at the hold deadline.
    pub timeouts: AtomicU64,
    /// Requests refused 503 because a hold cap was reached.
    pub overflows: AtomicU64,
    /// Forwarded requests that failed upstream (502/504).
    pub upstream_errors: AtomicU64,
    /// Times the target was started from zero.
    pub cold_starts: AtomicU64,
    /// Held requests whose client left before an answer.
    pub abandoned: AtomicU64,
    /// Cluster mode: wakes that failed.
    pub wake_errors: AtomicU64,
    /// Held requests sent to the fallback Service at the deadline.
    pub fallbacks: AtomicU64,
    /// Requests answered with the placeholder (at zero, or past the pending cap).
    pub placeholders: AtomicU64,
}

/// One route's live state, shared by the proxy and the backend that runs the target.
#[derive(Debug)]
pub struct Target {
    /// The route as configured.
    pub route: Route,
    /// Metric labels of the route.
    pub labels: RouteLabels,
    /// The counters.
    pub counters: Counters,
    metrics: Arc<ActivatorMetrics>,
    endpoints: watch::Sender<Endpoints>,
    activity: Mutex<Activity>,
    /// Signalled when a request is held; the backend starts the target.
    wake: Notify,
    /// Signalled when the last request in flight ends (the idle clock starts).
    idle: Notify,
    next: AtomicUsize,
    /// The route's series, looked up once: the request path touches no label hash.
    series: Series,
    /// A wake asked for without a held request (a placeholder answered); cleared by the backend
    /// when it takes the wake and when endpoints are published.
    wake_requested: AtomicBool,
    /// Set when the route's object is edited or deleted: held requests look their route up again.
    superseded: watch::Sender<bool>,
    /// Ready endpoints of the route's fallback (`coldStartTimeoutFailoverRef`, `coldStart.fallback`).
    fallback: watch::Sender<Endpoints>,
    /// The upstream protocol the Service port's `appProtocol` asks for (0: not said).
    app_protocol: AtomicU8,
}

/// Why a request could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The route's cap.
    Route,
    /// The activator's total cap.
    Total,
}

impl Target {
    /// A target at zero.
    pub fn new(route: Route, metrics: Arc<ActivatorMetrics>) -> Arc<Target> {
        let labels = RouteLabels::of(&route.key);
        let series = Series::new(&metrics, &labels);
        Arc::new(Target {
            route,
            labels,
            counters: Counters::default(),
            metrics,
            endpoints: watch::channel(Endpoints::from(Vec::new())).0,
            activity: Mutex::new(Activity {
                in_flight: 0,
                held: 0,
                last_active: Instant::now(),
                held_since: None,
            }),
            wake: Notify::new(),
            idle: Notify::new(),
            next: AtomicUsize::new(0),
            series,
            wake_requested: AtomicBool::new(false),
            superseded: watch::channel(false).0,
            fallback: watch::channel(Endpoints::from(Vec::new())).0,
            app_protocol: AtomicU8::new(0),
        })
    }

    /// Asks the backend to wake the target without holding a request (a placeholder was sent:
    /// the request still counts, and the target must still start).
    pub fn request_wake(&self) {
        self.wake_requested.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The route's object was edited or deleted: requests held here look their route up again.
    pub fn supersede(&self) {
        self.superseded.send_replace(true);
    }

    /// Resolves once [`Target::supersede`] was called.
    pub async fn superseded(&self) {
        let mut rx = self.superseded.subscribe();
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Backend: the fallback's ready endpoints.
    pub fn publish_fallback(&self, endpoints: Vec<SocketAddr>) {
        self.fallback.send_replace(endpoints.into());
    }

    /// The fallback's ready endpoints now.
    pub fn fallback_endpoints(&self) -> Endpoints {
        self.fallback.borrow().clone()
    }

    /// Backend: the protocol the Service port's `appProtocol` asks for (`None`: not said).
    pub fn set_app_protocol(&self, protocol: Option<Protocol>) {
        let v = match protocol {
            None => 0,
            Some(Protocol::Http1) => 1,
            Some(Protocol::H2c) => 2,
        };
        self.app_protocol.store(v, Ordering::Relaxed);
    }

    /// The protocol the Service port's `appProtocol` asks for, if it says.
    pub fn app_protocol(&self) -> Option<Protocol> {
        match self.app_protocol.load(Ordering::Relaxed) {
            1 => Some(Protocol::Http1),
            2 => Some(Protocol::H2c),
            _ => None,
        }
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock_or_recover()
    }

    /// Counts a request in (until the guard drops) and returns the endpoints it may use now.
    pub fn begin(self: &Arc<Self>) -> (InFlight, Endpoints) {
        let endpoints = {
            let mut a = self.activity();
            // `last_active` is read only with nothing in flight, so the end of the request
            // (`InFlight`'s drop) sets it, and the start need not.
            a.in_flight += 1;
            self.endpoints.borrow().clone()
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.series.concurrency.inc();
        (
            InFlight {
                target: Arc::clone(self),
            },
            endpoints,
        )
    }

    /// Holds one more request unless a cap is reached; `total` counts held requests over every
    /// route. The wake fires on every admitted hold; the backend ignores it while starting.
    pub fn hold(self: &Arc<Self>, total: &Arc<AtomicUsize>, limits: HoldLimits) -> Result<Held, Refusal> {
        {
            let mut a = self.activity();
            let total_now = total.load(Ordering::Acquire);
            match http_hold::admit(a.held, total_now, limits) {
                HoldDecision::RouteFull => return Err(Refusal::Route),
                HoldDecision::TotalFull => return Err(Refusal::Total),
                HoldDecision::Hold => {}
            }
            // The total is shared by every route's lock: reserve it atomically.
            if total
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    (t < limits.total).then_some(t + 1)
                })
                .is_err()
            {
                return Err(Refusal::Total);
            }
            if a.held == 0 {
                a.held_since = Some(Instant::now());
            }
            a.held += 1;
        }
        self.series.held.inc();
        self.wake.notify_one();
        Ok(Held {
            target: Arc::clone(self),
            total: Arc::clone(total),
            since: Instant::now(),
        })
    }

    /// Resolves once the target has a ready endpoint, with that list.
    pub async fn ready(&self) -> Endpoints {
        let mut rx = self.endpoints.subscribe();
        let ready = rx.wait_for(|e| !e.is_empty()).await.map(|e| e.clone());
        match ready {
            Ok(e) => e,
            // The sender lives as long as `self`.
            Err(_) => std::future::pending().await,
        }
    }

    /// One endpoint of `endpoints`, round robin.
    pub fn pick(&self, endpoints: &Endpoints) -> Option<SocketAddr> {
        if endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        endpoints.get(i).copied()
    }

    /// Requests in flight (held ones included) and held.
    pub fn counts(&self) -> (usize, usize) {
        let a = self.activity();
        (a.in_flight, a.held)
    }

    /// The ready endpoints now.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.borrow().clone()
    }

    /// Backend: the target is ready at `endpoints`; held requests go now.
    pub fn publish(&self, endpoints: Vec<SocketAddr>) {
        if !endpoints.is_empty() {
            self.wake_requested.store(false, Ordering::Release);
        }
        self.endpoints.send_replace(endpoints.into());
    }

    /// Backend: the target went away (crashed, stopped by someone else).
    pub fn withdraw(&self) {
        self.endpoints.send_replace(Endpoints::from(Vec::new()));
    }

    /// Backend: waits until a request is held or a wake was asked for (at once when one already
    /// is).
    pub async fn woken(&self) {
        loop {
            let notified = self.wake.notified();
            if self.wake_requested.swap(false, Ordering::AcqRel) || self.counts().1 > 0 {
                return;
            }
            notified.await;
        }
    }

    /// Backend: how long until the target may go to zero (`None` while requests are in flight).
    pub fn scale_down_in(&self) -> Option<Duration> {
        let a = self.activity();
        http_hold::scale_down_in(
            a.in_flight,
            a.last_active.elapsed(),
            Duration::from_secs(u64::from(self.route.scaledown_period)),
        )
    }

    /// Backend: when the first of the requests held now was held (`None`: none is held).
    pub fn held_since(&self) -> Option<Instant> {
        self.activity().held_since
    }

    /// Backend: resolves once the target has no ready endpoint (at once when it has none).
    pub async fn emptied(&self) {
        let mut rx = self.endpoints.subscribe();
        if rx.wait_for(|e| e.is_empty()).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Backend: the wake took `elapsed` from the first held request to the `/scale` write.
    pub fn record_wake(&self, elapsed: Duration) {
        self.metrics
            .wake_duration
            .get_or_create(&self.labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Backend: a wake failed.
    pub fn record_wake_error(&self) {
        self.counters.wake_errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.wake_errors.get_or_create(&self.labels).inc();
    }

    /// Backend: waits until the last request in flight ends.
    pub async fn quiet(&self) {
        loop {
            let notified = self.idle.notified();
            if self.counts().0 == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Backend: withdraws the endpoints if the target is still idle for its whole
    /// `scaledownPeriod`; true when it did (the backend then stops the target).
    pub fn try_retire(&self) -> bool {
        let a = self.activity();
        let due = http_hold::scale_down_in(
            a.in_flight,
            a.last_active.elapsed(),
            Duration::from_secs(u64::from(self.route.scaledown_period)),
        );
        if due == Some(Duration::ZERO) {
            self.endpoints.send_replace(Endpoints::from(Vec::new()));
            true
        } else {
            false
        }
    }

    /// Backend: a start from zero began.
    pub fn record_cold_start(&self) {
        self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
        self.metrics.cold_starts.get_or_create(&self.labels).inc();
    }

    /// Counts a response and its duration (arrival to response headers).
    pub fn record_response(&self, code: u16, cold_start: bool, elapsed: Duration) {
        self.series.duration.observe(elapsed.as_secs_f64());
        if (code, cold_start) == (200, false) {
            // The answer nearly every request gets: no lock, no hash.
            self.series
                .ok_warm
                .get_or_init(|| self.series_counter(code, cold_start))
                .inc();
            return;
        }
        self.series_counter(code, cold_start).inc();
    }

    /// The request counter of one (code, cold start) pair, created on first use.
    fn series_counter(&self, code: u16, cold_start: bool) -> Counter {
        let mut requests = self.series.requests.lock_or_recover();
        requests
            .entry((code, cold_start))
            .or_insert_with(|| {
                self.metrics
                    .requests
                    .get_or_create(&self.labels.with_code(code, cold_start))
                    .clone()
            })
            .clone()
    }

    /// Drops the route's metric series (the route was removed).
    pub fn forget_metrics(&self) {
        let answered: Vec<(u16, bool)> = self.series.requests.lock_or_recover().keys().copied().collect();
        self.metrics.forget(&self.labels, answered);
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &ActivatorMetrics {
        &self.metrics
    }
}

/// Handles on one route's series (clones share the value with the registered family).
#[derive(Debug)]
struct Series {
    concurrency: Gauge,
    held: Gauge,
    duration: Histogram,
    /// Per (code, cold start), created on first use.
    requests: Mutex<HashMap<(u16, bool), Counter>>,
    /// `requests[(200, false)]`, reached without the lock.
    ok_warm: std::sync::OnceLock<Counter>,
}

impl Series {
    fn new(metrics: &ActivatorMetrics, labels: &RouteLabels) -> Series {
        Series {
            concurrency: metrics.concurrency.get_or_create(labels).clone(),
            held: metrics.held.get_or_create(labels).clone(),
            duration: metrics.duration.get_or_create(labels).clone(),
            requests: Mutex::default(),
            ok_warm: std::sync::OnceLock::new(),
        }
    }
}

/// A request counted in flight; dropping it (when the response body ends or the client leaves)
/// counts it out and starts the idle clock.
#[derive(Debug)]
pub struct InFlight {
    target: Arc<Target>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let quiet = {
            let mut a = self.target.activity();
            a.in_flight = a.in_flight.saturating_sub(1);
            a.last_active = Instant::now();
            a.in_flight == 0
        };
        self.target.series.concurrency.dec();
        if quiet {
            self.target.idle.notify_waiters();
        }
    }
}

/// A held request; dropping it releases its place under the caps.
#[derive(Debug)]
pub struct Held {
    target: Arc<Target>,
    total: Arc<AtomicUsize>,
    since: Instant,
}

impl Held {
    /// When the hold began.
    pub fn since(&self) -> Instant {
        self.since
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        {
            let mut a = self.target.activity();
            a.held = a.held.saturating_sub(1);
            if a.held == 0 {
                a.held_since = None;
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.target.series.held.dec();
    }
}
