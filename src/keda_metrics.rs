//! KEDA's own Prometheus metrics under KEDA's exact names and label sets, so dashboards and
//! alerts written for `keda-operator:8080/metrics` keep working against ebb; plus two ebb
//! metrics about upstream calls.
//!
//! prometheus-client appends `_total` to counter sample names, so counters are registered
//! without it (`keda_scaler_detail_errors` is exposed as `keda_scaler_detail_errors_total`).
//! Gauges are never renamed, which is how `keda_trigger_registered_total` keeps KEDA's name.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// A label value with the exposition format's escapes (`\\`, `\"`, newline). prometheus-client
/// writes values verbatim, and one metric name with a quote in it (a metrics-api trigger on
/// `demo_queue_depth{queue="mail"}`) would make the whole scrape unparseable.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let mut rest = self.0;
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

/// Encodes `(name, value)` labels with escaped values; every label set of this module goes through it.
fn encode_labels(encoder: &mut LabelSetEncoder, labels: &[(&str, &str)]) -> Result<(), std::fmt::Error> {
    labels
        .iter()
        .map(|(k, v)| (*k, Escaped(v)))
        .collect::<Vec<_>>()
        .encode(encoder)
}

/// The registry as the classic Prometheus text format (0.0.4), for scrapers that do not ask for
/// OpenMetrics (client_golang, and so KEDA, answers them in it): counter families are named with
/// their `_total`, and OpenMetrics' `# EOF` and `# UNIT` lines are left out.
pub fn encode_text(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut open = String::new();
    prometheus_client::encoding::text::encode(&mut open, registry)?;
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + counters.len() * 16);
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// Buckets of `keda_scaler_http_request_duration_seconds`, as KEDA declares them.
pub const HTTP_DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets of `ebb_scaler_upstream_latency_seconds`.
const UPSTREAM_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Whether a scaler belongs to a ScaledObject or a ScaledJob (KEDA's `type` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ScaledResourceType {
    /// A ScaledObject.
    ScaledObject,
    /// A ScaledJob.
    ScaledJob,
}

impl ScaledResourceType {
    /// The label value KEDA writes.
    pub fn label(self) -> &'static str {
        match self {
            Self::ScaledObject => "scaledobject",
            Self::ScaledJob => "scaledjob",
        }
    }
}

/// KEDA's `scaler` label: the trigger name, else the Go type name of KEDA's scaler for the
/// trigger type (`prometheusScaler`, `metricsAPIScaler`, `cpuMemoryScaler`, …).
pub fn scaler_label(trigger_name: &str, trigger_type: &str) -> String {
    if !trigger_name.is_empty() {
        return trigger_name.to_string();
    }
    match trigger_type {
        "metrics-api" => return "metricsAPIScaler".to_string(),
        "cpu" | "memory" => return "cpuMemoryScaler".to_string(),
        _ => {}
    }
    let mut out = String::new();
    let mut upper = false;
    for c in trigger_type.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out.push_str("Scaler");
    out
}

/// KEDA's common scaler label set: `namespace, metric, scaledObject, scaler, triggerIndex, type`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ScalerLabels {
    /// Namespace of the ScaledObject.
    pub namespace: String,
    /// External metric name (`s0-prometheus`), or `cpu`/`memory` for resource triggers.
    pub metric: String,
    /// ScaledObject (or ScaledJob) name.
    pub scaled_object: String,
    /// Trigger `name` if set, else KEDA's Go type name of the scaler (`prometheusScaler`).
    pub scaler: String,
    /// Index of the trigger in `spec.triggers`.
    pub trigger_index: usize,
    /// ScaledObject or ScaledJob.
    pub type_: ScaledResourceType,
}

impl EncodeLabelSet for ScalerLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let index = self.trigger_index.to_string();
        encode_labels(
            encoder,
            &[
                ("namespace", self.namespace.as_str()),
                ("metric", self.metric.as_str()),
                ("scaledObject", self.scaled_object.as_str()),
                ("scaler", self.scaler.as_str()),
                ("triggerIndex", index.as_str()),
                ("type", self.type_.label()),
            ],
        )
    }
}

/// `namespace, scaledObject`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ObjectLabels {
    namespace: String,
    scaled_object: String,
}

/// `namespace, scaledJob` of `keda_scaled_job_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct JobLabels {
    namespace: String,
    scaled_job: String,
}

impl EncodeLabelSet for JobLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(
            encoder,
            &[
                ("namespace", self.namespace.as_str()),
                ("scaledJob", self.scaled_job.as_str()),
            ],
        )
    }
}

impl EncodeLabelSet for ObjectLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(
            encoder,
            &[
                ("namespace", self.namespace.as_str()),
                ("scaledObject", self.scaled_object.as_str()),
            ],
        )
    }
}

/// Labels of `keda_scaler_empty_upstream_responses_total` (prometheus scaler empty results).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct EmptyUpstreamLabels {
    /// Namespace of the scaled resource.
    pub namespace: String,
    /// ScaledObject or ScaledJob name.
    pub scaled_resource: String,
    /// Trigger name (empty when unnamed).
    pub trigger_name: String,
    /// External metric name.
    pub metric_name: String,
    /// ScaledObject or ScaledJob.
    pub resource_type: ScaledResourceType,
    /// The trigger's `ignoreNullValues` setting.
    pub ignore_null_values: bool,
}

impl EncodeLabelSet for EmptyUpstreamLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(
            encoder,
            &[
                ("namespace", self.namespace.as_str()),
                ("scaledResource", self.scaled_resource.as_str()),
                ("triggerName", self.trigger_name.as_str()),
                ("metricName", self.metric_name.as_str()),
                ("resourceType", self.resource_type.label()),
                (
                    "ignoreNullValues",
                    if self.ignore_null_values { "true" } else { "false" },
                ),
            ],
        )
    }
}

/// The kinds counted by `keda_resource_registered_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RegisteredResource {
    /// ScaledObject.
    ScaledObject,
    /// ScaledJob.
    ScaledJob,
    /// TriggerAuthentication.
    TriggerAuthentication,
    /// ClusterTriggerAuthentication (counted under namespace `default`, as KEDA does).
    ClusterTriggerAuthentication,
    /// CloudEventSource.
    CloudEventSource,
}

impl RegisteredResource {
    /// The `type` label value KEDA writes.
    pub fn label(self) -> &'static str {
        match self {
            Self::ScaledObject => "scaled_object",
            Self::ScaledJob => "scaled_job",
            Self::TriggerAuthentication => "trigger_authentication",
            Self::ClusterTriggerAuthentication => "cluster_trigger_authentication",
            Self::CloudEventSource => "cloudevent_source",
        }
    }
}

/// `type, namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ResourceLabels {
    type_: RegisteredResource,
    namespace: String,
}

impl EncodeLabelSet for ResourceLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(
            encoder,
            &[
                ("type", self.type_.label()),
                ("namespace", self.namespace.as_str()),
            ],
        )
    }
}

/// A single `type` label (trigger type).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct TypeLabel {
    type_: String,
}

impl EncodeLabelSet for TypeLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(encoder, &[("type", self.type_.as_str())])
    }
}

/// `namespace, type, resource` of the scale-loop lateness gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct LoopLabels {
    namespace: String,
    type_: ScaledResourceType,
    resource: String,
}

impl EncodeLabelSet for LoopLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(
            encoder,
            &[
                ("namespace", self.namespace.as_str()),
                ("type", self.type_.label()),
                ("resource", self.resource.as_str()),
            ],
        )
    }
}

/// Labels of `keda_scaler_http_requests_total`; `scaler` holds the trigger *type* here.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HttpRequestLabels {
    /// Namespace of the scaled resource.
    pub namespace: String,
    /// ScaledObject or ScaledJob name.
    pub scaled_resource: String,
    /// Trigger type (`prometheus`, `metrics-api`, …).
    pub scaler: String,
    /// Trigger name (empty when unnamed).
    pub trigger_name: String,
    /// External metric name.
    pub metric_name: String,
    /// HTTP status code as a decimal string, or `error` on a transport error.
    pub status_code: String,
}

impl EncodeLabelSet for HttpRequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(
            encoder,
            &[
                ("namespace", self.namespace.as_str()),
                ("scaled_resource", self.scaled_resource.as_str()),
                ("scaler", self.scaler.as_str()),
                ("trigger_name", self.trigger_name.as_str()),
                ("metric_name", self.metric_name.as_str()),
                ("status_code", self.status_code.as_str()),
            ],
        )
    }
}

/// Duration histogram key: `scaler, status_code`, or all six labels in high-cardinality mode.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum HttpDurationLabels {
    Low { scaler: String, status_code: String },
    High(HttpRequestLabels),
}

impl EncodeLabelSet for HttpDurationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Low { scaler, status_code } => encode_labels(
                encoder,
                &[("scaler", scaler.as_str()), ("status_code", status_code.as_str())],
            ),
            Self::High(all) => all.encode(encoder),
        }
    }
}

/// `namespace, action` (and `reason` for errors) of the webhook counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WebhookLabels {
    namespace: String,
    action: String,
    reason: Option<String>,
}

impl EncodeLabelSet for WebhookLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let mut labels = vec![
            ("namespace", self.namespace.as_str()),
            ("action", self.action.as_str()),
        ];
        if let Some(reason) = &self.reason {
            labels.push(("reason", reason.as_str()));
        }
        encode_labels(encoder, &labels)
    }
}

/// `version, git_commit, goversion, goos, goarch` of `keda_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BuildLabels;

impl EncodeLabelSet for BuildLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_labels(
            encoder,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("git_commit", option_env!("EBB_GIT_COMMIT").unwrap_or("unknown")),
                // KEDA reports the Go toolchain; ebb reports the Rust one it requires.
                ("goversion", concat!("rust", env!("CARGO_PKG_RUST_VERSION"))),
                ("goos", std::env::consts::OS),
                ("goarch", go_arch()),
            ],
        )
    }
}

/// Go's spelling of the CPU architecture, so `goarch` values match KEDA's (`amd64`, `arm64`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

type F64Gauge = Gauge<f64, AtomicU64>;

fn http_duration_histogram() -> Histogram {
    Histogram::new(HTTP_DURATION_BUCKETS)
}

fn upstream_histogram() -> Histogram {
    Histogram::new(UPSTREAM_BUCKETS)
}

/// KEDA's metrics plus ebb's upstream metrics; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct KedaMetrics {
    build_info: Family<BuildLabels, Gauge>,
    scaler_value: Family<ScalerLabels, F64Gauge>,
    scaler_latency: Family<ScalerLabels, F64Gauge>,
    scaler_active: Family<ScalerLabels, Gauge>,
    scaler_errors: Family<ScalerLabels, Counter>,
    object_errors: Family<ObjectLabels, Counter>,
    job_errors: Family<JobLabels, Counter>,
    object_paused: Family<ObjectLabels, Gauge>,
    empty_upstream: Family<EmptyUpstreamLabels, Counter>,
    triggers: Family<TypeLabel, Gauge>,
    resources: Family<ResourceLabels, Gauge>,
    loop_latency: Family<LoopLabels, F64Gauge>,
    http_requests: Family<HttpRequestLabels, Counter>,
    http_duration: Family<HttpDurationLabels, Histogram, fn() -> Histogram>,
    high_cardinality: bool,
    validations: Family<WebhookLabels, Counter>,
    validation_errors: Family<WebhookLabels, Counter>,
    upstream_latency: Family<TypeLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<TypeLabel, Counter>,
}

impl KedaMetrics {
    /// Creates the metrics and registers them in `registry` under KEDA's names.
    pub fn register(registry: &mut Registry) -> Self {
        Self::register_with(registry, false)
    }

    /// Like [`KedaMetrics::register`]; `high_cardinality` gives the HTTP duration histogram all
    /// six labels, as KEDA's `--enable-high-cardinality-metrics-labels` does.
    pub fn register_with(registry: &mut Registry, high_cardinality: bool) -> Self {
        let m = Self {
            build_info: Family::default(),
            scaler_value: Family::default(),
            scaler_latency: Family::default(),
            scaler_active: Family::default(),
            scaler_errors: Family::default(),
            object_errors: Family::default(),
            job_errors: Family::default(),
            object_paused: Family::default(),
            empty_upstream: Family::default(),
            triggers: Family::default(),
            resources: Family::default(),
            loop_latency: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_duration_histogram),
            high_cardinality,
            validations: Family::default(),
            validation_errors: Family::default(),
            upstream_latency: Family::new_with_constructor(upstream_histogram),
            upstream_errors: Family::default(),
        };
        registry.register(
            "keda_build_info",
            "Info metric, with static information about KEDA build like: version, git commit and Golang runtime info.",
            m.build_info.clone(),
        );
        registry.register(
            "keda_scaler_metrics_value",
            "The current value for each scaler's metric that would be used by the HPA in computing the target average.",
            m.scaler_value.clone(),
        );
        registry.register(
            "keda_scaler_metrics_latency_seconds",
            "The latency of retrieving current metric from each scaler, in seconds.",
            m.scaler_latency.clone(),
        );
        registry.register(
            "keda_scaler_active",
            "Indicates whether a scaler is active (1), or not (0).",
            m.scaler_active.clone(),
        );
        registry.register(
            "keda_scaler_detail_errors",
            "The total number of errors encountered for each scaler.",
            m.scaler_errors.clone(),
        );
        registry.register(
            "keda_scaled_object_errors",
            "The number of errors that have occurred for each ScaledObject.",
            m.object_errors.clone(),
        );
        registry.register(
            "keda_scaled_job_errors",
            "Number of scaled job errors",
            m.job_errors.clone(),
        );
        registry.register(
            "keda_scaled_object_paused",
            "Indicates whether a ScaledObject is paused",
            m.object_paused.clone(),
        );
        registry.register(
            "keda_scaler_empty_upstream_responses",
            "Number of times a scaler received an empty response from its upstream.",
            m.empty_upstream.clone(),
        );
        registry.register(
            "keda_trigger_registered_total",
            "Total number of triggers per trigger type registered.",
            m.triggers.clone(),
        );
        registry.register(
            "keda_resource_registered_total",
            "Total number of KEDA custom resources per namespace for each custom resource type (CRD) registered.",
            m.resources.clone(),
        );
        registry.register(
            "keda_internal_scale_loop_latency_seconds",
            "Total deviation (in seconds) between the expected execution time and the actual execution time for the scaling loop.",
            m.loop_latency.clone(),
        );
        registry.register(
            "keda_scaler_http_requests",
            "Total number of HTTP requests made by scalers during metric collection.",
            m.http_requests.clone(),
        );
        registry.register(
            "keda_scaler_http_request_duration_seconds",
            "Duration of HTTP requests made by scalers during metric collection.",
            m.http_duration.clone(),
        );
        registry.register(
            "keda_webhook_scaled_object_validations",
            "Total number of scaled object validations",
            m.validations.clone(),
        );
        registry.register(
            "keda_webhook_scaled_object_validation_errors",
            "Total number of scaled object validating errors",
            m.validation_errors.clone(),
        );
        registry.register(
            "ebb_scaler_upstream_latency_seconds",
            "Time of one upstream query made by a scaler, by trigger type",
            m.upstream_latency.clone(),
        );
        registry.register(
            "ebb_scaler_upstream_errors",
            "Failed upstream queries made by scalers, by trigger type",
            m.upstream_errors.clone(),
        );
        m.build_info.get_or_create(&BuildLabels).set(1);
        m
    }

    /// Metrics registered nowhere, for tests and callers without an admin port.
    pub fn detached() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Records the value a scaler produced (after fallback).
    pub fn record_scaler_value(&self, labels: &ScalerLabels, value: f64) {
        self.scaler_value.get_or_create(labels).set(value);
    }

    /// Records how long the last scaler query took.
    pub fn record_scaler_latency(&self, labels: &ScalerLabels, elapsed: Duration) {
        self.scaler_latency
            .get_or_create(labels)
            .set(elapsed.as_secs_f64());
    }

    /// Records whether a trigger is active.
    pub fn set_active(&self, labels: &ScalerLabels, active: bool) {
        self.scaler_active.get_or_create(labels).set(i64::from(active));
    }

    /// Counts a scaler error for the trigger and for its ScaledObject.
    pub fn record_scaler_error(&self, labels: &ScalerLabels) {
        self.scaler_errors.get_or_create(labels).inc();
        self.object_errors.get_or_create(&object(labels)).inc();
    }

    /// Creates the error series at 0 after a success, as KEDA does, so `rate()` has a baseline.
    pub fn record_scaler_success(&self, labels: &ScalerLabels) {
        drop(self.scaler_errors.get_or_create(labels));
        drop(self.object_errors.get_or_create(&object(labels)));
    }

    /// Creates a ScaledJob scaler's error series at 0 (KEDA never increments it for jobs).
    pub fn record_job_scaler_success(&self, labels: &ScalerLabels) {
        drop(self.scaler_errors.get_or_create(labels));
    }

    /// Creates `keda_scaled_job_errors_total` of a ScaledJob at 0.
    pub fn touch_scaled_job_errors(&self, namespace: &str, scaled_job: &str) {
        drop(self.job_errors.get_or_create(&job_labels(namespace, scaled_job)));
    }

    /// Counts a ScaledJob error: a failed scaler read or a failed scaler build.
    pub fn record_scaled_job_error(&self, namespace: &str, scaled_job: &str) {
        self.job_errors
            .get_or_create(&job_labels(namespace, scaled_job))
            .inc();
    }

    /// Drops the per-object series of a deleted ScaledJob.
    pub fn remove_scaled_job(&self, namespace: &str, scaled_job: &str) {
        self.job_errors.remove(&job_labels(namespace, scaled_job));
    }

    /// Counts a ScaledObject error not tied to one trigger (building its scalers failed).
    pub fn record_scaled_object_error(&self, namespace: &str, scaled_object: &str) {
        self.object_errors
            .get_or_create(&object_labels(namespace, scaled_object))
            .inc();
    }

    /// Records whether a ScaledObject is paused.
    pub fn set_paused(&self, namespace: &str, scaled_object: &str, paused: bool) {
        self.object_paused
            .get_or_create(&object_labels(namespace, scaled_object))
            .set(i64::from(paused));
    }

    /// Drops the per-trigger gauges of a trigger, as KEDA does when it rebuilds an object's scalers.
    pub fn remove_scaler(&self, labels: &ScalerLabels) {
        self.scaler_value.remove(labels);
        self.scaler_latency.remove(labels);
        self.scaler_active.remove(labels);
    }

    /// Drops the per-object series of a deleted ScaledObject.
    pub fn remove_scaled_object(&self, namespace: &str, scaled_object: &str) {
        let key = object_labels(namespace, scaled_object);
        self.object_paused.remove(&key);
        self.object_errors.remove(&key);
    }

    /// Counts an empty result from a prometheus trigger's upstream.
    pub fn record_empty_upstream_response(&self, labels: &EmptyUpstreamLabels) {
        self.empty_upstream.get_or_create(labels).inc();
    }

    /// One more trigger of `trigger_type` is registered.
    pub fn inc_trigger_registered(&self, trigger_type: &str) {
        self.triggers.get_or_create(&type_label(trigger_type)).inc();
    }

    /// One trigger of `trigger_type` went away.
    pub fn dec_trigger_registered(&self, trigger_type: &str) {
        self.triggers.get_or_create(&type_label(trigger_type)).dec();
    }

    /// One more resource of `kind` in `namespace` (use `default` for cluster-scoped ones).
    pub fn inc_resource_registered(&self, kind: RegisteredResource, namespace: &str) {
        self.resources
            .get_or_create(&resource_labels(kind, namespace))
            .inc();
    }

    /// One resource of `kind` in `namespace` went away.
    pub fn dec_resource_registered(&self, kind: RegisteredResource, namespace: &str) {
        self.resources
            .get_or_create(&resource_labels(kind, namespace))
            .dec();
    }

    /// Records how late a scale-loop tick ran compared with its schedule.
    pub fn record_scale_loop_latency(
        &self,
        namespace: &str,
        type_: ScaledResourceType,
        resource: &str,
        lateness: Duration,
    ) {
        self.loop_latency
            .get_or_create(&LoopLabels {
                namespace: namespace.to_owned(),
                type_,
                resource: resource.to_owned(),
            })
            .set(lateness.as_secs_f64());
    }

    /// Records one outbound HTTP request a scaler made.
    pub fn record_http_request(&self, labels: &HttpRequestLabels, elapsed: Duration) {
        self.http_requests.get_or_create(labels).inc();
        let key = if self.high_cardinality {
            HttpDurationLabels::High(labels.clone())
        } else {
            HttpDurationLabels::Low {
                scaler: labels.scaler.clone(),
                status_code: labels.status_code.clone(),
            }
        };
        self.http_duration
            .get_or_create(&key)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one ScaledObject validation by the webhook (`action` = `create`/`update`).
    pub fn record_webhook_validation(&self, namespace: &str, action: &str) {
        self.validations
            .get_or_create(&webhook_labels(namespace, action, None))
            .inc();
    }

    /// Counts one rejected ScaledObject with its reason (`other-hpa`, `incorrect-replicas`, …).
    pub fn record_webhook_validation_error(&self, namespace: &str, action: &str, reason: &str) {
        self.validation_errors
            .get_or_create(&webhook_labels(namespace, action, Some(reason)))
            .inc();
    }

    /// Records one upstream query of a scaler of `trigger_type`, and counts it if it failed.
    pub fn record_upstream(&self, trigger_type: &str, elapsed: Duration, ok: bool) {
        let key = type_label(trigger_type);
        self.upstream_latency
            .get_or_create(&key)
            .observe(elapsed.as_secs_f64());
        let errors = self.upstream_errors.get_or_create(&key);
        if !ok {
            errors.inc();
        }
    }
}

fn object(labels: &ScalerLabels) -> ObjectLabels {
    object_labels(&labels.namespace, &labels.scaled_object)
}

fn job_labels(namespace: &str, scaled_job: &str) -> JobLabels {
    JobLabels {
        namespace: namespace.to_owned(),
        scaled_job: scaled_job.to_owned(),
    }
}

fn object_labels(namespace: &str, scaled_object: &str) -> ObjectLabels {
    ObjectLabels {
        namespace: namespace.to_owned(),
        scaled_object: scaled_object.to_owned(),
    }
}

fn type_label(trigger_type: &str) -> TypeLabel {
    TypeLabel {
        type_: trigger_type.to_owned(),
    }
}

fn resource_labels(kind: RegisteredResource, namespace: &str) -> ResourceLabels {
    ResourceLabels {
        type_: kind,
        namespace: namespace.to_owned(),
    }
}

fn webhook_labels(namespace: &str, action: &str, reason: Option<&str>) -> WebhookLabels {
    WebhookLabels {
        namespace: namespace.to_owned(),
        action: action.to_owned(),
        reason: reason.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> ScalerLabels {
        ScalerLabels {
            namespace: "default".into(),
            metric: "s0-prometheus".into(),
            scaled_object: "web".into(),
            scaler: "prometheusScaler".into(),
            trigger_index: 0,
            type_: ScaledResourceType::ScaledObject,
        }
    }

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    /// Every sample line of `name` with exactly the label names `keys`, in order.
    fn sample<'a>(text: &'a str, name: &str, keys: &[&str]) -> &'a str {
        text.lines()
            .find(|line| {
                let Some(rest) = line.strip_prefix(name) else {
                    return false;
                };
                let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
                    return keys.is_empty() && rest.starts_with(' ');
                };
                let found: Vec<&str> = inner
                    .0
                    .split("\",")
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                    .collect();
                found == keys
            })
            .unwrap_or_else(|| panic!("no {name} sample with labels {keys:?} in\n{text}"))
    }

    #[test]
    fn exposes_keda_names_types_and_labels() {
        let mut registry = Registry::default();
        let m = KedaMetrics::register(&mut registry);
        let l = labels();
        m.record_scaler_value(&l, 12.5);
        m.record_scaler_latency(&l, Duration::from_millis(30));
        m.set_active(&l, true);
        m.record_scaler_error(&l);
        m.set_paused("default", "web", false);
        m.record_empty_upstream_response(&EmptyUpstreamLabels {
            namespace: "default".into(),
            scaled_resource: "web".into(),
            trigger_name: "".into(),
            metric_name: "s0-prometheus".into(),
            resource_type: ScaledResourceType::ScaledObject,
            ignore_null_values: true,
        });
        m.inc_trigger_registered("prometheus");
        m.inc_resource_registered(RegisteredResource::ScaledObject, "default");
        m.record_scale_loop_latency("default", ScaledResourceType::ScaledObject, "web", Duration::ZERO);
        m.record_http_request(
            &HttpRequestLabels {
                namespace: "default".into(),
                scaled_resource: "web".into(),
                scaler: "prometheus".into(),
                trigger_name: "".into(),
                metric_name: "s0-prometheus".into(),
                status_code: "200".into(),
            },
            Duration::from_millis(20),
        );
        m.record_webhook_validation("default", "create");
        m.record_webhook_validation_error("default", "create", "incorrect-replicas");
        m.record_upstream("prometheus", Duration::from_millis(5), false);
        let text = encode(&registry);

        let scaler = [
            "namespace",
            "metric",
            "scaledObject",
            "scaler",
            "triggerIndex",
            "type",
        ];
        let object = ["namespace", "scaledObject"];
        let expected: &[(&str, &str, &str, &[&str])] = &[
            (
                "keda_build_info",
                "gauge",
                "keda_build_info",
                &["version", "git_commit", "goversion", "goos", "goarch"],
            ),
            (
                "keda_scaler_metrics_value",
                "gauge",
                "keda_scaler_metrics_value",
                &scaler,
            ),
            (
                "keda_scaler_metrics_latency_seconds",
                "gauge",
                "keda_scaler_metrics_latency_seconds",
                &scaler,
            ),
            ("keda_scaler_active", "gauge", "keda_scaler_active", &scaler),
            (
                "keda_scaler_detail_errors",
                "counter",
                "keda_scaler_detail_errors_total",
                &scaler,
            ),
            (
                "keda_scaled_object_errors",
                "counter",
                "keda_scaled_object_errors_total",
                &object,
            ),
            (
                "keda_scaled_object_paused",
                "gauge",
                "keda_scaled_object_paused",
                &object,
            ),
            (
                "keda_scaler_empty_upstream_responses",
                "counter",
                "keda_scaler_empty_upstream_responses_total",
                &[
                    "namespace",
                    "scaledResource",
                    "triggerName",
                    "metricName",
                    "resourceType",
                    "ignoreNullValues",
                ],
            ),
            (
                "keda_trigger_registered_total",
                "gauge",
                "keda_trigger_registered_total",
                &["type"],
            ),
            (
                "keda_resource_registered_total",
                "gauge",
                "keda_resource_registered_total",
                &["type", "namespace"],
            ),
            (
                "keda_internal_scale_loop_latency_seconds",
                "gauge",
                "keda_internal_scale_loop_latency_seconds",
                &["namespace", "type", "resource"],
            ),
            (
                "keda_scaler_http_requests",
                "counter",
                "keda_scaler_http_requests_total",
                &[
                    "namespace",
                    "scaled_resource",
                    "scaler",
                    "trigger_name",
                    "metric_name",
                    "status_code",
                ],
            ),
            (
                "keda_scaler_http_request_duration_seconds",
                "histogram",
                "keda_scaler_http_request_duration_seconds_count",
                &["scaler", "status_code"],
            ),
            (
                "keda_webhook_scaled_object_validations",
                "counter",
                "keda_webhook_scaled_object_validations_total",
                &["namespace", "action"],
            ),
            (
                "keda_webhook_scaled_object_validation_errors",
                "counter",
                "keda_webhook_scaled_object_validation_errors_total",
                &["namespace", "action", "reason"],
            ),
            (
                "ebb_scaler_upstream_latency_seconds",
                "histogram",
                "ebb_scaler_upstream_latency_seconds_count",
                &["type"],
            ),
            (
                "ebb_scaler_upstream_errors",
                "counter",
                "ebb_scaler_upstream_errors_total",
                &["type"],
            ),
        ];
        for (family, kind, sample_name, keys) in expected {
            // OpenMetrics names a counter family without `_total`; its samples carry it, which
            // is the name Prometheus stores and KEDA's queries use.
            let type_line = format!("# TYPE {family} {kind}");
            assert!(
                text.lines().any(|l| l == type_line),
                "missing {type_line:?} in\n{text}"
            );
            sample(&text, sample_name, keys);
        }
        assert!(text.contains("keda_build_info{version=\"0.1.0\""));
        assert!(text.contains(
            "keda_scaler_metrics_value{namespace=\"default\",metric=\"s0-prometheus\",scaledObject=\"web\",scaler=\"prometheusScaler\",triggerIndex=\"0\",type=\"scaledobject\"} 12.5"
        ));
        assert!(text.contains("keda_trigger_registered_total{type=\"prometheus\"} 1"));
        assert!(
            text.contains("keda_scaled_object_errors_total{namespace=\"default\",scaledObject=\"web\"} 1")
        );
        for bucket in ["0.005", "0.25", "2.5", "10.0"] {
            assert!(
                text.contains(&format!(
                    "keda_scaler_http_request_duration_seconds_bucket{{le=\"{bucket}\",scaler=\"prometheus\",status_code=\"200\"}}"
                )),
                "bucket {bucket} missing in\n{text}"
            );
        }
    }

    #[test]
    fn success_creates_error_series_at_zero_and_removal_drops_gauges() {
        let mut registry = Registry::default();
        let m = KedaMetrics::register(&mut registry);
        let l = labels();
        m.record_scaler_success(&l);
        m.record_scaler_value(&l, 1.0);
        let text = encode(&registry);
        assert!(text.contains("keda_scaler_detail_errors_total{namespace=\"default\",metric=\"s0-prometheus\",scaledObject=\"web\",scaler=\"prometheusScaler\",triggerIndex=\"0\",type=\"scaledobject\"} 0"));
        assert!(
            text.contains("keda_scaled_object_errors_total{namespace=\"default\",scaledObject=\"web\"} 0")
        );
        m.remove_scaler(&l);
        assert!(!encode(&registry).contains("keda_scaler_metrics_value{"));
    }

    #[test]
    fn high_cardinality_duration_has_all_six_labels() {
        let mut registry = Registry::default();
        let m = KedaMetrics::register_with(&mut registry, true);
        let labels = HttpRequestLabels {
            namespace: "ns".into(),
            scaled_resource: "so".into(),
            scaler: "metrics-api".into(),
            trigger_name: "t".into(),
            metric_name: "s0-metric-api-x".into(),
            status_code: "error".into(),
        };
        m.record_http_request(&labels, Duration::from_secs(1));
        let text = encode(&registry);
        sample(
            &text,
            "keda_scaler_http_request_duration_seconds_count",
            &[
                "namespace",
                "scaled_resource",
                "scaler",
                "trigger_name",
                "metric_name",
                "status_code",
            ],
        );
    }
}
