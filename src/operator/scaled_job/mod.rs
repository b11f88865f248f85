//! The ScaledJob controller of `ebb operator` (and `ebb run`, leader only): reconcile each
//! ScaledJob (finalizer, pause, validation, scaler build, rollout cleanup) and run its scale
//! loop, which creates Jobs as `crate::scaling::scaled_job` decides.
//!
//! ```text
//! watch ScaledJobs ─ reconcile ─┬─ rollout cleanup (delete old-generation Jobs)
//!                               └─ start/stop loop ── every pollingInterval: poll
//!   poll: triggers (own Registry + MetricCache, same scalers and TriggerAuthentication
//!         resolution as ScaledObjects) → list Jobs/pods → plan → create Jobs → history cleanup
//! ```
//!
//! ScaledJob scalers live in a registry of their own: a ScaledJob and a ScaledObject may share a
//! name, and the metrics server never serves ScaledJob metrics (no HPA reads them).

pub mod poll;
pub mod reconcile;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::PodSpec;
use kube::{
    Api, Client, Resource,
    core::DeserializeGuard,
    runtime::{Controller, WatchStreamExt, events::Recorder, reflector, watcher},
};
use tracing::{debug, warn};

use crate::{
    cache::MetricCache,
    crd::ScaledJob,
    keda_metrics::{KedaMetrics, RegisteredResource, ScaledResourceType},
    scalers::{
        ScalerConfig, ScalerError,
        registry::{AuthResolver, ObjectEntry, ObjectKey, Registry, RegistryConfig, object_key},
    },
    scaling::{events::Event, scaled_job as decide},
};

/// Source of "now"; tests inject a fixed instant.
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// Annotation on the ScaledJob-as-ScaledObject the registry holds: a hash of the Job pod
/// template, so an edit of the env the triggers read rebuilds their scalers.
const TEMPLATE_HASH_ANNOTATION: &str = "ebb.dev/job-template-hash";

/// Resolves a ScaledJob trigger's environment from its `jobTargetRef` pod template.
pub struct JobResolver {
    inner: Arc<dyn AuthResolver>,
    templates: RwLock<HashMap<ObjectKey, PodSpec>>,
}

impl AuthResolver for JobResolver {
    fn resolve(
        &self,
        so: &crate::crd::ScaledObject,
        index: usize,
        config: &mut ScalerConfig,
    ) -> Result<(), ScalerError> {
        let template = self
            .templates
            .read()
            .ok()
            .and_then(|t| t.get(&object_key(so)).cloned())
            .unwrap_or_default();
        self.inner.resolve_for_job(so, index, &template, config)
    }
}

/// A running scale loop and the generation it was started for.
#[derive(Debug)]
struct LoopHandle {
    generation: Option<i64>,
    abort: tokio::task::AbortHandle,
}

/// Shared state of the ScaledJob controller.
pub struct JobContext {
    /// Cluster access.
    pub client: Client,
    /// Live scalers of every ScaledJob.
    pub registry: Arc<Registry>,
    /// Metric values between the scalers and the loops.
    pub cache: Arc<MetricCache>,
    resolver: Arc<JobResolver>,
    /// Publishes Kubernetes events.
    pub recorder: Recorder,
    /// The clock `lastActiveTime` is written with.
    pub clock: Clock,
    /// KEDA's Prometheus metrics, when exported.
    pub metrics: Option<Arc<KedaMetrics>>,
    /// `app.kubernetes.io/version` of created Jobs.
    pub version: String,
    /// Start loops from reconcile (false in tests that drive polls by hand).
    pub spawn_loops: bool,
    loops: Mutex<HashMap<ObjectKey, LoopHandle>>,
    registered: Mutex<HashMap<ObjectKey, Vec<String>>>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// A context whose scalers are built like the ScaledObjects' in `base` (resolver, clients,
    /// HTTP timeout).
    pub fn new(client: Client, base: RegistryConfig, metrics: Option<Arc<KedaMetrics>>) -> Self {
        let resolver = Arc::new(JobResolver {
            inner: base.resolver.clone(),
            templates: RwLock::new(HashMap::new()),
        });
        let registry = Arc::new(Registry::new(RegistryConfig {
            http_timeout: base.http_timeout,
            context: base.context.clone(),
            resolver: resolver.clone(),
        }));
        let cache = Arc::new(MetricCache::new(
            Duration::from_secs(30).max(base.http_timeout * 2),
        ));
        {
            let cache = cache.clone();
            registry.on_invalidate(Arc::new(move |epoch| cache.invalidate_epoch(epoch)));
        }
        if let Some(m) = &metrics {
            let m = m.clone();
            cache.on_query(Arc::new(move |t, elapsed, ok| m.record_upstream(t, elapsed, ok)));
        }
        let reporter = kube::runtime::events::Reporter {
            controller: super::context::FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            registry,
            cache,
            resolver,
            clock: Arc::new(chrono::Utc::now),
            metrics,
            version: env!("CARGO_PKG_VERSION").to_string(),
            spawn_loops: true,
            loops: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        }
    }

    /// Builds (or keeps, when unchanged) the scalers of `sj` and returns them.
    pub fn register(&self, sj: &ScaledJob) -> Option<Arc<ObjectEntry>> {
        let key = key_of(sj);
        let template = sj
            .spec
            .job_target_ref
            .as_ref()
            .and_then(|j| j.template.spec.clone())
            .unwrap_or_default();
        let hash = crate::hash::fnv1a(&serde_json::to_vec(&template).unwrap_or_default());
        if let Ok(mut t) = self.resolver.templates.write() {
            t.insert(key.clone(), template);
        }
        let mut so = decide::as_scaled_object(sj);
        so.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(TEMPLATE_HASH_ANNOTATION.to_string(), hash.to_string());
        self.registry.apply(&so);
        self.count_registration(&key, sj);
        self.registry.get(&key)
    }

    /// Rebuilds the scalers of `sj` (after a failed read, as KEDA refreshes its scalers cache).
    pub fn rebuild(&self, sj: &ScaledJob) -> Option<Arc<ObjectEntry>> {
        self.registry.remove(&key_of(sj));
        self.register(sj)
    }

    /// Forgets a deleted ScaledJob: scalers, template, gauges, series.
    pub fn forget(&self, key: &ObjectKey) {
        self.stop_loop(key);
        self.registry.remove(key);
        if let Ok(mut t) = self.resolver.templates.write() {
            t.remove(key);
        }
        let removed = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let (Some(m), Some(types)) = (&self.metrics, removed) {
            types.iter().for_each(|t| m.dec_trigger_registered(t));
            m.dec_resource_registered(RegisteredResource::ScaledJob, &key.namespace);
            m.remove_scaled_job(&key.namespace, &key.name);
        }
    }

    fn count_registration(&self, key: &ObjectKey, sj: &ScaledJob) {
        let Some(m) = &self.metrics else { return };
        let types: Vec<String> = sj.spec.triggers.iter().map(|t| t.type_.clone()).collect();
        let previous = {
            let mut r = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            if r.get(key) == Some(&types) {
                return;
            }
            r.insert(key.clone(), types.clone())
        };
        match previous {
            Some(old) => old.iter().for_each(|t| m.dec_trigger_registered(t)),
            None => {
                m.inc_resource_registered(RegisteredResource::ScaledJob, &key.namespace);
                m.touch_scaled_job_errors(&key.namespace, &key.name);
            }
        }
        types.iter().for_each(|t| m.inc_trigger_registered(t));
    }

    /// Stops the loop of `key`; true when one was running.
    pub fn stop_loop(&self, key: &ObjectKey) -> bool {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.remove(key).map(|h| h.abort.abort()).is_some()
    }

    /// Stops every loop (shutdown or lost leadership).
    pub fn stop_all_loops(&self) {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        for (_, h) in loops.drain() {
            h.abort.abort();
        }
    }

    /// True when a loop runs for `key` (tests and diagnostics).
    pub fn has_loop(&self, key: &ObjectKey) -> bool {
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|h| !h.abort.is_finished())
    }

    /// Starts the loop of `sj` unless one runs for its generation; true when (re)started.
    pub fn ensure_loop(self: &Arc<Self>, sj: &ScaledJob) -> bool {
        let key = key_of(sj);
        let generation = sj.metadata.generation;
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if loops
            .get(&key)
            .is_some_and(|h| h.generation == generation && !h.abort.is_finished())
        {
            return false;
        }
        if !self.spawn_loops {
            return !loops.contains_key(&key);
        }
        let task = tokio::spawn(run_loop(self.clone(), key.clone()));
        let handle = LoopHandle {
            generation,
            abort: task.abort_handle(),
        };
        if let Some(old) = loops.insert(key, handle) {
            old.abort.abort();
        }
        true
    }

    /// Publishes `events` on `sj`.
    pub async fn publish(&self, sj: &ScaledJob, events: Vec<Event>) {
        crate::operator::status::publish_to(&self.recorder, &sj.object_ref(&()), events).await;
    }
}

/// The key of a ScaledJob (`default` namespace when unset).
pub fn key_of(sj: &ScaledJob) -> ObjectKey {
    ObjectKey::new(
        sj.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        sj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Wait after a failed re-read before trying again.
const REREAD_BACKOFF: Duration = Duration::from_secs(5);

/// Polls every `pollingInterval` until the ScaledJob is gone or the task is aborted.
async fn run_loop(ctx: Arc<JobContext>, key: ObjectKey) {
    let api: Api<ScaledJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut due: Option<Instant> = None;
    loop {
        let sj = match api.get_opt(&key.name).await {
            Ok(Some(sj)) => sj,
            Ok(None) => return,
            Err(e) => {
                warn!(scaledjob = %key, error = %e, "scale loop could not read the ScaledJob");
                tokio::time::sleep(REREAD_BACKOFF).await;
                continue;
            }
        };
        if sj.metadata.deletion_timestamp.is_some() || decide::jobs::is_paused(&sj) {
            return;
        }
        let started = Instant::now();
        if let (Some(m), Some(due)) = (&ctx.metrics, due) {
            m.record_scale_loop_latency(
                &key.namespace,
                ScaledResourceType::ScaledJob,
                &key.name,
                started.saturating_duration_since(due),
            );
        }
        if let Err(e) = poll::poll(&ctx, &sj).await {
            warn!(scaledjob = %key, error = %e, "scale loop iteration failed");
        }
        let interval = Duration::from_secs(decide::polling_interval_secs(&sj.spec));
        due = Some(started + interval);
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

/// Aborts every loop when the controller future is dropped (leadership lost, shutdown).
struct StopLoopsOnDrop(Arc<JobContext>);

impl Drop for StopLoopsOnDrop {
    fn drop(&mut self) {
        self.0.stop_all_loops();
    }
}

/// Runs the ScaledJob controller until the watch ends or the future is dropped.
pub async fn run(ctx: Arc<JobContext>, namespace: Option<String>) {
    let _stop = StopLoopsOnDrop(ctx.clone());
    let api: Api<DeserializeGuard<ScaledJob>> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    Controller::for_stream(
        super::watch::changes_only(stream, super::watch::reconcile_key::<ScaledJob>),
        reader,
    )
    .run(reconcile::reconcile_guarded, reconcile::error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            debug!(error = %e, "ScaledJob reconcile error");
        }
    })
    .await;
}
