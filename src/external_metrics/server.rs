//! `ebb metrics-server`: wiring of certificates, authentication, the ScaledObject source,
//! the scaler registry and cache, the admin port and the TLS listener.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{
    auth::{Authenticator, Authorizer, AuthzMode, RequestHeaderConfig},
    fallback::TargetReader,
    handlers::{ApiState, handle},
    metrics::ApiMetrics,
};
use crate::{
    admin::{self, AdminState},
    cli::{LeaderArgs, MetricsServerArgs},
    engine::Engine,
    local,
    resolver::{kube::KubeResolver, local::LocalResolver},
    scalers::{ScalerContext, aws::AwsShared, kubernetes_workload::PodIndex, registry::Registry},
    shutdown::Signal,
    source,
    tls::{self, CertReloader, ReloadableRoots, RequestClientCert, certgen},
};

/// Why the metrics server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A port could not be bound; the message names the flag that moves it.
    #[error(transparent)]
    Bind(crate::report::BindError),
    /// `--local` set-up failed.
    #[error("failed to prepare --local mode")]
    Local(#[source] local::LocalError),
    /// Certificates or CA files could not be loaded.
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
    /// The extension-apiserver-authentication ConfigMap was unusable.
    #[error("failed to read kube-system/extension-apiserver-authentication")]
    AuthConfigMap(#[source] kube::Error),
    /// Serving failed.
    #[error("the TLS server failed")]
    Serve(#[source] tls::TlsError),
    /// `ebb run` was given `--local`.
    #[error(
        "ebb run drives a cluster and cannot use --local; `ebb metrics-server --local` is the offline demo"
    )]
    RunNeedsCluster,
}

/// Runs the metrics server until `shutdown`.
pub async fn run(args: MetricsServerArgs, shutdown: Signal) -> Result<(), ServerError> {
    run_with(args, None, shutdown).await
}

/// Runs the metrics server and, when `operator` is given, the operator on the same engine.
pub async fn run_with(
    args: MetricsServerArgs,
    operator: Option<LeaderArgs>,
    shutdown: Signal,
) -> Result<(), ServerError> {
    run_on(args, operator, None, shutdown).await
}

/// [`run_with`] on a given client instead of one built from the kubeconfig (tests drive it
/// with a scripted API server).
pub async fn run_on(
    args: MetricsServerArgs,
    operator: Option<LeaderArgs>,
    client: Option<kube::Client>,
    shutdown: Signal,
) -> Result<(), ServerError> {
    if operator.is_some() && args.local.is_some() {
        return Err(ServerError::RunNeedsCluster);
    }
    let mut prom = prometheus_client::registry::Registry::default();
    let api_metrics = Arc::new(ApiMetrics::register(&mut prom));
    let keda_metrics = Arc::new(crate::keda_metrics::KedaMetrics::register(&mut prom));
    let server_metrics = Arc::new(crate::net::ServerMetrics::register(&mut prom));
    let limits = args.connections.limits();
    let api_server = crate::net::Server {
        name: "api",
        limits: limits.clone(),
        metrics: server_metrics.clone(),
    };
    let admin_server = crate::net::Server {
        name: "admin",
        limits,
        metrics: server_metrics,
    };
    let mut engine = Engine::new(crate::engine::http_timeout(args.http_default_timeout));
    engine.observe(keda_metrics.clone());
    let registry = engine.registry.clone();
    let ready = Arc::new(AtomicBool::new(false));

    // A laptop demo should not be reachable from the network unless asked to be.
    let default_ip = if args.local.is_some() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from([0, 0, 0, 0])
    };
    // Taken before the ports: a second `--local` on other ports must not overwrite this
    // directory's kubeconfig, whatever its ports.
    let mut state_lock = match &args.local {
        Some(_) => Some(local::lock_state(&args.state_dir).map_err(ServerError::Local)?),
        None => None,
    };
    let secure_addr = SocketAddr::new(args.bind_address.unwrap_or(default_ip), args.secure_port);
    let listener = TcpListener::bind(secure_addr).await.map_err(|cause| {
        ServerError::Bind(crate::report::BindError {
            addr: secure_addr,
            port_flag: "--secure-port",
            address_flag: "--bind-address",
            cause,
        })
    })?;
    let secure_addr = listener.local_addr().unwrap_or(secure_addr);
    let admin_addr = SocketAddr::new(args.metrics_bind_address.unwrap_or(default_ip), args.metrics_port);
    let admin_listener = admin::bind(admin_addr).await.map_err(|cause| {
        ServerError::Bind(crate::report::BindError {
            addr: admin_addr,
            port_flag: "--metrics-port",
            address_flag: "--metrics-bind-address",
            cause,
        })
    })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(admin_addr);
    if let Some(lock) = state_lock.as_mut() {
        lock.describe(&format!(
            "pid {}, https://{secure_addr}, admin port {admin_addr}",
            std::process::id()
        ));
    }

    let mut reloader = CertReloader::new(Duration::from_millis(args.cert_reload_interval.max(50)));
    let local_mode = args.local.is_some();
    let mut targets = None;
    let (cert_file, key_file, client_ca_file, kube_client) = if let Some(dir) = &args.local {
        let setup = local::prepare(&args.state_dir, secure_addr).map_err(ServerError::Local)?;
        let dir = match dir {
            Some(d) => d.clone(),
            None => {
                let d = args.state_dir.join("scaledobjects");
                local::write_examples(&d, admin_addr).map_err(ServerError::Local)?;
                d
            }
        };
        let resolver = Arc::new(LocalResolver::from_documents(&[]));
        let context = ScalerContext {
            kube: None,
            pods: Some(resolver.pod_index()),
            aws: AwsShared::default(),
            clock: None,
            metrics: None,
        };
        engine.configure(resolver.clone(), context);
        let source = source::local::LocalSource::new(dir.clone()).with_documents_callback(Box::new(
            move |docs: &[serde_yaml::Value], registry: &Registry| {
                if resolver.update(docs) {
                    registry.rebuild_all();
                }
            },
        ));
        tokio::spawn(source.run(
            registry.clone(),
            ready.clone(),
            Duration::from_millis(args.local_poll_interval.max(50)),
            shutdown.clone(),
        ));
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
                while !ready.load(std::sync::atomic::Ordering::Relaxed)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
                print!(
                    "{}",
                    local::banner(&kubeconfig, secure_addr, admin_addr, &dir, &registry)
                );
            });
        }
        (cert, key, Some(client_ca), None)
    } else {
        let client = match client {
            Some(c) => c,
            None => crate::cluster::client(args.kubeconfig.as_deref()).await?,
        };
        let context = ScalerContext {
            kube: Some(client.clone()),
            pods: Some(PodIndex::start(client.clone(), shutdown.clone())),
            aws: AwsShared::default(),
            clock: None,
            metrics: None,
        };
        targets = Some(TargetReader {
            client: client.clone(),
            pods: context.pods.clone(),
            plurals: Default::default(),
        });
        let resolver = KubeResolver::start(client.clone(), registry.clone(), shutdown.clone()).await;
        engine.configure(Arc::new(resolver), context);
        if let Some(op) = &operator {
            tokio::spawn(crate::operator::runtime::drive(
                client.clone(),
                engine.clone(),
                keda_metrics.clone(),
                op.clone(),
                crate::cli::watch_namespace(args.watch_namespace.as_deref()),
                shutdown.clone(),
            ));
        }
        tokio::spawn(source::kube::run(
            client.clone(),
            crate::cli::watch_namespace(args.watch_namespace.as_deref()),
            registry.clone(),
            ready.clone(),
            shutdown.clone(),
        ));
        let (cert, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => certgen::ensure_self_signed(&args.cert_dir, &["localhost".to_string()])
                .map_err(|e| ServerError::SelfSigned(args.cert_dir.clone(), e))?,
        };
        (cert, key, args.client_ca_file.clone(), Some(client))
    };

    let resolver = reloader
        .watch_serving(&cert_file, &key_file)
        .map_err(ServerError::Certs)?;
    let client_ca = client_ca_file
        .as_ref()
        .map(|p| reloader.watch_roots(p))
        .transpose()
        .map_err(ServerError::Certs)?;
    let requestheader = match &args.requestheader_client_ca_file {
        Some(p) => Some(request_header_config(
            &args,
            reloader.watch_roots(p).map_err(ServerError::Certs)?,
        )),
        None => match &kube_client {
            Some(client) => requestheader_from_cluster(client, &args).await?,
            None => None,
        },
    };
    if requestheader.is_none() && !local_mode {
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
    let authz_mode = match (&kube_client, local_mode) {
        (Some(c), false) => AuthzMode::Delegated(c.clone()),
        _ => AuthzMode::AllowAuthenticated,
    };
    let authz = Arc::new(
        Authorizer::with_always_allow_paths(authz_mode, args.authorization_always_allow_paths.clone())
            .with_log_interval(api_server.limits.log_interval),
    );

    let state = Arc::new(ApiState {
        registry,
        cache: engine.cache.clone(),
        health: engine.health.clone(),
        targets,
        authn,
        authz,
        metrics: api_metrics,
        ready: ready.clone(),
        last_errors: Default::default(),
        any_errors: AtomicBool::new(false),
        keda: Some(keda_metrics),
    });
    let admin_state = Arc::new(AdminState {
        registry: prom,
        ready,
        demo: local_mode,
    });
    {
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move { admin::run_with(&admin_server, admin_listener, admin_state, shutdown).await },
        );
    }
    {
        let shutdown = shutdown.clone();
        tokio::spawn(reloader.run(async move { shutdown.wait().await }));
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
    .map_err(ServerError::Serve)
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
) -> Result<Option<RequestHeaderConfig>, ServerError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "kube-system");
    let cm = match api.get_opt("extension-apiserver-authentication").await {
        Ok(Some(cm)) => cm,
        Ok(None) => return Ok(None),
        Err(e) => return Err(ServerError::AuthConfigMap(e)),
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

impl From<crate::cluster::ClientError> for ServerError {
    fn from(e: crate::cluster::ClientError) -> Self {
        match e {
            crate::cluster::ClientError::Kubeconfig(path, source) => ServerError::Kubeconfig(path, source),
            crate::cluster::ClientError::Kube(source) => ServerError::Kube(source),
        }
    }
}
