//! Idle HTTP/1.1 connections to endpoints, one request at a time on each.
//!
//! Our own rather than `hyper_util`'s pooled client, for the request path's cost: that client
//! clones itself per request, hashes the scheme and authority text, and puts a connection back
//! from a task it spawns per request to wait for the connection to turn idle. Here a connection
//! goes back when its response body has ended (the [`Leased`] body), and the next request waits
//! for it to be ready only if it is not yet; no task and no text per request. The behaviour is
//! the pooled client's: LIFO reuse, at most [`MAX_IDLE_PER_ENDPOINT`] idle per endpoint, dropped
//! after [`IDLE_TIMEOUT`], and a request a closed connection refused unsent goes on another.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};

use crate::locks::LockExt;

/// Idle connections kept per endpoint (`hyper_util`'s `pool_max_idle_per_host` as we set it).
pub const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// How long a connection may sit idle before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often putting a connection back also drops the expired and closed ones of every endpoint.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The idle connections of every endpoint.
pub struct H1Pool<B> {
    inner: Mutex<Idle<B>>,
}

struct Idle<B> {
    by_endpoint: HashMap<SocketAddr, Vec<IdleConn<B>>>,
    swept: Instant,
}

struct IdleConn<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> std::fmt::Debug for H1Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool").finish_non_exhaustive()
    }
}

impl<B> Default for H1Pool<B> {
    fn default() -> Self {
        H1Pool {
            inner: Mutex::new(Idle {
                by_endpoint: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

impl<B> H1Pool<B> {
    /// The most recently used idle connection to `addr` still open and not expired, if any.
    pub fn take(&self, addr: SocketAddr) -> Option<SendRequest<B>> {
        let mut idle = self.inner.lock_or_recover();
        let conns = idle.by_endpoint.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(conn) = conns.pop() {
            if !conn.sender.is_closed() && now.saturating_duration_since(conn.since) < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Puts a connection whose exchange ended back for the next request to `addr`.
    fn put(&self, addr: SocketAddr, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.inner.lock_or_recover();
        if now.saturating_duration_since(idle.swept) >= SWEEP_INTERVAL {
            idle.swept = now;
            idle.by_endpoint.retain(|_, conns| {
                conns.retain(|c| {
                    !c.sender.is_closed() && now.saturating_duration_since(c.since) < IDLE_TIMEOUT
                });
                !conns.is_empty()
            });
        }
        let conns = idle.by_endpoint.entry(addr).or_default();
        if conns.len() < MAX_IDLE_PER_ENDPOINT {
            conns.push(IdleConn { sender, since: now });
        }
    }

    /// Idle connections kept now and still open, over every endpoint.
    pub fn idle(&self) -> usize {
        self.inner
            .lock_or_recover()
            .by_endpoint
            .values()
            .flatten()
            .filter(|c| !c.sender.is_closed())
            .count()
    }
}

/// A connection lent to one exchange; it goes back to the pool only through [`Leased`]'s clean
/// end, since a response body dropped half-read leaves the connection unusable.
pub struct Lease<B> {
    pool: Arc<H1Pool<B>>,
    addr: SocketAddr,
    sender: SendRequest<B>,
}

impl<B> Lease<B> {
    /// Lends `sender`, a connection to `addr`, from `pool`.
    pub fn new(pool: Arc<H1Pool<B>>, addr: SocketAddr, sender: SendRequest<B>) -> Self {
        Lease { pool, addr, sender }
    }

    fn give_back(self) {
        self.pool.put(self.addr, self.sender);
    }
}

/// An upstream response body; when it ends, the connection it came on goes back to the pool.
pub struct Leased<B> {
    inner: Incoming,
    lease: Option<Lease<B>>,
}

impl<B> Leased<B> {
    /// `inner`, whose connection is `lease` (`None`: not pooled, as HTTP/2's).
    pub fn new(inner: Incoming, lease: Option<Lease<B>>) -> Self {
        Leased { inner, lease }
    }
}

impl<B> std::fmt::Debug for Leased<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leased")
            .field("pooled", &self.lease.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for Leased<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    lease.give_back();
                }
            }
            // A failed exchange leaves the connection to close with it.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Leased<B> {
    fn drop(&mut self) {
        // Hyper's server stops polling a body that says it has ended: ended, it is reusable.
        if let Some(lease) = self.lease.take()
            && self.inner.is_end_stream()
        {
            lease.give_back();
        }
    }
}

/// Hands `io` to a new HTTP/1.1 client connection driven by a task of its own.
pub async fn handshake<B>(io: hyper_util::rt::TokioIo<tokio::net::TcpStream>) -> hyper::Result<SendRequest<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = http1::Builder::new().handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/1.1 connection closed");
        }
    });
    Ok(sender)
}
