//! The scaler engine one process shares between its components: live scalers, metric cache and
//! fallback counters. Under `ebb run` the metrics server and the operator hold the same engine,
//! so a metric read and the scale loop meet in one cache with no network hop between them.

use crate::locks::LockExt;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Where the `external-push` trigger finds the activator replicas (re-exported for `run`).
pub use crate::scalers::http_push::ActivatorDiscovery;
use crate::{
    cache::MetricCache,
    crd::ScaledObject,
    keda_metrics::{KedaMetrics, RegisteredResource},
    resolver::kube::KubeResolver,
    scalers::{
        ScalerContext,
        aws::AwsShared,
        http_push::{HttpIndex, HttpShared},
        kubernetes_workload::PodIndex,
        registry::{AuthResolver, ObjectKey, Registry, RegistryConfig},
    },
    scaling::{activation::pause_state, fallback::HealthStore},
    shutdown::Signal,
};

/// Registry, cache and fallback counters, wired so removals and rebuilds reach all three.
#[derive(Clone, Debug)]
pub struct Engine {
    /// Live scalers by ScaledObject.
    pub registry: Arc<Registry>,
    /// Metric values between scalers and readers.
    pub cache: Arc<MetricCache>,
    /// Consecutive-failure counters for fallback.
    pub health: Arc<HealthStore>,
    /// KEDA's metrics, once [`Engine::observe`] was called.
    pub metrics: Option<Arc<KedaMetrics>>,
}

impl Engine {
    /// An empty engine whose scalers time out after `http_timeout`.
    pub fn new(http_timeout: Duration) -> Self {
        let registry = Arc::new(Registry::new(RegistryConfig {
            http_timeout,
            ..RegistryConfig::default()
        }));
        // An upstream call that outlives twice its own timeout is abandoned by the cache.
        let cache = Arc::new(MetricCache::new(Duration::from_secs(30).max(http_timeout * 2)));
        let health = Arc::new(HealthStore::default());
        {
            let cache = cache.clone();
            registry.on_invalidate(Arc::new(move |epoch| cache.invalidate_epoch(epoch)));
        }
        {
            let health = health.clone();
            registry.on_remove(Arc::new(move |key| health.forget(key)));
        }
        {
            let health = health.clone();
            registry.on_apply(Arc::new(move |key, so| health.seed(key, so)));
        }
        Self {
            registry,
            cache,
            health,
            metrics: None,
        }
    }

    /// Feeds KEDA's metrics from this engine: `keda_resource_registered_total` and
    /// `keda_trigger_registered_total` follow the registered ScaledObjects, `keda_scaled_object_paused`
    /// their pause annotations, `ebb_scaler_upstream_*` every upstream query the cache makes, and
    /// scalers built after [`Engine::configure`] count their HTTP requests. One process records
    /// once, however many components (metrics server, operator) share the engine.
    pub fn observe(&mut self, metrics: Arc<KedaMetrics>) {
        let tally = Arc::new(Tally::default());
        {
            let (tally, metrics) = (tally.clone(), metrics.clone());
            self.registry
                .on_apply(Arc::new(move |key, so| tally.applied(&metrics, key, so)));
        }
        {
            let (tally, metrics) = (tally.clone(), metrics.clone());
            self.registry
                .on_remove(Arc::new(move |key| tally.removed(&metrics, key)));
        }
        {
            let metrics = metrics.clone();
            self.cache.on_query(Arc::new(move |trigger_type, elapsed, ok| {
                metrics.record_upstream(trigger_type, elapsed, ok)
            }));
        }
        self.metrics = Some(metrics);
    }

    /// An engine whose scalers reach the cluster through `client`: feeding `metrics`, reading
    /// pods from a watch, and resolving authentication from the watch caches of
    /// (Cluster)TriggerAuthentications, Secrets and ConfigMaps (synced before this returns).
    /// Every component that runs against a cluster builds its engine here.
    pub async fn connect(
        client: &kube::Client,
        http_timeout: Duration,
        cluster_object_namespace: String,
        metrics: Arc<KedaMetrics>,
        activators: ActivatorDiscovery,
        shutdown: &Signal,
    ) -> (Engine, PodIndex) {
        let mut engine = Engine::new(http_timeout);
        engine.observe(metrics);
        let pods = PodIndex::start(client.clone(), shutdown.clone());
        let resolver = KubeResolver::start(
            client.clone(),
            engine.registry.clone(),
            cluster_object_namespace,
            shutdown.clone(),
        )
        .await;
        engine.configure(
            Arc::new(resolver),
            ScalerContext {
                kube: Some(client.clone()),
                pods: Some(pods.clone()),
                aws: AwsShared::default(),
                clock: None,
                metrics: None,
                http: HttpShared::new(HttpIndex::default(), activators)
                    .watching(client.clone(), shutdown.clone()),
            },
        );
        (engine, pods)
    }

    /// Gives the registry its resolver and scaler context, with this engine's metrics in it.
    pub fn configure(&self, resolver: Arc<dyn AuthResolver>, mut context: ScalerContext) {
        context.metrics = self.metrics.clone();
        self.registry.configure(resolver, context);
    }
}

/// What each registered ScaledObject counts for, so a re-apply changes the gauges only by the
/// difference and a removal takes back exactly what was added.
#[derive(Debug, Default)]
struct Tally {
    objects: Mutex<HashMap<ObjectKey, Vec<String>>>,
}

impl Tally {
    fn applied(&self, metrics: &KedaMetrics, key: &ObjectKey, so: &ScaledObject) {
        let types: Vec<String> = so.spec.triggers.iter().map(|t| t.type_.clone()).collect();
        let previous = {
            let mut objects = self.objects.lock_or_recover();
            if objects.get(key) == Some(&types) {
                None
            } else {
                Some(objects.insert(key.clone(), types.clone()))
            }
        };
        if let Some(previous) = previous {
            match previous {
                Some(old) => old.iter().for_each(|t| metrics.dec_trigger_registered(t)),
                None => metrics.inc_resource_registered(RegisteredResource::ScaledObject, &key.namespace),
            }
            types.iter().for_each(|t| metrics.inc_trigger_registered(t));
        }
        let paused = pause_state(so.metadata.annotations.as_ref()).any();
        metrics.set_paused(&key.namespace, &key.name, paused);
    }

    fn removed(&self, metrics: &KedaMetrics, key: &ObjectKey) {
        let removed = self.objects.lock_or_recover().remove(key);
        if let Some(types) = removed {
            types.iter().for_each(|t| metrics.dec_trigger_registered(t));
            metrics.dec_resource_registered(RegisteredResource::ScaledObject, &key.namespace);
        }
        metrics.remove_scaled_object(&key.namespace, &key.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalers::registry::{NoAuthResolver, ObjectKey};

    /// A loopback upstream answering `{"v": 7}` to every request.
    fn upstream() -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten().take(8) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{\"v\": 7}",
                );
            }
        });
        format!("http://127.0.0.1:{port}/v")
    }

    #[tokio::test]
    async fn a_real_read_feeds_keda_and_upstream_metrics() {
        let mut prom = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(KedaMetrics::register(&mut prom));
        let mut engine = Engine::new(Duration::from_secs(2));
        engine.observe(metrics);
        engine.configure(Arc::new(NoAuthResolver), ScalerContext::default());
        let so: crate::crd::ScaledObject = serde_yaml::from_str(&format!(
            "metadata: {{name: web, namespace: ns, annotations: {{autoscaling.keda.sh/paused: 'true'}}}}\nspec: {{scaleTargetRef: {{name: t}}, triggers: [{{type: metrics-api, metadata: {{url: '{}', valueLocation: v, targetValue: '1'}}}}]}}",
            upstream()
        ))
        .expect("parses");
        engine.registry.apply(&so);
        engine.registry.apply(&so);
        let key = ObjectKey::new("ns", "web");
        let resolved = engine
            .registry
            .resolve(&key, "s0-metric-api-v")
            .expect("resolves");
        let (outcome, _) = engine.cache.read(&resolved).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        let text = crate::keda_metrics::encode_text(&prom).expect("encodes");
        for wanted in [
            "keda_scaler_http_requests_total{namespace=\"ns\",scaled_resource=\"web\",scaler=\"metrics-api\",trigger_name=\"\",metric_name=\"s0-metric-api-v\",status_code=\"200\"} 1",
            "keda_scaler_http_request_duration_seconds_count{scaler=\"metrics-api\",status_code=\"200\"} 1",
            "ebb_scaler_upstream_latency_seconds_count{type=\"metrics-api\"} 1",
            "ebb_scaler_upstream_errors_total{type=\"metrics-api\"} 0",
            // Applied twice, counted once.
            "keda_trigger_registered_total{type=\"metrics-api\"} 1",
            "keda_resource_registered_total{type=\"scaled_object\",namespace=\"ns\"} 1",
            "keda_scaled_object_paused{namespace=\"ns\",scaledObject=\"web\"} 1",
        ] {
            assert!(text.contains(wanted), "no {wanted} in\n{text}");
        }
        engine.registry.remove(&key);
        let text = crate::keda_metrics::encode_text(&prom).expect("encodes");
        assert!(
            text.contains("keda_trigger_registered_total{type=\"metrics-api\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("keda_resource_registered_total{type=\"scaled_object\",namespace=\"ns\"} 0"),
            "{text}"
        );
        assert!(!text.contains("keda_scaled_object_paused{"), "{text}");
    }

    #[test]
    fn removing_an_object_forgets_its_fallback_counters() {
        let engine = Engine::new(Duration::from_secs(1));
        let so: crate::crd::ScaledObject = serde_yaml::from_str(
            "metadata: {name: a, namespace: ns}\nspec: {scaleTargetRef: {name: t}, fallback: {failureThreshold: 1, replicas: 2}, triggers: [{type: cron, metadata: {timezone: Etc/UTC, start: '0 0 * * *', end: '1 0 * * *', desiredReplicas: '1'}}]}",
        )
        .expect("parses");
        engine.registry.apply(&so);
        let key = ObjectKey::new("ns", "a");
        engine.health.step(&so, &key, "s0-cron", None, false);
        assert!(engine.health.get(&key, "s0-cron").is_some());
        engine.registry.remove(&key);
        assert!(engine.health.get(&key, "s0-cron").is_none());
    }

    #[test]
    fn counters_resume_from_the_published_status() {
        let engine = Engine::new(Duration::from_secs(1));
        let mut so: crate::crd::ScaledObject = serde_yaml::from_str(
            "metadata: {name: a, namespace: ns}\nspec: {scaleTargetRef: {name: t}, fallback: {failureThreshold: 3, replicas: 2}, triggers: [{type: cron, metadata: {timezone: Etc/UTC, start: '0 0 * * *', end: '1 0 * * *', desiredReplicas: '1'}}]}\nstatus: {health: {s0-cron: {numberOfFailures: 3, status: Failing}}}",
        )
        .expect("parses");
        engine.registry.apply(&so);
        let key = ObjectKey::new("ns", "a");
        // The fourth failure in a row, counted from the loop's published three, falls back.
        let (step, h) = engine.health.step(&so, &key, "s0-cron", None, false);
        assert_eq!(step, crate::scaling::fallback::Step::Synthetic);
        assert_eq!(h.number_of_failures, Some(4));
        // Once this process counts, a stale published count does not overwrite it.
        engine.health.step(&so, &key, "s0-cron", None, true);
        engine.registry.apply(&so);
        assert_eq!(
            engine
                .health
                .get(&key, "s0-cron")
                .and_then(|h| h.number_of_failures),
            Some(0)
        );
        // Objects without a fallback keep no counters.
        so.spec.fallback = None;
        let other = ObjectKey::new("ns", "b");
        so.metadata.name = Some("b".into());
        engine.registry.apply(&so);
        assert_eq!(engine.health.get(&other, "s0-cron"), None);
    }
}
