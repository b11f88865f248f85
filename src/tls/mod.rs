//! TLS serving: rustls configuration, a client-certificate policy matching Go's
//! `RequestClientCert`, and the accept loop that hands requests to a hyper handler.
//!
//! ```text
//! files --poll--> reload::CertReloader --swap--> ReloadingResolver --handshake--> rustls
//!                                      \--swap--> ReloadableRoots --per request--> auth
//! ```

pub mod certgen;
pub mod reload;
pub mod resolver;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::ServerConfig;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use reload::{CaRoots, CertReloader, DEFAULT_INTERVAL, ReloadError, ReloadStats, ReloadableRoots};
pub use resolver::{KeyLoadError, ReloadingResolver, certified_key_from_pem};

/// A client that has not finished the TLS handshake by then is dropped (slowloris guard).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight connections may take to finish after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1 clients must send complete request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Errors that stop the accept loop.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The listening socket failed in a way that retrying cannot fix.
    #[error("failed to accept connections")]
    Accept(#[source] std::io::Error),
}

/// What the handler learns about the connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The client certificate chain as presented (leaf first), not yet verified; empty if none.
    pub peer_certs: Vec<CertificateDer<'static>>,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<Vec<u8>>,
    /// Outcomes of verifying `peer_certs` against a CA bundle, kept for the connection's life
    /// so a keep-alive connection pays for the signature checks once, not on every request.
    pub chain_verdicts: arc_swap::ArcSwap<Vec<ChainVerdict>>,
}

/// The result of verifying a connection's chain against one version of one CA bundle.
#[derive(Debug, Clone)]
pub struct ChainVerdict {
    /// The bundle version it was checked against (held, so its address cannot be reused).
    pub roots: Arc<CaRoots>,
    /// Leaf CN and O values, or why verification failed.
    pub outcome: Result<(Option<String>, Vec<String>), String>,
}

impl ConnInfo {
    /// Facts about a connection with nothing verified yet.
    pub fn new(
        remote_addr: SocketAddr,
        peer_certs: Vec<CertificateDer<'static>>,
        alpn: Option<Vec<u8>>,
    ) -> Self {
        Self {
            remote_addr,
            peer_certs,
            alpn,
            chain_verdicts: arc_swap::ArcSwap::from_pointee(Vec::new()),
        }
    }
}

/// Builds the serving config: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, certificate from
/// `resolver`, client certificates handled by `client_auth`.
pub fn server_config(
    resolver: Arc<ReloadingResolver>,
    client_auth: Arc<dyn ClientCertVerifier>,
) -> Arc<ServerConfig> {
    // The default builder uses the installed provider (ring is the only one compiled in) and
    // rustls' default versions, which are exactly TLS 1.3 and 1.2.
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(client_auth)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Requests a client certificate without requiring one, and accepts any chain during the
/// handshake (Go's `RequestClientCert`); the chain is verified per request by the
/// authenticator, so kubelet probes and token clients connect without certificates.
///
/// The handshake signature is still verified, which proves the client holds the key of the
/// certificate it presented.
#[derive(Debug)]
pub struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl RequestClientCert {
    /// A verifier hinting the subjects of `roots` (typically client-ca and requestheader-ca).
    ///
    /// Hints are a snapshot: rustls borrows them for the lifetime of the config. Go clients
    /// only send a certificate whose issuer is hinted, so after a CA rotation that changes the
    /// CA's subject name, rebuild the config (or restart); a same-subject rotation needs nothing.
    pub fn new(roots: &[&CaRoots]) -> Self {
        let mut hints: Vec<DistinguishedName> = Vec::new();
        for subject in roots.iter().flat_map(|r| r.subjects()) {
            if !hints.iter().any(|h| h.as_ref() == subject.as_ref()) {
                hints.push(subject.clone());
            }
        }
        Self {
            hints,
            algorithms: resolver::provider().signature_verification_algorithms,
        }
    }

    /// Convenience for [`RequestClientCert::new`] from reloadable bundles' current contents.
    pub fn from_reloadable(roots: &[&ReloadableRoots]) -> Self {
        let loaded: Vec<_> = roots.iter().map(|r| r.load_full()).collect();
        let refs: Vec<&CaRoots> = loaded.iter().map(AsRef::as_ref).collect();
        Self::new(&refs)
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts TLS connections on `listener` and serves HTTP/1.1 and HTTP/2 with `handler` until
/// `shutdown` resolves, then lets open connections finish for up to [`DRAIN_TIMEOUT`].
pub async fn serve<H, F>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsError>
where
    H: Fn(http::Request<hyper::body::Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Every connection task holds a receiver; the sender learns all have ended via `closed()`.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);

    let result = loop {
        let (tcp, remote_addr) = tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_transient_accept_error(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
                Err(e) => break Err(TlsError::Accept(e)),
            },
        };
        // Latency matters more than packet count for small API responses.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let builder = Arc::clone(&builder);
        let mut drain_rx = drain_rx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote_addr, "TLS handshake timed out");
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            let info = Arc::new(ConnInfo::new(
                remote_addr,
                session
                    .peer_certificates()
                    .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
                session.alpn_protocol().map(<[u8]>::to_vec),
            ));
            let service = service_fn(move |request| {
                let response = handler(request, Arc::clone(&info));
                async move { Ok::<_, Infallible>(response.await) }
            });
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = drain_rx.changed() => {
                    // Finish in-flight requests, refuse new ones (GOAWAY / Connection: close).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote_addr, error = %e, "connection ended with an error");
            }
        });
    };

    drop(listener);
    drop(drain_rx);
    let _ = drain_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    result
}

/// Errors that concern one connection or a temporary resource shortage, not the listener.
fn is_transient_accept_error(error: &std::io::Error) -> bool {
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
    ) || matches!(
        error.raw_os_error(),
        // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
        Some(24 | 23 | 105 | 12)
    )
}
