//! Metric values between the HPA and the scalers.
//!
//! Two read paths, both coalescing concurrent identical reads into one upstream call:
//! - `useCachedMetrics: true`: the outcome (value or error) is kept for `pollingInterval`,
//!   so the upstream sees at most one query per trigger per interval;
//! - otherwise every read asks the scaler, but reads that arrive while a query for the same
//!   trigger is in flight wait for it instead of starting their own.
//!
//! A cache hit is the hot path of the whole server: the key is three integers (no
//! allocation), the lookup is moka's synchronous `get`, and the rendered response body is
//! kept beside the value so a hit does not serialise JSON again.

use crate::locks::LockExt;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use moka::{Expiry, sync::Cache};
use tokio::sync::OnceCell;

use crate::scalers::{ScalerError, registry::Resolved};

/// Identifies one metric of one build of a ScaledObject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Build epoch, unique per build of a ScaledObject; a changed object never reads an
    /// older build's values.
    pub epoch: u64,
    /// Trigger index.
    pub trigger: usize,
    /// Position of the metric among the trigger's metric names.
    pub metric: usize,
}

/// A value as the scaler reported it, with the time it was taken.
#[derive(Debug)]
pub struct Sample {
    /// Values (the HPA sums them).
    pub values: Vec<f64>,
    /// Whether the trigger was active.
    pub active: bool,
    /// When the upstream answered.
    pub timestamp: DateTime<Utc>,
    /// Monotonic twin of `timestamp`, for the age metric.
    pub taken: Instant,
    /// The response body rendered for the first spelling of the metric name asked for.
    pub rendered: OnceLock<Rendered>,
}

impl Sample {
    /// A sample taken now.
    pub fn now(values: Vec<f64>, active: bool) -> Self {
        Self {
            values,
            active,
            timestamp: Utc::now(),
            taken: Instant::now(),
            rendered: OnceLock::new(),
        }
    }
}

/// A response body and the metric name spelling it was rendered for.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Metric name as the client asked for it.
    pub asked: String,
    /// The `ExternalMetricValueList` bytes, or the error Status the sample produced.
    pub body: Result<Bytes, String>,
}

/// The outcome of one upstream query, shared by every reader that waited for it.
pub type Outcome = Arc<Result<Sample, ScalerError>>;

/// How a read was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// Served from a value cached by an earlier query.
    Hit,
    /// This read (or one it joined) queried the scaler.
    Miss,
}

#[derive(Clone)]
struct Entry {
    outcome: Outcome,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<CacheKey, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &CacheKey, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Called after every upstream query with the trigger type, its duration and whether it succeeded.
pub type QueryFn = Arc<dyn Fn(&str, Duration, bool) + Send + Sync>;

/// The metric cache shared by every metric read.
pub struct MetricCache {
    cached: Cache<CacheKey, Entry>,
    inflight: Mutex<HashMap<CacheKey, Arc<OnceCell<Outcome>>>>,
    upstream_guard: Duration,
    on_query: OnceLock<QueryFn>,
}

impl std::fmt::Debug for MetricCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricCache")
            .field("entries", &self.cached.entry_count())
            .finish()
    }
}

impl MetricCache {
    /// A cache whose upstream calls are abandoned after `upstream_guard` even if a scaler forgot its own timeout.
    pub fn new(upstream_guard: Duration) -> Self {
        let cached = Cache::builder()
            .max_capacity(1_000_000)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .build();
        Self {
            cached,
            inflight: Mutex::new(HashMap::new()),
            upstream_guard,
            on_query: OnceLock::new(),
        }
    }

    /// Sets the hook told about every upstream query (once; later calls are ignored).
    pub fn on_query(&self, f: QueryFn) {
        let _ = self.on_query.set(f);
    }

    /// Drops everything cached for one build of a ScaledObject.
    pub fn invalidate_epoch(&self, epoch: u64) {
        // Only fails when closures were not enabled at build time, which they are.
        let _ = self.cached.invalidate_entries_if(move |k, _| k.epoch == epoch);
    }

    /// Number of cached outcomes (approximate, for metrics).
    pub fn entry_count(&self) -> u64 {
        self.cached.entry_count()
    }

    /// Reads the metric `resolved` points at, through the cache.
    pub async fn read(&self, resolved: &Resolved) -> (Outcome, ReadKind) {
        let trigger = resolved.trigger();
        let key = CacheKey {
            epoch: resolved.object.epoch,
            trigger: trigger.index,
            metric: resolved.metric,
        };
        if !trigger.use_cached_metrics {
            return (
                Box::pin(self.coalesced(key, resolved, None)).await,
                ReadKind::Miss,
            );
        }
        if let Some(entry) = self.cached.get(&key) {
            return (entry.outcome, ReadKind::Hit);
        }
        (
            // Boxed: the miss path's future would otherwise inflate every hit's.
            Box::pin(self.coalesced(key, resolved, Some(resolved.object.polling_interval))).await,
            ReadKind::Miss,
        )
    }

    /// Joins or starts the flight for `key`; with a `ttl`, the outcome is cached before the
    /// flight is retired, so no reader can fall between the two and query again.
    async fn coalesced(&self, key: CacheKey, resolved: &Resolved, ttl: Option<Duration>) -> Outcome {
        let cell = {
            let mut map = self.inflight.lock_or_recover();
            map.entry(key).or_default().clone()
        };
        let outcome = cell.get_or_init(|| self.query(resolved)).await.clone();
        if let Some(ttl) = ttl {
            // Joiners of the same flight insert the same outcome; the last write is identical.
            self.cached.insert(
                key,
                Entry {
                    outcome: outcome.clone(),
                    ttl,
                },
            );
        }
        let mut map = self.inflight.lock_or_recover();
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        outcome
    }

    async fn query(&self, resolved: &Resolved) -> Outcome {
        let trigger = resolved.trigger();
        let scaler = match &trigger.scaler {
            Ok(s) => s.clone(),
            Err(e) => return Arc::new(Err(e.clone())),
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(
            self.upstream_guard,
            scaler.get_metrics_and_activity(&resolved.metric_name),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ScalerError::Timeout(self.upstream_guard)),
        };
        if let Some(f) = self.on_query.get() {
            f(&trigger.trigger_type, started.elapsed(), result.is_ok());
        }
        Arc::new(result.map(|m| Sample::now(m.values, m.active)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;

    use super::*;
    use crate::scalers::{
        MetricSpec, MetricsAndActivity, Scaler,
        registry::ObjectKey,
        registry::{ObjectEntry, TriggerEntry},
    };

    /// Counts upstream calls; each call takes `delay` and returns the call number.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        delay: Duration,
    }

    impl Scaler for Counting {
        fn metric_specs(&self) -> Vec<MetricSpec> {
            Vec::new()
        }
        fn get_metrics_and_activity<'a>(
            &'a self,
            _m: &'a str,
        ) -> BoxFuture<'a, Result<crate::scalers::MetricsAndActivity, ScalerError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(self.delay).await;
                Ok(MetricsAndActivity {
                    values: vec![n as f64],
                    active: true,
                })
            })
        }
    }

    fn resolved(scaler: Arc<Counting>, cached: bool, polling: Duration) -> Resolved {
        resolved_epoch(scaler, cached, polling, 1)
    }

    fn resolved_epoch(scaler: Arc<Counting>, cached: bool, polling: Duration, epoch: u64) -> Resolved {
        let object = Arc::new(ObjectEntry {
            key: ObjectKey::new("ns", "so"),
            epoch,
            polling_interval: polling,
            triggers: vec![TriggerEntry {
                index: 0,
                trigger_type: "fake".into(),
                trigger_name: String::new(),
                scaler: Ok(scaler),
                metric_names: vec!["s0-fake".into()],
                use_cached_metrics: cached,
                auth_fields: Vec::new(),
            }],
            spec_hash: 0,
            object: None,
            depends_on_auth: false,
            summary: Default::default(),
        });
        Resolved {
            object,
            trigger: 0,
            metric: 0,
            metric_name: "s0-fake".into(),
        }
    }

    #[tokio::test]
    async fn concurrent_identical_reads_share_one_upstream_call() {
        let scaler = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(100),
        });
        let r = resolved(scaler.clone(), false, Duration::from_secs(30));
        let cache = MetricCache::new(Duration::from_secs(5));
        let reads = (0..50).map(|_| cache.read(&r));
        let outcomes = futures::future::join_all(reads).await;
        assert_eq!(scaler.calls.load(Ordering::SeqCst), 1);
        assert!(
            outcomes
                .iter()
                .all(|(o, _)| o.as_ref().as_ref().map(|s| s.values.clone()).ok() == Some(vec![1.0]))
        );
        // Without useCachedMetrics the next read asks again.
        let (o, kind) = cache.read(&r).await;
        assert_eq!(kind, ReadKind::Miss);
        assert_eq!(
            o.as_ref().as_ref().map(|s| s.values.clone()).ok(),
            Some(vec![2.0])
        );
    }

    #[tokio::test]
    async fn cached_metrics_refresh_every_polling_interval() {
        let scaler = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(20),
        });
        // Reads within the interval: a long one, so a loaded machine pausing this test between
        // two reads cannot let it run out.
        let r = resolved(scaler.clone(), true, Duration::from_secs(600));
        let cache = MetricCache::new(Duration::from_secs(5));
        let first = futures::future::join_all((0..20).map(|_| cache.read(&r))).await;
        assert_eq!(scaler.calls.load(Ordering::SeqCst), 1);
        // They all joined the one flight: none was served from an earlier value.
        assert!(first.iter().all(|(_, k)| *k == ReadKind::Miss));
        let (_, kind) = cache.read(&r).await;
        assert_eq!(kind, ReadKind::Hit);
        assert_eq!(scaler.calls.load(Ordering::SeqCst), 1);
        // Invalidation drops the value at once.
        cache.invalidate_epoch(1);
        let (o, _) = cache.read(&r).await;
        assert_eq!(
            o.as_ref().as_ref().map(|s| s.values.clone()).ok(),
            Some(vec![2.0])
        );

        // A read after the interval: a short one, waited out (sleeping at least that long is
        // exact, whatever the load).
        let short = resolved_epoch(scaler.clone(), true, Duration::from_millis(100), 2);
        let (o, kind) = cache.read(&short).await;
        assert_eq!(kind, ReadKind::Miss);
        assert_eq!(
            o.as_ref().as_ref().map(|s| s.values.clone()).ok(),
            Some(vec![3.0])
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (o, kind) = cache.read(&short).await;
        assert_eq!(kind, ReadKind::Miss);
        assert_eq!(
            o.as_ref().as_ref().map(|s| s.values.clone()).ok(),
            Some(vec![4.0])
        );
    }

    #[tokio::test]
    async fn a_hung_scaler_is_cut_off_by_the_guard() {
        let scaler = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            delay: Duration::from_secs(60),
        });
        let r = resolved(scaler, false, Duration::from_secs(30));
        let cache = MetricCache::new(Duration::from_millis(100));
        let (o, _) = cache.read(&r).await;
        assert!(matches!(o.as_ref(), Err(ScalerError::Timeout(_))));
    }
}
