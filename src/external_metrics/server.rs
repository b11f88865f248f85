//! `ebb metrics-server`: the ports, certificates, authentication, the ScaledObject source, the
//! engine, and the TLS listener of the external metrics API.
//!
//! [`run`] is the subcommand: [`bind`] the ports, build an engine (from `--local` files, or
//! connected to the cluster), then serve. `ebb run` ([`crate::run`]) binds the same way and
//! hands [`run_with_engine`] the engine it shares with the operator.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tracing::{Instrument, info, info_span, warn};

use super::{
    auth::{Authenticator, Authorizer, AuthzMode, RequestHeaderConfig},
    fallback::TargetReader,
    handlers::{ApiState, handle},
    metrics::ApiMetrics,
};
use crate::{
    admin::{self, AdminState},
    cli::MetricsServerArgs,
    engine::Engine,
    inspect::Inspector,
    keda_metrics::KedaMetrics,
    local_mode::{self, StateLock},
    net::{Server, ServerMetrics},
    resolver::files::LocalResolver,
    scalers::{
        ScalerContext,
        aws::AwsShared,
        http_push::{ActivatorDiscovery, HttpIndex, HttpShared},
        kubernetes_workload::PodIndex,
        registry::{Registry, object_key},
    },
    shutdown::Signal,
    source,
    startup::{self, StartupError},
    tls::{self, CertReloader, ReloadableRoots, RequestClientCert, certgen},
};

/// The metrics one metrics-server process exports on its admin port.
pub struct Metrics {
    /// What `/metrics` serves.
    pub prom: prometheus_client::registry::Registry,
    /// The external metrics API's request metrics.
    pub api: Arc<ApiMetrics>,
    /// KEDA's metric families (fed by the engine, and by the operator under `ebb run`).
    pub keda: Arc<KedaMetrics>,
    /// Connection metrics of both ports.
    pub server: Arc<ServerMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every family in a new registry.
    pub fn register() -> Self {
        let mut prom = prometheus_client::registry::Registry::default();
        let api = Arc::new(ApiMetrics::register(&mut prom));
        let keda = Arc::new(KedaMetrics::register(&mut prom));
        let server = Arc::new(ServerMetrics::register(&mut prom));
        Metrics {
            prom,
            api,
            keda,
            server,
        }
    }
}

/// The bound ports (and, with `--local`, the state directory's lock, held while serving).
#[derive(Debug)]
pub struct Listeners {
    api: TcpListener,
    api_addr: SocketAddr,
    admin: TcpListener,
    admin_addr: SocketAddr,
    state_lock: Option<StateLock>,
}

/// Binds the HTTPS and admin ports, so a port in use fails before anything else starts.
pub async fn bind(args: &MetricsServerArgs) -> Result<Listeners, StartupError> {
    // A laptop demo should not be reachable from the network unless asked to be.
    let default_ip = if args.local.is_some() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from([0, 0, 0, 0])
    };
    // Taken before the ports: a second `--local` on other ports must not overwrite this
    // directory's kubeconfig, whatever its ports.
    let mut state_lock = match &args.local {
        Some(_) => Some(local_mode::lock_state(&args.state_dir).map_err(StartupError::Local)?),
        None => None,
    };
    let secure_addr = SocketAddr::new(args.bind_address.unwrap_or(default_ip), args.secure_port);
    let listener = startup::bind(secure_addr, "--secure-port", "--bind-address").await?;
    let secure_addr = listener.local_addr().unwrap_or(secure_addr);
    let admin_addr = SocketAddr::new(args.metrics_bind_address.unwrap_or(default_ip), args.metrics_port);
    let admin_listener = startup::bind_admin(admin_addr).await?;
    let admin_addr = admin_listener.local_addr().unwrap_or(admin_addr);
    if let Some(lock) = state_lock.as_mut() {
        lock.describe(&format!(
            "pid {}, https://{secure_addr}, admin port {admin_addr}",
            std::process::id()
        ));
    }
    Ok(Listeners {
        api: listener,
        api_addr: secure_addr,
        admin: admin_listener,
        admin_addr,
        state_lock,
    })
}

/// An engine connected to the cluster, and what else the server reads there.
pub struct Cluster {
    /// Cluster access.
    pub client: kube::Client,
    /// The engine ([`Engine::connect`]).
    pub engine: Engine,
    /// Pods, for fallback values of `Value` targets.
    pub pods: PodIndex,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `kube::Client` is not `Debug`.
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// `ebb metrics-server`: serves until `shutdown`, on ScaledObjects from `--local` files or from
/// the cluster.
pub async fn run(args: MetricsServerArgs, shutdown: Signal) -> Result<(), StartupError> {
    let listeners = bind(&args).await?;
    let metrics = Metrics::register();
    if let Some(dir) = args.local.clone() {
        return run_local(args, dir, listeners, metrics, shutdown).await;
    }
    let client = crate::cluster::client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| StartupError::from(e).offering_local())?;
    let (engine, pods) = Engine::connect(
        &client,
        args.scalers.http_timeout(),
        crate::resolver::cluster_object_namespace(
            args.scalers.cluster_objects.cluster_object_namespace.as_deref(),
        ),
        metrics.keda.clone(),
        crate::scalers::http_push::ActivatorDiscovery {
            admin_urls: args.scalers.activator.admin.clone(),
            service: args.scalers.activator.service.clone(),
        },
        &shutdown,
    )
    .await;
    run_with_engine(
        args,
        listeners,
        metrics,
        Cluster { client, engine, pods },
        shutdown,
    )
    .await
}

/// Serves on `listeners` with ScaledObjects watched in the cluster, read through `cluster`'s
/// engine (`ebb metrics-server`, and `ebb run`, whose operator shares the engine).
pub async fn run_with_engine(
    args: MetricsServerArgs,
    listeners: Listeners,
    metrics: Metrics,
    cluster: Cluster,
    shutdown: Signal,
) -> Result<(), StartupError> {
    let Cluster { client, engine, pods } = cluster;
    let ready = Arc::new(AtomicBool::new(false));
    let targets = TargetReader {
        client: client.clone(),
        pods: Some(pods),
        plurals: Default::default(),
    };
    tokio::spawn(
        source::kube::run(
            client.clone(),
            crate::cli::watch_namespace(args.watch_namespace.as_deref()),
            engine.registry.clone(),
            ready.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("scaledobject_watch")),
    );
    let (cert, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => certgen::ensure_self_signed(&args.cert_dir, &["localhost".to_string()])
            .map_err(|e| StartupError::SelfSigned(args.cert_dir.clone(), e))?,
    };
    let files = Files {
        cert,
        key,
        client_ca: args.client_ca_file.clone(),
    };
    serve(
        &args,
        listeners,
        metrics,
        &engine,
        files,
        Some(client),
        Some(targets),
        ready,
        shutdown,
    )
    .await
}

/// `--local DIR`: ScaledObjects (and the TriggerAuthentications, Secrets and pods they need)
/// from files, polled; no cluster is contacted.
async fn run_local(
    args: MetricsServerArgs,
    dir: Option<PathBuf>,
    listeners: Listeners,
    metrics: Metrics,
    shutdown: Signal,
) -> Result<(), StartupError> {
    let mut engine = Engine::new(args.scalers.http_timeout());
    engine.observe(metrics.keda.clone());
    let registry = engine.registry.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let (secure_addr, admin_addr) = (listeners.api_addr, listeners.admin_addr);
    let setup = local_mode::prepare(&args.state_dir, secure_addr).map_err(StartupError::Local)?;
    let dir = match dir {
        Some(d) => d,
        None => {
            let d = args.state_dir.join("scaledobjects");
            local_mode::write_examples(&d, admin_addr).map_err(StartupError::Local)?;
            d
        }
    };
    let resolver = Arc::new(LocalResolver::from_documents(&[]).with_cluster_object_namespace(
        crate::resolver::cluster_object_namespace(
            args.scalers.cluster_objects.cluster_object_namespace.as_deref(),
        ),
    ));
    // HTTPScaledObjects and InterceptorRoutes in the same files give `external-push` triggers
    // their metric settings.
    let http_index = HttpIndex::default();
    let context = ScalerContext {
        kube: None,
        pods: Some(resolver.pod_index()),
        aws: AwsShared::default(),
        clock: None,
        metrics: None,
        http: HttpShared::new(
            http_index.clone(),
            ActivatorDiscovery {
                admin_urls: args.scalers.activator.admin.clone(),
                service: args.scalers.activator.service.clone(),
            },
        ),
    };
    engine.configure(resolver.clone(), context);
    let generated: std::sync::Mutex<Vec<crate::scalers::registry::ObjectKey>> = Default::default();
    let files_source = source::files::LocalSource::new(dir.clone()).with_documents_callback(Box::new(
        move |docs: &[serde_yaml::Value], registry: &Registry| {
            // Each HTTPScaledObject serves its metric through the ScaledObject the operator
            // would generate for it (docs/http-api.md), so `kubectl get --raw` finds it here too.
            let wanted = local_generated_scaled_objects(docs);
            let mut previous = crate::locks::LockExt::lock_or_recover(&generated);
            for key in previous
                .iter()
                .filter(|k| !wanted.iter().any(|so| object_key(so) == **k))
            {
                registry.remove(key);
            }
            *previous = wanted.iter().map(object_key).collect();
            drop(previous);
            for so in &wanted {
                registry.apply(so);
            }
            let http_changed = http_index.replace_from_documents(docs);
            if resolver.update(docs) || http_changed {
                registry.rebuild_all();
            }
        },
    ));
    tokio::spawn(
        files_source
            .run(
                registry.clone(),
                ready.clone(),
                Duration::from_millis(args.local_poll_interval.max(50)),
                shutdown.clone(),
            )
            .instrument(info_span!("scaledobject_files", dir = %dir.display())),
    );
    info!(dir = %dir.display(), "local mode: ScaledObjects from files; no cluster is contacted, and any authenticated client is allowed");
    let (cert, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => (setup.serving_cert.clone(), setup.serving_key.clone()),
    };
    let client_ca = args.client_ca_file.clone().unwrap_or(setup.ca_file.clone());
    {
        // The banner names an object actually loaded, so it waits for the first read of DIR.
        let (registry, ready, shutdown) = (registry.clone(), ready.clone(), shutdown.clone());
        let kubeconfig = setup.kubeconfig.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !ready.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            print!(
                "{}",
                local_mode::banner(&kubeconfig, secure_addr, admin_addr, &dir, &registry)
            );
        });
    }
    let files = Files {
        cert,
        key,
        client_ca: Some(client_ca),
    };
    serve(
        &args, listeners, metrics, &engine, files, None, None, ready, shutdown,
    )
    .await
}

/// The serving certificate, its key, and the CA client certificates are checked against.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// Certificates, authentication, the admin port and the TLS listener, until `shutdown`.
#[allow(clippy::too_many_arguments)]
async fn serve(
    args: &MetricsServerArgs,
    listeners: Listeners,
    metrics: Metrics,
    engine: &Engine,
    files: Files,
    kube_client: Option<kube::Client>,
    targets: Option<TargetReader>,
    ready: Arc<AtomicBool>,
    shutdown: Signal,
) -> Result<(), StartupError> {
    let Listeners {
        api: listener,
        api_addr: secure_addr,
        admin: admin_listener,
        state_lock: _state_lock,
        ..
    } = listeners;
    let offline = args.local.is_some();
    let limits = args.connections.limits();
    let api_server = Server {
        name: "api",
        limits: limits.clone(),
        metrics: metrics.server.clone(),
    };
    let admin_server = Server {
        name: "admin",
        limits,
        metrics: metrics.server.clone(),
    };
    let mut reloader = CertReloader::new(Duration::from_millis(args.cert_reload_interval.max(50)));
    let resolver = reloader
        .watch_serving(&files.cert, &files.key)
        .map_err(StartupError::Certs)?;
    let client_ca = files
        .client_ca
        .as_ref()
        .map(|p| reloader.watch_roots(p))
        .transpose()
        .map_err(StartupError::Certs)?;
    let requestheader = match &args.requestheader_client_ca_file {
        Some(p) => Some(request_header_config(
            args,
            reloader.watch_roots(p).map_err(StartupError::Certs)?,
        )),
        None => match &kube_client {
            Some(client) => requestheader_from_cluster(client, args).await?,
            None => None,
        },
    };
    if requestheader.is_none() && !offline {
        warn!("no requestheader CA configured: requests proxied by kube-apiserver cannot be authenticated");
    }
    let hint_roots: Vec<&ReloadableRoots> = client_ca
        .iter()
        .map(AsRef::as_ref)
        .chain(requestheader.as_ref().map(|r| r.ca.as_ref()))
        .collect();
    let verifier = Arc::new(RequestClientCert::from_reloadable(&hint_roots));
    let config = tls::server_config(resolver, verifier);
    let authn = Arc::new(Authenticator::new(requestheader, client_ca, kube_client.clone()));
    let authz_mode = match (&kube_client, offline) {
        (Some(c), false) => AuthzMode::Delegated(c.clone()),
        _ => AuthzMode::AllowAuthenticated,
    };
    let authz = Arc::new(
        Authorizer::with_always_allow_paths(authz_mode, args.authorization_always_allow_paths.clone())
            .with_log_interval(api_server.limits.log_interval),
    );

    let state = Arc::new(ApiState {
        registry: engine.registry.clone(),
        cache: engine.cache.clone(),
        health: engine.health.clone(),
        targets,
        authn,
        authz,
        metrics: metrics.api,
        ready: ready.clone(),
        last_errors: Default::default(),
        any_errors: AtomicBool::new(false),
        keda: Some(metrics.keda),
    });
    let admin_state = Arc::new(AdminState {
        registry: metrics.prom,
        ready,
        demo: offline,
        debug: Some(Arc::new(Explain(Inspector::new(
            engine.clone(),
            if offline { "local" } else { "metrics-server" },
        )))),
    });
    {
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move { admin::run_with(&admin_server, admin_listener, admin_state, shutdown).await }
                .instrument(info_span!("admin_server")),
        );
    }
    {
        let shutdown = shutdown.clone();
        tokio::spawn(
            reloader
                .run(async move { shutdown.wait().await })
                .instrument(info_span!("cert_reload")),
        );
    }
    info!(addr = %secure_addr, "external metrics API listening");
    let handler = move |req, conn: Arc<tls::ConnInfo>| {
        let state = state.clone();
        async move { handle(&state, req, &conn).await }
    };
    tls::serve_with(&api_server, listener, config, handler, async move {
        shutdown.wait().await
    })
    .await
    .map_err(StartupError::Serve)
}

/// `ebb explain`'s view on the admin port, from this process's engine.
struct Explain(Inspector);

impl admin::ObjectDebug for Explain {
    fn view(&self, namespace: &str, name: &str) -> BoxFuture<'static, Option<serde_json::Value>> {
        let (inspector, namespace, name) = (self.0.clone(), namespace.to_string(), name.to_string());
        Box::pin(async move {
            let view = inspector.view(&namespace, &name).await?;
            serde_json::to_value(view).ok()
        })
    }
}

fn request_header_config(args: &MetricsServerArgs, ca: Arc<ReloadableRoots>) -> RequestHeaderConfig {
    RequestHeaderConfig {
        ca,
        allowed_names: args
            .requestheader_allowed_names
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        username_headers: args.requestheader_username_headers.clone(),
        uid_headers: args.requestheader_uid_headers.clone(),
        group_headers: args.requestheader_group_headers.clone(),
        extra_prefixes: args.requestheader_extra_headers_prefix.clone(),
    }
}

/// Reads the front-proxy settings kube-apiserver publishes, as every aggregated server does
/// when no `--requestheader-*` flags are given.
async fn requestheader_from_cluster(
    client: &kube::Client,
    args: &MetricsServerArgs,
) -> Result<Option<RequestHeaderConfig>, StartupError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "kube-system");
    let cm = match api.get_opt("extension-apiserver-authentication").await {
        Ok(Some(cm)) => cm,
        Ok(None) => return Ok(None),
        Err(e) => return Err(StartupError::AuthConfigMap(e)),
    };
    let data = cm.data.unwrap_or_default();
    let Some(pem) = data.get("requestheader-client-ca-file") else {
        return Ok(None);
    };
    let ca = match ReloadableRoots::from_pem(pem.as_bytes()) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            warn!(error = %e, "requestheader-client-ca-file in extension-apiserver-authentication is unusable");
            return Ok(None);
        }
    };
    let list = |key: &str, default: &[String]| -> Vec<String> {
        data.get(key)
            .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_vec())
    };
    let mut cfg = request_header_config(args, ca);
    cfg.allowed_names = list("requestheader-allowed-names", &cfg.allowed_names);
    cfg.username_headers = list("requestheader-username-headers", &cfg.username_headers);
    cfg.uid_headers = list("requestheader-uid-headers", &cfg.uid_headers);
    cfg.group_headers = list("requestheader-group-headers", &cfg.group_headers);
    cfg.extra_prefixes = list("requestheader-extra-headers-prefix", &cfg.extra_prefixes);
    info!(allowed_names = ?cfg.allowed_names, "front-proxy settings read from kube-system/extension-apiserver-authentication");
    Ok(Some(cfg))
}

/// The ScaledObjects generated from the HTTPScaledObjects among `docs` (those without the
/// skip annotation), as `--local` serves them.
fn local_generated_scaled_objects(docs: &[serde_yaml::Value]) -> Vec<crate::crd::ScaledObject> {
    use crate::crd::http_scaled_object::HTTPScaledObject;
    use crate::scaling::http_api::{generated_scaled_object, skips_scaled_object};
    docs.iter()
        .filter(|d| {
            d.get("apiVersion").and_then(|v| v.as_str()) == Some("http.keda.sh/v1alpha1")
                && d.get("kind").and_then(|v| v.as_str()) == Some("HTTPScaledObject")
        })
        .filter_map(|d| serde_yaml::from_value::<HTTPScaledObject>(d.clone()).ok())
        .filter(|h| !skips_scaled_object(h))
        .map(|mut h| {
            h.metadata.namespace.get_or_insert_with(|| "default".into());
            generated_scaled_object(&h, "local")
        })
        .collect()
}
