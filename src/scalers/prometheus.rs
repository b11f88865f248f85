//! `prometheus` scaler (spec §12.1): run one instant PromQL query, compare the single value with
//! `threshold` / `activationThreshold`.
//!
//! Request path. Plain queries go through `prometheus-http-query` (`GET <serverAddress>/api/v1/query`
//! with `query`, `time` and the headers). That crate cannot express three KEDA behaviours, so those
//! requests are built with reqwest directly, on the same client:
//! - `namespace` is appended to the query string **unescaped** (`&namespace=<ns>`), as KEDA does;
//! - `queryParameters` have runtime names (the crate only takes `&'static str` names), and KEDA
//!   re-encodes the whole query string sorted by key when they are present;
//! - Amazon Managed Prometheus (`awsRegion` set, no `authModes`): the exact final request must be
//!   SigV4-signed (service `aps`, empty-body payload hash) before it is sent, and the crate sends
//!   requests itself.
//!
//! Both paths join the path the same way: `<serverAddress>/api/v1/query`, except that a bare
//! `http://host/` gives `/api/v1/query` (KEDA would send `//api/v1/query`).
//!
//! Response handling follows KEDA; where ebb differs it says so:
//! - non-2xx → `prometheus query api returned error. status: N`, followed by Prometheus's own
//!   `errorType: error` when the body carries one, else by the start of the body;
//! - 0 series → 0 with `ignoreNullValues` (default true), else an error; counted in
//!   [`PrometheusScaler::empty_responses`] either way (KEDA's
//!   `keda_scaler_empty_upstream_responses_total`);
//! - more than one series → error `... returned multiple elements` (KEDA);
//! - empty value list → 0 / error like an empty result; one element → `didn't return enough values`;
//! - NaN, +Inf, -Inf → 0 with `ignoreNullValues`, else an error (KEDA returns NaN as is; the spec
//!   and the HPA both want a number);
//! - JSON `null` value → KEDA's -1 decides activity (`-1 > activationThreshold`), but the value
//!   **reported is 0**: KEDA's milli conversion turns -1 into 0, and ebb's metrics server would
//!   reject a negative value with an error instead;
//! - a non-string value (KEDA would panic on the type assertion) → error.
//!
//! Auth: `authModes` bearer / basic / custom add headers, tls configures the client (and makes
//! `unsafeSsl` ignored, as in KEDA); `apiKey` is parsed but, as in KEDA, never sent. Pod identity
//! together with `authModes` is an error. Azure Managed Prometheus and Google OAuth are not
//! supported: they fail at build time rather than send unauthenticated requests. With `awsRegion`
//! and credentials that do not resolve as *configuration* (`ScalerError::Config` from
//! [`AwsShared::credentials`], e.g. no keys at all), requests go out unsigned, as KEDA's transport
//! selection silently does; any other credential error fails the query. Signed requests use the
//! scaler's client, so `unsafeSsl` applies to AMP too (KEDA's AMP transport ignores it).

use crate::scalers::SingleMetric;
use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use tracing::Instrument;

use super::{
    MetricTarget, MetricsAndActivity, ScalerConfig, ScalerContext, ScalerError,
    aws::{AwsShared, sigv4},
    http_auth::HttpAuth,
    http_client::{HttpProbe, build_http_client, upstream_error},
    metric_name,
    params::{METADATA, METADATA_AUTH, Params},
};
use crate::{
    crd::scaled_object::MetricTargetType,
    keda_metrics::{EmptyUpstreamLabels, KedaMetrics, ScaledResourceType},
};

/// Service name AMP requests are signed for.
const AMP_SERVICE: &str = "aps";

/// Runs one PromQL instant query per poll.
pub struct PrometheusScaler {
    server: reqwest::Url,
    query: String,
    threshold: f64,
    activation_threshold: f64,
    namespace: Option<String>,
    query_parameters: BTreeMap<String, String>,
    ignore_null_values: bool,
    timeout: Duration,
    /// Custom headers then auth headers, fixed at build time.
    headers: HeaderMap,
    auth: HttpAuth,
    aws_region: Option<String>,
    /// Kept for credential resolution only when `aws_region` is set.
    aws_config: Option<ScalerConfig>,
    aws: AwsShared,
    client: reqwest::Client,
    prom: prometheus_http_query::Client,
    metric_type: MetricTargetType,
    trigger_index: usize,
    empty_responses: AtomicU64,
    unsigned_warned: AtomicBool,
    probe: HttpProbe,
    /// Where empty results are counted (`keda_scaler_empty_upstream_responses_total`).
    empty_metric: Option<(Arc<KedaMetrics>, EmptyUpstreamLabels)>,
}

// Headers and the AWS config carry secrets; print names and shapes only.
impl fmt::Debug for PrometheusScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusScaler")
            .field("server", &self.server.as_str())
            .field("query", &self.query)
            .field("threshold", &self.threshold)
            .field("activation_threshold", &self.activation_threshold)
            .field("namespace", &self.namespace)
            .field(
                "query_parameters",
                &self.query_parameters.keys().collect::<Vec<_>>(),
            )
            .field("ignore_null_values", &self.ignore_null_values)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("auth", &self.auth)
            .field("aws_region", &self.aws_region)
            .finish_non_exhaustive()
    }
}

impl PrometheusScaler {
    /// Parses the trigger metadata and builds the HTTP client.
    pub fn new(config: &ScalerConfig, ctx: &ScalerContext) -> Result<Self, ScalerError> {
        let p = Params::new(config);
        let server_address: String = p.meta("serverAddress").required()?;
        let server = reqwest::Url::parse(&server_address)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                ScalerError::Config(format!(
                    "error parsing serverAddress: {server_address:?} is not an http(s) url"
                ))
            })?;
        let query: String = p.meta("query").required()?;
        let threshold: f64 = p.meta("threshold").required()?;
        let activation_threshold: f64 = p.meta("activationThreshold").or_zero()?;
        let namespace: Option<String> = p.meta("namespace").optional()?;
        let query_parameters: BTreeMap<String, String> = p.meta("queryParameters").or_zero()?;
        let custom_headers: BTreeMap<String, String> = p.meta("customHeaders").or_zero()?;
        let ignore_null_values: bool = p.meta("ignoreNullValues").or(true)?;
        let unsafe_ssl: bool = p.meta("unsafeSsl").or_zero()?;
        let timeout = p
            .get(&["timeout"], METADATA)
            .optional::<Duration>()?
            .filter(|t| !t.is_zero())
            .unwrap_or(config.global_http_timeout);
        let aws_region: Option<String> = p.get(&["awsRegion"], METADATA_AUTH).optional()?;

        let mut auth = HttpAuth::parse(&p)?;
        // KEDA's prometheus scaler parses apiKey with the shared block but never sends it.
        auth.api_key = None;
        let provider = config
            .pod_identity
            .as_ref()
            .map(|id| id.provider.as_str())
            .filter(|prov| !prov.is_empty() && *prov != "none");
        if !auth.is_empty() && provider.is_some() {
            return Err(ScalerError::Config(
                "pod identity cannot be enabled with other auth types".into(),
            ));
        }
        if auth.is_empty() {
            reject_unsupported_cloud_auth(config, provider)?;
        }
        let aws_region = aws_region.filter(|_| auth.is_empty());

        let client = build_http_client(timeout, unsafe_ssl && auth.tls.is_none(), auth.tls.as_ref())?;
        let headers = fixed_headers(&custom_headers, &auth, &client, &server)?;
        let prom = prometheus_http_query::Client::from(client.clone(), server.as_str())
            .map_err(|e| ScalerError::Config(format!("error parsing serverAddress: {e}")))?;
        let metric = metric_name(config.trigger_index, "prometheus");
        let empty_metric = ctx.metrics.clone().map(|m| {
            let labels = EmptyUpstreamLabels {
                namespace: config.namespace.clone(),
                scaled_resource: config.scaled_object.clone(),
                trigger_name: config.trigger_name.clone(),
                metric_name: metric.clone(),
                resource_type: ScaledResourceType::ScaledObject,
                ignore_null_values,
            };
            (m, labels)
        });
        Ok(Self {
            server,
            query,
            threshold,
            activation_threshold,
            namespace,
            query_parameters,
            ignore_null_values,
            timeout,
            headers,
            auth,
            aws_config: aws_region.as_ref().map(|_| config.clone()),
            aws_region,
            aws: ctx.aws.clone(),
            client,
            prom,
            metric_type: config.metric_type,
            trigger_index: config.trigger_index,
            empty_responses: AtomicU64::new(0),
            unsigned_warned: AtomicBool::new(false),
            probe: HttpProbe::new(config, ctx.metrics.clone(), &metric),
            empty_metric,
        })
    }

    /// How many queries returned an empty result (`keda_scaler_empty_upstream_responses_total`).
    pub fn empty_responses(&self) -> u64 {
        self.empty_responses.load(Ordering::Relaxed)
    }

    /// Whether `ignoreNullValues` is on (a label of the empty-responses metric).
    pub fn ignore_null_values(&self) -> bool {
        self.ignore_null_values
    }

    /// The exact URL of the query at `time` (an RFC 3339 timestamp), built as KEDA builds it.
    pub fn query_url(&self, time: &str) -> reqwest::Url {
        let mut url = query_endpoint(&self.server);
        let mut raw = format!("query={}&time={}", query_escape(&self.query), query_escape(time));
        if let Some(ns) = &self.namespace {
            raw.push_str("&namespace=");
            raw.push_str(ns);
        }
        if !self.query_parameters.is_empty() {
            // Go's `url.Values.Encode`: all pairs re-encoded, sorted by key, stable within a key.
            let mut pairs: Vec<(String, String)> =
                form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
            pairs.extend(self.query_parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            raw = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
        }
        url.set_query(Some(&raw));
        url
    }

    fn needs_direct_request(&self) -> bool {
        self.namespace.is_some() || !self.query_parameters.is_empty() || self.aws_region.is_some()
    }

    /// `GET <server>/api/v1/query`, naming this scaler's upstream in errors.
    fn target(&self) -> String {
        format!(
            "GET {}",
            crate::report::display_url(&query_endpoint(&self.server))
        )
    }

    /// Sends the query and returns the status and body.
    async fn send(&self) -> Result<(u16, bytes::Bytes), ScalerError> {
        let time = rfc3339_seconds(SystemTime::now());
        let target = self.target();
        let response = if self.needs_direct_request() {
            let mut request = self
                .client
                .get(self.query_url(&time))
                .headers(self.headers.clone())
                .build()
                .map_err(|e| ScalerError::Config(format!("invalid request to {target}: {e}")))?;
            if let Some(region) = &self.aws_region {
                self.sign(&mut request, region).await?;
            }
            self.probe.send(&self.client, request, self.timeout).await?
        } else {
            let mut builder = self.prom.query(&self.query).query("time", &time);
            for (name, value) in &self.headers {
                builder = builder.header(name.clone(), value.clone());
            }
            let started = Instant::now();
            let sent = builder.get_raw().await;
            self.probe
                .record(sent.as_ref().ok().map(|r| r.status().as_u16()), started.elapsed());
            sent.map_err(|e| match &e {
                prometheus_http_query::Error::Client(c) => match c.inner() {
                    Some(inner) => upstream_error(&target, self.timeout, inner),
                    None => ScalerError::Upstream(format!("{target}: {}", crate::report::root_cause(&e))),
                },
                _ => ScalerError::Upstream(format!("{target}: {}", crate::report::root_cause(&e))),
            })?
        };
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| upstream_error(&target, self.timeout, &e))?;
        Ok((status, body))
    }

    async fn sign(&self, request: &mut reqwest::Request, region: &str) -> Result<(), ScalerError> {
        let Some(config) = &self.aws_config else {
            return Ok(());
        };
        let lookup = self.aws.credentials(config, region);
        // The credential lookup may call STS; it shares the request's time budget.
        let creds = if self.timeout.is_zero() {
            lookup.await
        } else {
            tokio::time::timeout(self.timeout, lookup)
                .await
                .map_err(|_| ScalerError::UpstreamTimeout {
                    upstream: format!("resolving AWS credentials in {region} for {}", self.target()),
                    after: self.timeout,
                })?
        };
        match creds {
            Ok(creds) => sigv4::sign(request, &creds, region, AMP_SERVICE, SystemTime::now()),
            Err(ScalerError::Config(msg)) => {
                if !self.unsigned_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        server = %self.server,
                        error = %msg,
                        "awsRegion is set but AWS authentication does not resolve; sending prometheus queries unsigned, as KEDA does"
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs this trigger's query over a range (`/api/v1/query_range`) with the trigger's own
    /// server, namespace, query parameters, headers, auth and signing; for `ebb simulate`.
    /// Returns `(unix milliseconds, value)` of the single series (none when empty).
    pub async fn query_range(
        &self,
        start: &str,
        end: &str,
        step_seconds: f64,
    ) -> Result<Vec<(i64, f64)>, ScalerError> {
        let mut url = query_endpoint(&self.server);
        url.set_path(&format!("{}_range", url.path()));
        let mut pairs: Vec<(String, String)> = vec![
            ("query".into(), self.query.clone()),
            ("start".into(), start.to_string()),
            ("end".into(), end.to_string()),
            ("step".into(), format!("{step_seconds}")),
        ];
        if let Some(ns) = &self.namespace {
            pairs.push(("namespace".into(), ns.clone()));
        }
        pairs.extend(self.query_parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
        let raw = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        url.set_query(Some(&raw));
        let target = format!("GET {}", crate::report::display_url(&url));
        let mut request = self
            .client
            .get(url)
            .headers(self.headers.clone())
            .build()
            .map_err(|e| ScalerError::Config(format!("invalid request to {target}: {e}")))?;
        if let Some(region) = &self.aws_region {
            self.sign(&mut request, region).await?;
        }
        let response = self.probe.send(&self.client, request, self.timeout).await?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| upstream_error(&target, self.timeout, &e))?;
        parse_range_response(status, &body, &self.query)
    }

    /// Runs the query and applies `ignoreNullValues`; a JSON null gives -1.
    pub async fn query_value(&self) -> Result<f64, ScalerError> {
        let (status, body) = self
            .send()
            .instrument(self.probe.span("GET", &self.server))
            .await?;
        let answer = parse_response(status, &body, &self.query).map_err(|e| match e {
            // KEDA's text first (what people search for), then the server that refused.
            ScalerError::Upstream(m) if !(200..=299).contains(&status) => {
                ScalerError::Upstream(format!("{m} (from {})", self.target()))
            }
            other => other,
        })?;
        if answer == Answer::Empty {
            self.empty_responses.fetch_add(1, Ordering::Relaxed);
            if let Some((m, labels)) = &self.empty_metric {
                m.record_empty_upstream_response(labels);
            }
        }
        resolve(answer, self.ignore_null_values)
    }
}

impl SingleMetric for PrometheusScaler {
    fn activation_threshold(&self) -> f64 {
        self.activation_threshold
    }

    fn metric(&self) -> (String, MetricTarget) {
        (
            metric_name(self.trigger_index, "prometheus"),
            MetricTarget {
                kind: self.metric_type,
                value: self.threshold,
                integer: false,
            },
        )
    }

    fn read_metric(&self) -> BoxFuture<'_, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async move {
            let value = self.query_value().await?;
            Ok(MetricsAndActivity {
                // -1 (JSON null) still decides activity; the reported value is clamped (module doc).
                values: vec![value.max(0.0)],
                active: value > self.activation_threshold,
            })
        })
    }
}

/// Azure Managed Prometheus and Google OAuth would need their own token sources; failing here is
/// clearer than querying without the credentials the user configured.
fn reject_unsupported_cloud_auth(config: &ScalerConfig, provider: Option<&str>) -> Result<(), ScalerError> {
    if provider == Some("azure-workload") {
        return Err(ScalerError::Config(
            "prometheus: Azure Managed Prometheus (pod identity azure-workload) is not supported by ebb"
                .into(),
        ));
    }
    let p = Params::new(config);
    let gcp = provider == Some("gcp")
        || p.get(&["GoogleApplicationCredentials"], super::params::AUTH)
            .is_set()
        || p.meta("credentialsFromEnv").is_set()
        || p.meta("credentialsFromEnvFile").is_set();
    if gcp {
        return Err(ScalerError::Config(
            "prometheus: Google Managed Prometheus authentication is not supported by ebb".into(),
        ));
    }
    Ok(())
}

/// Custom headers (KEDA adds them first), then what the auth block sets (which wins on a clash).
fn fixed_headers(
    custom: &BTreeMap<String, String>,
    auth: &HttpAuth,
    client: &reqwest::Client,
    server: &reqwest::Url,
) -> Result<HeaderMap, ScalerError> {
    let mut headers = HeaderMap::new();
    for (k, v) in custom {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            ScalerError::Config(format!("error parsing customHeaders: invalid header name {k:?}"))
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            ScalerError::Config(format!(
                "error parsing customHeaders: invalid value for header {k:?}"
            ))
        })?;
        headers.append(name, value);
    }
    // HttpAuth only knows how to decorate a request; read back what it would send.
    let probe = auth
        .apply(client.get(server.clone()))
        .build()
        .map_err(|e| ScalerError::Config(format!("error parsing auth: {e}")))?;
    for (name, value) in probe.headers() {
        headers.insert(name.clone(), value.clone());
    }
    Ok(headers)
}

/// `<server>/api/v1/query`, joined like prometheus-http-query does so both request paths agree.
fn query_endpoint(server: &reqwest::Url) -> reqwest::Url {
    let mut url = server.clone();
    let path = if url.path() == "/" {
        "/api/v1/query".to_string()
    } else {
        format!("{}/api/v1/query", url.path())
    };
    url.set_path(&path);
    url.set_query(None);
    url
}

/// Go's `url.QueryEscape` equivalent (space as `+`).
fn query_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `2006-01-02T15:04:05Z` in UTC, KEDA's `time` parameter.
fn rfc3339_seconds(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// What one query response amounted to, before `ignoreNullValues` is applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// `data.result` had no element.
    Empty,
    /// The single series had an empty `value` array.
    NoValue,
    /// The single series had a JSON `null` value.
    Null,
    /// The single series' value (may be NaN or infinite).
    Value(f64),
}

#[derive(Deserialize, Default)]
struct ApiResponse {
    #[serde(default)]
    data: ApiData,
}

#[derive(Deserialize, Default)]
struct ApiData {
    #[serde(default)]
    result: Vec<ApiSeries>,
}

#[derive(Deserialize)]
struct ApiSeries {
    #[serde(default)]
    value: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "errorType", default)]
    error_type: String,
    #[serde(default)]
    error: String,
}

/// A `query_range` answer: the single series' `(unix ms, value)` points; non-numeric points
/// are dropped. Errors as [`parse_response`] words them.
pub fn parse_range_response(status: u16, body: &[u8], query: &str) -> Result<Vec<(i64, f64)>, ScalerError> {
    if !(200..=299).contains(&status) {
        // Same wording as an instant query's failure.
        return parse_response(status, body, query).map(|_| Vec::new());
    }
    #[derive(serde::Deserialize)]
    struct Range {
        data: RangeData,
    }
    #[derive(serde::Deserialize)]
    struct RangeData {
        result: Vec<RangeSeries>,
    }
    #[derive(serde::Deserialize)]
    struct RangeSeries {
        #[serde(default)]
        values: Vec<(f64, String)>,
    }
    let parsed: Range = serde_json::from_slice(body)
        .map_err(|e| ScalerError::Upstream(format!("error parsing prometheus response: {e}")))?;
    match parsed.data.result.as_slice() {
        [] => Ok(Vec::new()),
        [one] => Ok(one
            .values
            .iter()
            .filter_map(|(t, v)| {
                Some((
                    (t * 1000.0).round() as i64,
                    v.parse::<f64>().ok().filter(|v| v.is_finite())?,
                ))
            })
            .collect()),
        _ => Err(ScalerError::Upstream(format!(
            "prometheus query {query} returned multiple elements"
        ))),
    }
}

/// Interprets a `/api/v1/query` response (status and body) the way KEDA does.
pub fn parse_response(status: u16, body: &[u8], query: &str) -> Result<Answer, ScalerError> {
    if !(200..=299).contains(&status) {
        let detail = match serde_json::from_slice::<ApiError>(body) {
            Ok(e) if !e.error.is_empty() && !e.error_type.is_empty() => {
                format!(": {}: {}", e.error_type, e.error)
            }
            Ok(e) if !e.error.is_empty() => format!(": {}", e.error),
            _ => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    String::new()
                } else {
                    format!(" response: {}", text.chars().take(256).collect::<String>())
                }
            }
        };
        return Err(ScalerError::Upstream(format!(
            "prometheus query api returned error. status: {status}{detail}"
        )));
    }
    let parsed: ApiResponse = serde_json::from_slice(body)
        .map_err(|e| ScalerError::Upstream(format!("error parsing prometheus response: {e}")))?;
    let series = match parsed.data.result.as_slice() {
        [] => return Ok(Answer::Empty),
        [one] => one,
        _ => {
            return Err(ScalerError::Upstream(format!(
                "prometheus query {query} returned multiple elements"
            )));
        }
    };
    match series.value.as_slice() {
        [] => Ok(Answer::NoValue),
        [_] => Err(ScalerError::Upstream(format!(
            "prometheus query {query} didn't return enough values"
        ))),
        [_, serde_json::Value::Null, ..] => Ok(Answer::Null),
        [_, serde_json::Value::String(s), ..] => s.parse::<f64>().map(Answer::Value).map_err(|_| {
            ScalerError::Upstream(format!(
                "prometheus query {query} returned a value that is not a number: {s:?}"
            ))
        }),
        [_, other, ..] => Err(ScalerError::Upstream(format!(
            "prometheus query {query} returned a value that is not a string: {other}"
        ))),
    }
}

/// Applies `ignoreNullValues` to an answer; `Null` gives KEDA's -1.
pub fn resolve(answer: Answer, ignore_null_values: bool) -> Result<f64, ScalerError> {
    match answer {
        Answer::Empty if ignore_null_values => Ok(0.0),
        Answer::Empty => Err(ScalerError::Upstream(
            "prometheus metrics 'prometheus' target may be lost, the result is empty".into(),
        )),
        Answer::NoValue if ignore_null_values => Ok(0.0),
        Answer::NoValue => Err(ScalerError::Upstream(
            "prometheus metrics 'prometheus' target may be lost, the value list is empty".into(),
        )),
        Answer::Null => Ok(-1.0),
        Answer::Value(v) if v.is_finite() => Ok(v),
        Answer::Value(_) if ignore_null_values => Ok(0.0),
        Answer::Value(v) => Err(ScalerError::Upstream(format!(
            "prometheus query returns {}",
            go_float(v)
        ))),
    }
}

/// Prometheus' spelling of non-finite values.
fn go_float(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::trigger_authentication::AuthPodIdentity;
    use crate::scalers::{MetricSpec, Scaler};

    const SERVER: (&str, &str) = ("serverAddress", "http://prom:9090");
    const QUERY: (&str, &str) = ("query", "sum(rate(http_requests_total[1m]))");
    const THRESHOLD: (&str, &str) = ("threshold", "100.5");

    fn config(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> ScalerConfig {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ScalerConfig {
            trigger_index: 3,
            trigger_type: "prometheus".into(),
            metadata: map(meta),
            auth_params: map(auth),
            global_http_timeout: Duration::from_secs(3),
            ..Default::default()
        }
    }

    fn build(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<PrometheusScaler, ScalerError> {
        PrometheusScaler::new(&config(meta, auth), &ScalerContext::default())
    }

    fn err_of(r: Result<PrometheusScaler, ScalerError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn defaults_and_metric_spec() {
        let s = match build(&[SERVER, QUERY, THRESHOLD], &[]) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.activation_threshold, 0.0);
        assert!(s.ignore_null_values());
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.namespace, None);
        assert!(s.aws_region.is_none());
        assert!(s.headers.is_empty());
        assert!(!s.needs_direct_request());
        assert_eq!(
            s.metric_specs(),
            vec![MetricSpec::External {
                name: "s3-prometheus".into(),
                target: MetricTarget {
                    kind: MetricTargetType::AverageValue,
                    value: 100.5,
                    integer: false
                }
            }]
        );
        assert_eq!(s.empty_responses(), 0);
    }

    type Kv<'a> = &'a [(&'a str, &'a str)];

    #[test]
    fn metadata_table() {
        // (extra metadata, auth params, expected error substring or "" for success)
        let cases: &[(Kv, Kv, &str)] = &[
            (&[], &[], ""),
            (&[("activationThreshold", "5.5")], &[], ""),
            (&[("threshold", "1e3")], &[], ""),
            (&[("threshold", "abc")], &[], "error parsing threshold"),
            (
                &[("threshold", "  ")],
                &[],
                "missing required parameter \"threshold\"",
            ),
            (
                &[("activationThreshold", "x")],
                &[],
                "error parsing activationThreshold",
            ),
            (&[("ignoreNullValues", "false")], &[], ""),
            (
                &[("ignoreNullValues", "yes")],
                &[],
                "error parsing ignoreNullValues",
            ),
            (&[("unsafeSsl", "true")], &[], ""),
            (&[("unsafeSsl", "nope")], &[], "error parsing unsafeSsl"),
            (&[("timeout", "1500")], &[], ""),
            (&[("timeout", "2s")], &[], ""),
            (&[("timeout", "-1")], &[], "error parsing timeout"),
            (&[("customHeaders", "X-Scope-OrgID=t1,X-B=2")], &[], ""),
            (&[("customHeaders", "a=b=c")], &[], "error parsing customHeaders"),
            (&[("customHeaders", "bad header=1")], &[], "invalid header name"),
            (
                &[("queryParameters", "dedup=false,partial_response=true")],
                &[],
                "",
            ),
            (
                &[("queryParameters", "nokey")],
                &[],
                "error parsing queryParameters",
            ),
            (&[("serverAddress", "not a url")], &[], "not an http(s) url"),
            (&[("serverAddress", "ftp://x")], &[], "not an http(s) url"),
            (&[("authModes", "bearer")], &[("bearerToken", "t")], ""),
            (&[("authModes", "bearer")], &[], "bearerToken is required"),
            (&[("authModes", "basic")], &[("username", "u")], ""),
            (
                &[("authModes", "custom")],
                &[("customAuthHeader", "X-Auth"), ("customAuthValue", "v")],
                "",
            ),
            (&[("authModes", "magic")], &[], "error parsing authModes"),
            (&[("awsRegion", "eu-west-1")], &[], ""),
            (&[("credentialsFromEnv", "GOOGLE")], &[], "not supported"),
        ];
        for (extra, auth, want) in cases {
            let mut meta = vec![SERVER, QUERY, THRESHOLD];
            meta.retain(|(k, _)| !extra.iter().any(|(ek, _)| ek == k));
            meta.extend_from_slice(extra);
            let got = err_of(build(&meta, auth));
            if want.is_empty() {
                assert_eq!(got, "", "{extra:?} {auth:?}");
            } else {
                assert!(got.contains(want), "{extra:?}: {got:?} does not contain {want:?}");
            }
        }
        for missing in ["serverAddress", "query", "threshold"] {
            let meta: Vec<_> = [SERVER, QUERY, THRESHOLD]
                .into_iter()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(
                err_of(build(&meta, &[])),
                format!("missing required parameter \"{missing}\" in [triggerMetadata]")
            );
        }
    }

    #[test]
    fn pod_identity_excludes_auth_modes() {
        let mut c = config(
            &[SERVER, QUERY, THRESHOLD, ("authModes", "bearer")],
            &[("bearerToken", "t")],
        );
        for (provider, ok) in [("", true), ("none", true), ("aws", false), ("gcp", false)] {
            c.pod_identity = Some(AuthPodIdentity {
                provider: provider.into(),
                ..Default::default()
            });
            let r = PrometheusScaler::new(&c, &ScalerContext::default());
            if ok {
                assert!(r.is_ok(), "{provider}: {r:?}");
            } else {
                assert_eq!(
                    err_of(r),
                    "pod identity cannot be enabled with other auth types",
                    "{provider}"
                );
            }
        }
        let mut c = config(&[SERVER, QUERY, THRESHOLD], &[]);
        c.pod_identity = Some(AuthPodIdentity {
            provider: "azure-workload".into(),
            ..Default::default()
        });
        assert!(err_of(PrometheusScaler::new(&c, &ScalerContext::default())).contains("not supported"));
    }

    #[test]
    fn aws_region_only_without_auth_modes() {
        let s = build(&[SERVER, QUERY, THRESHOLD], &[("awsRegion", "us-east-2")]);
        assert_eq!(s.ok().and_then(|s| s.aws_region), Some("us-east-2".to_string()));
        let s = build(
            &[
                SERVER,
                QUERY,
                THRESHOLD,
                ("awsRegion", "us-east-2"),
                ("authModes", "bearer"),
            ],
            &[("bearerToken", "t")],
        );
        assert_eq!(s.ok().map(|s| s.aws_region), Some(None));
    }

    #[test]
    fn headers_custom_then_auth() {
        let s = build(
            &[
                SERVER,
                QUERY,
                THRESHOLD,
                ("customHeaders", "X-Scope-OrgID=t1,Authorization=overridden"),
                ("authModes", "bearer,apiKey"),
            ],
            &[("bearerToken", "tok"), ("apiKey", "k")],
        );
        let headers = match s {
            Ok(s) => s.headers,
            Err(e) => panic!("{e}"),
        };
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(get("x-scope-orgid").as_deref(), Some("t1"));
        assert_eq!(get("authorization").as_deref(), Some("Bearer tok"));
        assert_eq!(get("x-api-key"), None);
    }

    #[test]
    fn urls_as_keda_builds_them() {
        let time = "2024-01-02T03:04:05Z";
        let url = |meta: &[(&str, &str)]| {
            let mut all = vec![QUERY, THRESHOLD];
            all.extend_from_slice(meta);
            build(&all, &[])
                .map(|s| s.query_url(time).to_string())
                .unwrap_or_default()
        };
        let q = "query=sum%28rate%28http_requests_total%5B1m%5D%29%29&time=2024-01-02T03%3A04%3A05Z";
        assert_eq!(url(&[SERVER]), format!("http://prom:9090/api/v1/query?{q}"));
        assert_eq!(
            url(&[("serverAddress", "http://prom:9090/")]),
            format!("http://prom:9090/api/v1/query?{q}")
        );
        assert_eq!(
            url(&[("serverAddress", "https://x/prometheus")]),
            format!("https://x/prometheus/api/v1/query?{q}")
        );
        assert_eq!(
            url(&[SERVER, ("namespace", "team-a")]),
            format!("http://prom:9090/api/v1/query?{q}&namespace=team-a")
        );
        // Not escaped: `&` in the namespace starts another parameter, as in KEDA.
        assert_eq!(
            url(&[SERVER, ("namespace", "a&b=c")]),
            format!("http://prom:9090/api/v1/query?{q}&namespace=a&b=c")
        );
        // queryParameters re-encode everything sorted by key.
        assert_eq!(
            url(&[
                SERVER,
                ("namespace", "ns"),
                ("queryParameters", "z=1 2,dedup=false")
            ]),
            format!("http://prom:9090/api/v1/query?dedup=false&namespace=ns&{q}&z=1+2")
        );
        assert!(
            build(&[SERVER, QUERY, THRESHOLD, ("namespace", "n")], &[])
                .is_ok_and(|s| s.needs_direct_request())
        );
        assert_eq!(
            rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(86_399)),
            "1970-01-01T23:59:59Z"
        );
    }

    fn vector(values: &[&str]) -> String {
        let series: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"metric":{{"a":"b"}},"value":[1700000000.1,{v}]}}"#))
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            series.join(",")
        )
    }

    #[test]
    fn response_table() {
        let q = "q";
        let ok = |body: &str| parse_response(200, body.as_bytes(), q).map_err(|e| e.to_string());
        assert_eq!(ok(&vector(&[r#""42""#])), Ok(Answer::Value(42.0)));
        assert_eq!(ok(&vector(&[r#""1.5e3""#])), Ok(Answer::Value(1500.0)));
        assert_eq!(ok(&vector(&[r#""-3""#])), Ok(Answer::Value(-3.0)));
        assert_eq!(ok(&vector(&["null"])), Ok(Answer::Null));
        assert_eq!(ok(&vector(&[])), Ok(Answer::Empty));
        assert_eq!(ok(r#"{"status":"success"}"#), Ok(Answer::Empty));
        assert_eq!(
            ok(r#"{"data":{"result":[{"metric":{},"value":[]}]}}"#),
            Ok(Answer::NoValue)
        );
        assert_eq!(ok(r#"{"data":{"result":[{"metric":{}}]}}"#), Ok(Answer::NoValue));
        assert!(matches!(ok(&vector(&[r#""NaN""#])), Ok(Answer::Value(v)) if v.is_nan()));
        assert_eq!(ok(&vector(&[r#""+Inf""#])), Ok(Answer::Value(f64::INFINITY)));
        assert_eq!(ok(&vector(&[r#""-Inf""#])), Ok(Answer::Value(f64::NEG_INFINITY)));
        assert_eq!(
            ok(&vector(&[r#""1""#, r#""2""#])),
            Err("prometheus query q returned multiple elements".into())
        );
        assert_eq!(
            ok(r#"{"data":{"result":[{"value":[1700000000]}]}}"#),
            Err("prometheus query q didn't return enough values".into())
        );
        assert!(ok(&vector(&[r#""abc""#])).is_err_and(|e| e.contains("not a number")));
        assert!(ok(&vector(&["42"])).is_err_and(|e| e.contains("not a string")));
        assert!(ok("not json").is_err_and(|e| e.starts_with("error parsing prometheus response")));
        // A scalar result has no series objects; KEDA fails to decode it too.
        assert!(ok(r#"{"data":{"resultType":"scalar","result":[1700000000,"1"]}}"#).is_err());

        let status = |code: u16, body: &str| {
            parse_response(code, body.as_bytes(), q)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            status(
                400,
                r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\""}"#
            ),
            "prometheus query api returned error. status: 400: bad_data: invalid parameter \"query\""
        );
        assert_eq!(
            status(403, "Forbidden\n"),
            "prometheus query api returned error. status: 403 response: Forbidden"
        );
        assert_eq!(
            status(503, ""),
            "prometheus query api returned error. status: 503"
        );
        assert!(parse_response(204, b"{}", q).is_ok());
    }

    #[test]
    fn ignore_null_values_table() {
        let cases = [
            (Answer::Empty, true, Ok(0.0)),
            (
                Answer::Empty,
                false,
                Err("target may be lost, the result is empty"),
            ),
            (Answer::NoValue, true, Ok(0.0)),
            (Answer::NoValue, false, Err("the value list is empty")),
            (Answer::Null, true, Ok(-1.0)),
            (Answer::Null, false, Ok(-1.0)),
            (Answer::Value(7.0), false, Ok(7.0)),
            (Answer::Value(f64::NAN), true, Ok(0.0)),
            (
                Answer::Value(f64::NAN),
                false,
                Err("prometheus query returns NaN"),
            ),
            (Answer::Value(f64::INFINITY), true, Ok(0.0)),
            (
                Answer::Value(f64::INFINITY),
                false,
                Err("prometheus query returns +Inf"),
            ),
            (
                Answer::Value(f64::NEG_INFINITY),
                false,
                Err("prometheus query returns -Inf"),
            ),
        ];
        for (answer, ignore, want) in cases {
            let got = resolve(answer.clone(), ignore).map_err(|e| e.to_string());
            match want {
                Ok(v) => assert_eq!(got, Ok(v), "{answer:?} {ignore}"),
                Err(msg) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(msg)),
                    "{answer:?} {ignore}: {got:?}"
                ),
            }
        }
    }
}
