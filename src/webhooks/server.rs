//! `ebb webhooks`: the TLS listener, the admin port, and the routing of AdmissionReview requests
//! to [`review`](super::review).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use tracing::{Instrument, info, warn};

use super::{
    cluster::{ClusterView, KubeCluster, LocalCluster},
    review::{self, WebhookContext},
};
use crate::{
    admin::{self, AdminState},
    cli::WebhooksArgs,
    keda_metrics::KedaMetrics,
    shutdown::Signal,
    startup::{self, StartupError},
    tls::{self, CertReloader, DEFAULT_INTERVAL, RequestClientCert, certgen},
};

/// Path of the ScaledObject webhook (manifests/validatingwebhook.yaml).
pub const SCALED_OBJECT_PATH: &str = "/validate-keda-sh-v1alpha1-scaledobject";
/// Path of the ScaledJob webhook.
pub const SCALED_JOB_PATH: &str = "/validate-keda-sh-v1alpha1-scaledjob";
/// Path of the TriggerAuthentication webhook.
pub const TRIGGER_AUTHENTICATION_PATH: &str = "/validate-keda-sh-v1alpha1-triggerauthentication";
/// Path of the ClusterTriggerAuthentication webhook.
pub const CLUSTER_TRIGGER_AUTHENTICATION_PATH: &str =
    "/validate-keda-sh-v1alpha1-clustertriggerauthentication";
/// The API server sends at most a 3 MiB object twice (object and oldObject) plus the envelope.
const MAX_BODY_BYTES: usize = 8 << 20;

/// Runs the webhook server and its admin port until `shutdown`.
pub async fn run(args: WebhooksArgs, shutdown: Signal) -> Result<(), StartupError> {
    let bind = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let addr = bind(args.port);
    let listener = startup::bind(addr, "--port", "").await?;
    let admin_addr = bind(args.metrics_port);
    let admin_listener = startup::bind(admin_addr, "--metrics-port", "").await?;

    let cluster: Arc<dyn ClusterView> = match &args.local {
        Some(dir) => {
            info!(dir = %dir.display(), "local mode: cluster objects from files; no cluster is contacted");
            Arc::new(LocalCluster::from_dir(dir.clone()))
        }
        None => Arc::new(KubeCluster::new(
            crate::cluster::client(args.kubeconfig.as_deref())
                .await
                .map_err(|e| StartupError::from(e).offering_local())?,
        )),
    };
    let mut prom = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(KedaMetrics::register(&mut prom));
    let ready = Arc::new(AtomicBool::new(false));
    let admin_state = Arc::new(AdminState {
        registry: prom,
        ready: Arc::clone(&ready),
        demo: false,
    });
    // Up before the certificates, so liveness holds while the secret volume is still empty.
    tokio::spawn(admin::run(admin_listener, admin_state, shutdown.clone()).in_current_span());

    let (cert, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(c), Some(k)) => {
            if !wait_for_files(c, k, &shutdown).await {
                return Ok(());
            }
            (c.clone(), k.clone())
        }
        _ => certgen::ensure_self_signed(&args.cert_dir, &["localhost".to_string()])
            .map_err(|e| StartupError::SelfSigned(args.cert_dir.clone(), e))?,
    };
    let mut reloader = CertReloader::new(DEFAULT_INTERVAL);
    let resolver = reloader.watch_serving(&cert, &key).map_err(StartupError::Certs)?;
    // The API server does not present a client certificate to webhooks unless configured to;
    // nothing here depends on one.
    let config = tls::server_config(resolver, Arc::new(RequestClientCert::new(&[])));

    let ctx = Arc::new(WebhookContext { cluster, metrics });
    ready.store(true, Ordering::Relaxed);
    {
        let shutdown = shutdown.clone();
        tokio::spawn(
            reloader
                .run(async move { shutdown.wait().await })
                .in_current_span(),
        );
    }
    info!(addr = %listener.local_addr().unwrap_or(addr), "admission webhooks listening");
    let handler = move |req, _conn: Arc<tls::ConnInfo>| {
        let ctx = Arc::clone(&ctx);
        async move { handle(&ctx, req).await }
    };
    tls::serve(listener, config, handler, async move { shutdown.wait().await })
        .await
        .map_err(StartupError::Serve)
}

/// The certificate secret is mounted optionally, so the files may appear after start; the
/// webhook waits for them rather than serving a certificate no caBundle trusts.
/// Returns false if shutdown came first.
async fn wait_for_files(cert: &Path, key: &Path, shutdown: &Signal) -> bool {
    let mut logged = false;
    while !(cert.is_file() && key.is_file()) {
        if !logged {
            info!(cert = %cert.display(), key = %key.display(), "waiting for the serving certificate files");
            logged = true;
        }
        tokio::select! {
            () = shutdown.wait() => return false,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    true
}

fn json(code: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A `meta/v1` Status body, the shape API clients expect from a Kubernetes endpoint.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    json(code, body.to_string().into_bytes())
}

/// Answers one HTTPS request: the three webhook paths and `/healthz`.
pub async fn handle<B>(ctx: &WebhookContext, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    let is_webhook = matches!(
        path,
        SCALED_OBJECT_PATH
            | SCALED_JOB_PATH
            | TRIGGER_AUTHENTICATION_PATH
            | CLUSTER_TRIGGER_AUTHENTICATION_PATH
    );
    if path == "/healthz" || path == "/livez" || path == "/readyz" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return r;
    }
    if !is_webhook {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no webhook at {path}"),
        );
    }
    if req.method() != Method::POST {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "admission reviews are POSTed",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("could not read the request body: {e}"),
            );
        }
    };
    let request = match review::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "malformed admission review");
            return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string());
        }
    };
    let answer = review::review_request(&request, ctx).await.into_review();
    match serde_json::to_vec(&answer) {
        Ok(b) => json(StatusCode::OK, b),
        Err(e) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("could not encode the response: {e}"),
        ),
    }
}
