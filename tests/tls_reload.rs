//! Real-socket tests of certificate hot reload, ALPN and optional client certificates.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fs::write_atomic;
use ebb::tls::certgen::{Ca, CertPair, generate_ca};
use ebb::tls::{CertReloader, ConnInfo, ReloadStats, RequestClientCert, serve, server_config};
use http_body_util::Full;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const POLL: Duration = Duration::from_millis(100);
/// An upper bound for things that take a few polls, generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn server_pair(ca: &Ca, name: &str) -> CertPair {
    ca.issue_server(&[name.to_owned(), "localhost".to_owned()], &[])
        .expect("issue server cert")
}

fn leaf_der(pair: &CertPair) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).expect("leaf pem")
}

/// Each file is replaced atomically; between the two renames the poller may still see the new
/// certificate with the old key (and count that mismatch), as with any two-file update.
fn write_pair(cert: &Path, key: &Path, pair: &CertPair) {
    write_atomic(cert, &pair.cert_pem);
    write_atomic(key, &pair.key_pem);
}

struct Server {
    addr: std::net::SocketAddr,
    stats: Arc<ReloadStats>,
    /// A CA bundle the same reloader watches, used only to observe that polls happened.
    marker: Marker,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// A watched file whose changes are always valid: when the reloader has applied a change to it,
/// it has also polled the serving pair in that same pass (one pass polls every watch in order).
struct Marker {
    path: PathBuf,
    bundles: [String; 2],
    next: usize,
    _dir: tempfile::TempDir,
}

impl Marker {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundles = [
            generate_ca("marker-1").expect("ca").cert_pem().to_owned(),
            generate_ca("marker-2").expect("ca").cert_pem().to_owned(),
        ];
        let path = dir.path().join("marker-ca.crt");
        write_atomic(&path, &bundles[0]);
        Self {
            path,
            bundles,
            next: 1,
            _dir: dir,
        }
    }
}

impl Server {
    /// Waits until the reloader has run `n` more full passes than before the call.
    async fn wait_for_polls(&mut self, n: usize) {
        for _ in 0..n {
            let before = self.stats.reloads();
            let m = &mut self.marker;
            write_atomic(&m.path, &m.bundles[m.next]);
            m.next = 1 - m.next;
            let start = Instant::now();
            while self.stats.reloads() == before {
                assert!(start.elapsed() < DEADLINE, "the reloader stopped polling");
                tokio::time::sleep(POLL / 2).await;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

async fn handler(
    _req: http::Request<hyper::body::Incoming>,
    conn: Arc<ConnInfo>,
) -> http::Response<Full<Bytes>> {
    let body = format!("certs={}", conn.peer_certs.len());
    http::Response::new(Full::new(Bytes::from(body)))
}

async fn start(cert: PathBuf, key: PathBuf) -> Server {
    let mut reloader = CertReloader::new(POLL);
    let resolver = reloader.watch_serving(cert, key).expect("initial load");
    let marker = Marker::new();
    reloader.watch_roots(&marker.path).expect("marker load");
    let stats = reloader.stats();
    let config = server_config(resolver, Arc::new(RequestClientCert::new(&[])));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (reload_stop_tx, reload_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let reload = tokio::spawn(reloader.run(async {
            let _ = reload_stop_rx.await;
        }));
        let _ = serve(listener, config, handler, async {
            let _ = stop_rx.await;
        })
        .await;
        let _ = reload_stop_tx.send(());
        let _ = reload.await;
    });
    Server {
        addr,
        stats,
        marker,
        stop: Some(stop_tx),
        task,
    }
}

fn client_config(ca: &Ca, alpn: &[&[u8]], client: Option<&CertPair>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("ca pem"))
        .expect("add root");
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client {
        Some(pair) => builder
            .with_client_auth_cert(
                vec![leaf_der(pair)],
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key pem"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake")
}

fn served_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server cert")
        .clone()
        .into_owned()
}

/// Sends one HTTP/1.1 request on an open connection and returns the body.
async fn get(stream: &mut TlsStream<TcpStream>) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("read timeout")
            .expect("read");
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("length"))
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                assert!(head.starts_with("http/1.1 200"), "status: {head}");
                return text[end + 4..end + 4 + len].to_owned();
            }
        }
    }
}

async fn wait_for_leaf(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    want: &CertificateDer<'_>,
) {
    let start = Instant::now();
    loop {
        let stream = connect(addr, Arc::clone(config)).await;
        if served_leaf(&stream).as_ref() == want.as_ref() {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "new certificate not served in time");
        tokio::time::sleep(POLL / 2).await;
    }
}

#[tokio::test]
async fn rotates_plain_files_and_keeps_last_good_on_corruption() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let ca = generate_ca("test-ca").expect("ca");
    let (a, b) = (server_pair(&ca, "a.example"), server_pair(&ca, "b.example"));
    write_pair(&cert, &key, &a);
    let mut server = start(cert.clone(), key.clone()).await;
    let config = client_config(&ca, &[b"http/1.1"], None);

    let mut open = connect(server.addr, Arc::clone(&config)).await;
    assert_eq!(served_leaf(&open), leaf_der(&a));
    assert_eq!(get(&mut open).await, "certs=0");

    write_pair(&cert, &key, &b);
    wait_for_leaf(server.addr, &config, &leaf_der(&b)).await;
    assert!(server.stats.reloads() >= 1);
    // The connection opened before the rotation still serves requests.
    assert_eq!(get(&mut open).await, "certs=0");

    // Counted from here: a poll between the two renames above may have seen b's certificate
    // with a's key, a rejected state of its own.
    let before = server.stats.failures();
    write_atomic(&cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let start = Instant::now();
    while server.stats.failures() == before {
        assert!(start.elapsed() < DEADLINE, "failure not counted");
        tokio::time::sleep(POLL / 2).await;
    }
    let fresh = connect(server.addr, Arc::clone(&config)).await;
    assert_eq!(served_leaf(&fresh), leaf_der(&b));
    // The broken file is reported once, not on every poll.
    let failures = server.stats.failures();
    assert_eq!(failures, before + 1);
    server.wait_for_polls(3).await;
    assert_eq!(server.stats.failures(), failures);

    // A key that does not belong to the certificate is rejected too.
    let c = server_pair(&ca, "c.example");
    write_atomic(&cert, &c.cert_pem);
    let start = Instant::now();
    while server.stats.failures() == failures {
        assert!(start.elapsed() < DEADLINE, "mismatch not counted");
        tokio::time::sleep(POLL / 2).await;
    }
    let fresh = connect(server.addr, Arc::clone(&config)).await;
    assert_eq!(served_leaf(&fresh), leaf_der(&b));
    write_atomic(&key, &c.key_pem);
    wait_for_leaf(server.addr, &config, &leaf_der(&c)).await;
}

#[cfg(unix)]
#[tokio::test]
async fn follows_secret_volume_symlink_swap() {
    use std::os::unix::fs::symlink;
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let ca = generate_ca("test-ca").expect("ca");
    let (a, b) = (server_pair(&ca, "a.example"), server_pair(&ca, "b.example"));

    // Layout kubelet uses: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp dir>.
    let first = root.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir(&first).expect("mkdir");
    write_pair(&first.join("tls.crt"), &first.join("tls.key"), &a);
    symlink(first.file_name().expect("name"), root.join("..data")).expect("data link");
    symlink("..data/tls.crt", root.join("tls.crt")).expect("crt link");
    symlink("..data/tls.key", root.join("tls.key")).expect("key link");

    let server = start(root.join("tls.crt"), root.join("tls.key")).await;
    let config = client_config(&ca, &[b"http/1.1"], None);
    let stream = connect(server.addr, Arc::clone(&config)).await;
    assert_eq!(served_leaf(&stream), leaf_der(&a));

    let second = root.join("..2026_01_01_00_01_00.000000002");
    std::fs::create_dir(&second).expect("mkdir");
    write_pair(&second.join("tls.crt"), &second.join("tls.key"), &b);
    symlink(second.file_name().expect("name"), root.join("..data_tmp")).expect("tmp link");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    std::fs::remove_dir_all(&first).expect("remove old");

    wait_for_leaf(server.addr, &config, &leaf_der(&b)).await;
}

#[tokio::test]
async fn negotiates_alpn_and_accepts_optional_client_certs() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let ca = generate_ca("test-ca").expect("ca");
    write_pair(&cert, &key, &server_pair(&ca, "a.example"));
    let server = start(cert, key).await;

    let h2 = connect(server.addr, client_config(&ca, &[b"h2"], None)).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h1 = connect(server.addr, client_config(&ca, &[b"http/1.1"], None)).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut h1).await, "certs=0");

    // A client certificate from any CA passes the handshake and reaches the handler.
    let other = generate_ca("other-ca").expect("other ca");
    let client = other.issue_client("someone", &["group"]).expect("client cert");
    let mut with_cert = connect(server.addr, client_config(&ca, &[b"http/1.1"], Some(&client))).await;
    assert_eq!(get(&mut with_cert).await, "certs=1");
}

#[tokio::test]
async fn reloads_client_ca_bundle() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.crt");
    let (first, second) = (
        generate_ca("first").expect("ca"),
        generate_ca("second").expect("ca"),
    );
    write_atomic(&path, first.cert_pem());
    let mut reloader = CertReloader::new(POLL);
    let roots = reloader.watch_roots(&path).expect("load");
    let stats = reloader.stats();
    let der = |ca: &Ca| CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("pem");
    assert_eq!(roots.load().certs(), [der(&first)]);

    write_atomic(&path, "garbage");
    reloader.poll_once().await;
    assert_eq!(stats.failures(), 1);
    assert_eq!(roots.load().certs(), [der(&first)]);

    write_atomic(&path, format!("{}{}", first.cert_pem(), second.cert_pem()));
    reloader.poll_once().await;
    assert_eq!(stats.reloads(), 1);
    assert_eq!(roots.load().certs(), [der(&first), der(&second)]);
    assert_eq!(roots.load().subjects().len(), 2);
}
