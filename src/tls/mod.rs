//! TLS serving: rustls configuration, a client-certificate policy matching Go's
//! `RequestClientCert`, and the accept loop that hands requests to a hyper handler.
//!
//! ```text
//! files --poll--> reload::CertReloader --swap--> ReloadingResolver --handshake--> rustls
//!                                      \--swap--> ReloadableRoots --per request--> auth
//! ```

pub mod accept;
pub mod certgen;
pub mod reload;
pub mod resolver;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::ServerConfig;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpListener;

pub use accept::{TlsHandshake, UnusableCertificate};
pub use reload::{CaRoots, CertReloader, DEFAULT_INTERVAL, ReloadError, ReloadStats, ReloadableRoots};
pub use resolver::{KeyLoadError, ReloadingResolver, certified_key_from_pem};

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
    /// The connection as the serving loop tracks it (requests, authentication, cap).
    pub state: Arc<crate::net::ConnState>,
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
        Self::with_state(crate::net::ConnState::detached(remote_addr), peer_certs, alpn)
    }

    /// Facts about a connection the serving loop tracks as `state`.
    pub fn with_state(
        state: Arc<crate::net::ConnState>,
        peer_certs: Vec<CertificateDer<'static>>,
        alpn: Option<Vec<u8>>,
    ) -> Self {
        Self {
            remote_addr: state.peer,
            peer_certs,
            alpn,
            chain_verdicts: arc_swap::ArcSwap::from_pointee(Vec::new()),
            state,
        }
    }

    /// Records that a request on this connection was authenticated (see [`crate::net::ConnTable`]).
    pub fn mark_authenticated(&self) {
        self.state.mark_authenticated();
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
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain is verified per request; here only refuse, with a reason the accept loop
        // logs, a certificate the signature check below could not even parse (an X.509 v1).
        UnusableCertificate::check(end_entity).map_err(UnusableCertificate::into_rustls)?;
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
/// `shutdown` resolves, with default [`crate::net::Limits`]; see [`serve_with`].
pub async fn serve<H, F>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsError>
where
    H: Fn(http::Request<hyper::body::Incoming>, Arc<ConnInfo>) -> F + Send + Sync + 'static,
    F: Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    serve_with(
        &crate::net::Server::detached("tls"),
        listener,
        config,
        handler,
        shutdown,
    )
    .await
}

/// [`serve`] under `server`'s limits and metrics: plain HTTP gets Go's one-line hint, the
/// handshake, the first request and idleness are timed, and connections are capped.
pub async fn serve_with<H, F>(
    server: &crate::net::Server,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsError>
where
    H: Fn(http::Request<hyper::body::Incoming>, Arc<ConnInfo>) -> F + Send + Sync + 'static,
    F: Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    let handshake = TlsHandshake::new(config, server.limits.log_interval);
    server
        .serve(listener, handshake, handler, shutdown)
        .await
        .map_err(TlsError::Accept)
}
