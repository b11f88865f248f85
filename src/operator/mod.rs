//! The ScaledObject operator: pure decision logic (HPA rendering, validation, activation, fallback,
//! status, formulas); the runtime that talks to the cluster builds on these functions.

pub mod activation;
pub mod context;
pub mod fallback;
pub mod formula;
pub mod hpa;
pub mod loop_;
pub mod reconcile;
pub mod runtime;
pub mod scale;
pub mod scaled_job;
pub mod status;
pub mod trigger_auth;
pub mod validate;
