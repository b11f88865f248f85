//! KEDA's custom resources.

pub mod scaled_object;

pub use scaled_object::{ScaledObject, ScaledObjectSpec, ScaledObjectStatus};
