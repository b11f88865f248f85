//! Resolution over `--local` documents: TriggerAuthentications, ClusterTriggerAuthentications,
//! Secrets (`data` base64 and `stringData`), ConfigMaps, Deployments, StatefulSets,
//! ServiceAccounts and Pods from the same directory as the ScaledObjects, so every trigger can
//! be tried without a cluster. The set is swapped atomically when the files change.

use crate::locks::LockExt;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ConfigMap, Pod, PodSpec, Secret, ServiceAccount},
};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{AuthEntry, AuthSources, MalformedAuth, resolve_into};
use crate::{
    crd::{
        ScaledObject,
        trigger_authentication::{ClusterTriggerAuthentication, TriggerAuthentication},
    },
    scalers::{ScalerConfig, ScalerError, kubernetes_workload::PodIndex, registry::AuthResolver},
};

type Key = (String, String);

/// Documents indexed by kind and namespace/name: the lookups of `--local` and of `ebb check`.
#[derive(Default, Debug)]
pub struct LocalObjects {
    trigger_authentications: HashMap<Key, AuthEntry>,
    cluster_trigger_authentications: HashMap<String, AuthEntry>,
    secrets: HashMap<Key, Arc<Secret>>,
    config_maps: HashMap<Key, Arc<ConfigMap>>,
    deployments: HashMap<Key, PodSpec>,
    stateful_sets: HashMap<Key, PodSpec>,
    service_accounts: HashMap<Key, Arc<ServiceAccount>>,
    fingerprint: u64,
}

fn str_at<'a>(doc: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(doc, |v, k| v.get(*k))?.as_str()
}

fn parse<T: DeserializeOwned>(doc: &serde_yaml::Value) -> Result<T, serde_json::Error> {
    // Through JSON so k8s-openapi's own rules apply (base64 `data`, RFC 3339 times, ...).
    serde_json::from_value(serde_json::to_value(doc)?)
}

impl LocalObjects {
    /// Indexes `docs`; Pods are dropped (see [`LocalResolver`] for a pod index).
    pub fn from_documents(docs: &[serde_yaml::Value]) -> Self {
        Self::with_pods(docs, &mut Vec::new())
    }

    /// True when `docs` held at least one object of `kind` in `namespace` (any namespace for
    /// ClusterTriggerAuthentication): `ebb check` then takes the files as the whole set of such
    /// objects and calls a reference to another one missing.
    pub fn holds(&self, kind: &str, namespace: &str) -> bool {
        fn any_in<V>(m: &HashMap<Key, V>, namespace: &str) -> bool {
            m.keys().any(|(ns, _)| ns == namespace)
        }
        match kind {
            "TriggerAuthentication" => any_in(&self.trigger_authentications, namespace),
            "ClusterTriggerAuthentication" => !self.cluster_trigger_authentications.is_empty(),
            "Secret" => any_in(&self.secrets, namespace),
            "ConfigMap" => any_in(&self.config_maps, namespace),
            "Deployment" => any_in(&self.deployments, namespace),
            "StatefulSet" => any_in(&self.stateful_sets, namespace),
            "ServiceAccount" => any_in(&self.service_accounts, namespace),
            _ => false,
        }
    }

    fn with_pods(docs: &[serde_yaml::Value], pods: &mut Vec<Pod>) -> Self {
        let mut o = LocalObjects {
            fingerprint: crate::hash::fnv1a(&serde_json::to_vec(docs).unwrap_or_default()),
            ..Default::default()
        };
        for doc in docs {
            let kind = str_at(doc, &["kind"]).unwrap_or_default();
            let api_version = str_at(doc, &["apiVersion"]).unwrap_or_default();
            let name = str_at(doc, &["metadata", "name"]).unwrap_or_default().to_string();
            let namespace = str_at(doc, &["metadata", "namespace"])
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string();
            let key = (namespace.clone(), name.clone());
            let keda = api_version.starts_with("keda.sh/");
            let core = api_version == "v1";
            let apps = api_version == "apps/v1";
            let skip = |e: serde_json::Error| warn!(kind, namespace = %namespace, name = %name, error = %e, "skipping malformed local document");
            match kind {
                "TriggerAuthentication" if keda => {
                    let entry = parse::<TriggerAuthentication>(doc)
                        .map(|t| t.spec)
                        .map_err(|e| MalformedAuth::Document(Arc::new(e)));
                    if let Err(e) = &entry {
                        warn!(triggerauthentication = %format!("{namespace}/{name}"), error = %e, "malformed TriggerAuthentication");
                    }
                    o.trigger_authentications.insert(key, entry);
                }
                "ClusterTriggerAuthentication" if keda => {
                    let entry = parse::<ClusterTriggerAuthentication>(doc)
                        .map(|t| t.spec.spec)
                        .map_err(|e| MalformedAuth::Document(Arc::new(e)));
                    if let Err(e) = &entry {
                        warn!(clustertriggerauthentication = %name, error = %e, "malformed ClusterTriggerAuthentication");
                    }
                    o.cluster_trigger_authentications.insert(name.clone(), entry);
                }
                "Secret" if core => match parse::<Secret>(doc) {
                    Ok(s) => {
                        o.secrets.insert(key, Arc::new(merge_string_data(s)));
                    }
                    Err(e) => skip(e),
                },
                "ConfigMap" if core => match parse::<ConfigMap>(doc) {
                    Ok(c) => {
                        o.config_maps.insert(key, Arc::new(c));
                    }
                    Err(e) => skip(e),
                },
                "ServiceAccount" if core => match parse::<ServiceAccount>(doc) {
                    Ok(s) => {
                        o.service_accounts.insert(key, Arc::new(s));
                    }
                    Err(e) => skip(e),
                },
                "Deployment" if apps => match parse::<Deployment>(doc) {
                    Ok(d) => {
                        if let Some(spec) = d.spec.and_then(|s| s.template.spec) {
                            o.deployments.insert(key, spec);
                        }
                    }
                    Err(e) => skip(e),
                },
                "StatefulSet" if apps => match parse::<StatefulSet>(doc) {
                    Ok(d) => {
                        if let Some(spec) = d.spec.and_then(|s| s.template.spec) {
                            o.stateful_sets.insert(key, spec);
                        }
                    }
                    Err(e) => skip(e),
                },
                "Pod" if core => match parse::<Pod>(doc) {
                    Ok(mut p) => {
                        p.metadata.namespace = Some(namespace.clone());
                        pods.push(p);
                    }
                    Err(e) => skip(e),
                },
                _ => {}
            }
        }
        o
    }
}

/// The API server folds `stringData` into `data` on write; a local file has not been written
/// through it, so do the same here (`stringData` wins).
fn merge_string_data(mut s: Secret) -> Secret {
    if let Some(strings) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
    s
}

impl AuthSources for LocalObjects {
    fn trigger_authentication(&self, namespace: &str, name: &str) -> Option<AuthEntry> {
        self.trigger_authentications
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Option<AuthEntry> {
        self.cluster_trigger_authentications.get(name).cloned()
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn pod_spec(&self, kind: &str, namespace: &str, name: &str) -> Option<PodSpec> {
        let key = (namespace.to_string(), name.to_string());
        match kind {
            "Deployment" => self.deployments.get(&key).cloned(),
            "StatefulSet" => self.stateful_sets.get(&key).cloned(),
            _ => None,
        }
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        self.service_accounts
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// An [`AuthResolver`] over `--local` documents, replaceable while running.
pub struct LocalResolver {
    objects: ArcSwap<LocalObjects>,
    pods: PodIndex,
    cluster_object_namespace: String,
}

impl std::fmt::Debug for LocalResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalResolver")
            .field("cluster_object_namespace", &self.cluster_object_namespace)
            .finish_non_exhaustive()
    }
}

impl LocalResolver {
    /// Indexes `docs` (the non-ScaledObject documents of a `--local` directory). Documents
    /// without `metadata.namespace` are in `default`, as `kubectl apply` would put them.
    pub fn from_documents(docs: &[serde_yaml::Value]) -> Self {
        let mut pods = Vec::new();
        let objects = LocalObjects::with_pods(docs, &mut pods);
        let index = PodIndex::local();
        index.replace(pods);
        Self {
            objects: ArcSwap::from_pointee(objects),
            pods: index,
            cluster_object_namespace: super::cluster_object_namespace(None),
        }
    }

    /// Uses `namespace` for ClusterTriggerAuthentication Secrets and ConfigMaps.
    pub fn with_cluster_object_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.cluster_object_namespace = namespace.into();
        self
    }

    /// Replaces every document; returns true when they differ from the current set, so the
    /// caller knows to call `Registry::rebuild_all`.
    pub fn update(&self, docs: &[serde_yaml::Value]) -> bool {
        let mut pods = Vec::new();
        let objects = LocalObjects::with_pods(docs, &mut pods);
        if objects.fingerprint == self.objects.load().fingerprint {
            return false;
        }
        self.pods.replace(pods);
        self.objects.store(Arc::new(objects));
        true
    }

    /// Pods from `Pod` documents, for `ScalerContext::pods` (not ready until a Pod is given).
    pub fn pod_index(&self) -> PodIndex {
        self.pods.clone()
    }
}

impl AuthResolver for LocalResolver {
    fn resolve(&self, so: &ScaledObject, index: usize, config: &mut ScalerConfig) -> Result<(), ScalerError> {
        let objects = self.objects.load();
        resolve_into(&**objects, &self.cluster_object_namespace, so, index, config)
    }

    fn resolve_for_job(
        &self,
        so: &ScaledObject,
        index: usize,
        template: &k8s_openapi::api::core::v1::PodSpec,
        config: &mut ScalerConfig,
    ) -> Result<(), ScalerError> {
        let objects = self.objects.load();
        super::resolve_job_into(
            &**objects,
            &self.cluster_object_namespace,
            so,
            index,
            template,
            config,
        )
    }
}

/// What resolving one trigger against the objects in files found (`ebb check`, `ebb render`).
#[derive(Debug, Clone)]
pub enum FileResolution {
    /// Everything the trigger needed was in the files (or it needed nothing).
    Resolved,
    /// The files hold the kind of object needed, but resolution failed as the operator's would.
    Failed(ScalerError),
    /// Resolution needed objects of a kind the files do not hold: these were not checked.
    NotChecked(Vec<String>),
}

/// An [`AuthResolver`] over documents given on the command line, running the operator's
/// resolution code and remembering which lookups fell outside the files.
///
/// A lookup that misses is a real miss when the files hold objects of that kind in that
/// namespace (they are then taken as the whole set); otherwise the object was simply not
/// given, and the trigger is reported as not checked instead of broken.
pub struct FileResolver<'a> {
    objects: &'a LocalObjects,
    cluster_object_namespace: &'a str,
    outside: Mutex<Vec<String>>,
    error: Mutex<Option<ScalerError>>,
}

impl<'a> FileResolver<'a> {
    /// A resolver for one trigger over `objects`.
    pub fn new(objects: &'a LocalObjects, cluster_object_namespace: &'a str) -> Self {
        Self {
            objects,
            cluster_object_namespace,
            outside: Mutex::new(Vec::new()),
            error: Mutex::new(None),
        }
    }

    /// The outcome of the last [`AuthResolver::resolve`] call.
    pub fn resolution(&self) -> FileResolution {
        let error = self.error.lock_or_recover().clone();
        let outside = self.outside.lock_or_recover().clone();
        match error {
            None => FileResolution::Resolved,
            Some(_) if !outside.is_empty() => FileResolution::NotChecked(outside),
            Some(e) => FileResolution::Failed(e),
        }
    }

    fn miss<T>(&self, kind: &str, namespace: &str, name: &str) -> Option<T> {
        if !self.objects.holds(kind, namespace) {
            let mut outside = self.outside.lock_or_recover();
            let label = if kind == "ClusterTriggerAuthentication" {
                format!("{kind} {name}")
            } else {
                format!("{kind} {namespace}/{name}")
            };
            if !outside.contains(&label) {
                outside.push(label);
            }
        }
        None
    }
}

impl AuthSources for FileResolver<'_> {
    fn trigger_authentication(&self, namespace: &str, name: &str) -> Option<AuthEntry> {
        self.objects
            .trigger_authentication(namespace, name)
            .or_else(|| self.miss("TriggerAuthentication", namespace, name))
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Option<AuthEntry> {
        self.objects
            .cluster_trigger_authentication(name)
            .or_else(|| self.miss("ClusterTriggerAuthentication", "", name))
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.objects
            .secret(namespace, name)
            .or_else(|| self.miss("Secret", namespace, name))
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.objects
            .config_map(namespace, name)
            .or_else(|| self.miss("ConfigMap", namespace, name))
    }

    fn pod_spec(&self, kind: &str, namespace: &str, name: &str) -> Option<PodSpec> {
        self.objects
            .pod_spec(kind, namespace, name)
            .or_else(|| self.miss(kind, namespace, name))
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        self.objects
            .service_account(namespace, name)
            .or_else(|| self.miss("ServiceAccount", namespace, name))
    }
}

impl AuthResolver for FileResolver<'_> {
    fn resolve(&self, so: &ScaledObject, index: usize, config: &mut ScalerConfig) -> Result<(), ScalerError> {
        self.outside.lock_or_recover().clear();
        let result = resolve_into(self, self.cluster_object_namespace, so, index, config);
        *self.error.lock_or_recover() = result.as_ref().err().cloned();
        result
    }

    fn resolve_for_job(
        &self,
        so: &ScaledObject,
        index: usize,
        template: &PodSpec,
        config: &mut ScalerConfig,
    ) -> Result<(), ScalerError> {
        if let Ok(mut outside) = self.outside.lock() {
            outside.clear();
        }
        let result =
            super::resolve_job_into(self, self.cluster_object_namespace, so, index, template, config);
        if let Ok(mut error) = self.error.lock() {
            *error = result.as_ref().err().cloned();
        }
        result
    }
}
