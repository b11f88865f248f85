//! Resolution over watch caches (reflector stores) of TriggerAuthentications,
//! ClusterTriggerAuthentications, Secrets, ConfigMaps, Deployments, StatefulSets and
//! ServiceAccounts, so `resolve` never waits on the API server.
//!
//! Any change after a store's first list rebuilds every ScaledObject's scalers (at most once
//! per second), which heals a trigger whose Secret was created after its ScaledObject.
//!
//! RBAC and memory: this needs cluster-wide `list`/`watch` on secrets, configmaps,
//! serviceaccounts, deployments, statefulsets and both authentication kinds, and holds them in
//! memory, as KEDA's informers do. Managed fields and status are dropped on arrival, and the
//! payload of Helm release Secrets (`helm.sh/release.v1`, often the largest objects in a
//! cluster and never a credential) is not kept.

use std::{fmt::Debug, hash::Hash, sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ConfigMap, PodSpec, Secret, ServiceAccount},
};
use kube::{
    Api, Client, Resource,
    core::DeserializeGuard,
    runtime::{
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{Instrument, debug, info, warn};

use super::{AuthEntry, AuthSources, MalformedAuth, resolve_into};
use crate::kube_watch;
use crate::{
    crd::{
        ScaledObject,
        trigger_authentication::{
            ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec,
        },
    },
    scalers::{
        ScalerConfig, ScalerError,
        registry::{AuthResolver, Registry},
    },
    shutdown::Signal,
};

/// How long `start` waits for the first list of every store before returning anyway.
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// Changes closer together than this cause one rebuild.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// TriggerAuthentications as watched: a malformed one is kept as an error so lookups name it.
pub type GuardedTa = DeserializeGuard<TriggerAuthentication>;
/// ClusterTriggerAuthentications as watched.
pub type GuardedCta = DeserializeGuard<ClusterTriggerAuthentication>;

/// The write side of every store, for the watchers (or a test feeding events).
pub struct Writers {
    /// TriggerAuthentications, all namespaces.
    pub trigger_authentications: Writer<GuardedTa>,
    /// ClusterTriggerAuthentications.
    pub cluster_trigger_authentications: Writer<GuardedCta>,
    /// Secrets, all namespaces.
    pub secrets: Writer<Secret>,
    /// ConfigMaps, all namespaces.
    pub config_maps: Writer<ConfigMap>,
    /// Deployments, all namespaces.
    pub deployments: Writer<Deployment>,
    /// StatefulSets, all namespaces.
    pub stateful_sets: Writer<StatefulSet>,
    /// ServiceAccounts, all namespaces.
    pub service_accounts: Writer<ServiceAccount>,
}

/// An [`AuthResolver`] reading watch caches.
#[derive(Clone)]
pub struct KubeResolver {
    trigger_authentications: Store<GuardedTa>,
    cluster_trigger_authentications: Store<GuardedCta>,
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    service_accounts: Store<ServiceAccount>,
    cluster_object_namespace: String,
}

impl Debug for KubeResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeResolver")
            .field("trigger_authentications", &self.trigger_authentications.len())
            .field("secrets", &self.secrets.len())
            .field("cluster_object_namespace", &self.cluster_object_namespace)
            .finish_non_exhaustive()
    }
}

fn spec_of<K>(guard: &DeserializeGuard<K>, spec: impl FnOnce(&K) -> TriggerAuthenticationSpec) -> AuthEntry {
    match &guard.0 {
        Ok(k) => Ok(spec(k)),
        Err(bad) => Err(MalformedAuth::Watch(bad.error.clone())),
    }
}

impl KubeResolver {
    /// Empty stores and their writers; nothing is watched.
    pub fn with_writers(cluster_object_namespace: impl Into<String>) -> (Self, Writers) {
        let writers = Writers {
            trigger_authentications: Writer::default(),
            cluster_trigger_authentications: Writer::default(),
            secrets: Writer::default(),
            config_maps: Writer::default(),
            deployments: Writer::default(),
            stateful_sets: Writer::default(),
            service_accounts: Writer::default(),
        };
        let resolver = Self {
            trigger_authentications: writers.trigger_authentications.as_reader(),
            cluster_trigger_authentications: writers.cluster_trigger_authentications.as_reader(),
            secrets: writers.secrets.as_reader(),
            config_maps: writers.config_maps.as_reader(),
            deployments: writers.deployments.as_reader(),
            stateful_sets: writers.stateful_sets.as_reader(),
            service_accounts: writers.service_accounts.as_reader(),
            cluster_object_namespace: cluster_object_namespace.into(),
        };
        (resolver, writers)
    }

    /// Starts the watchers, waits (up to 30 s) for their first lists, and rebuilds `registry`
    /// whenever a watched object changes afterwards. Secrets of ClusterTriggerAuthentications are
    /// read from `cluster_object_namespace` ([`super::cluster_object_namespace`]).
    pub async fn start(
        client: Client,
        registry: Arc<Registry>,
        cluster_object_namespace: String,
        shutdown: Signal,
    ) -> Self {
        let (resolver, w) = Self::with_writers(cluster_object_namespace);
        let changed = Arc::new(Notify::new());
        let spawn = Spawner {
            changed: changed.clone(),
            shutdown: shutdown.clone(),
        };
        spawn.watch(
            Api::all(client.clone()),
            w.trigger_authentications,
            log_bad_ta,
            "TriggerAuthentication",
        );
        spawn.watch(
            Api::all(client.clone()),
            w.cluster_trigger_authentications,
            log_bad_cta,
            "ClusterTriggerAuthentication",
        );
        spawn.watch(Api::all(client.clone()), w.secrets, slim_secret, "Secret");
        spawn.watch(
            Api::all(client.clone()),
            w.config_maps,
            |c: &mut ConfigMap| {
                c.metadata.managed_fields = None;
            },
            "ConfigMap",
        );
        spawn.watch(
            Api::all(client.clone()),
            w.deployments,
            |d: &mut Deployment| {
                d.metadata.managed_fields = None;
                d.status = None;
            },
            "Deployment",
        );
        spawn.watch(
            Api::all(client.clone()),
            w.stateful_sets,
            |d: &mut StatefulSet| {
                d.metadata.managed_fields = None;
                d.status = None;
            },
            "StatefulSet",
        );
        spawn.watch(
            Api::all(client),
            w.service_accounts,
            |s: &mut ServiceAccount| {
                s.metadata.managed_fields = None;
            },
            "ServiceAccount",
        );

        let synced = async {
            let _ = resolver.trigger_authentications.wait_until_ready().await;
            let _ = resolver.cluster_trigger_authentications.wait_until_ready().await;
            let _ = resolver.secrets.wait_until_ready().await;
            let _ = resolver.config_maps.wait_until_ready().await;
            let _ = resolver.deployments.wait_until_ready().await;
            let _ = resolver.stateful_sets.wait_until_ready().await;
            let _ = resolver.service_accounts.wait_until_ready().await;
        };
        match tokio::time::timeout(SYNC_WAIT, synced).await {
            Ok(()) => info!(
                triggerauthentications = resolver.trigger_authentications.len(),
                secrets = resolver.secrets.len(),
                "authentication caches synced"
            ),
            Err(_) => warn!("authentication caches not synced after 30s; triggers heal once they are"),
        }

        tokio::spawn(rebuild_on_change(registry, changed, shutdown).in_current_span());
        resolver
    }
}

/// Rebuilds the registry after changes, at most once per [`DEBOUNCE`].
async fn rebuild_on_change(registry: Arc<Registry>, changed: Arc<Notify>, shutdown: Signal) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = changed.notified() => {}
        }
        // Let a burst (a relist, a `kubectl apply -f dir`) settle into one rebuild.
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
        debug!("authentication sources changed; rebuilding scalers");
        let registry = registry.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || registry.rebuild_all()).await {
            warn!(error = %e, "scaler rebuild failed");
        }
    }
}

struct Spawner {
    changed: Arc<Notify>,
    shutdown: Signal,
}

impl Spawner {
    fn watch<K>(&self, api: Api<K>, writer: Writer<K>, modify: fn(&mut K), kind: &'static str)
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let changed = self.changed.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            kube_watch::reflect_until_shutdown(api, modify, writer, shutdown, move |event| match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                    changed.notify_one();
                }
                Ok(_) => {}
                Err(e) => warn!(kind, error = %e, "watch failed; retrying"),
            })
            .in_current_span(),
        );
    }
}

fn log_bad_ta(t: &mut GuardedTa) {
    if let Err(bad) = &t.0 {
        warn!(
            triggerauthentication = %format!("{}/{}", bad.metadata.namespace.as_deref().unwrap_or_default(), bad.metadata.name.as_deref().unwrap_or_default()),
            error = %bad.error,
            "malformed TriggerAuthentication; triggers using it fail"
        );
    }
}

fn log_bad_cta(t: &mut GuardedCta) {
    if let Err(bad) = &t.0 {
        warn!(
            clustertriggerauthentication = %bad.metadata.name.as_deref().unwrap_or_default(),
            error = %bad.error,
            "malformed ClusterTriggerAuthentication; triggers using it fail"
        );
    }
}

fn slim_secret(s: &mut Secret) {
    s.metadata.managed_fields = None;
    if s.type_.as_deref() == Some("helm.sh/release.v1") {
        s.data = None;
    }
}

impl AuthSources for KubeResolver {
    fn trigger_authentication(&self, namespace: &str, name: &str) -> Option<AuthEntry> {
        self.trigger_authentications
            .get(&ObjectRef::new(name).within(namespace))
            .map(|g| spec_of(&g, |t| t.spec.clone()))
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Option<AuthEntry> {
        self.cluster_trigger_authentications
            .get(&ObjectRef::new(name))
            .map(|g| spec_of(&g, |t| t.spec.spec.clone()))
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(&ObjectRef::new(name).within(namespace))
    }

    fn pod_spec(&self, kind: &str, namespace: &str, name: &str) -> Option<PodSpec> {
        match kind {
            "Deployment" => self
                .deployments
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|d| d.spec.as_ref()?.template.spec.clone()),
            "StatefulSet" => self
                .stateful_sets
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|d| d.spec.as_ref()?.template.spec.clone()),
            _ => None,
        }
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        self.service_accounts.get(&ObjectRef::new(name).within(namespace))
    }
}

impl AuthResolver for KubeResolver {
    fn resolve(&self, so: &ScaledObject, index: usize, config: &mut ScalerConfig) -> Result<(), ScalerError> {
        resolve_into(self, &self.cluster_object_namespace, so, index, config)
    }

    fn resolve_for_job(
        &self,
        so: &ScaledObject,
        index: usize,
        template: &PodSpec,
        config: &mut ScalerConfig,
    ) -> Result<(), ScalerError> {
        super::resolve_job_into(self, &self.cluster_object_namespace, so, index, template, config)
    }
}
