//! A moto server per test binary (started through `scripts/moto`, stopped when the test process
//! exits, however it exits) and a loopback proxy that records which AWS actions reach it.

use std::{
    convert::Infallible,
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;

/// A running moto server; killed when dropped, or by its watchdog when the test process exits.
#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pid: u32,
    // Holds the pid and log files; removed after the server is killed.
    _state_dir: tempfile::TempDir,
}

/// Started once per test binary: restarting it between tests (when none happened to hold it)
/// cost a Python start-up each time, several seconds on a loaded machine.
static SHARED: OnceLock<Arc<Moto>> = OnceLock::new();

// Self-contained (benches/upstream_economy.rs includes this file alone), hence its own copy.
fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Ports tried before giving up, as `net::PORT_ATTEMPTS`.
const PORT_ATTEMPTS: usize = 5;

impl Moto {
    /// The moto server shared by every test of the binary, started by the first one.
    pub fn shared() -> Arc<Moto> {
        SHARED.get_or_init(|| Arc::new(Moto::start())).clone()
    }

    /// Starts a fresh moto server on a free port (on another one when the port picked was taken
    /// before moto bound it: moto then exits and the script reports it).
    pub fn start() -> Moto {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/moto");
        let state_dir = tempfile::tempdir().expect("tempdir");
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let out = Command::new(&script)
                .arg("start")
                .arg(port.to_string())
                .env("MOTO_STATE_DIR", state_dir.path())
                .output()
                .expect("run scripts/moto");
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                failures.push(format!(
                    "port {port}: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
            let field = |name: &str| {
                stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {stdout}"))
                    .to_string()
            };
            let url = field("MOTO_URL=");
            let pid = field("MOTO_PID=").parse().expect("numeric MOTO_PID");
            watchdog(pid, state_dir.path());
            return Moto {
                url,
                pid,
                _state_dir: state_dir,
            };
        }
        panic!("scripts/moto failed: {failures:#?}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

/// Kills `pid` and removes `dir` shortly after this test process exits: statics are never
/// dropped, and a test binary killed on a timeout runs no destructor at all.
fn watchdog(pid: u32, dir: &Path) {
    let _ = Command::new("setsid")
        .args([
            "bash",
            "-c",
            // The pid is checked to still be moto's before it is killed.
            r#"while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
               grep -q moto_server "/proc/$1/cmdline" 2>/dev/null && kill "$1"; rm -rf "$2""#,
        ])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// One request seen by the [`Proxy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `Action=` of a query-protocol call, or the operation of an `X-Amz-Target` JSON call.
    pub action: String,
    /// Access key id of the SigV4 `Authorization` header; empty for unsigned calls.
    pub access_key_id: String,
}

/// A loopback HTTP proxy in front of moto that records every call.
#[derive(Debug)]
pub struct Proxy {
    /// Base URL to use as the AWS endpoint.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream`.
    pub async fn start(upstream: &str) -> Proxy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::new();
        let upstream = upstream.to_string();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream, seen) = (client.clone(), upstream.clone(), seen2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        forward(req, client.clone(), upstream.clone(), seen.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Proxy { url, seen, task }
    }

    /// Calls seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many calls of `action` were seen.
    pub fn count(&self, action: &str) -> usize {
        self.seen().iter().filter(|s| s.action == action).count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn action_of(headers: &http::HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn access_key_of(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split('/').next())
        .unwrap_or_default()
        .to_string()
}

async fn forward(
    req: Request<Incoming>,
    client: reqwest::Client,
    upstream: String,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
        action: action_of(&parts.headers, &body),
        access_key_id: access_key_of(&parts.headers),
    });
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let sent = client
        .request(parts.method.clone(), format!("{upstream}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(bytes::Bytes::from(e.to_string())))
                .unwrap_or_default());
        }
    };
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != http::header::TRANSFER_ENCODING && k != http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    Ok(out.body(Full::new(bytes)).unwrap_or_default())
}
