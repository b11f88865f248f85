//! Forwarding to a target's endpoint: HTTP/1.1 through a pooled client, HTTP/2 (h2c) over one
//! multiplexed connection per endpoint, dials retried while a target is still opening its port.
//!
//! Refused dials are retried every `dial_retry_interval` (the add-on's 50 ms), each attempt
//! bounded by `connect_timeout` (500 ms), for at most [`DIAL_BUDGET`]; the caller's own
//! deadlines bound the whole exchange. The request body is streamed, never buffered: a held
//! request's body stays in the client's socket until it is forwarded, so memory per held request
//! is hyper's read buffer.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    HeaderValue, Request, Response, Uri, Version,
    uri::{Authority, PathAndQuery},
};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, time::Sleep};

use super::h1pool::{self, H1Pool, Lease, Leased};
use crate::locks::LockExt;

/// Errors carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
/// An upstream's response body, its connection back in the pool when it ends.
pub type UpstreamBody = Leased<ProxyBody>;

/// Longest time dials to one endpoint are retried (the add-on's 1 min cap).
pub const DIAL_BUDGET: Duration = Duration::from_secs(60);

/// How dials are attempted.
#[derive(Debug, Clone, Copy)]
pub struct DialPolicy {
    /// One attempt at most.
    pub connect_timeout: Duration,
    /// Pause after a failed attempt.
    pub retry_interval: Duration,
    /// All attempts together at most.
    pub budget: Duration,
}

/// Dials `addr`, retrying failed attempts until the budget is spent.
pub async fn dial(addr: SocketAddr, policy: DialPolicy) -> io::Result<TcpStream> {
    let give_up = Instant::now() + policy.budget;
    loop {
        let error = match tokio::time::timeout(policy.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")),
        };
        if Instant::now() + policy.retry_interval >= give_up {
            return Err(error);
        }
        tokio::time::sleep(policy.retry_interval).await;
    }
}

/// The protocol spoken to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 without TLS (prior knowledge).
    H2c,
}

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The endpoint could not be dialled.
    #[error("connecting to {0}")]
    Connect(SocketAddr, #[source] io::Error),
    /// The HTTP/1 exchange failed.
    #[error("HTTP/1.1 exchange with {0}")]
    Http1(SocketAddr, #[source] hyper::Error),
    /// The HTTP/2 exchange failed.
    #[error("HTTP/2 exchange with {0}")]
    Http2(SocketAddr, #[source] hyper::Error),
    /// The upgrade (WebSocket) exchange failed.
    #[error("upgrade exchange with {0}")]
    Upgrade(SocketAddr, #[source] hyper::Error),
}

/// Connections to endpoints, shared by every request.
pub struct Upstream {
    h1: Arc<H1Pool<ProxyBody>>,
    h2: Mutex<HashMap<SocketAddr, hyper::client::conn::http2::SendRequest<ProxyBody>>>,
    policy: DialPolicy,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Clients dialling under `policy`.
    pub fn new(policy: DialPolicy) -> Upstream {
        Upstream {
            h1: Arc::default(),
            h2: Mutex::new(HashMap::new()),
            policy,
        }
    }

    /// Sends `request` (path and query in its URI, `host` the authority the client asked for)
    /// to `addr`.
    pub async fn send(
        &self,
        addr: SocketAddr,
        protocol: Protocol,
        host: &HeaderValue,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match protocol {
            Protocol::Http1 => {
                *request.version_mut() = Version::HTTP_11;
                origin_form(request.uri_mut());
                if !request.headers().contains_key(http::header::HOST) {
                    // As hyper_util's client does: the authority dialled, when the client sent none.
                    if let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
                        request.headers_mut().insert(http::header::HOST, v);
                    }
                }
                self.send_h1(addr, request).await
            }
            // Boxed: its dial and handshake would otherwise size every request's future.
            Protocol::H2c => Box::pin(self.send_h2(addr, host, request))
                .await
                .map(|r| r.map(|body| Leased::new(body, None))),
        }
    }

    /// Sends an HTTP/1.1 request on an idle pooled connection to `addr`, else on a new one. A
    /// pooled connection the endpoint closed meanwhile refuses the request unsent, and it goes
    /// on the next one (as `hyper_util`'s client retries canceled requests); a new connection's
    /// failure is the answer.
    async fn send_h1(
        &self,
        addr: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // Bounded by the pool's size: each round takes one idle connection out of it for good.
        for _ in 0..=h1pool::MAX_IDLE_PER_ENDPOINT {
            let (mut sender, pooled) = match self.h1.take(addr) {
                Some(sender) => (sender, true),
                None => (Box::pin(self.dial_h1(addr)).await?, false),
            };
            if let Err(e) = sender.ready().await {
                if pooled {
                    continue;
                }
                return Err(UpstreamError::Http1(addr, e));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease::new(Arc::clone(&self.h1), addr, sender);
                    return Ok(response.map(|body| Leased::new(body, Some(lease))));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if pooled => request = unsent,
                    _ => return Err(UpstreamError::Http1(addr, e.into_error())),
                },
            }
        }
        Err(UpstreamError::Connect(
            addr,
            io::Error::other("every pooled connection was closed"),
        ))
    }

    /// A new HTTP/1.1 connection to `addr`.
    async fn dial_h1(&self, addr: SocketAddr) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let tcp = dial(addr, self.policy)
            .await
            .map_err(|e| UpstreamError::Connect(addr, e))?;
        h1pool::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Http1(addr, e))
    }

    /// Idle HTTP/1.1 connections kept now.
    pub fn idle_h1(&self) -> usize {
        self.h1.idle()
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        host: &HeaderValue,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        *request.version_mut() = Version::HTTP_2;
        // :authority carries the client's host, as Go's transport sends req.Host.
        let uri = std::mem::take(request.uri_mut());
        *request.uri_mut() = endpoint_uri(Authority::try_from(host.as_bytes()), uri);
        request.headers_mut().remove(http::header::HOST);
        let mut sender = self.h2_sender(addr).await?;
        if sender.ready().await.is_err() {
            // The cached connection died since: one fresh connection, once.
            self.forget_h2(addr);
            sender = self.h2_sender(addr).await?;
        }
        sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Http2(addr, e))
    }

    /// Sends an upgrade request (WebSocket) to `addr` over a connection of its own that can be
    /// taken over once the endpoint answers `101 Switching Protocols` (`hyper::upgrade::on`).
    pub async fn upgrade(
        &self,
        addr: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.version_mut() = Version::HTTP_11;
        *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        let tcp = dial(addr, self.policy)
            .await
            .map_err(|e| UpstreamError::Connect(addr, e))?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Upgrade(addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream upgrade connection closed");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Upgrade(addr, e))
    }

    async fn h2_sender(
        &self,
        addr: SocketAddr,
    ) -> Result<hyper::client::conn::http2::SendRequest<ProxyBody>, UpstreamError> {
        let cached = self.h2_map().get(&addr).filter(|s| !s.is_closed()).cloned();
        if let Some(sender) = cached {
            return Ok(sender);
        }
        let tcp = dial(addr, self.policy)
            .await
            .map_err(|e| UpstreamError::Connect(addr, e))?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Http2(addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection closed");
            }
        });
        self.h2_map().insert(addr, sender.clone());
        Ok(sender)
    }

    fn forget_h2(&self, addr: SocketAddr) {
        self.h2_map().remove(&addr);
    }

    fn h2_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, hyper::client::conn::http2::SendRequest<ProxyBody>>>
    {
        self.h2.lock_or_recover()
    }
}

/// `http://authority` plus the path and query of `uri` (`/` if it has none), built from the
/// parts without formatting and parsing the whole again.
fn endpoint_uri(authority: Result<Authority, http::uri::InvalidUri>, uri: Uri) -> Uri {
    let mut parts = uri.into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = authority.ok();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// Leaves only the path and query in `uri` (`/` if it has none): the request line HTTP/1.1
/// sends to an origin server (RFC 9112 §3.2.1), whichever form the client used.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return;
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = Uri::from(path);
}

/// The pause between two pieces of a request body grew past the limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for longer than {0:?}")]
pub struct BodyStalled(Duration);

/// A request body that fails when the client stops sending it for longer than `limit`, so a
/// slow client cannot hold an upstream connection (the server's header deadline covers only
/// the headers).
#[derive(Debug)]
pub struct IdleTimeoutBody<B> {
    inner: B,
    limit: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleTimeoutBody<B> {
    /// Wraps `inner`; `None` disables the limit.
    pub fn new(inner: B, limit: Option<Duration>) -> Self {
        Self {
            inner,
            limit,
            timer: None,
        }
    }
}

impl<B> Body for IdleTimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(limit) = this.limit {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(Box::new(BodyStalled(limit)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps a value (the in-flight count) alive until it is done or dropped.
#[derive(Debug)]
pub struct Guarded<B, G> {
    inner: B,
    guard: Option<G>,
}

impl<B, G> Guarded<B, G> {
    /// Wraps `inner`, dropping `guard` when the body ends.
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> Body for Guarded<B, G>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            this.guard = None;
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    fn upstream() -> Upstream {
        Upstream::new(DialPolicy {
            connect_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_millis(10),
            budget: Duration::from_secs(5),
        })
    }

    fn get(path: &'static str) -> Request<ProxyBody> {
        Request::get(path)
            .header(http::header::HOST, "pool.test")
            .body(
                Empty::new()
                    .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
                    .boxed_unsync(),
            )
            .expect("a valid request")
    }

    /// A loopback upstream that answers every request on a connection with `body`, closing the
    /// connection after one answer when `close` is set; counts the connections it accepted.
    async fn raw_upstream(body: &'static [u8], close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = tcp.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                            if tcp.write_all(head.as_bytes()).await.is_err()
                                || tcp.write_all(body).await.is_err()
                            {
                                return;
                            }
                            if close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One GET of `path` from `addr` through `upstream`, its body read to the end.
    async fn fetch(upstream: &Upstream, addr: SocketAddr, path: &'static str) -> Bytes {
        let host = HeaderValue::from_static("pool.test");
        let response = upstream
            .send(addr, Protocol::Http1, &host, get(path))
            .await
            .expect("answered");
        response.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn a_connection_whose_response_ended_serves_the_next_request() {
        let (addr, accepted) = raw_upstream(b"hello", false).await;
        let upstream = upstream();
        for _ in 0..5 {
            assert_eq!(&fetch(&upstream, addr, "/").await[..], b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.idle_h1(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_does_not_go_back_to_the_pool() {
        static BIG: [u8; 1 << 20] = [b'x'; 1 << 20];
        let (addr, accepted) = raw_upstream(&BIG, false).await;
        let upstream = upstream();
        let host = HeaderValue::from_static("pool.test");
        let response = upstream
            .send(addr, Protocol::Http1, &host, get("/"))
            .await
            .expect("answered");
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|d| d.len() < BIG.len()));
        drop(body);
        assert_eq!(upstream.idle_h1(), 0);
        assert_eq!(fetch(&upstream, addr, "/").await.len(), BIG.len());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_endpoint_closed_is_passed_over() {
        let (addr, accepted) = raw_upstream(b"once", true).await;
        let upstream = upstream();
        assert_eq!(&fetch(&upstream, addr, "/").await[..], b"once");
        // Put back at the body's end, then seen closed once hyper reads the endpoint's FIN.
        eventually("the closed connection", || upstream.idle_h1() == 0).await;
        assert_eq!(&fetch(&upstream, addr, "/again").await[..], b"once");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_request_line_is_origin_form() {
        let mut uri: Uri = "http://example.test:8080/a/b?c=d".parse().expect("uri");
        origin_form(&mut uri);
        assert_eq!(uri, "/a/b?c=d");
        let mut uri: Uri = "http://example.test".parse().expect("uri");
        origin_form(&mut uri);
        assert_eq!(uri, "/");
        let mut uri: Uri = "/kept?x".parse().expect("uri");
        origin_form(&mut uri);
        assert_eq!(uri, "/kept?x");
    }
}
