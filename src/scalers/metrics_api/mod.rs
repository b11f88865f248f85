//! `metrics-api` scaler (spec §12.6): `GET url`, pull one number out of the body at
//! `valueLocation`, compare it with `targetValue` / `activationTargetValue`.
//!
//! Value extraction per `format`:
//! - `json`: full GJSON, as KEDA (the `gjson` crate): dot paths, array indexes, `*`/`?` wildcards,
//!   `#` and `#(...)` queries, `@` modifiers, `\` escapes.
//! - `yaml`: dot path through maps and lists (list indices as keys); walking stops at the first
//!   scalar, so extra segments after it are ignored, as in KEDA.
//! - `xml`: KEDA cannot actually read xml (Go's decoder can't fill a generic map), so ebb picks a
//!   shape: the document is read into an element tree, and segments name child elements
//!   **starting below the root element** (`<root><metrics><queue>5</queue></metrics></root>` with
//!   `metrics.queue` gives 5). Namespace prefixes and attributes are ignored. When several
//!   siblings share a name, a numeric segment picks one (`items.item.1`). As with yaml, walking
//!   stops at the first element without child elements; its trimmed text is the value.
//! - `prometheus`: text exposition; `valueLocation` is `metric` or `metric{label="v",...}`, every
//!   matcher (`=`, `!=`, `=~`, `!~`) compared as plain equality, first matching sample wins.
//!
//! Strings are read as Kubernetes quantities (`"1k"` → 1000). The formats live in [`format`];
//! this module reads the trigger and fetches the body.

pub mod format;

use crate::scalers::SingleMetric;
use std::{fmt, time::Duration};

use futures::future::BoxFuture;
use tracing::Instrument;

use self::format::{Format, extract_value};
use super::{
    MetricTarget, MetricsAndActivity, ScalerConfig, ScalerContext, ScalerError,
    http_auth::HttpAuth,
    http_client::{HttpProbe, build_http_client, request_target, upstream_error},
    metric_name,
    params::{METADATA, Params},
};
use crate::crd::scaled_object::MetricTargetType;

/// `aggregationType` (only meaningful with endpoint aggregation, which ebb does not do yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregationType {
    /// Mean of the endpoint values (default).
    Average,
    /// Sum of the endpoint values.
    Sum,
    /// Largest endpoint value.
    Max,
    /// Smallest endpoint value.
    Min,
}

/// Reads one number from an HTTP endpoint.
pub struct MetricsApiScaler {
    url: reqwest::Url,
    value_location: String,
    target_value: f64,
    activation_target_value: f64,
    format: Format,
    aggregation_type: AggregationType,
    timeout: Duration,
    auth: HttpAuth,
    client: reqwest::Client,
    metric_type: MetricTargetType,
    trigger_index: usize,
    probe: HttpProbe,
}

impl fmt::Debug for MetricsApiScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiScaler")
            .field("url", &self.url.as_str())
            .field("value_location", &self.value_location)
            .field("target_value", &self.target_value)
            .field("activation_target_value", &self.activation_target_value)
            .field("format", &self.format)
            .field("aggregation_type", &self.aggregation_type)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl MetricsApiScaler {
    /// Parses the trigger metadata and builds the HTTP client.
    pub fn new(config: &ScalerConfig) -> Result<Self, ScalerError> {
        let p = Params::new(config);
        let url_text: String = p.meta("url").required()?;
        let url = reqwest::Url::parse(&url_text)
            .map_err(|e| ScalerError::Config(format!("error parsing url: {url_text:?}: {e}")))?;
        let value_location: String = p.meta("valueLocation").required()?;
        let format = p
            .meta("format")
            .one_of(Format::NAMES)?
            .and_then(|f| Format::parse(&f))
            .unwrap_or(Format::Json);
        let target_value: f64 = p.meta("targetValue").or_zero()?;
        if target_value == 0.0 && !config.as_metric_source {
            return Err(ScalerError::Config("no targetValue given in metadata".into()));
        }
        let activation_target_value: f64 = p.meta("activationTargetValue").or_zero()?;
        let unsafe_ssl: bool = p.meta("unsafeSsl").or_zero()?;
        if p.meta("aggregateFromKubeServiceEndpoints").or_zero::<bool>()? {
            return Err(ScalerError::Config(
                "aggregateFromKubeServiceEndpoints is not supported yet".into(),
            ));
        }
        let aggregation_type = match p
            .meta("aggregationType")
            .one_of(&["average", "sum", "max", "min"])?
            .as_deref()
        {
            Some("sum") => AggregationType::Sum,
            Some("max") => AggregationType::Max,
            Some("min") => AggregationType::Min,
            _ => AggregationType::Average,
        };
        let timeout = p
            .get(&["timeout"], METADATA)
            .optional::<Duration>()?
            .filter(|t| !t.is_zero())
            .unwrap_or(config.global_http_timeout);
        let auth = HttpAuth::parse(&p)?;
        let client = build_http_client(timeout, unsafe_ssl, auth.tls.as_ref())?;
        let probe = HttpProbe::new(
            config,
            None,
            &metric_name(config.trigger_index, &format!("metric-api-{value_location}")),
        );
        Ok(Self {
            url,
            value_location,
            target_value,
            activation_target_value,
            format,
            aggregation_type,
            timeout,
            auth,
            client,
            metric_type: config.metric_type,
            trigger_index: config.trigger_index,
            probe,
        })
    }

    /// Counts this scaler's requests in `ctx`'s KEDA metrics.
    pub fn observed(mut self, ctx: &ScalerContext) -> Self {
        self.probe.set_metrics(ctx.metrics.clone());
        self
    }

    async fn fetch(&self) -> Result<f64, ScalerError> {
        let request = self
            .auth
            .request(&self.client, reqwest::Method::GET, self.url.as_str())?
            .build()
            .map_err(|e| ScalerError::Config(format!("invalid request to {}: {e}", self.url)))?;
        let target = request_target(&request);
        let resp = self.probe.send(&self.client, request, self.timeout).await?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            // KEDA's message names the path only; the host is what tells two upstreams apart.
            return Err(ScalerError::Upstream(format!(
                "{}: api returned {}",
                crate::report::display_url(&self.url),
                status.as_u16()
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| upstream_error(&target, self.timeout, &e))?;
        extract_value(self.format, &body, &self.value_location)
            .map_err(|e| ScalerError::Upstream(e.to_string()))
    }
}

impl SingleMetric for MetricsApiScaler {
    fn activation_threshold(&self) -> f64 {
        self.activation_target_value
    }

    fn metric(&self) -> (String, MetricTarget) {
        (
            metric_name(self.trigger_index, &format!("metric-api-{}", self.value_location)),
            MetricTarget {
                kind: self.metric_type,
                value: self.target_value,
                integer: false,
            },
        )
    }

    fn read_metric(&self) -> BoxFuture<'_, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async move {
            let value = self.fetch().instrument(self.probe.span("GET", &self.url)).await?;
            Ok(MetricsAndActivity {
                values: vec![value],
                active: value > self.activation_target_value,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        convert::Infallible,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::scalers::{MetricSpec, Scaler};

    fn config(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> ScalerConfig {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ScalerConfig {
            trigger_type: "metrics-api".into(),
            trigger_index: 1,
            metadata: map(meta),
            auth_params: map(auth),
            global_http_timeout: Duration::from_secs(3),
            ..Default::default()
        }
    }

    type Kv<'a> = &'a [(&'a str, &'a str)];

    const URL: (&str, &str) = ("url", "http://127.0.0.1:1/api/v1/stats");
    const LOC: (&str, &str) = ("valueLocation", "components.worker.tasks");
    const TARGET: (&str, &str) = ("targetValue", "10");

    fn build(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<MetricsApiScaler, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        MetricsApiScaler::new(&config(meta, auth)).map_err(|e| e.to_string())
    }

    #[test]
    fn metadata_valid() {
        let s = build(&[URL, LOC, TARGET, ("activationTargetValue", "2.5")], &[]);
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.format, Format::Json);
        assert_eq!(s.activation_target_value, 2.5);
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.aggregation_type, AggregationType::Average);
        assert_eq!(
            s.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-metric-api-components-worker-tasks".into(),
                target: MetricTarget {
                    kind: MetricTargetType::AverageValue,
                    value: 10.0,
                    integer: false
                },
            }]
        );
        let s = build(
            &[
                URL,
                LOC,
                TARGET,
                ("format", "yaml"),
                ("timeout", "1500"),
                ("unsafeSsl", "true"),
                ("aggregationType", "max"),
            ],
            &[],
        );
        assert_eq!(
            s.as_ref().map(|s| (s.format, s.timeout, s.aggregation_type)),
            Ok((Format::Yaml, Duration::from_millis(1500), AggregationType::Max))
        );
        assert!(
            build(&[URL, LOC, TARGET, ("timeout", "2s")], &[])
                .is_ok_and(|s| s.timeout == Duration::from_secs(2))
        );
        // As a scalingModifiers source the target may be absent.
        let mut c = config(&[URL, LOC], &[]);
        c.as_metric_source = true;
        assert!(MetricsApiScaler::new(&c).is_ok());
    }

    #[test]
    fn metadata_invalid() {
        let cases: &[(Kv, Kv, &str)] = &[
            (
                &[LOC, TARGET],
                &[],
                "missing required parameter \"url\" in [triggerMetadata]",
            ),
            (
                &[URL, TARGET],
                &[],
                "missing required parameter \"valueLocation\" in [triggerMetadata]",
            ),
            (&[URL, LOC], &[], "no targetValue given in metadata"),
            (
                &[URL, LOC, ("targetValue", "0")],
                &[],
                "no targetValue given in metadata",
            ),
            (
                &[URL, LOC, ("targetValue", "ten")],
                &[],
                "error parsing targetValue",
            ),
            (
                &[URL, LOC, TARGET, ("format", "csv")],
                &[],
                "error parsing format",
            ),
            (
                &[URL, LOC, TARGET, ("format", "JSON")],
                &[],
                "error parsing format",
            ),
            (
                &[URL, LOC, TARGET, ("unsafeSsl", "yes")],
                &[],
                "error parsing unsafeSsl",
            ),
            (
                &[URL, LOC, TARGET, ("timeout", "-5s")],
                &[],
                "error parsing timeout",
            ),
            (
                &[URL, LOC, TARGET, ("aggregationType", "median")],
                &[],
                "error parsing aggregationType",
            ),
            (
                &[URL, LOC, TARGET, ("aggregateFromKubeServiceEndpoints", "true")],
                &[],
                "aggregateFromKubeServiceEndpoints is not supported yet",
            ),
            (&[("url", "not a url"), LOC, TARGET], &[], "error parsing url"),
            (
                &[URL, LOC, TARGET, ("authMode", "magic")],
                &[],
                "error parsing authModes",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "bearer")],
                &[],
                "bearerToken is required",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "apiKey")],
                &[],
                "apiKey is required",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "basic")],
                &[],
                "username is required",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "tls")],
                &[("cert", "x")],
                "cert and key are required",
            ),
        ];
        for (meta, auth, want) in cases {
            let got = build(meta, auth).err().unwrap_or_default();
            assert!(got.contains(want), "{meta:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn metadata_auth_modes() {
        use crate::scalers::http_auth::ApiKeyMethod;
        let s = build(
            &[URL, LOC, TARGET, ("authMode", "apiKey"), ("method", "query")],
            &[("apiKey", "k")],
        );
        let key = s.ok().and_then(|s| s.auth.api_key);
        assert_eq!(
            key.map(|k| (k.method, k.effective_param_name().to_string())),
            Some((ApiKeyMethod::Query, "api_key".to_string()))
        );
        let s = build(
            &[
                URL,
                LOC,
                TARGET,
                ("authMode", "apiKey"),
                ("keyParamName", "X-Key"),
            ],
            &[("apiKey", "k")],
        );
        let key = s.ok().and_then(|s| s.auth.api_key);
        assert_eq!(
            key.map(|k| (k.method, k.effective_param_name().to_string())),
            Some((ApiKeyMethod::Header, "X-Key".to_string()))
        );
        let s = build(&[URL, LOC, TARGET, ("authMode", "bearer")], &[("token", "t")]);
        assert_eq!(s.ok().and_then(|s| s.auth.bearer).as_deref(), Some("t"));
    }

    // ---- real HTTP against a local hyper server ----

    #[derive(Clone)]
    struct Reply {
        status: u16,
        body: &'static str,
        delay: Duration,
    }

    type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

    async fn start_server(reply: Reply) -> (String, Seen) {
        use http_body_util::Full;
        use hyper::{Response, body::Bytes, server::conn::http1, service::service_fn};
        use hyper_util::rt::TokioIo;

        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        };
        let seen: Seen = Arc::default();
        let seen_srv = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen_srv.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let reply = reply.clone();
                        if let Ok(mut s) = seen.lock() {
                            s.push((req.uri().to_string(), req.headers().clone()));
                        }
                        async move {
                            tokio::time::sleep(reply.delay).await;
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(reply.body.as_bytes())));
                            *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
                                .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    async fn query(
        reply: Reply,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> (Result<MetricsAndActivity, ScalerError>, Seen) {
        let (base, seen) = start_server(reply).await;
        let url = format!("{base}/api/stats?x=1");
        let mut all = vec![("url", url.as_str()), ("valueLocation", "v"), TARGET];
        all.extend_from_slice(meta);
        let scaler = match build(&all, auth) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let fut = scaler.get_metrics_and_activity("s1-metric-api-v");
        let result = match tokio::time::timeout(Duration::from_secs(10), fut).await {
            Ok(r) => r,
            Err(_) => panic!("test request hung"),
        };
        (result, seen)
    }

    fn ok_reply(body: &'static str) -> Reply {
        Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }

    /// The spans opened while a future runs, with their fields, as a subscriber scoped to that
    /// future sees them (no process-wide subscriber: tests run in parallel).
    #[derive(Clone, Default)]
    struct SpanLog(Arc<Mutex<Vec<(String, SpanFields)>>>);

    type SpanFields = BTreeMap<String, String>;

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl tracing::field::Visit for Fields<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name().to_string(), value.to_string());
        }

        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_string(), format!("{value:?}"));
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanLog {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _id: &tracing::span::Id,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            if let Ok(mut spans) = self.0.lock() {
                spans.push((attrs.metadata().name().to_string(), fields));
            }
        }
    }

    #[tokio::test]
    async fn a_read_runs_in_one_upstream_span_naming_trigger_type_and_host() {
        use tracing::instrument::WithSubscriber;
        use tracing_subscriber::layer::SubscriberExt;

        let (base, seen) = start_server(ok_reply(r#"{"v": 42}"#)).await;
        let url = format!("{base}/api/stats");
        let mut cfg = config(&[("url", &url), ("valueLocation", "v"), TARGET], &[]);
        cfg.trigger_name = "queue".into();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scaler = MetricsApiScaler::new(&cfg).expect("builds");
        let log = SpanLog::default();
        let subscriber = tracing_subscriber::registry().with(log.clone());
        let read = scaler
            .get_metrics_and_activity("s1-metric-api-v")
            .with_subscriber(subscriber);
        let answer = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("read hung")
            .expect("read");
        assert_eq!(answer.values, vec![42.0]);
        assert_eq!(seen.lock().map(|s| s.len()).unwrap_or_default(), 1);

        let spans = log.0.lock().map(|s| s.clone()).unwrap_or_default();
        let upstream: Vec<_> = spans.iter().filter(|(name, _)| name == "upstream").collect();
        assert_eq!(upstream.len(), 1, "one upstream span per call: {spans:?}");
        let host = base.trim_start_matches("http://");
        let want: SpanFields = [
            ("trigger", "1"),
            ("trigger_name", "queue"),
            ("scaler", "metrics-api"),
            ("host", host),
            ("call", "GET"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(upstream[0].1, want);
    }

    #[tokio::test]
    async fn http_200_json_and_activation() {
        let (r, _) = query(ok_reply(r#"{"v": 12}"#), &[("activationTargetValue", "12")], &[]).await;
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Ok(MetricsAndActivity {
                values: vec![12.0],
                active: false
            })
        );
        let (r, _) = query(
            ok_reply("v: 13\n"),
            &[("format", "yaml"), ("activationTargetValue", "12")],
            &[],
        )
        .await;
        assert_eq!(r.map(|m| (m.values, m.active)).ok(), Some((vec![13.0], true)));
    }

    #[tokio::test]
    async fn http_non_200_is_an_error_with_status() {
        let reply = Reply {
            status: 500,
            body: "boom",
            delay: Duration::ZERO,
        };
        let (r, _) = query(reply, &[], &[]).await;
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        // The host and path, never the query string (API keys travel there).
        assert!(
            e.starts_with("http://127.0.0.1:") && e.ends_with("/api/stats: api returned 500"),
            "{e}"
        );
        let reply = Reply {
            status: 204,
            body: "",
            delay: Duration::ZERO,
        };
        let (r, _) = query(reply, &[], &[]).await;
        assert!(r.is_err_and(|e| e.to_string().ends_with("api returned 204")));
    }

    #[tokio::test]
    async fn http_bearer_header_arrives() {
        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[("authModes", "bearer")],
            &[("bearerToken", "tok123")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let auth = seen
            .first()
            .and_then(|(_, h)| h.get("authorization"))
            .and_then(|v| v.to_str().ok());
        assert_eq!(auth, Some("Bearer tok123"));
    }

    #[tokio::test]
    async fn http_api_key_in_query_and_header_arrives() {
        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[
                ("authMode", "apiKey"),
                ("method", "query"),
                ("keyParamName", "key"),
            ],
            &[("apiKey", "s e/cret")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(
            seen.first().map(|(u, _)| u.as_str()),
            Some("/api/stats?x=1&key=s+e%2Fcret")
        );

        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[("authMode", "apiKey")],
            &[("apiKey", "hk")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let key = seen
            .first()
            .and_then(|(_, h)| h.get("x-api-key"))
            .and_then(|v| v.to_str().ok());
        assert_eq!(key, Some("hk"));
    }

    #[tokio::test]
    async fn http_basic_auth_arrives() {
        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[("authMode", "basic")],
            &[("username", "u"), ("password", "p")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let auth = seen
            .first()
            .and_then(|(_, h)| h.get("authorization"))
            .and_then(|v| v.to_str().ok());
        assert_eq!(auth, Some("Basic dTpw"));
    }

    #[tokio::test]
    async fn http_timeout_is_a_timeout_error() {
        let reply = Reply {
            status: 200,
            body: r#"{"v": 1}"#,
            delay: Duration::from_secs(3),
        };
        let started = std::time::Instant::now();
        let (r, _) = query(reply, &[("timeout", "200")], &[]).await;
        assert!(
            matches!(&r, Err(ScalerError::UpstreamTimeout { after, .. }) if *after == Duration::from_millis(200)),
            "{r:?}"
        );
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("GET http://127.0.0.1:") && e.ends_with("/api/stats: timed out after 200ms"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn http_connection_refused_is_upstream() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scaler = build(&[URL, LOC, TARGET], &[]);
        let r = match scaler {
            Ok(s) => s.get_metrics_and_activity("x").await,
            Err(e) => panic!("{e}"),
        };
        assert!(matches!(r, Err(ScalerError::Upstream(_))), "{r:?}");
        // Host and root cause, not reqwest's "error sending request for url".
        assert_eq!(
            r.err().map(|e| e.to_string()).unwrap_or_default(),
            "GET http://127.0.0.1:1/api/v1/stats: connection refused"
        );
    }

    #[tokio::test]
    async fn http_dns_failure_names_the_host() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scaler = match build(&[("url", "http://ebb-no-such-host.invalid/q"), LOC, TARGET], &[]) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let r = scaler.get_metrics_and_activity("x").await;
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("GET http://ebb-no-such-host.invalid/q: DNS lookup failed: "),
            "{e}"
        );
    }

    async fn start_tls_server(cert_der: Vec<u8>, key_der: Vec<u8>) -> String {
        use http_body_util::Full;
        use hyper::{Response, body::Bytes, server::conn::http1, service::service_fn};
        use hyper_util::rt::TokioIo;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
        let tls = match rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert_der)], key)
        {
            Ok(c) => c,
            Err(e) => panic!("server config: {e}"),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"v\": 4}"))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("https://127.0.0.1:{port}/stats")
    }

    #[tokio::test]
    async fn https_needs_trust_unsafe_ssl_or_ca() {
        let generated = match rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]) {
            Ok(g) => g,
            Err(e) => panic!("rcgen: {e}"),
        };
        let cert_pem = generated.cert.pem();
        let key_pem = generated.signing_key.serialize_pem();
        let url = start_tls_server(
            generated.cert.der().to_vec(),
            generated.signing_key.serialize_der(),
        )
        .await;
        let base = [("url", url.as_str()), ("valueLocation", "v"), TARGET];
        let run = |meta: Vec<(&'static str, &'static str)>, auth: Vec<(&'static str, String)>| {
            let mut all = base.to_vec();
            all.extend(meta);
            let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let scaler = build(&all, &auth);
            async move {
                let scaler = match scaler {
                    Ok(s) => s,
                    Err(e) => panic!("{e}"),
                };
                let fut = scaler.get_metrics_and_activity("x");
                match tokio::time::timeout(Duration::from_secs(10), fut).await {
                    Ok(r) => r.map(|m| m.values),
                    Err(_) => panic!("https request hung"),
                }
            }
        };
        let untrusted = run(vec![], vec![]).await;
        assert!(
            matches!(&untrusted, Err(ScalerError::Upstream(m)) if m.ends_with(": TLS: invalid peer certificate: UnknownIssuer") && m.contains("https://127.0.0.1:")),
            "{untrusted:?}"
        );
        assert_eq!(
            run(vec![("unsafeSsl", "true")], vec![]).await.ok(),
            Some(vec![4.0])
        );
        let auth = vec![("cert", cert_pem.clone()), ("key", key_pem), ("ca", cert_pem)];
        let trusted = run(vec![("authModes", "tls")], auth).await;
        assert_eq!(trusted.map_err(|e| e.to_string()), Ok(vec![4.0]));
    }
}
