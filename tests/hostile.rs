//! Clients without credentials trying to take the server down, on loopback, each attack bounded
//! in count and time, while a well-behaved client keeps being served: deadlines for every
//! connection phase, the connection cap, log flooding, the admin port, shutdown, reflected
//! input, the authorization cache, selector semantics, plain HTTP on the TLS port, and client
//! certificates rustls cannot use.
//!
//! Every deadline is a flag or a field, so the attacks here use short ones; every wait is on a
//! condition with a deadline.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::net::{PORT_ATTEMPTS, free_port, spawn_on_free_ports};
use ebb::{
    external_metrics::auth::{Authorizer, AuthzMode, UserInfo, request_attributes},
    net::{CloseReason, Limits, Server, ServerMetrics},
    tls::{
        self, ConnInfo, ReloadingResolver, RequestClientCert,
        accept::PLAIN_HTTP_ANSWER,
        certgen::{Ca, CertPair, generate_ca},
    },
};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

const GV: &str = "/apis/external.metrics.k8s.io/v1beta1";
/// What one well-behaved request may take while an attack runs (a reconnection included).
/// Loopback answers in milliseconds, an unprotected server under these attacks not at all; the
/// margin is for a machine whose cores are busy with other tests.
const GOOD_LATENCY: Duration = Duration::from_secs(2);
/// The same for a request on a fresh connection (TCP and TLS handshakes included).
const GOOD_FRESH_LATENCY: Duration = Duration::from_secs(3);
/// Upper bound of any single wait in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

// === certificates and TLS configs ===

struct Pki {
    ca: Ca,
    server: CertPair,
    client: CertPair,
}

fn pki() -> Pki {
    let ca = generate_ca("hostile-test-ca").expect("ca");
    let server = ca
        .issue_server(&["localhost".to_owned()], &[IpAddr::from([127, 0, 0, 1])])
        .expect("server cert");
    let client = ca.issue_client("alice", &[]).expect("client cert");
    Pki { ca, server, client }
}

fn server_tls(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let resolver = ReloadingResolver::from_pem(pki.server.cert_pem.as_bytes(), pki.server.key_pem.as_bytes())
        .expect("serving key");
    tls::server_config(Arc::new(resolver), Arc::new(RequestClientCert::new(&[])))
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca pem"))
        .expect("root");
    roots
}

fn client_tls(ca_pem: &str, client: Option<&CertPair>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots(ca_pem));
    let mut config = match client {
        Some(pair) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).expect("cert pem")],
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key pem"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::clone(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

// === a minimal HTTP/1.1 client, so every byte on the wire is the test's choice ===

struct H1<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H1<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// One keep-alive GET; `headers` are extra header lines, each ending in CRLF.
    async fn get(&mut self, path: &str, headers: &str) -> Result<(u16, String), String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
        tokio::time::timeout(DEADLINE, async {
            self.stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            self.read_response().await
        })
        .await
        .map_err(|_| "no response in time".to_string())?
    }

    async fn read_response(&mut self) -> Result<(u16, String), String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line: {head}"))?;
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| format!("no content-length: {head}"))?;
                if self.buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                    self.buf.drain(..end + 4 + len);
                    return Ok((status, body));
                }
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".to_string());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads (and drops) until the peer closes; true if that happened within `limit`.
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Opens a TLS connection, sends `bytes`, and tells whether the server closed it within
/// [`DEADLINE`]. A handshake or write the server cuts short counts as closed: on a loaded
/// machine the client may meet the server's deadline before it gets that far.
async fn tls_then(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, bytes: &[u8]) -> bool {
    let Ok(mut tls) = tls_connect(addr, config).await else {
        return true;
    };
    if tls.write_all(bytes).await.is_err() {
        return true;
    }
    closed_within(&mut tls, DEADLINE).await
}

// === raw HTTP/2 frames ===

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame").to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Preface, empty SETTINGS, and a GET for `path` on stream 1 (HPACK without Huffman coding).
fn h2_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87]; // :method GET, :scheme https (static table)
    for (index, value) in [(4u8, path), (1u8, "localhost")] {
        // Literal without indexing, indexed name (:path = 4, :authority = 1).
        block.push(index);
        block.push(u8::try_from(value.len()).expect("short value"));
        block.extend_from_slice(value.as_bytes());
    }
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    out.extend(h2_frame(1, 0x4 | 0x1, 1, &block)); // END_HEADERS | END_STREAM
    out
}

// === a TLS server with a test handler ===

/// `GET /slow` waits for the test's release; `X-Authenticated` marks the connection
/// authenticated, as the metrics API does after a request passes authentication.
async fn test_handler(
    request: Request<Incoming>,
    conn: Arc<ConnInfo>,
    mut release: watch::Receiver<bool>,
    slow_started: Arc<watch::Sender<usize>>,
) -> Response<Full<Bytes>> {
    if request.headers().contains_key("x-authenticated") {
        conn.mark_authenticated();
    }
    if request.uri().path() == "/slow" {
        slow_started.send_modify(|n| *n += 1);
        while !*release.borrow_and_update() {
            if release.changed().await.is_err() {
                break;
            }
        }
        return Response::new(Full::new(Bytes::from_static(b"slow done")));
    }
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

struct TestServer {
    addr: SocketAddr,
    metrics: Arc<ServerMetrics>,
    stop: Option<ebb::shutdown::Trigger>,
    release: watch::Sender<bool>,
    slow_started: watch::Receiver<usize>,
    task: Option<tokio::task::JoinHandle<Result<(), tls::TlsError>>>,
}

impl TestServer {
    async fn start(pki: &Pki, limits: Limits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(ServerMetrics::detached());
        let server = Server {
            name: "api",
            limits,
            metrics: Arc::clone(&metrics),
        };
        let (release, release_rx) = watch::channel(false);
        let (slow_tx, slow_started) = watch::channel(0);
        let slow_tx = Arc::new(slow_tx);
        let (stop, signal) = ebb::shutdown::channel();
        let config = server_tls(pki);
        let handler = move |request: Request<Incoming>, conn: Arc<ConnInfo>| {
            test_handler(request, conn, release_rx.clone(), Arc::clone(&slow_tx))
        };
        let task = tokio::spawn(async move {
            tls::serve_with(
                &server,
                listener,
                config,
                handler,
                async move { signal.wait().await },
            )
            .await
        });
        Self {
            addr,
            metrics,
            stop: Some(stop),
            release,
            slow_started,
            task: Some(task),
        }
    }

    fn open(&self) -> i64 {
        self.metrics.open_connections("api")
    }

    fn closed(&self, reason: CloseReason) -> u64 {
        self.metrics.closed_count("api", reason)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.release.send(true);
        if let Some(stop) = self.stop.take() {
            stop.fire();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits for `condition`, checking every few milliseconds, failing after [`DEADLINE`].
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(ms(5)).await;
    }
}

/// What a well-behaved client saw while an attack ran.
#[derive(Debug, Default)]
struct GoodClient {
    requests: usize,
    slowest: Duration,
    failures: Vec<String>,
}

impl GoodClient {
    fn assert_served(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: well-behaved requests failed: {:?}",
            self.failures
        );
        assert!(
            self.requests > 0,
            "{what}: the well-behaved client made no request"
        );
        assert!(
            self.slowest < GOOD_LATENCY,
            "{what}: a well-behaved request took {:?}",
            self.slowest
        );
    }
}

/// Asks `GET /` over a keep-alive connection until `stop` (at most 5,000 requests). Like any
/// HTTP client it retries once on a fresh connection when the server has closed the idle one.
fn keep_asking(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<GoodClient> {
    tokio::spawn(async move {
        let mut seen = GoodClient::default();
        let mut client: Option<H1<TlsStream<TcpStream>>> = None;
        for _ in 0..5_000 {
            if *stop.borrow_and_update() {
                break;
            }
            let started = Instant::now();
            let mut outcome = Err(String::new());
            for _attempt in 0..2 {
                let mut conn = match client.take() {
                    Some(c) => c,
                    None => match tls_connect(addr, &config).await {
                        Ok(s) => H1::new(s),
                        Err(e) => {
                            outcome = Err(format!("connect: {e}"));
                            continue;
                        }
                    },
                };
                outcome = conn.get("/", "X-Authenticated: yes\r\n").await;
                if outcome.is_ok() {
                    client = Some(conn);
                    break;
                }
            }
            match outcome {
                Ok((200, _)) => {}
                Ok((code, body)) => seen.failures.push(format!("{code}: {body}")),
                Err(e) => seen.failures.push(e),
            }
            seen.slowest = seen.slowest.max(started.elapsed());
            seen.requests += 1;
            // Pace the loop so the attack, not this client, is what loads the server.
            tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep(ms(20)) => {}
            }
        }
        seen
    })
}

// === 1. deadlines for every connection phase ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_complete_request_are_closed_at_their_deadline() {
    install_provider();
    let pki = pki();
    let server = TestServer::start(
        &pki,
        Limits {
            handshake_timeout: Some(ms(400)),
            read_header_timeout: Some(ms(400)),
            idle_timeout: Some(ms(800)),
            ..Limits::default()
        },
    )
    .await;
    let (stop_good, stop_rx) = watch::channel(false);
    let good = keep_asking(
        server.addr,
        client_tls(pki.ca.cert_pem(), None, &[b"http/1.1"]),
        stop_rx,
    );

    let h2 = client_tls(pki.ca.cert_pem(), None, &[b"h2"]);
    let h1 = client_tls(pki.ca.cert_pem(), None, &[b"http/1.1"]);
    let addr = server.addr;
    let mut preface_and_settings = H2_PREFACE.to_vec();
    preface_and_settings.extend(h2_frame(4, 0, 0, &[]));
    let attacks_by_kind: [(&'static str, &Arc<rustls::ClientConfig>, Vec<u8>); 6] = [
        ("TLS, nothing sent", &h2, Vec::new()),
        ("16 bytes of the HTTP/2 preface", &h2, H2_PREFACE[..16].to_vec()),
        ("HTTP/2 preface and SETTINGS", &h2, preface_and_settings),
        (
            "half an HTTP/1 request",
            &h1,
            b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(),
        ),
        (
            "HTTP/1 idle after a request",
            &h1,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("HTTP/2 idle after a request", &h2, h2_get("/")),
    ];
    let mut attacks = tokio::task::JoinSet::new();
    for i in 0..8 {
        attacks.spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            ("TCP, nothing sent", closed_within(&mut tcp, DEADLINE).await, i)
        });
        for (what, config, bytes) in &attacks_by_kind {
            let (what, config, bytes) = (*what, Arc::clone(config), bytes.clone());
            attacks.spawn(async move { (what, tls_then(addr, &config, &bytes).await, i) });
        }
    }
    let started = Instant::now();
    while let Some(outcome) = attacks.join_next().await {
        let (what, closed, i) = outcome.expect("attack task");
        assert!(closed, "{what} (#{i}) was still open after {DEADLINE:?}");
    }
    // Each deadline is under a second; the slowest close is an idle HTTP/2 connection given its
    // GOAWAY grace. Nothing waited for anything like the default 10 s or 90 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let _ = stop_good.send(true);
    good.await.expect("good client").assert_served("phase deadlines");

    // Counted as the server lets go of each connection, which the client may see first.
    wait_until("8 handshake timeouts counted", || {
        server.closed(CloseReason::HandshakeTimeout) >= 8
    })
    .await;
    wait_until("56 deadline closes counted", || {
        server.closed(CloseReason::HandshakeTimeout)
            + server.closed(CloseReason::RequestTimeout)
            + server.closed(CloseReason::Timeout)
            + server.closed(CloseReason::Idle)
            >= 56
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_http2_pings_close_a_dead_peer_even_with_a_request_in_flight() {
    install_provider();
    let pki = pki();
    let server = TestServer::start(
        &pki,
        Limits {
            http2_keepalive_interval: Some(ms(200)),
            http2_keepalive_timeout: ms(300),
            ..Limits::default()
        },
    )
    .await;
    let h2 = client_tls(pki.ca.cert_pem(), None, &[b"h2"]);
    // A peer that sends a request whose answer never comes, then never reads an ack back: only
    // the keep-alive ping notices it is gone.
    let mut tls = tls_connect(server.addr, &h2).await.expect("handshake");
    tls.write_all(&h2_get("/slow")).await.expect("write");
    assert!(
        closed_within(&mut tls, Duration::from_secs(3)).await,
        "dead HTTP/2 peer kept open"
    );
    wait_until("the ping timeout counted", || {
        server.closed(CloseReason::Timeout) == 1
    })
    .await;
}

// === the connection cap ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_connection_cap_unauthenticated_connections_are_shed_first() {
    install_provider();
    let pki = pki();
    let server = TestServer::start(
        &pki,
        Limits {
            max_connections: 20,
            ..Limits::default()
        },
    )
    .await;
    let config = client_tls(pki.ca.cert_pem(), None, &[b"http/1.1"]);
    // The well-behaved client authenticates first and keeps its connection.
    let mut good = H1::new(tls_connect(server.addr, &config).await.expect("good client"));
    assert_eq!(
        good.get("/", "X-Authenticated: yes\r\n").await,
        Ok((200, "ok".into()))
    );

    let mut held = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        // Attackers finish the handshake (no certificate needed) and send nothing.
        if let Ok(s) = tls_connect(server.addr, &config).await {
            held.push(s);
        }
        // A shed connection closes a moment after the one that displaced it is counted in.
        wait_until(&format!("at most 20 open after attacker {i}"), || {
            server.open() <= 20
        })
        .await;
        if i % 10 == 9 {
            let started = Instant::now();
            assert_eq!(
                good.get("/", "").await,
                Ok((200, "ok".into())),
                "after attacker {i}"
            );
            slowest = slowest.max(started.elapsed());
        }
    }
    assert!(
        slowest < GOOD_LATENCY,
        "the authenticated client waited {slowest:?}"
    );
    wait_until("40 shed connections counted", || {
        server.closed(CloseReason::Shed) >= 40
    })
    .await;
    // A new client still gets in while the attackers hold what they have left.
    let started = Instant::now();
    let mut fresh = H1::new(tls_connect(server.addr, &config).await.expect("fresh client"));
    assert_eq!(fresh.get("/", "").await, Ok((200, "ok".into())));
    assert!(
        started.elapsed() < GOOD_FRESH_LATENCY,
        "fresh client took {:?}",
        started.elapsed()
    );
    assert_eq!(
        good.get("/", "").await,
        Ok((200, "ok".into())),
        "the authenticated connection survived"
    );
    drop(held);
}

// === plain HTTP on the TLS port ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_gets_gos_one_line_hint() {
    install_provider();
    let pki = pki();
    let server = TestServer::start(&pki, Limits::default()).await;
    let (stop_good, stop_rx) = watch::channel(false);
    let good = keep_asking(
        server.addr,
        client_tls(pki.ca.cert_pem(), None, &[b"http/1.1"]),
        stop_rx,
    );
    for i in 0..100 {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(b"GET /apis HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
            .await
            .expect("answer in time")
            .expect("read");
        assert_eq!(answer, PLAIN_HTTP_ANSWER, "connection {i}");
    }
    // Counted once the server has read what the client still sent.
    wait_until("100 plain-HTTP closes counted", || {
        server.closed(CloseReason::PlainHttp) == 100
    })
    .await;
    let _ = stop_good.send(true);
    good.await.expect("good client").assert_served("plain HTTP");
}

// === shutdown ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_unfinished_requests_at_once_and_drains_in_flight_ones() {
    install_provider();
    let pki = pki();
    let mut server = TestServer::start(
        &pki,
        Limits {
            // Long enough that only shutdown, not a deadline, can explain a prompt close.
            handshake_timeout: Some(Duration::from_secs(30)),
            read_header_timeout: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
    )
    .await;
    let h1 = client_tls(pki.ca.cert_pem(), None, &[b"http/1.1"]);
    let h2 = client_tls(pki.ca.cert_pem(), None, &[b"h2"]);
    // A well-behaved request in flight when SIGTERM comes.
    let mut slow = H1::new(tls_connect(server.addr, &h1).await.expect("slow client"));
    slow.stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    // Attackers: half-sent HTTP/1 headers, a bare TLS session, a bare TCP connection, an
    // HTTP/2 preface without a request.
    let mut half_sent = Vec::new();
    let mut bare_tls = Vec::new();
    let mut bare_tcp = Vec::new();
    for _ in 0..10 {
        let mut s = tls_connect(server.addr, &h1).await.expect("handshake");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("write");
        half_sent.push(s);
        let mut s = tls_connect(server.addr, &h2).await.expect("handshake");
        s.write_all(H2_PREFACE).await.expect("write");
        bare_tls.push(s);
        bare_tcp.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Wait until the slow request is in flight and every attacker is held, so shutdown finds
    // them there.
    let mut slow_started = server.slow_started.clone();
    tokio::time::timeout(DEADLINE, slow_started.wait_for(|n| *n == 1))
        .await
        .expect("slow request in flight")
        .expect("handler alive");
    wait_until("31 open connections", || server.open() == 31).await;

    let fired = Instant::now();
    server.stop.take().expect("trigger").fire();
    for s in &mut half_sent {
        assert!(
            closed_within(s, Duration::from_secs(2)).await,
            "half-sent request held shutdown"
        );
    }
    for s in &mut bare_tls {
        assert!(
            closed_within(s, Duration::from_secs(2)).await,
            "bare HTTP/2 session held shutdown"
        );
    }
    for s in &mut bare_tcp {
        assert!(
            closed_within(s, Duration::from_secs(2)).await,
            "bare TCP connection held shutdown"
        );
    }
    assert!(
        fired.elapsed() < Duration::from_secs(2),
        "closing took {:?}",
        fired.elapsed()
    );
    let task = server.task.take().expect("task");
    assert!(
        !task.is_finished(),
        "the server stopped before its in-flight request finished"
    );

    let _ = server.release.send(true);
    assert_eq!(slow.read_response().await, Ok((200, "slow done".into())));
    let stopped = tokio::time::timeout(DEADLINE, task)
        .await
        .expect("server stopped")
        .expect("join");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(
        fired.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        fired.elapsed()
    );
    wait_until("30 shutdown closes counted", || {
        server.closed(CloseReason::Shutdown) >= 30
    })
    .await;
}

// === the admin port ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_closes_slow_headers_and_keeps_serving() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(ebb::admin::AdminState {
        registry: prometheus_client::registry::Registry::default(),
        ready: Arc::new(true.into()),
        demo: false,
        debug: None,
    });
    let server = Server {
        name: "admin",
        limits: Limits {
            read_header_timeout: Some(ms(300)),
            ..Limits::default()
        },
        metrics: Arc::new(ServerMetrics::detached()),
    };
    let metrics = Arc::clone(&server.metrics);
    let (stop, signal) = ebb::shutdown::channel();
    let task = tokio::spawn(async move { ebb::admin::run_with(&server, listener, state, signal).await });

    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // Under load the header deadline may already have closed it; closed is closed.
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(s);
    }
    let mut good = H1::new(TcpStream::connect(addr).await.expect("connect"));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(good.get("/readyz", "").await, Ok((200, "ok".into())));
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < GOOD_LATENCY, "admin answered in {slowest:?}");
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "slow headers held the admin port"
        );
    }
    wait_until("40 header timeouts counted", || {
        metrics.closed_count("admin", CloseReason::Timeout)
            + metrics.closed_count("admin", CloseReason::RequestTimeout)
            >= 40
    })
    .await;
    stop.fire();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("admin stopped")
        .expect("join");
}

// === a whole metrics server (--local), in this process ===

const OBJECTS: &str = r#"apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: a
  namespace: team-a
spec:
  scaleTargetRef:
    name: a
  triggers:
  - type: cron
    metadata:
      timezone: Etc/UTC
      start: "0 0 1 1 *"
      end: "1 0 1 1 *"
      desiredReplicas: "3"
"#;
const CRON_METRIC: &str = "s0-cron-Etc-UTC-0011x-1011x";

/// A `--local` metrics server whose CA (and so the client certificate) the test made.
struct Local {
    secure: SocketAddr,
    admin: SocketAddr,
    pki: Pki,
    stop: ebb::shutdown::Trigger,
    _dir: tempfile::TempDir,
}

async fn start_local(extra: &[&str]) -> Local {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = dir.path().join("objects");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&objects).expect("mkdir");
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::write(objects.join("so.yaml"), OBJECTS).expect("write objects");
    let pki = pki();
    // --local keeps a CA it finds in the state directory.
    std::fs::write(state.join("ca.crt"), pki.ca.cert_pem()).expect("write ca");
    std::fs::write(state.join("ca.key"), pki.ca.key_pem()).expect("write ca key");
    // Ports picked free just before; started again on new ones if another process took one
    // (binding fails at once and ends the server task).
    for _ in 0..PORT_ATTEMPTS {
        let (secure, admin) = (free_port(), free_port());
        let mut args: Vec<String> = [
            "ebb",
            "metrics-server",
            "--local",
            &objects.display().to_string(),
            "--state-dir",
            &state.display().to_string(),
            "--bind-address",
            "127.0.0.1",
            "--metrics-bind-address",
            "127.0.0.1",
            "--secure-port",
            &secure.to_string(),
            "--metrics-port",
            &admin.to_string(),
            "--local-poll-interval",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let cli = <ebb::cli::Cli as clap::Parser>::parse_from(args);
        let ebb::cli::Command::MetricsServer(args) = cli.command else {
            panic!("parsed as metrics-server");
        };
        let (stop, signal) = ebb::shutdown::channel();
        let task = tokio::spawn(ebb::external_metrics::server::run(*args, signal));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin));
        let deadline = Instant::now() + DEADLINE;
        loop {
            if task.is_finished() {
                eprintln!("the metrics server ended at start: {:?}; new ports", task.await);
                break;
            }
            if let Ok(tcp) = TcpStream::connect(admin).await
                && let Ok((200, _)) = H1::new(tcp).get("/readyz", "").await
            {
                return Local {
                    secure: SocketAddr::from(([127, 0, 0, 1], secure)),
                    admin,
                    pki,
                    stop,
                    _dir: dir,
                };
            }
            assert!(
                Instant::now() < deadline,
                "the metrics server did not become ready"
            );
            tokio::time::sleep(ms(20)).await;
        }
    }
    panic!("the metrics server could not bind free ports in {PORT_ATTEMPTS} attempts");
}

impl Local {
    fn client(&self) -> Arc<rustls::ClientConfig> {
        client_tls(self.pki.ca.cert_pem(), Some(&self.pki.client), &[b"http/1.1"])
    }

    fn anonymous(&self) -> Arc<rustls::ClientConfig> {
        client_tls(self.pki.ca.cert_pem(), None, &[b"http/1.1"])
    }

    async fn scrape(&self) -> String {
        let tcp = TcpStream::connect(self.admin).await.expect("admin");
        let (code, body) = H1::new(tcp).get("/metrics", "").await.expect("scrape");
        assert_eq!(code, 200);
        body
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.stop.fire();
    }
}

/// The value of the first sample of `family` whose line holds every one of `labels`.
fn sample(scrape: &str, family: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(family) && labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Log lines written in this thread while the guard lives (the tests using it run on a
/// current-thread runtime, so every task of the server logs here).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sum of N over the "N more … in the last …" summary lines containing `what`.
fn summarised(lines: &[String], what: &str) -> u64 {
    lines
        .iter()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            l[..l.find(" more ")?]
                .split_whitespace()
                .last()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

// === 2. log flooding ===

#[tokio::test]
async fn refused_requests_are_counted_and_logged_at_a_bounded_rate() {
    let (logs, _guard) = Captured::start();
    let local = start_local(&["--log-aggregation-interval", "300ms"]).await;
    let long_path = format!("{GV}/namespaces/team-a/{}", "x".repeat(8 * 1024));
    let (stop_good, stop_rx) = watch::channel(false);
    let config = local.client();
    let addr = local.secure;
    let good = tokio::spawn(async move {
        let mut seen = GoodClient::default();
        let mut client = H1::new(tls_connect(addr, &config).await.expect("good client"));
        let path =
            format!("{GV}/namespaces/team-a/{CRON_METRIC}?labelSelector=scaledobject.keda.sh%2Fname%3Da");
        let mut stop = stop_rx;
        while !*stop.borrow_and_update() && seen.requests < 1000 {
            let started = Instant::now();
            match client.get(&path, "").await {
                Ok((200, _)) => {}
                other => seen.failures.push(format!("{other:?}")),
            }
            seen.slowest = seen.slowest.max(started.elapsed());
            seen.requests += 1;
            tokio::task::yield_now().await;
        }
        seen
    });

    let started = Instant::now();
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let config = local.anonymous();
        let path = long_path.clone();
        attackers.spawn(async move {
            let mut client = H1::new(tls_connect(addr, &config).await.expect("attacker"));
            for _ in 0..250 {
                let (code, _) = client.get(&path, "").await.expect("answer");
                assert_eq!(code, 401);
            }
        });
    }
    while let Some(done) = attackers.join_next().await {
        done.expect("attacker");
    }
    let attack = started.elapsed();
    let _ = stop_good.send(true);
    good.await.expect("good client").assert_served("refusal flood");

    // Every refusal is counted.
    let scrape = local.scrape().await;
    assert_eq!(
        sample(&scrape, "ebb_apiserver_requests_total", &["code=\"401\""]),
        Some(1000.0),
        "{scrape}"
    );
    // Logged: the first of each window as it comes, the rest summed up when the window closes.
    let deadline = Instant::now() + DEADLINE;
    let refusal_lines = loop {
        let lines: Vec<String> = logs
            .lines()
            .into_iter()
            .filter(|l| l.contains("refused"))
            .collect();
        let full = lines.iter().filter(|l| l.contains("request refused")).count() as u64;
        if full + summarised(&lines, "more requests refused") == 1000 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "refusals unaccounted for in the log: {lines:#?}"
        );
        tokio::time::sleep(ms(50)).await;
    };
    let windows = (attack.as_millis() / 300 + 2) as usize;
    assert!(
        refusal_lines.len() <= 2 * windows,
        "{} refusal lines for {windows} windows",
        refusal_lines.len()
    );
    for line in &refusal_lines {
        assert!(
            line.len() < 2048,
            "a log line of {} bytes: {}",
            line.len(),
            &line[..200]
        );
    }
}

// === 5. reflected input, 7. selector semantics ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_do_not_reflect_large_input() {
    let local = start_local(&[]).await;
    let mut client = H1::new(tls_connect(local.secure, &local.client()).await.expect("client"));
    let huge = "x".repeat(60 * 1024);
    let (code, body) = client
        .get(
            &format!(
                "{GV}/namespaces/team-a/{CRON_METRIC}?labelSelector=scaledobject.keda.sh%2Fname%3D{huge}"
            ),
            "",
        )
        .await
        .expect("answer");
    assert_eq!(code, 400, "{}", &body[..body.len().min(300)]);
    assert!(
        body.len() < 2048,
        "a 60 KB selector came back as {} bytes",
        body.len()
    );
    assert!(body.contains("bytes)"), "the echo says it was cut: {body}");
    let (code, body) = client
        .get(
            &format!("{GV}/namespaces/team-a/{huge}?labelSelector=scaledobject.keda.sh%2Fname%3Da"),
            "",
        )
        .await
        .expect("answer");
    assert_eq!(code, 404);
    assert!(
        body.len() < 2048,
        "a 60 KB metric name came back as {} bytes",
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradictory_selector_terms_match_nothing() {
    let local = start_local(&[]).await;
    let mut client = H1::new(tls_connect(local.secure, &local.client()).await.expect("client"));
    let path = |selector: &str| format!("{GV}/namespaces/team-a/{CRON_METRIC}?labelSelector={selector}");
    let (code, body) = client
        .get(&path("scaledobject.keda.sh%2Fname%3Da"), "")
        .await
        .expect("answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"value\""), "{body}");
    // `name=a,name=b` selects no ScaledObject: an empty list, as Kubernetes answers a list.
    let (code, body) = client
        .get(
            &path("scaledobject.keda.sh%2Fname%3Da%2Cscaledobject.keda.sh%2Fname%3Db"),
            "",
        )
        .await
        .expect("answer");
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["items"], serde_json::json!([]), "{body}");
    // Terms that agree still select `a`.
    let (code, body) = client
        .get(
            &path("scaledobject.keda.sh%2Fname%20in%20(a%2Cb)%2Cscaledobject.keda.sh%2Fname!%3Db"),
            "",
        )
        .await
        .expect("answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"value\""), "{body}");
}

// === 6. the authorization cache ===

type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<kube::client::Body>>;

/// Allows every SubjectAccessReview, counting them in `reviews`.
fn allow_everything(mut handle: Handle, reviews: Arc<std::sync::atomic::AtomicUsize>) {
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let bytes = request.into_body().collect().await.expect("body").to_bytes();
            let mut review: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            review["status"] = serde_json::json!({"allowed": true});
            send.send_response(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&review).expect("encode"),
                    ))
                    .expect("response"),
            );
            reviews.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
}

#[tokio::test]
async fn the_authorization_cache_is_keyed_on_review_attributes_and_bounded_by_bytes() {
    let (service, handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    let reviews = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    allow_everything(handle, Arc::clone(&reviews));
    let capacity = 256 * 1024;
    let authz = Authorizer::new(AuthzMode::Delegated(kube::Client::new(service, "default")))
        .with_cache_capacity(capacity);
    let user = UserInfo {
        name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler".to_owned(),
        groups: vec!["system:authenticated".to_owned()],
        ..UserInfo::default()
    };
    // The same question in different spellings is asked once.
    for path in [
        format!("{GV}/namespaces/team-a/s0-x"),
        format!("{GV}/namespaces/team-a/s0-x/"),
        format!("{GV}/namespaces/team-a/%73%30-x/"),
    ] {
        let attrs = request_attributes(&Method::GET, &path, Some("labelSelector=a%3Db"));
        authz.authorize(&user, &attrs).await.expect("allowed");
    }
    assert_eq!(authz.cache_usage().await.0, 1);

    // Sprayed metric names: answered, never more than the capacity kept.
    for i in 0..100 {
        let path = format!("{GV}/namespaces/team-a/{i}-{}", "m".repeat(8 * 1024));
        let attrs = request_attributes(&Method::GET, &path, None);
        authz.authorize(&user, &attrs).await.expect("allowed");
    }
    let (entries, bytes) = authz.cache_usage().await;
    assert!(bytes <= capacity, "{bytes} bytes cached, capacity {capacity}");
    assert!(entries < 40, "{entries} entries of 8 KiB kept in 256 KiB");

    // A single key too heavy to be worth its space is answered but not kept.
    let path = format!("{GV}/namespaces/team-a/{}", "h".repeat(60 * 1024));
    let attrs = request_attributes(&Method::GET, &path, None);
    let before = authz.cache_usage().await.0;
    authz.authorize(&user, &attrs).await.expect("allowed");
    authz.authorize(&user, &attrs).await.expect("allowed");
    assert_eq!(authz.cache_usage().await.0, before);
    assert_eq!(reviews.load(std::sync::atomic::Ordering::SeqCst), 1 + 100 + 2);
}

// === issue 9 item 10: a client certificate rustls cannot use ===

/// DER length and content of a TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).expect("short"));
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | u8::try_from(bytes.len()).expect("length of length"));
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A self-signed X.509 v1 certificate (no version field, no extensions) for CN `v1-client`,
/// as `openssl x509 -req` makes without an extensions file, and its PKCS#8 key.
fn v1_certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    use rcgen::{PublicKeyData, SigningKey};
    let key = rcgen::KeyPair::generate().expect("key");
    let ecdsa_sha256 = der(
        0x30,
        &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
    );
    let name = der(
        0x30,
        &der(
            0x31,
            &der(
                0x30,
                &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, b"v1-client")].concat(),
            ),
        ),
    );
    let validity = der(
        0x30,
        &[der(0x17, b"200101000000Z"), der(0x17, b"491231235959Z")].concat(),
    );
    let tbs = der(
        0x30,
        &[
            der(0x02, &[0x01]),
            ecdsa_sha256.clone(),
            name.clone(),
            validity,
            name,
            key.subject_public_key_info(),
        ]
        .concat(),
    );
    let signature = key.sign(&tbs).expect("sign");
    let mut bits = vec![0u8];
    bits.extend(signature);
    let cert = der(0x30, &[tbs, ecdsa_sha256, der(0x03, &bits)].concat());
    let pkcs8 = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (CertificateDer::from(cert), pkcs8)
}

/// Offers a fixed certificate whatever rustls thinks of it (its own check refuses a v1).
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for AnyClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_unusable_client_certificate_is_refused_with_its_reason_logged() {
    let (logs, _guard) = Captured::start();
    install_provider();
    let pki = pki();
    let server = TestServer::start(
        &pki,
        Limits {
            log_interval: Duration::from_secs(30),
            ..Limits::default()
        },
    )
    .await;
    let (cert, key) = v1_certificate();
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).expect("signing key");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(pki.ca.cert_pem()))
        .with_client_cert_resolver(Arc::new(AnyClientCert(Arc::new(
            rustls::sign::CertifiedKey::new(vec![cert], signing),
        ))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    for _ in 0..50 {
        // TLS 1.3 clients finish before the server reads their certificate: the refusal shows
        // as an alert on the first read.
        if let Ok(tls) = tls_connect(server.addr, &config).await {
            let mut client = H1::new(tls);
            let outcome = client.get("/", "").await;
            assert!(outcome.is_err(), "a v1 certificate was accepted: {outcome:?}");
        }
    }
    let lines: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains("client certificate"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per window, then a summary: {lines:#?}");
    let line = &lines[0];
    assert!(
        line.contains("client certificate refused during the TLS handshake"),
        "{line}"
    );
    assert!(line.contains("remote_addr=127.0.0.1:"), "{line}");
    assert!(line.contains("subject=CN=v1-client"), "{line}");
    assert!(line.contains("X.509 v3"), "{line}");
    wait_until("50 failed handshakes counted", || {
        server.closed(CloseReason::HandshakeError) >= 50
    })
    .await;
}

// === the real binary: descriptor exhaustion and TLS warnings, as an operator would see them ===

/// `ebb metrics-server --local` started by the test with its own open-file limit; stderr is
/// collected line by line.
struct Binary {
    child: Child,
    secure: SocketAddr,
    admin: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn start(open_files: u32, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = dir.path().join("objects");
        std::fs::create_dir_all(&objects).expect("mkdir");
        std::fs::write(objects.join("so.yaml"), OBJECTS).expect("write");
        let state: PathBuf = dir.path().join("state");
        // Ready on the admin port once serving; started again on new ports if one was taken
        // between its pick and ebb's bind (ebb then exits at once).
        let (mut child, [secure, admin]) = spawn_on_free_ports(
            "ebb metrics-server",
            Duration::from_secs(30),
            |[secure, admin]| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_ebb"))
                    .args(["metrics-server", "--local"])
                    .arg(&objects)
                    .arg("--state-dir")
                    .arg(&state)
                    .args([
                        "--bind-address",
                        "127.0.0.1",
                        "--metrics-bind-address",
                        "127.0.0.1",
                    ])
                    .args([
                        "--secure-port",
                        &secure.to_string(),
                        "--metrics-port",
                        &admin.to_string(),
                    ])
                    .args(["--log-level", "warn"])
                    .args(extra)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start ebb")
            },
            |[_, admin]| {
                let admin = SocketAddr::from(([127, 0, 0, 1], admin));
                blocking_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            },
        );
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Self {
            child,
            secure: SocketAddr::from(([127, 0, 0, 1], secure)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            stderr,
            dir,
        }
    }

    /// The CA `--local` created (it signs the serving certificate).
    fn ca(&self) -> PathBuf {
        self.dir.path().join("state").join("ca.crt")
    }

    fn lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn wait_for_line(&self, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.lines().iter().any(|l| l.contains(what)) {
            assert!(Instant::now() < deadline, "no {what:?} in {:#?}", self.lines());
            std::thread::sleep(ms(20));
        }
    }
}

fn blocking_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(DEADLINE)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A well-behaved request on a fresh TLS connection (no certificate: `/healthz` is always
/// allowed), from a blocking thread with its own runtime.
fn blocking_healthz(addr: SocketAddr, ca: &Path) -> Result<Duration, String> {
    let ca_pem = std::fs::read_to_string(ca).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let started = Instant::now();
        let config = client_tls(&ca_pem, None, &[b"http/1.1"]);
        let tls = tokio::time::timeout(DEADLINE, tls_connect(addr, &config))
            .await
            .map_err(|_| "no handshake in time".to_string())?
            .map_err(|e| e.to_string())?;
        match H1::new(tls).get("/healthz", "").await? {
            (200, _) => Ok(started.elapsed()),
            other => Err(format!("{other:?}")),
        }
    })
}

/// Holds `n` TCP connections to `addr` that send nothing.
fn hold(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect()
}

#[test]
fn out_of_descriptors_the_server_sheds_backs_off_and_logs_a_summary() {
    install_provider();
    // 64 descriptors, of which the idle process uses about 13, and a cap above that on purpose:
    // only shedding can keep a port usable, and only the back-off keeps accept from spinning.
    let ebb = Binary::start(
        64,
        &[
            "--max-connections",
            "1000",
            "--tls-handshake-timeout",
            "30s",
            "--read-header-timeout",
            "30s",
            "--log-aggregation-interval",
            "1s",
        ],
    );
    let ca = ebb.ca();
    let started = Instant::now();

    // The TLS port: 120 silent connections, then well-behaved requests on fresh connections.
    let attackers = hold(ebb.secure, 120);
    ebb.wait_for_line("accept failed");
    for i in 0..3 {
        let took = blocking_healthz(ebb.secure, &ca).unwrap_or_else(|e| panic!("good request {i}: {e}"));
        assert!(took < Duration::from_secs(5), "good request {i} took {took:?}");
    }
    drop(attackers);

    // The admin port, the same way.
    let attackers = hold(ebb.admin, 120);
    let deadline = Instant::now() + DEADLINE;
    while !ebb
        .lines()
        .iter()
        .any(|l| l.contains("accept failed") && l.contains("admin"))
    {
        assert!(
            Instant::now() < deadline,
            "admin accept never failed: {:#?}",
            ebb.lines()
        );
        std::thread::sleep(ms(20));
    }
    let good = Instant::now();
    let readyz = blocking_get(ebb.admin, "/readyz").unwrap_or_default();
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert!(
        good.elapsed() < Duration::from_secs(5),
        "admin answered in {:?}",
        good.elapsed()
    );
    drop(attackers);

    let elapsed = started.elapsed();
    let metrics = blocking_get(ebb.admin, "/metrics").expect("scrape");
    // A retry without a pause fails as fast as the kernel answers; Go's schedule (5 ms
    // doubling to 1 s, reset by a success) fails about once per connection shed.
    for server in ["api", "admin"] {
        let errors = sample(
            &metrics,
            "ebb_server_accept_errors_total",
            &[&format!("server=\"{server}\"")],
        )
        .unwrap_or(0.0);
        assert!(
            (1.0..1000.0).contains(&errors),
            "{errors} {server} accept errors in {elapsed:?}"
        );
        let shed = sample(
            &metrics,
            "ebb_server_closed_connections_total",
            &[&format!("server=\"{server}\""), "reason=\"shed\""],
        )
        .unwrap_or(0.0);
        assert!(shed >= 1.0, "{server}: nothing shed although descriptors ran out");
    }
    let lines = ebb.lines();
    let full = lines
        .iter()
        .filter(|l| l.contains("accept failed; retrying"))
        .count();
    let windows = elapsed.as_secs() as usize + 2;
    assert!(
        full <= 2 * windows,
        "{full} 'accept failed' lines in {elapsed:?}: {lines:#?}"
    );
}

#[test]
fn tls_warnings_caused_by_clients_are_rate_limited() {
    install_provider();
    let ebb = Binary::start(1024, &[]);
    let ca_pem = std::fs::read_to_string(ebb.ca()).expect("ca");
    let config = client_tls(&ca_pem, None, &[b"http/1.1"]);
    // A ClientHello naming host `aaaaaaaaa`, patched to name `127.0.0.1` (same length), which
    // rustls warns about on every handshake.
    let mut hello = Vec::new();
    let mut conn = rustls::ClientConnection::new(config, ServerName::try_from("aaaaaaaaa").expect("name"))
        .expect("client");
    conn.write_tls(&mut hello).expect("client hello");
    let at = find(&hello, b"aaaaaaaaa").expect("SNI in the hello");
    hello[at..at + 9].copy_from_slice(b"127.0.0.1");
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(ebb.secure).expect("connect");
        s.write_all(&hello).expect("hello");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        // The server answers once it has parsed (and warned about) the hello.
        let mut answer = [0u8; 5];
        s.read_exact(&mut answer).expect("server hello");
    }
    ebb.wait_for_line("Illegal SNI");
    let healthz = blocking_healthz(ebb.secure, &ebb.ca());
    assert!(healthz.is_ok(), "{healthz:?}");
    let sni_lines = ebb.lines().iter().filter(|l| l.contains("SNI")).count();
    assert!(
        sni_lines <= 2,
        "{sni_lines} SNI warnings for 200 handshakes: {:#?}",
        ebb.lines()
    );
}
