//! Cluster access every component does the same way: the Kubernetes client, and the `/scale`
//! subresource of any scale target.

pub mod scale;

use std::path::{Path, PathBuf};

/// Why no client could be built; each subcommand wraps it in its own error.
#[derive(Debug)]
pub enum ClientError {
    /// `--kubeconfig` could not be read or used.
    Kubeconfig(PathBuf, kube::config::KubeconfigError),
    /// No in-cluster or default config, or the client could not be made from it.
    Kube(kube::Error),
}

/// A client from `kubeconfig` when given, else the in-cluster config, then `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClientError::Kubeconfig(path.to_path_buf(), e))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ClientError::Kubeconfig(path.to_path_buf(), e))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClientError::Kube(kube::Error::InferConfig(e)))?,
    };
    kube::Client::try_from(config).map_err(ClientError::Kube)
}

/// A Kubernetes API call that failed, with what was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{action} failed")]
pub struct CallError {
    /// What was attempted, e.g. `get deployments/web/scale`.
    pub action: String,
    /// The cause.
    #[source]
    pub source: kube::Error,
}

impl CallError {
    /// Wraps a kube error with what was attempted.
    pub fn new(action: impl Into<String>) -> impl FnOnce(kube::Error) -> CallError {
        let action = action.into();
        move |source| CallError { action, source }
    }
}
