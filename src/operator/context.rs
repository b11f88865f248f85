//! What every reconcile and scale-loop iteration shares: the client, the scaler registry and
//! metric cache (shared with the metrics server under `ebb run`), the event recorder, the clock.

use crate::locks::LockExt;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use kube::{Client, runtime::events::Recorder};

use crate::{
    cache::MetricCache,
    keda_metrics::KedaMetrics,
    scalers::registry::{ObjectKey, Registry},
    scaling::fallback::HealthStore,
};

/// Source of "now"; tests inject a fixed instant.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Field manager of every server-side apply ebb's operator makes.
pub const FIELD_MANAGER: &str = "ebb-operator";

/// A running scale loop and the ScaledObject generation it was started for.
#[derive(Debug)]
pub struct LoopHandle {
    /// `metadata.generation` when started.
    pub generation: Option<i64>,
    /// Aborts the task.
    pub abort: tokio::task::AbortHandle,
}

/// Shared state of the operator.
pub struct Context {
    /// Cluster access.
    pub client: Client,
    /// Live scalers, keyed by ScaledObject.
    pub registry: Arc<Registry>,
    /// Metric values between scalers and readers.
    pub cache: Arc<MetricCache>,
    /// Publishes Kubernetes events.
    pub recorder: Recorder,
    /// The clock the scale loop decides with.
    pub clock: Clock,
    /// KEDA's Prometheus metrics, when exported.
    pub metrics: Option<Arc<KedaMetrics>>,
    /// Fallback counters (shared with the metrics server under `ebb run`).
    pub health: Arc<HealthStore>,
    /// Value of `app.kubernetes.io/version` on the HPAs.
    pub version: String,
    /// Resource names of scale-target kinds found by discovery.
    pub plurals: crate::cluster::scale::Plurals,
    /// Scale loops by ScaledObject.
    pub loops: Mutex<HashMap<ObjectKey, LoopHandle>>,
    /// Start scale loops from reconcile (false in tests that drive iterations by hand).
    pub spawn_loops: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("registry", &self.registry)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The event recorder of ebb's operator, as reporting instance `instance`.
fn recorder(client: &Client, instance: Option<String>) -> Recorder {
    let reporter = kube::runtime::events::Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance,
    };
    Recorder::new(client.clone(), reporter)
}

impl Context {
    /// A context on `client` with the system clock and no exported metrics; its events name no
    /// reporting instance until [`Context::reporting_as`].
    pub fn new(client: Client, registry: Arc<Registry>, cache: Arc<MetricCache>) -> Self {
        Self {
            recorder: recorder(&client, None),
            client,
            registry,
            cache,
            clock: Arc::new(Utc::now),
            metrics: None,
            health: Arc::new(HealthStore::default()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            plurals: Default::default(),
            loops: Mutex::new(HashMap::new()),
            spawn_loops: true,
        }
    }

    /// Events name `instance` (the pod) as their reporting instance.
    pub fn reporting_as(mut self, instance: Option<String>) -> Self {
        self.recorder = recorder(&self.client, instance);
        self
    }

    /// Stops the scale loop of `key`; true when one was running.
    pub fn stop_loop(&self, key: &ObjectKey) -> bool {
        let mut loops = self.loops.lock_or_recover();
        match loops.remove(key) {
            Some(h) => {
                h.abort.abort();
                true
            }
            None => false,
        }
    }

    /// Stops every scale loop (shutdown or lost leadership).
    pub fn stop_all_loops(&self) {
        let mut loops = self.loops.lock_or_recover();
        for (_, h) in loops.drain() {
            h.abort.abort();
        }
    }
}
