//! What every reconcile and scale-loop iteration shares: the client, the scaler registry and
//! metric cache (shared with the metrics server under `ebb run`), the event recorder, the clock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use kube::{
    Client,
    runtime::events::{EventType, Recorder},
};

use crate::{
    cache::MetricCache,
    crd::ScaledObject,
    keda_metrics::KedaMetrics,
    operator::fallback::HealthStore,
    scalers::registry::{ObjectKey, Registry, object_key},
};

/// Source of "now"; tests inject a fixed instant.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Event reason when a scale loop is stopped (pause or deletion).
pub const EVENT_SCALERS_STOPPED: &str = "KEDAScalersStopped";

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
    pub plurals: super::scale::Plurals,
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

impl Context {
    /// A context on `client` with the system clock and no exported metrics.
    pub fn new(client: Client, registry: Arc<Registry>, cache: Arc<MetricCache>) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
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

    /// Stops the scale loop of `key`; true when one was running.
    pub fn stop_loop(&self, key: &ObjectKey) -> bool {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        match loops.remove(key) {
            Some(h) => {
                h.abort.abort();
                true
            }
            None => false,
        }
    }

    /// Stops the scale loop of `so` and, when one was running, says so with KEDA's
    /// `KEDAScalersStopped` event (KEDA emits it when a paused or deleted object's loop ends).
    pub async fn stop_scalers(&self, so: &ScaledObject) {
        if self.stop_loop(&object_key(so)) {
            super::reconcile::publish(
                self,
                so,
                vec![(
                    EventType::Normal,
                    EVENT_SCALERS_STOPPED,
                    "Stopped scalers watch".to_string(),
                )],
            )
            .await;
        }
    }

    /// Stops every scale loop (shutdown or lost leadership).
    pub fn stop_all_loops(&self) {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        for (_, h) in loops.drain() {
            h.abort.abort();
        }
    }
}

/// Why a reconcile or a scale-loop step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action} failed")]
    Kube {
        /// What was attempted, e.g. `apply HPA ns/keda-hpa-web`.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer, or the cleanup behind it, failed.
    #[error("finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object cannot be serialised (cannot happen for valid objects).
    #[error("serialising {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
    /// The ScaledObject has no namespace or name.
    #[error("ScaledObject without namespace or name")]
    Unnamed,
}

impl Error {
    /// Stable, low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Serialize(..) => "serialize",
            Error::Unnamed => "unnamed",
        }
    }

    /// Wraps a kube error with what was attempted.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// Result of reconcile steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
