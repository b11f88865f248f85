//! Scalers: one per trigger type, built from trigger metadata, asked for metric values.
//!
//! The shape follows KEDA's `Scaler` interface: a scaler declares the metric specs it
//! contributes to the HPA and answers `get_metrics_and_activity` for one of its metric names.

pub mod aws;
pub mod cpu_memory;
pub mod cron;
pub mod cron_schedule;
pub mod http_auth;
pub mod http_client;
pub mod http_push;
pub mod kubernetes_workload;
pub mod metrics_api;
pub mod params;
pub mod prometheus;
pub mod registry;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use futures::future::BoxFuture;

use crate::crd::{scaled_object::MetricTargetType, trigger_authentication::AuthPodIdentity};

/// Everything a scaler may be built from: the trigger and the ScaledObject around it.
#[derive(Clone, Debug, Default)]
pub struct ScalerConfig {
    /// Namespace of the ScaledObject.
    pub namespace: String,
    /// Name of the ScaledObject.
    pub scaled_object: String,
    /// Position of the trigger in `spec.triggers` (the `sN-` prefix).
    pub trigger_index: usize,
    /// Trigger `type`, e.g. `cron`.
    pub trigger_type: String,
    /// Trigger `name`, empty when unnamed.
    pub trigger_name: String,
    /// Trigger `metadata`.
    pub metadata: BTreeMap<String, String>,
    /// Parameters resolved from a TriggerAuthentication.
    pub auth_params: BTreeMap<String, String>,
    /// Environment of the scale target's container (for `*FromEnv` keys).
    pub resolved_env: BTreeMap<String, String>,
    /// Trigger `metricType`; AverageValue when absent.
    pub metric_type: MetricTargetType,
    /// True when the trigger wrote `metricType` (cpu/memory require it).
    pub metric_type_explicit: bool,
    /// True when `advanced.scalingModifiers` is in use (relaxes some targets).
    pub as_metric_source: bool,
    /// Default timeout for outbound calls (KEDA_HTTP_DEFAULT_TIMEOUT).
    pub global_http_timeout: Duration,
    /// `podIdentity` of the referenced (Cluster)TriggerAuthentication.
    pub pod_identity: Option<AuthPodIdentity>,
    /// Role of the scale target's service account (`eks.amazonaws.com/role-arn`), resolved
    /// when `podIdentity.identityOwner` is `workload`.
    pub workload_role_arn: Option<String>,
}

impl ScalerConfig {
    /// The span of one call this trigger makes to its upstream ([`upstream_span`]).
    pub fn upstream_span(&self, host: &str, call: &str) -> tracing::Span {
        upstream_span(
            self.trigger_index,
            &self.trigger_name,
            &self.trigger_type,
            host,
            call,
        )
    }
}

/// The span of one call a trigger makes to its upstream (an HTTP endpoint, an AWS API), so
/// every log line under it names the trigger (`trigger` index and `trigger_name`), its
/// `scaler` type and the `host` called; `call` says which request (`GET`, `GetQueueAttributes`).
pub fn upstream_span(
    trigger: usize,
    trigger_name: &str,
    scaler: &str,
    host: &str,
    call: &str,
) -> tracing::Span {
    tracing::info_span!(
        "upstream",
        trigger,
        trigger_name,
        scaler,
        host = %span_host(host),
        call
    )
}

/// `host[:port]` of an endpoint written as a URL (`http://127.0.0.1:4566/`); other text as is
/// (`sqs.eu-west-1.amazonaws.com`).
pub(crate) fn span_host(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) if url.has_host() => authority(&url),
        _ => endpoint.to_string(),
    }
}

/// `host[:port]` of `url` (the port only when the URL names one other than its scheme's).
pub(crate) fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Shared clients and indexes every scaler may use; cheap to clone.
#[derive(Clone, Default)]
pub struct ScalerContext {
    /// Cluster access, absent with `--local`.
    pub kube: Option<kube::Client>,
    /// Pod counts for `kubernetes-workload`, from a watch cache.
    pub pods: Option<kubernetes_workload::PodIndex>,
    /// Shared AWS configuration and credential caches.
    pub aws: aws::AwsShared,
    /// The clock time-based scalers (cron) read; the system clock when `None`. Tests that
    /// decide with an injected clock hand the same one to the scalers.
    pub clock: Option<cron::Clock>,
    /// KEDA's metrics, fed by the scalers' outbound HTTP requests.
    pub metrics: Option<Arc<crate::keda_metrics::KedaMetrics>>,
    /// The HTTP add-on's objects and activator replicas, for `external-push`.
    pub http: http_push::HttpShared,
}

impl fmt::Debug for ScalerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalerContext")
            .field("kube", &self.kube.is_some())
            .field("pods", &self.pods.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// How the HPA should compare the metric to its target.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricTarget {
    /// `AverageValue` or `Value` (or `Utilization` for resource metrics).
    pub kind: MetricTargetType,
    /// Target as a number; rendered as a Quantity by the HPA builder.
    pub value: f64,
    /// True when KEDA renders the target as a plain integer quantity (sqs, cron).
    pub integer: bool,
}

/// One metric a scaler contributes to the HPA.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricSpec {
    /// An `External` metric served by ebb's external metrics API.
    External {
        /// Full metric name, `sN-...`, original case.
        name: String,
        /// The HPA target.
        target: MetricTarget,
    },
    /// A `Resource` / `ContainerResource` metric read by the HPA from metrics.k8s.io.
    Resource {
        /// `cpu` or `memory`.
        resource: String,
        /// Container for a `ContainerResource` metric.
        container: Option<String>,
        /// `Utilization` percentage or `AverageValue` quantity string.
        target: ResourceTarget,
    },
}

/// Target of a resource metric.
#[derive(Clone, Debug, PartialEq)]
pub enum ResourceTarget {
    /// `averageUtilization` percentage.
    Utilization(i32),
    /// `averageValue` quantity string, kept as written.
    AverageValue(String),
}

/// The answer of one scaler query.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsAndActivity {
    /// Values to report (usually one); the HPA sums them.
    pub values: Vec<f64>,
    /// True when the trigger is active (above its activation threshold).
    pub active: bool,
}

/// Why a scaler could not be built or could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScalerError {
    /// Trigger metadata is missing or malformed.
    #[error("{0}")]
    Config(String),
    /// The upstream system answered with something unusable or failed.
    #[error("{0}")]
    Upstream(String),
    /// The upstream call did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A call to a known upstream did not finish in time; `upstream` names it (`GET http://host/path`).
    #[error("{upstream}: timed out{}", if after.is_zero() { String::new() } else { format!(" after {after:?}") })]
    UpstreamTimeout {
        /// What was called, without credentials.
        upstream: String,
        /// The timeout that expired (zero when the call had none of its own).
        after: Duration,
    },
    /// A required parameter is absent from every source it may come from.
    #[error("missing required parameter {name:?} in [{}]", params::sources_label(sources))]
    MissingParameter {
        /// The parameter's first name.
        name: String,
        /// Where it was looked for, in order.
        sources: Vec<params::Source>,
    },
    /// The trigger type is one ebb has no scaler for (a KEDA scaler not ported yet, or a typo).
    #[error("{}", unknown_type_message(.0))]
    UnknownType(String),
}

/// Every trigger type KEDA's scaler builder knows (`pkg/scaling/scalers_builder.go`), so a
/// manifest naming one ebb lacks reads as "not supported yet" rather than as a typo.
pub const KEDA_TYPES: &[&str] = &[
    "activemq",
    "apache-kafka",
    "arangodb",
    "artemis-queue",
    "aws-cloudwatch",
    "aws-dynamodb",
    "aws-dynamodb-streams",
    "aws-kinesis-stream",
    "aws-sqs-queue",
    "azure-app-insights",
    "azure-blob",
    "azure-data-explorer",
    "azure-eventhub",
    "azure-log-analytics",
    "azure-monitor",
    "azure-pipelines",
    "azure-queue",
    "azure-servicebus",
    "beanstalkd",
    "cassandra",
    "couchdb",
    "cpu",
    "cron",
    "datadog",
    "dynatrace",
    "elasticsearch",
    "etcd",
    "external",
    "external-push",
    "gcp-cloudtasks",
    "gcp-pubsub",
    "gcp-stackdriver",
    "gcp-storage",
    "github-runner",
    "graphite",
    "huawei-cloudeye",
    "ibmmq",
    "influxdb",
    "kafka",
    "kubernetes-workload",
    "liiklus",
    "loki",
    "memory",
    "metrics-api",
    "mongodb",
    "mssql",
    "mysql",
    "nats-jetstream",
    "new-relic",
    "nsq",
    "openstack-metric",
    "openstack-swift",
    "postgresql",
    "predictkube",
    "prometheus",
    "pulsar",
    "rabbitmq",
    "redis",
    "redis-cluster",
    "redis-cluster-streams",
    "redis-sentinel",
    "redis-sentinel-streams",
    "redis-streams",
    "selenium-grid",
    "solace-event-queue",
    "solr",
    "splunk",
    "stan",
];

/// KEDA types ebb has no scaler for yet (docs/compatibility.md lists them).
pub fn unsupported_keda_types() -> impl Iterator<Item = &'static str> {
    KEDA_TYPES.iter().copied().filter(|t| !KNOWN_TYPES.contains(t))
}

/// The message for a trigger type ebb cannot build: "not supported yet" for a KEDA scaler,
/// "did you mean" for a near miss of any known type, the supported list otherwise.
pub fn unknown_type_message(ty: &str) -> String {
    let supported = KNOWN_TYPES.join(", ");
    if KEDA_TYPES.contains(&ty) {
        return format!("KEDA scaler `{ty}` is not supported by ebb yet (supported: {supported})");
    }
    // Trigger types are matched exactly by KEDA, so `Cron` is as wrong as `crom`.
    let lower = ty.to_ascii_lowercase();
    let nearest = KEDA_TYPES
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min();
    match nearest {
        Some((_, k)) => format!("unknown trigger type `{ty}`; did you mean `{k}`?"),
        None => format!("unknown trigger type `{ty}` (supported by ebb: {supported})"),
    }
}

impl ScalerError {
    /// True when the upstream did not answer in time (the metrics API answers 504 for these).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::UpstreamTimeout { .. })
    }
}

/// A live scaler for one trigger.
pub trait Scaler: Send + Sync + fmt::Debug {
    /// Metric specs this trigger contributes to the HPA, in order.
    fn metric_specs(&self) -> Vec<MetricSpec>;

    /// Current values and activity for `metric_name` (one of the names from `metric_specs`).
    fn get_metrics_and_activity<'a>(
        &'a self,
        metric_name: &'a str,
    ) -> BoxFuture<'a, Result<MetricsAndActivity, ScalerError>>;

    /// The value a metric must exceed for the trigger to be active (`activationThreshold` and
    /// its per-scaler names; KEDA's default 0). `ebb simulate` and `ebb explain` decide and
    /// show activity from it; the scaler's own read uses the same field.
    fn activation_threshold(&self) -> f64 {
        0.0
    }

    /// What `ebb explain` shows beyond the metric values, under its own key (the HTTP
    /// activator's live per-route counts); `None` for most triggers.
    fn live_detail(&self) -> BoxFuture<'_, Option<(String, serde_json::Value)>> {
        Box::pin(async { None })
    }
}

/// A scaler with one metric, the shape of most triggers: its name and target, and how to read
/// it. [`Scaler`] follows from it, so each such scaler does not write the spec list out by hand.
pub trait SingleMetric: Send + Sync + fmt::Debug {
    /// The metric's name and target.
    fn metric(&self) -> (String, MetricTarget);

    /// Reads the metric's current value and the trigger's activity.
    fn read_metric(&self) -> BoxFuture<'_, Result<MetricsAndActivity, ScalerError>>;

    /// See [`Scaler::activation_threshold`].
    fn activation_threshold(&self) -> f64 {
        0.0
    }
}

impl<T: SingleMetric> Scaler for T {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        let (name, target) = self.metric();
        vec![MetricSpec::External { name, target }]
    }

    fn get_metrics_and_activity<'a>(
        &'a self,
        _metric_name: &'a str,
    ) -> BoxFuture<'a, Result<MetricsAndActivity, ScalerError>> {
        self.read_metric()
    }

    fn activation_threshold(&self) -> f64 {
        SingleMetric::activation_threshold(self)
    }
}

/// A shared scaler handle.
pub type SharedScaler = Arc<dyn Scaler>;

/// Builds the scaler for a trigger type (KEDA's `buildScaler`).
pub fn build_scaler(config: &ScalerConfig, ctx: &ScalerContext) -> Result<SharedScaler, ScalerError> {
    match config.trigger_type.as_str() {
        "cron" => Ok(Arc::new(match &ctx.clock {
            Some(clock) => cron::CronScaler::with_clock(config, clock.clone())?,
            None => cron::CronScaler::new(config)?,
        })),
        "metrics-api" => Ok(Arc::new(
            metrics_api::MetricsApiScaler::new(config)?.observed(ctx),
        )),
        "prometheus" => Ok(Arc::new(prometheus::PrometheusScaler::new(config, ctx)?)),
        "aws-sqs-queue" => Ok(Arc::new(aws::sqs::SqsScaler::new(config, ctx)?)),
        "aws-cloudwatch" => Ok(Arc::new(aws::cloudwatch::CloudWatchScaler::new(config, ctx)?)),
        "kubernetes-workload" => Ok(Arc::new(kubernetes_workload::WorkloadScaler::new(config, ctx)?)),
        "cpu" | "memory" => Ok(Arc::new(cpu_memory::CpuMemoryScaler::new(config)?)),
        "external-push" => Ok(Arc::new(http_push::ExternalPushScaler::new(config, ctx)?)),
        other => Err(ScalerError::UnknownType(other.to_string())),
    }
}

/// Trigger types this build knows, for validation messages.
pub const KNOWN_TYPES: &[&str] = &[
    "cron",
    "metrics-api",
    "prometheus",
    "aws-sqs-queue",
    "aws-cloudwatch",
    "kubernetes-workload",
    "cpu",
    "memory",
    "external-push",
];

/// KEDA's metric-name sanitiser: each of `/ . : % ( )` becomes `-`, nothing else changes.
pub fn sanitize_metric_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '.' | ':' | '%' | '(' | ')' => '-',
            other => other,
        })
        .collect()
}

/// The external metric name for trigger `index` with a scaler-specific `suffix` (sanitised).
pub fn metric_name(index: usize, suffix: &str) -> String {
    format!("s{index}-{}", sanitize_metric_name(suffix))
}

/// Removes the exact `s<index>-` prefix from a metric name.
pub fn strip_metric_prefix(index: usize, name: &str) -> Result<&str, ScalerError> {
    let prefix = format!("s{index}-");
    name.strip_prefix(prefix.as_str())
        .ok_or_else(|| ScalerError::Config(format!("metric name {name} does not start with {prefix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitiser_replaces_only_keda_characters() {
        assert_eq!(
            sanitize_metric_name("a/b.c:d%e(f)g h{}\"'"),
            "a-b-c-d-e-f-g h{}\"'"
        );
        assert_eq!(metric_name(3, "aws-cloudwatch"), "s3-aws-cloudwatch");
        assert_eq!(
            metric_name(1, "metric-api-components.0.tasks"),
            "s1-metric-api-components-0-tasks"
        );
    }

    #[test]
    fn unknown_type_messages() {
        assert!(unknown_type_message("rabbitmq").starts_with(
            "KEDA scaler `rabbitmq` is not supported by ebb yet (supported: cron, metrics-api,"
        ));
        assert_eq!(
            unknown_type_message("metrics-apii"),
            "unknown trigger type `metrics-apii`; did you mean `metrics-api`?"
        );
        assert_eq!(
            unknown_type_message("Prometheus"),
            "unknown trigger type `Prometheus`; did you mean `prometheus`?"
        );
        assert_eq!(
            unknown_type_message("kafak"),
            "unknown trigger type `kafak`; did you mean `kafka`?"
        );
        assert!(
            unknown_type_message("zzzzzzzz")
                .starts_with("unknown trigger type `zzzzzzzz` (supported by ebb: cron")
        );
        assert!(KNOWN_TYPES.iter().all(|t| KEDA_TYPES.contains(t)));
    }

    /// docs/compatibility.md names every KEDA scaler ebb does not have.
    #[test]
    fn compatibility_doc_lists_unsupported_scalers() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/compatibility.md"))
            .expect("docs/compatibility.md");
        for t in unsupported_keda_types() {
            assert!(
                doc.contains(&format!("`{t}`")),
                "docs/compatibility.md does not list {t}"
            );
        }
    }

    #[test]
    fn prefix_removal_needs_exact_index() {
        assert_eq!(
            strip_metric_prefix(123, "s123-metricName").ok(),
            Some("metricName")
        );
        assert!(strip_metric_prefix(0, "0-metricName").is_err());
        assert!(strip_metric_prefix(0, "metricName").is_err());
        assert!(strip_metric_prefix(1, "s0-metricName").is_err());
    }
}
