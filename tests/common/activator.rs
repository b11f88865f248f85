//! The activator harness the activator test binaries share: an activator in this process on
//! ephemeral ports (`--local` or on a scripted API server), an HTTP/1.1 client, an echo upstream.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use ebb::{
    activator::{ProxyListeners, TlsListener},
    cli::{ActivatorArgs, Cli, Command},
    shutdown,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::JoinHandle,
};

pub const BUDGET: Duration = Duration::from_secs(20);

/// An activator serving in this process on ephemeral ports.
pub struct Activator {
    /// The proxy port.
    pub proxy: SocketAddr,
    /// The admin port.
    pub admin: SocketAddr,
    /// The HTTPS proxy port, when started with a certificate.
    pub https: Option<SocketAddr>,
    trigger: shutdown::Trigger,
    task: JoinHandle<()>,
    /// The `--local` directory.
    pub dir: Option<tempfile::TempDir>,
}

/// The `ebb activator` arguments `argv` parses to.
fn parse(argv: Vec<&str>) -> ActivatorArgs {
    let Command::Activator(args) = Cli::try_parse_from(argv).expect("flags").command else {
        panic!("not the activator subcommand");
    };
    *args
}

async fn bind(what: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

impl Activator {
    /// `--local` with `objects` (one file each) and `flags`, ready once they are routed.
    pub async fn start(objects: &[String], flags: &[&str]) -> Activator {
        Self::start_with_tls(objects, flags, None).await
    }

    /// [`Activator::start`], plus an HTTPS port serving `cert`/`key` when given.
    pub async fn start_with_tls(
        objects: &[String],
        flags: &[&str],
        tls: Option<(&Path, &Path)>,
    ) -> Activator {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, text) in objects.iter().enumerate() {
            super::fs::write_atomic(&dir.path().join(format!("route-{i}.yaml")), text);
        }
        let mut argv = vec!["ebb", "activator", "--local", dir.path().to_str().expect("utf-8")];
        argv.extend_from_slice(flags);
        let args = parse(argv);
        let (plain, proxy) = bind("proxy").await;
        let (admin_listener, admin) = bind("admin").await;
        let (https, tls) = match tls {
            Some((cert, key)) => {
                let (listener, addr) = bind("https").await;
                let tls = TlsListener::load(listener, cert, key).expect("certificate loads");
                (Some(addr), Some(tls))
            }
            None => (None, None),
        };
        let (trigger, signal) = shutdown::channel();
        let task = tokio::spawn(ebb::activator::serve(
            args,
            dir.path().to_path_buf(),
            ProxyListeners { plain, tls },
            admin_listener,
            signal,
        ));
        Self::ready(proxy, admin, https, trigger, task, Some(dir)).await
    }

    /// An activator in cluster mode on `client` (a scripted API server), ready once the
    /// HTTPScaledObjects and InterceptorRoutes are listed.
    pub async fn start_cluster(client: kube::Client, flags: &[&str]) -> Activator {
        let mut argv = vec!["ebb", "activator"];
        argv.extend_from_slice(flags);
        let args = parse(argv);
        let (proxy_listener, proxy) = bind("proxy").await;
        let (admin_listener, admin) = bind("admin").await;
        let (trigger, signal) = shutdown::channel();
        let task = tokio::spawn(ebb::activator::serve_cluster(
            args,
            client,
            proxy_listener,
            admin_listener,
            signal,
        ));
        Self::ready(proxy, admin, None, trigger, task, None).await
    }

    /// The started activator, once `/readyz` answers 200.
    async fn ready(
        proxy: SocketAddr,
        admin: SocketAddr,
        https: Option<SocketAddr>,
        trigger: shutdown::Trigger,
        task: JoinHandle<()>,
        dir: Option<tempfile::TempDir>,
    ) -> Activator {
        let deadline = Instant::now() + BUDGET;
        loop {
            let ready = get(admin, "admin", "/readyz").await;
            if matches!(&ready, Ok((StatusCode::OK, _, _))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the activator never became ready: {ready:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Activator {
            proxy,
            admin,
            https,
            trigger,
            task,
            dir,
        }
    }

    pub async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(BUDGET, self.task)
            .await
            .expect("the activator stops in time")
            .expect("the activator task ends cleanly");
    }

    pub async fn admin_json(&self, path: &str) -> Value {
        let (status, _, body) = get(self.admin, "admin", path).await.expect("admin answers");
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Polls `/routes` until `check` holds for the route.
    pub async fn wait_route(&self, key: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + BUDGET;
        loop {
            let routes = self.admin_json("/routes").await;
            if check(&routes[key]) {
                return routes[key].clone();
            }
            assert!(Instant::now() < deadline, "{what}: {routes}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An HTTPScaledObject for `--local`.
pub fn object(
    name: &str,
    host: &str,
    port: u16,
    command: &str,
    extra_spec: &str,
    extra_annotations: &str,
) -> String {
    format!(
        r#"apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: {name}
  namespace: web
  annotations:
    activator.ebb/local-command: "{command}"
{extra_annotations}
spec:
  hosts: ["{host}"]
  scaleTargetRef:
    name: {name}
    service: {name}
    port: {port}
{extra_spec}
"#
    )
}

/// A command that runs until stopped and opens no port (the test serves the port itself).
pub const IDLE_COMMAND: &str = "exec sleep 600";

/// A response's `X-KEDA-HTTP-Cold-Start` value (`true` when the request waited for a start).
pub fn cold_start(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("x-keda-http-cold-start")
        .and_then(|v| v.to_str().ok())
}

/// `GET path` with `Host: host` over HTTP/1.1.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(StatusCode, http::HeaderMap, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(http::header::HOST, host)
        .header("x-forwarded-for", "203.0.113.9")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// An upstream answering with what it saw.
pub async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let h = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let host = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| h("host"));
    let text = format!(
        "{:?} {} host={host} xff={} xfh={} xfp={}",
        request.version(),
        request.uri().path(),
        h("x-forwarded-for"),
        h("x-forwarded-host"),
        h("x-forwarded-proto"),
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// Serves `echo` on `listener` (HTTP/1.1 and h2c).
pub fn serve_echo(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(echo))
                    .await;
            });
        }
    })
}

/// A port bound but not listening: connections are refused until `listen` is called, and no
/// other test can take it meanwhile.
pub fn reserved_port() -> (TcpSocket, u16) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, port)
}
