//! The serving loop every HTTP port of ebb shares: accept with back-off, a handshake (TLS or
//! none) under a deadline, HTTP/1.1 and HTTP/2 through hyper with its timers, a watchdog for the
//! phases hyper does not time (waiting for the first request, idleness between requests), a
//! connection cap, and a shutdown that drops connections without a complete request at once
//! while in-flight requests drain.
//!
//! ```text
//! accept --ConnTable::admit--> handshake (≤ handshake timeout) --> gate (optional)
//!        --hyper: h1 header timer, h2 pings--> requests (in flight: no deadline of ours)
//!        --watchdog--> first request ≤ read-header timeout, then idle ≤ idle timeout
//! ```

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use super::{
    conns::{ConnGuard, ConnState, ConnTable, RequestGuard, Signal},
    logthrottle::{DEFAULT_WINDOW, LogThrottle},
    metrics::{CloseReason, ServerMetrics},
    prefixed::Prefixed,
};
use crate::locks::LockExt;

/// Deadlines and caps of one server; `None` disables a timeout. Defaults follow kube-apiserver
/// where it has a value (header 32 s, idle 90 s, 250 streams per HTTP/2 connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// TCP accept to finished TLS handshake (and, on the TLS port, the plain-HTTP check).
    pub handshake_timeout: Option<Duration>,
    /// Handshake to the first complete request; also each HTTP/1 request's headers.
    pub read_header_timeout: Option<Duration>,
    /// Longest time without a request in flight once a request was served.
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 ping interval on a quiet connection.
    pub http2_keepalive_interval: Option<Duration>,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    pub http2_keepalive_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Open connections at most; from 90 % on, unauthenticated ones are shed first.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown is requested.
    pub drain_timeout: Duration,
    /// Window of the rate-limited logs (refusals, accept errors, handshake failures).
    pub log_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Some(Duration::from_secs(10)),
            read_header_timeout: Some(Duration::from_secs(32)),
            idle_timeout: Some(Duration::from_secs(90)),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(20),
            http2_max_streams: 250,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: Duration::from_secs(10),
            log_interval: DEFAULT_WINDOW,
        }
    }
}

/// Connections per port when nothing else is said.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// [`DEFAULT_MAX_CONNECTIONS`], lowered when the process's open-file limit leaves less room: a
/// quarter of the limit (at least 32) stays free for everything else, and the two ports of a
/// component share the rest, so clients of one port cannot exhaust the descriptors the other
/// port, the upstream calls and the certificate reloads need.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| open_files_soft_limit(&text));
    max_connections_for(soft)
}

fn max_connections_for(open_files: Option<u64>) -> usize {
    let Some(limit) = open_files.and_then(|l| usize::try_from(l).ok()) else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    let reserve = (limit / 4).max(32);
    (limit.saturating_sub(reserve) / 2).clamp(1, DEFAULT_MAX_CONNECTIONS)
}

/// The soft "Max open files" of `/proc/self/limits`; `None` when unlimited or unreadable.
fn open_files_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Longest wait for an HTTP/2 client to take its GOAWAY before the connection is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// First pause after a failed accept; doubled up to [`MAX_ACCEPT_BACKOFF`] (Go's schedule).
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Turns an accepted TCP stream into the stream HTTP is spoken on (TLS, or nothing).
pub trait Handshake: Send + Sync + 'static {
    /// The stream after the handshake.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// What the handler learns about the connection.
    type Info: Send + Sync + 'static;

    /// Runs the handshake; the serving loop bounds it by the handshake timeout.
    fn handshake(
        &self,
        tcp: TcpStream,
        conn: Arc<ConnState>,
    ) -> impl Future<Output = Result<(Self::Io, Self::Info), CloseReason>> + Send;

    /// An optional stage between the handshake and HTTP; the default starts HTTP at once.
    ///
    /// A gate may read the connection's first request head and hold that request before any
    /// HTTP state exists for it (the activator's requests for targets at zero). Until it counts
    /// the request in flight ([`ConnState::begin_request`], the guard handed on in
    /// [`Gated::Serve`]), the serving loop bounds it by the read-header deadline and closes it
    /// on eviction or shutdown; after, the request drains as any request in flight.
    fn gate(
        &self,
        io: Self::Io,
        info: &Arc<Self::Info>,
        conn: &Arc<ConnState>,
    ) -> impl Future<Output = Gated<Self::Io>> + Send {
        let _ = (info, conn);
        std::future::ready(Gated::Serve {
            io,
            read: Vec::new(),
            request: None,
        })
    }
}

/// How a [`Handshake::gate`] ended.
#[derive(Debug)]
pub enum Gated<Io> {
    /// Serve HTTP on the stream.
    Serve {
        /// The stream.
        io: Io,
        /// Bytes the gate read from it: HTTP reads them first.
        read: Vec<u8>,
        /// The first request, when the gate counted it in flight already; the handler's call
        /// for that request takes it over instead of counting the request again.
        request: Option<RequestGuard>,
    },
    /// Close the connection without a word; the reason is what the metrics record.
    Close(CloseReason),
}

/// No handshake: plain HTTP on the TCP stream (the admin port).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainTcp;

impl Handshake for PlainTcp {
    type Io = TcpStream;
    type Info = SocketAddr;

    async fn handshake(
        &self,
        tcp: TcpStream,
        conn: Arc<ConnState>,
    ) -> Result<(TcpStream, SocketAddr), CloseReason> {
        Ok((tcp, conn.peer))
    }
}

/// A response body that keeps its request counted in flight until hyper has written it (for a
/// streamed body such as the activator's, until its last frame).
#[derive(Debug)]
pub struct TrackedBody<B = Full<Bytes>> {
    body: B,
    _request: RequestGuard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One listening server: its name (the `server` metric label), limits and metrics.
#[derive(Debug, Clone)]
pub struct Server {
    /// Name in metrics and logs (`api`, `admin`, `webhooks`).
    pub name: &'static str,
    /// Deadlines and caps.
    pub limits: Limits,
    /// Where connection metrics go.
    pub metrics: Arc<ServerMetrics>,
}

struct Shared<A, H> {
    server: Server,
    handshake: A,
    handler: H,
    builder: auto::Builder<TokioExecutor>,
}

impl Server {
    /// A server with default limits whose metrics are registered nowhere.
    pub fn detached(name: &'static str) -> Self {
        Self {
            name,
            limits: Limits::default(),
            metrics: Arc::new(ServerMetrics::detached()),
        }
    }

    fn http_builder(&self) -> auto::Builder<TokioExecutor> {
        let limits = &self.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.read_header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.http2_keepalive_interval)
            .keep_alive_timeout(limits.http2_keepalive_timeout)
            .max_concurrent_streams(limits.http2_max_streams);
        builder
    }

    /// Accepts connections on `listener` and serves `handler` on them until `shutdown`
    /// resolves; then drops connections without a request in flight at once and lets the others
    /// finish for up to the drain timeout.
    pub async fn serve<A, H, F, B>(
        &self,
        listener: TcpListener,
        handshake: A,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        A: Handshake,
        H: Fn(Request<Incoming>, Arc<A::Info>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let name = self.name;
        let shared = Arc::new(Shared {
            server: self.clone(),
            handshake,
            handler,
            builder: self.http_builder(),
        });
        let table = ConnTable::new(self.limits.max_connections);
        let accept_log = LogThrottle::new(self.limits.log_interval, |s| {
            tracing::warn!(count = s.count, last = %s.last, "{} more failed accepts in the last {}", s.count, s.window_text());
        });
        let capacity_log = LogThrottle::new(self.limits.log_interval, |s| {
            tracing::warn!(count = s.count, last = %s.last, "{} more connections refused at the connection cap in the last {}", s.count, s.window_text());
        });
        let mut tasks = JoinSet::new();
        let mut backoff: Option<Duration> = None;
        tokio::pin!(shutdown);

        let result = loop {
            while tasks.try_join_next().is_some() {}
            let (tcp, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(pair) => {
                        backoff = None;
                        pair
                    }
                    Err(e) if is_transient_accept_error(&e) => {
                        self.metrics.accept_error(name);
                        // Out of descriptors: make room by closing a connection nobody vouched for.
                        if is_out_of_descriptors(&e)
                            && let Some(victim) = table.shed_one()
                        {
                            tracing::debug!(server = name, peer = %victim.peer, "descriptors exhausted; shed a connection");
                        }
                        let delay = backoff.map_or(FIRST_ACCEPT_BACKOFF, |d| (d * 2).min(MAX_ACCEPT_BACKOFF));
                        backoff = Some(delay);
                        if accept_log.admit(|| e.to_string()) {
                            tracing::warn!(server = name, error = %e, retry_in = ?delay, "accept failed; retrying");
                        }
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break Ok(()),
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                    Err(e) => break Err(e),
                },
            };
            let admitted = match table.admit(peer) {
                Ok(a) => a,
                Err(_) => {
                    self.metrics.closed(name, CloseReason::OverCapacity);
                    if capacity_log.admit(|| format!("from {peer}")) {
                        tracing::warn!(server = name, %peer, max_connections = table.max(), "connection refused: every open connection is authenticated or busy (raise --max-connections?)");
                    }
                    continue;
                }
            };
            // Latency matters more than packet count for small API responses.
            let _ = tcp.set_nodelay(true);
            tasks.spawn(connection(Arc::clone(&shared), tcp, admitted.guard));
        };

        drop(listener);
        table.drain_all();
        let drained = tokio::time::timeout(self.limits.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                server = name,
                open = tasks.len(),
                "connections still open after the drain timeout; closing them"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        result
    }
}

/// Serves one connection from handshake to close; see the module docs for the phases.
///
/// The loop wakes with the connection, so it keeps its own work per wake to a load or two:
/// eviction and shutdown arrive through [`ConnState::poll_signal`], and the watchdog is one
/// timer re-armed only when it fires (while a request is in flight it re-checks later instead
/// of being told when the connection turns idle).
async fn connection<A, H, F, B>(shared: Arc<Shared<A, H>>, tcp: TcpStream, guard: ConnGuard)
where
    A: Handshake,
    H: Fn(Request<Incoming>, Arc<A::Info>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = &shared.server;
    let limits = &server.limits;
    let name = server.name;
    server.metrics.opened(name);
    let open = OpenGauge(Arc::clone(&server.metrics), name);
    let state = Arc::clone(guard.state());

    let handshake = async {
        let run = shared.handshake.handshake(tcp, Arc::clone(&state));
        match limits.handshake_timeout {
            Some(t) => tokio::time::timeout(t, run)
                .await
                .unwrap_or(Err(CloseReason::HandshakeTimeout)),
            None => run.await,
        }
    };
    let outcome = tokio::select! {
        r = handshake => r,
        signal = std::future::poll_fn(|cx| state.poll_signal(cx, &[])) => Err(match signal {
            Signal::Evicted => CloseReason::Shed,
            Signal::Draining | Signal::Quiet => CloseReason::Shutdown,
        }),
    };
    let (io, info) = match outcome {
        Ok(pair) => pair,
        Err(reason) => {
            server.metrics.closed(name, reason);
            return;
        }
    };

    let info = Arc::new(info);

    let started = Instant::now();
    let grace = limits
        .read_header_timeout
        .map_or(GOAWAY_GRACE, |t| t.min(GOAWAY_GRACE));
    let recheck = limits
        .idle_timeout
        .or(limits.read_header_timeout)
        .unwrap_or(BUSY_RECHECK);
    let first = watchdog_deadline(&state, limits, started).map_or(started + recheck, |(at, _)| at);
    let timer = tokio::time::sleep_until(first.into());
    tokio::pin!(timer);
    let mut seen: Vec<Signal> = Vec::with_capacity(0);

    let gated = {
        let gate = shared.handshake.gate(io, &info, &state);
        tokio::pin!(gate);
        loop {
            tokio::select! {
                gated = gate.as_mut() => break gated,
                signal = std::future::poll_fn(|cx| state.poll_signal(cx, &seen)) => {
                    seen.push(signal);
                    match signal {
                        Signal::Evicted => break Gated::Close(CloseReason::Shed),
                        Signal::Draining if state.requests() == 0 => break Gated::Close(CloseReason::Shutdown),
                        // A request the gate holds drains like any in flight: HTTP serves it
                        // when the hold ends, then closes (see below).
                        Signal::Draining | Signal::Quiet => {}
                    }
                }
                () = timer.as_mut() => {
                    match watchdog_check(&state, limits, started, recheck, Instant::now()) {
                        Ok(next) => timer.as_mut().reset(next.into()),
                        Err(why) => break Gated::Close(why),
                    }
                }
            }
        }
    };
    let (io, read, gated_request) = match gated {
        Gated::Serve { io, read, request } => (io, read, request),
        Gated::Close(reason) => {
            server.metrics.closed(name, reason);
            tracing::debug!(server = name, peer = %state.peer, reason = reason.label(), "connection closed before HTTP");
            return;
        }
    };

    let service = {
        let state = Arc::clone(&state);
        let shared = Arc::clone(&shared);
        // The gate's request, counted already: the first call takes it (no lock without one).
        let begun = gated_request.map(|r| std::sync::Mutex::new(Some(r)));
        service_fn(move |request: Request<Incoming>| {
            let tracked = begun
                .as_ref()
                .and_then(|b| b.lock_or_recover().take())
                .unwrap_or_else(|| state.begin_request(request.version() == http::Version::HTTP_2));
            let response = (shared.handler)(request, Arc::clone(&info));
            async move {
                let response = response.await;
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    tracked.conn().mark_upgraded();
                }
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _request: tracked,
                }))
            }
        })
    };
    // With upgrades: a handler may answer 101 and take the connection over (the activator's
    // WebSocket tunnel); the others never do, and nothing changes for them. The stream carries
    // the connection's place in the table, so a tunnel keeps counting against the cap.
    let io = Counted {
        io: Prefixed::new(read, io),
        _slot: guard,
        _open: open,
    };
    let conn = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);

    // Set once a graceful close began: the reason, and when to stop waiting for it.
    let mut closing: Option<(Instant, CloseReason)> = None;
    // Shutdown began while the gate held the first request: serve that request, then close.
    // Hyper's graceful close ends a connection still sniffing its version without serving it,
    // so it comes after one poll, which takes the replayed head past the sniffing.
    let mut early = None;
    if seen.contains(&Signal::Draining) {
        match futures::poll!(conn.as_mut()) {
            Poll::Ready(result) => early = Some(result),
            Poll::Pending => conn.as_mut().graceful_shutdown(),
        }
    }
    let reason = if let Some(result) = early {
        match result {
            Ok(()) => CloseReason::Done,
            Err(e) => classify(e.as_ref()),
        }
    } else {
        loop {
            tokio::select! {
                result = conn.as_mut() => break match (result, closing) {
                    (Ok(()), Some((_, why))) => why,
                    (Ok(()), None) => CloseReason::Done,
                    (Err(e), _) => classify(e.as_ref()),
                },
                signal = std::future::poll_fn(|cx| state.poll_signal(cx, &seen)) => {
                    seen.push(signal);
                    match signal {
                        Signal::Evicted if closing.is_none() => break CloseReason::Shed,
                        Signal::Evicted => {}
                        Signal::Draining => {
                            if state.requests() == 0 {
                                break CloseReason::Shutdown;
                            }
                            // Finish in-flight requests, refuse new ones (GOAWAY / Connection: close).
                            conn.as_mut().graceful_shutdown();
                        }
                        Signal::Quiet => {
                            if closing.is_none() {
                                let at = Instant::now() + grace;
                                closing = Some((at, CloseReason::Shutdown));
                                timer.as_mut().reset(at.into());
                            }
                        }
                    }
                }
                () = timer.as_mut() => {
                    if let Some((_, why)) = closing {
                        break why;
                    }
                    let now = Instant::now();
                    match watchdog_check(&state, limits, started, recheck, now) {
                        Ok(next) => timer.as_mut().reset(next.into()),
                        Err(why) => {
                            if state.requests() == 0 {
                                break why;
                            }
                            // Served before: let hyper close it politely (GOAWAY), briefly.
                            conn.as_mut().graceful_shutdown();
                            let at = now + grace;
                            closing = Some((at, why));
                            timer.as_mut().reset(at.into());
                        }
                    }
                }
            }
        }
    };
    server.metrics.closed(name, reason);
    tracing::debug!(server = name, peer = %state.peer, reason = reason.label(), "connection closed");
}

/// How often the watchdog looks at a busy connection when no deadline is configured.
const BUSY_RECHECK: Duration = Duration::from_secs(60);

/// A connection's stream with its place in the connection table and the open-connections
/// gauge: whoever holds the stream (hyper, or the tunnel an upgrade hands it to) holds the
/// place, so an upgraded connection counts against `--max-connections` until it closes.
struct Counted<Io> {
    io: Io,
    _slot: ConnGuard,
    _open: OpenGauge,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Counted<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Counted<Io> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// When the watchdog closes an idle connection, and why; `None` while a request is in flight.
fn watchdog_deadline(state: &ConnState, limits: &Limits, started: Instant) -> Option<(Instant, CloseReason)> {
    if state.in_flight() > 0 {
        return None;
    }
    if state.requests() == 0 {
        return limits
            .read_header_timeout
            .map(|t| (started + t, CloseReason::RequestTimeout));
    }
    limits
        .idle_timeout
        .map(|t| (state.idle_since() + t, CloseReason::Idle))
}

/// The watchdog's look at `now`: why to close when a deadline has passed, else when to look
/// again (a busy connection: after `recheck`, rather than being told of every request's end).
fn watchdog_check(
    state: &ConnState,
    limits: &Limits,
    started: Instant,
    recheck: Duration,
    now: Instant,
) -> Result<Instant, CloseReason> {
    match watchdog_deadline(state, limits, started) {
        Some((at, why)) if now >= at => Err(why),
        Some((at, _)) => Ok(at),
        None => Ok(now + recheck),
    }
}

fn classify(error: &(dyn std::error::Error + 'static)) -> CloseReason {
    match error.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_timeout() => CloseReason::Timeout,
        _ => CloseReason::Error,
    }
}

/// Keeps the open-connections gauge up while the connection (or its tunnel) lives.
struct OpenGauge(Arc<ServerMetrics>, &'static str);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.released(self.1);
    }
}

/// Errors that concern one connection or a temporary resource shortage, not the listener.
pub fn is_transient_accept_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
            | ErrorKind::OutOfMemory
    ) || is_out_of_descriptors(error)
        || matches!(error.raw_os_error(), Some(105 | 12)) // ENOBUFS, ENOMEM on Linux.
}

/// EMFILE or ENFILE (Linux numbers): the process or the system ran out of file descriptors.
pub fn is_out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(24 | 23))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_room_under_the_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            256                  4096                 files     \n";
        assert_eq!(open_files_soft_limit(limits), Some(256));
        assert_eq!(max_connections_for(Some(256)), 96);
        assert_eq!(max_connections_for(Some(64)), 16);
        assert_eq!(max_connections_for(Some(1 << 20)), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(max_connections_for(None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(max_connections_for(Some(10)), 1);
    }

    #[test]
    fn descriptor_exhaustion_is_transient() {
        let emfile = std::io::Error::from_raw_os_error(24);
        assert!(is_transient_accept_error(&emfile));
        assert!(is_out_of_descriptors(&emfile));
        let einval = std::io::Error::from_raw_os_error(22);
        assert!(!is_transient_accept_error(&einval));
    }

    #[test]
    fn the_watchdog_times_the_first_request_then_idleness() {
        let limits = Limits {
            read_header_timeout: Some(Duration::from_secs(2)),
            idle_timeout: Some(Duration::from_secs(5)),
            ..Limits::default()
        };
        let state = ConnState::detached(([127, 0, 0, 1], 1).into());
        let started = state.opened();
        assert_eq!(
            watchdog_deadline(&state, &limits, started),
            Some((started + Duration::from_secs(2), CloseReason::RequestTimeout))
        );
        let request = state.begin_request(false);
        assert_eq!(watchdog_deadline(&state, &limits, started), None);
        drop(request);
        let (at, why) = watchdog_deadline(&state, &limits, started).expect("idle deadline");
        assert_eq!(why, CloseReason::Idle);
        assert_eq!(at, state.idle_since() + Duration::from_secs(5));
    }
}
