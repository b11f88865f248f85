//! Where the webhook's cluster checks look: the API server, or YAML documents (`--local DIR`,
//! tests), behind [`ClusterView`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::future::BoxFuture;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{LimitRange, PodTemplateSpec},
};
use kube::{Api, api::ListParams};
use serde::de::DeserializeOwned;

use crate::{
    crd::ScaledObject,
    source::files::{manifest_files, parse_file},
};

/// A cluster lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server answered with an error.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// A `--local` file could not be used.
    #[error("{0}")]
    Local(String),
}

/// What the cluster checks need to read, per namespace.
pub trait ClusterView: Send + Sync {
    /// Every ScaledObject in `namespace`.
    fn scaled_objects<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ScaledObject>, ClusterError>>;
    /// Every autoscaling/v2 HPA in `namespace`.
    fn hpas<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<HorizontalPodAutoscaler>, ClusterError>>;
    /// The pod template of the apps/v1 `kind` (Deployment or StatefulSet) `name`, `None` if absent.
    fn pod_template<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodTemplateSpec>, ClusterError>>;
    /// Every LimitRange in `namespace`.
    fn limit_ranges<'a>(&'a self, namespace: &'a str)
    -> BoxFuture<'a, Result<Vec<LimitRange>, ClusterError>>;
    /// Whether the API server serves `kind` in `api_version` (KEDA's REST-mapper check on the
    /// scale target). `--local` files describe no discovery, so by default every kind is served.
    fn serves_kind<'a>(
        &'a self,
        _api_version: &'a str,
        _kind: &'a str,
    ) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async { Ok(true) })
    }
}

/// [`ClusterView`] reading the API server directly: the webhook sees few requests, and a live
/// read never answers from a stale cache.
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
}

impl KubeCluster {
    /// A view through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn list<K>(&self, namespace: &str) -> Result<Vec<K>, ClusterError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.list(&ListParams::default()).await?.items)
    }
}

impl ClusterView for KubeCluster {
    fn serves_kind<'a>(
        &'a self,
        api_version: &'a str,
        kind: &'a str,
    ) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async move {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            if group == "apps" && matches!(kind, "Deployment" | "StatefulSet") {
                return Ok(true);
            }
            let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
            match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Discovery(_)) => Ok(false),
                // A group/version the server does not serve at all.
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
                Err(e) => Err(ClusterError::Kube(e)),
            }
        })
    }

    fn scaled_objects<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ScaledObject>, ClusterError>> {
        Box::pin(self.list(namespace))
    }

    fn hpas<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<HorizontalPodAutoscaler>, ClusterError>> {
        Box::pin(self.list(namespace))
    }

    fn pod_template<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodTemplateSpec>, ClusterError>> {
        Box::pin(async move {
            Ok(match kind {
                "Deployment" => Api::<Deployment>::namespaced(self.client.clone(), namespace)
                    .get_opt(name)
                    .await?
                    .and_then(|d| d.spec)
                    .map(|s| s.template),
                "StatefulSet" => Api::<StatefulSet>::namespaced(self.client.clone(), namespace)
                    .get_opt(name)
                    .await?
                    .and_then(|d| d.spec)
                    .map(|s| s.template),
                _ => None,
            })
        })
    }

    fn limit_ranges<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<LimitRange>, ClusterError>> {
        Box::pin(self.list(namespace))
    }
}

/// [`ClusterView`] over YAML documents: from `--local DIR` (re-read on every review, so edits
/// apply at once) or from documents given directly in tests.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    source: LocalSource,
}

#[derive(Debug, Clone)]
enum LocalSource {
    Dir(PathBuf),
    Docs(Arc<Snapshot>),
}

/// Every object of the kinds the checks read, with its namespace (default `default`).
#[derive(Debug, Default)]
struct Snapshot {
    scaled_objects: Vec<ScaledObject>,
    others: Vec<serde_yaml::Value>,
}

impl LocalCluster {
    /// A view of the manifests under `dir`.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            source: LocalSource::Dir(dir.into()),
        }
    }

    /// A view of YAML text (one or many documents).
    pub fn from_yaml(text: &str) -> Result<Self, ClusterError> {
        let parsed = parse_file(Path::new("<yaml>"), text).map_err(|e| ClusterError::Local(e.to_string()))?;
        Ok(Self {
            source: LocalSource::Docs(Arc::new(Snapshot {
                scaled_objects: parsed.scaled_objects,
                others: parsed.others,
            })),
        })
    }

    async fn snapshot(&self) -> Result<Arc<Snapshot>, ClusterError> {
        match &self.source {
            LocalSource::Docs(s) => Ok(Arc::clone(s)),
            LocalSource::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || load_snapshot(&dir))
                    .await
                    .map_err(|e| ClusterError::Local(e.to_string()))?
                    .map(Arc::new)
            }
        }
    }

    async fn of_kind<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: &str,
    ) -> Result<Vec<T>, ClusterError> {
        let snap = self.snapshot().await?;
        let mut out = Vec::new();
        for doc in &snap.others {
            if doc.get("kind").and_then(|k| k.as_str()) != Some(kind) || doc_namespace(doc) != namespace {
                continue;
            }
            // A document that does not fit the type is reported: a silently ignored HPA would
            // hide exactly the conflict the check exists for.
            out.push(
                serde_yaml::from_value(doc.clone())
                    .map_err(|e| ClusterError::Local(format!("{kind} {namespace}/{}: {e}", doc_name(doc))))?,
            );
        }
        Ok(out)
    }
}

fn doc_namespace(doc: &serde_yaml::Value) -> &str {
    doc.get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or("default")
}

fn doc_name(doc: &serde_yaml::Value) -> &str {
    doc.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
}

fn load_snapshot(dir: &Path) -> Result<Snapshot, ClusterError> {
    let mut snap = Snapshot::default();
    for path in manifest_files(dir) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ClusterError::Local(format!("{}: {e}", path.display())))?;
        let parsed = parse_file(&path, &text).map_err(|e| ClusterError::Local(e.to_string()))?;
        snap.scaled_objects.extend(parsed.scaled_objects);
        snap.others.extend(parsed.others);
    }
    Ok(snap)
}

impl ClusterView for LocalCluster {
    fn scaled_objects<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ScaledObject>, ClusterError>> {
        Box::pin(async move {
            let snap = self.snapshot().await?;
            Ok(snap
                .scaled_objects
                .iter()
                .filter(|so| so.metadata.namespace.as_deref().unwrap_or("default") == namespace)
                .cloned()
                .collect())
        })
    }

    fn hpas<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<HorizontalPodAutoscaler>, ClusterError>> {
        Box::pin(self.of_kind("HorizontalPodAutoscaler", namespace))
    }

    fn pod_template<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodTemplateSpec>, ClusterError>> {
        Box::pin(async move {
            let named = |n: Option<&String>| n.map(String::as_str) == Some(name);
            Ok(match kind {
                "Deployment" => self
                    .of_kind::<Deployment>(kind, namespace)
                    .await?
                    .into_iter()
                    .find(|d| named(d.metadata.name.as_ref()))
                    .and_then(|d| d.spec)
                    .map(|s| s.template),
                "StatefulSet" => self
                    .of_kind::<StatefulSet>(kind, namespace)
                    .await?
                    .into_iter()
                    .find(|d| named(d.metadata.name.as_ref()))
                    .and_then(|d| d.spec)
                    .map(|s| s.template),
                _ => None,
            })
        })
    }

    fn limit_ranges<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<LimitRange>, ClusterError>> {
        Box::pin(self.of_kind("LimitRange", namespace))
    }
}
