//! The mutual-TLS client of the external metrics API, with the certificate `ebb --local` writes.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{BoxError, Res};

/// Timeout of one connect, handshake or request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of one external metric, selected by ScaledObject name as the HPA asks for it.
pub fn metric_path(namespace: &str, so: &str, metric: &str) -> String {
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}"
    )
}

/// The client certificate ebb wrote to its state directory, trusting ebb's CA; ALPN `h2` or
/// `http/1.1`.
pub fn client_config(state: &Path, http2: bool) -> Res<Arc<ClientConfig>> {
    let certs = |name: &str| -> Res<Vec<CertificateDer<'static>>> {
        let v = CertificateDer::pem_file_iter(state.join(name))?.collect::<Result<Vec<_>, _>>()?;
        if v.is_empty() {
            return Err(format!("no certificate in {}", state.join(name).display()).into());
        }
        Ok(v)
    };
    let mut roots = RootCertStore::empty();
    for c in certs("ca.crt")? {
        roots.add(c)?;
    }
    let key = PrivateKeyDer::from_pem_file(state.join("client.key"))?;
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs("client.crt")?, key)?;
    cfg.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(cfg))
}

/// One client connection: an HTTP/1.1 sender is used by one request at a time, an HTTP/2 one is
/// cloned per stream.
pub enum Sender {
    /// HTTP/1.1 keep-alive.
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    /// HTTP/2, multiplexed.
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// Connects to `addr` with `cfg` (HTTP/2 when its ALPN offers `h2`).
pub async fn connect(addr: SocketAddr, cfg: Arc<ClientConfig>) -> Res<Sender> {
    let http2 = cfg.alpn_protocols.iter().any(|p| p == b"h2");
    let tcp = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr)).await??;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio::time::timeout(REQUEST_TIMEOUT, TlsConnector::from(cfg).connect(name, tcp)).await??;
    let io = TokioIo::new(tls);
    if http2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Sender::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Sender::H1(send))
    }
}

/// One GET on `sender` (an HTTP/1.1 sender must not be shared while in use).
pub async fn request(sender: &mut Sender, addr: SocketAddr, path: &str) -> Res<(StatusCode, Bytes)> {
    let fut = async {
        let resp = match sender {
            Sender::H1(s) => {
                let req = Request::get(path)
                    .header(header::HOST, addr.to_string())
                    .body(Empty::<Bytes>::new())?;
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                let req = Request::get(format!("https://{addr}{path}")).body(Empty::<Bytes>::new())?;
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut).await?
}

/// Reads every path once, in order, on one connection; the first failure is the error.
pub async fn read_each(addr: SocketAddr, paths: &[String], cfg: Arc<ClientConfig>) -> Res<()> {
    let mut s = connect(addr, cfg).await?;
    for path in paths {
        let (status, body) = request(&mut s, addr, path).await?;
        if status != StatusCode::OK {
            return Err(format!(
                "{path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(400)])
            )
            .into());
        }
    }
    Ok(())
}
