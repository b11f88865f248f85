//! A loopback counting proxy in front of an upstream, and Prometheus' own query counter: how
//! many upstream queries the scalers made, per trigger.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Res, client::REQUEST_TIMEOUT, stats::sum_samples};

/// What the proxy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Counts `/api/v1/query` calls, keyed by the `query` parameter.
    Prometheus,
    /// Counts `GetQueueAttributes` calls, keyed by the queue name of `QueueUrl`.
    Sqs,
}

#[derive(Default)]
struct Counts {
    per_key: HashMap<String, u64>,
    total: u64,
    other: u64,
}

/// The counts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Upstream queries per key.
    pub per_key: HashMap<String, u64>,
    /// Upstream queries.
    pub total: u64,
    /// Other calls (not queries).
    pub other: u64,
}

/// Forwards every call to the upstream and counts the queries, per key; `delay_ms` is added to
/// every answer.
pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`, to put in the trigger in place of the upstream.
    pub url: String,
    counts: Arc<Mutex<Counts>>,
    /// Delay added to every upstream answer, milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingProxy {
    /// Listens on a loopback port and forwards to `upstream`.
    pub async fn start(upstream: &str, backend: Backend) -> Res<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Mutex::new(Counts::default()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::new();
        let upstream = upstream.trim_end_matches('/').to_string();
        let (c2, d2) = (counts.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (client, upstream, counts, delay) =
                    (client.clone(), upstream.clone(), c2.clone(), d2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        forward(
                            req,
                            backend,
                            client.clone(),
                            upstream.clone(),
                            counts.clone(),
                            delay.clone(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            counts,
            delay_ms,
            task,
        })
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            per_key: c.per_key.clone(),
            total: c.total,
            other: c.other,
        }
    }
}

/// The key a call is counted under, or `None` for calls that are not upstream queries.
pub fn classify(
    backend: Backend,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<String> {
    let form = |text: &[u8], name: &str| {
        form_urlencoded::parse(text)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    match backend {
        Backend::Prometheus => {
            if !path.ends_with("/api/v1/query") {
                return None;
            }
            let q = query
                .and_then(|q| form(q.as_bytes(), "query"))
                .or_else(|| form(body, "query"))
                .unwrap_or_default();
            Some(q)
        }
        Backend::Sqs => {
            let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
            let (action, url) = match target {
                Some(t) => (
                    t.rsplit('.').next().unwrap_or(t).to_string(),
                    serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .and_then(|v| v.get("QueueUrl").and_then(|u| u.as_str()).map(str::to_string)),
                ),
                None => (form(body, "Action").unwrap_or_default(), form(body, "QueueUrl")),
            };
            if action != "GetQueueAttributes" {
                return None;
            }
            let url = url.unwrap_or_default();
            Some(
                url.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    backend: Backend,
    client: reqwest::Client,
    upstream: String,
    counts: Arc<Mutex<Counts>>,
    delay_ms: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    {
        let key = classify(
            backend,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            &body,
        );
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(k) => {
                c.total += 1;
                *c.per_key.entry(k).or_default() += 1;
            }
            None => c.other += 1,
        }
    }
    let delay = delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay.min(10_000))).await;
    }
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    let sent = client
        .request(parts.method.clone(), format!("{upstream}{path}"))
        .headers(headers)
        .body(body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(e.to_string())))
                .unwrap_or_default());
        }
    };
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != header::TRANSFER_ENCODING && k != header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    Ok(out.body(Full::new(bytes)).unwrap_or_default())
}

/// Prometheus' own count of `/api/v1/query` requests: all codes, and code 200.
pub struct PromCounter {
    /// All codes.
    pub total: u64,
    /// Code 200.
    pub ok: u64,
}

/// The `/api/v1/query` counter in Prometheus' own `/metrics` text.
pub fn parse_prom_counter(text: &str) -> PromCounter {
    const NAME: &str = "prometheus_http_requests_total";
    const HANDLER: &str = "handler=\"/api/v1/query\"";
    PromCounter {
        total: sum_samples(text, NAME, &[HANDLER]) as u64,
        ok: sum_samples(text, NAME, &[HANDLER, "code=\"200\""]) as u64,
    }
}

/// Reads Prometheus' own `/api/v1/query` request counter from `url`.
pub async fn prom_query_counter(url: &str) -> Res<PromCounter> {
    let text = tokio::time::timeout(REQUEST_TIMEOUT, async {
        reqwest::Client::new()
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await
    })
    .await??;
    Ok(parse_prom_counter(&text))
}

/// Calls per key between two snapshots, for every expected key (missing keys count 0; calls
/// with unexpected keys are listed under their own key).
pub fn per_key(before: &Snapshot, after: &Snapshot, keys: &[String]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 0)).collect();
    for (k, v) in &after.per_key {
        let d = v.saturating_sub(before.per_key.get(k).copied().unwrap_or(0));
        if d > 0 || out.contains_key(k) {
            *out.entry(k.clone()).or_default() = d;
        }
    }
    out
}
