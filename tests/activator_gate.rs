//! The plain proxy port's gate (`src/activator/gate.rs`): a connection's first request, held
//! before hyper serves the connection while its target is at zero, behaves as a request held by
//! the handler: released the moment the port accepts with its body intact, the connection kept
//! alive after, pipelined requests answered in order, the deadline, the caps, a client that
//! leaves, the counts on the admin port, and shutdown draining it. Malformed and oversized heads
//! get hyper's answers.
//!
//! No sleeps stand for "long enough": every wait polls a condition under a deadline.

mod common;

use common::activator::{
    Activator, BUDGET, IDLE_COMMAND, cold_start, get, object, reserved_port, serve_echo,
};
use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// An upstream answering with the request's path, then a newline, then its body as received.
fn serve_body_echo(listener: TcpListener) -> JoinHandle<()> {
    async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = request.uri().path().to_owned();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Response::new(Full::new(Bytes::from(
            [path.as_bytes(), b"\n", &body].concat(),
        ))))
    }
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(answer))
                    .await;
            });
        }
    })
}

/// A route `web/app` on `app.test` whose target's port is `port`.
async fn start(port: u16, spec: &str, flags: &[&str]) -> Activator {
    Activator::start(&[object("app", "app.test", port, IDLE_COMMAND, spec, "")], flags).await
}

/// A body larger than the gate's first read and hyper's read buffer, not one byte repeated.
fn big_body() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_post_keeps_its_body_and_its_connection() {
    let (socket, port) = reserved_port();
    let activator = start(port, "", &[]).await;

    let tcp = TcpStream::connect(activator.proxy).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let body = big_body();
    let post = Request::post("/upload")
        .header(http::header::HOST, "app.test")
        .body(Full::new(Bytes::from(body.clone())))
        .expect("request");
    let sent = tokio::spawn(sender.send_request(post));
    let held = activator.wait_route("web/app", "held", |r| r["held"] == 1).await;
    assert_eq!(held["concurrency"], 1, "{held}");
    let queue = activator.admin_json("/queue").await;
    assert_eq!(queue["web/app"]["RequestCount"], 1, "{queue}");
    assert_eq!(queue["web/app"]["Concurrency"], 1, "{queue}");

    let _upstream = serve_body_echo(socket.listen(64).expect("listen"));
    let response = tokio::time::timeout(BUDGET, sent)
        .await
        .expect("released in time")
        .expect("task")
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cold_start(response.headers()), Some("true"));
    let got = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&got[..8], b"/upload\n");
    assert!(
        got[8..] == body[..],
        "the body arrived changed ({} of {} bytes)",
        got.len() - 8,
        body.len()
    );

    // The same connection serves the next request, warm now (once the client side has taken
    // the first exchange off the connection: sending before that is refused as "not ready").
    tokio::time::timeout(BUDGET, sender.ready())
        .await
        .expect("ready in time")
        .expect("connection kept");
    let next = Request::get("/again")
        .header(http::header::HOST, "app.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(BUDGET, sender.send_request(next))
        .await
        .expect("in time")
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cold_start(response.headers()), Some("false"));
    let got = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&got[..], b"/again\n");

    let route = activator
        .wait_route("web/app", "counted once each", |r| r["concurrency"] == 0)
        .await;
    assert_eq!(route["held"], 0, "{route}");
    let queue = activator.admin_json("/queue").await;
    assert_eq!(queue["web/app"]["RequestCount"], 2, "{queue}");
    let metrics = get(activator.admin, "admin", "/metrics")
        .await
        .expect("metrics")
        .2;
    let observed = metrics
        .lines()
        .find(|l| l.starts_with("ebb_activator_cold_start_duration_seconds_count") && l.contains("web"))
        .unwrap_or_default()
        .to_owned();
    assert!(observed.ends_with(" 1"), "one cold start observed: {observed}");
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_behind_a_held_one_are_answered_in_order() {
    let (socket, port) = reserved_port();
    let activator = start(port, "", &[]).await;
    let mut raw = TcpStream::connect(activator.proxy).await.expect("connect");
    raw.write_all(
        b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    activator.wait_route("web/app", "held", |r| r["held"] == 1).await;
    let _upstream = serve_body_echo(socket.listen(64).expect("listen"));
    let mut out = Vec::new();
    tokio::time::timeout(BUDGET, raw.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s:?} in {text}"));
    assert!(
        at("/one\n") < at("/two\nhello") && at("/two\nhello") < at("/three\n"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    let queue = activator.admin_json("/queue").await;
    assert_eq!(queue["web/app"]["RequestCount"], 3, "{queue}");
    activator.stop().await;
}

#[tokio::test]
async fn the_deadline_answers_504_once_and_the_connection_goes_on() {
    let (_socket, port) = reserved_port();
    let spec = "  timeouts:\n    conditionWait: 300ms";
    let activator = start(port, spec, &[]).await;
    let tcp = TcpStream::connect(activator.proxy).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = || {
        Request::get("/")
            .header(http::header::HOST, "app.test")
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let response = tokio::time::timeout(BUDGET, sender.send_request(request()))
        .await
        .expect("in time")
        .expect("answered");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    response.into_body().collect().await.expect("body");
    let route = activator
        .wait_route("web/app", "counted", |r| r["held"] == 0)
        .await;
    assert_eq!(route["holdTimeouts"], 1, "{route}");
    assert_eq!(route["concurrency"], 0, "{route}");
    let queue = activator.admin_json("/queue").await;
    assert_eq!(queue["web/app"]["RequestCount"], 1, "{queue}");

    // The next request on the connection is held by the handler, and times out the same way.
    tokio::time::timeout(BUDGET, sender.ready())
        .await
        .expect("ready in time")
        .expect("connection kept");
    let response = tokio::time::timeout(BUDGET, sender.send_request(request()))
        .await
        .expect("in time")
        .expect("answered");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let route = activator
        .wait_route("web/app", "counted", |r| r["holdTimeouts"] == 2)
        .await;
    assert_eq!(route["held"], 0, "{route}");
    activator.stop().await;
}

#[tokio::test]
async fn past_the_caps_503_with_retry_after() {
    let (_socket, port) = reserved_port();
    let activator = start(port, "", &["--max-held", "1", "--hold-timeout", "7s"]).await;
    let mut first = TcpStream::connect(activator.proxy).await.expect("connect");
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    activator.wait_route("web/app", "held", |r| r["held"] == 1).await;
    let (status, headers, _) = get(activator.proxy, "app.test", "/").await.expect("answered");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"7"[..]));
    let route = activator.admin_json("/routes").await["web/app"].clone();
    assert_eq!(route["overflows"], 1, "{route}");
    assert_eq!(route["held"], 1, "{route}");
    assert_eq!(route["concurrency"], 1, "{route}");
    drop(first);
    activator
        .wait_route("web/app", "released", |r| r["held"] == 0 && r["concurrency"] == 0)
        .await;
    activator.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_with_its_body_unsent_is_counted_abandoned() {
    let (_socket, port) = reserved_port();
    let activator = start(port, "", &[]).await;
    let mut raw = TcpStream::connect(activator.proxy).await.expect("connect");
    // Half the body: bytes wait past the head in the socket while the request is held.
    raw.write_all(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .expect("write");
    activator.wait_route("web/app", "held", |r| r["held"] == 1).await;
    drop(raw);
    let route = activator
        .wait_route("web/app", "the hold is released", |r| {
            r["held"] == 0 && r["concurrency"] == 0
        })
        .await;
    assert_eq!(route["abandoned"], 1, "{route}");
    assert_eq!(route["holdTimeouts"], 0, "{route}");
    let queue = activator.admin_json("/queue").await;
    assert_eq!(queue["web/app"]["RequestCount"], 1, "{queue}");
    activator.stop().await;
}

/// Writes `sent` on a new connection and reads until the proxy closes it.
async fn exchange(proxy: SocketAddr, sent: &[u8]) -> String {
    let mut raw = TcpStream::connect(proxy).await.expect("connect");
    raw.write_all(sent).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(BUDGET, raw.read_to_end(&mut out))
        .await
        .expect("closed in time");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_hyper_answers() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = upstream.local_addr().expect("addr").port();
    let _server = serve_echo(upstream);
    let activator = start(port, "", &[]).await;

    let answer = exchange(activator.proxy, b"GET / HTTP/1.1\r\nHost app.test\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    let too_many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let answer = exchange(
        activator.proxy,
        format!("GET / HTTP/1.1\r\nHost: app.test\r\n{too_many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Hyper's limit (its default `max_buf_size`) reached without the head's end; nothing more
    // is sent, so the proxy closes with every byte read (no reset eating the answer).
    let mut long = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Long: ".to_vec();
    long.resize(8192 + 4096 * 100, b'l');
    let answer = exchange(activator.proxy, &long).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A head just under the limit is served.
    let cookie = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(100_000)
    );
    let answer = exchange(activator.proxy, cookie.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let queue = activator.admin_json("/queue").await;
    assert_eq!(
        queue["web/app"]["RequestCount"], 1,
        "only the valid request counted: {queue}"
    );
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_held_request_then_closes_its_connection() {
    let (socket, port) = reserved_port();
    let activator = start(port, "", &[]).await;
    let mut raw = TcpStream::connect(activator.proxy).await.expect("connect");
    raw.write_all(b"GET /late HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    activator.wait_route("web/app", "held", |r| r["held"] == 1).await;
    let proxy = activator.proxy;
    let admin = activator.admin;
    let stopping = tokio::spawn(activator.stop());
    // The proxy stops accepting; the held request is still in flight.
    let deadline = std::time::Instant::now() + BUDGET;
    while TcpStream::connect(proxy).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy port kept accepting"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = admin;
    let _upstream = serve_echo(socket.listen(64).expect("listen"));
    let mut out = Vec::new();
    tokio::time::timeout(BUDGET, raw.read_to_end(&mut out))
        .await
        .expect("answered and closed in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    assert!(text.contains("/late"), "{text}");
    tokio::time::timeout(BUDGET, stopping)
        .await
        .expect("stopped in time")
        .expect("task");
}
