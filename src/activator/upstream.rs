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
    sync::Mutex,
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
use hyper_util::{
    client::legacy,
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::{net::TcpStream, time::Sleep};

use crate::locks::LockExt;

/// Errors carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

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

/// The HTTP/1 client's connector: the URI's authority is always an endpoint's `ip:port`.
#[derive(Debug, Clone)]
struct Connector(DialPolicy);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let policy = self.0;
        Box::pin(async move {
            let addr: SocketAddr =
                uri.authority()
                    .and_then(|a| a.as_str().parse().ok())
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, format!("not an endpoint: {uri}"))
                    })?;
            dial(addr, policy).await.map(TokioIo::new)
        })
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
    Http1(SocketAddr, #[source] legacy::Error),
    /// The HTTP/2 exchange failed.
    #[error("HTTP/2 exchange with {0}")]
    Http2(SocketAddr, #[source] hyper::Error),
    /// The upgrade (WebSocket) exchange failed.
    #[error("upgrade exchange with {0}")]
    Upgrade(SocketAddr, #[source] hyper::Error),
}

/// Connections to endpoints, shared by every request.
pub struct Upstream {
    h1: legacy::Client<Connector, ProxyBody>,
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
        let h1 = legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(Connector(policy));
        Upstream {
            h1,
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
    ) -> Result<Response<Incoming>, UpstreamError> {
        match protocol {
            Protocol::Http1 => {
                *request.version_mut() = Version::HTTP_11;
                let uri = std::mem::take(request.uri_mut());
                *request.uri_mut() =
                    endpoint_uri(Authority::from_maybe_shared(Bytes::from(addr.to_string())), uri);
                self.h1
                    .request(request)
                    .await
                    .map_err(|e| UpstreamError::Http1(addr, e))
            }
            // Boxed: its dial and handshake would otherwise size every request's future.
            Protocol::H2c => Box::pin(self.send_h2(addr, host, request)).await,
        }
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
