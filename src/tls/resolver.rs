//! Serving-certificate resolver whose key can be swapped while the server runs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors from turning PEM bytes into a usable serving key.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    /// The certificate PEM could not be decoded.
    #[error("failed to parse certificate PEM")]
    CertPem(#[source] rustls_pki_types::pem::Error),
    /// The certificate file holds no CERTIFICATE block.
    #[error("failed to find a certificate in the PEM data")]
    NoCertificate,
    /// The private key PEM could not be decoded.
    #[error("failed to parse private key PEM")]
    KeyPem(#[source] rustls_pki_types::pem::Error),
    /// The key is unsupported, or does not belong to the leaf certificate.
    #[error("failed to pair the private key with the certificate")]
    Mismatch(#[source] rustls::Error),
}

/// Parses a PEM chain (leaf first) and PEM key, checking that the key belongs to the leaf.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, KeyLoadError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(KeyLoadError::CertPem)?;
    if chain.is_empty() {
        return Err(KeyLoadError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(KeyLoadError::KeyPem)?;
    let provider = provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(KeyLoadError::Mismatch)?;
    // from_der tolerates "cannot tell" for exotic keys; the leaf must still parse.
    certified
        .end_entity_cert()
        .and_then(|leaf| rustls::server::ParsedCertificate::try_from(leaf).map(|_| ()))
        .map_err(KeyLoadError::Mismatch)?;
    Ok(certified)
}

/// The process-wide provider if `main` installed one, else ring (the only one compiled in).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// `ResolvesServerCert` over an `ArcSwap`, so the handshake reads the key without a lock.
pub struct ReloadingResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingResolver {
    /// Starts serving `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(key),
        }
    }

    /// Builds a resolver from PEM bytes.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, KeyLoadError> {
        certified_key_from_pem(cert_pem, key_pem).map(|k| Self::new(Arc::new(k)))
    }

    /// The key new handshakes currently get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Replaces the key for all later handshakes; open connections are unaffected.
    pub fn store(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl std::fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
