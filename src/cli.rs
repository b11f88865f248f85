//! Command line: one binary, one subcommand per component; every flag also reads an `EBB_*` variable.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    net::{Limits, parse_duration},
    telemetry::LogFormat,
};

/// ebb: KEDA-compatible event-driven autoscaling.
#[derive(Debug, Parser)]
#[command(
    name = "ebb",
    version,
    about = "Event-driven autoscaling for Kubernetes, compatible with KEDA's keda.sh/v1alpha1 API"
)]
pub struct Cli {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve external.metrics.k8s.io/v1beta1 (the API the HPA reads).
    MetricsServer(Box<MetricsServerArgs>),
    /// Run the ScaledObject operator: HPAs, status, scale to and from zero.
    Operator(Box<OperatorArgs>),
    /// Run the metrics server and the operator in one process, sharing scalers, cache and
    /// fallback counters (no network hop between a metric read and its scaler).
    Run(Box<RunArgs>),
    /// Print, as YAML, the HPAs KEDA would create for the ScaledObjects in files (no cluster needed).
    Render(RenderArgs),
    /// Check ScaledObjects and (Cluster)TriggerAuthentications in files as KEDA's webhook would.
    Check(CheckArgs),
    /// Print the CustomResourceDefinitions (keda.sh/v1alpha1) generated from ebb's types.
    Crd,
    /// Write a CA and serving certificate for a manual install and print the caBundle.
    Certs(CertsArgs),
    /// Serve the admission webhooks for ScaledObjects and (Cluster)TriggerAuthentications.
    Webhooks(WebhooksArgs),
    /// HTTP proxy that holds requests while a target is at zero and wakes it (HTTPScaledObjects).
    Activator(Box<ActivatorArgs>),
    /// Replay a metric trace through KEDA's and the HPA's decisions (no cluster needed).
    Simulate(Box<SimulateArgs>),
    /// Why a ScaledObject has its replica count now: triggers, HPA, target, pause, cooldown.
    Explain(Box<ExplainArgs>),
}

/// Flags of `ebb activator` (defaults in docs/activator.md).
#[derive(Debug, Args, Clone)]
pub struct ActivatorArgs {
    /// Read HTTPScaledObjects from this directory and run each target as a local process
    /// (annotation `activator.ebb/local-command`, port `scaleTargetRef.port` on loopback).
    #[arg(long, env = "EBB_LOCAL")]
    pub local: Option<PathBuf>,
    /// kubeconfig (default: in-cluster config, then ~/.kube/config); not used with --local.
    #[arg(long, env = "EBB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Route only this namespace's HTTPScaledObjects (the add-on's KEDA_HTTP_WATCH_NAMESPACE; default: all).
    #[arg(long, alias = "watch-namespace", env = "EBB_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Port the proxy listens on (the add-on's interceptor uses 8080).
    #[arg(long, env = "EBB_PROXY_PORT", default_value_t = 8080)]
    pub proxy_port: u16,
    /// Address the proxy binds to.
    #[arg(long, env = "EBB_PROXY_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub proxy_bind_address: IpAddr,
    /// HTTPS port of the proxy (the add-on's interceptor uses 8443; off unless set): the same
    /// routes, deadlines and caps as the plain port, ALPN h2 and http/1.1,
    /// `X-Forwarded-Proto: https`. Needs --tls-cert-file and --tls-private-key-file.
    #[arg(long, env = "EBB_TLS_PORT", requires_all = ["tls_cert_file", "tls_private_key_file"])]
    pub tls_port: Option<u16>,
    /// Serving certificate of the HTTPS port (PEM, leaf first); re-read when it changes.
    #[arg(long, env = "EBB_TLS_CERT_FILE", requires = "tls_port")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key of the HTTPS port (PEM); re-read when it changes.
    #[arg(long, env = "EBB_TLS_PRIVATE_KEY_FILE", requires = "tls_port")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Plain-HTTP admin port: /queue, /routes, /metrics, /livez, /readyz.
    #[arg(long, env = "EBB_METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address the admin port binds to.
    #[arg(long, env = "EBB_METRICS_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub metrics_bind_address: IpAddr,
    /// How long a request is held for its target to become ready before a 504 (`timeouts.conditionWait` overrides per object; 0 holds until the client leaves).
    #[arg(long, env = "EBB_HOLD_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub hold_timeout: Duration,
    /// Requests held at most per route; past it a 503 with Retry-After.
    #[arg(long, env = "EBB_MAX_HELD_PER_ROUTE", default_value_t = 1000)]
    pub max_held_per_route: usize,
    /// Requests held at most over every route.
    #[arg(long, env = "EBB_MAX_HELD", default_value_t = 10000)]
    pub max_held: usize,
    /// How long the upstream may take to send response headers before a 504 (`timeouts.responseHeader` overrides; 0 disables).
    #[arg(long, env = "EBB_RESPONSE_HEADER_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub response_header_timeout: Duration,
    /// Deadline of a whole request, hold and response body included, before a 504 or a cut body (the add-on's `KEDA_HTTP_REQUEST_TIMEOUT`; an InterceptorRoute's `timeouts.request` overrides; 0 disables).
    #[arg(long, env = "EBB_REQUEST_TIMEOUT", default_value = "0s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Longest pause between two pieces of a request body before the request fails (0 disables).
    #[arg(long, env = "EBB_REQUEST_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub request_body_timeout: Duration,
    /// One dial attempt to an upstream at most.
    #[arg(long, env = "EBB_CONNECT_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Pause between dials refused by an upstream that is still starting.
    #[arg(long, env = "EBB_DIAL_RETRY_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub dial_retry_interval: Duration,
    /// How often a starting local target's port is tried.
    #[arg(long, env = "EBB_PROBE_INTERVAL", default_value = "2ms", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// How long a stopped local target has after SIGTERM before SIGKILL.
    #[arg(long, env = "EBB_STOP_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub stop_grace_period: Duration,
    /// Connection deadlines and caps of the proxy and admin ports.
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// Flags of `ebb operator`.
#[derive(Debug, Args, Clone)]
pub struct OperatorArgs {
    /// kubeconfig (default: in-cluster config, then ~/.kube/config).
    #[arg(long, env = "EBB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Leader election and certificate rotation.
    #[command(flatten)]
    pub leader: LeaderArgs,
    /// Plain-HTTP admin port: /metrics, /livez, /readyz.
    #[arg(long, env = "EBB_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,
    /// Address the admin port binds to.
    #[arg(long, env = "EBB_METRICS_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub metrics_bind_address: IpAddr,
    /// Watch only this namespace (default: KEDA's WATCH_NAMESPACE, else all).
    #[arg(long, env = "EBB_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Scaler settings.
    #[command(flatten)]
    pub scalers: ScalerArgs,
}

/// Flags of `ebb run`: every `ebb metrics-server` flag, plus the operator's own.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The metrics server's flags (kubeconfig, ports, namespace and timeout serve both halves).
    #[command(flatten)]
    pub server: MetricsServerArgs,
    /// Leader election and certificate rotation.
    #[command(flatten)]
    pub leader: LeaderArgs,
}

/// What only the operator's leader does, shared by `ebb operator` and `ebb run`.
#[derive(Debug, Args, Clone, Default)]
pub struct LeaderArgs {
    /// `scalerAddress` written into the ScaledObjects generated from HTTPScaledObjects: the
    /// activator's admin Service, whose EndpointSlices the metrics server reads replicas from.
    #[arg(
        long,
        env = "EBB_HTTP_SCALER_ADDRESS",
        default_value = "ebb-activator-admin.ebb:9090"
    )]
    pub http_scaler_address: String,
    /// Only the holder of the `ebb-operator` Lease writes; `--leader-elect=false` disables it.
    #[arg(
        long,
        env = "EBB_LEADER_ELECT",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub leader_elect: bool,
    /// The leader keeps Secret `ebb-certs` valid and injects its CA into the APIService and the
    /// webhook configuration, as KEDA's `--enable-cert-rotation`.
    #[arg(
        long,
        env = "EBB_ENABLE_CERT_ROTATION",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub enable_cert_rotation: bool,
    /// Who this replica is (the Deployment's downward API).
    #[command(flatten)]
    pub pod: PodArgs,
}

/// What the Deployment tells a replica about itself through its environment (the downward API);
/// hidden flags, so every variable ebb reads is read here, by clap.
#[derive(Debug, Args, Clone, Default)]
pub struct PodArgs {
    /// The pod's name: the leader-election identity and the events' reporting instance.
    #[arg(long = "pod-name", env = "POD_NAME", hide = true)]
    pub name: Option<String>,
    /// The namespace ebb runs in: the Lease's and the certificate Secret's (default `ebb`).
    #[arg(long = "pod-namespace", env = "POD_NAMESPACE", hide = true)]
    pub namespace: Option<String>,
    /// The host name, the identity when `POD_NAME` is not set.
    #[arg(long = "pod-hostname", env = "HOSTNAME", hide = true)]
    pub hostname: Option<String>,
}

impl PodArgs {
    /// The namespace ebb runs in: `POD_NAMESPACE`, else `ebb`.
    pub fn namespace(&self) -> String {
        self.namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ebb".to_string())
    }
}

/// Settings of the scalers a process builds.
#[derive(Debug, Args, Clone, Default)]
pub struct ScalerArgs {
    /// Default timeout of scaler HTTP calls in milliseconds [default: 3000, or KEDA's
    /// KEDA_HTTP_DEFAULT_TIMEOUT when set].
    #[arg(long, env = "EBB_HTTP_DEFAULT_TIMEOUT")]
    pub http_default_timeout: Option<u64>,
    /// KEDA's variable for the same timeout, used when neither the flag nor
    /// EBB_HTTP_DEFAULT_TIMEOUT is given.
    #[arg(long, env = "KEDA_HTTP_DEFAULT_TIMEOUT", hide = true)]
    pub keda_http_default_timeout: Option<String>,
    /// Where ClusterTriggerAuthentications' Secrets and ConfigMaps live.
    #[command(flatten)]
    pub cluster_objects: ClusterObjectsArgs,
    /// Where the `external-push` trigger finds the activator replicas.
    #[command(flatten)]
    pub activator: ActivatorDiscoveryArgs,
}

/// Where the `external-push` trigger finds the activator replicas whose `/queue` it reads.
#[derive(Debug, Args, Clone, Default)]
pub struct ActivatorDiscoveryArgs {
    /// Admin URLs of the activator replicas the `external-push` trigger reads (`/queue`);
    /// comma-separated or repeated. Set, no replica is discovered (what `--local` uses).
    #[arg(
        long = "activator-admin",
        env = "EBB_ACTIVATOR_ADMIN",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub admin: Vec<String>,
    /// NAMESPACE/NAME of the activator's admin Service, whose EndpointSlices list the replicas
    /// [default: the Service the trigger's `scalerAddress` names].
    #[arg(long, env = "EBB_ACTIVATOR_SERVICE", value_name = "NAMESPACE/NAME")]
    pub service: Option<String>,
}

/// Where ClusterTriggerAuthentications' Secrets and ConfigMaps live (KEDA's variable, read
/// here like every other setting rather than behind clap's back).
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterObjectsArgs {
    /// Namespace of the Secrets and ConfigMaps ClusterTriggerAuthentications reference
    /// [default: the namespace ebb runs in, else `ebb`].
    #[arg(long, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    pub cluster_object_namespace: Option<String>,
}

impl ScalerArgs {
    /// The scaler HTTP timeout: the flag, else KEDA's variable, else 3 s; KEDA turns a
    /// non-positive value into 300 ms.
    pub fn http_timeout(&self) -> Duration {
        let keda = self
            .keda_http_default_timeout
            .as_deref()
            .and_then(|v| v.trim().parse::<i64>().ok());
        let ms = match (self.http_default_timeout, keda) {
            (Some(flag), _) => i64::try_from(flag).unwrap_or(i64::MAX),
            (None, Some(keda)) => keda,
            (None, None) => 3000,
        };
        Duration::from_millis(u64::try_from(ms).ok().filter(|t| *t > 0).unwrap_or(300))
    }
}

/// Flags of `ebb render`.
#[derive(Debug, Args, Clone)]
pub struct RenderArgs {
    /// Manifest files or directories (YAML, multi-document, or JSON).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Value of the `app.kubernetes.io/version` label on the rendered HPAs.
    #[arg(long, env = "EBB_HPA_VERSION_LABEL", default_value = env!("CARGO_PKG_VERSION"))]
    pub version_label: String,
    /// Where ClusterTriggerAuthentications' Secrets and ConfigMaps live.
    #[command(flatten)]
    pub cluster_objects: ClusterObjectsArgs,
    /// Where the `external-push` trigger finds the activator replicas.
    #[command(flatten)]
    pub activator: ActivatorDiscoveryArgs,
}

/// Flags of `ebb check`.
#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Manifest files or directories (YAML, multi-document, or JSON).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Accept files that hold no ScaledObject or (Cluster)TriggerAuthentication (only other
    /// kinds, e.g. a Deployment or a Secret); by default such a file is an error.
    #[arg(long)]
    pub allow_other_kinds: bool,
    /// Where ClusterTriggerAuthentications' Secrets and ConfigMaps live.
    #[command(flatten)]
    pub cluster_objects: ClusterObjectsArgs,
    /// Where the `external-push` trigger finds the activator replicas.
    #[command(flatten)]
    pub activator: ActivatorDiscoveryArgs,
}

/// Flags of `ebb certs`.
#[derive(Debug, Args, Clone)]
pub struct CertsArgs {
    /// Directory that receives ca.crt, ca.key, tls.crt and tls.key.
    #[arg(long, env = "EBB_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// Namespace ebb's Services live in.
    #[arg(long, env = "EBB_NAMESPACE", default_value = "ebb")]
    pub namespace: String,
    /// Cluster DNS domain used in the certificate's names.
    #[arg(long, env = "EBB_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// Flags of `ebb webhooks`.
#[derive(Debug, Args, Clone)]
pub struct WebhooksArgs {
    /// HTTPS port of the admission webhooks.
    #[arg(long, env = "EBB_WEBHOOKS_PORT", default_value_t = 9443)]
    pub port: u16,
    /// Serving certificate (PEM); re-read when it changes.
    #[arg(long, env = "EBB_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM); re-read when it changes.
    #[arg(long, env = "EBB_TLS_PRIVATE_KEY_FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where a self-signed pair is written when no certificate is given.
    #[arg(long, env = "EBB_CERT_DIR", default_value = ".ebb/webhook-certs")]
    pub cert_dir: PathBuf,
    /// Plain-HTTP admin port: /metrics, /livez, /readyz.
    #[arg(long, env = "EBB_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,
    /// kubeconfig for the cluster lookups (default: in-cluster config, then ~/.kube/config).
    #[arg(long, env = "EBB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run without a cluster: other ScaledObjects, HPAs, workloads and LimitRanges come from YAML in DIR.
    #[arg(long, env = "EBB_LOCAL", value_name = "DIR")]
    pub local: Option<PathBuf>,
}

/// Logging flags.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "EBB_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter: a level (trace, debug, info, warn, error, off) or TARGET=LEVEL directives
    /// separated by commas, e.g. `info` or `ebb=debug,info`.
    #[arg(
        long,
        global = true,
        env = "EBB_LOG_LEVEL",
        default_value = "info",
        value_parser = crate::telemetry::parse_filter
    )]
    pub log_level: String,
}

/// Flags of `ebb metrics-server`, named as kube-apiserver names them.
#[derive(Debug, Args, Clone)]
pub struct MetricsServerArgs {
    /// HTTPS port of the external metrics API.
    #[arg(long, env = "EBB_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,
    /// Address the HTTPS port binds to (default 0.0.0.0; 127.0.0.1 with `--local`).
    #[arg(long, env = "EBB_BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// Serving certificate (PEM); re-read when it changes.
    #[arg(long, env = "EBB_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM); re-read when it changes.
    #[arg(long, env = "EBB_TLS_PRIVATE_KEY_FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where a self-signed pair is written when no certificate is given.
    #[arg(long, env = "EBB_CERT_DIR", default_value = ".ebb/certs")]
    pub cert_dir: PathBuf,
    /// CA bundle that verifies client certificates (user = CN, groups = O).
    #[arg(long, env = "EBB_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CA bundle that verifies the front proxy's client certificate before X-Remote-* headers are trusted.
    #[arg(long, env = "EBB_REQUESTHEADER_CLIENT_CA_FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed common names of the front proxy's certificate (empty: any signed by the CA).
    #[arg(long, env = "EBB_REQUESTHEADER_ALLOWED_NAMES", value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers carrying the user name.
    #[arg(
        long,
        env = "EBB_REQUESTHEADER_USERNAME_HEADERS",
        value_delimiter = ',',
        default_value = "X-Remote-User"
    )]
    pub requestheader_username_headers: Vec<String>,
    /// Headers carrying the user's UID.
    #[arg(
        long,
        env = "EBB_REQUESTHEADER_UID_HEADERS",
        value_delimiter = ',',
        default_value = "X-Remote-Uid"
    )]
    pub requestheader_uid_headers: Vec<String>,
    /// Headers carrying the groups.
    #[arg(
        long,
        env = "EBB_REQUESTHEADER_GROUP_HEADERS",
        value_delimiter = ',',
        default_value = "X-Remote-Group"
    )]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra user attributes.
    #[arg(
        long,
        env = "EBB_REQUESTHEADER_EXTRA_HEADERS_PREFIX",
        value_delimiter = ',',
        default_value = "X-Remote-Extra-"
    )]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// kubeconfig for TokenReview (default: in-cluster config).
    #[arg(long, env = "EBB_AUTHENTICATION_KUBECONFIG")]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// kubeconfig for SubjectAccessReview (default: in-cluster config).
    #[arg(long, env = "EBB_AUTHORIZATION_KUBECONFIG")]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// kubeconfig for watching ScaledObjects (default: in-cluster config, then ~/.kube/config).
    #[arg(long, env = "EBB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Paths served without authorization.
    #[arg(
        long,
        env = "EBB_AUTHORIZATION_ALWAYS_ALLOW_PATHS",
        value_delimiter = ',',
        default_value = "/healthz,/readyz,/livez"
    )]
    pub authorization_always_allow_paths: Vec<String>,
    /// Watch only this namespace (default: KEDA's WATCH_NAMESPACE, else all).
    #[arg(long, env = "EBB_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Run without a cluster: ScaledObjects from YAML files in DIR (default: the shipped examples).
    #[arg(long, env = "EBB_LOCAL", num_args = 0..=1, value_name = "DIR")]
    pub local: Option<Option<PathBuf>>,
    /// Where `--local` keeps its CA, certificates, kubeconfig and example copies.
    #[arg(long, env = "EBB_STATE_DIR", default_value = ".ebb")]
    pub state_dir: PathBuf,
    /// Plain-HTTP admin port: /metrics, /livez, /readyz.
    #[arg(long, env = "EBB_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,
    /// Address the admin port binds to (default 0.0.0.0; 127.0.0.1 with `--local`).
    #[arg(long, env = "EBB_METRICS_BIND_ADDRESS")]
    pub metrics_bind_address: Option<IpAddr>,
    /// Scaler settings.
    #[command(flatten)]
    pub scalers: ScalerArgs,
    /// How often certificate and CA files are checked for changes, in milliseconds.
    #[arg(long, env = "EBB_CERT_RELOAD_INTERVAL", default_value_t = 2000)]
    pub cert_reload_interval: u64,
    /// How often `--local` files are checked for changes, in milliseconds.
    #[arg(long, env = "EBB_LOCAL_POLL_INTERVAL", default_value_t = 1000)]
    pub local_poll_interval: u64,
    /// Connection deadlines and caps of the HTTPS and admin ports.
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// Deadlines and caps for client connections (Go durations such as `10s`; `0` disables a timeout).
#[derive(Debug, Args, Clone)]
pub struct ConnectionArgs {
    /// TCP accept to finished TLS handshake, including the check for plain HTTP.
    #[arg(long, env = "EBB_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Handshake to the first complete request, and each HTTP/1 request's headers (Go's ReadHeaderTimeout).
    #[arg(long, env = "EBB_READ_HEADER_TIMEOUT", default_value = "32s", value_parser = parse_duration)]
    pub read_header_timeout: Duration,
    /// A connection without a request in flight is closed after this long (Go's IdleTimeout).
    #[arg(long, env = "EBB_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// HTTP/2 ping interval on a quiet connection.
    #[arg(long, env = "EBB_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    #[arg(long, env = "EBB_HTTP2_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection (kube-apiserver's flag and default).
    #[arg(long, env = "EBB_HTTP2_MAX_STREAMS_PER_CONNECTION", default_value_t = 250)]
    pub http2_max_streams_per_connection: u32,
    /// Open connections per port at most (default 1024, less if the open-file limit leaves less room); from 90 % on, connections without an authenticated request are closed first.
    #[arg(long, env = "EBB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "EBB_SHUTDOWN_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_drain_timeout: Duration,
    /// Client-caused warnings (refused requests and certificates, failed accepts) are logged once, then summed up once per interval.
    #[arg(long, env = "EBB_LOG_AGGREGATION_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub log_aggregation_interval: Duration,
}

impl ConnectionArgs {
    /// The limits these flags describe.
    pub fn limits(&self) -> Limits {
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        Limits {
            handshake_timeout: some(self.tls_handshake_timeout),
            read_header_timeout: some(self.read_header_timeout),
            idle_timeout: some(self.idle_timeout),
            http2_keepalive_interval: some(self.http2_keepalive_interval),
            http2_keepalive_timeout: self.http2_keepalive_timeout,
            http2_max_streams: self.http2_max_streams_per_connection,
            max_connections: self
                .max_connections
                .unwrap_or_else(crate::net::default_max_connections),
            drain_timeout: self.shutdown_drain_timeout,
            log_interval: self.log_aggregation_interval,
        }
    }
}

/// The namespace to watch: `--watch-namespace` (or `EBB_WATCH_NAMESPACE`), else KEDA's
/// `WATCH_NAMESPACE`; empty means every namespace, as in KEDA.
pub fn watch_namespace(flag: Option<&str>) -> Option<String> {
    watch_namespace_from(flag, |name| std::env::var(name).ok())
}

/// [`watch_namespace`] with the environment given as a lookup (tests must not share process env).
pub fn watch_namespace_from(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| env("WATCH_NAMESPACE"))
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn keda_watch_namespace_is_honoured_after_ebbs_own() {
        let keda = |name: &str| (name == "WATCH_NAMESPACE").then(|| "team-a".to_string());
        let none = |_: &str| None;
        assert_eq!(watch_namespace_from(None, keda), Some("team-a".into()));
        assert_eq!(watch_namespace_from(Some("team-b"), keda), Some("team-b".into()));
        // An explicit empty value means all namespaces, even with WATCH_NAMESPACE set.
        assert_eq!(watch_namespace_from(Some(""), keda), None);
        assert_eq!(watch_namespace_from(None, none), None);
        let empty = |_: &str| Some(String::new());
        assert_eq!(watch_namespace_from(None, empty), None);
    }

    #[test]
    fn keda_json_log_format_is_offered() {
        let cli = Cli::try_parse_from(["ebb", "--log-format", "keda-json", "crd"]).expect("parses");
        assert_eq!(cli.log.log_format, LogFormat::KedaJson);
    }

    #[test]
    fn operator_leader_elect_flag() {
        let cli = Cli::try_parse_from(["ebb", "operator", "--leader-elect"]).expect("parses");
        let Command::Operator(a) = cli.command else {
            panic!("expected operator");
        };
        assert!(a.leader.leader_elect);
        let cli = Cli::try_parse_from(["ebb", "operator", "--leader-elect=false"]).expect("parses");
        let Command::Operator(a) = cli.command else {
            panic!("expected operator");
        };
        assert!(!a.leader.leader_elect);
    }

    #[test]
    fn local_flag_takes_an_optional_dir() {
        let cli = Cli::try_parse_from(["ebb", "metrics-server", "--local"]).expect("parses");
        let Command::MetricsServer(a) = cli.command else {
            panic!("expected metrics-server");
        };
        assert_eq!(a.local, Some(None));
        let cli = Cli::try_parse_from([
            "ebb",
            "metrics-server",
            "--local",
            "x",
            "--requestheader-allowed-names",
            "a,b",
        ])
        .expect("parses");
        let Command::MetricsServer(a) = cli.command else {
            panic!("expected metrics-server");
        };
        assert_eq!(a.local, Some(Some(PathBuf::from("x"))));
        assert_eq!(a.requestheader_allowed_names, vec!["a", "b"]);
    }

    #[test]
    fn connection_flag_defaults_are_the_documented_limits() {
        let cli = Cli::try_parse_from(["ebb", "metrics-server"]).expect("parses");
        let Command::MetricsServer(a) = cli.command else {
            panic!("expected metrics-server");
        };
        let limits = a.connections.limits();
        assert_eq!(
            Limits {
                max_connections: crate::net::default_max_connections(),
                ..Limits::default()
            },
            limits
        );
        let cli = Cli::try_parse_from([
            "ebb",
            "metrics-server",
            "--read-header-timeout",
            "250ms",
            "--idle-timeout",
            "0",
        ])
        .expect("parses");
        let Command::MetricsServer(a) = cli.command else {
            panic!("expected metrics-server");
        };
        let limits = a.connections.limits();
        assert_eq!(limits.read_header_timeout, Some(Duration::from_millis(250)));
        assert_eq!(limits.idle_timeout, None);
        assert!(Cli::try_parse_from(["ebb", "metrics-server", "--idle-timeout", "90"]).is_err());
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// A table for people, then a summary.
    #[default]
    Table,
    /// One JSON object per line per step, then a summary object.
    Json,
}

/// Flags of `ebb simulate`.
#[derive(Debug, Args, Clone)]
pub struct SimulateArgs {
    /// The manifest holding the ScaledObject (and any TriggerAuthentications it uses).
    #[arg(short = 'f', long = "filename", required = true)]
    pub file: PathBuf,
    /// The metric trace (CSV: `time`, one column per trigger, optional `ready` and `error`).
    #[arg(long, required_unless_present = "prometheus", conflicts_with = "prometheus")]
    pub trace: Option<PathBuf>,
    /// Which object of the file, when it holds several.
    #[arg(long)]
    pub name: Option<String>,
    /// Replicas at the start (default: minReplicaCount).
    #[arg(long)]
    pub replicas: Option<i32>,
    /// The HPA controller's sync period (`--horizontal-pod-autoscaler-sync-period`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub sync_period: std::time::Duration,
    /// Time a new pod takes to become ready.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub startup: std::time::Duration,
    /// The controller's tolerance (`--horizontal-pod-autoscaler-tolerance`).
    #[arg(long, default_value_t = 0.1)]
    pub tolerance: f64,
    /// The default scale-down stabilization (`--horizontal-pod-autoscaler-downscale-stabilization`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub downscale_stabilization: std::time::Duration,
    /// Write a chart of metrics, targets and replicas over time (SVG).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Fetch each prometheus trigger's own query from this Prometheus instead of a trace file.
    #[arg(long)]
    pub prometheus: Option<String>,
    /// Range start for --prometheus (RFC 3339 or Unix seconds).
    #[arg(long, requires = "prometheus")]
    pub start: Option<String>,
    /// Range end for --prometheus (RFC 3339 or Unix seconds).
    #[arg(long, requires = "prometheus")]
    pub end: Option<String>,
    /// Namespace of the Secrets and ConfigMaps ClusterTriggerAuthentications in the file
    /// reference [default: the namespace ebb runs in, else `ebb`].
    #[arg(long, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    pub cluster_object_namespace: Option<String>,
    /// Range step for --prometheus.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub step: std::time::Duration,
    /// ScaledJob: Jobs already running at the start.
    #[arg(long, default_value_t = 0)]
    pub running: u32,
    /// ScaledJob: Jobs pending at the start (they start running after --startup).
    #[arg(long, default_value_t = 0)]
    pub pending: u32,
    /// ScaledJob: how long each Job runs once started (seconds or a duration such as 90s);
    /// Jobs never finish when not given.
    #[arg(long, value_parser = parse_job_duration)]
    pub job_duration: Option<std::time::Duration>,
}

/// Parses `--job-duration`: seconds, or a Go duration (`90s`, `5m`).
pub fn parse_job_duration(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(std::time::Duration::from_secs_f64(s)),
        Ok(_) => Err(format!("invalid job duration {text:?}")),
        Err(_) => crate::net::parse_duration(text),
    }
}

/// The metrics server's admin Service `ebb explain` reaches through the API server's proxy.
pub const DEFAULT_METRICS_SERVICE: &str = "ebb/ebb-metrics-apiserver:metrics";

/// Flags of `ebb explain`.
#[derive(Debug, Args, Clone)]
pub struct ExplainArgs {
    /// The ScaledObject's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The ScaledObject's name.
    pub name: String,
    /// Ask this admin port (`http://HOST:PORT` of a metrics server) instead of the cluster.
    #[arg(long, conflicts_with_all = ["local", "kubeconfig"])]
    pub admin: Option<String>,
    /// Ask the admin port of `ebb metrics-server --local` on this machine (`--admin http://127.0.0.1:8080`).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub local: bool,
    /// kubeconfig (default: as kubectl finds it: `KUBECONFIG`, `~/.kube/config`, in-cluster).
    #[arg(long, env = "EBB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The metrics server's admin Service, `NAMESPACE/NAME:PORT`, read through the API server's
    /// service proxy.
    #[arg(long, default_value = DEFAULT_METRICS_SERVICE)]
    pub metrics_service: String,
    /// How long each request may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format (`table`: the verdict, a table per trigger, then the rest; `json`: the view).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}
