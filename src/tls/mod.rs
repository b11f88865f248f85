//! TLS serving (temporary stub until the tls branch lands).
use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;

/// Per-connection facts the handler needs.
#[derive(Debug)]
pub struct ConnInfo {
    /// Peer address.
    pub remote_addr: SocketAddr,
    /// Client certificate chain, leaf first.
    pub peer_certs: Vec<CertificateDer<'static>>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
}
