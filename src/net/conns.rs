//! The connections a server holds open: per-connection state that the serving loop and the
//! handler share, and a table that caps their number by shedding unauthenticated ones first.

use crate::locks::LockExt;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use futures::task::AtomicWaker;

/// The table chose the connection to be closed.
const EVICTED: u8 = 1;
/// The server is shutting down.
const DRAINING: u8 = 2;
/// A handler took the connection over (`101 Switching Protocols`): it is a tunnel now.
const UPGRADED: u8 = 4;

/// What the serving loop is told about its connection from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The table chose it to be closed.
    Evicted,
    /// The server is shutting down.
    Draining,
    /// While draining, its last request in flight ended.
    Quiet,
}

/// What the serving loop and the handler know about one connection.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    /// The peer.
    pub peer: SocketAddr,
    opened: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `opened` when the last request ended.
    idle_since_ms: AtomicU64,
    authenticated: AtomicBool,
    http2: AtomicBool,
    /// [`EVICTED`], [`DRAINING`], [`UPGRADED`].
    flags: AtomicU8,
    /// The serving loop's task, woken by eviction, shutdown and (while draining) quiet: one
    /// atomic per poll, where a `Notify` per event took a lock on every wake of the connection.
    waker: AtomicWaker,
}

impl ConnState {
    fn new(id: u64, peer: SocketAddr) -> Self {
        Self {
            id,
            peer,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            authenticated: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            flags: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    /// State for a connection no table tracks (tests, handlers called directly).
    pub fn detached(peer: SocketAddr) -> Arc<Self> {
        Arc::new(Self::new(0, peer))
    }

    /// Records that a request on this connection proved who sent it; such connections are the
    /// last to be shed when the server nears its connection cap.
    pub fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// True once a request on this connection was authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Requests received complete (headers parsed) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Requests whose response has not been fully handed to the connection yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// True when a request arrived over HTTP/2.
    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// When the last request ended (the accept time before any request).
    pub fn idle_since(&self) -> Instant {
        self.opened + std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// Counts a request in; the returned guard counts it out when dropped (after the response
    /// body has been written, or when the connection dies).
    pub fn begin_request(self: &Arc<Self>, http2: bool) -> RequestGuard {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            conn: Arc::clone(self),
        }
    }

    /// Records that a handler took the connection over (an upgrade): from now on it is never
    /// shed, and it stays counted until the tunnel closes.
    pub fn mark_upgraded(&self) {
        self.raise(UPGRADED);
    }

    /// True once the connection was taken over by an upgrade.
    pub fn is_upgraded(&self) -> bool {
        self.flags.load(Ordering::Acquire) & UPGRADED != 0
    }

    /// The serving loop's wait for news about its connection; `seen` are the signals it has
    /// handled already ([`Signal::Quiet`] is only reported while draining, and only once
    /// `seen` includes [`Signal::Draining`]).
    pub fn poll_signal(&self, cx: &mut Context<'_>, seen: &[Signal]) -> Poll<Signal> {
        self.waker.register(cx.waker());
        let flags = self.flags.load(Ordering::Acquire);
        let fresh = |s: Signal| !seen.contains(&s);
        if flags & EVICTED != 0 && fresh(Signal::Evicted) {
            return Poll::Ready(Signal::Evicted);
        }
        if flags & DRAINING != 0 {
            if fresh(Signal::Draining) {
                return Poll::Ready(Signal::Draining);
            }
            if fresh(Signal::Quiet) && self.in_flight() == 0 {
                return Poll::Ready(Signal::Quiet);
            }
        }
        Poll::Pending
    }

    fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
        self.waker.wake();
    }

    fn evict(&self) {
        self.raise(EVICTED);
    }

    fn sheddable(&self) -> bool {
        !self.is_authenticated()
            && self.in_flight() == 0
            && self.flags.load(Ordering::Acquire) & (EVICTED | UPGRADED) == 0
    }
}

/// Keeps a request counted in flight until dropped.
#[derive(Debug)]
pub struct RequestGuard {
    conn: Arc<ConnState>,
}

impl RequestGuard {
    /// The connection the request came on.
    pub fn conn(&self) -> &Arc<ConnState> {
        &self.conn
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.conn;
        let ms = u64::try_from(c.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        c.idle_since_ms.store(ms, Ordering::Release);
        // Only a draining connection waits for quiet; the idle deadline is checked lazily.
        if c.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && c.flags.load(Ordering::Acquire) & DRAINING != 0
        {
            c.waker.wake();
        }
    }
}

/// Open connections of one server, capped at `max`.
///
/// From `shed_at` (90 % of `max`) on, every new connection closes the oldest connection that
/// is neither authenticated nor busy, so clients without credentials cannot crowd out the ones
/// with credentials: a connection that carried an authenticated request is never shed, and at
/// `max` with nothing to shed a new connection is refused.
#[derive(Debug)]
pub struct ConnTable {
    max: usize,
    shed_at: usize,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

/// Why [`ConnTable::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCapacity;

/// What admitting a connection did.
#[derive(Debug)]
pub struct Admitted {
    /// Keeps the connection counted until dropped.
    pub guard: ConnGuard,
    /// A connection closed to make room, if any.
    pub shed: Option<Arc<ConnState>>,
}

impl ConnTable {
    /// A table for at most `max` connections (at least 1).
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            shed_at: max - max / 10,
            next_id: AtomicU64::new(1),
            open: Mutex::new(BTreeMap::new()),
        })
    }

    /// Connections currently counted.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.open.lock_or_recover()
    }

    /// Counts a new connection in, shedding one near the cap; refuses it at the cap when no
    /// connection can be shed.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Admitted, AtCapacity> {
        let mut open = self.lock();
        let shed = if open.len() >= self.shed_at {
            Self::shed_oldest(&mut open)
        } else {
            None
        };
        if open.len() >= self.max {
            return Err(AtCapacity);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(id, peer));
        open.insert(id, Arc::clone(&state));
        Ok(Admitted {
            guard: ConnGuard {
                table: Arc::clone(self),
                state,
            },
            shed,
        })
    }

    /// Closes the oldest sheddable connection (when descriptors ran out); `None` if none is.
    pub fn shed_one(&self) -> Option<Arc<ConnState>> {
        Self::shed_oldest(&mut self.lock())
    }

    /// Tells every open connection that the server is shutting down.
    pub fn drain_all(&self) {
        for conn in self.lock().values() {
            conn.raise(DRAINING);
        }
    }

    fn shed_oldest(open: &mut BTreeMap<u64, Arc<ConnState>>) -> Option<Arc<ConnState>> {
        // Ids grow with accept order, so the map iterates oldest first.
        let id = open.values().find(|c| c.sheddable()).map(|c| c.id)?;
        let victim = open.remove(&id)?;
        victim.evict();
        Some(victim)
    }
}

/// Counts one connection in its table until dropped.
#[derive(Debug)]
pub struct ConnGuard {
    table: Arc<ConnTable>,
    state: Arc<ConnState>,
}

impl ConnGuard {
    /// The connection's state.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.table.lock().remove(&self.state.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        ([127, 0, 0, 1], 1).into()
    }

    #[test]
    fn near_the_cap_the_oldest_unauthenticated_idle_connection_goes_first() {
        let table = ConnTable::new(10);
        let mut guards = Vec::new();
        for _ in 0..9 {
            let a = table.admit(peer()).expect("room");
            assert!(a.shed.is_none());
            guards.push(a.guard);
        }
        // The oldest is authenticated, the second busy: the third is the one to go.
        guards[0].state().mark_authenticated();
        let busy = guards[1].state().begin_request(false);
        let a = table.admit(peer()).expect("room");
        let shed = a.shed.expect("shed one");
        assert!(Arc::ptr_eq(&shed, guards[2].state()));
        assert_eq!(table.len(), 9);
        drop(busy);
        guards.push(a.guard);
    }

    #[test]
    fn at_the_cap_with_only_authenticated_connections_new_ones_are_refused() {
        let table = ConnTable::new(3);
        let guards: Vec<_> = (0..3).map(|_| table.admit(peer()).expect("room").guard).collect();
        for g in &guards {
            g.state().mark_authenticated();
        }
        assert_eq!(table.admit(peer()).err(), Some(AtCapacity));
        drop(guards);
        assert!(table.is_empty());
        assert!(table.admit(peer()).is_ok());
    }

    #[test]
    fn in_flight_and_idle_are_tracked_by_request_guards() {
        let c = ConnState::detached(peer());
        let g1 = c.begin_request(true);
        let g2 = c.begin_request(true);
        assert_eq!((c.in_flight(), c.requests()), (2, 2));
        assert!(c.is_http2());
        drop(g1);
        assert_eq!(c.in_flight(), 1);
        drop(g2);
        assert_eq!(c.in_flight(), 0);
        assert!(c.idle_since() >= c.opened());
    }
}
