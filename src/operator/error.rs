//! Why a reconcile or a scale-loop step failed.

/// Why a reconcile or a scale-loop step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action} failed")]
    Kube {
        /// What was attempted, e.g. `apply HPA ns/keda-hpa-web`.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer, or the cleanup behind it, failed.
    #[error("finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object cannot be serialised (cannot happen for valid objects).
    #[error("serialising {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
    /// The ScaledObject has no namespace or name.
    #[error("ScaledObject without namespace or name")]
    Unnamed,
}

impl Error {
    /// Stable, low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Serialize(..) => "serialize",
            Error::Unnamed => "unnamed",
        }
    }

    /// Wraps a kube error with what was attempted.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

impl From<crate::cluster::CallError> for Error {
    fn from(e: crate::cluster::CallError) -> Self {
        Error::Kube {
            action: e.action,
            source: e.source,
        }
    }
}

/// Result of reconcile steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
