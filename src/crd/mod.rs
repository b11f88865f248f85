//! KEDA's custom resources.

pub mod http_scaled_object;
pub mod interceptor_route;
pub mod scaled_job;
pub mod scaled_object;
pub mod trigger_authentication;

pub use scaled_job::{ScaledJob, ScaledJobSpec, ScaledJobStatus};
pub use scaled_object::{ScaledObject, ScaledObjectSpec, ScaledObjectStatus};
pub use trigger_authentication::{
    ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs ebb serves, generated from the Rust types (ScaledObject, TriggerAuthentication,
/// ClusterTriggerAuthentication, ScaledJob, and the HTTP add-on's HTTPScaledObject and
/// InterceptorRoute), in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ScaledObject::crd(),
        TriggerAuthentication::crd(),
        ClusterTriggerAuthentication::crd(),
        scaled_job::scaled_job_crd(),
        http_scaled_object::HTTPScaledObject::crd(),
        interceptor_route::InterceptorRoute::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, as `ebb crd` prints it.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
