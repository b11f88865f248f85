//! The TLS side of accepting a connection: answer plain HTTP with a one-line hint, run the
//! rustls handshake, and say why a client certificate was refused.

use std::{net::SocketAddr, sync::Arc};

use rustls::{CertificateError, OtherError};
use rustls_pki_types::CertificateDer;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ConnInfo;
use crate::net::{
    CloseReason, ConnState, Handshake, LogThrottle, Prefixed,
    logthrottle::{MAX_LOGGED_INPUT, clip},
};

/// What Go's `net/http` answers to plain HTTP on a TLS port, word for word, so the message a
/// person searches for is the one they already know.
pub const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Bytes of the rest of a plain-HTTP request read (and dropped) before closing, so the close
/// does not reset the connection before the client has read the answer.
const PLAIN_HTTP_DRAIN: usize = 16 * 1024;

/// True when the first bytes of a connection are an HTTP/1 request line rather than a TLS
/// record (Go checks the same five-byte prefixes, plus the other methods here).
pub fn looks_like_http(head: &[u8]) -> bool {
    const METHODS: [&[u8]; 8] = [
        b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO", b"DELET", b"PATCH", b"CONNE",
    ];
    METHODS.iter().any(|m| head.starts_with(m))
}

/// A client certificate rustls cannot use, refused during the handshake.
#[derive(Debug, thiserror::Error)]
#[error("client certificate {subject:?} cannot be used: {reason}")]
pub struct UnusableCertificate {
    /// The certificate's subject (as far as it parses), cut to a loggable length.
    pub subject: String,
    /// Why, in words a person can act on.
    pub reason: String,
}

impl UnusableCertificate {
    /// Checks that webpki can parse `cert` (it cannot verify the handshake signature, nor the
    /// chain later, otherwise) and explains why not.
    pub fn check(cert: &CertificateDer<'_>) -> Result<(), Self> {
        let Err(e) = webpki::EndEntityCert::try_from(cert) else {
            return Ok(());
        };
        let subject = match X509Certificate::from_der(cert) {
            Ok((_, parsed)) => clip(&parsed.subject().to_string(), MAX_LOGGED_INPUT).into_owned(),
            Err(_) => "(unparsable)".to_string(),
        };
        let reason = match e {
            webpki::Error::UnsupportedCertVersion => {
                "it is not an X.509 v3 certificate (`openssl x509 -req` without an extensions file makes v1); \
                 issue a v3 client certificate, see docs/troubleshooting.md"
                    .to_string()
            }
            other => format!("rustls refused it: {other:?}"),
        };
        Err(Self { subject, reason })
    }

    /// The refusal inside a failed handshake's error, if that is why it failed.
    pub fn from_handshake_error(error: &std::io::Error) -> Option<&Self> {
        match error.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<Self>()
            }
            _ => None,
        }
    }

    /// As the error rustls reports to the client (alert `bad_certificate`).
    pub fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

/// Plain-HTTP hint, then rustls, for [`crate::net::Server`].
#[derive(Clone)]
pub struct TlsHandshake {
    acceptor: TlsAcceptor,
    refused_certs: Arc<LogThrottle>,
}

impl std::fmt::Debug for TlsHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandshake").finish_non_exhaustive()
    }
}

impl TlsHandshake {
    /// Handshakes with `config`; refused client certificates are logged at most twice per
    /// `log_interval`.
    pub fn new(config: Arc<rustls::ServerConfig>, log_interval: std::time::Duration) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            refused_certs: LogThrottle::new(log_interval, |s| {
                tracing::warn!(count = s.count, last = %s.last, "{} more client certificates refused in the last {}", s.count, s.window_text());
            }),
        }
    }

    fn log_handshake_error(&self, peer: SocketAddr, error: &std::io::Error) {
        match UnusableCertificate::from_handshake_error(error) {
            Some(refused) => {
                if self.refused_certs.admit(|| format!("from {peer}: {refused}")) {
                    tracing::warn!(
                        remote_addr = %peer,
                        subject = %refused.subject,
                        reason = %refused.reason,
                        "client certificate refused during the TLS handshake"
                    );
                }
            }
            None => tracing::debug!(remote_addr = %peer, error = %error, "TLS handshake failed"),
        }
    }
}

impl Handshake for TlsHandshake {
    type Io = TlsStream<Prefixed<TcpStream>>;
    type Info = ConnInfo;

    async fn handshake(
        &self,
        mut tcp: TcpStream,
        conn: Arc<ConnState>,
    ) -> Result<(Self::Io, ConnInfo), CloseReason> {
        let peer = conn.peer;
        // A TLS record header is five bytes; an HTTP request line is longer than that.
        let mut head = [0u8; 5];
        let mut filled = 0;
        while filled < head.len() {
            match tcp.read(&mut head[filled..]).await {
                Ok(0) | Err(_) => return Err(CloseReason::HandshakeError),
                Ok(n) => filled += n,
            }
        }
        if looks_like_http(&head) {
            answer_plain_http(&mut tcp).await;
            tracing::debug!(remote_addr = %peer, "plain HTTP on the TLS port; answered with the hint");
            return Err(CloseReason::PlainHttp);
        }
        let tls = match self.acceptor.accept(Prefixed::new(head.to_vec(), tcp)).await {
            Ok(tls) => tls,
            Err(e) => {
                self.log_handshake_error(peer, &e);
                return Err(CloseReason::HandshakeError);
            }
        };
        let (_, session) = tls.get_ref();
        let info = ConnInfo::with_state(
            conn,
            session
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
            session.alpn_protocol().map(<[u8]>::to_vec),
        );
        Ok((tls, info))
    }
}

/// Writes Go's answer, then reads (and drops) what the client still sends, up to a bound, so the
/// close is a FIN the client reads the answer before, not a reset. The caller's handshake
/// deadline bounds the whole exchange.
async fn answer_plain_http(tcp: &mut TcpStream) {
    if tcp.write_all(PLAIN_HTTP_ANSWER).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < PLAIN_HTTP_DRAIN {
        match tcp.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_are_recognised_and_tls_records_are_not() {
        assert!(looks_like_http(b"GET / HTTP/1.1"));
        assert!(looks_like_http(b"POST /x"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_http(b"PRI * HTTP/2.0"));
    }

    #[test]
    fn a_v3_certificate_is_usable_and_garbage_is_explained() {
        let ca = crate::tls::certgen::generate_ca("ca").expect("ca");
        let pair = ca.issue_client("alice", &[]).expect("cert");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pair.cert_pem.as_bytes())
            .map(|c: CertificateDer<'static>| c)
            .expect("pem");
        assert!(UnusableCertificate::check(&der).is_ok());
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let refused = UnusableCertificate::check(&garbage).expect_err("refused");
        assert_eq!(refused.subject, "(unparsable)");
    }
}
