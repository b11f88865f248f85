//! `ebb webhooks`: KEDA's validating admission webhooks (§14, §11.1) over TLS.
//!
//! The object checks are `operator::validate`, the same code `ebb check` runs; this module adds
//! the checks that read the cluster, behind [`ClusterView`] so they run against a kube client,
//! a directory of YAML (`--local`), or a test double.

pub mod review;
pub mod scaled_job;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{LimitRange, PodTemplateSpec},
};
use kube::{Api, api::ListParams};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    admin::{self, AdminState},
    cli::WebhooksArgs,
    crd::ScaledObject,
    keda_metrics::KedaMetrics,
    shutdown::Signal,
    source::local::{manifest_files, parse_file},
    tls::{self, CertReloader, DEFAULT_INTERVAL, RequestClientCert, certgen},
};

pub use review::{ReviewError, review};

/// Path of the ScaledObject webhook (manifests/validatingwebhook.yaml).
pub const SCALED_OBJECT_PATH: &str = "/validate-keda-sh-v1alpha1-scaledobject";
/// Path of the ScaledJob webhook.
pub const SCALED_JOB_PATH: &str = "/validate-keda-sh-v1alpha1-scaledjob";
/// Path of the TriggerAuthentication webhook.
pub const TRIGGER_AUTHENTICATION_PATH: &str = "/validate-keda-sh-v1alpha1-triggerauthentication";
/// Path of the ClusterTriggerAuthentication webhook.
pub const CLUSTER_TRIGGER_AUTHENTICATION_PATH: &str =
    "/validate-keda-sh-v1alpha1-clustertriggerauthentication";
/// The API server sends at most a 3 MiB object twice (object and oldObject) plus the envelope.
const MAX_BODY_BYTES: usize = 8 << 20;

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

/// Shared state of the webhook handlers.
#[derive(Clone)]
pub struct WebhookContext {
    /// Where the cluster checks look.
    pub cluster: Arc<dyn ClusterView>,
    /// KEDA's webhook counters.
    pub metrics: Arc<KedaMetrics>,
}

impl std::fmt::Debug for WebhookContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookContext").finish_non_exhaustive()
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
        Box::pin(async move {
            let api: Api<ScaledObject> = Api::namespaced(self.client.clone(), namespace);
            Ok(api.list(&ListParams::default()).await?.items)
        })
    }

    fn hpas<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<HorizontalPodAutoscaler>, ClusterError>> {
        Box::pin(async move {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), namespace);
            Ok(api.list(&ListParams::default()).await?.items)
        })
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
        Box::pin(async move {
            let api: Api<LimitRange> = Api::namespaced(self.client.clone(), namespace);
            Ok(api.list(&ListParams::default()).await?.items)
        })
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

/// Why `ebb webhooks` could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WebhooksError {
    /// A port could not be bound.
    #[error("failed to bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate could not be loaded.
    #[error("failed to load certificates")]
    Certs(#[source] tls::ReloadError),
    /// A self-signed certificate could not be created in `--cert-dir`.
    #[error("failed to create a self-signed certificate in {0}")]
    SelfSigned(PathBuf, #[source] certgen::CertError),
    /// No cluster could be reached outside `--local`.
    #[error("failed to create a Kubernetes client (use --local to run without a cluster)")]
    Kube(#[source] kube::Error),
    /// A kubeconfig could not be read.
    #[error("failed to read kubeconfig {0}")]
    Kubeconfig(PathBuf, #[source] kube::config::KubeconfigError),
    /// Serving failed.
    #[error("the TLS server failed")]
    Serve(#[source] tls::TlsError),
}

/// Runs the webhook server and its admin port until `shutdown`.
pub async fn run(args: WebhooksArgs, shutdown: Signal) -> Result<(), WebhooksError> {
    let bind = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let addr = bind(args.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhooksError::Bind { addr, source })?;
    let admin_addr = bind(args.metrics_port);
    let admin_listener = admin::bind(admin_addr)
        .await
        .map_err(|source| WebhooksError::Bind {
            addr: admin_addr,
            source,
        })?;

    let cluster: Arc<dyn ClusterView> = match &args.local {
        Some(dir) => {
            info!(dir = %dir.display(), "local mode: cluster objects from files; no cluster is contacted");
            Arc::new(LocalCluster::from_dir(dir.clone()))
        }
        None => Arc::new(KubeCluster::new(
            crate::cluster::client(args.kubeconfig.as_deref()).await?,
        )),
    };
    let mut prom = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(KedaMetrics::register(&mut prom));
    let ready = Arc::new(AtomicBool::new(false));
    let admin_state = Arc::new(AdminState {
        registry: prom,
        ready: Arc::clone(&ready),
        demo: false,
    });
    // Up before the certificates, so liveness holds while the secret volume is still empty.
    tokio::spawn(admin::run(admin_listener, admin_state, shutdown.clone()));

    let (cert, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(c), Some(k)) => {
            if !wait_for_files(c, k, &shutdown).await {
                return Ok(());
            }
            (c.clone(), k.clone())
        }
        _ => certgen::ensure_self_signed(&args.cert_dir, &["localhost".to_string()])
            .map_err(|e| WebhooksError::SelfSigned(args.cert_dir.clone(), e))?,
    };
    let mut reloader = CertReloader::new(DEFAULT_INTERVAL);
    let resolver = reloader
        .watch_serving(&cert, &key)
        .map_err(WebhooksError::Certs)?;
    // The API server does not present a client certificate to webhooks unless configured to;
    // nothing here depends on one.
    let config = tls::server_config(resolver, Arc::new(RequestClientCert::new(&[])));

    let ctx = Arc::new(WebhookContext { cluster, metrics });
    ready.store(true, Ordering::Relaxed);
    {
        let shutdown = shutdown.clone();
        tokio::spawn(reloader.run(async move { shutdown.wait().await }));
    }
    info!(addr = %listener.local_addr().unwrap_or(addr), "admission webhooks listening");
    let handler = move |req, _conn: Arc<tls::ConnInfo>| {
        let ctx = Arc::clone(&ctx);
        async move { handle(&ctx, req).await }
    };
    tls::serve(listener, config, handler, async move { shutdown.wait().await })
        .await
        .map_err(WebhooksError::Serve)
}

/// The certificate secret is mounted optionally, so the files may appear after start; the
/// webhook waits for them rather than serving a certificate no caBundle trusts.
/// Returns false if shutdown came first.
async fn wait_for_files(cert: &Path, key: &Path, shutdown: &Signal) -> bool {
    let mut logged = false;
    while !(cert.is_file() && key.is_file()) {
        if !logged {
            info!(cert = %cert.display(), key = %key.display(), "waiting for the serving certificate files");
            logged = true;
        }
        tokio::select! {
            () = shutdown.wait() => return false,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    true
}

impl From<crate::cluster::ClientError> for WebhooksError {
    fn from(e: crate::cluster::ClientError) -> Self {
        match e {
            crate::cluster::ClientError::Kubeconfig(path, source) => WebhooksError::Kubeconfig(path, source),
            crate::cluster::ClientError::Kube(source) => WebhooksError::Kube(source),
        }
    }
}

fn json(code: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A `meta/v1` Status body, the shape API clients expect from a Kubernetes endpoint.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    json(code, body.to_string().into_bytes())
}

/// Answers one HTTPS request: the three webhook paths and `/healthz`.
pub async fn handle<B>(ctx: &WebhookContext, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    let is_webhook = matches!(
        path,
        SCALED_OBJECT_PATH
            | SCALED_JOB_PATH
            | TRIGGER_AUTHENTICATION_PATH
            | CLUSTER_TRIGGER_AUTHENTICATION_PATH
    );
    if path == "/healthz" || path == "/livez" || path == "/readyz" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return r;
    }
    if !is_webhook {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no webhook at {path}"),
        );
    }
    if req.method() != Method::POST {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "admission reviews are POSTed",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("could not read the request body: {e}"),
            );
        }
    };
    let request = match review::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "malformed admission review");
            return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string());
        }
    };
    let answer = review::review_request(&request, ctx).await.into_review();
    match serde_json::to_vec(&answer) {
        Ok(b) => json(StatusCode::OK, b),
        Err(e) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("could not encode the response: {e}"),
        ),
    }
}
