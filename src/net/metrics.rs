//! Connection metrics of every server of the process, labelled by server name.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    server: &'static str,
    reason: &'static str,
}

/// Why a connection ended, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it, or the server after a completed exchange.
    Done,
    /// The TLS handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The TLS handshake failed.
    HandshakeError,
    /// Plain HTTP arrived on the TLS port; the client got the one-line hint.
    PlainHttp,
    /// No complete request within the header timeout after the handshake.
    RequestTimeout,
    /// Idle (no request in flight) longer than the idle timeout.
    Idle,
    /// A timer of the HTTP layer fired (HTTP/1 header read, HTTP/2 keep-alive ping).
    Timeout,
    /// The HTTP layer reported a protocol or I/O error.
    Error,
    /// Closed to make room near the connection cap.
    Shed,
    /// Refused at the cap: every open connection was authenticated or busy.
    OverCapacity,
    /// Closed by shutdown before (or instead of) a complete request.
    Shutdown,
}

impl CloseReason {
    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::HandshakeTimeout => "handshake-timeout",
            Self::HandshakeError => "handshake-error",
            Self::PlainHttp => "plain-http",
            Self::RequestTimeout => "request-timeout",
            Self::Idle => "idle",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::Shed => "shed",
            Self::OverCapacity => "over-capacity",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Open connections, closed connections by reason and accept errors, per server.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    open: Family<ServerLabels, Gauge>,
    closed: Family<ClosedLabels, Counter>,
    accept_errors: Family<ServerLabels, Counter>,
}

impl ServerMetrics {
    /// Creates the families and registers them under `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ebb_server_open_connections",
            "Connections currently open, by server (api, admin, webhooks)",
            m.open.clone(),
        );
        registry.register(
            "ebb_server_closed_connections",
            "Connections closed, by server and reason",
            m.closed.clone(),
        );
        registry.register(
            "ebb_server_accept_errors",
            "Failed accepts (for example out of file descriptors), by server",
            m.accept_errors.clone(),
        );
        m
    }

    /// Metrics registered nowhere.
    pub fn detached() -> Self {
        Self::default()
    }

    /// Counts a connection of `server` open.
    pub fn opened(&self, server: &'static str) {
        self.open.get_or_create(&ServerLabels { server }).inc();
    }

    /// Counts a connection of `server` no longer open.
    pub fn released(&self, server: &'static str) {
        self.open.get_or_create(&ServerLabels { server }).dec();
    }

    /// Counts a connection that ended for `reason`.
    pub fn closed(&self, server: &'static str, reason: CloseReason) {
        self.closed
            .get_or_create(&ClosedLabels {
                server,
                reason: reason.label(),
            })
            .inc();
    }

    /// Counts a failed accept of `server`.
    pub fn accept_error(&self, server: &'static str) {
        self.accept_errors.get_or_create(&ServerLabels { server }).inc();
    }

    /// Open connections of `server` now.
    pub fn open_connections(&self, server: &'static str) -> i64 {
        self.open.get_or_create(&ServerLabels { server }).get()
    }

    /// Connections of `server` closed so far for `reason`.
    pub fn closed_count(&self, server: &'static str, reason: CloseReason) -> u64 {
        self.closed
            .get_or_create(&ClosedLabels {
                server,
                reason: reason.label(),
            })
            .get()
    }
}
