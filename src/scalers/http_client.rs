//! The scalers' outbound HTTP: clients shared by every trigger with the same settings, and
//! [`HttpProbe`], which counts each request in KEDA's metrics and turns a failure into an error
//! naming the upstream.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{ScalerConfig, ScalerError, authority, http_auth::TlsAuth, upstream_span};
use crate::keda_metrics::{HttpRequestLabels, KedaMetrics};

/// Builds an HTTP client: `timeout` (zero = none, as in Go), `unsafe_ssl` skips certificate
/// verification, `tls` adds a client identity and extra trusted roots.
pub fn build_http_client(
    timeout: Duration,
    unsafe_ssl: bool,
    tls: Option<&TlsAuth>,
) -> Result<reqwest::Client, ScalerError> {
    static CLIENTS: std::sync::OnceLock<HttpClients> = std::sync::OnceLock::new();
    CLIENTS
        .get_or_init(HttpClients::new)
        .get(timeout, unsafe_ssl, tls)
}

/// HTTP clients shared by triggers with the same settings.
///
/// Building a client reads and parses the system trust store (about 3 ms and 100 KB each,
/// measured by benches/reconcile.rs), so triggers with the same settings share one; the key
/// is the settings themselves, never a hash, so no trigger can get another's client identity.
struct HttpClients {
    clients: moka::sync::Cache<String, reqwest::Client>,
    /// Clients this cache built (not served from it); tests check sharing with it.
    built: std::sync::atomic::AtomicUsize,
}

impl HttpClients {
    fn new() -> Self {
        Self {
            clients: moka::sync::Cache::builder()
                .max_capacity(1024)
                // Rotated client certificates leave their old client unused; it goes after an hour.
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            built: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn get(
        &self,
        timeout: Duration,
        unsafe_ssl: bool,
        tls: Option<&TlsAuth>,
    ) -> Result<reqwest::Client, ScalerError> {
        let key = match tls {
            None => format!("{}|{unsafe_ssl}", timeout.as_millis()),
            Some(t) => format!(
                "{}|{unsafe_ssl}|{}|{}|{}",
                timeout.as_millis(),
                t.cert,
                t.key,
                t.ca.as_deref().unwrap_or_default()
            ),
        };
        if let Some(c) = self.clients.get(&key) {
            return Ok(c);
        }
        let client = new_http_client(timeout, unsafe_ssl, tls)?;
        self.built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.clients.insert(key, client.clone());
        Ok(client)
    }
}

/// One scaler's outbound HTTP calls: each is counted in KEDA's `keda_scaler_http_requests_total`
/// and `keda_scaler_http_request_duration_seconds`, and a failure becomes an error naming the
/// upstream and the root cause (see [`crate::report::root_cause`]).
#[derive(Clone)]
pub struct HttpProbe {
    metrics: Option<Arc<KedaMetrics>>,
    labels: HttpRequestLabels,
    trigger_index: usize,
}

impl fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProbe")
            .field("metric_name", &self.labels.metric_name)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl HttpProbe {
    /// A probe for the trigger `config` describes, serving `metric_name`; records nothing without `metrics`.
    pub fn new(config: &ScalerConfig, metrics: Option<Arc<KedaMetrics>>, metric_name: &str) -> Self {
        Self {
            metrics,
            labels: HttpRequestLabels {
                namespace: config.namespace.clone(),
                scaled_resource: config.scaled_object.clone(),
                // KEDA labels these requests with the trigger *type*.
                scaler: config.trigger_type.clone(),
                trigger_name: config.trigger_name.clone(),
                metric_name: metric_name.to_string(),
                status_code: String::new(),
            },
            trigger_index: config.trigger_index,
        }
    }

    /// Records into `metrics` from now on (scalers are built before they know where to record).
    pub fn set_metrics(&mut self, metrics: Option<Arc<KedaMetrics>>) {
        self.metrics = metrics;
    }

    /// Counts one request that ended with `status` (`None`: no HTTP answer) after `elapsed`.
    pub fn record(&self, status: Option<u16>, elapsed: Duration) {
        if let Some(m) = &self.metrics {
            let mut labels = self.labels.clone();
            labels.status_code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
            m.record_http_request(&labels, elapsed);
        }
    }

    /// The [`upstream_span`] of one `method` call to `url` by this trigger. The scaler runs the
    /// whole call in it (signing, send, body, parse), not only [`Self::send`], so what the call
    /// logs while reading the answer is traced back to it too.
    pub fn span(&self, method: &str, url: &reqwest::Url) -> tracing::Span {
        upstream_span(
            self.trigger_index,
            &self.labels.trigger_name,
            &self.labels.scaler,
            &authority(url),
            method,
        )
    }

    /// Sends `request` on `client`, recording it; `timeout` is the client's, for the message.
    /// Callers run it inside [`Self::span`].
    pub async fn send(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
        timeout: Duration,
    ) -> Result<reqwest::Response, ScalerError> {
        let target = request_target(&request);
        let started = Instant::now();
        let result = client.execute(request).await;
        self.record(
            result.as_ref().ok().map(|r| r.status().as_u16()),
            started.elapsed(),
        );
        result.map_err(|e| upstream_error(&target, timeout, &e))
    }
}

/// `GET http://host:port/path` of a request, without credentials or query string.
pub fn request_target(request: &reqwest::Request) -> String {
    format!(
        "{} {}",
        request.method(),
        crate::report::display_url(request.url())
    )
}

/// A failed call to `target` as a [`ScalerError`]: a timeout stays a timeout (504 on the API),
/// anything else names the root cause found in the error's source chain.
pub fn upstream_error(target: &str, timeout: Duration, e: &reqwest::Error) -> ScalerError {
    if e.is_timeout() {
        ScalerError::UpstreamTimeout {
            upstream: target.to_string(),
            after: timeout,
        }
    } else {
        ScalerError::Upstream(format!("{target}: {}", crate::report::root_cause(e)))
    }
}

fn new_http_client(
    timeout: Duration,
    unsafe_ssl: bool,
    tls: Option<&TlsAuth>,
) -> Result<reqwest::Client, ScalerError> {
    // reqwest panics without a process-wide provider; ring is the only one compiled in, and
    // installing fails harmlessly when the binary already did it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().danger_accept_invalid_certs(unsafe_ssl);
    if !timeout.is_zero() {
        builder = builder.timeout(timeout);
    }
    if let Some(tls) = tls {
        let pem = format!("{}\n{}\n", tls.cert.trim(), tls.key.trim());
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|e| ScalerError::Config(format!("error parsing tls cert/key: {e}")))?;
        builder = builder.identity(identity);
        if let Some(ca) = &tls.ca {
            let roots = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| ScalerError::Config(format!("error parsing tls ca: {e}")))?;
            builder = builder.tls_certs_merge(roots);
        }
    }
    builder
        .build()
        .map_err(|e| ScalerError::Config(format!("error building http client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_builds_and_rejects_bad_pem() {
        assert!(build_http_client(Duration::from_secs(1), true, None).is_ok());
        // The same settings share one client (one connection pool, one parsed trust store). A
        // cache of its own: other tests build clients through the shared one concurrently.
        let clients = HttpClients::new();
        for _ in 0..3 {
            clients
                .get(Duration::from_millis(1234), false, None)
                .expect("client");
        }
        clients
            .get(Duration::from_millis(1235), false, None)
            .expect("client");
        let built = clients.built.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(built, 2, "{built} clients built for two settings");
        let bad = TlsAuth {
            cert: "nope".into(),
            key: "nope".into(),
            ca: None,
        };
        assert!(build_http_client(Duration::ZERO, false, Some(&bad)).is_err());
        assert!(clients.get(Duration::ZERO, false, Some(&bad)).is_err());
    }
}
