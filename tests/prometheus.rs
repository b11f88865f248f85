//! The prometheus scaler against a real Prometheus (started by `scripts/prometheus`), directly and
//! through a recording loopback proxy that can also check AWS SigV4 signatures.

mod common;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningParams, SigningSettings};
use bytes::Bytes;
use common::prometheus::{PromServer, shared};
use ebb::scalers::{
    MetricsAndActivity, Scaler, ScalerConfig, ScalerContext, ScalerError, prometheus::PrometheusScaler,
};
use http::HeaderMap;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

const QUEUE: &str = r#"ebb_test_queue_depth{queue="jobs"}"#;
const ACCESS_KEY: &str = "AKIDEBBTEST";
const SECRET_KEY: &str = "ebb/test+secret";
const REGION: &str = "us-east-1";

fn config(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> ScalerConfig {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    ScalerConfig {
        namespace: "default".into(),
        scaled_object: "so".into(),
        trigger_index: 0,
        trigger_type: "prometheus".into(),
        metadata: map(meta),
        auth_params: map(auth),
        global_http_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

fn scaler(server: &str, query: &str, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> PrometheusScaler {
    let mut all = vec![("serverAddress", server), ("query", query), ("threshold", "10")];
    all.extend_from_slice(meta);
    PrometheusScaler::new(&config(&all, auth), &ScalerContext::default()).expect("scaler builds")
}

async fn ask(s: &PrometheusScaler) -> Result<MetricsAndActivity, ScalerError> {
    tokio::time::timeout(
        Duration::from_secs(20),
        s.get_metrics_and_activity("s0-prometheus"),
    )
    .await
    .expect("the scaler answered within 20s")
}

fn values(r: &Result<MetricsAndActivity, ScalerError>) -> Option<(Vec<f64>, bool)> {
    r.as_ref().ok().map(|m| (m.values.clone(), m.active))
}

fn error_text(r: Result<MetricsAndActivity, ScalerError>) -> String {
    match r {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn single_series_value_and_activation() {
    let prom = shared();
    let s = scaler(&prom.url, QUEUE, &[("activationThreshold", "41.5")], &[]);
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    let s = scaler(&prom.url, QUEUE, &[("activationThreshold", "42")], &[]);
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], false)));
    // Aggregations and spaces in the query go through the escaping intact.
    let s = scaler(&prom.url, "sum(ebb_test_multi) * 2", &[], &[]);
    assert_eq!(values(&ask(&s).await), Some((vec![6.0], true)));
    assert_eq!(s.empty_responses(), 0);
}

#[tokio::test]
async fn empty_result_nan_inf_and_multiple_series() {
    let prom = shared();
    let absent = "ebb_test_absent_series";
    let s = scaler(&prom.url, absent, &[], &[]);
    assert_eq!(values(&ask(&s).await), Some((vec![0.0], false)));
    assert_eq!(s.empty_responses(), 1);
    let s = scaler(&prom.url, absent, &[("ignoreNullValues", "false")], &[]);
    assert!(error_text(ask(&s).await).contains("the result is empty"));
    assert_eq!(s.empty_responses(), 1);

    let s = scaler(&prom.url, "ebb_test_nan", &[], &[]);
    assert_eq!(values(&ask(&s).await), Some((vec![0.0], false)));
    let s = scaler(&prom.url, "ebb_test_nan", &[("ignoreNullValues", "false")], &[]);
    assert_eq!(error_text(ask(&s).await), "prometheus query returns NaN");
    let s = scaler(&prom.url, "ebb_test_inf", &[], &[]);
    assert_eq!(values(&ask(&s).await), Some((vec![0.0], false)));
    let s = scaler(&prom.url, "ebb_test_inf", &[("ignoreNullValues", "false")], &[]);
    assert_eq!(error_text(ask(&s).await), "prometheus query returns +Inf");

    let s = scaler(&prom.url, "ebb_test_multi", &[], &[]);
    assert_eq!(
        error_text(ask(&s).await),
        "prometheus query ebb_test_multi returned multiple elements"
    );
}

#[tokio::test]
async fn bad_query_reports_status_and_prometheus_message() {
    let prom = shared();
    let s = scaler(&prom.url, "sum(", &[], &[]);
    let e = error_text(ask(&s).await);
    assert!(
        e.starts_with("prometheus query api returned error. status: 400: bad_data: "),
        "{e}"
    );
    assert!(e.contains("parse error"), "{e}");
    // The server that refused is named too.
    assert!(
        e.ends_with(&format!("(from GET {}/api/v1/query)", prom.url)),
        "{e}"
    );
}

#[tokio::test]
async fn stopped_prometheus_fails_fast() {
    let mut prom = PromServer::start();
    let s = scaler(&prom.url, QUEUE, &[("timeout", "2s")], &[]);
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    prom.stop();
    let started = Instant::now();
    let r = ask(&s).await;
    assert!(
        matches!(r, Err(ScalerError::Upstream(_) | ScalerError::Timeout(_))),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

// ---- a recording (and optionally SigV4-checking) proxy in front of Prometheus ----

#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    headers: HeaderMap,
}

type Check = Arc<dyn Fn(&Request<Incoming>) -> Result<(), String> + Send + Sync>;

struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn last_header(&self, name: &str) -> Option<String> {
        self.seen()
            .last()
            .and_then(|s| s.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

async fn start_proxy(upstream: &str, check: Option<Check>) -> Proxy {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let upstream = upstream.to_string();
    let seen_srv = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, client, upstream, check) =
                (seen_srv.clone(), client.clone(), upstream.clone(), check.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (seen, client, upstream, check) =
                        (seen.clone(), client.clone(), upstream.clone(), check.clone());
                    async move {
                        if let Ok(mut s) = seen.lock() {
                            s.push(Seen {
                                uri: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                        }
                        if let Some(Err(why)) = check.as_ref().map(|c| c(&req)) {
                            return Ok::<_, Infallible>(reply(403, why.into_bytes().into()));
                        }
                        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                        let forwarded = client.get(format!("{upstream}{path}")).send().await;
                        Ok(match forwarded {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                reply(status, resp.bytes().await.unwrap_or_default())
                            }
                            Err(e) => reply(502, e.to_string().into_bytes().into()),
                        })
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Proxy {
        url: format!("http://{addr}"),
        seen,
    }
}

fn reply(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    resp
}

#[tokio::test]
async fn auth_and_custom_headers_arrive() {
    let prom = shared();
    let proxy = start_proxy(&prom.url, None).await;

    let s = scaler(
        &proxy.url,
        QUEUE,
        &[("authModes", "bearer"), ("customHeaders", "X-Scope-OrgID=team-a")],
        &[("bearerToken", "tok123")],
    );
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    assert_eq!(
        proxy.last_header("authorization").as_deref(),
        Some("Bearer tok123")
    );
    assert_eq!(proxy.last_header("x-scope-orgid").as_deref(), Some("team-a"));

    let s = scaler(
        &proxy.url,
        QUEUE,
        &[("authModes", "basic")],
        &[("username", "user"), ("password", "pass")],
    );
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    assert_eq!(
        proxy.last_header("authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );

    let s = scaler(
        &proxy.url,
        QUEUE,
        &[("authModes", "custom")],
        &[("customAuthHeader", "X-Api-Token"), ("customAuthValue", "v1")],
    );
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    assert_eq!(proxy.last_header("x-api-token").as_deref(), Some("v1"));

    // The plain path: query and an RFC 3339 `time` in UTC.
    let uri = proxy.seen().last().map(|s| s.uri.clone()).unwrap_or_default();
    assert!(
        uri.starts_with("/api/v1/query?query=ebb_test_queue_depth%7Bqueue%3D%22jobs%22%7D&time="),
        "{uri}"
    );
    let time: String = form_urlencoded::parse(uri.split_once('?').map(|p| p.1).unwrap_or("").as_bytes())
        .find(|(k, _)| k == "time")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let parsed = chrono::DateTime::parse_from_rfc3339(&time).expect("time is RFC 3339");
    assert!(time.ends_with('Z') && !time.contains('.'), "{time}");
    assert!((chrono::Utc::now().timestamp() - parsed.timestamp()).abs() < 60);
}

#[tokio::test]
async fn namespace_and_query_parameters_reach_the_server() {
    let prom = shared();
    let proxy = start_proxy(&prom.url, None).await;
    let s = scaler(
        &proxy.url,
        QUEUE,
        &[("namespace", "team-a"), ("customHeaders", "X-Scope-OrgID=t")],
        &[],
    );
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    let uri = proxy.seen().last().map(|s| s.uri.clone()).unwrap_or_default();
    assert!(uri.ends_with("&namespace=team-a"), "{uri}");
    assert_eq!(proxy.last_header("x-scope-orgid").as_deref(), Some("t"));

    let s = scaler(
        &proxy.url,
        QUEUE,
        &[
            ("namespace", "team-a"),
            ("queryParameters", "dedup=false,partial_response=true"),
        ],
        &[],
    );
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    let uri = proxy.seen().last().map(|s| s.uri.clone()).unwrap_or_default();
    assert!(
        uri.starts_with("/api/v1/query?dedup=false&namespace=team-a&partial_response=true&query="),
        "{uri}"
    );
}

// ---- Amazon Managed Prometheus: SigV4 recomputed by the proxy ----

/// Recomputes the SigV4 signature of a received request with the known test keys.
fn verify_sigv4(req: &Request<Incoming>, creds: &Credentials) -> Result<(), String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("missing {name} header"))
    };
    let authorization = header("authorization")?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not a SigV4 authorization")?;
    let mut signed_headers = "";
    let mut credential = "";
    for field in fields.split(", ") {
        if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed_headers = v;
        } else if let Some(v) = field.strip_prefix("Credential=") {
            credential = v;
        }
    }
    let amz_date = header("x-amz-date")?;
    let time = chrono::NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|e| format!("bad x-amz-date: {e}"))?
        .and_utc();
    if (chrono::Utc::now() - time).num_seconds().abs() > 300 {
        return Err("request time too skewed".into());
    }
    let scope_suffix = format!("/{REGION}/aps/aws4_request");
    if !credential.starts_with(&format!("{}/", creds.access_key_id())) || !credential.ends_with(&scope_suffix)
    {
        return Err(format!("unexpected credential scope {credential}"));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err(format!("host and x-amz-date must be signed: {signed_headers}"));
    }
    let mut headers = Vec::new();
    for name in &names {
        let value = req
            .headers()
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("signed header {name} missing"))?;
        headers.push((*name, value));
    }
    let host = header("host")?;
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://{host}{path}");
    let identity = creds.clone().into();
    let params: SigningParams<'_> = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("aps")
        .time(SystemTime::from(time))
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        req.method().as_str(),
        url.as_str(),
        headers.into_iter(),
        SignableBody::Precomputed("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let expected = instructions
        .headers()
        .find(|(n, _)| *n == "authorization")
        .map(|(_, v)| v.to_string())
        .ok_or("no authorization computed")?;
    if expected == authorization {
        Ok(())
    } else {
        Err(format!(
            "signature mismatch: got {authorization}, want {expected}"
        ))
    }
}

fn sigv4_check(creds: Credentials) -> Check {
    Arc::new(move |req| verify_sigv4(req, &creds))
}

#[tokio::test]
async fn amp_requests_are_sigv4_signed() {
    let prom = shared();
    let creds = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let proxy = start_proxy(&prom.url, Some(sigv4_check(creds))).await;
    let keys = [("awsAccessKeyID", ACCESS_KEY), ("awsSecretAccessKey", SECRET_KEY)];

    let s = scaler(&proxy.url, QUEUE, &[("awsRegion", REGION)], &keys);
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    let auth = proxy.last_header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")),
        "{auth}"
    );

    // Custom headers and query parameters are covered by the signature too; region via authParams.
    let mut with_region = keys.to_vec();
    with_region.push(("awsRegion", REGION));
    let s = scaler(
        &proxy.url,
        "sum(ebb_test_multi)",
        &[
            ("customHeaders", "X-Scope-OrgID=team-a"),
            ("queryParameters", "dedup=false"),
        ],
        &with_region,
    );
    assert_eq!(values(&ask(&s).await), Some((vec![3.0], true)));
    let auth = proxy.last_header("authorization").unwrap_or_default();
    assert!(auth.contains("x-scope-orgid"), "{auth}");

    // A wrong secret on the scaler side: the proxy refuses, the query fails with the status.
    let s = scaler(
        &proxy.url,
        QUEUE,
        &[("awsRegion", REGION)],
        &[("awsAccessKeyID", ACCESS_KEY), ("awsSecretAccessKey", "wrong")],
    );
    let e = error_text(ask(&s).await);
    assert!(
        e.starts_with("prometheus query api returned error. status: 403 response: signature mismatch"),
        "{e}"
    );

    // No keys at all: like KEDA, the request goes out unsigned (and this proxy refuses it).
    let s = scaler(&proxy.url, QUEUE, &[("awsRegion", REGION)], &[]);
    let e = error_text(ask(&s).await);
    assert!(
        e.contains("status: 403 response: missing authorization header"),
        "{e}"
    );
}

#[tokio::test]
async fn amp_session_token_is_signed() {
    let prom = shared();
    let creds = Credentials::new(ACCESS_KEY, SECRET_KEY, Some("session-tok".into()), None, "test");
    let proxy = start_proxy(&prom.url, Some(sigv4_check(creds))).await;
    let s = scaler(
        &proxy.url,
        QUEUE,
        &[("awsRegion", REGION)],
        &[
            ("awsAccessKeyID", ACCESS_KEY),
            ("awsSecretAccessKey", SECRET_KEY),
            ("awsSessionToken", "session-tok"),
        ],
    );
    assert_eq!(values(&ask(&s).await), Some((vec![42.0], true)));
    assert_eq!(
        proxy.last_header("x-amz-security-token").as_deref(),
        Some("session-tok")
    );
}
