//! `ebb activator`: the HTTP proxy in front of HTTPScaledObject targets that holds requests while
//! a target is at zero, wakes it at once, and forwards the moment it is ready.
//!
//! ```text
//!  client ─→ proxy port (net::Server: deadlines, caps) ─→ proxy::Proxy::handle
//!                 routing: scaling::http_route::RouteTable (swapped whole on change)
//!                 per route: target::Target (endpoints, in flight, held, counters)
//!                    ▲ publish / withdraw endpoints, woken on hold
//!                 backend: local::supervise (--local: a process per route)
//!                          cluster::run_route (EndpointSlices of the Service, /scale wake)
//!  admin port: /queue (the add-on's JSON), /routes (ebb's view), /metrics, /livez, /readyz
//! ```
//!
//! Two backends feed the same [`target::Target`] seam: `--local` (a process per route,
//! `local`) and the cluster (`cluster`: the routed Service's EndpointSlices, the target's
//! `/scale` written on the first held request).

pub mod admin;
pub mod cluster;
pub mod cold;
pub mod deadline;
pub mod gate;
pub mod h1pool;
pub mod local;
pub mod metrics;
pub mod proxy;
pub mod target;
pub mod upstream;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tracing::{info, warn};

use self::{
    cluster::ClusterSpec,
    cold::ColdStart,
    gate::PlainProxy,
    local::{LocalSpec, LocalTiming},
    metrics::ActivatorMetrics,
    proxy::{Client, Proxy, ProxyConfig, RouteOptions, Routing, TlsProxy},
    target::Target,
    upstream::{DIAL_BUDGET, DialPolicy, Protocol, Upstream},
};
use crate::{
    cli::ActivatorArgs,
    crd::{
        http_scaled_object::{HTTPScaledObject, LOCAL_COMMAND_ANNOTATION},
        interceptor_route::InterceptorRoute,
    },
    net::{PlainTcp, Server, ServerMetrics, parse_duration},
    report::BindError,
    scaling::{
        http_hold::HoldLimits,
        http_route::{Route, RouteKey, RoutePort, RouteTable, fixed_response, target_port},
    },
    shutdown::Signal,
    startup::StartupError,
    tls::{CertReloader, ReloadError, TlsHandshake},
};
use rustls::server::WebPkiClientVerifier;

/// Annotation forcing the protocol spoken to the target: `h2c` or `http/1.1` (default: the
/// client's, as Knative's activator does).
pub const APP_PROTOCOL_ANNOTATION: &str = "activator.ebb/app-protocol";

/// How often the `--local` directory is re-read.
const LOCAL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One HTTPScaledObject or InterceptorRoute as the activator runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Its route.
    pub route: Route,
    /// Timeouts and protocol.
    pub options: RouteOptions,
    /// What runs the target.
    pub backend: Backend,
    /// Where held requests go at the deadline (`coldStartTimeoutFailoverRef`,
    /// `coldStart.fallback`): a Service, or with `--local` a loopback port.
    pub fallback: Option<FallbackRef>,
}

/// A fallback Service and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackRef {
    /// Service name (unused with `--local`).
    pub service: String,
    /// Its port (with `--local`, the loopback port).
    pub port: RoutePort,
}

/// What makes a route's endpoints appear: a local process, or the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// `--local`: a process on this machine.
    Local(LocalSpec),
    /// The routed Service's EndpointSlices, and the target's `/scale`.
    Cluster(ClusterSpec),
}

/// Why an HTTPScaledObject cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The document is not a valid object of its kind.
    #[error("not a valid object: {0}")]
    Parse(String),
    /// Routing rules are wrong.
    #[error(transparent)]
    Route(#[from] crate::scaling::http_route::RouteError),
    /// No command annotation.
    #[error("annotation {LOCAL_COMMAND_ANNOTATION} (the command that starts the target) is missing")]
    NoCommand,
    /// `portName` needs a Service, which local mode has not.
    #[error("--local needs a port number (a loopback port), not portName")]
    PortName,
    /// A duration field is not a Go duration.
    #[error("spec.timeouts.{0}: {1}")]
    Duration(&'static str, String),
    /// The protocol annotation has an unknown value.
    #[error("annotation {APP_PROTOCOL_ANNOTATION}: {0:?} is neither h2c nor http/1.1")]
    Protocol(String),
    /// Cluster mode: no workload to wake.
    #[error("spec.scaleTargetRef.name is empty: there is no workload to wake")]
    NoWorkload,
}

/// The settings every mode reads from an object beyond routing: timeouts and protocol.
pub fn route_options(so: &HTTPScaledObject) -> Result<RouteOptions, ObjectError> {
    let timeouts = so.spec.timeouts.as_ref();
    let failover = so.spec.cold_start_timeout_failover_ref.as_ref();
    let mut hold_timeout = go_duration("conditionWait", timeouts.and_then(|t| t.condition_wait.as_ref()))?;
    if let Some(f) = failover {
        // The failover's own deadline (the add-on's default 30 s) is the wait before it.
        let seconds = f.timeout_seconds.unwrap_or(30);
        let seconds = u64::try_from(seconds).map_err(|_| {
            ObjectError::Duration(
                "coldStartTimeoutFailoverRef.timeoutSeconds",
                format!("{seconds} is negative"),
            )
        })?;
        hold_timeout = Some((seconds > 0).then(|| Duration::from_secs(seconds)));
    }
    Ok(RouteOptions {
        hold_timeout,
        // HTTPScaledObjects have no per-object request deadline: `--request-timeout`.
        request_timeout: None,
        response_header_timeout: go_duration(
            "responseHeader",
            timeouts.and_then(|t| t.response_header.as_ref()),
        )?,
        protocol: protocol_annotation(so.metadata.annotations.as_ref())?,
        cold: ColdStart {
            fallback: failover.is_some(),
            ..ColdStart::default()
        },
    })
}

fn protocol_annotation(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Option<Protocol>, ObjectError> {
    match annotations
        .and_then(|a| a.get(APP_PROTOCOL_ANNOTATION))
        .map(String::as_str)
    {
        None => Ok(None),
        Some("h2c" | "kubernetes.io/h2c") => Ok(Some(Protocol::H2c)),
        Some("http/1.1" | "http") => Ok(Some(Protocol::Http1)),
        Some(other) => Err(ObjectError::Protocol(other.to_owned())),
    }
}

fn go_duration(field: &'static str, value: Option<&String>) -> Result<Option<Option<Duration>>, ObjectError> {
    value
        .map(|v| {
            parse_duration(v)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(|e| ObjectError::Duration(field, e.to_string()))
        })
        .transpose()
}

/// An InterceptorRoute's settings beyond routing: `timeouts.readiness`, `request` and
/// `responseHeader` (`0s` disables), the protocol annotation, and `coldStart`.
pub fn interceptor_route_options(ir: &InterceptorRoute) -> Result<RouteOptions, ObjectError> {
    let timeouts = ir.spec.timeouts.as_ref();
    let cold = ir.spec.cold_start.as_ref();
    let placeholder = cold
        .and_then(|c| c.placeholder.as_ref())
        .map(|p| fixed_response("spec.coldStart.placeholder.response", &p.response, 503))
        .transpose()?
        .map(std::sync::Arc::new);
    let max_pending = cold
        .and_then(|c| c.max_pending_requests)
        .map(|m| {
            usize::try_from(m).ok().filter(|m| *m > 0).ok_or_else(|| {
                ObjectError::Route(crate::scaling::http_route::RouteError::Field(
                    "spec.coldStart.maxPendingRequests".into(),
                    format!("{m} is not at least 1"),
                ))
            })
        })
        .transpose()?;
    let overflow_placeholder = match cold.and_then(|c| c.overflow.as_deref()) {
        None | Some("Reject") => false,
        Some("Placeholder") => true,
        Some(other) => {
            return Err(ObjectError::Route(crate::scaling::http_route::RouteError::Field(
                "spec.coldStart.overflow".into(),
                format!("{other:?} is neither Reject nor Placeholder"),
            )));
        }
    };
    Ok(RouteOptions {
        hold_timeout: go_duration("readiness", timeouts.and_then(|t| t.readiness.as_ref()))?,
        request_timeout: go_duration("request", timeouts.and_then(|t| t.request.as_ref()))?,
        response_header_timeout: go_duration(
            "responseHeader",
            timeouts.and_then(|t| t.response_header.as_ref()),
        )?,
        protocol: protocol_annotation(ir.metadata.annotations.as_ref())?,
        cold: ColdStart {
            placeholder,
            max_pending,
            overflow_placeholder,
            fallback: cold.is_some_and(|c| c.fallback.is_some()),
        },
    })
}

/// The fallback an HTTPScaledObject names.
pub fn http_scaled_object_fallback(so: &HTTPScaledObject) -> Result<Option<FallbackRef>, ObjectError> {
    so.spec
        .cold_start_timeout_failover_ref
        .as_ref()
        .map(|f| {
            let t = crate::crd::interceptor_route::TargetRef {
                service: f.service.clone(),
                port: f.port,
                port_name: f.port_name.clone(),
            };
            Ok(FallbackRef {
                service: f.service.clone(),
                port: target_port("spec.coldStartTimeoutFailoverRef", &t)?,
            })
        })
        .transpose()
}

/// The fallback an InterceptorRoute names.
pub fn interceptor_route_fallback(ir: &InterceptorRoute) -> Result<Option<FallbackRef>, ObjectError> {
    ir.spec
        .cold_start
        .as_ref()
        .and_then(|c| c.fallback.as_ref())
        .map(|f| {
            Ok(FallbackRef {
                service: f.service.clone(),
                port: target_port("spec.coldStart.fallback", f)?,
            })
        })
        .transpose()
}

/// `--local`: the command annotation and the loopback port of an object.
fn local_backend(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    port: &RoutePort,
    dir: &Path,
) -> Result<Backend, ObjectError> {
    let command = annotations
        .and_then(|a| a.get(LOCAL_COMMAND_ANNOTATION))
        .filter(|c| !c.trim().is_empty())
        .ok_or(ObjectError::NoCommand)?
        .clone();
    let RoutePort::Number(port) = *port else {
        return Err(ObjectError::PortName);
    };
    Ok(Backend::Local(LocalSpec {
        command,
        port,
        dir: dir.to_path_buf(),
    }))
}

/// `--local`: a fallback is a loopback port (a process ebb does not start).
fn local_fallback(fallback: Option<FallbackRef>) -> Result<Option<FallbackRef>, ObjectError> {
    match fallback {
        Some(FallbackRef {
            port: RoutePort::Name(_),
            ..
        }) => Err(ObjectError::PortName),
        other => Ok(other),
    }
}

/// Reads one HTTPScaledObject or InterceptorRoute document for `--local` (`dir` is where
/// processes run).
pub fn desired_from_document(doc: &serde_yaml::Value, dir: &Path) -> Result<Desired, ObjectError> {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    if kind == "InterceptorRoute" {
        let ir: InterceptorRoute =
            serde_yaml::from_value(doc.clone()).map_err(|e| ObjectError::Parse(e.to_string()))?;
        let route = Route::from_interceptor_route(&ir)?;
        return Ok(Desired {
            options: interceptor_route_options(&ir)?,
            backend: local_backend(ir.metadata.annotations.as_ref(), &route.port, dir)?,
            fallback: local_fallback(interceptor_route_fallback(&ir)?)?,
            route,
        });
    }
    let so: HTTPScaledObject =
        serde_yaml::from_value(doc.clone()).map_err(|e| ObjectError::Parse(e.to_string()))?;
    let route = Route::from_http_scaled_object(&so)?;
    Ok(Desired {
        options: route_options(&so)?,
        backend: local_backend(so.metadata.annotations.as_ref(), &route.port, dir)?,
        fallback: local_fallback(http_scaled_object_fallback(&so)?)?,
        route,
    })
}

/// One route per key: an InterceptorRoute wins over the HTTPScaledObject of the same
/// namespace/name (as the add-on's table does); a line for each object left out.
pub fn merge_routes(mut found: Vec<Desired>, problems: &mut Vec<String>) -> Vec<Desired> {
    use crate::scaling::http_route::RouteKind;
    // InterceptorRoutes first, so the first of each key is the one kept.
    found.sort_by(|a, b| {
        a.route
            .key
            .cmp(&b.route.key)
            .then_with(|| b.route.kind.cmp(&a.route.kind))
    });
    let mut out: Vec<Desired> = Vec::new();
    for d in found {
        match out.last() {
            Some(kept) if kept.route.key == d.route.key => {
                if kept.route.kind == RouteKind::InterceptorRoute
                    && d.route.kind == RouteKind::HttpScaledObject
                {
                    problems.push(format!(
                        "HTTPScaledObject {} is not routed: the InterceptorRoute of the same name takes its place",
                        d.route.key
                    ));
                } else {
                    problems.push(format!("{} is defined twice; the first is kept", d.route.key));
                }
            }
            _ => out.push(d),
        }
    }
    out
}

/// Every HTTPScaledObject and InterceptorRoute under `dir`, and a line per file or object that
/// was skipped (the other objects are kept).
pub fn load_local(dir: &Path) -> (Vec<Desired>, Vec<String>) {
    let (desired, problems, _) = load_local_with_bodies(dir);
    (desired, problems)
}

/// ConfigMap data by namespace and name.
type LocalConfigMaps = HashMap<(String, String), std::collections::BTreeMap<String, String>>;

/// The ConfigMaps labelled `http.keda.sh/response-body: "true"` among `docs` (`--local`: the
/// response bodies of `bodyFromConfigMap`, as the cluster's label-selected watch sees them).
fn local_config_maps(docs: &[serde_yaml::Value]) -> LocalConfigMaps {
    docs.iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap"))
        .filter_map(|d| serde_yaml::from_value::<k8s_openapi::api::core::v1::ConfigMap>(d.clone()).ok())
        .filter(|c| {
            c.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(cold::RESPONSE_BODY_LABEL))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|c| {
            let name = c.metadata.name?;
            let namespace = c.metadata.namespace.unwrap_or_else(|| "default".to_owned());
            Some(((namespace, name), c.data.unwrap_or_default()))
        })
        .collect()
}

/// A line per `bodyFromConfigMap` of `d` whose ConfigMap is not in `config_maps`.
fn missing_config_maps(d: &Desired, config_maps: &LocalConfigMaps) -> Vec<String> {
    let namespace = d.route.key.split_once('/').map_or("", |(ns, _)| ns);
    let mut names: Vec<&str> = d
        .route
        .statics
        .iter()
        .map(|s| &s.response)
        .chain(d.options.cold.placeholder.as_deref())
        .filter_map(|r| r.config_map.as_ref().map(|c| c.name.as_str()))
        .filter(|name| !config_maps.contains_key(&(namespace.to_owned(), (*name).to_owned())))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            format!(
                "{}: bodyFromConfigMap {name:?}: no ConfigMap {namespace}/{name} labelled {}=true in the directory; its responses answer 500",
                d.route.key,
                cold::RESPONSE_BODY_LABEL
            )
        })
        .collect()
}

/// [`load_local`], plus the directory's response-body ConfigMaps.
fn load_local_with_bodies(dir: &Path) -> (Vec<Desired>, Vec<String>, LocalConfigMaps) {
    let (parsed, file_errors) = crate::source::files::load_dir(dir);
    let mut problems: Vec<String> = file_errors.iter().map(ToString::to_string).collect();
    let config_maps = local_config_maps(&parsed.others);
    let mut found: Vec<Desired> = Vec::new();
    for doc in &parsed.others {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let api = doc.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
        if !matches!(kind, "HTTPScaledObject" | "InterceptorRoute") || !api.starts_with("http.keda.sh/") {
            continue;
        }
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("<unnamed>");
        match desired_from_document(doc, dir) {
            Ok(d) => found.push(d),
            Err(e) => problems.push(format!("{kind} {name} skipped: {e}")),
        }
    }
    let out = merge_routes(found, &mut problems);
    for d in &out {
        problems.extend(missing_config_maps(d, &config_maps));
    }
    (out, problems, config_maps)
}

fn report_problems(problems: &[String]) {
    for p in problems {
        warn!("{p}");
    }
}

/// The running backends of the current routes.
struct Running {
    desired: Desired,
    target: Arc<Target>,
    retire: watch::Sender<bool>,
}

/// What starts a route's backend task.
#[derive(Clone)]
struct Backends {
    timing: LocalTiming,
    /// Cluster mode's client and settings.
    cluster: Option<Arc<cluster::ClusterContext>>,
}

/// Applies a new set of objects: unchanged routes keep their target (and process or watch);
/// new and changed ones get a fresh target and backend task; removed and changed ones are
/// stopped.
fn apply(
    proxy: &Proxy,
    running: &mut HashMap<RouteKey, Running>,
    desired: Vec<Desired>,
    metrics: &Arc<ActivatorMetrics>,
    backends: &Backends,
    tasks: &mut JoinSet<()>,
) {
    let mut next: HashMap<RouteKey, Running> = HashMap::new();
    // Targets whose object changed or went: their held requests look the route up again once
    // the new table is in.
    let mut superseded: Vec<Arc<Target>> = Vec::new();
    for d in desired {
        let key = d.route.key.clone();
        match running.remove(&key) {
            Some(r) if r.desired == d => {
                next.insert(key, r);
            }
            previous => {
                if let Some(old) = previous {
                    info!(route = %key, "route changed; restarting its target");
                    let _ = old.retire.send(true);
                    superseded.push(old.target);
                } else {
                    match &d.backend {
                        Backend::Local(l) => {
                            info!(route = %key, command = %l.command, port = l.port, "route added");
                        }
                        Backend::Cluster(c) => {
                            info!(route = %key, service = %c.service, target = %c.describe_workload(), "route added");
                        }
                    }
                }
                let target = Target::new(d.route.clone(), Arc::clone(metrics));
                let (retire, retired) = watch::channel(false);
                if let (Backend::Local(_), Some(f)) = (&d.backend, &d.fallback)
                    && let RoutePort::Number(port) = f.port
                {
                    // With --local a fallback is a loopback port that is already serving.
                    target.publish_fallback(vec![SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))]);
                }
                match (&d.backend, &backends.cluster) {
                    (Backend::Local(spec), _) => {
                        tasks.spawn(local::supervise(
                            Arc::clone(&target),
                            spec.clone(),
                            backends.timing,
                            retired,
                        ));
                    }
                    (Backend::Cluster(spec), Some(ctx)) => {
                        tasks.spawn(cluster::run_route(
                            Arc::clone(ctx),
                            Arc::clone(&target),
                            spec.clone(),
                            d.fallback.clone(),
                            retired,
                        ));
                    }
                    (Backend::Cluster(_), None) => {
                        warn!(route = %key, "a cluster route without a cluster client; not served");
                    }
                }
                next.insert(
                    key,
                    Running {
                        desired: d,
                        target,
                        retire,
                    },
                );
            }
        }
    }
    for (key, old) in running.drain() {
        info!(route = %key, "route removed");
        let _ = old.retire.send(true);
        old.target.forget_metrics();
        superseded.push(old.target);
    }
    *running = next;
    proxy.set_routing(Routing {
        table: RouteTable::new(running.values().map(|r| r.desired.route.clone()).collect()),
        targets: running
            .iter()
            .map(|(k, r)| (k.clone(), (Arc::clone(&r.target), r.desired.options.clone())))
            .collect(),
    });
    for target in superseded {
        target.supersede();
    }
}

async fn bind(
    addr: SocketAddr,
    port_flag: &'static str,
    address_flag: &'static str,
) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|cause| {
        StartupError::Bind(BindError {
            addr,
            port_flag,
            address_flag,
            cause,
        })
    })
}

/// Runs the activator until `shutdown`: the proxy and admin ports, and a backend per route:
/// with `--local` a supervised process (the directory re-read every second), else the routed
/// Service's EndpointSlices and the target's `/scale` (HTTPScaledObjects watched). Local
/// processes are stopped before it returns.
pub async fn run(args: ActivatorArgs, shutdown: Signal) -> Result<(), StartupError> {
    let client = match &args.local {
        Some(dir) if !dir.is_dir() => return Err(StartupError::NotADirectory(dir.clone())),
        Some(_) => None,
        None => Some(
            crate::cluster::client(args.kubeconfig.as_deref())
                .await
                .map_err(|e| StartupError::from(e).offering_local())?,
        ),
    };
    let proxy_listener = bind(
        SocketAddr::new(args.proxy_bind_address, args.proxy_port),
        "--proxy-port",
        "--proxy-bind-address",
    )
    .await?;
    let admin_listener = bind(
        SocketAddr::new(args.metrics_bind_address, args.metrics_port),
        "--metrics-port",
        "--metrics-bind-address",
    )
    .await?;
    let proxy_listener = ProxyListeners {
        plain: proxy_listener,
        tls: match (args.tls_port, &args.tls_cert_file, &args.tls_private_key_file) {
            (Some(port), Some(cert), Some(key)) => {
                let listener = bind(
                    SocketAddr::new(args.proxy_bind_address, port),
                    "--tls-port",
                    "--proxy-bind-address",
                )
                .await?;
                Some(TlsListener::load(listener, cert, key).map_err(StartupError::Certs)?)
            }
            _ => None,
        },
    };
    match (client, args.local.clone()) {
        (Some(client), _) => serve_cluster(args, client, proxy_listener, admin_listener, shutdown).await,
        (None, Some(dir)) => serve(args, dir, proxy_listener, admin_listener, shutdown).await,
        (None, None) => {}
    }
    Ok(())
}

/// The proxy's listeners: the plain port, and the HTTPS port if configured. A bare
/// `TcpListener` converts into one without HTTPS.
#[derive(Debug)]
pub struct ProxyListeners {
    /// The plain-HTTP port (`--proxy-port`).
    pub plain: TcpListener,
    /// The HTTPS port (`--tls-port`).
    pub tls: Option<TlsListener>,
}

impl From<TcpListener> for ProxyListeners {
    fn from(plain: TcpListener) -> Self {
        ProxyListeners { plain, tls: None }
    }
}

/// The HTTPS port: its listener and its certificate, re-read when the files change (the
/// `tls` module's reloader, as every other TLS port of ebb).
pub struct TlsListener {
    listener: TcpListener,
    reloader: CertReloader,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Loads the certificate and key now (failing fast on bad files); ALPN `h2`, `http/1.1`,
    /// no client certificate asked for.
    pub fn load(listener: TcpListener, cert: &Path, key: &Path) -> Result<Self, ReloadError> {
        let mut reloader = CertReloader::new(TLS_RELOAD_INTERVAL);
        let resolver = reloader.watch_serving(cert, key)?;
        let config = crate::tls::server_config(resolver, WebPkiClientVerifier::no_client_auth());
        Ok(TlsListener {
            listener,
            reloader,
            config,
        })
    }
}

/// How often the HTTPS port's certificate files are looked at.
const TLS_RELOAD_INTERVAL: Duration = crate::tls::DEFAULT_INTERVAL;

/// The servers and shared state of a running activator, whatever feeds its routes.
struct Serving {
    proxy: Arc<Proxy>,
    metrics: Arc<ActivatorMetrics>,
    ready: Arc<AtomicBool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the proxy and admin servers; `/readyz` answers 503 until `ready` is set.
fn start_servers(
    args: &ActivatorArgs,
    proxy_listeners: ProxyListeners,
    admin_listener: TcpListener,
    shutdown: &Signal,
    ready: bool,
) -> Serving {
    let mut registry = prometheus_client::registry::Registry::default();
    let server_metrics = Arc::new(ServerMetrics::register(&mut registry));
    let metrics = Arc::new(ActivatorMetrics::register(&mut registry));
    let limits = args.connections.limits();
    let some = |d: Duration| (!d.is_zero()).then_some(d);
    let hold_timeout = some(args.hold_timeout);
    let config = ProxyConfig {
        hold_timeout,
        limits: HoldLimits {
            per_route: args.max_held_per_route,
            total: args.max_held,
        },
        response_header_timeout: some(args.response_header_timeout),
        request_body_timeout: some(args.request_body_timeout),
        request_timeout: some(args.request_timeout),
        retry_after: ProxyConfig::retry_after_for(hold_timeout),
    };
    let upstream = Upstream::new(DialPolicy {
        connect_timeout: args.connect_timeout,
        retry_interval: args.dial_retry_interval,
        budget: DIAL_BUDGET,
    });
    let proxy = Arc::new(Proxy::new(
        config,
        upstream,
        Arc::clone(&metrics),
        limits.log_interval,
    ));
    let ready = Arc::new(AtomicBool::new(ready));
    let admin_state = Arc::new(admin::AdminState {
        base: crate::admin::AdminState {
            registry,
            ready: Arc::clone(&ready),
            demo: false,
            debug: None,
        },
        proxy: Arc::clone(&proxy),
    });
    let admin_server = Server {
        name: "activator-admin",
        limits: limits.clone(),
        metrics: Arc::clone(&server_metrics),
    };
    let proxy_server = Server {
        name: "proxy",
        limits,
        metrics: server_metrics,
    };
    let ProxyListeners {
        plain: proxy_listener,
        tls,
    } = proxy_listeners;
    if let (Ok(p), Ok(a)) = (proxy_listener.local_addr(), admin_listener.local_addr()) {
        let https = tls.as_ref().and_then(|t| t.listener.local_addr().ok());
        info!(proxy = %p, https = ?https, admin = %a, "activator listening");
    }

    let admin_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let state = admin_state;
            let handler = move |req, _peer: Arc<SocketAddr>| {
                let response = admin::respond(&state, &req);
                async move { response }
            };
            if let Err(e) = admin_server
                .serve(
                    admin_listener,
                    PlainTcp,
                    handler,
                    async move { shutdown.wait().await },
                )
                .await
            {
                warn!(error = %e, "the admin server stopped");
            }
        }
    });
    let proxy_server_copy = proxy_server.clone();
    let proxy_task = tokio::spawn({
        let shutdown = shutdown.clone();
        let proxy = Arc::clone(&proxy);
        async move {
            let gate = PlainProxy::new(Arc::clone(&proxy), proxy_server.limits.log_interval);
            let handler = move |req, client: Arc<Client>| Arc::clone(&proxy).handle(req, client);
            if let Err(e) = proxy_server
                .serve(
                    proxy_listener,
                    gate,
                    handler,
                    async move { shutdown.wait().await },
                )
                .await
            {
                warn!(error = %e, "the proxy server stopped");
            }
        }
    });
    let mut servers = vec![proxy_task, admin_task];
    if let Some(tls) = tls {
        servers.push(tokio::spawn(serve_tls(
            tls,
            Server {
                name: "proxy-tls",
                ..proxy_server_copy
            },
            Arc::clone(&proxy),
            shutdown.clone(),
        )));
    }
    Serving {
        proxy,
        metrics,
        ready,
        servers,
    }
}

/// The HTTPS port: the plain port's server and handler behind the `tls` module's handshake
/// (Go's hint for plain HTTP, the handshake under the same deadline, the same caps).
async fn serve_tls(tls: TlsListener, server: Server, proxy: Arc<Proxy>, shutdown: Signal) {
    let TlsListener {
        listener,
        reloader,
        config,
    } = tls;
    let reload = tokio::spawn({
        let shutdown = shutdown.clone();
        reloader.run(async move { shutdown.wait().await })
    });
    let handshake = TlsProxy(TlsHandshake::new(config, server.limits.log_interval));
    let handler = move |req, client: Arc<Client>| Arc::clone(&proxy).handle(req, client);
    if let Err(e) = server
        .serve(listener, handshake, handler, async move { shutdown.wait().await })
        .await
    {
        warn!(error = %e, "the HTTPS proxy server stopped");
    }
    let _ = reload.await;
}

impl Serving {
    /// Marks the activator not ready, waits for the servers to drain, retires every backend.
    async fn stop(self, running: HashMap<RouteKey, Running>, mut backends: JoinSet<()>) {
        self.ready.store(false, Ordering::Relaxed);
        for server in self.servers {
            let _ = server.await;
        }
        for r in running.values() {
            let _ = r.retire.send(true);
        }
        while backends.join_next().await.is_some() {}
        info!("activator stopped");
    }
}

fn local_timing(args: &ActivatorArgs) -> LocalTiming {
    LocalTiming {
        probe_interval: args.probe_interval,
        probe_timeout: args.connect_timeout,
        stop_grace: args.stop_grace_period,
    }
}

/// [`run`] with `--local` on listeners already bound (tests bind port 0).
pub async fn serve(
    args: ActivatorArgs,
    dir: PathBuf,
    proxy_listener: impl Into<ProxyListeners>,
    admin_listener: TcpListener,
    shutdown: Signal,
) {
    // `/readyz` answers 503 until the directory's objects are routed.
    let serving = start_servers(&args, proxy_listener.into(), admin_listener, &shutdown, false);
    let backends = Backends {
        timing: local_timing(&args),
        cluster: None,
    };
    let mut supervisors = JoinSet::new();
    let mut running = HashMap::new();
    let (initial, mut last_problems, bodies) = load_local_with_bodies(&dir);
    serving.proxy.bodies().replace(bodies);
    report_problems(&last_problems);
    info!(dir = %dir.display(), routes = initial.len(), "HTTPScaledObjects and InterceptorRoutes loaded");
    let mut last = initial.clone();
    apply(
        &serving.proxy,
        &mut running,
        initial,
        &serving.metrics,
        &backends,
        &mut supervisors,
    );
    serving.ready.store(true, Ordering::Relaxed);
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(LOCAL_POLL_INTERVAL) => {}
        }
        let (desired, problems, bodies) = load_local_with_bodies(&dir);
        serving.proxy.bodies().replace(bodies);
        if problems != last_problems {
            report_problems(&problems);
            last_problems = problems;
        }
        if desired != last {
            last = desired.clone();
            apply(
                &serving.proxy,
                &mut running,
                desired,
                &serving.metrics,
                &backends,
                &mut supervisors,
            );
        }
        while supervisors.try_join_next().is_some() {}
    }
    serving.stop(running, supervisors).await;
}

/// [`run`] in a cluster on listeners already bound: HTTPScaledObjects watched (all namespaces
/// or `--namespace`) into the route table; `/readyz` answers 503 until the first list is in.
pub async fn serve_cluster(
    args: ActivatorArgs,
    client: kube::Client,
    proxy_listener: impl Into<ProxyListeners>,
    admin_listener: TcpListener,
    shutdown: Signal,
) {
    let serving = start_servers(&args, proxy_listener.into(), admin_listener, &shutdown, false);
    let context = Arc::new(cluster::ClusterContext::new(
        client.clone(),
        cluster::wake_recheck(args.hold_timeout),
        serving.proxy.bodies().clone(),
    ));
    let backends = Backends {
        timing: local_timing(&args),
        cluster: Some(context),
    };
    let mut tasks = JoinSet::new();
    let mut running = HashMap::new();
    let (objects_tx, mut objects) = watch::channel(cluster::Listed::default());
    let watch = tokio::spawn(cluster::watch_objects(
        client,
        args.namespace.clone(),
        objects_tx,
        shutdown.clone(),
    ));
    let mut last: Option<Vec<Desired>> = None;
    let mut last_problems: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            changed = objects.changed() => if changed.is_err() {
                break;
            },
        }
        // Computed under the borrow (no await): a burst of events coalesces into one rebuild.
        let Some((desired, problems)) = cluster::desired_from_objects(&objects.borrow_and_update()) else {
            continue;
        };
        if problems != last_problems {
            report_problems(&problems);
            last_problems = problems;
        }
        if last.as_ref() != Some(&desired) {
            if last.is_none() {
                info!(
                    routes = desired.len(),
                    "HTTPScaledObjects and InterceptorRoutes listed"
                );
            }
            last = Some(desired.clone());
            apply(
                &serving.proxy,
                &mut running,
                desired,
                &serving.metrics,
                &backends,
                &mut tasks,
            );
        }
        serving.ready.store(true, Ordering::Relaxed);
        while tasks.try_join_next().is_some() {}
    }
    let _ = watch.await;
    serving.stop(running, tasks).await;
}
