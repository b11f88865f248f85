//! KEDA's custom resources.

pub mod scaled_object;
pub mod trigger_authentication;

pub use scaled_object::{ScaledObject, ScaledObjectSpec, ScaledObjectStatus};
pub use trigger_authentication::{
    ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec,
};
