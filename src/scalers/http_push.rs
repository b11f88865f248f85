//! The `external-push` trigger of the KEDA HTTP add-on, served natively: the metric is read
//! from every activator replica's admin `/queue` (docs/activator.md) and summed here, where the
//! add-on's scaler polls the interceptors and KEDA then asks it over gRPC.
//!
//! Trigger metadata, in the three shapes the add-on has used: `httpScaledObject: NAME` (v0.8+,
//! what the operator generates), `interceptorRoute: NAME` (v0.14+) and `hosts` + `pathPrefixes`
//! (v0.5–v0.7, comma-separated). The object's metric (concurrency or request rate, target,
//! window, granularity) comes from the [`HttpIndex`] of HTTPScaledObjects and InterceptorRoutes
//! the component feeds (a watch in a cluster, the files with `--local`).
//!
//! Metric names and targets are the add-on scaler's (`scaler/handlers.go`, `scaler/naming.go`);
//! values are unrounded; the object is active while any request is in flight or held on a
//! replica, or was counted inside the rate window (never a rounded average: the add-on's #1692).
//! A replica that fails to answer keeps its last concurrency and adds no rate; when every
//! replica fails the read fails.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::future::{BoxFuture, join_all};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{
    MetricSpec, MetricTarget, MetricsAndActivity, ScalerConfig, ScalerContext, ScalerError, metric_name,
    params::parse_go_duration,
};
use crate::{
    crd::{
        http_scaled_object::HTTPScaledObject,
        interceptor_route::{InterceptorRoute, SCALING_METRIC_MESSAGE},
    },
    locks::{LockExt, RwLockExt},
};

/// The add-on's default target (concurrency or rate per replica).
pub const DEFAULT_TARGET: i64 = 100;
/// The add-on's default rate window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The add-on's default rate granularity.
pub const DEFAULT_GRANULARITY: Duration = Duration::from_secs(1);
/// The add-on's reconcile error when both metrics are set on an HTTPScaledObject.
pub const BOTH_METRICS_MESSAGE: &str =
    ".spec.scalingMetric.concurrency and .spec.scalingMetric.rate are mutually exclusive";

/// What one route scales on, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpMetrics {
    /// Target concurrency per replica, when scaling on concurrency.
    pub concurrency: Option<f64>,
    /// Rate target and window, when scaling on request rate.
    pub rate: Option<RateSpec>,
}

/// A request-rate metric: target per replica, window and bucket width.
#[derive(Clone, Debug, PartialEq)]
pub struct RateSpec {
    /// Target requests per second per replica.
    pub target: f64,
    /// Averaging window.
    pub window: Duration,
    /// Bucket width.
    pub granularity: Duration,
}

impl Default for HttpMetrics {
    /// The add-on's default when an object names no metric: concurrency, target 100.
    fn default() -> Self {
        HttpMetrics {
            concurrency: Some(DEFAULT_TARGET as f64),
            rate: None,
        }
    }
}

/// Why an object's metrics cannot be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MetricsError {
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn rate_spec(
    field: &str,
    target: Option<i64>,
    window: Option<&str>,
    granularity: Option<&str>,
) -> Result<RateSpec, MetricsError> {
    let duration = |name: &str, v: Option<&str>, default: Duration| -> Result<Duration, MetricsError> {
        v.map(|s| {
            parse_go_duration(s).map_err(|e| MetricsError {
                field: format!("{field}.{name}"),
                message: e.to_string(),
            })
        })
        .unwrap_or(Ok(default))
    };
    let window = duration("window", window, DEFAULT_WINDOW)?;
    let granularity = duration("granularity", granularity, DEFAULT_GRANULARITY)?;
    // The add-on buckets by `unix_seconds / int(granularity.Seconds())`: under 1 s that divides
    // by zero in its scaler.
    if granularity < Duration::from_secs(1) {
        return Err(MetricsError {
            field: format!("{field}.granularity"),
            message: format!(
                "must be at least 1s (got {granularity:?}): the rate is counted in whole-second buckets"
            ),
        });
    }
    if window < granularity {
        return Err(MetricsError {
            field: format!("{field}.window"),
            message: format!("must be at least the granularity ({granularity:?}), got {window:?}"),
        });
    }
    Ok(RateSpec {
        target: target.unwrap_or(DEFAULT_TARGET) as f64,
        window,
        granularity,
    })
}

/// An HTTPScaledObject's metric (one of concurrency or rate), as the add-on's scaler reads it:
/// `scalingMetric` first, else the deprecated `targetPendingRequests`, else concurrency 100.
pub fn http_scaled_object_metrics(so: &HTTPScaledObject) -> Result<HttpMetrics, MetricsError> {
    let spec = &so.spec;
    let metric = spec.scaling_metric.as_ref();
    match (
        metric.and_then(|m| m.concurrency.as_ref()),
        metric.and_then(|m| m.request_rate.as_ref()),
    ) {
        (Some(_), Some(_)) => Err(MetricsError {
            field: "spec.scalingMetric".into(),
            message: BOTH_METRICS_MESSAGE.into(),
        }),
        (Some(c), None) => Ok(HttpMetrics {
            concurrency: Some(c.target_value.unwrap_or(DEFAULT_TARGET) as f64),
            rate: None,
        }),
        (None, Some(r)) => Ok(HttpMetrics {
            concurrency: None,
            rate: Some(rate_spec(
                "spec.scalingMetric.requestRate",
                r.target_value,
                r.window.as_deref(),
                r.granularity.as_deref(),
            )?),
        }),
        (None, None) => Ok(HttpMetrics {
            concurrency: Some(spec.target_pending_requests.map_or(DEFAULT_TARGET, i64::from) as f64),
            rate: None,
        }),
    }
}

/// An InterceptorRoute's metrics (one or both).
pub fn interceptor_route_metrics(ir: &InterceptorRoute) -> Result<HttpMetrics, MetricsError> {
    let m = &ir.spec.scaling_metric;
    if m.concurrency.is_none() && m.request_rate.is_none() {
        return Err(MetricsError {
            field: "spec.scalingMetric".into(),
            message: SCALING_METRIC_MESSAGE.into(),
        });
    }
    Ok(HttpMetrics {
        concurrency: m
            .concurrency
            .as_ref()
            .map(|c| c.target_value.map_or(DEFAULT_TARGET, i64::from) as f64),
        rate: m
            .request_rate
            .as_ref()
            .map(|r| {
                rate_spec(
                    "spec.scalingMetric.requestRate",
                    r.target_value.map(i64::from),
                    r.window.as_deref(),
                    r.granularity.as_deref(),
                )
            })
            .transpose()?,
    })
}

/// The add-on scaler's metric name for an HTTPScaledObject (`scaler/naming.go`): `http-` and
/// `<namespace>/<name>` with every character outside `[-.0-9A-Za-z]` written as `_%04X`.
pub fn http_scaled_object_metric(namespace: &str, name: &str) -> String {
    let mut out = String::from("http-");
    for c in format!("{namespace}/{name}").chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            out.push(c);
        } else {
            out.push_str(&format!("_{:04X}", u32::from(c)));
        }
    }
    out
}

/// The add-on scaler's metric names for an InterceptorRoute: `http_<name>_concurrency`,
/// `http_<name>_rate`.
pub fn interceptor_route_metric(name: &str, rate: bool) -> String {
    format!("http_{name}_{}", if rate { "rate" } else { "concurrency" })
}

/// Requests counted per time bucket over a sliding window (the add-on's `pkg/queue/bucketing.go`
/// ring, kept exact): `record` adds a count at a time, `rate` is the per-second average over the
/// filled part of the window, unrounded. Times are milliseconds since any fixed origin.
#[derive(Clone, Debug)]
pub struct RateWindow {
    granularity_ms: u64,
    buckets: Vec<(u64, f64)>,
    first_bucket: Option<u64>,
}

impl RateWindow {
    /// A window of ⌈window/granularity⌉ buckets; a granularity under 1 ms counts as 1 ms.
    pub fn new(window: Duration, granularity: Duration) -> RateWindow {
        let g = (granularity.as_millis() as u64).max(1);
        let n = (window.as_millis() as u64).div_ceil(g).max(1);
        RateWindow {
            granularity_ms: g,
            buckets: vec![(u64::MAX, 0.0); n as usize],
            first_bucket: None,
        }
    }

    fn slot(&self, bucket: u64) -> usize {
        (bucket % self.buckets.len() as u64) as usize
    }

    /// Adds `count` requests at `now_ms`.
    pub fn record(&mut self, now_ms: u64, count: f64) {
        let bucket = now_ms / self.granularity_ms;
        self.first_bucket.get_or_insert(bucket);
        let slot = self.slot(bucket);
        let entry = &mut self.buckets[slot];
        if entry.0 != bucket {
            *entry = (bucket, 0.0);
        }
        entry.1 += count;
    }

    fn live(&self, now_ms: u64) -> impl Iterator<Item = f64> + '_ {
        let now = now_ms / self.granularity_ms;
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(move |(b, _)| *b != u64::MAX && *b <= now && now - *b < n)
            .map(|(_, c)| *c)
    }

    /// Requests per second over the window at `now_ms`: the live buckets' sum over the time they
    /// cover (the whole window once it has filled, less before, never under one bucket).
    pub fn rate(&self, now_ms: u64) -> f64 {
        let Some(first) = self.first_bucket else {
            return 0.0;
        };
        let now = now_ms / self.granularity_ms;
        let filled = (now.saturating_sub(first) + 1).min(self.buckets.len() as u64);
        let seconds = (filled * self.granularity_ms) as f64 / 1000.0;
        self.live(now_ms).sum::<f64>() / seconds
    }

    /// True when any request was counted inside the window at `now_ms` (activity, whatever the
    /// average rounds to: the add-on's #1692).
    pub fn seen(&self, now_ms: u64) -> bool {
        self.live(now_ms).any(|c| c > 0.0)
    }
}

/// One activator replica's `/queue` counts for one route, as read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueCounts {
    /// In flight, held included.
    pub concurrency: f64,
    /// Requests counted since the replica started (only grows).
    pub request_count: u64,
}

/// The new requests since the previous read of a replica's counter: the difference, the whole
/// value after a restart (a smaller counter), nothing on the first read (the add-on's rule).
pub fn request_delta(previous: Option<u64>, current: u64) -> u64 {
    match previous {
        None => 0,
        Some(p) if current >= p => current - p,
        Some(_) => current,
    }
}

/// What the index knows of one HTTPScaledObject or InterceptorRoute.
#[derive(Clone, Debug)]
struct IndexEntry {
    metrics: Result<HttpMetrics, MetricsError>,
    /// HTTPScaledObjects' hosts and path prefixes, for the v0.5–v0.7 trigger metadata.
    hosts: Vec<String>,
    prefixes: Vec<String>,
}

/// Kind of an indexed object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HttpKind {
    /// `http.keda.sh/v1alpha1` HTTPScaledObject.
    HttpScaledObject,
    /// `http.keda.sh/v1beta1` InterceptorRoute.
    InterceptorRoute,
}

/// The HTTPScaledObjects and InterceptorRoutes the `external-push` trigger reads its metric
/// settings from, by kind, namespace and name; shared and cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct HttpIndex {
    entries: Arc<RwLock<BTreeMap<IndexKey, IndexEntry>>>,
}

/// Kind, namespace and name of an indexed object.
type IndexKey = (HttpKind, String, String);

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl HttpIndex {
    /// Adds or replaces an HTTPScaledObject.
    pub fn apply_http_scaled_object(&self, so: &HTTPScaledObject) {
        let (ns, name) = ns_name(&so.metadata);
        let entry = IndexEntry {
            metrics: http_scaled_object_metrics(so),
            hosts: so.spec.hosts.clone(),
            prefixes: so.spec.path_prefixes.clone(),
        };
        self.entries
            .write_or_recover()
            .insert((HttpKind::HttpScaledObject, ns, name), entry);
    }

    /// Adds or replaces an InterceptorRoute.
    pub fn apply_interceptor_route(&self, ir: &InterceptorRoute) {
        let (ns, name) = ns_name(&ir.metadata);
        let entry = IndexEntry {
            metrics: interceptor_route_metrics(ir),
            hosts: Vec::new(),
            prefixes: Vec::new(),
        };
        self.entries
            .write_or_recover()
            .insert((HttpKind::InterceptorRoute, ns, name), entry);
    }

    /// Forgets one object.
    pub fn remove(&self, kind: HttpKind, namespace: &str, name: &str) {
        self.entries
            .write_or_recover()
            .remove(&(kind, namespace.to_string(), name.to_string()));
    }

    /// Replaces the whole index with the objects among `docs` (the `--local` files); true when
    /// it changed.
    pub fn replace_from_documents(&self, docs: &[serde_yaml::Value]) -> bool {
        let fresh = HttpIndex::default();
        for doc in docs {
            let api = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
            let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
            match (api, kind) {
                ("http.keda.sh/v1alpha1", "HTTPScaledObject") => {
                    if let Ok(so) = serde_yaml::from_value::<HTTPScaledObject>(doc.clone()) {
                        fresh.apply_http_scaled_object(&so);
                    }
                }
                ("http.keda.sh/v1beta1", "InterceptorRoute") => {
                    if let Ok(ir) = serde_yaml::from_value::<InterceptorRoute>(doc.clone()) {
                        fresh.apply_interceptor_route(&ir);
                    }
                }
                _ => {}
            }
        }
        let new = fresh.entries.read_or_recover().clone();
        let mut old = self.entries.write_or_recover();
        let changed = old.len() != new.len()
            || old.iter().zip(new.iter()).any(|((a, x), (b, y))| {
                a != b || x.metrics != y.metrics || x.hosts != y.hosts || x.prefixes != y.prefixes
            });
        *old = new;
        changed
    }

    /// Keeps this index current with watches of HTTPScaledObjects and InterceptorRoutes (all
    /// namespaces) until `shutdown`.
    pub fn start(&self, client: kube::Client, shutdown: crate::shutdown::Signal) {
        let index = self.clone();
        let so_index = index.clone();
        let (_, writer) = kube::runtime::reflector::store();
        tokio::spawn(tracing::Instrument::in_current_span(
            crate::kube_watch::reflect_until_shutdown(
                kube::Api::<HTTPScaledObject>::all(client.clone()),
                |_| {},
                writer,
                shutdown.clone(),
                move |event| {
                    so_index.on_event(event, HttpKind::HttpScaledObject, |i, so: &HTTPScaledObject| {
                        i.apply_http_scaled_object(so)
                    })
                },
            ),
        ));
        let ir_index = index.clone();
        let (_, writer) = kube::runtime::reflector::store();
        tokio::spawn(tracing::Instrument::in_current_span(
            crate::kube_watch::reflect_until_shutdown(
                kube::Api::<InterceptorRoute>::all(client),
                |_| {},
                writer,
                shutdown,
                move |event| {
                    ir_index.on_event(event, HttpKind::InterceptorRoute, |i, ir: &InterceptorRoute| {
                        i.apply_interceptor_route(ir)
                    })
                },
            ),
        ));
    }

    fn on_event<K: kube::Resource>(
        &self,
        event: Result<&kube::runtime::watcher::Event<K>, &kube::runtime::watcher::Error>,
        kind: HttpKind,
        apply: fn(&HttpIndex, &K),
    ) {
        use kube::runtime::watcher::Event;
        match event {
            // A (re-)list: the objects listed replace this kind's entries at InitDone.
            Ok(Event::Init) => self.entries.write_or_recover().retain(|(k, _, _), _| *k != kind),
            Ok(Event::Apply(o) | Event::InitApply(o)) => apply(self, o),
            Ok(Event::Delete(o)) => {
                let (ns, name) = ns_name(o.meta());
                self.remove(kind, &ns, &name);
            }
            Ok(Event::InitDone) => {}
            Err(e) => tracing::warn!(kind = ?kind, error = %e, "HTTP add-on object watch failed; retrying"),
        }
    }

    fn get(&self, kind: HttpKind, namespace: &str, name: &str) -> Option<IndexEntry> {
        self.entries
            .read_or_recover()
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// HTTPScaledObjects in `namespace` routing any of `hosts` (and, when given, any of
    /// `prefixes`): the v0.5–v0.7 metadata's routes.
    fn by_hosts(&self, namespace: &str, hosts: &[String], prefixes: &[String]) -> Vec<(String, IndexEntry)> {
        self.entries
            .read_or_recover()
            .iter()
            .filter(|((k, ns, _), e)| {
                *k == HttpKind::HttpScaledObject
                    && ns == namespace
                    && e.hosts
                        .iter()
                        .any(|h| hosts.iter().any(|w| w.eq_ignore_ascii_case(h)))
                    && (prefixes.is_empty() || e.prefixes.iter().any(|p| prefixes.contains(p)))
            })
            .map(|((_, ns, name), e)| (format!("{ns}/{name}"), e.clone()))
            .collect()
    }
}

/// Where the activator replicas' admin ports are found.
#[derive(Clone, Debug, Default)]
pub struct ActivatorDiscovery {
    /// Fixed admin URLs (`--activator-admin`, the `--local` mode); when set, nothing is discovered.
    pub admin_urls: Vec<String>,
    /// `NAMESPACE/NAME` of the activator's admin Service, whose EndpointSlices list the replicas;
    /// unset, the trigger's `scalerAddress` (`NAME.NAMESPACE[.svc…]:PORT`) names it.
    pub service: Option<String>,
}

/// What the `external-push` trigger shares across a process: the index, where replicas are
/// found, and the per-fleet counters (rate windows need every read's deltas).
#[derive(Clone, Default)]
pub struct HttpShared {
    /// The HTTPScaledObjects and InterceptorRoutes.
    pub index: HttpIndex,
    /// Where replicas are found.
    pub discovery: ActivatorDiscovery,
    fleets: Arc<Mutex<HashMap<String, Arc<Fleet>>>>,
    /// The watches that feed `index`, started by the first `external-push` trigger, so a
    /// cluster without the HTTP add-on's CRDs is never asked for them.
    watch: Option<Arc<LazyWatch>>,
}

struct LazyWatch {
    client: kube::Client,
    shutdown: crate::shutdown::Signal,
    started: std::sync::Once,
}

impl std::fmt::Debug for HttpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpShared")
            .field("index", &self.index)
            .field("discovery", &self.discovery)
            .field("watching", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpShared {
    /// Shares `index` and finds replicas through `discovery`.
    pub fn new(index: HttpIndex, discovery: ActivatorDiscovery) -> Self {
        HttpShared {
            index,
            discovery,
            fleets: Arc::default(),
            watch: None,
        }
    }

    /// Feeds the index from watches through `client`, started when the first `external-push`
    /// trigger is built.
    pub fn watching(mut self, client: kube::Client, shutdown: crate::shutdown::Signal) -> Self {
        self.watch = Some(Arc::new(LazyWatch {
            client,
            shutdown,
            started: std::sync::Once::new(),
        }));
        self
    }

    fn ensure_watching(&self) {
        if let Some(w) = &self.watch
            && tokio::runtime::Handle::try_current().is_ok()
        {
            w.started
                .call_once(|| self.index.start(w.client.clone(), w.shutdown.clone()));
        }
    }

    fn fleet(&self, source: &Source) -> Arc<Fleet> {
        self.fleets
            .lock_or_recover()
            .entry(source.key())
            .or_insert_with(|| Arc::new(Fleet::new(source.clone())))
            .clone()
    }
}

/// One fleet of activator replicas.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    Urls(Vec<String>),
    Service { namespace: String, name: String },
}

impl Source {
    fn key(&self) -> String {
        match self {
            Source::Urls(u) => u.join(","),
            Source::Service { namespace, name } => format!("svc:{namespace}/{name}"),
        }
    }
}

/// `NAME.NAMESPACE[.svc[.cluster.local]][:PORT]` → (namespace, name).
fn service_of_address(address: &str) -> Option<(String, String)> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let mut parts = host.split('.');
    let name = parts.next().filter(|s| !s.is_empty())?;
    let ns = parts.next().filter(|s| !s.is_empty())?;
    Some((ns.to_string(), name.to_string()))
}

/// Per-replica last counts and per-route rate windows of one fleet.
#[derive(Debug)]
struct Fleet {
    source: Source,
    origin: Instant,
    state: Mutex<FleetState>,
}

#[derive(Debug, Default)]
struct FleetState {
    replicas: HashMap<String, HashMap<String, QueueCounts>>,
    windows: HashMap<String, (Duration, Duration, RateWindow)>,
}

/// What one read of a route found over all replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RouteObservation {
    /// Summed concurrency (held requests included).
    pub concurrency: f64,
    /// Requests per second over the route's window.
    pub rate: f64,
    /// Any request counted inside the window.
    pub seen: bool,
}

/// The `/queue` body: `{"ns/name": {"Concurrency": n, "RequestCount": n}}`.
#[derive(serde::Deserialize)]
struct QueueEntry {
    #[serde(rename = "Concurrency", default)]
    concurrency: f64,
    #[serde(rename = "RequestCount", default)]
    request_count: u64,
}

/// Longest wait for one replica's `/queue`: one slow replica must not stall the read.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/queue` body read (about 100,000 routes).
const MAX_QUEUE_BODY: usize = 8 << 20;

impl Fleet {
    fn new(source: Source) -> Fleet {
        Fleet {
            source,
            origin: Instant::now(),
            state: Mutex::default(),
        }
    }

    async fn replica_urls(&self, kube: Option<&kube::Client>) -> Result<Vec<String>, ScalerError> {
        match &self.source {
            Source::Urls(u) => Ok(u.clone()),
            Source::Service { namespace, name } => {
                let client = kube.ok_or_else(|| {
                    ScalerError::Config(format!(
                        "activator Service {namespace}/{name} needs a cluster; use --activator-admin URL without one"
                    ))
                })?;
                let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client.clone(), namespace);
                let lp =
                    kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
                let slices = api.list(&lp).await.map_err(|e| {
                    ScalerError::Upstream(format!(
                        "listing EndpointSlices of activator Service {namespace}/{name}: {e}"
                    ))
                })?;
                Ok(replica_urls_from_slices(&slices.items))
            }
        }
    }

    /// GETs `path` from one replica's admin port, bounded in time and size.
    async fn get(url: &str, path: &str) -> Result<Vec<u8>, String> {
        let client =
            super::http_client::build_http_client(FETCH_TIMEOUT, false, None).map_err(|e| e.to_string())?;
        let target = format!("{}{path}", url.trim_end_matches('/'));
        let mut resp = client
            .get(&target)
            .send()
            .await
            .map_err(|e| format!("GET {target}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {target}: status {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {target}: {e}"))? {
            if body.len() + chunk.len() > MAX_QUEUE_BODY {
                return Err(format!("GET {target}: body over {MAX_QUEUE_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn fetch(url: &str) -> Result<HashMap<String, QueueCounts>, String> {
        let body = Self::get(url, "/queue").await?;
        let target = format!("{}/queue", url.trim_end_matches('/'));
        let parsed: HashMap<String, QueueEntry> =
            serde_json::from_slice(&body).map_err(|e| format!("GET {target}: not the /queue JSON: {e}"))?;
        Ok(parsed
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    QueueCounts {
                        concurrency: v.concurrency.max(0.0),
                        request_count: v.request_count,
                    },
                )
            })
            .collect())
    }

    /// Reads every replica and answers for `routes` (key and rate window settings).
    async fn observe(
        &self,
        kube: Option<&kube::Client>,
        routes: &[(String, Duration, Duration)],
    ) -> Result<Vec<RouteObservation>, ScalerError> {
        let urls = self.replica_urls(kube).await?;
        if urls.is_empty() {
            return Err(ScalerError::Upstream(format!(
                "no ready activator replica ({})",
                self.source.key()
            )));
        }
        let answers = join_all(urls.iter().map(|u| Self::fetch(u))).await;
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let mut state = self.state.lock_or_recover();
        state.replicas.retain(|u, _| urls.contains(u));
        let mut errors = Vec::new();
        for (url, answer) in urls.iter().zip(answers) {
            let counts = match answer {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(replica = %url, error = %e, "activator replica did not answer; its last concurrency is kept");
                    errors.push(e);
                    continue;
                }
            };
            let previous = state.replicas.remove(url);
            for (key, c) in &counts {
                let delta = request_delta(
                    previous
                        .as_ref()
                        .and_then(|p| p.get(key))
                        .map(|p| p.request_count),
                    c.request_count,
                );
                if delta > 0 {
                    let (window, granularity) = routes
                        .iter()
                        .find(|(k, _, _)| k == key)
                        .map_or((DEFAULT_WINDOW, DEFAULT_GRANULARITY), |(_, w, g)| (*w, *g));
                    window_for(&mut state.windows, key, window, granularity).record(now_ms, delta as f64);
                }
            }
            state.replicas.insert(url.clone(), counts);
        }
        if errors.len() == urls.len() {
            return Err(ScalerError::Upstream(format!(
                "no activator replica answered: {}",
                errors.join("; ")
            )));
        }
        let observations = routes
            .iter()
            .map(|(key, window, granularity)| {
                let concurrency = state
                    .replicas
                    .values()
                    .filter_map(|r| r.get(key))
                    .map(|c| c.concurrency)
                    .sum();
                let w = window_for(&mut state.windows, key, *window, *granularity);
                RouteObservation {
                    concurrency,
                    rate: w.rate(now_ms),
                    seen: w.seen(now_ms),
                }
            })
            .collect();
        Ok(observations)
    }
}

/// The `/routes` counters that add up over replicas (the rest, like the port, do not).
const SUMMED: [&str; 9] = [
    "concurrency",
    "held",
    "requestCount",
    "holdTimeouts",
    "overflows",
    "upstreamErrors",
    "abandoned",
    "coldStarts",
    "wakeErrors",
];

impl Fleet {
    /// Each replica's `/routes` entry for `keys`, and their numeric fields summed: the live view
    /// `ebb explain` prints. Replicas that fail are named with their error, never fatal.
    async fn live(&self, kube: Option<&kube::Client>, keys: &[String]) -> serde_json::Value {
        let urls = match self.replica_urls(kube).await {
            Ok(u) => u,
            Err(e) => return serde_json::json!({ "error": e.to_string() }),
        };
        let answers = join_all(urls.iter().map(|u| Self::get(u, "/routes"))).await;
        let mut routes = serde_json::Map::new();
        for key in keys {
            let mut replicas = serde_json::Map::new();
            let mut total = serde_json::Map::new();
            for (url, answer) in urls.iter().zip(&answers) {
                let entry =
                    match answer.as_ref().map_err(String::clone).and_then(|b| {
                        serde_json::from_slice::<serde_json::Value>(b).map_err(|e| e.to_string())
                    }) {
                        Ok(all) => all.get(key).cloned().unwrap_or(serde_json::Value::Null),
                        Err(e) => serde_json::json!({ "error": e }),
                    };
                for field in SUMMED {
                    if let Some(n) = entry.get(field).and_then(serde_json::Value::as_u64) {
                        let sum = total.get(field).and_then(serde_json::Value::as_u64).unwrap_or(0);
                        total.insert(field.to_string(), serde_json::json!(sum.saturating_add(n)));
                    }
                }
                replicas.insert(url.clone(), entry);
            }
            routes.insert(
                key.clone(),
                serde_json::json!({ "total": total, "replicas": replicas }),
            );
        }
        serde_json::json!({ "source": self.source.key(), "routes": routes })
    }
}

fn window_for<'a>(
    windows: &'a mut HashMap<String, (Duration, Duration, RateWindow)>,
    key: &str,
    window: Duration,
    granularity: Duration,
) -> &'a mut RateWindow {
    let entry = windows
        .entry(key.to_string())
        .or_insert_with(|| (window, granularity, RateWindow::new(window, granularity)));
    if entry.0 != window || entry.1 != granularity {
        *entry = (window, granularity, RateWindow::new(window, granularity));
    }
    &mut entry.2
}

/// `http://IP:PORT` of every ready, not terminating endpoint of the slices, on the slice's port
/// named `admin` or `metrics`, else its first.
pub fn replica_urls_from_slices(slices: &[EndpointSlice]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for s in slices {
        let ports = s.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| matches!(p.name.as_deref(), Some("admin" | "metrics")))
            .or_else(|| ports.first())
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for e in &s.endpoints {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            for a in &e.addresses {
                let host = if a.contains(':') {
                    format!("[{a}]")
                } else {
                    a.clone()
                };
                out.insert(format!("http://{host}:{port}"));
            }
        }
    }
    out.into_iter().collect()
}

/// What an `external-push` trigger reads.
#[derive(Clone, Debug)]
enum Target {
    HttpScaledObject(String),
    InterceptorRoute(String),
    Hosts {
        hosts: Vec<String>,
        prefixes: Vec<String>,
    },
}

/// The `external-push` trigger of the HTTP add-on.
pub struct ExternalPushScaler {
    index: usize,
    namespace: String,
    target: Target,
    metric_type: crate::crd::scaled_object::MetricTargetType,
    source: Source,
    shared: HttpShared,
    kube: Option<kube::Client>,
}

fn list(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

impl ExternalPushScaler {
    /// Builds the trigger from its metadata.
    pub fn new(config: &ScalerConfig, ctx: &ScalerContext) -> Result<Self, ScalerError> {
        let m = &config.metadata;
        let non_empty = |k: &str| {
            m.get(k)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let target = if let Some(name) = non_empty("httpScaledObject") {
            Target::HttpScaledObject(name)
        } else if let Some(name) = non_empty("interceptorRoute") {
            Target::InterceptorRoute(name)
        } else if !list(m.get("hosts")).is_empty() {
            Target::Hosts {
                hosts: list(m.get("hosts")),
                prefixes: list(m.get("pathPrefixes")),
            }
        } else {
            return Err(ScalerError::Config(
                "external-push trigger needs `httpScaledObject`, `interceptorRoute` or `hosts` in its metadata (the HTTP add-on's shapes); other external-push scalers are not supported".into(),
            ));
        };
        let shared = ctx.http.clone();
        shared.ensure_watching();
        let source = if !shared.discovery.admin_urls.is_empty() {
            Source::Urls(shared.discovery.admin_urls.clone())
        } else if let Some((namespace, name)) = shared
            .discovery
            .service
            .as_deref()
            .and_then(|s| s.split_once('/'))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .or_else(|| m.get("scalerAddress").and_then(|a| service_of_address(a)))
        {
            Source::Service { namespace, name }
        } else {
            return Err(ScalerError::Config(
                "no activator to read: set `scalerAddress: NAME.NAMESPACE:PORT` (the activator's admin Service) or run with --activator-service / --activator-admin".into(),
            ));
        };
        Ok(ExternalPushScaler {
            index: config.trigger_index,
            namespace: config.namespace.clone(),
            target,
            metric_type: config.metric_type,
            source,
            shared,
            kube: ctx.kube.clone(),
        })
    }

    /// `(HPA metric name, route keys, is rate, target, window, granularity)` per metric.
    fn metrics(&self) -> Result<Vec<MetricPlan>, ScalerError> {
        let bad = |e: MetricsError| ScalerError::Config(e.to_string());
        let plan = |suffix: String, keys: Vec<String>, rate: Option<&RateSpec>, target: f64| MetricPlan {
            name: metric_name(self.index, &suffix),
            keys,
            rate: rate.is_some(),
            target,
            window: rate.map_or(DEFAULT_WINDOW, |r| r.window),
            granularity: rate.map_or(DEFAULT_GRANULARITY, |r| r.granularity),
        };
        match &self.target {
            Target::HttpScaledObject(name) => {
                let metrics = match self
                    .shared
                    .index
                    .get(HttpKind::HttpScaledObject, &self.namespace, name)
                {
                    Some(e) => e.metrics.map_err(bad)?,
                    None => HttpMetrics::default(),
                };
                let key = format!("{}/{name}", self.namespace);
                let suffix = http_scaled_object_metric(&self.namespace, name);
                Ok(vec![match &metrics.rate {
                    Some(r) => plan(suffix, vec![key], Some(r), r.target),
                    None => plan(
                        suffix,
                        vec![key],
                        None,
                        metrics.concurrency.unwrap_or(DEFAULT_TARGET as f64),
                    ),
                }])
            }
            Target::InterceptorRoute(name) => {
                let metrics = self
                    .shared
                    .index
                    .get(HttpKind::InterceptorRoute, &self.namespace, name)
                    .map(|e| e.metrics.map_err(bad))
                    .transpose()?
                    .unwrap_or_default();
                let key = format!("{}/{name}", self.namespace);
                let mut out = Vec::new();
                if let Some(t) = metrics.concurrency {
                    out.push(plan(
                        interceptor_route_metric(name, false),
                        vec![key.clone()],
                        None,
                        t,
                    ));
                }
                if let Some(r) = &metrics.rate {
                    out.push(plan(
                        interceptor_route_metric(name, true),
                        vec![key],
                        Some(r),
                        r.target,
                    ));
                }
                if out.is_empty() {
                    return Err(ScalerError::Config(SCALING_METRIC_MESSAGE.into()));
                }
                Ok(out)
            }
            Target::Hosts { hosts, prefixes } => {
                let routes = self.shared.index.by_hosts(&self.namespace, hosts, prefixes);
                let target = routes
                    .first()
                    .and_then(|(_, e)| e.metrics.as_ref().ok())
                    .and_then(|m| m.concurrency)
                    .unwrap_or(DEFAULT_TARGET as f64);
                let keys = routes.into_iter().map(|(k, _)| k).collect();
                Ok(vec![plan(
                    format!("http-{}", hosts.join("-")),
                    keys,
                    None,
                    target,
                )])
            }
        }
    }
}

impl std::fmt::Debug for ExternalPushScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalPushScaler")
            .field("index", &self.index)
            .field("namespace", &self.namespace)
            .field("target", &self.target)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// One metric of the trigger, resolved.
#[derive(Clone, Debug)]
struct MetricPlan {
    name: String,
    keys: Vec<String>,
    rate: bool,
    target: f64,
    window: Duration,
    granularity: Duration,
}

impl super::Scaler for ExternalPushScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        // A broken scalingMetric was reported when the object was checked; the HPA keeps the
        // add-on's default target meanwhile.
        let plans = self.metrics().unwrap_or_else(|_| {
            vec![MetricPlan {
                name: metric_name(self.index, "http"),
                keys: Vec::new(),
                rate: false,
                target: DEFAULT_TARGET as f64,
                window: DEFAULT_WINDOW,
                granularity: DEFAULT_GRANULARITY,
            }]
        });
        plans
            .into_iter()
            .map(|p| MetricSpec::External {
                name: p.name,
                target: MetricTarget {
                    kind: self.metric_type,
                    value: p.target,
                    integer: true,
                },
            })
            .collect()
    }

    fn get_metrics_and_activity<'a>(
        &'a self,
        metric_name: &'a str,
    ) -> BoxFuture<'a, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async move {
            let plans = self.metrics()?;
            let plan = plans
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(metric_name))
                .or(plans.first())
                .ok_or_else(|| ScalerError::Config(format!("no metric {metric_name}")))?;
            let routes: Vec<(String, Duration, Duration)> = plan
                .keys
                .iter()
                .map(|k| (k.clone(), plan.window, plan.granularity))
                .collect();
            let fleet = self.shared.fleet(&self.source);
            let span = tracing::info_span!("upstream", trigger = self.index, scaler = "external-push", host = %self.source.key(), call = "GET /queue");
            let seen =
                tracing::Instrument::instrument(fleet.observe(self.kube.as_ref(), &routes), span).await?;
            let concurrency: f64 = seen.iter().map(|o| o.concurrency).sum();
            let rate: f64 = seen.iter().map(|o| o.rate).sum();
            let active = concurrency > 0.0 || seen.iter().any(|o| o.seen);
            Ok(MetricsAndActivity {
                values: vec![if plan.rate { rate } else { concurrency }],
                active,
            })
        })
    }

    fn live_detail(&self) -> BoxFuture<'_, Option<(String, serde_json::Value)>> {
        Box::pin(async move {
            let mut keys: Vec<String> = match self.metrics() {
                Ok(plans) => plans.into_iter().flat_map(|p| p.keys).collect(),
                Err(e) => return Some((LIVE_KEY.into(), serde_json::json!({ "error": e.to_string() }))),
            };
            keys.sort();
            keys.dedup();
            let fleet = self.shared.fleet(&self.source);
            let span = tracing::info_span!("upstream", trigger = self.index, scaler = "external-push", host = %self.source.key(), call = "GET /routes");
            let live = tracing::Instrument::instrument(fleet.live(self.kube.as_ref(), &keys), span).await;
            Some((LIVE_KEY.into(), live))
        })
    }
}

/// The key `ebb explain` shows the activator's live route counts under.
pub const LIVE_KEY: &str = "activator routes";

#[cfg(test)]
mod tests {
    use super::*;

    fn httpso(yaml: &str) -> HTTPScaledObject {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    const BASE: &str =
        "apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata: {name: app, namespace: web}\n";

    /// (window s, granularity s, records (ms, count), read at ms, expected rate)
    type RateCase = (u64, u64, &'static [(u64, f64)], u64, f64);

    #[test]
    fn rate_window_arithmetic() {
        let s = Duration::from_secs;
        let cases: &[RateCase] = &[
            // One request one second into a 60 s window: averaged over the 2 s seen so far.
            (60, 1, &[(1_000, 1.0)], 2_000, 0.5),
            (60, 1, &[(0, 60.0)], 59_999, 1.0),
            // The bucket leaves the window after `window`.
            (60, 1, &[(0, 60.0)], 60_000, 0.0),
            (10, 2, &[(0, 4.0), (3_000, 6.0)], 9_999, 1.0),
            (10, 2, &[(0, 4.0), (3_000, 6.0)], 10_000, 0.6),
            // Unrounded: one request in a 10 min window is not zero.
            (600, 1, &[(0, 1.0)], 599_000, 1.0 / 600.0),
            (60, 1, &[], 5_000, 0.0),
        ];
        for (window, gran, records, at, want) in cases {
            let mut w = RateWindow::new(s(*window), s(*gran));
            for (t, c) in *records {
                w.record(*t, *c);
            }
            let got = w.rate(*at);
            assert!(
                (got - want).abs() < 1e-12,
                "w={window} g={gran} {records:?} at {at}: {got} != {want}"
            );
            assert_eq!(w.seen(*at), *want > 0.0, "seen at {at}");
        }
    }

    #[test]
    fn request_deltas() {
        assert_eq!(request_delta(None, 17), 0);
        assert_eq!(request_delta(Some(10), 17), 7);
        assert_eq!(request_delta(Some(17), 17), 0);
        assert_eq!(request_delta(Some(17), 3), 3);
    }

    #[test]
    fn metric_names_escape_as_the_add_on() {
        assert_eq!(
            http_scaled_object_metric("default", "hello"),
            "http-default_002Fhello"
        );
        assert_eq!(http_scaled_object_metric("a.b", "c_d"), "http-a.b_002Fc_005Fd");
        assert_eq!(interceptor_route_metric("app", true), "http_app_rate");
        assert_eq!(interceptor_route_metric("app", false), "http_app_concurrency");
    }

    #[test]
    fn metrics_and_defaults() {
        let target = "scaleTargetRef: {name: app, service: app, port: 80}";
        let cases: &[(&str, Result<HttpMetrics, &str>)] = &[
            ("{}", Ok(HttpMetrics::default())),
            (
                "{targetPendingRequests: 7}",
                Ok(HttpMetrics {
                    concurrency: Some(7.0),
                    rate: None,
                }),
            ),
            (
                "{targetPendingRequests: 7, scalingMetric: {concurrency: {targetValue: 3}}}",
                Ok(HttpMetrics {
                    concurrency: Some(3.0),
                    rate: None,
                }),
            ),
            (
                "{scalingMetric: {requestRate: {}}}",
                Ok(HttpMetrics {
                    concurrency: None,
                    rate: Some(RateSpec {
                        target: 100.0,
                        window: DEFAULT_WINDOW,
                        granularity: DEFAULT_GRANULARITY,
                    }),
                }),
            ),
            (
                "{scalingMetric: {concurrency: {}, requestRate: {}}}",
                Err("spec.scalingMetric"),
            ),
            (
                "{scalingMetric: {requestRate: {granularity: 500ms}}}",
                Err("spec.scalingMetric.requestRate.granularity"),
            ),
            (
                "{scalingMetric: {requestRate: {granularity: 0s}}}",
                Err("spec.scalingMetric.requestRate.granularity"),
            ),
            (
                "{scalingMetric: {requestRate: {window: 5s, granularity: 10s}}}",
                Err("spec.scalingMetric.requestRate.window"),
            ),
            (
                "{scalingMetric: {requestRate: {window: soon}}}",
                Err("spec.scalingMetric.requestRate.window"),
            ),
        ];
        for (extra, want) in cases {
            let mut so = httpso(&format!("{BASE}spec: {{{target}}}\n"));
            let extra: serde_json::Value = serde_yaml::from_str(extra).expect("extra");
            let mut spec = serde_json::to_value(&so.spec).expect("json");
            for (k, v) in extra.as_object().expect("map") {
                spec[k] = v.clone();
            }
            so.spec = serde_json::from_value(spec).expect("spec");
            match (http_scaled_object_metrics(&so), want) {
                (Ok(got), Ok(w)) => assert_eq!(&got, w, "{extra}"),
                (Err(e), Err(field)) => assert_eq!(e.field, *field, "{extra}: {e}"),
                (got, want) => panic!("{extra}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn service_addresses() {
        assert_eq!(
            service_of_address("ebb-activator-admin.ebb:9090"),
            Some(("ebb".into(), "ebb-activator-admin".into()))
        );
        assert_eq!(
            service_of_address("keda-add-ons-http-external-scaler.keda.svc.cluster.local:9090"),
            Some(("keda".into(), "keda-add-ons-http-external-scaler".into()))
        );
        assert_eq!(service_of_address("localhost:9090"), None);
    }
}
