//! `ebb activator`'s HTTPS port and its connection cap, end to end on loopback: a real rustls
//! client speaking HTTP/1.1 and HTTP/2 (ALPN) to the proxy, which forwards to a loopback
//! upstream with `X-Forwarded-Proto: https`, under the plain port's handshake deadline; and an
//! upgraded (WebSocket) tunnel that counts against `--max-connections` until it closes.
//!
//! No sleeps stand for "long enough": every wait polls a condition under a deadline.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::activator::{Activator, BUDGET, IDLE_COMMAND};
use ebb::tls::certgen;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::TlsConnector;

/// An HTTPScaledObject for `--local` on host `NAME.test` whose target the test serves itself.
fn object(name: &str, port: u16) -> String {
    common::activator::object(name, &format!("{name}.test"), port, IDLE_COMMAND, "", "")
}

/// An upstream (HTTP/1.1 and h2c) answering with the version and forwarded headers it saw.
fn serve_echo(listener: TcpListener) -> JoinHandle<()> {
    async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let h = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let text = format!(
            "{:?} xfp={} xff={} xfh={}",
            request.version(),
            h("x-forwarded-proto"),
            h("x-forwarded-for"),
            h("x-forwarded-host"),
        );
        Ok(Response::new(Full::new(Bytes::from(text))))
    }
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

/// A CA, and a serving pair for `localhost`/127.0.0.1 written under `dir`.
fn certificate(dir: &Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ca = certgen::generate_ca("activator-test-ca").expect("CA");
    let pair = ca
        .issue_server(&["localhost".to_owned()], &["127.0.0.1".parse().expect("ip")])
        .expect("serving certificate");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    common::fs::write_atomic(&cert, &pair.cert_pem);
    common::fs::write_atomic(&key, &pair.key_pem);
    (ca.cert_pem().to_owned(), cert, key)
}

fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("root");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(Arc::clone(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the proxy")
}

async fn body_text(response: Response<Incoming>) -> (StatusCode, String) {
    let status = response.status();
    let body = tokio::time::timeout(BUDGET, response.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `GET /` with `Host: host` over HTTP/1.1 on a fresh plain connection.
async fn get_plain(addr: SocketAddr, host: &str) -> Result<(StatusCode, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get("/")
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(BUDGET, sender.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(body_text(response).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_port_serves_http1_and_h2_with_forwarded_proto_https() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _upstream = serve_echo(upstream);
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca_pem, cert, key) = certificate(certs.path());
    let activator = Activator::start_with_tls(
        &[object("web", port)],
        &["--tls-handshake-timeout", "300ms"],
        Some((&cert, &key)),
    )
    .await;
    let https = activator.https.expect("https port");

    // HTTP/2, chosen by ALPN.
    let tls = tls_connect(https, &client_config(&ca_pem, &[b"h2", b"http/1.1"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        let request = Request::get("https://web.test/")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = tokio::time::timeout(BUDGET, h2.send_request(request))
            .await
            .expect("answer in time")
            .expect("h2 response");
        let (status, text) = body_text(response).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(text, "HTTP/2.0 xfp=https xff=127.0.0.1 xfh=web.test");
    }

    // HTTP/1.1, chosen by ALPN.
    let tls = tls_connect(https, &client_config(&ca_pem, &[b"http/1.1"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let request = Request::get("/")
        .header(http::header::HOST, "web.test")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(BUDGET, h1.send_request(request))
        .await
        .expect("answer in time")
        .expect("h1 response");
    let (status, text) = body_text(response).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, "HTTP/1.1 xfp=https xff=203.0.113.9, 127.0.0.1 xfh=web.test");

    // The plain port still says http.
    let (status, text) = get_plain(activator.proxy, "web.test").await.expect("plain port");
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, "HTTP/1.1 xfp=http xff=127.0.0.1 xfh=web.test")
    );

    // Plain HTTP on the HTTPS port gets Go's one-line hint.
    let mut tcp = TcpStream::connect(https).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(BUDGET, tcp.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&answer).contains("Client sent an HTTP request to an HTTPS server."),
        "{answer:?}"
    );

    // A client that opens the port and never says hello is closed at the handshake deadline.
    let mut silent = TcpStream::connect(https).await.expect("connect");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(BUDGET, silent.read(&mut byte))
        .await
        .expect("closed before the test's budget");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    activator.stop().await;
}

/// A WebSocket echo server (tokio-tungstenite) on `listener`.
fn serve_websocket_echo(listener: TcpListener) -> JoinHandle<()> {
    use futures::{SinkExt, StreamExt};
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() {
                        break;
                    }
                    if message.is_text() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_tunnel_counts_against_max_connections_until_it_closes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _upstream = serve_websocket_echo(upstream);
    let activator = Activator::start(&[object("chat", port)], &["--max-connections", "1"]).await;

    let tcp = TcpStream::connect(activator.proxy).await.expect("connect");
    let (mut ws, _) = tokio::time::timeout(
        BUDGET,
        tokio_tungstenite::client_async("ws://chat.test/socket", tcp),
    )
    .await
    .expect("upgraded in time")
    .expect("WebSocket handshake through the proxy");
    ws.send(Message::text("ping")).await.expect("send");
    let back = tokio::time::timeout(BUDGET, ws.next())
        .await
        .expect("echo in time")
        .expect("a message")
        .expect("not an error");
    assert_eq!(back, Message::text("ping"));

    // The tunnel holds the only place: another connection is refused (closed unanswered).
    let refused = get_plain(activator.proxy, "chat.test").await;
    assert!(
        refused.is_err(),
        "a second connection was served past the cap: {refused:?}"
    );
    // The tunnel still works.
    ws.send(Message::text("still here")).await.expect("send");
    let back = tokio::time::timeout(BUDGET, ws.next())
        .await
        .expect("echo in time")
        .expect("a message")
        .expect("not an error");
    assert_eq!(back, Message::text("still here"));

    // Once it closes, its place is free again.
    ws.close(None).await.expect("close");
    drop(ws);
    let deadline = Instant::now() + BUDGET;
    loop {
        match get_plain(activator.proxy, "chat.test").await {
            // The echo server answers a plain GET with a failed WebSocket handshake: any
            // answer at all proves the connection was admitted.
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the closed tunnel never gave its place back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    activator.stop().await;
}
