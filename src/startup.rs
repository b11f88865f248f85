//! Why a subcommand could not start, or why its server stopped: one error type for every
//! component, so `main` reports them all the same way.

use std::{net::SocketAddr, path::PathBuf};

use tokio::net::TcpListener;

use crate::{cluster::ClientError, local_mode::LocalError, report::BindError, tls};

/// Binds a component's listening port; a failure names the flags that move it
/// (`address_flag` empty when no flag sets the address).
pub async fn bind(
    addr: SocketAddr,
    port_flag: &'static str,
    address_flag: &'static str,
) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|cause| {
        StartupError::Bind(BindError {
            addr,
            port_flag,
            address_flag,
            cause,
        })
    })
}

/// Binds the admin port of the metrics server and the operator (`--metrics-port`,
/// `--metrics-bind-address`).
pub async fn bind_admin(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    bind(addr, "--metrics-port", "--metrics-bind-address").await
}

/// Why a component could not start, or its server stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A port could not be bound; the message names the flag that moves it.
    #[error(transparent)]
    Bind(BindError),
    /// `--local` set-up failed.
    #[error("failed to prepare --local mode")]
    Local(#[source] LocalError),
    /// Certificates or CA files could not be loaded.
    #[error("failed to load certificates")]
    Certs(#[source] tls::ReloadError),
    /// A self-signed certificate could not be created in `--cert-dir`.
    #[error("failed to create a self-signed certificate in {0}")]
    SelfSigned(PathBuf, #[source] tls::certgen::CertError),
    /// No cluster could be reached.
    #[error("failed to create a Kubernetes client{}", local_hint(*.offer_local))]
    Kube {
        /// The cause.
        #[source]
        source: kube::Error,
        /// The subcommand has `--local`, which needs no cluster: say so.
        offer_local: bool,
    },
    /// A kubeconfig could not be read.
    #[error("failed to read kubeconfig {0}")]
    Kubeconfig(PathBuf, #[source] kube::config::KubeconfigError),
    /// The extension-apiserver-authentication ConfigMap was unusable.
    #[error("failed to read kube-system/extension-apiserver-authentication")]
    AuthConfigMap(#[source] kube::Error),
    /// Serving failed.
    #[error("the TLS server failed")]
    Serve(#[source] tls::TlsError),
    /// `ebb run` was given `--local`.
    #[error(
        "ebb run drives a cluster and cannot use --local; `ebb metrics-server --local` is the offline demo"
    )]
    RunNeedsCluster,
    /// A `--local` path that is not a directory.
    #[error("--local {0}: not a directory")]
    NotADirectory(PathBuf),
}

fn local_hint(offer_local: bool) -> &'static str {
    if offer_local {
        " (use --local to run without a cluster)"
    } else {
        ""
    }
}

impl StartupError {
    /// The same error, pointing at `--local` when no cluster could be reached.
    pub fn offering_local(self) -> Self {
        match self {
            StartupError::Kube { source, .. } => StartupError::Kube {
                source,
                offer_local: true,
            },
            other => other,
        }
    }
}

impl From<ClientError> for StartupError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Kubeconfig(path, source) => StartupError::Kubeconfig(path, source),
            ClientError::Kube(source) => StartupError::Kube {
                source,
                offer_local: false,
            },
        }
    }
}
